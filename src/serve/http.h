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

struct MHD_Daemon;

typedef struct dm_http {
    dm_repository repo;        /* the loaded models */
    pthread_rwlock_t lock;     /* requests hold it shared; load and unload exclusively, so a model
                                  is never replaced or freed under a request that uses it */
    size_t max_body;           /* largest request body; 413 beyond */
    _Atomic int in_flight;     /* requests between their first byte and their completion */
    double start_s, ready_s;   /* dm_metrics_now() at server start and once listening */
} dm_http;

/* Listens on host:port (0: any free port; *bound = the port bound) with the
 * /v2 endpoints, or with metrics = 1 the /metrics endpoint. Requests run on a
 * thread per connection and read h, which must outlive the daemon. */
dm_status dm_http_listen(dm_http *h, const char *host, int port, int metrics, struct MHD_Daemon **out, int *bound,
                         dm_error *err);
/* Stops the /v2 daemon gracefully (stops accepting, lets the requests in
 * flight finish and be answered, up to 60 s, then closes the connections),
 * then the metrics daemon. Either may be NULL. */
void dm_http_stop(dm_http *h, struct MHD_Daemon *api, struct MHD_Daemon *metrics);

#endif
