"""Imported multipliers (``lut:PATH``, ``cmodel:PATH.c``) and the table export format.

Formats read by ``lut:``: ``.npy`` int [256, 256] ``LUT[a, b]`` for one operand-signedness pair (declared by options,
a sidecar ``PATH.json`` or an EvoApprox file name, see the package docstring); TFApprox ``.bin`` (65536 little-endian
16-bit values, a-major); ``.npz`` as written by :func:`export_tables`: one table per operand pair under the keys
``a{0|1}_w{0|1}`` (``a1_w0`` = signed activation x unsigned weight) and a JSON string ``meta`` with ``format``
(:data:`NPZ_FORMAT`), ``name``, ``description``, ``rel_power`` and ``signed_scheme`` of the exported multiplier. An
.npz carries its signedness in its keys and reproduces the exported multiplier bit-exactly for every pair it holds
(including Mitch-w's one's-complement signed variant); signedness options are refused for it.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from dse.arith.multipliers._base import Multiplier, check_products
from dse.arith.multipliers._families import bad_name as _bad
from dse.arith.multipliers._signed import sign_magnitude
from dse.errors import DseError

NPZ_FORMAT = "dse-lut-1"
PAIRS = ((False, False), (False, True), (True, True), (True, False))


def pair_key(a_signed: bool, w_signed: bool) -> str:
    return f"a{int(a_signed)}_w{int(w_signed)}"


_BOOL = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}


def _parse_import(name: str) -> tuple[str, Path, dict]:
    kind, _, rest = name.partition(":")
    path_s, _, query = rest.partition("?")
    if not path_s:
        raise _bad(name, f"give a file: {kind}:PATH")
    opts = {}
    for item in filter(None, query.split("&")):
        key, eq, val = item.partition("=")
        if not eq or key not in ("signed", "a_signed", "w_signed", "signmag", "fn", "power") or (kind == "lut" and key == "fn"):
            raise _bad(name, f"bad option '{item}' (options: signed=0|1|any, a_signed=0|1, w_signed=0|1, signmag=1, power=X"
                             f"{', fn=NAME' if kind == 'cmodel' else ''})")
        if key == "fn":
            opts[key] = val
        elif key == "power":
            try:
                opts[key] = float(val)
            except ValueError:
                opts[key] = -1.0
            if not (opts[key] >= 0 and math.isfinite(opts[key])):
                raise _bad(name, f"option power={val} must be a non-negative number")
        elif key == "signed" and val == "any":
            opts[key] = "any"
        elif val.lower() in _BOOL:
            opts[key] = _BOOL[val.lower()]
        else:
            raise _bad(name, f"option {key}={val} must be 0 or 1")
    return kind, Path(os.path.expanduser(path_s)), opts


def _declared(name: str, path: Path, opts: dict):
    """The declared signedness pair (a_signed, w_signed), or "any"; options > sidecar PATH.json > EvoApprox name."""
    if opts.get("signed") == "any":
        return "any"
    if any(k in opts for k in ("signed", "a_signed", "w_signed")):
        base = opts.get("signed", False)
        return (bool(opts.get("a_signed", base)), bool(opts.get("w_signed", base)))
    d = _sidecar(path)
    if d.get("signed") == "any":
        return "any"
    if any(k in d for k in ("signed", "a_signed", "w_signed")):
        base = bool(d.get("signed", False))
        return (bool(d.get("a_signed", base)), bool(d.get("w_signed", base)))
    stem = path.name.lower()
    if stem.startswith("mul8s"):
        return (True, True)
    return (False, False)


def _load_lut(name: str, path: Path, signed_any: bool) -> np.ndarray:
    if not path.is_file():
        raise DseError(f"multiplier '{name}': file {path} not found; give an existing .npy or .bin table")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            t = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DseError(f"{path}: not a readable .npy array ({exc}); save it with numpy.save")
        if t.shape != (256, 256) or t.dtype.kind not in "iu":
            raise DseError(f"{path}: expected an integer array of shape (256, 256) LUT[a, b], got {t.dtype} {t.shape}")
        check_products(t, str(path))
        return t.astype(np.int64)
    if suffix == ".bin":
        raw = path.read_bytes()
        if len(raw) != 131072:
            raise DseError(f"{path}: TFApprox .bin must be 65536 little-endian uint16 (131072 bytes), got {len(raw)} bytes")
        return np.frombuffer(raw, dtype="<i2" if signed_any else "<u2").reshape(256, 256).astype(np.int64)
    raise DseError(f"multiplier '{name}': {path} must be .npy (int [256, 256]), .npz (dse table set) or TFApprox .bin")


def _signedness_str(pair) -> str:
    if pair == "any":
        return "any signedness"
    return " x ".join("signed" if s else "unsigned" for s in pair)


def _imported_builder(name: str, table: np.ndarray, declared, signmag: bool):
    if signmag:
        if declared != (False, False):
            raise DseError(f"multiplier '{name}': signmag=1 needs an unsigned x unsigned core table, declared "
                           f"{_signedness_str(declared)}; drop signmag or declare signed=0")

        def core(a, b):
            return table[a, b]
        return sign_magnitude(core)

    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        if declared != "any" and declared != (a_signed, w_signed):
            raise DseError(
                f"multiplier '{name}' is a {_signedness_str(declared)} table but is used with "
                f"{_signedness_str((a_signed, w_signed))} operands; declare the file's signedness "
                f"(?signed=0|1, ?a_signed=, ?w_signed=, or ?signed=any) or use ?signmag=1 for an unsigned core")
        return table
    return build


def _sidecar(path: Path) -> dict:
    side = path.with_name(path.name + ".json")
    if not side.is_file():
        return {}
    try:
        d = json.loads(side.read_text())
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return d
    except ValueError as exc:
        raise DseError(f"{side}: not a JSON object with 'signed' / 'a_signed' / 'w_signed' ({exc}); fix or remove it")


def _load_npz(name: str, path: Path) -> tuple[dict, dict]:
    """({(a_signed, w_signed): int64 table}, meta) of an .npz written by :func:`export_tables`."""
    if not path.is_file():
        raise DseError(f"multiplier '{name}': file {path} not found; give an existing .npz table set")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict) or meta.get("format") != NPZ_FORMAT:
            raise ValueError(f"meta format is not {NPZ_FORMAT!r}")
    except (ValueError, OSError, KeyError) as exc:
        raise DseError(f"{path}: not a dse table set ({exc}); write it with 'dse multipliers export NAME -o FILE.npz'")
    tables = {}
    for pair in PAIRS:
        t = arrays.pop(pair_key(*pair), None)
        if t is None:
            continue
        if t.shape != (256, 256) or t.dtype.kind not in "iu":
            raise DseError(f"{path}: table '{pair_key(*pair)}' must be an integer array of shape (256, 256), got "
                           f"{t.dtype} {t.shape}; re-export it")
        check_products(t, f"{path}: table '{pair_key(*pair)}'")
        tables[pair] = t.astype(np.int64)
    if arrays or not tables:
        raise DseError(f"{path}: unexpected keys {sorted(arrays)} or no table; keys are meta and "
                       f"{', '.join(pair_key(*p) for p in PAIRS)}")
    return tables, meta


def _npz_multiplier(name: str, path: Path, opts: dict) -> Multiplier:
    if set(opts) - {"power"}:
        raise _bad(name, f"an .npz table set declares its own operand pairs; drop the option(s) "
                         f"{', '.join(sorted(set(opts) - {'power'}))}")
    tables, meta = _load_npz(name, path)

    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        t = tables.get((a_signed, w_signed))
        if t is None:
            raise DseError(f"multiplier '{name}' holds no {_signedness_str((a_signed, w_signed))} table; re-export "
                           "it with 'dse multipliers export NAME -o FILE.npz'")
        return t

    power = opts.get("power", meta.get("rel_power"))
    params = {"path": str(path), "declared": [list(p) for p in tables], "signed_scheme": "table",
              "source": meta.get("name", ""),
              "power_source": (f"option power={power}" if "power" in opts else
                               "unknown" if power is None else f"exported rel_power of {meta.get('name', '?')}")}
    desc = f"imported table set {path} (from {meta.get('name', '?')}: {meta.get('description', '')})"
    return Multiplier(name=name, family="lut", rel_power=float("nan") if power is None else float(power),
                      params=params, description=desc, _builder=build)


@lru_cache(maxsize=64)
def _imported_cached(name: str, stamp: tuple) -> Multiplier:
    kind, path, opts = _parse_import(name)
    if kind == "lut" and path.suffix.lower() == ".npz":
        return _npz_multiplier(name, path, opts)
    declared = _declared(name, path, opts)
    signmag = bool(opts.get("signmag", False))
    power = opts.get("power", float("nan"))
    if kind == "lut":
        signed_any = declared == "any" or any(declared)
        table = _load_lut(name, path, signed_any)
        src = f"imported table {path}"
        power = opts.get("power", _sidecar(path).get("rel_power", float("nan")))
        if isinstance(power, bool) or not isinstance(power, (int, float)):
            raise DseError(f"{path}.json: 'rel_power' = {power!r} must be a number; fix or remove it")
        power_source = f"option power={power}" if "power" in opts else f"sidecar {path}.json rel_power"
    else:
        from dse.arith.cmodel import cmodel_table
        from dse.arith.power import published_power
        pair = (False, False) if declared == "any" else declared
        table = cmodel_table(path, opts.get("fn", "mul8"), *pair)
        src = f"C model {path} ({opts.get('fn', 'mul8')})"
        check_products(table, src)
        power_source = f"option power={power}"
        if "power" not in opts:
            found = published_power(path.read_text(errors="replace")[:4000], any(pair), path.name)
            power, power_source = found if found is not None else (float("nan"), "unknown")
    scheme = "sign_magnitude" if signmag else "table"
    params = {"path": str(path), "declared": "any" if declared == "any" else list(declared), "signed_scheme": scheme,
              "power_source": "unknown" if math.isnan(float(power)) else power_source}
    desc = f"{src}, {_signedness_str(declared)}" + (" core, sign-magnitude signed operands" if signmag else "")
    return Multiplier(name=name, family=kind, rel_power=float(power), params=params, description=desc,
                      _builder=_imported_builder(name, table, declared, signmag))


def _imported(name: str) -> Multiplier:
    _, path, _ = _parse_import(name)
    try:
        st = path.stat()
        stamp = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        raise DseError(f"multiplier '{name}': file {path} not found; give an existing file") from None
    if path.is_dir():
        raise DseError(f"multiplier '{name}': {path} is a directory, not a table file; give the .npy/.npz/.bin "
                       "(lut:) or .c (cmodel:) file itself")
    return _imported_cached(name, stamp)


def _write(path: Path, write) -> None:
    try:
        write()
    except OSError as exc:
        raise DseError(f"cannot write '{path}': {exc.strerror}; choose a writable path") from None


def export_tables(mult: Multiplier, path) -> None:
    """Write every operand pair's table of an integer multiplier and its metadata to ``path`` (.npz, see above)."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DseError(f"output '{path}' must end in .npz (table set with every operand pair)")
    tables = {pair_key(*p): np.asarray(mult.table(*p), dtype=np.int32) for p in PAIRS}
    meta = {"format": NPZ_FORMAT, "name": mult.name, "description": mult.description,
            "rel_power": None if math.isnan(mult.rel_power) else mult.rel_power,
            "signed_scheme": mult.params.get("signed_scheme", "")}
    with_meta = {**tables, "meta": np.array(json.dumps(meta))}
    _write(path, lambda: np.savez(path, **with_meta))


def export_table(mult: Multiplier, path, a_signed: bool, w_signed: bool) -> None:
    """Write one pair's table as .npy ``LUT[a, b]`` int32 plus the sidecar ``PATH.json`` that declares the pair."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise DseError(f"output '{path}' must end in .npy (numpy table LUT[a, b]) or .npz (every operand pair)")
    t = np.asarray(mult.table(a_signed, w_signed), dtype=np.int32)
    side = {"a_signed": a_signed, "w_signed": w_signed, "source": mult.name}
    if not math.isnan(mult.rel_power):
        side["rel_power"] = mult.rel_power
    _write(path, lambda: np.save(path, t))
    _write(path, lambda: path.with_name(path.name + ".json").write_text(json.dumps(side) + "\n"))
