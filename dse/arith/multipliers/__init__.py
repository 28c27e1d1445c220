"""The multiplier library: names -> bit-exact 8-bit product tables (or float product functions).

Contract (see docs/ARCHITECTURE.md): ``Multiplier.table(a_signed, w_signed)`` returns ``int32[256, 256]`` with
``LUT[a & 0xFF, w & 0xFF]`` = the product the hardware computes for activation pattern ``a`` and weight pattern ``w``,
each interpreted as signed int8 or unsigned uint8 as requested. Tables are cached and read-only.

Name grammar (``get_multiplier`` parses it; numbers are decimal without leading zeros):

=====================================  ==============================================================================
``exact``                              exact 8x8 product
``mitchell``                           Mitchell's log multiplier (full fraction, floor)
``mitch_w{w}``, w = 3..8               Mitch-w (Kim et al.): w-2 fraction bits + unbias bit; one's-complement signed
``drum{k}``, k = 2..8                  DRUM-k (Hashemi et al.): k-bit leading segment, lowest kept bit forced to 1
``perf_j{j}_k{k}``, j >= 0, k >= 1,    partial-product perforation of the WEIGHT: rows j..j+k-1 omitted,
``j + k <= 8``                         ``approx = a * (w & ~mask)``, ``mask = (2^k - 1) << j`` (on magnitudes)
``trunc_op{t}``, t = 1..7              operand truncation: the t LSBs of both magnitudes zeroed, then exact product
``trunc_col{c}``, c = 1..15            partial-product column truncation: ``sum_{i,j: i+j >= c} a_j w_i 2^(i+j)``
                                       (a_j, w_i the bits of the magnitudes; columns below c dropped, no compensation)
``axbxp_k{K}_w{Lw}_a{La}_{mode}``      Ax-BxP: K in {2, 4}, 1 <= Lw, La <= 8/K, mode static|dynamic (see _axbxp_keep)
``bf16``                               bfloat16 operands (RNE), product in FP32 (domain "float")
``fp32_mitch_w{w}``, w = 3..24         FP32 with Mitch-w on the significands (domain "float", see dse.arith.floatmul)
``lut:PATH[?opts]``                    imported table: ``.npy`` int [256, 256] ``LUT[a, b]``, TFApprox ``.bin``
                                       (65536 little-endian uint16, a-major ``LUT[a * 256 + b]``) or an exported
                                       ``.npz`` table set (every operand pair, see ``_importers``)
``cmodel:PATH.c[?opts]``               C model ``int32_t mul8(int32_t a, int32_t b)`` compiled with ``cc`` (dse.arith.cmodel)
=====================================  ==============================================================================

Signed operands. Every core family is defined on 8-bit unsigned magnitudes. Mitch-w uses the ONE'S-COMPLEMENT
hardware variant (Kim et al.): a negative operand is replaced by the bitwise NOT of its 8-bit pattern (= |v| - 1), the
unsigned core runs, and the result is bitwise NOT-ed (``-P - 1``; identical to the 16-bit NOT for P < 2^15) when the
signs differ; the result is 0 if an original operand is 0. All other families use SIGN-MAGNITUDE: ``|a|, |w|`` (|-128|
= 128, still 8 bits) through the core, sign applied. ``params["signed_scheme"]`` names the scheme.

Import options (``lut:`` and ``cmodel:``), joined by ``&`` after ``?``: ``signed=0|1|any`` (both operands),
``a_signed=0|1``, ``w_signed=0|1`` (per operand), ``signmag=1`` (the file is an unsigned core: signed operands go
through it by sign-magnitude, so every signedness pair works), ``power=X`` (relative power, default NaN = unknown),
``fn=NAME`` (cmodel only, default ``mul8``).
Signedness rule when no option is given: a sidecar ``PATH.json`` with ``{"signed": bool}`` or ``{"a_signed": bool,
"w_signed": bool}``; else an EvoApprox file name (``mul8s_*`` signed, ``mul8u_*`` unsigned); else unsigned.
A table declared for one signedness pair refuses any other pair (DseError) unless ``signed=any`` (the user asserts the
table holds for every interpretation of the patterns) or ``signmag=1``. ``.bin`` values are read as int16 two's
complement when the declared pair has a signed operand, as uint16 otherwise.

Relative power: ``rel_power`` comes from the gate-area model in :mod:`dse.arith.power` (every constant with its
source); int multipliers relative to the exact 8x8 array multiplier, float multipliers relative to the exact FP32
multiplier (``params["power_reference"]``).

Layout (one private module per concern, re-exported here): ``_base`` (the :class:`Multiplier` value type, exact
tables), ``_cores`` (unsigned arithmetic cores), ``_signed`` (sign-magnitude and one's-complement schemes),
``_families`` (the family table behind the name grammar), ``_importers`` (``lut:``/``cmodel:`` and the ``.npz``
export format written by ``dse multipliers export NAME -o FILE.npz``).
"""
from __future__ import annotations

import copyreg

from dse.arith.multipliers._base import EXACT, PATTERNS, Multiplier, exact_table, pattern_values
from dse.arith.multipliers._cores import (axbxp_core, drum_core, drum_round, leading_one, mitch_w_core,
                                          mitch_w_log, mitchell_core, perf_core, trunc_col_core, trunc_op_core)
from dse.arith.multipliers._families import FAMILIES, Family, axbxp_name, list_multipliers
from dse.arith.multipliers._families import builtin as _builtin
from dse.arith.multipliers._importers import _imported, _imported_cached, export_table, export_tables
from dse.arith.multipliers._signed import ones_complement, sign_magnitude
from dse.arith.power import POWER_COMPONENTS, power_model
from dse.errors import DseError

__all__ = ["Multiplier", "get_multiplier", "list_multipliers", "EXACT", "PATTERNS", "exact_table", "pattern_values",
           "FAMILIES", "Family", "export_table", "export_tables", "sign_magnitude", "ones_complement",
           "POWER_COMPONENTS", "power_model", "leading_one", "mitchell_core", "mitch_w_log", "mitch_w_core",
           "drum_round", "drum_core", "perf_core", "trunc_op_core", "trunc_col_core", "axbxp_core", "axbxp_name",
           "_builtin", "_imported_cached"]


def get_multiplier(name: str) -> Multiplier:
    """Resolve a multiplier name (grammar in the package docstring). Unknown/ill-formed name -> DseError."""
    if not isinstance(name, str) or not name:
        raise DseError(f"unknown multiplier {name!r}; run 'dse multipliers' for the list of names")
    if name.startswith(("lut:", "cmodel:")):
        return _imported(name)
    return _builtin(name)


def _reduce(mult: Multiplier):
    """Pickle a multiplier by name (worker processes rebuild it from the name; tables are cheap and cached). Registered
    here, beside the resolver, so the value type in _base need not import its own package."""
    return (get_multiplier, (mult.name,))


copyreg.pickle(Multiplier, _reduce)
