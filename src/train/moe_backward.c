/* moe_backward.c - one MoE layer in training: the forward is the shared
 * pipeline (moe_layer.c) with the cache on; the backward is its mirror:
 * routing-weight and router gradients here, the output gradient of each
 * compute row out through the exchange to the expert's owner, the expert
 * backward there (every parameter gradient of an expert summed by the one task
 * that owns it, rows in compute-list order), and the input gradients back
 * into their (row, slot) buffers, summed in a fixed order.
 *
 * Determinism: results do not depend on the thread count, and through a
 * loopback exchange they equal the one-process run bit for bit
 * (tests/test_exchange.c). */
#include "train/trainer.h"
#include "nn/router.h"
#include "obs/trace.h"

#include <math.h>
#include <string.h>

#define ROW_BLOCK 64   /* rows per task of the per-row passes */

/* the profiler's ops of the backward (docs/profiling.md) */
static const dm_span_kind SK_LAYER_BWD = {"moe layer backward", "train", "rows", "layer"};
static const dm_span_kind SK_DW = {"routing weight grad", "train", "rows", NULL};
static const dm_span_kind SK_ROUTER_BWD = {"router backward", "train", "rows", NULL};
static const dm_span_kind SK_XCHG = {"exchange", "moe", "rows", NULL};
static const dm_span_kind SK_EXPERTS_BWD = {"experts backward", "train", "tasks", "layer"};
static const dm_span_kind SK_EXPERT_BWD = {"expert backward", "train", "rows", "expert"};
static const dm_span_kind SK_DOWN_DW = {"expert down dW gemm", "train", "rows", "expert"};
static const dm_span_kind SK_DOWN_DX = {"expert down dX gemm", "train", "rows", "expert"};
static const dm_span_kind SK_MID_BWD = {"expert mid backward", "train", "rows", "expert"};
static const dm_span_kind SK_UP_DW = {"expert up dW gemm", "train", "rows", "expert"};
static const dm_span_kind SK_UP_DX = {"expert up dX gemm", "train", "rows", "expert"};
static const dm_span_kind SK_GATHER = {"router grad + input grad", "train", "rows", NULL};

/* ---------------------------------------------------------------- forward */

dm_status dm_tr_layer_forward(dm_trainer *t, int l, dm_error *err)
{
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    dm_moe_state *st = &t->lc[l];
    st->xb = t->xchg ? &t->xb[l] : NULL;
    dm_moe_pass p = {
        .m = m, .l = l, .pool = t->pool, .n = t->n, .x = t->act + (int64_t)l * t->n * c->dim,
        .y = t->act + (int64_t)(l + 1) * t->n * c->dim, .st = st, .xchg = t->xchg,
        .route_tmp = t->route_tmp, .tasks = t->tasks, .train = 1, .dropout = t->tc.dropout,
        .drop_base = t->drop_base, .drop_row0 = t->drop_row0,
        .force_expert = -1,
        .fw = t->bf16 ? t->fw + (int64_t)l * (c->n_experts + c->n_shared) * 2 : NULL,
        .work = t->bwork, .work_stride = t->bwork_stride,
    };
    dm_status s = dm_moe_layer_forward(&p, err);
    if (s) return s;
    /* expert load of this micro-batch (metrics) and of the step (aux-free):
     * this rank's rows, wherever their experts ran */
    int E = c->n_experts;
    int64_t total = t->n * c->top_k;
    for (int e = 0; e < E; e++) {
        int64_t cnt = st->rb.offsets[e + 1] - st->rb.offsets[e];
        t->counts[(int64_t)l * E + e] += cnt;
        t->last_load[(int64_t)l * E + e] = total ? (double)cnt / (double)total : 0;
    }
    return DM_OK;
}

/* ---------------------------------------------------------------- backward */

typedef struct bwd_arg {
    dm_trainer *t;
    int l;
    const float *d;       /* [n, D] gradient w.r.t. the layer output */
    float *dx;            /* [n, D] gradient w.r.t. the layer input */
    const float *dy;      /* routed compute rows' output gradients: d, or the received rows */
    float *dout;          /* routed compute rows' input gradients: dxslot (slots), or the rows that go back */
    const dm_moe_task *tasks;
} bwd_arg;

/* dw[r, j] += <d[r], ybuf[r, j]> for the routed slots. */
static void dw_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const dm_moe_state *lc = &t->lc[a->l];
    int D = c->dim, k = c->top_k, J = k + c->n_shared;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++)
        for (int j = 0; j < k; j++) {
            const float *y = lc->ybuf + (r * J + j) * D, *g = a->d + r * D;
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;  /* four chains: fixed order */
            int dd = 0;
            for (; dd + 4 <= D; dd += 4) {
                s0 += (double)g[dd] * y[dd];
                s1 += (double)g[dd + 1] * y[dd + 1];
                s2 += (double)g[dd + 2] * y[dd + 2];
                s3 += (double)g[dd + 3] * y[dd + 3];
            }
            for (; dd < D; dd++) s0 += (double)g[dd] * y[dd];
            t->dw[r * k + j] += (float)((s0 + s1) + (s2 + s3));
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
    const dm_moe_state *lc = &t->lc[a->l];
    int E = c->n_experts, k = c->top_k;
    int64_t r0 = ti * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    for (int64_t r = r0; r < r1; r++)
        router_bwd_row(c, lc->rb.logits + r * E, lc->rb.e + r * k, lc->rb.w + r * k, t->dw + r * k,
                       t->dlogits + r * E);
}

/* One expert's backward: all its compute rows, all its parameter gradients. */
static void expert_bwd_task(void *arg, int64_t ti, int tid)
{
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    const dm_kernels *K = m->kern;
    const dm_expert_ops *ops = dm_expert_ops_of(c);
    const dm_moe_state *lc = &t->lc[a->l];
    const float *in = t->act + (int64_t)a->l * t->n * c->dim;
    dm_moe_span sp = dm_moe_span_of(c, lc, t->n, in, a->tasks[ti]);
    int S = c->n_experts + c->n_shared;
    const dm_expert_w *x = &m->layers[a->l].experts[sp.expert];
    const expert_t *xt = &t->ext[a->l * S + sp.expert];
    const struct expert_grad *g = &t->lg[a->l].ex[sp.expert];
    int D = c->dim, H = x->hidden, J = c->top_k + c->n_shared;
    int64_t ldh = dm_moe_ldh(c), hm = dm_moe_hmax(c);
    int routed = sp.idx != NULL;
    const float *dY = routed ? a->dy : a->d + sp.row0 * D;  /* rows of the output gradient, times w (routed) */
    const float *h1 = lc->h1 + sp.cache0 * ldh, *hn = lc->hn + sp.cache0 * hm;
    float *dh = t->dscratch + (int64_t)tid * t->ecap * 2 * ldh;  /* [len, ldh], then [len, ldh] of scratch */
    int64_t M = sp.len;
    /* --precision bf16: the GEMMs on bf16 operands (xt's packs are bf16 then).
     * Both GEMMs of the output gradient round the same operand, bf16(w dY)
     * (gemm_tn_bf16's scale, the bf16 GEMM's a_scale: w dY in fp32 first),
     * as PyTorch rounds the gradient of a bf16 matmul. */
    void (*tn)(const dm_gemm_tn *) = t->bf16 ? K->gemm_tn_bf16 : K->gemm_tn;
    void *work = t->bf16 ? dm_tr_bwork_gemm(t, tid) : NULL;

    /* down projection: dW2 += (w d)^T hn, db2 += sum w d, dhn = (w d) W2 */
    uint64_t t0 = dm_span_begin(), t1 = t0;
    dm_gemm_tn gw2 = {.M = M, .N = D, .K = H, .A = dY, .lda = D, .a_idx = sp.idx, .B = hn, .ldb = hm,
                      .scale = sp.w, .C = g->w2, .ldc = H, .n0 = 0, .n1 = D, .work = work};
    tn(&gw2);
    if (g->b2) K->colsum(dY, D, sp.idx, sp.w, M, D, g->b2);
    dm_span_end(&SK_DOWN_DW, t1, M, sp.expert);
    t1 = dm_span_begin();
    dm_gemm dhn = {.M = M, .N = H, .K = D, .A = dY, .lda = D, .a_idx = sp.idx, .B = &xt->p2t,
                   .scale = t->bf16 ? NULL : sp.w, .a_scale = t->bf16 ? sp.w : NULL, .C = dh, .ldc = ldh,
                   .work = work};
    dm_wmat_gemm(&dhn);
    dm_span_end(&SK_DOWN_DX, t1, M, sp.expert);
    t1 = dm_span_begin();
    dm_moe_dropout(t->tc.dropout, t->drop_base, a->l, c, lc, &sp, M, H, dh, ldh);  /* the forward's mask */
    float *du = ops->mid_bwd(K, x, M, H, h1, ldh, lc->mean + sp.cache0, lc->rstd + sp.cache0, dh,
                             dh + t->ecap * ldh, g->gamma, g->beta);
    dm_span_end(&SK_MID_BWD, t1, M, sp.expert);
    t1 = dm_span_begin();

    /* up projection: dW1 (and dW3) += du^T x, db1 += sum du, dx_slot = du W1 */
    dm_gemm_tn gw1 = {.M = M, .N = H, .K = D, .A = du, .lda = ldh, .B = sp.in, .ldb = D, .b_idx = sp.idx,
                      .C = g->w1, .ldc = D, .n0 = 0, .n1 = H, .work = work};
    tn(&gw1);
    if (g->w3) {
        gw1.A = du + H;
        gw1.C = g->w3;
        tn(&gw1);
    }
    if (g->b1) K->colsum(du, ldh, NULL, NULL, M, H, g->b1);
    dm_span_end(&SK_UP_DW, t1, M, sp.expert);
    t1 = dm_span_begin();
    dm_gemm dxg = {.M = M, .N = D, .K = H * ops->up_mult, .A = du, .lda = ldh, .B = &xt->p1t, .work = work};
    if (routed) {
        dxg.C = a->dout;
        dxg.ldc = D;
        dxg.c_idx = sp.oidx;
    } else {
        dxg.C = t->dxslot + (sp.row0 * J + c->top_k + (sp.expert - c->n_experts)) * D;
        dxg.ldc = (int64_t)J * D;
    }
    dm_wmat_gemm(&dxg);
    dm_span_end(&SK_UP_DX, t1, M, sp.expert);
    dm_span_end(&SK_EXPERT_BWD, t0, M, sp.expert);
}

/* Column slices of the router's weight gradient: each output sums over the
 * rows in order whatever its slice, so the split never changes a bit. */
#define RP_SLICES 4

/* Task ti < RP_SLICES: columns [k0, k1) of dWg += dlogits^T in (task 0 also
 * dbg += colsum dlogits). Every later task: a block of rows of the layer's
 * input gradient, dx = dlogits Wg (the router's part) + the slots' input
 * gradients + the residual's, added in that order (one pass over each row). */
static void router_gather_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    bwd_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    const dm_kernels *K = t->m->kern;
    int D = c->dim, E = c->n_experts, l = a->l;
    if (ti < RP_SLICES) {
        int per = (D + RP_SLICES * 32 - 1) / (RP_SLICES * 32) * 32;  /* whole 32-column strips */
        int k0 = (int)ti * per, k1 = DM_MIN(D, k0 + per);
        if (k0 >= k1) return;
        const float *in = t->act + (int64_t)l * t->n * D;
        dm_gemm_tn gw = {.M = t->n, .N = E, .K = k1 - k0, .A = t->dlogits, .lda = E, .B = in + k0, .ldb = D,
                         .C = t->lg[l].gate_w + k0, .ldc = D, .n0 = 0, .n1 = E};
        K->gemm_tn(&gw);
        if (ti == 0) K->colsum(t->dlogits, E, NULL, NULL, t->n, E, t->lg[l].gate_b);
        return;
    }
    const dm_moe_state *lc = &t->lc[l];
    int k = c->top_k, J = k + c->n_shared;
    int resid = dm_expert_ops_of(c)->residual;
    int64_t r0 = (ti - RP_SLICES) * ROW_BLOCK, r1 = DM_MIN(t->n, r0 + ROW_BLOCK);
    dm_gemm gx = {.M = r1 - r0, .N = D, .K = E, .A = t->dlogits + r0 * E, .lda = E, .B = &t->gate_pt[l],
                  .C = a->dx + r0 * D, .ldc = D};
    dm_wmat_gemm(&gx);
    for (int64_t r = r0; r < r1; r++) {
        float *o = a->dx + r * D;
        const float *sl = t->dxslot + r * J * D, *g = a->d + r * D;
        float res = 0;
        if (resid) {  /* each residual expert adds x: its weight flows straight back */
            for (int j = 0; j < k; j++) res += lc->rb.w[r * k + j];
            res += (float)c->n_shared;
        }
        K->add_rows(o, sl, J, resid ? g : NULL, res, D);
    }
}

static dm_status layer_backward(dm_trainer *t, int l, const float *d, float *dx, dm_error *err);

dm_status dm_tr_layer_backward(dm_trainer *t, int l, const float *d, float *dx, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    dm_status s = layer_backward(t, l, d, dx, err);
    dm_span_end(&SK_LAYER_BWD, t0, t->n, l);
    return s;
}

static dm_status layer_backward(dm_trainer *t, int l, const float *d, float *dx, dm_error *err)
{
    const dm_config *c = &t->m->cfg;
    dm_moe_state *lc = &t->lc[l];
    const dm_moe_exchange *x = t->xchg;
    int64_t n = t->n;
    int64_t blocks = (n + ROW_BLOCK - 1) / ROW_BLOCK;
    bwd_arg a = {t, l, d, dx, d, t->dxslot, lc->tasks};
    /* dw and dlogits already hold the balance-loss gradients (dm_tr_balance) */
    uint64_t t0 = dm_span_begin();
    dm_pool_run(t->pool, blocks, dw_task, &a);
    dm_span_end(&SK_DW, t0, n, 0);
    t0 = dm_span_begin();
    dm_pool_run(t->pool, blocks, router_task, &a);
    dm_span_end(&SK_ROUTER_BWD, t0, n, 0);
    if (x) {  /* output gradients and weights to the experts' owners */
        t0 = dm_span_begin();
        dm_moe_xbuf *xb = lc->xb;
        dm_status s = dm_moe_xchg_send(x, lc, d, c->dim, &xb->recv_d, err);
        if (!s) s = dm_moe_xchg_send(x, lc, NULL, 1, &xb->recv_w, err);
        if (!s && (!dm_moe_grow(&xb->c_w, (size_t)xb->n_recv * sizeof(float)) ||
                   !dm_moe_grow(&xb->out, (size_t)xb->n_recv * c->dim * sizeof(float))))
            s = dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
        if (s) return s;
        float *cw = xb->c_w.p;
        const float *rw = xb->recv_w.p;
        for (int64_t j = 0; j < lc->n_comp; j++) cw[j] = rw[lc->c_idx[j]];
        lc->c_w = cw;
        a.dy = xb->recv_d.p;
        a.dout = xb->out.p;
        int64_t most = n;  /* an expert's rows are one task's scratch */
        for (int e = 0; e < c->n_experts; e++) most = DM_MAX(most, (int64_t)(lc->c_off[e + 1] - lc->c_off[e]));
        if (most > t->ecap) {
            float *ds = dm_alloc_array2((size_t)t->n_threads * most, (size_t)2 * dm_moe_ldh(c), sizeof(float));
            if (!ds) return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory for %lld exchanged rows", (long long)most);
            size_t bws = dm_tr_bwork_stride(t, most);
            unsigned char *bw = bws ? dm_alloc((size_t)t->n_threads * bws) : NULL;
            if (bws && !bw) {
                dm_free(ds);
                return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory for %lld exchanged rows", (long long)most);
            }
            dm_free(t->dscratch);
            t->dscratch = ds;
            if (bws) {
                dm_free(t->bwork);
                t->bwork = bw;
                t->bwork_stride = bws;
            }
            t->ecap = most;
        }
        dm_span_end(&SK_XCHG, t0, n, 0);
    }
    int64_t nt = dm_moe_make_tasks(c, lc, n, 0, lc->tasks);
    t0 = dm_span_begin();
    dm_pool_run(t->pool, nt, expert_bwd_task, &a);
    dm_span_end(&SK_EXPERTS_BWD, t0, nt, l);
    if (x) {  /* input gradients back to their rows' slots */
        t0 = dm_span_begin();
        dm_status s = dm_moe_xchg_back(x, lc, lc->xb->out.p, c->dim, t->dxslot, err);
        dm_span_end(&SK_XCHG, t0, n, 0);
        if (s) return s;
    }
    t0 = dm_span_begin();
    dm_pool_run(t->pool, RP_SLICES + blocks, router_gather_task, &a);
    dm_span_end(&SK_GATHER, t0, n, 0);
    return DM_OK;
}
