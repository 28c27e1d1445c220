"""Floating-point multiplier models, elementwise and vectorized over numpy float32 arrays (broadcasting).

* ``bf16_round(x)``: float32 -> nearest bfloat16 (round to nearest, ties to even), returned as float32. Overflow
  rounds to +-inf, NaN stays NaN (quietened), subnormals are rounded like any other value (bfloat16 has them).
* ``bf16_product(x, y)``: ``bf16_round(x) * bf16_round(y)`` in float32 (the 8-bit significand product is exact in FP32;
  only over/underflow rounds, as IEEE FP32 does).
* ``fp32_mitch_w(x, y, w)``: FP32 product whose significand product ``(1+f1)(1+f2)`` is replaced by Mitch-w on the
  23-bit fractions: each fraction keeps its top w-2 bits plus a constant 1 bit below them (unbias),
  ``L = f1' + f2'``; significand ``1 + L`` if ``L < 1`` else ``L`` with the exponent incremented (Mitchell's
  antilog). Exponents add exactly; sign = xor. FTZ/DAZ: zero and subnormal operands count as zero, results below the
  smallest normal (2^-126) are flushed to (signed) zero; results above the largest finite value are +-inf.
  Specials follow IEEE: NaN in -> NaN; inf * finite non-zero -> +-inf; inf * 0 (incl. a flushed subnormal) -> NaN.
  The result is exact in float32 (the significand has at most w <= 24 bits), so no further rounding happens.
"""
from __future__ import annotations

import numpy as np

_MANT_BITS = 23


def _bits(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)


def bf16_round(x) -> np.ndarray:
    """Round float32 values to bfloat16 (RNE); float32 result of the same shape."""
    x = np.asarray(x, dtype=np.float32)
    b = _bits(x)
    nan = np.isnan(x)
    r = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    r = np.where(nan, (b | 0x00400000) & 0xFFFF0000, r)
    return (r & 0xFFFFFFFF).astype(np.uint32).view(np.float32).reshape(x.shape)


def bf16_product(x, y) -> np.ndarray:
    """bfloat16 operands, exact product in FP32."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.multiply(bf16_round(x), bf16_round(y), dtype=np.float32)


def fp32_mitch_w(x, y, w: int) -> np.ndarray:
    """Elementwise FP32 product with Mitch-w significand multiplication (module docstring); float32 result."""
    if not 3 <= int(w) <= 24:
        raise ValueError(f"fp32_mitch_w: w={w} must be in 3..24")
    w = int(w)
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))
    bx, by = _bits(x), _bits(y)
    sign = (bx >> 31) ^ (by >> 31)
    ex, ey = (bx >> 23) & 0xFF, (by >> 23) & 0xFF
    keep = _MANT_BITS - (w - 2)
    lx = (((bx & 0x7FFFFF) >> keep) << 1) | 1  # f' * 2^(w-1)
    ly = (((by & 0x7FFFFF) >> keep) << 1) | 1
    one = 1 << (w - 1)
    s = lx + ly
    carry = s >= one
    mant = np.where(carry, s, one + s)  # significand * 2^(w-1), in [2^(w-1), 2^w)
    e = (ex - 127) + (ey - 127) + carry.astype(np.int64)  # unbiased exponent of the result
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        mag = np.ldexp(mant.astype(np.float64), np.clip(e, -200, 200) - (w - 1))
        mag = np.where(e < -126, 0.0, np.where(e > 127, np.inf, mag))
        zero = (ex == 0) | (ey == 0)
        inf = ((ex == 255) & ((bx & 0x7FFFFF) == 0)) | ((ey == 255) & ((by & 0x7FFFFF) == 0))
        nan = np.isnan(x) | np.isnan(y) | (inf & zero)
        mag = np.where(zero, 0.0, mag)
        mag = np.where(inf, np.inf, mag)
        out = np.where(sign == 1, -mag, mag)
        out = np.where(nan, np.nan, out)
        return out.astype(np.float32)
