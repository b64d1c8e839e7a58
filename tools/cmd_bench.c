/* cmd_bench.c - deepmoe bench: throughput and latency of a model's forward or
 * training step, next to the machine's fp32 peak measured in the same run. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: deepmoe bench [--model M.safetensors] [--batch B] [--iters N] [--threads T]\n"
    "                     [--mode forward|train] [--precision fp32|bf16] [--json] [--profile TRACE.json]\n\n"
    "Times N batches of B random rows (after 3 warm-ups) through the model's forward pass\n"
    "or a training step (forward + backward + AdamW), and measures the machine's fp32 FMA\n"
    "peak for the same threads with a short register-resident loop in the same run.\n"
    "Useful FLOPs count the router, only the chosen and shared experts, embedding and head\n"
    "(x3 for a training step). Without --model: the seed's default layer (D=512, E=8, k=2,\n"
    "H=256).\n\n"
    "  --model PATH    model file (default: the seed layer, PyTorch init)\n"
    "  --batch B       rows per batch (1024)\n"
    "  --iters N       timed batches (20)\n"
    "  --threads T     worker threads (0 = all CPUs)\n"
    "  --mode M        forward | train (forward)\n"
    "  --precision P   train mode: GEMMs in fp32 | bf16 (fp32), as deepmoe train's\n"
    "                  --precision (bf16: operands rounded to bf16, fp32 sums and master weights)\n"
    "  --json          one JSON object: batch, threads, mode, isa, rows_per_s, gflops, us_p50,\n"
    "                  us_p99, peak_gflops, fraction_of_peak (and ranks, comm_share distributed)\n"
    "  --dist MODE     train mode under mpirun -np N: dp | zero1 | zero2 | zero3, each rank a\n"
    "                  batch of B rows (rows/s counts every rank's)\n"
    CLI_PROFILE_HELP
    CLI_DIST_HELP
    "                  (forward: each rank feeds B rows and runs its experts; train: with --dist dp)\n"
    "  --no-sync       with --dist: skip the gradient reductions (the ranks drift apart): the step\n"
    "                  without communication, for the share (sync - no-sync) / sync\n";

int cmd_bench(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"batch", required_argument, 0, 'b'},
        {"iters", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
        {"mode", required_argument, 0, 'M'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
        {"dist", required_argument, 0, 'D'}, {"expert-parallel", required_argument, 0, 'P'},
        {"dist-timeout", required_argument, 0, 'T'}, {"no-sync", no_argument, 0, 'S'},
        {"profile", required_argument, 0, CLI_PROFILE_OPT}, {"precision", required_argument, 0, 'R'},
        {0, 0, 0, 0},
    };
    int nosync = 0;
    dm_precision prec = DM_PREC_FP32;
    int dist = DM_DIST_NONE, ep = 0;
    double dist_timeout = 120;
    const char *model = NULL, *profile = NULL;
    int batch = 1024, iters = 20, threads = 0, train = 0, json = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'm': model = optarg; break;
        case 'j': json = 1; break;
        case 'b': if (cli_int(optarg, 1, 1 << 20, &batch)) return cli_usage("bench", "--batch '%s' must be in 1..1048576", optarg); break;
        case 'n': if (cli_int(optarg, 1, 1000000, &iters)) return cli_usage("bench", "--iters '%s' must be >= 1", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("bench", "--threads '%s' must be in 0..1024", optarg); break;
        case 'M':
            if (!strcmp(optarg, "forward")) train = 0;
            else if (!strcmp(optarg, "train")) train = 1;
            else return cli_usage("bench", "--mode '%s': expected forward or train", optarg);
            break;
        case 'D':
            if ((dist = dm_dist_mode_parse(optarg)) <= DM_DIST_NONE)
                return cli_usage("bench", "--dist '%s': expected dp, zero1, zero2 or zero3", optarg);
            break;
        case 'P': if (cli_int(optarg, 1, 1 << 20, &ep)) return cli_usage("bench", "--expert-parallel '%s' must be >= 1", optarg); break;
        case 'T':
            if (cli_dist_timeout(optarg, &dist_timeout))
                return cli_usage("bench", "--dist-timeout '%s' must be seconds > 0", optarg);
            break;
        case 'S': nosync = 1; break;
        case 'R':
            if (cli_precision(optarg, &prec)) return cli_usage("bench", "--precision '%s': expected fp32 or bf16", optarg);
            break;
        case CLI_PROFILE_OPT: profile = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("bench", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("bench", "unexpected argument '%s'", argv[optind]);
    if (nosync && dist == DM_DIST_NONE) return cli_usage("bench", "--no-sync needs --dist");
    if (prec != DM_PREC_FP32 && !train) return cli_usage("bench", "--precision needs --mode train");
    if (dist != DM_DIST_NONE && !train) return cli_usage("bench", "--dist needs --mode train (forward: --expert-parallel)");
    if (ep > 1 && train && dist == DM_DIST_NONE) return cli_usage("bench", "--expert-parallel with --mode train needs --dist dp");
    dm_comm *comm = NULL;
    int ranks = 1, rank = 0;
    if (dist != DM_DIST_NONE || ep > 1) {
        int r = cli_dist_start("bench", dist_timeout, &comm);
        if (r) return r;
        ranks = dm_comm_size(comm), rank = dm_comm_rank(comm);
        if (!train && dm_comm_size(comm) != ep) {
            fprintf(stderr, "deepmoe bench: --expert-parallel %d but mpirun started %d ranks\n", ep, ranks);
            return cli_dist_end(comm, EXIT_USAGE);
        }
    }

    int prc = cli_profile_start("bench", profile, rank);
    if (prc) return cli_dist_end(comm, prc);
    dm_error err;
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_ctx *ctx = NULL;
    dm_trainer *tr = NULL;
    float *x = NULL, *y = NULL;
    int32_t *labels = NULL;
    double *t = NULL;
    int rc = 1;
    if (model) {
        dm_model_opts mo;
        dm_model_opts_default(&mo);
        mo.packed_only = !train;  /* a forward benchmark loads the model as inference does */
        if (dm_model_load(model, &mo, &m, &err)) goto fail;
    } else {
        dm_config c;
        dm_config_default(&c);
        if (dm_model_create(&c, NULL, &m, &err)) goto fail;
        dm_model_init_random(m, 0);
    }
    const dm_config *c = dm_model_config(m);
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    x = malloc((size_t)batch * in * sizeof *x);
    y = malloc((size_t)batch * out * sizeof *y);
    labels = malloc((size_t)batch * sizeof *labels);
    t = malloc((size_t)iters * sizeof *t);
    if (!x || !y || !labels || !t) { fprintf(stderr, "deepmoe bench: out of memory\n"); goto done; }
    srand(1 + (unsigned)rank);   /* distributed: each rank its own rows */
    for (size_t i = 0; i < (size_t)batch * in; i++) x[i] = 2.0f * rand() / (float)RAND_MAX - 1.0f;
    for (size_t i = 0; i < (size_t)batch * out; i++) y[i] = 2.0f * rand() / (float)RAND_MAX - 1.0f;
    for (int i = 0; i < batch; i++) labels[i] = c->n_classes ? rand() % c->n_classes : 0;
    if (dm_pool_create(threads, &pool, &err)) goto fail;
    if (train) {
        dm_train_config tc;
        dm_train_config_default(&tc);
        tc.total_steps = iters + 3;
        tc.loss = c->n_classes ? DM_LOSS_CE : DM_LOSS_MSE;
        tc.precision = prec;
        if (dm_trainer_create(m, &tc, pool, &tr, &err)) goto fail;
        if (comm && dm_trainer_distribute(tr, comm, dist, ep, &err)) goto fail;
        if (nosync) dm_trainer_set_sync(tr, 0);
    } else if (dm_ctx_create(m, pool, &ctx, &err) || (comm && dm_ctx_expert_parallel(ctx, comm, &err))) {
        goto fail;
    }
    dm_comm_stats cs0 = {0}, cs1 = {0};
    for (int i = 0; i < iters + 3; i++) {
        double s = cli_now();
        dm_status st = train ? dm_train_step(tr, x, c->n_classes ? NULL : y, c->n_classes ? labels : NULL, batch, NULL, &err)
                             : dm_forward(ctx, x, batch, y, NULL, &err);
        if (st) goto fail;
        if (i >= 3) t[i - 3] = cli_now() - s;
        if (i == 2 && tr) dm_trainer_comm_stats(tr, &cs0);
        if (i == 2 && !tr) dm_comm_get_stats(comm, &cs0);
    }
    if (tr) dm_trainer_comm_stats(tr, &cs1);
    else dm_comm_get_stats(comm, &cs1);
    double total = 0;
    for (int i = 0; i < iters; i++) total += t[i];
    cli_sort_times(t, iters);
    double p50 = t[iters / 2], p99 = t[(int)fmin(iters - 1, ceil(0.99 * iters) - 1)];
    double rps = (double)batch * ranks * iters / total;   /* every rank's rows: the ranks step together */
    double share = total > 0 ? (cs1.seconds - cs0.seconds) / total : 0;
    double flops = dm_model_flops_per_row(m) * (train ? 3.0 : 1.0);
    double gflops = flops * rps * 1e-9;
    double peak = dm_peak_gflops(pool, dm_model_isa(m), 0.3);
    if (json) {
        printf("{\"batch\":%d,\"threads\":%d,\"mode\":\"%s\",\"isa\":\"%s\",\"wtype\":\"%s\",\"router_wtype\":\"%s\","
               "\"precision\":\"%s\",\"iters\":%d,\"rows_per_s\":%.1f,"
               "\"gflops\":%.2f,\"us_p50\":%.2f,\"us_p99\":%.2f,\"peak_gflops\":%.2f,\"fraction_of_peak\":%.4f,"
               "\"ranks\":%d,\"dist\":\"%s\",\"expert_parallel\":%d,\"comm_share\":%.4f}\n",
               batch, dm_pool_size(pool), train ? "train" : "forward", dm_isa_name(dm_model_isa(m)), dm_model_wtype(m),
               dm_model_router_wtype(m), prec == DM_PREC_BF16 ? "bf16" : "fp32", iters, rps, gflops, 1e6 * p50, 1e6 * p99, peak * ranks,
               peak > 0 ? gflops / (peak * ranks) : 0.0, ranks, dm_dist_mode_name(dist), ep > 1 ? ep : 1, share);
    } else {
        printf("%s, batch %d, %d threads, %s kernels, %s experts%s, %d timed batches\n", train ? "training step" : "forward",
               batch, dm_pool_size(pool), dm_isa_name(dm_model_isa(m)), dm_model_wtype(m),
               prec == DM_PREC_BF16 ? " (bf16 GEMMs: --precision bf16)" : "", iters);
        printf("  %.0f rows/s, %.1f GFLOP/s useful (%.2f MFLOP/row), p50 %.1f us, p99 %.1f us per batch\n", rps,
               gflops, flops * 1e-6, 1e6 * p50, 1e6 * p99);
        if (comm)
            printf("  %d ranks (--dist %s, expert parallel %d): rows/s and GFLOP/s over every rank; this rank waited "
                   "%.1f%% of the time in collectives\n", ranks, dm_dist_mode_name(dist), ep > 1 ? ep : 1, 100 * share);
        printf("  measured fp32 FMA peak %.1f GFLOP/s%s: %.1f%% of peak%s\n", peak * ranks, comm ? " (all ranks)" : "",
               peak > 0 ? 100 * gflops / (peak * ranks) : 0.0,
               strcmp(dm_model_wtype(m), "f32") || prec != DM_PREC_FP32 ? " (fp32-equivalent FLOPs)" : "");
    }
    rc = 0;
    goto done;
fail:
    rc = cli_error("bench", &err);
done:
    dm_trainer_free(tr);
    dm_ctx_free(ctx);
    dm_pool_free(pool);
    dm_model_free(m);
    free(x); free(y); free(labels); free(t);
    return cli_dist_end(comm, cli_profile_stop("bench", profile, comm, rc));
}
