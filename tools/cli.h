/* cli.h - shared pieces of the deepmoe command line. Only the CLI prints and
 * decides exit codes: 0 ok, 1 failure (bad file, bad data), 2 usage error. */
#ifndef DM_CLI_H
#define DM_CLI_H

#include "deepmoe.h"

#define EXIT_USAGE 2

typedef struct cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_cmd;

int cmd_init(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_profile_summary(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_top(int argc, char **argv);

/* "deepmoe CMD: message" on stderr; returns the exit code for the status. */
int cli_error(const char *cmd, const dm_error *err);
/* Usage error: prints "deepmoe CMD: message" and "try 'deepmoe CMD --help'"; returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Strict integer / float parsing of an option value: 0 ok, -1 bad. */
int cli_int(const char *s, long lo, long hi, int *out);
int cli_float(const char *s, float *out);
/* --precision: "fp32" or "bf16"; 0 ok, -1 bad. */
int cli_precision(const char *s, dm_precision *out);
/* The --precision lines of train's and bench's --help. */
#define CLI_PRECISION_HELP \
    "  --precision P        GEMM precision: fp32 | bf16 (fp32). bf16 is mixed precision as\n" \
    "                       PyTorch's autocast(bfloat16): the experts' and the embedding's GEMMs\n" \
    "                       on bf16 operands with fp32 sums; fp32 master weights, moments, router,\n" \
    "                       head, norms, loss. Fast on CPUs with AVX512_BF16 (vdpbf16ps);\n" \
    "                       elsewhere emulated (same numbers, slower than fp32)\n"
/* Sorts n timings ascending (qsort with a double comparator). */
void cli_sort_times(double *t, int n);
/* calloc of a * b elements of size bytes, NULL on overflow or out of memory. */
void *cli_calloc3(size_t a, size_t b, size_t size);
/* Wall-clock seconds (monotonic). */
double cli_now(void);
/* Per-expert load line: "load  e0 0.125 |####   | ..." to stdout. */
void cli_print_load(const int32_t *experts, int64_t n, int k, int E);

/* --profile PATH (cli_profile.c): a trace of the command's ops, started before
 * its work and written at its end. A distributed run that succeeded merges
 * every rank into PATH (pid = rank); a failed one leaves rank r > 0's events in
 * PATH.rankR. start: 0 or an exit code; stop: returns rc (or 1 if the write
 * failed on a run that succeeded). */
#define CLI_PROFILE_OPT 900   /* getopt value of --profile */
#define CLI_PROFILE_HELP \
    "  --profile PATH  write a Chrome trace of every op to PATH (Perfetto, chrome://tracing;\n" \
    "                  docs/profiling.md); off by default, no cost when off\n"
int cli_profile_start(const char *cmd, const char *path, int rank);
int cli_profile_stop(const char *cmd, const char *path, dm_comm *comm, int rc);

/* Distributed commands (cli_dist.c). The flags every such command takes. */
#define CLI_DIST_HELP \
    "distributed (under mpirun -np N / srun; docs/distributed.md):\n" \
    "  --expert-parallel P  split the experts over P ranks (rows travel by MPI all-to-all)\n" \
    "  --dist-timeout S     a collective not done in S seconds ends the run with an error (a rank\n" \
    "                       died or hangs) (120)\n"
/* MPI_COMM_WORLD for a command given a distributed flag; on ranks other than 0
 * stdout goes to /dev/null (rank 0 speaks for the run). 0 ok, else an exit code. */
int cli_dist_start(const char *cmd, double timeout_s, dm_comm **out);
/* The end of a distributed command: a failure ends every rank (MPI_Abort)
 * after its message; success finalizes MPI. Returns rc. */
int cli_dist_end(dm_comm *c, int rc);
/* --dist-timeout's value: 0 ok, -1 bad. */
int cli_dist_timeout(const char *s, double *out);

#endif
