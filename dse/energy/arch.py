"""The accelerator architecture the built-in model maps onto (``[accelerator]``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dse.errors import DseError

# Field -> (lower bound, upper bound or None) for validation; all fields are positive.
ARRAY_LIMITS = {"rows": (1, 4096), "cols": (1, 4096), "frequency_mhz": (1e-3, None), "glb_kib": (1e-3, None),
                "weight_bits": (1, 32), "act_bits": (1, 32), "out_bits": (1, 32), "psum_bits": (1, 64),
                "batch": (1, None), "cv_coef_bits": (1, 32)}


@dataclass(frozen=True)
class ArrayConfig:
    """The accelerator: PE array shape, clock, global buffer size and per-tensor bit widths.

    ``frequency_mhz`` default 500 MHz: assumption for a 45 nm systolic array (Eyeriss runs 100-250 MHz in 65 nm,
    TPU v1 700 MHz in 28 nm). ``glb_kib`` 64 KiB: assumption (Eyeriss 108 KiB). ``batch``: images per weight fetch from
    DRAM when the weights do not stay in the global buffer. ``cv_coef_bits``: width of the per-filter control-variate
    coefficient alpha_f.
    """

    rows: int = 16
    cols: int = 16
    frequency_mhz: float = 500.0
    glb_kib: float = 64.0
    weight_bits: int = 8
    act_bits: int = 8
    out_bits: int = 8
    psum_bits: int = 32
    batch: int = 1
    cv_coef_bits: int = 8

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            lo, hi = ARRAY_LIMITS[f.name]
            want_int = f.type in (int, "int")
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (not want_int or float(v).is_integer())
            if not ok or not math.isfinite(v) or v < lo or (hi is not None and v > hi):
                kind = "an integer" if want_int else "a number"
                rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
                raise DseError(f"key 'accelerator.{f.name}' must be {kind} {rng}, got {v!r}")

    @property
    def glb_bits(self) -> float:
        return self.glb_kib * 8192.0
