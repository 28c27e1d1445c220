"""The search driver: study creation/resume, seeding, optimisation (one or several processes), hold-out check.

``run_search(budget, run_dir)`` is the entry point. The model-dependent pieces (evaluators, energy model, predictor,
sensitivity) come from a ``SearchContext`` built by a picklable ``context_factory`` (the real one loads the budget's
model and data; tests inject fakes), so the driver itself knows nothing about ONNX or emulation.

Studies are named from the budget's content (``study_name``), so one storage holds the studies of many budgets.
Resume: re-running the same command joins the study and runs only ``n_trials - completed`` more trials, so no
completed trial is lost after an interrupt. Several processes (``workers > 1`` spawned ones, or ``dse search`` on
several machines with one PostgreSQL URL) share the study: each claims a process number through the storage
(distinct sampler streams), the first enqueues the seeds, and ``run_loop`` runs trials until exactly n_trials are
complete. Trials of a dead process are failed by heartbeats and re-run (see dse.search.liveness).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from dse.budget import BudgetSection, SearchSection
from dse.errors import DseError, SettingError
from dse.layer_config import LayerConfig, config_from_dict
from dse.search import identity, liveness, rundir, seeds
from dse.search.deadline import Deadline, RunTimeout, SetupTimeout
from dse.search.objective import (ATTR_CONFIRM, ATTR_HOLDOUT, ATTR_VERIFIED, CONSTRAINT, EXACT_ENERGY, Objective,
                                  full_trials, predictor_record, predictor_switches)
from dse.search.space import SearchSpace

SAMPLERS = ("auto", "tpe", "nsga2", "random", "qmc")
MODES = ("constrained", "pareto")


_D = SearchSection()


@dataclass
class SearchSettings:
    """Search options (from the budget's [search] section, CLI flags override). ``budget_loss`` is a fraction."""

    budget_loss: float
    # Defaults are those of the budget file's [search] section (one home: dse.budget.SearchSection).
    mode: str = _D.mode
    sampler: str = _D.sampler
    n_trials: int = _D.n_trials
    seed: int = _D.seed
    storage: str | None = _D.storage
    workers: int = _D.workers
    timeout_s: float | None = _D.timeout_s
    fidelities: list = field(default_factory=lambda: list(_D.racing))
    confidence: float = _D.confidence
    predictor_skip: float = _D.predictor_skip  # skip a trial when predicted loss > predictor_skip * budget (0 = never)
    predictor_max_share: float = _D.predictor_max_share  # the gate's time bound (objective.GateAllowance)
    n_holdout: int = _D.n_holdout              # hold-out checks that may fail before the walk down the list stops
    feasibility_confidence: float = BudgetSection().confidence  # [budget] confidence of the search-split feasibility
    seeds: tuple = _D.seeds  # seed trials besides all-exact (dse.budget.SEED_KINDS)

    def validate(self) -> "SearchSettings":
        if self.mode not in MODES:
            raise DseError(f"search.mode: '{self.mode}' is not one of {', '.join(MODES)}")
        if self.sampler not in SAMPLERS:
            raise DseError(f"search.sampler: '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        if int(self.n_trials) < 1:
            raise DseError(f"search.n_trials: {self.n_trials} must be >= 1")
        if int(self.workers) < 1:
            raise DseError(f"search.workers: {self.workers} must be >= 1")
        if not 0 <= self.budget_loss < 1:
            raise DseError(f"budget: accuracy-loss budget {self.budget_loss} must be a fraction in [0, 1)")
        return self


@dataclass
class SearchContext:
    """Model-dependent pieces the driver needs (see dse.search.objective for the evaluator/energy interfaces).

    ``holdout``: evaluator on the held-out split; ``confirm``: evaluator on the search split's confirmation images
    (None: no confirmation; dse.search.context.search_split); ``unused``: evaluator on the search-split images neither
    of them uses (None: none left; only benchmarks read it); ``baseline``: ``{"float": {"search", "holdout"}}`` (accuracies);
    ``sensitivity(layer, LayerConfig) -> loss`` (None: not known) for the knapsack seed (None: no knapsack seed);
    ``info``: JSON-friendly description (model, data, layers) stored in the study and results;
    ``model_path``, ``data_specs`` (``[data]`` key -> spec): the files the results depend on, whose content fingerprints
    name the study (None / empty for injected fakes); ``deadline``: the run's ``timeout_s`` shared by every process
    (dse.search.deadline; None: each process counts ``timeout_s`` from its start of the search).
    """

    space: SearchSpace
    evaluator: object
    holdout: object
    energy: Callable[[dict], dict]
    confirm: object | None = None
    unused: object | None = None
    predictor: Callable[[dict], float] | None = None
    sensitivity: Callable[[str, LayerConfig], float | None] | None = None
    baseline: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    model_path: str | None = None
    data_specs: dict = field(default_factory=dict)
    deadline: Deadline | None = None
    identity: object | None = None  # dse.search.identity.ContextIdentity (None: not checked, e.g. injected fakes)


def make_sampler(name: str, mode: str, seed: int, workers: int = 1) -> optuna.samplers.BaseSampler:
    """Sampler by name; "auto" = TPE (constrained) or NSGA-II (pareto). All read constraints set via set_constraint."""
    if name == "auto":
        name = "tpe" if mode == "constrained" else "nsga2"
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=workers > 1)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        # categorical parameters are sampled by QMC's independent (random) sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise DseError(f"search.sampler: '{name}' is not one of {', '.join(SAMPLERS)}")


def _open_study(settings: SearchSettings, storage, name: str, seed: int, workers: int,
                create: bool = False) -> optuna.Study:
    """Load the study, or with ``create`` create it (DuplicatedStudyError when another process did: creating is
    atomic in every storage, which makes the creator the study's first process)."""
    directions = ["minimize"] if settings.mode == "constrained" else ["minimize", "minimize"]
    sampler = make_sampler(settings.sampler, settings.mode, seed, workers)
    if create:
        return optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


# Settings that say how long, where and how parallel a search runs, not what it searches: changing them continues
# the same study (e.g. a larger n_trials extends it).
_NOT_IN_NAME = ("n_trials", "workers", "storage", "timeout_s", "prefix_cache_mib", "image_cache_mib", "setup_budget_s")


def study_name(budget_path: str | Path, s: SearchSettings, ctx: "SearchContext") -> str:
    """``<budget stem>-<hash>``: the hash covers everything the search results depend on (the budget file without
    the keys in _NOT_IN_NAME, the effective settings, the search space, the SHA-256 of the model file and the
    content fingerprints of the data, dse.data.fingerprint), so a different budget, model or data set on the same
    storage gets its own study instead of another's results, and the same ones resume it."""
    from dse.data import fingerprint
    from dse.model.onnx_import import model_sha256

    budget = tomllib.loads(Path(budget_path).read_text())
    search = {k: v for k, v in budget.get("search", {}).items() if k not in _NOT_IN_NAME}
    budget = dict(budget, search=search)
    model = model_sha256(ctx.model_path) if ctx.model_path else None
    key = {"budget": budget, "settings": {k: v for k, v in asdict(s).items() if k not in _NOT_IN_NAME},
           "space": {n: repr(ctx.space.choices[n]) for n in ctx.space.searchable},
           "params": ctx.space.param_names, "model": model,
           "data": {k: fingerprint(v) for k, v in sorted(ctx.data_specs.items())}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{Path(budget_path).stem}-{digest}"


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def is_feasible(t) -> bool:
    c = t.constraints
    return t.state == TrialState.COMPLETE and bool(c) and all(v <= 0 for v in c.values())


def _objective(ctx: SearchContext, s: SearchSettings) -> Objective:
    deadline = ctx.deadline if ctx.deadline is not None else Deadline.after(s.timeout_s)
    return Objective(ctx.space, ctx.evaluator, ctx.energy, s.budget_loss, s.mode, s.fidelities, s.confidence,
                     ctx.predictor, s.predictor_skip, feasibility_confidence=s.feasibility_confidence,
                     holdout=ctx.holdout, max_holdout_failures=s.n_holdout, deadline=deadline, confirm=ctx.confirm,
                     predictor_max_share=s.predictor_max_share)


def seed_configs(ctx: SearchContext, s: SearchSettings) -> list[dict]:
    """Parameters of the seed trials (all exact, uniform, knapsack), without repeats, in enqueue order."""
    cfgs = [seeds.all_exact(ctx.space)]
    if "uniform" in s.seeds:
        cfgs += seeds.uniform(ctx.space)
    if "knapsack" in s.seeds and ctx.sensitivity is not None:
        items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
        cfgs += seeds.knapsack_seeds(ctx.space, items, s.budget_loss)
    out = []
    for cfg in cfgs:
        p = ctx.space.params_from_config(cfg)
        if p not in out:
            out.append(p)
    return out


SEEDED, SEEDING = "dse:seeded", "dse:seeding"
SEED_WAIT_S = 120.0  # a process seeding on another machine gets this long before a later one completes its work
SEED_MARK_WAIT_S = 5.0  # the study's creator marks that it is seeding within this time (or it died)


def enqueue_seeds(study: optuna.Study, ctx: SearchContext, s: SearchSettings, process: int) -> int:
    """Enqueue the seed configurations exactly once per study. The process that created the study (``process`` 0,
    atomic) enqueues them; a later process finding the study unseeded waits while the creator may still be at it,
    and if it died, enqueues the seeds no trial has yet. Returns the number enqueued."""
    if study.user_attrs.get(SEEDED):
        return 0
    if process == 0:
        study.set_user_attr(SEEDING, dict(liveness.process_mark(), time=time.time()))
        todo = seed_configs(ctx, s)
    else:
        _wait_for_seeder(study)
        if study.user_attrs.get(SEEDED):
            return 0
        have = [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]
        todo = [p for p in seed_configs(ctx, s) if p not in have]
    for p in todo:
        study.enqueue_trial(p, user_attrs={"seed": True})
    study.set_user_attr(SEEDED, True)
    return len(todo)


def _wait_for_seeder(study: optuna.Study) -> None:
    t0 = time.time()
    while not study.user_attrs.get(SEEDED):
        who = study.user_attrs.get(SEEDING)
        if not who:
            if time.time() - t0 > SEED_MARK_WAIT_S:  # the creator died before it began seeding
                return
        elif time.time() - who["time"] > SEED_WAIT_S:
            return
        elif liveness.gone(who):
            return
        time.sleep(0.2)


def worker_seed(seed: int, i: int) -> int:
    """Sampler seed of a process with number ``i`` (0: the process that created the study, which uses ``seed`` itself
    so a one-process search is reproducible; others draw a random 64-bit number, see join_study). Derived by
    SeedSequence so that the streams of different study seeds never coincide (with ``seed + i``, seed 0's process 1
    and seed 1's process 0 sampled the same configurations)."""
    if i == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def join_study(storage, name: str, s: SearchSettings, create: bool, ctx_identity=None,
               run_dir: Path | None = None) -> tuple[optuna.Study, int]:
    """Open the study as one more process of it. The process that creates the study is number 0 (it seeds the study
    and samples with ``seed``); every other one gets a random 64-bit number, so no two share a sampler stream.
    ``ctx_identity`` (dse.search.identity.ContextIdentity of this process's context): the creator records it on the
    study, every other process compares its own (identity.check: ContextMismatch, before any trial). The number,
    sampler seed and context digest are recorded in the study (user attr ``dse:process:<host>:<pid>:<number>``)."""
    k = 0
    try:
        if not create:
            raise optuna.exceptions.DuplicatedStudyError
        _open_study(s, storage, name, s.seed, s.workers, create=True)
    except optuna.exceptions.DuplicatedStudyError:
        k = int.from_bytes(os.urandom(8), "little") or 1
    study = _open_study(s, storage, name, worker_seed(s.seed, k), s.workers)
    if ctx_identity is not None:
        if k == 0:
            study.set_user_attr(identity.ATTR, ctx_identity.record(run_dir))
        else:
            identity.check(study, ctx_identity, run_dir)
    study.set_user_attr(f"{PROCESS_ATTR}{socket.gethostname()}:{os.getpid()}:{k}",
                        {"number": k, "sampler_seed": worker_seed(s.seed, k), "time": time.time(),
                         "context": ctx_identity.digest if ctx_identity is not None else None})
    return study, k


PROCESS_ATTR = "dse:process:"


def n_processes(study: optuna.Study) -> int:
    """Processes that have run this study (spawned workers, other machines, resumes)."""
    return sum(k.startswith(PROCESS_ATTR) for k in study.user_attrs)


def irreproducible(processes: int, paused: int) -> str | None:
    """Why a study's trials cannot be reproduced from its seed, or None: several processes ran it (their timing orders
    the trials), or the predictor gate sat out ``paused`` trials to stay within its time allowance (which trials, and so
    which predictions could skip a trial, depends on timing)."""
    if processes > 1:
        return (f"{processes} processes ran this study (workers, other machines or resumes): its trial order depends "
                "on their timing and is not reproducible from the seed")
    if paused:
        return ("the predictor sat out trials to stay within [search] predictor_max_share of their time; which ones "
                "depends on timing, so the run is not reproducible from the seed "
                "(predictor_max_share = inf lifts the bound)")
    return None


def die_with_parent(parent: int) -> None:
    """A spawned worker must not outlive the ``dse search`` (pid ``parent``) that started it: on Linux the kernel
    sends it SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker(factory, url: str, name: str, settings: SearchSettings, parent: int) -> None:  # pragma: no cover
    die_with_parent(parent)
    try:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures re-raise anyway
        ctx = factory()
        study, _ = join_study(rundir.open_storage(url), name, settings, create=False, ctx_identity=ctx.identity,
                              run_dir=getattr(factory, "run_dir", None))
        run_loop(study, _objective(ctx, settings), settings)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group; the parent reports it
        pass
    except DseError as exc:  # e.g. identity.ContextMismatch: one line; the other processes go on
        print(f"error: worker {os.getpid()}: {exc}", file=sys.stderr)
        sys.exit(2)
    except SetupTimeout:  # the run's deadline passed in this worker's set-up: it has no trial to run
        pass


class _Surplus(Exception):
    """The trial is not to run: enough others ran, or another attempt of it runs instead (user attr ``surplus``)."""


POLL_S = 0.5


class _Guarded:
    """Runs the objective only for trials within the study's n_trials: trial k runs if fewer than n_trials trials
    are complete or running with a smaller number (trial numbers are handed out atomically by the storage, so
    exactly n_trials trials complete however many processes share the study), and only one attempt of a re-run trial
    runs (liveness.superseded). An enqueued trial that does not run (surplus, or interrupted by Ctrl-C) is enqueued
    again, so no seed configuration is lost. The run's deadline is armed while the objective runs (RunTimeout)."""

    def __init__(self, objective: Objective, n_trials: int):
        self.objective, self.n_trials = objective, int(n_trials)

    def __call__(self, trial: optuna.Trial):
        trials = trial.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        ahead = sum(1 for t in trials
                    if t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number < trial.number))
        if liveness.superseded(me, trials):
            self._skip(trial)
        if ahead >= self.n_trials:
            if liveness.FIXED in me.system_attrs:
                liveness.requeue(trial.study, me)
            self._skip(trial)
        deadline = self.objective.deadline
        try:
            with deadline.trial() if deadline is not None else contextlib.nullcontext():
                return self.objective(trial)
        except (KeyboardInterrupt, RunTimeout):
            if liveness.FIXED in me.system_attrs:
                liveness.requeue(trial.study, me)
            raise

    @staticmethod
    def _skip(trial: optuna.Trial):
        trial.set_user_attr(liveness.SURPLUS_ATTR, True)
        trial.set_constraint(CONSTRAINT, 1.0)
        raise _Surplus


def _run_trial(study: optuna.Study, guarded: _Guarded, callbacks) -> None:
    """Ask, run with a heartbeat, tell. A trial failed meanwhile by another process's watch (this one stalled past
    liveness.STALE_S) has its re-run queued: this attempt just ends."""
    trial = study.ask()
    value, state = None, None
    with liveness.heartbeat(trial):
        try:
            value = guarded(trial)
        except (_Surplus, optuna.exceptions.UpdateFinishedTrialError):
            state = TrialState.FAIL
        except BaseException:
            _tell(study, trial, None, TrialState.FAIL)
            raise
    _tell(study, trial, value, state)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    for cb in callbacks:
        cb(study, frozen)


def _tell(study: optuna.Study, trial: optuna.Trial, value, state) -> None:
    """Finish the trial unless a watcher failed it first (before or during this call: both are refused quietly)."""
    try:
        study.tell(trial, value, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def run_loop(study: optuna.Study, objective: Objective, s: SearchSettings, callbacks=()) -> None:
    """One process's share of the study: run trials until n_trials are complete or the run's deadline (the
    objective's, see dse.search.deadline) has passed. Between trials it
    fails (and re-queues) the trials of dead processes (liveness.Watch); while the remaining trials are all running
    elsewhere it waits, and the wait ends when they complete or are found dead. Once n_trials are complete, a trial
    still running can only be one about to be refused as surplus or one whose process died before that: it waits
    for those too (at most liveness.STALE_S), so no dead trial is left running when the last process leaves."""
    deadline = objective.deadline
    guarded, watch = _Guarded(objective, s.n_trials), liveness.Watch()
    while deadline is None or not deadline.passed():
        trials = study.get_trials(deepcopy=False)
        if watch.fail_dead(study, trials):
            trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
        if done >= s.n_trials and not running:
            return
        if done + running >= s.n_trials:  # (when done: trials of dead processes, failed before this one leaves)
            time.sleep(POLL_S)
            continue
        try:
            _run_trial(study, guarded, callbacks)
        except RunTimeout:  # the run's deadline interrupted the trial in progress (dse.search.deadline)
            return


def optimize(study: optuna.Study, objective: Objective, s: SearchSettings, progress=None,
             factory=None, url: str | None = None) -> None:
    """Run the remaining ``n_trials - completed`` trials (in this process and ``workers - 1`` spawned ones; none is
    spawned once the run's deadline has passed, e.g. during a long set-up).
    ``progress(total, done)``: a context manager that is also an Optuna callback (e.g. ``dse.present.SearchProgress``);
    None: no progress display."""
    done = n_complete(study)
    if s.n_trials - done <= 0:
        return
    procs = []
    if s.workers > 1 and not (objective.deadline is not None and objective.deadline.passed()):
        if factory is None or url is None:
            raise DseError("search.workers > 1 needs a context factory and a storage shared by the processes")
        ctxm = mp.get_context("spawn")
        for _ in range(1, s.workers):
            p = ctxm.Process(target=_worker, args=(factory, url, study.study_name, s, os.getpid()), daemon=False)
            p.start()
            procs.append(p)
    try:
        with progress(s.n_trials, done) if progress else contextlib.nullcontext() as bar:
            run_loop(study, objective, s, callbacks=[bar] if bar else [])
    finally:
        for p in procs:
            p.join()


def pareto_front(points: list[dict]) -> list[dict]:
    """Non-dominated points minimising (energy, loss), sorted by energy."""
    pts = sorted(points, key=lambda d: (d["energy"]["system"], d["loss"]))
    front, best_loss = [], np.inf
    for d in pts:
        if d["loss"] < best_loss:
            front.append(d)
            best_loss = d["loss"]
    return front


def trial_summary(t) -> dict:
    """JSON-friendly summary of a trial. ``holdout``/``verified`` are None when it was never checked on hold-out."""
    ua = t.user_attrs
    return {"trial": t.number, "config": ua.get("config", {}), "energy": ua.get("energy", {}),
            "accuracy": ua.get("accuracy"), "loss": ua.get("loss"), "images": ua.get("images"),
            "feasible": is_feasible(t), "confirm": ua.get(ATTR_CONFIRM), "holdout": ua.get(ATTR_HOLDOUT),
            "verified": ua.get(ATTR_VERIFIED)}


def _confirm_now(objective: Objective, d: dict, may_check: bool) -> bool | None:
    """Whether the candidate ``d`` (a trial summary) passed the confirmation: its result from the search
    (dse.search.objective), else (``may_check``) measured now into ``d["confirm"]``; None = not confirmed (the run's
    deadline passed before, or during, the check)."""
    known = objective.confirmed(d)
    if known is not None or not may_check:
        return known
    c = objective.confirm_check(config_from_dict(d["config"]))
    if c is None:
        return None
    d["confirm"] = c
    return objective.confirmed(d)


def final_check(study: optuna.Study, objective: Objective, s: SearchSettings) -> dict:
    """Pick the reported best: walk down the search-feasible full-fidelity configurations by energy (all-exact and
    anything costing more excluded) until one passes the confirmation (when it is on, see dse.search.objective) and
    then the hold-out check. The first confirmed candidate is ``first_pick`` (the trial number of the best as the
    search images and the confirmation alone would choose it). Trials checked during the search keep their results;
    unconfirmed ones are confirmed now (``confirm_failed`` lists those that failed), unchecked ones are checked now,
    until ``n_holdout`` of them failed the hold-out check or the run's deadline passed (the rest stay unchecked). No
    pass: ``best`` is None and ``no_best`` says why and what to do; candidates left unchecked are listed in
    ``unchecked`` and ``check_note`` says why. In Pareto mode the feasible front points are checked the same way; the
    front marks which points were verified."""
    full = full_trials(study)
    cands = sorted((t for t in full if is_feasible(t) and t.user_attrs["energy"]["system"] < EXACT_ENERGY),
                   key=lambda t: (t.user_attrs["energy"]["system"], t.user_attrs["loss"]))
    front = pareto_front([trial_summary(t) for t in full])
    on_front = {d["trial"] for d in front}
    checked, unchecked, best, failures, timed_out = [], [], None, 0, False
    first_pick, confirm_failed = None, []
    for t in cands:
        if best is not None and (s.mode == "constrained" or t.number not in on_front):
            continue
        d = trial_summary(t)
        ok = _confirm_now(objective, d, not timed_out)
        if ok is None:
            timed_out = True
            unchecked.append(t.number)
            continue
        if not ok:
            confirm_failed.append(t.number)
            continue
        first_pick = t.number if first_pick is None else first_pick
        if d["verified"] is None:
            h = None
            if failures < s.n_holdout and not timed_out:
                h = objective.holdout_check(config_from_dict(d["config"]))
                timed_out = h is None
            if h is None:
                unchecked.append(t.number)
                continue
            d["holdout"], d["verified"] = h, h["loss"] <= s.budget_loss
            failures += not d["verified"]
        checked.append(d)
        if d["verified"] and best is None:
            best = d
    by_num = {d["trial"]: d for d in checked}
    front = [by_num.get(d["trial"], d) for d in front]
    res = {"best": best, "checked": checked, "pareto_front": front, "unchecked": unchecked, "first_pick": first_pick,
           "confirm_failed": confirm_failed}
    late = objective.deadline is not None and objective.deadline.passed()
    if unchecked:
        res["check_note"] = _unchecked_note(len(unchecked), timed_out)
    if s.mode == "constrained":
        note = _margin_note(full, best, s)
        if note:
            res["margin_note"] = note
    if best is None:
        n_failed = sum(d["verified"] is False for d in checked)
        res["no_best"] = _no_best_reason(len(cands), n_failed, len(unchecked) if timed_out else 0,
                                         late and n_complete(study) < s.n_trials, len(confirm_failed))
    return res


RESUME = "re-run the same command to resume the run (finished trials are kept) or raise [search] timeout_s"


def _margin_note(full: list, best: dict | None, s: SearchSettings) -> str | None:
    """What the statistical margin cost: the full-fidelity configurations cheaper than the reported best (or than
    all-exact, without one) whose measured search-split loss is within budget but which were not feasible at
    ``[budget] confidence`` on these images; None when there are none."""
    top = best["energy"]["system"] if best is not None else EXACT_ENERGY
    near = [t.user_attrs for t in full if not is_feasible(t) and t.user_attrs["loss"] <= s.budget_loss
            and t.user_attrs["energy"]["system"] < top]
    if not near:
        return None
    low = min(near, key=lambda ua: ua["energy"]["system"])
    n = len(near)
    return (f"{n} configuration{'s' if n > 1 else ''} cheaper than {'the best' if best else 'all-exact'} (down to "
            f"energy {low['energy']['system']:.4f} at {100 * low['loss']:.2f} pp) measured within budget on "
            f"{low['images']} search images but not at [budget] confidence {s.feasibility_confidence:g} (or not on "
            "the confirmation images); more search images ([data] images) narrow that margin, a lower [budget] "
            "confidence accepts more risk of failing on new data")


def _unchecked_note(n: int, timed_out: bool) -> str:
    what = f"{n} search-feasible configuration{'s' if n > 1 else ''} "
    if timed_out:
        return f"{what}not checked on hold-out: [search] timeout_s reached; {RESUME} to check them"
    return f"{what}not checked on hold-out: [search] n_holdout checks failed first; raise it to check them"


def _no_best_reason(n_cands: int, n_failed: int, n_timed_out: int, cut_short: bool, n_unconfirmed: int = 0) -> str:
    """Why no best was verified and what to do: ``n_timed_out`` candidates the deadline left unchecked;
    ``cut_short``: the deadline ended the search before n_trials; ``n_unconfirmed`` candidates failed the
    confirmation in the final check."""
    if n_cands == n_unconfirmed and not n_timed_out:
        if cut_short:
            return ("no hold-out verified best: [search] timeout_s passed before any configuration cheaper than "
                    f"all-exact was feasible on the search split and its confirmation images; {RESUME}")
        return ("no configuration cheaper than all-exact was feasible on the search split and its confirmation "
                "images; raise [budget] max_accuracy_loss, lower [budget] confidence, or add [search] n_trials")
    if n_timed_out:
        return (f"no hold-out verified best: [search] timeout_s passed before the hold-out check of {n_timed_out} of "
                f"the {n_cands} configurations feasible on the search split ({n_failed} checked, over budget); "
                f"{RESUME} to check them")
    return (f"none of the {n_cands} configurations feasible on the search split passed the hold-out check "
            f"({n_failed} checked, all over budget); raise [budget] confidence for a wider margin, give the search more "
            "images ([data] images), or raise [search] n_holdout to check more of them")


def _count(study) -> dict:
    ts = study.get_trials(deepcopy=False)
    comp = [t for t in ts if t.state == TrialState.COMPLETE]
    return {"complete": len(comp), "feasible": sum(is_feasible(t) for t in comp),
            "stopped_racing": sum(t.user_attrs.get("skipped") == "racing" for t in comp),
            "skipped_predictor": sum(t.user_attrs.get("skipped") == "predictor" for t in comp),
            "predictor_switches": predictor_switches(comp), "predictor_record": predictor_record(comp),
            "duplicates": sum("duplicate_of" in t.user_attrs for t in comp),
            "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in ts),
            "surplus": sum(bool(t.user_attrs.get("surplus")) for t in ts)}


def run_search(budget_path: str | Path, settings: SearchSettings, context_factory, run_dir: str | Path | None = None,
               resume: bool = True, progress=None) -> dict:
    """Create or join the budget's study in ``run_dir``'s storage, seed it, optimise, hold-out check; write and
    return results.json. When the run's deadline stops the set-up (dse.search.deadline.SetupTimeout), nothing is
    written but the set-up's own checkpoints, and the result is ``{"stopped": one line, "run_dir", "elapsed_s"}``."""
    s = settings.validate()
    run_dir = Path(run_dir).absolute() if run_dir else rundir.default_run_dir(budget_path, s.seed)
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise SettingError("resume", False, f"run directory {run_dir} already holds a study; use another run directory "
                           "or delete it (or resume to continue it)")
    prep = rundir.prepare(run_dir, budget_path, s.storage, s.workers)
    t0 = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures re-raise anyway
    try:
        ctx = context_factory()
    except SetupTimeout as exc:  # what the set-up computed is kept in run_dir; no study was touched
        return {"stopped": str(exc), "run_dir": str(run_dir), "elapsed_s": time.time() - t0}
    name = study_name(budget_path, s, ctx)
    sfile = run_dir / rundir.STUDY_FILE
    if sfile.exists() and sfile.read_text().strip() != name:
        raise DseError(f"{run_dir}: holds study {sfile.read_text().strip()}, but the budget now describes {name} "
                       "(the model file, a data file or the search space changed); use another run directory")
    rundir.write_atomic(sfile, (name + "\n").encode())
    study, process = join_study(prep.storage, name, s, create=True, ctx_identity=ctx.identity, run_dir=run_dir)
    study.set_user_attr("settings", asdict(s))  # latest overrides (n_trials, workers) for dse report
    study.set_user_attr("info", ctx.info)
    study.set_user_attr("params", ctx.space.param_names)
    study.set_user_attr("budget", str(Path(budget_path).absolute()))
    enqueue_seeds(study, ctx, s, process)
    objective = _objective(ctx, s)
    optimize(study, objective, s, progress, factory=context_factory, url=prep.url)
    res = final_check(study, objective, s)
    base = dict(ctx.baseline)
    base["fxp8"] = objective.exact_accuracies()
    if None in base["fxp8"].values():
        res["baseline_note"] = f"FxP8-exact accuracy not measured on every split: [search] timeout_s reached; {RESUME}"
    processes, counts = n_processes(study), _count(study)
    why = irreproducible(processes, counts["predictor_record"]["paused"])
    res.update(baseline=base, mode=s.mode, budget_loss=s.budget_loss, info=ctx.info, trials=counts,
               elapsed_s=time.time() - t0, run_dir=str(run_dir), n_trials=s.n_trials, study=name,
               processes=processes, reproducible=why is None, irreproducible=why,
               images={"search": int(ctx.evaluator.n_images), "holdout": int(ctx.holdout.n_images)})
    rundir.write_results(run_dir, res)
    return res
