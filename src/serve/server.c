/* server.c - the Triton-compatible server (deepmoe/serve.h): the owner that
 * wires the parts together. It loads the model repository (repository.c),
 * starts the HTTP daemons of the /v2 endpoints and of /metrics (http.c) over
 * it, and takes them down in order. Request handling, batching and counting
 * live in http.c, sched.c and metrics.c. */
#include "deepmoe.h"
#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/repository.h"
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

struct dm_server {
    dm_server_opts opts;
    dm_http http;                        /* what the requests see */
    struct MHD_Daemon *api, *metrics;
    int http_port, metrics_port;
};

void dm_server_opts_default(dm_server_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->host = "127.0.0.1";
    o->http_port = 8000;
    o->metrics_port = 8002;
    o->threads = 1;
    o->max_body = 64u << 20;
}

dm_status dm_server_start(const dm_server_opts *o, dm_server **out, dm_error *err)
{
    if (!out) return dm_fail(err, DM_ERR_ARG, "dm_server_start: NULL argument");
    *out = NULL;
    if (!o) return dm_fail(err, DM_ERR_ARG, "dm_server_start: NULL argument");
    if (o->struct_size != sizeof *o)
        return dm_fail(err, DM_ERR_ARG, "dm_server_start: options of size %zu, expected %zu (fill them with "
                       "dm_server_opts_default)", o->struct_size, sizeof *o);
    if (!o->repository) return dm_fail(err, DM_ERR_ARG, "dm_server_start: no model repository");
    dm_server *s = calloc(1, sizeof *s);
    if (!s) return dm_fail(err, DM_ERR_NOMEM, "server: out of memory");
    dm_http *h = &s->http;
    h->start_s = dm_metrics_now();
    s->opts = *o;
    pthread_rwlock_init(&h->lock, NULL);
    if (!s->opts.host) s->opts.host = "127.0.0.1";
    if (!s->opts.max_body) s->opts.max_body = 64u << 20;
    h->max_body = s->opts.max_body;
    h->repo.dir = s->opts.repository;
    h->repo.threads = s->opts.threads > 0 ? s->opts.threads : 1;
    dm_status st = dm_repository_open(&h->repo, err);
    if (!st) st = dm_http_listen(h, s->opts.host, o->http_port, 0, &s->api, &s->http_port, err);
    if (!st && o->metrics_port >= 0)
        st = dm_http_listen(h, s->opts.host, o->metrics_port, 1, &s->metrics, &s->metrics_port, err);
    if (st) {
        dm_server_stop(s);
        return st;
    }
    h->ready_s = dm_metrics_now();
    *out = s;
    return DM_OK;
}

int dm_server_http_port(const dm_server *s) { return s->http_port; }
int dm_server_metrics_port(const dm_server *s) { return s->metrics_port; }

void dm_server_stop(dm_server *s)
{
    if (!s) return;
    dm_http_stop(&s->http, s->api, s->metrics);
    dm_repository_close(&s->http.repo);
    pthread_rwlock_destroy(&s->http.lock);
    free(s);
}
