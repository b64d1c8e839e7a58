/* moe.c - the sparse MoE forward: route, dispatch, compute, combine.
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
#include "base/pool.h"
#include "nn/model.h"
#include "nn/router.h"

#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 64      /* rows per compute task: the hidden tile stays in L2 */
#define ROUTE_BLOCK 128   /* rows per routing task */
#define COMBINE_BLOCK 64

typedef struct task { int32_t expert, start, len; } task;

struct dm_ctx {
    const dm_model *m;
    dm_pool *pool;
    int n_threads;
    int64_t cap;          /* rows the buffers hold */
    float *logits;        /* [cap, E] */
    int32_t *route_e;     /* [cap, k] */
    float *route_w;       /* [cap, k] */
    int32_t *offsets;     /* [E + 1] start of each expert's assignments */
    int32_t *a_rows;      /* [cap * k] input row of each assignment, grouped by expert */
    int32_t *a_slot;      /* [cap * k] ybuf row (r * J + j) of each assignment */
    float *a_w;           /* [cap * k] gate weight of each assignment */
    float *ybuf;          /* [cap, J, D], J = k + S */
    task *tasks;          /* [cap * k / ROW_BLOCK + E + S * (cap / ROW_BLOCK + 1)] */
    float *scratch;       /* [n_threads, ROW_BLOCK, scratch_w] */
    int64_t scratch_w;    /* floats per row of hidden scratch */
    float *route_tmp;     /* [n_threads, dm_route_scratch] */
    /* the running batch */
    const float *x;
    float *y;
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
    const dm_config *cf = &m->cfg;
    int hmax = DM_MAX(cf->hidden, cf->n_shared ? cf->shared_hidden : 0);
    c->scratch_w = (int64_t)hmax * (cf->expert == DM_EXPERT_SWIGLU ? 2 : 1);
    c->scratch_w = (c->scratch_w + 15) / 16 * 16;
    c->scratch = dm_alloc((size_t)c->n_threads * ROW_BLOCK * c->scratch_w * sizeof(float));
    c->route_tmp = dm_alloc((size_t)c->n_threads * dm_route_scratch(cf) * sizeof(float));
    c->offsets = dm_alloc((size_t)(cf->n_experts + 1) * sizeof(int32_t));
    if (!c->scratch || !c->route_tmp || !c->offsets) {
        dm_ctx_free(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory");
    }
    *out = c;
    return DM_OK;
}

static void free_batch_buffers(dm_ctx *c)
{
    dm_free(c->logits); dm_free(c->route_e); dm_free(c->route_w);
    dm_free(c->a_rows); dm_free(c->a_slot); dm_free(c->a_w);
    dm_free(c->ybuf); dm_free(c->tasks);
    c->logits = NULL; c->route_e = NULL; c->route_w = NULL;
    c->a_rows = NULL; c->a_slot = NULL; c->a_w = NULL;
    c->ybuf = NULL; c->tasks = NULL;
    c->cap = 0;
}

void dm_ctx_free(dm_ctx *c)
{
    if (!c) return;
    free_batch_buffers(c);
    dm_free(c->scratch);
    dm_free(c->route_tmp);
    dm_free(c->offsets);
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
    int64_t J = cf->top_k + cf->n_shared;
    if (n > (int64_t)INT32_MAX / (J * cf->dim > 0 ? J * cf->dim : 1) / 2)
        return dm_fail(err, DM_ERR_ARG, "batch of %lld rows is too large for one call", (long long)n);
    free_batch_buffers(c);
    size_t nk = (size_t)n * cf->top_k;
    c->logits = dm_alloc((size_t)n * cf->n_experts * sizeof(float));
    c->route_e = dm_alloc(nk * sizeof(int32_t));
    c->route_w = dm_alloc(nk * sizeof(float));
    c->a_rows = dm_alloc(nk * sizeof(int32_t));
    c->a_slot = dm_alloc(nk * sizeof(int32_t));
    c->a_w = dm_alloc(nk * sizeof(float));
    c->ybuf = dm_alloc((size_t)n * J * cf->dim * sizeof(float));
    c->tasks = dm_alloc((size_t)max_tasks(cf, n) * sizeof(task));
    if (!c->logits || !c->route_e || !c->route_w || !c->a_rows || !c->a_slot || !c->a_w ||
        !c->ybuf || !c->tasks) {
        free_batch_buffers(c);
        return dm_fail(err, DM_ERR_NOMEM, "context: out of memory for a batch of %lld rows", (long long)n);
    }
    c->cap = n;
    return DM_OK;
}

/* ---------------------------------------------------------------- input check */

/* First non-finite value: an exponent of all ones. Integer ops vectorize. */
static int64_t find_nonfinite(const float *x, int64_t n)
{
    const uint32_t *u = (const uint32_t *)(const void *)x;
    const int64_t B = 4096;
    for (int64_t s = 0; s < n; s += B) {
        int64_t e = DM_MIN(n, s + B);
        uint32_t bad = 0;
        for (int64_t i = s; i < e; i++) bad |= ((u[i] & 0x7f800000u) == 0x7f800000u);
        if (bad)
            for (int64_t i = s; i < e; i++)
                if ((u[i] & 0x7f800000u) == 0x7f800000u) return i;
    }
    return -1;
}

/* ---------------------------------------------------------------- route */

static void route_task(void *arg, int64_t t, int tid)
{
    dm_ctx *c = arg;
    const dm_model *m = c->m;
    const dm_config *cf = &m->cfg;
    int64_t r0 = t * ROUTE_BLOCK, rn = DM_MIN(c->n - r0, ROUTE_BLOCK);
    int E = cf->n_experts, k = cf->top_k;
    float *lg = c->logits + r0 * E;
    dm_gemm g = {
        .M = rn, .N = E, .K = cf->dim, .A = c->x + r0 * cf->dim, .lda = cf->dim,
        .Bp = m->gate_p, .bias = m->gate_b, .C = lg, .ldc = E,
    };
    m->kern->gemm(&g);
    float *tmp = c->route_tmp + (int64_t)tid * dm_route_scratch(cf);
    for (int64_t i = 0; i < rn; i++)
        dm_route_row(cf, m->sel_bias, lg + i * E, tmp, c->route_e + (r0 + i) * k, c->route_w + (r0 + i) * k);
}

/* ---------------------------------------------------------------- dispatch */

/* Counting sort of assignments by expert (stable in row order), then the task
 * list: each expert's rows cut into ROW_BLOCK pieces, then the shared experts. */
static void dispatch(dm_ctx *c)
{
    const dm_config *cf = &c->m->cfg;
    int E = cf->n_experts, k = cf->top_k, J = k + cf->n_shared;
    int64_t nk = c->n * k;
    int32_t *off = c->offsets;
    memset(off, 0, (size_t)(E + 1) * sizeof *off);
    for (int64_t a = 0; a < nk; a++) off[c->route_e[a] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    /* off[e] is advanced while filling; recompute starts afterwards */
    for (int64_t a = 0; a < nk; a++) {
        int32_t e = c->route_e[a], pos = off[e]++;
        int64_t r = a / k, j = a % k;
        c->a_rows[pos] = (int32_t)r;
        c->a_slot[pos] = (int32_t)(r * J + j);
        c->a_w[pos] = c->route_w[a];
    }
    for (int e = E; e > 0; e--) off[e] = off[e - 1];
    off[0] = 0;
    int64_t nt = 0;
    for (int e = 0; e < E; e++)
        for (int32_t s = off[e]; s < off[e + 1]; s += ROW_BLOCK)
            c->tasks[nt++] = (task){e, s, DM_MIN(ROW_BLOCK, off[e + 1] - s)};
    for (int s = 0; s < cf->n_shared; s++)
        for (int64_t r = 0; r < c->n; r += ROW_BLOCK)
            c->tasks[nt++] = (task){E + s, (int32_t)r, (int32_t)DM_MIN(ROW_BLOCK, c->n - r)};
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
    const dm_expert_w *x = &m->experts[tk.expert];
    int D = cf->dim, H = x->hidden, J = cf->top_k + cf->n_shared;
    int shared = tk.expert >= cf->n_experts;
    float *h = c->scratch + (int64_t)tid * ROW_BLOCK * c->scratch_w;  /* [len, ldh] */

    /* routed: rows gathered through the assignment list; shared: consecutive rows */
    const int32_t *rows = shared ? NULL : c->a_rows + tk.start;
    const float *A = shared ? c->x + (int64_t)tk.start * D : c->x;
    int swiglu = cf->expert == DM_EXPERT_SWIGLU;
    int64_t ldh = swiglu ? 2 * H : H;
    dm_gemm up = {
        .M = tk.len, .N = (int)ldh, .K = D, .A = A, .lda = D, .a_idx = rows, .Bp = x->p1,
        .bias = x->b1, .act = swiglu ? DM_ACT_NONE : DM_ACT_RELU, .C = h, .ldc = ldh,
    };
    K->gemm(&up);
    if (swiglu) K->silu_mul(h, tk.len, H, ldh, h, ldh);
    else K->layernorm(h, tk.len, H, ldh, x->gamma, x->beta, cf->ln_eps);

    dm_gemm down = {
        .M = tk.len, .N = D, .K = H, .A = h, .lda = ldh, .Bp = x->p2, .bias = x->b2,
        .R = swiglu ? NULL : A, .ldr = D, .r_idx = rows,
    };
    if (shared) {
        int s = tk.expert - cf->n_experts;
        down.C = c->ybuf + ((int64_t)tk.start * J + cf->top_k + s) * D;
        down.ldc = (int64_t)J * D;
    } else {
        down.scale = c->a_w + tk.start;
        down.C = c->ybuf;
        down.ldc = D;
        down.c_idx = c->a_slot + tk.start;
    }
    K->gemm(&down);
}

/* ---------------------------------------------------------------- combine */

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

/* ---------------------------------------------------------------- forward */

dm_status dm_check_input(const dm_config *cf, const float *x, int64_t n, dm_error *err)
{
    int64_t bad = find_nonfinite(x, n * cf->dim);
    if (bad >= 0)
        return dm_fail(err, DM_ERR_NONFINITE, "input row %lld, column %lld is %s; inputs must be finite",
                       (long long)(bad / cf->dim), (long long)(bad % cf->dim),
                       x[bad] != x[bad] ? "NaN" : "Inf");
    return DM_OK;
}

dm_status dm_forward(dm_ctx *c, const float *x, int64_t n, float *y, const dm_routing *route, dm_error *err)
{
    const dm_config *cf = &c->m->cfg;
    if (n < 0 || (n > 0 && (!x || !y)))
        return dm_fail(err, DM_ERR_ARG, "forward: bad arguments (n_rows %lld)", (long long)n);
    if (n == 0) return DM_OK;
    dm_status st = dm_check_input(cf, x, n, err);
    if (st) return st;
    if ((st = reserve(c, n, err))) return st;
    c->x = x;
    c->y = y;
    c->n = n;
    dm_pool_run(c->pool, (n + ROUTE_BLOCK - 1) / ROUTE_BLOCK, route_task, c);
    dispatch(c);
    dm_pool_run(c->pool, c->n_tasks, expert_task, c);
    dm_pool_run(c->pool, (n + COMBINE_BLOCK - 1) / COMBINE_BLOCK, combine_task, c);
    if (route) {
        size_t nk = (size_t)n * cf->top_k;
        if (route->experts) memcpy(route->experts, c->route_e, nk * sizeof(int32_t));
        if (route->weights) memcpy(route->weights, c->route_w, nk * sizeof(float));
    }
    c->x = NULL;
    c->y = NULL;
    return DM_OK;
}
