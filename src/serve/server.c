/* server.c - HTTP endpoints of the Triton-compatible server.
 *
 *   GET  /v2/health/live | /v2/health/ready           200, empty body
 *   GET  /v2                                          server metadata
 *   GET  /v2/models/{m}[/versions/{v}]                model metadata
 *   GET  /v2/models/{m}[/versions/{v}]/ready|config|stats
 *   GET  /v2/models/stats                             every model's statistics
 *   POST /v2/models/{m}[/versions/{v}]/infer          inference (JSON or binary tensors)
 *   POST /v2/repository/index                         the repository's models (READY / UNAVAILABLE)
 *   POST /v2/repository/models/{m}/load | unload     explicit load / unload (waits for requests in flight)
 *   GET  :metrics_port/metrics                        Prometheus text
 * Errors are {"error": "..."} with Triton's status codes; unknown paths 404,
 * wrong methods 405. Requests are handled on libmicrohttpd's thread per
 * connection (keep-alive, 100-continue and chunked bodies come with it) and
 * block in the model's scheduler, which batches them. */
#include "base/base.h"
#include "serve/server.h"
#include "serve/model_config.h"
#include "serve/infer_codec.h"
#include "serve/sched.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_MODELS 64
#define LAT_RING 8192     /* request durations kept for the p50/p90/p99 summaries */

typedef struct served {
    char name[DM_MC_NAME];
    int64_t version;
    dm_triton_config cfg;
    dm_model *model;
    dm_sched *sched;
    int in, out, layers, k;
    _Atomic uint64_t fail_other;   /* failures before the scheduler (bad requests) */
    _Atomic int64_t last_ms;
    pthread_mutex_t lat_mu;        /* recent request durations, for the latency summaries */
    uint32_t lat_us[LAT_RING];
    uint64_t lat_n;
} served;

struct dm_server {
    dm_server_config cfg;
    struct MHD_Daemon *http, *metrics;
    int http_port, metrics_port;
    int n_models;
    served *models[MAX_MODELS];
    double start_s, ready_s;
    _Atomic int in_flight;     /* requests between their first byte and their completion */
    pthread_rwlock_t lock;     /* requests hold it shared; load and unload exclusively, so a model
                                  is never replaced or freed under a request that uses it */
};

typedef struct body {      /* one request's upload */
    char *data;
    size_t len, cap;
    int too_big;
} body;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- repository */

static int is_version_dir(const char *s)
{
    if (!*s || *s == '0') return 0;  /* Triton ignores names that start with 0 */
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return strlen(s) < 18;
}

static void served_free(served *sv)
{
    if (!sv) return;
    dm_sched_free(sv->sched);
    dm_model_free(sv->model);
    pthread_mutex_destroy(&sv->lat_mu);
    free(sv);
}

/* Loads version v of DIR/name with its parsed config. */
static dm_status load_version(const char *repo, const char *name, int64_t v, const dm_triton_config *cfg,
                              const dm_server_config *sc, served **out, dm_error *err)
{
    *out = NULL;
    char path[4096];
    served *sv = calloc(1, sizeof *sv);
    if (!sv) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&sv->lat_mu, NULL);
    memcpy(sv->name, name, strlen(name) + 1);
    sv->cfg = *cfg;
    sv->version = v;
    dm_status st;
    snprintf(path, sizeof path, "%s/%s/%lld/model.safetensors", repo, name, (long long)v);
    if ((st = dm_model_load(path, NULL, &sv->model, err))) goto fail;
    const dm_config *mc = dm_model_config(sv->model);
    sv->in = mc->in_dim ? mc->in_dim : mc->dim;
    sv->out = mc->n_classes ? mc->n_classes : mc->dim;
    sv->layers = mc->n_layers;
    sv->k = mc->top_k;
    const dm_triton_config *c = &sv->cfg;
    if (c->n_inputs != 1 || c->inputs[0].n_dims != 1 || c->inputs[0].dims[0] != sv->in ||
        strcmp(c->inputs[0].data_type, "TYPE_FP32")) {
        st = dm_fail(err, DM_ERR_SHAPE, "%s/%s/config.pbtxt: version %lld takes one TYPE_FP32 input of dims [%d]", repo,
                     name, (long long)v, sv->in);
        goto fail;
    }
    dm_sched_config sc2 = {
        .max_batch_size = c->max_batch_size > 0 ? c->max_batch_size : 1,
        .dynamic_batching = c->dynamic_batching,
        .n_preferred = c->n_preferred,
        .max_queue_delay_us = c->max_queue_delay_us,
        .max_queue_size = c->max_queue_size,
        .default_timeout_us = c->default_timeout_us,
        .allow_timeout_override = c->allow_timeout_override,
        .instances = c->instance_count > 0 ? c->instance_count : 1,
        .threads_per_instance = sc->threads > 0 ? sc->threads : 1,
        .name = name,
    };
    for (int i = 0; i < c->n_preferred && i < 32; i++) sc2.preferred[i] = c->preferred_batch_size[i];
    if ((st = dm_sched_create(sv->model, &sc2, &sv->sched, err))) goto fail;
    *out = sv;
    return DM_OK;
fail:
    served_free(sv);
    return st;
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Loads DIR/name: its config, then the versions its version_policy selects
 * (latest N: the N highest; all; specific: each listed one, which must exist). */
static dm_status load_model(const char *repo, const char *name, const dm_server_config *sc, served **list, int cap,
                            int *n, dm_error *err)
{
    *n = 0;
    char path[4096];
    dm_triton_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    dm_status st = DM_OK;
    if (strlen(name) >= sizeof cfg->name) {
        st = dm_fail(err, DM_ERR_ARG, "%s/%.64s...: model name too long", repo, name);
        goto done;
    }
    snprintf(path, sizeof path, "%s/%s/config.pbtxt", repo, name);
    if ((st = dm_model_config_load(path, cfg, err))) goto done;
    if (cfg->name[0] && strcmp(cfg->name, name)) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: name \"%s\" differs from the directory name \"%s\"", path, cfg->name, name);
        goto done;
    }
    memcpy(cfg->name, name, strlen(name) + 1);
    snprintf(path, sizeof path, "%s/%s", repo, name);
    int64_t have[256];
    int nh = 0;
    DIR *d = opendir(path);
    if (!d) {
        st = dm_fail(err, DM_ERR_IO, "%s: cannot open the model directory", path);
        goto done;
    }
    for (struct dirent *e; (e = readdir(d));)
        if (is_version_dir(e->d_name) && nh < 256) have[nh++] = strtoll(e->d_name, NULL, 10);
    closedir(d);
    qsort(have, (size_t)nh, sizeof *have, cmp_desc);
    int64_t pick[256];
    int np = 0;
    if (cfg->version_policy == DM_VP_SPECIFIC) {
        for (int i = 0; i < cfg->n_versions; i++) {
            int found = 0;
            for (int j = 0; j < nh; j++) found |= have[j] == cfg->versions[i];
            if (!found) {
                st = dm_fail(err, DM_ERR_FORMAT, "%s: version_policy names version %lld, which has no directory", path,
                             (long long)cfg->versions[i]);
                goto done;
            }
            pick[np++] = cfg->versions[i];
        }
    } else {
        int want = cfg->version_policy == DM_VP_ALL ? nh : DM_MIN(nh, cfg->num_versions > 0 ? cfg->num_versions : 1);
        for (int j = 0; j < want; j++) pick[np++] = have[j];
    }
    if (!np) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: no version directory (e.g. %s/1/model.safetensors)", path, path);
        goto done;
    }
    if (np > cap) {
        st = dm_fail(err, DM_ERR_UNSUPPORTED, "%s: %d versions selected, at most %d can be served", path, np, cap);
        goto done;
    }
    for (int i = 0; i < np && !st; i++)
        if (!(st = load_version(repo, name, pick[i], cfg, sc, &list[*n], err))) (*n)++;
    if (st) {
        for (int i = 0; i < *n; i++) served_free(list[i]);
        *n = 0;
    }
done:
    free(cfg);
    return st;
}

static dm_status load_repository(dm_server *s, dm_error *err)
{
    const char *repo = s->cfg.repository;
    DIR *d = opendir(repo);
    if (!d) return dm_fail(err, DM_ERR_IO, "%s: cannot open the model repository", repo);
    dm_status st = DM_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s/config.pbtxt", repo, e->d_name);
        if (stat(path, &sb) != 0) continue;  /* not a model directory */
        int n = 0;
        st = load_model(repo, e->d_name, &s->cfg, s->models + s->n_models, MAX_MODELS - s->n_models, &n, err);
        s->n_models += n;
    }
    closedir(d);
    if (!st && !s->n_models) st = dm_fail(err, DM_ERR_FORMAT, "%s: no models (expected DIR/<model>/config.pbtxt)", repo);
    return st;
}

/* The loaded version v of a model, or its highest loaded version when v < 0. */
static served *find_model(dm_server *s, const char *name, size_t len, int64_t v)
{
    served *best = NULL;
    for (int i = 0; i < s->n_models; i++) {
        served *m = s->models[i];
        if (strlen(m->name) != len || strncmp(m->name, name, len)) continue;
        if (v >= 0 ? m->version == v : (!best || m->version > best->version)) best = m;
    }
    return best;
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, char *data, size_t len, const char *type,
                             size_t header_len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data ? data : (char *)"",
                                                              data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    if (type) MHD_add_response_header(r, "Content-Type", type);
    if (header_len) {
        char h[32];
        snprintf(h, sizeof h, "%zu", header_len);
        MHD_add_response_header(r, "Inference-Header-Content-Length", h);
    }
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned code, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return reply(c, code, s, s ? strlen(s) : 0, "application/json", 0);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned code, const char *msg)
{
    char *b = dm_infer_error_body(msg);
    return reply(c, code, b, b ? strlen(b) : 0, "application/json", 0);
}

/* ---------------------------------------------------------------- endpoints */

static json_t *tensor_meta(const dm_mc_tensor *t, int batched)
{
    json_t *shape = json_array();
    if (batched) json_array_append_new(shape, json_integer(-1));
    for (int i = 0; i < t->n_dims; i++) json_array_append_new(shape, json_integer(t->dims[i]));
    return json_pack("{s:s, s:s, s:o}", "name", t->name, "datatype", t->data_type + 5 /* drop "TYPE_" */, "shape", shape);
}

static enum MHD_Result model_metadata(dm_server *s, struct MHD_Connection *c, served *sv)
{
    const dm_triton_config *mc = &sv->cfg;
    json_t *ins = json_array(), *outs = json_array();
    for (int i = 0; i < mc->n_inputs; i++) json_array_append_new(ins, tensor_meta(&mc->inputs[i], mc->max_batch_size > 0));
    for (int i = 0; i < mc->n_outputs; i++) json_array_append_new(outs, tensor_meta(&mc->outputs[i], mc->max_batch_size > 0));
    json_t *versions = json_array();
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i]->name, sv->name)) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)s->models[i]->version);
            json_array_append_new(versions, json_string(v));
        }
    json_t *j = json_pack("{s:s, s:o, s:s, s:o, s:o}", "name", sv->name, "versions", versions, "platform",
                          mc->platform[0] ? mc->platform : mc->backend, "inputs", ins, "outputs", outs);
    return reply_json(c, 200, j);
}

static json_t *stat_pair(uint64_t count, uint64_t ns) { return json_pack("{s:I, s:I}", "count", (json_int_t)count, "ns", (json_int_t)ns); }

static json_t *model_stats(served *sv)
{
    dm_sched_stats st;
    dm_sched_stats_get(sv->sched, &st);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)sv->version);
    json_t *batches = json_array();
    for (int b = 1; b <= 1024; b++)
        if (st.batch_count[b])
            json_array_append_new(batches, json_pack("{s:i, s:o, s:o, s:o}", "batch_size", b, "compute_input",
                                                     stat_pair(st.batch_count[b], 0), "compute_infer",
                                                     stat_pair(st.batch_count[b], 0), "compute_output",
                                                     stat_pair(st.batch_count[b], 0)));
    uint64_t fail = st.fail + atomic_load(&sv->fail_other);
    json_t *inf = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "success", stat_pair(st.success, st.queue_ns + st.compute_ns),
                            "fail", stat_pair(fail, 0), "queue", stat_pair(st.success, st.queue_ns), "compute_input",
                            stat_pair(st.execution_count, 0), "compute_infer", stat_pair(st.execution_count, st.compute_ns),
                            "compute_output", stat_pair(st.execution_count, 0), "cache_hit", stat_pair(0, 0),
                            "cache_miss", stat_pair(0, 0));
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:{}, s:o, s:[]}", "name", sv->name, "version", v, "last_inference",
                     (json_int_t)atomic_load(&sv->last_ms), "inference_count", (json_int_t)st.inference_count,
                     "execution_count", (json_int_t)st.execution_count, "inference_stats", inf, "response_stats",
                     "batch_stats", batches, "memory_usage");
}

/* Inference: parse, check against the model, run through the scheduler, answer. */
static enum MHD_Result infer_inner(struct MHD_Connection *c, served *sv, const body *b);

static enum MHD_Result infer(dm_server *s, struct MHD_Connection *c, served *sv, const body *b)
{
    DM_UNUSED(s);
    double t0 = now_s();
    enum MHD_Result r = infer_inner(c, sv, b);
    uint32_t us = (uint32_t)DM_MIN(1e9, (now_s() - t0) * 1e6);
    pthread_mutex_lock(&sv->lat_mu);
    sv->lat_us[sv->lat_n++ % LAT_RING] = us;
    pthread_mutex_unlock(&sv->lat_mu);
    return r;
}

static enum MHD_Result infer_inner(struct MHD_Connection *c, served *sv, const body *b)
{
    dm_infer_request req;
    dm_error err;
    const char *hl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    int64_t header_len = -1;
    if (hl) {
        char *end;
        header_len = strtoll(hl, &end, 10);
        if (*end || end == hl || header_len < 0) {
            atomic_fetch_add(&sv->fail_other, 1);
            return reply_error(c, 400, "bad Inference-Header-Content-Length");
        }
    }
    const dm_mc_tensor *in = &sv->cfg.inputs[0];
    dm_status st = header_len == 0
        ? dm_infer_parse_raw(b->data, b->len, in->name, "FP32", in->dims, in->n_dims, &req, &err)
        : dm_infer_parse(b->data ? b->data : "", b->len, header_len, &req, &err);
    if (st) {
        atomic_fetch_add(&sv->fail_other, 1);
        return reply_error(c, 400, err.msg);
    }
    char msg[512] = "";
    const dm_infer_tensor *t = req.n_inputs == 1 ? &req.inputs[0] : NULL;
    int batched = sv->cfg.max_batch_size > 0;
    int64_t rows = t && batched && t->ndims == 2 ? t->shape[0] : 1;
    if (!t || strcmp(t->name, in->name))
        snprintf(msg, sizeof msg, "expected one input '%s' for model '%s'", in->name, sv->name);
    else if (!t->f32)
        snprintf(msg, sizeof msg, "input '%s' for model '%s': datatype %s is not supported", t->name, sv->name, t->datatype);
    else if ((batched ? t->ndims != 2 : t->ndims != 1) || t->shape[t->ndims - 1] != sv->in || rows < 1)
        snprintf(msg, sizeof msg, "unexpected shape for input '%s' for model '%s'. Expected [%s%d]", t->name, sv->name,
                 batched ? "-1," : "", sv->in);
    else if (batched && rows > sv->cfg.max_batch_size)
        snprintf(msg, sizeof msg, "inference request batch-size must be <= %d for '%s'", sv->cfg.max_batch_size, sv->name);
    if (msg[0]) {
        dm_infer_request_free(&req);
        atomic_fetch_add(&sv->fail_other, 1);
        return reply_error(c, 400, msg);
    }
    /* which outputs: the requested ones, else all */
    int want[3] = {0, 0, 0}, bin[3] = {0, 0, 0};
    static const char *const names[3] = {"output", "routing_experts", "routing_weights"};
    for (int o = 0; o < 3; o++) {
        int idx = -1;
        for (int r = 0; r < req.n_outputs; r++)
            if (!strcmp(req.output_names[r], names[o])) idx = r;
        want[o] = req.n_outputs == 0 || idx >= 0;
        int flag = idx >= 0 ? req.output_binary[idx] : -1;
        bin[o] = req.raw_binary || (flag >= 0 ? flag : req.binary_data_output);
    }
    for (int r = 0; r < req.n_outputs; r++) {
        int known = 0;
        for (int o = 0; o < 3; o++) known |= !strcmp(req.output_names[r], names[o]);
        if (!known) {
            snprintf(msg, sizeof msg, "unexpected inference output '%s' for model '%s'", req.output_names[r], sv->name);
            dm_infer_request_free(&req);
            atomic_fetch_add(&sv->fail_other, 1);
            return reply_error(c, 400, msg);
        }
    }
    int64_t lk = (int64_t)sv->layers * sv->k;
    /* rows come from the request (bounded by its body): sizes checked for overflow anyway */
    float *y = dm_alloc_array2((size_t)rows, (size_t)sv->out, sizeof *y);
    int32_t *ex = want[1] || want[2] ? dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *ex) : NULL;
    float *w = want[1] || want[2] ? dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *w) : NULL;
    int32_t *ex_rows = ex ? dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *ex_rows) : NULL;
    float *w_rows = w ? dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *w_rows) : NULL;
    if (!y || ((want[1] || want[2]) && (!ex || !w || !ex_rows || !w_rows))) {
        free(y); free(ex); free(w); free(ex_rows); free(w_rows);
        dm_infer_request_free(&req);
        return reply_error(c, 500, "out of memory");
    }
    dm_sched_request sr = {.x = t->f32, .rows = rows, .y = y, .experts = ex, .weights = w, .timeout_us = req.timeout_us};
    int rc = dm_sched_submit(sv->sched, &sr);
    enum MHD_Result ret;
    if (rc != DM_SCHED_OK) {
        unsigned code = rc == DM_SCHED_QUEUE_FULL || rc == DM_SCHED_TIMEOUT || rc == DM_SCHED_SHUTDOWN ? 503
                        : rc == DM_SCHED_TOO_BIG ? 400 : 500;
        ret = reply_error(c, code, sr.error[0] ? sr.error : "inference failed");
    } else {
        atomic_store(&sv->last_ms, epoch_ms());
        /* routing arrays come layer-major [L, rows, k]; the outputs are per row [rows, L * k] */
        for (int64_t l = 0; ex && l < sv->layers; l++)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < sv->k; j++) {
                    ex_rows[r * lk + l * sv->k + j] = ex[(l * rows + r) * sv->k + j];
                    w_rows[r * lk + l * sv->k + j] = w[(l * rows + r) * sv->k + j];
                }
        dm_infer_output outs[3];
        int n = 0;
        const void *data[3] = {y, ex_rows, w_rows};
        static const char *const types[3] = {"FP32", "INT32", "FP32"};
        for (int o = 0; o < 3; o++) {
            if (!want[o]) continue;
            outs[n] = (dm_infer_output){.name = names[o], .datatype = types[o], .ndims = batched ? 2 : 1,
                                        .data = data[o], .binary = bin[o]};
            int64_t width = o == 0 ? sv->out : lk;
            if (batched) { outs[n].shape[0] = rows; outs[n].shape[1] = width; }
            else outs[n].shape[0] = width;
            n++;
        }
        char ver[32];
        snprintf(ver, sizeof ver, "%lld", (long long)sv->version);
        size_t len = 0, hlen = 0;
        char *resp = dm_infer_response(sv->name, ver, req.id, outs, n, &len, &hlen);
        ret = resp ? reply(c, 200, resp, len, hlen ? "application/octet-stream" : "application/json", hlen)
                   : reply_error(c, 500, "out of memory");
    }
    free(y); free(ex); free(w); free(ex_rows); free(w_rows);
    dm_infer_request_free(&req);
    return ret;
}

/* /v2/models/{m}[/versions/{v}][/{action}] */
static enum MHD_Result models_route(dm_server *s, struct MHD_Connection *c, const char *rest, int is_get, int is_post,
                                    const body *b)
{
    if (!strcmp(rest, "stats")) {
        if (!is_get) return reply_error(c, 405, "Method Not Allowed");
        json_t *arr = json_array();
        for (int i = 0; i < s->n_models; i++) json_array_append_new(arr, model_stats(s->models[i]));
        return reply_json(c, 200, json_pack("{s:o}", "model_stats", arr));
    }
    const char *slash = strchr(rest, '/');
    size_t nlen = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *action = slash ? slash + 1 : "";
    int64_t ver = -1;
    if (!strncmp(action, "versions/", 9)) {
        const char *v = action + 9;
        char *end;
        ver = strtoll(v, &end, 10);
        if (end == v || ver < 0 || (*end && *end != '/')) return reply_error(c, 404, "Not Found");
        action = *end ? end + 1 : "";
    }
    served *sv = find_model(s, rest, nlen, ver);
    if (!sv) {
        char msg[256];
        if (ver >= 0 && find_model(s, rest, nlen, -1))
            snprintf(msg, sizeof msg, "Request for unknown model: '%.*s' version %lld is not found", (int)DM_MIN(nlen, 128),
                     rest, (long long)ver);
        else
            snprintf(msg, sizeof msg, "Request for unknown model: '%.*s' is not found", (int)DM_MIN(nlen, 128), rest);
        return reply_error(c, 404, msg);
    }
    if (!strcmp(action, "infer")) return is_post ? infer(s, c, sv, b) : reply_error(c, 405, "Method Not Allowed");
    if (!is_get) return reply_error(c, 405, "Method Not Allowed");
    if (!*action) return model_metadata(s, c, sv);
    if (!strcmp(action, "ready")) return reply(c, 200, NULL, 0, NULL, 0);
    if (!strcmp(action, "config")) {
        char *j = dm_model_config_json(&sv->cfg);
        return j ? reply(c, 200, j, strlen(j), "application/json", 0) : reply_error(c, 500, "out of memory");
    }
    if (!strcmp(action, "stats")) {
        json_t *arr = json_array();
        json_array_append_new(arr, model_stats(sv));
        return reply_json(c, 200, json_pack("{s:o}", "model_stats", arr));
    }
    return reply_error(c, 404, "Not Found");
}

/* POST /v2/repository/models/{m}/load | unload, under the exclusive lock. */
static enum MHD_Result repository_action(dm_server *s, struct MHD_Connection *c, const char *rest)
{
    const char *slash = strchr(rest, '/');
    if (!slash || (strcmp(slash, "/load") && strcmp(slash, "/unload"))) return reply_error(c, 404, "Not Found");
    char name[DM_MC_NAME];
    size_t nlen = (size_t)(slash - rest);
    if (!nlen || nlen >= sizeof name || memchr(rest, '.', nlen) == rest) return reply_error(c, 400, "bad model name");
    memcpy(name, rest, nlen);
    name[nlen] = 0;
    int had = 0;
    for (int i = 0; i < s->n_models; i++) had |= !strcmp(s->models[i]->name, name);
    if (!strcmp(slash, "/unload") && !had) {
        char msg[256];
        snprintf(msg, sizeof msg, "failed to unload '%s', no version is available", name);
        return reply_error(c, 400, msg);
    }
    served *fresh[MAX_MODELS];
    int nf = 0;
    if (!strcmp(slash, "/load")) {
        dm_error err;
        int room = MAX_MODELS - s->n_models;
        for (int i = 0; i < s->n_models; i++) room += !strcmp(s->models[i]->name, name);  /* replaced */
        if (load_model(s->cfg.repository, name, &s->cfg, fresh, room, &nf, &err)) {
            char msg[1024];
            snprintf(msg, sizeof msg, "failed to load '%.128s': %.512s", name, err.msg);
            return reply_error(c, 400, msg);
        }
    }
    /* drop the old versions (no request holds them: the lock is exclusive), add the new */
    int k = 0;
    for (int i = 0; i < s->n_models; i++) {
        if (!strcmp(s->models[i]->name, name)) served_free(s->models[i]);
        else s->models[k++] = s->models[i];
    }
    s->n_models = k;
    for (int i = 0; i < nf; i++) s->models[s->n_models++] = fresh[i];
    return reply(c, 200, NULL, 0, NULL, 0);
}

static enum MHD_Result route_locked(dm_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                    const body *b);

static enum MHD_Result route(dm_server *s, struct MHD_Connection *c, const char *url, const char *method, const body *b)
{
    if (!strncmp(url, "/v2/repository/models/", 22)) {
        if (strcmp(method, "POST")) return reply_error(c, 405, "Method Not Allowed");
        pthread_rwlock_wrlock(&s->lock);
        enum MHD_Result r = repository_action(s, c, url + 22);
        pthread_rwlock_unlock(&s->lock);
        return r;
    }
    pthread_rwlock_rdlock(&s->lock);
    enum MHD_Result r = route_locked(s, c, url, method, b);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static enum MHD_Result route_locked(dm_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                    const body *b)
{
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), is_post = !strcmp(method, "POST");
    if (b->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than the server's limit of %zu bytes", s->cfg.max_body);
        return reply_error(c, 413, msg);
    }
    if (!strcmp(url, "/v2/health/live") || !strcmp(url, "/v2/health/ready"))
        return is_get ? reply(c, 200, NULL, 0, NULL, 0) : reply_error(c, 405, "Method Not Allowed");
    if (!strcmp(url, "/v2") || !strcmp(url, "/v2/")) {
        if (!is_get) return reply_error(c, 405, "Method Not Allowed");
        return reply_json(c, 200, json_pack("{s:s, s:s, s:[s, s, s, s]}", "name", "deepmoe", "version", DM_VERSION,
                                            "extensions", "model_configuration", "binary_tensor_data", "statistics",
                                            "model_repository"));
    }
    if (!strncmp(url, "/v2/models/", 11)) return models_route(s, c, url + 11, is_get, is_post, b);
    if (!strcmp(url, "/v2/repository/index")) {
        if (!is_post) return reply_error(c, 405, "Method Not Allowed");
        json_t *arr = json_array();
        for (int i = 0; i < s->n_models; i++) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)s->models[i]->version);
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", s->models[i]->name, "version", v, "state", "READY"));
        }
        DIR *d = opendir(s->cfg.repository);  /* models of the repository that are not loaded */
        for (struct dirent *e; d && (e = readdir(d));) {
            char path[4096];
            struct stat sb;
            snprintf(path, sizeof path, "%s/%s/config.pbtxt", s->cfg.repository, e->d_name);
            if (e->d_name[0] == '.' || stat(path, &sb) || find_model(s, e->d_name, strlen(e->d_name), -1)) continue;
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", e->d_name, "state", "UNAVAILABLE", "reason", "unloaded"));
        }
        if (d) closedir(d);
        return reply_json(c, 200, arr);
    }
    return reply_error(c, 404, "Not Found");
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version);
    dm_server *s = cls;
    body *b = *con_cls;
    if (!b) {  /* first call: headers only */
        b = calloc(1, sizeof *b);
        if (!b) return MHD_NO;
        *con_cls = b;
        atomic_fetch_add(&s->in_flight, 1);
        return MHD_YES;
    }
    if (*upload_size) {
        if (b->len + *upload_size > s->cfg.max_body) {
            b->too_big = 1;  /* keep reading, answer 413 at the end */
        } else {
            if (b->len + *upload_size + 1 > b->cap) {
                size_t cap = DM_MAX(b->cap * 2, b->len + *upload_size + 1);
                char *d = realloc(b->data, cap);
                if (!d) return MHD_NO;
                b->data = d;
                b->cap = cap;
            }
            memcpy(b->data + b->len, upload, *upload_size);
            b->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(s, c, url, method, b);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code)
{
    DM_UNUSED(c); DM_UNUSED(code);
    dm_server *s = cls;
    body *b = *con_cls;
    if (b) {
        free(b->data);
        free(b);
        atomic_fetch_sub(&s->in_flight, 1);
    }
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- metrics */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static enum MHD_Result on_metrics(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version); DM_UNUSED(upload);
    dm_server *s = cls;
    if (!*con_cls) { *con_cls = (void *)1; return MHD_YES; }
    *upload_size = 0;
    *con_cls = NULL;
    if (strcmp(url, "/metrics")) return reply_error(c, 404, "Not Found");
    if (strcmp(method, "GET")) return reply_error(c, 405, "Method Not Allowed");
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    if (!out) return MHD_NO;
    pthread_rwlock_rdlock(&s->lock);
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
        for (int i = 0; i < s->n_models; i++) {
            served *sv = s->models[i];
            dm_sched_stats st;
            dm_sched_stats_get(sv->sched, &st);
            double v = 0;
            switch (h) {
            case 0: v = (double)st.success; break;
            case 1: v = (double)(st.fail + atomic_load(&sv->fail_other)); break;
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
    for (int i = 0; i < s->n_models; i++) {
        served *sv = s->models[i];
        static const double qs[3] = {0.5, 0.9, 0.99};
        uint32_t *tmp = malloc(LAT_RING * sizeof *tmp);
        pthread_mutex_lock(&sv->lat_mu);
        uint64_t n = DM_MIN(sv->lat_n, (uint64_t)LAT_RING), total = sv->lat_n;
        if (tmp) memcpy(tmp, sv->lat_us, n * sizeof *tmp);
        pthread_mutex_unlock(&sv->lat_mu);
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
    /* deepmoe's own: rows routed per expert and the utilization they give */
    EMIT("# HELP deepmoe_expert_routed_rows_total (row, slot) assignments routed to each expert\n"
         "# TYPE deepmoe_expert_routed_rows_total counter\n");
    double util[MAX_MODELS];
    for (int i = 0; i < s->n_models; i++) {
        served *sv = s->models[i];
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
    for (int i = 0; i < s->n_models; i++)
        EMIT("deepmoe_expert_utilization{model=\"%s\",version=\"%lld\"} %.4f\n", s->models[i]->name,
             (long long)s->models[i]->version, util[i]);
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
    EMIT("deepmoe_cold_start_seconds %.6f\n", s->ready_s - s->start_s);
#undef EMIT
    pthread_rwlock_unlock(&s->lock);
    return reply(c, 200, out, len, "text/plain; version=0.0.4; charset=utf-8", 0);
}

/* ---------------------------------------------------------------- lifecycle */

static struct MHD_Daemon *listen_on(dm_server *s, const char *host, int port, MHD_AccessHandlerCallback fn,
                                    int *bound, dm_error *err, dm_status *st)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        *st = dm_fail(err, DM_ERR_ARG, "--host '%s' is not an IPv4 address", host);
        return NULL;
    }
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                                MHD_USE_ITC,
                                            (uint16_t)port, NULL, NULL, fn, s, MHD_OPTION_SOCK_ADDR, &a,
                                            MHD_OPTION_NOTIFY_COMPLETED, fn == on_http ? on_done : NULL, s,
                                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!d) {
        *st = dm_fail(err, DM_ERR_IO, "cannot listen on %s:%d (port in use?)", host, port);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = info ? info->port : port;
    return d;
}

dm_status dm_server_start(const dm_server_config *c, dm_server **out, dm_error *err)
{
    *out = NULL;
    dm_server *s = calloc(1, sizeof *s);
    if (!s) return dm_fail(err, DM_ERR_NOMEM, "server: out of memory");
    s->start_s = now_s();
    s->cfg = *c;
    pthread_rwlock_init(&s->lock, NULL);
    if (!s->cfg.host) s->cfg.host = "127.0.0.1";
    if (!s->cfg.max_body) s->cfg.max_body = 64u << 20;
    dm_status st = load_repository(s, err);
    if (!st) s->http = listen_on(s, s->cfg.host, c->http_port, on_http, &s->http_port, err, &st);
    if (!st && c->metrics_port >= 0)
        s->metrics = listen_on(s, s->cfg.host, c->metrics_port, on_metrics, &s->metrics_port, err, &st);
    if (st) {
        dm_server_stop(s);
        return st;
    }
    s->ready_s = now_s();
    *out = s;
    return DM_OK;
}

int dm_server_http_port(const dm_server *s) { return s->http_port; }
int dm_server_metrics_port(const dm_server *s) { return s->metrics_port; }

void dm_server_stop(dm_server *s)
{
    if (!s) return;
    if (s->http) {
        /* graceful: stop accepting, let the requests in flight finish and be
         * answered (up to 60 s), then close the connections */
        MHD_socket fd = MHD_quiesce_daemon(s->http);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        for (int i = 0; i < 60000 && atomic_load(&s->in_flight) > 0; i++) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(s->http);
    }
    if (s->metrics) MHD_stop_daemon(s->metrics);
    for (int i = 0; i < s->n_models; i++) served_free(s->models[i]);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}
