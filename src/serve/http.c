/* http.c - the HTTP endpoints of the Triton-compatible server.
 *
 *   GET  /v2/health/live | /v2/health/ready           200, empty body
 *   GET  /v2                                          server metadata
 *   GET  /v2/models/{m}[/versions/{v}]                model metadata
 *   GET  /v2/models/{m}[/versions/{v}]/ready|config|stats
 *   GET  /v2/models/stats                             every model's statistics
 *   POST /v2/models/{m}[/versions/{v}]/infer          inference (JSON or binary tensors)
 *   POST /v2/repository/index                         the repository's models (READY / UNAVAILABLE)
 *   POST /v2/repository/models/{m}/load | unload     explicit load / unload (waits for requests in flight)
 *   GET  :metrics_port/metrics                        Prometheus text (metrics.c)
 * Errors are {"error": "..."} with Triton's status codes; unknown paths 404,
 * wrong methods 405. Requests are handled on libmicrohttpd's thread per
 * connection (keep-alive, 100-continue and chunked bodies come with it) and
 * block in the model's scheduler, which batches them. Bodies are parsed and
 * answers built by infer_codec.c; the models come from repository.c. */
#include "serve/http.h"
#include "serve/infer_codec.h"
#include "serve/metrics.h"
#include "serve/sched.h"
#include "base/base.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct body {      /* one request's upload */
    char *data;
    size_t len, cap;
    int too_big;
} body;

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

static json_t *tensor_meta(const dm_triton_tensor *t, int batched)
{
    json_t *shape = json_array();
    if (batched) json_array_append_new(shape, json_integer(-1));
    for (int i = 0; i < t->n_dims; i++) json_array_append_new(shape, json_integer(t->dims[i]));
    return json_pack("{s:s, s:s, s:o}", "name", t->name, "datatype", t->data_type + 5 /* drop "TYPE_" */, "shape", shape);
}

static enum MHD_Result model_metadata(dm_http *h, struct MHD_Connection *c, dm_served_model *sv)
{
    const dm_triton_config *mc = &sv->cfg;
    json_t *ins = json_array(), *outs = json_array();
    for (int i = 0; i < mc->n_inputs; i++) json_array_append_new(ins, tensor_meta(&mc->inputs[i], mc->max_batch_size > 0));
    for (int i = 0; i < mc->n_outputs; i++) json_array_append_new(outs, tensor_meta(&mc->outputs[i], mc->max_batch_size > 0));
    json_t *versions = json_array();
    for (int i = 0; i < h->repo.n_models; i++)
        if (!strcmp(h->repo.models[i]->name, sv->name)) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)h->repo.models[i]->version);
            json_array_append_new(versions, json_string(v));
        }
    json_t *j = json_pack("{s:s, s:o, s:s, s:o, s:o}", "name", sv->name, "versions", versions, "platform",
                          mc->platform[0] ? mc->platform : mc->backend, "inputs", ins, "outputs", outs);
    return reply_json(c, 200, j);
}

static json_t *stat_pair(uint64_t count, uint64_t ns) { return json_pack("{s:I, s:I}", "count", (json_int_t)count, "ns", (json_int_t)ns); }

static json_t *model_stats(dm_served_model *sv)
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
    uint64_t fail = st.fail + atomic_load(&sv->metrics.fail_other);
    json_t *inf = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "success", stat_pair(st.success, st.queue_ns + st.compute_ns),
                            "fail", stat_pair(fail, 0), "queue", stat_pair(st.success, st.queue_ns), "compute_input",
                            stat_pair(st.execution_count, 0), "compute_infer", stat_pair(st.execution_count, st.compute_ns),
                            "compute_output", stat_pair(st.execution_count, 0), "cache_hit", stat_pair(0, 0),
                            "cache_miss", stat_pair(0, 0));
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:{}, s:o, s:[]}", "name", sv->name, "version", v, "last_inference",
                     (json_int_t)atomic_load(&sv->metrics.last_ms), "inference_count", (json_int_t)st.inference_count,
                     "execution_count", (json_int_t)st.execution_count, "inference_stats", inf, "response_stats",
                     "batch_stats", batches, "memory_usage");
}

/* Inference: parse, check against the model, run through the scheduler, answer. */
static enum MHD_Result infer_inner(struct MHD_Connection *c, dm_served_model *sv, const body *b);

static enum MHD_Result infer(struct MHD_Connection *c, dm_served_model *sv, const body *b)
{
    double t0 = dm_metrics_now();
    enum MHD_Result r = infer_inner(c, sv, b);
    dm_metrics_duration(&sv->metrics, dm_metrics_now() - t0);
    return r;
}

static enum MHD_Result infer_inner(struct MHD_Connection *c, dm_served_model *sv, const body *b)
{
    dm_infer_request req;
    dm_error err;
    const char *hl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    int64_t header_len = -1;
    if (hl) {
        char *end;
        header_len = strtoll(hl, &end, 10);
        if (*end || end == hl || header_len < 0) {
            dm_metrics_failed(&sv->metrics);
            return reply_error(c, 400, "bad Inference-Header-Content-Length");
        }
    }
    const dm_triton_tensor *in = &sv->cfg.inputs[0];
    dm_status st = header_len == 0
        ? dm_infer_parse_raw(b->data, b->len, in->name, "FP32", in->dims, in->n_dims, &req, &err)
        : dm_infer_parse(b->data ? b->data : "", b->len, header_len, &req, &err);
    if (st) {
        dm_metrics_failed(&sv->metrics);
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
        dm_metrics_failed(&sv->metrics);
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
            dm_metrics_failed(&sv->metrics);
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
        dm_metrics_inferred(&sv->metrics);
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
static enum MHD_Result models_route(dm_http *h, struct MHD_Connection *c, const char *rest, int is_get, int is_post,
                                    const body *b)
{
    if (!strcmp(rest, "stats")) {
        if (!is_get) return reply_error(c, 405, "Method Not Allowed");
        json_t *arr = json_array();
        for (int i = 0; i < h->repo.n_models; i++) json_array_append_new(arr, model_stats(h->repo.models[i]));
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
    dm_served_model *sv = dm_repository_find(&h->repo, rest, nlen, ver);
    if (!sv) {
        char msg[256];
        if (ver >= 0 && dm_repository_find(&h->repo, rest, nlen, -1))
            snprintf(msg, sizeof msg, "Request for unknown model: '%.*s' version %lld is not found", (int)DM_MIN(nlen, 128),
                     rest, (long long)ver);
        else
            snprintf(msg, sizeof msg, "Request for unknown model: '%.*s' is not found", (int)DM_MIN(nlen, 128), rest);
        return reply_error(c, 404, msg);
    }
    if (!strcmp(action, "infer")) return is_post ? infer(c, sv, b) : reply_error(c, 405, "Method Not Allowed");
    if (!is_get) return reply_error(c, 405, "Method Not Allowed");
    if (!*action) return model_metadata(h, c, sv);
    if (!strcmp(action, "ready")) return reply(c, 200, NULL, 0, NULL, 0);
    if (!strcmp(action, "config")) {
        char *j = dm_triton_config_json(&sv->cfg);
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
static enum MHD_Result repository_action(dm_http *h, struct MHD_Connection *c, const char *rest)
{
    const char *slash = strchr(rest, '/');
    if (!slash || (strcmp(slash, "/load") && strcmp(slash, "/unload"))) return reply_error(c, 404, "Not Found");
    char name[DM_TRITON_NAME];
    size_t nlen = (size_t)(slash - rest);
    if (!nlen || nlen >= sizeof name || memchr(rest, '.', nlen) == rest) return reply_error(c, 400, "bad model name");
    memcpy(name, rest, nlen);
    name[nlen] = 0;
    /* the old versions are freed at once: no request holds them, the lock is exclusive */
    if (!strcmp(slash, "/unload")) {
        if (!dm_repository_unload(&h->repo, name)) {
            char msg[256];
            snprintf(msg, sizeof msg, "failed to unload '%s', no version is available", name);
            return reply_error(c, 400, msg);
        }
    } else {
        dm_error err;
        if (dm_repository_load(&h->repo, name, &err)) {
            char msg[1024];
            snprintf(msg, sizeof msg, "failed to load '%.128s': %.512s", name, err.msg);
            return reply_error(c, 400, msg);
        }
    }
    return reply(c, 200, NULL, 0, NULL, 0);
}

static enum MHD_Result route_locked(dm_http *h, struct MHD_Connection *c, const char *url, const char *method,
                                    const body *b);

static enum MHD_Result route(dm_http *h, struct MHD_Connection *c, const char *url, const char *method, const body *b)
{
    if (!strncmp(url, "/v2/repository/models/", 22)) {
        if (strcmp(method, "POST")) return reply_error(c, 405, "Method Not Allowed");
        pthread_rwlock_wrlock(&h->lock);
        enum MHD_Result r = repository_action(h, c, url + 22);
        pthread_rwlock_unlock(&h->lock);
        return r;
    }
    pthread_rwlock_rdlock(&h->lock);
    enum MHD_Result r = route_locked(h, c, url, method, b);
    pthread_rwlock_unlock(&h->lock);
    return r;
}

typedef struct index_ctx { dm_http *h; json_t *arr; } index_ctx;

static int index_unloaded(const char *name, void *vctx)
{
    index_ctx *x = vctx;
    if (!dm_repository_find(&x->h->repo, name, strlen(name), -1))
        json_array_append_new(x->arr, json_pack("{s:s, s:s, s:s}", "name", name, "state", "UNAVAILABLE", "reason", "unloaded"));
    return 0;
}

static enum MHD_Result route_locked(dm_http *h, struct MHD_Connection *c, const char *url, const char *method,
                                    const body *b)
{
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), is_post = !strcmp(method, "POST");
    if (b->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than the server's limit of %zu bytes", h->max_body);
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
    if (!strncmp(url, "/v2/models/", 11)) return models_route(h, c, url + 11, is_get, is_post, b);
    if (!strcmp(url, "/v2/repository/index")) {
        if (!is_post) return reply_error(c, 405, "Method Not Allowed");
        json_t *arr = json_array();
        for (int i = 0; i < h->repo.n_models; i++) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)h->repo.models[i]->version);
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", h->repo.models[i]->name, "version", v, "state", "READY"));
        }
        index_ctx x = {.h = h, .arr = arr};
        dm_repository_scan(h->repo.dir, index_unloaded, &x);  /* models of the repository that are not loaded */
        return reply_json(c, 200, arr);
    }
    return reply_error(c, 404, "Not Found");
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version);
    dm_http *h = cls;
    body *b = *con_cls;
    if (!b) {  /* first call: headers only */
        b = calloc(1, sizeof *b);
        if (!b) return MHD_NO;
        *con_cls = b;
        atomic_fetch_add(&h->in_flight, 1);
        return MHD_YES;
    }
    if (*upload_size) {
        if (b->len + *upload_size > h->max_body) {
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
    return route(h, c, url, method, b);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code)
{
    DM_UNUSED(c); DM_UNUSED(code);
    dm_http *h = cls;
    body *b = *con_cls;
    if (b) {
        free(b->data);
        free(b);
        atomic_fetch_sub(&h->in_flight, 1);
    }
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- /metrics */

static enum MHD_Result on_metrics(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version); DM_UNUSED(upload);
    dm_http *h = cls;
    if (!*con_cls) { *con_cls = (void *)1; return MHD_YES; }
    *upload_size = 0;
    *con_cls = NULL;
    if (strcmp(url, "/metrics")) return reply_error(c, 404, "Not Found");
    if (strcmp(method, "GET")) return reply_error(c, 405, "Method Not Allowed");
    size_t len = 0;
    pthread_rwlock_rdlock(&h->lock);
    char *out = dm_metrics_text(&h->repo, h->ready_s - h->start_s, &len);
    pthread_rwlock_unlock(&h->lock);
    if (!out) return MHD_NO;
    return reply(c, 200, out, len, "text/plain; version=0.0.4; charset=utf-8", 0);
}

/* ---------------------------------------------------------------- daemons */

dm_status dm_http_listen(dm_http *h, const char *host, int port, int metrics, struct MHD_Daemon **out, int *bound,
                         dm_error *err)
{
    *out = NULL;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return dm_fail(err, DM_ERR_ARG, "--host '%s' is not an IPv4 address", host);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                                MHD_USE_ITC,
                                            (uint16_t)port, NULL, NULL, metrics ? on_metrics : on_http, h,
                                            MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_NOTIFY_COMPLETED,
                                            metrics ? NULL : on_done, h, MHD_OPTION_CONNECTION_TIMEOUT,
                                            (unsigned)120, MHD_OPTION_END);
    if (!d) return dm_fail(err, DM_ERR_IO, "cannot listen on %s:%d (port in use?)", host, port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = info ? info->port : port;
    *out = d;
    return DM_OK;
}

void dm_http_stop(dm_http *h, struct MHD_Daemon *api, struct MHD_Daemon *metrics)
{
    if (api) {
        MHD_socket fd = MHD_quiesce_daemon(api);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        for (int i = 0; i < 60000 && atomic_load(&h->in_flight) > 0; i++) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(api);
    }
    if (metrics) MHD_stop_daemon(metrics);
}
