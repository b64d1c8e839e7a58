/* test_parity.c - deepmoe against PyTorch, through the public API only.
 *
 * tests/gen_fixtures.py (a PyTorch rendering of every router and expert kind)
 * wrote, per case NAME, the model NAME.safetensors, inputs NAME.x.npy, the
 * float64 reference output NAME.y.npy and the routing decision
 * NAME.experts.npy / NAME.weights.npy. Each case loads the model for every
 * ISA the CPU has, runs the sparse forward with 1 and 2 threads and the dense
 * twin, and bounds the normalized error of outputs and weights by 1e-5; the
 * chosen experts must be equal (the generator keeps every routing margin
 * above 1e-3, so float32 cannot flip a decision). */
#include "test.h"

#include <stdlib.h>

#define PARITY_TOL 1e-5

/* The plain seed fixtures carry no deepmoe metadata: the loader infers these
 * from the tensor shapes (and k = 2). Keep in step with SEED_CFG in
 * tests/gen_fixtures.py. */
#define SEED_DIM 16
#define SEED_EXPERTS 4
#define SEED_HIDDEN 6
#define SEED_TOP_K 2

typedef struct parity_arrays {
    dm_array x, y, experts, weights;
} parity_arrays;

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

/* Reads NAME.SUFFIX.npy into a; 0 on success. */
static int read_fixture(dm_t *t, const char *name, const char *suffix, dm_array *a)
{
    char file[256];
    snprintf(file, sizeof file, "%s.%s.npy", name, suffix);
    const char *path = dm_test_fixture(file);
    if (!file_exists(path)) {
        CHECK(t, 0, "missing fixture %s (regenerate with `make fixtures`)", path);
        return -1;
    }
    dm_error err = {0};
    dm_status s = dm_npy_read(path, a, &err);
    CHECK(t, s == DM_OK, "%s: %s", dm_status_name(s), err.msg);
    return s == DM_OK ? 0 : -1;
}

static void free_arrays(parity_arrays *a)
{
    dm_array_free(&a->x);
    dm_array_free(&a->y);
    dm_array_free(&a->experts);
    dm_array_free(&a->weights);
}

typedef struct parity_worst {
    double y, w, dense;  /* worst normalized errors over ISAs and thread counts */
    int runs;            /* (ISA, thread count) combinations checked */
} parity_worst;

/* Compares one forward's outputs with the reference; returns its worst error. */
static void check_outputs(dm_t *t, const char *name, const char *what, const parity_arrays *a,
                          const float *y, const int32_t *experts, const float *weights,
                          double *worst_y, double *worst_w)
{
    int64_t n = a->x.rows, k = a->experts.cols;
    double ey = dm_test_relerr(y, a->y.data, n * a->y.cols);
    double ew = dm_test_relerr(weights, a->weights.data, n * k);
    CHECK(t, ey <= PARITY_TOL, "%s %s: output rel err %.3g > %.0e", name, what, ey, PARITY_TOL);
    CHECK(t, ew <= PARITY_TOL, "%s %s: weights rel err %.3g > %.0e", name, what, ew, PARITY_TOL);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n * k; i++) {
        if (experts[i] != (int32_t)a->experts.data[i]) {
            if (first < 0) first = i;
            bad++;
        }
    }
    CHECK(t, bad == 0, "%s %s: %lld routing slots differ, first row %lld slot %lld: expert %d, want %d",
          name, what, (long long)bad, (long long)(first / k), (long long)(first % k),
          bad ? experts[first] : 0, bad ? (int)a->experts.data[first] : 0);
    if (ey > *worst_y) *worst_y = ey;
    if (ew > *worst_w) *worst_w = ew;
}

/* One model (one ISA): sparse forward with 1 and 2 threads, then the dense twin. */
static void check_model(dm_t *t, const char *name, const dm_model *m, const parity_arrays *a,
                        parity_worst *worst)
{
    const dm_config *c = dm_model_config(m);
    int64_t n = a->x.rows, k = a->experts.cols;
    CHECK(t, c->dim == a->x.cols, "%s: model dim %d, fixture x has %lld columns",
          name, c->dim, (long long)a->x.cols);
    CHECK(t, c->top_k == k, "%s: model top_k %d, fixture has %lld experts per row",
          name, c->top_k, (long long)k);
    if (c->dim != a->x.cols || c->top_k != k) return;

    float *y = malloc((size_t)(n * c->dim) * sizeof *y);
    float *w = malloc((size_t)(n * k) * sizeof *w);
    int32_t *e = malloc((size_t)(n * k) * sizeof *e);
    CHECK(t, y && w && e, "%s: out of memory", name);
    if (!y || !w || !e) goto out;

    for (int threads = 1; threads <= 2; threads++) {
        dm_error err = {0};
        dm_pool *pool = NULL;
        dm_ctx *ctx = NULL;
        char what[64];
        snprintf(what, sizeof what, "%s, %d thread%s", dm_isa_name(dm_model_isa(m)), threads,
                 threads > 1 ? "s" : "");
        CHECK_OK(t, dm_pool_create(threads, &pool, &err), &err);
        if (pool) CHECK_OK(t, dm_ctx_create(m, pool, &ctx, &err), &err);
        if (ctx) {
            memset(y, 0xff, (size_t)(n * c->dim) * sizeof *y);  /* NaN: unwritten shows */
            memset(w, 0xff, (size_t)(n * k) * sizeof *w);
            memset(e, 0xff, (size_t)(n * k) * sizeof *e);
            dm_routing route = { .experts = e, .weights = w };
            dm_status s = dm_forward(ctx, a->x.data, n, y, &route, &err);
            CHECK(t, s == DM_OK, "%s %s: dm_forward: %s: %s", name, what, dm_status_name(s), err.msg);
            if (s == DM_OK) {
                check_outputs(t, name, what, a, y, e, w, &worst->y, &worst->w);
                worst->runs++;
            }
        }
        dm_ctx_free(ctx);
        dm_pool_free(pool);
    }

    dm_error err = {0};
    memset(y, 0xff, (size_t)(n * c->dim) * sizeof *y);
    memset(w, 0xff, (size_t)(n * k) * sizeof *w);
    memset(e, 0xff, (size_t)(n * k) * sizeof *e);
    dm_routing route = { .experts = e, .weights = w };
    dm_status s = dm_forward_dense(m, a->x.data, n, y, &route, &err);
    CHECK(t, s == DM_OK, "%s: dm_forward_dense: %s: %s", name, dm_status_name(s), err.msg);
    if (s == DM_OK) {
        double dw = 0;
        char what[64];
        snprintf(what, sizeof what, "dense (model packed for %s)", dm_isa_name(dm_model_isa(m)));
        check_outputs(t, name, what, a, y, e, w, &worst->dense, &dw);
        if (dw > worst->w) worst->w = dw;
    }
out:
    free(y);
    free(w);
    free(e);
}

/* Runs case NAME for every supported ISA. seed_config: also check what the
 * loader inferred for a metadata-free seed state dict. */
static void parity_case(dm_t *t, const char *name, int seed_config)
{
    parity_arrays a = {0};
    char file[256];
    snprintf(file, sizeof file, "%s.safetensors", name);
    const char *model_path = dm_test_fixture(file);
    if (!file_exists(model_path)) {
        CHECK(t, 0, "missing fixture %s (regenerate with `make fixtures`)", model_path);
        return;
    }
    if (read_fixture(t, name, "x", &a.x) || read_fixture(t, name, "y", &a.y) ||
        read_fixture(t, name, "experts", &a.experts) || read_fixture(t, name, "weights", &a.weights))
        goto out;
    CHECK(t, a.y.rows == a.x.rows && a.y.cols == a.x.cols && a.experts.rows == a.x.rows &&
             a.weights.rows == a.x.rows && a.weights.cols == a.experts.cols,
          "%s: fixture arrays disagree on their shapes", name);
    if (a.y.rows != a.x.rows || a.y.cols != a.x.cols || a.experts.rows != a.x.rows ||
        a.weights.rows != a.x.rows || a.weights.cols != a.experts.cols)
        goto out;

    static const dm_isa isas[] = { DM_ISA_REF, DM_ISA_AVX2, DM_ISA_AVX512 };
    parity_worst worst = {0};
    char isa_list[64] = "";
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (dm_isa_resolve(isas[i]) != isas[i]) continue;  /* the CPU lacks it */
        dm_model_opts opts;
        dm_model_opts_default(&opts);
        opts.isa = isas[i];
        dm_model *m = NULL;
        dm_error err = {0};
        dm_status s = dm_model_load(model_path, &opts, &m, &err);
        CHECK(t, s == DM_OK, "%s (%s): dm_model_load: %s: %s", name, dm_isa_name(isas[i]),
              dm_status_name(s), err.msg);
        if (s != DM_OK) continue;
        CHECK(t, dm_model_isa(m) == isas[i], "%s: model packed for %s, asked for %s", name,
              dm_isa_name(dm_model_isa(m)), dm_isa_name(isas[i]));
        if (seed_config) {
            const dm_config *c = dm_model_config(m);
            CHECK(t, c->dim == SEED_DIM && c->n_experts == SEED_EXPERTS &&
                     c->hidden == SEED_HIDDEN && c->top_k == SEED_TOP_K,
                  "%s: inferred dim %d n_experts %d hidden %d top_k %d, want %d %d %d %d", name,
                  c->dim, c->n_experts, c->hidden, c->top_k,
                  SEED_DIM, SEED_EXPERTS, SEED_HIDDEN, SEED_TOP_K);
            CHECK(t, c->router == DM_ROUTER_SEED && c->expert == DM_EXPERT_SEED &&
                     c->n_shared == 0 && c->n_groups == 1 && !c->selection_bias &&
                     c->route_scale == 1.0f,
                  "%s: a metadata-free state dict must load as the seed layer (router %s, expert %s, "
                  "%d shared, %d groups, bias %d, route_scale %g)", name, dm_router_name(c->router),
                  dm_expert_name(c->expert), c->n_shared, c->n_groups, c->selection_bias,
                  (double)c->route_scale);
        }
        check_model(t, name, m, &a, &worst);
        dm_model_free(m);
        strncat(isa_list, " ", sizeof isa_list - strlen(isa_list) - 1);
        strncat(isa_list, dm_isa_name(isas[i]), sizeof isa_list - strlen(isa_list) - 1);
    }
    CHECK(t, worst.runs > 0, "%s: no forward ran", name);
    double all = worst.y > worst.w ? worst.y : worst.w;
    if (worst.dense > all) all = worst.dense;
    printf("  parity %s: max rel err %.1e (output %.1e, weights %.1e, dense %.1e; %d runs:%s)\n",
           name, all, worst.y, worst.w, worst.dense, worst.runs, isa_list);
out:
    free_arrays(&a);
}

#define PARITY_CASE(nm, seed_config) \
    static void test_parity_##nm(dm_t *t) { parity_case(t, #nm, seed_config); }

PARITY_CASE(seed, 1)
PARITY_CASE(seed_f16, 1)
PARITY_CASE(seed_bf16, 1)
PARITY_CASE(seed_k3, 0)
PARITY_CASE(softmax, 0)
PARITY_CASE(softmax_norm, 0)
PARITY_CASE(sigmoid, 0)
PARITY_CASE(bias, 0)
PARITY_CASE(grouped, 0)
PARITY_CASE(shared, 0)
PARITY_CASE(swiglu, 0)
PARITY_CASE(v3, 0)
PARITY_CASE(e1, 0)
PARITY_CASE(k_eq_e, 0)

void suite_parity(dm_t *t)
{
    DM_RUN(t, test_parity_seed);
    DM_RUN(t, test_parity_seed_f16);
    DM_RUN(t, test_parity_seed_bf16);
    DM_RUN(t, test_parity_seed_k3);
    DM_RUN(t, test_parity_softmax);
    DM_RUN(t, test_parity_softmax_norm);
    DM_RUN(t, test_parity_sigmoid);
    DM_RUN(t, test_parity_bias);
    DM_RUN(t, test_parity_grouped);
    DM_RUN(t, test_parity_shared);
    DM_RUN(t, test_parity_swiglu);
    DM_RUN(t, test_parity_v3);
    DM_RUN(t, test_parity_e1);
    DM_RUN(t, test_parity_k_eq_e);
}
