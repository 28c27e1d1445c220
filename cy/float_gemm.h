/* Float32 convolution and GEMM whose bits depend on nothing but the operands (the float executor's MAC layers).
 *
 * Every output is ONE chain of correctly rounded fused multiply-adds over its K terms in ascending k, starting from
 * +0, then the bias added once:
 *     acc = +0;  for k = 0 .. K-1: acc = fmaf(a[k], w[k], acc);  out = acc + bias   (no bias: out = acc)
 * A convolution's k runs over (input channel of the group, kernel row, kernel column), the weights' order; a window
 * position in the padding is a term with a = 0 (it leaves acc unchanged unless w is inf or NaN). A vector FMA lane
 * rounds as fmaf does, so the AVX-512 (16 lanes), AVX2 (8 lanes) and portable (fmaf) paths give the same bits: the
 * lanes run over OUTPUTS, never over k, and no path reassociates or splits a chain. OpenMP threads split the outputs
 * only (each output is computed by one thread), and every image's outputs are computed alike wherever they fall in
 * a batch, so neither the thread count nor the batch split changes a bit.
 *
 * The GEMM view: C[r, c] = sum_k R[r, k] * S[k, c] per group g. R ("rows", a conv's weights, a GEMM's left operand)
 * is packed once per call into panels [K][MR] (MR rows broadcast per k); S ("columns", a conv's windows over all
 * images of the batch, or a strided matrix) is packed per task into one panel [K][NR] (NR columns in the vector
 * lanes) and the task then runs the micro-kernel over every row panel of its share: MR x NR accumulators held in
 * registers over the whole K (no k-blocking), the bias added, the tile stored into the output layout.
 * Depthwise convolutions (one input channel per output) run a direct loop on a zero-padded copy of each plane, the
 * same chain over the kernel taps.
 */
#ifndef DSE_FLOAT_GEMM_H
#define DSE_FLOAT_GEMM_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#include "lut_kernel.h" /* DSE_ISA_* levels */

#define DSE_T_F512 __attribute__((target("avx512f,fma")))
#define DSE_T_F256 __attribute__((target("avx2,fma")))

/* The level the float kernels run at: the requested one, AVX2 only with FMA3 (portable code below that). */
static inline int dse_fg_level(int level)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (level == DSE_ISA_AVX2) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("fma"))
            return DSE_ISA_SCALAR;
    }
#endif
    return level;
}

/* Threads for a call of ``work`` multiply-adds (the callers' choice): one per DSE_FG_WORK_PER_THREAD of them at
 * most (a parallel region costs microseconds on a quiet machine and milliseconds when another process holds a core;
 * a small GEMM, such as an attention head's, is done by then). The split changes no bit. */
#define DSE_FG_WORK_PER_THREAD (1LL << 22)
static inline int dse_fg_threads(int nt, double work)
{
    const double most = 1.0 + work / (double)DSE_FG_WORK_PER_THREAD;
    return nt < most ? nt : (int)most;
}

/* micro-tile: rows (broadcast) x columns (vector lanes) per ISA level */
static inline int dse_fg_mr(int level) { return level >= DSE_ISA_AVX512 ? 8 : level == DSE_ISA_AVX2 ? 6 : 4; }
static inline int dse_fg_nr(int level) { return level >= DSE_ISA_AVX512 ? 32 : level == DSE_ISA_AVX2 ? 16 : 8; }
#define DSE_FG_MAXTILE (8 * 32)

/* The column operand S[k, c] of group g: a conv's windows (c = image * P + output position, P = Ho * Wo) or a
 * strided matrix (src + g * gs)[k * sk + c * sc]. */
typedef struct {
    int conv;
    const float *src;
    int64_t sk, sc, gs;
    int64_t C, H, W, Cg, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo;
} dse_fg_cols;

/* The output: element (g, r, c) at out[g * gs + r * rs + (c / P) * img + (c % P)]; bias[g * bgs + r] (per row) or
 * bias[g * bgs + c] (per column), or none. */
typedef struct {
    float *out;
    int64_t gs, rs, P, img;
    const float *bias;
    int bias_rows;
    int64_t bgs;
} dse_fg_out;

/* ------------------------------------------------------------------ packing */
/* R panels of every group: dst[((g * nrb + rb) * K + k) * MR + i] = R[g][rb * MR + i][k] (0 past the R rows). */
static void dse_fg_pack_rows(const float *R, int64_t G, int64_t nr, int64_t K, int64_t ld, int64_t gs, int MR,
                             float *dst, int nt)
{
    const int64_t nrb = (nr + MR - 1) / MR;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < G * nrb; t++) {
        const int64_t g = t / nrb, rb = t % nrb;
        float *d = dst + t * K * MR;
        for (int i = 0; i < MR; i++) {
            const int64_t r = rb * MR + i;
            if (r < nr) {
                const float *s = R + g * gs + r * ld;
                for (int64_t k = 0; k < K; k++)
                    d[k * MR + i] = s[k];
            } else {
                for (int64_t k = 0; k < K; k++)
                    d[k * MR + i] = 0.0f;
            }
        }
    }
}

/* d[0 .. n) = row[iw0 + t * sw] where 0 <= iw0 + t * sw < W, else 0. */
static inline void dse_fg_copy_run(float *d, const float *row, int64_t iw0, int64_t sw, int64_t W, int64_t n)
{
    int64_t lo, hi; /* the valid t: lo <= t < hi (no division at stride 1: this runs once per run and tap) */
    if (sw == 1) {
        lo = iw0 >= 0 ? 0 : -iw0;
        hi = W - iw0;
    } else {
        lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
        hi = W - 1 - iw0 < 0 ? 0 : (W - 1 - iw0) / sw + 1;
    }
    if (lo > n) lo = n;
    if (hi > n) hi = n;
    if (hi < lo) hi = lo;
    for (int64_t t = 0; t < lo; t++)
        d[t] = 0.0f;
    if (sw == 1)
        memcpy(d + lo, row + iw0 + lo, (size_t)(hi - lo) * sizeof(float));
    else
        for (int64_t t = lo; t < hi; t++)
            d[t] = row[iw0 + t * sw];
    for (int64_t t = hi; t < n; t++)
        d[t] = 0.0f;
}

/* One column panel: bp[k * NR + j] = S[k, c0 + j] for j < nv, 0 for nv <= j < NR. */
static void dse_fg_pack_cols(const dse_fg_cols *s, int64_t g, int64_t K, int64_t c0, int64_t nv, int NR, float *bp)
{
    if (nv < NR)
        for (int64_t k = 0; k < K; k++)
            memset(bp + k * NR + nv, 0, (size_t)(NR - nv) * sizeof(float));
    if (!s->conv) {
        const float *src = s->src + g * s->gs;
        if (s->sc == 1) {
            for (int64_t k = 0; k < K; k++)
                memcpy(bp + k * NR, src + k * s->sk + c0, (size_t)nv * sizeof(float));
        } else {
            for (int64_t j = 0; j < nv; j++) {
                const float *col = src + (c0 + j) * s->sc;
                for (int64_t k = 0; k < K; k++)
                    bp[k * NR + j] = col[k * s->sk];
            }
        }
        return;
    }
    /* conv: runs of columns with one image and one output row (the whole image for a pointwise conv) */
    const int64_t P = s->Ho * s->Wo, HW = s->H * s->W;
    const int pointwise = s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->pt == 0 && s->pl == 0 &&
                          s->Ho == s->H && s->Wo == s->W;
    int64_t c = c0;
    while (c < c0 + nv) {
        const int64_t b = c / P, p = c % P, off = c - c0;
        const float *xb = s->src + (b * s->C + g * s->Cg) * HW;
        if (pointwise) {
            int64_t n = P - p < c0 + nv - c ? P - p : c0 + nv - c;
            for (int64_t k = 0; k < K; k++)
                memcpy(bp + k * NR + off, xb + k * HW + p, (size_t)n * sizeof(float));
            c += n;
            continue;
        }
        const int64_t oh = p / s->Wo, ow0 = p % s->Wo;
        const int64_t n = s->Wo - ow0 < c0 + nv - c ? s->Wo - ow0 : c0 + nv - c;
        int64_t k = 0;
        for (int64_t ci = 0; ci < s->Cg; ci++)
            for (int64_t i = 0; i < s->kh; i++) {
                const int64_t ih = oh * s->sh - s->pt + i * s->dh;
                for (int64_t j = 0; j < s->kw; j++, k++) {
                    float *d = bp + k * NR + off;
                    if (ih < 0 || ih >= s->H) {
                        memset(d, 0, (size_t)n * sizeof(float));
                        continue;
                    }
                    dse_fg_copy_run(d, xb + ci * HW + ih * s->W, ow0 * s->sw - s->pl + j * s->dw, s->sw, s->W, n);
                }
            }
        c += n;
    }
}

/* ------------------------------------------------------------------ micro-kernels: ct[i * NR + j] = chain */
static void dse_fg_micro_scalar(int64_t K, const float *wp, const float *bp, float *ct)
{
    float acc[4][8];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            acc[i][j] = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const float *b = bp + k * 8;
        for (int i = 0; i < 4; i++) {
            const float w = wp[k * 4 + i];
            for (int j = 0; j < 8; j++)
                acc[i][j] = fmaf(w, b[j], acc[i][j]);
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            ct[i * 8 + j] = acc[i][j];
}

DSE_T_F256 static void dse_fg_micro_avx2(int64_t K, const float *wp, const float *bp, float *ct)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(bp + k * 16), b1 = _mm256_loadu_ps(bp + k * 16 + 8);
        const float *w = wp + k * 6;
        __m256 v = _mm256_broadcast_ss(w + 0);
        c00 = _mm256_fmadd_ps(v, b0, c00); c01 = _mm256_fmadd_ps(v, b1, c01);
        v = _mm256_broadcast_ss(w + 1);
        c10 = _mm256_fmadd_ps(v, b0, c10); c11 = _mm256_fmadd_ps(v, b1, c11);
        v = _mm256_broadcast_ss(w + 2);
        c20 = _mm256_fmadd_ps(v, b0, c20); c21 = _mm256_fmadd_ps(v, b1, c21);
        v = _mm256_broadcast_ss(w + 3);
        c30 = _mm256_fmadd_ps(v, b0, c30); c31 = _mm256_fmadd_ps(v, b1, c31);
        v = _mm256_broadcast_ss(w + 4);
        c40 = _mm256_fmadd_ps(v, b0, c40); c41 = _mm256_fmadd_ps(v, b1, c41);
        v = _mm256_broadcast_ss(w + 5);
        c50 = _mm256_fmadd_ps(v, b0, c50); c51 = _mm256_fmadd_ps(v, b1, c51);
    }
    _mm256_storeu_ps(ct + 0, c00); _mm256_storeu_ps(ct + 8, c01);
    _mm256_storeu_ps(ct + 16, c10); _mm256_storeu_ps(ct + 24, c11);
    _mm256_storeu_ps(ct + 32, c20); _mm256_storeu_ps(ct + 40, c21);
    _mm256_storeu_ps(ct + 48, c30); _mm256_storeu_ps(ct + 56, c31);
    _mm256_storeu_ps(ct + 64, c40); _mm256_storeu_ps(ct + 72, c41);
    _mm256_storeu_ps(ct + 80, c50); _mm256_storeu_ps(ct + 88, c51);
}

DSE_T_F512 static void dse_fg_micro_512(int64_t K, const float *wp, const float *bp, float *ct)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < K; k++) {
        const __m512 b0 = _mm512_loadu_ps(bp + k * 32), b1 = _mm512_loadu_ps(bp + k * 32 + 16);
        const float *w = wp + k * 8;
        __m512 v = _mm512_set1_ps(w[0]);
        c00 = _mm512_fmadd_ps(v, b0, c00); c01 = _mm512_fmadd_ps(v, b1, c01);
        v = _mm512_set1_ps(w[1]);
        c10 = _mm512_fmadd_ps(v, b0, c10); c11 = _mm512_fmadd_ps(v, b1, c11);
        v = _mm512_set1_ps(w[2]);
        c20 = _mm512_fmadd_ps(v, b0, c20); c21 = _mm512_fmadd_ps(v, b1, c21);
        v = _mm512_set1_ps(w[3]);
        c30 = _mm512_fmadd_ps(v, b0, c30); c31 = _mm512_fmadd_ps(v, b1, c31);
        v = _mm512_set1_ps(w[4]);
        c40 = _mm512_fmadd_ps(v, b0, c40); c41 = _mm512_fmadd_ps(v, b1, c41);
        v = _mm512_set1_ps(w[5]);
        c50 = _mm512_fmadd_ps(v, b0, c50); c51 = _mm512_fmadd_ps(v, b1, c51);
        v = _mm512_set1_ps(w[6]);
        c60 = _mm512_fmadd_ps(v, b0, c60); c61 = _mm512_fmadd_ps(v, b1, c61);
        v = _mm512_set1_ps(w[7]);
        c70 = _mm512_fmadd_ps(v, b0, c70); c71 = _mm512_fmadd_ps(v, b1, c71);
    }
    _mm512_storeu_ps(ct + 0, c00); _mm512_storeu_ps(ct + 16, c01);
    _mm512_storeu_ps(ct + 32, c10); _mm512_storeu_ps(ct + 48, c11);
    _mm512_storeu_ps(ct + 64, c20); _mm512_storeu_ps(ct + 80, c21);
    _mm512_storeu_ps(ct + 96, c30); _mm512_storeu_ps(ct + 112, c31);
    _mm512_storeu_ps(ct + 128, c40); _mm512_storeu_ps(ct + 144, c41);
    _mm512_storeu_ps(ct + 160, c50); _mm512_storeu_ps(ct + 176, c51);
    _mm512_storeu_ps(ct + 192, c60); _mm512_storeu_ps(ct + 208, c61);
    _mm512_storeu_ps(ct + 224, c70); _mm512_storeu_ps(ct + 240, c71);
}

/* The tile's rows r0 .. r0 + rv, columns c0 .. c0 + nv of group g (plus the bias) into the output layout. */
static void dse_fg_store(const dse_fg_out *o, int64_t g, int64_t r0, int rv, int64_t c0, int64_t nv, int NR,
                         const float *ct)
{
    for (int i = 0; i < rv; i++) {
        const int64_t r = r0 + i;
        const float *t = ct + i * NR;
        float *orow = o->out + g * o->gs + r * o->rs;
        const float *bias = o->bias ? o->bias + g * o->bgs : NULL;
        int64_t c = c0;
        while (c < c0 + nv) {
            const int64_t b = c / o->P, p = c % o->P, j0 = c - c0;
            const int64_t n = o->P - p < c0 + nv - c ? o->P - p : c0 + nv - c;
            float *d = orow + b * o->img + p;
            if (!bias) {
                memcpy(d, t + j0, (size_t)n * sizeof(float));
            } else if (o->bias_rows) {
                const float bv = bias[r];
                for (int64_t j = 0; j < n; j++)
                    d[j] = t[j0 + j] + bv;
            } else {
                for (int64_t j = 0; j < n; j++)
                    d[j] = t[j0 + j] + bias[c + j];
            }
            c += n;
        }
    }
}

/* C = R S (+ bias) for G groups of nr rows, K terms, ncol columns. R[g][r][k] at R[g * rgs + r * rld + k]. */
static int dse_float_gemm(int level, int64_t G, int64_t nr, int64_t K, int64_t ncol, const float *R, int64_t rld,
                          int64_t rgs, const dse_fg_cols *S, const dse_fg_out *O, int nt)
{
    level = dse_fg_level(level);
    const int MR = dse_fg_mr(level), NR = dse_fg_nr(level);
    const int64_t nrb = (nr + MR - 1) / MR, npan = (ncol + NR - 1) / NR;
    if (G <= 0 || nr <= 0 || ncol <= 0)
        return 0;
    float *Rp = (float *)aligned_alloc(64, (size_t)((G * nrb * (K > 0 ? K : 1) * MR * 4 + 63) / 64 * 64));
    if (!Rp)
        return -1;
    dse_fg_pack_rows(R, G, nr, K, rld, rgs, MR, Rp, nt);
    /* tasks: (group, column panel, share of the row panels); the rows split only when the panels are too few */
    int64_t rsp = 1;
    if (G * npan < 4 * (int64_t)nt) {
        rsp = (4 * (int64_t)nt + G * npan - 1) / (G * npan);
        if (rsp > nrb)
            rsp = nrb;
    }
    const int64_t ntask = G * npan * rsp;
    int err = 0;
#pragma omp parallel num_threads(nt)
    {
        float *bp = (float *)aligned_alloc(64, (size_t)(((K > 0 ? K : 1) * NR * 4 + 63) / 64 * 64));
        float ct[DSE_FG_MAXTILE] __attribute__((aligned(64)));
        if (!bp) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic, 1) /* a core another process holds does not stall the other threads */
        for (int64_t t = 0; t < ntask; t++) {
            if (!bp)
                continue;
            const int64_t g = t / (npan * rsp), pan = (t / rsp) % npan, part = t % rsp;
            const int64_t c0 = pan * NR, nv = ncol - c0 < NR ? ncol - c0 : NR;
            const int64_t rb0 = nrb * part / rsp, rb1 = nrb * (part + 1) / rsp;
            dse_fg_pack_cols(S, g, K, c0, nv, NR, bp);
            for (int64_t rb = rb0; rb < rb1; rb++) {
                const float *wp = Rp + (g * nrb + rb) * K * MR;
                if (level >= DSE_ISA_AVX512)
                    dse_fg_micro_512(K, wp, bp, ct);
                else if (level == DSE_ISA_AVX2)
                    dse_fg_micro_avx2(K, wp, bp, ct);
                else
                    dse_fg_micro_scalar(K, wp, bp, ct);
                const int rv = nr - rb * MR < MR ? (int)(nr - rb * MR) : MR;
                dse_fg_store(O, g, rb * MR, rv, c0, nv, NR, ct);
            }
        }
        free(bp);
    }
    free(Rp);
    return err ? -1 : 0;
}

/* ------------------------------------------------------------------ depthwise: one input channel per output */
/* out[b, co] (Ho x Wo) = chain over the taps (i, j) of w[co] on the zero-padded plane xp (Hp x Wp) of input channel
 * co / og, then + bias[co]. */
#define DSE_FG_DW_BODY                                                                                              \
    for (int64_t oh = 0; oh < Ho; oh++) {                                                                         \
        float *o = op + oh * Wo;                                                                                  \
        for (int64_t ow = 0; ow < Wo; ow++)                                                                       \
            o[ow] = 0.0f;                                                                                         \
        for (int64_t i = 0; i < kh; i++)                                                                          \
            for (int64_t j = 0; j < kw; j++) {                                                                    \
                const float wv = wk[i * kw + j];                                                                  \
                const float *xr = xp + (oh * sh + i * dh) * Wp + j * dw;                                          \
                if (sw == 1)                                                                                      \
                    for (int64_t ow = 0; ow < Wo; ow++)                                                           \
                        o[ow] = fmaf(xr[ow], wv, o[ow]);                                                          \
                else if (sw == 2)                                                                                 \
                    for (int64_t ow = 0; ow < Wo; ow++)                                                           \
                        o[ow] = fmaf(xr[2 * ow], wv, o[ow]);                                                      \
                else                                                                                              \
                    for (int64_t ow = 0; ow < Wo; ow++)                                                           \
                        o[ow] = fmaf(xr[ow * sw], wv, o[ow]);                                                     \
            }                                                                                                     \
        if (has_bias)                                                                                             \
            for (int64_t ow = 0; ow < Wo; ow++)                                                                   \
                o[ow] = o[ow] + bv;                                                                               \
    }

#define DSE_FG_DW_FN(name, attr)                                                                                    \
    attr static void name(const float *xp, int64_t Wp, const float *wk, int64_t kh, int64_t kw, int64_t sh,       \
                          int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, int has_bias, float bv,      \
                          float *op)                                                                              \
    {                                                                                                             \
        DSE_FG_DW_BODY                                                                                            \
    }
DSE_FG_DW_FN(dse_fg_dw_scalar, )
DSE_FG_DW_FN(dse_fg_dw_avx2, DSE_T_F256)
DSE_FG_DW_FN(dse_fg_dw_512, DSE_T_F512)

static int dse_float_dwconv(int level, const float *x, int64_t B, int64_t C, int64_t H, int64_t W, const float *w,
                            int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                            int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const float *bias, float *out, int nt)
{
    level = dse_fg_level(level);
    const int64_t og = Cout / C;
    const int64_t Hp = (Ho - 1) * sh + (kh - 1) * dh + 1, Wp = (Wo - 1) * sw + (kw - 1) * dw + 1;
    int err = 0;
#pragma omp parallel num_threads(nt)
    {
        float *xp = (float *)malloc((size_t)(Hp * Wp) * sizeof(float));
        int64_t have = -1; /* the (image, input channel) plane xp holds */
        if (!xp) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < B * Cout; t++) {
            if (!xp)
                continue;
            const int64_t b = t / Cout, co = t % Cout, ci = co / og, plane = b * C + ci;
            if (plane != have) {
                const float *xs = x + plane * H * W;
                for (int64_t r = 0; r < Hp; r++) {
                    const int64_t ih = r - pt;
                    float *d = xp + r * Wp;
                    if (ih < 0 || ih >= H)
                        memset(d, 0, (size_t)Wp * sizeof(float));
                    else
                        dse_fg_copy_run(d, xs + ih * W, -pl, 1, W, Wp);
                }
                have = plane;
            }
            const float *wk = w + co * kh * kw;
            float *op = out + t * Ho * Wo;
            const int hb = bias != NULL;
            const float bv = hb ? bias[co] : 0.0f;
            if (level >= DSE_ISA_AVX512)
                dse_fg_dw_512(xp, Wp, wk, kh, kw, sh, sw, dh, dw, Ho, Wo, hb, bv, op);
            else if (level == DSE_ISA_AVX2)
                dse_fg_dw_avx2(xp, Wp, wk, kh, kw, sh, sw, dh, dw, Ho, Wo, hb, bv, op);
            else
                dse_fg_dw_scalar(xp, Wp, wk, kh, kw, sh, sw, dh, dw, Ho, Wo, hb, bv, op);
        }
        free(xp);
    }
    return err ? -1 : 0;
}

#endif
