#define _GNU_SOURCE
/* test_train.c - training: finite-difference gradient checks for every op and
 * variant, determinism across thread counts, checkpoints (bit-exact resume,
 * corrupt or mismatched files refused), config errors. */
#include "test.h"
#include "train/trainer.h"
#include "data/data.h"

#include <stdlib.h>

static dm_config base_cfg(void)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 12; c.n_experts = 4; c.top_k = 2; c.hidden = 7;
    return c;
}

static void fill(float *p, int64_t n, dm_rng *r, float s)
{
    for (int64_t i = 0; i < n; i++) p[i] = dm_rng_uniform(r, -s, s);
}

/* A model with random parameters (router scaled up so routing is decisive). */
static dm_model *make_model(dm_t *t, const dm_config *c, dm_isa isa, uint64_t seed)
{
    dm_error err;
    dm_model *m = NULL;
    dm_model_opts o;
    dm_model_opts_default(&o);
    o.isa = isa;
    CHECK_OK(t, dm_model_create(c, &o, &m, &err), &err);
    if (!m) return NULL;
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int i = 0; i < dm_model_n_tensors(m); i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        float s = strstr(ti.name, "gating.gate") ? 1.5f : strstr(ti.name, "expert_bias") ? 0.3f : 0.5f;
        fill(ti.data, ti.numel, &r, s);
    }
    dm_model_sync(m, &err);
    return m;
}

typedef struct batch { int64_t n; float *x, *y; int32_t *labels; } batch;

static batch make_batch(const dm_config *c, int64_t n, uint64_t seed)
{
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    batch b = {n, malloc((size_t)n * in * sizeof(float)), malloc((size_t)n * out * sizeof(float)),
               malloc((size_t)n * sizeof(int32_t))};
    dm_rng r;
    dm_rng_seed(&r, seed);
    fill(b.x, n * in, &r, 1);
    fill(b.y, n * out, &r, 1);
    for (int64_t i = 0; i < n; i++) b.labels[i] = (int32_t)(dm_rng_u64(&r) % (uint64_t)(c->n_classes ? c->n_classes : 1));
    return b;
}

static void free_batch(batch *b) { free(b->x); free(b->y); free(b->labels); }

/* Central differences on a sample of every trainable tensor's elements. */
static void gradcheck(dm_t *t, const char *what, const dm_config *c, unsigned balance, dm_isa isa)
{
    dm_model *m = make_model(t, c, isa, 11);
    if (!m) return;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 1;
    tc.loss = c->n_classes ? DM_LOSS_CE : DM_LOSS_MSE;
    tc.balance = balance;
    tc.coef_seed = tc.coef_switch = tc.coef_z = 0.3f;  /* large, so their gradients matter */
    tc.label_smoothing = c->n_classes ? 0.1f : 0.0f;
    tc.dropout = c->n_classes ? 0.3f : 0.0f;  /* the mask is a function of the step: fixed here */
    dm_trainer *tr = NULL;
    dm_error err;
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    if (!tr) { dm_model_free(m); return; }
    batch b = make_batch(c, 9, 5);
    double loss;
    CHECK_OK(t, dm_tr_loss_and_grad(tr, b.x, b.y, b.labels, b.n, &loss, &err), &err);
    float *g = malloc((size_t)m->n_params * sizeof *g);
    memcpy(g, tr->grad, (size_t)m->n_params * sizeof *g);
    dm_rng r;
    dm_rng_seed(&r, 3);
    double worst = 0;
    const char *worst_name = "";
    int checked = 0, nonzero = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        if (tr->frozen[i]) continue;
        dm_tensor_desc *d = &m->tensors[i];
        for (int s = 0; s < 4; s++) {
            int64_t j = (int64_t)(dm_rng_u64(&r) % (uint64_t)d->numel);
            float *p = m->params + d->offset + j, keep = *p;
            const float h = 2e-3f;
            double lp, lm;
            *p = keep + h; dm_model_sync(m, NULL); dm_tr_sync(tr);
            dm_tr_loss_and_grad(tr, b.x, b.y, b.labels, b.n, &lp, &err);
            *p = keep - h; dm_model_sync(m, NULL); dm_tr_sync(tr);
            dm_tr_loss_and_grad(tr, b.x, b.y, b.labels, b.n, &lm, &err);
            *p = keep;
            double fd = (lp - lm) / (2.0 * h), an = g[d->offset + j];
            double e = fabs(fd - an) / (fabs(fd) + fabs(an) + 3e-3);
            if (getenv("GC_DEBUG") && e > 1e-2) printf("    %s[%lld]: fd %g an %g\n", d->name, (long long)j, fd, an);
            if (e > worst) { worst = e; worst_name = d->name; }
            checked++;
            nonzero += fabs(an) > 1e-6;
        }
    }
    dm_model_sync(m, NULL);
    printf("  gradcheck %-28s %s: %d elements, worst relative error %.2e (%s)\n", what, dm_isa_name(isa), checked,
           worst, worst_name);
    CHECK(t, worst < 2e-2, "%s (%s): finite differences disagree with the gradient: %.3g at %s", what,
          dm_isa_name(isa), worst, worst_name);
    CHECK(t, nonzero > checked / 3, "%s: only %d of %d sampled gradients are non-zero", what, nonzero, checked);
    free(g);
    free_batch(&b);
    dm_trainer_free(tr);
    dm_model_free(m);
}

static void test_train_gradcheck_routers(dm_t *t)
{
    dm_config c = base_cfg();
    gradcheck(t, "seed router + seed experts", &c, 0, DM_ISA_REF);
    c.router = DM_ROUTER_SOFTMAX; gradcheck(t, "softmax router", &c, 0, DM_ISA_REF);
    c.norm_topk = 1; c.route_scale = 1.7f; gradcheck(t, "softmax router, renormalised", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.router = DM_ROUTER_SIGMOID; c.route_scale = 2.5f; gradcheck(t, "sigmoid router", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.selection_bias = 1; gradcheck(t, "selection bias", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.n_experts = 8; c.n_groups = 4; c.topk_groups = 2; c.top_k = 3; c.router = DM_ROUTER_SIGMOID;
    c.selection_bias = 1; gradcheck(t, "groups", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.top_k = c.n_experts; gradcheck(t, "k = E", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.n_experts = 1; c.top_k = 1; gradcheck(t, "E = 1", &c, 0, DM_ISA_REF);
}

static void test_train_gradcheck_experts(dm_t *t)
{
    dm_config c = base_cfg();
    c.n_shared = 2; c.shared_hidden = 5; gradcheck(t, "shared seed experts", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.expert = DM_EXPERT_SWIGLU; gradcheck(t, "swiglu experts", &c, 0, DM_ISA_REF);
    c.n_shared = 1; c.shared_hidden = 9; gradcheck(t, "swiglu + shared", &c, 0, DM_ISA_REF);
}

static void test_train_gradcheck_network(dm_t *t)
{
    dm_config c = base_cfg();
    c.in_dim = 10; c.n_classes = 5; c.n_layers = 2;
    gradcheck(t, "classifier, CE, 2 layers", &c, 0, DM_ISA_REF);
    c.expert = DM_EXPERT_SWIGLU; c.router = DM_ROUTER_SOFTMAX; c.n_shared = 1;
    gradcheck(t, "swiglu classifier", &c, 0, DM_ISA_REF);
    c = base_cfg(); c.in_dim = 10; c.n_classes = 5;
    if (dm_isa_resolve(DM_ISA_AVX512) == DM_ISA_AVX512) gradcheck(t, "classifier", &c, 0, DM_ISA_AVX512);
    if (dm_isa_resolve(DM_ISA_AVX2) == DM_ISA_AVX2) gradcheck(t, "classifier", &c, 0, DM_ISA_AVX2);
}

static void test_train_gradcheck_balance(dm_t *t)
{
    dm_config c = base_cfg();
    gradcheck(t, "balance seed", &c, DM_BAL_SEED, DM_ISA_REF);
    gradcheck(t, "balance switch", &c, DM_BAL_SWITCH, DM_ISA_REF);
    gradcheck(t, "balance z", &c, DM_BAL_Z, DM_ISA_REF);
    c.router = DM_ROUTER_SIGMOID;
    gradcheck(t, "balance switch+z, sigmoid", &c, DM_BAL_SWITCH | DM_BAL_Z, DM_ISA_REF);
    c.router = DM_ROUTER_SOFTMAX; c.norm_topk = 1;
    gradcheck(t, "balance all, softmax", &c, DM_BAL_SEED | DM_BAL_SWITCH | DM_BAL_Z, DM_ISA_REF);
}

/* ---------------------------------------------------------------- runs */

static void run_steps(dm_t *t, dm_model *m, const dm_train_config *tc, int threads, const batch *b, int steps,
                      double *last_loss)
{
    dm_pool *p = NULL;
    dm_trainer *tr = NULL;
    dm_error err;
    CHECK_OK(t, dm_pool_create(threads, &p, &err), &err);
    CHECK_OK(t, dm_trainer_create(m, tc, p, &tr, &err), &err);
    dm_step_stats st = {0};
    for (int s = 0; tr && s < steps; s++)
        CHECK_OK(t, dm_train_step(tr, b->x, b->y, b->labels, b->n, &st, &err), &err);
    if (last_loss) *last_loss = st.loss;
    dm_trainer_free(tr);
    dm_pool_free(p);
}

static int same_params(const dm_model *a, const dm_model *b)
{
    return a->n_params == b->n_params && !memcmp(a->params, b->params, (size_t)a->n_params * sizeof(float));
}

static void test_train_threads_bitwise_identical(dm_t *t)
{
    dm_config c = base_cfg();
    c.in_dim = 10; c.n_classes = 5; c.n_layers = 2; c.n_shared = 1; c.selection_bias = 1;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 6; tc.loss = DM_LOSS_CE; tc.balance = DM_BAL_SWITCH | DM_BAL_AUX_FREE | DM_BAL_Z;
    tc.grad_accum = 2; tc.clip = 0.5f; tc.warmup = 2;
    batch b = make_batch(&c, 200, 9);
    dm_model *m1 = make_model(t, &c, DM_ISA_AUTO, 4), *m2 = make_model(t, &c, DM_ISA_AUTO, 4);
    double l1 = 0, l2 = 0;
    run_steps(t, m1, &tc, 1, &b, 6, &l1);
    run_steps(t, m2, &tc, 2, &b, 6, &l2);
    CHECK(t, same_params(m1, m2), "1 and 2 threads must give bitwise identical parameters");
    CHECK(t, l1 == l2, "losses %g vs %g", l1, l2);
    free_batch(&b);
    dm_model_free(m1);
    dm_model_free(m2);
}

static void test_train_loss_decreases(dm_t *t)
{
    dm_config c = base_cfg();
    c.in_dim = 10; c.n_classes = 3;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 60; tc.loss = DM_LOSS_CE; tc.lr = 2e-2f;
    batch b = make_batch(&c, 64, 2);
    dm_model *m = make_model(t, &c, DM_ISA_AUTO, 8);
    dm_pool *p;
    dm_trainer *tr;
    dm_error err;
    dm_pool_create(1, &p, &err);
    CHECK_OK(t, dm_trainer_create(m, &tc, p, &tr, &err), &err);
    dm_step_stats first = {0}, st = {0};
    for (int s = 0; s < 60; s++) {
        dm_train_step(tr, b.x, NULL, b.labels, b.n, &st, &err);
        if (s == 0) first = st;
    }
    CHECK(t, st.loss < 0.5 * first.loss, "CE loss %g -> %g must fall on a memorisable batch", first.loss, st.loss);
    CHECK(t, st.step == 60 && st.lr < 0.01 * tc.lr, "cosine ends near 0: step %lld lr %g", (long long)st.step, st.lr);
    dm_trainer_free(tr);
    dm_pool_free(p);
    dm_model_free(m);
    free_batch(&b);
}

/* N steps straight == N/2 steps, checkpoint, a fresh trainer loads it, N/2 steps. */
static void test_train_resume_bit_exact(dm_t *t)
{
    dm_config c = base_cfg();
    c.in_dim = 10; c.n_classes = 5; c.selection_bias = 1;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 8; tc.loss = DM_LOSS_CE; tc.balance = DM_BAL_AUX_FREE | DM_BAL_SWITCH; tc.warmup = 3;
    batch b = make_batch(&c, 48, 1);
    dm_model *a = make_model(t, &c, DM_ISA_AUTO, 6), *r = make_model(t, &c, DM_ISA_AUTO, 6);
    run_steps(t, a, &tc, 2, &b, 8, NULL);
    dm_error err;
    dm_trainer *t1, *t2;
    CHECK_OK(t, dm_trainer_create(r, &tc, NULL, &t1, &err), &err);
    for (int s = 0; s < 4; s++) dm_train_step(t1, b.x, NULL, b.labels, b.n, NULL, &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/ck.safetensors", dm_test_tmpdir());
    const char blob[] = "epoch=1 pos=48";
    CHECK_OK(t, dm_trainer_save(t1, path, blob, sizeof blob, &err), &err);
    dm_trainer_free(t1);
    dm_model_free(r);
    r = make_model(t, &c, DM_ISA_AUTO, 99);  /* different weights: the checkpoint must replace them */
    CHECK_OK(t, dm_trainer_create(r, &tc, NULL, &t2, &err), &err);
    char got[64] = {0};
    size_t len = 0;
    CHECK_OK(t, dm_trainer_load(t2, path, got, sizeof got, &len, &err), &err);
    CHECK(t, len == sizeof blob && !memcmp(got, blob, len), "caller state round trip");
    CHECK(t, dm_trainer_step_count(t2) == 4, "step restored");
    for (int s = 0; s < 4; s++) dm_train_step(t2, b.x, NULL, b.labels, b.n, NULL, &err);
    CHECK(t, same_params(a, r), "8 steps straight and 4 + resume + 4 must give identical parameters");

    /* a truncated copy, a flipped byte, a different model: each refused, state untouched */
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *bytes = malloc((size_t)size);
    CHECK(t, fread(bytes, 1, (size_t)size, fp) == (size_t)size, "read checkpoint");
    fclose(fp);
    float before = r->params[0];
    const char *trunc = dm_test_write_file("trunc.safetensors", bytes, (size_t)size / 2);
    CHECK(t, dm_trainer_load(t2, trunc, got, sizeof got, &len, &err) == DM_ERR_FORMAT, "truncated refused");
    CHECK(t, strstr(err.msg, "trunc.safetensors") != NULL, "message names the file: %s", err.msg);
    char *sp = memmem(bytes, (size_t)size, "\"deepmoe.step\":\"4\"", 18);
    CHECK(t, sp != NULL, "step metadata present");
    if (sp) {
        sp[16] = '9';  /* an edited step must be caught by the checksum */
        const char *edit = dm_test_write_file("edit.safetensors", bytes, (size_t)size);
        CHECK(t, dm_trainer_load(t2, edit, got, sizeof got, &len, &err) == DM_ERR_FORMAT, "edited step refused");
        CHECK(t, strstr(err.msg, "checksum mismatch") != NULL, "message: %s", err.msg);
        sp[16] = '4';
    }
    bytes[size - 5] ^= 0x40;
    const char *flip = dm_test_write_file("flip.safetensors", bytes, (size_t)size);
    CHECK(t, dm_trainer_load(t2, flip, got, sizeof got, &len, &err) == DM_ERR_FORMAT, "corrupt refused");
    CHECK(t, strstr(err.msg, "checksum mismatch") != NULL, "message: %s", err.msg);
    CHECK(t, r->params[0] == before && dm_trainer_step_count(t2) == 8, "a refused checkpoint changes nothing");
    dm_config c2 = c;
    c2.hidden = 8;
    dm_model *other = make_model(t, &c2, DM_ISA_AUTO, 1);
    dm_trainer *t3;
    CHECK_OK(t, dm_trainer_create(other, &tc, NULL, &t3, &err), &err);
    CHECK(t, dm_trainer_load(t3, path, got, sizeof got, &len, &err) == DM_ERR_SHAPE, "other model refused");
    CHECK(t, strstr(err.msg, "different model: hidden is 7 in the checkpoint, 8 in this model") != NULL,
          "message names the field: %s", err.msg);
    dm_trainer_free(t3);
    dm_model_free(other);
    free(bytes);
    dm_trainer_free(t2);
    dm_model_free(a);
    dm_model_free(r);
    free_batch(&b);
}

static void test_train_config_errors(dm_t *t)
{
    dm_config c = base_cfg();
    dm_model *m = make_model(t, &c, DM_ISA_AUTO, 1);
    dm_train_config tc;
    dm_trainer *tr;
    dm_error err;
#define BAD(stmt, text) do { dm_train_config_default(&tc); tc.total_steps = 10; stmt; \
        CHECK(t, dm_trainer_create(m, &tc, NULL, &tr, &err) == DM_ERR_ARG, "%s must fail", #stmt); \
        CHECK(t, strstr(err.msg, text) != NULL, "%s: message %s", #stmt, err.msg); } while (0)
    BAD(tc.lr = 0, "--lr");
    BAD(tc.total_steps = 0, "total steps");
    BAD(tc.grad_accum = 0, "--grad-accum");
    BAD(tc.loss = DM_LOSS_CE, "classifier");
    BAD(tc.balance = DM_BAL_AUX_FREE, "selection bias");
    BAD(tc.beta1 = 1, "--betas");
#undef BAD
    dm_train_config_default(&tc);
    tc.total_steps = 10; tc.grad_accum = 3;
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    batch b = make_batch(&c, 10, 1);
    CHECK(t, dm_train_step(tr, b.x, b.y, NULL, 10, NULL, &err) == DM_ERR_ARG, "10 rows in 3 micro-batches");
    b.x[13] = NAN;
    CHECK(t, dm_train_step(tr, b.x, b.y, NULL, 9, NULL, &err) == DM_ERR_NONFINITE, "NaN input refused");
    dm_trainer_free(tr);
    free_batch(&b);

    /* with a pool: the message names the first bad value of all (two rows hold one) */
    dm_pool *p;
    CHECK_OK(t, dm_pool_create(2, &p, &err), &err);
    tc.grad_accum = 1;
    CHECK_OK(t, dm_trainer_create(m, &tc, p, &tr, &err), &err);
    b = make_batch(&c, 100, 2);
    b.x[(int64_t)90 * c.dim + 1] = INFINITY;
    b.x[(int64_t)70 * c.dim + 3] = NAN;
    CHECK(t, dm_train_step(tr, b.x, b.y, NULL, 100, NULL, &err) == DM_ERR_NONFINITE &&
             strstr(err.msg, "input row 70, column 3 is NaN") != NULL, "first bad input named: %s", err.msg);
    b.x[(int64_t)70 * c.dim + 3] = 0;
    b.x[(int64_t)90 * c.dim + 1] = 0;
    b.y[(int64_t)99 * c.dim + c.dim - 1] = -INFINITY;
    CHECK(t, dm_train_step(tr, b.x, b.y, NULL, 100, NULL, &err) == DM_ERR_NONFINITE &&
             strstr(err.msg, "target input row 99, column") != NULL && strstr(err.msg, "is Inf") != NULL,
          "bad target named: %s", err.msg);
    dm_trainer_free(tr);
    dm_pool_free(p);
    free_batch(&b);
    dm_model_free(m);
}

/* ---------------------------------------------------------------- balance */

/* Trains the bare seed layer on the synthetic regimes set with one balance
 * setting and returns the test split's expert utilization (mean/max load). */
static double balance_run(dm_t *t, const dm_data *d, unsigned balance, float coef, double *mse)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = d->train.dim; c.n_experts = 8; c.top_k = 2; c.hidden = 32;
    c.selection_bias = (balance & DM_BAL_AUX_FREE) != 0;
    dm_error err;
    dm_model *m = NULL;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    if (!m) return -1;
    dm_model_init_random(m, 1);
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 400; tc.lr = 3e-3f; tc.balance = balance;
    tc.coef_seed = tc.coef_switch = coef;
    tc.bias_update = 1e-2f;
    dm_trainer *tr = NULL;
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    dm_batcher b;
    dm_batcher_init(&b, &d->train, 1, 1, &err);
    int64_t B = 128;
    float *x = malloc((size_t)B * c.dim * sizeof *x), *y = malloc((size_t)B * c.dim * sizeof *y);
    for (int s = 0; tr && s < 400; s++) {
        dm_batcher_next(&b, B, x, y, NULL, NULL);
        dm_train_step(tr, x, y, NULL, B, NULL, &err);
    }
    dm_ctx *ctx;
    dm_eval ev = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    CHECK_OK(t, dm_evaluate(ctx, d->test.x, d->test.y, NULL, d->test.regime, d->test.n, 0, &ev, &err), &err);
    *mse = ev.mse;
    dm_ctx_free(ctx);
    free(x); free(y);
    dm_batcher_free(&b);
    dm_trainer_free(tr);
    dm_model_free(m);
    return ev.expert_utilization;
}

/* The seed's formula rewards collapse; switch and aux-free keep the experts busy. */
static void test_train_balance_collapse_and_fix(dm_t *t)
{
    dm_data d;
    dm_error err;
    CHECK_OK(t, dm_data_load("synthetic:regimes=8,dim=16,rows=30000", DM_TASK_REGRESS, 7, &d, &err), &err);
    double mse[4];
    double none = balance_run(t, &d, 0, 0, &mse[0]);
    double seed = balance_run(t, &d, DM_BAL_SEED, 1.0f, &mse[1]);
    double sw = balance_run(t, &d, DM_BAL_SWITCH, 0.3f, &mse[2]);
    double af = balance_run(t, &d, DM_BAL_AUX_FREE, 0, &mse[3]);
    printf("  synthetic regimes, E=8 k=2, 400 steps: utilization none %.3f, seed(1.0) %.3f, switch(0.3) %.3f, "
           "aux_free %.3f; test mse %.4f %.4f %.4f %.4f\n", none, seed, sw, af, mse[0], mse[1], mse[2], mse[3]);
    CHECK(t, seed < none - 0.05 && seed < 0.6, "the seed loss must drive collapse: %.3f (none %.3f)", seed, none);
    CHECK(t, sw >= 0.9, "switch must keep experts balanced: utilization %.3f", sw);
    CHECK(t, af >= 0.9, "aux_free must keep experts balanced: utilization %.3f", af);
    dm_data_free(&d);
}

void suite_train(dm_t *t)
{
    DM_RUN(t, test_train_balance_collapse_and_fix);
    DM_RUN(t, test_train_gradcheck_routers);
    DM_RUN(t, test_train_gradcheck_experts);
    DM_RUN(t, test_train_gradcheck_network);
    DM_RUN(t, test_train_gradcheck_balance);
    DM_RUN(t, test_train_threads_bitwise_identical);
    DM_RUN(t, test_train_loss_decreases);
    DM_RUN(t, test_train_resume_bit_exact);
    DM_RUN(t, test_train_config_errors);
}
