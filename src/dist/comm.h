/* comm.h - the collectives deepmoe uses, over MPI (comm_mpi.c).
 *
 * Every call is collective over the communicator: each rank makes the same
 * calls in the same order. Each is started non-blocking and waited for until
 * c->timeout_s; past it the call fails with DM_ERR_COMM naming the collective
 * (a rank died or hangs) and the communicator is dead: every later call fails
 * at once, and the caller ends the job (dm_comm_abort). Counts are elements;
 * a call moves at most INT_MAX elements (MPI's int counts), more is DM_ERR_ARG.
 * Floats are summed in MPI's order, the same on every rank. */
#ifndef DM_COMM_H
#define DM_COMM_H

#include "deepmoe/dist.h"
#include "base/base.h"

typedef enum { DM_T_F32, DM_T_F64, DM_T_I64 } dm_ctype;

struct dm_comm {
    int rank, size;
    double timeout_s;
    int dead;                /* a collective failed: nothing more may be sent */
    int world;               /* MPI_COMM_WORLD's: dm_comm_free finalizes MPI */
    void *h;                 /* the MPI communicator (comm_mpi.c) */
    dm_comm_stats st;
};

/* A non-blocking all-reduce in progress. */
typedef struct dm_creq {
    void *h;                 /* MPI_Request, or NULL when none is pending */
    int *arr;                /* counts (and displacements) MPI reads until completion, freed with h */
    double t0;
    const char *what;
} dm_creq;

/* Sums n elements of buf over the ranks, in place. */
dm_status dm_comm_allreduce(dm_comm *c, void *buf, int64_t n, dm_ctype t, dm_error *err);
/* Starts a float all-reduce (in place); dm_comm_test advances it (1: done),
 * dm_comm_wait finishes it. */
dm_status dm_comm_iallreduce(dm_comm *c, float *buf, int64_t n, dm_creq *rq, dm_error *err);
int dm_comm_test(dm_comm *c, dm_creq *rq);
/* buf holds counts[0] + ... + counts[size-1] floats, rank r's block after the
 * earlier ones. Reduce-scatter (in place): rank r's block of the sums lands at
 * the start of buf. Finished by dm_comm_wait. */
dm_status dm_comm_ireduce_scatter(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err);
dm_status dm_comm_iallgatherv(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err);
dm_status dm_comm_wait(dm_comm *c, dm_creq *rq, dm_error *err);
/* buf holds every rank's block (counts, in rank order); each rank's own block
 * is already in place and every other block is filled from its rank. */
dm_status dm_comm_allgatherv(dm_comm *c, float *buf, const int *counts, dm_error *err);
/* send [size * per] -> recv [size * per]: block o goes to rank o. */
dm_status dm_comm_alltoall_i64(dm_comm *c, const int64_t *send, int64_t *recv, int per, dm_error *err);
/* rows of width floats: send_n[o] rows to rank o, recv_n[s] rows from rank s, rank order. */
dm_status dm_comm_alltoallv_rows(dm_comm *c, const float *send, const int64_t *send_n, float *recv,
                                 const int64_t *recv_n, int width, dm_error *err);
dm_status dm_comm_bcast(dm_comm *c, void *buf, int64_t bytes, int root, dm_error *err);
dm_status dm_comm_barrier(dm_comm *c, dm_error *err);
/* The ranks with the same color, ordered by key (MPI_Comm_split). */
dm_status dm_comm_split(dm_comm *c, int color, int key, dm_comm **out, dm_error *err);

/* The ranks of c that share this one's host (memory), ordered by rank
 * (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED). */
dm_status dm_comm_split_host(dm_comm *c, dm_comm **out, dm_error *err);
/* The monotonic clock, seconds. */
double dm_comm_now(void);

/* The process's resident set (VmRSS) and its high-water mark (VmHWM), bytes. */
void dm_mem_rss(int64_t *rss, int64_t *hwm);

#endif
