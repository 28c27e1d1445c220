"""Acceptance studies on the bundled default (slow: run with `pytest -m slow`).

Issue 3, item 5: the bundled default finishes in <= 3 minutes on 2 cores and finds a feasible configuration with lower
energy than FxP8 within a 1 pp budget (also on the held-out split), and `dse evaluate --config` of the exported
configuration reproduces the hold-out accuracy the search reported.
"""
from __future__ import annotations

import json
import time

import pytest

from dse.cli import main


@pytest.mark.slow
def test_default_search_meets_budget_in_three_minutes(tmp_path, capsys):
    run = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["search", "--run-dir", str(run)]) == 0
    wall = time.perf_counter() - t0
    assert wall <= 180.0, f"default search took {wall:.0f} s"
    res = json.loads((run / "results.json").read_text())
    best = res["best"]
    assert best["feasible"] and best["verified"]
    assert best["loss"] <= res["budget_loss"] + 1e-12
    assert best["holdout"]["loss"] <= res["budget_loss"] + 1e-12
    assert best["energy"]["system"] < 1.0
    # The approximate multipliers themselves cost less than exact ones. The headline "multiplier" ratio also counts
    # the control-variate column (part of the multiplier unit), which the system-energy objective may well pay for:
    # one run's best had multipliers at 0.78x exact and the unit with CV at 1.35x, at 0.32x system energy.
    mult = best["energy"]["components"]["multiplier"]
    assert mult["config"] < mult["exact"]
    assert any(v["multiplier"] != "exact" for v in best["config"].values())

    cfg = tmp_path / "best.toml"
    assert main(["export", str(run), "-o", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "lenet5", "--config", str(cfg), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == best["holdout"]["images"]
    assert ev["configured"] == pytest.approx(best["holdout"]["accuracy"], abs=1e-12)
    assert ev["fxp8"] - ev["configured"] <= res["budget_loss"] + 1e-12
