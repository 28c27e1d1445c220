"""Stored and array-side operand formats of a layer under a multiplier (what the memory traffic is counted in).

One rule for every tensor: it is written and read in the same stored format.

* Weights are written offline, so they are stored in the multiplier's weight format: ``ArrayConfig.weight_bits``,
  ``Lw*K`` (+ block-index bits in dynamic mode) for Ax-BxP, 32 bits for float multipliers.
* Activations (the network input too) are written at ``ArrayConfig.out_bits`` and read back at that width
  (``act_store_bits``); the consumer converts them on the way from the global buffer into the array
  (``ArrayConfig.act_bits``, or the kept ``La*K`` bits + block index of an Ax-BxP multiplier), so only the array side
  (input registers, ``act_bits``) is narrow. Float multipliers store 32-bit activations.

The multiply energy is ``ref * mult_rel``: ``ref`` is the 8-bit integer multiply (or the FP32/FP16 multiply for float
multipliers) and ``mult_rel`` the multiplier's one relative-power number (``Multiplier.rel_power``, the value
``dse multipliers`` lists), scaled bilinearly by ``ArrayConfig`` operand widths for plain integer multipliers. Ax-BxP's
number already covers its block products, shift-add tree and (dynamic) block detection and shifters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from dse.energy.arch import ArrayConfig
from dse.errors import DseError


@dataclass(frozen=True)
class MultiplierCost:
    """What the energy model needs to know about a multiplier (resolved once per name)."""

    kind: str            # "int", "axbxp" or "float"
    rel_power: float = 1.0
    K: int = 8
    Lw: int = 1
    La: int = 1
    dynamic: bool = False
    fp_ref: str = "fp32"


@lru_cache(maxsize=None)
def multiplier_cost(name: str) -> MultiplierCost:
    """Resolve a multiplier name (``get_multiplier``: unknown name -> DseError) to its cost parameters."""
    if name == "exact":
        return MultiplierCost("int", 1.0)
    from dse.arith.multipliers import get_multiplier

    mult = get_multiplier(name)
    rp = float(mult.rel_power)
    if not math.isfinite(rp) or rp < 0:
        raise DseError(f"multiplier '{name}' has unknown relative power ({rp}); give it, e.g. '{name}?power=0.5' "
                       f"for imported tables")
    if mult.family == "axbxp":
        p = mult.params
        return MultiplierCost("axbxp", rp, int(p["K"]), int(p["Lw"]), int(p["La"]), p["mode"] == "dynamic")
    if mult.domain == "float":
        return MultiplierCost("float", rp, fp_ref=str(mult.params.get("power_reference", "fp32")))
    return MultiplierCost("int", rp)


def index_bits(K: int, L: int) -> int:
    """Block-index bits of a dynamic Ax-BxP operand: the kept window of L consecutive blocks starts at 0..n-L."""
    n = -(-8 // K)
    return math.ceil(math.log2(n - L + 1)) if n - L + 1 > 1 else 0


@dataclass(frozen=True)
class OperandFormat:
    """Bit widths of one layer's tensors and the multiply's energy relative to its reference multiply."""

    kind: str              # "int", "axbxp" or "float"
    mult_rel: float        # multiply energy / reference multiply energy
    mult_ref: str          # energy constant of the reference multiply: "mult8", "fp16_mult" or "fp32_mult"
    add_ref: str           # energy constant of the accumulation add: "add32" or "fp32_add"
    weight_bits: int       # stored = array side
    act_bits: int          # array side (input registers)
    act_store_bits: int    # global buffer / DRAM
    out_bits: int
    psum_bits: int


@lru_cache(maxsize=4096)
def operand_format(name: str, array: ArrayConfig) -> OperandFormat:
    """The operand format of multiplier ``name`` on ``array`` (see the module docstring)."""
    m = multiplier_cost(name)
    A = array
    if m.kind == "float":
        ref = "fp16_mult" if m.fp_ref == "fp16" else "fp32_mult"
        return OperandFormat("float", m.rel_power, ref, "fp32_add", 32, 32, 32, 32, 32)
    if m.kind == "axbxp":
        wb = m.Lw * m.K + (index_bits(m.K, m.Lw) if m.dynamic else 0)
        ab = m.La * m.K + (index_bits(m.K, m.La) if m.dynamic else 0)
        return OperandFormat("axbxp", m.rel_power, "mult8", "add32", wb, ab, A.out_bits, A.out_bits, A.psum_bits)
    rel = m.rel_power * (A.weight_bits / 8.0) * (A.act_bits / 8.0)
    return OperandFormat("int", rel, "mult8", "add32", A.weight_bits, A.act_bits, A.out_bits, A.out_bits,
                         A.psum_bits)
