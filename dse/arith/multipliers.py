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
``lut:PATH[?opts]``                    imported table: ``.npy`` int [256, 256] ``LUT[a, b]`` or TFApprox ``.bin``
                                       (65536 little-endian uint16, a-major ``LUT[a * 256 + b]``)
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

Relative power: ``rel_power`` comes from the gate-area model in ``POWER_COMPONENTS`` (every constant with its source);
int multipliers relative to the exact 8x8 array multiplier, float multipliers relative to the exact FP32 multiplier
(``params["power_reference"]``).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

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

    def __reduce__(self):  # pickle by name (worker processes rebuild from the name; tables are cheap and cached)
        return (get_multiplier, (self.name,))


# ----------------------------------------------------------------------------------------------------------------
# Unsigned cores: int64 magnitudes (broadcastable arrays, 0..255) -> int64 products.

def leading_one(x: np.ndarray) -> np.ndarray:
    """Position of the leading one of non-negative integers (< 2^53); -1 for 0."""
    return np.frexp(np.asarray(x, dtype=np.float64))[1].astype(np.int64) - 1


def mitchell_core(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mitchell: 2^(k1+k2)(1+f1+f2) if f1+f2 < 1 else 2^(k1+k2+1)(f1+f2), floor; 0 if an operand is 0.

    Exact integer form: with r_i = x_i - 2^k_i, 2^(k1+k2)(f1+f2) = r1 2^k2 + r2 2^k1 (an integer), so no flooring."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    k1, k2 = np.maximum(leading_one(a), 0), np.maximum(leading_one(b), 0)
    s = (a - (1 << k1)) * (1 << k2) + (b - (1 << k2)) * (1 << k1)  # 2^(k1+k2) (f1 + f2)
    base = 1 << (k1 + k2)
    p = np.where(s < base, base + s, 2 * s)
    return np.where((a == 0) | (b == 0), 0, p)


def mitch_w_log(x: np.ndarray, w: int) -> np.ndarray:
    """Mitch-w log value (k << (w-1)) | (frac << 1) | 1, frac = the w-2 bits below the leading one (x = 0 -> k = 0)."""
    x = np.asarray(x, np.int64)
    k = np.maximum(leading_one(x), 0)
    r = np.where(x > 0, x - (1 << k), 0)
    sh = k - (w - 2)
    frac = np.where(sh >= 0, r >> np.maximum(sh, 0), r << np.maximum(-sh, 0))
    return (k << (w - 1)) | (frac << 1) | 1


def mitch_w_core(a: np.ndarray, b: np.ndarray, w: int) -> np.ndarray:
    """Unsigned Mitch-w without the zero rule: antilog of the sum of the log values, bits below 2^0 dropped."""
    s = mitch_w_log(a, w) + mitch_w_log(b, w)
    ch = s >> (w - 1)
    m = (1 << (w - 1)) | (s & ((1 << (w - 1)) - 1))
    d = ch - (w - 1)
    return np.where(d >= 0, m << np.maximum(d, 0), m >> np.maximum(-d, 0))


def drum_round(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """DRUM-k operand: (v, s) with x ~ v << s; if t = leading one > k-1: v = (x >> (t-k+1)) | 1, s = t-k+1."""
    x = np.asarray(x, np.int64)
    s = np.maximum(leading_one(x) - k + 1, 0)
    v = np.where(s > 0, (x >> s) | 1, x)
    return v, s


def drum_core(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """DRUM-k for any operand width: k-bit segments multiplied exactly, shifted back."""
    va, sa = drum_round(a, k)
    vb, sb = drum_round(b, k)
    return (va * vb) << (sa + sb)


def perf_core(a: np.ndarray, b: np.ndarray, j: int, k: int) -> np.ndarray:
    """Perforation of weight rows j..j+k-1: a * (b & ~mask)."""
    mask = ((1 << k) - 1) << j
    return np.asarray(a, np.int64) * (np.asarray(b, np.int64) & ~mask)


def trunc_op_core(a: np.ndarray, b: np.ndarray, t: int) -> np.ndarray:
    m = ~((1 << t) - 1)
    return (np.asarray(a, np.int64) & m) * (np.asarray(b, np.int64) & m)


def trunc_col_core(a: np.ndarray, b: np.ndarray, c: int) -> np.ndarray:
    """sum over weight rows i of w_i * (a with bits below column c-i cleared) << i."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = 0
    for i in range(8):
        s = max(c - i, 0)
        out = out + (((b >> i) & 1) * ((a >> s) << s) << i)
    return out


def _axbxp_keep(x: np.ndarray, K: int, L: int, mode: str) -> np.ndarray:
    """Ax-BxP operand approximation: keep L K-bit blocks (static: the top L of 8/K; dynamic: the L consecutive blocks
    starting at the leading non-zero block and going down, all blocks if fewer remain), zero the rest."""
    x = np.asarray(x, np.int64)
    nb = 8 // K
    if mode == "static":
        low = nb - L
    else:
        lead = np.maximum(leading_one(x), 0) // K
        low = np.maximum(lead - L + 1, 0)
    return x & ~((np.int64(1) << (K * low)) - 1)


def axbxp_core(a: np.ndarray, b: np.ndarray, K: int, Lw: int, La: int, mode: str) -> np.ndarray:
    """Only the Lw*La kept block products are summed, which equals approx(a) * approx(w)."""
    return _axbxp_keep(a, K, La, mode) * _axbxp_keep(b, K, Lw, mode)


def sign_magnitude(core):
    """Table builder: |a|, |w| through the unsigned core, sign of a*w applied."""
    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        va, vw = pattern_values(a_signed)[:, None], pattern_values(w_signed)[None, :]
        return np.sign(va) * np.sign(vw) * core(np.abs(va), np.abs(vw))
    return build


def ones_complement(core):
    """Table builder, one's-complement variant: negative -> NOT of its pattern (|v|-1), core, NOT (-P-1) if the signs
    differ, 0 if an original operand is 0."""
    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        va, vw = pattern_values(a_signed)[:, None], pattern_values(w_signed)[None, :]
        p = core(np.where(va < 0, -va - 1, va), np.where(vw < 0, -vw - 1, vw))
        p = np.where((va < 0) != (vw < 0), -p - 1, p)
        return np.where((va == 0) | (vw == 0), 0, p)
    return build


# ----------------------------------------------------------------------------------------------------------------
# Relative power model: every constant with its source, in one table.

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
# Names

EXACT = Multiplier(name="exact", family="exact", rel_power=1.0, description="exact 8x8 multiplier",
                   params={"signed_scheme": "exact"}, _builder=exact_table)

_SM = "sign-magnitude signed operands"
_N = r"(0|[1-9][0-9]*)"
_RULES = [
    (re.compile(r"mitchell"), "mitchell"),
    (re.compile(rf"mitch_w{_N}"), "mitch_w"),
    (re.compile(rf"drum{_N}"), "drum"),
    (re.compile(rf"perf_j{_N}_k{_N}"), "perforation"),
    (re.compile(rf"trunc_op{_N}"), "trunc_op"),
    (re.compile(rf"trunc_col{_N}"), "trunc_col"),
    (re.compile(rf"axbxp_k{_N}_w{_N}_a{_N}_(static|dynamic)"), "axbxp"),
    (re.compile(r"bf16"), "bf16"),
    (re.compile(rf"fp32_mitch_w{_N}"), "fp32_mitch_w"),
]


def _bad(name: str, why: str) -> DseError:
    return DseError(f"multiplier '{name}': {why}; run 'dse multipliers' for the list of names")


def _make(name: str, family: str, g: tuple) -> Multiplier:
    ints = [int(x) for x in g if x.isdigit()]
    if family == "mitchell":
        params, desc, builder = {}, f"Mitchell log multiplier (full fraction, floor); {_SM}", sign_magnitude(mitchell_core)
        params["signed_scheme"] = "sign_magnitude"
    elif family == "mitch_w":
        (w,) = ints
        if not 3 <= w <= 8:
            raise _bad(name, "Mitch-w needs w in 3..8")
        params = {"w": w, "signed_scheme": "ones_complement"}
        desc = f"Mitch-w{w} log multiplier, {w - 2} fraction bits + unbias bit; one's-complement signed operands"
        builder = ones_complement(lambda a, b: mitch_w_core(a, b, w))
    elif family == "drum":
        (k,) = ints
        if not 2 <= k <= 8:
            raise _bad(name, "DRUM needs k in 2..8")
        params = {"k": k, "signed_scheme": "sign_magnitude"}
        desc = f"DRUM-{k}: {k}-bit leading segments, LSB forced to 1; {_SM}"
        builder = sign_magnitude(lambda a, b: drum_core(a, b, k))
    elif family == "perforation":
        j, k = ints
        if k < 1 or j + k > 8:
            raise _bad(name, "perforation needs k >= 1 and j + k <= 8")
        params = {"j": j, "k": k, "signed_scheme": "sign_magnitude"}
        desc = f"weight partial-product rows {j}..{j + k - 1} omitted; {_SM}"
        builder = sign_magnitude(lambda a, b: perf_core(a, b, j, k))
    elif family == "trunc_op":
        (t,) = ints
        if not 1 <= t <= 7:
            raise _bad(name, "operand truncation needs t in 1..7")
        params = {"t": t, "signed_scheme": "sign_magnitude"}
        desc = f"{t} LSBs of both operand magnitudes zeroed; {_SM}"
        builder = sign_magnitude(lambda a, b: trunc_op_core(a, b, t))
    elif family == "trunc_col":
        (c,) = ints
        if not 1 <= c <= 15:
            raise _bad(name, "column truncation needs c in 1..15")
        params = {"c": c, "signed_scheme": "sign_magnitude"}
        desc = f"partial-product columns 0..{c - 1} dropped; {_SM}"
        builder = sign_magnitude(lambda a, b: trunc_col_core(a, b, c))
    elif family == "axbxp":
        K, Lw, La = ints
        mode = g[-1]
        if K not in (2, 4) or not (1 <= Lw <= 8 // K and 1 <= La <= 8 // K):
            raise _bad(name, "Ax-BxP needs K in {2, 4} and 1 <= Lw, La <= 8/K")
        params = {"K": K, "Lw": Lw, "La": La, "mode": mode, "signed_scheme": "sign_magnitude"}
        desc = f"Ax-BxP {mode}: {Lw} weight x {La} activation {K}-bit blocks; {_SM}"
        builder = sign_magnitude(lambda a, b: axbxp_core(a, b, K, Lw, La, mode))
    elif family == "bf16":
        from dse.arith.floatmul import bf16_product
        params = {"power_reference": "fp32", "signed_scheme": "ieee"}
        return Multiplier(name=name, family=family, domain="float", rel_power=power_model(family, params),
                          params=params, description="bfloat16 operands (RNE), exact product in FP32",
                          _float_fn=bf16_product)
    elif family == "fp32_mitch_w":
        (w,) = ints
        if not 3 <= w <= 24:
            raise _bad(name, "FP32 Mitch-w needs w in 3..24")
        from dse.arith.floatmul import fp32_mitch_w
        params = {"w": w, "power_reference": "fp32", "signed_scheme": "ieee"}
        return Multiplier(name=name, family=family, domain="float", rel_power=power_model(family, params),
                          params=params, description=f"FP32, Mitch-w{w} on the significands, exponents exact, FTZ",
                          _float_fn=lambda x, y: fp32_mitch_w(x, y, w))
    else:  # pragma: no cover
        raise _bad(name, "unknown family")
    return Multiplier(name=name, family=family, rel_power=power_model(family, params), params=params,
                      description=desc, _builder=builder)


@lru_cache(maxsize=None)
def _builtin(name: str) -> Multiplier:
    if name == "exact":
        return EXACT
    for rx, family in _RULES:
        m = rx.fullmatch(name)
        if m:
            return _make(name, family, m.groups())
    raise DseError(f"unknown multiplier '{name}'; run 'dse multipliers' for the list of names")


def get_multiplier(name: str) -> Multiplier:
    """Resolve a multiplier name (grammar in the module docstring). Unknown/ill-formed name -> DseError."""
    if not isinstance(name, str) or not name:
        raise DseError(f"unknown multiplier {name!r}; run 'dse multipliers' for the list of names")
    if name.startswith(("lut:", "cmodel:")):
        return _imported(name)
    return _builtin(name)


def list_multipliers() -> list[str]:
    """Canonical built-in names (the rows of ``dse multipliers``)."""
    names = ["exact", "mitchell"] + [f"mitch_w{w}" for w in range(3, 9)] + [f"drum{k}" for k in range(3, 9)]
    names += [f"perf_j{j}_k{k}" for j in range(3) for k in range(1, 4)]
    names += [f"trunc_op{t}" for t in range(1, 4)] + [f"trunc_col{c}" for c in (4, 6, 8)]
    names += [f"axbxp_k2_w{lw}_a{la}_{m}" for m in ("static", "dynamic") for lw, la in ((2, 2), (2, 3), (3, 3))]
    names += [f"axbxp_k4_w1_a1_{m}" for m in ("static", "dynamic")]
    names += ["bf16"] + [f"fp32_mitch_w{w}" for w in (4, 6, 8)]
    return names


# ----------------------------------------------------------------------------------------------------------------
# Imported tables (lut:PATH, cmodel:PATH.c)

_BOOL = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}


def _parse_import(name: str) -> tuple[str, Path, dict]:
    kind, _, rest = name.partition(":")
    path_s, _, query = rest.partition("?")
    if not path_s:
        raise _bad(name, f"give a file: {kind}:PATH")
    opts = {}
    for item in filter(None, query.split("&")):
        key, eq, val = item.partition("=")
        if not eq or key not in ("signed", "a_signed", "w_signed", "signmag", "fn", "power") or (kind == "lut" and key == "fn"):
            raise _bad(name, f"bad option '{item}' (options: signed=0|1|any, a_signed=0|1, w_signed=0|1, signmag=1, power=X"
                             f"{', fn=NAME' if kind == 'cmodel' else ''})")
        if key == "fn":
            opts[key] = val
        elif key == "power":
            try:
                opts[key] = float(val)
            except ValueError:
                opts[key] = -1.0
            if not (opts[key] >= 0 and math.isfinite(opts[key])):
                raise _bad(name, f"option power={val} must be a non-negative number")
        elif key == "signed" and val == "any":
            opts[key] = "any"
        elif val.lower() in _BOOL:
            opts[key] = _BOOL[val.lower()]
        else:
            raise _bad(name, f"option {key}={val} must be 0 or 1")
    return kind, Path(os.path.expanduser(path_s)), opts


def _declared(name: str, path: Path, opts: dict):
    """The declared signedness pair (a_signed, w_signed), or "any"; options > sidecar PATH.json > EvoApprox name."""
    if opts.get("signed") == "any":
        return "any"
    if any(k in opts for k in ("signed", "a_signed", "w_signed")):
        base = opts.get("signed", False)
        return (bool(opts.get("a_signed", base)), bool(opts.get("w_signed", base)))
    side = path.with_name(path.name + ".json")
    if side.is_file():
        try:
            d = json.loads(side.read_text())
            if d.get("signed") == "any":
                return "any"
            base = bool(d.get("signed", False))
            return (bool(d.get("a_signed", base)), bool(d.get("w_signed", base)))
        except (ValueError, AttributeError) as exc:
            raise DseError(f"{side}: not a JSON object with 'signed' / 'a_signed' / 'w_signed' ({exc}); fix or remove it")
    stem = path.name.lower()
    if stem.startswith("mul8s"):
        return (True, True)
    return (False, False)


def _load_lut(name: str, path: Path, signed_any: bool) -> np.ndarray:
    if not path.is_file():
        raise DseError(f"multiplier '{name}': file {path} not found; give an existing .npy or .bin table")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            t = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DseError(f"{path}: not a readable .npy array ({exc}); save it with numpy.save")
        if t.shape != (256, 256) or t.dtype.kind not in "iu":
            raise DseError(f"{path}: expected an integer array of shape (256, 256) LUT[a, b], got {t.dtype} {t.shape}")
        t = t.astype(np.int64)
        if t.min() < -2 ** 31 or t.max() >= 2 ** 31:
            raise DseError(f"{path}: table values exceed int32")
        return t
    if suffix == ".bin":
        raw = path.read_bytes()
        if len(raw) != 131072:
            raise DseError(f"{path}: TFApprox .bin must be 65536 little-endian uint16 (131072 bytes), got {len(raw)} bytes")
        return np.frombuffer(raw, dtype="<i2" if signed_any else "<u2").reshape(256, 256).astype(np.int64)
    raise DseError(f"multiplier '{name}': {path} must be .npy (int [256, 256]) or TFApprox .bin")


def _signedness_str(pair) -> str:
    if pair == "any":
        return "any signedness"
    return " x ".join("signed" if s else "unsigned" for s in pair)


def _imported_builder(name: str, table: np.ndarray, declared, signmag: bool):
    if signmag:
        if declared != (False, False):
            raise DseError(f"multiplier '{name}': signmag=1 needs an unsigned x unsigned core table, declared "
                           f"{_signedness_str(declared)}; drop signmag or declare signed=0")

        def core(a, b):
            return table[a, b]
        return sign_magnitude(core)

    def build(a_signed: bool, w_signed: bool) -> np.ndarray:
        if declared != "any" and declared != (a_signed, w_signed):
            raise DseError(
                f"multiplier '{name}' is a {_signedness_str(declared)} table but is used with "
                f"{_signedness_str((a_signed, w_signed))} operands; declare the file's signedness "
                f"(?signed=0|1, ?a_signed=, ?w_signed=, or ?signed=any) or use ?signmag=1 for an unsigned core")
        return table
    return build


@lru_cache(maxsize=64)
def _imported_cached(name: str, stamp: tuple) -> Multiplier:
    kind, path, opts = _parse_import(name)
    declared = _declared(name, path, opts)
    signmag = bool(opts.get("signmag", False))
    if kind == "lut":
        signed_any = declared == "any" or any(declared)
        table = _load_lut(name, path, signed_any)
        src = f"imported table {path}"
    else:
        from dse.arith.cmodel import cmodel_table
        pair = (False, False) if declared == "any" else declared
        table = cmodel_table(path, opts.get("fn", "mul8"), *pair)
        src = f"C model {path} ({opts.get('fn', 'mul8')})"
    scheme = "sign_magnitude" if signmag else "table"
    params = {"path": str(path), "declared": "any" if declared == "any" else list(declared), "signed_scheme": scheme}
    desc = f"{src}, {_signedness_str(declared)}" + (" core, sign-magnitude signed operands" if signmag else "")
    return Multiplier(name=name, family=kind, rel_power=float(opts.get("power", float("nan"))), params=params, description=desc,
                      _builder=_imported_builder(name, table, declared, signmag))


def _imported(name: str) -> Multiplier:
    _, path, _ = _parse_import(name)
    try:
        st = path.stat()
        stamp = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        raise DseError(f"multiplier '{name}': file {path} not found; give an existing file") from None
    return _imported_cached(name, stamp)
