"""What one unit (embed, a layer, the head) does on a rectangle of cores: its ops as steps, and their cost.

Every op of the unit is spread over the same region of R x C cores (R rows, C columns). A
matrix w[K,N] is tiled in blocks of ceil(K/R) x ceil(N/C): core (i, j) holds block (i, j). Each op
is described once (`describe`) as the steps its cores take; the lowering (lower.py) emits them step
by step, level-synchronous, and a unit's cost is the time of those steps by the one Timing's per-core
rules the interpreter checks (targets/timing.py: whole tiles, port rates, links): no second formula.
A matrix-vector product x[M,K] @ w is the mesh GEMV of WaferLLM (MeshGEMV, arXiv 2502.04563):

    Feed    the K-slice i of x reaches every core of row i: R + C - 2 hops from where the previous
            op left it, one message step of M*ceil(K/R) 16-bit values;
    Mxm     each core multiplies its input slice by its block (Timing.mxm);
    Tree    the R partial sums of each column meet in a 2-way tree (WaferLLM's K-tree with
            K=2): a message step a level, about R - 1 hops in all, each moving M*ceil(N/C) values.

The KV cache of an attention op is spread the same way (tokens over rows, kv features over
columns); attention reduces scores within a head across the columns that split it, takes the
softmax max and sum down the rows, and reduces the weighted values down the rows. Vector ops
(norms, adds, activations) run on the C cores of one row, a norm adding an allreduce of one
value along the row. Fabric figures come from the SystemSpec: hop latency, message step, link
bandwidth; nothing is fitted.

Lower bound of a unit: its bytes over the region's aggregate SRAM bandwidth (or its flops over
the region's peak, whichever is larger) plus the wire latency every reduction must pay
(R - 1 hops): what no schedule on that region can beat.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler.partition.cost import Breakdown
from compiler.partition.mesh import region_mesh
from compiler.partition.shard_cost import is_resident
from ir.graph import Op
from ir.isa import FMT_OF, Fmt, Fn
from ir.isa import Op as Isa
from ir.ops import Opcode, expert_passes
from ir.program import Flag
from targets.mesh import Shape, tree_halves
from targets.spec import SystemSpec
from targets.timing import Timing
from targets.wafer_timing import FABRIC_SEND

ROWS, COLS = "rows", "cols"  # a region's mesh axes
ACT_BYTES = 2  # activations and partial sums travel as 16-bit values
X, S = 0, 2  # a core's streams: an op's input slice, attention scores (its result alternates on 1 and 3)
VECTOR_FN = {Opcode.ADD: Fn.ADD, Opcode.MUL: Fn.MUL, Opcode.SILU: Fn.SILU, Opcode.GELU: Fn.GELU,
             Opcode.RMSNORM: Fn.RMSNORM, Opcode.ROPE: Fn.ROPE, Opcode.SOFTMAX: Fn.SOFTMAX,
             Opcode.ARGMAX: Fn.ARGMAX, Opcode.TOPK: Fn.TOPK}


@dataclass(frozen=True, slots=True)
class Feed:
    """Row 0 sends `values` values to every core, R + C - 2 hops away (`row0`: what its GATHER read, to
    row 0's cores)."""

    values: int
    row0: bool = False


@dataclass(frozen=True, slots=True)
class Mxm:
    """Every core multiplies its m x k input by its k x n block at param offset `at` (`src_bytes` read)."""

    m: int
    k: int
    n: int
    fmt: Fmt
    at: int
    src_bytes: int
    s_b: int = X
    out: int | None = None  # None: a fresh result stream
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Tree:
    """A 2-way tree of `values` values a core along the region mesh's `axis` (partition.mesh.region_mesh):
    down the rows, or along row 0's columns (within groups of `group` columns when given; `broadcast`:
    back down)."""

    axis: str
    values: int
    group: int | None = None
    broadcast: bool = False

    def levels(self, region: Shape) -> tuple[int, ...]:
        """The hops of each level it runs: every level of its line's 2-way tree (targets.mesh), or within
        groups of `group` columns only the last (shortest) ceil(log2 group)."""
        halves = tree_halves(region_mesh(region.rows, region.cols).axis(self.axis).size)
        keep = len(halves) if self.group is None else min(len(halves), math.ceil(math.log2(max(1, self.group))))
        return tuple(halves[len(halves) - keep:])


@dataclass(frozen=True, slots=True)
class RowOp:
    """Row 0's cores run a VOP `fn` on m rows of n elements, or (Isa.GATHER) read their n-element slice
    of m table rows: `nbytes` read."""

    op: Isa
    fn: Fn
    m: int
    n: int
    nbytes: int

    def cycles(self, tm: Timing) -> int:
        return tm.vop(self.fn, self.m * self.n, self.nbytes, rows=self.m) if self.op is Isa.VOP else tm.mem(self.nbytes)


Step = Feed | Mxm | Tree | RowOp
Rule = tuple[tuple[Step, ...], int, int, int, float]  # an op's steps; weight, state and activation bytes a core; bound


@dataclass(frozen=True, slots=True)
class MeshCost:
    """Ops on a region: bytes on each core, the time of one pass (decode step or prefill chunk), its bound,
    and (one op's, as `describe` gives it) its steps."""

    weight_bytes: int  # per core
    state_bytes: int  # per core: KV cache
    act_bytes: int  # per core: peak activations and message buffers
    time: Breakdown
    bound_s: float
    steps: tuple[Step, ...] = ()

    @property
    def resident_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes

    def __add__(self, other: MeshCost) -> MeshCost:
        return MeshCost(self.weight_bytes + other.weight_bytes, self.state_bytes + other.state_bytes,
                        max(self.act_bytes, other.act_bytes), self.time + other.time, self.bound_s + other.bound_s)


ZERO = MeshCost(0, 0, 0, Breakdown(), 0.0)


def unit_mesh_cost(ops: Sequence[Op], shape: Shape, wafer: SystemSpec, rows_scale: float = 1.0) -> MeshCost:
    """The unit's ops on a region of `shape`, summed; `rows_scale` shrinks the rows (a prefill chunk)."""
    return sum((describe(op, shape, wafer, rows_scale) for op in ops), ZERO)


def describe(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> MeshCost:
    """The op on a region: its steps (what the plan times and the lowering emits) and their time."""
    steps, weight, state, act, bound = WORK[op.opcode](op, region, wafer, rows_scale)
    return MeshCost(weight, state, act, steps_time(steps, region, timing_of(wafer)), bound, steps)


timing_of = functools.cache(Timing.of)


def steps_time(steps: Sequence[Step], region: Shape, tm: Timing) -> Breakdown:
    """The steps' time as the lowering emits them (level-synchronous), by the Timing's per-core rules."""
    return sum((step_time(s, region, tm) for s in steps), Breakdown())


def step_time(s: Step, region: Shape, tm: Timing) -> Breakdown:
    match s:
        case Feed():
            return messages((region.rows + region.cols - 2,), s.values * ACT_BYTES, tm)
        case Mxm():
            cycles = tm.mxm(s.m, s.k, s.n, s.fmt)
            bound = "compute_s" if tm.passes(s.m, s.k, s.n, s.fmt) >= cycles else "memory_s"
            return Breakdown(**{bound: cycles / tm.clock_hz})
        case Tree():
            return messages(s.levels(region), s.values * ACT_BYTES, tm)
        case RowOp():
            return Breakdown(**{"compute_s" if s.op is Isa.VOP else "memory_s": s.cycles(tm) / tm.clock_hz})
    raise TypeError(s)


def message_cycles(hops: int, nbytes: int, tm: Timing, send: int = FABRIC_SEND) -> tuple[int, int]:
    """One message step from C2C unit `send`: (cycles until its data is `hops` away, until its RECV is done)."""
    arrive = tm.arrival(hops, send)
    return arrive, arrive + tm.recv(nbytes, send + 1)


def messages(levels: Sequence[int], nbytes: int, tm: Timing, send: int = FABRIC_SEND) -> Breakdown:
    """Message steps one after another, split as plans report them: the receivers' fixed steps, the wire."""
    step = tm.link_class(send + 1).step_cycles * len(levels)
    total = sum(message_cycles(h, nbytes, tm, send)[1] for h in levels)
    return Breakdown(latency_s=step / tm.clock_hz, link_s=(total - step) / tm.clock_hz)


def op_rows(op: Op, rows_scale: float) -> int:
    return max(1, math.ceil(op.operands[0].type.shape[0] * rows_scale))


def _tile_bytes(shape: tuple[int, ...], nbytes: int, region: Shape) -> int:
    """Bytes of one core's block of a tensor tiled first axis over rows, last axis over columns."""
    numel = math.prod(shape)
    if len(shape) == 1:
        block = math.ceil(shape[0] / region.cols)
    else:
        block = math.prod(shape[:-2]) * math.ceil(shape[-2] / region.rows) * math.ceil(shape[-1] / region.cols)
    return math.ceil(block * nbytes / numel)


def resident_bytes(op: Op, region: Shape) -> int:
    return sum(_tile_bytes(v.type.shape, v.type.nbytes, region)
               for i, v in enumerate(op.operands) if is_resident(op, i))


def _resident_total(op: Op) -> int:
    return sum(v.type.nbytes for i, v in enumerate(op.operands) if is_resident(op, i))


def _bound(nbytes: float, flops: float, hops: int, region: Shape, wafer: SystemSpec, precision: str = "fp16"
           ) -> float:
    """What no schedule on the region beats: its bytes over every core's SRAM bandwidth (or its flops over
    every core's peak), and `hops` of wire."""
    stream = max(nbytes / wafer.chip.mem_bw_bytes_per_s, flops / wafer.chip.peak_ops(precision)) / region.cores
    return stream + hops * wafer.local_link.latency_s


def gemv(m: int, k: int, n: int, weight_bytes: int, fmt: Fmt, region: Shape, wafer: SystemSpec, at: int = 0
         ) -> tuple[tuple[Step, ...], float]:
    """x[m,k] @ w[k,n] as a mesh GEMV (module docstring): its steps and its lower bound."""
    kr, nc = math.ceil(k / region.rows), math.ceil(n / region.cols)
    steps = (Feed(m * kr), Mxm(m, kr, nc, fmt, at, math.ceil(kr * nc * fmt.bits / 8)), Tree(ROWS, m * nc))
    return steps, _bound(weight_bytes, 2 * m * k * n, region.rows - 1, region, wafer, fmt.precision)


def _matmul(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> Rule:
    w = op.operands[1].type
    k, n = (w.shape[1], w.shape[0]) if op.attr.get("transpose_b") else w.shape
    m = op_rows(op, rows_scale)
    steps, bound = gemv(m, k, n, _resident_total(op), FMT_OF[w.dtype], region, wafer)
    act = 2 * m * (math.ceil(k / region.rows) + math.ceil(n / region.cols)) * ACT_BYTES  # double-buffered
    return steps, resident_bytes(op, region), 0, act, bound


def _experts(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> Rule:
    """Every expert is tiled over the whole region; a step runs the passes static timing allows."""
    experts, hidden, inter = op.operands[3].type.shape
    m = op_rows(op, rows_scale)
    passes = expert_passes(m, op.attr["top_k"], experts)
    per_expert = _resident_total(op) // experts
    steps, bound = (), 0.0
    for k, n in ((hidden, inter), (hidden, inter), (inter, hidden)):
        s, b = gemv(m, k, n, per_expert // 3, FMT_OF[op.operands[3].type.dtype], region, wafer)
        steps, bound = steps + s * passes, bound + b * passes
    act = 2 * m * (math.ceil(hidden / region.rows) + math.ceil(inter / region.cols)) * ACT_BYTES
    return steps, resident_bytes(op, region), 0, act, bound


def _attention(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> Rule:
    """Keys then values against the core's share of the cache, the scores reduced within a head, the
    softmax's max and sum and the weighted values down the rows."""
    m = op_rows(op, rows_scale)
    heads, kv_heads, head_dim = op.attr["heads"], op.attr["kv_heads"], op.attr["head_dim"]
    q_cols, group = math.ceil(heads * head_dim / region.cols), max(1, heads // kv_heads)
    split = max(1, region.cols // kv_heads)  # columns sharing one kv head's features
    per_core = resident_bytes(op, region)
    cache = op.operands[3].type  # [.., tokens, features]: its format is the keys' and values' tiles
    fmt, feats = FMT_OF[cache.dtype], math.ceil(kv_heads * head_dim / region.cols)
    tokens = math.prod(cache.shape[:-2]) * math.ceil(cache.shape[-2] / region.rows)  # cached tokens on this core
    half = math.ceil(feats * tokens * fmt.bits / 8)
    steps = (Feed(m * q_cols),
             Mxm(m * group, feats, tokens, fmt, 0, half, X, S, Flag.KEYS),
             Mxm(m * group, feats, tokens, fmt, half, half, S, None, Flag.VALUES),
             Tree(COLS, m * group, group=split), Tree(ROWS, m * heads), Tree(ROWS, m * heads), Tree(ROWS, m * q_cols))
    bound = _bound(_resident_total(op), op.cost.flops * rows_scale, region.rows - 1, region, wafer)
    return steps, 0, per_core, 2 * m * (q_cols + heads) * ACT_BYTES, bound


def _embed(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> Rule:
    """A row lookup: the token's row sits on one band of cores and travels out along its columns."""
    m = op_rows(op, rows_scale)
    cols = math.ceil(op.results[0].type.shape[-1] / region.cols)
    steps = (RowOp(Isa.GATHER, Fn.NONE, m, cols, m * cols * ACT_BYTES), Feed(m * cols, row0=True))
    return steps, resident_bytes(op, region), 0, 2 * m * cols * ACT_BYTES, \
        _bound(0, 0, region.rows + region.cols - 2, region, wafer)


def _vector(op: Op, region: Shape, wafer: SystemSpec, rows_scale: float) -> Rule:
    """An elementwise op on the C cores of one row; a norm or argmax also reduces along the row."""
    out = op.results[0].type
    m, width = op_rows(op, rows_scale), math.ceil((out.shape[-1] if len(out.shape) > 1 else 1) / region.cols)
    moved = sum(math.ceil(v.type.nbytes * rows_scale) for v in (*op.operands, *op.results))
    steps: tuple[Step, ...] = (RowOp(Isa.VOP, VECTOR_FN[op.opcode], m, width, math.ceil(moved / region.cols)),)
    if op.opcode is Opcode.RMSNORM:  # sum of squares, then broadcast
        steps += (Tree(COLS, m), Tree(COLS, m, broadcast=True))
    elif op.opcode is Opcode.ARGMAX:  # best (value, index) pairs
        steps += (Tree(COLS, 2 * m),)
    return steps, resident_bytes(op, region), 0, 3 * m * width * ACT_BYTES, 0.0


Describe = Callable[[Op, Shape, SystemSpec, float], Rule]
# The wafer backend's rules, by opcode: what each op does on a region, which its cost and its emission
# both read. An op without one (Mamba's conv1d and selective_scan, latent attention, slice) is refused
# before planning (compiler/backends), never timed as another.
WORK: dict[Opcode, Describe] = {
    Opcode.MATMUL: _matmul,
    Opcode.EXPERTS: _experts,
    Opcode.ATTENTION: _attention,
    Opcode.EMBED: _embed,
    **dict.fromkeys(VECTOR_FN, _vector),
}
# Not lowered: an expert layer (its router's top-k, its experts) picks experts per token, which role
# streams cannot yet express.
LOWERED = frozenset(WORK) - {Opcode.EXPERTS, Opcode.TOPK}
