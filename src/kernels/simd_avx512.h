/* simd_avx512.h - pieces every AVX-512 GEMM shares: the N-tail lane mask and
 * the fused epilogue dm_gemm defines (the reference is dm_epilogue_ref).
 * Include only from files built with the AVX-512 flags. */
#ifndef DM_SIMD_AVX512_H
#define DM_SIMD_AVX512_H

#include "kernels/kernels.h"

#include <immintrin.h>

/* All-ones in the first `valid` of 16 lanes (valid may be <= 0 or >= 16). */
static inline __mmask16 lane_mask(int valid)
{
    if (valid >= 16) return (__mmask16)0xFFFF;
    if (valid <= 0) return 0;
    return (__mmask16)((1u << valid) - 1u);
}

/* c = s * (act(acc + bias) + r) on the lanes in mask; bias and r at this column. */
static inline __m512 epilogue(__m512 acc, __mmask16 mask, const float *bias, dm_act act,
                              const float *r, float s, int has_scale)
{
    if (bias) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, bias));
    /* max(0, v) returns v when v is NaN, like the reference */
    if (act == DM_ACT_RELU) acc = _mm512_max_ps(_mm512_setzero_ps(), acc);
    if (r) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, r));
    if (has_scale) acc = _mm512_mul_ps(acc, _mm512_set1_ps(s));
    return acc;
}

#endif
