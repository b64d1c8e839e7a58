/* server.c - the Triton-compatible server (deepmoe/serve.h): the owner that
 * wires the parts together. It loads the model repository (repository.c),
 * starts the HTTP daemons of the /v2 endpoints and of /metrics (http.c) over
 * it, and takes them down in order. Request handling, batching and counting
 * live in http.c, sched.c and metrics.c. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE   /* pthread_rwlockattr_setkind_np */
#endif
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
    dm_http_listener *api, *metrics;
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
    o->http_threads = 2;
    o->max_connections = 20000;
    o->max_connections_per_client = 0;
    o->max_header = 32u << 10;
    o->max_buffered = 256u << 20;
    o->idle_timeout_s = 30;
    o->request_timeout_s = 30;
    o->min_rate = 1024;
    o->shutdown_timeout_s = 5;
}

static dm_status check_opts(const dm_server_opts *o, dm_error *err)
{
    if (o->http_threads < 1 || o->http_threads > 256)
        return dm_fail(err, DM_ERR_ARG, "http_threads %d must be in 1..256", o->http_threads);
    if (o->max_connections < 1) return dm_fail(err, DM_ERR_ARG, "max_connections %d must be >= 1", o->max_connections);
    if (o->max_connections_per_client < 0)
        return dm_fail(err, DM_ERR_ARG, "max_connections_per_client %d must be >= 0", o->max_connections_per_client);
    if (o->max_header < 1024) return dm_fail(err, DM_ERR_ARG, "max_header %zu must be >= 1024 bytes", o->max_header);
    if (o->max_body < 1024) return dm_fail(err, DM_ERR_ARG, "max_body %zu must be >= 1024 bytes", o->max_body);
    if (o->max_buffered < o->max_body)
        return dm_fail(err, DM_ERR_ARG, "max_buffered %zu must be at least max_body %zu", o->max_buffered, o->max_body);
    if (!(o->idle_timeout_s >= 1)) return dm_fail(err, DM_ERR_ARG, "idle timeout %g s must be >= 1", o->idle_timeout_s);
    if (!(o->request_timeout_s >= 0) || !(o->min_rate >= 0) || !(o->shutdown_timeout_s >= 0))
        return dm_fail(err, DM_ERR_ARG, "request timeout, minimum rate and shutdown timeout must be >= 0");
    return DM_OK;
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
    dm_status cs = check_opts(o, err);
    if (cs) return cs;
    dm_server *s = calloc(1, sizeof *s);
    if (!s) return dm_fail(err, DM_ERR_NOMEM, "server: out of memory");
    dm_http *h = &s->http;
    h->start_s = dm_metrics_now();
    s->opts = *o;
    /* the loops hold it shared over every pass, back to back under load: a
     * load or unload waiting for it must stop new readers, or it could wait
     * as long as the load lasts (glibc prefers readers by default) */
    pthread_rwlockattr_t la;
    pthread_rwlockattr_init(&la);
#if defined(__GLIBC__)
    pthread_rwlockattr_setkind_np(&la, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&h->lock, &la);
    pthread_rwlockattr_destroy(&la);
    if (!s->opts.host) s->opts.host = "127.0.0.1";
    h->lim = (dm_http_limits){
        .threads = o->http_threads,
        .max_connections = o->max_connections,
        .max_connections_per_client = o->max_connections_per_client,
        .max_header = o->max_header,
        .max_body = o->max_body,
        .max_buffered = o->max_buffered,
        .idle_timeout_s = o->idle_timeout_s,
        .request_timeout_s = o->request_timeout_s,
        .min_rate = o->min_rate,
        .shutdown_timeout_s = o->shutdown_timeout_s,
    };
    h->repo.dir = s->opts.repository;
    h->repo.threads = s->opts.threads > 0 ? s->opts.threads : 1;
    dm_status st = dm_repository_open(&h->repo, err);
    if (!st) st = dm_http_housekeeping_start(h, err);
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
    /* stop accepting, let complete requests finish (up to the shutdown
     * timeout), finish what the schedulers still hold (so no connection stays
     * suspended), then close every connection */
    dm_http_quiesce(&s->http, s->api);
    pthread_rwlock_wrlock(&s->http.lock);
    dm_repository_close(&s->http.repo);
    pthread_rwlock_unlock(&s->http.lock);
    dm_http_stop(&s->http, s->api, s->metrics);
    dm_http_housekeeping_stop(&s->http);
    pthread_rwlock_destroy(&s->http.lock);
    free(s);
}
