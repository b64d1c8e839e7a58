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

/* One finished output row: 32 columns at n0 of c (the second 16 only when m1
 * is not empty), r the row's residual (or NULL), s its scale. */
static inline void store_out(float *c, const float *r, float s, __m512 lo, __m512 hi, int n0, __mmask16 m0,
                             __mmask16 m1, const dm_gemm *g)
{
    const float *bias = g->bias ? g->bias + n0 : NULL;
    int has_scale = g->scale != NULL;
    r = r ? r + n0 : NULL;
    c += n0;
    _mm512_mask_storeu_ps(c, m0, epilogue(lo, m0, bias, g->act, r, s, has_scale));
    if (m1)
        _mm512_mask_storeu_ps(c + 16, m1, epilogue(hi, m1, bias ? bias + 16 : NULL, g->act, r ? r + 16 : NULL, s,
                                                   has_scale));
}

/* The rows of one register tile of an fp32-activation GEMM (at most
 * DM512_TILE_MR), resolved once through dm_gemm's index lists. */
#define DM512_TILE_MR 12
typedef struct dm512_rows {
    const float *a[DM512_TILE_MR]; /* each [K] */
    float *c[DM512_TILE_MR];       /* each [N] */
    const float *r[DM512_TILE_MR]; /* each [N], or NULL */
    float s[DM512_TILE_MR];
} dm512_rows;

static inline void dm512_resolve_rows(const dm_gemm *g, int64_t i0, int mr, dm512_rows *rows)
{
    for (int i = 0; i < mr; i++) {
        int64_t row = i0 + i;
        rows->a[i] = g->A + (g->a_idx ? g->a_idx[row] : row) * g->lda;
        rows->c[i] = g->C + (g->c_idx ? g->c_idx[row] : row) * g->ldc;
        rows->r[i] = g->R ? g->R + (g->r_idx ? g->r_idx[row] : row) * g->ldr : NULL;
        rows->s[i] = g->scale ? g->scale[row] : 1.0f;
    }
}

/* In-register transpose of a 16x16 block of 32-bit lanes: r[i] becomes
 * column i. Pure data movement (any bit pattern, NaNs included, passes). */
static inline void transpose16_ps(__m512 r[16])
{
    __m512 t[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

#endif
