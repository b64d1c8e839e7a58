/* moe_layer.h - one MoE layer, the pipeline inference and training share.
 *
 *   route     logits = x Wg^T + bg, top-k per row                 (dm_moe_route)
 *   dispatch  the n*k (row, slot) assignments sorted by expert    (dm_moe_dispatch)
 *   [exchange out]  rows of experts owned by other ranks leave: counts first,
 *             then rows (an all-to-all and an all-to-all-v), and this rank
 *             receives the rows other ranks route to its experts
 *   compute   tasks of (expert, block of its rows): up GEMM with the row
 *             gather fused in, the expert kind's middle (ReLU+LayerNorm or
 *             SwiGLU), down GEMM with bias and residual: unscaled outputs
 *   [exchange back]  outputs return to the rows' ranks, into their slots
 *   combine   y[r] = sum_j w_j ybuf[r, j] (shared experts weight 1), in a
 *             fixed order: results do not depend on threads or placement
 *
 * With a cache (training) the compute keeps what the backward needs; the
 * backward (src/train/moe_backward.c) runs the same steps mirrored through the
 * same compute list and exchange. Without an exchange every expert is local
 * and nothing is copied: the compute indexes x and writes ybuf in place.
 *
 * Expert kinds differ only in their entry of dm_expert_ops (seed, swiglu);
 * shared experts differ only in their span (consecutive rows, weight 1). */
#ifndef DM_MOE_LAYER_H
#define DM_MOE_LAYER_H

#include "base/pool.h"
#include "nn/model.h"

#define DM_MOE_BLOCK 32   /* rows per expert task: small enough that a hot expert splits across threads */

static inline int64_t dm_moe_hmax(const dm_config *c) { return DM_MAX(c->hidden, c->shared_hidden); }
static inline int64_t dm_moe_ldh(const dm_config *c) { return dm_moe_hmax(c) * dm_expert_ops_of(c)->up_mult; }

/* ---------------------------------------------------------------- routing */

#define DM_ROUTE_BLOCK 128   /* rows per routing task */

/* One layer's routing of n rows. J = k + S slots per row (routed, then shared). */
typedef struct dm_route_buf {
    float *logits;       /* [n, E] */
    int32_t *e;          /* [n, k] chosen experts, selection order */
    float *w;            /* [n, k] their weights */
    int32_t *offsets;    /* [E + 1] start of each expert's assignments */
    int32_t *a_rows;     /* [n * k] input row of each assignment, grouped by expert */
    int32_t *a_slot;     /* [n * k] r * J + j: the (row, slot) each assignment fills */
    float *a_w;          /* [n * k] weight of each assignment */
} dm_route_buf;

/* logits = x Wg^T + bg and dm_route_row for every row, in parallel.
 * tmp: [dm_pool_size(pool) * dm_route_scratch] floats; work: each thread's
 * GEMM scratch at work + tid * work_stride (dm_model_work_size; NULL when 0). */
void dm_moe_route(const dm_model *m, const dm_layer *ly, dm_pool *pool, const float *x, int64_t n,
                  dm_route_buf *rb, float *tmp, unsigned char *work, size_t work_stride);
/* Rows one GEMM of the layer runs at most (the work size's argument). */
#define DM_MOE_GEMM_ROWS DM_MAX(DM_MOE_BLOCK, DM_ROUTE_BLOCK)
/* Counting sort of the n*k assignments by expert, stable in row order. */
void dm_moe_dispatch(const dm_config *c, int64_t n, dm_route_buf *rb);

/* ---------------------------------------------------------------- exchange seam */

/* How rows reach the experts' owners. Routed expert e lives on rank owner[e];
 * shared experts, the router and everything outside the layer are on every
 * rank. Both calls are collective: every rank of the group makes them in the
 * same order (MPI_Alltoall / MPI_Alltoallv, or the loopback in tests), so every
 * rank runs every layer, also with 0 rows (dm_forward does). An error on one
 * rank (bad input, out of memory, a bad owner table) is that rank's: the
 * others are then left in a collective, so with an exchange any error is fatal
 * to the group, as in MPI without fault tolerance (the caller aborts it). */
typedef struct dm_moe_exchange {
    int n_ranks;
    int rank;
    const int32_t *owner;   /* [E] */
    /* send [n_ranks * per]: block o goes to rank o; recv [n_ranks * per]: block s came from rank s */
    dm_status (*counts)(void *ctx, const int64_t *send, int64_t *recv, int per, dm_error *err);
    /* rows of `width` floats: send holds send_n[o] rows for each rank o in rank order;
     * recv receives recv_n[s] rows from each rank s in rank order */
    dm_status (*rows)(void *ctx, const float *send, const int64_t *send_n, float *recv, const int64_t *recv_n,
                      int width, dm_error *err);
    void *ctx;
} dm_moe_exchange;

/* Buffers of the exchange, kept between calls (grown as needed). Received
 * rows are in source-rank order, then expert, then the source's dispatch order. */
typedef struct dm_moe_xbuf {
    dm_growbuf send_pos;    /* int32 [sent] dispatch position of each sent row, send order */
    dm_growbuf cnt;         /* int64 [2 * R * E + 2 * R]: counts sent, received; rows per rank sent, received */
    dm_growbuf send;        /* float rows out */
    dm_growbuf recv_x;      /* float [n_recv, D] received input rows (kept for the backward) */
    dm_growbuf recv_d;      /* float [n_recv, D] received output gradients (backward) */
    dm_growbuf recv_w;      /* float [n_recv] received routing weights (backward) */
    dm_growbuf out;         /* float [n_recv, D] computed rows, received order */
    dm_growbuf back;        /* float [sent, D] rows returned, send order */
    dm_growbuf c_idx;       /* int32 [n_recv] compute list -> received row */
    dm_growbuf c_w;         /* float [n_recv] compute-ordered weights (backward) */
    dm_growbuf c_off;       /* int32 [E + 1] */
    dm_growbuf tasks;       /* dm_moe_task [dm_moe_max_tasks] for the received rows */
    dm_growbuf cache;       /* training: h1, hn, mean, rstd of the compute rows (sized once the counts are in) */
    dm_growbuf recv_key;    /* uint64 [n_recv] dropout keys of the received rows (training with dropout) */
    int64_t n_sent, n_recv;
    int64_t *send_n, *recv_n;  /* [R] rows per rank, into cnt */
} dm_moe_xbuf;

/* ---------------------------------------------------------------- one layer's run */

typedef struct dm_moe_task { int32_t expert, start, len; } dm_moe_task;

/* What a layer's forward leaves behind: for combine, and for the backward
 * when it trains. Compute rows (cache rows) are the compute list's positions
 * (routed rows this rank computes, grouped by expert), then shared expert s's
 * rows at n_comp + s*n + r. */
typedef struct dm_moe_state {
    dm_route_buf rb;
    float *ybuf;            /* [n, J, D] unscaled expert outputs of (row, slot) */
    /* training cache (NULL: inference, hidden rows live in per-thread scratch) */
    float *h1;              /* [rows, ldh] up GEMM output: post-ReLU (seed) or [g | u] (swiglu) */
    float *hn;              /* [rows, hmax] down GEMM input */
    float *mean, *rstd;     /* [rows] LayerNorm statistics (seed) */
    /* the compute list (set by the forward) */
    const int32_t *c_off;   /* [E + 1] routed compute rows by expert (local experts only) */
    int64_t n_comp;
    const float *c_in;      /* input rows: the layer input, or the received rows */
    const int32_t *c_idx;   /* [n_comp] row of c_in (and of the backward's gradient rows) */
    const float *c_w;       /* [n_comp] routing weight of each compute row */
    float *c_out;           /* output rows: ybuf (slots), or the rows that go back */
    const int32_t *c_oidx;  /* [n_comp] row of c_out */
    dm_moe_xbuf *xb;        /* exchange buffers (owned by the caller), or NULL */
    dm_moe_task *tasks;     /* the task list the forward used (the backward reuses its storage) */
    int64_t drop_row0;      /* dropout: the global index of row 0 in its step (dm_moe_pass.drop_row0) */
    const uint64_t *c_key;  /* dropout keys of the received rows (exchange), or NULL: computed */
} dm_moe_state;

/* One call of the layer. */
typedef struct dm_moe_pass {
    const dm_model *m;
    int l;                  /* layer index */
    dm_pool *pool;
    int64_t n;
    const float *x;         /* [n, D] layer input */
    float *y;               /* [n, D] layer output */
    dm_moe_state *st;
    const dm_moe_exchange *xchg;  /* NULL: every expert local */
    float *scratch;         /* inference: [threads, DM_MOE_BLOCK, dm_moe_ldh] */
    float *route_tmp;       /* [threads, dm_route_scratch] */
    unsigned char *work;    /* typed weights: [threads, work_stride] GEMM scratch (NULL for f32) */
    size_t work_stride;     /* dm_model_work_size(m, DM_MOE_GEMM_ROWS) */
    void *tasks;            /* [dm_moe_max_tasks(c, n, n * k)]; with an exchange st->xb->tasks is used */
    unsigned char *qx;      /* inference: dm_moe_qx_bytes(m, n) bytes (64-byte aligned) for the layer
                             * input quantized once for the routed experts' up GEMMs (NULL: not done) */
    /* training */
    int train;              /* keep the cache (st->h1 ...: the caller's for n*k + S*n rows, or
                             * grown in st->xb when rows are exchanged) */
    float dropout;          /* on the experts' hidden activations (0 = off) */
    uint64_t drop_base;     /* the step's dropout base */
    int64_t drop_row0;      /* global index of row 0 in the step (over every rank's micro-batches): a
                             * row's mask is keyed by (global row, slot), wherever its expert runs */
    const dm_wmat *fw;      /* [E + S, 2]: expert i's up and down weights in place of its p1, p2
                             * (training in bf16), or NULL: the model's */
    /* routing-accuracy probe: >= 0 sends every row to this expert alone */
    int force_expert;
} dm_moe_pass;

/* Bytes of dm_moe_pass.qx for n rows of any layer of m (0: no layer's
 * routed experts share a kernel that quantizes ahead). */
size_t dm_moe_qx_bytes(const dm_model *m, int64_t n);

/* Tasks a layer of n rows (n_comp routed compute rows) may need. */
int64_t dm_moe_max_tasks(const dm_config *c, int64_t n, int64_t n_comp);

/* route -> dispatch -> [exchange] -> compute -> [exchange back] -> combine. */
dm_status dm_moe_layer_forward(dm_moe_pass *p, dm_error *err);

/* A task's rows: the pieces of the compute list (or a shared expert's rows)
 * that one task computes, forward and backward alike. */
typedef struct dm_moe_span {
    int expert;             /* index into the layer's experts (E + S) */
    int64_t cache0, len;    /* first compute (cache) row, rows */
    const float *in;        /* input base */
    const int32_t *idx;     /* rows of in (and of the gradient rows), or NULL: consecutive */
    int64_t row0;           /* shared: first row */
    const float *w;         /* [len] routing weights, or NULL (shared: 1) */
    float *out; int64_t ldo; const int32_t *oidx;  /* output rows */
} dm_moe_span;

/* Tasks of (expert, start, len): block 0 = one task per expert (backward:
 * one task owns an expert's gradients). Returns the count. */
int64_t dm_moe_make_tasks(const dm_config *c, const dm_moe_state *st, int64_t n, int block, dm_moe_task *tasks);
dm_moe_span dm_moe_span_of(const dm_config *c, const dm_moe_state *st, int64_t n, const float *x, dm_moe_task tk);

/* Dropout mask of layer l applied to the span's first len rows (x [len, ld]):
 * each row's mask is keyed by (step base, layer, its global row * J + slot),
 * so it does not depend on the batch's split into micro-batches or ranks, nor
 * on where the expert runs. */
void dm_moe_dropout(float p, uint64_t base, int l, const dm_config *c, const dm_moe_state *st,
                    const dm_moe_span *sp, int64_t len, int h, float *x, int64_t ld);

/* Exchange steps shared with the backward. send: row a_rows[pos] of src
 * (width floats), or the weight a_w[pos] when src is NULL, for every sent
 * assignment, into dst (received order). back: the rows of out (received
 * order) return to their ranks and land in dst at row a_slot[pos]. */
dm_status dm_moe_xchg_send(const dm_moe_exchange *x, dm_moe_state *st, const float *src, int width,
                           dm_growbuf *dst, dm_error *err);
dm_status dm_moe_xchg_back(const dm_moe_exchange *x, dm_moe_state *st, const float *out, int width, float *dst,
                           dm_error *err);

void dm_moe_xbuf_free(dm_moe_xbuf *xb);
/* b's storage grown to hold bytes (no limit but memory); NULL when out of memory. */
void *dm_moe_grow(dm_growbuf *b, size_t bytes);

/* Expert parallel inference: the context's layers exchange rows through x
 * (NULL: every expert local). x must outlive the context's use of it. */
void dm_ctx_set_exchange(dm_ctx *c, const dm_moe_exchange *x);
/* p (malloc'd, or NULL) is freed with c, or when replaced. */
void dm_ctx_own(dm_ctx *c, void *p);

/* Routing-accuracy probe of the inference context (eval.c). */
void dm_ctx_force(dm_ctx *c, int layer, int expert);
const dm_model *dm_ctx_model(const dm_ctx *c);

#endif
