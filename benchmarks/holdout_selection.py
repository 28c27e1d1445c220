"""Benchmark: is a first pick's search-vs-hold-out gap selection on the search images?

For each seed: the search of ``bench_holdout.py`` (the budget reseeded, 30 trials, one worker, no timeout), then its
search-split pick without confirmation (cheapest full-fidelity configuration whose loss upper bound on the search
images is within budget) measured on the parts of the same search split it was not chosen on (the confirmation images
and the never-used rest, dse.search.context.search_split) and on the hold-out split. Prints one JSON line per seed.

Usage: ``python benchmarks/holdout_selection.py BUDGET.toml SEED [SEED ...] [--out DIR]``.
"""
import json
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
    """User attributes of the cheapest full-fidelity configuration whose loss upper bound on the search images is
    within budget (the ``margin`` pick of bench_holdout.py)."""
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
    row = {"seed": seed, "energy": round(pick["energy"]["system"], 4), "search_loss_pp": round(100 * pick["loss"], 2),
           "used_images": ctx.evaluator.n_images}
    # the parts of the search split the search did not choose on (dse.search.context.search_split), and hold-out
    for part, ev in (("confirm", ctx.confirm), ("unused", ctx.unused), ("holdout", ctx.holdout)):
        if ev is None:
            continue
        exact = np.asarray(ev.correct({}, 0, ev.n_images), bool)
        row[f"{part}_images"] = ev.n_images
        row[f"{part}_pp_se"] = pp(paired_stats(exact, np.asarray(ev.correct(cfg, 0, ev.n_images), bool)))
    return row


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
