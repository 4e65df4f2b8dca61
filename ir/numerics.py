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
