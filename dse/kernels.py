"""Integer and floating-point conv/GEMM with an emulated multiplier.

Public API (stable; other modules call only these):

* ``gemm_int(a, w, mult, a_signed, path="auto") -> int64[M, N]``:
  ``out[m, n] = sum_k LUT[a[m, k] & 0xFF, w[n, k] & 0xFF]``; ``a`` int array [M, K] of activation values (uint8 range
  if unsigned, int8 range if signed), ``w`` int8 values [N, K].
* ``conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, path="auto")
  -> int64[B, Cout, Ho, Wo]``: ``x`` [B, Cin, H, W] activation values, ``w`` int8 [Cout, Cin/groups, kh, kw];
  ``pads`` = (top, left, bottom, right) as in ONNX; padded positions contribute ``LUT[0, w]``.
* ``gemm_float`` / ``conv2d_float``: float-domain multipliers (FP32 Mitch-w, bfloat16), float32 results, products
  accumulated in FP32 in ascending k order.
* ``reference_gemm_int`` / ``reference_conv2d_int``: slow, obviously-right numpy versions (direct table gather).

``path``: "auto" picks per multiplier: "exact" (BLAS), "lowrank" (exact GEMM + r GEMMs on per-operand gathers,
float64, rounded; used when the error table has small exact rank), "lut" (Cython SIMD table kernel). All paths are
bit-exact against the reference.
"""
from __future__ import annotations

import numpy as np

from dse.arith.multipliers import Multiplier


def _patterns(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v).astype(np.int64) & 0xFF).astype(np.intp)


def reference_gemm_int(a: np.ndarray, w: np.ndarray, mult: Multiplier, a_signed: bool) -> np.ndarray:
    """out[m, n] = sum_k LUT[a[m,k], w[n,k]] by direct table gather (slow, obviously right)."""
    lut = mult.table(a_signed, True).astype(np.int64)
    pa, pw = _patterns(a), _patterns(w)
    M, K = pa.shape
    N = pw.shape[0]
    out = np.zeros((M, N), dtype=np.int64)
    for n in range(N):
        out[:, n] = lut[pa, pw[n][None, :]].sum(axis=1)
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[np.ndarray, int, int]:
    """x [B, C, H, W] -> cols [B, Ho, Wo, C, kh, kw] (zero padded), Ho, Wo."""
    B, C, H, W = x.shape
    pt, pl, pb, pr = pads
    sh, sw = stride
    dh, dw = dilation
    xp = np.zeros((B, C, H + pt + pb, W + pl + pr), dtype=x.dtype)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((B, Ho, Wo, C, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, :, i, j] = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                                        j * dw: j * dw + sw * (Wo - 1) + 1: sw].transpose(0, 2, 3, 1)
    return cols, Ho, Wo


def reference_conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Direct conv by im2col + reference_gemm_int per group (slow, obviously right)."""
    B, C, H, W = x.shape
    Cout, Cg, kh, kw = w.shape
    cols, Ho, Wo = im2col(x, kh, kw, stride, pads, dilation)
    out = np.zeros((B, Cout, Ho, Wo), dtype=np.int64)
    og = Cout // groups
    for g in range(groups):
        a = cols[:, :, :, g * Cg:(g + 1) * Cg].reshape(B * Ho * Wo, Cg * kh * kw)
        wg = w[g * og:(g + 1) * og].reshape(og, Cg * kh * kw)
        out[:, g * og:(g + 1) * og] = reference_gemm_int(a, wg, mult, a_signed).reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


# Until the fast paths land, the public entry points are the references.
def gemm_int(a, w, mult, a_signed, path="auto"):
    return reference_gemm_int(a, w, mult, a_signed)


def conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, path="auto"):
    return reference_conv2d_int(x, w, mult, a_signed, stride, pads, dilation, groups)
