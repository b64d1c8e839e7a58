/* cmd_init.c - deepmoe init: a randomly initialised model file. */
#include "cli.h"
#include "model_flags.h"

#include <stdio.h>
#include <stdlib.h>

static const char help[] =
    "usage: deepmoe init --out M.safetensors [model options] [--seed N]\n\n"
    "Writes a model with PyTorch's default initialisation (Linear: U(+-1/sqrt(fan_in)),\n"
    "LayerNorm: 1, 0). Seed-type experts keep the seed's PyTorch state-dict names, so\n"
    "the file loads into the seed's DeepSeekMoE module; the config goes to __metadata__.\n\n"
    "  --out PATH           output file (required)\n"
    "  --seed N             random seed (0)\n\n";
static const char help_tail[] =
    "\nexample: deepmoe init --out moe.safetensors --experts 16 --top-k 4 --router sigmoid\n";

int cmd_init(int argc, char **argv)
{
    static const struct option own[] = {
        {"out", required_argument, 0, 'o'}, {"seed", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const struct option *opts = model_long_options(own);
    dm_config c;
    dm_config_default(&c);
    c.hidden = 0;  /* D/2 unless given */
    const char *out = NULL;
    long long seed = 0;
    int o;
    optind = 1;
    opterr = 0;  /* we print our own usage errors */
    while ((o = getopt_long(argc, argv, "o:s:h", opts, NULL)) != -1) {
        int r = model_flag("init", o, optarg, &c);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        switch (o) {
        case 'o': out = optarg; break;
        case 's': {
            char *end;
            seed = strtoll(optarg, &end, 10);
            if (*end || end == optarg) return cli_usage("init", "--seed '%s' must be an integer", optarg);
            break;
        }
        case 'h':
            fputs(help, stdout);
            model_flags_help(stdout);
            fputs(help_tail, stdout);
            return 0;
        default: return cli_usage("init", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("init", "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage("init", "--out is required");
    dm_error err;
    if (dm_config_validate(&c, &err)) return cli_usage("init", "%s", err.msg);
    dm_model *m;
    if (dm_model_create(&c, NULL, &m, &err)) return cli_error("init", &err);
    dm_model_init_random(m, (uint64_t)seed);
    dm_status st = dm_model_save(m, out, &err);
    if (!st)
        printf("wrote %s: D=%d E=%d k=%d H=%d router=%s experts=%s shared=%d, %lld parameters\n", out,
               c.dim, c.n_experts, c.top_k, c.hidden, dm_router_name(c.router), dm_expert_name(c.expert),
               c.n_shared, (long long)dm_model_param_count(m));
    dm_model_free(m);
    return st ? cli_error("init", &err) : 0;
}
