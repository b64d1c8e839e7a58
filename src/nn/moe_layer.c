/* moe_layer.c - one MoE layer's forward, shared by inference and training
 * (moe_layer.h): route, dispatch, exchange, compute, exchange back, combine.
 *
 * Determinism: every output row is computed by one GEMM row whatever task or
 * thread runs it, and combine sums a row's slots in slot order, so results
 * depend neither on the thread count nor on where an expert runs. */
#include "base/base.h"
#include "nn/moe_layer.h"
#include "nn/router.h"
#include "obs/trace.h"

#include <stdint.h>
#include <string.h>

#define COMBINE_BLOCK 64

/* ---------------------------------------------------------------- quantized layer input */

/* The kernel that quantizes the layer input once for all routed experts' up
 * GEMMs: every routed expert's up weight has it, with quant, one group and
 * K = dim (NULL: none; each GEMM quantizes its own rows). */
static const dm_wkern *layer_quant(const dm_config *c, const dm_layer *ly)
{
    const dm_wmat *w0 = &ly->experts[0].p1;
    if (c->n_experts < 1 || !w0->kern || !w0->kern->quant || w0->K != c->dim) return NULL;
    for (int e = 1; e < c->n_experts; e++) {
        const dm_wmat *w = &ly->experts[e].p1;
        if (w->kern != w0->kern || w->group != w0->group || w->K != w0->K) return NULL;
    }
    return w0->kern;
}

/* Row stride of the quantized input, rounded to 64 bytes. */
static size_t qx_ld(const dm_config *c, const dm_layer *ly)
{
    return (layer_quant(c, ly)->quant_ld(c->dim, ly->experts[0].p1.group) + 63) / 64 * 64;
}

size_t dm_moe_qx_bytes(const dm_model *m, int64_t n)
{
    size_t best = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (layer_quant(&m->cfg, &m->layers[l])) {
            size_t b = (size_t)n * (qx_ld(&m->cfg, &m->layers[l]) + sizeof(float)) + 64;
            if (b > best) best = b;
        }
    return best;
}

/* ---------------------------------------------------------------- route + dispatch */

typedef struct route_arg {
    const dm_model *m;
    const dm_layer *ly;
    const float *x;
    int64_t n;
    dm_route_buf *rb;
    float *tmp;
    unsigned char *work;
    size_t work_stride;
    const dm_wkern *qk;   /* quantize x into qr too (NULL: no) */
    int group;
    dm_qrows qr;
} route_arg;

/* the profiler's ops of the forward pipeline (docs/profiling.md) */
static const dm_span_kind SK_LAYER = {"moe layer", "moe", "rows", "layer"};
static const dm_span_kind SK_ROUTER = {"router", "moe", "rows", "layer"};
static const dm_span_kind SK_ROUTER_GEMM = {"router gemm", "moe", "rows", NULL};
static const dm_span_kind SK_TOPK = {"top-k", "moe", "rows", NULL};
static const dm_span_kind SK_QUANT = {"quantize rows", "moe", "rows", NULL};
static const dm_span_kind SK_DISPATCH = {"dispatch", "moe", "rows", NULL};
static const dm_span_kind SK_XCHG = {"exchange", "moe", "rows", NULL};
static const dm_span_kind SK_EXPERTS = {"experts", "moe", "tasks", "layer"};
static const dm_span_kind SK_EXPERT = {"expert", "moe", "rows", "expert"};
static const dm_span_kind SK_UP = {"expert up gemm", "moe", "rows", "expert"};
static const dm_span_kind SK_MID = {"expert mid", "moe", "rows", "expert"};
static const dm_span_kind SK_DOWN = {"expert down gemm", "moe", "rows", "expert"};
static const dm_span_kind SK_COMBINE = {"combine", "moe", "rows", NULL};

static void route_task(void *arg, int64_t t, int tid)
{
    route_arg *a = arg;
    const dm_config *cf = &a->m->cfg;
    int64_t r0 = t * DM_ROUTE_BLOCK, rn = DM_MIN(a->n - r0, DM_ROUTE_BLOCK);
    int E = cf->n_experts, k = cf->top_k;
    float *lg = a->rb->logits + r0 * E;
    dm_gemm g = {
        .M = rn, .N = E, .K = cf->dim, .A = a->x + r0 * cf->dim, .lda = cf->dim,
        .B = &a->ly->gate_p, .bias = a->ly->gate_b, .C = lg, .ldc = E,
        .work = a->work ? a->work + (size_t)tid * a->work_stride : NULL,
    };
    uint64_t t0 = dm_span_begin();
    dm_wmat_gemm(&g);
    dm_span_end(&SK_ROUTER_GEMM, t0, rn, 0);
    t0 = dm_span_begin();
    float *tmp = a->tmp + (int64_t)tid * dm_route_scratch(cf);
    for (int64_t i = 0; i < rn; i++)
        dm_route_row(cf, a->ly->sel_bias, lg + i * E, tmp, a->rb->e + (r0 + i) * k, a->rb->w + (r0 + i) * k);
    dm_span_end(&SK_TOPK, t0, rn, 0);
    if (a->qk) {  /* the rows are in cache now: quantized once for every expert they go to */
        t0 = dm_span_begin();
        a->qk->quant(cf->dim, a->group, a->x + r0 * cf->dim, cf->dim, rn, (unsigned char *)a->qr.q + r0 * a->qr.ld,
                     a->qr.ld, (float *)a->qr.sa + r0);
        dm_span_end(&SK_QUANT, t0, rn, 0);
    }
}

/* dm_moe_route, and when qk is set the rows quantized into qr (by kernel qk, group). */
static void route_quant(const dm_model *m, const dm_layer *ly, dm_pool *pool, const float *x, int64_t n,
                        dm_route_buf *rb, float *tmp, unsigned char *work, size_t work_stride,
                        const dm_wkern *qk, int group, dm_qrows qr)
{
    route_arg a = {m, ly, x, n, rb, tmp, work, work_stride, qk, group, qr};
    dm_pool_run(pool, (n + DM_ROUTE_BLOCK - 1) / DM_ROUTE_BLOCK, route_task, &a);
}

void dm_moe_route(const dm_model *m, const dm_layer *ly, dm_pool *pool, const float *x, int64_t n,
                  dm_route_buf *rb, float *tmp, unsigned char *work, size_t work_stride)
{
    route_quant(m, ly, pool, x, n, rb, tmp, work, work_stride, NULL, 0, (dm_qrows){0});
}

void dm_moe_dispatch(const dm_config *cf, int64_t n, dm_route_buf *rb)
{
    int E = cf->n_experts, k = cf->top_k, J = k + cf->n_shared;
    int64_t nk = n * k;
    int32_t *off = rb->offsets;
    memset(off, 0, (size_t)(E + 1) * sizeof *off);
    for (int64_t a = 0; a < nk; a++) off[rb->e[a] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    for (int64_t a = 0; a < nk; a++) {  /* off[e] advances while filling ... */
        int32_t pos = off[rb->e[a]]++;
        int64_t r = a / k, j = a % k;
        rb->a_rows[pos] = (int32_t)r;
        rb->a_slot[pos] = (int32_t)(r * J + j);
        rb->a_w[pos] = rb->w[a];
    }
    for (int e = E; e > 0; e--) off[e] = off[e - 1];  /* ... so shift it back to the starts */
    off[0] = 0;
}

/* ---------------------------------------------------------------- tasks and spans */

int64_t dm_moe_max_tasks(const dm_config *c, int64_t n, int64_t n_comp)
{
    return n_comp / DM_MOE_BLOCK + c->n_experts + (int64_t)c->n_shared * (n / DM_MOE_BLOCK + 1) + 1;
}

int64_t dm_moe_make_tasks(const dm_config *c, const dm_moe_state *st, int64_t n, int block, dm_moe_task *tasks)
{
    int64_t nt = 0;
    for (int i = 0; i < c->n_experts + c->n_shared; i++) {
        int64_t count = i < c->n_experts ? st->c_off[i + 1] - st->c_off[i] : n;
        if (!block) {  /* one task per expert: it owns the expert's gradients */
            if (count) tasks[nt++] = (dm_moe_task){i, 0, (int32_t)count};
            continue;
        }
        for (int64_t s = 0; s < count; s += block)
            tasks[nt++] = (dm_moe_task){i, (int32_t)s, (int32_t)DM_MIN(block, count - s)};
    }
    return nt;
}

dm_moe_span dm_moe_span_of(const dm_config *c, const dm_moe_state *st, int64_t n, const float *x, dm_moe_task tk)
{
    int64_t D = c->dim, J = c->top_k + c->n_shared;
    if (tk.expert < c->n_experts) {
        int64_t p = st->c_off[tk.expert] + tk.start;
        return (dm_moe_span){tk.expert, p, tk.len, st->c_in, st->c_idx + p, 0, st->c_w ? st->c_w + p : NULL,
                             st->c_out, D, st->c_oidx + p};
    }
    int s = tk.expert - c->n_experts;
    return (dm_moe_span){tk.expert, st->n_comp + (int64_t)s * n + tk.start, tk.len, x + tk.start * D, NULL, tk.start,
                         NULL, st->ybuf + ((int64_t)tk.start * J + c->top_k + s) * D, J * D, NULL};
}

/* ---------------------------------------------------------------- dropout */

/* Counter-based dropout: element j of a row's hidden activations in layer l
 * is dropped when a hash of (the step's base, l, the row's key, j) falls below
 * p; the key is global row * J + slot. The backward pass recomputes the same
 * mask, nothing is stored, and the mask does not depend on threads, on the
 * split into micro-batches or ranks, or on where the expert runs. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The key of the span's row i: its global row * J + slot (exchanged rows: the key their rank sent). */
static uint64_t drop_key(const dm_config *c, const dm_moe_state *st, const dm_moe_span *sp, int64_t i)
{
    uint64_t J = (uint64_t)(c->top_k + c->n_shared), r0 = (uint64_t)st->drop_row0;
    if (!sp->idx) return (r0 + (uint64_t)(sp->row0 + i)) * J + (uint64_t)(c->top_k + sp->expert - c->n_experts);
    if (st->c_key) return st->c_key[sp->idx[i]];
    return r0 * J + (uint64_t)sp->oidx[i];   /* the row's slot r * J + j in ybuf */
}

void dm_moe_dropout(float p, uint64_t base0, int l, const dm_config *c, const dm_moe_state *st,
                    const dm_moe_span *sp, int64_t len, int h, float *x, int64_t ld)
{
    if (!(p > 0)) return;
    uint64_t cut = (uint64_t)((double)p * 18446744073709551616.0);
    uint64_t base = mix64(base0 + (uint64_t)l * 0x9e3779b97f4a7c15ull);
    float keep = 1.0f / (1.0f - p);
    /* (+77: any constant does; without one, tests/test_train.c's finite-difference check of the
     * 2-layer classifier lands on a kink (its error stays 0.37-0.39 for h from 2e-3 to 5e-4,
     * on 14 of its 232 samples), which this realization of the mask avoids) */
    for (int64_t i = 0; i < len; i++) {
        uint64_t rb = mix64(base ^ (drop_key(c, st, sp, i) + 77) * 0xd6e8feb86659fd93ull);
        float *r = x + i * ld;
        for (int j = 0; j < h; j++) r[j] = mix64(rb + (uint64_t)j) < cut ? 0.0f : r[j] * keep;
    }
}

/* The dropout keys of the sent assignments (global row * J + slot, 8 bytes as
 * two floats' bits: the exchange copies bytes) go with the rows to their experts. */
static dm_status xchg_keys(const dm_moe_exchange *x, const dm_config *c, dm_moe_state *st, dm_error *err)
{
    dm_moe_xbuf *xb = st->xb;
    const int32_t *pos = xb->send_pos.p;
    uint64_t J = (uint64_t)(c->top_k + c->n_shared);
    float *send = dm_moe_grow(&xb->send, (size_t)xb->n_sent * 2 * sizeof(float));
    uint64_t *recv = dm_moe_grow(&xb->recv_key, (size_t)xb->n_recv * sizeof(uint64_t));
    if (!send || !recv) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    for (int64_t q = 0; q < xb->n_sent; q++) {
        uint64_t k = (uint64_t)st->drop_row0 * J + (uint64_t)st->rb.a_slot[pos[q]];
        memcpy(send + 2 * q, &k, sizeof k);
    }
    dm_status s = x->rows(x->ctx, send, xb->send_n, (float *)(void *)recv, xb->recv_n, 2, err);
    st->c_key = s ? NULL : recv;
    return s;
}

/* ---------------------------------------------------------------- exchange */

void *dm_moe_grow(dm_growbuf *b, size_t bytes)
{
    if (!b->max) b->max = SIZE_MAX / 2;
    return dm_growbuf_reserve(b, bytes ? bytes : 1) ? NULL : b->p;
}

void dm_moe_xbuf_free(dm_moe_xbuf *xb)
{
    if (!xb) return;
    dm_growbuf *all[] = {&xb->send_pos, &xb->cnt, &xb->send, &xb->recv_x, &xb->recv_d, &xb->recv_w,
                         &xb->out, &xb->back, &xb->c_idx, &xb->c_w, &xb->c_off, &xb->tasks, &xb->cache, &xb->recv_key};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        dm_free(all[i]->p);
        *all[i] = (dm_growbuf){0};
    }
}

/* Counts out, counts in, then the compute list over the received rows. */
static dm_status xchg_plan(const dm_moe_exchange *x, const dm_config *c, dm_moe_state *st, dm_error *err)
{
    dm_moe_xbuf *xb = st->xb;
    int R = x->n_ranks, E = c->n_experts;
    const int32_t *off = st->rb.offsets;
    if (R < 1 || x->rank < 0 || x->rank >= R || !x->owner || !x->counts || !x->rows)
        return dm_fail(err, DM_ERR_ARG, "exchange: rank %d of %d ranks, or a missing owner table or call", x->rank, R);
    for (int e = 0; e < E; e++)
        if (x->owner[e] < 0 || x->owner[e] >= R)
            return dm_fail(err, DM_ERR_ARG, "exchange: expert %d is owned by rank %d, outside 0..%d", e, x->owner[e],
                           R - 1);
    int64_t *cnt = dm_moe_grow(&xb->cnt, ((size_t)2 * R * E + 2 * R) * sizeof(int64_t));
    int32_t *pos = dm_moe_grow(&xb->send_pos, (size_t)(off[E] + 1) * sizeof(int32_t));
    if (!cnt || !pos) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    int64_t *cs = cnt, *cr = cnt + (int64_t)R * E, *sn = cnt + 2 * (int64_t)R * E, *rn = sn + R;
    int64_t q = 0;
    for (int o = 0; o < R; o++) {
        sn[o] = 0;
        for (int e = 0; e < E; e++) {
            int64_t k = x->owner[e] == o ? off[e + 1] - off[e] : 0;
            cs[(int64_t)o * E + e] = k;
            sn[o] += k;
            for (int64_t i = 0; i < k; i++) pos[q++] = off[e] + (int32_t)i;
        }
    }
    xb->n_sent = q;
    dm_status s = x->counts(x->ctx, cs, cr, E, err);
    if (s) return s;
    int64_t total = 0;
    for (int r = 0; r < R; r++) {
        rn[r] = 0;
        for (int e = 0; e < E; e++) {
            if (cr[(int64_t)r * E + e] < 0 || (cr[(int64_t)r * E + e] && x->owner[e] != x->rank))
                return dm_fail(err, DM_ERR_ARG, "exchange: rank %d sent rows for expert %d, which rank %d does not own",
                               r, e, x->rank);
            rn[r] += cr[(int64_t)r * E + e];
        }
        total += rn[r];
    }
    if (total > INT32_MAX) return dm_fail(err, DM_ERR_ARG, "exchange: %lld rows received", (long long)total);
    xb->n_recv = total;
    xb->send_n = sn;
    xb->recv_n = rn;
    int32_t *coff = dm_moe_grow(&xb->c_off, (size_t)(E + 1) * sizeof(int32_t));
    int32_t *cidx = dm_moe_grow(&xb->c_idx, (size_t)total * sizeof(int32_t));
    if (!coff || !cidx) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    /* compute list: local expert e's rows from rank 0, then rank 1, ... (the
     * order one process would see them in: rank-major, as the batch is split) */
    coff[0] = 0;
    for (int e = 0; e < E; e++) {
        int32_t p = coff[e];
        int64_t base = 0;
        for (int r = 0; r < R; r++) {
            int64_t before = 0;  /* rank r's rows for experts below e */
            for (int e2 = 0; e2 < e; e2++) before += cr[(int64_t)r * E + e2];
            for (int64_t i = 0; i < cr[(int64_t)r * E + e]; i++) cidx[p++] = (int32_t)(base + before + i);
            base += rn[r];
        }
        coff[e + 1] = p;
    }
    st->c_off = coff;
    st->n_comp = total;
    st->c_idx = cidx;
    st->c_oidx = cidx;
    return DM_OK;
}

dm_status dm_moe_xchg_send(const dm_moe_exchange *x, dm_moe_state *st, const float *src, int width,
                           dm_growbuf *dst, dm_error *err)
{
    dm_moe_xbuf *xb = st->xb;
    const int32_t *pos = xb->send_pos.p;
    int w = src ? width : 1;
    float *send = dm_moe_grow(&xb->send, (size_t)xb->n_sent * w * sizeof(float));
    float *recv = dm_moe_grow(dst, (size_t)xb->n_recv * w * sizeof(float));
    if (!send || !recv) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    for (int64_t q = 0; q < xb->n_sent; q++) {
        int32_t p = pos[q];
        if (src) memcpy(send + q * w, src + (int64_t)st->rb.a_rows[p] * w, (size_t)w * sizeof(float));
        else send[q] = st->rb.a_w[p];
    }
    return x->rows(x->ctx, send, xb->send_n, recv, xb->recv_n, w, err);
}

dm_status dm_moe_xchg_back(const dm_moe_exchange *x, dm_moe_state *st, const float *out, int width, float *dst,
                           dm_error *err)
{
    dm_moe_xbuf *xb = st->xb;
    float *back = dm_moe_grow(&xb->back, (size_t)xb->n_sent * width * sizeof(float));
    if (!back) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    dm_status s = x->rows(x->ctx, out, xb->recv_n, back, xb->send_n, width, err);
    if (s) return s;
    const int32_t *pos = xb->send_pos.p;
    for (int64_t q = 0; q < xb->n_sent; q++)
        memcpy(dst + (int64_t)st->rb.a_slot[pos[q]] * width, back + q * width, (size_t)width * sizeof(float));
    return DM_OK;
}

/* ---------------------------------------------------------------- compute */

typedef struct fwd_arg {
    dm_moe_pass *p;
    const dm_layer *ly;
    const dm_moe_task *tasks;
    const dm_qrows *aq;   /* the layer input quantized once (NULL: none) */
} fwd_arg;

static void fwd_task(void *arg, int64_t t, int tid)
{
    fwd_arg *a = arg;
    dm_moe_pass *p = a->p;
    const dm_model *m = p->m;
    const dm_config *c = &m->cfg;
    const dm_expert_ops *ops = dm_expert_ops_of(c);
    dm_moe_state *st = p->st;
    dm_moe_span sp = dm_moe_span_of(c, st, p->n, p->x, a->tasks[t]);
    const dm_expert_w *x = &a->ly->experts[sp.expert];
    int D = c->dim, H = x->hidden;
    int64_t ldh = dm_moe_ldh(c), hm = dm_moe_hmax(c);
    float *h1, *hn, *mean = NULL, *rstd = NULL;
    int64_t ldn;
    if (p->train) {  /* training: the cache rows keep what the backward needs */
        h1 = st->h1 + sp.cache0 * ldh;
        hn = st->hn + sp.cache0 * hm;
        ldn = hm;
        mean = st->mean + sp.cache0;
        rstd = st->rstd + sp.cache0;
    } else {       /* inference: in place in this thread's scratch */
        h1 = hn = p->scratch + (int64_t)tid * DM_MOE_BLOCK * ldh;
        ldn = ldh;
    }
    dm_gemm up = {
        .M = sp.len, .N = H * ops->up_mult, .K = D, .A = sp.in, .lda = D, .a_idx = sp.idx,
        .B = p->fw ? &p->fw[2 * sp.expert] : &x->p1,
        .bias = x->b1, .act = ops->up_act, .C = h1, .ldc = ldh,
        .work = p->work ? p->work + (size_t)tid * p->work_stride : NULL,
        .aq = sp.expert < c->n_experts ? a->aq : NULL,  /* routed: rows of the layer input */
    };
    uint64_t t0 = dm_span_begin(), t1 = t0;
    dm_wmat_gemm(&up);
    dm_span_end(&SK_UP, t1, sp.len, sp.expert);
    t1 = dm_span_begin();
    ops->mid(m->kern, x, c->ln_eps, sp.len, H, h1, ldh, hn, ldn, mean, rstd);
    if (p->train) dm_moe_dropout(p->dropout, p->drop_base, p->l, c, st, &sp, sp.len, H, hn, hm);
    dm_span_end(&SK_MID, t1, sp.len, sp.expert);
    dm_gemm down = {
        .M = sp.len, .N = D, .K = H, .A = hn, .lda = ldn, .B = p->fw ? &p->fw[2 * sp.expert + 1] : &x->p2,
        .bias = x->b2,
        .R = ops->residual ? sp.in : NULL, .ldr = D, .r_idx = sp.idx,
        .C = sp.out, .ldc = sp.ldo, .c_idx = sp.oidx, .work = up.work,
    };
    t1 = dm_span_begin();
    dm_wmat_gemm(&down);
    dm_span_end(&SK_DOWN, t1, sp.len, sp.expert);
    dm_span_end(&SK_EXPERT, t0, sp.len, sp.expert);
}

typedef struct comb_arg { dm_moe_pass *p; } comb_arg;

/* Rows [t COMBINE_BLOCK, ...) of y from their slots (the kernel's fixed slot order). */
static void combine_task(void *arg, int64_t t, int tid)
{
    DM_UNUSED(tid);
    dm_moe_pass *p = ((comb_arg *)arg)->p;
    const dm_config *c = &p->m->cfg;
    int D = c->dim, k = c->top_k, J = k + c->n_shared;
    int64_t r0 = t * COMBINE_BLOCK, r1 = DM_MIN(p->n, r0 + COMBINE_BLOCK);
    p->m->kern->combine(p->st->ybuf + r0 * J * D, p->st->rb.w + r0 * k, r1 - r0, J, k, D, p->y + r0 * D);
}

/* ---------------------------------------------------------------- forward */

static dm_status layer_forward(dm_moe_pass *p, dm_error *err);

dm_status dm_moe_layer_forward(dm_moe_pass *p, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    dm_status s = layer_forward(p, err);
    dm_span_end(&SK_LAYER, t0, p->n, p->l);
    return s;
}

static dm_status layer_forward(dm_moe_pass *p, dm_error *err)
{
    const dm_model *m = p->m;
    const dm_config *c = &m->cfg;
    const dm_layer *ly = &m->layers[p->l];
    dm_moe_state *st = p->st;
    dm_route_buf *rb = &st->rb;
    int k = c->top_k, E = c->n_experts;
    st->drop_row0 = p->drop_row0;
    st->c_key = NULL;
    const dm_wkern *qk = p->qx && !p->xchg && !p->train ? layer_quant(c, ly) : NULL;
    dm_qrows qr = {0};
    if (qk) {
        qr.ld = qx_ld(c, ly);
        qr.q = p->qx;
        qr.sa = (const float *)(const void *)(p->qx + (size_t)p->n * qr.ld);
    }
    uint64_t t0 = dm_span_begin();
    route_quant(m, ly, p->pool, p->x, p->n, rb, p->route_tmp, p->work, p->work_stride, qk,
                qk ? ly->experts[0].p1.group : 0, qr);
    if (p->force_expert >= 0)
        /* the oracle's probe: slot 0 = the forced expert with weight 1; the other
         * slots take other experts with weight 0 (computed, then ignored) */
        for (int64_t r = 0; r < p->n; r++)
            for (int j = 0; j < k; j++) {
                rb->e[r * k + j] = (p->force_expert + j) % E;
                rb->w[r * k + j] = j == 0 ? 1.0f : 0.0f;
            }
    dm_span_end(&SK_ROUTER, t0, p->n, p->l);
    t0 = dm_span_begin();
    dm_moe_dispatch(c, p->n, rb);
    dm_span_end(&SK_DISPATCH, t0, p->n, 0);
    const dm_moe_exchange *x = p->xchg;
    if (!x) {  /* every expert here: compute straight from x into the slots */
        st->c_off = rb->offsets;
        st->n_comp = p->n * k;
        st->c_in = p->x;
        st->c_idx = rb->a_rows;
        st->c_w = rb->a_w;
        st->c_out = st->ybuf;
        st->c_oidx = rb->a_slot;
    } else {
        t0 = dm_span_begin();
        dm_status s = xchg_plan(x, c, st, err);
        if (!s) s = dm_moe_xchg_send(x, st, p->x, c->dim, &st->xb->recv_x, err);
        if (!s && p->train && p->dropout > 0) s = xchg_keys(x, c, st, err);   /* every rank has the same p */
        if (!s && !dm_moe_grow(&st->xb->out, (size_t)st->xb->n_recv * c->dim * sizeof(float)))
            s = dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
        dm_span_end(&SK_XCHG, t0, p->n, 0);
        if (s) return s;
        st->c_in = st->xb->recv_x.p;
        st->c_w = NULL;
        st->c_out = st->xb->out.p;
    }
    st->tasks = p->tasks;
    if (x) {  /* the received rows decide the sizes: tasks, and the cache when training */
        dm_moe_xbuf *xb = st->xb;
        int64_t rows = st->n_comp + (int64_t)c->n_shared * p->n, ldh = dm_moe_ldh(c), hm = dm_moe_hmax(c);
        st->tasks = dm_moe_grow(&xb->tasks, (size_t)dm_moe_max_tasks(c, p->n, st->n_comp) * sizeof(dm_moe_task));
        float *cache = p->train ? dm_moe_grow(&xb->cache, (size_t)rows * (ldh + hm + 2) * sizeof(float)) : NULL;
        if (!st->tasks || (p->train && !cache)) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
        if (cache) {
            st->h1 = cache;
            st->hn = cache + rows * ldh;
            st->mean = st->hn + rows * hm;
            st->rstd = st->mean + rows;
        }
    }
    fwd_arg a = {p, ly, st->tasks, qk ? &qr : NULL};
    int64_t nt = dm_moe_make_tasks(c, st, p->n, DM_MOE_BLOCK, st->tasks);
    t0 = dm_span_begin();
    dm_pool_run(p->pool, nt, fwd_task, &a);
    dm_span_end(&SK_EXPERTS, t0, nt, p->l);
    if (x) {
        t0 = dm_span_begin();
        dm_status s = dm_moe_xchg_back(x, st, st->c_out, c->dim, st->ybuf, err);
        dm_span_end(&SK_XCHG, t0, p->n, 0);
        if (s) return s;
    }
    comb_arg ca = {p};
    t0 = dm_span_begin();
    dm_pool_run(p->pool, (p->n + COMBINE_BLOCK - 1) / COMBINE_BLOCK, combine_task, &ca);
    dm_span_end(&SK_COMBINE, t0, p->n, 0);
    return DM_OK;
}
