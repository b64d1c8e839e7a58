/* wt_nm24_avx2.c - AVX2 + FMA kernels of the 2:4 sparse types nm24 (f32
 * values), nm24:bf16 and nm24:q8: C = epilogue(A · deq(W)^T), fp32 activations.
 *
 * Packed form: wt_nm24.h with NR = 8 (a panel is 8 outputs, one ymm; per chunk
 * of 8 groups one ymm of indices, lane j = the 4 ".idx" bytes of output j, then
 * per group the two kept values of the 8 outputs).
 *
 * Micro-kernel, per group g and panel: T0 = a[4g .. 4g+3] broadcast to both
 * 128-bit lanes; the index vector x holds the group's nibble i0 | i1 << 2 in
 * its low bits, so the in-lane vpermilps (which reads bits 1:0) fetches each
 * lane's kept activations:
 *     acc += vpermilps(T0, x) * v0 + vpermilps(T0, x >> 2) * v1,  x >>= 4
 * (bf16 values: the u32 pair v0 | v1 << 16 split by a shift and an and; q8:
 * sign-extend + convert, the row scale applied once to the finished sum).
 * That is 2 permutes + 2 FMA + 2 shifts per 8 outputs x 4 k where the dense
 * f32 kernel does 4 FMA on twice the bytes.
 * Batch 1: one row against 4 panels (32 outputs) per pass. Several rows:
 * tiles of MR = 4 rows x 1 panel, the values converted and the index vectors
 * formed once per group for the 4 rows. Loop order: L2-sized blocks of
 * panels, row tiles, panels; the fused epilogue on the finished sums, N tails
 * by maskload / maskstore. Accumulation is in float. */
#include "kernels/wt_nm24.h"
#include "kernels/simd_avx2.h"

#include <immintrin.h>

enum {
    NR = 8,                      /* outputs per panel: one ymm */
    MR = 4,                      /* rows per tile (TILE_ROWS) */
    GEMV_NP = 4,                 /* panels per batch-1 pass */
    L2_PANEL_BYTES = 512 * 1024, /* packed panels swept per row block */
};

/* ---------------------------------------------------------------- helpers */

/* One group's kept values of a panel as fp32 (q8: the integers). */
static inline __attribute__((always_inline)) void load_vals(const unsigned char *v, int vt, __m256 *v0, __m256 *v1)
{
    if (vt == NM24_F32) {
        *v0 = _mm256_loadu_ps((const float *)v);
        *v1 = _mm256_loadu_ps((const float *)(v + 32));
    } else if (vt == NM24_BF16) {  /* u32 lane = v0 | v1 << 16 */
        __m256i d = _mm256_loadu_si256((const __m256i *)v);
        *v0 = _mm256_castsi256_ps(_mm256_slli_epi32(d, 16));
        *v1 = _mm256_castsi256_ps(_mm256_and_si256(d, _mm256_set1_epi32((int)0xFFFF0000u)));
    } else {
        *v0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)v)));
        *v1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(v + 8))));
    }
}

/* The rows of one tile, resolved through the index lists. */
typedef struct tile_rows {
    const float *a[MR]; /* each [K] */
    float *c[MR];       /* each [N] */
    const float *r[MR]; /* each [N], or NULL */
    float s[MR];
} tile_rows;

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

/* Stores row i's finished sums of the panel at n0 (8 outputs, masked to N):
 * q8's row scales (the panel header), then s * (act(acc + bias) + r). */
static inline __attribute__((always_inline)) void
store8(const dm_gemm *g, const tile_rows *rows, int i, __m256 acc, int n0, const unsigned char *panel, int vt)
{
    __m256i m = lane_mask(g->N - n0);
    if (vt == NM24_Q8) acc = _mm256_mul_ps(acc, _mm256_loadu_ps((const float *)panel));
    if (g->bias) acc = _mm256_add_ps(acc, _mm256_maskload_ps(g->bias + n0, m));
    /* max(0, v) returns v when v is NaN, like the reference */
    if (g->act == DM_ACT_RELU) acc = _mm256_max_ps(_mm256_setzero_ps(), acc);
    if (rows->r[i]) acc = _mm256_add_ps(acc, _mm256_maskload_ps(rows->r[i] + n0, m));
    if (g->scale) acc = _mm256_mul_ps(acc, _mm256_set1_ps(rows->s[i]));
    _mm256_maskstore_ps(rows->c[i] + n0, m, acc);
}

/* ---------------------------------------------------------------- batch 1 */

#define PANELS(X) X(0) X(1) X(2) X(3)

/* One row against np (1..4, constant) consecutive panels from bp; n0 = the
 * first panel's first output. */
static inline __attribute__((always_inline)) void
gemv(const dm_gemm *g, const tile_rows *rows, const unsigned char *bp, size_t pb, int n0, int vt, const int np)
{
    const float *a = rows->a[0];
    const int G = g->K / 4;
    const size_t vb = (size_t)NR * nm24_vbytes(vt), cb = nm24_chunk_bytes(NR, vt), hdr = nm24_hdr_bytes(NR, vt);
#define DECL(i)                                                          \
    __m256 acc##i = _mm256_setzero_ps();                                 \
    const unsigned char *q##i = bp + (size_t)(np > i ? i : 0) * pb;      \
    __m256i x##i = _mm256_setzero_si256();
    PANELS(DECL)
#undef DECL
    for (int c = 0; 8 * c < G; c++) {
        const size_t co = hdr + (size_t)c * cb;
#define LOADX(i) \
        if (np > i) x##i = _mm256_loadu_si256((const __m256i *)(q##i + co));
        PANELS(LOADX)
#undef LOADX
        const int ng = G - 8 * c < 8 ? G - 8 * c : 8;
        const float *ac = a + 32 * c;
        for (int s = 0; s < ng; s++) {
            __m256 t0 = _mm256_broadcast_ps((const __m128 *)(ac + 4 * s));
            const size_t vo = co + (size_t)NR * 4 + (size_t)s * vb;
#define STEP(i)                                                                                     \
            if (np > i) {                                                                           \
                __m256 v0, v1;                                                                      \
                load_vals(q##i + vo, vt, &v0, &v1);                                                 \
                acc##i = _mm256_fmadd_ps(_mm256_permutevar_ps(t0, x##i), v0, acc##i);               \
                acc##i = _mm256_fmadd_ps(_mm256_permutevar_ps(t0, _mm256_srli_epi32(x##i, 2)), v1, acc##i); \
                x##i = _mm256_srli_epi32(x##i, 4);                                                  \
            }
            PANELS(STEP)
#undef STEP
        }
    }
#define STORE(i) \
    if (np > i) store8(g, rows, 0, acc##i, n0 + i * NR, q##i, vt);
    PANELS(STORE)
#undef STORE
}

/* ---------------------------------------------------------------- tiles */

#define TILE_ROWS(X) X(0) X(1) X(2) X(3)

/* mr (1..4, constant) rows x one panel from bp over the whole K. */
static inline __attribute__((always_inline)) void
tile(const dm_gemm *g, const tile_rows *rows, const unsigned char *bp, int n0, int vt, const int mr)
{
    const int G = g->K / 4;
    const size_t vb = (size_t)NR * nm24_vbytes(vt), cb = nm24_chunk_bytes(NR, vt), hdr = nm24_hdr_bytes(NR, vt);
#define DECL(i)                                                 \
    __m256 u##i = _mm256_setzero_ps();                          \
    const float *a##i = mr > i ? rows->a[i] : NULL; /* [K] */
    TILE_ROWS(DECL)
#undef DECL
    for (int c = 0; 8 * c < G; c++) {
        const size_t co = hdr + (size_t)c * cb;
        __m256i x = _mm256_loadu_si256((const __m256i *)(bp + co));
        const int ng = G - 8 * c < 8 ? G - 8 * c : 8;
        for (int s = 0; s < ng; s++) {
            const int k = 32 * c + 4 * s;
            __m256 v0, v1;
            load_vals(bp + co + (size_t)NR * 4 + (size_t)s * vb, vt, &v0, &v1);
            __m256i j0 = x, j1 = _mm256_srli_epi32(x, 2);
            x = _mm256_srli_epi32(x, 4);
#define STEP(i)                                                                          \
            if (mr > i) {                                                                \
                __m256 t = _mm256_broadcast_ps((const __m128 *)(a##i + k));              \
                u##i = _mm256_fmadd_ps(_mm256_permutevar_ps(t, j0), v0, u##i);           \
                u##i = _mm256_fmadd_ps(_mm256_permutevar_ps(t, j1), v1, u##i);           \
            }
            TILE_ROWS(STEP)
#undef STEP
        }
    }
#define STORE(i) \
    if (mr > i) store8(g, rows, i, u##i, n0, bp, vt);
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*gemv_fn)(const dm_gemm *, const tile_rows *, const unsigned char *, size_t, int);
typedef void (*tile_fn)(const dm_gemm *, const tile_rows *, const unsigned char *, int);

/* The instances of one value type: gemv_<vt>_<np>, tile_<vt>_<mr>. */
#define DEF_GEMV(vt, np)                                                                                     \
    static void gemv_##vt##_##np(const dm_gemm *g, const tile_rows *r, const unsigned char *bp, size_t pb, int n0) \
    { gemv(g, r, bp, pb, n0, vt, np); }
#define DEF_TILE(vt, mr)                                                                                     \
    static void tile_##vt##_##mr(const dm_gemm *g, const tile_rows *r, const unsigned char *bp, int n0)      \
    { tile(g, r, bp, n0, vt, mr); }
#define DEF_VT(vt)                                                                                          \
    DEF_GEMV(vt, 1) DEF_GEMV(vt, 2) DEF_GEMV(vt, 3) DEF_GEMV(vt, 4)                                          \
    DEF_TILE(vt, 1) DEF_TILE(vt, 2) DEF_TILE(vt, 3) DEF_TILE(vt, 4)                                          \
    static const gemv_fn gemvs_##vt[GEMV_NP + 1] = {NULL, gemv_##vt##_1, gemv_##vt##_2, gemv_##vt##_3,       \
                                                    gemv_##vt##_4};                                          \
    static const tile_fn tiles_##vt[MR + 1] = {NULL, tile_##vt##_1, tile_##vt##_2, tile_##vt##_3,            \
                                               tile_##vt##_4};

/* NM24_F32, NM24_BF16, NM24_Q8 as literals (the names are pasted) */
DEF_VT(0)
DEF_VT(1)
DEF_VT(2)

/* ---------------------------------------------------------------- driver */

static void nm24_gemm(const dm_gemm *g, int vt, const gemv_fn *gemvs, const tile_fn *tiles)
{
    if (g->M <= 0 || g->N <= 0) return;
    const unsigned char *B = g->B->data;
    const int K = g->K > 0 ? g->K : 0;
    const size_t pb = nm24_panel_bytes(NR, vt, K);
    const int np = (g->N + NR - 1) / NR;
    if (g->M == 1) {  /* matrix-vector: four panels per pass */
        tile_rows rows;
        resolve_rows(g, 0, 1, &rows);
        for (int p = 0; p < np; p += GEMV_NP) {
            int n = np - p < GEMV_NP ? np - p : GEMV_NP;
            gemvs[n](g, &rows, B + (size_t)p * pb, pb, p * NR);
        }
        return;
    }
    /* panels per block: as many as fit the L2 budget, at least one */
    size_t fit = pb ? L2_PANEL_BYTES / pb : (size_t)np;
    int pc = fit < 1 ? 1 : fit > (size_t)np ? np : (int)fit;
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            resolve_rows(g, i0, mr, &rows);
            for (int p = p0; p < p1; p++) tiles[mr](g, &rows, B + (size_t)p * pb, p * NR);
        }
    }
}

static void gemm_f32(const dm_gemm *g) { nm24_gemm(g, NM24_F32, gemvs_0, tiles_0); }
static void gemm_bf16(const dm_gemm *g) { nm24_gemm(g, NM24_BF16, gemvs_1, tiles_1); }
static void gemm_q8(const dm_gemm *g) { nm24_gemm(g, NM24_Q8, gemvs_2, tiles_2); }

/* ---------------------------------------------------------------- pack / unpack */

#define PACK_FNS(name, vt)                                                                              \
    static size_t name##_pack_size(int N, int K, int group)                                             \
    { (void)group; return nm24_pack_size(NR, vt, N, K); }                                               \
    static void name##_pack(const void *const part[], int N, int K, int group, void *data)              \
    { (void)group; nm24_pack(NR, vt, part, N, K, data); }                                               \
    static void name##_unpack(const void *data, int N, int K, int group, void *const part[])            \
    { (void)group; nm24_unpack(NR, vt, data, N, K, part); }

PACK_FNS(f32, NM24_F32)
PACK_FNS(bf16, NM24_BF16)
PACK_FNS(q8, NM24_Q8)

const dm_wkern dm_wkern_nm24_avx2 = {
    .isa = DM_ISA_AVX2, .pack_size = f32_pack_size, .pack = f32_pack, .unpack = f32_unpack, .gemm = gemm_f32,
};
const dm_wkern dm_wkern_nm24_bf16_avx2 = {
    .isa = DM_ISA_AVX2, .pack_size = bf16_pack_size, .pack = bf16_pack, .unpack = bf16_unpack, .gemm = gemm_bf16,
};
const dm_wkern dm_wkern_nm24_q8_avx2 = {
    .isa = DM_ISA_AVX2, .pack_size = q8_pack_size, .pack = q8_pack, .unpack = q8_unpack, .gemm = gemm_q8,
};
