"""What one chip of a tensor-parallel group holds and does for one unit (scope).

Read off the per-chip ops that ShardTensorParallel produces, with the ops' own
cost rules: the plan's figures and the lowering come from the same IR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from compiler.partition.chaining import chained_operands, closes_chained, opens_chained, scaled_after_mxm
from compiler.partition.overlap import overlapped
from compiler.passes.fuse import columns, fuse_siblings
from compiler.passes.shard import ShardTensorParallel
from ir.graph import Op
from ir.ops import OPDEFS, Opcode, attended_heads, by_address, expert_passes, reach_of, routed_slots, tier_operands
from ir.types import DType

_COLLECTIVES = {Opcode.ALLREDUCE: "allreduce", Opcode.ALLGATHER: "allgather"}
# The chip backend's cost rules: every op's own (ir.ops.OPDEFS) flops and bytes on one chip of its
# group, and the blocks its matrix products install (_BLOCKS).
COSTED = frozenset(OPDEFS)
_MOVES = {Opcode.SLICE, Opcode.ROWS}  # data movement only (a strided READ and its WRITE): no pipeline latency


@dataclass(frozen=True, slots=True)
class Collective:
    """A collective on the critical path: `bytes` is the whole (reduced or gathered) tensor."""

    kind: str  # "allreduce" | "allgather"
    bytes: int
    group: int
    stage: int = 0  # chips of the stage whose blocks of `group` consecutive ranks run it (0: the group itself)
    # An all-reduce that overlaps the row-parallel matmul before it (partition.overlap): that matmul's
    # index in ShardCost.work and its output's rows and columns, which set the pieces.
    overlaps: int = -1
    rows: int = 0
    columns: int = 0
    # The next collective of the unit is issued before anything waits for this one and reads nothing of it
    # (a kv head's q, k and v slices gathered one after another): the two share their latency, this one
    # hidden under the work items `hides` (ShardCost.work indices, issued between the two and independent
    # of it) and the next collective (partition.cost.unit_time).
    concurrent: bool = False
    hides: tuple[int, ...] = ()
    scaled: bool = False  # an overlapped matmul's products leave through a VOP (partition.chaining.piece_on_one_stream)
    elements: int = 0  # the tensor's elements (an all-reduce's slices are whole ones: its staging, _peak_live)
    one_row: bool = False  # of one row (a decode step at batch 1): a node's chips may shoot it (mesh.may_shoot)


@dataclass(frozen=True, slots=True)
class Block:
    """`count` k x n blocks the matrix unit installs (a weight, or a block of cached keys or values),
    each passed by m rows, in the format of `precision` (a key of ChipSpec.peak_ops_per_s). A grouped
    product (routed prefill) installs `installs` blocks (one per local expert) and passes its m rows
    `count` times in all, each row through its own expert's block."""

    m: int
    k: int
    n: int
    count: int
    precision: str
    cache: bool = False  # a KV cache, not a weight (the bound counts it at the SRAM's rate)
    installs: int | None = None  # blocks installed, when not `count` (grouped)
    # A latent attention's per-head product (weights a latent feature: heads x per-head dim; heads): the
    # lowering cuts its latent rank into feature_blocks, one MXM each, along k (heads 0) or n = heads x rank.
    cut: tuple[int, int] = ()

    @property
    def installed(self) -> int:
        return self.count if self.installs is None else self.installs

    @property
    def weights(self) -> int:
        """Weights installed."""
        return self.installed * self.k * self.n

    @property
    def passed(self) -> int:
        """Weights each row's pass multiplies, summed over the passes."""
        return self.count * self.k * self.n


@dataclass(frozen=True, slots=True)
class OpWork:
    """One op on one chip: SRAM bytes it streams and arithmetic it does, the precision its products
    run at when that is not the weights' (attention multiplies by its cache), and the blocks its
    matrix products install (the lowering's MXM instructions, summed)."""

    opcode: Opcode
    read_bytes: int
    flops: int
    precision: str | None = None
    blocks: tuple[Block, ...] = ()


# Staging slots a tiered cache streams through: the host link fills one while the MXM reads the other.
STAGING_SLOTS = 2


@dataclass(frozen=True, slots=True)
class TierWork:
    """One chip's traffic with a tier below SRAM for a unit: `bytes` of cold cache held there and fetched
    every step (into staging slots, then streamed from SRAM like the hot part), in `fetches` transfers of
    at most `block_bytes`; `attention` is the index in `work` of the op that waits for them; `stores`
    transfers of `store_bytes` in all carry the step's new rows to the tier on the same link."""

    name: str
    bytes: int
    fetches: int
    block_bytes: int
    attention: int
    stores: int = 0  # the step's new rows written to the tier (one STORE per cache)
    store_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ShardCost:
    """One unit on one chip of a group of `tp` chips."""

    tp: int
    weight_bytes: int
    state_bytes: int
    act_bytes: int  # peak live activations
    work: tuple[OpWork, ...]
    collectives: tuple[Collective, ...]
    chain_ops: int  # ops on the longest dependency path: each pays the chip's pipeline latency
    state_read_bytes: int = 0  # the caches' and states' own bytes (state_bytes adds their alignment)
    tier: TierWork | None = None  # KV positions held below SRAM and fetched every step
    # partition.chaining.closes_chained / opens_chained: a run of units lowered together chains across them
    closes: bool = False
    opens: bool = False

    @property
    def tier_bytes(self) -> int:
        """Cache bytes this chip holds in the tier below SRAM."""
        return self.tier.bytes if self.tier else 0

    @property
    def resident_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes


def align(nbytes: int, alignment: int) -> int:
    """Bytes a tensor takes in SRAM: every buffer starts on a vector (`alignment`-byte) boundary."""
    return -(-nbytes // alignment) * alignment


def shard_cost(ops: Sequence[Op], tp: int, rows_scale: float = 1.0, alignment: int = 1,
               split: bool = True, tile: int = 0, panel: int = 0, staging_rule: Staging | None = None) -> ShardCost:
    """Per-chip cost of one unit on `tp` chips (in the split layout or the whole one: passes.shard).
    `rows_scale` shrinks everything that grows with the rows (activations, arithmetic), e.g. to one
    prefill chunk; buffers start on `alignment`-byte boundaries (the target's vector); sibling matmuls
    fuse where that saves whole `tile`-wide tiles (the target's matrix_dim; 0: none, passes.fuse); `panel` is
    the MXM's columns a chain (dim x planes), for results it leaves on one stream (partition.chaining)."""
    return chip_cost(ShardTensorParallel(tp, split)(ops), tp, rows_scale, alignment, tile, panel, staging_rule)


# The buffers each of a unit's collectives stages (by its work and collectives, on a target: partition.cost's
# staging_rule), which the lowering allocates beside the unit's live activations.
Staging = Callable[[Sequence[OpWork], Sequence[Collective]], Sequence[tuple[int, ...]]]


def chip_cost(chip_ops: list[Op], tp: int, rows_scale: float = 1.0, alignment: int = 1,
              tile: int = 0, panel: int = 0, staging_rule: Staging | None = None) -> ShardCost:
    """shard_cost of a unit already sharded over `tp` chips (its per-chip ops), its sibling matmuls fused
    as the lowering fuses them (passes.fuse). `staging_rule`: the target's rule for the collectives' staging
    buffers, counted in the activations at their ops (None: a target-free cost, which counts none)."""
    chip_ops = fuse_siblings(chip_ops, tile)
    params, state, cold = _resident(chip_ops)
    scales = row_scales(chip_ops, params | state | cold, rows_scale)
    work, collectives = [], []
    tier = None
    pairs = {ar: mm for mm, ar in overlapped(chip_ops).items()}
    waits: dict[str, frozenset[int]] = {}  # value -> the collectives it waits for
    issued: list[tuple[int, frozenset[int]]] = []  # each collective's work index and what it waits for
    at: list[int] = []  # each collective's op
    work_waits: list[frozenset[int]] = []
    for i, op in enumerate(chip_ops):
        k = _op_scale(op, scales)
        before = frozenset().union(*(waits.get(v.name, frozenset()) for v in op.operands))
        first = len(collectives)
        if op.opcode in _COLLECTIVES:
            group = op.attr.get("group", tp)  # a kv head's chips gather its slices among themselves
            shape = op.results[0].type.shape
            piece = (len(work) - 1, _scaled(shape[0], k), shape[-1]) if i in pairs else ()
            collectives.append(Collective(_COLLECTIVES[op.opcode], _scaled(op.results[0].type.nbytes, k), group, tp,
                                          *piece, scaled=i in pairs and scaled_after_mxm(chip_ops[pairs[i]]),
                                          elements=_scaled(op.results[0].type.numel, k),
                                          one_row=len(shape) < 2 or _scaled(shape[0], k) == 1))
        if op.opcode is Opcode.ARGMAX and op.attr.get("shards", 1) > 1:  # best (value, index) per row
            one = _scaled(op.results[0].type.numel, k) == 1  # one gather of the pairs: a row's is one exchange
            collectives.append(Collective("allreduce", _scaled(op.results[0].type.numel * 8, k), tp, one_row=one))
        if op.opcode is Opcode.ATTENTION and op.attr.get("seq_shards", 1) > 1:
            collectives.extend(_sequence_shard_exchanges(op, k, tp))
        at += [i] * (len(collectives) - first)
        # an op's later exchanges wait for its earlier ones (a sequence-sharded attention's queries, then partials)
        issued += [(len(work), before | frozenset(range(first, j))) for j in range(first, len(collectives))]
        waits.update((r.name, before | frozenset(range(first, len(collectives)))) for r in op.results)
        if op.opcode in _COLLECTIVES:
            continue
        if op.opcode is Opcode.ATTENTION and "tier" in op.attr:
            tier = _tier_work(op, len(work), tier, k)
        work.append(_work(op, params | state | cold, scales, k))
        work_waits.append(before)
    collectives = _concurrent(collectives, issued, work_waits)
    # SRAM holds each tensor from a vector boundary, as the allocator places it.
    weights = sum(align(n, alignment) for n in params.values())
    cache = sum(align(n, alignment) for n in state.values())
    staging = STAGING_SLOTS * align(tier.block_bytes, alignment) if tier else 0
    held = _held(chip_ops, at, staging_rule(work, collectives) if staging_rule else (), alignment)
    return ShardCost(tp, weights, cache,
                     _peak_live(chip_ops, params | state | cold, scales, alignment, held) + staging,
                     tuple(work), tuple(collectives), _chain(chip_ops, panel),
                     _state_read(chip_ops, state) + sum(cold.values()), tier, closes_chained(chip_ops),
                     opens_chained(chip_ops))


def _concurrent(collectives: list[Collective], issued: list[tuple[int, frozenset[int]]],
                work_waits: list[frozenset[int]]) -> list[Collective]:
    """Mark each collective the next one does not wait for (Collective.concurrent), with the work issued
    between the two that does not wait for it either. All-reduces in pieces under their matmul keep their
    own rule (partition.overlap)."""
    marked = list(collectives)
    for j, (c, n) in enumerate(zip(collectives, collectives[1:], strict=False)):
        (at, _), (then, waited) = issued[j], issued[j + 1]
        if c.overlaps < 0 and n.overlaps < 0 and j not in waited:
            marked[j] = replace(c, concurrent=True, hides=tuple(w for w in range(at, then) if j not in work_waits[w]))
    return marked


def _sequence_shard_exchanges(op: Op, rows_scale: float, tp: int) -> tuple[Collective, ...]:
    """A sequence-sharded attention's all-gathers over the s chips of its kv head: their queries in, then
    their partials (context and two-part log-sum-exp per row and head) out. Queries sliced by feature
    (q_slice) arrive whole: the graph's own all-gather of the slices brought them."""
    shards, d = op.attr["seq_shards"], op.attr["head_dim"]
    rows = _scaled(op.operands[0].type.shape[0], rows_scale)
    heads = attended_heads(op.attr)
    partials = Collective("allgather", 2 * shards * rows * heads * (d + 2), shards, tp)
    if "q_slice" in op.attr:
        return (partials,)
    return Collective("allgather", 2 * rows * heads * d, shards, tp), partials


def row_scales(chip_ops: list[Op], resident: dict[str, int], rows_scale: float) -> dict[str, float]:
    """The share of its rows each value keeps at a chunk of `rows_scale` of the prompt: the unit's
    inputs and every row-wise value scale with the chunk, except what follows a ROWS op (one row a
    sequence in the whole prompt as in every chunk: prefill's head), which keeps its rows."""
    scales: dict[str, float] = {}
    for op in chip_ops:
        for v in op.operands:
            scales.setdefault(v.name, rows_scale)
        k = max((scales[v.name] for v in op.operands if v.name not in resident), default=rows_scale)
        scales.update((r.name, 1.0 if op.opcode is Opcode.ROWS else k) for r in op.results)
    return scales


def _op_scale(op: Op, scales: dict[str, float]) -> float:
    """The rows an op works on, as a share of the prompt's: a ROWS op's (or a SEND's) input's, any other's result's."""
    return scales[(op.operands[0] if op.opcode is Opcode.ROWS or not op.results else op.results[0]).name]


def _state_read(chip_ops: list[Op], state: dict[str, int]) -> int:
    """Bytes of the caches and states one step reads: a causal chunk's caches only up to its reach."""
    fraction = {v.name: _read_fraction(op, i) for op in chip_ops for i, v in enumerate(op.operands) if v.name in state}
    return sum(math.ceil(n * fraction.get(name, 1.0)) for name, n in state.items())


def _read_fraction(op: Op, index: int) -> float:
    """The share of resident operand `index` that `op` streams: an attention cache (and its scales)
    up to the op's reach, a matmul's columns of a fused weight (passes.fuse.columns), everything else whole."""
    cols = columns(op)
    if cols is not None and index >= 1:
        return (cols[1] - cols[0]) / op.operands[index].type.shape[-1]
    cache = _CACHE_OPERANDS.get(op.opcode)
    if cache is None or index not in cache or "tier" in op.attr:  # a tiered cache is read whole
        return 1.0
    tokens = op.operands[cache[0]].type.shape[1]
    return reach_of(op.attr, op.operands[cache[0]].type) / tokens


_CACHE_OPERANDS = {Opcode.ATTENTION: (3, 4, 6, 7), Opcode.MLA_ATTENTION: (4,)}


def _tier_work(op: Op, index: int, before: TierWork | None, rows_scale: float) -> TierWork:
    """The cold caches of one tiered attention on this chip: every sequence's cold positions, K then V,
    fetched `block` positions at a time, and the new rows stored (a unit with two such attentions sums them)."""
    below = [op.operands[i].type for i in tier_operands(len(op.operands))]
    batch, cold, _ = below[0].shape
    row = sum(t.nbytes for t in below) // (2 * batch * cold)  # one position's codes (and scales) of k or v
    block = op.attr["block"]
    fetches = len(below) * batch * -(-cold // block)  # codes and scales move apart
    nbytes = sum(t.nbytes for t in below)
    stored = 2 * _scaled(op.operands[1].type.shape[0], rows_scale) * row  # the new rows of k and of v
    if before is not None:
        return TierWork(before.name, before.bytes + nbytes, before.fetches + fetches,
                        max(before.block_bytes, block * row), before.attention, before.stores + len(below),
                        before.store_bytes + stored)
    return TierWork(op.attr["tier"], nbytes, fetches, block * row, index, len(below), stored)


def _chain(chip_ops: list[Op], panel: int) -> int:
    """Longest path, counted in compute ops, through the unit's dataflow (collectives are link
    time; a slice only moves data; an op taking an operand off a stream adds none for it)."""
    depth: dict[str, int] = {}
    longest = 0
    # off the vector unit's stream: the pair pays once (partition.chaining)
    for op, chained in zip(chip_ops, chained_operands(chip_ops, panel), strict=True):
        pays = op.opcode not in _COLLECTIVES and op.opcode not in _MOVES
        d = max((depth.get(v.name, 0) + (pays and v.name != chained) for v in op.operands), default=int(pays))
        for r in op.results:
            depth[r.name] = d
        longest = max(longest, d)
    return longest


def _resident(chip_ops: list[Op]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Params, caches in SRAM, and caches held in a tier below: operands no op of the unit defines,
    other than activation inputs."""
    defined = {r.name for op in chip_ops for r in op.results}
    params: dict[str, int] = {}
    state: dict[str, int] = {}
    cold: dict[str, int] = {}
    for op in chip_ops:
        below = tier_operands(len(op.operands)) if op.opcode is Opcode.ATTENTION and "tier" in op.attr else ()
        for i, v in enumerate(op.operands):
            if v.name not in defined and is_resident(op, i):
                where = (cold if i in below else state) if i in OPDEFS[op.opcode].writes else params
                where[v.name] = v.type.nbytes  # written: a cache
    return params, state, cold


def is_resident(op: Op, index: int) -> bool:
    """Whether operand `index` of `op` is a param or cache (resident) rather than an activation."""
    if op.opcode is Opcode.MATMUL:
        return index >= 1
    if op.opcode is Opcode.EMBED:
        return index >= 1  # the table and a quantized table's scale
    if op.opcode is Opcode.RMSNORM:
        return index == 1
    if op.opcode is Opcode.ATTENTION:
        return index >= 3 and index != 5  # caches (in SRAM and below) and their scales
    if op.opcode is Opcode.EXPERTS:
        return index >= 3  # expert weights and their scales
    if op.opcode is Opcode.CONV1D:
        return index >= 1  # weight, conv state, bias
    if op.opcode is Opcode.SELECTIVE_SCAN:
        return index in (2, 5, 6)  # A_log, D, SSM state
    if op.opcode is Opcode.MLA_ATTENTION:
        return index in (4, 6, 7, 8)  # the latent cache, kv_b and its scales
    if op.opcode is Opcode.TOPK:
        return index == 1  # the router's correction bias
    if op.opcode in (Opcode.ADD, Opcode.MUL):
        return index == 1 and len(op.operands[1].type.shape) == 1
    return False


def _work(op: Op, resident: dict[str, int], scales: dict[str, float], rows_scale: float) -> OpWork:
    streamed = sum(math.ceil(resident.get(v.name, 0) * _read_fraction(op, i)) for i, v in enumerate(op.operands))
    if op.opcode is Opcode.EMBED:
        streamed = 0  # a lookup reads one row per token, which the result's size counts
    if op.opcode is Opcode.EXPERTS:  # only the experts the static passes visit stream
        here = op.operands[3].type.shape[0]
        streamed = streamed * _experts_streamed(op.operands[0].type.shape[0], op.attr["top_k"], here) // here
    moving = sum(_scaled(v.type.nbytes, scales[v.name])
                 for v in (*op.operands, *op.results) if v.name not in resident)
    return OpWork(op.opcode, streamed + moving, _scaled(op.cost.flops, rows_scale),
                  _cache_precision(op), _blocks(op, rows_scale))


# The precision (a ChipSpec.peak_ops_per_s key) a stored format runs at on the matrix unit; a
# block-scaled format by its name, which ChipSpec.peak_ops and install_bytes resolve (its fp4 or
# fp8 key, or dequantised on the way in where a target has no fp4: targets.spec.mxm_rate_key).
_CACHE_RATE = {DType.F16: "fp16", DType.BF16: "fp16", DType.F32: "fp16", DType.I8: "int8", DType.FP8: "fp8",
               DType.I4: "int4", DType.NVFP4: "nvfp4", DType.MXFP4: "mxfp4", DType.MXFP8: "mxfp8"}


def _blocks(op: Op, rows_scale: float) -> tuple[Block, ...]:
    """The blocks an op's matrix products install, as the lowering cuts them (compiler/codegen)."""
    rule = _BLOCKS.get(op.opcode)
    return rule(op, rows_scale) if rule else ()


def _matmul_blocks(op: Op, rows_scale: float) -> tuple[Block, ...]:
    w = op.operands[1].type
    k, n = (w.shape[1], w.shape[0]) if op.attr.get("transpose_b") else w.shape
    n = op.results[0].type.shape[-1] if columns(op) else n  # its columns of a fused weight
    rows = _scaled(op.operands[0].type.shape[0], rows_scale)
    return (Block(rows, k, n, 1, _CACHE_RATE[w.dtype]),)


def feature_blocks(rank: int, per_feature: int, panel: int) -> list[tuple[int, int]]:
    """(first, count) latent features per MXM of a per-head product (codegen.mla): every head's weights
    for `count` features, `per_feature` weights each, within the panel x panel one instruction covers."""
    step = max(1, min(rank, panel ** 2 // per_feature))
    return [(r0, min(step, rank - r0)) for r0 in range(0, rank, step)]


def instructions(b: Block, panel: int) -> list[Block]:
    """The MXM instructions' blocks the lowering cuts `b` into: one per feature block of a cut block."""
    if not b.cut:
        return [b]
    per_feature, heads = b.cut
    rank = b.n // heads if heads else b.k
    return [replace(b, k=b.k if heads else rb, n=heads * rb if heads else b.n, cut=())
            for _, rb in feature_blocks(rank, per_feature, panel)]


def _experts_streamed(rows: int, top_k: int, here: int) -> int:
    """Expert slices a chip streams (codegen.experts): one per pass by address or over one row, else
    every local expert's once (the grouped matmul)."""
    if by_address(rows, top_k, here):
        return rows * top_k
    return expert_passes(rows, top_k, here) if rows == 1 else here


def _expert_blocks(op: Op, rows_scale: float) -> tuple[Block, ...]:
    """One row: each static pass installs one expert's gate, up and down. Several: the grouped
    lowering installs every local expert's once and passes the routed slots (codegen.experts)."""
    x, gate, down = op.operands[0].type, op.operands[3].type, op.operands[5].type
    here, hidden, inter = gate.shape
    rows = _scaled(x.shape[0], rows_scale)
    rate = _CACHE_RATE[gate.dtype]
    if rows > 1 and by_address(rows, op.attr["top_k"], here):  # one row a pass, each routed pair its own
        passes = rows * op.attr["top_k"]
        return (Block(1, hidden, inter, 2 * passes, rate), Block(1, down.shape[1], down.shape[2], passes, rate))
    if rows > 1:
        slots = routed_slots(rows, op.attr["top_k"], here)
        return (Block(slots, hidden, inter, 2, rate, installs=2 * here),
                Block(slots, down.shape[1], down.shape[2], 1, rate, installs=here))
    passes = expert_passes(rows, op.attr["top_k"], here)
    return (Block(rows, hidden, inter, 2 * passes, rate), Block(rows, down.shape[1], down.shape[2], passes, rate))


def _attention_blocks(op: Op, rows_scale: float) -> tuple[Block, ...]:
    """Keys [width, tokens] and values [tokens, width] of every sequence's cache up to the op's reach,
    passed by each sequence's rows times the query heads of one kv head."""
    q, cache = op.operands[0].type, op.operands[3].type
    batch, _, width = cache.shape
    a, tokens = op.attr, reach_of(op.attr, cache)
    m = max(1, _scaled(q.shape[0], rows_scale) // batch) * (attended_heads(a) // a["kv_heads"])
    rate = _CACHE_RATE[cache.dtype]
    return (Block(m, width, tokens * batch, 1, rate, True), Block(m, tokens * batch, width, 1, rate, True))


def _mla_blocks(op: Op, rows_scale: float) -> tuple[Block, ...]:
    """Latent attention with kv_b absorbed: W_uk and W_uv per head (cut into feature blocks), the latent
    cache's whole rows against the queries beside q_pe, its c_kv columns for the values."""
    a = op.attr
    q, cache, kv_b = op.operands[0].type, op.operands[4].type, op.operands[6].type
    batch, _, width = cache.shape
    tokens = reach_of(a, cache)
    rank, heads, rows = width - a["rope_dim"], a["heads"], _scaled(q.shape[0], rows_scale)
    m = max(1, rows // batch) * heads
    weights, cached = _CACHE_RATE[kv_b.dtype], _CACHE_RATE[cache.dtype]
    total = tokens * batch
    return (Block(rows, a["nope_dim"], heads * rank, 1, weights, cut=(heads * a["nope_dim"], heads)),
            Block(rows, rank, heads * a["v_dim"], 1, weights, cut=(heads * a["v_dim"], 0)),
            Block(m, width, total, 1, cached, True), Block(m, total, rank, 1, cached, True))


_BLOCKS = {Opcode.MATMUL: _matmul_blocks, Opcode.EXPERTS: _expert_blocks, Opcode.ATTENTION: _attention_blocks,
           Opcode.MLA_ATTENTION: _mla_blocks}


def _cache_precision(op: Op) -> str | None:
    """Attention's products read the cache, not a weight: they run at the cache's rate."""
    if op.opcode not in (Opcode.ATTENTION, Opcode.MLA_ATTENTION):
        return None
    cache = op.operands[OPDEFS[op.opcode].writes[0]]
    return _CACHE_RATE.get(cache.type.dtype)


def _held(chip_ops: list[Op], at: Sequence[int], slots: Sequence[tuple[int, ...]], alignment: int) -> dict[int, int]:
    """Bytes staged at each all-reduce op (its buffers, each from a vector boundary); the lowering gathers
    a sharded argmax's pairs and a sequence shard's partials, which stage nothing."""
    held: dict[int, int] = {}
    for i, buffers in zip(at, slots, strict=False):
        if chip_ops[i].opcode is Opcode.ALLREDUCE:
            held[i] = held.get(i, 0) + sum(align(b, alignment) for b in buffers)
    return held


def _peak_live(chip_ops: list[Op], resident: dict[str, int], scales: dict[str, float], alignment: int,
               held: dict[int, int] | None = None) -> int:
    """Largest sum of activations alive at once, with what op i stages beside them (`held[i]`: an all-reduce's
    buffers). The unit's inputs live from its start to its end: the lowering keeps them in ports for the
    whole unit, beside its working arena."""
    defined = {r.name for op in chip_ops for r in op.results}
    last_use = {v.name: i for i, op in enumerate(chip_ops) for v in op.operands}
    last_use.update((v.name, len(chip_ops)) for op in chip_ops for v in op.operands if v.name not in defined)
    live: dict[str, int] = {}
    peak = 0
    for i, op in enumerate(chip_ops):
        for v in (*op.operands, *op.results):
            if v.name not in resident and v.name not in live and (v in op.results or last_use.get(v.name, -1) >= i):
                live[v.name] = align(_scaled(v.type.nbytes, scales[v.name]), alignment)
        scratch = OPDEFS[op.opcode].scratch_bytes(tuple(v.type for v in op.operands),
                                                  tuple(r.type for r in op.results), op.attr)
        staged = align(_scaled(scratch, _op_scale(op, scales)), alignment) + (held or {}).get(i, 0)
        peak = max(peak, sum(live.values()) + staged)
        for v in op.operands:
            if last_use.get(v.name) == i:
                live.pop(v.name, None)
    return peak


def _scaled(n: int, k: float) -> int:
    return math.ceil(n * k)
