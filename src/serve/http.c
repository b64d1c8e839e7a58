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
 * wrong methods 405.
 *
 * Connections live on the event loops of http_loop.c (a few threads, each a
 * libmicrohttpd daemon in epoll mode with its own connections: no
 * FD_SETSIZE bound, no thread per connection). An inference request, once
 * its body is in and checked, is set aside in the loop's pass; at the end of
 * the pass every request it read goes to the model's scheduler at once
 * (pass_run) and runs as one batch, on the loop's thread when an instance is
 * idle. Only the requests left waiting for an instance are suspended, and
 * the instance that runs them resumes them. Every request waiting for a
 * batch costs a suspended connection, not a thread. Limits (dm_http_limits): connections (total, per client),
 * header bytes, body bytes per request and buffered over all connections,
 * idle time, an upload deadline and rate floor, and the shutdown deadline. */
#include "serve/http.h"
#include "serve/http_loop.h"
#include "serve/http_zip.h"
#include "serve/infer_codec.h"
#include "serve/metrics.h"
#include "serve/sched.h"
#include "base/base.h"
#include "obs/trace.h"

#include <arpa/inet.h>
#include <jansson.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

/* One request on a connection, from its headers to its answer. An inference
 * request goes R_BODY -> R_PASS (set aside in its loop's pass) -> R_QUEUED
 * (in the scheduler) -> R_DONE -> answered. One that ran in the pass's own
 * batch is answered at the loop's next MHD_run, which calls the handler
 * again (a complete request without an answer stays on libmicrohttpd's
 * ready list); one that waits for an instance is suspended meanwhile
 * (infer_held) and resumed by the callback. State is exchanged atomically
 * between the loop thread and the scheduler's callback so that whichever of
 * "callback" and "connection gone" (on_done) comes second frees it. */
enum { R_BODY, R_PASS, R_QUEUED, R_DONE, R_GONE };

#define N_OUT 3
typedef struct req {
    dm_http *h;
    struct MHD_Connection *c;
    char *data;                 /* the upload so far (counted in h->buffered) */
    size_t len, cap;
    int too_big;                /* over max_body: read on, answered 413 */
    int counted;                /* its body is complete: counted in h->in_flight */
    double t0;                  /* when its headers arrived */
    _Atomic int state;
    /* an inference in the scheduler: what the answer needs, copied from the
     * model (which an unload may free once the scheduler is done) */
    dm_served_model *sv;        /* valid until the callback returns */
    dm_infer_request ir;
    dm_sched_request sr;
    int result;                 /* DM_SCHED_* */
    int want[N_OUT], bin[N_OUT], batched;
    int64_t rows, out, layers, k;
    char model[DM_TRITON_NAME], version[32];
    float *y, *w, *w_rows;
    int32_t *ex, *ex_rows;
    double infer_t0;
    int loop;                   /* the event loop that serves its connection */
    int suspended;              /* its connection is suspended: the callback resumes it */
    struct req *pass_next;      /* in its loop's pass: set aside for the end of the pass */
    char *act;                  /* a repository action ("{m}/load"), run after the pass */
    unsigned act_code;
    char act_msg[1024];
} req;

/* Per loop: what the handlers of the current pass set aside. */
typedef struct http_pass {
    req *infer, **infer_tail;   /* inference requests, in arrival order */
    req *actions, **actions_tail; /* repository load / unload (suspended) */
    dm_infer_memo memo;         /* the loop's last JSON header and its parse */
} http_pass;

static http_pass *pass_of(dm_http *h)
{
    int i = dm_http_loop_index();
    return h->passes && i >= 0 && i < h->n_passes ? &h->passes[i] : NULL;
}

static dm_infer_memo *pass_memo(dm_http *h)
{
    http_pass *p = pass_of(h);
    return p ? &p->memo : NULL;
}

static void pass_append(req **tail_slot[], req *r)
{
    r->pass_next = NULL;
    **tail_slot = r;
    *tail_slot = &r->pass_next;
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result reply_ex(struct MHD_Connection *c, unsigned code, char *data, size_t len, const char *type,
                                size_t header_len, int close_after, const char *encoding)
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
    if (close_after) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (encoding) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, encoding);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, char *data, size_t len, const char *type,
                             size_t header_len)
{
    return reply_ex(c, code, data, len, type, header_len, 0, NULL);
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

/* An error after which the connection is closed (the rest of its upload unread, or shutting down). */
static enum MHD_Result reply_error_close(struct MHD_Connection *c, unsigned code, const char *msg)
{
    char *b = dm_infer_error_body(msg);
    return reply_ex(c, code, b, b ? strlen(b) : 0, "application/json", 0, 1, NULL);
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

/* ---------------------------------------------------------------- inference */

static void body_free(req *r)
{
    if (r->data) atomic_fetch_sub(&r->h->buffered, (int64_t)r->cap);
    free(r->data);
    r->data = NULL;
    r->len = r->cap = 0;
}

static void infer_free(req *r)
{
    free(r->y); free(r->ex); free(r->w); free(r->ex_rows); free(r->w_rows);
    r->y = r->w = r->w_rows = NULL;
    r->ex = r->ex_rows = NULL;
    dm_infer_request_free(&r->ir);
}

static void req_free(req *r)
{
    body_free(r);
    infer_free(r);
    free(r->act);
    free(r);
}

/* Resumes r's connection and wakes its loop: in external-polling mode
 * libmicrohttpd has no wake-up of its own (http_loop.h). Called from the
 * loop's thread or an instance's. */
static void resume(req *r)
{
    dm_http *h = r->h;
    int loop = r->loop;
    MHD_resume_connection(r->c);
    dm_http_listener_kick(h->api, loop);
}

/* A finished inference (answered or refused) in the model's counters. */
static void count_result(dm_served_model *sv, const req *r, int result)
{
    if (result == DM_SCHED_OK) dm_metrics_inferred(&sv->metrics);
    else dm_metrics_failed(&sv->metrics);
    dm_metrics_duration(&sv->metrics, dm_metrics_now() - r->infer_t0);
}

/* The scheduler's worker, once the request ran (or was refused while queued). */
static void infer_done(void *arg, int result)
{
    req *r = arg;
    r->result = result;
    count_result(r->sv, r, result);
    r->sv = NULL;   /* an unload may free it from here on */
    if (atomic_exchange(&r->state, R_DONE) == R_GONE) {
        req_free(r);   /* the connection went away meanwhile (only at daemon stop) */
        return;
    }
    if (r->suspended) resume(r);   /* else it ran in its loop's pass: the next MHD_run answers it */
}

/* dm_sched_submit_many's held: r waits for an instance, its connection
 * parked until the callback (on the loop thread, under the scheduler's
 * lock, before any instance can take it). */
static void infer_held(void *arg)
{
    req *r = arg;
    r->suspended = 1;
    MHD_suspend_connection(r->c);
}

/* A request the scheduler refused at once (no callback comes): answered at
 * the loop's next MHD_run (it was not suspended). */
static void infer_refused(req *r, int rc)
{
    r->result = rc;
    count_result(r->sv, r, rc);
    r->sv = NULL;
    atomic_store(&r->state, R_DONE);
}

static const dm_span_kind SK_PARSE = {"http parse", "serve", "rows", NULL};
static const dm_span_kind SK_ENCODE = {"response encode", "serve", "bytes", NULL};

static enum MHD_Result infer_answer_(struct MHD_Connection *c, req *r, size_t *bytes);

/* The answer of a finished inference (on the connection's loop thread, after the resume). */
static enum MHD_Result infer_answer(struct MHD_Connection *c, req *r)
{
    size_t bytes = 0;
    uint64_t t0 = dm_span_begin();
    enum MHD_Result ret = infer_answer_(c, r, &bytes);
    dm_span_end(&SK_ENCODE, t0, (int64_t)bytes, 0);
    return ret;
}

static enum MHD_Result infer_answer_(struct MHD_Connection *c, req *r, size_t *bytes)
{
    dm_sched_request *sr = &r->sr;
    enum MHD_Result ret;
    if (r->result != DM_SCHED_OK) {
        int rc = r->result;
        unsigned code = rc == DM_SCHED_QUEUE_FULL || rc == DM_SCHED_TIMEOUT || rc == DM_SCHED_SHUTDOWN ? 503
                        : rc == DM_SCHED_TOO_BIG ? 400 : 500;
        ret = reply_error(c, code, sr->error[0] ? sr->error : "inference failed");
        infer_free(r);
        return ret;
    }
    static const char *const names[N_OUT] = {"output", "routing_experts", "routing_weights"};
    int64_t rows = r->rows, lk = r->layers * r->k;
    /* routing arrays come layer-major [L, rows, k]; the outputs are per row [rows, L * k] */
    for (int64_t l = 0; r->ex && l < r->layers; l++)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < r->k; j++) {
                r->ex_rows[i * lk + l * r->k + j] = r->ex[(l * rows + i) * r->k + j];
                r->w_rows[i * lk + l * r->k + j] = r->w[(l * rows + i) * r->k + j];
            }
    dm_infer_output outs[N_OUT];
    int n = 0;
    const void *data[N_OUT] = {r->y, r->ex_rows, r->w_rows};
    static const char *const types[N_OUT] = {"FP32", "INT32", "FP32"};
    for (int o = 0; o < N_OUT; o++) {
        if (!r->want[o]) continue;
        outs[n] = (dm_infer_output){.name = names[o], .datatype = types[o], .ndims = r->batched ? 2 : 1,
                                    .data = data[o], .binary = r->bin[o]};
        int64_t width = o == 0 ? r->out : lk;
        if (r->batched) { outs[n].shape[0] = rows; outs[n].shape[1] = width; }
        else outs[n].shape[0] = width;
        n++;
    }
    size_t len = 0, hlen = 0;
    char *resp = dm_infer_response(r->model, r->version, r->ir.id, outs, n, &len, &hlen);
    if (!resp) {
        infer_free(r);
        return reply_error(c, 500, "out of memory");
    }
    /* Accept-Encoding: the body compressed; Inference-Header-Content-Length stays the JSON's own length */
    int zip = dm_zip_accept(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    const char *enc = NULL;
    if (zip != DM_ZIP_NONE) {
        size_t zlen = 0;
        char *z = dm_zip_deflate(resp, len, zip, &zlen);
        if (z) {
            free(resp);
            resp = z;
            len = zlen;
            enc = zip == DM_ZIP_GZIP ? "gzip" : "deflate";
        }
    }
    *bytes = len;
    ret = reply_ex(c, 200, resp, len, hlen ? "application/octet-stream" : "application/json", hlen, 0, enc);
    infer_free(r);
    return ret;
}

static int64_t first_nonfinite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* A refusal before the scheduler: counted as a failed request of the model. */
static enum MHD_Result infer_refuse(struct MHD_Connection *c, req *r, dm_served_model *sv, unsigned code,
                                    const char *msg)
{
    infer_free(r);
    count_result(sv, r, DM_SCHED_FAILED);
    return reply_error(c, code, msg);
}

/* Parses and checks the request against the model, then suspends the
 * connection and hands the request to the scheduler (infer_done resumes it). */
static enum MHD_Result infer_start(struct MHD_Connection *c, dm_served_model *sv, req *r)
{
    uint64_t t0 = dm_span_begin();
    r->infer_t0 = dm_metrics_now();
    dm_infer_request *ir = &r->ir;
    dm_error err;
    const char *hl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    int64_t header_len = -1;
    if (hl) {
        char *end;
        header_len = strtoll(hl, &end, 10);
        if (*end || end == hl || header_len < 0) return infer_refuse(c, r, sv, 400, "bad Inference-Header-Content-Length");
    }
    const dm_triton_tensor *in = &sv->cfg.inputs[0];
    dm_status st = header_len == 0
        ? dm_infer_parse_raw(r->data, r->len, in->name, "FP32", in->dims, in->n_dims, ir, &err)
        : dm_infer_parse_memo(pass_memo(r->h), r->data ? r->data : "", r->len, header_len, ir, &err);
    body_free(r);   /* parsed (or not): the upload's bytes are no longer needed */
    if (st) return infer_refuse(c, r, sv, 400, err.msg);
    char msg[512] = "";
    const dm_infer_tensor *t = ir->n_inputs == 1 ? &ir->inputs[0] : NULL;
    int batched = sv->cfg.max_batch_size > 0;
    int64_t rows = t && batched && t->ndims == 2 ? t->shape[0] : 1;
    const char *want_type = in->data_type + 5;   /* "TYPE_FP32" -> "FP32" */
    if (!t || strcmp(t->name, in->name))
        snprintf(msg, sizeof msg, "expected one input '%s' for model '%s'", in->name, sv->name);
    else if (strcmp(t->datatype, want_type))   /* Triton's message and status (no conversion) */
        snprintf(msg, sizeof msg, "inference input '%s' data-type is '%s', but model '%s' expects '%s'", t->name,
                 t->datatype, sv->name, want_type);
    else if ((batched ? t->ndims != 2 : t->ndims != 1) || t->shape[t->ndims - 1] != sv->in || rows < 1)
        snprintf(msg, sizeof msg, "unexpected shape for input '%s' for model '%s'. Expected [%s%d]", t->name, sv->name,
                 batched ? "-1," : "", sv->in);
    else if (batched && rows > sv->cfg.max_batch_size)
        snprintf(msg, sizeof msg, "inference request batch-size must be <= %d for '%s'", sv->cfg.max_batch_size, sv->name);
    else {
        int64_t bad = first_nonfinite(t->f32, t->numel);
        if (bad >= 0)   /* a client error (400), not the model's failure */
            snprintf(msg, sizeof msg, "input '%s' for model '%s' holds a NaN or Inf value (element %lld): inputs must "
                     "be finite", t->name, sv->name, (long long)bad);
    }
    if (msg[0]) return infer_refuse(c, r, sv, 400, msg);
    /* which outputs: the requested ones, else all */
    static const char *const names[N_OUT] = {"output", "routing_experts", "routing_weights"};
    for (int i = 0; i < ir->n_outputs; i++) {
        int known = 0;
        for (int o = 0; o < N_OUT; o++) known |= !strcmp(ir->output_names[i], names[o]);
        if (!known) {
            snprintf(msg, sizeof msg, "unexpected inference output '%s' for model '%s'", ir->output_names[i], sv->name);
            return infer_refuse(c, r, sv, 400, msg);
        }
    }
    for (int o = 0; o < N_OUT; o++) {
        int idx = -1;
        for (int i = 0; i < ir->n_outputs; i++)
            if (!strcmp(ir->output_names[i], names[o])) idx = i;
        r->want[o] = ir->n_outputs == 0 || idx >= 0;
        int flag = idx >= 0 ? ir->output_binary[idx] : -1;
        r->bin[o] = ir->raw_binary || (flag >= 0 ? flag : ir->binary_data_output);
    }
    r->rows = rows;
    r->batched = batched;
    r->out = sv->out;
    r->layers = sv->layers;
    r->k = sv->k;
    snprintf(r->model, sizeof r->model, "%s", sv->name);
    snprintf(r->version, sizeof r->version, "%lld", (long long)sv->version);
    int64_t lk = r->layers * r->k;
    int route = r->want[1] || r->want[2];
    /* rows come from the request (bounded by its body): sizes checked for overflow anyway */
    r->y = dm_alloc_array2((size_t)rows, (size_t)sv->out, sizeof *r->y);
    if (route) {
        r->ex = dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *r->ex);
        r->w = dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *r->w);
        r->ex_rows = dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *r->ex_rows);
        r->w_rows = dm_alloc_array2((size_t)rows, (size_t)lk, sizeof *r->w_rows);
    }
    if (!r->y || (route && (!r->ex || !r->w || !r->ex_rows || !r->w_rows)))
        return infer_refuse(c, r, sv, 500, "out of memory");
    r->sr = (dm_sched_request){.x = t->f32, .rows = rows, .y = r->y, .experts = r->ex, .weights = r->w,
                               .timeout_us = ir->timeout_us};
    dm_span_end(&SK_PARSE, t0, rows, 0);
    /* set aside for the end of this loop's pass: what arrived together is
     * submitted together (pass_run) and runs as one batch, on this thread
     * when an instance is idle. (Running a request at once when nothing else
     * is in flight looked cheaper at concurrency 1, but a loop then reads
     * its next request only after answering this one: with one loop thread
     * under load every request ran alone.) */
    http_pass *p = pass_of(r->h);
    if (!p) return infer_refuse(c, r, sv, 500, "inference requests are served by the event loops only");
    r->sv = sv;
    atomic_store(&r->state, R_PASS);
    pass_append(&p->infer_tail, r);
    return MHD_YES;
}

/* End of a loop's pass, under the lock (the models stay): the pass's
 * inference requests go to their schedulers, each model's at once, up to 64
 * per call; a batch may run right here (dm_sched_submit_many). */
static void pass_run(void *cls, int loop)
{
    dm_http *h = cls;
    http_pass *p = &h->passes[loop];
    while (p->infer) {
        enum { MANY = 64 };
        dm_sched_request *srs[MANY];
        void *args[MANY];
        req *rs[MANY];
        int rc[MANY], n = 0;
        dm_served_model *sv = p->infer->sv;
        for (req **pp = &p->infer; *pp && n < MANY;) {
            req *r = *pp;
            if (atomic_load(&r->state) == R_GONE) {   /* its connection closed within the pass */
                *pp = r->pass_next;
                req_free(r);
                atomic_fetch_add(&h->finished, 1);
                continue;
            }
            if (r->sv != sv) {
                pp = &r->pass_next;
                continue;
            }
            *pp = r->pass_next;
            atomic_store(&r->state, R_QUEUED);
            rs[n] = r;
            srs[n] = &r->sr;
            args[n++] = r;
        }
        if (n) dm_sched_submit_many(sv->sched, srs, args, n, infer_done, infer_held, rc);
        for (int i = 0; i < n; i++)
            if (rc[i] != DM_SCHED_OK) infer_refused(rs[i], rc[i]);
    }
    p->infer_tail = &p->infer;
}

/* /v2/models/{m}[/versions/{v}][/{action}] */
static enum MHD_Result models_route(dm_http *h, struct MHD_Connection *c, const char *rest, int is_get, int is_post,
                                    req *b)
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
    if (!strcmp(action, "infer")) return is_post ? infer_start(c, sv, b) : reply_error(c, 405, "Method Not Allowed");
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

/* POST /v2/repository/models/{m}/load | unload, under the exclusive lock:
 * the HTTP status, with msg the error ("" on success). */
static unsigned repository_action(dm_http *h, const char *rest, char *msg, size_t cap)
{
    msg[0] = 0;
    const char *slash = strchr(rest, '/');
    if (!slash || (strcmp(slash, "/load") && strcmp(slash, "/unload"))) {
        snprintf(msg, cap, "Not Found");
        return 404;
    }
    char name[DM_TRITON_NAME];
    size_t nlen = (size_t)(slash - rest);
    if (!nlen || nlen >= sizeof name || memchr(rest, '.', nlen) == rest) {
        snprintf(msg, cap, "bad model name");
        return 400;
    }
    memcpy(name, rest, nlen);
    name[nlen] = 0;
    /* the old versions are freed at once: no request holds them, the lock is exclusive */
    if (!strcmp(slash, "/unload")) {
        if (!dm_repository_unload(&h->repo, name)) {
            snprintf(msg, cap, "failed to unload '%s', no version is available", name);
            return 400;
        }
    } else {
        dm_error err;
        if (dm_repository_load(&h->repo, name, &err)) {
            snprintf(msg, cap, "failed to load '%.128s': %.512s", name, err.msg);
            return 400;
        }
    }
    return 200;
}

/* After a loop's pass, with the shared lock released: its repository
 * actions, each under the exclusive lock, then answered on resume. */
static void pass_after(void *cls, int loop)
{
    dm_http *h = cls;
    http_pass *p = &h->passes[loop];
    while (p->actions) {
        req *r = p->actions;
        p->actions = r->pass_next;
        pthread_rwlock_wrlock(&h->lock);
        r->act_code = repository_action(h, r->act, r->act_msg, sizeof r->act_msg);
        pthread_rwlock_unlock(&h->lock);
        atomic_store(&r->state, R_DONE);
        resume(r);
    }
    p->actions_tail = &p->actions;
}

static enum MHD_Result action_answer(struct MHD_Connection *c, req *r)
{
    return r->act_code == 200 ? reply(c, 200, NULL, 0, NULL, 0) : reply_error(c, r->act_code, r->act_msg);
}

static enum MHD_Result route_locked(dm_http *h, struct MHD_Connection *c, const char *url, const char *method,
                                    req *b);

/* The loop holds the shared lock over its pass; a load or unload needs it
 * exclusively, so it is set aside for after the pass (pass_after). */
static enum MHD_Result route(dm_http *h, struct MHD_Connection *c, const char *url, const char *method, req *b)
{
    if (strncmp(url, "/v2/repository/models/", 22)) return route_locked(h, c, url, method, b);
    if (strcmp(method, "POST")) return reply_error(c, 405, "Method Not Allowed");
    http_pass *p = pass_of(h);
    if (!p) return reply_error(c, 500, "repository actions are served by the event loops only");
    if (!(b->act = strdup(url + 22))) return reply_error(c, 500, "out of memory");
    atomic_store(&b->state, R_QUEUED);
    MHD_suspend_connection(c);
    pass_append(&p->actions_tail, b);
    return MHD_YES;
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
                                    req *b)
{
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), is_post = !strcmp(method, "POST");
    if (b->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than the server's limit of %zu bytes (--max-body)",
                 h->lim.max_body);
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

static int is_infer_url(const char *url)
{
    size_t n = strlen(url);
    return n > 6 && !strcmp(url + n - 6, "/infer");
}

/* The first call, headers only: the request's state, the early refusals. */
static enum MHD_Result on_headers(dm_http *h, struct MHD_Connection *c, void **con_cls)
{
    req *r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->h = h;
    r->c = c;
    r->loop = dm_http_loop_index();
    r->t0 = dm_metrics_now();
    *con_cls = r;
    if (atomic_load(&h->stopping)) return reply_error_close(c, 503, "Server is stopping");
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {   /* refuse a body that is too big before reading it */
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && !*end && n > h->lim.max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "request body of %llu bytes is larger than the server's limit of %zu bytes "
                     "(--max-body)", n, h->lim.max_body);
            return reply_error_close(c, 413, msg);
        }
    }
    /* the upload must end by the request deadline: MHD's inactivity timeout meanwhile */
    if (h->lim.request_timeout_s > 0 && h->lim.request_timeout_s < h->lim.idle_timeout_s)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)ceil(h->lim.request_timeout_s));
    return MHD_YES;
}

/* A piece of the upload: the body limits, the deadline and the rate floor. */
static enum MHD_Result on_upload(dm_http *h, req *r, const char *upload, size_t n)
{
    double dt = dm_metrics_now() - r->t0;
    if (h->lim.request_timeout_s > 0 && dt > h->lim.request_timeout_s) {
        atomic_fetch_add(&h->dropped, 1);
        return MHD_NO;   /* past the deadline: closed */
    }
    if (h->lim.min_rate > 0 && dt > 1.0 && (double)(r->len + n) / dt < h->lim.min_rate) {
        atomic_fetch_add(&h->dropped, 1);
        return MHD_NO;   /* a slow sender: closed */
    }
    if (r->too_big || r->len + n > h->lim.max_body) {
        r->too_big = 1;  /* a chunked body over the limit: read on, answer 413 at the end */
        body_free(r);
        return MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = DM_MAX(r->cap * 2, r->len + n + 1);
        cap = DM_MIN(cap, h->lim.max_body + 1);
        if (atomic_fetch_add(&h->buffered, (int64_t)(cap - r->cap)) + (int64_t)(cap - r->cap) > (int64_t)h->lim.max_buffered) {
            atomic_fetch_sub(&h->buffered, (int64_t)(cap - r->cap));
            atomic_fetch_add(&h->dropped, 1);
            return MHD_NO;   /* every connection's uploads together are over --max-buffered: closed */
        }
        char *d = realloc(r->data, cap);
        if (!d) {
            atomic_fetch_sub(&h->buffered, (int64_t)(cap - r->cap));
            return MHD_NO;
        }
        r->data = d;
        r->cap = cap;
    }
    memcpy(r->data + r->len, upload, n);
    r->len += n;
    return MHD_YES;
}

/* Content-Encoding gzip | deflate: the body is replaced by its inflated bytes
 * (at most --max-body). 0, or 1 with *e the error answer queued. */
static int decode_body(dm_http *h, struct MHD_Connection *c, req *r, const char *ce, enum MHD_Result *e)
{
    int coding = dm_zip_content_encoding(ce);
    if (coding == DM_ZIP_NONE) return 0;
    char msg[256];
    if (coding == DM_ZIP_UNKNOWN) {
        snprintf(msg, sizeof msg, "unsupported Content-Encoding '%.64s' (gzip and deflate are)", ce);
        *e = reply_error(c, 415, msg);
        return 1;
    }
    char *out = NULL;
    size_t n = 0;
    int rc = dm_zip_inflate(r->data ? r->data : "", r->len, h->lim.max_body, &out, &n);
    if (rc == -1) {
        snprintf(msg, sizeof msg, "the request body is not valid %s data", coding == DM_ZIP_GZIP ? "gzip" : "deflate");
        *e = reply_error(c, 400, msg);
        return 1;
    }
    if (rc == -2) {
        snprintf(msg, sizeof msg, "request body inflates to more than the server's limit of %zu bytes (--max-body)",
                 h->lim.max_body);
        *e = reply_error(c, 413, msg);
        return 1;
    }
    if (rc) {
        *e = reply_error(c, 500, "out of memory");
        return 1;
    }
    int64_t grow = (int64_t)(n + 1) - (int64_t)r->cap;
    if (grow > 0 && atomic_fetch_add(&h->buffered, grow) + grow > (int64_t)h->lim.max_buffered) {
        atomic_fetch_sub(&h->buffered, grow);
        free(out);
        *e = reply_error_close(c, 503, "the server's request buffers are full (--max-buffered); try again");
        return 1;
    }
    if (grow <= 0) atomic_fetch_add(&h->buffered, grow);
    free(r->data);
    r->data = out;
    r->len = n;
    r->cap = n + 1;
    return 0;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version);
    dm_http *h = cls;
    req *r = *con_cls;
    if (!r) return on_headers(h, c, con_cls);
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        return on_upload(h, r, upload, n);
    }
    int st = atomic_load(&r->state);
    if (st == R_DONE) return r->act ? action_answer(c, r) : infer_answer(c, r);   /* resumed: the batch or action ran */
    if (st != R_BODY) return MHD_YES;
    if (!r->counted) {   /* complete: shutdown waits for it */
        r->counted = 1;
        atomic_fetch_add(&h->in_flight, 1);
    }
    if (atomic_load(&h->stopping) && is_infer_url(url)) return reply_error_close(c, 503, "Server is stopping");
    const char *ce = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (ce && !r->too_big) {
        enum MHD_Result e;
        if (decode_body(h, c, r, ce, &e)) return e;
    }
    return route(h, c, url, method, r);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code)
{
    DM_UNUSED(c); DM_UNUSED(code);
    dm_http *h = cls;
    req *r = *con_cls;
    *con_cls = NULL;
    if (!r) return;
    if (r->counted) atomic_fetch_sub(&h->in_flight, 1);
    int st = atomic_exchange(&r->state, R_GONE);
    if (st == R_QUEUED) return;   /* the scheduler's callback frees it */
    if (st == R_PASS) return;     /* in its loop's pass (same thread): pass_run frees it */
    req_free(r);
    atomic_fetch_add(&h->finished, 1);
}

/* ---------------------------------------------------------------- /metrics */

/* Every request gets an answer: a body (ignored) is read first. */
static enum MHD_Result on_metrics(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    DM_UNUSED(version); DM_UNUSED(upload);
    dm_http *h = cls;
    if (!*con_cls) { *con_cls = (void *)1; return MHD_YES; }
    if (*upload_size) { *upload_size = 0; return MHD_YES; }
    *con_cls = NULL;
    if (strcmp(url, "/metrics")) return reply_error(c, 404, "Not Found");
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) return reply_error(c, 405, "Method Not Allowed");
    size_t len = 0;
    pthread_rwlock_rdlock(&h->lock);
    char *out = dm_metrics_text(&h->repo, h->ready_s - h->start_s, &len);
    pthread_rwlock_unlock(&h->lock);
    if (!out) return reply_error(c, 500, "out of memory");
    return reply(c, 200, out, len, "text/plain; version=0.0.4; charset=utf-8", 0);
}

/* ---------------------------------------------------------------- daemons */

/* want, or less where the process's file limit (RLIMIT_NOFILE) does not allow it. */
static int connection_cap(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY) return want;
    /* a file per connection, plus the model files, listen sockets, event fds and stdio */
    long cap = (long)rl.rlim_cur - 64;
    if (cap < 16) cap = 16;
    return want < cap ? want : (int)cap;
}

dm_status dm_http_listen(dm_http *h, const char *host, int port, int metrics, dm_http_listener **out, int *bound,
                         dm_error *err)
{
    *out = NULL;
    const dm_http_limits *l = &h->lim;
    int threads = metrics ? 1 : DM_MIN(DM_MAX(l->threads, 1), DM_HTTP_MAX_LOOPS);
    if (!metrics) {
        free(h->passes);
        h->passes = calloc((size_t)threads, sizeof *h->passes);
        if (!h->passes) return dm_fail(err, DM_ERR_NOMEM, "server: out of memory");
        h->n_passes = threads;
        for (int i = 0; i < threads; i++) {
            h->passes[i].infer_tail = &h->passes[i].infer;
            h->passes[i].actions_tail = &h->passes[i].actions;
        }
    }
    dm_http_loop_config c = {
        .host = host,
        .port = port,
        .threads = threads,
        .max_connections = (unsigned)connection_cap(metrics ? 1024 : l->max_connections),
        .per_client = metrics ? 0 : (unsigned)DM_MAX(l->max_connections_per_client, 0),
        .idle_timeout_s = (unsigned)DM_MAX(1.0, ceil(l->idle_timeout_s)),
        .pool_bytes = DM_MAX(l->max_header, (size_t)4096),
        .handler = metrics ? on_metrics : on_http,
        .completed = metrics ? NULL : on_done,
        .cls = h,
        .pass = metrics ? NULL : pass_run,
        .after = metrics ? NULL : pass_after,
        .lock = metrics ? NULL : &h->lock,   /* /metrics takes it itself, briefly */
        .lane = metrics ? "metrics" : "http",
    };
    dm_status st = dm_http_listener_start(&c, out, bound, err);
    if (!st && !metrics) h->api = *out;
    return st;
}

/* glibc keeps freed heap memory resident: after a burst (a flood of
 * connections, thousands of aborted requests at once: 40 MB in use for a
 * moment, 20 KB after) RSS would stay at the burst's high-water mark. Every
 * 2 s in which requests finished, the free pages go back (malloc_trim walks
 * the arenas; about a millisecond). */
static void *housekeeping(void *arg)
{
    dm_http *h = arg;
    int64_t seen = 0;
    pthread_mutex_lock(&h->hk_mu);
    while (!h->hk_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;
        pthread_cond_timedwait(&h->hk_cv, &h->hk_mu, &ts);
        int64_t n = atomic_load(&h->finished);
        if (n != seen && !h->hk_stop) {
            seen = n;
#if defined(__GLIBC__)
            malloc_trim(0);
#endif
        }
    }
    pthread_mutex_unlock(&h->hk_mu);
    return NULL;
}

dm_status dm_http_housekeeping_start(dm_http *h, dm_error *err)
{
    pthread_mutex_init(&h->hk_mu, NULL);
    pthread_cond_init(&h->hk_cv, NULL);
    h->hk_stop = 0;
    if (pthread_create(&h->hk, NULL, housekeeping, h)) {
        pthread_cond_destroy(&h->hk_cv);
        pthread_mutex_destroy(&h->hk_mu);
        return dm_fail(err, DM_ERR_NOMEM, "server: cannot start a thread");
    }
    h->hk_started = 1;
    return DM_OK;
}

void dm_http_housekeeping_stop(dm_http *h)
{
    if (!h->hk_started) return;
    pthread_mutex_lock(&h->hk_mu);
    h->hk_stop = 1;
    pthread_cond_signal(&h->hk_cv);
    pthread_mutex_unlock(&h->hk_mu);
    pthread_join(h->hk, NULL);
    pthread_cond_destroy(&h->hk_cv);
    pthread_mutex_destroy(&h->hk_mu);
    h->hk_started = 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void dm_http_quiesce(dm_http *h, dm_http_listener *api)
{
    if (!api) return;
    dm_http_listener_quiesce(api);
    atomic_store(&h->stopping, 1);
    double until = dm_metrics_now() + h->lim.shutdown_timeout_s;
    while (atomic_load(&h->in_flight) > 0 && dm_metrics_now() < until) sleep_ms(1);
}

void dm_http_stop(dm_http *h, dm_http_listener *api, dm_http_listener *metrics)
{
    dm_http_listener_stop(api);
    if (h->api == api) h->api = NULL;
    dm_http_listener_stop(metrics);
    for (int i = 0; h->passes && i < h->n_passes; i++) dm_infer_memo_free(&h->passes[i].memo);
    free(h->passes);
    h->passes = NULL;
    h->n_passes = 0;
}
