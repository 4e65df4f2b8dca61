"""QuantizeKV: store the KV cache in 8 bits (16-bit scales per token and kv head) or NVFP4 (e4m3 per 16 values)."""

from __future__ import annotations

from dataclasses import dataclass

from compiler.frontend.options import KV_PRECISIONS
from ir.errors import ConfigError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import Opcode
from ir.types import DType, TensorType

STORAGE = {"fp8": DType.FP8, "int8": DType.I8, "nvfp4": DType.NVFP4}


@dataclass(frozen=True, slots=True)
class QuantizeKV:
    """KV-cache quantization to `precision` (fp16, fp8, int8 or nvfp4).

    Requires: attention ops whose k and v caches are 16-bit state [B, C, kv_heads x head_dim]
    with no scales. Produces: each cache stored as fp8/i8/nvfp4 codes and, right after it in
    `state`, its scales `<cache>.scale`, set when the token is written: for fp8 and int8 one per
    token and kv head, [B, C, kv_heads] in the cache's 16-bit type; for nvfp4 an e4m3 scale per
    16 values of each token's row, [B, C, kv_heads x head_dim / 16] (head_dim a multiple of 16).
    NVFP4 caches have no tensor scale: a cache is written row by row, so the tensor's amax is not
    known when the first row is stored (a calibrated one would need data we do not have); the
    e4m3 block scales alone span 2^-9..448 times 6, ample for attention keys and values.
    Attention takes the two scales as operands 6 and 7. The scales are counted in the state's
    bytes, so plans pay for them. fp16 returns the graph unchanged."""

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
            new[s.name] = (Value(s.name, s.type.with_dtype(STORAGE[self.precision])),
                           Value(f"{s.name}.scale", _scale_type(s, heads[s.name], STORAGE[self.precision])))
            state.extend(new[s.name])
        ops = tuple(_rewrite(op, new) for op in graph.ops)
        return Graph(graph.name, graph.inputs, graph.params, tuple(state), ops, graph.outputs)


def _scale_type(cache: Value, kv_heads: int, dtype: DType) -> TensorType:
    """Per token and kv head (16-bit) for an 8-bit cache; an e4m3 scale per 16 values for NVFP4."""
    batch, tokens, width = cache.type.shape
    if dtype.block is None:
        return TensorType(cache.type.dtype, (batch, tokens, kv_heads))
    size, head_dim = dtype.block.size, width // kv_heads
    if head_dim % size:
        raise ConfigError(f"--kv-precision {dtype.value}: a scale covers {size} values of one kv head's row, and "
                          f"{cache.name}'s heads are {head_dim} wide")
    return TensorType(dtype.block.scale, (batch, tokens, width // size))


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
