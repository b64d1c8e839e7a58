/* server.h - the Triton-compatible HTTP/REST server (KServe v2 + Triton's
 * extensions) over a model repository: one scheduler (dynamic batcher + model
 * instances) per model, libmicrohttpd for HTTP, jansson for JSON. */
#ifndef DM_SERVER_H
#define DM_SERVER_H

#include "deepmoe.h"

typedef struct dm_server_config {
    const char *repository;   /* DIR/<model>/config.pbtxt, DIR/<model>/<version>/model.safetensors */
    const char *host;         /* "127.0.0.1" */
    int http_port;            /* 8000; 0 = any free port */
    int metrics_port;         /* 8002; 0 = any free port; -1 = no metrics endpoint */
    int threads;              /* threads per model instance (>= 1) */
    size_t max_body;          /* largest request body in bytes (413 beyond) */
} dm_server_config;

typedef struct dm_server dm_server;

/* Loads every model of the repository and starts listening. */
dm_status dm_server_start(const dm_server_config *c, dm_server **out, dm_error *err);
int dm_server_http_port(const dm_server *s);
int dm_server_metrics_port(const dm_server *s);
/* Stops accepting, finishes the requests in flight, frees everything. */
void dm_server_stop(dm_server *s);

#endif
