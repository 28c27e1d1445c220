"""Per-layer network configuration files (TOML or JSON, chosen by extension).

Format: one ``[layers.<name>]`` table per MAC layer with ``multiplier`` (a dse multiplier name, default "exact") and
``cv`` (bool, default false); an optional ``[meta]`` table of scalars (or lists of scalars). Layers not listed are
exact. JSON uses the same structure: ``{"meta": {...}, "layers": {"<name>": {"multiplier": ..., "cv": ...}}}``.

``load_config(path, layers=None) -> dict[str, LayerConfig]`` (``layers``: the model's MAC layer names); ``load_config_meta(path)`` also returns the meta table;
``save_config(cfg, path, meta=None)``; ``validate_config(cfg, layers, where)``.
"""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Sequence

from dse.errors import DseError
from dse.layer_config import LAYER_KEYS, LayerConfig, check_layers, config_to_dict

# [meta] keys dse export writes from the search's context identity (dse.search.identity) and dse evaluate --config
# compares: the calibration's digest (dse.quant.CalibrationState.digest) and the whole context's
META_CALIBRATION, META_CONTEXT = "calibration_digest", "context_digest"


def validate_config(cfg: dict, layers: Sequence[str], where: str = "configuration") -> dict:
    """Check the configuration's layer names against the model's MAC layer names ``layers``; returns ``cfg``."""
    check_layers(cfg, layers, where, key="layers")
    return cfg


def _parse(path: Path) -> dict:
    if not path.is_file():
        raise DseError(f"{path}: configuration file not found; write one with 'dse export' or dse.config.save_config")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise DseError(f"{path}: unsupported configuration extension '{path.suffix}'; use .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DseError(f"{path}: cannot read configuration ({exc})") from None
    try:
        doc = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DseError(f"{path}: invalid {suffix[1:].upper()} ({exc})") from None
    if not isinstance(doc, dict):
        raise DseError(f"{path}: the top level must be a table/object with 'layers'")
    return doc


def load_config_meta(path, layers: Sequence[str] | None = None) -> tuple[dict, dict]:
    """(``{name: LayerConfig}``, meta dict) from a TOML/JSON file; multipliers and (with ``layers``) names checked."""
    from dse.arith.multipliers import get_multiplier

    path = Path(path)
    doc = _parse(path)
    extra = sorted(set(doc) - {"layers", "meta"})
    if extra:
        raise DseError(f"{path}: unknown top-level key '{extra[0]}'; only [layers.<name>] and [meta] are allowed")
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise DseError(f"{path}: key 'meta' must be a table")
    raw = doc.get("layers")
    if raw is None:
        raise DseError(f"{path}: missing key 'layers'; add a [layers.<name>] table per approximated layer")
    if not isinstance(raw, dict):
        raise DseError(f"{path}: key 'layers' must be a table of [layers.<name>] tables")
    cfg = {}
    for name, t in raw.items():
        key = f"layers.{name}"
        if not isinstance(t, dict):
            raise DseError(f"{path}: key '{key}' must be a table with 'multiplier' and 'cv'")
        bad = sorted(set(t) - set(LAYER_KEYS))
        if bad:
            raise DseError(f"{path}: unknown key '{key}.{bad[0]}'; allowed: multiplier, cv")
        mult = t.get("multiplier", "exact")
        cv = t.get("cv", False)
        if not isinstance(mult, str):
            raise DseError(f"{path}: key '{key}.multiplier' must be a string (e.g. \"drum5\")")
        if not isinstance(cv, bool):
            raise DseError(f"{path}: key '{key}.cv' must be true or false")
        try:
            m = get_multiplier(mult)
        except DseError as exc:
            raise DseError(f"{path}: key '{key}.multiplier': {exc}") from None
        if cv and m.domain != "int":
            raise DseError(f"{path}: key '{key}.cv' is true but '{mult}' is a floating-point multiplier; set cv = "
                           "false")
        cfg[name] = LayerConfig(mult, cv)
    if layers is not None:
        validate_config(cfg, layers, str(path))
    return cfg, meta


def load_config(path, layers: Sequence[str] | None = None) -> dict:
    """``{name: LayerConfig}`` from a TOML/JSON configuration file (see module docstring)."""
    return load_config_meta(path, layers)[0]


# ----------------------------------------------------------------------------------------------------- writing
_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_str(s: str) -> str:
    """A TOML basic string literal for ``s`` (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in str(s):
        if ch in _ESC:
            out.append(_ESC[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    if hasattr(v, "item") and not hasattr(v, "__len__"):  # numpy scalar
        return _toml_value(v.item(), key)
    raise DseError(f"config meta key '{key}': value of type {type(v).__name__} cannot be written; use a string, "
                   "number, bool or list")


def save_config(cfg: dict, path, meta: dict | None = None) -> Path:
    """Write ``cfg`` ({name: LayerConfig}) as TOML or JSON (by extension); ``meta`` -> the [meta] table."""
    path = Path(path)
    suffix = path.suffix.lower()
    meta = {k: v for k, v in (meta or {}).items() if v is not None}
    layers = {str(n): lc for n, lc in cfg.items()}
    if suffix == ".json":
        doc = {"meta": meta, "layers": config_to_dict(layers)}
        text = json.dumps(doc, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n"
    elif suffix == ".toml":
        lines = ["# dse per-layer configuration (dse evaluate MODEL --config THIS_FILE)"]
        if meta:
            lines.append("[meta]")
            lines += [f"{toml_str(k)} = {_toml_value(v, str(k))}" for k, v in meta.items()]
            lines.append("")
        lines.append("[layers]")
        for n, lc in layers.items():
            lines += ["", f"[layers.{toml_str(n)}]", f"multiplier = {toml_str(lc.multiplier)}",
                      f"cv = {'true' if lc.cv else 'false'}"]
        text = "\n".join(lines) + "\n"
    else:
        raise DseError(f"{path}: unsupported configuration extension '{path.suffix}'; use .toml or .json")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DseError(f"{path}: cannot write configuration ({exc.strerror}); choose a writable path") from None
    return path
