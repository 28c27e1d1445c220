"""Crash safety measured: `dse search` (2 worker processes, fake objective through the real run loop and storage) is
killed -9 20+ times, on the journal and on PostgreSQL; then one more run finishes the study. The default run kills it
9 times per storage (every kind of kill, torn records included: SHORT); the full schedules run with -m slow.

The killed runs have an n_trials they cannot reach, and the last run asks for a few more trials than were complete
(n_trials only says how long a study runs: it continues the same study). The kills are driven by what the test
observes in the study: during start-up (before or while seeding), right after a newly completed trial, after killing one spawned worker
mid-trial, and right after the run failed a dead trial (the moment between queueing a re-run and failing the trial).
After every fourth kill a torn record is left at the journal's end (disk full).

Must hold, checked after every kill and at the end: no completed trial is lost or changed, none duplicated (one
completion per re-run lineage, per seed configuration), exactly n_trials complete, every dead trial is failed and has
its re-run queued, nothing is left running, no process outlives its parent, and no wait hangs (all have timeouts)."""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import time

import pytest
from optuna.trial import TrialState

from dse.errors import DseError
from dse.search import liveness, rundir
from tests.search_process import PG_URL, alive, children, cmdline, finish, fresh_pg_budget, spawn

OPEN_ENDED = 10 ** 6  # n_trials of the killed runs: they can never finish before the test kills them
MORE_TRIALS = 12      # the last run finishes the study at n_trials = (complete so far) + MORE_TRIALS
TRIAL_SLEEP_S = 0.08  # per evaluation (about 2 per trial): bounds how far a run gets between two observations
POLL_S = 0.1
WAIT_S = 120          # the longest any single wait may take (a loaded machine starts Python slowly)
# what to wait for before killing: (mode, how many cycles); the full study's 20 kills, and the default run's 9 (every
# mode at least twice; 3 worker cycles, of which 2 must catch a worker mid-trial, as in the full study)
SCHEDULE = [("startup", 5), ("progress", 9), ("worker", 3), ("stale", 3)]
SHORT = [("startup", 2), ("progress", 2), ("worker", 3), ("stale", 2)]


class Observer:
    """The test's own reader of the study (opened once it exists, then read incrementally). Every read checks that
    no completed trial was lost or changed."""

    def __init__(self, run):
        self.run, self.study, self.complete = run, None, {}

    def trials(self) -> list:
        if self.study is None:
            try:
                self.study = rundir.load_study(self.run)
            except DseError:  # not created yet
                return []
        trials = self.study.get_trials(deepcopy=False)
        now = {t.number: (json.dumps(t.params, sort_keys=True), t.values) for t in trials
               if t.state == TrialState.COMPLETE}
        assert all(now.get(k) == v for k, v in self.complete.items()), "a completed trial was lost or changed"
        self.complete = now
        return trials

    def wait(self, cond, what: str, proc=None) -> list:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            trials = self.trials()
            if cond(trials):
                return trials
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the search ended while waiting for {what}: {proc.communicate()[1][-3000:]}")
            time.sleep(POLL_S)
        raise AssertionError(f"no {what} within {WAIT_S} s")


def _count(trials, state, **kw) -> int:
    return sum(t.state == state and all(t.user_attrs.get(k) == v for k, v in kw.items()) for t in trials)


def _stale_failed(trials) -> int:
    return sum(t.state == TrialState.FAIL and not t.user_attrs.get(liveness.SURPLUS_ATTR) for t in trials)


def _workers(pid) -> list[int]:
    return [k for k in children(pid, timeout=0.5) if "spawn_main" in cmdline(k)]


def _kill_worker_mid_trial(obs: Observer, p, rng) -> bool:
    """Kill -9 one spawned worker while it runs a trial; False if it never got that far."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and p.poll() is None:
        workers = _workers(p.pid)
        busy = {t.user_attrs[liveness.BEAT_ATTR]["pid"] for t in obs.trials()
                if t.state == TrialState.RUNNING and liveness.BEAT_ATTR in t.user_attrs}
        if busy & set(workers):
            time.sleep(rng.uniform(0.0, 0.1))
            os.kill(sorted(busy & set(workers))[0], signal.SIGKILL)
            return True
        time.sleep(POLL_S)
    return False


def _one_cycle(obs: Observer, p, mode: str, rng, log) -> None:
    before = obs.trials()
    if mode == "startup":  # start-up, study creation, seeding, the first trials
        time.sleep(rng.uniform(0.1, 2.0))
    elif mode == "progress":  # right after a trial completed (another is usually running)
        n = _count(before, TrialState.COMPLETE)
        obs.wait(lambda ts: _count(ts, TrialState.COMPLETE) > n, "newly completed trial", p)
        time.sleep(rng.uniform(0.0, 0.3))
    elif mode == "worker":  # one worker dies mid-trial; the parent goes on, then is killed too
        if _kill_worker_mid_trial(obs, p, rng):
            log["worker_kills"] += 1
        time.sleep(rng.uniform(0.2, 1.5))
    elif mode == "stale":  # right after this run failed a dead trial (and queued its re-run)
        n = _stale_failed(before)
        obs.wait(lambda ts: _stale_failed(ts) > n, "dead trial failed", p)
        time.sleep(rng.uniform(0.0, 0.05))


def _kill(p) -> None:
    workers = _workers(p.pid)
    p.kill()
    p.communicate(timeout=WAIT_S)  # the pipes close only when the workers died with their parent
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not any(alive(w) for w in workers), "a worker outlived its killed parent"


def _kill_repeatedly(tmp_path, budget, storage: str, seed: int, schedule=SCHEDULE) -> dict:
    rng = random.Random(seed)
    run = tmp_path / "run"
    obs = Observer(run)
    plan = [m for m, k in schedule for _ in range(k)]
    rng.shuffle(plan)
    log = collections.Counter()
    t0 = time.monotonic()
    while plan:
        # a "stale" cycle needs a trial left running by an earlier kill; until there is one, others (or an extra)
        running = any(t.state == TrialState.RUNNING for t in obs.trials())
        mode = next((m for m in plan if m != "stale" or running), "progress")
        if mode in plan:
            plan.remove(mode)
        t1 = time.monotonic()
        p = spawn(budget, run, storage, OPEN_ENDED, workers=2, trial_sleep=TRIAL_SLEEP_S)
        try:
            _one_cycle(obs, p, mode, rng, log)
        finally:  # also when an assertion fails: an open-ended search must not outlive the test
            _kill(p)
        log["kills"] += 1
        log[f"cycle:{mode}"] += 1
        log[f"s:{mode}"] += round(time.monotonic() - t1, 1)
        if not storage and log["kills"] % 4 == 1 and (run / "journal.log").exists():
            with open(run / "journal.log", "ab") as f:
                f.write(b'{"op_code":6,"worker_id":"dead","trial_id":1,"key":"x","val')  # disk full mid-record
            log["torn"] += 1
    log["kill_s"] = round(time.monotonic() - t0)
    n_trials = _count(obs.trials(), TrialState.COMPLETE) + MORE_TRIALS
    finish(spawn(budget, run, storage, n_trials, workers=2, trial_sleep=TRIAL_SLEEP_S), timeout=300)
    _check_final(obs.trials(), n_trials, log)
    log["n_trials"] = n_trials
    log["planned"] = sum(k for _, k in schedule)
    return log


def _check_final(trials, n_trials: int, log) -> None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a dead trial was never failed"
    requeued = {n for t in trials for n in liveness.history(t)}
    dead = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(liveness.SURPLUS_ATTR)]
    assert all(t.number in requeued for t in dead), "a dead trial was not re-run"
    lineages = collections.Counter(liveness.lineage(t) for t in complete)
    assert all(v == 1 for v in lineages.values()), "a re-run trial completed twice"
    def seed_configs(state):
        return [json.dumps(t.system_attrs[liveness.FIXED], sort_keys=True) for t in trials
                if t.state == state and t.user_attrs.get("seed")]
    # a seed whose attempts were all killed may end the study re-queued rather than complete: its last re-run was
    # queued (once its process was found dead) after the run's n_trials were taken, and it waits for the next run
    seeds, queued = seed_configs(TrialState.COMPLETE), seed_configs(TrialState.WAITING)
    assert seeds or queued, "the seed configuration was lost"
    assert len(seeds) == len(set(seeds)), "a seed configuration completed twice"
    assert not set(seeds) & set(queued), "a completed seed configuration is queued again"
    log["dead"] = len(dead)
    log["reran"] = sum(liveness.FIRST in t.system_attrs for t in complete)


def _assert_faults(log) -> None:
    assert log["kills"] >= log["planned"] and log["worker_kills"] >= 2, log
    assert log["dead"] >= 3, log  # trials really died mid-run and were re-run


@pytest.mark.parametrize("seed, schedule", [pytest.param(1, SHORT, id="short")] +
                         [pytest.param(s, SCHEDULE, id=f"full-seed{s}", marks=pytest.mark.slow) for s in (1, 3, 4, 5)])
def test_kill_search_repeatedly_journal(tmp_path, seed, schedule):
    b = tmp_path / "fault.toml"
    b.write_text("[budget]\nmax_loss_pp = 1.0\n")
    log = _kill_repeatedly(tmp_path, b, "", seed=seed, schedule=schedule)
    print(dict(log))
    _assert_faults(log)
    assert log["torn"] >= 1


@pytest.mark.skipif(not PG_URL, reason="DSE_TEST_POSTGRES_URL is not set (.ci/run sets it)")
@pytest.mark.parametrize("schedule", [pytest.param(SHORT, id="short"),
                                      pytest.param(SCHEDULE, id="full", marks=pytest.mark.slow)])
def test_kill_search_repeatedly_postgresql(tmp_path, schedule):
    log = _kill_repeatedly(tmp_path, fresh_pg_budget(tmp_path, "fault"), PG_URL, seed=2, schedule=schedule)
    print(dict(log))
    _assert_faults(log)
