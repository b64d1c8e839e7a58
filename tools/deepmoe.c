/* deepmoe.c - the command line: `deepmoe COMMAND [options]`. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const cli_cmd commands[] = {
    {"init", "create a randomly initialised model file", cmd_init},
    {"infer", "run a model on rows from a .npy file", cmd_infer},
    {"inspect", "show a model file's config, parameter counts and tensors", cmd_inspect},
    {"demo", "init the default seed model, run a batch, print routing and throughput", cmd_demo},
    {"train", "train a model on Fashion-MNIST, .npy arrays or synthetic data", cmd_train},
    {"eval", "evaluate a model on a dataset's held-out split", cmd_eval},
    {"bench", "time a forward pass or training step against the measured fp32 peak", cmd_bench},
    {"quantize", "convert a model's experts to bf16, f16, int8 (q8) or 2:4 sparse (nm24) weights", cmd_quantize},
    {"export", "write a Triton-style model repository (config.pbtxt + model) for serving", cmd_export},
    {"serve", "serve a model repository over Triton's HTTP/REST protocol", cmd_serve},
    {"top", "a live terminal view of a server's metrics: requests/s, latency, batches, expert load", cmd_top},
    {"report", "write a self-contained HTML report (curves, expert load, balance) of training runs", cmd_report},
    {"profile-summary", "the op table (calls, self and total time) of a --profile trace", cmd_profile_summary},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *fp)
{
    fprintf(fp,
            "deepmoe %s - DeepSeek-style Mixture-of-Experts in C\n\n"
            "usage: deepmoe COMMAND [options]\n\ncommands:\n", DM_VERSION);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(fp, "  %-15s %s\n", commands[i].name, commands[i].summary);
    fprintf(fp, "\n'deepmoe COMMAND --help' describes a command's options.\n"
                "Environment: DEEPMOE_ISA=ref|avx2|avx512 forces a kernel path; DEEPMOE_AMX=0 keeps\n"
                "bf16 weights off the AMX tiles (AVX512_BF16 instead). Under mpirun: DEEPMOE_SHM=0 sums\n"
                "gradients by MPI alone, DEEPMOE_SHM_REPLICA=0 keeps a parameter copy per rank\n"
                "(docs/distributed.md).\n");
}

int cli_error(const char *cmd, const dm_error *err)
{
    fprintf(stderr, "deepmoe %s: %s\n", cmd, err->msg);
    return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "deepmoe %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\ntry 'deepmoe %s --help'\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_precision(const char *s, dm_precision *out)
{
    if (!strcmp(s, "fp32")) *out = DM_PREC_FP32;
    else if (!strcmp(s, "bf16")) *out = DM_PREC_BF16;
    else return -1;
    return 0;
}

int cli_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void cli_sort_times(double *t, int n) { qsort(t, (size_t)n, sizeof *t, cmp_double); }

void *cli_calloc3(size_t a, size_t b, size_t size)
{
    if (size && (b > SIZE_MAX / size || (a && b * size > SIZE_MAX / a))) return NULL;
    size_t row = b * size;
    return calloc(a ? a : 1, row > 0 ? row : 1);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_print_load(const int32_t *experts, int64_t n, int k, int E)
{
    double *load = calloc((size_t)E, sizeof *load);
    if (!load) return;
    dm_expert_load(experts, n, k, E, load);
    double mx = 0;
    for (int e = 0; e < E; e++) mx = load[e] > mx ? load[e] : mx;
    int shown = E <= 64 ? E : 64;
    for (int e = 0; e < shown; e++) {
        int bar = mx > 0 ? (int)lround(20 * load[e] / mx) : 0;
        printf("  expert %3d  %6.2f%%  %.*s\n", e, 100 * load[e], bar, "####################");
    }
    if (shown < E) printf("  ... %d more experts\n", E - shown);
    printf("expert utilization %.3f (mean/max load, 1 = balanced), MaxVio %.3f\n",
           dm_expert_utilization(load, E), dm_max_vio(load, E));
    free(load);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        if (argc > 2 && strcmp(name, "help") == 0) {
            char *help_argv[] = {argv[2], "--help", NULL};
            for (int i = 0; i < N_COMMANDS; i++)
                if (!strcmp(argv[2], commands[i].name)) return commands[i].run(2, help_argv);
        }
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("deepmoe %s (kernels: %s)\n", DM_VERSION, dm_isa_name(dm_isa_resolve(DM_ISA_AUTO)));
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "deepmoe: unknown command '%s'\n\n", name);
    usage(stderr);
    return EXIT_USAGE;
}
