/* test_trace.c - the profiler's library face: start/stop, the event cap,
 * thread lanes, nothing recorded while off, and dm_trace_summarize's self and
 * total times on a trace written by hand. (tests/test_profile.py runs it
 * through the commands.) */
#include "test.h"
#include "obs/trace.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const dm_span_kind K_A = {"op a", "test", "rows", NULL};
static const dm_span_kind K_B = {"op b", "test", NULL, NULL};

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static char *trace_text(const char *name)
{
    size_t n;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dm_test_tmpdir(), name);
    unsigned char *b = dm_test_slurp(path, &n);
    if (!b) return NULL;
    char *s = realloc(b, n + 1);
    if (s) s[n] = 0;
    return s;
}

static const char *tpath(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dm_test_tmpdir(), name);
    return path;
}

static void test_trace_lifecycle(dm_t *t)
{
    dm_error err;
    CHECK(t, dm_trace_stop(tpath("none.json"), &err) == DM_ERR_ARG, "stop without a start must fail");
    /* spans while off leave nothing */
    uint64_t t0 = dm_span_begin();
    CHECK(t, t0 == 0, "off: dm_span_begin returns 0");
    dm_span_end(&K_A, dm_trace_now_ns(), 1, 0);   /* even with a time: off records nothing */
    CHECK_OK(t, dm_trace_start(NULL, &err), &err);
    CHECK(t, dm_trace_active(), "active after start");
    CHECK(t, dm_trace_start(NULL, &err) == DM_ERR_ARG, "a second start must fail");
    t0 = dm_span_begin();
    uint64_t t1 = dm_span_begin();
    dm_span_end(&K_B, t1, 0, 0);
    dm_span_end(&K_A, t0, 7, 0);
    double v[3] = {0.5, 0.25, 0.25};
    dm_trace_counter("load", 3, v);
    CHECK_OK(t, dm_trace_stop(tpath("life.json"), &err), &err);
    CHECK(t, !dm_trace_active(), "inactive after stop");
    char *s = trace_text("life.json");
    CHECK(t, s && count(s, "\"ph\":\"X\"") == 2, "two spans: %s", s ? s : "(no file)");
    CHECK(t, s && strstr(s, "\"name\":\"op a\"") && strstr(s, "\"args\":{\"rows\":7}"), "op a with its rows argument");
    CHECK(t, s && strstr(s, "\"ph\":\"C\",\"name\":\"load\"") && strstr(s, "\"e1\":0.25"), "the counter");
    CHECK(t, s && strstr(s, "\"thread_name\",\"args\":{\"name\":\"main\"}"), "the starting thread's lane is main");
    free(s);
    /* a second trace starts empty */
    CHECK_OK(t, dm_trace_start(NULL, &err), &err);
    CHECK_OK(t, dm_trace_stop(tpath("empty.json"), &err), &err);
    s = trace_text("empty.json");
    CHECK(t, s && count(s, "\"ph\":\"X\"") == 0, "a new trace holds none of the last one's spans");
    free(s);
    CHECK_OK(t, dm_trace_start(NULL, &err), &err);
    CHECK(t, dm_trace_stop("/nonexistent-dir/t.json", &err) == DM_ERR_IO, "an unwritable path is an I/O error");
    CHECK(t, !dm_trace_active(), "stopped even when the write failed");
}

static void test_trace_cap(dm_t *t)
{
    dm_error err;
    dm_trace_opts o;
    dm_trace_opts_default(&o);
    o.max_events = 10;
    o.pid = 3;
    CHECK_OK(t, dm_trace_start(&o, &err), &err);
    for (int i = 0; i < 25; i++) dm_span_end(&K_B, dm_span_begin(), 0, 0);
    int64_t rec, drop;
    dm_trace_counts(&rec, &drop);
    CHECK(t, rec == 10 && drop == 15, "recorded %lld dropped %lld", (long long)rec, (long long)drop);
    CHECK_OK(t, dm_trace_stop(tpath("cap.json"), &err), &err);
    char *s = trace_text("cap.json");
    CHECK(t, s && count(s, "\"ph\":\"X\"") == 10 && strstr(s, "\"dropped_events\":15"), "10 spans kept, 15 dropped");
    CHECK(t, s && count(s, "\"pid\":3") > 10, "every event carries the pid (rank)");
    free(s);
    o.max_events = 0;
    CHECK(t, dm_trace_start(&o, &err) == DM_ERR_ARG, "max_events 0 is refused");
}

static void *lane_main(void *arg)
{
    char name[32];
    snprintf(name, sizeof name, "worker %d", (int)(intptr_t)arg);
    dm_trace_thread_name(name);
    for (int i = 0; i < 100; i++) dm_span_end(&K_A, dm_span_begin(), i, 0);
    return NULL;
}

static void test_trace_threads(dm_t *t)
{
    dm_error err;
    CHECK_OK(t, dm_trace_start(NULL, &err), &err);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, lane_main, (void *)(intptr_t)i);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    CHECK_OK(t, dm_trace_stop(tpath("threads.json"), &err), &err);
    char *s = trace_text("threads.json");
    CHECK(t, s && count(s, "\"ph\":\"X\"") == 300, "300 spans from 3 threads");
    CHECK(t, s && count(s, "\"name\":\"thread_name\"") == 4, "4 lanes: main and 3 workers");
    CHECK(t, s && strstr(s, "{\"name\":\"worker 2\"}"), "lanes carry their thread's name");
    free(s);
    /* the summary of it: one op, 300 calls, over 3 lanes that ran spans */
    dm_trace_summary sm;
    CHECK_OK(t, dm_trace_summarize(tpath("threads.json"), &sm, &err), &err);
    CHECK(t, sm.n_ops == 1 && sm.ops[0].calls == 300 && sm.n_lanes == 3, "ops %d calls %lld lanes %d", sm.n_ops,
          sm.n_ops ? (long long)sm.ops[0].calls : 0LL, sm.n_lanes);
    dm_trace_summary_free(&sm);
}

static void test_trace_summary(dm_t *t)
{
    /* lane 1: step [0,100) holds a [10,40) and b [50,60); a holds b [20,25);
     * lane 2: a [0,30) and b [20,50) overlap without nesting */
    static const char txt[] =
        "{\"traceEvents\":["
        "{\"ph\":\"M\",\"pid\":0,\"tid\":1,\"name\":\"thread_name\",\"args\":{\"name\":\"x\"}},"
        "{\"ph\":\"X\",\"name\":\"step\",\"pid\":0,\"tid\":1,\"ts\":0,\"dur\":100},"
        "{\"ph\":\"X\",\"name\":\"a\",\"pid\":0,\"tid\":1,\"ts\":10,\"dur\":30},"
        "{\"ph\":\"X\",\"name\":\"b\",\"pid\":0,\"tid\":1,\"ts\":20,\"dur\":5},"
        "{\"ph\":\"X\",\"name\":\"b\",\"pid\":0,\"tid\":1,\"ts\":50,\"dur\":10},"
        "{\"ph\":\"X\",\"name\":\"a\",\"pid\":0,\"tid\":2,\"ts\":0,\"dur\":30},"
        "{\"ph\":\"X\",\"name\":\"b\",\"pid\":0,\"tid\":2,\"ts\":20,\"dur\":30},"
        "{\"ph\":\"C\",\"name\":\"c\",\"pid\":0,\"ts\":5,\"args\":{\"e0\":1}}]}";
    const char *path = dm_test_write_file("hand.json", txt, sizeof txt - 1);
    dm_trace_summary sm;
    dm_error err;
    CHECK_OK(t, dm_trace_summarize(path, &sm, &err), &err);
    double self[3] = {-1, -1, -1}, total[3] = {-1, -1, -1};
    int64_t calls[3] = {0};
    static const char *const nm[3] = {"step", "a", "b"};
    for (int i = 0; i < sm.n_ops; i++)
        for (int j = 0; j < 3; j++)
            if (!strcmp(sm.ops[i].name, nm[j])) self[j] = sm.ops[i].self_us, total[j] = sm.ops[i].total_us, calls[j] = sm.ops[i].calls;
    CHECK(t, sm.n_ops == 3 && sm.n_spans == 6 && sm.n_lanes == 2, "ops %d spans %lld lanes %d", sm.n_ops,
          (long long)sm.n_spans, sm.n_lanes);
    CHECK(t, self[0] == 60 && total[0] == 100 && calls[0] == 1, "step self %g total %g", self[0], total[0]);
    CHECK(t, self[1] == 25 + 30 && total[1] == 60 && calls[1] == 2, "a self %g total %g", self[1], total[1]);
    CHECK(t, self[2] == 45 && total[2] == 45 && calls[2] == 3, "b self %g total %g", self[2], total[2]);
    CHECK(t, sm.overlaps == 1, "one overlap: %lld", (long long)sm.overlaps);
    CHECK(t, sm.ops[0].self_us >= sm.ops[sm.n_ops - 1].self_us, "sorted by self time");
    CHECK(t, sm.wall_us == 100, "wall %g", sm.wall_us);
    dm_trace_summary_free(&sm);
    const char *bad = dm_test_write_file("bad.json", "{\"traceEvents\":[{\"ph\":\"X\",\"name\":1}]}", 38);
    CHECK(t, dm_trace_summarize(bad, &sm, &err) == DM_ERR_FORMAT && strstr(err.msg, "bad.json"),
          "an X event without ts/dur is a format error naming the file: %s", err.msg);
    CHECK(t, dm_trace_summarize(tpath("no-such.json"), &sm, &err) == DM_ERR_IO, "a missing file is an I/O error");
}

void suite_trace(dm_t *t)
{
    DM_RUN(t, test_trace_lifecycle);
    DM_RUN(t, test_trace_cap);
    DM_RUN(t, test_trace_threads);
    DM_RUN(t, test_trace_summary);
}
