"""The energy-per-action table (Accelergy's ERT), built once per model from the sourced constants and the array.

``EnergyTable.actions(fmt)`` gives pJ per action for one operand format; ``COMPONENT_ACTIONS`` says which counts
(``dse.energy.counts``) each reported component is made of and at which action's energy. A layer's component energy
is ``sum(count * energy per action)``: the counts never see a constant, the table never sees a layer.
"""
from __future__ import annotations

import math

from dse.energy.arch import ArrayConfig
from dse.energy.constants import Constant
from dse.energy.formats import OperandFormat

# component -> [(count name, action name)]
COMPONENT_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "multiplier": (("mults", "multiply"),),
    "accumulate": (("adds", "accumulate"),),
    "registers": (("reg_bits", "reg_bit"),),
    "glb": (("glb_read_bits", "glb_bit"), ("glb_write_bits", "glb_bit")),
    "dram": (("dram_bits", "dram_bit"),),
    "leakage": (("pe_cycles", "pe_leak_cycle"), ("cycles", "glb_leak_cycle")),
    "cv": (("cv_adds", "accumulate"), ("cv_reg_bits", "reg_bit"), ("cv_glb_read_bits", "glb_bit"),
           ("cv_glb_write_bits", "glb_bit"), ("cv_corrections", "cv_correct"), ("cv_pe_cycles", "pe_leak_cycle")),
}
COMPONENTS = tuple(COMPONENT_ACTIONS)
# The multiplier unit: the multiplier itself and the control-variate column with its coefficient multiply.
MULTIPLIER_COMPONENTS = ("multiplier", "cv")


class EnergyTable:
    """pJ per action on one array under one set of constants."""

    def __init__(self, constants: dict[str, Constant], array: ArrayConfig):
        c = {k: v.value for k, v in constants.items()}
        self.constants = c
        to_pj = 1e3 / array.frequency_mhz  # mW for one cycle -> pJ
        self.fixed = {"reg_bit": c["reg_bit"], "glb_bit": c["sram"] * math.sqrt(array.glb_kib / 8.0),
                      "dram_bit": c["dram"], "pe_leak_cycle": c["pe_leak"] * to_pj,
                      "glb_leak_cycle": array.glb_kib * c["glb_leak"] * to_pj}
        self.cv_coef_bits = array.cv_coef_bits
        self._cache: dict[OperandFormat, dict[str, float]] = {}

    def actions(self, fmt: OperandFormat) -> dict[str, float]:
        """pJ per action for a layer in operand format ``fmt``."""
        hit = self._cache.get(fmt)
        if hit is None:
            c = self.constants
            if fmt.kind == "float":
                correct = c["fp32_mult"] + c["fp32_add"]
            else:  # alpha_f (cv_coef_bits) x X (psum bits), bilinear in the widths, and one add
                correct = c["mult8"] * (self.cv_coef_bits / 8.0) * (fmt.psum_bits / 8.0) + c["add32"]
            hit = self._cache[fmt] = dict(self.fixed, multiply=c[fmt.mult_ref] * fmt.mult_rel,
                                          accumulate=c[fmt.add_ref], cv_correct=correct)
        return hit


def components(counts: dict, energy: dict[str, float]) -> dict[str, float]:
    """Component energies (pJ) of one layer: counts x energy per action."""
    return {comp: float(sum(counts[n] * energy[a] for n, a in acts)) for comp, acts in COMPONENT_ACTIONS.items()}
