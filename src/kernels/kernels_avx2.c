/* kernels_avx2.c - AVX2 + FMA kernels.
 *
 * The same design as kernels_avx512.c with 16 registers instead of 32:
 *  - the f32 pack cuts B [N, K] into column panels of NR = 16 outputs; panel p
 *    holds, for each k, B[16p .. 16p+15, k] contiguously (zero past N).
 *  - The micro-kernel computes an MR x 16 tile (MR <= 6 rows, 12 ymm
 *    accumulators + 2 B + 1 broadcast = 15 registers) over the whole K,
 *    reading A through row pointers resolved once from a_idx. The fused
 *    epilogue runs once per tile; N tails use maskload/maskstore.
 *  - Loop order: L2-sized blocks of panels, then row blocks, then panels.
 * Accumulation is in float (the reference accumulates in double).
 *
 * gemm_tn (dW += dYᵀ X) as in kernels_avx512.c with tiles of MR = 6 rows n
 * x 16 columns k (two ymm, 12 accumulators), except that with only 12 FMAs
 * per input row a tile cannot afford per-row index lookups and multiplies:
 * each chunk of at most TN_ROWS rows resolves its A row pointers once and
 * packs each 16-column strip of B (times s_i) once, 16 KB on the stack, for
 * all row tiles. The chunking depends on N only and each output is C plus
 * one fma chain per chunk over its rows in order, so splitting [n0, n1)
 * between threads gives bitwise the same C. */
#include "kernels/wtype.h"
#include "kernels/simd_avx2.h"

#include <immintrin.h>
#include <math.h>

enum {
    NR = 16,                 /* outputs per panel: two ymm */
    MR = 6,                  /* rows per micro-tile (TILE_ROWS) */
    L2_PANEL_BYTES = 512 * 1024, /* packed B swept per row block */
    TN_A_BYTES = 512 * 1024,     /* gemm_tn: rows of A per chunk of the sum over i */
    TN_ROWS = 256,               /* gemm_tn: at most this many rows per chunk */
    TN_PF = 8,                   /* gemm_tn: rows ahead to prefetch */
};

/* ---------------------------------------------------------------- packing */

static int n_panels(int N) { return (N + NR - 1) / NR; }

static size_t avx2_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)n_panels(N) * NR * (size_t)(K > 0 ? K : 0) * sizeof(float);
}

static void avx2_pack(const void *const part[], int N, int K, int group, void *dst /* [P, K, NR] */)
{
    (void)group;
    const float *B = part[0] /* [N, K] */;
    dm_pack_panels(B, N, K, NR, dst);
}

static void avx2_pack_t(const float *B /* [N, K] */, int N, int K, int r0, int r1, void *dst /* [P, N, NR] */, float *tmp)
{
    (void)tmp;
    dm_pack_panels_t(B, N, K, r0, r1, NR, dst);
}

static void avx2_unpack(const void *src, int N, int K, int group, void *const part[])
{
    (void)group;
    float *B = part[0];
    dm_unpack_panels(src, N, K, NR, B);
}

/* ---------------------------------------------------------------- gemm */

/* The rows of one micro-tile, resolved through the index lists. */
typedef struct tile_rows {
    const float *a[MR]; /* each [K] */
    float *c[MR];       /* each [N] */
    const float *r[MR]; /* each [N], or NULL */
    float s[MR];
} tile_rows;

/* Stores one finished row of a tile: 16 columns at n0, the second half only
 * when the panel has more than 8 valid columns. */
static inline void store_row(const tile_rows *rows, int i, __m256 lo, __m256 hi, int n0,
                             int nv, const dm_gemm *g)
{
    store_out(rows->c[i], rows->r[i], rows->s[i], lo, hi, n0, nv, g);
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
    const float *Bp = g->B->data;
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
                tiles[mr](&rows, Bp + (size_t)p * K * NR, K, n0, g->N - n0, g);
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

/* ---------------------------------------------------------------- layernorm (training) */

static void avx2_layernorm_fwd(const float *x, int64_t rows, int n, int64_t ld,
                               const float *gamma, const float *beta, float eps,
                               float *y, int64_t ldy, float *mean, float *rstd)
{
    if (n <= 0) return;
    __m256i all = _mm256_set1_epi32(-1);
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld; /* [n] */
        float *yr = y + i * ldy;      /* [n] */
        float mu = row_sum(xr, n) / (float)n;
        float var = row_sqdev(xr, n, mu) / (float)n;
        float rs = 1.0f / sqrtf(var + eps);
        mean[i] = mu;
        rstd[i] = rs;
        __m256 vm = _mm256_set1_ps(mu), vi = _mm256_set1_ps(rs);
        /* each chunk is read before it is written: y == x works */
        int j = 0;
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(yr + j, ln_apply(_mm256_loadu_ps(xr + j), vm, vi,
                                              gamma ? gamma + j : NULL, beta ? beta + j : NULL,
                                              all));
        if (j < n) {
            __m256i k = lane_mask(n - j);
            _mm256_maskstore_ps(yr + j, k, ln_apply(_mm256_maskload_ps(xr + j, k), vm, vi,
                                                    gamma ? gamma + j : NULL,
                                                    beta ? beta + j : NULL, k));
        }
    }
}

/* Pass 1 of layernorm_bwd on the lanes in k at column j: sums of g and
 * g * xhat, and the dgamma/dbeta accumulation. Masked-off lanes load dy = 0,
 * so they add nothing. */
static inline void ln_bwd_sums(const float *xr, const float *dyr, int j, __m256i k,
                               __m256 vm, __m256 vr, const float *gamma, float *dgamma,
                               float *dbeta, __m256 *sg, __m256 *sgx)
{
    __m256 d = _mm256_maskload_ps(dyr + j, k);
    __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + j, k), vm), vr);
    __m256 g = gamma ? _mm256_mul_ps(d, _mm256_maskload_ps(gamma + j, k)) : d;
    *sg = _mm256_add_ps(*sg, g);
    *sgx = _mm256_fmadd_ps(g, xh, *sgx);
    if (dgamma)
        _mm256_maskstore_ps(dgamma + j, k, _mm256_fmadd_ps(d, xh, _mm256_maskload_ps(dgamma + j, k)));
    if (dbeta)
        _mm256_maskstore_ps(dbeta + j, k, _mm256_add_ps(_mm256_maskload_ps(dbeta + j, k), d));
}

/* Pass 2: dx = rstd * (g - mean(g) - xhat * mean(g xhat)) on the lanes in k. */
static inline void ln_bwd_dx(const float *xr, const float *dyr, float *dxr, int j, __m256i k,
                             __m256 vm, __m256 vr, const float *gamma, __m256 mg, __m256 mgx)
{
    __m256 d = _mm256_maskload_ps(dyr + j, k);
    __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + j, k), vm), vr);
    __m256 g = gamma ? _mm256_mul_ps(d, _mm256_maskload_ps(gamma + j, k)) : d;
    __m256 v = _mm256_fnmadd_ps(xh, mgx, _mm256_sub_ps(g, mg));
    _mm256_maskstore_ps(dxr + j, k, _mm256_mul_ps(vr, v));
}

static void avx2_layernorm_bwd(const float *x, const float *mean, const float *rstd,
                               const float *dy, int64_t rows, int n, int64_t ld,
                               const float *gamma, float *dx, float *dgamma, float *dbeta)
{
    if (n <= 0) return;
    __m256i all = _mm256_set1_epi32(-1);
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * ld, *dyr = dy + i * ld; /* [n] */
        float *dxr = dx + i * ld;                         /* [n] */
        __m256 vm = _mm256_set1_ps(mean[i]), vr = _mm256_set1_ps(rstd[i]);
        __m256 sg = _mm256_setzero_ps(), sgx = _mm256_setzero_ps();
        int j = 0;
        for (; j + 8 <= n; j += 8) ln_bwd_sums(xr, dyr, j, all, vm, vr, gamma, dgamma, dbeta, &sg, &sgx);
        if (j < n) ln_bwd_sums(xr, dyr, j, lane_mask(n - j), vm, vr, gamma, dgamma, dbeta, &sg, &sgx);
        /* the whole row of dy is read before dx (which may be dy) is written */
        __m256 mg = _mm256_set1_ps(hsum(sg) / (float)n), mgx = _mm256_set1_ps(hsum(sgx) / (float)n);
        for (j = 0; j + 8 <= n; j += 8) ln_bwd_dx(xr, dyr, dxr, j, all, vm, vr, gamma, mg, mgx);
        if (j < n) ln_bwd_dx(xr, dyr, dxr, j, lane_mask(n - j), vm, vr, gamma, mg, mgx);
    }
}

/* ---------------------------------------------------------------- silu_mul_bwd */

/* dg = dout * u * silu'(g), du = dout * silu(g), silu'(g) = s + silu(g) (1 - s). */
static inline void silu_bwd8(__m256 g, __m256 u, __m256 d, __m256 *dg, __m256 *du)
{
    __m256 one = _mm256_set1_ps(1.0f);
    /* exp256 clamps: g -> -inf gives s = 0, g -> +inf gives s = 1, no NaN */
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    __m256 silu = _mm256_mul_ps(g, s);
    __m256 dsilu = _mm256_fmadd_ps(silu, _mm256_sub_ps(one, s), s);
    *dg = _mm256_mul_ps(_mm256_mul_ps(d, u), dsilu);
    *du = _mm256_mul_ps(d, silu);
}

static void avx2_silu_mul_bwd(const float *gu, const float *dout, int64_t rows, int h,
                              int64_t ld_gu, int64_t ld_d, float *dgu)
{
    /* Each chunk of g and u is read before the same chunks of dgu are
     * written, so dgu == gu works. */
    for (int64_t i = 0; i < rows; i++) {
        const float *gate = gu + i * ld_gu, *up = gate + h; /* [h] each */
        const float *d = dout + i * ld_d;                   /* [h] */
        float *dg = dgu + i * ld_gu, *du = dg + h;          /* [h] each */
        __m256 vg, vu;
        int j = 0;
        for (; j + 8 <= h; j += 8) {
            silu_bwd8(_mm256_loadu_ps(gate + j), _mm256_loadu_ps(up + j), _mm256_loadu_ps(d + j),
                      &vg, &vu);
            _mm256_storeu_ps(dg + j, vg);
            _mm256_storeu_ps(du + j, vu);
        }
        if (j < h) {
            __m256i k = lane_mask(h - j);
            silu_bwd8(_mm256_maskload_ps(gate + j, k), _mm256_maskload_ps(up + j, k),
                      _mm256_maskload_ps(d + j, k), &vg, &vu);
            _mm256_maskstore_ps(dg + j, k, vg);
            _mm256_maskstore_ps(du + j, k, vu);
        }
    }
}

/* ---------------------------------------------------------------- gemm_tn */

/* Packs the chunk's rows [i0, i1) of the 16-column strip of B at k0,
 * multiplied by their scales if any, contiguously: bs [i1 - i0][16], zero
 * past K. With only 12 FMAs per row a tile cannot afford index lookups or
 * multiplies per row; packed once, every row tile of the strip streams it.
 * (s_i * b_i[k] is the same float whoever computes it.) */
static void tn_pack(const dm_gemm_tn *g, int64_t i0, int64_t i1, int k0, __m256i m0, __m256i m1,
                    float *bs)
{
    const float *B = g->B + k0;
    for (int64_t i = i0; i < i1; i++, bs += 16) {
        const float *b = B + (g->b_idx ? g->b_idx[i] : i) * g->ldb; /* [16] */
        __m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1);
        if (g->scale) {
            __m256 s = _mm256_broadcast_ss(g->scale + i);
            b0 = _mm256_mul_ps(b0, s);
            b1 = _mm256_mul_ps(b1, s);
        }
        _mm256_store_ps(bs, b0);
        _mm256_store_ps(bs + 8, b1);
    }
}

/* One mr x (8 nw) tile of C at row n, column k0, over the chunk's `rows`
 * rows: A rows through arow (resolved once per chunk), B rows packed in bs.
 * Always inlined with constant mr and nw (1 or 2 ymm per row). m0/m1: the
 * valid columns of each half, for the update of C. */
static inline __attribute__((always_inline)) void
tn_tile(const dm_gemm_tn *g, int rows, const float *const *arow, int n, int k0, const float *bs,
        __m256i m0, __m256i m1, const int mr, const int nw)
{
#define DECL(i) __m256 lo##i = _mm256_setzero_ps(), hi##i = lo##i;
    TILE_ROWS(DECL)
#undef DECL
    for (int r = 0; r < rows; r++, bs += 16) {
        const float *a = arow[r] + n; /* [mr] */
        /* gathered rows defeat the hardware prefetcher */
        if (r + TN_PF < rows) _mm_prefetch((const char *)(arow[r + TN_PF] + n), _MM_HINT_T0);
        __m256 b0 = _mm256_load_ps(bs);
        __m256 b1 = nw > 1 ? _mm256_load_ps(bs + 8) : _mm256_setzero_ps();
#define STEP(i)                                                 \
        if (mr > i) {                                           \
            __m256 av = _mm256_broadcast_ss(a + i);             \
            lo##i = _mm256_fmadd_ps(av, b0, lo##i);             \
            if (nw > 1) hi##i = _mm256_fmadd_ps(av, b1, hi##i); \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
#define STORE(i)                                                                      \
    if (mr > i) {                                                                     \
        float *c = g->C + (int64_t)(n + i) * g->ldc + k0;                             \
        _mm256_maskstore_ps(c, m0, _mm256_add_ps(_mm256_maskload_ps(c, m0), lo##i));  \
        if (nw > 1)                                                                   \
            _mm256_maskstore_ps(c + 8, m1,                                            \
                                _mm256_add_ps(_mm256_maskload_ps(c + 8, m1), hi##i)); \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tn_fn)(const dm_gemm_tn *, int, const float *const *, int, int, const float *, __m256i,
                      __m256i);

#define DEF_TN(m)                                                                               \
    static void tn1_##m(const dm_gemm_tn *g, int rows, const float *const *arow, int n, int k0, \
                        const float *bs, __m256i m0, __m256i m1)                                \
    {                                                                                           \
        tn_tile(g, rows, arow, n, k0, bs, m0, m1, m, 1);                                        \
    }                                                                                           \
    static void tn2_##m(const dm_gemm_tn *g, int rows, const float *const *arow, int n, int k0, \
                        const float *bs, __m256i m0, __m256i m1)                                \
    {                                                                                           \
        tn_tile(g, rows, arow, n, k0, bs, m0, m1, m, 2);                                        \
    }
DEF_TN(1) DEF_TN(2) DEF_TN(3) DEF_TN(4) DEF_TN(5) DEF_TN(6)
#undef DEF_TN

static const tn_fn tn_tiles[2][MR + 1] = {
    {NULL, tn1_1, tn1_2, tn1_3, tn1_4, tn1_5, tn1_6},
    {NULL, tn2_1, tn2_2, tn2_3, tn2_4, tn2_5, tn2_6},
};

/* Rows per chunk of the sum over i: at most TN_ROWS (the packed strip),
 * fewer when the chunk's rows of A (N floats each) would not stay in L2
 * while every column block sweeps them. A function of N only, never of
 * [n0, n1), so that how the rows were split cannot change the chunking
 * (and thus the rounding). */
static int tn_chunk_rows(const dm_gemm_tn *g)
{
    int64_t mc = TN_A_BYTES / ((int64_t)(g->N > 0 ? g->N : 1) * (int64_t)sizeof(float));
    return mc < 64 ? 64 : mc > TN_ROWS ? TN_ROWS : (int)mc;
}

static void avx2_gemm_tn(const dm_gemm_tn *g)
{
    /* M == 0 leaves C untouched (adding zeros would turn -0 into +0) */
    if (g->M <= 0 || g->n1 <= g->n0 || g->K <= 0) return;
    _Alignas(32) float bs[TN_ROWS * 16]; /* the packed strip, 16 KB */
    const float *arow[TN_ROWS];          /* the chunk's rows of A */
    int mc = tn_chunk_rows(g);
    for (int64_t i0 = 0; i0 < g->M; i0 += mc) {
        int rows = g->M - i0 < mc ? (int)(g->M - i0) : mc;
        for (int r = 0; r < rows; r++) arow[r] = g->A + (g->a_idx ? g->a_idx[i0 + r] : i0 + r) * g->lda;
        for (int k0 = 0; k0 < g->K; k0 += 2 * 8) {
            int kv = g->K - k0; /* valid columns from k0 */
            int nw = kv > 8 ? 2 : 1;
            __m256i m0 = lane_mask(kv), m1 = lane_mask(kv - 8);
            tn_pack(g, i0, i0 + rows, k0, m0, m1, bs);
            for (int n = g->n0; n < g->n1; n += MR) {
                int mr = g->n1 - n < MR ? g->n1 - n : MR;
                tn_tiles[nw - 1][mr](g, rows, arow, n, k0, bs, m0, m1);
            }
        }
    }
}

/* ---------------------------------------------------------------- colsum */

static void avx2_colsum(const float *A, int64_t lda, const int32_t *a_idx, const float *scale,
                        int64_t M, int N, float *out)
{
    if (M <= 0) return; /* out untouched */
    /* 32 columns (four ymm) at a time, each summed over all rows in order */
    for (int n = 0; n < N; n += 32) {
        __m256i m0 = lane_mask(N - n), m1 = lane_mask(N - n - 8);
        __m256i m2 = lane_mask(N - n - 16), m3 = lane_mask(N - n - 24);
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < M; i++) {
            const float *a = A + (a_idx ? a_idx[i] : i) * lda + n; /* [32] */
            /* s * a with s = 1 is exact: the same as a plain add */
            __m256 s = _mm256_set1_ps(scale ? scale[i] : 1.0f);
            s0 = _mm256_fmadd_ps(s, _mm256_maskload_ps(a, m0), s0);
            s1 = _mm256_fmadd_ps(s, _mm256_maskload_ps(a + 8, m1), s1);
            s2 = _mm256_fmadd_ps(s, _mm256_maskload_ps(a + 16, m2), s2);
            s3 = _mm256_fmadd_ps(s, _mm256_maskload_ps(a + 24, m3), s3);
        }
        float *o = out + n;
        _mm256_maskstore_ps(o, m0, _mm256_add_ps(_mm256_maskload_ps(o, m0), s0));
        _mm256_maskstore_ps(o + 8, m1, _mm256_add_ps(_mm256_maskload_ps(o + 8, m1), s1));
        _mm256_maskstore_ps(o + 16, m2, _mm256_add_ps(_mm256_maskload_ps(o + 16, m2), s2));
        _mm256_maskstore_ps(o + 24, m3, _mm256_add_ps(_mm256_maskload_ps(o + 24, m3), s3));
    }
}

/* ---------------------------------------------------------------- adamw */

/* One step on the lanes in k, operation for operation as the reference
 * (true division and sqrt, no FMA contraction), so the two agree bitwise. */
static inline void adamw8(float *p, const float *g, float *m, float *v, __m256i k,
                          __m256 gscale, __m256 lrwd, __m256 lr, __m256 b1, __m256 c1,
                          __m256 b2, __m256 c2, __m256 eps, __m256 bc1, __m256 bc2)
{
    __m256 gv = _mm256_mul_ps(_mm256_maskload_ps(g, k), gscale);
    __m256 pv = _mm256_maskload_ps(p, k);
    pv = _mm256_sub_ps(pv, _mm256_mul_ps(lrwd, pv));
    __m256 mv = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_maskload_ps(m, k)), _mm256_mul_ps(c1, gv));
    __m256 vv = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_maskload_ps(v, k)),
                              _mm256_mul_ps(_mm256_mul_ps(c2, gv), gv));
    __m256 num = _mm256_mul_ps(lr, _mm256_div_ps(mv, bc1));
    __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(vv, bc2)), eps);
    pv = _mm256_sub_ps(pv, _mm256_div_ps(num, den));
    _mm256_maskstore_ps(m, k, mv);
    _mm256_maskstore_ps(v, k, vv);
    _mm256_maskstore_ps(p, k, pv);
}

static void avx2_adamw(float *p, const float *g, float *m, float *v, int64_t n, float gscale,
                       float lr, float b1, float b2, float eps, float wd, float bc1, float bc2)
{
    __m256 vgs = _mm256_set1_ps(gscale), vlrwd = _mm256_set1_ps(lr * wd), vlr = _mm256_set1_ps(lr);
    __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(1.0f - b1);
    __m256 vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(1.0f - b2);
    __m256 veps = _mm256_set1_ps(eps), vbc1 = _mm256_set1_ps(bc1), vbc2 = _mm256_set1_ps(bc2);
    __m256i all = _mm256_set1_epi32(-1);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        adamw8(p + j, g + j, m + j, v + j, all, vgs, vlrwd, vlr, vb1, vc1, vb2, vc2, veps, vbc1, vbc2);
    if (j < n)
        adamw8(p + j, g + j, m + j, v + j, lane_mask((int)(n - j)), vgs, vlrwd, vlr, vb1, vc1, vb2,
               vc2, veps, vbc1, vbc2);
}

/* ---------------------------------------------------------------- combine, input check */

/* As ref_combine: per 8 columns, mul then add in slot order (bitwise the
 * reference); the tail columns are scalar with the same operations. */
static void avx2_combine(const float *y, const float *w, int64_t rows, int J, int k, int D, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * J * D, *wr = w + r * k;
        float *o = out + r * D;
        int d = 0;
        for (; d + 8 <= D; d += 8) {
            __m256 acc = _mm256_mul_ps(_mm256_set1_ps(wr[0]), _mm256_loadu_ps(yr + d));
            for (int j = 1; j < J; j++) {
                __m256 wj = _mm256_set1_ps(j < k ? wr[j] : 1.0f);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(wj, _mm256_loadu_ps(yr + (int64_t)j * D + d)));
            }
            _mm256_storeu_ps(o + d, acc);
        }
        for (; d < D; d++) {
            float acc = wr[0] * yr[d];
            for (int j = 1; j < J; j++) {
                float p = (j < k ? wr[j] : 1.0f) * yr[(int64_t)j * D + d];
                acc = acc + p;
            }
            o[d] = acc;
        }
    }
}

/* 32 values per step: exponent bits all ones; the first hit found in its step. */
static int64_t avx2_find_nonfinite(const float *x, int64_t n)
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i h = _mm256_setzero_si256();
        for (int q = 0; q < 4; q++) {
            __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i + 8 * q)), e);
            h = _mm256_or_si256(h, _mm256_cmpeq_epi32(v, e));
        }
        if (!_mm256_testz_si256(h, h)) break;  /* the scalar loop finds it */
    }
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (; i < n; i++)
        if ((u[i] & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

/* sumsq's and mse_grad's 16 chains (a0..a3: 0-3, 4-7, 8-11, 12-15) added as kernels.h says */
static inline double chains16(__m256d a0, __m256d a1, __m256d a2, __m256d a3)
{
    __m256d t = _mm256_add_pd(_mm256_add_pd(a0, a2), _mm256_add_pd(a1, a3));
    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

/* kernels.h's order: a0..a3 hold chains 0-3, 4-7, 8-11, 12-15 (x zero past n) */
static double avx2_sumsq(const float *x, int64_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < n; i += 16) {
        __m256 v0, v1;
        if (n - i >= 16) {  /* plain loads but for the tail (masked ones stream slower) */
            v0 = _mm256_loadu_ps(x + i);
            v1 = _mm256_loadu_ps(x + i + 8);
        } else {
            int r = (int)(n - i);
            v0 = _mm256_maskload_ps(x + i, lane_mask(r));
            v1 = _mm256_maskload_ps(x + i + 8, lane_mask(r - 8));
        }
        __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v0)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(v0, 1));
        __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(v1)), d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(v1, 1));
        a0 = _mm256_fmadd_pd(d0, d0, a0);  /* the square is exact: fma = mul then add */
        a1 = _mm256_fmadd_pd(d1, d1, a1);
        a2 = _mm256_fmadd_pd(d2, d2, a2);
        a3 = _mm256_fmadd_pd(d3, d3, a3);
    }
    return chains16(a0, a1, a2, a3);
}

/* 4 values of mse_grad (kernels.h) into chain accumulator acc (mul then add: no FMA, as the reference) */
static inline __m256d mse4(__m128 o, __m128 t, __m256d c, __m256d inv, float *grad, int valid, __m256d acc)
{
    __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(o), _mm256_cvtps_pd(t));
    __m128 g = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_mul_pd(c, d), inv));
    if (valid >= 4) {
        _mm_storeu_ps(grad, g);
    } else {
        float tmp[4];
        _mm_storeu_ps(tmp, g);
        for (int j = 0; j < valid; j++) grad[j] = tmp[j];
    }
    return _mm256_add_pd(acc, _mm256_mul_pd(d, d));
}

static double avx2_mse_grad(const float *out, const float *target, int64_t n, double c, double inv, float *grad)
{
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    __m256d vc = _mm256_set1_pd(c), vi = _mm256_set1_pd(inv);
    for (int64_t i = 0; i < n; i += 16) {
        for (int q = 0; q < 4; q++) {  /* chains 4q .. 4q+3 */
            int64_t at = i + 4 * q;
            int valid = n - at >= 4 ? 4 : (int)(n - at);
            if (valid <= 0) break;
            __m128 o, t;
            if (valid == 4) {
                o = _mm_loadu_ps(out + at);
                t = _mm_loadu_ps(target + at);
            } else {
                float ob[4] = {0}, tb[4] = {0};
                for (int j = 0; j < valid; j++) ob[j] = out[at + j], tb[j] = target[at + j];
                o = _mm_loadu_ps(ob);
                t = _mm_loadu_ps(tb);
            }
            a[q] = mse4(o, t, vc, vi, grad + at, valid, a[q]);
        }
    }
    return chains16(a[0], a[1], a[2], a[3]);
}

static void avx2_add_rows(float *o, const float *y, int J, const float *g, float s, int D)
{
    __m256 vs = _mm256_set1_ps(s);
    int d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 v = _mm256_loadu_ps(o + d);
        for (int j = 0; j < J; j++) v = _mm256_add_ps(v, _mm256_loadu_ps(y + (int64_t)j * D + d));
        if (g) v = _mm256_add_ps(v, _mm256_mul_ps(vs, _mm256_loadu_ps(g + d)));
        _mm256_storeu_ps(o + d, v);
    }
    for (; d < D; d++) {  /* the tail as the reference */
        float v = o[d];
        for (int j = 0; j < J; j++) v += y[(int64_t)j * D + d];
        if (g) v += s * g[d];
        o[d] = v;
    }
}

static void avx2_gemm_tn_bf16(const dm_gemm_tn *g) { dm_gemm_tn_bf16_emul(&dm_kernels_avx2, g); }

const dm_kernels dm_kernels_avx2 = {
    .isa = DM_ISA_AVX2,
    .layernorm = avx2_layernorm,
    .silu_mul = avx2_silu_mul,
    .layernorm_fwd = avx2_layernorm_fwd,
    .layernorm_bwd = avx2_layernorm_bwd,
    .silu_mul_bwd = avx2_silu_mul_bwd,
    .gemm_tn = avx2_gemm_tn,
    .gemm_tn_bf16 = avx2_gemm_tn_bf16,
    .colsum = avx2_colsum,
    .adamw = avx2_adamw,
    .combine = avx2_combine,
    .find_nonfinite = avx2_find_nonfinite,
    .sumsq = avx2_sumsq,
    .mse_grad = avx2_mse_grad,
    .add_rows = avx2_add_rows,
};

const dm_wkern dm_wkern_f32_avx2 = {
    .isa = DM_ISA_AVX2,
    .pack_size = avx2_pack_size,
    .pack = avx2_pack,
    .pack_t = avx2_pack_t,
    .panel_rows = NR,
    .unpack = avx2_unpack,
    .gemm = avx2_gemm,
};
