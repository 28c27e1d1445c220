# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot loops of dse.kernels (imported only by dse/kernels.py as dse._kernels).

* ``lut_gemm(AT, Wp, lutT, planes, maxabs, isa=None) -> int64[N, M]``: ``out[n, m] = sum_k LUT[AT[k, m], Wp[n, k]]``
  (the AVX-512 path returns the sum of the offset table ``D`` -- see ``cy/lut_kernel.h`` -- the caller adds the
  per-row offsets). The GIL is released during the loop.
* ``fsum_seq(P) -> float32[R]``: sequential FP32 row sums in ascending k.
* ``isa()`` / ``isa_levels()`` / ``hardware_isa()``: which SIMD path is dispatched. The environment variable
  ``DSE_KERNEL_ISA`` (``scalar``, ``avx2``, ``avx512``) caps the level, e.g. to test the fallbacks.
"""
import os

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t

cdef extern from "lut_kernel.h" nogil:
    int dse_cpu_level()
    int dse_lut_gemm(int level, const uint8_t *AT, int64_t lda, const uint8_t *Wp, const int32_t *lutT,
                     const uint8_t *planes, int NP, int32_t maxabs, int64_t M, int64_t K, int64_t N, int64_t *out)
    void dse_fsum_seq(const float *P, int64_t R, int64_t K, float *out)

ISA_NAMES = ("scalar", "avx2", "avx512")
_HW_LEVEL = dse_cpu_level()


def hardware_isa():
    """Highest ISA level this CPU supports: 'scalar', 'avx2' or 'avx512' (AVX-512 F+BW+VBMI)."""
    return ISA_NAMES[_HW_LEVEL]


def _level(isa):
    if isa is None:
        isa = os.environ.get("DSE_KERNEL_ISA", "").strip().lower() or ISA_NAMES[_HW_LEVEL]
    if isa not in ISA_NAMES:
        raise ValueError(f"unknown kernel ISA '{isa}'; use one of {', '.join(ISA_NAMES)}")
    return min(ISA_NAMES.index(isa), _HW_LEVEL)


def isa(requested=None):
    """Name of the ISA level the LUT kernel dispatches to (requested/DSE_KERNEL_ISA capped by the hardware)."""
    return ISA_NAMES[_level(requested)]


def isa_levels():
    """ISA levels runnable on this machine, lowest first."""
    return list(ISA_NAMES[:_HW_LEVEL + 1])


def lut_gemm(const uint8_t[:, ::1] AT, const uint8_t[:, ::1] Wp, const int32_t[:, ::1] lutT,
             const uint8_t[:, :, ::1] planes, int32_t maxabs, isa=None):
    """out[n, m] = sum_k T[Wp[n, k], AT[k, m]] as int64[N, M].

    T is ``lutT`` (int32[256 w, 256 a]) on the scalar/AVX2 paths and the byte-plane offset table ``planes``
    (uint8[256 w, NP, 256 a]) on the AVX-512 path; ``maxabs`` = max |lutT| (sets the AVX2 int32 chunk length).
    Returns (out, level_name).
    """
    cdef int level = _level(isa)
    cdef int64_t K = AT.shape[0], M = AT.shape[1], N = Wp.shape[0]
    if Wp.shape[1] != K:
        raise ValueError(f"lut_gemm: AT has K={K} rows but Wp has {Wp.shape[1]} columns")
    if lutT.shape[0] != 256 or lutT.shape[1] != 256 or planes.shape[0] != 256 or planes.shape[2] != 256:
        raise ValueError("lut_gemm: tables must be [256, 256] and [256, NP, 256]")
    cdef int NP = planes.shape[1]
    if level == 2 and not 1 <= NP <= 4:
        raise ValueError(f"lut_gemm: {NP} byte planes, expected 1..4")
    out = np.empty((N, M), dtype=np.int64)
    cdef int64_t[:, ::1] o = out
    cdef int rc = 0
    if M == 0 or N == 0:
        return out, ISA_NAMES[level]
    if K == 0:
        out[:] = 0
        return out, ISA_NAMES[level]
    with nogil:
        rc = dse_lut_gemm(level, &AT[0, 0], M, &Wp[0, 0], &lutT[0, 0], &planes[0, 0, 0], NP, maxabs, M, K, N,
                          &o[0, 0])
    if rc != 0:
        raise RuntimeError("lut_gemm: dispatch failed")
    return out, ISA_NAMES[level]


def fsum_seq(const float[:, ::1] P):
    """Row sums of float32[R, K] accumulated sequentially in FP32 in ascending k (GIL released)."""
    cdef int64_t R = P.shape[0], K = P.shape[1]
    out = np.zeros(R, dtype=np.float32)
    cdef float[::1] o = out
    if R == 0 or K == 0:
        return out
    with nogil:
        dse_fsum_seq(&P[0, 0], R, K, &o[0])
    return out
