"""TOML budget files: parse and validate into a ``Budget`` dataclass tree (``load_budget(path)``).

Sections and keys (every key has a default, so an empty file is a valid budget; see search_spaces/default.toml):

* ``[model]`` ``path`` (ONNX file, or a bundled name ``lenet5`` / ``resnet8``), ``preprocess`` (optional table
  ``{scale, mean, std, size}`` -> ``dse.data.Preprocess``; ``mean``/``std`` may be per-channel lists, ``size`` is the
  shorter image side before the center crop of image folders; default: the model's own metadata).
* ``[data]`` ``calib``, ``search``, ``holdout`` (dataset specs, see dse.data: ``fashion-mnist:<split>``, a ``.npz``
  file, an IDX images file or ``"images.gz,labels.gz"``, a CIFAR .bin file or directory, an image folder), ``images`` (cap on the search images; absent = all
  but the confirmation images), ``confirm`` (images of the search split, after the search images, on which a
  configuration is re-measured before it may become the best; absent = a fifth of the split, at most 1000; 0 = off;
  see dse.search.context.search_split).
* ``[budget]`` ``max_accuracy_loss`` (percentage points vs FxP8 exact, ``[0, 100)``), ``metric`` (``"top1"``),
  ``confidence`` (one-sided level at which a configuration must be within budget on the search images, and again on
  the confirmation images).
* ``[accelerator]`` the fields of ``dse.energy.ArrayConfig`` (rows, cols, frequency_mhz, glb_kib, weight_bits,
  act_bits, out_bits, psum_bits, batch, cv_coef_bits); ``backend`` (``"builtin"`` or ``"zigzag"``, see
  ``dse.energy.backends``) and for ZigZag optional ``zigzag_architecture`` / ``zigzag_mapping`` (ZigZag YAML files).
* ``[energy]`` overrides of ``dse.energy.DEFAULT_CONSTANTS``: ``key = number`` or ``key = {value, unit, source}``.
* ``[search]`` ``mode`` (constrained|pareto), ``sampler`` (auto|tpe|nsga2|random|qmc; auto = TPE for constrained,
  NSGA-II for pareto), ``n_trials``, ``seed``, ``storage`` (Optuna URL; absent = journal file in the run directory),
  ``workers``, ``timeout_s`` (absent = none), ``racing`` (increasing image counts, ``0`` = the whole split, last),
  ``confidence`` (racing one-sided level), ``predictor_skip``, ``predictor_max_share`` (the predictor gate's time
  may exceed this share of the trials' own time only by the trial time its skips saved; past it trials run without
  the gate until they catch up, and the output says on how many; which trials that is depends on timing, so such a
  run is not reproducible from its seed: ``inf`` = no bound), ``n_holdout`` (hold-out checks that may fail before
  the walk down the feasible list stops), ``threads`` (kernel threads per process; absent = the available cores
  divided among the workers), ``prefix_cache_mib`` (memory per search process for the activations of configuration
  prefixes shared by consecutive trials, see dse.prefix_cache; 0 = off), ``image_cache_mib`` (memory per search
  process for the search and confirmation images of a data set that decodes its files on every read, an image
  folder: held decoded, so that trials do not decode them again; 0 = decode on every read), ``setup_budget_s``
  (seconds of set-up after which the predictor fit and the knapsack sensitivities stop measuring: the rest is
  estimated by the predictor or left out, and the output says so), ``seeds`` (seed trials besides all-exact: ``"uniform"``, ``"knapsack"``;
  default none, see SEED_KINDS).
* ``[space]`` ``allow_cmodel`` (true: ``cmodel:`` names may compile and run their C files, see dse.arith.cmodel),
  ``multipliers`` (names or family names, e.g. ``"drum"`` = every built-in DRUM), ``axbxp`` (table
  ``{K = [..], Lw = [..], La = [..], modes = [..]}``: all combinations), ``cv`` (allowed bools), ``pin_first_last``,
  and per-layer overrides ``[space.layers.<name>]`` with ``multipliers``, ``cv``, ``pin``.

Relative file paths are resolved against the budget file's directory first, then the working directory.
Every mistake raises ``DseError`` with one line: ``<file>: key 'search.n_trials' must be ..., got 'ten'``.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from dse.arith.multipliers import axbxp_name
from dse.data import SOURCE_BUDGET, Preprocess
from dse.energy import ARRAY_LIMITS, DEFAULT_CONSTANTS, ArrayConfig, EnergyModel, resolve_constants
from dse.energy.backends import BACKENDS, BackendConfig, make_energy_model
from dse.errors import DseError
from dse.model.onnx_import import BUNDLED_MODELS

BUNDLED_DATA = re.compile(r"fashion-mnist:(calib|search|holdout|all)")
MODES = ("constrained", "pareto")
SAMPLERS = ("auto", "tpe", "nsga2", "random", "qmc")
METRICS = ("top1",)
AXBXP_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class ModelSection:
    path: str = "lenet5"
    preprocess: Preprocess | None = None  # source SOURCE_BUDGET


@dataclass(frozen=True)
class DataSection:
    calib: str = "fashion-mnist:calib"
    search: str = "fashion-mnist:search"
    holdout: str = "fashion-mnist:holdout"
    images: int | None = None
    confirm: int | None = None  # None: dse.search.context.DEFAULT_CONFIRM of the split


@dataclass(frozen=True)
class BudgetSection:
    max_accuracy_loss: float = 1.0   # percentage points vs FxP8 exact
    metric: str = "top1"
    confidence: float = 0.95         # upper confidence bound of the search-split loss must be within the budget


# Seed trials the search may enqueue besides the all-exact reference: one per multiplier on every layer ("uniform") and
# energy-optimal configurations under summed single-layer losses ("knapsack"). Off by default: measured with
# benchmarks/bench_search.py they cost trials (16 of 40 on ResNet-8) and left TPE with a worse best on ResNet-8 (3 of 3
# seeds) and no better a median on LeNet-5 (6 seeds); benchmarks/RESULTS.md, "Search baselines".
SEED_KINDS = ("uniform", "knapsack")


@dataclass(frozen=True)
class SearchSection:
    mode: str = "constrained"
    sampler: str = "auto"
    n_trials: int = 100
    seed: int = 0
    storage: str | None = None
    workers: int = 1
    timeout_s: float | None = None
    racing: tuple = (500, 2000, 0)
    confidence: float = 0.95
    predictor_skip: float = 2.0
    predictor_max_share: float = 0.1  # the gate's time: at most this share of the trials' own + what its skips saved
    n_holdout: int = 3
    threads: int | None = None  # kernel threads per search process; None = the cores divided among the workers
    prefix_cache_mib: float = 512.0  # per search process: activations of shared configuration prefixes (0 = off)
    image_cache_mib: float = 1024.0  # per search process: decoded search + confirmation images of an image folder
    setup_budget_s: float = 300.0   # predictor fit and knapsack sensitivities stop measuring after this (seconds)
    seeds: tuple = ()  # seed trials besides all-exact: "uniform", "knapsack" (SEED_KINDS); none by default, see below


@dataclass(frozen=True)
class AxbxpSpace:
    K: tuple = (2,)
    Lw: tuple = (2, 3)
    La: tuple = (2, 3)
    modes: tuple = ("static",)

    def names(self) -> list[str]:
        return [axbxp_name(k, w, a, m) for k in self.K for w in self.Lw for a in self.La for m in self.modes]


@dataclass(frozen=True)
class LayerSpace:
    """Per-layer override; None = inherit from [space]."""

    multipliers: tuple | None = None
    cv: tuple | None = None
    pin: bool | None = None


DEFAULT_MULTIPLIERS = ("drum4", "drum5", "drum6", "mitch_w6", "perf_j0_k1", "perf_j0_k2", "trunc_op1", "trunc_op2")


@dataclass(frozen=True)
class SpaceSection:
    multipliers: tuple = DEFAULT_MULTIPLIERS   # resolved names (families expanded)
    axbxp: AxbxpSpace | None = None
    cv: tuple = (False, True)
    pin_first_last: bool = True
    layers: dict = field(default_factory=dict)  # name -> LayerSpace

    @property
    def all_multipliers(self) -> list[str]:
        """Every multiplier name of the space: listed names plus the composed Ax-BxP names (sorted, unique)."""
        return sorted(set(self.multipliers) | set(self.axbxp.names() if self.axbxp else []))


@dataclass(frozen=True)
class Budget:
    path: str
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    budget: BudgetSection = BudgetSection()
    accelerator: ArrayConfig = ArrayConfig()
    energy_backend: BackendConfig = BackendConfig()  # [accelerator] backend, zigzag_architecture, zigzag_mapping
    energy: dict = field(default_factory=dict)   # constant overrides as given (validated)
    search: SearchSection = SearchSection()
    space: SpaceSection = SpaceSection()

    def energy_model(self) -> EnergyModel:
        """The energy model of this budget's [accelerator] and [energy] sections."""
        return make_energy_model(self.energy, self.accelerator, self.energy_backend)


# ---------------------------------------------------------------------------------------------------------------
# Validation helpers: each takes the value and the dotted key and returns the converted value or raises.

class _Ctx:
    def __init__(self, path: Path):
        self.path, self.base = path, path.resolve().parent

    def err(self, key: str, what: str, value=None, *, show=True) -> DseError:
        got = f", got {_fmt(value)}" if show else ""
        return DseError(f"{self.path}: key '{key}' {what}{got}")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, dict):
        return "a table"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(ctx, key, v, lo=None, hi=None, what=None):
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
        if what is None:
            what = ("a positive integer" if lo == 1 and hi is None else "a non-negative integer" if lo == 0 and hi is None
                    else f"an integer in {lo}..{hi}" if hi is not None else "an integer")
        raise ctx.err(key, f"must be {what}", v)
    return int(v)


def _float(ctx, key, v, lo=None, hi=None, lo_open=False, hi_open=False, what=None):
    bad = not _is_num(v)
    if not bad:
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        if what is None:
            lb = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
            ub = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
            what = f"a number in {lb or '(-inf'}, {ub or 'inf)'}"
        raise ctx.err(key, f"must be {what}", v)
    return float(v)


def _str(ctx, key, v, choices=None):
    if not isinstance(v, str) or not v.strip():
        raise ctx.err(key, "must be a non-empty string" + (f" (one of {', '.join(choices)})" if choices else ""), v)
    if choices and v not in choices:
        raise ctx.err(key, f"must be one of {', '.join(repr(c) for c in choices)}", v)
    return v


def _bool(ctx, key, v):
    if not isinstance(v, bool):
        raise ctx.err(key, "must be true or false", v)
    return v


def _list(ctx, key, v, item, what, nonempty=True):
    if not isinstance(v, list) or (nonempty and not v):
        raise ctx.err(key, f"must be a {'non-empty ' if nonempty else ''}list of {what}", v)
    return tuple(item(f"{key}[{i}]", x) for i, x in enumerate(v))


def _table(ctx, key, v) -> dict:
    if not isinstance(v, dict):
        raise ctx.err(key, "must be a table ([" + key + "])", v)
    return v


def _check_keys(ctx, key, tab: dict, allowed):
    for k in tab:
        if k not in allowed:
            where = f"{key}.{k}" if key else k
            kind = "section" if not key else "key"
            raise DseError(f"{ctx.path}: unknown {kind} '{where}'; allowed in {('[' + key + ']') if key else 'the file'}: "
                           f"{', '.join(allowed)}")


def _path_or_none(ctx, s: str, folders: bool = False) -> Path | None:
    p = Path(s).expanduser()
    for cand in ([p] if p.is_absolute() else [ctx.base / p, Path.cwd() / p]):
        if cand.is_file() or (folders and cand.is_dir()):
            return cand.resolve()
    return None


# ---------------------------------------------------------------------------------------------------------------
# Sections

def _model(ctx, tab) -> ModelSection:
    _check_keys(ctx, "model", tab, ("path", "preprocess"))
    path = ModelSection.path
    if "path" in tab:
        path = _str(ctx, "model.path", tab["path"])
        if path not in BUNDLED_MODELS:
            found = _path_or_none(ctx, path)
            if found is None:
                raise ctx.err("model.path", f"is neither an existing ONNX file nor a bundled model "
                                            f"({', '.join(BUNDLED_MODELS)}); fix the path", path)
            path = str(found)
    pre = None
    if "preprocess" in tab:
        t = _table(ctx, "model.preprocess", tab["preprocess"])
        _check_keys(ctx, "model.preprocess", t, Preprocess.KEYS)
        vals = {}
        for k, v in t.items():
            key = f"model.preprocess.{k}"
            if k == "size":
                vals[k] = _int(ctx, key, v, lo=1)
            elif isinstance(v, list) and k != "scale":
                vals[k] = list(_list(ctx, key, v, lambda kk, x: _float(ctx, kk, x, what="a number"), "numbers"))
            else:
                vals[k] = _float(ctx, key, v, what="a number" + ("" if k == "scale" else " or a list of numbers"))
            if k == "std" and any(x == 0 for x in (vals[k] if isinstance(vals[k], list) else [vals[k]])):
                raise ctx.err(key, "must be non-zero", v)
        pre = Preprocess.from_mapping(vals, SOURCE_BUDGET, f"{ctx.path}: key 'model.preprocess'")
    return ModelSection(path=path, preprocess=pre)


def _data_spec(ctx, key, v) -> str:
    s = _str(ctx, key, v)
    if BUNDLED_DATA.fullmatch(s):
        return s
    if s.startswith("fashion-mnist:"):
        raise ctx.err(key, "names an unknown bundled split; use fashion-mnist:calib|search|holdout|all", s)
    parts = s.split(",")
    if len(parts) > 2:
        raise ctx.err(key, "must be a bundled split, one file or folder, 'images,labels' or 'folder,labels.txt'", s)
    out = []
    for p in parts:
        found = _path_or_none(ctx, p.strip(), folders=True)
        if found is None:
            raise ctx.err(key, f"names a missing file '{p.strip()}'; give an existing .npz/IDX/CIFAR .bin file, an "
                               f"image folder or a bundled split (fashion-mnist:calib|search|holdout|all)", s,
                          show=False)
        out.append(str(found))
    return ",".join(out)


def _data(ctx, tab) -> DataSection:
    _check_keys(ctx, "data", tab, ("calib", "search", "holdout", "images", "confirm"))
    kw = {k: _data_spec(ctx, f"data.{k}", tab[k]) for k in ("calib", "search", "holdout") if k in tab}
    if "images" in tab:
        kw["images"] = _int(ctx, "data.images", tab["images"], lo=1)
    if "confirm" in tab:
        kw["confirm"] = _int(ctx, "data.confirm", tab["confirm"], lo=0)
    return DataSection(**kw)


def _budget(ctx, tab) -> BudgetSection:
    _check_keys(ctx, "budget", tab, ("max_accuracy_loss", "metric", "confidence"))
    kw = {}
    if "max_accuracy_loss" in tab:
        kw["max_accuracy_loss"] = _float(ctx, "budget.max_accuracy_loss", tab["max_accuracy_loss"], 0, 100,
                                         hi_open=True, what="a number of percentage points in [0, 100)")
    if "metric" in tab:
        kw["metric"] = _str(ctx, "budget.metric", tab["metric"], METRICS)
    if "confidence" in tab:
        kw["confidence"] = _float(ctx, "budget.confidence", tab["confidence"], 0.5, 1, hi_open=True,
                                  what="a one-sided confidence level in [0.5, 1) (0.5 = no margin)")
    return BudgetSection(**kw)


BACKEND_KEYS = ("backend", "zigzag_architecture", "zigzag_mapping")


def _accelerator(ctx, tab) -> ArrayConfig:
    names = [f.name for f in fields(ArrayConfig)]
    _check_keys(ctx, "accelerator", tab, names + list(BACKEND_KEYS))
    kw = {}
    for f in fields(ArrayConfig):
        if f.name not in tab:
            continue
        lo, hi = ARRAY_LIMITS[f.name]
        key = f"accelerator.{f.name}"
        if f.type in (int, "int"):
            kw[f.name] = _int(ctx, key, tab[f.name], lo, hi)
        else:
            kw[f.name] = _float(ctx, key, tab[f.name], 0, hi, lo_open=True, what="a positive number")
    return ArrayConfig(**kw)


def _energy_backend(ctx, tab) -> BackendConfig:
    name = _str(ctx, "accelerator.backend", tab["backend"], BACKENDS) if "backend" in tab else "builtin"
    files = {}
    for key, field_name in (("zigzag_architecture", "architecture"), ("zigzag_mapping", "mapping")):
        if key in tab:
            if name != "zigzag":
                raise ctx.err(f"accelerator.{key}", 'needs accelerator.backend = "zigzag"', tab[key])
            found = _path_or_none(ctx, _str(ctx, f"accelerator.{key}", tab[key]))
            if found is None:
                raise ctx.err(f"accelerator.{key}", "names no file (relative paths: the budget's directory, then "
                              "the working directory)", tab[key])
            files[field_name] = str(found)
    return BackendConfig(name, **files)


def _energy(ctx, tab) -> dict:
    _check_keys(ctx, "energy", tab, tuple(DEFAULT_CONSTANTS))
    out = {}
    for k, v in tab.items():
        key, unit = f"energy.{k}", DEFAULT_CONSTANTS[k].unit
        if isinstance(v, dict):
            _check_keys(ctx, key, v, ("value", "unit", "source"))
            if "value" not in v:
                raise ctx.err(key, f"needs 'value' (a non-negative number in {unit})", v, show=False)
            d = {"value": _float(ctx, f"{key}.value", v["value"], 0, what=f"a non-negative number in {unit}")}
            if "unit" in v and _str(ctx, f"{key}.unit", v["unit"]) != unit:
                raise ctx.err(f"{key}.unit", f"must be {unit!r} (convert the value)", v["unit"])
            if "source" in v:
                d["source"] = _str(ctx, f"{key}.source", v["source"])
            out[k] = d
        else:
            out[k] = _float(ctx, key, v, 0, what=f"a non-negative number in {unit} or a table {{value, unit, source}}")
    resolve_constants(out)  # same rules as the model (never raises after the checks above)
    return out


def _search(ctx, tab) -> SearchSection:
    allowed = [f.name for f in fields(SearchSection)]
    _check_keys(ctx, "search", tab, allowed)
    kw = {}
    g = tab.get
    if "mode" in tab:
        kw["mode"] = _str(ctx, "search.mode", g("mode"), MODES)
    if "sampler" in tab:
        kw["sampler"] = _str(ctx, "search.sampler", g("sampler"), SAMPLERS)
    if "n_trials" in tab:
        kw["n_trials"] = _int(ctx, "search.n_trials", g("n_trials"), lo=1)
    if "seed" in tab:
        kw["seed"] = _int(ctx, "search.seed", g("seed"), 0, 2 ** 32 - 1)
    if "storage" in tab:
        s = _str(ctx, "search.storage", g("storage"))
        if "://" not in s:
            raise ctx.err("search.storage", "must be an Optuna storage URL (e.g. 'postgresql://host/db' or "
                                            "'journal:///path/journal.log'); omit it for the run directory's journal", s)
        kw["storage"] = s
    if "workers" in tab:
        kw["workers"] = _int(ctx, "search.workers", g("workers"), 1, 256)
    if "threads" in tab:
        kw["threads"] = _int(ctx, "search.threads", g("threads"), 1, 1024)
    if "prefix_cache_mib" in tab:
        kw["prefix_cache_mib"] = _float(ctx, "search.prefix_cache_mib", g("prefix_cache_mib"), 0,
                                        what="a non-negative number of MiB (0 = no prefix cache)")
    if "image_cache_mib" in tab:
        kw["image_cache_mib"] = _float(ctx, "search.image_cache_mib", g("image_cache_mib"), 0,
                                       what="a non-negative number of MiB (0 = decode the images on every read)")
    if "setup_budget_s" in tab:
        kw["setup_budget_s"] = _float(ctx, "search.setup_budget_s", g("setup_budget_s"), 0, lo_open=True,
                                      what="a positive number of seconds")
    if "timeout_s" in tab:
        kw["timeout_s"] = _float(ctx, "search.timeout_s", g("timeout_s"), 0, lo_open=True,
                                 what="a positive number of seconds")
    if "seeds" in tab:
        kw["seeds"] = _list(ctx, "search.seeds", g("seeds"), lambda k, x: _str(ctx, k, x, SEED_KINDS),
                            f"seed kinds ({', '.join(SEED_KINDS)})", nonempty=False)
    if "racing" in tab:
        r = _list(ctx, "search.racing", g("racing"), lambda k, x: _int(ctx, k, x, lo=0), "image counts (0 = all)")
        nz = [x for x in r if x]
        if any(x == 0 for x in r[:-1]) or nz != sorted(set(nz)):
            raise ctx.err("search.racing", "must be strictly increasing image counts, 0 (= all) only last, "
                                           "e.g. [500, 2000, 0]", list(r))
        kw["racing"] = r
    if "confidence" in tab:
        kw["confidence"] = _float(ctx, "search.confidence", g("confidence"), 0.5, 1, lo_open=True, hi_open=True)
    if "predictor_skip" in tab:
        kw["predictor_skip"] = _float(ctx, "search.predictor_skip", g("predictor_skip"), 0,
                                      what="a non-negative number (0 = never skip)")
    if "predictor_max_share" in tab:
        v = g("predictor_max_share")
        kw["predictor_max_share"] = math.inf if v == math.inf else _float(
            ctx, "search.predictor_max_share", v, 0, 1, lo_open=True,
            what="a share of the trials' time in (0, 1], or inf (no bound: a one-process search stays reproducible); "
                 "predictor_skip = 0 turns the predictor off")
    if "n_holdout" in tab:
        kw["n_holdout"] = _int(ctx, "search.n_holdout", g("n_holdout"), lo=0)
    return SearchSection(**kw)


def _multiplier_names(ctx, key, v) -> tuple:
    """Names or family names -> canonical names (families expanded over the built-in list)."""
    from dse.arith.multipliers import get_multiplier, list_multipliers

    items = _list(ctx, key, v, lambda k, x: _str(ctx, k, x), "multiplier names or families", nonempty=False)
    out = []
    families = None
    for i, name in enumerate(items):
        try:
            get_multiplier(name)
            out.append(name)
            continue
        except DseError as exc:
            reason = str(exc)
        if families is None:
            families = {}
            for n in list_multipliers():
                families.setdefault(get_multiplier(n).family, []).append(n)
        if name in families:
            out += families[name]
        else:
            raise DseError(f"{ctx.path}: key '{key}[{i}]' is neither a multiplier nor a family name ({reason}); "
                           f"families: {', '.join(sorted(families))}")
    return tuple(dict.fromkeys(out))


def _axbxp(ctx, tab) -> AxbxpSpace:
    key = "space.axbxp"
    _table(ctx, key, tab)
    _check_keys(ctx, key, tab, ("K", "Lw", "La", "modes"))
    d = AxbxpSpace()
    kw = {}
    for k in ("K", "Lw", "La"):
        if k in tab:
            kw[k] = _list(ctx, f"{key}.{k}", tab[k], lambda kk, x: _int(ctx, kk, x, 1, 8), "integers")
    if "modes" in tab:
        kw["modes"] = _list(ctx, f"{key}.modes", tab["modes"], lambda kk, x: _str(ctx, kk, x, AXBXP_MODES), "modes")
    ax = AxbxpSpace(**{**{f.name: getattr(d, f.name) for f in fields(d)}, **kw})
    from dse.arith.multipliers import get_multiplier

    for name in ax.names():
        try:
            get_multiplier(name)
        except DseError as exc:
            raise DseError(f"{ctx.path}: key '{key}' composes an invalid multiplier: {exc}; fix K/Lw/La") from None
    return ax


def _bools(ctx, key, v) -> tuple:
    r = _list(ctx, key, v, lambda k, x: _bool(ctx, k, x), "booleans")
    return tuple(sorted(set(r)))


def _space(ctx, tab) -> SpaceSection:
    _check_keys(ctx, "space", tab, ("allow_cmodel", "multipliers", "axbxp", "cv", "pin_first_last", "layers"))
    if "allow_cmodel" in tab and _bool(ctx, "space.allow_cmodel", tab["allow_cmodel"]):
        from dse.arith.cmodel import opt_in
        opt_in()  # before the multiplier names below are resolved (a cmodel: name compiles its C file)
    kw = {}
    if "multipliers" in tab:
        kw["multipliers"] = _multiplier_names(ctx, "space.multipliers", tab["multipliers"])
    if "axbxp" in tab:
        kw["axbxp"] = _axbxp(ctx, tab["axbxp"])
    if "cv" in tab:
        kw["cv"] = _bools(ctx, "space.cv", tab["cv"])
    if "pin_first_last" in tab:
        kw["pin_first_last"] = _bool(ctx, "space.pin_first_last", tab["pin_first_last"])
    if "layers" in tab:
        layers = {}
        for name, ov in _table(ctx, "space.layers", tab["layers"]).items():
            key = f"space.layers.{name}"
            ov = _table(ctx, key, ov)
            _check_keys(ctx, key, ov, ("multipliers", "cv", "pin"))
            layers[name] = LayerSpace(
                multipliers=_multiplier_names(ctx, f"{key}.multipliers", ov["multipliers"]) if "multipliers" in ov
                else None,
                cv=_bools(ctx, f"{key}.cv", ov["cv"]) if "cv" in ov else None,
                pin=_bool(ctx, f"{key}.pin", ov["pin"]) if "pin" in ov else None)
        kw["layers"] = layers
    sp = SpaceSection(**kw)
    if not sp.all_multipliers and not any(l.multipliers for l in sp.layers.values()):
        raise DseError(f"{ctx.path}: key 'space.multipliers' is empty and there is no [space.axbxp]; list at least one "
                       f"approximate multiplier (see 'dse multipliers')")
    return sp


SECTIONS = {"model": _model, "data": _data, "budget": _budget, "accelerator": _accelerator, "energy": _energy,
            "search": _search, "space": _space}


def _syntax_error(path: Path, src: str, exc: tomllib.TOMLDecodeError) -> DseError:
    msg = str(exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if m:
        line, col, msg = int(m.group(1)), int(m.group(2)), msg[:m.start()]
    else:
        msg = re.sub(r"\s*\(at end of document\)$", "", msg)
        lines = src.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    return DseError(f"{path}:{line}:{col}: TOML syntax error: {msg}; fix the file at line {line}, column {col}")


def load_budget(path) -> Budget:
    """Parse and validate a budget TOML file; every error is a one-line DseError naming the file and dotted key."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DseError(f"budget file {p}: not found; pass an existing BUDGET.toml") from None
    except OSError as exc:
        raise DseError(f"budget file {p}: cannot be read ({exc.strerror}); check the path and permissions") from None
    try:
        src = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DseError(f"{p}: not UTF-8 text (byte {exc.start}); save the budget as UTF-8 TOML") from None
    try:
        doc = tomllib.loads(src)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(p, src, exc) from None
    ctx = _Ctx(p)
    _check_keys(ctx, "", doc, tuple(SECTIONS))
    kw = {}
    for name, parse in SECTIONS.items():
        if name in doc:
            if not isinstance(doc[name], dict):
                raise DseError(f"{p}: '{name}' must be a section [{name}], got {_fmt(doc[name])}")
            kw[name] = parse(ctx, doc[name])
    if "accelerator" in doc:
        kw["energy_backend"] = _energy_backend(ctx, doc["accelerator"])
    return Budget(path=str(p), **kw)
