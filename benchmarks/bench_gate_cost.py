"""The search's predictor gate: its share of the search's time, with every candidate computed on every trial
(the gate before the costly-candidate schedule) and with the schedule (dse.predict.COSTLY_WARMUP / COSTLY_EVERY).

Run:  python benchmarks/bench_gate_cost.py search_spaces/default.toml [--trials 60] [--timeout 1800]

Per budget: the same search (one worker, the budget's seed, ``--trials`` trials, ``timeout_s`` raised to
``--timeout`` so the load does not cut it) twice, in one process, one after the other: the gate's wall time inside
the trials (the objective's ``predictor_s``: refit on the points so far, predict the trial) against the trials'
whole time, the propagated surrogate's network runs, the best and what the gate skipped. The set-up (calibration,
surrogates, sensitivities) is the same in both and not counted.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path


def _budget(path: Path, timeout: float, out: Path) -> Path:
    text, n = re.subn(r"(?m)^timeout_s\s*=.*$", f"timeout_s = {timeout}", path.read_text())
    if n == 0:
        text = re.sub(r"(?m)^\[search\]\s*$", f"[search]\ntimeout_s = {timeout}", text, count=1)
    out.write_text(text)
    return out


def one(budget: Path, trials: int, schedule: bool) -> dict:
    import dse.predict as pr
    from dse.search.context import search_from_budget

    warmup = pr.COSTLY_WARMUP
    runs = {"n": 0}
    features = pr.PropagatedSurrogate.features

    def counted(self, config):
        runs["n"] += not self.at_hand(config)
        return features(self, config)
    pr.PropagatedSurrogate.features = counted
    pr.COSTLY_WARMUP = warmup if schedule else 10 ** 9
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = search_from_budget(str(budget), run_dir=Path(tmp) / "run", n_trials=trials, workers=1)
            wall = time.perf_counter() - t0
    finally:
        pr.COSTLY_WARMUP, pr.PropagatedSurrogate.features = warmup, features
    rec = res["trials"]["predictor_record"]
    best = res.get("best") or {}
    return {"schedule": schedule, "wall": wall, "gate_s": rec["seconds"], "trial_s": rec["trial_seconds"],
            "propagated_runs": runs["n"], "complete": res["trials"]["complete"],
            "skipped": res["trials"]["skipped_predictor"], "used": rec["used"], "on": rec["on"],
            "best_energy": best.get("energy", {}).get("system") if best else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        b = _budget(a.budget, a.timeout, Path(tmp) / a.budget.name)
        rows = [one(b, a.trials, s) for s in (False, True)]
    print(f"`{a.budget.name}`, {a.trials} trials, one worker\n")
    print("| gate | trials | trials' time | gate's time | gate's share | propagated runs | skipped by the gate | "
          "kept (gate on) | best energy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kept = ", ".join(f"{k} {n}" for k, n in r["used"].items())
        print(f"| {'costly schedule' if r['schedule'] else 'every candidate, every trial'} | {r['complete']} | "
              f"{r['trial_s']:.0f} s | {r['gate_s']:.1f} s | {100 * r['gate_s'] / max(r['trial_s'], 1e-9):.1f} % | "
              f"{r['propagated_runs']} | {r['skipped']} | {kept} ({r['on']}) | {r['best_energy']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
