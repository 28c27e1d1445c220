"""AME predictor: per-layer error statistics vs slow references, AME, AccuracyModel fit, Spearman, validate, CLI."""
from __future__ import annotations

import json
import time

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from dse.arith.multipliers import EXACT, pattern_values
from dse.correction import activation_sums, apply_cv, cv_correction
from dse.errors import DseError
from dse.layer_config import LayerConfig
from dse.predict import (AccuracyModel, AmePredictor, LogitSurrogate, LossModel, layer_acc_std,
                         layer_error_stats, layer_term, leave_one_out, model_acc_std, spearman, surrogate_quality,
                         validate)
from tests.mac_helpers import DRUM4, MITCHELL, PERF13, draw_acts, err_acc, gemm_layer, relu_hist, signed_hist

SETTINGS = settings(deadline=None, max_examples=25)


def _layer(seed, a_signed, n=6, k=20, name=None):
    rng = np.random.default_rng(seed)
    hist = signed_hist(rng) if a_signed else relu_hist(rng)
    w = np.clip(np.round(rng.normal(10, 45, (n, k))), -127, 127).astype(np.int64)
    return gemm_layer(name or f"p{seed}_{a_signed}", w, hist, a_signed)


# ---------------------------------------------------------------- error statistics
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), a_signed=st.booleans(), mult=st.sampled_from([MITCHELL, DRUM4, PERF13]),
       n=st.integers(1, 5), k=st.integers(1, 30))
def test_error_stats_match_per_weight_loop(seed, a_signed, mult, n, k):
    """ME/VE over the joint grid == average over the layer's actual weights of activation-weighted moments."""
    layer = _layer(seed, a_signed, n, k)
    me, ve = layer_error_stats(layer, mult)
    p = layer.act_hist / layer.act_hist.sum()
    E = mult.error_table(a_signed).astype(float)
    ws = [int(x) & 0xFF for x in layer.w_q.ravel()]
    m1 = np.mean([p @ E[:, w] for w in ws])
    m2 = np.mean([p @ E[:, w] ** 2 for w in ws])
    assert me == pytest.approx(m1, rel=1e-10, abs=1e-10)
    assert ve == pytest.approx(m2 - m1 ** 2, rel=1e-8, abs=1e-8)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), a_signed=st.booleans(), mult=st.sampled_from([MITCHELL, DRUM4, PERF13]))
def test_cv_error_stats_match_per_filter_variance(seed, a_signed, mult):
    """CV: ME = 0 and K VE = mean over filters of Var(sum_i e(a_i, w_fi) - alpha_f a_i), computed term by term."""
    layer = _layer(seed, a_signed)
    me, ve = layer_error_stats(layer, mult, cv=True)
    alpha, _ = cv_correction(layer, mult)
    p = layer.act_hist / layer.act_hist.sum()
    a = pattern_values(a_signed).astype(float)
    E = mult.error_table(a_signed).astype(float)
    var_f = []
    for f in range(layer.N):
        tot = 0.0
        for w in layer.w_q[f]:
            r = E[:, int(w) & 0xFF] - alpha[f] * a
            tot += p @ (r - p @ r) ** 2
        var_f.append(tot)
    assert me == 0.0
    assert layer.K * ve == pytest.approx(np.mean(var_f), rel=1e-9, abs=1e-6)
    assert ve <= layer_error_stats(layer, mult)[1] + 1e-9


@pytest.mark.parametrize("mult", [MITCHELL, DRUM4])
def test_cv_noise_matches_monte_carlo_of_corrected_outputs(mult):
    """noise^2 = K VE_cv equals the mean per-filter variance of the emulated, corrected output error (10 %)."""
    layer = _layer(4, False, n=8, k=25)
    t = layer_term(layer, mult, cv=True)
    rng = np.random.default_rng(7)
    a = draw_acts(rng, layer.act_hist, False, (12000, layer.K))
    e = err_acc(mult, a, layer.w_q.astype(np.int64), False)
    r = apply_cv(e, activation_sums(layer, a), *cv_correction(layer, mult))
    assert t.noise ** 2 == pytest.approx(r.var(axis=0).mean(), rel=0.1)
    assert abs(r.mean()) < 5 * r.mean(axis=1).std() / np.sqrt(len(r))


def test_exact_and_library_multipliers():
    layer = _layer(5, True)
    assert layer_term(layer, EXACT).contrib == 0.0
    assert layer_error_stats(layer, EXACT) == (0.0, 0.0)
    from dse.arith.multipliers import get_multiplier, list_multipliers
    t = layer_term(layer, "perf_j0_k2", cv=False)
    tc = layer_term(layer, "perf_j0_k2", cv=True)
    assert t.contrib > tc.contrib > 0 and tc.ME == 0.0
    fp = [n for n in list_multipliers() if get_multiplier(n).domain != "int"]
    if fp:
        with pytest.raises(DseError, match="8-bit"):
            layer_error_stats(layer, fp[0])


def test_acc_std_fallback_matches_monte_carlo():
    layer = _layer(6, False, n=10, k=30)
    std, src = layer_acc_std(layer)
    assert src == "model" and std == model_acc_std(layer)
    rng = np.random.default_rng(1)
    a = draw_acts(rng, layer.act_hist, False, (20000, layer.K))
    acc = a @ layer.w_q.astype(np.int64).T
    assert std == pytest.approx(acc.std(), rel=0.03)
    layer.acc_std = 1234.5
    assert layer_acc_std(layer) == (1234.5, "calibration")
    t = layer_term(layer, MITCHELL)
    assert t.contrib == pytest.approx(np.hypot(t.K * t.ME, np.sqrt(t.K * t.VE)) / 1234.5)


# ---------------------------------------------------------------- AME
def test_ame_sums_layer_contributions_and_is_fast(monkeypatch):
    from dse import predict as P

    l1, l2 = _layer(8, False, name="conv1"), _layer(9, True, name="fc")
    pred = AmePredictor([l1, l2])
    # local multipliers are resolved by name through get_multiplier; route them via a tiny registry
    reg = {m.name: m for m in (MITCHELL, DRUM4, PERF13)}
    orig = P.get_multiplier
    monkeypatch.setattr(P, "get_multiplier", lambda n: reg[n] if n in reg else orig(n))
    cfg = {"conv1": LayerConfig("t_mitchell", False), "fc": LayerConfig("t_drum4", True)}
    want = layer_term(l1, MITCHELL).contrib + layer_term(l2, DRUM4, True).contrib
    assert pred.ame(cfg) == pytest.approx(want, rel=1e-12)
    assert pred.ame({}) == 0.0 and pred.ame({"fc": LayerConfig()}) == 0.0
    assert [t.layer for t in pred.breakdown(cfg)] == ["conv1", "fc"]
    assert pred.ame({"conv1": LayerConfig("t_mitchell", True)}) < pred.ame({"conv1": cfg["conv1"]})
    with pytest.raises(DseError, match="'nope' is not a layer of the model; valid layers: conv1, fc"):
        pred.ame({"nope": LayerConfig("t_mitchell")})
    t0 = time.perf_counter()
    for _ in range(2000):
        pred.ame(cfg)
    assert (time.perf_counter() - t0) / 2000 < 1e-3


# ---------------------------------------------------------------- AccuracyModel
def test_accuracy_model_recovers_monotone_quadratic():
    x = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    y = 0.9 - 0.01 * x - 0.02 * x ** 2
    m = AccuracyModel.fit(x, y)
    assert (m.b0, m.b1, m.b2) == pytest.approx((0.9, -0.01, -0.02), abs=1e-12)
    assert m.predict(1.5) == pytest.approx(0.9 - 0.015 - 0.045)
    assert m.loss(0.0) == 0.0 and m.loss(2.0) == pytest.approx(0.02 + 0.08)
    m2 = AccuracyModel.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(m2.predict(x), m.predict(x))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 12))
def test_accuracy_model_is_best_monotone_fit(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 5, n)
    x[0] = 0.0
    x[1] = 5.0
    y = rng.uniform(0.1, 0.9, n)          # arbitrary, often non-monotone data
    m = AccuracyModel.fit(x, y)
    xm = x.max()
    assert m.b1 <= 1e-9 and m.b1 + 2 * m.b2 * xm <= 1e-9
    grid = np.linspace(0, 2 * xm, 200)
    assert np.all(np.diff(m.predict(grid)) <= 1e-12)
    sse = np.sum((m.b0 + m.b1 * x + m.b2 * x * x - y) ** 2)
    for _ in range(300):                  # no random feasible quadratic does better
        b1 = -abs(rng.normal(0, 0.2))
        b2 = rng.uniform(-0.2, -b1 / (2 * xm))
        A = np.stack([np.ones(n)], 1)
        b0 = np.linalg.lstsq(A, y - b1 * x - b2 * x * x, rcond=None)[0][0]
        assert np.sum((b0 + b1 * x + b2 * x * x - y) ** 2) >= sse - 1e-9


def test_accuracy_model_errors():
    with pytest.raises(DseError, match="at least 3"):
        AccuracyModel.fit([0, 1], [0.9, 0.8])
    with pytest.raises(DseError, match="same AME"):
        AccuracyModel.fit([1, 1, 1], [0.9, 0.8, 0.7])
    with pytest.raises(DseError, match="b0"):
        AccuracyModel.from_dict({"b1": 0})


# ---------------------------------------------------------------- Spearman and validate
@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=30))
def test_spearman_is_pearson_of_average_ranks(pairs):
    x, y = np.array(pairs, dtype=float).T
    rx, ry = rankdata(x), rankdata(y)
    rho = spearman(x, y)
    if rx.std() == 0 or ry.std() == 0:
        assert np.isnan(rho)
    else:
        assert rho == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=30), st.integers(0, 2 ** 32 - 1))
def test_spearman_ties_values_within_float_rounding(pairs, seed):
    """Values within RANK_TIE of each other rank as ties (a prediction summed in another order on another ISA is off
    by ~1e-16 relative): the correlation is that of the unperturbed values; values further apart than RANK_TIE
    keep their order."""
    from dse.predict import RANK_TIE

    x, y = np.array(pairs, dtype=float).T * 0.01
    rng = np.random.default_rng(seed)
    jitter = lambda v: v + rng.uniform(-0.4, 0.4, v.size) * RANK_TIE  # noqa: E731
    want = spearman(x, y)
    got = spearman(jitter(x), jitter(y))
    assert (np.isnan(want) and np.isnan(got)) or got == pytest.approx(want, abs=1e-12)
    apart = np.arange(x.size) * 3 * RANK_TIE
    assert spearman(apart, apart[::-1]) == pytest.approx(-1.0)


def test_spearman_of_an_exact_predictor_with_rounding_noise_on_tied_losses_is_one():
    truth = np.array([0.0, 0.0, 0.0, 0.00505, 0.0, 0.0, 0.00735, 0.0086])
    pred = truth + np.array([3e-10, -2e-10, 1e-10, 0, -3e-10, 2e-10, 0, 4e-10])
    assert spearman(pred, truth) == pytest.approx(1.0)
    assert spearman([0, 1, float("nan")], [0, 1, 2]) != spearman([0, 1, 2], [0, 1, 2])  # NaN is not a tie


def test_validate_reports_rank_correlation_and_mae():
    configs = [{"x": i} for i in range(6)]
    v = validate(lambda c: 0.9 - 0.01 * c["x"], lambda c: 0.88 - 0.02 * c["x"], configs, repeats=3)
    assert v.spearman == pytest.approx(1.0)
    assert v.mae == pytest.approx(np.mean([abs(0.02 + 0.01 * i) for i in range(6)]))
    assert v.predict_seconds > 0 and v.emulate_seconds > 0


# ---------------------------------------------------------------- logit surrogate and its calibration
def _additive_net(seed=0, n=400, classes=5):
    """A fake network whose logits are exact + sum of per-layer changes (the surrogate's model holds exactly), plus
    an interaction term when two given layers are both approximate (where it does not)."""
    rng = np.random.default_rng(seed)
    exact = rng.normal(0, 1, (n, classes))
    labels = exact.argmax(1)
    labels[: n // 10] = rng.integers(0, classes, n // 10)   # some images wrong even when exact
    change = {(l, m): rng.normal(0, s, (n, classes)) for l in ("a", "b", "c")
              for m, s in (("m1", 0.2), ("m2", 0.6))}
    calls = []

    def run(config, interact=0.0):
        calls.append(dict(config))
        out = exact.copy()
        for l, lc in config.items():
            if lc.multiplier != "exact":
                out = out + change[(l, lc.multiplier)] * (1.3 if lc.cv else 1.0)
        if interact and {"a", "b"} <= {l for l, lc in config.items() if lc.multiplier != "exact"}:
            out = out + interact * rng.normal(0, 1, out.shape)
        return out
    return run, labels, calls


def _acc(logits, labels):
    return float(np.mean(logits.argmax(1) == labels))


def test_surrogate_equals_emulation_when_changes_add_and_measures_each_choice_once():
    run, labels, calls = _additive_net()
    sur = LogitSurrogate(run, labels)
    cfgs = [{"a": LayerConfig("m1"), "b": LayerConfig("m2", True)}, {"a": LayerConfig("m2"), "c": LayerConfig("m2")},
            {"b": LayerConfig("m2", True), "c": LayerConfig("exact")}, {}]
    for c in cfgs:
        assert sur.raw_loss(c) == pytest.approx(_acc(run({}), labels) - _acc(run(c), labels), abs=1e-12)
    n_calls = len(calls)
    assert sur.measured == 4                                      # a/m1, b/m2+cv, a/m2, c/m2; exact never run
    sur.raw_loss(cfgs[0])
    assert len(calls) == n_calls                                  # warm: no network run
    assert sur.single_loss("a", LayerConfig("m2")) == pytest.approx(
        _acc(run({}), labels) - _acc(run({"a": LayerConfig("m2")}), labels))


def test_surrogate_rejects_bad_logits():
    with pytest.raises(DseError, match="logits of shape"):
        LogitSurrogate(lambda c: np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(DseError, match="labels outside"):
        LogitSurrogate(lambda c: np.zeros((3, 2)), np.array([0, 1, 2]))


def test_loss_model_recovers_saturation_and_the_other_features():
    rng = np.random.default_rng(0)
    raw = np.linspace(0.0, 0.3, 14)
    soft, rms = rng.uniform(0.0, 0.05, raw.size), rng.uniform(0.0, 2.0, raw.size)
    X = np.stack([raw, soft, rms], 1)
    c_true = LossModel.C_GRID[10]
    y = 0.8 * raw / (1 + c_true * raw) + 2.0 * soft + 0.01 * rms
    m = LossModel.fit(X, y)
    assert (m.c, *m.w) == pytest.approx((c_true, 0.8, 2.0, 0.01), rel=1e-6)
    grid = np.linspace(0.0, 0.5, 50)
    assert np.all(np.diff([m([g, 0.01, 0.5]) for g in grid]) > 0)       # monotone in the raw loss: ranks kept
    assert m([-0.01, -0.02, 0.5]) == m([0.0, 0.0, 0.5]) >= 0            # below 0 (sampling noise) counts as 0
    zero = np.zeros_like(raw)
    up = LossModel.fit(np.stack([raw, zero, zero], 1), raw * 1.1)
    assert up.c == 0.0 and up.w[0] == pytest.approx(1.1)                # never an increasing bend (c >= 0)
    neg = LossModel.fit(X, 0.5 * raw - 3.0 * soft)
    assert neg.w[1] == 0.0 and min(neg.w) >= 0 and neg.w[0] > 0         # coefficients stay >= 0
    with pytest.raises(DseError):
        LossModel.fit([[0.1, 0.0, 0.0]], [0.1])


def test_count_reliability_is_the_share_of_the_spread_that_is_not_counting_noise():
    from dse.predict import count_reliability
    rng = np.random.default_rng(5)
    wide = rng.integers(0, 90, 40) / 300                 # 0-30 %: tens of images apart
    tiny = rng.integers(0, 4, 40) / 300                  # 0-3 images of 300 whatever the configuration
    assert count_reliability(wide, 300) > 0.9 and count_reliability(tiny, 300) < 0.5
    assert count_reliability(tiny * 0 + 0.02, 300) == 0.0 and count_reliability([0.1], 300) == 0.0
    assert count_reliability(tiny, 30000) > count_reliability(tiny, 300)   # the same shares on more images: less noise
    # images turned wrong and as many turned right: a raw loss a few images either side of 0 whose churn says it is
    # all counting noise; the binomial of the clipped losses alone misses it
    down, up = rng.poisson(12, 40), rng.poisson(10, 40)
    raw, churned = (down - up) / 300, (down + up) / 300
    assert count_reliability(raw, 300, churned) < 0.3 < count_reliability(raw, 300)
    assert count_reliability(wide, 300, wide) > 0.9                        # nothing turned right: churn = raw


def test_loss_model_leaves_a_noisy_count_out_and_keeps_a_reliable_one():
    """Given the surrogate's images, a count that is mostly counting noise over the fitted rows leaves the model with
    the soft loss: the model is a free-sign intercept plus the smooth features with weights >= 0 (least squares, as
    scipy's bounded solver finds it), so it ranks like them; a reliable count is fitted as without them; leave-one-out
    predictions decide once over all rows and equal refitting."""
    from scipy.optimize import lsq_linear

    from dse.predict import RAW_RELIABILITY, count_reliability
    rng = np.random.default_rng(6)
    g = np.sort(rng.uniform(0.0, 0.02, 30))
    tiny = np.stack([rng.integers(0, 4, g.size) / 300, rng.uniform(0, 0.01, g.size), 50 * g, g], 1)
    y = 0.9 * g + 0.5 * tiny[:, 0] + rng.normal(0, 0.001, g.size)
    assert count_reliability(tiny[:, 0], 300) < RAW_RELIABILITY
    m = LossModel.fit(tiny, y, 300)
    assert m.smooth and not LossModel.fit(tiny, y).smooth and LossModel.fit(tiny, y).w[0] > 0
    A = np.c_[np.ones(g.size), tiny[:, 2:]]
    ref = lsq_linear(A, y, bounds=([-np.inf, 0, 0], [np.inf, np.inf, np.inf]), tol=1e-14, method="bvls").x
    assert [m(f) for f in tiny] == pytest.approx(A @ ref, abs=1e-9)
    assert np.all(np.diff([m(f) for f in tiny]) >= 0)                     # rows sorted by the smooth features
    # losses that hover around 0 (approximate configurations measuring better than exact as often as worse): the
    # intercept goes below 0 and the smooth features still carry the ranking (without it every weight would be 0)
    y0 = 0.9 * g - 0.008 + rng.normal(0, 0.001, g.size)
    m0 = LossModel.fit(tiny, y0, 300)
    assert m0(tiny[0]) < 0 and spearman([m0(f) for f in tiny], y0) > 0.8
    wide = tiny.copy()
    wide[:, 0] = rng.integers(0, 90, g.size) / 300
    y2 = 0.7 * wide[:, 0] + 0.9 * g
    assert LossModel.fit(wide, y2, 300) == LossModel.fit(wide, y2)
    fast = LossModel.loo_predictions(tiny, y, 300)
    keep = [np.arange(g.size) != i for i in range(g.size)]
    slow = [LossModel.fit(tiny[k], y[k], 300)(tiny[i]) for i, k in enumerate(keep)]
    assert fast == pytest.approx(slow, abs=1e-12)
    assert surrogate_quality(tiny, y, 300).mean_error == pytest.approx(np.mean(np.abs(fast - y)), abs=1e-12)
    # a fifth column, the churn, only sizes the count's noise: a reliable-looking count whose churn shows it is
    # balanced flips leaves the model, and the churn never enters it as a feature
    churned = np.c_[wide, wide[:, 0] + 2 * rng.integers(40, 50, g.size) / 300]
    assert LossModel.fit(churned[:, :4], y2, 300).w[0] > 0 and LossModel.fit(churned, y2, 300).smooth
    honest = np.c_[wide, wide[:, 0]]
    assert LossModel.fit(honest, y2, 300) == LossModel.fit(wide, y2)
    assert LossModel.fit(honest, y2, 300)(honest[2]) == LossModel.fit(wide, y2)(wide[2])


def test_nnls_enumeration_matches_scipy():
    from scipy.optimize import nnls

    from dse.predict import _nnls
    rng = np.random.default_rng(2)
    for _ in range(20):
        A, y = rng.normal(size=(12, 3)), rng.normal(size=12)
        coef, sse = _nnls(A.T @ A, A.T @ y, np.array(y @ y))
        ref, rnorm = nnls(A, y)
        assert coef == pytest.approx(ref, abs=1e-9) and float(sse) == pytest.approx(rnorm ** 2, abs=1e-9)


def test_loss_model_leave_one_out_equals_refitting():
    rng = np.random.default_rng(1)
    X = np.stack([rng.uniform(0, 0.2, 15), rng.uniform(0, 0.03, 15), rng.uniform(0, 1, 15)], 1)
    y = X[:, 0] / (1 + 20 * X[:, 0]) + X[:, 1] + 0.002 * X[:, 2] + rng.normal(0, 0.002, 15)
    fast = LossModel.loo_predictions(X, y)
    slow = [LossModel.fit(np.delete(X, i, 0), np.delete(y, i))(X[i]) for i in range(15)]
    assert fast == pytest.approx(slow, abs=1e-12)


def test_surrogate_quality_is_leave_one_out_and_catches_interactions():
    run, labels, _ = _additive_net(seed=3)
    sur = LogitSurrogate(run, labels)
    rng = np.random.default_rng(0)
    cfgs = [{l: LayerConfig(str(rng.choice(["m1", "m2"])), bool(rng.integers(2))) for l in "abc" if rng.uniform() < 0.7}
            for _ in range(12)]
    acc0 = _acc(run({}), labels)
    raw = [sur.features(c) for c in cfgs]
    good = surrogate_quality(raw, [acc0 - _acc(run(c), labels) for c in cfgs])
    assert good.mean_error < 1e-9 and good.good_enough
    bad_loss = [acc0 - _acc(run(c, interact=3.0), labels) for c in cfgs]
    bad = surrogate_quality(raw, bad_loss)
    assert not bad.good_enough
    # leave_one_out really leaves each point out: a fit that memorises its points still errs on the left-out one
    memo = leave_one_out(lambda x, y: (lambda v: float(y[np.argmin(np.abs(x - v))])), [0.0, 1.0, 2.0], [0.0, 1.0, 5.0])
    assert memo.worst_error == pytest.approx(4.0)


# ---------------------------------------------------------------- CLI (model/data/emulator replaced by fakes)
class _FakeEmulator:
    """Accuracy falls with the AME of the configuration (deterministic), so the fit is meaningful."""

    def __init__(self, qmodel):
        self.pred = AmePredictor(qmodel.layers)

    def dataset_accuracy(self, data, config=None):
        return float(max(0.0, 0.9 - 0.05 * self.pred.ame(config or {})))

    def run(self, x, config=None):
        """Logits whose top-1 margin shrinks with the AME (for the surrogate's single-layer runs)."""
        logits = np.zeros((len(x), 10))
        logits[:, 0] = np.linspace(0.01, 1.0, len(x)) - 0.5 * self.pred.ame(config or {})
        return logits


@pytest.fixture
def fake_stack(monkeypatch, tmp_path):
    """dse.session.open_session replaced: two fake layers, 50 bundled images, no ONNX model."""
    import dse.emulate
    import dse.session
    from dse.data import BUNDLED_PREPROCESS, load_dataset
    from dse.quant import QuantModel

    layers = [_layer(30, False, name="conv1"), _layer(31, False, name="fc1")]

    def fake_open(inputs, calibration=None):
        if not Path(inputs.model).is_file():
            raise DseError(f"model '{inputs.model}': no such file")
        ds = load_dataset("fashion-mnist:search").head(50)
        return dse.session.Session(model=inputs.model, model_path=Path(inputs.model), graph="graph",
                                   preprocess=BUNDLED_PREPROCESS, calib=ds, data=tuple(ds for _ in inputs.data),
                                   qmodel=QuantModel(graph="graph", layers=layers), calibration="max")

    monkeypatch.setattr(dse.session, "open_session", fake_open)
    monkeypatch.setattr(dse.emulate, "Emulator", _FakeEmulator)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    return model, tmp_path


def _run(args, capsys):
    from dse.cli import main
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_predict_config_and_validate(fake_stack, capsys):
    model, tmp = fake_stack
    cfg = tmp / "c.toml"
    cfg.write_text('[layers.conv1]\nmultiplier = "mitchell"\ncv = true\n[layers.fc1]\nmultiplier = "drum4"\n')
    rc, out, err = _run(["predict", str(model), "--config", str(cfg), "--validate", "8", "--seed", "1", "--json"],
                        capsys)
    assert rc == 0, err
    d = json.loads(out)
    assert [t["layer"] for t in d["layers"]] == ["conv1", "fc1"]
    assert d["ame"] == pytest.approx(sum(t["contrib"] for t in d["layers"]))
    v = d["validation"]
    assert v["n_holdout"] == 4 and v["spearman"] == pytest.approx(1.0) and v["mae"] < 0.02
    assert v["speedup"] > 0  # reported, not judged: the fake emulator costs about what the predictor does
    g = d["surrogate"]   # checked on the same configurations and images as the AME model
    assert len(g["holdout"]) == 4 and g["measured"] >= 2 and g["calibration_c"] >= 0
    assert g["mae"] == pytest.approx(np.mean([abs(h["predicted"] - h["emulated"]) for h in g["holdout"]]))
    rc, out, err = _run(["predict", str(model), "--config", str(cfg), "--validate", "8"], capsys)
    assert rc == 0 and "logit surrogate" in out, err
    rc, out, err = _run(["predict", str(model), "--config", str(cfg)], capsys)
    assert rc == 0 and "AME" in out and "conv1" in out


def test_cli_predict_bad_inputs(fake_stack, capsys):
    model, tmp = fake_stack
    bad = tmp / "bad.toml"
    bad.write_text('[layers.nope]\nmultiplier = "mitchell"\n')
    rc, out, err = _run(["predict", str(model), "--config", str(bad)], capsys)
    assert rc == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    bad.write_text('[layers.conv1]\nmultiplier = "nosuch"\n')
    rc, out, err = _run(["predict", str(model), "--config", str(bad)], capsys)
    assert rc == 2 and "nosuch" in err
    rc, out, err = _run(["predict", str(model), "--validate", "3"], capsys)
    assert rc == 2 and "--validate" in err
    rc, out, err = _run(["predict", str(tmp / "missing.onnx")], capsys)
    assert rc == 2 and "missing.onnx" in err


def test_cli_predict_real_lenet5(tmp_path, capsys):
    """Integration with the real importer, calibration, data and emulator."""
    cfg = tmp_path / "c.json"
    rc, out, err = _run(["predict", "lenet5", "--json"], capsys)
    assert rc == 0, err
    names = [t["layer"] for t in json.loads(out)["layers"]]
    cfg.write_text(json.dumps({"layers": {names[1]: {"multiplier": "mitchell", "cv": True}}}))
    rc, out, err = _run(["predict", "lenet5", "--config", str(cfg), "--validate", "5", "--images", "200", "--json"],
                        capsys)
    assert rc == 0, err
    d = json.loads(out)
    assert d["layers"][1]["contrib"] > 0 and d["ame"] == pytest.approx(d["layers"][1]["contrib"])
    assert all(t["acc_std_source"] == "calibration" for t in d["layers"])
    v = d["validation"]
    assert v["n_holdout"] == 2 and v["speedup"] > 10 and 0 <= v["mae"] <= 1


def test_scale_free_feature_sees_through_gains_that_the_sum_overshoots():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(200, 4))
    labels = exact.argmax(1)

    def run(config):   # each approximate layer scales every logit by 0.4: no image changes class
        return exact * 0.4 ** len([lc for lc in config.values() if lc.multiplier != "exact"])
    sur = LogitSurrogate(run, labels)
    cfg = {"a": LayerConfig("m1"), "b": LayerConfig("m1")}
    raw, soft, rms, gauss, churned = sur.features(cfg)
    assert raw == pytest.approx(1.0) == churned   # summed changes: exact (1 - 0.6 - 0.6) flips every image
    assert rms == pytest.approx(0.0, abs=1e-9) and gauss == pytest.approx(0.0, abs=1e-9)
    assert sur.accuracy(run(cfg)) == 1.0


def test_gaussian_loss_is_the_expected_loss_of_gaussian_margin_noise():
    """Against its definition by sampling: of the images right at exact, the share that turns wrong when the margins
    move by independent N(0, s^2) noise (wrong images turning right are not counted); 0 without noise, increasing
    in s."""
    from dse.predict import gaussian_loss

    rng = np.random.default_rng(1)
    m0 = np.r_[rng.uniform(0.05, 3.0, 40), -0.4, -1.5]
    for s in (0.1, 0.7, 3.0):
        noisy = m0[None, :] + s * rng.standard_normal((40000, m0.size))
        sampled = float(np.mean((noisy < 0) & (m0 > 0)))
        assert gaussian_loss(m0, s) == pytest.approx(sampled, abs=0.005)
    assert gaussian_loss(m0, 0.0) == 0.0
    vals = [gaussian_loss(m0, s) for s in np.geomspace(0.01, 10, 30)]
    assert vals[0] == pytest.approx(0.0, abs=1e-12) and np.all(np.diff(vals) > 0) and vals[-1] < 0.5 * 40 / 42


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 25), st.booleans())
@example(13, 8, True)  # leaving out AME 0 leaves two distinct AMEs: equally good curves, picked by rounding before
def test_accuracy_model_leave_one_out_equals_refitting(seed, n, ties):
    """The vectorised leave-one-out of the AME accuracy model against refitting without each point (every design and
    its constraint, the left-out maximum AME extrapolated), also with repeated AMEs and noisy, rising accuracies."""
    from dse.predict import ame_quality, leave_one_out

    rng = np.random.default_rng(seed)
    x = rng.choice([0.0, 0.5, 1.0, 2.0], n) if ties else rng.uniform(0, 3, n)
    y = 0.9 - 0.05 * x * rng.uniform(-0.5, 2) - 0.01 * x * x * rng.uniform(-1, 1) + rng.normal(0, 0.02, n)
    slow = leave_one_out(lambda a, b: AccuracyModel.fit(a, b).predict, x, y)
    if not np.isfinite(slow.mean_error):
        with pytest.raises(DseError):
            AccuracyModel.loo_predictions(x, y)
        return
    fast = AccuracyModel.loo_predictions(x, y)
    ref = [AccuracyModel.fit(np.delete(x, i), np.delete(y, i)).predict(x[i]) for i in range(n)]
    assert fast == pytest.approx(ref, abs=1e-9)
    q = ame_quality(x[:, None], 1.0 - y)
    assert q.mean_error == pytest.approx(slow.mean_error, abs=1e-9)
