/* test_moe.c - the MoE layer: sparse dispatch against the dense formula for
 * every variant, ISA and thread count; E = 1 as a dense FFN; ties; selection
 * bias; groups; non-finite inputs; save/load; bad model files; metrics. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "io/model_io.h"

#include <stdlib.h>

static const dm_isa isas[] = {DM_ISA_REF, DM_ISA_AVX2, DM_ISA_AVX512};

static dm_config small_cfg(void)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 24; c.n_experts = 6; c.top_k = 2; c.hidden = 12;
    return c;
}

/* Sparse forward (ctx, isa, threads) vs dm_forward_dense; returns rel err. */
static double sparse_vs_dense(dm_t *t, const dm_config *c, dm_isa isa, int threads, int64_t n, uint64_t seed)
{
    dm_error err;
    dm_model *m = NULL;
    dm_model_opts o;
    dm_model_opts_default(&o);
    o.isa = isa;
    CHECK_OK(t, dm_model_create(c, &o, &m, &err), &err);
    if (!m) return INFINITY;
    dm_test_randomize(m, seed);
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    size_t nn = (size_t)(n ? n : 1), nk = nn * c->top_k * c->n_layers;
    float *x = dm_test_rows(n, in, seed + 1);
    float *y = calloc(nn * out, sizeof *y), *yd = calloc(nn * out, sizeof *yd);
    int32_t *e = calloc(nk, sizeof *e), *ed = calloc(nk, sizeof *ed);
    float *w = calloc(nk, sizeof *w), *wd = calloc(nk, sizeof *wd);
    dm_pool *p = NULL;
    dm_ctx *ctx = NULL;
    CHECK_OK(t, dm_pool_create(threads, &p, &err), &err);
    CHECK_OK(t, dm_ctx_create(m, p, &ctx, &err), &err);
    dm_routing r = {e, w}, rd = {ed, wd};
    CHECK_OK(t, dm_forward(ctx, x, n, y, &r, &err), &err);
    CHECK_OK(t, dm_forward_dense(m, x, n, yd, &rd, &err), &err);
    double re = dm_test_relerr(y, yd, n * out);
    CHECK(t, !memcmp(e, ed, nk * sizeof *e), "isa %s threads %d n %lld: routing differs",
          dm_isa_name(isa), threads, (long long)n);
    CHECK(t, dm_test_relerr(w, wd, (int64_t)nk) <= 1e-5, "weights differ");
    dm_ctx_free(ctx);
    dm_pool_free(p);
    dm_model_free(m);
    free(x); free(y); free(yd); free(e); free(ed); free(w); free(wd);
    return re;
}

static void check_variant(dm_t *t, const char *what, const dm_config *c)
{
    static const int64_t sizes[] = {1, 3, 17, 63, 257};
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (dm_isa_resolve(isas[i]) != isas[i]) continue;
        for (int threads = 1; threads <= 2; threads++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                double re = sparse_vs_dense(t, c, isas[i], threads, sizes[s], 7 + s);
                CHECK(t, re <= 1e-5, "%s isa %s threads %d n %lld: sparse vs dense rel err %.3g",
                      what, dm_isa_name(isas[i]), threads, (long long)sizes[s], re);
            }
    }
}

static void test_moe_sparse_equals_dense_seed(dm_t *t)
{
    dm_config c = small_cfg();
    check_variant(t, "seed", &c);
}

static void test_moe_sparse_equals_dense_variants(dm_t *t)
{
    dm_config c = small_cfg();
    c.router = DM_ROUTER_SOFTMAX; check_variant(t, "softmax", &c);
    c.norm_topk = 1; c.route_scale = 1.7f; check_variant(t, "softmax+norm", &c);
    c = small_cfg(); c.router = DM_ROUTER_SIGMOID; c.route_scale = 2.5f; check_variant(t, "sigmoid", &c);
    c = small_cfg(); c.selection_bias = 1; check_variant(t, "bias", &c);
    c = small_cfg(); c.n_experts = 8; c.n_groups = 4; c.topk_groups = 2; c.top_k = 3;
    c.router = DM_ROUTER_SIGMOID; c.selection_bias = 1; check_variant(t, "grouped", &c);
    c = small_cfg(); c.n_shared = 2; c.shared_hidden = 7; check_variant(t, "shared", &c);
    c = small_cfg(); c.expert = DM_EXPERT_SWIGLU; check_variant(t, "swiglu", &c);
    c.n_shared = 1; c.shared_hidden = 20; c.router = DM_ROUTER_SIGMOID; check_variant(t, "swiglu+shared", &c);
    c = small_cfg(); c.top_k = c.n_experts; check_variant(t, "k=E", &c);
    c = small_cfg(); c.dim = 33; c.hidden = 65; c.n_experts = 5; check_variant(t, "odd sizes", &c);
}

/* The classifier network: embedding, three MoE layers, final norm, head. */
static void test_moe_sparse_equals_dense_network(dm_t *t)
{
    dm_config c = small_cfg();
    c.n_layers = 3; c.in_dim = 20; c.n_classes = 5;
    check_variant(t, "network", &c);
    c.expert = DM_EXPERT_SWIGLU; c.n_shared = 1; c.router = DM_ROUTER_SOFTMAX; c.n_layers = 2;
    check_variant(t, "swiglu network", &c);
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_tensor_info ti;
    CHECK(t, dm_model_find(m, "embed.weight", &ti, &err) == DM_OK && ti.shape[0] == 24 && ti.shape[1] == 20, "embed.weight [24, 20]");
    CHECK(t, dm_model_find(m, "layers.1.gating.gate.weight", &ti, &err) == DM_OK, "layers.1.gating.gate.weight");
    CHECK(t, dm_model_find(m, "layers.0.shared_experts.0.w2.weight", &ti, &err) == DM_OK, "layers.0.shared_experts.0.w2.weight");
    CHECK(t, dm_model_find(m, "head.weight", &ti, &err) == DM_OK && ti.shape[0] == 5 && ti.shape[1] == 24, "head.weight [5, 24]");
    CHECK(t, dm_model_find(m, "norm.bias", &ti, &err) == DM_OK, "norm.bias");
    CHECK(t, dm_model_find(m, "gating.gate.weight", &ti, &err) == DM_ERR_ARG, "no unprefixed names in a network");
    CHECK(t, strstr(err.msg, "no tensor 'gating.gate.weight'") && strstr(err.msg, "embed.weight, embed.bias, layers.0.gating.gate.weight"),
          "the message lists the valid names: %s", err.msg);
    dm_model_free(m);
}

/* E = 1, k = 1: the router's softmax over one logit is 1, so the layer is the
 * expert itself: y = LN(ReLU(x W1^T + b1)) W2^T + b2 + x, written out here. */
static void test_moe_single_expert_is_dense_ffn(dm_t *t)
{
    dm_config c = small_cfg();
    c.n_experts = 1; c.top_k = 1;
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (dm_isa_resolve(isas[i]) != isas[i]) continue;
        dm_error err;
        dm_model *m;
        dm_model_opts o;
        dm_model_opts_default(&o);
        o.isa = isas[i];
        CHECK_OK(t, dm_model_create(&c, &o, &m, &err), &err);
        dm_test_randomize(m, 99);
        int n = 19, D = c.dim, H = c.hidden;
        float *x = dm_test_rows(n, D, 5), *y = malloc((size_t)n * D * sizeof *y), *want = malloc((size_t)n * D * sizeof *want);
        dm_tensor_info w1, b1, g, b, w2, b2;
        CHECK_OK(t, dm_model_find(m, "experts.0.net.0.weight", &w1, &err), &err);
        CHECK_OK(t, dm_model_find(m, "experts.0.net.0.bias", &b1, &err), &err);
        CHECK_OK(t, dm_model_find(m, "experts.0.net.2.weight", &g, &err), &err);
        CHECK_OK(t, dm_model_find(m, "experts.0.net.2.bias", &b, &err), &err);
        CHECK_OK(t, dm_model_find(m, "experts.0.net.3.weight", &w2, &err), &err);
        CHECK_OK(t, dm_model_find(m, "experts.0.net.3.bias", &b2, &err), &err);
        for (int r = 0; r < n; r++) {
            double h[64], mean = 0, var = 0;
            for (int j = 0; j < H; j++) {
                double s = b1.data[j];
                for (int d = 0; d < D; d++) s += x[r * D + d] * w1.data[j * D + d];
                h[j] = s > 0 ? s : 0;
                mean += h[j] / H;
            }
            for (int j = 0; j < H; j++) var += (h[j] - mean) * (h[j] - mean) / H;
            for (int j = 0; j < H; j++) h[j] = (h[j] - mean) / sqrt(var + 1e-5) * g.data[j] + b.data[j];
            for (int d = 0; d < D; d++) {
                double s = b2.data[d] + x[r * D + d];
                for (int j = 0; j < H; j++) s += h[j] * w2.data[d * H + j];
                want[r * D + d] = (float)s;
            }
        }
        dm_ctx *ctx;
        CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
        float wts[19];
        int32_t ex[19];
        dm_routing route = {ex, wts};
        CHECK_OK(t, dm_forward(ctx, x, n, y, &route, &err), &err);
        double re = dm_test_relerr(y, want, (int64_t)n * D);
        CHECK(t, re <= 1e-5, "isa %s: E=1 vs dense FFN rel err %.3g", dm_isa_name(isas[i]), re);
        for (int r = 0; r < n; r++) CHECK(t, ex[r] == 0 && wts[r] == 1.0f, "row %d: expert %d weight %g", r, ex[r], (double)wts[r]);
        dm_ctx_free(ctx);
        dm_model_free(m);
        free(x); free(y); free(want);
    }
}

/* All logits equal: top-k must take experts 0..k-1 (lower index first). */
static void test_moe_ties_choose_lower_index(dm_t *t)
{
    dm_config c = small_cfg();
    c.top_k = 3;
    for (int router = 0; router < 3; router++) {
        c.router = (dm_router_kind)router;
        dm_error err;
        dm_model *m;
        CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);  /* all-zero weights: every logit 0 */
        dm_ctx *ctx;
        CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
        float *x = dm_test_rows(4, c.dim, 1), y[4 * 24], w[12];
        int32_t e[12];
        dm_routing r = {e, w};
        CHECK_OK(t, dm_forward(ctx, x, 4, y, &r, &err), &err);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) {
                CHECK(t, e[i * 3 + j] == j, "router %s row %d slot %d: expert %d", dm_router_name(c.router), i, j, e[i * 3 + j]);
                CHECK(t, fabsf(w[i * 3 + j] - (router == DM_ROUTER_SOFTMAX ? 1.0f / 6 : 1.0f / 3)) < 1e-6f,
                      "router %s: tied weight %g", dm_router_name(c.router), (double)w[i * 3 + j]);
            }
        free(x);
        dm_ctx_free(ctx);
        dm_model_free(m);
    }
}

/* The selection bias moves the choice; the weights still come from the
 * unbiased logits of the chosen experts. */
static void test_moe_selection_bias_changes_choice_not_weights(dm_t *t)
{
    dm_config c = small_cfg();
    c.selection_bias = 1;
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_test_randomize(m, 3);
    dm_tensor_info bias, gw, gb;
    CHECK_OK(t, dm_model_find(m, "gating.expert_bias", &bias, &err), &err);
    CHECK_OK(t, dm_model_find(m, "gating.gate.weight", &gw, &err), &err);
    CHECK_OK(t, dm_model_find(m, "gating.gate.bias", &gb, &err), &err);
    for (int e = 0; e < c.n_experts; e++) bias.data[e] = 0;
    bias.data[5] = 100.0f;  /* expert 5 always chosen, first */
    dm_model_sync(m, &err);
    dm_ctx *ctx;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    int n = 40;
    float *x = dm_test_rows(n, c.dim, 11), *y = malloc((size_t)n * c.dim * sizeof *y), w[80];
    int32_t e[80];
    dm_routing r = {e, w};
    CHECK_OK(t, dm_forward(ctx, x, n, y, &r, &err), &err);
    for (int i = 0; i < n; i++) {
        CHECK(t, e[2 * i] == 5, "row %d: biased expert 5 must be chosen first, got %d", i, e[2 * i]);
        double l[2];
        for (int j = 0; j < 2; j++) {
            l[j] = gb.data[e[2 * i + j]];
            for (int d = 0; d < c.dim; d++) l[j] += x[i * c.dim + d] * gw.data[e[2 * i + j] * c.dim + d];
        }
        double w0 = 1 / (1 + exp(l[1] - l[0]));  /* softmax over the two unbiased logits */
        CHECK(t, fabs(w[2 * i] - w0) < 1e-5, "row %d: weight %g, want %g", i, (double)w[2 * i], w0);
    }
    free(x); free(y);
    dm_ctx_free(ctx);
    dm_model_free(m);
}

/* Group-limited routing: every chosen expert lies in one of the topk_groups
 * groups with the largest sum of their top-2 scores. */
static void test_moe_groups_limit_choice(dm_t *t)
{
    dm_config c = small_cfg();
    c.n_experts = 12; c.n_groups = 4; c.topk_groups = 2; c.top_k = 4; c.router = DM_ROUTER_SIGMOID;
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_test_randomize(m, 8);
    dm_tensor_info gw, gb;
    CHECK_OK(t, dm_model_find(m, "gating.gate.weight", &gw, &err), &err);
    CHECK_OK(t, dm_model_find(m, "gating.gate.bias", &gb, &err), &err);
    dm_ctx *ctx;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    int n = 50;
    float *x = dm_test_rows(n, c.dim, 12), *y = malloc((size_t)n * c.dim * sizeof *y), w[200];
    int32_t e[200];
    dm_routing r = {e, w};
    CHECK_OK(t, dm_forward(ctx, x, n, y, &r, &err), &err);
    int spread = 0;
    for (int i = 0; i < n; i++) {
        double s[12], gs[4];
        for (int k = 0; k < 12; k++) {
            double l = gb.data[k];
            for (int d = 0; d < c.dim; d++) l += x[i * c.dim + d] * gw.data[k * c.dim + d];
            s[k] = 1 / (1 + exp(-l));
        }
        for (int g = 0; g < 4; g++) {  /* sum of top-2 of 3 = total - min */
            double a = s[3 * g], b = s[3 * g + 1], cc = s[3 * g + 2];
            gs[g] = a + b + cc - fmin(a, fmin(b, cc));
        }
        double wsum = 0;
        int groups_used = 0;
        for (int j = 0; j < 4; j++) {
            int g = e[4 * i + j] / 3, better = 0;
            for (int h = 0; h < 4; h++) better += gs[h] > gs[g];
            CHECK(t, better < 2, "row %d: expert %d is in group %d, not one of the 2 best", i, e[4 * i + j], g);
            groups_used |= 1 << g;
            wsum += w[4 * i + j];
        }
        spread += __builtin_popcount(groups_used) == 2;
        CHECK(t, fabs(wsum - 1) < 1e-5, "row %d: sigmoid weights sum %g, want 1", i, wsum);
    }
    CHECK(t, spread > 0, "no row used two groups: the test does not exercise the limit");
    free(x); free(y);
    dm_ctx_free(ctx);
    dm_model_free(m);
}

/* A batch big enough that the check runs in pieces over a pool: the first
 * bad value is named even with later ones in earlier-finishing pieces. */
static void test_moe_nonfinite_pooled(dm_t *t)
{
    dm_config c = small_cfg();
    dm_error err;
    dm_model *m;
    dm_pool *pool;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    CHECK_OK(t, dm_pool_create(2, &pool, &err), &err);
    dm_ctx *ctx;
    CHECK_OK(t, dm_ctx_create(m, pool, &ctx, &err), &err);
    enum { N = 7001 };
    float *x = dm_test_rows(N, c.dim, 3), *y = malloc((size_t)N * c.dim * sizeof *y);
    static const int64_t at[][2] = {{6999, 23}, {4000, 0}, {2731, 5}, {1, 1}};
    x[(int64_t)N * c.dim - 1] = INFINITY;  /* the very last value */
    CHECK(t, dm_forward(ctx, x, N, y, NULL, &err) == DM_ERR_NONFINITE && strstr(err.msg, "row 7000, column 23 is Inf"),
          "last value: %s", err.msg);
    for (int i = 0; i < 4; i++) {
        x[at[i][0] * c.dim + at[i][1]] = NAN;
        char want[64];
        snprintf(want, sizeof want, "row %lld, column %lld is NaN", (long long)at[i][0], (long long)at[i][1]);
        CHECK(t, dm_forward(ctx, x, N, y, NULL, &err) == DM_ERR_NONFINITE && strstr(err.msg, want),
              "want \"%s\": %s", want, err.msg);
    }
    free(x);
    free(y);
    dm_ctx_free(ctx);
    dm_pool_free(pool);
    dm_model_free(m);
}

static void test_moe_nonfinite_input_refused(dm_t *t)
{
    dm_config c = small_cfg();
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_ctx *ctx;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    float *x = dm_test_rows(5, c.dim, 2), y[5 * 24];
    for (int i = 0; i < 5 * 24; i++) y[i] = 42.0f;
    x[3 * 24 + 7] = NAN;
    CHECK(t, dm_forward(ctx, x, 5, y, NULL, &err) == DM_ERR_NONFINITE, "NaN must be refused");
    CHECK(t, strstr(err.msg, "row 3, column 7 is NaN") != NULL, "message: %s", err.msg);
    x[3 * 24 + 7] = 0;
    x[1 * 24 + 0] = -INFINITY;
    CHECK(t, dm_forward(ctx, x, 5, y, NULL, &err) == DM_ERR_NONFINITE, "Inf must be refused");
    CHECK(t, strstr(err.msg, "row 1, column 0 is Inf") != NULL, "message: %s", err.msg);
    CHECK(t, dm_forward_dense(m, x, 5, y, NULL, &err) == DM_ERR_NONFINITE, "dense: Inf must be refused");
    int untouched = 1;
    for (int i = 0; i < 5 * 24; i++) untouched &= y[i] == 42.0f;
    CHECK(t, untouched, "output must be untouched on error");
    CHECK(t, dm_forward(ctx, x, 0, y, NULL, &err) == DM_OK, "zero rows is fine");
    free(x);
    dm_ctx_free(ctx);
    dm_model_free(m);
}

static void test_moe_threads_bitwise_identical(dm_t *t)
{
    dm_config c = small_cfg();
    c.n_shared = 1;
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_test_randomize(m, 4);
    int n = 300;
    float *x = dm_test_rows(n, c.dim, 6);
    float *y1 = malloc((size_t)n * c.dim * sizeof *y1), *y2 = malloc((size_t)n * c.dim * sizeof *y2);
    dm_pool *p1, *p2;
    dm_ctx *c1, *c2;
    dm_pool_create(1, &p1, &err);
    dm_pool_create(3, &p2, &err);
    CHECK_OK(t, dm_ctx_create(m, p1, &c1, &err), &err);
    CHECK_OK(t, dm_ctx_create(m, p2, &c2, &err), &err);
    CHECK_OK(t, dm_forward(c1, x, n, y1, NULL, &err), &err);
    for (int rep = 0; rep < 5; rep++) {
        CHECK_OK(t, dm_forward(c2, x, n, y2, NULL, &err), &err);
        CHECK(t, !memcmp(y1, y2, (size_t)n * c.dim * sizeof *y1), "rep %d: 3 threads differ from 1", rep);
    }
    /* a smaller batch after a larger one reuses the buffers */
    CHECK_OK(t, dm_forward(c2, x, 5, y2, NULL, &err), &err);
    CHECK(t, !memcmp(y1, y2, (size_t)5 * c.dim * sizeof *y1), "small batch after large differs");
    dm_ctx_free(c1); dm_ctx_free(c2);
    dm_pool_free(p1); dm_pool_free(p2);
    dm_model_free(m);
    free(x); free(y1); free(y2);
}

static void test_moe_save_load_round_trip(dm_t *t)
{
    dm_config c = small_cfg();
    c.router = DM_ROUTER_SIGMOID; c.selection_bias = 1; c.n_shared = 1; c.shared_hidden = 5;
    c.route_scale = 2.5f; c.n_groups = 2; c.topk_groups = 1; c.top_k = 2;
    dm_error err;
    dm_model *m, *m2 = NULL;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_model_init_random(m, 77);
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.safetensors", dm_test_tmpdir());
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    CHECK_OK(t, dm_model_load(path, NULL, &m2, &err), &err);
    if (!m2) { dm_model_free(m); return; }
    const dm_config *c2 = dm_model_config(m2);
    CHECK(t, c2->dim == c.dim && c2->n_experts == c.n_experts && c2->top_k == c.top_k && c2->hidden == c.hidden &&
          c2->router == c.router && c2->selection_bias && c2->n_shared == 1 && c2->shared_hidden == 5 &&
          c2->route_scale == 2.5f && c2->n_groups == 2 && c2->topk_groups == 1, "config changed in the round trip");
    CHECK(t, dm_model_n_tensors(m2) == dm_model_n_tensors(m), "tensor count");
    for (int i = 0; i < dm_model_n_tensors(m); i++) {
        dm_tensor_info a = dm_model_tensor(m, i), b = dm_model_tensor(m2, i);
        CHECK(t, !strcmp(a.name, b.name) && a.numel == b.numel && !memcmp(a.data, b.data, (size_t)a.numel * 4),
              "tensor %s differs", a.name);
    }
    CHECK(t, dm_model_param_count(m) == dm_model_param_count(m2), "param count");
    dm_model_free(m);
    dm_model_free(m2);
}

/* An inference model keeps only what its kernels read: the same outputs bit
 * for bit, far less memory, the weights gone from the tensor views, and a
 * save that writes the same file; what needs the fp32 weights refuses it. */
static void test_moe_packed_only(dm_t *t)
{
    for (int v = 0; v < 2; v++) {
        dm_config c = small_cfg();
        c.n_layers = 2; c.in_dim = 7; c.n_classes = 3; c.n_shared = 1; c.shared_hidden = 5;
        if (v) c.expert = DM_EXPERT_SWIGLU;
        dm_error err;
        dm_model *m = NULL, *full = NULL, *po = NULL;
        CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
        if (!m) return;
        dm_test_randomize(m, 90 + v);
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/po_a%d.safetensors", dm_test_tmpdir(), v);
        snprintf(b, sizeof b, "%s/po_b%d.safetensors", dm_test_tmpdir(), v);
        CHECK_OK(t, dm_model_save(m, a, &err), &err);
        dm_model_opts o;
        dm_model_opts_default(&o);
        o.packed_only = 1;
        CHECK_OK(t, dm_model_load(a, NULL, &full, &err), &err);
        CHECK_OK(t, dm_model_load(a, &o, &po, &err), &err);
        if (full && po) {
            int64_t weights = 0;
            for (int i = 0; i < dm_model_n_tensors(po); i++) {
                dm_tensor_info ti = dm_model_tensor(po, i);
                int is_w = ti.ndim == 2;  /* every 2-D tensor is a GEMM weight */
                CHECK(t, is_w ? ti.data == NULL : ti.data != NULL, "%s: data %p", ti.name, (void *)ti.data);
                CHECK(t, is_w ? ti.wtype && !strcmp(ti.wtype, "f32") : !ti.wtype, "%s: weight type %s", ti.name,
                      ti.wtype ? ti.wtype : "(none)");
                if (is_w) weights += ti.numel * 4;
            }
            CHECK(t, dm_model_memory(po) <= dm_model_memory(full) - weights,
                  "memory %lld, full %lld, weights %lld", (long long)dm_model_memory(po),
                  (long long)dm_model_memory(full), (long long)weights);
            dm_ctx *c1 = NULL, *c2 = NULL;
            CHECK_OK(t, dm_ctx_create(full, NULL, &c1, &err), &err);
            CHECK_OK(t, dm_ctx_create(po, NULL, &c2, &err), &err);
            float *x = dm_test_rows(33, 7, 5), y1[33 * 3], y2[33 * 3];
            CHECK_OK(t, dm_forward(c1, x, 33, y1, NULL, &err), &err);
            CHECK_OK(t, dm_forward(c2, x, 33, y2, NULL, &err), &err);
            CHECK(t, !memcmp(y1, y2, sizeof y1), "packed-only outputs differ");
            dm_model_init_random(po, 3);  /* nothing to write: leaves the model as it is */
            CHECK_OK(t, dm_forward(c2, x, 33, y2, NULL, &err), &err);
            CHECK(t, !memcmp(y1, y2, sizeof y1), "init_random changed a packed-only model");
            free(x);
            dm_ctx_free(c1);
            dm_ctx_free(c2);
            CHECK_OK(t, dm_model_save(po, b, &err), &err);
            size_t na = 0, nb = 0;
            unsigned char *fa = dm_test_slurp(a, &na), *fb = dm_test_slurp(b, &nb);
            CHECK(t, fa && fb && na == nb && !memcmp(fa, fb, na), "the packed-only model saves a different file");
            free(fa);
            free(fb);
            CHECK(t, dm_model_sync(po, &err) == DM_ERR_ARG && strstr(err.msg, "packed"), "sync: %s", err.msg);
            dm_train_config tc;
            dm_train_config_default(&tc);
            tc.total_steps = 1;
            dm_trainer *tr = NULL;
            CHECK(t, dm_trainer_create(po, &tc, NULL, &tr, &err) == DM_ERR_ARG && !tr, "trainer accepted it");
            float xin[7] = {0}, yout[3];
            CHECK(t, dm_forward_dense(po, xin, 1, yout, NULL, &err) == DM_ERR_ARG, "dense twin accepted it");
        }
        dm_model_free(m);
        dm_model_free(full);
        dm_model_free(po);
    }
}

static void test_moe_init_is_pytorch_default(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    dm_error err;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    dm_model_init_random(m, 1);
    CHECK(t, dm_model_param_count(m) == 8 * 512 + 8 + 8 * (256 * 512 + 256 + 256 + 256 + 512 * 256 + 512),
          "seed model parameter count %lld", (long long)dm_model_param_count(m));
    CHECK(t, dm_model_active_params(m) == 8 * 512 + 8 + 2 * (256 * 512 + 256 + 256 + 256 + 512 * 256 + 512),
          "active parameters %lld", (long long)dm_model_active_params(m));
    for (int i = 0; i < dm_model_n_tensors(m); i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        int ln = strstr(ti.name, ".net.2.") != NULL;
        float bound = 1.0f / sqrtf(strstr(ti.name, "net.3") ? 256.0f : 512.0f), mx = 0;
        for (int64_t j = 0; j < ti.numel; j++) mx = fmaxf(mx, fabsf(ti.data[j]));
        if (ln && strstr(ti.name, "weight")) CHECK(t, ti.data[0] == 1 && ti.data[ti.numel - 1] == 1, "%s must be 1", ti.name);
        else if (ln) CHECK(t, mx == 0, "%s must be 0", ti.name);
        else CHECK(t, mx <= bound && mx > 0.9f * bound, "%s: max |w| %g, bound %g", ti.name, (double)mx, (double)bound);
    }
    dm_model_free(m);
}

/* A model file written with one tensor changed: each must be refused. */
static void write_variant(const dm_model *m, const char *path, const char *drop, const char *extra,
                          const char *reshape, const char *meta_json)
{
    int n = dm_model_n_tensors(m);
    dm_st_out *o = calloc((size_t)n + 1, sizeof *o);
    int k = 0;
    static float zeros[4096];
    for (int i = 0; i < n; i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        if (drop && !strcmp(ti.name, drop)) continue;
        o[k] = (dm_st_out){.name = ti.name, .ndim = ti.ndim, .shape = {ti.shape[0], ti.shape[1]}, .data = ti.data};
        if (reshape && !strcmp(ti.name, reshape)) { o[k].shape[0] = ti.shape[1]; o[k].shape[1] = ti.shape[0]; }
        k++;
    }
    if (extra) o[k++] = (dm_st_out){.name = extra, .ndim = 1, .shape = {4}, .data = zeros};
    const char *meta[] = {"deepmoe.config", meta_json};
    dm_error err;
    dm_st_write(path, o, k, meta, meta_json ? 1 : 0, &err);
    free(o);
}

static void test_moe_bad_model_files(dm_t *t)
{
    dm_config c = small_cfg();
    dm_error err;
    dm_model *m, *bad = NULL;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.safetensors", dm_test_tmpdir());
    struct { const char *drop, *extra, *reshape, *meta; dm_status code; const char *msg; } cases[] = {
        {"experts.3.net.2.bias", NULL, NULL, NULL, DM_ERR_FORMAT, "missing tensor experts.3.net.2.bias (expected shape [12])"},
        {NULL, "experts.9.net.0.bias", NULL, NULL, DM_ERR_FORMAT, "unexpected tensor experts.9.net.0.bias"},
        {NULL, NULL, "experts.1.net.0.weight", NULL, DM_ERR_SHAPE, "tensor experts.1.net.0.weight has shape [24, 12], expected [12, 24]"},
        {"gating.gate.weight", NULL, NULL, NULL, DM_ERR_FORMAT, "no 2-D tensor gating.gate.weight"},
        {NULL, NULL, NULL, "{\"dim\": 24, \"n_experts\": 6, \"hidden\": 12, \"colour\": 1}", DM_ERR_FORMAT, "unknown config key \"colour\""},
        {NULL, NULL, NULL, "{\"dim\": 24, \"n_experts\": 6, \"hidden\": 12, \"router\": \"magic\"}", DM_ERR_FORMAT, "\"router\" must be"},
        {NULL, NULL, NULL, "{\"dim\": 24, \"n_experts\": 6, \"hidden\": 12, \"top_k\": 9}", DM_ERR_ARG, "top-k 9 out of range"},
        {NULL, NULL, NULL, "{\"dim\": \"24\"}", DM_ERR_FORMAT, "\"dim\" must be an integer"},
        {NULL, NULL, NULL, "{not json", DM_ERR_FORMAT, "is not a JSON object"},
        {NULL, NULL, NULL, "{\"dim\": 24, \"n_experts\": 6, \"hidden\": 10}", DM_ERR_SHAPE, "expected [10, 24]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_variant(m, path, cases[i].drop, cases[i].extra, cases[i].reshape, cases[i].meta);
        memset(&err, 0, sizeof err);
        dm_status st = dm_model_load(path, NULL, &bad, &err);
        CHECK(t, st == cases[i].code, "case %zu: status %s, want %s (%s)", i, dm_status_name(st),
              dm_status_name(cases[i].code), err.msg);
        CHECK(t, strstr(err.msg, cases[i].msg) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg, cases[i].msg);
        CHECK(t, strstr(err.msg, path) == err.msg, "case %zu: message must start with the path: %s", i, err.msg);
        CHECK(t, bad == NULL, "case %zu: no model on error", i);
        dm_model_free(bad);
        bad = NULL;
    }
    /* top-k for a file without metadata */
    write_variant(m, path, NULL, NULL, NULL, NULL);
    dm_model_opts o;
    dm_model_opts_default(&o);
    o.top_k = 7;
    CHECK(t, dm_model_load(path, &o, &bad, &err) == DM_ERR_ARG, "top-k 7 > 6 experts must fail");
    CHECK(t, strstr(err.msg, "--top-k") != NULL, "message: %s", err.msg);
    o.top_k = 6;
    CHECK_OK(t, dm_model_load(path, &o, &bad, &err), &err);
    CHECK(t, bad && dm_model_config(bad)->top_k == 6, "top-k from opts");
    dm_model_free(bad);
    dm_model_free(m);
}

/* The experts' weight type comes from the file: absent or "f32" loads; an
 * unknown one is refused by name; a scales tensor an f32 model does not
 * declare is an unexpected tensor. */
static void test_moe_weight_type_in_file(dm_t *t)
{
    dm_config c = small_cfg();
    dm_error err;
    dm_model *m = NULL, *got = NULL;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    if (!m) return;
    int n = dm_model_n_tensors(m);
    dm_st_out *o = calloc((size_t)n + 1, sizeof *o);
    for (int i = 0; i < n; i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        o[i] = (dm_st_out){.name = ti.name, .ndim = ti.ndim, .shape = {ti.shape[0], ti.shape[1]}, .data = ti.data};
    }
    char *cfg = dm_config_to_json(dm_model_config(m));
    char path[1024];
    snprintf(path, sizeof path, "%s/wtype.safetensors", dm_test_tmpdir());
    struct { const char *wtype; int extra; dm_status code; const char *msg; } cases[] = {
        {"f32", 0, DM_OK, ""},
        {"q3", 0, DM_ERR_UNSUPPORTED, "weight type \"q3\" is not one this build knows"},
        {"f32", 1, DM_ERR_FORMAT, "unexpected tensor experts.0.net.0.weight.scales"},
    };
    static float zeros[12];
    o[n] = (dm_st_out){.name = "experts.0.net.0.weight.scales", .ndim = 1, .shape = {12}, .data = zeros};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *meta[] = {"deepmoe.config", cfg, "deepmoe.wtype", cases[i].wtype};
        CHECK_OK(t, dm_st_write(path, o, n + cases[i].extra, meta, 2, &err), &err);
        memset(&err, 0, sizeof err);
        dm_status st = dm_model_load(path, NULL, &got, &err);
        CHECK(t, st == cases[i].code && strstr(err.msg, cases[i].msg), "case %zu: %s: %s", i, dm_status_name(st),
              err.msg);
        dm_model_free(got);
        got = NULL;
    }
    free(cfg);
    free(o);
    dm_model_free(m);
}

static void test_moe_config_validation(dm_t *t)
{
    dm_config c;
    dm_error err;
#define BAD(stmt, text) do { c = small_cfg(); stmt; \
        CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG, "%s must fail", #stmt); \
        CHECK(t, strstr(err.msg, text) != NULL, "%s: message %s", #stmt, err.msg); } while (0)
    BAD(c.top_k = 7, "top-k 7 out of range");
    BAD(c.top_k = 0, "top-k 0");
    BAD(c.dim = 0, "dim 0");
    BAD(c.n_groups = 4, "groups 4 must divide the 6 experts");
    BAD((c.n_groups = 3, c.topk_groups = 4), "topk-groups 4");
    BAD((c.n_groups = 3, c.topk_groups = 1, c.top_k = 3), "top-k 3 exceeds the 2 experts");
    BAD(c.route_scale = 0, "route scale");
    BAD(c.route_scale = NAN, "route scale");
    BAD(c.n_shared = -1, "shared experts -1");
#undef BAD
    c = small_cfg();
    c.hidden = 0;
    CHECK(t, dm_config_validate(&c, &err) == DM_OK && c.hidden == 12 && c.shared_hidden == 12, "hidden defaults to D/2");
}

static void test_moe_metrics(dm_t *t)
{
    int32_t e[] = {0, 1, 0, 2, 0, 1, 0, 3};  /* 4 rows, k = 2 */
    double load[4];
    dm_expert_load(e, 4, 2, 4, load);
    CHECK(t, load[0] == 0.5 && load[1] == 0.25 && load[2] == 0.125 && load[3] == 0.125, "load %g %g %g %g",
          load[0], load[1], load[2], load[3]);
    CHECK(t, fabs(dm_expert_utilization(load, 4) - 0.5) < 1e-12, "utilization %g", dm_expert_utilization(load, 4));
    CHECK(t, fabs(dm_max_vio(load, 4) - 1.0) < 1e-12, "MaxVio %g", dm_max_vio(load, 4));
    double even[4] = {0.25, 0.25, 0.25, 0.25};
    CHECK(t, dm_expert_utilization(even, 4) == 1.0 && dm_max_vio(even, 4) == 0.0, "balanced");
}

void suite_moe(dm_t *t)
{
    DM_RUN(t, test_moe_sparse_equals_dense_seed);
    DM_RUN(t, test_moe_sparse_equals_dense_variants);
    DM_RUN(t, test_moe_sparse_equals_dense_network);
    DM_RUN(t, test_moe_single_expert_is_dense_ffn);
    DM_RUN(t, test_moe_ties_choose_lower_index);
    DM_RUN(t, test_moe_selection_bias_changes_choice_not_weights);
    DM_RUN(t, test_moe_groups_limit_choice);
    DM_RUN(t, test_moe_nonfinite_input_refused);
    DM_RUN(t, test_moe_nonfinite_pooled);
    DM_RUN(t, test_moe_threads_bitwise_identical);
    DM_RUN(t, test_moe_save_load_round_trip);
    DM_RUN(t, test_moe_packed_only);
    DM_RUN(t, test_moe_init_is_pytorch_default);
    DM_RUN(t, test_moe_bad_model_files);
    DM_RUN(t, test_moe_weight_type_in_file);
    DM_RUN(t, test_moe_config_validation);
    DM_RUN(t, test_moe_metrics);
}
