/* wt_half_avx2.h - the AVX2 + FMA + F16C kernels of the 16-bit weight types,
 * written once for both: wt_bf16_avx2.c and wt_f16_avx2.c each define
 * HALF_BF16 (1 or 0) and include this file, which gives them static
 * half_pack_size / half_work_size / half_pack / half_unpack / half_gemm for
 * their dm_wkern, and the type's conversion for the tests (wt_half.h).
 *
 * What they compute (wtype.h): f16: fp32 activations times the weights
 * widened exactly to fp32 (vcvtph2ps); bf16: the activations first rounded to
 * bf16 exactly as dm_f32_to_bf16 does (integer arithmetic, subnormals and NaN
 * included), the weights widened by a 16-bit shift; fp32 FMAs either way.
 *
 * Packed layout: the f32 AVX2 kernel's (kernels_avx2.c) in half the bytes: B
 * [N, K] as panels of NR = 16 outputs, panel p holding for each k the 16
 * 16-bit values W[16p .. 16p+15, k] contiguously (32 bytes, zero past N).
 *
 * g->work: bf16 first holds the rounded activations, fp32 [M, K] (the tiles
 * then read them with lda = K, no a_idx); then, from WIDE_M rows on, a block
 * of widened panels. Few rows: an MR x 16 register tile (MR <= 6, 12 ymm
 * accumulators + 2 widened B + 1 broadcast) widens two xmm of weights per k;
 * M = 1 runs four panels at once (eight chains). More rows: each L2-sized
 * block of panels is widened once into work, where it is the f32 kernel's
 * packed layout, and dm_wkern_f32_avx2.gemm runs it (a sub-GEMM whose C, bias
 * and R start at the block's first column).
 * Measured against the f32 AVX2 kernel (bench/half_gemm.c avx2, one core):
 * 0.88-0.95x at M = 32..1024 (the widening's extra instructions), 1.6-2.0x
 * at M = 1, where the f32 kernel has no matrix-vector path. */
#ifndef HALF_BF16
#error "define HALF_BF16 (1: bf16, 0: f16) before including wt_half_avx2.h"
#endif

#include "base/base.h"
#include "kernels/wt_half.h"
#include "kernels/simd_avx2.h"
#include "kernels/wtype.h"

#include <immintrin.h>

enum {
    NR = 16,                      /* outputs per panel */
    MR = 6,                       /* rows per register tile */
    WIDE_M = 128,                 /* from this many rows, widen blocks into work (measured: on a par from 64..256) */
    L2_PANEL_BYTES = 512 * 1024,  /* widened (fp32) panels per block: the f32 kernel's budget */
};

/* ---------------------------------------------------------------- layout */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t half_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)n_panels(N > 0 ? N : 0) * NR * (size_t)(K > 0 ? K : 0) * sizeof(uint16_t);
}

/* Panels per widened block: as many as fit the L2 budget, at least one. */
static int block_panels(int K)
{
    size_t fit = L2_PANEL_BYTES / ((size_t)(K > 0 ? K : 1) * NR * sizeof(float));
    return fit < 1 ? 1 : (int)fit;
}

/* Bytes of the rounded activations in work (bf16 only), 64-byte multiple. */
static size_t acts_bytes(int64_t M, int K)
{
    return HALF_BF16 ? ((size_t)(M > 0 ? M : 0) * (size_t)(K > 0 ? K : 0) * sizeof(float) + 63) / 64 * 64 : 0;
}

static size_t half_work_size(int64_t M, int K)
{
    size_t n = acts_bytes(M, K);
    if (M >= WIDE_M) n += (size_t)block_panels(K) * NR * (size_t)(K > 0 ? K : 0) * sizeof(float);
    return n ? n + 64 : 0;
}

static void half_pack(const void *const part[], int N, int K, int group, void *data /* [P, K, NR] */)
{
    (void)group;
    const uint16_t *W = part[0];
    uint16_t *dst = data;
    for (int p = 0; p < n_panels(N); p++) {
        uint16_t *panel = dst + (size_t)p * K * NR;
        for (int j = 0; j < NR; j++) {
            int n = p * NR + j;
            const uint16_t *w = n < N ? W + (size_t)n * K : NULL;
            for (int k = 0; k < K; k++) panel[(size_t)k * NR + j] = w ? w[k] : 0;
        }
    }
}

static void half_unpack(const void *data, int N, int K, int group, void *const part[])
{
    (void)group;
    const uint16_t *src = data;
    uint16_t *W = part[0];
    for (int n = 0; n < N; n++) {
        const uint16_t *panel = src + (size_t)(n / NR) * K * NR;
        for (int k = 0; k < K; k++) W[(size_t)n * K + k] = panel[(size_t)k * NR + n % NR];
    }
}

/* ---------------------------------------------------------------- conversions */

/* Eight weights -> fp32, exactly. */
static inline __m256 widen8(const uint16_t *h)
{
    __m128i v = _mm_loadu_si128((const __m128i *)h);
#if HALF_BF16
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
#else
    return _mm256_cvtph_ps(v);
#endif
}

#if HALF_BF16
/* dm_f32_to_bf16 on 8 lanes, the result kept as the fp32 bit pattern (bf16 <<
 * 16): NaN -> quiet, truncated; else u + 0x7fff + lsb, low half cleared. */
static inline __m256i round8_bits(__m256i u)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
    __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
    return _mm256_and_si256(_mm256_blendv_epi8(r, q, nan), hi);
}

void dm_wt_bf16_round_avx2(const float *x, int64_t n, uint16_t *out)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_srli_epi32(round8_bits(_mm256_loadu_si256((const __m256i *)(x + i))), 16);
        /* 8 x 32-bit -> 8 x 16-bit: pack within each 128-bit lane, then join the lanes */
        __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
        _mm_storeu_si128((__m128i *)(out + i), p);
    }
    for (; i < n; i++) out[i] = dm_f32_to_bf16(x[i]);
}

/* The activations of the GEMM (through a_idx, times a_scale) rounded to bf16, as fp32 [M, K]. */
static void round_rows(const dm_gemm *g, float *dst)
{
    int K = g->K;
    for (int64_t i = 0; i < g->M; i++) {
        const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda;
        float *o = dst + i * K;
        if (g->a_scale) {  /* s a in place first, then rounded there */
            float s = g->a_scale[i];
            for (int k = 0; k < K; k++) o[k] = s * a[k];
            a = o;
        }
        int k = 0;
        for (; k + 8 <= K; k += 8)
            _mm256_storeu_si256((__m256i *)(o + k), round8_bits(_mm256_loadu_si256((const __m256i *)(a + k))));
        for (; k < K; k++) o[k] = dm_bf16_to_f32(dm_f32_to_bf16(a[k]));
    }
}
#else
void dm_wt_f16_widen_avx2(const uint16_t *h, int64_t n, float *out)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, widen8(h + i));
    for (; i < n; i++) {
        uint16_t t[8] = {h[i]};
        float f[8];
        _mm256_storeu_ps(f, widen8(t));
        out[i] = f[0];
    }
}
#endif

/* A block of n weights (contiguous panels) -> fp32. */
static void widen_block(const uint16_t *h, int64_t n, float *out)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, widen8(h + i));
    /* n is a multiple of NR */
}

/* ---------------------------------------------------------------- register tiles */

/* The rows of one register tile, resolved through the index lists. */
typedef struct tile_rows {
    const float *a[MR]; /* each [K] */
    float *c[MR];       /* each [N] */
    const float *r[MR]; /* each [N], or NULL */
    float s[MR];
} tile_rows;

/* a: the activations' base, row stride and index list (bf16: the rounded copy). */
static void resolve_rows(const dm_gemm *g, const float *A, int64_t lda, const int32_t *a_idx, int64_t i0,
                         int mr, tile_rows *rows)
{
    for (int i = 0; i < mr; i++) {
        int64_t row = i0 + i;
        rows->a[i] = A + (a_idx ? a_idx[row] : row) * lda;
        rows->c[i] = g->C + (g->c_idx ? g->c_idx[row] : row) * g->ldc;
        rows->r[i] = g->R ? g->R + (g->r_idx ? g->r_idx[row] : row) * g->ldr : NULL;
        rows->s[i] = g->scale ? g->scale[row] : 1.0f;
    }
}

/* One finished row of a tile: 16 columns at n0, the second 8 only when nv > 8. */
static inline void store_row(const tile_rows *rows, int i, __m256 lo, __m256 hi, int n0, int nv,
                             const dm_gemm *g)
{
    store_out(rows->c[i], rows->r[i], rows->s[i], lo, hi, n0, nv, g);
}

#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* One mr x 16 tile over the whole K, widening two xmm of weights per k;
 * always inlined with a constant mr. nv = valid columns (1..16). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const uint16_t *bp /* [K, NR] */, int K, int n0, int nv, const dm_gemm *g,
     const int mr)
{
#define DECL(i)                                                 \
    __m256 lo##i = _mm256_setzero_ps(), hi##i = lo##i;          \
    const float *a##i = mr > i ? rows->a[i] : NULL;
    TILE_ROWS(DECL)
#undef DECL
    for (int k = 0; k < K; k++) {
        __m256 b0 = widen8(bp + (size_t)k * NR), b1 = widen8(bp + (size_t)k * NR + 8);
#define STEP(i)                                                 \
        if (mr > i) {                                           \
            __m256 av = _mm256_broadcast_ss(a##i + k);          \
            lo##i = _mm256_fmadd_ps(av, b0, lo##i);             \
            hi##i = _mm256_fmadd_ps(av, b1, hi##i);             \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
#define STORE(i) \
    if (mr > i) store_row(rows, i, lo##i, hi##i, n0, nv, g);
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tile_fn)(const tile_rows *, const uint16_t *, int, int, int, const dm_gemm *);
#define DEF_TILE(m)                                                                        \
    static void tile_##m(const tile_rows *rows, const uint16_t *bp, int K, int n0, int nv, \
                         const dm_gemm *g)                                                 \
    {                                                                                      \
        tile(rows, bp, K, n0, nv, g, m);                                                   \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
#undef DEF_TILE

static const tile_fn tiles[MR + 1] = {NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

/* M = 1: four full panels at once, eight independent FMA chains. */
static void gemv4(const tile_rows *rows, const uint16_t *bp /* 4 x [K, NR] */, int K, int n0, const dm_gemm *g)
{
    const float *a = rows->a[0];
    const size_t ps = (size_t)K * NR;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int k = 0; k < K; k++) {
        __m256 av = _mm256_broadcast_ss(a + k);
        const uint16_t *b = bp + (size_t)k * NR;
        c0 = _mm256_fmadd_ps(av, widen8(b), c0);
        c1 = _mm256_fmadd_ps(av, widen8(b + 8), c1);
        c2 = _mm256_fmadd_ps(av, widen8(b + ps), c2);
        c3 = _mm256_fmadd_ps(av, widen8(b + ps + 8), c3);
        c4 = _mm256_fmadd_ps(av, widen8(b + 2 * ps), c4);
        c5 = _mm256_fmadd_ps(av, widen8(b + 2 * ps + 8), c5);
        c6 = _mm256_fmadd_ps(av, widen8(b + 3 * ps), c6);
        c7 = _mm256_fmadd_ps(av, widen8(b + 3 * ps + 8), c7);
    }
    store_row(rows, 0, c0, c1, n0, NR, g);
    store_row(rows, 0, c2, c3, n0 + NR, NR, g);
    store_row(rows, 0, c4, c5, n0 + 2 * NR, NR, g);
    store_row(rows, 0, c6, c7, n0 + 3 * NR, NR, g);
}

/* ---------------------------------------------------------------- the two ways */

/* Few rows: the register tiles widen as they go (the f32 kernel's loop order). */
static void gemm_narrow(const dm_gemm *g, const float *A, int64_t lda, const int32_t *a_idx)
{
    const uint16_t *Bp = g->B->data;
    int K = g->K > 0 ? g->K : 0, np = n_panels(g->N);
    if (g->M == 1) {
        tile_rows rows;
        resolve_rows(g, A, lda, a_idx, 0, 1, &rows);
        int p = 0;
        for (; (p + 4) * NR <= g->N; p += 4) gemv4(&rows, Bp + (size_t)p * K * NR, K, p * NR, g);
        for (; p < np; p++) tile_1(&rows, Bp + (size_t)p * K * NR, K, p * NR, g->N - p * NR, g);
        return;
    }
    int pc = block_panels(K) * 2;  /* 16-bit panels: half the bytes of the f32 budget's */
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            resolve_rows(g, A, lda, a_idx, i0, mr, &rows);
            for (int p = p0; p < p1; p++) tiles[mr](&rows, Bp + (size_t)p * K * NR, K, p * NR, g->N - p * NR, g);
        }
    }
}

/* More rows: widen a block of panels into wide, run the f32 kernel on it. */
static void gemm_wide(const dm_gemm *g, const float *A, int64_t lda, const int32_t *a_idx, float *wide)
{
    const uint16_t *Bp = g->B->data;
    int K = g->K, np = n_panels(g->N), pc = block_panels(K);
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np, n0 = p0 * NR;
        widen_block(Bp + (size_t)p0 * K * NR, (int64_t)(p1 - p0) * K * NR, wide);
        dm_wmat wf = {.type = &dm_wtypes[DM_WT_F32], .kern = &dm_wkern_f32_avx2,
                      .N = g->N - n0 < (p1 - p0) * NR ? g->N - n0 : (p1 - p0) * NR, .K = K, .data = wide};
        dm_gemm sub = *g;
        sub.A = A;
        sub.lda = lda;
        sub.a_idx = a_idx;
        sub.N = wf.N;
        sub.B = &wf;
        sub.bias = g->bias ? g->bias + n0 : NULL;
        sub.R = g->R ? g->R + n0 : NULL;
        sub.C = g->C + n0;
        sub.work = NULL;
        dm_wkern_f32_avx2.gemm(&sub);
    }
}

static void half_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    const float *A = g->A;
    int64_t lda = g->lda;
    const int32_t *a_idx = g->a_idx;
    unsigned char *work = g->work;
#if HALF_BF16
    /* the rounded activations (work is required here) */
    round_rows(g, (float *)work);
    A = (const float *)work;
    lda = g->K;
    a_idx = NULL;
    work += acts_bytes(g->M, g->K);
#endif
    if (g->M >= WIDE_M && work && g->K > 0) gemm_wide(g, A, lda, a_idx, (float *)work);
    else gemm_narrow(g, A, lda, a_idx);
}
