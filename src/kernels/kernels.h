/* kernels.h - the compute kernels behind one table per ISA.
 *
 * Every kernel has a portable reference (kernels_ref.c) and optimized twins
 * (kernels_avx2.c, kernels_avx512.c); dm_kernels_for picks the table, tests
 * compare the tables at awkward sizes. Weights are packed once by the same
 * table's pack_b, so each ISA chooses its own panel layout. */
#ifndef DM_KERNELS_H
#define DM_KERNELS_H

#include "deepmoe.h"
#include <stddef.h>
#include <stdint.h>

typedef enum { DM_ACT_NONE = 0, DM_ACT_RELU } dm_act;

/* One GEMM with a fused epilogue, rows addressed through optional index lists
 * (sparse dispatch never copies rows it can index):
 *
 *   for i in [0, M):   a = A + (a_idx ? a_idx[i] : i) * lda          (K floats)
 *                      c = C + (c_idx ? c_idx[i] : i) * ldc          (N floats)
 *                      r = R + (r_idx ? r_idx[i] : i) * ldr          (N floats, if R)
 *     c[n] = s_i * (act(sum_k a[k] * B[n, k] + bias[n]) + r[n])      s_i = scale ? scale[i] : 1
 *
 * B is the weight [N, K] (nn.Linear layout) as packed by pack_b. M may be 0.
 * bias, R, scale may be NULL. C must not alias A or R, and c_idx must not
 * repeat a row (the result would depend on the write order). */
typedef struct dm_gemm {
    int64_t M;
    int N, K;
    const float *A; int64_t lda; const int32_t *a_idx;
    const float *Bp;              /* packed by the same table's pack_b */
    const float *bias;            /* [N] or NULL */
    dm_act act;
    const float *R; int64_t ldr; const int32_t *r_idx;
    const float *scale;           /* [M] or NULL */
    float *C; int64_t ldc; const int32_t *c_idx;
} dm_gemm;

typedef struct dm_kernels {
    dm_isa isa;
    /* Floats needed to hold B [N, K] packed. */
    size_t (*pack_b_size)(int N, int K);
    void (*pack_b)(const float *B, int N, int K, float *dst);
    void (*gemm)(const dm_gemm *g);
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
} dm_kernels;

/* The table for isa (resolved: not DM_ISA_AUTO). Never NULL: an ISA that was
 * not compiled in falls back to the reference table. */
const dm_kernels *dm_kernels_for(dm_isa isa);

extern const dm_kernels dm_kernels_ref;
extern const dm_kernels dm_kernels_avx2;
extern const dm_kernels dm_kernels_avx512;

#endif
