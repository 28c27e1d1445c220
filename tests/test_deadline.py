"""[search] timeout_s within one trial: the run's deadline (dse.search.deadline) stops the trial in progress at the next
batch boundary and the run loop starts no new trial; the final check still runs."""
from __future__ import annotations

import time

import numpy as np
from optuna.trial import TrialState

from dse.search import rundir
from dse.search.context import EmulatorEvaluator
from dse.search.deadline import Deadline, RunTimeout
from dse.search.study import SearchContext, SearchSettings, run_search

from tests.fakes import FakeEvaluator, fake_energy, fake_space

BATCH_S = 0.02


class SlowEmulator:
    """Emulator.predict stand-in: BATCH_S per batch, every prediction right; records when each batch started."""

    def __init__(self):
        self.starts = []

    def predict(self, x, config, batch_size, cache=None, tag=None):
        self.starts.append(time.time())
        time.sleep(BATCH_S)
        return np.zeros(len(x), dtype=np.int64)


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


def test_deadline_one_shot():
    d = Deadline(time.time() - 1)
    try:
        d.check()
        raise AssertionError("no RunTimeout")
    except RunTimeout:
        pass
    d.check()  # after the trial it interrupted, the final checks run to their end
    assert Deadline.after(None) is None and not Deadline.after(60).passed()


def test_timeout_stops_the_trial_in_progress(tmp_path):
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    emu = SlowEmulator()
    trial_s = 30 * BATCH_S  # 3000 images in batches of 100
    deadline = Deadline.after(8 * trial_s)  # the exact baseline and a few trials
    ev = EmulatorEvaluator(emu, Labels(3000), batch_size=100, deadline=deadline)
    ctx = SearchContext(space=fake_space(), evaluator=ev, holdout=FakeEvaluator(1000, 1), energy=fake_energy,
                        baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"})
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
                 "[space]\nmultipliers = ['drum4']\ncv = [false]\n")
    res = search_from_budget(str(b), run_dir=tmp_path / "run")
    assert res["trials"]["complete"] == 0 and res["best"] is None and res["no_best"]
    # past the deadline no single-layer run: only changes the logit surrogate measured in its fit count as measured
    sens = res["info"]["setup"]["sensitivities"]
    assert sens["measured"] <= len(res["info"]["searchable"]) and sens["measured"] + sens["skipped"] + sens["estimated"]
