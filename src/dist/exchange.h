/* exchange.h - the MoE layer's exchange seam (nn/moe_layer.h) over a
 * communicator: counts with MPI_Alltoall, rows with MPI_Alltoallv. Routed
 * expert e lives on rank owner[e] = e * size / E (contiguous blocks). */
#ifndef DM_EXCHANGE_H
#define DM_EXCHANGE_H

#include "dist/comm.h"
#include "nn/moe_layer.h"

typedef struct dm_dist_xchg {
    dm_moe_exchange x;
    dm_comm *c;
    int32_t owner[];         /* [E] */
} dm_dist_xchg;

dm_status dm_dist_xchg_create(dm_comm *c, int n_experts, dm_dist_xchg **out, dm_error *err);
void dm_dist_xchg_free(dm_dist_xchg *x);

#endif
