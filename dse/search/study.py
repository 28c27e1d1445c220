"""The search driver: study creation/resume, seeding, optimisation (one or several processes), hold-out check.

``run_search(budget, run_dir)`` is the entry point. The model-dependent pieces (evaluators, energy model, predictor,
sensitivity) come from a ``SearchContext`` built by a picklable ``context_factory`` (the real one loads the budget's
model and data; tests inject fakes), so the driver itself knows nothing about ONNX or emulation.

Resume: the study lives in the run directory's storage under a fixed name; re-running the same command loads it and
runs only ``n_trials - completed`` more trials, so no completed trial is lost after an interrupt. Several processes
(``workers > 1``) each call ``study.optimize`` on the same storage with a global ``MaxTrialsCallback``.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from dse.budget import BudgetSection, SearchSection
from dse.errors import DseError, SettingError
from dse.layer_config import LayerConfig, config_from_dict
from dse.search import rundir, seeds
from dse.search.objective import ATTR_HOLDOUT, ATTR_VERIFIED, EXACT_ENERGY, Objective
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
    n_holdout: int = _D.n_holdout              # hold-out checks that may fail before the walk down the list stops
    feasibility_confidence: float = BudgetSection().confidence  # [budget] confidence of the search-split feasibility
    seed_uniform: bool = True
    seed_knapsack: bool = True

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

    ``holdout``: evaluator on the held-out split; ``baseline``: ``{"float": {"search", "holdout"}}`` (accuracies);
    ``sensitivity(layer, LayerConfig) -> loss`` for the knapsack seed (None: no knapsack seed);
    ``info``: JSON-friendly description (model, data, layers) stored in the study and results.
    """

    space: SearchSpace
    evaluator: object
    holdout: object
    energy: Callable[[dict], dict]
    predictor: Callable[[dict], float] | None = None
    sensitivity: Callable[[str, LayerConfig], float] | None = None
    baseline: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


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


def _open_study(settings: SearchSettings, storage, seed: int, workers: int, load_only: bool = False) -> optuna.Study:
    directions = ["minimize"] if settings.mode == "constrained" else ["minimize", "minimize"]
    sampler = make_sampler(settings.sampler, settings.mode, seed, workers)
    if load_only:
        return optuna.load_study(study_name=rundir.STUDY_NAME, storage=storage, sampler=sampler)
    return optuna.create_study(study_name=rundir.STUDY_NAME, storage=storage, directions=directions, sampler=sampler,
                               load_if_exists=True)


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def is_feasible(t) -> bool:
    c = t.constraints
    return t.state == TrialState.COMPLETE and bool(c) and all(v <= 0 for v in c.values())


def _objective(ctx: SearchContext, s: SearchSettings) -> Objective:
    return Objective(ctx.space, ctx.evaluator, ctx.energy, s.budget_loss, s.mode, s.fidelities, s.confidence,
                     ctx.predictor, s.predictor_skip, feasibility_confidence=s.feasibility_confidence,
                     holdout=ctx.holdout, max_holdout_failures=s.n_holdout)


def enqueue_seeds(study: optuna.Study, ctx: SearchContext, s: SearchSettings) -> int:
    """Enqueue all-exact, uniform and knapsack seeds once per study (study user attr ``seeded``)."""
    if study.user_attrs.get("seeded"):
        return 0
    cfgs = [seeds.all_exact(ctx.space)]
    if s.seed_uniform:
        cfgs += seeds.uniform(ctx.space)
    if s.seed_knapsack and ctx.sensitivity is not None:
        items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
        cfgs += seeds.knapsack_seeds(ctx.space, items, s.budget_loss)
    done = []
    for cfg in cfgs:
        p = ctx.space.params_from_config(cfg)
        if p not in done:
            study.enqueue_trial(p, user_attrs={"seed": True})
            done.append(p)
    study.set_user_attr("seeded", True)
    return len(done)


def worker_seed(seed: int, i: int) -> int:
    """Sampler seed of worker process i (i = 0 is the main process, which uses ``seed`` itself). Derived by
    SeedSequence so that the streams of different study seeds never coincide (with ``seed + i``, seed 0's worker 1 and
    seed 1's main process sampled the same configurations)."""
    if i == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def _worker(factory, run_dir, settings: SearchSettings, seed: int) -> None:  # pragma: no cover - subprocess
    try:
        ctx = factory()
        study = _open_study(settings, rundir.storage_for(run_dir, settings.storage), seed, settings.workers,
                            load_only=True)
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures re-raise anyway
        study.optimize(_objective(ctx, settings), n_trials=settings.n_trials, timeout=settings.timeout_s,
                       callbacks=[MaxTrialsCallback(settings.n_trials, states=(TrialState.COMPLETE,))])
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group; the parent reports it
        pass


def optimize(study: optuna.Study, objective: Objective, s: SearchSettings, progress=None,
             factory=None, run_dir=None) -> None:
    """Run the remaining ``n_trials - completed`` trials (in this process and ``workers - 1`` spawned ones).
    ``progress(total, done)``: a context manager that is also an Optuna callback (e.g. ``dse.present.SearchProgress``);
    None: no progress display."""
    done = n_complete(study)
    remaining = s.n_trials - done
    if remaining <= 0:
        return
    procs = []
    if s.workers > 1:
        if factory is None or run_dir is None:
            raise DseError("search.workers > 1 needs a context factory and a run directory shared by the processes")
        ctxm = mp.get_context("spawn")
        for i in range(1, s.workers):
            p = ctxm.Process(target=_worker, args=(factory, str(run_dir), s, worker_seed(s.seed, i)), daemon=False)
            p.start()
            procs.append(p)
    try:
        with progress(s.n_trials, done) if progress else contextlib.nullcontext() as bar:
            callbacks = [MaxTrialsCallback(s.n_trials, states=(TrialState.COMPLETE,))] + ([bar] if bar else [])
            study.optimize(objective, n_trials=remaining, timeout=s.timeout_s, callbacks=callbacks)
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
            "feasible": is_feasible(t), "holdout": ua.get(ATTR_HOLDOUT), "verified": ua.get(ATTR_VERIFIED)}


def _full_trials(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("full") and "duplicate_of" not in t.user_attrs]


def final_check(study: optuna.Study, objective: Objective, s: SearchSettings) -> dict:
    """Pick the reported best: walk down the search-feasible full-fidelity configurations by energy (all-exact and
    anything costing more excluded) until one passes the hold-out check. Trials checked during the search keep their
    result; unchecked ones are checked now, at most ``n_holdout`` of them that fail. No pass: ``best`` is None and
    ``no_best`` says why and what to do. In Pareto mode the feasible front points are checked the same way."""
    full = _full_trials(study)
    cands = sorted((t for t in full if is_feasible(t) and t.user_attrs["energy"]["system"] < EXACT_ENERGY),
                   key=lambda t: (t.user_attrs["energy"]["system"], t.user_attrs["loss"]))
    front = pareto_front([trial_summary(t) for t in full])
    on_front = {d["trial"] for d in front}
    checked, unchecked, best, failures = [], [], None, 0
    for t in cands:
        if best is not None and (s.mode == "constrained" or t.number not in on_front):
            continue
        d = trial_summary(t)
        if d["verified"] is None:
            if failures >= s.n_holdout:
                unchecked.append(t.number)
                continue
            cfg = config_from_dict(d["config"])
            d["holdout"] = objective.holdout_check(cfg)
            d["verified"] = d["holdout"]["loss"] <= s.budget_loss
            failures += not d["verified"]
        checked.append(d)
        if d["verified"] and best is None:
            best = d
    by_num = {d["trial"]: d for d in checked}
    front = [by_num.get(d["trial"], d) for d in front]
    # unchecked: search-feasible configurations cheaper than the best (or front points) left out by the n_holdout bound
    res = {"best": best, "checked": checked, "pareto_front": front, "unchecked": unchecked}
    if best is None:
        res["no_best"] = _no_best_reason(len(cands), sum(d["verified"] is False for d in checked), s)
    return res


def _no_best_reason(n_cands: int, n_failed: int, s: SearchSettings) -> str:
    if n_cands == 0:
        return ("no configuration cheaper than all-exact was feasible on the search split; raise [budget] "
                "max_accuracy_loss, lower [budget] confidence, or add [search] n_trials")
    return (f"none of the {n_cands} configurations feasible on the search split passed the hold-out check "
            f"({n_failed} checked, all over budget); raise [budget] confidence for a wider margin, give the search more "
            "images ([data] images), or raise [search] n_holdout to check more of them")


def _count(study) -> dict:
    ts = study.get_trials(deepcopy=False)
    comp = [t for t in ts if t.state == TrialState.COMPLETE]
    return {"complete": len(comp), "feasible": sum(is_feasible(t) for t in comp),
            "stopped_racing": sum(t.user_attrs.get("skipped") == "racing" for t in comp),
            "skipped_predictor": sum(t.user_attrs.get("skipped") == "predictor" for t in comp),
            "duplicates": sum("duplicate_of" in t.user_attrs for t in comp),
            "failed": sum(t.state == TrialState.FAIL for t in ts)}


def run_search(budget_path: str | Path, settings: SearchSettings, context_factory, run_dir: str | Path | None = None,
               resume: bool = True, progress=None) -> dict:
    """Create or resume the study in ``run_dir``, seed it, optimise, hold-out check; write and return results.json."""
    s = settings.validate()
    run_dir = Path(run_dir) if run_dir else rundir.default_run_dir(budget_path, s.seed)
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise SettingError("resume", False, f"run directory {run_dir} already holds a study; use another run directory "
                           "or delete it (or resume to continue it)")
    storage = rundir.prepare(run_dir, budget_path, s.storage, s.workers)
    t0 = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures re-raise anyway
    ctx = context_factory()
    study = _open_study(s, storage, s.seed, s.workers)
    params = study.user_attrs.get("params")
    if params is not None and params != ctx.space.param_names:
        raise DseError(f"{run_dir}: the stored study has a different search space; use another run directory")
    study.set_user_attr("settings", asdict(s))  # latest overrides (n_trials, workers) for dse report
    study.set_user_attr("info", ctx.info)
    study.set_user_attr("params", ctx.space.param_names)
    enqueue_seeds(study, ctx, s)
    objective = _objective(ctx, s)
    optimize(study, objective, s, progress, factory=context_factory, run_dir=run_dir)
    res = final_check(study, objective, s)
    base = dict(ctx.baseline)
    base["fxp8"] = {"search": float(objective.correct_exact.mean()),
                    "holdout": float(objective.correct_exact_holdout.mean())}
    res.update(baseline=base, mode=s.mode, budget_loss=s.budget_loss, info=ctx.info, trials=_count(study),
               elapsed_s=time.time() - t0, run_dir=str(run_dir), n_trials=s.n_trials,
               images={"search": int(ctx.evaluator.n_images), "holdout": int(ctx.holdout.n_images)})
    rundir.write_results(run_dir, res)
    return res
