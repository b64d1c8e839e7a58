/* metrics.h - what the server counts and how it reports it: per served model
 * version, the requests refused before its scheduler, the time of its last
 * inference and a ring of recent request durations (the latency summaries);
 * and the Prometheus text of GET :metrics_port/metrics over every loaded model
 * (these counters, the scheduler's statistics, expert routing, process memory,
 * cold start). The HTTP endpoints record; this file counts and renders. */
#ifndef DM_SERVE_METRICS_H
#define DM_SERVE_METRICS_H

#include "deepmoe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define DM_METRICS_LAT_RING 8192  /* request durations kept for the p50/p90/p99 summaries */

/* The counters of one served model version. */
typedef struct dm_metrics {
    _Atomic uint64_t fail_other;  /* failures before the scheduler (bad requests) */
    _Atomic int64_t last_ms;      /* wall clock (ms since the epoch) of the last inference; 0 = none */
    pthread_mutex_t lat_mu;       /* guards the ring */
    uint32_t lat_us[DM_METRICS_LAT_RING];
    uint64_t lat_n;               /* durations recorded in all */
} dm_metrics;

void dm_metrics_init(dm_metrics *m);
void dm_metrics_destroy(dm_metrics *m);
/* A request refused before it reached the scheduler. */
void dm_metrics_failed(dm_metrics *m);
/* An inference answered now. */
void dm_metrics_inferred(dm_metrics *m);
/* One inference request's duration in seconds (answered or refused). */
void dm_metrics_duration(dm_metrics *m, double seconds);

/* Monotonic seconds: the clock of every duration the server measures. */
double dm_metrics_now(void);

struct dm_repository;
/* The Prometheus text (format 0.0.4) of every model of r, Triton's nv_*
 * metrics first; cold_start_s: seconds from server start to ready. malloc'd
 * (*len bytes, at most 1 MiB: truncated beyond), NULL on OOM. The caller keeps
 * r from changing meanwhile. */
char *dm_metrics_text(const struct dm_repository *r, double cold_start_s, size_t *len);

#endif
