"""What one unit (embed, a layer, the head) costs when its ops are tiled over a rectangle of cores.

Every op of the unit is spread over the same region of R x C cores (R rows, C columns). A
matrix w[K,N] is tiled in blocks of ceil(K/R) x ceil(N/C): core (i, j) holds block (i, j). A
matrix-vector product x[M,K] @ w is the mesh GEMV of WaferLLM (MeshGEMV, arXiv 2502.04563):

    input    the K-slice i of x reaches every core of row i: up to R + C - 2 hops from where
             the previous op left it, one message step, M*ceil(K/R) 16-bit values down a link;
    local    each core streams its block: max(block bytes / core SRAM bandwidth,
             2*M*ceil(K/R)*ceil(N/C) / core peak);
    reduce   the R partial sums of each column meet in a 2-way tree (WaferLLM's K-tree with
             K=2): R - 1 hops of wire, ceil(log2 R) message steps, each moving M*ceil(N/C) values.

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler.partition.cost import Breakdown
from compiler.partition.mesh import LINE, LOCAL, Axis, line_wire_s, message_s
from compiler.partition.shard_cost import is_resident
from ir.graph import Op
from ir.ops import Opcode, expert_passes
from targets.mesh import Shape
from targets.spec import SystemSpec

ACT_BYTES = 2  # activations and partial sums travel as 16-bit values


@dataclass(frozen=True, slots=True)
class MeshCost:
    """One unit on a region: bytes on each core, and the time of one pass (decode step or prefill chunk)."""

    weight_bytes: int  # per core
    state_bytes: int  # per core: KV cache
    act_bytes: int  # per core: peak activations and message buffers
    time: Breakdown
    bound_s: float

    @property
    def resident_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes

    def __add__(self, other: MeshCost) -> MeshCost:
        return MeshCost(self.weight_bytes + other.weight_bytes, self.state_bytes + other.state_bytes,
                        max(self.act_bytes, other.act_bytes), self.time + other.time, self.bound_s + other.bound_s)


ZERO = MeshCost(0, 0, 0, Breakdown(), 0.0)


def unit_mesh_cost(ops: Sequence[Op], shape: Shape, wafer: SystemSpec, precision: str,
                   rows_scale: float = 1.0) -> MeshCost:
    """The unit's ops on a region of `shape`, summed; `rows_scale` shrinks the rows (a prefill chunk)."""
    total = ZERO
    for op in ops:
        total += MESH_COST[op.opcode](op, shape, wafer, precision, rows_scale)
    return total


def op_rows(op: Op, rows_scale: float) -> int:
    return max(1, math.ceil(op.operands[0].type.shape[0] * rows_scale))


# How an op splits over a region, read by its cost rule here and its emission rule (lower.py) alike.

def matmul_dims(op: Op) -> tuple[int, int]:
    """(k, n): the contraction and the columns of a matmul's weight."""
    w = op.operands[1].type
    return (w.shape[1], w.shape[0]) if op.attr.get("transpose_b") else w.shape


def head_split(op: Op, region: Shape) -> tuple[int, int, int, int]:
    """An attention's (heads, query columns a core holds, query heads a kv head serves, columns sharing
    one kv head's features)."""
    heads, kv_heads, head_dim = op.attr["heads"], op.attr["kv_heads"], op.attr["head_dim"]
    return heads, math.ceil(heads * head_dim / region.cols), max(1, heads // kv_heads), max(1, region.cols // kv_heads)


def row_split(op: Op, region: Shape, rows_scale: float) -> tuple[int, int, int]:
    """A vector op on the first row's C cores: (rows, elements a row a core holds, bytes it moves in all)."""
    out = op.results[0].type
    width = out.shape[-1] if len(out.shape) > 1 else 1
    moved = sum(math.ceil(v.type.nbytes * rows_scale) for v in (*op.operands, *op.results))
    return op_rows(op, rows_scale), math.ceil(width / region.cols), moved


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


def _stream(nbytes: float, flops: float, wafer: SystemSpec, precision: str) -> Breakdown:
    memory = nbytes / wafer.chip.mem_bw_bytes_per_s
    compute = flops / wafer.chip.peak_ops(precision)
    return Breakdown(memory_s=memory) if memory >= compute else Breakdown(compute_s=compute)


def _message(hops: int, steps: int, values: float, wafer: SystemSpec) -> Breakdown:
    """`hops` of wire, `steps` message steps at cores, each step moving `values` 16-bit values down a link."""
    steps_s, wire_s = message_s(hops, steps, values * ACT_BYTES, wafer)
    return Breakdown(latency_s=steps_s, link_s=wire_s)


def tree_reduce(cores: int, values: float, wafer: SystemSpec) -> Breakdown:
    """A 2-way tree reduction along a line of `cores` cores (partition.mesh's line rule), each
    contributing `values` values."""
    steps_s, wire_s = line_wire_s(Axis("line", cores, LINE, LOCAL), values * ACT_BYTES, wafer)
    return Breakdown(latency_s=steps_s, link_s=wire_s)


def gemv(m: int, k: int, n: int, weight_bytes: int, region: Shape, wafer: SystemSpec, precision: str
         ) -> tuple[Breakdown, float]:
    """x[m,k] @ w[k,n] as a mesh GEMV (module docstring); returns its time and its lower bound."""
    kr, nc = math.ceil(k / region.rows), math.ceil(n / region.cols)
    block = math.ceil(weight_bytes * kr * nc / (k * n))
    local = _stream(block + m * kr * ACT_BYTES, 2 * m * kr * nc, wafer, precision)
    feed = _message(region.rows + region.cols - 2, 1, m * kr, wafer)
    time = feed + local + tree_reduce(region.rows, m * nc, wafer)
    stream = max(weight_bytes / (region.cores * wafer.chip.mem_bw_bytes_per_s),
                 2 * m * k * n / (region.cores * wafer.chip.peak_ops(precision)))
    return time, stream + (region.rows - 1) * wafer.local_link.latency_s


def _matmul(op: Op, region: Shape, wafer: SystemSpec, precision: str, rows_scale: float) -> MeshCost:
    k, n = matmul_dims(op)
    m = op_rows(op, rows_scale)
    weights = sum(v.type.nbytes for i, v in enumerate(op.operands) if is_resident(op, i))
    time, bound = gemv(m, k, n, weights, region, wafer, precision)
    act = 2 * m * (math.ceil(k / region.rows) + math.ceil(n / region.cols)) * ACT_BYTES  # double-buffered
    return MeshCost(resident_bytes(op, region), 0, act, time, bound)


def _experts(op: Op, region: Shape, wafer: SystemSpec, precision: str, rows_scale: float) -> MeshCost:
    """Every expert is tiled over the whole region; a step runs the passes static timing allows."""
    experts, hidden, inter = op.operands[3].type.shape
    m = op_rows(op, rows_scale)
    passes = expert_passes(m, op.attr["top_k"], experts)
    per_expert = sum(v.type.nbytes for i, v in enumerate(op.operands) if is_resident(op, i)) // experts
    time, bound = Breakdown(), 0.0
    for k, n in ((hidden, inter), (hidden, inter), (inter, hidden)):
        t, b = gemv(m, k, n, per_expert // 3, region, wafer, precision)
        time, bound = time + t.scaled(passes), bound + b * passes
    act = 2 * m * (math.ceil(hidden / region.rows) + math.ceil(inter / region.cols)) * ACT_BYTES
    return MeshCost(resident_bytes(op, region), 0, act, time, bound)


def _attention(op: Op, region: Shape, wafer: SystemSpec, precision: str, rows_scale: float) -> MeshCost:
    m = op_rows(op, rows_scale)
    heads, q_cols, group, split = head_split(op, region)
    state = sum(v.type.nbytes for i, v in enumerate(op.operands) if is_resident(op, i))
    per_core = resident_bytes(op, region)
    flops = op.cost.flops * rows_scale
    local = _stream(per_core, flops / region.cores, wafer, "fp16")
    time = (_message(region.rows + region.cols - 2, 1, m * q_cols, wafer) + local
            + tree_reduce(split, m * group, wafer)  # scores within a head
            + tree_reduce(region.rows, m * heads, wafer).scaled(2)  # softmax max, then sum
            + tree_reduce(region.rows, m * q_cols, wafer))  # weighted values
    stream = max(state / (region.cores * wafer.chip.mem_bw_bytes_per_s),
                 flops / (region.cores * wafer.chip.peak_ops("fp16")))
    act = 2 * m * (q_cols + heads) * ACT_BYTES
    return MeshCost(0, per_core, act, time, stream + (region.rows - 1) * wafer.local_link.latency_s)


def _embed(op: Op, region: Shape, wafer: SystemSpec, precision: str, rows_scale: float) -> MeshCost:
    """A row lookup: the token's row sits on one band of cores and travels out along its columns."""
    m = op_rows(op, rows_scale)
    hidden = op.results[0].type.shape[-1]
    cols = math.ceil(hidden / region.cols)
    time = _message(region.rows + region.cols - 2, 1, m * cols, wafer)
    return MeshCost(resident_bytes(op, region), 0, 2 * m * cols * ACT_BYTES, time,
                    (region.rows + region.cols - 2) * wafer.local_link.latency_s)


def _vector(op: Op, region: Shape, wafer: SystemSpec, precision: str, rows_scale: float) -> MeshCost:
    """An elementwise op on the C cores of one row; a norm or argmax also reduces along the row."""
    m, width, moved = row_split(op, region, rows_scale)
    per_core = m * width
    time = _stream(moved / region.cols, op.cost.flops * rows_scale / region.cols, wafer, "fp16")
    if op.opcode is Opcode.RMSNORM:
        time += tree_reduce(region.cols, m, wafer).scaled(2)  # sum of squares, then broadcast
    elif op.opcode is Opcode.ARGMAX:
        time += tree_reduce(region.cols, 2 * m, wafer)  # best (value, index) pairs
    return MeshCost(resident_bytes(op, region), 0, 3 * per_core * ACT_BYTES, time, 0.0)


MeshRule = Callable[[Op, Shape, SystemSpec, str, float], MeshCost]
# The wafer backend's cost rules, by opcode. An op without one (Mamba's conv1d and selective_scan,
# latent attention, slice) is refused before planning (compiler/backends), never timed as another.
MESH_COST: dict[Opcode, MeshRule] = {
    Opcode.MATMUL: _matmul,
    Opcode.EXPERTS: _experts,
    Opcode.ATTENTION: _attention,
    Opcode.EMBED: _embed,
    **{op: _vector for op in (Opcode.ADD, Opcode.MUL, Opcode.SILU, Opcode.GELU, Opcode.RMSNORM, Opcode.ROPE,
                              Opcode.SOFTMAX, Opcode.ARGMAX, Opcode.TOPK)},
}
