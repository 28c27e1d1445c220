"""Control-variate correction: per-weight-value fit, per-filter coefficients, activation sums, Monte-Carlo checks.

The approximate multipliers come from tests/mac_helpers.py, built independently from the design.md definitions
(sign-magnitude signed handling).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.arith.multipliers import EXACT, pattern_values
from dse.correction import activation_sums, apply_cv, clear_cache, cv_correction, fit_cv
from dse.errors import DseError
from dse.quant import MacLayer
from tests.mac_helpers import DRUM4, MITCHELL, PERF, PERF13, draw_acts, err_acc, gemm_layer, relu_hist, signed_hist

SETTINGS = settings(deadline=None, max_examples=40)


def test_local_multipliers_match_design_vectors():
    t = MITCHELL.table(False, False)
    assert t[3, 3] == 8 and t[0, 77] == 0 and np.all(t <= np.multiply.outer(np.arange(256), np.arange(256)))
    nz = np.multiply.outer(np.arange(1, 256), np.arange(1, 256))
    rel = (t[1:, 1:] - nz) / nz
    assert rel.mean() == pytest.approx(-0.03788, abs=5e-5) and rel.min() == pytest.approx(-1 / 9)
    assert PERF.table(False)[5, 7] == 5 * 4 and PERF.table(True)[0xFF, 0xFF] == -1 * (-1 & ~3)


# ---------------------------------------------------------------- histograms and layers
# ---------------------------------------------------------------- per weight value fit
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), support=st.integers(2, 256), a_signed=st.booleans(),
       mult=st.sampled_from([MITCHELL, DRUM4, PERF13]))
def test_fit_cv_matches_weighted_polyfit(seed, support, a_signed, mult):
    rng = np.random.default_rng(seed)
    hist = np.zeros(256, np.int64)
    hist[rng.choice(256, support, replace=False)] = rng.integers(1, 1000, support)
    alpha, beta = fit_cv(mult, hist, a_signed)
    a = pattern_values(a_signed).astype(float)
    E = mult.error_table(a_signed, True)
    sel = hist > 0
    for wp in rng.choice(256, 6, replace=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s, c = np.polyfit(a[sel], E[sel, wp].astype(float), 1, w=np.sqrt(hist[sel] / hist.sum()))
        scale = 1 + np.abs(E[:, wp]).max()
        assert alpha[wp] == pytest.approx(s, abs=1e-9 * scale)
        assert beta[wp] == pytest.approx(c, abs=1e-7 * scale)


@pytest.mark.parametrize("a_signed", [False, True])
def test_fit_cv_exact_for_perforation(a_signed):
    rng = np.random.default_rng(1)
    hist = signed_hist(rng) if a_signed else relu_hist(rng)
    alpha, beta = fit_cv(PERF13, hist, a_signed)
    wv = pattern_values(True)
    np.testing.assert_allclose(alpha, -(wv & (0b111 << 1)), atol=1e-9)
    np.testing.assert_allclose(beta, 0, atol=1e-7)


@pytest.mark.parametrize("a_signed", [False, True])
@pytest.mark.parametrize("value", [0, 1, 77, -3])
def test_fit_cv_degenerate_single_value(a_signed, value):
    if value < 0 and not a_signed:
        value = 200
    hist = np.zeros(256, np.int64)
    hist[value & 0xFF] = 123
    alpha, beta = fit_cv(MITCHELL, hist, a_signed)
    assert np.all(alpha == 0)
    np.testing.assert_array_equal(beta, MITCHELL.error_table(a_signed)[value & 0xFF].astype(float))


def test_fit_cv_bad_histograms():
    with pytest.raises(DseError, match="no activation histogram"):
        fit_cv(MITCHELL, None, False)
    with pytest.raises(DseError, match="empty"):
        fit_cv(MITCHELL, np.zeros(256, np.int64), False)
    with pytest.raises(DseError, match="shape"):
        fit_cv(MITCHELL, np.ones(255, np.int64), False)


def test_exact_multiplier_has_zero_correction():
    rng = np.random.default_rng(2)
    layer = gemm_layer("ex", rng.integers(-127, 128, (4, 9)), relu_hist(rng), False)
    al, be = cv_correction(layer, EXACT)
    assert np.all(al == 0) and np.all(be == 0)


# ---------------------------------------------------------------- per filter coefficients
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), k=st.integers(1, 40), a_signed=st.booleans())
def test_cv_correction_per_filter_matches_loops(seed, n, k, a_signed):
    rng = np.random.default_rng(seed)
    hist = signed_hist(rng) if a_signed else relu_hist(rng)
    w = rng.integers(-128, 128, (n, k))
    layer = gemm_layer(f"L{seed}", w, hist, a_signed)
    alpha_w, beta_w = fit_cv(DRUM4, hist, a_signed)
    al, be = cv_correction(layer, DRUM4)
    for f in range(n):
        assert al[f] == pytest.approx(sum(alpha_w[int(x) & 0xFF] for x in w[f]) / k, rel=1e-12, abs=1e-12)
        assert be[f] == pytest.approx(sum(beta_w[int(x) & 0xFF] for x in w[f]), rel=1e-12, abs=1e-9)


def test_cv_correction_cache_tracks_content():
    clear_cache()
    rng = np.random.default_rng(3)
    hist = relu_hist(rng)
    w = rng.integers(-127, 128, (5, 12))
    l1 = gemm_layer("same", w, hist, False)
    r1 = cv_correction(l1, MITCHELL)
    assert cv_correction(l1, MITCHELL) is r1
    assert not r1[0].flags.writeable
    l2 = gemm_layer("same", w[::-1].copy(), hist, False)   # same name, other weights
    np.testing.assert_allclose(cv_correction(l2, MITCHELL)[0], r1[0][::-1])
    l3 = gemm_layer("same", w, hist, True)                  # other signedness
    assert not np.allclose(cv_correction(l3, MITCHELL)[1], r1[1])


def test_cv_correction_missing_weights():
    layer = MacLayer(name="nw", op="gemm", in_shape=(3,), out_shape=(2,), K=3, N=2, act_hist=np.ones(256, np.int64))
    with pytest.raises(DseError, match="layer 'nw'.*w_q"):
        cv_correction(layer, MITCHELL)


# ---------------------------------------------------------------- Monte-Carlo: exact in mean, variance reduction
def _corrected_errors(name, rng, mult, a_signed, n, k, w_mean, m=12000):
    """m i.i.d. activation rows from a random histogram and n random filters of k weights around w_mean: the
    per-filter accumulator errors e (acc - exact) and the corrected errors apply_cv(e); plus (hist, w, alpha)."""
    hist = signed_hist(rng) if a_signed else relu_hist(rng)
    w = np.clip(np.round(rng.normal(w_mean, 40, (n, k))), -127, 127).astype(np.int64)
    alpha, beta = cv_correction(gemm_layer(name, w, hist, a_signed), mult)
    a = draw_acts(rng, hist, a_signed, (m, k))
    e = err_acc(mult, a, w, a_signed)
    return e, apply_cv(e, a.sum(axis=1), alpha, beta), (hist, w, alpha)  # acc - exact = e: apply_cv(e) is corrected


@pytest.mark.parametrize("mult", [PERF, PERF13, MITCHELL, DRUM4])
@pytest.mark.parametrize("a_signed", [False, True])
def test_corrected_error_is_exact_in_mean(mult, a_signed):
    """Activations i.i.d. from the histogram, random filters: the mean of the corrected output error is 0.

    Tolerance: 5 standard errors of the per-filter sample mean (rows are i.i.d.), i.e. a false-failure chance
    below 1e-5 per filter; the uncorrected mean must be clearly non-zero (> 8 SE) for the same samples, so the check
    has power."""
    e, r, _ = _corrected_errors(f"mc_{mult.name}", np.random.default_rng(11 + a_signed), mult, a_signed, 12, 27, 15)
    m = len(e)
    se_r = r.std(axis=0, ddof=1) / np.sqrt(m)
    assert np.all(np.abs(r.mean(axis=0)) <= 5 * se_r + 1e-9)
    se_e = e.std(axis=0, ddof=1) / np.sqrt(m)
    assert np.mean(np.abs(e.mean(axis=0)) > 8 * se_e) > 0.5


@pytest.mark.parametrize("mult", [MITCHELL, DRUM4])
@pytest.mark.parametrize("a_signed", [False, True])
def test_corrected_variance_below_uncorrected(mult, a_signed):
    """Per filter, sample variance of the corrected error is below the uncorrected one and matches the closed form
    sum_i Var(e(a, w_i)) - K alpha_f^2 Var(a) (relative tolerance 10 %: ~4 standard errors of a variance estimate at
    m = 12000 for these moderately heavy-tailed errors)."""
    e, r, (hist, w, alpha) = _corrected_errors(f"var_{mult.name}", np.random.default_rng(21 + a_signed), mult,
                                               a_signed, 10, 25, 20)
    n, k = w.shape
    v_e, v_r = e.var(axis=0), r.var(axis=0)
    assert np.all(v_r < v_e)
    p = hist / hist.sum()
    av = pattern_values(a_signed).astype(float)
    var_a = p @ (av - p @ av) ** 2
    E = mult.error_table(a_signed).astype(float)
    var_e_w = p @ (E - p @ E) ** 2
    closed = np.array([var_e_w[w[f] & 0xFF].sum() - k * alpha[f] ** 2 * var_a for f in range(n)])
    np.testing.assert_allclose(v_r, closed, rtol=0.1)


# ---------------------------------------------------------------- activation sums and apply_cv
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), g=st.sampled_from([1, 2, 3]), cpg=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       s=st.integers(1, 2), d=st.integers(1, 2), pads=st.tuples(*[st.integers(0, 2)] * 4))
def test_activation_sums_conv_matches_loops(seed, b, g, cpg, h, w, kh, kw, s, d, pads):
    pt, pl, pb, pr = pads
    if h + pt + pb < d * (kh - 1) + 1 or w + pl + pr < d * (kw - 1) + 1:
        return
    rng = np.random.default_rng(seed)
    c = g * cpg
    x = rng.integers(-128, 128, (b, c, h, w))
    layer = MacLayer(name="c", op="conv", in_shape=(c, h, w), out_shape=(2 * g, 1, 1), kernel=(kh, kw),
                     stride=(s, s), pads=pads, dilation=(d, d), groups=g)
    X = activation_sums(layer, x)
    ho = (h + pt + pb - d * (kh - 1) - 1) // s + 1
    wo = (w + pl + pr - d * (kw - 1) - 1) // s + 1
    ref = np.zeros((b, g, ho, wo))
    for bi in range(b):
        for gi in range(g):
            for oy in range(ho):
                for ox in range(wo):
                    tot = 0
                    for ci in range(gi * cpg, (gi + 1) * cpg):
                        for i in range(kh):
                            for j in range(kw):
                                yy, xx = oy * s + i * d - pt, ox * s + j * d - pl
                                if 0 <= yy < h and 0 <= xx < w:
                                    tot += x[bi, ci, yy, xx]
                    ref[bi, gi, oy, ox] = tot
    np.testing.assert_array_equal(X, ref)


def test_activation_sums_gemm_and_apply_cv_layouts():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (7, 10))
    layer = MacLayer(name="g", op="gemm", in_shape=(10,), out_shape=(4,), K=10, N=4)
    X = activation_sums(layer, x)
    np.testing.assert_array_equal(X, x.sum(axis=1))
    acc = rng.integers(-10**6, 10**6, (7, 4))
    al, be = rng.normal(size=4), rng.normal(size=4)
    out = apply_cv(acc, X, al, be)
    for m in range(7):
        for n in range(4):
            assert out[m, n] == acc[m, n] - al[n] * X[m] - be[n]
    # conv layout with 2 groups of 3 channels
    acc4 = rng.integers(-1000, 1000, (2, 6, 3, 3))
    X4 = rng.integers(0, 500, (2, 2, 3, 3)).astype(float)
    al6, be6 = rng.normal(size=6), rng.normal(size=6)
    out4 = apply_cv(acc4, X4, al6, be6)
    for n in range(6):
        np.testing.assert_allclose(out4[:, n], acc4[:, n] - al6[n] * X4[:, n // 3] - be6[n])
    with pytest.raises(ValueError):
        apply_cv(acc, X[:-1], al, be)
    with pytest.raises(ValueError):
        apply_cv(acc, X, al[:-1], be)


def test_apply_cv_end_to_end_with_reference_gemm():
    """acc from the kernel reference (approximate GEMM) corrected by CV is closer to the exact GEMM on average."""
    from dse.kernels import reference_gemm_int

    rng = np.random.default_rng(9)
    hist = relu_hist(rng)
    w = rng.integers(-127, 128, (6, 30))
    layer = gemm_layer("e2e", w, hist, False)
    a = draw_acts(rng, hist, False, (4000, 30))
    acc = reference_gemm_int(a, w, MITCHELL, False)
    exact = a @ w.T
    al, be = cv_correction(layer, MITCHELL)
    corr = apply_cv(acc, activation_sums(layer, a), al, be)
    assert np.mean((corr - exact) ** 2) < 0.75 * np.mean((acc - exact) ** 2)


@pytest.mark.parametrize("name", ["perf_j0_k2", "perf_j1_k3", "perf_j2_k2"])
@pytest.mark.parametrize("a_signed", [False, True])
def test_library_perforation_fit_is_exact(name, a_signed):
    """The library's perforation multipliers have e(a, w) linear in a: the per-value fit leaves no residual."""
    from dse.arith.multipliers import get_multiplier

    mult = get_multiplier(name)
    rng = np.random.default_rng(3)
    hist = signed_hist(rng) if a_signed else relu_hist(rng)
    alpha, beta = fit_cv(mult, hist, a_signed)
    a = pattern_values(a_signed).astype(float)
    res = mult.error_table(a_signed).astype(float) - np.outer(a, alpha) - beta[None, :]
    assert np.abs(res).max() < 1e-6
    assert np.abs(alpha).max() > 0


# ---------------------------------------------------------------- positions with different activation means
def test_operand_sums_matches_im2col():
    """quant.operand_sums == the column sums of the explicit operand matrix, per group (stride, pads, dilation,
    groups, 1x1 and gemm)."""
    from dse.quant import operand_sums

    rng = np.random.default_rng(4)
    cases = [(4, 1, 3, 1, 1, (1, 1, 1, 1)), (6, 3, 2, 2, 1, (0, 1, 2, 0)), (4, 4, 3, 1, 2, (2, 2, 2, 2)),
             (3, 1, 1, 1, 1, (0, 0, 0, 0))]
    for (c, g, kh, s, d, pads) in cases:
        h = w = 7
        x = rng.integers(0, 256, (2, c, h, w)).astype(np.uint8)
        pt, pl, pb, pr = pads
        ho, wo = (h + pt + pb - d * (kh - 1) - 1) // s + 1, (w + pl + pr - d * (kh - 1) - 1) // s + 1
        layer = MacLayer(name="c", op="conv", in_shape=(c, h, w), out_shape=(2 * g, ho, wo), kernel=(kh, kh),
                         stride=(s, s), pads=pads, dilation=(d, d), groups=g, K=c // g * kh * kh, N=2 * g)
        xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        ref = np.zeros((g, c // g, kh, kh))
        for ci in range(c):
            for i in range(kh):
                for j in range(kh):
                    ref[ci // (c // g), ci % (c // g), i, j] = sum(
                        xp[b, ci, oy * s + i * d, ox * s + j * d]
                        for b in range(2) for oy in range(ho) for ox in range(wo))
        np.testing.assert_array_equal(operand_sums(x, layer), ref.reshape(g, -1))
    xg = rng.integers(-128, 128, (5, 9)).astype(np.int8)
    lg = MacLayer(name="g", op="gemm", in_shape=(9,), out_shape=(3,), K=9, N=3)
    np.testing.assert_array_equal(operand_sums(xg, lg), xg.astype(float).sum(axis=0)[None, :])


def _calibrated_gemm(rng, mult_signed, n, k, m):
    """A gemm layer whose K inputs have very different means (like fc1 of LeNet-5), weights correlated with them,
    calibrated on the returned activations (histogram and per-position means from the same data)."""
    means = rng.uniform(0, 120, k)
    a = np.clip(np.round(rng.exponential(1.0, (m, k)) * means), 0, 255).astype(np.int64)
    w = np.clip(np.round(rng.normal(0, 35, (n, k)) + 0.3 * (means - means.mean())), -127, 127).astype(np.int64)
    layer = gemm_layer(f"pos_{rng.integers(1 << 30)}", w, np.bincount(a.ravel(), minlength=256), False)
    layer.act_mean = a.mean(axis=0)[None, :]
    return layer, a, w


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mult", [PERF, PERF13, "perf_j3_k3"])
def test_cv_exact_in_mean_with_unequal_positions(seed, mult):
    """The defining property on the calibration data itself: for a multiplier whose error is linear in a
    (perforation), the per-filter mean of the corrected error over the calibration rows is 0 (to float rounding),
    although the positions have different means; design.md's B_f = sum beta alone (no act_mean) is not."""
    from dse.arith.multipliers import get_multiplier

    mult = get_multiplier(mult) if isinstance(mult, str) else mult
    rng = np.random.default_rng(seed)
    layer, a, w = _calibrated_gemm(rng, False, 16, 60, 3000)
    e = err_acc(mult, a, w, False)
    scale = np.abs(e).mean()
    r = apply_cv(e, a.sum(axis=1), *cv_correction(layer, mult))
    assert np.abs(r.mean(axis=0)).max() < 1e-9 * scale * 60
    layer.act_mean = None
    r_iid = apply_cv(e, a.sum(axis=1), *cv_correction(layer, mult))
    assert np.abs(r_iid.mean(axis=0)).mean() > 0.01 * scale   # the i.i.d. formula leaves a real bias here


def _layer_inputs(graph, qmodel, x):
    """{layer: quantized input} on the float path, the inputs calibration saw."""
    from dse.model.float_exec import run_float_all
    from dse.quant import quantize_act

    env = run_float_all(graph, x, keep={l.input for l in qmodel.layers})
    return {l.name: quantize_act(env[l.input], l.a_scale, l.a_signed) for l in qmodel.layers}


@pytest.mark.parametrize("name", ["perf_j3_k3", "perf_j2_k3", "drum3"])
def test_cv_on_bundled_lenet5_calibration(bundled_qmodel, name):
    """On the bundled LeNet-5 and its own calibration images, per layer: after CV the per-filter mean error is ~0
    (exact for perforation; for DRUM the per-value line's nonlinear residual is left: 4-29 % of the uncorrected
    bias per layer when written, bound 35 %), the mean square error is below the
    uncorrected one, and the error variance does not grow by more than 10 %."""
    from dse.arith.multipliers import get_multiplier
    from dse.data import load_dataset
    from dse.quant import exact_acc

    graph, qm = bundled_qmodel("lenet5")
    mult = get_multiplier(name)
    ins = _layer_inputs(graph, qm, load_dataset("fashion-mnist:calib").images())
    for l in qm.layers:
        q = ins[l.name]
        from dse import kernels
        approx = (kernels.gemm_int(q, l.w_q, mult, l.a_signed) if l.op == "gemm" else
                  kernels.conv2d_int(q, l.w_q, mult, l.a_signed, l.stride, l.pads, l.dilation, l.groups))
        e = (approx - exact_acc(q, l)).astype(np.float64)
        r = apply_cv(e, activation_sums(l, q), *cv_correction(l, mult))
        ax = (0,) if e.ndim == 2 else (0, 2, 3)
        bias_e, bias_r = np.abs(e.mean(axis=ax)).mean(), np.abs(r.mean(axis=ax)).mean()
        tol = 1e-9 * l.acc_std if name.startswith("perf") else 0.35 * bias_e
        assert bias_r <= tol, (l.name, bias_r, bias_e)
        assert np.mean(r ** 2) < np.mean(e ** 2), l.name
        var_e = np.mean((e - e.mean(axis=ax, keepdims=True)) ** 2)
        assert np.mean((r - r.mean(axis=ax, keepdims=True)) ** 2) <= 1.1 * var_e, l.name
