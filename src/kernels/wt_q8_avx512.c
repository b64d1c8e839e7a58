/* wt_q8_avx512.c - the q8 weight type on AVX-512 with VNNI (vpdpbusd).
 *
 * Packed layout (wt_q8.h): panels of NR = 32 outputs; quad j of a panel is
 * 128 bytes, two zmm: for outputs 0..15 then 16..31, the 4 int8 weights of k
 * positions 4j .. 4j+3 in each 32-bit lane (the vpdpbusd operand order), zero
 * past N and K. Per scale block (a group, or the whole row up to 131072 k):
 * comp [32] int32 = -128 * the block's column sums, and scale [32] fp32.
 *
 * Activations (the dm_gemm rows, in chunks of about 256 KB in g->work): per
 * row amax, sa = amax / 127, qa = clamp(rint(a * (127 / amax)), +-127) exactly
 * as the reference (vcvtps2dq rounds to nearest even, like rintf), stored as
 * u8 qa + 128. A finite row needs no clamp (|a * inv| rounds into +-127), so
 * 64 values take 4 multiplies, 4 conversions, 2 packs, an xor and a permute;
 * rows with inf or NaN, or a 127 / amax that overflows, take a careful path.
 * vpdpbusd multiplies u8 x s8 in groups of 4 into int32, so (qa + 128) . q -
 * 128 sum(q) = qa . q: each block's accumulator starts at comp and ends at the
 * exact int32 block sum (wrapping adds; wt_q8.h on large K).
 *
 * Micro-kernel: MR rows x 32 outputs. Per quad: two zmm weight loads, per row
 * one 32-bit broadcast of its 4 activation bytes and two vpdpbusd. With one
 * block (one scale per row, or K <= group) MR = 12 (24 int32 accumulators)
 * and C = (float)isum * (sa * scale), the reference's own float operations.
 * With several blocks MR = 6: 12 int32 + 12 fp32 accumulators, each block
 * finishing with fsum += (float)isum * scale_b, and C = sa * fsum at the end.
 * Then the fused epilogue of the f32 kernel: bias, relu, residual, row scale,
 * masked stores for the N tail, rows through a_idx / c_idx / r_idx.
 *
 * Loop order per chunk of rows: quantize the chunk, then L2-sized blocks of
 * panels, then row tiles (their quantized rows stay in L1), then panels.
 * Batch 1: one row against four panels at once (8 independent vpdpbusd
 * chains hide its 5-cycle latency); the weights stream from L2. */
#include "kernels/wt_q8.h"
#include "kernels/simd_avx512.h"

#include <float.h>
#include <immintrin.h>
#include <string.h>

enum {
    NR = 32,                      /* outputs per panel: two zmm */
    MR = 12,                      /* rows per tile with one scale block */
    MRG = 6,                      /* rows per tile with several blocks */
    L2_PANEL_BYTES = 512 * 1024,  /* packed weights swept per row tile */
    L1_TILE_BYTES = 40 * 1024,    /* quantized rows + one panel that stay in L1 (of 48 KB) */
    L1_TILES = 8,                 /* at most this many row tiles in that order */
};

/* ---------------------------------------------------------------- packing */

static size_t q8_avx512_pack_size(int N, int K, int group) { return q8_pack_bytes(N, K, group, NR, 1); }

static void q8_avx512_pack(const void *const part[], int N, int K, int group, void *data)
{
    q8_pack_panels(part, N, K, group, NR, 1, NULL, data);
}

static void q8_avx512_unpack(const void *data, int N, int K, int group, void *const part[])
{
    q8_unpack_panels(data, N, K, group, NR, 1, NULL, part);
}

static size_t q8_avx512_work_size(int64_t M, int K) { return q8_work_bytes(M, K, 1, MR); }

/* ---------------------------------------------------------------- activations */

/* The careful quantizer, for rows the fast one declines: 16 activations ->
 * u8 qa + 128, clamped to +-127 in float (rint commutes with it; +-inf must
 * not meet vcvtps2dq), and a NaN product (a NaN activation, or 0 * inf when
 * 127 / amax overflows for a tiny amax) gives qa 0, what the reference's
 * (int)NaN -> int8 does on x86. */
static inline __m512i quant16_slow(__m512 x, __m512 inv)
{
    __m512 p = _mm512_mul_ps(x, inv);
    __mmask16 ord = _mm512_cmp_ps_mask(p, p, _CMP_ORD_Q);
    p = _mm512_min_ps(_mm512_max_ps(p, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    __m512i v = _mm512_maskz_mov_epi32(ord, _mm512_cvtps_epi32(p));
    return _mm512_add_epi32(v, _mm512_set1_epi32(128));
}

/* A row with an inf or NaN, or whose 127 / amax overflows. amax as fmaxf:
 * max_ps returns its second operand when the first is NaN, so NaN is skipped. */
static float quant_row_slow(const q8_geom *g, const float *a, unsigned char *q)
{
    int K = g->K, k = 0;
    __m512 m = _mm512_setzero_ps();
    for (; k + 16 <= K; k += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(a + k)), m);
    if (k < K) m = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(lane_mask(K - k), a + k)), m);
    float amax = _mm512_reduce_max_ps(m);
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    __m512 vi = _mm512_set1_ps(inv);
    for (k = 0; k + 16 <= K; k += 16)
        _mm_storeu_si128((__m128i *)(void *)(q + k), _mm512_cvtepi32_epi8(quant16_slow(_mm512_loadu_ps(a + k), vi)));
    if (k < K) {
        __mmask16 t = lane_mask(K - k);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, t, quant16_slow(_mm512_maskz_loadu_ps(t, a + k), vi));
    }
    q8_spread_row(g, q, 1);
    return amax / 127.0f;
}

/* 16 activations of a finite row: |a * inv| <= 127 (1 + 2^-22) rounds into
 * +-127, so no clamp is needed; qa + 128 as int32. */
static inline __m512i quant16(__m512 x, __m512 inv)
{
    return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)), _mm512_set1_epi32(128));
}

/* One row a [K] into q (the kpos layout); returns sa. 64 values at a time:
 * four conversions, two saturating packs (never saturating here), the lane
 * order restored by one permute, the +128 as an xor of the sign bit. */
static float quant_row(const q8_geom *g, const float *a, unsigned char *q)
{
    int K = g->K, k = 0;
    /* vrangeps 0x0b: the larger magnitude, sign cleared, in one instruction
     * (four chains hide its latency). It skips NaN, as fmaxf; a NaN shows up
     * below as a product that converts to INT_MIN. */
    __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    for (; k + 64 <= K; k += 64) {
        m0 = _mm512_range_ps(m0, _mm512_loadu_ps(a + k), 0x0b);
        m1 = _mm512_range_ps(m1, _mm512_loadu_ps(a + k + 16), 0x0b);
        m2 = _mm512_range_ps(m2, _mm512_loadu_ps(a + k + 32), 0x0b);
        m3 = _mm512_range_ps(m3, _mm512_loadu_ps(a + k + 48), 0x0b);
    }
    for (; k + 16 <= K; k += 16) m0 = _mm512_range_ps(m0, _mm512_loadu_ps(a + k), 0x0b);
    if (k < K) m0 = _mm512_range_ps(m0, _mm512_maskz_loadu_ps(lane_mask(K - k), a + k), 0x0b);
    m0 = _mm512_range_ps(_mm512_range_ps(m0, m1, 0x0b), _mm512_range_ps(m2, m3, 0x0b), 0x0b);
    float amax = _mm512_reduce_max_ps(m0);
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    if (!(amax <= FLT_MAX) || !(inv <= FLT_MAX)) return quant_row_slow(g, a, q);  /* an inf, or 127 / amax overflowed */
    __m512 vi = _mm512_set1_ps(inv);
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i sign = _mm512_set1_epi8((char)0x80);
    /* a NaN product converts to INT_MIN: byte 0 after the packs and the xor
     * (a finite qa + 128 is 1..255), negative as int32 */
    __m512i low8 = _mm512_set1_epi8(1), low32 = _mm512_set1_epi32(1);
    for (k = 0; k + 64 <= K; k += 64) {
        __m512i v0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(a + k), vi));
        __m512i v1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(a + k + 16), vi));
        __m512i v2 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(a + k + 32), vi));
        __m512i v3 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(a + k + 48), vi));
        /* per 128-bit lane l: v0[4l..4l+3] v1[..] v2[..] v3[..] as bytes */
        __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(v0, v1), _mm512_packs_epi32(v2, v3));
        b = _mm512_permutexvar_epi32(order, _mm512_xor_si512(b, sign));
        low8 = _mm512_min_epu8(low8, b);
        _mm512_storeu_si512(q + k, b);
    }
    for (; k + 16 <= K; k += 16) {
        __m512i v = quant16(_mm512_loadu_ps(a + k), vi);
        low32 = _mm512_min_epi32(low32, v);
        _mm_storeu_si128((__m128i *)(void *)(q + k), _mm512_cvtepi32_epi8(v));
    }
    if (k < K) {
        __mmask16 t = lane_mask(K - k);
        __m512i v = quant16(_mm512_maskz_loadu_ps(t, a + k), vi);
        low32 = _mm512_min_epi32(low32, v);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, t, v);
    }
    if (_mm512_cmpeq_epi8_mask(low8, _mm512_setzero_si512()) || _mm512_cmplt_epi32_mask(low32, _mm512_setzero_si512()))
        return quant_row_slow(g, a, q);  /* a NaN */
    q8_spread_row(g, q, 1);
    return amax / 127.0f;
}

/* Call row `row`'s activations. */
static inline const float *act_row(const dm_gemm *g, int64_t row)
{
    return g->A + (g->a_idx ? g->a_idx[row] : row) * g->lda;
}

/* Every cache line of a row of K floats into L1 (gathered rows defeat the
 * hardware prefetcher: without this, the amax pass waits on each row). */
static inline void prefetch_row(const float *a, int K)
{
    const char *p = (const char *)a;
    for (size_t o = 0; o < (size_t)K * sizeof(float); o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

enum { QUANT_AHEAD = 2 };  /* rows prefetched ahead of the one quantized */

/* Chunk rows [c0, c1) (call rows i0 + c0 on) into the chunk. */
static void quant_rows(const dm_gemm *g, const q8_geom *q, const q8_work *w, int64_t i0, int64_t c0, int64_t c1)
{
    for (int64_t i = c0; i < c1 && i < c0 + QUANT_AHEAD; i++) prefetch_row(act_row(g, i0 + i), q->K);
    for (int64_t i = c0; i < c1; i++) {
        if (i + QUANT_AHEAD < c1) prefetch_row(act_row(g, i0 + i + QUANT_AHEAD), q->K);
        w->sa[i] = quant_row(q, act_row(g, i0 + i), w->qa + (size_t)i * w->ld);
    }
}

/* dm_wkern.quant_ld: the chunk rows' stride for K and group. */
static size_t q8_avx512_quant_ld(int K, int group)
{
    q8_geom q = q8_geometry(1, K, group, NR, 1);
    return q8_row_ld(q.kp, 1);
}

/* dm_wkern.quant: rows A [M, lda] as quant_rows lays them in a chunk. */
static void q8_avx512_quant(int K, int group, const float *A, int64_t lda, int64_t M, unsigned char *q, size_t ld,
                            float *sa)
{
    q8_geom g = q8_geometry(1, K, group, NR, 1);
    for (int64_t i = 0; i < M; i++) sa[i] = quant_row(&g, A + i * lda, q + (size_t)i * ld);
}

/* ---------------------------------------------------------------- gemm */

/* The rows of one tile: quantized rows and scales, output rows. */
typedef struct tile_rows {
    const unsigned char *a[MR]; /* each [kp] */
    float sa[MR];
    float *c[MR];               /* each [N] */
    const float *r[MR];         /* each [N], or NULL */
    float s[MR];
} tile_rows;

/* One finished row of a tile: 32 columns at n0 (the second half only when
 * the panel has more than 16 valid columns). */
static inline void store_row(const tile_rows *rows, int i, __m512 lo, __m512 hi, int n0,
                             __mmask16 m0, __mmask16 m1, const dm_gemm *g)
{
    store_out(rows->c[i], rows->r[i], rows->s[i], lo, hi, n0, m0, m1, g);
}

static inline __m512i bcast4(const unsigned char *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* Row slots of a tile: named accumulators behind `mr > i` with constant mr
 * (as kernels_avx512.c), so they stay in registers. */
#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* One mr x 32 tile over all blocks; always inlined with constant mr and
 * multi (several scale blocks). nv = valid columns of this panel (1..32). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const unsigned char *panel, const q8_geom *q, int n0, int nv,
     const dm_gemm *g, const int mr, const int multi)
{
    const int32_t *comp = q8_comp(q, panel);
    const float *scale = q8_scales(q, panel);
#define DECL(i)                                                              \
    __m512i lo##i = _mm512_setzero_si512(), hi##i = lo##i;                   \
    __m512 flo##i = _mm512_setzero_ps(), fhi##i = flo##i;                    \
    const unsigned char *a##i = mr > i ? rows->a[i] : NULL;
    TILE_ROWS(DECL)
#undef DECL
    for (int b = 0; b < q->nb; b++) {
        int j0, j1;
        q8_block_quads(q, b, &j0, &j1);
        __m512i c0 = _mm512_loadu_si512(comp + b * NR), c1 = _mm512_loadu_si512(comp + b * NR + 16);
#define INIT(i) if (mr > i) { lo##i = c0; hi##i = c1; }
        TILE_ROWS(INIT)
#undef INIT
        for (int j = j0; j < j1; j++) {
            const unsigned char *wp = panel + (size_t)j * NR * 4;
            __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 64);
#define STEP(i)                                              \
            if (mr > i) {                                    \
                __m512i av = bcast4(a##i + 4 * j);           \
                lo##i = _mm512_dpbusd_epi32(lo##i, av, w0);  \
                hi##i = _mm512_dpbusd_epi32(hi##i, av, w1);  \
            }
            TILE_ROWS(STEP)
#undef STEP
        }
        if (multi) {
            __m512 s0 = _mm512_loadu_ps(scale + b * NR), s1 = _mm512_loadu_ps(scale + b * NR + 16);
            /* the empty asm makes each block's sums opaque: without it GCC's
             * PRE keeps a second copy of every accumulator in the quad loop
             * (two register moves per vpdpbusd, 15-20% of the grouped speed) */
#define FOLD(i)                                                                 \
            if (mr > i) {                                                       \
                __asm__("" : "+v"(lo##i), "+v"(hi##i));                         \
                flo##i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo##i), s0, flo##i); \
                fhi##i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi##i), s1, fhi##i); \
            }
            TILE_ROWS(FOLD)
#undef FOLD
        }
    }
    __mmask16 m0 = lane_mask(nv), m1 = lane_mask(nv - 16);
    __m512 s0 = _mm512_loadu_ps(scale), s1 = _mm512_loadu_ps(scale + 16);
    /* one block: (float)isum * (sa * scale), the reference's operations */
#define STORE(i)                                                                                     \
    if (mr > i) {                                                                                    \
        __m512 sa = _mm512_set1_ps(rows->sa[i]);                                                     \
        if (multi) {                                                                                 \
            flo##i = _mm512_mul_ps(flo##i, sa);                                                      \
            fhi##i = _mm512_mul_ps(fhi##i, sa);                                                      \
        } else {                                                                                     \
            flo##i = _mm512_mul_ps(_mm512_cvtepi32_ps(lo##i), _mm512_mul_ps(sa, s0));                \
            fhi##i = _mm512_mul_ps(_mm512_cvtepi32_ps(hi##i), _mm512_mul_ps(sa, s1));                \
        }                                                                                            \
        store_row(rows, i, flo##i, fhi##i, n0, m0, m1, g);                                           \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tile_fn)(const tile_rows *, const unsigned char *, const q8_geom *, int, int, const dm_gemm *);

#define DEF_TILE(m)                                                                                \
    static void tile1_##m(const tile_rows *rows, const unsigned char *p, const q8_geom *q, int n0, \
                          int nv, const dm_gemm *g)                                               \
    {                                                                                              \
        tile(rows, p, q, n0, nv, g, m, 0);                                                         \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE
#define DEF_TILE(m)                                                                                \
    static void tileg_##m(const tile_rows *rows, const unsigned char *p, const q8_geom *q, int n0, \
                          int nv, const dm_gemm *g)                                               \
    {                                                                                              \
        tile(rows, p, q, n0, nv, g, m, 1);                                                         \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
#undef DEF_TILE

static const tile_fn tiles1[MR + 1] = {
    NULL, tile1_1, tile1_2, tile1_3, tile1_4, tile1_5, tile1_6,
    tile1_7, tile1_8, tile1_9, tile1_10, tile1_11, tile1_12,
};
static const tile_fn tilesg[MRG + 1] = {NULL, tileg_1, tileg_2, tileg_3, tileg_4, tileg_5, tileg_6};

/* Batch 1: one row against four full panels (128 outputs); always inlined
 * with constant multi. Each output's arithmetic is that of the tile. */
static inline __attribute__((always_inline)) void
gemv4(const tile_rows *rows, const unsigned char *bp, const q8_geom *q, int n0, const dm_gemm *g, const int multi)
{
    const unsigned char *a = rows->a[0];
#define PANELS(X) X(0) X(1) X(2) X(3)
#define DECL(p)                                                               \
    const unsigned char *w##p = bp + (p) * q->panel;                          \
    const int32_t *cp##p = q8_comp(q, w##p);                                  \
    const float *sp##p = q8_scales(q, w##p);                                  \
    __m512i lo##p = _mm512_setzero_si512(), hi##p = lo##p;                    \
    __m512 flo##p = _mm512_setzero_ps(), fhi##p = flo##p;
    PANELS(DECL)
#undef DECL
    for (int b = 0; b < q->nb; b++) {
        int j0, j1;
        q8_block_quads(q, b, &j0, &j1);
#define INIT(p)                                                  \
        lo##p = _mm512_loadu_si512(cp##p + b * NR);              \
        hi##p = _mm512_loadu_si512(cp##p + b * NR + 16);
        PANELS(INIT)
#undef INIT
        for (int j = j0; j < j1; j++) {
            __m512i av = bcast4(a + 4 * j);
            size_t o = (size_t)j * NR * 4;
#define STEP(p)                                                                    \
            lo##p = _mm512_dpbusd_epi32(lo##p, av, _mm512_loadu_si512(w##p + o));      \
            hi##p = _mm512_dpbusd_epi32(hi##p, av, _mm512_loadu_si512(w##p + o + 64));
            PANELS(STEP)
#undef STEP
        }
        if (multi) {
#define FOLD(p)                                                                                         \
            __asm__("" : "+v"(lo##p), "+v"(hi##p)); /* as in tile */                                    \
            flo##p = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo##p), _mm512_loadu_ps(sp##p + b * NR), flo##p); \
            fhi##p = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi##p), _mm512_loadu_ps(sp##p + b * NR + 16), fhi##p);
            PANELS(FOLD)
#undef FOLD
        }
    }
    __m512 sa = _mm512_set1_ps(rows->sa[0]);
    const __mmask16 all = (__mmask16)0xFFFF;
#define STORE(p)                                                                              \
    if (multi) {                                                                              \
        flo##p = _mm512_mul_ps(flo##p, sa);                                                   \
        fhi##p = _mm512_mul_ps(fhi##p, sa);                                                   \
    } else {                                                                                  \
        flo##p = _mm512_mul_ps(_mm512_cvtepi32_ps(lo##p), _mm512_mul_ps(sa, _mm512_loadu_ps(sp##p)));      \
        fhi##p = _mm512_mul_ps(_mm512_cvtepi32_ps(hi##p), _mm512_mul_ps(sa, _mm512_loadu_ps(sp##p + 16))); \
    }                                                                                         \
    store_row(rows, 0, flo##p, fhi##p, n0 + (p) * NR, all, all, g);
    PANELS(STORE)
#undef STORE
#undef PANELS
}

static void gemv4_1(const tile_rows *r, const unsigned char *bp, const q8_geom *q, int n0, const dm_gemm *g)
{
    gemv4(r, bp, q, n0, g, 0);
}
static void gemv4_g(const tile_rows *r, const unsigned char *bp, const q8_geom *q, int n0, const dm_gemm *g)
{
    gemv4(r, bp, q, n0, g, 1);
}

/* Tile rows [i0, i0 + mr) of the call, chunk row ci0 on. */
static void resolve_rows(const dm_gemm *g, const q8_work *w, int64_t i0, int64_t ci0, int mr, tile_rows *rows)
{
    for (int i = 0; i < mr; i++) {
        int64_t row = i0 + i;
        if (g->aq) {  /* quantized ahead: the gathered row itself */
            int64_t ar = g->a_idx ? g->a_idx[row] : row;
            rows->a[i] = g->aq->q + (size_t)ar * g->aq->ld;
            rows->sa[i] = g->aq->sa[ar];
        } else {
            rows->a[i] = w->qa + (size_t)(ci0 + i) * w->ld;
            rows->sa[i] = w->sa[ci0 + i];
        }
        rows->c[i] = g->C + (g->c_idx ? g->c_idx[row] : row) * g->ldc;
        rows->r[i] = g->R ? g->R + (g->r_idx ? g->r_idx[row] : row) * g->ldr : NULL;
        rows->s[i] = g->scale ? g->scale[row] : 1.0f;
    }
}

/* One chunk of m rows (call rows i0 on): quantized, then against every panel. */
static void chunk_gemm(const dm_gemm *g, const q8_geom *q, const q8_work *w, int64_t i0, int64_t m)
{
    const unsigned char *Bp = g->B->data;
    int np = q8_panels(g->N, NR), multi = q->nb > 1;
    if (!g->aq) quant_rows(g, q, w, i0, 0, m);
    if (m == 1) {  /* matrix-vector: four panels per pass */
        tile_rows rows;
        resolve_rows(g, w, i0, 0, 1, &rows);
        int p = 0;
        for (; (p + 4) * NR <= g->N; p += 4)
            (multi ? gemv4_g : gemv4_1)(&rows, Bp + (size_t)p * q->panel, q, p * NR, g);
        for (; p < np; p++)
            (multi ? tilesg : tiles1)[1](&rows, Bp + (size_t)p * q->panel, q, p * NR, g->N - p * NR, g);
        return;
    }
    /* tiles of balanced height: 64 rows are 6 tiles of 10-11, not 5 x 12 + 4 */
    int mrmax = multi ? MRG : MR;
    int64_t nt = (m + mrmax - 1) / mrmax, base = m / nt, extra = m % nt;
    tile_rows rows[L1_TILES];
    if ((size_t)m * w->ld + q->panel <= L1_TILE_BYTES && nt <= (int64_t)(sizeof rows / sizeof rows[0])) {
        /* a few rows (the MoE's blocks of 32): panel by panel, every row tile
         * against it while it is in L1 (the quantized rows stay there too) */
        for (int64_t ti = 0, t = 0; ti < nt; ti++) {
            int mr = (int)(base + (ti < extra));
            resolve_rows(g, w, i0 + t, t, mr, &rows[ti]);
            t += mr;
        }
        for (int p = 0; p < np; p++)
            for (int64_t ti = 0; ti < nt; ti++) {
                int mr = (int)(base + (ti < extra));
                (multi ? tilesg[mr] : tiles1[mr])(&rows[ti], Bp + (size_t)p * q->panel, q, p * NR, g->N - p * NR, g);
            }
        return;
    }
    size_t fit = q->panel ? L2_PANEL_BYTES / q->panel : (size_t)np;
    int pc = fit < 1 ? 1 : fit > (size_t)np ? np : (int)fit;
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t ti = 0, t = 0; ti < nt; ti++) {
            int mr = (int)(base + (ti < extra));
            tile_rows rows;
            resolve_rows(g, w, i0 + t, t, mr, &rows);
            tile_fn f = multi ? tilesg[mr] : tiles1[mr];
            for (int p = p0; p < p1; p++) f(&rows, Bp + (size_t)p * q->panel, q, p * NR, g->N - p * NR, g);
            t += mr;
        }
    }
}

static void q8_avx512_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    q8_geom q = q8_geometry(g->N, g->K, g->B->group, NR, 1);
    q8_work w = q8_work_layout(&q, g->M, 1, MR, g->work);
    for (int64_t i0 = 0; i0 < g->M; i0 += w.rows) {
        int64_t m = g->M - i0 < w.rows ? g->M - i0 : w.rows;
        chunk_gemm(g, &q, &w, i0, m);
    }
}

const dm_wkern dm_wkern_q8_avx512 = {
    .isa = DM_ISA_AVX512,
    .needs = DM_CPU_VNNI,
    .pack_size = q8_avx512_pack_size,
    .work_size = q8_avx512_work_size,
    .pack = q8_avx512_pack,
    .unpack = q8_avx512_unpack,
    .gemm = q8_avx512_gemm,
    .quant_ld = q8_avx512_quant_ld,
    .quant = q8_avx512_quant,
};
