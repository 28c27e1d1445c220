"""Relative power of the multiplier families: a gate-area model, every constant with its source.

Int multipliers are relative to the exact 8x8 array multiplier, float multipliers to the exact FP32 multiplier
(``Multiplier.params["power_reference"]``). Cell areas are used as the power proxy at equal switching activity; these
are model figures, not silicon data.

Published figures. EvoApproxLib circuits carry their own PDK45 power, which is used (``published_power``). For the
built-in families no 8-bit figure is published: DRUM and Mitch-w report 16- and 32-bit designs, Ax-BxP only system
energy. Those published figures are used to check the model at the width they were measured at
(``PUBLISHED_CHECKS``, ``published_checks``); every built-in keeps the gate-area estimate and its
``power_source`` says so and names the check (``power_source``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

POWER_COMPONENTS = {
    # Cell areas in full-adder equivalents (area used as the power proxy at equal activity).
    "AND2": (1.064 / 4.256, "NanGate 45nm Open Cell Library: AND2_X1 1.064 um^2 / FA_X1 4.256 um^2"),
    "HA": (2.660 / 4.256, "NanGate 45nm Open Cell Library: HA_X1 2.660 um^2 / FA_X1 4.256 um^2"),
    "MUX2": (1.862 / 4.256, "NanGate 45nm Open Cell Library: MUX2_X1 1.862 um^2 / FA_X1 4.256 um^2"),
    "FA": (1.0, "unit: NanGate 45nm FA_X1 4.256 um^2"),
    # Structural assumptions (model, not synthesis results).
    "LOD_PER_BIT": (2.0, "model: leading-one detector + position encoder ~ 2 AND2-equivalent gates per input bit "
                         "(fully-parallel LOD, Kim et al. IEEE TC 2019), counted in AND2 units"),
    "EXACT_8x8_uW": (391.0, "EvoApprox8b mul8u_1JFF (exact 8x8 unsigned), 45 nm: 0.391 mW (design.md); scale only"),
}


def _c(name: str) -> float:
    return POWER_COMPONENTS[name][0]


def array_cost(m: int, n: int) -> float:
    """m x n array multiplier (m partial-product rows of n bits): m*n AND2, then m-1 rows of n adders of which n are
    half adders (carry-save array + ripple final row, textbook n(n-2) FA + n HA for m = n); in FA equivalents."""
    if m <= 0 or n <= 0:
        return 0.0
    if m == 1:
        return m * n * _c("AND2")
    return m * n * _c("AND2") + n * _c("HA") + (m - 2) * n * _c("FA")


def _shifter(width: int, positions: int) -> float:
    """Logarithmic barrel shifter: width x ceil(log2(positions)) MUX2."""
    return width * max(math.ceil(math.log2(positions)), 0) * _c("MUX2") if positions > 1 else 0.0


def _lod(bits: int) -> float:
    return bits * _c("LOD_PER_BIT") * _c("AND2")


def drum_cost(k: int, n: int = 8) -> float:
    """DRUM-k on n-bit operands: k x k array, per operand LOD + k-bit segment mux, 2k-bit output shifter."""
    return array_cost(k, k) + 2 * (_lod(n) + _shifter(k, n + 1 - k)) + _shifter(2 * k, 2 * (n - k) + 1)


def log_cost(fb: int, n: int = 8) -> float:
    """Mitchell-type log multiplier on n-bit operands with ``fb`` fraction bits per operand: per operand LOD and
    fraction normalizer, a (log2(n) + fb + 1)-bit log adder, a 2n-bit antilog shifter."""
    return 2 * (_lod(n) + _shifter(fb, n)) + (int(math.log2(n)) + fb + 1) * _c("FA") + _shifter(2 * n, 2 * n)


EXACT_COST = array_cost(8, 8)
FP32_COST = array_cost(24, 24) + 8 * _c("FA") + _shifter(24, 2)  # significand array + exponent adder + normalize


def _rel(cost: float, ref: float = EXACT_COST) -> float:
    return round(cost / ref, 4)


def power_model(family: str, p: dict) -> float:
    """Relative power of a family instance under the POWER_COMPONENTS model (see the per-family formulas here)."""
    if family == "exact":
        return 1.0
    if family == "perforation":  # k of 8 weight rows removed
        return _rel(array_cost(8 - p["k"], 8))
    if family == "trunc_op":  # (8-t) x (8-t) array
        return _rel(array_cost(8 - p["t"], 8 - p["t"]))
    if family == "trunc_col":  # kept partial-product bits (AND2 + adder cell each) of the 64
        kept = sum(1 for i in range(8) for j in range(8) if i + j >= p["c"])
        return round(kept / 64, 4)
    if family == "drum":
        return _rel(drum_cost(p["k"]))
    if family in ("mitchell", "mitch_w"):
        return _rel(log_cost(7 if family == "mitchell" else p["w"] - 2))
    if family == "axbxp":  # Lw*La K x K block multipliers + shift-add tree of the block products (+ block muxes)
        K, Lw, La = p["K"], p["Lw"], p["La"]
        nprod = Lw * La
        cost = nprod * array_cost(K, K) + (nprod - 1) * 2 * K * _c("FA")
        if p["mode"] == "dynamic":
            nb = 8 // K
            cost += (Lw + La) * K * _shifter(1, nb - min(Lw, La) + 1) + 2 * _lod(nb) + _shifter(16, 2 * nb)
        return _rel(cost)
    if family == "bf16":  # 8x8 significand array + exponent adder + normalize, relative to FP32
        return _rel(array_cost(8, 8) + 8 * _c("FA") + _shifter(8, 2), FP32_COST)
    if family == "fp32_mitch_w":  # fraction adder (w-1 bits) + exponent adder + normalize mux
        return _rel((p["w"] - 1) * _c("FA") + 8 * _c("FA") + _shifter(24, 2), FP32_COST)
    return float("nan")


# ----------------------------------------------------------------------------------------------------------------
# Published figures: EvoApproxLib circuits carry their PDK45 synthesis results in the file header.

GATE_MODEL_SOURCE = "estimate: gate-area model (dse.arith.power), not silicon data"


@dataclass(frozen=True)
class PublishedCheck:
    """A published power saving of a family at the width it was measured, against the model at that width."""

    family: str
    width: int
    cases: str               # which instances the published range covers
    saving: tuple            # (low, high) published fraction of power (or energy) saved vs the exact multiplier
    model: Callable[[], tuple]  # (low, high) saving of the model over the same instances at the same width
    source: str


def _saving(costs, n: int) -> tuple:
    ref = array_cost(n, n)
    return (round(1 - max(costs) / ref, 3), round(1 - min(costs) / ref, 3))


PUBLISHED_CHECKS = (
    PublishedCheck("drum", 16, "DRUM k = 4..8, 16-bit", (0.54, 0.80),
                   lambda: _saving([drum_cost(k, 16) for k in range(4, 9)], 16),
                   "Hashemi, Bahar, Reda, DRUM, ICCAD 2015 (abstract): power savings of 54 % - 80 % for 16-bit "
                   "designs"),
    PublishedCheck("mitch_w", 32, "Mitch-w8, 32-bit", (0.88, 0.88),
                   lambda: _saving([log_cost(6, 32)], 32),
                   "Kim et al., Efficient Mitchell's approximate log multipliers for CNNs, IEEE TC 68(5) 2019 "
                   "(abstract): w = 8 saves up to 88 % energy vs the exact 32-bit fixed-point multiplier"),
)


def published_checks() -> list[tuple[PublishedCheck, tuple]]:
    """Every published check with the model's saving over the same instances: [(check, (low, high))]."""
    return [(c, c.model()) for c in PUBLISHED_CHECKS]


_NO_8BIT = {
    "drum": "no 8-bit figure published; the model at 16 bits gives {model} saving vs the published {pub} ({src})",
    "mitch_w": "no 8-bit figure published; the model at 32 bits gives {model} saving vs the published {pub} ({src})",
}
_OTHER = {
    "mitchell": "no 8-bit figure published (see mitch_w)",
    "axbxp": "no multiplier-unit figure published (Elangovan et al., TODAES 2022, report system energy only)",
    "perforation": "array rows removed (textbook structure); no 8-bit figure published",
    "trunc_op": "array rows and columns removed (textbook structure); no 8-bit figure published",
    "trunc_col": "kept partial-product bits (textbook structure); no 8-bit figure published",
}


def _pct(lo: float, hi: float) -> str:
    return f"{100 * lo:.0f} %" if lo == hi else f"{100 * lo:.0f}-{100 * hi:.0f} %"


def power_source(family: str) -> str:
    """The ``power_source`` of a built-in family: the gate-area estimate, with the published check where one exists."""
    for c, (lo, hi) in published_checks():
        if c.family == family:
            note = _NO_8BIT[family].format(model=_pct(lo, hi), pub=_pct(*c.saving), src=c.source)
            return f"{GATE_MODEL_SOURCE}; {note}"
    return f"{GATE_MODEL_SOURCE}; {_OTHER[family]}" if family in _OTHER else GATE_MODEL_SOURCE


EVOAPPROX_EXACT_MW = {
    False: (0.391, "EvoApproxLib mul8u_1JFF (exact 8x8 unsigned), PDK45_PWR = 0.391 mW"),
    True: (0.425, "EvoApproxLib mul8s_1KV6 (exact 8x8 signed), PDK45_PWR = 0.425 mW"),
}
_PDK45_PWR = re.compile(r"PDK45_PWR\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*mW")


def published_power(header: str, signed: bool, where: str) -> tuple[float, str] | None:
    """Relative power from an EvoApproxLib header line ``PDK45_PWR = X mW`` in ``header`` (a circuit's C or Verilog
    text): X over the exact EvoApprox multiplier of the same signedness, with its source; None without such a line."""
    m = _PDK45_PWR.search(header)
    if m is None:
        return None
    ref, ref_source = EVOAPPROX_EXACT_MW[signed]
    mw = float(m.group(1))
    return round(mw / ref, 4), f"{where}: PDK45_PWR = {mw:g} mW / {ref_source}"
