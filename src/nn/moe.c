/* moe.c - the inference context and the sparse forward of a whole model:
 * embed, the MoE layers (moe_layer.c: route, dispatch, compute, combine, the
 * same pipeline training runs), final norm and head. Only the chosen experts
 * are computed. */
#include "base/base.h"
#include "nn/moe_layer.h"
#include "nn/router.h"
#include "obs/trace.h"

#include <stdlib.h>
#include <string.h>

#ifndef DM_INLINE_FLOPS
#define DM_INLINE_FLOPS 6e6
#endif

struct dm_ctx {
    const dm_model *m;
    dm_pool *pool;
    int n_threads;
    int64_t cap;          /* rows the buffers hold */
    dm_moe_state st;      /* the running layer's routing, dispatch lists and slot outputs */
    int32_t *route_e;     /* [L, cap, k] every layer's choices */
    float *route_w;       /* [L, cap, k] */
    float *act[2];        /* [cap, D] ping-pong layer activations */
    dm_moe_task *tasks;   /* [dm_moe_max_tasks] */
    float *scratch;       /* [n_threads, DM_MOE_BLOCK, ldh] */
    float *route_tmp;     /* [n_threads, dm_route_scratch] */
    unsigned char *work;  /* [n_threads, work_stride] typed GEMMs' scratch (NULL: none needed) */
    size_t work_stride;
    const dm_moe_exchange *xchg;  /* expert parallel: where the other experts are (NULL: all here) */
    void *owned;          /* freed with the context (dm_ctx_own: the exchange's storage) */
    dm_moe_xbuf xb;
    /* the running batch */
    dm_pool *run_pool;    /* the pool for the running batch: NULL when waking threads costs more than it saves */
    int force_layer;      /* >= 0: route every row of this layer to force_expert alone */
    int force_expert;
    int64_t n;
    unsigned char *qx;    /* dm_moe_qx_bytes(m, cap): a layer's input quantized once (NULL: not used) */
    float *pre;           /* [pre_cap, in] the running batch after the model's preprocessing */
    int64_t pre_cap;
};

dm_status dm_ctx_create(const dm_model *m, dm_pool *pool, dm_ctx **out, dm_error *err)
{
    *out = NULL;
    dm_ctx *c = calloc(1, sizeof *c);
    if (!c) return dm_fail(err, DM_ERR_NOMEM, "context: out of memory");
    c->m = m;
    c->pool = pool;
    c->n_threads = dm_pool_size(pool);
    c->force_layer = -1;
    const dm_config *cf = &m->cfg;
    c->scratch = dm_alloc_array2((size_t)c->n_threads * DM_MOE_BLOCK, (size_t)dm_moe_ldh(cf), sizeof(float));
    c->route_tmp = dm_alloc((size_t)c->n_threads * dm_route_scratch(cf) * sizeof(float));
    c->st.rb.offsets = dm_alloc((size_t)(cf->n_experts + 1) * sizeof(int32_t));
    c->work_stride = dm_model_work_size(m, DM_MOE_GEMM_ROWS);
    c->work = c->work_stride ? dm_alloc_array((size_t)c->n_threads, c->work_stride) : NULL;
    if (!c->scratch || !c->route_tmp || !c->st.rb.offsets || (c->work_stride && !c->work)) {
        dm_ctx_free(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory");
    }
    *out = c;
    return DM_OK;
}

static void free_batch_buffers(dm_ctx *c)
{
    void **bufs[] = {(void **)&c->st.rb.logits, (void **)&c->st.rb.a_rows, (void **)&c->st.rb.a_slot,
                     (void **)&c->st.rb.a_w, (void **)&c->route_e, (void **)&c->route_w,
                     (void **)&c->act[0], (void **)&c->act[1], (void **)&c->st.ybuf, (void **)&c->tasks,
                     (void **)&c->qx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        dm_free(*bufs[i]);
        *bufs[i] = NULL;
    }
    c->cap = 0;
}

void dm_ctx_free(dm_ctx *c)
{
    if (!c) return;
    free_batch_buffers(c);
    dm_moe_xbuf_free(&c->xb);
    dm_free(c->scratch);
    dm_free(c->route_tmp);
    dm_free(c->work);
    dm_free(c->st.rb.offsets);
    dm_free(c->pre);
    free(c->owned);
    free(c);
}

void dm_ctx_own(dm_ctx *c, void *p)
{
    free(c->owned);
    c->owned = p;
}

void dm_ctx_set_exchange(dm_ctx *c, const dm_moe_exchange *x)
{
    c->xchg = x;
    c->st.xb = x ? &c->xb : NULL;
    free_batch_buffers(c);  /* the task list's size depends on it */
}

/* Grows the per-batch buffers to hold n rows (they are kept between calls). */
static dm_status reserve(dm_ctx *c, int64_t n, dm_error *err)
{
    if (n <= c->cap) return DM_OK;
    const dm_config *cf = &c->m->cfg;
    int64_t J = cf->top_k + cf->n_shared, D = cf->dim;
    if (n > (int64_t)INT32_MAX / (J * D) / 2)
        return dm_fail(err, DM_ERR_ARG, "batch of %lld rows is too large for one call", (long long)n);
    free_batch_buffers(c);
    size_t nk = (size_t)n * cf->top_k, L = (size_t)cf->n_layers;
    c->st.rb.logits = dm_alloc((size_t)n * cf->n_experts * sizeof(float));
    c->st.rb.a_rows = dm_alloc(nk * sizeof(int32_t));
    c->st.rb.a_slot = dm_alloc(nk * sizeof(int32_t));
    c->st.rb.a_w = dm_alloc(nk * sizeof(float));
    c->route_e = dm_alloc(L * nk * sizeof(int32_t));
    c->route_w = dm_alloc(L * nk * sizeof(float));
    c->act[0] = dm_alloc((size_t)n * D * sizeof(float));
    c->act[1] = dm_alloc((size_t)n * D * sizeof(float));
    c->st.ybuf = dm_alloc((size_t)n * J * D * sizeof(float));
    c->tasks = dm_alloc((size_t)dm_moe_max_tasks(cf, n, n * cf->top_k) * sizeof *c->tasks);
    size_t qx = dm_moe_qx_bytes(c->m, n);
    c->qx = qx ? dm_alloc(qx) : NULL;
    if ((qx && !c->qx) || !c->st.rb.logits || !c->st.rb.a_rows || !c->st.rb.a_slot || !c->st.rb.a_w || !c->route_e ||
        !c->route_w || !c->act[0] || !c->act[1] || !c->st.ybuf || !c->tasks) {
        free_batch_buffers(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory for a batch of %lld rows", (long long)n);
    }
    c->cap = n;
    return DM_OK;
}

/* ---------------------------------------------------------------- input check */

dm_status dm_check_input(const dm_kernels *K, const float *x, int64_t n, int width, dm_error *err)
{
    int64_t i = (K ? K : &dm_kernels_ref)->find_nonfinite(x, n * width);
    if (i < 0) return DM_OK;
    return dm_fail(err, DM_ERR_NONFINITE, "input row %lld, column %lld is %s; inputs must be finite",
                   (long long)(i / width), (long long)(i % width), x[i] != x[i] ? "NaN" : "Inf");
}

/* ---------------------------------------------------------------- preprocessing */

dm_status dm_preprocess_rows(const dm_model *m, const float *x, int64_t n, float *out, dm_error *err)
{
    const dm_preprocess *p = &m->pre;
    int in = dm_model_in_width(&m->cfg);
    int64_t bad = dm_preprocess_apply(x, n, in, p->scale, p->shift, out);
    if (bad < 0) return DM_OK;
    int j = (int)(bad % in);
    return dm_fail(err, DM_ERR_NONFINITE, "input row %lld, column %d (%g) is Inf after the model's %s preprocessing "
                   "(x * %g + %g); inputs must stay within the float range", (long long)(bad / in), j,
                   (double)x[bad], dm_normalize_name(p->method), (double)p->scale[j], (double)p->shift[j]);
}

/* The model's preprocessing of x into the ctx's buffer (grown to the largest batch, kept). */
static dm_status preprocess(dm_ctx *c, const float *x, int64_t n, const float **out, dm_error *err)
{
    int in = dm_model_in_width(&c->m->cfg);
    if (n > c->pre_cap) {
        dm_free(c->pre);
        c->pre_cap = 0;
        if (!(c->pre = dm_alloc_array2((size_t)n, (size_t)in, sizeof *c->pre)))
            return dm_fail(err, DM_ERR_NOMEM, "context: out of memory for a batch of %lld rows", (long long)n);
        c->pre_cap = n;
    }
    *out = c->pre;
    return dm_preprocess_rows(c->m, x, n, c->pre, err);
}

/* ---------------------------------------------------------------- linear maps */

typedef struct linear_arg {
    const dm_model *m;
    const dm_linear *lin;
    const float *x;       /* [n, in] */
    float *y;             /* [n, out] */
    int64_t n;
    const float *norm_w, *norm_b;  /* LayerNorm x first (into y_norm) when set */
    float *x_norm;        /* [n, in] */
    unsigned char *work;  /* typed weights: [threads, work_stride] */
    size_t work_stride;
} linear_arg;

static const dm_span_kind SK_FORWARD = {"forward", "moe", "rows", NULL};
static const dm_span_kind SK_PRE = {"preprocess", "moe", "rows", NULL};
static const dm_span_kind SK_EMBED = {"embed", "moe", "rows", NULL};
static const dm_span_kind SK_HEAD = {"head", "moe", "rows", NULL};
static const dm_span_kind SK_LN = {"layernorm", "moe", "rows", NULL};
static const dm_span_kind SK_LIN_GEMM = {"linear gemm", "moe", "rows", NULL};

static void linear_task(void *arg, int64_t t, int tid)
{
    linear_arg *a = arg;
    const dm_kernels *K = a->m->kern;
    int64_t r0 = t * DM_ROUTE_BLOCK, rn = DM_MIN(a->n - r0, DM_ROUTE_BLOCK);
    const float *x = a->x + r0 * a->lin->in;
    if (a->norm_w) {  /* final LayerNorm, then the head */
        float *xn = a->x_norm + r0 * a->lin->in;
        uint64_t t0 = dm_span_begin();
        memcpy(xn, x, (size_t)rn * a->lin->in * sizeof *xn);
        K->layernorm(xn, rn, a->lin->in, a->lin->in, a->norm_w, a->norm_b, a->m->cfg.ln_eps);
        dm_span_end(&SK_LN, t0, rn, 0);
        x = xn;
    }
    uint64_t t0 = dm_span_begin();
    dm_gemm g = {
        .M = rn, .N = a->lin->out, .K = a->lin->in, .A = x, .lda = a->lin->in, .B = &a->lin->p,
        .bias = a->lin->b, .C = a->y + r0 * a->lin->out, .ldc = a->lin->out,
        .work = a->work ? a->work + (size_t)tid * a->work_stride : NULL,
    };
    dm_wmat_gemm(&g);
    dm_span_end(&SK_LIN_GEMM, t0, rn, 0);
}

static void linear_forward(dm_ctx *c, const dm_linear *lin, const float *x, float *y, int norm)
{
    linear_arg a = {c->m, lin, x, y, c->n, norm ? c->m->norm_w : NULL, norm ? c->m->norm_b : NULL, c->st.ybuf,
                    c->work, c->work_stride};
    dm_pool_run(c->run_pool, (c->n + DM_ROUTE_BLOCK - 1) / DM_ROUTE_BLOCK, linear_task, &a);
}

/* ---------------------------------------------------------------- forward */

const dm_model *dm_ctx_model(const dm_ctx *c) { return c->m; }

void dm_ctx_force(dm_ctx *c, int layer, int expert)
{
    c->force_layer = layer;
    c->force_expert = expert;
}

static dm_status forward(dm_ctx *c, const float *x, int64_t n, float *y, const dm_routing *route, dm_error *err);

dm_status dm_forward(dm_ctx *c, const float *x, int64_t n, float *y, const dm_routing *route, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    dm_status s = dm_model_fresh(c->m, err);
    if (!s) s = forward(c, x, n, y, route, err);
    dm_span_end(&SK_FORWARD, t0, n, 0);
    return s;
}

static dm_status forward(dm_ctx *c, const float *x, int64_t n, float *y, const dm_routing *route, dm_error *err)
{
    const dm_model *m = c->m;
    const dm_config *cf = &m->cfg;
    if (n < 0 || (n > 0 && (!x || !y)))
        return dm_fail(err, DM_ERR_ARG, "forward: bad arguments (n_rows %lld)", (long long)n);
    /* with an exchange every rank runs every layer, 0 rows too: the others wait in its collectives */
    if (n == 0 && !c->xchg) return DM_OK;
    dm_status st = dm_check_input(m->kern, x, n, dm_model_in_width(cf), err);
    if (st) return st;
    uint64_t t0 = dm_span_begin();
    if (n && m->pre.scale && (st = preprocess(c, x, n, &x, err))) return st;   /* x: the scaled rows from here on */
    if (m->pre.scale) dm_span_end(&SK_PRE, t0, n, 0);
    if ((st = reserve(c, n ? n : 1, err))) return st;
    c->n = n;
    /* latency first: below ~6 MFLOP of work a batch runs on the calling thread,
     * since waking the pool's threads costs more than they would save */
    c->run_pool = (double)n * dm_model_flops_per_row(m) < DM_INLINE_FLOPS ? NULL : c->pool;
    const float *h = x;
    if (cf->in_dim) {
        t0 = dm_span_begin();
        linear_forward(c, &m->embed, x, c->act[0], 0);
        dm_span_end(&SK_EMBED, t0, n, 0);
        h = c->act[0];
    }
    int64_t nk = n * cf->top_k;
    for (int l = 0; l < cf->n_layers; l++) {
        int last = l == cf->n_layers - 1;
        float *out = last && !cf->n_classes ? y : c->act[(l + 1) % 2];
        if (out == h) out = c->act[l % 2];  /* never write a layer's output over its input */
        c->st.rb.e = c->route_e + l * nk;
        c->st.rb.w = c->route_w + l * nk;
        dm_moe_pass p = {
            .m = m, .l = l, .pool = c->run_pool, .n = n, .x = h, .y = out, .st = &c->st, .xchg = c->xchg,
            .scratch = c->scratch, .route_tmp = c->route_tmp, .tasks = c->tasks,
            .work = c->work, .work_stride = c->work_stride, .qx = c->qx,
            .force_expert = l == c->force_layer ? c->force_expert : -1,
        };
        if ((st = dm_moe_layer_forward(&p, err))) return st;
        h = out;
    }
    if (cf->n_classes) {
        t0 = dm_span_begin();
        linear_forward(c, &m->head, h, y, 1);
        dm_span_end(&SK_HEAD, t0, n, 0);
    }
    if (route) {
        size_t total = (size_t)cf->n_layers * nk;
        if (route->experts) memcpy(route->experts, c->route_e, total * sizeof(int32_t));
        if (route->weights) memcpy(route->weights, c->route_w, total * sizeof(float));
    }
    return DM_OK;
}
