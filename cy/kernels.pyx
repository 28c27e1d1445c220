# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot loops of dse.kernels (imported only by dse/kernels.py as dse._kernels).

* ``lut_gemm(AT, Wp, lutT, planes, maxabs, isa=None, threads=1) -> int64[N, M]``: ``out[n, m] = sum_k
  LUT[AT[k, m], Wp[n, k]]`` (the AVX-512 path returns the sum of the offset table ``D`` -- see ``cy/lut_kernel.h`` --
  the caller adds the per-row offsets).
* ``dw_conv(x, wp, mode, lutT, ftab, gtab, bound, stride, pads, dilation, out_hw, a_signed, isa=None, threads=1,
  scaling=None) -> int64[B, Cout, Ho, Wo]`` (float32 with ``scaling``): direct depthwise convolution (table lookups,
  or products of the exact / rank-1 factors), no im2col; AVX2 over 8 output positions.
* ``quantize(x, scale, signed, threads=1)`` / ``dequantize(acc, a_scale, w_scale, bias, threads=1, act=...,
  quant=...)``: the FxP8 activation quantizer and the layer output scaling of dse.quant (with the layer's Relu/Clip
  fused in, and optionally the next layer's input quantization), one SIMD pass each.
* Every loop releases the GIL and runs on ``threads`` OpenMP threads (work split over output rows/planes; each output
  is computed by one thread in a fixed order, so results do not depend on the thread count).
* ``int_gemm(AT, Wp, fa, a_mode, gw, S, out, isa=None, threads=1, vnni=None)``: exact integer GEMM on int16 operand
  values (``cy/int_gemm.h``): ``out[b, n, s] = sum_kk A'[kk, b * img + s] W'[n, kk]`` with per-pattern factor
  tables; operands that fit bytes run on the VNNI micro-kernel where the CPU has it (``vnni_levels()``; the
  environment variable ``DSE_KERNEL_VNNI=0`` or ``vnni=False`` keeps the int16 one).
* ``fsum_seq(P) -> float32[R]``: sequential FP32 row sums in ascending k.
* ``max_pool(x, kernel, stride, pads, dilation, out_hw, isa=None, threads=1) -> float32[B, C, Ho, Wo]``: 2-D max
  pooling, numpy's running maximum over each window's taps (``cy/glue.h``); AVX-512 / AVX2 for strides 1 and 2.
* ``add_act(a, b, act="none", lo, hi, quant=None, isa=None, threads=1) -> (y, q or None)``: a + b with a Relu/Clip
  and optionally the next layer's input patterns in one pass.
* ``mul_planes_quantize(x, s, qs, signed, isa=None, threads=1) -> uint8``: the input patterns of the product of each
  plane of x and its own scalar (squeeze-and-excitation's scale), without the float32 product.
* ``float_sigmoid(x, out, times_x=0, q=None, qs, q_signed)`` / ``float_hardsigmoid(x, out, alpha, beta, times_x=0,
  q=None, qs, q_signed)``: Sigmoid (SiLU) and HardSigmoid (HardSwish) of float32 by numpy's own float32 ufunc loops,
  chunk by chunk in cache (the same bits), optionally quantized in the same pass (the float32 result kept or not).
* ``int_gemm_batch`` / ``rows_gemm_batch``: L independent ``int_gemm`` / ``rows_gemm`` calls in one (an activation
  matmul's images x heads).
* ``isa()`` / ``isa_levels()`` / ``hardware_isa()``: which SIMD path is dispatched. The environment variable
  ``DSE_KERNEL_ISA`` (``scalar``, ``avx2``, ``avx512``) caps the level, e.g. to test the fallbacks.
"""
import os

import numpy as np

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uintptr_t
from libc.string cimport memcpy, memset
from libc.math cimport fabs

cdef extern from "lut_kernel.h" nogil:
    ctypedef struct dse_scaling:
        double sa
        const float *sw
        const float *bias
        int act
        float lo, hi
        int quant, qlo, qhi
        float qs
        const float *add
        const float *base
        uint8_t *qout
        const float *qf
        int silu
        const void *loops
        int stream
        int drop
    void dse_scaling_qf(const dse_scaling *sc, int64_t N, float *qf)
    int dse_qfast_level(int level)
    int dse_cpu_level()
    int DSE_RT_NT, DSE_RT_MB, DSE_ISA_AVX512, DSE_ISA_AVX2, DSE_ISA_SCALAR
    int dse_lut_gemm(int level, const uint8_t *AT, int64_t lda, const uint8_t *Wp, const int32_t *lutT,
                     const uint8_t *planes, int NP, int32_t maxabs, int64_t M, int64_t K, int64_t N, int64_t *out,
                     int nt)
    int dse_lutb_batch(int level, const uint8_t *a, const uint8_t *b, int64_t L, int64_t M, int64_t K, int64_t N,
                       int sel_is_m, const uint8_t *planes, int NP, const int32_t *off, const int32_t *T32,
                       int64_t *out64,
                       const dse_scaling *sc, float *outs, int nt)
    int dse_rows_gemm(int level, const uint8_t *I, int64_t ldi, const uint8_t *S, const uint16_t *D, int64_t R,
                      const int32_t *off, int64_t M, int64_t K, int64_t N, int64_t *out, int64_t P, int64_t ldb,
                      int sel_is_m, int add, const dse_scaling *sc, void *outs, int nt)
    int dse_rows_batch(int level, const uint8_t *a, const uint8_t *b, const uint8_t *xcls, const uint16_t *D,
                       int64_t R, const int32_t *off, int64_t L, int64_t M, int64_t K, int64_t N, int sel_is_m,
                       int64_t *out64, int add, const dse_scaling *sc, float *outs, int nt)
    int dse_dw_conv(int level, const uint8_t *x, int64_t B, int64_t C, int64_t H, int64_t W, const uint8_t *wp,
                    int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                    int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const int32_t *lutT, const int16_t *ftab,
                    const int16_t *gtab, int64_t bound, int mode, int a_signed, const uint8_t *xtab,
                    int64_t *out, const dse_scaling *sc, void *outs, int64_t block, int vnni, int nt)
    void dse_quantize(int level, const float *x, int64_t n, float s, int lo, int hi, uint8_t *q, int nt)
    void dse_quantize_seq(int level, const float *x, int64_t n, float s, int lo, int hi, uint8_t *q)
    void dse_quantize_strided(int level, const float *x, int nd, const int64_t *sh, const int64_t *st, float s,
                              int lo, int hi, uint8_t *q, int nt)
    void dse_dequantize(int level, const int64_t *acc, int64_t R, int64_t N, int64_t S, const dse_scaling *sc,
                        void *y, int small, int nt)
    void dse_fsum_seq(const float *P, int64_t R, int64_t K, float *out)
    void dse_translate(int level, const uint8_t *s, int64_t n, const uint8_t *tab, uint8_t *d)
    void dse_im2col(int level, const uint8_t *x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                    int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                    uint8_t *cols, int nt)

cdef extern from "float_gemm.h" nogil:
    ctypedef struct dse_fg_cols:
        int conv
        const float *src
        int64_t sk, sc, gs
        int64_t C, H, W, Cg, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo
    ctypedef struct dse_fg_out:
        float *out
        int64_t gs, rs, P, img
        const float *bias
        int bias_rows
        int64_t bgs
    int dse_fg_threads(int nt, double work)
    int dse_float_gemm(int level, int64_t G, int64_t nr, int64_t K, int64_t ncol, const float *R, int64_t rld,
                       int64_t rgs, const dse_fg_cols *S, const dse_fg_out *O, int nt)
    int dse_float_dwconv(int level, const float *x, int64_t B, int64_t C, int64_t H, int64_t W, const float *w,
                         int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                         int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const float *bias, float *out, int nt)

cdef extern from "glue.h" nogil:
    void dse_max_pool(int level, const float *x, int64_t P, int64_t H, int64_t W, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho,
                      int64_t Wo, float *out, int nt)
    int dse_add_act_t(int level, const float *a, const float *bt, int64_t B, int64_t R, int64_t C, int b_first,
                      int act, float lo, float hi, float *y, uint8_t *q, float qs, int qlo, int qhi, int nt)
    void dse_add_act(int level, const float *a, const float *b, int64_t n, int act, float lo, float hi, float *y,
                     uint8_t *q, float qs, int qlo, int qhi, int nt)
    void dse_global_avg_pool(const float *x, int64_t P, int64_t n, float *out, int nt)
    ctypedef struct dse_np_loop:
        pass
    void dse_softmax_rows(int level, const float *x, int64_t R, int64_t n, float *out, const dse_np_loop *lp,
                          int nt, int scaled, float scale)
    void dse_sigmoid_chunk(int level, const dse_np_loop *lp, const float *x, float *o, int64_t m, int times_x)
    int dse_sigmoid_own
    int dse_hardsigmoid_own
    int dse_hardsigmoid_chunk_avx2(const float *x, float *o, int64_t m, float alpha, float beta, int times_x)
    int dse_cpu_fma()
    int DSE_SIGMOID_CHUNK
    void dse_layernorm_rows(int level, const float *x, int64_t R, int64_t n, const float *scale, const float *bias,
                            float eps, float *out, const dse_np_loop *lp, int nt)
    void dse_erf_far(int level, const double *a, double *zw, int64_t m)
    float dse_erf_near1(float v)
    int64_t dse_erf_near(int level, const float *t, float *o, int64_t m, int *far)
    void dse_mul_planes_quant(int level, const float *x, int64_t P, int64_t n, const float *s, float qs, int qlo,
                              int qhi, uint8_t *q, int nt)

cdef extern from "int_gemm.h" nogil:
    int dse_int_gemm(int level, const uint8_t *AT, int64_t lda, int64_t aimg, int64_t ld_aimg, const uint8_t *Wp,
                     int64_t K, int64_t M, int64_t N,
                     int t, const int16_t *fa, int mode, const int16_t *gw, int64_t S, int64_t *out, int64_t img,
                     int64_t ld_img, int64_t ld_n, const dse_scaling *sc, void *outs, int vnni, int nt,
                     const dse_ig_conv *cv, const int64_t *addend, int64_t add_ld_img, int64_t add_ld_n)
    ctypedef struct dse_i2c_plan:
        pass
    ctypedef struct dse_bc_pool:
        int64_t kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo
        float *out
        uint8_t *q
        float qs
        int qlo, qhi
    ctypedef struct dse_ig_conv:
        const uint8_t *x
        int64_t ld_b, HW, kw, Ho, Wo
        dse_i2c_plan i2c
        int64_t H, W, kh, sh, sw, pt, pl, dh, dw
        int bcast
        const dse_bc_pool *pool
        const uint8_t *xlo
        const uint8_t *xhi
    int dse_i2c_plan_make(dse_i2c_plan *P, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                          int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, int whole)
    void dse_i2c_free(dse_i2c_plan *P)
    int dse_ig_fits32(int64_t K, int t, int64_t S)
    int dse_cpu_vnni(int level)

ISA_NAMES = ("scalar", "avx2", "avx512")
INT_GEMM_MODES = ("table", "u8", "s8")
ACTS = ("none", "relu", "clip")
DW_MODES = ("lut", "values", "factor", "rowsum")
_HW_LEVEL = dse_cpu_level()


def _last_level_cache() -> int:
    """Bytes of one core's last-level cache as Linux describes it (sysfs; 32 MiB where it does not say)."""
    import glob

    sizes = []
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(d + "/level") as f:
                level = int(f.read())
            with open(d + "/size") as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        # the suffix without a negative index: this module compiles with wraparound=False
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[len(text) - 1:], 1)
        try:
            sizes.append((level, int(text.rstrip("KMG")) * unit))
        except ValueError:
            continue
    return max(sizes)[1] if sizes else 32 << 20


# A float32 output (a fused Add's sum, or a layer's float32 output) of at least this many bytes is written by the
# integer GEMM's output step with non-temporal stores where 64-byte aligned, at the avx512 level (dse_scaling.stream):
# it cannot stay in the cache until its reader comes, and the stores then neither read its lines first nor evict the
# next layer's input (ResNet-50 224: benchmarks/RESULTS.md).
STREAM_MIN_BYTES = _last_level_cache()


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


def vnni_levels():
    """ISA levels at which this CPU has the integer GEMM's VNNI micro-kernel (avx512: AVX512-VNNI, avx2: AVX-VNNI)."""
    return [n for i, n in enumerate(ISA_NAMES[:_HW_LEVEL + 1]) if dse_cpu_vnni(i)]


def quad_levels():
    """ISA levels at which :func:`int_gemm` runs calls whose operand values fit bytes on its byte-quad kernels ("+vnni"
    in its answer): those of :func:`vnni_levels`, and avx2 on every AVX2 CPU (without AVX-VNNI: vpmaddubsw with the
    weight pairs split at its int16 bound, ``cy/int_gemm.h``)."""
    return [n for n in ISA_NAMES[1:_HW_LEVEL + 1] if n == "avx2" or n in vnni_levels()]


def vnni_enabled():
    """Whether :func:`int_gemm` may use its VNNI micro-kernel by default: yes unless the environment variable
    ``DSE_KERNEL_VNNI`` is 0/off/false/no (e.g. to measure or test the int16 kernel at the same ISA level)."""
    return os.environ.get("DSE_KERNEL_VNNI", "").strip().lower() not in ("0", "off", "false", "no")


def lut_gemm(const uint8_t[:, ::1] AT, const uint8_t[:, ::1] Wp, const int32_t[:, ::1] lutT,
             const uint8_t[:, :, ::1] planes, int32_t maxabs, isa=None, int threads=1):
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
                          &o[0, 0], max(1, threads))
    if rc != 0:
        raise RuntimeError("lut_gemm: dispatch failed")
    return out, ISA_NAMES[level]


def rows_gemm(const uint8_t[:, ::1] I, const uint8_t[:, ::1] S, const uint16_t[:, ::1] D, const int32_t[::1] off,
              isa=None, int threads=1, out=None, int64_t offset=0, int64_t P=0, int64_t ldb=0,
              bint sel_is_m=False, bint add=False, scaling=None):
    """out[n, m] = sum_k D[S[n, k], I[k, m]] + off[S[n, k]] by per-k row tables (see ``cy/lut_kernel.h``); AVX2 adds
    at level avx2 and above, portable code at scalar. Returns (int64[N, M] or None, level_name).

    ``D`` uint16[256, R], R a multiple of 16 in [16, 256]: one column per index pattern (R = 256), or per class of
    index patterns, ``I`` then holding the classes (every entry < R).

    Without ``out`` the result is a new int64[N, M]. With ``out`` (a flat int64 buffer) element (n, m) of the GEMM is
    written to ``out[offset + (m // P) * ldb + n * P + m % P]`` and None is returned; ``sel_is_m``: the selector rows
    ``S`` are the GEMM's m positions and the index columns of ``I`` its n channels (the roles swapped). ``add``: the
    GEMM is added to what ``out`` holds there (else it overwrites it). Tables whose entries are all < 256 take the
    AVX2 adds without high-byte sums. With ``scaling`` (as :func:`dw_conv` takes it, one entry per channel n; K >= 1,
    no ``add``) the result (new [N, M], or ``out`` flat) is float32, or uint8 with a quant: the output of
    :func:`dequantize` on the sums, scaled by the kernel from each finished tile."""
    cdef int level = _level(isa)
    cdef int64_t K = I.shape[0], nI = I.shape[1], nS = S.shape[0]
    cdef int64_t Mg = nS if sel_is_m else nI, Ng = nI if sel_is_m else nS
    if S.shape[1] != K:
        raise ValueError(f"rows_gemm: I has K={K} rows but S has {S.shape[1]} columns")
    cdef int64_t R = D.shape[1]
    if D.shape[0] != 256 or off.shape[0] != 256 or R % 16 or not 16 <= R <= 256:
        raise ValueError("rows_gemm: D must be [256, R] (R a multiple of 16, 16..256) and off [256]")
    if R < 256 and I.shape[0] and I.shape[1] and np.asarray(I).max() >= R:
        raise ValueError(f"rows_gemm: index entries must be < {R} (the classes of D's columns)")
    cdef dse_scaling sc
    if scaling is not None:
        keep = _scaling(&sc, Ng, tuple(scaling), level, 2)
        if add or K == 0:
            raise ValueError("rows_gemm: a scaled call needs K >= 1 and no add")
    dtype = np.dtype(np.int64 if scaling is None else _scaled_dtype(&sc))
    res = None
    if out is None and add:
        raise ValueError("rows_gemm: add=True needs an output buffer")
    if out is None:
        res = np.empty((Ng, Mg), dtype=dtype)
        out, offset, P, ldb = res.reshape(-1), 0, max(Mg, 1), 0
    elif out.ndim != 1 or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"rows_gemm: out must be a flat C-contiguous {dtype.name} buffer")
    elif Mg and Ng and (P < 1 or offset < 0 or ldb < 0 or
                        offset + ((Mg - 1) // P) * ldb + (Ng - 1) * P + P - 1 >= out.shape[0]):
        raise ValueError("rows_gemm: the output layout does not fit the output buffer")
    if nI == 0 or nS == 0:
        return res, ISA_NAMES[level]
    cdef size_t addr = out.ctypes.data + offset * dtype.itemsize
    if scaling is not None and Mg and Ng:
        _check_within(keep, addr, ((Mg - 1) // P) * ldb + (Ng - 1) * P + P - 1)
    cdef int64_t *o = <int64_t *>addr
    cdef int64_t m, n
    cdef int rc = 0
    if K == 0:
        if add:
            return res, ISA_NAMES[level]
        for m in range(Mg):
            for n in range(Ng):
                o[(m // P) * ldb + n * P + m % P] = 0
        return res, ISA_NAMES[level]
    with nogil:
        rc = dse_rows_gemm(level, &I[0, 0], nI, &S[0, 0], &D[0, 0], R, &off[0], nI, K, nS,
                           NULL if scaling is not None else o, P, ldb, 1 if sel_is_m else 0, 1 if add else 0,
                           NULL if scaling is None else &sc, <void *>addr, max(1, threads))
    if rc != 0:
        raise MemoryError("rows_gemm: scratch buffers could not be allocated")
    return res, ISA_NAMES[level]


def rows_gemm_batch(const uint8_t[:, :, ::1] a, const uint8_t[:, :, ::1] b, const uint16_t[:, ::1] D,
                    const int32_t[::1] off, cls, out, isa=None, int threads=1, bint sel_is_m=False, bint add=False,
                    out64=None, scaling=None):
    """L independent GEMMs ``out[l, m, n] = sum_k T[a[l, m, k], b[l, k, n]]`` (an activation matmul's heads x images)
    on the rows kernel in one call, the operands in their own layouts (``cy/lut_kernel.h`` dse_rows_batch: each GEMM
    as :func:`rows_gemm` computes it, the same kernel instance and sums): with ``sel_is_m`` a's rows select and b
    indexes, else b's columns select and a indexes; T[s, i] = D[s, c(i)] + off[s] with c = ``cls`` (uint8[256]: the
    classes of the index operand's patterns, all < R) or None (every pattern its own: R = 256). ``out`` int64 [L, M,
    N] (``add``: added to what it holds); with ``scaling`` (one per-tensor entry, float32 output: no act, quant or
    add) float32 [L, M, N] of the sums scaled as ``scale_accumulators`` scales them, the sums first added to
    ``out64`` (int64 [L, M, N], with ``add``) when given. Returns the ISA level name."""
    cdef int level = _level(isa)
    cdef int64_t L = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2], R = D.shape[1]
    cdef const uint8_t[::1] cv
    cdef const uint8_t *cp = NULL
    cdef int64_t[:, :, ::1] o64
    cdef float[:, :, ::1] o32
    cdef dse_scaling sc
    cdef tuple keep
    if b.shape[0] != L or b.shape[1] != K or out.shape[0] != L or out.shape[1] != M or out.shape[2] != N:
        raise ValueError(f"rows_gemm_batch: a {tuple(a.shape)[:3]}, b {tuple(b.shape)[:3]} and out "
                         f"{tuple(out.shape)[:3]} must be [L, M, K], [L, K, N] and [L, M, N]")
    if D.shape[0] != 256 or off.shape[0] != 256 or R % 16 or not 16 <= R <= 256:
        raise ValueError("rows_gemm_batch: D must be [256, R] (R a multiple of 16, 16..256) and off [256]")
    if cls is not None:
        cv = cls
        if cv.shape[0] != 256 or np.asarray(cls).max() >= R:
            raise ValueError(f"rows_gemm_batch: cls must map 256 patterns to classes < {R}")
        cp = &cv[0]
    elif R < 256:
        raise ValueError("rows_gemm_batch: a table of fewer than 256 index columns needs the classes cls")
    if scaling is None:
        if out64 is not None:
            raise ValueError("rows_gemm_batch: out64 goes with a scaling")
        o64 = out
    else:
        o32 = out
        if out64 is not None:
            o64 = out64
            if o64.shape[0] != L or o64.shape[1] != M or o64.shape[2] != N or not add:
                raise ValueError("rows_gemm_batch: out64 must be [L, M, N] and added to")
        elif add:
            raise ValueError("rows_gemm_batch: a scaled call adds to out64 only")
        keep = _scaling(&sc, 1, tuple(scaling), level)
        if sc.quant or sc.add != NULL or sc.act != 0:
            raise ValueError("rows_gemm_batch: a scaled call writes float32 (no act, quant or add)")
    if L == 0 or M == 0 or N == 0:
        return ISA_NAMES[level]
    if K == 0:
        raise ValueError("rows_gemm_batch: K must be >= 1")
    cdef int rc = 0
    with nogil:
        rc = dse_rows_batch(level, &a[0, 0, 0], &b[0, 0, 0], cp, &D[0, 0], R, &off[0], L, M, K, N,
                            1 if sel_is_m else 0, NULL if scaling is not None and out64 is None else &o64[0, 0, 0],
                            1 if add else 0, &sc if scaling is not None else NULL,
                            NULL if scaling is None else &o32[0, 0, 0], max(1, threads))
    if rc != 0:
        raise MemoryError("rows_gemm_batch: scratch buffers could not be allocated")
    return ISA_NAMES[level]


def lutb_gemm_batch(const uint8_t[:, :, ::1] a, const uint8_t[:, :, ::1] b, const uint8_t[:, :, ::1] planes,
                    const int32_t[::1] off, const int32_t[:, ::1] T32, bint sel_is_m, out, isa=None, int threads=1,
                    scaling=None):
    """L independent small table GEMMs in one call (an activation matmul's heads x images; ``cy/lut_kernel.h``
    dse_lutb_batch; VBMI byte permutes of the planes at the avx512 level, scalar lookups in T32 below it):
    ``out[l, m, n] = sum_k T[a[l, m, k], b[l, k, n]]``
    with T[s, i] = ``planes`` (uint8[256, NP, 256], NP 1..4: byte p of T - off[s]) + ``off[s]``, where s is the
    selecting operand's pattern: a's (``sel_is_m``) or b's, i the other's; ``T32`` int32[256 s, 256 i] the same table
    whole (below the avx512 level every product, at it the few positions past the last whole block of 64 are looked
    up in it). The caller guarantees
    K max |T| < 2^31 (int32 sums). ``out`` int64 [L, M, N]; with ``scaling`` (one per-tensor entry, float32 output: no
    act, quant or add) float32 [L, M, N] of the sums scaled as ``scale_accumulators`` scales them. Returns the ISA
    level name."""
    cdef int level = _level(isa)
    cdef int64_t L = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2]
    cdef int NP = planes.shape[1]
    cdef int64_t[:, :, ::1] o64
    cdef float[:, :, ::1] o32
    cdef dse_scaling sc
    cdef tuple keep
    if b.shape[0] != L or b.shape[1] != K or out.shape[0] != L or out.shape[1] != M or out.shape[2] != N:
        raise ValueError(f"lutb_gemm_batch: a {tuple(a.shape)[:3]}, b {tuple(b.shape)[:3]} and out "
                         f"{tuple(out.shape)[:3]} must be [L, M, K], [L, K, N] and [L, M, N]")
    if planes.shape[0] != 256 or planes.shape[2] != 256 or not 1 <= NP <= 4 or off.shape[0] != 256 or \
            T32.shape[0] != 256 or T32.shape[1] != 256:
        raise ValueError("lutb_gemm_batch: planes must be [256, NP, 256] (NP 1..4), off [256] and T32 [256, 256]")
    if scaling is None:
        o64 = out
    else:
        o32 = out
        keep = _scaling(&sc, 1, tuple(scaling), level)
        if sc.quant or sc.add != NULL or sc.act != 0:
            raise ValueError("lutb_gemm_batch: a scaled call writes float32 (no act, quant or add)")
    if L == 0 or M == 0 or N == 0:
        return ISA_NAMES[level]
    if K == 0:
        raise ValueError("lutb_gemm_batch: K must be >= 1")
    cdef int rc = 0
    with nogil:
        rc = dse_lutb_batch(level, &a[0, 0, 0], &b[0, 0, 0], L, M, K, N, 1 if sel_is_m else 0, &planes[0, 0, 0], NP,
                            &off[0], &T32[0, 0], &o64[0, 0, 0] if scaling is None else NULL,
                            &sc if scaling is not None else NULL, NULL if scaling is None else &o32[0, 0, 0],
                            max(1, threads))
    if rc != 0:
        raise MemoryError("lutb_gemm_batch: scratch buffers could not be allocated")
    return ISA_NAMES[level]


def translate(const uint8_t[::1] x, const uint8_t[::1] table, isa=None):
    """uint8 array y[i] = table[x[i]] (``table`` 256 entries), one pass without the GIL (VBMI byte permutes at the
    avx512 level)."""
    if table.shape[0] != 256:
        raise ValueError("translate: the table must have 256 entries")
    cdef int level = _level(isa)
    cdef int64_t n = x.shape[0]
    out = np.empty(n, dtype=np.uint8)
    cdef uint8_t[::1] y = out
    if n:
        with nogil:
            dse_translate(level, &x[0], n, &table[0], &y[0])
    return out


def images_T(const uint8_t[:, :, ::1] x, const uint8_t[::1] table=None, isa=None):
    """The 1x1 conv GEMM operand uint8[C, B * P] of a batch x [B, C, P]: entry (c, b * P + p) = x[b, c, p], or
    ``table[x[b, c, p]]`` with a table (256 entries: e.g. the rows kernel's activation classes), one pass without the
    GIL (numpy's transposing copy walks runs of P bytes one call each, slow for the small planes of deep layers); at
    the avx2 and avx512 levels a table is applied afterwards to the whole operand (dse_translate: vpshufb / VBMI byte
    permutes)."""
    if table is not None and table.shape[0] != 256:
        raise ValueError("images_T: the table must have 256 entries")
    cdef int level = _level(isa)
    cdef int64_t B = x.shape[0], C = x.shape[1], P = x.shape[2], b, c, i
    out = np.empty((C, B * P), dtype=np.uint8)
    cdef uint8_t[:, ::1] o = out
    if out.size == 0:
        return out
    with nogil:
        for b in range(B):
            for c in range(C):
                if table is None or level >= 1:
                    memcpy(&o[c, b * P], &x[b, c, 0], P)
                else:
                    for i in range(P):
                        o[c, b * P + i] = table[x[b, c, i]]
        if table is not None and level >= 1:
            dse_translate(level, &o[0, 0], C * B * P, &table[0], &o[0, 0])
    return out


def im2col(const uint8_t[:, :, :, ::1] x, int64_t kh, int64_t kw, stride, pads, dilation, out_hw, int threads=1,
           isa=None):
    """The conv GEMM operand uint8[C * kh * kw, B * Ho * Wo] of 8-bit patterns x [B, C, H, W]: row (c, i, j)
    row-major, column (b, y, q), entry xpad[b, c, y * sh + i * dh, q * sw + j * dw] with ``pads`` = (top, left) zero
    padding (the end padding follows from ``out_hw`` = (Ho, Wo)); no GIL, ``threads`` OpenMP threads; at the ``isa``
    level avx512 (default: DSE_KERNEL_ISA / the hardware's) VBMI byte permutes where the geometry fits them."""
    cdef int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int64_t sh = stride[0], sw = stride[1], pt = pads[0], pl = pads[1], dh = dilation[0], dw = dilation[1]
    cdef int64_t Ho = out_hw[0], Wo = out_hw[1]
    cdef int level = _level(isa)
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, Ho, Wo) < 0:
        raise ValueError("im2col: kernel, stride and dilation must be >= 1, padding and output size >= 0")
    out = np.empty((C * kh * kw, B * Ho * Wo), dtype=np.uint8)
    cdef uint8_t[:, ::1] o = out
    if out.size == 0:
        return out
    with nogil:
        dse_im2col(level, &x[0, 0, 0, 0], B, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, &o[0, 0], max(1, threads))
    return out


def dw_conv(const uint8_t[:, :, :, ::1] x, const uint8_t[:, :, ::1] wp, mode, const int32_t[:, ::1] lutT,
            const int16_t[::1] ftab, const int16_t[::1] gtab, int64_t bound, stride, pads, dilation, out_hw,
            bint a_signed, isa=None, int threads=1, scaling=None, const uint8_t[::1] xtab=None, int64_t block=4096,
            vnni=None, out=None):
    """Depthwise conv: out[b, o] = sum_ij T(xpad[b, o // (Cout // C)], wp[o]) as int64[B, Cout, Ho, Wo].

    ``x`` uint8[B, C, H, W] activation patterns, ``wp`` uint8[Cout, kh, kw] weight patterns (Cout a multiple of C),
    ``pads`` = (top, left) (the end padding follows from ``out_hw``). ``mode`` (DW_MODES): "lut", T = ``lutT[w, a]``;
    "values", T = gtab[w] * (value of a, signed per ``a_signed``): the exact product, or a rank-1 table whose
    activation factor is the value; "factor", T = gtab[w] * ftab[a] (a rank-1 table; ftab looked up once per input
    element); "rowsum", T = ``lutT[w, a]`` as "lut", with one lookup per group of taps that read the same phase
    plane row and three column offsets in packed columns (every column must span < 2^16; at most 32 such groups,
    e.g. 10 for 5x5 at stride 1 or 2; a 3x3 or 5x5 kernel at stride 1 packs its rows instead, one lookup per kernel
    column (and three rows), each input byte indexed once for its columns). ``bound`` >= every |T| decides whether the AVX2 int32 sums are exact (else int64). At level avx2 and
    above: "lut" as 8-output scalar lookups in the tap's column (faster than AVX2 gathers), products as AVX2
    vectors (AVX-512 at level avx512, ``xtab`` applied with VBMI byte permutes; "rowsum" there on planes of >= 64
    positions: each tap column's low and high byte planes looked up 64 outputs at a time with VBMI permutes);
    portable int64 code at scalar. With ``scaling`` = (a_scale, w_scale float32[Cout],
    bias float32[Cout], act, lo, hi, quant) the result is the output of :func:`dequantize` on those sums instead
    (float32, or uint8 patterns with a ``quant``), applied to each output plane while its sums are in cache. With
    ``xtab`` (uint8[256]) every input pattern a, the padding's 0 included, is read as ``xtab[a]`` (e.g. a rank-1
    table's activation factor F(a) as the pattern of an 8-bit value, for mode "values"). The planes of a channel are
    taken in blocks of images of about ``block`` positions of the padded planes (at least one image), one run of the
    kernel over each block. ``vnni`` (default:
    :func:`vnni_enabled`): "values" whose weight factors fit signed bytes run on AVX512-VNNI at level avx512 where the
    CPU has it (:func:`vnni_levels`), four taps of a kernel row per vpdpbusd; the same results.
    """
    cdef int level = _level(isa)
    cdef int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int64_t Cout = wp.shape[0], kh = wp.shape[1], kw = wp.shape[2]
    cdef int64_t sh = stride[0], sw = stride[1], pt = pads[0], pl = pads[1], dh = dilation[0], dw = dilation[1]
    cdef int64_t Ho = out_hw[0], Wo = out_hw[1]
    cdef int m = DW_MODES.index(mode)
    cdef int use_vnni = vnni_enabled() if vnni is None else bool(vnni)
    if C == 0 or Cout % C or lutT.shape[0] != 256 or lutT.shape[1] != 256 or ftab.shape[0] != 256 or \
            gtab.shape[0] != 256 or (xtab is not None and xtab.shape[0] != 256):
        raise ValueError("dw_conv: Cout must be a multiple of C, lutT [256, 256], ftab, gtab and xtab [256]")
    cdef dse_scaling sc
    cdef int64_t *o = NULL
    cdef void *of = NULL
    if scaling is None:
        out = np.empty((B, Cout, Ho, Wo), dtype=np.int64)
    else:
        keep = _scaling(&sc, Cout, tuple(scaling), level, 1)
        if out is None:
            out = np.empty((B, Cout, Ho, Wo), dtype=_scaled_dtype(&sc))
        elif out.shape != (B, Cout, Ho, Wo) or out.dtype != _scaled_dtype(&sc):
            raise ValueError("dw_conv: out must be the scaled output's dtype and [B, Cout, Ho, Wo]")
    if B == 0 or Cout == 0 or Ho <= 0 or Wo <= 0:
        return out
    cdef int64_t[:, :, :, ::1] oi
    if scaling is None:
        oi = out
        o = &oi[0, 0, 0, 0]
    else:
        of = _address(out)
        _check_within(keep, <size_t>of, out.size - 1)
    cdef int rc = 0
    cdef const uint8_t *xt = NULL
    if xtab is not None:
        xt = &xtab[0]
    with nogil:
        rc = dse_dw_conv(level, &x[0, 0, 0, 0], B, C, H, W, &wp[0, 0, 0], Cout, kh, kw, sh, sw, pt, pl, dh, dw, Ho,
                         Wo, &lutT[0, 0], &ftab[0], &gtab[0], bound, m, 1 if a_signed else 0,
                         xt, o,
                         NULL if of == NULL else &sc, of, block, use_vnni, max(1, threads))
    if rc == -2:
        raise ValueError("dw_conv: rowsum takes kernels of at most 32 groups of taps (kh times the kernel "
                         "columns' distinct (column phase, column offset // 3) in the stride's phase planes)")
    if rc != 0:
        raise MemoryError("dw_conv: scratch buffers could not be allocated")
    return out


cdef void *_address(arr):
    """The data address of a C-contiguous numpy array (float32 or uint8 outputs of a scaling pass)."""
    if not arr.flags.c_contiguous:
        raise ValueError("the output of a scaling pass must be C-contiguous")
    return <void *><size_t>arr.ctypes.data


cdef _scaled_dtype(const dse_scaling *sc):
    """The dtype of a scaling pass's output: the next layer's patterns (uint8) with a quant and no add, else float32."""
    return np.dtype(np.uint8 if sc.quant and sc.add == NULL else np.float32)


cdef _check_within(tuple keep, size_t addr, int64_t last):
    """With a fused Add (``keep``: what :func:`_scaling` returned): the call's float32 outputs, from address ``addr``
    to its element ``last``, must lie in the base array, whose offsets address the other operand and the patterns."""
    if len(keep) < 4:
        return
    base = keep[3]
    cdef size_t b = <size_t>base.ctypes.data
    if addr < b or (addr - b) % 4 or <int64_t>((addr - b) // 4) + last >= base.size:
        raise ValueError("a scaling pass with an add must write within its base array")


cdef tuple _scaling(dse_scaling *sc, int64_t N, tuple args, int level, int silu_ok=0):
    """Fill ``sc`` from the Python scaling arguments ``args`` = (a_scale, w_scale, bias, act, lo, hi, quant, add,
    silu) (``quant``: None, or (scale, signed) of the next layer's input
    patterns; ``add``: None, or (other, base, q) of a fused Add: float32 other and base and, with a quant, uint8 q,
    C-contiguous and of one size; the pass's float32 output element at offset i from base's start gets other[i]
    added and, with the quant, its pattern written to q[i]; ``silu`` (optional, 0: none) 1 / 2: the output is the
    SiLU y * sigmoid(y) / sigmoid(y) * y of the scaled y by numpy's own loops (act "none", no add; only where
    ``silu_ok``: 2 the scaling passes (dse_scale_runs, the integer GEMM's tiles), 1 the depthwise kernel's, which
    scales its VNNI quads in registers and takes the SiLU in place after them, without a quant); returns the arrays
    it points into (keep them alive)."""
    a_scale, w_scale, bias, act, lo, hi, quant = args[:7]
    add = args[7] if len(args) > 7 else None
    silu = args[8] if len(args) > 8 else 0
    if silu not in (0, 1, 2) or silu and (not silu_ok or act != "none" or add is not None or
                                          silu_ok == 1 and quant is not None):
        raise ValueError("a SiLU output step needs act 'none', no add (and no quant on the depthwise kernel)")
    if silu and not numpy_loops_found():
        raise ValueError("a SiLU output step needs numpy's own loops (numpy_loops_found)")
    cdef const float[::1] sw_v = w_scale
    cdef const float[::1] b_v = bias
    if sw_v.shape[0] != N or b_v.shape[0] != N:
        raise ValueError("w_scale and bias need one entry per channel")
    sc.sa = a_scale
    sc.sw = &sw_v[0]
    sc.bias = &b_v[0]
    sc.act = ACTS.index(act)
    sc.lo = lo
    sc.hi = hi
    sc.quant = quant is not None
    sc.qs, sc.qlo, sc.qhi = (quant[0], -128, 127) if sc.quant and quant[1] else \
        ((quant[0], 0, 255) if sc.quant else (1.0, 0, 0))
    sc.add, sc.base, sc.qout, sc.qf, sc.stream, sc.drop = NULL, NULL, NULL, NULL, 0, 0
    sc.silu, sc.loops = silu, (<const void *>_SIG_LOOPS if silu else NULL)
    cdef float[::1] qf_v
    if add is None and sc.quant and not silu and N and dse_qfast_level(level):  # the fast patterns: their constants
        qf = np.empty(4 + 4 * N, dtype=np.float32)
        qf_v = qf
        dse_scaling_qf(sc, N, &qf_v[0])
        sc.qf = &qf_v[0]
        return sw_v, b_v, qf
    if add is None:
        return sw_v, b_v
    other, base, q = add[:3]
    keep_sum = add[3] if len(add) > 3 else True
    if other.dtype != np.float32 or base.dtype != np.float32 or other.size != base.size or \
            (q is None) != (quant is None) or q is not None and (q.dtype != np.uint8 or q.size != base.size):
        raise ValueError("a fused add needs float32 operand and output of one size (and the patterns with a quant)")
    if not keep_sum and q is None:
        raise ValueError("a fused add's sum may go unwritten only where its patterns are written")
    sc.drop = not keep_sum
    sc.add = <const float *>_address(other)
    sc.base = <const float *>_address(base)
    sc.qout = NULL if q is None else <uint8_t *>_address(q)
    return sw_v, b_v, other, base, q


def quantize(const float[::1] x, float scale, bint signed, int threads=1, isa=None):
    """uint8 patterns of clip(rint(x / scale), qmin, qmax) (float32 division; [-128, 127] or [0, 255]); AVX2 at
    level avx2 and above (8 values per step, same bits), scalar code below."""
    cdef int level = _level(isa)
    cdef int64_t n = x.shape[0]
    out = np.empty(n, dtype=np.uint8)
    cdef uint8_t[::1] q = out
    cdef int lo = -128 if signed else 0, hi = 127 if signed else 255
    if n:
        with nogil:
            dse_quantize(level, &x[0], n, scale, lo, hi, &q[0], max(1, threads))
    return out


def quantize_strided(x, float scale, bint signed, int threads=1, isa=None):
    """:func:`quantize`'s patterns of a float32 array of any strides (a view: a slice, a transpose), C-contiguous,
    in one pass without a contiguous float32 copy; 1 to 32 axes, byte strides multiples of 4."""
    cdef int level = _level(isa)
    if x.dtype != np.float32 or not 1 <= x.ndim <= 32 or any(t % 4 for t in x.strides):
        raise ValueError("quantize_strided: float32 of 1 to 32 axes and strides of whole values")
    out = np.empty(x.shape, dtype=np.uint8)
    cdef int nd = x.ndim
    cdef int64_t[::1] sh = np.array(x.shape, dtype=np.int64).reshape(-1)
    cdef int64_t[::1] st = (np.array(x.strides, dtype=np.int64) // 4).reshape(-1)
    cdef int lo = -128 if signed else 0, hi = 127 if signed else 255
    cdef const float *xp = <const float *><size_t>x.ctypes.data
    cdef uint8_t *qp = <uint8_t *><size_t>out.ctypes.data
    if out.size:
        with nogil:
            dse_quantize_strided(level, xp, nd, &sh[0], &st[0], scale, lo, hi, qp, max(1, threads))
    return out


def dequantize(const int64_t[:, :, ::1] acc, double a_scale, w_scale, bias, int threads=1, act="none",
               float lo=-np.inf, float hi=np.inf, quant=None, isa=None, out=None, int64_t bound=-1, add=None,
               int silu=0):
    """float32[R, N, S]: act(float32((acc * a_scale) * w_scale[c]) + bias[c]), products in float64; ``w_scale``,
    ``bias`` float32[N]; ``act`` one of ACTS: "none", "relu" (numpy's maximum(y, 0)) or "clip" (numpy's clip(y, lo,
    hi)). With ``quant`` = (scale, signed): uint8[R, N, S], the patterns :func:`quantize` gives on that float32
    output (the next layer's input), without the float32 tensor. Written into ``out`` when given (C-contiguous, that
    dtype and acc's shape), else into a new array; AVX2 at level avx2 and above, the same bits. ``bound`` >= every
    |acc| when the caller knows one (-1: unknown): below 2^51 the sums are converted with two instructions per four
    (the caller answers for the bound: sums beyond it give wrong values). ``add`` = (other, q): a fused Add (as
    :func:`int_gemm`'s scaling takes it, with ``out`` as the base): out (float32, given) = act(scaled + other) and,
    with a quant, q its patterns; (other, q, False): only the patterns (out not written). ``silu`` 1 / 2 (act "none", no add): the output is the SiLU y * sigmoid(y) /
    sigmoid(y) * y of the scaled y by numpy's own float32 loops (dse.kernels.OutputAct "silu"), or its patterns."""
    cdef int level = _level(isa)
    cdef int64_t R = acc.shape[0], N = acc.shape[1], S = acc.shape[2]
    cdef dse_scaling sc
    if add is not None and out is None:
        raise ValueError("dequantize: a fused add needs out")
    dtype = np.dtype(np.uint8 if quant is not None and add is None else np.float32)
    if N:
        keep = _scaling(&sc, N, (a_scale, w_scale, bias, act, lo, hi, quant,
                                 None if add is None else (add[0], out) + tuple(add[1:]), silu), level, 2)
    if out is None:
        out = np.empty((R, N, S), dtype=dtype)
    if out.shape != (R, N, S) or out.dtype != dtype:
        raise ValueError(f"dequantize: out must be {np.dtype(dtype).name} with the shape of acc")
    cdef void *y = _address(out)
    cdef int small = 0 <= bound < 2 ** 51
    if R and N and S:
        with nogil:
            dse_dequantize(level, &acc[0, 0, 0], R, N, S, &sc, y, small, max(1, threads))
    return out


def int_gemm(AT, const uint8_t[:, ::1] Wp, const int16_t[:, ::1] fa, a_mode,
             const int16_t[:, ::1] gw, int64_t S, out, isa=None, int threads=1, scaling=None, vnni=None,
             conv=None, addend=None, conv_kernel="im2col", pool=None):
    """Exact integer GEMM (see ``cy/int_gemm.h``) written into ``out`` int64[B, N, img] (any outer strides):
    ``out[b, n, s] = sum_{k, j} fa'[AT[k, m], j] * gw[Wp[n, k], j]`` with m = b * img + s (unit stride along s), over the K rows of ``AT``
    uint8[K, M] (C-contiguous, M = B * img), or of ``AT`` uint8[B', K, img'] read per image (element (k, m) at
    AT[m // img', k, m % img']; any outer strides, unit stride along img': e.g. NCHW inputs [B, C, H*W] of a 1x1
    conv, no transposing copy), and the t columns of the int16 tables ``fa``, ``gw`` [256, t]. ``a_mode``: "table"
    (fa' = fa), "u8"/"s8" (t = 1 and fa'[p] = the unsigned/signed value of pattern p; ``fa`` unused). ``S`` >= every
    |term| of the call, 2 S < 2^31 (the int32 accumulation segment is floor((2^31 - 1) / S) terms). With ``scaling``
    (as :func:`dw_conv` takes it, one entry per row n) ``out`` is float32 (uint8 with a quant) [B, N, img] and
    receives the output of :func:`dequantize` on those sums, scaled from the int32 tile while it is in cache; the
    call must satisfy :func:`int_gemm_fits32` and have K >= 1. ``vnni`` (default: :func:`vnni_enabled`) lets a call
    whose operand values fit bytes (t = 1) run on the VNNI micro-kernel of its level where the CPU has one
    (:func:`vnni_levels`); the same results. Returns the ISA level name used, with "+vnni" when the VNNI kernel ran.

    ``conv`` = (x, c0, (kh, kw), stride, pads, dilation, out_hw) instead of ``AT`` (None): the operand is the im2col
    of channels c0 .. c0 + K / (kh kw) - 1 of the conv input x uint8[B, C, H, W] (C-contiguous; ``pads`` = (top,
    left)), as :func:`im2col` would give it (M = B Ho Wo, img = Ho Wo), built per task and depth block in cache on
    the VNNI kernel at the avx512 level where the geometry fits the VBMI im2col, or packed into the int16 kernel's
    panels straight from x at the avx2 level (stride 1, W == Wo, planes of >= 16 positions, <= 49 taps, >= 128
    depth rows, no activation table): else nothing is done and None is returned (the caller builds the operand). ``conv_kernel``: "im2col" (that), or "bcast": the broadcast conv
    kernel (output channels in the vector lanes, the input transposed per image into a channels-last copy in cache;
    ``cy/int_gemm.h``, dse_bc_conv) on a scaled call of the VNNI kernel at the avx512 level with the activations on
    the unsigned port, any geometry; the same outputs; else None as above.

    ``addend`` (with ``scaling`` only) int64[B, N, img] like ``out`` (unit stride along img): added to the sums before
    they are scaled (out receives the scaling of the sums + addend); the caller guarantees that every |addend| and
    every |sum + addend| is < 2^31.

    ``pool`` = ((kh, kw), stride, pads, dilation, out_hw, pout, q, qscale, qsigned) with ``conv_kernel`` "bcast" and
    a float32 scaling without add (``out`` None: the conv's output is not written): the max pool that reads the
    conv's output fused into the kernel (each task's images scaled into a per-thread scratch and pooled from the
    cache): ``pout`` float32[B, N, Ho', Wo'] (C-contiguous) receives :func:`max_pool` of the conv's output (``pads``
    top, left; ``out_hw`` (Ho', Wo')), and ``q`` (uint8, pout's shape, or None) :func:`quantize` of it with scale
    qscale. Not run (None returned) where the broadcast kernel does not run."""
    cdef int level = _level(isa)
    cdef int use_vnni = vnni_enabled() if vnni is None else bool(vnni)
    cdef dse_ig_conv cv
    cdef dse_bc_pool bp
    cdef float[:, :, :, ::1] pov
    cdef uint8_t[:, :, :, ::1] pqv
    cdef const uint8_t[:, :, :, ::1] xv
    cdef int64_t ckh, ckw, cB, cC, cH, cW, c0
    if conv is not None:
        if AT is not None:
            raise ValueError("int_gemm: give either AT or conv")
        xv, c0, (ckh, ckw), cstride, cpads, cdil, chw = conv
        cB, cC, cH, cW = xv.shape[0], xv.shape[1], xv.shape[2], xv.shape[3]
        if ckh < 1 or ckw < 1 or Wp.shape[1] % (ckh * ckw) or c0 < 0 or c0 + Wp.shape[1] // (ckh * ckw) > cC \
                or min(cstride) < 1 or min(cdil) < 1 or min(cpads) < 0 or min(chw) < 1 or cB < 1 or cH < 1 or cW < 1:
            raise ValueError("int_gemm: conv geometry does not match the weights or is out of range")
        if conv_kernel not in ("im2col", "bcast"):
            raise ValueError(f"int_gemm: unknown conv_kernel '{conv_kernel}' (im2col or bcast)")
        if pool is not None:  # checked before the ISA level decides whether this call runs here at all
            (bp.kh, bp.kw), (bp.sh, bp.sw), (bp.pt, bp.pl), (bp.dh, bp.dw), (bp.Ho, bp.Wo), pout, pq, qscale, \
                qsigned = pool
            if conv_kernel != "bcast" or scaling is None or scaling[6] is not None or \
                    len(scaling) > 7 and scaling[7] is not None or out is not None:
                raise ValueError("int_gemm: a fused pool needs the bcast kernel and a float32 scaling without add")
            if min(bp.kh, bp.kw, bp.sh, bp.sw, bp.dh, bp.dw, bp.Ho, bp.Wo) < 1 or min(bp.pt, bp.pl) < 0:
                raise ValueError("int_gemm: pool geometry out of range")
            if tuple(pout.shape) != (cB, Wp.shape[0], bp.Ho, bp.Wo) or \
                    pq is not None and (pq.dtype != np.uint8 or tuple(pq.shape) != tuple(pout.shape)):
                raise ValueError("int_gemm: the pool's outputs must be [B, N, Ho', Wo'] (float32, uint8 patterns)")
        memset(&cv, 0, sizeof(cv))
        if conv_kernel == "bcast":
            if level < 2 or scaling is None:
                return None
            cv.bcast = 1
            cv.H, cv.W, cv.kh, cv.sh, cv.sw = cH, cW, ckh, cstride[0], cstride[1]
            cv.pt, cv.pl, cv.dh, cv.dw = cpads[0], cpads[1], cdil[0], cdil[1]
        elif level == 1:  # the int16 kernel's panels packed from the input where the geometry allows (else None)
            cv.H, cv.W, cv.kh, cv.sh, cv.sw = cH, cW, ckh, cstride[0], cstride[1]
            cv.pt, cv.pl, cv.dh, cv.dw = cpads[0], cpads[1], cdil[0], cdil[1]
        elif level < 2 or not dse_i2c_plan_make(&cv.i2c, cH, cW, ckh, ckw, cstride[0], cstride[1], cpads[0],
                                                cpads[1], cdil[0], cdil[1], chw[0], chw[1], 0):
            return None
        cv.xlo = &xv[0, 0, 0, 0]
        cv.xhi = cv.xlo + cB * cC * cH * cW
        cv.x = &xv[0, c0, 0, 0] if c0 < cC else &xv[0, 0, 0, 0]
        cv.ld_b, cv.HW, cv.kw, cv.Ho, cv.Wo = cC * cH * cW, cH * cW, ckw, chw[0], chw[1]
        if pool is not None:
            pov = pout
            bp.out, bp.q = &pov[0, 0, 0, 0], NULL
            bp.qs, bp.qlo, bp.qhi = qscale, (-128 if qsigned else 0), (127 if qsigned else 255)
            if pq is not None:
                pqv = pq
                bp.q = &pqv[0, 0, 0, 0]
            cv.pool = &bp
            # the conv's output is never written: the checks' array, one plane read as every plane
            out = np.lib.stride_tricks.as_strided(np.empty(chw[0] * chw[1], np.float32),
                                                  (cB, Wp.shape[0], chw[0] * chw[1]), (0, 0, 4))
        try:
            return _int_gemm_call(None, Wp, fa, a_mode, gw, S, out, level, use_vnni, threads, scaling, &cv,
                                  Wp.shape[1], cB * chw[0] * chw[1], addend)
        finally:
            dse_i2c_free(&cv.i2c)
    return _int_gemm_call(AT, Wp, fa, a_mode, gw, S, out, level, use_vnni, threads, scaling, NULL, 0, 0, addend)


cdef _int_gemm_call(AT, const uint8_t[:, ::1] Wp, const int16_t[:, ::1] fa, a_mode, const int16_t[:, ::1] gw,
                    int64_t S, out, int level, int use_vnni, int threads, scaling, const dse_ig_conv *cv, int64_t cK,
                    int64_t cM, addend=None):
    """int_gemm's checks and call, on the matrix AT or (cv, AT None) a conv input of K = cK rows and M = cM
    positions."""
    if cv != NULL:
        AT = np.zeros((cK, 0), np.uint8)  # the checks' shape; the kernel reads cv
    AT = np.asarray(AT)
    if AT.dtype != np.uint8 or AT.ndim not in (2, 3) or AT.ndim == 2 and not AT.flags.c_contiguous or \
            AT.ndim == 3 and AT.shape[2] > 1 and AT.strides[2] != 1 or min(AT.strides) < 0:
        raise ValueError("int_gemm: AT must be uint8 [K, M] (C-contiguous) or [B, K, img] (unit stride along img)")
    cdef int d = AT.ndim - 2  # the axis of the K rows
    cdef int64_t K = AT.shape[d], aimg = AT.shape[d + 1], N = Wp.shape[0], t = gw.shape[1]
    cdef int64_t M = aimg * (AT.shape[0] if d else 1) if cv == NULL else cM
    cdef int64_t lda = AT.strides[d] if K > 1 else aimg, ld_aimg = AT.strides[0] if d else 0
    aimg = max(1, aimg)
    cdef int mode = INT_GEMM_MODES.index(a_mode)
    if Wp.shape[1] != K:
        raise ValueError(f"int_gemm: AT has K={K} rows but Wp has {Wp.shape[1]} columns")
    if gw.shape[0] != 256 or fa.shape[0] != 256 or (mode == 0 and fa.shape[1] != t) or (mode != 0 and t != 1):
        raise ValueError("int_gemm: tables must be [256, t] (t = 1 for the u8/s8 modes)")
    if out.ndim != 3 or out.shape[1] != N or out.shape[0] * out.shape[2] != M:
        raise ValueError(f"int_gemm: out {tuple(out.shape)[:3]} does not hold [M / img, N, img] with M={M}, N={N}")
    if not 1 <= S <= 2 ** 30 - 1:
        raise ValueError(f"int_gemm: term bound S={S} out of range (1 .. 2^30 - 1)")
    cdef dse_scaling sc
    if scaling is not None:
        keep = _scaling(&sc, N, tuple(scaling), level, 2)
        if (sc.add != NULL or not sc.quant) and not sc.silu:  # a large float32 output is streamed (STREAM_MIN_BYTES)
            sc.stream = (keep[3] if sc.add != NULL else out).nbytes >= STREAM_MIN_BYTES
        if not dse_ig_fits32(K, t, S):
            raise ValueError(f"int_gemm: a scaled call needs one int32 segment (K={K}, t={t}, S={S} do not fit)")
    dtype = np.dtype(np.int64 if scaling is None else _scaled_dtype(&sc))
    if out.dtype != dtype:
        raise ValueError(f"int_gemm: out must be {dtype.name}")
    cdef int64_t isz = dtype.itemsize
    if out.shape[2] > 1 and out.strides[2] != isz or out.strides[0] % isz or out.strides[1] % isz:
        raise ValueError("int_gemm: out must have unit stride along its last axis")
    if M == 0 or N == 0:
        return ISA_NAMES[level]
    if K == 0 and scaling is not None:
        raise ValueError("int_gemm: a scaled call needs K >= 1")
    if K == 0:
        out[...] = 0
        return ISA_NAMES[level]
    cdef size_t addr = out.ctypes.data, a_addr = AT.ctypes.data
    cdef int64_t img = out.shape[2], ld_img = out.strides[0] // isz, ld_n = out.strides[1] // isz
    if scaling is not None:
        _check_within(keep, addr, (out.shape[0] - 1) * ld_img + (N - 1) * ld_n + img - 1)
    cdef size_t add_addr = 0
    cdef int64_t add_ld_img = 0, add_ld_n = 0
    if addend is not None:
        if scaling is None:
            raise ValueError("int_gemm: an addend needs a scaled call")
        if addend.dtype != np.int64 or addend.ndim != 3 or addend.shape != out.shape or \
                (img > 1 and addend.strides[2] != 8) or addend.strides[0] % 8 or addend.strides[1] % 8 or \
                min(addend.strides) < 0:
            raise ValueError("int_gemm: the addend must be int64 of out's shape, unit stride along its last axis")
        add_addr, add_ld_img, add_ld_n = addend.ctypes.data, addend.strides[0] // 8, addend.strides[1] // 8
    cdef int rc = 0
    with nogil:
        rc = dse_int_gemm(level, <const uint8_t *>a_addr, lda, aimg, ld_aimg, &Wp[0, 0], K, M, N, t, &fa[0, 0], mode,
                          &gw[0, 0], S,
                          <int64_t *>addr if scaling is None else NULL, img, ld_img, ld_n,
                          NULL if scaling is None else &sc, <void *>addr, use_vnni, max(1, threads), cv,
                          <const int64_t *>add_addr, add_ld_img, add_ld_n)
    if rc == -4:
        return None
    if rc < 0:
        raise MemoryError("int_gemm: scratch buffers could not be allocated")
    return ISA_NAMES[level] + ("+vnni" if rc == 1 else "")


# the row-table kernel's tile sizes: selector rows per tile, index positions per block (dse.kernels' cost model)
ROWS_TILE, ROWS_BLOCK = DSE_RT_NT, DSE_RT_MB


def int_gemm_batch(const uint8_t[:, :, ::1] AT, const uint8_t[:, :, ::1] Wp, const int16_t[:, ::1] fa, a_mode,
                   const int16_t[:, ::1] gw, int64_t S, out, isa=None, int threads=1, vnni=None, scaling=None):
    """L independent exact integer GEMMs in one call (an activation matmul's heads x images, each too small for a
    call of its own to pay): ``out[l, m, n] = sum_{k, j} fa'[AT[l, k, m], j] * gw[Wp[l, n, k], j]``, each GEMM as
    :func:`int_gemm` computes it on AT[l] uint8[K, M] and Wp[l] uint8[N, K] into the [M, N] layout (the same kernel
    and arguments ``gemm_int`` gives it, the same results). Returns the ISA level name used as int_gemm does.
    With ``scaling`` (as :func:`int_gemm` takes it, one entry per row n, float32 output: no quant, no add) ``out`` is
    float32 [L, N, M] and ``out[l]`` receives what int_gemm's scaled call writes for AT[l], Wp[l] (the dequantized
    sums in int_gemm's [N, M] layout, scaled from the int32 tile: no int64 sums)."""
    cdef int level = _level(isa)
    cdef int use_vnni = vnni_enabled() if vnni is None else bool(vnni)
    cdef int64_t L = AT.shape[0], K = AT.shape[1], M = AT.shape[2], N = Wp.shape[1], t = gw.shape[1], l
    cdef int mode = INT_GEMM_MODES.index(a_mode)
    cdef int64_t[:, :, ::1] o64
    cdef float[:, :, ::1] o32
    cdef dse_scaling sc
    cdef tuple keep
    if scaling is None:
        o64 = out
        if Wp.shape[0] != L or Wp.shape[2] != K or out.shape[0] != L or out.shape[1] != M or out.shape[2] != N:
            raise ValueError(f"int_gemm_batch: AT {tuple(AT.shape)[:3]}, Wp {tuple(Wp.shape)[:3]} and out "
                             f"{tuple(out.shape)[:3]} must be [L, K, M], [L, N, K] and [L, M, N]")
    else:
        o32 = out
        if Wp.shape[0] != L or Wp.shape[2] != K or out.shape[0] != L or out.shape[1] != N or out.shape[2] != M:
            raise ValueError(f"int_gemm_batch: AT {tuple(AT.shape)[:3]}, Wp {tuple(Wp.shape)[:3]} and the scaled "
                             f"out {tuple(out.shape)[:3]} must be [L, K, M], [L, N, K] and [L, N, M]")
        keep = _scaling(&sc, N, tuple(scaling), level)
        if sc.quant or sc.add != NULL:
            raise ValueError("int_gemm_batch: a scaled call writes float32 (no quant, no add)")
        if K and not dse_ig_fits32(K, t, S):
            raise ValueError(f"int_gemm_batch: a scaled call needs one int32 segment (K={K}, t={t}, S={S})")
    if gw.shape[0] != 256 or fa.shape[0] != 256 or (mode == 0 and fa.shape[1] != t) or (mode != 0 and t != 1):
        raise ValueError("int_gemm_batch: tables must be [256, t] (t = 1 for the u8/s8 modes)")
    if not 1 <= S <= 2 ** 30 - 1:
        raise ValueError(f"int_gemm_batch: term bound S={S} out of range (1 .. 2^30 - 1)")
    if L == 0 or M == 0 or N == 0:
        return ISA_NAMES[level]
    if K == 0 and scaling is not None:
        raise ValueError("int_gemm_batch: a scaled call needs K >= 1")
    if K == 0:
        np.asarray(out)[...] = 0
        return ISA_NAMES[level]
    cdef int rc = 0, ran8 = 0
    with nogil:
        for l in range(L):
            if scaling is None:
                rc = dse_int_gemm(level, &AT[l, 0, 0], M, M, 0, &Wp[l, 0, 0], K, M, N, t, &fa[0, 0], mode, &gw[0, 0],
                                  S, &o64[l, 0, 0], 1, N, 1, NULL, &o64[l, 0, 0], use_vnni, max(1, threads), NULL,
                                  NULL, 0, 0)
            else:
                rc = dse_int_gemm(level, &AT[l, 0, 0], M, M, 0, &Wp[l, 0, 0], K, M, N, t, &fa[0, 0], mode, &gw[0, 0],
                                  S, NULL, M, N * M, M, &sc, &o32[l, 0, 0], use_vnni, max(1, threads), NULL, NULL, 0,
                                  0)
            if rc < 0:
                break
            ran8 = rc
    if rc < 0:
        raise MemoryError("int_gemm_batch: scratch buffers could not be allocated")
    return ISA_NAMES[level] + ("+vnni" if ran8 == 1 else "")


def int_gemm_fits32(int64_t K, int t, int64_t S):
    """Whether one int32 accumulation segment of :func:`int_gemm` holds the whole depth (K rows, t terms per row,
    term bound S): the condition of a scaled call."""
    return bool(dse_ig_fits32(K, t, S))


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


def float_conv(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias, stride, pads, dilation,
               int64_t groups, out_hw, isa=None, int threads=1, bint all_threads=False):
    """float32[B, Cout, Ho, Wo]: ONNX Conv of x [B, C, H, W] with w [Cout, C / groups, kh, kw] and ``bias`` (float32
    [Cout] or None), each output one fixed chain of fused multiply-adds (``cy/float_gemm.h``: k ascending over
    (channel, kernel row, kernel column) from +0, padding as zero terms, then + bias), the same bits at every ISA
    level and thread count. ``pads`` (top, left, ...); ``out_hw`` (Ho, Wo) holds the end pads. A small convolution
    takes fewer than ``threads`` threads (one per 2^22 multiply-adds) unless ``all_threads``. Returns
    (out, level_name)."""
    cdef int level = _level(isa)
    cdef int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int64_t Cout = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef int64_t sh = stride[0], sw = stride[1], pt = pads[0], pl = pads[1], dh = dilation[0], dw = dilation[1]
    cdef int64_t Ho = out_hw[0], Wo = out_hw[1]
    if groups < 1 or C != Cg * groups or Cout % groups or min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl) < 0 or \
            min(Ho, Wo) < 1 or (Ho - 1) * sh + (kh - 1) * dh + 1 > H + pt + max(0, pads[2]) or \
            (Wo - 1) * sw + (kw - 1) * dw + 1 > W + pl + max(0, pads[3]):
        raise ValueError(f"float_conv: input {(B, C, H, W)}, weights {(Cout, Cg, kh, kw)}, groups {groups}, stride "
                         f"{stride}, pads {pads}, dilation {dilation} and output {out_hw} do not fit")
    cdef const float[::1] bv
    cdef const float *bp = NULL
    if bias is not None:
        bv = bias
        if bv.shape[0] != Cout:
            raise ValueError(f"float_conv: bias of {bv.shape[0]} values for {Cout} channels")
        bp = &bv[0]
    out = np.empty((B, Cout, Ho, Wo), dtype=np.float32)
    cdef float[:, :, :, ::1] o = out
    cdef dse_fg_cols S
    cdef dse_fg_out O
    cdef int rc = 0
    cdef int64_t og = Cout // groups, P = Ho * Wo
    if B == 0 or Cout == 0:
        return out, ISA_NAMES[level]
    threads = max(1, threads) if all_threads else dse_fg_threads(max(1, threads), <double>B * Cout * P * Cg * kh * kw)
    if Cg == 1:
        with nogil:
            rc = dse_float_dwconv(level, &x[0, 0, 0, 0], B, C, H, W, &w[0, 0, 0, 0], Cout, kh, kw, sh, sw, pt, pl,
                                  dh, dw, Ho, Wo, bp, &o[0, 0, 0, 0], threads)
    else:
        S.conv, S.src, S.sk, S.sc, S.gs = 1, &x[0, 0, 0, 0], 0, 0, 0
        S.C, S.H, S.W, S.Cg, S.kh, S.kw, S.sh, S.sw = C, H, W, Cg, kh, kw, sh, sw
        S.pt, S.pl, S.dh, S.dw, S.Ho, S.Wo = pt, pl, dh, dw, Ho, Wo
        O.out, O.gs, O.rs, O.P, O.img, O.bias, O.bias_rows, O.bgs = &o[0, 0, 0, 0], og * P, P, P, Cout * P, bp, 1, og
        with nogil:
            rc = dse_float_gemm(level, groups, og, Cg * kh * kw, B * P, &w[0, 0, 0, 0], Cg * kh * kw,
                                og * Cg * kh * kw, &S, &O, threads)
    if rc:
        raise MemoryError("float_conv: out of memory for the packed operands")
    return out, ISA_NAMES[level]


def float_matmul(const float[:, :, ::1] a, const float[:, :, ::1] b, bias=None, bint b_rows=False, isa=None,
                 int threads=1, bint all_threads=False):
    """float32[L, M, N]: a [L, M, K] @ b [L, K, N] (``b_rows``: b [L, N, K], a Gemm's weights, transposed), each
    output one fixed chain of fused multiply-adds over ascending k from +0 (``cy/float_gemm.h``), then + ``bias``
    (float32 [N] or None); a leading size 1 of either operand broadcasts. The same bits at every ISA level and thread
    count. A small product takes fewer than ``threads`` threads (one per 2^22 multiply-adds) unless ``all_threads``.
    Returns (out, level_name)."""
    cdef int level = _level(isa)
    cdef int64_t La = a.shape[0], M = a.shape[1], K = a.shape[2], Lb = b.shape[0]
    cdef int64_t N = b.shape[1] if b_rows else b.shape[2], Kb = b.shape[2] if b_rows else b.shape[1]
    cdef int64_t L = max(La, Lb)
    if Kb != K or (La != L and La != 1) or (Lb != L and Lb != 1):
        raise ValueError(f"float_matmul: operands {tuple(a.shape)} and {tuple(b.shape)} (b_rows {b_rows}) do not fit")
    cdef const float[::1] bv
    cdef const float *bp = NULL
    if bias is not None:
        bv = bias
        if bv.shape[0] != N:
            raise ValueError(f"float_matmul: bias of {bv.shape[0]} values for {N} columns")
        bp = &bv[0]
    out = np.empty((L, M, N), dtype=np.float32)
    if L == 0 or M == 0 or N == 0:
        return out, ISA_NAMES[level]
    cdef float[:, :, ::1] o = out
    cdef dse_fg_cols S
    cdef dse_fg_out O
    cdef int rc = 0
    cdef const float *ap = &a[0, 0, 0] if K else NULL
    cdef const float *bsrc = &b[0, 0, 0] if K else NULL
    memset(&S, 0, sizeof(S))
    S.conv, S.src, S.gs = 0, bsrc, (K * N if Lb > 1 else 0)
    if b_rows:
        S.sk, S.sc = 1, K
    else:
        S.sk, S.sc = N, 1
    O.out, O.gs, O.rs, O.P, O.img, O.bias, O.bias_rows, O.bgs = &o[0, 0, 0], M * N, N, N, 0, bp, 0, 0
    threads = max(1, threads) if all_threads else dse_fg_threads(max(1, threads), <double>L * M * N * max(K, 1))
    with nogil:
        if La == L:
            rc = dse_float_gemm(level, L, M, K, N, ap, K, M * K, &S, &O, threads)
        else:  # one left operand for every right one: each group its own call on the same rows
            rc = dse_float_gemm(level, L, M, K, N, ap, K, 0, &S, &O, threads)
    if rc:
        raise MemoryError("float_matmul: out of memory for the packed operands")
    return out, ISA_NAMES[level]


def max_pool(const float[:, :, :, ::1] x, kernel, stride, pads, dilation, out_hw, isa=None, int threads=1):
    """float32[B, C, Ho, Wo]: the maximum over each window of x (``cy/glue.h``: numpy's running np.maximum over the
    taps in row-major order from -inf, padded taps skipped, the same bits). ``pads`` (top, left, bottom, right); the
    output size ``out_hw`` (Ho, Wo) holds the end pads and ceil mode. Returns (out, level_name)."""
    cdef int level = _level(isa)
    cdef int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], dh = dilation[0], dw = dilation[1]
    cdef int64_t pt = pads[0], pl = pads[1], Ho = out_hw[0], Wo = out_hw[1]
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl) < 0 or min(Ho, Wo) < 0:
        raise ValueError(f"max_pool: kernel {kernel}, stride {stride}, dilation {dilation} must be >= 1, pads "
                         f"{pads} and output {out_hw} >= 0")
    out = np.empty((B, C, Ho, Wo), dtype=np.float32)
    cdef float[:, :, :, ::1] o = out
    if B and C and Ho and Wo:
        if H == 0 or W == 0:
            out.fill(-np.inf)
            return out, ISA_NAMES[level]
        with nogil:
            dse_max_pool(level, &x[0, 0, 0, 0], B * C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo,
                         &o[0, 0, 0, 0], max(1, threads))
    return out, ISA_NAMES[level]


def global_avg_pool(const float[:, :, :, ::1] x, int threads=1):
    """float32[B, C, 1, 1]: each plane's mean as numpy's float32 ``mean(axis=(2, 3))`` gives it (``cy/glue.h``: its
    pairwise summation order from 0, then the division by the count, the same bits) in one compiled pass; numpy
    makes one inner-loop call per plane. Planes of at least one value."""
    cdef int64_t B = x.shape[0], C = x.shape[1], n = x.shape[2] * x.shape[3]
    if n < 1:
        raise ValueError("global_avg_pool: empty planes")
    out = np.empty((B, C, 1, 1), dtype=np.float32)
    cdef float[:, :, :, ::1] o = out
    if B and C:
        with nogil:
            dse_global_avg_pool(&x[0, 0, 0, 0], B * C, n, &o[0, 0, 0, 0], max(1, threads))
    return out


ctypedef void (*_ufunc_loop)(char **args, const Py_ssize_t *dims, const Py_ssize_t *steps, void *data) noexcept nogil

cdef extern from "numpy/arrayobject.h":  # the types ufuncobject.h needs (no numpy C-API call is made)
    pass

cdef extern from "numpy/ufuncobject.h":
    ctypedef struct PyUFuncObject:
        int nin, nout, nargs, ntypes
        void **functions
        void **data
        const char *types

cdef struct _Loop:
    _ufunc_loop fn
    void *data

cdef _Loop _SIG_LOOPS[7]  # numpy's float32 loops of negative, exp, add, true_divide, multiply, clip, maximum
cdef bint _sig_loops_ready = False


cdef _Loop _float32_loop(u, code="f") except *:
    """numpy's own inner loop of ufunc ``u`` for float32 operands (``code`` "d": float64): the function np.<u> runs
    on such arrays (RuntimeError where this numpy has none in its loop table)."""
    cdef PyUFuncObject *p = <PyUFuncObject *><void *>u
    name = np.dtype(code).name
    sig = code * p.nin + "->" + code * p.nout
    if sig not in u.types or p.functions == NULL or p.types == NULL:
        raise RuntimeError(f"numpy's {u.__name__} has no {name} loop in its loop table")
    cdef int i = u.types.index(sig), j
    for j in range(p.nargs):
        if p.types[i * p.nargs + j] != np.dtype(code).num:
            raise RuntimeError(f"numpy's {u.__name__} loop {i} is not the {name} one")
    if p.functions[i] == NULL:
        raise RuntimeError(f"numpy's {u.__name__} {name} loop is not a legacy inner loop")
    cdef _Loop lp
    lp.fn = <_ufunc_loop>p.functions[i]
    lp.data = p.data[i] if p.data != NULL else NULL
    return lp


# values per chunk of float_sigmoid / float_hardsigmoid (and the integer GEMM's SiLU output step): their loops run
# on one chunk after the other while it is in cache
SIGMOID_CHUNK = DSE_SIGMOID_CHUNK


cdef _glue_loops():
    global _sig_loops_ready
    if not _sig_loops_ready:
        try:
            from numpy._core.umath import clip
        except ImportError:  # numpy 1.x
            from numpy.core.umath import clip
        for j, u in enumerate((np.negative, np.exp, np.add, np.true_divide, np.multiply, clip, np.maximum)):
            _SIG_LOOPS[j] = _float32_loop(u)
        _sig_loops_ready = True
        _check_sigmoid_own()
        _check_hardsigmoid_own()


cdef tuple _around(double e):
    """The bit patterns within 0x800 of float32 e's (a range of non-negative patterns)."""
    cdef int64_t c = int(np.array(e, np.float32).view(np.uint32))
    return (max(c - 0x800, 0), c + 0x800)


cdef _probe_floats(list ranges):
    """The float32 values a compiled float op is checked on against numpy's loops before it is used: every 2^12-th
    bit pattern, and each range [lo, hi) of non-negative bit patterns with its negatives; NaNs left out."""
    b = np.concatenate([np.arange(0, 1 << 32, 1 << 12, dtype=np.uint64).astype(np.uint32)] +
                       [np.arange(lo, hi, dtype=np.uint32) | s for lo, hi in ranges
                        for s in (np.uint32(0), np.uint32(0x80000000))])
    x = b.view(np.float32)
    return np.ascontiguousarray(x[~np.isnan(x)])


cdef _check_sigmoid_own():
    """Sets dse_sigmoid_own (dse_sigmoid_chunk's values in registers at the avx2 level and above) where the CPU has
    AVX2 and FMA and they match numpy's loops, SiLU's two products included, on every 2^12-th float32 bit pattern and
    every float32 around exp's edges (its inputs -x at 0, the quadrant -125 (subnormal) boundary near 86.6, the
    saturation bounds 88.72 and -103.97); else the loops run."""
    global dse_sigmoid_own
    dse_sigmoid_own = 0
    if dse_cpu_level() < DSE_ISA_AVX2 or not dse_cpu_fma():
        return
    x = _probe_floats([(0, 0x1001)] + [_around(e) for e in (86.6, 87.0, 87.4, 88.72283935546875,
                                                               103.97208404541015625)])
    want = np.empty_like(x)
    got = np.empty_like(x)
    cdef float[::1] xv = x
    cdef float[::1] wv = want
    cdef float[::1] gv = got
    cdef int64_t c0, n = x.shape[0], m
    cdef int times_x
    ok = True
    for times_x in range(3):
        c0 = 0
        while c0 < n:
            m = min(<int64_t>DSE_SIGMOID_CHUNK, n - c0)
            dse_sigmoid_chunk(DSE_ISA_SCALAR, <const dse_np_loop *>_SIG_LOOPS, &xv[c0], &wv[c0], m, times_x)
            dse_sigmoid_own = 1
            dse_sigmoid_chunk(DSE_ISA_AVX2, <const dse_np_loop *>_SIG_LOOPS, &xv[c0], &gv[c0], m, times_x)
            dse_sigmoid_own = 0
            c0 += m
        ok = ok and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    dse_sigmoid_own = 1 if ok else 0


cdef _check_hardsigmoid_own():
    """Sets dse_hardsigmoid_own (float_hardsigmoid's values in registers at the avx2 level and above) where the CPU
    has AVX2 and they match numpy's loops of multiply, add and clip (and HardSwish's product) on every 2^12-th float32
    bit pattern and every float32 around the clamp's ends (HardSigmoid's and HardSwish's constants, a zero beta: signed
    zeros at the lower clamp); else the loops run."""
    global dse_hardsigmoid_own
    dse_hardsigmoid_own = 0
    if dse_cpu_level() < DSE_ISA_AVX2:
        return
    x = _probe_floats([_around(e) for e in (0.0, 2.5, 3.0, 3.5)])
    want = np.empty_like(x)
    got = np.empty_like(x)
    ok = True
    with np.errstate(all="ignore"):
        for alpha, beta in ((1 / 6, 0.5), (0.2, 0.5), (0.25, 0.0), (-0.5, -0.0)):
            for times_x in (0, 1):
                dse_hardsigmoid_own = 0
                float_hardsigmoid(x, want, float(np.float32(alpha)), float(np.float32(beta)), times_x, isa="scalar")
                dse_hardsigmoid_own = 1
                float_hardsigmoid(x, got, float(np.float32(alpha)), float(np.float32(beta)), times_x, isa="avx2")
                ok = ok and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    dse_hardsigmoid_own = 1 if ok else 0


def hardsigmoid_own_used() -> bool:
    """Whether float_hardsigmoid (HardSigmoid, HardSwish) computes its values itself at the avx2 level and above
    (dse_hardsigmoid_chunk_avx2, checked against this numpy's loops) rather than by numpy's loops."""
    return numpy_loops_found() and dse_hardsigmoid_own != 0


def sigmoid_own_used() -> bool:
    """Whether the compiled Sigmoid / SiLU (float_sigmoid, the SiLU output steps) computes its values itself at the
    avx2 level and above (dse_sigmoid_chunk_avx2: numpy's float32 exp followed in registers, checked against this
    numpy's loops) rather than by numpy's loops."""
    return numpy_loops_found() and dse_sigmoid_own != 0


_numpy_loops_found = None


def numpy_loops_found():
    """True where this numpy's float32 loops that float_sigmoid, float_hardsigmoid, float_softmax and float_layernorm
    call were found in its ufuncs' loop tables (looked up once); False where a numpy keeps them elsewhere, and the
    callers take their numpy twins."""
    global _numpy_loops_found
    if _numpy_loops_found is None:
        try:
            _glue_loops()
            _numpy_loops_found = True
        except (RuntimeError, ValueError, ImportError, AttributeError):
            _numpy_loops_found = False
    return _numpy_loops_found


cdef float *_aligned_chunk(object buf):
    """The first 64-byte aligned value of ``buf`` (float32, one chunk + 16 values: the chunk fits after it), as a
    fresh chunk of an output would be aligned; ``buf`` keeps the memory."""
    cdef float[::1] v = buf
    return &v[(-(<uintptr_t>&v[0]) // 4) % 16]


def float_hardsigmoid(const float[::1] x, float[::1] out, float alpha, float beta, int times_x=0,
                      uint8_t[::1] q=None, float qs=1.0, bint q_signed=False, isa=None):
    """Writes out = clip(x * alpha + beta, 0, 1) over float32 x as dse.model.nn.reference_hardsigmoid computes it:
    numpy's own float32 loops of multiply (the scalar alpha second, stride 0), add (beta likewise) and clip (the
    bounds 0 and 1 at stride 0), called as numpy's ufuncs call them (add and clip in place) on chunks of
    SIGMOID_CHUNK values in cache: one pass over memory, the same bits (at the avx2 level and above, where
    hardsigmoid_own_used, the same operations in registers, the loops for a chunk with a NaN). ``times_x`` 1: then
    out = multiply(x, out) in place (HardSwish). ``q``, ``qs``, ``q_signed``: each chunk's result also quantized, ``out`` None then, as
    :func:`float_sigmoid` takes them."""
    cdef int64_t n = x.shape[0], c0, m, chunk = SIGMOID_CHUNK
    if times_x not in (0, 1) or (out is None and q is None) or (out is not None and out.shape[0] != n) or \
            (q is not None and q.shape[0] != n):
        raise ValueError("float_hardsigmoid: out / q must have x's length (one of them given) and times_x be 0 or 1")
    _glue_loops()
    cdef int level = _level(isa)
    cdef int lo = -128 if q_signed else 0, hi = 127 if q_signed else 255
    cdef float zero = 0.0, one = 1.0
    cdef char *a3[3]
    cdef char *a4[4]
    cdef Py_ssize_t dims[1]
    cdef Py_ssize_t st3[3]
    cdef Py_ssize_t sc3[3]
    cdef Py_ssize_t sc4[4]
    st3[0] = st3[1] = st3[2] = 4
    sc3[0], sc3[1], sc3[2] = 4, 0, 4
    sc4[0], sc4[1], sc4[2], sc4[3] = 4, 0, 0, 4
    if n == 0:
        return
    buf = None if out is not None else np.empty(chunk + 16, np.float32)  # each chunk's result, where out is None
    cdef float *o
    cdef float *ob = NULL if buf is None else _aligned_chunk(buf)
    with nogil:
        c0 = 0
        while c0 < n:
            m = min(chunk, n - c0)
            dims[0] = m
            o = ob if ob != NULL else &out[c0]
            if level >= DSE_ISA_AVX2 and dse_hardsigmoid_own and \
                    not dse_hardsigmoid_chunk_avx2(&x[c0], o, m, alpha, beta, times_x):
                if q is not None:
                    dse_quantize_seq(level, o, m, qs, lo, hi, &q[c0])
                c0 += m
                continue
            a3[0], a3[1], a3[2] = <char *>&x[c0], <char *>&alpha, <char *>o
            _SIG_LOOPS[4].fn(a3, dims, sc3, _SIG_LOOPS[4].data)          # t = multiply(x, alpha)
            a3[0], a3[1] = <char *>o, <char *>&beta
            _SIG_LOOPS[2].fn(a3, dims, sc3, _SIG_LOOPS[2].data)          # add(t, beta, out=t)
            a4[0], a4[1], a4[2], a4[3] = <char *>o, <char *>&zero, <char *>&one, <char *>o
            _SIG_LOOPS[5].fn(a4, dims, sc4, _SIG_LOOPS[5].data)          # clip(t, 0, 1, out=t)
            if times_x:
                a3[0], a3[1] = <char *>&x[c0], <char *>o
                _SIG_LOOPS[4].fn(a3, dims, st3, _SIG_LOOPS[4].data)      # multiply(x, t, out=t)
            if q is not None:
                dse_quantize_seq(level, o, m, qs, lo, hi, &q[c0])
            c0 += m


def float_sigmoid(const float[::1] x, float[::1] out, int times_x=0, uint8_t[::1] q=None, float qs=1.0,
                  bint q_signed=False, isa=None):
    """Writes out = 1 / (1 + exp(-x)) over float32 x as dse.model.ops' numpy expression computes it: numpy's own float32
    loops of negative, exp, add (the scalar 1 first, stride 0), true_divide (likewise), called with the operands
    numpy's ufuncs pass them (exp, add and divide in place), on chunks of SIGMOID_CHUNK values (a multiple of every
    SIMD width, so each value takes the same loop code as in one whole-array call) while they are in cache: one pass
    over memory instead of five, the same bits. ``times_x`` 1 / 2: then out = multiply(x, out) / multiply(out, x)
    in place (SiLU's x * sigmoid(x) in its node order, as the emulator's in-place product computes it). With ``q``
    (uint8, x's length) each chunk's result is also quantized there while in cache: :func:`quantize`'s patterns of
    it with scale ``qs`` (int8 range if ``q_signed``); ``out`` None then: the float32 result is not kept (each chunk
    goes through a buffer of one chunk)."""
    cdef int64_t n = x.shape[0], c0, m, chunk = SIGMOID_CHUNK
    if times_x not in (0, 1, 2) or (out is None and q is None) or (out is not None and out.shape[0] != n) or \
            (q is not None and q.shape[0] != n):
        raise ValueError("float_sigmoid: out / q must have x's length (one of them given) and times_x be 0, 1 or 2")
    _glue_loops()
    cdef int level = _level(isa)
    cdef int lo = -128 if q_signed else 0, hi = 127 if q_signed else 255
    if n == 0:
        return
    buf = None if out is not None else np.empty(chunk + 16, np.float32)  # each chunk's result, where out is None
    cdef float *o
    cdef float *ob = NULL if buf is None else _aligned_chunk(buf)
    with nogil:
        c0 = 0
        while c0 < n:
            m = min(chunk, n - c0)
            o = ob if ob != NULL else &out[c0]
            dse_sigmoid_chunk(level, <const dse_np_loop *>_SIG_LOOPS, &x[c0], o, m, times_x)
            if q is not None:
                dse_quantize_seq(level, o, m, qs, lo, hi, &q[c0])
            c0 += m


def float_softmax(const float[:, ::1] x, float[:, ::1] out, int threads=1, scale=None, isa=None):
    """Writes out = softmax of each row of float32 x (rows of at least one value) with the bits of dse.model.ops'
    numpy expression (``cy/glue.h`` dse_softmax_rows: numpy's own float32 loops of maximum and add called as its
    reductions call them, exp on blocks of rows in cache, the subtraction and division in place): one pass over
    memory instead of numpy's six. ``scale`` (a float32 value, not NaN): the softmax of x * scale (numpy's float32
    product) instead. ``isa``: the level of its own passes (the bits of every level are the same). Needs
    :func:`numpy_loops_found`."""
    cdef int level = _level(isa)
    cdef int64_t R = x.shape[0], n = x.shape[1]
    cdef float sc = 1.0
    cdef int scaled = scale is not None
    if out.shape[0] != R or out.shape[1] != n or n < 1:
        raise ValueError("float_softmax: out must have x's shape, rows at least one value")
    if scaled:
        sc = scale
        if sc != sc or <double>sc != <double>scale:
            raise ValueError("float_softmax: scale must be a float32 value, not NaN")
    _glue_loops()
    cdef _Loop lp[3]
    lp[0], lp[1], lp[2] = _SIG_LOOPS[6], _SIG_LOOPS[1], _SIG_LOOPS[2]
    if R:
        with nogil:
            dse_softmax_rows(level, &x[0, 0], R, n, &out[0, 0], <const dse_np_loop *>lp, max(1, threads), scaled, sc)


def float_layernorm(const float[:, ::1] x, const float[::1] scale, bias, float eps, float[:, ::1] out,
                    int threads=1, isa=None):
    """Writes out = LayerNorm of each row of float32 x (rows of at least one value; scale and bias (None: none) of
    the row length) with the bits of dse.model.ops' numpy expression (``cy/glue.h`` dse_layernorm_rows: numpy's own
    float32 add loop for its sums, called as its reductions call it, the rest in place; where a NaN of scale or bias
    meets a NaN value, one of the two): one pass over each row instead of numpy's nine. ``isa``: the level of its own
    passes (the bits of every level are the same). Needs :func:`numpy_loops_found`."""
    cdef int level = _level(isa)
    cdef int64_t R = x.shape[0], n = x.shape[1]
    cdef const float[::1] b
    cdef const float *bp = NULL
    if out.shape[0] != R or out.shape[1] != n or n < 1 or scale.shape[0] != n:
        raise ValueError("float_layernorm: out must have x's shape, scale the row length, rows at least one value")
    if bias is not None:
        b = bias
        if b.shape[0] != n:
            raise ValueError("float_layernorm: bias must have the row length")
        bp = &b[0]
    _glue_loops()
    cdef _Loop lp[1]
    lp[0] = _SIG_LOOPS[2]
    if R:
        with nogil:
            dse_layernorm_rows(level, &x[0, 0], R, n, &scale[0], bp, eps, &out[0, 0], <const dse_np_loop *>lp,
                               max(1, threads))


cdef _Loop _ERF_LOOP  # scipy.special.erf's float32 loop
cdef int _erf_loop_state = 0  # 0 not looked up, 1 found, -1 absent
cdef bint _erf_near_ok = False  # _erf_near gives the loop's bits (checked when the loop is found)
cdef _Loop _EXP64_LOOP  # numpy's float64 exp loop (erf of 1 < |x| < 8)
cdef bint _erf_far_ok = False  # erf of 1 < |x| by _erf_far gives the loop's bits (checked likewise)
# how far from a float32 rounding boundary erf's double must lie for _erf_far to round it itself: its double differs
# from scipy's by at most 2^-52 (an exp within a few ulps of glibc's: the ratio's relative error ~2^-50, times
# erfc < 0.16, plus 1 - y's rounding), far below this margin
cdef double _ERF_FAR_MARGIN = 3.552713678800501e-15  # 2^-48


cdef inline float _erf_near(float v) noexcept nogil:
    """erf of float32 v with |v| <= 1 as scipy's float32 erf loop computes it (``cy/glue.h`` dse_erf_near1: cephes'
    erf in double, x P(x^2) / Q(x^2), Horner's order, no fused multiply-add, rounded to float32; dse_erf_near runs
    it on 8 double lanes at the avx512 level). The same bits on all float32 |v| <= 1 (tests: the slow sweep over
    every float32); larger |v| and NaN take the loop."""
    return dse_erf_near1(v)


def erf_loop_found() -> bool:
    """Whether scipy.special.erf (a numpy ufunc) has a float32 loop :func:`float_gelu` can call."""
    global _erf_loop_state, _ERF_LOOP, _EXP64_LOOP
    if _erf_loop_state == 0:
        try:
            from scipy.special import erf
            if not isinstance(erf, np.ufunc) or erf.nin != 1 or erf.nout != 1:
                raise TypeError("scipy.special.erf is not a unary numpy ufunc")
            _ERF_LOOP = _float32_loop(erf)
            _erf_loop_state = 1
            _check_erf_near(erf)
        except (ImportError, TypeError, ValueError, RuntimeError):
            _erf_loop_state = -1
        if _erf_loop_state == 1 and _erf_near_ok:
            try:
                _EXP64_LOOP = _float32_loop(np.exp, "d")
                _check_erf_far(erf)
            except RuntimeError:
                pass
    return _erf_loop_state == 1


cdef _check_erf_near(erf):
    """Whether :func:`_erf_near` matches this scipy's erf on every 2^12-th float32 of [-1, 1] and the edges (else
    float_gelu calls the loop for every value)."""
    global _erf_near_ok
    b = np.concatenate([np.arange(0, 0x3F800001, 4096, dtype=np.uint32), np.arange(0x3F7FF000, 0x3F800001,
                                                                                     dtype=np.uint32)])
    v = np.concatenate([b, b | np.uint32(0x80000000)]).view(np.float32)
    want = erf(v)
    cdef float[::1] vv = v
    got = np.empty_like(v)
    cdef float[::1] gv = got
    cdef Py_ssize_t j
    for j in range(v.shape[0]):
        gv[j] = _erf_near(vv[j])
    _erf_near_ok = bool(np.array_equal(got.view(np.uint32), want.view(np.uint32)))


def erf_near_used() -> bool:
    """Whether :func:`float_gelu` computes erf of |t| <= 1 itself (:func:`_erf_near`) rather than by scipy's loop."""
    return erf_loop_found() and _erf_near_ok


cdef _check_erf_far(erf):
    """Whether erf of 1 < |t| by :func:`_erf_chunk`'s far pass matches this scipy's erf on every 2^12-th float32 of
    (1, 16] and around 1 and 8 (else float_gelu leaves those values to the loop)."""
    global _erf_far_ok
    b = np.concatenate([np.arange(0x3F800001, 0x41800001, 4096, dtype=np.uint32),
                        np.arange(0x3F800001, 0x3F801001, dtype=np.uint32),
                        np.arange(0x40FFF000, 0x41001000, dtype=np.uint32)])
    v = np.concatenate([b, b | np.uint32(0x80000000)]).view(np.float32)
    want = erf(v)
    got = np.empty_like(v)
    cdef float[::1] vv = v
    cdef float[::1] gv = got
    cdef int64_t c0 = 0, n = v.shape[0]
    _erf_far_ok = True
    while c0 < n:
        _erf_chunk(&vv[c0], &gv[c0], min(2048, n - c0), 2, _level(None))
        c0 += 2048
    _erf_far_ok = bool(np.array_equal(got.view(np.uint32), want.view(np.uint32)))


def erf_far_used() -> bool:
    """Whether :func:`float_gelu` computes erf of 1 < |t| itself (cephes' erfc on numpy's float64 exp, where erf's
    double is not within _ERF_FAR_MARGIN of a float32 rounding boundary) rather than by scipy's loop."""
    return erf_loop_found() and _erf_near_ok and _erf_far_ok


cdef inline int _erf_mode(bint exact_erf) noexcept:
    return 0 if exact_erf or not _erf_near_ok else (2 if _erf_far_ok else 1)


cdef void _erf_chunk(const float *t, float *o, int64_t m, int mode, int level) noexcept nogil:
    """o = erf(t) on m <= 2048 float32 values as scipy's float32 loop gives it. ``mode`` 0: the loop on all; 1:
    |t| <= 1 by _erf_near (branch-free, vectorizable) and the rest (and NaN) gathered through the loop; 2: also
    1 < |t| < 8 by cephes' erfc as scipy computes it (``cy/glue.h`` dse_erf_far on numpy's float64 exp of -t^2: the
    exp may differ from glibc's by an ulp or two, so a value whose double lies within _ERF_FAR_MARGIN of a float32
    rounding boundary goes to the loop) and |t| >= 8 as +-1 (scipy's double rounds to 1 there)."""
    cdef float fin[2048]
    cdef float fout[2048]
    cdef int far[2048]
    cdef int fi[2048]
    cdef double fa[2048]
    cdef double zw[2048]
    cdef int64_t j, k = 0, kk = 0, nf = 0
    cdef int i
    cdef double a, w
    cdef float r
    cdef char *a2[2]
    cdef Py_ssize_t dims[1]
    cdef Py_ssize_t st2[2]
    st2[0] = st2[1] = 4
    if mode == 0:
        dims[0] = m
        a2[0], a2[1] = <char *>t, <char *>o
        _ERF_LOOP.fn(a2, dims, st2, _ERF_LOOP.data)
        return
    k = dse_erf_near(level, t, o, m, far)                              # |t| <= 1; far: the others' indices
    if k and mode == 2:
        for j in range(k):  # far[kk] keeps what the loop must do (kk <= j)
            i = far[j]
            a = fabs(<double>t[i])
            if a < 8.0:
                fa[nf] = a
                zw[nf] = -a * a
                fi[nf] = i
                nf += 1
            elif a >= 8.0:
                o[i] = 1.0 if t[i] > 0 else -1.0
            else:
                far[kk] = i
                kk += 1
        if nf:
            dims[0] = nf
            st2[0] = st2[1] = 8
            a2[0], a2[1] = <char *>zw, <char *>zw
            _EXP64_LOOP.fn(a2, dims, st2, _EXP64_LOOP.data)          # z = exp(-a a), in place
            st2[0] = st2[1] = 4
            dse_erf_far(level, fa, zw, nf)                           # w = 1 - erfc(a)
            for j in range(nf):
                w = zw[j]
                if <float>(w - _ERF_FAR_MARGIN) == <float>(w + _ERF_FAR_MARGIN):
                    r = <float>w
                    o[fi[j]] = r if t[fi[j]] > 0 else -r
                else:
                    far[kk] = fi[j]
                    kk += 1
        k = kk
    if k:
        for j in range(k):
            fin[j] = t[far[j]]
        dims[0] = k
        a2[0], a2[1] = <char *>fin, <char *>fout
        _ERF_LOOP.fn(a2, dims, st2, _ERF_LOOP.data)
        for j in range(k):
            o[far[j]] = fout[j]


def float_erf(const float[::1] x, float[::1] out, bint exact_erf=False, isa=None):
    """Writes out = scipy.special.erf(x) over float32 x, the loop's bits, chunk by chunk (see :func:`float_gelu`)."""
    cdef int level = _level(isa)
    cdef int64_t n = x.shape[0], c0, m
    if out.shape[0] != n:
        raise ValueError("float_erf: out must have x's length")
    if not erf_loop_found():
        raise RuntimeError("float_erf: scipy.special.erf has no float32 loop")
    cdef int mode = _erf_mode(exact_erf)
    with nogil:
        c0 = 0
        while c0 < n:
            m = min(2048, n - c0)
            _erf_chunk(&x[c0], &out[c0], m, mode, level)
            c0 += m


def float_gelu(const float[::1] x, float[::1] out, float cdiv, float cadd, float cmul, int order=0, bint exact_erf=False,
               isa=None):
    """Writes out = ((erf(x / cdiv) + cadd) * x) * cmul over float32 x as the exported GELU nodes Div, Erf, Add,
    Mul, Mul compute it in the emulator: numpy's own float32 loops of true_divide (cdiv second, stride 0) into a new
    buffer, scipy.special.erf's float32 values from it into out (:func:`_erf_chunk`), then add, multiply and multiply in place on out (the
    emulator's products written into their dying operand, dse.model.ops.binary_into), on chunks of SIGMOID_CHUNK
    values in cache: one pass over memory, the same bits. ``order`` bits give each binary node's operand order:
    1 add(cadd, e), 2 multiply(a, x) (else multiply(x, a)), 4 multiply(cmul, m). erf of |t| <= 1 by
    :func:`_erf_near` (the loop's bits, 3-4x faster than its branchy scalar code) where :func:`erf_near_used`, unless
    ``exact_erf`` (scipy's loop on every value). Needs :func:`erf_loop_found`. ``isa`` caps the level of the
    compiled erf passes (the same bits at every level)."""
    cdef int64_t n = x.shape[0], c0, m, chunk = 2048
    cdef int level = _level(isa)
    if out.shape[0] != n or not 0 <= order < 8:
        raise ValueError("float_gelu: out must have x's length and order be 0 .. 7")
    if not erf_loop_found():
        raise RuntimeError("float_gelu: scipy.special.erf has no float32 loop")
    _glue_loops()
    cdef float tmp[2048]
    cdef int mode = _erf_mode(exact_erf)
    cdef char *a3[3]
    cdef Py_ssize_t dims[1]
    cdef Py_ssize_t st3[3]
    cdef Py_ssize_t vs3[3]
    cdef Py_ssize_t sv3[3]
    st3[0] = st3[1] = st3[2] = 4
    vs3[0], vs3[1], vs3[2] = 4, 0, 4
    sv3[0], sv3[1], sv3[2] = 0, 4, 4
    if n == 0:
        return
    with nogil:
        c0 = 0
        while c0 < n:
            m = min(chunk, n - c0)
            dims[0] = m
            a3[0], a3[1], a3[2] = <char *>&x[c0], <char *>&cdiv, <char *>tmp
            _SIG_LOOPS[3].fn(a3, dims, vs3, _SIG_LOOPS[3].data)          # t = true_divide(x, cdiv)
            _erf_chunk(tmp, &out[c0], m, mode, level)                    # e = erf(t)
            a3[2] = <char *>&out[c0]
            if order & 1:
                a3[0], a3[1] = <char *>&cadd, <char *>&out[c0]
                _SIG_LOOPS[2].fn(a3, dims, sv3, _SIG_LOOPS[2].data)      # add(cadd, e, out=e)
            else:
                a3[0], a3[1] = <char *>&out[c0], <char *>&cadd
                _SIG_LOOPS[2].fn(a3, dims, vs3, _SIG_LOOPS[2].data)      # add(e, cadd, out=e)
            a3[0] = <char *>&out[c0] if order & 2 else <char *>&x[c0]
            a3[1] = <char *>&x[c0] if order & 2 else <char *>&out[c0]
            _SIG_LOOPS[4].fn(a3, dims, st3, _SIG_LOOPS[4].data)          # multiply(x, a, out=a) / (a, x)
            if order & 4:
                a3[0], a3[1] = <char *>&cmul, <char *>&out[c0]
                _SIG_LOOPS[4].fn(a3, dims, sv3, _SIG_LOOPS[4].data)      # multiply(cmul, p, out=p)
            else:
                a3[0], a3[1] = <char *>&out[c0], <char *>&cmul
                _SIG_LOOPS[4].fn(a3, dims, vs3, _SIG_LOOPS[4].data)      # multiply(p, cmul, out=p)
            c0 += m


def mul_planes_quantize(const float[::1] x, const float[::1] s, float qs, bint signed, isa=None, int threads=1):
    """uint8 patterns :func:`quantize` gives on the float32 product x * s[p] of each of the len(s) planes of x (x's
    length a multiple of len(s)), in one pass and without the product; AVX2 at level avx2 and above, the same bits."""
    cdef int level = _level(isa)
    cdef int64_t N = x.shape[0], P = s.shape[0]
    if P == 0 or N % P:
        raise ValueError(f"mul_planes_quantize: {N} values are not planes of {P} scalars")
    q = np.empty(N, dtype=np.uint8)
    cdef uint8_t[::1] qv = q
    if N:
        with nogil:
            dse_mul_planes_quant(level, &x[0], P, N // P, &s[0], qs, -128 if signed else 0, 127 if signed else 255,
                                 &qv[0], max(1, threads))
    return q


def add_act(const float[::1] a, const float[::1] b, act="none", float lo=-np.inf, float hi=np.inf, quant=None,
            isa=None, int threads=1, transposed=None, bint b_first=False):
    """(y, q): float32 y = act(a + b) (float32 add; ``act`` one of ACTS as :func:`dequantize` applies it) and, with
    ``quant`` = (scale, signed), q = the uint8 patterns :func:`quantize` gives on y (else None), in one pass over the
    flat tensors; AVX2 at level avx2 and above, the same bits. ``transposed`` = (R, C): a holds images of R x C
    values and b each image transposed (C x R: b's value (r, c) at c * R + r), read without a contiguous copy
    (``cy/glue.h`` dse_add_act_t), y in a's layout; ``b_first``: y = act(b + a) (numpy's operand order, which picks
    the NaN where both are NaN)."""
    cdef int level = _level(isa)
    cdef int64_t n = a.shape[0], R = 0, C = 0
    cdef int rc = 0
    if b.shape[0] != n:
        raise ValueError(f"add_act: operands of {n} and {b.shape[0]} elements")
    if transposed is not None:
        R, C = transposed
        if R < 1 or C < 1 or n % (R * C):
            raise ValueError(f"add_act: {n} values are not images of {R} x {C}")
    elif b_first:
        raise ValueError("add_act: b_first goes with a transposed b")
    cdef int kind = ACTS.index(act)
    y = np.empty(n, dtype=np.float32)
    cdef float[::1] yv = y
    q = None
    cdef uint8_t *qp = NULL
    cdef uint8_t[::1] qv
    cdef float qs = 1
    cdef int qlo = 0, qhi = 255
    if quant is not None:
        qs, qlo, qhi = quant[0], (-128 if quant[1] else 0), (127 if quant[1] else 255)
        q = np.empty(n, dtype=np.uint8)
        if n:
            qv = q
            qp = &qv[0]
    if n and R:
        with nogil:
            rc = dse_add_act_t(level, &a[0], &b[0], n // (R * C), R, C, 1 if b_first else 0, kind, lo, hi, &yv[0], qp,
                               qs, qlo, qhi, max(1, threads))
        if rc != 0:
            raise MemoryError("add_act: scratch buffers could not be allocated")
    elif n:
        with nogil:
            dse_add_act(level, &a[0], &b[0], n, kind, lo, hi, &yv[0], qp, qs, qlo, qhi, max(1, threads))
    return y, q
