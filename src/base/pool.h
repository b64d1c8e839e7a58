/* pool.h - the thread pool's internal face: run n tasks, claimed by an atomic
 * counter so that uneven tasks (a hot expert) still keep every thread busy. */
#ifndef DM_POOL_H
#define DM_POOL_H

#include "deepmoe.h"

/* fn(arg, task, tid) for task in [0, n_tasks); tid in [0, dm_pool_size) names
 * the thread (index for per-thread scratch). pool NULL runs inline with tid 0.
 * Returns when every task has finished. Not reentrant for one pool. */
typedef void (*dm_task_fn)(void *arg, int64_t task, int tid);
void dm_pool_run(dm_pool *pool, int64_t n_tasks, dm_task_fn fn, void *arg);

/* dst = src for bytes bytes (src NULL: dst = 0), in 64 KB pieces over the
 * pool: a large copy or clear that would leave the other threads idle. */
void dm_pool_copy(dm_pool *pool, void *dst, const void *src, size_t bytes);

#endif
