/* test_serve_sched.c - the dynamic batcher: results equal a direct dm_forward,
 * concurrent submitters, Triton's batching rules (preferred size, size cut,
 * delay), queue full, timeouts, too-big requests, no dynamic batching, and
 * dm_sched_free finishing queued requests. Assertions are on ordering and
 * counts; the only timings are generous upper bounds (10 s batching delays
 * that a working scheduler never waits out). */
#include "test.h"
#include "base/base.h"
#include "serve/sched.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define D 16
#define E 4
#define K 2
#define BIG_DELAY_US 10000000 /* 10 s: never waited out when the rules work */

static dm_model *small_model(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = D; c.n_experts = E; c.top_k = K; c.hidden = 8;
    dm_model *m = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    if (m) dm_model_init_random(m, 1234);
    return m;
}

static dm_sched_config base_cfg(void)
{
    dm_sched_config c;
    memset(&c, 0, sizeof c);
    c.max_batch_size = 8;
    c.dynamic_batching = 1;
    c.instances = 1;
    c.threads_per_instance = 1;
    c.name = "moe";
    return c;
}

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls until n requests are queued (20 s at most); 1 if reached. */
static int wait_pending(dm_sched *s, int64_t n)
{
    double t0 = secs();
    dm_sched_stats st;
    while (secs() - t0 < 20) {
        dm_sched_stats_get(s, &st);
        if (st.pending == n) return 1;
        sleep_ms(1);
    }
    return 0;
}

/* A request with its own buffers and the reference result. */
typedef struct req_buf {
    dm_sched_request r;
    float x[8 * D], y[8 * D], w[8 * K], ref_y[8 * D], ref_w[8 * K];
    int32_t ex[8 * K], ref_ex[8 * K];
    int rc;
} req_buf;

static void req_init(req_buf *b, int rows, uint64_t seed, dm_ctx *ref)
{
    memset(b, 0, sizeof *b);
    dm_rng g;
    dm_rng_seed(&g, seed);
    for (int i = 0; i < rows * D; i++) b->x[i] = dm_rng_uniform(&g, -1, 1);
    b->r.x = b->x;
    b->r.rows = rows;
    b->r.y = b->y;
    b->r.experts = b->ex;
    b->r.weights = b->w;
    b->rc = -1;
    if (ref) {
        dm_routing route = {b->ref_ex, b->ref_w};
        dm_error err = {0};
        dm_forward(ref, b->x, rows, b->ref_y, &route, &err);
    }
}

/* 1 when b's results match its reference (y within 1e-6, experts exact). */
static int req_matches(const req_buf *b)
{
    int64_t n = b->r.rows;
    if (dm_test_relerr(b->y, b->ref_y, n * D) > 1e-6) return 0;
    if (dm_test_relerr(b->w, b->ref_w, n * K) > 1e-6) return 0;
    return memcmp(b->ex, b->ref_ex, (size_t)(n * K) * sizeof(int32_t)) == 0;
}

typedef struct submitter {
    dm_sched *s;
    req_buf *reqs;
    int n;
    pthread_t th;
} submitter;

static void *submit_main(void *arg)
{
    submitter *sb = arg;
    for (int i = 0; i < sb->n; i++) sb->reqs[i].rc = dm_sched_submit(sb->s, &sb->reqs[i].r);
    return NULL;
}

static void start(submitter *sb, dm_sched *s, req_buf *reqs, int n)
{
    sb->s = s;
    sb->reqs = reqs;
    sb->n = n;
    pthread_create(&sb->th, NULL, submit_main, sb);
}

static void test_serve_sched_matches_forward(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s || !ref) { dm_ctx_free(ref); dm_model_free(m); return; }
    static req_buf b[16];
    int bitwise = 1;
    for (int i = 0; i < 16; i++) {
        req_init(&b[i], 1 + i % 8, 100 + (uint64_t)i, ref);
        if (i % 3 == 0) b[i].r.weights = NULL, memcpy(b[i].w, b[i].ref_w, sizeof b[i].w);
        int rc = dm_sched_submit(s, &b[i].r);
        CHECK(t, rc == DM_SCHED_OK, "request %d: rc %d: %s", i, rc, b[i].r.error);
        CHECK(t, b[i].r.status == DM_OK, "request %d status %d", i, (int)b[i].r.status);
        CHECK(t, req_matches(&b[i]), "request %d differs from dm_forward", i);
        CHECK(t, b[i].r.batch_rows == 1 + i % 8, "request %d ran in a %d-row batch (delay 0, idle)", i,
              b[i].r.batch_rows);
        if (memcmp(b[i].y, b[i].ref_y, (size_t)b[i].r.rows * D * sizeof(float))) bitwise = 0;
    }
    CHECK(t, bitwise, "a request alone should be bitwise equal to dm_forward");
    /* no routing wanted at all */
    req_init(&b[0], 3, 7, ref);
    b[0].r.experts = NULL;
    b[0].r.weights = NULL;
    CHECK(t, dm_sched_submit(s, &b[0].r) == DM_SCHED_OK, "%s", b[0].r.error);
    CHECK(t, dm_test_relerr(b[0].y, b[0].ref_y, 3 * D) <= 1e-6, "y without routing differs");
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    CHECK(t, st.success == 17 && st.fail == 0 && st.execution_count == 17 && st.pending == 0,
          "success %llu fail %llu executions %llu", (unsigned long long)st.success,
          (unsigned long long)st.fail, (unsigned long long)st.execution_count);
    dm_sched_free(s);
    dm_ctx_free(ref);
    dm_model_free(m);
}

static void test_serve_sched_concurrent(dm_t *t)
{
    enum { NT = 8, NR = 50 };
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();
    c.max_queue_delay_us = 5000;
    c.instances = 2;
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    req_buf *b = calloc(NT * NR, sizeof *b);
    if (!s || !ref || !b) { dm_sched_free(s); dm_ctx_free(ref); dm_model_free(m); free(b); return; }
    for (int i = 0; i < NT * NR; i++) req_init(&b[i], 1 + (i * 7) % 3, 1000 + (uint64_t)i, ref);
    submitter sb[NT];
    for (int i = 0; i < NT; i++) start(&sb[i], s, b + i * NR, NR);
    for (int i = 0; i < NT; i++) pthread_join(sb[i].th, NULL);
    int bad = 0, rows = 0, batched = 0;
    for (int i = 0; i < NT * NR; i++) {
        if (b[i].rc != DM_SCHED_OK || !req_matches(&b[i])) bad++;
        if (b[i].r.batch_rows < b[i].r.rows || b[i].r.batch_rows > 8) bad++;
        if (b[i].r.batch_rows > b[i].r.rows) batched++;
        rows += (int)b[i].r.rows;
    }
    CHECK(t, bad == 0, "%d requests failed or differ from dm_forward", bad);
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    uint64_t execs = 0, brows = 0;
    for (int i = 0; i <= 1024; i++) execs += st.batch_count[i], brows += (uint64_t)i * st.batch_count[i];
    CHECK(t, st.success == NT * NR && st.fail == 0, "success %llu fail %llu", (unsigned long long)st.success,
          (unsigned long long)st.fail);
    CHECK(t, st.inference_count == (uint64_t)rows, "inference_count %llu, %d rows",
          (unsigned long long)st.inference_count, rows);
    CHECK(t, execs == st.execution_count && brows == st.inference_count, "batch_count histogram inconsistent");
    CHECK(t, st.execution_count < (uint64_t)(NT * NR), "no batching: %llu executions for %d requests",
          (unsigned long long)st.execution_count, NT * NR);
    CHECK(t, batched > 0, "no request shared a batch");
    CHECK(t, st.pending == 0, "pending %lld", (long long)st.pending);
    dm_sched_free(s);
    free(b);
    dm_ctx_free(ref);
    dm_model_free(m);
}

/* Rule 1: a preferred size reached before the delay runs out is sent at once. */
static void test_serve_sched_preferred(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_sched_config c = base_cfg();
    c.max_queue_delay_us = BIG_DELAY_US;
    c.n_preferred = 1;
    c.preferred[0] = 4;
    dm_sched *s = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s) { dm_model_free(m); return; }
    static req_buf b[4];
    submitter sb[4];
    double t0 = secs();
    for (int i = 0; i < 4; i++) {
        req_init(&b[i], 1, (uint64_t)i, NULL);
        start(&sb[i], s, &b[i], 1);
    }
    for (int i = 0; i < 4; i++) pthread_join(sb[i].th, NULL);
    double dt = secs() - t0;
    CHECK(t, dt < 5, "a preferred-size batch waited %.1f s", dt);
    for (int i = 0; i < 4; i++)
        CHECK(t, b[i].rc == DM_SCHED_OK && b[i].r.batch_rows == 4, "request %d: rc %d batch %d", i, b[i].rc,
              b[i].r.batch_rows);
    dm_sched_free(s);
    dm_model_free(m);
}

/* Rule 2: the walk stopped by max_batch_size sends the prefix at once; rule 4
 * keeps the rest waiting; dm_sched_free flushes it. */
static void test_serve_sched_size_cut_and_free(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_sched_config c = base_cfg();
    c.max_batch_size = 4;
    c.max_queue_delay_us = BIG_DELAY_US;
    dm_sched *s = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s) { dm_model_free(m); return; }
    static req_buf a, b;
    req_init(&a, 3, 1, NULL);
    req_init(&b, 2, 2, NULL);
    submitter sa, sbb;
    double t0 = secs();
    start(&sa, s, &a, 1);
    CHECK(t, wait_pending(s, 1), "first request never queued");
    start(&sbb, s, &b, 1);
    pthread_join(sa.th, NULL);
    CHECK(t, secs() - t0 < 5, "the size cut waited for the delay");
    CHECK(t, a.rc == DM_SCHED_OK && a.r.batch_rows == 3, "first: rc %d batch %d", a.rc, a.r.batch_rows);
    CHECK(t, wait_pending(s, 1), "second request not left waiting");
    dm_sched_free(s);  /* finishes the queued request */
    pthread_join(sbb.th, NULL);
    CHECK(t, secs() - t0 < 5, "dm_sched_free waited for the delay");
    CHECK(t, b.rc == DM_SCHED_OK && b.r.batch_rows == 2, "second: rc %d batch %d", b.rc, b.r.batch_rows);
    dm_model_free(m);
}

/* dm_sched_free with many queued requests runs them all (one batch here). */
static void test_serve_sched_free_pending(dm_t *t)
{
    enum { N = 6 };
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();
    c.max_batch_size = 64;
    c.max_queue_delay_us = BIG_DELAY_US;
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s || !ref) { dm_sched_free(s); dm_ctx_free(ref); dm_model_free(m); return; }
    static req_buf b[N];
    submitter sb[N];
    for (int i = 0; i < N; i++) {
        req_init(&b[i], 1, 50 + (uint64_t)i, ref);
        start(&sb[i], s, &b[i], 1);
    }
    CHECK(t, wait_pending(s, N), "requests never queued");
    dm_sched_free(s);
    for (int i = 0; i < N; i++) {
        pthread_join(sb[i].th, NULL);
        CHECK(t, b[i].rc == DM_SCHED_OK && b[i].r.batch_rows == N && req_matches(&b[i]),
              "request %d: rc %d batch %d", i, b[i].rc, b[i].r.batch_rows);
    }
    dm_ctx_free(ref);
    dm_model_free(m);
}

static void test_serve_sched_queue_full(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_sched_config c = base_cfg();
    c.max_queue_delay_us = BIG_DELAY_US;
    c.max_queue_size = 1;
    dm_sched *s = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s) { dm_model_free(m); return; }
    static req_buf a, b;
    req_init(&a, 1, 1, NULL);
    req_init(&b, 1, 2, NULL);
    submitter sa;
    start(&sa, s, &a, 1);
    CHECK(t, wait_pending(s, 1), "first request never queued");
    int rc = dm_sched_submit(s, &b.r);
    CHECK(t, rc == DM_SCHED_QUEUE_FULL, "rc %d", rc);
    CHECK(t, b.r.status == DM_ERR_ARG && !strcmp(b.r.error, "Exceeds maximum queue size"), "status %d '%s'",
          (int)b.r.status, b.r.error);
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    CHECK(t, st.fail == 1 && st.pending == 1, "fail %llu pending %lld", (unsigned long long)st.fail,
          (long long)st.pending);
    dm_sched_free(s);
    pthread_join(sa.th, NULL);
    CHECK(t, a.rc == DM_SCHED_OK, "queued request: rc %d '%s'", a.rc, a.r.error);
    dm_model_free(m);
}

static void test_serve_sched_timeout(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_error err = {0};
    static req_buf b;
    /* default timeout expires while the batcher waits for more requests */
    for (int variant = 0; variant < 3; variant++) {
        dm_sched_config c = base_cfg();
        c.max_queue_delay_us = variant == 2 ? 100000 : BIG_DELAY_US;
        if (variant == 0) c.default_timeout_us = 20000;
        if (variant == 1) c.default_timeout_us = BIG_DELAY_US, c.allow_timeout_override = 1;
        if (variant == 2) c.allow_timeout_override = 1;  /* default 0: the request cannot add one */
        dm_sched *s = NULL;
        CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
        if (!s) break;
        req_init(&b, 2, 9, NULL);
        if (variant) b.r.timeout_us = 20000;
        double t0 = secs();
        int rc = dm_sched_submit(s, &b.r);
        double dt = secs() - t0;
        CHECK(t, dt < 5, "variant %d took %.1f s", variant, dt);
        if (variant < 2) {
            CHECK(t, rc == DM_SCHED_TIMEOUT, "variant %d: rc %d", variant, rc);
            CHECK(t, !strcmp(b.r.error, "Request timeout expired") && b.r.batch_rows == 0 &&
                     b.r.queue_ns >= 20000000, "variant %d: '%s' batch %d queue %lld", variant, b.r.error,
                  b.r.batch_rows, (long long)b.r.queue_ns);
        } else {
            CHECK(t, rc == DM_SCHED_OK && b.r.batch_rows == 2, "variant 2: rc %d '%s'", rc, b.r.error);
            CHECK(t, b.r.queue_ns >= 100000000, "variant 2 sent before the delay: %lld ns",
                  (long long)b.r.queue_ns);
        }
        dm_sched_stats st;
        dm_sched_stats_get(s, &st);
        CHECK(t, st.fail == (variant < 2) && st.pending == 0, "variant %d: fail %llu", variant,
              (unsigned long long)st.fail);
        dm_sched_free(s);
    }
    dm_model_free(m);
}

static void test_serve_sched_too_big_and_bad(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_sched_config c = base_cfg();
    c.max_batch_size = 4;
    dm_sched *s = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s) { dm_model_free(m); return; }
    static req_buf b;
    req_init(&b, 5, 3, NULL);
    int rc = dm_sched_submit(s, &b.r);
    CHECK(t, rc == DM_SCHED_TOO_BIG, "rc %d", rc);
    CHECK(t, !strcmp(b.r.error, "inference request batch-size must be <= 4 for 'moe'"), "'%s'", b.r.error);
    req_init(&b, 1, 3, NULL);
    b.r.rows = 0;
    CHECK(t, dm_sched_submit(s, &b.r) == DM_SCHED_FAILED && b.r.status == DM_ERR_ARG, "rows 0 accepted");
    req_init(&b, 2, 3, NULL);
    b.x[D + 3] = NAN;
    rc = dm_sched_submit(s, &b.r);
    CHECK(t, rc == DM_SCHED_FAILED && b.r.status == DM_ERR_NONFINITE && b.r.error[0], "NaN: rc %d status %d",
          rc, (int)b.r.status);
    req_init(&b, 2, 3, NULL);
    CHECK(t, dm_sched_submit(s, &b.r) == DM_SCHED_OK, "good request after bad ones: %s", b.r.error);
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    CHECK(t, st.fail == 3 && st.success == 1, "fail %llu success %llu", (unsigned long long)st.fail,
          (unsigned long long)st.success);
    dm_sched_free(s);
    /* bad configs */
    dm_sched_config bad[5];
    for (int i = 0; i < 5; i++) bad[i] = base_cfg();
    bad[0].max_batch_size = 0;
    bad[1].instances = 0;
    bad[2].threads_per_instance = 0;
    bad[3].n_preferred = 1, bad[3].preferred[0] = 9;
    bad[4].max_queue_delay_us = -1;
    for (int i = 0; i < 5; i++) {
        s = NULL;
        CHECK(t, dm_sched_create(m, &bad[i], &s, &err) == DM_ERR_ARG && !s && err.msg[0], "bad config %d", i);
    }
    dm_model_free(m);
}

static void test_serve_sched_no_dynamic_batching(dm_t *t)
{
    enum { NT = 4, NR = 30 };
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();
    c.dynamic_batching = 0;
    c.max_batch_size = 4;
    c.max_queue_delay_us = BIG_DELAY_US;  /* ignored without dynamic batching */
    c.instances = 2;
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    req_buf *b = calloc(NT * NR, sizeof *b);
    if (!s || !ref || !b) { dm_sched_free(s); dm_ctx_free(ref); dm_model_free(m); free(b); return; }
    for (int i = 0; i < NT * NR; i++) req_init(&b[i], 1 + i % 4, 7000 + (uint64_t)i, ref);
    submitter sb[NT];
    for (int i = 0; i < NT; i++) start(&sb[i], s, b + i * NR, NR);
    for (int i = 0; i < NT; i++) pthread_join(sb[i].th, NULL);
    int bad = 0;
    for (int i = 0; i < NT * NR; i++)
        if (b[i].rc != DM_SCHED_OK || b[i].r.batch_rows != b[i].r.rows || !req_matches(&b[i])) bad++;
    CHECK(t, bad == 0, "%d requests ran batched, failed or differ", bad);
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    CHECK(t, st.execution_count == NT * NR && st.success == NT * NR, "executions %llu",
          (unsigned long long)st.execution_count);
    CHECK(t, st.batch_count[1] + st.batch_count[2] + st.batch_count[3] + st.batch_count[4] == NT * NR &&
             st.batch_count[1] == NT * NR / 4, "batch_count histogram wrong");
    dm_sched_free(s);
    free(b);
    dm_ctx_free(ref);
    dm_model_free(m);
}

/* The asynchronous submit: every queued request calls back exactly once with
 * correct results; refusals return at once without a callback. */
typedef struct async_log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls[16], results[16], total, held[16];
    pthread_t thread[16];
} async_log;
typedef struct async_arg { async_log *log; int i; } async_arg;

static void async_done(void *arg, int result)
{
    async_arg *a = arg;
    pthread_mutex_lock(&a->log->mu);
    a->log->calls[a->i]++;
    a->log->results[a->i] = result;
    a->log->thread[a->i] = pthread_self();
    a->log->total++;
    pthread_cond_signal(&a->log->cv);
    pthread_mutex_unlock(&a->log->mu);
}

/* Waits (20 s at most) until n callbacks have come. */
static void wait_calls(async_log *log, int n)
{
    pthread_mutex_lock(&log->mu);
    double t0 = secs();
    while (log->total < n && secs() - t0 < 20) {
        pthread_mutex_unlock(&log->mu);
        sleep_ms(2);
        pthread_mutex_lock(&log->mu);
    }
    pthread_mutex_unlock(&log->mu);
}

static void async_held(void *arg)
{
    async_arg *a = arg;
    pthread_mutex_lock(&a->log->mu);
    a->log->held[a->i]++;
    pthread_mutex_unlock(&a->log->mu);
}

static void test_serve_sched_async(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();
    c.max_queue_delay_us = 2000;
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s || !ref) { dm_ctx_free(ref); dm_model_free(m); return; }
    static req_buf b[16];
    async_log log = {.total = 0};
    pthread_mutex_init(&log.mu, NULL);
    pthread_cond_init(&log.cv, NULL);
    async_arg args[16];
    for (int i = 0; i < 16; i++) {
        req_init(&b[i], 1 + i % 3, 300 + (uint64_t)i, ref);
        args[i] = (async_arg){&log, i};
        CHECK(t, dm_sched_submit_async(s, &b[i].r, async_done, &args[i]) == DM_SCHED_OK, "request %d refused", i);
    }
    req_buf big;
    req_init(&big, 1, 1, ref);
    big.r.rows = 9;  /* above max_batch_size 8: refused at once, no callback */
    CHECK(t, dm_sched_submit_async(s, &big.r, async_done, &args[0]) == DM_SCHED_TOO_BIG, "too big must be refused");
    wait_calls(&log, 16);
    CHECK(t, log.total == 16, "%d callbacks, want 16", log.total);
    for (int i = 0; i < 16; i++) {
        CHECK(t, log.calls[i] == 1 && log.results[i] == DM_SCHED_OK, "request %d: %d calls, result %d", i,
              log.calls[i], log.results[i]);
        CHECK(t, req_matches(&b[i]), "request %d differs from dm_forward", i);
    }
    dm_sched_free(s);
    pthread_mutex_destroy(&log.mu);
    pthread_cond_destroy(&log.cv);
    dm_ctx_free(ref);
    dm_model_free(m);
}

/* dm_sched_submit_many: what fits one batch runs as one batch on the
 * calling thread, its callbacks before the call returns; a refusal is a
 * return code; what does not fit is held (once each) and goes to the
 * instance's thread. */
static void test_serve_sched_submit_many(dm_t *t)
{
    dm_model *m = small_model(t);
    if (!m) return;
    dm_ctx *ref = NULL;
    dm_error err = {0};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ref, &err), &err);
    dm_sched_config c = base_cfg();   /* max_batch_size 8, no queue delay */
    dm_sched *s = NULL;
    CHECK_OK(t, dm_sched_create(m, &c, &s, &err), &err);
    if (!s || !ref) { dm_ctx_free(ref); dm_model_free(m); return; }
    static req_buf b[16];
    async_log log = {.total = 0};
    pthread_mutex_init(&log.mu, NULL);
    pthread_cond_init(&log.cv, NULL);
    async_arg args[16];
    dm_sched_request *rs[16];
    void *as[16];
    int rc[16];
    static const int rows[7] = {1, 2, 1, 1, 2, 1, 9};   /* 8 rows, then one over max_batch_size */
    for (int i = 0; i < 7; i++) {
        req_init(&b[i], rows[i] > 8 ? 1 : rows[i], 500 + (uint64_t)i, ref);
        b[i].r.rows = rows[i];
        args[i] = (async_arg){&log, i};
        rs[i] = &b[i].r;
        as[i] = &args[i];
    }
    dm_sched_submit_many(s, rs, as, 7, async_done, async_held, rc);
    pthread_mutex_lock(&log.mu);
    int done_at_return = log.total;
    pthread_mutex_unlock(&log.mu);
    CHECK(t, rc[6] == DM_SCHED_TOO_BIG, "the 9-row request: rc %d, want TOO_BIG", rc[6]);
    CHECK(t, done_at_return == 6, "%d of 6 callbacks before the call returned (the batch runs on the caller)",
          done_at_return);
    for (int i = 0; i < 6; i++) {
        CHECK(t, rc[i] == DM_SCHED_OK && log.calls[i] == 1 && log.results[i] == DM_SCHED_OK,
              "request %d: rc %d, %d calls, result %d", i, rc[i], log.calls[i], log.results[i]);
        CHECK(t, pthread_equal(log.thread[i], pthread_self()), "request %d called back on another thread", i);
        CHECK(t, log.held[i] == 0, "request %d ran here but was held", i);
        CHECK(t, b[i].r.batch_rows == 8, "request %d ran in a batch of %d rows, want all 8 together", i,
              b[i].r.batch_rows);
        CHECK(t, req_matches(&b[i]), "request %d differs from dm_forward", i);
    }
    dm_sched_stats st;
    dm_sched_stats_get(s, &st);
    CHECK(t, st.execution_count == 1 && st.batch_count[8] == 1, "%llu executions, want one of 8 rows",
          (unsigned long long)st.execution_count);
    /* 12 rows: the first 8 run here, the other 4 on the instance's thread */
    log.total = 0;
    for (int i = 0; i < 12; i++) {
        req_init(&b[i], 1, 600 + (uint64_t)i, ref);
        log.calls[i] = log.held[i] = 0;
        args[i] = (async_arg){&log, i};
        rs[i] = &b[i].r;
        as[i] = &args[i];
    }
    dm_sched_submit_many(s, rs, as, 12, async_done, async_held, rc);
    wait_calls(&log, 12);
    CHECK(t, log.total == 12, "%d of 12 callbacks", log.total);
    int here = 0;
    for (int i = 0; i < 12; i++) {
        CHECK(t, rc[i] == DM_SCHED_OK && log.calls[i] == 1 && req_matches(&b[i]), "request %d of 12", i);
        int on_caller = pthread_equal(log.thread[i], pthread_self()) != 0;
        here += on_caller;
        CHECK(t, log.held[i] == !on_caller, "request %d: held %d times, ran on the caller: %d", i, log.held[i],
              on_caller);
    }
    CHECK(t, here == 8, "%d requests ran on the caller, want the first batch of 8", here);
    dm_sched_free(s);
    pthread_mutex_destroy(&log.mu);
    pthread_cond_destroy(&log.cv);
    dm_ctx_free(ref);
    dm_model_free(m);
}

void suite_serve_sched(dm_t *t)
{
    DM_RUN(t, test_serve_sched_submit_many);
    DM_RUN(t, test_serve_sched_async);
    DM_RUN(t, test_serve_sched_matches_forward);
    DM_RUN(t, test_serve_sched_concurrent);
    DM_RUN(t, test_serve_sched_preferred);
    DM_RUN(t, test_serve_sched_size_cut_and_free);
    DM_RUN(t, test_serve_sched_free_pending);
    DM_RUN(t, test_serve_sched_queue_full);
    DM_RUN(t, test_serve_sched_timeout);
    DM_RUN(t, test_serve_sched_too_big_and_bad);
    DM_RUN(t, test_serve_sched_no_dynamic_batching);
}
