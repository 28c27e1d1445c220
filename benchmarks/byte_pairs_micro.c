/* Stand-alone timing of the int16 micro-kernel (dse_ig_micro_avx2's loop, copied) against the byte-pair form of the
 * byte-quad kernel (vpmaddubsw + vpmaddwd with ones + vpaddd; asm with the ones as a memory operand, and intrinsics)
 * over an L2-resident block of 256 positions (16 panels of MR 16) x N rows, blocked by 128 depth steps as the driver
 * does; median GMAC/s of 41 interleaved runs. Build and run: gcc -O2 -o /tmp/bp benchmarks/byte_pairs_micro.c && /tmp/bp
 * (RESULTS.md, "Exact byte operands at the avx2 level without VNNI"). */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define NR 6
#define T __attribute__((target("avx2")))
#define A2_PAIR(off, x, y) \
    "vpbroadcastd " #off "(%[b]), %%ymm14\n\t" \
    "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" \
    "vpaddd %%ymm15, %[" #x "], %[" #x "]\n\t" \
    "vpmaddwd %%ymm14, %%ymm13, %%ymm15\n\t" \
    "vpaddd %%ymm15, %[" #y "], %[" #y "]\n\t"
#define STORE12 \
    __m256i cs[NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}}; \
    for (int r = 0; r < NR; r++) { __m256i *o = (__m256i *)(C + r * ldc); \
        if (acc) { cs[r][0] = _mm256_add_epi32(cs[r][0], _mm256_loadu_si256(o)); cs[r][1] = _mm256_add_epi32(cs[r][1], _mm256_loadu_si256(o + 1)); } \
        _mm256_storeu_si256(o, cs[r][0]); _mm256_storeu_si256(o + 1, cs[r][1]); }
#define OUTS [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), \
      [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), \
      [c50] "+x"(c50), [c51] "+x"(c51), [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
T static void micro16(const void *Av, const void *Bv, int64_t kcp, int32_t *C, int64_t ldc, int acc)
{
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const uint8_t *a = Av, *b = Bv; int64_t n = kcp;
    __asm__ volatile(".p2align 4\n1:\n\t"
        "vmovdqu (%[a]), %%ymm12\n\tvmovdqu 32(%[a]), %%ymm13\n\t"
        A2_PAIR(0, c00, c01) A2_PAIR(4, c10, c11) A2_PAIR(8, c20, c21)
        A2_PAIR(12, c30, c31) A2_PAIR(16, c40, c41) A2_PAIR(20, c50, c51)
        "add $64, %[a]\n\tadd $24, %[b]\n\tdec %[n]\n\tjnz 1b\n\t"
        : OUTS : : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
    STORE12
}
static const int16_t ONES[16] __asm__("mb_ones") __attribute__((aligned(32), used)) = {1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1};
/* byte quads: maddubs(a unsigned, w signed) -> madd ones (memory) -> add */
#define UB_PAIR(off, x, y) \
    "vpbroadcastd " #off "(%[b]), %%ymm14\n\t" \
    "vpmaddubsw %%ymm14, %%ymm12, %%ymm15\n\t" \
    "vpmaddwd mb_ones(%%rip), %%ymm15, %%ymm15\n\t" \
    "vpaddd %%ymm15, %[" #x "], %[" #x "]\n\t" \
    "vpmaddubsw %%ymm14, %%ymm13, %%ymm15\n\t" \
    "vpmaddwd mb_ones(%%rip), %%ymm15, %%ymm15\n\t" \
    "vpaddd %%ymm15, %[" #y "], %[" #y "]\n\t"
T static void microub(const void *Av, const void *Bv, int64_t kcq, int32_t *C, int64_t ldc, int acc)
{
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const uint8_t *a = Av, *b = Bv; int64_t n = kcq;
    __asm__ volatile(".p2align 4\n1:\n\t"
        "vmovdqu (%[a]), %%ymm12\n\tvmovdqu 32(%[a]), %%ymm13\n\t"
        UB_PAIR(0, c00, c01) UB_PAIR(4, c10, c11) UB_PAIR(8, c20, c21)
        UB_PAIR(12, c30, c31) UB_PAIR(16, c40, c41) UB_PAIR(20, c50, c51)
        "add $64, %[a]\n\tadd $24, %[b]\n\tdec %[n]\n\tjnz 1b\n\t"
        : OUTS : : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
    STORE12
}
/* intrinsics version (compiler allocates) */
#define IROW(r) do { const __m256i w = _mm256_set1_epi32(b[r]); \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, w), ones)); \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(_mm256_maddubs_epi16(a1, w), ones)); } while (0)
T static void microub_i(const void *Av, const void *Bv, int64_t kcq, int32_t *C, int64_t ldc, int acc)
{
    const uint8_t *A = Av; const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t p = 0; p < kcq; p++) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(A + p * 64));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(A + p * 64 + 32));
        const int32_t *b = (const int32_t *)Bv + p * NR;
        IROW(0); IROW(1); IROW(2); IROW(3); IROW(4); IROW(5);
    }
    STORE12
}
typedef void (*fn)(const void *, const void *, int64_t, int32_t *, int64_t, int);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
/* a GEMM of MC=256 positions x N rows x K depth rows, blocked as the driver: depth blocks of kc steps (g rows per step) */
static double run(fn f, int g, int64_t K, int64_t N, uint8_t *A, uint8_t *B, int32_t *C)
{
    const int64_t steps = (K + g - 1) / g, kc = 128, ntile = (N + NR - 1) / NR;
    double t0 = now();
    for (int64_t s0 = 0; s0 < steps; s0 += kc) {
        const int64_t k = steps - s0 < kc ? steps - s0 : kc;
        for (int64_t nt = 0; nt < ntile; nt++)
            for (int q = 0; q < 16; q++)
                f(A + q * k * 64, B + (nt * steps + s0) * 24, k, C + nt * NR * 256 + q * 16, 256, s0 > 0);
    }
    return now() - t0;
}
static int cmpd(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv)
{
    int64_t Ks[] = {16, 32, 64, 128, 256, 512, 2304}; int64_t Ns[] = {64, 64, 96, 128, 128, 64, 256};
    uint8_t *A = aligned_alloc(64, 1 << 20), *B = aligned_alloc(64, 8 << 20); int32_t *C = aligned_alloc(64, 4 << 20);
    for (int i = 0; i < (1 << 20); i++) A[i] = rand() & 127;
    for (int i = 0; i < (8 << 20); i++) B[i] = rand() % 64;
    fn fs[3] = {micro16, microub, microub_i}; const char *nm[3] = {"int16", "ub_asm", "ub_intr"}; int gs[3] = {2, 4, 4};
    const int R = 41;
    printf("%6s %5s %10s %10s %10s %8s %8s\n", "K", "N", "int16", "ub_asm", "ub_intr", "asm/16", "intr/16");
    for (int c = 0; c < 7; c++) {
        const int64_t K = Ks[c], N = Ns[c];
        double macs = 256.0 * N * K, t[3][R];
        long reps = (long)(2e8 / macs) + 1;
        for (int r = 0; r < R; r++)
            for (int v = 0; v < 3; v++) {
                double s = now();
                for (long i = 0; i < reps; i++) run(fs[v], gs[v], K, N, A, B, C);
                t[v][r] = (now() - s) / reps;
            }
        double g[3];
        for (int v = 0; v < 3; v++) { qsort(t[v], R, sizeof(double), cmpd); g[v] = macs / t[v][R / 2] * 1e-9; }
        printf("%6ld %5ld %10.1f %10.1f %10.1f %8.2f %8.2f\n", (long)K, (long)N, g[0], g[1], g[2], g[1] / g[0], g[2] / g[0]);
    }
    (void)nm;
    return 0;
}
