/* test_quant_parity.c - the compressed weight types against PyTorch.
 *
 * tests/gen_quant_fixtures.py computed, in PyTorch and from the semantics in
 * kernels/wtype.h alone, per case (s1: M=5 N=24 K=40, s2: M=3 N=17 K=72, with
 * bias and crafted rows: exact halves, bf16/f16 ties, f16 subnormals, zero
 * rows) the bf16 and f16 bit patterns of W, q8's int8 values and scales (per
 * row and in groups of 32), and each type's GEMM output. Here:
 *   1. deepmoe's reference quantizers must give exactly torch's bits / int8 /
 *      scales;
 *   2. torch's file layout (not re-quantized) is packed for every ISA this CPU
 *      runs, comes back unchanged through unpack, and its GEMM (bias; and with
 *      relu) matches torch's output within 1e-5 of max |C|. */
#include "test.h"

#include "base/base.h"
#include "kernels/wtype.h"

#include <stdlib.h>

#define QP_TOL 1e-5

typedef struct qp_case {
    const char *name;
    int M, N, K;
} qp_case;

static const qp_case QP_CASES[] = {{"s1", 5, 24, 40}, {"s2", 3, 17, 72}};

static int qp_file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

/* Reads quant/NAME.SUFFIX.npy, which must be [rows, cols]; 0 on success. */
static int qp_read(dm_t *t, const char *name, const char *suffix, int64_t rows, int64_t cols, dm_array *a)
{
    char file[256];
    snprintf(file, sizeof file, "quant/%s.%s.npy", name, suffix);
    const char *path = dm_test_fixture(file);
    *a = (dm_array){0};
    if (!qp_file_exists(path)) {
        CHECK(t, 0, "missing fixture %s (regenerate with `make fixtures`)", path);
        return -1;
    }
    dm_error err = {0};
    dm_status s = dm_npy_read(path, a, &err);
    CHECK(t, s == DM_OK, "%s: %s: %s", path, dm_status_name(s), err.msg);
    if (s != DM_OK) return -1;
    /* a 1-D file reads as one row */
    if (a->rows != rows || a->cols != cols) {
        CHECK(t, 0, "%s: shape [%lld, %lld], want [%lld, %lld]", path, (long long)a->rows,
              (long long)a->cols, (long long)rows, (long long)cols);
        dm_array_free(a);
        return -1;
    }
    return 0;
}

/* The 16-bit patterns stored as little-endian byte pairs [N, 2K]. */
static uint16_t *qp_bits(const dm_array *a, int64_t n)
{
    uint16_t *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++)
        b[i] = (uint16_t)((unsigned)a->data[2 * i] | (unsigned)a->data[2 * i + 1] << 8);
    return b;
}

typedef struct qp_worst {
    double err;  /* worst normalized GEMM error over ISAs */
    int runs;    /* ISAs run */
} qp_worst;

/* Packs the file layout `part` for every ISA the CPU runs, checks unpack gives
 * it back, and runs the GEMM of A against it with bias (and again with relu),
 * bounding the error against torch's C. */
static void qp_gemm_all_isas(dm_t *t, const char *what, const dm_wtype *wt, int G, const qp_case *c,
                             const void *const part[], const float *A, const float *bias, const float *Cwant,
                             qp_worst *worst)
{
    int M = c->M, N = c->N, K = c->K;
    float *Crelu = malloc((size_t)M * N * sizeof *Crelu);
    for (int64_t i = 0; i < (int64_t)M * N; i++) Crelu[i] = Cwant[i] > 0 ? Cwant[i] : 0;
    for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
        if (dm_isa_resolve((dm_isa)isa) != (dm_isa)isa) continue;  /* the CPU lacks it */
        const dm_wkern *k = dm_wtype_kern(wt, (dm_isa)isa);
        if (k->isa != (dm_isa)isa) continue;  /* falls back to a lower ISA's kernels: run there */
        const char *iname = dm_isa_name((dm_isa)isa);
        size_t nb = dm_wmat_data_size(wt, (dm_isa)isa, N, K, G);
        void *data = dm_alloc(nb + 64);
        dm_wmat w;
        dm_wmat_bind(&w, wt, (dm_isa)isa, N, K, G, data);
        dm_wmat_pack(&w, part);
        /* unpack returns exactly the file layout */
        void *back = dm_alloc(dm_wtype_file_bytes(wt, N, K, G) + 64), *bp[DM_WPARTS];
        dm_wtype_split(wt, N, K, G, back, bp);
        dm_wmat_unpack(&w, bp);
        for (int j = 0; j < wt->n_parts; j++)
            CHECK(t, memcmp(bp[j], part[j], dm_wtype_part_bytes(wt, j, N, K, G)) == 0,
                  "%s/%s: part %d does not come back from unpack", what, iname, j);
        dm_free(back);

        size_t nw = dm_wmat_work_size(&w, M);
        void *work = nw ? dm_alloc(nw) : NULL;
        float *C = dm_alloc(((size_t)M * N + 1) * sizeof *C);
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t i = 0; i <= (int64_t)M * N; i++) C[i] = -1234.5f;
            dm_gemm g = {
                .M = M, .N = N, .K = K, .A = A, .lda = K, .B = &w, .bias = bias,
                .act = pass ? DM_ACT_RELU : DM_ACT_NONE, .C = C, .ldc = N, .work = work,
            };
            dm_wmat_gemm(&g);
            double e = dm_test_relerr(C, pass ? Crelu : Cwant, (int64_t)M * N);
            CHECK(t, e <= QP_TOL, "%s/%s%s: relerr %.3g from PyTorch (bound %.0e)", what, iname,
                  pass ? " relu" : "", e, QP_TOL);
            CHECK(t, C[(int64_t)M * N] == -1234.5f, "%s/%s: wrote past C", what, iname);
            if (e > worst->err) worst->err = e;
        }
        worst->runs++;
        dm_free(C);
        dm_free(work);
        dm_free(data);
    }
    free(Crelu);
}

/* bf16 or f16: the quantizer's bits equal torch's; the GEMM on torch's bits. */
static void qp_half(dm_t *t, const qp_case *c, dm_wtype_id id, const dm_array *W, const dm_array *A,
                    const dm_array *bias, qp_worst *worst)
{
    const dm_wtype *wt = &dm_wtypes[id];
    int N = c->N, K = c->K;
    char suf[32], what[64];
    dm_array bits_a, Ca;
    snprintf(suf, sizeof suf, "%s.bits", wt->name);
    if (qp_read(t, c->name, suf, N, 2 * K, &bits_a)) return;
    snprintf(suf, sizeof suf, "%s.C", wt->name);
    if (qp_read(t, c->name, suf, c->M, N, &Ca)) { dm_array_free(&bits_a); return; }
    snprintf(what, sizeof what, "%s %s", c->name, wt->name);
    uint16_t *want = qp_bits(&bits_a, (int64_t)N * K);

    void *file = dm_alloc(dm_wtype_file_bytes(wt, N, K, 0) + 64), *part[DM_WPARTS];
    dm_wtype_split(wt, N, K, 0, file, part);
    wt->quantize_ref(W->data, N, K, 0, part);
    const uint16_t *got = part[0];
    int64_t bad = 0;
    for (int64_t i = 0; i < (int64_t)N * K; i++)
        if (got[i] != want[i]) {
            if (bad++ < 3)
                CHECK(t, 0, "%s: W[%lld] = %.9g quantizes to 0x%04x, PyTorch 0x%04x", what, (long long)i,
                      W->data[i], got[i], want[i]);
        }
    CHECK(t, bad == 0, "%s: %lld of %lld values differ from PyTorch", what, (long long)bad, (long long)N * K);

    /* the GEMM on torch's bits */
    memcpy(part[0], want, (size_t)N * K * sizeof *want);
    qp_gemm_all_isas(t, what, wt, 0, c, (const void *const *)part, A->data, bias->data, Ca.data, worst);
    dm_free(file);
    free(want);
    dm_array_free(&bits_a);
    dm_array_free(&Ca);
}

/* q8 with group G: the quantizer's int8 and scales equal torch's; the GEMM on torch's. */
static void qp_q8(dm_t *t, const qp_case *c, int G, const dm_array *W, const dm_array *A, const dm_array *bias,
                  qp_worst *worst)
{
    const dm_wtype *wt = &dm_wtypes[DM_WT_Q8];
    int N = c->N, K = c->K, ng = G > 0 ? (K + G - 1) / G : 1;
    char suf[32], what[64];
    dm_array qa, sa, Ca;
    snprintf(what, sizeof what, "%s q8 G=%d", c->name, G);
    snprintf(suf, sizeof suf, "q8g%d.q", G);
    if (qp_read(t, c->name, suf, N, K, &qa)) return;
    snprintf(suf, sizeof suf, "q8g%d.scale", G);
    if (qp_read(t, c->name, suf, N, ng, &sa)) { dm_array_free(&qa); return; }
    snprintf(suf, sizeof suf, "q8g%d.C", G);
    if (qp_read(t, c->name, suf, c->M, N, &Ca)) { dm_array_free(&qa); dm_array_free(&sa); return; }
    CHECK(t, wt->parts[1].cols(K, G) == ng, "%s: %lld scales per row, the fixture %d", what,
          (long long)wt->parts[1].cols(K, G), ng);

    void *file = dm_alloc(dm_wtype_file_bytes(wt, N, K, G) + 64), *part[DM_WPARTS];
    dm_wtype_split(wt, N, K, G, file, part);
    wt->quantize_ref(W->data, N, K, G, part);
    const int8_t *q = part[0];
    float *sc = part[1];
    int64_t bad = 0;
    for (int64_t i = 0; i < (int64_t)N * K; i++)
        if ((float)q[i] != qa.data[i]) {
            if (bad++ < 3)
                CHECK(t, 0, "%s: W[%lld] = %.9g quantizes to %d, PyTorch %g", what, (long long)i, W->data[i],
                      q[i], qa.data[i]);
        }
    CHECK(t, bad == 0, "%s: %lld int8 values differ from PyTorch", what, (long long)bad);
    bad = 0;
    for (int64_t i = 0; i < (int64_t)N * ng; i++)
        if (memcmp(&sc[i], &sa.data[i], sizeof(float)) != 0) {
            if (bad++ < 3)
                CHECK(t, 0, "%s: scale[%lld] = %.9g, PyTorch %.9g", what, (long long)i, sc[i], sa.data[i]);
        }
    CHECK(t, bad == 0, "%s: %lld scales differ from PyTorch", what, (long long)bad);

    /* the GEMM on torch's int8 values and scales */
    int8_t *qd = part[0];
    for (int64_t i = 0; i < (int64_t)N * K; i++) qd[i] = (int8_t)qa.data[i];
    memcpy(sc, sa.data, (size_t)N * ng * sizeof *sc);
    qp_gemm_all_isas(t, what, wt, G, c, (const void *const *)part, A->data, bias->data, Ca.data, worst);
    dm_free(file);
    dm_array_free(&qa);
    dm_array_free(&sa);
    dm_array_free(&Ca);
}

static void run_type(dm_t *t, dm_wtype_id id, int G)
{
    qp_worst worst = {0};
    int cases = 0;
    for (size_t ci = 0; ci < sizeof QP_CASES / sizeof QP_CASES[0]; ci++) {
        const qp_case *c = &QP_CASES[ci];
        dm_array W, A, bias;
        if (qp_read(t, c->name, "W", c->N, c->K, &W)) continue;
        if (qp_read(t, c->name, "A", c->M, c->K, &A)) { dm_array_free(&W); continue; }
        if (qp_read(t, c->name, "bias", 1, c->N, &bias)) { dm_array_free(&W); dm_array_free(&A); continue; }
        if (id == DM_WT_Q8) qp_q8(t, c, G, &W, &A, &bias, &worst);
        else qp_half(t, c, id, &W, &A, &bias, &worst);
        cases++;
        dm_array_free(&W);
        dm_array_free(&A);
        dm_array_free(&bias);
    }
    CHECK(t, cases == 2 && worst.runs >= cases, "%s: %d cases, %d GEMM runs", dm_wtypes[id].name, cases,
          worst.runs);
    printf("  quant parity %s%s: %d ISA run(s) over 2 cases, worst GEMM error %.3g of max |C|\n", dm_wtypes[id].name,
           G ? " G=32" : "", worst.runs, worst.err);
}

static void test_quant_parity_bf16(dm_t *t) { run_type(t, DM_WT_BF16, 0); }
static void test_quant_parity_f16(dm_t *t) { run_type(t, DM_WT_F16, 0); }
static void test_quant_parity_q8(dm_t *t) { run_type(t, DM_WT_Q8, 0); }
static void test_quant_parity_q8_g32(dm_t *t) { run_type(t, DM_WT_Q8, 32); }

void suite_quant_parity(dm_t *t)
{
    DM_RUN(t, test_quant_parity_bf16);
    DM_RUN(t, test_quant_parity_f16);
    DM_RUN(t, test_quant_parity_q8);
    DM_RUN(t, test_quant_parity_q8_g32);
}
