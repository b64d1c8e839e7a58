/* test_preprocess.c - a model's input preprocessing (issue 9, item 8): the
 * getter and setter, the model file round trip and the refusal of bad
 * preprocess tensors, dm_forward / dm_forward_dense with a map against the
 * same model on rows scaled beforehand (bit for bit), the data loader's
 * methods, and a training run whose evaluation equals an evaluation of the
 * saved model on raw rows (what `deepmoe eval` does). */
#include "test.h"
#include "base/base.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "nn/preprocess.h"

#include <stdlib.h>

#define IN 5

/* A small network: IN features -> embed 12 -> 1 layer, E = 4, k = 2 -> 3 classes. */
static dm_config net_cfg(void)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 12; c.n_experts = 4; c.top_k = 2; c.hidden = 8;
    c.in_dim = IN; c.n_classes = 3;
    return c;
}

static void randomize(dm_model *m, uint64_t seed)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int i = 0; i < dm_model_n_tensors(m); i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        for (int64_t j = 0; j < ti.numel; j++) ti.data[j] = dm_rng_uniform(&r, -0.5f, 0.5f);
    }
    dm_error err;
    dm_model_sync(m, &err);
}

/* Rows over [0, 1000]: raw features the way a user has them. */
static float *raw_rows(int64_t n, int d, uint64_t seed)
{
    float *x = malloc((size_t)(n ? n : 1) * d * sizeof *x);
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int64_t i = 0; i < n * d; i++) x[i] = dm_rng_uniform(&r, 0, 1000);
    return x;
}

/* The documented map, computed here: the product rounded to float, then the sum. */
static void scale_rows(const float *x, int64_t n, int d, const float *scale, const float *shift, float *out)
{
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            float v = x[i * d + j] * scale[j];
            out[i * d + j] = v + shift[j];
        }
}

/* ---------------------------------------------------------------- set / get */

static void test_pre_set_get(dm_t *t)
{
    dm_config c = net_cfg();
    dm_model *m;
    dm_error err;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    const char *method = "x";
    const float *s = NULL, *b = NULL;
    CHECK(t, dm_model_preprocess(m, &method, &s, &b) == 0 && method == NULL && !s && !b,
          "a new model records nothing: method %s", method ? method : "NULL");
    float scale[IN] = {0.002f, 1, 0, -3, 0.5f}, shift[IN] = {-1, 0, 0, 2, -0.25f};
    CHECK_OK(t, dm_model_set_preprocess(m, "minmax", scale, shift, &err), &err);
    CHECK(t, dm_model_preprocess(m, &method, &s, &b) == 1 && method && !strcmp(method, "minmax"), "minmax set");
    CHECK(t, s && b && s != scale && !memcmp(s, scale, sizeof scale) && !memcmp(b, shift, sizeof shift),
          "the values are copied");
    scale[0] = 99;
    CHECK(t, s[0] == 0.002f, "the model's copy is its own");
    CHECK(t, dm_model_find(m, DM_PRE_SCALE, NULL, NULL) != DM_OK && dm_model_find(m, DM_PRE_SHIFT, NULL, NULL) != DM_OK,
          "not a tensor of the model");

    /* refusals leave the map as it was */
    struct { const char *method; int scale, shift; float bad_s, bad_b; const char *msg; } bad[] = {
        {"zscore", 1, 1, 0, 0, "unknown method \"zscore\" (known: none, minmax, standard, pixel)"},
        {"none", 1, 1, 0, 0, "method none takes no scale or shift"},
        {"standard", 1, 0, 0, 0, "method standard needs both scale and shift"},
        {"standard", 0, 1, 0, 0, "method standard needs both scale and shift"},
        {"standard", 1, 1, NAN, 0, "scale[2] is NaN"},
        {"standard", 1, 1, 0, INFINITY, "shift[2] is Inf"},
        {NULL, 1, 0, 0, 0, "scale and shift without a method name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float s2[IN] = {1, 1, bad[i].bad_s, 1, 1}, b2[IN] = {0, 0, bad[i].bad_b, 0, 0};
        memset(&err, 0, sizeof err);
        dm_status st = dm_model_set_preprocess(m, bad[i].method, bad[i].scale ? s2 : NULL, bad[i].shift ? b2 : NULL,
                                               &err);
        CHECK(t, st == DM_ERR_ARG && strstr(err.msg, bad[i].msg), "case %zu: %s: %s", i, dm_status_name(st), err.msg);
        CHECK(t, dm_model_preprocess(m, &method, &s, NULL) == 1 && !strcmp(method, "minmax") && s[0] == 0.002f,
              "case %zu: the map is kept", i);
    }
    CHECK_OK(t, dm_model_set_preprocess(m, "none", NULL, NULL, &err), &err);
    CHECK(t, dm_model_preprocess(m, &method, &s, &b) == 0 && method && !strcmp(method, "none") && !s && !b,
          "none: recorded, no map");
    CHECK_OK(t, dm_model_set_preprocess(m, NULL, NULL, NULL, &err), &err);
    CHECK(t, dm_model_preprocess(m, &method, NULL, NULL) == 0 && method == NULL, "cleared");
    CHECK(t, dm_normalize_parse("standard") == DM_NORM_STANDARD && dm_normalize_parse("Standard") == -1 &&
          !strcmp(dm_normalize_name(DM_NORM_PIXEL), "pixel") && dm_data_spec_normalize("a.npy,b.npy") == DM_NORM_MINMAX &&
          dm_data_spec_normalize("mnist:d") == DM_NORM_PIXEL && dm_data_spec_normalize("synthetic") == DM_NORM_NONE,
          "names and the sets' own methods");
    dm_model_free(m);
}

/* ---------------------------------------------------------------- files */

static void test_pre_save_load(dm_t *t)
{
    dm_config c = net_cfg();
    dm_model *m, *l;
    dm_error err;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    randomize(m, 3);
    float scale[IN] = {0.002f, 1e-3f, 0, 7.5f, 0.1f}, shift[IN] = {-1, -0.5f, 0, -3.25f, 1e-7f};
    CHECK_OK(t, dm_model_set_preprocess(m, "standard", scale, shift, &err), &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/pre.safetensors", dm_test_tmpdir());
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    CHECK_OK(t, dm_model_load(path, NULL, &l, &err), &err);
    const char *method = NULL;
    const float *s = NULL, *b = NULL;
    CHECK(t, l && dm_model_preprocess(l, &method, &s, &b) == 1 && !strcmp(method, "standard") &&
          !memcmp(s, scale, sizeof scale) && !memcmp(b, shift, sizeof shift), "standard round trip");
    CHECK(t, l && dm_model_n_tensors(l) == dm_model_n_tensors(m) && dm_model_param_count(l) == dm_model_param_count(m),
          "the map is not a parameter");
    /* the loaded model computes what the saved one did */
    float *x = raw_rows(9, IN, 4), y1[9 * 3], y2[9 * 3];
    dm_ctx *ca = NULL, *cb = NULL;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ca, &err), &err);
    CHECK_OK(t, dm_ctx_create(l, NULL, &cb, &err), &err);
    CHECK_OK(t, dm_forward(ca, x, 9, y1, NULL, &err), &err);
    CHECK_OK(t, dm_forward(cb, x, 9, y2, NULL, &err), &err);
    CHECK(t, !memcmp(y1, y2, sizeof y1), "loaded model, same outputs");
    dm_ctx_free(ca);
    dm_ctx_free(cb);
    dm_model_free(l);
    dm_st_file f;
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    const dm_st_tensor *ts = dm_st_find(&f, DM_PRE_SCALE);
    CHECK(t, ts && ts->dtype == DM_DT_F32 && ts->ndim == 1 && ts->shape[0] == IN && dm_st_find(&f, DM_PRE_SHIFT) &&
          dm_st_meta(&f, DM_NORMALIZE_KEY) && !strcmp(dm_st_meta(&f, DM_NORMALIZE_KEY), "standard"),
          "the file: two F32 tensors [in] and the method's name");
    dm_st_close(&f);

    /* none: the key alone */
    CHECK_OK(t, dm_model_set_preprocess(m, "none", NULL, NULL, &err), &err);
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, !dm_st_find(&f, DM_PRE_SCALE) && !dm_st_find(&f, DM_PRE_SHIFT) && dm_st_meta(&f, DM_NORMALIZE_KEY) &&
          !strcmp(dm_st_meta(&f, DM_NORMALIZE_KEY), "none"), "none: no tensors, the key says none");
    dm_st_close(&f);
    CHECK_OK(t, dm_model_load(path, NULL, &l, &err), &err);
    CHECK(t, l && dm_model_preprocess(l, &method, NULL, NULL) == 0 && method && !strcmp(method, "none"),
          "none round trip");
    dm_model_free(l);
    /* nothing recorded: nothing written, nothing read (every file before this) */
    CHECK_OK(t, dm_model_set_preprocess(m, NULL, NULL, NULL, &err), &err);
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, !dm_st_find(&f, DM_PRE_SCALE) && !dm_st_meta(&f, DM_NORMALIZE_KEY), "no map: no key");
    dm_st_close(&f);
    CHECK_OK(t, dm_model_load(path, NULL, &l, &err), &err);
    CHECK(t, l && dm_model_preprocess(l, &method, NULL, NULL) == 0 && method == NULL, "no map round trip");
    dm_model_free(l);
    /* a packed-only (inference) model keeps and saves it too */
    CHECK_OK(t, dm_model_set_preprocess(m, "pixel", scale, shift, &err), &err);
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    dm_model_opts po;
    dm_model_opts_default(&po);
    po.packed_only = 1;
    CHECK_OK(t, dm_model_load(path, &po, &l, &err), &err);
    CHECK(t, l && dm_model_preprocess(l, &method, &s, NULL) == 1 && !strcmp(method, "pixel") && s[3] == 7.5f,
          "packed-only model");
    dm_model_free(l);
    free(x);
    dm_model_free(m);
}

/* The model's tensors, then preprocess tensors as a case says, and the metadata. */
typedef struct bad_case {
    int scale_n, scale_rows;  /* scale tensor: 0 = absent; elements; rows > 0: 2-D [rows, n / rows] */
    int shift_n;              /* shift tensor: 0 = absent */
    float nan_at_shift;       /* a value put at shift[2] */
    int scale_f64;            /* write scale as F64 */
    const char *method;       /* deepmoe.normalize, or NULL */
    dm_status code;
    const char *msg;
} bad_case;

static void write_bad(const dm_model *m, const char *path, const bad_case *bc)
{
    int n = dm_model_n_tensors(m);
    dm_st_out *o = calloc((size_t)n + 2, sizeof *o);
    for (int i = 0; i < n; i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        o[i] = (dm_st_out){.name = ti.name, .ndim = ti.ndim, .shape = {ti.shape[0], ti.shape[1]}, .data = ti.data};
    }
    static float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, zeros[16];
    static double ones64[16] = {1, 1, 1, 1, 1, 1, 1, 1};
    zeros[2] = bc->nan_at_shift;
    int k = n;
    if (bc->scale_n) {
        o[k] = (dm_st_out){.name = DM_PRE_SCALE, .ndim = 1, .shape = {bc->scale_n}, .data = ones};
        if (bc->scale_rows) o[k] = (dm_st_out){.name = DM_PRE_SCALE, .ndim = 2,
                                               .shape = {bc->scale_rows, bc->scale_n / bc->scale_rows}, .data = ones};
        if (bc->scale_f64) {
            o[k].data = NULL;
            o[k].raw = ones64;
            o[k].dtype = DM_DT_F64;
        }
        k++;
    }
    if (bc->shift_n) o[k++] = (dm_st_out){.name = DM_PRE_SHIFT, .ndim = 1, .shape = {bc->shift_n}, .data = zeros};
    char *cfg = dm_config_to_json(dm_model_config(m));
    const char *meta[] = {"deepmoe.config", cfg, DM_NORMALIZE_KEY, bc->method};
    dm_error err;
    dm_st_write(path, o, k, meta, bc->method ? 2 : 1, &err);
    free(cfg);
    free(o);
}

static void test_pre_bad_files(dm_t *t)
{
    dm_config c = net_cfg();
    dm_model *m, *bad = NULL;
    dm_error err;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/badpre.safetensors", dm_test_tmpdir());
    const bad_case cases[] = {
        {IN + 1, 0, IN, 0, 0, "minmax", DM_ERR_SHAPE, "tensor preprocess.scale has shape [6], expected [5] (the model's input width)"},
        {10, 2, IN, 0, 0, "minmax", DM_ERR_SHAPE, "tensor preprocess.scale has shape [2, 5], expected [5]"},
        {IN, 0, IN - 1, 0, 0, "standard", DM_ERR_SHAPE, "tensor preprocess.shift has shape [4], expected [5]"},
        {IN, 0, IN, NAN, 0, "minmax", DM_ERR_FORMAT, "tensor preprocess.shift: value 2 is NaN; the preprocessing must be finite"},
        {IN, 0, IN, -INFINITY, 0, "minmax", DM_ERR_FORMAT, "tensor preprocess.shift: value 2 is Inf"},
        {IN, 0, 0, 0, 0, "minmax", DM_ERR_FORMAT, "tensor preprocess.scale without preprocess.shift: the input preprocessing needs both"},
        {0, 0, IN, 0, 0, "minmax", DM_ERR_FORMAT, "tensor preprocess.shift without preprocess.scale"},
        {IN, 0, IN, 0, 0, "zscore", DM_ERR_FORMAT, "metadata deepmoe.normalize \"zscore\" is not a preprocessing this build knows (known: none, minmax, standard, pixel)"},
        {IN, 0, IN, 0, 0, NULL, DM_ERR_FORMAT, "tensors preprocess.scale and preprocess.shift without metadata deepmoe.normalize"},
        {0, 0, 0, 0, 0, "minmax", DM_ERR_FORMAT, "metadata deepmoe.normalize is \"minmax\" but the file has no preprocess.scale and preprocess.shift"},
        {IN, 0, IN, 0, 0, "none", DM_ERR_FORMAT, "metadata deepmoe.normalize is \"none\" but the file holds preprocess.scale"},
        {IN, 0, IN, 0, 1, "pixel", DM_ERR_FORMAT, "tensor preprocess.scale is F64, expected F32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_bad(m, path, &cases[i]);
        memset(&err, 0, sizeof err);
        dm_status st = dm_model_load(path, NULL, &bad, &err);
        CHECK(t, st == cases[i].code, "case %zu: status %s, want %s (%s)", i, dm_status_name(st),
              dm_status_name(cases[i].code), err.msg);
        CHECK(t, strstr(err.msg, cases[i].msg) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg,
              cases[i].msg);
        CHECK(t, strstr(err.msg, path) == err.msg, "case %zu: the message starts with the path: %s", i, err.msg);
        CHECK(t, bad == NULL, "case %zu: no model on error", i);
        dm_model_free(bad);
        bad = NULL;
    }
    /* and the good one the cases are made from loads */
    bad_case good = {IN, 0, IN, 0, 0, "minmax", DM_OK, ""};
    write_bad(m, path, &good);
    CHECK_OK(t, dm_model_load(path, NULL, &bad, &err), &err);
    CHECK(t, bad && dm_model_preprocess(bad, NULL, NULL, NULL) == 1, "a well-formed map loads");
    dm_model_free(bad);
    dm_model_free(m);
}

/* ---------------------------------------------------------------- forward */

/* With a map on raw rows == without one on rows scaled beforehand, bit for bit:
 * outputs and routing, sparse (threads, a batch that regrows the scratch) and dense. */
static void forward_case(dm_t *t, const char *what, dm_config c)
{
    dm_model *m;
    dm_error err;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    randomize(m, 11);
    int in = c.in_dim ? c.in_dim : c.dim, out = c.n_classes ? c.n_classes : c.dim, kl = c.top_k * c.n_layers;
    float *scale = malloc((size_t)in * sizeof *scale), *shift = malloc((size_t)in * sizeof *shift);
    dm_rng r;
    dm_rng_seed(&r, 5);
    for (int j = 0; j < in; j++) {
        scale[j] = dm_rng_uniform(&r, 0.0005f, 0.003f);
        shift[j] = dm_rng_uniform(&r, -1.5f, -0.5f);
    }
    scale[0] = 0;   /* a constant column */
    dm_pool *pool = NULL;
    CHECK_OK(t, dm_pool_create(3, &pool, &err), &err);
    const int64_t ns[3] = {7, 300, 40};
    for (int q = 0; q < 3; q++) {
        int64_t n = ns[q];
        float *x = raw_rows(n, in, 100 + q), *keep = malloc((size_t)n * in * sizeof *keep);
        float *xs = malloc((size_t)n * in * sizeof *xs);
        float *y1 = malloc((size_t)n * out * sizeof *y1), *y2 = malloc((size_t)n * out * sizeof *y2);
        int32_t *e1 = malloc((size_t)n * kl * sizeof *e1), *e2 = malloc((size_t)n * kl * sizeof *e2);
        float *w1 = malloc((size_t)n * kl * sizeof *w1), *w2 = malloc((size_t)n * kl * sizeof *w2);
        memcpy(keep, x, (size_t)n * in * sizeof *x);
        scale_rows(x, n, in, scale, shift, xs);
        dm_routing r1 = {e1, w1}, r2 = {e2, w2};
        dm_ctx *ctx = NULL;
        CHECK_OK(t, dm_ctx_create(m, pool, &ctx, &err), &err);
        CHECK_OK(t, dm_model_set_preprocess(m, NULL, NULL, NULL, &err), &err);
        CHECK_OK(t, dm_forward(ctx, xs, n, y1, &r1, &err), &err);
        CHECK_OK(t, dm_model_set_preprocess(m, "minmax", scale, shift, &err), &err);   /* the ctx is older */
        CHECK_OK(t, dm_forward(ctx, x, n, y2, &r2, &err), &err);
        CHECK(t, !memcmp(y1, y2, (size_t)n * out * sizeof *y1) && !memcmp(e1, e2, (size_t)n * kl * sizeof *e1) &&
              !memcmp(w1, w2, (size_t)n * kl * sizeof *w1), "%s, %lld rows: sparse outputs or routing differ", what,
              (long long)n);
        CHECK(t, !memcmp(x, keep, (size_t)n * in * sizeof *x), "%s: the caller's rows are untouched", what);
        if (n <= 40) {
            CHECK_OK(t, dm_forward_dense(m, x, n, y2, &r2, &err), &err);
            CHECK_OK(t, dm_model_set_preprocess(m, NULL, NULL, NULL, &err), &err);
            CHECK_OK(t, dm_forward_dense(m, xs, n, y1, &r1, &err), &err);
            CHECK(t, !memcmp(y1, y2, (size_t)n * out * sizeof *y1) && !memcmp(e1, e2, (size_t)n * kl * sizeof *e1),
                  "%s, %lld rows: dense outputs or routing differ", what, (long long)n);
            CHECK(t, !memcmp(x, keep, (size_t)n * in * sizeof *x), "%s: dense: the caller's rows are untouched", what);
        }
        dm_ctx_free(ctx);
        free(x); free(keep); free(xs); free(y1); free(y2); free(e1); free(e2); free(w1); free(w2);
    }
    dm_pool_free(pool);
    free(scale);
    free(shift);
    dm_model_free(m);
}

static void test_pre_forward_bitwise(dm_t *t)
{
    forward_case(t, "network", net_cfg());
    dm_config c;
    dm_config_default(&c);
    c.dim = 16; c.n_experts = 4; c.top_k = 2; c.hidden = 8;
    forward_case(t, "bare seed layer", c);
    c.expert = DM_EXPERT_SWIGLU;
    c.n_shared = 1;
    c.n_layers = 2;
    c.in_dim = 6;
    forward_case(t, "swiglu, shared, 2 layers", c);
}

/* The NaN/Inf check is on the raw rows; a value the map takes past the float range is refused too. */
static void test_pre_forward_refusals(dm_t *t)
{
    dm_config c = net_cfg();
    dm_model *m;
    dm_error err;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    float scale[IN] = {1, 1, 1e30f, 1, 1}, shift[IN] = {0};
    CHECK_OK(t, dm_model_set_preprocess(m, "standard", scale, shift, &err), &err);
    dm_ctx *ctx;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    float x[4 * IN] = {0}, y[4 * 3];
    for (int i = 0; i < 4 * 3; i++) y[i] = 42;
    x[2 * IN + 1] = NAN;
    CHECK(t, dm_forward(ctx, x, 4, y, NULL, &err) == DM_ERR_NONFINITE && strstr(err.msg, "row 2, column 1 is NaN"),
          "raw NaN: %s", err.msg);
    x[2 * IN + 1] = 0;
    x[3 * IN + 2] = 1e10f;
    CHECK(t, dm_forward(ctx, x, 4, y, NULL, &err) == DM_ERR_NONFINITE &&
          strstr(err.msg, "input row 3, column 2 (1e+10) is Inf after the model's standard preprocessing"),
          "overflow: %s", err.msg);
    CHECK(t, dm_forward_dense(m, x, 4, y, NULL, &err) == DM_ERR_NONFINITE && strstr(err.msg, "is Inf after"),
          "dense overflow: %s", err.msg);
    int untouched = 1;
    for (int i = 0; i < 4 * 3; i++) untouched &= y[i] == 42;
    CHECK(t, untouched, "the output is untouched on error");
    dm_ctx_free(ctx);
    dm_model_free(m);
}

/* ---------------------------------------------------------------- data */

/* X.npy [n, 4] over [0, 1000] with a constant column 1, Y labels or targets. */
static const char *write_set(const char *name, int64_t n, int classify, char *spec, size_t cap)
{
    float *x = raw_rows(n, 4, 21), *y = malloc((size_t)n * 4 * sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        x[i * 4 + 1] = 250;
        if (classify) y[i] = (float)((x[i * 4] > 500) + (x[i * 4 + 2] > 500));
        else
            for (int j = 0; j < 4; j++) y[i * 4 + j] = (x[i * 4 + j] - 500) / 500 * (j == 1 ? 0 : 1);
    }
    char px[1024], py[1024];
    snprintf(px, sizeof px, "%s/%s_x.npy", dm_test_tmpdir(), name);
    snprintf(py, sizeof py, "%s/%s_y.npy", dm_test_tmpdir(), name);
    dm_error err;
    dm_npy_write(px, x, n, 4, &err);
    dm_npy_write(py, y, n, classify ? 1 : 4, &err);
    snprintf(spec, cap, "%s,%s", px, py);
    free(x);
    free(y);
    return spec;
}

static void test_pre_data_methods(dm_t *t)
{
    char spec[2200];
    write_set("meth", 200, 0, spec, sizeof spec);
    dm_data raw, d;
    dm_error err;
    CHECK_OK(t, dm_data_load_norm(spec, DM_TASK_REGRESS, 0, -1, DM_NORM_NONE, &raw, &err), &err);
    CHECK(t, raw.normalize == DM_NORM_NONE && !raw.scale && raw.train.n == 180 && raw.train.x[1] == 250 &&
          raw.test.x[1] == 250, "none: raw values");
    const dm_normalize ms[3] = {DM_NORM_MINMAX, DM_NORM_STANDARD, DM_NORM_PIXEL};
    for (int q = 0; q < 3; q++) {
        CHECK_OK(t, dm_data_load_norm(spec, DM_TASK_REGRESS, 0, -1, ms[q], &d, &err), &err);
        const char *nm = dm_normalize_name(ms[q]);
        CHECK(t, d.normalize == ms[q] && d.scale && d.shift, "%s recorded", nm);
        if (!d.scale) continue;
        /* both splits are the documented map of the raw rows, by the train split's fit */
        int same = 1;
        const dm_dataset *sp[2][2] = {{&raw.train, &d.train}, {&raw.test, &d.test}};
        for (int s = 0; s < 2; s++)
            for (int64_t i = 0; i < sp[s][0]->n * 4; i++) {
                float v = sp[s][0]->x[i] * d.scale[i % 4];
                same &= sp[s][1]->x[i] == v + d.shift[i % 4];
            }
        CHECK(t, same, "%s: x = raw * scale + shift", nm);
        CHECK(t, ms[q] == DM_NORM_PIXEL || (d.scale[1] == 0 && d.shift[1] == 0 && d.train.x[1] == 0),
              "%s: the constant column is 0", nm);
        for (int j = 0; j < 4; j += 2) {
            double lo = 1e30, hi = -1e30, mean = 0, var = 0;
            for (int64_t i = 0; i < d.train.n; i++) {
                double v = d.train.x[i * 4 + j];
                lo = fmin(lo, v), hi = fmax(hi, v), mean += v;
            }
            mean /= (double)d.train.n;
            for (int64_t i = 0; i < d.train.n; i++) var += pow(d.train.x[i * 4 + j] - mean, 2);
            double sd = sqrt(var / (double)d.train.n);
            if (ms[q] == DM_NORM_MINMAX)
                CHECK(t, fabs(lo + 1) < 1e-6 && fabs(hi - 1) < 1e-6, "minmax column %d: [%g, %g]", j, lo, hi);
            if (ms[q] == DM_NORM_STANDARD)
                CHECK(t, fabs(mean) < 1e-5 && fabs(sd - 1) < 1e-5, "standard column %d: mean %g std %g", j, mean, sd);
            if (ms[q] == DM_NORM_PIXEL)
                CHECK(t, d.scale[j] == (float)(1 / 127.5) && d.shift[j] == -1, "pixel: fixed map");
        }
        /* a library user puts the loader's map on the model: forward on raw rows == forward on d.x */
        dm_config c = net_cfg();   /* the bare layer on 4 features */
        c.dim = 4;
        c.in_dim = c.n_classes = 0;
        dm_model *m;
        CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
        randomize(m, 8);
        float *y1 = malloc((size_t)d.test.n * 4 * sizeof *y1), *y2 = malloc((size_t)d.test.n * 4 * sizeof *y2);
        dm_ctx *ctx;
        CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
        CHECK_OK(t, dm_forward(ctx, d.test.x, d.test.n, y1, NULL, &err), &err);
        CHECK_OK(t, dm_model_set_preprocess(m, dm_normalize_name(d.normalize), d.scale, d.shift, &err), &err);
        CHECK_OK(t, dm_forward(ctx, raw.test.x, raw.test.n, y2, NULL, &err), &err);
        CHECK(t, !memcmp(y1, y2, (size_t)d.test.n * 4 * sizeof *y1), "%s: the model's map is the loader's", nm);
        dm_ctx_free(ctx);
        dm_model_free(m);
        free(y1);
        free(y2);
        dm_data_free(&d);
    }
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 0, &d, &err), &err);
    CHECK(t, d.normalize == DM_NORM_MINMAX, "dm_data_load: .npy is minmax by default (%s)", dm_normalize_name(d.normalize));
    dm_data_free(&d);
    CHECK_OK(t, dm_data_load("synthetic:rows=50,dim=4", DM_TASK_REGRESS, 0, &d, &err), &err);
    CHECK(t, d.normalize == DM_NORM_NONE && !d.scale, "synthetic: none by default");
    dm_data_free(&d);
    CHECK(t, dm_data_load_norm(spec, DM_TASK_REGRESS, 0, -1, (dm_normalize)9, &d, &err) == DM_ERR_ARG &&
          strstr(err.msg, "unknown normalization 9"), "unknown method: %s", err.msg);
    dm_data_free(&raw);
}

/* ---------------------------------------------------------------- a training run */

static dm_run_opts run_opts(const char *name, const char *spec, int classify)
{
    static char dirs[8][1024];
    static int slot;
    char *dir = dirs[slot++ % 8];
    snprintf(dir, 1024, "%s/%s", dm_test_tmpdir(), name);
    dm_run_opts o;
    dm_run_opts_init(&o);
    o.data = spec;
    o.out = dir;
    o.task = classify ? DM_TASK_CLASSIFY : DM_TASK_REGRESS;
    o.config.n_experts = 4;
    o.config.hidden = 8;
    if (classify) o.config.dim = 12, o.config.n_layers = 1;
    o.batch = 20;
    o.steps = 30;
    o.train.warmup = 3;
    o.log_every = 10;
    o.checkpoint_every = 10;
    o.eval_every = 10;
    o.threads = 2;
    o.seed = 9;
    return o;
}

typedef struct evals {
    dm_eval ev[4];
    int n;
} evals;

static int keep_evals(const dm_run_progress *p, void *user)
{
    evals *e = user;
    if (p->event == DM_RUN_EVAL && e->n < 4) e->ev[e->n++] = *p->eval;
    return 0;
}

/* The run's evaluation (in-run and final) == dm_evaluate of the saved model on the raw test rows. */
static void run_case(dm_t *t, const char *name, const char *spec, int classify, int normalize)
{
    dm_run_opts o = run_opts(name, spec, classify);
    o.normalize = normalize;
    evals e = {0};
    dm_run_result res = {.struct_size = sizeof res};
    dm_error err;
    CHECK_OK(t, dm_run_train(&o, keep_evals, &e, &res, &err), &err);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", o.out);
    dm_model *m = NULL;
    CHECK_OK(t, dm_model_load(path, NULL, &m, &err), &err);
    if (!m) return;
    dm_normalize want = normalize == DM_RUN_DEFAULT ? DM_NORM_MINMAX : (dm_normalize)normalize;
    const char *method;
    const float *scale, *shift;
    int has = dm_model_preprocess(m, &method, &scale, &shift);
    CHECK(t, method && !strcmp(method, dm_normalize_name(want)) && has == (want != DM_NORM_NONE), "%s: method %s",
          name, method ? method : "NULL");
    dm_data raw, fit;
    CHECK_OK(t, dm_data_load_norm(spec, o.task, 0, -1, DM_NORM_NONE, &raw, &err), &err);
    CHECK_OK(t, dm_data_load_norm(spec, o.task, 0, -1, want, &fit, &err), &err);
    CHECK(t, !has || (fit.scale && !memcmp(scale, fit.scale, 4 * sizeof *scale) &&
                      !memcmp(shift, fit.shift, 4 * sizeof *shift)), "%s: the model's map is the train split's fit", name);
    dm_ctx *ctx = NULL;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    dm_eval ev = {0};
    CHECK_OK(t, dm_evaluate(ctx, raw.test.x, raw.test.y, classify ? raw.test.labels : NULL, NULL, raw.test.n,
                            o.oracle_rows, &ev, &err), &err);
    CHECK(t, res.evaluated && res.eval.loss == ev.loss && res.eval.accuracy == ev.accuracy && res.eval.mse == ev.mse &&
          res.eval.routing_accuracy == ev.routing_accuracy, "%s: the run's final evaluation (loss %.9g acc %g mse %g) "
          "!= the saved model's on raw rows (loss %.9g acc %g mse %g)", name, res.eval.loss, res.eval.accuracy,
          res.eval.mse, ev.loss, ev.accuracy, ev.mse);
    CHECK(t, e.n == 3 && e.ev[2].loss == ev.loss, "%s: %d evaluations, the last one's loss %.9g", name, e.n,
          e.n ? e.ev[e.n - 1].loss : 0);
    /* the same model without its map on the loader's scaled rows: the same numbers */
    if (has) {
        dm_eval ev2 = {0};
        dm_model_set_preprocess(m, NULL, NULL, NULL, &err);
        CHECK_OK(t, dm_evaluate(ctx, fit.test.x, fit.test.y, classify ? fit.test.labels : NULL, NULL, fit.test.n, 0,
                                &ev2, &err), &err);
        CHECK(t, ev2.loss == ev.loss, "%s: no map on the loader's scaled rows gives the same loss (%.9g, %.9g)",
              name, ev2.loss, ev.loss);
    }
    dm_ctx_free(ctx);
    dm_model_free(m);
    dm_data_free(&raw);
    dm_data_free(&fit);
}

static void test_pre_run_eval_equals_saved_model(dm_t *t)
{
    char cls[2200], reg[2200];
    write_set("runc", 300, 1, cls, sizeof cls);
    write_set("runr", 300, 0, reg, sizeof reg);
    run_case(t, "pre_cls_default", cls, 1, DM_RUN_DEFAULT);
    run_case(t, "pre_cls_standard", cls, 1, DM_NORM_STANDARD);
    run_case(t, "pre_reg_minmax", reg, 0, DM_NORM_MINMAX);
    run_case(t, "pre_reg_none", reg, 0, DM_NORM_NONE);
}

/* A resumed run keeps its model's method (standard here, not the set's minmax): the same bytes as straight. */
static void test_pre_run_resume(dm_t *t)
{
    char spec[2200];
    write_set("resume", 300, 0, spec, sizeof spec);
    dm_run_opts a = run_opts("pre_straight", spec, 0), b = run_opts("pre_halves", spec, 0);
    a.normalize = b.normalize = DM_NORM_STANDARD;
    b.stop_at = 15;
    dm_error err;
    CHECK_OK(t, dm_run_train(&a, NULL, NULL, NULL, &err), &err);
    CHECK_OK(t, dm_run_train(&b, NULL, NULL, NULL, &err), &err);
    dm_run_opts c;
    dm_run_opts_init(&c);
    c.data = spec;
    c.resume = b.out;
    CHECK_OK(t, dm_run_train(&c, NULL, NULL, NULL, &err), &err);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a.out);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b.out);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    CHECK(t, same, "N straight != N/2 + resume with --normalize standard");
    /* a given model keeps its map unless the options name another */
    dm_run_opts g = run_opts("pre_given", spec, 0);
    g.model = pa;
    g.steps = 5;
    CHECK_OK(t, dm_run_train(&g, NULL, NULL, NULL, &err), &err);
    snprintf(pb, sizeof pb, "%s/model.safetensors", g.out);
    dm_model *m = NULL;
    const char *method = NULL;
    CHECK_OK(t, dm_model_load(pb, NULL, &m, &err), &err);
    CHECK(t, m && dm_model_preprocess(m, &method, NULL, NULL) && !strcmp(method, "standard"), "given model's: %s",
          method ? method : "NULL");
    dm_model_free(m);
    g.normalize = DM_NORM_MINMAX;
    CHECK_OK(t, dm_run_train(&g, NULL, NULL, NULL, &err), &err);
    CHECK_OK(t, dm_model_load(pb, NULL, &m, &err), &err);
    CHECK(t, m && dm_model_preprocess(m, &method, NULL, NULL) && !strcmp(method, "minmax"), "named: %s",
          method ? method : "NULL");
    dm_model_free(m);
    dm_run_opts bad = run_opts("pre_bad", spec, 0);
    bad.normalize = 7;
    CHECK(t, dm_run_train(&bad, NULL, NULL, NULL, &err) == DM_ERR_ARG && strstr(err.msg, "unknown normalize 7"),
          "bad option: %s", err.msg);
}

void suite_preprocess(dm_t *t)
{
    DM_RUN(t, test_pre_set_get);
    DM_RUN(t, test_pre_save_load);
    DM_RUN(t, test_pre_bad_files);
    DM_RUN(t, test_pre_forward_bitwise);
    DM_RUN(t, test_pre_forward_refusals);
    DM_RUN(t, test_pre_data_methods);
    DM_RUN(t, test_pre_run_eval_equals_saved_model);
    DM_RUN(t, test_pre_run_resume);
}
