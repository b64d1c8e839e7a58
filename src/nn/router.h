/* router.h - the routing decision for one row, from its router logits.
 * Shared by the sparse forward, the dense reference and (later) training,
 * so every path routes identically. */
#ifndef DM_ROUTER_H
#define DM_ROUTER_H

#include "deepmoe.h"

/* Floats of scratch dm_route_row needs. */
static inline int dm_route_scratch(const dm_config *c) { return 2 * c->n_experts + c->n_groups; }

/* logits [E] -> experts [k] (selection order) and weights [k].
 * sel_bias [E] or NULL; tmp [dm_route_scratch(c)]. */
void dm_route_row(const dm_config *c, const float *sel_bias, const float *logits,
                  float *tmp, int32_t *experts, float *weights);

#endif
