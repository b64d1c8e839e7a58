/* kernels_ref.c - portable reference kernels: plain C, obviously correct.
 *
 * These define what the optimized tables must compute; tests compare every
 * other table against them. Precision choices (the optimized twins are
 * allowed to differ by rounding only):
 *  - gemm: each dot product is accumulated in double and rounded to float
 *    once; the epilogue (bias, act, residual, scale) then runs in float in
 *    the order the interface states, so only the accumulation differs from
 *    the SIMD kernels, which accumulate in float.
 *  - layernorm: mean and biased variance (two passes) in double.
 *  - silu_mul: silu(x) = x / (1 + exp(-x)) and the product in double.
 * pack_b is an identity copy: the packed layout is B itself, [N, K]. */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

static size_t ref_pack_b_size(int N, int K)
{
    return (size_t)N * (size_t)K;
}

static void ref_pack_b(const float *B /* [N, K] */, int N, int K, float *dst /* [N, K] */)
{
    size_t n = ref_pack_b_size(N, K);
    if (n) memcpy(dst, B, n * sizeof *dst);
}

/* The epilogue of one output, in the order the interface documents. */
static float ref_epilogue(float acc, float bias, dm_act act, float r, float s)
{
    float v = acc + bias;
    /* `v < 0` keeps NaN (as PyTorch's relu does) */
    if (act == DM_ACT_RELU && v < 0.0f) v = 0.0f;
    v = v + r;
    return s * v;
}

static void ref_gemm(const dm_gemm *g)
{
    const float *Bp = g->Bp; /* [N, K] */
    for (int64_t i = 0; i < g->M; i++) {
        const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda;             /* [K] */
        float *c = g->C + (g->c_idx ? g->c_idx[i] : i) * g->ldc;                   /* [N] */
        const float *r = g->R ? g->R + (g->r_idx ? g->r_idx[i] : i) * g->ldr : NULL; /* [N] */
        float s = g->scale ? g->scale[i] : 1.0f;
        for (int n = 0; n < g->N; n++) {
            const float *b = Bp + (int64_t)n * g->K; /* [K] */
            double acc = 0.0;
            for (int k = 0; k < g->K; k++) acc += (double)a[k] * (double)b[k];
            c[n] = ref_epilogue((float)acc, g->bias ? g->bias[n] : 0.0f, g->act,
                                r ? r[n] : 0.0f, s);
        }
    }
}

/* gamma and beta may be NULL (1 and 0). */
static void ref_layernorm(float *x, int64_t rows, int n, int64_t ld,
                          const float *gamma, const float *beta, float eps)
{
    if (n <= 0) return;
    for (int64_t i = 0; i < rows; i++) {
        float *row = x + i * ld; /* [n] */
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < n; j++) mean += row[j];
        mean /= n;
        for (int j = 0; j < n; j++) var += (row[j] - mean) * (row[j] - mean);
        var /= n;
        double inv = 1.0 / sqrt(var + (double)eps);
        for (int j = 0; j < n; j++) {
            double y = (row[j] - mean) * inv;
            if (gamma) y *= gamma[j];
            if (beta) y += beta[j];
            row[j] = (float)y;
        }
    }
}

static void ref_silu_mul(const float *gu, int64_t rows, int h, int64_t ld_gu,
                         float *out, int64_t ld_out)
{
    /* Row by row, left to right: in place (out == gu, ld_out <= ld_gu) each
     * write lands on a gate value that was already read. */
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu; /* [h] */
        const float *up = gate + h;         /* [h] */
        float *o = out + i * ld_out;        /* [h] */
        for (int j = 0; j < h; j++) {
            double x = gate[j];
            double u = up[j];
            o[j] = (float)(x / (1.0 + exp(-x)) * u);
        }
    }
}

const dm_kernels dm_kernels_ref = {
    .isa = DM_ISA_REF,
    .pack_b_size = ref_pack_b_size,
    .pack_b = ref_pack_b,
    .gemm = ref_gemm,
    .layernorm = ref_layernorm,
    .silu_mul = ref_silu_mul,
};
