/* cmd_infer.c - deepmoe infer: rows from a .npy through a model to a .npy. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char help[] =
    "usage: deepmoe infer --model M.safetensors --input X.npy --output Y.npy [options]\n\n"
    "Runs the model on every row of X ([N, in] float32, float64 or small integers, C order)\n"
    "and writes Y ([N, out] float32). Only the chosen experts run (sparse dispatch).\n"
    "Rows go in raw, as in the training data: a model trained by deepmoe train carries\n"
    "its preprocessing (--normalize: minmax, standard or pixel; see deepmoe inspect) and\n"
    "applies it itself, here and in deepmoe serve. A model file without one (from an\n"
    "older deepmoe, or a PyTorch state dict) takes rows as its training saw them.\n"
    "Inputs containing NaN or Inf are refused (the error names the row and column).\n\n"
    "  --model PATH      model (.safetensors; a seed state dict without metadata works)\n"
    "  --input PATH      input rows (.npy)\n"
    "  --output PATH     output rows (.npy), written atomically\n"
    "  --top-k K         experts per row for files without deepmoe metadata (2)\n"
    "  --threads N       worker threads (0 = all CPUs; default 0)\n"
    "  --routing PATH    also write the routing decision [N, 2k] per MoE layer (layers side by\n"
    "                    side): k expert ids in selection order, then their k weights\n"
    "  --repeat N        run the forward N times and report the median time (1)\n"
    "  --quiet           print nothing on success\n"
    "  --expert-parallel P  under mpirun -np P: rank r owns experts [r*E/P, (r+1)*E/P) and\n"
    "                    runs the rows the others route to them (MPI all-to-all); each rank\n"
    "                    feeds its share of the rows, rank 0 writes all the outputs\n"
    "  --dist-timeout S  a collective not done in S seconds is an error (120)\n"
    CLI_PROFILE_HELP;

int cmd_infer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"top-k", required_argument, 0, 'k'},
        {"threads", required_argument, 0, 't'}, {"routing", required_argument, 0, 'r'},
        {"repeat", required_argument, 0, 'n'}, {"quiet", no_argument, 0, 'q'},
        {"expert-parallel", required_argument, 0, 'P'}, {"dist-timeout", required_argument, 0, 'T'},
        {"profile", required_argument, 0, CLI_PROFILE_OPT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ep = 0;
    double dist_timeout = 120;
    const char *model = NULL, *input = NULL, *output = NULL, *routing = NULL, *profile = NULL;
    int top_k = 0, threads = 0, repeat = 1, quiet = 0, o;
    optind = 1;
    opterr = 0;  /* we print our own usage errors */
    while ((o = getopt_long(argc, argv, "m:i:o:k:t:r:n:qh", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'i': input = optarg; break;
        case 'o': output = optarg; break;
        case 'r': routing = optarg; break;
        case 'q': quiet = 1; break;
        case 'k':
            if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("infer", "--top-k '%s' must be in 1..4096", optarg);
            break;
        case 't':
            if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("infer", "--threads '%s' must be in 0..1024", optarg);
            break;
        case 'n':
            if (cli_int(optarg, 1, 1000000, &repeat)) return cli_usage("infer", "--repeat '%s' must be >= 1", optarg);
            break;
        case 'P':
            if (cli_int(optarg, 1, 1 << 20, &ep)) return cli_usage("infer", "--expert-parallel '%s' must be >= 1", optarg);
            break;
        case 'T':
            if (cli_dist_timeout(optarg, &dist_timeout))
                return cli_usage("infer", "--dist-timeout '%s' must be seconds > 0", optarg);
            break;
        case CLI_PROFILE_OPT: profile = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("infer", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("infer", "unexpected argument '%s'", argv[optind]);
    if (!model || !input || !output) return cli_usage("infer", "--model, --input and --output are required");
    if (ep > 1 && routing) return cli_usage("infer", "--routing is not written with --expert-parallel");
    dm_comm *comm = NULL;
    if (ep > 1) {
        int r = cli_dist_start("infer", dist_timeout, &comm);
        if (r) return r;
        if (dm_comm_size(comm) != ep) {
            fprintf(stderr, "deepmoe infer: --expert-parallel %d but mpirun started %d ranks (use mpirun -np %d)\n", ep,
                    dm_comm_size(comm), ep);
            return cli_dist_end(comm, EXIT_USAGE);
        }
    }
    int64_t *share = NULL;
    int prank = comm ? dm_comm_rank(comm) : 0, prc = cli_profile_start("infer", profile, prank);
    if (prc) return cli_dist_end(comm, prc);

    dm_error err;
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_ctx *ctx = NULL;
    dm_array x = {0};
    float *y = NULL, *rw = NULL;
    int32_t *re = NULL;
    double *times = NULL;
    int rc = 1;
    double t0 = cli_now();
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.top_k = top_k;
    mo.packed_only = 1;  /* inference: only what the kernels read */
    if (dm_model_load(model, &mo, &m, &err)) goto fail;
    double t_load = cli_now() - t0;
    const dm_config *c = dm_model_config(m);
    if (dm_npy_read(input, &x, &err)) goto fail;
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    if (x.cols != in) {
        fprintf(stderr, "deepmoe infer: %s: rows have %lld values, but the model's input width is %d\n",
                input, (long long)x.cols, in);
        goto done;
    }
    int64_t n = x.rows, k = c->top_k, L = c->n_layers;
    size_t n1 = (size_t)(n ? n : 1);   /* rows come from the file: sizes checked for overflow */
    y = cli_calloc3(n1, (size_t)out, sizeof *y);
    re = cli_calloc3(n1, (size_t)(L * k), sizeof *re);
    rw = cli_calloc3(n1, (size_t)(L * k), sizeof *rw);
    times = malloc((size_t)repeat * sizeof *times);
    if (!y || !re || !rw || !times) {
        fprintf(stderr, "deepmoe infer: out of memory for %lld rows\n", (long long)n);
        goto done;
    }
    if (dm_pool_create(threads, &pool, &err) || dm_ctx_create(m, pool, &ctx, &err)) goto fail;
    /* expert parallel: rank r feeds rows [r0, r0 + nr) and receives the others' rows for its experts */
    int64_t r0 = 0, nr = n;
    if (comm) {
        int R = dm_comm_size(comm), me = dm_comm_rank(comm);
        if (!(share = calloc((size_t)R, sizeof *share))) { fprintf(stderr, "deepmoe infer: out of memory\n"); goto done; }
        for (int r = 0; r < R; r++) share[r] = n * (r + 1) / R - n * r / R;
        r0 = n * me / R, nr = share[me];
        if (dm_ctx_expert_parallel(ctx, comm, &err)) goto fail;
    }
    dm_routing route = {re, rw};
    for (int i = 0; i < repeat; i++) {
        double s = cli_now();
        if (dm_forward(ctx, x.data + r0 * in, nr, y + r0 * out, comm ? NULL : &route, &err)) {
            fprintf(stderr, "deepmoe infer: %s: %s\n", input, err.msg);
            goto done;
        }
        times[i] = cli_now() - s;
    }
    if (comm && dm_comm_allgather_rows(comm, y, share, out, &err)) goto fail;
    if ((!comm || dm_comm_rank(comm) == 0) && dm_npy_write(output, y, n, out, &err)) goto fail;
    if (routing) {  /* [n, L * 2k]: per layer, k expert ids then k weights */
        int64_t w = 2 * k * L;
        float *r = cli_calloc3(n1, (size_t)w, sizeof *r);
        if (!r) { fprintf(stderr, "deepmoe infer: out of memory\n"); goto done; }
        for (int64_t l = 0; l < L; l++)
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < k; j++) {
                    r[i * w + l * 2 * k + j] = (float)re[(l * n + i) * k + j];
                    r[i * w + l * 2 * k + k + j] = rw[(l * n + i) * k + j];
                }
        dm_status st = dm_npy_write(routing, r, n, w, &err);
        free(r);
        if (st) goto fail;
    }
    if (!quiet) {
        cli_sort_times(times, repeat);
        double med = times[repeat / 2];
        printf("%lld rows, D=%d E=%d k=%d, %d threads, %s kernels\n", (long long)n, c->dim, c->n_experts,
               c->top_k, dm_pool_size(pool), dm_isa_name(dm_model_isa(m)));
        const char *pre;
        if (dm_model_preprocess(m, &pre, NULL, NULL)) printf("preprocessing: %s (the model's, on the raw rows)\n", pre);
        printf("load %.1f ms, forward %.3f ms (median of %d), %.0f rows/s\n", 1e3 * t_load, 1e3 * med, repeat,
               med > 0 ? n / med : 0.0);
        if (comm) printf("expert parallel over %d ranks: this rank fed %lld rows\n", dm_comm_size(comm), (long long)nr);
        for (int64_t l = 0; l < L && n > 0 && !comm; l++) {
            if (L > 1) printf("layer %lld:\n", (long long)l);
            cli_print_load(re + l * n * k, n, (int)k, c->n_experts);
        }
        printf("wrote %s\n", output);
    }
    rc = 0;
    goto done;
fail:
    rc = cli_error("infer", &err);
done:
    dm_ctx_free(ctx);
    dm_pool_free(pool);
    dm_model_free(m);
    dm_array_free(&x);
    free(y); free(re); free(rw); free(times); free(share);
    return cli_dist_end(comm, cli_profile_stop("infer", profile, comm, rc));
}
