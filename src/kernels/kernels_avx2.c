/* kernels_avx2.c - AVX2 + FMA kernels.
 *
 * The same design as kernels_avx512.c with 16 registers instead of 32:
 *  - pack_b cuts B [N, K] into column panels of NR = 16 outputs; panel p
 *    holds, for each k, B[16p .. 16p+15, k] contiguously (zero past N).
 *  - The micro-kernel computes an MR x 16 tile (MR <= 6 rows, 12 ymm
 *    accumulators + 2 B + 1 broadcast = 15 registers) over the whole K,
 *    reading A through row pointers resolved once from a_idx. The fused
 *    epilogue runs once per tile; N tails use maskload/maskstore.
 *  - Loop order: L2-sized blocks of panels, then row blocks, then panels.
 * Accumulation is in float (the reference accumulates in double). */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>

enum {
    NR = 16,                 /* outputs per panel: two ymm */
    MR = 6,                  /* rows per micro-tile (TILE_ROWS) */
    L2_PANEL_BYTES = 512 * 1024, /* packed B swept per row block */
};

/* ---------------------------------------------------------------- packing */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t avx2_pack_b_size(int N, int K)
{
    return (size_t)n_panels(N) * NR * (size_t)(K > 0 ? K : 0);
}

static void avx2_pack_b(const float *B /* [N, K] */, int N, int K, float *dst /* [P, K, NR] */)
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

/* ---------------------------------------------------------------- masks */

/* All-ones in the first `valid` of 8 lanes (valid may be <= 0 or >= 8). */
static inline __m256i lane_mask(int valid)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---------------------------------------------------------------- gemm */

/* The rows of one micro-tile, resolved through the index lists. */
typedef struct tile_rows {
    const float *a[MR]; /* each [K] */
    float *c[MR];       /* each [N] */
    const float *r[MR]; /* each [N], or NULL */
    float s[MR];
} tile_rows;

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

/* Stores one finished row of a tile: 16 columns at n0, the second half only
 * when the panel has more than 8 valid columns. */
static inline void store_row(const tile_rows *rows, int i, __m256 lo, __m256 hi, int n0,
                             int nv, const dm_gemm *g)
{
    const float *bias = g->bias ? g->bias + n0 : NULL;
    const float *r = rows->r[i] ? rows->r[i] + n0 : NULL;
    int has_scale = g->scale != NULL;
    float *c = rows->c[i] + n0;
    __m256i m0 = lane_mask(nv);
    _mm256_maskstore_ps(c, m0, epilogue(lo, m0, bias, g->act, r, rows->s[i], has_scale));
    if (nv > 8) {
        __m256i m1 = lane_mask(nv - 8);
        _mm256_maskstore_ps(c + 8, m1, epilogue(hi, m1, bias ? bias + 8 : NULL, g->act,
                                                r ? r + 8 : NULL, rows->s[i], has_scale));
    }
}

/* Expands X(i) for each row slot of a tile. The accumulators are named
 * variables, not an array, and every use sits behind `mr > i` with a
 * constant mr, so each compiler keeps them in registers without relying on
 * loop unrolling. */
#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* One mr x 16 tile over the whole K; always inlined with a constant mr.
 * nv = valid columns of this panel (1..16). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const float *bp /* [K, NR] */, int K, int n0, int nv,
     const dm_gemm *g, const int mr)
{
#define DECL(i)                                                 \
    __m256 lo##i = _mm256_setzero_ps(), hi##i = lo##i;          \
    const float *a##i = mr > i ? rows->a[i] : NULL; /* [K] */
    TILE_ROWS(DECL)
#undef DECL

    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(bp + (size_t)k * NR);
        __m256 b1 = _mm256_loadu_ps(bp + (size_t)k * NR + 8);
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

typedef void (*tile_fn)(const tile_rows *, const float *, int, int, int, const dm_gemm *);

#define DEF_TILE(m)                                                                    \
    static void tile_##m(const tile_rows *rows, const float *bp, int K, int n0, int nv, \
                         const dm_gemm *g)                                             \
    {                                                                                  \
        tile(rows, bp, K, n0, nv, g, m);                                               \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
#undef DEF_TILE

static const tile_fn tiles[MR + 1] = {NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

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

static void avx2_gemm(const dm_gemm *g)
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

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float row_sum(const float *row, int n)
{
    __m256 s = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(row + j));
    if (j < n) s = _mm256_add_ps(s, _mm256_maskload_ps(row + j, lane_mask(n - j)));
    return hsum(s);
}

static float row_sqdev(const float *row, int n, float mean)
{
    __m256 s = _mm256_setzero_ps(), m = _mm256_set1_ps(mean);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(row + j), m);
        s = _mm256_fmadd_ps(d, d, s);
    }
    if (j < n) {
        __m256i k = lane_mask(n - j);
        /* zero the masked-off lanes after subtracting */
        __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(row + j, k), m),
                                 _mm256_castsi256_ps(k));
        s = _mm256_fmadd_ps(d, d, s);
    }
    return hsum(s);
}

/* y = (x - mean) * inv * gamma + beta on the lanes in k. */
static inline __m256 ln_apply(__m256 x, __m256 mean, __m256 inv, const float *gamma,
                              const float *beta, __m256i k)
{
    __m256 y = _mm256_mul_ps(_mm256_sub_ps(x, mean), inv);
    if (gamma) y = _mm256_mul_ps(y, _mm256_maskload_ps(gamma, k));
    if (beta) y = _mm256_add_ps(y, _mm256_maskload_ps(beta, k));
    return y;
}

/* gamma and beta may be NULL (1 and 0). Two passes, like the reference. */
static void avx2_layernorm(float *x, int64_t rows, int n, int64_t ld,
                           const float *gamma, const float *beta, float eps)
{
    if (n <= 0) return;
    __m256i all = _mm256_set1_epi32(-1);
    for (int64_t i = 0; i < rows; i++) {
        float *row = x + i * ld; /* [n] */
        float mean = row_sum(row, n) / (float)n;
        float var = row_sqdev(row, n, mean) / (float)n;
        __m256 vm = _mm256_set1_ps(mean), vi = _mm256_set1_ps(1.0f / sqrtf(var + eps));
        int j = 0;
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(row + j, ln_apply(_mm256_loadu_ps(row + j), vm, vi,
                                               gamma ? gamma + j : NULL, beta ? beta + j : NULL,
                                               all));
        if (j < n) {
            __m256i k = lane_mask(n - j);
            _mm256_maskstore_ps(row + j, k, ln_apply(_mm256_maskload_ps(row + j, k), vm, vi,
                                                     gamma ? gamma + j : NULL,
                                                     beta ? beta + j : NULL, k));
        }
    }
}

/* ---------------------------------------------------------------- silu_mul */

/* exp(x): Cephes expf range reduction and polynomial (about 1 ulp). 2^n is
 * applied as two exact powers of two, 2^(n/2) * 2^(n - n/2), so results
 * past FLT_MAX round to inf instead of wrapping the exponent bits. */
static inline __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(100.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n*ln2, with ln2 split so n*ln2_hi is exact */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);           /* [-126, 145] */
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 e2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, e1), e2);
}

/* silu(g) * u = g / (1 + exp(-g)) * u, with a true division for accuracy. */
static inline __m256 silu_mul8(__m256 g, __m256 u)
{
    __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    return _mm256_mul_ps(_mm256_div_ps(g, den), u);
}

static void avx2_silu_mul(const float *gu, int64_t rows, int h, int64_t ld_gu,
                          float *out, int64_t ld_out)
{
    /* Each 8-wide chunk is read before it is written, so in place
     * (out == gu, ld_out <= ld_gu) only overwrites gate values already used. */
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu; /* [h] */
        const float *up = gate + h;         /* [h] */
        float *o = out + i * ld_out;        /* [h] */
        int j = 0;
        for (; j + 8 <= h; j += 8)
            _mm256_storeu_ps(o + j, silu_mul8(_mm256_loadu_ps(gate + j), _mm256_loadu_ps(up + j)));
        if (j < h) {
            __m256i k = lane_mask(h - j);
            _mm256_maskstore_ps(o + j, k, silu_mul8(_mm256_maskload_ps(gate + j, k),
                                                    _mm256_maskload_ps(up + j, k)));
        }
    }
}

const dm_kernels dm_kernels_avx2 = {
    .isa = DM_ISA_AVX2,
    .pack_b_size = avx2_pack_b_size,
    .pack_b = avx2_pack_b,
    .gemm = avx2_gemm,
    .layernorm = avx2_layernorm,
    .silu_mul = avx2_silu_mul,
};
