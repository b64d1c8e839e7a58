/* simd_avx2.h - pieces every AVX2 GEMM shares: the N-tail lane mask and the
 * fused epilogue dm_gemm defines (the reference is dm_epilogue_ref).
 * Include only from files built with the AVX2 flags. */
#ifndef DM_SIMD_AVX2_H
#define DM_SIMD_AVX2_H

#include "kernels/kernels.h"

#include <immintrin.h>

/* All-ones in the first `valid` of 8 lanes (valid may be <= 0 or >= 8). */
static inline __m256i lane_mask(int valid)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* c = s * (act(acc + bias) + r) on the lanes in mask; bias is [8] at this column. */
static inline __m256 epilogue(__m256 acc, __m256i mask, const float *bias, dm_act act,
                              const float *r, float s, int has_scale)
{
    if (bias) acc = _mm256_add_ps(acc, _mm256_maskload_ps(bias, mask));
    /* max(0, v) returns v when v is NaN, like the reference */
    if (act == DM_ACT_RELU) acc = _mm256_max_ps(_mm256_setzero_ps(), acc);
    if (r) acc = _mm256_add_ps(acc, _mm256_maskload_ps(r, mask));
    if (has_scale) acc = _mm256_mul_ps(acc, _mm256_set1_ps(s));
    return acc;
}

/* One finished output row: nv (1..16) columns at n0 of c, r the row's residual
 * (or NULL), s its scale. */
static inline void store_out(float *c, const float *r, float s, __m256 lo, __m256 hi, int n0, int nv,
                             const dm_gemm *g)
{
    const float *bias = g->bias ? g->bias + n0 : NULL;
    int has_scale = g->scale != NULL;
    r = r ? r + n0 : NULL;
    c += n0;
    __m256i m0 = lane_mask(nv);
    _mm256_maskstore_ps(c, m0, epilogue(lo, m0, bias, g->act, r, s, has_scale));
    if (nv > 8) {
        __m256i m1 = lane_mask(nv - 8);
        _mm256_maskstore_ps(c + 8, m1, epilogue(hi, m1, bias ? bias + 8 : NULL, g->act, r ? r + 8 : NULL, s,
                                                has_scale));
    }
}

#endif
