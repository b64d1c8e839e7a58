/* cmd_top.c - deepmoe top: a terminal view of a running server's /metrics,
 * refreshed every --interval seconds: requests/s, p50/p90/p99, queue depth,
 * batch sizes, per-expert load bars and memory. Fetched with libcurl, read with
 * the Prometheus text reader (src/obs/prom.h); rates are the difference of two
 * scrapes over the time between them. */
#define _DEFAULT_SOURCE
#include "cli.h"
#include "obs/prom.h"

#include <curl/curl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char help[] =
    "usage: deepmoe top [--url URL] [--interval S] [--count N] [--once]\n\n"
    "A live terminal view of a deepmoe (or Triton) server's Prometheus metrics, per model:\n"
    "requests/s (ok and failed), the request latency p50/p90/p99, requests waiting in the\n"
    "queue, the batch sizes the dynamic batcher formed (mean and a histogram), queue and\n"
    "compute time per request, expert utilization and a load bar per expert and layer,\n"
    "and the server's memory and cold start. Rates are over the last interval (the first\n"
    "frame: since the server started). q or Ctrl-C quits.\n\n"
    "  --url URL       the metrics endpoint (http://127.0.0.1:8002/metrics)\n"
    "  --interval S    seconds between refreshes (1)\n"
    "  --count N       stop after N frames (0 = until q)\n"
    "  --once          one frame of plain text, no screen control (scripts, logs)\n";

typedef struct fetch_buf { char *p; size_t n, cap; } fetch_buf;

static size_t on_data(char *d, size_t sz, size_t nm, void *u)
{
    fetch_buf *b = u;
    size_t n = sz * nm;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n + 1) cap *= 2;
        if (cap > (64u << 20)) return 0;   /* a metrics page over 64 MiB is not one */
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

/* GET url into *out; 0 ok, else a message in msg. */
static int fetch(CURL *h, const char *url, dm_prom *out, char *msg, size_t cap)
{
    fetch_buf b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    int ret = -1;
    if (rc != CURLE_OK) snprintf(msg, cap, "%s: %s", url, curl_easy_strerror(rc));
    else if (code != 200) snprintf(msg, cap, "%s: HTTP %ld (is it the server's --metrics-port?)", url, code);
    else {
        dm_error err;
        if (dm_prom_parse(b.p ? b.p : "", b.n, out, &err)) snprintf(msg, cap, "%s: %s", url, err.msg);
        else ret = 0;
    }
    free(b.p);
    return ret;
}

static double nz(double v) { return isfinite(v) ? v : 0; }

/* name{model=m,...} now and its increase since prev (a counter), per second over dt */
static double rate(const dm_prom *now, const dm_prom *prev, const char *name, const char *match, double dt)
{
    double a = nz(dm_prom_sum(now, name, match));
    if (!prev || dt <= 0) return a;
    double d = a - nz(dm_prom_sum(prev, name, match));
    return d < 0 ? a / dt : d / dt;   /* a restarted server: its totals start again */
}

static void bar(char *out, double share, int width)
{
    int n = (int)lround(share * width);
    n = n < 0 ? 0 : n > width ? width : n;
    for (int i = 0; i < width; i++) out[i] = i < n ? '#' : '.';
    out[width] = 0;
}

static void frame(FILE *o, const char *url, const dm_prom *now, const dm_prom *prev, double dt, double interval, int plain)
{
    char ts[32];
    time_t t = time(NULL);
    strftime(ts, sizeof ts, "%H:%M:%S", localtime(&t));
    if (!plain) fputs("\x1b[H\x1b[2J", o);
    fprintf(o, "deepmoe top  %s  %s  (every %.1f s%s)\n\n", url, ts, interval, plain ? "" : "; q quits");
    const char *per = prev ? "/s" : " total";
    /* each model once: the models of nv_inference_count */
    for (int i = 0; i < now->n; i++) {
        const dm_prom_sample *s = &now->s[i];
        if (strcmp(s->name, "nv_inference_count")) continue;
        char model[128], version[32], m[300];
        if (dm_prom_label(s, "model", model, sizeof model)) continue;
        if (dm_prom_label(s, "version", version, sizeof version)) version[0] = 0;
        snprintf(m, sizeof m, "model=%s%s%s", model, version[0] ? ",version=" : "", version);
        double ok = rate(now, prev, "nv_inference_request_success", m, dt);
        double bad = rate(now, prev, "nv_inference_request_failure", m, dt);
        double rows = rate(now, prev, "nv_inference_count", m, dt), execs = rate(now, prev, "nv_inference_exec_count", m, dt);
        double qus = rate(now, prev, "nv_inference_queue_duration_us", m, dt);
        double cus = rate(now, prev, "nv_inference_compute_infer_duration_us", m, dt);
        char q50[320], q90[320], q99[320];
        snprintf(q50, sizeof q50, "%s,quantile=0.5", m);
        snprintf(q90, sizeof q90, "%s,quantile=0.9", m);
        snprintf(q99, sizeof q99, "%s,quantile=0.99", m);
        fprintf(o, "%s (version %s)\n", model, version[0] ? version : "-");
        fprintf(o, "  requests  %10.0f%s ok   %6.0f%s failed   inferences %.0f%s\n", ok, per, bad, per, rows, per);
        fprintf(o, "  latency   p50 %.0f us   p90 %.0f us   p99 %.0f us  (recent requests)\n",
                nz(dm_prom_sum(now, "nv_inference_request_summary_us", q50)),
                nz(dm_prom_sum(now, "nv_inference_request_summary_us", q90)),
                nz(dm_prom_sum(now, "nv_inference_request_summary_us", q99)));
        fprintf(o, "  queue     %.0f waiting   queue %.1f us/request   compute %.1f us/request\n",
                nz(dm_prom_sum(now, "nv_inference_pending_request_count", m)), ok > 0 ? qus / ok : 0.0,
                ok > 0 ? cus / ok : 0.0);
        /* batch sizes: the histogram's increase, bucket by bucket */
        fprintf(o, "  batches   %.0f%s executions, mean %.1f rows  ", execs, per, execs > 0 ? rows / execs : 0.0);
        static const char *const le[] = {"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "+Inf"};
        double below = 0, total = rate(now, prev, "deepmoe_inference_batch_size_count", m, dt);
        for (size_t k = 0; k < sizeof le / sizeof le[0] && total > 0; k++) {
            char mb[340];
            snprintf(mb, sizeof mb, "%s,le=%s", m, le[k]);
            double c = rate(now, prev, "deepmoe_inference_batch_size_bucket", mb, dt);
            if (c - below > 0) fprintf(o, " <=%s:%.0f%%", le[k], 100 * (c - below) / total);
            below = c;
        }
        fprintf(o, "\n");
        double util = dm_prom_sum(now, "deepmoe_expert_utilization", m);
        if (isfinite(util)) fprintf(o, "  experts   utilization %.3f since start (mean/max load; the seed asks > 0.85)\n", util);
        for (int layer = 0; layer < 1024; layer++) {
            char ml[340];
            snprintf(ml, sizeof ml, "%s,layer=%d", m, layer);
            double sum = rate(now, prev, "deepmoe_expert_routed_rows_total", ml, dt);
            if (!isfinite(dm_prom_sum(now, "deepmoe_expert_routed_rows_total", ml))) break;
            fprintf(o, "  layer %d load%s\n", layer, prev ? " (last interval)" : " (since start)");
            for (int e = 0; e < 4096; e++) {
                char me[360];
                snprintf(me, sizeof me, "%s,expert=%d", ml, e);
                if (!isfinite(dm_prom_sum(now, "deepmoe_expert_routed_rows_total", me))) break;
                double share = sum > 0 ? rate(now, prev, "deepmoe_expert_routed_rows_total", me, dt) / sum : 0;
                char b[41];
                bar(b, share, 40);
                fprintf(o, "    e%-3d %s %5.1f%%\n", e, b, 100 * share);
            }
        }
        fprintf(o, "\n");
    }
    double rss = dm_prom_sum(now, "deepmoe_process_resident_memory_bytes", NULL);
    double peak = dm_prom_sum(now, "deepmoe_process_resident_memory_peak_bytes", NULL);
    double cold = dm_prom_sum(now, "deepmoe_cold_start_seconds", NULL);
    if (isfinite(rss)) fprintf(o, "memory    RSS %.1f MiB (peak %.1f MiB)", rss / 1048576, nz(peak) / 1048576);
    if (isfinite(cold)) fprintf(o, "   cold start %.1f ms", 1e3 * cold);
    fprintf(o, "\n");
    fflush(o);
}

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

int cmd_top(int argc, char **argv)
{
    static const struct option lo[] = {
        {"url", required_argument, 0, 'u'}, {"interval", required_argument, 0, 'i'}, {"count", required_argument, 0, 'n'},
        {"once", no_argument, 0, '1'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *url = "http://127.0.0.1:8002/metrics";
    float interval = 1;
    int count = 0, once = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'u': url = optarg; break;
        case 'i':
            if (cli_float(optarg, &interval) || interval < 0.05f || interval > 3600)
                return cli_usage("top", "--interval '%s' must be seconds in 0.05..3600", optarg);
            break;
        case 'n': if (cli_int(optarg, 0, 1 << 30, &count)) return cli_usage("top", "--count '%s' must be >= 0", optarg); break;
        case '1': once = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("top", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("top", "unexpected argument '%s'", argv[optind]);
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) { fprintf(stderr, "deepmoe top: libcurl failed to start\n"); return 1; }
    CURL *h = curl_easy_init();
    if (!h) { curl_global_cleanup(); fprintf(stderr, "deepmoe top: libcurl failed to start\n"); return 1; }
    int tty = !once && isatty(STDIN_FILENO);
    struct termios saved;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {   /* keys without Enter, not echoed */
        struct termios raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty = 0;
    }
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    dm_prom prev = {0}, now = {0};
    double t_prev = 0;
    int rc = 0, frames = 0, have_prev = 0;
    char msg[600];
    while (!stop) {
        double t = cli_now();
        if (fetch(h, url, &now, msg, sizeof msg)) {
            fprintf(stderr, "deepmoe top: %s\n", msg);
            rc = 1;
            break;
        }
        frame(stdout, url, &now, have_prev ? &prev : NULL, t - t_prev, interval, once);
        dm_prom_free(&prev);
        prev = now;
        now = (dm_prom){0};
        have_prev = 1;
        t_prev = t;
        if (once || (count && ++frames >= count)) break;
        /* wait out the interval; q quits */
        double until = t + interval;
        while (!stop) {
            double left = until - cli_now();
            if (left <= 0) break;
            struct pollfd pf = {.fd = STDIN_FILENO, .events = POLLIN};
            int r = poll(&pf, tty ? 1 : 0, (int)(left * 1000) + 1);
            if (r > 0 && tty) {
                char c;
                if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) stop = 1;
            }
        }
    }
    if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    dm_prom_free(&prev);
    dm_prom_free(&now);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return rc;
}
