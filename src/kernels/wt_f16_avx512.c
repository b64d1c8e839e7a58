/* wt_f16_avx512.c - f16 weights on AVX-512 + F16C.
 *
 * What it computes (wtype.h): fp32 activations times the f16 weights widened
 * exactly to fp32 (vcvtph2ps is exact), summed in fp32: the f32 GEMM of the
 * dequantized weights up to summation order.
 *
 * Packed layout: the f32 kernel's (kernels_avx512.c) in half the bytes: B
 * [N, K] as panels of NR = 32 outputs, panel p holding for each k the 32
 * f16 W[32p .. 32p+31, k] contiguously (64 bytes, zero past N).
 *
 * Two ways through, by M (chosen by measuring both on the seed shapes):
 *  - few rows (M < WIDE_M): the weights are widened in registers as they
 *    are used. An MR x 32 tile (MR <= 12, 24 zmm accumulators) per k widens
 *    two ymm of f16 (vcvtph2ps) and runs 2 MR FMAs over broadcast
 *    activations; M = 1 runs four panels at once (eight FMA chains, eight
 *    widenings per k).
 *  - more rows: each L2-sized block of panels is widened once into g->work
 *    (then it is exactly the f32 kernel's packed layout) and the f32 kernel
 *    itself runs the block (dm_wkern_f32_avx512.gemm on a sub-GEMM whose C,
 *    bias and R start at the block's first column): its register tiles never
 *    pay for a conversion, and the widening costs 1/M of the FMAs.
 *    Without work (a caller that did not ask dm_wmat_work_size) it stays on
 *    the first way.
 * Measured (bench/half_gemm.c, one Sapphire Rapids core, seed shapes): the
 * first way runs 0.91-0.95x the f32 kernel at M = 32..128, because
 * vcvtph2ps zmm takes both vector ports (those of the FMAs) for a cycle per
 * 16 weights; at M = 1 that widening, not the bytes, is the bound: 0.9x with
 * the weights in L2, 2.0x when they come from memory (half the bytes). The
 * second way is on a par (0.97-1.0x) from M = 256 and costs 20% at M = 32. */
#include "kernels/wt_half.h"
#include "kernels/simd_avx512.h"
#include "kernels/wtype.h"

#include <immintrin.h>

enum {
    NR = 32,                      /* outputs per panel */
    MR = 12,                      /* rows per register tile */
    WIDE_M = 256,                 /* from this many rows, widen blocks into work (measured: on a par from 128) */
    L2_PANEL_BYTES = 512 * 1024,  /* widened (fp32) panels per block: the f32 kernel's budget */
};

/* ---------------------------------------------------------------- layout */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t f16_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)n_panels(N > 0 ? N : 0) * NR * (size_t)(K > 0 ? K : 0) * sizeof(uint16_t);
}

/* Panels per widened block: as many as fit the L2 budget, at least one. */
static int block_panels(int K)
{
    size_t bytes = (size_t)(K > 0 ? K : 1) * NR * sizeof(float);
    size_t fit = L2_PANEL_BYTES / bytes;
    return fit < 1 ? 1 : (int)fit;
}

static size_t f16_work_size(int64_t M, int K)
{
    if (M < WIDE_M) return 0;
    return (size_t)block_panels(K) * NR * (size_t)(K > 0 ? K : 0) * sizeof(float) + 64;
}

static void f16_pack(const void *const part[], int N, int K, int group, void *data /* [P, K, NR] */)
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

static void f16_unpack(const void *data, int N, int K, int group, void *const part[])
{
    (void)group;
    const uint16_t *src = data;
    uint16_t *W = part[0];
    for (int n = 0; n < N; n++) {
        const uint16_t *panel = src + (size_t)(n / NR) * K * NR;
        for (int k = 0; k < K; k++) W[(size_t)n * K + k] = panel[(size_t)k * NR + n % NR];
    }
}

/* ---------------------------------------------------------------- widening */

static inline __m512 widen16(const uint16_t *h) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h)); }

void dm_wt_f16_widen_avx512(const uint16_t *h, int64_t n, float *out)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, widen16(h + i));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i)));
    }
}

/* ---------------------------------------------------------------- register tiles */

/* The rows of one register tile, resolved through the index lists. */
typedef dm512_rows tile_rows;
_Static_assert(MR == DM512_TILE_MR, "a tile holds MR rows");


/* One finished row of a tile: 32 columns at n0, the second 16 only when m1 is not empty. */
static inline void store_row(const tile_rows *rows, int i, __m512 lo, __m512 hi, int n0,
                             __mmask16 m0, __mmask16 m1, const dm_gemm *g)
{
    store_out(rows->c[i], rows->r[i], rows->s[i], lo, hi, n0, m0, m1, g);
}

#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* One mr x 32 tile over the whole K, widening the panel's two ymm per k;
 * always inlined with a constant mr. nv = valid columns (1..32). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const uint16_t *bp /* [K, NR] */, int K, int n0, int nv, const dm_gemm *g,
     const int mr)
{
#define DECL(i)                                                 \
    __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;          \
    const float *a##i = mr > i ? rows->a[i] : NULL;
    TILE_ROWS(DECL)
#undef DECL
    for (int k = 0; k < K; k++) {
        __m512 b0 = widen16(bp + (size_t)k * NR), b1 = widen16(bp + (size_t)k * NR + 16);
#define STEP(i)                                                 \
        if (mr > i) {                                           \
            __m512 av = _mm512_set1_ps(a##i[k]);                \
            lo##i = _mm512_fmadd_ps(av, b0, lo##i);             \
            hi##i = _mm512_fmadd_ps(av, b1, hi##i);             \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
    __mmask16 m0 = lane_mask(nv), m1 = lane_mask(nv - 16);
#define STORE(i) \
    if (mr > i) store_row(rows, i, lo##i, hi##i, n0, m0, m1, g);
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
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE

static const tile_fn tiles[MR + 1] = {
    NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6,
    tile_7, tile_8, tile_9, tile_10, tile_11, tile_12,
};

/* M = 1: four full panels at once, eight independent FMA chains. */
static void gemv4(const tile_rows *rows, const uint16_t *bp /* 4 x [K, NR] */, int K, int n0, const dm_gemm *g)
{
    const float *a = rows->a[0];
    const size_t ps = (size_t)K * NR;
    const uint16_t *q0 = bp, *q1 = bp + ps, *q2 = bp + 2 * ps, *q3 = bp + 3 * ps;
    __m512 l0 = _mm512_setzero_ps(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
    for (int k = 0; k < K; k++) {
        __m512 av = _mm512_set1_ps(a[k]);
        size_t o = (size_t)k * NR;
        l0 = _mm512_fmadd_ps(av, widen16(q0 + o), l0);
        h0 = _mm512_fmadd_ps(av, widen16(q0 + o + 16), h0);
        l1 = _mm512_fmadd_ps(av, widen16(q1 + o), l1);
        h1 = _mm512_fmadd_ps(av, widen16(q1 + o + 16), h1);
        l2 = _mm512_fmadd_ps(av, widen16(q2 + o), l2);
        h2 = _mm512_fmadd_ps(av, widen16(q2 + o + 16), h2);
        l3 = _mm512_fmadd_ps(av, widen16(q3 + o), l3);
        h3 = _mm512_fmadd_ps(av, widen16(q3 + o + 16), h3);
    }
    const __mmask16 all = (__mmask16)0xFFFF;
    store_row(rows, 0, l0, h0, n0, all, all, g);
    store_row(rows, 0, l1, h1, n0 + NR, all, all, g);
    store_row(rows, 0, l2, h2, n0 + 2 * NR, all, all, g);
    store_row(rows, 0, l3, h3, n0 + 3 * NR, all, all, g);
}

/* ---------------------------------------------------------------- the two ways */

/* Few rows: the register tiles widen as they go (same loop order as f32). */
static void gemm_narrow(const dm_gemm *g)
{
    const uint16_t *Bp = g->B->data;
    int K = g->K > 0 ? g->K : 0, np = n_panels(g->N);
    if (g->M == 1) {
        tile_rows rows;
        dm512_resolve_rows(g, 0, 1, &rows);
        int p = 0;
        for (; (p + 4) * NR <= g->N; p += 4) gemv4(&rows, Bp + (size_t)p * K * NR, K, p * NR, g);
        for (; p < np; p++) tile_1(&rows, Bp + (size_t)p * K * NR, K, p * NR, g->N - p * NR, g);
        return;
    }
    int pc = block_panels(K) * 2;  /* f16 panels: half the bytes of the f32 budget's */
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            dm512_resolve_rows(g, i0, mr, &rows);
            for (int p = p0; p < p1; p++) tiles[mr](&rows, Bp + (size_t)p * K * NR, K, p * NR, g->N - p * NR, g);
        }
    }
}

/* More rows: widen a block of panels into work, run the f32 kernel on it. */
static void gemm_wide(const dm_gemm *g)
{
    const uint16_t *Bp = g->B->data;
    int K = g->K, np = n_panels(g->N), pc = block_panels(K);
    float *wide = g->work; /* [pc, K, NR]: the f32 kernel's panels */
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np, n0 = p0 * NR;
        dm_wt_f16_widen_avx512(Bp + (size_t)p0 * K * NR, (int64_t)(p1 - p0) * K * NR, wide);
        dm_wmat wf = {.type = &dm_wtypes[DM_WT_F32], .kern = &dm_wkern_f32_avx512,
                      .N = g->N - n0 < (p1 - p0) * NR ? g->N - n0 : (p1 - p0) * NR, .K = K, .data = wide};
        dm_gemm sub = *g;
        sub.N = wf.N;
        sub.B = &wf;
        sub.bias = g->bias ? g->bias + n0 : NULL;
        sub.R = g->R ? g->R + n0 : NULL;
        sub.C = g->C + n0;
        sub.work = NULL;
        dm_wkern_f32_avx512.gemm(&sub);
    }
}

static void f16_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    if (g->M >= WIDE_M && g->work && g->K > 0) gemm_wide(g);
    else gemm_narrow(g);
}

const dm_wkern dm_wkern_f16_avx512 = {
    .isa = DM_ISA_AVX512, .needs = DM_CPU_F16C,
    .pack_size = f16_pack_size, .work_size = f16_work_size,
    .pack = f16_pack, .unpack = f16_unpack, .gemm = f16_gemm,
};
