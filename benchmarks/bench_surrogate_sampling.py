"""How much of the propagated surrogate's error is its own sampling: the raw loss (share of images turned wrong) that
``dse.predict.PropagatedSurrogate`` predicts for fresh configurations on four disjoint blocks of ``--block`` search
images each, against the loss measured by emulation on ``--truth`` other search images of the same split.

Run:  python benchmarks/bench_surrogate_sampling.py search_spaces/resnet8_constrained.toml [--configs 12]
      [--q 0.3 1.0] [--seed 12345] [--block 300] [--truth 2000]

The configurations are uniform random ones of the budget's space (each searchable layer approximate with probability
q ~ U(q range)). Printed: the measured losses, each block's raw loss, the mean error of one block's raw loss (what a
surrogate on ``--block`` images starts from), the spread across blocks (its sampling error), the mean error of the
mean of the four blocks (a surrogate on 4x the images) and the truth's own error (bench_predict.error_floor of the
paired standard errors).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import Measured, _budget_copy, error_floor, uniform_configs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--q", type=float, nargs=2, default=(0.3, 1.0))
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--block", type=int, default=300)
    ap.add_argument("--truth", type=int, default=2000)
    a = ap.parse_args()
    from dse.predict import PropagatedSurrogate
    from dse.search.context import build_context

    t0 = time.perf_counter()
    blocks = 4
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build_context(str(_budget_copy(a.budget, blocks * a.block + a.truth, Path(tmp) / a.budget.name)),
                            fit_predictor=False)
    ev = ctx.evaluator
    cfgs = uniform_configs(ctx.space, a.configs, np.random.default_rng(a.seed), tuple(a.q))
    lo, hi = blocks * a.block, blocks * a.block + a.truth
    measured = Measured.of(np.asarray(ev.correct({}, lo, hi), bool),
                           np.array([np.asarray(ev.correct(c, lo, hi), bool) for c in cfgs]))
    truth = measured.loss
    raw = np.array([[PropagatedSurrogate(ev.emulator, ev.data.images(k * a.block, (k + 1) * a.block),
                                         ev.data.y[k * a.block:(k + 1) * a.block], seed=0).features(c)[0]
                     for c in cfgs] for k in range(blocks)])
    pp = lambda v: f"{100 * v:.2f} pp"  # noqa: E731
    print(f"`{a.budget.name}`, {a.configs} uniform configurations (q in {a.q[0]:g}..{a.q[1]:g}, seed {a.seed}); "
          f"truth on search images {lo}..{hi}, {time.perf_counter() - t0:.0f} s\n")
    print("| configuration | measured loss | raw loss on each of the 4 blocks of %d images |\n|---|---|---|" % a.block)
    for i in range(a.configs):
        print(f"| {i} | {100 * truth[i]:.2f} | {', '.join(f'{100 * v:.2f}' for v in raw[:, i])} |")
    d = raw - truth[None]
    print(f"\nmean error of one block's raw loss: {pp(np.mean(np.abs(d)))}; SD across the blocks: "
          f"{pp(np.mean(np.std(raw, 0, ddof=1)))}; mean error of the mean of the 4 blocks: "
          f"{pp(np.mean(np.abs(raw.mean(0) - truth)))}; mean bias: {pp(np.mean(d))}; the truth's own error: "
          f"{pp(error_floor(measured.se))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
