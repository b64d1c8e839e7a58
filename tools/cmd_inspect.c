/* cmd_inspect.c - deepmoe inspect: what a model file holds. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

static const char help[] =
    "usage: deepmoe inspect M.safetensors [--top-k K] [--no-tensors]\n\n"
    "Prints the model's config, its input preprocessing (the per-feature map\n"
    "x * scale + shift it applies to raw rows, deepmoe train --normalize), its\n"
    "parameter count, the parameters one row touches (router + k routed experts +\n"
    "shared experts), the weight types of the experts and the router (deepmoe\n"
    "quantize), and every tensor with its shape, type, bytes in the file (values plus\n"
    "the type's scales and indices) and value statistics (of the dequantized values).\n\n"
    "  --top-k K       k for files without deepmoe metadata (2)\n"
    "  --no-tensors    omit the tensor table\n";

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"top-k", required_argument, 0, 'k'}, {"no-tensors", no_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int top_k = 0, tensors = 1, o;
    optind = 1;
    opterr = 0;  /* we print our own usage errors */
    while ((o = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
        switch (o) {
        case 'k':
            if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("inspect", "--top-k '%s' must be in 1..4096", optarg);
            break;
        case 'T': tensors = 0; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("inspect", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage("inspect", "expected exactly one model file");
    const char *path = argv[optind];
    dm_error err;
    dm_model *m;
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.isa = DM_ISA_REF;
    mo.top_k = top_k;
    if (dm_model_load(path, &mo, &m, &err)) return cli_error("inspect", &err);
    const dm_config *c = dm_model_config(m);
    printf("%s\n", path);
    printf("  dim %d, experts %d, top-k %d, hidden %d\n", c->dim, c->n_experts, c->top_k, c->hidden);
    printf("  router %s%s, route scale %g, groups %d (keep %d), selection bias %s\n", dm_router_name(c->router),
           c->router == DM_ROUTER_SOFTMAX ? (c->norm_topk ? " (renormalised)" : " (not renormalised)") : "",
           (double)c->route_scale, c->n_groups, c->topk_groups, c->selection_bias ? "yes" : "no");
    printf("  experts %s, shared experts %d (hidden %d), LayerNorm eps %g\n", dm_expert_name(c->expert),
           c->n_shared, c->shared_hidden, (double)c->ln_eps);
    if (c->n_layers > 1 || c->in_dim || c->n_classes)
        printf("  network: input %d%s -> %d MoE layer(s)%s -> output %d\n", c->in_dim ? c->in_dim : c->dim,
               c->in_dim ? " -> embed" : "", c->n_layers, c->n_classes ? " -> LayerNorm -> head" : "",
               c->n_classes ? c->n_classes : c->dim);
    const char *pre;
    const float *scale, *shift;
    if (dm_model_preprocess(m, &pre, &scale, &shift)) {
        int in = c->in_dim ? c->in_dim : c->dim;
        float lo[2] = {scale[0], shift[0]}, hi[2] = {scale[0], shift[0]};
        for (int j = 1; j < in; j++) {
            lo[0] = fminf(lo[0], scale[j]), hi[0] = fmaxf(hi[0], scale[j]);
            lo[1] = fminf(lo[1], shift[j]), hi[1] = fmaxf(hi[1], shift[j]);
        }
        printf("  preprocess %s: x * scale + shift per feature (%d), scale [%g, %g], shift [%g, %g]\n", pre, in,
               (double)lo[0], (double)hi[0], (double)lo[1], (double)hi[1]);
    } else if (pre) {
        printf("  preprocess none: raw features\n");
    } else {
        printf("  preprocess not recorded: rows go in as given\n");
    }
    long long total = (long long)dm_model_param_count(m), active = (long long)dm_model_active_params(m);
    printf("  parameters %lld, active per row %lld (%.1f%%)\n", total, active, total ? 100.0 * active / total : 0.0);
    long long file_bytes = 0;
    for (int i = 0; i < dm_model_n_tensors(m); i++) file_bytes += (long long)dm_model_tensor_bytes(m, i);
    printf("  expert weights %s, router %s, embedding/head %s; tensors %.1f KiB in the file, %.1f KiB in memory%s\n",
           dm_model_wtype(m), dm_model_router_wtype(m), dm_model_embed_wtype(m), (double)file_bytes / 1024.0,
           (double)dm_model_memory(m) / 1024.0,
           strcmp(dm_model_wtype(m), "f32") || strcmp(dm_model_router_wtype(m), "f32") || strcmp(dm_model_embed_wtype(m), "f32")
               ? " (packed for inference, no fp32 copy)" : " (with the fp32 master copy)");
    if (tensors) {
        int64_t most = 1;
        for (int i = 0; i < dm_model_n_tensors(m); i++) {
            dm_tensor_info t = dm_model_tensor(m, i);
            if (t.numel > most) most = t.numel;
        }
        float *v = cli_calloc3((size_t)most, 1, sizeof *v);
        if (!v) {
            fprintf(stderr, "deepmoe inspect: out of memory\n");
            dm_model_free(m);
            return 1;
        }
        printf("  %-36s %-14s %-9s %10s %12s %12s\n", "tensor", "shape", "type", "bytes", "mean", "std");
        for (int i = 0; i < dm_model_n_tensors(m); i++) {
            dm_tensor_info t = dm_model_tensor(m, i);
            if (dm_model_tensor_read(m, i, v, &err)) {
                free(v);
                dm_model_free(m);
                return cli_error("inspect", &err);
            }
            double s = 0, s2 = 0;
            for (int64_t j = 0; j < t.numel; j++) { s += v[j]; s2 += (double)v[j] * v[j]; }
            double mean = t.numel ? s / t.numel : 0, var = t.numel ? s2 / t.numel - mean * mean : 0;
            char shape[48];
            if (t.ndim == 2) snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)t.shape[0], (long long)t.shape[1]);
            else snprintf(shape, sizeof shape, "[%lld]", (long long)t.shape[0]);
            printf("  %-36s %-14s %-9s %10lld %12.5g %12.5g\n", t.name, shape, t.wtype ? t.wtype : "f32",
                   (long long)dm_model_tensor_bytes(m, i), mean, sqrt(var > 0 ? var : 0));
        }
        free(v);
    }
    dm_model_free(m);
    return 0;
}
