/* deepmoe/serve.h - serving deepmoe models: the Triton-compatible HTTP/REST
 * server (KServe v2 with Triton's extensions, binary tensors, Prometheus
 * metrics) over a model repository, and export of a model into one.
 *
 * A model repository is a directory holding, for each model,
 * DIR/<model>/config.pbtxt (Triton's model configuration) and
 * DIR/<model>/<version>/model.safetensors. `deepmoe export` (dm_export_model)
 * writes one; `deepmoe serve` (dm_server_start) serves it. Endpoints, the
 * config subset accepted and the batching rules: docs/cli.md, docs/architecture.md.
 *
 * The option structs carry their own size: fill them with the *_default
 * function of the header you compile against, then set fields; a struct
 * from another version of the header is refused with DM_ERR_ARG. Included
 * by deepmoe.h. */
#ifndef DEEPMOE_SERVE_H
#define DEEPMOE_SERVE_H

#include "deepmoe.h"   /* dm_status, dm_error, dm_model, DM_API */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- server */

typedef struct dm_server_opts {
    size_t struct_size;       /* sizeof(dm_server_opts), set by dm_server_opts_default */
    const char *repository;   /* the model repository (required); read at start and on load requests */
    const char *host;         /* IPv4 address to listen on ("127.0.0.1") */
    int http_port;            /* 8000; 0 = any free port (see dm_server_http_port) */
    int metrics_port;         /* 8002; 0 = any free port; -1 = no metrics endpoint */
    int threads;              /* threads per model instance (1) */
    size_t max_body;          /* largest request body in bytes; larger ones get 413 (64 MiB) */
    /* connections and limits (docs/serving.md "Limits") */
    int http_threads;         /* event-loop threads serving the connections (2) */
    int max_connections;      /* open at once (20000; capped by the process's file limit less 64) */
    int max_connections_per_client; /* per client IP address (0 = no limit) */
    size_t max_header;        /* bytes of request line + headers (32 KiB); larger: 431 */
    size_t max_buffered;      /* request body bytes buffered over all connections (256 MiB); beyond: closed */
    double idle_timeout_s;    /* an idle connection is closed after this (30) */
    double request_timeout_s; /* a request's body must arrive within this of its headers (30; 0 = none) */
    double min_rate;          /* bytes/s floor of an upload after its first second, else dropped (1024; 0 = none) */
    double shutdown_timeout_s;/* dm_server_stop: how long complete requests may still finish (5) */
} dm_server_opts;

typedef struct dm_server dm_server;

/* The defaults above, struct_size set. */
DM_API void dm_server_opts_default(dm_server_opts *o);
/* Loads every model of the repository and starts listening; requests are
 * served on the server's own threads until dm_server_stop. The strings of o
 * must outlive the server. */
DM_API dm_status dm_server_start(const dm_server_opts *o, dm_server **out, dm_error *err);
/* The ports bound (the ones asked for, or the free ones chosen for 0). */
DM_API int dm_server_http_port(const dm_server *s);
DM_API int dm_server_metrics_port(const dm_server *s);
/* Stops accepting, lets the requests whose body is complete finish (up to
 * shutdown_timeout_s; unfinished uploads are dropped), frees everything. */
DM_API void dm_server_stop(dm_server *s);

/* ---------------------------------------------------------------- export */

typedef struct dm_export_opts {
    size_t struct_size;       /* sizeof(dm_export_opts), set by dm_export_opts_default */
    const char *repository;   /* the model repository (required; created if missing) */
    const char *name;         /* the model's name and directory ("moe_model"; see dm_export_name_ok) */
    int max_batch_size;       /* largest batch the dynamic batcher forms (64) */
    int version;              /* version directory, >= 1 (1) */
} dm_export_opts;

/* The defaults above, struct_size set. */
DM_API void dm_export_opts_default(dm_export_opts *o);
/* 1 if name can name a model in a repository: 1 to 127 bytes, no '/', '\\',
 * blanks or quotes. */
DM_API int dm_export_name_ok(const char *name);
/* Writes REPO/NAME/VERSION/model.safetensors and REPO/NAME/config.pbtxt (the
 * directories created as needed): input "input" and output "output" (FP32,
 * dims [in] and [out]), max_batch_size with dynamic batching preferring it and
 * no queue delay, one CPU instance, plus the optional outputs
 * "routing_experts" (INT32) and "routing_weights" (FP32), [layers * k] each:
 * the routing decision of every MoE layer. */
DM_API dm_status dm_export_model(const dm_model *m, const dm_export_opts *o, dm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DEEPMOE_SERVE_H */
