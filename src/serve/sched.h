/* sched.h - the dynamic batcher of the Triton-compatible server: a queue of
 * requests and model instances (each a dm_ctx + dm_pool + thread) that form
 * batches from it by Triton's rules (shared/research/serving.md section 4)
 * and run them in parallel: a free instance takes what is queued, so the
 * requests that arrive while a batch runs make the next one. A submitter of
 * several requests at once (dm_sched_submit_many) runs their batch itself
 * when an instance is idle.
 *
 * Thread safety: the dm_sched_submit* functions and dm_sched_stats_get may be called from
 * any number of threads at once. dm_sched_free must not race with new calls
 * (callers still blocked inside dm_sched_submit are finished first). */
#ifndef DM_SERVE_SCHED_H
#define DM_SERVE_SCHED_H

#include "deepmoe.h"
#include <stdint.h>

typedef struct dm_sched_config {
    int max_batch_size;          /* >= 1: most rows in one execution */
    int dynamic_batching;        /* 0: each request runs alone, FIFO, on any free instance */
    int n_preferred;             /* 0..32 */
    int preferred[32];           /* preferred batch sizes in [1, max_batch_size]; empty = [max_batch_size] */
    int64_t max_queue_delay_us;  /* >= 0: how long the oldest request may wait for a better batch */
    int64_t max_queue_size;      /* requests; 0 = unlimited */
    int64_t default_timeout_us;  /* 0 = none; expiry is checked only while queued */
    int allow_timeout_override;  /* a request's timeout_us applies if 0 < it < default_timeout_us */
    int instances;               /* model instances running batches in parallel (>= 1) */
    int threads_per_instance;    /* dm_pool size of each instance (>= 1) */
    const char *name;            /* model name used in messages; NULL = "model" (copied) */
} dm_sched_config;

typedef struct dm_sched dm_sched;

typedef struct dm_sched_request {
    const float *x;              /* [rows, in] */
    int64_t rows;                /* >= 1, <= max_batch_size */
    float *y;                    /* [rows, out] written on success */
    int32_t *experts;            /* [n_layers, rows, k] or NULL: routing decision */
    float *weights;              /* same */
    int64_t timeout_us;          /* request parameter, 0 = none */
    /* results */
    dm_status status;            /* DM_OK; DM_ERR_ARG when refused; dm_forward's status when it failed */
    char error[256];             /* Triton's message: "Exceeds maximum queue size", "Request timeout expired", ... */
    int64_t queue_ns, compute_ns;/* time queued; time of the batch's execution (gather, forward, scatter) */
    int batch_rows;              /* rows of the batch this request ran in (0 if it did not run) */
} dm_sched_request;

/* dm_sched_submit's result. */
enum {
    DM_SCHED_OK = 0,
    DM_SCHED_QUEUE_FULL,         /* "Exceeds maximum queue size" (Triton: UNAVAILABLE, HTTP 503) */
    DM_SCHED_TIMEOUT,            /* "Request timeout expired" (Triton: UNAVAILABLE, HTTP 503) */
    DM_SCHED_TOO_BIG,            /* "inference request batch-size must be <= N for 'model'" (HTTP 400) */
    DM_SCHED_FAILED,             /* bad request (NULL buffers, rows < 1) or dm_forward failed (NaN input...) */
    DM_SCHED_SHUTDOWN,           /* the scheduler is being freed */
};

/* Checks the config, creates the instances and starts the threads. The model
 * must outlive the scheduler. */
dm_status dm_sched_create(const dm_model *m, const dm_sched_config *c, dm_sched **out, dm_error *err);

/* Blocks until the request ran or was refused; returns a DM_SCHED_* value and
 * fills r's result fields. The request's buffers must stay valid until then. */
int dm_sched_submit(dm_sched *s, dm_sched_request *r);

#define DM_SCHED_MAX_ROUTE 4096   /* layers x experts counted in the stats */

/* Non-blocking submit: DM_SCHED_OK (0) when queued, and then done(arg, result)
 * is called exactly once from a scheduler thread when the request finished
 * (result is a DM_SCHED_* code, r is filled); any other return value is an
 * immediate refusal (r->error set) and done is not called. r must stay valid
 * until done runs. */
int dm_sched_submit_async(dm_sched *s, dm_sched_request *r, void (*done)(void *arg, int result), void *arg);

/* Submits n requests at once (as n dm_sched_submit_async calls; rc[i] is
 * each one's return value, and done(arg[i], result) comes for each queued
 * one), then, when an instance is idle and the queue's rules send a batch
 * now, runs that batch on the calling thread: its callbacks are called
 * before this returns. held(arg[i]) (if not NULL) is called, under the
 * scheduler's lock, for each queued request that this call does not run,
 * before any instance can take it: a request that runs here needs no
 * hand-off, one that waits can be parked. An event loop calls it once per
 * pass with the requests the pass read, so what arrived together runs
 * together without a thread hand-off. n may exceed max_batch_size: the
 * requests are taken 64 at a time. */
void dm_sched_submit_many(dm_sched *s, dm_sched_request **r, void **arg, int n, void (*done)(void *arg, int result),
                          void (*held)(void *arg), int *rc);


typedef struct dm_sched_stats {
    uint64_t success, fail;      /* requests (fail counts every refusal too) */
    uint64_t inference_count;    /* rows of successful requests */
    uint64_t execution_count;    /* batches executed */
    uint64_t queue_ns, compute_ns; /* summed over successful requests */
    uint64_t batch_count[1025];  /* executions per batch size (sizes > 1024 counted at 1024) */
    int64_t pending;             /* requests queued now */
    int route_layers, route_experts;     /* shape of expert_rows */
    uint64_t expert_rows[DM_SCHED_MAX_ROUTE]; /* [layer * E + e]: (row, slot) assignments routed to e */
} dm_sched_stats;

void dm_sched_stats_get(dm_sched *s, dm_sched_stats *out);

/* Stops taking requests, finishes the queued and running ones, joins threads. */
void dm_sched_free(dm_sched *s);

#endif
