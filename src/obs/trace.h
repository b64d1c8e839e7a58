/* trace.h - the profiler's internal face: spans, async spans and counters.
 *
 *     static const dm_span_kind SK_ROUTER = {"router", "moe", "rows", "layer"};
 *     uint64_t t0 = dm_span_begin();
 *     ... the op ...
 *     dm_span_end(&SK_ROUTER, t0, n, l);
 *
 * With no trace running dm_span_begin is one relaxed load and returns 0, and
 * dm_span_end does nothing. A span is a Chrome "complete" event on the calling
 * thread's lane; its two arguments are named by the kind (NULL: not written). */
#ifndef DM_OBS_TRACE_H
#define DM_OBS_TRACE_H

#include "deepmoe.h"

#include <stdatomic.h>

typedef struct dm_span_kind {
    const char *name;   /* the op, as profile-summary groups it */
    const char *cat;    /* moe | train | serve | data | io */
    const char *arg0, *arg1;
} dm_span_kind;

extern _Atomic int dm_trace_on_;

uint64_t dm_trace_now_ns(void);
void dm_trace_span_(const dm_span_kind *k, uint64_t t0, uint64_t t1, int64_t a0, int64_t a1);

static inline uint64_t dm_span_begin(void)
{
    return atomic_load_explicit(&dm_trace_on_, memory_order_relaxed) ? dm_trace_now_ns() : 0;
}

static inline void dm_span_end(const dm_span_kind *k, uint64_t t0, int64_t a0, int64_t a1)
{
    if (t0) dm_trace_span_(k, t0, dm_trace_now_ns(), a0, a1);
}

/* A span that does not belong to one thread (a request's queue wait): Chrome's
 * async pair ("b"/"e") with an id, on the calling thread's process. */
void dm_trace_async(const dm_span_kind *k, uint64_t id, uint64_t t0, uint64_t t1, int64_t a0, int64_t a1);

/* A counter sample now: args e0..e{n-1} = v[0..n-1] (expert load per step). */
void dm_trace_counter(const char *name, int n, const double *v);

#endif
