"""[search] timeout_s within one trial: the run's deadline (dse.search.deadline) stops the trial in progress at the next
batch boundary (also a single-layer change the logit surrogate measures inside a trial), the run loop starts no new
trial, and hold-out checks (in a trial or in the final check) stop at it; the results then say which best is verified,
or that none is, and what to do."""
from __future__ import annotations

import time

import numpy as np
from optuna.trial import TrialState

from dse.search import rundir
from dse import present
from dse.layer_config import LayerConfig
from dse.predict import LogitSurrogate
from dse.report import load_run, summarize
from dse.search.context import EmulatorEvaluator
from dse.search.deadline import Deadline, RunTimeout
from dse.search.study import SearchContext, SearchSettings, run_search

from tests.fakes import FakeEvaluator, FixedPredictor, fake_energy, fake_space

BATCH_S = 0.02


class SlowEmulator:
    """Emulator stand-in: BATCH_S per batch of an approximate configuration (the exact one is instant, as the exact
    baselines are cheap next to a trial, unless ``slow_exact``: a large split's exact baseline), every prediction
    right; records when each slow batch started."""

    def __init__(self, batch_s=BATCH_S, slow_exact: bool = False):
        self.starts, self.batch_s, self.slow_exact = [], batch_s, slow_exact

    def slow(self, config) -> bool:
        return bool(config) or self.slow_exact

    def run(self, x, config, batch_size, cache=None, tag=None):
        if self.slow(config):
            self.starts.append(time.time())
            time.sleep(self.batch_s)
        return np.zeros((len(x), 3), dtype=np.float32)

    def predict(self, x, config, batch_size, cache=None, tag=None):
        return self.run(x, config, batch_size).argmax(1)


class DeadlineAtFirstRun(SlowEmulator):
    """SlowEmulator whose first slow run (or the one starting batch ``at_batch``) moves ``deadline`` to 1.5 batches
    from now: that run is cut after two batches, whatever the machine's speed before it."""

    def __init__(self, deadline, batch_s, at_batch: int = 0, slow_exact: bool = False):
        super().__init__(batch_s, slow_exact)
        self.deadline, self.at_batch = deadline, at_batch

    def run(self, x, config, batch_size, cache=None, tag=None):
        if self.slow(config) and len(self.starts) == self.at_batch:
            self.deadline.at = time.time() + 1.5 * self.batch_s
        return super().run(x, config, batch_size)


class Labels:
    """Dataset stand-in: n images, label 0."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def batches(self, batch_size, start=0, stop=None):
        stop = self.n if stop is None else min(stop, self.n)
        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            yield np.zeros((j - i, 1)), np.zeros(j - i, dtype=np.int64)


def test_deadline_raises_only_inside_a_trial():
    d = Deadline(time.time() - 1)
    d.check()  # set-up, exact baselines, final check: never interrupted
    with d.trial():
        try:
            d.check()
            raise AssertionError("no RunTimeout")
        except RunTimeout:
            pass
    d.check()
    assert d.passed() and not d.armed
    assert Deadline.after(None) is None and not Deadline.after(60).passed()


def test_timeout_stops_the_trial_in_progress(tmp_path):
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    trial_s = 30 * BATCH_S  # 3000 images in batches of 100
    deadline = Deadline.after(600)
    # the deadline passes inside the third trial, whatever the time spent between trials (sampling, storage) on a
    # loaded machine
    emu = DeadlineAtFirstRun(deadline, BATCH_S, at_batch=60)
    ev = EmulatorEvaluator(emu, Labels(3000), batch_size=100, deadline=deadline)
    ctx = SearchContext(space=fake_space(), evaluator=ev, holdout=FakeEvaluator(1000, 1), energy=fake_energy,
                        baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"},
                        deadline=deadline)
    t0 = time.time()
    res = run_search(budget, SearchSettings(budget_loss=0.01, n_trials=40, workers=1, fidelities=[0]), lambda: ctx,
                     run_dir=tmp_path / "run", progress=False)
    wall = time.time() - t0
    assert not [s for s in emu.starts if s >= deadline.at]  # no batch started after the deadline
    assert wall < deadline.at - t0 + trial_s + 2.0  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 40
    study = rundir.load_study(tmp_path / "run")
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert failed and "RunTimeout" in failed[-1].user_attrs["error"]


def test_real_search_whose_setup_outlasts_the_timeout(tmp_path):
    """timeout_s counts from the start: a set-up longer than it leaves no time for trials; the run still ends with its
    results (no best, and says why) instead of running trials past the timeout or crashing in the set-up."""
    from dse.search.context import search_from_budget

    b = tmp_path / "b.toml"
    b.write_text("[data]\nimages = 40\n[search]\nworkers = 1\nn_trials = 5\nracing = [0]\ntimeout_s = 0.01\n"
                 "seeds = ['knapsack']\n"
                 "[space]\nmultipliers = ['drum4']\ncv = [false]\n")
    res = search_from_budget(str(b), run_dir=tmp_path / "run")
    assert res["trials"]["complete"] == 0 and res["best"] is None and res["no_best"]
    # past the deadline no single-layer run: only changes the logit surrogate measured in its fit count as measured
    sens = res["info"]["setup"]["sensitivities"]
    assert sens["measured"] <= len(res["info"]["searchable"]) and sens["measured"] + sens["skipped"] + sens["estimated"]


def _run_until(tmp_path, ctx, n_trials=400, **settings):
    """run_search on ``ctx``; returns (results, start time)."""
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    t0 = time.time()
    res = run_search(budget, SearchSettings(budget_loss=0.01, n_trials=n_trials, workers=1, fidelities=[0], **settings),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    return res, t0


def _slow_holdout_ctx(emu, deadline) -> SearchContext:
    """A fake search (instant search split) whose 4000-image hold-out split runs on ``emu`` in chunks of 256."""
    hold = EmulatorEvaluator(emu, Labels(4000), batch_size=256)
    return SearchContext(space=fake_space(), evaluator=FakeEvaluator(3000, 0), holdout=hold, energy=fake_energy,
                         baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"},
                         deadline=deadline)


def test_holdout_checks_stop_at_the_deadline(tmp_path, capsys):
    """A hold-out check takes 4 s (16 chunks of 0.25 s) and the deadline passes during the first one (in a trial): it
    is cut at the deadline (the trial keeps its search result, unchecked), no hold-out chunk starts after it, the final
    check checks nothing more, and the run ends within one chunk; the results and `dse report` say that no best is
    verified, why, and what to do."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.25)  # the first hold-out check is cut after two chunks
    ctx = _slow_holdout_ctx(emu, deadline)
    res, t0 = _run_until(tmp_path, ctx)
    wall = time.time() - t0
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at]
    assert wall < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 400 and res["best"] is None and not res["checked"]
    assert res["unchecked"] and "[search] timeout_s reached" in res["check_note"]
    assert "timeout_s passed before the hold-out check" in res["no_best"]
    assert "re-run the same command" in res["no_best"]
    s = summarize(load_run(tmp_path / "run"))
    assert s["best"] is None and s["check_note"] == res["check_note"] and s["no_best"] == res["no_best"]
    present.report(s)
    present.search_result(res)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("[search] timeout_s reached") == 2 and out.count("timeout_s passed before the hold-out") == 2
    # resumed with time to spare, the final check verifies a best (the same trials, no new ones)
    ctx.deadline, n = Deadline.after(600), res["trials"]["complete"]
    res = run_search(tmp_path / "b.toml", SearchSettings(budget_loss=0.01, n_trials=n, workers=1, fidelities=[0]),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    assert res["best"]["verified"] and res["best"]["holdout"]["images"] == 4000 and "check_note" not in res


def test_surrogate_single_layer_runs_in_a_trial_stop_at_the_deadline(tmp_path):
    """The logit surrogate measures a single-layer change it lacks with a network run inside the trial that first
    needs it; that run goes through the search evaluator and stops within one batch of the deadline (build_context
    wires it the same way)."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.05)  # the first single-layer run is cut after two batches
    ev = EmulatorEvaluator(emu, Labels(300), batch_size=30, deadline=deadline)  # one change: 10 batches, 0.5 s
    sur = LogitSurrogate(lambda c: ev.logits(c, 0, 300), np.zeros(300, dtype=np.int64))
    ctx = SearchContext(space=fake_space(), evaluator=FakeEvaluator(3000, 0), holdout=FakeEvaluator(1000, 1),
                        energy=fake_energy, predictor=FixedPredictor(sur.raw_loss),
                        baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"}, deadline=deadline)
    res, t0 = _run_until(tmp_path, ctx, seeds=())  # from trial 1 on every trial asks the predictor
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at] and sur.measured == 0
    assert time.time() - t0 < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 400
    study = rundir.load_study(tmp_path / "run")
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert failed and "RunTimeout" in failed[-1].user_attrs["error"]
    # outside a trial (set-up) the same run is never interrupted
    assert deadline.passed() and sur.single_loss("conv2", LayerConfig("perf_2_2", True)) == 0.0


def test_exact_holdout_baseline_stops_at_the_deadline(tmp_path, capsys):
    """The hold-out split's FxP8-exact baseline (4 s: 16 chunks of 0.25 s) is the first thing a hold-out check computes;
    the deadline passes during it: it is cut within one chunk, not run to the end for the check or for the results, whose
    baseline says it was not measured, why, and what to do."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.25, slow_exact=True)
    ctx = _slow_holdout_ctx(emu, deadline)
    res, t0 = _run_until(tmp_path, ctx)
    wall = time.time() - t0
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at] and len(emu.starts) < 16
    assert wall < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert res["baseline"]["fxp8"]["holdout"] is None and res["baseline"]["fxp8"]["search"] is not None
    assert "[search] timeout_s reached" in res["baseline_note"] and "re-run the same command" in res["baseline_note"]
    s = summarize(load_run(tmp_path / "run"))
    assert s["baseline_note"] == res["baseline_note"]
    present.report(s)
    present.search_result(res)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("FxP8-exact accuracy not measured") == 2
    # resumed with time to spare: the baseline and a verified best are measured
    ctx.deadline = Deadline.after(600)
    res = run_search(tmp_path / "b.toml", SearchSettings(budget_loss=0.01, n_trials=res["trials"]["complete"],
                                                         workers=1, fidelities=[0]),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    assert res["baseline"]["fxp8"]["holdout"] == 1.0 and "baseline_note" not in res and res["best"]["verified"]
