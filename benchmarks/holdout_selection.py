"""Benchmark: is a first pick's search-vs-hold-out gap selection on the search images?

For each seed: the search of ``bench_holdout.py`` (the budget reseeded, 30 trials, one worker, no timeout), then its
first pick (cheapest full-fidelity configuration whose loss upper bound is within budget) measured on the images of
the same search split that the search did not use (the budget's ``[data] images`` takes the first N of a seeded
permutation; the rest, N..end, were never seen) and on the hold-out split. Prints one JSON line per seed.

Usage: ``python benchmarks/holdout_selection.py BUDGET.toml SEED [SEED ...] [--out DIR]`` (the budget must set
``images`` below the search split's size).
"""
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from bench_holdout import full_points  # noqa: E402
from bench_search import reseeded, settings_for  # noqa: E402
from dse.layer_config import config_from_dict  # noqa: E402
from dse.search.context import build_context  # noqa: E402
from dse.search.objective import ATTR_LOSS_UCB  # noqa: E402
from dse.search.racing import paired_stats  # noqa: E402
from dse.search.study import run_search  # noqa: E402


def first_pick(run_dir: Path, budget_loss: float) -> dict:
    """User attributes of the cheapest full-fidelity configuration whose loss upper bound is within budget (the
    ``margin`` pick of bench_holdout.py)."""
    return next(ua for ua in full_points(run_dir) if ua[ATTR_LOSS_UCB] <= budget_loss)


def pp(stats) -> tuple[float, float]:
    return round(100 * stats.loss, 2), round(100 * stats.se, 2)


def one(budget0: Path, seed: int, out: Path) -> dict:
    budget = reseeded(budget0, seed, out)
    s = settings_for(budget, seed, 30, 1, 0)
    ctx = build_context(str(budget), threads=1)
    run_dir = out / f"{budget0.stem}-{seed}"
    run_search(budget, s, lambda: ctx, run_dir=run_dir, resume=False, progress=False)
    pick = first_pick(run_dir, s.budget_loss)
    cfg = config_from_dict(pick["config"])
    used = ctx.evaluator.n_images
    whole = out / f"{budget0.stem}-{seed}-whole.toml"  # the same permutation of the whole search split
    whole.write_text(re.sub(r"(?m)^images\s*=.*$", "", budget.read_text()))
    ev = build_context(str(whole), threads=1).evaluator
    if ev.n_images <= used:
        raise SystemExit(f"{budget0}: [data] images must be below the search split's size ({ev.n_images})")
    exact = np.asarray(ev.correct({}, 0, ev.n_images), bool)
    approx = np.asarray(ev.correct(cfg, 0, ev.n_images), bool)
    hx = np.asarray(ctx.holdout.correct({}, 0, ctx.holdout.n_images), bool)
    hold = paired_stats(hx, np.asarray(ctx.holdout.correct(cfg, 0, ctx.holdout.n_images), bool))
    return {"seed": seed, "energy": round(pick["energy"]["system"], 4), "search_loss_pp": round(100 * pick["loss"], 2),
            "used_images": used, "used_pp_se": pp(paired_stats(exact[:used], approx[:used])),
            "unused_images": ev.n_images - used, "unused_pp_se": pp(paired_stats(exact[used:], approx[used:])),
            "holdout_pp_se": pp(hold)}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    args = sys.argv[1:]
    out = Path(args.pop(args.index("--out") + 1)) if "--out" in args else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    args = [a for a in args if a != "--out"]
    for seed in map(int, args[1:]):
        print(json.dumps(one(Path(args[0]), seed, out)), flush=True)


if __name__ == "__main__":
    main()
