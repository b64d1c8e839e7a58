/* http.h - the HTTP endpoints of the Triton-compatible server (KServe v2 +
 * Triton's extensions) over libmicrohttpd, and the /metrics endpoint on its
 * own port. One dm_http is the state every request sees: the loaded models
 * and the lock that keeps them from being replaced under a request. */
#ifndef DM_SERVE_HTTP_H
#define DM_SERVE_HTTP_H

#include "deepmoe.h"
#include "serve/repository.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct dm_http_listener dm_http_listener;
struct http_pass;

/* The server's limits (dm_server_opts has them and their defaults; docs/serving.md "Limits"). */
typedef struct dm_http_limits {
    int threads;                 /* event-loop threads sharing the connections (2) */
    int max_connections;         /* connections open at once (20000; at most the file limit less 64) */
    int max_connections_per_client; /* per client address (0 = no limit) */
    size_t max_header;           /* bytes of a request line and headers (32 KiB); beyond, 431 */
    size_t max_body;             /* bytes of one request body (64 MiB); beyond, 413 */
    size_t max_buffered;         /* body bytes buffered over all connections (256 MiB); beyond, closed */
    double idle_timeout_s;       /* a connection with nothing to do this long is closed (30) */
    double request_timeout_s;    /* a request's upload must end within this of its headers (30; 0 = none) */
    double min_rate;             /* bytes/s: an upload slower than this after its first second is dropped (1024; 0 = none) */
    double shutdown_timeout_s;   /* on stop, complete requests may finish this long (5) */
} dm_http_limits;

typedef struct dm_http {
    dm_repository repo;        /* the loaded models */
    pthread_rwlock_t lock;     /* requests hold it shared; load and unload exclusively, so a model
                                  is never replaced or freed under a request that uses it */
    dm_http_limits lim;
    _Atomic int in_flight;     /* requests whose body is complete and that are not answered yet */
    _Atomic int64_t buffered;  /* body bytes buffered now, over every connection */
    _Atomic int64_t dropped;   /* connections closed for a limit (deadline, rate floor, buffer budget) */
    _Atomic int stopping;      /* set by dm_http_quiesce: new inference requests get 503 */
    _Atomic int64_t finished;  /* requests finished (freed), for the housekeeping thread */
    pthread_t hk;              /* housekeeping: gives freed heap memory back after bursts */
    pthread_mutex_t hk_mu;
    pthread_cond_t hk_cv;
    int hk_stop, hk_started;
    double start_s, ready_s;   /* dm_metrics_now() at server start and once listening */
    dm_http_listener *api;     /* the /v2 endpoints' loops */
    struct http_pass *passes;  /* per event loop of the API: what its pass set aside (http.c) */
    int n_passes;
} dm_http;


/* Listens on host:port (0: any free port; *bound = the port bound) with the
 * /v2 endpoints, or with metrics = 1 the /metrics endpoint, on h->lim.threads
 * event loops (http_loop.h; one for metrics). h must outlive the listener. */
dm_status dm_http_listen(dm_http *h, const char *host, int port, int metrics, dm_http_listener **out, int *bound,
                         dm_error *err);
/* The housekeeping thread (every 2 s with finished requests: malloc_trim, so
 * RSS comes back down after a burst); stop joins it. */
dm_status dm_http_housekeeping_start(dm_http *h, dm_error *err);
void dm_http_housekeeping_stop(dm_http *h);
/* Stops accepting, answers new inference requests 503, and waits up to
 * h->lim.shutdown_timeout_s for the requests whose body is complete. Uploads
 * that have not finished are not waited for. */
void dm_http_quiesce(dm_http *h, dm_http_listener *api);
/* Closes every connection and stops the loops (either may be NULL). The
 * schedulers must have been freed first (no request left suspended). */
void dm_http_stop(dm_http *h, dm_http_listener *api, dm_http_listener *metrics);

#endif
