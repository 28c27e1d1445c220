"""Benchmark: the bundled default search (search_spaces/default.toml, LeNet-5 on Fashion-MNIST) end to end.

Prints one table: trials, wall time, trials/min, feasible trials, best relative system/multiplier energy (saving vs
all-exact FxP8), best loss on the search and hold-out splits. Usage: ``python benchmarks/bench_search.py [--n-trials N]
[--workers W] [--budget FILE] [--run-dir DIR]`` (a fresh run directory each time).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from rich.console import Console
from rich.table import Table

from dse.search.context import search_from_budget


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default=None)
    ap.add_argument("--n-trials", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--run-dir", default=None, help="keep the run here (default: a temporary directory)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = search_from_budget(a.budget, run_dir=a.run_dir or f"{d}/run", n_trials=a.n_trials, workers=a.workers,
                                 resume=False, progress=False)
        wall = time.perf_counter() - t0
    tr, b = res["trials"], res["best"] or {}
    e, h = b.get("energy", {}), b.get("holdout") or {}
    tab = Table(title=f"dse search: {res['info'].get('model', '?')}, budget {100 * res['budget_loss']:.2f} pp, "
                      f"mode {res['mode']}")
    for c in ("trials", "wall s", "trials/min", "feasible", "stopped by racing", "energy system", "saving system",
              "energy mult", "loss search pp", "loss holdout pp"):
        tab.add_column(c, justify="right")
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    tab.add_row(str(tr["complete"]), f"{wall:.1f}", f"{60 * tr['complete'] / wall:.1f}", str(tr["feasible"]),
                str(tr["stopped_racing"]), fmt(e.get("system"), ".4f"),
                fmt(None if e.get("system") is None else 100 * (1 - e["system"]), ".1f") + " %",
                fmt(e.get("multiplier"), ".4f"), fmt(None if b.get("loss") is None else 100 * b["loss"], ".2f"),
                fmt(None if h.get("loss") is None else 100 * h["loss"], ".2f"))
    Console(width=200).print(tab)
    bl = res["baseline"]
    print(f"baseline float {bl['float']}, FxP8 {bl['fxp8']}; images {res['images']}; "
          f"search elapsed {res['elapsed_s']:.1f} s (incl. calibration, seeds, hold-out check)")


if __name__ == "__main__":
    main()
