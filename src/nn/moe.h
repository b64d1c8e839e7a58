/* moe.h - pieces of the MoE forward shared by inference (moe.c) and training
 * (src/train): routing a batch and dispatching its assignments by expert. */
#ifndef DM_MOE_H
#define DM_MOE_H

#include "base/pool.h"
#include "nn/model.h"

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
 * tmp: [dm_pool_size(pool) * dm_route_scratch] floats. */
void dm_moe_route(const dm_model *m, const dm_layer *ly, dm_pool *pool, const float *x, int64_t n,
                  dm_route_buf *rb, float *tmp);
/* Counting sort of the n*k assignments by expert, stable in row order. */
void dm_moe_dispatch(const dm_config *c, int64_t n, dm_route_buf *rb);

/* Routing-accuracy probe: while layer >= 0, every row of that layer goes to
 * `expert` alone with weight 1 (other slots weight 0). layer -1 turns it off. */
void dm_ctx_force(dm_ctx *c, int layer, int expert);
const dm_model *dm_ctx_model(const dm_ctx *c);

#endif
