"""Replays the search's predictor gate offline on points recorded by bench_predict (``--json FILE --vectors``), with
each surrogate's loss model corrected by the residuals of its measured neighbours.

Run:  python benchmarks/bench_predict.py search_spaces/resnet8_constrained.toml --seed S --json r8_S.json --vectors
      python benchmarks/bench_predict_replay.py r8_S.json [more.json ...] [--tau 0.005 0.01 0.02 0.05]
      [--shrink 0 0.3 1]

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
"""
from __future__ import annotations

import argparse
import json
import sys
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
        return None if f is None else np.r_[f, vec[_key(c)].astype(float)]

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, nargs="+")
    ap.add_argument("--tau", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--shrink", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    a = ap.parse_args()
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
