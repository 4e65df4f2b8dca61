"""The graph IR's meaning, in numpy: a slow, readable executor that is the spec.

`run_graph` evaluates a whole-model graph (before sharding) op by op with the
EVAL table, keyed by opcode like OPDEFS. Numerics are those the targets promise:
weights as stored (f16 or bf16; fp8/int8/int4 codes whose product is multiplied by
their per-channel scale; nvfp4/mxfp4/mxfp8 codes times their block scales, the product
times NVFP4's tensor scale), arithmetic in f32, every op's result rounded to its
declared type (16-bit activations, bf16 through ml_dtypes). State (KV caches; Mamba's
conv and SSM states) is updated in place, so prefill then decode steps generate text.
The cycle-accurate interpreter's functional mode must agree with it, and it with
Hugging Face transformers on tiny models (tests).

Layouts: a matmul weight is [K, N] (x @ w; a Hugging Face Linear's weight transposed)
or [N, K] with transpose_b; int4 codes are held one per int8 element here, 8- and 4-bit
float codes and block scales as their float32 values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ir.graph import Graph, Op
from ir.numerics import ELEMENT, dequantize_blocks, quantize, quantize_blocks
from ir.ops import Opcode, expert_passes, tier_operands
from ir.rope import yarn_mscale
from ir.types import DType

Env = dict[str, np.ndarray]
# How each dtype's values are held here: 16- and 32-bit floats in their own type (bf16 through
# ml_dtypes), integer codes as int8 or int32, every 8- and 4-bit float code as its float32 value.
NUMPY = {d: np.float32 for d in DType} | {d: ELEMENT[d] for d in (DType.F32, DType.F16, DType.BF16)} | {
    DType.I32: np.int32, DType.I8: np.int8, DType.I4: np.int8}


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
              state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate `graph`; returns its outputs by name. `state` arrays are updated in place."""
    env: Env = {}
    for group, given in ((graph.inputs, inputs), (graph.params, params), (graph.state, state)):
        for v in group:
            if v.name not in given:
                raise KeyError(f"no value given for %{v.name}")
            if tuple(given[v.name].shape) != v.type.shape:
                raise ValueError(f"%{v.name}: expected shape {v.type.shape}, got {given[v.name].shape}")
            env[v.name] = given[v.name]
    for op in graph.ops:
        results = EVAL[op.opcode](op, [env[v.name] for v in op.operands])
        for value, array in zip(op.results, results, strict=True):
            env[value.name] = array.astype(NUMPY[value.type.dtype], copy=False)
    return {v.name: env[v.name] for v in graph.outputs}


_DTYPE_OF = {np.dtype(ELEMENT[d]): d for d in (DType.F16, DType.BF16)}  # a 16-bit array's DType


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def _embed(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    ids, table, scales = args[0], args[1], args[2:]
    dtype = op.operands[1].type.dtype
    if dtype.block is not None:  # codes times their block scales along the row, then the tensor scale
        rows = dequantize_blocks(table[ids], scales[0][ids], dtype, axis=1)
        return (rows * _f32(scales[1]) if len(scales) == 2 else rows,)
    rows = _f32(table[ids])
    return (rows * _f32(scales[0][ids])[:, None] if scales else rows,)


def _matmul(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    transpose = op.attr.get("transpose_b")
    w, after = stored_weight(op.operands[1].type.dtype, args[1], args[2:], 1 if transpose else 0)
    y = product("mk,nk->mn" if transpose else "mk,kn->mn", _f32(args[0]), w)
    return (y if after is None else y * after,)


def stored_weight(dtype: DType, w: np.ndarray, scales: list[np.ndarray], k_axis: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """A stored weight as the matrix products multiply (codes times block scales along `k_axis`,
    or the codes of a per-channel format) and what multiplies the product after (the per-channel
    scales, NVFP4's tensor scale, or None), as the targets compute it."""
    if dtype.block is not None:
        after = _f32(scales[1]) if len(scales) == 2 else None
        return dequantize_blocks(w, scales[0], dtype, k_axis), after
    return _f32(w), (_f32(scales[0]) if scales else None)


def _rmsnorm(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    return (rms_norm(args[0], args[1], op.attr["eps"]),)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """As HF: normalise in f32, round to x's own dtype, then scale."""
    xf = _f32(x)
    normed = xf / np.sqrt(np.mean(xf * xf, axis=-1, keepdims=True) + np.float32(eps))
    return normed.astype(x.dtype).astype(np.float32) * _f32(w)


def inverse_frequencies(attrs: Mapping, head_dim: int) -> np.ndarray:
    """RoPE's per-pair frequencies, with Llama 3's or YaRN's long-context rescaling when asked for."""
    inv = 1.0 / (attrs["theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if attrs.get("scaling") == "yarn":
        return _yarn_frequencies(attrs, inv, head_dim)
    if attrs.get("scaling") != "llama3":
        return inv
    factor, low, high = attrs["factor"], attrs["low_freq_factor"], attrs["high_freq_factor"]
    old = attrs["original_max_position"]
    wavelen = 2 * math.pi / inv
    smooth = (old / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv / factor + smooth * inv
    return np.where(wavelen > old / low, inv / factor, np.where(wavelen < old / high, inv, mid))


def _yarn_frequencies(attrs: Mapping, inv: np.ndarray, head_dim: int) -> np.ndarray:
    """YaRN (as Hugging Face computes it): frequencies divided by `factor`, except the fast
    ones (more than beta_fast turns over the original context), with a linear ramp between."""
    def turns_dim(turns: float) -> float:
        old = attrs["original_max_position"]
        return head_dim * math.log(old / (turns * 2 * math.pi)) / (2 * math.log(attrs["theta"]))

    low = max(math.floor(turns_dim(attrs["beta_fast"])), 0)
    high = min(math.ceil(turns_dim(attrs["beta_slow"])), head_dim - 1)
    ramp = np.clip((np.arange(head_dim // 2) - low) / ((high - low) or 0.001), 0, 1)
    return inv / attrs["factor"] * ramp + inv * (1 - ramp)


def rope_amplitude(attrs: Mapping) -> float:
    """YaRN scales cos and sin by mscale / mscale_all_dim (Hugging Face's attention_factor)."""
    if attrs.get("scaling") != "yarn":
        return 1.0
    if "mscale" in attrs and "mscale_all_dim" in attrs:
        return yarn_mscale(attrs["factor"], attrs["mscale"]) / yarn_mscale(attrs["factor"], attrs["mscale_all_dim"])
    return yarn_mscale(attrs["factor"])


def _rope(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """Rotate each head's halves (the Llama / Hugging Face `rotate_half` convention). With
    `interleave`, each head's features are first regrouped evens then odds, so the pairs
    (x0,x1),(x2,x3)... rotate, and come out in halves as Hugging Face's DeepSeek leaves them."""
    return (rope(_f32(args[0]), args[1], op.attr),)


def rope(x: np.ndarray, pos: np.ndarray, attrs: Mapping) -> np.ndarray:
    """Rows x [M, heads * head_dim] rotated by their positions; see the rope op."""
    heads, d = attrs["heads"], attrs["head_dim"]
    angle = pos.astype(np.float64)[:, None] * inverse_frequencies(attrs, d)[None, :]
    amplitude = rope_amplitude(attrs)
    cos = (np.concatenate([np.cos(angle)] * 2, axis=-1) * amplitude).astype(np.float32)[:, None, :]
    sin = (np.concatenate([np.sin(angle)] * 2, axis=-1) * amplitude).astype(np.float32)[:, None, :]
    xh = x.reshape(len(x), heads, d)
    if attrs.get("interleave"):
        xh = np.concatenate([xh[..., 0::2], xh[..., 1::2]], axis=-1)
    rotated = np.concatenate([-xh[..., d // 2:], xh[..., : d // 2]], axis=-1)
    return (xh * cos + rotated * sin).reshape(x.shape)


def _attention(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """Write each row's k, v at its position in its sequence's cache (as 8-bit codes with a
    per-kv-head scale when the cache is quantized), then attend causally: row r of sequence
    b sees cache positions 0..pos[r] of b (and none from `reach` on)."""
    if "tier" in op.attr:
        return _tiered_attention(op, args)
    q, k, v, k_cache, v_cache, pos = args[:6]
    heads, kv_heads, d = op.attr["heads"], op.attr["kv_heads"], op.attr["head_dim"]
    batch = k_cache.shape[0]
    per_seq = len(q) // batch
    seq = np.arange(len(q)) // per_seq
    caches = [(k, k_cache), (v, v_cache)]
    scales = args[6:8] if len(args) == 8 else (None, None)
    dtype = op.operands[3].type.dtype
    for (new, cache), scale in zip(caches, scales, strict=True):
        _store(new, cache, scale, seq, pos, kv_heads, dtype)
    out = np.zeros((len(q), heads * d), np.float32)
    group = heads // kv_heads
    seen = _seen(op, pos, k_cache)
    for r in range(len(q)):
        (keys, k_scale), (vals, v_scale) = (_load(c, s, seq[r], seen[r], kv_heads, dtype)
                                            for c, s in zip((k_cache, v_cache), scales, strict=True))
        qr = _f32(q[r]).reshape(heads, d)
        kh = np.repeat(keys, group, axis=1)  # [T, heads, d]
        vh = np.repeat(vals, group, axis=1)
        scores = product("hd,thd->ht", qr, kh)
        if k_scale is not None:  # an 8-bit cache: each token's scores times its keys' scale
            scores = scores * np.repeat(k_scale, group, axis=1).T
        p = _softmax(scores / np.float32(math.sqrt(d)))
        if v_scale is not None:  # and each token's probabilities times its values' scale
            p = p * np.repeat(v_scale, group, axis=1).T
        out[r] = product("ht,thd->hd", p, vh).reshape(-1)
    return (out,)


def _tiered_attention(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """A cache split over two memories (ir.ops._tiered): the hot arrays a ring of the newest positions
    (position p in row p mod hot), the cold ones every position below `cold` (each row written there
    too when it is made). Attention over the whole cache as the positions' order gives it: each
    sequence's positions up to its newest row's gathered (older than the ring from the cold arrays,
    the ring's from the hot ones), attended as one cache, then put back where they live."""
    below = tier_operands(len(args))
    above = (3, 4) + ((6, 7) if len(args) == 12 else ())  # the SRAM caches (and scales), as the cold ones
    batch, pos = args[3].shape[0], args[5]
    newest = pos.reshape(batch, -1).max(axis=1)
    whole = [_unring(args[c], args[h], newest) for c, h in zip(below, above, strict=True)]
    inner = dict(zip(above, whole, strict=True))
    plain = Op(op.opcode, op.operands[:len(args) - len(below)], op.results,
               tuple(a for a in op.attrs if a[0] in ("heads", "kv_heads", "head_dim")), op.scope)
    out = _attention(plain, [inner.get(i, a) for i, a in enumerate(args[:len(args) - len(below)])])
    for c, h, full in zip(below, above, whole, strict=True):
        _ring(full, args[c], args[h], newest)
    return out


def ring_positions(newest: np.ndarray, hot: int) -> np.ndarray:
    """[sequences, hot]: the position ring row j holds once a sequence's position `newest` is written,
    newest - ((newest - j) mod hot) (the latest position p <= newest with p mod hot = j; negative: none yet)."""
    newest = np.asarray(newest, np.int64)[:, None]
    return newest - np.mod(newest - np.arange(hot)[None, :], max(hot, 1))


def _unring(cold: np.ndarray, ring: np.ndarray, newest: np.ndarray) -> np.ndarray:
    """Each sequence's positions in order, [B, cold + hot, ...]: those older than the ring's from `cold`."""
    hot = ring.shape[1]
    whole = np.zeros((cold.shape[0], cold.shape[1] + hot, *cold.shape[2:]), cold.dtype)
    for b, p in enumerate(ring_positions(newest, hot)):
        older = max(0, min(int(newest[b]) - hot + 1, cold.shape[1]))
        whole[b, :older] = cold[b, :older]
        whole[b, p[p >= 0]] = ring[b, p >= 0]
    return whole


def _ring(whole: np.ndarray, cold: np.ndarray, ring: np.ndarray, newest: np.ndarray) -> None:
    """Back where they live: every position up to the newest below `cold` in the cold arrays, the ring's newest."""
    hot = ring.shape[1]
    for b, p in enumerate(ring_positions(newest, hot)):
        upto = max(0, min(int(newest[b]) + 1, cold.shape[1]))
        cold[b, :upto] = whole[b, :upto]
        ring[b, p >= 0] = whole[b, p[p >= 0]]


def product(spec: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A matrix product (an einsum) as the targets' matrix units compute it: every product exact
    in float64, their sum in float64, rounded once to float32. Summation order then stays far
    below float32's precision, so the reference and the interpreter's panel-by-panel MXMs agree
    bit for bit (tests/test_formats.py)."""
    return np.einsum(spec, a.astype(np.float64), b.astype(np.float64)).astype(np.float32)


def _store(new: np.ndarray, cache: np.ndarray, scale: np.ndarray | None, seq: np.ndarray, pos: np.ndarray,
           kv_heads: int, dtype: DType) -> None:
    if scale is None:
        cache[seq, pos] = new
        return
    if dtype.block is not None:  # NVFP4: an e4m3 scale per 16 values of each row, no tensor scale
        b = quantize_blocks(_f32(new), dtype, axis=1, tensor_scale=False)
        cache[seq, pos], scale[seq, pos] = b.codes, b.scales
        return
    rows = _f32(new).reshape(len(new), kv_heads, -1)
    codes, s = quantize(rows, dtype, axis=2, scale_dtype=_DTYPE_OF[scale.dtype])
    cache[seq, pos] = codes.reshape(len(new), -1)
    scale[seq, pos] = s


def _seen(op: Op, pos: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """The last cache position each row attends: its own, within the op's reach (ir.ops)."""
    return np.minimum(pos, op.attr.get("reach", cache.shape[1]) - 1)


def _load(cache: np.ndarray, scale: np.ndarray | None, seq: int, pos: int, kv_heads: int, dtype: DType
          ) -> np.ndarray:
    """Cache positions 0..pos of a sequence: [T, kv_heads, d] values (an NVFP4 cache's codes times
    their block scales), and an 8-bit cache's scales [T, kv_heads], which the products apply."""
    if dtype.block is not None:
        rows = dequantize_blocks(cache[seq, : pos + 1], scale[seq, : pos + 1], dtype, axis=1)
        return rows.reshape(pos + 1, kv_heads, -1), None
    rows = _f32(cache[seq, : pos + 1]).reshape(pos + 1, kv_heads, -1)
    return rows, (None if scale is None else _f32(scale[seq, : pos + 1]))


def _topk(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Score experts, keep the k best (ties to the lower id), renormalise and scale. A bias
    and groups change which experts are kept, never their weights."""
    a = op.attr
    scores, choice = _routing_scores(op, args)
    ids = np.argsort(-choice, axis=-1, kind="stable")[:, : a["k"]]
    weights = np.take_along_axis(scores, ids, axis=-1)
    if a.get("normalize"):
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights * np.float32(a.get("scale", 1.0)), ids.astype(np.int32)


def _routing_scores(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, choice): the experts' weights-to-be and what chooses among them (scores plus the
    bias, outside the best groups -inf)."""
    logits = _f32(args[0])
    a = op.attr
    scores = _softmax(logits) if a.get("scoring", "softmax") == "softmax" else 1 / (1 + np.exp(-logits))
    choice = scores + _f32(args[1]) if len(args) == 2 else scores
    if a.get("groups", 1) > 1:
        choice = _best_groups_only(choice, a["groups"], a["topk_groups"])
    return scores, choice


def routing_margin(op: Op, args: list[np.ndarray]) -> float:
    """How far a topk op's rows are from choosing other experts: the smallest gap between a row's
    k-th and (k+1)-th choice score (inf with no (k+1)-th). Rounding can flip a choice closer than that."""
    _, choice = _routing_scores(op, args)
    k = op.attr["k"]
    if choice.shape[-1] <= k:
        return float("inf")
    ranked = -np.sort(-choice, axis=-1)
    gap = ranked[:, k - 1] - ranked[:, k]
    return float(np.nan_to_num(gap, nan=np.inf, posinf=np.inf).min())


def _best_groups_only(choice: np.ndarray, groups: int, keep: int) -> np.ndarray:
    """`choice` with experts outside each row's `keep` best groups set to -inf; a group's
    score is the sum of its two best choice scores (DeepSeek-V3's node-limited routing)."""
    grouped = choice.reshape(len(choice), groups, -1)
    group_score = -np.sort(-grouped, axis=-1)[..., :2].sum(axis=-1)
    best = np.argsort(-group_score, axis=-1, kind="stable")[:, :keep]
    mask = np.zeros(group_score.shape, bool)
    np.put_along_axis(mask, best, True, axis=-1)
    return np.where(mask[..., None], grouped, -np.inf).reshape(choice.shape)


def _mla_attention(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """Write each row's [c_kv | k_pe] at its position in its sequence's latent cache, then
    attend causally in latent space: per head, the query's nope part is taken through W_uk
    (kv_b's k columns) to score cached latents, the rope parts score the shared k_pe, and the
    softmax-weighted latent sum goes through W_uv (kv_b's v columns)."""
    q_nope, q_pe, c_kv, k_pe, cache, pos = args[:6]
    a = op.attr
    heads, nope, rank = a["heads"], a["nope_dim"], c_kv.shape[1]
    w, after = stored_weight(op.operands[6].type.dtype, args[6], args[7:], 0)
    kv_b = w if after is None else w * after
    w = kv_b.reshape(rank, heads, -1)
    w_uk, w_uv = w[..., :nope], w[..., nope:]
    seq = np.arange(len(q_nope)) // (len(q_nope) // cache.shape[0])
    cache[seq, pos] = np.concatenate([c_kv, k_pe], axis=-1)
    out = np.zeros((len(q_nope), heads * a["v_dim"]), np.float32)
    seen = _seen(op, pos, cache)
    for r in range(len(q_nope)):
        rows = _f32(cache[seq[r], : seen[r] + 1])  # [T, R + rope]
        q_latent = np.einsum("hd,rhd->hr", _f32(q_nope[r]).reshape(heads, nope), w_uk)
        scores = q_latent @ rows[:, :rank].T + _f32(q_pe[r]).reshape(heads, -1) @ rows[:, rank:].T
        p = _softmax(scores * np.float32(a["scale"]))
        out[r] = np.einsum("hr,rhd->hd", p @ rows[:, :rank], w_uv).reshape(-1)
    return (out,)


def _experts(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """y = sum over each row's routed experts of weight x down(act(gate(x)) * up(x)), each
    intermediate a 16-bit activation, summed into the 16-bit result one expert pass at a time in
    the static passes' order (ir.ops.expert_passes): one row takes its routing slots in turn,
    several rows the experts in id order (a row not routed to one adds zero)."""
    x, weights, ids = _f32(args[0]), _f32(args[1]), args[2]
    per = (len(args) - 6) // 3  # scales per weight: 0, 1 (per channel or mx) or 2 (nvfp4)
    gate, up, down = (stored_weight(op.operands[3 + i].type.dtype, args[3 + i], args[6 + i::3][:per], 1)
                      for i in range(3))
    act = ACTIVATIONS[op.attr.get("act", "silu")]

    def r16(a: np.ndarray) -> np.ndarray:
        return a.astype(args[0].dtype).astype(np.float32)

    experts, k = op.operands[3].type.shape[0], op.attr["top_k"]
    by_slot = len(x) == 1 and experts > k
    y = None
    for j in range(expert_passes(len(x), k, experts)):
        e, w = (ids[0, j], weights[:, j]) if by_slot else (j, np.where(ids == j, weights, 0).sum(axis=1))
        inner = r16(r16(act(r16(_expert_product(x, gate, e)))) * r16(_expert_product(x, up, e)))
        part = r16(_expert_product(inner, down, e)) * w[:, None]
        y = r16(part) if y is None else r16(y + part)
    return (y,)


def _expert_product(h: np.ndarray, weight: tuple[np.ndarray, np.ndarray | None], e: int) -> np.ndarray:
    """h @ expert e's matrix, times what multiplies its product (per-channel or tensor scale)."""
    w, after = weight
    y = product("mk,kn->mn", h, w[e])
    return y if after is None else y * after[e]


def _sequences(rows: int, batch: int) -> list[slice]:
    """Each sequence's rows: B contiguous runs of M/B rows."""
    per_seq = rows // batch
    return [slice(b * per_seq, (b + 1) * per_seq) for b in range(batch)]


def _conv1d(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """Causal depthwise conv: each row sees its K-1 predecessors (the state's saved inputs
    before the sequence's first row); the state keeps the last K-1 inputs."""
    out = causal_conv(_f32(args[0]), _f32(args[1]), args[2])
    return (out + _f32(args[3]) if len(args) == 4 else out,)


def causal_conv(x: np.ndarray, w: np.ndarray, state: np.ndarray) -> np.ndarray:
    """conv1d without its bias, on f32 rows x [M,C] and taps w [C,K]; `state` updated in place."""
    k = w.shape[1]
    out = np.zeros_like(x)
    for b, rows in enumerate(_sequences(len(x), len(state))):
        window = np.concatenate([_f32(state[b]).T, x[rows]])  # [K-1+S, C]
        out[rows] = sum(window[i: i + len(x[rows])] * w[:, i] for i in range(k))
        state[b] = window[len(window) - (k - 1):].T
    return out


def _selective_scan(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    """Mamba's recurrence, one row at a time in f32 (the state's own dtype holds it between steps)."""
    return (selective_scan(*(_f32(a) for a in args[:6]), args[6]),)


def selective_scan(x: np.ndarray, dt: np.ndarray, a_log: np.ndarray, b_in: np.ndarray, c_in: np.ndarray,
                   d: np.ndarray, state: np.ndarray) -> np.ndarray:
    """The selective_scan op on f32 arrays; `state` [B,C,N] updated in place."""
    delta = np.logaddexp(0, dt)  # softplus
    a = -np.exp(a_log)
    y = np.zeros_like(x)
    for b, rows in enumerate(_sequences(len(x), len(state))):
        h = _f32(state[b])
        for r in range(rows.start, rows.stop):
            h = np.exp(delta[r][:, None] * a) * h + (delta[r] * x[r])[:, None] * b_in[r][None, :]
            y[r] = h @ c_in[r]
        state[b] = h
    return y + d * x


def softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis; the sum in float64, so masked (zero) entries and the summation order
    cannot change it."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


_softmax = softmax


def _unary(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[Op, list[np.ndarray]], tuple[np.ndarray]]:
    return lambda op, args: (f(_f32(args[0])),)


def _binary(f: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[Op, list[np.ndarray]], tuple]:
    return lambda op, args: (f(_f32(args[0]), _f32(args[1])),)


_erf = np.vectorize(math.erf, otypes=[np.float64])
ACTIVATIONS = {"silu": lambda x: x / (1 + np.exp(-x)), "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))}


def _whole_model_only(op: Op, args: list[np.ndarray]) -> tuple:
    raise NotImplementedError(f"{op.opcode.value}: the reference runs whole-model graphs (before sharding)")


def accepted_drafts(predicted: np.ndarray, tokens: np.ndarray, steps: int) -> np.ndarray:
    """Per sequence of `steps` rows, the drafts (tokens[1:]) that match the target's choice one row
    earlier (predicted[:-1]), counted up to the first mismatch: speculative decoding's acceptance."""
    match = predicted.reshape(-1, steps)[:, :-1] == tokens.reshape(-1, steps)[:, 1:]
    return np.cumprod(match, axis=1).sum(axis=1).astype(np.int32)


EVAL: dict[Opcode, Callable[[Op, list[np.ndarray]], tuple[np.ndarray, ...]]] = {
    Opcode.EMBED: _embed,
    Opcode.MATMUL: _matmul,
    Opcode.ADD: _binary(np.add),
    Opcode.MUL: _binary(np.multiply),
    Opcode.RMSNORM: _rmsnorm,
    Opcode.ROPE: _rope,
    Opcode.ATTENTION: _attention,
    Opcode.SILU: _unary(ACTIVATIONS["silu"]),
    Opcode.GELU: _unary(ACTIVATIONS["gelu"]),
    Opcode.SOFTMAX: _unary(_softmax),
    Opcode.ARGMAX: lambda op, args: (np.argmax(args[0], axis=-1).astype(np.int32),),
    Opcode.ALLREDUCE: _whole_model_only,
    Opcode.ALLGATHER: _whole_model_only,
    Opcode.SEND: _whole_model_only,
    Opcode.RECV: _whole_model_only,
    Opcode.TOPK: _topk,
    Opcode.EXPERTS: _experts,
    Opcode.MLA_ATTENTION: _mla_attention,
    Opcode.CONV1D: _conv1d,
    Opcode.SELECTIVE_SCAN: _selective_scan,
    Opcode.SLICE: lambda op, args: (args[0][..., op.attr["start"]: op.attr["stop"]],),
    Opcode.ROWS: lambda op, args: (args[0][op.attr["row"]:: op.attr["every"]],),
    Opcode.ACCEPT: lambda op, args: (accepted_drafts(args[0], args[1], op.attr["steps"]),),
}
