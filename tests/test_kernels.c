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
#include "kernels/kernels.h"

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
static float *run_gemm(const dm_kernels *kt, const gdata *d)
{
    const gcase *c = &d->c;
    size_t nb = kt->pack_b_size(c->N, c->K);
    float *Bp_buf = dm_alloc((nb + 1) * sizeof(float));
    float *Bp = Bp_buf + c->unaligned;
    kt->pack_b(d->B, c->N, c->K, Bp);
    size_t nc = (size_t)(d->c_rows * d->ldc + 1);
    float *C_buf = dm_alloc(nc * sizeof(float));
    fill_value(C_buf, (int64_t)nc, SENTINEL);
    dm_gemm g = {
        .M = c->M, .N = c->N, .K = c->K,
        .A = d->A_buf + c->unaligned, .lda = d->lda, .a_idx = d->a_idx,
        .Bp = Bp, .bias = d->bias, .act = c->act,
        .R = d->R_buf ? d->R_buf + c->unaligned : NULL, .ldr = d->ldr, .r_idx = d->r_idx,
        .scale = d->scale,
        .C = C_buf + c->unaligned, .ldc = d->ldc, .c_idx = d->c_idx,
    };
    kt->gemm(&g);
    dm_free(Bp_buf);
    return C_buf;
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
    dm_kernels_ref.pack_b(B, 2, 3, Bp);
    /* row i reads A row a_idx[i] = {-4,5,-6} then {1,2,3}:
     *   A1·B0 = -4-12 = -16, A1·B1 = -5-6 = -11; A0·B0 = 7, A0·B1 = 1
     * + bias: -15.5, -21; 7.5, -9   relu: 0, 0; 7.5, 0
     * + R row i: 100, 200; 307.5, 400   * scale: 200, 400; -307.5, -400
     * row i lands in C row c_idx[i] */
    dm_gemm g = {.M = 2, .N = 2, .K = 3, .A = A, .lda = 3, .a_idx = a_idx, .Bp = Bp,
                 .bias = bias, .act = DM_ACT_RELU, .R = R, .ldr = 2, .scale = scale,
                 .C = C, .ldc = 2, .c_idx = c_idx};
    dm_kernels_ref.gemm(&g);
    const float want[4] = {-307.5f, -400, 200, 400};
    for (int j = 0; j < 4; j++) CHECK(t, C[j] == want[j], "C[%d] = %g, want %g", j, C[j], want[j]);

    /* no options: plain A·Bᵀ */
    dm_gemm h = {.M = 2, .N = 2, .K = 3, .A = A, .lda = 3, .Bp = Bp, .C = C, .ldc = 2};
    dm_kernels_ref.gemm(&h);
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

/* ---------------------------------------------------------------- tables */

static void check_table(dm_t *t, const dm_kernels *kt, dm_isa isa)
{
    CHECK(t, kt->isa == isa, "table for %s says %s", dm_isa_name(isa), dm_isa_name(kt->isa));
    CHECK(t, kt->pack_b_size && kt->pack_b && kt->gemm && kt->layernorm && kt->silu_mul,
          "%s: missing entry", dm_isa_name(isa));
    static const int sizes[][2] = {{1, 1}, {3, 17}, {8, 512}, {33, 7}, {512, 256}};
    for (int s = 0; s < COUNT(sizes); s++) {
        size_t need = (size_t)sizes[s][0] * (size_t)sizes[s][1];
        CHECK(t, kt->pack_b_size(sizes[s][0], sizes[s][1]) >= need, "%s: pack_b_size(%d, %d) too small",
              dm_isa_name(isa), sizes[s][0], sizes[s][1]);
    }
}

static void test_kernel_tables(dm_t *t)
{
    check_table(t, dm_kernels_for(DM_ISA_REF), DM_ISA_REF);
    /* every table is linked in; dispatch only hands out supported ones */
    check_table(t, &dm_kernels_avx2, DM_ISA_AVX2);
    check_table(t, &dm_kernels_avx512, DM_ISA_AVX512);
    CHECK(t, dm_kernels_for(DM_ISA_AVX2) == &dm_kernels_avx2, "dispatch avx2");
    CHECK(t, dm_kernels_for(DM_ISA_AVX512) == &dm_kernels_avx512, "dispatch avx512");
}

void suite_kernels(dm_t *t)
{
    DM_RUN(t, test_kernel_tables);
    DM_RUN(t, test_kernel_ref_gemm_known);
    DM_RUN(t, test_kernel_ref_gemm_naive);
    DM_RUN(t, test_kernel_ref_layernorm);
    DM_RUN(t, test_kernel_ref_silu_mul);
    DM_RUN(t, test_kernel_gemm_nan);
    /* the optimized tables run only where this CPU has their instructions */
    if (isa_supported(DM_ISA_AVX2)) {
        DM_RUN(t, test_kernel_avx2_gemm);
        DM_RUN(t, test_kernel_avx2_layernorm);
        DM_RUN(t, test_kernel_avx2_silu_mul);
    }
    if (isa_supported(DM_ISA_AVX512)) {
        DM_RUN(t, test_kernel_avx512_gemm);
        DM_RUN(t, test_kernel_avx512_layernorm);
        DM_RUN(t, test_kernel_avx512_silu_mul);
    }
}
