/* config.c - the MoE layer's configuration: defaults, names, validation. */
#include "base/base.h"
#include "nn/model.h"

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
 * size_t without further checks downstream: each width alone, and then the
 * products (a tensor's elements, the model's tensors and parameters), so a
 * config that validates is one whose memory the int64/size_t arithmetic of
 * the layout can count. The limits are listed in docs/formats.md. */
#define DM_MAX_WIDTH (1 << 20)
#define DM_MAX_EXPERTS 4096

/* One expert's parameters and tensors. Widths <= 2^20: fits int64 easily. */
int64_t dm_expert_numel(const dm_config *c, int64_t h)
{
    const dm_expert_ops *ops = dm_expert_ops_of(c);
    int64_t n = 0;
    for (int i = 0; i < ops->n_tensors; i++) n += dm_expert_tensor_numel(&ops->tensors[i], h, c->dim);
    return n;
}

static int expert_tensors(const dm_config *c) { return dm_expert_ops_of(c)->n_tensors; }

dm_status dm_config_size(const dm_config *c, int64_t *n_tensors, int64_t *n_params, dm_error *err)
{
    int64_t D = c->dim, E = c->n_experts, S = c->n_shared;
    /* the largest single tensor: an expert matrix, the router, the embedding or the head */
    int64_t big = DM_MAX(DM_MAX((int64_t)c->hidden, c->n_shared ? (int64_t)c->shared_hidden : 0), E) * D;
    big = DM_MAX(big, DM_MAX((int64_t)c->in_dim, (int64_t)c->n_classes) * D);
    if (big > DM_MAX_TENSOR_NUMEL)
        return dm_fail(err, DM_ERR_ARG, "a tensor of %lld elements is larger than the %lld supported "
                       "(dims multiply: e.g. hidden x dim)", (long long)big, (long long)DM_MAX_TENSOR_NUMEL);
    /* one layer: <= 2^13 experts of < 2^42 parameters each, so < 2^56 */
    int64_t layer_p = E * D + E + (c->selection_bias ? E : 0) + E * dm_expert_numel(c, c->hidden) +
                      S * dm_expert_numel(c, c->shared_hidden);
    int64_t layer_t = 2 + (c->selection_bias ? 1 : 0) + (E + S) * expert_tensors(c);
    int64_t extra_p = (c->in_dim ? D * c->in_dim + D : 0) + (c->n_classes ? 2 * D + (int64_t)c->n_classes * D + c->n_classes : 0);
    int64_t extra_t = (c->in_dim ? 2 : 0) + (c->n_classes ? 4 : 0), L = c->n_layers;
    if (layer_p > (DM_MAX_PARAMS - extra_p) / L)
        return dm_fail(err, DM_ERR_ARG, "%lld layers of %lld parameters each are more than the %lld supported",
                       (long long)L, (long long)layer_p, (long long)DM_MAX_PARAMS);
    if (layer_t > (DM_MAX_TENSORS - extra_t) / L)
        return dm_fail(err, DM_ERR_ARG, "%lld layers of %lld tensors each are more than the %lld supported",
                       (long long)L, (long long)layer_t, (long long)DM_MAX_TENSORS);
    if (n_params) *n_params = L * layer_p + extra_p;
    if (n_tensors) *n_tensors = L * layer_t + extra_t;
    return DM_OK;
}

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
    return dm_config_size(c, NULL, NULL, err);
}
