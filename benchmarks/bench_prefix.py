"""Benchmark: the prefix-activation cache (dse.prefix_cache) in a real search, cache on vs off side by side.

Budgets: the bundled ResNet-8 Pareto budget (search_spaces/resnet8_pareto.toml) and a ResNet-18-class budget built
here (CIFAR-size 3x32x32 ResNet-18 from benchmarks/bench_e2e.py with random He-scaled weights; random images labelled
by the float model's own prediction, so the FxP8 network is accurate and approximations cost accuracy).

Per budget, in one process:

* set-up: ``build_context`` + the seed configurations (predictor fit, knapsack sensitivities), once with the cache
  off and once on (the seeds must come out identical);
* search: ``run_search`` with one worker, the same seed and the same (memoised) knapsack sensitivities, alternating
  cache off / on ``--repeats`` times with a fresh cache each run; trials/min = n_trials / wall time of the run.
  Every run must produce the same trials (configuration, loss, images): the cache is bit-exact.

Prints a table (medians over repeats; ratio = on / off) and the cache statistics of the last cached run.
Usage: ``python benchmarks/bench_prefix.py [--budgets resnet8 resnet18] [--n-trials N] [--repeats R]``.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import settings_for  # noqa: E402

from dse.search import rundir  # noqa: E402
from dse.search.context import build_context  # noqa: E402
from dse.search.study import run_search, seed_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"lenet5": "default.toml", "resnet8": "resnet8_pareto.toml"}  # bundled budgets by model
RESNET18_BUDGET = """
[model]
path = "{model}"
preprocess = {{ scale = 0.00392156862745098, mean = 0.5, std = 0.25 }}

[data]
calib = "{calib}"
search = "{search}"
holdout = "{holdout}"

[budget]
max_accuracy_loss = 2.0

[search]
mode = "constrained"
sampler = "tpe"
seed = 0
workers = 1
racing = [32, 0]
predictor_skip = 0.0
n_trials = 8

[space]
multipliers = ["drum5", "perf_j0_k2"]
cv = [false]
pin_first_last = true
"""


def resnet18_budget(tmp: Path, n_search: int = 64, n_holdout: int = 64, n_calib: int = 32) -> Path:
    """The ResNet-18-class budget and its model/data files in ``tmp``."""
    import onnx
    from bench_e2e import resnet18

    from dse.data import Preprocess
    from dse.model.float_exec import run_float
    from dse.model.onnx_import import load_onnx

    model = tmp / "resnet18_32.onnx"
    onnx.save(resnet18(32, classes=10), str(model))
    graph = load_onnx(model)
    pre = Preprocess(mean=(0.5,), std=(0.25,))
    rng = np.random.default_rng(0)
    paths = {}
    for name, n in (("calib", n_calib), ("search", n_search), ("holdout", n_holdout)):
        # smooth random images (upsampled 8x8 noise): less degenerate activations than white noise
        small = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.float32)
        x = np.clip(small.repeat(4, axis=2).repeat(4, axis=3) + rng.normal(0, 16, (n, 3, 32, 32)), 0, 255)
        x = x.astype(np.uint8)
        y = run_float(graph, pre.normalize(x)).argmax(axis=1)
        paths[name] = tmp / f"{name}.npz"
        np.savez(paths[name], x=x, y=y)
    budget = tmp / "resnet18_32.toml"
    budget.write_text(RESNET18_BUDGET.format(model=model, **paths))
    return budget


def setup(budget: Path, mib: float, s) -> tuple[object, list, float]:
    """(context, seed parameters, seconds) of the search set-up with a prefix cache of ``mib`` MiB (0 = off)."""
    t0 = time.perf_counter()
    ctx = build_context(str(budget), prefix_cache_mib=mib, setup_budget_s=1e9)  # time all of it, cut nothing
    seeds = seed_configs(ctx, s)
    return ctx, seeds, time.perf_counter() - t0


def ideal_skip(run_dir: Path, layers) -> float:
    """The fraction of the search's MACs an unbounded cache could skip, from the trials' configurations and images:
    image i of a trial can continue from the deepest cut whose configuration prefix an earlier trial ran on image i
    (racing evaluates every trial on the same images in the same order). What the cache policy and memory bound
    leave on the table is the gap between this and the measured fraction; what remains is the sampler's doing."""
    study = rundir.load_study(run_dir)
    cum = np.cumsum([0] + [l.macs for l in layers])
    reached: dict[tuple, int] = {}  # configuration prefix -> most images any earlier trial ran it on
    skipped = total = 0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        cfg, n = t.user_attrs.get("config"), int(t.user_attrs.get("images") or 0)
        if not cfg or not n:
            continue
        key = tuple((cfg[l.name]["multiplier"], bool(cfg[l.name]["cv"])) for l in layers)
        for j in range(1, len(key) + 1):  # reached[] shrinks with the prefix length: each layer adds its share
            m = min(n, reached.get(key[:j], 0))
            if not m:
                break
            skipped += (cum[j] - cum[j - 1]) * m
        total += cum[-1] * n
        for j in range(1, len(key) + 1):
            reached[key[:j]] = max(reached.get(key[:j], 0), n)
    return skipped / total if total else 0.0


def trials_of(run_dir: Path) -> list:
    study = rundir.load_study(run_dir)
    return [(t.number, t.params, t.user_attrs.get("loss"), t.user_attrs.get("images"))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def bench(budget: Path, n_trials: int | None, repeats: int, mib: float, tmp: Path, compare_setup: bool) -> dict:
    from dse.prefix_cache import PrefixCache

    s = settings_for(budget, 0, n_trials, 1, timeout_s=0)  # the trial count ends both runs, not the wall clock
    setup_off = None
    if compare_setup:
        ctx_off, seeds_off, setup_off = setup(budget, 0.0, s)
        print(f"{budget.name}: set-up without the prefix cache {setup_off:.1f} s", flush=True)
    ctx, seeds_on, setup_on = setup(budget, mib, s)
    print(f"{budget.name}: set-up with the prefix cache {setup_on:.1f} s", flush=True)
    assert not compare_setup or seeds_on == seeds_off, "set-up with the cache chose other seeds"
    stats_setup = ctx.evaluator.cache.stats.to_dict()
    ctx.sensitivity = functools.cache(ctx.sensitivity)  # both modes enqueue the same knapsack seeds, measured once
    seed_configs(ctx, s)
    rates: dict[str, list] = {"off": [], "on": []}
    ref, stats = None, None
    for r in range(repeats):
        for mode in ("off", "on"):
            cache = PrefixCache.from_mib(mib) if mode == "on" else None
            ctx.evaluator.cache = ctx.holdout.cache = cache
            run_dir = tmp / f"{budget.stem}-{mode}-{r}"
            t0 = time.perf_counter()
            run_search(budget, s, lambda: ctx, run_dir=run_dir, resume=False, progress=None)
            rates[mode].append(s.n_trials / ((time.perf_counter() - t0) / 60))
            print(f"{budget.name}: search, cache {mode}: {rates[mode][-1]:.2f} trials/min", flush=True)
            got = trials_of(run_dir)
            diff = next((f"trial {a[0]}: {a[1:]} vs {b[1:]}" for a, b in zip(ref or got, got) if a != b), None)
            assert ref is None or (len(got) == len(ref) and diff is None), f"cached search produced other trials: {diff}"
            ref = got
            if cache is not None:
                stats = cache.stats.to_dict()
    ideal = ideal_skip(run_dir, ctx.evaluator.emulator.qmodel.layers)
    return {"ideal": ideal, "budget": budget.name, "model": ctx.info["model"], "n_trials": s.n_trials, "setup_off": setup_off,
            "setup_on": setup_on, "off": statistics.median(rates["off"]), "on": statistics.median(rates["on"]),
            "stats": stats, "stats_setup": stats_setup, "layers": len(ctx.info["layers"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", nargs="+", default=["resnet8", "resnet18"], choices=sorted(BUDGETS) + ["resnet18"])
    ap.add_argument("--n-trials", type=int, default=None, help="override the budgets' n_trials")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mib", type=float, default=512.0, help="prefix cache size of the cached runs")
    ap.add_argument("--no-setup-compare", action="store_true",
                    help="time the set-up with the cache only (the search comparison needs one set-up)")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in a.budgets:
            budget = ROOT / "search_spaces" / BUDGETS[name] if name in BUDGETS else resnet18_budget(tmp)
            res = bench(budget, a.n_trials, a.repeats, a.mib, tmp, not a.no_setup_compare)
            rows.append(res)
            print(res, flush=True)
    tab = Table(title=f"prefix cache in the search ({a.mib:g} MiB, 1 worker, medians of {a.repeats} runs per mode)")
    for c in ("budget", "MAC layers", "trials", "trials/min off", "trials/min on", "ratio", "MACs skipped (search)",
              "unbounded cache (search)", "set-up s off", "set-up s on", "ratio", "MACs skipped (set-up)"):
        tab.add_column(c, justify="left" if c == "budget" else "right")
    for r in rows:
        tab.add_row(r["budget"], str(r["layers"]), str(r["n_trials"]), f"{r['off']:.2f}", f"{r['on']:.2f}",
                    f"{r['on'] / r['off']:.2f}x", f"{100 * r['stats']['mac_fraction_skipped']:.0f} %",
                    f"{100 * r['ideal']:.0f} %", "-" if r["setup_off"] is None else f"{r['setup_off']:.1f}",
                    f"{r['setup_on']:.1f}",
                    "-" if r["setup_off"] is None else f"{r['setup_off'] / r['setup_on']:.2f}x",
                    f"{100 * r['stats_setup']['mac_fraction_skipped']:.0f} %")
    Console(width=160).print(tab)


if __name__ == "__main__":
    main()
