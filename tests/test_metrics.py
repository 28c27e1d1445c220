"""error_metrics definitions on hand-computable tables, histogram weighting, and design.md formulas."""
import numpy as np
import pytest

from dse.arith.metrics import METRIC_KEYS, error_metrics
from dse.arith.multipliers import Multiplier, exact_table, get_multiplier
from dse.errors import DseError


def with_errors(errs: dict):
    """Exact (unsigned x unsigned) table plus errors {(a, w): e}."""
    def build(a_s, w_s):
        t = exact_table(a_s, w_s).astype(np.int64)
        for (a, w), e in errs.items():
            t[a, w] += e
        return t
    return Multiplier(name="hand", family="test", _builder=build)


def test_hand_computed_uniform():
    # errors: +4 at (2, 3) [exact 6], -2 at (10, 10) [exact 100], +1 at (0, 7) [exact 0]
    m = with_errors({(2, 3): 4, (10, 10): -2, (0, 7): 1})
    r = error_metrics(m, a_signed=False, w_signed=False)
    n = 65536
    assert set(METRIC_KEYS) <= set(r)
    assert r["ME"] == pytest.approx(3 / n)
    assert r["MED"] == r["MAE"] == pytest.approx(7 / n)
    assert r["NMED"] == pytest.approx(7 / n / 255 ** 2)
    assert r["MSE"] == pytest.approx(21 / n)
    assert r["VAR"] == pytest.approx(21 / n - (3 / n) ** 2)
    assert r["WCE"] == 4
    assert r["EP"] == pytest.approx(3 / n)
    n_nz = 255 * 255  # pairs with a non-zero exact product
    assert r["MRED"] == pytest.approx((4 / 6 + 2 / 100) / n_nz)
    assert r["MRE"] == pytest.approx((4 / 6 - 2 / 100) / n_nz)


def test_histogram_weighting():
    m = with_errors({(2, 3): 4, (10, 10): -2})
    ha, hw = np.zeros(256), np.zeros(256)
    ha[[2, 10]] = [3, 1]
    hw[[3, 10]] = [1, 1]
    r = error_metrics(m, False, False, ha, hw)
    # p(2,3) = 3/4 * 1/2, p(10,10) = 1/4 * 1/2
    assert r["ME"] == pytest.approx(3 / 8 * 4 - 1 / 8 * 2)
    assert r["MED"] == pytest.approx(3 / 8 * 4 + 1 / 8 * 2)
    assert r["EP"] == pytest.approx(0.5)
    assert r["MRED"] == pytest.approx(3 / 8 * 4 / 6 + 1 / 8 * 2 / 100)
    assert r["WCE"] == 4
    hw2 = np.zeros(256)
    hw2[10] = 5
    ha2 = np.zeros(256)
    ha2[10] = 1
    r2 = error_metrics(m, False, False, ha2, hw2)  # only (10, 10): WCE over the support only
    assert r2["WCE"] == 2 and r2["ME"] == -2 and r2["EP"] == 1


def test_signed_normaliser_and_patterns():
    m = with_errors({(0xFF, 0x80): 5})  # a = -1 (signed) x w = -128
    r = error_metrics(m, a_signed=True, w_signed=True)
    assert r["NMED"] == pytest.approx(5 / 65536 / 128 ** 2)
    assert r["MRED"] == pytest.approx(5 / 128 / (255 * 255))
    r = error_metrics(get_multiplier("exact"), a_signed=False, w_signed=True)
    assert all(v == 0 for v in r.values())


@pytest.mark.parametrize("j,k", [(0, 1), (2, 3), (4, 4), (0, 8)])
def test_perforation_nmed_formula(j, k):
    r = error_metrics(get_multiplier(f"perf_j{j}_k{k}"), a_signed=False, w_signed=False)
    assert r["NMED"] == pytest.approx(2 ** j * (2 ** k - 1) / (4 * 255), rel=1e-12)


def test_mitchell_mre():
    r = error_metrics(get_multiplier("mitchell"), False, False)
    assert round(100 * r["MRE"], 3) == -3.788 and r["ME"] < 0


@pytest.mark.parametrize("bad", [np.ones(255), -np.ones(256), np.zeros(256), np.full(256, np.nan)])
def test_bad_histograms(bad):
    with pytest.raises(DseError, match="hist_a"):
        error_metrics(get_multiplier("drum4"), hist_a=bad)


def test_float_multiplier_refused():
    with pytest.raises(DseError, match="floating-point"):
        error_metrics(get_multiplier("bf16"))
