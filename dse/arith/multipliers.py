"""The multiplier library: names -> bit-exact 8-bit product tables (or float product functions).

Contract (see docs/ARCHITECTURE.md): ``Multiplier.table(a_signed, w_signed)`` returns ``int32[256, 256]`` with
``LUT[a & 0xFF, w & 0xFF]`` = the product the hardware computes for activation pattern ``a`` and weight pattern ``w``,
each interpreted as signed int8 or unsigned uint8 as requested. Tables are cached and read-only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from dse.errors import DseError

PATTERNS = np.arange(256, dtype=np.int64)


def pattern_values(signed: bool) -> np.ndarray:
    """Value of each 8-bit pattern 0..255 (int64[256])."""
    return np.where(PATTERNS >= 128, PATTERNS - 256, PATTERNS) if signed else PATTERNS.copy()


def exact_table(a_signed: bool, w_signed: bool) -> np.ndarray:
    """Exact product table int32[256,256] for the given operand signedness."""
    return np.multiply.outer(pattern_values(a_signed), pattern_values(w_signed)).astype(np.int32)


@dataclass(frozen=True, eq=False)
class Multiplier:
    """One named multiplier.

    domain: "int" (8-bit patterns, table-defined) or "float" (FP32/bfloat16 functional model, see ``float_product``).
    rel_power: power relative to the exact 8x8 multiplier of the same signedness (1.0 = exact).
    params: family parameters, e.g. {"w": 6} for mitch_w6, {"K": 2, "Lw": 3, "La": 2, "mode": "static"} for Ax-BxP.
    """

    name: str
    family: str
    domain: str = "int"
    rel_power: float = 1.0
    params: dict = field(default_factory=dict)
    description: str = ""
    # Builds the table for a signedness pair; None for float-domain multipliers.
    _builder: object = None
    _cache: dict = field(default_factory=dict, repr=False)

    def table(self, a_signed: bool, w_signed: bool = True) -> np.ndarray:
        if self.domain != "int":
            raise DseError(f"multiplier '{self.name}' is a floating-point model and has no 8-bit table; use it on the FP32 path")
        key = (bool(a_signed), bool(w_signed))
        t = self._cache.get(key)
        if t is None:
            t = np.ascontiguousarray(self._builder(*key), dtype=np.int32)
            if t.shape != (256, 256):
                raise DseError(f"multiplier '{self.name}': table has shape {t.shape}, expected (256, 256)")
            t.setflags(write=False)
            self._cache[key] = t
        return t

    def error_table(self, a_signed: bool, w_signed: bool = True) -> np.ndarray:
        """E[a, w] = LUT[a, w] - a*w as int64[256,256]."""
        return self.table(a_signed, w_signed).astype(np.int64) - exact_table(a_signed, w_signed)

    @property
    def is_exact(self) -> bool:
        return self.family == "exact"


EXACT = Multiplier(name="exact", family="exact", rel_power=1.0, description="exact 8x8 multiplier", _builder=exact_table)


def get_multiplier(name: str) -> Multiplier:
    """Resolve a multiplier name (see ``list_multipliers``). Unknown name -> DseError naming it and the fix."""
    if name == "exact":
        return EXACT
    raise DseError(f"unknown multiplier '{name}'; run 'dse multipliers' for the list of names")


def list_multipliers() -> list[str]:
    return ["exact"]
