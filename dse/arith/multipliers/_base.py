"""The multiplier value type and the exact reference tables (operand patterns, signedness)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dse.errors import DseError

PATTERNS = np.arange(256, dtype=np.int64)
# An 8x8 multiplier's products need 17 bits with the sign (|255 * 255| = 65025 < 2^16). The accumulator is int32, so
# |LUT| <= 2^16 keeps any 2^15 products within it; a larger entry is not a product (a scaled, offset or corrupt table)
# and could overflow the accumulator (-2^31 alone does).
PRODUCT_BOUND = 2 ** 16


def check_products(t: np.ndarray, where: str) -> None:
    """DseError naming ``where`` (file, table) unless every entry of the integer table ``t`` is within PRODUCT_BOUND."""
    bad = (t < -PRODUCT_BOUND) | (t > PRODUCT_BOUND)
    if bad.any():
        a, b = (int(i) for i in np.argwhere(bad)[0])
        raise DseError(f"{where}: LUT[{a}, {b}] = {t[a, b]} is not an 8x8 product (|value| <= {PRODUCT_BOUND}; larger "
                       f"values can overflow the int32 accumulator); fix the table to hold the products themselves, "
                       "not scaled or offset values")


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
    rel_power: power relative to the exact 8x8 multiplier ("int") or the exact FP32 multiplier ("float").
    params: family parameters, e.g. {"w": 6} for mitch_w6, {"K": 2, "Lw": 3, "La": 2, "mode": "static"} for Ax-BxP,
    plus "signed_scheme" ("sign_magnitude" | "ones_complement" | "table").
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
    # float32 elementwise product for domain "float".
    _float_fn: object = None

    def table(self, a_signed: bool, w_signed: bool = True) -> np.ndarray:
        if self.domain != "int":
            raise DseError(f"multiplier '{self.name}' is a floating-point model and has no 8-bit table; use it on the FP32 path")
        key = (bool(a_signed), bool(w_signed))
        t = self._cache.get(key)
        if t is None:
            raw = np.asarray(self._builder(*key))
            if raw.shape != (256, 256):
                raise DseError(f"multiplier '{self.name}': table has shape {raw.shape}, expected (256, 256)")
            if raw.dtype.kind in "iu" and raw.size and (raw.min() < -2 ** 31 or raw.max() >= 2 ** 31):
                raise DseError(f"multiplier '{self.name}': table values exceed int32")
            t = np.ascontiguousarray(raw, dtype=np.int32)
            t.setflags(write=False)
            self._cache[key] = t
        return t

    def error_table(self, a_signed: bool, w_signed: bool = True) -> np.ndarray:
        """E[a, w] = LUT[a, w] - a*w as int64[256,256]."""
        return self.table(a_signed, w_signed).astype(np.int64) - exact_table(a_signed, w_signed)

    def float_product(self, x, y) -> np.ndarray:
        """Elementwise float32 product of float32 arrays x, y as the hardware computes it (domain "float" only)."""
        if self.domain != "float" or self._float_fn is None:
            raise DseError(f"multiplier '{self.name}' is an 8-bit integer multiplier; use its table on the FxP8 path")
        return self._float_fn(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))

    @property
    def is_exact(self) -> bool:
        return self.family == "exact"




EXACT = Multiplier(name="exact", family="exact", rel_power=1.0, description="exact 8x8 multiplier",
                   params={"signed_scheme": "exact", "power_source": "the reference (1 by definition)"},
                   _builder=exact_table)
