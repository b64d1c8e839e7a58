/* cmd_report.c - deepmoe report: the training report of one or more runs. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: deepmoe report RUN_DIR [RUN_DIR ...] [--out report.html]\n\n"
    "Writes one self-contained HTML page (inline SVG: no script, nothing fetched, opens\n"
    "offline) about training runs, each a 'deepmoe train --out' directory:\n"
    "  - loss, accuracy (test MSE for regression), learning rate and throughput over steps;\n"
    "  - expert utilization with the seed's 85% line, MaxVio and routing accuracy;\n"
    "  - per run and MoE layer, a heatmap of expert load over steps and the aux-free biases;\n"
    "  - a table of every setting (model config, training state) and final result.\n"
    "Several runs share each chart, one color each, and the table marks the rows that\n"
    "differ: compare balance settings side by side, as Weights & Biases does.\n"
    "Definitions of the metrics: docs/metrics.md.\n\n"
    "  --out PATH   the page (default: RUN_DIR/report.html of the first run)\n";

int cmd_report(int argc, char **argv)
{
    static const struct option lo[] = {{"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    int oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("report", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    int n = argc - optind;
    if (n < 1) return cli_usage("report", "expected at least one run directory");
    if (n > 16) return cli_usage("report", "%d run directories: at most 16", n);
    char def[4096];
    if (!out) {
        snprintf(def, sizeof def, "%s/report.html", argv[optind]);
        out = def;
    }
    dm_error err;
    if (dm_report_write((const char *const *)(argv + optind), n, out, &err)) return cli_error("report", &err);
    printf("wrote %s (%d run%s)\n", out, n, n > 1 ? "s" : "");
    return 0;
}
