/* deepmoe/trace.h - the op-level profiler: Chrome trace-event JSON that Perfetto
 * (ui.perfetto.dev) and chrome://tracing open.
 *
 * While a trace runs, every op of the library (router GEMM, top-k, dispatch, each
 * expert's up/down GEMM, LayerNorm, combine, each backward op, the optimizer,
 * checkpoint writes, the server's parse / queue wait / batch / encode) records a
 * span on the lane of the thread that ran it, and training steps add expert-load
 * counters. Off (the default), each op pays one relaxed load of a flag.
 *
 * The profiler is process-wide: the one piece of global state of the library, as
 * PyTorch's profiler is. Start and stop it from one thread, with no traced work
 * running at dm_trace_stop. The spans and the file are described in docs/profiling.md. */
#ifndef DEEPMOE_TRACE_H
#define DEEPMOE_TRACE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dm_trace_opts {
    int64_t max_events;  /* spans kept before further ones are counted as dropped (4,000,000) */
    int pid;             /* the trace's process id: the MPI rank of a distributed run (0) */
} dm_trace_opts;

DM_API void dm_trace_opts_default(dm_trace_opts *o);

/* Starts recording (o NULL: the defaults). Fails if a trace is already running. */
DM_API dm_status dm_trace_start(const dm_trace_opts *o, dm_error *err);

/* Stops recording and writes every recorded event to path (written whole to a
 * temporary file, then renamed; path NULL: nothing written). The recorded events
 * are freed either way. */
DM_API dm_status dm_trace_stop(const char *path, dm_error *err);

/* A distributed run's stop (every rank calls it, a collective): each rank writes
 * path.rankR (pid = its rank, from dm_trace_opts), then rank 0 merges them all
 * into path, one process per rank in Perfetto, and removes the rank files. A
 * rank file rank 0 cannot read (another host without a shared directory) stays
 * beside its rank, and rank 0 returns DM_ERR_IO saying so. comm NULL or of one
 * rank: dm_trace_stop(path). */
typedef struct dm_comm dm_comm;
DM_API dm_status dm_trace_stop_ranks(const char *path, dm_comm *comm, dm_error *err);

/* 1 while a trace records. */
DM_API int dm_trace_active(void);

/* Names the calling thread's lane ("main", "pool worker 1", "http 0"). */
DM_API void dm_trace_thread_name(const char *name);

/* Events recorded and dropped (over max_events) by the running or last trace. */
DM_API void dm_trace_counts(int64_t *recorded, int64_t *dropped);

/* PyTorch Profiler's key_averages() of a trace file: per op name its calls,
 * total time and self time (less its direct children on the same thread). */
typedef struct dm_op_stat {
    char name[64];
    int64_t calls;
    double total_us, self_us, max_us;
} dm_op_stat;

typedef struct dm_trace_summary {
    dm_op_stat *ops;     /* [n_ops], by self time, largest first */
    int n_ops;
    int64_t n_spans;     /* complete ("X") events read */
    int n_lanes;         /* threads (pid, tid pairs) */
    int64_t overlaps;    /* spans that overlap a span of their thread without nesting in it (0 in deepmoe's) */
    double wall_us;      /* first span's start to last span's end */
} dm_trace_summary;

DM_API dm_status dm_trace_summarize(const char *path, dm_trace_summary *out, dm_error *err);
DM_API void dm_trace_summary_free(dm_trace_summary *s);

#ifdef __cplusplus
}
#endif

#endif
