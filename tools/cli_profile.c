/* cli_profile.c - `--profile PATH` of train, infer, bench, eval and serve, and
 * `deepmoe profile-summary`: the op table of a trace (PyTorch Profiler's
 * key_averages()). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rank_path(char *buf, size_t cap, const char *path, int rank)
{
    if (rank > 0) snprintf(buf, cap, "%s.rank%d", path, rank);   /* every rank its own file (and pid) */
    else snprintf(buf, cap, "%s", path);
}

int cli_profile_start(const char *cmd, const char *path, int rank)
{
    if (!path) return 0;
    char p[4096];
    rank_path(p, sizeof p, path, rank);
    FILE *f = fopen(p, "a");   /* refused now, not after the work: the file is written at the end */
    if (!f) {
        fprintf(stderr, "deepmoe %s: --profile %s: cannot write it: %s\n", cmd, p, strerror(errno));
        return 1;
    }
    fclose(f);
    dm_trace_opts o;
    dm_trace_opts_default(&o);
    o.pid = rank;
    dm_error err;
    if (dm_trace_start(&o, &err)) return cli_error(cmd, &err);
    return 0;
}

int cli_profile_stop(const char *cmd, const char *path, dm_comm *comm, int rc)
{
    if (!path || !dm_trace_active()) return rc;
    int rank = comm ? dm_comm_rank(comm) : 0;
    char p[4096];
    rank_path(p, sizeof p, path, rank);
    int64_t rec, drop;
    dm_trace_counts(&rec, &drop);
    dm_error err;
    /* a run that succeeded merges every rank's events into PATH (a collective);
     * a failed one leaves each rank's own file, as no barrier can be trusted */
    dm_status st = comm && !rc ? dm_trace_stop_ranks(path, comm, &err) : dm_trace_stop(p, &err);
    if (st) return rc ? rc : cli_error(cmd, &err);
    if (comm && !rc) {
        if (rank) return rc;
        snprintf(p, sizeof p, "%s", path);
    }
    fprintf(stderr, "deepmoe %s: profile: %lld events in %s%s (open it in ui.perfetto.dev or chrome://tracing; "
            "'deepmoe profile-summary %s' prints the op table)\n", cmd, (long long)rec, p,
            comm && !rc ? ", every rank merged (rank 0's count)" : "", p);
    if (drop)
        fprintf(stderr, "deepmoe %s: profile: %lld later events dropped past the cap of %lld: profile a shorter run\n",
                cmd, (long long)drop, (long long)(rec));
    return rc;
}

static const char help[] =
    "usage: deepmoe profile-summary TRACE.json [--sort self|total] [--top N]\n\n"
    "The op table of a trace written by --profile (train, infer, bench, eval, serve), as\n"
    "PyTorch Profiler's key_averages().table(): per op its calls, self time (the op less the\n"
    "ops inside it on the same thread) and total time, summed over every thread, with each\n"
    "as a share of all self time.\n\n"
    "  --sort KEY  self (default) or total\n"
    "  --top N     the N largest (20; 0 = all)\n";

static int by_total(const void *a, const void *b)
{
    const dm_op_stat *x = a, *y = b;
    return (x->total_us < y->total_us) - (x->total_us > y->total_us);
}

int cmd_profile_summary(int argc, char **argv)
{
    static const struct option lo[] = {
        {"sort", required_argument, 0, 's'}, {"top", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int top = 20, total = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 's':
            if (!strcmp(optarg, "self")) total = 0;
            else if (!strcmp(optarg, "total")) total = 1;
            else return cli_usage("profile-summary", "--sort '%s': expected self or total", optarg);
            break;
        case 'n': if (cli_int(optarg, 0, 1000000, &top)) return cli_usage("profile-summary", "--top '%s' must be >= 0", optarg); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("profile-summary", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage("profile-summary", "expected one trace file");
    dm_trace_summary s;
    dm_error err;
    if (dm_trace_summarize(argv[optind], &s, &err)) return cli_error("profile-summary", &err);
    if (total && s.n_ops) qsort(s.ops, (size_t)s.n_ops, sizeof *s.ops, by_total);
    double self_sum = 0;
    for (int i = 0; i < s.n_ops; i++) self_sum += s.ops[i].self_us;
    int n = top && top < s.n_ops ? top : s.n_ops;
    int w = 26;  /* the name column: as wide as the longest name shown (a trace may carry any names) */
    for (int i = 0; i < n; i++) {
        size_t len = strlen(s.ops[i].name);
        if ((size_t)w < len) w = len < 80 ? (int)len : 80;
    }
    printf("%-*s %9s %12s %9s %12s %11s %10s\n", w, "Name", "Self %", "Self", "Total %", "Total", "Avg", "# Calls");
    for (int i = 0; i < n; i++) {
        const dm_op_stat *o = &s.ops[i];
        char self[32], tot[32], avg[32];
        snprintf(self, sizeof self, "%.3f ms", o->self_us * 1e-3);
        snprintf(tot, sizeof tot, "%.3f ms", o->total_us * 1e-3);
        snprintf(avg, sizeof avg, "%.2f us", o->total_us / (double)(o->calls ? o->calls : 1));
        printf("%-*.*s %8.2f%% %12s %8.2f%% %12s %11s %10lld\n", w, w, o->name, self_sum > 0 ? 100 * o->self_us / self_sum : 0,
               self, self_sum > 0 ? 100 * o->total_us / self_sum : 0, tot, avg, (long long)o->calls);
    }
    printf("Self time total: %.3f ms over %d threads, %.3f ms from the first span to the last; %lld spans, %d ops%s\n",
           self_sum * 1e-3, s.n_lanes, s.wall_us * 1e-3, (long long)s.n_spans, s.n_ops, n < s.n_ops ? " (--top 0: all)" : "");
    if (s.overlaps) printf("warning: %lld spans overlap another span of their thread without nesting\n", (long long)s.overlaps);
    dm_trace_summary_free(&s);
    return 0;
}
