/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ) + FMA kernels.
 *
 * GEMM design (C = A·Bᵀ, B [N, K] in nn.Linear layout):
 *  - the f32 pack cuts B into column panels of NR = 32 outputs. Panel p holds, for
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
 * Accumulation is in float (the reference accumulates in double).
 *
 * gemm_tn (dW += dYᵀ X, rows through index lists): C is cut into tiles of
 * MR rows n x 32 columns k (two zmm per row, 24 accumulators). The input
 * rows i are cut into chunks (their A rows stay in L2; at most TN_ROWS rows
 * when there are scales); per chunk, column blocks are the outer loop, so a
 * 32-column strip of B stays in cache for every row tile. A tile runs over
 * the chunk's rows in order: per row it loads b_i[k0 .. k0+31] times s_i,
 * broadcasts a_i[n .. n+MR) and does 2*MR FMAs; the finished tile is added
 * into C once per chunk. With scales and more than one row tile, the scaled
 * strip is packed once per chunk (32 KB on the stack) instead of each tile
 * paying 2 multiplies per row (a tenth of its FMAs). Rows ahead are
 * prefetched (gathered rows defeat the hardware prefetcher).
 * Every output is C + (fma chain over the first chunk's rows, in order) +
 * (the next chunk's) ...: the chunking depends on N and scale only, and the
 * arithmetic of an output neither on its tile nor on packing, so splitting
 * [n0, n1) between threads gives bitwise the same C, run after run. */
#include "kernels/wtype.h"
#include "kernels/simd_avx512.h"
#include "kernels/wt_half.h"

#include <immintrin.h>
#include <math.h>

enum {
    NR = 32,                 /* outputs per panel: two zmm */
    MR = 12,                 /* rows per micro-tile (TILE_ROWS): 24 accumulators + 2 B + 1 broadcast */
    L2_PANEL_BYTES = 512 * 1024, /* packed B swept per row block */
    TN_A_BYTES = 512 * 1024,     /* gemm_tn: rows of A per chunk of the sum over i */
    TN_ROWS = 256,               /* gemm_tn: rows per chunk when it may pack */
    TN_PF = 8,                   /* gemm_tn: rows ahead to prefetch */
};

/* ---------------------------------------------------------------- packing */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t avx512_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)n_panels(N) * NR * (size_t)(K > 0 ? K : 0) * sizeof(float);
}

/* Full panels go through 16x16 register transposes (training re-packs every
 * step, so this is a hot path); the last partial panel and the K tail are
 * copied element by element. */
static void avx512_pack(const void *const part[], int N, int K, int group, void *data /* [P, K, NR] */)
{
    (void)group;
    const float *B = part[0] /* [N, K] */;
    float *dst = data;
    for (int p = 0; p < n_panels(N); p++) {
        float *panel = dst + (size_t)p * K * NR; /* [K, NR] */
        int n0 = p * NR, k_done = 0;
        if (n0 + NR <= N) {
            for (; k_done + 16 <= K; k_done += 16)
                for (int half = 0; half < 2; half++) {
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = _mm512_loadu_ps(B + (size_t)(n0 + half * 16 + i) * K + k_done);
                    transpose16_ps(r);
                    for (int i = 0; i < 16; i++) _mm512_storeu_ps(panel + (size_t)(k_done + i) * NR + half * 16, r[i]);
                }
        }
        for (int j = 0; j < NR; j++) {
            const float *b = n0 + j < N ? B + (size_t)(n0 + j) * K : NULL;
            for (int k = k_done; k < K; k++) panel[(size_t)k * NR + j] = b ? b[k] : 0.0f;
        }
    }
}

static void avx512_pack_t(const float *B /* [N, K] */, int N, int K, int r0, int r1, void *dst /* [P, N, NR] */, float *tmp)
{
    (void)tmp;
    dm_pack_panels_t(B, N, K, r0, r1, NR, dst);
}

static void avx512_unpack(const void *src, int N, int K, int group, void *const part[])
{
    (void)group;
    float *B = part[0];
    dm_unpack_panels(src, N, K, NR, B);
}

/* ---------------------------------------------------------------- gemm */

/* The rows of one micro-tile, resolved through the index lists. */
typedef dm512_rows tile_rows;
_Static_assert(MR == DM512_TILE_MR, "a tile holds MR rows");

/* Stores one finished row of a tile: 32 columns at n0, the second half only
 * when the panel has more than 16 valid columns. */
static inline void store_row(const tile_rows *rows, int i, __m512 lo, __m512 hi, int n0,
                             __mmask16 m0, __mmask16 m1, const dm_gemm *g)
{
    store_out(rows->c[i], rows->r[i], rows->s[i], lo, hi, n0, m0, m1, g);
}

/* Expands X(i) for each row slot of a tile. The accumulators are named
 * variables, not an array, and every use sits behind `mr > i` with a
 * constant mr, so each compiler keeps them in registers without relying on
 * loop unrolling. */
#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* One mr x 32 tile over the whole K; always inlined with constant mr and
 * lo (only the first 16 columns: a panel with nv <= 16, e.g. the router's
 * N = 8, skips the all-zero half; each output's FMA chain is the same).
 * nv = valid columns of this panel (1..32). */
static inline __attribute__((always_inline)) void
tile(const tile_rows *rows, const float *bp /* [K, NR] */, int K, int n0, int nv,
     const dm_gemm *g, const int mr, const int lo)
{
#define DECL(i)                                                 \
    __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;          \
    const float *a##i = mr > i ? rows->a[i] : NULL; /* [K] */
    TILE_ROWS(DECL)
#undef DECL

    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(bp + (size_t)k * NR);
        __m512 b1 = lo ? b0 : _mm512_loadu_ps(bp + (size_t)k * NR + 16);
#define STEP(i)                                                 \
        if (mr > i) {                                           \
            __m512 av = _mm512_set1_ps(a##i[k]);                \
            lo##i = _mm512_fmadd_ps(av, b0, lo##i);             \
            if (!lo) hi##i = _mm512_fmadd_ps(av, b1, hi##i);    \
        }
        TILE_ROWS(STEP)
#undef STEP
    }

    __mmask16 m0 = lane_mask(nv), m1 = lo ? 0 : lane_mask(nv - 16);
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
        tile(rows, bp, K, n0, nv, g, m, 0);                                            \
    }                                                                                  \
    static void tilelo_##m(const tile_rows *rows, const float *bp, int K, int n0, int nv, \
                           const dm_gemm *g)                                           \
    {                                                                                  \
        tile(rows, bp, K, n0, nv, g, m, 1);                                            \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE

static const tile_fn tiles[MR + 1] = {
    NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6,
    tile_7, tile_8, tile_9, tile_10, tile_11, tile_12,
};
/* the same for a panel of at most 16 valid columns */
static const tile_fn tiles_lo[MR + 1] = {
    NULL, tilelo_1, tilelo_2, tilelo_3, tilelo_4, tilelo_5, tilelo_6,
    tilelo_7, tilelo_8, tilelo_9, tilelo_10, tilelo_11, tilelo_12,
};


/* The batch-1 path: one row against four full panels at once. Eight
 * independent accumulator chains keep the FMA pipes busy where one panel's two
 * chains would wait on FMA latency. Each output is still one chain over k in
 * order, exactly as in tile_1, so the result is the same bits. */
static void gemv4(const tile_rows *rows, const float *bp /* 4 x [K, NR] */, int K, int n0, const dm_gemm *g)
{
    const float *a = rows->a[0];
    const size_t ps = (size_t)K * NR;
    const float *q0 = bp, *q1 = bp + ps, *q2 = bp + 2 * ps, *q3 = bp + 3 * ps;
    __m512 l0 = _mm512_setzero_ps(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
    for (int k = 0; k < K; k++) {
        __m512 av = _mm512_set1_ps(a[k]);
        size_t o = (size_t)k * NR;
        l0 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q0 + o), l0);
        h0 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q0 + o + 16), h0);
        l1 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q1 + o), l1);
        h1 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q1 + o + 16), h1);
        l2 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q2 + o), l2);
        h2 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q2 + o + 16), h2);
        l3 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q3 + o), l3);
        h3 = _mm512_fmadd_ps(av, _mm512_loadu_ps(q3 + o + 16), h3);
    }
    const __mmask16 all = (__mmask16)0xFFFF;
    store_row(rows, 0, l0, h0, n0, all, all, g);
    store_row(rows, 0, l1, h1, n0 + NR, all, all, g);
    store_row(rows, 0, l2, h2, n0 + 2 * NR, all, all, g);
    store_row(rows, 0, l3, h3, n0 + 3 * NR, all, all, g);
}

static void avx512_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    const float *Bp = g->B->data;
    int K = g->K > 0 ? g->K : 0;
    int np = n_panels(g->N);
    if (g->M == 1) {  /* matrix-vector: no L2 blocking needed, four panels per pass */
        tile_rows rows;
        dm512_resolve_rows(g, 0, 1, &rows);
        int p = 0;
        for (; (p + 4) * NR <= g->N; p += 4) gemv4(&rows, Bp + (size_t)p * K * NR, K, p * NR, g);
        for (; p < np; p++)
            (g->N - p * NR <= 16 ? tilelo_1 : tile_1)(&rows, Bp + (size_t)p * K * NR, K, p * NR, g->N - p * NR, g);
        return;
    }
    size_t panel_bytes = (size_t)K * NR * sizeof(float);
    /* panels per block: as many as fit the L2 budget, at least one */
    size_t fit = panel_bytes ? L2_PANEL_BYTES / panel_bytes : (size_t)np;
    int pc = fit < 1 ? 1 : fit > (size_t)np ? np : (int)fit;

    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            dm512_resolve_rows(g, i0, mr, &rows);
            for (int p = p0; p < p1; p++) {
                int n0 = p * NR;
                (g->N - n0 <= 16 ? tiles_lo : tiles)[mr](&rows, Bp + (size_t)p * K * NR, K, n0, g->N - n0, g);
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

/* ---------------------------------------------------------------- layernorm (training) */

static void avx512_layernorm_fwd(const float *x, int64_t rows, int n, int64_t ld,
                                 const float *gamma, const float *beta, float eps,
                                 float *y, int64_t ldy, float *mean, float *rstd)
{
    if (n <= 0) return;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld; /* [n] */
        float *yr = y + i * ldy;      /* [n] */
        float mu = row_sum(xr, n) / (float)n;
        float var = row_sqdev(xr, n, mu) / (float)n;
        float rs = 1.0f / sqrtf(var + eps);
        mean[i] = mu;
        rstd[i] = rs;
        __m512 vm = _mm512_set1_ps(mu), vi = _mm512_set1_ps(rs);
        /* each chunk is read before it is written: y == x works */
        int j = 0;
        for (; j + 16 <= n; j += 16)
            _mm512_storeu_ps(yr + j, ln_apply(_mm512_loadu_ps(xr + j), vm, vi,
                                              gamma ? gamma + j : NULL, beta ? beta + j : NULL,
                                              (__mmask16)0xFFFF));
        if (j < n) {
            __mmask16 k = lane_mask(n - j);
            _mm512_mask_storeu_ps(yr + j, k, ln_apply(_mm512_maskz_loadu_ps(k, xr + j), vm, vi,
                                                      gamma ? gamma + j : NULL,
                                                      beta ? beta + j : NULL, k));
        }
    }
}

/* Pass 1 of layernorm_bwd on the lanes in k at column j: sums of g and
 * g * xhat, and the dgamma/dbeta accumulation. Masked-off lanes load dy = 0,
 * so they add nothing. */
static inline void ln_bwd_sums(const float *xr, const float *dyr, int j, __mmask16 k,
                               __m512 vm, __m512 vr, const float *gamma, float *dgamma,
                               float *dbeta, __m512 *sg, __m512 *sgx)
{
    __m512 d = _mm512_maskz_loadu_ps(k, dyr + j);
    __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), vm), vr);
    __m512 g = gamma ? _mm512_mul_ps(d, _mm512_maskz_loadu_ps(k, gamma + j)) : d;
    *sg = _mm512_add_ps(*sg, g);
    *sgx = _mm512_fmadd_ps(g, xh, *sgx);
    if (dgamma)
        _mm512_mask_storeu_ps(dgamma + j, k, _mm512_fmadd_ps(d, xh, _mm512_maskz_loadu_ps(k, dgamma + j)));
    if (dbeta)
        _mm512_mask_storeu_ps(dbeta + j, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dbeta + j), d));
}

/* Pass 2: dx = rstd * (g - mean(g) - xhat * mean(g xhat)) on the lanes in k. */
static inline void ln_bwd_dx(const float *xr, const float *dyr, float *dxr, int j, __mmask16 k,
                             __m512 vm, __m512 vr, const float *gamma, __m512 mg, __m512 mgx)
{
    __m512 d = _mm512_maskz_loadu_ps(k, dyr + j);
    __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), vm), vr);
    __m512 g = gamma ? _mm512_mul_ps(d, _mm512_maskz_loadu_ps(k, gamma + j)) : d;
    __m512 v = _mm512_fnmadd_ps(xh, mgx, _mm512_sub_ps(g, mg));
    _mm512_mask_storeu_ps(dxr + j, k, _mm512_mul_ps(vr, v));
}

static void avx512_layernorm_bwd(const float *x, const float *mean, const float *rstd,
                                 const float *dy, int64_t rows, int n, int64_t ld,
                                 const float *gamma, float *dx, float *dgamma, float *dbeta)
{
    if (n <= 0) return;
    const __mmask16 all = (__mmask16)0xFFFF;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld, *dyr = dy + i * ld; /* [n] */
        float *dxr = dx + i * ld;                         /* [n] */
        __m512 vm = _mm512_set1_ps(mean[i]), vr = _mm512_set1_ps(rstd[i]);
        __m512 sg = _mm512_setzero_ps(), sgx = _mm512_setzero_ps();
        int j = 0;
        for (; j + 16 <= n; j += 16) ln_bwd_sums(xr, dyr, j, all, vm, vr, gamma, dgamma, dbeta, &sg, &sgx);
        if (j < n) ln_bwd_sums(xr, dyr, j, lane_mask(n - j), vm, vr, gamma, dgamma, dbeta, &sg, &sgx);
        /* the whole row of dy is read before dx (which may be dy) is written */
        __m512 mg = _mm512_set1_ps(hsum(sg) / (float)n), mgx = _mm512_set1_ps(hsum(sgx) / (float)n);
        for (j = 0; j + 16 <= n; j += 16) ln_bwd_dx(xr, dyr, dxr, j, all, vm, vr, gamma, mg, mgx);
        if (j < n) ln_bwd_dx(xr, dyr, dxr, j, lane_mask(n - j), vm, vr, gamma, mg, mgx);
    }
}

/* ---------------------------------------------------------------- silu_mul_bwd */

/* dg = dout * u * silu'(g), du = dout * silu(g), silu'(g) = s + silu(g) (1 - s). */
static inline void silu_bwd16(__m512 g, __m512 u, __m512 d, __m512 *dg, __m512 *du)
{
    __m512 one = _mm512_set1_ps(1.0f);
    /* exp512 clamps: g -> -inf gives s = 0, g -> +inf gives s = 1, no NaN */
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    __m512 silu = _mm512_mul_ps(g, s);
    __m512 dsilu = _mm512_fmadd_ps(silu, _mm512_sub_ps(one, s), s);
    *dg = _mm512_mul_ps(_mm512_mul_ps(d, u), dsilu);
    *du = _mm512_mul_ps(d, silu);
}

static void avx512_silu_mul_bwd(const float *gu, const float *dout, int64_t rows, int h,
                                int64_t ld_gu, int64_t ld_d, float *dgu)
{
    /* Each chunk of g and u is read before the same chunks of dgu are
     * written, so dgu == gu works. */
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu, *up = gate + h; /* [h] each */
        const float *d = dout + i * ld_d;                   /* [h] */
        float *dg = dgu + i * ld_gu, *du = dg + h;          /* [h] each */
        __m512 vg, vu;
        int j = 0;
        for (; j + 16 <= h; j += 16) {
            silu_bwd16(_mm512_loadu_ps(gate + j), _mm512_loadu_ps(up + j), _mm512_loadu_ps(d + j),
                       &vg, &vu);
            _mm512_storeu_ps(dg + j, vg);
            _mm512_storeu_ps(du + j, vu);
        }
        if (j < h) {
            __mmask16 k = lane_mask(h - j);
            silu_bwd16(_mm512_maskz_loadu_ps(k, gate + j), _mm512_maskz_loadu_ps(k, up + j),
                       _mm512_maskz_loadu_ps(k, d + j), &vg, &vu);
            _mm512_mask_storeu_ps(dg + j, k, vg);
            _mm512_mask_storeu_ps(du + j, k, vu);
        }
    }
}

/* ---------------------------------------------------------------- gemm_tn */

/* Where a tile reads its rows of B: row i is B + (idx ? idx[i] : i - i0) * ldb,
 * times scale[i] when scale is set. Either the caller's B, or a strip packed
 * by tn_pack (idx and scale NULL, ldb 32, counted from the chunk's i0). */
typedef struct tn_bsrc {
    const float *B;
    int64_t ldb, i0;
    const int32_t *idx;
    const float *scale;
} tn_bsrc;

/* Packs the chunk's rows [i0, i1) of the 32-column strip of B at k0,
 * multiplied by their scales, contiguously: bs [i1 - i0][32], zero past K.
 * The row tiles then stream it without the two multiplies per row (s_i *
 * b_i[k] is the same float either way, so packing never changes results). */
static void tn_pack(const dm_gemm_tn *g, int64_t i0, int64_t i1, int k0, __mmask16 m0, __mmask16 m1,
                    float *bs)
{
    const float *B = g->B + k0;
    for (int64_t i = i0; i < i1; i++, bs += 32) {
        const float *b = B + (g->b_idx ? g->b_idx[i] : i) * g->ldb; /* [32] */
        __m512 s = _mm512_set1_ps(g->scale[i]);
        _mm512_store_ps(bs, _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, b), s));
        _mm512_store_ps(bs + 16, _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, b + 16), s));
    }
}

/* One mr x (16 nw) tile of C at row n, column k0, over the chunk's rows
 * [i0, i1); always inlined with constant mr and nw (1 or 2 zmm per row).
 * m0/m1: the valid columns of each half. */
static inline __attribute__((always_inline)) void
tn_tile(const dm_gemm_tn *g, int64_t i0, int64_t i1, int n, int k0, const tn_bsrc *src,
        __mmask16 m0, __mmask16 m1, const int mr, const int nw)
{
#define DECL(i) __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;
    TILE_ROWS(DECL)
#undef DECL
    /* C is read once, at the end: fetch its lines now, under the sums */
#define PREF(i) if (mr > i) { const char *c_ = (const char *)(g->C + (int64_t)(n + i) * g->ldc + k0); \
                              _mm_prefetch(c_, _MM_HINT_T0); if (nw > 1) _mm_prefetch(c_ + 64, _MM_HINT_T0); }
    TILE_ROWS(PREF)
#undef PREF
    const float *A = g->A + n, *B = src->B;
    const int32_t *a_idx = g->a_idx, *b_idx = src->idx;
    const float *scale = src->scale;
    int64_t boff = src->i0;
    for (int64_t i = i0; i < i1; i++) {
        const float *a = A + (a_idx ? a_idx[i] : i) * g->lda;        /* [mr] */
        const float *b = B + (b_idx ? b_idx[i] : i - boff) * src->ldb; /* [16 nw] */
        if (i + TN_PF < i1) { /* gathered rows defeat the hardware prefetcher */
            int64_t ip = i + TN_PF;
            _mm_prefetch((const char *)(A + (a_idx ? a_idx[ip] : ip) * g->lda), _MM_HINT_T0);
            const char *bp = (const char *)(B + (b_idx ? b_idx[ip] : ip - boff) * src->ldb);
            _mm_prefetch(bp, _MM_HINT_T0);
            _mm_prefetch(bp + 64, _MM_HINT_T0);
        }
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = nw > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : _mm512_setzero_ps();
        if (scale) {
            __m512 s = _mm512_set1_ps(scale[i]);
            b0 = _mm512_mul_ps(b0, s);
            if (nw > 1) b1 = _mm512_mul_ps(b1, s);
        }
#define STEP(i)                                                 \
        if (mr > i) {                                           \
            __m512 av = _mm512_set1_ps(a[i]);                   \
            lo##i = _mm512_fmadd_ps(av, b0, lo##i);             \
            if (nw > 1) hi##i = _mm512_fmadd_ps(av, b1, hi##i); \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
#define STORE(i)                                                                        \
    if (mr > i) {                                                                       \
        float *c = g->C + (int64_t)(n + i) * g->ldc + k0;                               \
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), lo##i)); \
        if (nw > 1)                                                                     \
            _mm512_mask_storeu_ps(c + 16, m1,                                           \
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), hi##i)); \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tn_fn)(const dm_gemm_tn *, int64_t, int64_t, int, int, const tn_bsrc *, __mmask16,
                      __mmask16);

#define DEF_TN(m)                                                                          \
    static void tn1_##m(const dm_gemm_tn *g, int64_t i0, int64_t i1, int n, int k0,        \
                        const tn_bsrc *src, __mmask16 m0, __mmask16 m1)                    \
    {                                                                                      \
        tn_tile(g, i0, i1, n, k0, src, m0, m1, m, 1);                                      \
    }                                                                                      \
    static void tn2_##m(const dm_gemm_tn *g, int64_t i0, int64_t i1, int n, int k0,        \
                        const tn_bsrc *src, __mmask16 m0, __mmask16 m1)                    \
    {                                                                                      \
        tn_tile(g, i0, i1, n, k0, src, m0, m1, m, 2);                                      \
    }
DEF_TN(1) DEF_TN(2) DEF_TN(3) DEF_TN(4) DEF_TN(5) DEF_TN(6)
DEF_TN(7) DEF_TN(8) DEF_TN(9) DEF_TN(10) DEF_TN(11) DEF_TN(12)
#undef DEF_TN

static const tn_fn tn_tiles[2][MR + 1] = {
    {NULL, tn1_1, tn1_2, tn1_3, tn1_4, tn1_5, tn1_6, tn1_7, tn1_8, tn1_9, tn1_10, tn1_11, tn1_12},
    {NULL, tn2_1, tn2_2, tn2_3, tn2_4, tn2_5, tn2_6, tn2_7, tn2_8, tn2_9, tn2_10, tn2_11, tn2_12},
};

/* Rows per chunk of the sum over i: few enough that the chunk's rows of A
 * (N floats each) stay in L2 while every column block sweeps them, and at
 * most TN_ROWS (the packed strip) when the call may pack. A function of N
 * and of whether there are scales, never of [n0, n1), so that how the rows
 * were split cannot change the chunking (and thus the rounding). */
static int64_t tn_chunk_rows(const dm_gemm_tn *g)
{
    int64_t mc = TN_A_BYTES / ((int64_t)(g->N > 0 ? g->N : 1) * (int64_t)sizeof(float));
    if (mc < 64) mc = 64;
    return g->scale && g->N > MR && mc > TN_ROWS ? TN_ROWS : mc;
}

static void avx512_gemm_tn(const dm_gemm_tn *g)
{
    /* M == 0 leaves C untouched (adding zeros would turn -0 into +0) */
    if (g->M <= 0 || g->n1 <= g->n0 || g->K <= 0) return;
    /* with scales and more than one row tile, pack the scaled strip once for
     * all tiles (then N > MR, so chunks are at most TN_ROWS rows) */
    int pack = g->scale && g->n1 - g->n0 > MR;
    _Alignas(64) float bs[TN_ROWS * 32]; /* the packed strip, 32 KB */
    int64_t mc = tn_chunk_rows(g);
    for (int64_t i0 = 0; i0 < g->M; i0 += mc) {
        int64_t i1 = g->M - i0 < mc ? g->M : i0 + mc;
        for (int k0 = 0; k0 < g->K; k0 += 2 * 16) {
            int kv = g->K - k0; /* valid columns from k0 */
            int nw = kv > 16 ? 2 : 1;
            __mmask16 m0 = lane_mask(kv), m1 = lane_mask(kv - 16);
            tn_bsrc src = {.B = g->B + k0, .ldb = g->ldb, .idx = g->b_idx, .scale = g->scale};
            if (pack) {
                tn_pack(g, i0, i1, k0, m0, m1, bs);
                src = (tn_bsrc){.B = bs, .ldb = 32, .i0 = i0};
            }
            for (int n = g->n0; n < g->n1; n += MR) {
                int mr = g->n1 - n < MR ? g->n1 - n : MR;
                tn_tiles[nw - 1][mr](g, i0, i1, n, k0, &src, m0, m1);
            }
        }
    }
}

/* ---------------------------------------------------------------- colsum */

static void avx512_colsum(const float *A, int64_t lda, const int32_t *a_idx, const float *scale,
                          int64_t M, int N, float *out)
{
    if (M <= 0) return; /* out untouched */
    /* 64 columns (four zmm) at a time, each summed over all rows in order */
    for (int n = 0; n < N; n += 64) {
        __mmask16 m0 = lane_mask(N - n), m1 = lane_mask(N - n - 16);
        __mmask16 m2 = lane_mask(N - n - 32), m3 = lane_mask(N - n - 48);
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < M; i++) {
            const float *a = A + (a_idx ? a_idx[i] : i) * lda + n; /* [64] */
            /* s * a with s = 1 is exact: the same as a plain add */
            __m512 s = _mm512_set1_ps(scale ? scale[i] : 1.0f);
            s0 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m0, a), s0);
            s1 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m1, a + 16), s1);
            s2 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m2, a + 32), s2);
            s3 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m3, a + 48), s3);
        }
        float *o = out + n;
        _mm512_mask_storeu_ps(o, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, o), s0));
        _mm512_mask_storeu_ps(o + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, o + 16), s1));
        _mm512_mask_storeu_ps(o + 32, m2, _mm512_add_ps(_mm512_maskz_loadu_ps(m2, o + 32), s2));
        _mm512_mask_storeu_ps(o + 48, m3, _mm512_add_ps(_mm512_maskz_loadu_ps(m3, o + 48), s3));
    }
}

/* ---------------------------------------------------------------- adamw */

/* One step on the lanes in k, operation for operation as the reference
 * (true division and sqrt, no FMA contraction), so the two agree bitwise. */
static inline void adamw16(float *p, const float *g, float *m, float *v, __mmask16 k,
                           __m512 gscale, __m512 lrwd, __m512 lr, __m512 b1, __m512 c1,
                           __m512 b2, __m512 c2, __m512 eps, __m512 bc1, __m512 bc2)
{
    __m512 gv = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g), gscale);
    __m512 pv = _mm512_maskz_loadu_ps(k, p);
    pv = _mm512_sub_ps(pv, _mm512_mul_ps(lrwd, pv));
    __m512 mv = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(k, m)), _mm512_mul_ps(c1, gv));
    __m512 vv = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(k, v)),
                              _mm512_mul_ps(_mm512_mul_ps(c2, gv), gv));
    __m512 num = _mm512_mul_ps(lr, _mm512_div_ps(mv, bc1));
    __m512 den = _mm512_add_ps(_mm512_sqrt_ps(_mm512_div_ps(vv, bc2)), eps);
    pv = _mm512_sub_ps(pv, _mm512_div_ps(num, den));
    _mm512_mask_storeu_ps(m, k, mv);
    _mm512_mask_storeu_ps(v, k, vv);
    _mm512_mask_storeu_ps(p, k, pv);
}

static void avx512_adamw(float *p, const float *g, float *m, float *v, int64_t n, float gscale,
                         float lr, float b1, float b2, float eps, float wd, float bc1, float bc2)
{
    __m512 vgs = _mm512_set1_ps(gscale), vlrwd = _mm512_set1_ps(lr * wd), vlr = _mm512_set1_ps(lr);
    __m512 vb1 = _mm512_set1_ps(b1), vc1 = _mm512_set1_ps(1.0f - b1);
    __m512 vb2 = _mm512_set1_ps(b2), vc2 = _mm512_set1_ps(1.0f - b2);
    __m512 veps = _mm512_set1_ps(eps), vbc1 = _mm512_set1_ps(bc1), vbc2 = _mm512_set1_ps(bc2);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        adamw16(p + j, g + j, m + j, v + j, (__mmask16)0xFFFF, vgs, vlrwd, vlr, vb1, vc1, vb2, vc2,
                veps, vbc1, vbc2);
    if (j < n)
        adamw16(p + j, g + j, m + j, v + j, lane_mask((int)(n - j)), vgs, vlrwd, vlr, vb1, vc1, vb2,
                vc2, veps, vbc1, vbc2);
}

/* ---------------------------------------------------------------- combine, input check */

/* As ref_combine: per 16 columns, mul then add in slot order (bitwise the reference). */
static void avx512_combine(const float *y, const float *w, int64_t rows, int J, int k, int D, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * J * D, *wr = w + r * k;
        float *o = out + r * D;
        for (int d = 0; d < D; d += 16) {
            __mmask16 m = D - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (D - d)) - 1u);
            __m512 acc = _mm512_mul_ps(_mm512_set1_ps(wr[0]), _mm512_maskz_loadu_ps(m, yr + d));
            for (int j = 1; j < J; j++) {
                __m512 wj = _mm512_set1_ps(j < k ? wr[j] : 1.0f);
                acc = _mm512_add_ps(acc, _mm512_mul_ps(wj, _mm512_maskz_loadu_ps(m, yr + (int64_t)j * D + d)));
            }
            _mm512_mask_storeu_ps(o + d, m, acc);
        }
    }
}

/* 64 values per step: exponent bits all ones; the first hit found in its step. */
static int64_t avx512_find_nonfinite(const float *x, int64_t n)
{
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __mmask16 b0 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i), e), e);
        __mmask16 b1 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 16), e), e);
        __mmask16 b2 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 32), e), e);
        __mmask16 b3 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 48), e), e);
        if (b0 | b1 | b2 | b3) {
            uint64_t all = (uint64_t)b0 | (uint64_t)b1 << 16 | (uint64_t)b2 << 32 | (uint64_t)b3 << 48;
            return i + __builtin_ctzll(all);
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __mmask16 b = _mm512_mask_cmpeq_epi32_mask(m, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + i), e), e);
        if (b) return i + __builtin_ctz(b);
    }
    return -1;
}

/* sumsq's and mse_grad's 16 chains (lo: 0-7, hi: 8-15) added as kernels.h says */
static inline double chains16(__m512d lo, __m512d hi)
{
    __m512d s = _mm512_add_pd(lo, hi);
    __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

/* kernels.h's order: lo holds chains 0-7, hi 8-15 (x zero past n) */
static double avx512_sumsq(const float *x, int64_t n)
{
    __m512d lo = _mm512_setzero_pd(), hi = lo;
    for (int64_t i = 0; i < n; i += 16) {
        /* plain loads but for the tail (masked ones stream slower here) */
        __m256 v0, v1;
        if (n - i >= 16) {
            v0 = _mm256_loadu_ps(x + i);
            v1 = _mm256_loadu_ps(x + i + 8);
        } else {
            __m512 v = _mm512_maskz_loadu_ps(lane_mask((int)(n - i)), x + i);
            v0 = _mm512_castps512_ps256(v);
            v1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        }
        __m512d d0 = _mm512_cvtps_pd(v0), d1 = _mm512_cvtps_pd(v1);
        lo = _mm512_fmadd_pd(d0, d0, lo);  /* the square is exact: fma = mul then add */
        hi = _mm512_fmadd_pd(d1, d1, hi);
    }
    return chains16(lo, hi);
}

/* 8 values of mse_grad (kernels.h) into chain accumulator acc (mul then add: no FMA, as the reference) */
static inline __m512d mse8(__m256 o, __m256 t, __m512d c, __m512d inv, float *grad, __mmask8 m, __m512d acc)
{
    __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(o), _mm512_cvtps_pd(t));
    _mm256_mask_storeu_ps(grad, m, _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(c, d), inv)));
    return _mm512_add_pd(acc, _mm512_mul_pd(d, d));
}

static double avx512_mse_grad(const float *out, const float *target, int64_t n, double c, double inv, float *grad)
{
    __m512d lo = _mm512_setzero_pd(), hi = lo, vc = _mm512_set1_pd(c), vi = _mm512_set1_pd(inv);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = mse8(_mm256_loadu_ps(out + i), _mm256_loadu_ps(target + i), vc, vi, grad + i, 0xFF, lo);
        hi = mse8(_mm256_loadu_ps(out + i + 8), _mm256_loadu_ps(target + i + 8), vc, vi, grad + i + 8, 0xFF, hi);
    }
    if (i < n) {  /* zeros past n add 0 to their chains */
        int r = (int)(n - i);
        __mmask8 m0 = (__mmask8)lane_mask(r), m1 = (__mmask8)lane_mask(r - 8);
        lo = mse8(_mm256_maskz_loadu_ps(m0, out + i), _mm256_maskz_loadu_ps(m0, target + i), vc, vi, grad + i, m0, lo);
        hi = mse8(_mm256_maskz_loadu_ps(m1, out + i + 8), _mm256_maskz_loadu_ps(m1, target + i + 8), vc, vi, grad + i + 8,
                  m1, hi);
    }
    return chains16(lo, hi);
}

static void avx512_add_rows(float *o, const float *y, int J, const float *g, float s, int D)
{
    __m512 vs = _mm512_set1_ps(s);
    for (int d = 0; d < D; d += 16) {
        __mmask16 m = lane_mask(D - d);
        int full = D - d >= 16;  /* plain loads and stores where all 16 are valid */
        __m512 v = full ? _mm512_loadu_ps(o + d) : _mm512_maskz_loadu_ps(m, o + d);
        for (int j = 0; j < J; j++) {
            const float *yj = y + (int64_t)j * D + d;
            v = _mm512_add_ps(v, full ? _mm512_loadu_ps(yj) : _mm512_maskz_loadu_ps(m, yj));
        }
        if (g) v = _mm512_add_ps(v, _mm512_mul_ps(vs, full ? _mm512_loadu_ps(g + d) : _mm512_maskz_loadu_ps(m, g + d)));
        if (full) _mm512_storeu_ps(o + d, v);
        else _mm512_mask_storeu_ps(o + d, m, v);
    }
}

/* vdpbf16ps where the CPU has AVX512_BF16, else rounded copies (kernels.h) */
static void avx512_gemm_tn_bf16(const dm_gemm_tn *g)
{
    if (dm_cpu_has(DM_CPU_BF16)) dm_gemm_tn_bf16_avx512(g);
    else dm_gemm_tn_bf16_emul(&dm_kernels_avx512, g);
}

const dm_kernels dm_kernels_avx512 = {
    .isa = DM_ISA_AVX512,
    .layernorm = avx512_layernorm,
    .silu_mul = avx512_silu_mul,
    .layernorm_fwd = avx512_layernorm_fwd,
    .layernorm_bwd = avx512_layernorm_bwd,
    .silu_mul_bwd = avx512_silu_mul_bwd,
    .gemm_tn = avx512_gemm_tn,
    .gemm_tn_bf16 = avx512_gemm_tn_bf16,
    .colsum = avx512_colsum,
    .adamw = avx512_adamw,
    .combine = avx512_combine,
    .find_nonfinite = avx512_find_nonfinite,
    .sumsq = avx512_sumsq,
    .mse_grad = avx512_mse_grad,
    .add_rows = avx512_add_rows,
};

const dm_wkern dm_wkern_f32_avx512 = {
    .isa = DM_ISA_AVX512,
    .pack_size = avx512_pack_size,
    .pack = avx512_pack,
    .pack_t = avx512_pack_t,
    .panel_rows = NR,
    .unpack = avx512_unpack,
    .gemm = avx512_gemm,
};
