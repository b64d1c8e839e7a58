/* moe.c - the sparse forward: embed, MoE layers (route, dispatch, compute,
 * combine), final norm and head.
 *
 *   route    logits = x Wg^T + bg (one GEMM), then dm_route_row per row
 *   dispatch counting sort of the n*k (row, slot) assignments by expert: for
 *            each expert a contiguous list of input rows, output slots, weights
 *   compute  tasks of (expert, block of its rows): up-projection GEMM with the
 *            row gather fused in, ReLU+LayerNorm or SwiGLU, down-projection GEMM
 *            whose epilogue adds bias and residual and multiplies by the gate
 *            weight, writing slot (row, j) of ybuf. Shared experts are tasks too.
 *   combine  y[r] = sum_j ybuf[r, j] in a fixed order: the result does not depend
 *            on the thread count or on which thread ran which task.
 * Only the chosen experts are computed. The steps are separate functions so
 * that expert parallelism can put an all-to-all between dispatch and compute. */
#include "base/base.h"
#include "nn/moe.h"
#include "nn/router.h"

#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 32       /* rows per compute task: small enough that a hot expert splits across threads */
#define COMBINE_BLOCK 64
#ifndef DM_INLINE_FLOPS
#define DM_INLINE_FLOPS 6e6
#endif

typedef struct task { int32_t expert, start, len; } task;

struct dm_ctx {
    const dm_model *m;
    dm_pool *pool;
    int n_threads;
    int64_t cap;          /* rows the buffers hold */
    dm_route_buf rb;      /* the running layer's routing (logits, dispatch lists) */
    int32_t *route_e;     /* [L, cap, k] every layer's choices */
    float *route_w;       /* [L, cap, k] */
    float *act[2];        /* [cap, D] ping-pong layer activations */
    float *ybuf;          /* [cap, J, D], J = k + S */
    task *tasks;          /* [cap * k / ROW_BLOCK + E + S * (cap / ROW_BLOCK + 1)] */
    float *scratch;       /* [n_threads, ROW_BLOCK, scratch_w] */
    int64_t scratch_w;    /* floats per row of hidden scratch */
    float *route_tmp;     /* [n_threads, dm_route_scratch] */
    /* the running layer */
    dm_pool *run_pool;    /* the pool for the running batch: NULL when waking threads costs more than it saves */
    int force_layer;      /* >= 0: route every row of this layer to force_expert alone */
    int force_expert;
    const dm_layer *ly;
    const float *x;       /* layer input [n, D] */
    float *y;             /* layer output [n, D] */
    int64_t n;
    int64_t n_tasks;
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
    int hmax = DM_MAX(cf->hidden, cf->n_shared ? cf->shared_hidden : 0);
    c->scratch_w = (int64_t)hmax * (cf->expert == DM_EXPERT_SWIGLU ? 2 : 1);
    c->scratch_w = (c->scratch_w + 15) / 16 * 16;
    c->scratch = dm_alloc((size_t)c->n_threads * ROW_BLOCK * c->scratch_w * sizeof(float));
    c->route_tmp = dm_alloc((size_t)c->n_threads * dm_route_scratch(cf) * sizeof(float));
    c->rb.offsets = dm_alloc((size_t)(cf->n_experts + 1) * sizeof(int32_t));
    if (!c->scratch || !c->route_tmp || !c->rb.offsets) {
        dm_ctx_free(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory");
    }
    *out = c;
    return DM_OK;
}

static void free_batch_buffers(dm_ctx *c)
{
    void **bufs[] = {(void **)&c->rb.logits, (void **)&c->rb.a_rows, (void **)&c->rb.a_slot,
                     (void **)&c->rb.a_w, (void **)&c->route_e, (void **)&c->route_w,
                     (void **)&c->act[0], (void **)&c->act[1], (void **)&c->ybuf, (void **)&c->tasks};
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
    dm_free(c->scratch);
    dm_free(c->route_tmp);
    dm_free(c->rb.offsets);
    free(c);
}

static int64_t max_tasks(const dm_config *cf, int64_t n)
{
    return n * cf->top_k / ROW_BLOCK + cf->n_experts + (int64_t)cf->n_shared * (n / ROW_BLOCK + 1);
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
    c->rb.logits = dm_alloc((size_t)n * cf->n_experts * sizeof(float));
    c->rb.a_rows = dm_alloc(nk * sizeof(int32_t));
    c->rb.a_slot = dm_alloc(nk * sizeof(int32_t));
    c->rb.a_w = dm_alloc(nk * sizeof(float));
    c->route_e = dm_alloc(L * nk * sizeof(int32_t));
    c->route_w = dm_alloc(L * nk * sizeof(float));
    c->act[0] = dm_alloc((size_t)n * D * sizeof(float));
    c->act[1] = dm_alloc((size_t)n * D * sizeof(float));
    c->ybuf = dm_alloc((size_t)n * J * D * sizeof(float));
    c->tasks = dm_alloc((size_t)max_tasks(cf, n) * sizeof(task));
    if (!c->rb.logits || !c->rb.a_rows || !c->rb.a_slot || !c->rb.a_w || !c->route_e || !c->route_w ||
        !c->act[0] || !c->act[1] || !c->ybuf || !c->tasks) {
        free_batch_buffers(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory for a batch of %lld rows", (long long)n);
    }
    c->cap = n;
    return DM_OK;
}

/* ---------------------------------------------------------------- input check */

dm_status dm_check_input(const float *x, int64_t n, int width, dm_error *err)
{
    /* a non-finite float has an exponent of all ones; integer ops vectorize */
    const uint32_t *u = (const uint32_t *)(const void *)x;
    int64_t total = n * width;
    const int64_t B = 4096;
    for (int64_t s = 0; s < total; s += B) {
        int64_t e = DM_MIN(total, s + B);
        uint32_t bad = 0;
        for (int64_t i = s; i < e; i++) bad |= ((u[i] & 0x7f800000u) == 0x7f800000u);
        if (!bad) continue;
        for (int64_t i = s; i < e; i++)
            if ((u[i] & 0x7f800000u) == 0x7f800000u)
                return dm_fail(err, DM_ERR_NONFINITE, "input row %lld, column %lld is %s; inputs must be finite",
                               (long long)(i / width), (long long)(i % width), x[i] != x[i] ? "NaN" : "Inf");
    }
    return DM_OK;
}

/* ---------------------------------------------------------------- route + dispatch */

typedef struct route_arg {
    const dm_model *m;
    const dm_layer *ly;
    const float *x;
    int64_t n;
    dm_route_buf *rb;
    float *tmp;
} route_arg;

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
    };
    dm_wmat_gemm(&g);
    float *tmp = a->tmp + (int64_t)tid * dm_route_scratch(cf);
    for (int64_t i = 0; i < rn; i++)
        dm_route_row(cf, a->ly->sel_bias, lg + i * E, tmp, a->rb->e + (r0 + i) * k, a->rb->w + (r0 + i) * k);
}

void dm_moe_route(const dm_model *m, const dm_layer *ly, dm_pool *pool, const float *x, int64_t n,
                  dm_route_buf *rb, float *tmp)
{
    route_arg a = {m, ly, x, n, rb, tmp};
    dm_pool_run(pool, (n + DM_ROUTE_BLOCK - 1) / DM_ROUTE_BLOCK, route_task, &a);
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

/* Each expert's rows cut into ROW_BLOCK pieces, then the shared experts. */
static void make_tasks(dm_ctx *c)
{
    const dm_config *cf = &c->m->cfg;
    const int32_t *off = c->rb.offsets;
    int64_t nt = 0;
    for (int e = 0; e < cf->n_experts; e++)
        for (int32_t s = off[e]; s < off[e + 1]; s += ROW_BLOCK)
            c->tasks[nt++] = (task){e, s, DM_MIN(ROW_BLOCK, off[e + 1] - s)};
    for (int s = 0; s < cf->n_shared; s++)
        for (int64_t r = 0; r < c->n; r += ROW_BLOCK)
            c->tasks[nt++] = (task){cf->n_experts + s, (int32_t)r, (int32_t)DM_MIN(ROW_BLOCK, c->n - r)};
    c->n_tasks = nt;
}

/* ---------------------------------------------------------------- compute */

static void expert_task(void *arg, int64_t t, int tid)
{
    dm_ctx *c = arg;
    const dm_model *m = c->m;
    const dm_config *cf = &m->cfg;
    const dm_kernels *K = m->kern;
    task tk = c->tasks[t];
    const dm_expert_w *x = &c->ly->experts[tk.expert];
    int D = cf->dim, H = x->hidden, J = cf->top_k + cf->n_shared;
    int shared = tk.expert >= cf->n_experts;
    float *h = c->scratch + (int64_t)tid * ROW_BLOCK * c->scratch_w;  /* [len, ldh] */

    /* routed: rows gathered through the assignment list; shared: consecutive rows */
    const int32_t *rows = shared ? NULL : c->rb.a_rows + tk.start;
    const float *A = shared ? c->x + (int64_t)tk.start * D : c->x;
    int swiglu = cf->expert == DM_EXPERT_SWIGLU;
    int64_t ldh = swiglu ? 2 * H : H;
    dm_gemm up = {
        .M = tk.len, .N = (int)ldh, .K = D, .A = A, .lda = D, .a_idx = rows, .B = &x->p1,
        .bias = x->b1, .act = swiglu ? DM_ACT_NONE : DM_ACT_RELU, .C = h, .ldc = ldh,
    };
    dm_wmat_gemm(&up);
    if (swiglu) K->silu_mul(h, tk.len, H, ldh, h, ldh);
    else K->layernorm(h, tk.len, H, ldh, x->gamma, x->beta, cf->ln_eps);

    dm_gemm down = {
        .M = tk.len, .N = D, .K = H, .A = h, .lda = ldh, .B = &x->p2, .bias = x->b2,
        .R = swiglu ? NULL : A, .ldr = D, .r_idx = rows,
    };
    if (shared) {
        int s = tk.expert - cf->n_experts;
        down.C = c->ybuf + ((int64_t)tk.start * J + cf->top_k + s) * D;
        down.ldc = (int64_t)J * D;
    } else {
        down.scale = c->rb.a_w + tk.start;
        down.C = c->ybuf;
        down.ldc = D;
        down.c_idx = c->rb.a_slot + tk.start;
    }
    dm_wmat_gemm(&down);
}

static void combine_task(void *arg, int64_t t, int tid)
{
    DM_UNUSED(tid);
    dm_ctx *c = arg;
    const dm_config *cf = &c->m->cfg;
    int D = cf->dim, J = cf->top_k + cf->n_shared;
    int64_t r0 = t * COMBINE_BLOCK, r1 = DM_MIN(c->n, r0 + COMBINE_BLOCK);
    for (int64_t r = r0; r < r1; r++) {
        const float *src = c->ybuf + r * J * D;
        float *dst = c->y + r * D;
        memcpy(dst, src, (size_t)D * sizeof *dst);
        for (int j = 1; j < J; j++)
            for (int d = 0; d < D; d++) dst[d] += src[(int64_t)j * D + d];
    }
}

/* One MoE layer: x [n, D] -> y [n, D]; choices into route_e/w [n, k]. */
static void layer_forward(dm_ctx *c, const dm_layer *ly, const float *x, float *y, int32_t *re, float *rw)
{
    const dm_config *cf = &c->m->cfg;
    c->ly = ly;
    c->x = x;
    c->y = y;
    c->rb.e = re;
    c->rb.w = rw;
    dm_moe_route(c->m, ly, c->run_pool, x, c->n, &c->rb, c->route_tmp);
    if (ly == &c->m->layers[c->force_layer < 0 ? 0 : c->force_layer] && c->force_layer >= 0) {
        /* the oracle's probe: slot 0 = the forced expert with weight 1; the other
         * slots take other experts with weight 0 (computed, then ignored) */
        int k = cf->top_k, E = cf->n_experts;
        for (int64_t r = 0; r < c->n; r++)
            for (int j = 0; j < k; j++) {
                re[r * k + j] = (c->force_expert + j) % E;
                rw[r * k + j] = j == 0 ? 1.0f : 0.0f;
            }
    }
    dm_moe_dispatch(cf, c->n, &c->rb);
    make_tasks(c);
    dm_pool_run(c->run_pool, c->n_tasks, expert_task, c);
    dm_pool_run(c->run_pool, (c->n + COMBINE_BLOCK - 1) / COMBINE_BLOCK, combine_task, c);
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
} linear_arg;

static void linear_task(void *arg, int64_t t, int tid)
{
    DM_UNUSED(tid);
    linear_arg *a = arg;
    const dm_kernels *K = a->m->kern;
    int64_t r0 = t * DM_ROUTE_BLOCK, rn = DM_MIN(a->n - r0, DM_ROUTE_BLOCK);
    const float *x = a->x + r0 * a->lin->in;
    if (a->norm_w) {  /* final LayerNorm, then the head */
        float *xn = a->x_norm + r0 * a->lin->in;
        memcpy(xn, x, (size_t)rn * a->lin->in * sizeof *xn);
        K->layernorm(xn, rn, a->lin->in, a->lin->in, a->norm_w, a->norm_b, a->m->cfg.ln_eps);
        x = xn;
    }
    dm_gemm g = {
        .M = rn, .N = a->lin->out, .K = a->lin->in, .A = x, .lda = a->lin->in, .B = &a->lin->p,
        .bias = a->lin->b, .C = a->y + r0 * a->lin->out, .ldc = a->lin->out,
    };
    dm_wmat_gemm(&g);
}

static void linear_forward(dm_ctx *c, const dm_linear *lin, const float *x, float *y, int norm)
{
    linear_arg a = {c->m, lin, x, y, c->n, norm ? c->m->norm_w : NULL, norm ? c->m->norm_b : NULL, c->ybuf};
    dm_pool_run(c->run_pool, (c->n + DM_ROUTE_BLOCK - 1) / DM_ROUTE_BLOCK, linear_task, &a);
}

/* ---------------------------------------------------------------- forward */

const dm_model *dm_ctx_model(const dm_ctx *c) { return c->m; }

void dm_ctx_force(dm_ctx *c, int layer, int expert)
{
    c->force_layer = layer;
    c->force_expert = expert;
}

dm_status dm_forward(dm_ctx *c, const float *x, int64_t n, float *y, const dm_routing *route, dm_error *err)
{
    const dm_model *m = c->m;
    const dm_config *cf = &m->cfg;
    if (n < 0 || (n > 0 && (!x || !y)))
        return dm_fail(err, DM_ERR_ARG, "forward: bad arguments (n_rows %lld)", (long long)n);
    if (n == 0) return DM_OK;
    dm_status st = dm_check_input(x, n, dm_model_in_width(cf), err);
    if (st) return st;
    if ((st = reserve(c, n, err))) return st;
    c->n = n;
    /* latency first: below ~6 MFLOP of work a batch runs on the calling thread,
     * since waking the pool's threads costs more than they would save */
    c->run_pool = (double)n * dm_model_flops_per_row(m) < DM_INLINE_FLOPS ? NULL : c->pool;
    const float *h = x;
    if (cf->in_dim) {
        linear_forward(c, &m->embed, x, c->act[0], 0);
        h = c->act[0];
    }
    int64_t nk = n * cf->top_k;
    for (int l = 0; l < cf->n_layers; l++) {
        int last = l == cf->n_layers - 1;
        float *out = last && !cf->n_classes ? y : c->act[(l + 1) % 2];
        if (out == h) out = c->act[l % 2];  /* never write a layer's output over its input */
        layer_forward(c, &m->layers[l], h, out, c->route_e + l * nk, c->route_w + l * nk);
        h = out;
    }
    if (cf->n_classes) linear_forward(c, &m->head, h, y, 1);
    if (route) {
        size_t total = (size_t)cf->n_layers * nk;
        if (route->experts) memcpy(route->experts, c->route_e, total * sizeof(int32_t));
        if (route->weights) memcpy(route->weights, c->route_w, total * sizeof(float));
    }
    return DM_OK;
}
