"""The search context's expensive, reusable part, cached in the run directory: FxP8 calibration, float32 baselines,
the accuracies the predictors are fitted on and the logit surrogate's measured logits (exact and the single-layer
changes of the fit configurations; changes measured later, by the sensitivities or a trial, are measured again in
each process that needs them). Computed once per run by the first process; every worker and every
resumed run of the same model, data and preprocessing loads it instead.

The key covers the model file's content, the data specs with their local content fingerprint (dse.data.fingerprint),
the explicit preprocessing, the search image cap and seed, the search space, the set-up constants and the dse
version: any change recomputes. The file is a SHA-256 line followed by an .npz payload: the calibration's and the
surrogate's arrays and one JSON document for everything else, read with ``allow_pickle=False`` (a run directory may
come from elsewhere; nothing in it is ever unpickled). An unreadable, corrupt or stale file is ignored (the caller
says so in one line) and rewritten.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dse.data import fingerprint
from dse.model.onnx_import import model_sha256
from dse.predict import SurrogateState
from dse.quant import CalibrationState

FILE = "context-cache.npz"
FORMAT = 3  # 3: with the logit surrogate's arrays
_META = "__meta__"  # the .npz member holding the JSON document
_SUR_EXACT, _SUR_DELTAS = "__surrogate_exact__", "__surrogate_deltas__"  # dse.predict.SurrogateState's arrays


@dataclass
class ContextCache:
    key: str
    calibration: CalibrationState  # dse.quant.QuantModel.state() of the run's calibration
    baseline: dict            # {"float": {"search", "holdout"}}
    predictor_accs: list | None  # accuracies of the predictor's fit configurations (None: no predictor fitted)
    surrogate: SurrogateState | None = None  # the logit surrogate's exact logits and single-layer changes


def cache_key(budget, model_path: Path, extra: dict) -> str:
    """Hex digest of everything the cached context depends on (module docstring); ``extra``: set-up constants."""
    import dse

    d = budget.data
    parts = {"format": FORMAT, "dse": dse.__version__, "extra": extra,
             "preprocess": budget.model.preprocess.to_dict() if budget.model.preprocess else None,
             "data": {k: [getattr(d, k), fingerprint(getattr(d, k), local=True)]
                      for k in ("calib", "search", "holdout")},
             "images": d.images, "seed": budget.search.seed, "space": repr(budget.space),
             "predictor": bool(budget.search.predictor_skip), "model": model_sha256(model_path)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _encode(cache: ContextCache) -> bytes:
    meta = {"format": FORMAT, "key": cache.key, "calibration": cache.calibration.meta, "baseline": cache.baseline,
            "predictor_accs": cache.predictor_accs,
            "surrogate_choices": None if cache.surrogate is None else cache.surrogate.choices}
    for name in cache.calibration.arrays:
        if name in (_META, _SUR_EXACT, _SUR_DELTAS):
            raise ValueError(f"calibration array name {name!r} is reserved")
    sur = {} if cache.surrogate is None else {_SUR_EXACT: cache.surrogate.exact, _SUR_DELTAS: cache.surrogate.deltas}
    buf = io.BytesIO()
    np.savez(buf, **{_META: np.array(json.dumps(meta))}, **cache.calibration.arrays, **sur)
    return buf.getvalue()


def _decode(payload: bytes) -> ContextCache:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        meta = json.loads(str(z[_META]))
        arrays = {k: z[k] for k in z.files if k not in (_META, _SUR_EXACT, _SUR_DELTAS)}
        sur = (None if meta.get("surrogate_choices") is None
               else SurrogateState(z[_SUR_EXACT], meta["surrogate_choices"], z[_SUR_DELTAS]))
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')}")
    return ContextCache(meta["key"], CalibrationState(meta["calibration"], arrays), meta["baseline"],
                        meta["predictor_accs"], sur)


def load(run_dir: Path, key: str) -> tuple[ContextCache | None, str]:
    """(the cached context, "") when the run directory holds one for ``key``; else (None, why not: "" when there is no
    file, else a one-line reason)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None, ""
    try:
        raw = path.read_bytes()
        digest, payload = raw[:64].decode("ascii"), raw[65:]
        if hashlib.sha256(payload).hexdigest() != digest:
            return None, f"{path}: corrupt (checksum mismatch), ignored and recomputed"
        cache = _decode(payload)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
        return None, f"{path}: unreadable ({type(exc).__name__}), ignored and recomputed"
    if cache.key != key:
        return None, f"{path}: for another model, data or space, recomputed"
    return cache, ""


def save(run_dir: Path, cache: ContextCache) -> Path:
    """Write the cache atomically (checksum line, then the .npz payload)."""
    from dse.search.rundir import write_atomic

    payload = _encode(cache)
    path = Path(run_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload)
    return path
