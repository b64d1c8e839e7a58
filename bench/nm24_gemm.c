/* nm24_gemm.c - each dense weight type against its 2:4 sparse variant (f32 vs
 * nm24, bf16 vs nm24:bf16, q8 vs nm24:q8), side by side, single thread, on the
 * seed expert shapes (N x K = 256 x 512 up, 512 x 256 down; M = 1, 64, 1024),
 * in GMAC/s counted dense-equivalent (M * N * K per GEMM, for both), and the
 * ratio sparse / dense. Then "layer": the expert work of one seed MoE layer at
 * batch 1 (2 of 8 experts per token, up 256x512 + bias + relu, down 512x256 +
 * bias + residual), tokens/s: the batch-1 proxy of the end-to-end speed.
 *
 * A type whose optimized kernels are not in this build runs its reference
 * kernel (the "kern" column says which ISA's kernel ran): compare such a row
 * against f32, not against its own dense type.
 *
 * Build (after `make lib`):
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/nm24_gemm.c \
 *      build/libdeepmoe.a -ljansson -lmicrohttpd -lz -lm -pthread -o build/nm24_gemm
 * Usage: build/nm24_gemm [--isa ref|avx2|avx512] [--copies C] [--ms MS] [--reps R] [--only NAME]
 *   --copies C  rotate over C copies of each weight (default 1: the weight stays
 *               in cache; e.g. 16 makes batch 1 read it from L3, as a model's
 *               many experts would)
 *   --ms MS     milliseconds per timing (default 100); --reps R timings per
 *               variant, dense and sparse interleaved (default 5; the best shown)
 *   --only NAME only the pair whose dense type is NAME (f32, bf16, q8)
 *   --shape NxK, --m M  one weight shape / one M instead of the seed's (no layer line) */
#include "base/base.h"
#include "kernels/wtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(float *x, int64_t n, uint64_t seed)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = dm_rng_uniform(&r, -1, 1);
}

/* copies packed copies of random [N, K] weights of type t for isa. */
typedef struct operand {
    int copies;
    dm_wmat w[64];
    void *work;
} operand;

static void operand_init(operand *o, const dm_wtype *t, dm_isa isa, int N, int K, int copies, int64_t Mmax,
                         uint64_t seed)
{
    o->copies = copies;
    float *W = malloc((size_t)N * K * sizeof *W);
    void *file = dm_alloc(dm_wtype_file_bytes(t, N, K, 0) + 64), *part[DM_WPARTS];
    dm_wtype_split(t, N, K, 0, file, part);
    for (int c = 0; c < copies; c++) {
        fill(W, (int64_t)N * K, seed + (uint64_t)c);
        t->quantize_ref(W, N, K, 0, part);
        dm_wmat_bind(&o->w[c], t, isa, N, K, 0, dm_alloc(dm_wmat_data_size(t, isa, N, K, 0)));
        dm_wmat_pack(&o->w[c], (const void *const *)part);
    }
    size_t nw = dm_wmat_work_size(&o->w[0], Mmax);
    o->work = nw ? dm_alloc(nw) : NULL;
    dm_free(file);
    free(W);
}

static void operand_free(operand *o)
{
    for (int c = 0; c < o->copies; c++) dm_free(o->w[c].data);
    dm_free(o->work);
}

/* GMAC/s (dense-equivalent) of C = A W^T over ms milliseconds, rotating the copies. */
static double time_gemm(const operand *o, int64_t M, int N, int K, const float *A, float *C, double ms)
{
    dm_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .C = C, .ldc = N, .work = o->work};
    g.B = &o->w[0];
    dm_wmat_gemm(&g);  /* warm up */
    int64_t iters = 0;
    double t0 = now(), t = t0;
    while (t - t0 < ms * 1e-3) {
        for (int j = 0; j < (M == 1 ? 8 : 1); j++, iters++) {
            g.B = &o->w[iters % o->copies];
            dm_wmat_gemm(&g);
        }
        t = now();
    }
    return (double)iters * (double)M * N * K / (t - t0) * 1e-9;
}

/* The expert work of one seed layer at batch 1: tokens/s. */
typedef struct layer {
    operand up, down;  /* 8 copies each: the experts */
    float b1[256], b2[512];
} layer;

static double time_layer(const layer *L, const float *x, float *h, float *y, double ms)
{
    int64_t tokens = 0;
    uint64_t s = 12345;
    double t0 = now(), t = t0;
    while (t - t0 < ms * 1e-3) {
        for (int j = 0; j < 8; j++, tokens++)
            for (int e = 0; e < 2; e++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                int ex = (int)((s >> 33) % 8);
                dm_gemm up = {.M = 1, .N = 256, .K = 512, .A = x, .lda = 512, .B = &L->up.w[ex],
                              .bias = L->b1, .act = DM_ACT_RELU, .C = h, .ldc = 256, .work = L->up.work};
                dm_wmat_gemm(&up);
                dm_gemm down = {.M = 1, .N = 512, .K = 256, .A = h, .lda = 256, .B = &L->down.w[ex],
                                .bias = L->b2, .R = x, .ldr = 512, .C = y + e * 512, .ldc = 512,
                                .work = L->down.work};
                dm_wmat_gemm(&down);
            }
        t = now();
    }
    return (double)tokens / (t - t0);
}

int main(int argc, char **argv)
{
    dm_isa isa = DM_ISA_AUTO;
    static int shapes[][2] = {{256, 512}, {512, 256}};
    static int64_t Ms[] = {1, 64, 1024};
    size_t n_shapes = 2, n_ms = 3;
    int layer_too = 1;
    int copies = 1, reps = 5;
    double ms = 100;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--isa"))
            isa = !strcmp(argv[i + 1], "ref") ? DM_ISA_REF : !strcmp(argv[i + 1], "avx2") ? DM_ISA_AVX2 : DM_ISA_AVX512;
        else if (!strcmp(argv[i], "--copies")) copies = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ms")) ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!strcmp(argv[i], "--shape")) {
            if (sscanf(argv[i + 1], "%dx%d", &shapes[0][0], &shapes[0][1]) != 2 || shapes[0][0] < 1 ||
                shapes[0][1] < 4 || shapes[0][1] % 4 || shapes[0][0] > 4096 || shapes[0][1] > 4096) {
                fprintf(stderr, "--shape NxK: N, K <= 4096, K a multiple of 4\n");
                return 2;
            }
            n_shapes = 1;
        }
        else if (!strcmp(argv[i], "--m")) {
            Ms[0] = atoi(argv[i + 1]);
            n_ms = 1;
            if (Ms[0] < 0 || Ms[0] > 4096) { fprintf(stderr, "--m M: 0 <= M <= 4096\n"); return 2; }
        }
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (copies < 1) copies = 1;
    if (copies > 64) copies = 64;
    isa = dm_isa_resolve(isa);
    static const int pairs[][2] = {{DM_WT_F32, DM_WT_NM24}, {DM_WT_BF16, DM_WT_NM24_BF16}, {DM_WT_Q8, DM_WT_NM24_Q8}};
    if (n_shapes == 1 || n_ms == 1) layer_too = 0;
    int64_t mmax = 1024, kmax = 4096;
    for (size_t mi = 0; mi < n_ms; mi++) mmax = Ms[mi] > mmax ? Ms[mi] : mmax;
    float *A = dm_alloc((size_t)(mmax * kmax) * sizeof(float)), *C = dm_alloc((size_t)(mmax * kmax) * sizeof(float));
    fill(A, mmax * kmax, 7);
    printf("isa %s, copies %d, best of %d x %.0f ms, single thread, GMAC/s dense-equivalent\n",
           dm_isa_name(isa), copies, reps, ms);
    printf("%-10s %-8s %-11s %5s %-6s %9s %-6s %9s %7s\n", "dense", "kern", "sparse", "M", "NxK", "dense", "kern",
           "sparse", "ratio");
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        const dm_wtype *td = &dm_wtypes[pairs[p][0]], *ts = &dm_wtypes[pairs[p][1]];
        if (only && strcmp(only, td->name)) continue;
        const char *kd = dm_isa_name(dm_wtype_kern(td, isa)->isa), *ks = dm_isa_name(dm_wtype_kern(ts, isa)->isa);
        for (size_t s = 0; s < n_shapes; s++) {
            int N = shapes[s][0], K = shapes[s][1];
            operand od, os;
            operand_init(&od, td, isa, N, K, copies, mmax, 100 + p * 10 + s);
            operand_init(&os, ts, isa, N, K, copies, mmax, 100 + p * 10 + s);
            for (size_t mi = 0; mi < n_ms; mi++) {
                int64_t M = Ms[mi];
                double msd = ms, mss = ms;
                double bd = 0, bs = 0;
                for (int r = 0; r < reps; r++) {
                    double gd = time_gemm(&od, M, N, K, A, C, msd), gs = time_gemm(&os, M, N, K, A, C, mss);
                    bd = gd > bd ? gd : bd;
                    bs = gs > bs ? gs : bs;
                }
                printf("%-10s %-8s %-11s %5lld %3dx%-3d %9.2f %-6s %9.2f %7.2f\n", td->name, kd, ts->name,
                       (long long)M, N, K, bd, ks, bs, bs / bd);
                fflush(stdout);
            }
            operand_free(&od);
            operand_free(&os);
        }
        if (!layer_too) continue;
        /* the layer: 8 experts of each type */
        layer Ld, Ls;
        float x[512], h[256], y[1024];
        fill(x, 512, 3);
        layer *Lp[2] = {&Ld, &Ls};
        for (int v = 0; v < 2; v++) {
            const dm_wtype *t = v ? ts : td;
            operand_init(&Lp[v]->up, t, isa, 256, 512, 8, 1, 500 + p);
            operand_init(&Lp[v]->down, t, isa, 512, 256, 8, 1, 600 + p);
            fill(Lp[v]->b1, 256, 8);
            fill(Lp[v]->b2, 512, 9);
        }
        double bd = 0, bs = 0;
        for (int r = 0; r < reps; r++) {
            double td_ = time_layer(&Ld, x, h, y, ms), ts_ = time_layer(&Ls, x, h, y, ms);
            bd = td_ > bd ? td_ : bd;
            bs = ts_ > bs ? ts_ : bs;
        }
        printf("%-10s %-8s %-11s layer: 2 of 8 experts at batch 1, tokens/s: %9.0f vs %9.0f, ratio %.2f\n", td->name,
               kd, ts->name, bd, bs, bs / bd);
        for (int v = 0; v < 2; v++) {
            operand_free(&Lp[v]->up);
            operand_free(&Lp[v]->down);
        }
    }
    dm_free(A);
    dm_free(C);
    return 0;
}
