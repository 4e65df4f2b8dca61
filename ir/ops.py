"""Opcodes and the OPDEFS table: arity, attributes, type rule and cost rule of each.

Printing, parsing and verifying are generic over this table; adding an op means
adding one row here (and one numpy rule to the reference executor).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ir.types import ACTIVATION_DTYPES, DType, TensorType

Attrs = dict[str, int | float | str | bool]


class Opcode(enum.Enum):
    EMBED = "embed"  # token ids, table (* its scales when quantized) -> rows
    MATMUL = "matmul"  # x[M,K] @ w[K,N] (* its scales when quantized); w[N,K] if transpose_b
    ADD = "add"
    MUL = "mul"
    RMSNORM = "rmsnorm"
    ROPE = "rope"
    ATTENTION = "attention"  # writes k, v into the cache at pos, attends over it
    SILU = "silu"
    GELU = "gelu"
    SOFTMAX = "softmax"
    ARGMAX = "argmax"
    ALLREDUCE = "allreduce"  # sum over a tensor-parallel group
    ALLGATHER = "allgather"  # concatenate the group's feature shards
    SEND = "send"
    RECV = "recv"
    TOPK = "topk"  # router logits [M,E] -> routing weights f16[M,k], expert ids i32[M,k]
    EXPERTS = "experts"  # x, weights, ids, stacked expert MLPs (gate, up [E,H,I], down [E,I,H]) -> y
    MLA_ATTENTION = "mla_attention"  # DeepSeek's latent attention: writes the compressed row, attends over it
    CONV1D = "conv1d"  # causal depthwise conv over each sequence's rows, through a conv state (Mamba)
    SELECTIVE_SCAN = "selective_scan"  # Mamba's recurrence over each sequence's rows, through an SSM state
    SLICE = "slice"  # columns start..stop of the last axis
    ROWS = "rows"  # row `row` of every group of `every` rows (prefill's last row of each sequence)
    ACCEPT = "accept"  # speculative decoding: the target's ids and the drafted ones -> accepted drafts per sequence


class TypeRuleError(Exception):
    """Raised by a type rule; the verifier adds the op and line."""


@dataclass(frozen=True, slots=True)
class Cost:
    """Work of one op: arithmetic (a multiply-add is 2 flops) and bytes touched."""

    flops: int
    bytes: int


TypeRule = Callable[[tuple[TensorType, ...], Attrs], tuple[TensorType, ...]]
CostRule = Callable[[tuple[TensorType, ...], tuple[TensorType, ...], Attrs], int]


@dataclass(frozen=True, slots=True)
class OpDef:
    """Static facts of one opcode. `attrs` maps required attribute names to types;
    `optional` likewise for attributes that may be absent. `writes` lists operand
    positions the op updates in place (state such as a KV cache)."""

    arity: tuple[int, int]
    attrs: dict[str, type]
    type_rule: TypeRule
    flops: CostRule
    optional: dict[str, type] | None = None
    writes: tuple[int, ...] = ()
    scratch: CostRule | None = None  # bytes of working buffers the op needs beyond its operands

    def scratch_bytes(self, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...], attrs: Attrs) -> int:
        return self.scratch(ins, outs, attrs) if self.scratch else 0

    def cost(self, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...], attrs: Attrs) -> Cost:
        moved = sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs)
        return Cost(self.flops(ins, outs, attrs), moved)


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise TypeRuleError(message)


def _activation(t: TensorType) -> DType:
    """Activations stay 16-bit float whatever the weights are stored as."""
    return t.dtype if t.dtype in (DType.F32, *ACTIVATION_DTYPES) else DType.F16


def _rows_dtype(table: TensorType, attrs: Attrs) -> DType:
    """A table's rows: its own float type, or (a quantized table) the `dtype` attribute."""
    if table.dtype in (DType.F32, *ACTIVATION_DTYPES):
        return table.dtype
    name = attrs.get("dtype", DType.F16.value)
    _need(name in (d.value for d in ACTIVATION_DTYPES), f"embed dtype must be f16 or bf16, got {name!r}")
    return DType(name)


def _scales(weight: TensorType, scales: tuple[TensorType, ...], k_axis: int, channels: tuple[int, ...],
            what: str) -> None:
    """A quantized weight's scale operands: one per output channel (`channels`, 8-bit and int4
    codes), or a block-scaled type's block scales (the weight's shape with its contraction axis
    `k_axis` cut to one per block) and, for NVFP4, the f32 scale of each matrix."""
    block = weight.dtype.block
    if block is None:
        _need(len(scales) == 1 and scales[0].shape == channels,
              f"{what} scale must be {list(channels)}, got {', '.join(map(str, scales))}")
        return
    want = tuple(block.scales(d) if i == k_axis else d for i, d in enumerate(weight.shape))
    _need(len(scales) == 1 + block.tensor_scale, f"{weight.dtype.value} {what} takes block scales"
          f"{' and a tensor scale' if block.tensor_scale else ''}, got {len(scales)} scale operand(s)")
    _need(scales[0] == TensorType(block.scale, want), f"{what} block scales must be {block.scale.value}"
          f"[{','.join(map(str, want))}], got {scales[0]}")
    if block.tensor_scale:
        matrices = TensorType(DType.F32, weight.shape[:-2])
        _need(scales[1] == matrices, f"{what} tensor scale must be {matrices}, got {scales[1]}")


def _embed(ins, attrs):
    ids, table = ins[0], ins[1]
    _need(ids.dtype is DType.I32 and len(ids.shape) == 1, f"embed ids must be i32[M], got {ids}")
    _need(len(table.shape) == 2, f"embed table must be 2-D, got {table}")
    if len(ins) > 2:
        _scales(table, ins[2:], 1, table.shape[:1], "embed")
    else:
        _need(table.dtype.block is None, f"a {table.dtype.value} table needs its block scales")
    return (TensorType(_rows_dtype(table, attrs), (ids.shape[0], table.shape[1])),)


def _matmul(ins, attrs):
    x, w = ins[0], ins[1]
    _need(len(x.shape) == 2 and len(w.shape) == 2, f"matmul needs 2-D operands, got {x} and {w}")
    k, n = reversed(w.shape) if attrs.get("transpose_b") else w.shape
    _need(x.shape[1] == k, f"matmul inner dims differ: {x} @ {w}")
    if len(ins) > 2:
        _scales(w, ins[2:], 1 if attrs.get("transpose_b") else 0, (n,), "matmul")
    else:
        _need(w.dtype.block is None, f"a {w.dtype.value} matmul weight needs its block scales")
    return (TensorType(x.dtype, (x.shape[0], n)),)


def _elementwise(ins, attrs):
    a, b = ins
    _need(a.dtype == b.dtype, f"operand dtypes differ: {a} and {b}")
    trailing = b.shape == a.shape[len(a.shape) - len(b.shape) :]
    _need(trailing, f"{b} does not broadcast to {a}")
    return (a,)


def _unary(ins, attrs):
    return (ins[0],)


def _rmsnorm(ins, attrs):
    x, w = ins
    _need(w.shape == x.shape[-1:], f"rmsnorm weight {w} does not match {x}")
    return (x,)


def _rope(ins, attrs):
    x, pos = ins
    _need(pos.dtype is DType.I32 and pos.shape == x.shape[:1], f"rope positions must be i32[{x.shape[0]}], got {pos}")
    _need(x.shape[1] == attrs["heads"] * attrs["head_dim"], f"rope width {x.shape[1]} != heads*head_dim")
    return (x,)


def _attention(ins, attrs):
    q, k, v, k_cache, v_cache, pos = ins[:6]
    heads, kv_heads, head_dim = attrs["heads"], attrs["kv_heads"], attrs["head_dim"]
    _need(q.shape[1] == heads * head_dim, f"attention q width {q.shape[1]} != heads*head_dim")
    _need(k.shape == v.shape == (q.shape[0], kv_heads * head_dim), f"attention k/v must be [M,{kv_heads * head_dim}]")
    _need(len(k_cache.shape) == 3 and k_cache.shape == v_cache.shape, f"KV caches must be [B,C,D], got {k_cache}")
    _need(k_cache.shape[2] == kv_heads * head_dim, f"KV cache width {k_cache.shape[2]} != kv_heads*head_dim")
    _need(q.shape[0] % k_cache.shape[0] == 0, f"{q.shape[0]} rows do not split over batch {k_cache.shape[0]}")
    _need(heads % kv_heads == 0, f"heads {heads} not a multiple of kv_heads {kv_heads}")
    _need(pos.shape == (q.shape[0],), f"attention positions must be i32[{q.shape[0]}]")
    quantized = k_cache.dtype in (DType.FP8, DType.I8, DType.NVFP4)
    _need(k_cache.dtype in ACTIVATION_DTYPES or quantized, f"KV cache dtype must be 16, 8 or nvfp4 bits: {k_cache}")
    if "tier" in attrs:
        _tiered(ins, attrs, quantized)
    else:
        _need(len(ins) == (8 if quantized else 6), "a quantized KV cache takes its k and v scales as operands 6 and 7")
    if quantized:
        _kv_scales(ins[6:8], k_cache, kv_heads, head_dim)
    _reach(attrs, k_cache)
    if "q_slice" in attrs:  # a sequence shard keeps its slice of the merged context's features
        return (q.with_shape(q.shape[0], attrs["q_slice"]),)
    return (q,)


def _kv_scales(scales, cache: TensorType, kv_heads: int, head_dim: int) -> None:
    """A quantized cache's k and v scales: 16-bit per token and kv head (8-bit codes), or e4m3 per block."""
    block = cache.dtype.block
    if block is None:
        want = TensorType(scales[0].dtype, (*cache.shape[:2], kv_heads))
        _need(scales[0].dtype in ACTIVATION_DTYPES, f"8-bit KV scales must be 16-bit, got {scales[0]}")
    else:  # a scale per `block.size` values of each token's row, never straddling two kv heads
        _need(head_dim % block.size == 0, f"{cache.dtype.value} KV heads must be a multiple of {block.size}")
        want = TensorType(block.scale, (*cache.shape[:2], cache.shape[2] // block.size))
    _need(scales[0] == scales[1] == want, f"KV scales must be {want}, got {scales[0]} and {scales[1]}")


# Tiers a cache's older positions may live in (targets.spec.TIER_NAMES; ir/ does not import targets/).
KV_TIERS = ("dram", "flash")


def tier_operands(count: int) -> tuple[int, ...]:
    """Operand positions of a tiered attention's cold caches (and their scales), by its operand count."""
    return (6, 7) if count == 8 else (8, 9, 10, 11)


def _tiered(ins, attrs, quantized: bool) -> None:
    """A cache split over two memories: operands 3, 4 are a ring of the `hot` newest positions in SRAM,
    [B, hot, D] (position p in row p mod hot); the cold caches, in a tier below, [B, cold, D], hold
    positions 0..cold-1 (cold = context - hot: the ring holds the rest): operands 6, 7 (16-bit), or for a
    quantized cache 8, 9 after the hot scales (6, 7), then their own scales (10, 11). Each new row goes
    to both (the tier's copy when p < cold), so a position leaving the ring is already in the tier; a
    row at position q sees the positions <= q of its sequence: those older than the ring (p <= newest -
    hot, newest its sequence's newest row) from the tier, the ring's from SRAM. The tier moves `block`
    positions at a time."""
    k_cache = ins[3]
    _need(attrs["tier"] in KV_TIERS, f"attention tier must be one of {', '.join(KV_TIERS)}, got {attrs['tier']!r}")
    _need(len(ins) == (12 if quantized else 8), "a cache split over tiers takes its cold k and v caches (and a "
                                                "quantized cache's cold scales) after the others")
    at = tier_operands(len(ins))
    cold = TensorType(k_cache.dtype, (k_cache.shape[0], attrs.get("cold", 0), k_cache.shape[2]))
    _need(ins[at[0]] == ins[at[1]] == cold, f"cold KV caches must be {cold}, got {ins[at[0]]} and {ins[at[1]]}")
    if quantized:
        _kv_scales(ins[10:12], cold, attrs["kv_heads"], attrs["head_dim"])
    _need(attrs.get("cold", 0) > 0 and attrs.get("block", 0) > 0, "a tiered cache needs cold > 0 and block > 0")


def _reach(attrs, cache: TensorType) -> None:
    """`reach`: the cache positions a causal prefill chunk reads, 1 up to the cache's length."""
    if "reach" in attrs:
        _need(1 <= attrs["reach"] <= cache.shape[1], f"reach {attrs['reach']} outside 1..{cache.shape[1]}, "
              f"the tokens of {cache}")


def reach_of(op_attrs: Attrs, cache: TensorType) -> int:
    """Cache tokens an attention op reads per sequence: its `reach`, or the whole cache (with the
    positions a tiered cache holds below SRAM, `cold`)."""
    return int(op_attrs.get("reach", cache.shape[1] + op_attrs.get("cold", 0)))


def _argmax(ins, attrs):
    (x,) = ins
    return (TensorType(DType.I32, x.shape[:-1]),)


def _accept(ins, attrs):
    """Per sequence of `steps` rows: how many leading drafted tokens (rows 1..steps-1 of `tokens`)
    equal the target's choice one row earlier (`predicted`)."""
    predicted, tokens = ins
    steps = attrs["steps"]
    _need(predicted == tokens == TensorType(DType.I32, predicted.shape) and len(predicted.shape) == 1,
          f"accept takes two i32[R] id vectors, got {predicted} and {tokens}")
    _need(steps >= 2 and predicted.shape[0] % steps == 0, f"accept: {predicted.shape[0]} rows are not whole "
          f"sequences of steps={steps} (at least 2: the current token and a draft)")
    return (TensorType(DType.I32, (predicted.shape[0] // steps,)),)


def _allgather(ins, attrs):
    (x,) = ins
    return (x.with_shape(*x.shape[:-1], x.shape[-1] * attrs["group"]),)


def _recv(ins, attrs):
    shape = tuple(int(s) for s in str(attrs["shape"]).split("x"))
    return (TensorType(DType(attrs["dtype"]), shape),)


def _topk(ins, attrs):
    logits = ins[0]
    _need(len(logits.shape) == 2, f"topk needs [M,E] router logits, got {logits}")
    _need(1 <= attrs["k"] <= logits.shape[1], f"topk k={attrs['k']} outside 1..{logits.shape[1]}")
    if len(ins) == 2:
        _need(ins[1].shape == logits.shape[1:], f"topk bias must be [{logits.shape[1]}], got {ins[1]}")
    groups, kept = attrs.get("groups", 1), attrs.get("topk_groups", attrs.get("groups", 1))
    _need(logits.shape[1] % groups == 0 and 1 <= kept <= groups and attrs["k"] <= kept * logits.shape[1] // groups,
          f"topk k={attrs['k']} from {kept} of {groups} groups does not fit {logits.shape[1]} experts")
    rows = logits.shape[0]
    return TensorType(_activation(logits), (rows, attrs["k"])), TensorType(DType.I32, (rows, attrs["k"]))


def _experts(ins, attrs):
    x, weights, ids, gate, up, down = ins[:6]
    rows, hidden = x.shape
    _need(weights.shape == ids.shape == (rows, attrs["top_k"]), f"routing must be [{rows},{attrs['top_k']}]")
    _need(len(gate.shape) == 3 and gate.shape == up.shape and gate.shape[1] == hidden,
          f"expert gate/up must be [E,{hidden},I], got {gate} and {up}")
    _need(down.shape == (gate.shape[0], gate.shape[2], hidden), f"expert down must be [E,I,{hidden}], got {down}")
    _need(len(ins) in (6, 9, 12), f"experts take 6 operands, 9 with scales or 12 with tensor scales, got {len(ins)}")
    if len(ins) > 6:  # quantized: per output channel of each expert, or in blocks along its inputs
        per = (len(ins) - 6) // 3
        for w, scales in zip((gate, up, down), (ins[6 + k::3][:per] for k in range(3)), strict=True):
            _scales(w, scales, 1, (w.shape[0], w.shape[2]), "expert")
    else:
        _need(gate.dtype.block is None, f"{gate.dtype.value} experts need their block scales")
    return (x,)


def _conv1d(ins, attrs):
    x, w, state = ins[:3]
    rows, channels = x.shape
    _need(len(w.shape) == 2 and w.shape[0] == channels, f"conv1d weight must be [{channels},K], got {w}")
    taps = w.shape[1] - 1
    _need(len(state.shape) == 3 and state.shape[1:] == (channels, taps),
          f"conv1d state must be [B,{channels},{taps}], got {state}")
    _need(rows % state.shape[0] == 0, f"{rows} rows do not split over batch {state.shape[0]}")
    if len(ins) == 4:
        _need(ins[3].shape == (channels,), f"conv1d bias must be [{channels}], got {ins[3]}")
    return (TensorType(_activation(x), x.shape),)


def _selective_scan(ins, attrs):
    x, dt, a_log, b, c, d, state = ins
    rows, channels = x.shape
    n = a_log.shape[-1]
    _need(dt.shape == x.shape, f"scan dt must be {x.shape}, got {dt}")
    _need(a_log.shape == (channels, n) and d.shape == (channels,), f"scan A_log/D must be [{channels},N]/[{channels}]")
    _need(b.shape == c.shape == (rows, n), f"scan B and C must be [{rows},{n}], got {b} and {c}")
    _need(len(state.shape) == 3 and state.shape[1:] == (channels, n), f"SSM state must be [B,{channels},{n}]")
    _need(rows % state.shape[0] == 0, f"{rows} rows do not split over batch {state.shape[0]}")
    return (TensorType(_activation(x), x.shape),)


def _slice(ins, attrs):
    (x,) = ins
    start, stop = attrs["start"], attrs["stop"]
    _need(0 <= start < stop <= x.shape[-1], f"slice {start}..{stop} outside the {x.shape[-1]} columns of {x}")
    return (x.with_shape(*x.shape[:-1], stop - start),)


def _rows(ins, attrs):
    (x,) = ins
    every, row = attrs["every"], attrs["row"]
    _need(len(x.shape) == 2 and every >= 1 and x.shape[0] % every == 0,
          f"rows: {x} does not split into groups of {every} rows")
    _need(0 <= row < every, f"rows: row {row} outside a group of {every}")
    return (x.with_shape(x.shape[0] // every, x.shape[1]),)


def _conv1d_flops(ins, outs, attrs):
    return 2 * ins[1].shape[1] * outs[0].numel


def _scan_flops(ins, outs, attrs):
    # Per row and channel: softplus(dt), and per state element exp(dt*A), dt*B*x, the
    # update h = dA*h + dBx and its dot with C (~9 N), plus the D skip.
    return outs[0].numel * (9 * ins[2].shape[-1] + 8)


def expert_passes(rows: int, top_k: int, experts_here: int) -> int:
    """Passes over the rows a chip holding `experts_here` experts makes, whatever the router
    picks (static timing). One row (decode): one pass per routed expert that can be here,
    each streaming the chosen expert's weights by address. Several rows: one pass per local
    expert (each expert's weights stream once), over only its routed rows (routed_slots in all)."""
    return min(top_k, experts_here) if rows == 1 else experts_here


def by_address(rows: int, top_k: int, experts_here: int) -> bool:
    """Whether a chip runs each routed (row, expert) pair as its own one-row pass that streams that
    expert's weights, found by address at run time: fewer pairs than local experts (one row past k of
    them: decode; a speculative verify step's few rows), where streaming every local expert once, as
    the grouped matmul does, would stream more. Otherwise one row makes a pass per local expert and
    several take the grouped matmul."""
    return rows * top_k < experts_here


def routed_slots(rows: int, top_k: int, experts_here: int) -> int:
    """Rows a chip's grouped prefill multiplies (several rows): each row goes to k experts, at most
    min(k, experts here) of them on this chip, so a fixed buffer of rows x min(k, here) slots holds
    every routing (a feature-sliced chip holds every expert: exactly rows x k)."""
    return rows * min(top_k, experts_here)


def expert_rows(rows: int, top_k: int, experts_here: int) -> int:
    """Row passes through one expert's weights a chip makes, summed over its experts: decode's
    passes over its one row, else the routed pairs (by address, or the grouped matmul's slots)."""
    return expert_passes(1, top_k, experts_here) if rows == 1 else routed_slots(rows, top_k, experts_here)


def _experts_flops(ins, outs, attrs):
    x, gate = ins[0], ins[3]
    experts_here, hidden, inter = gate.shape
    return 6 * hidden * inter * expert_rows(x.shape[0], attrs["top_k"], experts_here)


def _experts_scratch(ins, outs, attrs):
    """One pass's 16-bit intermediates: gate, up, activation and their product [M, I], and
    the expert's output [M, H] before it is weighted into the result. Grouped (several rows): the
    i32 table [3 x slots] and the most the lowering holds live at once over the routed slots (SRAM
    is allocated by liveness; the permuted rows stream into the MXM, the activation and product are
    written over gate's and up's results): gate and up [slots, I], or the product and down's [slots, H]."""
    rows, hidden = ins[0].shape
    inter = ins[3].shape[2]
    if by_address(rows, attrs["top_k"], ins[3].shape[0]) or rows == 1:  # one row's pass at a time
        return 2 * (4 * inter + hidden)
    slots = routed_slots(rows, attrs["top_k"], ins[3].shape[0])
    return 12 * slots + 2 * slots * max(2 * inter, inter + hidden)


def _mla_attention(ins, attrs):
    q_nope, q_pe, c_kv, k_pe, cache, pos, kv_b = ins[:7]
    heads, nope, rope, v = attrs["heads"], attrs["nope_dim"], attrs["rope_dim"], attrs["v_dim"]
    rows, rank = q_nope.shape[0], c_kv.shape[1]
    _need(q_nope.shape == (rows, heads * nope) and q_pe.shape == (rows, heads * rope),
          f"mla q must be [M,{heads}x{nope}] and [M,{heads}x{rope}], got {q_nope} and {q_pe}")
    _need(c_kv.shape == (rows, rank) and k_pe.shape == (rows, rope), f"mla latent rows must be [M,R], [M,{rope}]")
    _need(len(cache.shape) == 3 and cache.shape[2] == rank + rope, f"latent cache must be [B,C,{rank + rope}]")
    _need(cache.dtype in (DType.F16, DType.BF16), f"latent cache must be 16-bit, got {cache}")
    _need(rows % cache.shape[0] == 0, f"{rows} rows do not split over batch {cache.shape[0]}")
    _need(pos.dtype is DType.I32 and pos.shape == (rows,), f"mla positions must be i32[{rows}]")
    _need(kv_b.shape == (rank, heads * (nope + v)), f"kv_b must be [{rank},{heads}x{nope + v}], got {kv_b}")
    if len(ins) > 7:
        _scales(kv_b, ins[7:], 0, kv_b.shape[1:], "kv_b")
    else:
        _need(kv_b.dtype.block is None, f"a {kv_b.dtype.value} kv_b needs its block scales")
    _reach(attrs, cache)
    return (TensorType(_activation(q_nope), (rows, heads * v)),)


def _mla_flops(ins, outs, attrs):
    """Absorbed form, per row and head: q_nope into latent space (R x nope), scores over the
    cache's latent and rope parts, the weighted latent sum, and its value projection (R x v)."""
    rows, rank, tokens = ins[0].shape[0], ins[2].shape[1], reach_of(attrs, ins[4])
    per_head = 2 * rank * (attrs["nope_dim"] + attrs["v_dim"]) + 2 * tokens * (2 * rank + attrs["rope_dim"])
    return rows * attrs["heads"] * per_head


def _mla_scratch(ins, outs, attrs):
    """16-bit latent queries [M, heads, R + rope] and latent outputs [M, heads, R]; scores
    stream through the softmax as ordinary attention's do."""
    rows, rank = ins[0].shape[0], ins[2].shape[1]
    return 2 * rows * attrs["heads"] * (2 * rank + attrs["rope_dim"])


def _attention_scratch(ins, outs, attrs):
    """A sequence shard's (seq_shards s) 16-bit buffers: its kv head's queries gathered from the s chips
    [M, s x heads, head_dim], its partial (context and a two-part log-sum-exp per row and head), and
    the s chips' partials gathered."""
    shards = attrs.get("seq_shards", 1)
    if shards == 1:
        return 0
    rows, heads, d = ins[0].shape[0], attended_heads(attrs), attrs["head_dim"]
    queries = 0 if "q_slice" in attrs else d  # query-sliced: the queries arrive whole (passes.shard.query_slice)
    return 2 * rows * heads * (queries + (1 + shards) * (d + 2))


def attended_heads(attrs: dict) -> int:
    """Query heads one chip of a grouped-query attention attends: its own, or on a sequence shard
    (seq_shards s) every query of its kv head: gathered from the s chips' heads, or already whole
    where the queries were sliced by feature (q_slice)."""
    return attrs["heads"] * (1 if "q_slice" in attrs else attrs.get("seq_shards", 1))


def _no_flops(ins, outs, attrs):
    return 0


def _per_out(k: int) -> CostRule:
    return lambda ins, outs, attrs: k * outs[0].numel


def _matmul_flops(ins, outs, attrs):
    return 2 * ins[0].shape[0] * ins[0].shape[1] * outs[0].shape[1]


def _attention_flops(ins, outs, attrs):
    # Scores and weighted sum over the cache it reads (reach): 2 matmuls of M x C x head_dim per head.
    # A chip of a sequence-sharded cache (seq_shards) attends all its kv head's queries over its positions.
    q, cache = ins[0], ins[3]
    return 4 * q.shape[0] * reach_of(attrs, cache) * attended_heads(attrs) * attrs["head_dim"]


OPDEFS: dict[Opcode, OpDef] = {
    # shards: the table is one of that many row (vocabulary) shards; rows it lacks give zeros.
    # A quantized table's scales follow it: per row [V], or (block-scaled) [V, H/block] and NVFP4's
    # f32 tensor scale []; dtype: a quantized table's rows' type.
    Opcode.EMBED: OpDef((2, 4), {}, _embed, _no_flops, optional={"shards": int, "dtype": str}),
    # split: Megatron-style tensor parallelism. "col" splits the output features
    # (the result is a shard), "row" splits the input features (the result is a
    # partial sum that an allreduce completes). Absent: the weight is replicated.
    # heads: the output is that many attention heads; a group wider than that
    # replicates heads (each chip keeps whole heads, as for GQA's kv heads).
    # transpose_b: w is stored [N,K] (x @ w.T), so a tied LM head reads the embedding table.
    # vocab: the output features are the vocabulary (the LM head): split as the embedding's rows
    # (passes.shard.vocab_share), the last shard padded with columns an argmax leaves out.
    # A quantized w's scales follow it: per output channel [N]; or (nvfp4, mxfp4, mxfp8) one per
    # block of 16 or 32 inputs of each output, [K/block, N] ([N, K/block] with transpose_b), then
    # NVFP4's f32 tensor scale [] (experts: [E, ...] and [E]), which multiplies the product.
    Opcode.MATMUL: OpDef((2, 4), {}, _matmul, _matmul_flops,
                         optional={"split": str, "heads": int, "transpose_b": bool, "vocab": bool}),
    Opcode.ADD: OpDef((2, 2), {}, _elementwise, _per_out(1)),
    Opcode.MUL: OpDef((2, 2), {}, _elementwise, _per_out(1)),
    Opcode.RMSNORM: OpDef((2, 2), {"eps": float}, _rmsnorm, _per_out(4)),
    Opcode.ROPE: OpDef(
        (2, 2),
        {"heads": int, "head_dim": int, "theta": float},
        _rope,
        _per_out(3),
        optional={"scaling": str, "factor": float, "low_freq_factor": float,
                  "high_freq_factor": float, "original_max_position": int,
                  "beta_fast": float, "beta_slow": float, "mscale": float, "mscale_all_dim": float,
                  "interleave": bool},  # interleave: each head's pairs are (x0,x1),(x2,x3)... (DeepSeek)
    ),
    # Operands: q, k, v, k_cache, v_cache, pos (and k_scale, v_scale for an 8-bit cache); with `tier`,
    # then the cold caches k_cold, v_cold of the `cold` oldest positions, held below SRAM (and their scales).
    # reach (causal prefill): each sequence's cache is read only at positions below it (every row's
    # position lies below it; absent: the whole cache), so a chunk streams the prefix it can see.
    # seq_shards s: the chip holds a run of the positions and attends its kv head's queries over them;
    # q_slice w: those queries arrive whole and the chip keeps w features of the merged context.
    Opcode.ATTENTION: OpDef(
        (6, 12), {"heads": int, "kv_heads": int, "head_dim": int}, _attention, _attention_flops,
        writes=(3, 4, 6, 7, 8, 9, 10, 11),
        optional={"reach": int, "tier": str, "cold": int, "block": int, "seq_shards": int, "q_slice": int},
        scratch=_attention_scratch,
    ),
    Opcode.SILU: OpDef((1, 1), {}, _unary, _per_out(4)),
    Opcode.GELU: OpDef((1, 1), {}, _unary, _per_out(8)),
    Opcode.SOFTMAX: OpDef((1, 1), {}, _unary, _per_out(5)),
    # shards: the input is one of that many vocabulary shards; the op also reduces the
    # shards' best (value, index) pairs across the group, so every chip gets global ids;
    # vocab: the ids below it are real (the last shard's padded columns past it never win).
    Opcode.ARGMAX: OpDef((1, 1), {}, _argmax, _per_out(1), optional={"shards": int, "vocab": int}),
    Opcode.ALLREDUCE: OpDef((1, 1), {"group": int}, _unary, _per_out(1)),
    Opcode.ALLGATHER: OpDef((1, 1), {"group": int}, _allgather, _no_flops),
    Opcode.SEND: OpDef((1, 1), {"peer": int}, lambda ins, attrs: (), _no_flops),
    Opcode.RECV: OpDef((0, 0), {"peer": int, "shape": str, "dtype": str}, _recv, _no_flops),
    # MoE routing: scores by `scoring` (softmax over all experts, or sigmoid), the k best kept,
    # renormalised to sum 1 when `normalize`, then multiplied by `scale`. DeepSeek-V3: an optional
    # bias [E] (operand 1) is added to the scores for choosing only (weights stay unbiased), and
    # with `groups`, only experts of the `topk_groups` groups whose two best biased scores sum
    # highest may be chosen.
    Opcode.TOPK: OpDef((1, 2), {"k": int}, _topk, _per_out(8),
                       optional={"scoring": str, "normalize": bool, "scale": float, "groups": int,
                                 "topk_groups": int}),
    # y[m] = sum_j weights[m,j] * down_e(act(gate_e(x[m])) * up_e(x[m])), e = ids[m,j]. `experts`
    # is the model's count (a chip may hold fewer after sharding); split="expert" spreads them.
    Opcode.EXPERTS: OpDef((6, 12), {"experts": int, "top_k": int}, _experts, _experts_flops,
                          optional={"act": str, "split": str, "tile": int, "placement": str}, scratch=_experts_scratch),
    # Operands: q_nope [M,H*nope], q_pe [M,H*rope] (roped), c_kv [M,R] (normed latent), k_pe [M,rope]
    # (roped, shared by all heads), cache [B,C,R+rope], pos, kv_b [R,H*(nope+v)] (each head's
    # [k_nope | v] up-projection; and its scale [H*(nope+v)] when quantized). Writes [c_kv | k_pe]
    # at pos; head h scores q_nope_h.W_uk_h.c_kv + q_pe_h.k_pe per cached token, times `scale`,
    # and returns softmax . c_kv . W_uv_h: HF's attention over kv_b-expanded keys and values,
    # computed on the latent cache (weight absorption).
    # reach: as attention's, over the latent cache.
    Opcode.MLA_ATTENTION: OpDef(
        (7, 9), {"heads": int, "nope_dim": int, "rope_dim": int, "v_dim": int, "scale": float},
        _mla_attention, _mla_flops, optional={"reach": int}, writes=(4,), scratch=_mla_scratch,
    ),
    # Mamba. Rows of a sequence are contiguous (B sequences of M/B rows); each sequence's
    # rows run in order starting from its state, which is left as after its last row (decode:
    # one step; prefill: the prompt), so a prompt may also arrive in chunks.
    # conv1d: x [M,C], weight [C,K], state [B,C,K-1] (the sequence's last K-1 inputs), bias [C].
    Opcode.CONV1D: OpDef((3, 4), {}, _conv1d, _conv1d_flops, writes=(2,)),
    # selective_scan: x, dt [M,C] (before softplus), A_log [C,N], B, C [M,N], D [C], state
    # [B,C,N]. Per row: h = exp(softplus(dt) * -exp(A_log)) * h + softplus(dt) * B * x;
    # y = h @ C + D * x. The z gate is separate (silu, mul).
    Opcode.SELECTIVE_SCAN: OpDef((7, 7), {}, _selective_scan, _scan_flops, writes=(6,)),
    Opcode.SLICE: OpDef((1, 1), {"start": int, "stop": int}, _slice, _no_flops),
    # x[row::every]: one row of each sequence's `every` contiguous rows (data movement only).
    Opcode.ROWS: OpDef((1, 1), {"every": int, "row": int}, _rows, _no_flops),
    # Speculative decoding's acceptance: operands predicted (the target's argmax per row) and tokens
    # (each sequence's current token, then its drafts), i32[B*steps]; result i32[B], the drafts
    # accepted (the first mismatch ends the run). The emitted tokens are predicted[0..accepted].
    Opcode.ACCEPT: OpDef((2, 2), {"steps": int}, _accept, lambda ins, outs, attrs: ins[0].numel),
}
