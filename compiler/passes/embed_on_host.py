"""EmbedOnHost: look the token's embedding row up on the host and stream it in, instead of holding the table."""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import ConfigError
from ir.graph import Graph, Op, Value
from ir.ops import Opcode

HOST_INPUT = "embeddings"  # the graph input the host writes: each row's embedding, 16-bit


@dataclass(frozen=True, slots=True)
class EmbedOnHost:
    """Move the embedding lookup to the host.

    Requires: one `embed` op. Produces: the graph without it; its result becomes the graph input
    `embeddings` (the same type: one 16-bit row per token, looked up by the host and sent in), and
    the table (with its scale) leaves the params unless another op still reads it (a head tied to
    the embedding keeps it). A table of 2 GB (Llama-3.1-70B at fp16) then costs nothing on the
    machine, and each step moves rows x hidden x 2 bytes over the host link. `on=False` returns the
    graph unchanged."""

    on: bool = True

    def __call__(self, graph: Graph) -> Graph:
        if not self.on:
            return graph
        embeds = [op for op in graph.ops if op.opcode is Opcode.EMBED]
        if len(embeds) != 1:
            raise ConfigError(f"--embed-on-host: the graph has {len(embeds)} embed ops, expected one")
        embed = embeds[0]
        row = Value(HOST_INPUT, embed.results[0].type)
        rest = [_renamed(op, embed.results[0].name, row) for op in graph.ops if op is not embed]
        used = {v.name for op in rest for v in op.operands}
        params = tuple(p for p in graph.params if p.name in used)
        inputs = tuple(v for v in graph.inputs if v.name in used) + (row,)
        outputs = tuple(row if v.name == embed.results[0].name else v for v in graph.outputs)
        return Graph(graph.name, inputs, params, graph.state, tuple(rest), outputs)


def _renamed(op: Op, old: str, new: Value) -> Op:
    if not any(v.name == old for v in op.operands):
        return op
    operands = tuple(new if v.name == old else v for v in op.operands)
    return Op(op.opcode, operands, op.results, op.attrs, op.scope)
