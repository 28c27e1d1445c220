"""bfloat16 rounding and FP32 Mitch-w against independent references (torch bf16 cast; exact rationals)."""
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.arith import multipliers as M
from dse.arith.floatmul import bf16_product, bf16_round, fp32_mitch_w
from dse.arith.multipliers import get_multiplier

SET = settings(deadline=None, max_examples=300)
BITS = st.integers(0, 2 ** 32 - 1)


def f32(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)


@SET
@given(bits=st.lists(BITS, min_size=1, max_size=64))
def test_bf16_round_matches_ml_dtypes(bits):
    """Independent reference: ml_dtypes' bfloat16 cast (round to nearest even), a test dependency."""
    x = np.array(bits, dtype=np.uint32).view(np.float32)
    got = bf16_round(x)
    ref = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
    assert (got.view(np.uint32) & 0xFFFF == 0).all()


def test_bf16_round_ties_and_overflow():
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> even (1); 1 + 3*2^-8 -> 1 + 2^-6 (even)
    assert bf16_round(np.float32(1 + 2 ** -8)) == 1.0
    assert bf16_round(np.float32(1 + 3 * 2 ** -8)) == np.float32(1 + 2 ** -6)
    assert np.isposinf(bf16_round(np.float32(3.4e38))) and np.isneginf(bf16_round(np.float32(-3.4e38)))
    assert bf16_round(np.float32(-0.0)).view(np.uint32) == 0x80000000


@SET
@given(x=st.floats(width=32, allow_nan=False, allow_infinity=False),
       y=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_bf16_product_exact_in_fp32(x, y):
    got = get_multiplier("bf16").float_product(np.float32(x), np.float32(y))
    rx, ry = float(bf16_round(np.float32(x))), float(bf16_round(np.float32(y)))
    exact = rx * ry  # float64 holds the 16-bit significand product exactly
    if exact == 0 or 2 ** -126 <= abs(exact) < 3.4e38:
        assert float(got) == exact
    assert got.dtype == np.float32


def ref_fp32_mitch_w(x: float, y: float, w: int) -> float:
    """Scalar reference on exact rationals (FTZ/DAZ, IEEE specials), per the floatmul docstring."""
    if math.isnan(x) or math.isnan(y):
        return math.nan
    tiny = 2.0 ** -126
    zx, zy = abs(x) < tiny, abs(y) < tiny
    ix, iy = math.isinf(x), math.isinf(y)
    sign = -1.0 if (math.copysign(1, x) * math.copysign(1, y)) < 0 else 1.0
    if (ix and zy) or (iy and zx):
        return math.nan
    if ix or iy:
        return sign * math.inf
    if zx or zy:
        return sign * 0.0
    mx, ex = math.frexp(abs(x))  # abs(x) = mx 2^ex, mx in [0.5, 1)
    my, ey = math.frexp(abs(y))
    fx, fy = Fraction(mx) * 2 - 1, Fraction(my) * 2 - 1  # fractions of 1.f
    q = Fraction(1, 2 ** (w - 2))
    fx, fy = (fx // q) * q + q / 2, (fy // q) * q + q / 2  # w-2 bits + unbias bit
    L = fx + fy
    e = (ex - 1) + (ey - 1)
    sig = 1 + L if L < 1 else L
    e += 0 if L < 1 else 1
    if e < -126:
        return sign * 0.0
    if e > 127:
        return sign * math.inf
    return sign * float(sig * Fraction(2) ** e)


@SET
@given(bx=BITS, by=BITS, w=st.integers(3, 24))
def test_fp32_mitch_w_matches_rational_reference(bx, by, w):
    x, y = f32(bx), f32(by)
    got = float(fp32_mitch_w(x, y, w)[0])
    ref = ref_fp32_mitch_w(float(x[0]), float(y[0]), w)
    if math.isnan(ref):
        assert math.isnan(got)
    else:
        assert got == ref and math.copysign(1, got) == math.copysign(1, ref)


@pytest.mark.parametrize("w", range(3, 9))
def test_fp32_mitch_w_on_integers_floors_to_8bit_mitch_w(w):
    """On integers 1..255 the FP32 model is the 8-bit Mitch-w before its 'bits below 2^0 dropped' step."""
    a = np.arange(1, 256, dtype=np.float32)
    got = fp32_mitch_w(a[:, None], a[None, :], w)
    ia = np.arange(1, 256, dtype=np.int64)
    np.testing.assert_array_equal(np.floor(got).astype(np.int64), M.mitch_w_core(ia[:, None], ia[None, :], w))


def test_fp32_mitch_w_specials_and_shapes():
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    x = np.array([0.0, -0.0, 1e-40, inf, inf, nan, 3.0, 1e30, 1e-30, -2.0], dtype=np.float32)
    y = np.array([5.0, 5.0, 5.0, 2.0, 0.0, 1.0, -inf, 1e30, 1e-30, -3.0], dtype=np.float32)
    r = fp32_mitch_w(x, y, 6)
    assert r[0] == 0 and np.signbit(r[1]) and r[2] == 0
    assert np.isposinf(r[3]) and np.isnan(r[4]) and np.isnan(r[5]) and np.isneginf(r[6])
    # 2 x 3 with w = 6: fractions 0 and 0.5 each get the unbias bit 2^-5 -> (1 + 0.5 + 2^-4) * 4 = 6.25
    assert np.isposinf(r[7]) and r[8] == 0 and r[9] == 6.25
    assert r.dtype == np.float32
    assert fp32_mitch_w(np.ones((3, 1), np.float32), np.ones((1, 4), np.float32), 5).shape == (3, 4)
    with pytest.raises(ValueError):
        fp32_mitch_w(x, y, 2)


def test_float_multiplier_objects():
    m = get_multiplier("fp32_mitch_w6")
    assert m.domain == "float" and m.params["w"] == 6 and m.params["power_reference"] == "fp32"
    x = np.linspace(-3, 3, 11, dtype=np.float32)
    np.testing.assert_array_equal(m.float_product(x, x[::-1]), fp32_mitch_w(x, x[::-1], 6))
    b = get_multiplier("bf16")
    np.testing.assert_array_equal(b.float_product(x, x), bf16_product(x, x))
    assert 0 < b.rel_power < 1 and 0 < m.rel_power < b.rel_power
