/* prefetch.h - the next step's batch, prepared on its own thread while the
 * step runs (double buffering).
 *
 * The caller's fill function prepares the batch of one step into a buffer;
 * requests come strictly in step order and are filled one at a time in that
 * order, so whatever state fill advances (a batcher's position) moves exactly
 * as if the caller had called it itself before each step. */
#ifndef DM_PREFETCH_H
#define DM_PREFETCH_H

#include "base/base.h"

/* One prepared batch: the caller's buffers, and what fill reports. */
typedef struct dm_batch {
    float *x, *y;
    int32_t *labels;
    int64_t step;         /* the step it is for */
    int64_t epoch, pos;   /* fill's: the data position after it (what a checkpoint stores) */
    dm_status st;         /* fill's status; err says why */
    dm_error err;
} dm_batch;

typedef void (*dm_batch_fill)(void *ctx, dm_batch *b);  /* fills b for b->step, sets st (and epoch, pos) */

typedef struct dm_prefetch dm_prefetch;

/* A thread that fills bufs[0] and bufs[1] in turn (the caller owns them). */
dm_status dm_prefetch_start(dm_prefetch **out, dm_batch bufs[2], dm_batch_fill fill, void *ctx, dm_error *err);
/* Asks for step's batch, into the buffer the last dm_prefetch_get did not return. */
void dm_prefetch_request(dm_prefetch *p, int64_t step);
/* Waits for the batch last requested and returns it; the caller may read it
 * until its second dm_prefetch_request after this call. */
dm_batch *dm_prefetch_get(dm_prefetch *p);
/* Finishes the work in flight and joins the thread. NULL: nothing. */
void dm_prefetch_stop(dm_prefetch *p);

#endif
