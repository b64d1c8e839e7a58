/* cmd_demo.c - deepmoe demo (what `make run` runs for now): the default seed
 * model on a random batch, its routing statistics, its throughput, and a check
 * that the sparse forward equals the seed's dense formula. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char help[] =
    "usage: deepmoe demo [--batch N] [--iters N] [--threads N] [--seed N]\n\n"
    "Builds the seed's default model (D=512, E=8, k=2, H=256, PyTorch init),\n"
    "routes a batch of uniform [-1, 1] rows, prints per-expert load, expert\n"
    "utilization and MaxVio, the forward throughput, and the largest difference\n"
    "between the sparse forward and the dense formula on the first rows.\n\n"
    "  --batch N     rows per forward (1024)\n"
    "  --iters N     timed forwards (20)\n"
    "  --threads N   worker threads (0 = all CPUs)\n"
    "  --seed N      model and data seed (0)\n";

int cmd_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"batch", required_argument, 0, 'b'}, {"iters", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"seed", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int batch = 1024, iters = 20, threads = 0, seed = 0, o;
    optind = 1;
    opterr = 0;  /* we print our own usage errors */
    while ((o = getopt_long(argc, argv, "b:n:t:s:h", opts, NULL)) != -1) {
        switch (o) {
        case 'b': if (cli_int(optarg, 1, 1 << 22, &batch)) return cli_usage("demo", "--batch '%s' must be in 1..4194304", optarg); break;
        case 'n': if (cli_int(optarg, 1, 1000000, &iters)) return cli_usage("demo", "--iters '%s' must be >= 1", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("demo", "--threads '%s' must be in 0..1024", optarg); break;
        case 's': if (cli_int(optarg, 0, 1 << 30, &seed)) return cli_usage("demo", "--seed '%s' must be a non-negative integer", optarg); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("demo", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    dm_config c;
    dm_config_default(&c);
    dm_error err;
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_ctx *ctx = NULL;
    int rc = 1;
    size_t n = (size_t)batch;
    float *x = malloc(n * c.dim * sizeof *x), *y = malloc(n * c.dim * sizeof *y);
    float *yd = malloc(8 * (size_t)c.dim * sizeof *yd), *w = malloc(n * c.top_k * sizeof *w);
    int32_t *e = malloc(n * c.top_k * sizeof *e);
    if (!x || !y || !yd || !w || !e) { fprintf(stderr, "deepmoe demo: out of memory\n"); goto done; }
    if (dm_model_create(&c, NULL, &m, &err)) goto fail;
    dm_model_init_random(m, (uint64_t)seed);
    if (dm_pool_create(threads, &pool, &err) || dm_ctx_create(m, pool, &ctx, &err)) goto fail;
    srand((unsigned)seed + 1);
    for (size_t i = 0; i < n * c.dim; i++) x[i] = 2.0f * rand() / (float)RAND_MAX - 1.0f;

    printf("deepmoe %s demo: seed model D=%d E=%d k=%d H=%d, %lld parameters (%lld active per row)\n",
           DM_VERSION, c.dim, c.n_experts, c.top_k, c.dim / 2, (long long)dm_model_param_count(m),
           (long long)dm_model_active_params(m));
    printf("batch %d, %d threads, %s kernels\n", batch, dm_pool_size(pool), dm_isa_name(dm_model_isa(m)));
    dm_routing route = {e, w};
    if (dm_forward(ctx, x, batch, y, &route, &err)) goto fail;  /* warm-up */
    double best = INFINITY, total = 0;
    for (int i = 0; i < iters; i++) {
        double t = cli_now();
        if (dm_forward(ctx, x, batch, y, &route, &err)) goto fail;
        t = cli_now() - t;
        total += t;
        best = t < best ? t : best;
    }
    printf("routing (uniform random inputs, untrained router):\n");
    cli_print_load(e, batch, c.top_k, c.n_experts);
    /* useful FLOPs per row: router + k experts (two GEMMs each) */
    double flops = 2.0 * c.dim * c.n_experts + c.top_k * 2.0 * 2.0 * c.dim * (c.dim / 2);
    double mean = total / iters;
    printf("forward: %.3f ms mean, %.3f ms best over %d runs: %.0f rows/s, %.1f GFLOP/s useful\n",
           1e3 * mean, 1e3 * best, iters, batch / mean, flops * batch / mean * 1e-9);
    int nd = batch < 8 ? batch : 8;
    if (dm_forward_dense(m, x, nd, yd, NULL, &err)) goto fail;
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)nd * c.dim; i++) {
        num = fmax(num, fabs((double)y[i] - yd[i]));
        den = fmax(den, fabs((double)yd[i]));
    }
    printf("sparse vs dense formula on %d rows: max relative difference %.2e\n", nd, den > 0 ? num / den : 0);
    rc = 0;
    goto done;
fail:
    rc = cli_error("demo", &err);
done:
    dm_ctx_free(ctx);
    dm_pool_free(pool);
    dm_model_free(m);
    free(x); free(y); free(yd); free(w); free(e);
    return rc;
}
