/* sched.c - the dynamic batcher (Triton's DynamicBatchScheduler, serving.md
 * section 4). One mutex guards the queue, the instances' hand-off state, the
 * request results and the stats; compute runs outside it. */
#include "serve/sched.h"
#include "base/base.h"
#include "obs/trace.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sched_node {
    dm_sched_request *r;
    int64_t enq_ns;
    int64_t deadline_ns;         /* 0 = none */
    int done, result;
    pthread_cond_t cv;           /* its submitter waits here: one wake-up per finished request,
                                    not a broadcast to every waiting submitter */
    void (*cb)(void *arg, int result);  /* asynchronous submit: called once done, then the node is freed */
    int taken;                   /* moved from the queue into a batch */
    void *cb_arg;
    struct sched_node *next;
} sched_node;

typedef struct sched_inst {
    dm_sched *s;
    dm_pool *pool;
    dm_ctx *ctx;
    float *x, *y, *w;            /* gather/scatter buffers, max_batch_size rows */
    int32_t *ex;
    uint64_t *routed;            /* [layers * E] this batch's assignments per expert (merged into the stats) */
    sched_node **batch;          /* at most max_batch_size requests */
    sched_node **done_async;     /* scratch: the batch's asynchronous nodes */
    int n;                       /* requests in the batch it runs */
    int busy;                    /* running a batch (its thread's, or a dm_sched_submit_many caller's) */
    int started;
    pthread_t th;
} sched_inst;

struct dm_sched {
    const dm_model *m;
    dm_sched_config c;
    char name[128];
    int64_t in, out, layers, k;
    int largest_pref;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* idle instances: arrivals, stop */
    pthread_cond_t done_cv;      /* submitters: a request finished; free: no submitter left */
    sched_node *head, *tail;
    int64_t pending;
    int stopping;
    int idle;                    /* instances waiting on cv */
    int64_t in_submit;
    sched_inst *inst;
    int n_inst;
    dm_sched_stats st;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a)) return -1;
    int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc) rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc ? -1 : 0;
}

/* Waits on cv until signalled or the monotonic time wake_ns (INT64_MAX = no limit). */
static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t wake_ns)
{
    if (wake_ns == INT64_MAX) {
        pthread_cond_wait(cv, mu);
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)(wake_ns / 1000000000);
    ts.tv_nsec = (long)(wake_ns % 1000000000);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* Under the lock: a queued or refused request's end. Returns 1 when nd was an
 * async node whose callback ran: the caller frees it. */
static int finish_refused(dm_sched *s, sched_node *nd, int result, const char *msg)
{
    dm_sched_request *r = nd->r;
    r->status = DM_ERR_ARG;
    snprintf(r->error, sizeof r->error, "%s", msg);
    nd->result = result;
    nd->done = 1;
    s->st.fail++;
    if (nd->cb) {  /* only queued async nodes get here (immediate refusals return before a node exists) */
        nd->cb(nd->cb_arg, result);
        s->in_submit--;
        if (s->stopping && s->in_submit == 0) pthread_cond_broadcast(&s->done_cv);
        return 1;
    }
    pthread_cond_signal(&nd->cv);
    return 0;
}

/* Under the lock: refuses the queued requests whose timeout expired. */
static void expire(dm_sched *s, int64_t now)
{
    sched_node *prev = NULL, *nd = s->head;
    int any = 0;
    while (nd) {
        sched_node *next = nd->next;
        if (nd->deadline_ns && now >= nd->deadline_ns) {
            if (prev) prev->next = next; else s->head = next;
            if (s->tail == nd) s->tail = prev;
            s->pending--;
            nd->r->queue_ns = now - nd->enq_ns;
            if (finish_refused(s, nd, DM_SCHED_TIMEOUT, "Request timeout expired")) free(nd);
            any = 1;
        } else {
            prev = nd;
        }
        nd = next;
    }
    DM_UNUSED(any);
}

static int64_t earliest_deadline(const dm_sched *s)
{
    int64_t t = INT64_MAX;
    for (const sched_node *nd = s->head; nd; nd = nd->next)
        if (nd->deadline_ns && nd->deadline_ns < t) t = nd->deadline_ns;
    return t;
}

static int is_preferred(const dm_sched *s, int64_t sum)
{
    if (s->c.n_preferred == 0) return sum == s->c.max_batch_size;
    for (int i = 0; i < s->c.n_preferred; i++)
        if (s->c.preferred[i] == sum) return 1;
    return 0;
}

/* Under the lock, queue not empty: how many requests from the head to send
 * now (rules 1-4), or 0 and *wake = when to look again. */
static int decide(const dm_sched *s, int64_t now, int64_t *wake)
{
    const dm_sched_config *c = &s->c;
    if (!c->dynamic_batching) return 1;
    int64_t sum = 0;
    int n = 0, cut = 0, by_size = 0;
    for (const sched_node *nd = s->head; nd; nd = nd->next) {
        if (sum + nd->r->rows > c->max_batch_size) {
            by_size = 1;
            break;
        }
        sum += nd->r->rows;
        n++;
        if (is_preferred(s, sum)) cut = n;
    }
    int64_t delay = now - s->head->enq_ns;
    int64_t max_delay = c->max_queue_delay_us * 1000;
    if (cut && delay < max_delay) return cut;                        /* rule 1 */
    if (by_size || sum >= s->largest_pref) return n;                 /* rule 2 */
    if (max_delay == 0 || delay >= max_delay || s->stopping) return n; /* rule 3 (and shutdown) */
    *wake = s->head->enq_ns + max_delay;                             /* rule 4 */
    return 0;
}

static const dm_span_kind SK_BATCH = {"batch execute", "serve", "rows", "requests"};
static const dm_span_kind SK_QUEUE = {"queue wait", "serve", "rows", NULL};

/* Outside the lock: runs one batch and fills each request's results. */
static void run_batch(sched_inst *in)
{
    dm_sched *s = in->s;
    int64_t t0 = now_ns();
    uint64_t ts = dm_span_begin();
    int64_t total = 0;
    int want_route = 0;
    for (int i = 0; i < in->n; i++) {
        dm_sched_request *r = in->batch[i]->r;
        memcpy(in->x + total * s->in, r->x, (size_t)(r->rows * s->in) * sizeof(float));
        total += r->rows;
        if (r->experts || r->weights) want_route = 1;
    }
    want_route = 1;  /* always: the per-expert counts of the metrics come from it */
    dm_routing route = {in->ex, in->w};
    dm_error e = {0};
    dm_status st = dm_forward(in->ctx, in->x, total, in->y, want_route ? &route : NULL, &e);
    if (st == DM_OK) {
        int E = dm_model_config(s->m)->n_experts;
        memset(in->routed, 0, (size_t)s->layers * E * sizeof *in->routed);
        for (int64_t l = 0; l < s->layers; l++)
            for (int64_t a = 0; a < total * s->k; a++) in->routed[l * E + in->ex[l * total * s->k + a]]++;
        int64_t off = 0;
        for (int i = 0; i < in->n; i++) {
            dm_sched_request *r = in->batch[i]->r;
            memcpy(r->y, in->y + off * s->out, (size_t)(r->rows * s->out) * sizeof(float));
            for (int64_t l = 0; l < s->layers; l++) {
                size_t n = (size_t)(r->rows * s->k);
                if (r->experts)
                    memcpy(r->experts + l * r->rows * s->k, in->ex + (l * total + off) * s->k, n * sizeof(int32_t));
                if (r->weights)
                    memcpy(r->weights + l * r->rows * s->k, in->w + (l * total + off) * s->k, n * sizeof(float));
            }
            off += r->rows;
            r->status = DM_OK;
            r->error[0] = 0;
            in->batch[i]->result = DM_SCHED_OK;
        }
    } else {
        /* One bad request must not fail the others: run each alone. */
        for (int i = 0; i < in->n; i++) {
            dm_sched_request *r = in->batch[i]->r;
            dm_routing rr = {r->experts, r->weights};
            dm_status si = in->n == 1 ? st
                         : dm_forward(in->ctx, r->x, r->rows, r->y, want_route ? &rr : NULL, &e);
            r->status = si;
            if (si == DM_OK) {
                r->error[0] = 0;
                in->batch[i]->result = DM_SCHED_OK;
            } else {
                snprintf(r->error, sizeof r->error, "%.255s", e.msg);
                in->batch[i]->result = DM_SCHED_FAILED;
            }
        }
    }
    int64_t dt = now_ns() - t0;
    for (int i = 0; i < in->n; i++) {
        in->batch[i]->r->compute_ns = dt;
        in->batch[i]->r->batch_rows = (int)total;
    }
    dm_span_end(&SK_BATCH, ts, total, in->n);
}

/* Under the lock: the batch instance in ran is done; its requests' results,
 * callbacks and the stats. Drops and retakes the lock for the callbacks. */
static void finish_batch(dm_sched *s, sched_inst *in)
{
    int64_t total = 0;
    for (int i = 0; i < in->n; i++) {
        sched_node *nd = in->batch[i];
        total += nd->r->rows;
        if (nd->result == DM_SCHED_OK) {
            s->st.success++;
            s->st.inference_count += (uint64_t)nd->r->rows;
            s->st.queue_ns += (uint64_t)nd->r->queue_ns;
            s->st.compute_ns += (uint64_t)nd->r->compute_ns;
        } else {
            s->st.fail++;
        }
        nd->done = 1;
        if (!nd->cb) pthread_cond_signal(&nd->cv);
    }
    s->st.execution_count++;
    s->st.batch_count[total > 1024 ? 1024 : total]++;
    int E = dm_model_config(s->m)->n_experts;
    for (int64_t j = 0; j < (int64_t)s->layers * E && j < DM_SCHED_MAX_ROUTE; j++) s->st.expert_rows[j] += in->routed[j];
    /* asynchronous requests: call back outside the lock, then free their nodes */
    int n_async = 0;
    for (int i = 0; i < in->n; i++)
        if (in->batch[i]->cb) in->done_async[n_async++] = in->batch[i];
    in->n = 0;
    if (n_async) {
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n_async; i++) {
            in->done_async[i]->cb(in->done_async[i]->cb_arg, in->done_async[i]->result);
            free(in->done_async[i]);
        }
        pthread_mutex_lock(&s->mu);
        s->in_submit -= n_async;
        if (s->stopping && s->in_submit == 0) pthread_cond_broadcast(&s->done_cv);
    }
}

/* Under the lock: the first n queued requests become instance in's batch. */
static void take_batch(dm_sched *s, sched_inst *in, int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        sched_node *nd = s->head;
        s->head = nd->next;
        nd->next = NULL;
        nd->taken = 1;
        nd->r->queue_ns = now - nd->enq_ns;
        dm_trace_async(&SK_QUEUE, (uint64_t)(uintptr_t)nd, (uint64_t)nd->enq_ns, (uint64_t)now, nd->r->rows, 0);
        in->batch[i] = nd;
    }
    if (!s->head) s->tail = NULL;
    s->pending -= n;
    in->n = n;
    in->busy = 1;
}

/* Under the lock: runs instance in's batch outside the lock on the calling
 * thread (an instance's own, or a submitter's in dm_sched_submit_many);
 * back under the lock when done. */
static void run_taken(dm_sched *s, sched_inst *in)
{
    if (s->head && s->idle) pthread_cond_signal(&s->cv);   /* more for another instance */
    pthread_mutex_unlock(&s->mu);
    run_batch(in);
    pthread_mutex_lock(&s->mu);
    finish_batch(s, in);
    in->busy = 0;
    pthread_cond_broadcast(&s->done_cv);
}

/* An instance's thread forms its own batches (rules 1-4 in decide) and runs
 * them: a finished batch is followed at once by what queued meanwhile, with
 * no hand-off to another thread; an idle instance sleeps until a request
 * arrives (dm_sched_submit* wakes one), a queue delay ends or a queued
 * request's timeout expires. Stopping: the queue is drained first. */
static void *worker_main(void *arg)
{
    sched_inst *in = arg;
    dm_sched *s = in->s;
    char name[32];
    snprintf(name, sizeof name, "instance %d", (int)(in - s->inst));
    dm_trace_thread_name(name);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = now_ns();
        expire(s, now);
        int64_t wake = earliest_deadline(s);
        if (s->head && !in->busy) {
            int64_t w = INT64_MAX;
            int n = decide(s, now, &w);
            if (n > 0) {
                take_batch(s, in, n, now);
                run_taken(s, in);
                continue;
            }
            if (w < wake) wake = w;
        } else if (s->stopping) {
            break;
        }
        s->idle++;
        cond_wait_until(&s->cv, &s->mu, wake);
        s->idle--;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* A request's result fields before it is queued or run. */
static void reset_result(dm_sched_request *r)
{
    r->status = DM_OK;
    r->error[0] = 0;
    r->queue_ns = r->compute_ns = 0;
    r->batch_rows = 0;
}

static dm_status check_config(const dm_sched_config *c, dm_error *err)
{
    if (c->max_batch_size < 1)
        return dm_fail(err, DM_ERR_ARG, "sched: max_batch_size %d must be >= 1", c->max_batch_size);
    if (c->n_preferred < 0 || c->n_preferred > 32)
        return dm_fail(err, DM_ERR_ARG, "sched: n_preferred %d must be in [0, 32]", c->n_preferred);
    for (int i = 0; i < c->n_preferred; i++)
        if (c->preferred[i] < 1 || c->preferred[i] > c->max_batch_size)
            return dm_fail(err, DM_ERR_ARG, "sched: preferred batch size %d must be in [1, %d]",
                           c->preferred[i], c->max_batch_size);
    if (c->max_queue_delay_us < 0 || c->max_queue_delay_us > INT64_MAX / 4000)
        return dm_fail(err, DM_ERR_ARG, "sched: max_queue_delay_us %lld out of range",
                       (long long)c->max_queue_delay_us);
    if (c->max_queue_size < 0)
        return dm_fail(err, DM_ERR_ARG, "sched: max_queue_size %lld must be >= 0", (long long)c->max_queue_size);
    if (c->default_timeout_us < 0 || c->default_timeout_us > INT64_MAX / 4000)
        return dm_fail(err, DM_ERR_ARG, "sched: default_timeout_us %lld out of range",
                       (long long)c->default_timeout_us);
    if (c->instances < 1 || c->instances > 1024)
        return dm_fail(err, DM_ERR_ARG, "sched: instances %d must be in [1, 1024]", c->instances);
    if (c->threads_per_instance < 1 || c->threads_per_instance > 4096)
        return dm_fail(err, DM_ERR_ARG, "sched: threads_per_instance %d must be in [1, 4096]",
                       c->threads_per_instance);
    return DM_OK;
}

/* Stops and joins whatever threads run, then frees everything. */
static void sched_destroy(dm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_inst; i++)
        if (s->inst[i].started) pthread_join(s->inst[i].th, NULL);
    pthread_mutex_lock(&s->mu);
    while (s->in_submit > 0) pthread_cond_wait(&s->done_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_inst; i++) {
        sched_inst *in = &s->inst[i];
        dm_ctx_free(in->ctx);
        dm_pool_free(in->pool);
        dm_free(in->x);
        dm_free(in->y);
        dm_free(in->ex);
        free(in->routed);
        free(in->done_async);
        dm_free(in->w);
        free(in->batch);
    }
    free(s->inst);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

dm_status dm_sched_create(const dm_model *m, const dm_sched_config *c, dm_sched **out, dm_error *err)
{
    if (out) *out = NULL;
    if (!m || !c || !out) return dm_fail(err, DM_ERR_ARG, "sched: NULL model, config or out");
    dm_status st = check_config(c, err);
    if (st) return st;
    dm_sched *s = calloc(1, sizeof *s);
    if (!s) return dm_fail(err, DM_ERR_NOMEM, "sched: out of memory");
    s->m = m;
    s->c = *c;
    s->c.name = NULL;
    snprintf(s->name, sizeof s->name, "%s", c->name && *c->name ? c->name : "model");
    const dm_config *mc = dm_model_config(m);
    s->in = mc->in_dim ? mc->in_dim : mc->dim;
    s->out = mc->n_classes ? mc->n_classes : mc->dim;
    s->layers = mc->n_layers;
    s->k = mc->top_k;
    s->largest_pref = c->max_batch_size;
    if (c->n_preferred) {
        s->largest_pref = 0;
        for (int i = 0; i < c->n_preferred; i++)
            if (c->preferred[i] > s->largest_pref) s->largest_pref = c->preferred[i];
    }
    if (pthread_mutex_init(&s->mu, NULL)) {
        free(s);
        return dm_fail(err, DM_ERR_NOMEM, "sched: pthread_mutex_init failed");
    }
    if (cond_init(&s->cv)) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return dm_fail(err, DM_ERR_NOMEM, "sched: pthread_cond_init failed");
    }
    if (cond_init(&s->done_cv)) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return dm_fail(err, DM_ERR_NOMEM, "sched: pthread_cond_init failed");
    }
    s->inst = calloc((size_t)c->instances, sizeof *s->inst);
    if (!s->inst) {
        sched_destroy(s);
        return dm_fail(err, DM_ERR_NOMEM, "sched: out of memory");
    }
    size_t mb = (size_t)c->max_batch_size;
    for (int i = 0; i < c->instances; i++) {
        sched_inst *in = &s->inst[i];
        in->s = s;
        s->n_inst = i + 1;
        st = dm_pool_create(c->threads_per_instance, &in->pool, err);
        if (!st) st = dm_ctx_create(m, in->pool, &in->ctx, err);
        if (st) {
            sched_destroy(s);
            return st;
        }
        size_t route = mb * (size_t)s->layers * (size_t)s->k;
        in->x = dm_alloc(mb * (size_t)s->in * sizeof(float));
        in->y = dm_alloc(mb * (size_t)s->out * sizeof(float));
        in->ex = dm_alloc(route * sizeof(int32_t));
        in->routed = calloc((size_t)s->layers * mc->n_experts, sizeof *in->routed);
        in->done_async = calloc((size_t)mb, sizeof *in->done_async);
        in->w = dm_alloc(route * sizeof(float));
        in->batch = calloc(mb, sizeof *in->batch);
        if (!in->x || !in->y || !in->ex || !in->w || !in->batch || !in->routed || !in->done_async) {
            sched_destroy(s);
            return dm_fail(err, DM_ERR_NOMEM, "sched: out of memory for %d-row batch buffers", c->max_batch_size);
        }
    }
    for (int i = 0; i < s->n_inst; i++) {
        if (pthread_create(&s->inst[i].th, NULL, worker_main, &s->inst[i])) {
            sched_destroy(s);
            return dm_fail(err, DM_ERR_NOMEM, "sched: pthread_create failed");
        }
        s->inst[i].started = 1;
    }
    *out = s;
    return DM_OK;
}

int dm_sched_submit(dm_sched *s, dm_sched_request *r)
{
    if (!r) return DM_SCHED_FAILED;
    reset_result(r);
    if (!s) {
        r->status = DM_ERR_ARG;
        snprintf(r->error, sizeof r->error, "NULL scheduler");
        return DM_SCHED_FAILED;
    }
    sched_node nd = {.r = r};
    pthread_cond_init(&nd.cv, NULL);
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        r->status = DM_ERR_ARG;
        snprintf(r->error, sizeof r->error, "Server is stopping");
        s->st.fail++;
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&nd.cv);
        return DM_SCHED_SHUTDOWN;
    }
    if (r->rows > s->c.max_batch_size) {
        char msg[256];
        snprintf(msg, sizeof msg, "inference request batch-size must be <= %d for '%s'",
                 s->c.max_batch_size, s->name);
        finish_refused(s, &nd, DM_SCHED_TOO_BIG, msg);
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&nd.cv);
        return DM_SCHED_TOO_BIG;
    }
    if (r->rows < 1 || !r->x || !r->y) {
        finish_refused(s, &nd, DM_SCHED_FAILED,
                       r->rows < 1 ? "inference request batch-size must be >= 1" : "NULL input or output buffer");
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&nd.cv);
        return DM_SCHED_FAILED;
    }
    if (s->c.max_queue_size > 0 && s->pending >= s->c.max_queue_size) {
        finish_refused(s, &nd, DM_SCHED_QUEUE_FULL, "Exceeds maximum queue size");
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&nd.cv);
        return DM_SCHED_QUEUE_FULL;
    }
    int64_t timeout_us = s->c.default_timeout_us;
    if (s->c.allow_timeout_override && r->timeout_us > 0 && r->timeout_us < timeout_us)
        timeout_us = r->timeout_us;
    nd.enq_ns = now_ns();
    nd.deadline_ns = timeout_us > 0 ? nd.enq_ns + timeout_us * 1000 : 0;
    if (s->tail) s->tail->next = &nd; else s->head = &nd;
    s->tail = &nd;
    s->pending++;
    s->in_submit++;
    if (s->idle) pthread_cond_signal(&s->cv);   /* an instance asleep takes it */
    while (!nd.done) pthread_cond_wait(&nd.cv, &s->mu);
    s->in_submit--;
    if (s->stopping && s->in_submit == 0) pthread_cond_broadcast(&s->done_cv);
    int result = nd.result;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&nd.cv);
    return result;
}

/* Under the lock: dm_sched_submit_async's checks and enqueue, without the wake-up. */
static int enqueue_async(dm_sched *s, dm_sched_request *r, void (*done)(void *arg, int result), void *arg,
                         sched_node **out)
{
    int code = DM_SCHED_OK;
    const char *msg = NULL;
    char big[256];
    if (s->stopping) {
        code = DM_SCHED_SHUTDOWN;
        msg = "Server is stopping";
    } else if (r->rows > s->c.max_batch_size) {
        snprintf(big, sizeof big, "inference request batch-size must be <= %d for '%s'", s->c.max_batch_size, s->name);
        code = DM_SCHED_TOO_BIG;
        msg = big;
    } else if (r->rows < 1 || !r->x || !r->y) {
        code = DM_SCHED_FAILED;
        msg = r->rows < 1 ? "inference request batch-size must be >= 1" : "NULL input or output buffer";
    } else if (s->c.max_queue_size > 0 && s->pending >= s->c.max_queue_size) {
        code = DM_SCHED_QUEUE_FULL;
        msg = "Exceeds maximum queue size";
    }
    sched_node *nd = code ? NULL : calloc(1, sizeof *nd);
    if (!code && !nd) {
        code = DM_SCHED_FAILED;
        msg = "out of memory";
    }
    if (code) {
        r->status = DM_ERR_ARG;
        snprintf(r->error, sizeof r->error, "%s", msg);
        s->st.fail++;
        return code;
    }
    int64_t timeout_us = s->c.default_timeout_us;
    if (s->c.allow_timeout_override && r->timeout_us > 0 && r->timeout_us < timeout_us) timeout_us = r->timeout_us;
    nd->r = r;
    nd->cb = done;
    nd->cb_arg = arg;
    nd->enq_ns = now_ns();
    nd->deadline_ns = timeout_us > 0 ? nd->enq_ns + timeout_us * 1000 : 0;
    if (s->tail) s->tail->next = nd; else s->head = nd;
    s->tail = nd;
    s->pending++;
    s->in_submit++;
    if (out) *out = nd;
    return DM_SCHED_OK;
}

int dm_sched_submit_async(dm_sched *s, dm_sched_request *r, void (*done)(void *arg, int result), void *arg)
{
    if (!r || !done) return DM_SCHED_FAILED;
    reset_result(r);
    if (!s) {
        r->status = DM_ERR_ARG;
        snprintf(r->error, sizeof r->error, "NULL scheduler");
        return DM_SCHED_FAILED;
    }
    pthread_mutex_lock(&s->mu);
    int code = enqueue_async(s, r, done, arg, NULL);
    if (!code && s->idle) pthread_cond_signal(&s->cv);   /* an instance asleep takes it */
    pthread_mutex_unlock(&s->mu);
    return code;
}

void dm_sched_submit_many(dm_sched *s, dm_sched_request **r, void **arg, int n, void (*done)(void *arg, int result),
                          void (*held)(void *arg), int *rc)
{
    if (!done || n < 0 || (n && (!r || !arg || !rc))) return;
    for (int i = 0; i < n; i++) {
        if (!r[i]) {
            rc[i] = DM_SCHED_FAILED;
            continue;
        }
        reset_result(r[i]);
        if (!s) {
            r[i]->status = DM_ERR_ARG;
            snprintf(r[i]->error, sizeof r[i]->error, "NULL scheduler");
            rc[i] = DM_SCHED_FAILED;
        }
    }
    if (!s) return;
    enum { CHUNK = 64 };
    for (int at = 0; at < n; at += CHUNK) {   /* node pointers for the held calls, CHUNK at a time */
        int m = DM_MIN(n - at, CHUNK), queued = 0;
        sched_node *nd[CHUNK];
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < m; i++) {
            nd[i] = NULL;
            if (r[at + i]) queued += (rc[at + i] = enqueue_async(s, r[at + i], done, arg[at + i], &nd[i])) == DM_SCHED_OK;
        }
        sched_inst *in = NULL;
        for (int i = 0; queued && i < s->n_inst && !in; i++)
            if (!s->inst[i].busy) in = &s->inst[i];
        int64_t now = now_ns(), wake = INT64_MAX;
        int take = in && s->head && !s->stopping ? decide(s, now, &wake) : 0;
        if (take > 0) take_batch(s, in, take, now);
        if (held)   /* what stays queued, before an instance can take it */
            for (int i = 0; i < m; i++)
                if (nd[i] && !nd[i]->taken) held(arg[at + i]);
        if (take > 0) {
            run_taken(s, in);   /* callbacks run here, before this returns */
            if (s->head && s->idle) pthread_cond_broadcast(&s->cv);
        } else if (queued && s->idle) {
            pthread_cond_signal(&s->cv);   /* a queue delay to wait, or every instance busy */
        }
        pthread_mutex_unlock(&s->mu);
    }
}

void dm_sched_stats_get(dm_sched *s, dm_sched_stats *out)
{
    if (!out) return;
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->pending = s->pending;
    pthread_mutex_unlock(&s->mu);
    out->route_layers = (int)s->layers;
    out->route_experts = dm_model_config(s->m)->n_experts;
}

void dm_sched_free(dm_sched *s)
{
    if (s) sched_destroy(s);
}
