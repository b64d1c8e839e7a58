/* deepmoe/dist.h - distributed runs over MPI: a communicator, the modes of
 * distributed training, expert-parallel inference.
 *
 *     mpirun -np 4 deepmoe train --dist zero2 --expert-parallel 2 ...
 *
 * The library is built with MPI when mpicc is present (make MPI=1 forces it,
 * MPI=0 leaves it out); without it dm_comm_world fails with DM_ERR_UNSUPPORTED
 * and everything else runs single-process. Every collective is non-blocking
 * underneath and waited for with a deadline (dm_comm timeout_s): a rank that
 * died or hangs makes the others fail with DM_ERR_COMM instead of hanging. A
 * failed collective leaves the group unusable: the caller ends the job with
 * dm_comm_abort. docs/distributed.md. */
#include "deepmoe.h"

#ifndef DEEPMOE_DIST_H
#define DEEPMOE_DIST_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dm_comm dm_comm;

typedef enum {
    DM_DIST_NONE = 0,  /* one process */
    DM_DIST_DP,        /* data parallel: gradients all-reduced in buckets, overlapped with the backward */
    DM_DIST_ZERO1,     /* + AdamW moments sharded */
    DM_DIST_ZERO2,     /* + gradients reduce-scattered (sharded) */
    DM_DIST_ZERO3,     /* + parameters sharded, all-gathered per layer for its forward and backward */
} dm_dist_mode;

/* 1 when this library was built with MPI. */
DM_API int dm_dist_built(void);
/* 1 when the process was started by a launcher (mpirun, srun): its environment says so. */
DM_API int dm_dist_launched(void);
/* "dp", "zero1", ...; NULL for an unknown mode. */
DM_API const char *dm_dist_mode_name(int mode);
/* The mode of a name, or -1. */
DM_API int dm_dist_mode_parse(const char *name);

/* MPI_COMM_WORLD (MPI initialised with MPI_THREAD_FUNNELED on the first call).
 * With more than one rank it also sets glibc malloc to keep freed memory below
 * 64 MiB (mallopt M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 64 MiB): MPI's
 * non-blocking collectives allocate their buffers per call.
 * timeout_s: the deadline of every collective (> 0). */
DM_API dm_status dm_comm_world(double timeout_s, dm_comm **out, dm_error *err);
DM_API int dm_comm_rank(const dm_comm *c);
DM_API int dm_comm_size(const dm_comm *c);
/* Frees the communicator; the world's also finalizes MPI (collective). */
DM_API void dm_comm_free(dm_comm *c);
/* Ends every rank of the job (MPI_Abort) with this exit code. */
DM_API void dm_comm_abort(dm_comm *c, int code);

/* What a communicator has done since it was made (or since the last reset). */
typedef struct dm_comm_stats {
    double seconds;          /* in collectives (start to completion, as the caller waited) */
    double bytes_sent;       /* this rank's payload bytes sent, by the collectives' textbook volumes */
    int64_t calls;
} dm_comm_stats;
DM_API void dm_comm_get_stats(const dm_comm *c, dm_comm_stats *s);
DM_API void dm_comm_reset_stats(dm_comm *c);

/* ---- distributed training (dm_run_train does all of this for a run) */

/* Spreads t over the ranks of world (which must outlive t) before its first
 * step: mode DM_DIST_DP..DM_DIST_ZERO3, expert_parallel P (0 or 1: none; P
 * must divide the ranks, and combines with DM_DIST_DP only). Every rank then
 * gives dm_train_step its own rows (grad_accum micro-batches each); the step
 * equals one process's step over all ranks' rows with grad_accum * ranks
 * micro-batches, rank r's being numbers r*A .. r*A + A-1. Collective. */
DM_API dm_status dm_trainer_distribute(dm_trainer *t, dm_comm *world, int mode, int expert_parallel,
                                       dm_error *err);
/* Makes the whole state (parameters, moments) present on every rank, for an
 * evaluation or a checkpoint (collective); dm_trainer_release drops it again. */
DM_API dm_status dm_trainer_gather(dm_trainer *t, dm_error *err);
DM_API void dm_trainer_release(dm_trainer *t);

/* What a trainer holds on this rank, bytes (the ZeRO formulas count params,
 * grads and moments: 4 + 4 + 8 per parameter in one process; stage 1
 * 4 + 4 + 8/N, stage 2 4 + (4 + 8)/N, stage 3 16/N). */
typedef struct dm_train_memory {
    int64_t n_params;
    int64_t params, grads, moments;   /* held between steps */
    int64_t packed;          /* the kernels' packed copies (zero3: the largest unit's, while it runs) */
    int64_t gathered;        /* zero2/3: the largest unit's gathered parameters or gradients, while in use */
    int64_t rss, rss_peak;   /* the process's resident set and its high-water mark */
} dm_train_memory;
DM_API void dm_trainer_memory(const dm_trainer *t, dm_train_memory *m);
/* How the gradients are summed: *host_ranks ranks on each of *hosts hosts
 * through shared memory (docs/distributed.md), MPI across hosts; 1 and the
 * ranks: by MPI alone (zero2, zero3, expert parallel, one rank per host,
 * DEEPMOE_SHM=0). One process: 1, 1. *replica: 1 where the host's ranks share
 * one copy of the parameters and moments (dp in fp32 there; made at the
 * first step; DEEPMOE_SHM_REPLICA=0: a copy per rank). */
DM_API void dm_trainer_reduce_topology(const dm_trainer *t, int *host_ranks, int *hosts, int *replica);
/* Measurement only (deepmoe bench --no-sync): sync 0 skips the gradient
 * reductions, so each rank trains on its own rows and the ranks drift apart;
 * the step time without them gives the communication share as PyTorch's
 * no_sync() comparison measures it. */
DM_API void dm_trainer_set_sync(dm_trainer *t, int sync);
/* The trainer's communication so far (every communicator it uses, summed). */
DM_API void dm_trainer_comm_stats(const dm_trainer *t, dm_comm_stats *s);

/* rows_per_rank[r] rows of width floats from each rank r, in rank order in
 * buf (each rank's own already in place): every rank gets them all. */
DM_API dm_status dm_comm_allgather_rows(dm_comm *c, float *buf, const int64_t *rows_per_rank, int width,
                                        dm_error *err);

/* Expert-parallel inference: ctx's MoE layers send the rows of experts that
 * other ranks of c own to them (expert e lives on rank e * size / E) and run
 * their own. Every rank of c calls dm_forward the same number of times (0
 * rows is fine). The exchange is freed with the context's owner: call
 * dm_ctx_expert_parallel(ctx, NULL, ...) before dm_comm_free. */
DM_API dm_status dm_ctx_expert_parallel(dm_ctx *ctx, dm_comm *c, dm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DEEPMOE_DIST_H */
