/* test_wt_half.c - the 16-bit weight types, bf16 and f16.
 *
 * The scalar conversions of base.c (dm_f32_to_bf16, dm_f32_to_f16 and back)
 * on their edge cases (ties to even, subnormals, overflow, NaN) and on every
 * 16-bit pattern; the SIMD conversions the kernels run agree with them bit
 * for bit; a GEMM checked by hand; then every kernel path (each ISA this CPU
 * runs, the bf16 AVX-512 kernel with and without AMX) against the reference
 * kernel at M = 0, 1, tails of M, N and K, with index lists, every epilogue
 * option, blocks of panels, and no write outside C. */
#include "test.h"

#include "base/base.h"
#include "kernels/wt_half.h"
#include "kernels/wtype.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define SENTINEL (-1234.5f)

static float f32_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* ---------------------------------------------------------------- scalar conversions */

/* dm_f32_to_bf16 on hand-picked inputs: ties to even, subnormals (rounded, not
 * flushed), overflow to Inf, NaN quiet; and every bf16 comes back from fp32. */
static void test_half_bf16_edges(dm_t *t)
{
    static const struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x3f808000u, 0x3f80}, /* 1 + half an ulp: tie, to even (down) */
        {0x3f818000u, 0x3f82}, /* odd + half: tie, to even (up) */
        {0x3f808001u, 0x3f81}, /* just above the tie */
        {0x3f807fffu, 0x3f80}, /* just below */
        {0xbf818000u, 0xbf82}, /* negative tie */
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000},
        {0x00000001u, 0x0000}, /* smallest subnormal: rounds to 0 */
        {0x00008000u, 0x0000}, /* subnormal tie, even */
        {0x00018000u, 0x0002}, /* subnormal tie, odd: up */
        {0x00010000u, 0x0001}, /* exact bf16 subnormal */
        {0x007fffffu, 0x0080}, /* largest subnormal rounds up to the smallest normal */
        {0x807fffffu, 0x8080},
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX overflows to Inf */
        {0x7f7f7fffu, 0x7f7f}, /* the largest that does not */
        {0xff7fffffu, 0xff80},
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* Inf */
        {0x7fc00000u, 0x7fc0}, /* quiet NaN */
        {0x7f800001u, 0x7fc0}, /* signaling NaN with a low payload: quiet, still NaN */
        {0xffa00000u, 0xffe0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = dm_f32_to_bf16(f32_of(cases[i].in));
        CHECK(t, got == cases[i].out, "bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].in, got, cases[i].out);
    }
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dm_bf16_to_f32((uint16_t)h);
        if (bits_of(f) != h << 16) bad++;
        int nan = ((h >> 7) & 0xff) == 0xff && (h & 0x7f);
        if (nan ? !isnan(f) || !isnan(dm_bf16_to_f32(dm_f32_to_bf16(f))) : dm_f32_to_bf16(f) != h) bad++;
    }
    CHECK(t, bad == 0, "%d bf16 patterns do not survive fp32 and back", bad);
}

/* The value of an f16 pattern from its fields (an independent decoding). */
static double f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_half_f16_edges(dm_t *t)
{
    static const struct { float in; uint16_t out; } cases[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.0f, 0x0000}, {-0.0f, 0x8000},
        {1.0f + 0x1p-11f, 0x3c00},        /* tie, to even (down) */
        {1.0f + 3 * 0x1p-11f, 0x3c02},    /* tie, to even (up) */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},
        {65504.0f, 0x7bff},               /* largest f16 */
        {65519.0f, 0x7bff},               /* below the midpoint to 65536 */
        {65520.0f, 0x7c00},               /* the midpoint: to even, which is Inf */
        {1e9f, 0x7c00}, {-1e9f, 0xfc00}, {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400},               /* smallest normal */
        {0x1p-24f, 0x0001},               /* smallest subnormal */
        {0x1p-25f, 0x0000},               /* half of it: tie, to even (0) */
        {3 * 0x1p-25f, 0x0002},           /* 1.5 units: tie, to even (2) */
        {0x1p-25f + 0x1p-40f, 0x0001},    /* just above the tie */
        {1023.5f * 0x1p-24f, 0x0400},     /* subnormal tie rounding up into the normals */
        {-5 * 0x1p-24f, 0x8005},
        {1e-10f, 0x0000}, {-1e-10f, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = dm_f32_to_f16(cases[i].in);
        CHECK(t, got == cases[i].out, "f16(%a) = 0x%04x, want 0x%04x", (double)cases[i].in, got, cases[i].out);
    }
    uint16_t qn = dm_f32_to_f16(NAN), sn = dm_f32_to_f16(f32_of(0x7f800001u));
    CHECK(t, (qn & 0x7c00) == 0x7c00 && (qn & 0x3ff) && (sn & 0x7c00) == 0x7c00 && (sn & 0x3ff),
          "NaN -> f16 0x%04x / 0x%04x: not NaN", qn, sn);
    /* every pattern: widening is exact, narrowing gives it back */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dm_f16_to_f32((uint16_t)h);
        double v = f16_value((uint16_t)h);
        if (isnan(v)) bad += !isnan(f) || !isnan(dm_f16_to_f32(dm_f32_to_f16(f)));
        else bad += (double)f != v || !signbit(f) != !signbit(v) || dm_f32_to_f16(f) != h;
    }
    CHECK(t, bad == 0, "%d f16 patterns do not survive fp32 and back", bad);
}

/* ---------------------------------------------------------------- SIMD conversions */

#if DM_HAVE_X86
/* Inputs for the conversions: the edge cases, every bf16/f16 boundary, random bit patterns. */
static uint32_t *conv_inputs(int64_t *n)
{
    int64_t cap = 65536 * 4 + (1 << 18), k = 0;
    uint32_t *u = malloc((size_t)cap * sizeof *u);
    for (uint32_t h = 0; h < 65536; h++) {  /* around each bf16: exact, tie, tie +- 1 */
        u[k++] = h << 16;
        u[k++] = h << 16 | 0x8000u;
        u[k++] = h << 16 | 0x7fffu;
        u[k++] = h << 16 | 0x8001u;
    }
    dm_rng r;
    dm_rng_seed(&r, 77);
    while (k < cap) u[k++] = (uint32_t)dm_rng_u64(&r);
    *n = k;
    return u;
}

static void check_round(dm_t *t, const char *name, void (*fn)(const float *, int64_t, uint16_t *))
{
    int64_t n;
    uint32_t *u = conv_inputs(&n);
    float *x = malloc((size_t)n * sizeof *x);
    uint16_t *got = malloc((size_t)(n + 1) * sizeof *got);
    memcpy(x, u, (size_t)n * sizeof *x);
    fn(x, n, got);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != dm_f32_to_bf16(x[i])) { bad++; if (first < 0) first = i; }
    CHECK(t, bad == 0, "%s: %lld of %lld differ from dm_f32_to_bf16, first 0x%08x -> 0x%04x (want 0x%04x)", name,
          (long long)bad, (long long)n, first >= 0 ? u[first] : 0, first >= 0 ? got[first] : 0,
          first >= 0 ? dm_f32_to_bf16(x[first]) : 0);
    /* tails: each length writes exactly its n values */
    for (int len = 0; len <= 70; len++) {
        for (int i = 0; i <= len; i++) got[i] = 0xabcd;
        fn(x + 1000 + len, len, got);
        int ok = got[len] == 0xabcd;
        for (int i = 0; i < len; i++) ok &= got[i] == dm_f32_to_bf16(x[1000 + len + i]);
        CHECK(t, ok, "%s: length %d", name, len);
    }
    free(u); free(x); free(got);
}

static void check_widen(dm_t *t, const char *name, void (*fn)(const uint16_t *, int64_t, float *))
{
    uint16_t *h = malloc(65536 * sizeof *h);
    float *got = malloc(65537 * sizeof *got);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    fn(h, 65536, got);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float want = dm_f16_to_f32(h[i]);
        bad += isnan(want) ? !isnan(got[i]) : bits_of(got[i]) != bits_of(want);
    }
    CHECK(t, bad == 0, "%s: %d of 65536 f16 widen differently from dm_f16_to_f32", name, bad);
    for (int len = 0; len <= 40; len++) {
        for (int i = 0; i <= len; i++) got[i] = SENTINEL;
        fn(h + 15000 + len, len, got);
        int ok = got[len] == SENTINEL;
        for (int i = 0; i < len; i++) ok &= bits_of(got[i]) == bits_of(dm_f16_to_f32(h[15000 + len + i]));
        CHECK(t, ok, "%s: length %d", name, len);
    }
    free(h); free(got);
}
#endif

/* Each SIMD conversion this CPU runs (none in the portable build). */
static void test_half_simd_convert(dm_t *t)
{
#if DM_HAVE_X86
    if (dm_isa_resolve(DM_ISA_AVX512) == DM_ISA_AVX512 && dm_cpu_has(DM_CPU_BF16))
        check_round(t, "bf16 round avx512", dm_wt_bf16_round_avx512);
    if (dm_isa_resolve(DM_ISA_AVX512) == DM_ISA_AVX512 && dm_cpu_has(DM_CPU_F16C))
        check_widen(t, "f16 widen avx512", dm_wt_f16_widen_avx512);
    if (dm_isa_resolve(DM_ISA_AVX2) == DM_ISA_AVX2 && dm_cpu_has(DM_CPU_F16C)) {
        check_round(t, "bf16 round avx2", dm_wt_bf16_round_avx2);
        check_widen(t, "f16 widen avx2", dm_wt_f16_widen_avx2);
    }
#else
    (void)t;
#endif
}

/* ---------------------------------------------------------------- GEMM paths */

/* One way to run a type: its kernel for an ISA, and for the bf16 AVX-512
 * kernel whether AMX is on. */
typedef struct half_path {
    dm_isa isa;
    int amx;  /* -1: not the bf16 AVX-512 kernel; 0/1: AMX off/on */
} half_path;

/* The paths of type t this CPU runs. */
static int half_paths(const dm_wtype *t, half_path *out)
{
    int n = 0;
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        const dm_wkern *k = dm_wtype_kern(t, (dm_isa)isa);
        if (k->isa != (dm_isa)isa || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
#if DM_HAVE_X86
        if (k == &dm_wkern_bf16_avx512) {
            int had = dm_wt_bf16_amx(-1);
            out[n++] = (half_path){(dm_isa)isa, 0};
            if (dm_wt_bf16_amx(1)) out[n++] = (half_path){(dm_isa)isa, 1};
            dm_wt_bf16_amx(had);
            continue;
        }
#endif
        out[n++] = (half_path){(dm_isa)isa, -1};
    }
    return n;
}

static const char *path_name(half_path p)
{
    return p.amx == 1 ? "avx512+amx" : p.amx == 0 ? "avx512 (vdpbf16ps)" : dm_isa_name(p.isa);
}

/* Runs C = epilogue(A W^T) for W given as the file layout part, packed for
 * path p; returns the output buffer (rows x ldc, dm_free). */
typedef struct hcase {
    int64_t M;
    int N, K;
    int gather, bias, relu, resid, scale;
} hcase;

typedef struct hdata {
    hcase c;
    int64_t rows, lda, ldc;     /* rows of A / C / R buffers; strides */
    float *A, *bias, *R, *scale;
    float *a_scale;             /* [M] or NULL: dm_gemm.a_scale (bf16) */
    int32_t *a_idx, *c_idx, *r_idx;
    uint16_t *W;                /* the file layout [N, K] */
} hdata;

static void hdata_init(hdata *d, const dm_wtype *t, hcase c, uint64_t seed)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    memset(d, 0, sizeof *d);
    d->c = c;
    d->rows = c.M + 3;
    d->lda = c.K + 5;
    d->ldc = c.N + 3;
    d->A = dm_alloc((size_t)(d->rows * d->lda + 1) * sizeof(float));
    for (int64_t i = 0; i < d->rows * d->lda; i++) d->A[i] = NAN;  /* padding: NaN, never read */
    for (int64_t i = 0; i < d->rows; i++)
        for (int k = 0; k < c.K; k++) d->A[i * d->lda + k] = dm_rng_uniform(&r, -1, 1);
    float *W = malloc(((size_t)c.N * c.K + 1) * sizeof *W);
    for (int64_t j = 0; j < (int64_t)c.N * c.K; j++) W[j] = dm_rng_uniform(&r, -1, 1) * (j % 7 == 0 ? 4.0f : 1.0f);
    d->W = malloc(dm_wtype_file_bytes(t, c.N, c.K, 0) + 64);
    void *part[DM_WPARTS] = {d->W};
    t->quantize_ref(W, c.N, c.K, 0, part);
    free(W);
    if (c.bias) {
        d->bias = dm_alloc((size_t)(c.N + 1) * sizeof(float));
        for (int n = 0; n < c.N; n++) d->bias[n] = dm_rng_uniform(&r, -1, 1);
    }
    if (c.resid) {
        d->R = dm_alloc((size_t)(d->rows * d->ldc + 1) * sizeof(float));
        for (int64_t i = 0; i < d->rows * d->ldc; i++) d->R[i] = dm_rng_uniform(&r, -1, 1);
    }
    if (c.scale) {
        d->scale = dm_alloc((size_t)(c.M + 1) * sizeof(float));
        for (int64_t i = 0; i < c.M; i++) d->scale[i] = dm_rng_uniform(&r, 0.5f, 2);
    }
    if (c.gather) {  /* rows through index lists: reversed, shifted, rotated */
        d->a_idx = malloc((size_t)(c.M + 1) * sizeof(int32_t));
        d->c_idx = malloc((size_t)(c.M + 1) * sizeof(int32_t));
        d->r_idx = malloc((size_t)(c.M + 1) * sizeof(int32_t));
        for (int64_t i = 0; i < c.M; i++) {
            d->a_idx[i] = (int32_t)(c.M - 1 - i + 2);
            d->c_idx[i] = (int32_t)((i * 7 + 1) % c.M);  /* a permutation when gcd(7, M) = 1 */
            d->r_idx[i] = (int32_t)((i + 1) % c.M);
        }
        if (c.M % 7 == 0)
            for (int64_t i = 0; i < c.M; i++) d->c_idx[i] = (int32_t)(c.M - 1 - i);
    }
}

static void hdata_free(hdata *d)
{
    dm_free(d->A); dm_free(d->bias); dm_free(d->R); dm_free(d->scale);
    free(d->a_idx); free(d->c_idx); free(d->r_idx); free(d->W);
}

static float *hrun(const dm_wtype *t, half_path p, const hdata *d)
{
    const hcase *c = &d->c;
#if DM_HAVE_X86
    int had = dm_wt_bf16_amx(-1);
    if (p.amx >= 0) dm_wt_bf16_amx(p.amx);
#endif
    dm_wmat w;
    void *data = dm_alloc(dm_wmat_data_size(t, p.isa, c->N, c->K, 0) + 64);
    dm_wmat_bind(&w, t, p.isa, c->N, c->K, 0, data);
    const void *part[DM_WPARTS] = {d->W};
    dm_wmat_pack(&w, part);
    size_t ws = dm_wmat_work_size(&w, c->M);
    void *work = ws ? dm_alloc(ws) : NULL;
    float *C = dm_alloc((size_t)(d->rows * d->ldc + 1) * sizeof(float));
    for (int64_t i = 0; i < d->rows * d->ldc; i++) C[i] = SENTINEL;
    dm_gemm g = {
        .M = c->M, .N = c->N, .K = c->K, .A = d->A, .lda = d->lda, .a_idx = d->a_idx, .B = &w,
        .bias = d->bias, .act = c->relu ? DM_ACT_RELU : DM_ACT_NONE, .R = d->R, .ldr = d->ldc, .r_idx = d->r_idx,
        .scale = d->scale, .C = C, .ldc = d->ldc, .c_idx = d->c_idx, .work = work, .a_scale = d->a_scale,
    };
    dm_wmat_gemm(&g);
    dm_free(work);
    dm_free(data);
#if DM_HAVE_X86
    dm_wt_bf16_amx(had);
#endif
    return C;
}

/* Writes outside the M x N outputs: every other cell must still be SENTINEL. */
static int64_t stray(const hdata *d, const float *C)
{
    int64_t bad = 0;
    for (int64_t row = 0; row < d->rows; row++)
        for (int64_t j = 0; j < d->ldc; j++) {
            int used = row < d->c.M && j < d->c.N;  /* c_idx is a permutation of [0, M) */
            if (!used && C[row * d->ldc + j] != SENTINEL) bad++;
        }
    return bad;
}

/* The outputs as [M, N] (written rows only), for comparing. */
static float *outputs(const hdata *d, const float *C)
{
    float *o = malloc((size_t)(d->c.M * d->c.N + 1) * sizeof *o);
    for (int64_t i = 0; i < d->c.M; i++) memcpy(o + i * d->c.N, C + i * d->ldc, (size_t)d->c.N * sizeof *o);
    return o;
}

static void case_name(const hcase *c, char *buf, size_t n)
{
    snprintf(buf, n, "M=%lld N=%d K=%d%s%s%s%s%s", (long long)c->M, c->N, c->K, c->gather ? " idx" : "",
             c->bias ? " bias" : "", c->relu ? " relu" : "", c->resid ? " resid" : "", c->scale ? " scale" : "");
}

/* Every path of both types against the reference at the sizes that hit each
 * branch: M = 1 (matrix-vector), 2..16 (one AMX A tile), 17..32 (two A
 * tiles), row blocks with tails, the widened-block path (M >= 128 on AVX2,
 * 256 on AVX-512); N tails around 16/32/64 and several blocks of panels; K
 * odd, below and around 32, long. */
static void test_half_gemm_paths(dm_t *t)
{
    static const hcase cases[] = {
        {0, 16, 32, 0, 0, 0, 0, 0},    {0, 5, 3, 1, 1, 1, 1, 1},
        {1, 1, 1, 0, 0, 0, 0, 0},      {1, 16, 32, 0, 1, 0, 0, 0},   {1, 17, 33, 1, 1, 1, 1, 1},
        {1, 256, 512, 0, 1, 1, 0, 0},  {1, 130, 67, 0, 0, 0, 1, 1},  {1, 129, 2, 1, 0, 1, 0, 0},
        {2, 31, 31, 0, 1, 0, 1, 0},    {3, 64, 64, 1, 0, 1, 0, 1},   {5, 65, 100, 0, 1, 1, 1, 1},
        {12, 33, 65, 1, 1, 0, 0, 0},   {13, 48, 16, 0, 0, 0, 0, 1},  {15, 96, 96, 1, 1, 1, 1, 1},
        {16, 16, 32, 0, 0, 0, 0, 0},   {16, 63, 63, 1, 1, 1, 0, 0},  {17, 50, 40, 0, 1, 0, 1, 1},
        {31, 32, 33, 1, 0, 1, 1, 0},   {32, 80, 128, 0, 1, 1, 0, 1}, {33, 7, 5, 1, 1, 0, 1, 1},
        {47, 129, 95, 0, 0, 1, 1, 1},  {64, 256, 512, 1, 1, 1, 1, 0}, {100, 40, 9, 0, 1, 0, 0, 1},
        {5, 300, 2048, 1, 1, 0, 1, 0}, {40, 300, 2048, 0, 1, 1, 0, 1},  /* several blocks of panels */
        {130, 70, 33, 1, 1, 1, 1, 1},  {257, 200, 1100, 0, 1, 0, 1, 0}, /* widened blocks (AVX2, AVX-512) */
    };
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    for (size_t ti = 0; ti < 2; ti++) {
        const dm_wtype *wt = types[ti];
        half_path paths[8];
        int np = half_paths(wt, paths);
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            hdata d;
            hdata_init(&d, wt, cases[ci], (uint64_t)(ci * 31 + ti));
            char buf[160];
            case_name(&d.c, buf, sizeof buf);
            float *refC = hrun(wt, (half_path){DM_ISA_REF, -1}, &d), *ref = outputs(&d, refC);
            CHECK(t, stray(&d, refC) == 0, "%s ref %s: wrote outside C", wt->name, buf);
            for (int pi = 0; pi < np; pi++) {
                if (paths[pi].isa == DM_ISA_REF) continue;
                float *C = hrun(wt, paths[pi], &d), *got = outputs(&d, C);
                double e = dm_test_relerr(got, ref, d.c.M * d.c.N);
                CHECK(t, e <= 2e-5, "%s/%s %s: relerr %.3g against the reference", wt->name, path_name(paths[pi]),
                      buf, e);
                CHECK(t, stray(&d, C) == 0, "%s/%s %s: wrote outside C", wt->name, path_name(paths[pi]), buf);
                dm_free(C);
                free(got);
            }
            dm_free(refC);
            free(ref);
            hdata_free(&d);
        }
    }
}

/* A 2 x 3 x 3 GEMM worked out by hand, on every path. The weights are
 * exact in both types; the activation 1 + 2^-9 is not a bf16 (7 fraction
 * bits): bf16 rounds it to 1 first, f16 keeps it. Row 1 has a NaN. */
static void test_half_gemm_known(dm_t *t)
{
    const float A[2][3] = {{1.0f + 0x1p-9f, 2.0f, -0.5f}, {0.25f, NAN, 4.0f}};
    const float W[3][3] = {{1.0f, 0.5f, 2.0f}, {-1.0f, 0.0f, 0.125f}, {3.0f, -2.0f, 1.0f}};
    const float bias[3] = {0.5f, 0.0f, -1.0f};
    /* row 0: [a0 + 1 - 1, -a0 - 1/16, 3 a0 - 4.5] + bias, relu */
    const float want_bf16[3] = {1.5f, 0.0f, 0.0f};  /* a0 = 1: -1.0625 -> 0, 3 - 4.5 - 1 < 0 -> 0 */
    const float want_f16[3] = {1.5f + 0x1p-9f, 0.0f, 0.0f};
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    for (int ti = 0; ti < 2; ti++) {
        const dm_wtype *wt = types[ti];
        uint16_t Wq[9];
        void *part[DM_WPARTS] = {Wq};
        wt->quantize_ref(&W[0][0], 3, 3, 0, part);
        half_path paths[8];
        int np = half_paths(wt, paths);
        for (int pi = 0; pi < np; pi++) {
            hdata d = {.c = {2, 3, 3, 0, 1, 1, 0, 0}, .rows = 2, .lda = 3, .ldc = 3};
            d.A = (float *)&A[0][0];
            d.bias = (float *)bias;
            d.W = Wq;
            float *C = hrun(wt, paths[pi], &d);
            const float *want = ti == 0 ? want_bf16 : want_f16;
            for (int n = 0; n < 3; n++)
                CHECK(t, C[n] == want[n], "%s/%s: C[0][%d] = %.9g, want %.9g", wt->name, path_name(paths[pi]), n,
                      C[n], want[n]);
            for (int n = 0; n < 3; n++)
                CHECK(t, isnan(C[3 + n]), "%s/%s: C[1][%d] = %g, want NaN (a NaN activation)", wt->name,
                      path_name(paths[pi]), n, C[3 + n]);
            dm_free(C);
        }
    }
}

/* pack_size holds the matrix, work_size is 0 for M = 0 or grows with M, and
 * unpack(pack(W)) is W on every path (the round-trip test in test_kernels.c
 * covers every type; here the panel tails: N and K around 16 and 32). */
static void test_half_pack(dm_t *t)
{
    static const int sizes[][2] = {{1, 1}, {15, 31}, {16, 32}, {17, 33}, {33, 2}, {64, 65}, {100, 1}};
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    for (int ti = 0; ti < 2; ti++)
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wtype *wt = types[ti];
            const dm_wkern *k = dm_wtype_kern(wt, (dm_isa)isa);
            if (k->isa != (dm_isa)isa || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                int N = sizes[s][0], K = sizes[s][1];
                uint16_t *W = malloc((size_t)N * K * 2), *back = malloc((size_t)N * K * 2);
                for (int64_t j = 0; j < (int64_t)N * K; j++) W[j] = (uint16_t)(j * 40503u + 7);
                size_t n = dm_wmat_data_size(wt, (dm_isa)isa, N, K, 0);
                CHECK(t, n >= (size_t)N * K * 2, "%s/%s: pack_size(%d, %d) = %zu", wt->name, dm_isa_name((dm_isa)isa),
                      N, K, n);
                void *data = dm_alloc(n + 64);
                dm_wmat w;
                dm_wmat_bind(&w, wt, (dm_isa)isa, N, K, 0, data);
                const void *in[DM_WPARTS] = {W};
                void *out[DM_WPARTS] = {back};
                dm_wmat_pack(&w, in);
                dm_wmat_unpack(&w, out);
                CHECK(t, !memcmp(W, back, (size_t)N * K * 2), "%s/%s N=%d K=%d: unpack(pack(W)) != W", wt->name,
                      dm_isa_name((dm_isa)isa), N, K);
                CHECK(t, dm_wmat_work_size(&w, 64) >= dm_wmat_work_size(&w, 1), "%s/%s: work shrinks with M",
                      wt->name, dm_isa_name((dm_isa)isa));
                dm_free(data);
                free(W);
                free(back);
            }
        }
}

/* Threads that each run GEMMs at once (AMX: each thread's first tile
 * instruction gets its tile state from the OS, each call sets its own tile
 * shapes): every result bitwise what one thread computes. */
typedef struct thr_arg {
    const dm_wtype *t;
    half_path p;
    const hdata *d;
    const float *want;
    int bad;
} thr_arg;

static void *thr_main(void *arg)
{
    thr_arg *a = arg;
    for (int it = 0; it < 20; it++) {
        float *C = hrun(a->t, a->p, a->d);
        a->bad += memcmp(C, a->want, (size_t)(a->d->rows * a->d->ldc) * sizeof(float)) != 0;
        dm_free(C);
    }
    return NULL;
}

static void test_half_threads(dm_t *t)
{
    const dm_wtype *types[] = {&dm_wtypes[DM_WT_BF16], &dm_wtypes[DM_WT_F16]};
    for (int ti = 0; ti < 2; ti++) {
        half_path paths[8];
        int np = half_paths(types[ti], paths);
        hdata d;
        hdata_init(&d, types[ti], (hcase){33, 70, 96, 1, 1, 1, 1, 1}, 5);
        for (int pi = 0; pi < np; pi++) {
            float *want = hrun(types[ti], paths[pi], &d);
            /* the AMX switch is set here once: the threads' hrun leaves it alone */
            half_path tp = paths[pi];
#if DM_HAVE_X86
            int had = dm_wt_bf16_amx(-1);
            if (tp.amx >= 0) dm_wt_bf16_amx(tp.amx);
#endif
            tp.amx = -1;
            thr_arg args[3];
            pthread_t th[3];
            int started = 0;
            for (int i = 0; i < 3; i++) {
                args[i] = (thr_arg){types[ti], tp, &d, want, 0};
                if (pthread_create(&th[i], NULL, thr_main, &args[i]) == 0) started++;
                else break;
            }
            CHECK(t, started == 3, "could not start threads");
            for (int i = 0; i < started; i++) {
                pthread_join(th[i], NULL);
                CHECK(t, args[i].bad == 0, "%s/%s: thread %d: %d of 20 results differ from one thread's",
                      types[ti]->name, path_name(paths[pi]), i, args[i].bad);
            }
#if DM_HAVE_X86
            dm_wt_bf16_amx(had);
#endif
            dm_free(want);
        }
        hdata_free(&d);
    }
}

/* dm_gemm.a_scale (bf16 weights): the GEMM with row scales is, bit for bit on
 * every path, the GEMM on the rows pre-scaled in fp32; and the paths agree
 * with the reference to the usual tolerance. */
static void test_half_a_scale(dm_t *t)
{
    const dm_wtype *bt = &dm_wtypes[DM_WT_BF16];
    half_path paths[8];
    int np = half_paths(bt, paths);
    static const hcase cases[] = {{1, 17, 33, 1, 1, 0, 0, 1}, {13, 40, 70, 1, 0, 1, 1, 0}, {64, 32, 512, 1, 1, 1, 0, 1}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        hdata d;
        hdata_init(&d, bt, cases[ci], 40 + ci);
        const hcase *c = &d.c;
        d.a_scale = dm_alloc((size_t)(c->M + 1) * sizeof(float));
        dm_rng r;
        dm_rng_seed(&r, 9);
        for (int64_t i = 0; i < c->M; i++) d.a_scale[i] = dm_rng_uniform(&r, -3, 3);
        hdata pre = d;  /* the same problem with the scales applied to A's rows (a_idx is one-to-one) */
        pre.a_scale = NULL;
        pre.A = dm_alloc((size_t)(d.rows * d.lda + 1) * sizeof(float));
        memcpy(pre.A, d.A, (size_t)(d.rows * d.lda + 1) * sizeof(float));
        for (int64_t i = 0; i < c->M; i++) {
            int64_t row = d.a_idx ? d.a_idx[i] : i;
            for (int k = 0; k < c->K; k++) pre.A[row * d.lda + k] = d.a_scale[i] * d.A[row * d.lda + k];
        }
        float *ref = hrun(bt, (half_path){DM_ISA_REF, -1}, &d);
        for (int q = 0; q < np; q++) {
            float *a = hrun(bt, paths[q], &d), *b = hrun(bt, paths[q], &pre);
            char name[128];
            case_name(c, name, sizeof name);
            CHECK(t, !memcmp(a, b, (size_t)(d.rows * d.ldc) * sizeof(float)),
                  "bf16 %s %s: a_scale differs from pre-scaled rows", path_name(paths[q]), name);
            float *oa = outputs(&d, a), *orf = outputs(&d, ref);
            double e = dm_test_relerr(oa, orf, c->M * c->N);
            CHECK(t, e < 1e-5, "bf16 %s %s: a_scale vs reference %.3g", path_name(paths[q]), name, e);
            free(oa); free(orf);
            dm_free(a); dm_free(b);
        }
        dm_free(ref);
        dm_free(pre.A);
        dm_free(d.a_scale);
        hdata_free(&d);
    }
}

void suite_wt_half(dm_t *t)
{
    DM_RUN(t, test_half_a_scale);
    DM_RUN(t, test_half_bf16_edges);
    DM_RUN(t, test_half_f16_edges);
    DM_RUN(t, test_half_simd_convert);
    DM_RUN(t, test_half_pack);
    DM_RUN(t, test_half_gemm_known);
    DM_RUN(t, test_half_gemm_paths);
    DM_RUN(t, test_half_threads);
}
