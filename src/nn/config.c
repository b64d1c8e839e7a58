/* config.c - the MoE layer's configuration: defaults, names, validation. */
#include "base/base.h"

#include <string.h>

void dm_config_default(dm_config *c)
{
    *c = (dm_config){
        .dim = 512, .n_experts = 8, .top_k = 2, .hidden = 256,
        .router = DM_ROUTER_SEED, .norm_topk = 0, .route_scale = 1.0f,
        .n_groups = 1, .topk_groups = 1, .selection_bias = 0,
        .expert = DM_EXPERT_SEED, .n_shared = 0, .shared_hidden = 0,
        .ln_eps = 1e-5f,
        .n_layers = 1, .in_dim = 0, .n_classes = 0,
    };
}

static const char *const router_names[] = {
    [DM_ROUTER_SEED] = "seed", [DM_ROUTER_SOFTMAX] = "softmax", [DM_ROUTER_SIGMOID] = "sigmoid",
};
static const char *const expert_names[] = {
    [DM_EXPERT_SEED] = "seed", [DM_EXPERT_SWIGLU] = "swiglu",
};
#define N_ROUTERS ((int)(sizeof router_names / sizeof router_names[0]))
#define N_EXPERTS ((int)(sizeof expert_names / sizeof expert_names[0]))

const char *dm_router_name(dm_router_kind r)
{
    return (unsigned)r < (unsigned)N_ROUTERS ? router_names[r] : "unknown";
}

const char *dm_expert_name(dm_expert_kind e)
{
    return (unsigned)e < (unsigned)N_EXPERTS ? expert_names[e] : "unknown";
}

int dm_router_parse(const char *name)
{
    for (int i = 0; name && i < N_ROUTERS; i++)
        if (!strcmp(name, router_names[i])) return i;
    return -1;
}

int dm_expert_parse(const char *name)
{
    for (int i = 0; name && i < N_EXPERTS; i++)
        if (!strcmp(name, expert_names[i])) return i;
    return -1;
}

/* Sizes are capped so that every index fits an int32 and every byte count a
 * size_t without further checks downstream. */
#define DM_MAX_WIDTH (1 << 20)
#define DM_MAX_EXPERTS 4096

dm_status dm_config_validate(dm_config *c, dm_error *err)
{
    if (c->hidden == 0) c->hidden = c->dim / 2;
    if (c->shared_hidden == 0) c->shared_hidden = c->hidden;
    if (c->dim < 1 || c->dim > DM_MAX_WIDTH)
        return dm_fail(err, DM_ERR_ARG, "dim %d out of range (1..%d)", c->dim, DM_MAX_WIDTH);
    if (c->n_experts < 1 || c->n_experts > DM_MAX_EXPERTS)
        return dm_fail(err, DM_ERR_ARG, "experts %d out of range (1..%d)", c->n_experts, DM_MAX_EXPERTS);
    if (c->top_k < 1 || c->top_k > c->n_experts)
        return dm_fail(err, DM_ERR_ARG, "top-k %d out of range (1..experts = %d)", c->top_k, c->n_experts);
    if (c->hidden < 1 || c->hidden > DM_MAX_WIDTH)
        return dm_fail(err, DM_ERR_ARG, "hidden %d out of range (1..%d)", c->hidden, DM_MAX_WIDTH);
    if ((unsigned)c->router >= (unsigned)N_ROUTERS)
        return dm_fail(err, DM_ERR_ARG, "unknown router kind %d", (int)c->router);
    if ((unsigned)c->expert >= (unsigned)N_EXPERTS)
        return dm_fail(err, DM_ERR_ARG, "unknown expert kind %d", (int)c->expert);
    if (!(c->route_scale > 0) || c->route_scale > 1e6f)
        return dm_fail(err, DM_ERR_ARG, "route scale %g must be positive and finite", (double)c->route_scale);
    if (c->n_groups < 1 || c->n_experts % c->n_groups != 0)
        return dm_fail(err, DM_ERR_ARG, "groups %d must divide the %d experts", c->n_groups, c->n_experts);
    if (c->topk_groups < 1 || c->topk_groups > c->n_groups)
        return dm_fail(err, DM_ERR_ARG, "topk-groups %d out of range (1..groups = %d)", c->topk_groups, c->n_groups);
    if (c->top_k > c->topk_groups * (c->n_experts / c->n_groups))
        return dm_fail(err, DM_ERR_ARG, "top-k %d exceeds the %d experts in the %d kept groups",
                       c->top_k, c->topk_groups * (c->n_experts / c->n_groups), c->topk_groups);
    if (c->n_shared < 0 || c->n_shared > DM_MAX_EXPERTS)
        return dm_fail(err, DM_ERR_ARG, "shared experts %d out of range (0..%d)", c->n_shared, DM_MAX_EXPERTS);
    if (c->shared_hidden < 1 || c->shared_hidden > DM_MAX_WIDTH)
        return dm_fail(err, DM_ERR_ARG, "shared hidden %d out of range (1..%d)", c->shared_hidden, DM_MAX_WIDTH);
    if (c->n_layers < 1 || c->n_layers > 1024)
        return dm_fail(err, DM_ERR_ARG, "layers %d out of range (1..1024)", c->n_layers);
    if (c->in_dim < 0 || c->in_dim > DM_MAX_WIDTH)
        return dm_fail(err, DM_ERR_ARG, "input dim %d out of range (0 = none, ..%d)", c->in_dim, DM_MAX_WIDTH);
    if (c->n_classes < 0 || c->n_classes > DM_MAX_WIDTH)
        return dm_fail(err, DM_ERR_ARG, "classes %d out of range (0 = none, ..%d)", c->n_classes, DM_MAX_WIDTH);
    if (!(c->ln_eps > 0) || c->ln_eps > 1)
        return dm_fail(err, DM_ERR_ARG, "LayerNorm eps %g must be in (0, 1]", (double)c->ln_eps);
    return DM_OK;
}
