/* openblas_moe.c - the benchmark peer: the seed's MoE layer forward (D=512,
 * E=8, k=2, H=256) computed the usual way with a BLAS: router GEMM, top-k and
 * softmax, rows gathered per expert into a contiguous block, cblas_sgemm for
 * each expert's two Linear layers, bias/ReLU/LayerNorm/residual in plain C,
 * weighted scatter-add. Random weights; prints rows/s and useful GFLOP/s.
 * Built and run by bench/peers.sh (needs libopenblas-openmp-dev).
 * Usage: openblas_moe BATCH ITERS */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 512, E = 8, K = 2, H = 256 };

static float *rnd(size_t n, float s)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = s * (2.0f * rand() / (float)RAND_MAX - 1.0f);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int B = argc > 1 ? atoi(argv[1]) : 1024, iters = argc > 2 ? atoi(argv[2]) : 20;
    if (B < 1 || iters < 1) { fprintf(stderr, "usage: openblas_moe BATCH ITERS\n"); return 2; }
    srand(1);
    float *wg = rnd((size_t)E * D, 0.05f), *bg = rnd(E, 0.05f);
    float *w1[E], *b1[E], *g[E], *be[E], *w2[E], *b2[E];
    for (int e = 0; e < E; e++) {
        w1[e] = rnd((size_t)H * D, 0.044f); b1[e] = rnd(H, 0.044f);
        g[e] = rnd(H, 1.0f); be[e] = rnd(H, 0.1f);
        w2[e] = rnd((size_t)D * H, 0.0625f); b2[e] = rnd(D, 0.0625f);
    }
    float *x = rnd((size_t)B * D, 1.0f), *y = malloc((size_t)B * D * sizeof *y);
    float *logits = malloc((size_t)B * E * sizeof *logits), *wts = malloc((size_t)B * K * sizeof *wts);
    int *sel = malloc((size_t)B * K * sizeof *sel), *rows = malloc((size_t)B * K * sizeof *rows);
    float *rw = malloc((size_t)B * K * sizeof *rw);
    float *xe = malloc((size_t)B * K * D * sizeof *xe), *h = malloc((size_t)B * K * H * sizeof *h);
    float *ye = malloc((size_t)B * K * D * sizeof *ye);
    double best = 1e30, total = 0;
    for (int it = 0; it < iters + 3; it++) {
        double t0 = now();
        /* router */
        for (int r = 0; r < B; r++) memcpy(logits + (size_t)r * E, bg, E * sizeof *bg);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, E, D, 1.0f, x, D, wg, D, 1.0f, logits, E);
        for (int r = 0; r < B; r++) {
            float *l = logits + (size_t)r * E;
            int a = 0, b = -1;
            for (int e = 1; e < E; e++) if (l[e] > l[a]) a = e;
            for (int e = 0; e < E; e++) if (e != a && (b < 0 || l[e] > l[b])) b = e;
            float m = l[a], ea = 1.0f, eb = expf(l[b] - m);
            sel[r * K] = a; sel[r * K + 1] = b;
            wts[r * K] = ea / (ea + eb); wts[r * K + 1] = eb / (ea + eb);
        }
        memset(y, 0, (size_t)B * D * sizeof *y);
        for (int e = 0; e < E; e++) {
            int m = 0;
            for (int i = 0; i < B * K; i++)
                if (sel[i] == e) { rows[m] = i / K; rw[m] = wts[i]; m++; }
            if (!m) continue;
            for (int i = 0; i < m; i++) memcpy(xe + (size_t)i * D, x + (size_t)rows[i] * D, D * sizeof *x);
            for (int i = 0; i < m; i++) memcpy(h + (size_t)i * H, b1[e], H * sizeof *h);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, H, D, 1.0f, xe, D, w1[e], D, 1.0f, h, H);
            for (int i = 0; i < m; i++) {
                float *hr = h + (size_t)i * H, mean = 0, var = 0;
                for (int j = 0; j < H; j++) { hr[j] = hr[j] > 0 ? hr[j] : 0; mean += hr[j]; }
                mean /= H;
                for (int j = 0; j < H; j++) var += (hr[j] - mean) * (hr[j] - mean);
                float inv = 1.0f / sqrtf(var / H + 1e-5f);
                for (int j = 0; j < H; j++) hr[j] = (hr[j] - mean) * inv * g[e][j] + be[e][j];
            }
            for (int i = 0; i < m; i++) memcpy(ye + (size_t)i * D, b2[e], D * sizeof *ye);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, D, H, 1.0f, h, H, w2[e], H, 1.0f, ye, D);
            for (int i = 0; i < m; i++) {
                float *o = y + (size_t)rows[i] * D;
                const float *s = ye + (size_t)i * D, *xr = x + (size_t)rows[i] * D;
                for (int d = 0; d < D; d++) o[d] += rw[i] * (s[d] + xr[d]);
            }
        }
        double t = now() - t0;
        if (it >= 3) { total += t; if (t < best) best = t; }
    }
    double flops = 2.0 * D * E + K * 4.0 * D * H;
    double rps = (double)B * iters / total;
    printf("openblas_moe batch %d: %.0f rows/s, %.1f GFLOP/s useful, best %.3f ms\n", B, rps, rps * flops * 1e-9,
           best * 1e3);
    return 0;
}
