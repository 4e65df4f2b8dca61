"""Quantize: store matmul weights and the embedding table in 8 or 4 bits with per-channel scales."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from compiler.options import PRECISIONS
from ir.errors import ConfigError, VerifyError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.numerics import ELEMENT, quantize
from ir.ops import OPDEFS, Opcode
from ir.types import ACTIVATION_DTYPES, DType, TensorType

STORAGE = {"fp8": DType.FP8, "int8": DType.I8, "int4": DType.I4}


@dataclass(frozen=True, slots=True)
class Quantize:
    """Weight-only quantization to `precision` (fp16, fp8, int8 or int4).

    Requires: a graph whose matmul weights and embedding tables are f16 params with no
    scale operand yet. Produces: each such param stored as fp8/i8/i4 and, right after it
    in `params`, an f16 scale param `<weight>.scale` that the consuming op takes as its
    third operand: per output channel [N] for a matmul weight, per row [V] for an
    embedding table (embed multiplies the gathered row by its scale). A tied table
    (embed and a `transpose_b` head) gets one scale [V], which is both. Norm weights,
    biases, KV caches and activations stay 16-bit. Scales are one per channel, not
    per group. fp16 returns the graph unchanged."""

    precision: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def __call__(self, graph: Graph) -> Graph:
        if self.precision == "fp16":
            return graph
        channels = _quantized_channels(graph)
        params, scales, renamed = _new_params(graph.params, channels, STORAGE[self.precision])
        ops = tuple(_rewrite(op, scales, renamed) for op in graph.ops)
        outputs = tuple(renamed.get(v.name, v) for v in graph.outputs)
        return Graph(graph.name, graph.inputs, params, graph.state, ops, outputs)


def _quantized_channels(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Params to quantize, each with its scale's shape (output channels, table rows, or
    per expert and output channel)."""
    params = {p.name: p for p in graph.params}
    channels: dict[str, tuple[int, ...]] = {}
    for op in graph.ops:
        for index in _WEIGHT_OPERANDS.get(op.opcode, ()):
            weight = op.operands[index]
            if weight.name not in params or weight.name.endswith(KEEP_16BIT):
                continue
            if len(op.operands) > max(_WEIGHT_OPERANDS[op.opcode]) + 1 or weight.type.dtype not in ACTIVATION_DTYPES:
                raise VerifyError(f"quantize needs 16-bit weights without scales; {weight} is {weight.type}"
                                  f"{' with a scale' if len(op.operands) > index + 2 else ''}")
            shape = _scale_shape(op, weight.type)
            if channels.setdefault(weight.name, shape) != shape:  # a tied table must agree on its channels
                raise VerifyError(f"{weight} is read with {channels[weight.name]} and {shape} channels")
    return channels


_WEIGHT_OPERANDS = {Opcode.MATMUL: (1,), Opcode.EMBED: (1,), Opcode.EXPERTS: (3, 4, 5),
                    Opcode.MLA_ATTENTION: (6,)}  # kv_b [R, heads x (nope + v)]: per output channel, as a matmul's
# Mamba: in_proj and out_proj (~95% of a mixer's weight bytes) quantize like any matmul;
# x_proj and dt_proj stay 16-bit because they make dt, B and C, which set the recurrence's
# decay exp(dt * A) and so compound over the whole context, for ~5% of the bytes. A_log, D and
# the conv weights and biases are not matmul weights (small, per channel) and stay 16-bit too.
KEEP_16BIT = (".x_proj.weight", ".dt_proj.weight")


def _scale_shape(op: Op, weight: TensorType) -> tuple[int, ...]:
    if op.opcode is Opcode.EXPERTS:
        return weight.shape[0], weight.shape[2]  # per expert, per output feature
    if op.opcode is Opcode.EMBED or op.attr.get("transpose_b"):
        return (weight.shape[0],)
    return (weight.shape[1],)


def _new_params(params: tuple[Value, ...], channels: dict[str, tuple[int, ...]], dtype: DType
                ) -> tuple[tuple[Value, ...], dict[str, Value], dict[str, Value]]:
    """The new param list (each scale right after its weight), the scales by weight name,
    and every value whose type changed, by name."""
    out: list[Value] = []
    scales: dict[str, Value] = {}
    renamed: dict[str, Value] = {}
    for p in params:
        if p.name not in channels:
            out.append(p)
            continue
        renamed[p.name] = Value(p.name, p.type.with_dtype(dtype))
        # Per-channel scales take the weight's own 16-bit type, the type its products come out in.
        scales[p.name] = Value(f"{p.name}.scale", TensorType(p.type.dtype, channels[p.name]))
        out += [renamed[p.name], scales[p.name]]
    return tuple(out), scales, renamed


def _rewrite(op: Op, scales: dict[str, Value], renamed: dict[str, Value]) -> Op:
    """`op` reading the new params (plus a scale operand where its weight got one); results
    are re-typed by the op's own rule, and any whose type changes are recorded in `renamed`."""
    operands = tuple(renamed.get(v.name, v) for v in op.operands)
    attrs = op.attr
    for index in _WEIGHT_OPERANDS.get(op.opcode, ()):
        if op.operands[index].name in scales:
            operands += (scales[op.operands[index].name],)
            if op.opcode is Opcode.EMBED:  # the rows keep the table's 16-bit type
                attrs = attrs | {"dtype": op.operands[index].type.dtype.value}
    types = OPDEFS[op.opcode].type_rule(tuple(v.type for v in operands), attrs)
    results = tuple(r if r.type == t else Value(r.name, t) for r, t in zip(op.results, types, strict=True))
    renamed.update((r.name, r) for r, old in zip(results, op.results, strict=True) if r is not old)
    return Op(op.opcode, operands, results, sorted_attrs(attrs), op.scope)


# ---- numbers: what the compiler stores for a quantized weight --------------------------------


def quantize_weights(weights: dict[str, np.ndarray], graph: Graph, precision: str) -> dict[str, np.ndarray]:
    """Float weights to what `graph` (the output of Quantize(precision)) stores: for each
    quantized param, codes and `<name>.scale` (16-bit) per channel (ir.numerics.quantize);
    the rest rounded to their 16-bit type."""
    if precision == "fp16":
        return {p.name: _rounded(p.name, weights[p.name], p.type.dtype) for p in graph.params}
    axes = _channel_axes(graph)
    params = {p.name: p for p in graph.params}
    out = {}
    for p in graph.params:
        if p.name.endswith(".scale") and p.name[: -len(".scale")] in axes:
            continue
        if p.name not in axes:
            out[p.name] = _rounded(p.name, weights[p.name], p.type.dtype)
            continue
        scale_dtype = params[f"{p.name}.scale"].type.dtype
        out[p.name], out[f"{p.name}.scale"] = quantize(weights[p.name].astype(np.float32), STORAGE[precision],
                                                        axes[p.name], scale_dtype)
        _check_finite(f"{p.name}.scale", weights[p.name], out[f"{p.name}.scale"], scale_dtype)
    return out


def _rounded(name: str, w: np.ndarray, dtype: DType) -> np.ndarray:
    """`w` in its 16-bit type; a value that type cannot hold is an error, never an infinity."""
    with np.errstate(over="ignore"):  # an overflow is reported just below, by name
        stored = np.asarray(w, np.float32).astype(ELEMENT[dtype])
    _check_finite(name, w, stored, dtype)
    return stored


def _check_finite(name: str, given: np.ndarray, stored: np.ndarray, dtype: DType) -> None:
    given = np.asarray(given, np.float32)
    if np.isfinite(given).all() and not np.isfinite(np.asarray(stored, np.float32)).all():
        raise ConfigError(f"parameter '{name}': {float(np.abs(given).max()):g} is beyond what {dtype.value} can hold "
                          f"(largest {float(ml_dtypes.finfo(ELEMENT[dtype]).max):g}); a bfloat16 config stores bf16")


def _channel_axes(graph: Graph) -> dict[str, int]:
    """Quantized weights and the axis each channel's max is taken over (the input features)."""
    axes = {}
    for op in graph.ops:
        for index in _WEIGHT_OPERANDS.get(op.opcode, ()):
            if len(op.operands) > index + 1 and op.operands[-1].name.endswith(".scale"):
                rows = op.opcode is Opcode.EMBED or op.attr.get("transpose_b")
                axes[op.operands[index].name] = 1 if rows or op.opcode is Opcode.EXPERTS else 0
    return axes
