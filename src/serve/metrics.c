/* metrics.c - the per-model counters and the Prometheus text (metrics.h).
 * Durations go into a fixed ring per model (no allocation on the request
 * path); the summaries sort a copy of it when /metrics is read. */
#include "serve/metrics.h"
#include "serve/repository.h"
#include "serve/sched.h"
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- counters */

void dm_metrics_init(dm_metrics *m) { pthread_mutex_init(&m->lat_mu, NULL); }
void dm_metrics_destroy(dm_metrics *m) { pthread_mutex_destroy(&m->lat_mu); }
void dm_metrics_failed(dm_metrics *m) { atomic_fetch_add(&m->fail_other, 1); }

void dm_metrics_inferred(dm_metrics *m)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&m->last_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void dm_metrics_duration(dm_metrics *m, double seconds)
{
    uint32_t us = (uint32_t)DM_MIN(1e9, seconds * 1e6);
    pthread_mutex_lock(&m->lat_mu);
    m->lat_us[m->lat_n++ % DM_METRICS_LAT_RING] = us;
    pthread_mutex_unlock(&m->lat_mu);
}

double dm_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- Prometheus text */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

char *dm_metrics_text(const dm_repository *r, double cold_start_s, size_t *out_len)
{
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    *out_len = 0;
    if (!out) return NULL;
#define EMIT(...) do { int w_ = snprintf(out + len, cap - len, __VA_ARGS__); if (w_ > 0) len += DM_MIN((size_t)w_, cap - len - 1); } while (0)
    static const char *const help[][3] = {
        {"nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"},
        {"nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes"},
        {"nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)"},
        {"nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)"},
        {"nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting execution per-model."},
        {"nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds (includes cached requests)"},
        {"nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds (includes cached requests)"},
        {"nv_inference_compute_infer_duration_us", "counter", "Cumulative compute inference duration in microseconds (does not include cached requests)"},
    };
    for (size_t h = 0; h < sizeof help / sizeof help[0]; h++) {
        EMIT("# HELP %s %s\n# TYPE %s %s\n", help[h][0], help[h][2], help[h][0], help[h][1]);
        for (int i = 0; i < r->n_models; i++) {
            dm_served_model *sv = r->models[i];
            dm_sched_stats st;
            dm_sched_stats_get(sv->sched, &st);
            double v = 0;
            switch (h) {
            case 0: v = (double)st.success; break;
            case 1: v = (double)(st.fail + atomic_load(&sv->metrics.fail_other)); break;
            case 2: v = (double)st.inference_count; break;
            case 3: v = (double)st.execution_count; break;
            case 4: v = (double)st.pending; break;
            case 5: v = (double)(st.queue_ns + st.compute_ns) / 1000.0; break;
            case 6: v = (double)st.queue_ns / 1000.0; break;
            case 7: v = (double)st.compute_ns / 1000.0; break;
            }
            if (h == 1) EMIT("%s{model=\"%s\",reason=\"REJECTED\",version=\"%lld\"} %.0f\n", help[h][0], sv->name, (long long)sv->version, v);
            else EMIT("%s{model=\"%s\",version=\"%lld\"} %.0f\n", help[h][0], sv->name, (long long)sv->version, v);
        }
    }
    /* request latency summaries over the most recent requests */
    EMIT("# HELP nv_inference_request_summary_us Summary of inference request duration in microseconds (recent requests)\n"
         "# TYPE nv_inference_request_summary_us summary\n");
    for (int i = 0; i < r->n_models; i++) {
        dm_served_model *sv = r->models[i];
        static const double qs[3] = {0.5, 0.9, 0.99};
        uint32_t *tmp = malloc(DM_METRICS_LAT_RING * sizeof *tmp);
        pthread_mutex_lock(&sv->metrics.lat_mu);
        uint64_t n = DM_MIN(sv->metrics.lat_n, (uint64_t)DM_METRICS_LAT_RING), total = sv->metrics.lat_n;
        if (tmp) memcpy(tmp, sv->metrics.lat_us, n * sizeof *tmp);
        pthread_mutex_unlock(&sv->metrics.lat_mu);
        if (tmp && n) {
            qsort(tmp, n, sizeof *tmp, cmp_u32);
            for (int q = 0; q < 3; q++)
                EMIT("nv_inference_request_summary_us{model=\"%s\",version=\"%lld\",quantile=\"%g\"} %u\n", sv->name,
                     (long long)sv->version, qs[q], tmp[(size_t)(qs[q] * (double)(n - 1))]);
        }
        EMIT("nv_inference_request_summary_us_count{model=\"%s\",version=\"%lld\"} %llu\n", sv->name,
             (long long)sv->version, (unsigned long long)total);
        free(tmp);
    }
    /* deepmoe's own: the batch sizes the dynamic batcher formed (a histogram of rows per execution) */
    EMIT("# HELP deepmoe_inference_batch_size Rows per model execution (the batch sizes the dynamic batcher formed)\n"
         "# TYPE deepmoe_inference_batch_size histogram\n");
    for (int i = 0; i < r->n_models; i++) {
        dm_served_model *sv = r->models[i];
        dm_sched_stats *st = malloc(sizeof *st);
        if (!st) continue;
        dm_sched_stats_get(sv->sched, st);
        static const int le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
        uint64_t cum = 0, sum = 0;
        int k = 0;
        for (int b = 0; b <= 1024; b++) {
            sum += (uint64_t)b * st->batch_count[b];
            while (k < (int)(sizeof le / sizeof le[0]) && b > le[k]) {
                EMIT("deepmoe_inference_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"%d\"} %llu\n", sv->name,
                     (long long)sv->version, le[k], (unsigned long long)cum);
                k++;
            }
            cum += st->batch_count[b];
        }
        for (; k < (int)(sizeof le / sizeof le[0]); k++)
            EMIT("deepmoe_inference_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"%d\"} %llu\n", sv->name,
                 (long long)sv->version, le[k], (unsigned long long)cum);
        EMIT("deepmoe_inference_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"+Inf\"} %llu\n"
             "deepmoe_inference_batch_size_sum{model=\"%s\",version=\"%lld\"} %llu\n"
             "deepmoe_inference_batch_size_count{model=\"%s\",version=\"%lld\"} %llu\n",
             sv->name, (long long)sv->version, (unsigned long long)cum, sv->name, (long long)sv->version,
             (unsigned long long)sum, sv->name, (long long)sv->version, (unsigned long long)cum);
        free(st);
    }
    /* deepmoe's own: rows routed per expert and the utilization they give */
    EMIT("# HELP deepmoe_expert_routed_rows_total (row, slot) assignments routed to each expert\n"
         "# TYPE deepmoe_expert_routed_rows_total counter\n");
    double util[DM_REPOSITORY_MAX_MODELS];
    for (int i = 0; i < r->n_models; i++) {
        dm_served_model *sv = r->models[i];
        dm_sched_stats *st = malloc(sizeof *st);
        util[i] = 0;
        if (!st) continue;
        dm_sched_stats_get(sv->sched, st);
        for (int l = 0; l < st->route_layers; l++) {
            double load[4096], sum = 0;
            for (int e = 0; e < st->route_experts && l * st->route_experts + e < DM_SCHED_MAX_ROUTE; e++) {
                uint64_t v = st->expert_rows[l * st->route_experts + e];
                EMIT("deepmoe_expert_routed_rows_total{model=\"%s\",version=\"%lld\",layer=\"%d\",expert=\"%d\"} %llu\n",
                     sv->name, (long long)sv->version, l, e, (unsigned long long)v);
                load[e] = (double)v;
                sum += (double)v;
            }
            if (sum > 0) util[i] += dm_expert_utilization(load, st->route_experts) / st->route_layers;
        }
        free(st);
    }
    EMIT("# HELP deepmoe_expert_utilization Mean over layers of mean/max expert load since start (1 = balanced)\n"
         "# TYPE deepmoe_expert_utilization gauge\n");
    for (int i = 0; i < r->n_models; i++)
        EMIT("deepmoe_expert_utilization{model=\"%s\",version=\"%lld\"} %.4f\n", r->models[i]->name,
             (long long)r->models[i]->version, util[i]);
    long rss = 0, hwm = 0;
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    while (fp && fgets(line, sizeof line, fp)) {
        if (!strncmp(line, "VmRSS:", 6)) rss = strtol(line + 6, NULL, 10);
        if (!strncmp(line, "VmHWM:", 6)) hwm = strtol(line + 6, NULL, 10);
    }
    if (fp) fclose(fp);
    EMIT("# HELP deepmoe_process_resident_memory_bytes Resident memory of the server process\n"
         "# TYPE deepmoe_process_resident_memory_bytes gauge\ndeepmoe_process_resident_memory_bytes %ld\n", rss * 1024);
    EMIT("# HELP deepmoe_process_resident_memory_peak_bytes Peak resident memory of the server process\n"
         "# TYPE deepmoe_process_resident_memory_peak_bytes gauge\ndeepmoe_process_resident_memory_peak_bytes %ld\n", hwm * 1024);
    EMIT("# HELP deepmoe_cold_start_seconds Seconds from server start to ready\n# TYPE deepmoe_cold_start_seconds gauge\n");
    EMIT("deepmoe_cold_start_seconds %.6f\n", cold_start_s);
#undef EMIT
    *out_len = len;
    return out;
}
