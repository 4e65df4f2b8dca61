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
"""

from __future__ import annotations

from ir.graph import Op
from ir.ops import Opcode

CHAINED = frozenset({Opcode.ADD, Opcode.MUL, Opcode.RMSNORM, Opcode.ROPE, Opcode.SILU, Opcode.GELU,
                     Opcode.SOFTMAX})


def chained_operand(prev: Op | None, op: Op) -> str | None:
    """The name of `prev`'s result that `op` takes off the vector unit's stream, or None: any operand of a
    CHAINED op, a matmul's activations (operand 0)."""
    if prev is None or prev.opcode not in CHAINED:
        return None
    made = prev.results[0].name
    if op.opcode is Opcode.MATMUL:
        return made if op.operands[0].name == made else None
    if op.opcode not in CHAINED:
        return None
    return made if any(v.name == made for v in op.operands) else None
