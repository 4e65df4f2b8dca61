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
    FP8 = "fp8"  # e4m3 (OCP float8_e4m3fn: no infinities, one NaN pattern per sign)
    I32 = "i32"
    I8 = "i8"
    I4 = "i4"
    # Block-scaled codes (the scales are a separate tensor; see BLOCKS).
    NVFP4 = "nvfp4"  # e2m1 codes; an e4m3 scale per 16 elements and an f32 scale per tensor (NVIDIA)
    MXFP4 = "mxfp4"  # e2m1 codes; an e8m0 scale per 32 elements (OCP Microscaling v1.0)
    MXFP8 = "mxfp8"  # e4m3 codes; an e8m0 scale per 32 elements (OCP Microscaling v1.0)
    E8M0 = "e8m0"  # an MX block scale: a power of two, 2^(byte - 127)

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def is_float(self) -> bool:
        return self not in (DType.I32, DType.I8, DType.I4)

    @property
    def block(self) -> Block | None:
        """How a block-scaled type's codes are scaled; None for every other type."""
        return BLOCKS.get(self)


_BITS = {
    DType.F32: 32,
    DType.F16: 16,
    DType.BF16: 16,
    DType.FP8: 8,
    DType.I32: 32,
    DType.I8: 8,
    DType.I4: 4,
    DType.NVFP4: 4,
    DType.MXFP4: 4,
    DType.MXFP8: 8,
    DType.E8M0: 8,
}

# The 16-bit float types activations are held in.
ACTIVATION_DTYPES = (DType.F16, DType.BF16)


@dataclass(frozen=True, slots=True)
class Block:
    """A block-scaled format: `size` consecutive elements along the contraction axis share one
    scale of type `scale`; `tensor_scale` adds one f32 scale per matrix (NVFP4's second level)."""

    size: int
    scale: DType
    tensor_scale: bool

    def scales(self, elements: int) -> int:
        """Block scales along an axis of `elements` (a partial last block has its own)."""
        return -(-elements // self.size)


BLOCKS = {
    DType.NVFP4: Block(16, DType.FP8, True),
    DType.MXFP4: Block(32, DType.E8M0, False),
    DType.MXFP8: Block(32, DType.E8M0, False),
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
        """Storage bytes; sub-byte types pack (two 4-bit codes per byte, rounded up). A
        block-scaled type counts its codes only: its scales are a tensor of their own."""
        return (self.numel * self.dtype.bits + 7) // 8

    def with_shape(self, *shape: int) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"
