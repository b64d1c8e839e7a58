/* cmd_export.c - deepmoe export: a ready Triton-style model repository from
 * any deepmoe model: REPO/NAME/config.pbtxt and REPO/NAME/1/model.safetensors. */
#include "deepmoe.h"
#include "cli.h"

#include <getopt.h>
#include <stdio.h>

static const char help[] =
    "usage: deepmoe export --model M.safetensors --repository DIR [--name moe_model]\n"
    "                      [--max-batch-size 64] [--version 1] [--top-k K]\n\n"
    "Writes DIR/NAME/config.pbtxt and DIR/NAME/VERSION/model.safetensors, as the seed\n"
    "deploys its model behind Triton: input \"input\" and output \"output\" (FP32, dims\n"
    "[in] and [out]), max_batch_size 64 and dynamic batching on (no queue delay: a lone\n"
    "request runs at once, batches form under load; measured in docs/serving.md), one CPU\n"
    "instance;\n"
    "plus two optional outputs with the routing decision of every MoE layer,\n"
    "\"routing_experts\" (INT32, [layers * k]) and \"routing_weights\" (FP32, [layers * k]).\n\n"
    "  --model PATH          the model (a seed state dict without metadata works with --top-k)\n"
    "  --repository DIR      the model repository (created if missing)\n"
    "  --name NAME           the model's name in the repository (moe_model)\n"
    "  --max-batch-size N    largest batch the dynamic batcher forms (64)\n"
    "  --version N           version directory (1)\n"
    "  --top-k K             k for a model file without deepmoe metadata\n";

int cmd_export(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"repository", required_argument, 0, 'r'},
        {"name", required_argument, 0, 'n'}, {"max-batch-size", required_argument, 0, 'b'},
        {"version", required_argument, 0, 'v'}, {"top-k", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *model = NULL;
    dm_export_opts eo;
    dm_export_opts_default(&eo);
    int top_k = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'm': model = optarg; break;
        case 'r': eo.repository = optarg; break;
        case 'n': eo.name = optarg; break;
        case 'b': if (cli_int(optarg, 1, 1 << 20, &eo.max_batch_size)) return cli_usage("export", "--max-batch-size '%s' must be in 1..1048576", optarg); break;
        case 'v': if (cli_int(optarg, 1, 1 << 30, &eo.version)) return cli_usage("export", "--version '%s' must be a positive integer", optarg); break;
        case 'k': if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("export", "--top-k '%s' must be in 1..4096", optarg); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("export", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("export", "unexpected argument '%s'", argv[optind]);
    if (!model || !eo.repository) return cli_usage("export", "--model and --repository are required");
    if (!dm_export_name_ok(eo.name))
        return cli_usage("export", "--name '%s': use a plain name (letters, digits, '_', '-', '.')", eo.name);

    dm_error err;
    dm_model *m;
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.isa = DM_ISA_REF;
    mo.top_k = top_k;
    if (dm_model_load(model, &mo, &m, &err)) return cli_error("export", &err);
    int rc = 0;
    if (dm_export_model(m, &eo, &err)) rc = cli_error("export", &err);
    else
        printf("wrote %s/%s/config.pbtxt and %s/%s/%d/model.safetensors\n", eo.repository, eo.name, eo.repository,
               eo.name, eo.version);
    dm_model_free(m);
    return rc;
}
