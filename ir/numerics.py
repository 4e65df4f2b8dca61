"""Number formats the IR stores, table-driven by DType, every rounding and byte done by ml_dtypes.

ml_dtypes (the numpy dtype extension JAX uses) supplies bfloat16, float8_e4m3fn, float8_e8m0fnu,
float4_e2m1fn and int4, with round-to-nearest-even conversions, so no format is hand-written
here. Shared by the compiler (which writes quantized weights), the reference executor (which
quantizes KV-cache rows as they are written) and the functional interpreter, so all three round
the same way.

Two kinds of quantization:

- per channel (int8, int4, fp8): one 16-bit scale per slice, scale = max |x| / QMAX;
- block-scaled (nvfp4, mxfp4, mxfp8): one scale per `block.size` consecutive elements along the
  contraction axis. MX (OCP Microscaling v1.0, section 6.3): the scale is 2^(floor(log2 amax) -
  emax), emax the element type's largest exponent (2 for e2m1, 8 for e4m3), and codes saturate.
  NVFP4 (NVIDIA): an f32 tensor scale amax / (6 x 448) puts the block scales, e4m3(block amax /
  (6 x tensor scale)), in e4m3's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ir.types import DType

# The numpy (or ml_dtypes) type each DType's element is stored as; 4-bit types pack two a byte.
ELEMENT: dict[DType, type] = {
    DType.F32: np.float32,
    DType.F16: np.float16,
    DType.BF16: ml_dtypes.bfloat16,
    DType.FP8: ml_dtypes.float8_e4m3fn,
    DType.I32: np.int32,
    DType.I8: np.int8,
    DType.I4: ml_dtypes.int4,
    DType.NVFP4: ml_dtypes.float4_e2m1fn,
    DType.MXFP4: ml_dtypes.float4_e2m1fn,
    DType.MXFP8: ml_dtypes.float8_e4m3fn,
    DType.E8M0: ml_dtypes.float8_e8m0fnu,
}
PACKED = frozenset({DType.I4, DType.NVFP4, DType.MXFP4})
_INTEGER = frozenset({DType.I32, DType.I8, DType.I4})


def _largest(dtype: DType) -> float:
    element = ELEMENT[dtype]
    return float(ml_dtypes.iinfo(element).max if dtype in _INTEGER else ml_dtypes.finfo(element).max)


# Largest code magnitude of each code type (int8 and int4 symmetric: -127..127, -7..7).
QMAX = {d: _largest(d) for d in (DType.I8, DType.I4, DType.FP8, DType.NVFP4, DType.MXFP4, DType.MXFP8)}


def round_to(x: np.ndarray, dtype: DType) -> np.ndarray:
    """`x` rounded to the nearest value of `dtype` (saturating at its largest), as float32."""
    x = np.asarray(x, np.float32)
    if dtype in _INTEGER:
        q = _float32_below(QMAX.get(dtype, _largest(dtype)))
        return np.clip(np.rint(x), -q, q).astype(np.float32)
    if dtype in QMAX:  # codes saturate rather than overflow to NaN (float8_e4m3fn has no infinity)
        x = np.clip(x, -QMAX[dtype], QMAX[dtype])
    with np.errstate(over="ignore"):  # f16 and bf16 round past their largest to +-inf, as IEEE 754 does
        return x.astype(ELEMENT[dtype]).astype(np.float32)


def _float32_below(q: float) -> np.float32:
    """The largest float32 not above the integer bound `q` (int32's 2**31 - 1 rounds up to 2**31 in float32,
    which would wrap to -2**31 on the way back to int32)."""
    f = np.float32(q)
    return np.nextafter(f, np.float32(0)) if float(f) > q else f


def quantize(x: np.ndarray, dtype: DType, axis: int, scale_dtype: DType = DType.F16
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel codes and scales, one scale per slice along `axis` removed: scale = max |x| /
    QMAX in `scale_dtype` (16-bit), round to nearest. Integer codes come as int8 (int4 one per
    int8), float codes as float32."""
    tiny = ml_dtypes.finfo(ELEMENT[scale_dtype]).tiny
    amax = np.abs(x).max(axis=axis)
    scale = np.maximum(amax / QMAX[dtype], tiny).astype(ELEMENT[scale_dtype])
    codes = round_to(x / np.expand_dims(scale.astype(np.float32), axis), dtype)
    return (codes.astype(np.int8) if dtype in _INTEGER else codes), scale


@dataclass(frozen=True)
class Blocked:
    """A block-scaled tensor: codes (float32 values of the element type), block scales (float32
    values of the scale type; the axis shrunk to one per block) and, for NVFP4, the f32 scale of
    each matrix (shape: the axes before the last two; None when the format has none)."""

    codes: np.ndarray
    scales: np.ndarray
    tensor: np.ndarray | None


def quantize_blocks(x: np.ndarray, dtype: DType, axis: int, tensor_scale: bool = True) -> Blocked:
    """Block-scale `x` along `axis` (see the module docstring). `tensor_scale=False` drops NVFP4's
    second level (its tensor scale is then 1), for tensors written piecewise (KV-cache rows)."""
    block = dtype.block
    x = np.asarray(x, np.float32)
    axis %= x.ndim
    amax = _block_amax(x, axis, block.size)
    tensor = _tensor_scale(x) if block.tensor_scale and tensor_scale else None
    if block.scale is DType.E8M0:
        scales = _power_of_two_scales(amax, dtype)
    else:
        unit = _expand_matrix(tensor, x.ndim) if tensor is not None else np.float32(1)
        scales = round_to(amax / (QMAX[dtype] * unit), block.scale)
    denom = _repeat(scales, axis, block.size, x.shape[axis])
    if tensor is not None:
        denom = denom * _expand_matrix(tensor, x.ndim)
    safe = np.where(denom > 0, denom, np.float32(1))
    codes = np.where(denom > 0, round_to(x / safe, dtype), np.float32(0))
    return Blocked(codes.astype(np.float32), scales.astype(np.float32), tensor)


def dequantize_blocks(codes: np.ndarray, scales: np.ndarray, dtype: DType, axis: int) -> np.ndarray:
    """Codes times their block scales, in float32 (exact: a code times a scale fits float32's
    mantissa). NVFP4's tensor scale is not applied: the ops multiply it into their products."""
    axis %= codes.ndim
    return np.asarray(codes, np.float32) * _repeat(np.asarray(scales, np.float32), axis, dtype.block.size,
                                                   codes.shape[axis])


def _block_amax(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """max |x| over each run of `size` elements along `axis` (a partial last run included)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, -n % size)
    padded = np.moveaxis(np.pad(np.abs(x), pad), axis, -1)
    runs = padded.reshape(*padded.shape[:-1], -1, size).max(axis=-1)
    return np.moveaxis(runs, -1, axis)


def _repeat(scales: np.ndarray, axis: int, size: int, n: int) -> np.ndarray:
    return np.take(np.repeat(scales, size, axis=axis), np.arange(n), axis=axis)


def _tensor_scale(x: np.ndarray) -> np.ndarray:
    """NVFP4's f32 scale of each matrix (the last two axes): amax / (6 x 448), 1 for all zeros."""
    amax = np.abs(x).max(axis=(-2, -1)) if x.ndim >= 2 else np.abs(x).max()
    scale = (amax / np.float32(QMAX[DType.NVFP4] * QMAX[DType.FP8])).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1)).astype(np.float32)


def _expand_matrix(tensor: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(tensor, np.float32).reshape(np.shape(tensor) + (1,) * min(2, ndim))


def _power_of_two_scales(amax: np.ndarray, dtype: DType) -> np.ndarray:
    """OCP MX shared scale: 2^(floor(log2 amax) - emax of the element type), within e8m0's
    range [2^-127, 2^127]; an all-zero block gets the smallest."""
    _, exponent = np.frexp(np.float32(QMAX[dtype]))
    emax = int(exponent) - 1
    _, e = np.frexp(amax.astype(np.float32))
    shared = np.where(amax > 0, e.astype(np.int64) - 1 - emax, -127)
    return round_to(np.exp2(np.clip(shared, -127, 127).astype(np.float64)), DType.E8M0)


# ---- storage: how each dtype's values lie in SRAM (the compiler writes, the interpreter reads)

def encode(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Values of `dtype` (codes as quantize gives them; 16- and 32-bit floats are rounded) as
    their bytes. 4-bit codes pack two to a byte along the last axis, the even element in the
    low nibble."""
    element = np.asarray(values).astype(ELEMENT[dtype])
    raw = np.ascontiguousarray(element).view(np.uint8)
    if dtype not in PACKED:
        return raw.reshape(-1)
    nib = (raw & 0xF).reshape(-1, element.shape[-1] if element.ndim else 1)
    if nib.shape[1] % 2:
        raise ValueError(f"{dtype.value} rows need an even length, got {nib.shape[1]}")
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).reshape(-1)


def decode(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """Bytes back to float32 values (the inverse of encode; a 4-bit type gives two values a
    byte). Trailing bytes short of a whole element are ignored."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if dtype in PACKED:
        both = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(-1)
        return both.view(ELEMENT[dtype]).astype(np.float32)
    size = np.dtype(ELEMENT[dtype]).itemsize
    return raw[: len(raw) // size * size].view(ELEMENT[dtype]).astype(np.float32)
