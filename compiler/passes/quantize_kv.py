"""QuantizeKV: store the KV cache in 8 bits with a 16-bit scale per token and kv head."""

from __future__ import annotations

from dataclasses import dataclass

from compiler.options import KV_PRECISIONS
from ir.errors import ConfigError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import Opcode
from ir.types import DType, TensorType

STORAGE = {"fp8": DType.FP8, "int8": DType.I8}


@dataclass(frozen=True, slots=True)
class QuantizeKV:
    """KV-cache quantization to `precision` (fp16, fp8 or int8).

    Requires: attention ops whose k and v caches are f16 state [B, C, kv_heads x head_dim]
    with no scales. Produces: each cache stored as fp8/i8 and, right after it in `state`,
    a scale `<cache>.scale` [B, C, kv_heads] in the cache's 16-bit type (one per token and kv head, set when
    the token is written); attention takes the two scales as operands 6 and 7. The
    scales are counted in the state's bytes, so plans pay for them. fp16 returns the
    graph unchanged."""

    precision: str

    def __post_init__(self) -> None:
        if self.precision not in KV_PRECISIONS:
            raise ConfigError(f"--kv-precision must be one of {', '.join(KV_PRECISIONS)}, got {self.precision!r}")

    def __call__(self, graph: Graph) -> Graph:
        if self.precision == "fp16":
            return graph
        _refuse_latent_cache(graph, self.precision)
        heads = {op.operands[i].name: op.attr["kv_heads"] for op in graph.ops if op.opcode is Opcode.ATTENTION
                 for i in (3, 4)}
        state, new = [], {}
        for s in graph.state:
            if s.name not in heads:
                state.append(s)
                continue
            batch, tokens, _ = s.type.shape
            new[s.name] = (Value(s.name, s.type.with_dtype(STORAGE[self.precision])),
                           Value(f"{s.name}.scale", TensorType(s.type.dtype, (batch, tokens, heads[s.name]))))
            state.extend(new[s.name])
        ops = tuple(_rewrite(op, new) for op in graph.ops)
        return Graph(graph.name, graph.inputs, graph.params, tuple(state), ops, graph.outputs)


def _refuse_latent_cache(graph: Graph, precision: str) -> None:
    """DeepSeek's latent cache is not quantized (yet): its rows hold two parts of different
    scales (the normed latent and the roped k_pe), and an 8-bit form would need the latent
    attention to dequantize in its absorbed scores. Say so rather than plan a 16-bit cache."""
    if any(op.opcode is Opcode.MLA_ATTENTION for op in graph.ops):
        raise ConfigError(f"--kv-precision {precision}: the latent KV cache of multi-head latent attention "
                          "(DeepSeek) is 16-bit only; use --kv-precision fp16")


def _rewrite(op: Op, new: dict[str, tuple[Value, Value]]) -> Op:
    if op.opcode is not Opcode.ATTENTION or op.operands[3].name not in new:
        return op
    k, v = new[op.operands[3].name], new[op.operands[4].name]
    operands = (*op.operands[:3], k[0], v[0], op.operands[5], k[1], v[1])
    return Op(op.opcode, operands, op.results, sorted_attrs(op.attr), op.scope)
