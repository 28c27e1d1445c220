"""Crash safety measured: `dse search` (2 worker processes, fake objective through the real run loop and storage) is
killed -9 at random moments, 20+ times, on the journal and on PostgreSQL; sometimes only a spawned worker is killed,
sometimes a torn record is left at the journal's end (disk full). Then one more run finishes the study.

Must hold: no completed trial is lost or changed, none duplicated, exactly n_trials complete, every dead trial is
failed and re-run, no process outlives its parent, and no wait hangs (every wait has a timeout)."""
from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from optuna.trial import TrialState

from dse.search import rundir
from tests.test_storage import PG_URL, _alive, _children, _cmdline, _fresh_pg_budget, finish, spawn

N_TRIALS = 120


def _snapshot(run) -> dict:
    try:
        study = rundir.load_study(run)
    except Exception:  # noqa: BLE001 - killed before the study existed
        return {}
    return {t.number: (json.dumps(t.params, sort_keys=True), t.values)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def _last_number(run) -> int:
    try:
        return max((t.number for t in rundir.load_study(run).get_trials(deepcopy=False)), default=-1)
    except Exception:  # noqa: BLE001 - the study does not exist yet
        return -1


def _wait_running(run, after: int, timeout) -> None:
    """Until a trial numbered above ``after`` (one this process started) is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(t.number > after for t in
                   rundir.load_study(run).get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
                return
        except Exception:  # noqa: BLE001 - the study does not exist yet
            pass
        time.sleep(0.1)


def _worker_pids(pid) -> list[int]:
    return [k for k in _children(pid, timeout=0.5) if "spawn_main" in _cmdline(k)]


def _kill_at_random(tmp_path, budget, storage: str, kills: int, seed: int):
    rng = random.Random(seed)
    run = tmp_path / "run"
    seen: dict = {}
    log = {"main": 0, "worker": 0, "torn": 0}
    for _ in range(kills):
        last = _last_number(run)
        p = spawn(budget, run, storage, N_TRIALS, workers=2)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.2, 3.0))  # any moment: start-up, seeding, trials
        else:  # a moment while trials run (start-up is slow on a loaded machine)
            _wait_running(run, last, timeout=60)
            time.sleep(rng.uniform(0.0, 0.5))
        workers = _worker_pids(p.pid)
        if workers and rng.random() < 0.3:
            os.kill(workers[0], signal.SIGKILL)
            log["worker"] += 1
            time.sleep(rng.uniform(0.2, 1.5))
        p.kill()
        log["main"] += 1
        p.communicate(timeout=60)  # the pipes close only when the workers died with their parent
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived its killed parent"
        if not storage and rng.random() < 0.25 and (run / "journal.log").exists():
            with open(run / "journal.log", "ab") as f:
                f.write(b'{"op_code":6,"worker_id":"dead","trial_id":1,"key":"x","val')  # disk full mid-record
            log["torn"] += 1
        now = _snapshot(run)
        assert all(now.get(k) == v for k, v in seen.items()), "a completed trial was lost or changed"
        seen = now
    assert len(seen) < N_TRIALS, "the study finished before the faults; raise N_TRIALS"
    finish(spawn(budget, run, storage, N_TRIALS, workers=2), timeout=300)
    study = rundir.load_study(run)
    trials = study.get_trials(deepcopy=False)
    final = _snapshot(run)
    assert all(final.get(k) == v for k, v in seen.items())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    seeds = [json.dumps(t.system_attrs["fixed_params"], sort_keys=True) for t in complete
             if "fixed_params" in t.system_attrs and t.user_attrs.get("seed")]
    assert seeds and len(seeds) == len(set(seeds)), "a seed configuration completed twice"
    dead = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    assert all(t.number in rerun for t in dead), "a dead trial was not re-run"
    assert log["main"] >= 20
    return log, len(dead)


@pytest.mark.slow  # ~7 min; on a quiet machine the study can finish before the 20th kill (see the issue note)
def test_kill_search_at_random_moments_journal(tmp_path):
    b = tmp_path / "fault.toml"
    b.write_text("[budget]\nmax_loss_pp = 1.0\n")
    log, dead = _kill_at_random(tmp_path, b, "", kills=20, seed=1)
    assert log["torn"] >= 1 and dead >= 1


@pytest.mark.slow  # a dead trial was seen not re-run once on PostgreSQL: known open defect, see the issue note
@pytest.mark.skipif(not PG_URL, reason="DSE_TEST_POSTGRES_URL is not set (.ci/run sets it)")
def test_kill_search_at_random_moments_postgresql(tmp_path):
    log, dead = _kill_at_random(tmp_path, _fresh_pg_budget(tmp_path, "fault"), PG_URL, kills=20, seed=2)
    assert dead >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_kill_search_at_random_moments_journal_long(tmp_path, seed):
    b = tmp_path / "fault.toml"
    b.write_text("[budget]\nmax_loss_pp = 1.0\n")
    _kill_at_random(tmp_path, b, "", kills=40, seed=seed)
