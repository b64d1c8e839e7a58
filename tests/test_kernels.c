/* test_kernels.c - the kernel tables.
 *
 * The reference table is checked against formulas written here (double
 * precision, independent loops) and hand-computed values; every optimized
 * table this CPU supports is then checked against the reference at awkward
 * sizes, with gathered/scattered rows, padded strides, unaligned pointers and
 * every epilogue option. Padding is filled with NaN (inputs) or a sentinel
 * (outputs) so reading past a row or writing outside the output shows up. */
#include "test.h"

#include "base/base.h"
#include "kernels/wtype.h"

#if !DM_HAVE_X86
/* The portable build links no AVX table; the CPU "lacks" them, so their tests
 * are skipped by isa_supported and these names only have to resolve. */
#define dm_kernels_avx2 dm_kernels_ref
#define dm_kernels_avx512 dm_kernels_ref
#endif

#include <stdlib.h>

#define SENTINEL (-1234.5f)
#define TOL 1e-5      /* optimized vs reference, K <= 512 */
#define SILU_TOL 2e-6 /* elementwise: the SIMD exp must be good to ~1e-6, not just 1e-5 */

/* ---------------------------------------------------------------- helpers */

static void fill_uniform(dm_rng *rng, float *p, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++) p[i] = dm_rng_uniform(rng, lo, hi);
}

static void fill_value(float *p, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) p[i] = v;
}

static int rand_below(dm_rng *rng, int n) { return (int)(dm_rng_u64(rng) % (uint64_t)n); }

/* Largest |a-b| / max(|b|, floor) over n elements: an elementwise relative error. */
static double elem_relerr(const float *a, const float *b, int64_t n, double floor)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY;
        double den = fabs((double)b[i]) > floor ? fabs((double)b[i]) : floor;
        if (d / den > worst) worst = d / den;
    }
    return worst;
}

/* The ISAs this CPU can run besides ref, for the dispatch test. */
static int isa_supported(dm_isa isa) { return dm_isa_resolve(isa) == isa; }

/* ---------------------------------------------------------------- gemm problems */

/* One GEMM problem. Flags choose the optional parts of dm_gemm. */
typedef struct gcase {
    int64_t M;
    int N, K;
    int a_idx, c_idx, r_idx; /* address rows through index lists */
    int bias, resid, scale;  /* pass bias / R / scale */
    dm_act act;
    int unaligned;           /* A, R, C and Bp start one float past 64-byte alignment */
} gcase;

/* Inputs of a problem, plus the row layout of its output. */
typedef struct gdata {
    gcase c;
    int64_t a_rows, c_rows, r_rows;  /* rows in the A, C, R buffers (>= M when indexed) */
    int64_t lda, ldc, ldr;
    float *A_buf, *R_buf;            /* A = A_buf + unaligned; same for R */
    float *B;                        /* [N, K] */
    float *bias;                     /* [N] or NULL */
    float *scale;                    /* [M] or NULL */
    int32_t *a_idx, *c_idx, *r_idx;  /* [M] or NULL */
} gdata;

static int32_t *random_gather(dm_rng *rng, int64_t M, int64_t rows)
{
    int32_t *idx = malloc((size_t)(M ? M : 1) * sizeof *idx);
    for (int64_t i = 0; i < M; i++) idx[i] = rand_below(rng, (int)rows);
    return idx;
}

/* A shuffle of [0, rows); its first M entries are distinct rows (C rows
 * must not repeat) and the rest of C stays unwritten. */
static int32_t *random_scatter(dm_rng *rng, int64_t rows)
{
    int32_t *perm = malloc((size_t)rows * sizeof *perm);
    for (int64_t i = 0; i < rows; i++) perm[i] = (int32_t)i;
    for (int64_t i = rows - 1; i > 0; i--) {
        int j = rand_below(rng, (int)i + 1);
        int32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    return perm;
}

static void gdata_init(gdata *d, const gcase *c, uint64_t seed)
{
    dm_rng rng;
    dm_rng_seed(&rng, seed);
    memset(d, 0, sizeof *d);
    d->c = *c;
    int64_t M = c->M;
    d->a_rows = c->a_idx ? M + 5 : M;
    d->c_rows = c->c_idx ? M + 4 : M;
    d->r_rows = c->r_idx ? M + 3 : M;
    /* strides larger than the width; the gaps hold NaN so reading them fails */
    d->lda = c->K + 1 + rand_below(&rng, 4);
    d->ldc = c->N + 1 + rand_below(&rng, 4);
    d->ldr = c->N + 2 + rand_below(&rng, 4);
    d->A_buf = dm_alloc((size_t)(d->a_rows * d->lda + 1) * sizeof(float));
    fill_value(d->A_buf, d->a_rows * d->lda + 1, NAN);
    float *A = d->A_buf + c->unaligned;
    for (int64_t i = 0; i < d->a_rows; i++) fill_uniform(&rng, A + i * d->lda, c->K, -1, 1);
    d->B = dm_alloc((size_t)c->N * c->K * sizeof(float));
    fill_uniform(&rng, d->B, (int64_t)c->N * c->K, -1, 1);
    if (c->bias) {
        d->bias = dm_alloc((size_t)c->N * sizeof(float));
        fill_uniform(&rng, d->bias, c->N, -1, 1);
    }
    if (c->resid) {
        d->R_buf = dm_alloc((size_t)(d->r_rows * d->ldr + 1) * sizeof(float));
        fill_value(d->R_buf, d->r_rows * d->ldr + 1, NAN);
        float *R = d->R_buf + c->unaligned;
        for (int64_t i = 0; i < d->r_rows; i++) fill_uniform(&rng, R + i * d->ldr, c->N, -2, 2);
    }
    if (c->scale) {
        d->scale = dm_alloc((size_t)(M ? M : 1) * sizeof(float));
        fill_uniform(&rng, d->scale, M, -2, 2);
    }
    if (c->a_idx) d->a_idx = random_gather(&rng, M, d->a_rows);
    if (c->c_idx) d->c_idx = random_scatter(&rng, d->c_rows);
    if (c->r_idx) d->r_idx = random_gather(&rng, M, d->r_rows);
}

static void gdata_free(gdata *d)
{
    dm_free(d->A_buf);
    dm_free(d->R_buf);
    dm_free(d->B);
    dm_free(d->bias);
    dm_free(d->scale);
    free(d->a_idx);
    free(d->c_idx);
    free(d->r_idx);
}

static int64_t c_row(const gdata *d, int64_t i) { return d->c_idx ? d->c_idx[i] : i; }

/* Runs the problem on table kt; returns the whole C buffer (c_rows * ldc + 1
 * floats, sentinel where nothing was written). Free with dm_free. */
static float *run_gemm_typed(dm_isa isa, const dm_wtype *wt, int group, const gdata *d)
{
    const gcase *c = &d->c;
    /* the weight in the type's file layout, then packed for isa */
    void *file = dm_alloc(dm_wtype_file_bytes(wt, c->N, c->K, group) + 64), *part[DM_WPARTS];
    dm_wtype_split(wt, c->N, c->K, group, file, part);
    wt->quantize_ref(d->B, c->N, c->K, group, part);
    size_t nb = dm_wmat_data_size(wt, isa, c->N, c->K, group);
    unsigned char *Bp_buf = dm_alloc(nb + 64);
    dm_wmat Bw;
    dm_wmat_bind(&Bw, wt, isa, c->N, c->K, group, Bp_buf + (c->unaligned ? 64 : 0));
    dm_wmat_pack(&Bw, (const void *const *)part);
    size_t nw = dm_wmat_work_size(&Bw, c->M);
    void *work = nw ? dm_alloc(nw) : NULL;
    size_t nc = (size_t)(d->c_rows * d->ldc + 1);
    float *C_buf = dm_alloc(nc * sizeof(float));
    fill_value(C_buf, (int64_t)nc, SENTINEL);
    dm_gemm g = {
        .M = c->M, .N = c->N, .K = c->K,
        .A = d->A_buf + c->unaligned, .lda = d->lda, .a_idx = d->a_idx,
        .B = &Bw, .bias = d->bias, .act = c->act,
        .R = d->R_buf ? d->R_buf + c->unaligned : NULL, .ldr = d->ldr, .r_idx = d->r_idx,
        .scale = d->scale,
        .C = C_buf + c->unaligned, .ldc = d->ldc, .c_idx = d->c_idx, .work = work,
    };
    dm_wmat_gemm(&g);
    dm_free(Bp_buf);
    dm_free(file);
    dm_free(work);
    return C_buf;
}

static float *run_gemm(const dm_kernels *kt, const gdata *d)
{
    return run_gemm_typed(kt->isa, &dm_wtypes[DM_WT_F32], 0, d);
}

/* The outputs the problem defines, packed as [M, N]. */
static float *gather_out(const gdata *d, const float *C_buf)
{
    const float *C = C_buf + d->c.unaligned;
    float *out = malloc((size_t)(d->c.M * d->c.N + 1) * sizeof *out);
    for (int64_t i = 0; i < d->c.M; i++)
        memcpy(out + i * d->c.N, C + c_row(d, i) * d->ldc, (size_t)d->c.N * sizeof *out);
    return out;
}

/* Counts C buffer entries outside the defined outputs that were changed. */
static int64_t stray_writes(const gdata *d, const float *C_buf)
{
    size_t nc = (size_t)(d->c_rows * d->ldc + 1);
    char *defined = calloc(nc, 1);
    for (int64_t i = 0; i < d->c.M; i++)
        memset(defined + d->c.unaligned + c_row(d, i) * d->ldc, 1, (size_t)d->c.N);
    int64_t n = 0;
    for (size_t j = 0; j < nc; j++)
        if (!defined[j] && C_buf[j] != SENTINEL) n++;
    free(defined);
    return n;
}

/* The definition in the interface comment, in double, written independently
 * of the reference: [M, N] packed. */
static double *naive_gemm(const gdata *d)
{
    const gcase *c = &d->c;
    const float *A = d->A_buf + c->unaligned;
    const float *R = d->R_buf ? d->R_buf + c->unaligned : NULL;
    double *out = malloc((size_t)(c->M * c->N + 1) * sizeof *out);
    for (int64_t i = 0; i < c->M; i++) {
        int64_t ar = d->a_idx ? d->a_idx[i] : i, rr = d->r_idx ? d->r_idx[i] : i;
        for (int n = 0; n < c->N; n++) {
            double acc = 0;
            for (int k = 0; k < c->K; k++)
                acc += (double)A[ar * d->lda + k] * (double)d->B[(int64_t)n * c->K + k];
            if (d->bias) acc += d->bias[n];
            if (c->act == DM_ACT_RELU) acc = acc > 0 ? acc : 0;
            if (R) acc += R[rr * d->ldr + n];
            if (d->scale) acc *= d->scale[i];
            out[i * c->N + n] = acc;
        }
    }
    return out;
}

static const char *case_str(const gcase *c, char *buf, size_t n)
{
    snprintf(buf, n, "M=%lld N=%d K=%d a_idx=%d c_idx=%d r_idx=%d bias=%d R=%d scale=%d act=%d unaligned=%d",
             (long long)c->M, c->N, c->K, c->a_idx, c->c_idx, c->r_idx, c->bias, c->resid,
             c->scale, (int)c->act, c->unaligned);
    return buf;
}

/* Sets the option flags of c from the low bits of `bits`. */
static void set_options(gcase *c, unsigned bits)
{
    c->a_idx = bits & 1;
    c->c_idx = (bits >> 1) & 1;
    c->r_idx = (bits >> 2) & 1;
    c->bias = (bits >> 3) & 1;
    c->resid = (bits >> 4) & 1;
    c->scale = (bits >> 5) & 1;
    c->act = (bits >> 6) & 1 ? DM_ACT_RELU : DM_ACT_NONE;
    c->unaligned = (bits >> 7) & 1;
}

/* ---------------------------------------------------------------- the case lists */

static const int64_t Ms[] = {0, 1, 3, 7, 17, 63, 257};
/* 25: the second half-panel of avx2 (9 columns) and a 25-column avx512 tail */
static const int Ns[] = {1, 3, 8, 17, 25, 32, 33, 63, 256};
static const int Ks[] = {1, 3, 7, 17, 64, 257, 512};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
/* Cross-product problems above this many multiply-adds are skipped, except
 * the full-size ones listed in big_cases (keeps the ASan run short). */
#define MAX_MACS (1 << 21)

static const gcase big_cases[] = {
    {.M = 257, .N = 256, .K = 512, .a_idx = 1, .c_idx = 1, .r_idx = 1, .bias = 1, .resid = 1, .scale = 1, .act = DM_ACT_RELU},
    {.M = 63, .N = 256, .K = 512, .unaligned = 1},
    {.M = 257, .N = 33, .K = 257, .a_idx = 1, .bias = 1, .act = DM_ACT_RELU},
    /* more panels than one L2 block holds: the panel-block loop */
    {.M = 14, .N = 520, .K = 512, .c_idx = 1, .bias = 1, .resid = 1, .scale = 1},
};

/* Calls fn on every problem: the size cross-product with options drawn
 * per size, all 256 option sets at two awkward sizes, every row count up
 * to 25 (each micro-tile height and tail), K = 0, and the big cases. */
static void for_each_case(dm_t *t, void (*fn)(dm_t *, const gcase *, uint64_t), int cross_stride)
{
    dm_rng rng;
    dm_rng_seed(&rng, 42);
    uint64_t seed = 1;
    int idx = 0;
    for (int mi = 0; mi < COUNT(Ms); mi++)
        for (int ni = 0; ni < COUNT(Ns); ni++)
            for (int ki = 0; ki < COUNT(Ks); ki++) {
                gcase c = {.M = Ms[mi], .N = Ns[ni], .K = Ks[ki]};
                set_options(&c, (unsigned)dm_rng_u64(&rng));
                if (c.M * c.N * c.K > MAX_MACS || idx++ % cross_stride) continue;
                fn(t, &c, seed++);
            }
    static const gcase sweep_sizes[] = {{.M = 13, .N = 41, .K = 17}, {.M = 7, .N = 25, .K = 3}};
    for (int s = 0; s < COUNT(sweep_sizes); s++)
        for (unsigned bits = 0; bits < 256; bits++) {
            gcase c = sweep_sizes[s];
            set_options(&c, bits);
            fn(t, &c, seed++);
        }
    for (int m = 1; m <= 25; m++) {
        gcase c = {.M = m, .N = 19 + m, .K = 5 + m % 4};
        set_options(&c, (unsigned)dm_rng_u64(&rng));
        fn(t, &c, seed++);
    }
    gcase k0 = {.M = 5, .N = 19, .K = 0, .bias = 1, .resid = 1, .scale = 1, .act = DM_ACT_RELU};
    fn(t, &k0, seed++);
    for (int b = 0; b < COUNT(big_cases); b++) fn(t, &big_cases[b], seed++);
}

/* ---------------------------------------------------------------- reference gemm */

static void ref_vs_naive_case(dm_t *t, const gcase *c, uint64_t seed)
{
    gdata d;
    gdata_init(&d, c, seed);
    float *C_buf = run_gemm(&dm_kernels_ref, &d);
    float *got = gather_out(&d, C_buf);
    double *want = naive_gemm(&d);
    double err = 0, den = 1e-30;
    for (int64_t j = 0; j < c->M * c->N; j++) {
        double e = fabs(got[j] - want[j]);
        if (e != e) e = INFINITY;
        if (e > err) err = e;
        den = fabs(want[j]) > den ? fabs(want[j]) : den;
    }
    char buf[256];
    /* the reference rounds once to float after a double sum: ~1 ulp */
    CHECK(t, err / den <= 1e-6, "%s: relerr %g", case_str(c, buf, sizeof buf), err / den);
    int64_t stray = stray_writes(&d, C_buf);
    CHECK(t, stray == 0, "%s: %lld writes outside the outputs", case_str(c, buf, sizeof buf),
          (long long)stray);
    free(want);
    free(got);
    dm_free(C_buf);
    gdata_free(&d);
}

static void test_kernel_ref_gemm_naive(dm_t *t)
{
    for_each_case(t, ref_vs_naive_case, 3);
}

/* Values worked out by hand, so the reference and the naive formula cannot
 * share a layout mistake (e.g. B read transposed). */
static void test_kernel_ref_gemm_known(dm_t *t)
{
    const float A[2 * 3] = {1, 2, 3,
                            -4, 5, -6};                   /* [2, 3] */
    const float B[2 * 3] = {1, 0, 2,                     /* output 0 */
                            0, -1, 1};                   /* output 1, [2, 3] */
    const float bias[2] = {0.5f, -10};
    const float R[2 * 2] = {100, 200, 300, 400};
    const float scale[2] = {2, -1};
    const int32_t a_idx[2] = {1, 0}, c_idx[2] = {1, 0};
    float Bp[6], C[2 * 2];
    dm_wmat Bw;
    dm_wmat_bind(&Bw, &dm_wtypes[DM_WT_F32], DM_ISA_REF, 2, 3, 0, Bp);
    dm_wmat_pack_f32(&Bw, B);
    /* row i reads A row a_idx[i] = {-4,5,-6} then {1,2,3}:
     *   A1·B0 = -4-12 = -16, A1·B1 = -5-6 = -11; A0·B0 = 7, A0·B1 = 1
     * + bias: -15.5, -21; 7.5, -9   relu: 0, 0; 7.5, 0
     * + R row i: 100, 200; 307.5, 400   * scale: 200, 400; -307.5, -400
     * row i lands in C row c_idx[i] */
    dm_gemm g = {.M = 2, .N = 2, .K = 3, .A = A, .lda = 3, .a_idx = a_idx, .B = &Bw,
                 .bias = bias, .act = DM_ACT_RELU, .R = R, .ldr = 2, .scale = scale,
                 .C = C, .ldc = 2, .c_idx = c_idx};
    dm_wmat_gemm(&g);
    const float want[4] = {-307.5f, -400, 200, 400};
    for (int j = 0; j < 4; j++) CHECK(t, C[j] == want[j], "C[%d] = %g, want %g", j, C[j], want[j]);

    /* no options: plain A·Bᵀ */
    dm_gemm h = {.M = 2, .N = 2, .K = 3, .A = A, .lda = 3, .B = &Bw, .C = C, .ldc = 2};
    dm_wmat_gemm(&h);
    const float plain[4] = {7, 1, -16, -11};
    for (int j = 0; j < 4; j++) CHECK(t, C[j] == plain[j], "C[%d] = %g, want %g", j, C[j], plain[j]);
}

/* ---------------------------------------------------------------- optimized gemm */

static void table_vs_ref_case(dm_t *t, const dm_kernels *kt, const gcase *c, uint64_t seed)
{
    gdata d;
    gdata_init(&d, c, seed);
    float *ref_buf = run_gemm(&dm_kernels_ref, &d);
    float *got_buf = run_gemm(kt, &d);
    float *want = gather_out(&d, ref_buf), *got = gather_out(&d, got_buf);
    double err = dm_test_relerr(got, want, c->M * c->N);
    char buf[256];
    CHECK(t, err <= TOL, "%s: %s: relerr %g", dm_isa_name(kt->isa), case_str(c, buf, sizeof buf), err);
    int64_t stray = stray_writes(&d, got_buf);
    CHECK(t, stray == 0, "%s: %s: %lld writes outside the outputs", dm_isa_name(kt->isa),
          case_str(c, buf, sizeof buf), (long long)stray);
    free(want);
    free(got);
    dm_free(ref_buf);
    dm_free(got_buf);
    gdata_free(&d);
}

static void avx2_case(dm_t *t, const gcase *c, uint64_t seed)
{
    table_vs_ref_case(t, &dm_kernels_avx2, c, seed);
}

static void avx512_case(dm_t *t, const gcase *c, uint64_t seed)
{
    table_vs_ref_case(t, &dm_kernels_avx512, c, seed);
}

static void test_kernel_avx2_gemm(dm_t *t) { for_each_case(t, avx2_case, 1); }
static void test_kernel_avx512_gemm(dm_t *t) { for_each_case(t, avx512_case, 1); }

/* A NaN in one input row reaches exactly that output row (relu keeps NaN, as
 * PyTorch does), and the rows sharing its micro-tile stay clean. */
static void check_nan_row(dm_t *t, const dm_kernels *kt)
{
    for (int act = 0; act < 2; act++) {
        gcase c = {.M = 9, .N = 40, .K = 21, .act = act ? DM_ACT_RELU : DM_ACT_NONE, .bias = 1};
        gdata d;
        gdata_init(&d, &c, 7);
        d.A_buf[4 * d.lda + 5] = NAN; /* row 4 */
        float *C_buf = run_gemm(kt, &d);
        for (int64_t i = 0; i < c.M; i++)
            for (int n = 0; n < c.N; n++) {
                float v = C_buf[i * d.ldc + n];
                CHECK(t, (i == 4) == (isnan(v) != 0), "%s act=%d: C[%lld][%d] = %g",
                      dm_isa_name(kt->isa), act, (long long)i, n, v);
            }
        dm_free(C_buf);
        gdata_free(&d);
    }
}

static void test_kernel_gemm_nan(dm_t *t)
{
    check_nan_row(t, &dm_kernels_ref);
    if (isa_supported(DM_ISA_AVX2)) check_nan_row(t, &dm_kernels_avx2);
    if (isa_supported(DM_ISA_AVX512)) check_nan_row(t, &dm_kernels_avx512);
}

/* ---------------------------------------------------------------- layernorm */

static const int LN_NS[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 256, 257, 512};

/* rows x n values around a nonzero mean, stride ld = n + 3 with sentinel gaps. */
static float *ln_input(dm_rng *rng, int64_t rows, int n, int64_t ld)
{
    float *x = dm_alloc((size_t)(rows * ld) * sizeof(float));
    fill_value(x, rows * ld, SENTINEL);
    for (int64_t i = 0; i < rows; i++)
        for (int j = 0; j < n; j++) x[i * ld + j] = 3.0f + 2.0f * dm_rng_normal(rng);
    return x;
}

static void test_kernel_ref_layernorm(dm_t *t)
{
    dm_rng rng;
    dm_rng_seed(&rng, 3);
    const float eps = 1e-5f;
    for (int s = 0; s < COUNT(LN_NS); s++) {
        int n = LN_NS[s];
        int64_t rows = 5, ld = n + 3;
        float *x = ln_input(&rng, rows, n, ld), *y = dm_alloc((size_t)(rows * ld) * sizeof(float));
        float *gamma = dm_alloc((size_t)n * sizeof(float)), *beta = dm_alloc((size_t)n * sizeof(float));
        fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
        fill_uniform(&rng, beta, n, -1, 1);
        for (int affine = 0; affine < 2; affine++) {
            memcpy(y, x, (size_t)(rows * ld) * sizeof(float));
            dm_kernels_ref.layernorm(y, rows, n, ld, affine ? gamma : NULL, affine ? beta : NULL, eps);
            for (int64_t i = 0; i < rows; i++) {
                const float *xi = x + i * ld, *yi = y + i * ld;
                double mean = 0, var = 0, ymean = 0, yvar = 0;
                for (int j = 0; j < n; j++) mean += xi[j];
                mean /= n;
                for (int j = 0; j < n; j++) var += (xi[j] - mean) * (xi[j] - mean) / n;
                for (int j = 0; j < n; j++) {
                    double want = (xi[j] - mean) / sqrt(var + eps);
                    if (affine) want = want * gamma[j] + beta[j];
                    CHECK(t, fabs(yi[j] - want) <= 1e-6 * (1 + fabs(want)),
                          "n=%d affine=%d [%lld][%d]: %g want %g", n, affine, (long long)i, j, yi[j], want);
                    ymean += yi[j] / n;
                }
                for (int j = 0; j < n; j++) yvar += (yi[j] - ymean) * (yi[j] - ymean) / n;
                /* the property itself: mean 0, variance var/(var+eps) ~ 1 */
                if (!affine && n > 1) {
                    CHECK(t, fabs(ymean) < 1e-5 && fabs(yvar - var / (var + eps)) < 1e-5,
                          "n=%d row %lld: mean %g var %g", n, (long long)i, ymean, yvar);
                }
                for (int j = n; j < ld; j++)
                    CHECK(t, yi[j] == SENTINEL, "n=%d: gap [%lld][%d] written", n, (long long)i, j);
            }
        }
        dm_free(x);
        dm_free(y);
        dm_free(gamma);
        dm_free(beta);
    }
    /* by hand: {1,2,3,4} has mean 2.5 and biased variance 1.25 */
    float v[4] = {1, 2, 3, 4};
    dm_kernels_ref.layernorm(v, 1, 4, 4, NULL, NULL, 0.0f);
    const float want[4] = {-1.3416408f, -0.4472136f, 0.4472136f, 1.3416408f};
    for (int j = 0; j < 4; j++)
        CHECK(t, fabsf(v[j] - want[j]) <= 1e-6f, "v[%d] = %.8g want %.8g", j, v[j], want[j]);
}

static void check_layernorm(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 4);
    for (int s = 0; s < COUNT(LN_NS); s++) {
        int n = LN_NS[s];
        int64_t rows = 7, ld = n + 3, total = rows * ld;
        float *x = ln_input(&rng, rows, n, ld);
        float *want = dm_alloc((size_t)total * sizeof(float)), *got = dm_alloc((size_t)total * sizeof(float));
        float *gamma = dm_alloc((size_t)n * sizeof(float)), *beta = dm_alloc((size_t)n * sizeof(float));
        fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
        fill_uniform(&rng, beta, n, -1, 1);
        for (int affine = 0; affine < 2; affine++)
            for (int unaligned = 0; unaligned < 2; unaligned++) {
                /* unaligned: the rows start one float later, one row fewer */
                int64_t r = rows - unaligned;
                memcpy(want, x, (size_t)total * sizeof(float));
                memcpy(got, x, (size_t)total * sizeof(float));
                dm_kernels_ref.layernorm(want + unaligned, r, n, ld, affine ? gamma : NULL,
                                         affine ? beta : NULL, 1e-5f);
                kt->layernorm(got + unaligned, r, n, ld, affine ? gamma : NULL,
                              affine ? beta : NULL, 1e-5f);
                /* row by row (the sentinel must not dilute the error), and
                 * every float outside the rows identical */
                double err = 0;
                for (int64_t i = 0; i < r; i++) {
                    int64_t o = unaligned + i * ld;
                    double e = dm_test_relerr(got + o, want + o, n);
                    if (e > err) err = e;
                }
                int gaps = 0;
                for (int64_t j = 0; j < total; j++)
                    gaps += (want[j] == SENTINEL) != (got[j] == SENTINEL);
                CHECK(t, err <= TOL && gaps == 0, "%s n=%d affine=%d unaligned=%d: relerr %g, %d gap diffs",
                      dm_isa_name(kt->isa), n, affine, unaligned, err, gaps);
            }
        dm_free(x);
        dm_free(want);
        dm_free(got);
        dm_free(gamma);
        dm_free(beta);
    }
}

static void test_kernel_avx2_layernorm(dm_t *t) { check_layernorm(t, &dm_kernels_avx2); }
static void test_kernel_avx512_layernorm(dm_t *t) { check_layernorm(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- silu_mul */

static const int SILU_HS[] = {1, 3, 7, 8, 15, 16, 17, 33, 64, 255, 256};

/* gate values over the whole useful range, including where exp over/underflows */
static float *silu_input(dm_rng *rng, int64_t rows, int h, int64_t ld)
{
    static const float extremes[] = {0.0f, -0.0f, 1e-7f, -1e-7f, 20, -20, 87, -87, 88.5f,
                                     -88.5f, 89, -89, 100, -100, 1e4f, -1e4f};
    float *gu = dm_alloc((size_t)(rows * ld) * sizeof(float));
    fill_value(gu, rows * ld, SENTINEL);
    for (int64_t i = 0; i < rows; i++) {
        fill_uniform(rng, gu + i * ld, h, -12, 12);       /* gate */
        fill_uniform(rng, gu + i * ld + h, h, -3, 3);     /* up */
        for (int j = 0; j < h; j++)
            if (rand_below(rng, 5) == 0) gu[i * ld + j] = extremes[rand_below(rng, COUNT(extremes))];
    }
    return gu;
}

static void test_kernel_ref_silu_mul(dm_t *t)
{
    /* by hand: silu(0) = 0, silu(1) = 1/(1+e^-1), silu(-1) = -1/(1+e) */
    float gu[2 * 3] = {0, 1, -1, 5, 2, -3}; /* gate | up, h = 3 */
    float out[3];
    dm_kernels_ref.silu_mul(gu, 1, 3, 6, out, 3);
    const float want[3] = {0.0f, 0.73105858f * 2, -0.26894142f * -3};
    for (int j = 0; j < 3; j++)
        CHECK(t, fabsf(out[j] - want[j]) <= 1e-6f, "out[%d] = %.8g want %.8g", j, out[j], want[j]);

    dm_rng rng;
    dm_rng_seed(&rng, 5);
    for (int s = 0; s < COUNT(SILU_HS); s++) {
        int h = SILU_HS[s];
        int64_t rows = 4, ld = 2 * h + 1;
        float *x = silu_input(&rng, rows, h, ld);
        float *o = dm_alloc((size_t)(rows * h) * sizeof(float));
        dm_kernels_ref.silu_mul(x, rows, h, ld, o, h);
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < h; j++) {
                double g = x[i * ld + j], u = x[i * ld + h + j];
                double w = g * u / (1 + exp(-g));
                CHECK(t, fabs(o[i * h + j] - w) <= 1e-6 * fabs(w) + 1e-37,
                      "h=%d [%lld][%d]: silu(%g)*%g = %g want %g", h, (long long)i, j, g, u,
                      o[i * h + j], w);
            }
        dm_free(x);
        dm_free(o);
    }
}

/* Out of place, and in place both with the same stride and compacted to h. */
static void check_silu_mul(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 6);
    for (int s = 0; s < COUNT(SILU_HS); s++) {
        int h = SILU_HS[s];
        int64_t rows = 5, ld = 2 * h + 3, total = rows * ld;
        float *x = silu_input(&rng, rows, h, ld);
        float *want = dm_alloc((size_t)total * sizeof(float)), *got = dm_alloc((size_t)total * sizeof(float));
        for (int mode = 0; mode < 3; mode++) {
            /* 0: out of place, ld_out = h + 1, one float past alignment
             * 1: in place, ld_out = ld    2: in place, ld_out = h */
            int64_t ld_out = mode == 0 ? h + 1 : mode == 1 ? ld : h;
            memcpy(want, x, (size_t)total * sizeof(float));
            memcpy(got, x, (size_t)total * sizeof(float));
            if (mode == 0) {
                fill_value(want, total, SENTINEL);
                fill_value(got, total, SENTINEL);
                dm_kernels_ref.silu_mul(x, rows, h, ld, want + 1, ld_out);
                kt->silu_mul(x, rows, h, ld, got + 1, ld_out);
            } else {
                dm_kernels_ref.silu_mul(want, rows, h, ld, want, ld_out);
                kt->silu_mul(got, rows, h, ld, got, ld_out);
            }
            /* every float of the buffer: outputs close, everything else identical */
            double err = elem_relerr(got, want, total, 1e-30);
            CHECK(t, err <= SILU_TOL, "%s h=%d mode=%d: relerr %g", dm_isa_name(kt->isa), h, mode, err);
        }
        dm_free(x);
        dm_free(want);
        dm_free(got);
    }
}

static void test_kernel_avx2_silu_mul(dm_t *t) { check_silu_mul(t, &dm_kernels_avx2); }
static void test_kernel_avx512_silu_mul(dm_t *t) { check_silu_mul(t, &dm_kernels_avx512); }

/* ================================================================ training kernels */

/* max |a - b| over a rows x cols block (stride ld), divided by max(max |b|,
 * floor): the normalized error of a whole output block. */
static double block_relerr(const float *a, const float *b, int64_t rows, int64_t cols, int64_t ld,
                           double floor)
{
    double num = 0, den = floor > 1e-30 ? floor : 1e-30;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double d = fabs((double)a[i * ld + j] - (double)b[i * ld + j]);
            if (d != d) return INFINITY;
            if (d > num) num = d;
            if (fabs(b[i * ld + j]) > den) den = fabs(b[i * ld + j]);
        }
    return num / den;
}

/* The scale of one row of LayerNorm's dx: rstd * max_j |dy_j gamma_j|, the
 * size of the terms it combines. dx itself can be far smaller (n = 2: the
 * output does not depend on x, up to eps), so errors are measured against this. */
static double ln_dx_scale(const float *dy, int n, const float *gamma, float rstd)
{
    double m = 0;
    for (int j = 0; j < n; j++) {
        double g = fabs((double)dy[j] * (gamma ? gamma[j] : 1.0f));
        if (g > m) m = g;
    }
    return m * rstd;
}

/* Bitwise equality of two float arrays (NaN-safe, distinguishes -0). */
static int same_bits(const float *a, const float *b, int64_t n)
{
    return n <= 0 || memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* ---------------------------------------------------------------- layernorm_fwd */

/* LayerNorm of one row in double: y (may be NULL), and the row's mean and
 * 1/sqrt(var + eps). gamma/beta NULL mean 1 and 0. */
static void ln_row_d(const double *x, int n, const double *gamma, const double *beta, double eps,
                     double *y, double *mean, double *rstd)
{
    double mu = 0, var = 0;
    for (int j = 0; j < n; j++) mu += x[j];
    mu /= n;
    for (int j = 0; j < n; j++) var += (x[j] - mu) * (x[j] - mu);
    var /= n;
    double r = 1 / sqrt(var + eps);
    if (mean) *mean = mu;
    if (rstd) *rstd = r;
    if (y)
        for (int j = 0; j < n; j++) y[j] = (x[j] - mu) * r * (gamma ? gamma[j] : 1) + (beta ? beta[j] : 0);
}

static double *to_double(const float *p, int64_t n)
{
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* gamma/beta options: bit 0 gamma, bit 1 beta (each alone catches a NULL mixup) */
static void test_kernel_ref_layernorm_fwd(dm_t *t)
{
    dm_rng rng;
    dm_rng_seed(&rng, 11);
    const float eps = 1e-5f;
    for (int s = 0; s < COUNT(LN_NS); s++) {
        int n = LN_NS[s];
        int64_t rows = 5, ld = n + 3, ldy = n + 5;
        float *x = ln_input(&rng, rows, n, ld);
        for (int j = 0; j < n; j++) x[2 * ld + j] = 2.5f; /* a constant row: var 0, rstd = 1/sqrt(eps) */
        float *y = dm_alloc((size_t)(rows * ldy) * sizeof(float));
        float *mean = dm_alloc((size_t)rows * sizeof(float)), *rstd = dm_alloc((size_t)rows * sizeof(float));
        float *gamma = dm_alloc((size_t)n * sizeof(float)), *beta = dm_alloc((size_t)n * sizeof(float));
        fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
        fill_uniform(&rng, beta, n, -1, 1);
        double *gd = to_double(gamma, n), *bd = to_double(beta, n), *want = malloc((size_t)n * sizeof *want);
        for (int opt = 0; opt < 4; opt++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const float *ga = opt & 1 ? gamma : NULL, *be = opt & 2 ? beta : NULL;
                float *out = inplace ? dm_alloc((size_t)(rows * ld) * sizeof(float)) : y;
                int64_t ldo = inplace ? ld : ldy;
                if (inplace) memcpy(out, x, (size_t)(rows * ld) * sizeof(float));
                else fill_value(y, rows * ldy, SENTINEL);
                dm_kernels_ref.layernorm_fwd(inplace ? out : x, rows, n, ld, ga, be, eps, out, ldo, mean, rstd);
                for (int64_t i = 0; i < rows; i++) {
                    double *xd = to_double(x + i * ld, n), mu, r;
                    ln_row_d(xd, n, opt & 1 ? gd : NULL, opt & 2 ? bd : NULL, eps, want, &mu, &r);
                    CHECK(t, fabs(mean[i] - mu) <= 1e-6 * fabs(mu) && fabs(rstd[i] - r) <= 1e-6 * r,
                          "n=%d row %lld: mean %g rstd %g want %g %g", n, (long long)i, mean[i], rstd[i], mu, r);
                    for (int j = 0; j < n; j++)
                        CHECK(t, fabs(out[i * ldo + j] - want[j]) <= 1e-6 * (1 + fabs(want[j])),
                              "n=%d opt=%d inplace=%d [%lld][%d]: %g want %g", n, opt, inplace,
                              (long long)i, j, out[i * ldo + j], want[j]);
                    for (int64_t j = n; j < ldo; j++)
                        CHECK(t, out[i * ldo + j] == SENTINEL, "n=%d: gap [%lld][%lld] written", n,
                              (long long)i, (long long)j);
                    free(xd);
                }
                if (inplace) dm_free(out);
            }
        /* the constant row (variance 0): eps alone keeps rstd finite */
        CHECK(t, fabsf(rstd[2] - 1 / sqrtf(eps)) <= 1e-3f, "rstd of a constant row %g", rstd[2]);
        free(gd);
        free(bd);
        free(want);
        dm_free(x);
        dm_free(y);
        dm_free(mean);
        dm_free(rstd);
        dm_free(gamma);
        dm_free(beta);
    }
}

static void check_layernorm_fwd(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 12);
    for (int s = 0; s < COUNT(LN_NS); s++) {
        int n = LN_NS[s];
        int64_t rows = 7, ld = n + 3, ldy = n + 2;
        float *x = ln_input(&rng, rows, n, ld);
        float *gamma = dm_alloc((size_t)n * sizeof(float)), *beta = dm_alloc((size_t)n * sizeof(float));
        fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
        fill_uniform(&rng, beta, n, -1, 1);
        int64_t total = rows * (ld > ldy ? ld : ldy) + 1;
        float *want = dm_alloc((size_t)total * sizeof(float)), *got = dm_alloc((size_t)total * sizeof(float));
        float stats[4][8]; /* mean, rstd of ref and kt */
        for (int opt = 0; opt < 4; opt++)
            for (int mode = 0; mode < 3; mode++) {
                /* 0: out of place, y one float past alignment, ldy != ld
                 * 1: in place (y == x)   2: out of place, x unaligned, one row fewer */
                const float *ga = opt & 1 ? gamma : NULL, *be = opt & 2 ? beta : NULL;
                int64_t r = mode == 2 ? rows - 1 : rows, ldo = mode == 1 ? ld : ldy;
                float *yw = want + (mode == 0), *yg = got + (mode == 0);
                if (mode == 1) {
                    memcpy(want, x, (size_t)(rows * ld) * sizeof(float));
                    memcpy(got, x, (size_t)(rows * ld) * sizeof(float));
                } else {
                    fill_value(want, total, SENTINEL);
                    fill_value(got, total, SENTINEL);
                }
                const float *xw = mode == 1 ? want : x + (mode == 2), *xg = mode == 1 ? got : x + (mode == 2);
                dm_kernels_ref.layernorm_fwd(xw, r, n, ld, ga, be, 1e-5f, yw, ldo, stats[0], stats[1]);
                kt->layernorm_fwd(xg, r, n, ld, ga, be, 1e-5f, yg, ldo, stats[2], stats[3]);
                double err = 0;
                for (int64_t i = 0; i < r; i++) {
                    double e = dm_test_relerr(yg + i * ldo, yw + i * ldo, n);
                    if (e > err) err = e;
                }
                double serr = elem_relerr(stats[2], stats[0], r, 1e-3);
                double rerr = elem_relerr(stats[3], stats[1], r, 1e-30);
                int gaps = 0;
                for (int64_t j = 0; j < total; j++) gaps += (want[j] == SENTINEL) != (got[j] == SENTINEL);
                CHECK(t, err <= TOL && serr <= TOL && rerr <= TOL && gaps == 0,
                      "%s n=%d opt=%d mode=%d: y relerr %g, mean %g, rstd %g, %d gap diffs",
                      dm_isa_name(kt->isa), n, opt, mode, err, serr, rerr, gaps);
            }
        dm_free(x);
        dm_free(want);
        dm_free(got);
        dm_free(gamma);
        dm_free(beta);
    }
}

static void test_kernel_avx2_layernorm_fwd(dm_t *t) { check_layernorm_fwd(t, &dm_kernels_avx2); }
static void test_kernel_avx512_layernorm_fwd(dm_t *t) { check_layernorm_fwd(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- layernorm_bwd */

/* L = sum_j w[j] * y[j] of one row's forward, in double. */
static double ln_loss_d(const double *x, int n, const double *gamma, const double *beta, double eps,
                        const double *w, double *ybuf)
{
    ln_row_d(x, n, gamma, beta, eps, ybuf, NULL, NULL);
    double l = 0;
    for (int j = 0; j < n; j++) l += w[j] * ybuf[j];
    return l;
}

/* The reference backward against (a) the formula in double from x itself
 * and (b) central finite differences of the forward (loss sum(dy * y)) in x,
 * gamma and beta; dgamma/dbeta accumulate onto nonzero values; in place and
 * without dgamma/dbeta give bitwise the same dx. */
static void test_kernel_ref_layernorm_bwd(dm_t *t)
{
    static const int ns[] = {1, 2, 3, 17, 64};
    dm_rng rng;
    dm_rng_seed(&rng, 13);
    const float eps = 1e-5f;
    const double h = 1e-4;
    for (int s = 0; s < COUNT(ns); s++)
        for (int affine = 0; affine < 2; affine++) {
            int n = ns[s];
            int64_t rows = 4, ld = n + 2, total = rows * ld;
            float *x = ln_input(&rng, rows, n, ld);
            float *dy = dm_alloc((size_t)total * sizeof(float)), *dx = dm_alloc((size_t)total * sizeof(float));
            float *dx2 = dm_alloc((size_t)total * sizeof(float));
            fill_value(dy, total, SENTINEL);
            for (int64_t i = 0; i < rows; i++) fill_uniform(&rng, dy + i * ld, n, -2, 2);
            float gamma[64], dgamma[64], dbeta[64], dg0[64], db0[64], mean[4], rstd[4];
            fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
            fill_uniform(&rng, dg0, n, -1, 1);
            fill_uniform(&rng, db0, n, -1, 1);
            memcpy(dgamma, dg0, sizeof dgamma);
            memcpy(dbeta, db0, sizeof dbeta);
            const float *ga = affine ? gamma : NULL;
            dm_kernels_ref.layernorm_fwd(x, rows, n, ld, ga, NULL, eps, dx, ld, mean, rstd); /* mean, rstd */
            fill_value(dx, total, SENTINEL);
            dm_kernels_ref.layernorm_bwd(x, mean, rstd, dy, rows, n, ld, ga, dx, dgamma, dbeta);

            double gd[64], zero[64] = {0}, xd[64], wd[64], yd[64];
            for (int j = 0; j < n; j++) gd[j] = affine ? gamma[j] : 1;
            double dgw[64] = {0}, dbw[64] = {0}, dgfd[64] = {0}, dbfd[64] = {0};
            for (int64_t i = 0; i < rows; i++) {
                for (int j = 0; j < n; j++) {
                    xd[j] = x[i * ld + j];
                    wd[j] = dy[i * ld + j];
                }
                double mu, r, sg = 0, sgx = 0, want[64], fd[64];
                ln_row_d(xd, n, NULL, NULL, eps, NULL, &mu, &r);
                for (int j = 0; j < n; j++) {
                    double xh = (xd[j] - mu) * r;
                    sg += wd[j] * gd[j];
                    sgx += wd[j] * gd[j] * xh;
                    dgw[j] += wd[j] * xh;
                    dbw[j] += wd[j];
                }
                for (int j = 0; j < n; j++) {
                    double xh = (xd[j] - mu) * r;
                    want[j] = r * (wd[j] * gd[j] - sg / n - xh * sgx / n);
                    double keep = xd[j];
                    xd[j] = keep + h;
                    double lp = ln_loss_d(xd, n, gd, zero, eps, wd, yd);
                    xd[j] = keep - h;
                    double lm = ln_loss_d(xd, n, gd, zero, eps, wd, yd);
                    xd[j] = keep;
                    fd[j] = (lp - lm) / (2 * h);
                }
                /* gamma and beta: each row's loss moves with them */
                for (int j = 0; j < n; j++) {
                    double keep = gd[j];
                    gd[j] = keep + h;
                    double lp = ln_loss_d(xd, n, gd, zero, eps, wd, yd);
                    gd[j] = keep - h;
                    double lm = ln_loss_d(xd, n, gd, zero, eps, wd, yd);
                    gd[j] = keep;
                    dgfd[j] += (lp - lm) / (2 * h);
                    double bp[64] = {0};
                    bp[j] = h;
                    lp = ln_loss_d(xd, n, gd, bp, eps, wd, yd);
                    bp[j] = -h;
                    lm = ln_loss_d(xd, n, gd, bp, eps, wd, yd);
                    dbfd[j] += (lp - lm) / (2 * h);
                }
                float wf[64], ff[64];
                for (int j = 0; j < n; j++) {
                    wf[j] = (float)want[j];
                    ff[j] = (float)fd[j];
                }
                double sc = ln_dx_scale(dy + i * ld, n, ga, rstd[i]);
                double e1 = block_relerr(dx + i * ld, wf, 1, n, n, sc), e2 = block_relerr(dx + i * ld, ff, 1, n, n, sc);
                /* n = 1: xhat = 0, dx must be exactly 0 */
                CHECK(t, n > 1 ? e1 <= 1e-5 && e2 <= 1e-5 : dx[i * ld] == 0,
                      "n=%d affine=%d row %lld: dx relerr %g vs formula, %g vs finite differences",
                      n, affine, (long long)i, e1, e2);
                CHECK(t, dx[i * ld + n] == SENTINEL && (i + 1 == rows || dx[i * ld + n + 1] == SENTINEL),
                      "n=%d: gap after row %lld written", n, (long long)i);
            }
            float dgf[64], dbf[64], dgfdf[64], dbfdf[64], dgd[64], dbd[64];
            for (int j = 0; j < n; j++) {
                dgf[j] = (float)(dg0[j] + dgw[j]);
                dbf[j] = (float)(db0[j] + dbw[j]);
                dgfdf[j] = (float)dgfd[j];
                dbfdf[j] = (float)dbfd[j];
                dgd[j] = dgamma[j] - dg0[j]; /* what the kernel added */
                dbd[j] = dbeta[j] - db0[j];
            }
            double eg = dm_test_relerr(dgamma, dgf, n), eb = dm_test_relerr(dbeta, dbf, n);
            CHECK(t, eg <= 1e-6 && eb <= 1e-6, "n=%d affine=%d: dgamma relerr %g, dbeta %g vs formula",
                  n, affine, eg, eb);
            eg = dm_test_relerr(dgd, dgfdf, n);
            eb = dm_test_relerr(dbd, dbfdf, n);
            CHECK(t, eg <= 1e-5 && eb <= 1e-5,
                  "n=%d affine=%d: dgamma relerr %g, dbeta %g vs finite differences", n, affine, eg, eb);

            /* without dgamma/dbeta, and in place (dx == dy): the same dx, bit for bit */
            fill_value(dx2, total, SENTINEL);
            dm_kernels_ref.layernorm_bwd(x, mean, rstd, dy, rows, n, ld, ga, dx2, NULL, NULL);
            CHECK(t, same_bits(dx2, dx, total), "n=%d affine=%d: dx differs without dgamma/dbeta", n, affine);
            memcpy(dx2, dy, (size_t)total * sizeof(float));
            memcpy(dgamma, dg0, sizeof dgamma);
            memcpy(dbeta, db0, sizeof dbeta);
            dm_kernels_ref.layernorm_bwd(x, mean, rstd, dx2, rows, n, ld, ga, dx2, dgamma, dbeta);
            int diff = 0;
            for (int64_t i = 0; i < rows; i++) diff += !same_bits(dx2 + i * ld, dx + i * ld, n);
            CHECK(t, diff == 0 && dm_test_relerr(dgamma, dgf, n) <= 1e-6,
                  "n=%d affine=%d: in place differs (%d rows)", n, affine, diff);
            dm_free(x);
            dm_free(dy);
            dm_free(dx);
            dm_free(dx2);
        }
}

static void check_layernorm_bwd(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 14);
    for (int s = 0; s < COUNT(LN_NS); s++) {
        int n = LN_NS[s];
        int64_t rows = 9, ld = n + 3, total = rows * ld + 1;
        float *x = ln_input(&rng, rows, n, ld);
        float *dy = dm_alloc((size_t)total * sizeof(float));
        fill_value(dy, total, SENTINEL);
        for (int64_t i = 0; i < rows; i++) fill_uniform(&rng, dy + 1 + i * ld, n, -2, 2);
        float *gamma = dm_alloc((size_t)n * sizeof(float)), *dg0 = dm_alloc((size_t)n * sizeof(float));
        float *db0 = dm_alloc((size_t)n * sizeof(float));
        fill_uniform(&rng, gamma, n, 0.5f, 1.5f);
        fill_uniform(&rng, dg0, n, -1, 1);
        fill_uniform(&rng, db0, n, -1, 1);
        float *mean = dm_alloc((size_t)rows * sizeof(float)), *rstd = dm_alloc((size_t)rows * sizeof(float));
        float *y = dm_alloc((size_t)total * sizeof(float));
        dm_kernels_ref.layernorm_fwd(x, rows, n, ld, gamma, NULL, 1e-5f, y, ld, mean, rstd);
        float *want = dm_alloc((size_t)total * sizeof(float)), *got = dm_alloc((size_t)total * sizeof(float));
        float *dgw = dm_alloc((size_t)(n + 1) * sizeof(float)), *dgg = dm_alloc((size_t)(n + 1) * sizeof(float));
        float *dbw = dm_alloc((size_t)(n + 1) * sizeof(float)), *dbg = dm_alloc((size_t)(n + 1) * sizeof(float));
        for (int opt = 0; opt < 8; opt++) {
            /* bit 0: gamma, bit 1: dgamma/dbeta, bit 2: in place (dx == dy); dy and dx
             * start one float past alignment (x stays aligned: a different offset) */
            const float *ga = opt & 1 ? gamma : NULL;
            int acc = opt & 2, inplace = opt & 4;
            memcpy(dgw, dg0, (size_t)n * sizeof(float));
            memcpy(dgg, dg0, (size_t)n * sizeof(float));
            memcpy(dbw, db0, (size_t)n * sizeof(float));
            memcpy(dbg, db0, (size_t)n * sizeof(float));
            dgw[n] = dgg[n] = dbw[n] = dbg[n] = SENTINEL;
            if (inplace) {
                memcpy(want, dy, (size_t)total * sizeof(float));
                memcpy(got, dy, (size_t)total * sizeof(float));
            } else {
                fill_value(want, total, SENTINEL);
                fill_value(got, total, SENTINEL);
            }
            dm_kernels_ref.layernorm_bwd(x, mean, rstd, inplace ? want + 1 : dy + 1, rows, n, ld, ga,
                                         want + 1, acc ? dgw : NULL, acc ? dbw : NULL);
            kt->layernorm_bwd(x, mean, rstd, inplace ? got + 1 : dy + 1, rows, n, ld, ga, got + 1,
                              acc ? dgg : NULL, acc ? dbg : NULL);
            double err = 0;
            for (int64_t i = 0; i < rows; i++) {
                /* dy is the same for ref and kt; in place it was overwritten, use the copy */
                double sc = ln_dx_scale(dy + 1 + i * ld, n, ga, rstd[i]);
                double e = block_relerr(got + 1 + i * ld, want + 1 + i * ld, 1, n, n, sc);
                if (e > err) err = e;
            }
            int gaps = 0;
            for (int64_t j = 0; j < total; j++) gaps += (want[j] == SENTINEL) != (got[j] == SENTINEL);
            /* dgamma/dbeta: accumulated when given, untouched (bitwise) otherwise,
             * nothing written past n */
            double eg = dm_test_relerr(dgg, dgw, n), eb = dm_test_relerr(dbg, dbw, n);
            int kept = (acc || (same_bits(dgg, dg0, n) && same_bits(dbg, db0, n))) && dgg[n] == SENTINEL &&
                       dbg[n] == SENTINEL;
            CHECK(t, err <= TOL && gaps == 0 && eg <= TOL && eb <= TOL && kept,
                  "%s n=%d opt=%d: dx relerr %g, %d gap diffs, dgamma %g, dbeta %g, kept %d",
                  dm_isa_name(kt->isa), n, opt, err, gaps, eg, eb, kept);
        }
        dm_free(x);
        dm_free(dy);
        dm_free(y);
        dm_free(gamma);
        dm_free(dg0);
        dm_free(db0);
        dm_free(mean);
        dm_free(rstd);
        dm_free(want);
        dm_free(got);
        dm_free(dgw);
        dm_free(dgg);
        dm_free(dbw);
        dm_free(dbg);
    }
}

static void test_kernel_avx2_layernorm_bwd(dm_t *t) { check_layernorm_bwd(t, &dm_kernels_avx2); }
static void test_kernel_avx512_layernorm_bwd(dm_t *t) { check_layernorm_bwd(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- silu_mul_bwd */

static double silu_d(double g) { return g / (1 + exp(-g)); }

/* The reference against values by hand and central finite differences of
 * dout * silu(g) * u (in double) over the whole input range; in place gives
 * bitwise the same. */
static void test_kernel_ref_silu_mul_bwd(dm_t *t)
{
    /* by hand, g = 1, u = 2, dout = 3: s = 0.7310586, silu' = s + s(1-s) = 0.9276705 */
    float gu1[2] = {1, 2}, d1 = 3, dgu1[2];
    dm_kernels_ref.silu_mul_bwd(gu1, &d1, 1, 1, 2, 1, dgu1);
    CHECK(t, fabsf(dgu1[0] - 5.5660230f) <= 1e-5f && fabsf(dgu1[1] - 2.1931758f) <= 1e-5f,
          "by hand: %.8g %.8g want 5.566023 2.1931758", dgu1[0], dgu1[1]);

    dm_rng rng;
    dm_rng_seed(&rng, 15);
    for (int s = 0; s < COUNT(SILU_HS); s++) {
        int h = SILU_HS[s];
        int64_t rows = 3, ld = 2 * h + 1, ldd = h + 2, total = rows * ld;
        float *gu = silu_input(&rng, rows, h, ld);
        float *dout = dm_alloc((size_t)(rows * ldd) * sizeof(float));
        fill_value(dout, rows * ldd, NAN); /* gaps: a read past the row shows up */
        for (int64_t i = 0; i < rows; i++) fill_uniform(&rng, dout + i * ldd, h, -3, 3);
        float *dgu = dm_alloc((size_t)total * sizeof(float)), *inpl = dm_alloc((size_t)total * sizeof(float));
        fill_value(dgu, total, SENTINEL);
        dm_kernels_ref.silu_mul_bwd(gu, dout, rows, h, ld, ldd, dgu);
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < h; j++) {
                double g = gu[i * ld + j], u = gu[i * ld + h + j], d = dout[i * ldd + j];
                double eg = 1e-6 * (fabs(g) > 1 ? fabs(g) : 1);
                double fdg = d * u * (silu_d(g + eg) - silu_d(g - eg)) / (2 * eg);
                double fdu = d * silu_d(g); /* linear in u: exact */
                double got_g = dgu[i * ld + j], got_u = dgu[i * ld + h + j];
                CHECK(t, fabs(got_g - fdg) <= 2e-6 * (1 + fabs(fdg)) && fabs(got_u - fdu) <= 1e-6 * (1e-30 + fabs(fdu)),
                      "h=%d [%lld][%d] g=%g u=%g d=%g: dg %g want %g, du %g want %g", h, (long long)i, j,
                      g, u, d, got_g, fdg, got_u, fdu);
            }
        for (int64_t i = 0; i < rows; i++)
            CHECK(t, dgu[i * ld + 2 * h] == SENTINEL, "h=%d: gap of row %lld written", h, (long long)i);
        memcpy(inpl, gu, (size_t)total * sizeof(float));
        dm_kernels_ref.silu_mul_bwd(inpl, dout, rows, h, ld, ldd, inpl);
        int diff = 0;
        for (int64_t i = 0; i < rows; i++) diff += !same_bits(inpl + i * ld, dgu + i * ld, 2 * h);
        CHECK(t, diff == 0, "h=%d: in place differs in %d rows", h, diff);
        dm_free(gu);
        dm_free(dout);
        dm_free(dgu);
        dm_free(inpl);
    }
}

static void check_silu_mul_bwd(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 16);
    for (int s = 0; s < COUNT(SILU_HS); s++) {
        int h = SILU_HS[s];
        int64_t rows = 5, ld = 2 * h + 3, ldd = h + 1, total = rows * ld + 1;
        float *gu = silu_input(&rng, rows, h, ld);
        float *dbuf = dm_alloc((size_t)(rows * ldd + 1) * sizeof(float));
        fill_value(dbuf, rows * ldd + 1, NAN);
        for (int64_t i = 0; i < rows; i++) fill_uniform(&rng, dbuf + 1 + i * ldd, h, -3, 3);
        float *want = dm_alloc((size_t)total * sizeof(float)), *got = dm_alloc((size_t)total * sizeof(float));
        for (int mode = 0; mode < 2; mode++) {
            /* 0: out of place, dgu one float past alignment; 1: in place (dgu == gu) */
            if (mode == 0) {
                fill_value(want, total, SENTINEL);
                fill_value(got, total, SENTINEL);
                dm_kernels_ref.silu_mul_bwd(gu, dbuf + 1, rows, h, ld, ldd, want + 1);
                kt->silu_mul_bwd(gu, dbuf + 1, rows, h, ld, ldd, got + 1);
            } else {
                memcpy(want, gu, (size_t)(rows * ld) * sizeof(float));
                memcpy(got, gu, (size_t)(rows * ld) * sizeof(float));
                want[total - 1] = got[total - 1] = SENTINEL;
                dm_kernels_ref.silu_mul_bwd(want, dbuf + 1, rows, h, ld, ldd, want);
                kt->silu_mul_bwd(got, dbuf + 1, rows, h, ld, ldd, got);
            }
            /* each half of each row on its own scale; the rest of the buffer identical */
            double err = 0;
            for (int64_t i = 0; i < rows; i++)
                for (int half = 0; half < 2; half++) {
                    int64_t o = (mode == 0) + i * ld + half * h;
                    double e = dm_test_relerr(got + o, want + o, h);
                    if (e > err) err = e;
                }
            int64_t other = 0;
            for (int64_t j = 0; j < total; j++) {
                int64_t p = j - (mode == 0);
                int inside = p >= 0 && p / ld < rows && p % ld < 2 * h;
                if (!inside) other += !same_bits(got + j, want + j, 1);
            }
            CHECK(t, err <= TOL && other == 0, "%s h=%d mode=%d: relerr %g, %lld other floats differ",
                  dm_isa_name(kt->isa), h, mode, err, (long long)other);
        }
        dm_free(gu);
        dm_free(dbuf);
        dm_free(want);
        dm_free(got);
    }
}

static void test_kernel_avx2_silu_mul_bwd(dm_t *t) { check_silu_mul_bwd(t, &dm_kernels_avx2); }
static void test_kernel_avx512_silu_mul_bwd(dm_t *t) { check_silu_mul_bwd(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- gemm_tn problems */

typedef struct tncase {
    int64_t M;
    int N, K;
    int a_idx, b_idx, scale; /* rows through index lists, per-row scale */
    int unaligned;           /* A, B, C start one float past 64-byte alignment */
    int range;               /* 0: [0, N)  1: [0, n1)  2: [n0, N)  3: [n0, n1), maybe empty */
} tncase;

typedef struct tndata {
    tncase c;
    int n0, n1;
    int64_t a_rows, b_rows, lda, ldb, ldc;
    float *A_buf, *B_buf;  /* NaN in the gaps */
    float *C0_buf;         /* the initial C: N rows of random values, sentinel gaps */
    float *scale;          /* [M] or NULL */
    int32_t *a_idx, *b_idx;
} tndata;

static void tndata_init(tndata *d, const tncase *c, uint64_t seed)
{
    dm_rng rng;
    dm_rng_seed(&rng, seed);
    memset(d, 0, sizeof *d);
    d->c = *c;
    int64_t M = c->M;
    d->a_rows = c->a_idx ? M + 5 : M;
    d->b_rows = c->b_idx ? M + 3 : M;
    d->lda = c->N + 1 + rand_below(&rng, 4);
    d->ldb = c->K + 1 + rand_below(&rng, 4);
    d->ldc = c->K + 1 + rand_below(&rng, 4);
    d->A_buf = dm_alloc((size_t)(d->a_rows * d->lda + 1) * sizeof(float));
    fill_value(d->A_buf, d->a_rows * d->lda + 1, NAN);
    for (int64_t i = 0; i < d->a_rows; i++) fill_uniform(&rng, d->A_buf + c->unaligned + i * d->lda, c->N, -1, 1);
    d->B_buf = dm_alloc((size_t)(d->b_rows * d->ldb + 1) * sizeof(float));
    fill_value(d->B_buf, d->b_rows * d->ldb + 1, NAN);
    for (int64_t i = 0; i < d->b_rows; i++) fill_uniform(&rng, d->B_buf + c->unaligned + i * d->ldb, c->K, -1, 1);
    d->C0_buf = dm_alloc((size_t)(c->N * d->ldc + 1) * sizeof(float));
    fill_value(d->C0_buf, c->N * d->ldc + 1, SENTINEL);
    for (int n = 0; n < c->N; n++) fill_uniform(&rng, d->C0_buf + c->unaligned + n * d->ldc, c->K, -1, 1);
    if (c->scale) {
        d->scale = dm_alloc((size_t)(M ? M : 1) * sizeof(float));
        fill_uniform(&rng, d->scale, M, -2, 2);
    }
    if (c->a_idx) d->a_idx = random_gather(&rng, M, d->a_rows);
    if (c->b_idx) d->b_idx = random_gather(&rng, M, d->b_rows);
    d->n0 = c->range >= 2 ? rand_below(&rng, c->N + (c->range == 3)) : 0;
    d->n1 = c->range == 1 || c->range == 3 ? d->n0 + rand_below(&rng, c->N - d->n0 + 1) : c->N;
    if (c->range == 1 && d->n1 == 0) d->n1 = 1;
}

static void tndata_free(tndata *d)
{
    dm_free(d->A_buf);
    dm_free(d->B_buf);
    dm_free(d->C0_buf);
    dm_free(d->scale);
    free(d->a_idx);
    free(d->b_idx);
}

static int64_t tn_c_floats(const tndata *d) { return (int64_t)d->c.N * d->ldc + 1; }

/* 1: tn_call runs gemm_tn_bf16 (with its work) in place of gemm_tn. */
static int tn_bf16;

/* C_buf += the problem's rows [n0, n1) on table kt. */
static void tn_call(const dm_kernels *kt, const tndata *d, float *C_buf, int n0, int n1)
{
    int u = d->c.unaligned;
    void *work = tn_bf16 ? dm_alloc(dm_gemm_tn_bf16_work(d->c.M, d->c.N, d->c.K)) : NULL;
    dm_gemm_tn g = {
        .M = d->c.M, .N = d->c.N, .K = d->c.K,
        .A = d->A_buf + u, .lda = d->lda, .a_idx = d->a_idx,
        .B = d->B_buf + u, .ldb = d->ldb, .b_idx = d->b_idx,
        .scale = d->scale,
        .C = C_buf + u, .ldc = d->ldc,
        .n0 = n0, .n1 = n1, .work = work,
    };
    if (tn_bf16) kt->gemm_tn_bf16(&g);
    else kt->gemm_tn(&g);
    dm_free(work);
}

/* A fresh copy of C0 with the problem's range run on kt. Free with dm_free. */
static float *tn_run(const dm_kernels *kt, const tndata *d)
{
    float *C = dm_alloc((size_t)tn_c_floats(d) * sizeof(float));
    memcpy(C, d->C0_buf, (size_t)tn_c_floats(d) * sizeof(float));
    tn_call(kt, d, C, d->n0, d->n1);
    return C;
}

/* Floats of the C buffer outside rows [n0, n1) x columns [0, K) that differ from C0. */
static int64_t tn_stray(const tndata *d, const float *C_buf)
{
    int64_t stray = 0, total = tn_c_floats(d);
    for (int64_t j = 0; j < total; j++) {
        int64_t p = j - d->c.unaligned, n = p / d->ldc;
        int inside = p >= 0 && n >= d->n0 && n < d->n1 && p % d->ldc < d->c.K;
        if (!inside) stray += !same_bits(C_buf + j, d->C0_buf + j, 1);
    }
    return stray;
}

static const char *tncase_str(const tndata *d, char *buf, size_t n)
{
    const tncase *c = &d->c;
    snprintf(buf, n, "M=%lld N=%d K=%d a_idx=%d b_idx=%d scale=%d unaligned=%d n=[%d,%d)", (long long)c->M,
             c->N, c->K, c->a_idx, c->b_idx, c->scale, c->unaligned, d->n0, d->n1);
    return buf;
}

static void tn_set_options(tncase *c, unsigned bits)
{
    c->a_idx = bits & 1;
    c->b_idx = (bits >> 1) & 1;
    c->scale = (bits >> 2) & 1;
    c->unaligned = (bits >> 3) & 1;
    c->range = (bits >> 4) & 3;
}

static const int TN_NS[] = {1, 3, 8, 17, 32, 33, 63, 256, 512};
static const int TN_KS[] = {1, 3, 8, 17, 32, 33, 63, 256, 512};
#define TN_MAX_MACS (1 << 18) /* cross-product cases above this are skipped (ASan run time) */

static const tncase tn_big_cases[] = {
    {.M = 257, .N = 100, .K = 90, .a_idx = 1, .b_idx = 1, .scale = 1},
    {.M = 63, .N = 512, .K = 50, .unaligned = 1, .range = 3},
    /* several chunks of rows in the SIMD tables (N = 784: 167 rows a chunk) */
    {.M = 400, .N = 784, .K = 20, .a_idx = 1, .scale = 1, .range = 3},
};

/* Calls fn on every problem: the size cross-product with options drawn per
 * size, all 64 option sets at two awkward sizes, every row count of a tile
 * (N = 1..25) with a partial range, M = 0 and the big cases. */
static void for_each_tn_case(dm_t *t, void (*fn)(dm_t *, const tncase *, uint64_t), int cross_stride)
{
    dm_rng rng;
    dm_rng_seed(&rng, 77);
    uint64_t seed = 1000;
    int idx = 0;
    for (int mi = 0; mi < COUNT(Ms); mi++)
        for (int ni = 0; ni < COUNT(TN_NS); ni++)
            for (int ki = 0; ki < COUNT(TN_KS); ki++) {
                tncase c = {.M = Ms[mi], .N = TN_NS[ni], .K = TN_KS[ki]};
                tn_set_options(&c, (unsigned)dm_rng_u64(&rng));
                if (c.M * c.N * c.K > TN_MAX_MACS || idx++ % cross_stride) continue;
                fn(t, &c, seed++);
            }
    static const tncase sweep_sizes[] = {{.M = 13, .N = 29, .K = 47}, {.M = 5, .N = 14, .K = 16}};
    for (int s = 0; s < COUNT(sweep_sizes); s++)
        for (unsigned bits = 0; bits < 64; bits++) {
            tncase c = sweep_sizes[s];
            tn_set_options(&c, bits);
            fn(t, &c, seed++);
        }
    for (int n = 1; n <= 25; n++) {
        tncase c = {.M = 3 + n % 5, .N = n, .K = 9 + 4 * n};
        tn_set_options(&c, (unsigned)dm_rng_u64(&rng));
        fn(t, &c, seed++);
    }
    tncase m0 = {.M = 0, .N = 19, .K = 40, .scale = 1, .a_idx = 1};
    fn(t, &m0, seed++);
    for (int b = 0; b < COUNT(tn_big_cases); b++) fn(t, &tn_big_cases[b], seed++);
}

/* ---------------------------------------------------------------- gemm_tn tests */

/* The definition in the interface comment, in double, written independently. */
static void tn_ref_vs_naive_case(dm_t *t, const tncase *c, uint64_t seed)
{
    tndata d;
    tndata_init(&d, c, seed);
    float *C_buf = tn_run(&dm_kernels_ref, &d);
    const float *A = d.A_buf + c->unaligned, *B = d.B_buf + c->unaligned;
    const float *C0 = d.C0_buf + c->unaligned, *C = C_buf + c->unaligned;
    double err = 0, den = 1e-30;
    for (int n = d.n0; n < d.n1; n++)
        for (int k = 0; k < c->K; k++) {
            double want = C0[n * d.ldc + k];
            for (int64_t i = 0; i < c->M; i++) {
                int64_t ar = d.a_idx ? d.a_idx[i] : i, br = d.b_idx ? d.b_idx[i] : i;
                want += (d.scale ? d.scale[i] : 1.0) * A[ar * d.lda + n] * B[br * d.ldb + k];
            }
            double e = fabs(C[n * d.ldc + k] - want);
            if (e != e) e = INFINITY;
            if (e > err) err = e;
            if (fabs(want) > den) den = fabs(want);
        }
    char buf[256];
    CHECK(t, err / den <= 1e-6, "%s: relerr %g", tncase_str(&d, buf, sizeof buf), err / den);
    int64_t stray = tn_stray(&d, C_buf);
    CHECK(t, stray == 0, "%s: %lld floats changed outside the range", tncase_str(&d, buf, sizeof buf),
          (long long)stray);
    dm_free(C_buf);
    tndata_free(&d);
}

/* Values by hand: the roles of A (rows n) and B (columns k) cannot be swapped unnoticed. */
static void test_kernel_ref_gemm_tn_known(dm_t *t)
{
    const float A[3 * 2] = {1, 2, 3, 4, 5, 6};        /* [M=3, N=2]: dY */
    const float B[3 * 3] = {1, 0, -1, 2, 1, 0, 0, 1, 1}; /* [M=3, K=3]: X */
    const float scale[3] = {1, -1, 2};
    const int32_t a_idx[3] = {2, 0, 1}, b_idx[3] = {0, 0, 2};
    float C[2 * 3] = {10, 10, 10, 10, 10, 10};
    /* plain: C[n][k] += sum_i A[i][n] B[i][k]
     *   n=0: 1*(1,0,-1) + 3*(2,1,0) + 5*(0,1,1) = (7, 8, 4)
     *   n=1: 2*(1,0,-1) + 4*(2,1,0) + 6*(0,1,1) = (10, 10, 4) */
    dm_gemm_tn g = {.M = 3, .N = 2, .K = 3, .A = A, .lda = 2, .B = B, .ldb = 3, .C = C, .ldc = 3, .n0 = 0, .n1 = 2};
    dm_kernels_ref.gemm_tn(&g);
    const float plain[6] = {17, 18, 14, 20, 20, 14};
    for (int j = 0; j < 6; j++) CHECK(t, C[j] == plain[j], "C[%d] = %g, want %g", j, C[j], plain[j]);
    /* gathered and scaled, row 1 only:
     *   i=0: s=1, a=A[2]=(5,6), b=B[0]=(1,0,-1); i=1: s=-1, a=A[0]=(1,2), b=B[0];
     *   i=2: s=2, a=A[1]=(3,4), b=B[2]=(0,1,1)
     *   n=1: 6*(1,0,-1) - 2*(1,0,-1) + 8*(0,1,1) = (4, 8, 4) */
    dm_gemm_tn h = {.M = 3, .N = 2, .K = 3, .A = A, .lda = 2, .a_idx = a_idx, .B = B, .ldb = 3,
                    .b_idx = b_idx, .scale = scale, .C = C, .ldc = 3, .n0 = 1, .n1 = 2};
    dm_kernels_ref.gemm_tn(&h);
    const float want[6] = {17, 18, 14, 24, 28, 18};
    for (int j = 0; j < 6; j++) CHECK(t, C[j] == want[j], "C[%d] = %g, want %g", j, C[j], want[j]);
}

static void test_kernel_ref_gemm_tn_naive(dm_t *t) { for_each_tn_case(t, tn_ref_vs_naive_case, 2); }

static void tn_table_vs_ref_case(dm_t *t, const dm_kernels *kt, const tncase *c, uint64_t seed)
{
    tndata d;
    tndata_init(&d, c, seed);
    float *want = tn_run(&dm_kernels_ref, &d), *got = tn_run(kt, &d);
    int64_t o = c->unaligned + (int64_t)d.n0 * d.ldc;
    double err = block_relerr(got + o, want + o, d.n1 - d.n0, c->K, d.ldc, 0);
    char buf[256];
    CHECK(t, err <= TOL, "%s: %s: relerr %g", dm_isa_name(kt->isa), tncase_str(&d, buf, sizeof buf), err);
    int64_t stray = tn_stray(&d, got);
    CHECK(t, stray == 0, "%s: %s: %lld floats changed outside the range", dm_isa_name(kt->isa),
          tncase_str(&d, buf, sizeof buf), (long long)stray);
    dm_free(want);
    dm_free(got);
    tndata_free(&d);
}

static void tn_avx2_case(dm_t *t, const tncase *c, uint64_t seed) { tn_table_vs_ref_case(t, &dm_kernels_avx2, c, seed); }
static void tn_avx512_case(dm_t *t, const tncase *c, uint64_t seed) { tn_table_vs_ref_case(t, &dm_kernels_avx512, c, seed); }

static void test_kernel_avx2_gemm_tn(dm_t *t) { for_each_tn_case(t, tn_avx2_case, 1); }
static void test_kernel_avx512_gemm_tn(dm_t *t) { for_each_tn_case(t, tn_avx512_case, 1); }

/* ---------------------------------------------------------------- gemm_tn_bf16 */

/* The bf16 weight gradient of every table against the reference's, with
 * subnormals among the operands (vdpbf16ps's conversion flushes them; the
 * kernels must round them as dm_f32_to_bf16). The AVX-512 table also through
 * the rounded-copies path it takes on a CPU without AVX512_BF16. */
static void emul512_tn_bf16(const dm_gemm_tn *g) { dm_gemm_tn_bf16_emul(&dm_kernels_avx512, g); }
static dm_kernels emul512;

static void tn_bf16_case(dm_t *t, const dm_kernels *kt, const tncase *c, uint64_t seed)
{
    tndata d;
    tndata_init(&d, c, seed);
    for (int64_t i = 0; i < d.a_rows; i += 3) d.A_buf[c->unaligned + i * d.lda] = 3e-39f;
    for (int64_t i = 1; i < d.b_rows; i += 4) d.B_buf[c->unaligned + i * d.ldb + c->K - 1] = -5e-40f;
    tn_bf16 = 1;
    float *want = tn_run(&dm_kernels_ref, &d), *got = tn_run(kt, &d);
    tn_bf16 = 0;
    int64_t o = c->unaligned + (int64_t)d.n0 * d.ldc;
    double err = block_relerr(got + o, want + o, d.n1 - d.n0, c->K, d.ldc, 0);
    char buf[256];
    CHECK(t, err <= TOL, "bf16 %s: %s: relerr %g", dm_isa_name(kt->isa), tncase_str(&d, buf, sizeof buf), err);
    CHECK(t, tn_stray(&d, got) == 0, "bf16 %s: %s: floats changed outside the range", dm_isa_name(kt->isa),
          tncase_str(&d, buf, sizeof buf));
    dm_free(want);
    dm_free(got);
    tndata_free(&d);
}

static void tn_bf16_avx2_case(dm_t *t, const tncase *c, uint64_t seed) { tn_bf16_case(t, &dm_kernels_avx2, c, seed); }
static void tn_bf16_avx512_case(dm_t *t, const tncase *c, uint64_t seed)
{
    tn_bf16_case(t, &dm_kernels_avx512, c, seed);
    emul512 = dm_kernels_avx512;
    emul512.gemm_tn_bf16 = emul512_tn_bf16;
    tn_bf16_case(t, &emul512, c, seed);
}

static void test_kernel_avx2_gemm_tn_bf16(dm_t *t) { for_each_tn_case(t, tn_bf16_avx2_case, 3); }
static void test_kernel_avx512_gemm_tn_bf16(dm_t *t) { for_each_tn_case(t, tn_bf16_avx512_case, 3); }

/* The reference's bf16 GEMM is gemm_tn on operands rounded to bf16 (no
 * scale: then both sum the same exact products in the same order), bit for
 * bit; and it differs from gemm_tn on the unrounded ones. */
static void test_kernel_ref_gemm_tn_bf16(dm_t *t)
{
    tncase c = {.M = 37, .N = 29, .K = 21, .a_idx = 1, .b_idx = 1};
    tndata d;
    tndata_init(&d, &c, 5);
    tn_bf16 = 1;
    float *bf = tn_run(&dm_kernels_ref, &d);
    tn_bf16 = 0;
    float *f32 = tn_run(&dm_kernels_ref, &d);
    for (int64_t i = 0; i < d.a_rows * d.lda + 1; i++) d.A_buf[i] = dm_bf16_to_f32(dm_f32_to_bf16(d.A_buf[i]));
    for (int64_t i = 0; i < d.b_rows * d.ldb + 1; i++) d.B_buf[i] = dm_bf16_to_f32(dm_f32_to_bf16(d.B_buf[i]));
    float *rounded = tn_run(&dm_kernels_ref, &d);
    int64_t total = tn_c_floats(&d);
    CHECK(t, same_bits(bf, rounded, total), "ref gemm_tn_bf16 is not gemm_tn on rounded operands");
    CHECK(t, !same_bits(bf, f32, total), "ref gemm_tn_bf16 equals the fp32 gemm_tn: nothing was rounded");
    dm_free(bf);
    dm_free(f32);
    dm_free(rounded);
    tndata_free(&d);
}

/* Splitting [0, N) into ranges (as threads do) gives bitwise the same C as
 * one call, and a second run gives bitwise the same again. */
static void check_gemm_tn_split(dm_t *t, const dm_kernels *kt, const tncase *c, uint64_t seed)
{
    tndata d;
    tndata_init(&d, c, seed);
    dm_rng rng;
    dm_rng_seed(&rng, seed);
    int64_t total = tn_c_floats(&d);
    float *one = tn_run(kt, &d), *again = tn_run(kt, &d);
    float *split = dm_alloc((size_t)total * sizeof(float));
    char buf[256];
    CHECK(t, same_bits(again, one, total), "%s: %s: a second run differs", dm_isa_name(kt->isa),
          tncase_str(&d, buf, sizeof buf));
    /* cuts at 1, at an odd point, at N - 1, and three random pieces */
    int cuts[4][2] = {{1, 1}, {c->N / 2 + 1, c->N / 2 + 1}, {c->N - 1, c->N - 1}, {0, 0}};
    cuts[3][0] = 1 + rand_below(&rng, c->N - 1);
    cuts[3][1] = cuts[3][0] + rand_below(&rng, c->N - cuts[3][0]);
    for (int s = 0; s < 4; s++) {
        memcpy(split, d.C0_buf, (size_t)total * sizeof(float));
        /* the pieces in reverse order: the order of the calls must not matter either */
        tn_call(kt, &d, split, cuts[s][1], c->N);
        tn_call(kt, &d, split, cuts[s][0], cuts[s][1]);
        tn_call(kt, &d, split, 0, cuts[s][0]);
        CHECK(t, same_bits(split, one, total), "%s: %s: split at %d, %d differs", dm_isa_name(kt->isa),
              tncase_str(&d, buf, sizeof buf), cuts[s][0], cuts[s][1]);
    }
    dm_free(one);
    dm_free(again);
    dm_free(split);
    tndata_free(&d);
}

static void test_kernel_gemm_tn_split(dm_t *t)
{
    const tncase small = {.M = 37, .N = 29, .K = 21, .a_idx = 1, .b_idx = 1, .scale = 1};
    const tncase big[] = {
        {.M = 257, .N = 61, .K = 70, .a_idx = 1, .scale = 1, .unaligned = 1},
        /* several chunks of rows in the SIMD tables (N = 512: 256 rows a
         * chunk, N = 784: 167), which must not depend on the range */
        {.M = 600, .N = 512, .K = 19, .b_idx = 1},
        {.M = 400, .N = 784, .K = 19, .a_idx = 1, .scale = 1},
    };
    check_gemm_tn_split(t, &dm_kernels_ref, &small, 1);
    static const dm_isa isas[] = {DM_ISA_AVX2, DM_ISA_AVX512};
    for (int k = 0; k < COUNT(isas); k++) {
        if (!isa_supported(isas[k])) continue;
        const dm_kernels *kt = dm_kernels_for(isas[k]);
        check_gemm_tn_split(t, kt, &small, 2);
        for (int b = 0; b < COUNT(big); b++) check_gemm_tn_split(t, kt, &big[b], 3 + (uint64_t)b);
    }
}

/* ---------------------------------------------------------------- colsum */

static const int CS_NS[] = {1, 3, 8, 15, 16, 17, 33, 63, 64, 65, 129, 256, 512};

/* out[n] += sum_i s_i a_i[n] on table kt, compared with the double formula
 * (kt == &dm_kernels_ref) or with the reference. out has a sentinel on each side. */
static void colsum_case(dm_t *t, const dm_kernels *kt, int64_t M, int N, unsigned bits, uint64_t seed)
{
    dm_rng rng;
    dm_rng_seed(&rng, seed);
    int use_idx = bits & 1, use_scale = (bits >> 1) & 1, u = (bits >> 2) & 1;
    int64_t rows = use_idx ? M + 4 : M, lda = N + 1 + rand_below(&rng, 3);
    float *A_buf = dm_alloc((size_t)(rows * lda + 1) * sizeof(float));
    fill_value(A_buf, rows * lda + 1, NAN);
    for (int64_t i = 0; i < rows; i++) fill_uniform(&rng, A_buf + u + i * lda, N, -1, 1);
    float *scale = use_scale ? dm_alloc((size_t)(M ? M : 1) * sizeof(float)) : NULL;
    if (scale) fill_uniform(&rng, scale, M, -2, 2);
    int32_t *idx = use_idx ? random_gather(&rng, M, rows) : NULL;
    float *o0 = dm_alloc((size_t)(N + 3) * sizeof(float)), *ow = dm_alloc((size_t)(N + 3) * sizeof(float));
    float *og = dm_alloc((size_t)(N + 3) * sizeof(float));
    fill_value(o0, N + 3, SENTINEL);
    fill_uniform(&rng, o0 + 1 + u, N, -1, 1);
    memcpy(ow, o0, (size_t)(N + 3) * sizeof(float));
    memcpy(og, o0, (size_t)(N + 3) * sizeof(float));
    const float *A = A_buf + u;
    dm_kernels_ref.colsum(A, lda, idx, scale, M, N, ow + 1 + u);
    double err = 0;
    if (kt == &dm_kernels_ref) {
        double den = 1e-30;
        for (int n = 0; n < N; n++) {
            double w = o0[1 + u + n];
            for (int64_t i = 0; i < M; i++) w += (scale ? scale[i] : 1.0) * A[(idx ? idx[i] : i) * lda + n];
            double e = fabs(ow[1 + u + n] - w);
            if (e != e) e = INFINITY;
            if (e > err) err = e;
            if (fabs(w) > den) den = fabs(w);
        }
        err /= den;
        memcpy(og, ow, (size_t)(N + 3) * sizeof(float));
    } else {
        kt->colsum(A, lda, idx, scale, M, N, og + 1 + u);
        err = dm_test_relerr(og + 1 + u, ow + 1 + u, N);
    }
    int outside = !same_bits(og, o0, 1 + u) || !same_bits(og + 1 + u + N, o0 + 1 + u + N, 2 - u);
    CHECK(t, err <= (kt == &dm_kernels_ref ? 1e-6 : TOL) && !outside && (M > 0 || same_bits(og, o0, N + 3)),
          "%s M=%lld N=%d idx=%d scale=%d unaligned=%d: relerr %g, outside written %d", dm_isa_name(kt->isa),
          (long long)M, N, use_idx, use_scale, u, err, outside);
    dm_free(A_buf);
    dm_free(scale);
    free(idx);
    dm_free(o0);
    dm_free(ow);
    dm_free(og);
}

static void check_colsum(dm_t *t, const dm_kernels *kt)
{
    dm_rng rng;
    dm_rng_seed(&rng, 21);
    uint64_t seed = 1;
    for (int mi = 0; mi < COUNT(Ms); mi++)
        for (int ni = 0; ni < COUNT(CS_NS); ni++) colsum_case(t, kt, Ms[mi], CS_NS[ni], (unsigned)dm_rng_u64(&rng), seed++);
    for (unsigned bits = 0; bits < 8; bits++) colsum_case(t, kt, 19, 70, bits, seed++);
}

static void test_kernel_ref_colsum(dm_t *t)
{
    /* by hand: rows {1,2}, {3,4}, {5,6} gathered as 2, 0 with scales 2, -1 onto {10, 20} */
    const float A[6] = {1, 2, 3, 4, 5, 6}, scale[2] = {2, -1};
    const int32_t idx[2] = {2, 0};
    float out[2] = {10, 20};
    dm_kernels_ref.colsum(A, 2, idx, scale, 2, 2, out);
    CHECK(t, out[0] == 19 && out[1] == 30, "by hand: %g %g want 19 30", out[0], out[1]);
    check_colsum(t, &dm_kernels_ref);
}

static void test_kernel_avx2_colsum(dm_t *t) { check_colsum(t, &dm_kernels_avx2); }
static void test_kernel_avx512_colsum(dm_t *t) { check_colsum(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- adamw */

typedef struct adam_hp {
    float gscale, lr, b1, b2, eps, wd;
} adam_hp;

/* Three steps of the reference against PyTorch's AdamW (torch.optim.AdamW,
 * single-tensor path) written here in double:
 *   param.mul_(1 - lr * wd); exp_avg.lerp_(grad, 1 - b1);
 *   exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2);
 *   denom = exp_avg_sq.sqrt() / sqrt(bc2) + eps; param.addcdiv_(exp_avg, denom, value=-lr / bc1)
 * lr and wd are large so that a wrong order of decay and update shows. */
static void test_kernel_ref_adamw(dm_t *t)
{
    static const adam_hp hps[] = {
        {.gscale = 0.5f, .lr = 0.1f, .b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .wd = 0.3f},
        {.gscale = 1.0f, .lr = 0.05f, .b1 = 0.8f, .b2 = 0.95f, .eps = 1e-3f, .wd = 0.0f},
    };
    enum { n = 41 };
    dm_rng rng;
    dm_rng_seed(&rng, 31);
    for (int hpi = 0; hpi < COUNT(hps); hpi++) {
        const adam_hp *hp = &hps[hpi];
        float p[n], m[n], v[n], g[n];
        double pd[n], md[n], vd[n];
        fill_uniform(&rng, p, n, -2, 2);
        for (int j = 0; j < n; j++) {
            m[j] = v[j] = 0;
            pd[j] = p[j];
            md[j] = vd[j] = 0;
        }
        for (int step = 1; step <= 3; step++) {
            fill_uniform(&rng, g, n, -1, 1);
            g[3] = 0; /* a zero gradient: v = 0 at step 1, the update is 0 / eps */
            g[5] = step == 2 ? 0 : g[5];
            double bc1 = 1 - pow(hp->b1, step), bc2 = 1 - pow(hp->b2, step);
            dm_kernels_ref.adamw(p, g, m, v, n, hp->gscale, hp->lr, hp->b1, hp->b2, hp->eps, hp->wd,
                                 (float)bc1, (float)bc2);
            for (int j = 0; j < n; j++) {
                double gr = (double)g[j] * hp->gscale;
                pd[j] *= 1 - (double)hp->lr * hp->wd;
                md[j] += (gr - md[j]) * (1 - (double)hp->b1);
                vd[j] = vd[j] * hp->b2 + (1 - (double)hp->b2) * gr * gr;
                double denom = sqrt(vd[j]) / sqrt(bc2) + hp->eps;
                pd[j] -= (double)hp->lr / bc1 * md[j] / denom;
            }
            float pw[n], mw[n], vw[n];
            for (int j = 0; j < n; j++) {
                pw[j] = (float)pd[j];
                mw[j] = (float)md[j];
                vw[j] = (float)vd[j];
            }
            double ep = elem_relerr(p, pw, n, 1e-3), em = dm_test_relerr(m, mw, n), ev = dm_test_relerr(v, vw, n);
            CHECK(t, ep <= 1e-6 && em <= 1e-6 && ev <= 1e-6, "hp %d step %d: relerr p %g m %g v %g", hpi, step,
                  ep, em, ev);
        }
    }
    /* by hand, one step from m = v = 0 without decay: the update is lr * g / (|g| + eps) */
    float p1[2] = {1, 1}, g1[2] = {2, -0.5f}, m1[2] = {0, 0}, v1[2] = {0, 0};
    dm_kernels_ref.adamw(p1, g1, m1, v1, 2, 1, 0.01f, 0.9f, 0.99f, 0, 0, 0.1f, 0.01f);
    CHECK(t, fabsf(p1[0] - 0.99f) <= 1e-7f && fabsf(p1[1] - 1.01f) <= 1e-7f && fabsf(m1[0] - 0.2f) <= 1e-6f * 0.2f &&
             fabsf(v1[1] - 0.0025f) <= 1e-6f * 0.0025f,
          "by hand: p %.9g %.9g m %.9g v %.9g", p1[0], p1[1], m1[0], v1[1]);
}

static void check_adamw(dm_t *t, const dm_kernels *kt)
{
    static const int64_t ns[] = {0, 1, 7, 8, 15, 16, 17, 33, 100};
    const adam_hp hp = {.gscale = 0.7f, .lr = 0.01f, .b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .wd = 0.1f};
    dm_rng rng;
    dm_rng_seed(&rng, 32);
    for (int s = 0; s < COUNT(ns); s++)
        for (int u = 0; u < 2; u++) {
            int64_t n = ns[s], tot = n + 2;
            float *st[2][3], *g = dm_alloc((size_t)tot * sizeof(float)); /* [ref/kt][p, m, v] */
            fill_uniform(&rng, g, tot, -1, 1);
            for (int k = 0; k < 3; k++) {
                st[0][k] = dm_alloc((size_t)tot * sizeof(float));
                st[1][k] = dm_alloc((size_t)tot * sizeof(float));
                fill_value(st[0][k], tot, SENTINEL);
                if (k == 0) fill_uniform(&rng, st[0][k] + u, n, -1, 1);
                else fill_value(st[0][k] + u, n, 0);
                memcpy(st[1][k], st[0][k], (size_t)tot * sizeof(float));
            }
            double err = 0;
            for (int step = 1; step <= 3; step++) {
                float bc1 = 1 - powf(hp.b1, (float)step), bc2 = 1 - powf(hp.b2, (float)step);
                for (int r = 0; r < 2; r++)
                    (r ? kt : &dm_kernels_ref)->adamw(st[r][0] + u, g + 1 - u, st[r][1] + u, st[r][2] + u, n,
                                                      hp.gscale, hp.lr, hp.b1, hp.b2, hp.eps, hp.wd, bc1, bc2);
                for (int k = 0; k < 3; k++) {
                    double e = elem_relerr(st[1][k] + u, st[0][k] + u, n, 1e-30);
                    if (e > err) err = e;
                }
            }
            int outside = 0;
            for (int k = 0; k < 3; k++)
                for (int64_t j = 0; j < tot; j++)
                    if (j < u || j >= u + n) outside += st[1][k][j] != SENTINEL;
            CHECK(t, err <= 1e-6 && outside == 0, "%s n=%lld unaligned=%d: relerr %g, %d floats outside written",
                  dm_isa_name(kt->isa), (long long)n, u, err, outside);
            dm_free(g);
            for (int k = 0; k < 3; k++) {
                dm_free(st[0][k]);
                dm_free(st[1][k]);
            }
        }
}

static void test_kernel_avx2_adamw(dm_t *t) { check_adamw(t, &dm_kernels_avx2); }
static void test_kernel_avx512_adamw(dm_t *t) { check_adamw(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- combine, find_nonfinite */

/* combine on table kt against a by-hand loop (kt == ref) or the reference:
 * bitwise, with a sentinel after the last row; J slots of which k are weighted. */
static void combine_case(dm_t *t, const dm_kernels *kt, int64_t rows, int J, int k, int D, uint64_t seed)
{
    dm_rng rng;
    dm_rng_seed(&rng, seed);
    float *y = dm_alloc((size_t)(rows * J * D + 1) * sizeof(float));
    float *w = dm_alloc((size_t)(rows * k + 1) * sizeof(float));
    float *o0 = dm_alloc((size_t)(rows * D + 1) * sizeof(float)), *o1 = dm_alloc((size_t)(rows * D + 1) * sizeof(float));
    fill_uniform(&rng, y, rows * J * D, -3, 3);
    fill_uniform(&rng, w, rows * k, 0, 1);
    fill_value(o0, rows * D + 1, SENTINEL);
    fill_value(o1, rows * D + 1, SENTINEL);
    if (kt == &dm_kernels_ref) {
        for (int64_t r = 0; r < rows; r++)
            for (int d = 0; d < D; d++) {
                float acc = w[r * k] * y[r * J * D + d];
                for (int j = 1; j < J; j++) {
                    float p = (j < k ? w[r * k + j] : 1.0f) * y[(r * J + j) * D + d];
                    acc = acc + p;
                }
                o0[r * D + d] = acc;
            }
    } else {
        dm_kernels_ref.combine(y, w, rows, J, k, D, o0);
    }
    kt->combine(y, w, rows, J, k, D, o1);
    CHECK(t, same_bits(o0, o1, rows * D + 1), "%s combine rows=%lld J=%d k=%d D=%d: not bitwise the reference",
          dm_isa_name(kt->isa), (long long)rows, J, k, D);
    dm_free(y);
    dm_free(w);
    dm_free(o0);
    dm_free(o1);
}

/* find_nonfinite: all finite, then an Inf, -Inf or NaN at awkward places
 * (and a second one after it), against the reference's answer. */
static void check_find_nonfinite(dm_t *t, const dm_kernels *kt)
{
    static const int64_t ns[] = {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 200, 4097};
    const float bad[] = {INFINITY, -INFINITY, NAN};
    dm_rng rng;
    dm_rng_seed(&rng, 5);
    for (int ni = 0; ni < COUNT(ns); ni++) {
        int64_t n = ns[ni];
        float *x = dm_alloc((size_t)(n + 1) * sizeof(float));
        fill_uniform(&rng, x, n, -1e30f, 1e30f);
        x[n] = NAN;  /* past the end: never seen */
        CHECK(t, kt->find_nonfinite(x, n) == -1, "%s n=%lld finite: found %lld", dm_isa_name(kt->isa), (long long)n,
              (long long)kt->find_nonfinite(x, n));
        for (int64_t at = 0; at < n; at += 1 + at / 3) {
            float keep = x[at], keep2 = at + 5 < n ? x[at + 5] : 0;
            x[at] = bad[at % 3];
            if (at + 5 < n) x[at + 5] = NAN;
            int64_t want = dm_kernels_ref.find_nonfinite(x, n), got = kt->find_nonfinite(x, n);
            CHECK(t, want == at && got == at, "%s n=%lld bad at %lld: ref %lld got %lld", dm_isa_name(kt->isa),
                  (long long)n, (long long)at, (long long)want, (long long)got);
            x[at] = keep;
            if (at + 5 < n) x[at + 5] = keep2;
        }
        dm_free(x);
    }
}

/* sumsq: the reference against a long double sum (to 1e-14), every table
 * bitwise equal to the reference (one order, kernels.h), nothing read past n
 * (a NaN there); magnitudes spread so that a different order would show. */
static void check_sumsq(dm_t *t, const dm_kernels *kt)
{
    static const int64_t ns[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 4097, 262145};
    dm_rng rng;
    dm_rng_seed(&rng, 9);
    for (int ni = 0; ni < COUNT(ns); ni++) {
        int64_t n = ns[ni];
        float *x = dm_alloc((size_t)(n + 1) * sizeof(float));
        fill_uniform(&rng, x, n, -1, 1);
        for (int64_t i = 0; i < n; i += 3) x[i] *= 1e4f;
        for (int64_t i = 1; i < n; i += 7) x[i] *= 1e-20f;  /* squares below float's range: kept in double */
        x[n] = NAN;
        long double want = 0;
        for (int64_t i = 0; i < n; i++) want += (long double)x[i] * x[i];
        double ref = dm_kernels_ref.sumsq(x, n), got = kt->sumsq(x, n);
        CHECK(t, fabsl((long double)ref - want) <= 1e-14L * want, "ref sumsq n=%lld: %.17g, exact %.17Lg",
              (long long)n, ref, want);
        CHECK(t, memcmp(&ref, &got, sizeof ref) == 0, "%s sumsq n=%lld: %.17g, the reference %.17g",
              dm_isa_name(kt->isa), (long long)n, got, ref);
        dm_free(x);
    }
}

/* mse_grad: the reference's gradient against the formula by hand (bitwise)
 * and its sum against long double (1e-14); every table bitwise the
 * reference, both outputs; nothing written past n. */
static void check_mse_grad(dm_t *t, const dm_kernels *kt)
{
    static const int64_t ns[] = {0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 33, 100, 4097};
    dm_rng rng;
    dm_rng_seed(&rng, 11);
    for (int ni = 0; ni < COUNT(ns); ni++) {
        int64_t n = ns[ni];
        float *o = dm_alloc((size_t)(n + 1) * sizeof(float)), *y = dm_alloc((size_t)(n + 1) * sizeof(float));
        float *g0 = dm_alloc((size_t)(n + 1) * sizeof(float)), *g1 = dm_alloc((size_t)(n + 1) * sizeof(float));
        fill_uniform(&rng, o, n, -3, 3);
        fill_uniform(&rng, y, n, -3, 3);
        for (int64_t i = 0; i < n; i += 5) o[i] *= 1e5f;
        fill_value(g0, n + 1, SENTINEL);
        fill_value(g1, n + 1, SENTINEL);
        double c = 0.5 * 2.0, inv = 1.0 / (3.0 * (double)(n + 1));
        double ref = dm_kernels_ref.mse_grad(o, y, n, c, inv, g0), got = kt->mse_grad(o, y, n, c, inv, g1);
        long double want = 0;
        int hand = 1;
        for (int64_t i = 0; i < n; i++) {
            double d = (double)o[i] - (double)y[i];
            want += (long double)d * d;
            float gi = (float)((c * d) * inv);
            hand &= memcmp(&gi, &g0[i], sizeof gi) == 0;
        }
        CHECK(t, hand && fabsl((long double)ref - want) <= 1e-14L * (want + 1e-300L),
              "ref mse_grad n=%lld: gradient by hand %s, sum %.17g against %.17Lg", (long long)n, hand ? "ok" : "differs",
              ref, want);
        CHECK(t, memcmp(&ref, &got, sizeof ref) == 0 && same_bits(g0, g1, n + 1),
              "%s mse_grad n=%lld: not bitwise the reference (sum %.17g against %.17g)", dm_isa_name(kt->isa),
              (long long)n, got, ref);
        dm_free(o); dm_free(y); dm_free(g0); dm_free(g1);
    }
}

/* add_rows: the reference against its formula by hand, every table bitwise
 * the reference, with and without g, nothing written past D. */
static void check_add_rows(dm_t *t, const dm_kernels *kt)
{
    static const int Ds[] = {1, 5, 8, 15, 16, 17, 33, 512};
    dm_rng rng;
    dm_rng_seed(&rng, 13);
    for (int di = 0; di < COUNT(Ds); di++)
        for (int J = 1; J <= 4; J++)
            for (int withg = 0; withg < 2; withg++) {
                int D = Ds[di];
                float *y = dm_alloc((size_t)J * D * sizeof(float)), *g = dm_alloc((size_t)D * sizeof(float));
                float *o0 = dm_alloc((size_t)(D + 1) * sizeof(float)), *o1 = dm_alloc((size_t)(D + 1) * sizeof(float));
                float *oh = dm_alloc((size_t)(D + 1) * sizeof(float));
                fill_uniform(&rng, y, (int64_t)J * D, -3, 3);
                fill_uniform(&rng, g, D, -1, 1);
                fill_uniform(&rng, o0, D, -1e3f, 1e3f);
                o0[D] = SENTINEL;
                memcpy(o1, o0, (size_t)(D + 1) * sizeof(float));
                memcpy(oh, o0, (size_t)(D + 1) * sizeof(float));
                float s = 1.37f;
                for (int d = 0; d < D; d++) {
                    float v = oh[d];
                    for (int j = 0; j < J; j++) v = v + y[j * D + d];
                    if (withg) {
                        float p = s * g[d];
                        v = v + p;
                    }
                    oh[d] = v;
                }
                dm_kernels_ref.add_rows(o0, y, J, withg ? g : NULL, s, D);
                kt->add_rows(o1, y, J, withg ? g : NULL, s, D);
                CHECK(t, same_bits(o0, oh, D + 1) && same_bits(o0, o1, D + 1), "%s add_rows D=%d J=%d g=%d: not bitwise",
                      dm_isa_name(kt->isa), D, J, withg);
                dm_free(y); dm_free(g); dm_free(o0); dm_free(o1); dm_free(oh);
            }
}

static void check_combine(dm_t *t, const dm_kernels *kt)
{
    static const int Ds[] = {1, 5, 8, 15, 16, 17, 33, 512};
    uint64_t seed = 1;
    for (int di = 0; di < COUNT(Ds); di++) {
        combine_case(t, kt, 3, 2, 2, Ds[di], seed++);
        combine_case(t, kt, 1, 1, 1, Ds[di], seed++);
        combine_case(t, kt, 5, 4, 2, Ds[di], seed++);  /* two shared experts */
        combine_case(t, kt, 2, 3, 3, Ds[di], seed++);
    }
    combine_case(t, kt, 0, 2, 2, 16, seed++);
    check_find_nonfinite(t, kt);
    check_sumsq(t, kt);
    check_mse_grad(t, kt);
    check_add_rows(t, kt);
}

static void test_kernel_ref_combine(dm_t *t) { check_combine(t, &dm_kernels_ref); }
static void test_kernel_avx2_combine(dm_t *t) { check_combine(t, &dm_kernels_avx2); }
static void test_kernel_avx512_combine(dm_t *t) { check_combine(t, &dm_kernels_avx512); }

/* ---------------------------------------------------------------- tables */

static void check_table(dm_t *t, const dm_kernels *kt, dm_isa isa)
{
    CHECK(t, kt->isa == isa, "table for %s says %s", dm_isa_name(isa), dm_isa_name(kt->isa));
    CHECK(t, kt->layernorm && kt->silu_mul, "%s: missing entry", dm_isa_name(isa));
    CHECK(t, kt->layernorm_fwd && kt->layernorm_bwd && kt->silu_mul_bwd && kt->gemm_tn && kt->gemm_tn_bf16 && kt->colsum &&
             kt->adamw, "%s: missing training entry", dm_isa_name(isa));
    CHECK(t, kt->combine && kt->find_nonfinite && kt->sumsq && kt->mse_grad && kt->add_rows, "%s: missing combine entry", dm_isa_name(isa));
}

/* Every weight type has every entry, a kernel set per ISA that says its ISA,
 * parts that describe its file layout, and pack sizes that hold the matrix. */
static void test_wtype_table(dm_t *t)
{
    static const int sizes[][2] = {{1, 4}, {3, 16}, {8, 512}, {33, 8}, {512, 256}};
    for (int i = 0; i < DM_WT_COUNT; i++) {
        const dm_wtype *w = &dm_wtypes[i];
        CHECK(t, w->id == (dm_wtype_id)i && w->name && w->n_parts >= 1 && w->n_parts <= DM_WPARTS &&
                 w->k_multiple >= 1 && w->quantize_ref && w->dequantize_ref, "wtype %d: missing entry", i);
        CHECK(t, dm_wtype_by_name(w->name) == w, "%s: not found by name", w->name);
        CHECK(t, !strcmp(w->parts[0].suffix, ""), "%s: part 0 is not the weight itself", w->name);
        for (int j = 0; j < w->n_parts; j++)
            CHECK(t, w->parts[j].dtype && w->parts[j].elem >= 1 && w->parts[j].cols, "%s: part %d incomplete",
                  w->name, j);
        CHECK(t, w->kern[DM_ISA_REF] != NULL, "%s: no reference kernels", w->name);
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wkern *k = w->kern[isa];
            if (!k) continue;
            CHECK(t, k->isa == (dm_isa)isa && k->pack_size && k->pack && k->unpack && k->gemm &&
                     (w->id != DM_WT_F32 || k->pack_t) &&
                     (w->id == DM_WT_F32 || w->id == DM_WT_BF16 || (!k->pack_t && !k->quant_pack)),
                  "%s/%s: missing kernel (or pack_t on a type that does not train)", w->name, dm_isa_name((dm_isa)isa));
            for (int s = 0; s < COUNT(sizes); s++) {
                size_t need = dm_wtype_part_bytes(w, 0, sizes[s][0], sizes[s][1], 0);
                CHECK(t, k->pack_size(sizes[s][0], sizes[s][1], 0) >= need, "%s/%s: pack_size(%d, %d) too small",
                      w->name, dm_isa_name((dm_isa)isa), sizes[s][0], sizes[s][1]);
            }
        }
    }
    CHECK(t, dm_wtype_by_name("q3") == NULL, "unknown type found");
    CHECK(t, dm_wtype_by_name("nm24:f32") == &dm_wtypes[DM_WT_NM24], "nm24:f32 is nm24");
}

/* Test weights: uniform in [-1, 1) with a few larger and zero entries (and,
 * for a q8 group, a whole zero group). */
static void wtype_test_weights(float *W, int N, int K, uint64_t seed)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    fill_uniform(&r, W, (int64_t)N * K, -1, 1);
    for (int64_t j = 0; j < (int64_t)N * K; j += 13) W[j] *= 8.0f;
    for (int64_t j = 5; j < (int64_t)N * K; j += 29) W[j] = 0.0f;
    if (N > 1 && K >= 32) memset(W + K, 0, 32 * sizeof *W);
}

/* pack then unpack gives the file layout back byte for byte, for every type
 * and ISA at awkward sizes; and dequantize(quantize(W)) is within the type's
 * bound of W (exact for f32; per element: bf16 2^-8 |w|, f16 2^-11 |w| (normal
 * range), q8 half a step (scale / 2), nm24: the kept values as their value
 * type, the pruned ones 0 and no larger than the kept ones of their group). */
static void test_wtype_roundtrip(dm_t *t)
{
    static const int sizes[][2] = {{1, 4}, {3, 8}, {17, 36}, {32, 16}, {63, 68}, {8, 512}, {256, 4}, {5, 7}};
    static const int groups[] = {0, 32, 64};
    for (int i = 0; i < DM_WT_COUNT; i++)
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wtype *w = &dm_wtypes[i];
            if (!w->kern[isa] || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
            for (int s = 0; s < COUNT(sizes); s++)
                for (int gi = 0; gi < (w->grouped ? COUNT(groups) : 1); gi++) {
                    int N = sizes[s][0], K = sizes[s][1], G = groups[gi];
                    if (K % w->k_multiple) continue;
                    float *W = malloc((size_t)N * K * sizeof *W), *back = malloc((size_t)N * K * sizeof *back);
                    size_t fb = dm_wtype_file_bytes(w, N, K, G);
                    unsigned char *f1 = calloc(1, fb), *f2 = calloc(1, fb);
                    void *p1[DM_WPARTS], *p2[DM_WPARTS];
                    dm_wtype_split(w, N, K, G, f1, p1);
                    dm_wtype_split(w, N, K, G, f2, p2);
                    wtype_test_weights(W, N, K, (uint64_t)(N * 131 + K));
                    w->quantize_ref(W, N, K, G, p1);
                    void *data = malloc(dm_wmat_data_size(w, (dm_isa)isa, N, K, G));
                    dm_wmat m;
                    dm_wmat_bind(&m, w, (dm_isa)isa, N, K, G, data);
                    dm_wmat_pack(&m, (const void *const *)p1);
                    dm_wmat_unpack(&m, p2);
                    int same = 1;
                    for (int j = 0; j < w->n_parts; j++)
                        same &= !memcmp(p1[j], p2[j], dm_wtype_part_bytes(w, j, N, K, G));
                    CHECK(t, same, "%s/%s N=%d K=%d G=%d: unpack(pack(q)) != q", w->name,
                          dm_isa_name((dm_isa)isa), N, K, G);
                    w->dequantize_ref((const void *const *)p1, N, K, G, back);
                    int bad = 0;
                    for (int n = 0; n < N && !bad; n++) {
                        const float *wr = W + (int64_t)n * K, *br = back + (int64_t)n * K;
                        int Gs = G > 0 ? G : K;
                        for (int k = 0; k < K && !bad; k++) {
                            double e = fabs((double)br[k] - wr[k]), a = fabs(wr[k]);
                            double gmax = 0;  /* the q8 group's max |w| */
                            for (int j = k / Gs * Gs; j < K && j < (k / Gs + 1) * Gs; j++) gmax = fmax(gmax, fabs(wr[j]));
                            double rmax = 0;
                            for (int j = 0; j < K; j++) rmax = fmax(rmax, fabs(wr[j]));
                            switch (w->id) {
                            case DM_WT_F32: bad = e != 0; break;
                            case DM_WT_BF16: bad = e > a * 0x1p-8; break;
                            case DM_WT_F16: bad = e > a * 0x1p-11 + 0x1p-25; break;
                            case DM_WT_Q8: bad = e > gmax / 127 * 0.5000001; break;
                            default: {  /* nm24: br is 0 (pruned) or the kept value in its value type */
                                int g4 = k / 4 * 4, kept = 0;
                                for (int j = g4; j < g4 + 4; j++) kept += back[(int64_t)n * K + j] != 0 || j == k;
                                double tol = w->id == DM_WT_NM24 ? 0 : w->id == DM_WT_NM24_BF16 ? a * 0x1p-8
                                                                                                : rmax / 127 * 0.5000001;
                                if (br[k] == 0 && e > tol) {  /* pruned: no larger than a kept one of its group */
                                    int larger = 0;
                                    for (int j = g4; j < g4 + 4; j++) larger += fabs(wr[j]) >= a && j != k;
                                    bad = larger < 2;
                                } else {
                                    bad = e > tol;
                                }
                                (void)kept;
                            }
                            }
                            if (bad)
                                CHECK(t, 0, "%s N=%d K=%d G=%d: W[%d,%d] = %.9g comes back %.9g", w->name, N, K, G,
                                      n, k, wr[k], br[k]);
                        }
                    }
                    if (w->sparse)  /* at most 2 nonzeros per group of 4 */
                        for (int64_t j = 0; j < (int64_t)N * K; j += 4) {
                            int nz = (back[j] != 0) + (back[j + 1] != 0) + (back[j + 2] != 0) + (back[j + 3] != 0);
                            if (nz > 2) { CHECK(t, 0, "%s: group at %lld has %d nonzeros", w->name, (long long)j, nz); break; }
                        }
                    free(W); free(back); free(data); free(f1); free(f2);
                }
        }
}

/* Every type's GEMM on every ISA against its reference at awkward sizes, with
 * every option (index lists, bias, relu, residual, scale, unaligned); and the
 * reference against the plain fp32 GEMM of the dequantized weights, within
 * what the type's activation handling allows (wtype.h: f16 and nm24 use fp32
 * activations, bf16 rounds them to bf16, q8 quantizes them to int8 per row). */
static void test_wtype_gemm(dm_t *t)
{
    static const int64_t Ms[] = {0, 1, 2, 5, 12, 13, 33, 70};
    static const int Ns[] = {1, 7, 16, 17, 33, 64, 65, 130};
    static const int Ks[] = {4, 8, 12, 36, 64, 68, 132, 260, 516};
    static const int groups[] = {0, 32, 64, 128};
    int ran = 0;
    for (int wi = 1; wi < DM_WT_COUNT; wi++) {
        const dm_wtype *w = &dm_wtypes[wi];
        double sem_tol = w->id == DM_WT_BF16 ? 1.5e-2 : w->id == DM_WT_Q8 ? 3e-2 : 2e-6;
        for (int ci = 0; ci < 24; ci++) {
            gcase c = {.M = Ms[ci % COUNT(Ms)], .N = Ns[(ci * 3) % COUNT(Ns)], .K = Ks[(ci * 5) % COUNT(Ks)]};
            if (ci % 7 == 3) c.K += w->k_multiple == 4 ? 0 : 3;  /* K tails that are not a multiple of 4 */
            set_options(&c, (unsigned)(ci * 37 + wi));
            int G = w->grouped ? groups[ci % COUNT(groups)] : 0;
            gdata d;
            gdata_init(&d, &c, (uint64_t)(wi * 1000 + ci));
            for (int64_t j = 0; j < (int64_t)c.N * c.K; j += 11) d.B[j] *= 4.0f;
            char buf[200];
            case_str(&c, buf, sizeof buf);
            float *ref_buf = run_gemm_typed(DM_ISA_REF, w, G, &d);
            float *ref = gather_out(&d, ref_buf);
            CHECK(t, stray_writes(&d, ref_buf) == 0, "%s ref G=%d %s: wrote outside C", w->name, G, buf);
            /* the reference against fp32 on the dequantized weights */
            {
                gdata dq = d;
                void *file = dm_alloc(dm_wtype_file_bytes(w, c.N, c.K, G) + 64), *part[DM_WPARTS];
                dm_wtype_split(w, c.N, c.K, G, file, part);
                w->quantize_ref(d.B, c.N, c.K, G, part);
                dq.B = dm_alloc((size_t)c.N * c.K * sizeof(float) + 4);
                w->dequantize_ref((const void *const *)part, c.N, c.K, G, dq.B);
                double *want = naive_gemm(&dq);
                float *wantf = malloc((size_t)(c.M * c.N + 1) * sizeof *wantf);
                for (int64_t j = 0; j < c.M * c.N; j++) wantf[j] = (float)want[j];
                double e = dm_test_relerr(ref, wantf, c.M * c.N);
                CHECK(t, e <= sem_tol, "%s ref G=%d %s: %.3g from fp32 on the dequantized weights (bound %.3g)",
                      w->name, G, buf, e, sem_tol);
                free(want); free(wantf); dm_free(dq.B); dm_free(file);
            }
            for (int isa = DM_ISA_REF + 1; isa < DM_ISA_COUNT; isa++) {
                const dm_wkern *k = dm_wtype_kern(w, (dm_isa)isa);
                if (k->isa != (dm_isa)isa || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
                float *got_buf = run_gemm_typed((dm_isa)isa, w, G, &d);
                float *got = gather_out(&d, got_buf);
                double e = dm_test_relerr(got, ref, c.M * c.N);
                CHECK(t, e <= 2e-5, "%s/%s G=%d %s: relerr %.3g against the reference", w->name,
                      dm_isa_name((dm_isa)isa), G, buf, e);
                CHECK(t, stray_writes(&d, got_buf) == 0, "%s/%s G=%d %s: wrote outside C", w->name,
                      dm_isa_name((dm_isa)isa), G, buf);
                dm_free(got_buf);
                free(got);
                ran++;
            }
            dm_free(ref_buf);
            free(ref);
            gdata_free(&d);
        }
    }
    (void)ran;
}

static void test_kernel_tables(dm_t *t)
{
    check_table(t, dm_kernels_for(DM_ISA_REF), DM_ISA_REF);
    /* every table is linked in; dispatch only hands out supported ones */
#if DM_HAVE_X86
    check_table(t, &dm_kernels_avx2, DM_ISA_AVX2);
    check_table(t, &dm_kernels_avx512, DM_ISA_AVX512);
    CHECK(t, dm_kernels_for(DM_ISA_AVX2) == &dm_kernels_avx2, "dispatch avx2");
    CHECK(t, dm_kernels_for(DM_ISA_AVX512) == &dm_kernels_avx512, "dispatch avx512");
#else
    CHECK(t, dm_kernels_for(DM_ISA_AVX512) == &dm_kernels_ref, "portable build: avx512 falls back to ref");
#endif
}

/* pack_t(W) and quant_pack(W^T) must equal pack(quantize_ref(W^T)) for every
 * type and ISA, at awkward sizes (a subnormal among the values: the bf16
 * instruction flushes those, the kernels must round them as the reference). */
static void test_kernel_pack_bt(dm_t *t)
{
    static const int sizes[][2] = {{1, 1}, {3, 7}, {17, 33}, {32, 16}, {63, 65}, {8, 512}, {256, 3}};
    for (int w = 0; w < DM_WT_COUNT; w++)
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wtype *wt = &dm_wtypes[w];
            if (!wt->kern[isa] || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                int N = sizes[s][0], K = sizes[s][1];
                if (wt->k_multiple && N % wt->k_multiple) continue;  /* W^T is [K, N]: N deep */
                size_t n = dm_wmat_data_size(wt, (dm_isa)isa, K, N, 0);
                dm_wmat ma, mb, mc;
                unsigned char *a = malloc(n), *b = malloc(n), *c = malloc(n);
                dm_wmat_bind(&ma, wt, (dm_isa)isa, K, N, 0, a);
                dm_wmat_bind(&mb, wt, (dm_isa)isa, K, N, 0, b);
                dm_wmat_bind(&mc, wt, (dm_isa)isa, K, N, 0, c);
                float *B = malloc((size_t)N * K * sizeof *B), *Bt = malloc((size_t)N * K * sizeof *Bt);
                float *tmp = malloc(dm_wmat_pack_tmp(&ma));
                void *fbuf = malloc(dm_wtype_file_bytes(wt, K, N, 0) + 64), *part[DM_WPARTS];
                for (int r = 0; r < N; r++)
                    for (int q = 0; q < K; q++) {
                        B[(size_t)r * K + q] = (r + q) % 5 == 3 ? 1e-40f : (float)(r * 1000 + q) + 0.37f;
                        Bt[(size_t)q * N + r] = B[(size_t)r * K + q];
                    }
                memset(a, 0x5a, n);
                memset(b, 0x5a, n);
                memset(c, 0x5a, n);
                dm_wtype_split(wt, K, N, 0, fbuf, part);
                wt->quantize_ref(Bt, K, N, 0, part);
                dm_wmat_pack(&mb, (const void *const *)part);
                dm_wmat_pack_t(&ma, B, tmp);
                dm_wmat_quant_pack(&mc, Bt, tmp);
                CHECK(t, !memcmp(a, b, n), "%s/%s N=%d K=%d: pack_t differs from pack of the quantized transpose",
                      wt->name, dm_isa_name((dm_isa)isa), N, K);
                CHECK(t, !memcmp(c, b, n), "%s/%s N=%d K=%d: quant_pack differs from quantize_ref + pack",
                      wt->name, dm_isa_name((dm_isa)isa), N, K);
                free(B); free(Bt); free(tmp); free(fbuf); free(a); free(b); free(c);
            }
        }
}

/* Training's fused re-pack: the forward pack (quant_pack) and the transposed
 * one (pack_t) of W built a slice of rows at a time, at every multiple of
 * dm_wmat_rows_step and in uneven slices, bitwise the whole packs; every type
 * and ISA that offers it (f32 and bf16 where the kernels can), awkward sizes. */
static void test_kernel_pack_rows(dm_t *t)
{
    static const int sizes[][2] = {{1, 1}, {3, 7}, {17, 33}, {32, 16}, {63, 65}, {8, 512}, {256, 3}, {100, 40}};
    int covered = 0;
    for (int w = 0; w < DM_WT_COUNT; w++)
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wtype *wt = &dm_wtypes[w];
            if (!wt->kern[isa] || dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                int N = sizes[s][0], K = sizes[s][1];  /* W [N, K]: forward [N, K], transposed [K, N] */
                if (wt->k_multiple && (N % wt->k_multiple || K % wt->k_multiple)) continue;
                size_t nf = dm_wmat_data_size(wt, (dm_isa)isa, N, K, 0), nt = dm_wmat_data_size(wt, (dm_isa)isa, K, N, 0);
                unsigned char *f0 = malloc(nf), *f1 = malloc(nf), *t0 = malloc(nt), *t1 = malloc(nt);
                dm_wmat mf0, mf1, mt0, mt1;
                dm_wmat_bind(&mf0, wt, (dm_isa)isa, N, K, 0, f0);
                dm_wmat_bind(&mf1, wt, (dm_isa)isa, N, K, 0, f1);
                dm_wmat_bind(&mt0, wt, (dm_isa)isa, K, N, 0, t0);
                dm_wmat_bind(&mt1, wt, (dm_isa)isa, K, N, 0, t1);
                int G = dm_wmat_rows_step(&mf1, &mt1);
                if (G) {
                    covered++;
                    float *W = malloc((size_t)N * K * sizeof *W), *tmp = malloc(dm_wmat_pack_tmp(&mt0) + dm_wmat_pack_tmp(&mf0));
                    for (int r = 0; r < N; r++)
                        for (int q = 0; q < K; q++) W[(size_t)r * K + q] = (r + q) % 5 == 3 ? 1e-40f : (float)(r * 1000 - q) + 0.37f;
                    memset(f0, 0x5a, nf);
                    memset(t0, 0x5a, nt);
                    dm_wmat_quant_pack(&mf0, W, tmp);
                    dm_wmat_pack_t(&mt0, W, tmp);
                    for (int split = 0; split < 2; split++) {
                        memset(f1, 0xa5, nf);
                        memset(t1, 0xa5, nt);
                        for (int r0 = 0, i = 0; r0 < N; i++) {  /* slices of G, or 1, 3, 2, 1, ... steps of G */
                            int step = split ? G * (1 + (i * 7 + 1) % 3) : G, r1 = r0 + step < N ? r0 + step : N;
                            dm_wmat_quant_pack_rows(&mf1, W, r0, r1);
                            dm_wmat_pack_t_rows(&mt1, W, r0, r1, tmp);
                            r0 = r1;
                        }
                        CHECK(t, !memcmp(f0, f1, nf), "%s/%s N=%d K=%d: forward pack by rows (G=%d) differs", wt->name,
                              dm_isa_name((dm_isa)isa), N, K, G);
                        CHECK(t, !memcmp(t0, t1, nt), "%s/%s N=%d K=%d: transposed pack by rows (G=%d) differs", wt->name,
                              dm_isa_name((dm_isa)isa), N, K, G);
                    }
                    free(W); free(tmp);
                }
                free(f0); free(f1); free(t0); free(t1);
            }
        }
    int want = 0;  /* f32 on every ISA of this build and CPU; bf16 where vdpbf16ps runs */
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) want += dm_wtypes[DM_WT_F32].kern[isa] && dm_isa_resolve((dm_isa)isa) == (dm_isa)isa;
    CHECK(t, covered >= want * 8, "fused re-pack covered %d cases, want at least %d (f32 on every ISA)", covered, want * 8);
}

void suite_kernels(dm_t *t)
{
    DM_RUN(t, test_kernel_pack_bt);
    DM_RUN(t, test_kernel_pack_rows);
    DM_RUN(t, test_kernel_tables);
    DM_RUN(t, test_wtype_table);
    DM_RUN(t, test_wtype_roundtrip);
    DM_RUN(t, test_wtype_gemm);
    DM_RUN(t, test_kernel_ref_gemm_known);
    DM_RUN(t, test_kernel_ref_gemm_naive);
    DM_RUN(t, test_kernel_ref_layernorm);
    DM_RUN(t, test_kernel_ref_silu_mul);
    DM_RUN(t, test_kernel_gemm_nan);
    DM_RUN(t, test_kernel_ref_layernorm_fwd);
    DM_RUN(t, test_kernel_ref_layernorm_bwd);
    DM_RUN(t, test_kernel_ref_silu_mul_bwd);
    DM_RUN(t, test_kernel_ref_gemm_tn_known);
    DM_RUN(t, test_kernel_ref_gemm_tn_naive);
    DM_RUN(t, test_kernel_ref_gemm_tn_bf16);
    DM_RUN(t, test_kernel_ref_colsum);
    DM_RUN(t, test_kernel_ref_adamw);
    DM_RUN(t, test_kernel_ref_combine);
    DM_RUN(t, test_kernel_gemm_tn_split);
    /* the optimized tables run only where this CPU has their instructions */
    if (isa_supported(DM_ISA_AVX2)) {
        DM_RUN(t, test_kernel_avx2_gemm);
        DM_RUN(t, test_kernel_avx2_layernorm);
        DM_RUN(t, test_kernel_avx2_silu_mul);
        DM_RUN(t, test_kernel_avx2_layernorm_fwd);
        DM_RUN(t, test_kernel_avx2_layernorm_bwd);
        DM_RUN(t, test_kernel_avx2_silu_mul_bwd);
        DM_RUN(t, test_kernel_avx2_gemm_tn);
        DM_RUN(t, test_kernel_avx2_gemm_tn_bf16);
        DM_RUN(t, test_kernel_avx2_colsum);
        DM_RUN(t, test_kernel_avx2_adamw);
        DM_RUN(t, test_kernel_avx2_combine);
    }
    if (isa_supported(DM_ISA_AVX512)) {
        DM_RUN(t, test_kernel_avx512_gemm);
        DM_RUN(t, test_kernel_avx512_layernorm);
        DM_RUN(t, test_kernel_avx512_silu_mul);
        DM_RUN(t, test_kernel_avx512_layernorm_fwd);
        DM_RUN(t, test_kernel_avx512_layernorm_bwd);
        DM_RUN(t, test_kernel_avx512_silu_mul_bwd);
        DM_RUN(t, test_kernel_avx512_gemm_tn);
        DM_RUN(t, test_kernel_avx512_gemm_tn_bf16);
        DM_RUN(t, test_kernel_avx512_colsum);
        DM_RUN(t, test_kernel_avx512_adamw);
        DM_RUN(t, test_kernel_avx512_combine);
    }
}
