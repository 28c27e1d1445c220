"""AME-style analytic accuracy predictor (design.md "AME-style predictor").

Per MAC layer l with reduction length K and multiplier error ``e(a, w) = LUT[a, w] - a*w``:

* ``ME_l, VE_l`` = mean and variance of ``e`` under the independent joint distribution ``p_a(a) p_w(w)`` of the
  layer's calibration activation histogram (``act_hist``, incl. padding zeros) and its weight-value histogram (from
  ``w_q``): exact weighted sums over the 256x256 pattern grid. With CV (see :mod:`dse.correction`) the statistics are
  those of the corrected residual ``e(a, w_fi) - alpha_f a - beta(w_fi)``: ``ME = 0`` (exact in mean) and
  ``VE = sum_w p_w(w) Var_a(e(a, w)) - mean_f(alpha_f^2) Var(a)``, i.e. ``K VE`` = mean over filters of the variance
  of the corrected output error for i.i.d. activations.
* ``bias_l = K ME_l``, ``noise_l = sqrt(K VE_l)``, normalised error magnitude
  ``d_l = sqrt(bias_l^2 + noise_l^2) / acc_std_l`` (RMS accumulator error in units of the exact accumulator std).
* ``AME(config) = sum_l d_l`` (exact layers contribute 0).

``acc_std_l`` is ``MacLayer.acc_std`` (std of the exact integer accumulators on calibration). Fallback when it is
missing, non-finite, <= 0 or exactly the dataclass default 1.0: the same std under the i.i.d. activation model with the
layer's real filters, ``sqrt(mean_f Var(a) S2_f + Var_f(E[a] S1_f))`` with ``S1_f = sum_i w_fi``, ``S2_f = sum_i
w_fi^2`` (reported as ``acc_std_source = "model"``).

:class:`AccuracyModel` maps AME to accuracy with ``acc = b0 + b1 AME + b2 AME^2`` fitted by least squares, constrained
to be non-increasing on ``[0, max fitted AME]``; beyond that range it extrapolates linearly with the end slope.

:class:`LogitSurrogate` ranks configurations much better than AME on real networks (AME: Spearman 0.5-0.8). It
measures, once per (layer, multiplier, cv) choice, the change of the logits on
a fixed set of images when only that layer is approximate (the same single-layer runs the knapsack seeds need); a
configuration's logits are predicted as the exact logits plus the sum of its layers' changes (first-order
perturbation), image by image, and its loss is the accuracy of those logits below the exact network's on the same
images. Summed changes overshoot large losses and a raw loss moves in whole images, so :class:`LossModel` maps four
features, the raw surrogate loss ``r``, a smooth margin-based soft loss, the RMS margin change with each layer's
gain divided out and the loss that RMS change means for the exact margins under Gaussian noise
(:func:`gaussian_loss`), through the monotone ``w0 r / (1 + c r) + w1 soft + w2 rms + w3 gauss`` (``w, c >= 0``
fitted on emulated configurations).

:class:`PropagatedSurrogate` represents what the sum cannot: errors compounding through the network (biased products
scale activations, scales compose by product; residual adds, ReLU and the calibrated requantization clip and shift).
It runs the network on the surrogate's images on the exact integer path and replaces each approximate layer's
accumulators by a :class:`ChannelErrorModel` of its multiplier (per output channel gain, offset and noise, fitted from
the layer alone on its exact inputs), through the emulator's accumulator hook; separable and low-rank tables, whose
kernels run at exact-path speed, run for real. Its features go through :class:`LossModel` like the logit surrogate's.

:class:`PredictorGate` refits the candidates (AME, the surrogates) on every measured point as the search's trials arrive,
keeps the one of better leave-one-out quality, and lets the search skip with it only while it passes the gate.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy.stats import norm, spearmanr

from dse.arith.multipliers import Multiplier, get_multiplier, pattern_values
from dse.correction import _act_pmf, _layer_key, _weight_patterns, cv_correction
from dse.errors import DseError, SettingError
from dse.layer_config import LayerConfig, check_layers, config_to_dict

if TYPE_CHECKING:
    from dse.session import DataRef

_STATS: dict = {}


def _resolve(mult) -> Multiplier:
    return mult if isinstance(mult, Multiplier) else get_multiplier(str(mult))


def _weight_pmf(wp: np.ndarray) -> np.ndarray:
    return np.bincount(wp.ravel(), minlength=256).astype(np.float64) / wp.size


def layer_error_stats(layer, mult, cv: bool = False) -> tuple[float, float]:
    """``(ME, VE)`` of the per-product error (or of the CV residual) of ``mult`` on ``layer``; cached."""
    mult = _resolve(mult)
    key = _layer_key(layer, mult, f"stats:{bool(cv)}")
    hit = _STATS.get(key)
    if hit is not None:
        return hit
    where = f"layer '{layer.name}'"
    if mult.domain != "int":
        raise DseError(f"{where}: multiplier '{mult.name}' has no 8-bit table; the AME predictor covers 8-bit "
                       "integer multipliers only")
    wp = _weight_patterns(layer)
    pa = _act_pmf(layer.act_hist, where)
    pw = _weight_pmf(wp)
    err = mult.error_table(layer.a_signed, True).astype(np.float64)   # [a, w]
    if not cv:
        me = float(pa @ err @ pw)
        ve = float(pa @ ((err - me) ** 2) @ pw)
    else:
        a = pattern_values(layer.a_signed).astype(np.float64)
        var_a = float(pa @ (a - pa @ a) ** 2)
        m1 = pa @ err                                                 # E_a e(a, w) per w
        var_e = pa @ ((err - m1[None, :]) ** 2)                       # Var_a e(a, w) per w
        alpha_f, _ = cv_correction(layer, mult)
        me = 0.0
        ve = float(pw @ var_e - np.mean(alpha_f ** 2) * var_a)
    res = (me, max(ve, 0.0))
    _STATS[key] = res
    return res


def model_acc_std(layer) -> float:
    """Exact-accumulator std under the i.i.d. activation model with the layer's filters (fallback for acc_std)."""
    pa = _act_pmf(layer.act_hist, f"layer '{layer.name}'")
    a = pattern_values(layer.a_signed).astype(np.float64)
    ma = float(pa @ a)
    var_a = float(pa @ (a - ma) ** 2)
    w = np.asarray(layer.w_q, dtype=np.float64).reshape(np.asarray(layer.w_q).shape[0], -1)
    s1, s2 = w.sum(axis=1), (w * w).sum(axis=1)
    return float(math.sqrt(np.mean(var_a * s2) + np.var(ma * s1)))


def layer_acc_std(layer) -> tuple[float, str]:
    """(acc_std, source): ``("calibration")`` if ``layer.acc_std`` is usable, else the model fallback."""
    s = getattr(layer, "acc_std", None)
    if s is not None and np.isfinite(s) and s > 0 and s != 1.0:
        return float(s), "calibration"
    m = model_acc_std(layer)
    return (m if m > 0 else 1.0), "model"


@dataclass
class LayerTerm:
    """One layer's contribution to AME under one (multiplier, cv) choice."""

    layer: str
    multiplier: str
    cv: bool
    K: int
    ME: float
    VE: float
    bias: float
    noise: float
    acc_std: float
    acc_std_source: str
    contrib: float  # sqrt(bias^2 + noise^2) / acc_std

    def to_dict(self) -> dict:
        return asdict(self)


def layer_term(layer, mult, cv: bool = False) -> LayerTerm:
    """Full per-layer AME term (ME, VE, bias, noise, normalisation, contribution)."""
    mult = _resolve(mult)
    if mult.is_exact:
        me, ve = 0.0, 0.0
    else:
        me, ve = layer_error_stats(layer, mult, cv)
    std, src = layer_acc_std(layer)
    bias, noise = layer.K * me, math.sqrt(layer.K * ve)
    return LayerTerm(layer.name, mult.name, bool(cv), int(layer.K), me, ve, bias, noise, std, src,
                     math.hypot(bias, noise) / std)


class AmePredictor:
    """AME of network configurations; per (layer, multiplier, cv) terms are computed once and cached, so a warm
    evaluation is a few dictionary look-ups (microseconds)."""

    def __init__(self, layers, multipliers=None):
        self.layers = list(layers)
        self._by_name = {l.name: l for l in self.layers}
        self._terms: dict = {}
        if multipliers:
            self.precompute(multipliers)

    def precompute(self, multipliers, cv=(False, True)) -> None:
        for l in self.layers:
            for m in multipliers:
                for c in cv:
                    self.term(l.name, m, c)

    def term(self, layer: str, multiplier: str, cv: bool) -> LayerTerm:
        key = (layer, multiplier, bool(cv))
        t = self._terms.get(key)
        if t is None:
            t = self._terms[key] = layer_term(self._by_name[layer], multiplier, cv)
        return t

    def _check(self, config: dict) -> None:
        check_layers(config, list(self._by_name), "configuration")

    def breakdown(self, config: dict) -> list[LayerTerm]:
        """Per-layer terms of ``config`` (missing layers exact), in execution order."""
        self._check(config)
        out = []
        for l in self.layers:
            lc = config.get(l.name, LayerConfig())
            out.append(self.term(l.name, lc.multiplier, lc.cv))
        return out

    def ame(self, config: dict) -> float:
        """AME = sum over layers of the normalised error magnitude."""
        s = 0.0
        terms = self._terms
        for name, lc in config.items():
            m, c = lc.multiplier, bool(lc.cv)
            t = terms.get((name, m, c))
            if t is None:
                if name not in self._by_name:
                    self._check({name: lc})
                t = self.term(name, m, c)
            s += t.contrib
        return s


def ame(layers, config: dict) -> float:
    """AME of ``config`` over ``layers`` (uses the module-level statistics cache)."""
    return AmePredictor(layers).ame(config)


SSE_TIE = 1e-12   # accuracies are fractions: fits whose squared errors differ by less than this are equally good


class AccuracyModel:
    """``accuracy ~ b0 + b1 AME + b2 AME^2``, non-increasing on ``[0, ame_max]``, linear beyond, clipped to [0, 1]."""

    def __init__(self, b0: float, b1: float, b2: float, ame_max: float, n_points: int = 0):
        self.b0, self.b1, self.b2 = float(b0), float(b1), float(b2)
        self.ame_max, self.n_points = float(ame_max), int(n_points)

    @classmethod
    def fit(cls, ames, accuracies) -> "AccuracyModel":
        """Least squares under ``d acc / d AME <= 0`` on ``[0, max AME]`` (active-set enumeration of the two
        endpoint constraints, which is exact for this convex problem). Needs >= 3 points with >= 2 distinct AMEs."""
        x = np.asarray(ames, dtype=np.float64).ravel()
        y = np.asarray(accuracies, dtype=np.float64).ravel()
        if x.shape != y.shape or x.size < 3:
            raise DseError(f"AccuracyModel.fit: need at least 3 (AME, accuracy) points, got {x.size}; emulate more "
                           "configurations")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x < 0):
            raise DseError("AccuracyModel.fit: AME values must be finite and >= 0 and accuracies finite")
        if np.unique(x).size < 2:
            raise DseError("AccuracyModel.fit: all configurations have the same AME; emulate configurations with "
                           "different multipliers")
        keep = np.ones((1, x.size), dtype=bool)
        b, xm = cls._fit_rows(x, y, keep, cls._distinct(x, keep))
        return cls(*b[0], ame_max=xm[0], n_points=x.size)

    @staticmethod
    def _distinct(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """How many distinct AMEs each row ``keep[i]`` of the mask fits on."""
        return np.array([np.unique(x[k]).size for k in keep])

    @staticmethod
    def _fit_rows(x: np.ndarray, y: np.ndarray, keep: np.ndarray,
                  distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The constrained fit of :meth:`fit` on the points ``keep[i]`` (``distinct[i]`` distinct AMEs,
        :meth:`_distinct`) for every row ``i`` of the mask at once:
        ``(b [rows, 3], max AME [rows])``. Each design is solved from its normal equations (a pseudo-inverse: the
        least-squares solution of least norm where a design is rank-deficient, e.g. two distinct AMEs), the feasible
        one of least SSE kept (the constant is always feasible). Designs that fit equally well (within
        :data:`SSE_TIE`) keep the earlier one, and a row with fewer than three distinct AMEs skips the free quadratic
        (it is underdetermined there, and every curve through the two means fits equally well): without both rules a
        rounding difference between two ways of summing the same points picked a different curve, and so a different
        extrapolation."""
        m, n = keep.shape
        xm = np.where(keep, x[None, :], -np.inf).max(1)
        determined = distinct >= 3
        one, xx = np.ones((m, n)), np.broadcast_to(x, (m, n))
        designs = [  # [row, point, terms] and (b0, b1, b2) from the coefficients: free quadratic; b1 = 0 (slope 0 at
            # AME 0); b1 = -2 b2 xm (slope 0 at the largest AME); constant
            (np.stack([one, xx, xx * xx], -1), lambda c: (c[:, 0], c[:, 1], c[:, 2])),
            (np.stack([one, xx * xx], -1), lambda c: (c[:, 0], 0 * c[:, 0], c[:, 1])),
            (np.stack([one, xx * xx - 2 * xm[:, None] * xx], -1), lambda c: (c[:, 0], -2 * xm * c[:, 1], c[:, 1])),
            (one[..., None], lambda c: (c[:, 0], 0 * c[:, 0], 0 * c[:, 0])),
        ]
        best_sse, best = np.full(m, np.inf), np.zeros((m, 3))
        for d, (A, unpack) in enumerate(designs):
            Ak = A * keep[..., None]
            c = np.einsum("nij,nj->ni", np.linalg.pinv(np.einsum("nji,njk->nik", Ak, Ak)),
                          np.einsum("nji,j->ni", Ak, y))
            b = np.stack(unpack(c), 1)
            ok = (b[:, 1] <= 1e-12) & (b[:, 1] + 2 * b[:, 2] * xm <= 1e-12) & (determined if d == 0 else True)
            sse = np.sum(keep * (b[:, :1] + b[:, 1:2] * x + b[:, 2:] * x * x - y) ** 2, 1)
            better = ok & (sse < best_sse - SSE_TIE)
            best_sse, best = np.where(better, sse, best_sse), np.where(better[:, None], b, best)
        return best, xm

    @staticmethod
    def loo_predictions(ames, accuracies) -> np.ndarray:
        """Leave-one-out predictions of :meth:`fit` (each point predicted by the model fitted without it), every
        refit at once (:meth:`_fit_rows`): the same numbers as refitting n times. Raises DseError where some refit
        would (fewer than 4 points, or a left-out point leaving one distinct AME)."""
        x, y = np.asarray(ames, np.float64).ravel(), np.asarray(accuracies, np.float64).ravel()
        n = x.size
        keep = ~np.eye(n, dtype=bool)                                       # [left out i, point j]
        distinct = AccuracyModel._distinct(x, keep)
        if n < 4 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x < 0) or np.any(distinct < 2):
            raise DseError("AccuracyModel.loo_predictions: every refit needs 3 finite points with 2 distinct AMEs >= 0")
        best, xm = AccuracyModel._fit_rows(x, y, keep, distinct)
        return np.array([AccuracyModel(*b, ame_max=m).predict(v) for b, m, v in zip(best, xm, x)])

    def predict(self, ame) -> np.ndarray | float:
        """Predicted accuracy in [0, 1]."""
        a = np.asarray(ame, dtype=np.float64)
        xm = self.ame_max
        inside = self.b0 + self.b1 * a + self.b2 * a * a
        y_end = self.b0 + self.b1 * xm + self.b2 * xm * xm
        outside = y_end + (self.b1 + 2 * self.b2 * xm) * (a - xm)
        r = np.clip(np.where(a <= xm, inside, outside), 0.0, 1.0)
        return float(r) if r.ndim == 0 else r

    def loss(self, ame) -> np.ndarray | float:
        """Predicted accuracy loss vs the all-exact network (``predict(0) - predict(ame)``, >= 0)."""
        r = np.maximum(self.predict(0.0) - np.asarray(self.predict(ame)), 0.0)
        return float(r) if r.ndim == 0 else r

    def to_dict(self) -> dict:
        return {"b0": self.b0, "b1": self.b1, "b2": self.b2, "ame_max": self.ame_max, "n_points": self.n_points}

    @classmethod
    def from_dict(cls, d: dict) -> "AccuracyModel":
        try:
            return cls(d["b0"], d["b1"], d["b2"], d["ame_max"], d.get("n_points", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise DseError(f"accuracy model: missing or bad key {exc}; expected b0, b1, b2, ame_max") from None


def loss_predictor(predictor: AmePredictor, model: AccuracyModel):
    """``config -> predicted accuracy loss (fraction)`` for the search's predictor hook."""
    return lambda config: float(model.loss(predictor.ame(config)))


# Accuracies and losses closer than this (as fractions) rank as ties: far below one image in 10^8, it only absorbs the
# rounding of float sums (a prediction summed in another order on another ISA), which must not order equal losses.
RANK_TIE = 1e-9


def _tie_classes(v: np.ndarray) -> np.ndarray:
    """v's values replaced by the index of their class, values whose sorted neighbours are within RANK_TIE joined."""
    u = np.unique(v)
    cls = np.concatenate(([0], np.cumsum(np.diff(u) > RANK_TIE)))
    return cls[np.searchsorted(u, v)].astype(np.float64)


def spearman(x, y) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr, average ranks for ties, values within RANK_TIE tied); nan
    if either side is constant."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError("spearman: need two sequences of equal length >= 2")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float(spearmanr(x, y).statistic)
    x, y = _tie_classes(x), _tie_classes(y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# a predictor the search may use to skip trials must rank and size losses this well (held-out / leave-one-out)
MIN_SPEARMAN = 0.9
MAX_MEAN_ERROR = 0.005   # fraction (0.5 pp)


@dataclass(frozen=True)
class LooQuality:
    """Leave-one-out quality of an AccuracyModel on its fit set (accuracies as fractions)."""

    spearman: float
    mean_error: float
    worst_error: float   # inf when the model cannot be refitted without some point

    @property
    def good_enough(self) -> bool:
        return bool(self.spearman >= MIN_SPEARMAN and self.mean_error <= MAX_MEAN_ERROR)

    @classmethod
    def of(cls, predicted, measured) -> "LooQuality":
        """Rank correlation, mean and worst absolute error of ``predicted`` against ``measured``."""
        p, y = np.asarray(predicted, float), np.asarray(measured, float)
        err = np.abs(p - y)
        return cls(spearman(p, y), float(err.mean()), float(err.max()))

    @classmethod
    def unfit(cls) -> "LooQuality":
        """The quality of a model that cannot be refitted without some point: never good enough."""
        return cls(float("nan"), float("inf"), float("inf"))

    def verdict(self) -> str:
        return (f"leave-one-out Spearman {self.spearman:.2f} (needs >= {MIN_SPEARMAN}), mean error "
                f"{100 * self.mean_error:.2f} pp (needs <= {100 * MAX_MEAN_ERROR:.1f} pp)")


def leave_one_out(fit: Callable[[np.ndarray, np.ndarray], Callable], x, y) -> LooQuality:
    """Refit ``fit(x, y) -> predict`` without each point in turn and predict it: rank correlation, mean and worst
    absolute error of the held-out predictions (a fit that fails without some point gives worst error inf)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    pred = np.empty_like(y)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        try:
            pred[i] = fit(x[keep], y[keep])(x[i])
        except DseError:
            return LooQuality.unfit()
    return LooQuality.of(pred, y)


def loo_quality(ames, accuracies) -> LooQuality:
    """Leave-one-out quality of the AME :class:`AccuracyModel` (accuracies predicted from AME), every refit at once
    (:meth:`AccuracyModel.loo_predictions`: the same numbers as refitting without each point)."""
    try:
        pred = AccuracyModel.loo_predictions(ames, accuracies)
    except DseError:
        return LooQuality.unfit()
    return LooQuality.of(pred, accuracies)


class LogitSurrogate:
    """First-order logit perturbation surrogate on a fixed set of images (see the module docstring).

    ``run(config) -> logits [n, classes]`` evaluates the network on the surrogate's images (any multiplier domain);
    ``labels`` are their classes. The exact logits are computed at construction, each (layer, multiplier, cv)
    change on first use and cached, so a warm prediction is a sum of a few arrays and one argmax."""

    def __init__(self, run: Callable[[dict], np.ndarray], labels, state: "SurrogateState | None" = None):
        self._run = run
        self.labels = np.asarray(labels)
        self.exact = np.asarray(run({}) if state is None else state.exact, dtype=np.float64)
        if self.exact.ndim != 2 or self.exact.shape[0] != self.labels.size or self.labels.size == 0:
            raise DseError(f"surrogate: logits of shape {self.exact.shape} for {self.labels.size} labels; need "
                           "[images, classes] with at least one image")
        if self.labels.min() < 0 or self.labels.max() >= self.exact.shape[1]:
            raise DseError(f"surrogate: labels outside the network's {self.exact.shape[1]} classes (0.."
                           f"{self.exact.shape[1] - 1}); check that the data set belongs to this model")
        self.acc_exact = float(np.mean(self.exact.argmax(1) == self.labels))
        self._deltas: dict[tuple, np.ndarray] = {}
        self._m0: np.ndarray | None = None
        self._scale_free_cache: dict[tuple, np.ndarray] = {}
        if state is not None:
            if state.deltas.shape[1:] != self.exact.shape or len(state.choices) != len(state.deltas):
                raise DseError(f"surrogate state: {len(state.choices)} choices, changes of shape "
                               f"{state.deltas.shape} for exact logits {self.exact.shape}; recompute it")
            self._deltas = {(str(l), str(m), bool(cv)): np.asarray(d, dtype=np.float64)
                            for (l, m, cv), d in zip(state.choices, state.deltas)}

    def state(self) -> "SurrogateState":
        """The measured logits (exact and every single-layer change so far) as arrays, to rebuild it elsewhere."""
        keys = sorted(self._deltas)
        deltas = np.stack([self._deltas[k] for k in keys]) if keys else np.zeros((0,) + self.exact.shape)
        return SurrogateState(self.exact, [list(k) for k in keys], deltas)

    @property
    def n_images(self) -> int:
        return int(self.labels.size)

    @property
    def measured(self) -> int:
        """(layer, multiplier, cv) choices measured so far (one network run each)."""
        return len(self._deltas)

    def delta(self, layer: str, lc: LayerConfig) -> np.ndarray:
        """Logit change when only ``layer`` runs ``lc`` (zero for exact)."""
        key = (layer, lc.multiplier, bool(lc.cv))
        d = self._deltas.get(key)
        if d is None:
            d = self._deltas[key] = np.asarray(self._run({layer: lc}), dtype=np.float64) - self.exact
        return d

    def has(self, layer: str, lc: LayerConfig) -> bool:
        """The change of this single-layer choice is measured already (no network run needed)."""
        return lc.multiplier == "exact" or (layer, lc.multiplier, bool(lc.cv)) in self._deltas

    def accuracy(self, logits: np.ndarray) -> float:
        return float(np.mean(logits.argmax(1) == self.labels))

    def single_loss(self, layer: str, lc: LayerConfig) -> float:
        """Measured accuracy loss (fraction) when only ``layer`` runs ``lc``: the knapsack's layer sensitivity."""
        return self.acc_exact - self.accuracy(self.exact + self.delta(layer, lc))

    def logits(self, config: dict) -> np.ndarray:
        """Predicted logits of ``config``: the exact logits plus the summed single-layer changes."""
        logits = self.exact.copy()
        for name, lc in config.items():
            if lc.multiplier != "exact":
                logits += self.delta(name, lc)
        return logits

    def raw_loss(self, config: dict) -> float:
        """Surrogate loss of ``config``: accuracy of exact logits plus the summed single-layer changes, below exact."""
        return self.acc_exact - self.accuracy(self.logits(config))

    def margins(self, logits: np.ndarray) -> np.ndarray:
        """Per image: the true class's logit minus the largest other one (> 0: right)."""
        return margins(logits, self.labels)

    def features(self, config: dict) -> np.ndarray:
        """``[raw loss, soft loss, scale-free RMS margin change, its Gaussian loss, churn]`` of ``config`` (the
        inputs of :class:`LossModel`; the churn, the share of images whose correctness changed, only sizes the raw
        loss's counting noise).
        The soft loss is the expected loss when every image's predicted margin is uncertain by the configuration's own
        RMS margin change ``s`` (first-order error grows with the perturbation): ``mean Phi(-m / s) - mean Phi(-m0 /
        s)``; it is smooth where the raw loss moves in steps of one image. The third is the RMS change of the margins
        when each layer's gain is divided out of its change before summing (:meth:`_scale_free`), the fourth the
        loss it means for the exact margins (:func:`gaussian_loss`)."""
        logits = self.logits(config)
        if self._m0 is None:
            self._m0 = self.margins(self.exact)
        m0 = self._m0
        soft, _ = soft_loss(self.margins(logits), m0)
        z = self.exact.copy()
        for name, lc in config.items():
            if lc.multiplier != "exact":
                z += self._scale_free(name, lc)
        rms = float(np.sqrt(np.mean((self.margins(z) - m0) ** 2)))
        return np.array([self.acc_exact - self.accuracy(logits), soft, rms, gaussian_loss(m0, rms),
                         churn(logits, self.labels, m0)])

    def _scale_free(self, layer: str, lc: LayerConfig) -> np.ndarray:
        """The single-layer change with the layer's per-image gain divided out: ``(exact + delta) / g - exact``,
        ``g`` the least-squares gain of the approximate logits on the exact ones (positive gains only; a biased
        multiplier scales the logits, and scales compose by product, not by sum)."""
        key = (layer, lc.multiplier, bool(lc.cv))
        d = self._scale_free_cache.get(key)
        if d is None:
            approx = self.exact + self.delta(layer, lc)
            g = np.sum(approx * self.exact, 1, keepdims=True) / np.maximum(np.sum(self.exact ** 2, 1, keepdims=True),
                                                                              1e-30)
            d = self._scale_free_cache[key] = approx / np.where(g > 0.05, g, 1.0) - self.exact
        return d


def soft_loss(m: np.ndarray, m0: np.ndarray) -> tuple[float, float]:
    """``(soft loss, s)`` of predicted margins ``m`` against the exact ones ``m0``: the expected loss when every
    image's margin is uncertain by the RMS margin change ``s``, ``mean Phi(-m / s) - mean Phi(-m0 / s)`` (smooth where
    a counted loss moves in steps of one image)."""
    s = float(np.sqrt(np.mean((m - m0) ** 2)))
    return (0.0 if s == 0 else float(np.mean(norm.cdf(-m / s)) - np.mean(norm.cdf(-m0 / s)))), s


def gaussian_loss(m0: np.ndarray, s: float) -> float:
    """The expected share of the images right at exact (margin ``m0 > 0``) that turn wrong when every margin moves by
    independent Gaussian noise of the RMS margin change ``s``: ``mean Phi(-m0 / s) [m0 > 0]``. It depends on the
    configuration through ``s`` alone, so it ranks like ``s`` and is as smooth, but it has the shape of a loss: 0 at
    ``s = 0``, near zero while ``s`` is small next to the margins, growing as it reaches them (the raw and soft losses,
    counted on a few hundred images, are steps and noise at losses under a few pp). Wrong images turning right are
    left out: approximate arithmetic rarely mends a misclassification, and symmetric noise would credit it with
    mending some of them at every ``s``."""
    if s <= 0:
        return 0.0
    return float(np.mean(np.where(m0 > 0, norm.cdf(-m0 / s), 0.0)))


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: the true class's logit minus the largest other one (> 0: right)."""
    rows = np.arange(labels.size)
    other = logits.copy()
    other[rows, labels] = -np.inf
    return logits[rows, labels] - other.max(axis=1)


def churn(logits: np.ndarray, labels: np.ndarray, m0: np.ndarray) -> float:
    """The share of the images whose correctness differs between ``logits`` and the exact network (exact margins
    ``m0``: right where > 0): the raw loss's per-image differences are -1, 0 or 1, so its counting variance on n
    images is ``(churn - raw^2) / n``."""
    return float(np.mean((logits.argmax(1) == labels) != (m0 > 0)))


@dataclass(frozen=True)
class ChannelErrorModel:
    """One approximate layer's accumulators as a statistical function of the exact ones, per output channel ``c``:
    ``acc' = gain[c] * acc + offset[c] + std[c] * eps`` (``eps`` standard normal, independent per output). Fitted by
    least squares on the layer's (exact, approximate) accumulators of the same inputs; a channel whose exact
    accumulators are constant keeps gain 1."""

    gain: np.ndarray
    offset: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, exact: np.ndarray, approx: np.ndarray) -> "ChannelErrorModel":
        """From accumulators ``[B, N, ...]`` of the exact and the approximate layer (channel axis 1)."""
        n = exact.shape[1]
        x = np.moveaxis(np.asarray(exact, np.float64), 1, 0).reshape(n, -1)
        y = np.moveaxis(np.asarray(approx, np.float64), 1, 0).reshape(n, -1)
        mx, my = x.mean(1), y.mean(1)
        dx, dy = x - mx[:, None], y - my[:, None]
        vx = np.einsum("ij,ij->i", dx, dx)
        g = np.where(vx > 0, np.einsum("ij,ij->i", dx, dy) / np.where(vx > 0, vx, 1.0), 1.0)
        b = my - g * mx
        r = y - g[:, None] * x - b[:, None]
        return cls(g, b, np.sqrt(np.mean(r * r, axis=1)))

    @classmethod
    def identity(cls, channels: int) -> "ChannelErrorModel":
        return cls(np.ones(channels), np.zeros(channels), np.zeros(channels))

    def apply(self, acc: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """The modelled accumulators (float64) of exact ones ``acc`` [B, N, ...] with noise ``eps`` of that shape."""
        sh = (1, -1) + (1,) * (acc.ndim - 2)
        return self.gain.reshape(sh) * acc + self.offset.reshape(sh) + self.std.reshape(sh) * eps


NOISE_POOL_BYTES = 256 << 20   # the propagated surrogate keeps each layer's noise for all its images up to this
FIT_INPUT_BYTES = 64 << 20     # its error models are fitted on the layers' inputs of the first images up to this


class PropagatedSurrogate:
    """Accuracy of a configuration predicted by propagating per-layer error models through the network.

    Each approximate (layer, multiplier, cv) choice is a :class:`ChannelErrorModel`, fitted once from the layer alone:
    its exact and approximate accumulators on the layer's quantized inputs of the all-exact run on the surrogate's
    first ``fit_images`` images (as many as ``fit_bytes`` of recorded inputs hold; no network run per choice). A configuration runs the network on those images on the exact integer path
    with each approximate layer's accumulators replaced by its model's (``Emulator.run``'s accumulator hook), so
    errors compound through later layers, residual adds, ReLU and the calibrated requantization as in emulation;
    ``eps`` is fixed per (layer, image) (Philox keyed by ``seed``, layer, image), so a prediction is deterministic
    and independent of the thread count. :meth:`features` gives ``[raw loss, soft loss, RMS margin change, Gaussian
    loss]`` of the
    predicted logits for :class:`LossModel`."""

    def __init__(self, emulator, x: np.ndarray, labels, seed: int = 0, pool_bytes: int = NOISE_POOL_BYTES,
                 direct_paths: tuple = ("lowrank",), fit_bytes: int = FIT_INPUT_BYTES,
                 check: Callable[[], None] | None = None, batch_size: int = 256):
        """``check()`` is called before each ``batch_size`` images of the all-exact run the surrogate is built on and
        may raise to stop the build there (the search's deadline: dse.search.deadline.Deadline.check)."""
        from dse.emulate import MacCall

        self.emulator, self.x, self.labels, self.seed = emulator, x, np.asarray(labels), int(seed)
        self.direct_paths = tuple(direct_paths)
        if len(self.x) != self.labels.size or self.labels.size == 0:
            raise DseError(f"propagated surrogate: {len(self.x)} images for {self.labels.size} labels; need as many "
                           "labels as images, at least one")
        per_image = sum(int(np.prod(l.in_shape)) for l in emulator.layers.values())
        self.fit_images = int(min(len(x), max(1, fit_bytes // max(per_image, 1))))
        self._inputs: dict[str, list] = {}

        def record(at: int):
            def hook(call: MacCall, acc: np.ndarray) -> np.ndarray:
                first = at + call.images.start
                keep = self.fit_images - first
                if keep > 0:
                    self._inputs.setdefault(call.layer.name, []).append((first, call.q[:keep].copy()))
                return acc
            return hook
        parts = []
        for at in range(0, len(x), max(1, int(batch_size))):
            if check is not None:
                check()
            parts.append(emulator.run(x[at:at + batch_size], {}, batch_size, hook=record(at)))
        self.exact = np.concatenate(parts).astype(np.float64)
        self.q = {k: np.concatenate([q for _, q in sorted(v, key=lambda t: t[0])]) for k, v in self._inputs.items()}
        del self._inputs
        self.acc_exact = float(np.mean(self.exact.argmax(1) == self.labels))
        self.m0 = margins(self.exact, self.labels)
        self._index = {name: i for i, name in enumerate(emulator.layers)}
        self._models: dict[tuple, ChannelErrorModel] = {}
        self._noise: dict[str, np.ndarray] = {}
        self._pool_left = int(pool_bytes)
        self._features: dict[tuple, np.ndarray | None] = {}
        self._direct: dict[tuple, bool] = {}

    @property
    def n_images(self) -> int:
        return int(self.labels.size)

    @property
    def fitted(self) -> int:
        """(layer, multiplier, cv) choices modelled so far (one layer computation each)."""
        return len(self._models)

    def model(self, layer: str, lc: LayerConfig) -> ChannelErrorModel:
        """The error model of ``layer`` under ``lc`` (fitted on first use)."""
        key = (layer, lc.multiplier, bool(lc.cv))
        m = self._models.get(key)
        if m is None:
            q = self.q[layer]
            exact = self.emulator.layer_accumulator(layer, q, LayerConfig())
            m = self._models[key] = ChannelErrorModel.fit(exact, self.emulator.layer_accumulator(layer, q, lc))
        return m

    def _eps(self, layer: str, images: range, shape: tuple) -> np.ndarray:
        """Standard normal noise [len(images), *shape] of ``layer``: one Philox stream per (seed, layer, image)."""
        pool = self._noise.get(layer)
        if pool is not None:
            return pool[images.start:images.stop]
        key = (self.seed << 64) | (self._index[layer] << 32)
        return np.stack([np.random.Generator(np.random.Philox(key=key | i)).standard_normal(shape, np.float32)
                         for i in images])

    def _pool(self, layer: str, shape: tuple) -> None:
        """Keep ``layer``'s noise for every image while the pool's byte budget lasts (before a run: read-only in it)."""
        size = self.n_images * int(np.prod(shape)) * 4
        if layer not in self._noise and size <= self._pool_left:
            self._noise[layer] = self._eps(layer, range(self.n_images), shape)
            self._pool_left -= size

    def in_domain(self, config: dict) -> bool:
        """Every approximate layer of ``config`` is a conv/gemm layer with an 8-bit table multiplier."""
        layers = self.emulator.layers
        for name, lc in config.items():
            if lc.multiplier == "exact":
                continue
            if name not in layers:
                check_layers([name], list(layers), "configuration")
            if layers[name].op == "matmul" or get_multiplier(lc.multiplier).domain != "int":
                return False
        return True

    def logits(self, config: dict) -> np.ndarray:
        """Predicted logits of ``config`` on the surrogate's images (float32)."""
        from dse.emulate import MacCall

        approx = {name: lc for name, lc in config.items() if lc.multiplier != "exact"}
        direct = {name: lc for name, lc in approx.items() if self.direct(name, lc)}
        models = {name: self.model(name, lc) for name, lc in approx.items() if name not in direct}
        for name in models:
            self._pool(name, self.emulator.layers[name].out_shape)

        def inject(call: MacCall, acc: np.ndarray) -> np.ndarray:
            m = models.get(call.layer.name)
            if m is None:
                return acc
            return m.apply(acc, self._eps(call.layer.name, call.images, acc.shape[1:]))
        return self.emulator.run(self.x, direct, hook=inject)

    def direct(self, layer: str, lc: LayerConfig) -> bool:
        """``layer`` under ``lc`` runs its real multiplier: its table's kernel path is a few GEMMs at exact-path speed
        (dse.kernels.select_path "lowrank": separable and low-rank tables), and ``direct_paths`` allows it."""
        from dse.kernels import select_path

        key = (layer, lc.multiplier)
        d = self._direct.get(key)
        if d is None:
            l = self.emulator.layers[layer]
            d = self._direct[key] = select_path(get_multiplier(lc.multiplier), l.a_signed, l.K) in self.direct_paths
        return d

    @staticmethod
    def _key(config: dict) -> tuple:
        return tuple(sorted((n, lc.multiplier, bool(lc.cv)) for n, lc in config.items() if lc.multiplier != "exact"))

    def at_hand(self, config: dict) -> bool:
        """:meth:`features` of ``config`` were computed already (no network run needed)."""
        return self._key(config) in self._features

    def features(self, config: dict) -> np.ndarray | None:
        """``[raw loss, soft loss, RMS margin change, its Gaussian loss, churn]`` of the predicted logits (None
        outside :meth:`in_domain`; :meth:`LogitSurrogate.features`); cached per configuration."""
        key = self._key(config)
        if key in self._features:
            return self._features[key]
        if not self.in_domain(config):
            f = None
        else:
            logits = np.asarray(self.logits(config), np.float64)
            soft, s = soft_loss(margins(logits, self.labels), self.m0)
            f = np.array([self.acc_exact - float(np.mean(logits.argmax(1) == self.labels)), soft, s,
                          gaussian_loss(self.m0, s), churn(logits, self.labels, self.m0)])
        self._features[key] = f
        return f


@dataclass
class SurrogateState:
    """A :class:`LogitSurrogate`'s measurements: exact logits [n, classes], the (layer, multiplier, cv) choices and
    their logit changes [choices, n, classes] (plain arrays and a JSON-able list: no pickling needed)."""

    exact: np.ndarray
    choices: list
    deltas: np.ndarray


def _subsets(k: int) -> list[np.ndarray]:
    """Every non-empty subset of ``k`` columns as an index array."""
    return [np.flatnonzero([(s >> j) & 1 for j in range(k)]) for s in range(1, 2 ** k)]


def _nnls(ata: np.ndarray, aty: np.ndarray, yty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares from the normal equations, vectorised over leading axes: ``ata [..., k, k]``,
    ``aty [..., k]``, ``yty [...]`` -> (coefficients [..., k], SSE [...]). Every support is solved unconstrained and
    the feasible solution of least SSE kept: the NNLS optimum is the least-squares fit on its own support, so this
    enumeration is exact (k is small: a handful of features)."""
    k = aty.shape[-1]
    best_c, best_sse = np.zeros_like(aty), np.array(yty, dtype=float, copy=True)
    for idx in _subsets(k):
        sub = ata[..., idx[:, None], idx[None, :]]
        # a relative ridge of 1e-12 on the diagonal: an all-zero or repeated feature column gets the minimum-norm
        # split (as a pseudo-inverse would), at the cost of a batched LU solve instead of an SVD per matrix
        diag = np.einsum("...ii->...i", sub)
        sub = sub + np.eye(idx.size) * (1e-12 * diag + 1e-300)[..., None, :]
        cs = np.linalg.solve(sub, aty[..., idx][..., None])[..., 0]
        c = np.zeros_like(aty)
        c[..., idx] = cs
        ok = np.all(cs >= 0, axis=-1)
        sse = yty - 2 * np.sum(c * aty, -1) + np.einsum("...i,...ij,...j->...", c, ata, c)
        better = ok & (sse < best_sse - 1e-18)
        best_c = np.where(better[..., None], c, best_c)
        best_sse = np.where(better, sse, best_sse)
    return best_c, best_sse


# a surrogate's counted features (its raw loss, the soft loss) enter its LossModel only where the raw loss's spread over
# the fitted points is at least this much more than counting noise; below it the model is the smooth features alone
RAW_RELIABILITY = 0.9
COUNTED = 2   # the counted features are the first two of a surrogate's rows (LogitSurrogate.features)
FEATURES = 4  # a row's features for the model; a fifth column is the churn (sizes the count's noise only)


def count_reliability(raw, images: int, churn=None) -> float:
    """The share of the raw losses' variance over ``raw`` (one per configuration, fractions counted on ``images``
    images) that is not counting noise: ``1 - mean counting variance / variance``, clipped to [0, 1] (0 for fewer
    than two values or none spread). The counting variance of a raw loss is ``(churn - raw^2) / images`` with its
    ``churn`` (:func:`churn`: images turned wrong and turned right both count); without churns, the binomial
    ``raw (1 - raw) / images`` of the losses clipped at 0 (at least one image's worth), which misses the images turned
    right. Label-free: the measured losses do not enter it, so a leave-one-out fit may use it over all the rows."""
    r = np.asarray(raw, float)
    if r.size < 2:
        return 0.0
    if churn is None:
        r = np.maximum(r, 0.0)
        noise = np.maximum(r * (1.0 - r), 1.0 / images) / images
    else:
        noise = np.maximum(np.asarray(churn, float) - r * r, 0.0) / images
    spread = float(np.var(r))
    return float(np.clip(1.0 - noise.mean() / spread, 0.0, 1.0)) if spread > 0 else 0.0


@dataclass(frozen=True)
class LossModel:
    """Predicted loss from the surrogate's features ``[raw, soft, gain-normalised RMS, its Gaussian loss]``
    (:meth:`LogitSurrogate.features`): ``w0 r / (1 + c r) + w1 soft + w2 rms + w3 gauss`` with every ``w >= 0`` and
    ``c >= 0``, so it is non-decreasing in each feature and, outside ``smooth`` below, never below 0 (a feature below
    0 counts as 0). Summed single-layer changes overshoot large losses; ``c`` bends them back, the smooth features
    carry what the raw loss (whole images) cannot resolve.

    ``images`` (the surrogate's image count; None: not known): where the raw losses of the fitted rows are mostly
    counting noise (:func:`count_reliability` below :data:`RAW_RELIABILITY`, with the rows' churns when they carry
    them as a fifth column: configurations a few images apart on a few hundred, or many images turned wrong and as
    many turned right), the counted features (raw and soft loss) leave the model (``smooth``): it is then ``b + w2 rms
    + w3 gauss`` with a free-sign ``b`` in their place, which ranks like the RMS margin change and may predict a loss
    below 0 (measured losses that small are below 0 as often as above: without ``b`` a network whose approximate
    configurations often measure better than exact gets all weights 0); least squares on noisy losses would otherwise
    give the count a weight and its noise with it."""

    c: float = 0.0
    w: tuple = (1.0, 0.0, 0.0, 0.0)
    smooth: bool = False
    C_GRID = (0.0, *np.geomspace(0.5, 1000.0, 24).tolist())   # 1 / fraction; 1000: flat beyond about 0.1 pp

    def __call__(self, features) -> float:
        f = np.maximum(np.asarray(features, float)[:len(self.w)], 0.0)
        if self.smooth:
            f[:COUNTED] = (1.0, -1.0)
        r = float(f[0])
        return float(self.w[0] * r / (1.0 + self.c * r) + np.dot(self.w[1:], f[1:]))

    @staticmethod
    def _design(X: np.ndarray, smooth: bool = False) -> np.ndarray:
        """[c, points, features]: the bent raw loss for every c of the grid, then the other features; a feature below
        0 (a surrogate whose few hundred images came out better than exact: sampling noise) counts as 0. ``smooth``:
        the counted columns are the intercept's, +1 (bent: a constant for every c) and -1, so that ``b`` takes either
        sign with every weight >= 0."""
        X = np.maximum(X[:, :FEATURES], 0.0)
        if smooth:
            X[:, :COUNTED] = (1.0, -1.0)
        r = X[:, 0]
        c = np.asarray(LossModel.C_GRID)[:, None]
        bent = r[None, :] / (1.0 + c * r[None, :])
        rest = np.broadcast_to(X[None, :, 1:], (c.size,) + X[:, 1:].shape)
        return np.concatenate([bent[..., None], rest], -1)

    @staticmethod
    def _smooth_only(X: np.ndarray, images: int | None) -> bool:
        """The counted features leave the model: ``images`` is given and the raw losses' reliability over the rows
        is below :data:`RAW_RELIABILITY`."""
        churns = X[:, FEATURES] if X.shape[1] > FEATURES else None
        return (images is not None and X.shape[1] > COUNTED
                and count_reliability(X[:, 0], images, churns) < RAW_RELIABILITY)

    @classmethod
    def fit(cls, X, y, images: int | None = None) -> "LossModel":
        """Least squares over ``w >= 0`` for every ``c`` of a log grid, the best ``c`` kept (``images``: the class
        docstring)."""
        X, y = np.atleast_2d(np.asarray(X, float)), np.asarray(y, float)
        if X.shape[0] < 2 or X.shape[0] != y.size:
            raise DseError(f"LossModel.fit: need at least 2 feature rows and their losses, got {X.shape}")
        smooth = cls._smooth_only(X, images)
        A = cls._design(X, smooth)
        coef, sse = _nnls(np.einsum("cni,cnj->cij", A, A), np.einsum("cni,n->ci", A, y),
                          np.full(len(cls.C_GRID), float(y @ y)))
        k = int(np.argmin(sse))
        return cls(float(cls.C_GRID[k]), tuple(float(v) for v in coef[k]), smooth)

    @classmethod
    def loo_predictions(cls, X, y, images: int | None = None) -> np.ndarray:
        """Leave-one-out predictions of :meth:`fit` (each point predicted by the model fitted without it), computed
        by downdating the normal equations: the same numbers as refitting n times, in one vectorised pass (with
        ``images``, the counted features' weight decided once over all the rows: it does not depend on the losses)."""
        X, y = np.atleast_2d(np.asarray(X, float)), np.asarray(y, float)
        A = cls._design(X, cls._smooth_only(X, images))                                            # [c, n, k]
        outer = np.einsum("cni,cnj->cnij", A, A)
        ata = outer.sum(1, keepdims=True) - outer                        # [c, n, k, k] without point n
        aty = (A * y[None, :, None]).sum(1, keepdims=True) - A * y[None, :, None]
        coef, sse = _nnls(ata, aty, float(y @ y) - y[None, :] ** 2)
        k = np.argmin(sse, axis=0)                                       # best c per left-out point
        n = np.arange(y.size)
        return np.einsum("ni,ni->n", A[k, n], coef[k, n])


def surrogate_quality(features, measured, images: int | None = None) -> LooQuality:
    """Leave-one-out quality of the surrogate's :class:`LossModel` on (features, measured loss) pairs (``images``:
    the surrogate's, :class:`LossModel`)."""
    X, y = np.atleast_2d(np.asarray(features, float)), np.asarray(measured, float)
    if y.size < 3:
        return LooQuality.unfit()
    return LooQuality.of(LossModel.loo_predictions(X, y, images), y)


@dataclass(frozen=True)
class Candidate:
    """One loss predictor the gate can refit: ``features(config)`` (None: it cannot predict this configuration) and
    ``quality(X, y)``/``fit(X, y)`` on the feature rows and measured losses (fractions) of the points so far.
    ``at_hand(config)``: its features of ``config`` need no network run (None: they never do); the gate computes those
    of a candidate that needs runs only on a schedule (:data:`COSTLY_EVERY`)."""

    kind: str
    features: Callable[[dict], np.ndarray | None]
    fit: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], float]]
    quality: Callable[[np.ndarray, np.ndarray], LooQuality]
    at_hand: Callable[[dict], bool] | None = None


def loss_model_candidate(kind: str, features: Callable[[dict], np.ndarray | None], images: int | None,
                         at_hand: Callable[[dict], bool] | None = None) -> Candidate:
    """A surrogate's features through :class:`LossModel` (``images``: the surrogate's image count, for the counted
    features' reliability; None: the losses it is fitted on are measured on the surrogate's own images, so its count
    has no sampling error against them)."""
    return Candidate(kind, features, lambda X, y: LossModel.fit(X, y, images),
                     lambda X, y: surrogate_quality(X, y, images), at_hand)


def surrogate_candidate(sur: LogitSurrogate) -> Candidate:
    return loss_model_candidate("logit surrogate", sur.features, sur.n_images,
                                lambda c: all(sur.has(n, lc) for n, lc in c.items()))


def propagated_candidate(sur: PropagatedSurrogate) -> Candidate:
    return loss_model_candidate("propagated surrogate", sur.features, sur.n_images, sur.at_hand)


def ame_quality(X, y) -> LooQuality:
    """Leave-one-out quality of the AME loss model on AME rows ``X`` [n, 1] and measured losses ``y``
    (:meth:`AccuracyModel.loo_predictions` on ``1 - y``)."""
    y = np.asarray(y, float)
    try:
        pred = 1.0 - AccuracyModel.loo_predictions(np.asarray(X, float)[:, 0], 1.0 - y)
    except DseError:
        return LooQuality.unfit()
    return LooQuality.of(pred, y)


def ame_candidate(pred: AmePredictor, domain: Callable[[dict], bool]) -> Candidate:
    """The AME predictor as a loss predictor: ``loss ~ -(b1 AME + b2 AME^2)`` (:class:`AccuracyModel` on ``1 - loss``);
    ``domain(config)`` says whether every multiplier of ``config`` has an AME (8-bit tables)."""
    def fit(X, y):
        m = AccuracyModel.fit(X[:, 0], 1.0 - y)
        return lambda f: 1.0 - float(m.predict(f[0]))
    return Candidate("AME", lambda c: np.array([pred.ame(c)]) if domain(c) else None, fit, ame_quality)


MIN_GATE_POINTS = 8   # fewer measured points than this: no leave-one-out verdict, the predictor is not used
# a candidate whose features need network runs (a propagated prediction costs about a third of a trial) gets those
# of every trial while it has fewer than COSTLY_WARMUP of them, then of every COSTLY_EVERY-th, and of every trial it
# predicted before it was measured (the gate's kept candidate: at hand)
COSTLY_WARMUP = 2 * MIN_GATE_POINTS
COSTLY_EVERY = 4
TRIAL_WINDOW = 20     # the gate's record on trials: its predictions of the latest this many measured points
GATE_HOLD = 5         # after switching off, the gate switches on again only once it passed the bar on this many
                      # refits in a row (a record hovering at the bar would switch it on and off at every point)
GATE_FOCUS = 2.0      # the search's gate judges its predictors on trials within this many times its skip line
ENSEMBLE_SPEARMAN = 0.1   # the gate's prediction averages the kept candidate with those as good enough as it and
                          # within this of its leave-one-out Spearman (differences that small are the search's noise)


def prediction_quality(predicted, measured) -> LooQuality | None:
    """Rank correlation, mean and worst absolute error of predictions against the losses measured afterwards (pairs
    with a prediction only); None below :data:`MIN_GATE_POINTS` such pairs."""
    p, y = np.asarray(predicted, float), np.asarray(measured, float)
    ok = np.isfinite(p)
    if ok.sum() < MIN_GATE_POINTS:
        return None
    return LooQuality.of(p[ok], y[ok])


@dataclass
class GateState:
    """What the gate decided after its latest refit (JSON-friendly through :meth:`to_dict`): the kept candidate and
    its leave-one-out ``quality`` on the points, and the gate's ``record`` on trials: how the predictions it made of
    the latest measured points before they were measured (whichever candidate it kept then) compare with their
    measured losses (None until :data:`MIN_GATE_POINTS` of them). ``active``: both pass the bar."""

    kind: str | None
    points: int
    quality: LooQuality | None
    active: bool
    candidates: dict
    record: LooQuality | None = None
    record_points: int = 0
    held: int = 0   # off although it passes the bar: refits in a row it passed since a switch-off (< GATE_HOLD)

    def line(self) -> str:
        """One line for the progress display and the report."""
        if self.quality is None:
            return f"predictor off: {self.points} measured points, needs {MIN_GATE_POINTS} with a usable fit"
        state = "on" if self.active else "off"
        rec = ("" if self.record is None else
               f"; predicted before measuring on the latest {self.record_points} trials: Spearman "
               f"{self.record.spearman:.2f}, mean error {100 * self.record.mean_error:.2f} pp")
        held = (f"; held off since it switched off until it passes on {GATE_HOLD} points in a row ({self.held} so far)"
                if self.held else "")
        return f"predictor {state}: {self.kind} on {self.points} points, {self.quality.verdict()}{rec}{held}"

    def to_dict(self) -> dict:
        q, r = self.quality, self.record
        return {"kind": self.kind, "points": self.points, "active": self.active,
                "loo_spearman": None if q is None else q.spearman, "loo_mean_error": None if q is None else q.mean_error,
                "loo_margin": None if q is None else q.worst_error, "candidates": self.candidates,
                "trial_spearman": None if r is None else r.spearman,
                "trial_mean_error": None if r is None else r.mean_error, "trial_points": self.record_points}


class PredictorGate:
    """Loss predictors refitted on every measured ``(config, loss)`` point (the set-up's fit configurations, then
    each full-fidelity trial as it completes). After each refit the candidate with the better leave-one-out quality
    (good enough first, then Spearman, then mean error) is kept, and it predicts only while that quality passes the
    gate (:data:`MIN_SPEARMAN`, :data:`MAX_MEAN_ERROR`, at least :data:`MIN_GATE_POINTS` points) and so does the
    gate's record on trials: once the fit stands on the search's own points, each new point is first predicted by
    the predictor kept before it arrived, and the latest :data:`TRIAL_WINDOW` such predictions are scored against
    the measured losses (:func:`prediction_quality`): a predictor that stops ranking well is switched off at the next
    point, one that starts to is switched on; after a switch-off, only once it passed on ``hold`` refits in a row
    (:data:`GATE_HOLD`: the bar is never lowered, the gate only stays off longer, so a record hovering at the bar does
    not switch it on and off at every point).

    ``focus`` (a loss, e.g. twice the search's skip line): once at least ``min_points`` usable points were measured
    within it, the candidates are fitted and judged on those alone, and so is the record: the skip decisions are
    made there, and configurations tens of pp beyond it (which any candidate puts over the skip line) would
    otherwise dominate the least-squares fit and the rank correlation.

    ``gate(config)`` is the conservative loss the search skips with (the prediction minus the kept candidate's worst
    leave-one-out error; None while off or when the kept predictor cannot predict ``config``); ``predicted(config)``
    the plain prediction whether on or off (recorded beside the measured loss): the kept candidate's, averaged with
    those of the candidates as good enough as it and within ``ensemble`` (:data:`ENSEMBLE_SPEARMAN`; 0: none) of its
    leave-one-out Spearman whose features of ``config`` are at hand (their leave-one-out Spearmans differ by less
    than the search's measurements can tell apart, so switching between them would add noise, not information)."""

    def __init__(self, candidates: list[Candidate], min_points: int = MIN_GATE_POINTS, focus: float | None = None,
                 hold: int = GATE_HOLD, ensemble: float = ENSEMBLE_SPEARMAN):
        self.candidates, self.min_points, self.focus, self.hold = list(candidates), int(min_points), focus, int(hold)
        self.ensemble = float(ensemble)   # 0: the kept candidate's prediction alone
        self._passed = 0                 # refits in a row that passed the bar
        self._switched_off = False       # it was on once and switched off: switching on again takes ``hold`` passes
        self._keys: set = set()
        self._losses: list[float] = []
        self._provisional: list[bool] = []
        self._before: list[float] = []   # each point's prediction before it was observed (nan: none)
        self._own_fit = False            # the latest fit dropped the provisional points
        self._rows: dict[str, list] = {c.kind: [] for c in self.candidates}
        self._model: Callable | None = None
        self._best: Candidate | None = None
        self._others: list[tuple[Candidate, Callable]] = []   # averaged with the kept one (ENSEMBLE_SPEARMAN)
        self.state = GateState(None, 0, None, False, {})

    def observe(self, points, provisional: bool = False) -> str | None:
        """Add ``(key, config, loss)`` points not seen before (``key``: hashable identity, e.g. a trial number) and
        refit; returns the gate's new line when it switched on or off (or, while on, changed predictor), else None.
        ``provisional`` points (the set-up's, measured on fewer images and away from where the search goes) are
        used only until :data:`MIN_GATE_POINTS` other points exist; from then on the predictors are fitted and judged
        on the search's own points alone."""
        new = [(k, c, float(loss)) for k, c, loss in points if k not in self._keys]
        if not new:
            return None
        for k, c, loss in new:   # the record counts predictions of fits on the search's own points only (_refit)
            # a prediction that needs network runs was made before the point was measured, or is left out
            p = self.predicted(c) if self._own_fit and self._at_hand(self._best, c) else None
            self._before.append(float("nan") if p is None else p)
        for j, (k, c, loss) in enumerate(new):
            self._keys.add(k)
            self._losses.append(loss)
            self._provisional.append(bool(provisional))
            for cand in self.candidates:
                self._rows[cand.kind].append(self._row(cand, c, provisional, j == len(new) - 1))
        before = (self.state.active, self.state.kind if self.state.active else None)
        self._refit()
        after = (self.state.active, self.state.kind if self.state.active else None)
        return self.state.line() if after != before else None

    def _row(self, cand: Candidate, config: dict, provisional: bool, latest: bool = True) -> np.ndarray | None:
        """``cand``'s features of a new point, or None where its schedule leaves the point out: a candidate whose
        features need network runs (:attr:`Candidate.at_hand`) gets those of the set-up's points, of the search's
        while it has fewer than :data:`COSTLY_WARMUP`, of every :data:`COSTLY_EVERY`-th after that and of any it has
        at hand (a prediction of the trial computed them); of several of the search's points observed at once (the
        gate sat out trials, or other processes measured them) only the ``latest`` is scheduled, so one refit costs
        at most one such run per candidate."""
        if provisional or self._at_hand(cand, config) or (latest and self._scheduled(cand)):
            return cand.features(config)
        return None

    @staticmethod
    def _at_hand(cand: Candidate | None, config: dict) -> bool:
        return cand is not None and (cand.at_hand is None or cand.at_hand(config))

    def _own_rows(self, cand: Candidate) -> list[bool]:
        """For each of the search's points that has a row of ``cand`` (a point being added has none yet): whether
        ``cand`` has its features."""
        return [r is not None for r, p in zip(self._rows[cand.kind], self._provisional) if not p]

    def _warming_up(self, cand: Candidate) -> bool:
        """``cand`` has its features of fewer than :data:`COSTLY_WARMUP` of the search's points."""
        return sum(self._own_rows(cand)) < COSTLY_WARMUP

    def _scheduled(self, cand: Candidate) -> bool:
        """The next of the search's points is on ``cand``'s schedule for features that need network runs: it is
        warming up (:meth:`_warming_up`), or the point is every :data:`COSTLY_EVERY`-th."""
        return self._warming_up(cand) or len(self._own_rows(cand)) % COSTLY_EVERY == 0

    def worth_predicting(self, config: dict) -> bool:
        """A prediction of ``config`` is worth its cost: while the gate is on (it may skip the trial), when the kept
        candidate's features of it need no network run, or while off on that candidate's schedule
        (:meth:`_scheduled`: it then feeds the record only), past the warm-up only while its leave-one-out quality
        passes the bar (without that, no record switches the gate on)."""
        b = self._best
        if b is None or self.state.active or self._at_hand(b, config):
            return b is not None
        return self._scheduled(b) and (self._warming_up(b) or self.state.quality.good_enough)

    def _refit(self) -> None:
        y = np.asarray(self._losses)
        final = [not p for p in self._provisional]
        drop = sum(final) >= self.min_points   # enough of the search's own points: the provisional ones go
        best = None
        cands, fitted = {}, []
        self._own_fit = False
        for cand in self.candidates:
            use, focused = self._use(cand.kind, final, drop, y)
            if len(use) < max(3, self.min_points):
                continue
            X, yy = np.stack([self._rows[cand.kind][i] for i in use]), y[use]
            try:
                q, model = cand.quality(X, yy), cand.fit(X, yy)
            except DseError:
                continue
            cands[cand.kind] = {"loo_spearman": q.spearman, "loo_mean_error": q.mean_error, "points": len(use)}
            fitted.append((cand, q, model))
            rank = (q.good_enough, -np.inf if np.isnan(q.spearman) else q.spearman, -q.mean_error)
            if best is None or rank > best[0]:
                best = (rank, cand, q, model, len(use))
                # the record counts predictions of fits on the search's own points (within the focus, if any)
                self._own_fit = drop and (focused or self.focus is None)
        before = np.asarray(self._before)
        last = [i for i in range(len(y)) if final[i] and np.isfinite(before[i])
                and (self.focus is None or y[i] <= self.focus)][-TRIAL_WINDOW:]
        record = prediction_quality(before[last], y[last])
        if best is None:
            self._best, self._model, self._passed, self._others = None, None, 0, []
            self._switch(False)
            self.state = GateState(None, int(sum(final)) if drop else len(y), None, False, cands, record, len(last))
            return
        _, self._best, q, self._model, n = best
        self._others = [(c, m) for c, oq, m in fitted if self.ensemble > 0 and c is not self._best
                        and oq.good_enough == q.good_enough and oq.spearman >= q.spearman - self.ensemble]
        passes = q.good_enough and (record is None or record.good_enough)
        self._passed = self._passed + 1 if passes else 0
        held = passes and not self.state.active and self._switched_off and self._passed < self.hold
        active = passes and not held
        self._switch(active)
        self.state = GateState(self._best.kind, n, q, active, cands, record, len(last), self._passed if held else 0)

    def _switch(self, active: bool) -> None:
        if self.state.active and not active:
            self._switched_off = True

    def _use(self, kind: str, final: list[bool], drop: bool, y: np.ndarray) -> tuple[list[int], bool]:
        """The points candidate ``kind`` is fitted and judged on: those it has features for (the provisional ones
        only until ``drop``), and of them only those measured within ``focus`` once there are enough of them (then
        the flag is True)."""
        use = [i for i, r in enumerate(self._rows[kind]) if r is not None and (final[i] or not drop)]
        inside = [i for i in use if y[i] <= self.focus] if self.focus is not None else []
        return (inside, True) if len(inside) >= max(3, self.min_points) else (use, False)

    def predicted(self, config: dict) -> float | None:
        if self._best is None:
            return None
        f = self._best.features(config)
        if f is None:
            return None
        preds = [float(self._model(f))]
        for cand, model in self._others:
            g = cand.features(config) if self._at_hand(cand, config) else None
            if g is not None:
                preds.append(float(model(g)))
        return float(np.mean(preds))

    def gate(self, config: dict) -> float | None:
        if not self.state.active:
            return None
        p = self.predicted(config)
        return None if p is None else max(p - self.state.quality.worst_error, 0.0)


@dataclass
class Validation:
    spearman: float
    mae: float
    predicted: list
    emulated: list
    emulate_seconds: float   # mean wall time of one emulate_fn call
    predict_seconds: float   # mean wall time of one pred call (warm)

    def to_dict(self) -> dict:
        return asdict(self)


def validate(pred, emulate_fn, configs, repeats: int = 200) -> Validation:
    """Compare ``pred(config) -> accuracy`` with ``emulate_fn(config) -> accuracy`` on held-out ``configs``:
    Spearman rho and mean absolute error, plus measured mean time per configuration of both."""
    configs = list(configs)
    if len(configs) < 2:
        raise DseError("validate: need at least 2 held-out configurations")
    p = [float(pred(c)) for c in configs]  # also warms caches
    t0 = time.perf_counter()
    reps = 0
    while reps < repeats:
        for c in configs:
            pred(c)
        reps += 1
    t_pred = (time.perf_counter() - t0) / (reps * len(configs))
    emu = []
    t0 = time.perf_counter()
    for c in configs:
        emu.append(float(emulate_fn(c)))
    t_emu = (time.perf_counter() - t0) / len(configs)
    pa, ea = np.asarray(p), np.asarray(emu)
    return Validation(spearman(pa, ea), float(np.mean(np.abs(pa - ea))), p, emu, t_emu, t_pred)


def random_configs(layer_names, multipliers, n: int, seed: int = 0, p_cv: float = 0.5) -> list[dict]:
    """``n`` random network configurations: per configuration each layer is approximate with probability q ~ U(0, 1)
    (at least one layer), with a uniformly chosen multiplier and CV with probability ``p_cv``; values LayerConfig."""
    rng = np.random.default_rng(seed)
    names, mults = list(layer_names), [m for m in multipliers if m != "exact"]
    if not mults:
        raise DseError("random_configs: no approximate 8-bit multiplier available; see 'dse multipliers'")
    out = []
    for _ in range(int(n)):
        q = rng.uniform(0.0, 1.0)
        cfg = {}
        for name in names:
            if rng.uniform() < q:
                cfg[name] = LayerConfig(str(mults[rng.integers(len(mults))]), bool(rng.uniform() < p_cv))
        if not cfg and names:  # at least one approximate layer
            cfg[names[rng.integers(len(names))]] = LayerConfig(str(mults[rng.integers(len(mults))]),
                                                               bool(rng.uniform() < p_cv))
        out.append(cfg)
    return out


def int_multipliers() -> list[str]:
    """Names of the 8-bit table multipliers of the library (the predictor's domain)."""
    from dse.arith.multipliers import list_multipliers

    return [n for n in list_multipliers() if get_multiplier(n).domain == "int"]


def fit_and_validate(layers, accuracy_fn, n: int, seed: int = 0, multipliers=None) -> dict:
    """Emulate ``n`` random configurations (plus the all-exact one): fit :class:`AccuracyModel` on the first
    ``max(3, n // 2)`` + exact, validate on the rest. Returns model, validation and timing figures."""
    if n < 5:
        raise SettingError("validate_n", n, "need at least 5 configurations (3 to fit, 2 held out)")
    pred = AmePredictor(layers)
    mults = list(multipliers) if multipliers else int_multipliers()
    t0 = time.perf_counter()
    pred.precompute(mults)
    t_pre = time.perf_counter() - t0
    configs = random_configs([l.name for l in layers], mults, n, seed)
    n_fit = max(3, n // 2)
    fit_cfgs, hold = [{}] + configs[:n_fit], configs[n_fit:]
    t0 = time.perf_counter()
    fit_acc = [float(accuracy_fn(c)) for c in fit_cfgs]
    t_fit = (time.perf_counter() - t0) / len(fit_cfgs)
    model = AccuracyModel.fit([pred.ame(c) for c in fit_cfgs], fit_acc)
    v = validate(lambda c: model.predict(pred.ame(c)), accuracy_fn, hold)
    t_emu = (t_fit * len(fit_cfgs) + v.emulate_seconds * len(hold)) / (len(fit_cfgs) + len(hold))
    return {"model": model, "validation": v, "n_fit": len(fit_cfgs), "n_holdout": len(hold),
            "exact_accuracy": fit_acc[0], "fit_configs": fit_cfgs, "fit_accuracy": fit_acc, "precompute_seconds": t_pre, "emulate_seconds": t_emu,
            "predict_seconds": v.predict_seconds, "speedup": t_emu / max(v.predict_seconds, 1e-12),
            "holdout_configs": hold, "holdout_ame": [pred.ame(c) for c in hold],
            "predictor": pred}


NEAR_BUDGET = 0.02   # held-out configurations with an emulated loss up to this (2 pp) are the search's concern


def validate_surrogate(sur: LogitSurrogate, fitted: dict) -> dict:
    """The surrogate on the configurations of :func:`fit_and_validate` (``fitted``; no further emulation):
    calibration on its fit configurations, Spearman and mean absolute error of the predicted loss on its held-out
    ones (also over those with an emulated loss <= NEAR_BUDGET), leave-one-out quality on the fit set, and timings."""
    acc0 = fitted["exact_accuracy"]
    t0 = time.perf_counter()
    f_fit = np.stack([sur.features(c) for c in fitted["fit_configs"]])
    f_hold = np.stack([sur.features(c) for c in fitted["holdout_configs"]])
    setup = time.perf_counter() - t0
    loss_fit = np.asarray([acc0 - a for a in fitted["fit_accuracy"]])
    model = LossModel.fit(f_fit, loss_fit, sur.n_images)
    t0 = time.perf_counter()
    pred = np.array([model(sur.features(c)) for c in fitted["holdout_configs"]])
    t_pred = (time.perf_counter() - t0) / len(pred)
    emu = acc0 - np.asarray(fitted["validation"].emulated)
    err = np.abs(pred - emu)
    near = emu <= NEAR_BUDGET
    q = surrogate_quality(f_fit, loss_fit, sur.n_images)
    return {"images": sur.n_images, "calibration_c": model.c, "model": asdict(model), "spearman": spearman(pred, emu),
            "mae": float(err.mean()), "worst_error": float(err.max()), "near_budget": NEAR_BUDGET,
            "n_near": int(near.sum()), "mae_near": float(err[near].mean()) if near.any() else float("nan"),
            "spearman_near": spearman(pred[near], emu[near]) if near.sum() >= 2 else float("nan"),
            "loo_spearman": q.spearman, "loo_mean_error": q.mean_error,
            "holdout": [{"raw": float(f[0]), "predicted": p, "emulated": e} for f, p, e in zip(f_hold, pred, emu)],
            "measured": sur.measured, "setup_seconds": setup, "predict_seconds": t_pred}


# ---------------------------------------------------------------------------------------------- CLI support

def predict_report(model: str, config_path: str | None = None, data: DataRef | None = None,
                   calib: DataRef | None = None, validate_n: int = 0, seed: int = 0, images: int = 2000,
                   preprocess=None, preprocess_hint: str | None = None) -> dict:
    """What ``dse predict`` prints: per-layer terms and AME of a configuration and, with ``validate_n``, the fitted
    AccuracyModel, Spearman, held-out MAE and the measured predictor-vs-emulation speedup, and the same check of the
    :class:`LogitSurrogate` on the same configurations and images (``surrogate``). Model, data, preprocessing
    (``preprocess``, else the configuration's recorded one) and calibration come from :func:`dse.session.open_session`."""
    if validate_n and validate_n < 5:
        raise SettingError("validate_n", validate_n, "need at least 5 configurations (3 to fit, 2 held out)")
    if validate_n and (images is None or int(images) < 1):
        raise SettingError("images", images, "must be a positive number of images")
    if seed < 0:
        raise SettingError("seed", seed, "must be a non-negative integer")
    from dse.config import load_config_meta, validate_config
    from dse.data import Preprocess
    from dse.emulate import Emulator
    from dse.session import PREPROCESS_SETTINGS, DataRef, RunInputs, open_session

    config, meta = load_config_meta(config_path) if config_path else ({}, {})
    if preprocess is None and config_path:
        preprocess = Preprocess.from_meta(meta, str(config_path))
    data = data or DataRef.setting("data", "fashion-mnist:search")
    calib = calib or DataRef.setting("calib", "fashion-mnist:calib")
    s = open_session(RunInputs(model, calib, (data,) if validate_n else (), preprocess,
                               preprocess_hint or PREPROCESS_SETTINGS))
    qmodel = s.qmodel
    validate_config(config, qmodel.layer_names, str(config_path))
    pred = AmePredictor(qmodel.layers)
    terms = pred.breakdown(config)
    out = {**s.info(), "config": config_to_dict(config),
           "layers": [t.to_dict() for t in terms], "ame": float(sum(t.contrib for t in terms))}
    if validate_n:
        ds = s.data[0]
        sub = ds.subset(np.random.default_rng(seed).permutation(len(ds))[: int(images)])
        emu = Emulator(qmodel)
        y = sub.y
        r = fit_and_validate(qmodel.layers, lambda c: emu.dataset_accuracy(sub, c), int(validate_n), seed)
        m, v = r["model"], r["validation"]
        out["accuracy_model"] = m.to_dict()
        out["predicted_accuracy"] = m.predict(out["ame"])
        out["predicted_loss"] = m.loss(out["ame"])
        out["validation"] = {"images": int(len(y)), "n_fit": r["n_fit"], "n_holdout": r["n_holdout"],
                             "exact_accuracy": r["exact_accuracy"], "spearman": v.spearman, "mae": v.mae,
                             "holdout": [{"ame": a, "predicted": p, "emulated": e} for a, p, e in
                                         zip(r["holdout_ame"], v.predicted, v.emulated)],
                             "emulate_seconds": r["emulate_seconds"], "predict_seconds": r["predict_seconds"],
                             "precompute_seconds": r["precompute_seconds"], "speedup": r["speedup"]}
        x = sub.images()
        out["surrogate"] = validate_surrogate(LogitSurrogate(lambda c: emu.run(x, c), y), r)
    return out
