"""Number formats the IR stores: symmetric 8- and 4-bit codes with a 16-bit scale.

Shared by the compiler (which writes quantized weights) and the reference executor
(which quantizes KV-cache rows as they are written), so both round the same way.
"""

from __future__ import annotations

import numpy as np

from ir.types import DType

# Largest code magnitude per stored type (fp8 is e4m3: its largest finite value).
QMAX = {DType.I8: 127, DType.I4: 7, DType.FP8: 448.0}


def quantize(x: np.ndarray, dtype: DType, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and f16 scales, one scale per slice along `axis` removed: scale = max |x| / QMAX,
    round to nearest. Integer codes come as int8 (int4 one per int8), fp8 codes as float32."""
    amax = np.abs(x).max(axis=axis)
    scale = np.maximum(amax / QMAX[dtype], np.finfo(np.float16).tiny).astype(np.float16)
    y = x / np.expand_dims(scale.astype(np.float32), axis)
    if dtype is DType.FP8:
        return e4m3(y), scale
    q = QMAX[dtype]
    return np.clip(np.rint(y), -q, q).astype(np.int8), scale


def e4m3(x: np.ndarray) -> np.ndarray:
    """Round to the nearest fp8 e4m3 value (3 mantissa bits, subnormals below 2^-6)."""
    _, e = np.frexp(x)
    step = np.exp2(np.maximum(e, -5) - 4)
    return np.clip(np.rint(x / step) * step, -448.0, 448.0).astype(np.float32)


# ---- storage: how each dtype's values lie in SRAM (the compiler writes, the interpreter reads)

def _e4m3_table() -> np.ndarray:
    """The value of every fp8 e4m3 byte (sign, 4 exponent bits biased by 7, 3 mantissa bits;
    0x7f and 0xff are NaN)."""
    b = np.arange(256)
    exp, mant = (b >> 3) & 0xF, b & 7
    mag = np.where(exp == 0, mant / 8 * 2.0**-6, (1 + mant / 8) * np.exp2(exp - 7.0))
    mag = np.where((exp == 15) & (mant == 7), np.nan, mag)
    return np.where(b >> 7, -mag, mag).astype(np.float32)


E4M3 = _e4m3_table()
_E4M3_POSITIVE = E4M3[:127]  # codes 0..126: the non-negative finite values, ascending


def encode(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Values of `dtype` (fp8 and int codes as ir.numerics.quantize gives them) as their bytes.
    int4 codes pack two to a byte along the last axis, the even element in the low nibble."""
    if dtype is DType.FP8:
        mag = np.searchsorted(_E4M3_POSITIVE, np.abs(values)).astype(np.uint8)
        return np.where(np.signbit(values) & (mag > 0), mag | 0x80, mag).astype(np.uint8).reshape(-1)
    if dtype is DType.I4:
        nib = (values.astype(np.int8) & 0xF).astype(np.uint8).reshape(-1, values.shape[-1])
        if nib.shape[1] % 2:
            raise ValueError(f"int4 rows need an even length, got {nib.shape[1]}")
        return (nib[:, 0::2] | (nib[:, 1::2] << 4)).reshape(-1)
    numpy_type = {DType.F16: np.float16, DType.BF16: np.float16, DType.F32: np.float32, DType.I8: np.int8,
                  DType.I32: np.int32}[dtype]
    return np.ascontiguousarray(values, dtype=numpy_type).view(np.uint8).reshape(-1)


def decode(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """Bytes back to float32 values (the inverse of encode; int4 gives two values a byte)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if dtype is DType.FP8:
        return E4M3[raw]
    if dtype is DType.I4:
        low, high = (raw & 0xF).astype(np.int8), (raw >> 4).astype(np.int8)
        both = np.stack([low, high], axis=-1).reshape(-1)
        return np.where(both > 7, both - 16, both).astype(np.float32)
    numpy_type = {DType.F16: np.float16, DType.BF16: np.float16, DType.F32: np.float32, DType.I8: np.int8,
                  DType.I32: np.int32}[dtype]
    return raw[: len(raw) // np.dtype(numpy_type).itemsize * np.dtype(numpy_type).itemsize].view(
        numpy_type).astype(np.float32)
