/* train.c - the trainer: buffers, one optimizer step (micro-batches of
 * forward + loss + backward, then clipping, AdamW, aux-free bias update). */
#include "train/trainer.h"
#include "train/run_state.h"
#include "nn/router.h"
#include "obs/trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void dm_train_config_default(dm_train_config *tc)
{
    *tc = (dm_train_config){
        .struct_size = sizeof *tc, .loss = DM_LOSS_MSE, .lr = 1e-3f, .weight_decay = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
        .eps = 1e-8f, .warmup = 0, .schedule = DM_SCHED_COSINE, .total_steps = 0, .clip = 0,
        .grad_accum = 1, .balance = 0, .coef_seed = 0.01f, .coef_switch = 0.01f, .coef_z = 1e-3f,
        .bias_update = 1e-3f,
    };
}

static dm_status check_config(const dm_model *m, const dm_train_config *tc, dm_error *err)
{
    const dm_config *c = &m->cfg;
    dm_status st = dm_train_config_check(tc, err);
    if (st) return st;
    if (tc->loss == DM_LOSS_CE && !c->n_classes)
        return dm_fail(err, DM_ERR_ARG, "cross-entropy needs a classifier model (n_classes > 0)");
    if ((tc->balance & DM_BAL_AUX_FREE) && !c->selection_bias)
        return dm_fail(err, DM_ERR_ARG, "aux_free balancing needs a model with a selection bias");
    return DM_OK;
}

/* ---------------------------------------------------------------- create */

static size_t up_rows(const dm_config *c, int h) { return (size_t)h * dm_expert_ops_of(c)->up_mult; }

static float *grad_of(dm_trainer *t, const float *param)
{
    return param ? t->grad + (param - t->m->params) : NULL;
}

/* Bytes of the transposed packs (f32 or bf16, the model's ISA) and of the
 * bf16 forward packs; with base, binds them. */
static size_t carve_tpacked(dm_trainer *t, unsigned char *base)
{
    const dm_config *c = &t->m->cfg;
    const dm_wtype *f32 = &dm_wtypes[DM_WT_F32], *xt = &dm_wtypes[t->bf16 ? DM_WT_BF16 : DM_WT_F32];
    dm_isa isa = t->m->isa;
    int S = c->n_experts + c->n_shared;
    size_t off = 0;
#define TAKE(w, type, rows, cols) do { \
        if (base) dm_wmat_bind(&(w), type, isa, (int)(rows), (int)(cols), 0, base + off); \
        off += (dm_wmat_data_size(type, isa, (int)(rows), (int)(cols), 0) + 63) / 64 * 64; \
    } while (0)
    for (int l = 0; l < c->n_layers; l++) {
        TAKE(t->gate_pt[l], f32, c->dim, c->n_experts);
        for (int i = 0; i < S; i++) {
            int h = i < c->n_experts ? c->hidden : c->shared_hidden;
            expert_t *e = &t->ext[l * S + i];
            TAKE(e->p1t, xt, c->dim, up_rows(c, h));
            TAKE(e->p2t, xt, h, c->dim);
            if (t->bf16) {
                TAKE(t->fw[2 * (l * S + i)], xt, up_rows(c, h), c->dim);
                TAKE(t->fw[2 * (l * S + i) + 1], xt, c->dim, h);
            }
        }
    }
    if (c->n_classes) TAKE(t->head_pt, f32, c->dim, c->n_classes);
    if (t->bf16 && c->in_dim) TAKE(t->embed_fw, xt, c->dim, c->in_dim);
#undef TAKE
    return off;
}

/* Expert j of layer l's forward packs: the trainer's bf16 copies under
 * --precision bf16, else the model's own. */
static void fwd_packs(dm_trainer *t, int l, int j, dm_wmat **f1, dm_wmat **f2)
{
    dm_model *m = t->m;
    int S = m->cfg.n_experts + m->cfg.n_shared;
    dm_expert_w *x = &m->layers[l].experts[j];
    *f1 = t->bf16 ? &t->fw[2 * (l * S + j)] : &x->p1;
    *f2 = t->bf16 ? *f1 + 1 : &x->p2;
}

/* Re-packs the forward and transposed weights after the parameters changed. */
/* Task i of the re-pack: one expert (forward and transposed packs), one
 * router, the embedding or the head. Each thread uses its own transpose scratch. */
static void sync_task(void *arg, int64_t i, int tid)
{
    dm_trainer *t = arg;
    dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    int S = c->n_experts + c->n_shared, D = c->dim, per = S + 1;
    float *tmp = t->ttmp + (size_t)tid * t->ttmp_floats;
    int64_t layers = (int64_t)c->n_layers * per;
    if (i >= layers) {  /* the linear maps around the layers */
        if (i == layers && c->in_dim) {
            if (t->bf16) dm_wmat_quant_pack(&t->embed_fw, m->embed.w, tmp);  /* the model's: dm_model_fresh */
            else dm_wmat_pack_f32(&m->embed.p, m->embed.w);
        }
        if (i == layers + 1 && c->n_classes) {
            dm_wmat_pack_f32(&m->head.p, m->head.w);
            dm_wmat_pack_t(&t->head_pt, m->head.w, tmp);
        }
        return;
    }
    int l = (int)(i / per), j = (int)(i % per);
    dm_layer *ly = &m->layers[l];
    if (j == S) {
        dm_wmat_pack_f32(&ly->gate_p, ly->gate_w);
        dm_wmat_pack_t(&t->gate_pt[l], ly->gate_w, tmp);
        return;
    }
    dm_expert_w *x = &ly->experts[j];
    expert_t *xt = &t->ext[l * S + j];
    int h = x->hidden;
    const float *w1 = x->w1;
    if (dm_expert_ops_of(c)->up_mult == 2) {
        /* [W1; W3] is [2H, D]: one GEMM for both projections, and its transpose [D, 2H] */
        float *cat = tmp + t->cat_off;
        memcpy(cat, x->w1, (size_t)h * D * sizeof *cat);
        memcpy(cat + (size_t)h * D, x->w3, (size_t)h * D * sizeof *cat);
        w1 = cat;
    }
    dm_wmat *f1, *f2;
    fwd_packs(t, l, j, &f1, &f2);
    dm_wmat_quant_pack(f1, w1, tmp);
    dm_wmat_quant_pack(f2, x->w2, tmp);
    if (t->bf16) m->stale = 1;  /* the model's f32 packs: re-packed by dm_forward (dm_model_fresh) */
    dm_wmat_pack_t(&xt->p1t, w1, tmp);
    dm_wmat_pack_t(&xt->p2t, x->w2, tmp);
}

static int64_t n_groups(const dm_config *c) { return (int64_t)c->n_layers * (c->n_experts + c->n_shared + 1) + 2; }

void dm_tr_sync(dm_trainer *t) { dm_pool_run(t->pool, n_groups(&t->m->cfg), sync_task, t); }


/* The tensors each re-pack task owns (contiguous in the layout), so that one
 * task can run AdamW on them and pack them while they are still in cache. */
static void build_groups(dm_trainer *t)
{
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    int S = c->n_experts + c->n_shared, per = S + 1;
    int64_t layers = (int64_t)c->n_layers * per;
    for (int64_t i = 0; i < n_groups(c); i++) {
        int first = -1, count = 0;
        if (i == layers) {
            first = dm_model_tensor_at(m, m->embed.w);
            count = 2;
        } else if (i == layers + 1) {
            first = dm_model_tensor_at(m, m->norm_w);
            count = 4;
        } else {
            const dm_layer *ly = &m->layers[i / per];
            int j = (int)(i % per);
            if (j == S) {
                first = dm_model_tensor_at(m, ly->gate_w);
                count = c->selection_bias ? 3 : 2;
            } else {
                first = dm_model_tensor_at(m, ly->experts[j].w1);
                count = dm_expert_ops_of(c)->n_tensors;
            }
        }
        t->grp_t0[i] = first < 0 ? 0 : first;
        t->grp_t1[i] = first < 0 ? 0 : first + count;
    }
}

/* The per-tensor views into t->grad. */
static void grad_views(dm_trainer *t)
{
    const dm_model *m = t->m;
    int S = m->cfg.n_experts + m->cfg.n_shared;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const dm_layer *ly = &m->layers[l];
        t->lg[l].gate_w = grad_of(t, ly->gate_w);
        t->lg[l].gate_b = grad_of(t, ly->gate_b);
        for (int i = 0; i < S; i++) {
            const dm_expert_w *x = &ly->experts[i];
            t->lg[l].ex[i] = (struct expert_grad){grad_of(t, x->w1), grad_of(t, x->b1), grad_of(t, x->gamma),
                                                  grad_of(t, x->beta), grad_of(t, x->w2), grad_of(t, x->b2),
                                                  grad_of(t, x->w3)};
        }
    }
    t->g_embed_w = grad_of(t, m->embed.w);
    t->g_embed_b = grad_of(t, m->embed.b);
    t->g_norm_w = grad_of(t, m->norm_w);
    t->g_norm_b = grad_of(t, m->norm_b);
    t->g_head_w = grad_of(t, m->head.w);
    t->g_head_b = grad_of(t, m->head.b);
}

size_t dm_tr_tpacked_bytes(dm_trainer *t) { return carve_tpacked(t, NULL); }

void dm_tr_rebase(dm_trainer *t, unsigned char *tpacked, float *adam_m, float *adam_v)
{
    t->tpacked = tpacked;
    carve_tpacked(t, tpacked);
    t->adam_m = adam_m;
    t->adam_v = adam_v;
}

float *dm_tr_swap_grad(dm_trainer *t, float *g)
{
    float *old = t->grad;
    memcpy(g, old, (size_t)t->m->n_params * sizeof *g);
    t->grad = g;
    grad_views(t);
    return old;
}

void dm_trainer_free(dm_trainer *t);

dm_status dm_trainer_create(dm_model *m, const dm_train_config *tc, dm_pool *pool, dm_trainer **out, dm_error *err)
{
    *out = NULL;
    if (m->packed_only)
        return dm_fail(err, DM_ERR_ARG, "trainer: the model keeps its weights only packed (loaded for inference); "
                                        "load it without dm_model_opts.packed_only to train it");
    if (m->wtype != &dm_wtypes[DM_WT_F32])
        return dm_fail(err, DM_ERR_UNSUPPORTED, "trainer: training needs f32 weights, the model's are %s",
                       m->wtype->name);
    dm_status st = check_config(m, tc, err);
    if (st) return st;
    const dm_config *c = &m->cfg;
    dm_trainer *t = calloc(1, sizeof *t);
    if (!t) return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory");
    t->m = m;
    t->tc = *tc;
    t->pool = pool;
    t->n_threads = dm_pool_size(pool);
    t->bf16 = tc->precision == DM_PREC_BF16;
    int L = c->n_layers, S = c->n_experts + c->n_shared, E = c->n_experts;
    size_t np = (size_t)m->n_params * sizeof(float);
    t->grad = dm_calloc(np);
    t->adam_m = dm_calloc(np);
    t->adam_v = dm_calloc(np);
    t->frozen = calloc((size_t)m->n_tensors, 1);
    t->tensor_sq = calloc((size_t)m->n_tensors, sizeof *t->tensor_sq);
    t->grp_t0 = calloc((size_t)n_groups(c), sizeof *t->grp_t0);
    t->grp_t1 = calloc((size_t)n_groups(c), sizeof *t->grp_t1);
    t->gate_pt = calloc((size_t)L, sizeof *t->gate_pt);
    t->ext = calloc((size_t)L * S, sizeof *t->ext);
    t->fw = t->bf16 ? calloc((size_t)L * S * 2, sizeof *t->fw) : NULL;
    t->lg = calloc((size_t)L, sizeof *t->lg);
    t->lc = calloc((size_t)L, sizeof *t->lc);
    t->xb = calloc((size_t)L, sizeof *t->xb);
    t->counts = calloc((size_t)L * E, sizeof *t->counts);
    t->last_load = calloc((size_t)L * E, sizeof *t->last_load);
    t->bal = calloc((size_t)E, sizeof *t->bal);
    t->probsum = calloc((size_t)E, sizeof *t->probsum);
    int hmax = DM_MAX(c->hidden, c->shared_hidden);
    /* the pack's scratch (dm_wmat_pack_tmp: N K floats, and N K bf16 of a
     * quantized copy where the kernel has no pack_t), then [W1; W3] */
    size_t big = DM_MAX((size_t)hmax, (size_t)DM_MAX(c->n_experts, c->n_classes)) * c->dim;
    t->cat_off = (t->bf16 ? 3 : 2) * big;
    t->ttmp_floats = t->cat_off + 2 * big;
    if (t->bf16 && c->in_dim)  /* the embedding's bf16 copy through quantize_ref: [D, in] bf16 */
        t->ttmp_floats = DM_MAX(t->ttmp_floats, (size_t)c->dim * c->in_dim / 2 + 16);
    t->ttmp = dm_alloc(t->ttmp_floats * t->n_threads * sizeof(float));
    t->route_tmp = dm_alloc((size_t)t->n_threads * dm_route_scratch(c) * sizeof(float));
    int ok = t->grad && t->adam_m && t->adam_v && t->frozen && t->gate_pt && t->ext && t->lg && t->lc && t->xb &&
             t->counts && t->last_load && t->bal && t->probsum && t->ttmp && t->route_tmp && t->tensor_sq && t->grp_t0 && t->grp_t1 &&
             (t->fw || !t->bf16);
    for (int l = 0; ok && l < L; l++) {
        ok = (t->lg[l].ex = calloc((size_t)S, sizeof *t->lg[l].ex)) != NULL &&
             (t->lc[l].rb.offsets = dm_alloc((size_t)(E + 1) * sizeof(int32_t))) != NULL;
    }
    size_t ntp = ok ? carve_tpacked(t, NULL) : 0;
    if (ok) ok = (t->tpacked = dm_alloc(ntp)) != NULL;
    if (!ok) {
        dm_trainer_free(t);
        return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory for %lld parameters", (long long)m->n_params);
    }
    carve_tpacked(t, t->tpacked);
    t->packed_bytes = ntp + (size_t)(dm_model_memory(m) - m->n_params * (int64_t)sizeof(float));
    for (int i = 0; i < m->n_tensors; i++) {
        const char *n = m->tensors[i].name;
        size_t len = strlen(n);
        t->frozen[i] = len >= 18 && !strcmp(n + len - 18, "gating.expert_bias");
    }
    grad_views(t);
    build_groups(t);
    dm_tr_sync(t);
    *out = t;
    return DM_OK;
}

static void free_acts(dm_trainer *t)
{
    const dm_config *c = &t->m->cfg;
    for (int l = 0; t->lc && l < c->n_layers; l++) {
        dm_moe_state *lc = &t->lc[l];
        int own = !t->xchg;  /* with an exchange the cache rows live in the exchange buffers */
        void *bufs[] = {lc->rb.logits, lc->rb.e, lc->rb.w, lc->rb.a_rows, lc->rb.a_slot, lc->rb.a_w, lc->ybuf,
                        own ? lc->h1 : NULL, own ? lc->hn : NULL, own ? lc->mean : NULL, own ? lc->rstd : NULL};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dm_free(bufs[i]);
        int32_t *off = lc->rb.offsets;
        memset(lc, 0, sizeof *lc);
        lc->rb.offsets = off;
    }
    void *bufs[] = {t->act, t->xn, t->hmean, t->hrstd, t->out, t->dout, t->dact[0], t->dact[1], t->dxslot,
                    t->dw, t->dlogits, t->resid, t->dscratch, t->tasks, t->bwork, t->loss_part};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dm_free(bufs[i]);
    t->act = t->xn = t->hmean = t->hrstd = t->out = t->dout = t->dact[0] = t->dact[1] = NULL;
    t->dxslot = t->dw = t->dlogits = t->resid = t->dscratch = NULL;
    t->tasks = NULL;
    t->bwork = NULL;
    t->loss_part = NULL;
    t->bwork_stride = 0;
    t->cap = 0;
}

void *dm_tr_bwork_gemm(const dm_trainer *t, int tid) { return t->bwork + (size_t)tid * t->bwork_stride; }

size_t dm_tr_bwork_stride(const dm_trainer *t, int64_t rows)
{
    if (!t->bf16) return 0;
    const dm_config *c = &t->m->cfg;
    int D = c->dim, S = c->n_experts + c->n_shared;
    size_t most = 0;
    for (int i = 0; i < S; i++) {  /* the GEMMs run one at a time after the scaled rows */
        const expert_t *e = &t->ext[i];
        int h = i < c->n_experts ? c->hidden : c->shared_hidden;
        most = DM_MAX(most, dm_gemm_tn_bf16_work(rows, D, h));
        most = DM_MAX(most, dm_gemm_tn_bf16_work(rows, h, D));
        most = DM_MAX(most, dm_wmat_work_size(&e->p1t, rows));
        most = DM_MAX(most, dm_wmat_work_size(&e->p2t, rows));
        most = DM_MAX(most, dm_wmat_work_size(&t->fw[2 * i], DM_MAX(rows, DM_MOE_GEMM_ROWS)));
        most = DM_MAX(most, dm_wmat_work_size(&t->fw[2 * i + 1], DM_MAX(rows, DM_MOE_GEMM_ROWS)));
    }
    if (c->in_dim) {  /* the embedding: forward in row blocks, its weight gradient over every row */
        most = DM_MAX(most, dm_wmat_work_size(&t->embed_fw, DM_MAX(rows, DM_TR_ROW_BLOCK)));
        most = DM_MAX(most, dm_gemm_tn_bf16_work(rows, D, c->in_dim));
    }
    return (most + 63) / 64 * 64;
}

void dm_trainer_free(dm_trainer *t)
{
    if (!t) return;
    free_acts(t);
    dm_trd_free(t);
    for (int l = 0; t->lc && l < t->m->cfg.n_layers; l++) dm_free(t->lc[l].rb.offsets);
    for (int l = 0; t->xb && l < t->m->cfg.n_layers; l++) dm_moe_xbuf_free(&t->xb[l]);
    free(t->xb);
    for (int l = 0; t->lg && l < t->m->cfg.n_layers; l++) free(t->lg[l].ex);
    dm_free(t->grad); dm_free(t->adam_m); dm_free(t->adam_v); dm_free(t->tpacked); dm_free(t->ttmp);
    dm_free(t->route_tmp);
    free(t->fw);
    free(t->frozen); free(t->mask); free(t->masked); free(t->tensor_sq); free(t->grp_t0); free(t->grp_t1); free(t->gate_pt); free(t->ext); free(t->lg); free(t->lc);
    free(t->counts); free(t->last_load); free(t->bal); free(t->probsum);
    free(t);
}

dm_status dm_tr_reserve(dm_trainer *t, int64_t n, dm_error *err)
{
    if (n <= t->cap) return DM_OK;
    const dm_config *c = &t->m->cfg;
    /* row and slot indices are int32, as in inference (dm_ctx's reserve) */
    if (n > (int64_t)INT32_MAX / ((int64_t)(c->top_k + c->n_shared) * c->dim) / 2)
        return dm_fail(err, DM_ERR_ARG, "micro-batch of %lld rows is too large for one step", (long long)n);
    free_acts(t);
    int64_t D = c->dim, E = c->n_experts, k = c->top_k, S = c->n_shared, J = k + S, L = c->n_layers;
    int64_t hmax = DM_MAX(c->hidden, c->shared_hidden), ldh = (int64_t)up_rows(c, (int)hmax);
    int64_t comp = n * k, rows = comp + n * S, outw = dm_model_out_width(c);
    int ok = 1;
#define A(ptr, count) do { if (ok) ok = ((ptr) = dm_alloc((size_t)(count) * sizeof *(ptr))) != NULL; } while (0)
    for (int l = 0; l < L; l++) {
        dm_moe_state *lc = &t->lc[l];
        A(lc->rb.logits, n * E); A(lc->rb.e, n * k); A(lc->rb.w, n * k);
        A(lc->rb.a_rows, n * k); A(lc->rb.a_slot, n * k); A(lc->rb.a_w, n * k);
        if (!t->xchg) { A(lc->h1, rows * ldh); A(lc->hn, rows * hmax); A(lc->mean, rows); A(lc->rstd, rows); }
        A(lc->ybuf, n * J * D);
    }
    A(t->act, (L + 1) * n * D);
    A(t->xn, n * D); A(t->hmean, n); A(t->hrstd, n);
    A(t->out, n * outw); A(t->dout, n * outw);
    A(t->dact[0], n * D); A(t->dact[1], n * D); A(t->dxslot, n * J * D);
    A(t->dw, n * k); A(t->dlogits, n * E); A(t->resid, n);
    A(t->loss_part, n / DM_TR_LOSS_BLOCK + 1);
    t->ecap = n;  /* rows one expert gets (more when rows are exchanged: the backward grows it) */
    A(t->dscratch, (int64_t)t->n_threads * t->ecap * 2 * ldh);
    t->bwork_stride = dm_tr_bwork_stride(t, t->ecap);
    if (t->bf16) A(t->bwork, (int64_t)t->n_threads * t->bwork_stride);
    A(t->tasks, dm_moe_max_tasks(c, n, comp));
#undef A
    if (!ok) {
        free_acts(t);
        return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory for a micro-batch of %lld rows", (long long)n);
    }
    t->cap = n;
    return DM_OK;
}

/* ---------------------------------------------------------------- schedule + optimizer */

static double lr_at(const dm_train_config *tc, int64_t step)
{
    if (step < tc->warmup) return tc->lr * (double)(step + 1) / (double)tc->warmup;
    if (tc->schedule == DM_SCHED_CONSTANT) return tc->lr;
    double span = (double)(tc->total_steps - tc->warmup);
    double p = span > 0 ? (double)(step - tc->warmup) / span : 1.0;
    if (p > 1) p = 1;
    return tc->lr * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
}

void dm_tr_adamw_range(const adam_arg *a, int i, int64_t lo, int64_t hi)
{
    dm_trainer *t = a->t;
    const dm_train_config *tc = &t->tc;
    if (t->frozen[i] || hi <= lo) return;
    t->m->kern->adamw(t->m->params + lo, t->grad + lo, t->adam_m + lo, t->adam_v + lo, hi - lo, a->gscale, a->lr,
                      tc->beta1, tc->beta2, tc->eps, tc->weight_decay, a->bc1, a->bc2);
    if (t->mask && t->masked[i]) {  /* pruned weights stay exactly zero */
        float *p = t->m->params;
        const unsigned char *k = t->mask;
        for (int64_t j = lo; j < hi; j++) p[j] = k[j] ? p[j] : 0.0f;
    }
}

void dm_tr_sync_group(dm_trainer *t, int64_t g, int tid) { sync_task(t, g, tid); }
int64_t dm_tr_n_groups(const dm_config *c) { return n_groups(c); }

/* AdamW on one group's tensors, then re-pack them (still in cache). */
/* the profiler's ops of a step (docs/profiling.md) */
static const dm_span_kind SK_STEP = {"train step", "train", "rows", "step"};
static const dm_span_kind SK_ZERO = {"zero grads", "train", NULL, NULL};
static const dm_span_kind SK_CHECK = {"check input", "train", "rows", NULL};
static const dm_span_kind SK_RESERVE = {"reserve buffers", "train", "rows", NULL};
static const dm_span_kind SK_EMBED_F = {"embed forward", "train", "rows", NULL};
static const dm_span_kind SK_HEAD_F = {"head forward", "train", "rows", NULL};
static const dm_span_kind SK_LOSS = {"loss", "train", "rows", NULL};
static const dm_span_kind SK_HEAD_B = {"head backward", "train", "rows", NULL};
static const dm_span_kind SK_BAL = {"balance loss", "train", "rows", "layer"};
static const dm_span_kind SK_EMBED_B = {"embed backward", "train", "rows", NULL};
static const dm_span_kind SK_GATHER_P = {"gather params", "train", "unit", NULL};
static const dm_span_kind SK_SYNC = {"grad sync", "train", "unit", NULL};
static const dm_span_kind SK_SYNC_WAIT = {"grad sync wait", "train", NULL, NULL};
static const dm_span_kind SK_MASK = {"mask grads", "train", NULL, NULL};
static const dm_span_kind SK_NORM = {"grad norm", "train", NULL, NULL};
static const dm_span_kind SK_OPT = {"optimizer", "train", "step", NULL};
static const dm_span_kind SK_ADAMW = {"adamw", "train", "group", NULL};
static const dm_span_kind SK_REPACK = {"repack", "train", "group", NULL};
static const dm_span_kind SK_ADAMW_PACK = {"adamw + repack", "train", "group", NULL};
static const dm_span_kind SK_AUXFREE = {"aux-free update", "train", NULL, NULL};
static const dm_span_kind SK_BARRIER = {"update barrier", "train", NULL, NULL};

/* A span around one statement, only where cond holds (an op that exists in this run). */
#define SPAN(cond, kind, a0, a1, ...) do { \
        uint64_t t0_ = (cond) ? dm_span_begin() : 0; \
        __VA_ARGS__; \
        dm_span_end(kind, t0_, a0, a1); \
    } while (0)

/* Rows of an expert matrix per slice of the fused update: about 32 KB of
 * fp32, in whole steps of the packs' row granularity. */
#define DM_TR_SLICE_FLOATS 8192

/* An expert's matrix W [N, K] (tensor i): AdamW on a slice of its rows, then
 * those rows of its forward pack fw and transposed pack wt, while the slice
 * is still in cache. Bitwise what AdamW on all of W then the two whole packs
 * give. */
static void update_sliced(const adam_arg *a, int i, dm_wmat *fw, dm_wmat *wt, int G, float *tmp)
{
    dm_trainer *t = a->t;
    const dm_tensor_desc *d = &t->m->tensors[i];
    const float *W = t->m->params + d->offset;
    int N = fw->N, K = fw->K;
    int R = G * DM_MAX(1, DM_TR_SLICE_FLOATS / (G * K));
    for (int r0 = 0; r0 < N; r0 += R) {
        int r1 = DM_MIN(N, r0 + R);
        dm_tr_adamw_range(a, i, d->offset + (int64_t)r0 * K, d->offset + (int64_t)r1 * K);
        dm_wmat_quant_pack_rows(fw, W, r0, r1);
        dm_wmat_pack_t_rows(wt, W, r0, r1, tmp);
    }
}

/* Group g is an expert's whose update can run fused (its packs' row steps in *G1, *G2). */
static int fusable(dm_trainer *t, int64_t g, dm_wmat **f1, dm_wmat **f2, int *G1, int *G2)
{
    const dm_config *c = &t->m->cfg;
    int S = c->n_experts + c->n_shared, per = S + 1;
    int64_t layers = (int64_t)c->n_layers * per;
    if (g >= layers || g % per == S || dm_expert_ops_of(c)->up_mult != 1) return 0;
    int l = (int)(g / per), j = (int)(g % per);
    expert_t *xt = &t->ext[l * S + j];
    fwd_packs(t, l, j, f1, f2);
    *G1 = dm_wmat_rows_step(*f1, &xt->p1t);
    *G2 = dm_wmat_rows_step(*f2, &xt->p2t);
    return *G1 && *G2;
}

int dm_tr_group_fused(dm_trainer *t, int64_t g)
{
    dm_wmat *f1, *f2;
    int G1, G2;
    return fusable(t, g, &f1, &f2, &G1, &G2);
}

/* An expert's group, fused (update_sliced) where its kernels allow; 0 if not. */
static int update_expert_fused(const adam_arg *a, int64_t g, int tid)
{
    dm_trainer *t = a->t;
    dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    int S = c->n_experts + c->n_shared, per = S + 1;
    dm_wmat *f1, *f2;
    int G1, G2;
    if (!fusable(t, g, &f1, &f2, &G1, &G2)) return 0;
    int l = (int)(g / per), j = (int)(g % per);
    dm_expert_w *x = &m->layers[l].experts[j];
    expert_t *xt = &t->ext[l * S + j];
    float *tmp = t->ttmp + (size_t)tid * t->ttmp_floats;
    uint64_t t0 = dm_span_begin();
    for (int i = t->grp_t0[g]; i < t->grp_t1[g]; i++) {
        if (t->skip_tensor && t->skip_tensor[i]) continue;   /* the host's replica: another rank's */
        const dm_tensor_desc *d = &m->tensors[i];
        const float *p = m->params + d->offset;
        if (p == x->w1) update_sliced(a, i, f1, &xt->p1t, G1, tmp);
        else if (p == x->w2) update_sliced(a, i, f2, &xt->p2t, G2, tmp);
        else dm_tr_adamw_range(a, i, d->offset, d->offset + d->numel);
    }
    if (t->bf16) m->stale = 1;  /* as sync_task */
    dm_span_end(&SK_ADAMW_PACK, t0, g, 0);
    return 1;
}

static void update_task(void *arg, int64_t g, int tid)
{
    adam_arg *a = arg;
    dm_trainer *t = a->t;
    if (t->skip_group && t->skip_group[g]) return;
    if (update_expert_fused(a, g, tid)) return;
    uint64_t t0 = dm_span_begin();
    for (int i = t->grp_t0[g]; i < t->grp_t1[g]; i++) {
        const dm_tensor_desc *d = &t->m->tensors[i];
        dm_tr_adamw_range(a, i, d->offset, d->offset + d->numel);
    }
    dm_span_end(&SK_ADAMW, t0, g, 0);
    SPAN(1, &SK_REPACK, g, 0, sync_task(t, g, tid));
}

typedef struct sq_arg { dm_trainer *t; int64_t lo, hi; } sq_arg;

static void sq_task(void *arg, int64_t i, int tid)
{
    DM_UNUSED(tid);
    sq_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_tensor_desc *d = &t->m->tensors[i];
    int64_t lo = DM_MAX(d->offset, a->lo), hi = DM_MIN(d->offset + d->numel, a->hi);
    int64_t n = t->frozen[i] || hi <= lo ? 0 : hi - lo;
    t->tensor_sq[i] = t->m->kern->sumsq(t->grad + lo, n);  /* a fixed order: deterministic */
}

void dm_tr_tensor_sq(dm_trainer *t, int64_t lo, int64_t hi)
{
    sq_arg a = {t, lo, hi};
    dm_pool_run(t->pool, t->m->n_tensors, sq_task, &a);
}

/* Global L2 norm: per-tensor sums in parallel, added in tensor order. */
static double grad_norm(dm_trainer *t)
{
    dm_tr_tensor_sq(t, 0, t->m->n_params);
    double s = 0;
    for (int i = 0; i < t->m->n_tensors; i++) s += t->tensor_sq[i];
    return sqrt(s);
}

/* DeepSeek-V3's aux-free update from the step's assignment counts. */
static void aux_free_update(dm_trainer *t)
{
    const dm_config *c = &t->m->cfg;
    int E = c->n_experts, per = E + c->n_shared + 1;
    for (int l = 0; l < c->n_layers; l++) {
        if (t->skip_group && t->skip_group[(int64_t)l * per + E + c->n_shared]) continue;   /* another rank's router */
        const int64_t *cnt = t->counts + (int64_t)l * E;
        double total = 0;
        for (int e = 0; e < E; e++) total += (double)cnt[e];
        double mean = total / E;
        float *b = t->m->layers[l].sel_bias;
        for (int e = 0; e < E; e++) {
            double load = (double)cnt[e];
            b[e] += t->tc.bias_update * (float)((load < mean) - (load > mean));
        }
    }
}

/* ---------------------------------------------------------------- step */

static dm_status micro_batch(dm_trainer *t, const float *x, const float *target, const int32_t *labels, int64_t n,
                             float scale, int last, double *loss, double *bal, int64_t *correct, dm_error *err)
{
    dm_status s;
    const dm_config *c = &t->m->cfg;
    int L = c->n_layers;
    t->x = x;
    t->n = n;
    /* dropout: the step's base; each row's mask is keyed by its global row in the step and its slot */
    t->drop_base = (uint64_t)t->step * 0x9e3779b97f4a7c15ull + 1;
    t->drop_row0 = (int64_t)t->micro * n;
    /* units (train_dist.c): 0 the embedding, 1..L the layers, L + 1 the head; under
     * ZeRO-3 each is gathered before it runs and released after */
#define USE(u) do { SPAN(t->dist, &SK_GATHER_P, u, 0, s = dm_trd_unit_use(t, (u), err)); if (s) return s; } while (0)
#define READY(u) do { SPAN(t->dist, &SK_SYNC, u, 0, s = dm_trd_grads_ready(t, (u), last, err)); if (s) return s; } while (0)
    USE(0);
    SPAN(1, &SK_EMBED_F, n, 0, dm_tr_embed_forward(t));   /* without an embedding: the rows' copy */
    dm_trd_unit_done(t, 0);
    for (int l = 0; l < L; l++) {
        USE(l + 1);
        if ((s = dm_tr_layer_forward(t, l, err))) return s;
        dm_trd_unit_done(t, l + 1);
    }
    USE(L + 1);
    SPAN(c->n_classes, &SK_HEAD_F, n, 0, if (c->n_classes) dm_tr_head_forward(t));
    SPAN(1, &SK_LOSS, n, 0, *loss += dm_tr_task_loss(t, target, labels, scale, correct));

    /* backward: d holds the gradient w.r.t. the current layer's output; each
     * unit's gradients start their reduction as soon as they are complete */
    float *d = t->dact[0], *dx = t->dact[1];
    SPAN(1, &SK_HEAD_B, n, 0,   /* without a head: the loss gradient's copy */
         if (c->n_classes) dm_tr_head_backward(t, d);
         else dm_pool_copy(t->pool, d, t->dout, (size_t)n * c->dim * sizeof *d));
    dm_trd_unit_done(t, L + 1);
    READY(L + 1);
    for (int l = L - 1; l >= 0; l--) {
        USE(l + 1);
        SPAN(1, &SK_BAL, n, l, *bal += dm_tr_balance(t, l, scale));
        if ((s = dm_tr_layer_backward(t, l, d, dx, err))) return s;
        dm_trd_unit_done(t, l + 1);
        READY(l + 1);
        float *tmp = d; d = dx; dx = tmp;
    }
    USE(0);
    SPAN(c->in_dim, &SK_EMBED_B, n, 0, if (c->in_dim) dm_tr_embed_backward(t, d));
    dm_trd_unit_done(t, 0);
    READY(0);
#undef USE
#undef READY
    return DM_OK;
}

void dm_tr_set_exchange(dm_trainer *t, const dm_moe_exchange *x)
{
    free_acts(t);  /* the cache's size depends on it */
    t->xchg = x;
}

static dm_status train_step(dm_trainer *t, const float *x, const float *target, const int32_t *labels, int64_t n_rows,
                            dm_step_stats *st, dm_error *err);

dm_status dm_train_step(dm_trainer *t, const float *x, const float *target, const int32_t *labels, int64_t n_rows,
                        dm_step_stats *st, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    int64_t step = t->step;
    dm_status s = train_step(t, x, target, labels, n_rows, st, err);
    dm_span_end(&SK_STEP, t0, n_rows, step + 1);
    if (t0 && !s) {  /* the step's expert load (its last micro-batch), one counter per layer */
        const dm_config *c = &t->m->cfg;
        char name[32];
        for (int l = 0; l < c->n_layers; l++) {
            snprintf(name, sizeof name, "expert load L%d", l);
            dm_trace_counter(name, c->n_experts, t->last_load + (int64_t)l * c->n_experts);
        }
    }
    return s;
}

static dm_status train_step(dm_trainer *t, const float *x, const float *target, const int32_t *labels, int64_t n_rows,
                            dm_step_stats *st, dm_error *err)
{
    const dm_config *c = &t->m->cfg;
    const dm_train_config *tc = &t->tc;
    int A = tc->grad_accum, in = dm_model_in_width(c), outw = dm_model_out_width(c);
    if (n_rows < A || n_rows % A)
        return dm_fail(err, DM_ERR_ARG, "step of %lld rows does not split into %d micro-batches", (long long)n_rows, A);
    if (tc->loss == DM_LOSS_CE ? !labels : !target)
        return dm_fail(err, DM_ERR_ARG, "step needs %s", tc->loss == DM_LOSS_CE ? "labels" : "targets");
    dm_status s;
    SPAN(1, &SK_CHECK, n_rows, 0, s = dm_check_input(t->m->kern, x, n_rows, in, err));
    if (s) return s;
    if (tc->loss == DM_LOSS_CE) {
        for (int64_t i = 0; i < n_rows; i++)
            if (labels[i] < 0 || labels[i] >= c->n_classes)
                return dm_fail(err, DM_ERR_ARG, "label %d of row %lld is outside [0, %d)", labels[i], (long long)i, c->n_classes);
    } else {
        dm_error e2;
        if ((s = dm_check_input(t->m->kern, target, n_rows, outw, &e2))) return dm_fail(err, s, "target %s", e2.msg);
    }
    int64_t mb = n_rows / A;
    SPAN(1, &SK_RESERVE, mb, 0, s = dm_tr_reserve(t, mb, err));
    if (s) return s;
    SPAN(1, &SK_ZERO, 0, 0, s = dm_trd_begin_step(t, err));
    if (s) return s;
    memset(t->counts, 0, (size_t)c->n_layers * c->n_experts * sizeof *t->counts);
    double loss = 0, bal = 0;
    int64_t correct = 0;
    /* data parallel: this rank's micro-batches are numbers rank*A .. rank*A + A-1
     * of the global step, scaled as one process's A*ranks micro-batches would be */
    int R = dm_trd_ranks(t);
    for (int a = 0; a < A; a++) {
        int64_t r0 = a * mb;
        t->micro = dm_trd_rank(t) * A + a;
        if ((s = micro_batch(t, x + r0 * in, target ? target + r0 * outw : NULL, labels ? labels + r0 : NULL, mb,
                             1.0f / ((float)A * (float)R), a == A - 1, &loss, &bal, &correct, err)))
            return s;
    }
    double sums[3] = {loss, bal, (double)correct};
    SPAN(t->dist, &SK_SYNC_WAIT, 0, 0, s = dm_trd_end_backward(t, sums, 3, err));
    if (s) return s;
    loss = sums[0] / R, bal = sums[1] / R, correct = (int64_t)sums[2];
    uint64_t t0 = t->mask ? dm_span_begin() : 0;
    if (t->mask)  /* pruned weights have no gradient (clipping sees only the kept ones) */
        for (int i = 0; i < t->m->n_tensors; i++) {
            if (!t->masked[i]) continue;
            const dm_tensor_desc *d = &t->m->tensors[i];
            float *g = t->grad + d->offset;
            const unsigned char *k = t->mask + d->offset;
            for (int64_t j = 0; j < d->numel; j++) g[j] = k[j] ? g[j] : 0.0f;
        }
    dm_span_end(&SK_MASK, t0, 0, 0);
    double norm;
    t0 = dm_span_begin();
    if (t->dist) {
        if ((s = dm_trd_grad_norm(t, &norm, err))) return s;
    } else {
        norm = grad_norm(t);
    }
    dm_span_end(&SK_NORM, t0, 0, 0);
    float gscale = 1.0f;
    if (tc->clip > 0 && norm > tc->clip) gscale = (float)(tc->clip / (norm + 1e-6));
    double lr = lr_at(tc, t->step);
    t->step++;
    adam_arg aa = {t, gscale, (float)lr, (float)(1.0 - pow(tc->beta1, (double)t->step)),
                   (float)(1.0 - pow(tc->beta2, (double)t->step))};
    SPAN(1, &SK_OPT, t->step, 0, if (!dm_trd_update(t, &aa, &s, err)) dm_pool_run(t->pool, n_groups(c), update_task, &aa));
    if (s) return s;
    if (tc->balance & DM_BAL_AUX_FREE) SPAN(1, &SK_AUXFREE, 0, 0, aux_free_update(t));
    if (t->dist) SPAN(1, &SK_BARRIER, 0, 0, s = dm_trd_end_update(t, err));
    if (s) return s;
    if (st) *st = (dm_step_stats){loss / A, bal / A, norm, lr, t->step, correct};
    return DM_OK;
}

dm_status dm_tr_loss_and_grad(dm_trainer *t, const float *x, const float *target, const int32_t *labels,
                              int64_t n, double *loss, dm_error *err)
{
    dm_status s = dm_tr_reserve(t, n, err);
    if (s) return s;
    memset(t->grad, 0, (size_t)t->m->n_params * sizeof *t->grad);
    double l = 0, b = 0;
    int64_t correct = 0;
    if ((s = micro_batch(t, x, target, labels, n, 1.0f, 1, &l, &b, &correct, err))) return s;
    *loss = l + b;
    return DM_OK;
}

void dm_trainer_expert_load(const dm_trainer *t, double *load)
{
    memcpy(load, t->last_load, (size_t)t->m->cfg.n_layers * t->m->cfg.n_experts * sizeof *load);
}

int64_t dm_trainer_step_count(const dm_trainer *t) { return t->step; }

dm_status dm_trainer_keep_sparsity(dm_trainer *t, dm_error *err)
{
    dm_model *m = t->m;
    if (!t->mask) {
        t->mask = calloc((size_t)m->n_params, 1);
        t->masked = calloc((size_t)m->n_tensors, 1);
        if (!t->mask || !t->masked) return dm_fail(err, DM_ERR_NOMEM, "keep sparsity: out of memory");
    }
    int64_t kept = 0, total = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        /* the experts' GEMM weights: 2-D, packed, not the router, embedding or head */
        if (!d->wm || d->ndim != 2 || d->wm == &m->embed.p || d->wm == &m->head.p || strstr(d->name, "gating.")) continue;
        const float *p = m->params + d->offset;
        int64_t K = d->shape[1];
        if (K % 4)
            return dm_fail(err, DM_ERR_SHAPE, "keep sparsity: %s has %lld columns, not a multiple of 4 (2:4 needs it)",
                           d->name, (long long)K);
        for (int64_t j = 0; j < d->numel; j += 4) {
            int nz = (p[j] != 0) + (p[j + 1] != 0) + (p[j + 2] != 0) + (p[j + 3] != 0);
            if (nz > 2)
                return dm_fail(err, DM_ERR_ARG, "keep sparsity: %s is not 2:4 sparse (row %lld, columns %lld..%lld hold "
                               "%d nonzeros); prune it first: deepmoe quantize --type nm24", d->name,
                               (long long)(j / K), (long long)(j % K), (long long)(j % K + 3), nz);
            for (int q = 0; q < 4; q++) t->mask[d->offset + j + q] = p[j + q] != 0;
            kept += nz;
        }
        total += d->numel;
        t->masked[i] = 1;
    }
    if (!total) return dm_fail(err, DM_ERR_ARG, "keep sparsity: the model has no expert weights");
    DM_UNUSED(kept);
    return DM_OK;
}
