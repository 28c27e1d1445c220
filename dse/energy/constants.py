"""The sourced energy constants (45 nm defaults) and their TOML overrides (``[energy]``).

Every constant carries its value, unit and source; the ones no publication gives are named assumptions. They are
turned into an energy-per-action table once per model (``dse.energy.table``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from dse.errors import DseError


@dataclass(frozen=True)
class Constant:
    """One energy/power constant: value, unit and where it comes from."""

    value: float
    unit: str
    source: str


HOROWITZ = "Horowitz, ISSCC 2014, 45 nm 0.9 V"
DEFAULT_CONSTANTS: dict[str, Constant] = {
    "mult8": Constant(0.2, "pJ", f"{HOROWITZ}: 8-bit integer multiply"),
    "add32": Constant(0.1, "pJ", f"{HOROWITZ}: 32-bit integer add"),
    "fp16_mult": Constant(1.1, "pJ", f"{HOROWITZ}: 16-bit FP multiply"),
    "fp32_mult": Constant(3.7, "pJ", f"{HOROWITZ}: 32-bit FP multiply"),
    "fp32_add": Constant(0.9, "pJ", f"{HOROWITZ}: 32-bit FP add"),
    "sram": Constant(0.156, "pJ/bit", f"{HOROWITZ}: 8 KiB SRAM, 10 pJ per 64-bit access; scaled by sqrt(size/8 KiB)"),
    "dram": Constant(20.0, "pJ/bit", f"{HOROWITZ}: DRAM 1.3-2.6 nJ per 64-bit access (low end)"),
    "reg_bit": Constant(0.009, "pJ/bit", "Aladdin (Shao et al., ISCA 2014), 40 nm register, per bit access"),
    "pe_leak": Constant(0.037, "mW", "assumption: 10 % of an 8-bit MAC PE's dynamic power at full activity and "
                                     "500 MHz ((0.2 + 0.1 + 48 * 0.009) pJ * 500 MHz = 0.37 mW), typical 45 nm "
                                     "leakage share"),
    "glb_leak": Constant(0.02, "mW/KiB", "assumption: 45 nm high-performance SRAM leakage, order of CACTI-P figures "
                                        "(tens of uW per KiB)"),
}


def _override(key: str, v, where: str) -> Constant:
    """One override ``number | Constant | {"value": x, "source": "...", "unit": u}`` checked against the default."""
    base = DEFAULT_CONSTANTS[key]
    source = "user override"
    if isinstance(v, Constant):
        v, unit, source = v.value, v.unit, v.source
    elif isinstance(v, dict):
        extra = set(v) - {"value", "unit", "source"}
        if extra or "value" not in v:
            raise DseError(f"key '{where}.{key}' must be a number or a table with 'value' (and optional 'unit', "
                           f"'source'), got keys {sorted(v)}")
        unit, source = v.get("unit", base.unit), str(v.get("source", source))
        v = v["value"]
    else:
        unit = base.unit
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise DseError(f"key '{where}.{key}' must be a non-negative number in {base.unit}, got {v!r}")
    if unit != base.unit:
        raise DseError(f"key '{where}.{key}' is in {base.unit}, got unit {unit!r}; convert the value")
    return Constant(float(v), base.unit, source)


def resolve_constants(overrides: dict | None = None, where: str = "energy") -> dict[str, Constant]:
    """Defaults updated by ``overrides``: ``{key: number | Constant | {"value": x, "source": "...", "unit": u}}``.

    Unknown key, non-numeric or negative value, or a different unit -> DseError naming ``<where>.<key>``.
    """
    out = dict(DEFAULT_CONSTANTS)
    for key, v in (overrides or {}).items():
        if key not in DEFAULT_CONSTANTS:
            raise DseError(f"unknown key '{where}.{key}'; known energy constants: {', '.join(DEFAULT_CONSTANTS)}")
        out[key] = _override(key, v, where)
    return out
