/* cmd_serve.c - deepmoe serve: the Triton-compatible HTTP server over a model
 * repository, until SIGINT or SIGTERM (requests in flight finish first). */
#include "deepmoe.h"
#include "cli.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char help[] =
    "usage: deepmoe serve --model-repository DIR [--http-port 8000] [--metrics-port 8002]\n"
    "                     [--host 127.0.0.1] [--threads N] [limits...]\n\n"
    "Serves every model of DIR (DIR/<model>/config.pbtxt and DIR/<model>/<version>/\n"
    "model.safetensors, as `deepmoe export` writes them) over Triton's HTTP/REST\n"
    "protocol (KServe v2 with binary tensors), so tritonclient.http code works as is:\n"
    "  curl localhost:8000/v2/models/moe_model\n"
    "  curl -X POST localhost:8000/v2/models/moe_model/infer \\\n"
    "       -d '{\"inputs\":[{\"name\":\"input\",\"shape\":[1,512],\"datatype\":\"FP32\",\"data\":[...]}]}'\n"
    "Prometheus metrics on the metrics port at /metrics. Connections are served by a few\n"
    "epoll threads; a request waiting for its batch holds no thread. SIGINT/SIGTERM stop it:\n"
    "complete requests finish (up to --shutdown-timeout), unfinished uploads are dropped.\n\n"
    "  --model-repository DIR  the model repository (required)\n"
    "  --http-port N           HTTP port (8000; 0 = any free port, printed)\n"
    "  --metrics-port N        metrics port (8002; 0 = any free port; -1 = none)\n"
    "  --host ADDR             IPv4 address to listen on (127.0.0.1)\n"
    "  --threads N             threads per model instance (1)\n"
    "  --http-threads N        event-loop threads for the connections (2)\n"
    "limits (docs/serving.md):\n"
    "  --max-connections N     connections open at once (20000; the file limit is raised to\n"
    "                          its hard limit, and N is capped by it)\n"
    "  --max-connections-per-client N  per client IP address (0 = no limit)\n"
    "  --max-header BYTES      request line + headers (32768); larger: 431\n"
    "  --max-body BYTES        one request body (67108864); larger: 413\n"
    "  --max-buffered BYTES    request bodies buffered over all connections (268435456);\n"
    "                          an upload that would pass it is closed\n"
    "  --idle-timeout S        close a connection idle this long (30)\n"
    "  --request-timeout S     a request's body must arrive within S of its headers (30; 0 = none)\n"
    "  --min-rate BYTES        drop an upload slower than this many bytes/s after its first\n"
    "                          second (1024; 0 = none)\n"
    "  --shutdown-timeout S    on SIGTERM, how long complete requests may still finish (5)\n"
    CLI_PROFILE_HELP;

static int number_arg(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo) || !(v <= hi)) return -1;
    *out = v;
    return 0;
}

static int bytes_arg(const char *s, long lo, long hi, size_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (size_t)v;
    return 0;
}

/* A server holds a file per connection: the soft limit goes up to the hard one. */
static void raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int cmd_serve(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model-repository", required_argument, 0, 'r'}, {"http-port", required_argument, 0, 'p'},
        {"metrics-port", required_argument, 0, 'm'}, {"host", required_argument, 0, 'H'},
        {"threads", required_argument, 0, 't'}, {"max-body", required_argument, 0, 'b'},
        {"http-threads", required_argument, 0, 'T'}, {"max-connections", required_argument, 0, 'C'},
        {"max-connections-per-client", required_argument, 0, 'P'}, {"max-header", required_argument, 0, 'E'},
        {"max-buffered", required_argument, 0, 'B'}, {"idle-timeout", required_argument, 0, 'I'},
        {"request-timeout", required_argument, 0, 'R'}, {"min-rate", required_argument, 0, 'M'},
        {"shutdown-timeout", required_argument, 0, 'S'}, {"profile", required_argument, 0, CLI_PROFILE_OPT},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    dm_server_opts c;
    dm_server_opts_default(&c);
    int oc, buffered_set = 0;
    const char *profile = NULL;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'r': c.repository = optarg; break;
        case 'H': c.host = optarg; break;
        case 'p': if (cli_int(optarg, 0, 65535, &c.http_port)) return cli_usage("serve", "--http-port '%s' must be in 0..65535", optarg); break;
        case 'm': if (cli_int(optarg, -1, 65535, &c.metrics_port)) return cli_usage("serve", "--metrics-port '%s' must be in -1..65535", optarg); break;
        case 't': if (cli_int(optarg, 1, 1024, &c.threads)) return cli_usage("serve", "--threads '%s' must be in 1..1024", optarg); break;
        case 'T': if (cli_int(optarg, 1, 256, &c.http_threads)) return cli_usage("serve", "--http-threads '%s' must be in 1..256", optarg); break;
        case 'C': if (cli_int(optarg, 1, 1 << 24, &c.max_connections)) return cli_usage("serve", "--max-connections '%s' must be in 1..16777216", optarg); break;
        case 'P': if (cli_int(optarg, 0, 1 << 24, &c.max_connections_per_client)) return cli_usage("serve", "--max-connections-per-client '%s' must be in 0..16777216", optarg); break;
        case 'b':
            if (bytes_arg(optarg, 1024, 1L << 30, &c.max_body)) return cli_usage("serve", "--max-body '%s' must be in 1024..1073741824", optarg);
            break;
        case 'E': if (bytes_arg(optarg, 1024, 1L << 24, &c.max_header)) return cli_usage("serve", "--max-header '%s' must be in 1024..16777216", optarg); break;
        case 'B':
            if (bytes_arg(optarg, 1024, 1L << 40, &c.max_buffered)) return cli_usage("serve", "--max-buffered '%s' must be in 1024..2^40", optarg);
            buffered_set = 1;
            break;
        case 'I': if (number_arg(optarg, 1, 86400, &c.idle_timeout_s)) return cli_usage("serve", "--idle-timeout '%s' must be a number of seconds in 1..86400", optarg); break;
        case 'R': if (number_arg(optarg, 0, 86400, &c.request_timeout_s)) return cli_usage("serve", "--request-timeout '%s' must be a number of seconds in 0..86400", optarg); break;
        case 'S': if (number_arg(optarg, 0, 86400, &c.shutdown_timeout_s)) return cli_usage("serve", "--shutdown-timeout '%s' must be a number of seconds in 0..86400", optarg); break;
        case 'M': if (number_arg(optarg, 0, 1e12, &c.min_rate)) return cli_usage("serve", "--min-rate '%s' must be a number of bytes/s in 0..1e12", optarg); break;
        case CLI_PROFILE_OPT: profile = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("serve", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (!c.repository) return cli_usage("serve", "--model-repository is required");
    if (!buffered_set && c.max_buffered < c.max_body) c.max_buffered = c.max_body;   /* room for one body at least */
    if (c.max_buffered < c.max_body)
        return cli_usage("serve", "--max-buffered %zu must be at least --max-body %zu", c.max_buffered, c.max_body);
    raise_file_limit();
    /* block the stop signals in every thread; the main thread waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    dm_error err;
    dm_server *s;
    double t0 = cli_now();
    int prc = cli_profile_start("serve", profile, 0);
    if (prc) return prc;
    if (dm_server_start(&c, &s, &err)) return cli_profile_stop("serve", profile, NULL, cli_error("serve", &err));
    printf("deepmoe serve: ready in %.1f ms; HTTP on %s:%d", 1e3 * (cli_now() - t0), c.host, dm_server_http_port(s));
    if (c.metrics_port >= 0) printf(", metrics on %s:%d/metrics", c.host, dm_server_metrics_port(s));
    printf("\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    printf("deepmoe serve: %s, finishing requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    dm_server_stop(s);
    return cli_profile_stop("serve", profile, NULL, 0);
}
