"""The search context's identity: digests of what decides a trial's measured accuracy, so that every process of a
shared study (spawned workers, other machines, resumed runs) can check it measures on the same context as the
process that created the study.

Each process computes its own context (dse.search.context.build_context): the FxP8 calibration, the decoded and
preprocessed images, the float32 baselines. A machine's BLAS, its numpy or Pillow version, different files behind
the same data path or a different model file can make them differ without any error; trials measured on two
different contexts would then be mixed in one study. The identity has four parts, each a SHA-256 hex digest:

* ``calibration``: the FxP8 calibration, :meth:`dse.quant.QuantModel.state` (its meta and every array:
  :meth:`dse.quant.CalibrationState.digest`);
* ``search``, ``holdout``: the search and hold-out images after decoding and preprocessing, and their labels, in
  order (hashed batch by batch in the float32 baseline pass, which reads them anyway, and kept with the baselines);
* ``baseline``: the float32 baselines' values.

The process that creates the study records its identity (user attr ``dse:context``, with its host, run directory
and package versions); every other one compares its own before it runs a trial (:func:`check`) and stops with a
one-line :class:`ContextMismatch` naming what differs, both hosts and the fix. The context cache's format version is
not part of the identity: a cache recomputed after a format change that computes the same values matches.
"""
from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np

from dse.errors import DseError

ATTR = "dse:context"  # study user attr: the creating process's record (ContextIdentity.record)
PARTS = {"calibration": "FxP8 calibration", "search": "search data", "holdout": "hold-out data",
         "baseline": "float32 baseline"}
WAIT_S = 5.0  # a process joining a study just created waits this long for the creator's record
SHOW = 12  # hex digits of a digest shown in messages


def host() -> str:
    return socket.gethostname()


def packages() -> dict:
    """Versions of the packages the context depends on beyond dse's own code (BLAS through numpy; image decoding)."""
    import dse

    out = {"dse": dse.__version__, "numpy": np.__version__}
    for name, module in (("scipy", "scipy"), ("Pillow", "PIL")):
        try:
            out[name] = __import__(module).__version__
        except ImportError:
            out[name] = None
    return out


DATA_START = hashlib.sha256(b"dse data").hexdigest()  # the digest of no images


def data_digest(prev: str, x: np.ndarray, y: np.ndarray) -> str:
    """The data digest ``prev`` continued by one batch of preprocessed images ``x`` and labels ``y`` (a chain, so a
    pass stopped by the run's deadline continues it from the checkpointed value)."""
    h = hashlib.sha256(f"{prev}\0{x.dtype.str}\0{x.shape}\0{y.dtype.str}\0".encode())
    h.update(np.ascontiguousarray(x))  # the buffer itself: no copy
    h.update(np.ascontiguousarray(y))
    return h.hexdigest()


def values_digest(values) -> str:
    """SHA-256 of JSON values (floats by their shortest exact repr)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ContextIdentity:
    calibration: str
    search: str
    holdout: str
    baseline: str

    @classmethod
    def of(cls, calibration_state, data: dict, baseline: dict) -> "ContextIdentity":
        """From the calibration (QuantModel.state()), the data digests ``{"search", "holdout"}`` and the baselines."""
        return cls(calibration_state.digest(), data["search"], data["holdout"],
                   values_digest(baseline["float"]))

    @property
    def digest(self) -> str:
        """One digest of the four parts."""
        return values_digest(asdict(self))

    def record(self, run_dir=None) -> dict:
        """What the study keeps: the parts, their digest, and where they were computed."""
        return {**asdict(self), "digest": self.digest, "host": host(),
                "run_dir": None if run_dir is None else str(run_dir), "packages": packages(), "time": time.time()}


class ContextMismatch(DseError):
    """This process's context differs from the one recorded on the study."""


def differing(recorded: dict, mine: ContextIdentity) -> list[str]:
    """The parts (keys of PARTS) in which ``mine`` differs from the record."""
    return [k for k in PARTS if recorded.get(k) != getattr(mine, k)]


def _where(rec: dict) -> str:
    p = rec.get("packages") or {}
    vers = ", ".join(f"{k} {v}" for k, v in p.items() if v)
    return f"host {rec.get('host', '?')}" + (f" ({vers})" if vers else "")


def mismatch_message(study: str, recorded: dict, mine: ContextIdentity, run_dir=None) -> str | None:
    """The one line a process whose context differs from the study's record stops with (None: no difference)."""
    parts = differing(recorded, mine)
    if not parts:
        return None
    here = {"host": host(), "packages": packages()}
    them = recorded.get("host", "?")
    names = [PARTS[k] for k in parts]
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    digests = "; ".join(f"{PARTS[k]} {str(recorded.get(k))[:SHOW]} there, {getattr(mine, k)[:SHOW]} here"
                        for k in parts)
    src = recorded.get("run_dir") or "its run directory"
    dst = str(run_dir) if run_dir else "this process's run directory"
    fixes = []
    rp, hp = recorded.get("packages") or {}, here["packages"]
    if rp.get("dse") and rp.get("dse") != hp["dse"]:
        fixes.append(f"the study was created with dse {rp['dse']} and this is dse {hp['dse']}, whose set-up may "
                     "compute another context: to search with this version start a new run directory (--run-dir), "
                     f"to continue this study run dse {rp['dse']}")
    same_dir = recorded.get("host") == here["host"] and str(run_dir) == str(recorded.get("run_dir"))
    if "calibration" in parts and same_dir:
        fixes.append("this run directory's calibration was computed again since the study was created (the model "
                     "file, the calibration data or dse changed): restore them, or start a new run directory")
    elif "calibration" in parts:
        fixes.append(f"copy {src}/calibration.npz from {them} into {dst} and re-run (a copied calibration is used "
                     "when the model file, the calibration data's content and the method are the same; it is not "
                     "recomputed)")
    data = [k for k in ("search", "holdout") if k in parts]
    if data:
        fixes.append(f"give this machine the same files behind [data] {' and '.join(data)} and the same numpy and "
                     f"Pillow as {them} (another Pillow can decode or resize JPEG images differently)")
    if parts == ["baseline"]:
        fixes.append(f"use the same numpy and scipy as {them} and a CPU of the same SIMD class (the float32 forward "
                     "pass differs: numpy's SIMD exp, log and tanh)")
    verb, ones = ("differs", "one") if len(parts) == 1 else ("differ", "ones")
    return (f"study {study}: this process's {what} {verb} from the {ones} the study was created with ({digests}; "
            f"created on {_where(recorded)}, this is {_where(here)}), so its trials would be measured on another "
            "network or other images than the study's; it ran none, and the study's trials are kept; fix: "
            + "; or ".join(fixes))


def check(study, mine: ContextIdentity, run_dir=None, wait_s: float = WAIT_S) -> dict:
    """Compare this process's identity with the study's record; ContextMismatch when it differs. A study without a
    record and without trials was just created by a process about to write it: waited for up to ``wait_s``; a
    study with trials but no record (created before records were kept) gets this process's. Returns the record."""
    t0 = time.monotonic()
    rec = study.user_attrs.get(ATTR)
    while rec is None and time.monotonic() - t0 < wait_s and not study.get_trials(deepcopy=False):
        time.sleep(0.1)
        rec = study.user_attrs.get(ATTR)
    if rec is None:
        rec = mine.record(run_dir)
        study.set_user_attr(ATTR, rec)
        return rec
    msg = mismatch_message(study.study_name, rec, mine, run_dir)
    if msg:
        raise ContextMismatch(msg)
    return rec

