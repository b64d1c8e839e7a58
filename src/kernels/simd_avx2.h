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

#endif
