"""Ops chained off the vector unit's stream: the one rule the plan's pipeline latency (shard_cost's
dependency chain) and the lowering (codegen.unit, Emitter.elementwise, the matmul rules) share.

An element-wise op the lowering runs as one VOP (CHAINED) that reads the result of the op just before it,
itself such a VOP, takes that result straight off the stream it leaves the vector unit on instead of from
SRAM: the TSP's VXM chains ALU ops lane by lane without a round trip through MEM (ISCA 2020, the VXM's
4 x 4 mesh of ALUs per lane) [S]. So does a matmul whose input is such a VOP's result (the norm before
q|k|v or gate|up, the gate's multiply before down): the MXM takes its activations off the streams the VXM
writes, the VXM -> MXM flow of the TSP's stream programming model (ISCA 2020, functional slices exchanging
operands on streams; ISCA 2022's VXM -> MXM pipelines) [S]. The producer's result is still written (later
readers, the residual); only the drain and the re-read leave the critical path, so the pair pays the chip's
pipeline latency once (llama's residual add then its norm, SiLU then the gate's multiply, a norm then its
projections).

MXM -> VXM -> MXM: attention's context leaves its last values product through a rounding COPY (the 16-bit
activations the WRITE would store), and the matmul reading it (o_proj) takes it off that stream
(`leaves_through_copy`): the drain and the re-read between the two products leave the path.

MXM -> VXM: a one-row matmul result at most one MXM column panel wide (one chain of MXMs, codegen.emit) that
leaves the matrix unit through a VOP (its per-channel or tensor scale: 16-bit, as the WRITE would store it)
is whole on that VOP's stream (`stream_result`). An element-wise op reading it, or a one-row slice of it, as
its first operand takes it off that stream (at the slice's offset) when nothing but such slices and readers
comes between: q|k|v's rope of q and of k. Again the result is still written (attention reads v, and the
cache append its k); only the drain and the re-read leave the path (`chained_operands`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from ir.graph import Op
from ir.ops import Opcode

CHAINED = frozenset({Opcode.ADD, Opcode.MUL, Opcode.RMSNORM, Opcode.ROPE, Opcode.SILU, Opcode.GELU,
                     Opcode.SOFTMAX})


def chained_operand(prev: Op | None, op: Op) -> str | None:
    """The name of `prev`'s result that `op` takes off the vector unit's stream, or None: any operand of a
    CHAINED op, a matmul's activations (operand 0), also an attention's context (leaves_through_copy)."""
    if prev is None:
        return None
    made = prev.results[0].name
    if op.opcode is Opcode.MATMUL and (prev.opcode in CHAINED or leaves_through_copy(prev)):
        return made if op.operands[0].name == made else None
    if prev.opcode not in CHAINED:
        return None
    if op.opcode not in CHAINED:
        return None
    return made if any(v.name == made for v in op.operands) else None


def leaves_through_copy(op: Op) -> bool:
    """An attention lowered whole on its chip (codegen.attention.lower_attention: no tier below SRAM, no sequence
    shards), whose context leaves the last values product through a rounding COPY on the vector unit, so the
    matmul after it (o_proj) takes its activations off that stream (VXM -> MXM) instead of from SRAM."""
    return op.opcode is Opcode.ATTENTION and "tier" not in op.attr and op.attr.get("seq_shards", 1) <= 1


def stream_result(op: Op, panel: int) -> bool:
    """Whether a matmul's whole result leaves the vector unit on one stream (the module docstring): one row,
    at most `panel` (the MXM's dim x planes) columns, scaled after the MXM."""
    if op.opcode is not Opcode.MATMUL or panel <= 0:
        return False
    shape = op.results[0].type.shape
    return len(shape) == 2 and shape[0] == 1 and shape[1] <= panel and scaled_after_mxm(op)


def scaled_after_mxm(op: Op) -> bool:
    """A matmul whose products leave the matrix unit through a VOP: its per-channel or tensor scale."""
    return bool(op.operands[3:] if op.operands[1].type.dtype.block else op.operands[2:])


def piece_on_one_stream(rows: int, width: int, panel: int, group: int, scaled: bool) -> bool:
    """An all-reduce piece of a row-parallel matmul whole on its scale VOP's stream: one row, one MXM panel,
    whole slices for each of the `group` chips. Its first sends take it off that stream (codegen.overlap), so
    the drain before them, which the chain charges as the latency of the all-reduce's reader, is not there
    (partition.cost._exposed_s)."""
    return scaled and rows == 1 and width <= panel and width % group == 0


def chained_operands(ops: Sequence[Op], panel: int) -> list[str | None]:
    """Per op, the operand it takes off a stream: chained_operand's (the VOP just before), or a stream_result
    (or a one-row slice of it) read as the first operand of a CHAINED op, while only such slices and
    readers have come since the matmul. `panel`: the MXM's columns a chain (0: no stream results)."""
    out: list[str | None] = []
    held: set[str] = set()  # the stream result and its slices, while nothing else intervenes
    for i, op in enumerate(ops):
        name = chained_operand(ops[i - 1] if i else None, op)
        if name is None and op.opcode in CHAINED and op.operands and op.operands[0].name in held:
            name = op.operands[0].name
        out.append(name)
        if stream_result(op, panel):
            held = {op.results[0].name}
        elif op.opcode is Opcode.SLICE and op.operands[0].name in held and op.results[0].type.shape[0] == 1:
            held.add(op.results[0].name)
        elif name is None or name not in held:
            held = set()
    return out


def piece_lead(rows: int, columns: int, panel: int, group: int, scaled: bool, drain: float
               ) -> Callable[[int, int], float]:
    """partition.overlap.pair_s's lead for the pieces [a, b) of a row-parallel product `columns` wide: each
    piece's drain before its first sends, none for one on its scale's stream (of several pieces: one piece
    is the plain matmul and all-reduce, codegen.unit reads it from SRAM)."""
    def lead(a: int, b: int) -> float:
        return 0.0 if b - a < columns and piece_on_one_stream(rows, b - a, panel, group, scaled) else drain
    return lead


UNITS_TOGETHER = 2  # a stage's units lowered as one template, so the chain crosses their boundary


def lowered_together(kinds: Sequence[Hashable]) -> list[range]:
    """A stage's units (their kinds, in order) in the runs the lowering makes one template of: consecutive units
    of one kind (identical layers), UNITS_TOGETHER at most, from the stage's first. Inside a run the op after a
    unit boundary takes the op before's result off the stream where chained_operand allows (llama's residual
    add, then the next layer's norm), which the plan counts at the same boundaries (cost.boundary_time);
    between runs the value goes through SRAM. Units of different kinds stay apart: DeepSeek-V3's shared
    expert and the layer after it, together, kept 71 streams live (the lpu has 64)."""
    runs: list[range] = []
    for i, kind in enumerate(kinds):
        if runs and len(runs[-1]) < UNITS_TOGETHER and kinds[runs[-1].start] == kind:
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs


def run_boundary(kinds: Sequence[Hashable]) -> bool:
    """Whether the last of a stage's units so far (their kinds, in order) follows another of the same run."""
    return len(kinds) > 1 and lowered_together(kinds)[-1].start < len(kinds) - 1


def closes_chained(ops: Sequence[Op]) -> bool:
    """Whether a unit's last op is a VOP that chained_operand lets the next op take off the stream."""
    return bool(ops) and ops[-1].opcode in CHAINED


def opens_chained(ops: Sequence[Op]) -> bool:
    """Whether a unit's first op could take a value from before the unit off the stream (chained_operand's
    operands): operand 0 of a matmul, any of a CHAINED op, whichever no op of the unit made."""
    if not ops:
        return False
    first = ops[0]
    if first.opcode is Opcode.MATMUL:
        return True
    return first.opcode in CHAINED
