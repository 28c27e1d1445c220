"""The real search context: budget -> model, data splits, FxP8 calibration, emulator, energy model, space.

``search_from_budget(path_or_None, ...)`` is what ``dse search`` calls; ``build_context(budget_path)`` is the picklable
factory each worker process calls. The search split is shuffled once (seeded) so racing prefixes are random samples.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from dse.budget import SpaceSection
from dse.errors import DseError
from dse.layer_config import LayerConfig
from dse.search import seeds
from dse.search.space import SearchSpace
from dse.search.study import SearchContext, SearchSettings, run_search

SENSITIVITY_IMAGES = 300
PREDICTOR_CONFIGS = 10
MIN_PREDICTOR_CONFIGS = 4  # all-exact + 3: the fewest the quadratic accuracy model is fitted on


def default_budget_path() -> Path:
    """The bundled ``default.toml`` (package dse.search_spaces; the repo's top-level search_spaces/ from a checkout)."""
    try:
        p = resources.files("dse.search_spaces") / "default.toml"
        if p.is_file():
            return Path(str(p))
    except ModuleNotFoundError:
        pass
    p = Path(__file__).resolve().parents[2] / "search_spaces" / "default.toml"
    if p.is_file():
        return p
    raise DseError("bundled search_spaces/default.toml not found; reinstall dse or pass a BUDGET.toml")


def settings_from_budget(b) -> SearchSettings:
    """SearchSettings from a loaded Budget ([budget] max_accuracy_loss is in percentage points)."""
    s = b.search
    return SearchSettings(budget_loss=float(b.budget.max_accuracy_loss) / 100.0, mode=s.mode, sampler=s.sampler,
                          n_trials=int(s.n_trials), seed=int(s.seed), storage=s.storage or None,
                          workers=int(s.workers), timeout_s=s.timeout_s or None, fidelities=list(s.racing),
                          confidence=float(s.confidence), predictor_skip=float(s.predictor_skip),
                          n_holdout=int(s.n_holdout), feasibility_confidence=float(b.budget.confidence))


def build_space(layer_names: list[str], space_cfg: SpaceSection, where: str = "search space") -> SearchSpace:
    """The SearchSpace of the budget's [space] section over the model's MAC layers (unknown multipliers: DseError)."""
    from dse.arith.multipliers import get_multiplier

    mults = space_cfg.all_multipliers
    for m in mults:
        get_multiplier(m)  # unknown name -> DseError naming it
    overrides = {name: {k: v for k, v in asdict(ov).items() if v is not None} for name, ov in space_cfg.layers.items()}
    return SearchSpace.build(layer_names, mults, cv=list(space_cfg.cv or [False]),
                             pin_first_last=space_cfg.pin_first_last, overrides=overrides, where=where)


class EmulatorEvaluator:
    """Per-image correctness of a configuration on a fixed data set (Emulator.predict), read batch by batch.
    ``cache``: a dse.prefix_cache.PrefixCache shared with other evaluators (``tag`` names this data set in it), so
    configurations sharing a prefix with earlier ones continue from the stored activations (bit-identical)."""

    def __init__(self, emulator, data, batch_size: int = 256, cache=None, tag: str = ""):
        self.emulator, self.data, self.batch_size = emulator, data, batch_size
        self.cache, self.tag = cache, tag
        self.n_images = len(data)

    def correct(self, config: dict, start: int, stop: int) -> np.ndarray:
        hits = [self.emulator.predict(x, config, self.batch_size, self.cache, (self.tag, a, a + len(y))) == y
                for a, (x, y) in zip(range(start, stop, self.batch_size),
                                     self.data.batches(self.batch_size, start, stop))]
        return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)


def _energy_fn(model, layers):
    """config -> relative energy dict with a per-component breakdown (best vs all-exact, relative to exact total)."""
    exact = model.network(layers, {})
    total = exact.total or 1.0
    exact_layers = {l.name: l for l in exact.layers}

    def energy(config: dict) -> dict:
        rel = {k: float(v) for k, v in model.relative(layers, config).items()}
        net = model.network(layers, config)
        rel["components"] = {k: {"exact": exact.components.get(k, 0.0) / total, "config": net.components.get(k, 0.0) / total}
                             for k in sorted(set(exact.components) | set(net.components))}
        # per layer, as fractions of the all-exact network energy (system) and of the layer's exact multiplier energy
        rel["layers"] = {l.name: _layer_fractions(l, exact_layers[l.name], total) for l in net.layers}
        return rel
    return energy


def _layer_fractions(le, exact, total: float) -> dict:
    """One layer's energy (exact and configured) as fractions of the all-exact network, its multiplier energy vs the
    layer's exact multiplier energy, and its cycles."""
    return {"exact": exact.total / total, "config": le.total / total,
            "multiplier": le.multiplier_energy / exact.multiplier_energy if exact.multiplier_energy else 1.0,
            "cycles": int(le.cycles)}


def set_search_threads(threads: int | None, workers: int) -> int:
    """Kernel threads of one search process: ``threads``, else the available cores divided among the workers."""
    from dse import kernels

    return kernels.set_threads(threads or max(1, kernels.available_cores() // max(1, workers)))


class SetupClock:
    """The set-up's time budget (``[search] setup_budget_s``), counted from the start of build_context; work that does
    not fit is estimated or left out, and ``notes`` says what."""

    def __init__(self, budget_s: float | None):
        self.budget_s, self.t0 = budget_s, time.monotonic()
        self.notes: list[str] = []

    def over(self) -> bool:
        return self.budget_s is not None and time.monotonic() - self.t0 > self.budget_s


def _silent(stage: str, done: int, total: int, note: str = "") -> None:
    """The set-up progress protocol: ``progress(stage, done, total, note)``; a stage ends when done == total."""


class Sensitivities:
    """``sensitivity(layer, choice) -> loss | None`` for the knapsack seeds: the single-layer accuracy drop on the
    first ``n_images`` search images, measured (the exact prefix continues from the prefix cache) while the set-up
    budget lasts; afterwards estimated by ``estimate(config)`` (the AME predictor, when there is one) or None (left
    out of the knapsack). The counts and a note for the output are kept."""

    STAGE = "sensitivities (single-layer perturbations)"

    def __init__(self, ev: "EmulatorEvaluator", n_images: int, clock: SetupClock, total: Callable[[], int],
                 estimate: Callable[[dict], float] | None, progress=_silent):
        self.ev, self.n_images, self.clock, self.total_fn = ev, n_images, clock, total
        self.estimate, self.progress = estimate, progress
        self.exact, self.total = None, None
        self.counts = {"measured": 0, "estimated": 0, "skipped": 0}

    def __call__(self, layer: str, lc: LayerConfig) -> float | None:
        if self.total is None:
            self.total = self.total_fn()
            self.progress(self.STAGE, 0, self.total)
        if not self.clock.over():
            if self.exact is None:
                self.exact = self.ev.correct({}, 0, self.n_images)
            loss, kind = float(self.exact.mean() - self.ev.correct({layer: lc}, 0, self.n_images).mean()), "measured"
        else:
            loss = None if self.estimate is None else self.estimate({layer: lc})
            kind = "skipped" if loss is None else "estimated"
        self.counts[kind] += 1
        done = sum(self.counts.values())
        self.progress(self.STAGE, done, self.total, self.note() if done >= self.total else "")
        return loss

    def note(self) -> str:
        c = self.counts
        if not c["estimated"] and not c["skipped"]:
            return f"{c['measured']} measured on {self.n_images} images"
        rest = ", ".join(([f"{c['estimated']} estimated by the AME predictor"] if c["estimated"] else [])
                         + ([f"{c['skipped']} left out of the knapsack seeds (no predictor estimate)"]
                            if c["skipped"] else []))
        return (f"{c['measured']} measured on {self.n_images} images, {rest}: [search] setup_budget_s = "
                f"{self.clock.budget_s:g} reached")


@dataclass
class ContextFactory:
    """Picklable ``() -> SearchContext`` for run_search and its worker processes; the set-up ``progress`` display
    stays in the process that shows it (workers get none)."""

    budget_path: str
    threads: int | None = None
    progress: Callable | None = None

    def __call__(self) -> SearchContext:
        return build_context(self.budget_path, threads=self.threads, progress=self.progress)

    def __getstate__(self):
        return dict(self.__dict__, progress=None)


def build_context(budget_path: str, fit_predictor: bool = True, threads: int | None = None,
                  prefix_cache_mib: float | None = None, progress=None) -> SearchContext:
    """The budget's model and data (dse.session), emulator, energy model, sensitivity and (optionally) predictor.
    ``fit_predictor=False`` leaves out the AME predictor even if the budget asks for it (search baselines).
    ``threads`` (else ``[search] threads``) sets the kernel threads of this process; ``prefix_cache_mib`` (else
    ``[search] prefix_cache_mib``) the size of its prefix-activation cache (0 = none). ``progress(stage, done, total,
    note)`` is told about every set-up stage; predictor fitting and sensitivities stop measuring once
    ``[search] setup_budget_s`` has passed (info["setup"] and the progress notes say what was left out)."""
    from dse.budget import load_budget
    from dse.emulate import Emulator, float_accuracy
    from dse.prefix_cache import PrefixCache
    from dse.session import DataRef, RunInputs, open_session

    progress = progress or _silent
    b = load_budget(budget_path)
    s = settings_from_budget(b)
    clock = SetupClock(b.search.setup_budget_s)
    set_search_threads(threads or b.search.threads, s.workers)

    def ref(key: str) -> DataRef:
        return DataRef(getattr(b.data, key), f"{budget_path}: key 'data.{key}' ({getattr(b.data, key)})")

    stage = "model, data and FxP8 calibration"
    progress(stage, 0, 1)
    sess = open_session(RunInputs(b.model.path, ref("calib"), (ref("search"), ref("holdout")), b.model.preprocess,
                                  f"[model] preprocess = {{mean = .., std = ..}} in {budget_path}"))
    progress(stage, 1, 1, f"{b.model.path}, calibrated on {sess.calib.name}")
    search, hold = sess.data
    order = np.random.default_rng(s.seed).permutation(len(search))
    if b.data.images:
        order = order[: int(b.data.images)]
    search = search.subset(order)
    qmodel, graph = sess.qmodel, sess.graph
    emu = Emulator(qmodel)
    cache = PrefixCache.from_mib(b.search.prefix_cache_mib if prefix_cache_mib is None else prefix_cache_mib)
    ev, hv = EmulatorEvaluator(emu, search, cache=cache, tag="search"), EmulatorEvaluator(emu, hold, cache=cache,
                                                                                          tag="holdout")
    layers = qmodel.layers
    space = build_space([l.name for l in layers], b.space, where=f"{budget_path}: model {b.model.path}")
    energy = _energy_fn(b.energy_model(), layers)
    n_sens = min(SENSITIVITY_IMAGES, ev.n_images)

    stage = "float32 baselines"
    progress(stage, 0, 2)
    baseline = {"float": {"search": float_accuracy(graph, search)}}
    progress(stage, 1, 2)
    baseline["float"]["holdout"] = float_accuracy(graph, hold)
    progress(stage, 2, 2)

    predictor, estimate, pinfo = None, None, {}
    if s.predictor_skip and fit_predictor:
        predictor, estimate, pinfo = _fit_predictor(layers, space, ev, n_sens, s.seed, clock, progress)
    sensitivity = Sensitivities(ev, n_sens, clock, lambda: len(seeds.candidates(space, energy)), estimate, progress)
    info = {"model": str(sess.model_path), "calib": sess.calib.name, "preprocess": sess.preprocess.to_dict(),
            "layers": [l.name for l in layers], "searchable": space.searchable,
            "multipliers": space.multipliers, "data": {"search": ev.n_images, "holdout": hv.n_images},
            "predictor": pinfo, "setup": {"budget_s": clock.budget_s, "sensitivities": sensitivity.counts}}
    return SearchContext(space=space, evaluator=ev, holdout=hv, energy=energy, predictor=predictor,
                         sensitivity=sensitivity,
                         baseline=baseline, info=info)


def _fit_predictor(layers, space: SearchSpace, ev: EmulatorEvaluator, n_images: int, seed: int,
                   clock: SetupClock | None = None, progress=_silent, n_configs: int = PREDICTOR_CONFIGS):
    """AME predictor (dse.predict) with an AccuracyModel fitted on the all-exact and ``n_configs`` random
    configurations of the space, emulated on the first ``n_images`` search images (fewer, at least
    MIN_PREDICTOR_CONFIGS, once ``clock`` is over its budget). Only table multipliers. Returns ``(predict, estimate,
    info)``: the conservative loss predictor the objective skips with, the plain one (None for float-domain
    multipliers) that estimates sensitivities the set-up budget left unmeasured; both None when it is not used."""
    from dse.arith.multipliers import get_multiplier
    from dse.predict import AccuracyModel, AmePredictor, loo_quality, loss_predictor

    int_mults = {m for m in space.multipliers if get_multiplier(m).domain == "int"}
    rng = np.random.default_rng(seed + 7919)
    cfgs = [{}]
    for _ in range(n_configs):
        q = rng.uniform(0.2, 1.0)
        cfg = {}
        for n in space.searchable:
            c = space.choices[n]
            opts = [m for m in c.multipliers if m in int_mults]
            if opts and rng.uniform() < q:
                cfg[n] = LayerConfig(str(opts[rng.integers(len(opts))]), bool(c.cv[rng.integers(len(c.cv))]))
        cfgs.append(space.config_from_params(space.params_from_config(cfg)))
    pred = AmePredictor(layers)
    stage = "AME predictor fit"
    accs: list[float] = []
    for c in cfgs:
        if len(accs) >= MIN_PREDICTOR_CONFIGS and clock is not None and clock.over():
            break
        accs.append(float(ev.correct(c, 0, n_images).mean()))
        progress(stage, len(accs), len(cfgs))
    note = "" if len(accs) == len(cfgs) else (f"fitted on {len(accs)} of {len(cfgs)} configurations: [search] "
                                              f"setup_budget_s = {clock.budget_s:g} reached")
    progress(stage, len(cfgs), len(cfgs), note)
    cfgs = cfgs[:len(accs)]
    ames = [pred.ame(c) for c in cfgs]
    try:
        model = AccuracyModel.fit(ames, accs)
    except DseError:
        return None, None, {"error": "predictor fit failed (configurations with equal AME)"}
    q = loo_quality(ames, accs)
    info = {"model": model.to_dict(), "configs": len(cfgs), "images": n_images, "loo_spearman": q.spearman,
            "loo_mean_error": q.mean_error, "loo_margin": q.worst_error}
    if note:
        info["setup_budget"] = note
    if not q.good_enough:
        # a predictor that ranks configurations poorly would skip good ones: measure it and do without
        return None, None, dict(info, disabled=f"AME predictor not used on this model: {q.verdict()}")
    margin = q.worst_error
    base = loss_predictor(pred, model)

    def predict(config: dict):
        """Conservative predicted loss: the model's loss minus its worst leave-one-out error on the fit set, so a
        trial is skipped only when even an error as large as the worst seen would leave it over the budget."""
        if any(lc.multiplier not in int_mults and lc.multiplier != "exact" for lc in config.values()):
            return 0.0  # no AME for float-domain multipliers: never skip
        return max(base(config) - margin, 0.0)

    def estimate(config: dict) -> float | None:
        """The model's loss (None for float-domain multipliers, which have no AME)."""
        if any(lc.multiplier not in int_mults and lc.multiplier != "exact" for lc in config.values()):
            return None
        return float(base(config))
    return predict, estimate, info


def search_from_budget(budget: str | None = None, run_dir=None, storage=None, n_trials=None, workers=None,
                       resume: bool = True, progress=None, threads: int | None = None, setup_progress=None) -> dict:
    """``dse search``: load the budget (default: bundled), apply the overrides, run the search. ``progress``: see
    ``dse.search.study.optimize``; ``setup_progress(stage, done, total, note)``: see :func:`build_context`."""
    path = Path(budget) if budget else default_budget_path()
    if not path.is_file():
        raise DseError(f"budget file {path}: not found; pass an existing BUDGET.toml (or none for the bundled default)")
    from dse.budget import load_budget

    s = settings_from_budget(load_budget(path))
    if n_trials is not None:
        s.n_trials = int(n_trials)
    if workers is not None:
        s.workers = int(workers)
    if storage:
        s.storage = storage
    return run_search(path, s, ContextFactory(str(path), threads, setup_progress), run_dir=run_dir,
                      resume=resume, progress=progress)
