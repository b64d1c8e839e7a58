/* test_train_bf16.c - training with --precision bf16 (dm_train_config.precision):
 * its gradients against fp32's, its loss curve over 200 steps against fp32's,
 * bitwise determinism across thread counts, and the model's own f32 packs
 * after bf16 steps (dm_forward must see the trained weights). The trajectory
 * against PyTorch is test_train_parity.c's bf16 case. */
#include "test.h"
#include "train/trainer.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A classifier (in 10 -> D=24, 2 layers, E=4 k=2 H=16, a shared expert) of
 * the given expert kind, random parameters from seed. */
static dm_config cls_cfg(dm_expert_kind kind)
{
    dm_config c;
    dm_config_default(&c);
    c.in_dim = 10; c.n_classes = 3; c.dim = 24; c.n_layers = 2; c.n_experts = 4; c.top_k = 2; c.hidden = 16;
    c.n_shared = 1; c.shared_hidden = 16; c.expert = kind;
    return c;
}

static dm_model *make_model(dm_t *t, const dm_config *c, uint64_t seed)
{
    dm_error err;
    dm_model *m = NULL;
    dm_model_opts o;
    dm_model_opts_default(&o);
    CHECK_OK(t, dm_model_create(c, &o, &m, &err), &err);
    if (m) dm_model_init_random(m, seed);
    return m;
}

/* n rows of a learnable task: x uniform in [-1, 1], label = argmax of x A
 * (a fixed random A [in, classes]). */
static void make_task(const dm_config *c, int64_t n, uint64_t seed, float *x, int32_t *labels)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    float A[10 * 3];
    for (int i = 0; i < c->in_dim * c->n_classes; i++) A[i] = dm_rng_uniform(&r, -1, 1);
    for (int64_t i = 0; i < n; i++) {
        float best = -INFINITY;
        for (int j = 0; j < c->in_dim; j++) x[i * c->in_dim + j] = dm_rng_uniform(&r, -1, 1);
        for (int k = 0; k < c->n_classes; k++) {
            float s = 0;
            for (int j = 0; j < c->in_dim; j++) s += x[i * c->in_dim + j] * A[j * c->n_classes + k];
            if (s > best) best = s, labels[i] = k;
        }
    }
}

static dm_train_config tconf(dm_precision p, int64_t steps)
{
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = steps; tc.loss = DM_LOSS_CE; tc.lr = 3e-3f; tc.precision = p;
    tc.balance = DM_BAL_SWITCH; tc.clip = 1.0f;
    return tc;
}

/* The bf16 gradient of one batch against the fp32 one: close (bf16 operands
 * carry 8 bits) but not equal (the rounding happened). */
static void check_grads(dm_t *t, dm_expert_kind kind)
{
    dm_config c = cls_cfg(kind);
    int64_t n = 96;
    float *x = malloc((size_t)n * c.in_dim * sizeof *x);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    make_task(&c, n, 5, x, lab);
    dm_model *m = make_model(t, &c, 3);
    dm_trainer *t32 = NULL, *t16 = NULL;
    dm_error err;
    dm_train_config a = tconf(DM_PREC_FP32, 1), b = tconf(DM_PREC_BF16, 1);
    double l32 = 0, l16 = 0;
    CHECK_OK(t, dm_trainer_create(m, &a, NULL, &t32, &err), &err);
    CHECK_OK(t, dm_trainer_create(m, &b, NULL, &t16, &err), &err);
    if (t32 && t16) {
        CHECK_OK(t, dm_tr_loss_and_grad(t32, x, NULL, lab, n, &l32, &err), &err);
        CHECK_OK(t, dm_tr_loss_and_grad(t16, x, NULL, lab, n, &l16, &err), &err);
        double d2 = 0, g2 = 0;
        for (int64_t i = 0; i < m->n_params; i++) {
            double d = (double)t16->grad[i] - t32->grad[i];
            d2 += d * d;
            g2 += (double)t32->grad[i] * t32->grad[i];
        }
        double rel = sqrt(d2 / (g2 > 0 ? g2 : 1));
        printf("  bf16 vs fp32 gradient (%s experts): relative L2 difference %.2e, loss %.6f vs %.6f\n",
               dm_expert_name(kind), rel, l16, l32);
        CHECK(t, rel > 1e-5 && rel < 5e-2, "%s: bf16 gradient differs from fp32 by %.3g (want (1e-5, 5e-2))",
              dm_expert_name(kind), rel);
        CHECK(t, fabs(l16 - l32) < 5e-3 * fabs(l32), "%s: loss %g vs %g", dm_expert_name(kind), l16, l32);
    }
    dm_trainer_free(t32);
    dm_trainer_free(t16);
    dm_model_free(m);
    free(x);
    free(lab);
}

static void test_bf16_grads_seed(dm_t *t) { check_grads(t, DM_EXPERT_SEED); }
static void test_bf16_grads_swiglu(dm_t *t) { check_grads(t, DM_EXPERT_SWIGLU); }

/* Steps of batch rows from the task on a pool of `threads`; the loss of every
 * step into loss (may be NULL). */
static void run(dm_t *t, dm_model *m, const dm_train_config *tc, int threads, const float *x, const int32_t *lab,
                int64_t rows, int64_t batch, double *loss)
{
    dm_pool *p = NULL;
    dm_trainer *tr = NULL;
    dm_error err;
    CHECK_OK(t, dm_pool_create(threads, &p, &err), &err);
    CHECK_OK(t, dm_trainer_create(m, tc, p, &tr, &err), &err);
    for (int64_t s = 0; tr && s < tc->total_steps; s++) {
        int64_t r0 = (s * batch) % rows;
        dm_step_stats st;
        CHECK_OK(t, dm_train_step(tr, x + r0 * m->cfg.in_dim, NULL, lab + r0, batch, &st, &err), &err);
        if (loss) loss[s] = st.loss;
    }
    dm_trainer_free(tr);
    dm_pool_free(p);
}

/* The loss curve of 200 bf16 steps stays within 3% of the starting loss of
 * fp32's (each window of 20 steps' mean: the curves fall near 0, where a
 * relative measure would compare noise), and bf16 learns. */
static void test_bf16_loss_curve(dm_t *t)
{
    enum { STEPS = 200, BATCH = 64, ROWS = 64 * 20, WIN = 20 };
    for (int kind = 0; kind < 2; kind++) {
        dm_config c = cls_cfg(kind ? DM_EXPERT_SWIGLU : DM_EXPERT_SEED);
        float *x = malloc((size_t)ROWS * c.in_dim * sizeof *x);
        int32_t *lab = malloc(ROWS * sizeof *lab);
        double l32[STEPS], l16[STEPS];
        make_task(&c, ROWS, 9, x, lab);
        dm_model *a = make_model(t, &c, 4), *b = make_model(t, &c, 4);
        dm_train_config ta = tconf(DM_PREC_FP32, STEPS), tb = tconf(DM_PREC_BF16, STEPS);
        if (a && b) {
            run(t, a, &ta, 2, x, lab, ROWS, BATCH, l32);
            run(t, b, &tb, 2, x, lab, ROWS, BATCH, l16);
            double worst = 0, w32[STEPS / WIN], w16[STEPS / WIN];
            for (int w = 0; w < STEPS / WIN; w++) {
                w32[w] = w16[w] = 0;
                for (int s = w * WIN; s < (w + 1) * WIN; s++) w32[w] += l32[s] / WIN, w16[w] += l16[s] / WIN;
                worst = fmax(worst, fabs(w16[w] - w32[w]) / w32[0]);
            }
            printf("  bf16 loss curve (%s): fp32 %.4f -> %.4f, bf16 %.4f -> %.4f, worst window %.2e\n",
                   dm_expert_name(c.expert), w32[0], w32[STEPS / WIN - 1], w16[0], w16[STEPS / WIN - 1], worst);
            CHECK(t, worst < 0.03, "%s: bf16's loss curve is %.3g of the start away from fp32's (want < 3%%)",
                  dm_expert_name(c.expert), worst);
            CHECK(t, w16[STEPS / WIN - 1] < 0.6 * w16[0], "%s: bf16 did not learn: %g -> %g",
                  dm_expert_name(c.expert), w16[0], w16[STEPS / WIN - 1]);
            CHECK(t, memcmp(a->params, b->params, (size_t)a->n_params * sizeof(float)) != 0,
                  "bf16 and fp32 trained the same parameters: bf16 did nothing");
        }
        dm_model_free(a);
        dm_model_free(b);
        free(x);
        free(lab);
    }
}

/* bf16 results do not depend on the thread count (grad accumulation,
 * dropout, both expert kinds). */
static void test_bf16_threads_bitwise(dm_t *t)
{
    for (int kind = 0; kind < 2; kind++) {
        dm_config c = cls_cfg(kind ? DM_EXPERT_SWIGLU : DM_EXPERT_SEED);
        int64_t rows = 240;
        float *x = malloc((size_t)rows * c.in_dim * sizeof *x);
        int32_t *lab = malloc((size_t)rows * sizeof *lab);
        make_task(&c, rows, 2, x, lab);
        dm_train_config tc = tconf(DM_PREC_BF16, 5);
        tc.grad_accum = 2; tc.dropout = 0.2f;
        dm_model *a = make_model(t, &c, 6), *b = make_model(t, &c, 6);
        if (a && b) {
            run(t, a, &tc, 1, x, lab, rows, 120, NULL);
            run(t, b, &tc, 2, x, lab, rows, 120, NULL);
            CHECK(t, !memcmp(a->params, b->params, (size_t)a->n_params * sizeof(float)),
                  "%s: bf16 with 1 and 2 threads must give bitwise identical parameters", dm_expert_name(c.expert));
        }
        dm_model_free(a);
        dm_model_free(b);
        free(x);
        free(lab);
    }
}

/* After bf16 steps (which leave the model's f32 packs stale), dm_forward
 * answers what a fresh model with the same parameters answers. */
static void test_bf16_model_packs_fresh(dm_t *t)
{
    dm_config c = cls_cfg(DM_EXPERT_SEED);
    int64_t rows = 128;
    float *x = malloc((size_t)rows * c.in_dim * sizeof *x);
    int32_t *lab = malloc((size_t)rows * sizeof *lab);
    float *y1 = malloc((size_t)rows * c.n_classes * sizeof *y1), *y2 = malloc((size_t)rows * c.n_classes * sizeof *y2);
    make_task(&c, rows, 4, x, lab);
    dm_model *m = make_model(t, &c, 8), *f = make_model(t, &c, 99);
    dm_train_config tc = tconf(DM_PREC_BF16, 3);
    dm_error err;
    dm_ctx *cm = NULL, *cf = NULL;
    if (m && f) {
        CHECK_OK(t, dm_ctx_create(m, NULL, &cm, &err), &err);  /* made before training: it must not go stale */
        run(t, m, &tc, 2, x, lab, rows, 64, NULL);
        memcpy(f->params, m->params, (size_t)m->n_params * sizeof(float));
        CHECK_OK(t, dm_model_sync(f, &err), &err);
        CHECK_OK(t, dm_ctx_create(f, NULL, &cf, &err), &err);
        if (cm && cf) {
            CHECK_OK(t, dm_forward(cm, x, rows, y1, NULL, &err), &err);
            CHECK_OK(t, dm_forward(cf, x, rows, y2, NULL, &err), &err);
            CHECK(t, !memcmp(y1, y2, (size_t)rows * c.n_classes * sizeof *y1),
                  "the model's forward after bf16 training differs from a fresh model's");
        }
    }
    dm_ctx_free(cm);
    dm_ctx_free(cf);
    dm_model_free(m);
    dm_model_free(f);
    free(x); free(lab); free(y1); free(y2);
}

/* Every kernel table trains in bf16 (the SIMD ones without AVX512_BF16 and
 * the reference round copies: their re-packs go through dm_wmat_pack_t's
 * transpose + quantize + pack), also with an input much wider than D (the
 * embedding's quantized copy in the trainer's scratch), and agree. */
static void test_bf16_every_isa(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    c.in_dim = 300; c.n_classes = 3; c.dim = 16; c.n_experts = 4; c.top_k = 2; c.hidden = 8;
    int64_t rows = 64;
    float *x = malloc((size_t)rows * c.in_dim * sizeof *x);
    int32_t *lab = malloc((size_t)rows * sizeof *lab);
    dm_rng r;
    dm_rng_seed(&r, 3);
    for (int64_t i = 0; i < rows * c.in_dim; i++) x[i] = dm_rng_uniform(&r, -1, 1);
    for (int64_t i = 0; i < rows; i++) lab[i] = (int32_t)(dm_rng_u64(&r) % 3);
    dm_train_config tc = tconf(DM_PREC_BF16, 3);
    static const dm_isa isas[] = {DM_ISA_REF, DM_ISA_AVX2, DM_ISA_AVX512};
    dm_model *first = NULL;
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (dm_isa_resolve(isas[i]) != isas[i]) continue;
        dm_error err;
        dm_model *m = NULL;
        dm_model_opts o;
        dm_model_opts_default(&o);
        o.isa = isas[i];
        CHECK_OK(t, dm_model_create(&c, &o, &m, &err), &err);
        if (!m) continue;
        dm_model_init_random(m, 5);
        run(t, m, &tc, 2, x, lab, rows, 32, NULL);
        if (!first) {
            first = m;
            continue;
        }
        double e = dm_test_relerr(m->params, first->params, m->n_params);
        CHECK(t, e < 1e-3, "bf16 on %s differs from %s by %.3g", dm_isa_name(isas[i]), dm_isa_name(first->isa), e);
        dm_model_free(m);
    }
    dm_model_free(first);
    free(x);
    free(lab);
}

/* dm_precision_native: fp32 always, bf16 only on AVX-512 with AVX512_BF16. */
static void test_bf16_native(dm_t *t)
{
    CHECK(t, dm_precision_native(DM_PREC_FP32, DM_ISA_REF) && dm_precision_native(DM_PREC_FP32, DM_ISA_AUTO),
          "fp32 is always native");
    CHECK(t, !dm_precision_native(DM_PREC_BF16, DM_ISA_REF) && !dm_precision_native(DM_PREC_BF16, DM_ISA_AVX2),
          "bf16 on the reference or AVX2 kernels is emulated");
    int want = dm_isa_resolve(DM_ISA_AVX512) == DM_ISA_AVX512 && dm_cpu_has(DM_CPU_BF16);
    CHECK(t, dm_precision_native(DM_PREC_BF16, DM_ISA_AVX512) == want, "bf16 on AVX-512: native iff AVX512_BF16");
    printf("  bf16 GEMMs native on this CPU: %s\n", want ? "yes" : "no (emulated)");
}

void suite_train_bf16(dm_t *t)
{
    DM_RUN(t, test_bf16_grads_seed);
    DM_RUN(t, test_bf16_grads_swiglu);
    DM_RUN(t, test_bf16_loss_curve);
    DM_RUN(t, test_bf16_threads_bitwise);
    DM_RUN(t, test_bf16_model_packs_fresh);
    DM_RUN(t, test_bf16_every_isa);
    DM_RUN(t, test_bf16_native);
}
