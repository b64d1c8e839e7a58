/* wt_nm24_avx512.c - AVX-512 kernels of the 2:4 sparse types nm24 (f32
 * values), nm24:bf16 and nm24:q8: C = epilogue(A · deq(W)^T), fp32 activations.
 *
 * Packed form: wt_nm24.h with NR = 16 (a panel is 16 outputs; per chunk of 8
 * groups one zmm of indices, lane j = the 4 ".idx" bytes of output j, then per
 * group the two kept values of the 16 outputs). Every kept value is read once
 * per row block, half the multiply-adds of the dense product are done, and no
 * index is expanded in memory: the idx vector is shifted right by 4 per group
 * and its low bits are the permute indices.
 *
 * Batch 1 (gemv, 8 panels = 128 outputs per pass, one accumulator each: eight
 * independent chains): per group g the 4 activations a[4g .. 4g+3] are
 * broadcast to the four 128-bit lanes of T0 (entry e = a[4g + (e & 3)]) and
 * permuted once per pass into T1 (entry e = a[4g + (e >> 2)]). A lane's nibble
 * i0 | i1 << 2 indexes both 16-entry tables, so per panel
 *     acc += vpermps(idx, T0) * v0 + vpermps(idx, T1) * v1,  idx >>= 4
 * i.e. 2 permutes + 2 FMA + 1 shift per 16 outputs x 4 k where the dense f32
 * gemv does 4 FMA on twice the bytes (plus the value conversion for bf16:
 * shift / and of the u32 pair, q8: sign-extend + convert, the row scale
 * applied once to the finished sum). The permutes run on one port (5), so
 * this is about 2.5 cycles per group and panel for f32 (3.5 bf16, 4.5 q8):
 * from L2 the f32 kernel is held by the L2 -> L1 traffic (~34 bytes per 16
 * outputs x k against the dense 64), bf16 and q8 by those permutes and
 * conversions.
 *
 * Several rows (tile, MR = 8 rows x 2 panels, 16 accumulators): the values
 * are converted and the two index vectors (idx and idx >> 2, whose low 2 bits
 * are i0 and i1) are formed once per group and panel, then every row does
 * T0 = broadcast of its a[4g .. 4g+3] and an in-lane vpermilps per kept value:
 *     acc += vpermilps(T0, idx) * v0 + vpermilps(T0, idx >> 2) * v1.
 * Loop order as the f32 kernel: L2-sized blocks of panels, row tiles, panel
 * pairs. The fused epilogue (bias, relu, residual, scale) runs on the
 * finished sums; N tails are masked stores. Accumulation is in float (the
 * reference sums in double). */
#include "kernels/wt_nm24.h"
#include "kernels/simd_avx512.h"

#include <immintrin.h>

enum {
    NR = 16,                     /* outputs per panel: one zmm */
    MR = 8,                      /* rows per tile (TILE_ROWS) */
    GEMV_NP = 8,                 /* panels per batch-1 pass */
    L2_PANEL_BYTES = 512 * 1024, /* packed panels swept per row block */
};

/* ---------------------------------------------------------------- helpers */

/* One group's kept values of a panel as fp32: v0 (i0's) and v1 (i1's). vt is
 * a constant after inlining. q8 gives the integers (the scale comes last). */
static inline __attribute__((always_inline)) void load_vals(const unsigned char *v, int vt, __m512 *v0, __m512 *v1)
{
    if (vt == NM24_F32) {
        *v0 = _mm512_loadu_ps(v);
        *v1 = _mm512_loadu_ps(v + 64);
    } else if (vt == NM24_BF16) {  /* u32 lane = v0 | v1 << 16: bf16 is the top half of an fp32 */
        __m512i d = _mm512_loadu_si512(v);
        *v0 = _mm512_castsi512_ps(_mm512_slli_epi32(d, 16));
        *v1 = _mm512_castsi512_ps(_mm512_and_si512(d, _mm512_set1_epi32((int)0xFFFF0000u)));
    } else {
        *v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)v)));
        *v1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(v + 16))));
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

/* Stores row i's finished sums of the panel at n0 (16 outputs, masked to N):
 * q8's row scales (the panel header), then s * (act(acc + bias) + r). */
static inline __attribute__((always_inline)) void
store16(const dm_gemm *g, const tile_rows *rows, int i, __m512 acc, int n0, const unsigned char *panel, int vt)
{
    __mmask16 m = lane_mask(g->N - n0);
    if (vt == NM24_Q8) acc = _mm512_mul_ps(acc, _mm512_loadu_ps((const float *)panel));
    if (g->bias) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, g->bias + n0));
    /* max(0, v) returns v when v is NaN, like the reference */
    if (g->act == DM_ACT_RELU) acc = _mm512_max_ps(_mm512_setzero_ps(), acc);
    if (rows->r[i]) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, rows->r[i] + n0));
    if (g->scale) acc = _mm512_mul_ps(acc, _mm512_set1_ps(rows->s[i]));
    _mm512_mask_storeu_ps(rows->c[i] + n0, m, acc);
}

/* ---------------------------------------------------------------- batch 1 */

#define PANELS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* One row against np (1..8, constant) consecutive panels from bp; n0 = the
 * first panel's first output. One accumulator per panel: with 8 panels the
 * pass has 8 independent chains, enough to cover the FMA latency. */
static inline __attribute__((always_inline)) void
gemv(const dm_gemm *g, const tile_rows *rows, const unsigned char *bp, size_t pb, int n0, int vt, const int np)
{
    const float *a = rows->a[0];
    const int G = g->K / 4;
    const size_t vb = (size_t)NR * nm24_vbytes(vt), cb = nm24_chunk_bytes(NR, vt), hdr = nm24_hdr_bytes(NR, vt);
    const __m512i t1_of_t0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
#define DECL(i)                                                          \
    __m512 lo##i = _mm512_setzero_ps();                                  \
    const unsigned char *q##i = bp + (size_t)(np > i ? i : 0) * pb;      \
    __m512i x##i = _mm512_setzero_si512();
    PANELS(DECL)
#undef DECL
    for (int c = 0; 8 * c < G; c++) {
        const size_t co = hdr + (size_t)c * cb;
#define LOADX(i) \
        if (np > i) x##i = _mm512_loadu_si512(q##i + co);
        PANELS(LOADX)
#undef LOADX
        const int ng = G - 8 * c < 8 ? G - 8 * c : 8;
        const float *ac = a + 32 * c;
        for (int s = 0; s < ng; s++) {
            __m512 t0 = _mm512_broadcast_f32x4(_mm_loadu_ps(ac + 4 * s));
            __m512 t1 = _mm512_permutexvar_ps(t1_of_t0, t0);
            const size_t vo = co + (size_t)NR * 4 + (size_t)s * vb;
#define STEP(i)                                                                  \
            if (np > i) {                                                        \
                __m512 v0, v1;                                                   \
                load_vals(q##i + vo, vt, &v0, &v1);                              \
                lo##i = _mm512_fmadd_ps(_mm512_permutexvar_ps(x##i, t0), v0, lo##i); \
                lo##i = _mm512_fmadd_ps(_mm512_permutexvar_ps(x##i, t1), v1, lo##i); \
                x##i = _mm512_srli_epi32(x##i, 4);                               \
            }
            PANELS(STEP)
#undef STEP
        }
    }
#define STORE(i) \
    if (np > i) store16(g, rows, 0, lo##i, n0 + i * NR, q##i, vt);
    PANELS(STORE)
#undef STORE
}

/* ---------------------------------------------------------------- tiles */

#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* mr (1..8) rows x np (1..2) panels from bp over the whole K; mr, np, vt
 * constants. u<i> / w<i>: row i's sums of the first / second panel. */
static inline __attribute__((always_inline)) void
tile(const dm_gemm *g, const tile_rows *rows, const unsigned char *bp, size_t pb, int n0, int vt, const int mr,
     const int np)
{
    const int G = g->K / 4;
    const size_t vb = (size_t)NR * nm24_vbytes(vt), cb = nm24_chunk_bytes(NR, vt), hdr = nm24_hdr_bytes(NR, vt);
    const unsigned char *q0 = bp, *q1 = bp + (np > 1 ? pb : 0);
#define DECL(i)                                                 \
    __m512 u##i = _mm512_setzero_ps(), w##i = u##i;             \
    const float *a##i = mr > i ? rows->a[i] : NULL; /* [K] */
    TILE_ROWS(DECL)
#undef DECL
    for (int c = 0; 8 * c < G; c++) {
        const size_t co = hdr + (size_t)c * cb;
        __m512i x0 = _mm512_loadu_si512(q0 + co);
        __m512i x1 = np > 1 ? _mm512_loadu_si512(q1 + co) : _mm512_setzero_si512();
        const int ng = G - 8 * c < 8 ? G - 8 * c : 8;
        for (int s = 0; s < ng; s++) {
            const size_t vo = co + (size_t)NR * 4 + (size_t)s * vb;
            const int k = 32 * c + 4 * s;
            __m512 v00, v01, v10 = _mm512_setzero_ps(), v11 = v10;
            load_vals(q0 + vo, vt, &v00, &v01);
            __m512i j00 = x0, j01 = _mm512_srli_epi32(x0, 2);
            x0 = _mm512_srli_epi32(x0, 4);
            __m512i j10 = x1, j11 = x1;
            if (np > 1) {
                load_vals(q1 + vo, vt, &v10, &v11);
                j11 = _mm512_srli_epi32(x1, 2);
                x1 = _mm512_srli_epi32(x1, 4);
            }
#define STEP(i)                                                                                  \
            if (mr > i) {                                                                        \
                __m512 t = _mm512_broadcast_f32x4(_mm_loadu_ps(a##i + k));                       \
                u##i = _mm512_fmadd_ps(_mm512_permutevar_ps(t, j00), v00, u##i);                 \
                u##i = _mm512_fmadd_ps(_mm512_permutevar_ps(t, j01), v01, u##i);                 \
                if (np > 1) {                                                                    \
                    w##i = _mm512_fmadd_ps(_mm512_permutevar_ps(t, j10), v10, w##i);             \
                    w##i = _mm512_fmadd_ps(_mm512_permutevar_ps(t, j11), v11, w##i);             \
                }                                                                                \
            }
            TILE_ROWS(STEP)
#undef STEP
        }
    }
#define STORE(i)                                                     \
    if (mr > i) {                                                    \
        store16(g, rows, i, u##i, n0, q0, vt);                       \
        if (np > 1) store16(g, rows, i, w##i, n0 + NR, q1, vt);      \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*gemv_fn)(const dm_gemm *, const tile_rows *, const unsigned char *, size_t, int);
typedef void (*tile_fn)(const dm_gemm *, const tile_rows *, const unsigned char *, size_t, int);

/* The instances of one value type: gemv_<vt>_<np>, tile_<vt>_<np>_<mr>. */
#define DEF_GEMV(vt, np)                                                                                     \
    static void gemv_##vt##_##np(const dm_gemm *g, const tile_rows *r, const unsigned char *bp, size_t pb, int n0) \
    { gemv(g, r, bp, pb, n0, vt, np); }
#define DEF_TILE(vt, np, mr)                                                                                 \
    static void tile_##vt##_##np##_##mr(const dm_gemm *g, const tile_rows *r, const unsigned char *bp, size_t pb, \
                                        int n0)                                                              \
    { tile(g, r, bp, pb, n0, vt, mr, np); }
#define DEF_TILES(vt, np)                                                                                   \
    DEF_TILE(vt, np, 1) DEF_TILE(vt, np, 2) DEF_TILE(vt, np, 3) DEF_TILE(vt, np, 4) DEF_TILE(vt, np, 5)      \
    DEF_TILE(vt, np, 6) DEF_TILE(vt, np, 7) DEF_TILE(vt, np, 8)
#define TILE_LIST(vt, np)                                                                                   \
    {NULL, tile_##vt##_##np##_1, tile_##vt##_##np##_2, tile_##vt##_##np##_3, tile_##vt##_##np##_4,           \
     tile_##vt##_##np##_5, tile_##vt##_##np##_6, tile_##vt##_##np##_7, tile_##vt##_##np##_8}
#define DEF_VT(vt)                                                                                          \
    DEF_GEMV(vt, 1) DEF_GEMV(vt, 2) DEF_GEMV(vt, 3) DEF_GEMV(vt, 4)                                          \
    DEF_GEMV(vt, 5) DEF_GEMV(vt, 6) DEF_GEMV(vt, 7) DEF_GEMV(vt, 8)                                          \
    DEF_TILES(vt, 1) DEF_TILES(vt, 2)                                                                        \
    static const gemv_fn gemvs_##vt[GEMV_NP + 1] = {NULL, gemv_##vt##_1, gemv_##vt##_2, gemv_##vt##_3,       \
                                                    gemv_##vt##_4, gemv_##vt##_5, gemv_##vt##_6,             \
                                                    gemv_##vt##_7, gemv_##vt##_8};                           \
    static const tile_fn tiles_##vt[2][MR + 1] = {TILE_LIST(vt, 1), TILE_LIST(vt, 2)};

/* NM24_F32, NM24_BF16, NM24_Q8 as literals (the names are pasted) */
DEF_VT(0)
DEF_VT(1)
DEF_VT(2)

/* ---------------------------------------------------------------- driver */

static void nm24_gemm(const dm_gemm *g, int vt, const gemv_fn *gemvs, const tile_fn (*tiles)[MR + 1])
{
    if (g->M <= 0 || g->N <= 0) return;
    const unsigned char *B = g->B->data;
    const int K = g->K > 0 ? g->K : 0;
    const size_t pb = nm24_panel_bytes(NR, vt, K);
    const int np = (g->N + NR - 1) / NR;
    if (g->M == 1) {  /* matrix-vector: eight panels per pass */
        tile_rows rows;
        resolve_rows(g, 0, 1, &rows);
        for (int p = 0; p < np; p += GEMV_NP) {
            int n = np - p < GEMV_NP ? np - p : GEMV_NP;
            gemvs[n](g, &rows, B + (size_t)p * pb, pb, p * NR);
        }
        return;
    }
    /* panels per block: as many as fit the L2 budget, at least two */
    size_t fit = pb ? L2_PANEL_BYTES / pb : (size_t)np;
    int pc = fit < 2 ? 2 : fit > (size_t)np ? np : (int)fit;
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            resolve_rows(g, i0, mr, &rows);
            for (int p = p0; p < p1; p += 2) {
                int n = p1 - p < 2 ? 1 : 2;
                tiles[n - 1][mr](g, &rows, B + (size_t)p * pb, pb, p * NR);
            }
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

const dm_wkern dm_wkern_nm24_avx512 = {
    .isa = DM_ISA_AVX512, .pack_size = f32_pack_size, .pack = f32_pack, .unpack = f32_unpack, .gemm = gemm_f32,
};
const dm_wkern dm_wkern_nm24_bf16_avx512 = {
    .isa = DM_ISA_AVX512, .pack_size = bf16_pack_size, .pack = bf16_pack, .unpack = bf16_unpack, .gemm = gemm_bf16,
};
const dm_wkern dm_wkern_nm24_q8_avx512 = {
    .isa = DM_ISA_AVX512, .pack_size = q8_pack_size, .pack = q8_pack, .unpack = q8_unpack, .gemm = gemm_q8,
};
