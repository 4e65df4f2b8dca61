"""Element-wise ops chained on the vector unit: the one rule the plan's pipeline latency (shard_cost's
dependency chain) and the lowering (codegen.unit, Emitter.elementwise) share.

An element-wise op the lowering runs as one VOP (CHAINED) that reads the result of the op just before it,
itself such a VOP, takes that result straight off the stream it leaves the vector unit on instead of from
SRAM: the TSP's VXM chains ALU ops lane by lane without a round trip through MEM (ISCA 2020, the VXM's
4 x 4 mesh of ALUs per lane) [S]. The producer's result is still written (later readers, the residual);
only the drain and the re-read leave the critical path, so the pair pays the chip's pipeline latency
once (llama's residual add then its norm, SiLU then the gate's multiply).
"""

from __future__ import annotations

from ir.graph import Op
from ir.ops import Opcode

CHAINED = frozenset({Opcode.ADD, Opcode.MUL, Opcode.RMSNORM, Opcode.ROPE, Opcode.SILU, Opcode.GELU,
                     Opcode.SOFTMAX})


def chained_operand(prev: Op | None, op: Op) -> str | None:
    """The name of `prev`'s result that `op` takes off the vector unit's stream, or None."""
    if prev is None or prev.opcode not in CHAINED or op.opcode not in CHAINED:
        return None
    made = prev.results[0].name
    return made if any(v.name == made for v in op.operands) else None
