/* Exact integer GEMM on 16-bit operand values, with runtime ISA dispatch.
 *
 * out[n, m] = sum_kk A'[kk, m] * W'[n, kk]    (int64 result, exact)
 *
 * over the depth kk = k * t + j (k < K, j < t), with A'[kk, m] = fa[AT[k, m]][j] and W'[n, kk] = gw[Wp[n, k]][j]:
 * per-operand int16 tables of the 8-bit patterns (t terms each; t = 1 and the pattern's value for the exact product,
 * the integer factors F(a), G(w) of a separable multiplier table otherwise). The activation tables may be replaced
 * by the pattern's own value (unsigned or signed 8-bit), which packs with SIMD widening instead of lookups.
 *
 * Layouts: AT uint8 [K, M] (activation patterns, row stride lda), or per image ([B, K, img] with image stride ld_aimg:
 * element (k, m) at AT[(m / aimg) * ld_aimg + k * lda + m % aimg], e.g. a batch of NCHW inputs as the operand of a 1x1
 * conv without a transposing copy), Wp uint8 [N, K] (weight patterns, row stride K).
 * out: element (n, m) at out[(m / img) * ld_img + n * ld_n + m % img], so the caller gets [B, N, S] conv outputs
 * (img = S, ld_img = N S, ld_n = S) or [M, N] GEMM outputs (img = 1, ld_img = N, ld_n = 1) without a transposing
 * copy.
 *
 * Method (GotoBLAS-style): weights are packed once into int16 pairs (kk, kk+1) of DSE_IG_NR output rows; for every
 * block of DSE_IG_MC positions and DSE_IG_KCP depth pairs the activations are packed into int16 pair panels of MR
 * positions; a register-blocked micro-kernel multiplies an NR x MR tile with vpmaddwd (int16 x int16 -> the int32
 * sum of a pair of products; no saturation, unlike vpmaddubsw) into int32 accumulators.
 * ISA levels (cy/lut_kernel.h: dse_cpu_level): 0 portable C (MR 16), 1 AVX2 (MR 16: 12 ymm accumulators), 2 AVX-512
 * (BW used, VBMI for the factor lookups of the packing; MR 32: 12 zmm accumulators). Calls whose operand values fit bytes run on a VNNI micro-kernel instead where
 * the CPU has one (byte quads, vpdpbusd; see "VNNI" below): at level 2 with AVX512-VNNI (MR 64: 24 zmm accumulators),
 * at level 1 with AVX-VNNI (MR 16: 12 ymm accumulators).
 *
 * Exactness: the caller passes S >= |A'[kk, m] W'[n, kk]| for every term of the call (e.g. max|a| * max|w|). The
 * int32 accumulators take at most seg = floor((2^31 - 1) / S) terms (a multiple of two, and the pair sum of one
 * vpmaddwd is <= 2 S <= 2^31 - 1, which the caller guarantees) before they are added into the int64 output, so no
 * int32 lane can overflow; results are exact for any K with K t S < 2^63. When one segment holds the whole depth
 * (dse_ig_fits32), a call with a dse_scaling writes no int64 sums: each finished int32 tile is scaled (dse_scale_runs:
 * the layer's float32 output or the next layer's input patterns) into outs, laid out as out would be. Every output is computed by one thread in a
 * fixed order over the depth: results do not depend on the thread count.
 */
#ifndef DSE_INT_GEMM_H
#define DSE_INT_GEMM_H

#include "glue.h" /* dse_max_plane: the broadcast conv kernel's fused max pool */
#include "lut_kernel.h"

#define DSE_IG_NR 6     /* output rows (channels) per micro tile */
#define DSE_IG_KCP 128  /* depth pairs per block: A block MC x 256 int16 (128 KiB) stays in L2, a W slice in L1 */
#define DSE_IG_MC 256   /* output positions per block (a multiple of every MR) */
#define DSE_IG_MRMAX 64

/* activation operand modes */
#define DSE_IG_TABLE 0 /* fa[pattern * t + j] */
#define DSE_IG_U8 1    /* value = pattern (t = 1) */
#define DSE_IG_S8 2    /* value = (int8_t)pattern (t = 1) */

/* C[r, c] (+)= sum over kcp depth steps (int16 pairs, or byte quads on the VNNI kernels) of a panel A and weights B */
typedef void (*dse_ig_micro_fn)(const void *A, const void *B, int64_t kcp, int32_t *C, int64_t ldc, int acc);
/* The activation operand: element (k, m) at p[(m / img) * ld_img + k * lda + m % img]. */
typedef struct {
    const uint8_t *p;
    int64_t lda, img, ld_img;
} dse_ig_a;

static inline const uint8_t *dse_ig_at(const dse_ig_a *A, int64_t k, int64_t m)
{
    return A->p + (m / A->img) * A->ld_img + k * A->lda + m % A->img;
}

/* Whether positions m .. m + len - 1 lie in one image (one contiguous run of every row). */
static inline int dse_ig_run(const dse_ig_a *A, int64_t m, int64_t len)
{
    return m % A->img + len <= A->img;
}

typedef void (*dse_ig_pack_fn)(const dse_ig_a *A, int64_t K, int t, const int16_t *fa, int mode,
                               int64_t p0, int64_t kcp, int64_t m0, int64_t mv, int mr, int16_t *dst);

/* ------------------------------------------------------------------ packing */
static inline int16_t dse_ig_aval(const uint8_t *AT, int64_t lda, int64_t K, int t, const int16_t *fa, int mode,
                                  int64_t kk, int64_t m)
{
    if (kk >= K * (int64_t)t)
        return 0;
    if (mode == DSE_IG_U8)
        return (int16_t)AT[kk * lda + m];
    if (mode == DSE_IG_S8)
        return (int16_t)(int8_t)AT[kk * lda + m];
    const int64_t k = kk / t;
    return fa[(int64_t)AT[k * lda + m] * t + (kk - k * t)];
}

/* One pair-row of a panel: d[2 c + h] = value of row_h[c] for c < cv, 0 beyond and for a missing row (t = 1). */
static inline void dse_ig_pack_pair(const uint8_t *r0, const uint8_t *r1, const int16_t *fa, int mode, int64_t cv,
                                    int mr, int16_t *d)
{
    if (r1 && mode == DSE_IG_TABLE) {
        for (int64_t c = 0; c < cv; c++) {
            d[2 * c] = fa[r0[c]];
            d[2 * c + 1] = fa[r1[c]];
        }
        for (int64_t c = 2 * cv; c < 2 * mr; c++)
            d[c] = 0;
        return;
    }
    const uint8_t *rows[2] = {r0, r1};
    for (int h = 0; h < 2; h++) {
        const uint8_t *r = rows[h];
        if (!r)
            for (int64_t c = 0; c < cv; c++)
                d[2 * c + h] = 0;
        else if (mode == DSE_IG_TABLE)
            for (int64_t c = 0; c < cv; c++)
                d[2 * c + h] = fa[r[c]];
        else if (mode == DSE_IG_S8)
            for (int64_t c = 0; c < cv; c++)
                d[2 * c + h] = (int8_t)r[c];
        else
            for (int64_t c = 0; c < cv; c++)
                d[2 * c + h] = r[c];
    }
    for (int64_t c = 2 * cv; c < 2 * mr; c++)
        d[c] = 0;
}

/* dst[(q * kcp + p) * 2 mr + 2 c + h] = A'[2 (p0 + p) + h, m0 + q mr + c] for the mv valid positions (0 beyond). */
static void dse_ig_pack_a_scalar(const dse_ig_a *A, int64_t K, int t, const int16_t *fa, int mode,
                                 int64_t p0, int64_t kcp, int64_t m0, int64_t mv, int mr, int16_t *dst)
{
    const int64_t np = (mv + mr - 1) / mr;
    for (int64_t p = 0; p < kcp; p++) { /* along the rows of AT: every depth row is read once, sequentially */
        for (int64_t q = 0; q < np; q++) {
            const int64_t cv = (mv - q * mr < mr) ? mv - q * mr : mr;
            int16_t *d = dst + (q * kcp + p) * 2 * mr;
            const int64_t kk = 2 * (p0 + p);
            const int run = dse_ig_run(A, m0 + q * mr, cv); /* else element by element, image by image */
            const uint8_t *base = run ? dse_ig_at(A, 0, m0 + q * mr) : NULL;
            if (t == 1 && run) {
                const uint8_t *r0 = base + kk * A->lda;
                dse_ig_pack_pair(r0, kk + 1 < K ? r0 + A->lda : NULL, fa, mode, cv, mr, d);
                continue;
            }
            for (int h = 0; h < 2; h++) {
                for (int64_t c = 0; c < cv; c++)
                    d[2 * c + h] = run ? dse_ig_aval(base, A->lda, K, t, fa, mode, kk + h, c)
                                       : dse_ig_aval(dse_ig_at(A, 0, m0 + q * mr + c), A->lda, K, t, fa, mode, kk + h, 0);
                for (int64_t c = cv; c < mr; c++)
                    d[2 * c + h] = 0;
            }
        }
    }
}

/* Groups of g depth rows (pairs, quads) lying wholly within the K rows, among the kc groups from group p0 on: what
 * the SIMD packers' vector loops take; a last group cut by the end of K is packed row by row. */
static inline int64_t dse_ig_whole_groups(int64_t K, int g, int64_t p0, int64_t kc)
{
    const int64_t n = K / g - p0;
    return n < kc ? (n > 0 ? n : 0) : kc;
}

/* What the SIMD pair packers' vector loop over whole pairs and whole panels leaves: the last pair of an odd K (pairs
 * pfull .. kcp - 1, one row) in the full panels, and the positions past the last full panel. */
static void dse_ig_pack_a_rest(const dse_ig_a *A, int64_t K, int t, const int16_t *fa, int mode, int64_t p0,
                               int64_t kcp, int64_t pfull, int64_t m0, int64_t mv, int mr, int16_t *dst)
{
    const int64_t full = mv - mv % mr;
    for (int64_t p = pfull; p < kcp; p++)
        for (int64_t q = 0; q < full / mr; q++)
            dse_ig_pack_pair(dse_ig_at(A, 2 * (p0 + p), m0 + q * mr), NULL, fa, mode, mr, mr,
                             dst + (q * kcp + p) * 2 * mr);
    if (full < mv)
        dse_ig_pack_a_scalar(A, K, t, fa, mode, p0, kcp, m0 + full, mv - full, mr, dst + (full / mr) * kcp * 2 * mr);
}

/* The same with 16-position SIMD chunks where both depth rows exist and the operand is the pattern's value. */
DSE_T_AVX2 static void dse_ig_pack_a_avx2(const dse_ig_a *A, int64_t K, int t, const int16_t *fa,
                                          int mode, int64_t p0, int64_t kcp, int64_t m0, int64_t mv, int mr,
                                          int16_t *dst)
{
    /* lookups (no SIMD byte-to-int16 table on AVX2), or panels that cross an image: element by element */
    if (mode == DSE_IG_TABLE || (!(A->img % mr == 0 && m0 % mr == 0) && !dse_ig_run(A, m0, mv))) {
        dse_ig_pack_a_scalar(A, K, t, fa, mode, p0, kcp, m0, mv, mr, dst);
        return;
    }
    const int64_t lda = A->lda;
    const int64_t full = mv - mv % mr; /* positions in full panels */
    const int64_t pfull = dse_ig_whole_groups(K, 2, p0, kcp); /* pairs with both rows */
    const int64_t b0 = m0 / A->img, s0 = m0 % A->img; /* the block's first image and offset, divided once */
    for (int64_t p = 0; p < pfull; p++) { /* along the rows of AT */
        const uint8_t *row = A->p + 2 * (p0 + p) * lda;
        int64_t b = b0, s = s0; /* panel q's image and offset: dse_ig_at stepped by mr, each full panel in one image */
        for (int64_t q = 0; q < full / mr; q++) {
            const uint8_t *r0 = row + b * A->ld_img + s;
            int16_t *d = dst + (q * kcp + p) * 2 * mr;
            if ((s += mr) >= A->img) /* the next panel starts the next image */
                s -= A->img, b++;
            for (int c = 0; c < mr; c += 16) {
                const __m128i x0 = _mm_loadu_si128((const __m128i *)(r0 + c));
                const __m128i x1 = _mm_loadu_si128((const __m128i *)(r0 + lda + c));
                const __m128i lo = _mm_unpacklo_epi8(x0, x1), hi = _mm_unpackhi_epi8(x0, x1);
                __m256i wl, wh;
                if (mode == DSE_IG_S8) {
                    wl = _mm256_cvtepi8_epi16(lo);
                    wh = _mm256_cvtepi8_epi16(hi);
                } else {
                    wl = _mm256_cvtepu8_epi16(lo);
                    wh = _mm256_cvtepu8_epi16(hi);
                }
                _mm256_storeu_si256((__m256i *)(d + 2 * c), wl);
                _mm256_storeu_si256((__m256i *)(d + 2 * c + 16), wh);
            }
        }
    }
    dse_ig_pack_a_rest(A, K, t, fa, mode, p0, kcp, pfull, m0, mv, mr, dst);
}

/* Wpk[(nt * KP + p) * 2 NR + 2 r + h] = W'[nt NR + r, 2 p + h] (0 beyond N or the depth). */
static void dse_ig_pack_w(const uint8_t *Wp, int64_t K, int64_t N, int t, const int16_t *gw, int64_t nt,
                          int64_t KP, int16_t *Wpk)
{
    int16_t *base = Wpk + nt * KP * 2 * DSE_IG_NR;
    for (int r = 0; r < DSE_IG_NR; r++) {
        const int64_t n = nt * DSE_IG_NR + r;
        const uint8_t *w = Wp + n * K;
        int16_t *d = base + 2 * r;
        if (n >= N) {
            for (int64_t p = 0; p < KP; p++)
                d[p * 2 * DSE_IG_NR] = d[p * 2 * DSE_IG_NR + 1] = 0;
        } else if (t == 1) {
            for (int64_t p = 0; p < K / 2; p++) {
                d[p * 2 * DSE_IG_NR] = gw[w[2 * p]];
                d[p * 2 * DSE_IG_NR + 1] = gw[w[2 * p + 1]];
            }
            if (K % 2) {
                d[(K / 2) * 2 * DSE_IG_NR] = gw[w[K - 1]];
                d[(K / 2) * 2 * DSE_IG_NR + 1] = 0;
            }
        } else {
            for (int64_t kk = 0; kk < 2 * KP; kk++) {
                const int64_t k = kk / t;
                d[(kk / 2) * 2 * DSE_IG_NR + kk % 2] = k < K ? gw[(int64_t)w[k] * t + (kk - k * t)] : 0;
            }
        }
    }
}

/* ------------------------------------------------------------------ micro-kernels: C[r, c] (+)= sum_p pairs */
#define DSE_IG_MR_SCALAR 16
static void dse_ig_micro_scalar(const void *Av, const void *Bv, int64_t kcp, int32_t *C, int64_t ldc, int acc)
{
    const int16_t *A = (const int16_t *)Av, *B = (const int16_t *)Bv;
    int32_t c[DSE_IG_NR][DSE_IG_MR_SCALAR];
    memset(c, 0, sizeof(c));
    for (int64_t p = 0; p < kcp; p++) {
        const int16_t *a = A + p * 2 * DSE_IG_MR_SCALAR, *b = B + p * 2 * DSE_IG_NR;
        for (int r = 0; r < DSE_IG_NR; r++) {
            const int32_t b0 = b[2 * r], b1 = b[2 * r + 1];
            for (int j = 0; j < DSE_IG_MR_SCALAR; j++)
                c[r][j] += a[2 * j] * b0 + a[2 * j + 1] * b1;
        }
    }
    for (int r = 0; r < DSE_IG_NR; r++)
        for (int j = 0; j < DSE_IG_MR_SCALAR; j++)
            C[r * ldc + j] = acc ? C[r * ldc + j] + c[r][j] : c[r][j];
}

#define DSE_IG_MR_AVX2 16
/* The k-loop is written in assembly: 12 accumulators + 2 activation vectors + 1 broadcast weight pair + 1 product
 * use all 16 ymm registers, which gcc's allocator does not manage without spilling accumulators every step. */
#define DSE_IG_A2_PAIR(off, x, y)                                                                                  \
    "vpbroadcastd " #off "(%[b]), %%ymm14\n\t"                                                                   \
    "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t"                                                                     \
    "vpaddd %%ymm15, %[" #x "], %[" #x "]\n\t"                                                                   \
    "vpmaddwd %%ymm14, %%ymm13, %%ymm15\n\t"                                                                     \
    "vpaddd %%ymm15, %[" #y "], %[" #y "]\n\t"

DSE_T_AVX2 static void dse_ig_micro_avx2(const void *Av, const void *Bv, int64_t kcp, int32_t *C, int64_t ldc, int acc)
{
    const int16_t *A = (const int16_t *)Av, *B = (const int16_t *)Bv;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (kcp > 0) {
        const int16_t *a = A, *b = B;
        int64_t n = kcp;
        __asm__ volatile(".p2align 4\n"
                         "1:\n\t"
                         "vmovdqu (%[a]), %%ymm12\n\t"
                         "vmovdqu 32(%[a]), %%ymm13\n\t"
                         DSE_IG_A2_PAIR(0, c00, c01) DSE_IG_A2_PAIR(4, c10, c11) DSE_IG_A2_PAIR(8, c20, c21)
                         DSE_IG_A2_PAIR(12, c30, c31) DSE_IG_A2_PAIR(16, c40, c41) DSE_IG_A2_PAIR(20, c50, c51)
                         "add $64, %[a]\n\t"
                         "add $24, %[b]\n\t"
                         "dec %[n]\n\t"
                         "jnz 1b\n\t"
                         : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20),
                           [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41),
                           [c50] "+x"(c50), [c51] "+x"(c51), [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
                         :
                         : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
    }
    __m256i cs[DSE_IG_NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < DSE_IG_NR; r++) {
        __m256i *o = (__m256i *)(C + r * ldc);
        if (acc) {
            cs[r][0] = _mm256_add_epi32(cs[r][0], _mm256_loadu_si256(o));
            cs[r][1] = _mm256_add_epi32(cs[r][1], _mm256_loadu_si256(o + 1));
        }
        _mm256_storeu_si256(o, cs[r][0]);
        _mm256_storeu_si256(o + 1, cs[r][1]);
    }
}

#define DSE_T_512BW __attribute__((target("avx512f,avx512bw")))
#define DSE_T_512VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

/* The AVX-512 level's packing: one-term factor tables looked up 16 positions of a pair of depth rows at a time, by
 * vpermi2b on the low and the high bytes of the int16 factors and one vpermb into the pair layout; everything else
 * as the AVX2 packing. */
DSE_T_512VBMI static void dse_ig_pack_a_512(const dse_ig_a *A, int64_t K, int t, const int16_t *fa, int mode,
                                            int64_t p0, int64_t kcp, int64_t m0, int64_t mv, int mr, int16_t *dst)
{
    if (mode != DSE_IG_TABLE || t != 1 || (!(A->img % mr == 0 && m0 % mr == 0) && !dse_ig_run(A, m0, mv))) {
        dse_ig_pack_a_avx2(A, K, t, fa, mode, p0, kcp, m0, mv, mr, dst);
        return;
    }
    uint8_t tb[512], ib[64]; /* tb: the low bytes of fa, then the high bytes */
    for (int p = 0; p < 256; p++)
        tb[p] = (uint8_t)fa[p], tb[256 + p] = (uint8_t)((uint16_t)fa[p] >> 8);
    for (int j = 0; j < 64; j++) /* byte 4 c + h of a pair panel: lane h (low 0, high 0, low 1, high 1) byte c */
        ib[j] = (uint8_t)(16 * (j % 4) + j / 4);
    const __m512i idx = _mm512_loadu_si512(ib);
    const __m512i l0 = _mm512_loadu_si512(tb), l1 = _mm512_loadu_si512(tb + 64), l2 = _mm512_loadu_si512(tb + 128),
                  l3 = _mm512_loadu_si512(tb + 192), h0 = _mm512_loadu_si512(tb + 256),
                  h1 = _mm512_loadu_si512(tb + 320), h2 = _mm512_loadu_si512(tb + 384),
                  h3 = _mm512_loadu_si512(tb + 448);
    const __mmask64 high = 0xFFFF0000FFFF0000ULL; /* lanes 1 and 3 take the high bytes */
    const int64_t lda = A->lda, full = mv - mv % mr;
    const int64_t pfull = dse_ig_whole_groups(K, 2, p0, kcp); /* pairs with both rows */
    for (int64_t p = 0; p < pfull; p++) { /* along the rows of AT */
        for (int64_t q = 0; q < full / mr; q++) {
            const uint8_t *r0 = dse_ig_at(A, 2 * (p0 + p), m0 + q * mr);
            int16_t *d = dst + (q * kcp + p) * 2 * mr;
            for (int c = 0; c < mr; c += 16) {
                const __m128i x0 = _mm_loadu_si128((const __m128i *)(r0 + c));
                const __m128i x1 = _mm_loadu_si128((const __m128i *)(r0 + lda + c));
                __m512i v = _mm512_inserti32x4(_mm512_castsi128_si512(x0), x0, 1);
                v = _mm512_inserti32x4(_mm512_inserti32x4(v, x1, 2), x1, 3);
                const __mmask64 top = _mm512_movepi8_mask(v);
                const __m512i lo = dse_byte_lookup512(v, top, l0, l1, l2, l3);
                const __m512i hi = dse_byte_lookup512(v, top, h0, h1, h2, h3);
                _mm512_storeu_si512(d + 2 * c, _mm512_permutexvar_epi8(idx, _mm512_mask_blend_epi8(high, lo, hi)));
            }
        }
    }
    dse_ig_pack_a_rest(A, K, t, fa, mode, p0, kcp, pfull, m0, mv, mr, dst);
}
#define DSE_IG_MR_512 32
#define DSE_IG_512_ROW(r)                                                                                          \
    do {                                                                                                           \
        const __m512i w = _mm512_set1_epi32(b[r]);                                                                 \
        c##r##0 = _mm512_add_epi32(c##r##0, _mm512_madd_epi16(a0, w));                                            \
        c##r##1 = _mm512_add_epi32(c##r##1, _mm512_madd_epi16(a1, w));                                            \
    } while (0)
#define DSE_IG_512_STORE(r)                                                                                        \
    do {                                                                                                           \
        int32_t *o = C + r * ldc;                                                                                  \
        if (acc) {                                                                                                 \
            c##r##0 = _mm512_add_epi32(c##r##0, _mm512_loadu_si512(o));                                           \
            c##r##1 = _mm512_add_epi32(c##r##1, _mm512_loadu_si512(o + 16));                                      \
        }                                                                                                          \
        _mm512_storeu_si512(o, c##r##0);                                                                           \
        _mm512_storeu_si512(o + 16, c##r##1);                                                                      \
    } while (0)

DSE_T_512BW static void dse_ig_micro_512(const void *Av, const void *Bv, int64_t kcp, int32_t *C, int64_t ldc, int acc)
{
    const int16_t *A = (const int16_t *)Av, *B = (const int16_t *)Bv;
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t p = 0; p < kcp; p++) {
        const __m512i a0 = _mm512_loadu_si512(A + p * 64);
        const __m512i a1 = _mm512_loadu_si512(A + p * 64 + 32);
        const int32_t *b = (const int32_t *)(B + p * 2 * DSE_IG_NR);
        DSE_IG_512_ROW(0);
        DSE_IG_512_ROW(1);
        DSE_IG_512_ROW(2);
        DSE_IG_512_ROW(3);
        DSE_IG_512_ROW(4);
        DSE_IG_512_ROW(5);
    }
    DSE_IG_512_STORE(0);
    DSE_IG_512_STORE(1);
    DSE_IG_512_STORE(2);
    DSE_IG_512_STORE(3);
    DSE_IG_512_STORE(4);
    DSE_IG_512_STORE(5);
}

/* ------------------------------------------------------------------ plan */
typedef struct dse_ig_plan dse_ig_plan;
/* A conv's GEMM operand read from its input instead of a matrix: row k = c kh kw + t, column m = b Ho Wo + s of the
 * im2col of x (channel c's plane at x + b ld_b + c H W), built per task and depth block by the AVX-512 VBMI im2col
 * (dse_i2c_block) into the task's scratch, then packed as a matrix operand; the VNNI kernel at the avx512 level.
 * On the int16 kernel at the avx2 level: the panels packed from x directly (dse_ig_pack_conv16_avx2; reads stay
 * within [xlo, xhi), the whole input array).
 * bcast != 0: the broadcast conv kernel instead (dse_bc_conv: channels-last images, output channels in the lanes;
 * it reads the geometry H .. dw and no i2c plan; with pool, the max pool fused after it: dse_bc_pool). */
/* A max pool (dse_max_pool's geometry over the conv's Ho x Wo output planes: kernel kh x kw, stride, dilation, pads
 * top/left, output Ho x Wo) fused into the broadcast conv kernel: each task's images are scaled into the thread's
 * scratch instead of the conv's output, then pooled plane by plane from the cache into out [B][N][Ho][Wo] and, with
 * q, quantized into q (dse_quantize's bits, the patterns of the pool's readers, clip(rint(y / qs), qlo, qhi)). */
typedef struct {
    int64_t kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo;
    float *out;
    uint8_t *q;
    float qs;
    int qlo, qhi;
} dse_bc_pool;
typedef struct {
    const uint8_t *x;
    int64_t ld_b, HW, kw, Ho, Wo;
    dse_i2c_plan i2c;
    int64_t H, W, kh, sh, sw, pt, pl, dh, dw;
    int bcast;
    const dse_bc_pool *pool;
    const uint8_t *xlo, *xhi; /* the whole input array (every image and channel): reads outside it never happen */
} dse_ig_conv;
/* VNNI packing: the panels of positions [m0, m0 + mv) over depth quads [p0, p0 + kcq) into dst (bytes) */
typedef void (*dse_ig_pack8_fn)(const dse_ig_plan *P, int64_t p0, int64_t kcq, int64_t m0, int64_t mv, uint8_t *dst);

struct dse_ig_plan {
    dse_ig_a A;
    const uint8_t *Wp;
    int64_t K, M, N, KP; /* KP: depth steps (pairs, or quads on the VNNI kernels) */
    int t, mode;
    const int16_t *fa;
    const uint8_t *Wpk; /* packed weights: 4 bytes per row and depth step either way */
    int64_t img, ld_img, ld_n;
    int64_t kcp, seg_blocks; /* depth steps per block; blocks per int32 segment */
    int mr;
    dse_ig_micro_fn micro;
    dse_ig_pack_fn pack;
    int level;
    const dse_scaling *sc; /* with sc: the scaled outputs go to outs (one int32 segment holds the whole depth) */
    void *outs;
    int64_t *out;
    /* the VNNI kernels (q8): byte operands */
    int q8, swap, aoff; /* swap: weights on vpdpbusd's unsigned port; aoff: offset added to the activation bytes */
    dse_ig_pack8_fn pack8;
    uint8_t xa[256];      /* the activation byte of each pattern (value + aoff) */
    uint8_t wb[256];      /* the weight byte of each pattern (its value gw[p] in 8 bits) */
    int wb_ident;         /* wb[p] == p */
    int xa_ident, xa_flip; /* xa[p] == p; xa[p] == p ^ 0x80 (signed activation values offset by 128) */
    const int64_t *corr; /* aoff != 0: corr[n] = aoff * sum_k W'[n, k], subtracted from the sums */
    /* the vpmaddubsw kernel (no VNNI, "Byte pairs" below): ub_lim bounds |w0| + |w1| of a packed pair; the residual
     * quads of tile nt start at res + nt * res_cap, its row r's from res_row[nt * (NR + 1) + r] on */
    int ub, ub_lim;
    struct dse_ig_res *res;
    int64_t *res_row, res_cap;
    /* with sc: sums added to the finished int32 sums before the scaling (element (n, m) at
     * addend[(m / img) * add_ld_img + n * add_ld_n + m % img]; the caller bounds every total within int32) */
    const int64_t *addend;
    int64_t add_ld_img, add_ld_n;
    const dse_ig_conv *cv; /* the operand as a conv's input (built per task and depth block), else NULL */
    int c16; /* with cv: the int16 kernel's panels packed straight from the input (dse_ig_pack_conv16_avx2) */
};

/* ------------------------------------------------------------------ int16 panels packed from a conv's input
 * The avx2 level's int16 kernel reads a stride-1 conv whose output rows are as wide as its input rows (W == Wo,
 * e.g. 3x3 with padding 1) straight from the input planes: output position s = y Wo + q of an image reads tap
 * (i, j) of channel c at plane offset s + (i dh - pt) W + j dw - pl, so the 16 positions of a panel read 16
 * consecutive input bytes (two runs where the panel crosses into the next image: planes of >= 16 positions),
 * those outside the plane (padding, the next or previous row's bytes) masked to 0 as the im2col's padding is. No
 * im2col operand is written and the panels read the input from cache. */
#define DSE_IG_C16_TMAX 49 /* taps (kh kw) at most */
/* depth rows (c kh kw) at least: below, the per-task masks outweigh the im2col they save (MobileNetV2 32's 3x3 stem
 * on 3 channels, K 27: 0.91x in the network's captured calls) */
#define DSE_IG_C16_KMIN 128
/* the panels' scratch: offsets and image crossings (512 bytes), masks ((kh + kw + kh kw) x 256 bytes) */
#define DSE_IG_C16_SCR (512 + (2 * DSE_IG_C16_TMAX + 1) * DSE_IG_MC)

/* Whether the call (K depth rows, t terms, activation mode) packs its int16 panels from the conv input cv. */
static int dse_ig_conv16_fits(const dse_ig_conv *cv, int64_t K, int t, int mode)
{
    return !cv->bcast && !cv->pool && t == 1 && mode != DSE_IG_TABLE && K >= DSE_IG_C16_KMIN && cv->sh == 1 &&
           cv->sw == 1 && cv->W == cv->Wo && cv->Ho * cv->Wo >= DSE_IG_MR_AVX2 && cv->kh * cv->kw <= DSE_IG_C16_TMAX &&
           cv->xlo && cv->xhi;
}

/* 16 bytes at a (a may lie partly outside [lo, hi): those bytes read as 0; they are masked off anyway). */
static inline __m128i dse_ig_c16_load(const uint8_t *a, const uint8_t *lo, const uint8_t *hi)
{
    if ((uintptr_t)a >= (uintptr_t)lo && (uintptr_t)a + 16 <= (uintptr_t)hi)
        return _mm_loadu_si128((const __m128i *)a);
    uint8_t b[16];
    for (int l = 0; l < 16; l++)
        b[l] = (uintptr_t)(a + l) >= (uintptr_t)lo && (uintptr_t)(a + l) < (uintptr_t)hi ? a[l] : 0;
    return _mm_loadu_si128((const __m128i *)b);
}

/* The panels of positions [m0, m0 + mv) over depth pairs [p0, p0 + kcp) into dst (as dse_ig_pack_a_avx2 packs the
 * im2col operand of cv, element (k, m) with k = c kh kw + i kw + j), or over depth quads as byte quads (P->q8: the
 * avx2 level's byte pairs without VNNI, dse_ig_pack_q_avx2's layout and activation bytes). scr: the thread's DSE_IG_C16_SCR bytes, which
 * keep the block's panel offsets and masks from the call with fresh != 0 (the task's first depth block) on. */
#define DSE_IG_C16_PF 2 /* the block's window of the channel plane this many channels ahead is prefetched */
DSE_T_AVX2 static void dse_ig_pack_conv16_avx2(const dse_ig_plan *P, int64_t p0, int64_t kcp, int64_t m0, int64_t mv,
                                               uint8_t *dst, uint8_t *scr, int fresh)
{
    const dse_ig_conv *cv = P->cv;
    const int64_t kh = cv->kh, kw = cv->kw, T = kh * kw, HoWo = cv->Ho * cv->Wo, W = cv->W, H = cv->H;
    const int64_t npan = (mv + DSE_IG_MR_AVX2 - 1) / DSE_IG_MR_AVX2, delta = cv->ld_b - HoWo;
    int64_t *base = (int64_t *)scr;        /* [npan]: panel q's first position's offset (image start + s) */
    uint8_t *cross = scr + 128;            /* [npan][16]: 0xFF in the lanes of the next image */
    int32_t *crosses = (int32_t *)(scr + 384); /* [npan]: whether panel q has such lanes */
    uint8_t *rowm = scr + 512, *colm = rowm + kh * 256, *tapm = colm + kw * 256; /* [i or j or t][q][16 lanes] */
    if (fresh) {
        /* per lane: its row y, column x and whether it is a position of the block; the masks of each kernel row i
         * (0 <= y + i dh - pt < H) and column j (0 <= x + j dw - pl < W), then of each tap */
        int64_t m = m0, b = m0 / HoWo, s = m0 % HoWo, y = s / cv->Wo, x = s % cv->Wo;
        for (int64_t q = 0; q < npan; q++) {
            base[q] = b * cv->ld_b + s;
            const int64_t b0 = b;
            for (int l = 0; l < 16; l++, m++) {
                const int in = m < m0 + mv;
                cross[q * 16 + l] = b != b0 ? 0xFF : 0;
                for (int64_t i = 0; i < kh; i++) {
                    const int64_t r = y + i * cv->dh - cv->pt;
                    rowm[(i * npan + q) * 16 + l] = in && r >= 0 && r < H ? 0xFF : 0;
                }
                for (int64_t j = 0; j < kw; j++) {
                    const int64_t c = x + j * cv->dw - cv->pl;
                    colm[(j * npan + q) * 16 + l] = in && c >= 0 && c < W ? 0xFF : 0;
                }
                if (++x == cv->Wo && (x = 0, ++y == cv->Ho))
                    y = 0, b++;
                if (++s == HoWo)
                    s = 0;
            }
            crosses[q] = cross[q * 16 + 15] != 0; /* lanes of one image, then (planes >= 16) of the next */
        }
        for (int64_t t = 0; t < T; t++)
            for (int64_t q = 0; q < npan; q++)
                _mm_storeu_si128((__m128i *)(tapm + (t * npan + q) * 16),
                                 _mm_and_si128(_mm_loadu_si128((const __m128i *)(rowm + (t / kw * npan + q) * 16)),
                                               _mm_loadu_si128((const __m128i *)(colm + (t % kw * npan + q) * 16))));
    }
    const uint8_t *lo = cv->xlo, *hi = cv->xhi;
    const int s8 = P->mode == DSE_IG_S8;
    /* the window of a channel plane the block reads: from its first position's first tap to its last one's last */
    const int64_t w0 = base[0] - cv->pt * W - cv->pl, w1 = base[0] + mv + ((kh - 1) * cv->dh - cv->pt) * W +
                                                            (kw - 1) * cv->dw - cv->pl;
    const int g = P->q8 ? 4 : 2; /* depth rows per step */
    const __m128i flip = _mm_set1_epi8((char)(P->q8 && P->xa_flip ? 0x80 : 0));
    int64_t c = g * p0 / T, t = g * p0 % T; /* the channel and tap of the step's first row, stepped */
    for (int64_t p = 0; p < kcp; p++) {
        const uint8_t *src[4];
        const uint8_t *tm[4];
        for (int h = 0; h < g; h++) {
            const int64_t k = g * (p0 + p) + h;
            if (t == 0 && k + DSE_IG_C16_PF * T < P->K) /* a new channel: fetch the plane DSE_IG_C16_PF ahead */
                for (int64_t a = w0; a < w1 + 64; a += 64)
                    _mm_prefetch((const char *)(cv->x + (c + DSE_IG_C16_PF) * cv->HW + a), _MM_HINT_T0);
            src[h] = k < P->K ? cv->x + c * cv->HW + (t / kw * cv->dh - cv->pt) * W + t % kw * cv->dw - cv->pl : NULL;
            tm[h] = tapm + t * npan * 16;
            if (++t == T)
                t = 0, c++;
        }
        uint8_t *d = (uint8_t *)dst + p * 64;
        for (int64_t q = 0; q < npan; q++, d += kcp * 64) {
            __m128i v[4];
            for (int h = 0; h < g; h++) {
                if (!src[h]) {
                    v[h] = _mm_setzero_si128();
                    continue;
                }
                const uint8_t *a = src[h] + base[q];
                __m128i x = dse_ig_c16_load(a, lo, hi);
                if (crosses[q]) /* the lanes of the next image read its plane: delta bytes on */
                    x = _mm_blendv_epi8(x, dse_ig_c16_load(a + delta, lo, hi),
                                        _mm_loadu_si128((const __m128i *)(cross + q * 16)));
                v[h] = _mm_and_si128(x, _mm_loadu_si128((const __m128i *)(tm[h] + q * 16)));
            }
            const __m128i lo8 = _mm_unpacklo_epi8(v[0], v[1]), hi8 = _mm_unpackhi_epi8(v[0], v[1]);
            if (g == 4) { /* byte quads (dse_ig_pack_q_avx2's layout), the masked value 0 offset as any other */
                const __m128i lo23 = _mm_unpacklo_epi8(v[2], v[3]), hi23 = _mm_unpackhi_epi8(v[2], v[3]);
                _mm_storeu_si128((__m128i *)d, _mm_xor_si128(_mm_unpacklo_epi16(lo8, lo23), flip));
                _mm_storeu_si128((__m128i *)(d + 16), _mm_xor_si128(_mm_unpackhi_epi16(lo8, lo23), flip));
                _mm_storeu_si128((__m128i *)(d + 32), _mm_xor_si128(_mm_unpacklo_epi16(hi8, hi23), flip));
                _mm_storeu_si128((__m128i *)(d + 48), _mm_xor_si128(_mm_unpackhi_epi16(hi8, hi23), flip));
            } else if (s8) {
                _mm256_storeu_si256((__m256i *)d, _mm256_cvtepi8_epi16(lo8));
                _mm256_storeu_si256((__m256i *)(d + 32), _mm256_cvtepi8_epi16(hi8));
            } else {
                _mm256_storeu_si256((__m256i *)d, _mm256_cvtepu8_epi16(lo8));
                _mm256_storeu_si256((__m256i *)(d + 32), _mm256_cvtepu8_epi16(hi8));
            }
        }
    }
}

/* ------------------------------------------------------------------ VNNI: byte quads, vpdpbusd
 *
 * vpdpbusd adds to each int32 lane the four products u[4 i + h] * s[4 i + h] of an unsigned byte u (0..255) and a
 * signed byte s (-128..127) without saturation (the products are exact in 16 bits, their sum is added modulo 2^32),
 * so a lane is exact while the true sum fits int32. One operand of the product goes on the unsigned port: the
 * activation values when they lie in [0, 255] (unsigned patterns, or a factor table F(a) in that range) and the
 * weight values in [-128, 127]; for activation values in [-128, 127] their bytes carry the offset aoff = 128 (u =
 * a + 128 in [0, 255]) and every sum loses the exact correction aoff * sum_k W'[n, k] (per output row, from the
 * weight packing): sum_k (a_k + 128) w_k - 128 sum_k w_k = sum_k a_k w_k, term by term. Weight values in [0, 255]
 * with activation values in [-128, 127] swap the ports instead (no offset). The weight range is that of the table
 * gw over all 256 patterns, or over the patterns Wp uses when the table does not fit (DRUM's G(-128) = -132).
 * Depth is packed in quads (kk = 4 p + h); depth beyond K has weight 0, so it adds 0 whatever its activation byte.
 * Bounds: S8 = max u * max |s| >= every |term| (offset bytes included); an int32 segment holds floor((2^31 - 1) /
 * (4 S8)) quads, so no partial sum of a lane leaves int32; the corrected int32 sum of a call that fits one segment
 * is exact too: |sum (a + 128) w| and |128 sum w| and the true |sum a w| are each <= K S8 <= 2^31 - 1. The int64
 * results are exact while K S8 < 2^61. A call where no port assignment fits, or whose bounds fail (a scaled call
 * whose depth does not fit one VNNI segment), runs on the int16 kernel.
 */
#define DSE_IG_KCQ 128 /* depth quads per block: an A block MC x 512 bytes (128 KiB), as the int16 blocks */
#define DSE_IG_MR_VNNI 64
#define DSE_IG_MR_VNNI256 16
#define DSE_IG_PF 16 /* quads of rows prefetched ahead by the VNNI packing */

/* One panel cell: d[4 c + h] = xa[pattern of A'[kk + h, m + c]] for c < cv and kk + h < K, 0 beyond. */
static void dse_ig_q_cell(const dse_ig_plan *P, int64_t kk, int64_t m, int64_t cv, uint8_t *d)
{
    const dse_ig_a *A = &P->A;
    const int run = dse_ig_run(A, m, cv);
    const uint8_t *base = run ? dse_ig_at(A, 0, m) : NULL;
    for (int h = 0; h < 4; h++) {
        int64_t c = 0;
        if (kk + h < P->K)
            for (; c < cv; c++)
                d[4 * c + h] = P->xa[run ? base[(kk + h) * A->lda + c] : *dse_ig_at(A, kk + h, m + c)];
        for (; c < P->mr; c++)
            d[4 * c + h] = 0;
    }
}

/* dst[(q * kcq + p) * 4 mr + 4 c + h] = activation byte of A'[4 (p0 + p) + h, m0 + q mr + c] (0 beyond). */
static void dse_ig_pack_q_scalar(const dse_ig_plan *P, int64_t p0, int64_t kcq, int64_t m0, int64_t mv, uint8_t *dst)
{
    const int mr = P->mr;
    const int64_t np = (mv + mr - 1) / mr;
    for (int64_t p = 0; p < kcq; p++)
        for (int64_t q = 0; q < np; q++)
            dse_ig_q_cell(P, 4 * (p0 + p), m0 + q * mr, (mv - q * mr < mr) ? mv - q * mr : mr,
                          dst + (q * kcq + p) * 4 * mr);
}

/* What the SIMD quad packers' vector loop over whole quads and whole panels leaves: the last quad cut by the end of K
 * (quads pfull .. kcq - 1, 1-3 rows) in the full panels, and the positions past the last full panel. */
static void dse_ig_pack_q_rest(const dse_ig_plan *P, int64_t p0, int64_t kcq, int64_t pfull, int64_t m0, int64_t mv,
                               uint8_t *dst)
{
    const int mr = P->mr;
    const int64_t full = mv - mv % mr;
    for (int64_t p = pfull; p < kcq; p++)
        for (int64_t q = 0; q < full / mr; q++)
            dse_ig_q_cell(P, 4 * (p0 + p), m0 + q * mr, mr, dst + (q * kcq + p) * 4 * mr);
    if (full < mv)
        dse_ig_pack_q_scalar(P, p0, kcq, m0 + full, mv - full, dst + (full / mr) * kcq * 4 * mr);
}

/* 16 positions of 4 depth rows (row stride lda) as 16 byte quads (vpermb), through the byte table t0..t3 (ident:
 * the identity, nothing looked up; flip: p ^ 0x80, one xor). */
DSE_T_VNNI512 static inline __attribute__((always_inline)) __m512i
dse_ig_quads16(const uint8_t *r, int64_t lda, __m512i idx, int ident, int flip, __m512i t0, __m512i t1, __m512i t2,
               __m512i t3)
{
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)r));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r + lda)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r + 2 * lda)), 2);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r + 3 * lda)), 3);
    v = _mm512_permutexvar_epi8(idx, v);
    if (ident)
        return v;
    if (flip)
        return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    return dse_byte_lookup512(v, _mm512_movepi8_mask(v), t0, t1, t2, t3);
}

/* The same with AVX-512 VBMI for whole quads of whole panels that lie in one image (the rest as the scalar code). */
DSE_T_VNNI512 static void dse_ig_pack_q_512(const dse_ig_plan *P, int64_t p0, int64_t kcq, int64_t m0, int64_t mv,
                                            uint8_t *dst)
{
    const dse_ig_a *A = &P->A;
    const int mr = P->mr;
    uint8_t ib[64];
    for (int j = 0; j < 64; j++)
        ib[j] = (uint8_t)(16 * (j % 4) + j / 4);
    const __m512i idx = _mm512_loadu_si512(ib);
    const __m512i t0 = _mm512_loadu_si512(P->xa), t1 = _mm512_loadu_si512(P->xa + 64);
    const __m512i t2 = _mm512_loadu_si512(P->xa + 128), t3 = _mm512_loadu_si512(P->xa + 192);
    const int ident = P->xa_ident, flip = P->xa_flip;
    const int64_t lda = A->lda, full = mv - mv % mr;
    const int64_t pfull = dse_ig_whole_groups(P->K, 4, p0, kcq); /* whole quads */
    /* each quad reads 4 rows of a few lines far apart (a 1x1 conv's input planes): the rows DSE_IG_PF quads ahead
     * are prefetched, one line per 64 positions (or per image's run on smaller images); on planes of whole lines
     * read from the input (not an im2col block in cache) the block's first DSE_IG_PF quads too, before the first:
     * MobileNetV2 32's projections read a whole image of 96-192 channels per block, 24-48 quads, two thirds of
     * which the loop's prefetches did not cover (Zen 4: its projections 1.06x, RESULTS.md "mbz4") */
    const int64_t pfs = A->img < 64 ? A->img : 64;
    if (pfs == 64 && !P->cv)
        for (int64_t p = 0; p < pfull && p < DSE_IG_PF; p++)
            for (int h = 0; h < 4; h++)
                for (int64_t m = m0; m < m0 + full; m += 64)
                    _mm_prefetch((const char *)dse_ig_at(A, 4 * (p0 + p) + h, m), _MM_HINT_T0);
    for (int64_t p = 0; p < pfull; p++) { /* along the rows of AT */
        if (p + DSE_IG_PF < pfull && pfs >= 16)
            for (int h = 0; h < 4; h++)
                for (int64_t m = m0; m < m0 + full; m += pfs)
                    _mm_prefetch((const char *)dse_ig_at(A, 4 * (p0 + p + DSE_IG_PF) + h, m), _MM_HINT_T0);
        for (int64_t q = 0; q < full / mr; q++) {
            uint8_t *d = dst + (q * kcq + p) * 4 * mr;
            if (!dse_ig_run(A, m0 + q * mr, mr)) { /* a panel across two images: element by element */
                dse_ig_q_cell(P, 4 * (p0 + p), m0 + q * mr, mr, d);
                continue;
            }
            const uint8_t *r = dse_ig_at(A, 4 * (p0 + p), m0 + q * mr);
            for (int c = 0; c < mr; c += 16)
                _mm512_storeu_si512(d + 4 * c, dse_ig_quads16(r + c, lda, idx, ident, flip, t0, t1, t2, t3));
        }
    }
    dse_ig_pack_q_rest(P, p0, kcq, pfull, m0, mv, dst);
}

/* Wq[(nt * KQ + p) * 4 NR + 4 r + h] = byte of W'[nt NR + r, 4 p + h] (0 beyond N or K); with an activation offset,
 * corr[n] = aoff * sum_k W'[n, k]. Whole quads as 4-byte copies (through the byte table wb unless it is the
 * identity, as for the exact product's int8 weights). */
static void dse_ig_pack_w8(const dse_ig_plan *P, const int16_t *gw, int64_t nt, uint8_t *Wq, int64_t *corr)
{
    uint8_t *base = Wq + nt * P->KP * 4 * DSE_IG_NR;
    const int64_t K = P->K, KF = K / 4, step = 4 * DSE_IG_NR;
    const uint8_t *wb = P->wb;
    for (int r = 0; r < DSE_IG_NR; r++) {
        const int64_t n = nt * DSE_IG_NR + r;
        uint8_t *d = base + 4 * r;
        if (n >= P->N) {
            for (int64_t p = 0; p < P->KP; p++)
                memset(d + p * step, 0, 4);
            continue;
        }
        const uint8_t *w = P->Wp + n * K;
        if (P->wb_ident)
            for (int64_t p = 0; p < KF; p++)
                memcpy(d + p * step, w + 4 * p, 4);
        else
            for (int64_t p = 0; p < KF; p++)
                for (int h = 0; h < 4; h++)
                    d[p * step + h] = wb[w[4 * p + h]];
        for (int64_t p = KF; p < P->KP; p++) /* the quad cut by the end of K */
            for (int h = 0; h < 4; h++)
                d[p * step + h] = 4 * p + h < K ? wb[w[4 * p + h]] : 0;
        if (corr) {
            int64_t sum = 0;
            for (int64_t k = 0; k < K; k++)
                sum += gw[w[k]];
            corr[n] = P->aoff * sum;
        }
    }
}

/* vpdpbusd micro-kernels, MR 64 positions (4 zmm of 16 quads) x NR 6 rows: 24 accumulators (2-19 % faster than MR 32
 * on this Zen 5 box's GEMM shapes). DSE_IG_Q512_MICRO(name, U0, S0, ...): Uj on the unsigned port, Sj on the signed
 * one (aj: the activation quads of positions 16 j .. 16 j + 15, w: the broadcast weight quad). */
#define DSE_IG_Q512_ROW(r, U0, S0, U1, S1, U2, S2, U3, S3)                                                             \
    do {                                                                                                           \
        const __m512i w = _mm512_set1_epi32(b[r]);                                                                 \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, U0, S0);                                                           \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, U1, S1);                                                           \
        c##r##2 = _mm512_dpbusd_epi32(c##r##2, U2, S2);                                                           \
        c##r##3 = _mm512_dpbusd_epi32(c##r##3, U3, S3);                                                           \
    } while (0)
#define DSE_IG_Q512_MICRO(name, U0, S0, U1, S1, U2, S2, U3, S3)                                                        \
    DSE_T_VNNI512 static void name(const void *Av, const void *Bv, int64_t kcq, int32_t *C, int64_t ldc, int acc)  \
    {                                                                                                              \
        const uint8_t *A = (const uint8_t *)Av;                                                                    \
        __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00;   \
        __m512i c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00; \
        __m512i c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;           \
        for (int64_t p = 0; p < kcq; p++) {                                                                        \
            const __m512i a0 = _mm512_loadu_si512(A + p * 256), a1 = _mm512_loadu_si512(A + p * 256 + 64);        \
            const __m512i a2 = _mm512_loadu_si512(A + p * 256 + 128), a3 = _mm512_loadu_si512(A + p * 256 + 192);  \
            const int32_t *b = (const int32_t *)Bv + p * DSE_IG_NR;                                                \
            DSE_IG_Q512_ROW(0, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
            DSE_IG_Q512_ROW(1, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
            DSE_IG_Q512_ROW(2, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
            DSE_IG_Q512_ROW(3, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
            DSE_IG_Q512_ROW(4, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
            DSE_IG_Q512_ROW(5, U0, S0, U1, S1, U2, S2, U3, S3);                                                        \
        }                                                                                                          \
        DSE_IG_512_STORE(0);                                                                                       \
        DSE_IG_512_STORE(1);                                                                                       \
        DSE_IG_512_STORE(2);                                                                                       \
        DSE_IG_512_STORE(3);                                                                                       \
        DSE_IG_512_STORE(4);                                                                                       \
        DSE_IG_512_STORE(5);                                                                                       \
        DSE_IG_512_STORE2(0);                                                                                      \
        DSE_IG_512_STORE2(1);                                                                                      \
        DSE_IG_512_STORE2(2);                                                                                      \
        DSE_IG_512_STORE2(3);                                                                                      \
        DSE_IG_512_STORE2(4);                                                                                      \
        DSE_IG_512_STORE2(5);                                                                                      \
    }
#define DSE_IG_512_STORE2(r)                                                                                       \
    do {                                                                                                           \
        int32_t *o = C + r * ldc + 32;                                                                             \
        if (acc) {                                                                                                 \
            c##r##2 = _mm512_add_epi32(c##r##2, _mm512_loadu_si512(o));                                           \
            c##r##3 = _mm512_add_epi32(c##r##3, _mm512_loadu_si512(o + 16));                                      \
        }                                                                                                          \
        _mm512_storeu_si512(o, c##r##2);                                                                           \
        _mm512_storeu_si512(o + 16, c##r##3);                                                                      \
    } while (0)
DSE_IG_Q512_MICRO(dse_ig_micro_vnni512, a0, w, a1, w, a2, w, a3, w) /* activations unsigned (or offset) */
DSE_IG_Q512_MICRO(dse_ig_micro_vnni512_swap, w, a0, w, a1, w, a2, w, a3) /* weights unsigned, activations signed */

/* The AVX-VNNI (ymm) kernels of the avx2 level: the same packing with SSE2 unpacks (bytes translated by a table other
 * than the identity or the sign flip element by element), MR 16 positions (2 ymm) x NR 6 rows: 12 accumulators. */
DSE_T_AVX2 static void dse_ig_pack_q_avx2(const dse_ig_plan *P, int64_t p0, int64_t kcq, int64_t m0, int64_t mv,
                                          uint8_t *dst)
{
    const dse_ig_a *A = &P->A;
    const int mr = P->mr;
    const int64_t lda = A->lda, full = mv - mv % mr;
    const int64_t pfull = dse_ig_whole_groups(P->K, 4, p0, kcq);
    const __m128i flip = _mm_set1_epi8((char)(P->xa_flip ? 0x80 : 0));
    const int lookup = !P->xa_ident && !P->xa_flip;
    uint8_t tb[64];
    for (int64_t p = 0; p < pfull; p++) {
        for (int64_t q = 0; q < full / mr; q++) {
            uint8_t *d = dst + (q * kcq + p) * 4 * mr;
            if (!dse_ig_run(A, m0 + q * mr, mr)) {
                dse_ig_q_cell(P, 4 * (p0 + p), m0 + q * mr, mr, d);
                continue;
            }
            const uint8_t *r = dse_ig_at(A, 4 * (p0 + p), m0 + q * mr);
            for (int c = 0; c < mr; c += 16) {
                __m128i x[4];
                for (int h = 0; h < 4; h++) {
                    if (lookup) {
                        for (int i = 0; i < 16; i++)
                            tb[16 * h + i] = P->xa[r[h * lda + c + i]];
                        x[h] = _mm_loadu_si128((const __m128i *)(tb + 16 * h));
                    } else {
                        x[h] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r + h * lda + c)), flip);
                    }
                }
                const __m128i lo01 = _mm_unpacklo_epi8(x[0], x[1]), hi01 = _mm_unpackhi_epi8(x[0], x[1]);
                const __m128i lo23 = _mm_unpacklo_epi8(x[2], x[3]), hi23 = _mm_unpackhi_epi8(x[2], x[3]);
                _mm_storeu_si128((__m128i *)(d + 4 * c), _mm_unpacklo_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i *)(d + 4 * c + 16), _mm_unpackhi_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i *)(d + 4 * c + 32), _mm_unpacklo_epi16(hi01, hi23));
                _mm_storeu_si128((__m128i *)(d + 4 * c + 48), _mm_unpackhi_epi16(hi01, hi23));
            }
        }
    }
    dse_ig_pack_q_rest(P, p0, kcq, pfull, m0, mv, dst);
}

#define DSE_IG_Q256_ROW(r, U0, S0, U1, S1)                                                                         \
    do {                                                                                                           \
        const __m256i w = _mm256_set1_epi32(b[r]);                                                                 \
        c##r##0 = _mm256_dpbusd_avx_epi32(c##r##0, U0, S0);                                                       \
        c##r##1 = _mm256_dpbusd_avx_epi32(c##r##1, U1, S1);                                                       \
    } while (0)
#define DSE_IG_Q256_MICRO(name, TGT, ROW, U0, S0, U1, S1)                                                         \
    TGT static void name(const void *Av, const void *Bv, int64_t kcq, int32_t *C, int64_t ldc, int acc)            \
    {                                                                                                              \
        const uint8_t *A = (const uint8_t *)Av;                                                                    \
        __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;             \
        __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                                 \
        for (int64_t p = 0; p < kcq; p++) {                                                                        \
            const __m256i a0 = _mm256_loadu_si256((const __m256i *)(A + p * 64));                                  \
            const __m256i a1 = _mm256_loadu_si256((const __m256i *)(A + p * 64 + 32));                             \
            const int32_t *b = (const int32_t *)Bv + p * DSE_IG_NR;                                                \
            ROW(0, U0, S0, U1, S1);                                                                    \
            ROW(1, U0, S0, U1, S1);                                                                    \
            ROW(2, U0, S0, U1, S1);                                                                    \
            ROW(3, U0, S0, U1, S1);                                                                    \
            ROW(4, U0, S0, U1, S1);                                                                    \
            ROW(5, U0, S0, U1, S1);                                                                    \
        }                                                                                                          \
        __m256i cs[DSE_IG_NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};       \
        for (int r = 0; r < DSE_IG_NR; r++) {                                                                      \
            __m256i *o = (__m256i *)(C + r * ldc);                                                                 \
            if (acc) {                                                                                             \
                cs[r][0] = _mm256_add_epi32(cs[r][0], _mm256_loadu_si256(o));                                     \
                cs[r][1] = _mm256_add_epi32(cs[r][1], _mm256_loadu_si256(o + 1));                                 \
            }                                                                                                      \
            _mm256_storeu_si256(o, cs[r][0]);                                                                      \
            _mm256_storeu_si256(o + 1, cs[r][1]);                                                                  \
        }                                                                                                          \
    }
/* ROW(r, U0, S0, U1, S1): row r's two accumulators += the products of the quads U and S (vpdpbusd, or the byte
 * pairs below) */
DSE_IG_Q256_MICRO(dse_ig_micro_vnni256, DSE_T_VNNI256, DSE_IG_Q256_ROW, a0, w, a1, w)
DSE_IG_Q256_MICRO(dse_ig_micro_vnni256_swap, DSE_T_VNNI256, DSE_IG_Q256_ROW, w, a0, w, a1)

/* ------------------------------------------------------------------ Byte pairs without VNNI: vpmaddubsw
 *
 * At the avx2 level on a CPU without AVX-VNNI the same byte quads run on vpmaddubsw (u8 x s8 -> the int16 sum of a
 * byte pair, saturating) + vpmaddwd with ones (the two pair sums of a quad -> int32) + vpaddd: 3 vector ops per 32
 * products instead of the int16 kernel's 4 (1.20-1.34x its MACs per second on this Zen 3, RESULTS.md). A pair sum
 * u0 s0 + u1 s1 (u on the unsigned port, s on the signed one) is exact while U (|s0| + |s1|) <= 32767, U = the
 * largest unsigned byte of the call when the weights are the signed operand, or the largest |activation value| with
 * the weights on the unsigned port (swap; then U (u0 + u1) bounds it): the weights w are known when the call packs
 * them, so each packed weight pair with |w0| + |w1| > ub_lim = floor(32767 / U) keeps its smaller-magnitude weight
 * and lowers the larger one's magnitude to ub_lim - |smaller| (>= 0: every single product fits, 255 x 128 <= 32767),
 * keeping its sign; the difference r = w - w_s goes to the row's remainder quad for that depth quad (a residual entry:
 * quad, 4 bytes; |r| <= |w| fits the weight's port, and a pair of it holds at most one nonzero byte, so its pair sums
 * fit int16 too), and the driver adds the remainder quads' products with the block's activation quads (from the
 * packed panel, the same kernel arithmetic) into the tile's int32 sums after the block's micro-kernel calls
 * (dse_ig_ub_residual). The activation bytes, the offset correction (from the true weights) and the segments are
 * those of the VNNI kernel. Bounds: w_s and r have w's sign and |w_s|, |r| <= |w|, so at every point a lane holds
 * sum_k u_k w'_k with w'_k in {w_s, r, w} (the remainders in a register sum of their own, or added), each |u_k w'_k|
 * <= |u_k w_k| <= S8: the VNNI segment bounds above hold for every partial sum as they do for vpdpbusd's. Trained
 * int8 weights (|w| mostly far below 64) leave few pairs over the bound (U = 255: ub_lim = 128); weights at +-127
 * everywhere make every pair a residual entry, still exact. */
/* depth rows at least: shallower calls are bound by their output step, and their weight pairs (per-channel int8
 * weights over few rows) more often over the bound: MobileNetV2 32's expand convs (K 16-160) 0.88x on the byte pairs */
#define DSE_IG_UB_KMIN 128
typedef struct dse_ig_res {
    int32_t p;  /* depth quad */
    int32_t w;  /* the remainders of the row's quad as 4 bytes (0 where the weight was kept whole) */
} dse_ig_res;

DSE_T_AVX2 static inline __m256i dse_ig_ub_dot(__m256i c, __m256i u, __m256i s)
{
    return _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
#define DSE_IG_UB_ROW(r, U0, S0, U1, S1)                                                                           \
    do {                                                                                                           \
        const __m256i w = _mm256_set1_epi32(b[r]);                                                                 \
        c##r##0 = dse_ig_ub_dot(c##r##0, U0, S0);                                                                  \
        c##r##1 = dse_ig_ub_dot(c##r##1, U1, S1);                                                                  \
    } while (0)
DSE_IG_Q256_MICRO(dse_ig_micro_ub, DSE_T_AVX2, DSE_IG_UB_ROW, a0, w, a1, w)
DSE_IG_Q256_MICRO(dse_ig_micro_ub_swap, DSE_T_AVX2, DSE_IG_UB_ROW, w, a0, w, a1)

/* Tile nt's packed weight pairs (Wq as dse_ig_pack_w8 left them) split at ub_lim: the lowered bytes written back, the
 * remainder quads to res (at most one per row and quad, row by row, then by quad; row r's from res[row[r]] to
 * res[row[r + 1]]). */
static void dse_ig_ub_split(const dse_ig_plan *P, int64_t nt, uint8_t *Wq, dse_ig_res *res, int64_t *row)
{
    uint8_t *base = Wq + nt * P->KP * 4 * DSE_IG_NR;
    const int lim = P->ub_lim;
    int64_t n = 0;
    for (int r = 0; r < DSE_IG_NR; r++) {
        row[r] = n;
        for (int64_t p = 0; p < P->KP; p++) {
            uint8_t *d = base + p * 4 * DSE_IG_NR + 4 * r, rq[4] = {0, 0, 0, 0};
            int any = 0;
            for (int h = 0; h < 4; h += 2) {
                const int w0 = P->swap ? d[h] : (int8_t)d[h], w1 = P->swap ? d[h + 1] : (int8_t)d[h + 1];
                const int m0 = w0 < 0 ? -w0 : w0, m1 = w1 < 0 ? -w1 : w1;
                if (m0 + m1 <= lim)
                    continue;
                const int big = m0 >= m1 ? 0 : 1, keep = lim - (big ? m0 : m1), w = big ? w1 : w0;
                const int ws = w < 0 ? -keep : keep;
                d[h + big] = (uint8_t)ws;
                rq[h + big] = (uint8_t)(w - ws); /* |w - ws| <= |w|: a byte on the weight's port */
                any = 1;
            }
            if (any) {
                res[n].p = (int32_t)p;
                memcpy(&res[n].w, rq, 4);
                n++;
            }
        }
    }
    row[DSE_IG_NR] = n;
}

/* C[r, q mr + c] += the products of tile nt's remainder quads of quads [p0, p0 + kcq) with the activation quads of
 * the block's panels (npan panels of MR 16 at Apk), row by row, each panel's sum in registers. A remainder quad has
 * at most one nonzero byte per pair, so its pair sums stay within int16. */
DSE_T_AVX2 static void dse_ig_ub_residual(const dse_ig_plan *P, int64_t nt, int64_t p0, int64_t kcq, const uint8_t *Apk,
                                          int64_t npan, int32_t *C, int64_t ldc)
{
    const dse_ig_res *res = P->res + nt * P->res_cap;
    const int64_t *row = P->res_row + nt * (DSE_IG_NR + 1);
    for (int r = 0; r < DSE_IG_NR; r++) {
        int64_t lo = row[r], hi = row[r + 1];
        while (lo < hi) { /* the row's first entry of quad p0 or later */
            const int64_t mid = (lo + hi) / 2;
            if (res[mid].p < p0)
                lo = mid + 1;
            else
                hi = mid;
        }
        int64_t e1 = lo;
        while (e1 < row[r + 1] && res[e1].p < p0 + kcq)
            e1++;
        if (e1 == lo)
            continue;
        for (int64_t q = 0; q < npan; q++) {
            const uint8_t *a = Apk + q * kcq * 4 * DSE_IG_MR_VNNI256;
            __m256i s0 = _mm256_setzero_si256(), s1 = s0;
            for (int64_t i = lo; i < e1; i++) {
                const uint8_t *ap = a + (res[i].p - p0) * 4 * DSE_IG_MR_VNNI256;
                const __m256i w = _mm256_set1_epi32(res[i].w);
                const __m256i a0 = _mm256_loadu_si256((const __m256i *)ap), a1 = _mm256_loadu_si256((const __m256i *)(ap + 32));
                s0 = P->swap ? dse_ig_ub_dot(s0, w, a0) : dse_ig_ub_dot(s0, a0, w);
                s1 = P->swap ? dse_ig_ub_dot(s1, w, a1) : dse_ig_ub_dot(s1, a1, w);
            }
            __m256i *o = (__m256i *)(C + r * ldc + q * DSE_IG_MR_VNNI256);
            _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), s0));
            _mm256_storeu_si256(o + 1, _mm256_add_epi32(_mm256_loadu_si256(o + 1), s1));
        }
    }
}

/* Activation value of pattern p (t = 1). */
static inline int dse_ig_value(int mode, const int16_t *fa, int p)
{
    return mode == DSE_IG_U8 ? p : mode == DSE_IG_S8 ? (int)(int8_t)p : fa[p];
}

/* Whether the call (t = 1) runs on the VNNI kernel of its level: picks the ports and the activation offset, sets the
 * byte table, the segments and the kernels in P (P's operands, level and sc set). */
static int dse_ig_plan8(dse_ig_plan *P, const int16_t *gw)
{
    const int ub = !dse_cpu_vnni(P->level); /* no VNNI: the byte pairs at the avx2 level, at depth */
    if (P->t != 1 || (ub && (P->level != DSE_ISA_AVX2 || P->K < DSE_IG_UB_KMIN)))
        return 0;
    int alo = 1 << 20, ahi = -(1 << 20), wlo = 1 << 20, whi = -(1 << 20);
    for (int p = 0; p < 256; p++) {
        const int a = dse_ig_value(P->mode, P->fa, p);
        alo = a < alo ? a : alo, ahi = a > ahi ? a : ahi;
        wlo = gw[p] < wlo ? gw[p] : wlo, whi = gw[p] > whi ? gw[p] : whi;
    }
    if (!(wlo >= -128 && whi <= 127) && !(wlo >= 0 && whi <= 255)) { /* the range of the patterns used */
        uint8_t used[256] = {0};
        for (int64_t i = 0; i < P->N * P->K; i++)
            used[P->Wp[i]] = 1;
        wlo = 1 << 20, whi = -(1 << 20);
        for (int p = 0; p < 256; p++)
            if (used[p])
                wlo = gw[p] < wlo ? gw[p] : wlo, whi = gw[p] > whi ? gw[p] : whi;
    }
    const int w_s8 = wlo >= -128 && whi <= 127, a_s8 = alo >= -128 && ahi <= 127;
    int swap = 0, aoff = 0;
    if (w_s8 && alo >= 0 && ahi <= 255)
        aoff = 0;
    else if (w_s8 && a_s8)
        aoff = 128;
    else if (wlo >= 0 && whi <= 255 && a_s8)
        swap = 1;
    else
        return 0;
    const int64_t umax = swap ? whi : ahi + aoff;
    const int64_t amag = -alo > ahi ? -alo : ahi, wmag = -wlo > whi ? -wlo : whi;
    const int64_t smax = swap ? amag : wmag;
    const int64_t S8 = umax * smax > 1 ? umax * smax : 1;
    if (P->K >= ((int64_t)1 << 61) / S8)
        return 0;
    const int64_t seg_quads = 2147483647LL / (4 * S8), KQ = (P->K + 3) / 4;
    const int64_t kcq = seg_quads < DSE_IG_KCQ ? seg_quads : DSE_IG_KCQ, seg_blocks = seg_quads / kcq;
    if (P->sc && (KQ + kcq - 1) / kcq > seg_blocks)
        return 0;
    P->q8 = 1, P->swap = swap, P->aoff = aoff, P->xa_ident = 1, P->xa_flip = 1;
    for (int p = 0; p < 256; p++) {
        P->xa[p] = (uint8_t)(dse_ig_value(P->mode, P->fa, p) + aoff);
        P->xa_ident &= P->xa[p] == p;
        P->xa_flip &= P->xa[p] == (p ^ 0x80);
    }
    P->wb_ident = 1;
    for (int p = 0; p < 256; p++) {
        P->wb[p] = (uint8_t)gw[p];
        P->wb_ident &= P->wb[p] == p;
    }
    P->KP = KQ, P->kcp = kcq, P->seg_blocks = seg_blocks;
    if (P->level >= DSE_ISA_AVX512) {
        P->mr = DSE_IG_MR_VNNI, P->pack8 = dse_ig_pack_q_512;
        P->micro = swap ? dse_ig_micro_vnni512_swap : dse_ig_micro_vnni512;
    } else if (!ub) {
        P->mr = DSE_IG_MR_VNNI256, P->pack8 = dse_ig_pack_q_avx2;
        P->micro = swap ? dse_ig_micro_vnni256_swap : dse_ig_micro_vnni256;
    } else {
        P->mr = DSE_IG_MR_VNNI256, P->pack8 = dse_ig_pack_q_avx2;
        P->micro = swap ? dse_ig_micro_ub_swap : dse_ig_micro_ub;
        P->ub = 1, P->ub_lim = (int)(32767 / ((swap ? amag : umax) > 1 ? (swap ? amag : umax) : 1));
        P->res_cap = DSE_IG_NR * KQ;
    }
    return 1;
}

/* ------------------------------------------------------------------ driver */
/* Depth pairs per block and blocks per int32 segment of a call with K t depth rows and term bound S. */
static void dse_ig_segments(int64_t S, int64_t *kcp, int64_t *seg_blocks)
{
    const int64_t seg_pairs = 2147483647LL / (2 * S);
    *kcp = seg_pairs < DSE_IG_KCP ? seg_pairs : DSE_IG_KCP;
    *seg_blocks = seg_pairs / *kcp;
}

/* Whether one int32 segment holds the whole depth of a call (K rows, t terms, term bound S, 1 <= 2 S < 2^31): then
 * every int32 sum is the exact result and the scaling pass can read it from the tile (dse_int_gemm with sc). */
static int dse_ig_fits32(int64_t K, int t, int64_t S)
{
    int64_t kcp, seg_blocks;
    if (S < 1 || 2 * S > 2147483647LL)
        return 0;
    dse_ig_segments(S, &kcp, &seg_blocks);
    return ((K * t + 1) / 2 + kcp - 1) / kcp <= seg_blocks;
}

/* Fetch the line at a for writing: prefetchw at the avx512 level (every AVX-512 CPU has it), else into L2. */
static inline void dse_ig_prefetch_w(int level, const void *a)
{
    if (level >= DSE_ISA_AVX512)
        __asm__ volatile("prefetchw (%0)" : : "r"(a));
    else
        _mm_prefetch((const char *)a, _MM_HINT_T1);
}

/* Channel n's scaled outputs at positions [m0, m0 + mv) (and a fused Add's operand and patterns there) fetched
 * towards the cache while the block's sums are computed (prefetchw for what is written, L2 for what is read): the
 * scaling pass writes a tile's output planes (reads a fused Add's operand planes) in short runs of positions, one
 * per channel, too many streams for the hardware prefetchers. */
static inline void dse_ig_prefetch_out(const dse_ig_plan *P, int64_t n, int64_t m0, int64_t mv)
{
    const dse_scaling *sc = P->sc;
    const int64_t esz = dse_scaled_esz(sc);
    for (int64_t i = 0, b = m0 / P->img, s = m0 % P->img; i < mv;) {
        const int64_t len = (P->img - s < mv - i) ? P->img - s : mv - i, e = b * P->ld_img + n * P->ld_n + s;
        const uintptr_t o = (uintptr_t)dse_scaled_out(sc, P->outs, e);
        for (uintptr_t a = o & ~(uintptr_t)63; !sc->stream && !(sc->add && sc->drop) && a < o + (uintptr_t)(len * esz);
             a += 64)
            dse_ig_prefetch_w(P->level, (const void *)a);
        if (sc->add) {
            const uintptr_t r = (uintptr_t)(sc->add + e);
            for (uintptr_t a = r & ~(uintptr_t)63; a < r + (uintptr_t)(len * 4); a += 64)
                _mm_prefetch((const char *)a, _MM_HINT_T1);
        }
        if (sc->add && sc->quant) {
            const uintptr_t q = (uintptr_t)(sc->qout + e);
            for (uintptr_t a = q & ~(uintptr_t)63; a < q + (uintptr_t)len; a += 64)
                dse_ig_prefetch_w(P->level, (const void *)a);
        }
        i += len, b++, s = 0;
    }
}

/* After a task's output steps: its non-temporal stores (a large float32 output, dse_scaling.stream)
 * ordered before anything the thread does next (the team's barrier, the caller's reads). */
static inline void dse_ig_stream_fence(const dse_ig_plan *P)
{
    if (P->sc && P->sc->stream)
        _mm_sfence();
}

/* c[i] -= v for i < n: the VNNI offset's correction of a tile row (dse_ig_flush), 16 or 8 lanes at a time at the
 * avx512 and avx2 levels (GCC keeps the plain loop at SSE2 outside a target function). */
DSE_T_512 static void dse_ig_sub_512(int32_t *c, int64_t n, int32_t v)
{
    const __m512i w = _mm512_set1_epi32(v);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512(c + i, _mm512_sub_epi32(_mm512_loadu_si512(c + i), w));
    for (; i < n; i++)
        c[i] -= v;
}

DSE_T_AVX2 static void dse_ig_sub_avx2(int32_t *c, int64_t n, int32_t v)
{
    const __m256i w = _mm256_set1_epi32(v);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256((__m256i *)(c + i), _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(c + i)), w));
    for (; i < n; i++)
        c[i] -= v;
}

/* The patterns of a tile's rows [from, n1) (the tile's first row is n0) at the avx512 level for a scaled call with
 * quant, no add and no addend: each channel with the certified single-precision constants (dse_qfast_at) scaled by
 * dse_scale_run_qfast with the VNNI offset's correction subtracted in registers, its runs of positions within one
 * image written in place; returns the first channel from `from` on that has no constants (n1: all done), which the
 * caller's exact path takes. */
DSE_T_512 static int64_t dse_ig_flush_qfast(const dse_ig_plan *P, const int32_t *C32, int64_t ldc, int64_t n0,
                                            int64_t from, int64_t n1, int64_t m0, int64_t mv)
{
    const dse_scaling *sc = P->sc;
    const int sgn = sc->qlo < 0, clamp = sc->qf[3] != 0.0f;
    for (int64_t n = from; n < n1; n++) {
        dse_qfast F;
        if (!dse_qfast_at(sc, n, &F))
            return n;
        const int32_t *c = C32 + (n - n0) * ldc;
        const __m512i cn = _mm512_set1_epi32(P->corr ? (int32_t)P->corr[n] : 0);
        for (int64_t i = 0, b = m0 / P->img, s = m0 % P->img; i < mv; i += (mv - i < P->img - s ? mv - i : P->img - s),
                     b++, s = 0) {
            const int64_t len = (P->img - s < mv - i) ? P->img - s : mv - i;
            uint8_t *o = (uint8_t *)P->outs + b * P->ld_img + n * P->ld_n + s;
            if (clamp)
                sgn ? dse_scale_run_qfast(&F, sc, n, c + i, len, cn, o, 1, 1, 1)
                    : dse_scale_run_qfast(&F, sc, n, c + i, len, cn, o, 0, 1, 1);
            else
                sgn ? dse_scale_run_qfast(&F, sc, n, c + i, len, cn, o, 1, 0, 1)
                    : dse_scale_run_qfast(&F, sc, n, c + i, len, cn, o, 0, 0, 1);
        }
    }
    return n1;
}

/* Row n's final int32 sums c of positions [m0, m0 + mv) before their scaling: the VNNI offset's correction
 * subtracted, a scaled call's addend added. */
static void dse_ig_final_sums(const dse_ig_plan *P, int32_t *c, int64_t n, int64_t m0, int64_t mv)
{
    if (P->corr) { /* the corrected sums fit int32 (dse_ig_plan8) */
        const int32_t cn = (int32_t)P->corr[n];
        if (P->level >= DSE_ISA_AVX512)
            dse_ig_sub_512(c, mv, cn);
        else if (P->level == DSE_ISA_AVX2)
            dse_ig_sub_avx2(c, mv, cn);
        else
            for (int64_t i = 0; i < mv; i++)
                c[i] -= cn;
    }
    if (P->addend) /* |addend| and the totals fit int32 (the caller's bound): no int32 sum overflows */
        for (int64_t i = 0, b = m0 / P->img, s = m0 % P->img; i < mv;) {
            const int64_t len = (P->img - s < mv - i) ? P->img - s : mv - i;
            const int64_t *a = P->addend + b * P->add_ld_img + n * P->add_ld_n + s;
            int32_t *ci = c + i;
            for (int64_t j = 0; j < len; j++)
                ci[j] += (int32_t)a[j];
            i += len, b++, s = 0;
        }
}

/* Output row n's SiLU values v of the GEMM positions [i, i + len) written to their outputs (split into runs within
 * one image) by dse_emit_silu_values. */
static void dse_ig_emit_silu(const dse_ig_plan *P, int64_t n, int64_t i, int64_t len, const float *v)
{
    for (int64_t j = 0, mm = i; j < len;) {
        const int64_t b = mm / P->img, s = mm % P->img, l = (P->img - s < len - j) ? P->img - s : len - j;
        dse_emit_silu_values(P->level, P->sc, v + j, l, P->outs, b * P->ld_img + n * P->ld_n + s);
        j += l, mm += l;
    }
}

/* The final sums of a tile with a SiLU output (sc->silu): each row's scaled float32 values y written over its int32
 * sums in place (dse_scale_runs without the quantization, one group of lanes read before it is written), then the
 * SiLU of y by numpy's loops (dse_sigmoid_chunk) on chunks of the tile's rows (the rows are one block where mv fills
 * them, ldc == mv) into a chunk in cache, each chunk's values emitted to their outputs (dse_ig_emit_silu). The
 * values are those of the float32 scaling pass and numpy's loops on its output: the same bits. */
static void dse_ig_flush_silu(const dse_ig_plan *P, int32_t *C32, int64_t ldc, int64_t n0, int64_t n1, int64_t m0,
                              int64_t mv)
{
    const dse_scaling f = dse_scaling_values(P->sc);
    for (int64_t n = n0; n < n1; n++) {
        int32_t *c = C32 + (n - n0) * ldc;
        dse_ig_final_sums(P, c, n, m0, mv);
        dse_scale_runs(P->level, c, DSE_SUM_I32, 1, mv, &f, n, c, 0);
    }
    float buf[DSE_SIGMOID_CHUNK] __attribute__((aligned(64)));
    const dse_np_loop *lp = P->sc->loops;
    const int64_t rows = ldc == mv ? 1 : n1 - n0, len = ldc == mv ? (n1 - n0) * mv : mv;
    for (int64_t r = 0; r < rows; r++) {
        const float *y = (const float *)(C32 + r * ldc);
        for (int64_t t0 = 0; t0 < len; t0 += DSE_SIGMOID_CHUNK) {
            const int64_t m = len - t0 < DSE_SIGMOID_CHUNK ? len - t0 : DSE_SIGMOID_CHUNK;
            dse_sigmoid_chunk(P->level, lp, y + t0, buf, m, P->sc->silu);
            for (int64_t t = t0; t < t0 + m;) { /* the chunk's pieces of tile rows */
                const int64_t row = rows == 1 ? t / mv : r, i = rows == 1 ? t % mv : t;
                const int64_t l = (mv - i < t0 + m - t) ? mv - i : t0 + m - t;
                dse_ig_emit_silu(P, n0 + row, m0 + i, l, buf + (t - t0));
                t += l;
            }
        }
    }
}

/* out[n, m] (+)= C32[n - n0, m - m0] for the tile rows [nt0 NR, nt1 NR) within N and the mv positions of a block
 * (the first segment, add = 0, less the VNNI offset correction). */
static void dse_ig_flush(const dse_ig_plan *P, int32_t *C32, int64_t ldc, int64_t n0, int64_t n1, int64_t m0,
                         int64_t mv, int add)
{
    if (P->sc && P->sc->silu) {
        dse_ig_flush_silu(P, C32, ldc, n0, n1, m0, mv);
        return;
    }
    if (P->sc) { /* the final sums: scaled per run of positions within one image (whole images: one call) */
        for (int64_t n = n0; n < n1; n++) {
            if (P->level >= DSE_ISA_AVX512 && P->sc->qf && !P->addend && (n = dse_ig_flush_qfast(P, C32, ldc, n0, n, n1, m0, mv)) == n1)
                break;
            int32_t *c = C32 + (n - n0) * ldc;
            dse_ig_final_sums(P, c, n, m0, mv);
            for (int64_t i = 0, b = m0 / P->img, s = m0 % P->img; i < mv;) {
                const int64_t len = (P->img - s < mv - i) ? P->img - s : mv - i;
                /* whole images from here on: one call for all of them (runs of img sums, one image apart) */
                const int64_t nrun = s == 0 && len == P->img ? (mv - i) / P->img : 1;
                dse_scale_runs(P->level, c + i, DSE_SUM_I32, nrun, len, P->sc, n,
                               dse_scaled_out(P->sc, P->outs, b * P->ld_img + n * P->ld_n + s), P->ld_img);
                i += nrun * len, b += nrun, s = 0;
            }
        }
        return;
    }
    for (int64_t n = n0; n < n1; n++) {
        const int32_t *c = C32 + (n - n0) * ldc;
        const int64_t cn = P->corr ? P->corr[n] : 0;
        int64_t b = m0 / P->img, s = m0 % P->img;
        int64_t *o = P->out + b * P->ld_img + n * P->ld_n;
        for (int64_t i = 0; i < mv; i++) {
            if (add)
                o[s] += c[i];
            else
                o[s] = (int64_t)c[i] - cn;
            if (++s == P->img) {
                s = 0;
                o += P->ld_img;
            }
        }
    }
}

/* One task: positions [m0, m0 + mv) and tile rows [nt0, nt1). Apk, C32: the calling thread's scratch. Panels and
 * weights take 4 bytes per position (row) and depth step on every kernel (an int16 pair or a byte quad). */
static void dse_ig_task(const dse_ig_plan *P, int64_t m0, int64_t mv, int64_t nt0, int64_t nt1, uint8_t *Apk,
                        int32_t *C32, uint8_t *Acv, int64_t ldcv)
{
    const int64_t npan = (mv + P->mr - 1) / P->mr, ldc = npan * P->mr;
    const int64_t nblk = (P->KP + P->kcp - 1) / P->kcp;
    const int64_t n0 = nt0 * DSE_IG_NR, n1 = (nt1 * DSE_IG_NR < P->N) ? nt1 * DSE_IG_NR : P->N;
    /* the outputs fetched for writing before a tile's last depth block (dse_ig_prefetch_out), except at the avx512
     * level the patterns (1 byte each, no Add) of planes smaller than a block: there each channel's run is a line or
     * less of another image (4-16 images per block), and Zen 4 stalled on those prefetchw (MobileNetV2 32's 8x8 and
     * 4x4 expansions 1.09-1.14x without them, Zen 5 0.99x: RESULTS.md "mbz4", "mbout") */
    const int pf_out = P->sc && !(P->level >= DSE_ISA_AVX512 && !P->sc->add && dse_scaled_esz(P->sc) == 1 &&
                                  P->img < DSE_IG_MC);
    for (int64_t kb = 0; kb < nblk; kb++) {
        const int64_t p0 = kb * P->kcp, kcp = (P->KP - p0 < P->kcp) ? P->KP - p0 : P->kcp;
        const int first = kb % P->seg_blocks == 0;
        if (P->c16) /* int16 panels straight from the conv input (Acv: the masks' scratch) */
            dse_ig_pack_conv16_avx2(P, p0, kcp, m0, mv, Apk, Acv, kb == 0);
        else if (P->cv) { /* the block's operand rows from the conv input, packed from the scratch Acv [rows][ldcv] */
            const int64_t k0 = 4 * p0, k1 = (4 * (p0 + kcp) < P->K) ? 4 * (p0 + kcp) : P->K;
            const dse_ig_conv *cv = P->cv;
            dse_i2c_block(&cv->i2c, cv->x, cv->ld_b, cv->HW, cv->kw, cv->Ho, cv->Wo, k0, k1, m0, m0 + mv, Acv, ldcv);
            dse_ig_plan L = *P;
            L.K = k1 - k0, L.A.p = Acv, L.A.lda = ldcv, L.A.img = INT64_MAX, L.A.ld_img = 0;
            P->pack8(&L, 0, kcp, 0, mv, Apk);
        } else if (P->q8)
            P->pack8(P, p0, kcp, m0, mv, Apk);
        else
            P->pack(&P->A, P->K, P->t, P->fa, P->mode, p0, kcp, m0, mv, P->mr, (int16_t *)Apk);
        for (int64_t nt = nt0; nt < nt1; nt++) {
            const uint8_t *B = P->Wpk + (nt * P->KP + p0) * 4 * DSE_IG_NR;
            int32_t *C = C32 + (nt - nt0) * DSE_IG_NR * ldc;
            for (int64_t n = nt * DSE_IG_NR; pf_out && kb + 1 == nblk && n < (nt + 1) * DSE_IG_NR && n < n1; n++)
                dse_ig_prefetch_out(P, n, m0, mv);
            for (int64_t q = 0; q < npan; q++)
                P->micro(Apk + q * kcp * 4 * P->mr, B, kcp, C + q * P->mr, ldc, !first);
            if (P->ub)
                dse_ig_ub_residual(P, nt, p0, kcp, Apk, npan, C, ldc);
        }
        if ((kb + 1) % P->seg_blocks == 0 || kb + 1 == nblk)
            dse_ig_flush(P, C32, ldc, n0, n1, m0, mv, kb >= P->seg_blocks);
    }
    dse_ig_stream_fence(P);
}

/* ------------------------------------------------------------------ broadcast conv kernel
 *
 * A scaled conv call (dse_ig_conv with bcast) on VNNI with the output channels in the vector lanes (onnxruntime
 * MLAS's formulation): each image's input patterns are transposed in cache into a zero-bordered channels-last copy
 * xt[y][x][Cp] (the activation bytes xa of the patterns, C channels padded to Cp = a multiple of 4, the border and
 * the padding channels xa[0], i.e. what the im2col's padding reads; dse_bc_image), so that every tap of every
 * output lies inside it. The micro-kernel multiplies DSE_BC_NRP positions x 16 nv output channels (nv <= 4 zmm, 24
 * accumulators at nv = 4): per depth quad (tap t, channel quad q) nv weight loads and one dword broadcast per
 * position from base + off[t] + 4 q (base: the position's first tap in xt; no im2col, no activation packing, no
 * masks). Weights are packed per call into tiles of 64 channels [t][q][lanes][4] (byte 0 beyond Cout and C). The
 * int32 tile [positions][channels] of a block of DSE_BC_MB positions is transposed (16 x 16 dwords in registers)
 * into [channels][positions] and scaled by dse_ig_flush as the matrix kernel's tiles are: the same sums (every
 * term either kernel adds beyond the im2col's has weight 0), the same outputs bit for bit. One int32 segment holds
 * the whole depth (scaled calls: dse_ig_plan8). Tasks: groups of whole images (enough for DSE_BC_GROUP_POS
 * positions within DSE_BC_GROUP_BYTES of padded copy; as many per thread, their sizes within one image of each
 * other), each transposed by the thread that computes it; with fewer groups than threads, each group's channel
 * tiles (or, with too few tiles, its positions) are split and each part transposes the group itself.
 */
#define DSE_BC_NRP 6
#define DSE_BC_MB 192 /* positions per block: a multiple of DSE_BC_NRP and 16 */
#define DSE_BC_GROUP_POS 768
#define DSE_BC_GROUP_BYTES (256 << 10)
#define DSE_T_BC __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")))

/* r[i] <- column i of the 16 x 16 int32 matrix whose rows are r[0 .. 15]. */
DSE_T_BC static inline __attribute__((always_inline)) void dse_bc_t16(__m512i *r)
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int m = 0; m < 16; m += 4) { /* u[m + j], 128-bit lane L: column 4 L + j of rows m .. m + 3 */
        u[m] = _mm512_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm512_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm512_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm512_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    for (int j = 0; j < 4; j++) {
        const __m512i v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), v2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
        const __m512i w1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD), w2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_i32x4(v1, v2, 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(v1, v2, 0xDD);
        r[4 + j] = _mm512_shuffle_i32x4(w1, w2, 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(w1, w2, 0xDD);
    }
}

/* One image's C input planes (H x W bytes each, from x) as xt[((y + pt) Wp + x + pl) Cp + c] = xa[x[c H W + y W + x]]
 * (c < C; the padding channels get xa[0]): per 64 positions and 4 channels one 64-byte load of each plane (the
 * planes 2 loads ahead prefetched), 16 positions x 4 channels as quads (a 128-bit lane shuffle and one vpermb), 16
 * such as a 16 x 16 dword transpose (Cp = 4: the quads are the copy's bytes). The border of the padded image is left as it is (xa[0] from the set-up). */
DSE_T_BC static void dse_bc_image(const dse_ig_plan *P, const uint8_t *x, int64_t C, int64_t H, int64_t W,
                                  int64_t Cp, int64_t Wp, int64_t pt, int64_t pl, uint8_t *xt)
{
    const int64_t HW = H * W;
    uint8_t ib[64];
    for (int j = 0; j < 64; j++)
        ib[j] = (uint8_t)(16 * (j % 4) + j / 4);
    const __m512i idx = _mm512_loadu_si512(ib), flip = _mm512_set1_epi8((char)0x80);
    const __m512i t0 = _mm512_loadu_si512(P->xa), t1 = _mm512_loadu_si512(P->xa + 64);
    const __m512i t2 = _mm512_loadu_si512(P->xa + 128), t3 = _mm512_loadu_si512(P->xa + 192);
    const int ident = P->xa_ident, xflip = P->xa_flip;
    __m512i qb[4][16];
    int64_t y = 0, xc = 0;
    for (int64_t p0 = 0; p0 < HW; p0 += 64) {
        const int64_t n64 = HW - p0 < 64 ? HW - p0 : 64;
        const __mmask64 lm = dse_i2c_lenmask(n64);
        for (int64_t g = 0; g < Cp; g += 64) {
            for (int j = 0; j < 16; j++) {
                const int64_t c = g + 4 * j;
                if (c >= Cp) {
                    qb[0][j] = qb[1][j] = qb[2][j] = qb[3][j] = _mm512_setzero_si512();
                    continue;
                }
                __m512i rw[4];
                for (int h = 0; h < 4; h++) {
                    rw[h] = _mm512_setzero_si512();
                    if (c + h < C) {
                        rw[h] = _mm512_maskz_loadu_epi8(lm, x + (c + h) * HW + p0);
                        _mm_prefetch((const char *)(x + (c + h) * HW + p0 + 128), _MM_HINT_T0);
                    }
                }
                for (int sc = 0; sc < 4; sc++) {
                    const __m512i t01 = _mm512_shuffle_i32x4(rw[0], rw[1], sc * 0x55);
                    const __m512i t23 = _mm512_shuffle_i32x4(rw[2], rw[3], sc * 0x55);
                    qb[sc][j] = _mm512_permutexvar_epi8(idx, _mm512_shuffle_i32x4(t01, t23, 0x88));
                }
            }
            const __mmask64 cm = dse_i2c_lenmask(Cp - g);
            int64_t yy = y, xx = xc;
            for (int64_t sc = 0; Cp == 4 && sc < 4 && 16 * sc < n64; sc++) { /* one quad per position: no transpose */
                const int64_t cnt = n64 - 16 * sc < 16 ? n64 - 16 * sc : 16;
                __m512i u = qb[sc][0];
                if (xflip)
                    u = _mm512_xor_si512(u, flip);
                else if (!ident)
                    u = dse_byte_lookup512(u, _mm512_movepi8_mask(u), t0, t1, t2, t3);
                if (xx + cnt <= W) { /* within one row of the image */
                    _mm512_mask_storeu_epi32(xt + ((yy + pt) * Wp + xx + pl) * 4, (__mmask16)((1u << cnt) - 1), u);
                    xx += cnt;
                    if (xx == W)
                        xx = 0, yy++;
                    continue;
                }
                int32_t d[16];
                _mm512_storeu_si512(d, u);
                for (int64_t i = 0; i < cnt; i++) {
                    memcpy(xt + ((yy + pt) * Wp + xx + pl) * 4, d + i, 4);
                    if (++xx == W)
                        xx = 0, yy++;
                }
            }
            for (int64_t sc = 0; Cp > 4 && sc < 4 && 16 * sc < n64; sc++) {
                dse_bc_t16(qb[sc]);
                for (int64_t i = 0; i < 16 && 16 * sc + i < n64; i++) {
                    __m512i u = qb[sc][i];
                    if (xflip)
                        u = _mm512_xor_si512(u, flip);
                    else if (!ident)
                        u = dse_byte_lookup512(u, _mm512_movepi8_mask(u), t0, t1, t2, t3);
                    _mm512_mask_storeu_epi8(xt + ((yy + pt) * Wp + xx + pl) * Cp + g, cm, u);
                    if (++xx == W)
                        xx = 0, yy++;
                }
            }
        }
        xc += n64;
        y += xc / W, xc %= W;
    }
}

/* out[r * 64 + 16 l + i] = sum over taps t and channel quads q of the quad at base[r] + off[t] + 4 q (unsigned)
 * times the weights' quads of lane 16 l + i (signed), r < NRP, l < nv. */
DSE_T_BC static inline __attribute__((always_inline)) void
dse_bc_micro(const uint8_t *const *base, const int64_t *off, int64_t T, int64_t CQ, const uint8_t *wp, int32_t *out,
             const int nv)
{
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m512i c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    __m512i c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    for (int64_t t = 0; t < T; t++) {
        const int64_t o = off[t];
        const uint8_t *p0 = base[0] + o, *p1 = base[1] + o, *p2 = base[2] + o;
        const uint8_t *p3 = base[3] + o, *p4 = base[4] + o, *p5 = base[5] + o;
        for (int64_t q = 0; q < CQ; q++, wp += 64 * nv) {
            const __m512i w0 = _mm512_loadu_si512(wp);
            const __m512i w1 = nv > 1 ? _mm512_loadu_si512(wp + 64) : w0;
            const __m512i w2 = nv > 2 ? _mm512_loadu_si512(wp + 128) : w0;
            const __m512i w3 = nv > 3 ? _mm512_loadu_si512(wp + 192) : w0;
#define DSE_BC_ROW(r, p)                                                                                           \
    do {                                                                                                           \
        int32_t d;                                                                                                 \
        memcpy(&d, p + 4 * q, 4);                                                                                  \
        const __m512i a = _mm512_set1_epi32(d);                                                                    \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, w0);                                                            \
        if (nv > 1)                                                                                                \
            c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, w1);                                                        \
        if (nv > 2)                                                                                                \
            c##r##2 = _mm512_dpbusd_epi32(c##r##2, a, w2);                                                        \
        if (nv > 3)                                                                                                \
            c##r##3 = _mm512_dpbusd_epi32(c##r##3, a, w3);                                                        \
    } while (0)
            DSE_BC_ROW(0, p0);
            DSE_BC_ROW(1, p1);
            DSE_BC_ROW(2, p2);
            DSE_BC_ROW(3, p3);
            DSE_BC_ROW(4, p4);
            DSE_BC_ROW(5, p5);
#undef DSE_BC_ROW
        }
    }
#define DSE_BC_ST(r)                                                                                               \
    do {                                                                                                           \
        _mm512_storeu_si512(out + r * 64, c##r##0);                                                               \
        if (nv > 1)                                                                                                \
            _mm512_storeu_si512(out + r * 64 + 16, c##r##1);                                                      \
        if (nv > 2)                                                                                                \
            _mm512_storeu_si512(out + r * 64 + 32, c##r##2);                                                      \
        if (nv > 3)                                                                                                \
            _mm512_storeu_si512(out + r * 64 + 48, c##r##3);                                                      \
    } while (0)
    DSE_BC_ST(0);
    DSE_BC_ST(1);
    DSE_BC_ST(2);
    DSE_BC_ST(3);
    DSE_BC_ST(4);
    DSE_BC_ST(5);
#undef DSE_BC_ST
}
#define DSE_BC_MICRO(nv)                                                                                           \
    DSE_T_BC static void dse_bc_micro##nv(const uint8_t *const *base, const int64_t *off, int64_t T, int64_t CQ,   \
                                          const uint8_t *wp, int32_t *out)                                         \
    {                                                                                                              \
        dse_bc_micro(base, off, T, CQ, wp, out, nv);                                                               \
    }
DSE_BC_MICRO(1)
DSE_BC_MICRO(2)
DSE_BC_MICRO(3)
DSE_BC_MICRO(4)
typedef void (*dse_bc_micro_fn)(const uint8_t *const *base, const int64_t *off, int64_t T, int64_t CQ,
                                const uint8_t *wp, int32_t *out);

/* Tile nt of the packed weights: wt[((t CQ + q) * wl + l) * 4 + h] = weight byte of channel 64 nt + l at input
 * channel 4 q + h and tap t (0 beyond C and N; wl = the tile's lanes, a multiple of 16); with an activation
 * offset, corr[n] = aoff * sum_k W'[n, k] (as dse_ig_pack_w8). Where the weight bytes are the patterns (wb the
 * identity) and 4 T <= 64: a channel quad's T taps of a weight row reordered into T dwords by one vpermb, 16 rows
 * transposed into one 64-byte store per tap. */
DSE_T_BC static void dse_bc_pack_w(const dse_ig_plan *P, const int16_t *gw, int64_t T, int64_t C, int64_t CQ,
                                   int64_t nt, uint8_t *wt, int64_t *corr)
{
    const int64_t n0 = 64 * nt, nv = (P->N - n0 >= 64) ? 4 : (P->N - n0 + 15) / 16, wl = 16 * nv, K = P->K;
    if (P->wb_ident && T <= 16) { /* per 16 lanes and channel quad: 16 vpermb, a 16 x 16 dword transpose */
        uint8_t ib[64];
        for (int j = 0; j < 64; j++)
            ib[j] = (uint8_t)(j / 4 < T ? (j % 4) * T + j / 4 : 0);
        const __m512i idx = _mm512_loadu_si512(ib);
        for (int64_t l0 = 0; l0 < wl; l0 += 16)
            for (int64_t q = 0; q < CQ; q++) {
                const __mmask64 m = dse_i2c_lenmask((C - 4 * q < 4 ? C - 4 * q : 4) * T);
                __m512i r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = n0 + l0 + i < P->N ? _mm512_permutexvar_epi8(idx, _mm512_maskz_loadu_epi8(
                                                    m, P->Wp + (n0 + l0 + i) * K + 4 * q * T))
                                              : _mm512_setzero_si512();
                dse_bc_t16(r);
                for (int64_t t = 0; t < T; t++)
                    _mm512_storeu_si512(wt + ((t * CQ + q) * wl + l0) * 4, r[t]);
            }
    } else {
        memset(wt, 0, (size_t)(T * CQ * wl * 4));
        for (int64_t l = 0; l < wl && n0 + l < P->N; l++) {
            const uint8_t *w = P->Wp + (n0 + l) * K;
            for (int64_t c = 0; c < C; c++)
                for (int64_t t = 0; t < T; t++)
                    wt[((t * CQ + c / 4) * wl + l) * 4 + c % 4] = P->wb[w[c * T + t]];
        }
    }
    for (int64_t l = 0; corr && l < wl && n0 + l < P->N; l++) {
        const uint8_t *w = P->Wp + (n0 + l) * K;
        int64_t sum = 0;
        for (int64_t k = 0; k < K; k++)
            sum += gw[w[k]];
        corr[n0 + l] = P->aoff * sum;
    }
}

/* Positions [m0, m0 + mv) (mv <= DSE_BC_MB; the padded images b0 on in xt, ldx bytes apart, rows Wp Cp bytes long;
 * tap t at off[t] from a position's first tap) x channel tiles [nt0, nt1): the int32 sums of each tile into tb
 * [positions][64], transposed into c32 [channels][DSE_BC_MB], scaled into P's outputs at positions m0 - mo on. */
DSE_T_BC static void dse_bc_block(const dse_ig_plan *P, const uint8_t *xt, int64_t ldx, int64_t b0, int64_t Wp,
                                  const int64_t *off, int64_t Cp, int64_t m0, int64_t mv, int64_t nt0, int64_t nt1,
                                  const uint8_t *wpk, int64_t wstride, const uint8_t **base, int32_t *tb, int32_t *c32,
                                  int64_t mo)
{
    const dse_ig_conv *cv = P->cv;
    const int64_t T = cv->kh * cv->kw, CQ = Cp / 4, HoWo = cv->Ho * cv->Wo, Wo = cv->Wo;
    const int64_t ng = (mv + DSE_BC_NRP - 1) / DSE_BC_NRP, rs = cv->sh * Wp * Cp, cs = cv->sw * Cp;
    int64_t b = m0 / HoWo, oh = (m0 % HoWo) / Wo, ow = (m0 % HoWo) % Wo;
    for (int64_t i = 0; i < mv; i++) {
        base[i] = xt + (b - b0) * ldx + oh * rs + ow * cs;
        if (++ow == Wo) {
            ow = 0;
            if (++oh == cv->Ho)
                oh = 0, b++;
        }
    }
    for (int64_t i = mv; i < ng * DSE_BC_NRP; i++) /* the last group's missing positions: any readable ones */
        base[i] = base[0];
    for (int64_t nt = nt0; nt < nt1; nt++) {
        const int64_t n0 = 64 * nt, n1 = (n0 + 64 < P->N) ? n0 + 64 : P->N, nv = (n1 - n0 + 15) / 16;
        const dse_bc_micro_fn micro = nv == 4 ? dse_bc_micro4 : nv == 3 ? dse_bc_micro3 : nv == 2 ? dse_bc_micro2
                                                                                                    : dse_bc_micro1;
        const uint8_t *wt = wpk + nt * wstride;
        for (int64_t gi = 0; gi < ng; gi++) {
            for (int64_t n = n0 + gi * (n1 - n0) / ng; n < n0 + (gi + 1) * (n1 - n0) / ng; n++)
                dse_ig_prefetch_out(P, n, m0 - mo, mv);
            micro(base + gi * DSE_BC_NRP, off, T, CQ, wt, tb + gi * DSE_BC_NRP * 64);
        }
        for (int64_t c0 = 0; c0 < mv; c0 += 16)
            for (int64_t l = 0; l < nv; l++) {
                __m512i r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = _mm512_loadu_si512(tb + (c0 + i) * 64 + 16 * l);
                dse_bc_t16(r);
                for (int j = 0; j < 16; j++)
                    _mm512_storeu_si512(c32 + (16 * l + j) * DSE_BC_MB + c0, r[j]);
            }
        dse_ig_flush(P, c32, DSE_BC_MB, n0, n1, m0 - mo, mv, 0);
    }
}

/* The fused max pool of images [b0, b0 + nb) (dse_bc_pool), their conv outputs in the thread's scratch y (as P lays
 * out images 0 .. nb - 1), N planes of H x W each; hr, done: dse_max_plane's scratch. */
static void dse_bc_pool_images(const dse_ig_plan *P, const float *y, int64_t b0, int64_t nb, float *hr, uint8_t *done)
{
    const dse_ig_conv *cv = P->cv;
    const dse_bc_pool *pl = cv->pool;
    const int64_t O = pl->Ho * pl->Wo;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t n = 0; n < P->N; n++) {
            const int64_t o = ((b0 + b) * P->N + n) * O;
            dse_max_plane(P->level, y + b * P->ld_img + n * P->ld_n, cv->Ho, cv->Wo, pl->kh, pl->kw, pl->sh, pl->sw,
                          pl->pt, pl->pl, pl->dh, pl->dw, pl->Ho, pl->Wo, pl->out + o, hr, done);
            if (pl->q)
                dse_quantize_avx2(pl->out + o, O, pl->qs, pl->qlo, pl->qhi, pl->q + o);
        }
}

/* The driver of a dse_ig_conv call with bcast (P planned for VNNI with a scaling, no port swap): 1, or -1 when a
 * scratch buffer cannot be allocated. */
static int dse_bc_conv(dse_ig_plan *P, const int16_t *gw, int nt)
{
    const dse_ig_conv *cv = P->cv;
    const int64_t T = cv->kh * cv->kw, C = P->K / T, Cp = (C + 3) / 4 * 4, CQ = Cp / 4;
    const int64_t NT = (P->N + 63) / 64, wstride = T * CQ * 256;
    /* the padded image: every tap of every output inside, every input pixel too */
    const int64_t Hn = (cv->Ho - 1) * cv->sh + (cv->kh - 1) * cv->dh + 1, Wn = (cv->Wo - 1) * cv->sw + (cv->kw - 1) * cv->dw + 1;
    const int64_t Hp = Hn > cv->pt + cv->H ? Hn : cv->pt + cv->H, Wp = Wn > cv->pl + cv->W ? Wn : cv->pl + cv->W;
    const int64_t HoWo = cv->Ho * cv->Wo, B = P->M / HoWo, ldx = Hp * Wp * Cp;
    int64_t *off = (int64_t *)malloc((size_t)T * sizeof(int64_t));
    if (!off)
        return -1;
    for (int64_t t = 0; t < T; t++)
        off[t] = ((t / cv->kw) * cv->dh * Wp + (t % cv->kw) * cv->dw) * Cp;
    int64_t G = (DSE_BC_GROUP_POS + HoWo - 1) / HoWo;
    const int64_t gmax = DSE_BC_GROUP_BYTES / ldx > 1 ? DSE_BC_GROUP_BYTES / ldx : 1;
    G = G < gmax ? G : gmax;
    G = G < B ? G : B;
    int64_t ngrp = (B + G - 1) / G;
    if (ngrp > nt) /* as many groups per thread (static schedule); group g: images [g B / ngrp, (g + 1) B / ngrp) */
        ngrp = (ngrp + nt - 1) / nt * nt;
    G = (B + ngrp - 1) / ngrp;
    /* a fused pool needs whole images per task (every channel and position of them) */
    const int64_t nsplit = ngrp >= nt || cv->pool ? 1 : (nt + ngrp - 1) / ngrp;
    const int by_ch = NT >= nsplit, tpc = (NT + nsplit - 1) / nsplit;
    uint8_t *wpk = (uint8_t *)aligned_alloc(64, (size_t)(NT * wstride));
    int64_t *corr = P->aoff ? (int64_t *)malloc((size_t)P->N * sizeof(int64_t)) : NULL;
    if (!wpk || (P->aoff && !corr)) {
        free(wpk);
        free(corr);
        free(off);
        return -1;
    }
    P->corr = corr;
    /* with a fused pool each thread scales its task's images into its own scratch (plan Q: outputs there, [G][N][Ho
     * Wo] from the task's first image on, written with ordinary stores, which the pool reads back from the cache) */
    dse_scaling scq = *P->sc;
    scq.stream = 0;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < NT; i++)
            dse_bc_pack_w(P, gw, T, C, CQ, i, wpk + i * wstride, corr);
        uint8_t *xt = (uint8_t *)aligned_alloc(64, (size_t)((G * ldx + 63) / 64 * 64));
        const uint8_t **base = (const uint8_t **)malloc((size_t)DSE_BC_MB * sizeof(uint8_t *));
        int32_t *tb = (int32_t *)aligned_alloc(64, (size_t)DSE_BC_MB * 64 * sizeof(int32_t));
        int32_t *c32 = (int32_t *)aligned_alloc(64, (size_t)DSE_BC_MB * 64 * sizeof(int32_t));
        dse_ig_plan Q = *P;
        float *y = NULL, *hr = NULL;
        uint8_t *done = NULL;
        if (cv->pool) {
            y = (float *)aligned_alloc(64, (size_t)((G * P->N * HoWo * 4 + 63) / 64 * 64));
            hr = (float *)malloc((size_t)(cv->Ho * cv->pool->Wo) * sizeof(float));
            done = (uint8_t *)malloc((size_t)cv->Ho);
            Q.outs = y, Q.sc = &scq, Q.ld_img = P->N * HoWo, Q.ld_n = HoWo;
        }
        if (dse_team_allocated(&fail, xt && base && tb && c32 && (!cv->pool || (y && hr && done)))) {
            memset(xt, P->xa[0], (size_t)(G * ldx)); /* the padding: pattern 0's byte */
            memset(tb, 0, (size_t)DSE_BC_MB * 64 * sizeof(int32_t));
            int64_t cur = -1;
#pragma omp for schedule(static)
            for (int64_t task = 0; task < ngrp * nsplit; task++) {
                const int64_t gi = task / nsplit, part = task % nsplit, b0 = gi * B / ngrp;
                const int64_t nb = (gi + 1) * B / ngrp - b0, np = nb * HoWo;
                int64_t p0 = 0, p1 = np, nt0 = 0, nt1 = NT;
                if (nsplit > 1 && by_ch) {
                    nt0 = part * tpc, nt1 = (nt0 + tpc < NT) ? nt0 + tpc : NT;
                } else if (nsplit > 1) {
                    const int64_t len = ((np + nsplit - 1) / nsplit + DSE_BC_NRP - 1) / DSE_BC_NRP * DSE_BC_NRP;
                    p0 = part * len < np ? part * len : np, p1 = p0 + len < np ? p0 + len : np;
                }
                if (nt0 >= nt1 || p0 >= p1)
                    continue;
                if (cur != gi) {
                    for (int64_t b = 0; b < nb; b++)
                        dse_bc_image(P, cv->x + (b0 + b) * cv->ld_b, C, cv->H, cv->W, Cp, Wp, cv->pt, cv->pl,
                                     xt + b * ldx);
                    cur = gi;
                }
                for (int64_t m = p0; m < p1; m += DSE_BC_MB)
                    dse_bc_block(&Q, xt, ldx, b0, Wp, off, Cp, b0 * HoWo + m,
                                 (p1 - m < DSE_BC_MB) ? p1 - m : DSE_BC_MB, nt0, nt1, wpk, wstride, base, tb, c32,
                                 cv->pool ? b0 * HoWo : 0);
                if (cv->pool)
                    dse_bc_pool_images(&Q, y, b0, nb, hr, done);
                dse_ig_stream_fence(&Q);
            }
        }
        free(y);
        free(hr);
        free(done);
        free(xt);
        free((void *)base);
        free(tb);
        free(c32);
    }
    free(wpk);
    free(corr);
    free(off);
    return fail ? -1 : 1;
}

/* Output positions per block of a call on the VNNI kernel at the avx512 level: DSE_IG_MC, or whole images where a
 * scaled call's output step writes float32 values (a fused Add's sum with its operand read, or a float32 output) of a
 * matrix operand (no conv operand built) whose depth is one block: the least multiple of lcm(image size, MR) of at
 * least DSE_IG_MC positions (small planes: as many whole images as make DSE_IG_MC or more), when that block's packed
 * operand (mc x 4 KP bytes) stays within 256 KiB of the L2 and its int32 tile (N x mc x 4 bytes) within 4 MiB. Each
 * channel's run of positions in the output step is then a whole image plane (ResNet-50's 64 -> 256 1x1 convs with the residual Add at 56 x 56: 12.25 KiB of the operand and the sum per
 * channel instead of 1 KiB pieces, the hardware prefetchers' streams; 14.3 -> 10.5 ms per call in the network,
 * RESULTS.md), not the 256-position pieces that suit a deep GEMM's panel. */
static int64_t dse_ig_block_positions(const dse_ig_plan *P, const dse_ig_conv *cv)
{
    const dse_scaling *sc = P->sc;
    if (!sc || cv || !P->q8 || P->level < DSE_ISA_AVX512 || sc->silu || (sc->quant && !sc->add) ||
        P->KP > P->kcp || P->img < 1 || P->img > 8192)
        return DSE_IG_MC;
    int64_t a = P->img, b = P->mr;
    while (b) {
        const int64_t r = a % b;
        a = b, b = r;
    }
    const int64_t l = P->img / a * P->mr, mc = (DSE_IG_MC + l - 1) / l * l; /* never fewer than DSE_IG_MC */
    return mc <= 8192 && mc * 4 * P->KP <= (256 << 10) && P->N * mc * 4 <= (4 << 20) ? mc : DSE_IG_MC;
}

/* Returns 0 (the int16 kernel ran) or 1 (the VNNI kernel ran: vnni != 0 allows it where the CPU has it and the
 * operands fit bytes), or -1 when a scratch buffer cannot be allocated, -2 when S is out of range (2 S must be
 * < 2^31), -4 when the operand is a conv's input (cv, AT unused) and the call runs neither on the avx512 VNNI
 * kernel nor on the avx2 int16 kernel with panels from the input (dse_ig_conv16_fits) (nothing done: the caller
 * builds the operand). With sc, ``addend`` (or NULL) holds int64 sums laid out as out
 * with strides add_ld_img, add_ld_n, added to the finished sums before the scaling (e.g. the split path's error
 * sums: the layer's sums = exact product + error); the caller guarantees that they and the totals fit int32. */
static int dse_int_gemm(int level, const uint8_t *AT, int64_t lda, int64_t aimg, int64_t ld_aimg, const uint8_t *Wp,
                        int64_t K, int64_t M, int64_t N,
                        int t, const int16_t *fa, int mode, const int16_t *gw, int64_t S, int64_t *out, int64_t img,
                        int64_t ld_img, int64_t ld_n, const dse_scaling *sc, void *outs, int vnni, int nt,
                        const dse_ig_conv *cv, const int64_t *addend, int64_t add_ld_img, int64_t add_ld_n)
{
    if (S < 1 || 2 * S > 2147483647LL)
        return -2;
    if (sc && !dse_ig_fits32(K, t, S))
        return -3;
    dse_ig_plan P;
    memset(&P, 0, sizeof(P));
    P.A.p = AT, P.A.lda = lda, P.A.img = aimg, P.A.ld_img = ld_aimg;
    P.Wp = Wp, P.K = K, P.M = M, P.N = N, P.t = t, P.mode = mode, P.fa = fa;
    P.img = img, P.ld_img = ld_img, P.ld_n = ld_n, P.out = out, P.level = level, P.sc = sc, P.outs = outs;
    if (sc)
        P.addend = addend, P.add_ld_img = add_ld_img, P.add_ld_n = add_ld_n;
    /* a conv operand packed straight from the input: the int16 panels, or the byte pairs' quads (no VNNI) */
    const int c16_fits = cv && level == DSE_ISA_AVX2 && dse_ig_conv16_fits(cv, K, t, mode);
    const int q8 = vnni && dse_ig_plan8(&P, gw);
    const int c16 = c16_fits && (!q8 || P.ub);
    if (cv && !(q8 && level >= DSE_ISA_AVX512) && !c16)
        return -4;
    P.cv = cv, P.c16 = c16;
    if (cv && cv->bcast) /* scaled calls with the activations on the unsigned port */
        return sc && !P.swap ? dse_bc_conv(&P, gw, nt) : -4;
    if (!q8) {
        P.KP = (K * t + 1) / 2;
        dse_ig_segments(S, &P.kcp, &P.seg_blocks);
        if (level >= DSE_ISA_AVX512) {
            P.mr = DSE_IG_MR_512, P.micro = dse_ig_micro_512, P.pack = dse_ig_pack_a_512;
        } else if (level == DSE_ISA_AVX2) {
            P.mr = DSE_IG_MR_AVX2, P.micro = dse_ig_micro_avx2, P.pack = dse_ig_pack_a_avx2;
        } else {
            P.mr = DSE_IG_MR_SCALAR, P.micro = dse_ig_micro_scalar, P.pack = dse_ig_pack_a_scalar;
        }
    }
    const int64_t NT = (N + DSE_IG_NR - 1) / DSE_IG_NR;
    const int64_t mcap = dse_ig_block_positions(&P, cv);
    const int64_t mc = M < mcap ? (M + P.mr - 1) / P.mr * P.mr : mcap;
    const int64_t nmb = (M + mc - 1) / mc;
    /* split the tile rows too when there are fewer position blocks than threads */
    const int64_t nch = nmb >= nt ? 1 : ((nt + nmb - 1) / nmb < NT ? (nt + nmb - 1) / nmb : NT);
    const int64_t tpc = (NT + nch - 1) / nch;
    uint8_t *Wpk = (uint8_t *)malloc((size_t)(NT * P.KP * 4 * DSE_IG_NR));
    int64_t *corr = P.aoff ? (int64_t *)malloc((size_t)N * sizeof(int64_t)) : NULL;
    /* the byte pairs' residual entries: room for every pair of each tile (pages untouched beyond the entries made) */
    dse_ig_res *res = P.ub ? (dse_ig_res *)malloc((size_t)(NT * P.res_cap) * sizeof(dse_ig_res)) : NULL;
    int64_t *res_row = P.ub ? (int64_t *)malloc((size_t)NT * (DSE_IG_NR + 1) * sizeof(int64_t)) : NULL;
    if (!Wpk || (P.aoff && !corr) || (P.ub && !(res && res_row))) {
        free(Wpk);
        free(corr);
        free(res);
        free(res_row);
        return -1;
    }
    P.Wpk = Wpk, P.corr = corr, P.res = res, P.res_row = res_row;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < NT; i++) {
            if (P.q8) {
                dse_ig_pack_w8(&P, gw, i, Wpk, corr);
                if (P.ub)
                    dse_ig_ub_split(&P, i, Wpk, res + i * P.res_cap, res_row + i * (DSE_IG_NR + 1));
            }
            else
                dse_ig_pack_w(Wp, K, N, t, gw, i, P.KP, (int16_t *)Wpk);
        }
        uint8_t *Apk = (uint8_t *)aligned_alloc(64, (size_t)(mc * P.kcp * 4));
        int32_t *C32 = (int32_t *)aligned_alloc(64, (size_t)(tpc * DSE_IG_NR * mc) * sizeof(int32_t));
        /* [4 kcp][mc], or the int16 conv panels' masks */
        uint8_t *Acv = cv ? (uint8_t *)aligned_alloc(64, (size_t)(mc * P.kcp * 4 > DSE_IG_C16_SCR ? mc * P.kcp * 4
                                                                                             : DSE_IG_C16_SCR))
                          : NULL;
        if (dse_team_allocated(&fail, Apk && C32 && (Acv || !cv))) {
#pragma omp for schedule(static)
            for (int64_t task = 0; task < nmb * nch; task++) {
                const int64_t mb = task / nch, ch = task % nch;
                const int64_t m0 = mb * mc, mv = (M - m0 < mc) ? M - m0 : mc;
                const int64_t nt0 = ch * tpc, nt1 = (nt0 + tpc < NT) ? nt0 + tpc : NT;
                if (nt0 < nt1)
                    dse_ig_task(&P, m0, mv, nt0, nt1, Apk, C32, Acv, mc);
            }
        }
        free(Apk);
        free(C32);
        free(Acv);
    }
    free(Wpk);
    free(corr);
    free(res);
    free(res_row);
    return fail ? -1 : P.q8;
}

#endif
