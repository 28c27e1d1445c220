/* Table-lookup integer GEMM for emulated 8-bit multipliers, with runtime ISA dispatch.
 *
 * out[n, m] = sum_k T[w[n, k]][a[k, m]]   (int64 result, exact)
 *
 * Layouts: AT uint8 [K, M] (activation patterns, row stride lda), Wp uint8 [N, K] (weight patterns),
 * out int64 [N, M] (row stride M).
 *   scalar / avx2 read lutT int32 [256 w][256 a] (the transposed table, one 1 KiB column per weight pattern).
 *   avx512 reads planes uint8 [256 w][NP][256 a]: byte plane p of D[a, w] = LUT[a, w] - off[w] >= 0; the caller adds
 *   sum_k off[w[n, k]] afterwards (D < 2^(8*NP), NP = 1..4).
 *
 * ISA levels: 0 scalar (baseline x86-64 code), 1 AVX2 (8-lane int32 gathers), 2 AVX-512 F+BW+VBMI (vpermi2b byte
 * lookups, 64 output positions per vector, 16-bit per-plane accumulators flushed to int64 every <= 256 k-steps).
 * Functions for higher ISAs are compiled with __attribute__((target)) so the module needs no -march flag; the caller
 * picks the level with dse_cpu_level() (never above what the CPU supports).
 *
 * Overflow: scalar accumulates in int64 directly. AVX2 accumulates int32 over chunks of
 * kc = floor((2^31 - 1) / max|LUT|) k-steps (so an int32 lane can never overflow) and flushes to int64. AVX-512 byte
 * plane sums over <= 256 k-steps are <= 255 * 256 < 2^16 and are flushed to int64. Results are exact for any K with
 * K * max|LUT| < 2^63.
 */
#ifndef DSE_LUT_KERNEL_H
#define DSE_LUT_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#define DSE_ISA_SCALAR 0
#define DSE_ISA_AVX2 1
#define DSE_ISA_AVX512 2

static int dse_cpu_level(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vbmi"))
        return DSE_ISA_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return DSE_ISA_AVX2;
#endif
    return DSE_ISA_SCALAR;
}

/* ------------------------------------------------------------------ scalar */
#define DSE_SC_MB 256
static void dse_lut_scalar(const uint8_t *AT, int64_t lda, const uint8_t *Wp, const int32_t *lutT,
                           int64_t M, int64_t K, int64_t N, int64_t *out, int nt)
{
    const int64_t nmb = (M + DSE_SC_MB - 1) / DSE_SC_MB;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < nmb * N; t++) {
        int64_t acc[DSE_SC_MB];
        const int64_t m0 = (t / N) * DSE_SC_MB, n = t % N;
        const int64_t mb = (M - m0 < DSE_SC_MB) ? (M - m0) : DSE_SC_MB;
        memset(acc, 0, sizeof(acc));
        const uint8_t *wr = Wp + n * K;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) { /* 8 k-steps summed in a register: 2 loads per MAC, one acc update per 8 */
            const int32_t *c0 = lutT + 256 * (int64_t)wr[k], *c1 = lutT + 256 * (int64_t)wr[k + 1];
            const int32_t *c2 = lutT + 256 * (int64_t)wr[k + 2], *c3 = lutT + 256 * (int64_t)wr[k + 3];
            const int32_t *c4 = lutT + 256 * (int64_t)wr[k + 4], *c5 = lutT + 256 * (int64_t)wr[k + 5];
            const int32_t *c6 = lutT + 256 * (int64_t)wr[k + 6], *c7 = lutT + 256 * (int64_t)wr[k + 7];
            const uint8_t *r0 = AT + k * lda + m0;
            for (int64_t i = 0; i < mb; i++) {
                const uint8_t *r = r0 + i;
                acc[i] += ((int64_t)c0[r[0]] + c1[r[lda]] + c2[r[2 * lda]] + c3[r[3 * lda]]) +
                          ((int64_t)c4[r[4 * lda]] + c5[r[5 * lda]] + c6[r[6 * lda]] + c7[r[7 * lda]]);
            }
        }
        for (; k < K; k++) {
            const int32_t *col = lutT + 256 * (int64_t)wr[k];
            const uint8_t *ar = AT + k * lda + m0;
            for (int64_t i = 0; i < mb; i++)
                acc[i] += col[ar[i]];
        }
        memcpy(out + n * M + m0, acc, (size_t)mb * sizeof(int64_t));
    }
}

/* ------------------------------------------------------------------ AVX2 */
#define DSE_T_AVX2 __attribute__((target("avx2")))
#define DSE_T_AVX2FMA __attribute__((target("avx2,fma")))
#define DSE_A2_MB 32 /* 4 ymm accumulators of 8 int32 */

DSE_T_AVX2 static void dse_lut_avx2(const uint8_t *AT, int64_t lda, const uint8_t *Wp, const int32_t *lutT,
                                    int32_t maxabs, int64_t M, int64_t K, int64_t N, int64_t *out, int nt)
{
    const int64_t kc = maxabs > 0 ? (int64_t)(2147483647 / maxabs) : K + 1; /* int32 lanes never overflow */
    const int64_t Mv = M - M % DSE_A2_MB;
    const int64_t nmb = Mv / DSE_A2_MB;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < nmb * N; t++) {
        int64_t acc64[DSE_A2_MB];
        int32_t tmp[DSE_A2_MB];
        const int64_t m0 = (t / N) * DSE_A2_MB, n = t % N;
        {
            const uint8_t *wr = Wp + n * K;
            memset(acc64, 0, sizeof(acc64));
            for (int64_t k0 = 0; k0 < K; k0 += kc) {
                const int64_t k1 = (K - k0 < kc) ? K : k0 + kc;
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t k = k0; k < k1; k++) {
                    const int *col = (const int *)(lutT + 256 * (int64_t)wr[k]);
                    const uint8_t *ar = AT + k * lda + m0;
                    __m256i i0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ar + 0)));
                    __m256i i1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ar + 8)));
                    __m256i i2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ar + 16)));
                    __m256i i3 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ar + 24)));
                    a0 = _mm256_add_epi32(a0, _mm256_i32gather_epi32(col, i0, 4));
                    a1 = _mm256_add_epi32(a1, _mm256_i32gather_epi32(col, i1, 4));
                    a2 = _mm256_add_epi32(a2, _mm256_i32gather_epi32(col, i2, 4));
                    a3 = _mm256_add_epi32(a3, _mm256_i32gather_epi32(col, i3, 4));
                }
                _mm256_storeu_si256((__m256i *)(tmp + 0), a0);
                _mm256_storeu_si256((__m256i *)(tmp + 8), a1);
                _mm256_storeu_si256((__m256i *)(tmp + 16), a2);
                _mm256_storeu_si256((__m256i *)(tmp + 24), a3);
                for (int i = 0; i < DSE_A2_MB; i++)
                    acc64[i] += tmp[i];
            }
            memcpy(out + n * M + m0, acc64, sizeof(acc64));
        }
    }
    if (Mv < M) { /* tail columns: scalar */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *wr = Wp + n * K;
            for (int64_t m = Mv; m < M; m++) {
                int64_t s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += lutT[256 * (int64_t)wr[k] + AT[k * lda + m]];
                out[n * M + m] = s;
            }
        }
    }
}

/* ------------------------------------------------------------------ AVX-512 VBMI */
#define DSE_T_512 __attribute__((target("avx512f,avx512bw,avx512vbmi")))
#define DSE_T_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni")))
#define DSE_T_VNNI256 __attribute__((target("avx2,avxvnni")))

/* Whether the CPU runs the VNNI kernel of an ISA level (AVX512-VNNI at avx512, AVX-VNNI at avx2). */
static int dse_cpu_vnni(int level)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static int have512 = -1, have256 = -1;
    if (have512 < 0) {
        __builtin_cpu_init();
        have256 = __builtin_cpu_supports("avxvnni") != 0;
        have512 = __builtin_cpu_supports("avx512vnni") != 0;
    }
    return level >= DSE_ISA_AVX512 ? have512 : level == DSE_ISA_AVX2 ? have256 : 0;
#else
    (void)level;
    return 0;
#endif
}

/* t[v] for each of the 64 bytes of v, from a 256-entry byte table held in t0..t3 (entries 0-63, 64-127, 128-191,
 * 192-255): two vpermi2b, the high half chosen by top = _mm512_movepi8_mask(v) (the index's bit 7). */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_byte_lookup512(__m512i v, __mmask64 top, __m512i t0,
                                                                                 __m512i t1, __m512i t2, __m512i t3)
{
    return _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t0, v, t1), _mm512_permutex2var_epi8(t2, v, t3));
}

/* One weight row n, up to NB blocks of 64 output positions starting at m0 (mlen valid positions). NP byte planes.
 * res[] holds int64 sums in block-permuted order: block b, lane i<32 -> m0 + 64b + 2i, lane 32+i -> m0 + 64b + 2i + 1. */
static inline __attribute__((always_inline)) DSE_T_512 void
dse_lut512_row(const uint8_t *AT, int64_t lda, const uint8_t *wr, const uint8_t *planes, int64_t K,
               int64_t m0, int64_t mlen, int64_t *orow, const int NP, const int NB)
{
    int64_t res[4 * 64];
    uint16_t ta[32], to[32];
    __mmask64 lm[4];
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) {
        int64_t rem = mlen - 64 * b;
        lm[b] = rem >= 64 ? ~(__mmask64)0 : (rem <= 0 ? (__mmask64)0 : (((__mmask64)1 << rem) - 1));
    }
    memset(res, 0, sizeof(int64_t) * 64 * NB);
    for (int64_t k0 = 0; k0 < K; k0 += 256) {
        const int64_t k1 = (K - k0 < 256) ? K : k0 + 256;
        __m512i accA[4][4], accO[4][4];
#pragma GCC unroll 4
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++) {
                accA[b][p] = _mm512_setzero_si512();
                accO[b][p] = _mm512_setzero_si512();
            }
        for (int64_t k = k0; k < k1; k++) {
            const uint8_t *pl = planes + (int64_t)wr[k] * (NP * 256);
            const uint8_t *ar = AT + k * lda + m0;
            __m512i T[4][4];
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++) {
                T[p][0] = _mm512_loadu_si512((const void *)(pl + 256 * p + 0));
                T[p][1] = _mm512_loadu_si512((const void *)(pl + 256 * p + 64));
                T[p][2] = _mm512_loadu_si512((const void *)(pl + 256 * p + 128));
                T[p][3] = _mm512_loadu_si512((const void *)(pl + 256 * p + 192));
            }
#pragma GCC unroll 4
            for (int b = 0; b < NB; b++) {
                const __m512i idx = _mm512_maskz_loadu_epi8(lm[b], (const void *)(ar + 64 * b));
                const __mmask64 hi = _mm512_movepi8_mask(idx); /* bit 7 selects the upper 128 entries */
#pragma GCC unroll 4
                for (int p = 0; p < NP; p++) {
                    const __m512i v = dse_byte_lookup512(idx, hi, T[p][0], T[p][1], T[p][2], T[p][3]);
                    /* 16-bit lane j holds bytes m=2j (low) and m=2j+1 (high): accA sums the whole 16-bit word
                     * (mod 2^16), accO the high bytes; even-byte sum = accA - (accO << 8) mod 2^16 (< 2^16). */
                    accA[b][p] = _mm512_add_epi16(accA[b][p], v);
                    accO[b][p] = _mm512_add_epi16(accO[b][p], _mm512_srli_epi16(v, 8));
                }
            }
        }
#pragma GCC unroll 4
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++) {
                _mm512_storeu_si512((void *)ta, accA[b][p]);
                _mm512_storeu_si512((void *)to, accO[b][p]);
                int64_t *r = res + 64 * b;
                for (int i = 0; i < 32; i++) {
                    const uint16_t ev = (uint16_t)(ta[i] - (uint16_t)(to[i] << 8));
                    r[i] += (int64_t)ev << (8 * p);
                    r[32 + i] += (int64_t)to[i] << (8 * p);
                }
            }
    }
    for (int b = 0; b < NB; b++) {
        const int64_t *r = res + 64 * b;
        int64_t *o = orow + m0 + 64 * b;
        int64_t rem = mlen - 64 * b;
        if (rem >= 64) {
            for (int i = 0; i < 32; i++) {
                o[2 * i] = r[i];
                o[2 * i + 1] = r[32 + i];
            }
        } else {
            for (int64_t j = 0; j < rem; j++)
                o[j] = (j & 1) ? r[32 + (j >> 1)] : r[j >> 1];
        }
    }
}

#define DSE_DEF512(NP_, NB_)                                                                                        \
    DSE_T_512 static void dse_lut512_np##NP_(const uint8_t *AT, int64_t lda, const uint8_t *Wp,                      \
                                             const uint8_t *planes, int64_t M, int64_t K, int64_t N, int64_t *out,   \
                                             int nt)                                                                 \
    {                                                                                                               \
        const int64_t nmb = (M + 64 * NB_ - 1) / (64 * NB_);                                                        \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                                                \
        for (int64_t t = 0; t < nmb * N; t++) {                                                                     \
            const int64_t m0 = (t / N) * 64 * NB_, n = t % N;                                                       \
            const int64_t mlen = (M - m0 < 64 * NB_) ? (M - m0) : 64 * NB_;                                         \
            dse_lut512_row(AT, lda, Wp + n * K, planes, K, m0, mlen, out + n * M, NP_, NB_);                        \
        }                                                                                                           \
    }

/* blocks per group chosen so that 4*NP table registers + 2*NP*NB accumulators fit in 32 zmm */
DSE_DEF512(1, 4)
DSE_DEF512(2, 4)
DSE_DEF512(3, 2)
DSE_DEF512(4, 1)

/* ------------------------------------------------------------------ row tables ("rows" path) */
/* out[n, m] = sum_k (D[S[n, k]][I[k, m]] + off[S[n, k]])   (int64, exact)
 *
 * I uint8 [K, M] (index classes < R, row stride ldi), S uint8 [N, K] (selector patterns), D uint16 [256 sel][R]
 * (the table minus its per-selector offset off, so 0 <= D < 2^16, with R index columns: the 256 index patterns, or
 * one column per class of index patterns whose table columns are equal, the caller mapping I's patterns to their
 * classes; R a multiple of 16, padding columns never indexed), off int32 [256]. With S = weight patterns and
 * I = activation patterns this is the LUT GEMM; the caller may swap the roles (S = activations, I = weights, D the
 * transposed table) when that makes the index dimension longer. Tables with few distinct columns (Mitch-w: 80
 * activation classes of 256 unsigned patterns, its operands being truncated) build R rows instead of 256.
 *
 * For a tile of 32 selector rows n and a chunk of up to KC k-steps (8 at AVX2, 4 in portable code), the kernel
 * builds one row table per k-step,
 * tab_k[u][j] = D[S[n0 + j, k]][u] (R rows of 32 uint16, <= 16 KiB; 8x8 transposes of the 32 selected columns),
 * and then, for every position m, adds the row tab_k[I[k, m]] to 32 sums: per row two 32-byte loads and 16-bit adds
 * at AVX2 (dse_rows_accum_avx2: no widening; the loop is bound by loads), int32 adds in portable code, instead of
 * one lookup per product; tables with entries < 2^15 add two k-steps' rows before taking the high bytes
 * (dse_rows_accum_avx2_pair). Building costs R x 32 entries per (tile, k-step, m-block), so the caller picks the
 * orientation and the block length to keep M (index positions) >> 256 / (cost ratio); a block builds only the rows
 * up to the 16-row block of its largest index at that k-step (small post-Relu activations read the first rows).
 * Each selector tile is transposed once per call (32 contiguous selector bytes per k-step for the builds).
 * A tile with at most 16 valid selector rows (N = 16, the last tile of N = 48, 144, ...) builds and adds only the
 * first 16 columns of its tables at AVX2 (dse_rows_impl.half). At the AVX-512 level, calls with N > 32 and entries
 * >= 256 run tiles of 64 selector rows (dse_rows_accum512_kc: 8 k-steps per chunk, rows of 128 bytes), and entries
 * < 32 tiles of 64 byte rows (dse_rows_accum512_tiny_kc); their last tile runs the 32-row kernel (or its half) when it
 * holds <= 32 valid rows. At the AVX2 level, calls with N > 32 on tables of <= 128 rows run 64-selector tiles too
 * (dse_rows_accum_avx2_kc and dse_rows_accum_avx2_tiny_kc with W = 64: four ymm per 16-bit row and sum, two per byte
 * row): about half of a 32-selector pass's time on ResNet-18's convs went to the per-position index loads and
 * addresses, which then serve 64 selectors.
 * Results go straight to their place in the caller's layout (dse_rows_out: [N, M], [M, N] or a conv's [B, C, P]), so
 * no transposing copy follows.
 * Overflow: the AVX2 16-bit sums are exact over windows of 256 k-steps (low and high bytes of the entries summed
 * apart), the portable int32 sums over 32768; window sums add up in int32 over <= 32768 k-steps
 * (< 2^15 * 2^16 = 2^31), which are added into the int64 output. */
#define DSE_RT_NT 32
#define DSE_RT_KC 4 /* k-steps per chunk of the portable adds */
#define DSE_RT_OB 64 /* positions per block of the output transposition */
/* positions per block: its 16-bit accumulators (128 B per position) fill Zen 2's 512 KiB L2; the AVX-512 64-selector
 * tiles' (256 B per position) fill Zen 5's 1 MiB L2 (blocks of 2048 positions ran no faster there) */
#define DSE_RT_MB 4096

static inline void dse_rows_build(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel, uint16_t *tab)
{
    for (int jb = 0; jb < DSE_RT_NT; jb += 8) {
        const uint16_t *s0 = D + R * sel[jb + 0], *s1 = D + R * sel[jb + 1];
        const uint16_t *s2 = D + R * sel[jb + 2], *s3 = D + R * sel[jb + 3];
        const uint16_t *s4 = D + R * sel[jb + 4], *s5 = D + R * sel[jb + 5];
        const uint16_t *s6 = D + R * sel[jb + 6], *s7 = D + R * sel[jb + 7];
        for (int64_t ub = 0; ub < nr; ub += 8) {
            const __m128i r0 = _mm_loadu_si128((const __m128i *)(s0 + ub)), r1 = _mm_loadu_si128((const __m128i *)(s1 + ub));
            const __m128i r2 = _mm_loadu_si128((const __m128i *)(s2 + ub)), r3 = _mm_loadu_si128((const __m128i *)(s3 + ub));
            const __m128i r4 = _mm_loadu_si128((const __m128i *)(s4 + ub)), r5 = _mm_loadu_si128((const __m128i *)(s5 + ub));
            const __m128i r6 = _mm_loadu_si128((const __m128i *)(s6 + ub)), r7 = _mm_loadu_si128((const __m128i *)(s7 + ub));
            const __m128i t0 = _mm_unpacklo_epi16(r0, r1), t1 = _mm_unpackhi_epi16(r0, r1);
            const __m128i t2 = _mm_unpacklo_epi16(r2, r3), t3 = _mm_unpackhi_epi16(r2, r3);
            const __m128i t4 = _mm_unpacklo_epi16(r4, r5), t5 = _mm_unpackhi_epi16(r4, r5);
            const __m128i t6 = _mm_unpacklo_epi16(r6, r7), t7 = _mm_unpackhi_epi16(r6, r7);
            const __m128i q0 = _mm_unpacklo_epi32(t0, t2), q1 = _mm_unpackhi_epi32(t0, t2);
            const __m128i q2 = _mm_unpacklo_epi32(t1, t3), q3 = _mm_unpackhi_epi32(t1, t3);
            const __m128i q4 = _mm_unpacklo_epi32(t4, t6), q5 = _mm_unpackhi_epi32(t4, t6);
            const __m128i q6 = _mm_unpacklo_epi32(t5, t7), q7 = _mm_unpackhi_epi32(t5, t7);
            uint16_t *d = tab + ub * DSE_RT_NT + jb;
            _mm_storeu_si128((__m128i *)(d + 0 * DSE_RT_NT), _mm_unpacklo_epi64(q0, q4));
            _mm_storeu_si128((__m128i *)(d + 1 * DSE_RT_NT), _mm_unpackhi_epi64(q0, q4));
            _mm_storeu_si128((__m128i *)(d + 2 * DSE_RT_NT), _mm_unpacklo_epi64(q1, q5));
            _mm_storeu_si128((__m128i *)(d + 3 * DSE_RT_NT), _mm_unpackhi_epi64(q1, q5));
            _mm_storeu_si128((__m128i *)(d + 4 * DSE_RT_NT), _mm_unpacklo_epi64(q2, q6));
            _mm_storeu_si128((__m128i *)(d + 5 * DSE_RT_NT), _mm_unpackhi_epi64(q2, q6));
            _mm_storeu_si128((__m128i *)(d + 6 * DSE_RT_NT), _mm_unpacklo_epi64(q3, q7));
            _mm_storeu_si128((__m128i *)(d + 7 * DSE_RT_NT), _mm_unpackhi_epi64(q3, q7));
        }
    }
}

/* The same table with 256-bit vectors: two 8x8 transposes side by side (lane 0: columns u..u+7, lane 1: u+8..u+15)
 * for each half of 16 selectors, lanes recombined so that every store writes 16 entries of one row. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_build_avx2_s(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel, uint16_t *tab, const int NT)
{
    const uint16_t *rp[16];
    for (int i = 0; i < 16; i++)
        rp[i] = D + R * sel[i];
    for (int64_t ub = 0; ub < nr; ub += 16) {
        __m256i h[2][8];
        for (int half = 0; half < 2; half++) {
            __m256i r[8], t[8], q[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_si256((const __m256i *)(rp[8 * half + i] + ub));
            for (int i = 0; i < 4; i++) {
                t[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
            }
            q[0] = _mm256_unpacklo_epi32(t[0], t[2]), q[1] = _mm256_unpackhi_epi32(t[0], t[2]);
            q[2] = _mm256_unpacklo_epi32(t[1], t[3]), q[3] = _mm256_unpackhi_epi32(t[1], t[3]);
            q[4] = _mm256_unpacklo_epi32(t[4], t[6]), q[5] = _mm256_unpackhi_epi32(t[4], t[6]);
            q[6] = _mm256_unpacklo_epi32(t[5], t[7]), q[7] = _mm256_unpackhi_epi32(t[5], t[7]);
            /* h[half][i]: lane 0 = column ub + i, lane 1 = column ub + 8 + i, 8 selectors each */
            h[half][0] = _mm256_unpacklo_epi64(q[0], q[4]), h[half][1] = _mm256_unpackhi_epi64(q[0], q[4]);
            h[half][2] = _mm256_unpacklo_epi64(q[1], q[5]), h[half][3] = _mm256_unpackhi_epi64(q[1], q[5]);
            h[half][4] = _mm256_unpacklo_epi64(q[2], q[6]), h[half][5] = _mm256_unpackhi_epi64(q[2], q[6]);
            h[half][6] = _mm256_unpacklo_epi64(q[3], q[7]), h[half][7] = _mm256_unpackhi_epi64(q[3], q[7]);
        }
        for (int i = 0; i < 8; i++) {
            _mm256_storeu_si256((__m256i *)(tab + (ub + i) * NT), _mm256_permute2x128_si256(h[0][i], h[1][i], 0x20));
            _mm256_storeu_si256((__m256i *)(tab + (ub + 8 + i) * NT),
                                _mm256_permute2x128_si256(h[0][i], h[1][i], 0x31));
        }
    }
}

DSE_T_AVX2 static void dse_rows_build_avx2(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                           uint16_t *tab)
{
    dse_rows_build_avx2_s(D, R, nr, sel, tab, DSE_RT_NT);
}

/* Both halves of a 32-selector tile. */
DSE_T_AVX2 static void dse_rows_build32_avx2(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                             uint16_t *tab)
{
    dse_rows_build_avx2(D, R, nr, sel, tab);
    dse_rows_build_avx2(D, R, nr, sel + 16, tab + 16);
}

/* Builds the first nr rows (a multiple of 16, <= R) of a tile's table from D (rows of R entries). */
typedef void (*dse_rows_build_fn)(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel, uint16_t *tab);

/* acc (+)= sum_{kk < kc} tab_kk[ip[kk][m]] for m < mb (tab_kk = tab + kk * ts); first: start from 0. The accumulator
 * layout is the level's: int32 [mb][NT] sums (portable), or uint16 [mb][2 NT] word sums (AVX2, see
 * dse_rows_accum_avx2). */
typedef void (*dse_rows_accum_fn)(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc, int64_t mb,
                                  int first, void *acc);
/* sums (set if first, else add) the window's int32 [mb][NT] sums from the accumulators (NULL: acc holds them). */
typedef void (*dse_rows_finish_fn)(const void *acc, int64_t mb, int first, int32_t *sums);

static void dse_rows_accum_scalar(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc, int64_t mb,
                                  int first, void *accv)
{
    int32_t *acc = (int32_t *)accv;
    for (int64_t m = 0; m < mb; m++) {
        int32_t c[DSE_RT_NT];
        int32_t *a = acc + m * DSE_RT_NT;
        for (int j = 0; j < DSE_RT_NT; j++)
            c[j] = first ? 0 : a[j];
        for (int kk = 0; kk < kc; kk++) {
            const uint16_t *r = tab + kk * ts + DSE_RT_NT * (int64_t)ip[kk][m];
            for (int j = 0; j < DSE_RT_NT; j++)
                c[j] += r[j];
        }
        for (int j = 0; j < DSE_RT_NT; j++)
            a[j] = c[j];
    }
}

/* AVX2 adds in 16-bit lanes, 16 products per add, no widening: an entry d = lo + 256 hi (lo, hi bytes) is added
 * whole into a word sum A (mod 2^16) and its high byte into H (vpsrlw), so over a window of <= 256 k-steps
 * H = sum hi <= 255 * 256 and sum lo = (A - 256 H) mod 2^16 (sum lo <= 255 * 256 < 2^16): both exact, and the window's
 * sum is sum lo + 256 H. Accumulators per position: A for the 32 selectors (2 ymm), then H (2 ymm), uint16 [2 NT].
 * One position per iteration with its accumulators in 4 ymm, the table and index bases in registers, and FIRST
 * (start from 0) and KC compile-time constants: this loop has no spills (an earlier version with 8 positions per
 * iteration and the indices of 8 positions in one 8-byte load spilled; it ran 6-19 % slower). */
#define DSE_RT_W16 256 /* k-steps per 16-bit window */
/* k-steps per chunk of the AVX2 16-bit adds, and the uint16 per k-step's table in their scratch: 256 rows of NT, plus
 * 64 bytes so that the chunk's tables are not 16 KiB apart (with 256-row tables at 16 KiB strides every row u of the
 * chunk's tables fell in one L1 set: a synthetic add loop on them with spread indices ran ~1.4x slower). The row of
 * k-step kk sits at the constant offset kk * DSE_RT_SLOT from the chunk's first, and its index at q0 + kk * L (one
 * base register for the tables, and q0, q4, L, 3L for 8 index rows), so 8 k-steps per pass do not spill and the
 * accumulators are loaded and stored once per 8 k-steps instead of 4. */
#define DSE_RT_KC8 8
/* The index of k-step kk (a constant after unrolling) of a chunk of up to 8 at position q0 = ip[0] + m, q4 = q0 + 4 L
 * (L the index rows' stride, L3 = 3 L): q0[kk L] for kk < 4, q4[(kk - 4) L] after; every unrolled add loop of the
 * rows kernel (AVX2 and AVX-512) reads its indices so (two bases and L, 3 L: no spills). */
#define DSE_RT_IDX(kk) ((size_t)((kk) < 4 ? q0 : q4)[((kk) & 3) == 3 ? L3 : ((kk) & 3) * L])
#define DSE_RT_SLOT (256 * DSE_RT_NT + 32)
/* 64-selector tiles (the AVX-512 kernels, and the AVX2 adds on tiles of two ymm-pairs, dse_rows_accum_avx2_kc's W = 64) */
#define DSE_RT_NT64 64
#define DSE_RT_SLOT64 (256 * DSE_RT_NT64 + 64) /* uint16 per k-step's table (staggered by 128 bytes) */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_accum_avx2_kc(const uint16_t *tab, const uint8_t *const *ip, int64_t mb, uint16_t *acc, const int KC,
                       const int FIRST, const int NOH, const int PAIR, const int W)
{
    /* W = 64: a tile of 64 selectors (DSE_RT_NT64-wide rows and accumulators, DSE_RT_SLOT64 slots), 4 ymm per row and
     * sum, so that one index load and address serve 64 selectors */
    const int NT = W == 64 ? DSE_RT_NT64 : DSE_RT_NT, NV = W / 16;
    const int64_t SLOT = W == 64 ? DSE_RT_SLOT64 : DSE_RT_SLOT;
    const char *tb = (const char *)tab;
    const int64_t L = KC > 1 ? ip[1] - ip[0] : 0, L3 = 3 * L;
    const uint8_t *p0 = ip[0], *p4 = ip[0] + 4 * L;
    for (int64_t m = 0; m < mb; m++) {
        uint16_t *a = acc + m * 2 * NT;
        const uint8_t *q0 = p0 + m, *q4 = p4 + m;
        __m256i av[4], hv[4];
#pragma GCC unroll 4
        for (int i = 0; i < NV; i++) {
            av[i] = FIRST ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(a + 16 * i));
            hv[i] = FIRST || NOH ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(a + NT + 16 * i));
        }
#define DSE_RT_ROW(kk) ((const uint16_t *)(tb + (kk) * (2 * SLOT) + 2 * NT * DSE_RT_IDX(kk)))
        if (PAIR) { /* entries < 2^15: two rows summed exactly in 16 bits, then one high-byte sum per pair */
#pragma GCC unroll 16
            for (int kk = 0; kk + 1 < KC; kk += 2) {
                const uint16_t *r = DSE_RT_ROW(kk), *q = DSE_RT_ROW(kk + 1);
#pragma GCC unroll 4
                for (int i = 0; i < NV; i++) {
                    const __m256i v = _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(r + 16 * i)),
                                                       _mm256_loadu_si256((const __m256i *)(q + 16 * i)));
                    av[i] = _mm256_add_epi16(av[i], v);
                    hv[i] = _mm256_add_epi16(hv[i], _mm256_srli_epi16(v, 8));
                    if (W == 64) /* keeps the 8 sums in registers: reassociated, their adds spilled */
                        __asm__("" : "+x"(av[i]), "+x"(hv[i]));
                }
            }
        }
        if (!PAIR || KC % 2) { /* (with PAIR: the last step of an odd chunk) */
#pragma GCC unroll 16
            for (int kk = PAIR ? KC - 1 : 0; kk < KC; kk++) {
                const uint16_t *r = DSE_RT_ROW(kk);
#pragma GCC unroll 4
                for (int i = 0; i < NV; i++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(r + 16 * i));
                    av[i] = _mm256_add_epi16(av[i], v);
                    if (!NOH)
                        hv[i] = _mm256_add_epi16(hv[i], _mm256_srli_epi16(v, 8));
                    if (W == 64 && NOH)
                        __asm__("" : "+x"(av[i]));
                    else if (W == 64)
                        __asm__("" : "+x"(av[i]), "+x"(hv[i]));
                }
            }
        }
#undef DSE_RT_ROW
#pragma GCC unroll 4
        for (int i = 0; i < NV; i++) {
            _mm256_storeu_si256((__m256i *)(a + 16 * i), av[i]);
            if (!NOH)
                _mm256_storeu_si256((__m256i *)(a + NT + 16 * i), hv[i]);
        }
    }
}

/* A chunk shorter than DSE_RT_KC8 (the end of K or of a window) runs as one pass of its kc k-steps (pairs, and with
 * PAIR a single last step when kc is odd): with a pass of 4 and single steps after it, the last chunk of a K = 27
 * stem (8 + 8 + 8 + 3) read and wrote the block's accumulators four times. Out of line, one function per
 * (NOH, PAIR, W): with the seven tail instances inlined beside the 8-step ones, the 8-step loops of the imported
 * LUT's ResNet-18 convs (K >= 576) compiled differently and ran 4-10 % slower. */
#define DSE_RT_TAIL(NOH, PAIR, W)                                                                                      \
    DSE_T_AVX2 static __attribute__((noinline)) void dse_rows_tail_avx2_##NOH##_##PAIR##_##W(                          \
        const uint16_t *tab, const uint8_t *const *ip, int kc, int64_t mb, int first, uint16_t *acc)                   \
    {                                                                                                                  \
        switch (kc) {                                                                                                  \
            DSE_RT_TAIL_CASE(7, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(6, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(5, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(4, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(3, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(2, NOH, PAIR, W)                                                                          \
            DSE_RT_TAIL_CASE(1, NOH, PAIR, W)                                                                          \
        }                                                                                                              \
    }
#define DSE_RT_TAIL_CASE(n, NOH, PAIR, W)                                                                              \
    case n:                                                                                                            \
        if (first)                                                                                                     \
            dse_rows_accum_avx2_kc(tab, ip, mb, acc, n, 1, NOH, PAIR, W);                                              \
        else                                                                                                           \
            dse_rows_accum_avx2_kc(tab, ip, mb, acc, n, 0, NOH, PAIR, W);                                              \
        return;
/* X(NOH, PAIR, W) for every tile kind with an out-of-line tail: the tails' definitions and their dispatch */
#define DSE_RT_TAIL_KINDS(X) X(0, 0, 16) X(0, 0, 32) X(0, 0, 64) X(0, 1, 16) X(0, 1, 32) X(0, 1, 64) X(1, 0, 16) \
    X(1, 0, 32) X(1, 0, 64)
DSE_RT_TAIL_KINDS(DSE_RT_TAIL)
#undef DSE_RT_TAIL_CASE
#undef DSE_RT_TAIL

/* tab: the chunk's tables at DSE_RT_SLOT strides (ts); kc <= DSE_RT_KC8 k-steps. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_accum_avx2_any(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc, int64_t mb, int first,
                        uint16_t *acc, const int NOH, const int PAIR, const int W)
{
    (void)ts; /* DSE_RT_SLOT, or DSE_RT_SLOT64 for 64-selector tiles */
    if (kc == DSE_RT_KC8) {
        if (first)
            dse_rows_accum_avx2_kc(tab, ip, mb, acc, DSE_RT_KC8, 1, NOH, PAIR, W);
        else
            dse_rows_accum_avx2_kc(tab, ip, mb, acc, DSE_RT_KC8, 0, NOH, PAIR, W);
        return;
    }
#define DSE_RT_TAIL_CALL(n, p, w)                                                                                      \
    if (NOH == n && PAIR == p && W == w)                                                                               \
        dse_rows_tail_avx2_##n##_##p##_##w(tab, ip, kc, mb, first, acc);
    DSE_RT_TAIL_KINDS(DSE_RT_TAIL_CALL)
#undef DSE_RT_TAIL_CALL
}

DSE_T_AVX2 static void dse_rows_accum_avx2(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                           int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 0, 32);
}

/* The same on a half tile (16 selector rows: the first 16 entries of each table row, one ymm per row and sum). */
DSE_T_AVX2 static void dse_rows_accum16_avx2(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                             int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 0, 16);
}

/* Tables whose entries are all < 2^15: the rows of two k-steps are added first (< 2^16, exact in 16 bits) and the
 * high byte of that pair sum goes into H, so H grows by <= 255 per pair and the low bytes sum to <= 255 per pair:
 * over a window of 256 k-steps both stay below 2^16 (128 pairs), and the window's sum is again
 * ((A - 256 H) mod 2^16) + 256 H (dse_rows_finish_avx2), with one shift and one add fewer per pair of k-steps. */
DSE_T_AVX2 static void dse_rows_accum_avx2_pair(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 1, 32);
}

DSE_T_AVX2 static void dse_rows_accum16_avx2_pair(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                  int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 1, 16);
}

/* The same on a tile of 64 selectors (tables of DSE_RT_NT64-wide rows at DSE_RT_SLOT64 strides, accumulators uint16
 * [mb][2 DSE_RT_NT64]): per position and k-step one index load and address for 64 selectors instead of 32. */
DSE_T_AVX2 static void dse_rows_accum64_avx2_pair(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                  int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 1, 64);
}

DSE_T_AVX2 static void dse_rows_accum64_avx2(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                             int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0, 0, 64);
}

/* Tables whose entries are all < 256: a window of 256 k-steps sums to <= 255 * 256 < 2^16, so the word sums A are
 * exact by themselves and H is neither computed nor stored (half the adds, no shifts, half the accumulator
 * traffic); dse_rows_finish_avx2_byte reads A alone. */
DSE_T_AVX2 static void dse_rows_accum_avx2_byte(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 1, 0, 32);
}

DSE_T_AVX2 static void dse_rows_accum16_avx2_byte(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                  int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 1, 0, 16);
}

DSE_T_AVX2 static void dse_rows_accum64_avx2_byte(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                  int64_t mb, int first, void *acc)
{
    dse_rows_accum_avx2_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 1, 0, 64);
}

/* sums = ((A - 256 H) mod 2^16) + 256 H per selector (see dse_rows_accum_avx2), for the first W selectors. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void dse_rows_finish_avx2_w(const void *accv, int64_t mb,
                                                                                   int first, int32_t *sums, const int W)
{
    const uint16_t *acc = (const uint16_t *)accv;
    const int NT = W == 64 ? DSE_RT_NT64 : DSE_RT_NT; /* the accumulators' and sums' selector stride */
    for (int64_t m = 0; m < mb; m++) {
        const uint16_t *a = acc + m * 2 * NT;
        int32_t *s = sums + m * NT;
        for (int i = 0; i < W; i += 16) {
            const __m256i A = _mm256_loadu_si256((const __m256i *)(a + i));
            const __m256i H = _mm256_loadu_si256((const __m256i *)(a + NT + i));
            const __m256i L = _mm256_sub_epi16(A, _mm256_slli_epi16(H, 8));
            const __m256i l0 = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(L));
            const __m256i l1 = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(L, 1));
            const __m256i h0 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(H)), 8);
            const __m256i h1 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(H, 1)), 8);
            __m256i s0 = _mm256_add_epi32(l0, h0), s1 = _mm256_add_epi32(l1, h1);
            if (!first) {
                s0 = _mm256_add_epi32(s0, _mm256_loadu_si256((const __m256i *)(s + i)));
                s1 = _mm256_add_epi32(s1, _mm256_loadu_si256((const __m256i *)(s + i + 8)));
            }
            _mm256_storeu_si256((__m256i *)(s + i), s0);
            _mm256_storeu_si256((__m256i *)(s + i + 8), s1);
        }
    }
}

DSE_T_AVX2 static void dse_rows_finish_avx2(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_w(accv, mb, first, sums, 32);
}

DSE_T_AVX2 static void dse_rows_finish16_avx2(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_w(accv, mb, first, sums, 16);
}

DSE_T_AVX2 static void dse_rows_finish64_avx2(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_w(accv, mb, first, sums, 64);
}

/* sums = A per selector (the window sums of a table with entries < 256, see dse_rows_accum_avx2_byte), for the
 * first W selectors. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_finish_avx2_byte_w(const void *accv, int64_t mb, int first, int32_t *sums, const int W)
{
    const uint16_t *acc = (const uint16_t *)accv;
    const int NT = W == 64 ? DSE_RT_NT64 : DSE_RT_NT;
    for (int64_t m = 0; m < mb; m++) {
        const uint16_t *a = acc + m * 2 * NT;
        int32_t *s = sums + m * NT;
        for (int i = 0; i < W; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + i)));
            if (!first)
                v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(s + i)));
            _mm256_storeu_si256((__m256i *)(s + i), v);
        }
    }
}

DSE_T_AVX2 static void dse_rows_finish_avx2_byte(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_byte_w(accv, mb, first, sums, 32);
}

DSE_T_AVX2 static void dse_rows_finish16_avx2_byte(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_byte_w(accv, mb, first, sums, 16);
}

DSE_T_AVX2 static void dse_rows_finish64_avx2_byte(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_byte_w(accv, mb, first, sums, 64);
}

/* Tables whose entries are all < 32 (e.g. the error table of a product with its low bits cleared): rows of 32 bytes
 * and 8-bit sums, one 32-byte load and add per position and k-step for the 32 selectors (half the byte tables'
 * loads and adds). Over a window of W8 = 255 / max entry k-steps (a multiple of DSE_RT_KC8, see dse_rows_gemm) the
 * byte sums stay <= 255; dse_rows_finish_avx2_tiny widens each window's byte sums into the int32 sums. The table is
 * built as 16-bit rows and packed to bytes in place (row u at byte u * 32 of its k-step's slot). */
/* Packs a tile's 16-bit rows (W = NT entries of < 256 each, rows NT uint16 apart) into byte rows NT bytes apart, in
 * place: bytes [NT u, NT u + NT) lie within the 16-bit rows < u, already read (row 0 is read whole before it is
 * overwritten). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void dse_rows_pack_tiny_avx2(uint16_t *tab, int64_t nr,
                                                                                    const int NT)
{
    uint8_t *b = (uint8_t *)tab;
    for (int64_t u = 0; u < nr; u++) {
        __m256i v[4];
        for (int i = 0; i < NT / 16; i++)
            v[i] = _mm256_loadu_si256((const __m256i *)(tab + u * NT + 16 * i));
        for (int i = 0; i < NT / 32; i++)
            _mm256_storeu_si256((__m256i *)(b + u * NT + 32 * i),
                                _mm256_permute4x64_epi64(_mm256_packus_epi16(v[2 * i], v[2 * i + 1]), 0xD8));
    }
}

DSE_T_AVX2 static void dse_rows_build32_avx2_tiny(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                                  uint16_t *tab)
{
    dse_rows_build32_avx2(D, R, nr, sel, tab);
    dse_rows_pack_tiny_avx2(tab, nr, DSE_RT_NT);
}

/* The byte rows of a 64-selector tile (64 bytes per row, in DSE_RT_SLOT64 slots). */
DSE_T_AVX2 static void dse_rows_build64_avx2_tiny(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                                  uint16_t *tab)
{
    for (int q = 0; q < DSE_RT_NT64; q += 16)
        dse_rows_build_avx2_s(D, R, nr, sel + q, tab + q, DSE_RT_NT64);
    dse_rows_pack_tiny_avx2(tab, nr, DSE_RT_NT64);
}

/* As dse_rows_accum_avx2_kc: k-step kk's byte rows at the constant offset kk * 2 * DSE_RT_SLOT bytes, its indices at
 * q0 + kk * L (kk < 4) or q4 + (kk - 4) * L; W = 64: 64-selector tiles (rows and sums of 64 bytes, two ymm, in
 * DSE_RT_SLOT64 slots), one index load and address per 64 selectors. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_accum_avx2_tiny_kc(const uint8_t *tab, const uint8_t *const *ip, int64_t mb, uint8_t *acc, const int KC,
                            const int FIRST, const int W)
{
    const int64_t SLOT = W == 64 ? DSE_RT_SLOT64 : DSE_RT_SLOT;
    const int64_t L = KC > 1 ? ip[1] - ip[0] : 0, L3 = 3 * L;
    const uint8_t *p0 = ip[0], *p4 = ip[0] + 4 * L;
    for (int64_t m = 0; m < mb; m++) {
        uint8_t *a = acc + m * W;
        const uint8_t *q0 = p0 + m, *q4 = p4 + m;
        __m256i s = FIRST ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)a), t = s;
        if (W == 64)
            t = FIRST ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(a + 32));
#pragma GCC unroll 16
        for (int kk = 0; kk < KC; kk++) {
            const uint8_t *r = tab + kk * (2 * SLOT) + W * DSE_RT_IDX(kk);
            s = _mm256_add_epi8(s, _mm256_loadu_si256((const __m256i *)r));
            if (W == 64)
                t = _mm256_add_epi8(t, _mm256_loadu_si256((const __m256i *)(r + 32)));
        }
        _mm256_storeu_si256((__m256i *)a, s);
        if (W == 64)
            _mm256_storeu_si256((__m256i *)(a + 32), t);
    }
}

/* tab: the 16-bit tables' slots at DSE_RT_SLOT (W = 64: DSE_RT_SLOT64) strides (k-step kk's byte rows at byte offset
 * 2 * kk * slot); acc: uint8 [mb][W]; chunks of DSE_RT_KC8 k-steps (a shorter one: 4, then single steps). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_accum_avx2_tiny_w(const uint16_t *tab, const uint8_t *const *ip, int kc, int64_t mb, int first, void *accv,
                           const int W)
{
    const int64_t slot = W == 64 ? DSE_RT_SLOT64 : DSE_RT_SLOT;
    const uint8_t *tb = (const uint8_t *)tab;
    uint8_t *acc = (uint8_t *)accv;
    if (kc == DSE_RT_KC8) {
        if (first)
            dse_rows_accum_avx2_tiny_kc(tb, ip, mb, acc, DSE_RT_KC8, 1, W);
        else
            dse_rows_accum_avx2_tiny_kc(tb, ip, mb, acc, DSE_RT_KC8, 0, W);
        return;
    }
    int kk = 0;
    if (kc >= 4) {
        if (first)
            dse_rows_accum_avx2_tiny_kc(tb, ip, mb, acc, 4, 1, W);
        else
            dse_rows_accum_avx2_tiny_kc(tb, ip, mb, acc, 4, 0, W);
        kk = 4;
        first = 0;
    }
    for (; kk < kc; kk++, first = 0) {
        if (first)
            dse_rows_accum_avx2_tiny_kc(tb + 2 * kk * slot, ip + kk, mb, acc, 1, 1, W);
        else
            dse_rows_accum_avx2_tiny_kc(tb + 2 * kk * slot, ip + kk, mb, acc, 1, 0, W);
    }
}

DSE_T_AVX2 static void dse_rows_accum_avx2_tiny(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                int64_t mb, int first, void *accv)
{
    (void)ts;
    dse_rows_accum_avx2_tiny_w(tab, ip, kc, mb, first, accv, 32);
}

DSE_T_AVX2 static void dse_rows_accum64_avx2_tiny(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                                  int64_t mb, int first, void *accv)
{
    (void)ts;
    dse_rows_accum_avx2_tiny_w(tab, ip, kc, mb, first, accv, 64);
}

DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_finish_avx2_tiny_w(const void *accv, int64_t mb, int first, int32_t *sums, const int W)
{
    const uint8_t *acc = (const uint8_t *)accv;
    for (int64_t m = 0; m < mb; m++) {
        const uint8_t *a = acc + m * W;
        int32_t *s = sums + m * W;
        for (int i = 0; i < W; i += 8) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(a + i)));
            if (!first)
                v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(s + i)));
            _mm256_storeu_si256((__m256i *)(s + i), v);
        }
    }
}

DSE_T_AVX2 static void dse_rows_finish_avx2_tiny(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_tiny_w(accv, mb, first, sums, DSE_RT_NT);
}

DSE_T_AVX2 static void dse_rows_finish64_avx2_tiny(const void *accv, int64_t mb, int first, int32_t *sums)
{
    dse_rows_finish_avx2_tiny_w(accv, mb, first, sums, DSE_RT_NT64);
}

/* AVX-512 tiles of 64 selectors (DSE_RT_NT64): the same 16-bit sums (A, then the high-byte sums H; pair sums for
 * entries < 2^15) as dse_rows_accum_avx2_kc, with each table row (64 uint16, 128 bytes) in two zmm and 8 k-steps per
 * chunk (DSE_RT_KC64): per position and k-step one index load and one address for 64 selectors, and the 4 zmm of
 * accumulators loaded and stored once per 8 k-steps (the AVX2 tile's loop pays both per 32 selectors and 4 k-steps;
 * an AVX-512 loop on the 32-selector tile, one zmm per row, ran no faster than it). Accumulators: uint16 [mb][2 * 64]. */
#define DSE_RT_KC64 8
#define DSE_RT_KCMAX 8
DSE_T_AVX2 static void dse_rows_build64_avx2(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                             uint16_t *tab)
{
    for (int q = 0; q < DSE_RT_NT64; q += 16)
        dse_rows_build_avx2_s(D, R, nr, sel + q, tab + q, DSE_RT_NT64);
}

DSE_T_512 static inline __attribute__((always_inline)) void
dse_rows_accum512_kc(const uint16_t *tab, const uint8_t *const *ip, int64_t mb, uint16_t *acc, const int KC,
                     const int FIRST, const int PAIR)
{
    /* k-step kk's table at the constant offset kk * DSE_RT_SLOT64 and its indices at p0 + kk * L (kk < 4) or
     * p4 + (kk - 4) * L: one base register for the tables and four for the indices, so the loop does not spill */
    const char *tb = (const char *)tab;
    const int64_t L = KC > 1 ? ip[1] - ip[0] : 0, L3 = 3 * L;
    const uint8_t *p0 = ip[0], *p4 = ip[0] + 4 * L;
    for (int64_t m = 0; m < mb; m++) {
        uint16_t *a = acc + m * 2 * DSE_RT_NT64;
        const uint8_t *q0 = p0 + m, *q4 = p4 + m;
        __m512i a0, a1, h0, h1;
        a0 = a1 = h0 = h1 = _mm512_setzero_si512();
        if (!FIRST) {
            a0 = _mm512_load_si512((const void *)(a + 0));
            a1 = _mm512_load_si512((const void *)(a + 32));
            h0 = _mm512_load_si512((const void *)(a + 64));
            h1 = _mm512_load_si512((const void *)(a + 96));
        }
#define DSE_RT_ROW64(kk) ((const void *)(tb + (kk) * (2 * DSE_RT_SLOT64) + 2 * DSE_RT_NT64 * DSE_RT_IDX(kk)))
        if (PAIR) {
#pragma GCC unroll 16
            for (int kk = 0; kk < KC; kk += 2) {
                const char *r = (const char *)DSE_RT_ROW64(kk), *q = (const char *)DSE_RT_ROW64(kk + 1);
                const __m512i v0 = _mm512_add_epi16(_mm512_load_si512(r), _mm512_load_si512(q));
                const __m512i v1 = _mm512_add_epi16(_mm512_load_si512(r + 64), _mm512_load_si512(q + 64));
                a0 = _mm512_add_epi16(a0, v0);
                h0 = _mm512_add_epi16(h0, _mm512_srli_epi16(v0, 8));
                a1 = _mm512_add_epi16(a1, v1);
                h1 = _mm512_add_epi16(h1, _mm512_srli_epi16(v1, 8));
            }
        } else {
#pragma GCC unroll 16
            for (int kk = 0; kk < KC; kk++) {
                const char *r = (const char *)DSE_RT_ROW64(kk);
                const __m512i v0 = _mm512_load_si512(r);
                const __m512i v1 = _mm512_load_si512(r + 64);
                a0 = _mm512_add_epi16(a0, v0);
                h0 = _mm512_add_epi16(h0, _mm512_srli_epi16(v0, 8));
                a1 = _mm512_add_epi16(a1, v1);
                h1 = _mm512_add_epi16(h1, _mm512_srli_epi16(v1, 8));
            }
        }
#undef DSE_RT_ROW64
        _mm512_store_si512((void *)(a + 0), a0);
        _mm512_store_si512((void *)(a + 32), a1);
        _mm512_store_si512((void *)(a + 64), h0);
        _mm512_store_si512((void *)(a + 96), h1);
    }
}

DSE_T_512 static inline __attribute__((always_inline)) void
dse_rows_accum512_any(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc, int64_t mb, int first,
                      uint16_t *acc, const int PAIR)
{
    (void)ts; /* DSE_RT_SLOT64 */
    if (kc == DSE_RT_KC64) {
        if (first)
            dse_rows_accum512_kc(tab, ip, mb, acc, DSE_RT_KC64, 1, PAIR);
        else
            dse_rows_accum512_kc(tab, ip, mb, acc, DSE_RT_KC64, 0, PAIR);
        return;
    }
    int kk = 0; /* the chunk at the end of K: 4 k-steps, then single ones */
    if (kc >= 4) {
        if (first)
            dse_rows_accum512_kc(tab, ip, mb, acc, 4, 1, PAIR);
        else
            dse_rows_accum512_kc(tab, ip, mb, acc, 4, 0, PAIR);
        kk = 4;
        first = 0;
    }
    for (; kk < kc; kk++, first = 0) {
        if (first)
            dse_rows_accum512_kc(tab + kk * DSE_RT_SLOT64, ip + kk, mb, acc, 1, 1, 0);
        else
            dse_rows_accum512_kc(tab + kk * DSE_RT_SLOT64, ip + kk, mb, acc, 1, 0, 0);
    }
}

DSE_T_512 static void dse_rows_accum512(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc, int64_t mb,
                                        int first, void *acc)
{
    dse_rows_accum512_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 0);
}

DSE_T_512 static void dse_rows_accum512_pair(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                             int64_t mb, int first, void *acc)
{
    dse_rows_accum512_any(tab, ts, ip, kc, mb, first, (uint16_t *)acc, 1);
}

/* sums = ((A - 256 H) mod 2^16) + 256 H for the 64 selectors (see dse_rows_finish_avx2_w). */
DSE_T_512 static void dse_rows_finish512(const void *accv, int64_t mb, int first, int32_t *sums)
{
    const uint16_t *acc = (const uint16_t *)accv;
    for (int64_t m = 0; m < mb; m++) {
        const uint16_t *a = acc + m * 2 * DSE_RT_NT64;
        int32_t *s = sums + m * DSE_RT_NT64;
        for (int i = 0; i < DSE_RT_NT64; i += 32) {
            const __m512i A = _mm512_load_si512((const void *)(a + i));
            const __m512i H = _mm512_load_si512((const void *)(a + DSE_RT_NT64 + i));
            const __m512i L = _mm512_sub_epi16(A, _mm512_slli_epi16(H, 8));
            const __m512i l0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(L));
            const __m512i l1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(L, 1));
            const __m512i h0 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(H)), 8);
            const __m512i h1 = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(H, 1)), 8);
            __m512i s0 = _mm512_add_epi32(l0, h0), s1 = _mm512_add_epi32(l1, h1);
            if (!first) {
                s0 = _mm512_add_epi32(s0, _mm512_loadu_si512((const void *)(s + i)));
                s1 = _mm512_add_epi32(s1, _mm512_loadu_si512((const void *)(s + i + 16)));
            }
            _mm512_storeu_si512((void *)(s + i), s0);
            _mm512_storeu_si512((void *)(s + i + 16), s1);
        }
    }
}

/* Tables whose entries are all < 32 at the AVX-512 level (the split path's error tables of tables close to a product,
 * e.g. a product with its low bits cleared): tiles of 64 selectors with rows of 64 bytes (one zmm per position and
 * k-step, half the bytes of the 16-bit rows), 8 k-steps per chunk as dse_rows_accum512_kc. A chunk's 8 byte rows sum
 * to <= 8 * 31 < 256 in a register, which is then widened into 16-bit sums (vpunpck{l,h}bw with zero: per 128-bit lane
 * l, the low word vector holds selectors 16 l + 0..7 and the high one 16 l + 8..15), so a window of 16-bit sums spans
 * 65535 / max entry k-steps (dse_rows_gemm) and is widened into the int32 sums rarely. Accumulators: uint16 [mb][2 * 64]
 * (the two word vectors). The table is built as 16-bit rows and packed to bytes in place (row u at byte 64 u). */
DSE_T_512 static void dse_rows_build64_512_tiny(const uint16_t *D, int64_t R, int64_t nr, const uint8_t *sel,
                                                uint16_t *tab)
{
    dse_rows_build64_avx2(D, R, nr, sel, tab);
    uint8_t *b = (uint8_t *)tab;
    for (int64_t u = 0; u < nr; u++) { /* bytes [64u, 64u + 64) lie within the 16-bit rows <= u / 2, already read */
        const __m512i lo = _mm512_load_si512((const void *)(tab + u * DSE_RT_NT64));
        const __m512i hi = _mm512_load_si512((const void *)(tab + u * DSE_RT_NT64 + 32));
        _mm256_store_si256((__m256i *)(b + u * DSE_RT_NT64), _mm512_cvtepi16_epi8(lo));
        _mm256_store_si256((__m256i *)(b + u * DSE_RT_NT64 + 32), _mm512_cvtepi16_epi8(hi));
    }
}

DSE_T_512 static inline __attribute__((always_inline)) void
dse_rows_accum512_tiny_kc(const uint16_t *tab, const uint8_t *const *ip, int64_t mb, uint16_t *acc, const int KC,
                          const int FIRST)
{
    const char *tb = (const char *)tab; /* k-step kk's byte rows at byte offset kk * 2 * DSE_RT_SLOT64 */
    const int64_t L = KC > 1 ? ip[1] - ip[0] : 0, L3 = 3 * L;
    const uint8_t *p0 = ip[0], *p4 = ip[0] + 4 * L;
    const __m512i z = _mm512_setzero_si512();
    for (int64_t m = 0; m < mb; m++) {
        uint16_t *a = acc + m * 2 * DSE_RT_NT64;
        const uint8_t *q0 = p0 + m, *q4 = p4 + m;
#define DSE_RT_ROWB(kk) ((const void *)(tb + (kk) * (2 * DSE_RT_SLOT64) + DSE_RT_NT64 * DSE_RT_IDX(kk)))
        __m512i s = _mm512_load_si512(DSE_RT_ROWB(0));
#pragma GCC unroll 16
        for (int kk = 1; kk < KC; kk++)
            s = _mm512_add_epi8(s, _mm512_load_si512(DSE_RT_ROWB(kk)));
#undef DSE_RT_ROWB
        __m512i lo = _mm512_unpacklo_epi8(s, z), hi = _mm512_unpackhi_epi8(s, z);
        if (!FIRST) {
            lo = _mm512_add_epi16(lo, _mm512_load_si512((const void *)(a + 0)));
            hi = _mm512_add_epi16(hi, _mm512_load_si512((const void *)(a + 32)));
        }
        _mm512_store_si512((void *)(a + 0), lo);
        _mm512_store_si512((void *)(a + 32), hi);
    }
}

DSE_T_512 static void dse_rows_accum512_tiny(const uint16_t *tab, int64_t ts, const uint8_t *const *ip, int kc,
                                             int64_t mb, int first, void *accv)
{
    (void)ts; /* DSE_RT_SLOT64 */
    uint16_t *acc = (uint16_t *)accv;
    if (kc == DSE_RT_KC64) {
        if (first)
            dse_rows_accum512_tiny_kc(tab, ip, mb, acc, DSE_RT_KC64, 1);
        else
            dse_rows_accum512_tiny_kc(tab, ip, mb, acc, DSE_RT_KC64, 0);
        return;
    }
    int kk = 0; /* the chunk at the end of K: 4 k-steps, then single ones */
    if (kc >= 4) {
        if (first)
            dse_rows_accum512_tiny_kc(tab, ip, mb, acc, 4, 1);
        else
            dse_rows_accum512_tiny_kc(tab, ip, mb, acc, 4, 0);
        kk = 4;
        first = 0;
    }
    for (; kk < kc; kk++, first = 0) {
        if (first)
            dse_rows_accum512_tiny_kc(tab + kk * DSE_RT_SLOT64, ip + kk, mb, acc, 1, 1);
        else
            dse_rows_accum512_tiny_kc(tab + kk * DSE_RT_SLOT64, ip + kk, mb, acc, 1, 0);
    }
}

/* sums (set if first, else add) = the window's 16-bit sums, in selector order (see dse_rows_accum512_tiny_kc). */
DSE_T_512 static void dse_rows_finish512_tiny(const void *accv, int64_t mb, int first, int32_t *sums)
{
    const uint16_t *acc = (const uint16_t *)accv;
    for (int64_t m = 0; m < mb; m++) {
        const uint16_t *a = acc + m * 2 * DSE_RT_NT64;
        int32_t *s = sums + m * DSE_RT_NT64;
        const __m512i lo = _mm512_load_si512((const void *)(a + 0)), hi = _mm512_load_si512((const void *)(a + 32));
        /* per 128-bit lane l: selectors 16 l + 0..7 from lo, 16 l + 8..15 from hi */
        const __m512i w0 = _mm512_shuffle_i64x2(lo, hi, 0x44), w1 = _mm512_shuffle_i64x2(lo, hi, 0xEE);
        /* w0 = lo lanes 0, 1, hi lanes 0, 1; w1 = lo lanes 2, 3, hi lanes 2, 3: selectors in order after the
         * permutation of 128-bit lanes 0, 2, 1, 3 */
        const __m512i v0 = _mm512_shuffle_i64x2(w0, w0, 0xD8), v1 = _mm512_shuffle_i64x2(w1, w1, 0xD8);
        __m512i s0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v0));
        __m512i s1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v0, 1));
        __m512i s2 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v1));
        __m512i s3 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v1, 1));
        if (!first) {
            s0 = _mm512_add_epi32(s0, _mm512_loadu_si512((const void *)(s + 0)));
            s1 = _mm512_add_epi32(s1, _mm512_loadu_si512((const void *)(s + 16)));
            s2 = _mm512_add_epi32(s2, _mm512_loadu_si512((const void *)(s + 32)));
            s3 = _mm512_add_epi32(s3, _mm512_loadu_si512((const void *)(s + 48)));
        }
        _mm512_storeu_si512((void *)(s + 0), s0);
        _mm512_storeu_si512((void *)(s + 16), s1);
        _mm512_storeu_si512((void *)(s + 32), s2);
        _mm512_storeu_si512((void *)(s + 48), s3);
    }
}

/* A level's row-table kernel: table build, adds, accumulator window (k-steps, a multiple of kc) and size; nt: the
 * selector stride of its tables, accumulators and sums; cap: the selector rows it handles (nt, or 16 for a half
 * kernel); kc: k-steps per chunk; half: the kernel for tiles of at most half->cap valid selector rows (fewer loads
 * and adds per position), NULL where a tile always runs whole; ah16: its accumulators are 16-bit A / H in
 * dse_rows_accum_avx2's layout, which the transposing gather (dse_rows_gather_t_avx2) may read without finish. */
typedef struct dse_rows_impl_s {
    dse_rows_build_fn build;
    dse_rows_accum_fn accum;
    dse_rows_finish_fn finish;
    int64_t window;
    size_t acc_bytes; /* per index position */
    const struct dse_rows_impl_s *half;
    int nt, cap, kc;
    int64_t slot; /* uint16 per k-step's table in the chunk's scratch (0: R * nt) */
    int ah16;
} dse_rows_impl;

/* numpy's own float32 ufunc inner loops (the legacy loop signature), taken from the ufuncs' loop tables by
 * cy/kernels.pyx (glue.h's passes and the SiLU output step call them where their bits are numpy's). */
typedef void (*dse_np_loop_fn)(char **args, const intptr_t *dims, const intptr_t *steps, void *data);
typedef struct {
    dse_np_loop_fn fn;
    void *data;
} dse_np_loop;

/* Values per chunk of the SiLU / Sigmoid passes (cy/kernels.pyx float_sigmoid, the integer GEMM's SiLU output step):
 * their loops run on one chunk after the other while it is in cache. */
#define DSE_SIGMOID_CHUNK 2048

/* exp(t) for float32 t as numpy's float32 exp loop computes it at its AVX2 and AVX-512 levels (simd_exp_FLOAT: the
 * Cody-Waite reduction by ln 2 split in two, the degree 5 / degree 2 rational function in fused multiply-adds, the
 * quotient's exponent raised by the quadrant's), for the lanes a sigmoid needs bit for bit: every t but NaN (the
 * caller's lanes), with results below 2^-124 (quadrant <= -125, where numpy's scaling makes subnormals) returned as 0,
 * which 1 + exp(t) cannot tell apart (below half an ulp of 1). t >= 88.72283935546875: +inf; t <= -103.97...: 0. */
DSE_T_AVX2FMA static inline __m256 dse_exp_sigmoid_avx2(__m256 t)
{
    const __m256 zero = _mm256_setzero_ps(), magic = _mm256_set1_ps(0x1.8p23f);
    const __m256 big = _mm256_cmp_ps(t, _mm256_set1_ps(88.72283935546875f), _CMP_GE_OQ);
    const __m256 small = _mm256_cmp_ps(t, _mm256_set1_ps(-103.97208404541015625f), _CMP_LE_OQ);
    const __m256 x = _mm256_andnot_ps(_mm256_or_ps(big, small), t);
    __m256 q = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)); /* log2(e) */
    q = _mm256_sub_ps(_mm256_add_ps(q, magic), magic); /* rint */
    __m256 r = _mm256_fmadd_ps(q, _mm256_set1_ps(-6.93145752e-1f), x);
    r = _mm256_fmadd_ps(q, _mm256_set1_ps(-1.42860677e-6f), r);
    r = _mm256_fmadd_ps(q, zero, r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(5.082762527590693718096e-04f), r,
                               _mm256_set1_ps(6.757896990527504603057e-03f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.114512081637298353406e-02f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.473615434895520810817e-01f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(7.257664613233124478488e-01f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.999999999980870924916e-01f));
    __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(2.159509375685829852307e-02f), r,
                               _mm256_set1_ps(-2.742335390411667452936e-01f));
    d = _mm256_fmadd_ps(d, r, _mm256_set1_ps(1.0f));
    const __m256 v = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(_mm256_div_ps(p, d)),
                                                          _mm256_slli_epi32(_mm256_cvtps_epi32(q), 23)));
    const __m256 tiny = _mm256_or_ps(small, _mm256_cmp_ps(q, _mm256_set1_ps(-125.0f), _CMP_LE_OQ));
    return _mm256_blendv_ps(_mm256_andnot_ps(tiny, v), _mm256_set1_ps(__builtin_inff()), big);
}

/* 8 values of dse_sigmoid_chunk's result from x: 1 / (1 + exp(-x)), times x (times_x 1: x * s, 2: s * x) */
DSE_T_AVX2FMA static inline __m256 dse_sigmoid8_avx2(__m256 x, int times_x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = dse_exp_sigmoid_avx2(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    return times_x == 1 ? _mm256_mul_ps(x, s) : times_x == 2 ? _mm256_mul_ps(s, x) : s;
}

/* dse_sigmoid_chunk's o from x in registers (dse_exp_sigmoid_avx2), 8 values at a time; returns 0, or 1 where x
 * holds a NaN (its bits are the loops' to give: the caller runs them on the chunk). */
DSE_T_AVX2FMA static int dse_sigmoid_chunk_avx2(const float *x, float *o, int64_t m, int times_x)
{
    __m256 nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm256_storeu_ps(o + i, dse_sigmoid8_avx2(v, times_x));
    }
    if (i < m) {
        float t[8] __attribute__((aligned(32))) = {0};
        memcpy(t, x + i, (size_t)(m - i) * sizeof(float));
        const __m256 v = _mm256_load_ps(t);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm256_store_ps(t, dse_sigmoid8_avx2(v, times_x));
        memcpy(o + i, t, (size_t)(m - i) * sizeof(float));
    }
    return _mm256_movemask_ps(nan) != 0;
}

/* o = clip(x * alpha + beta, 0, 1) (times_x: then x * o) over m float32 values as numpy's float32 loops of multiply,
 * add and clip compute them (cy/kernels.pyx float_hardsigmoid): IEEE products and sums, and clip's comparisons
 * (t < 0 ? 0 : t, which keeps -0, then t > 1 ? 1 : t: vmaxps and vminps with the bound first), 8 at a time; returns
 * 0, or 1 where x holds a NaN (the caller runs the loops on the chunk). */
DSE_T_AVX2 static int dse_hardsigmoid_chunk_avx2(const float *x, float *o, int64_t m, float alpha, float beta,
                                                 int times_x)
{
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta), zero = _mm256_setzero_ps(),
                 one = _mm256_set1_ps(1.0f);
    __m256 nan = zero;
    for (int64_t i = 0; i < m; i += 8) {
        float t[8] __attribute__((aligned(32))) = {0};
        const int tail = m - i < 8;
        if (tail)
            memcpy(t, x + i, (size_t)(m - i) * sizeof(float));
        const __m256 v = tail ? _mm256_load_ps(t) : _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        __m256 h = _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_add_ps(_mm256_mul_ps(v, va), vb)));
        if (times_x)
            h = _mm256_mul_ps(v, h);
        if (tail) {
            _mm256_store_ps(t, h);
            memcpy(o + i, t, (size_t)(m - i) * sizeof(float));
        } else
            _mm256_storeu_ps(o + i, h);
    }
    return _mm256_movemask_ps(nan) != 0;
}

/* Whether float_hardsigmoid computes its values itself (dse_hardsigmoid_chunk_avx2) at the avx2 and avx512 levels:
 * set by cy/kernels.pyx where they matched this numpy's loops on its check. */
static int dse_hardsigmoid_own = 0;

/* Whether dse_sigmoid_chunk computes its values itself (dse_sigmoid_chunk_avx2) at the avx2 and avx512 levels: set
 * by cy/kernels.pyx where the CPU has AVX2 and FMA and the registers' values matched this numpy's loops on its check
 * (dse_exp_sigmoid_avx2 follows one numpy's exp; another numpy keeps its loops). */
static int dse_sigmoid_own = 0;

/* o = 1 / (1 + exp(-x)) over m float32 values (times_x 1 / 2: then o = x * o / o * x, SiLU's product in its node
 * order) by numpy's own float32 loops lp = {negative, exp, add, true_divide, multiply}, called with the operands
 * numpy's ufuncs pass them in dse.model.nn.reference_sigmoid and the emulator's in-place product (exp, add and
 * divide in place on o, the scalar 1 first at stride 0, the product into o): the same bits as those numpy
 * expressions; at level avx2 and above, where dse_sigmoid_own, the same values in registers in one pass
 * (dse_sigmoid_chunk_avx2; numpy's exp, add, divide and multiply are IEEE operations but for exp, which it follows),
 * the loops only for a chunk with a NaN. o must not overlap x. */
static inline void dse_sigmoid_chunk(int level, const dse_np_loop *lp, const float *x, float *o, int64_t m,
                                     int times_x)
{
    if (level >= DSE_ISA_AVX2 && dse_sigmoid_own && !dse_sigmoid_chunk_avx2(x, o, m, times_x))
        return;
    static const float one = 1.0f;
    intptr_t dims[1] = {(intptr_t)m}, st2[2] = {4, 4}, st3[3] = {4, 4, 4}, sc3[3] = {0, 4, 4};
    char *a2[2] = {(char *)x, (char *)o};
    lp[0].fn(a2, dims, st2, lp[0].data); /* t = negative(x) */
    a2[0] = (char *)o;
    lp[1].fn(a2, dims, st2, lp[1].data); /* exp(t, out=t) */
    char *a3[3] = {(char *)&one, (char *)o, (char *)o};
    lp[2].fn(a3, dims, sc3, lp[2].data); /* add(1, t, out=t) */
    lp[3].fn(a3, dims, sc3, lp[3].data); /* true_divide(1, t, out=t) */
    if (times_x) {
        a3[0] = times_x == 1 ? (char *)x : (char *)o;
        a3[1] = times_x == 1 ? (char *)o : (char *)x;
        lp[4].fn(a3, dims, st3, lp[4].data); /* multiply(x, s, out=s) / (s, x) */
    }
}

/* The FxP8 output stage of a layer (see dse_dequantize): y = act(float32((acc * sa) * sw[c]) + bias[c]); with
 * quant, the output is not y but the next MAC layer's input pattern of y, clip(rint(y / qs), qlo, qhi) as a byte
 * (dse_quantize1: the same bits as quantizing the float32 output in a pass of its own). Outputs are float32, or
 * uint8 with quant (dse_scaled_out gives the address of element i).
 * With add (a runtime Add fused into the pass): y = act(float32((acc * sa) * sw[c]) + bias[c] + add[i]) (two float32
 * adds: the conv's output, then the Add's sum, the operands commuted), for the output element at float32 offset i
 * from base; the float32 y is the output and, with quant, its pattern also goes to qout[i]. */
typedef struct {
    double sa;
    const float *sw, *bias;
    int act;
    float lo, hi;
    int quant, qlo, qhi;
    float qs;
    const float *add, *base;
    uint8_t *qout;
    const float *qf; /* NULL, or the fast quantized output's constants (dse_scaling_qf; set where dse_qfast_level) */
    int silu; /* 1 / 2: the output is the SiLU y * sigmoid(y) / sigmoid(y) * y of the scaled y (no act, no add), by
                 numpy's own float32 loops (dse_sigmoid_chunk): the integer GEMM's flush (also with quant) and the
                 depthwise kernel (float32 outputs only, dse_silu_runs) compute it */
    const dse_np_loop *loops; /* with silu: numpy's loops of negative, exp, add, true_divide, multiply */
    int stream; /* the float32 output (without quant, or with add) is written with non-temporal stores where 64-byte
                   aligned, at the avx512 level: an output larger than the last-level cache, read back from memory
                   anyway; set by the integer GEMM's calls only, whose tasks end with an sfence (dse_ig_stream_fence) */
    int drop; /* with add and quant: the Add's float32 sum is not written, only its patterns (at qout; the output
                 still addresses the operand and the patterns): its readers all take the patterns */
} dse_scaling;

/* A float32 SiLU output step's second half (sc->silu, no quant): the nrun runs of S scaled values y at o + r ld
 * (just written, in cache) replaced by their SiLU, gathered chunk by chunk into a buffer (short runs share one set of
 * loop calls), dse_sigmoid_chunk into another, scattered back: the bits of numpy's loops on the whole tensor. */
static void dse_silu_runs(const dse_scaling *sc, float *o, int64_t nrun, int64_t S, int64_t ld)
{
    float bx[DSE_SIGMOID_CHUNK] __attribute__((aligned(64))), bs[DSE_SIGMOID_CHUNK] __attribute__((aligned(64)));
    const int64_t n = nrun * S;
    for (int64_t t0 = 0; t0 < n; t0 += DSE_SIGMOID_CHUNK) {
        const int64_t m = n - t0 < DSE_SIGMOID_CHUNK ? n - t0 : DSE_SIGMOID_CHUNK;
        for (int64_t t = t0, l; t < t0 + m; t += l) { /* the chunk's pieces of runs */
            l = S - t % S < t0 + m - t ? S - t % S : t0 + m - t;
            memcpy(bx + (t - t0), o + (t / S) * ld + t % S, (size_t)l * sizeof(float));
        }
        dse_sigmoid_chunk(DSE_ISA_AVX512, sc->loops, bx, bs, m, sc->silu); /* its caller: the avx512 quads path */
        for (int64_t t = t0, l; t < t0 + m; t += l) {
            l = S - t % S < t0 + m - t ? S - t % S : t0 + m - t;
            memcpy(o + (t / S) * ld + t % S, bs + (t - t0), (size_t)l * sizeof(float));
        }
    }
}

/* The bytes of one output element: a pattern with quant and no add, else float32. */
static inline int64_t dse_scaled_esz(const dse_scaling *sc)
{
    return sc->quant && !sc->add ? 1 : 4;
}

static inline void *dse_scaled_out(const dse_scaling *sc, void *base, int64_t i)
{
    return (char *)base + i * dse_scaled_esz(sc);
}

/* The instance of a scaling pass's output step: its activation, quant and add are constants of each instance. */
static inline int dse_scaled_variant(const dse_scaling *sc)
{
    return 4 * sc->act + 2 * (sc->quant != 0) + (sc->add != NULL);
}

/* How a scaling pass reads its sums: int32 (exact doubles), int64 of any size, or int64 known to lie within
 * +-2^51 (the caller's bound: e.g. K times the table's largest entry), converted with two instructions per 4. */
#define DSE_SUM_I32 0
#define DSE_SUM_I64 1
#define DSE_SUM_SMALL 2

static void dse_scale_sums(int level, const void *a, int kind, int64_t S, const dse_scaling *sc, int64_t c, void *o);
static void dse_scale_cols(int level, const void *a, int kind, int64_t nrun, int64_t n, int64_t lda,
                           const dse_scaling *sc, int64_t c, void *o, int64_t ld);

/* Where the kernel writes: GEMM element (n, m) (n < N output channels, m < M positions, M = images x P) goes to
 * base[(m / P) * ldb + n * P + m % P]: row-major [N, M] with P = M, [M, N] with P = 1 and ldb = N, or a conv output
 * [B, channels, P] (base at the group's first channel, ldb = channels * P). sel_is_m: the selector rows S are the m
 * positions (and the index positions the n channels), i.e. the caller swapped the roles. */
typedef struct {
    int64_t *base;
    int64_t P, ldb;
    int sel_is_m;
    int add; /* add the GEMM to what base holds (else overwrite it) */
    /* with sc: the scaled outputs (float32, or uint8 patterns; dse_scaling) of the final sums go to outs, in base's
     * layout, and base is unused; each task's sums are gathered in its scratch fin (int32 when the call's sums are
     * proven to fit, kind DSE_SUM_I32, else int64 of kind fin_kind) and scaled per run of positions of one channel */
    const dse_scaling *sc;
    void *outs;
    int level, fin_kind;
} dse_rows_out;

/* Stores (first; with o->add: adds) init + acc[i * ns], or (not first) adds acc[i * ns], for index positions
 * i0 + i, i < len, of selector row js. */
static void dse_rows_store(const dse_rows_out *o, int64_t js, int64_t i0, int64_t len, const int32_t *acc, int64_t ns,
                           int64_t init, int first)
{
    if (o->sel_is_m) { /* m = js fixed, n = i0 + i: stride P */
        int64_t *d = o->base + (js / o->P) * o->ldb + js % o->P + i0 * o->P;
        for (int64_t i = 0; i < len; i++, d += o->P)
            *d = (first ? init + (o->add ? *d : 0) : *d) + acc[i * ns];
        return;
    }
    /* n = js fixed, m = i0 + i: runs of at most P positions per image, each a branch-free loop */
    int64_t *d = o->base + (i0 / o->P) * o->ldb + js * o->P + i0 % o->P;
    if (o->P == 1) { /* [M, N] (an activation matmul's GEMM): one position per run, stride ldb */
        for (int64_t i = 0; i < len; i++, d += o->ldb)
            *d = (first ? init + (o->add ? *d : 0) : *d) + acc[i * ns];
        return;
    }
    for (int64_t i = 0, run = o->P - i0 % o->P; i < len; i += run, run = o->P) {
        const int64_t n = (len - i < run) ? len - i : run;
        const int32_t *a = acc + i * ns;
        if (first && !o->add)
            for (int64_t r = 0; r < n; r++)
                d[r] = init + a[r * ns];
        else
            for (int64_t r = 0; r < n; r++)
                d[r] += (first ? init : 0) + a[r * ns];
        d += run - o->P + o->ldb; /* the next image's first position */
    }
}

/* Whether a scaled call's final sums are gathered by position (fin[i * ns + j], the layout of the kernel's
 * accumulators) rather than by selector row: weights selecting into a channels-last output (P = 1: one position's
 * channels are contiguous there, and dse_scale_cols scales them in one run), except a SiLU output step. */
static inline int dse_rows_fin_by_pos(const dse_rows_out *o)
{
    return !o->sel_is_m && o->P == 1 && !o->sc->silu;
}

/* With o->sc: gathers (first) init + acc[i * ns], or (not first) adds acc[i * ns], for index positions i0 + i,
 * i < n, of a task's len positions, selector row j, at fin[j * len + i0 + i] (weights selecting: one channel's run of
 * positions) or fin[(i0 + i) * ns + j] (sel_is_m: one channel's run is the tile's selector rows; dse_rows_fin_by_pos:
 * one position's channels); acc points at position i0's sums, ns: the kernel's selector stride. */
static void dse_rows_gather(const dse_rows_out *o, void *fin, int64_t j, int64_t len, int64_t i0, int64_t n,
                            const int32_t *acc, int64_t ns, int64_t init, int first)
{
    const int by_pos = o->sel_is_m || dse_rows_fin_by_pos(o);
    const int64_t sj = by_pos ? 1 : len, si = by_pos ? ns : 1;
    if (o->fin_kind == DSE_SUM_I32) {
        int32_t *f = (int32_t *)fin + j * sj + i0 * si;
        for (int64_t i = 0; i < n; i++)
            f[i * si] = (int32_t)((first ? init : f[i * si]) + acc[i * ns]);
        return;
    }
    int64_t *f = (int64_t *)fin + j * sj + i0 * si;
    for (int64_t i = 0; i < n; i++)
        f[i * si] = (first ? init : f[i * si]) + acc[i * ns];
}

/* 8 selectors' window sums ((A - 256 H) mod 2^16) + 256 H of one position from its 16-bit accumulators a (A, then H
 * at a + nt, nt the tile's selector stride: dse_rows_accum_avx2's layout), as dse_rows_finish_avx2. */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256i dse_rows_sums8_avx2(const uint16_t *a, int64_t nt)
{
    const __m128i A = _mm_loadu_si128((const __m128i *)a), H = _mm_loadu_si128((const __m128i *)(a + nt));
    const __m128i L = _mm_sub_epi16(A, _mm_slli_epi16(H, 8));
    return _mm256_add_epi32(_mm256_cvtepu16_epi32(L), _mm256_slli_epi32(_mm256_cvtepu16_epi32(H), 8));
}

/* dse_rows_gather's int32 case for all selector rows j < nv at once when the weights select (fin[j * len + i0 + i],
 * one channel's run of positions per row): the sums of 8 positions of 8 selectors transposed 8 x 8 per block, a
 * scalar loop for the last n % 8 positions. The sums are acc's int32 [n][ns], or (acc16 not NULL: a call whose one
 * window is its whole reduction) the window sums from the 16-bit accumulators acc16 [n][2 ns] themselves,
 * without dse_rows_finish_avx2's int32 copy. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_rows_gather_t_avx2_ns(void *fin, int64_t nv, int64_t len, int64_t i0, int64_t n, const int32_t *acc,
                          const uint16_t *acc16, const int64_t ns, const int64_t *init, int first)
{
    int32_t *f = (int32_t *)fin + i0;
    const int64_t n8 = n - n % 8;
    int32_t tail[8];
    for (int64_t j0 = 0; j0 < nv; j0 += 8) {
        const int jn = nv - j0 < 8 ? (int)(nv - j0) : 8;
        __m256i iv[8];
        for (int r = 0; r < 8; r++)
            iv[r] = _mm256_set1_epi32(first && r < jn ? (int32_t)init[j0 + r] : 0);
        for (int64_t i = 0; i < n8; i += 8) {
            const int32_t *a = acc + i * ns + j0;
            __m256i r[8], t[8], u[8], c[8];
            for (int q = 0; q < 8; q++) /* position i + q, selectors j0.. */
                r[q] = acc16 ? dse_rows_sums8_avx2(acc16 + (i + q) * 2 * ns + j0, ns)
                             : _mm256_loadu_si256((const __m256i *)(a + q * ns));
            for (int q = 0; q < 8; q += 2) {
                t[q] = _mm256_unpacklo_epi32(r[q], r[q + 1]);
                t[q + 1] = _mm256_unpackhi_epi32(r[q], r[q + 1]);
            }
            for (int q = 0; q < 8; q += 4) {
                u[q] = _mm256_unpacklo_epi64(t[q], t[q + 2]);     /* selectors 0 | 4 */
                u[q + 1] = _mm256_unpackhi_epi64(t[q], t[q + 2]); /* 1 | 5 */
                u[q + 2] = _mm256_unpacklo_epi64(t[q + 1], t[q + 3]); /* 2 | 6 */
                u[q + 3] = _mm256_unpackhi_epi64(t[q + 1], t[q + 3]); /* 3 | 7 */
            }
            for (int q = 0; q < 4; q++) {
                c[q] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x20);
                c[q + 4] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x31);
            }
            for (int q = 0; q < jn; q++) {
                int32_t *d = f + (j0 + q) * len + i;
                const __m256i base = first ? iv[q] : _mm256_loadu_si256((const __m256i *)d);
                _mm256_storeu_si256((__m256i *)d, _mm256_add_epi32(base, c[q]));
            }
        }
        for (int64_t i = n8; i < n; i++) {
            const int32_t *a = acc + i * ns + j0;
            if (acc16) {
                _mm256_storeu_si256((__m256i *)tail, dse_rows_sums8_avx2(acc16 + i * 2 * ns + j0, ns));
                a = tail;
            }
            for (int q = 0; q < jn; q++) {
                int32_t *d = f + (j0 + q) * len + i;
                *d = (int32_t)((first ? init[j0 + q] : *d) + a[q]);
            }
        }
    }
}

/* dse_rows_gather's int32 case by position (dse_rows_fin_by_pos: fin[(i0 + i) * ns + j]) for all selector rows of
 * the n positions at once, 8 selectors per step: the sums are acc's int32 [n][ns], or (acc16 not NULL) the window
 * sums of the 16-bit accumulators acc16 [n][2 ns]. The rows are written whole (ns, a multiple of 8): the lanes past
 * the tile's valid selectors are never scaled. */
DSE_T_AVX2 static void dse_rows_gather_p_avx2(void *fin, int64_t i0, int64_t n, const int32_t *acc,
                                              const uint16_t *acc16, int64_t ns, const int64_t *init, int first)
{
    int32_t *f = (int32_t *)fin + i0 * ns;
    __m256i iv[DSE_RT_NT64 / 8];
    for (int64_t j0 = 0; j0 < ns; j0 += 8)
        iv[j0 / 8] = _mm256_setr_epi32((int32_t)init[j0], (int32_t)init[j0 + 1], (int32_t)init[j0 + 2],
                                       (int32_t)init[j0 + 3], (int32_t)init[j0 + 4], (int32_t)init[j0 + 5],
                                       (int32_t)init[j0 + 6], (int32_t)init[j0 + 7]);
    for (int64_t i = 0; i < n; i++, f += ns)
        for (int64_t j0 = 0; j0 < ns; j0 += 8) {
            const __m256i r = acc16 ? dse_rows_sums8_avx2(acc16 + i * 2 * ns + j0, ns)
                                    : _mm256_loadu_si256((const __m256i *)(acc + i * ns + j0));
            const __m256i base = first ? iv[j0 / 8] : _mm256_loadu_si256((const __m256i *)(f + j0));
            _mm256_storeu_si256((__m256i *)(f + j0), _mm256_add_epi32(base, r));
        }
}

/* The tiles' selector stride a compile-time constant (32 or 64) in the gather's address arithmetic. */
DSE_T_AVX2 static void dse_rows_gather_t_avx2(void *fin, int64_t nv, int64_t len, int64_t i0, int64_t n,
                                              const int32_t *acc, const uint16_t *acc16, int64_t ns,
                                              const int64_t *init, int first)
{
    if (ns == DSE_RT_NT)
        dse_rows_gather_t_avx2_ns(fin, nv, len, i0, n, acc, acc16, DSE_RT_NT, init, first);
    else if (ns == DSE_RT_NT64)
        dse_rows_gather_t_avx2_ns(fin, nv, len, i0, n, acc, acc16, DSE_RT_NT64, init, first);
    else
        dse_rows_gather_t_avx2_ns(fin, nv, len, i0, n, acc, acc16, ns, init, first);
}

/* Scales a task's final sums fin (dse_rows_gather with selector stride ns; selector rows n0..n0+nv-1, index
 * positions m0..m0+mb-1) into o->outs, one dse_scale_sums run per channel and image. */
static void dse_rows_scale(const dse_rows_out *o, const void *fin, int64_t n0, int64_t nv, int64_t m0, int64_t mb,
                           int64_t ns)
{
    const int64_t esz = o->fin_kind == DSE_SUM_I32 ? 4 : 8;
    if (dse_rows_fin_by_pos(o)) { /* one run per position: its nv channels */
        dse_scale_cols(o->level, fin, o->fin_kind, mb, nv, ns, o->sc, n0,
                       dse_scaled_out(o->sc, o->outs, m0 * o->ldb + n0), o->ldb);
        return;
    }
    const int sel = o->sel_is_m;
    const int64_t c0 = sel ? m0 : n0, nc = sel ? mb : nv, p0 = sel ? n0 : m0, np = sel ? nv : mb;
    const int64_t ld = sel ? ns : mb;
    for (int64_t c = 0; c < nc; c++) {
        const uint8_t *f = (const uint8_t *)fin + c * ld * esz;
        for (int64_t i = 0, m = p0; i < np;) {
            const int64_t s = m % o->P, len = (o->P - s < np - i) ? o->P - s : np - i;
            dse_scale_sums(o->level, f + i * esz, o->fin_kind, len, o->sc, c0 + c,
                           dse_scaled_out(o->sc, o->outs, (m / o->P) * o->ldb + (c0 + c) * o->P + s));
            i += len;
            m += len;
        }
    }
}

/* A selector tile's operand, transposed once per call: ST[k * tw + j] = S[n0 + j, k] (tw = the tile's width: tw
 * contiguous bytes per k-step for the table builds, instead of tw loads at stride K), padding rows repeating the last
 * valid row (their sums are discarded); init[j] = sum_k off[S[n0 + j, k]], the tile's offset sums (computed once, not
 * per index block). */
static void dse_rows_tile_prep(const uint8_t *S, const int32_t *off, int64_t K, int64_t n0, int64_t nv, int64_t tw,
                               uint8_t *ST, int64_t *init)
{
    for (int64_t j = 0; j < tw; j++) {
        const uint8_t *sr = S + (n0 + (j < nv ? j : nv - 1)) * K;
        int64_t s = 0;
        for (int64_t k = 0; k < K; k++) {
            ST[k * tw + j] = sr[k];
            s += off[sr[k]];
        }
        init[j] = s;
    }
}

/* dse_rows_tile_prep for selector rows that are the columns of S [K, ld] (ST's rows are then S's rows: a copy of
 * nv bytes per k-step, the padding repeating the last valid selector). */
static void dse_rows_tile_prep_t(const uint8_t *S, int64_t ld, const int32_t *off, int64_t K, int64_t n0, int64_t nv,
                                 int64_t tw, uint8_t *ST, int64_t *init)
{
    for (int64_t j = 0; j < tw; j++)
        init[j] = 0;
    for (int64_t k = 0; k < K; k++) {
        const uint8_t *sr = S + k * ld + n0;
        uint8_t *d = ST + k * tw;
        for (int64_t j = 0; j < tw; j++) {
            d[j] = sr[j < nv ? j : nv - 1];
            init[j] += off[d[j]];
        }
    }
}

/* One (selector tile, index block) task: selector rows n0..n0+nv-1 (transposed in ST, tw bytes per k-step, with
 * their offset sums init, dse_rows_tile_prep), index positions m0..m0+mb-1, whose largest index at k-step k is
 * imax[k]: the tables are built only up to the block of 16 rows holding it (activations after a Relu are mostly small
 * patterns, so a block of positions often reads only the first rows). */
static void dse_rows_task(const uint8_t *I, int64_t ldi, const uint8_t *ST, int64_t tw, const int64_t *init,
                          const uint8_t *imax, const uint16_t *D, int64_t R, int64_t K, int64_t n0, int64_t nv,
                          int64_t m0, int64_t mb, const dse_rows_out *out, uint16_t *tab, void *acc, int32_t *sums,
                          void *fin, const dse_rows_impl *imt)
{
    const dse_rows_impl *im = imt; /* a tile with few valid rows: the narrowest kernel that holds them */
    while (im->half && nv <= im->half->cap)
        im = im->half;
    const int64_t kf = im->window, ns = im->nt, ts = im->slot ? im->slot : R * ns;
    /* inner windows of kf k-steps (the accumulators' bound), summed in int32 over outer windows of <= 2^15 k-steps
     * (|sum| < 2^15 * 2^16 = 2^31), each flushed once into the int64 output */
    const int64_t kout = (32768 / kf) * kf;
    /* a scaled call on the AVX2 gathers: transposed into channel runs, or by position (dse_rows_fin_by_pos), each
     * block of positions then scaled as soon as its final sums are gathered, while they are in L1 */
    const int t16 = out->sc && out->fin_kind == DSE_SUM_I32 && !out->sel_is_m && out->level >= DSE_ISA_AVX2;
    const int by_pos = t16 && dse_rows_fin_by_pos(out);
    for (int64_t w0 = 0; w0 < K; w0 += kf) {
        const int64_t w1 = (K - w0 < kf) ? K : w0 + kf;
        for (int64_t k0 = w0; k0 < w1; k0 += im->kc) {
            const int kc = (int)((w1 - k0 < im->kc) ? (w1 - k0) : im->kc);
            const uint8_t *ip[DSE_RT_KCMAX];
            for (int kk = 0; kk < kc; kk++) {
                const int64_t nr = ((int64_t)imax[k0 + kk] / 16 + 1) * 16; /* the rows this block reads */
                im->build(D, R, nr < R ? nr : R, ST + (k0 + kk) * tw, tab + kk * ts);
                ip[kk] = I + (k0 + kk) * ldi + m0;
            }
            im->accum(tab, ts, ip, kc, mb, k0 == w0, acc);
        }
        const int32_t *ws = (const int32_t *)acc;
        /* a scaled call whose one window is the whole reduction, on the 16-bit A / H accumulators: the gathers read
         * them themselves (no int32 copy of the sums) */
        const int fused = t16 && w0 == 0 && w1 == K && im->ah16;
        if (im->finish && !fused) {
            im->finish(acc, mb, w0 % kout == 0, sums);
            ws = sums;
        }
        if (!(w1 == K || w1 % kout == 0))
            continue;
        /* the sums [mb][ns] go out per selector row j in blocks of DSE_RT_OB positions, whose sums stay in L1 while
         * the tile's rows read them (one pass per row over all mb positions read a cache line per sum) */
        for (int64_t i0 = 0; i0 < mb; i0 += DSE_RT_OB) {
            const int64_t n = (mb - i0 < DSE_RT_OB) ? mb - i0 : DSE_RT_OB;
            if (by_pos) {
                dse_rows_gather_p_avx2(fin, i0, n, ws + i0 * ns, fused ? (const uint16_t *)acc + i0 * 2 * ns : NULL,
                                       ns, init, w0 < kout);
                if (w1 == K)
                    dse_scale_cols(out->level, (const int32_t *)fin + i0 * ns, DSE_SUM_I32, n, nv, ns, out->sc, n0,
                                   dse_scaled_out(out->sc, out->outs, (m0 + i0) * out->ldb + n0), out->ldb);
                continue;
            }
            if (t16) {
                dse_rows_gather_t_avx2(fin, nv, mb, i0, n, ws + i0 * ns,
                                       fused ? (const uint16_t *)acc + i0 * 2 * ns : NULL, ns, init, w0 < kout);
                continue;
            }
            for (int64_t j = 0; j < nv; j++) {
                if (out->sc)
                    dse_rows_gather(out, fin, j, mb, i0, n, ws + i0 * ns + j, ns, init[j], w0 < kout);
                else
                    dse_rows_store(out, n0 + j, m0 + i0, n, ws + i0 * ns + j, ns, init[j], w0 < kout);
            }
        }
    }
    if (out->sc && !by_pos)
        dse_rows_scale(out, fin, n0, nv, m0, mb, ns);
}

/* A scratch buffer whose start is 64-byte aligned (rows of 32 uint16: one cache line each); free() releases it. */
static void *dse_alloc64(size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, n ? n : 1) == 0 ? p : NULL;
}

/* Called by every thread of a parallel region after allocating its scratch buffers (``ok``: they all succeeded;
 * ``fail``: a flag shared by the team, 0 on entry). Returns 1 only when every thread's allocations succeeded; all
 * threads get the same answer, so all of them reach (or all skip) the worksharing loop that follows. */
static int dse_team_allocated(int *fail, int ok)
{
    if (!ok) {
#pragma omp atomic write
        *fail = 1;
    }
#pragma omp barrier
    int failed;
#pragma omp atomic read
    failed = *fail;
    return !failed;
}

/* The rows kernel's instance for a call on the table D (its largest entry picks the accumulator width) with N
 * selector rows at ``level``, and the kind of the call's final sums (every partial and final sum of a call of depth K:
 * |sum| <= K (max |off| + max D)): picked once per call (dse_rows_gemm) or per batch of GEMMs (dse_rows_batch). The
 * tiny instances' windows depend on D's largest entry, so they live in the plan (which must not be copied: im may
 * point into it). */
typedef struct {
    dse_rows_impl tiny, tiny64, tiny512;
    const dse_rows_impl *im;
    int fin_kind;
} dse_rows_plan;

static void dse_rows_plan_init(dse_rows_plan *pl, int level, const uint16_t *D, int64_t R, const int32_t *off,
                               int64_t K, int64_t N)
{
    enum { NT = DSE_RT_NT, KC = DSE_RT_KC };
    static const dse_rows_impl portable = {dse_rows_build, dse_rows_accum_scalar, NULL, (32768 / KC) * KC,
                                           NT * sizeof(int32_t), NULL, NT, NT, KC};
    static const size_t w16 = 2 * NT * sizeof(uint16_t), w64 = 2 * DSE_RT_NT64 * sizeof(uint16_t);
    static const dse_rows_impl avx2_16 = {dse_rows_build_avx2, dse_rows_accum16_avx2, dse_rows_finish16_avx2,
                                          DSE_RT_W16, w16, NULL, NT, 16, DSE_RT_KC8, DSE_RT_SLOT, 1};
    static const dse_rows_impl avx2 = {dse_rows_build32_avx2, dse_rows_accum_avx2, dse_rows_finish_avx2,
                                       DSE_RT_W16, w16, &avx2_16, NT, NT, DSE_RT_KC8, DSE_RT_SLOT, 1};
    static const dse_rows_impl avx2_byte16 = {dse_rows_build_avx2, dse_rows_accum16_avx2_byte,
                                              dse_rows_finish16_avx2_byte, DSE_RT_W16, w16, NULL, NT, 16, DSE_RT_KC8,
                                              DSE_RT_SLOT};
    static const dse_rows_impl avx2_byte = {dse_rows_build32_avx2, dse_rows_accum_avx2_byte,
                                            dse_rows_finish_avx2_byte, DSE_RT_W16, w16, &avx2_byte16, NT, NT,
                                            DSE_RT_KC8, DSE_RT_SLOT};
    static const dse_rows_impl avx2_pair16 = {dse_rows_build_avx2, dse_rows_accum16_avx2_pair, dse_rows_finish16_avx2,
                                              DSE_RT_W16, w16, NULL, NT, 16, DSE_RT_KC8, DSE_RT_SLOT, 1};
    static const dse_rows_impl avx2_pair = {dse_rows_build32_avx2, dse_rows_accum_avx2_pair, dse_rows_finish_avx2,
                                            DSE_RT_W16, w16, &avx2_pair16, NT, NT, DSE_RT_KC8, DSE_RT_SLOT, 1};
    static const dse_rows_impl avx2_byte64 = {dse_rows_build64_avx2, dse_rows_accum64_avx2_byte,
                                              dse_rows_finish64_avx2_byte, DSE_RT_W16, w64, &avx2_byte, DSE_RT_NT64,
                                              DSE_RT_NT64, DSE_RT_KC8, DSE_RT_SLOT64};
    static const dse_rows_impl avx2_pair64 = {dse_rows_build64_avx2, dse_rows_accum64_avx2_pair,
                                              dse_rows_finish64_avx2, DSE_RT_W16, w64, &avx2_pair, DSE_RT_NT64,
                                              DSE_RT_NT64, DSE_RT_KC8, DSE_RT_SLOT64, 1};
    static const dse_rows_impl avx2_64 = {dse_rows_build64_avx2, dse_rows_accum64_avx2, dse_rows_finish64_avx2,
                                          DSE_RT_W16, w64, &avx2, DSE_RT_NT64, DSE_RT_NT64, DSE_RT_KC8, DSE_RT_SLOT64,
                                          1};
    static const dse_rows_impl avx512 = {dse_rows_build64_avx2, dse_rows_accum512, dse_rows_finish512, DSE_RT_W16,
                                         w64, &avx2, DSE_RT_NT64, DSE_RT_NT64, DSE_RT_KC64, DSE_RT_SLOT64};
    static const dse_rows_impl avx512_pair = {dse_rows_build64_avx2, dse_rows_accum512_pair, dse_rows_finish512,
                                              DSE_RT_W16, w64, &avx2_pair, DSE_RT_NT64, DSE_RT_NT64, DSE_RT_KC64,
                                              DSE_RT_SLOT64};
    uint16_t dmax = 0;
    for (int64_t i = 0; i < 256 * R; i++)
        dmax = D[i] > dmax ? D[i] : dmax;
    /* tiny entries: windows of 255 / dmax k-steps, a multiple of DSE_RT_KC8 (>= 8: dmax < 32) */
    const int64_t w8 = dmax ? (255 / dmax) / DSE_RT_KC8 * DSE_RT_KC8 : 248;
    pl->tiny = (dse_rows_impl){dse_rows_build32_avx2_tiny, dse_rows_accum_avx2_tiny, dse_rows_finish_avx2_tiny,
                               w8, DSE_RT_NT, NULL, NT, NT, DSE_RT_KC8, DSE_RT_SLOT};
    pl->tiny64 = (dse_rows_impl){dse_rows_build64_avx2_tiny, dse_rows_accum64_avx2_tiny, dse_rows_finish64_avx2_tiny,
                                 w8, DSE_RT_NT64, &pl->tiny, DSE_RT_NT64, DSE_RT_NT64, DSE_RT_KC8, DSE_RT_SLOT64};
    /* 64-selector tiles of tiny entries: 16-bit windows of 65535 / dmax k-steps, a multiple of DSE_RT_KC64 */
    const int64_t w16t = (dmax ? (65535 / dmax < 32768 ? 65535 / dmax : 32768) : 32768) / DSE_RT_KC64 * DSE_RT_KC64;
    pl->tiny512 = (dse_rows_impl){dse_rows_build64_512_tiny, dse_rows_accum512_tiny, dse_rows_finish512_tiny,
                                  w16t, w64, &pl->tiny, DSE_RT_NT64, DSE_RT_NT64, DSE_RT_KC64, DSE_RT_SLOT64};
    const int wide = level >= DSE_ISA_AVX512 && N > DSE_RT_NT; /* 64-selector tiles, the last one maybe narrower */
    /* AVX2 adds on 64-selector tiles, for tables of <= 128 rows (classed tables such as mitch_w6's 80, the split path's
     * error tables): a chunk's 8 tables of 128-byte rows then stay within 128 KiB; on 256-row tables (the imported
     * LUT) they ran slower than the 32-selector tiles on ResNet-18 32's convs (benchmarks/RESULTS.md) */
    const int wide2 = level == DSE_ISA_AVX2 && N > DSE_RT_NT && R <= 128;
    pl->im = level < DSE_ISA_AVX2 ? &portable
             : dmax < 32          ? (wide ? &pl->tiny512 : wide2 ? &pl->tiny64 : &pl->tiny)
             : dmax < 256         ? (wide2 ? &avx2_byte64 : &avx2_byte)
             : dmax < 32768       ? (wide ? &avx512_pair : wide2 ? &avx2_pair64 : &avx2_pair)
                                  : (wide ? &avx512 : wide2 ? &avx2_64 : &avx2);
    int64_t offmax = 0;
    for (int s = 0; s < 256; s++)
        offmax = llabs((long long)off[s]) > offmax ? llabs((long long)off[s]) : offmax;
    const double bound = (double)K * (double)(offmax + dmax);
    pl->fin_kind = bound < 2147483648.0 ? DSE_SUM_I32 : bound < 2251799813685248.0 ? DSE_SUM_SMALL : DSE_SUM_I64;
}

/* imax[b * K + k] = the largest index of block b (DSE_RT_MB positions of M) at k-step k, for the nmb blocks. */
static inline void dse_rows_imax_k(const uint8_t *I, int64_t ldi, int64_t M, int64_t K, int64_t k, int64_t nmb,
                                   uint8_t *imax)
{
    for (int64_t b = 0; b < nmb; b++) {
        const uint8_t *ir = I + k * ldi + b * DSE_RT_MB;
        const int64_t len = (M - b * DSE_RT_MB < DSE_RT_MB) ? M - b * DSE_RT_MB : DSE_RT_MB;
        uint8_t mx = 0;
        for (int64_t i = 0; i < len; i++)
            mx = ir[i] > mx ? ir[i] : mx;
        imax[b * K + k] = mx;
    }
}

/* Returns 0, or -1 when a scratch buffer cannot be allocated. out: see dse_rows_out (N = selector rows when
 * !sel_is_m, else index positions); with sc (and add = 0, K >= 1) the scaled outputs go to outs in that layout
 * instead (sc->sw, sc->bias indexed by the channel n). R: the table's index columns (see above). */
static int dse_rows_gemm(int level, const uint8_t *I, int64_t ldi, const uint8_t *S, const uint16_t *D, int64_t R,
                         const int32_t *off, int64_t M, int64_t K, int64_t N, int64_t *out, int64_t P, int64_t ldb,
                         int sel_is_m, int add, const dse_scaling *sc, void *outs, int nt)
{
    dse_rows_plan pl;
    dse_rows_plan_init(&pl, level, D, R, off, K, N);
    const dse_rows_impl *im = pl.im;
    const int fin_kind = pl.fin_kind;
    const int64_t tw = im->nt; /* the tiles' width */
    const int64_t nnt = (N + tw - 1) / tw, nmb = (M + DSE_RT_MB - 1) / DSE_RT_MB;
    const int64_t mbmax = M < DSE_RT_MB ? M : DSE_RT_MB; /* scratch for the longest block (short calls: small) */
    const dse_rows_out o = {out, P, ldb, sel_is_m, add, sc, outs, level, fin_kind};
    const size_t fin_bytes = sc ? (size_t)(mbmax + 1) * tw * (fin_kind == DSE_SUM_I32 ? 4 : 8) : 1;
    uint8_t *ST = (uint8_t *)malloc((size_t)nnt * K * tw + 1);
    int64_t *init = (int64_t *)malloc((size_t)(nnt + 1) * tw * sizeof(int64_t));
    uint8_t *imax = (uint8_t *)malloc((size_t)nmb * K + 1); /* [block][k]: the largest index of each block's k-step */
    int fail = !ST || !init || !imax;
    if (!fail) {
#pragma omp parallel num_threads(nt)
        {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < nnt; t++) {
                const int64_t n0 = t * tw;
                dse_rows_tile_prep(S, off, K, n0, (N - n0 < tw) ? N - n0 : tw, tw, ST + t * K * tw, init + t * tw);
            }
#pragma omp for schedule(static)
            for (int64_t k = 0; k < K; k++)
                dse_rows_imax_k(I, ldi, M, K, k, nmb, imax);
            uint16_t *tab = (uint16_t *)dse_alloc64((size_t)im->kc * (im->slot ? im->slot : R * tw) * sizeof(uint16_t));
            void *acc = dse_alloc64((size_t)(mbmax + 1) * im->acc_bytes);
            int32_t *sums = (int32_t *)malloc((size_t)(mbmax + 1) * tw * sizeof(int32_t));
            void *fin = malloc(fin_bytes);
            if (dse_team_allocated(&fail, tab && acc && sums && fin)) {
#pragma omp for schedule(static)
                for (int64_t t = 0; t < nnt * nmb; t++) {
                    const int64_t ti = t / nmb, n0 = ti * tw, m0 = (t % nmb) * DSE_RT_MB;
                    const int64_t nv = (N - n0 < tw) ? N - n0 : tw;
                    const int64_t mb = (M - m0 < DSE_RT_MB) ? M - m0 : DSE_RT_MB;
                    dse_rows_task(I, ldi, ST + ti * K * tw, tw, init + ti * tw, imax + (t % nmb) * K, D, R, K, n0, nv,
                                  m0, mb, &o, tab, acc, sums, fin, im);
                }
            }
            free(fin);
            free(tab);
            free(acc);
            free(sums);
        }
    }
    free(ST);
    free(init);
    free(imax);
    return fail ? -1 : 0;
}

static void dse_translate(int level, const uint8_t *s, int64_t n, const uint8_t *tab, uint8_t *d);

/* d[k * ldd + m] = s[m * lds + k] for m < M, k < K (bytes): blocks of 8 x 8 through SSE2 unpacks (8-byte loads and
 * stores), the edges byte by byte (a byte-by-byte transpose of a 65 x 65 GEMM operand took 1 ns per byte). */
static void dse_transpose_u8(const uint8_t *s, int64_t lds, int64_t M, int64_t K, uint8_t *d, int64_t ldd)
{
    const int64_t M8 = M & ~(int64_t)7, K8 = K & ~(int64_t)7;
    for (int64_t m = 0; m < M8; m += 8) {
        for (int64_t k = 0; k < K8; k += 8) {
            __m128i r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm_loadl_epi64((const __m128i *)(s + (m + i) * lds + k));
            const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpacklo_epi8(r[2], r[3]);
            const __m128i t2 = _mm_unpacklo_epi8(r[4], r[5]), t3 = _mm_unpacklo_epi8(r[6], r[7]);
            const __m128i u0 = _mm_unpacklo_epi16(t0, t1), u1 = _mm_unpackhi_epi16(t0, t1);
            const __m128i u2 = _mm_unpacklo_epi16(t2, t3), u3 = _mm_unpackhi_epi16(t2, t3);
            const __m128i v[4] = {_mm_unpacklo_epi32(u0, u2), _mm_unpackhi_epi32(u0, u2), _mm_unpacklo_epi32(u1, u3),
                                  _mm_unpackhi_epi32(u1, u3)}; /* columns 2j and 2j + 1 of the block */
            for (int j = 0; j < 4; j++) {
                _mm_storel_epi64((__m128i *)(d + (k + 2 * j) * ldd + m), v[j]);
                _mm_storel_epi64((__m128i *)(d + (k + 2 * j + 1) * ldd + m), _mm_srli_si128(v[j], 8));
            }
        }
        for (int64_t k = K8; k < K; k++)
            for (int64_t i = 0; i < 8; i++)
                d[k * ldd + m + i] = s[(m + i) * lds + k];
    }
    for (int64_t m = M8; m < M; m++)
        for (int64_t k = 0; k < K; k++)
            d[k * ldd + m] = s[m * lds + k];
}

/* d[j * ldd + i] = s[i * lds + j] for i, j < 8: one 8 x 8 tile of 32-bit values (float32 bits or int32, moved
 * unchanged) by AVX2 unpacks, shuffles and lane permutes. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void dse_t8x8_32_avx2(const float *s, int64_t lds, float *d,
                                                                             int64_t ldd)
{
    __m256 t[8], u[8];
    for (int q = 0; q < 8; q++)
        t[q] = _mm256_loadu_ps(s + q * lds);
    for (int q = 0; q < 8; q += 2) {
        u[q] = _mm256_unpacklo_ps(t[q], t[q + 1]);
        u[q + 1] = _mm256_unpackhi_ps(t[q], t[q + 1]);
    }
    for (int q = 0; q < 8; q += 4) {
        t[q] = _mm256_shuffle_ps(u[q], u[q + 2], 0x44);
        t[q + 1] = _mm256_shuffle_ps(u[q], u[q + 2], 0xEE);
        t[q + 2] = _mm256_shuffle_ps(u[q + 1], u[q + 3], 0x44);
        t[q + 3] = _mm256_shuffle_ps(u[q + 1], u[q + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        _mm256_storeu_ps(d + q * ldd, _mm256_permute2f128_ps(t[q], t[q + 4], 0x20));
        _mm256_storeu_ps(d + (q + 4) * ldd, _mm256_permute2f128_ps(t[q], t[q + 4], 0x31));
    }
}

/* The 8 x 8 tiles of dse_transpose_i32 over rows < R8 and columns < C8 (multiples of 8). */
DSE_T_AVX2 static void dse_transpose_i32_tiles_avx2(const int32_t *s, int64_t lds, int64_t R8, int64_t C8, int32_t *d,
                                                    int64_t ldd)
{
    for (int64_t r = 0; r < R8; r += 8)
        for (int64_t c = 0; c < C8; c += 8)
            dse_t8x8_32_avx2((const float *)(s + r * lds + c), lds, (float *)(d + c * ldd + r), ldd);
}

/* d[c * ldd + r] = s[r * lds + c] for r < R, c < C (int32): 8 x 8 tiles at the avx2 level and above, the edges (and
 * every value below avx2) one by one. */
static void dse_transpose_i32(int level, const int32_t *s, int64_t lds, int64_t R, int64_t C, int32_t *d, int64_t ldd)
{
    int64_t R8 = 0, C8 = 0;
    if (level >= DSE_ISA_AVX2) {
        R8 = R & ~(int64_t)7, C8 = C & ~(int64_t)7;
        dse_transpose_i32_tiles_avx2(s, lds, R8, C8, d, ldd);
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = r < R8 ? C8 : 0; c < C; c++)
            d[c * ldd + r] = s[r * lds + c];
}

/* L independent GEMMs out[l][m][n] = sum_k T[a[l][m][k]][b[l][k][n]] on the rows kernel (an activation matmul's
 * heads x images; rows_gemm_batch), the operands in their own layouts (a [L, M, K], b [L, K, N]): with sel_is_m = 0
 * the columns of b select (the tile's selector bytes copied from b's rows, dse_rows_tile_prep_t) and a^T indexes
 * (transposed per GEMM into the thread's scratch, each pattern mapped to its class xcls[pattern]; xcls NULL: the
 * pattern itself), with sel_is_m the rows of a select and b (mapped, or b itself) indexes. Each GEMM is the tasks
 * dse_rows_gemm runs for it (the same kernel instance: the same sums), laid out as [M, N] (P = 1, ldb = N). For
 * GEMMs of a few thousand MACs dse_rows_gemm's per-call work dominated (the table's largest entry over 256 R entries,
 * the offset bound, seven allocations and a parallel region per GEMM, numpy's transposing copies before it): here the
 * plan and the scratch are made once per batch and each thread runs whole GEMMs. The int64 sums go to out64 [L, M,
 * N] (add: added to what it holds); with sc (channel 0: a per-tensor scaling) each GEMM's sums (out64's, or the
 * thread's scratch when out64 is NULL) are then scaled into outs [L, M, N] by dse_scale_sums. Returns 0, or -1 when
 * a scratch buffer cannot be allocated. */
static int dse_rows_batch(int level, const uint8_t *a, const uint8_t *b, const uint8_t *xcls, const uint16_t *D,
                          int64_t R, const int32_t *off, int64_t L, int64_t M, int64_t K, int64_t N, int sel_is_m,
                          int64_t *out64, int add, const dse_scaling *sc, float *outs, int nt)
{
    const int64_t nI = sel_is_m ? N : M, nS = sel_is_m ? M : N; /* the kernel's index positions and selectors */
    dse_rows_plan pl;
    dse_rows_plan_init(&pl, level, D, R, off, K, nS);
    const dse_rows_impl *im = pl.im;
    const int64_t tw = im->nt;
    const int64_t nnt = (nS + tw - 1) / tw, nmb = (nI + DSE_RT_MB - 1) / DSE_RT_MB;
    const int64_t mbmax = nI < DSE_RT_MB ? nI : DSE_RT_MB;
    const int own_i = sel_is_m && xcls == NULL; /* b itself is the index operand */
    /* the sums lie within +-2^51 unless the plan says int64 (dse_rows_plan_init's bound) or they add to others */
    const int kind = add || pl.fin_kind == DSE_SUM_I64 ? DSE_SUM_I64 : DSE_SUM_SMALL;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        uint8_t *Ib = own_i ? NULL : (uint8_t *)malloc((size_t)(K * nI) + 1);
        uint8_t *Tb = !sel_is_m && xcls ? (uint8_t *)malloc((size_t)(M * K)) : NULL; /* a's classes, untransposed */
        uint8_t *ST = (uint8_t *)malloc((size_t)nnt * K * tw + 1);
        int64_t *init = (int64_t *)malloc((size_t)(nnt + 1) * tw * sizeof(int64_t));
        uint8_t *imax = (uint8_t *)malloc((size_t)nmb * K + 1);
        uint16_t *tab = (uint16_t *)dse_alloc64((size_t)im->kc * (im->slot ? im->slot : R * tw) * sizeof(uint16_t));
        void *acc = dse_alloc64((size_t)(mbmax + 1) * im->acc_bytes);
        int32_t *sums = (int32_t *)malloc((size_t)(mbmax + 1) * tw * sizeof(int32_t));
        int64_t *s64 = out64 ? NULL : (int64_t *)malloc((size_t)(M * N) * sizeof(int64_t) + 1);
        if (dse_team_allocated(&fail, (own_i || Ib) && (sel_is_m || !xcls || Tb) && ST && init && imax && tab && acc &&
                                          sums && (out64 || s64))) {
#pragma omp for schedule(static)
            for (int64_t l = 0; l < L; l++) {
                const uint8_t *al = a + l * M * K, *bl = b + l * K * N, *I = bl;
                int64_t *base = out64 ? out64 + l * M * N : s64;
                if (!sel_is_m) { /* I [K, M] = classes of a^T */
                    if (xcls)
                        dse_translate(level, al, M * K, xcls, Tb);
                    dse_transpose_u8(xcls ? Tb : al, K, M, K, Ib, M);
                    I = Ib;
                } else if (!own_i) { /* I [K, N] = classes of b */
                    dse_translate(level, bl, K * N, xcls, Ib);
                    I = Ib;
                }
                const dse_rows_out o = {base, 1, N, sel_is_m, add, NULL, NULL, level, pl.fin_kind};
                for (int64_t t = 0; t < nnt; t++) {
                    const int64_t n0 = t * tw, nv = (nS - n0 < tw) ? nS - n0 : tw;
                    if (sel_is_m)
                        dse_rows_tile_prep(al, off, K, n0, nv, tw, ST + t * K * tw, init + t * tw);
                    else
                        dse_rows_tile_prep_t(bl, N, off, K, n0, nv, tw, ST + t * K * tw, init + t * tw);
                }
                for (int64_t k = 0; k < K; k++)
                    dse_rows_imax_k(I, nI, nI, K, k, nmb, imax);
                for (int64_t t = 0; t < nnt * nmb; t++) {
                    const int64_t ti = t / nmb, n0 = ti * tw, m0 = (t % nmb) * DSE_RT_MB;
                    const int64_t nv = (nS - n0 < tw) ? nS - n0 : tw;
                    const int64_t mb = (nI - m0 < DSE_RT_MB) ? nI - m0 : DSE_RT_MB;
                    dse_rows_task(I, nI, ST + ti * K * tw, tw, init + ti * tw, imax + (t % nmb) * K, D, R, K, n0, nv,
                                  m0, mb, &o, tab, acc, sums, NULL, im);
                }
                if (sc)
                    dse_scale_sums(level, base, kind, M * N, sc, 0, outs + l * M * N);
            }
        }
        free(Ib);
        free(Tb);
        free(ST);
        free(init);
        free(imax);
        free(tab);
        free(acc);
        free(sums);
        free(s64);
    }
    return fail ? -1 : 0;
}

/* ------------------------------------------------------------------ small table GEMMs in batches ("lutb" path) */
/* L independent GEMMs out[l][m][n] = sum_k T[a[l][m][k]][b[l][k][n]] (the table T = LUT[a pattern][b pattern], an
 * activation matmul's heads x images: attention's GEMMs of 65 x 16 x 65 are too small for the rows kernel, whose
 * table builds of R x 64 entries per k-step are then paid for a few dozen positions). One operand's bytes select a
 * byte-plane row of 256 entries (planes [256 sel][NP][256 idx], the table minus a per-selector offset off[sel], so
 * every entry is >= 0 and < 2^(8 NP)), held in 4 NP zmm, and the other's bytes index it 64 at a time with two
 * vpermi2b (dse_byte_lookup512): with sel_is_m the rows of a select and the rows of b [K, N] index (both in their own
 * layouts), else the columns of b select and a^T indexes (both transposed per GEMM into scratch). As in the lut
 * kernel the bytes of each plane are summed in 16-bit lanes (the whole word and its high bytes apart: exact over 256
 * k-steps), then combined into int32 sums per position, to which the selector row's offset sum is added. The caller
 * guarantees that every true sum fits int32 (K max |T| < 2^31): the int32 sums wrap like the true sum mod 2^32 and
 * are then exact. The [M, N] int32 sums of a GEMM are widened into out64[l] or scaled by dse_scale_sums (channel 0:
 * a per-tensor scaling) into outs[l]. */
#define DSE_LUTB_KCH 256

/* sums[s * ss + p] (int32) for the nsel selector rows sel + s * lds (K bytes each) and the nidx index
 * positions X[k * ldx + p]; NB blocks of 64 positions per pass (the last pass masked). */
DSE_T_512 static inline __attribute__((always_inline)) void
dse_lutb_pass(const uint8_t *sel, int64_t lds, int64_t nsel, const uint8_t *X, int64_t ldx, int64_t p0, int64_t plen,
              int64_t K, const uint8_t *planes, const int32_t *off, int32_t *sums, int64_t ss, const int NP,
              const int NB)
{
    __mmask64 lm[4];
    for (int b = 0; b < NB; b++) {
        const int64_t rem = plen - 64 * b;
        lm[b] = rem >= 64 ? ~(__mmask64)0 : (rem <= 0 ? (__mmask64)0 : (((__mmask64)1 << rem) - 1));
    }
    /* 16-bit lane i of a plane's sums holds positions 2i (low byte) and 2i + 1 (high byte): these pick positions
     * 0-31 and 32-63 of the 64 in order from the even sums E (lanes 0-31) and the odd sums O (lanes 32-63) */
    __m512i ilo, ihi;
    {
        int16_t lo[32], hi[32];
        for (int j = 0; j < 32; j++) {
            lo[j] = (int16_t)((j & 1 ? 32 : 0) + j / 2);
            hi[j] = (int16_t)((j & 1 ? 32 : 0) + 16 + j / 2);
        }
        ilo = _mm512_loadu_si512((const void *)lo);
        ihi = _mm512_loadu_si512((const void *)hi);
    }
    for (int64_t s = 0; s < nsel; s++) {
        const uint8_t *sr = sel + s * lds;
        uint32_t osum = 0;
        for (int64_t k = 0; k < K; k++)
            osum += (uint32_t)off[sr[k]];
        __m512i tot[4][4];
        for (int b = 0; b < NB; b++)
            for (int q = 0; q < 4; q++)
                tot[b][q] = _mm512_set1_epi32((int32_t)osum);
        for (int64_t k0 = 0; k0 < K; k0 += DSE_LUTB_KCH) {
            const int64_t k1 = K - k0 < DSE_LUTB_KCH ? K : k0 + DSE_LUTB_KCH;
            __m512i accA[4][4], accO[4][4];
#pragma GCC unroll 4
            for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
                for (int p = 0; p < NP; p++)
                    accA[b][p] = accO[b][p] = _mm512_setzero_si512();
            for (int64_t k = k0; k < k1; k++) {
                const uint8_t *pl = planes + (int64_t)sr[k] * (NP * 256);
                const uint8_t *xr = X + k * ldx + p0;
                __m512i T[4][4];
#pragma GCC unroll 4
                for (int p = 0; p < NP; p++)
#pragma GCC unroll 4
                    for (int q = 0; q < 4; q++)
                        T[p][q] = _mm512_loadu_si512((const void *)(pl + 256 * p + 64 * q));
#pragma GCC unroll 4
                for (int b = 0; b < NB; b++) {
                    const __m512i idx = _mm512_maskz_loadu_epi8(lm[b], (const void *)(xr + 64 * b));
                    const __mmask64 top = _mm512_movepi8_mask(idx);
#pragma GCC unroll 4
                    for (int p = 0; p < NP; p++) {
                        const __m512i v = dse_byte_lookup512(idx, top, T[p][0], T[p][1], T[p][2], T[p][3]);
                        accA[b][p] = _mm512_add_epi16(accA[b][p], v);
                        accO[b][p] = _mm512_add_epi16(accO[b][p], _mm512_srli_epi16(v, 8));
                    }
                }
            }
#pragma GCC unroll 4
            for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
                for (int p = 0; p < NP; p++) {
                    const __m512i O = accO[b][p], E = _mm512_sub_epi16(accA[b][p], _mm512_slli_epi16(O, 8));
                    const __m512i w0 = _mm512_permutex2var_epi16(E, ilo, O), w1 = _mm512_permutex2var_epi16(E, ihi, O);
                    const __m512i q0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(w0));
                    const __m512i q1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w0, 1));
                    const __m512i q2 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(w1));
                    const __m512i q3 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w1, 1));
                    tot[b][0] = _mm512_add_epi32(tot[b][0], _mm512_slli_epi32(q0, 8 * p));
                    tot[b][1] = _mm512_add_epi32(tot[b][1], _mm512_slli_epi32(q1, 8 * p));
                    tot[b][2] = _mm512_add_epi32(tot[b][2], _mm512_slli_epi32(q2, 8 * p));
                    tot[b][3] = _mm512_add_epi32(tot[b][3], _mm512_slli_epi32(q3, 8 * p));
                }
        }
        int32_t *d = sums + s * ss + p0;
        for (int b = 0; b < NB; b++)
            for (int q = 0; q < 4; q++) {
                const int64_t i0 = 64 * b + 16 * q, n = plen - i0 < 16 ? plen - i0 : 16;
                if (n <= 0)
                    break;
                _mm512_mask_storeu_epi32((void *)(d + i0), (__mmask16)((1u << n) - 1), tot[b][q]);
            }
    }
}

#define DSE_LUTB_PASS(NP_, NB_)                                                                                        \
    DSE_T_512 static void dse_lutb_pass_##NP_##_##NB_(const uint8_t *sel, int64_t lds, int64_t nsel, const uint8_t *X, \
                                                      int64_t ldx, int64_t p0, int64_t plen, int64_t K,                \
                                                      const uint8_t *planes, const int32_t *off, int32_t *sums,        \
                                                      int64_t ss)                                                      \
    {                                                                                                                  \
        dse_lutb_pass(sel, lds, nsel, X, ldx, p0, plen, K, planes, off, sums, ss, NP_, NB_);                           \
    }
DSE_LUTB_PASS(1, 1)
DSE_LUTB_PASS(1, 2)
DSE_LUTB_PASS(1, 3)
DSE_LUTB_PASS(1, 4)
DSE_LUTB_PASS(2, 1)
DSE_LUTB_PASS(2, 2)
DSE_LUTB_PASS(2, 3)
DSE_LUTB_PASS(2, 4)
DSE_LUTB_PASS(3, 1)
DSE_LUTB_PASS(3, 2)
DSE_LUTB_PASS(4, 1)
#undef DSE_LUTB_PASS

typedef void (*dse_lutb_fn)(const uint8_t *, int64_t, int64_t, const uint8_t *, int64_t, int64_t, int64_t, int64_t,
                            const uint8_t *, const int32_t *, int32_t *, int64_t);

/* Blocks of 64 positions per pass for NP planes: 4 NP table registers and 2 NP NB accumulators within 32 zmm. */
static inline int dse_lutb_maxnb(int NP)
{
    return NP <= 2 ? 4 : NP == 3 ? 2 : 1;
}

static dse_lutb_fn dse_lutb_pick(int NP, int nb)
{
    static const dse_lutb_fn fns[4][4] = {
        {dse_lutb_pass_1_1, dse_lutb_pass_1_2, dse_lutb_pass_1_3, dse_lutb_pass_1_4},
        {dse_lutb_pass_2_1, dse_lutb_pass_2_2, dse_lutb_pass_2_3, dse_lutb_pass_2_4},
        {dse_lutb_pass_3_1, dse_lutb_pass_3_2, NULL, NULL},
        {dse_lutb_pass_4_1, NULL, NULL, NULL}};
    return fns[NP - 1][nb - 1];
}

/* Index positions past the last whole block of 64 that are summed by scalar lookups in T32 instead of a block of
 * their own (a ViT's 65 tokens: one position would cost a whole masked block per selector row and k-step). */
#define DSE_LUTB_TAIL 4
static inline int64_t dse_lutb_tail(int64_t nidx)
{
    return nidx > 64 && nidx % 64 <= DSE_LUTB_TAIL ? nidx % 64 : 0;
}

/* sums[s * ss + p] = sum_k T32[sel[s K + k], X[k ldx + p]] by scalar lookups (defined with the depthwise kernels'
 * byte lookups, DSE_DW_BYTES8, below). */
static void dse_lutb_lookups(const uint8_t *sel, int64_t nsel, const uint8_t *X, int64_t ldx, int64_t p0, int64_t p1,
                             int64_t K, const int32_t *T32, int32_t *sums, int64_t ss);

/* sums [M * N] int32 of one GEMM, a [M, K] and b [K, N] (see above; T32 [256 sel][256 idx] the whole table as int32);
 * scratch (sel_is_m = 0): (M + N) K bytes and sums_t, M N int32 (the sums in the selectors' [N, M] order, transposed
 * at the end). Byte planes at the avx512 level, scalar lookups in T32 below it. */
static void dse_lutb_gemm1(int level, const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t N,
                           int sel_is_m, const uint8_t *planes, int NP, const int32_t *off, const int32_t *T32,
                           int32_t *sums, uint8_t *scratch, int32_t *sums_t)
{
    const uint8_t *sel, *X;
    int64_t nsel, nidx;
    int32_t *dst = sums;
    if (sel_is_m) {
        sel = a, X = b, nsel = M, nidx = N;
    } else {
        uint8_t *bt = scratch, *at = scratch + N * K; /* b^T [N, K], a^T [K, M] */
        dse_transpose_u8(b, N, K, N, bt, K);
        dse_transpose_u8(a, K, M, K, at, M);
        sel = bt, X = at, nsel = N, nidx = M, dst = sums_t;
    }
    const int64_t ldx = sel_is_m ? N : M;
    const int64_t nvec = level == DSE_ISA_AVX512 ? nidx - dse_lutb_tail(nidx) : 0;
    if (nvec > 0) {
        const int maxnb = dse_lutb_maxnb(NP);
        for (int64_t p0 = 0; p0 < nvec; p0 += 64 * maxnb) {
            const int64_t plen = nvec - p0 < 64 * maxnb ? nvec - p0 : 64 * maxnb;
            dse_lutb_pick(NP, (int)((plen + 63) / 64))(sel, K, nsel, X, ldx, p0, plen, K, planes, off, dst, nidx);
        }
    }
    dse_lutb_lookups(sel, nsel, X, ldx, nvec, nidx, K, T32, dst, nidx);
    if (!sel_is_m)
        dse_transpose_i32(level, sums_t, M, N, M, sums, N);
}

/* The L GEMMs (a + l M K, b + l K N; K >= 1, 1 <= NP <= 4; the planes read at the avx512 level only, which implies
 * VBMI): int64 sums into out64 [L, M, N], or (out64 NULL) the scaled float32 outputs into outs [L, M, N]. Returns 0,
 * or -1 when scratch cannot be allocated. */
static int dse_lutb_batch(int level, const uint8_t *a, const uint8_t *b, int64_t L, int64_t M, int64_t K, int64_t N,
                          int sel_is_m, const uint8_t *planes, int NP, const int32_t *off, const int32_t *T32,
                          int64_t *out64,
                          const dse_scaling *sc, float *outs, int nt)
{
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        int32_t *sums = (int32_t *)dse_alloc64(sizeof(int32_t) * (size_t)(M * N) * (sel_is_m ? 1 : 2));
        uint8_t *scratch = sel_is_m ? NULL : (uint8_t *)dse_alloc64((size_t)((M + N) * K));
        if (dse_team_allocated(&fail, sums != NULL && (sel_is_m || scratch != NULL))) {
#pragma omp for schedule(static)
            for (int64_t l = 0; l < L; l++) {
                dse_lutb_gemm1(level, a + l * M * K, b + l * K * N, M, K, N, sel_is_m, planes, NP, off, T32, sums,
                               scratch, sums + M * N);
                if (out64 != NULL) {
                    int64_t *o = out64 + l * M * N;
                    for (int64_t i = 0; i < M * N; i++)
                        o[i] = sums[i];
                } else {
                    dse_scale_sums(level, sums, DSE_SUM_I32, M * N, sc, 0, outs + l * M * N);
                }
            }
        }
        free(sums);
        free(scratch);
    }
    return fail ? -1 : 0;
}

/* ------------------------------------------------------------------ dispatch */
/* Returns 0 on success, -1 on a bad level / plane count. */
static int dse_lut_gemm(int level, const uint8_t *AT, int64_t lda, const uint8_t *Wp, const int32_t *lutT,
                        const uint8_t *planes, int NP, int32_t maxabs, int64_t M, int64_t K, int64_t N, int64_t *out,
                        int nt)
{
    if (level == DSE_ISA_AVX512) {
        switch (NP) {
        case 1: dse_lut512_np1(AT, lda, Wp, planes, M, K, N, out, nt); return 0;
        case 2: dse_lut512_np2(AT, lda, Wp, planes, M, K, N, out, nt); return 0;
        case 3: dse_lut512_np3(AT, lda, Wp, planes, M, K, N, out, nt); return 0;
        case 4: dse_lut512_np4(AT, lda, Wp, planes, M, K, N, out, nt); return 0;
        default: return -1;
        }
    }
    if (level == DSE_ISA_AVX2) {
        dse_lut_avx2(AT, lda, Wp, lutT, maxabs, M, K, N, out, nt);
        return 0;
    }
    if (level == DSE_ISA_SCALAR) {
        dse_lut_scalar(AT, lda, Wp, lutT, M, K, N, out, nt);
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------ float: sequential FP32 accumulation */
/* out[r] = (((0 + P[r,0]) + P[r,1]) + ...) in float32, ascending k (no reassociation, no FMA). */
static void dse_fsum_seq(const float *P, int64_t R, int64_t K, float *out)
{
    for (int64_t r = 0; r < R; r++) {
        const float *p = P + r * K;
        float s = 0.0f;
        for (int64_t k = 0; k < K; k++)
            s = s + p[k];
        out[r] = s;
    }
}


/* ------------------------------------------------------------------ im2col of 8-bit patterns */
/* The AVX-512 VBMI im2col: each plane's output taps in chunks of <= 64 positions, one vpermi2b per tap and chunk from
 * a window of <= 128 input bytes. A chunk is g whole output rows (g Wo <= 64) or a segment of cw columns of one row
 * (g = 1); per chunk and kernel row i its window is the contiguous run of the input plane that holds every tap of
 * that row (whole input rows when g > 1, the row's columns otherwise), clipped to the plane. Precomputed per call:
 * the window (start, length) of each chunk and kernel row, and per chunk and tap the 64-byte index into its window
 * with the mask of the taps inside the plane (padding: mask bit 0, the byte stays 0). */
#define DSE_I2C_PF 4 /* dse_i2c_block prefetches the windows of the plane this many channels ahead */
/* chunks x taps per call at most (the tables' 72 bytes each are built per call): an im2col of the whole operand
 * (dse_im2col, called per image slice), one inside the integer GEMM (one call per layer) */
#define DSE_I2C_MAXTAB 4096
#define DSE_I2C_MAXTAB_GEMM 16384
typedef struct {
    int64_t g, cw, nseg, nch; /* rows per chunk, columns per chunk, column segments per row, chunks per plane */
    int64_t kh, T;            /* kernel rows, taps */
    uint8_t *idx;             /* [nch][kh kw][64] */
    uint64_t *msk;            /* [nch][kh kw] */
    int64_t *win;             /* [nch][kh][2]: start, length (<= 128) */
} dse_i2c_plan;

/* The plan of the VBMI im2col (tables allocated; free with dse_i2c_free), or 0 when the geometry does not fit it.
 * whole: for dse_im2col (the whole operand), which has a faster plain code for one chunk per row at stride 1. */
static int dse_i2c_plan_make(dse_i2c_plan *P, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, int whole)
{
    int64_t g = 0, cw = Wo;
    if (Wo <= 64)
        for (g = (64 / Wo < Ho) ? 64 / Wo : Ho; g > 1 && ((g - 1) * sh + 1) * W > 128; g--)
            ;
    if (g == 1 && W > 128)
        g = 0;
    if (whole && g <= 1 && sh == 1 && sw == 1 && W == Wo) /* one chunk per row: the plain code's one run per plane */
        return 0;
    if (g == 0) { /* column segments of one row */
        g = 1;
        cw = (128 - 1 - (kw - 1) * dw) / sw + 1;
        cw = cw < 64 ? cw : 64;
        if (cw < 1)
            return 0;
    }
    const int64_t nseg = (Wo + cw - 1) / cw, nch = (Ho + g - 1) / g * nseg, T = kh * kw;
    if (nch * T > (whole ? DSE_I2C_MAXTAB : DSE_I2C_MAXTAB_GEMM))
        return 0;
    P->g = g, P->cw = cw, P->nseg = nseg, P->nch = nch, P->kh = kh, P->T = T;
    P->idx = (uint8_t *)malloc((size_t)(nch * T * 64));
    P->msk = (uint64_t *)malloc((size_t)(nch * T) * sizeof(uint64_t));
    P->win = (int64_t *)malloc((size_t)(nch * kh * 2) * sizeof(int64_t));
    if (!P->idx || !P->msk || !P->win) {
        free(P->idx), free(P->msk), free(P->win);
        return 0;
    }
    for (int64_t ch = 0; ch < nch; ch++) {
        const int64_t y0 = ch / nseg * g, q0 = ch % nseg * cw;
        const int64_t gv = (Ho - y0 < g) ? Ho - y0 : g, cv = (Wo - q0 < cw) ? Wo - q0 : cw;
        for (int64_t i = 0; i < kh; i++) {
            /* input rows r_lo .. r_hi and (one row) columns c_lo .. c_hi of this kernel row, clipped */
            int64_t r_lo = y0 * sh + i * dh - pt, r_hi = (y0 + gv - 1) * sh + i * dh - pt;
            r_lo = r_lo > 0 ? r_lo : 0, r_hi = r_hi < H - 1 ? r_hi : H - 1;
            int64_t start = 0, len = 0;
            if (r_lo <= r_hi) {
                if (g > 1) {
                    start = r_lo * W, len = (r_hi - r_lo + 1) * W;
                } else {
                    int64_t c_lo = q0 * sw - pl, c_hi = (q0 + cv - 1) * sw + (kw - 1) * dw - pl;
                    c_lo = c_lo > 0 ? c_lo : 0, c_hi = c_hi < W - 1 ? c_hi : W - 1;
                    if (c_lo <= c_hi)
                        start = r_lo * W + c_lo, len = c_hi - c_lo + 1;
                }
            }
            P->win[(ch * kh + i) * 2] = start, P->win[(ch * kh + i) * 2 + 1] = len;
            for (int64_t j = 0; j < kw; j++) {
                uint8_t *ix = P->idx + (ch * T + i * kw + j) * 64;
                uint64_t m = 0;
                memset(ix, 0, 64);
                for (int64_t yy = 0; yy < gv; yy++) { /* position k = yy cv + cc of the chunk's gv x cv */
                    const int64_t row = (y0 + yy) * sh + i * dh - pt;
                    if (row < 0 || row >= H)
                        continue;
                    for (int64_t cc = 0, k = yy * cv; cc < cv; cc++, k++) {
                        const int64_t col = (q0 + cc) * sw + j * dw - pl;
                        if (col < 0 || col >= W)
                            continue;
                        ix[k] = (uint8_t)(row * W + col - start); /* < len <= 128 */
                        m |= (uint64_t)1 << k;
                    }
                }
                P->msk[ch * T + i * kw + j] = m;
            }
        }
    }
    return 1;
}

static void dse_i2c_free(dse_i2c_plan *P)
{
    free(P->idx), free(P->msk), free(P->win);
}

static inline __mmask64 dse_i2c_lenmask(int64_t n)
{
    return n >= 64 ? ~(__mmask64)0 : n <= 0 ? 0 : (((__mmask64)1 << n) - 1);
}

/* One input plane xs's taps t0 <= t < t1 at the plane's output positions s0 <= s < s1: the byte of (t, s) goes to
 * dst[(t - t0) ld + s - s0] (a chunk that starts before s0 or ends past s1 is stored under a mask). pf != 0: the
 * same windows pf bytes on (a later plane) are prefetched. */
DSE_T_512 static void dse_i2c_plane(const dse_i2c_plan *P, const uint8_t *xs, int64_t kw, int64_t Wo, int64_t Ho,
                                    int64_t t0, int64_t t1, int64_t s0, int64_t s1, uint8_t *dst, int64_t ld,
                                    int64_t pf)
{
    const int64_t T = P->T, g = P->g, cw = P->cw, nseg = P->nseg;
    int64_t ch = P->nseg == 1 ? s0 / (g * Wo) : s0 / Wo * nseg + s0 % Wo / cw;
    for (; ch < P->nch; ch++) {
        const int64_t y0 = ch / nseg * g, q0 = ch % nseg * cw;
        const int64_t gv = (Ho - y0 < g) ? Ho - y0 : g, cv = (Wo - q0 < cw) ? Wo - q0 : cw;
        const int64_t cs = y0 * Wo + q0, ce = cs + gv * cv;
        if (cs >= s1)
            break;
        const __mmask64 sm = dse_i2c_lenmask((ce < s1 ? ce : s1) - cs) & ~dse_i2c_lenmask(s0 - cs);
        for (int64_t i = t0 / kw; i <= (t1 - 1) / kw; i++) {
            const int64_t *wn = P->win + (ch * P->kh + i) * 2;
            const uint8_t *src = xs + wn[0];
            if (pf) { /* prefetches never fault: past the input's end is harmless */
                _mm_prefetch((const char *)(src + pf), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + pf + 64), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + pf + 127), _MM_HINT_T0);
            }
            const __m512i lo = _mm512_maskz_loadu_epi8(dse_i2c_lenmask(wn[1]), src);
            const __m512i hi = _mm512_maskz_loadu_epi8(dse_i2c_lenmask(wn[1] - 64), src + 64);
            const int64_t j0 = i == t0 / kw ? t0 % kw : 0, j1 = i == (t1 - 1) / kw ? (t1 - 1) % kw + 1 : kw;
            for (int64_t j = j0; j < j1; j++) {
                const int64_t t = ch * T + i * kw + j;
                const __m512i ix = _mm512_loadu_si512(P->idx + t * 64);
                /* masked-off bytes are neither written nor faulted: the store may start before dst[.. s0] */
                _mm512_mask_storeu_epi8(dst + (i * kw + j - t0) * ld + (cs - s0), sm,
                                        _mm512_maskz_permutex2var_epi8(P->msk[t], lo, ix, hi));
            }
        }
    }
}

/* Rows k0 <= k < k1 (k = c T + t) and positions m0 <= m < m1 (m = b Ho Wo + s) of the conv operand of x (images
 * ld_b bytes apart, H W bytes per channel plane) into dst[(k - k0) ld + m - m0]. */
DSE_T_512 static void dse_i2c_block(const dse_i2c_plan *P, const uint8_t *x, int64_t ld_b, int64_t HW, int64_t kw,
                                    int64_t Ho, int64_t Wo, int64_t k0, int64_t k1, int64_t m0, int64_t m1,
                                    uint8_t *dst, int64_t ld)
{
    const int64_t T = P->T, HoWo = Ho * Wo;
    for (int64_t b = m0 / HoWo; b * HoWo < m1; b++) {
        const int64_t s0 = m0 > b * HoWo ? m0 - b * HoWo : 0, s1 = m1 < (b + 1) * HoWo ? m1 - b * HoWo : HoWo;
        for (int64_t c = k0 / T; c * T < k1; c++) {
            const int64_t t0 = k0 > c * T ? k0 - c * T : 0, t1 = k1 < (c + 1) * T ? k1 - c * T : T;
            dse_i2c_plane(P, x + b * ld_b + c * HW, kw, Wo, Ho, t0, t1, s0, s1,
                          dst + (c * T + t0 - k0) * ld + b * HoWo + s0 - m0, ld, DSE_I2C_PF * HW);
        }
    }
}

DSE_T_512 static void dse_im2col_512(const dse_i2c_plan *P, const uint8_t *x, int64_t B, int64_t C, int64_t H,
                                     int64_t W, int64_t kh, int64_t kw, int64_t Ho, int64_t Wo, uint8_t *cols, int nt)
{
    const int64_t M = B * Ho * Wo, T = kh * kw;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bc = 0; bc < B * C; bc++) {
        const int64_t b = bc / C, c = bc % C;
        dse_i2c_plane(P, x + bc * H * W, kw, Wo, Ho, 0, T, 0, Ho * Wo, cols + c * T * M + b * Ho * Wo, M, 0);
    }
}

/* cols[(c kh + i) kw + j, (b Ho + y) Wo + q] = xpad[b, c, y sh + i dh, q sw + j dw] (x uint8 [B, C, H, W], zero
 * padded by pt rows and pl columns at the start and as far as needed at the end): the GEMM operand of a conv. At
 * the avx512 level the VBMI chunks above where the geometry fits them, else row by row with memcpy/memset (stride
 * 1) or strided byte copies; OpenMP over (row, image) pairs. */
/* d[0, n) = s[0, n) for a few bytes: 16-, 8- or 4-byte moves, the last one overlapping the one before (exact: no byte
 * outside [0, n) is read or written). */
static inline void dse_copy_few(uint8_t *d, const uint8_t *s, int64_t n)
{
    if (n >= 16) {
        for (int64_t q = 0; q + 16 < n; q += 16)
            _mm_storeu_si128((__m128i *)(d + q), _mm_loadu_si128((const __m128i *)(s + q)));
        _mm_storeu_si128((__m128i *)(d + n - 16), _mm_loadu_si128((const __m128i *)(s + n - 16)));
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8), memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4), memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4), memcpy(d + n - 4, &b, 4);
    } else {
        for (int64_t q = 0; q < n; q++)
            d[q] = s[q];
    }
}

/* Output rows of at most this many columns take dse_im2col's plane path. */
#define DSE_I2C_SMALL_WO 16
/* im2col of small output planes (Wo <= DSE_I2C_SMALL_WO: ResNet's 16x16 .. 4x4 planes, where the per-row path's
 * memset / memcpy calls and fix-up loops per (kernel tap, image) cost more than its few bytes): per (channel, image)
 * the zero-padded input plane (the rows and columns the taps read) is laid out once, and at stride sw > 1 split into sw
 * column-phase planes (phase f holds the padded columns f, f + sw, ...), in which every kernel tap's output row is a
 * run of Wo bytes, copied with a few vector moves. The padding's zeros are written once per thread (only the input's
 * rows and columns change from plane to plane). Returns 0 (nothing written) when a thread's buffers cannot be
 * allocated. */
static int dse_im2col_planes(const uint8_t *x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                             int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho,
                             int64_t Wo, uint8_t *cols, int nt)
{
    const int64_t M = B * Ho * Wo, kk = kh * kw;
    const int64_t Hs = (Ho - 1) * sh + (kh - 1) * dh + 1; /* padded rows read */
    const int64_t Wt = (Wo - 1) * sw + (kw - 1) * dw + 1; /* padded columns read */
    const int64_t Wu = Wo + ((kw - 1) * dw) / sw;         /* columns per phase plane (Wt at stride 1) */
    const int64_t plane = Hs * Wu;
    /* the input's rows y0 <= y < y1 and columns t0 <= t < t1 of the padded plane */
    const int64_t y0 = pt < Hs ? pt : Hs, y1 = pt + H < Hs ? (pt + H > y0 ? pt + H : y0) : Hs;
    const int64_t t0 = pl < Wt ? pl : Wt, t1 = pl + W < Wt ? (pl + W > t0 ? pl + W : t0) : Wt;
    int64_t *toff = (int64_t *)malloc((size_t)kk * sizeof(int64_t)); /* each tap's first byte in the phase planes */
    if (!toff)
        return 0;
    for (int64_t i = 0; i < kh; i++)
        for (int64_t j = 0; j < kw; j++)
            toff[i * kw + j] = ((j * dw) % sw) * plane + (i * dh) * Wu + (j * dw) / sw;
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        uint8_t *pad = (uint8_t *)calloc((size_t)(Hs * Wt), 1);
        uint8_t *ph = sw == 1 ? pad : (uint8_t *)calloc((size_t)(sw * plane), 1);
        if (dse_team_allocated(&fail, pad && ph)) {
#pragma omp for schedule(static) collapse(2)
            for (int64_t c = 0; c < C; c++)
                for (int64_t b = 0; b < B; b++) {
                    const uint8_t *xs = x + (b * C + c) * H * W;
                    for (int64_t y = y0; y < y1; y++)
                        dse_copy_few(pad + y * Wt + t0, xs + (y - pt) * W + (t0 - pl), t1 - t0);
                    for (int64_t f = 0; f < sw && sw > 1; f++) { /* phase f: padded columns u sw + f < Wt */
                        const int64_t nu = (Wt - f + sw - 1) / sw;
                        for (int64_t y = 0; y < Hs; y++)
                            for (int64_t u = 0; u < nu; u++)
                                ph[f * plane + y * Wu + u] = pad[y * Wt + u * sw + f];
                    }
                    for (int64_t t = 0; t < kk; t++) {
                        const uint8_t *src = ph + toff[t];
                        uint8_t *dst = cols + (c * kk + t) * M + b * Ho * Wo;
                        for (int64_t y = 0; y < Ho; y++)
                            dse_copy_few(dst + y * Wo, src + y * sh * Wu, Wo);
                    }
                }
        }
        if (ph != pad)
            free(ph);
        free(pad);
    }
    free(toff);
    return !fail;
}

static void dse_im2col(int level, const uint8_t *x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t Ho,
                       int64_t Wo, uint8_t *cols, int nt)
{
    const int64_t M = B * Ho * Wo, R = C * kh * kw;
    dse_i2c_plan plan;
    memset(&plan, 0, sizeof(plan));
    if (level >= DSE_ISA_AVX512 && dse_i2c_plan_make(&plan, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, 1)) {
        dse_im2col_512(&plan, x, B, C, H, W, kh, kw, Ho, Wo, cols, nt);
        dse_i2c_free(&plan);
        return;
    }
    if (kw > 1 && sh == kh && sw == kw && dh == 1 && dw == 1 && pt == 0 && pl == 0 && Ho * kh <= H && Wo * kw <= W) {
        /* patches (a ViT's patch embedding: the stride is the kernel, no padding): output row (c, i, j) at image b,
         * patch row y is column j of input row y kh + i read as [Wo][kw] bytes, one byte transpose per input row
         * (the plane path split an 8x8-strided 64-wide plane into phases byte by byte: 16 ms of the ViT 64's 256
         * images, its largest im2col) */
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
        for (int64_t c = 0; c < C; c++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t i = 0; i < kh; i++)
                    for (int64_t y = 0; y < Ho; y++)
                        dse_transpose_u8(x + ((b * C + c) * H + y * kh + i) * W, kw, Wo, kw,
                                         cols + (c * kh + i) * kw * M + (b * Ho + y) * Wo, M);
        return;
    }
    if (Wo <= DSE_I2C_SMALL_WO && dse_im2col_planes(x, B, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, cols, nt))
        return;
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int64_t r = 0; r < R; r++)
        for (int64_t b = 0; b < B; b++) {
            const int64_t c = r / (kh * kw), i = (r / kw) % kh, j = r % kw, off = j * dw - pl;
            /* columns q0 <= q < q1 read inside the row: 0 <= q sw + off < W */
            int64_t q0 = off >= 0 ? 0 : (-off + sw - 1) / sw, q1 = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
            q0 = q0 < Wo ? q0 : Wo;
            q1 = q1 < Wo ? (q1 > q0 ? q1 : q0) : Wo;
            const uint8_t *xs = x + (b * C + c) * H * W;
            uint8_t *dst = cols + r * M + b * Ho * Wo;
            if (sw == 1 && sh == 1 && W == Wo && q0 < q1) { /* rows y0 .. y1 - 1 inside the plane: one shifted copy */
                const int64_t y0 = pt - i * dh > 0 ? (pt - i * dh < Ho ? pt - i * dh : Ho) : 0;
                const int64_t y1e = H + pt - i * dh, y1 = y1e < Ho ? (y1e > y0 ? y1e : y0) : Ho;
                memset(dst, 0, (size_t)(y0 * Wo));
                memset(dst + y1 * Wo, 0, (size_t)((Ho - y1) * Wo));
                if (y1 > y0) {
                    /* dst[y Wo + q] = xs[(y + i dh - pt) W + q + off] for q0 <= q < q1 (W == Wo: one run) */
                    const int64_t d0 = y0 * Wo + q0, n = (y1 - y0 - 1) * Wo + (q1 - q0);
                    memcpy(dst + d0, xs + (y0 + i * dh - pt) * W + q0 + off, (size_t)n);
                    for (int64_t y = y0; y < y1; y++) { /* the columns the run took from the next/previous row */
                        for (int64_t q = 0; q < q0; q++)
                            dst[y * Wo + q] = 0;
                        for (int64_t q = q1; q < Wo; q++)
                            dst[y * Wo + q] = 0;
                    }
                }
                continue;
            }
            for (int64_t y = 0; y < Ho; y++) {
                const int64_t row = y * sh + i * dh - pt;
                uint8_t *d = dst + y * Wo;
                if (row < 0 || row >= H || q0 == q1) {
                    memset(d, 0, (size_t)Wo);
                    continue;
                }
                memset(d, 0, (size_t)q0);
                memset(d + q1, 0, (size_t)(Wo - q1));
                const uint8_t *src = xs + row * W + q0 * sw + off;
                int64_t q = 0;
                if (sw == 1)
                    memcpy(d + q0, src, (size_t)(q1 - q0)), q = q1 - q0;
                else if (sw == 2 && q1 - q0 > 16) { /* 16 columns per step: the even bytes of 32 (SSE2); reads end
                                                     * before the last column's byte */
                    const __m128i lo8 = _mm_set1_epi16(0xFF);
                    for (; q + 16 < q1 - q0; q += 16)
                        _mm_storeu_si128((__m128i *)(d + q0 + q),
                                         _mm_packus_epi16(
                                             _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 2 * q)), lo8),
                                             _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 2 * q + 16)), lo8)));
                    /* the last 16 columns (overlapping the steps before: the same bytes rewritten) as the odd bytes
                     * of the 32 from one before the first one's: the reads end at the last column's byte */
                    q = q1 - q0 - 16;
                    const __m128i a = _mm_loadu_si128((const __m128i *)(src + 2 * q - 1)),
                                  b = _mm_loadu_si128((const __m128i *)(src + 2 * q + 15));
                    _mm_storeu_si128((__m128i *)(d + q0 + q),
                                     _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8)));
                    q = q1 - q0;
                }
                for (; q < q1 - q0; q++)
                    d[q0 + q] = src[q * sw];
            }
        }
}


/* ------------------------------------------------------------------ direct depthwise convolution */
/* Depthwise conv (one input channel per group, og = Cout / C output channels per input channel), no im2col:
 *   out[b, o, y, x] = sum_{i<kh, j<kw} T(xpad[b, o / og, y*sh + i*dh, x*sw + j*dw], w[o, i, j])
 * x uint8 [B, C, H, W] activation patterns, wp uint8 [Cout, kh, kw] weight patterns, out int64 [B, Cout, Ho, Wo].
 * xpad = x zero-padded by (pt, pl) at the start (and as far as needed at the end): padding is pattern 0, which goes
 * through T like any operand. T = lutT[w][a] (mode 0), or (mode 1) the exact product value(a) * value(w), a_signed
 * picking the activation's value of a pattern.
 *
 * Per input plane (b, c) the padded plane is split into sh * sw phase planes of HQ x WQ bytes,
 * P[(i*dh % sh) * sw + j*dw % sw][r][q] = xpad[r*sh + i*dh % sh, q*sw + j*dw % sw], so that tap (i, j) of output
 * (y, x) reads P[...][y + i*dh / sh][x + j*dw / sw]: with t = y * WQ + x every tap reads one contiguous run
 * P + (i*dh / sh) * WQ + j*dw / sw + t, t < (Ho - 1) * WQ + Wo (the columns x >= Wo of that run are computed and
 * dropped). The planes of a block of images of one channel lie one after the other in each phase plane, so that one
 * run covers them all (dse_dw_conv). At the AVX2 level all taps are summed in int32 registers, exact while kh * kw *
 * bound < 2^31 (``fits32``; bound >= every |term|): table lookups 8 outputs at a time with scalar loads from the
 * tap's 1 KiB column lutT[w] (dse_dw_run_lut32), products G[w] * value / G[w] * F[a] of a rank-1 table 8 per vector
 * (16 at the AVX-512 level, where an input byte table xtab is applied to the whole phase planes with VBMI permutes,
 * and byte weight factors take VNNI quads: dse_dw_run_quads_512); otherwise, and at the scalar level, int64 sums.
 * Work is split over (channel, block of images) with OpenMP (nt threads); each output is computed by one thread in a
 * fixed order, so results do not depend on the thread count. Returns 0, or -1 when a scratch buffer cannot be
 * allocated. */
typedef struct {
    const uint8_t *p;   /* start of the tap's run in its phase plane */
    const int32_t *col; /* lutT[w] (mode 0) */
    const int16_t *f;   /* the F-value plane at this tap (mode 2) */
    int32_t wv;         /* G[w]: the weight pattern's factor (modes 1, 2) */
} dse_dw_tap;

/* Modes: 0 table lookups lutT[w][a]; 1 G[w] * value(a) (the exact product, or a table F(a) = a, e.g. perforation);
 * 2 G[w] * F[a] with the activation factor F looked up once per input element into an int16 plane. */
static inline int64_t dse_dw_term(const dse_dw_tap *tp, int64_t t, int mode, int a_signed)
{
    if (mode == 0)
        return tp->col[tp->p[t]];
    if (mode == 2)
        return (int64_t)tp->wv * tp->f[t];
    return (int64_t)tp->wv * (a_signed ? (int64_t)(int8_t)tp->p[t] : (int64_t)tp->p[t]);
}

/* full[t] = sum over taps of T for t in [t0, L) (int64). */
static void dse_dw_run_scalar(const dse_dw_tap *tp, int64_t ntap, int64_t t0, int64_t L, int mode, int a_signed,
                              int64_t *full)
{
    for (int64_t t = t0; t < L; t++) {
        int64_t s = 0;
        for (int64_t k = 0; k < ntap; k++)
            s += dse_dw_term(tp + k, t, mode, a_signed);
        full[t] = s;
    }
}

/* Table lookups (mode 0) with int32 sums, 8 outputs per step: each tap's 8 activation bytes come from one 64-bit
 * load and index its column lutT[w] with scalar loads (faster than vpgatherdd on the AVX2 machines we measured: a
 * gather's 8 loads cost more than 8 scalar ones). On x86-64 the bytes are taken two at a time from the low and high
 * byte registers (movzbl %al / %ah, then one shift by 16): 2.5 instructions per lookup instead of the 3.75 the
 * compiler emits for the same C (a shift and mask per byte). The last step may run up to 7 positions past L (the
 * buffers have that slack). */
#if defined(__GNUC__) && defined(__x86_64__)
#define DSE_DW_PAIR(add, scale, lo, hi)                                                                                \
    "movzbl %b[v], %k[i0]\n\t"                                                                                         \
    "movzbl %h[v], %k[i1]\n\t" add " (%[c],%[i0]," scale "), %[" lo "]\n\t" add " (%[c],%[i1]," scale "), %[" hi      \
    "]\n\t"
#define DSE_DW_BYTES8_ASM(add, scale, v, c, s0, s1, s2, s3, s4, s5, s6, s7)                                            \
    do {                                                                                                               \
        uint64_t i0, i1;                                                                                               \
        __asm__(DSE_DW_PAIR(add, scale, "s0", "s1") "shrq $16, %[v]\n\t" DSE_DW_PAIR(add, scale, "s2", "s3")           \
                "shrq $16, %[v]\n\t" DSE_DW_PAIR(add, scale, "s4", "s5") "shrq $16, %[v]\n\t"                          \
                DSE_DW_PAIR(add, scale, "s6", "s7")                                                                    \
                : [v] "+Q"(v), [i0] "=&r"(i0), [i1] "=&R"(i1), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),           \
                  [s3] "+r"(s3), [s4] "+r"(s4), [s5] "+r"(s5), [s6] "+r"(s6), [s7] "+r"(s7)                            \
                : [c] "r"(c)                                                                                           \
                : "memory");                                                                                           \
    } while (0)
#define DSE_DW_BYTES8(v, c, s0, s1, s2, s3, s4, s5, s6, s7) DSE_DW_BYTES8_ASM("addl", "4", v, c, s0, s1, s2, s3, s4, s5, s6, s7)
#define DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7)                                                         \
    DSE_DW_BYTES8_ASM("addq", "8", v, c, s0, s1, s2, s3, s4, s5, s6, s7)
#else
#define DSE_DW_BYTES8(v, c, s0, s1, s2, s3, s4, s5, s6, s7)                                                            \
    do {                                                                                                               \
        s0 += c[v & 255], s1 += c[(v >> 8) & 255], s2 += c[(v >> 16) & 255], s3 += c[(v >> 24) & 255];                \
        s4 += c[(v >> 32) & 255], s5 += c[(v >> 40) & 255], s6 += c[(v >> 48) & 255], s7 += c[v >> 56];                \
    } while (0)
#define DSE_DW_BYTES8_64 DSE_DW_BYTES8
#endif

static void dse_dw_run_lut32(const dse_dw_tap *tp, int64_t ntap, int64_t L, int32_t *full)
{
    for (int64_t t = 0; t < L; t += 8) {
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (int64_t k = 0; k < ntap; k++) {
            uint64_t v;
            memcpy(&v, tp[k].p + t, 8);
            const int32_t *c = tp[k].col;
            DSE_DW_BYTES8(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        full[t] = s0, full[t + 1] = s1, full[t + 2] = s2, full[t + 3] = s3;
        full[t + 4] = s4, full[t + 5] = s5, full[t + 6] = s6, full[t + 7] = s7;
    }
}

/* The small table GEMMs' scalar lookups (declared with dse_lutb_gemm1): sums[s * ss + p] (int32, wrapping like the
 * true sums) = sum_k T32[sel[s K + k], X[k ldx + p]] for the nsel selector rows and the index positions p0 <= p < p1
 * in the whole table (T32 [256 sel][256 idx]): below the avx512 level all of them (no byte permutes over 256 entries
 * there: a scalar lookup per product is the cheapest), at it the tail positions. Eight positions at a time as
 * dse_dw_run_lut32 sums: one selected row per k-step, the eight index bytes from one 64-bit load, the sums in
 * registers. */
static void dse_lutb_lookups(const uint8_t *sel, int64_t nsel, const uint8_t *X, int64_t ldx, int64_t p0, int64_t p1,
                             int64_t K, const int32_t *T32, int32_t *sums, int64_t ss)
{
    const int64_t p8 = p0 + ((p1 - p0) & ~(int64_t)7);
    for (int64_t s = 0; s < nsel; s++) {
        const uint8_t *sr = sel + s * K;
        int32_t *d = sums + s * ss;
        for (int64_t p = p0; p < p8; p += 8) {
            uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
            for (int64_t k = 0; k < K; k++) {
                const int32_t *c = T32 + (int64_t)sr[k] * 256;
                uint64_t v;
                memcpy(&v, X + k * ldx + p, 8);
                DSE_DW_BYTES8(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
            }
            d[p] = (int32_t)s0, d[p + 1] = (int32_t)s1, d[p + 2] = (int32_t)s2, d[p + 3] = (int32_t)s3;
            d[p + 4] = (int32_t)s4, d[p + 5] = (int32_t)s5, d[p + 6] = (int32_t)s6, d[p + 7] = (int32_t)s7;
        }
        for (int64_t p = p8; p < p1; p++) {
            uint32_t acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (uint32_t)T32[(int64_t)sr[k] * 256 + X[k * ldx + p]];
            d[p] = (int32_t)acc;
        }
    }
}

/* Row sums of packed columns (mode 3, "rowsum"; tables whose columns span < 2^16). The taps that read the same phase
 * plane at the same row offset and column offsets 3 m .. 3 m + 2 form a group g (its run starts at goff[g], 3 m
 * bytes after the row's); a tap's column offset in that plane less 3 m is its field f < 3 (21 bits at bit 21 f) in
 * the group's packed column Q[g][a] = sum of (lutT[w][a] - min_a lutT[w][a]) << 21 f over the group's taps. Then
 * S[u] = sum_g Q[g][P[goff[g] + u]] holds three column sums (each < ng 2^16 <= 2^21, ng <= 32 groups: no carry
 * between fields) and out[t] = base + sum_f field_f(S[t + f]) with base = sum over taps of min_a lutT[w][a]: one
 * lookup per group (kh for a stride-1 kernel up to 3 wide, 2 kh for 5 wide) instead of one per tap.
 * A 3 x 3 kernel at stride 1 (column dilation 1, any row dilation dh) takes the transposed packing instead ("cols"):
 * group j = the kernel column (its run starts j bytes after tap (0, 0)'s), field i = the kernel row, out[t] = base +
 * sum_i field_i(S[t + i fs]) with fs = dh WQ; the three groups read one run of bytes, each byte indexing all three
 * columns (dse_dw_cols3_sums): one index per position instead of three.
 * A 3 x 3 kernel at stride 2 (dilation 1) reads four phase planes: E0 (even rows, even columns: taps (0|2, 0|2)),
 * E1 (even rows, odd columns: (0|2, 1)), O0 (odd rows, even columns: (1, 0|2)), O1 (odd rows, odd columns: (1, 1)).
 * Its packing ("cols" 2, dse_dw_s2_sums) indexes each of their bytes once: field 0 holds kernel row 0, field 1
 * kernel row 2 (the same even plane one row further down) and field 2 kernel row 1, and a tap of kernel column 2
 * reads the byte after column 0's, so S[u] = Q0[E0[u]] + Q1[E0[u + 1]] + Q2[E1[u]] + Q3[O0[u]] + Q4[O0[u + 1]] +
 * Q5[O1[u]] and out[t] = base + field_0(S[t]) + field_2(S[t]) + field_1(S[t + WQ]): six lookups from four byte
 * indexes per position instead of six from six (the generic groups), over L + WQ positions instead of L + 2.
 * A 5 x 5 kernel at stride 2 (dilation 1) the same way ("cols" 4, dse_dw_s25_sums): tap (i, j) reads its phase plane
 * i / 2 rows and j / 2 columns on, so the table of plane and column offset j / 2 holds kernel row i in field i / 2 (E0
 * and O0 three tables, E1 and O1 two) and out[t] = base + sum_f field_f(S[t + f WQ]) (the stride-1 "cols" fold): ten
 * lookups from four byte indexes per position instead of ten from ten, over L + 2 WQ positions instead of L + 2. */
#define DSE_DW_FIELD 21
typedef struct {
    int64_t ng, goff[32]; /* groups and where each one's run starts in the phase planes */
    int64_t *tg, *tf;     /* per tap: its group and field */
    int64_t fs;           /* field f of output t's sums is in S[t + f fs] */
    int cols;             /* the "cols" packing: 3 (3x3), 5 (5x5, dse_dw_cols5_sums), 2 (3x3 at stride 2,
                           * dse_dw_s2_sums), 4 (5x5 at stride 2, dse_dw_s25_sums), else 0 */
    int64_t s2;           /* cols 5: the second sums (kernel rows 3, 4) are S2 = S + s2 */
} dse_dw_groups;

/* Q [ng][256] of output channel wo's taps; returns base. Compiled twice: portable and at the AVX2 level
 * (dse_dw_pack_avx2, vpminsd and 4 entries per vector: the same integers). */
static inline __attribute__((always_inline)) int64_t dse_dw_pack_body(const int32_t *lutT, const uint8_t *wo,
                                                                       int64_t ntap, const dse_dw_groups *gr,
                                                                       uint64_t *Q)
{
    int64_t base = 0;
    memset(Q, 0, (size_t)(gr->ng * 256) * sizeof(uint64_t));
    for (int64_t k = 0; k < ntap; k++) {
        const int32_t *col = lutT + 256 * (int64_t)wo[k];
        uint64_t *q = Q + 256 * gr->tg[k];
        int32_t mn = col[0];
        for (int a = 1; a < 256; a++)
            mn = col[a] < mn ? col[a] : mn;
        base += mn;
        const int sh = DSE_DW_FIELD * (int)gr->tf[k]; /* col[a] - mn < 2^16: one vectorisable widen, shift, add */
        for (int a = 0; a < 256; a++)
            q[a] += (uint64_t)(uint32_t)(col[a] - mn) << sh;
    }
    return base;
}

static int64_t dse_dw_pack(const int32_t *lutT, const uint8_t *wo, int64_t ntap, const dse_dw_groups *gr, uint64_t *Q)
{
    return dse_dw_pack_body(lutT, wo, ntap, gr, Q);
}

DSE_T_AVX2 static int64_t dse_dw_pack_avx2(const int32_t *lutT, const uint8_t *wo, int64_t ntap,
                                           const dse_dw_groups *gr, uint64_t *Q)
{
    return dse_dw_pack_body(lutT, wo, ntap, gr, Q);
}

/* The packed sums S[u] of positions u in [u0, u1) (in steps of 8: up to 7 past u1); each S[u] depends on u only, so
 * overlapping calls store the same values. The runs read up to 7 bytes past u1 (the planes have that slack). */
static inline __attribute__((always_inline)) void dse_dw_rowsum_sums(const uint8_t *P, const dse_dw_groups *gr,
                                                                     int64_t u0, int64_t u1, const uint64_t *Q,
                                                                     uint64_t *S)
{
    for (int64_t t = u0; t < u1; t += 8) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (int64_t g = 0; g < gr->ng; g++) {
            uint64_t v;
            memcpy(&v, P + gr->goff[g] + t, 8);
            const uint64_t *c = Q + 256 * g;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        S[t] = s0, S[t + 1] = s1, S[t + 2] = s2, S[t + 3] = s3;
        S[t + 4] = s4, S[t + 5] = s5, S[t + 6] = s6, S[t + 7] = s7;
    }
}

/* The same sums for three groups whose runs start d bytes apart (goff = g0, g0 + d, g0 + 2 d: a kernel of three rows
 * at stride 1, e.g. 3x3), the three lookups of a step unrolled with their runs addressed from one pointer and d
 * (base + index * scale), the columns at fixed offsets from Q: no loop over groups, no group offsets reloaded from
 * memory, no spilled pointers. */
static inline __attribute__((always_inline)) void dse_dw_rowsum3_sums(const uint8_t *P, const dse_dw_groups *gr,
                                                                      int64_t u0, int64_t u1, const uint64_t *Q,
                                                                      uint64_t *S)
{
    const uint8_t *p = P + gr->goff[0] + u0;
    const int64_t d = gr->goff[1] - gr->goff[0];
    for (int64_t t = u0; t < u1; t += 8, p += 8) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, v;
        memcpy(&v, p, 8);
        {
            const uint64_t *c = Q + 0;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        memcpy(&v, p + d, 8);
        {
            const uint64_t *c = Q + 256;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        memcpy(&v, p + 2 * d, 8);
        {
            const uint64_t *c = Q + 512;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        S[t] = s0, S[t + 1] = s1, S[t + 2] = s2, S[t + 3] = s3;
        S[t + 4] = s4, S[t + 5] = s5, S[t + 6] = s6, S[t + 7] = s7;
    }
}

/* The portable form of DSE_DW_COLS8 / DSE_DW_COLS8_2: byte k of v indexes tables j < ncol (256 entries apart) for
 * outputs k - j of the step (those in it). */
#define DSE_DW_COLS8_N(v, tab, ncol, s0, s1, s2, s3, s4, s5, s6, s7)                                                     \
    do {                                                                                                               \
        uint64_t *const sk[8] = {&s0, &s1, &s2, &s3, &s4, &s5, &s6, &s7};                                              \
        for (int k = 0; k < 8; k++)                                                                                    \
            for (int j = 0; j <= k && j < (ncol); j++)                                                                 \
                *sk[k - j] += (tab)[256 * j + ((v >> (8 * k)) & 255)];                                                 \
    } while (0)

/* The sums of the "cols" packing, S[u] = Q[0][p[u]] + Q[1][p[u + 1]] + Q[2][p[u + 2]] (p: tap (0, 0)'s run) for u in
 * [u0, u1) in steps of 8: each of a step's 10 bytes indexed once, its index reused for the (up to) three columns
 * (displacements of 2 KiB from Q). Reads up to 9 bytes past the step. */
#if defined(__GNUC__) && defined(__x86_64__)
#define DSE_DW_COL(k, idx) "addq " #k "(%[c],%[" idx "],8), "
#define DSE_DW_COLS8(v, tab, s0, s1, s2, s3, s4, s5, s6, s7)                                                             \
    do {                                                                                                               \
        uint64_t i0, i1;                                                                                               \
        __asm__("movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s0]\n\t"                     \
                DSE_DW_COL(0, "i1") "%[s1]\n\t" DSE_DW_COL(2048, "i1") "%[s0]\n\tshrq $16, %[v]\n\t"                   \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s2]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s1]\n\t" DSE_DW_COL(4096, "i0") "%[s0]\n\t" DSE_DW_COL(0, "i1") "%[s3]\n\t"  \
                DSE_DW_COL(2048, "i1") "%[s2]\n\t" DSE_DW_COL(4096, "i1") "%[s1]\n\tshrq $16, %[v]\n\t"                \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s4]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s3]\n\t" DSE_DW_COL(4096, "i0") "%[s2]\n\t" DSE_DW_COL(0, "i1") "%[s5]\n\t"  \
                DSE_DW_COL(2048, "i1") "%[s4]\n\t" DSE_DW_COL(4096, "i1") "%[s3]\n\tshrq $16, %[v]\n\t"                \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s6]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s5]\n\t" DSE_DW_COL(4096, "i0") "%[s4]\n\t" DSE_DW_COL(0, "i1") "%[s7]\n\t"  \
                DSE_DW_COL(2048, "i1") "%[s6]\n\t" DSE_DW_COL(4096, "i1") "%[s5]\n\t"                                  \
                : [v] "+Q"(v), [i0] "=&r"(i0), [i1] "=&R"(i1), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),           \
                  [s3] "+r"(s3), [s4] "+r"(s4), [s5] "+r"(s5), [s6] "+r"(s6), [s7] "+r"(s7)                            \
                : [c] "r"(tab)                                                                                           \
                : "memory");                                                                                           \
    } while (0)
#else
#define DSE_DW_COLS8(v, tab, s0, s1, s2, s3, s4, s5, s6, s7) DSE_DW_COLS8_N(v, tab, 3, s0, s1, s2, s3, s4, s5, s6, s7)
#endif

static inline __attribute__((always_inline)) void dse_dw_cols3_sums(const uint8_t *p0, int64_t u0, int64_t u1,
                                                                    const uint64_t *Q, uint64_t *S)
{
    const uint8_t *p = p0 + u0;
    for (int64_t t = u0; t < u1; t += 8, p += 8) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, v;
        memcpy(&v, p, 8);
        DSE_DW_COLS8(v, Q, s0, s1, s2, s3, s4, s5, s6, s7);
        const uint64_t e8 = p[8], e9 = p[9]; /* the next step's first bytes: columns 1, 2 of outputs 6, 7 */
        s6 += Q[512 + e8], s7 += Q[256 + e8] + Q[512 + e9];
        S[t] = s0, S[t + 1] = s1, S[t + 2] = s2, S[t + 3] = s3;
        S[t + 4] = s4, S[t + 5] = s5, S[t + 6] = s6, S[t + 7] = s7;
    }
}

/* The "cols" packing of a 5 x 5 kernel at stride 1: table j < 5 (Q[j]) packs kernel rows 0-2 of column j in its
 * three fields, table 5 + j rows 3 and 4 (fields 0, 1), so S[u] = sum_j Q[j][p[u + j]] and S2[u] = sum_j Q[5 +
 * j][p[u + j]] for u in [u0, u1) in steps of 4 (up to 3 past u1): each of a step's 8 bytes indexed once (as
 * DSE_DW_COLS8 does) for its (up to) ten lookups, 40 per step at fixed displacements from Q; output t = base +
 * sum_{i < 3} field_i(S[t + i fs]) + sum_{i < 2} field_i(S2[t + (3 + i) fs]). Reads up to 7 bytes past the step. */
#if defined(__GNUC__) && defined(__x86_64__)
#define DSE_DW_C5L(disp, idx, acc) "addq " #disp "(%[c],%[" idx "],8), %[" acc "]\n\t"
#define DSE_DW_COLS5_4(v, tab, a0, a1, a2, a3, b0, b1, b2, b3) \
    do { \
        uint64_t i0, i1; \
        __asm__("movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" \
                DSE_DW_C5L(0, "i0", "a0") DSE_DW_C5L(10240, "i0", "b0") \
                DSE_DW_C5L(0, "i1", "a1") DSE_DW_C5L(10240, "i1", "b1") DSE_DW_C5L(2048, "i1", "a0") DSE_DW_C5L(12288, "i1", "b0") \
                "shrq $16, %[v]\n\t" \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" \
                DSE_DW_C5L(0, "i0", "a2") DSE_DW_C5L(10240, "i0", "b2") DSE_DW_C5L(2048, "i0", "a1") DSE_DW_C5L(12288, "i0", "b1") DSE_DW_C5L(4096, "i0", "a0") DSE_DW_C5L(14336, "i0", "b0") \
                DSE_DW_C5L(0, "i1", "a3") DSE_DW_C5L(10240, "i1", "b3") DSE_DW_C5L(2048, "i1", "a2") DSE_DW_C5L(12288, "i1", "b2") DSE_DW_C5L(4096, "i1", "a1") DSE_DW_C5L(14336, "i1", "b1") DSE_DW_C5L(6144, "i1", "a0") DSE_DW_C5L(16384, "i1", "b0") \
                "shrq $16, %[v]\n\t" \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" \
                DSE_DW_C5L(2048, "i0", "a3") DSE_DW_C5L(12288, "i0", "b3") DSE_DW_C5L(4096, "i0", "a2") DSE_DW_C5L(14336, "i0", "b2") DSE_DW_C5L(6144, "i0", "a1") DSE_DW_C5L(16384, "i0", "b1") DSE_DW_C5L(8192, "i0", "a0") DSE_DW_C5L(18432, "i0", "b0") \
                DSE_DW_C5L(4096, "i1", "a3") DSE_DW_C5L(14336, "i1", "b3") DSE_DW_C5L(6144, "i1", "a2") DSE_DW_C5L(16384, "i1", "b2") DSE_DW_C5L(8192, "i1", "a1") DSE_DW_C5L(18432, "i1", "b1") \
                "shrq $16, %[v]\n\t" \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" \
                DSE_DW_C5L(6144, "i0", "a3") DSE_DW_C5L(16384, "i0", "b3") DSE_DW_C5L(8192, "i0", "a2") DSE_DW_C5L(18432, "i0", "b2") \
                DSE_DW_C5L(8192, "i1", "a3") DSE_DW_C5L(18432, "i1", "b3") \
                : [v] "+Q"(v), [i0] "=&r"(i0), [i1] "=&R"(i1), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), \
                  [a3] "+r"(a3), [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2), [b3] "+r"(b3) \
                : [c] "r"(tab) \
                : "memory"); \
    } while (0)
#else
#define DSE_DW_COLS5_4(v, tab, a0, a1, a2, a3, b0, b1, b2, b3) \
    do { \
        uint64_t *const sa[4] = {&a0, &a1, &a2, &a3}, *const sb[4] = {&b0, &b1, &b2, &b3}; \
        for (int k = 0; k < 8; k++) \
            for (int j = k > 3 ? k - 3 : 0; j <= k && j < 5; j++) \
                *sa[k - j] += tab[256 * j + ((v >> (8 * k)) & 255)], \
                    *sb[k - j] += tab[256 * (5 + j) + ((v >> (8 * k)) & 255)]; \
    } while (0)
#endif

static inline __attribute__((always_inline)) void dse_dw_cols5_sums(const uint8_t *p0, int64_t u0, int64_t u1,
                                                                    const uint64_t *Q, uint64_t *S, uint64_t *S2)
{
    for (int64_t t = u0; t < u1; t += 4) {
        uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0, v;
        memcpy(&v, p0 + t, 8);
        DSE_DW_COLS5_4(v, Q, a0, a1, a2, a3, b0, b1, b2, b3);
        S[t] = a0, S[t + 1] = a1, S[t + 2] = a2, S[t + 3] = a3;
        S2[t] = b0, S2[t + 1] = b1, S2[t + 2] = b2, S2[t + 3] = b3;
    }
}

/* The sums of the stride-2 packing (cols 2), 8 positions a step: E0 and O0's bytes indexed once for columns 0 and
 * 2 (displacement 2 KiB: Q0 / Q1 and Q3 / Q4), E1's and O1's for one table each. Reads up to 9 bytes past the step.
 * dse_dw_s2_images: image b's positions [b HW, b HW + L + fs) (output t reads S[t], S[t + fs]; L + fs <= HW: the
 * images' ranges do not overlap, unlike the tight planes' of dse_dw_rowsum_images). */
#if defined(__GNUC__) && defined(__x86_64__)
#define DSE_DW_COLS8_2(v, tab, s0, s1, s2, s3, s4, s5, s6, s7)                                                           \
    do {                                                                                                               \
        uint64_t i0, i1;                                                                                               \
        __asm__("movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s0]\n\t"                     \
                DSE_DW_COL(0, "i1") "%[s1]\n\t" DSE_DW_COL(2048, "i1") "%[s0]\n\tshrq $16, %[v]\n\t"                   \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s2]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s1]\n\t" DSE_DW_COL(0, "i1") "%[s3]\n\t"                                    \
                DSE_DW_COL(2048, "i1") "%[s2]\n\tshrq $16, %[v]\n\t"                                                   \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s4]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s3]\n\t" DSE_DW_COL(0, "i1") "%[s5]\n\t"                                    \
                DSE_DW_COL(2048, "i1") "%[s4]\n\tshrq $16, %[v]\n\t"                                                   \
                "movzbl %b[v], %k[i0]\n\tmovzbl %h[v], %k[i1]\n\t" DSE_DW_COL(0, "i0") "%[s6]\n\t"                     \
                DSE_DW_COL(2048, "i0") "%[s5]\n\t" DSE_DW_COL(0, "i1") "%[s7]\n\t"                                    \
                DSE_DW_COL(2048, "i1") "%[s6]\n\t"                                                                     \
                : [v] "+Q"(v), [i0] "=&r"(i0), [i1] "=&R"(i1), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),           \
                  [s3] "+r"(s3), [s4] "+r"(s4), [s5] "+r"(s5), [s6] "+r"(s6), [s7] "+r"(s7)                            \
                : [c] "r"(tab)                                                                                           \
                : "memory");                                                                                           \
    } while (0)
#else
#define DSE_DW_COLS8_2(v, tab, s0, s1, s2, s3, s4, s5, s6, s7) DSE_DW_COLS8_N(v, tab, 2, s0, s1, s2, s3, s4, s5, s6, s7)
#endif

static inline __attribute__((always_inline)) void dse_dw_s2_sums(const uint8_t *P, const dse_dw_groups *gr,
                                                                 int64_t u0, int64_t u1, const uint64_t *Q,
                                                                 uint64_t *S)
{
    const uint8_t *e0 = P + gr->goff[0] + u0, *e1 = P + gr->goff[1] + u0;
    const uint8_t *o0 = P + gr->goff[2] + u0, *o1 = P + gr->goff[3] + u0;
    for (int64_t t = u0; t < u1; t += 8, e0 += 8, e1 += 8, o0 += 8, o1 += 8) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, v;
        memcpy(&v, e0, 8);
        DSE_DW_COLS8_2(v, Q, s0, s1, s2, s3, s4, s5, s6, s7);
        memcpy(&v, o0, 8);
        {
            const uint64_t *c = Q + 768;
            DSE_DW_COLS8_2(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        s7 += Q[256 + e0[8]] + Q[1024 + o0[8]]; /* column 2 of output 7: the next step's first bytes */
        memcpy(&v, e1, 8);
        {
            const uint64_t *c = Q + 512;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        memcpy(&v, o1, 8);
        {
            const uint64_t *c = Q + 1280;
            DSE_DW_BYTES8_64(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
        }
        S[t] = s0, S[t + 1] = s1, S[t + 2] = s2, S[t + 3] = s3;
        S[t + 4] = s4, S[t + 5] = s5, S[t + 6] = s6, S[t + 7] = s7;
    }
}

static void dse_dw_s2_images(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW, int64_t L,
                             const uint64_t *Q, uint64_t *S)
{
    for (int64_t b = 0; b < nb; b++)
        dse_dw_s2_sums(P, gr, b * HW, b * HW + L + gr->fs, Q, S);
}

/* The sums of the 5 x 5 stride-2 packing (cols 4), 8 positions a step: E0's and O0's bytes indexed once for their
 * three column offsets (tables 0-2 and 5-7, 2 KiB apart, as DSE_DW_COLS8), E1's and O1's for their two (tables 3-4
 * and 8-9, as DSE_DW_COLS8_2); the next step's first bytes complete outputs 6 and 7. Reads up to 9 bytes past the
 * step. dse_dw_s25_images: image b's positions [b HW, b HW + L + 2 fs) (L + 2 fs <= HW: no overlap). */
static inline __attribute__((always_inline)) void dse_dw_s25_sums(const uint8_t *P, const dse_dw_groups *gr,
                                                                  int64_t u0, int64_t u1, const uint64_t *Q,
                                                                  uint64_t *S)
{
    const uint8_t *e0 = P + gr->goff[0] + u0, *e1 = P + gr->goff[1] + u0;
    const uint8_t *o0 = P + gr->goff[2] + u0, *o1 = P + gr->goff[3] + u0;
    for (int64_t t = u0; t < u1; t += 8, e0 += 8, e1 += 8, o0 += 8, o1 += 8) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, v;
        memcpy(&v, e0, 8);
        DSE_DW_COLS8(v, Q, s0, s1, s2, s3, s4, s5, s6, s7);
        s6 += Q[512 + e0[8]], s7 += Q[256 + e0[8]] + Q[512 + e0[9]];
        memcpy(&v, o0, 8);
        {
            const uint64_t *c = Q + 1280;
            DSE_DW_COLS8(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
            s6 += c[512 + o0[8]], s7 += c[256 + o0[8]] + c[512 + o0[9]];
        }
        memcpy(&v, e1, 8);
        {
            const uint64_t *c = Q + 768;
            DSE_DW_COLS8_2(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
            s7 += c[256 + e1[8]];
        }
        memcpy(&v, o1, 8);
        {
            const uint64_t *c = Q + 2048;
            DSE_DW_COLS8_2(v, c, s0, s1, s2, s3, s4, s5, s6, s7);
            s7 += c[256 + o1[8]];
        }
        S[t] = s0, S[t + 1] = s1, S[t + 2] = s2, S[t + 3] = s3;
        S[t + 4] = s4, S[t + 5] = s5, S[t + 6] = s6, S[t + 7] = s7;
    }
}

static void dse_dw_s25_images(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW, int64_t L,
                              const uint64_t *Q, uint64_t *S)
{
    for (int64_t b = 0; b < nb; b++)
        dse_dw_s25_sums(P, gr, b * HW, b * HW + L + 2 * gr->fs, Q, S);
}

/* Whether the groups take dse_dw_rowsum3_sums. */
static inline int dse_dw_rows3(const dse_dw_groups *gr)
{
    return gr->ng == 3 && gr->goff[2] - gr->goff[1] == gr->goff[1] - gr->goff[0];
}

/* The packed sums of image b < nb's positions [b HW, b HW + L + 2 fs) (output t reads S[t], S[t + fs], S[t + 2 fs];
 * the positions past them, which no output reads, are not computed; HW: the images' step in the planes). Where the
 * ranges of consecutive images overlap (tight planes: dse_dw_tight) the positions already computed are skipped. */
static inline __attribute__((always_inline)) void dse_dw_rowsum_images(const uint8_t *P, const dse_dw_groups *gr,
                                                                       int64_t nb, int64_t HW, int64_t L,
                                                                       const uint64_t *Q, uint64_t *S)
{
    /* positions per image (fs = 1 for the generic and rows3 sums), the sums' step */
    const int64_t n = L + (gr->cols == 5 ? 4 : 2) * gr->fs, step = gr->cols == 5 ? 4 : 8;
    for (int64_t b = 0, done = 0; b < nb; b++) {
        const int64_t u0 = b * HW > done ? b * HW : done, u1 = b * HW + n;
        if (u0 >= u1)
            continue;
        if (gr->cols == 5)
            dse_dw_cols5_sums(P + gr->goff[0], u0, u1, Q, S, S + gr->s2);
        else if (gr->cols)
            dse_dw_cols3_sums(P + gr->goff[0], u0, u1, Q, S);
        else if (dse_dw_rows3(gr))
            dse_dw_rowsum3_sums(P, gr, u0, u1, Q, S);
        else
            dse_dw_rowsum_sums(P, gr, u0, u1, Q, S);
        done = u0 + (u1 - u0 + step - 1) / step * step;
    }
}

/* Output (b, y, q) = base + the three 21-bit fields of S[t], S[t + fs], S[t + f2] that hold its sums (f2 = 2 fs, or
 * 0 for the stride-2 packing: dse_dw_f2), t = b HW + y WQ + q, stored in the output's order at full[(b Ho + y) Wo + q]
 * (no rows to move afterwards). */
static inline int64_t dse_dw_f2(const dse_dw_groups *gr)
{
    return gr->cols == 2 ? 0 : 2 * gr->fs;
}

static void dse_dw_run_rowsum(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW, int64_t WQ,
                              int64_t Ho, int64_t Wo, const uint64_t *Q, int64_t base, uint64_t *S, int32_t *full)
{
    const uint64_t m = ((uint64_t)1 << DSE_DW_FIELD) - 1;
    const int64_t fs = gr->fs, f2 = dse_dw_f2(gr);
    if (gr->cols == 2)
        dse_dw_s2_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    else if (gr->cols == 4)
        dse_dw_s25_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    else
        dse_dw_rowsum_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t y = 0; y < Ho; y++) {
            const uint64_t *s = S + b * HW + y * WQ;
            int32_t *d = full + (b * Ho + y) * Wo;
            for (int64_t q = 0; q < Wo; q++) {
                uint64_t v = (s[q] & m) + ((s[q + fs] >> DSE_DW_FIELD) & m) + (s[q + f2] >> (2 * DSE_DW_FIELD));
                if (gr->cols == 5) /* kernel rows 3, 4 */
                    v += (s[gr->s2 + q + 3 * fs] & m) + ((s[gr->s2 + q + 4 * fs] >> DSE_DW_FIELD) & m);
                d[q] = (int32_t)(base + (int64_t)v);
            }
        }
}

/* 4 outputs of dse_dw_run_rowsum from s (as int64 lanes, each < 3 2^21); field 2 from s + f2k fs (f2k a constant:
 * dse_dw_f2). */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256i dse_dw_fold4(const uint64_t *s, int64_t fs,
                                                                            const int f2k, __m256i m)
{
    const int64_t f2 = f2k * fs;
    const __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)s), m);
    const __m256i b = _mm256_and_si256(_mm256_srli_epi64(_mm256_loadu_si256((const __m256i *)(s + fs)), DSE_DW_FIELD), m);
    return _mm256_add_epi64(_mm256_add_epi64(a, b),
                            _mm256_srli_epi64(_mm256_loadu_si256((const __m256i *)(s + f2)), 2 * DSE_DW_FIELD));
}

/* The "cols" 5 x 5 packing's rows 3, 4 of 4 outputs (fields 0, 1 of s2[3 fs], s2[4 fs]). */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256i dse_dw_fold4_rows34(const uint64_t *s2, int64_t fs,
                                                                                   __m256i m)
{
    const __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(s2 + 3 * fs)), m);
    return _mm256_add_epi64(
        a, _mm256_and_si256(_mm256_srli_epi64(_mm256_loadu_si256((const __m256i *)(s2 + 4 * fs)), DSE_DW_FIELD), m));
}

/* dse_dw_run_rowsum at the AVX2 level: each row's outputs 8 (or, for the last 4 or fewer, 4) per step; a step's
 * lanes past Wo are overwritten by the next row's store or lie up to 7 past the nb Ho Wo outputs (the buffer's
 * slack), and read S up to 7 entries past what dse_dw_rowsum_images computed (entries of other positions, or the
 * buffer's slack: they only reach those dropped lanes). The fold is compiled for each field-2 offset (f2k 2, or 0
 * for the stride-2 packing: dse_dw_run_s2_avx2). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_dw_fold_avx2(const dse_dw_groups *gr, int64_t nb, int64_t HW, int64_t WQ, int64_t Ho, int64_t Wo, int64_t base,
                 const uint64_t *S, int32_t *full, const int f2k)
{
    const __m256i m = _mm256_set1_epi64x(((int64_t)1 << DSE_DW_FIELD) - 1), vb = _mm256_set1_epi32((int32_t)base);
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const int64_t fs = gr->fs;
    const int c5 = gr->cols == 5;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t y = 0; y < Ho; y++) {
            const uint64_t *s = S + b * HW + y * WQ;
            int32_t *d = full + (b * Ho + y) * Wo;
            int64_t q = 0;
            for (; q + 4 < Wo; q += 8) { /* lanes (q0, q4, q1, q5, ...) as dwords, then in order */
                __m256i lo = dse_dw_fold4(s + q, fs, f2k, m), hi = dse_dw_fold4(s + q + 4, fs, f2k, m);
                if (c5)
                    lo = _mm256_add_epi64(lo, dse_dw_fold4_rows34(s + gr->s2 + q, fs, m)),
                    hi = _mm256_add_epi64(hi, dse_dw_fold4_rows34(s + gr->s2 + q + 4, fs, m));
                const __m256i v = _mm256_permutevar8x32_epi32(_mm256_or_si256(lo, _mm256_slli_epi64(hi, 32)), pick);
                _mm256_storeu_si256((__m256i *)(d + q), _mm256_add_epi32(v, vb));
            }
            if (q < Wo) {
                __m256i lo = dse_dw_fold4(s + q, fs, f2k, m);
                if (c5)
                    lo = _mm256_add_epi64(lo, dse_dw_fold4_rows34(s + gr->s2 + q, fs, m));
                const __m256i v = _mm256_permutevar8x32_epi32(lo, pick);
                _mm_storeu_si128((__m128i *)(d + q), _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_castsi256_si128(vb)));
            }
        }
}

DSE_T_AVX2 static void dse_dw_run_rowsum_avx2(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW,
                                              int64_t WQ, int64_t Ho, int64_t Wo, const uint64_t *Q, int64_t base,
                                              uint64_t *S, int32_t *full)
{
    dse_dw_rowsum_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    dse_dw_fold_avx2(gr, nb, HW, WQ, Ho, Wo, base, S, full, 2);
}

/* The same for the stride-2 packing (cols 2), a function of its own so that the stride-1 packings' code is as it
 * was (a branch in dse_dw_run_rowsum_avx2 spilled registers in their loops). */
DSE_T_AVX2 static void dse_dw_run_s2_avx2(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW,
                                          int64_t WQ, int64_t Ho, int64_t Wo, const uint64_t *Q, int64_t base,
                                          uint64_t *S, int32_t *full)
{
    dse_dw_s2_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    dse_dw_fold_avx2(gr, nb, HW, WQ, Ho, Wo, base, S, full, 0);
}

/* The same for the 5 x 5 stride-2 packing (cols 4). */
DSE_T_AVX2 static void dse_dw_run_s25_avx2(const uint8_t *P, const dse_dw_groups *gr, int64_t nb, int64_t HW,
                                           int64_t WQ, int64_t Ho, int64_t Wo, const uint64_t *Q, int64_t base,
                                           uint64_t *S, int32_t *full)
{
    dse_dw_s25_images(P, gr, nb, HW, (Ho - 1) * WQ + Wo, Q, S);
    dse_dw_fold_avx2(gr, nb, HW, WQ, Ho, Wo, base, S, full, 2);
}

/* The rowsum tables at the AVX-512 level, without packed fields: per tap k the column lutT[w_k] - min (< 2^16) as
 * two 256-byte planes (low bytes, high bytes), LH[k][0 | 1][a]; 64 outputs per step look up their 64 activation
 * bytes in both planes with VBMI permutes (the index's bit 7 picks the table half) and add them as 16-bit sums of
 * low and of high bytes (each < ntap 2^8 <= 2^16 for ntap <= 256), then out = base + lo + 2^8 hi. Returns base. */
static int64_t dse_dw_planes(const int32_t *lutT, const uint8_t *wo, int64_t ntap, uint8_t *LH)
{
    int64_t base = 0;
    for (int64_t k = 0; k < ntap; k++) {
        const int32_t *col = lutT + 256 * (int64_t)wo[k];
        int32_t mn = col[0];
        for (int a = 1; a < 256; a++)
            mn = col[a] < mn ? col[a] : mn;
        base += mn;
        for (int a = 0; a < 256; a++) {
            const uint32_t v = (uint32_t)(col[a] - mn);
            LH[512 * k + a] = (uint8_t)v, LH[512 * k + 256 + a] = (uint8_t)(v >> 8);
        }
    }
    return base;
}

DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_lookup64(__m512i v, __mmask64 h, const uint8_t *t)
{
    return dse_byte_lookup512(v, h, _mm512_loadu_si512(t), _mm512_loadu_si512(t + 64), _mm512_loadu_si512(t + 128),
                              _mm512_loadu_si512(t + 192));
}

/* full[t] for t < L (in steps of 64: up to 63 positions past L, which the buffers' slack holds). */
DSE_T_512 static void dse_dw_run_planes_512(const uint8_t *P, const int64_t *toff, int64_t ntap, int64_t L,
                                            const uint8_t *LH, int64_t base, int32_t *full)
{
    const __m512i z = _mm512_setzero_si512(), vb = _mm512_set1_epi32((int32_t)base);
    for (int64_t t = 0; t < L; t += 64) {
        __m512i l0 = z, l1 = z, h0 = z, h1 = z;
        for (int64_t k = 0; k < ntap; k++) {
            const __m512i v = _mm512_loadu_si512(P + toff[k] + t);
            const __mmask64 hm = _mm512_movepi8_mask(v);
            const __m512i lo = dse_lookup64(v, hm, LH + 512 * k), hi = dse_lookup64(v, hm, LH + 512 * k + 256);
            l0 = _mm512_add_epi16(l0, _mm512_unpacklo_epi8(lo, z)), l1 = _mm512_add_epi16(l1, _mm512_unpackhi_epi8(lo, z));
            h0 = _mm512_add_epi16(h0, _mm512_unpacklo_epi8(hi, z)), h1 = _mm512_add_epi16(h1, _mm512_unpackhi_epi8(hi, z));
        }
        /* words of l0/h0: positions 16 j + 0..7 of 128-bit lane j, l1/h1: 16 j + 8..15; sums as dwords */
        const __m512i s0 = _mm512_add_epi32(_mm512_add_epi32(_mm512_unpacklo_epi16(l0, z), vb),
                                            _mm512_slli_epi32(_mm512_unpacklo_epi16(h0, z), 8)); /* 16j + 0..3 */
        const __m512i s1 = _mm512_add_epi32(_mm512_add_epi32(_mm512_unpackhi_epi16(l0, z), vb),
                                            _mm512_slli_epi32(_mm512_unpackhi_epi16(h0, z), 8)); /* 16j + 4..7 */
        const __m512i s2 = _mm512_add_epi32(_mm512_add_epi32(_mm512_unpacklo_epi16(l1, z), vb),
                                            _mm512_slli_epi32(_mm512_unpacklo_epi16(h1, z), 8)); /* 16j + 8..11 */
        const __m512i s3 = _mm512_add_epi32(_mm512_add_epi32(_mm512_unpackhi_epi16(l1, z), vb),
                                            _mm512_slli_epi32(_mm512_unpackhi_epi16(h1, z), 8)); /* 16j + 12..15 */
        /* 4 x 4 transpose of 128-bit lanes: out block j = (s0, s1, s2, s3) lane j */
        const __m512i a = _mm512_shuffle_i32x4(s0, s1, 0x44), b = _mm512_shuffle_i32x4(s0, s1, 0xEE);
        const __m512i c = _mm512_shuffle_i32x4(s2, s3, 0x44), d = _mm512_shuffle_i32x4(s2, s3, 0xEE);
        _mm512_storeu_si512(full + t, _mm512_shuffle_i32x4(a, c, 0x88));
        _mm512_storeu_si512(full + t + 16, _mm512_shuffle_i32x4(a, c, 0xDD));
        _mm512_storeu_si512(full + t + 32, _mm512_shuffle_i32x4(b, d, 0x88));
        _mm512_storeu_si512(full + t + 48, _mm512_shuffle_i32x4(b, d, 0xDD));
    }
}

/* The groups of the taps (tap k's run starts at toff[k] in the phase planes, its column offset in its plane is
 * colq[k]): a kernel row's taps in one column phase form a group per three column offsets (offsets 3 m + f, f < 3,
 * read by a run starting 3 m bytes after the row's, in field f; a 5 x 5 kernel at stride 1 has 2 groups per row),
 * dse_dw_rowsum_groups of them; the caller checks that they are <= 32. */
static void dse_dw_group(const int64_t *toff, const int64_t *colq, int64_t ntap, dse_dw_groups *gr)
{
    gr->ng = 0, gr->fs = 1, gr->cols = 0, gr->s2 = 0;
    for (int64_t k = 0; k < ntap; k++) {
        const int64_t off = toff[k] - colq[k] % 3;
        int64_t g = 0;
        while (g < gr->ng && gr->goff[g] != off)
            g++;
        if (g == gr->ng)
            gr->goff[gr->ng++] = off;
        gr->tg[k] = g, gr->tf[k] = colq[k] % 3;
    }
}

/* The groups of dse_dw_group for a kh x kw kernel (column stride sw, dilation dw): kh times the distinct (column
 * phase, column offset / 3) of its columns (at most 32: their sums of values < 2^16 then fit a 21-bit field). */
static int64_t dse_dw_rowsum_groups(int64_t kh, int64_t kw, int64_t sw, int64_t dw)
{
    int64_t n = 0;
    for (int64_t j = 0; j < kw; j++) {
        int64_t seen = 0;
        for (int64_t i = 0; i < j && !seen; i++)
            seen = (i * dw) % sw == (j * dw) % sw && (i * dw) / sw / 3 == (j * dw) / sw / 3;
        n += !seen;
    }
    return kh * n;
}

DSE_T_AVX2 static inline __attribute__((always_inline)) __m256i dse_dw_vec(const dse_dw_tap *tp, int64_t t, int mode,
                                                                          int a_signed)
{
    if (mode == 2)
        return _mm256_mullo_epi32(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(tp->f + t))),
                                  _mm256_set1_epi32(tp->wv));
    const __m128i raw = _mm_loadl_epi64((const __m128i *)(tp->p + t));
    const __m256i v = a_signed ? _mm256_cvtepi8_epi32(raw) : _mm256_cvtepu8_epi32(raw);
    return _mm256_mullo_epi32(v, _mm256_set1_epi32(tp->wv));
}

/* Products (modes 1, 2): int32 sums of 16 outputs per step (two independent chains), then 8; the last step may run up to 15
 * positions past L (the caller's buffers have that slack; those outputs are dropped). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_dw_run_avx2_mode(const dse_dw_tap *tp, int64_t ntap, int64_t L, int32_t *full, const int mode, const int a_signed)
{
    int64_t t = 0;
    for (; t + 8 < L; t += 16) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0;
        for (int64_t k = 0; k < ntap; k++) {
            a0 = _mm256_add_epi32(a0, dse_dw_vec(tp + k, t, mode, a_signed));
            a1 = _mm256_add_epi32(a1, dse_dw_vec(tp + k, t + 8, mode, a_signed));
        }
        _mm256_storeu_si256((__m256i *)(full + t), a0);
        _mm256_storeu_si256((__m256i *)(full + t + 8), a1);
    }
    if (t < L) {
        __m256i a0 = _mm256_setzero_si256();
        for (int64_t k = 0; k < ntap; k++)
            a0 = _mm256_add_epi32(a0, dse_dw_vec(tp + k, t, mode, a_signed));
        _mm256_storeu_si256((__m256i *)(full + t), a0);
    }
}

/* Products G[w] * value(a) (mode 1) on vpmaddwd at the AVX2 level, row by row into compacted sums: the taps in pairs
 * (k, k + 1), each pair's activation bytes interleaved and widened into words (a_k, a_k+1) and multiplied by the
 * dword (G[w_k], G[w_k+1]), the two products summed into one int32 lane: one multiply per two taps and 8 outputs.
 * Exact: the values are within [-128, 255] and G[w] is an int16, so no pair sum overflows (only -32768 * -32768
 * twice would). An odd last tap pairs with itself and a weight 0. Output row y of plane b (its run at t = b HW + y WQ
 * in the phase planes) is computed 8 columns at a time and stored at full[(b Ho + y) Wo]: the columns past Wo of a
 * row's last step are overwritten by the next step's store (or lie up to 7 past the nb Ho Wo sums: the buffer's
 * slack), so the sums come out in the output's order with no row moves, and only a row's columns are computed (not
 * the run's WQ - Wo padding columns between rows). Reads up to 15 bytes past a run (the planes' slack). */
#define DSE_DW_PAIRS_MAX 256 /* taps (pair weights on the stack) */
/* 8 lanes of a pair's products: i its taps' 8 activation bytes interleaved, w its weights. */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256i dse_dw_pair_madd(__m128i i, __m256i w,
                                                                                const int a_signed)
{
    return _mm256_madd_epi16(a_signed ? _mm256_cvtepi8_epi16(i) : _mm256_cvtepu8_epi16(i), w);
}

/* The rows of nb planes: pa[q], pb[q] the runs of pair q's taps, W[q] its weights (npair: a constant where the caller
 * passes one, so that the pairs' loop unrolls with its pointers and weights in registers). Rows of Wo = 1, 2 or 4
 * columns whose R = 8 / Wo consecutive rows of a plane lie within 16 bytes of the first one's run ((R - 1) WQ + Wo <=
 * 16) take one 8-lane step per R rows: each tap's 16 bytes gathered by one byte shuffle (gat) into its R runs of Wo,
 * their sums the outputs of R rows, adjacent in the output. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_dw_rows_avx2_body(const uint8_t *const *pa, const uint8_t *const *pb, const __m256i *W, const int64_t npair,
                      int64_t nb, int64_t HW, int64_t WQ, int64_t Ho, int64_t Wo, int64_t R, __m128i gat,
                      int32_t *full, const int a_signed)
{
    for (int64_t b = 0; b < nb; b++)
        for (int64_t y = 0; y < Ho;) {
            const int64_t t = b * HW + y * WQ;
            int32_t *d = full + (b * Ho + y) * Wo;
            if (R > 1 && y + R <= Ho) { /* R rows of Wo in one step */
                __m256i a0 = _mm256_setzero_si256();
                for (int64_t q = 0; q < npair; q++)
                    a0 = _mm256_add_epi32(
                        a0, dse_dw_pair_madd(
                                _mm_unpacklo_epi8(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa[q] + t)), gat),
                                                  _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb[q] + t)), gat)),
                                W[q], a_signed));
                _mm256_storeu_si256((__m256i *)d, a0);
                y += R;
                continue;
            }
            int64_t x = 0;
            for (; x + 8 < Wo; x += 16) { /* two steps (two chains) */
                __m256i a0 = _mm256_setzero_si256(), a1 = a0;
                for (int64_t q = 0; q < npair; q++) {
                    const __m128i u = _mm_loadu_si128((const __m128i *)(pa[q] + t + x));
                    const __m128i v = _mm_loadu_si128((const __m128i *)(pb[q] + t + x));
                    a0 = _mm256_add_epi32(a0, dse_dw_pair_madd(_mm_unpacklo_epi8(u, v), W[q], a_signed));
                    a1 = _mm256_add_epi32(a1, dse_dw_pair_madd(_mm_unpackhi_epi8(u, v), W[q], a_signed));
                }
                _mm256_storeu_si256((__m256i *)(d + x), a0);
                _mm256_storeu_si256((__m256i *)(d + x + 8), a1);
            }
            if (x < Wo) {
                __m256i a0 = _mm256_setzero_si256();
                for (int64_t q = 0; q < npair; q++)
                    a0 = _mm256_add_epi32(
                        a0, dse_dw_pair_madd(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(pa[q] + t + x)),
                                                               _mm_loadl_epi64((const __m128i *)(pb[q] + t + x))),
                                             W[q], a_signed));
                _mm256_storeu_si256((__m256i *)(d + x), a0);
            }
            y++;
        }
}

/* The sums of nb planes' Ho x Wo outputs (mode 1, ntap <= DSE_DW_PAIRS_MAX) into full[(b Ho + y) Wo + x]. */
DSE_T_AVX2 static void dse_dw_rows_avx2(const dse_dw_tap *tp, int64_t ntap, int a_signed, int64_t nb, int64_t HW,
                                        int64_t WQ, int64_t Ho, int64_t Wo, int32_t *full)
{
    const uint8_t *pa[DSE_DW_PAIRS_MAX / 2], *pb[DSE_DW_PAIRS_MAX / 2];
    __m256i W[DSE_DW_PAIRS_MAX / 2];
    const int64_t npair = (ntap + 1) / 2;
    for (int64_t q = 0; q < npair; q++) {
        const int64_t k1 = 2 * q + 1 < ntap ? 2 * q + 1 : 2 * q;
        const int32_t g1 = k1 > 2 * q ? tp[k1].wv : 0;
        pa[q] = tp[2 * q].p, pb[q] = tp[k1].p;
        W[q] = _mm256_set1_epi32((int32_t)((uint32_t)(uint16_t)tp[2 * q].wv | ((uint32_t)(uint16_t)g1 << 16)));
    }
    int64_t R = Wo == 1 || Wo == 2 || Wo == 4 ? 8 / Wo : 1;
    R = (R - 1) * WQ + Wo <= 16 ? R : 1;
    uint8_t g[16];
    for (int64_t i = 0; i < 16; i++) /* lane i < 8: row i / Wo's column i % Wo */
        g[i] = (uint8_t)(i < 8 && R > 1 ? (i / Wo) * WQ + i % Wo : 0x80);
    const __m128i gat = _mm_loadu_si128((const __m128i *)g);
#define DSE_DW_ROWS(np, sg) dse_dw_rows_avx2_body(pa, pb, W, np, nb, HW, WQ, Ho, Wo, R, gat, full, sg)
    if (npair == 5) /* 3x3 */
        a_signed ? DSE_DW_ROWS(5, 1) : DSE_DW_ROWS(5, 0);
    else
        a_signed ? DSE_DW_ROWS(npair, 1) : DSE_DW_ROWS(npair, 0);
#undef DSE_DW_ROWS
}

DSE_T_AVX2 static void dse_dw_run_avx2(const dse_dw_tap *tp, int64_t ntap, int64_t L, int mode, int a_signed,
                                       int32_t *full)
{
    if (mode == 2)
        dse_dw_run_avx2_mode(tp, ntap, L, full, 2, 0);
    else if (a_signed)
        dse_dw_run_avx2_mode(tp, ntap, L, full, 1, 1);
    else
        dse_dw_run_avx2_mode(tp, ntap, L, full, 1, 0);
}

/* The same products at the AVX-512 level: 32 outputs per step (two chains of 16), then 16; the last step may run up
 * to 31 positions past L (the caller's buffers have that slack). */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_dw_vec512(const dse_dw_tap *tp, int64_t t,
                                                                            int mode, int a_signed)
{
    if (mode == 2)
        return _mm512_mullo_epi32(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(tp->f + t))),
                                  _mm512_set1_epi32(tp->wv));
    const __m128i raw = _mm_loadu_si128((const __m128i *)(tp->p + t));
    const __m512i v = a_signed ? _mm512_cvtepi8_epi32(raw) : _mm512_cvtepu8_epi32(raw);
    return _mm512_mullo_epi32(v, _mm512_set1_epi32(tp->wv));
}

DSE_T_512 static inline __attribute__((always_inline)) void
dse_dw_run_512_mode(const dse_dw_tap *tp, int64_t ntap, int64_t L, int32_t *full, const int mode, const int a_signed)
{
    int64_t t = 0;
    for (; t + 16 < L; t += 32) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0;
        for (int64_t k = 0; k < ntap; k++) {
            a0 = _mm512_add_epi32(a0, dse_dw_vec512(tp + k, t, mode, a_signed));
            a1 = _mm512_add_epi32(a1, dse_dw_vec512(tp + k, t + 16, mode, a_signed));
        }
        _mm512_storeu_si512(full + t, a0);
        _mm512_storeu_si512(full + t + 16, a1);
    }
    if (t < L) {
        __m512i a0 = _mm512_setzero_si512();
        for (int64_t k = 0; k < ntap; k++)
            a0 = _mm512_add_epi32(a0, dse_dw_vec512(tp + k, t, mode, a_signed));
        _mm512_storeu_si512(full + t, a0);
    }
}

DSE_T_512 static void dse_dw_run_512(const dse_dw_tap *tp, int64_t ntap, int64_t L, int mode, int a_signed,
                                     int32_t *full)
{
    if (mode == 2)
        dse_dw_run_512_mode(tp, ntap, L, full, 2, 0);
    else if (a_signed)
        dse_dw_run_512_mode(tp, ntap, L, full, 1, 1);
    else
        dse_dw_run_512_mode(tp, ntap, L, full, 1, 0);
}

/* n bytes (n small: a row of a small plane) without a call into the C library: 8-byte moves, the last one
 * overlapping, two (overlapping) 4-byte moves for 4 to 7 bytes, or single bytes below 4. */
static inline void dse_copy_small(uint8_t *d, const uint8_t *s, int64_t n)
{
    if (n < 8) {
        if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, s, 4);
            memcpy(&b, s + n - 4, 4);
            memcpy(d, &a, 4);
            memcpy(d + n - 4, &b, 4);
            return;
        }
        for (int64_t i = 0; i < n; i++)
            d[i] = s[i];
        return;
    }
    for (int64_t i = 0; i + 8 < n; i += 8)
        memcpy(d + i, s + i, 8);
    memcpy(d + n - 8, s + n - 8, 8);
}

/* The sh * sw phase planes (HQ x WQ each, pstep bytes apart) of the zero-padded input plane xs [H, W]; with xtab
 * every byte goes through that 256-entry table. Only the input's positions are written: the padding (pattern 0, or
 * xtab[0]) is the caller's fill of P, the same for every plane of a call; except at column stride 2 without xtab,
 * where a row's last bytes (after its steps of 16 and 8) go as one 16-byte load (where it stays before xend, the
 * input's end) with the lanes past the row (or past the phase rows' WQ columns) zeroed, split as the steps do and
 * stored 8 bytes per phase: the bytes stored past a phase row's input columns are 0, the padding's value, and land
 * in its right padding, in the left padding and columns of the phase plane's next row (written after it), in the
 * next image's plane (the images in increasing order) or in the 64 bytes the caller leaves after each phase plane's
 * last image. */
static void dse_dw_phases(const uint8_t *xs, const uint8_t *xend, int64_t H, int64_t W, int64_t pt, int64_t pl,
                          int64_t sh, int64_t sw, int64_t HQ, int64_t WQ, int64_t pstep, const uint8_t *xtab,
                          uint8_t *P)
{
    int64_t rq = pt / sh, rp = pt % sh; /* padded row r + pt = rq * sh + rp, stepped without divisions */
    const int64_t pc0 = pl % sw, q0 = pl / sw; /* each row's first column: phase pc0, column q0 (divided once) */
    for (int64_t r = 0; r < H; r++, rp = (rp + 1 == sh) ? (rq++, 0) : rp + 1) {
        if (rq >= HQ)
            break;
        uint8_t *prow = P + rp * sw * pstep + rq * WQ;
        const uint8_t *src = xs + r * W;
        if (sw == 1) {
            const int64_t n = W < WQ - pl ? W : WQ - pl;
            if (n > 0 && xtab)
                for (int64_t c = 0; c < n; c++)
                    prow[pl + c] = xtab[src[c]];
            else if (n > 0)
                dse_copy_small(prow + pl, src, n);
            continue;
        }
        /* one sequential pass over the row: padded column c + pl = q * sw + pc goes to phase pc, column q */
        int64_t pc = pc0, q = q0, c = 0;
        if (sw == 2 && !xtab) /* 16 bytes at a time: even ones to phase pc, odd ones to the other (SSE2) */
            for (const __m128i lo8 = _mm_set1_epi16(0xFF); c + 16 <= W && q + 8 + pc <= WQ; c += 16, q += 8) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(src + c));
                _mm_storel_epi64((__m128i *)(prow + pc * pstep + q), _mm_packus_epi16(_mm_and_si128(v, lo8), v));
                _mm_storel_epi64((__m128i *)(prow + (1 - pc) * pstep + q + pc),
                                 _mm_packus_epi16(_mm_srli_epi16(v, 8), v));
            }
        if (sw == 2 && !xtab && c + 8 <= W && q + 4 + pc <= WQ) { /* then 8 (e.g. a whole row of 8): 4 to each */
            const __m128i v = _mm_loadl_epi64((const __m128i *)(src + c)), lo8 = _mm_set1_epi16(0xFF);
            const int32_t e = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_and_si128(v, lo8), v));
            const int32_t d = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_srli_epi16(v, 8), v));
            memcpy(prow + pc * pstep + q, &e, 4);
            memcpy(prow + (1 - pc) * pstep + q + pc, &d, 4);
            c += 8, q += 4;
        }
        /* the row's last bytes: element i goes to phase column q + (pc + i) / 2, so the first 2 (WQ - q) - pc of
         * them have one */
        const int64_t n = W - c < 2 * (WQ - q) - pc ? W - c : 2 * (WQ - q) - pc;
        if (sw == 2 && !xtab && n > 0 && src + c + 16 <= xend) {
            const __m128i lane = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            const __m128i v = _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + c)),
                                            _mm_cmpgt_epi8(_mm_set1_epi8((char)n), lane)),
                          lo8 = _mm_set1_epi16(0xFF);
            _mm_storel_epi64((__m128i *)(prow + pc * pstep + q), _mm_packus_epi16(_mm_and_si128(v, lo8), v));
            _mm_storel_epi64((__m128i *)(prow + (1 - pc) * pstep + q + pc), _mm_packus_epi16(_mm_srli_epi16(v, 8), v));
            continue;
        }
        for (; c < W && q < WQ; c++) {
            prow[pc * pstep + q] = xtab ? xtab[src[c]] : src[c];
            if (++pc == sw)
                pc = 0, q++;
        }
    }
}

/* dse_dw_phases at stride 1 at the AVX-512 level, into planes whose padding is 0 (no xtab: the AVX-512 level
 * translates the whole planes afterwards): each row's W bytes as 16-, 32- or 64-byte loads, the bytes past the row
 * cleared, stored whole. A store's zeros past the row land in its right padding, in the left padding and columns of
 * the next row (written after it), in the bottom padding, in the next image's plane (written after it) or in the
 * buffer's padding after the block's last plane: the caller's order, images in increasing order, keeps every position
 * right. Loads that would pass xend (the input's end) go through a copy. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
dse_dw_plane_s1_512(const uint8_t *xs, const uint8_t *xend, int64_t H, int64_t W, int64_t pt, int64_t pl, int64_t HQ,
                    int64_t WQ, uint8_t *P)
{
    const int64_t n = W < WQ - pl ? W : WQ - pl; /* the row's bytes that the plane holds */
    if (n > 0 && n <= 16) { /* short rows: 16-byte moves */
        const __mmask16 m = (__mmask16)((1u << n) - 1);
        for (int64_t r = 0; r < H && r + pt < HQ; r++) {
            const uint8_t *src = xs + r * W;
            __m128i v;
            if (src + 16 <= xend)
                v = _mm_loadu_si128((const __m128i *)src);
            else {
                uint8_t tmp[16];
                memcpy(tmp, src, (size_t)n);
                v = _mm_loadu_si128((const __m128i *)tmp);
            }
            _mm_storeu_si128((__m128i *)(P + (r + pt) * WQ + pl), _mm_maskz_mov_epi8(m, v));
        }
        return;
    }
    if (n > 0 && n <= 32) { /* 32-byte moves */
        const __mmask32 m = (__mmask32)(n == 32 ? 0xFFFFFFFFu : (1u << n) - 1);
        for (int64_t r = 0; r < H && r + pt < HQ; r++) {
            const uint8_t *src = xs + r * W;
            __m256i v;
            if (src + 32 <= xend)
                v = _mm256_loadu_si256((const __m256i *)src);
            else {
                uint8_t tmp[32];
                memcpy(tmp, src, (size_t)n);
                v = _mm256_loadu_si256((const __m256i *)tmp);
            }
            _mm256_storeu_si256((__m256i *)(P + (r + pt) * WQ + pl), _mm256_maskz_mov_epi8(m, v));
        }
        return;
    }
    for (int64_t r = 0; r < H && r + pt < HQ && n > 0; r++) {
        const uint8_t *src = xs + r * W;
        uint8_t *d = P + (r + pt) * WQ + pl;
        for (int64_t i = 0; i < n; i += 64) {
            const int64_t m = n - i < 64 ? n - i : 64;
            __m512i v;
            if (src + i + 64 <= xend)
                v = _mm512_loadu_si512(src + i);
            else {
                uint8_t tmp[64];
                memcpy(tmp, src + i, (size_t)m);
                v = _mm512_loadu_si512(tmp);
            }
            _mm512_storeu_si512(d + i, _mm512_maskz_mov_epi8(m == 64 ? ~(__mmask64)0 : (((__mmask64)1 << m) - 1), v));
        }
    }
}

/* Small input planes (H W <= 64 bytes) at strides 1 and 2: a block's nbb planes (input planes ld bytes apart) into
 * their phase planes (PS bytes apart, each image's HW bytes apart in them), each by one 64-byte load and, per phase
 * plane and 64 bytes of it, one byte permute with a zero mask (tab: dse_dw_small_tables), stored whole (padding
 * included). For a group of adjacent channels: nld loads per image lstep bytes apart, each holding the planes of
 * lpc channels (n bytes), each followed by its K / nld permutes (the channels' tables, koff: where each one's 64
 * bytes go). A store's bytes past the image's plane
 * land in the next image's (written after it) or in the 64 bytes of padding after each phase plane's last image.
 * Loads that would pass xend go through a copy. */
DSE_T_512 static inline __attribute__((always_inline)) void
dse_dw_small_body_512(const uint8_t *xs, int64_t ld, int64_t nbb, const uint8_t *xend, int64_t n, int64_t lstep,
                      const uint8_t *tab, const uint64_t *msk, const int K, const int nld, const int64_t *koff,
                      int64_t HW, uint8_t *P)
{
    __m512i tb[16];
    __mmask64 mk[16];
    int64_t off[16];
    for (int k = 0; k < K; k++)
        tb[k] = _mm512_loadu_si512(tab + 64 * k), mk[k] = (__mmask64)msk[k], off[k] = koff[k];
    for (int64_t b = 0; b < nbb; b++, xs += ld, P += HW)
        for (int j = 0; j < nld; j++) { /* load j: permutes j K / nld .. (j + 1) K / nld - 1 */
            const uint8_t *s = xs + j * lstep;
            if (b + 8 < nbb)
                __builtin_prefetch(s + 8 * ld, 0, 3);
            __m512i v;
            if (s + 64 <= xend)
                v = _mm512_loadu_si512(s);
            else {
                uint8_t tmp[64] = {0};
                memcpy(tmp, s, (size_t)n);
                v = _mm512_loadu_si512(tmp);
            }
            for (int k = j * (K / nld); k < (j + 1) * (K / nld); k++)
                _mm512_storeu_si512(P + off[k], _mm512_maskz_permutexvar_epi8(mk[k], tb[k], v));
        }
}

#define DSE_DW_SMALL_CASE(K, nld)                                                                                      \
    case K * 8 + nld:                                                                                                  \
        dse_dw_small_body_512(xs, ld, nbb, xend, n, lstep, tab, msk, K, nld, koff, HW, P);                            \
        break;
DSE_T_512 static void dse_dw_small_512(const uint8_t *xs, int64_t ld, int64_t nbb, const uint8_t *xend, int64_t n,
                                       int64_t lstep, const uint8_t *tab, const uint64_t *msk, int K, int nld,
                                       const int64_t *koff, int64_t HW, uint8_t *P)
{
    /* K (1 to 16) permutes per image from nld (1, 2 or 4) loads of n bytes, lstep apart: both constants of each loop,
     * the tables held in registers over the images */
    switch (K * 8 + nld) {
        DSE_DW_SMALL_CASE(1, 1)
        DSE_DW_SMALL_CASE(2, 1)
        DSE_DW_SMALL_CASE(4, 1)
        DSE_DW_SMALL_CASE(8, 1)
        DSE_DW_SMALL_CASE(16, 1)
        DSE_DW_SMALL_CASE(2, 2)
        DSE_DW_SMALL_CASE(4, 2)
        DSE_DW_SMALL_CASE(8, 2)
        DSE_DW_SMALL_CASE(16, 2)
        DSE_DW_SMALL_CASE(4, 4)
        DSE_DW_SMALL_CASE(8, 4)
        DSE_DW_SMALL_CASE(16, 4)
    default:
        dse_dw_small_body_512(xs, ld, nbb, xend, n, lstep, tab, msk, K, nld, koff, HW, P);
    }
}
#undef DSE_DW_SMALL_CASE

/* The permutes of dse_dw_small_512 for input planes H x W with padding pt, pl at strides sh, sw <= 2 into phase planes
 * HQ x WQ (HW = HQ WQ): byte j of phase f = (ph, pw)'s plane is input byte tab[64 (f nch + j / 64) + j % 64] where
 * that mask bit is set (padded position (sh qy + ph, sw qx + pw) inside the input), else 0. Returns the 64-byte
 * chunks per phase plane (nch, 1 or 2), or 0 when the shape does not fit (H W > 64, HW > 128, strides above 2). */
static int dse_dw_small_tables(int64_t H, int64_t W, int64_t pt, int64_t pl, int64_t sh, int64_t sw, int64_t HQ,
                               int64_t WQ, uint8_t *tab, uint64_t *msk)
{
    const int64_t HW = HQ * WQ, nch = (HW + 63) / 64;
    if (H * W > 64 || H < 1 || W < 1 || HW > 128 || sh < 1 || sw < 1 || sh > 2 || sw > 2)
        return 0;
    for (int64_t f = 0; f < sh * sw; f++)
        for (int64_t j = 0; j < 64 * nch; j++) {
            const int64_t r = (j / WQ) * sh + f / sw - pt, col = (j % WQ) * sw + f % sw - pl, i = f * nch + j / 64;
            if (j % 64 == 0)
                msk[i] = 0;
            tab[64 * i + j % 64] = 0;
            if (j < HW && r >= 0 && r < H && col >= 0 && col < W) {
                tab[64 * i + j % 64] = (uint8_t)(r * W + col);
                msk[i] |= (uint64_t)1 << (j % 64);
            }
        }
    return (int)nch;
}

/* dse_dw_phases at column stride 2 for rows of up to 32 bytes (the SSE2 splitter of dse_dw_phases takes 16 at a time)
 * at the AVX-512 level, into phase planes whose padding is 0 (no xtab: the AVX-512 level translates the whole planes
 * afterwards). A row shorter than 16 bytes is read as 16 bytes (through a copy where that would pass xend, the input's
 * end), one byte shuffle splits it into its even and odd bytes, and each half is stored as 16 bytes with the bytes past
 * it cleared; a longer one is read as 32 bytes and split by one VBMI permute, its halves stored the same way (32-byte
 * stores over the 9-byte phase rows of 16-wide planes ran 0.7x). The cleared bytes land in the row's right padding, in the left padding and columns of the phase plane's next row
 * (written after it), in its bottom padding, in the next image's plane (written after it: the caller goes through
 * the images in increasing order), or in the 64 bytes of padding the caller leaves after each phase plane's last
 * image. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) static void
dse_dw_phases_s2_512(const uint8_t *xs, const uint8_t *xend, int64_t H, int64_t W, int64_t pt, int64_t pl, int64_t sh,
                     int64_t HQ, int64_t WQ, int64_t pstep, uint8_t *P)
{
    const __m128i deint = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    /* padded column c + pl of an even c = 2 i goes to phase pl % 2, column i + pl / 2; of an odd c = 2 i + 1 to the
     * other phase, column i + (pl + 1) / 2; the counts the plane holds of each */
    const int64_t pe = pl & 1, qe = pl >> 1, qo = (pl + 1) >> 1;
    int64_t ne = (W + 1) / 2, no = W / 2;
    ne = WQ - qe < ne ? WQ - qe : ne;
    no = WQ - qo < no ? WQ - qo : no;
    int64_t rq = pt / sh, rp = pt % sh;
    if (W >= 16 && W <= 32) { /* rows of 16 to 32 bytes: one 32-byte load and one byte permute (even bytes low, odd
                               * high) per row, each half stored as 16 bytes with the bytes past it cleared */
        uint8_t ix[32];
        for (int j = 0; j < 16; j++)
            ix[j] = (uint8_t)(2 * j), ix[16 + j] = (uint8_t)(2 * j + 1);
        const __m256i dz = _mm256_loadu_si256((const __m256i *)ix);
        const __mmask16 he = (__mmask16)(ne >= 16 ? 0xFFFFu : ne > 0 ? (1u << ne) - 1 : 0);
        const __mmask16 ho = (__mmask16)(no >= 16 ? 0xFFFFu : no > 0 ? (1u << no) - 1 : 0);
        for (int64_t r = 0; r < H && rq < HQ; r++, rp = (rp + 1 == sh) ? (rq++, 0) : rp + 1) {
            const uint8_t *src = xs + r * W;
            __m256i v;
            if (src + 32 <= xend)
                v = _mm256_loadu_si256((const __m256i *)src);
            else {
                uint8_t tmp[32];
                memcpy(tmp, src, (size_t)W);
                v = _mm256_loadu_si256((const __m256i *)tmp);
            }
            v = _mm256_permutexvar_epi8(dz, v);
            if (ne > 0)
                _mm_storeu_si128((__m128i *)(P + (rp * 2 + pe) * pstep + rq * WQ + qe),
                                 _mm_maskz_mov_epi8(he, _mm256_castsi256_si128(v)));
            if (no > 0)
                _mm_storeu_si128((__m128i *)(P + (rp * 2 + 1 - pe) * pstep + rq * WQ + qo),
                                 _mm_maskz_mov_epi8(ho, _mm256_extracti128_si256(v, 1)));
        }
        return;
    }
    const __mmask16 me = (__mmask16)(ne > 0 ? (1u << ne) - 1 : 0), mo = (__mmask16)(no > 0 ? (1u << no) - 1 : 0);
    for (int64_t r = 0; r < H && rq < HQ; r++, rp = (rp + 1 == sh) ? (rq++, 0) : rp + 1) {
        const uint8_t *src = xs + r * W;
        __m128i v;
        if (src + 16 <= xend)
            v = _mm_loadu_si128((const __m128i *)src);
        else {
            uint8_t tmp[16];
            memcpy(tmp, src, (size_t)W);
            v = _mm_loadu_si128((const __m128i *)tmp);
        }
        v = _mm_shuffle_epi8(v, deint);
        if (ne > 0)
            _mm_storeu_si128((__m128i *)(P + (rp * 2 + pe) * pstep + rq * WQ + qe), _mm_maskz_mov_epi8(me, v));
        if (no > 0)
            _mm_storeu_si128((__m128i *)(P + (rp * 2 + 1 - pe) * pstep + rq * WQ + qo),
                             _mm_maskz_mov_epi8(mo, _mm_srli_si128(v, 8)));
    }
}

/* Prefetch the cache lines of n bytes at p, for a read or (write = 1) a write, into L1 or (l2 = 1) L2 only. */
static inline void dse_prefetch_lines(const void *p, int64_t n, const int write, const int l2)
{
    for (uintptr_t a = (uintptr_t)p & ~(uintptr_t)63; a < (uintptr_t)p + (uintptr_t)n; a += 64)
        if (write && l2)
            __builtin_prefetch((const void *)a, 1, 2);
        else if (write)
            __builtin_prefetch((const void *)a, 1, 3);
        else if (l2)
            __builtin_prefetch((const void *)a, 0, 2);
        else
            __builtin_prefetch((const void *)a, 0, 3);
}

/* d[i] = tab[s[i]] for i < n (n a multiple of 64), 64 bytes per step at the AVX-512 (VBMI) level: two two-table byte
 * permutes give the entries of the index's low 7 bits from each half of the table, its bit 7 picks the half. */
DSE_T_512 static void dse_translate_512(const uint8_t *s, int64_t n, const uint8_t *tab, uint8_t *d)
{
    const __m512i t0 = _mm512_loadu_si512(tab), t1 = _mm512_loadu_si512(tab + 64);
    const __m512i t2 = _mm512_loadu_si512(tab + 128), t3 = _mm512_loadu_si512(tab + 192);
    for (int64_t i = 0; i < n; i += 64) {
        const __m512i v = _mm512_loadu_si512(s + i);
        _mm512_storeu_si512(d + i, dse_byte_lookup512(v, _mm512_movepi8_mask(v), t0, t1, t2, t3));
    }
}

/* The same with AVX2, 32 bytes per step: the table's 16 runs of 16 entries held in 16 ymm, each looked up by the low
 * nibbles (vpshufb) and kept where the high nibble selects that run. */
DSE_T_AVX2 static void dse_translate_avx2(const uint8_t *s, int64_t n, const uint8_t *tab, uint8_t *d)
{
    __m256i t[16];
    for (int g = 0; g < 16; g++)
        t[g] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tab + 16 * g)));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < n; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(s + i));
        const __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
        __m256i r = _mm256_setzero_si256();
        for (int g = 0; g < 16; g++)
            r = _mm256_or_si256(r, _mm256_and_si256(_mm256_cmpeq_epi8(hi, _mm256_set1_epi8((char)g)),
                                                    _mm256_shuffle_epi8(t[g], lo)));
        _mm256_storeu_si256((__m256i *)(d + i), r);
    }
}

/* d[i] = tab[s[i]] for i < n (s == d allowed): 64 bytes per step at the AVX-512 level, 32 at AVX2, else byte by
 * byte. */
static void dse_translate(int level, const uint8_t *s, int64_t n, const uint8_t *tab, uint8_t *d)
{
    int64_t i = 0;
    if (level >= DSE_ISA_AVX512)
        dse_translate_512(s, i = n / 64 * 64, tab, d);
    else if (level >= DSE_ISA_AVX2)
        dse_translate_avx2(s, i = n / 32 * 32, tab, d);
    for (; i < n; i++)
        d[i] = tab[s[i]];
}

static void dse_scale_runs(int level, const void *a, int kind, int64_t nrun, int64_t S, const dse_scaling *sc,
                           int64_t c, void *o, int64_t ld);

/* "values" products on VNNI (AVX512-VNNI at the AVX-512 level) when every weight factor G[w] of the output channel
 * fits a signed byte (the exact product: the weight's value). The taps that read the same 4-byte window of a phase
 * plane's row (at stride 1 a kernel row up to 4 wide; at stride 2 a row's taps of one column phase) form a quad q,
 * whose run starts at gq->goff[q]; its weight dword wq[q] holds G[w] of each of its taps at the tap's byte (column
 * offset mod 4), 0 elsewhere. Only the Ho Wo outputs of each plane are computed, 16 at a time in their output order:
 * output (y, x) reads the window P[goff[q] + y WQ + x .. + 3], and the windows of outputs o0 .. o0 + 15 (o0 a
 * multiple of 16; past Ho Wo they are dropped) come from one 64-byte load at their first one's position by one byte
 * permute whose index depends only on o0 mod Wo (dse_dw_quad_tables: one table per step of the period, each window
 * within the 64 bytes). One vpdpbusd adds a quad's products (activation bytes unsigned times weight bytes signed, 4
 * per int32 lane, wrapping, no saturation). Signed activations are read as a + 128 (XOR 0x80) and init = -128 * (sum
 * of the channel's G[w]) takes that back out (the padding's pattern 0 reads 128 and contributes 0 as well); the int32
 * result is exact whenever the true sum fits int32 (fits32). */

/* The quads of the taps (tap k's run starts at toff[k], its column offset in its phase plane is colq[k]); 0 when
 * there would be more than 32. */
static int dse_dw_quads(const int64_t *toff, const int64_t *colq, int64_t ntap, dse_dw_groups *gq)
{
    gq->ng = 0;
    for (int64_t k = 0; k < ntap; k++) {
        const int64_t off = toff[k] - (colq[k] & 3);
        int64_t g = 0;
        while (g < gq->ng && gq->goff[g] != off)
            g++;
        if (g == gq->ng) {
            if (gq->ng == 32)
                return 0;
            gq->goff[gq->ng++] = off;
        }
        gq->tg[k] = g, gq->tf[k] = colq[k] & 3;
    }
    return 1;
}

/* The permute indices of the steps (16 outputs from o0 = 16 s on) of a plane of Wo-wide output rows WQ bytes apart:
 * byte 4 i + j of table s is the offset of output o0 + i's window byte j from output o0's position; the tables repeat
 * every Wo / gcd(16, Wo) steps. Returns that period (<= 16), or 0 when it is longer or a window leaves the 64 bytes. */
static int64_t dse_dw_quad_tables(int64_t Wo, int64_t WQ, uint8_t *tab)
{
    int64_t g = 16, b = Wo;
    while (b) {
        const int64_t r = g % b;
        g = b, b = r;
    }
    const int64_t period = Wo / g;
    if (period > 16)
        return 0;
    for (int64_t s = 0; s < period; s++)
        for (int64_t i = 0; i < 16; i++) {
            const int64_t o0 = 16 * s, o = o0 + i;
            const int64_t off = (o / Wo - o0 / Wo) * WQ + o % Wo - o0 % Wo;
            if (off + 3 > 63)
                return 0;
            for (int64_t j = 0; j < 4; j++)
                tab[64 * s + 4 * i + j] = (uint8_t)(off + j);
        }
    return period;
}

/* Output channel wo's quad weights wq[] and init; 0 when a G[w] does not fit a signed byte. */
static int dse_dw_quad_weights(const int16_t *gtab, const uint8_t *wo, int64_t ntap, const dse_dw_groups *gq,
                               int a_signed, int32_t *wq, int32_t *init)
{
    int32_t sum = 0;
    memset(wq, 0, (size_t)gq->ng * sizeof(int32_t));
    for (int64_t k = 0; k < ntap; k++) {
        const int32_t g = gtab[wo[k]];
        if (g < -128 || g > 127)
            return 0;
        wq[gq->tg[k]] = (int32_t)((uint32_t)wq[gq->tg[k]] | ((uint32_t)(uint8_t)(int8_t)g << (8 * gq->tf[k])));
        sum += g;
    }
    *init = a_signed ? -128 * sum : 0;
    return 1;
}

/* The steps of a block of nb planes (HW bytes apart in each phase plane) with Ho Wo outputs each: step s computes
 * outputs o0 .. o0 + 15 of plane b (o0 a multiple of 16), reading the windows at off[s] = b HW + (o0 / Wo) WQ + o0 %
 * Wo (plus each quad's goff) with table tab[s]. Its int32 sums go to full[dst[s]] = full[b Ho Wo + o0] (the last step
 * of a plane writes up to 15 entries past it, into the next plane's, written after it, or the buffer's slack); its
 * cnt[s] = min(16, Ho Wo - o0) scaled outputs to element odst[s] = b ld + o0 of the block's output. Returns the steps
 * of one plane (the steps of nbb planes are the first nbb times that many). */
static int64_t dse_dw_quad_steps(int64_t nb, int64_t HW, int64_t WQ, int64_t Ho, int64_t Wo, int64_t period,
                                 int64_t ld, int64_t *off, int64_t *dst, int64_t *odst, uint8_t *tab, uint8_t *cnt)
{
    const int64_t S = Ho * Wo, per = (S + 15) / 16;
    for (int64_t b = 0, s = 0; b < nb; b++)
        for (int64_t o0 = 0; o0 < S; o0 += 16, s++) {
            off[s] = b * HW + (o0 / Wo) * WQ + o0 % Wo, dst[s] = b * S + o0, odst[s] = b * ld + o0;
            tab[s] = (uint8_t)((o0 / 16) % period), cnt[s] = (uint8_t)(S - o0 < 16 ? S - o0 : 16);
        }
    return per;
}

/* A channel's scaling constants in registers (dse_scale512_init), and the AVX-512 scaling pass's operations on 16
 * int32 sums (dse_scale16_i32: the same bits as dse_scale_runs at that level), defined with the pass. */
typedef struct {
    __m512d sa, f;
    __m512 b, lo, hi, qs, qlo, qhi;
    const float *add; /* with a fused Add: the other operand and the patterns' output at the run's output (add_at) */
    uint8_t *qout;
    int stream; /* the float32 output by non-temporal stores where aligned (dse_scale_run_512 with sc->stream) */
    int drop;   /* with add and quant: the sum not written (dse_scaling.drop) */
} dse_scale512;
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale16_i32(const dse_scale512 *v, __m512i s, void *o,
                                                                           int64_t j, int64_t n, const int act,
                                                                           const int quant, const int add);
/* The certified single-precision patterns of 16 sums (dse_qfast_out16), defined with the pass. */
typedef struct dse_qfast_s dse_qfast;
DSE_T_512 static inline __attribute__((always_inline)) void dse_qfast_out16(const dse_qfast *F, const dse_scale512 *v,
                                                                           const dse_scaling *sc, int64_t c,
                                                                           __m512i x, uint8_t *o, int64_t n,
                                                                           const int sgn, const int clamp);

DSE_T_VNNI512 static inline __attribute__((always_inline)) __m512i dse_dw_quad(const uint8_t *p, __m512i idx, __m512i w,
                                                                              __m512i acc, const int a_signed)
{
    __m512i v = _mm512_loadu_si512(p); /* reads 63 bytes past the window's position */
    if (a_signed)
        v = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    return _mm512_dpbusd_epi32(acc, _mm512_permutexvar_epi8(idx, v), w);
}

/* The first ns steps (dse_dw_quad_steps), four at a time (four independent chains), then one at a time; each step's
 * sums stored at full + dst[s], or with v (act < 0: none) scaled in registers, its cnt[s] outputs at element dst[s] =
 * odst[s] of o. */
DSE_T_VNNI512 static inline __attribute__((always_inline)) void
dse_dw_quads_body(const uint8_t *P, const dse_dw_groups *gq, const int32_t *wq, int32_t init, int64_t ns,
                  const int64_t *off, const int64_t *dst, const uint8_t *tab, const uint8_t *tabs, int32_t *full,
                  const int a_signed, const dse_scale512 *v, const uint8_t *cnt, void *o, const int act,
                  const int quant, const int add, const dse_qfast *F, const int fast, const int sgn, const int clamp)
{
#define DSE_DW_QUAD_OUT(a, s)                                                                                          \
    do {                                                                                                               \
        if (act < 0)                                                                                                   \
            _mm512_storeu_si512(full + dst[s], a);                                                                     \
        else if (fast)                                                                                                 \
            dse_qfast_out16(F, v, NULL, 0, a, (uint8_t *)o + dst[s], cnt[s], sgn, clamp);                              \
        else                                                                                                           \
            dse_scale16_i32(v, a, o, dst[s], cnt[s], act, quant, add);                                                 \
    } while (0)
    const __m512i vi = _mm512_set1_epi32(init);
    const int64_t ng = gq->ng;
    int64_t s = 0;
    for (; s + 4 <= ns; s += 4) {
        const __m512i i0 = _mm512_loadu_si512(tabs + 64 * tab[s]), i1 = _mm512_loadu_si512(tabs + 64 * tab[s + 1]);
        const __m512i i2 = _mm512_loadu_si512(tabs + 64 * tab[s + 2]), i3 = _mm512_loadu_si512(tabs + 64 * tab[s + 3]);
        const uint8_t *p0 = P + off[s], *p1 = P + off[s + 1], *p2 = P + off[s + 2], *p3 = P + off[s + 3];
        __m512i a0 = vi, a1 = vi, a2 = vi, a3 = vi;
        for (int64_t g = 0; g < ng; g++) {
            const __m512i w = _mm512_set1_epi32(wq[g]);
            const int64_t go = gq->goff[g];
            a0 = dse_dw_quad(p0 + go, i0, w, a0, a_signed);
            a1 = dse_dw_quad(p1 + go, i1, w, a1, a_signed);
            a2 = dse_dw_quad(p2 + go, i2, w, a2, a_signed);
            a3 = dse_dw_quad(p3 + go, i3, w, a3, a_signed);
        }
        DSE_DW_QUAD_OUT(a0, s); /* in step order: a plane's last step before the next one's first */
        DSE_DW_QUAD_OUT(a1, s + 1);
        DSE_DW_QUAD_OUT(a2, s + 2);
        DSE_DW_QUAD_OUT(a3, s + 3);
    }
    for (; s < ns; s++) {
        const __m512i i0 = _mm512_loadu_si512(tabs + 64 * tab[s]);
        __m512i a0 = vi;
        for (int64_t g = 0; g < ng; g++)
            a0 = dse_dw_quad(P + off[s] + gq->goff[g], i0, _mm512_set1_epi32(wq[g]), a0, a_signed);
        DSE_DW_QUAD_OUT(a0, s);
    }
#undef DSE_DW_QUAD_OUT
}

DSE_T_VNNI512 static void dse_dw_run_quads_512(const uint8_t *P, const dse_dw_groups *gq, const int32_t *wq,
                                               int32_t init, int64_t ns, const int64_t *off, const int64_t *dst,
                                               const uint8_t *tab, const uint8_t *tabs, int a_signed, int32_t *full)
{
    if (a_signed)
        dse_dw_quads_body(P, gq, wq, init, ns, off, dst, tab, tabs, full, 1, NULL, NULL, NULL, -1, 0, 0, NULL, 0, 0, 0);
    else
        dse_dw_quads_body(P, gq, wq, init, ns, off, dst, tab, tabs, full, 0, NULL, NULL, NULL, -1, 0, 0, NULL, 0, 0, 0);
}

/* The same steps scaled in registers (sc, channel c): cnt[s] outputs of step s at element odst[s] of o; defined with
 * the scaling pass. */
static void dse_dw_run_quads_scaled_512(const uint8_t *P, const dse_dw_groups *gq, const int32_t *wq, int32_t init,
                                        int64_t ns, const int64_t *off, const int64_t *odst, const uint8_t *tab,
                                        const uint8_t *cnt, const uint8_t *tabs, int a_signed, const dse_scaling *sc,
                                        int64_t c, void *o);

/* Moves image b's row y of sums (Wo elements of esz bytes) from b HW + y WQ to b Ho Wo + y Wo, in place, for b < nb:
 * the sums of each image's plane become one run of Ho Wo (each destination lies at or before its source). */
static void dse_dw_compact(void *f, int64_t esz, int64_t nb, int64_t HW, int64_t WQ, int64_t Ho, int64_t Wo)
{
    if (HW == Ho * Wo)
        return;
    const int64_t n = Wo * esz; /* bytes per row; copied forward in 8-byte words, each loaded before it is stored */
    char *p = (char *)f;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t y = 0; y < Ho; y++) {
            const char *s = p + (b * HW + y * WQ) * esz;
            char *d = p + (b * Ho * Wo + y * Wo) * esz;
            int64_t i = 0;
            for (; i + 8 <= n; i += 8) {
                uint64_t v;
                memcpy(&v, s + i, 8);
                memcpy(d + i, &v, 8);
            }
            for (; i < n; i++)
                d[i] = s[i];
        }
}

/* The same for int32 sums at the AVX-512 level, 16 positions per step: vb holds bit u = whether plane position u (u <
 * HW + 16, periodic in HW) is an output (row < Ho, column < Wo); each step's valid lanes are compressed in a register
 * and stored whole at the next output (its other lanes are overwritten by the next store or lie past the outputs).
 * In place: a step stores at or before the positions it has loaded. n: the run's positions. */
DSE_T_512 static void dse_dw_compact_512(int32_t *f, int64_t n, const uint8_t *vb, int64_t HW)
{
    int64_t d = 0, u = 0;
    for (int64_t t = 0; t < n; t += 16) {
        uint64_t w;
        memcpy(&w, vb + (u >> 3), 8);
        const __mmask16 m = (__mmask16)(w >> (u & 7));
        _mm512_storeu_si512(f + d, _mm512_maskz_compress_epi32(m, _mm512_loadu_si512(f + t)));
        d += __builtin_popcount((unsigned)m);
        for (u += 16; u >= HW; u -= HW)
            ;
    }
}

/* The tight planes of "rowsum" at stride 1 (dse_dw_conv): the padded plane's rows, WQ0 bytes at the standard layout
 * (pl left padding columns, the W input columns, the right padding), at a step of *WQ = max(Wo, pl + W, WQ0 - pl)
 * (<= WQ0) instead: output (y, x)'s taps read padded columns up to WQ0 - 1, and a column c >= *WQ of row r is read in
 * row r + 1 at column c - *WQ < pl, a left padding column (pattern 0, never written by the input copies); the last
 * row of an image reads there in the next image's plane, or in the zeroed slack after the block. The images' planes
 * lie *HS = (HQ - ov) *WQ bytes apart, ov = min(top padding rows, bottom padding rows) rows of each plane's bottom
 * padding being the next plane's top padding (both only ever zero). The sums S then cover ~*HS positions per image
 * instead of HQ WQ0 (e.g. 3x3 pad 1 on 8x8 planes: 81 instead of 100). */
static void dse_dw_tight(int64_t H, int64_t W, int64_t pt, int64_t pl, int64_t HQ, int64_t WQ0, int64_t Wo,
                         int64_t *WQ, int64_t *HS)
{
    int64_t q = pl + W > Wo ? pl + W : Wo;
    q = WQ0 - pl > q ? WQ0 - pl : q;
    q = q < WQ0 ? q : WQ0;
    const int64_t pb = HQ - (pt + H < HQ ? pt + H : HQ), ov = pt < pb ? pt : pb;
    *WQ = q, *HS = (HQ - (ov > 0 ? ov : 0)) * q;
}

/* Below the AVX-512 level, blocks of more than one image only for planes of fewer padded positions than this (but
 * for "values" and "rowsum", whose sums come out in the output's order at any plane size). */
#define DSE_DW_SMALL 64

/* Writes int64 sums into out, or (with sc) the scaled outputs (float32, or uint8 patterns) into outs.
 * Work is split over (channel, block of images): a block's nb planes (nb = block / HW, at least 1) of one input channel lie one after the other
 * (HW = HQ WQ bytes apart) in each of its phase planes (nb HW bytes apart), so every tap reads one contiguous run
 * P + toff[k] + t over all of them, t < (nb - 1) HW + L: the per-plane work (tables, tap set-up, the scaling
 * call) is done once per block, and the sums of each image's plane are then moved together and scaled as nb runs.
 * Small planes on VNNI quads take the block's channels in groups (gsz adjacent channels in turn, their planes in
 * gsz phase buffers) so that each image's 64-byte line of input is loaded once for all of them. */
static int dse_dw_conv(int level, const uint8_t *x, int64_t B, int64_t C, int64_t H, int64_t W, const uint8_t *wp,
                       int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                       int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const int32_t *lutT, const int16_t *ftab,
                       const int16_t *gtab, int64_t bound, int mode, int a_signed, const uint8_t *xtab,
                       int64_t *out, const dse_scaling *sc, void *outs, int64_t block, int vnni, int nt)
{
    const int64_t og = Cout / C, ntap = kh * kw;
    const int64_t HQ = (Ho - 1) + ((kh - 1) * dh) / sh + 1, WQ0 = (Wo - 1) + ((kw - 1) * dw) / sw + 1;
    /* "rowsum" below the AVX-512 level at stride 1 packs the padded planes tighter (dse_dw_tight): rows of WQ <= WQ0
     * bytes, a row's right padding read in the next row's left padding, and the images' planes HS bytes apart, the
     * bottom padding rows of one being the top padding rows of the next: fewer positions to sum */
    const int tight = mode == 3 && level < DSE_ISA_AVX512 && sh == 1 && sw == 1;
    int64_t WQ = WQ0, HS = HQ * WQ0;
    if (tight)
        dse_dw_tight(H, W, pt, pl, HQ, WQ0, Wo, &WQ, &HS);
    const int64_t HW = HQ * WQ;
    const int64_t L = (Ho - 1) * WQ + Wo, slack = 128; /* the AVX-512 blocks may run 63 positions past a run */
    const int fits32 = mode == 3 || (level >= DSE_ISA_AVX2 && ntap * bound < 2147483648LL);
    /* "values" at the AVX2 level: dse_dw_rows_avx2, its sums already in the output's order (blocks of images of any
     * plane size: it computes no padding rows between the planes and moves no rows) */
    const int rows = mode == 1 && fits32 && level == DSE_ISA_AVX2 && ntap <= DSE_DW_PAIRS_MAX;
    int64_t nb = block / HW; /* "rowsum" below the AVX-512 level: dse_dw_run_rowsum, also in the output's order */
    nb = nb < 1 || (level < DSE_ISA_AVX512 && HW >= DSE_DW_SMALL && !rows && mode != 3) ? 1 : (nb > B ? B : nb);
    /* phase planes PS bytes apart: the block's planes and 64 bytes of padding (dse_dw_phases_s2_512's stores) */
    /* (a tight block's planes end at (nb - 1) HS + HW <= nb HW) */
    const int64_t nblk = (B + nb - 1) / nb, PS = nb * HW + 64, LB = (nb - 1) * HW + L;
    /* prefetched: with one image per block the block after next into L1; else the next block into L2 (a block's
     * planes, often a multiple of 4 KiB apart, share a few L1 sets) */
    const int64_t ahead = nb > 1 ? 1 : 2;
    const int64_t np = sh * sw * PS + slack;
    /* with xtab at the AVX-512 level: the planes are copied as they are into PR (padding 0) and all of PR, padding
     * included, translated into P 64 bytes per step (npr: np rounded up to 64) */
    const int xt512 = xtab && level >= DSE_ISA_AVX512;
    const int64_t npr = (np + 63) / 64 * 64;
    /* rowsum at the AVX-512 level: byte planes of each tap's column (dse_dw_run_planes_512) when a block's run has at
     * least 64 output positions (its steps of 64 are then mostly used) */
    const int planes = mode == 3 && level >= DSE_ISA_AVX512 && ntap <= 256 && LB >= 64;
    const int ordered = rows || (mode == 3 && !planes); /* sums in the output's order: nothing to move */
    const int s2_512 = level >= DSE_ISA_AVX512 && sh <= 2 && sw == 2 && W <= 32; /* dse_dw_phases_s2_512 */
    const int s1_512 = level >= DSE_ISA_AVX512 && sh == 1 && sw == 1; /* dse_dw_plane_s1_512 (padding 0) */
    uint8_t smtab[16 * 64]; /* dse_dw_small_512 for blocks of small planes: 4 phases of 2 chunks at most, per channel */
    uint64_t smsk[16];
    int64_t smoff[16];
    const int small = (s1_512 || s2_512) && nb > 1 ? dse_dw_small_tables(H, W, pt, pl, sh, sw, HQ, WQ, smtab, smsk) : 0;
    const uint8_t *xend = x + B * C * H * W;
    const int quads = mode == 1 && fits32 && level >= DSE_ISA_AVX512 && vnni && dse_cpu_vnni(level);
    /* the blocks in image-major order where no per-channel table is built ("values", "factor" below the AVX-512
     * level): the next block is the next channel's planes of the same images, adjacent in memory (channel-major, the
     * blocks would read each image's planes a page or more apart) */
    const int imajor = (mode == 1 || mode == 2) && !quads && level < DSE_ISA_AVX512;
    /* VNNI quads on small planes without xtab: gsz adjacent channels (C a multiple of gsz, at most 16 permutes) in
     * turn per block of images, their planes copied into gsz phase buffers (npr bytes apart) from one 64-byte load
     * per lpc channels (lpc H W <= 64 bytes) and image, at most 4 loads: a channel's planes lie C H W bytes apart, a
     * new page each, so each image's lines are loaded once for the group (or, for 64-byte planes, one after the
     * other) and the group's outputs of each image written one after the other */
    int64_t gsz = 1, lpc = 1; /* channels in turn per block, channels per 64-byte load */
    const int64_t nsm = sh * sw * small;  /* tables per channel */
    while (small && quads && !xtab && 2 * gsz * nsm <= 16 && C % (2 * gsz) == 0 &&
           (2 * gsz * H * W <= 64 || 2 * gsz / lpc <= 4))
        gsz *= 2, lpc = gsz * H * W <= 64 ? gsz : lpc;
    for (int64_t k = 0; small && k < gsz * nsm; k++) { /* chunk k: channel k / nsm, phase (k % nsm) / small, its 64
                                                        * bytes k % small */
        smoff[k] = (k / nsm) * npr + ((k % nsm) / small) * PS + 64 * (k % small);
        for (int64_t j = 0; k >= nsm && j < 64; j++)
            smtab[64 * k + j] = (uint8_t)(smtab[64 * (k % nsm) + j] + (k / nsm % lpc) * H * W);
        smsk[k] = smsk[k % nsm];
    }
    if (mode == 3 && dse_dw_rowsum_groups(kh, kw, sw, dw) > 32)
        return -2; /* dse_dw_group's limit: <= 32 groups */
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        uint8_t *Pall = (uint8_t *)calloc((size_t)(gsz * npr), 1);
        uint8_t *PR = xt512 ? (uint8_t *)calloc((size_t)npr, 1) : NULL;
        int16_t *PF = mode == 2 ? (int16_t *)malloc((size_t)np * sizeof(int16_t)) : NULL;
        int64_t *full = (int64_t *)malloc((size_t)(LB + slack) * sizeof(int64_t));
        int32_t *full32 = (int32_t *)malloc((size_t)(LB + slack) * sizeof(int32_t));
        dse_dw_tap *tp = (dse_dw_tap *)malloc((size_t)ntap * sizeof(dse_dw_tap));
        int64_t *toff = (int64_t *)malloc((size_t)(2 * ntap) * sizeof(int64_t)), *colq = toff ? toff + ntap : NULL;
        dse_dw_groups gr = {0, {0}, NULL, NULL, 1, 0, 0};
        /* the packed columns Q, then the sums S and (5x5 "cols") S2, sn entries each (zeroed: the fold's dropped
         * lanes read a few past) */
        const int64_t sn = LB + 4 * dh * WQ + slack;
        uint64_t *Q = mode == 3 && !planes ? (uint64_t *)calloc((size_t)(og * 32 * 256 + 2 * sn), sizeof(uint64_t))
                                           : NULL;
        uint8_t *LH = planes ? (uint8_t *)malloc((size_t)(og * ntap * 512)) : NULL;
        int64_t *base = mode == 3 ? (int64_t *)malloc((size_t)og * sizeof(int64_t)) : NULL, packed = -1;
        int32_t wq[32], init = 0;
        uint8_t qtab[16 * 64];
        const int64_t nsteps = quads ? nb * ((Ho * Wo + 15) / 16) : 0; /* dse_dw_quad_steps */
        int64_t *soff = quads ? (int64_t *)malloc((size_t)(3 * nsteps) * sizeof(int64_t)) : NULL;
        uint8_t *stab = quads ? (uint8_t *)malloc((size_t)(2 * nsteps)) : NULL;
        uint8_t *vb = (uint8_t *)calloc((size_t)((HW + 16) / 8 + 16), 1); /* dse_dw_compact_512's bits */
        if (mode == 3 || quads)
            gr.tg = (int64_t *)malloc((size_t)(2 * ntap) * sizeof(int64_t)), gr.tf = gr.tg ? gr.tg + ntap : NULL;
        if (dse_team_allocated(&fail, Pall && (!xt512 || PR) && full && full32 && tp && toff && vb && (mode != 2 || PF) && (!quads || (soff && stab)) &&
                                          (mode != 3 || ((Q || LH) && base)) && ((mode != 3 && !quads) || gr.tg))) {
            for (int64_t g = 0; g < gsz; g++) /* the padding: dse_dw_phases writes the rest */
                memset(Pall + g * npr, xtab ? xtab[0] : 0, (size_t)(np - slack));
            for (int64_t i = 0; i < kh; i++) /* where tap (i, j)'s run starts in the phase planes */
                for (int64_t j = 0; j < kw; j++)
                    toff[i * kw + j] = (((i * dh) % sh) * sw + (j * dw) % sw) * PS + ((i * dh) / sh) * WQ +
                                       (j * dw) / sw;
            for (int64_t u = 0; u < HW + 16; u++)
                if ((u % HW) / WQ < Ho && (u % HW) % WQ < Wo)
                    vb[u >> 3] |= (uint8_t)(1u << (u & 7));
            for (int64_t k = 0; k < ntap; k++) /* column offsets in the planes */
                colq[k] = ((k % kw) * dw) / sw;
            if (mode == 3)
                dse_dw_group(toff, colq, ntap, &gr);
            /* the "cols" packing where its extra positions (the kernel's last rows, 2 dh WQ instead of 2 per plane;
             * with several tight planes per block at most HS per plane either way) cost less than the lookups it
             * saves: up to a quarter more (not on 4x4 planes unless tight) */
            const int64_t cpos = nb > 1 && L + 2 * dh * WQ > HS ? HS : L + 2 * dh * WQ;
            const int64_t rpos = nb > 1 && L + 2 > HS ? HS : L + 2;
            if (mode == 3 && kh == 3 && kw == 3 && sh == 1 && sw == 1 && dw == 1 && 4 * cpos <= 5 * rpos) {
                gr.ng = 3, gr.fs = dh * WQ, gr.cols = 3;
                for (int64_t k = 0; k < ntap; k++)
                    gr.tg[k] = k % 3, gr.tf[k] = k / 3, gr.goff[k % 3] = toff[0] + k % 3;
            }
            /* 3 x 3 at stride 2: the stride-2 packing (four byte indexes for six lookups per position instead of
             * six, ~100 instead of ~144 instructions per 8 positions) where its positions, WQ - 2 more per plane,
             * are at most 1.4 times as many (all but one-row outputs) */
            if (mode == 3 && kh == 3 && kw == 3 && sh == 2 && sw == 2 && dh == 1 && dw == 1 &&
                5 * (L + WQ) <= 7 * (L + 2)) {
                gr.ng = 6, gr.fs = WQ, gr.cols = 2;
                for (int64_t k = 0; k < ntap; k++) /* field: kernel row 0, 2 | 1; table: (row 1) + column 0, 2 | 1 */
                    gr.tf[k] = k / 3 == 0 ? 0 : k / 3 == 2 ? 1 : 2,
                    gr.tg[k] = (k / 3 == 1 ? 3 : 0) + (k % 3 == 0 ? 0 : k % 3 == 2 ? 1 : 2);
                gr.goff[0] = toff[0], gr.goff[1] = toff[1], gr.goff[2] = toff[3], gr.goff[3] = toff[4];
            }
            /* 5 x 5 at stride 2: the like packing (cols 4, dse_dw_s25_sums: the ten lookups of the row groups from
             * four byte indexes per position instead of ten) where its positions, 2 WQ - 2 more per plane, are at most
             * 1.4 times as many */
            if (mode == 3 && kh == 5 && kw == 5 && sh == 2 && sw == 2 && dh == 1 && dw == 1 &&
                5 * (L + 2 * WQ) <= 7 * (L + 2)) {
                gr.ng = 10, gr.fs = WQ, gr.cols = 4;
                for (int64_t k = 0; k < ntap; k++) /* field: kernel row / 2; table: E0 0-2, E1 3-4, O0 5-7, O1 8-9 */
                    gr.tf[k] = (k / 5) / 2,
                    gr.tg[k] = ((k / 5) % 2 ? 5 : 0) + ((k % 5) % 2 ? 3 : 0) + (k % 5) / 2;
                gr.goff[0] = toff[0], gr.goff[1] = toff[1], gr.goff[2] = toff[5], gr.goff[3] = toff[6];
            }
            /* 5 x 5: the same rule with its 4 dh WQ extra positions (dse_dw_cols5_sums: ten lookups per position as
             * the row groups take, each byte indexed once instead of ten times) */
            const int64_t cpos5 = nb > 1 && L + 4 * dh * WQ > HS ? HS : L + 4 * dh * WQ;
            if (mode == 3 && kh == 5 && kw == 5 && sh == 1 && sw == 1 && dw == 1 && 4 * cpos5 <= 5 * rpos) {
                gr.ng = 10, gr.fs = dh * WQ, gr.cols = 5, gr.s2 = sn, gr.goff[0] = toff[0];
                for (int64_t k = 0; k < ntap; k++)
                    gr.tg[k] = (k / 5 >= 3 ? 5 : 0) + k % 5, gr.tf[k] = (k / 5) % 3;
            }
            const int64_t period = quads ? dse_dw_quad_tables(Wo, WQ, qtab) : 0;
            const int quad_ok = period && dse_dw_quads(toff, colq, ntap, &gr);
            const int64_t qper = quad_ok ? dse_dw_quad_steps(nb, HW, WQ, Ho, Wo, period, Cout * Ho * Wo, soff,
                                                             soff + nsteps, soff + 2 * nsteps, stab, stab + nsteps)
                                         : 0;
            const int64_t esz = sc ? dse_scaled_esz(sc) : 8; /* bytes per output element */
            char *on = sc ? (char *)outs : (char *)out;
#pragma omp for schedule(static)
            for (int64_t t = 0; t < C / gsz * nblk; t++) { /* channel-major (a channel's tables serve all its images)
                                                              * unless imajor */
                const int64_t c0 = (imajor ? t % (C / gsz) : t / nblk) * gsz;
                const int64_t b0 = (imajor ? t / (C / gsz) : t % nblk) * nb, nbb = B - b0 < nb ? B - b0 : nb;
                const int64_t Lr = (nbb - 1) * HW + L;
                if (t + ahead < C / gsz * nblk) { /* the input and output lines of a block ahead: planes far apart */
                    const int64_t tn = t + ahead, cn = (imajor ? tn % (C / gsz) : tn / nblk) * gsz;
                    const int64_t bn = (imajor ? tn / (C / gsz) : tn % nblk) * nb;
                    const int64_t nn = B - bn < nb ? B - bn : nb;
                    for (int64_t b = bn; b < bn + nn; b++) {
                        dse_prefetch_lines(x + (b * C + cn) * H * W, gsz * H * W, 0, nb > 1);
                        dse_prefetch_lines(on + (b * Cout + cn * og) * Ho * Wo * esz, gsz * og * Ho * Wo * esz, 1,
                                           nb > 1);
                    }
                }
                if (small) /* whole small planes: dse_dw_small_512 */
                    dse_dw_small_512(x + (b0 * C + c0) * H * W, C * H * W, nbb, xend, lpc * H * W, lpc * H * W, smtab,
                                     smsk, (int)(gsz * nsm), (int)(gsz / lpc), smoff, HW, xt512 ? PR : Pall);
                for (int64_t c = c0; c < c0 + gsz; c++) {
                    uint8_t *const P = Pall + (c - c0) * npr;
                    for (int64_t o = c * og; mode == 3 && packed != c && o < (c + 1) * og; o++)
                        base[o - c * og] =
                            planes ? dse_dw_planes(lutT, wp + o * ntap, ntap, LH + (o - c * og) * ntap * 512)
                                   : (level >= DSE_ISA_AVX2 ? dse_dw_pack_avx2 : dse_dw_pack)(
                                         lutT, wp + o * ntap, ntap, &gr, Q + (o - c * og) * gr.ng * 256);
                    packed = c;
                    for (int64_t b = 0; !small && b < nbb; b++) {
                        if (b + 4 < nbb) /* and this block's planes a few ahead into L1 */
                            dse_prefetch_lines(x + ((b0 + b + 4) * C + c) * H * W, H * W, 0, 0);
                        if (s1_512)
                            dse_dw_plane_s1_512(x + ((b0 + b) * C + c) * H * W, xend, H, W, pt, pl, HQ, WQ,
                                                (xt512 ? PR : P) + b * HS);
                        else if (s2_512)
                            dse_dw_phases_s2_512(x + ((b0 + b) * C + c) * H * W, xend, H, W, pt, pl, sh, HQ, WQ, PS,
                                                 (xt512 ? PR : P) + b * HS);
                        else
                            dse_dw_phases(x + ((b0 + b) * C + c) * H * W, xend, H, W, pt, pl, sh, sw, HQ, WQ, PS,
                                          xt512 ? NULL : xtab, (xt512 ? PR : P) + b * HS);
                    }
                    if (xt512)
                        dse_translate_512(PR, npr, xtab, P);
                    if (mode == 2)
                        for (int64_t i = 0; i < np; i++)
                            PF[i] = ftab[P[i]];
                    for (int64_t o = c * og; o < (c + 1) * og; o++) {
                        const uint8_t *wo = wp + o * ntap;
                        const int q8 = quad_ok && dse_dw_quad_weights(gtab, wo, ntap, &gr, a_signed, wq, &init);
                        for (int64_t i = 0; mode != 3 && !q8 && i < ntap; i++) {
                            dse_dw_tap *k = tp + i;
                            k->p = P + toff[i];
                            k->f = PF ? PF + toff[i] : NULL;
                            k->col = lutT + 256 * (int64_t)wo[i];
                            k->wv = (mode == 1 || mode == 2) ? gtab[wo[i]] : 0;
                        }
                        void *of = sc ? dse_scaled_out(sc, outs, (b0 * Cout + o) * Ho * Wo) : NULL;
                        int64_t *ot = sc ? NULL : out + (b0 * Cout + o) * Ho * Wo;
                        void *f = fits32 ? (void *)full32 : (void *)full;
                        const int64_t fsz = fits32 ? 4 : 8;
                        if (!fits32)
                            dse_dw_run_scalar(tp, ntap, 0, Lr, mode, a_signed, full);
                        else if (planes)
                            dse_dw_run_planes_512(P, toff, ntap, Lr, LH + (o - c * og) * ntap * 512, base[o - c * og],
                                                  full32);
                        else if (mode == 3)
                            (level < DSE_ISA_AVX2 ? dse_dw_run_rowsum
                             : gr.cols == 2       ? dse_dw_run_s2_avx2
                             : gr.cols == 4       ? dse_dw_run_s25_avx2
                                                  : dse_dw_run_rowsum_avx2)(
                                P, &gr, nbb, HS, WQ, Ho, Wo, Q + (o - c * og) * gr.ng * 256, base[o - c * og],
                                Q + og * gr.ng * 256, full32);
                        else if (mode == 0)
                            dse_dw_run_lut32(tp, ntap, Lr, full32);
                        else if (q8 && sc) { /* the outputs only, scaled in registers: nothing to move or re-read */
                            dse_dw_run_quads_scaled_512(P, &gr, wq, init, nbb * qper, soff, soff + 2 * nsteps, stab,
                                                        stab + nsteps, qtab, a_signed, sc, o, of);
                            if (sc->silu)
                                dse_silu_runs(sc, (float *)of, nbb, Ho * Wo, Cout * Ho * Wo);
                            continue;
                        } else if (q8) /* the outputs only, in their order: nothing to move */
                            dse_dw_run_quads_512(P, &gr, wq, init, nbb * qper, soff, soff + nsteps, stab, qtab,
                                                 a_signed, full32);
                        else if (rows)
                            dse_dw_rows_avx2(tp, ntap, a_signed, nbb, HW, WQ, Ho, Wo, full32);
                        else if (level >= DSE_ISA_AVX512)
                            dse_dw_run_512(tp, ntap, Lr, mode, a_signed, full32);
                        else
                            dse_dw_run_avx2(tp, ntap, Lr, mode, a_signed, full32);
                        if (sc) { /* each image's rows moved together, then scaled as nbb runs of Ho Wo */
                            if (ordered) /* dse_dw_rows_avx2's and dse_dw_run_rowsum's sums are in order already */
                                ;
                            else if (fits32 && level >= DSE_ISA_AVX512)
                                dse_dw_compact_512(full32, Lr, vb, HW);
                            else if (fits32 && nbb == 1)
                                for (int64_t y = 1; y < Ho && WQ != Wo; y++)
                                    for (int64_t q = 0; q < Wo; q++) /* forward: y Wo + q <= y WQ + q */
                                        full32[y * Wo + q] = full32[y * WQ + q];
                            else
                                dse_dw_compact(f, fsz, nbb, HW, WQ, Ho, Wo);
                            dse_scale_runs(level, f, fits32 ? DSE_SUM_I32 : DSE_SUM_I64, nbb, Ho * Wo, sc, o, of,
                                           Cout * Ho * Wo);
                            continue;
                        }
                        for (int64_t b = 0; b < nbb; b++)
                            for (int64_t y = 0; y < Ho; y++)
                                for (int64_t q = 0; q < Wo; q++) {
                                    const int64_t i = q8 || ordered ? (b * Ho + y) * Wo + q : b * HW + y * WQ + q;
                                    ot[b * Cout * Ho * Wo + y * Wo + q] = fits32 ? full32[i] : full[i];
                                }
                    }
                }
            }
        }
        free(Pall);
        free(PR);
        free(PF);
        free(full);
        free(full32);
        free(tp);
        free(toff);
        free(Q);
        free(LH);
        free(base);
        free(gr.tg);
        free(vb);
        free(soff);
        free(stab);
    }
    return fail ? -1 : 0;
}


/* ------------------------------------------------------------------ fused FxP8 quantize / dequantize */
/* q[i] = clip(rint(x[i] / s), lo, hi) as the pattern byte (float32 division, round half to even as rintf in the
 * default rounding mode; NaN -> 0). Same bits as numpy's clip(rint(float32(x) / float32(s))). */
static inline uint8_t dse_quantize1(float x, float s, int lo, int hi)
{
    float v = rintf(x / s);
    int iv = v != v ? 0 : (v < (float)lo ? lo : (v > (float)hi ? hi : (int)v));
    return (uint8_t)(iv & 0xFF);
}

/* The same 8 values at a time: vdivps, vroundps to nearest even, clamp, NaN -> 0 (max/min return the bound for a
 * NaN, the ordered mask then clears it). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void dse_quantize8(__m256 x, __m256 vs, __m256 vlo,
                                                                          __m256 vhi, uint8_t *q)
{
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256 v = _mm256_round_ps(_mm256_div_ps(x, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 ord = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    v = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(v, vlo), vhi), ord);
    const __m256i b = _mm256_shuffle_epi8(_mm256_cvtps_epi32(v), pick); /* low byte of each lane */
    const uint32_t b0 = (uint32_t)_mm256_extract_epi32(b, 0), b1 = (uint32_t)_mm256_extract_epi32(b, 4);
    memcpy(q, &b0, 4);
    memcpy(q + 4, &b1, 4);
}

DSE_T_AVX2 static void dse_quantize_avx2(const float *x, int64_t n, float s, int lo, int hi, uint8_t *q)
{
    const __m256 vs = _mm256_set1_ps(s), vlo = _mm256_set1_ps((float)lo), vhi = _mm256_set1_ps((float)hi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        dse_quantize8(_mm256_loadu_ps(x + i), vs, vlo, vhi, q + i);
    for (; i < n; i++)
        q[i] = dse_quantize1(x[i], s, lo, hi);
}

/* The same 16 values at a time at the AVX-512 level (the last partial group under a lane mask): clamp with the bound
 * first (vmaxps / vminps return their second operand where one is NaN, so a NaN stays NaN), and a NaN converts to
 * 0x80000000, whose low byte is 0; the low byte of each lane stored (vpmovdb truncates; a partial group through
 * a buffer). */
DSE_T_512 static void dse_quantize_512(const float *x, int64_t n, float s, int lo, int hi, uint8_t *q)
{
    const __m512 vs = _mm512_set1_ps(s), vlo = _mm512_set1_ps((float)lo), vhi = _mm512_set1_ps((float)hi);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(vhi, _mm512_max_ps(vlo, v))));
        if (m == 0xFFFF)
            _mm_storeu_si128((__m128i *)(q + i), b);
        else {
            uint8_t t[16];
            _mm_storeu_si128((__m128i *)t, b);
            memcpy(q + i, t, (size_t)(n - i));
        }
    }
}

/* dse_quantize on the calling thread (no parallel region: for short runs inside another pass) */
static void dse_quantize_seq(int level, const float *x, int64_t n, float s, int lo, int hi, uint8_t *q)
{
    if (level >= DSE_ISA_AVX512)
        dse_quantize_512(x, n, s, lo, hi, q);
    else if (level >= DSE_ISA_AVX2)
        dse_quantize_avx2(x, n, s, lo, hi, q);
    else
        for (int64_t i = 0; i < n; i++)
            q[i] = dse_quantize1(x[i], s, lo, hi);
}

/* A SiLU output step's n finished values v written at element e of o: their patterns with sc->quant
 * (dse_quantize_seq), else the float32 values. */
static inline void dse_emit_silu_values(int level, const dse_scaling *sc, const float *v, int64_t n, void *o, int64_t e)
{
    if (sc->quant)
        dse_quantize_seq(level, v, n, sc->qs, sc->qlo, sc->qhi, (uint8_t *)o + e);
    else
        memcpy((float *)o + e, v, (size_t)n * sizeof(float));
}

static void dse_quantize(int level, const float *x, int64_t n, float s, int lo, int hi, uint8_t *q, int nt)
{
    const int64_t chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t i0 = c * chunk, i1 = (n - i0 < chunk) ? n : i0 + chunk;
        dse_quantize_seq(level, x + i0, i1 - i0, s, lo, hi, q + i0);
    }
}

/* dse_quantize's patterns of a strided float32 view into C-contiguous q, one pass (no contiguous float32 copy):
 * x has nd <= DSE_QS_MAXD axes of shape sh and element strides st (any sign, 0 included). Axes of one value are
 * dropped and neighbours that are contiguous in both layouts merged; the values are then read in runs along axis a
 * (the last unit-stride axis, else the last), quantized as dse_quantize_seq does (gathered into a buffer where the
 * run is strided). Where a is q's last axis the runs are stored as they are; else (a transpose) 16 runs at
 * consecutive indices of q's last axis are quantized into a tile and stored 16 bytes at a time. Tiles split over
 * nt threads. */
#define DSE_QS_MAXD 32
#define DSE_QS_TB 16
#define DSE_QS_CH 256
static void dse_quantize_strided(int level, const float *x, int nd0, const int64_t *sh0, const int64_t *st0,
                                 float s, int lo, int hi, uint8_t *q, int nt)
{
    int64_t sh[DSE_QS_MAXD], st[DSE_QS_MAXD], os[DSE_QS_MAXD], total = 1;
    int nd = 0;
    for (int d = 0; d < nd0; d++) {
        if (sh0[d] == 0)
            return;
        if (sh0[d] == 1)
            continue;
        if (nd && st[nd - 1] == st0[d] * sh0[d]) { /* merges with the previous axis */
            sh[nd - 1] *= sh0[d];
            st[nd - 1] = st0[d];
        } else {
            sh[nd] = sh0[d];
            st[nd++] = st0[d];
        }
    }
    if (nd == 0) {
        q[0] = dse_quantize1(x[0], s, lo, hi);
        return;
    }
    for (int d = nd - 1; d >= 0; d--) {
        os[d] = total;
        total *= sh[d];
    }
    int a = nd - 1;
    for (int d = nd - 1; d >= 0; d--)
        if (st[d] == 1) {
            a = d;
            break;
        }
    const int b = nd - 1, tiled = a != b;
    const int64_t L = sh[a], sa = st[a], oa = os[a], nbt = tiled ? (sh[b] + DSE_QS_TB - 1) / DSE_QS_TB : 1;
    int64_t tiles = nbt;
    for (int d = 0; d < nd; d++)
        if (d != a && d != b)
            tiles *= sh[d];
    if (!tiled)
        tiles = total / L;
#pragma omp parallel num_threads(total >= (1 << 16) ? nt : 1)
    {
        float g[DSE_QS_CH];
        uint8_t buf[DSE_QS_TB * DSE_QS_CH];
#pragma omp for schedule(static)
        for (int64_t r = 0; r < tiles; r++) {
            int64_t xo = 0, qo = 0, rem = r, nb = 1;
            for (int d = nd - 1; d >= 0; d--) {
                if (d == a)
                    continue;
                const int64_t n = (tiled && d == b) ? nbt : sh[d], i = rem % n;
                rem /= n;
                if (tiled && d == b) {
                    nb = sh[b] - i * DSE_QS_TB < DSE_QS_TB ? sh[b] - i * DSE_QS_TB : DSE_QS_TB;
                    xo += i * DSE_QS_TB * st[b];
                    qo += i * DSE_QS_TB;
                } else {
                    xo += i * st[d];
                    qo += i * os[d];
                }
            }
            for (int64_t i0 = 0; i0 < L; i0 += DSE_QS_CH) {
                const int64_t n = L - i0 < DSE_QS_CH ? L - i0 : DSE_QS_CH;
                for (int64_t j = 0; j < nb; j++) {
                    const float *src = x + xo + j * (tiled ? st[b] : 0) + i0 * sa;
                    if (sa != 1) {
                        for (int64_t i = 0; i < n; i++)
                            g[i] = src[i * sa];
                        src = g;
                    }
                    dse_quantize_seq(level, src, n, s, lo, hi, tiled ? buf + j * DSE_QS_CH : q + qo + i0);
                }
                if (tiled)
                    for (int64_t i = 0; i < n; i++) {
                        uint8_t *o = q + qo + (i0 + i) * oa;
                        for (int64_t j = 0; j < nb; j++)
                            o[j] = buf[j * DSE_QS_CH + i];
                    }
            }
        }
    }
}

/* Output activation fused into the scaling pass: DSE_ACT_RELU is numpy's maximum(y, 0) (NaN kept, -0 -> +0),
 * DSE_ACT_CLIP numpy's clip(y, lo, hi) (NaN kept, y kept when neither bound is crossed). */
#define DSE_ACT_NONE 0
#define DSE_ACT_RELU 1
#define DSE_ACT_CLIP 2

static inline float dse_act1(float y, int act, float lo, float hi)
{
    if (act == DSE_ACT_RELU)
        return (y != y || y > 0.0f) ? y : 0.0f;
    if (act == DSE_ACT_CLIP) { /* numpy's minimum(maximum(y, lo), hi): hi where the bounds cross, as the SIMD code */
        y = y < lo ? lo : y;
        return y > hi ? hi : y;
    }
    return y;
}

static inline float dse_scale1(int64_t a, double sa, double f, float b)
{
    return (float)(((double)a * sa) * f) + b;
}

/* (double) of 4 int64 lanes, exactly as the C conversion: high halves (int32) * 2^32 and low halves (uint32) are exact
 * doubles, their one sum is the correctly rounded value. */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256d dse_i64_to_pd(__m256i v)
{
    const __m256i split = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    const __m256d hi = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(split, 1)),
                                     _mm256_set1_pd(4294967296.0));
    const __m128i lo_s = _mm_xor_si128(_mm256_castsi256_si128(split), _mm_set1_epi32((int)0x80000000u));
    const __m256d lo = _mm256_add_pd(_mm256_cvtepi32_pd(lo_s), _mm256_set1_pd(2147483648.0));
    return _mm256_add_pd(hi, lo);
}

/* The same for |v| < 2^51 (DSE_SUM_SMALL): 2^52 + 2^51 + v is a double whose low 52 bits are 2^51 + v, one integer
 * add builds it and one subtraction (exact) leaves v. */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256d dse_small_i64_to_pd(__m256i v)
{
    const __m256d magic = _mm256_set1_pd(6755399441055744.0); /* 2^52 + 2^51 */
    return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(v, _mm256_castpd_si256(magic))), magic);
}

DSE_T_AVX2 static inline __attribute__((always_inline)) __m256 dse_act8(__m256 y, int act, __m256 lo, __m256 hi)
{
    if (act == DSE_ACT_RELU) /* keep y where y > 0 or y is NaN, else +0 */
        return _mm256_and_ps(y, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NLE_UQ));
    if (act == DSE_ACT_CLIP) {
        y = _mm256_blendv_ps(y, lo, _mm256_cmp_ps(y, lo, _CMP_LT_OQ));
        return _mm256_blendv_ps(y, hi, _mm256_cmp_ps(y, hi, _CMP_GT_OQ));
    }
    return y;
}

/* Eight sums, given exactly as two 4-lane doubles, scaled as dse_scale1 does: (x * sa) * f in double, rounded to
   float32, plus the bias (no FMA). */
DSE_T_AVX2 static inline __attribute__((always_inline)) __m256 dse_scale8(__m256d x0, __m256d x1, __m256d vsa,
                                                                          __m256d vf0, __m256d vf1, __m256 vb)
{
    const __m256d d0 = _mm256_mul_pd(_mm256_mul_pd(x0, vsa), vf0);
    const __m256d d1 = _mm256_mul_pd(_mm256_mul_pd(x1, vsa), vf1);
    return _mm256_add_ps(_mm256_set_m128(_mm256_cvtpd_ps(d1), _mm256_cvtpd_ps(d0)), vb);
}

/* With sc->add: the other operand and the patterns' output at the float32 output element o. */
static inline const float *dse_add_at(const dse_scaling *sc, const void *o)
{
    return sc->add + ((const float *)o - sc->base);
}

static inline uint8_t *dse_qout_at(const dse_scaling *sc, const void *o)
{
    return sc->qout + ((const float *)o - sc->base);
}

/* Element j of a channel's run from its scaled value y (float32((acc * sa) * sw) + bias): with sc->add the Add's
 * sum, then the Relu/Clip; written as y, or its pattern with sc->quant (with add: y, and the pattern at qout). */
static inline void dse_emit1(const dse_scaling *sc, float y, void *o, int64_t j)
{
    if (sc->add)
        y = y + dse_add_at(sc, o)[j];
    y = dse_act1(y, sc->act, sc->lo, sc->hi);
    if (sc->quant && sc->add)
        dse_qout_at(sc, o)[j] = dse_quantize1(y, sc->qs, sc->qlo, sc->qhi);
    if (sc->quant && !sc->add)
        ((uint8_t *)o)[j] = dse_quantize1(y, sc->qs, sc->qlo, sc->qhi);
    else if (!(sc->add && sc->drop))
        ((float *)o)[j] = y;
}

/* Channels j0..n-1 of nrun positions' runs one element at a time (dse_scale_cols' layout: run r's sums at a + r lda,
 * its outputs from element r ld of o on; channel j's sw and bias at c + j): dse_scale_cols below the avx2 level, and
 * the last n mod 8 channels of its avx2 runs. */
static inline void dse_scale_cols_rest(const void *a, int kind, int64_t nrun, int64_t j0, int64_t n, int64_t lda,
                                       const dse_scaling *sc, int64_t c, void *o, int64_t ld)
{
    for (int64_t r = 0; r < nrun; r++)
        for (int64_t j = j0; j < n; j++) {
            const int64_t i = r * lda + j;
            dse_emit1(sc, dse_scale1(kind == DSE_SUM_I32 ? ((const int32_t *)a)[i] : ((const int64_t *)a)[i], sc->sa,
                                     (double)sc->sw[c + j], sc->bias[c + j]), o, r * ld + j);
        }
}


DSE_T_AVX2 static inline __attribute__((always_inline)) __m256d dse_sums_pd(const void *a, int64_t j, const int kind)
{
    if (kind == DSE_SUM_I32)
        return _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)((const int32_t *)a + j)));
    const __m256i v = _mm256_loadu_si256((const __m256i *)((const int64_t *)a + j));
    return kind == DSE_SUM_SMALL ? dse_small_i64_to_pd(v) : dse_i64_to_pd(v);
}

/* A scaling instance's constants in AVX2 registers and its output pointers at the run's first element o (with add:
 * the Add's operand ad and the patterns qo; without: the patterns at o), for dse_emit8_avx2. */
typedef struct {
    __m256d sa;
    __m256 lo, hi, qs, qlo, qhi;
    const float *ad;
    uint8_t *qo;
    int store; /* the float32 y written */
} dse_emit8_at;

DSE_T_AVX2 static inline __attribute__((always_inline)) dse_emit8_at dse_emit8_init(const dse_scaling *sc, void *o,
                                                                                  const int quant, const int add)
{
    dse_emit8_at e;
    e.sa = _mm256_set1_pd(sc->sa);
    e.lo = _mm256_set1_ps(sc->lo), e.hi = _mm256_set1_ps(sc->hi);
    e.qs = _mm256_set1_ps(sc->qs), e.qlo = _mm256_set1_ps((float)sc->qlo), e.qhi = _mm256_set1_ps((float)sc->qhi);
    e.ad = add ? dse_add_at(sc, o) : NULL;
    e.qo = add ? (quant ? dse_qout_at(sc, o) : NULL) : (uint8_t *)o;
    e.store = add ? !sc->drop : !quant;
    return e;
}

/* dse_emit1's operations on 8 scaled values y, elements j..j+7 of the run at o (e: dse_emit8_init at o). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void dse_emit8_avx2(const dse_emit8_at *e, __m256 y, void *o,
                                                                           int64_t j, const int act, const int quant,
                                                                           const int add)
{
    if (add)
        y = _mm256_add_ps(y, _mm256_loadu_ps(e->ad + j));
    y = dse_act8(y, act, e->lo, e->hi);
    if (quant)
        dse_quantize8(y, e->qs, e->qlo, e->qhi, e->qo + j);
    if (e->store)
        _mm256_storeu_ps((float *)o + j, y);
}

/* One channel's run of S outputs (sums of the given kind; the bits equal the int64 pass): the same operations as
 * dse_scale1 / dse_emit1, 8 at a time (no FMA); the activation, the quantization and the add are constants of each
 * instance, so the loop carries no branch on them. */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_scale_run_avx2(const void *a, int64_t S, const dse_scaling *sc, int64_t c, void *o, const int kind,
                   const int act, const int quant, const int add)
{
    const dse_emit8_at e = dse_emit8_init(sc, o, quant, add);
    const double f = (double)sc->sw[c];
    const float b = sc->bias[c];
    const __m256d vf = _mm256_set1_pd(f);
    const __m256 vb = _mm256_set1_ps(b);
    int64_t j = 0;
    for (; j + 8 <= S; j += 8)
        dse_emit8_avx2(&e, dse_scale8(dse_sums_pd(a, j, kind), dse_sums_pd(a, j + 4, kind), e.sa, vf, vf, vb), o, j,
                       act, quant, add);
    for (; j < S; j++)
        dse_emit1(sc, dse_scale1(kind == DSE_SUM_I32 ? ((const int32_t *)a)[j] : ((const int64_t *)a)[j], sc->sa, f, b),
                  o, j);
}

/* nrun positions' runs of the n channels c..c+n-1 (a channels-last output; run r's sums at a + r lda, its outputs
 * from element r ld of o on), as dse_scale_run_avx2 scales each element: 8 channels at a time, their sw and bias in
 * registers while every run's 8 are done, the last n mod 8 channels one by one (elements addressed from o, so are a
 * fused add's operand and patterns). */
DSE_T_AVX2 static inline __attribute__((always_inline)) void
dse_scale_cols_avx2(const void *a, int64_t nrun, int64_t n, int64_t lda, const dse_scaling *sc, int64_t c, void *o,
                    int64_t ld, const int kind, const int act, const int quant, const int add)
{
    const dse_emit8_at e = dse_emit8_init(sc, o, quant, add);
    const int64_t esz = kind == DSE_SUM_I32 ? 4 : 8;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 w = _mm256_loadu_ps(sc->sw + c + j), vb = _mm256_loadu_ps(sc->bias + c + j);
        const __m256d vf0 = _mm256_cvtps_pd(_mm256_castps256_ps128(w)), vf1 = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
        for (int64_t r = 0; r < nrun; r++) {
            const char *ar = (const char *)a + r * lda * esz;
            dse_emit8_avx2(&e, dse_scale8(dse_sums_pd(ar, j, kind), dse_sums_pd(ar, j + 4, kind), e.sa, vf0, vf1, vb),
                           o, r * ld + j, act, quant, add);
        }
    }
    dse_scale_cols_rest(a, kind, nrun, j, n, lda, sc, c, o, ld);
}

/* Whether the CPU has FMA: the certified single-precision patterns (dse_qfast_level) and the compiled Sigmoid's
 * float32 exp (dse_sigmoid_chunk_avx2, enabled by kernels.pyx's _check_sigmoid_own). */
static int dse_cpu_fma(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("fma") != 0;
    }
    return have;
#else
    return 0;
#endif
}

/* Whether scaling passes at level take the certified single-precision patterns, so need dse_scaling_qf's constants
 * (sc->qf): the avx2 level and above on a CPU with FMA (dse_scale_run_qfast_avx2; every AVX-512 CPU has it). */
static int dse_qfast_level(int level)
{
    return level >= DSE_ISA_AVX2 && dse_cpu_fma();
}

/* n < 8 or a group whose fast check failed: the exact operations (dse_scale_run_avx2), patterns from int32 sums. */
DSE_T_AVX2 static void dse_scale_q_exact_avx2(const int32_t *a, int64_t n, const dse_scaling *sc, int64_t c,
                                              uint8_t *o)
{
    dse_scale_run_avx2(a, n, sc, c, o, DSE_SUM_I32, sc->act, 1, 0);
}

/* Whether channel c's patterns take the certified single-precision path (dse_scale_run_qfast_avx2, the avx512
 * level's dse_qfast_at): sc->qf set (dse_scaling_qf, only where dse_qfast_level), usable, and constants for c. */
static inline int dse_qfast_usable(const dse_scaling *sc, int64_t c)
{
    return sc->qf && sc->qf[0] != 0.0f && sc->qf[4 + 4 * c] != 0.0f;
}

/* The certified single-precision patterns (dse_qfast_s: the same constants sc->qf, the same operations, one FMA per
 * bound) at the AVX2 level: a run of S int32 sums at a into S patterns at o of channel c (dse_qfast_usable), 8 per
 * step; a step whose two roundings differ in a lane, and the last S mod 8, take the exact operations. The 8 lanes'
 * patterns are packed with signed/unsigned saturation, which is the pattern type's clamp (sc->qf[3] == 0), else
 * clamped to [qf[1], qf[2]] first. */
__attribute__((target("avx2,fma"))) static void dse_scale_run_qfast_avx2(const int32_t *a, int64_t S,
                                                                         const dse_scaling *sc, int64_t c, uint8_t *o)
{
    const float *k = sc->qf + 4 + 4 * c;
    const __m256 c1 = _mm256_set1_ps(k[0]), cl = _mm256_set1_ps(k[1]), ch = _mm256_set1_ps(k[2]);
    const __m256i qlo = _mm256_set1_epi32((int32_t)sc->qf[1]), qhi = _mm256_set1_epi32((int32_t)sc->qf[2]);
    const int clamp = sc->qf[3] != 0.0f, sgn = sc->qlo < 0;
    int64_t j = 0;
    for (; j + 8 <= S; j += 8) {
        const __m256 xf = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(a + j)));
        __m256i kl = _mm256_cvtps_epi32(_mm256_fmadd_ps(xf, c1, cl));
        const __m256i kh = _mm256_cvtps_epi32(_mm256_fmadd_ps(xf, c1, ch));
        if (__builtin_expect(_mm256_movemask_epi8(_mm256_cmpeq_epi32(kl, kh)) != -1, 0)) {
            dse_scale_q_exact_avx2(a + j, 8, sc, c, o + j);
            continue;
        }
        if (clamp)
            kl = _mm256_min_epi32(qhi, _mm256_max_epi32(qlo, kl));
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(kl), _mm256_extracti128_si256(kl, 1));
        _mm_storel_epi64((__m128i *)(o + j), sgn ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w));
    }
    if (j < S)
        dse_scale_q_exact_avx2(a + j, S - j, sc, c, o + j);
}

/* The 12 output-step variants of a scaling instance (dse_scaled_variant: activation, quantization, add), expanded by
 * a macro m(prefix, act, quant, add) into a list (DSE_VARIANTS) or a table row of names (DSE_VARIANT_NAMES). */
#define DSE_VARIANTS(m, p)                                                                                             \
    m(p, 0, 0, 0) m(p, 0, 0, 1) m(p, 0, 1, 0) m(p, 0, 1, 1) m(p, 1, 0, 0) m(p, 1, 0, 1) m(p, 1, 1, 0) m(p, 1, 1, 1)    \
    m(p, 2, 0, 0) m(p, 2, 0, 1) m(p, 2, 1, 0) m(p, 2, 1, 1)
#define DSE_VARIANT_NAME(p, act, quant, add) p##_##act##_##quant##_##add,
#define DSE_VARIANT_NAMES(p) {DSE_VARIANTS(DSE_VARIANT_NAME, p)}

/* Instances per (sum kind, activation, quantization, add); each scales nrun runs of S sums, run r read at a + r S
 * (sums) and written at element r ld of o. */
#define DSE_SCALE_INSTANCE(p, act, quant, add)                                                                         \
    DSE_T_AVX2 static void p##_##act##_##quant##_##add(const void *a, int64_t nrun, int64_t S, const dse_scaling *sc, \
                                                       int64_t c, void *o, int64_t ld)                                 \
    {                                                                                                                  \
        const int kind = p##_kind, esz = kind == DSE_SUM_I32 ? 4 : 8;                                                  \
        if (kind == DSE_SUM_I32 && quant && !add && dse_qfast_usable(sc, c)) { /* certified single precision */      \
            for (int64_t r = 0; r < nrun; r++)                                                                         \
                dse_scale_run_qfast_avx2((const int32_t *)a + r * S, S, sc, c, (uint8_t *)o + r * ld);                 \
            return;                                                                                                    \
        }                                                                                                              \
        for (int64_t r = 0; r < nrun; r++)                                                                             \
            dse_scale_run_avx2((const char *)a + r * S * esz, S, sc, c, dse_scaled_out(sc, o, r * ld), kind, act,      \
                               quant, add);                                                                            \
    }
enum { dse_scale_run_0_kind = 0, dse_scale_run_1_kind = 1, dse_scale_run_2_kind = 2 };
DSE_VARIANTS(DSE_SCALE_INSTANCE, dse_scale_run_0)
DSE_VARIANTS(DSE_SCALE_INSTANCE, dse_scale_run_1)
DSE_VARIANTS(DSE_SCALE_INSTANCE, dse_scale_run_2)
typedef void (*dse_scale_fn)(const void *, int64_t, int64_t, const dse_scaling *, int64_t, void *, int64_t);
static const dse_scale_fn dse_scale_fns[3][12] = {DSE_VARIANT_NAMES(dse_scale_run_0), DSE_VARIANT_NAMES(dse_scale_run_1),
                                                  DSE_VARIANT_NAMES(dse_scale_run_2)};

/* Instances of positions' channel runs (dse_scale_cols): nrun runs of the n channels c..c+n-1, run r's sums at
 * a + r lda, its outputs from element r ld of o on. */
#define DSE_SCALE_COLS_INSTANCE(p, act, quant, add)                                                                    \
    DSE_T_AVX2 static void p##_##act##_##quant##_##add(const void *a, int64_t nrun, int64_t n, int64_t lda,           \
                                                       const dse_scaling *sc, int64_t c, void *o, int64_t ld)          \
    {                                                                                                                  \
        dse_scale_cols_avx2(a, nrun, n, lda, sc, c, o, ld, p##_kind, act, quant, add);                                 \
    }
enum { dse_scale_cols_0_kind = 0, dse_scale_cols_1_kind = 1, dse_scale_cols_2_kind = 2 };
DSE_VARIANTS(DSE_SCALE_COLS_INSTANCE, dse_scale_cols_0)
DSE_VARIANTS(DSE_SCALE_COLS_INSTANCE, dse_scale_cols_1)
DSE_VARIANTS(DSE_SCALE_COLS_INSTANCE, dse_scale_cols_2)
typedef void (*dse_scale_cols_fn)(const void *, int64_t, int64_t, int64_t, const dse_scaling *, int64_t, void *,
                                  int64_t);
static const dse_scale_cols_fn dse_scale_cols_fns[3][12] = {
    DSE_VARIANT_NAMES(dse_scale_cols_0), DSE_VARIANT_NAMES(dse_scale_cols_1), DSE_VARIANT_NAMES(dse_scale_cols_2)};

/* The same run 16 outputs at a time at the AVX-512 level (the same operations per element, the same bits): each
 * group of 8 sums converted exactly to doubles, (x * sa) * f, rounded to float32, plus the bias; Relu/Clip and the
 * quantization with compare masks; the last partial group under a lane mask. */
DSE_T_512 static inline __attribute__((always_inline)) __m512d dse_sums8_pd(const void *a, int64_t j, __mmask8 m,
                                                                           const int kind)
{
    const __m512i v = m == 0xFF ? _mm512_loadu_si512((const int64_t *)a + j)
                                : _mm512_maskz_loadu_epi64(m, (const int64_t *)a + j);
    if (kind == DSE_SUM_SMALL) { /* 2^52 + 2^51 + v, minus 2^52 + 2^51 (dse_small_i64_to_pd) */
        const __m512d magic = _mm512_set1_pd(6755399441055744.0);
        return _mm512_sub_pd(_mm512_castsi512_pd(_mm512_add_epi64(v, _mm512_castpd_si512(magic))), magic);
    }
    /* high halves (int32) * 2^32 plus low halves (uint32): exact doubles, one correctly rounded sum */
    const __m512d hi = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(_mm512_srai_epi64(v, 32))),
                                     _mm512_set1_pd(4294967296.0));
    return _mm512_add_pd(hi, _mm512_cvtepu32_pd(_mm512_cvtepi64_epi32(v)));
}

/* The pattern bytes' int32 lanes of y: clamp(rint(y / qs), qlo, qhi), NaN -> 0 (dse_quantize8's results): max/min
 * with the bound first keep a NaN (vmaxps/vminps return their second operand when one is NaN), and a NaN converts to
 * 0x80000000, whose low byte is 0. */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_quant16_div(__m512 y, __m512 vqs, __m512 vqlo,
                                                                              __m512 vqhi)
{
    const __m512 v = _mm512_roundscale_ps(_mm512_div_ps(y, vqs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvtps_epi32(_mm512_min_ps(vqhi, _mm512_max_ps(vqlo, v)));
}

/* A channel's scaling constants in AVX-512 registers (dse_scale512 is declared with the depthwise quads, which scale
 * their sums in registers with the helpers below). */
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale512_init(dse_scale512 *v, const dse_scaling *sc,
                                                                             int64_t c)
{
    v->sa = _mm512_set1_pd(sc->sa), v->f = _mm512_set1_pd((double)sc->sw[c]);
    v->b = _mm512_set1_ps(sc->bias[c]), v->lo = _mm512_set1_ps(sc->lo), v->hi = _mm512_set1_ps(sc->hi);
    v->qs = _mm512_set1_ps(sc->qs), v->qlo = _mm512_set1_ps((float)sc->qlo), v->qhi = _mm512_set1_ps((float)sc->qhi);
    v->add = NULL, v->qout = NULL, v->stream = 0, v->drop = 0;
}

/* With a fused Add: v's operand and patterns' pointers at the float32 output element o (a run's first). */
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale512_at(dse_scale512 *v, const dse_scaling *sc,
                                                                           const void *o)
{
    v->add = dse_add_at(sc, o), v->qout = sc->quant ? dse_qout_at(sc, o) : NULL, v->drop = sc->quant && sc->drop;
}

/* 16 scaled values from their sums as two groups of 8 exact doubles: (x * sa) * f, rounded to float32, plus the
 * bias. */
DSE_T_512 static inline __attribute__((always_inline)) __m512 dse_scale16(const dse_scale512 *v, __m512d x0,
                                                                         __m512d x1)
{
    const __m256 f0 = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(x0, v->sa), v->f));
    const __m256 f1 = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(x1, v->sa), v->f));
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(f0)),
                                                              _mm256_castps_pd(f1), 1)), v->b);
}

/* The Relu/Clip of 16 scaled values (dse_act8's operations at the AVX-512 level). */
DSE_T_512 static inline __attribute__((always_inline)) __m512 dse_act16(const dse_scale512 *v, __m512 y, const int act)
{
    if (act == DSE_ACT_RELU) /* keep y where y > 0 or y is NaN, else +0 */
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NLE_UQ), y);
    if (act == DSE_ACT_CLIP) /* minimum(maximum(y, lo), hi), NaN kept: vmaxps/vminps, bound first */
        return _mm512_min_ps(v->hi, _mm512_max_ps(v->lo, y));
    return y;
}

/* The output step of the first n <= 16 lanes of scaled values y at element j of o (dse_emit1's operations): with add
 * the Add's sum (v->add), then the Relu/Clip, then y written (or with quant its patterns; with add and quant both,
 * the patterns at v->qout). */
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale16_store(const dse_scale512 *v, __m512 y, void *o,
                                                                             int64_t j, int64_t n, const int act,
                                                                             const int quant, const int add)
{
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    if (add)
        y = _mm512_add_ps(y, n >= 16 ? _mm512_loadu_ps(v->add + j) : _mm512_maskz_loadu_ps(m, v->add + j));
    y = dse_act16(v, y, act);
    if (quant) { /* dse_quantize8: rint(y / qs), clamped, NaN -> 0, the low byte of each lane */
        uint8_t *qo = add ? v->qout : (uint8_t *)o;
        const __m128i q = _mm512_cvtepi32_epi8(dse_quant16_div(y, v->qs, v->qlo, v->qhi)); /* masked vpmovdb stores are slow */
        if (n >= 16)
            _mm_storeu_si128((__m128i *)(qo + j), q);
        else {
            uint8_t t[16];
            _mm_storeu_si128((__m128i *)t, q);
            memcpy(qo + j, t, (size_t)n);
        }
    }
    if (quant && (!add || v->drop))
        return;
    if (v->stream && n >= 16 && !((uintptr_t)((float *)o + j) & 63))
        _mm512_stream_ps((float *)o + j, y);
    else if (n >= 16)
        _mm512_storeu_ps((float *)o + j, y);
    else
        _mm512_mask_storeu_ps((float *)o + j, m, y);
}

/* The same for 16 int32 sums (exact doubles). */
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale16_i32(const dse_scale512 *v, __m512i s, void *o,
                                                                           int64_t j, int64_t n, const int act,
                                                                           const int quant, const int add)
{
    dse_scale16_store(v, dse_scale16(v, _mm512_cvtepi32_pd(_mm512_castsi512_si256(s)),
                                     _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(s, 1))), o, j, n, act, quant, add);
}

/* A quantized output's activation folded into the quantization's clamp (no add: y itself is not written): with
 * g(y) = rint(fl(y / qs)), 0 < qs < inf, g is non-decreasing on the non-NaN floats (a correctly rounded quotient by a
 * positive finite divisor and rint are), so for lo <= hi, g(clip(y, lo, hi)) = clamp(g(y), g(lo), g(hi)) (y < lo
 * gives g(y) <= g(lo), y > hi gives g(y) >= g(hi), else g(y) lies between them), and clamp(clamp(t, A, B), qlo, qhi)
 * = clamp(t, max(qlo, A), min(qhi, B)) when those bounds do not cross (A <= B and [A, B] meets [qlo, qhi]). Relu
 * (y <= 0 or -0 -> +0, which g sends to 0) is the clip to [0, inf]. A NaN stays NaN either way (pattern 0), -0 and
 * +0 convert alike. Returns 1 and the clamp's bounds when the fold holds, else 0 (the pass then clips first). */
static inline int dse_act_in_quant(const dse_scaling *sc, float *qlo, float *qhi)
{
    const float lo = sc->act == DSE_ACT_RELU ? 0.0f : sc->lo, hi = sc->act == DSE_ACT_RELU ? INFINITY : sc->hi;
    if (!(sc->qs > 0.0f && sc->qs < INFINITY && lo <= hi))
        return 0;
    const float a = rintf(lo / sc->qs), b = rintf(hi / sc->qs);
    *qlo = a > (float)sc->qlo ? a : (float)sc->qlo, *qhi = b < (float)sc->qhi ? b : (float)sc->qhi;
    return *qlo <= *qhi;
}

/* 16 scaled values of 16 int32 sums at p (two 8-lane halves converted from memory, no lane extraction). */
DSE_T_512 static inline __attribute__((always_inline)) __m512 dse_scale16_at(const dse_scale512 *v, const int32_t *p)
{
    return dse_scale16(v, _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)p)),
                       _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(p + 8))));
}

/* The pattern bytes of 64 quantized lanes (dse_quant16_div's int32 results of 16 outputs each, in order): two
 * in-lane saturating packs to int16 and one to bytes, then the 4-byte groups put in order (one vpermd) instead of four
 * vpmovdb. The lanes are within [qlo, qhi] (exact through the packs: [0, 255] unsigned, [-128, 127] signed) or
 * 0x80000000 for a NaN, which packs to 0 unsigned (int16 -32768, then 0) but to 0x80 signed, so a signed caller
 * clears NaN lanes to 0 first (their pattern). */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_pack64(__m512i q0, __m512i q1, __m512i q2,
                                                                         __m512i q3, const int sgn)
{
    const __m512i a = _mm512_packs_epi32(q0, q1), b = _mm512_packs_epi32(q2, q3);
    const __m512i c = sgn ? _mm512_packs_epi16(a, b) : _mm512_packus_epi16(a, b);
    /* c's dword 4 L + k holds q_k's lanes 4 L..4 L + 3 (128-bit lane L); output dword 4 k + L wants it */
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), c);
}

/* The quantized int32 lanes of 16 scaled values y, NaN lanes 0 when sgn (for dse_pack64). */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_quant16_lanes(const dse_scale512 *v, __m512 y,
                                                                                const int sgn)
{
    if (!sgn)
        return dse_quant16_div(y, v->qs, v->qlo, v->qhi);
    const __m512 t = _mm512_roundscale_ps(_mm512_div_ps(y, v->qs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask(t, t, _CMP_ORD_Q),
                                    _mm512_min_ps(v->qhi, _mm512_max_ps(v->qlo, t)));
}

/* Int32 sums into patterns without an add, 64 at a time (then the 16-lane step): the activation applied (act), or
 * folded into v's clamp bounds by the caller (act none, dse_act_in_quant). The same operations per element as
 * dse_scale16_store; what is saved is lane movement (sums converted from memory, one pack per 64 patterns instead of
 * four vpmovdb) and, with the fold, the Clip's two operations. */
DSE_T_512 static inline __attribute__((always_inline)) void dse_scale_run_q32(const dse_scale512 *v, const int32_t *a,
                                                                             int64_t S, uint8_t *o, const int act,
                                                                             const int sgn)
{
    int64_t j = 0;
    for (; j + 64 <= S; j += 64) {
        __m512i q[4];
        for (int k = 0; k < 4; k++) {
            q[k] = dse_quant16_lanes(v, dse_act16(v, dse_scale16_at(v, a + j + 16 * k), act), sgn);
        }
        _mm512_storeu_si512(o + j, dse_pack64(q[0], q[1], q[2], q[3], sgn));
    }
    for (; j + 16 <= S; j += 16)
        dse_scale16_store(v, dse_scale16_at(v, a + j), o, j, 16, act, 1, 0);
    if (j < S)
        dse_scale16_i32(v, _mm512_maskz_loadu_epi32((__mmask16)((1u << (S - j)) - 1), a + j), o, j, S - j, act, 1, 0);
}

/* The quantized output of int32 sums in single precision, certified. With the activation folded into the clamp
 * [A, B] (dse_act_in_quant) the pattern of a sum x is q(x) = clamp(rint(z), A, B), z = fl(fl(fl((x sa) f) + b) / qs)
 * (the double product rounded to float32, the float32 bias add and division). Each of the chain's roundings is within
 * a relative 2^-52 or 2^-24 of its value (plus 2^-150 where float32 results are subnormal), so with M = |x sa f| / qs,
 * B = |b| / qs and r = (x sa f + b) / qs: |z - r| <= 2^-23 (1.51 M + 1.01 B) + 2^-147 / qs + 2^-149. The fast path
 * computes t = fl(fl(x) c1 + c) by one FMA, c1 = fl(sa f / qs), within 2^-23 (1.51 M + 0.51 (B + 2 E)) + 2^-150 of
 * x sa f / qs + c, twice: with c = cl <= b / qs - E and c = ch >= b / qs + E, E = 2^-21 (Q + 2 B + 2) +
 * 2^-146 (1 + 1 / qs), Q = max(|A|, |B|). For M <= L = Q + B + 2 those bounds give t_lo <= z <= t_hi, so when rint(t_lo)
 * = rint(t_hi) (one compare of the two conversions), rint(z) is the same integer (rint is monotone). For M > L, |r| >=
 * Q + 2 and z, t_lo and t_hi all lie beyond Q + 1.9 with the sign of x sa f (their relative errors are < 2^-21 and Q +
 * B < 2^15), so every one of them clamps to the same bound. Lanes where the two roundings differ (about 2^-12 of them)
 * send their group to the exact operations. The conditions checked per channel keep every value finite and within
 * int32 (|c1| <= 1/4, so |t| < 2^30: no conversion saturates), c1 normal, and E < 2^-6. */
struct dse_qfast_s {
    __m512 c1, cl, ch;
    __m512i qlo, qhi;
};

/* float32 of the double d rounded down (dir < 0) or up (dir > 0). */
static inline float dse_f32_dir(double d, int dir)
{
    float v = (float)d;
    if (dir < 0 && (double)v > d)
        v = nextafterf(v, -INFINITY);
    if (dir > 0 && (double)v < d)
        v = nextafterf(v, INFINITY);
    return v;
}

/* The fast path's constants of channel c, {c1, cl, ch} at k, for the clamp [qlo, qhi]; c1 = 0 where its conditions
 * fail. */
static void dse_qfast_channel(const dse_scaling *sc, int64_t c, float qlo, float qhi, float *k)
{
    const double sa = sc->sa, f = (double)sc->sw[c], b = (double)sc->bias[c], qs = (double)sc->qs;
    k[0] = k[1] = k[2] = 0.0f;
    if (!(qs >= 0x1p-100 && qs <= 0x1p90 && fabs(sa) >= 0x1p-300 && fabs(sa) <= 0x1p300 && fabs(f) >= 0x1p-300 &&
          fabs(f) <= 0x1p300 && fabs(b) <= 0x1p100))
        return;
    const double c1 = sa * f / qs, B = fabs(b) / qs, Q = fabs(qlo) > fabs(qhi) ? fabs(qlo) : fabs(qhi);
    if (!(fabs(c1) >= 0x1p-100 && fabs(c1) <= 0.25 && Q + B <= 0x1p15))
        return;
    const double E = 0x1p-21 * (Q + 2.0 * B + 2.0) + 0x1p-146 * (1.0 + 1.0 / qs);
    if (!(E <= 0x1p-6))
        return;
    const double bq = b / qs, m = E * (1.0 + 0x1p-10); /* the margin covers bq's and the subtraction's roundings */
    k[0] = (float)c1, k[1] = dse_f32_dir(bq - m, -1), k[2] = dse_f32_dir(bq + m, 1);
}

/* rint(t_lo) of 16 sums; bad gathers the lanes where rint(t_hi) differs. */
DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_qfast16(const dse_qfast *F, __m512i x,
                                                                          __mmask16 *bad)
{
    const __m512 xf = _mm512_cvtepi32_ps(x);
    const __m512i kl = _mm512_cvtps_epi32(_mm512_fmadd_ps(xf, F->c1, F->cl));
    const __m512i kh = _mm512_cvtps_epi32(_mm512_fmadd_ps(xf, F->c1, F->ch));
    *bad |= _mm512_cmpneq_epi32_mask(kl, kh);
    return kl;
}

/* The exact operations' int32 pattern lanes of 16 sums (dse_quant16_lanes), channel c of sc with the clamp of qf. */
DSE_T_512 static inline __attribute__((always_inline)) void dse_qfast_exact_init(dse_scale512 *v,
                                                                                const dse_scaling *sc, int64_t c)
{
    dse_scale512_init(v, sc, c);
    v->qlo = _mm512_set1_ps(sc->qf[1]), v->qhi = _mm512_set1_ps(sc->qf[2]);
}

DSE_T_512 static inline __attribute__((always_inline)) __m512i dse_qfast_exact16(const dse_scale512 *v, __m512i x,
                                                                                const int sgn)
{
    return dse_quant16_lanes(v, dse_scale16(v, _mm512_cvtepi32_pd(_mm512_castsi512_si256(x)),
                                            _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(x, 1))), sgn);
}

/* A run of S int32 sums at a, less cn, into S patterns at o by the fast path (F: channel c's constants, sc->qf set);
 * a group of 64 (or 16) whose check fails takes the exact operations. */
DSE_T_512 static inline __attribute__((always_inline)) void
dse_scale_run_qfast(const dse_qfast *F, const dse_scaling *sc, int64_t c, const int32_t *a, int64_t S, __m512i cn,
                    uint8_t *o, const int sgn, const int clamp, const int sub)
{
    int64_t j = 0;
    for (; j + 64 <= S; j += 64) {
        __m512i x[4], q[4];
        __mmask16 bad = 0;
        for (int k = 0; k < 4; k++) {
            x[k] = _mm512_loadu_si512(a + j + 16 * k);
            if (sub)
                x[k] = _mm512_sub_epi32(x[k], cn);
            q[k] = dse_qfast16(F, x[k], &bad);
        }
        if (__builtin_expect(bad != 0, 0)) {
            dse_scale512 v;
            dse_qfast_exact_init(&v, sc, c);
            for (int k = 0; k < 4; k++)
                q[k] = dse_qfast_exact16(&v, x[k], sgn);
        } else if (clamp) {
            for (int k = 0; k < 4; k++)
                q[k] = _mm512_min_epi32(F->qhi, _mm512_max_epi32(F->qlo, q[k]));
        }
        _mm512_storeu_si512(o + j, dse_pack64(q[0], q[1], q[2], q[3], sgn));
    }
    for (; j < S; j += 16) {
        const int64_t n = S - j < 16 ? S - j : 16;
        __m512i x = _mm512_maskz_loadu_epi32(n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1), a + j);
        if (sub)
            x = _mm512_sub_epi32(x, cn);
        dse_qfast_out16(F, NULL, sc, c, x, o + j, n, sgn, clamp);
    }
}

/* The patterns of the first n (<= 16) of 16 sums x at o by the fast path; where its check fails, the exact
 * operations of v (NULL: channel c of sc with the clamp of sc->qf). */
DSE_T_512 static inline __attribute__((always_inline)) void dse_qfast_out16(const dse_qfast *F, const dse_scale512 *v,
                                                                           const dse_scaling *sc, int64_t c,
                                                                           __m512i x, uint8_t *o, int64_t n,
                                                                           const int sgn, const int clamp)
{
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __mmask16 bad = 0;
    __m512i k = dse_qfast16(F, x, &bad);
    __m128i b;
    if (__builtin_expect((bad & m) != 0, 0)) { /* within [A, B]: the low bytes */
        dse_scale512 w;
        if (!v)
            dse_qfast_exact_init(&w, sc, c), v = &w;
        b = _mm512_cvtepi32_epi8(dse_qfast_exact16(v, x, sgn));
    } else if (clamp)
        b = _mm512_cvtepi32_epi8(_mm512_min_epi32(F->qhi, _mm512_max_epi32(F->qlo, k)));
    else /* the saturating conversion is the pattern type's clamp */
        b = sgn ? _mm512_cvtsepi32_epi8(k) : _mm512_cvtusepi32_epi8(_mm512_max_epi32(k, _mm512_setzero_si512()));
    if (n >= 16)
        _mm_storeu_si128((__m128i *)o, b);
    else {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)t, b);
        memcpy(o, t, (size_t)n);
    }
}

/* Channel c's fast constants from sc->qf (1), or 0 where it has none. */
DSE_T_512 static inline __attribute__((always_inline)) int dse_qfast_at(const dse_scaling *sc, int64_t c,
                                                                       dse_qfast *F)
{
    if (!dse_qfast_usable(sc, c))
        return 0;
    const float *k = sc->qf + 4 + 4 * c;
    F->c1 = _mm512_set1_ps(k[0]), F->cl = _mm512_set1_ps(k[1]), F->ch = _mm512_set1_ps(k[2]);
    F->qlo = _mm512_set1_epi32((int32_t)sc->qf[1]), F->qhi = _mm512_set1_epi32((int32_t)sc->qf[2]);
    return 1;
}

/* The constants of the certified single-precision quantized output (dse_scale_run_qfast) of a scaling pass over N
 * channels with patterns and no add, written to qf[4 + 4 N] (the caller's, pointed to by sc->qf for the pass):
 * {usable, A, B, clamp} (the clamp [A, B] with the activation folded; usable 0 where the activation does not fold;
 * clamp 0 where [A, B] is the pattern type's whole range, which the saturating packs give), then {c1, cl, ch, 0} per
 * channel (c1 = 0: that channel takes the exact operations). For the avx512 and avx2 levels (dse_scale_run_qfast,
 * dse_scale_run_qfast_avx2). */
static void dse_scaling_qf(const dse_scaling *sc, int64_t N, float *qf)
{
    float qlo = (float)sc->qlo, qhi = (float)sc->qhi;
    const int usable = sc->quant && !sc->add && (sc->act == DSE_ACT_NONE || dse_act_in_quant(sc, &qlo, &qhi));
    qf[0] = (float)usable, qf[1] = qlo, qf[2] = qhi;
    qf[3] = sc->qlo < 0 ? !(qlo <= -128.0f && qhi >= 127.0f) : !(qlo <= 0.0f && qhi >= 255.0f);
    for (int64_t c = 0; c < N; c++) {
        dse_qfast_channel(sc, c, qlo, qhi, qf + 4 + 4 * c);
        qf[4 + 4 * c + 3] = 0.0f;
    }
}

DSE_T_512 static inline __attribute__((always_inline)) void
dse_scale_run_512(const void *a, int64_t nrun, int64_t S, const dse_scaling *sc, int64_t c, void *o, int64_t ld,
                  const int kind, const int act, const int quant, const int add)
{
    dse_scale512 v;
    dse_scale512_init(&v, sc, c);
    const int64_t esz = kind == DSE_SUM_I32 ? 4 : 8;
    if (kind == DSE_SUM_I32 && quant && !add) { /* patterns from int32 sums: the 64-lane loop */
        const int sgn = sc->qlo < 0;
        dse_qfast F;
        if (dse_qfast_at(sc, c, &F)) { /* the certified single-precision path */
            const __m512i z = _mm512_setzero_si512();
            for (int64_t r = 0; r < nrun; r++, a = (const char *)a + S * esz, o = dse_scaled_out(sc, o, ld)) {
                if (sc->qf[3] != 0.0f)
                    sgn ? dse_scale_run_qfast(&F, sc, c, a, S, z, o, 1, 1, 0)
                        : dse_scale_run_qfast(&F, sc, c, a, S, z, o, 0, 1, 0);
                else
                    sgn ? dse_scale_run_qfast(&F, sc, c, a, S, z, o, 1, 0, 0)
                        : dse_scale_run_qfast(&F, sc, c, a, S, z, o, 0, 0, 0);
            }
            return;
        }
        float qlo, qhi;
        const int fold = act != DSE_ACT_NONE && dse_act_in_quant(sc, &qlo, &qhi);
        if (fold)
            v.qlo = _mm512_set1_ps(qlo), v.qhi = _mm512_set1_ps(qhi);
        for (int64_t r = 0; r < nrun; r++, a = (const char *)a + S * esz, o = dse_scaled_out(sc, o, ld)) {
            if (fold)
                sgn ? dse_scale_run_q32(&v, a, S, o, DSE_ACT_NONE, 1) : dse_scale_run_q32(&v, a, S, o, DSE_ACT_NONE, 0);
            else
                sgn ? dse_scale_run_q32(&v, a, S, o, act, 1) : dse_scale_run_q32(&v, a, S, o, act, 0);
        }
        return;
    }
    v.stream = sc->stream;
    for (int64_t r = 0; r < nrun; r++, a = (const char *)a + S * esz, o = dse_scaled_out(sc, o, ld)) {
        if (add)
            dse_scale512_at(&v, sc, o);
        for (int64_t j = 0; j < S; j += 16) {
            const __mmask16 m = S - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (S - j)) - 1);
            if (kind == DSE_SUM_I32 && m == 0xFFFF)
                dse_scale16_store(&v, dse_scale16_at(&v, (const int32_t *)a + j), o, j, 16, act, quant, add);
            else if (kind == DSE_SUM_I32) /* masked loads: tail only */
                dse_scale16_i32(&v, _mm512_maskz_loadu_epi32(m, (const int32_t *)a + j), o, j, S - j, act, quant, add);
            else
                dse_scale16_store(&v, dse_scale16(&v, dse_sums8_pd(a, j, (__mmask8)m, kind),
                                                  dse_sums8_pd(a, j + 8, (__mmask8)(m >> 8), kind)),
                                  o, j, S - j, act, quant, add);
        }
    }
}

#define DSE_SCALE_INSTANCE_512(p, act, quant, add)                                                                     \
    DSE_T_512 static void p##_##act##_##quant##_##add(const void *a, int64_t nrun, int64_t S, const dse_scaling *sc,  \
                                                      int64_t c, void *o, int64_t ld)                                  \
    {                                                                                                                  \
        dse_scale_run_512(a, nrun, S, sc, c, o, ld, p##_kind, act, quant, add);                                       \
    }
enum { dse_scale_512_0_kind = 0, dse_scale_512_1_kind = 1, dse_scale_512_2_kind = 2 };
DSE_VARIANTS(DSE_SCALE_INSTANCE_512, dse_scale_512_0)
DSE_VARIANTS(DSE_SCALE_INSTANCE_512, dse_scale_512_1)
DSE_VARIANTS(DSE_SCALE_INSTANCE_512, dse_scale_512_2)
static const dse_scale_fn dse_scale_fns_512[3][12] = {DSE_VARIANT_NAMES(dse_scale_512_0),
                                                      DSE_VARIANT_NAMES(dse_scale_512_1),
                                                      DSE_VARIANT_NAMES(dse_scale_512_2)};

/* A SiLU output step's scaling up to the scaled float32 values (no act, quantization, SiLU, streaming or add): what
 * its passes write before numpy's loops take the SiLU (dse_scale_runs_silu, int_gemm.h's dse_ig_flush_silu). */
static inline dse_scaling dse_scaling_values(const dse_scaling *sc)
{
    dse_scaling f = *sc;
    f.quant = 0, f.silu = 0, f.stream = 0, f.drop = 0, f.qf = NULL, f.act = DSE_ACT_NONE, f.add = NULL;
    return f;
}

/* dse_scale_runs with a SiLU (sc->silu): the nrun * S outputs in chunks of at most DSE_SIGMOID_CHUNK (short runs
 * share one), each piece of a run scaled to float32 into a buffer (the pass without act and quant), the chunk's SiLU
 * by dse_sigmoid_chunk into another, each piece then written: its patterns with sc->quant (dse_quantize_seq), else
 * the float32 values. The bits of the float32 scaling pass, numpy's loops on its output, and the quantizer. */
static void dse_scale_runs_silu(int level, const void *a, int kind, int64_t nrun, int64_t S, const dse_scaling *sc,
                                int64_t c, void *o, int64_t ld)
{
    float bx[DSE_SIGMOID_CHUNK] __attribute__((aligned(64))), bs[DSE_SIGMOID_CHUNK] __attribute__((aligned(64)));
    const dse_scaling f = dse_scaling_values(sc);
    const int64_t esz = kind == DSE_SUM_I32 ? 4 : 8, n = nrun * S;
    for (int64_t t0 = 0; t0 < n; t0 += DSE_SIGMOID_CHUNK) {
        const int64_t m = n - t0 < DSE_SIGMOID_CHUNK ? n - t0 : DSE_SIGMOID_CHUNK;
        for (int64_t t = t0, l; t < t0 + m; t += l) { /* the chunk's pieces of runs */
            l = S - t % S < t0 + m - t ? S - t % S : t0 + m - t;
            dse_scale_runs(level, (const char *)a + t * esz, kind, 1, l, &f, c, bx + (t - t0), 0);
        }
        dse_sigmoid_chunk(level, sc->loops, bx, bs, m, sc->silu);
        for (int64_t t = t0, l; t < t0 + m; t += l) {
            l = S - t % S < t0 + m - t ? S - t % S : t0 + m - t;
            dse_emit_silu_values(level, sc, bs + (t - t0), l, o, (t / S) * ld + t % S);
        }
    }
}

/* Channel c's nrun runs of S outputs from sums of the given kind (DSE_SUM_*), run r's sums at a + r S, its outputs
 * from element r ld of o on: AVX-512 at level avx512, AVX2 at level avx2, else the portable loop (with a SiLU:
 * dse_scale_runs_silu). */
static void dse_scale_runs(int level, const void *a, int kind, int64_t nrun, int64_t S, const dse_scaling *sc,
                           int64_t c, void *o, int64_t ld)
{
    if (sc->silu) {
        dse_scale_runs_silu(level, a, kind, nrun, S, sc, c, o, ld);
        return;
    }
    const double f = (double)sc->sw[c];
    const float b = sc->bias[c];
    if (level >= DSE_ISA_AVX512)
        dse_scale_fns_512[kind][dse_scaled_variant(sc)](a, nrun, S, sc, c, o, ld);
    else if (level >= DSE_ISA_AVX2)
        dse_scale_fns[kind][dse_scaled_variant(sc)](a, nrun, S, sc, c, o, ld);
    else
        for (int64_t r = 0; r < nrun; r++)
            for (int64_t j = 0; j < S; j++) {
                const int64_t i = r * S + j;
                dse_emit1(sc, dse_scale1(kind == DSE_SUM_I32 ? ((const int32_t *)a)[i] : ((const int64_t *)a)[i],
                                         sc->sa, f, b), o, r * ld + j);
            }
}

#define DSE_DW_QUADS_FAST(p, clamp)                                                                                    \
    (sc->qlo < 0 ? dse_dw_quads_body(P, gq, wq, init, ns, off, odst, tab, tabs, NULL, p##_sg, &v, cnt, o, DSE_ACT_NONE, \
                                     1, 0, &F, 1, 1, clamp)                                                            \
                 : dse_dw_quads_body(P, gq, wq, init, ns, off, odst, tab, tabs, NULL, p##_sg, &v, cnt, o, DSE_ACT_NONE, \
                                     1, 0, &F, 1, 0, clamp))
#define DSE_DW_QUADS_SCALED(p, act, quant, add)                                                                        \
    DSE_T_VNNI512 static void p##_##act##_##quant##_##add(                                                             \
        const uint8_t *P, const dse_dw_groups *gq, const int32_t *wq, int32_t init, int64_t ns, const int64_t *off,     \
        const int64_t *odst, const uint8_t *tab, const uint8_t *cnt, const uint8_t *tabs, const dse_scaling *sc,        \
        int64_t c, void *o)                                                                                            \
    {                                                                                                                  \
        dse_scale512 v;                                                                                                \
        dse_scale512_init(&v, sc, c);                                                                                  \
        if (add)                                                                                                       \
            dse_scale512_at(&v, sc, o);                                                                                \
        float qlo, qhi; /* a quantized output's Relu/Clip folded into the quantization's clamp where exact */          \
        dse_qfast F;                                                                                                   \
        if (quant && !add && dse_qfast_at(sc, c, &F)) { /* the certified single-precision patterns */                  \
            v.qlo = _mm512_set1_ps(sc->qf[1]), v.qhi = _mm512_set1_ps(sc->qf[2]);                                      \
            if (sc->qf[3] != 0.0f)                                                                                     \
                DSE_DW_QUADS_FAST(p, 1);                                                                               \
            else                                                                                                       \
                DSE_DW_QUADS_FAST(p, 0);                                                                               \
        } else if (quant && !add && act != DSE_ACT_NONE && dse_act_in_quant(sc, &qlo, &qhi)) {                         \
            v.qlo = _mm512_set1_ps(qlo), v.qhi = _mm512_set1_ps(qhi);                                                  \
            dse_dw_quads_body(P, gq, wq, init, ns, off, odst, tab, tabs, NULL, p##_sg, &v, cnt, o, DSE_ACT_NONE, 1, 0, \
                              NULL, 0, 0, 0);                                                                          \
        } else                                                                                                         \
            dse_dw_quads_body(P, gq, wq, init, ns, off, odst, tab, tabs, NULL, p##_sg, &v, cnt, o, act, quant, add,    \
                              NULL, 0, 0, 0);                                                                          \
    }
enum { dse_dw_quads_scaled_0_sg = 0, dse_dw_quads_scaled_1_sg = 1 };
DSE_VARIANTS(DSE_DW_QUADS_SCALED, dse_dw_quads_scaled_0)
DSE_VARIANTS(DSE_DW_QUADS_SCALED, dse_dw_quads_scaled_1)
typedef void (*dse_dw_quads_scaled_fn)(const uint8_t *, const dse_dw_groups *, const int32_t *, int32_t, int64_t,
                                       const int64_t *, const int64_t *, const uint8_t *, const uint8_t *,
                                       const uint8_t *, const dse_scaling *, int64_t, void *);
static const dse_dw_quads_scaled_fn dse_dw_quads_scaled_fns[2][12] = {DSE_VARIANT_NAMES(dse_dw_quads_scaled_0),
                                                                      DSE_VARIANT_NAMES(dse_dw_quads_scaled_1)};

static void dse_dw_run_quads_scaled_512(const uint8_t *P, const dse_dw_groups *gq, const int32_t *wq, int32_t init,
                                        int64_t ns, const int64_t *off, const int64_t *odst, const uint8_t *tab,
                                        const uint8_t *cnt, const uint8_t *tabs, int a_signed, const dse_scaling *sc,
                                        int64_t c, void *o)
{
    dse_dw_quads_scaled_fns[a_signed != 0][dse_scaled_variant(sc)](P, gq, wq, init, ns, off, odst, tab, cnt, tabs, sc,
                                                                    c, o);
}

/* One channel's run of S outputs (dse_scale_runs with one run). */
static void dse_scale_sums(int level, const void *a, int kind, int64_t S, const dse_scaling *sc, int64_t c, void *o)
{
    dse_scale_runs(level, a, kind, 1, S, sc, c, o, 0);
}

/* nrun positions' outputs of the n channels c..c+n-1 (a channels-last output's runs) from sums of the given kind,
 * run r's n sums at a + r lda, its outputs from element r ld of o on: dse_scale1 / dse_emit1 per element with each
 * channel's own sw and bias, 8 channels per step at the avx2 level and above (the same operations: the same bits),
 * else one by one. No SiLU (sc->silu: its runs take dse_scale_runs). */
static void dse_scale_cols(int level, const void *a, int kind, int64_t nrun, int64_t n, int64_t lda,
                           const dse_scaling *sc, int64_t c, void *o, int64_t ld)
{
    if (level >= DSE_ISA_AVX2) {
        dse_scale_cols_fns[kind][dse_scaled_variant(sc)](a, nrun, n, lda, sc, c, o, ld);
        return;
    }
    dse_scale_cols_rest(a, kind, nrun, 0, n, lda, sc, c, o, ld);
}



/* y[r, c, j] = act(float32((double(acc[r, c, j]) * sa) * double(sw[c])) + bias[c]) (float32 add), acc int64
 * [R, N, S], or with sc->quant its uint8 pattern; AVX2 at level avx2, AVX-512 at level avx512, the same bits. */
static void dse_dequantize(int level, const int64_t *acc, int64_t R, int64_t N, int64_t S, const dse_scaling *sc,
                           void *y, int small, int nt)
{
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < R * N; t++)
        dse_scale_sums(level, acc + t * S, small ? DSE_SUM_SMALL : DSE_SUM_I64, S, sc, t % N,
                       dse_scaled_out(sc, y, t * S));
}

#endif
