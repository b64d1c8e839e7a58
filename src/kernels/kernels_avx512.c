/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ) + FMA kernels.
 *
 * GEMM design (C = A·Bᵀ, B [N, K] in nn.Linear layout):
 *  - pack_b cuts B into column panels of NR = 32 outputs. Panel p holds, for
 *    each k, the 32 values B[32p .. 32p+31, k] contiguously (zero past N), so
 *    one k step of the micro-kernel is two contiguous zmm loads.
 *  - The micro-kernel computes an MR x 32 tile (MR <= 12 rows, 24 zmm
 *    accumulators) over the whole K in registers, broadcasting A[row][k]
 *    from row pointers resolved once through a_idx, so gathered rows are
 *    never copied. The fused epilogue runs once per tile, on the finished
 *    sums, with masked loads/stores for the N tail.
 *  - Loop order: blocks of panels sized to stay in L2, then row blocks, then
 *    panels: an MR-row block of A (MR*K floats) stays in L1 while it sweeps
 *    the L2-resident panels.
 * Accumulation is in float (the reference accumulates in double). */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>

enum {
    NR = 32,                 /* outputs per panel: two zmm */
    MR = 12,                 /* rows per micro-tile (TILE_ROWS): 24 accumulators + 2 B + 1 broadcast */
    L2_PANEL_BYTES = 512 * 1024, /* packed B swept per row block */
};

/* ---------------------------------------------------------------- packing */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t avx512_pack_b_size(int N, int K)
{
    return (size_t)n_panels(N) * NR * (size_t)(K > 0 ? K : 0);
}

static void avx512_pack_b(const float *B /* [N, K] */, int N, int K, float *dst /* [P, K, NR] */)
{
    for (int p = 0; p < n_panels(N); p++) {
        float *panel = dst + (size_t)p * K * NR; /* [K, NR] */
        for (int j = 0; j < NR; j++) {
            int n = p * NR + j;
            if (n >= N) { /* zero columns past N: the tail lanes compute 0 */
                for (int k = 0; k < K; k++) panel[(size_t)k * NR + j] = 0.0f;
                continue;
            }
            /* read B rows sequentially; the strided writes are a one-time cost */
            const float *b = B + (int64_t)n * K; /* [K] */
            for (int k = 0; k < K; k++) panel[(size_t)k * NR + j] = b[k];
        }
    }
}

/* ---------------------------------------------------------------- gemm */

/* The rows of one micro-tile, resolved through the index lists. */
typedef struct tile_rows {
    const float *a[MR]; /* each [K] */
    float *c[MR];       /* each [N] */
    const float *r[MR]; /* each [N], or NULL */
    float s[MR];
} tile_rows;

/* c = s * (act(acc + bias) + r) on the lanes in mask; bias is [16] at this column. */
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

static inline __mmask16 lane_mask(int valid)
{
    if (valid >= 16) return (__mmask16)0xFFFF;
    if (valid <= 0) return 0;
    return (__mmask16)((1u << valid) - 1u);
}

/* Stores one finished row of a tile: 32 columns at n0, the second half only
 * when the panel has more than 16 valid columns. */
static inline void store_row(const tile_rows *rows, int i, __m512 lo, __m512 hi, int n0,
                             __mmask16 m0, __mmask16 m1, const dm_gemm *g)
{
    const float *bias = g->bias ? g->bias + n0 : NULL;
    const float *r = rows->r[i] ? rows->r[i] + n0 : NULL;
    int has_scale = g->scale != NULL;
    float *c = rows->c[i] + n0;
    _mm512_mask_storeu_ps(c, m0, epilogue(lo, m0, bias, g->act, r, rows->s[i], has_scale));
    if (m1)
        _mm512_mask_storeu_ps(c + 16, m1, epilogue(hi, m1, bias ? bias + 16 : NULL, g->act,
                                                   r ? r + 16 : NULL, rows->s[i], has_scale));
}

/* Expands X(i) for each row slot of a tile. The accumulators are named
 * variables, not an array, and every use sits behind `mr > i` with a
 * constant mr, so each compiler keeps them in registers without relying on
 * loop unrolling. */
#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* One mr x 32 tile over the whole K; always inlined with a constant mr.
 * nv = valid columns of this panel (1..32). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const float *bp /* [K, NR] */, int K, int n0, int nv,
     const dm_gemm *g, const int mr)
{
#define DECL(i)                                                 \
    __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;          \
    const float *a##i = mr > i ? rows->a[i] : NULL; /* [K] */
    TILE_ROWS(DECL)
#undef DECL

    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(bp + (size_t)k * NR);
        __m512 b1 = _mm512_loadu_ps(bp + (size_t)k * NR + 16);
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

typedef void (*tile_fn)(const tile_rows *, const float *, int, int, int, const dm_gemm *);

#define DEF_TILE(m)                                                                    \
    static void tile_##m(const tile_rows *rows, const float *bp, int K, int n0, int nv, \
                         const dm_gemm *g)                                             \
    {                                                                                  \
        tile(rows, bp, K, n0, nv, g, m);                                               \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE

static const tile_fn tiles[MR + 1] = {
    NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6,
    tile_7, tile_8, tile_9, tile_10, tile_11, tile_12,
};

static void resolve_rows(const dm_gemm *g, int64_t i0, int mr, tile_rows *rows)
{
    for (int i = 0; i < mr; i++) {
        int64_t row = i0 + i;
        rows->a[i] = g->A + (g->a_idx ? g->a_idx[row] : row) * g->lda;
        rows->c[i] = g->C + (g->c_idx ? g->c_idx[row] : row) * g->ldc;
        rows->r[i] = g->R ? g->R + (g->r_idx ? g->r_idx[row] : row) * g->ldr : NULL;
        rows->s[i] = g->scale ? g->scale[row] : 1.0f;
    }
}

static void avx512_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    int K = g->K > 0 ? g->K : 0;
    int np = n_panels(g->N);
    size_t panel_bytes = (size_t)K * NR * sizeof(float);
    /* panels per block: as many as fit the L2 budget, at least one */
    size_t fit = panel_bytes ? L2_PANEL_BYTES / panel_bytes : (size_t)np;
    int pc = fit < 1 ? 1 : fit > (size_t)np ? np : (int)fit;

    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            resolve_rows(g, i0, mr, &rows);
            for (int p = p0; p < p1; p++) {
                int n0 = p * NR;
                tiles[mr](&rows, g->Bp + (size_t)p * K * NR, K, n0, g->N - n0, g);
            }
        }
    }
}

/* ---------------------------------------------------------------- layernorm */

static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* Sum of row[0..n) and of (row[j] - mean)^2, 16 lanes at a time, masked tail. */
static float row_sum(const float *row, int n)
{
    __m512 s = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(row + j));
    if (j < n) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(lane_mask(n - j), row + j));
    return hsum(s);
}

static float row_sqdev(const float *row, int n, float mean)
{
    __m512 s = _mm512_setzero_ps(), m = _mm512_set1_ps(mean);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(row + j), m);
        s = _mm512_fmadd_ps(d, d, s);
    }
    if (j < n) {
        __mmask16 k = lane_mask(n - j);
        /* masked-off lanes load 0 and subtract to 0 */
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, row + j), m);
        s = _mm512_fmadd_ps(d, d, s);
    }
    return hsum(s);
}

/* y = (x - mean) * inv * gamma + beta on the lanes in k. */
static inline __m512 ln_apply(__m512 x, __m512 mean, __m512 inv, const float *gamma,
                              const float *beta, __mmask16 k)
{
    __m512 y = _mm512_mul_ps(_mm512_sub_ps(x, mean), inv);
    if (gamma) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(k, gamma));
    if (beta) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, beta));
    return y;
}

/* gamma and beta may be NULL (1 and 0). Two passes, like the reference. */
static void avx512_layernorm(float *x, int64_t rows, int n, int64_t ld,
                             const float *gamma, const float *beta, float eps)
{
    if (n <= 0) return;
    for (int64_t i = 0; i < rows; i++) {
        float *row = x + i * ld; /* [n] */
        float mean = row_sum(row, n) / (float)n;
        float var = row_sqdev(row, n, mean) / (float)n;
        __m512 vm = _mm512_set1_ps(mean), vi = _mm512_set1_ps(1.0f / sqrtf(var + eps));
        int j = 0;
        for (; j + 16 <= n; j += 16)
            _mm512_storeu_ps(row + j, ln_apply(_mm512_loadu_ps(row + j), vm, vi,
                                               gamma ? gamma + j : NULL, beta ? beta + j : NULL,
                                               (__mmask16)0xFFFF));
        if (j < n) {
            __mmask16 k = lane_mask(n - j);
            _mm512_mask_storeu_ps(row + j, k, ln_apply(_mm512_maskz_loadu_ps(k, row + j), vm, vi,
                                                       gamma ? gamma + j : NULL,
                                                       beta ? beta + j : NULL, k));
        }
    }
}

/* ---------------------------------------------------------------- silu_mul */

/* exp(x): Cephes expf range reduction and polynomial (about 1 ulp), scaled
 * by 2^n with scalef, which rounds results past FLT_MAX to inf. Inputs are
 * clamped below where exp stays normal (silu only needs exp(-x) << 1 there). */
static inline __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(100.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n*ln2, with ln2 split so n*ln2_hi is exact */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* silu(g) * u = g / (1 + exp(-g)) * u, with a true division for accuracy. */
static inline __m512 silu_mul16(__m512 g, __m512 u)
{
    __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    return _mm512_mul_ps(_mm512_div_ps(g, den), u);
}

static void avx512_silu_mul(const float *gu, int64_t rows, int h, int64_t ld_gu,
                            float *out, int64_t ld_out)
{
    /* Each 16-wide chunk is read before it is written, so in place
     * (out == gu, ld_out <= ld_gu) only overwrites gate values already used. */
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu; /* [h] */
        const float *up = gate + h;         /* [h] */
        float *o = out + i * ld_out;        /* [h] */
        int j = 0;
        for (; j + 16 <= h; j += 16)
            _mm512_storeu_ps(o + j, silu_mul16(_mm512_loadu_ps(gate + j), _mm512_loadu_ps(up + j)));
        if (j < h) {
            __mmask16 k = lane_mask(h - j);
            _mm512_mask_storeu_ps(o + j, k, silu_mul16(_mm512_maskz_loadu_ps(k, gate + j),
                                                       _mm512_maskz_loadu_ps(k, up + j)));
        }
    }
}

const dm_kernels dm_kernels_avx512 = {
    .isa = DM_ISA_AVX512,
    .pack_b_size = avx512_pack_b_size,
    .pack_b = avx512_pack_b,
    .gemm = avx512_gemm,
    .layernorm = avx512_layernorm,
    .silu_mul = avx512_silu_mul,
};
