/* test_wt_q8.c - the q8 weight type: checks particular to it, on every ISA
 * whose kernels this CPU runs (test_kernels.c compares every type's kernels
 * with the reference at awkward sizes; these pin down the definition).
 *
 * The weights are given in the file layout (int8 values, fp32 scales), so
 * the expected results are computed here from wtype.h's definition: the
 * activations quantized per row with the same float operations, integer dot
 * products per group in int64, then summed in double. */
#include "test.h"

#include "base/base.h"
#include "kernels/wtype.h"

#include <float.h>
#include <stdlib.h>

#define Q8_TOL 2e-5  /* optimized vs definition: float rounding only */
#define SENT (-777.25f)

static const dm_wtype *q8(void) { return &dm_wtypes[DM_WT_Q8]; }

/* The ISAs to run: ref, and those whose own q8 kernels this CPU can run. */
static int q8_isa_runs(dm_isa isa)
{
    if (dm_isa_resolve(isa) != isa) return 0;
    return isa == DM_ISA_REF || dm_wtype_kern(q8(), isa)->isa == isa;
}

/* Optional parts of a call. */
typedef struct q8_opts {
    const float *bias;
    dm_act act;
    const float *R;      /* [M, N] */
    const float *scale;  /* [M] */
} q8_opts;

/* C [M, N] = the q8 GEMM of A [M, K] (lda K) with the weight q [N, K], sc [N,
 * groups], packed for isa. C is filled with SENT first. */
static void q8_call(dm_isa isa, int N, int K, int G, const int8_t *q, const float *sc, const float *A,
                    int64_t M, const q8_opts *o, float *C)
{
    const dm_wtype *t = q8();
    void *file = dm_alloc(dm_wtype_file_bytes(t, N, K, G) + 64), *part[DM_WPARTS];
    dm_wtype_split(t, N, K, G, file, part);
    memcpy(part[0], q, dm_wtype_part_bytes(t, 0, N, K, G));
    memcpy(part[1], sc, dm_wtype_part_bytes(t, 1, N, K, G));
    dm_wmat w;
    void *data = dm_alloc(dm_wmat_data_size(t, isa, N, K, G) + 64);
    dm_wmat_bind(&w, t, isa, N, K, G, data);
    dm_wmat_pack(&w, (const void *const *)part);
    size_t nw = dm_wmat_work_size(&w, M);
    void *work = nw ? dm_alloc(nw) : NULL;
    for (int64_t j = 0; j < M * N + 1; j++) C[j] = SENT;
    dm_gemm g = {
        .M = M, .N = N, .K = K, .A = A, .lda = K, .B = &w, .C = C, .ldc = N, .work = work,
        .bias = o ? o->bias : NULL, .act = o ? o->act : DM_ACT_NONE,
        .R = o ? o->R : NULL, .ldr = N, .scale = o ? o->scale : NULL,
    };
    dm_wmat_gemm(&g);
    dm_free(work);
    dm_free(data);
    dm_free(file);
}

/* The definition (wtype.h), independently: out [M, N] in double, no epilogue. */
static void q8_expect(int N, int K, int G, const int8_t *q, const float *sc, const float *A, int64_t M,
                      double *out)
{
    int Gs = G > 0 ? G : (K > 0 ? K : 1), ng = G > 0 ? (K + G - 1) / G : 1;
    int32_t *qa = malloc((size_t)(K > 0 ? K : 1) * sizeof *qa);
    for (int64_t i = 0; i < M; i++) {
        const float *a = A + i * K;
        float amax = 0.0f;
        for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(a[k]));
        float sa = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int k = 0; k < K; k++) {
            float v = rintf(a[k] * inv);
            qa[k] = v != v ? 0 : v > 127.0f ? 127 : v < -127.0f ? -127 : (int32_t)v;
        }
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int gi = 0; gi < ng; gi++) {
                int64_t isum = 0;
                for (int k = gi * Gs; k < K && k < (gi + 1) * Gs; k++) isum += (int64_t)qa[k] * q[(int64_t)n * K + k];
                acc += (double)isum * (double)(sa * sc[(int64_t)n * ng + gi]);  /* sa * scale in float */
            }
            out[i * N + n] = acc;
        }
    }
    free(qa);
}

/* max |got - want| / max |want| (1 if want is all zero and got is not). */
static double q8_err(const float *got, const double *want, int64_t n)
{
    double e = 0, m = 0;
    for (int64_t j = 0; j < n; j++) {
        double d = fabs((double)got[j] - want[j]);
        if (d != d) return INFINITY;
        if (d > e) e = d;
        if (fabs(want[j]) > m) m = fabs(want[j]);
    }
    return m > 0 ? e / m : e > 0 ? 1 : 0;
}

/* Random int8 weights in [-127, 127] and positive scales. */
static void q8_random(dm_rng *r, int N, int K, int G, int8_t *q, float *sc)
{
    int ng = G > 0 ? (K + G - 1) / G : 1;
    for (int64_t j = 0; j < (int64_t)N * K; j++) q[j] = (int8_t)((int)(dm_rng_u64(r) % 255) - 127);
    for (int64_t j = 0; j < (int64_t)N * ng; j++) sc[j] = dm_rng_uniform(r, 0.001f, 0.02f);
}

/* Every runnable ISA against the definition on one problem; returns the worst error. */
static double q8_check_all(dm_t *t, const char *what, int N, int K, int G, const int8_t *q, const float *sc,
                           const float *A, int64_t M, double tol)
{
    double *want = malloc((size_t)(M * N + 1) * sizeof *want);
    float *C = malloc((size_t)(M * N + 1) * sizeof *C);
    q8_expect(N, K, G, q, sc, A, M, want);
    double worst = 0;
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (!q8_isa_runs((dm_isa)isa)) continue;
        q8_call((dm_isa)isa, N, K, G, q, sc, A, M, NULL, C);
        double e = q8_err(C, want, M * N);
        CHECK(t, e <= tol, "%s/%s M=%lld N=%d K=%d G=%d: %.3g from the definition", what,
              dm_isa_name((dm_isa)isa), (long long)M, N, K, G, e);
        CHECK(t, C[M * N] == SENT, "%s/%s: wrote past C", what, dm_isa_name((dm_isa)isa));
        if (e > worst) worst = e;
    }
    free(want);
    free(C);
    return worst;
}

/* ---------------------------------------------------------------- tests */

/* Hand-computed: activations whose amax is 127 quantize to rint(a) (ties to
 * even), sa = 1; so C = isum * scale exactly. The third row has amax 1. */
static void test_q8_known(dm_t *t)
{
    const int8_t q[2 * 5] = {1, -2, 3, 0, 127, -127, 5, 0, 7, -1};
    const float sc[2] = {0.5f, 0.25f};
    const float A[3 * 5] = {
        1, 2, -3, 127, -0.5f,      /* qa 1 2 -3 127 0 */
        2.5f, 3.5f, -2.5f, 0, 127, /* qa 2 4 -2 0 127 */
        0.5f, -1, 0, 0.25f, 0.125f /* inv 127: 63.5 -> 64, -127, 0, 31.75 -> 32, 15.875 -> 16 */
    };
    /* row 0: 1 - 4 - 9 = -12; -127 + 10 + 889 = 772
     * row 1: 2 - 8 - 6 + 16129 = 16117; -254 + 20 - 127 = -361
     * row 2: 64 + 254 + 0 + 0 + 2032 = 2350; -8128 - 635 + 0 + 224 - 16 = -8555 */
    float sa2 = 1.0f / 127.0f;
    const float want[6] = {-6.0f, 193.0f, 8058.5f, -90.25f, 2350.0f * (sa2 * 0.5f), -8555.0f * (sa2 * 0.25f)};
    /* the epilogue on top: bias, relu, residual, row scale */
    const float bias[2] = {1.0f, -200.0f}, R[6] = {0.5f, 1, 2, 3, 4, 5}, rs[3] = {2, -1, 0.5f};
    float C[7], want2[6];
    for (int i = 0; i < 3; i++)
        for (int n = 0; n < 2; n++) {
            float v = want[i * 2 + n] + bias[n];
            want2[i * 2 + n] = rs[i] * ((v < 0 ? 0 : v) + R[i * 2 + n]);
        }
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (!q8_isa_runs((dm_isa)isa)) continue;
        for (int G = 0; G <= 8; G += 8) {  /* G 8 > K: one group, the same as one scale per row */
            q8_call((dm_isa)isa, 2, 5, G, q, sc, A, 3, NULL, C);
            for (int j = 0; j < 6; j++)
                CHECK(t, fabsf(C[j] - want[j]) <= 1e-6f * fabsf(want[j]), "%s G=%d: C[%d] = %.9g, want %.9g",
                      dm_isa_name((dm_isa)isa), G, j, C[j], want[j]);
            CHECK(t, C[6] == SENT, "%s: wrote past C", dm_isa_name((dm_isa)isa));
            q8_opts o = {.bias = bias, .act = DM_ACT_RELU, .R = R, .scale = rs};
            q8_call((dm_isa)isa, 2, 5, G, q, sc, A, 3, &o, C);
            for (int j = 0; j < 6; j++)
                CHECK(t, fabsf(C[j] - want2[j]) <= 1e-6f * fabsf(want2[j]), "%s G=%d epilogue: C[%d] = %.9g, want %.9g",
                      dm_isa_name((dm_isa)isa), G, j, C[j], want2[j]);
        }
    }
}

/* Groups: one scale per group equal to the row's scale gives the ungrouped
 * result; distinct group scales match the definition; group sizes that are
 * not a multiple of 4 (kernels pad each group) too. */
static void test_q8_grouped(dm_t *t)
{
    dm_rng r;
    dm_rng_seed(&r, 7);
    static const int Ks[] = {64, 100, 257, 512};
    static const int Gs[] = {32, 64, 128, 5, 12};
    for (int ki = 0; ki < 4; ki++) {
        int N = 37, K = Ks[ki];
        int64_t M = 1 + ki * 5;
        int8_t *q = malloc((size_t)N * K);
        float *sc1 = malloc((size_t)N * sizeof *sc1), *scg = malloc((size_t)N * K * sizeof *scg);
        float *A = malloc((size_t)M * K * sizeof *A), *C0 = malloc((size_t)(M * N + 1) * sizeof *C0);
        float *C1 = malloc((size_t)(M * N + 1) * sizeof *C1);
        q8_random(&r, N, K, 0, q, sc1);
        for (int64_t j = 0; j < M * K; j++) A[j] = dm_rng_uniform(&r, -2, 2);
        for (int gi = 0; gi < 5; gi++) {
            int G = Gs[gi], ng = (K + G - 1) / G;
            for (int n = 0; n < N; n++)
                for (int j = 0; j < ng; j++) scg[n * ng + j] = sc1[n];
            for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
                if (!q8_isa_runs((dm_isa)isa)) continue;
                q8_call((dm_isa)isa, N, K, 0, q, sc1, A, M, NULL, C0);
                q8_call((dm_isa)isa, N, K, G, q, scg, A, M, NULL, C1);
                double e = dm_test_relerr(C1, C0, M * N);
                CHECK(t, e <= 1e-6, "%s K=%d G=%d: equal group scales differ from one per row by %.3g",
                      dm_isa_name((dm_isa)isa), K, G, e);
            }
            for (int64_t j = 0; j < (int64_t)N * ng; j++) scg[j] = dm_rng_uniform(&r, 0.001f, 0.02f);
            q8_check_all(t, "grouped", N, K, G, q, scg, A, M, Q8_TOL);
        }
        free(q); free(sc1); free(scg); free(A); free(C0); free(C1);
    }
}

/* A zero activation row gives exactly the epilogue of 0; a zero weight row
 * (scale 0) gives 0; a zero group (scale 0) adds nothing. */
static void test_q8_zeros(dm_t *t)
{
    dm_rng r;
    dm_rng_seed(&r, 11);
    int N = 40, K = 96, G = 32, ng = 3;
    int64_t M = 14;
    int8_t *q = malloc((size_t)N * K);
    float sc[40 * 3], sc0[40 * 3], bias[40], A[14 * 96], C[14 * 40 + 1], C2[14 * 40 + 1];
    q8_random(&r, N, K, G, q, sc);
    for (int j = 0; j < M * K; j++) A[j] = dm_rng_uniform(&r, -1, 1);
    for (int n = 0; n < N; n++) bias[n] = dm_rng_uniform(&r, -1, 1);
    memset(A + 5 * K, 0, (size_t)K * sizeof *A);  /* row 5: zero activations */
    memset(q + 3 * K, 0, (size_t)K);                /* output 3: a zero row, scales 0 */
    for (int j = 0; j < ng; j++) sc[3 * ng + j] = 0;
    memset(q + 7 * K + 32, 0, 32);                  /* output 7, group 1: zero */
    sc[7 * ng + 1] = 0;
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (!q8_isa_runs((dm_isa)isa)) continue;
        for (int g = 0; g <= G; g += G) {
            const float *s = sc;
            if (!g) {  /* one scale per row: output 7's group 1 is then just zero values */
                for (int n = 0; n < N; n++) sc0[n] = sc[n * ng];
                s = sc0;
            }
            q8_opts o = {.bias = bias};
            q8_call((dm_isa)isa, N, K, g, q, s, A, M, &o, C);
            int bad = 0;
            for (int n = 0; n < N; n++) bad += C[5 * N + n] != bias[n];
            for (int64_t i = 0; i < M; i++) bad += C[i * N + 3] != bias[3];
            CHECK(t, bad == 0, "%s G=%d: %d outputs of a zero row / zero weights are not the bias",
                  dm_isa_name((dm_isa)isa), g, bad);
        }
        /* the zero group: the same as output 7 with that group removed from the sum */
        q8_call((dm_isa)isa, N, K, G, q, sc, A, M, NULL, C);
        memcpy(sc0, sc, sizeof sc0);
        sc0[7 * ng + 1] = 123.0f;  /* the values are 0: any scale adds 0 */
        q8_call((dm_isa)isa, N, K, G, q, sc0, A, M, NULL, C2);
        CHECK(t, !memcmp(C, C2, sizeof C), "%s: a zero group's scale changed the result", dm_isa_name((dm_isa)isa));
    }
    q8_check_all(t, "zeros", N, K, G, q, sc, A, M, Q8_TOL);
    free(q);
}

/* Large K: the u8 x s8 trick's raw sum passes int32 at K = 70000 (255 * 127
 * * K), the true sum of the extremes (127 * 127 * K) at K = 140000. Extremes
 * (every product +-127 * 127, or all one sign) and random values. */
static void test_q8_large_k(dm_t *t)
{
    static const int Ks[] = {70000, 140000};
    dm_rng r;
    dm_rng_seed(&r, 13);
    for (int ki = 0; ki < 2; ki++) {
        int N = 3, K = Ks[ki];
        int8_t *q = malloc((size_t)N * K);
        float sc[3] = {1.0f / 127, 0.5f, 2.0f};
        float *A = malloc((size_t)3 * K * sizeof *A);
        for (int k = 0; k < K; k++) {
            q[k] = 127;                            /* output 0: all +127 */
            q[K + k] = -127;                       /* output 1: all -127 */
            q[2 * K + k] = (int8_t)(k % 2 ? 127 : -127);
            A[k] = 3.0f;                           /* row 0: qa all 127 */
            A[K + k] = k % 2 ? 1.0f : -1.0f;       /* row 1: +-127, in phase with output 2 */
            A[2 * K + k] = dm_rng_uniform(&r, -1, 1);
        }
        q8_check_all(t, "large K extremes", N, K, 0, q, sc, A, 1, 1e-6);
        q8_check_all(t, "large K extremes", N, K, 0, q, sc, A, 3, 1e-6);
        for (int64_t j = 0; j < (int64_t)N * K; j++) q[j] = (int8_t)((int)(dm_rng_u64(&r) % 255) - 127);
        q8_check_all(t, "large K random", N, K, 0, q, sc, A, 3, Q8_TOL);
        float scg[3 * 1094];  /* group 128: ceil(140000 / 128) = 1094 groups */
        for (int j = 0; j < 3 * 1094; j++) scg[j] = dm_rng_uniform(&r, 0.001f, 0.02f);
        q8_check_all(t, "large K grouped", N, K, 128, q, scg, A, 3, Q8_TOL);
        free(q);
        free(A);
    }
}

/* Extreme activations, one row at a time (an error is relative to the row's
 * largest output): one huge value (the rest quantize to 0), large values with
 * zeros, a tiny amax (127 / amax overflows to inf: every nonzero becomes
 * +-127, 0 stays 0; sa is subnormal, so only one scale per row, where every
 * kernel does the reference's float operations), a single large value last,
 * a NaN (skipped by amax as fmaxf does, quantized to 0: what the reference's
 * (int)NaN gives on x86 and arm64). */
static void test_q8_extremes(dm_t *t)
{
    dm_rng r;
    dm_rng_seed(&r, 17);
    int N = 33, K = 77;
    int8_t *q = malloc((size_t)N * K);
    float sc[33 * 3], A[6 * 77];
    q8_random(&r, N, K, 32, q, sc);
    for (int j = 0; j < 6 * K; j++) A[j] = dm_rng_uniform(&r, -1, 1);
    A[10] = 1e30f;
    for (int k = 0; k < K; k++) A[K + k] = (float)(k % 3 - 1) * 1e33f;
    for (int k = 0; k < K; k++) A[2 * K + k] = (float)(k % 5 - 2) * 1.5e-37f;
    memset(A + 3 * K, 0, (size_t)K * sizeof *A);
    A[3 * K + 76] = -50.0f;
    A[4 * K + 20] = NAN;  /* rows 4, 5: a NaN (amax skips it, as fmaxf; it quantizes to 0) */
    A[5 * K + 76] = NAN;
    for (int i = 0; i < 6; i++) {
        q8_check_all(t, "extremes", N, K, 0, q, sc, A + i * K, 1, Q8_TOL);
        if (i != 2) q8_check_all(t, "extremes grouped", N, K, 32, q, sc, A + i * K, 1, Q8_TOL);
    }
    q8_check_all(t, "extremes", N, K, 0, q, sc, A, 6, Q8_TOL);
    free(q);
}

/* M = 0 writes nothing (and needs no work); K = 0 gives the epilogue of 0;
 * M past one chunk of quantized
 * rows (K = 8192: 24 rows per chunk on avx512, 16 on avx2), with a last
 * chunk of a single row (M = 49 on avx512, 65 on avx2). */
static void test_q8_rows(dm_t *t)
{
    dm_rng r;
    dm_rng_seed(&r, 19);
    int N = 130, K = 8192;
    int8_t *q = malloc((size_t)N * K);
    float *sc = malloc((size_t)N * 64 * sizeof *sc), *A = malloc((size_t)65 * K * sizeof *A);
    q8_random(&r, N, K, 128, q, sc);
    for (int64_t j = 0; j < (int64_t)65 * K; j++) A[j] = dm_rng_uniform(&r, -1, 1);
    float C[2] = {SENT, SENT}, bias[5] = {1, -2, 3, -4, 5}, C0[16];
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (!q8_isa_runs((dm_isa)isa)) continue;
        for (int G = 0; G <= 32; G += 32) {  /* K = 0: every output is the epilogue of 0 */
            q8_opts o = {.bias = bias};
            const float ones[5] = {1, 1, 1, 1, 1};
            q8_call((dm_isa)isa, 5, 0, G, q, ones, A, 3, &o, C0);
            int bad = 0;
            for (int j = 0; j < 15; j++) bad += C0[j] != bias[j % 5];
            CHECK(t, bad == 0 && C0[15] == SENT, "%s G=%d K=0: %d outputs are not the bias",
                  dm_isa_name((dm_isa)isa), G, bad);
        }
        dm_wmat w;
        dm_wmat_bind(&w, q8(), (dm_isa)isa, N, K, 0, NULL);
        CHECK(t, dm_wmat_work_size(&w, 0) == 0 || isa == DM_ISA_REF, "%s: work for M = 0",
              dm_isa_name((dm_isa)isa));
        q8_call((dm_isa)isa, N, K, 0, q, sc, A, 0, NULL, C);
        CHECK(t, C[0] == SENT, "%s: M = 0 wrote C", dm_isa_name((dm_isa)isa));
    }
    for (int64_t M = 49; M <= 65; M += 16) {
        q8_check_all(t, "chunks", N, K, 0, q, sc, A, M, Q8_TOL);
        q8_check_all(t, "chunks grouped", N, K, 128, q, sc, A, M, Q8_TOL);
    }
    free(q); free(sc); free(A);
}

/* dm_gemm.aq (dm_wkern.quant): rows quantized ahead give bitwise the result
 * of the kernel quantizing them itself, gathered through a_idx, at awkward
 * N, K, groups and M, with zero, tiny and Inf/NaN rows among them. */
static void test_q8_quant_ahead(dm_t *t)
{
    static const int shapes[][3] = {{33, 70, 0}, {40, 100, 32}, {17, 512, 0}, {64, 300, 64}, {130, 256, 128}, {5, 3, 0}};
    static const int64_t Ms[] = {1, 5, 13, 32, 40};
    enum { ROWS = 48 };
    dm_rng r;
    dm_rng_seed(&r, 23);
    int ran = 0;
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (!q8_isa_runs((dm_isa)isa) || !dm_wtype_kern(q8(), (dm_isa)isa)->quant) continue;
        const dm_wkern *kn = dm_wtype_kern(q8(), (dm_isa)isa);
        for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
            int N = shapes[si][0], K = shapes[si][1], G = shapes[si][2], ng = G ? (K + G - 1) / G : 1;
            int8_t *q = malloc((size_t)N * K);
            float *sc = malloc((size_t)N * ng * sizeof *sc), *A = malloc((size_t)ROWS * K * sizeof *A);
            q8_random(&r, N, K, G, q, sc);
            for (int64_t j = 0; j < (int64_t)ROWS * K; j++) A[j] = dm_rng_uniform(&r, -3, 3);
            for (int k = 0; k < K; k++) A[2 * K + k] = 0.0f;          /* a zero row */
            for (int k = 0; k < K; k++) A[3 * K + k] *= 1e-40f;       /* 127 / amax overflows */
            A[4 * K + K / 2] = INFINITY;                               /* the careful path */
            A[6 * K] = NAN;
            const dm_wtype *ty = q8();
            void *file = dm_alloc(dm_wtype_file_bytes(ty, N, K, G) + 64), *part[DM_WPARTS];
            dm_wtype_split(ty, N, K, G, file, part);
            memcpy(part[0], q, dm_wtype_part_bytes(ty, 0, N, K, G));
            memcpy(part[1], sc, dm_wtype_part_bytes(ty, 1, N, K, G));
            dm_wmat w;
            void *data = dm_alloc(dm_wmat_data_size(ty, (dm_isa)isa, N, K, G) + 64);
            dm_wmat_bind(&w, ty, (dm_isa)isa, N, K, G, data);
            dm_wmat_pack(&w, (const void *const *)part);
            size_t ld = (kn->quant_ld(K, G) + 63) / 64 * 64;
            unsigned char *qa = dm_alloc((size_t)ROWS * ld);
            float *sa = malloc(ROWS * sizeof *sa), *bias = malloc((size_t)N * sizeof *bias);
            for (int n = 0; n < N; n++) bias[n] = dm_rng_uniform(&r, -1, 1);
            kn->quant(K, G, A, K, ROWS, qa, ld, sa);
            dm_qrows aq = {qa, ld, sa};
            for (int mi = 0; mi < (int)(sizeof Ms / sizeof Ms[0]); mi++) {
                int64_t M = Ms[mi];
                int32_t idx[64];
                for (int64_t i = 0; i < M; i++) idx[i] = (int32_t)((i * 7 + 2) % ROWS);  /* 2, 9, 16, ... */
                float *C0 = malloc((size_t)(M * N + 1) * sizeof *C0), *C1 = malloc((size_t)(M * N + 1) * sizeof *C1);
                for (int64_t j = 0; j <= M * N; j++) C0[j] = C1[j] = SENT;
                size_t nw = dm_wmat_work_size(&w, M);
                void *work = nw ? dm_alloc(nw) : NULL;
                dm_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .a_idx = idx, .B = &w, .bias = bias,
                             .act = DM_ACT_RELU, .C = C0, .ldc = N, .work = work};
                dm_wmat_gemm(&g);
                g.C = C1;
                g.aq = &aq;
                dm_wmat_gemm(&g);
                CHECK(t, memcmp(C0, C1, (size_t)(M * N + 1) * sizeof *C0) == 0,
                      "%s N=%d K=%d G=%d M=%lld: quantized ahead differs", dm_isa_name((dm_isa)isa), N, K, G,
                      (long long)M);
                ran++;
                dm_free(work);
                free(C0);
                free(C1);
            }
            dm_free(qa); free(sa); free(bias);
            dm_free(data); dm_free(file);
            free(q); free(sc); free(A);
        }
    }
    CHECK(t, ran > 0 || !q8_isa_runs(DM_ISA_AVX512), "no kernel with quant ran");
}

void suite_wt_q8(dm_t *t)
{
    DM_RUN(t, test_q8_known);
    DM_RUN(t, test_q8_grouped);
    DM_RUN(t, test_q8_zeros);
    DM_RUN(t, test_q8_large_k);
    DM_RUN(t, test_q8_extremes);
    DM_RUN(t, test_q8_rows);
    DM_RUN(t, test_q8_quant_ahead);
}
