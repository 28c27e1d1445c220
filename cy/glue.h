/* Glue ops of a network run outside the MAC kernels, with runtime ISA dispatch (levels of cy/lut_kernel.h).
 *
 * dse_max_pool: 2-D max pooling of float32 NCHW planes (ONNX MaxPool: kernel, stride, dilation, pads top/left, the
 * output size from the caller, so ceil mode and the end pads are in Ho/Wo). Each output is numpy's running maximum
 * np.maximum(acc, v) over its window's taps in row-major (i, j) order, starting from -inf (the padding's fill):
 *   maximum(a, b) = a if a is NaN, else (a > b ? a : b)   -- b on ties (+0 vs -0) and when only b is NaN.
 * Padded taps are skipped: maximum(acc, -inf) returns acc except for acc == -inf, where it returns the same -inf bits,
 * so skipping them gives the same bits as reading them. A window without an input element gives -inf.
 *
 * Work is split over the B * C planes (OpenMP); every output is computed by one thread in the same tap order, so the
 * result does not depend on the thread count. Separable (rows, then columns) for strides 1 and 2: AVX-512 (16
 * outputs per step) at level >= 2, AVX2 (8 outputs per step) at level >= 1; portable code below that and for other
 * strides, the same bits.
 *
 * dse_add_act: y = act(a + b) on float32 tensors of one shape (the float32 add, then dse_act1 of cy/lut_kernel.h:
 * numpy's maximum(y, 0) or clip(y, lo, hi)) and, with q, q = dse_quantize1(y) (the next MAC layers' input patterns)
 * in the same pass. Chunks of the flat tensor over the threads; AVX2 at level >= 1, the same bits.
 *
 * dse_mul_planes_quant: q = dse_quantize1(x * s[p]) over P planes of n float32 values, each plane p times its own
 * float32 scalar (a float Mul of a tensor by a per-channel one, as squeeze-and-excitation scales its input) read only
 * by MAC layers: their input patterns without the float32 product. The float32 product is IEEE's whichever operand
 * comes first (where both are NaN the quantization gives 0 for either NaN). Planes over the threads; AVX2 at level
 * >= 1, the same bits.
 */
#ifndef DSE_GLUE_H
#define DSE_GLUE_H

#include <math.h>
#include <stdint.h>
#include <immintrin.h>

#include "lut_kernel.h" /* DSE_ISA_*, DSE_T_AVX2 */

static inline float dse_np_maximum(float a, float b)
{
    return (a != a || a > b) ? a : b;
}

/* numpy's maximum on 8 lanes: vmaxps(a, b) is (a > b ? a : b) and b when either is NaN; the lanes where a is NaN
 * then take a. */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256 dse_np_maximum8(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

/* Outputs [o0, o1) of one row take tap column j: input column o * sw + off lies in [0, W). */
static inline void dse_tap_range(int64_t W, int64_t Wo, int64_t sw, int64_t off, int64_t *o0, int64_t *o1)
{
    int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
    *o0 = lo;
    *o1 = hi < Wo ? hi : Wo;
}

/* acc[o] = maximum(acc[o], row[o * sw + off]) for o in [o0, o1). */
static void dse_max_row(float *acc, const float *row, int64_t sw, int64_t off, int64_t o0, int64_t o1)
{
    for (int64_t o = o0; o < o1; o++)
        acc[o] = dse_np_maximum(acc[o], row[o * sw + off]);
}

/* The separable pass's outputs its vector steps leave, one by one: hrow[o] for o < Wo outside [v0, v1) (the running
 * maximum of row[o sw + j dw - pl] over the taps j whose column lies in [0, W)), and output columns [c0, Wo) of one
 * output row (the running maximum over the hr values of its kh taps' rows ih0 + i dh that lie in [0, H)). */
static void dse_max_hrow_edges(const float *row, int64_t W, int64_t Wo, int64_t kw, int64_t sw, int64_t pl,
                               int64_t dw, int64_t v0, int64_t v1, float *hrow)
{
    for (int64_t o = 0; o < Wo; o++) {
        if (o == v0)
            o = v1;
        if (o >= Wo)
            break;
        float acc = -INFINITY;
        for (int64_t j = 0; j < kw; j++) {
            const int64_t c = o * sw - pl + j * dw;
            if (c >= 0 && c < W)
                acc = dse_np_maximum(acc, row[c]);
        }
        hrow[o] = acc;
    }
}

static void dse_max_cols_from(const float *hr, int64_t ih0, int64_t dh, int64_t kh, int64_t H, int64_t Wo, int64_t c0,
                              float *o)
{
    for (int64_t c = c0; c < Wo; c++) {
        float acc = -INFINITY;
        for (int64_t i = 0, ih = ih0; i < kh; i++, ih += dh)
            if (ih >= 0 && ih < H)
                acc = dse_np_maximum(acc, hr[ih * Wo + c]);
        o[c] = acc;
    }
}

/* Whether one row's separable pass has vector steps of ``step`` outputs: steps whose taps all lie in the row (a
 * step's columns reach (kw - 1) dw + (step - 1) sw past its first one), starting at *v0 = the first output whose
 * taps are all in the row, up to the last start that keeps the step in the row and in [0, Wo) (the last step
 * overlapping the one before it); [*v0, *v1) the outputs they cover, else *v0 = *v1 = Wo. */
static inline int dse_max_hrow_steps(int64_t W, int64_t Wo, int64_t kw, int64_t sw, int64_t pl, int64_t dw,
                                     int64_t step, int64_t *v0, int64_t *v1)
{
    const int64_t span = (kw - 1) * dw + (step - 1) * sw;
    const int64_t lo = (pl + sw - 1) / sw;
    const int64_t hi = W - 1 - span + pl < 0 ? -1 : (W - 1 - span + pl) / sw;
    const int64_t last = hi < Wo - step ? hi : Wo - step;
    *v0 = *v1 = Wo;
    if (hi < lo || Wo < step || last < lo)
        return 0;
    *v0 = lo, *v1 = last + step;
    return 1;
}

/* The separable pass for strides sw 1 and 2 (AVX-512 here, its AVX2 twins below): each input row's running maximum
 * over the kw taps of every output column (hrow), then each output's running maximum over its kh rows' hrow values,
 * both in tap order from -inf over the valid taps. maximum is associative (non-NaN: the last operand attaining the
 * largest value, which decides the bits of +0 vs -0 ties; else the first NaN), so folding the row-major tap sequence
 * row by row gives the same bits as folding it tap by tap, and a row without valid taps (-inf) changes nothing. 16
 * outputs per step, steps where every tap lies in the row (the last step overlaps the one before it: the same values
 * rewritten), the outputs left at the edges one by one; no masked loads (those whose masked-off lanes left the row
 * were slow). */
DSE_T_512 static inline __attribute__((always_inline)) __m512 dse_np_maximum16(__m512 a, __m512 b)
{
    return _mm512_mask_mov_ps(_mm512_max_ps(a, b), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}

/* hrow[o], o < Wo: the running maximum of row[o sw + j dw - pl] over the taps j whose column lies in [0, W). */
DSE_T_512 static void dse_max_hrow512(const float *row, int64_t W, int64_t Wo, int64_t kw, int64_t sw, int64_t pl,
                                     int64_t dw, float *hrow)
{
    /* lane i takes element 2 i of the 31 from the window's start: elements 0..15 of the first load, 15..30 of the
     * second (which starts 15 on, so that it ends at the last element used) */
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31);
    int64_t v0, v1;
    if (dse_max_hrow_steps(W, Wo, kw, sw, pl, dw, 16, &v0, &v1)) {
        for (int64_t o0 = v0;; o0 += 16) {
            if (o0 > v1 - 16)
                o0 = v1 - 16;
            __m512 acc = _mm512_set1_ps(-INFINITY);
            for (int64_t j = 0; j < kw; j++) {
                const float *p = row + o0 * sw - pl + j * dw;
                const __m512 v = sw == 1 ? _mm512_loadu_ps(p)
                                         : _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 15));
                acc = dse_np_maximum16(acc, v);
            }
            _mm512_storeu_ps(hrow + o0, acc);
            if (o0 == v1 - 16)
                break;
        }
    }
    dse_max_hrow_edges(row, W, Wo, kw, sw, pl, dw, v0, v1, hrow);
}

/* Outputs [0, Wo) of one output row at o: the running maximum over the hrow values (hr, Wo apart) of its kh taps'
 * rows ih0 + i dh that lie in [0, H), 16 per step (the last step overlapping the one before it), rows narrower than a
 * step one by one. */
DSE_T_512 static void dse_max_cols512(const float *hr, int64_t ih0, int64_t dh, int64_t kh, int64_t H, int64_t Wo,
                                      float *o)
{
    int64_t o0 = 0;
    for (; Wo >= 16; o0 += 16) {
        if (o0 > Wo - 16)
            o0 = Wo - 16;
        __m512 acc = _mm512_set1_ps(-INFINITY);
        for (int64_t i = 0, ih = ih0; i < kh; i++, ih += dh)
            if (ih >= 0 && ih < H)
                acc = dse_np_maximum16(acc, _mm512_loadu_ps(hr + ih * Wo + o0));
        _mm512_storeu_ps(o + o0, acc);
        if (o0 == Wo - 16)
            break;
    }
    dse_max_cols_from(hr, ih0, dh, kh, H, Wo, Wo >= 16 ? Wo : 0, o);
}

/* The AVX2 twins of dse_max_hrow512 and dse_max_cols512: 8 outputs per step; at stride 2 a step's 8 columns
 * (elements 0, 2, .., 14 from the window's start) from two loads 7 apart (elements 0..7 and 7..14, so that the
 * second ends at the last element used), each permuted within the register and blended. */
DSE_T_AVX2 static void dse_max_hrow_avx2(const float *row, int64_t W, int64_t Wo, int64_t kw, int64_t sw, int64_t pl,
                                         int64_t dw, float *hrow)
{
    const __m256i i0 = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0), i1 = _mm256_setr_epi32(0, 0, 0, 0, 1, 3, 5, 7);
    int64_t v0, v1;
    if (dse_max_hrow_steps(W, Wo, kw, sw, pl, dw, 8, &v0, &v1)) {
        for (int64_t o0 = v0;; o0 += 8) {
            if (o0 > v1 - 8)
                o0 = v1 - 8;
            __m256 acc = _mm256_set1_ps(-INFINITY);
            for (int64_t j = 0; j < kw; j++) {
                const float *p = row + o0 * sw - pl + j * dw;
                const __m256 v = sw == 1 ? _mm256_loadu_ps(p)
                                         : _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(p), i0),
                                                           _mm256_permutevar8x32_ps(_mm256_loadu_ps(p + 7), i1),
                                                           0xF0);
                acc = dse_np_maximum8(acc, v);
            }
            _mm256_storeu_ps(hrow + o0, acc);
            if (o0 == v1 - 8)
                break;
        }
    }
    dse_max_hrow_edges(row, W, Wo, kw, sw, pl, dw, v0, v1, hrow);
}

DSE_T_AVX2 static void dse_max_cols_avx2(const float *hr, int64_t ih0, int64_t dh, int64_t kh, int64_t H, int64_t Wo,
                                         float *o)
{
    int64_t o0 = 0;
    for (; Wo >= 8; o0 += 8) {
        if (o0 > Wo - 8)
            o0 = Wo - 8;
        __m256 acc = _mm256_set1_ps(-INFINITY);
        for (int64_t i = 0, ih = ih0; i < kh; i++, ih += dh)
            if (ih >= 0 && ih < H)
                acc = dse_np_maximum8(acc, _mm256_loadu_ps(hr + ih * Wo + o0));
        _mm256_storeu_ps(o + o0, acc);
        if (o0 == Wo - 8)
            break;
    }
    dse_max_cols_from(hr, ih0, dh, kh, H, Wo, Wo >= 8 ? Wo : 0, o);
}

/* One plane (H x W at xp) into its Ho x Wo outputs at op, separable (level avx2 or avx512); hr: H Wo floats of
 * scratch, done: H bytes. Each input row's hrow is computed once, when the first output row that reads it comes. */
static void dse_max_plane_sep(int level, const float *xp, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                              float *op, float *hr, uint8_t *done)
{
    memset(done, 0, (size_t)H);
    for (int64_t oh = 0; oh < Ho; oh++) {
        for (int64_t i = 0; i < kh; i++) {
            const int64_t ih = oh * sh - pt + i * dh;
            if (ih >= 0 && ih < H && !done[ih]) {
                (level >= DSE_ISA_AVX512 ? dse_max_hrow512 : dse_max_hrow_avx2)(xp + ih * W, W, Wo, kw, sw, pl, dw,
                                                                                  hr + ih * Wo);
                done[ih] = 1;
            }
        }
        (level >= DSE_ISA_AVX512 ? dse_max_cols512 : dse_max_cols_avx2)(hr, oh * sh - pt, dh, kh, H, Wo,
                                                                          op + oh * Wo);
    }
}

/* One plane (H x W at xp) into its Ho x Wo outputs at op, at the given level; hr (H Wo floats) and done (H bytes):
 * the separable pass's scratch where dse_max_sep holds, else unused. */
static inline int dse_max_sep(int level, int64_t sw)
{
    return level >= DSE_ISA_AVX2 && (sw == 1 || sw == 2);
}

static void dse_max_plane(int level, const float *xp, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                          float *op, float *hr, uint8_t *done)
{
    if (dse_max_sep(level, sw)) {
        dse_max_plane_sep(level, xp, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, op, hr, done);
        return;
    }
    for (int64_t oh = 0; oh < Ho; oh++) {
        float *acc = op + oh * Wo;
        for (int64_t o = 0; o < Wo; o++)
            acc[o] = -INFINITY;
        for (int64_t i = 0; i < kh; i++) {
            const int64_t ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= H)
                continue;
            const float *row = xp + ih * W;
            for (int64_t j = 0; j < kw; j++) {
                const int64_t off = j * dw - pl;
                int64_t o0, o1;
                dse_tap_range(W, Wo, sw, off, &o0, &o1);
                dse_max_row(acc, row, sw, off, o0, o1);
            }
        }
    }
}

static void dse_max_pool(int level, const float *x, int64_t P, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho,
                         int64_t Wo, float *out, int nt)
{
#pragma omp parallel num_threads(nt)
    {
    const int sep = dse_max_sep(level, sw);
    float *hr = sep ? (float *)malloc((size_t)(H * Wo) * sizeof(float)) : NULL;
    uint8_t *done = sep ? (uint8_t *)malloc((size_t)H) : NULL;
    const int lv = sep && !(hr && done) ? DSE_ISA_SCALAR : level; /* no scratch: the row loop */
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; p++)
        dse_max_plane(lv, x + p * H * W, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, out + p * Ho * Wo, hr, done);
    free(hr);
    free(done);
    }
}

/* Elements [i0, i1) of dse_add_act; act and quant are constants of each instance (no branch in the loop). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_add_act_avx2(const float *a, const float *b, int64_t i0, int64_t i1, float lo, float hi, float *y, uint8_t *q,
                 float qs, int qlo, int qhi, const int act, const int quant)
{
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), vqs = _mm256_set1_ps(qs),
                 vqlo = _mm256_set1_ps((float)qlo), vqhi = _mm256_set1_ps((float)qhi);
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 v = dse_act8(_mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)), act, vlo, vhi);
        _mm256_storeu_ps(y + i, v);
        if (quant)
            dse_quantize8(v, vqs, vqlo, vqhi, q + i);
    }
    for (; i < i1; i++) {
        y[i] = dse_act1(a[i] + b[i], act, lo, hi);
        if (quant)
            q[i] = dse_quantize1(y[i], qs, qlo, qhi);
    }
}

#define DSE_ADD_INSTANCE(act, quant)                                                                                   \
    DSE_T_AVX2 static void dse_add_act_##act##_##quant(const float *a, const float *b, int64_t i0, int64_t i1,        \
                                                      float lo, float hi, float *y, uint8_t *q, float qs, int qlo,    \
                                                      int qhi)                                                        \
    {                                                                                                                  \
        dse_add_act_avx2(a, b, i0, i1, lo, hi, y, q, qs, qlo, qhi, act, quant);                                        \
    }
DSE_ADD_INSTANCE(0, 0) DSE_ADD_INSTANCE(0, 1) DSE_ADD_INSTANCE(1, 0)
DSE_ADD_INSTANCE(1, 1) DSE_ADD_INSTANCE(2, 0) DSE_ADD_INSTANCE(2, 1)
typedef void (*dse_add_fn)(const float *, const float *, int64_t, int64_t, float, float, float *, uint8_t *, float,
                           int, int);
static const dse_add_fn dse_add_fns[6] = {dse_add_act_0_0, dse_add_act_0_1, dse_add_act_1_0,
                                          dse_add_act_1_1, dse_add_act_2_0, dse_add_act_2_1};

static void dse_add_act(int level, const float *a, const float *b, int64_t n, int act, float lo, float hi, float *y,
                        uint8_t *q, float qs, int qlo, int qhi, int nt)
{
    const int64_t chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t i0 = c * chunk, i1 = (n - i0 < chunk) ? n : i0 + chunk;
        if (level >= DSE_ISA_AVX2) {
            dse_add_fns[2 * act + (q != NULL)](a, b, i0, i1, lo, hi, y, q, qs, qlo, qhi);
            continue;
        }
        for (int64_t i = i0; i < i1; i++) {
            y[i] = dse_act1(a[i] + b[i], act, lo, hi);
            if (q)
                q[i] = dse_quantize1(y[i], qs, qlo, qhi);
        }
    }
}

/* Rows r0 .. r0 + nr - 1 (nr <= 8) of one image of R x C values given transposed (bt [C, R]: value (r, c) at
 * bt[c * R + r]) into buf [nr, C]: 8 x 8 tiles by AVX2 transposes, the edges one value at a time. */
DSE_T_AVX2 static void dse_t_rows_avx2(const float *bt, int64_t R, int64_t C, int64_t r0, int64_t nr, float *buf)
{
    int64_t c = 0;
    if (nr == 8)
        for (; c + 8 <= C; c += 8)
            dse_t8x8_32_avx2(bt + c * R + r0, R, buf + c, C);
    for (; c < C; c++)
        for (int64_t j = 0; j < nr; j++)
            buf[j * C + c] = bt[c * R + r0 + j];
}

/* dse_add_act of a [B, R, C] (contiguous) and b given transposed per image (bt [B, C, R]: b[i, r, c] = bt[i, c, r],
 * e.g. a conv's [B, C, P] output read channels-last), without b's contiguous copy: blocks of 8 rows of b transposed
 * into a buffer in cache, then dse_add_act's own elementwise pass on them (so the same bits); ``b_first``: b is the
 * first operand (b + a: where both are NaN, the first operand's NaN, as numpy's add). */
static int dse_add_act_t(int level, const float *a, const float *bt, int64_t B, int64_t R, int64_t C, int b_first,
                         int act, float lo, float hi, float *y, uint8_t *q, float qs, int qlo, int qhi, int nt)
{
    const int64_t nrb = (R + 7) / 8, ntask = B * nrb;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        float *buf = (float *)malloc((size_t)(8 * C) * sizeof(float) + 1);
        if (dse_team_allocated(&fail, buf != NULL)) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < ntask; t++) {
                const int64_t i = t / nrb, r0 = (t % nrb) * 8, nr = R - r0 < 8 ? R - r0 : 8, e = nr * C;
                const int64_t o = (i * R + r0) * C;
                const float *bi = bt + i * C * R;
                uint8_t *qo = q ? q + o : NULL;
                if (level >= DSE_ISA_AVX2) {
                    dse_t_rows_avx2(bi, R, C, r0, nr, buf);
                    dse_add_fns[2 * act + (q != NULL)](b_first ? buf : a + o, b_first ? a + o : buf, 0, e, lo, hi,
                                                       y + o, qo, qs, qlo, qhi);
                    continue;
                }
                for (int64_t c = 0; c < C; c++)
                    for (int64_t j = 0; j < nr; j++)
                        buf[j * C + c] = bi[c * R + r0 + j];
                for (int64_t k = 0; k < e; k++) {
                    y[o + k] = dse_act1(b_first ? buf[k] + a[o + k] : a[o + k] + buf[k], act, lo, hi);
                    if (q)
                        qo[k] = dse_quantize1(y[o + k], qs, qlo, qhi);
                }
            }
        }
        free(buf);
    }
    return fail ? -1 : 0;
}

DSE_T_AVX2 static void dse_mul_quant_avx2(const float *x, int64_t n, float s, float qs, int qlo, int qhi, uint8_t *q)
{
    const __m256 vs = _mm256_set1_ps(s), vqs = _mm256_set1_ps(qs), vqlo = _mm256_set1_ps((float)qlo),
                 vqhi = _mm256_set1_ps((float)qhi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        dse_quantize8(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), vqs, vqlo, vqhi, q + i);
    for (; i < n; i++)
        q[i] = dse_quantize1(x[i] * s, qs, qlo, qhi);
}

static void dse_mul_planes_quant(int level, const float *x, int64_t P, int64_t n, const float *s, float qs, int qlo,
                                 int qhi, uint8_t *q, int nt)
{
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < P; p++) {
        if (level >= DSE_ISA_AVX2) {
            dse_mul_quant_avx2(x + p * n, n, s[p], qs, qlo, qhi, q + p * n);
            continue;
        }
        for (int64_t i = 0; i < n; i++)
            q[p * n + i] = dse_quantize1(x[p * n + i] * s[p], qs, qlo, qhi);
    }
}

/* numpy's pairwise summation of n float32 values (its FLOAT_pairwise_sum, what np.add.reduce does along a
 * contiguous axis): fewer than 8 in order from 0; up to 128 in 8 running sums combined as ((r0 + r1) + (r2 + r3)) +
 * ((r4 + r5) + (r6 + r7)), then the rest in order; more as two halves, the first a multiple of 8 long. */
static inline __attribute__((always_inline)) float dse_pairwise_short_f32(const float *a, int64_t n)
{
    if (n < 8) {
        float res = 0.0f;
        for (int64_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    float r[8];
    int64_t i;
    for (int j = 0; j < 8; j++)
        r[j] = a[j];
    for (i = 8; i < n - (n % 8); i += 8)
        for (int j = 0; j < 8; j++)
            r[j] += a[i + j];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        res += a[i];
    return res;
}

static float dse_pairwise_f32(const float *a, int64_t n)
{
    if (n <= 128)
        return dse_pairwise_short_f32(a, n);
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return dse_pairwise_f32(a, n2) + dse_pairwise_f32(a + n2, n - n2);
}

/* GlobalAveragePool of P planes of n float32 values: out[p] = (0 + pairwise sum) / n in float32, numpy's float32
 * mean over the plane (its reduction adds the row's pairwise sum to the identity 0, then divides by the count). */
static void dse_global_avg_pool(const float *x, int64_t P, int64_t n, float *out, int nt)
{
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t p = 0; p < P; p++)
        out[p] = (0.0f + dse_pairwise_f32(x + p * n, n)) / (float)n;
}

/* numpy's own float32 ufunc inner loops (dse_np_loop, lut_kernel.h), taken from the ufuncs' loop tables by
 * cy/kernels.pyx: the passes below call them where their bits are numpy's choice (which NaN a reduction or a
 * two-operand op returns, the SIMD exp), and do the rest (subtract, divide: IEEE operations whose NaN result is the
 * first NaN operand, on x86 as in numpy's own loops) in place. */

/* *acc = reduce(*acc, a[0 .. n)) by the loop as numpy's reductions call it along a contiguous axis (args (acc, a,
 * acc), steps (0, 4, 0)): add's loop then adds numpy's pairwise sum of a to *acc, maximum's its SIMD maximum. */
static inline void dse_np_reduce(dse_np_loop lp, float *acc, const float *a, int64_t n)
{
    char *args[3] = {(char *)acc, (char *)a, (char *)acc};
    intptr_t dims[1] = {(intptr_t)n}, steps[3] = {0, 4, 0};
    lp.fn(args, dims, steps, lp.data);
}

/* y = op(a, b) elementwise over n values with b's stride sb (0: one value) by the loop. */
static inline void dse_np_binary(dse_np_loop lp, const float *a, const float *b, intptr_t sb, float *y, int64_t n)
{
    char *args[3] = {(char *)a, (char *)b, (char *)y};
    intptr_t dims[1] = {(intptr_t)n}, steps[3] = {4, sb, 4};
    lp.fn(args, dims, steps, lp.data);
}

/* The largest of a[0 .. n) (n >= 1) where none is NaN (*nan = 0; which zero of +-0 is unspecified), else *nan = 1:
 * in 8 running maxima (plain compares and selects, no fast-math). */
static inline __attribute__((always_inline)) float dse_row_max_f32(const float *a, int64_t n, int *nan)
{
    float r[8];
    int u[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (int j = 0; j < 8; j++)
        r[j] = a[0];
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            const float v = a[i + j];
            u[j] |= v != v;
            r[j] = v > r[j] ? v : r[j];
        }
    int un = 0;
    for (; i < n; i++) {
        un |= a[i] != a[i];
        r[0] = a[i] > r[0] ? a[i] : r[0];
    }
    float m = r[0];
    for (int j = 0; j < 8; j++) {
        un |= u[j];
        m = r[j] > m ? r[j] : m;
    }
    *nan = un;
    return m;
}

/* dse_row_max_f32 and dse_pairwise_short_f32 on 8 lanes (the same compares and additions in the same order). */
DSE_T_AVX2 static float dse_row_max_avx2(const float *a, int64_t n, int *nan)
{
    if (n < 8)
        return dse_row_max_f32(a, n, nan);
    __m256 m = _mm256_loadu_ps(a), u = _mm256_cmp_ps(m, m, _CMP_UNORD_Q);
    for (int64_t i = 8; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(a + (n - i < 8 ? n - 8 : i)); /* the last 8 again where n % 8 */
        u = _mm256_or_ps(u, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        m = _mm256_max_ps(m, v);
    }
    *nan = _mm256_movemask_ps(u) != 0;
    m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4E));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xB1));
    return _mm256_cvtss_f32(m);
}

DSE_T_AVX2 static float dse_pairwise_short_avx2(const float *a, int64_t n)
{
    if (n < 8)
        return dse_pairwise_short_f32(a, n);
    __m256 v = _mm256_loadu_ps(a);
    int64_t i;
    for (i = 8; i < n - (n % 8); i += 8)
        v = _mm256_add_ps(v, _mm256_loadu_ps(a + i));
    float r[8];
    _mm256_storeu_ps(r, v);
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        res += a[i];
    return res;
}

/* Values per block of rows of dse_softmax_rows (its exp call runs on one block while it is in L1). */
#define DSE_SOFTMAX_BLOCK 2048

/* Softmax over the last axis of R contiguous rows of n >= 1 float32 values, with the bits of dse.model.ops'
 * numpy expression e = exp(x - x.max(-1, keepdims)); e / e.sum(-1, keepdims): per row m = x[0] reduced with
 * maximum's loop over x[1 .. n) (numpy's reduction without identity starts from the first element), t = x - m,
 * then exp's loop on a block of rows (its values are lane-wise, independent of where a call starts), s = 0 + the
 * rows' sum by add's loop (the identity, then numpy's pairwise order), e / s. Rows without a NaN take their maximum
 * from dse_row_max_f32 instead (the same value; where it is a zero its sign cannot show: x - m then differs at most
 * in a zero's sign, and exp(+-0) = 1) and e's rows without a NaN their sum from dse_pairwise_f32 (0 + the pairwise
 * sum: add's loop's own order and operations); a NaN row calls the loops, whose NaN it takes. With ``scaled`` the softmax of x *
 * scale (a float32 Mul by a constant before it, e.g. attention's 1/sqrt(d), in the same pass: the products staged in
 * the output row; scale not NaN, so the product's NaN is x's, as numpy's multiply returns it). lp: maximum, exp,
 * add. Row blocks over nt threads; every row is computed the same way whatever the thread count. */
static inline __attribute__((always_inline)) void dse_softmax_block(const float *x, int64_t R, int64_t n,
                                                                     float *out, const dse_np_loop *lp, int scaled,
                                                                     float scale, int64_t r0, int64_t r1,
                                                                     const int avx2)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        if (scaled) {
            for (int64_t i = 0; i < n; i++)
                o[i] = xr[i] * scale;
            xr = o;
        }
        int nan;
        float m = avx2 ? dse_row_max_avx2(xr, n, &nan) : dse_row_max_f32(xr, n, &nan);
        if (nan) {
            m = xr[0];
            if (n > 1)
                dse_np_reduce(lp[0], &m, xr + 1, n - 1);
        }
        for (int64_t i = 0; i < n; i++)
            o[i] = xr[i] - m;
    }
    {
        char *args[2] = {(char *)(out + r0 * n), (char *)(out + r0 * n)};
        intptr_t dims[1] = {(intptr_t)((r1 - r0) * n)}, steps[2] = {4, 4};
        lp[1].fn(args, dims, steps, lp[1].data);
    }
    for (int64_t r = r0; r < r1; r++) {
        float *o = out + r * n, s = 0.0f + (n > 128 ? dse_pairwise_f32(o, n) : avx2 ? dse_pairwise_short_avx2(o, n)
                                                                      : dse_pairwise_short_f32(o, n));
        if (s != s) {
            s = 0.0f;
            dse_np_reduce(lp[2], &s, o, n);
        }
        for (int64_t i = 0; i < n; i++)
            o[i] = o[i] / s;
    }
}

/* Rows [r0, r1) of dse_softmax_rows: the portable build and its AVX2 twin (the same IEEE operations on 8 lanes). */
static void dse_softmax_block_any(const float *x, int64_t R, int64_t n, float *out, const dse_np_loop *lp, int scaled,
                                  float scale, int64_t r0, int64_t r1)
{
    dse_softmax_block(x, R, n, out, lp, scaled, scale, r0, r1, 0);
}

DSE_T_AVX2 static void dse_softmax_block_avx2(const float *x, int64_t R, int64_t n, float *out, const dse_np_loop *lp,
                                              int scaled, float scale, int64_t r0, int64_t r1)
{
    dse_softmax_block(x, R, n, out, lp, scaled, scale, r0, r1, 1);
}

static void dse_softmax_rows(int level, const float *x, int64_t R, int64_t n, float *out, const dse_np_loop *lp,
                             int nt, int scaled, float scale)
{
    const int64_t rb = n >= DSE_SOFTMAX_BLOCK ? 1 : DSE_SOFTMAX_BLOCK / n, nb = (R + rb - 1) / rb;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t r0 = b * rb, r1 = R - r0 < rb ? R : r0 + rb;
        (level >= DSE_ISA_AVX2 ? dse_softmax_block_avx2 : dse_softmax_block_any)(x, R, n, out, lp, scaled, scale, r0,
                                                                                 r1);
    }
}

/* LayerNorm over the last axis of R contiguous rows of n >= 1 float32 values, with the bits of dse.model.ops' numpy
 * expression mu = x.mean(-1, keepdims, dtype=float32); d = x - mu; var = (d * d).mean(-1, keepdims, dtype=float32);
 * y = d / sqrt(var + eps) * scale (+ bias): each mean is 0 + the row's sum by add's loop (the identity, then numpy's
 * pairwise order; which NaN the sum returns is the loop's, and every value of a NaN row takes it), divided by n in
 * double and rounded to float32 (numpy's mean divides the float32 sum by an intp count: the float64 loop, cast
 * back); d is recomputed where needed (the same bits) and d * d staged in out. bias may be NULL. Where a NaN of
 * scale or bias meets a NaN value, the result is one of the two, as numpy's own loops pick either (by how its
 * iterator cuts the broadcast). lp: add. Rows over nt threads; every row is computed the same way whatever the
 * thread count. */
static inline __attribute__((always_inline)) void dse_layernorm_row(const float *xr, int64_t n, const float *scale,
                                                                     const float *bias, float eps, float *o,
                                                                     const dse_np_loop *lp)
{
    float s = 0.0f, v = 0.0f;
    dse_np_reduce(lp[0], &s, xr, n);
    const float mu = (float)((double)s / (double)n);
    for (int64_t i = 0; i < n; i++) {
        const float d = xr[i] - mu;
        o[i] = d * d;
    }
    dse_np_reduce(lp[0], &v, o, n);
    const float sd = sqrtf((float)((double)v / (double)n) + eps);
    if (bias)
        for (int64_t i = 0; i < n; i++)
            o[i] = (xr[i] - mu) / sd * scale[i] + bias[i];
    else
        for (int64_t i = 0; i < n; i++)
            o[i] = (xr[i] - mu) / sd * scale[i];
}

/* Rows [r0, r1) of dse_layernorm_rows: the portable build and its AVX2 twin (the same IEEE operations on 8 lanes). */
static void dse_layernorm_range_any(const float *x, int64_t r0, int64_t r1, int64_t n, const float *scale,
                                    const float *bias, float eps, float *out, const dse_np_loop *lp)
{
    for (int64_t r = r0; r < r1; r++)
        dse_layernorm_row(x + r * n, n, scale, bias, eps, out + r * n, lp);
}

DSE_T_AVX2 static void dse_layernorm_range_avx2(const float *x, int64_t r0, int64_t r1, int64_t n, const float *scale,
                                                const float *bias, float eps, float *out, const dse_np_loop *lp)
{
    for (int64_t r = r0; r < r1; r++)
        dse_layernorm_row(x + r * n, n, scale, bias, eps, out + r * n, lp);
}

/* Rows per block of dse_layernorm_rows (one call of a level's row loop). */
#define DSE_LAYERNORM_BLOCK 64

static void dse_layernorm_rows(int level, const float *x, int64_t R, int64_t n, const float *scale, const float *bias,
                               float eps, float *out, const dse_np_loop *lp, int nt)
{
    const int64_t nb = (R + DSE_LAYERNORM_BLOCK - 1) / DSE_LAYERNORM_BLOCK;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t r0 = b * DSE_LAYERNORM_BLOCK, r1 = R - r0 < DSE_LAYERNORM_BLOCK ? R : r0 + DSE_LAYERNORM_BLOCK;
        (level >= DSE_ISA_AVX2 ? dse_layernorm_range_avx2 : dse_layernorm_range_any)(x, r0, r1, n, scale, bias, eps,
                                                                                     out, lp);
    }
}

/* erf of float32 v with |v| <= 1 as scipy's float32 erf loop computes it: cephes' erf in double (x P(x^2) / Q(x^2),
 * Horner's order, no fused multiply-add: the build has -ffp-contract=off), rounded to float32. */
static inline __attribute__((always_inline)) float dse_erf_near1(float v)
{
    const double t = v, z = t * t;
    const double p = ((((9.60497373987051638749E0 * z + 9.00260197203842689217E1) * z + 2.23200534594684319226E3) * z +
                       7.00332514112805075473E3) * z + 5.55923013010394962768E4);
    const double q = (((((z + 3.35617141647503099647E1) * z + 5.21357949780152679795E2) * z + 4.59432382970980127987E3) *
                       z + 2.26290000613890934246E4) * z + 4.92673942608635921086E4);
    return (float)(t * p / q);
}

/* o[j] = dse_erf_near1(t[j]) for j0 <= j < m (every value: those with 1 < |t| or NaN are the caller's to overwrite)
 * and far[0 .. k) = the indices of those, in order; returns k. */
static inline __attribute__((always_inline)) int64_t dse_erf_near_body(const float *t, float *o, int64_t j0, int64_t m,
                                                                       int *far)
{
    for (int64_t j = j0; j < m; j++)
        o[j] = dse_erf_near1(t[j]);
    int64_t k = 0;
    for (int64_t j = j0; j < m; j++) {
        far[k] = (int)j;
        k += !(fabsf(t[j]) <= 1.0f);
    }
    return k;
}

static int64_t dse_erf_near_any(const float *t, float *o, int64_t m, int *far)
{
    return dse_erf_near_body(t, o, 0, m, far);
}

DSE_T_AVX2 static int64_t dse_erf_near_avx2(const float *t, float *o, int64_t m, int *far)
{
    return dse_erf_near_body(t, o, 0, m, far);
}

/* The same operations on 8 double lanes (cvtpd2ps rounds as the cast does, to nearest). */
DSE_T_512 static int64_t dse_erf_near_512(const float *t, float *o, int64_t m, int *far)
{
    const __m512d a0 = _mm512_set1_pd(9.60497373987051638749E0), a1 = _mm512_set1_pd(9.00260197203842689217E1),
                  a2 = _mm512_set1_pd(2.23200534594684319226E3), a3 = _mm512_set1_pd(7.00332514112805075473E3),
                  a4 = _mm512_set1_pd(5.55923013010394962768E4), b0 = _mm512_set1_pd(3.35617141647503099647E1),
                  b1 = _mm512_set1_pd(5.21357949780152679795E2), b2 = _mm512_set1_pd(4.59432382970980127987E3),
                  b3 = _mm512_set1_pd(2.26290000613890934246E4), b4 = _mm512_set1_pd(4.92673942608635921086E4);
    const __m256 one = _mm256_set1_ps(1.0f), absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    int64_t j = 0, k = 0;
    for (; j + 8 <= m; j += 8) {
        const __m256 v = _mm256_loadu_ps(t + j);
        const __m512d x = _mm512_cvtps_pd(v), z = _mm512_mul_pd(x, x);
        __m512d p = _mm512_add_pd(_mm512_mul_pd(a0, z), a1);
        p = _mm512_add_pd(_mm512_mul_pd(p, z), a2);
        p = _mm512_add_pd(_mm512_mul_pd(p, z), a3);
        p = _mm512_add_pd(_mm512_mul_pd(p, z), a4);
        __m512d q = _mm512_add_pd(z, b0);
        q = _mm512_add_pd(_mm512_mul_pd(q, z), b1);
        q = _mm512_add_pd(_mm512_mul_pd(q, z), b2);
        q = _mm512_add_pd(_mm512_mul_pd(q, z), b3);
        q = _mm512_add_pd(_mm512_mul_pd(q, z), b4);
        _mm256_storeu_ps(o + j, _mm512_cvtpd_ps(_mm512_div_pd(_mm512_mul_pd(x, p), q)));
        /* |v| <= 1 is false for 1 < |v| and NaN */
        unsigned bits = ~(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, absm), one, _CMP_LE_OQ)) & 0xFFu;
        while (bits) {
            far[k++] = (int)(j + __builtin_ctz(bits));
            bits &= bits - 1;
        }
    }
    return k + dse_erf_near_body(t, o, j, m, far + k);
}

static int64_t dse_erf_near(int level, const float *t, float *o, int64_t m, int *far)
{
    return (level >= DSE_ISA_AVX512 ? dse_erf_near_512 : level >= DSE_ISA_AVX2 ? dse_erf_near_avx2
                                                                                : dse_erf_near_any)(t, o, m, far);
}

/* erf of a in (1, 8) as scipy's erf computes it before its float32 loop rounds it (xsf/cephes ndtr.h: erf(a) =
 * 1 - erfc(a), erfc(a) = (z P(a)) / Q(a) with z = exp(-a a), P by polevl (degree 8), Q by p1evl (degree 8, leading
 * coefficient 1), Horner in double, no fused multiply-add: the build has -ffp-contract=off). zw: z in, that erf out;
 * the exp is the caller's. */
static inline __attribute__((always_inline)) void dse_erf_far_body(const double *a, double *zw, int64_t m)
{
    static const double P[9] = {2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
                                4.86371970985681366614E1,   1.96520832956077098242E2,  5.26445194995477358631E2,
                                9.34528527171957607540E2,   1.02755188689515710272E3,  5.57535335369399327526E2};
    static const double Q[8] = {1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
                                9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
                                1.65666309194161350182E3, 5.57535340817727675546E2};
    for (int64_t j = 0; j < m; j++) {
        const double x = a[j];
        double p = P[0], q = x + Q[0];
        for (int i = 1; i < 9; i++)
            p = p * x + P[i];
        for (int i = 1; i < 8; i++)
            q = q * x + Q[i];
        zw[j] = 1.0 - (zw[j] * p) / q;
    }
}

static void dse_erf_far_any(const double *a, double *zw, int64_t m)
{
    dse_erf_far_body(a, zw, m);
}

DSE_T_AVX2 static void dse_erf_far_avx2(const double *a, double *zw, int64_t m)
{
    dse_erf_far_body(a, zw, m);
}

DSE_T_512 static void dse_erf_far_512(const double *a, double *zw, int64_t m)
{
    dse_erf_far_body(a, zw, m);
}

static void dse_erf_far(int level, const double *a, double *zw, int64_t m)
{
    (level >= DSE_ISA_AVX512 ? dse_erf_far_512 : level >= DSE_ISA_AVX2 ? dse_erf_far_avx2 : dse_erf_far_any)(a, zw, m);
}

#endif
