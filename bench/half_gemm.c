/* half_gemm.c - single-thread GEMM micro benchmark: f32 vs bf16 vs f16 weights
 * on the seed MoE expert shapes (N x K = 256x512 and 512x256; D=512, H=256),
 * M = 1, 32, 64, 1024 rows, through the same dm_wmat_gemm call the model makes.
 * The three types run interleaved, round after round, so that a machine shared
 * with other jobs slows them alike; each figure is the best round's 10th
 * percentile of single-call times (time_calls). Prints
 * GMAC/s per type, the ratio to f32, and for M = 1 the microseconds per call,
 * with the weights in L2 (one matrix, called again and again) and from beyond
 * it ("M=1 cold": a ring of copies of 24 MB of fp32 weights, as a model whose
 * experts do not all fit in L2 sees them).
 *
 * Build (x86-64; after `make lib`) and run, from the repository root:
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/half_gemm.c build/libdeepmoe.a \
 *      $(pkg-config --libs jansson libmicrohttpd) -lz -lm -pthread -o build/half_gemm
 *   build/half_gemm [isa] [seconds] [M,M,...]
 *   isa: avx512 (default), avx2, ref; seconds per figure (0.3); the row counts (1,32,64,1024)
 * DEEPMOE_AMX=0 in the environment turns the bf16 AMX path off (wt_half.h).
 * With isa avx512 it first prints the ceilings of one core (register-only
 * loops, 12 independent chains): vfmadd231ps zmm, vdpbf16ps zmm and AMX
 * tdpbf16ps, in GMAC/s, where the CPU has them. */
#include "base/base.h"
#include "kernels/wt_half.h"
#include "kernels/wtype.h"

#include <immintrin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One type's packed weight and its GEMM's buffers. */
typedef struct bench_case {
    const dm_wtype *type;
    dm_wmat w;
    void *data, *work;
    dm_gemm g;
} bench_case;

static void case_init(bench_case *b, const dm_wtype *t, dm_isa isa, const float *W, int N, int K,
                      const float *A, float *C, int64_t M, const float *bias)
{
    b->type = t;
    void *file = dm_alloc(dm_wtype_file_bytes(t, N, K, 0) + 64), *part[DM_WPARTS];
    dm_wtype_split(t, N, K, 0, file, part);
    t->quantize_ref(W, N, K, 0, part);
    b->data = dm_alloc(dm_wmat_data_size(t, isa, N, K, 0) + 64);
    dm_wmat_bind(&b->w, t, isa, N, K, 0, b->data);
    dm_wmat_pack(&b->w, (const void *const *)part);
    dm_free(file);
    size_t ws = dm_wmat_work_size(&b->w, M);
    b->work = ws ? dm_alloc(ws) : NULL;
    b->g = (dm_gemm){.M = M, .N = N, .K = K, .A = A, .lda = K, .B = &b->w, .bias = bias,
                     .act = DM_ACT_RELU, .C = C, .ldc = N, .work = b->work};
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seconds per call: each call timed alone, for `secs`, cycling through n
 * packs of the weight (data[i]; n = 1: the GEMM's own); the 10th percentile
 * of the calls, which on a machine shared with other jobs is a call that ran
 * uninterrupted, and not just the luckiest one. */
static double time_calls(dm_gemm *g, void *const *data, int n, double secs)
{
    enum { CAP = 1 << 20 };
    static double t[CAP];
    dm_wmat w = *g->B;
    const dm_wmat *saved = g->B;
    g->B = &w;
    int64_t calls = 0;
    double end = now_s() + secs;
    for (;;) {
        if (data) w.data = data[calls % n];
        double t0 = now_s();
        dm_wmat_gemm(g);
        double t1 = now_s();
        if (calls < CAP) t[calls] = t1 - t0;
        calls++;
        if (t1 > end) break;
    }
    g->B = saved;
    int64_t m = calls < CAP ? calls : CAP;
    qsort(t, (size_t)m, sizeof t[0], cmp_double);
    return t[m / 10];
}

/* ---------------------------------------------------------------- ceilings */

#define PEAK_ITERS 4000000L
#define X12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
/* Register-only loops with 12 independent accumulators (named variables,
 * so that they stay in registers); GMAC/s. */
__attribute__((target("avx512f,fma"))) static double peak_fma(void)
{
    __m512 a = _mm512_set1_ps(1e-9f), b = _mm512_set1_ps(1.0f);
#define DECL(j) __m512 c##j = _mm512_set1_ps((float)j);
    X12(DECL)
#undef DECL
    double t0 = now_s();
    for (long i = 0; i < PEAK_ITERS; i++) {
#define STEP(j) c##j = _mm512_fmadd_ps(a, b, c##j);
        X12(STEP)
#undef STEP
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    double t = now_s() - t0;
    float sink = 0;
#define SUM(j) sink += _mm512_reduce_add_ps(c##j);
    X12(SUM)
    __asm__ volatile("" : : "x"(sink));
    return PEAK_ITERS * 12.0 * 16 / t * 1e-9;
}

__attribute__((target("avx512f,avx512bf16"))) static double peak_dpbf16(void)
{
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0);
#define DECL(j) __m512 c##j = _mm512_set1_ps((float)j);
    X12(DECL)
#undef DECL
    double t0 = now_s();
    for (long i = 0; i < PEAK_ITERS; i++) {
#define STEP(j) c##j = _mm512_dpbf16_ps(c##j, a, b);
        X12(STEP)
#undef STEP
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    double t = now_s() - t0;
    float sink = 0;
    X12(SUM)
#undef SUM
    __asm__ volatile("" : : "x"(sink));
    return PEAK_ITERS * 12.0 * 32 / t * 1e-9;
}

/* tdpbf16ps on four 16 x 16 C tiles from two A and two B tiles held in
 * registers (16 x 16 x 32 = 8192 MACs each); needs AMX granted (wt_half.h). */
typedef struct tile_cfg { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } tile_cfg;
__attribute__((target("amx-tile,amx-bf16"))) static double peak_amx(void)
{
    tile_cfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    static uint16_t ab[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) ab[i] = 0x3f80;
    __asm__ volatile("" : : "r"(&cfg), "r"(ab) : "memory");
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ab, 64); _tile_loadd(5, ab, 64); _tile_loadd(6, ab, 64); _tile_loadd(7, ab, 64);
    long n = PEAK_ITERS / 20;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    double t = now_s() - t0;
    _tile_release();
    return n * 4.0 * 8192 / t * 1e-9;
}

/* Each ceiling: the best of 9 short runs, the three loops interleaved. */
static void print_peaks(void)
{
    int bf16 = dm_cpu_has(DM_CPU_BF16), amx = bf16 && dm_wt_bf16_amx(-1);
    double best[3] = {0, 0, 0};
    for (int r = 0; r < 9; r++) {
        double v[3] = {peak_fma(), bf16 ? peak_dpbf16() : 0, amx ? peak_amx() : 0};
        for (int j = 0; j < 3; j++) best[j] = v[j] > best[j] ? v[j] : best[j];
    }
    printf("ceilings, one core: vfmadd231ps zmm %.1f GMAC/s", best[0]);
    if (bf16) printf(", vdpbf16ps zmm %.1f GMAC/s (%.2fx FMA)", best[1], best[1] / best[0]);
    if (amx) printf(", AMX tdpbf16ps %.0f GMAC/s (%.1fx FMA)", best[2], best[2] / best[0]);
    printf("\n");
}

int main(int argc, char **argv)
{
    dm_isa isa = DM_ISA_AVX512;
    if (argc > 1) isa = !strcmp(argv[1], "ref") ? DM_ISA_REF : !strcmp(argv[1], "avx2") ? DM_ISA_AVX2 : DM_ISA_AVX512;
    double secs = argc > 2 ? atof(argv[2]) : 0.3;
    if (dm_isa_resolve(isa) != isa) {
        fprintf(stderr, "this CPU cannot run %s\n", dm_isa_name(isa));
        return 1;
    }
    static const int shapes[][2] = {{256, 512}, {512, 256}};
    int64_t Ms[16] = {1, 32, 64, 1024};
    size_t nm = 4;
    if (argc > 3) {  /* a comma-separated list of row counts */
        nm = 0;
        for (char *p = argv[3]; *p && nm < 16;) {
            Ms[nm++] = strtoll(p, &p, 10);
            if (*p == ',') p++;
            else break;
        }
    }
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_F32], &dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    enum { NT = 3, ROUNDS = 5 };
    if (isa == DM_ISA_AVX512) print_peaks();
    printf("isa %s, one thread, best of %d rounds of %.2f s\n", dm_isa_name(isa), ROUNDS, secs);
    printf("%5s %5s %5s | %9s %9s %9s | %6s %6s | %s\n", "N", "K", "M", "f32", "bf16", "f16", "bf16x", "f16x",
           "GMAC/s (M=1: us per call f32/bf16/f16; 1c: weights from beyond L2)");
    dm_rng r;
    dm_rng_seed(&r, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        float *W = dm_alloc((size_t)N * K * sizeof *W), *bias = dm_alloc((size_t)N * sizeof *bias);
        for (int64_t j = 0; j < (int64_t)N * K; j++) W[j] = dm_rng_uniform(&r, -0.1f, 0.1f);
        for (int j = 0; j < N; j++) bias[j] = dm_rng_uniform(&r, -0.1f, 0.1f);
        for (size_t mi = 0; mi < nm; mi++) {
            int64_t M = Ms[mi];
            float *A = dm_alloc((size_t)M * K * sizeof *A), *C = dm_alloc((size_t)M * N * sizeof *C);
            for (int64_t j = 0; j < M * K; j++) A[j] = dm_rng_uniform(&r, -1, 1);
            bench_case bc[NT];
            for (int t = 0; t < NT; t++) case_init(&bc[t], types[t], isa, W, N, K, A, C, M, bias);
            double best[NT];
            for (int t = 0; t < NT; t++) best[t] = 1e30;
            for (int round = 0; round < ROUNDS; round++)
                for (int t = 0; t < NT; t++) {
                    if (bc[t].w.kern->isa != isa) continue;  /* not on this ISA (the reference): skipped */
                    double sec = time_calls(&bc[t].g, NULL, 1, secs / ROUNDS);
                    if (sec < best[t]) best[t] = sec;
                }
            double macs = (double)M * N * K, gm[NT];
            for (int t = 0; t < NT; t++) gm[t] = macs / best[t] * 1e-9;
            printf("%5d %5d %5lld | %9.1f %9.1f %9.1f | %6.2f %6.2f |", N, K, (long long)M, gm[0], gm[1], gm[2],
                   gm[1] / gm[0], gm[2] / gm[0]);
            if (M == 1) printf(" %.2f / %.2f / %.2f us", best[0] * 1e6, best[1] * 1e6, best[2] * 1e6);
            printf("\n");
            if (M == 1) {  /* the same from beyond L2: a ring of copies */
                int nc = (int)(24.0 * 1024 * 1024 / ((double)N * K * 4)) + 1;
                void **ring[NT];
                for (int t = 0; t < NT; t++) {
                    size_t bytes = dm_wmat_data_size(types[t], isa, N, K, 0);
                    ring[t] = malloc((size_t)nc * sizeof *ring[t]);
                    for (int i = 0; i < nc; i++) {
                        ring[t][i] = dm_alloc(bytes + 64);
                        memcpy(ring[t][i], bc[t].data, bytes);
                    }
                    best[t] = 1e30;
                }
                for (int round = 0; round < ROUNDS; round++)
                    for (int t = 0; t < NT; t++) {
                        if (bc[t].w.kern->isa != isa) continue;
                        double sec = time_calls(&bc[t].g, ring[t], nc, secs / ROUNDS);
                        if (sec < best[t]) best[t] = sec;
                    }
                for (int t = 0; t < NT; t++) gm[t] = macs / best[t] * 1e-9;
                printf("%5d %5d %5s | %9.1f %9.1f %9.1f | %6.2f %6.2f | %.2f / %.2f / %.2f us\n", N, K, "1c", gm[0],
                       gm[1], gm[2], gm[1] / gm[0], gm[2] / gm[0], best[0] * 1e6, best[1] * 1e6, best[2] * 1e6);
                for (int t = 0; t < NT; t++) {
                    for (int i = 0; i < nc; i++) dm_free(ring[t][i]);
                    free(ring[t]);
                }
            }
            for (int t = 0; t < NT; t++) { dm_free(bc[t].data); dm_free(bc[t].work); }
            dm_free(A);
            dm_free(C);
        }
        dm_free(W);
        dm_free(bias);
    }
    return 0;
}
