/* wt_q8_avx2.c - the q8 weight type on AVX2 (no VNNI): int8 weights sign
 * extended to int16 and multiplied in pairs by vpmaddwd, which is exact
 * (|a0 b0 + a1 b1| <= 2 * 127 * 127) and needs no offset trick. vpmaddubsw
 * would save the widening but saturates; it is not used.
 *
 * Packed layout (wt_q8.h, no comp part): panels of NR = 8 outputs; quad j of
 * a panel is 32 bytes, 4 int8 weights (k positions 4j .. 4j+3) per output, the
 * outputs in slot order 0 1 4 5 2 3 6 7. vpmovsxbw of each 16-byte half gives
 * a ymm of 16 int16 whose 32-bit lanes hold (output, k pair); a 64-bit
 * broadcast of the row's 4 int16 activations and vpmaddwd give lanes
 * [o0 o0 o1 o1 | o4 o4 o5 o5] and [o2 o2 o3 o3 | o6 o6 o7 o7], and one vphaddd
 * of the two accumulators at the end of a block gives outputs 0..7 in order.
 *
 * Activations: quantized per row as the reference (vcvtps2dq rounds to
 * nearest even, like rintf), stored as int16 in g->work, in chunks of rows.
 * Micro-kernel: MR = 4 rows x 8 outputs (8 int32 accumulators) with one scale
 * block, C = (float)isum * (sa * scale) as the reference; with several blocks
 * MRG = 3 rows, each block folded into an fp32 sum with its scale, times sa at
 * the end. Then the fused epilogue (bias, relu, residual, row scale; masked
 * for the N tail). Loop order as in wt_q8_avx512.c; batch 1 runs the 1-row
 * tile (its chains are vpaddd, latency 1, so one panel keeps the ports busy). */
#include "kernels/wt_q8.h"
#include "kernels/simd_avx2.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

enum {
    NR = 8,                       /* outputs per panel: one ymm */
    MR = 4,                       /* rows per tile with one scale block */
    MRG = 3,                      /* rows per tile with several blocks */
    L2_PANEL_BYTES = 256 * 1024,  /* packed weights swept per row tile */
};

/* slot -> output of a panel (its own inverse) */
static const int PERM[NR] = {0, 1, 4, 5, 2, 3, 6, 7};

/* ---------------------------------------------------------------- packing */

static size_t q8_avx2_pack_size(int N, int K, int group) { return q8_pack_bytes(N, K, group, NR, 0); }

static void q8_avx2_pack(const void *const part[], int N, int K, int group, void *data)
{
    q8_pack_panels(part, N, K, group, NR, 0, PERM, data);
}

static void q8_avx2_unpack(const void *data, int N, int K, int group, void *const part[])
{
    q8_unpack_panels(data, N, K, group, NR, 0, PERM, part);
}

static size_t q8_avx2_work_size(int64_t M, int K) { return q8_work_bytes(M, K, 2, MR); }

/* ---------------------------------------------------------------- activations */

/* One row a [K] into q (int16, the kpos layout); returns sa. The vector
 * part and the scalar tail do the reference's float operations. */
static float quant_row(const q8_geom *g, const float *a, int16_t *q)
{
    int K = g->K, k = 0;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    /* max_ps returns its second operand when the first is NaN: NaN is skipped, as fmaxf */
    for (; k + 8 <= K; k += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(a + k), absm), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float amax = _mm_cvtss_f32(h);
    for (; k < K; k++) amax = fmaxf(amax, fabsf(a[k]));
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    __m256 vi = _mm256_set1_ps(inv);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    /* a NaN product (a NaN activation, or 0 * inf when 127 / amax overflows)
     * gives 0, what the reference's (int)NaN -> int8 does on x86 */
    for (k = 0; k + 8 <= K; k += 8) {
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(a + k), vi);
        __m256i ord = _mm256_castps_si256(_mm256_cmp_ps(p, p, _CMP_ORD_Q));
        /* clamped in float (rint commutes with it): +-inf must not meet vcvtps2dq */
        p = _mm256_min_ps(_mm256_max_ps(p, lo), hi);
        __m256i v = _mm256_and_si256(_mm256_cvtps_epi32(p), ord);
        __m128i h16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storeu_si128((__m128i *)(void *)(q + k), h16);
    }
    for (; k < K; k++) {
        float v = rintf(a[k] * inv);
        q[k] = (int16_t)(v != v ? 0 : v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v);
    }
    q8_spread_row(g, (unsigned char *)q, 2);
    return amax / 127.0f;
}

/* Chunk rows [c0, c1) (call rows i0 + c0 on) into the chunk. */
static void quant_rows(const dm_gemm *g, const q8_geom *q, const q8_work *w, int64_t i0, int64_t c0, int64_t c1)
{
    for (int64_t i = c0; i < c1; i++) {
        int64_t row = i0 + i;
        const float *a = g->A + (g->a_idx ? g->a_idx[row] : row) * g->lda;
        w->sa[i] = quant_row(q, a, (int16_t *)(void *)(w->qa + (size_t)i * w->ld));
    }
}

/* ---------------------------------------------------------------- gemm */

typedef struct tile_rows {
    const int16_t *a[MR]; /* each [kp] */
    float sa[MR];
    float *c[MR];         /* each [N] */
    const float *r[MR];   /* each [N], or NULL */
    float s[MR];
} tile_rows;

static inline void store_row(const tile_rows *rows, int i, __m256 v, int n0, __m256i mask, const dm_gemm *g)
{
    const float *bias = g->bias ? g->bias + n0 : NULL;
    const float *r = rows->r[i] ? rows->r[i] + n0 : NULL;
    _mm256_maskstore_ps(rows->c[i] + n0, mask, epilogue(v, mask, bias, g->act, r, rows->s[i], g->scale != NULL));
}

static inline __m256i bcast8(const int16_t *p)
{
    int64_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi64x(v);
}

#define TILE_ROWS(X) X(0) X(1) X(2) X(3)

/* One mr x 8 tile over all blocks; always inlined with constant mr and multi.
 * nv = valid columns of this panel (1..8). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const unsigned char *panel, const q8_geom *q, int n0, int nv,
     const dm_gemm *g, const int mr, const int multi)
{
    const float *scale = q8_scales(q, panel);
#define DECL(i)                                                  \
    __m256i x##i = _mm256_setzero_si256(), y##i = x##i;          \
    __m256 f##i = _mm256_setzero_ps();                           \
    const int16_t *a##i = mr > i ? rows->a[i] : NULL;
    TILE_ROWS(DECL)
#undef DECL
    for (int b = 0; b < q->nb; b++) {
        int j0, j1;
        q8_block_quads(q, b, &j0, &j1);
#define INIT(i) if (mr > i) { x##i = _mm256_setzero_si256(); y##i = x##i; }
        TILE_ROWS(INIT)
#undef INIT
        for (int j = j0; j < j1; j++) {
            const unsigned char *wp = panel + (size_t)j * NR * 4;
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)wp));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(wp + 16)));
#define STEP(i)                                                            \
            if (mr > i) {                                                  \
                __m256i av = bcast8(a##i + 4 * j);                         \
                x##i = _mm256_add_epi32(x##i, _mm256_madd_epi16(av, w0));  \
                y##i = _mm256_add_epi32(y##i, _mm256_madd_epi16(av, w1));  \
            }
            TILE_ROWS(STEP)
#undef STEP
        }
        if (multi) {
            __m256 s = _mm256_loadu_ps(scale + b * NR);
            /* the empty asm makes each block's sums opaque: without it GCC keeps
             * a second copy of every accumulator in the quad loop */
#define FOLD(i)                                                                                   \
            if (mr > i) {                                                                         \
                __asm__("" : "+x"(x##i), "+x"(y##i));                                             \
                f##i = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(x##i, y##i)), s, f##i); \
            }
            TILE_ROWS(FOLD)
#undef FOLD
        }
    }
    __m256i mask = lane_mask(nv);
    __m256 s = _mm256_loadu_ps(scale);
    /* one block: (float)isum * (sa * scale), the reference's operations */
#define STORE(i)                                                                                \
    if (mr > i) {                                                                               \
        __m256 sa = _mm256_set1_ps(rows->sa[i]);                                                \
        if (multi) f##i = _mm256_mul_ps(f##i, sa);                                              \
        else f##i = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(x##i, y##i)), _mm256_mul_ps(sa, s)); \
        store_row(rows, i, f##i, n0, mask, g);                                                  \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tile_fn)(const tile_rows *, const unsigned char *, const q8_geom *, int, int, const dm_gemm *);

#define DEF_TILE(name, m, multi)                                                                   \
    static void name##_##m(const tile_rows *rows, const unsigned char *p, const q8_geom *q, int n0,  \
                           int nv, const dm_gemm *g)                                                \
    {                                                                                               \
        tile(rows, p, q, n0, nv, g, m, multi);                                                      \
    }
DEF_TILE(tile1, 1, 0) DEF_TILE(tile1, 2, 0) DEF_TILE(tile1, 3, 0) DEF_TILE(tile1, 4, 0)
DEF_TILE(tileg, 1, 1) DEF_TILE(tileg, 2, 1) DEF_TILE(tileg, 3, 1)
#undef DEF_TILE

static const tile_fn tiles1[MR + 1] = {NULL, tile1_1, tile1_2, tile1_3, tile1_4};
static const tile_fn tilesg[MRG + 1] = {NULL, tileg_1, tileg_2, tileg_3};

static void resolve_rows(const dm_gemm *g, const q8_work *w, int64_t i0, int64_t ci0, int mr, tile_rows *rows)
{
    for (int i = 0; i < mr; i++) {
        int64_t row = i0 + i;
        rows->a[i] = (const int16_t *)(const void *)(w->qa + (size_t)(ci0 + i) * w->ld);
        rows->sa[i] = w->sa[ci0 + i];
        rows->c[i] = g->C + (g->c_idx ? g->c_idx[row] : row) * g->ldc;
        rows->r[i] = g->R ? g->R + (g->r_idx ? g->r_idx[row] : row) * g->ldr : NULL;
        rows->s[i] = g->scale ? g->scale[row] : 1.0f;
    }
}

/* One chunk of m rows (call rows i0 on): quantized, then against every panel
 * in tiles of balanced height (9 rows are 3 tiles of 3, not 4 + 4 + 1). */
static void chunk_gemm(const dm_gemm *g, const q8_geom *q, const q8_work *w, int64_t i0, int64_t m)
{
    const unsigned char *Bp = g->B->data;
    int np = q8_panels(g->N, NR), multi = q->nb > 1, mrmax = multi ? MRG : MR;
    int64_t nt = (m + mrmax - 1) / mrmax, base = m / nt, extra = m % nt;
    size_t fit = q->panel ? L2_PANEL_BYTES / q->panel : (size_t)np;
    int pc = fit < 1 ? 1 : fit > (size_t)np ? np : (int)fit;
    quant_rows(g, q, w, i0, 0, m);
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

static void q8_avx2_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    q8_geom q = q8_geometry(g->N, g->K, g->B->group, NR, 0);
    q8_work w = q8_work_layout(&q, g->M, 2, MR, g->work);
    for (int64_t i0 = 0; i0 < g->M; i0 += w.rows) {
        int64_t m = g->M - i0 < w.rows ? g->M - i0 : w.rows;
        chunk_gemm(g, &q, &w, i0, m);
    }
}

const dm_wkern dm_wkern_q8_avx2 = {
    .isa = DM_ISA_AVX2,
    .needs = 0,
    .pack_size = q8_avx2_pack_size,
    .work_size = q8_avx2_work_size,
    .pack = q8_avx2_pack,
    .unpack = q8_avx2_unpack,
    .gemm = q8_avx2_gemm,
};
