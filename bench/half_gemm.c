/* half_gemm.c - single-thread GEMM micro benchmark: f32 vs bf16 vs f16 weights
 * on the seed MoE expert shapes (N x K = 256x512 and 512x256; D=512, H=256),
 * M = 1, 32, 64, 1024 rows, through the same dm_wmat_gemm call the model makes.
 * The three types run interleaved, round after round, so that a machine shared
 * with other jobs slows them alike; each figure is the best round. Prints
 * GMAC/s per type, the ratio to f32, and for M = 1 the microseconds per call.
 *
 * Build (after `make lib`) and run, from the repository root:
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/half_gemm.c build/libdeepmoe.a \
 *      $(pkg-config --libs jansson libmicrohttpd) -lz -lm -pthread -o build/half_gemm
 *   build/half_gemm [isa] [seconds]     isa: avx512 (default), avx2, ref; seconds per figure (0.3)
 * DEEPMOE_AMX=0 in the environment turns the bf16 AMX path off (wt_half.h). */
#include "base/base.h"
#include "kernels/wtype.h"

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

/* Seconds per call: calls in batches until `secs` have passed. */
static double time_calls(const dm_gemm *g, double secs)
{
    int64_t calls = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < 8; i++) dm_wmat_gemm(g);
        calls += 8;
        t = now_s();
    } while (t - t0 < secs);
    return (t - t0) / (double)calls;
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
    static const int64_t Ms[] = {1, 32, 64, 1024};
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_F32], &dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    enum { NT = 3, ROUNDS = 5 };
    printf("isa %s, one thread, best of %d rounds of %.2f s\n", dm_isa_name(isa), ROUNDS, secs);
    printf("%5s %5s %5s | %9s %9s %9s | %6s %6s | %s\n", "N", "K", "M", "f32", "bf16", "f16", "bf16x", "f16x",
           "GMAC/s (M=1: us per call f32/bf16/f16)");
    dm_rng r;
    dm_rng_seed(&r, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        float *W = dm_alloc((size_t)N * K * sizeof *W), *bias = dm_alloc((size_t)N * sizeof *bias);
        for (int64_t j = 0; j < (int64_t)N * K; j++) W[j] = dm_rng_uniform(&r, -0.1f, 0.1f);
        for (int j = 0; j < N; j++) bias[j] = dm_rng_uniform(&r, -0.1f, 0.1f);
        for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
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
                    double sec = time_calls(&bc[t].g, secs / ROUNDS);
                    if (sec < best[t]) best[t] = sec;
                }
            double macs = (double)M * N * K, gm[NT];
            for (int t = 0; t < NT; t++) gm[t] = macs / best[t] * 1e-9;
            printf("%5d %5d %5lld | %9.1f %9.1f %9.1f | %6.2f %6.2f |", N, K, (long long)M, gm[0], gm[1], gm[2],
                   gm[1] / gm[0], gm[2] / gm[0]);
            if (M == 1) printf(" %.2f / %.2f / %.2f us", best[0] * 1e6, best[1] * 1e6, best[2] * 1e6);
            printf("\n");
            for (int t = 0; t < NT; t++) { dm_free(bc[t].data); dm_free(bc[t].work); }
            dm_free(A);
            dm_free(C);
        }
        dm_free(W);
        dm_free(bias);
    }
    return 0;
}
