/* train_layer.c - one MoE layer for training: the forward keeps what the
 * backward needs; the backward turns the output gradient into the input
 * gradient and accumulates every parameter gradient.
 *
 * Determinism: weight gradients of an expert are summed by the one task that
 * owns the expert, rows in dispatch order; per-row gradients are written to
 * (row, slot) buffers and summed in a fixed order. Results do not depend on the
 * thread count. */
#include "train/trainer.h"
#include "nn/router.h"

#include <math.h>
#include <string.h>

#define ROW_BLOCK 64

static int64_t hmax_of(const dm_config *c) { return DM_MAX(c->hidden, c->shared_hidden); }
static int64_t ldh_of(const dm_config *c) { return hmax_of(c) * (c->expert == DM_EXPERT_SWIGLU ? 2 : 1); }

/* Rows [start, start+len) of task "expert i" map to cache rows and input rows:
 * routed experts use dispatch positions, shared expert s uses n*k + s*n + r. */
typedef struct span {
    int expert;           /* index into layer experts (E + S) */
    int64_t cache0;       /* first cache row */
    int64_t len;
    const int32_t *rows;  /* input rows (routed) or NULL (shared: consecutive from row0) */
    int64_t row0;
    const float *w;       /* routing weights of the rows (routed) or NULL */
    const int32_t *slot;  /* ybuf slots (routed) or NULL */
} span;

static span make_span(const dm_trainer *t, const layer_cache *lc, int i, int64_t start, int64_t len)
{
    const dm_config *c = &t->m->cfg;
    int64_t n = t->n, nk = n * c->top_k;
    if (i < c->n_experts) {
        int64_t p = lc->rb.offsets[i] + start;
        return (span){i, p, len, lc->rb.a_rows + p, 0, lc->rb.a_w + p, lc->rb.a_slot + p};
    }
    return (span){i, nk + (int64_t)(i - c->n_experts) * n + start, len, NULL, start, NULL, NULL};
}

/* Points g's output at the span's (row, slot) rows of buf [n, J, D]: routed
 * experts scatter through the dispatch slots, a shared expert writes its slot
 * of consecutive rows. */
static void span_output(const dm_trainer *t, const span *sp, float *buf, dm_gemm *g)
{
    const dm_config *c = &t->m->cfg;
    int64_t D = c->dim, J = c->top_k + c->n_shared;
    if (sp->rows) {
        g->C = buf;
        g->ldc = D;
        g->c_idx = sp->slot;
    } else {
        g->C = buf + (sp->row0 * J + c->top_k + (sp->expert - c->n_experts)) * D;
        g->ldc = J * D;
    }
}

/* ---------------------------------------------------------------- dropout */

/* Counter-based dropout: element (cache row, j) of layer l is dropped when a
 * hash of (micro-batch base, l, row, j) falls below p. The backward pass
 * recomputes the same mask, nothing is stored, and the mask does not depend on
 * which thread handles which rows. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* x[i, j] *= mask / (1 - p) for rows [0, len) of cache rows starting at row0. */
static void dropout_rows(const dm_trainer *t, int l, int64_t row0, int64_t len, int h, float *x, int64_t ld)
{
    float p = t->tc.dropout;
    if (!(p > 0)) return;
    uint64_t cut = (uint64_t)((double)p * 18446744073709551616.0), base = mix64(t->drop_base + (uint64_t)l * 0x9e3779b97f4a7c15ull);
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < len; i++) {
        uint64_t rb = mix64(base ^ (uint64_t)(row0 + i) * 0xd6e8feb86659fd93ull);
        float *r = x + i * ld;
        for (int j = 0; j < h; j++) r[j] = mix64(rb + (uint64_t)j) < cut ? 0.0f : r[j] * keep;
    }
}

/* ---------------------------------------------------------------- forward */

typedef struct fwd_arg { dm_trainer *t; int l; int64_t n_tasks; } fwd_arg;

/* Task list: (expert, start, len) triples in t->tasks. */
static int64_t make_tasks(dm_trainer *t, const layer_cache *lc, int block)
{
    const dm_config *c = &t->m->cfg;
    int64_t nt = 0;
    for (int i = 0; i < c->n_experts + c->n_shared; i++) {
        int64_t count = i < c->n_experts ? lc->rb.offsets[i + 1] - lc->rb.offsets[i] : t->n;
        if (!block) {  /* one task per expert (backward: it owns the expert's gradients) */
            if (count) { t->tasks[3 * nt] = i; t->tasks[3 * nt + 1] = 0; t->tasks[3 * nt + 2] = count; nt++; }
            continue;
        }
        for (int64_t s = 0; s < count; s += block) {
            t->tasks[3 * nt] = i;
            t->tasks[3 * nt + 1] = s;
            t->tasks[3 * nt + 2] = DM_MIN(block, count - s);
            nt++;
        }
    }
    return nt;
}

static void fwd_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    fwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    const dm_kernels *K = m->kern;
    layer_cache *lc = &t->lc[a->l];
    span sp = make_span(t, lc, (int)t->tasks[3 * ti], t->tasks[3 * ti + 1], t->tasks[3 * ti + 2]);
    const dm_expert_w *x = &m->layers[a->l].experts[sp.expert];
    int D = c->dim, H = x->hidden;
    int swiglu = c->expert == DM_EXPERT_SWIGLU;
    int64_t ldh = ldh_of(c), hm = hmax_of(c);
    const float *in = t->act + (int64_t)a->l * t->n * D;
    const float *A = sp.rows ? in : in + sp.row0 * D;
    float *h1 = lc->h1 + sp.cache0 * ldh, *hn = lc->hn + sp.cache0 * hm;
    dm_gemm up = {
        .M = sp.len, .N = swiglu ? 2 * H : H, .K = D, .A = A, .lda = D, .a_idx = sp.rows, .B = &x->p1,
        .bias = x->b1, .act = swiglu ? DM_ACT_NONE : DM_ACT_RELU, .C = h1, .ldc = ldh,
    };
    dm_wmat_gemm(&up);
    if (swiglu) K->silu_mul(h1, sp.len, H, ldh, hn, hm);
    else K->layernorm_fwd(h1, sp.len, H, ldh, x->gamma, x->beta, c->ln_eps, hn, hm,
                          lc->mean + sp.cache0, lc->rstd + sp.cache0);
    dropout_rows(t, a->l, sp.cache0, sp.len, H, hn, hm);
    dm_gemm down = {
        .M = sp.len, .N = D, .K = H, .A = hn, .lda = hm, .B = &x->p2, .bias = x->b2,
        .R = swiglu ? NULL : A, .ldr = D, .r_idx = sp.rows,
    };
    span_output(t, &sp, lc->yexp, &down);
    dm_wmat_gemm(&down);
}

typedef struct comb_arg { dm_trainer *t; int l; } comb_arg;

static void combine_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    comb_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const layer_cache *lc = &t->lc[a->l];
    int D = c->dim, k = c->top_k, J = k + c->n_shared;
    float *out = t->act + (int64_t)(a->l + 1) * t->n * D;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++) {
        const float *y = lc->yexp + r * J * D, *w = lc->rb.w + r * k;
        float *o = out + r * D;
        for (int d = 0; d < D; d++) o[d] = w[0] * y[d];
        for (int j = 1; j < J; j++) {
            float wj = j < k ? w[j] : 1.0f;
            for (int d = 0; d < D; d++) o[d] += wj * y[(int64_t)j * D + d];
        }
    }
}

void dm_tr_layer_forward(dm_trainer *t, int l)
{
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    layer_cache *lc = &t->lc[l];
    const float *in = t->act + (int64_t)l * t->n * c->dim;
    dm_moe_route(m, &m->layers[l], t->pool, in, t->n, &lc->rb, t->route_tmp);
    dm_moe_dispatch(c, t->n, &lc->rb);
    /* expert load of this micro-batch (metrics) and of the step (aux-free) */
    int E = c->n_experts;
    int64_t total = t->n * c->top_k;
    for (int e = 0; e < E; e++) {
        int64_t cnt = lc->rb.offsets[e + 1] - lc->rb.offsets[e];
        t->counts[(int64_t)l * E + e] += cnt;
        t->last_load[(int64_t)l * E + e] = total ? (double)cnt / (double)total : 0;
    }
    fwd_arg a = {t, l, make_tasks(t, lc, ROW_BLOCK)};
    dm_pool_run(t->pool, a.n_tasks, fwd_task, &a);
    comb_arg ca = {t, l};
    dm_pool_run(t->pool, (t->n + ROW_BLOCK - 1) / ROW_BLOCK, combine_task, &ca);
}

/* ---------------------------------------------------------------- backward */

typedef struct bwd_arg {
    dm_trainer *t;
    int l;
    const float *d;       /* [n, D] gradient w.r.t. the layer output */
    float *dx;            /* [n, D] gradient w.r.t. the layer input */
    int64_t n_tasks;
} bwd_arg;

/* dw[r, j] += <d[r], yexp[r, j]> for the routed slots. */
static void dw_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const layer_cache *lc = &t->lc[a->l];
    int D = c->dim, k = c->top_k, J = k + c->n_shared;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++)
        for (int j = 0; j < k; j++) {
            const float *y = lc->yexp + (r * J + j) * D, *g = a->d + r * D;
            double s = 0;
            for (int dd = 0; dd < D; dd++) s += (double)g[dd] * y[dd];
            t->dw[r * k + j] += (float)s;
        }
}

/* Router backward per row: dw -> dlogits (added to the balance gradients already there). */
static void router_bwd_row(const dm_config *c, const float *logits, const int32_t *e, const float *w,
                           const float *dw, float *dl)
{
    int E = c->n_experts, k = c->top_k;
    float s = c->route_scale;
    double wdw = 0;
    for (int j = 0; j < k; j++) wdw += (double)w[j] * dw[j];
    if (c->router == DM_ROUTER_SEED) {
        /* w_j = s p_j, p = softmax over the chosen logits: dl_j = w_j (dw_j - sum_i p_i dw_i) */
        for (int j = 0; j < k; j++) dl[e[j]] += (float)(w[j] * (dw[j] - wdw / s));
        return;
    }
    if (c->router == DM_ROUTER_SIGMOID) {
        /* w_j = s q_j / T, T = sum of chosen q: dq_j = (s dw_j - sum_i w_i dw_i) / T */
        double T = 0;
        float q[4096];
        for (int j = 0; j < k; j++) T += q[j] = 1.0f / (1.0f + expf(-logits[e[j]]));
        if (!(T > 0)) return;
        for (int j = 0; j < k; j++) {
            double dq = (s * dw[j] - wdw) / T;
            dl[e[j]] += (float)(dq * q[j] * (1 - q[j]));
        }
        return;
    }
    /* softmax over all E: P; w_j = s P_j (/ T if renormalised) */
    double mx = logits[0], Z = 0;
    for (int i = 1; i < E; i++) mx = fmax(mx, logits[i]);
    for (int i = 0; i < E; i++) Z += exp(logits[i] - mx);
    double dP[4096], P[4096], T = 0;
    for (int i = 0; i < E; i++) { P[i] = exp(logits[i] - mx) / Z; dP[i] = 0; }
    for (int j = 0; j < k; j++) T += P[e[j]];
    for (int j = 0; j < k; j++) dP[e[j]] = c->norm_topk ? (s * dw[j] - wdw) / T : s * dw[j];
    double pdp = 0;
    for (int i = 0; i < E; i++) pdp += P[i] * dP[i];
    for (int i = 0; i < E; i++) dl[i] += (float)(P[i] * (dP[i] - pdp));
}

static void router_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const layer_cache *lc = &t->lc[a->l];
    int E = c->n_experts, k = c->top_k;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++)
        router_bwd_row(c, lc->rb.logits + r * E, lc->rb.e + r * k, lc->rb.w + r * k, t->dw + r * k,
                       t->dlogits + r * E);
}

/* One expert's backward: all its rows, all its parameter gradients. */
static void expert_bwd_task(void *arg, int64_t ti, int tid)
{
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    const dm_kernels *K = m->kern;
    const layer_cache *lc = &t->lc[a->l];
    span sp = make_span(t, lc, (int)t->tasks[3 * ti], t->tasks[3 * ti + 1], t->tasks[3 * ti + 2]);
    int S = c->n_experts + c->n_shared;
    const dm_expert_w *x = &m->layers[a->l].experts[sp.expert];
    const expert_t *xt = &t->ext[a->l * S + sp.expert];
    const struct expert_grad *g = &t->lg[a->l].ex[sp.expert];
    int D = c->dim, H = x->hidden;
    int swiglu = c->expert == DM_EXPERT_SWIGLU;
    int64_t ldh = ldh_of(c), hm = hmax_of(c);
    const float *in = t->act + (int64_t)a->l * t->n * D;
    const float *X = sp.rows ? in : in + sp.row0 * D;
    const float *dY = sp.rows ? a->d : a->d + sp.row0 * D;  /* rows of d, scaled by w (routed) */
    const float *h1 = lc->h1 + sp.cache0 * ldh, *hn = lc->hn + sp.cache0 * hm;
    float *dh = t->dscratch + (int64_t)tid * t->cap * 2 * ldh;  /* [len, ldh] */
    int64_t M = sp.len;

    /* down projection: dW2 += (w d)^T hn, db2 += sum w d, dhn = (w d) W2 */
    dm_gemm_tn gw2 = {.M = M, .N = D, .K = H, .A = dY, .lda = D, .a_idx = sp.rows, .B = hn, .ldb = hm,
                      .scale = sp.w, .C = g->w2, .ldc = H, .n0 = 0, .n1 = D};
    K->gemm_tn(&gw2);
    if (g->b2) K->colsum(dY, D, sp.rows, sp.w, M, D, g->b2);
    dm_gemm dhn = {.M = M, .N = H, .K = D, .A = dY, .lda = D, .a_idx = sp.rows, .B = &xt->p2t,
                   .scale = sp.w, .C = dh, .ldc = ldh};
    dm_wmat_gemm(&dhn);
    dropout_rows(t, a->l, sp.cache0, M, H, dh, ldh);  /* the forward's mask, recomputed */

    int up_n = swiglu ? 2 * H : H;
    if (swiglu) {
        float *dgu = dh + t->cap * ldh;  /* [len, ldh]: [dg | du], kept apart from dhn */
        K->silu_mul_bwd(h1, dh, M, H, ldh, ldh, dgu);
        dh = dgu;
    } else {
        K->layernorm_bwd(h1, lc->mean + sp.cache0, lc->rstd + sp.cache0, dh, M, H, ldh, x->gamma, dh,
                         g->gamma, g->beta);
        for (int64_t i = 0; i < M; i++) {  /* ReLU: h1 holds the post-ReLU values */
            const float *hr = h1 + i * ldh;
            float *dr = dh + i * ldh;
            for (int j = 0; j < H; j++) dr[j] = hr[j] > 0 ? dr[j] : 0.0f;
        }
    }
    /* up projection: dW1 (and dW3) += dh^T x, db1 += sum dh, dx_slot = dh W1 */
    dm_gemm_tn gw1 = {.M = M, .N = H, .K = D, .A = dh, .lda = ldh, .B = X, .ldb = D, .b_idx = sp.rows,
                      .C = g->w1, .ldc = D, .n0 = 0, .n1 = H};
    K->gemm_tn(&gw1);
    if (swiglu) {
        gw1.A = dh + H;
        gw1.C = g->w3;
        K->gemm_tn(&gw1);
    } else {
        K->colsum(dh, ldh, NULL, NULL, M, H, g->b1);
    }
    dm_gemm dxg = {.M = M, .N = D, .K = up_n, .A = dh, .lda = ldh, .B = &xt->p1t};
    span_output(t, &sp, t->dxslot, &dxg);
    dm_wmat_gemm(&dxg);
}

/* Router parameter gradients and its input gradient (into dx). */
static void router_params(dm_trainer *t, int l, float *dx)
{
    const dm_config *c = &t->m->cfg;
    const dm_kernels *K = t->m->kern;
    int D = c->dim, E = c->n_experts;
    const float *in = t->act + (int64_t)l * t->n * D;
    dm_gemm_tn gw = {.M = t->n, .N = E, .K = D, .A = t->dlogits, .lda = E, .B = in, .ldb = D,
                     .C = t->lg[l].gate_w, .ldc = D, .n0 = 0, .n1 = E};
    K->gemm_tn(&gw);
    K->colsum(t->dlogits, E, NULL, NULL, t->n, E, t->lg[l].gate_b);
    dm_gemm gx = {.M = t->n, .N = D, .K = E, .A = t->dlogits, .lda = E, .B = &t->gate_pt[l], .C = dx, .ldc = D};
    dm_wmat_gemm(&gx);
}

/* dx[r] += sum_j dxslot[r, j] + resid[r] * d[r] */
static void gather_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const layer_cache *lc = &t->lc[a->l];
    int D = c->dim, k = c->top_k, J = k + c->n_shared;
    int seed = c->expert == DM_EXPERT_SEED;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++) {
        float *o = a->dx + r * D;
        const float *sl = t->dxslot + r * J * D, *g = a->d + r * D;
        float res = 0;
        if (seed) {  /* each seed expert adds x: its weight flows straight back */
            for (int j = 0; j < k; j++) res += lc->rb.w[r * k + j];
            res += (float)c->n_shared;
        }
        for (int j = 0; j < J; j++)
            for (int dd = 0; dd < D; dd++) o[dd] += sl[(int64_t)j * D + dd];
        if (seed)
            for (int dd = 0; dd < D; dd++) o[dd] += res * g[dd];
    }
}

void dm_tr_layer_backward(dm_trainer *t, int l, const float *d, float *dx)
{
    const dm_config *c = &t->m->cfg;
    layer_cache *lc = &t->lc[l];
    int64_t n = t->n;
    int64_t blocks = (n + ROW_BLOCK - 1) / ROW_BLOCK;
    bwd_arg a = {t, l, d, dx, 0};
    /* dw and dlogits already hold the balance-loss gradients (dm_tr_balance) */
    dm_pool_run(t->pool, blocks, dw_task, &a);
    dm_pool_run(t->pool, blocks, router_task, &a);
    a.n_tasks = make_tasks(t, lc, 0);
    dm_pool_run(t->pool, a.n_tasks, expert_bwd_task, &a);
    router_params(t, l, dx);  /* writes dx = dlogits Wg */
    dm_pool_run(t->pool, blocks, gather_task, &a);
    DM_UNUSED(c);
}
