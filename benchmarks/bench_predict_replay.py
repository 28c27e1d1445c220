"""Replays the search's predictor gate offline on points recorded by bench_predict (``--json FILE --vectors``), with
each surrogate's loss model corrected by the residuals of its measured neighbours.

Run:  python benchmarks/bench_predict.py search_spaces/resnet8_constrained.toml --seed S --json r8_S.json --vectors
      python benchmarks/bench_predict_replay.py r8_S.json [more.json ...] [--tau 0.005 0.01 0.02 0.05]
      [--shrink 0 0.3 1]
      python benchmarks/bench_predict_replay.py --smooth FILE [FILE ...]   (any bench_predict --json record)
      python benchmarks/bench_predict_replay.py --reliability FILE [FILE ...]   (the same)

The idea tested: a surrogate's prediction errs mostly by the sampling of its few hundred images, and configurations
that get the same of those images right or wrong share that error. So a configuration's residual (measured loss minus
the loss model's prediction) is estimated from the residuals of the points measured so far, weighted by how alike
their per-image correctness on the surrogate's images is: ``prediction = LossModel(features) + sum_j w_j r_j /
(sum_j w_j + shrink)``, ``w_j = exp(-h_j / tau)``, ``h_j`` the share of the surrogate's images on which configuration
``j`` and this one differ, ``r_j`` the leave-one-out residual of point ``j`` (``shrink`` pulls the correction to 0
when no measured point is alike). The gate (dse.predict.PredictorGate, the bench's focus and streams:
bench_predict.gate_stream) is replayed on the recorded features with each surrogate candidate so corrected (the AME
candidate as it is); every prediction is made before its point is added, as in bench_predict. The first row of each
file (no correction) reproduces bench_predict's "search's gate" row.

Also printed per file, as the yardstick: how a predictor that knew the true losses would score against these
measurements (truth taken as the measured losses, each measurement redrawn with its paired standard error, 2000
draws): the median Spearman and mean error, and how often it reaches Spearman >= 0.9 and mean error <= 0.5 pp.

``--smooth FILE [FILE ...]``: another replay, of records with or without vectors, of bench_predict's two sets or of
its search-stream set (``--search-seeds``): the gate as recorded, and the gate with a second candidate per surrogate
whose loss model leaves out the raw count (the share of the surrogate's images that turn wrong), so it chooses
between the two (:func:`smooth`). Every candidate's features are the recorded ones, looked up by point; the
propagated surrogate's (and its smooth twin's) count as at hand once asked for, as in the bench; each stream point is
predicted after the gate observed the full-fidelity points before it (with the losses the search measured), as the
search's objective does. The "as recorded" rows reproduce the bench's numbers.

``--reliability FILE [FILE ...]``: the same replays, the gate before 2026-11-29 ("before": no averaging, the
count always in the loss model) and with two changes tried here (benchmarks/RESULTS.md, "## Predictor"): the logit
surrogate's LossModel fitted on its raw count weighted by its reliability on the surrogate's images
(:class:`RawCountShrink`, not adopted), and the gate's prediction averaged over the candidates within
dse.predict.ENSEMBLE_SPEARMAN of the kept one's leave-one-out Spearman (:func:`averaging_gate`, adopted later); each
alone and both ("after"). Per set: Spearman / mean error, the kept candidates of the "after" gate, and on search
streams how many proposals the gate was on for and would have skipped (conservative prediction over the skip line),
of them within budget on the evaluation images, before -> after.

``--adopted FILE [FILE ...]``: the same table (streams also scored over the proposals predicted once the gate's
fit stood on the search's own points, not the set-up's), "before" against the gate as dse.predict has it now: the averaged
prediction, and each surrogate's LossModel given its image count, so that where its raw count is mostly counting
noise over the fitted points (dse.predict.count_reliability below RAW_RELIABILITY) the counted features (raw and soft
loss) leave the model (:data:`ADOPTED`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_predict as bp  # noqa: E402


def _key(c: dict) -> tuple:
    return tuple(sorted((n, lc.multiplier, bool(lc.cv)) for n, lc in c.items() if lc.multiplier != "exact"))


def load(path: Path):
    """(record, configurations in bench order: set-up, near-budget, uniform; their counts)."""
    from dse.layer_config import LayerConfig

    r = json.loads(path.read_text())
    if "vectors" not in r:
        raise SystemExit(f"{path}: no per-image vectors; record it with bench_predict.py --json FILE --vectors")
    cfgs = [{n: LayerConfig(m, cv) for n, m, cv in k} for k in r["vectors"]["keys"]]
    return r, cfgs, len(r["points"]["setup"]["loss"]), len(r["points"]["near"]["loss"])


def recorded(r: dict, cfgs: list, n0: int, n1: int) -> list:
    """The gate's candidates on the recorded feature rows (same kinds, fits and qualities as dse.predict's)."""
    from dse.predict import AccuracyModel, Candidate, LossModel, ame_quality, surrogate_quality

    P = r["points"]
    out = []
    for kind in r["kinds"]:
        rows = P["setup"][kind] + P["near"][kind] + P["uniform"][kind]
        look = {_key(c): (None if f is None else np.array(f)) for c, f in zip(cfgs, rows)}
        feats = lambda c, look=look: look.get(_key(c))  # noqa: E731
        if kind == "AME":
            def fit(X, y):
                m = AccuracyModel.fit(X[:, 0], 1.0 - y)
                return lambda f: 1.0 - float(m.predict(f[0]))
            out.append(Candidate(kind, feats, fit, ame_quality))
        else:
            out.append(Candidate(kind, feats, LossModel.fit, surrogate_quality))
    return out


def corrected(cand, r: dict, cfgs: list, tau: float, shrink: float):
    """``cand`` with its loss model corrected by its measured neighbours' residuals (module docstring); its feature
    row carries the per-image correctness after the four features."""
    from dse.predict import Candidate, LooQuality, LossModel

    rows = r["vectors"][cand.kind]["rows"]
    vec = {_key(c): np.frombuffer(v.encode(), np.uint8) == ord("1") for c, v in zip(cfgs, rows)}

    def features(c):
        f = cand.features(c)
        return None if f is None else np.r_[np.asarray(f, float)[:4], vec[_key(c)].astype(float)]

    def weights(V, v):
        return np.exp(-np.mean(np.abs(V - v[None]), 1) / tau)

    def fit(X, y):
        F, V = X[:, :4], X[:, 4:]
        lm = LossModel.fit(F, y)
        res = y - LossModel.loo_predictions(F, y)

        def predict(f):
            w = weights(V, f[4:])
            return max(lm(f[:4]) + float(w @ res) / (w.sum() + shrink), 0.0)
        return predict

    def quality(X, y):
        if y.size < 3:
            return LooQuality.unfit()
        F, V = X[:, :4], X[:, 4:]
        base = LossModel.loo_predictions(F, y)
        res = y - base
        pred = []
        for i in range(y.size):
            w = weights(V, V[i])
            w[i] = 0.0
            pred.append(max(base[i] + float(w @ res) / (w.sum() + shrink), 0.0))
        return LooQuality.of(np.array(pred), y)
    return Candidate(cand.kind, features, fit, quality)


def replay(r: dict, cfgs: list, n0: int, n1: int, cands: list) -> tuple[dict, dict]:
    """The gate's scores on the near-budget stream's second half and on the uniform set (bench_predict's)."""
    P = r["points"]
    y0, yn, yu = (np.array(P[k]["loss"]) for k in ("setup", "near", "uniform"))
    fit0, near, uni = cfgs[:n0], cfgs[n0:n0 + n1], cfgs[n0 + n1:]
    setup, s_near = list(zip(fit0, y0)), list(zip(near, yn))
    half = bp.half_of(n1)
    p_near = bp.gate_stream(cands, setup, s_near, half, r["focus"])[0]
    p_uni = bp.gate_stream(cands, setup, s_near + list(zip(uni, yu)), n1, r["focus"])[0]
    return bp._scores(p_near, yn[half:]), bp._scores(p_uni, yu)


def oracle(r: dict, draws: int = 2000, seed: int = 0) -> dict:
    """Scores of a predictor that knew the true losses (module docstring), per set."""
    from dse.predict import spearman

    rng = np.random.default_rng(seed)
    out = {}
    for part in ("near", "uniform"):
        y, se = np.array(r["points"][part]["loss"]), np.array(r["points"][part]["se"])
        if part == "near":
            h = bp.half_of(y.size)
            y, se = y[h:], se[h:]
        m = y[None] + se[None] * rng.standard_normal((draws, y.size))
        rho = np.array([spearman(y, v) for v in m])
        mae = np.mean(np.abs(m - y[None]), 1)
        out[part] = {"spearman": float(np.median(rho)), "p_rank": float(np.mean(rho >= 0.9)),
                     "mae": float(np.median(mae)), "p_mae": float(np.mean(mae <= 0.005))}
    return out


def _monotone_curve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a non-decreasing curve ``y ~ f(x)`` through ``(0, 0)``: the isotonic regression of ``y`` on ``x``
    (scipy.optimize.isotonic_regression), then piecewise linear through the centroids of its blocks (no flat steps
    inside a block)."""
    from scipy.optimize import isotonic_regression

    o = np.argsort(x, kind="stable")
    xs, ys = x[o], y[o]
    fit = isotonic_regression(ys)
    b = fit.blocks
    cx = np.array([xs[b[i]:b[i + 1]].mean() for i in range(len(b) - 1)])
    cy = np.maximum(fit.x[b[:-1]], 0.0)
    keep = cx > 0
    return np.r_[0.0, cx[keep]], np.r_[0.0, cy[keep]]


class RawCountShrink:
    """A surrogate's raw loss weighted by its reliability. The raw loss is a count on the surrogate's ``images``
    images with binomial variance ``r (1 - r) / images`` (at least one image's). Over the rows a model is fitted on,
    its reliability ``R = 1 - mean binomial variance / variance of r`` (clipped to [0, 1]; dse.predict.count_reliability
    without churns) is the share of its spread that is not counting noise, and the count is replaced by ``R r + (1 - R) f(gauss)`` (Kelley's estimate), ``f`` the
    monotone curve of the count on the Gaussian loss (feature 3) over the same rows (:func:`_monotone_curve`).
    Label-free: only the feature rows decide, so a leave-one-out fit may take it over all rows."""

    def __init__(self, X, images: int):
        from dse.predict import count_reliability

        X = np.maximum(np.atleast_2d(np.asarray(X, float)), 0.0)
        r, g = X[:, 0], X[:, 3]
        self.reliability = count_reliability(r, images)
        self.knots = _monotone_curve(g, r)

    def apply(self, X) -> np.ndarray:
        X = np.maximum(np.atleast_2d(np.asarray(X, float)), 0.0).copy()
        X[:, 0] = self.reliability * X[:, 0] + (1.0 - self.reliability) * np.interp(X[:, 3], *self.knots)
        return X


def loss_model_fits(images: int | None) -> tuple:
    """A surrogate candidate's ``(fit, quality)``: dse.predict's LossModel and its leave-one-out quality, with the raw
    count weighted by its reliability on ``images`` images first (:class:`RawCountShrink`; None: as dse.predict's)."""
    from dse.predict import LossModel, surrogate_quality

    if images is None:
        return LossModel.fit, surrogate_quality

    def fit(X, y):
        s = RawCountShrink(X, images)
        m = LossModel.fit(s.apply(X), y)
        return lambda f: m(s.apply(f)[0])
    return fit, (lambda X, y: surrogate_quality(RawCountShrink(X, images).apply(X), y))


def averaging_gate(ensemble: float):
    """dse.predict.PredictorGate with its prediction averaged over the candidates within ``ensemble`` of the kept
    one's leave-one-out Spearman (tried here first, then adopted as the gate's ``ensemble``); 0: the kept candidate
    alone, the gate before it was adopted."""
    from functools import partial

    from dse.predict import PredictorGate
    return partial(PredictorGate, ensemble=ensemble)


def point_candidates(kinds: list, rows: dict, smooth_too: bool = False, images: dict | None = None,
                     counted: dict | None = None) -> list:
    """The gate's candidates on recorded feature rows ``rows[kind][i]`` of points ``{"point": i}``: the same fits and
    qualities as dse.predict's (``images[kind]``: that surrogate's images, for its raw count's reliability weighting;
    without: none, as before it); the propagated surrogate's rows count as at hand once asked for (a network run in a
    search), its smooth twin sharing them; with ``smooth_too`` each surrogate followed by its :func:`smooth` twin."""
    from dse.predict import AccuracyModel, Candidate, ame_quality, loss_model_candidate

    out = []
    for kind in kinds:
        def feats(c, tab=rows[kind]):
            f = tab[c["point"]]
            return None if f is None else np.asarray(f, float)
        if kind == "AME":
            def fit(X, y):
                m = AccuracyModel.fit(X[:, 0], 1.0 - y)
                return lambda f: 1.0 - float(m.predict(f[0]))
            out.append(Candidate(kind, feats, fit, ame_quality))
            continue
        at_hand = None
        if kind == "propagated surrogate":
            seen: set = set()

            def feats(c, f=feats, seen=seen):   # noqa: F811 (the counting one)
                seen.add(c["point"])
                return f(c)
            at_hand = lambda c, seen=seen: c["point"] in seen  # noqa: E731
        if counted is not None:   # the gate as dse.predict has it: LossModel weighs the count on that many images
            cand = loss_model_candidate(kind, feats, counted[kind], at_hand)
        else:
            cand = Candidate(kind, feats, *loss_model_fits((images or {}).get(kind)), at_hand)
        out += [cand, smooth(cand)] if smooth_too else [cand]
    return out


def smooth(cand):
    """``cand`` (a surrogate's LossModel candidate) with its raw count set to 0: a loss model of the smooth features
    alone (soft loss, RMS margin change, its Gaussian loss)."""
    from dse.predict import Candidate

    def feats(c):
        f = cand.features(c)
        return None if f is None else np.r_[0.0, np.asarray(f, float)[1:]]
    return Candidate(f"{cand.kind}, smooth", feats, cand.fit, cand.quality, cand.at_hand)


# the gate as before the reliability weighting and the averaged prediction: ({kind: images} weighted, ensemble)
BEFORE = ({}, 0.0)
# the gate as dse.predict has it since: each surrogate's counted features weighed by its count's reliability on its
# images (LossModel's ``images``), the averaged prediction
ADOPTED = "adopted"


def _how(r: dict, how) -> tuple:
    """``how`` resolved for record ``r``: (surrogate images for RawCountShrink, the gate's ensemble, each surrogate's
    images for LossModel or None)."""
    if how == ADOPTED:
        from dse.predict import ENSEMBLE_SPEARMAN
        n = _images(r)
        return {}, ENSEMBLE_SPEARMAN, {"logit surrogate": n, "propagated surrogate": int(r.get("propagated_images", n))}
    return (*how, None)[:3]


def _images(r: dict) -> int:
    """The surrogates' images of a record (the evaluation images start past them)."""
    return int(r["surrogate_images"] if "surrogate_images" in r else r["skip"])


def replay_sets(r: dict, smooth_too: bool, how: tuple = BEFORE, kept: Counter | None = None) -> tuple[dict, dict]:
    """bench_predict's near-budget and uniform streams (bench_predict.gate_stream's order) on recorded rows; ``how``
    = (surrogate images or None, the gate's keep margin); ``kept`` counts the kept candidate of each scored point."""
    P = r["points"]
    y0, yn, yu = (list(P[k]["loss"]) for k in ("setup", "near", "uniform"))
    rows = {k: P["setup"][k] + P["near"][k] + P["uniform"][k] for k in r["kinds"]}
    how = _how(r, how)
    out = []
    for ys, start in ((yn, bp.half_of(len(yn))), (yn + yu, len(yn))):
        gate = averaging_gate(how[1])(point_candidates(r["kinds"], rows, smooth_too, how[0], how[2]), focus=r["focus"])
        gate.observe([(("fit", i), {"point": i}, y) for i, y in enumerate(y0)], provisional=True)
        preds = []
        for j, y in enumerate(ys):
            p = gate.predicted({"point": len(y0) + j})
            if j >= start:
                preds.append(np.nan if p is None else p)
                if kept is not None:
                    kept[gate.state.kind] += 1
            gate.observe([(j, {"point": len(y0) + j}, y)])
        out.append(bp._scores(preds, ys[start:]))
    return out[0], out[1]


def replay_stream(r: dict, seed: str, smooth_too: bool, how: tuple = BEFORE,
                  kept: Counter | None = None, own_only: bool = False) -> tuple[dict, dict]:
    """A search-stream record's gate (bench_predict.search_proposals) on its recorded rows: over all its scored
    proposals and over those within the focus (``how``, ``kept``: as :func:`replay_sets`); ``own_only``: of both,
    only the proposals predicted once the gate's fit stood on the search's own points (within its focus), i.e. not
    from the set-up's provisional ones."""
    d, S = r["seeds"][seed], r["setup_points"]
    kinds = [k for k in S if k != "loss"]
    n0 = len(S["loss"])
    rows = {k: S[k] + [p[k] for p in d["stream"]] for k in kinds}
    how = _how(r, how)
    gate = averaging_gate(how[1])(point_candidates(kinds, rows, smooth_too, how[0], how[2]), focus=r["focus"])
    gate.observe([(("fit", i), {"point": i}, y) for i, y in enumerate(S["loss"])], provisional=True)
    pred, full, kind, skip = {}, [], {}, {}
    for j, p in enumerate(d["stream"]):
        gate.observe(full)
        v = gate.predicted({"point": n0 + j})
        pred[p["trial"]] = np.nan if v is None or (own_only and not gate._own_fit) else v
        kind[p["trial"]] = gate.state.kind
        if kept is not None:
            g = gate.gate({"point": n0 + j})
            skip[p["trial"]] = (gate.state.active, g is not None and g > r["skip_line"])
        if p["full"]:
            full.append((p["trial"], {"point": n0 + j}, p["search_loss"]))
    x, y = np.array([pred[t] for t in d["trials"]]), np.array(d["loss"])
    if kept is not None:
        kept.update(kind[t] for t in d["trials"])
        on = [skip[t] for t in d["trials"]]
        kept["gate on"] += sum(a for a, _ in on)
        kept["would skip"] += sum(b for _, b in on)
        kept["would skip within budget"] += sum(b and v <= r["budget_loss"] for (_, b), v in zip(on, y))
    inside = y <= r["focus"]
    return bp._scores(x, y), bp._scores(x[inside], y[inside])


def reliability_table(paths: list) -> None:
    """``--reliability`` (module docstring)."""
    from dse.predict import ENSEMBLE_SPEARMAN
    compare_table(paths, {"before": BEFORE, "reliability weighting alone": "w",
                          "averaged prediction alone": ({}, ENSEMBLE_SPEARMAN), "after (both)": "both"})


def adopted_table(paths: list) -> None:
    """``--adopted`` (module docstring)."""
    compare_table(paths, {"before": BEFORE, "after (dse.predict)": ADOPTED})


def compare_table(paths: list, hows: dict) -> None:
    """One row per set and record: Spearman / mean error of the gate replayed each way of ``hows`` (the first:
    before, the last: after; "w" and "both": the logit surrogate's count weighted by RawCountShrink, alone and with
    the averaged prediction), the kept candidates of the last, and on search streams how many proposals the gate was
    on for and would have skipped."""
    from dse.predict import ENSEMBLE_SPEARMAN
    last = list(hows)[-1]
    print("| file | set | " + " | ".join(hows) + f" | kept ({last}); gate on / would skip (within budget), before -> "
          "after |\n|---|---|" + "---|" * (len(hows) + 1))
    for path in paths:
        r = json.loads(path.read_text())
        w = {"logit surrogate": _images(r)}
        resolved = {k: ((w, 0.0) if h == "w" else (w, ENSEMBLE_SPEARMAN) if h == "both" else h) for k, h in hows.items()}
        if "seeds" in r:
            for s in r["seeds"]:
                kept: Counter = Counter()
                was: Counter = Counter()
                got = {k: replay_stream(r, s, False, h, kept if k == last else was if k == "before" else None)
                       for k, h in resolved.items()}
                for part, what in ((0, ""), (1, ", within the focus")):
                    _row(path, f"search stream, sampler seed {s}{what}", [g[part] for g in got.values()], kept, was)
                own = [replay_stream(r, s, False, h, own_only=True)[1] for h in resolved.values()]
                _row(path, f"search stream, sampler seed {s}, within the focus, predicted once fitted on the search's "
                     "own points", own, Counter())
        else:
            kept = Counter()
            got = {k: replay_sets(r, False, h, kept if k == last else None) for k, h in resolved.items()}
            for part, what in ((0, "knapsack neighbourhood"), (1, "uniform")):
                _row(path, what, [g[part] for g in got.values()], kept)


def _row(path: Path, what: str, scores: list, kept: Counter, was: Counter | None = None) -> None:
    special = ("gate on", "would skip", "would skip within budget")
    ks = ", ".join(f"{k} {v}" for k, v in kept.most_common() if k not in special)
    if was is not None:
        g = [f"{c['gate on']} / {c['would skip']} ({c['would skip within budget']})" for c in (was, kept)]
        ks += f"; {g[0]} -> {g[1]}"
    print(f"| {path.name} | {what} | " + " | ".join(f"{s['spearman']:.3f} / {100 * s['mae']:.2f} pp" for s in scores)
          + f" | {ks} |", flush=True)


def smooth_table(paths: list) -> None:
    print("| file | set | the gate as recorded: Spearman / mean error | with smooth twins |\n|---|---|---|---|")
    for path in paths:
        r = json.loads(path.read_text())
        if "seeds" in r:
            sets = {f"search stream, sampler seed {s}{', ' + part if part else ''}": (s, k)
                    for s in r["seeds"] for k, part in ((0, ""), (1, "within the focus"))}
            got = {t: [replay_stream(r, s, sm)[k] for sm in (False, True)] for t, (s, k) in sets.items()}
        else:
            both = [replay_sets(r, sm) for sm in (False, True)]
            got = {"knapsack neighbourhood": [b[0] for b in both], "uniform": [b[1] for b in both]}
        for what, (a, b) in got.items():
            print(f"| {path.name} | {what} | {a['spearman']:.3f} / {100 * a['mae']:.2f} pp | "
                  f"{b['spearman']:.3f} / {100 * b['mae']:.2f} pp |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, nargs="+")
    ap.add_argument("--tau", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--shrink", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    ap.add_argument("--smooth", action="store_true", help="replay with smooth twins instead (module docstring)")
    ap.add_argument("--reliability", action="store_true",
                    help="replay the gate before and after the raw count's reliability weighting (module docstring)")
    ap.add_argument("--adopted", action="store_true",
                    help="replay the gate before and as dse.predict has it now (module docstring)")
    a = ap.parse_args()
    if a.smooth:
        smooth_table(a.json)
        return 0
    if a.reliability:
        reliability_table(a.json)
        return 0
    if a.adopted:
        adopted_table(a.json)
        return 0
    grid = [(None, None)] + [(t, s) for t in a.tau for s in a.shrink]
    print("| file | correction | knapsack neighbourhood: Spearman / mean error | uniform: Spearman / mean error |\n"
          "|---|---|---|---|")
    for path in a.json:
        r, cfgs, n0, n1 = load(path)
        o = oracle(r)
        print(f"| {path.name} | a predictor that knew the true losses: median (share of draws reaching 0.9 / 0.5 pp) | "
              + " | ".join(f"{o[k]['spearman']:.3f} ({o[k]['p_rank']:.2f}) / {100 * o[k]['mae']:.2f} pp "
                           f"({o[k]['p_mae']:.2f})" for k in ("near", "uniform")) + " |")
        base = recorded(r, cfgs, n0, n1)
        for tau, shrink in grid:
            cands = base if tau is None else [corrected(c, r, cfgs, tau, shrink) if c.kind in r["vectors"] else c
                                              for c in base]
            sn, su = replay(r, cfgs, n0, n1, cands)
            what = "none (the search's gate today)" if tau is None else f"tau {tau:g}, shrink {shrink:g}"
            print(f"| {path.name} | {what} | {sn['spearman']:.3f} / {100 * sn['mae']:.2f} pp | "
                  f"{su['spearman']:.3f} / {100 * su['mae']:.2f} pp |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
