/* trace.c - the profiler: per-thread event buffers, written as Chrome
 * trace-event JSON at dm_trace_stop.
 *
 * Each thread appends to its own buffer (chunks of CHUNK events), found through a
 * thread-local pointer tagged with the trace's generation, so a span costs two
 * clock reads and a store; only a thread's first event of a trace takes the lock
 * (to register its lane). dm_trace_stop clears the flag, waits for the emitters
 * still inside (an in-flight count), then writes and frees everything. */
#define _GNU_SOURCE
#include "base/base.h"
#include "obs/trace.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 4096
#define NAME_MAX_ 48

typedef struct ev {
    const dm_span_kind *k;
    uint64_t t0, t1, id;
    int64_t a0, a1;
    char ph;             /* 'X' span, 'A' async pair */
} ev;

typedef struct chunk {
    struct chunk *next;
    int n;
    ev e[CHUNK];
} chunk;

typedef struct tbuf {
    struct tbuf *next;
    int tid;
    char name[NAME_MAX_];
    chunk *head, *tail;
} tbuf;

typedef struct counter {
    struct counter *next;
    char name[NAME_MAX_];
    uint64_t t;
    int n;
    double v[];
} counter;

_Atomic int dm_trace_on_;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int inflight;
static _Atomic int64_t n_events, n_dropped;
static _Atomic int generation; /* bumped by each start: older thread-local buffers are stale */
static int next_tid;
static int64_t max_events;
static int trace_pid;
static uint64_t t_start;
static tbuf *lanes;           /* every registered thread's buffer */
static counter *counters;     /* newest first */

static _Thread_local struct { tbuf *b; int gen; char name[NAME_MAX_]; } tls;

uint64_t dm_trace_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void copy_name(char *dst, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < NAME_MAX_; i++)  /* JSON-safe: quotes, backslashes, controls become '_' */
        dst[i] = (src[i] == '"' || src[i] == '\\' || (unsigned char)src[i] < 0x20) ? '_' : src[i];
    dst[i] = 0;
}

void dm_trace_thread_name(const char *name)
{
    copy_name(tls.name, name);
    pthread_mutex_lock(&mu);
    if (tls.b && tls.gen == generation) copy_name(tls.b->name, name);
    pthread_mutex_unlock(&mu);
}

/* The calling thread's buffer of the running trace (NULL: out of memory). Under
 * the in-flight count, so a stop cannot free it meanwhile. */
static tbuf *mine(void)
{
    if (tls.b && tls.gen == generation) return tls.b;
    tbuf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    pthread_mutex_lock(&mu);
    b->tid = ++next_tid;
    if (tls.name[0]) memcpy(b->name, tls.name, NAME_MAX_);
    else snprintf(b->name, NAME_MAX_, "thread %d", b->tid);
    b->next = lanes;
    lanes = b;
    tls.b = b;
    tls.gen = generation;
    pthread_mutex_unlock(&mu);
    return b;
}

static ev *slot(void)
{
    if (atomic_fetch_add_explicit(&n_events, 1, memory_order_relaxed) >= max_events) {
        atomic_fetch_add_explicit(&n_dropped, 1, memory_order_relaxed);
        return NULL;
    }
    tbuf *b = mine();
    if (!b) return NULL;
    if (!b->tail || b->tail->n == CHUNK) {
        chunk *c = malloc(sizeof *c);
        if (!c) return NULL;
        c->next = NULL;
        c->n = 0;
        if (b->tail) b->tail->next = c;
        else b->head = c;
        b->tail = c;
    }
    return &b->tail->e[b->tail->n++];
}

static void record(char ph, const dm_span_kind *k, uint64_t id, uint64_t t0, uint64_t t1, int64_t a0, int64_t a1)
{
    atomic_fetch_add_explicit(&inflight, 1, memory_order_acq_rel);
    if (atomic_load_explicit(&dm_trace_on_, memory_order_acquire)) {
        ev *e = slot();
        if (e) *e = (ev){.k = k, .t0 = t0, .t1 = t1, .id = id, .a0 = a0, .a1 = a1, .ph = ph};
    }
    atomic_fetch_sub_explicit(&inflight, 1, memory_order_acq_rel);
}

void dm_trace_span_(const dm_span_kind *k, uint64_t t0, uint64_t t1, int64_t a0, int64_t a1)
{
    record('X', k, 0, t0, t1, a0, a1);
}

void dm_trace_async(const dm_span_kind *k, uint64_t id, uint64_t t0, uint64_t t1, int64_t a0, int64_t a1)
{
    if (t0 && atomic_load_explicit(&dm_trace_on_, memory_order_relaxed)) record('A', k, id, t0, t1, a0, a1);
}

void dm_trace_counter(const char *name, int n, const double *v)
{
    if (!atomic_load_explicit(&dm_trace_on_, memory_order_relaxed) || n <= 0) return;
    counter *c = malloc(sizeof *c + (size_t)n * sizeof(double));
    if (!c) return;
    copy_name(c->name, name);
    c->t = dm_trace_now_ns();
    c->n = n;
    memcpy(c->v, v, (size_t)n * sizeof(double));
    pthread_mutex_lock(&mu);
    if (atomic_load_explicit(&dm_trace_on_, memory_order_relaxed)) {
        c->next = counters;
        counters = c;
        c = NULL;
    }
    pthread_mutex_unlock(&mu);
    free(c);
}

void dm_trace_opts_default(dm_trace_opts *o)
{
    o->max_events = 4000000;
    o->pid = 0;
}

int dm_trace_active(void) { return atomic_load_explicit(&dm_trace_on_, memory_order_relaxed); }

void dm_trace_counts(int64_t *recorded, int64_t *dropped)
{
    int64_t n = atomic_load(&n_events), d = atomic_load(&n_dropped);
    if (recorded) *recorded = n - d;
    if (dropped) *dropped = d;
}

dm_status dm_trace_start(const dm_trace_opts *o, dm_error *err)
{
    dm_trace_opts d;
    if (!o) dm_trace_opts_default(&d), o = &d;
    if (o->max_events < 1) return dm_fail(err, DM_ERR_ARG, "trace: max_events %lld must be >= 1", (long long)o->max_events);
    pthread_mutex_lock(&mu);
    int running = atomic_load(&dm_trace_on_);
    if (!running) {
        generation++;
        next_tid = 0;
        max_events = o->max_events;
        trace_pid = o->pid;
        atomic_store(&n_events, 0);
        atomic_store(&n_dropped, 0);
        t_start = dm_trace_now_ns();
    }
    pthread_mutex_unlock(&mu);
    if (running) return dm_fail(err, DM_ERR_ARG, "trace: a trace is already running (dm_trace_stop it first)");
    if (!tls.name[0]) copy_name(tls.name, "main");
    atomic_store(&dm_trace_on_, 1);
    mine();  /* the starting thread takes the first lane */
    return DM_OK;
}

static double us(uint64_t t) { return t > t_start ? (double)(t - t_start) * 1e-3 : 0.0; }

static void write_args(FILE *f, const dm_span_kind *k, int64_t a0, int64_t a1)
{
    if (!k->arg0 && !k->arg1) return;
    fputs(",\"args\":{", f);
    if (k->arg0) fprintf(f, "\"%s\":%lld", k->arg0, (long long)a0);
    if (k->arg1) fprintf(f, "%s\"%s\":%lld", k->arg0 ? "," : "", k->arg1, (long long)a1);
    fputc('}', f);
}

static void write_events(FILE *f)
{
    fprintf(f, "{\"traceEvents\":[\n{\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":\"deepmoe%s",
            trace_pid, trace_pid ? " rank " : "");
    if (trace_pid) fprintf(f, "%d", trace_pid);
    fputs("\"}}", f);
    for (tbuf *b = lanes; b; b = b->next) {
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s\"}}", trace_pid,
                b->tid, b->name);
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":%d}}",
                trace_pid, b->tid, b->tid);
        for (chunk *c = b->head; c; c = c->next)
            for (int i = 0; i < c->n; i++) {
                const ev *e = &c->e[i];
                if (e->ph == 'X') {
                    fprintf(f, ",\n{\"ph\":\"X\",\"cat\":\"%s\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f",
                            e->k->cat, e->k->name, trace_pid, b->tid, us(e->t0), us(e->t1) - us(e->t0));
                    write_args(f, e->k, e->a0, e->a1);
                    fputc('}', f);
                } else {
                    for (int end = 0; end < 2; end++) {
                        fprintf(f, ",\n{\"ph\":\"%c\",\"cat\":\"%s\",\"name\":\"%s\",\"id\":\"0x%llx\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f",
                                end ? 'e' : 'b', e->k->cat, e->k->name, (unsigned long long)e->id, trace_pid, b->tid,
                                us(end ? e->t1 : e->t0));
                        if (!end) write_args(f, e->k, e->a0, e->a1);
                        fputc('}', f);
                    }
                }
            }
    }
    for (const counter *c = counters; c; c = c->next) {
        fprintf(f, ",\n{\"ph\":\"C\",\"name\":\"%s\",\"pid\":%d,\"tid\":0,\"ts\":%.3f,\"args\":{", c->name, trace_pid, us(c->t));
        for (int i = 0; i < c->n; i++) fprintf(f, "%s\"e%d\":%.6g", i ? "," : "", i, c->v[i]);
        fputs("}}", f);
    }
    int64_t rec, drop;
    dm_trace_counts(&rec, &drop);
    fprintf(f, "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"deepmoe %s\",\"events\":%lld,"
               "\"dropped_events\":%lld}}\n", dm_version_string(), (long long)rec, (long long)drop);
}

static void free_all(void)
{
    for (tbuf *b = lanes, *nb; b; b = nb) {
        nb = b->next;
        for (chunk *c = b->head, *nc; c; c = nc) nc = c->next, free(c);
        free(b);
    }
    lanes = NULL;
    for (counter *c = counters, *nc; c; c = nc) nc = c->next, free(c);
    counters = NULL;
}

dm_status dm_trace_stop(const char *path, dm_error *err)
{
    if (!atomic_exchange(&dm_trace_on_, 0)) return dm_fail(err, DM_ERR_ARG, "trace: no trace is running");
    while (atomic_load(&inflight)) sched_yield();
    pthread_mutex_lock(&mu);
    dm_status s = DM_OK;
    if (path) {   /* written whole, then renamed over path */
        dm_atomic_file f;
        if (!(s = dm_atomic_open(&f, path, err))) {
            setvbuf(f.fp, NULL, _IOFBF, 1 << 20);
            write_events(f.fp);
            s = dm_atomic_commit(&f, err);
        }
    }
    free_all();
    generation++;   /* every thread-local buffer pointer is stale now */
    pthread_mutex_unlock(&mu);
    return s;
}
