/* cmd_eval.c - deepmoe eval: a model on a dataset's held-out split. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: deepmoe eval --model M.safetensors --data SPEC [--json] [options]\n\n"
    "Evaluates on the test split of SPEC (see deepmoe train --help): loss, accuracy\n"
    "(classify) or MSE (regress), per-expert load, expert utilization (mean/max load),\n"
    "MaxVio, routing accuracy (share of rows and layers whose chosen top-k set equals\n"
    "an oracle's: the k experts that alone give the row the lowest loss), and on the\n"
    "synthetic regimes set the regime purity.\n"
    "The rows go to the model raw when its file records its preprocessing\n"
    "(deepmoe.normalize: the model scales them itself, as in infer and serve); a file\n"
    "without one (older, or not from deepmoe train) gets them scaled the set's way\n"
    "(pixel for IDX, minmax for .npy), as older versions of deepmoe trained.\n\n"
    "  --model PATH       model file\n"
    "  --data SPEC        dataset (its test split is used)\n"
    "  --task T           classify | regress (default: classify if the model has a head)\n"
    "  --seed N           synthetic data seed (default: the training run's, which deepmoe\n"
    "                     train records in the model file; else 0)\n"
    "  --holdout F        share of a set without a test split held out (default: the\n"
    "                     training run's, recorded in the model file; else 0.1)\n"
    "  --oracle-rows N    rows the routing oracle scores (1000, at most 1024; 0 = skip)\n"
    "  --threads N        worker threads (0 = all CPUs)\n"
    "  --top-k K          k for a model file without deepmoe metadata\n"
    "  --json             print one JSON object on the last line\n"
    CLI_PROFILE_HELP;

/* ,"key":v, or null when v is not finite (JSON has no NaN or Inf). */
static void json_num(const char *key, double v)
{
    if (isfinite(v)) printf(",\"%s\":%.6g", key, v);
    else printf(",\"%s\":null", key);
}

int cmd_eval(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"task", required_argument, 0, 'T'}, {"seed", required_argument, 0, 's'},
        {"holdout", required_argument, 0, 'H'},
        {"oracle-rows", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
        {"profile", required_argument, 0, CLI_PROFILE_OPT}, {0, 0, 0, 0},
    };
    const char *model = NULL, *data = NULL, *profile = NULL;
    int task = -1, oracle = 1000, threads = 0, top_k = 0, json = 0, oc;
    long long seed = -1;
    double holdout = -1;
    char *end;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'j': json = 1; break;
        case 'T':
            if (!strcmp(optarg, "classify")) task = DM_TASK_CLASSIFY;
            else if (!strcmp(optarg, "regress")) task = DM_TASK_REGRESS;
            else return cli_usage("eval", "--task '%s': expected classify or regress", optarg);
            break;
        case 's':
            errno = 0;
            seed = strtoll(optarg, &end, 10);
            if (errno || *end || end == optarg || seed < 0)
                return cli_usage("eval", "--seed '%s' must be a non-negative integer", optarg);
            break;
        case 'H':
            errno = 0;
            holdout = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(holdout >= 0 && holdout < 1))
                return cli_usage("eval", "--holdout '%s' must be a share in [0, 1), e.g. 0.1", optarg);
            break;
        case 'o': if (cli_int(optarg, 0, 1 << 30, &oracle)) return cli_usage("eval", "--oracle-rows '%s' must be >= 0", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("eval", "--threads '%s' must be in 0..1024", optarg); break;
        case 'k': if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("eval", "--top-k '%s' must be in 1..4096", optarg); break;
        case CLI_PROFILE_OPT: profile = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("eval", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("eval", "unexpected argument '%s'", argv[optind]);
    if (!model || !data) return cli_usage("eval", "--model and --data are required");
    int prc = cli_profile_start("eval", profile, 0);
    if (prc) return prc;

    dm_error err;
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_data d = {0};
    double *load = NULL;
    int rc = 1;
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.top_k = top_k;
    mo.packed_only = 1;  /* inference: only what the kernels read */
    if (dm_model_load(model, &mo, &m, &err)) {
        rc = cli_error("eval", &err);
        goto done;
    }
    const dm_config *c = dm_model_config(m);
    if (task < 0) task = c->n_classes ? DM_TASK_CLASSIFY : DM_TASK_REGRESS;  /* the model's head decides */
    if (task == DM_TASK_CLASSIFY && !c->n_classes) {
        fprintf(stderr, "deepmoe eval: %s has no classifier head; evaluate it with --task regress\n", model);
        goto done;
    }
    /* the rows the training run held out: its seed (synthetic data) and holdout, unless given */
    dm_train_meta tm;
    if (dm_model_train_meta(model, &tm, &err)) {
        rc = cli_error("eval", &err);
        goto done;
    }
    const char *seed_from = seed >= 0 ? "--seed" : tm.has_seed ? "the model's training seed" : "the default";
    if (seed < 0) seed = tm.has_seed ? (long long)tm.seed : 0;
    if (holdout < 0 && tm.holdout >= 0 && dm_data_spec_holds_out(data)) holdout = tm.holdout;
    /* a model that records its preprocessing scales its rows itself (dm_forward): raw rows */
    const char *pre = NULL;
    dm_model_preprocess(m, &pre, NULL, NULL);
    if (dm_data_load_norm(data, (dm_task)task, (uint64_t)seed, holdout, pre ? DM_NORM_NONE : DM_NORM_DEFAULT, &d,
                          &err) ||
        dm_pool_create(threads, &pool, &err)) {
        rc = cli_error("eval", &err);
        goto done;
    }
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    if (in != d.test.dim || (task == DM_TASK_REGRESS && out != d.test.y_dim) ||
        (task == DM_TASK_CLASSIFY && out < d.n_classes)) {
        fprintf(stderr, "deepmoe eval: %s does not fit %s: the model maps %d -> %d, the data has %d features and %d %s\n",
                model, data, in, out, d.test.dim, task == DM_TASK_CLASSIFY ? d.n_classes : d.test.y_dim,
                task == DM_TASK_CLASSIFY ? "classes" : "targets");
        goto done;
    }
    int L = c->n_layers, E = c->n_experts;
    load = malloc((size_t)L * E * sizeof *load);
    dm_eval ev = {.expert_load = load};
    dm_ctx *ctx = NULL;
    if (!load) {
        fprintf(stderr, "deepmoe eval: out of memory\n");
        goto done;
    }
    if (dm_ctx_create(m, pool, &ctx, &err) ||
        dm_evaluate(ctx, d.test.x, d.test.y, task == DM_TASK_CLASSIFY ? d.test.labels : NULL, d.test.regime, d.test.n,
                    oracle, &ev, &err)) {
        dm_ctx_free(ctx);
        rc = cli_error("eval", &err);
        goto done;
    }
    dm_ctx_free(ctx);
    printf("%s on %s test split (%lld rows", model, d.name, (long long)d.test.n);
    if (d.holdout >= 0) printf(" held out by --holdout %g", d.holdout);
    if (!strcmp(d.name, "synthetic")) printf("; data seed %lld, %s", seed, seed_from);
    printf(")\n");
    if (pre) printf("  features: raw, scaled by the model's %s preprocessing\n", pre);
    else printf("  features: scaled %s by the data loader (the model records no preprocessing)\n",
                dm_normalize_name(d.normalize));
    printf("  loss %.5f", ev.loss);
    if (ev.accuracy >= 0) printf(", accuracy %.4f", ev.accuracy);
    if (ev.mse >= 0) printf(", mse %.6f", ev.mse);
    printf("\n  expert utilization %.3f, MaxVio %.3f", ev.expert_utilization, ev.max_vio);
    if (ev.routing_accuracy >= 0) printf(", routing accuracy %.3f (%lld rows)", ev.routing_accuracy, (long long)ev.oracle_rows);
    if (ev.purity >= 0) printf(", regime purity %.3f", ev.purity);
    printf("\n");
    for (int l = 0; l < L; l++) {
        printf("  layer %d load:", l);
        for (int e = 0; e < E && e < 64; e++) printf(" %.3f", load[l * E + e]);
        printf("\n");
    }
    if (json) {
        printf("{\"oracle_rows\":%lld", (long long)ev.oracle_rows);
        json_num("loss", ev.loss);
        if (task == DM_TASK_CLASSIFY) json_num("accuracy", ev.accuracy);
        else json_num("mse", ev.mse);
        printf(",\"expert_load\":[");
        for (int l = 0; l < L; l++) {
            printf("%s[", l ? "," : "");
            for (int e = 0; e < E; e++) printf("%s%.5f", e ? "," : "", load[l * E + e]);
            printf("]");
        }
        printf("]");
        json_num("expert_utilization", ev.expert_utilization);
        json_num("max_vio", ev.max_vio);
        if (ev.routing_accuracy >= 0) json_num("routing_accuracy", ev.routing_accuracy);
        else printf(",\"routing_accuracy\":null");
        if (ev.purity >= 0) json_num("regime_purity", ev.purity);
        printf("}\n");
    }
    rc = 0;
done:
    free(load);
    dm_data_free(&d);
    dm_pool_free(pool);
    dm_model_free(m);
    return cli_profile_stop("eval", profile, NULL, rc);
}
