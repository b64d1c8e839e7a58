/* shm.h - float sums over the ranks through shared memory between the ranks
 * of a host, hierarchical across hosts (docs/distributed.md, "The host's
 * all-reduce").
 *
 * Each rank's buffer is a POSIX shared-memory mapping that the other ranks of
 * its host map too. A sum of [lo, lo + n) over every rank's buffer, in place:
 *   1. each rank says its range is written (a counter in its mapping);
 *   2. each of the host's h ranks sums its part (1/h of the range) from the h
 *      buffers, in host-rank order, into its own buffer; with several hosts,
 *      that part is then all-reduced (MPI) among the ranks with the same place
 *      on every host;
 *   3. each rank copies the other parts from their owners' buffers.
 * Every rank ends with the same sums (each part is computed once). A byte
 * crosses memory a few times, never through MPI's FIFOs: on the project's
 * 2-core VM a 20 MB gradient took 2-3 ms against 9-17 ms for MPI_Iallreduce.
 *
 * Requests are collective (every rank starts the same ranges in the same
 * order) and finish in the order they started. After a reduction a rank's
 * buffer is read by its peers until they copied their parts: call
 * dm_shm_quiesce before writing it again. Waits end after the communicator's
 * timeout with DM_ERR_COMM (a peer died or hangs), as every collective. */
#ifndef DM_SHM_H
#define DM_SHM_H

#include "dist/comm.h"
#include "kernels/kernels.h"

typedef struct dm_shm dm_shm;

/* Collective over c. *out = a buffer of n floats (zeroed) shared with this
 * host's other ranks, or NULL (and DM_OK) where that does not apply: one
 * rank, no two ranks on a host, hosts with different rank counts, shared
 * memory that could not be mapped, or DEEPMOE_SHM=0 in any rank's
 * environment. DEEPMOE_SHM_HOST=K (tests) treats every K consecutive ranks of
 * a host as a host of their own. k: the kernels that add (add_rows). */
dm_status dm_shm_create(dm_comm *c, int64_t n, const dm_kernels *k, dm_shm **out, dm_error *err);
void dm_shm_free(dm_shm *s);
float *dm_shm_buffer(dm_shm *s);
int dm_shm_host_ranks(const dm_shm *s);    /* h */
int dm_shm_hosts(const dm_shm *s);

int dm_shm_host_rank(const dm_shm *s);    /* 0 .. h - 1 */

/* Collective over every rank. One mapping of bytes (zeroed) for the whole
 * host: made by its first rank, mapped by the others at their own address;
 * *out = NULL (and DM_OK) where it could not be made on every host, or
 * DEEPMOE_SHM_REPLICA=0 in any rank's environment. Unmapped by dm_shm_free. */
dm_status dm_shm_host_arena(dm_shm *s, size_t bytes, unsigned char **out, dm_error *err);
/* Returns when every rank of the host has called it (as many times). */
dm_status dm_shm_host_barrier(dm_shm *s, dm_error *err);

/* One host only: from now on this rank sums only the elements of its n
 * ranges [lo[i], hi[i]) (the host's ranks' ranges cover every element once)
 * and a request is done once they are summed: a reduce-scatter into the
 * owners' buffers, no copies back (the host's replica: each rank updates
 * what it owns). No requests may be in flight. */
dm_status dm_shm_set_owned(dm_shm *s, const int64_t *lo, const int64_t *hi, int n, dm_error *err);

/* Starts summing [lo, lo + n) (this rank's part of it is written). */
dm_status dm_shm_start(dm_shm *s, int64_t lo, int64_t n, uint64_t *id, dm_error *err);
/* Advances the requests in flight (no waiting); 1 if request id finished. */
int dm_shm_test(dm_shm *s, uint64_t id);
/* Finishes every request up to id. */
dm_status dm_shm_wait(dm_shm *s, uint64_t id, dm_error *err);
/* Waits until every peer finished reading this rank's buffer. */
dm_status dm_shm_quiesce(dm_shm *s, dm_error *err);

#endif
