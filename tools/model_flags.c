/* model_flags.c - parse the shared model-definition options. */
#include "cli.h"
#include "model_flags.h"

int model_flag(const char *cmd, int opt, const char *arg, dm_config *c)
{
    int *ip = NULL;
    const char *what = NULL;
    switch (opt) {
    case OPT_DIM: ip = &c->dim; what = "--dim"; break;
    case OPT_EXPERTS: ip = &c->n_experts; what = "--experts"; break;
    case OPT_TOPK: ip = &c->top_k; what = "--top-k"; break;
    case OPT_HIDDEN: ip = &c->hidden; what = "--hidden"; break;
    case OPT_SHARED: ip = &c->n_shared; what = "--shared-experts"; break;
    case OPT_SHARED_HIDDEN: ip = &c->shared_hidden; what = "--shared-hidden"; break;
    case OPT_GROUPS: ip = &c->n_groups; what = "--groups"; break;
    case OPT_TOPK_GROUPS: ip = &c->topk_groups; what = "--topk-groups"; break;
    case OPT_SEL_BIAS: c->selection_bias = 1; return 1;
    case OPT_NORM_TOPK: c->norm_topk = 1; return 1;
    case OPT_ROUTE_SCALE:
        if (cli_float(arg, &c->route_scale) || !(c->route_scale > 0)) {
            cli_usage(cmd, "--route-scale '%s' must be a positive number", arg);
            return -1;
        }
        return 1;
    case OPT_ROUTER: {
        int r = dm_router_parse(arg);
        if (r < 0) { cli_usage(cmd, "--router '%s': expected seed, softmax or sigmoid", arg); return -1; }
        c->router = (dm_router_kind)r;
        return 1;
    }
    case OPT_EXPERT_TYPE: {
        int e = dm_expert_parse(arg);
        if (e < 0) { cli_usage(cmd, "--expert-type '%s': expected seed or swiglu", arg); return -1; }
        c->expert = (dm_expert_kind)e;
        return 1;
    }
    default:
        return 0;
    }
    if (cli_int(arg, 0, 1 << 20, ip)) {
        cli_usage(cmd, "%s '%s' must be an integer in 0..%d", what, arg, 1 << 20);
        return -1;
    }
    return 1;
}
