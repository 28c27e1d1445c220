"""The search context's expensive, reusable part, cached in the run directory: FxP8 calibration, float32 baselines,
the accuracies the predictors are fitted on and the logit surrogate's measured logits (exact and the single-layer
changes of the fit configurations; changes measured later, by the sensitivities or a trial, are measured again in
each process that needs them). Computed once per run by the first process; every worker and every
resumed run of the same model, data and preprocessing loads it instead.

The key covers the model file's content, the data specs with their local content fingerprint (dse.data.fingerprint),
the explicit preprocessing, the search image cap and seed, the search space, the set-up constants, the dse version
and the float executor's arithmetic (dse.model.float_exec.NUMERICS): any change recomputes. The file is a SHA-256
line followed by an .npz payload: the calibration's and the surrogate's arrays and one JSON document for everything
else, read with ``allow_pickle=False`` (a run directory may come from elsewhere; nothing in it is ever unpickled). An
unreadable, corrupt or stale file is ignored (the caller says so in one line) and rewritten.

The FxP8 calibration has a file of its own (``calibration.npz``, same format), keyed by what it depends on only
(the model file's content, the calibration data, the preprocessing, the calibration method): it holds
the finished calibration, or the statistics of one the run's deadline stopped (:class:`dse.quant.CalibrationProgress`),
which the next run of the same command continues from batch by batch, ending with the same bits. A finished one also
records a portable key (the calibration data's fingerprint without file times) and the host that wrote it: copied
into another machine's run directory (the fix dse.search.identity gives when a shared study's calibrations differ),
it is used there when that key matches, and a context cache computed with another calibration is recomputed.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dse.data import fingerprint
from dse.model.float_exec import NUMERICS as FLOAT_NUMERICS
from dse.model.onnx_import import model_sha256
from dse.predict import SurrogateState
from dse.quant import CalibrationProgress, CalibrationState

FILE = "context-cache.npz"
FORMAT = 5  # 3: with the logit surrogate's arrays; 4: predictor_done; 5: the data digests (dse.search.identity)
_META = "__meta__"  # the .npz member holding the JSON document
_SUR_EXACT, _SUR_DELTAS = "__surrogate_exact__", "__surrogate_deltas__"  # dse.predict.SurrogateState's arrays


@dataclass
class ContextCache:
    key: str
    calibration: CalibrationState  # dse.quant.QuantModel.state() of the run's calibration
    baseline: dict            # {"float": {"search", "holdout"}}
    predictor_accs: list | None  # accuracies of the predictor's fit configurations (None: no predictor fitted)
    surrogate: SurrogateState | None = None  # the logit surrogate's exact logits and single-layer changes
    predictor_done: bool = True  # False: the run's deadline cut the predictor fit; the next run measures the rest
    data: dict | None = None  # {"search", "holdout"}: digests of the images and labels (dse.search.identity)


def cache_key(budget, model_path: Path, extra: dict) -> str:
    """Hex digest of everything the cached context depends on (module docstring); ``extra``: set-up constants."""
    from dse.search.identity import packages

    d = budget.data
    parts = {"format": FORMAT, "packages": packages(), "extra": extra, "float": FLOAT_NUMERICS,
             "preprocess": budget.model.preprocess.to_dict() if budget.model.preprocess else None,
             "data": {k: [getattr(d, k), fingerprint(getattr(d, k), local=True)]
                      for k in ("calib", "search", "holdout")},
             "images": d.images, "seed": budget.search.seed, "space": repr(budget.space),
             "predictor": bool(budget.search.predictor_skip), "model": model_sha256(model_path)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _pack(meta: dict, arrays: dict) -> bytes:
    """A SHA-256 line, then an .npz of ``arrays`` and ``meta`` as one JSON document."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    buf = io.BytesIO()
    np.savez(buf, **{_META: np.array(json.dumps(meta))}, **arrays)
    payload = buf.getvalue()
    return hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload


def _unpack(raw: bytes) -> tuple[dict, dict]:
    """(meta, arrays) of :func:`_pack`'s bytes; ValueError on a checksum mismatch (never unpickles)."""
    digest, payload = raw[:64].decode("ascii"), raw[65:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return json.loads(str(z[_META])), {k: z[k] for k in z.files if k != _META}


def _read(path: Path) -> tuple[tuple[dict, dict] | None, str]:
    """((meta, arrays), "") of a file written by :func:`_write`; (None, "") when absent, (None, why) when corrupt or
    unreadable."""
    if not path.is_file():
        return None, ""
    try:
        return _unpack(path.read_bytes()), ""
    except ValueError as exc:
        if str(exc) == "checksum mismatch":
            return None, f"{path}: corrupt (checksum mismatch), ignored and recomputed"
        return None, f"{path}: unreadable ({type(exc).__name__}), ignored and recomputed"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
        return None, f"{path}: unreadable ({type(exc).__name__}), ignored and recomputed"


def _write(path: Path, meta: dict, arrays: dict) -> Path:
    from dse.search.rundir import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _pack(meta, arrays))
    return path


def _encode(cache: ContextCache) -> tuple[dict, dict]:
    meta = {"format": FORMAT, "key": cache.key, "calibration": cache.calibration.meta, "baseline": cache.baseline,
            "predictor_accs": cache.predictor_accs, "predictor_done": cache.predictor_done,
            "surrogate_choices": None if cache.surrogate is None else cache.surrogate.choices, "data": cache.data}
    for name in cache.calibration.arrays:
        if name in (_SUR_EXACT, _SUR_DELTAS):
            raise ValueError(f"calibration array name {name!r} is reserved")
    sur = {} if cache.surrogate is None else {_SUR_EXACT: cache.surrogate.exact, _SUR_DELTAS: cache.surrogate.deltas}
    return meta, {**cache.calibration.arrays, **sur}


def _decode(meta: dict, z: dict) -> ContextCache:
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')}")
    arrays = {k: v for k, v in z.items() if k not in (_SUR_EXACT, _SUR_DELTAS)}
    sur = (None if meta.get("surrogate_choices") is None
           else SurrogateState(z[_SUR_EXACT], meta["surrogate_choices"], z[_SUR_DELTAS]))
    return ContextCache(meta["key"], CalibrationState(meta["calibration"], arrays), meta["baseline"],
                        meta["predictor_accs"], sur, meta["predictor_done"], meta["data"])


def load(run_dir: Path, key: str) -> tuple[ContextCache | None, str]:
    """(the cached context, "") when the run directory holds one for ``key``; else (None, why not: "" when there is no
    file, else a one-line reason)."""
    path = Path(run_dir) / FILE
    got, why = _read(path)
    if got is None:
        return None, why
    try:
        cache = _decode(*got)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
        return None, f"{path}: unreadable ({type(exc).__name__}), ignored and recomputed"
    if cache.key != key:
        return None, f"{path}: for another model, data or space, recomputed"
    return cache, ""


def save(run_dir: Path, cache: ContextCache) -> Path:
    """Write the cache atomically (checksum line, then the .npz payload)."""
    return _write(Path(run_dir) / FILE, *_encode(cache))


CALIBRATION_FILE = "calibration.npz"
BASELINES_FILE = "float-baselines.npz"  # dse.search.context: the float32 baselines so far


def calibration_key(budget, model_path: Path, method: str, local: bool = True) -> str:
    """Hex digest of what the run's calibration depends on: the model file's content, the calibration data (spec and
    local content fingerprint), the explicit preprocessing, the method, the dse version and the float executor's
    arithmetic (dse.model.float_exec.NUMERICS) (with the model, it fixes the batches a stopped calibration resumes at:
    dse.quant.stream_batch_size). ``local=False``: the calibration data's fingerprint without file times
    (dse.data.fingerprint), the same for copies on other machines."""
    import dse

    calib = budget.data.calib
    parts = {"format": CHECKPOINT_FORMAT, "dse": dse.__version__, "float": FLOAT_NUMERICS,
             "model": model_sha256(model_path),
             "calib": [calib, fingerprint(calib, local=local)], "method": method,
             "preprocess": budget.model.preprocess.to_dict() if budget.model.preprocess else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StoredCalibration:
    """What the run directory holds for a calibration key: the finished calibration, or the progress of a stopped
    one, or neither (``why``: "" when there is no file, else the one-line reason it was not usable)."""

    finished: CalibrationState | None = None
    progress: CalibrationProgress | None = None
    why: str = ""
    copied_from: str = ""  # the host that wrote the finished calibration, when it was copied from another machine


@dataclass(frozen=True)
class Checkpoint:
    """A set-up stage's work so far in the run directory's ``file``, valid for ``key`` (what the stage depends on):
    JSON ``state`` and numpy ``arrays``, checksummed like the context cache."""

    run_dir: Path
    file: str
    key: str

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / self.file

    def load(self) -> tuple[tuple[dict, dict] | None, str]:
        """((state, arrays), "") when the file holds this key's work; else (None, why not: "" when there is no file,
        else a one-line reason)."""
        got, why = _read(self.path)
        if got is None:
            return None, why
        meta, arrays = got
        if meta.get("checkpoint") != CHECKPOINT_FORMAT or meta.get("key") != self.key:
            return None, f"{self.path}: for another model, data or settings, recomputed"
        return (meta["state"], arrays), ""

    def save(self, state: dict, arrays: dict | None = None) -> Path:
        """Write atomically (a reader sees one whole version)."""
        return _write(self.path, {"checkpoint": CHECKPOINT_FORMAT, "key": self.key, "state": state}, arrays or {})


CHECKPOINT_FORMAT = 1


def load_calibration(run_dir: Path, key: str, portable_key: str = "") -> StoredCalibration:
    """The run directory's calibration for ``key``. A finished calibration written on another host (copied from the
    machine that created a shared study, dse.search.identity) is used when its ``portable_key`` (calibration_key
    with ``local=False``: the same model, calibration data content and method) matches: the file times of another
    copy of the data never match this one's."""
    ck = Checkpoint(run_dir, CALIBRATION_FILE, key)
    got, why = ck.load()
    if got is None:
        copied = _copied_calibration(ck.path, portable_key) if why else None
        return copied or StoredCalibration(why=why)
    state, arrays = got
    if state["finished"]:
        return StoredCalibration(finished=CalibrationState(state["meta"], arrays))
    return StoredCalibration(progress=CalibrationProgress(state["meta"], arrays))


def _copied_calibration(path: Path, portable_key: str) -> StoredCalibration | None:
    from dse.search.identity import host

    got, _ = _read(path)
    if got is None or not portable_key:
        return None
    meta, arrays = got
    state = meta.get("state") if meta.get("checkpoint") == CHECKPOINT_FORMAT else None
    if (not isinstance(state, dict) or not state.get("finished") or state.get("portable_key") != portable_key
            or state.get("host") in (None, host())):
        return None
    return StoredCalibration(finished=CalibrationState(state["meta"], arrays), copied_from=str(state["host"]))


def save_calibration(run_dir: Path, key: str, done: CalibrationState | CalibrationProgress,
                     portable_key: str = "") -> Path:
    """Write the finished calibration (with its ``portable_key`` and this host, see :func:`load_calibration`) or a
    stopped one's progress."""
    from dse.search.identity import host

    state = {"finished": isinstance(done, CalibrationState), "meta": done.meta}
    if state["finished"]:
        state.update(portable_key=portable_key, host=host())
    return Checkpoint(run_dir, CALIBRATION_FILE, key).save(state, done.arrays)
