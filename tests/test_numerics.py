"""ir.numerics: every stored format's rounding, bytes and block scales, through ml_dtypes."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ir.numerics import QMAX, decode, dequantize_blocks, encode, quantize, quantize_blocks, round_to
from ir.types import BLOCKS, DType, TensorType

FLOATS = [DType.F32, DType.F16, DType.BF16, DType.FP8, DType.NVFP4, DType.MXFP4, DType.MXFP8, DType.E8M0]
INTEGERS = [DType.I32, DType.I8, DType.I4]
_finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=60, deadline=None)
@given(values=hnp.arrays(np.float32, st.integers(1, 8).map(lambda n: 2 * n), elements=_finite))
def test_float_formats_round_trip_through_their_bytes(dtype, values):
    """encode(decode(x)) is the identity on the format's own values, bit for bit."""
    x = round_to(np.abs(values) if dtype is DType.E8M0 else values, dtype)
    raw = encode(x, dtype)
    assert len(raw) == TensorType(dtype, x.shape).nbytes
    np.testing.assert_array_equal(decode(raw, dtype), x)


@pytest.mark.parametrize("dtype", INTEGERS)
@settings(max_examples=60, deadline=None)
@given(values=hnp.arrays(np.int64, st.integers(1, 8).map(lambda n: 2 * n), elements=st.integers(-2**31, 2**31 - 1)))
def test_integer_formats_round_trip_through_their_bytes(dtype, values):
    x = round_to(values.astype(np.float64), dtype).astype(np.int32)
    raw = encode(x, dtype)
    assert len(raw) == TensorType(dtype, x.shape).nbytes
    np.testing.assert_array_equal(decode(raw, dtype), x)


def test_the_4_bit_float_holds_exactly_the_e2m1_values():
    every = decode(np.arange(256, dtype=np.uint8), DType.NVFP4)[:16]
    assert sorted(set(np.abs(every).tolist())) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert QMAX[DType.NVFP4] == 6 and QMAX[DType.FP8] == QMAX[DType.MXFP8] == 448


def test_codes_saturate_instead_of_overflowing():
    np.testing.assert_array_equal(round_to(np.array([500.0, -1e9]), DType.FP8), [448, -448])
    np.testing.assert_array_equal(round_to(np.array([7.0, -100.0]), DType.MXFP4), [6, -6])
    np.testing.assert_array_equal(round_to(np.array([3.5, -200.0]), DType.I4), [4, -7])


def test_bf16_keeps_a_value_f16_cannot_hold():
    x = np.array([70_000.0, -1e30, 3.0e38], np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(x.astype(np.float16)).all()
    back = decode(encode(x, DType.BF16), DType.BF16)
    np.testing.assert_array_equal(back, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert np.isfinite(back).all() and abs(back[0] - 70_000) < 300


@settings(max_examples=40, deadline=None)
@given(values=hnp.arrays(np.float32, st.tuples(st.integers(1, 70), st.integers(1, 4)), elements=_finite),
       dtype=st.sampled_from(list(BLOCKS)))
def test_block_scales_bound_each_block_and_codes_stay_in_range(values, dtype):
    """Along axis 0, each block of 16 or 32 rows has one scale per column; codes times scales
    reconstruct every value to within the element type's half step at that block's scale."""
    b = quantize_blocks(values, dtype, axis=0)
    block = BLOCKS[dtype]
    assert b.scales.shape == (block.scales(values.shape[0]), values.shape[1])
    assert np.abs(b.codes).max(initial=0) <= QMAX[dtype]
    tensor = b.tensor if b.tensor is not None else np.float32(1)
    w = dequantize_blocks(b.codes, b.scales, dtype, axis=0) * tensor
    step = np.repeat(b.scales, block.size, axis=0)[: len(values)] * tensor
    # Half of e2m1's widest gap (4 to 6) is 1 scale unit. MX's floor(log2 amax) scale lets a
    # block's largest value reach 2^(emax + 1), which clips at QMAX: 8 - 6 = 2 units for e2m1,
    # 512 - 448 = 64 for e4m3 (both more than half their widest gaps).
    gap = {DType.NVFP4: 1.0, DType.MXFP4: 2.0, DType.MXFP8: 64.0}[dtype]
    # NVFP4's e4m3 block scales span 2^-9..448 of the tensor scale: a block far below the
    # tensor's largest underflows to zero, and a subnormal scale is coarse. Check those apart.
    normal = step >= 2.0**-6 * tensor if dtype is DType.NVFP4 else np.ones_like(step, bool)
    assert (np.abs(w - values)[normal] <= (gap * step * 1.0001 + 1e-30)[normal]).all()
    underflow = step == 0
    assert (w[underflow] == 0).all() and (np.abs(values[underflow]) <= 6 * 2.0**-10 * tensor * 1.0001).all()


def test_nvfp4_scales_are_e4m3_and_one_f32_per_matrix():
    x = np.random.default_rng(1).standard_normal((3, 48, 8)).astype(np.float32)
    b = quantize_blocks(x, DType.NVFP4, axis=1)
    assert b.scales.shape == (3, 3, 8) and b.tensor.shape == (3,)
    np.testing.assert_array_equal(round_to(b.scales, DType.FP8), b.scales)
    np.testing.assert_allclose(b.tensor, np.abs(x).max(axis=(1, 2)) / (6 * 448), rtol=1e-6)


def test_mx_scales_are_powers_of_two_from_the_block_max():
    x = np.zeros((32, 2), np.float32)
    x[3, 0], x[5, 1] = 5.0, 0.3  # floor(log2 5) = 2, floor(log2 0.3) = -2; e2m1's emax is 2
    b = quantize_blocks(x, DType.MXFP4, axis=0)
    np.testing.assert_array_equal(b.scales, [[1.0, 2.0**-4]])
    assert b.codes[3, 0] == 4 and b.codes[5, 1] == 4.0  # 5 -> 4 (nearest even), 0.3 / 2^-4 = 4.8 -> 4


def test_per_channel_scales_take_the_activation_dtype():
    x = np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32)
    codes, scale = quantize(x, DType.I8, axis=0, scale_dtype=DType.BF16)
    assert scale.dtype == ml_dtypes.bfloat16 and codes.dtype == np.int8
    assert np.abs(codes).max() == 127


def test_int32_saturates_at_a_value_int32_holds():
    """float32 cannot hold 2**31 - 1: the bound is the float32 below it, so the codes never wrap to -2**31."""
    back = round_to(np.array([2.0**31, -2.0**31, 3e9]), DType.I32).astype(np.int64)
    assert (back[[0, 2]] == 2**31 - 128).all() and back[1] == -(2**31 - 128)
    np.testing.assert_array_equal(back.astype(np.int32), back)
