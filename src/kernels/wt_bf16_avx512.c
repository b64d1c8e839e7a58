/* wt_bf16_avx512.c - bf16 weights on AVX-512 + AVX512_BF16, with AMX-BF16
 * tiles where the CPU and the OS allow them.
 *
 * What it computes (wtype.h): the activations rounded to bf16 (nearest even),
 * products of bf16 values summed in fp32, the fused epilogue of dm_gemm. Both
 * tdpbf16ps (AMX) and vdpbf16ps compute exactly that, up to summation order
 * (and both read bf16 subnormals as zero, a difference below 2^-126).
 *
 * Packed layout (one for both paths): B [N, K] in panels of 16 outputs, K
 * padded with zeros to KP, a multiple of 32. Panel p is KP/2 rows of 64
 * bytes; row j is k-pair j: for each output n of the panel the two bf16
 * W[16p + n, 2j], W[16p + n, 2j + 1] in one 32-bit lane (zero past N). One
 * row is one zmm operand of vdpbf16ps (16 outputs x 2 k), and 16 consecutive
 * rows (1 KB, a block of 32 k) are one AMX B tile exactly as tileloadd wants
 * it (VNNI pairs, stride 64 bytes).
 *
 * Activations: a GEMM first converts its M rows (through a_idx) into g->work
 * as bf16 [M, KP], zero past K, with vcvtne2ps2bf16; a block of 32 that holds
 * an fp32 subnormal is redone by dm_f32_to_bf16 (the instruction flushes
 * subnormals to zero, the reference rounds them). Word j of a row (32 bits)
 * is its k-pair j; 16 rows x 64 bytes are an AMX A tile.
 *
 * AMX path (the default on a CPU with AMX): rows go in blocks of up to 32,
 * outputs in groups of panels. A block of r <= 16
 * rows uses one A tile and four C tiles (1 x 4 panels = 64 outputs); a block
 * of 17..32 rows two A tiles and four C tiles (2 x 2 panels = 32 outputs), so
 * that every B tile loaded serves both. The tile shapes (rows r) are set per
 * block with ldtilecfg, so a short block (M = 1: a matrix-vector product)
 * costs what its rows cost. C tiles accumulate over the whole K, go to a
 * staging buffer on the stack, and get the epilogue there on their way to C.
 * Loop order: L2-sized blocks of panels, then row blocks, then panel groups;
 * a row block's activations are converted while the first panel block runs.
 *
 * Why AMX (bench/half_gemm.c, one Sapphire Rapids core): vfmadd231ps zmm
 * peaks at ~107 GMAC/s, vdpbf16ps zmm at ~53 (one per two cycles: half the
 * FMA's rate), tdpbf16ps at ~1600. With AMX this GEMM runs 4.5-6x the f32
 * kernel from M = 32 up and 1.6x at M = 1 (half the weight bytes); on
 * vdpbf16ps alone it would run 0.6x at large M (1.2x at M = 1).
 *
 * vdpbf16ps path (no AMX: a CPU without it, e.g. Zen 4, or an OS that does
 * not grant it, or DEEPMOE_AMX=0): an MR x 32 register tile (MR <= 12 rows, two
 * panels, 24 zmm accumulators) over the whole K, one broadcast k-pair per row
 * and two vdpbf16ps per row per k-pair; M = 1 runs eight panels at once (eight
 * independent chains). Same loop order as the f32 kernel. */
#define _DEFAULT_SOURCE 1  /* syscall() */
#include "base/base.h"
#include "kernels/wt_half.h"
#include "kernels/simd_avx512.h"
#include "kernels/wtype.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

enum {
    NP = 16,                     /* outputs per panel */
    KB = 32,                     /* k per block (an AMX tile's depth); KP is a multiple */
    MR = 12,                     /* vdpbf16ps path: rows per register tile */
    ST_LD = 64,                  /* staging buffer: floats per row */
    L2_PANEL_BYTES = 1024 * 1024, /* packed B swept per row block */
};

/* ---------------------------------------------------------------- layout */

static int kpad(int K) { return K > 0 ? (K + KB - 1) / KB * KB : 0; }
static int n_panels(int N) { return (N + NP - 1) / NP; }
/* uint16 elements of one panel: KP/2 rows of 16 x 2 */
static size_t panel_elems(int K) { return (size_t)kpad(K) * NP; }

static size_t bf16_pack_size(int N, int K, int group)
{
    (void)group;
    return (size_t)n_panels(N > 0 ? N : 0) * panel_elems(K) * sizeof(uint16_t);
}

/* One row block's activations at most: every row, as bf16 [M, KP]. */
static size_t bf16_work_size(int64_t M, int K)
{
    return (size_t)(M > 0 ? M : 0) * (size_t)kpad(K) * sizeof(uint16_t) + 64;
}

/* W [N, K] uint16 -> panels. Element (n, k) of panel p = n / 16 sits at row
 * k / 2, lane n % 16, half k % 2. */
static void bf16_pack(const void *const part[], int N, int K, int group, void *data)
{
    (void)group;
    const uint16_t *W = part[0];
    uint16_t *dst = data;
    int KP = kpad(K);
    for (int p = 0; p < n_panels(N); p++) {
        uint16_t *panel = dst + (size_t)p * panel_elems(K);
        for (int j = 0; j < NP; j++) {
            int n = p * NP + j;
            const uint16_t *w = n < N ? W + (size_t)n * K : NULL;
            for (int k = 0; k < KP; k++) panel[(size_t)(k / 2) * 2 * NP + 2 * j + (k & 1)] = w && k < K ? w[k] : 0;
        }
    }
}

static void bf16_unpack(const void *data, int N, int K, int group, void *const part[])
{
    (void)group;
    const uint16_t *src = data;
    uint16_t *W = part[0];
    for (int n = 0; n < N; n++) {
        const uint16_t *panel = src + (size_t)(n / NP) * panel_elems(K);
        for (int k = 0; k < K; k++) W[(size_t)n * K + k] = panel[(size_t)(k / 2) * 2 * NP + 2 * (n % NP) + (k & 1)];
    }
}

/* ---------------------------------------------------------------- activations */

/* 32 floats (n of them valid, the rest read as 0) -> 32 bf16 as the
 * reference rounds them: vcvtne2ps2bf16, redone in C when a subnormal is
 * among them. */
static inline __m512i round32(const float *x, int n)
{
    /* plain loads where all 32 are valid: masked ones stream slower on some CPUs */
    __m512 lo = n >= 32 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(lane_mask(n), x);
    __m512 hi = n >= 32 ? _mm512_loadu_ps(x + 16) : _mm512_maskz_loadu_ps(lane_mask(n - 16), x + 16);
    __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* lanes 0..15 from lo */
    /* fpclass 0x20: subnormal */
    if (__builtin_expect(_mm512_fpclass_ps_mask(lo, 0x20) | _mm512_fpclass_ps_mask(hi, 0x20), 0)) {
        uint16_t t[32];
        for (int i = 0; i < 32; i++) t[i] = i < n ? dm_f32_to_bf16(x[i]) : 0;
        v = _mm512_loadu_si512(t);
    }
    return v;
}

void dm_wt_bf16_round_avx512(const float *x, int64_t n, uint16_t *out)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) _mm512_storeu_si512(out + i, round32(x + i, 32));
    if (i < n) {
        int r = (int)(n - i);
        _mm512_mask_storeu_epi16(out + i, r >= 32 ? ~0u : (1u << r) - 1u, round32(x + i, r));
    }
}

/* round32 of s x (s * x in fp32 first). */
static inline __m512i round32s(const float *x, int n, float s)
{
    float t[32] __attribute__((aligned(64)));
    __m512 vs = _mm512_set1_ps(s);
    _mm512_store_ps(t, _mm512_mul_ps(_mm512_maskz_loadu_ps(lane_mask(n), x), vs));
    _mm512_store_ps(t + 16, _mm512_mul_ps(_mm512_maskz_loadu_ps(lane_mask(n - 16), x + 16), vs));
    return round32(t, n);
}

/* Rows [i0, i1) of A (through a_idx, times a_scale) -> dst [i1 - i0, KP] bf16, zero past K. */
static void convert_rows(const dm_gemm *g, int64_t i0, int64_t i1, int KP, uint16_t *dst)
{
    int K = g->K;
    for (int64_t i = i0; i < i1; i++) {
        const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda;
        uint16_t *o = dst + (i - i0) * KP;
        if (g->a_scale)
            for (int k = 0; k < KP; k += 32) _mm512_storeu_si512(o + k, round32s(a + k, K - k, g->a_scale[i]));
        else
            for (int k = 0; k < KP; k += 32) _mm512_storeu_si512(o + k, round32(a + k, K - k));
    }
}

/* ---------------------------------------------------------------- epilogue */

/* Where row i of the GEMM writes (c), what it adds (r, or NULL), its scale. */
typedef struct out_row {
    float *c;
    const float *r;
    float s;
} out_row;

static inline out_row out_row_of(const dm_gemm *g, int64_t i)
{
    out_row o;
    o.c = g->C + (g->c_idx ? g->c_idx[i] : i) * g->ldc;
    o.r = g->R ? g->R + (g->r_idx ? g->r_idx[i] : i) * g->ldr : NULL;
    o.s = g->scale ? g->scale[i] : 1.0f;
    return o;
}

/* Stores 16 finished sums of row o at column n (the lanes in m). */
static inline void store16(const dm_gemm *g, const out_row *o, int n, __mmask16 m, __m512 acc)
{
    _mm512_mask_storeu_ps(o->c + n, m, epilogue(acc, m, g->bias ? g->bias + n : NULL, g->act,
                                                 o->r ? o->r + n : NULL, o->s, g->scale != NULL));
}

/* The epilogue over a finished block in the staging buffer: rows [i0, i0 + r)
 * x columns [n0, n0 + nv), st row i at st + i * ST_LD. */
static void store_block(const dm_gemm *g, int64_t i0, int r, int n0, int nv, const float *st)
{
    for (int i = 0; i < r; i++) {
        out_row o = out_row_of(g, i0 + i);
        for (int j = 0; j < nv; j += 16) store16(g, &o, n0 + j, lane_mask(nv - j), _mm512_load_ps(st + i * ST_LD + j));
    }
}

/* ---------------------------------------------------------------- AMX */

#define AMX_FN __attribute__((target("amx-tile,amx-bf16")))
/* GCC's tile intrinsics are asm statements that name no memory: these keep
 * the compiler from moving plain loads and stores across them. */
#define MEM_BARRIER() __asm__ volatile("" ::: "memory")

/* The 64-byte operand of ldtilecfg (palette 1). */
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* 1: AMX allowed, -1: not (CPU, OS or DEEPMOE_AMX=0); probed once. */
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static int amx_allowed;
static atomic_int amx_off;  /* dm_wt_bf16_amx(0) */

static void amx_probe(void)
{
    amx_allowed = -1;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return;  /* AMX-BF16, AMX-TILE */
    const char *env = getenv("DEEPMOE_AMX");
    if (env && !strcmp(env, "0")) return;
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): the OS
     * allocates the tile state for every thread of the process */
    if (syscall(SYS_arch_prctl, 0x1023, 18) == 0) amx_allowed = 1;
#endif
}

static int amx_on(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_allowed > 0 && !atomic_load_explicit(&amx_off, memory_order_relaxed);
}

int dm_wt_bf16_amx(int mode)
{
    if (mode == 0 || mode == 1) atomic_store(&amx_off, mode == 0);
    return amx_on();
}

/* Tile shapes for a block of r0 + r1 rows (r1 0: one A tile): tmm0..3 C (rows
 * r0, r0, r1 or r0, r1 or r0), tmm4 A (r0 rows), tmm5 A (r1 rows) or with one
 * A tile a third B, tmm6, tmm7 B (16 k-pairs). Every row is 64 bytes. */
AMX_FN static void amx_config(int r0, int r1)
{
    amx_cfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    int rc = r1 > 0 ? r1 : r0;
    const int rows[8] = {r0, r0, rc, rc, r0, r1 > 0 ? r1 : 16, 16, 16};
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = (uint8_t)rows[t];
        cfg.colsb[t] = 64;
    }
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* One A tile (r0 <= 16 rows at a, row stride lda bytes) times np <= 4 panels
 * from bp (panel stride ps elements) over nkb blocks of 32 k: st columns
 * 16j.. get panel j. Always inlined with a constant np. */
AMX_FN static inline __attribute__((always_inline)) void
amx_1xn(const uint16_t *a, size_t lda, const uint16_t *bp, size_t ps, int nkb, float *st, const int np)
{
    _tile_zero(0);
    if (np > 1) _tile_zero(1);
    if (np > 2) _tile_zero(2);
    if (np > 3) _tile_zero(3);
    for (int kb = 0; kb < nkb; kb++) {
        const uint16_t *b = bp + (size_t)kb * KB * NP; /* 1 KB tile */
        _tile_loadd(4, a + (size_t)kb * KB, lda);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (np > 1) { _tile_loadd(7, b + ps, 64); _tile_dpbf16ps(1, 4, 7); }
        if (np > 2) { _tile_loadd(5, b + 2 * ps, 64); _tile_dpbf16ps(2, 4, 5); }
        if (np > 3) { _tile_loadd(6, b + 3 * ps, 64); _tile_dpbf16ps(3, 4, 6); }
    }
    _tile_stored(0, st, ST_LD * 4);
    if (np > 1) _tile_stored(1, st + 16, ST_LD * 4);
    if (np > 2) _tile_stored(2, st + 32, ST_LD * 4);
    if (np > 3) _tile_stored(3, st + 48, ST_LD * 4);
    __asm__ volatile("" : : "r"(st) : "memory");
}

/* Two A tiles (16 rows at a, r1 rows 16 rows further) times np <= 2 panels:
 * st rows 0..15 and 16.. . */
AMX_FN static inline __attribute__((always_inline)) void
amx_2xn(const uint16_t *a, size_t lda, const uint16_t *bp, size_t ps, int nkb, float *st, const int np)
{
    const uint16_t *a1 = (const uint16_t *)((const char *)a + 16 * lda);
    _tile_zero(0);
    _tile_zero(2);
    if (np > 1) { _tile_zero(1); _tile_zero(3); }
    for (int kb = 0; kb < nkb; kb++) {
        const uint16_t *b = bp + (size_t)kb * KB * NP;
        _tile_loadd(4, a + (size_t)kb * KB, lda);
        _tile_loadd(5, a1 + (size_t)kb * KB, lda);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        if (np > 1) {
            _tile_loadd(7, b + ps, 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, st, ST_LD * 4);
    _tile_stored(2, st + 16 * ST_LD, ST_LD * 4);
    if (np > 1) {
        _tile_stored(1, st + 16, ST_LD * 4);
        _tile_stored(3, st + 16 * ST_LD + 16, ST_LD * 4);
    }
    __asm__ volatile("" : : "r"(st) : "memory");
}

AMX_FN static void amx_gemm(const dm_gemm *g, uint16_t *Aw /* work [M, KP] */)
{
    int N = g->N, KP = kpad(g->K), np = n_panels(N), nkb = KP / KB;
    size_t ps = panel_elems(g->K), lda = (size_t)KP * sizeof(uint16_t);
    const uint16_t *Bp = g->B->data;
    float st[32 * ST_LD] __attribute__((aligned(64)));
    size_t panel_bytes = ps * sizeof(uint16_t);
    int pc = panel_bytes ? (int)(L2_PANEL_BYTES / panel_bytes) / 4 * 4 : np;
    if (pc < 4) pc = 4;
    int cfg0 = -1, cfg1 = -1;
    for (int pb0 = 0; pb0 < np; pb0 += pc) {
        int pb1 = pb0 + pc < np ? pb0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += 32) {
            int r = g->M - i0 < 32 ? (int)(g->M - i0) : 32, r0 = r < 16 ? r : 16, r1 = r - r0;
            const uint16_t *a = Aw + i0 * KP;
            if (pb0 == 0) {  /* the first panel block converts the rows */
                convert_rows(g, i0, i0 + r, KP, Aw + i0 * KP);
                MEM_BARRIER();
            }
            if (r0 != cfg0 || r1 != cfg1) {
                amx_config(r0, r1);
                cfg0 = r0;
                cfg1 = r1;
            }
            if (r1 == 0) {
                for (int p = pb0; p < pb1; p += 4) {
                    const uint16_t *b = Bp + (size_t)p * ps;
                    switch (pb1 - p) {
                    case 1: amx_1xn(a, lda, b, ps, nkb, st, 1); break;
                    case 2: amx_1xn(a, lda, b, ps, nkb, st, 2); break;
                    case 3: amx_1xn(a, lda, b, ps, nkb, st, 3); break;
                    default: amx_1xn(a, lda, b, ps, nkb, st, 4); break;
                    }
                    int n0 = p * NP, nv = N - n0 < 4 * NP ? N - n0 : 4 * NP;
                    store_block(g, i0, r, n0, nv, st);
                }
            } else {
                for (int p = pb0; p < pb1; p += 2) {
                    const uint16_t *b = Bp + (size_t)p * ps;
                    if (pb1 - p == 1) amx_2xn(a, lda, b, ps, nkb, st, 1);
                    else amx_2xn(a, lda, b, ps, nkb, st, 2);
                    int n0 = p * NP, nv = N - n0 < 2 * NP ? N - n0 : 2 * NP;
                    store_block(g, i0, r, n0, nv, st);
                }
            }
        }
    }
    _tile_release();  /* back to the init state: cheap context switches */
}

/* ---------------------------------------------------------------- vdpbf16ps */

/* The rows of one register tile: their activation pairs and where they go. */
typedef struct tile_rows {
    const int32_t *a[MR]; /* each [KP / 2] k-pairs */
    out_row o[MR];
} tile_rows;

#define TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* One mr x 32 tile over nkp k-pairs: panels b0 and b1 (b1 may repeat b0
 * when the second panel does not exist: nv <= 16, never stored). Always
 * inlined with a constant mr; the accumulators are named variables. */
#define DP_AHEAD 12 /* k-pairs: B panel lines fetched this far ahead */
static inline __attribute__((always_inline)) void
dp_tile(const tile_rows *rows, const uint16_t *b0, const uint16_t *b1, int nkp, int n0, int nv,
        const dm_gemm *g, const int mr)
{
#define DECL(i)                                            \
    __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;     \
    const int32_t *a##i = mr > i ? rows->a[i] : NULL;
    TILE_ROWS(DECL)
#undef DECL
    for (int j = 0; j < nkp; j++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(b0 + (size_t)j * 2 * NP);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(b1 + (size_t)j * 2 * NP);
        _mm_prefetch((const char *)(b0 + (size_t)(j + DP_AHEAD) * 2 * NP), _MM_HINT_T0);  /* from L2 */
        _mm_prefetch((const char *)(b1 + (size_t)(j + DP_AHEAD) * 2 * NP), _MM_HINT_T0);
#define STEP(i)                                                            \
        if (mr > i) {                                                      \
            __m512bh av = (__m512bh)_mm512_set1_epi32(a##i[j]);            \
            lo##i = _mm512_dpbf16_ps(lo##i, av, w0);                       \
            hi##i = _mm512_dpbf16_ps(hi##i, av, w1);                       \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
    __mmask16 m0 = lane_mask(nv), m1 = lane_mask(nv - 16);
#define STORE(i)                                                           \
    if (mr > i) {                                                          \
        store16(g, &rows->o[i], n0, m0, lo##i);                            \
        if (m1) store16(g, &rows->o[i], n0 + 16, m1, hi##i);               \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*dp_tile_fn)(const tile_rows *, const uint16_t *, const uint16_t *, int, int, int, const dm_gemm *);
#define DEF_TILE(m)                                                                                      \
    static void dp_tile_##m(const tile_rows *rows, const uint16_t *b0, const uint16_t *b1, int nkp,     \
                            int n0, int nv, const dm_gemm *g)                                           \
    {                                                                                                    \
        dp_tile(rows, b0, b1, nkp, n0, nv, g, m);                                                        \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE

static const dp_tile_fn dp_tiles[MR + 1] = {
    NULL, dp_tile_1, dp_tile_2, dp_tile_3, dp_tile_4, dp_tile_5, dp_tile_6,
    dp_tile_7, dp_tile_8, dp_tile_9, dp_tile_10, dp_tile_11, dp_tile_12,
};

/* M = 1: eight full panels (128 outputs) at once, eight independent chains. */
static void dp_gemv8(const out_row *o, const int32_t *a, const uint16_t *bp, size_t ps, int nkp, int n0,
                     const dm_gemm *g)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int j = 0; j < nkp; j++) {
        __m512bh av = (__m512bh)_mm512_set1_epi32(a[j]);
        const uint16_t *b = bp + (size_t)j * 2 * NP;
#define W(q) ((__m512bh)_mm512_loadu_si512(b + (q) * ps))
        c0 = _mm512_dpbf16_ps(c0, av, W(0));
        c1 = _mm512_dpbf16_ps(c1, av, W(1));
        c2 = _mm512_dpbf16_ps(c2, av, W(2));
        c3 = _mm512_dpbf16_ps(c3, av, W(3));
        c4 = _mm512_dpbf16_ps(c4, av, W(4));
        c5 = _mm512_dpbf16_ps(c5, av, W(5));
        c6 = _mm512_dpbf16_ps(c6, av, W(6));
        c7 = _mm512_dpbf16_ps(c7, av, W(7));
#undef W
    }
    const __mmask16 all = (__mmask16)0xFFFF;
    store16(g, o, n0, all, c0);
    store16(g, o, n0 + 16, all, c1);
    store16(g, o, n0 + 32, all, c2);
    store16(g, o, n0 + 48, all, c3);
    store16(g, o, n0 + 64, all, c4);
    store16(g, o, n0 + 80, all, c5);
    store16(g, o, n0 + 96, all, c6);
    store16(g, o, n0 + 112, all, c7);
}

static void dp_gemm(const dm_gemm *g, uint16_t *Aw /* work [M, KP] */)
{
    int N = g->N, KP = kpad(g->K), np = n_panels(N), nkp = (g->K + 1) / 2;
    size_t ps = panel_elems(g->K);
    const uint16_t *Bp = g->B->data;
    convert_rows(g, 0, g->M, KP, Aw);
    const int32_t *A2 = (const int32_t *)Aw; /* [M, KP / 2] pairs */
    if (g->M == 1) {
        out_row o = out_row_of(g, 0);
        int p = 0;
        for (; (p + 8) * NP <= N; p += 8) dp_gemv8(&o, A2, Bp + (size_t)p * ps, ps, nkp, p * NP, g);
        tile_rows rows = {.a = {A2}, .o = {o}};
        for (; p < np; p += 2) {
            const uint16_t *b0 = Bp + (size_t)p * ps, *b1 = p + 1 < np ? b0 + ps : b0;
            dp_tile_1(&rows, b0, b1, nkp, p * NP, N - p * NP, g);
        }
        return;
    }
    size_t pair_bytes = 2 * ps * sizeof(uint16_t);
    int pc = pair_bytes ? (int)(L2_PANEL_BYTES / 2 / pair_bytes) * 2 : np; /* panels per block, even */
    if (pc < 2) pc = 2;
    for (int p0 = 0; p0 < np; p0 += pc) {
        int p1 = p0 + pc < np ? p0 + pc : np;
        for (int64_t i0 = 0; i0 < g->M; i0 += MR) {
            int mr = g->M - i0 < MR ? (int)(g->M - i0) : MR;
            tile_rows rows;
            for (int i = 0; i < mr; i++) {
                rows.a[i] = A2 + (i0 + i) * (KP / 2);
                rows.o[i] = out_row_of(g, i0 + i);
            }
            for (int p = p0; p < p1; p += 2) {
                const uint16_t *b0 = Bp + (size_t)p * ps, *b1 = p + 1 < np ? b0 + ps : b0;
                dp_tiles[mr](&rows, b0, b1, nkp, p * NP, N - p * NP, g);
            }
        }
    }
}

/* ---------------------------------------------------------------- training
 *
 * --precision bf16 (kernels.h: gemm_tn_bf16): the re-packs straight from the
 * fp32 master weights, and the weight-gradient GEMM on vdpbf16ps. */

/* Word l of the result: (bf16(s0 x0[l]), bf16(s1 x1[l])), low half first,
 * rounded as dm_f32_to_bf16; lanes from n on, and the high halves when x1 is
 * NULL, are 0. */
static inline __m512i pair16(const float *x0, float s0, const float *x1, float s1, int n)
{
    static const uint16_t pair_idx[32] __attribute__((aligned(64))) = {
        0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31,
    };
    __mmask16 m = lane_mask(n);
    __m512 a, b = _mm512_setzero_ps();
    if (n >= 16) {  /* plain loads where all 16 are valid: masked ones stream slower on some CPUs */
        a = _mm512_mul_ps(_mm512_loadu_ps(x0), _mm512_set1_ps(s0));
        if (x1) b = _mm512_mul_ps(_mm512_loadu_ps(x1), _mm512_set1_ps(s1));
    } else {
        a = _mm512_maskz_mul_ps(m, _mm512_maskz_loadu_ps(m, x0), _mm512_set1_ps(s0));
        if (x1) b = _mm512_maskz_mul_ps(m, _mm512_maskz_loadu_ps(m, x1), _mm512_set1_ps(s1));
    }
    __m512i v = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* words 0..15 from a, 16..31 from b */
    if (__builtin_expect(_mm512_fpclass_ps_mask(a, 0x20) | _mm512_fpclass_ps_mask(b, 0x20), 0)) {
        float ta[16], tb[16];
        uint16_t t[32];
        _mm512_storeu_ps(ta, a);
        _mm512_storeu_ps(tb, b);
        for (int i = 0; i < 16; i++) {
            t[i] = dm_f32_to_bf16(ta[i]);
            t[16 + i] = dm_f32_to_bf16(tb[i]);
        }
        v = _mm512_loadu_si512(t);
    }
    return _mm512_permutexvar_epi16(_mm512_load_si512(pair_idx), v);
}

/* W [N, K] fp32 -> the panels of bf16(W): per panel and block of 32 k, the
 * 16 rows' k-pairs (one round32 each: 16 words) transposed into the block's
 * 16 panel rows (1 KB, contiguous). */
static void bf16_quant_pack(const float *W, int N, int K, int group, void *data)
{
    (void)group;
    int KP = kpad(K);
    size_t ps = panel_elems(K);
    for (int p = 0; p < n_panels(N); p++) {
        uint32_t *panel = (uint32_t *)((uint16_t *)data + (size_t)p * ps); /* [KP / 2][16] words */
        for (int k = 0; k < KP; k += 32) {
            __m512i r[16];
            _Pragma("GCC unroll 16") for (int l = 0; l < NP; l++) {
                int n = p * NP + l;
                r[l] = n < N ? round32(W + (size_t)n * K + k, K - k) : _mm512_setzero_si512();
            }
            __m512 f[16];  /* the words as floats: transpose16_ps only moves them */
            _Pragma("GCC unroll 16") for (int q = 0; q < 16; q++) f[q] = _mm512_castsi512_ps(r[q]);
            transpose16_ps(f);
            _Pragma("GCC unroll 16") for (int q = 0; q < 16; q++) _mm512_storeu_si512(panel + (size_t)(k / 2 + q) * NP, _mm512_castps_si512(f[q]));
        }
    }
}

/* W [N, K] fp32 -> the panels of bf16(W^T) (K outputs, N deep): k-pair j of
 * panel p is rows 2j and 2j + 1 of W at columns 16p.., one pair16 each. */
static void bf16_pack_t(const float *W, int N, int K, int r0, int r1, void *data, float *tmp)
{
    (void)tmp;
    uint16_t *dst = data;
    size_t ps = panel_elems(N);
    int j1 = r1 == N ? kpad(N) / 2 : r1 / 2;  /* the last rows' call writes the zero pairs past N */
    for (int j = r0 / 2; j < j1; j++) {
        const float *x0 = 2 * j < N ? W + (size_t)2 * j * K : NULL;
        const float *x1 = 2 * j + 1 < N ? x0 + K : NULL;
        for (int p = 0; p < n_panels(K); p++) {
            __m512i v = x0 ? pair16(x0 + p * NP, 1.0f, x1 ? x1 + p * NP : NULL, 1.0f, K - p * NP)
                           : _mm512_setzero_si512();
            _mm512_storeu_si512(dst + (size_t)p * ps + (size_t)j * 2 * NP, v);
        }
    }
}

/* One mr x 32 tile of dW: rows n (mr of them) x columns k (two panels of
 * 16; b1 may repeat b0 when kv <= 16), over nj row pairs; a: pair j's words
 * for these rows at a + j * lda. Added to C once at the end. */
static inline __attribute__((always_inline)) void
tn_tile(const int32_t *a, int64_t lda, const uint16_t *b0, const uint16_t *b1, int64_t nj, float *c,
        int64_t ldc, int kv, const int mr)
{
#define DECL(i) __m512 lo##i = _mm512_setzero_ps(), hi##i = lo##i;
    TILE_ROWS(DECL)
#undef DECL
    /* C is read once, at the end: fetch its lines now, under the sums */
#define PREF(i) if (mr > i) { _mm_prefetch((const char *)(c + (int64_t)(i) * ldc), _MM_HINT_T0); \
                              _mm_prefetch((const char *)(c + (int64_t)(i) * ldc + 16), _MM_HINT_T0); }
    TILE_ROWS(PREF)
#undef PREF
    for (int64_t j = 0; j < nj; j++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(b0 + (size_t)j * 2 * NP);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(b1 + (size_t)j * 2 * NP);
        const int32_t *aj = a + j * lda;
#define STEP(i)                                                            \
        if (mr > i) {                                                      \
            __m512bh av = (__m512bh)_mm512_set1_epi32(aj[i]);              \
            lo##i = _mm512_dpbf16_ps(lo##i, av, w0);                       \
            hi##i = _mm512_dpbf16_ps(hi##i, av, w1);                       \
        }
        TILE_ROWS(STEP)
#undef STEP
    }
    __mmask16 m0 = lane_mask(kv), m1 = lane_mask(kv - 16);
#define STORE(i)                                                                                   \
    if (mr > i) {                                                                                  \
        float *ci = c + (int64_t)(i) * ldc;                                                        \
        _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), lo##i));        \
        if (m1) _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), hi##i)); \
    }
    TILE_ROWS(STORE)
#undef STORE
}

typedef void (*tn_tile_fn)(const int32_t *, int64_t, const uint16_t *, const uint16_t *, int64_t, float *, int64_t, int);
#define DEF_TILE(m)                                                                                        \
    static void tn_tile_##m(const int32_t *a, int64_t lda, const uint16_t *b0, const uint16_t *b1,        \
                            int64_t nj, float *c, int64_t ldc, int kv)                                    \
    {                                                                                                      \
        tn_tile(a, lda, b0, b1, nj, c, ldc, kv, m);                                                        \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)
DEF_TILE(7) DEF_TILE(8) DEF_TILE(9) DEF_TILE(10) DEF_TILE(11) DEF_TILE(12)
#undef DEF_TILE

static const tn_tile_fn tn_tiles[MR + 1] = {
    NULL, tn_tile_1, tn_tile_2, tn_tile_3, tn_tile_4, tn_tile_5, tn_tile_6,
    tn_tile_7, tn_tile_8, tn_tile_9, tn_tile_10, tn_tile_11, tn_tile_12,
};

/* dW += bf16(s A)^T bf16(B) (kernels.h). g->work holds the two packs: A's
 * rows [n0, n1) as row pairs, [nj][nn] words (word n of pair j: rows 2j and
 * 2j + 1 at column n0 + n), then B as panels of 16 columns, [np][nj][16]
 * words. The sum over pairs runs in order for every output, whatever
 * [n0, n1) is. Loop order: a pair of B panels (nj * 128 bytes, in L1) for
 * every tile of rows. */
void dm_gemm_tn_bf16_avx512(const dm_gemm_tn *g)
{
    if (g->M <= 0 || g->n1 <= g->n0 || g->K <= 0) return; /* C untouched */
    int nn = g->n1 - g->n0, K = g->K, np = n_panels(K);
    int64_t nj = (g->M + 1) / 2;
    int32_t *At = g->work;
    uint16_t *Bp = (uint16_t *)((unsigned char *)g->work + ((size_t)nj * nn * 4 + 63) / 64 * 64);
    for (int64_t j = 0; j < nj; j++) {
        int64_t i0 = 2 * j, i1 = i0 + 1;
        int has1 = i1 < g->M;
        /* the rows (often gathered through an index, out of cache) of the pair after next */
        for (int64_t i = i0 + 4; i < i0 + 6 && i < g->M; i++) {
            const char *pa = (const char *)(g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda + g->n0);
            const char *pb = (const char *)(g->B + (g->b_idx ? g->b_idx[i] : i) * g->ldb);
            for (int n = 0; n < nn; n += 16) _mm_prefetch(pa + 4 * n, _MM_HINT_T0);
            for (int k = 0; k < K; k += 16) _mm_prefetch(pb + 4 * k, _MM_HINT_T0);
        }
        const float *a0 = g->A + (g->a_idx ? g->a_idx[i0] : i0) * g->lda + g->n0;
        const float *a1 = has1 ? g->A + (g->a_idx ? g->a_idx[i1] : i1) * g->lda + g->n0 : NULL;
        float s0 = g->scale ? g->scale[i0] : 1.0f, s1 = has1 && g->scale ? g->scale[i1] : 1.0f;
        for (int n = 0; n < nn; n += 16)
            _mm512_mask_storeu_epi32(At + j * nn + n, lane_mask(nn - n),
                                     pair16(a0 + n, s0, a1 ? a1 + n : NULL, s1, nn - n));
        const float *b0 = g->B + (g->b_idx ? g->b_idx[i0] : i0) * g->ldb;
        const float *b1 = has1 ? g->B + (g->b_idx ? g->b_idx[i1] : i1) * g->ldb : NULL;
        for (int p = 0; p < np; p++)
            _mm512_storeu_si512(Bp + ((size_t)p * nj + j) * 2 * NP,
                                pair16(b0 + p * NP, 1.0f, b1 ? b1 + p * NP : NULL, 1.0f, K - p * NP));
    }
    for (int p = 0; p < np; p += 2) {
        const uint16_t *b0 = Bp + (size_t)p * nj * 2 * NP, *b1 = p + 1 < np ? b0 + nj * 2 * NP : b0;
        for (int n = 0; n < nn; n += MR) {
            int mr = nn - n < MR ? nn - n : MR;
            tn_tiles[mr](At + n, nn, b0, b1, nj, g->C + (int64_t)(g->n0 + n) * g->ldc + p * NP, g->ldc, K - p * NP);
        }
    }
}

/* ---------------------------------------------------------------- entry */

static void bf16_gemm(const dm_gemm *g)
{
    if (g->M <= 0 || g->N <= 0) return;
    if (amx_on()) amx_gemm(g, g->work);
    else dp_gemm(g, g->work);
}

const dm_wkern dm_wkern_bf16_avx512 = {
    .isa = DM_ISA_AVX512, .needs = DM_CPU_BF16,
    .pack_size = bf16_pack_size, .work_size = bf16_work_size,
    .pack = bf16_pack, .pack_t = bf16_pack_t, .quant_pack = bf16_quant_pack, .panel_rows = NP,
    .unpack = bf16_unpack, .gemm = bf16_gemm,
};
