"""The float executor's compiled convolution and GEMM (cy/float_gemm.h) against obviously-right references: the exact
chain of correctly rounded float32 FMAs written out in rational arithmetic (tiny shapes), a float64 reference within
the chain's rounding bound (random shapes), and its own bits at every ISA level, thread count and batch split."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import _kernels
from dse.errors import DseError
from dse.model import nn

ISAS = _kernels.isa_levels()
U = 2.0 ** -24  # float32 unit roundoff


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def round_f32(q: Fraction) -> np.float32:
    """The float32 nearest to the rational q (ties to even; subnormals; overflow to inf); exact zero -> +0."""
    if q == 0:
        return np.float32(0.0)
    sign, q = (-1 if q < 0 else 1), abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    ulp = Fraction(2) ** (max(e, -126) - 23)
    n = q / ulp
    fl = n.numerator // n.denominator
    rem = n - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1):
        fl += 1
    v = fl * ulp
    if v >= Fraction(2) ** 128:
        return np.float32(sign * np.inf)
    return np.float32(sign * float(v))  # v has at most 24 significant bits: exact


def fma_chain(a, w, bias) -> np.float32:
    """acc = +0; acc = fmaf(a[k], w[k], acc) for ascending k (each step rounded once, in exact rational arithmetic);
    then acc + bias in float32 (None: no bias)."""
    acc = np.float32(0.0)
    for ak, wk in zip(a, w):
        acc = round_f32(Fraction(float(ak)) * Fraction(float(wk)) + Fraction(float(acc)))
    return acc if bias is None else np.float32(acc + np.float32(bias))


def chain_conv(x, W, b, stride, pads, dilation, groups) -> np.ndarray:
    """The convolution as the FMA chain of every output over (input channel of the group, kernel row, kernel column),
    padding positions as zero terms, written out per output."""
    cols, Ho, Wo = nn.windows(x, W.shape[2:], stride, pads, dilation)  # [B, C, kh, kw, Ho, Wo], zeros in the padding
    B, Cout = x.shape[0], W.shape[0]
    og, Cg = Cout // groups, W.shape[1]
    out = np.empty((B, Cout, Ho, Wo), np.float32)
    for bi in range(B):
        for co in range(Cout):
            g = co // og
            terms = cols[bi, g * Cg:(g + 1) * Cg].reshape(-1, Ho, Wo)
            for i in range(Ho):
                for j in range(Wo):
                    out[bi, co, i, j] = fma_chain(terms[:, i, j], W[co].reshape(-1), None if b is None else b[co])
    return out


def bound_check(got, x, W, b, stride, pads, dilation, groups):
    """|got - exact| within the chain's bound: K roundings of partial sums of at most sum |a w|, one of the bias sum."""
    x64 = x.astype(np.float64)
    cols, Ho, Wo = nn.windows(x64, W.shape[2:], stride, pads, dilation)
    B, Cout, Cg = x.shape[0], W.shape[0], W.shape[1]
    og, K = Cout // groups, W.shape[1] * W.shape[2] * W.shape[3]
    c = cols.reshape(B, groups, Cg * W.shape[2] * W.shape[3], Ho * Wo)
    w = W.astype(np.float64).reshape(groups, og, -1)
    exact = np.matmul(w, c).reshape(B, Cout, Ho, Wo)
    mag = np.matmul(np.abs(w), np.abs(c)).reshape(B, Cout, Ho, Wo)
    if b is not None:
        exact = exact + b.reshape(1, -1, 1, 1)
        mag = mag + np.abs(b).reshape(1, -1, 1, 1)
    tol = (K + 2) * U * 1.001 * mag + 2.0 ** -140
    assert np.all(np.abs(got.astype(np.float64) - exact) <= tol)


@st.composite
def conv_cases(draw, small: bool):
    depthwise = draw(st.booleans())
    groups = draw(st.integers(1, 3 if small else 4))
    Cg = 1 if depthwise else draw(st.integers(1, 3 if small else 9))
    og = draw(st.integers(1, 2 if small else 11))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1)))
    hw = (draw(st.integers(1, 5 if small else 13)), draw(st.integers(1, 5 if small else 40)))
    B = draw(st.integers(1, 2 if small else 4))
    return dict(shape=(B, groups * Cg) + hw, wshape=(groups * og, Cg, kh, kw), groups=groups,
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads, dilation=dil,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


def _operands(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    W = rng.standard_normal(case["wshape"]).astype(np.float32)
    b = rng.standard_normal(case["wshape"][0]).astype(np.float32) if case["bias"] else None
    return x, W, b


def _conv(case, x, W, b, isa, threads):
    args = (case["stride"], case["pads"], case["dilation"])
    hw = nn.out_hw(x.shape[2:], W.shape[2:], *args)
    return _kernels.float_conv(x, W, b, *args, case["groups"], hw, isa, threads, all_threads=True)


@settings(deadline=None, max_examples=60)
@given(case=conv_cases(small=True), isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]))
def test_float_conv_is_the_fma_chain_of_every_output(case, isa, threads):
    """Tiny convolutions (stride, asymmetric padding, dilation, groups, depthwise, 1x1) give, bit for bit, the chain of
    correctly rounded FMAs over the terms in the weights' order, then + bias, at every ISA level and thread count."""
    x, W, b = _operands(case)
    try:
        got, level = _conv(case, x, W, b, isa, threads)
    except DseError:  # a window larger than the padded input
        return
    assert level == isa
    want = chain_conv(x, W, b, case["stride"], case["pads"], case["dilation"], case["groups"])
    np.testing.assert_array_equal(_bits(got), _bits(want))


@settings(deadline=None, max_examples=80)
@given(case=conv_cases(small=False))
def test_float_conv_bits_do_not_depend_on_isa_threads_or_batch_split(case):
    """Ragged shapes around the micro-tiles: every ISA level and 1/2 threads give the same bits, so does each image
    on its own, and the result is within the chain's rounding bound of the float64 convolution."""
    x, W, b = _operands(case)
    try:
        ref, _ = _conv(case, x, W, b, ISAS[-1], 1)
    except DseError:
        return
    for isa in ISAS:
        for threads in (1, 2):
            np.testing.assert_array_equal(_bits(_conv(case, x, W, b, isa, threads)[0]), _bits(ref))
    alone = np.concatenate([_conv(case, x[i:i + 1], W, b, ISAS[0], 1)[0] for i in range(len(x))])
    np.testing.assert_array_equal(_bits(alone), _bits(ref))
    bound_check(ref, x, W, b, case["stride"], case["pads"], case["dilation"], case["groups"])


@st.composite
def matmul_cases(draw, small: bool):
    L = draw(st.integers(1, 2 if small else 3))
    M, K, N = (draw(st.integers(1, 4 if small else 40)), draw(st.integers(0, 6 if small else 70)),
               draw(st.integers(1, 4 if small else 70)))
    return dict(La=draw(st.sampled_from([1, L])), Lb=L if small else draw(st.sampled_from([1, L])), M=M, K=K, N=N,
                b_rows=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


def _mm_operands(c):
    rng = np.random.default_rng(c["seed"])
    a = rng.standard_normal((c["La"], c["M"], c["K"])).astype(np.float32)
    bshape = (c["Lb"], c["N"], c["K"]) if c["b_rows"] else (c["Lb"], c["K"], c["N"])
    b = rng.standard_normal(bshape).astype(np.float32)
    bias = rng.standard_normal(c["N"]).astype(np.float32) if c["bias"] else None
    return a, b, bias


@settings(deadline=None, max_examples=50)
@given(case=matmul_cases(small=True), isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]))
def test_float_matmul_is_the_fma_chain_of_every_output(case, isa, threads):
    """Tiny GEMMs / batched MatMuls (b as [K, N] or a Gemm's [N, K], per-column bias, a broadcast left operand,
    K = 0) give the exact FMA chain of every output, at every ISA level and thread count."""
    a, b, bias = _mm_operands(case)
    got, level = _kernels.float_matmul(a, b, bias, case["b_rows"], isa, threads, all_threads=True)
    assert level == isa and got.shape == (max(case["La"], case["Lb"]), case["M"], case["N"])
    bk = np.swapaxes(b, 1, 2) if case["b_rows"] else b  # [L, K, N]
    for l in range(got.shape[0]):
        al, bl = a[min(l, case["La"] - 1)], bk[min(l, case["Lb"] - 1)]
        for m in range(case["M"]):
            for n in range(case["N"]):
                want = fma_chain(al[m], bl[:, n], None if bias is None else bias[n])
                assert _bits(got[l, m, n]) == _bits(want)


@settings(deadline=None, max_examples=60)
@given(case=matmul_cases(small=False))
def test_float_matmul_bits_do_not_depend_on_isa_or_threads(case):
    """Ragged GEMM shapes: the same bits at every ISA level and thread count, within the bound of float64."""
    a, b, bias = _mm_operands(case)
    ref = _kernels.float_matmul(a, b, bias, case["b_rows"], ISAS[-1], 1)[0]
    for isa in ISAS:
        for threads in (1, 2):
            got = _kernels.float_matmul(a, b, bias, case["b_rows"], isa, threads, all_threads=True)[0]
            np.testing.assert_array_equal(_bits(got), _bits(ref))
    bk = np.swapaxes(b, 1, 2) if case["b_rows"] else b
    a64, b64 = a.astype(np.float64), bk.astype(np.float64)
    exact, mag = np.matmul(a64, b64), np.matmul(np.abs(a64), np.abs(b64))
    if bias is not None:
        exact, mag = exact + bias, mag + np.abs(bias)
    assert np.all(np.abs(ref - exact) <= (case["K"] + 2) * U * 1.001 * mag + 2.0 ** -140)


def test_padding_terms_are_zero_terms_of_the_chain():
    """A padded position is the term 0 * w: an infinite weight makes the border outputs NaN on the GEMM and the
    depthwise paths alike, as the float64 im2col convolution (and ONNX) gives."""
    x = np.ones((1, 2, 4, 4), np.float32)
    for groups, Cg in ((1, 2), (2, 1)):
        W = np.ones((2, Cg, 3, 3), np.float32)
        W[:, :, 0, 0] = np.inf
        for isa in ISAS:
            got = _kernels.float_conv(x, W, None, (1, 1), (1, 1, 1, 1), (1, 1), groups, (4, 4), isa, 1)[0]
            want = nn.reference_conv2d(x.astype(np.float64), W.astype(np.float64), None, (1, 1), (1, 1, 1, 1),
                                       (1, 1), groups)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            assert np.isnan(got[0, 0, 0]).all() and np.isnan(got[0, 0, :, 0]).all()
            assert not np.isnan(got[0, 0, 1:, 1:]).any()


def test_float_conv_rejects_shapes_that_do_not_fit():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError):
        _kernels.float_conv(x, np.zeros((6, 3, 3, 3), np.float32), None, (1, 1), (0,) * 4, (1, 1), 1, (3, 3))
    with pytest.raises(ValueError):
        _kernels.float_conv(x, np.zeros((6, 4, 3, 3), np.float32), None, (1, 1), (0,) * 4, (1, 1), 1, (4, 4))
    with pytest.raises(ValueError):
        _kernels.float_matmul(np.zeros((1, 2, 3), np.float32), np.zeros((1, 4, 5), np.float32))


def test_executor_ops_take_the_kernel_for_float32_and_numpy_otherwise():
    """nn.conv2d / gemm / matmul: float32 by the compiled chain (the bits of float_conv / float_matmul), other dtypes
    (constant folding) by numpy; matmul broadcasts leading axes and takes 1-D operands as np.matmul does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 6, 5)).astype(np.float32)
    W = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    args = ((2, 1), (1, 0, 1, 2), (1, 2), 2)
    got = nn.conv2d(x, W, b, *args)
    hw = nn.out_hw(x.shape[2:], W.shape[2:], *args[:3])
    np.testing.assert_array_equal(_bits(got), _bits(_kernels.float_conv(x, W, b, *args, hw)[0]))
    np.testing.assert_allclose(nn.conv2d(x.astype(np.float64), W.astype(np.float64), b, *args), got, rtol=1e-4,
                               atol=1e-4)
    xg, Wg = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_array_equal(_bits(nn.gemm(xg, Wg, b[:3])), _bits(_kernels.float_matmul(xg[None], Wg[None],
                                                                                               b[:3], True)[0][0]))
    assert nn.gemm(xg.astype(np.float64), Wg, None).dtype == np.float64
    for sa, sb in (((2, 3, 4, 5), (3, 5, 6)), ((4, 5), (2, 5, 6)), ((5,), (5, 6)), ((3, 5), (5,)), ((5,), (5,)),
                   ((2, 1, 4, 5), (1, 3, 5, 2))):
        a, c = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
        y = nn.matmul(a, c)
        assert y.shape == np.matmul(a, c).shape and y.dtype == np.float32
        np.testing.assert_allclose(y, np.matmul(a.astype(np.float64), c.astype(np.float64)), rtol=1e-5, atol=1e-5)
    ai = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(nn.matmul(ai, ai.T), ai @ ai.T)
