"""The search's predictor gate: its share of the search's trial time, on the code imported (run it once with this
checkout and once with ``PYTHONPATH`` pointing at an older one to compare; both print one row of the same table).

Run:  python benchmarks/bench_gate_cost.py search_spaces/default.toml --label after [--trials 60] [--timeout 1800]
      PYTHONPATH=/path/to/older/checkout python benchmarks/bench_gate_cost.py ... --label before

One search of the budget (one worker, in this process, the budget's seed, ``--trials`` trials, ``timeout_s`` raised to
``--timeout`` so the load does not cut it): the time spent in the objective's ``_predict`` (the gate refitted on
the points so far and predicting the trial; timed by wrapping it, which works on older versions too) in every trial,
against the trials' whole time (Optuna's start/complete times), the propagated surrogate's network runs in it
(``PropagatedSurrogate.logits`` calls), the trials the gate sat out (``[search] predictor_max_share``; "-" on code
without it), how often it switched on or off, what it skipped and kept, the best and the wall time (set-up included);
the propagated surrogate's images (the most of its network runs), the set-up (from the start to the first trial's) and
the trials per minute (completed trials over the time from the first trial's start to the last one's end).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_edit import budget_with  # noqa: E402


def one(budget: Path, trials: int) -> dict:
    import dse.predict as pr
    from dse.search import objective, rundir
    from dse.search.context import search_from_budget

    clock = {"gate": 0.0, "runs": 0, "inside": False, "images": set()}
    predict, logits = objective.Objective._predict, pr.PropagatedSurrogate.logits

    def timed_predict(self, *a, **kw):   # the gate's work before a trial: refit on the points so far, predict
        t0, clock["inside"] = time.perf_counter(), True
        try:
            return predict(self, *a, **kw)
        finally:
            clock["gate"] += time.perf_counter() - t0
            clock["inside"] = False

    def counted_logits(self, *a, **kw):
        clock["runs"] += clock["inside"]
        clock["images"].add(self.n_images)
        return logits(self, *a, **kw)
    objective.Objective._predict, pr.PropagatedSurrogate.logits = timed_predict, counted_logits
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0, started = time.perf_counter(), datetime.now()
            res = search_from_budget(str(budget), run_dir=Path(tmp) / "run", n_trials=trials, workers=1)
            wall = time.perf_counter() - t0
            done = [t for t in rundir.load_study(Path(tmp) / "run").trials if t.datetime_complete is not None]
    finally:
        objective.Objective._predict, pr.PropagatedSurrogate.logits = predict, logits
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    best = res.get("best") or {}
    rec = res["trials"].get("predictor_record", {})
    return {"wall": wall, "setup_s": (first - started).total_seconds(),
            "per_min": 60 * len(done) / max((last - first).total_seconds(), 1e-9),
            "prop_images": max(clock["images"], default="-"), "gate_s": clock["gate"], "propagated_runs": clock["runs"],
            "trial_s": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done),
            "complete": res["trials"]["complete"], "skipped": res["trials"]["skipped_predictor"],
            "used": rec.get("used", {}), "on": rec.get("on", 0), "paused": rec.get("paused", "-"),
            "switches": len(res["trials"].get("predictor_switches", [])),
            "best": best.get("energy", {}).get("system") if best else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--header", action="store_true", help="print the table's header first")
    a = ap.parse_args()
    if a.header:
        print("| budget | code | propagated images | set-up | trials/min | trials | trials' time | gate's time in them | gate's share | propagated runs | "
              "sat out | switches | skipped by the gate | predicted by (gate on) | best energy | wall |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        r = one(budget_with(a.budget, "search", {"timeout_s": a.timeout}, Path(tmp) / a.budget.name), a.trials)
    import dse

    kept = ", ".join(f"{k} {n}" for k, n in r["used"].items())
    print(f"| `{a.budget.name}` | {a.label} (`{Path(dse.__file__).parent.parent}`) | {r['prop_images']} | "
          f"{r['setup_s']:.0f} s | {r['per_min']:.1f} | {r['complete']} | "
          f"{r['trial_s']:.0f} s | {r['gate_s']:.1f} s | {100 * r['gate_s'] / max(r['trial_s'], 1e-9):.1f} % | "
          f"{r['propagated_runs']} | {r['paused']} | {r['switches']} | {r['skipped']} | {kept} ({r['on']}) | "
          f"{r['best']:.4f} | {r['wall']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
