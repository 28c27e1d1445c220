"""Trials of dead processes: heartbeats, failing the dead ones, and re-running them, for every storage alike.

A running trial's process writes a heartbeat (trial user attribute ``dse:beat``: ``process_mark``, time) every
``HEARTBEAT_S`` seconds from a thread (``heartbeat``). Every process of a study watches the running trials between
its own trials (``Watch.fail_dead``): a trial whose beat has not changed for ``STALE_S`` seconds of the watcher's own
monotonic clock is dead. No clock is compared across processes or machines, so skewed clocks or time zones cannot fail a live trial,
and a trial killed before its first beat is found like any other. A trial whose process ran on the watcher's machine
(same boot and pid namespace) and has ended (``gone``: its pid free, a zombie, or reused) is dead at once: a run
resumed after a crash re-runs the crashed trials first instead of sampling new ones for ``STALE_S``.

A dead trial's re-run is enqueued *before* the trial is failed, so a watcher killed in between leaves a dead trial that
already has its re-run (the next watcher only fails it), never a failed trial without one. Two watchers may both
enqueue a re-run; ``superseded`` lets only one attempt of a trial run. Attempts follow the convention of Optuna's
``RetryHeartbeatStaleTrialCallback`` (system attributes ``failed_trial``: the first attempt's number,
``retry_history``: the numbers of all earlier attempts), so its ``retry_history`` reads them. Only Optuna's public API
is used (Optuna's own heartbeats exist for RDB storages only, and fail a trial before queueing its re-run).
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from dse.errors import DseError


def _namespace() -> str | None:
    """This machine's boot and pid namespace: processes that share it see each other's pids in /proc (None: no /proc,
    the identity of a process cannot be checked here)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}:{ns.st_dev}:{ns.st_ino}"


_NAMESPACE = _namespace()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process from /proc, None when there is none with ``pid``."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return fields[0], fields[19]


def process_mark() -> dict:
    """Who this process is, for :func:`gone` to tell from another process of any machine sharing the study: host and
    pid, and where /proc exists the pid namespace and the process's start time (a pid reused by a new process is not
    the same process)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    stat = _proc_stat(os.getpid()) if _NAMESPACE is not None else None
    if stat is not None:
        me["proc"] = f"{_NAMESPACE}:{stat[1]}"
    return me


def gone(mark: dict) -> bool:
    """True when the process of ``mark`` (:func:`process_mark`) has certainly ended: it ran in this pid namespace and
    its pid is free, a zombie, or another process's. False when that cannot be known from here (another machine or
    container, no /proc): then only a missing heartbeat tells."""
    proc = mark.get("proc")
    if proc is None:  # a mark without /proc information: its pid on the same host is all there is to check
        return mark.get("host") == socket.gethostname() and _NAMESPACE is not None and \
            _proc_stat(mark["pid"]) is None
    ns, start = proc.rsplit(":", 1)
    if ns != _NAMESPACE:
        return False
    stat = _proc_stat(mark["pid"])
    return stat is None or stat[0] in "ZXx" or stat[1] != start


def _heartbeat_s() -> int:
    v = os.environ.get("DSE_HEARTBEAT_S", "5")
    if not v.isdigit() or int(v) < 1:
        raise DseError(f"environment DSE_HEARTBEAT_S={v!r}: give whole seconds >= 1 (default 5)")
    return int(v)


HEARTBEAT_S = _heartbeat_s()  # a running trial beats this often (env DSE_HEARTBEAT_S) ...
STALE_S = 4 * HEARTBEAT_S     # ... and is dead when a watcher saw no beat for this long
MAX_RETRY = 5                 # re-runs of a trial whose process died (then it stays failed: it may be what kills it)
BEAT_ATTR = "dse:beat"
SURPLUS_ATTR = "surplus"      # user attr of a trial failed unrun because enough others ran (not a dead trial)
FIXED, FIRST, HISTORY = "fixed_params", "failed_trial", "retry_history"


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial):
    """Beat for ``trial`` while the block runs. The first beat is written before the block starts; a beat refused
    because a watcher already failed the trial (a stalled process) ends the beating, and the trial's own next write
    raises UpdateFinishedTrialError, which the run loop treats as "taken over by its re-run"."""
    stop = threading.Event()
    me = process_mark()
    trial.set_user_attr(BEAT_ATTR, dict(me, time=time.time()))

    def beat():
        while not stop.wait(HEARTBEAT_S):
            try:
                trial.set_user_attr(BEAT_ATTR, dict(me, time=time.time()))
            except optuna.exceptions.UpdateFinishedTrialError:
                return

    t = threading.Thread(target=beat, name=f"dse-heartbeat-{trial.number}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def history(t: FrozenTrial) -> list[int]:
    """Numbers of the earlier attempts of ``t`` (empty for a first attempt)."""
    return list(t.system_attrs.get(HISTORY, []))


def requeue(study: optuna.Study, t: FrozenTrial) -> None:
    """Enqueue the next attempt of ``t``: the same parameters (``fixed_params``, or those ``t`` had drawn; the sampler
    draws any not drawn yet), its ``seed`` mark, and the lineage."""
    past = history(t) + [t.number]
    system = {FIXED: t.system_attrs.get(FIXED, t.params), FIRST: past[0], HISTORY: past}
    user = {k: v for k, v in t.user_attrs.items() if k == "seed"}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=system, user_attrs=user))


def lineage(t: FrozenTrial) -> int:
    """The number of the first attempt of ``t``."""
    return t.system_attrs.get(FIRST, t.number)


def superseded(t: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """True when ``t`` (a re-run) is not to run: an earlier attempt completed after all (a stalled process that
    came back), or another current attempt (not one already re-queued) with a smaller number is waiting, running or
    complete. (A stalled attempt that completes in the milliseconds between a watcher queueing its re-run and failing
    it, while the re-run starts, is the one case left: the re-run then finds the configuration complete and records
    it as a duplicate without evaluating it again.)"""
    first = t.system_attrs.get(FIRST)
    if first is None:
        return False
    replaced = {n for u in trials for n in history(u)}
    for u in trials:
        if u.number == t.number or lineage(u) != first:
            continue
        if u.state == TrialState.COMPLETE:
            return True
        if u.number < t.number and u.number not in replaced and not u.user_attrs.get(SURPLUS_ATTR) and \
                u.state in (TrialState.WAITING, TrialState.RUNNING):
            return True
    return False


class Watch:
    """One process's view of the running trials' beats: ``{number: (last beat seen, monotonic time first seen)}``."""

    def __init__(self):
        self.seen: dict[int, tuple[object, float]] = {}

    def dead(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        now = time.monotonic()
        seen, out = {}, []
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            beat = t.user_attrs.get(BEAT_ATTR)
            prev = self.seen.get(t.number)
            since = prev[1] if prev is not None and prev[0] == beat else now
            seen[t.number] = (beat, since)
            if now - since > STALE_S or (beat is not None and gone(beat)):
                out.append(t)
        self.seen = seen
        return out

    def fail_dead(self, study: optuna.Study, trials: list[FrozenTrial]) -> int:
        """Re-queue (at most MAX_RETRY times) and fail the dead running trials; returns how many this call failed."""
        dead = self.dead(trials)
        if not dead:
            return 0
        by_number = {t.number: t for t in trials}
        replaced = {n for t in trials for n in history(t)}
        failed = 0
        for t in dead:
            attempts = [n for n in history(t) + [t.number] if not by_number[n].user_attrs.get(SURPLUS_ATTR)]
            if not t.user_attrs.get(SURPLUS_ATTR) and t.number not in replaced and len(attempts) <= MAX_RETRY:
                requeue(study, t)
            try:
                study.tell(t.number, state=TrialState.FAIL)
                failed += 1
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # it finished meanwhile, or another watcher failed it first
        return failed
