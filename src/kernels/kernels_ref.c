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
 *  - layernorm_fwd / layernorm_bwd: row statistics and each output in
 *    double; dgamma/dbeta sum over the rows in double and are added to the
 *    float accumulators once.
 *  - silu_mul_bwd: in double, rounded once per output.
 *  - gemm_tn, colsum: each output's sum over the rows in double, in
 *    increasing row order, added to the float output once.
 *  - adamw: in float, one operation at a time in the order the interface
 *    states (as PyTorch's single-tensor AdamW does on float32 tensors).
 * The f32 weight type packs as an identity copy: the packed layout is W itself, [N, K]. */
#include "base/base.h"
#include "kernels/wtype.h"

#include <math.h>
#include <string.h>

static size_t ref_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)N * (size_t)K * sizeof(float);
}

static void ref_pack(const void *const part[], int N, int K, int group, void *dst /* [N, K] */)
{
    (void)group;
    const float *W = part[0] /* [N, K] */;
    size_t n = ref_pack_size(N, K, 0);
    if (n) memcpy(dst, W, n);
}

static void ref_pack_t(const float *W /* [N, K] */, int N, int K, int r0, int r1, void *data /* [K, N] */,
                       float *tmp)
{
    (void)tmp;
    float *dst = data;
    for (int n = r0; n < r1; n++)
        for (int k = 0; k < K; k++) dst[(size_t)k * N + n] = W[(size_t)n * K + k];
}

static void ref_unpack(const void *data, int N, int K, int group, void *const part[])
{
    (void)group;
    float *W = part[0];
    size_t n = ref_pack_size(N, K, 0);
    if (n) memcpy(W, data, n);
}

static void ref_gemm(const dm_gemm *g)
{
    const float *Bp = g->B->data; /* [N, K] */
    for (int64_t i = 0; i < g->M; i++) {
        const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda;             /* [K] */
        float *c = g->C + (g->c_idx ? g->c_idx[i] : i) * g->ldc;                   /* [N] */
        const float *r = g->R ? g->R + (g->r_idx ? g->r_idx[i] : i) * g->ldr : NULL; /* [N] */
        float s = g->scale ? g->scale[i] : 1.0f;
        for (int n = 0; n < g->N; n++) {
            const float *b = Bp + (int64_t)n * g->K; /* [K] */
            double acc = 0.0;
            for (int k = 0; k < g->K; k++) acc += (double)a[k] * (double)b[k];
            c[n] = dm_epilogue_ref((float)acc, g->bias ? g->bias[n] : 0.0f, g->act,
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

/* ---------------------------------------------------------------- training */

static void ref_layernorm_fwd(const float *x, int64_t rows, int n, int64_t ld,
                              const float *gamma, const float *beta, float eps,
                              float *y, int64_t ldy, float *mean, float *rstd)
{
    if (n <= 0) return;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld; /* [n] */
        float *yr = y + i * ldy;      /* [n] */
        double mu = 0.0, var = 0.0;
        for (int j = 0; j < n; j++) mu += xr[j];
        mu /= n;
        for (int j = 0; j < n; j++) var += (xr[j] - mu) * (xr[j] - mu);
        var /= n;
        double inv = 1.0 / sqrt(var + (double)eps);
        mean[i] = (float)mu;
        rstd[i] = (float)inv;
        /* element j is read before it is written: y == x works */
        for (int j = 0; j < n; j++) {
            double v = (xr[j] - mu) * inv;
            if (gamma) v *= gamma[j];
            if (beta) v += beta[j];
            yr[j] = (float)v;
        }
    }
}

static void ref_layernorm_bwd(const float *x, const float *mean, const float *rstd,
                              const float *dy, int64_t rows, int n, int64_t ld,
                              const float *gamma, float *dx, float *dgamma, float *dbeta)
{
    if (n <= 0) return;
    /* dgamma/dbeta first, column by column over all rows, before dx (which
     * may overwrite dy) is written */
    for (int j = 0; j < n; j++) {
        double dg = 0.0, db = 0.0;
        for (int64_t i = 0; i < rows; i++) {
            double xhat = ((double)x[i * ld + j] - mean[i]) * rstd[i];
            dg += (double)dy[i * ld + j] * xhat;
            db += dy[i * ld + j];
        }
        if (dgamma) dgamma[j] = (float)((double)dgamma[j] + dg);
        if (dbeta) dbeta[j] = (float)((double)dbeta[j] + db);
    }
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld, *dyr = dy + i * ld; /* [n] */
        float *dxr = dx + i * ld;                         /* [n] */
        double mu = mean[i], rs = rstd[i];
        double sg = 0.0, sgx = 0.0; /* sum_j g, sum_j g * xhat */
        for (int j = 0; j < n; j++) {
            double g = (double)dyr[j] * (gamma ? gamma[j] : 1.0f);
            sg += g;
            sgx += g * ((xr[j] - mu) * rs);
        }
        double mg = sg / n, mgx = sgx / n;
        for (int j = 0; j < n; j++) {
            double g = (double)dyr[j] * (gamma ? gamma[j] : 1.0f);
            double xhat = (xr[j] - mu) * rs;
            dxr[j] = (float)(rs * (g - mg - xhat * mgx));
        }
    }
}

static void ref_silu_mul_bwd(const float *gu, const float *dout, int64_t rows, int h,
                             int64_t ld_gu, int64_t ld_d, float *dgu)
{
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu, *up = gate + h; /* [h] each */
        const float *d = dout + i * ld_d;                   /* [h] */
        float *dg = dgu + i * ld_gu, *du = dg + h;          /* [h] each */
        for (int j = 0; j < h; j++) {
            /* both inputs of element j are read before either output is
             * written: dgu == gu works */
            double g = gate[j], u = up[j];
            double s = 1.0 / (1.0 + exp(-g));
            double dsilu = s + g * s * (1.0 - s);
            dg[j] = (float)(d[j] * u * dsilu);
            du[j] = (float)(d[j] * g * s);
        }
    }
}

static float ref_round_bf16(float x) { return dm_bf16_to_f32(dm_f32_to_bf16(x)); }

/* bf16: the operands bf16(s a) and bf16(b) (s * a in float first), their
 * exact products summed in double as the fp32 ones. */
static void ref_gemm_tn_as(const dm_gemm_tn *g, int bf16)
{
    if (g->M <= 0) return; /* C untouched (adding 0.0 would turn -0 into +0) */
    for (int n = g->n0; n < g->n1; n++)
        for (int k = 0; k < g->K; k++) {
            double acc = 0.0;
            for (int64_t i = 0; i < g->M; i++) {
                const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda; /* [N] */
                const float *b = g->B + (g->b_idx ? g->b_idx[i] : i) * g->ldb; /* [K] */
                if (bf16) {
                    float sa = g->scale ? g->scale[i] * a[n] : a[n];
                    acc += (double)ref_round_bf16(sa) * ref_round_bf16(b[k]);
                } else {
                    double s = g->scale ? g->scale[i] : 1.0f;
                    acc += s * a[n] * b[k];
                }
            }
            float *c = g->C + (int64_t)n * g->ldc + k;
            *c = (float)((double)*c + acc);
        }
}

static void ref_gemm_tn(const dm_gemm_tn *g) { ref_gemm_tn_as(g, 0); }
static void ref_gemm_tn_bf16(const dm_gemm_tn *g) { ref_gemm_tn_as(g, 1); }

static void ref_colsum(const float *A, int64_t lda, const int32_t *a_idx, const float *scale,
                       int64_t M, int N, float *out)
{
    if (M <= 0) return; /* out untouched */
    for (int n = 0; n < N; n++) {
        double acc = 0.0;
        for (int64_t i = 0; i < M; i++) {
            const float *a = A + (a_idx ? a_idx[i] : i) * lda; /* [N] */
            acc += (scale ? (double)scale[i] : 1.0) * a[n];
        }
        out[n] = (float)((double)out[n] + acc);
    }
}

static void ref_adamw(float *p, const float *g, float *m, float *v, int64_t n, float gscale,
                      float lr, float b1, float b2, float eps, float wd, float bc1, float bc2)
{
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j] * gscale;
        float pj = p[j];
        pj = pj - lr * wd * pj;
        float mj = b1 * m[j] + (1.0f - b1) * gj;
        float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
        pj = pj - lr * (mj / bc1) / (sqrtf(vj / bc2) + eps);
        m[j] = mj;
        v[j] = vj;
        p[j] = pj;
    }
}

static void ref_combine(const float *y, const float *w, int64_t rows, int J, int k, int D, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * J * D, *wr = w + r * k;
        float *o = out + r * D;
        for (int d = 0; d < D; d++) o[d] = wr[0] * yr[d];
        for (int j = 1; j < J; j++) {
            float wj = j < k ? wr[j] : 1.0f;
            for (int d = 0; d < D; d++) o[d] += wj * yr[(int64_t)j * D + d];
        }
    }
}

static int64_t ref_find_nonfinite(const float *x, int64_t n)
{
    /* a non-finite float has an exponent of all ones */
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (int64_t i = 0; i < n; i++)
        if ((u[i] & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

/* The 16 chains of sumsq and mse_grad added as kernels.h says. */
static double chains16(const double a[16])
{
    double s[8], t[4], u[2];
    for (int c = 0; c < 8; c++) s[c] = a[c] + a[c + 8];
    for (int c = 0; c < 4; c++) t[c] = s[c] + s[c + 4];
    for (int c = 0; c < 2; c++) u[c] = t[c] + t[c + 2];
    return u[0] + u[1];
}

static double ref_sumsq(const float *x, int64_t n)
{
    double a[16] = {0};
    for (int64_t i = 0; i < n; i++) a[i % 16] += (double)x[i] * (double)x[i];
    return chains16(a);
}

static double ref_mse_grad(const float *out, const float *target, int64_t n, double c, double inv, float *grad)
{
    double a[16] = {0};
    for (int64_t i = 0; i < n; i++) {
        double d = (double)out[i] - (double)target[i];
        double q = d * d;
        a[i % 16] += q;
        grad[i] = (float)((c * d) * inv);
    }
    return chains16(a);
}

static void ref_add_rows(float *o, const float *y, int J, const float *g, float s, int D)
{
    for (int d = 0; d < D; d++) {
        float v = o[d];
        for (int j = 0; j < J; j++) v += y[(int64_t)j * D + d];
        if (g) v += s * g[d];
        o[d] = v;
    }
}

const dm_kernels dm_kernels_ref = {
    .isa = DM_ISA_REF,
    .layernorm = ref_layernorm,
    .silu_mul = ref_silu_mul,
    .layernorm_fwd = ref_layernorm_fwd,
    .layernorm_bwd = ref_layernorm_bwd,
    .silu_mul_bwd = ref_silu_mul_bwd,
    .gemm_tn = ref_gemm_tn,
    .gemm_tn_bf16 = ref_gemm_tn_bf16,
    .colsum = ref_colsum,
    .adamw = ref_adamw,
    .combine = ref_combine,
    .find_nonfinite = ref_find_nonfinite,
    .sumsq = ref_sumsq,
    .mse_grad = ref_mse_grad,
    .add_rows = ref_add_rows,
};

const dm_wkern dm_wkern_f32_ref = {
    .isa = DM_ISA_REF,
    .pack_size = ref_pack_size,
    .pack = ref_pack,
    .pack_t = ref_pack_t,
    .panel_rows = 1,
    .unpack = ref_unpack,
    .gemm = ref_gemm,
};
