"""Relative power of the multiplier families: a gate-area model, every constant with its source.

Int multipliers are relative to the exact 8x8 array multiplier, float multipliers to the exact FP32 multiplier
(``Multiplier.params["power_reference"]``). Cell areas are used as the power proxy at equal switching activity; these
are model figures, not silicon data.
"""
from __future__ import annotations

import math
import re

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
    if family == "drum":  # k x k array, per operand LOD + k-bit segment mux, 2k-bit output shifter
        k = p["k"]
        cost = array_cost(k, k) + 2 * (_lod(8) + _shifter(k, 9 - k)) + _shifter(2 * k, 2 * (8 - k) + 1)
        return _rel(cost)
    if family in ("mitchell", "mitch_w"):  # per operand LOD + fraction normalizer; log adder; antilog shifter
        fb = 7 if family == "mitchell" else p["w"] - 2  # fraction bits per operand
        cost = 2 * (_lod(8) + _shifter(fb, 8)) + (3 + fb + 1) * _c("FA") + _shifter(16, 16)
        return _rel(cost)
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
