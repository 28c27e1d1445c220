"""Benchmark: how often the search's best passes the hold-out check, and what the statistical margin costs in energy.

For each budget x seed the real search runs (model, data, racing, predictor and seeds as the budget says; ``--n-trials``
and ``--workers`` override it). From the finished study three candidates are taken and re-evaluated on the hold-out
split, side by side (the seed is written into a copy of the budget, so it also draws the search images):

* ``first``: the search's first pick, the lowest-energy configuration feasible on the search images that also passed
  the confirmation on search-split images it was not chosen on (``[data] confirm``; results.json ``first_pick``, the
  first configuration the final check tries on hold-out);
* ``margin``: the lowest-energy full-fidelity configuration whose loss *upper confidence bound* at ``[budget]
  confidence`` on the search images is within budget (the first pick without the confirmation);
* ``bonferroni``: the lowest-energy full-fidelity configuration whose search-split bound at level ``1 - (1 -
  confidence) / m`` is within budget, ``m`` = the run's full-fidelity configurations cheaper than all-exact (a bound
  that grows with the number of configurations compared, the alternative to a confirmation);
* ``point``: the lowest-energy full-fidelity configuration whose *measured* search-split loss is within budget (the
  rule without a margin, confidence 0.5). All come from the same study, so the sampler was guided by the search's
  rule; the other picks are what that study would have reported without confirmation / without any margin.

``fresh``: the reported best re-measured on the search-split images neither the search, the confirmation nor the
hold-out check used (dse.search.context.search_split ``unused``), so "the reported best holds on held-out data" is
checked on data that did not verify it. On ~1000 images a point loss over budget is often noise, so the summary also
counts the runs whose loss is significantly over budget (paired lower bound at ``[budget] confidence`` above it) and
pools all runs' images into one loss with its standard error.

Printed per run and summed: each pick's energy and hold-out loss and whether it passed (hold-out loss <= budget),
the pass rates over runs; ``verified`` is the search's reported best (always hold-out verified, or none) and
``point verified`` the best the same walk down the list would give under the point rule (up to 20 checks). The energy
cost of the margin is ``verified - point verified``, that of the confirmation for the first pick ``first - margin``
(relative system energy vs all-exact FxP8).

Each pass rate comes with its one-sided 95 % Clopper-Pearson lower bound (scipy.stats.binomtest). For Pareto budgets
each run also records the front as the report shows it (energy, search loss, feasible, hold-out verdict).

Runs are sized by trials, not wall time: ``--timeout 0`` (the default) drops the budget's ``timeout_s`` so a loaded
machine runs the same trials, only slower. ``--out FILE`` appends one JSON line per finished run (a long benchmark
keeps what it measured if stopped); ``--summarize FILE ...`` prints the tables and rates of such files without
running anything.

Usage: ``python benchmarks/bench_holdout.py [--budgets FILE ...] [--seeds 0 1 2 3 4] [--n-trials N] [--workers W]
[--timeout S] [--threads T] [--out runs.jsonl] [--summarize runs.jsonl ...]``.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, norm
from rich.console import Console
from rich.table import Table

from dse.layer_config import config_from_dict
from dse.search import rundir
from dse.search.context import build_context
from dse.search.objective import ATTR_LOSS_UCB, EXACT_ENERGY, full_trials
from dse.search.racing import PairedStats, paired_stats
from dse.search.study import run_search, trial_summary

from bench_search import reseeded, settings_for  # beside this script

BUNDLED = Path(__file__).resolve().parents[1] / "search_spaces"


def _stats_on(ev, exact, ua):
    """Paired statistics of the trial with user attributes / summary ``ua`` on all of evaluator ``ev``'s images."""
    return paired_stats(exact, ev.correct(config_from_dict(ua["config"]), 0, ev.n_images))


def _loss_on(ev, exact, ua) -> float:
    """Paired loss of the trial with user attributes / summary ``ua`` on all of evaluator ``ev``'s images."""
    return _stats_on(ev, exact, ua).loss


def _exact(ev) -> np.ndarray:
    return np.asarray(ev.correct({}, 0, ev.n_images), dtype=bool)


def full_points(run_dir: Path) -> list[dict]:
    """User attributes of the run's distinct full-fidelity trials cheaper than all-exact, cheapest first."""
    study = rundir.load_study(run_dir)
    full = [t.user_attrs for t in full_trials(study) if t.user_attrs["energy"]["system"] < EXACT_ENERGY]
    return sorted(full, key=lambda ua: ua["energy"]["system"])


def run_one(budget: Path, seed: int, n_trials, workers, timeout_s, threads, run_dir: Path) -> dict:
    name = budget.name
    budget = reseeded(budget, seed, run_dir.parent)
    s = settings_for(budget, seed, n_trials, workers, timeout_s)
    ctx = build_context(str(budget), threads=threads)
    # one process reuses the context built here; worker processes build their own from the budget
    factory = (lambda: ctx) if s.workers == 1 else functools.partial(build_context, str(budget), threads=threads)
    t0 = time.perf_counter()
    res = run_search(budget, s, factory, run_dir=run_dir, resume=False, progress=False)
    wall = time.perf_counter() - t0
    full = full_points(run_dir)
    exact_hold = _exact(ctx.holdout)
    _holdout_loss = functools.partial(_loss_on, ctx.holdout)
    out = {"budget": name, "seed": seed, "wall": wall, "trials": res["trials"]["complete"],
           "budget_loss": s.budget_loss, "mode": res["mode"], "images": res["info"]["data"]}
    first = next((d for d in res["checked"] if d["trial"] == res["first_pick"]), None)
    if first is None and res["first_pick"] is not None:  # confirmed, but left unchecked by the final check
        first = trial_summary(rundir.load_study(run_dir).trials[res["first_pick"]])
    if first is None:
        out["first"] = None
    else:
        hl = first["holdout"]["loss"] if first["holdout"] else _holdout_loss(exact_hold, first)
        out["first"] = {"trial": first["trial"], "energy": first["energy"]["system"], "loss": first["loss"],
                        "confirm": (first["confirm"] or {}).get("loss"), "holdout": hl, "passed": hl <= s.budget_loss}
    # Bonferroni over the configurations compared: each bound at level 1 - (1 - confidence) / m
    z_m = norm.ppf(1 - (1 - s.feasibility_confidence) / max(1, len(full)))
    for rule, ok in (("margin", lambda ua: ua[ATTR_LOSS_UCB] <= s.budget_loss),
                     ("bonferroni", lambda ua: ua["loss"] + z_m * ua["loss_se"] <= s.budget_loss),
                     ("point", lambda ua: ua["loss"] <= s.budget_loss)):
        pick = next((ua for ua in full if ok(ua)), None)
        if pick is None:
            out[rule] = None
            continue
        hl = _holdout_loss(exact_hold, pick)
        out[rule] = {"energy": pick["energy"]["system"], "loss": pick["loss"], "holdout": hl,
                     "passed": hl <= s.budget_loss}
    out["point_verified"] = None
    for ua in [ua for ua in full if ua["loss"] <= s.budget_loss][:20]:
        hl = _holdout_loss(exact_hold, ua)
        if hl <= s.budget_loss:
            out["point_verified"] = {"energy": ua["energy"]["system"], "holdout": hl}
            break
    b = res["best"]
    out["verified"] = None if b is None else {"energy": b["energy"]["system"], "holdout": b["holdout"]["loss"]}
    if b is not None and ctx.unused is not None:  # the reported best on images neither the search nor a check used
        st = _stats_on(ctx.unused, _exact(ctx.unused), b)
        out["verified"].update(fresh=st.loss, fresh_images=st.n, fresh_passed=st.loss <= s.budget_loss,
                               fresh_b=st.b, fresh_c=st.c,
                               fresh_over=st.lower(s.feasibility_confidence) > s.budget_loss)
    # the Pareto front as the report shows it (Pareto budgets): energy, search loss, feasible, hold-out verdict
    out["front"] = [{"trial": d["trial"], "energy": d["energy"]["system"], "loss": d["loss"],
                     "feasible": d["feasible"], "verified": d["verified"]} for d in res["pareto_front"]]
    return out


def _fmt(d, key, pct=False):
    if d is None:
        return "-"
    v = d[key]
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", nargs="+", default=[str(BUNDLED / "default.toml"),
                                                     str(BUNDLED / "resnet8_pareto.toml")])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n-trials", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=0.0, help="per-worker timeout_s; 0 = none (default)")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads per process (default: cores / workers)")
    ap.add_argument("--out", default=None, help="append one JSON line per finished run to this file")
    ap.add_argument("--summarize", nargs="+", default=None, help="only print the summary of these --out files")
    a = ap.parse_args()
    if a.summarize:
        summarize([json.loads(line) for f in a.summarize for line in Path(f).read_text().splitlines() if line])
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in a.budgets:
            for seed in a.seeds:
                r = run_one(Path(b), seed, a.n_trials, a.workers, a.timeout, a.threads, Path(tmp) / f"{Path(b).stem}-{seed}")
                rows.append(r)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
                print(f"{r['budget']} seed {seed}: margin {r['margin']} point {r['point']} verified {r['verified']} "
                      f"point verified {r['point_verified']} ({r['wall']:.0f} s)", flush=True)
    summarize(rows)


def lower_bound(k: int, n: int) -> float:
    """One-sided 95 % Clopper-Pearson lower bound of a pass rate with k of n passing."""
    return float(binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low)


def summarize(rows: list[dict]) -> None:
    """Per-run table, pass rates with their lower bounds, the margin's energy cost."""
    tab = Table(title="search-split pick vs hold-out (energy: relative system energy; loss in pp)")
    for c in ("budget", "seed", "trials", "wall s", "first energy", "first hold-out loss", "first passed",
              "margin energy", "margin hold-out loss", "margin passed", "point energy", "point hold-out loss",
              "point passed", "verified best energy", "fresh loss", "point verified energy"):
        tab.add_column(c)
    passed = lambda d: "-" if d is None else ("yes" if d["passed"] else "no")  # noqa: E731
    for r in rows:
        f, m, p, v = r["first"], r["margin"], r["point"], r["verified"]
        tab.add_row(r["budget"], str(r["seed"]), str(r["trials"]), f"{r['wall']:.0f}", _fmt(f, "energy"),
                    _fmt(f, "holdout", True), passed(f), _fmt(m, "energy"), _fmt(m, "holdout", True), passed(m),
                    _fmt(p, "energy"), _fmt(p, "holdout", True), passed(p), _fmt(v, "energy"),
                    _fmt(v if v and "fresh" in v else None, "fresh", True), _fmt(r["point_verified"], "energy"))
    con = Console(width=250)
    con.print(tab)
    for rule in ("first", "margin", "bonferroni", "point"):
        if not any(rule in r for r in rows):  # runs recorded before the rule was measured
            continue
        for name in sorted({r["budget"] for r in rows}) + [None]:
            picks = [r[rule] for r in rows if r.get(rule) is not None and name in (None, r["budget"])]
            rate = sum(p["passed"] for p in picks) / len(picks) if picks else float("nan")
            k = sum(p["passed"] for p in picks)
            bound = f", one-sided 95 % lower bound {100 * lower_bound(k, len(picks)):.0f} %" if picks else ""
            con.print(f"{rule}, {name or 'all budgets'}: {k}/{len(picks)} picks pass hold-out ({100 * rate:.0f} %"
                      f"{bound})")
    for what, a_key, b_key in (("first picks, confirmation", "first", "margin"),
                               ("first picks, Bonferroni", "bonferroni", "margin"), ("first picks", "first", "point"),
                               ("verified bests", "verified", "point_verified")):
        both = [(r[a_key]["energy"], r[b_key]["energy"]) for r in rows if r.get(a_key) and r[b_key]]
        if both:
            cost = [m - p for m, p in both]
            con.print(f"energy cost, {what} ({a_key} - {b_key}): median {statistics.median(cost):+.4f}, "
                      f"mean {statistics.fmean(cost):+.4f}, max {max(cost):+.4f} over {len(both)} runs")
    ver = [r for r in rows if r["verified"] is not None]
    con.print(f"reported (hold-out verified) best: {len(ver)}/{len(rows)} runs have one")
    fresh = [r["verified"] for r in ver if "fresh" in r["verified"]]
    if fresh:
        k = sum(v["fresh_passed"] for v in fresh)
        con.print(f"reported best on never-used search-split images ({fresh[0]['fresh_images']} per run): {k}/"
                  f"{len(fresh)} within budget (one-sided 95 % lower bound {100 * lower_bound(k, len(fresh)):.0f} %), "
                  f"mean loss {100 * statistics.fmean(v['fresh'] for v in fresh):.2f} pp, max "
                  f"{100 * max(v['fresh'] for v in fresh):.2f} pp")
        tested = [v for v in fresh if "fresh_over" in v]  # runs recorded before the paired counts were kept
        if tested:
            # a point loss over budget on ~1000 images is often noise: the paired test says whether it is significant,
            # and pooling the runs' images gives the mean loss of a reported best with its standard error
            pooled = PairedStats(n=sum(v["fresh_images"] for v in tested), b=sum(v["fresh_b"] for v in tested),
                                 c=sum(v["fresh_c"] for v in tested), acc_exact=float("nan"), acc=float("nan"))
            con.print(f"  of {len(tested)} runs with paired counts: {sum(v['fresh_over'] for v in tested)} "
                      f"significantly over budget (the loss's lower bound at the budget's confidence above it); pooled over "
                      f"{pooled.n} images: loss {100 * pooled.loss:.2f} pp, standard error {100 * pooled.se:.2f} pp")
    for r in rows:
        if r.get("mode") == "pareto":
            f = [d for d in r["front"] if d["energy"] < 1.0]
            con.print(f"Pareto front, {r['budget']} seed {r['seed']}: {len(f)} points cheaper than all-exact, energy "
                      f"{min((d['energy'] for d in f), default=float('nan')):.4f} .. "
                      f"{max((d['energy'] for d in f), default=float('nan')):.4f}, feasible "
                      f"{sum(d['feasible'] for d in f)}, hold-out passed {sum(d['verified'] is True for d in f)} / "
                      f"failed {sum(d['verified'] is False for d in f)} / feasible not checked "
                      f"{sum(d['feasible'] and d['verified'] is None for d in f)}; checked at or above all-exact: "
                      f"{sum(d['verified'] is not None for d in r['front'] if d['energy'] >= 1.0)}")


if __name__ == "__main__":
    main()
