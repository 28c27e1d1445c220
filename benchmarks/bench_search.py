"""Benchmark: the bundled default search (search_spaces/default.toml, LeNet-5 on Fashion-MNIST) end to end, side by side
with the search a home-made script would run on the same emulator, energy model, budget, trial count and workers.

Variants, each run once per seed in one process (fresh run directory each time):

* ``dse``: the full search (sampler from the budget, the budget's seeds (``[search] seeds``; by default only
  all-exact), racing on growing image counts, predictor skip behind its gate), as ``dse search`` runs it;
* ``optuna-tpe``: plain Optuna TPE (multivariate, constant liar) with only the all-exact seed, every trial on all
  search images, no predictor;
* ``optuna-random``: the same with Optuna's RandomSampler;
* ``optuna-nsga2``: the same with Optuna's NSGAIISampler (constraints via set_constraint);
* ``hawq-milp``: no search: a HAWQ-V3-style integer program. Per-layer loss of each (multiplier, cv) choice measured
  alone on the sensitivity images, then minimise energy subject to the summed per-layer loss <= budget
  (scipy.optimize.milp, ``dse.search.seeds.knapsack``); the one configuration is evaluated on the whole search split
  (feasible with the same confidence bound) and on hold-out. Its "trials" is 1; its wall time includes the
  layers x choices sensitivity evaluations.

Printed per run and as medians over seeds: trials, wall time, trials/min, search-feasible trials, best energy that
passed the hold-out check (relative system energy; saving vs all-exact FxP8), its hold-out loss, and
``trials to match`` = the trial number at which that variant first held a hold-out verified configuration with
energy <= the median best of the baselines. Ratios are dse / baseline of the medians.

Every variant is judged the same way: a configuration is feasible when the upper confidence bound of its paired loss on
the search images is within budget (``[budget] confidence``), and its best is the cheapest feasible one that passed
the hold-out check (the search's final check walks down the feasible list, ``[search] n_holdout``; the integer
program's one configuration is checked once). Runs are sized by trials, not wall time (``--timeout 0``, the default,
drops the budget's ``timeout_s`` so a loaded machine runs the same trials, only slower); the seed is written into a
copy of the budget, so it also draws the search images (the same images for every variant of a seed). The integer
program's sensitivities are all measured (no set-up budget), so none is silently left out.

Usage: ``python benchmarks/bench_search.py [--seeds 0 1 2] [--variants dse optuna-tpe ... hawq-milp] [--budget FILE]
[--n-trials N] [--workers W] [--timeout S]``.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from dse.budget import load_budget
from dse.search import rundir, seeds
from dse.search.context import build_context, default_budget_path, settings_from_budget
from dse.search.objective import ATTR_VERIFIED, Objective
from dse.search.racing import paired_stats
from dse.search.study import is_feasible, run_search

VARIANTS = ("dse", "optuna-tpe", "optuna-random", "optuna-nsga2", "hawq-milp")
SAMPLER_OF = {"optuna-tpe": "tpe", "optuna-random": "random", "optuna-nsga2": "nsga2"}


def run_milp(budget: Path, seed: int) -> dict:
    """HAWQ-V3-style baseline: per-layer sensitivities (every one measured), one integer program, one evaluated
    configuration."""
    s = settings_from_budget(load_budget(budget))
    t0 = time.perf_counter()
    ctx = build_context(str(budget), fit_predictor=False, setup_budget_s=float("inf"))
    items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
    counts = ctx.info["setup"]["sensitivities"]
    if counts["estimated"] or counts["skipped"]:
        raise SystemExit(f"hawq-milp: sensitivities {counts}: every one must be measured")
    cfg = seeds.all_exact(ctx.space)
    cfg.update(seeds.knapsack(items, s.budget_loss))
    obj = Objective(ctx.space, ctx.evaluator, ctx.energy, s.budget_loss, holdout=ctx.holdout)
    st = paired_stats(obj.correct_exact, ctx.evaluator.correct(cfg, 0, ctx.evaluator.n_images))
    feasible = st.upper(s.feasibility_confidence) <= s.budget_loss
    h = obj.holdout_check(cfg) if feasible else None
    wall = time.perf_counter() - t0
    energy = float(ctx.energy(cfg)["system"])
    ok = bool(h and h["loss"] <= s.budget_loss)
    return {"variant": "hawq-milp", "seed": seed, "trials": 1, "wall": wall, "feasible": int(feasible),
            "energy": energy if ok else None, "holdout_ok": ok, "loss_holdout": h["loss"] if h else None,
            "trace": [(0, energy)] if ok else [], "budget": s.budget_loss, "model": ctx.info.get("model", "?"),
            "search_loss": st.loss, "search_ucb": st.upper(s.feasibility_confidence), "milp_energy": energy}


def reseeded(budget: Path, seed: int, out_dir: Path) -> Path:
    """A copy of ``budget`` with ``[search] seed = seed``: the seed also draws the random subset of search images, so
    runs differ in the images the feasibility decision sees, not only in the sampler (bundled budgets name bundled
    models and data, and other paths must be absolute: the copy lives elsewhere)."""
    text = budget.read_text()
    new, n = re.subn(r"(?m)^seed\s*=\s*\d+", f"seed = {seed}", text)
    if n != 1:
        raise SystemExit(f"{budget}: expected one 'seed = N' line in [search]")
    out = out_dir / f"{budget.stem}-seed{seed}.toml"
    out.write_text(new)
    return out


def settings_for(budget: Path, seed: int, n_trials, workers, timeout_s=None):
    """The budget's search settings with the benchmark's seed and optional n_trials / workers / timeout_s overrides
    (``timeout_s=0``: no wall-clock stop, the trial count alone ends the run)."""
    s = settings_from_budget(load_budget(budget))
    s.seed = seed
    if n_trials is not None:
        s.n_trials = int(n_trials)
    if workers is not None:
        s.workers = int(workers)
    if timeout_s is not None:
        s.timeout_s = float(timeout_s) or None
    return s


def run_variant(variant: str, budget: Path, seed: int, n_trials, workers, timeout_s, run_dir: Path) -> dict:
    """One variant on the (reseeded) ``budget``; every variant's best is the hold-out verified one."""
    if variant == "hawq-milp":
        return run_milp(budget, seed)
    s = settings_for(budget, seed, n_trials, workers, timeout_s)
    full = variant == "dse"
    if not full:
        s.sampler = SAMPLER_OF[variant]
        s.fidelities = [0]          # every trial on all search images
        s.predictor_skip = 0.0
        s.seeds = ()  # the all-exact seed stays: it is the reference point
    # as `dse search` does: the first process writes the context cache in the run directory, workers read it
    factory = functools.partial(build_context, str(budget), fit_predictor=full, run_dir=str(run_dir))
    t0 = time.perf_counter()
    res = run_search(budget, s, factory, run_dir=run_dir, resume=False, progress=False)
    wall = time.perf_counter() - t0
    study = rundir.load_study(run_dir)
    # verified during the search or by the final check (the same rule for every variant)
    verified = {t.number: t.user_attrs["energy"]["system"] for t in
                study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if is_feasible(t) and t.user_attrs.get(ATTR_VERIFIED)}
    verified.update({d["trial"]: d["energy"]["system"] for d in res["checked"] if d["verified"]})
    trace = sorted(verified.items())
    b = res["best"] or {}
    h = b.get("holdout") or {}
    return {"variant": variant, "seed": seed, "trials": res["trials"]["complete"], "wall": wall,
            "feasible": res["trials"]["feasible"], "energy": (b.get("energy") or {}).get("system"),
            "holdout_ok": bool(b.get("verified")), "loss_holdout": h.get("loss"), "trace": trace,
            "budget": res["budget_loss"], "model": res["info"].get("model", "?")}


def trials_to_reach(trace: list, target: float) -> int | None:
    """1-based trial count at which a hold-out verified energy <= target was first held."""
    return next((n + 1 for n, e in trace if e <= target + 1e-12), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--n-trials", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=0.0, help="per-run timeout_s; 0 = none (default)")
    ap.add_argument("--out", default=None, help="append one JSON line per finished run to this file")
    a = ap.parse_args()
    budget = Path(a.budget) if a.budget else default_budget_path()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for seed in a.seeds:
            b = reseeded(budget, seed, Path(d))
            for v in a.variants:
                r = run_variant(v, b, seed, a.n_trials, a.workers, a.timeout, Path(d) / f"{v}-{seed}")
                runs.append(r)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
                print(f"  {v} seed {seed}: {r['trials']} trials, {r['wall']:.1f} s, best {r['energy']}", flush=True)

    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    by_v = {v: [r for r in runs if r["variant"] == v] for v in a.variants}
    energies = {v: [r["energy"] for r in rs if r["energy"] is not None and r["holdout_ok"]] for v, rs in by_v.items()}
    # target for "trials to match": the best (lowest) median energy among the baselines
    base_meds = [med(energies[v]) for v in a.variants if v != "dse" and energies[v]]
    target = min(base_meds) if base_meds else None

    tab = Table(title=f"search benchmark: {runs[0]['model']}, budget {100 * runs[0]['budget']:.2f} pp, "
                      f"seeds {a.seeds}")
    for c in ("variant", "seed", "trials", "wall s", "trials/min", "feasible", "best energy", "saving",
              "hold-out loss pp", "trials to match"):
        tab.add_column(c, justify="right")
    rows = {}
    for v, rs in by_v.items():
        for r in rs:
            ok = r["energy"] if r["holdout_ok"] else None
            ttm = trials_to_reach(r["trace"], target) if target is not None else None
            r["ttm"] = ttm
            tab.add_row(v, str(r["seed"]), str(r["trials"]), f"{r['wall']:.1f}", f"{60 * r['trials'] / r['wall']:.1f}",
                        str(r["feasible"]), fmt(ok, ".4f"), fmt(None if ok is None else 100 * (1 - ok), ".1f") + " %",
                        fmt(None if r["loss_holdout"] is None else 100 * r["loss_holdout"], ".2f"), fmt(ttm, "d"))
        m = {"tpm": med([60 * r["trials"] / r["wall"] for r in rs]), "wall": med([r["wall"] for r in rs]),
             "energy": med(energies[v]), "ttm": med([r["ttm"] for r in rs if r["ttm"] is not None]),
             "matched": sum(r["ttm"] is not None for r in rs), "n": len(rs)}
        rows[v] = m
        tab.add_row(f"[bold]{v} median[/]", "", "", fmt(m["wall"], ".1f"), fmt(m["tpm"], ".1f"), "",
                    fmt(m["energy"], ".4f"), fmt(None if m["energy"] is None else 100 * (1 - m["energy"]), ".1f") + " %",
                    "", f"{fmt(m['ttm'], '.0f')} ({m['matched']}/{m['n']})", end_section=True)
    Console(width=220).print(tab)
    if "dse" in rows:
        for v in a.variants:
            if v == "dse":
                continue
            o, b = rows["dse"], rows[v]
            parts = []
            if o["energy"] and b["energy"]:
                parts.append(f"median best energy {o['energy']:.4f} vs {b['energy']:.4f} "
                             f"(saving {100 * (1 - o['energy']):.1f} % vs {100 * (1 - b['energy']):.1f} %)")
            if o["wall"] and b["wall"]:
                parts.append(f"wall ratio {o['wall'] / b['wall']:.2f}x, trials/min ratio {o['tpm'] / b['tpm']:.2f}x")
            if o["ttm"] and b["ttm"]:
                parts.append(f"trials to match {o['ttm']:.0f} vs {b['ttm']:.0f} ({b['ttm'] / o['ttm']:.1f}x fewer)")
            print(f"dse vs {v}: " + "; ".join(parts))
    print(f"'trials to match' target: energy <= {fmt(target, '.4f')} (best baseline median); "
          "a dash = never reached.")


if __name__ == "__main__":
    main()
