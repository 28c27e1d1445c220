"""Trials of dead processes (dse.search.liveness), in one process with the dead ones simulated: a trial left RUNNING
without beats is failed and re-run; a watcher killed between queueing the re-run and failing the trial leaves no
second re-run; two watchers queueing one re-run each give one run; a stalled live trial that was failed ends quietly;
a trial that keeps killing its process is re-run at most MAX_RETRY times."""
from __future__ import annotations

import json
import time

import optuna
import pytest
from optuna.trial import TrialState

from dse.search import liveness, rundir, seeds
from dse.search.study import _objective, run_loop
from tests.fakes import make_ctx, settings_


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_S", 1)
    monkeypatch.setattr(liveness, "STALE_S", 0.3)


def _study(tmp_path) -> optuna.Study:
    storage = rundir.open_journal(tmp_path / "journal.log")
    return optuna.create_study(study_name="s", storage=storage, directions=["minimize"])


def _dead(study, params: dict | None = None) -> int:
    """A trial whose process died: popped or created, then never beat again."""
    if params is not None:
        study.enqueue_trial(params, user_attrs={"seed": True})
    return study.ask().number


def _run(study, n_trials, ctx=None):
    ctx = ctx or make_ctx()
    s = settings_(n_trials=n_trials)
    run_loop(study, _objective(ctx, s), s)
    return ctx


def _exact_params(ctx) -> dict:
    return ctx.space.params_from_config(seeds.all_exact(ctx.space))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_dead_trial_is_failed_and_rerun(tmp_path, fast):
    study = _study(tmp_path)
    ctx = make_ctx()
    dead = _dead(study, _exact_params(ctx))
    t0 = time.monotonic()
    _run(study, 3, ctx)
    trials = study.get_trials(deepcopy=False)
    assert trials[dead].state == TrialState.FAIL
    rerun = [t for t in trials if liveness.history(t) == [dead]]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == _exact_params(ctx) and rerun[0].user_attrs.get("seed")
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(rerun[0]) == [dead]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert time.monotonic() - t0 < 60


def test_watcher_killed_after_queueing_the_rerun(tmp_path, fast):
    """The re-run was queued, then the watcher died before failing the trial: the next watcher only fails it."""
    study = _study(tmp_path)
    ctx = make_ctx()
    dead = _dead(study, _exact_params(ctx))
    liveness.requeue(study, study.get_trials(deepcopy=False)[dead])  # ... and killed here
    _run(study, 2, ctx)
    trials = study.get_trials(deepcopy=False)
    assert trials[dead].state == TrialState.FAIL
    assert len([t for t in trials if dead in liveness.history(t)]) == 1  # not queued twice
    assert [t.state for t in trials if dead in liveness.history(t)] == [TrialState.COMPLETE]


def test_two_watchers_queue_one_rerun_each_and_one_runs(tmp_path, fast):
    study = _study(tmp_path)
    ctx = make_ctx()
    dead = _dead(study, _exact_params(ctx))
    frozen = study.get_trials(deepcopy=False)[dead]
    liveness.requeue(study, frozen)
    liveness.requeue(study, frozen)  # a second watcher, at the same moment
    study.tell(dead, state=TrialState.FAIL)
    _run(study, 4, ctx)
    trials = study.get_trials(deepcopy=False)
    attempts = [t for t in trials if liveness.history(t) == [dead]]
    assert sorted(t.state for t in attempts) == [TrialState.COMPLETE, TrialState.FAIL]
    assert [t.user_attrs.get(liveness.SURPLUS_ATTR) for t in attempts if t.state == TrialState.FAIL] == [True]
    seeds = [json.dumps(t.params, sort_keys=True) for t in trials
             if t.state == TrialState.COMPLETE and t.user_attrs.get("seed")]
    assert len(seeds) == len(set(seeds))


def test_stalled_trial_failed_by_another_process_ends_quietly(tmp_path, fast):
    """A live trial whose process stalled past STALE_S is failed by a watcher: its own writes and tell are refused,
    the loop goes on, the re-run completes, nothing completes twice."""
    study = _study(tmp_path)
    ctx = make_ctx()
    watcher = liveness.Watch()

    class Stall:  # the trial's process stalls (swapping, SIGSTOP) between two beats, longer than STALE_S
        def __init__(self, inner):
            self.inner, self.n_images = inner, inner.n_images
            self.stalled = False

        def correct(self, config, start, stop):
            if not self.stalled:
                self.stalled = True
                watcher.dead(study.get_trials(deepcopy=False))
                time.sleep(liveness.STALE_S + 0.2)  # < HEARTBEAT_S: no beat meanwhile
                assert watcher.fail_dead(study, study.get_trials(deepcopy=False)) == 1
            return self.inner.correct(config, start, stop)

    ctx.evaluator = Stall(ctx.evaluator)
    _run(study, 3, ctx)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert [t.state for t in trials if liveness.history(t) == [0]] == [TrialState.COMPLETE]


def test_a_trial_that_keeps_dying_is_rerun_at_most_max_retry_times(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(liveness, "MAX_RETRY", 2)
    study = _study(tmp_path)
    ctx = make_ctx()
    _dead(study, _exact_params(ctx))
    watch = liveness.Watch()
    for _ in range(4):  # every attempt dies as soon as it is popped
        watch.dead(study.get_trials(deepcopy=False))
        time.sleep(liveness.STALE_S + 0.1)
        watch.fail_dead(study, study.get_trials(deepcopy=False))
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
        study.ask()
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3  # the first attempt and 2 re-runs
    assert liveness.history(trials[-1]) == [0, 1]


def test_last_process_fails_dead_trials_before_it_leaves(tmp_path, fast):
    """n_trials are complete but a trial whose process died before it was refused as surplus is still running: the
    last process fails it (and keeps its seed configuration queued) before it returns."""
    study = _study(tmp_path)
    ctx = _run(study, 3)
    dead = _dead(study, _exact_params(ctx))  # a seed popped by a process that died at once
    t0 = time.monotonic()
    _run(study, 3, ctx)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[dead].state == TrialState.FAIL and sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert [t.state for t in trials if liveness.history(t) == [dead]] == [TrialState.WAITING]
    assert time.monotonic() - t0 < 30


def _ended_process_mark() -> dict:
    """The process_mark of a process that has ended (and been reaped)."""
    import subprocess
    import sys
    code = "import json; from dse.search import liveness; print(json.dumps(liveness.process_mark()), flush=True)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(liveness._NAMESPACE is None, reason="no /proc: only heartbeats tell")
def test_gone_tells_ended_zombie_and_reused_pids_from_live_ones():
    import os
    import signal
    import subprocess
    import sys
    code = ("import json, time; from dse.search import liveness; print(json.dumps(liveness.process_mark()), "
            "flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        mark = json.loads(p.stdout.readline())
        assert mark["pid"] == p.pid and not liveness.gone(mark)
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while liveness._proc_stat(p.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert liveness.gone(mark)  # killed, not yet reaped: a zombie
    finally:
        p.kill()
        p.wait()
    assert liveness.gone(mark)
    me = liveness.process_mark()
    assert not liveness.gone(me)
    ns, start = me["proc"].rsplit(":", 1)
    assert liveness.gone(dict(me, proc=f"{ns}:{int(start) + 1}"))  # our pid, another process: the pid was reused
    assert not liveness.gone(dict(mark, proc="another-machine:1:2:" + mark["proc"].rsplit(":", 1)[1]))
    assert not liveness.gone({"host": "elsewhere", "pid": mark["pid"]})


@pytest.mark.skipif(liveness._NAMESPACE is None, reason="no /proc: only heartbeats tell")
def test_a_resumed_run_reruns_a_crashed_trial_first_without_waiting_for_staleness(tmp_path, monkeypatch):
    """The trial's process ended on this machine: the next run fails and re-runs it at once, before sampling new
    configurations, instead of after STALE_S."""
    monkeypatch.setattr(liveness, "STALE_S", 30.0)
    study = _study(tmp_path)
    ctx = make_ctx()
    dead = _dead(study, _exact_params(ctx))
    study._storage.set_trial_user_attr(study.get_trials(deepcopy=False)[dead]._trial_id, liveness.BEAT_ATTR,
                                       dict(_ended_process_mark(), time=time.time()))
    t0 = time.monotonic()
    _run(study, 3, ctx)
    assert time.monotonic() - t0 < liveness.STALE_S
    trials = study.get_trials(deepcopy=False)
    assert trials[dead].state == TrialState.FAIL
    assert liveness.history(trials[dead + 1]) == [dead] and trials[dead + 1].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_a_beat_from_another_machine_waits_for_staleness(tmp_path, fast):
    """A process on another machine cannot be looked up: its trial is dead only once its beat is stale."""
    study = _study(tmp_path)
    dead = _dead(study)
    frozen = study.get_trials(deepcopy=False)[dead]
    study._storage.set_trial_user_attr(frozen._trial_id, liveness.BEAT_ATTR,
                                       {"host": "elsewhere", "pid": 1, "proc": "other:1:2:3", "time": 0})
    watch = liveness.Watch()
    assert watch.dead(study.get_trials(deepcopy=False)) == []
    time.sleep(liveness.STALE_S + 0.1)
    assert [t.number for t in watch.dead(study.get_trials(deepcopy=False))] == [dead]
