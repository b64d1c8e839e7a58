/* pool.c - a fixed set of worker threads that run one batch of tasks at a time.
 *
 * dm_pool_run publishes (fn, arg, n_tasks) under a generation number; every
 * thread, the caller included, claims task indices from one atomic counter
 * until they run out, so skewed task sizes balance themselves. The caller
 * returns once all workers have checked the batch in. A pool serves one
 * dm_pool_run at a time; instances that run side by side take a pool each. */
#include "base/base.h"
#include "base/pool.h"
#include "obs/trace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dm_pool {
    int n;                       /* threads including the caller */
    pthread_t *workers;          /* [n - 1] */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;         /* bumped for each batch */
    int busy;                    /* workers still inside the batch */
    int stop;
    dm_task_fn fn;
    void *arg;
    int64_t n_tasks;
    _Atomic int64_t next;
};

typedef struct { dm_pool *pool; int tid; } worker_arg;

static void drain(dm_pool *p, int tid)
{
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->arg, i, tid);
    }
}

static void *worker_main(void *v)
{
    worker_arg wa = *(worker_arg *)v;
    free(v);
    dm_pool *p = wa.pool;
    char name[32];
    snprintf(name, sizeof name, "pool worker %d", wa.tid);
    dm_trace_thread_name(name);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p, wa.tid);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

dm_status dm_pool_create(int n_threads, dm_pool **out, dm_error *err)
{
    *out = NULL;
    if (n_threads < 0 || n_threads > 1024)
        return dm_fail(err, DM_ERR_ARG, "thread count %d out of range (0 = all CPUs, 1..1024)", n_threads);
    if (n_threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)DM_MIN(c, 1024) : 1;
    }
    dm_pool *p = calloc(1, sizeof *p);
    if (!p) return dm_fail(err, DM_ERR_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) { dm_pool_free(p); return dm_fail(err, DM_ERR_NOMEM, "thread pool: out of memory"); }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->workers[i - 1], NULL, worker_main, wa ? (*wa = (worker_arg){p, i}, wa) : NULL) != 0) {
            free(wa);
            p->n = i;  /* only the started ones are joined */
            dm_pool_free(p);
            return dm_fail(err, DM_ERR_NOMEM, "thread pool: cannot start thread %d of %d", i + 1, n_threads);
        }
    }
    *out = p;
    return DM_OK;
}

void dm_pool_free(dm_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->workers; i++) pthread_join(p->workers[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int dm_pool_size(const dm_pool *p) { return p ? p->n : 1; }

void dm_pool_run(dm_pool *p, int64_t n_tasks, dm_task_fn fn, void *arg)
{
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {  /* no wake-ups when there is nothing to share */
        for (int64_t i = 0; i < n_tasks; i++) fn(arg, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->busy = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

#define POOL_PIECE ((size_t)64 * 1024)

typedef struct copy_arg { unsigned char *dst; const unsigned char *src; size_t bytes; } copy_arg;

static void copy_task(void *arg, int64_t i, int tid)
{
    (void)tid;
    const copy_arg *a = arg;
    size_t at = (size_t)i * POOL_PIECE, n = a->bytes - at < POOL_PIECE ? a->bytes - at : POOL_PIECE;
    if (a->src) memcpy(a->dst + at, a->src + at, n);
    else memset(a->dst + at, 0, n);
}

void dm_pool_copy(dm_pool *p, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    copy_arg a = {dst, src, bytes};
    dm_pool_run(p, (int64_t)((bytes + POOL_PIECE - 1) / POOL_PIECE), copy_task, &a);
}
