"""Quantize: store matmul weights and the embedding table in 8 or 4 bits, with per-channel or block scales."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.frontend.options import PRECISIONS
from ir.errors import ConfigError, VerifyError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import OPDEFS, Opcode
from ir.types import ACTIVATION_DTYPES, DType, TensorType

STORAGE = {"fp8": DType.FP8, "int8": DType.I8, "int4": DType.I4, "nvfp4": DType.NVFP4, "mxfp4": DType.MXFP4,
           "mxfp8": DType.MXFP8}
TENSOR_SCALE = ".tensor_scale"  # NVFP4's f32 scale of each matrix, beside `<weight>.scale`


@dataclass(frozen=True, slots=True)
class Quantize:
    """Weight-only quantization to `precision` (fp16, fp8, int8, int4, nvfp4, mxfp4 or mxfp8).

    Requires: a graph whose matmul weights and embedding tables are 16-bit params with no
    scale operand yet. Produces: each such param stored as the precision's codes and, right
    after it in `params`, its scales, which the consuming op takes after its weights:

    - fp8, int8, int4: `<weight>.scale` in the weight's 16-bit type, per output channel [N] of
      a matmul weight, per row [V] of an embedding table (embed multiplies the gathered row by
      its scale), per expert and output channel [E, N];
    - nvfp4, mxfp4, mxfp8: `<weight>.scale`, one e4m3 (NVFP4) or e8m0 (MX) scale per block of
      16 or 32 consecutive inputs of each output (the contraction axis: [K/16, N] for [K, N],
      [V, H/16] for a table [V, H] or a transpose_b head), and for NVFP4 `<weight>.tensor_scale`,
      f32, one per matrix ([] or [E]; experts take their three block scales, then the three
      tensor scales). A partial last block has its own scale.

    A tied table (embed and a `transpose_b` head) is quantized once along H, which serves both.
    Norm weights, biases, KV caches and activations stay 16-bit. Every scale is a param, so
    every byte of it is in param_bytes() and the plan's memory. fp16 returns the graph unchanged."""

    precision: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def __call__(self, graph: Graph) -> Graph:
        if self.precision == "fp16":
            return graph
        found = _quantized(graph)
        params, scales, renamed = _new_params(graph.params, found, STORAGE[self.precision])
        ops = tuple(_rewrite(op, scales, renamed) for op in graph.ops)
        outputs = tuple(renamed.get(v.name, v) for v in graph.outputs)
        return Graph(graph.name, graph.inputs, params, graph.state, ops, outputs)


@dataclass(frozen=True, slots=True)
class _Weight:
    """How one weight is read: the axis its op contracts over, and its per-channel scales' shape."""

    k_axis: int
    channels: tuple[int, ...]


def _quantized(graph: Graph) -> dict[str, _Weight]:
    """Params to quantize, each with its contraction axis and per-channel shape (output
    channels, table rows, or per expert and output channel)."""
    params = {p.name: p for p in graph.params}
    found: dict[str, _Weight] = {}
    for op in graph.ops:
        for index in _WEIGHT_OPERANDS.get(op.opcode, ()):
            weight = op.operands[index]
            if weight.name not in params or weight.name.endswith(KEEP_16BIT):
                continue
            if len(op.operands) > max(_WEIGHT_OPERANDS[op.opcode]) + 1 or weight.type.dtype not in ACTIVATION_DTYPES:
                raise VerifyError(f"quantize needs 16-bit weights without scales; {weight} is {weight.type}"
                                  f"{' with a scale' if len(op.operands) > index + 2 else ''}")
            read = _Weight(k_axis(op), _scale_shape(op, weight.type))
            if found.setdefault(weight.name, read) != read:  # a tied table must agree on how it is read
                raise VerifyError(f"{weight} is read with {found[weight.name]} and {read}")
    return found


_WEIGHT_OPERANDS = {Opcode.MATMUL: (1,), Opcode.EMBED: (1,), Opcode.EXPERTS: (3, 4, 5),
                    Opcode.MLA_ATTENTION: (6,)}  # kv_b [R, heads x (nope + v)]: per output channel, as a matmul's
# Mamba: in_proj and out_proj (~95% of a mixer's weight bytes) quantize like any matmul;
# x_proj and dt_proj stay 16-bit because they make dt, B and C, which set the recurrence's
# decay exp(dt * A) and so compound over the whole context, for ~5% of the bytes. A_log, D and
# the conv weights and biases are not matmul weights (small, per channel) and stay 16-bit too.
KEEP_16BIT = (".x_proj.weight", ".dt_proj.weight")


def k_axis(op: Op) -> int:
    """The axis of a weight operand its op contracts over (the input features): where per-channel
    maxima are taken and block scales run."""
    rows = op.opcode is Opcode.EMBED or op.attr.get("transpose_b")
    return 1 if rows or op.opcode is Opcode.EXPERTS else 0


def _scale_shape(op: Op, weight: TensorType) -> tuple[int, ...]:
    if op.opcode is Opcode.EXPERTS:
        return weight.shape[0], weight.shape[2]  # per expert, per output feature
    if op.opcode is Opcode.EMBED or op.attr.get("transpose_b"):
        return (weight.shape[0],)
    return (weight.shape[1],)


def _scale_params(p: Value, read: _Weight, dtype: DType) -> tuple[Value, ...]:
    """The scale params of weight `p` stored as `dtype` (see Quantize)."""
    block = dtype.block
    if block is None:  # per channel, in the weight's own 16-bit type, the type its products come out in
        return (Value(f"{p.name}.scale", TensorType(p.type.dtype, read.channels)),)
    shape = tuple(block.scales(d) if i == read.k_axis else d for i, d in enumerate(p.type.shape))
    scales = (Value(f"{p.name}.scale", TensorType(block.scale, shape)),)
    if block.tensor_scale:
        scales += (Value(p.name + TENSOR_SCALE, TensorType(DType.F32, p.type.shape[:-2])),)
    return scales


def _new_params(params: tuple[Value, ...], found: dict[str, _Weight], dtype: DType
                ) -> tuple[tuple[Value, ...], dict[str, tuple[Value, ...]], dict[str, Value]]:
    """The new param list (each weight's scales right after it), the scales by weight name,
    and every value whose type changed, by name."""
    out: list[Value] = []
    scales: dict[str, tuple[Value, ...]] = {}
    renamed: dict[str, Value] = {}
    for p in params:
        if p.name not in found:
            out.append(p)
            continue
        renamed[p.name] = Value(p.name, p.type.with_dtype(dtype))
        scales[p.name] = _scale_params(p, found[p.name], dtype)
        out += [renamed[p.name], *scales[p.name]]
    return tuple(out), scales, renamed


def _rewrite(op: Op, scales: dict[str, tuple[Value, ...]], renamed: dict[str, Value]) -> Op:
    """`op` reading the new params, each weight's block or channel scales after the weights, then
    their tensor scales (NVFP4); results are re-typed by the op's own rule, and any whose type
    changes are recorded in `renamed`."""
    operands = tuple(renamed.get(v.name, v) for v in op.operands)
    weights = [op.operands[i].name for i in _WEIGHT_OPERANDS.get(op.opcode, ()) if op.operands[i].name in scales]
    for level in (0, 1):
        operands += tuple(scales[w][level] for w in weights if len(scales[w]) > level)
    attrs = op.attr
    if op.opcode is Opcode.EMBED and weights:  # the rows keep the table's 16-bit type
        attrs = attrs | {"dtype": op.operands[1].type.dtype.value}
    types = OPDEFS[op.opcode].type_rule(tuple(v.type for v in operands), attrs)
    results = tuple(r if r.type == t else Value(r.name, t) for r, t in zip(op.results, types, strict=True))
    renamed.update((r.name, r) for r, old in zip(results, op.results, strict=True) if r is not old)
    return Op(op.opcode, operands, results, sorted_attrs(attrs), op.scope)


# ---- numbers: what the compiler stores for a quantized weight --------------------------------


def quantize_weights(weights: dict[str, np.ndarray], graph: Graph, precision: str) -> dict[str, np.ndarray]:
    """Float weights to what `graph` (the output of Quantize(precision)) stores: for each
    quantized param its codes and scales (ir.numerics.quantize per channel, quantize_blocks in
    blocks along the contraction axis); the rest rounded to their 16-bit type."""
    from ir.numerics import quantize, quantize_blocks  # ml_dtypes: half a second to import, weights only
    axes = _contraction_axes(graph)
    params = {p.name: p for p in graph.params}
    scale_names = {f"{w}{suffix}" for w in axes for suffix in (".scale", TENSOR_SCALE)}
    out = {}
    for p in graph.params:
        if p.name in scale_names:
            continue
        if p.name not in axes:
            out[p.name] = _rounded(p.name, weights[p.name], p.type.dtype)
            continue
        given = np.asarray(weights[p.name], np.float32)
        dtype = STORAGE[precision]
        if dtype.block is not None:
            b = quantize_blocks(given, dtype, axes[p.name])
            out[p.name], out[f"{p.name}.scale"] = b.codes, b.scales
            if b.tensor is not None:
                out[p.name + TENSOR_SCALE] = b.tensor
            continue
        scale_dtype = params[f"{p.name}.scale"].type.dtype
        out[p.name], out[f"{p.name}.scale"] = quantize(given, dtype, axes[p.name], scale_dtype)
        _check_finite(f"{p.name}.scale", given, out[f"{p.name}.scale"], scale_dtype)
    return out


def _rounded(name: str, w: np.ndarray, dtype: DType) -> np.ndarray:
    """`w` in its 16-bit type; a value that type cannot hold is an error, never an infinity."""
    from ir.numerics import ELEMENT
    with np.errstate(over="ignore"):  # an overflow is reported just below, by name
        stored = np.asarray(w, np.float32).astype(ELEMENT[dtype])
    _check_finite(name, w, stored, dtype)
    return stored


def _check_finite(name: str, given: np.ndarray, stored: np.ndarray, dtype: DType) -> None:
    import ml_dtypes

    from ir.numerics import ELEMENT
    given = np.asarray(given, np.float32)
    if np.isfinite(given).all() and not np.isfinite(np.asarray(stored, np.float32)).all():
        raise ConfigError(f"parameter '{name}': {float(np.abs(given).max()):g} is beyond what {dtype.value} can hold "
                          f"(largest {float(ml_dtypes.finfo(ELEMENT[dtype]).max):g}); a bfloat16 config stores bf16")


def _contraction_axes(graph: Graph) -> dict[str, int]:
    """Quantized weights (those with a `<name>.scale` param) and the axis they contract over."""
    names = {p.name for p in graph.params}
    axes = {}
    for op in graph.ops:
        for index in _WEIGHT_OPERANDS.get(op.opcode, ()):
            if f"{op.operands[index].name}.scale" in names:
                axes[op.operands[index].name] = k_axis(op)
    return axes
