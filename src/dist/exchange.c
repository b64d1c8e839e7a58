/* exchange.c - dm_moe_exchange over a dm_comm, and expert-parallel inference. */
#include "dist/exchange.h"

#include <stdint.h>
#include <stdlib.h>

static dm_status x_counts(void *ctx, const int64_t *send, int64_t *recv, int per, dm_error *err)
{
    return dm_comm_alltoall_i64(ctx, send, recv, per, err);
}

static dm_status x_rows(void *ctx, const float *send, const int64_t *send_n, float *recv, const int64_t *recv_n,
                        int width, dm_error *err)
{
    return dm_comm_alltoallv_rows(ctx, send, send_n, recv, recv_n, width, err);
}

dm_status dm_dist_xchg_create(dm_comm *c, int n_experts, dm_dist_xchg **out, dm_error *err)
{
    *out = NULL;
    int R = dm_comm_size(c);
    if (n_experts < R)
        return dm_fail(err, DM_ERR_ARG, "expert parallel over %d ranks needs at least %d experts, the model has %d", R,
                       R, n_experts);
    dm_dist_xchg *x = calloc(1, sizeof *x + (size_t)n_experts * sizeof x->owner[0]);
    if (!x) return dm_fail(err, DM_ERR_NOMEM, "exchange: out of memory");
    for (int e = 0; e < n_experts; e++) x->owner[e] = (int32_t)((int64_t)e * R / n_experts);
    x->c = c;
    x->x = (dm_moe_exchange){.n_ranks = R, .rank = dm_comm_rank(c), .owner = x->owner, .counts = x_counts,
                             .rows = x_rows, .ctx = c};
    *out = x;
    return DM_OK;
}

void dm_dist_xchg_free(dm_dist_xchg *x) { free(x); }

dm_status dm_ctx_expert_parallel(dm_ctx *ctx, dm_comm *c, dm_error *err)
{
    if (!c) {
        dm_ctx_set_exchange(ctx, NULL);
        dm_ctx_own(ctx, NULL);
        return DM_OK;
    }
    dm_dist_xchg *x;
    dm_status st = dm_dist_xchg_create(c, dm_model_config(dm_ctx_model(ctx))->n_experts, &x, err);
    if (st) return st;
    dm_ctx_set_exchange(ctx, &x->x);
    dm_ctx_own(ctx, x);
    return DM_OK;
}

dm_status dm_comm_allgather_rows(dm_comm *c, float *buf, const int64_t *rows_per_rank, int width, dm_error *err)
{
    int R = dm_comm_size(c);
    int *cnt = malloc((size_t)R * sizeof *cnt);
    if (!cnt) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    dm_status st = DM_OK;
    for (int r = 0; r < R && !st; r++) {
        int64_t v = rows_per_rank[r] * width;
        if (v < 0 || v > INT32_MAX) st = dm_fail(err, DM_ERR_ARG, "gather of %lld floats from rank %d", (long long)v, r);
        cnt[r] = (int)v;
    }
    if (!st) st = dm_comm_allgatherv(c, buf, cnt, err);
    free(cnt);
    return st;
}
