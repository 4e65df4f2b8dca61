"""Element types and tensor types of the graph IR."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class DType(enum.Enum):
    """Element types; the value is the spelling in IR text."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    FP8 = "fp8"  # e4m3
    I32 = "i32"
    I8 = "i8"
    I4 = "i4"

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F16, DType.BF16, DType.FP8)


_BITS = {
    DType.F32: 32,
    DType.F16: 16,
    DType.BF16: 16,
    DType.FP8: 8,
    DType.I32: 32,
    DType.I8: 8,
    DType.I4: 4,
}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A dense tensor: element type and static shape (a scalar has shape ())."""

    dtype: DType
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Storage bytes; sub-byte types pack (two i4 per byte, rounded up)."""
        return (self.numel * self.dtype.bits + 7) // 8

    def with_shape(self, *shape: int) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"
