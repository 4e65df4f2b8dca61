"""The graph IR's meaning, in numpy: a slow, readable executor that is the spec.

`run_graph` evaluates a whole-model graph (before sharding) op by op with the
EVAL table, keyed by opcode like OPDEFS. Numerics are those the targets promise:
weights as stored (f16, or fp8/int8/int4 codes times their per-channel f16
scale), arithmetic in f32, every op's result rounded to its declared type (16-bit
activations). State (KV caches; Mamba's conv and SSM states) is updated in place, so
prefill then decode steps generate text. The cycle-accurate interpreter's functional mode must agree with it,
and it with Hugging Face transformers on tiny models (tests).

Layouts: a matmul weight is [K, N] (x @ w; a Hugging Face Linear's weight transposed)
or [N, K] with transpose_b; int4 codes are held one per int8 element here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ir.graph import Graph, Op
from ir.numerics import quantize
from ir.ops import Opcode
from ir.types import DType

Env = dict[str, np.ndarray]
NUMPY = {DType.F32: np.float32, DType.F16: np.float16, DType.BF16: np.float32, DType.FP8: np.float32,
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


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def _embed(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    ids, table = args[0], args[1]
    rows = _f32(table[ids])
    if len(args) == 3:
        rows = rows * _f32(args[2][ids])[:, None]
    return (rows,)


def _matmul(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    x, w = _f32(args[0]), _f32(args[1])
    y = x @ (w.T if op.attr.get("transpose_b") else w)
    if len(args) == 3:
        y = y * _f32(args[2])
    return (y,)


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


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature term (1 when the context is not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


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
    b sees cache positions 0..pos[r] of b."""
    q, k, v, k_cache, v_cache, pos = args[:6]
    heads, kv_heads, d = op.attr["heads"], op.attr["kv_heads"], op.attr["head_dim"]
    batch = k_cache.shape[0]
    per_seq = len(q) // batch
    seq = np.arange(len(q)) // per_seq
    caches = [(k, k_cache), (v, v_cache)]
    scales = args[6:8] if len(args) == 8 else (None, None)
    for (new, cache), scale in zip(caches, scales, strict=True):
        _store(new, cache, scale, seq, pos, kv_heads)
    out = np.zeros((len(q), heads * d), np.float32)
    group = heads // kv_heads
    for r in range(len(q)):
        keys, vals = (_load(c, s, seq[r], pos[r], kv_heads) for c, s in zip((k_cache, v_cache), scales, strict=True))
        qr = _f32(q[r]).reshape(heads, d)
        kh = np.repeat(keys, group, axis=1)  # [T, heads, d]
        vh = np.repeat(vals, group, axis=1)
        scores = np.einsum("hd,thd->ht", qr, kh) / np.float32(math.sqrt(d))
        p = _softmax(scores)
        out[r] = np.einsum("ht,thd->hd", p, vh).reshape(-1)
    return (out,)


def _store(new: np.ndarray, cache: np.ndarray, scale: np.ndarray | None, seq: np.ndarray, pos: np.ndarray,
           kv_heads: int) -> None:
    if scale is None:
        cache[seq, pos] = new
        return
    rows = _f32(new).reshape(len(new), kv_heads, -1)
    dtype = DType.FP8 if cache.dtype == np.float32 else DType.I8
    codes, s = quantize(rows, dtype, axis=2)
    cache[seq, pos] = codes.reshape(len(new), -1)
    scale[seq, pos] = s


def _load(cache: np.ndarray, scale: np.ndarray | None, seq: int, pos: int, kv_heads: int) -> np.ndarray:
    """Cache positions 0..pos of a sequence as [T, kv_heads, d] floats."""
    rows = _f32(cache[seq, : pos + 1]).reshape(pos + 1, kv_heads, -1)
    return rows if scale is None else rows * _f32(scale[seq, : pos + 1])[:, :, None]


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
    kv_b = _f32(args[6]) * (_f32(args[7]) if len(args) == 8 else np.float32(1))
    w = kv_b.reshape(rank, heads, -1)
    w_uk, w_uv = w[..., :nope], w[..., nope:]
    seq = np.arange(len(q_nope)) // (len(q_nope) // cache.shape[0])
    cache[seq, pos] = np.concatenate([c_kv, k_pe], axis=-1)
    out = np.zeros((len(q_nope), heads * a["v_dim"]), np.float32)
    for r in range(len(q_nope)):
        rows = _f32(cache[seq[r], : pos[r] + 1])  # [T, R + rope]
        q_latent = np.einsum("hd,rhd->hr", _f32(q_nope[r]).reshape(heads, nope), w_uk)
        scores = q_latent @ rows[:, :rank].T + _f32(q_pe[r]).reshape(heads, -1) @ rows[:, rank:].T
        p = _softmax(scores * np.float32(a["scale"]))
        out[r] = np.einsum("hr,rhd->hd", p @ rows[:, :rank], w_uv).reshape(-1)
    return (out,)


def _experts(op: Op, args: list[np.ndarray]) -> tuple[np.ndarray]:
    x, weights, ids = _f32(args[0]), _f32(args[1]), args[2]
    gate, up, down = (_dequantize(args[3 + i], args[6 + i] if len(args) == 9 else None) for i in range(3))
    act = ACTIVATIONS[op.attr.get("act", "silu")]
    y = np.zeros_like(x)
    for row, (w_row, id_row) in enumerate(zip(weights, ids, strict=True)):
        for w, e in zip(w_row, id_row, strict=True):
            h = x[row]
            y[row] += w * ((act(h @ gate[e]) * (h @ up[e])).astype(np.float16).astype(np.float32) @ down[e])
    return (y,)


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


def _dequantize(w: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """[E, in, out] codes times their per-(expert, out) scale."""
    return _f32(w) if scale is None else _f32(w) * _f32(scale)[:, None, :]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_softmax = softmax


def _unary(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[Op, list[np.ndarray]], tuple[np.ndarray]]:
    return lambda op, args: (f(_f32(args[0])),)


def _binary(f: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[Op, list[np.ndarray]], tuple]:
    return lambda op, args: (f(_f32(args[0]), _f32(args[1])),)


_erf = np.vectorize(math.erf, otypes=[np.float64])
ACTIVATIONS = {"silu": lambda x: x / (1 + np.exp(-x)), "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))}


def _whole_model_only(op: Op, args: list[np.ndarray]) -> tuple:
    raise NotImplementedError(f"{op.opcode.value}: the reference runs whole-model graphs (before sharding)")


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
}
