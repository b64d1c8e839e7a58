/* kernels.h - the compute kernels behind one table per ISA.
 *
 * Every kernel has a portable reference (kernels_ref.c) and optimized twins
 * (kernels_avx2.c, kernels_avx512.c); dm_kernels_for picks the table, tests
 * compare the tables at awkward sizes. The GEMMs against weights are not in
 * this table: they belong to the weight's type (wtype.h), which packs the
 * weight for an ISA and brings that ISA's GEMM for its layout. */
#ifndef DM_KERNELS_H
#define DM_KERNELS_H

#include "deepmoe.h"
#include <stddef.h>
#include <stdint.h>

/* x86 SIMD files are built on x86-64 only (the Makefile may force 0). */
#ifndef DM_HAVE_X86
#if defined(__x86_64__) || defined(_M_X64)
#define DM_HAVE_X86 1
#else
#define DM_HAVE_X86 0
#endif
#endif

#define DM_ISA_COUNT (DM_ISA_AVX512 + 1)

/* CPU features a kernel may need beyond its ISA's base. */
enum { DM_CPU_VNNI = 1u << 0, DM_CPU_BF16 = 1u << 1, DM_CPU_F16C = 1u << 2 };
/* 1 if this CPU has every feature in mask (0 is always had); cpu.c. */
int dm_cpu_has(unsigned mask);

typedef enum { DM_ACT_NONE = 0, DM_ACT_RELU } dm_act;

typedef struct dm_wtype dm_wtype;
typedef struct dm_wkern dm_wkern;

/* A weight W [N, K] packed by its type's kernels for one ISA (wtype.h). */
typedef struct dm_wmat {
    const dm_wtype *type;
    const dm_wkern *kern;  /* the type's kernels for the ISA it was packed for */
    int N, K;
    int group;             /* values per scale along K (q8; 0: one scale per row) */
    void *data;            /* packed values (and the type's scales, its layout) */
} dm_wmat;

/* One GEMM with a fused epilogue, rows addressed through optional index lists
 * (sparse dispatch never copies rows it can index):
 *
 *   for i in [0, M):   a = A + (a_idx ? a_idx[i] : i) * lda          (K floats)
 *                      c = C + (c_idx ? c_idx[i] : i) * ldc          (N floats)
 *                      r = R + (r_idx ? r_idx[i] : i) * ldr          (N floats, if R)
 *     c[n] = s_i * (act(sum_k a[k] * B[n, k] + bias[n]) + r[n])      s_i = scale ? scale[i] : 1
 *
 * B is the weight [N, K] (nn.Linear layout), packed (wtype.h). M may be 0.
 * bias, R, scale may be NULL. C must not alias A or R, and c_idx must not
 * repeat a row (the result would depend on the write order). */
/* Rows of a GEMM's A quantized once ahead by its weight's kernel (wtype.h:
 * dm_wkern.quant), for several GEMMs against weights of that kernel, K and
 * group: A's row r (the index a_idx gives) at q + r * ld, its scale sa[r]. */
typedef struct dm_qrows {
    const unsigned char *q;
    size_t ld;
    const float *sa;
} dm_qrows;

typedef struct dm_gemm {
    int64_t M;
    int N, K;
    const float *A; int64_t lda; const int32_t *a_idx;
    const dm_wmat *B;             /* the weight, run through dm_wmat_gemm */
    const float *bias;            /* [N] or NULL */
    dm_act act;
    const float *R; int64_t ldr; const int32_t *r_idx;
    const float *scale;           /* [M] or NULL */
    float *C; int64_t ldc; const int32_t *c_idx;
    void *work;                   /* dm_wmat_work_size(B, M) bytes, 64-byte aligned (NULL if 0) */
    /* [M] or NULL: row i of A is multiplied by a_scale[i] (in fp32) before
     * the kernel rounds it, c = epilogue(bf16(a_scale[i] a) . W): training's
     * bf16 input gradient of a routed expert, bf16(w dY) W. bf16 weights
     * only (its three kernels); NULL for every other type. */
    const float *a_scale;
    /* A's rows as B->kern->quant made them (NULL: none). Only a hint: the
     * result is bitwise what the kernel computes from A; a kernel reads it in
     * place of quantizing A again, or ignores it. */
    const dm_qrows *aq;
} dm_gemm;

/* Weight-gradient GEMM: an outer-product accumulation over rows,
 *
 *   for n in [n0, n1), k in [0, K):
 *     C[n * ldc + k] += sum_{i < M} s_i * a_i[n] * b_i[k]
 *   a_i = A + (a_idx ? a_idx[i] : i) * lda   (N floats: the output gradient row)
 *   b_i = B + (b_idx ? b_idx[i] : i) * ldb   (K floats: the input row)
 *   s_i = scale ? scale[i] : 1
 *
 * i.e. dW[N, K] += dY^T X for nn.Linear weights. [n0, n1) lets threads split
 * the output rows; the sum over i runs in increasing i for every element, so
 * the result does not depend on how [0, N) was split. M may be 0. */
typedef struct dm_gemm_tn {
    int64_t M;
    int N, K;
    const float *A; int64_t lda; const int32_t *a_idx;
    const float *B; int64_t ldb; const int32_t *b_idx;
    const float *scale;           /* [M] or NULL */
    float *C; int64_t ldc;
    int n0, n1;
    void *work;                   /* gemm_tn_bf16 only: dm_gemm_tn_bf16_work(M, N, K) bytes, 64-byte aligned */
} dm_gemm_tn;

/* Bytes of dm_gemm_tn.work that gemm_tn_bf16 needs for M rows of N and K. */
size_t dm_gemm_tn_bf16_work(int64_t M, int N, int K);

typedef struct dm_kernels {
    dm_isa isa;
    /* In place, each of `rows` rows of n floats (stride ld):
     * x = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance;
     * gamma NULL means 1, beta NULL means 0. */
    void (*layernorm)(float *x, int64_t rows, int n, int64_t ld,
                      const float *gamma, const float *beta, float eps);
    /* out[i, j] = silu(gu[i, j]) * gu[i, h + j] for j < h; gu rows have 2h floats
     * (stride ld_gu), out rows stride ld_out. out may equal gu (in place) when
     * ld_out <= ld_gu, so that no row is overwritten before it is read. */
    void (*silu_mul)(const float *gu, int64_t rows, int h, int64_t ld_gu,
                     float *out, int64_t ld_out);

    /* ---- training: forward variants that keep what backward needs, and backward */

    /* y = (x - mean) * rstd * gamma + beta per row, x kept; mean[rows], rstd[rows]
     * written (rstd = 1 / sqrt(biased var + eps)). y may equal x only if ldy == ld. */
    void (*layernorm_fwd)(const float *x, int64_t rows, int n, int64_t ld,
                          const float *gamma, const float *beta, float eps,
                          float *y, int64_t ldy, float *mean, float *rstd);
    /* LayerNorm backward from the forward's x, mean, rstd and the output gradient dy:
     *   xhat = (x - mean) * rstd,  g = dy * gamma
     *   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))     (written, stride ld)
     *   dgamma[j] += sum_rows dy * xhat,  dbeta[j] += sum_rows dy  (accumulated; rows in order)
     * dgamma/dbeta may be NULL (not accumulated). dx may equal dy. */
    void (*layernorm_bwd)(const float *x, const float *mean, const float *rstd,
                          const float *dy, int64_t rows, int n, int64_t ld,
                          const float *gamma, float *dx, float *dgamma, float *dbeta);
    /* SwiGLU backward: gu rows [g (h) | u (h)] as in silu_mul, dout [rows, h] (stride ld_d):
     *   dgu[i, j]     = dout * u * silu'(g)      silu'(g) = s + g s (1 - s), s = sigmoid(g)
     *   dgu[i, h + j] = dout * silu(g)
     * dgu rows 2h floats, stride ld_gu (may equal gu: in place). */
    void (*silu_mul_bwd)(const float *gu, const float *dout, int64_t rows, int h,
                         int64_t ld_gu, int64_t ld_d, float *dgu);
    /* dW[N, K] += dY^T X, see dm_gemm_tn. */
    void (*gemm_tn)(const dm_gemm_tn *g);
    /* The same in bf16 (training's --precision bf16): both operands rounded
     * to bf16 (nearest even) first, the A side after its scale,
     *   C[n * ldc + k] += sum_{i < M} bf16(s_i * a_i[n]) * bf16(b_i[k]),
     * the products (exact in fp32) summed in fp32 or wider; g->work as
     * dm_gemm_tn_bf16_work says. On a CPU without AVX512_BF16 the SIMD
     * tables round copies of the operands and run gemm_tn on them. */
    void (*gemm_tn_bf16)(const dm_gemm_tn *g);
    /* out[n] += sum_i s_i * a_i[n] for n < N (rows as in dm_gemm_tn's A; rows in order). */
    void (*colsum)(const float *A, int64_t lda, const int32_t *a_idx, const float *scale,
                   int64_t M, int N, float *out);
    /* AdamW on n contiguous parameters (PyTorch semantics):
     *   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
     *   p -= lr * (m / bc1) / (sqrt(v / bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t
     * g is multiplied by gscale first (gradient clipping / accumulation scale). */
    void (*adamw)(float *p, const float *g, float *m, float *v, int64_t n, float gscale,
                  float lr, float b1, float b2, float eps, float wd, float bc1, float bc2);

    /* ---- shared by every weight type: the MoE combine and the input check */

    /* The MoE combine of rows rows: row r has J slot rows y_j = y + (r J + j) D
     * (D floats each) and k weights w + r k; slot j >= 1 weighs w[j] if j < k,
     * else 1 (a shared expert), slot 0 weighs w[0]. In this fixed order, each
     * product rounded then added (no fused multiply-add):
     *   out[r D + d] = w0 y_0[d];  out[r D + d] += w_j y_j[d] for j = 1 .. J-1 */
    void (*combine)(const float *y, const float *w, int64_t rows, int J, int k, int D, float *out);
    /* The index of the first Inf or NaN in x[0, n), or -1 if all are finite. */
    int64_t (*find_nonfinite)(const float *x, int64_t n);
    /* sum of x[i]^2 in double, in one order on every table (so bitwise the
     * same): x[i] is added to chain i % 16 (squares are exact in double),
     * then s_c = a_c + a_{c+8}, t_c = s_c + s_{c+4}, u_c = t_c + t_{c+2},
     * the result u_0 + u_1. */
    double (*sumsq)(const float *x, int64_t n);
    /* MSE's pass: d_i = (double)out[i] - target[i]; grad[i] = (float)((c d_i) inv)
     * (in double, in that order); returns sum d_i^2 (each square rounded in
     * double, then added) in sumsq's order of chains. Bitwise the same on every table. */
    double (*mse_grad)(const float *out, const float *target, int64_t n, double c, double inv, float *grad);
    /* One row of the MoE backward's input gradient, in this order (each
     * product rounded, then added: no FMA):
     *   o[d] = (((o[d] + y_0[d]) + y_1[d]) ... + y_{J-1}[d]) + s g[d],  y_j = y + j D,
     * the last term only where g is not NULL. */
    void (*add_rows)(float *o, const float *y, int J, const float *g, float s, int D);
} dm_kernels;

/* gemm_tn_bf16 by rounded fp32 copies of the operands (in g->work) and
 * kt->gemm_tn on them: the SIMD tables' path on a CPU without AVX512_BF16. */
void dm_gemm_tn_bf16_emul(const dm_kernels *kt, const dm_gemm_tn *g);

/* The table for isa (resolved: not DM_ISA_AUTO). Never NULL: an ISA that was
 * not compiled in falls back to the reference table. */
const dm_kernels *dm_kernels_for(dm_isa isa);

/* The panel layout of the SIMD tables: B [N, K] as ceil(N / nr) panels of
 * [K, nr] (panel p holds outputs p*nr .. p*nr+nr-1, zero past N); and the same
 * layout of B^T built straight from B (each panel row is a contiguous copy),
 * of B's rows [r0, r1) only (0, N: all). */
void dm_pack_panels(const float *B, int N, int K, int nr, float *dst);
void dm_pack_panels_t(const float *B, int N, int K, int r0, int r1, int nr, float *dst);
/* The inverse of dm_pack_panels: B [N, K] from its panels. */
void dm_unpack_panels(const float *src, int N, int K, int nr, float *B);

extern const dm_kernels dm_kernels_ref;
extern const dm_kernels dm_kernels_avx2;
extern const dm_kernels dm_kernels_avx512;

#endif
