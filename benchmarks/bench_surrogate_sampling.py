"""How much of the propagated surrogate's error is its own sampling: the raw loss (share of images turned wrong) that
``dse.predict.PropagatedSurrogate`` predicts for fresh configurations on four disjoint blocks of ``--block`` search
images each, against the loss measured by emulation on ``--truth`` other search images of the same split; and whether
the exact network's margins cut that sampling error without more images.

Run:  python benchmarks/bench_surrogate_sampling.py search_spaces/resnet8_constrained.toml [--configs 12]
      [--q 0.3 1.0] [--near] [--seed 12345] [--block 300] [--truth 2000] [--strata 10] [--wide 3000]

The configurations are uniform random ones of the budget's space (each searchable layer approximate with probability
q ~ U(q range)), or with ``--near`` the knapsack neighbourhood of bench_predict (the knapsack's choice at a random
capacity of 0.25-3x the budget over a random 70 % of the single-layer items, the items measured on the first
``--block`` images). Printed: the measured losses, each block's raw loss, the mean error of one block's raw loss (what a
surrogate on ``--block`` images starts from), the spread across blocks (its sampling error), the mean error of the
mean of the four blocks (a surrogate on 4x the images) and the truth's own error (bench_predict.error_floor of the
paired standard errors).

Variance reduction by the exact (FxP8) network's margins (true-class logit minus the largest other one), all of them
from one all-exact run over the whole search split, side by side with the plain raw loss on the same blocks:

* post-stratified: each block image weighted so that the block's histogram over ``--strata`` margin strata (the
  block's own margin quantiles) matches the whole split's, the raw loss a weighted mean;
* control variate: the raw loss minus the block's Gaussian loss (dse.predict.gaussian_loss at the configuration's RMS
  margin change) plus the same Gaussian loss over the whole split's margins (known for every configuration);
* what bounds both: the share of the flip variance (per image: right at exact and wrong now, or the reverse) that
  the margin strata explain, over the four blocks' images;
* a control variate across surrogates (``--wide N``, the truth then on the ``--truth`` images past the first N):
  the logit surrogate (dse.predict.LogitSurrogate, exact logits plus summed single-layer changes, cheap per
  prediction once its single-layer changes are measured) on the first N search images, the four blocks among them;
  per block the propagated surrogate's raw loss plus the logit surrogate's on all N minus its own on the block's
  images (the same images: the part of the sampling the two share cancels), the logit surrogate's raw loss on all N
  alone, the per-image correlation of the two surrogates' flips (and of each with emulation on the same images),
  and the set-up cost of the logit surrogate's single-layer changes on N images against a propagated prediction;
* margin-stratified selection instead (choosing a block's images per stratum, Neyman allocation: per stratum in
  proportion to its share times its flips' SD, the SD averaged over the other configurations since the allocation is
  made before a configuration is known, a fifth of it given out in proportion to the strata alone): the SD of the
  resulting weighted raw loss relative to a simple random sample of the same size, estimated on the four blocks'
  images.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import Measured, _budget_copy, error_floor, near_budget_configs, uniform_configs  # noqa: E402


def strata_of(m: np.ndarray, k: int) -> np.ndarray:
    """Interior edges of ``k`` margin strata at the quantiles of ``m`` (its own values, duplicates and edges at its
    minimum dropped, so that every stratum holds at least one of ``m``)."""
    e = np.unique(np.quantile(m, np.arange(1, k) / k, method="inverted_cdf"))
    return e[e > m.min()]


def poststratified(m: np.ndarray, m_split: np.ndarray, k: int) -> np.ndarray:
    """Weights (mean 1) of the images of margins ``m`` that make their histogram over the strata of :func:`strata_of`
    equal to that of the split's margins ``m_split``."""
    e = strata_of(m, k)
    s, s_split = np.searchsorted(e, m, side="right"), np.searchsorted(e, m_split, side="right")
    share = np.bincount(s_split, minlength=e.size + 1) / m_split.size
    w = share[s] * m.size / np.bincount(s, minlength=e.size + 1)[s]
    assert np.allclose(np.bincount(s, w, e.size + 1) / m.size, share)
    return w


def explained(flips: np.ndarray, m: np.ndarray, k: int) -> np.ndarray:
    """Per configuration (rows of ``flips`` [configs, images]): the share of its flips' variance the margin strata
    explain (between-strata variance / total)."""
    s = np.searchsorted(strata_of(m, k), m, side="right")
    counts = np.bincount(s)
    means = np.array([np.bincount(s, f, counts.size) / np.maximum(counts, 1) for f in flips])
    var = flips.var(1)
    return np.where(var > 0, 1 - (flips - means[:, s]).var(1) / np.where(var > 0, var, 1), 0.0)


DEFENSIVE = 0.2   # share of a Neyman allocation given out in proportion to the strata (none left unsampled)


def neyman_ratio(flips: np.ndarray, m: np.ndarray, k: int) -> np.ndarray:
    """Per configuration: SD of the stratified estimate with a Neyman allocation fixed before the configuration is
    known (per stratum its share times the flips' SD averaged over the other configurations, mixed with
    :data:`DEFENSIVE` of the proportional allocation) over the SD of a simple random sample of the same size (both
    without the finite-population correction)."""
    s = np.searchsorted(strata_of(m, k), m, side="right")
    share = np.bincount(s) / m.size
    sd = np.array([[f[s == h].std() for h in range(share.size)] for f in flips])
    out = []
    for c in range(len(flips)):
        a = share * np.delete(sd, c, 0).mean(0)
        a = (1 - DEFENSIVE) * a / max(a.sum(), 1e-300) + DEFENSIVE * share
        v = np.sum(share ** 2 * sd[c] ** 2 / a)
        out.append(np.sqrt(v / flips[c].var()) if flips[c].var() > 0 else 1.0)
    return np.array(out)


def across_surrogates(a, ev, cfgs, flips, raw, t_prop) -> tuple[list, str]:
    """The control variate across surrogates (see the module docstring): estimates [blocks, configs] and a note with
    the logit surrogate's set-up cost and the per-image flip correlations."""
    from dse.predict import LogitSurrogate

    n, blocks = a.wide, raw.shape[0]
    t0 = time.perf_counter()
    sur = LogitSurrogate(lambda c: ev.logits(c, 0, n), ev.data.y[:n])
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    right = np.array([sur.margins(sur.logits(c)) > 0 for c in cfgs])     # [configs, n]
    t_deltas = time.perf_counter() - t0
    right0 = sur.margins(sur.exact) > 0
    lflip = right0[None].astype(float) - right                           # + right at exact and wrong now
    wide = lflip.mean(1)
    est_cv, est_l = np.zeros_like(raw), np.zeros_like(raw)
    for k in range(blocks):
        sl = slice(k * a.block, (k + 1) * a.block)
        est_cv[k] = raw[k] + wide - lflip[:, sl].mean(1)
        est_l[k] = wide
    m = blocks * a.block
    emu = np.array([np.asarray(ev.correct(c, 0, m), bool) for c in cfgs])
    eflip = np.asarray(ev.correct({}, 0, m), bool)[None].astype(float) - emu

    def corr(x, y):
        return float(np.nanmedian([np.corrcoef(u, v)[0, 1] if u.std() > 0 and v.std() > 0 else np.nan
                                   for u, v in zip(x, y)]))
    note = (f"logit surrogate on {n} images: exact logits {t_exact:.1f} s, {sur.measured} single-layer changes "
            f"{t_deltas:.1f} s ({t_deltas / max(sur.measured, 1):.2f} s each); a propagated prediction on {a.block} "
            f"images {1e3 * np.median(t_prop):.0f} ms (median). Per-image flips, median correlation over the "
            f"configurations: propagated with logit surrogate {corr(flips, lflip[:, :m]):.2f}, propagated with "
            f"emulation {corr(flips, eflip):.2f}, logit surrogate with emulation {corr(lflip[:, :m], eflip):.2f} (on "
            f"the blocks' {m} images).")
    return [(f"propagated + logit surrogate on {n} - logit surrogate on the block", est_cv),
            (f"logit surrogate's raw loss on {n} images alone", est_l)], note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--q", type=float, nargs=2, default=(0.3, 1.0))
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--block", type=int, default=300)
    ap.add_argument("--truth", type=int, default=2000)
    ap.add_argument("--strata", type=int, default=10)
    ap.add_argument("--near", action="store_true", help="knapsack-neighbourhood configurations instead of uniform")
    ap.add_argument("--wide", type=int, default=0, help="images of the logit surrogate of the control variate")
    a = ap.parse_args()
    from dse.predict import PropagatedSurrogate, gaussian_loss, margins, soft_loss

    t0 = time.perf_counter()
    blocks = 4
    with tempfile.TemporaryDirectory() as tmp:
        from dse.search.context import build_context

        lo = max(blocks * a.block, a.wide)
        ctx = build_context(str(_budget_copy(a.budget, lo + a.truth, Path(tmp) / a.budget.name)),
                            fit_predictor=False, setup_budget_s=1e12)
    ev = ctx.evaluator
    rng = np.random.default_rng(a.seed)
    if a.near:
        from dse.budget import load_budget
        from dse.search import seeds
        from dse.search.context import settings_from_budget

        budget_loss = settings_from_budget(load_budget(a.budget)).budget_loss
        cfgs = near_budget_configs(ctx.space, seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy), budget_loss,
                                   a.configs, rng)
    else:
        cfgs = uniform_configs(ctx.space, a.configs, rng, tuple(a.q))
    hi = lo + a.truth
    measured = Measured.of(np.asarray(ev.correct({}, lo, hi), bool),
                           np.array([np.asarray(ev.correct(c, lo, hi), bool) for c in cfgs]))
    truth = measured.loss
    m_split = margins(np.asarray(ev.logits({}, 0, ev.n_images), np.float64), ev.data.y[:ev.n_images])
    raw, strat, cv = (np.zeros((blocks, a.configs)) for _ in range(3))
    flips = np.zeros((a.configs, blocks * a.block))
    t_prop = []
    for k in range(blocks):
        sur = PropagatedSurrogate(ev.emulator, ev.data.images(k * a.block, (k + 1) * a.block),
                                  ev.data.y[k * a.block:(k + 1) * a.block], seed=0)
        w = poststratified(sur.m0, m_split, a.strata)
        for i, c in enumerate(cfgs):
            t1 = time.perf_counter()
            m = margins(np.asarray(sur.logits(c), np.float64), sur.labels)
            t_prop.append(time.perf_counter() - t1)
            f = (sur.m0 > 0).astype(float) - (m > 0)
            flips[i, k * a.block:(k + 1) * a.block] = f
            raw[k, i], strat[k, i] = f.mean(), np.average(f, weights=w)
            s = soft_loss(m, sur.m0)[1]
            cv[k, i] = f.mean() - gaussian_loss(sur.m0, s) + gaussian_loss(m_split, s)
    m_blocks = m_split[:blocks * a.block]
    pp = lambda v: f"{100 * v:.2f} pp"  # noqa: E731
    kind = "knapsack-neighbourhood" if a.near else f"uniform (q in {a.q[0]:g}..{a.q[1]:g})"
    print(f"`{a.budget.name}`, {a.configs} {kind} configurations (seed {a.seed}); "
          f"truth on search images {lo}..{hi}, margins of the whole split ({ev.n_images} images), {a.strata} margin "
          f"strata, {time.perf_counter() - t0:.0f} s\n")
    print(f"| configuration | measured loss | raw loss on each of the 4 blocks of {a.block} images | post-stratified | "
          "control variate | flip variance the strata explain | Neyman-allocated SD / random SD |\n"
          "|---|---|---|---|---|---|---|")
    r2, ney = explained(flips, m_blocks, a.strata), neyman_ratio(flips, m_blocks, a.strata)
    for i in range(a.configs):
        print(f"| {i} | {100 * truth[i]:.2f} | {', '.join(f'{100 * v:.2f}' for v in raw[:, i])} | "
              f"{', '.join(f'{100 * v:.2f}' for v in strat[:, i])} | {', '.join(f'{100 * v:.2f}' for v in cv[:, i])} "
              f"| {r2[i]:.2f} | {ney[i]:.2f} |")
    print(f"\nthe truth's own error: {pp(error_floor(measured.se))}\n")
    print("| estimate | mean error of one block | SD across the 4 blocks | mean error of the mean of the 4 blocks | "
          "mean bias |\n|---|---|---|---|---|")
    rows = [("raw loss (today)", raw), (f"post-stratified ({a.strata} margin strata)", strat),
            ("control variate (Gaussian loss, split's margins)", cv)]
    if a.wide:
        wide_rows, note = across_surrogates(a, ev, cfgs, flips, raw, t_prop)
        rows += wide_rows
    for name, est in rows:
        d = est - truth[None]
        print(f"| {name} | {pp(np.mean(np.abs(d)))} | {pp(np.mean(np.std(est, 0, ddof=1)))} | "
              f"{pp(np.mean(np.abs(est.mean(0) - truth)))} | {pp(np.mean(d))} |")
    if a.wide:
        print(f"\n{note}")
    big = truth > 0.1
    print(f"\nflip variance the margin strata explain: median {np.median(r2):.2f}, max {r2.max():.2f}; "
          f"Neyman-allocated SD / random SD: median {np.median(ney):.2f}, losses over 10 pp "
          f"{np.round(ney[big], 2).tolist()}, under {np.round(ney[~big], 2).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
