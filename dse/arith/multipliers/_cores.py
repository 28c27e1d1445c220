"""Unsigned arithmetic cores: int64 magnitudes (broadcastable arrays, 0..255) -> int64 products (design.md)."""
from __future__ import annotations

import numpy as np


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
