"""The real search context: budget -> model, data splits, FxP8 calibration, emulator, energy model, space.

``search_from_budget(path_or_None, ...)`` is what ``dse search`` calls; ``build_context(budget_path)`` is the picklable
factory each worker process calls. The search split is shuffled once (seeded) so racing prefixes are random samples.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from dse.budget import SpaceSection
from dse.errors import DseError
from dse.layer_config import LayerConfig
from dse.search import rundir, seeds
from dse.search.context_cache import BASELINES_FILE, Checkpoint
from dse.search.deadline import SETUP_NO_TIME, SETUP_RESUME, Deadline, RunTimeout, SetupTimeout
from dse.search.identity import ContextIdentity
from dse.search.space import SearchSpace
from dse.search.study import SearchContext, SearchSettings, run_search

SENSITIVITY_IMAGES = 300
PREDICTOR_CONFIGS = 10
FIT_CONFIGS = "two-to-half-the-layers"  # how the predictor's set-up configurations are drawn (part of the context-cache key)
MIN_PREDICTOR_CONFIGS = 4  # all-exact + 3: the fewest the quadratic accuracy model is fitted on
PREDICTOR_STAGE = "predictor fit (AME, logit and propagated surrogates)"


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
                          predictor_max_share=float(s.predictor_max_share),
                          n_holdout=int(s.n_holdout), feasibility_confidence=float(b.budget.confidence),
                          seeds=tuple(s.seeds))


DEFAULT_CONFIRM = 1000  # confirmation images when [data] confirm is absent (at most a fifth of the search split)


@dataclass(frozen=True)
class SearchSplit:
    """Positions in the search split (data set order) of its three disjoint parts, drawn from one seeded permutation:
    ``search`` (the first ``[data] images``: what racing and the search-split feasibility see), ``confirm`` (the next
    ``[data] confirm``: a configuration is re-measured on them before it may become the best, so the cheapest of many
    similar configurations is not chosen for its luck on the search images) and ``unused`` (the rest: never looked at
    by a search; benchmarks measure reported bests on them)."""

    search: np.ndarray
    confirm: np.ndarray
    unused: np.ndarray


def search_split(n: int, images: int | None, confirm: int | None, seed: int, where: str = "budget") -> SearchSplit:
    """The search split's parts (:class:`SearchSplit`) for ``[data] images`` (a cap: at most the images the
    confirmation leaves; None: all of those) and ``[data] confirm`` (None: ``min(DEFAULT_CONFIRM, n // 5)``; 0: no
    confirmation); the permutation depends on ``seed`` only, so the search images of a seed do not change with
    ``confirm`` (as long as they fit)."""
    m = min(DEFAULT_CONFIRM, n // 5) if confirm is None else int(confirm)
    if m >= n:
        raise DseError(f"{where}: [data] confirm ({m}) leaves none of the search split's {n} images to search on; "
                       "lower [data] confirm (0 = no confirmation)")
    k = n - m if images is None else min(int(images), n - m)
    order = np.random.default_rng(seed).permutation(n)
    return SearchSplit(order[:k], order[k:k + m], order[k + m:])


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

    def __init__(self, emulator, data, batch_size: int = 256, cache=None, tag: str = "", deadline=None):
        self.emulator, self.data, self.batch_size = emulator, data, batch_size
        self.cache, self.tag, self.deadline = cache, tag, deadline
        self.n_images = len(data)

    def _batches(self, start: int, stop: int):
        """(first image, images, labels) per batch; with a ``deadline`` (dse.search.deadline) it is checked before
        every batch, so a trial in progress stops within one batch of the run's timeout (RunTimeout; never outside
        a trial)."""
        for a, (x, y) in zip(range(start, stop, self.batch_size), self.data.batches(self.batch_size, start, stop)):
            if self.deadline is not None:
                self.deadline.check()
            yield a, x, y

    def logits(self, config: dict, start: int, stop: int) -> np.ndarray:
        """float32 logits of ``config`` on images ``start:stop``, through the prefix cache like :meth:`correct`."""
        return np.concatenate([self.emulator.run(x, config, self.batch_size, self.cache, (self.tag, a, a + len(x)))
                               for a, x, _ in self._batches(start, stop)])

    def correct(self, config: dict, start: int, stop: int) -> np.ndarray:
        """Correctness on images ``start:stop`` (see :meth:`_batches` for the deadline)."""
        hits = []
        for a, x, y in self._batches(start, stop):
            hits.append(self.emulator.predict(x, config, self.batch_size, self.cache, (self.tag, a, a + len(y))) == y)
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

    def __init__(self, budget_s: float | None, deadline: Deadline | None = None):
        self.budget_s, self.t0, self.deadline = budget_s, time.monotonic(), deadline

    def over(self) -> bool:
        """The set-up budget is spent, or the run's deadline ([search] timeout_s) has passed."""
        spent = self.budget_s is not None and time.monotonic() - self.t0 > self.budget_s
        return spent or (self.deadline is not None and self.deadline.passed())

    def reason(self) -> str:
        if self.deadline is not None and self.deadline.passed():
            return "[search] timeout_s reached"
        return f"[search] setup_budget_s = {self.budget_s:g} reached"


def _silent(stage: str, done: int, total: int, note: str = "") -> None:
    """The set-up progress protocol: ``progress(stage, done, total, note)``; a stage ends when done == total."""


class Sensitivities:
    """``sensitivity(layer, choice) -> loss | None`` for the knapsack seeds: the single-layer accuracy drop on the
    first ``n_images`` search images, measured (the exact prefix continues from the prefix cache) while the set-up
    budget lasts; afterwards estimated by ``estimate(config)`` (the AME predictor, when there is one) or None (left
    out of the knapsack). With a ``surrogate`` (dse.predict.LogitSurrogate on the same images) the single-layer runs
    are its logit changes: measured once for both, and those it measured already count as measured past the budget.
    The counts and a note for the output are kept."""

    STAGE = "sensitivities (single-layer perturbations)"

    def __init__(self, ev: "EmulatorEvaluator", n_images: int, clock: SetupClock, total: Callable[[], int],
                 estimate: Callable[[dict], float] | None, progress=_silent, surrogate=None):
        self.ev, self.n_images, self.clock, self.total_fn = ev, n_images, clock, total
        self.estimate, self.progress, self.surrogate = estimate, progress, surrogate
        self.exact, self.total = None, None
        self.counts = {"measured": 0, "estimated": 0, "skipped": 0}

    def _measure(self, layer: str, lc: LayerConfig) -> float:
        if self.surrogate is not None:
            return self.surrogate.single_loss(layer, lc)
        if self.exact is None:
            self.exact = self.ev.correct({}, 0, self.n_images)
        return float(self.exact.mean() - self.ev.correct({layer: lc}, 0, self.n_images).mean())

    def _measure_armed(self, layer: str, lc: LayerConfig) -> float | None:
        """:meth:`_measure`, stopped within a batch of the run's deadline (then None: estimated or left out)."""
        deadline = self.clock.deadline
        if deadline is None:
            return self._measure(layer, lc)
        try:
            with deadline.trial():
                return self._measure(layer, lc)
        except RunTimeout:
            return None

    def __call__(self, layer: str, lc: LayerConfig) -> float | None:
        if self.total is None:
            self.total = self.total_fn()
            self.progress(self.STAGE, 0, self.total)
        loss = None
        if not self.clock.over() or (self.surrogate is not None and self.surrogate.has(layer, lc)):
            loss = self._measure_armed(layer, lc)
        if loss is not None:
            kind = "measured"
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
        return f"{c['measured']} measured on {self.n_images} images, {rest}: {self.clock.reason()}"


@dataclass
class ContextFactory:
    """Picklable ``() -> SearchContext`` for run_search and its worker processes; the set-up ``progress`` display
    stays in the process that shows it (workers get none)."""

    budget_path: str
    threads: int | None = None
    progress: Callable | None = None
    deadline: Deadline | None = None  # the run's [search] timeout_s, shared by every process
    run_dir: str | None = None        # holds the context cache the first process writes and the others read

    def __call__(self) -> SearchContext:
        return build_context(self.budget_path, threads=self.threads, progress=self.progress, deadline=self.deadline,
                             run_dir=self.run_dir)

    def __getstate__(self):
        return dict(self.__dict__, progress=None)


def build_context(budget_path: str, fit_predictor: bool = True, threads: int | None = None,
                  prefix_cache_mib: float | None = None, progress=None, deadline: Deadline | None = None,
                  setup_budget_s: float | None = None, run_dir: str | Path | None = None) -> SearchContext:
    """The budget's model and data (dse.session), emulator, energy model, sensitivity and (optionally) predictor.
    ``fit_predictor=False`` leaves out the AME predictor even if the budget asks for it (search baselines).
    ``threads`` (else ``[search] threads``) sets the kernel threads of this process; ``prefix_cache_mib`` (else
    ``[search] prefix_cache_mib``) the size of its prefix-activation cache (0 = none). ``progress(stage, done, total,
    note)`` is told about every set-up stage; predictor fitting and sensitivities stop measuring once
    ``setup_budget_s`` (else ``[search] setup_budget_s``) or the run's ``deadline`` has passed (info["setup"] and the
    progress notes say what was left out); the search evaluator stops a trial at the batch where ``deadline`` passes.
    ``run_dir``: calibration, baselines and predictor fit are read from / written to its context cache
    (dse.search.context_cache)."""
    from dse.budget import load_budget
    from dse.emulate import Emulator
    from dse.prefix_cache import PrefixCache
    from dse.search import context_cache

    progress = progress or _silent
    b = load_budget(budget_path)
    s = settings_from_budget(b)
    clock = SetupClock(setup_budget_s or b.search.setup_budget_s, deadline)
    set_search_threads(threads or b.search.threads, s.workers)
    want_predictor = bool(s.predictor_skip and fit_predictor)
    key, cached, why = _cached(b, run_dir, want_predictor, progress)
    run_dir = Path(run_dir) if run_dir else None
    sess, cached = _open(b, budget_path, run_dir, cached, deadline, progress)
    whole, hold = sess.data
    split = search_split(len(whole), b.data.images, b.data.confirm, s.seed, where=str(budget_path))
    # an image folder decodes its files on every read (a 224x224 JPEG ~2 ms, a third of a ResNet-18 emulation of it):
    # the search and confirmation images are held decoded within [search] image_cache_mib (1 GiB: ~7,000 such images)
    room = int(b.search.image_cache_mib * (1 << 20))
    search = _in_memory(whole.subset(split.search), "search", progress, room)
    held = search.raw_nbytes if search.source is not whole.source else 0  # what the search images took
    confirm = _in_memory(whole.subset(split.confirm), "confirmation", progress, room - held)
    qmodel = sess.qmodel
    emu = Emulator(qmodel)
    cache = PrefixCache.from_mib(b.search.prefix_cache_mib if prefix_cache_mib is None else prefix_cache_mib)
    ev = EmulatorEvaluator(emu, search, cache=cache, tag="search", deadline=deadline)
    # set-up work is bounded by its clock, and stops within a batch of the deadline (armed while it measures)
    setup_ev = EmulatorEvaluator(emu, search, cache=cache, tag="search", deadline=deadline)
    hv = EmulatorEvaluator(emu, hold, cache=cache, tag="holdout")  # checks stop at the deadline between chunks
    cv_ = EmulatorEvaluator(emu, confirm, cache=cache, tag="confirm") if split.confirm.size else None
    uv = EmulatorEvaluator(emu, whole.subset(split.unused), tag="unused") if split.unused.size else None
    layers = qmodel.layers
    space = build_space([l.name for l in layers], b.space, where=f"{budget_path}: model {b.model.path}")
    energy = _energy_fn(b.energy_model(), layers)
    n_sens = min(SENSITIVITY_IMAGES, ev.n_images)
    baseline, data = ((cached.baseline, cached.data) if cached else
                      _float_baselines(sess.graph, search, hold, progress, deadline,
                                       run_dir and Checkpoint(run_dir, BASELINES_FILE, key)))
    predictor, estimate, pinfo, accs, sur = None, None, {}, None, None
    if want_predictor:
        cfgs = setup_fit_configs(space, s.seed)

        def keep(state, accs_so_far) -> Path | None:  # a fit the deadline cut: the next run measures the rest
            if not run_dir:
                return None
            return context_cache.save(run_dir, context_cache.ContextCache(key, qmodel.state(), baseline, accs_so_far,
                                                                          state, predictor_done=False, data=data))
        # ev: a single-layer change the surrogate first needs inside a trial stops at the run's deadline
        sur, accs = _predictor_fit(cfgs, lambda c: ev.logits(c, 0, n_sens), setup_ev, search.y[:n_sens], clock,
                                   progress, cached, keep)
        cached = cached if cached and cached.predictor_done else None
        prop = _propagated(emu, search, n_sens, s.seed, deadline)
        notes = ([] if len(accs) == len(cfgs) else [f"fitted on {len(accs)} of {len(cfgs)} configurations "
                                                     "(set-up budget)"]) + ([] if prop else [PROPAGATED_CUT])
        predictor, estimate, pinfo = predictor_gate(gate_candidates(layers, space, sur, prop), sur, cfgs[:len(accs)],
                                                    accs, n_sens, "; ".join(notes), focus=gate_focus(s))
    if run_dir and not cached:
        context_cache.save(run_dir, context_cache.ContextCache(key, qmodel.state(), baseline, accs,
                                                               sur.state() if sur else None, data=data))
    sensitivity = Sensitivities(setup_ev, n_sens, clock, lambda: len(seeds.candidates(space, energy)), estimate,
                                progress, sur)
    info = {"model": str(sess.model_path), "calib": sess.calib.name, "preprocess": sess.preprocess.to_dict(),
            "layers": [l.name for l in layers], "searchable": space.searchable,
            "multipliers": space.multipliers,
            "data": {"search": ev.n_images, "confirm": int(split.confirm.size), "holdout": hv.n_images},
            "predictor": pinfo, "setup": {"budget_s": clock.budget_s, "sensitivities": sensitivity.counts,
                                          "context_cache": "loaded" if cached else (why or "computed")}}
    return SearchContext(space=space, evaluator=ev, holdout=hv, confirm=cv_, unused=uv, energy=energy,
                         predictor=predictor,
                         sensitivity=sensitivity, baseline=baseline, info=info, model_path=str(sess.model_path),
                         data_specs={k: getattr(b.data, k) for k in ("calib", "search", "holdout")},
                         deadline=deadline, identity=ContextIdentity.of(qmodel.state(), data, baseline))


PROPAGATED_CUT = "propagated surrogate left out: [search] timeout_s reached while it was built"


def _propagated(emu, search, n: int, seed: int, deadline: Deadline | None):
    """The propagated surrogate (dse.predict.PropagatedSurrogate) on the first ``n`` search images, or None when the
    run's deadline passes while it is built (looked at before each batch of its all-exact run): the gate then chooses
    between the other candidates, and the run starts no trial."""
    from dse.predict import PropagatedSurrogate

    try:
        with deadline.trial() if deadline is not None else contextlib.nullcontext():
            return PropagatedSurrogate(emu, search.images(0, n), search.y[:n], seed=seed,
                                       check=deadline.check if deadline is not None else None)
    except RunTimeout:
        return None


def _stopped(stage: str, done: str, kept: Path | None, progressed: bool = True) -> str:
    """The one line a search stopped in its set-up by the deadline ends with (dse.search.deadline.SetupTimeout);
    ``progressed``: this run got some of the stage done (else re-running with the same timeout_s cannot help)."""
    where = f"kept in {kept}" if kept else "not kept: no run directory"
    how = SETUP_RESUME if progressed else SETUP_NO_TIME
    return f"[search] timeout_s reached during the set-up's {stage} ({done}, {where}); {how}"


def _predictor_fit(cfgs: list[dict], run: Callable, setup_ev: EmulatorEvaluator, labels, clock: SetupClock, progress,
                   cached, keep: Callable):
    """(the logit surrogate on ``labels``' images, the accuracies of the fit configurations ``cfgs``): from the context
    cache ``cached``, continued where the deadline stopped an earlier run, or measured now. When the run's deadline
    cuts them (within a batch), ``keep(surrogate state or None, accuracies)`` saves what was measured and returns
    where, and SetupTimeout is raised."""
    from dse.predict import LogitSurrogate

    deadline = clock.deadline
    accs = list(cached.predictor_accs) if cached else []
    try:
        with deadline.trial() if deadline is not None else contextlib.nullcontext():
            sur = LogitSurrogate(run, labels, cached.surrogate if cached else None)
    except RunTimeout:
        raise SetupTimeout(_stopped(PREDICTOR_STAGE, "its first network run cut", keep(None, accs), False)) from None
    before = len(accs)
    if not cached or not cached.predictor_done:
        accs = _predictor_accuracies(cfgs, setup_ev, len(labels), clock, progress, sur, accs)
    if len(accs) < len(cfgs) and deadline is not None and deadline.passed():
        raise SetupTimeout(_stopped(PREDICTOR_STAGE, f"{len(accs)} of {len(cfgs)} configurations measured",
                                    keep(sur.state(), accs), len(accs) > before))
    return sur, accs


def _open(b, budget_path, run_dir: Path | None, cached, deadline: Deadline | None, progress):
    """(dse.session.open_session for the budget, the context cache ``cached`` or None when it was computed with
    another calibration than the run directory's calibration file holds, e.g. one copied from another machine): the
    calibration from the context cache, else from the run directory's calibration file (finished, or continued where
    the deadline stopped it), else computed there; a calibration the deadline stops keeps its statistics and raises
    SetupTimeout."""
    from dse.model.onnx_import import resolve_model
    from dse.quant import DEFAULT_METHOD, CalibrationStopped, Checkpoints
    from dse.search import context_cache
    from dse.session import DataRef, RunInputs, open_session

    def ref(k: str) -> DataRef:
        return DataRef(getattr(b.data, k), f"{budget_path}: key 'data.{k}' ({getattr(b.data, k)})")

    stored, ckey, pkey, checkpoints = context_cache.StoredCalibration(), "", "", None
    if run_dir:
        model = Path(resolve_model(b.model.path))
        ckey = context_cache.calibration_key(b, model, DEFAULT_METHOD)
        pkey = context_cache.calibration_key(b, model, DEFAULT_METHOD, local=False)
        stored = context_cache.load_calibration(run_dir, ckey, pkey)
    if cached and stored.finished and stored.finished.digest() != cached.calibration.digest():
        progress("context cache", 1, 1, f"{run_dir / context_cache.FILE}: computed with another calibration than "
                 f"{run_dir / context_cache.CALIBRATION_FILE} holds, recomputed")
        cached = None
    if cached:
        stored = context_cache.StoredCalibration(finished=cached.calibration)
    elif stored.why:
        progress("calibration checkpoint", 1, 1, stored.why)
    if stored.finished is None and (deadline is not None or run_dir):
        # the progress is written when the deadline stops it and every Checkpoints.every_s (a killed run keeps it too)
        save = (lambda p: context_cache.save_calibration(run_dir, ckey, p)) if run_dir else (lambda p: None)
        checkpoints = Checkpoints(deadline.passed if deadline is not None else lambda: False, save, stored.progress)
    stage = "model and data" + ("" if stored.finished else ", FxP8 calibration")
    steps = [1]

    def calib_progress(done: int, total: int) -> None:
        steps[0] = total + 1  # + loading the model and data
        progress(stage, done, total + 1)
    progress(stage, 0, 1)
    try:
        sess = open_session(RunInputs(b.model.path, ref("calib"), (ref("search"), ref("holdout")), b.model.preprocess,
                                      f"[model] preprocess = {{mean = .., std = ..}} in {budget_path}"),
                            calibrated=stored.finished, checkpoints=checkpoints, calib_progress=calib_progress)
    except CalibrationStopped as exc:
        kept = run_dir / context_cache.CALIBRATION_FILE if run_dir else None
        at = (exc.progress.meta["pass"], exc.progress.meta["next"])
        start = (stored.progress.meta["pass"], stored.progress.meta["next"]) if stored.progress else ("range", 0)
        raise SetupTimeout(_stopped("FxP8 calibration", f"{exc.progress.describe()} done", kept, at != start)) from None
    if run_dir and (stored.finished is None or stored.copied_from):  # a copied one is this run directory's now
        context_cache.save_calibration(run_dir, ckey, sess.qmodel.state(), pkey)
    copied = f", copied from host {stored.copied_from}" if stored.copied_from else ""
    source = (f"calibration from {run_dir}'s context cache" if cached else f"calibration from {run_dir}{copied}"
              if stored.finished else f"calibrated on {sess.calib.name}"
              + (f" (continued at {stored.progress.describe()})" if stored.progress else ""))
    progress(stage, steps[0], steps[0], f"{b.model.path}, {source}")
    return sess, cached


def cache_extra(want_predictor: bool) -> dict:
    """The set-up constants the context cache's key covers besides the budget (dse.search.context_cache)."""
    return {"sensitivity_images": SENSITIVITY_IMAGES, "predictor_configs": PREDICTOR_CONFIGS,
            "predictor": want_predictor, "fit_configs": FIT_CONFIGS}


def _cached(b, run_dir, want_predictor: bool, progress):
    """(key, the run directory's context cache for it or None, why it was not usable: "" when absent or loaded)."""
    from dse.model.onnx_import import resolve_model
    from dse.search import context_cache

    key = context_cache.cache_key(b, Path(resolve_model(b.model.path)), cache_extra(want_predictor))
    cached, why = context_cache.load(Path(run_dir), key) if run_dir else (None, "")
    if why:
        progress("context cache", 1, 1, why)
    return key, cached, why


def _in_memory(data, what: str, progress, max_bytes: int):
    """``data.materialized`` within ``max_bytes``, reported as the set-up stage "decoding the WHAT images"."""
    return data.materialized(max(0, max_bytes), lambda done, total: progress(f"decoding the {what} images", done,
                                                                             total))


FLOAT_BATCH = 256
CHECKPOINT_S = 30.0  # a set-up stage's work so far is written to the run directory at least this often


def _float_baselines(graph, search, hold, progress, deadline: Deadline | None = None,
                     checkpoint: Checkpoint | None = None) -> tuple[dict, dict]:
    """(float32 top-1 accuracy on the search and hold-out splits, the digests of their images and labels:
    dse.search.identity.data_digest), FLOAT_BATCH images at a time. ``checkpoint`` (in the run directory) keeps the
    images done and right and the digest so far per split: written every CHECKPOINT_S seconds and when the
    ``deadline`` passes before a batch (then SetupTimeout), and continued from by the next run."""
    from dse.emulate import float_hits
    from dse.search.identity import DATA_START, data_digest

    stage = "float32 baselines"
    splits = {"search": search, "holdout": hold}
    got = checkpoint.load()[0] if checkpoint is not None else None
    state = got[0] if got else {k: [0, 0, DATA_START] for k in splits}  # per split: [images done, right, digest]
    total = sum(-(-len(d) // FLOAT_BATCH) for d in splits.values())
    done = sum(-(-state[k][0] // FLOAT_BATCH) for k in splits)
    progress(stage, done, total + 1)
    saved, start = time.monotonic(), done
    for k, data in splits.items():
        for x, y in data.batches(FLOAT_BATCH, start=state[k][0]):
            if deadline is not None and deadline.passed():
                if checkpoint is not None:
                    checkpoint.save(state)
                n = sum(v[0] for v in state.values())
                raise SetupTimeout(_stopped(stage, f"{n} of {len(search) + len(hold)} images done",
                                            checkpoint.path if checkpoint else None, done > start))
            state[k] = [state[k][0] + len(y), state[k][1] + float_hits(graph, x, y, FLOAT_BATCH),
                        data_digest(state[k][2], x, y)]
            done += 1
            progress(stage, done, total + 1)
            if checkpoint is not None and time.monotonic() - saved >= CHECKPOINT_S:
                checkpoint.save(state)
                saved = time.monotonic()
    if checkpoint is not None:
        checkpoint.save(state)  # finished: a run the deadline stops later in its set-up does not measure it again
    progress(stage, total + 1, total + 1)
    return {"float": {k: state[k][1] / len(d) for k, d in splits.items()}}, {k: state[k][2] for k in splits}


def setup_fit_configs(space: SearchSpace, seed: int, n_configs: int = PREDICTOR_CONFIGS) -> list[dict]:
    """The all-exact and ``n_configs`` random configurations of the space (table multipliers only, on 2 to half of
    the searchable layers) the predictors are first fitted on (deterministic in ``seed``)."""
    from dse.arith.multipliers import get_multiplier

    int_mults = {m for m in space.multipliers if get_multiplier(m).domain == "int"}
    rng = np.random.default_rng(seed + 7919)
    layers = [n for n in space.searchable if any(m in int_mults for m in space.choices[n].multipliers)]
    cfgs = [{}]
    for _ in range(n_configs if layers else 0):
        # few approximate layers: the search's feasible region lies near the budget, not tens of pp beyond it; at
        # least two where there are two (a single-layer configuration is the surrogate's own measurement: exact)
        lo = min(2, len(layers))
        k = int(rng.integers(lo, max(lo, len(layers) // 2) + 1))
        cfg = {}
        for n in rng.choice(layers, size=k, replace=False):
            c = space.choices[str(n)]
            opts = [m for m in c.multipliers if m in int_mults]
            cfg[str(n)] = LayerConfig(str(opts[rng.integers(len(opts))]), bool(c.cv[rng.integers(len(c.cv))]))
        cfgs.append(space.config_from_params(space.params_from_config(cfg)))
    return cfgs


def _predictor_accuracies(cfgs: list[dict], ev: EmulatorEvaluator, n_images: int, clock: SetupClock | None = None,
                          progress=_silent, surrogate=None, done: list[float] = ()) -> list[float]:
    """Emulated accuracy of each configuration on the first ``n_images`` search images, in order (continuing after the
    accuracies ``done`` of the first ones), stopping (after at least MIN_PREDICTOR_CONFIGS) once ``clock`` is over
    its budget, and at once when the run's deadline (``clock.deadline``) passes: the configuration in progress stops
    within a batch (``ev`` and the surrogate's runs check it) and is not counted. ``surrogate`` (a
    dse.predict.LogitSurrogate on the same images) measures each configuration's single-layer logit changes within the
    same budget."""
    stage = PREDICTOR_STAGE
    accs = list(done)
    deadline = clock.deadline if clock is not None else None
    for c in cfgs[len(accs):]:
        if deadline is not None and deadline.passed():
            break
        if len(accs) >= MIN_PREDICTOR_CONFIGS and clock is not None and clock.over():
            break
        try:
            with deadline.trial() if deadline is not None else contextlib.nullcontext():
                acc = float(ev.correct(c, 0, n_images).mean())
                if surrogate is not None:
                    surrogate.raw_loss(c)
        except RunTimeout:
            break
        accs.append(acc)
        if len(accs) < len(cfgs):  # the stage's one finishing report follows the loop
            progress(stage, len(accs), len(cfgs))
    note = "" if len(accs) == len(cfgs) else f"fitted on {len(accs)} of {len(cfgs)} configurations: {clock.reason()}"
    progress(stage, len(cfgs), len(cfgs), note)
    return accs


def gate_candidates(layers, space: SearchSpace, sur, propagated=None) -> list:
    """The loss predictors the search's gate chooses between: the AME predictor (configurations of 8-bit table
    multipliers only), the logit surrogate ``sur`` and, when given, the propagated surrogate ``propagated``."""
    from dse.arith.multipliers import get_multiplier
    from dse.predict import AmePredictor, ame_candidate, propagated_candidate, surrogate_candidate

    int_mults = {m for m in space.multipliers if get_multiplier(m).domain == "int"} | {"exact"}
    in_domain = lambda c: all(lc.multiplier in int_mults for lc in c.values())  # noqa: E731
    return ([ame_candidate(AmePredictor(layers), in_domain), surrogate_candidate(sur)]
            + ([propagated_candidate(propagated)] if propagated is not None else []))


def gate_focus(s: SearchSettings) -> float:
    """The losses the gate judges its predictors on (dse.predict.PredictorGate ``focus``): up to
    dse.predict.GATE_FOCUS times the skip line ``[search] predictor_skip`` x the budget."""
    from dse.predict import GATE_FOCUS

    return GATE_FOCUS * s.predictor_skip * s.budget_loss


def predictor_gate(candidates: list, sur, cfgs: list[dict], accs: list[float], n_images: int, note: str = "",
                   focus: float | None = None):
    """The search's :class:`dse.predict.PredictorGate` over ``candidates`` (:func:`gate_candidates`), first fitted
    on the set-up's configurations ``cfgs`` (their accuracies ``accs`` on the logit surrogate ``sur``'s
    ``n_images`` images); the objective refits it on every full-fidelity trial. Returns ``(gate, estimate, info)``:
    ``estimate`` is the AME loss that estimates sensitivities the set-up budget left unmeasured (None unless AME is
    the kept predictor and passes the gate); info names the kept predictor, its leave-one-out quality, every
    candidate's and, while the gate is off, why (``disabled``); ``note`` (fewer configurations than planned) goes into
    info["setup_budget"]; ``focus``: see dse.predict.PredictorGate."""
    from dse.predict import PredictorGate

    gate = PredictorGate(candidates, focus=focus)
    gate.observe([(("fit", i), c, sur.acc_exact - a) for i, (c, a) in enumerate(zip(cfgs, accs))], provisional=True)
    st = gate.state
    info = {**st.to_dict(), "configs": len(cfgs), "images": n_images, "single_layer_changes": sur.measured}
    if note:
        info["setup_budget"] = note
    if not st.active:
        info["disabled"] = (f"{st.line()}; refitted on every full-fidelity trial, switched on when it passes "
                            "(each switch is recorded on the trial)")
    estimate = gate.predicted if st.active and st.kind == "AME" else None
    return gate, estimate, info


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
    deadline = Deadline.after(s.timeout_s)  # counted from now: set-up included
    run_dir = Path(run_dir).absolute() if run_dir else rundir.default_run_dir(path, s.seed)
    factory = ContextFactory(str(path), threads, setup_progress, deadline, str(run_dir))
    return run_search(path, s, factory, run_dir=run_dir, resume=resume, progress=progress)
