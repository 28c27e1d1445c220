"""Error metrics of a multiplier table, optionally weighted by operand histograms.

``error_metrics(mult, a_signed=False, w_signed=True, hist_a=None, hist_w=None)`` with E = LUT - exact over the
256 x 256 pattern grid and pair weights ``p[a, w] = hist_a[a] hist_w[w] / (sum hist_a * sum hist_w)`` (uniform over all
patterns when a histogram is None; histograms are 256 non-negative counts indexed by the 8-bit pattern):

* ME = sum p E (bias); MED = MAE = sum p |E|; MSE = sum p E^2; VAR = MSE - ME^2 (variance of e);
* NMED = MED / max|exact| (max over the whole grid of the signedness pair: 255^2 unsigned, 255*128 uint8 x int8,
  128^2 int8 x int8), so NMED matches the literature's MED / (2^n - 1)^2 for unsigned operands;
* MRED = sum p |E|/|X| over pairs with X != 0, divided by the weight of those pairs; MRE the same without |.| on E
  (signed mean relative error, e.g. Mitchell's -3.788 %);
* WCE = max |E| over pairs with p > 0; EP = sum p [E != 0].

Relative power constants live in ``dse.arith.power.POWER_COMPONENTS`` next to the ``power_model`` that assigns
``Multiplier.rel_power``.
"""
from __future__ import annotations

import numpy as np

from dse.arith.multipliers import exact_table
from dse.errors import DseError

METRIC_KEYS = ("ME", "MED", "MAE", "NMED", "MRED", "MRE", "WCE", "EP", "MSE", "VAR")


def _hist(h, which: str, name: str) -> np.ndarray:
    if h is None:
        return np.ones(256, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (256,) or not np.all(np.isfinite(h)) or (h < 0).any() or h.sum() <= 0:
        raise DseError(f"error_metrics({name}): {which} must be 256 non-negative counts indexed by the 8-bit pattern "
                       f"with a positive sum, got shape {h.shape}")
    return h


def error_metrics(mult, a_signed: bool = False, w_signed: bool = True, hist_a=None, hist_w=None) -> dict:
    """Metrics dict (keys METRIC_KEYS, floats) of an int-domain multiplier for the signedness pair (module docstring)."""
    if mult.domain != "int":
        raise DseError(f"multiplier '{mult.name}' is a floating-point model; error metrics are defined on 8-bit tables")
    ha, hw = _hist(hist_a, "hist_a", mult.name), _hist(hist_w, "hist_w", mult.name)
    p = np.outer(ha / ha.sum(), hw / hw.sum())
    X = exact_table(a_signed, w_signed).astype(np.int64)
    E = mult.table(a_signed, w_signed).astype(np.int64) - X
    absE = np.abs(E)
    me = float((p * E).sum())
    med = float((p * absE).sum())
    mse = float((p * (E.astype(np.float64) ** 2)).sum())
    nz = X != 0
    pnz = float(p[nz].sum())
    mred = float((p[nz] * absE[nz] / np.abs(X[nz])).sum() / pnz) if pnz > 0 else 0.0
    mre = float((p[nz] * E[nz] / np.abs(X[nz])).sum() / pnz) if pnz > 0 else 0.0
    support = p > 0
    return {
        "ME": me, "MED": med, "MAE": med, "NMED": med / float(np.abs(X).max()),
        "MRED": mred, "MRE": mre, "WCE": float(absE[support].max()), "EP": float(p[E != 0].sum()),
        "MSE": mse, "VAR": max(mse - me * me, 0.0),
    }


def catalogue(a_signed: bool = False) -> list[dict]:
    """The rows of ``dse multipliers``: every built-in multiplier with family, domain, relative power (and its
    source), description and, for int-domain ones, the error metrics for ``a_signed`` activations x int8 weights."""
    from dse.arith.multipliers import get_multiplier, list_multipliers

    rows = []
    for name in list_multipliers():
        m = get_multiplier(name)
        row = {"name": name, "family": m.family, "domain": m.domain, "rel_power": m.rel_power,
               "power_source": m.params["power_source"], "description": m.description}
        if m.domain == "int":
            row.update(error_metrics(m, a_signed=a_signed, w_signed=True))
        rows.append(row)
    return rows
