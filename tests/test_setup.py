"""Search set-up: sensitivities bounded by [search] setup_budget_s (measured, then estimated or left out, and said
so), the set-up progress display, and the real context on the bundled LeNet-5 with a tiny set-up budget."""
from __future__ import annotations

import numpy as np
import pytest

from dse.search import seeds
from dse.search.context import SetupClock, Sensitivities
from dse.search.space import SearchSpace


class CountingEvaluator:
    """Per-image correctness: config-dependent, deterministic; counts the images it evaluated."""

    def __init__(self, n=100):
        self.n_images, self.images = n, 0

    def correct(self, config, start, stop):
        self.images += stop - start
        k = sum(lc.multiplier != "exact" for lc in config.values())
        return np.arange(start, stop) % 10 >= k


def _space():
    return SearchSpace.build(["a", "b", "c", "d"], ["drum4", "perf_j0_k2"], cv=[False], pin_first_last=False)


def _energy(cfg):
    return {"system": 1.0 - 0.1 * sum(lc.multiplier != "exact" for lc in cfg.values())}


def test_sensitivities_within_budget_are_measured():
    space, ev, seen = _space(), CountingEvaluator(), []
    sens = Sensitivities(ev, 50, SetupClock(None), lambda: len(seeds.candidates(space, _energy)), None,
                         lambda *a: seen.append(a))
    items = seeds.layer_items(space, sens, _energy)
    assert all(len(v) == 2 and all(abs(loss - 0.1) < 1e-12 for _, loss, _ in v) for v in items.values())
    assert sens.counts == {"measured": 8, "estimated": 0, "skipped": 0}
    assert ev.images == 50 * 9  # all-exact once + one run per (layer, choice)
    assert seen[0][1:3] == (0, 8) and seen[-1][1:3] == (8, 8) and "8 measured on 50 images" in seen[-1][3]


@pytest.mark.parametrize("estimate", [None, lambda cfg: 0.25])
def test_sensitivities_past_the_budget_are_estimated_or_left_out(estimate):
    space, ev, seen = _space(), CountingEvaluator(), []
    clock = SetupClock(1.0)
    clock.t0 -= 10  # the budget is spent before the first sensitivity
    sens = Sensitivities(ev, 50, clock, lambda: len(seeds.candidates(space, _energy)), estimate,
                         lambda *a: seen.append(a))
    items = seeds.layer_items(space, sens, _energy)
    assert ev.images == 0
    note = seen[-1][3]
    assert "setup_budget_s = 1 reached" in note
    if estimate is None:
        assert all(v == [] for v in items.values()) and sens.counts["skipped"] == 8
        assert "8 left out of the knapsack seeds" in note
        assert seeds.knapsack_seeds(space, items, 0.01) == []
    else:
        assert all(loss == 0.25 for v in items.values() for _, loss, _ in v) and sens.counts["estimated"] == 8
        assert "8 estimated by the AME predictor" in note


def test_setup_progress_prints_one_line_per_stage(capsys):
    from dse.present import SetupProgress

    p = SetupProgress()
    p("loading", 0, 1)
    p("loading", 1, 1, "model x")
    for i in range(4):
        p("sensitivities", i, 3, "" if i < 3 else "3 measured")
    out = capsys.readouterr().out
    assert "set-up: loading (" in out and "model x" in out
    assert "set-up: sensitivities (" in out and "3 measured" in out
    assert out.count("set-up:") == 2


def test_context_factory_pickles_without_the_display():
    import pickle

    from dse.present import SetupProgress
    from dse.search.context import ContextFactory

    f = pickle.loads(pickle.dumps(ContextFactory("b.toml", 2, SetupProgress())))
    assert f.budget_path == "b.toml" and f.threads == 2 and f.progress is None


def test_real_context_with_a_spent_setup_budget(tmp_path):
    """The bundled LeNet-5 with setup_budget_s so small that only the minimum of the predictor fit runs and no
    sensitivity is measured: the context says so in info["setup"] and the progress notes."""
    from dse.search.context import PREDICTOR_STAGE, build_context

    b = tmp_path / "b.toml"
    b.write_text("[data]\nimages = 60\n[search]\nworkers = 1\nsetup_budget_s = 0.001\nprefix_cache_mib = 16\n"
                 "[space]\nmultipliers = ['drum4', 'perf_j0_k2']\ncv = [false]\n")
    seen = []
    ctx = build_context(str(b), progress=lambda *a: seen.append(a))
    stages = [a[0] for a in seen]
    assert stages[0] == "model and data, FxP8 calibration" and "float32 baselines" in stages
    assert PREDICTOR_STAGE in stages
    pinfo = ctx.info["predictor"]
    assert pinfo.get("configs") == 4 or "error" in pinfo
    sur = ctx.sensitivity.surrogate
    known = sur.measured  # single-layer changes the predictor fit measured: free for the sensitivities
    items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
    c = ctx.info["setup"]["sensitivities"]
    assert sur.measured == known and c["measured"] <= known  # past the budget: no new single-layer run
    assert c["measured"] + c["estimated"] + c["skipped"] == sum(len(v) for v in items.values()) + c["skipped"]
    assert "setup_budget_s = 0.001 reached" in seen[-1][3]
