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

static const char help[] =
    "usage: deepmoe serve --model-repository DIR [--http-port 8000] [--metrics-port 8002]\n"
    "                     [--host 127.0.0.1] [--threads N] [--max-body BYTES]\n\n"
    "Serves every model of DIR (DIR/<model>/config.pbtxt and DIR/<model>/<version>/\n"
    "model.safetensors, as `deepmoe export` writes them) over Triton's HTTP/REST\n"
    "protocol (KServe v2 with binary tensors), so tritonclient.http code works as is:\n"
    "  curl localhost:8000/v2/models/moe_model\n"
    "  curl -X POST localhost:8000/v2/models/moe_model/infer \\\n"
    "       -d '{\"inputs\":[{\"name\":\"input\",\"shape\":[1,512],\"datatype\":\"FP32\",\"data\":[...]}]}'\n"
    "Prometheus metrics on the metrics port at /metrics. Stops on SIGINT/SIGTERM.\n\n"
    "  --model-repository DIR  the model repository (required)\n"
    "  --http-port N           HTTP port (8000; 0 = any free port, printed)\n"
    "  --metrics-port N        metrics port (8002; 0 = any free port; -1 = none)\n"
    "  --host ADDR             IPv4 address to listen on (127.0.0.1)\n"
    "  --threads N             threads per model instance (1)\n"
    "  --max-body BYTES        largest request body; larger ones get 413 (67108864)\n";

int cmd_serve(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model-repository", required_argument, 0, 'r'}, {"http-port", required_argument, 0, 'p'},
        {"metrics-port", required_argument, 0, 'm'}, {"host", required_argument, 0, 'H'},
        {"threads", required_argument, 0, 't'}, {"max-body", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    dm_server_opts c;
    dm_server_opts_default(&c);
    int oc, v;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'r': c.repository = optarg; break;
        case 'H': c.host = optarg; break;
        case 'p': if (cli_int(optarg, 0, 65535, &c.http_port)) return cli_usage("serve", "--http-port '%s' must be in 0..65535", optarg); break;
        case 'm': if (cli_int(optarg, -1, 65535, &c.metrics_port)) return cli_usage("serve", "--metrics-port '%s' must be in -1..65535", optarg); break;
        case 't': if (cli_int(optarg, 1, 1024, &c.threads)) return cli_usage("serve", "--threads '%s' must be in 1..1024", optarg); break;
        case 'b':
            if (cli_int(optarg, 1024, 1 << 30, &v)) return cli_usage("serve", "--max-body '%s' must be in 1024..1073741824", optarg);
            c.max_body = (size_t)v;
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("serve", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (!c.repository) return cli_usage("serve", "--model-repository is required");
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
    if (dm_server_start(&c, &s, &err)) return cli_error("serve", &err);
    printf("deepmoe serve: ready in %.1f ms; HTTP on %s:%d", 1e3 * (cli_now() - t0), c.host, dm_server_http_port(s));
    if (c.metrics_port >= 0) printf(", metrics on %s:%d/metrics", c.host, dm_server_metrics_port(s));
    printf("\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    printf("deepmoe serve: %s, finishing requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    dm_server_stop(s);
    return 0;
}
