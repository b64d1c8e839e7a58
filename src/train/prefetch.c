/* prefetch.c - the next step's batch on its own thread (prefetch.h). */
#include "train/prefetch.h"

#include <pthread.h>
#include <stdlib.h>

struct dm_prefetch {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dm_batch *bufs;
    dm_batch_fill fill;
    void *ctx;
    int next;        /* the buffer the next request fills */
    int pending;     /* a request not yet filled */
    int busy;        /* the thread is filling */
    int done;        /* the last request is filled */
    int quit;
    dm_batch *last;  /* the buffer of the last request */
};

static void *prefetch_main(void *arg)
{
    dm_prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->pending && !p->quit) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->pending) break;  /* quit with nothing asked */
        dm_batch *b = p->last;
        p->pending = 0;
        p->busy = 1;
        pthread_mutex_unlock(&p->mu);
        p->fill(p->ctx, b);
        pthread_mutex_lock(&p->mu);
        p->busy = 0;
        p->done = 1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

dm_status dm_prefetch_start(dm_prefetch **out, dm_batch bufs[2], dm_batch_fill fill, void *ctx, dm_error *err)
{
    *out = NULL;
    dm_prefetch *p = calloc(1, sizeof *p);
    if (!p) return dm_fail(err, DM_ERR_NOMEM, "prefetch: out of memory");
    p->bufs = bufs;
    p->fill = fill;
    p->ctx = ctx;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->th, NULL, prefetch_main, p)) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return dm_fail(err, DM_ERR_NOMEM, "prefetch: cannot start a thread");
    }
    *out = p;
    return DM_OK;
}

void dm_prefetch_request(dm_prefetch *p, int64_t step)
{
    pthread_mutex_lock(&p->mu);
    while (p->pending || p->busy) pthread_cond_wait(&p->cv, &p->mu);  /* one at a time, in order */
    p->last = &p->bufs[p->next];
    p->next ^= 1;
    p->last->step = step;
    p->done = 0;
    p->pending = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

dm_batch *dm_prefetch_get(dm_prefetch *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->done) pthread_cond_wait(&p->cv, &p->mu);
    dm_batch *b = p->last;
    pthread_mutex_unlock(&p->mu);
    return b;
}

void dm_prefetch_stop(dm_prefetch *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    while (p->pending || p->busy) pthread_cond_wait(&p->cv, &p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
