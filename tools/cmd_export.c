/* cmd_export.c - deepmoe export: a ready Triton-style model repository from
 * any deepmoe model: REPO/NAME/config.pbtxt and REPO/NAME/1/model.safetensors. */
#include "cli.h"
#include "serve/model_config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char help[] =
    "usage: deepmoe export --model M.safetensors --repository DIR [--name moe_model]\n"
    "                      [--max-batch-size 64] [--version 1] [--top-k K]\n\n"
    "Writes DIR/NAME/config.pbtxt and DIR/NAME/VERSION/model.safetensors, as the seed\n"
    "deploys its model behind Triton: input \"input\" and output \"output\" (FP32, dims\n"
    "[in] and [out]), max_batch_size 64 and dynamic batching on (no queue delay: a lone\n"
    "request runs at once, batches form under load), one CPU instance;\n"
    "plus two optional outputs with the routing decision of every MoE layer,\n"
    "\"routing_experts\" (INT32, [layers * k]) and \"routing_weights\" (FP32, [layers * k]).\n\n"
    "  --model PATH          the model (a seed state dict without metadata works with --top-k)\n"
    "  --repository DIR      the model repository (created if missing)\n"
    "  --name NAME           the model's name in the repository (moe_model)\n"
    "  --max-batch-size N    largest batch the dynamic batcher forms (64)\n"
    "  --version N           version directory (1)\n"
    "  --top-k K             k for a model file without deepmoe metadata\n";

static int mkdir_one(const char *p) { return mkdir(p, 0777) && errno != EEXIST ? -1 : 0; }

int cmd_export(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"repository", required_argument, 0, 'r'},
        {"name", required_argument, 0, 'n'}, {"max-batch-size", required_argument, 0, 'b'},
        {"version", required_argument, 0, 'v'}, {"top-k", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *model = NULL, *repo = NULL, *name = "moe_model";
    int mbs = 64, version = 1, top_k = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'm': model = optarg; break;
        case 'r': repo = optarg; break;
        case 'n': name = optarg; break;
        case 'b': if (cli_int(optarg, 1, 1 << 20, &mbs)) return cli_usage("export", "--max-batch-size '%s' must be in 1..1048576", optarg); break;
        case 'v': if (cli_int(optarg, 1, 1 << 30, &version)) return cli_usage("export", "--version '%s' must be a positive integer", optarg); break;
        case 'k': if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("export", "--top-k '%s' must be in 1..4096", optarg); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("export", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("export", "unexpected argument '%s'", argv[optind]);
    if (!model || !repo) return cli_usage("export", "--model and --repository are required");
    if (!*name || strlen(name) >= DM_MC_NAME || strpbrk(name, "/\\ \t\n\"'"))
        return cli_usage("export", "--name '%s': use a plain name (letters, digits, '_', '-', '.')", name);

    dm_error err;
    dm_model *m;
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.isa = DM_ISA_REF;
    mo.top_k = top_k;
    if (dm_model_load(model, &mo, &m, &err)) return cli_error("export", &err);
    const dm_config *c = dm_model_config(m);
    dm_triton_config mc;
    memset(&mc, 0, sizeof mc);
    snprintf(mc.name, sizeof mc.name, "%s", name);
    snprintf(mc.backend, sizeof mc.backend, "deepmoe");
    mc.max_batch_size = mbs;
    mc.n_inputs = 1;
    mc.inputs[0] = (dm_mc_tensor){.name = "input", .data_type = "TYPE_FP32", .n_dims = 1,
                                  .dims = {c->in_dim ? c->in_dim : c->dim}};
    int64_t lk = (int64_t)c->n_layers * c->top_k;
    mc.n_outputs = 3;
    mc.outputs[0] = (dm_mc_tensor){.name = "output", .data_type = "TYPE_FP32", .n_dims = 1,
                                   .dims = {c->n_classes ? c->n_classes : c->dim}};
    mc.outputs[1] = (dm_mc_tensor){.name = "routing_experts", .data_type = "TYPE_INT32", .n_dims = 1, .dims = {lk}};
    mc.outputs[2] = (dm_mc_tensor){.name = "routing_weights", .data_type = "TYPE_FP32", .n_dims = 1, .dims = {lk}};
    mc.dynamic_batching = 1;
    mc.n_preferred = 1;
    mc.preferred_batch_size[0] = mbs;
    mc.max_queue_delay_us = 0;  /* Triton's default: no wait when idle, batches form under backlog */
    mc.instance_count = 1;
    snprintf(mc.instance_kind, sizeof mc.instance_kind, "KIND_CPU");
    mc.version_policy = DM_VP_LATEST;
    mc.num_versions = 1;

    int rc = 1;
    char path[4096], *text = dm_model_config_format(&mc);
    FILE *fp = NULL;
    if (!text) { fprintf(stderr, "deepmoe export: out of memory\n"); goto done; }
    snprintf(path, sizeof path, "%s/%s/%d", repo, name, version);
    char part[4096];
    snprintf(part, sizeof part, "%s", repo);
    if (mkdir_one(part)) goto dir_fail;
    snprintf(part, sizeof part, "%s/%s", repo, name);
    if (mkdir_one(part) || mkdir_one(path)) goto dir_fail;
    snprintf(path, sizeof path, "%s/%s/%d/model.safetensors", repo, name, version);
    if (dm_model_save(m, path, &err)) { rc = cli_error("export", &err); goto done; }
    snprintf(path, sizeof path, "%s/%s/config.pbtxt", repo, name);
    fp = fopen(path, "w");
    if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0) {
        fp = NULL;
        fprintf(stderr, "deepmoe export: %s: cannot write: %s\n", path, strerror(errno));
        goto done;
    }
    fp = NULL;
    printf("wrote %s/%s/config.pbtxt and %s/%s/%d/model.safetensors\n", repo, name, repo, name, version);
    rc = 0;
    goto done;
dir_fail:
    fprintf(stderr, "deepmoe export: cannot create %s: %s\n", part, strerror(errno));
done:
    if (fp) fclose(fp);
    free(text);
    dm_model_free(m);
    return rc;
}
