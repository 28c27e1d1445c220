"""The search context's expensive, reusable part, cached in the run directory: FxP8 calibration, float32 baselines and
the accuracies the AME predictor is fitted on. Computed once per run by the first process; every worker and every
resumed run of the same model, data and preprocessing loads it instead.

The key covers the model file's content, the data specs with the size and modification time of the files they read,
the explicit preprocessing, the search image cap and seed, the search space, the set-up constants and the dse
version: any change recomputes. The file carries a SHA-256 of its payload; an unreadable, corrupt or stale file is
ignored (the caller says so in one line) and rewritten.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

FILE = "context-cache.pkl"
FORMAT = 1


@dataclass
class ContextCache:
    key: str
    qmodel: object            # dse.quant.QuantModel (its graph included)
    baseline: dict            # {"float": {"search", "holdout"}}
    predictor_accs: list | None  # accuracies of the predictor's fit configurations (None: no predictor fitted)


def _stamp(spec: str) -> list:
    """Size and modification time of every file a data spec reads (bundled splits: the spec itself)."""
    out = []
    for part in str(spec).split(","):
        p = Path(part)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        out += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return out or [str(spec)]


def cache_key(budget, model_path: Path, extra: dict) -> str:
    """Hex digest of everything the cached context depends on (module docstring); ``extra``: set-up constants."""
    import dse

    d = budget.data
    parts = {"format": FORMAT, "dse": dse.__version__, "extra": extra,
             "preprocess": budget.model.preprocess.to_dict() if budget.model.preprocess else None,
             "data": {k: [getattr(d, k), _stamp(getattr(d, k))] for k in ("calib", "search", "holdout")},
             "images": d.images, "seed": budget.search.seed, "space": repr(budget.space),
             "predictor": bool(budget.search.predictor_skip)}
    h = hashlib.sha256(Path(model_path).read_bytes())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


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
        cache = pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
        return None, f"{path}: unreadable ({type(exc).__name__}), ignored and recomputed"
    if not isinstance(cache, ContextCache):
        return None, f"{path}: not a context cache, ignored and recomputed"
    if cache.key != key:
        return None, f"{path}: for another model, data or space, recomputed"
    return cache, ""


def save(run_dir: Path, cache: ContextCache) -> Path:
    """Write the cache atomically (checksum line, then the pickled payload)."""
    from dse.search.rundir import write_atomic

    payload = pickle.dumps(cache, protocol=pickle.HIGHEST_PROTOCOL)
    path = Path(run_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload)
    return path
