/* comm_mpi.c - dm_comm over MPI, or, built without MPI (DM_HAVE_MPI 0), the
 * same functions failing with DM_ERR_UNSUPPORTED.
 *
 * Each collective is MPI's non-blocking one (MPI-3), polled with MPI_Test
 * until done or past the communicator's deadline: a rank that died is
 * usually reported by MPI itself (mpirun ends the job), one that hangs or
 * stopped calling collectives by the deadline here. */
#include "dist/comm.h"

#include <limits.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef DM_HAVE_MPI
#define DM_HAVE_MPI 0
#endif


int dm_dist_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "SLURM_STEP_NUM_TASKS",
                                       "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

const char *dm_dist_mode_name(int mode)
{
    static const char *const names[] = {"none", "dp", "zero1", "zero2", "zero3"};
    return mode >= 0 && mode <= DM_DIST_ZERO3 ? names[mode] : NULL;
}

int dm_dist_mode_parse(const char *name)
{
    for (int i = 0; i <= DM_DIST_ZERO3; i++)
        if (name && !strcmp(name, dm_dist_mode_name(i))) return i;
    return -1;
}

int dm_comm_rank(const dm_comm *c) { return c ? c->rank : 0; }
int dm_comm_size(const dm_comm *c) { return c ? c->size : 1; }
void dm_comm_get_stats(const dm_comm *c, dm_comm_stats *s) { *s = c ? c->st : (dm_comm_stats){0}; }
void dm_comm_reset_stats(dm_comm *c) { if (c) c->st = (dm_comm_stats){0}; }

void dm_mem_rss(int64_t *rss, int64_t *hwm)
{
    *rss = *hwm = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %lld kB", &v) == 1) *rss = (int64_t)v * 1024;
        if (sscanf(line, "VmHWM: %lld kB", &v) == 1) *hwm = (int64_t)v * 1024;
    }
    fclose(f);
}

double dm_comm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if DM_HAVE_MPI
#include <mpi.h>

static double now_s(void) { return dm_comm_now(); }

int dm_dist_built(void) { return 1; }

#define COMM(c) (*(MPI_Comm *)(c)->h)

static dm_status mpi_fail(dm_comm *c, int rc, const char *what, dm_error *err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    c->dead = 1;
    return dm_fail(err, DM_ERR_COMM, "rank %d: %s failed: %s", c->rank, what, msg);
}

static dm_status check_live(dm_comm *c, const char *what, dm_error *err)
{
    if (c->dead)
        return dm_fail(err, DM_ERR_COMM, "rank %d: %s after an earlier collective failed", c->rank, what);
    return DM_OK;
}

/* Polls r until it completes or the deadline passes. */
static dm_status wait_req(dm_comm *c, MPI_Request *r, const char *what, double t0, dm_error *err)
{
    double deadline = t0 + c->timeout_s;
    unsigned spins = 0;
    for (;;) {
        int done = 0, rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, what, err);
        if (done) break;
        if ((++spins & 255) == 0) {
            double now = now_s();
            if (now > deadline) {
                c->dead = 1;
                return dm_fail(err, DM_ERR_COMM, "rank %d: %s did not complete within %g s: another rank died, "
                               "hangs or left the run (resume from the last checkpoint)", c->rank, what,
                               c->timeout_s);
            }
            if (now - t0 > 2e-3) {   /* a long wait: let the other ranks' threads have the core */
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
    }
    c->st.seconds += now_s() - t0;
    c->st.calls++;
    return DM_OK;
}

#define START(expr, what) do { \
        int rc_ = (expr); \
        if (rc_ != MPI_SUCCESS) return mpi_fail(c, rc_, what, err); \
    } while (0)

static MPI_Datatype mpi_type(dm_ctype t) { return t == DM_T_F32 ? MPI_FLOAT : t == DM_T_F64 ? MPI_DOUBLE : MPI_INT64_T; }
static size_t type_size(dm_ctype t) { return t == DM_T_F32 ? 4 : 8; }

static dm_status check_count(dm_comm *c, int64_t n, const char *what, dm_error *err)
{
    if (n < 0 || n > INT_MAX)
        return dm_fail(err, DM_ERR_ARG, "rank %d: %s of %lld elements: more than MPI's int counts hold", c->rank,
                       what, (long long)n);
    return check_live(c, what, err);
}

static dm_comm *wrap(MPI_Comm mc, int world)
{
    dm_comm *c = calloc(1, sizeof *c);
    MPI_Comm *h = malloc(sizeof *h);
    if (!c || !h) {
        free(c);
        free(h);
        return NULL;
    }
    *h = mc;
    c->h = h;
    c->world = world;
    MPI_Comm_rank(mc, &c->rank);
    MPI_Comm_size(mc, &c->size);
    return c;
}

/* OpenMPI's non-blocking collectives (libnbc) malloc their temporary buffers
 * (a bucket's size, MiBs) at every call and free them when done. With glibc's
 * defaults those come from mmap, or from heap top that free() trims back, so
 * every call page-faults its buffer in anew: on a virtual machine that was
 * 60% of a data-parallel step (2.9k vs 8.4k rows/s, the default classifier on
 * 2 ranks). Kept below 32 MiB in the heap and the heap not trimmed under
 * 64 MiB, the pages are reused. */
static void keep_freed_memory(void)
{
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

dm_status dm_comm_world(double timeout_s, dm_comm **out, dm_error *err)
{
    *out = NULL;
    if (!(timeout_s > 0)) return dm_fail(err, DM_ERR_ARG, "communicator timeout %g s must be > 0", timeout_s);
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return dm_fail(err, DM_ERR_COMM, "MPI_Init_thread failed");
    MPI_Comm dup;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(MPI_COMM_WORLD, &dup) != MPI_SUCCESS) return dm_fail(err, DM_ERR_COMM, "MPI_Comm_dup failed");
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    dm_comm *c = wrap(dup, 1);
    if (!c) return dm_fail(err, DM_ERR_NOMEM, "communicator: out of memory");
    c->timeout_s = timeout_s;
    if (c->size > 1) keep_freed_memory();
    *out = c;
    return DM_OK;
}

void dm_comm_free(dm_comm *c)
{
    if (!c) return;
    if (!c->dead) MPI_Comm_free((MPI_Comm *)c->h);
    int world = c->world, dead = c->dead;
    free(c->h);
    free(c);
    int fin = 0;
    MPI_Finalized(&fin);
    if (world && !fin && !dead) MPI_Finalize();
}

void dm_comm_abort(dm_comm *c, int code)
{
    DM_UNUSED(c);
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* A split of c (host: by shared memory, else by color and key) as a dm_comm. */
static dm_status split(dm_comm *c, int host, int color, int key, dm_comm **out, dm_error *err)
{
    const char *what = host ? "MPI_Comm_split_type" : "MPI_Comm_split";
    *out = NULL;
    dm_status st = check_live(c, what, err);
    if (st) return st;
    MPI_Comm nc;
    int rc = host ? MPI_Comm_split_type(COMM(c), MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &nc)
                  : MPI_Comm_split(COMM(c), color, key, &nc);
    if (rc != MPI_SUCCESS) return mpi_fail(c, rc, what, err);
    MPI_Comm_set_errhandler(nc, MPI_ERRORS_RETURN);
    dm_comm *n = wrap(nc, 0);
    if (!n) return dm_fail(err, DM_ERR_NOMEM, "communicator: out of memory");
    n->timeout_s = c->timeout_s;
    *out = n;
    return DM_OK;
}

dm_status dm_comm_split(dm_comm *c, int color, int key, dm_comm **out, dm_error *err)
{
    return split(c, 0, color, key, out, err);
}

dm_status dm_comm_split_host(dm_comm *c, dm_comm **out, dm_error *err) { return split(c, 1, 0, 0, out, err); }

dm_status dm_comm_allreduce(dm_comm *c, void *buf, int64_t n, dm_ctype t, dm_error *err)
{
    dm_status st = check_count(c, n, "MPI_Iallreduce", err);
    if (st || c->size == 1 || n == 0) return st;
    double t0 = now_s();
    MPI_Request r;
    START(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, mpi_type(t), MPI_SUM, COMM(c), &r), "MPI_Iallreduce");
    c->st.bytes_sent += 2.0 * (c->size - 1) / c->size * (double)n * (double)type_size(t);
    return wait_req(c, &r, "MPI_Iallreduce", t0, err);
}

dm_status dm_comm_iallreduce(dm_comm *c, float *buf, int64_t n, dm_creq *rq, dm_error *err)
{
    rq->h = NULL;
    rq->arr = NULL;
    dm_status st = check_count(c, n, "MPI_Iallreduce", err);
    if (st || c->size == 1 || n == 0) return st;
    MPI_Request *r = malloc(sizeof *r);
    if (!r) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    rq->t0 = now_s();
    rq->what = "MPI_Iallreduce";
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, COMM(c), r);
    if (rc != MPI_SUCCESS) {
        free(r);
        return mpi_fail(c, rc, "MPI_Iallreduce", err);
    }
    c->st.bytes_sent += 2.0 * (c->size - 1) / c->size * (double)n * 4;
    rq->h = r;
    return DM_OK;
}

int dm_comm_test(dm_comm *c, dm_creq *rq)
{
    if (!rq->h || c->dead) return 1;
    if (*(MPI_Request *)rq->h == MPI_REQUEST_NULL) return 1;
    int done = 0;
    double t0 = now_s();
    MPI_Test(rq->h, &done, MPI_STATUS_IGNORE);   /* MPI's non-blocking collectives work inside it */
    c->st.seconds += now_s() - t0;
    return done;
}

dm_status dm_comm_wait(dm_comm *c, dm_creq *rq, dm_error *err)
{
    if (!rq->h) return DM_OK;
    /* the time counted is the wait: what overlapping it with the caller's work did not hide */
    dm_status st = wait_req(c, rq->h, rq->what, now_s(), err);
    free(rq->h);
    free(rq->arr);
    rq->h = NULL;
    rq->arr = NULL;
    return st;
}

/* A request and the int arrays MPI reads until it completes. */
static dm_status start_req(dm_comm *c, dm_creq *rq, const int *counts, int with_displs, int64_t *total, dm_error *err)
{
    int R = c->size;
    rq->h = malloc(sizeof(MPI_Request));
    rq->arr = malloc((size_t)2 * R * sizeof *rq->arr);
    if (!rq->h || !rq->arr) {
        free(rq->h), free(rq->arr);
        rq->h = NULL, rq->arr = NULL;
        return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    }
    *total = 0;
    for (int i = 0; i < R; i++) {
        rq->arr[i] = counts[i];
        if (with_displs) rq->arr[R + i] = (int)DM_MIN(*total, (int64_t)INT_MAX);
        *total += counts[i];
    }
    rq->t0 = now_s();
    return DM_OK;
}

static void drop_req(dm_creq *rq)
{
    free(rq->h), free(rq->arr);
    rq->h = NULL, rq->arr = NULL;
}

/* The two in-place vector collectives: a float reduce-scatter (gather 0) or
 * all-gather (gather 1) of the blocks counts[0..size) in rank order. */
static dm_status start_v(dm_comm *c, float *buf, const int *counts, int gather, dm_creq *rq, dm_error *err)
{
    const char *name = gather ? "MPI_Iallgatherv" : "MPI_Ireduce_scatter";
    rq->h = rq->arr = NULL;
    dm_status st = check_live(c, name, err);
    if (st || c->size == 1) return st;
    int64_t total = 0;
    if ((st = start_req(c, rq, counts, gather, &total, err))) return st;
    if (total > INT_MAX) {
        drop_req(rq);
        return dm_fail(err, DM_ERR_ARG, "rank %d: %s of %lld floats: more than MPI's int counts hold", c->rank, name,
                       (long long)total);
    }
    rq->what = gather ? "MPI_Iallgatherv (parameters)" : "MPI_Ireduce_scatter (gradients)";
    int rc = gather ? MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, rq->arr, rq->arr + c->size, MPI_FLOAT,
                                      COMM(c), rq->h)
                    : MPI_Ireduce_scatter(MPI_IN_PLACE, buf, rq->arr, MPI_FLOAT, MPI_SUM, COMM(c), rq->h);
    if (rc != MPI_SUCCESS) {
        drop_req(rq);
        return mpi_fail(c, rc, name, err);
    }
    c->st.bytes_sent += gather ? (double)counts[c->rank] * 4 * (c->size - 1) : (double)(total - counts[c->rank]) * 4;
    return DM_OK;
}

dm_status dm_comm_ireduce_scatter(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err)
{
    return start_v(c, buf, counts, 0, rq, err);
}

dm_status dm_comm_iallgatherv(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err)
{
    return start_v(c, buf, counts, 1, rq, err);
}

dm_status dm_comm_allgatherv(dm_comm *c, float *buf, const int *counts, dm_error *err)
{
    dm_creq rq;
    dm_status st = start_v(c, buf, counts, 1, &rq, err);
    return st ? st : dm_comm_wait(c, &rq, err);
}

dm_status dm_comm_alltoall_i64(dm_comm *c, const int64_t *send, int64_t *recv, int per, dm_error *err)
{
    dm_status st = check_count(c, (int64_t)per * c->size, "MPI_Ialltoall", err);
    if (st) return st;
    if (c->size == 1) {
        memcpy(recv, send, (size_t)per * sizeof *recv);
        return DM_OK;
    }
    double t0 = now_s();
    MPI_Request r;
    START(MPI_Ialltoall(send, per, MPI_INT64_T, recv, per, MPI_INT64_T, COMM(c), &r), "MPI_Ialltoall");
    c->st.bytes_sent += (double)per * 8 * (c->size - 1);
    return wait_req(c, &r, "MPI_Ialltoall", t0, err);
}

dm_status dm_comm_alltoallv_rows(dm_comm *c, const float *send, const int64_t *send_n, float *recv,
                                 const int64_t *recv_n, int width, dm_error *err)
{
    int R = c->size;
    int *sc = malloc((size_t)4 * R * sizeof *sc);
    if (!sc) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    int *sd = sc + R, *rc_ = sc + 2 * R, *rd = sc + 3 * R;
    int64_t so = 0, ro = 0;
    dm_status st = DM_OK;
    double sent = 0;
    for (int i = 0; i < R && !st; i++) {
        int64_t s = send_n[i] * width, r = recv_n[i] * width;
        if (so + s > INT_MAX || ro + r > INT_MAX)
            st = dm_fail(err, DM_ERR_ARG, "rank %d: an all-to-all of more than %d floats (MPI's int counts)", c->rank,
                         INT_MAX);
        sc[i] = (int)s, sd[i] = (int)so, rc_[i] = (int)r, rd[i] = (int)ro;
        so += s, ro += r;
        if (i != c->rank) sent += (double)s * 4;
    }
    if (!st) st = check_live(c, "MPI_Ialltoallv", err);
    if (!st) {
        double t0 = now_s();
        MPI_Request r;
        int rc = MPI_Ialltoallv(send, sc, sd, MPI_FLOAT, recv, rc_, rd, MPI_FLOAT, COMM(c), &r);
        if (rc != MPI_SUCCESS) st = mpi_fail(c, rc, "MPI_Ialltoallv", err);
        else {
            c->st.bytes_sent += sent;
            st = wait_req(c, &r, "MPI_Ialltoallv", t0, err);
        }
    }
    free(sc);
    return st;
}

dm_status dm_comm_bcast(dm_comm *c, void *buf, int64_t bytes, int root, dm_error *err)
{
    dm_status st = check_count(c, bytes, "MPI_Ibcast", err);
    if (st || c->size == 1 || !bytes) return st;
    double t0 = now_s();
    MPI_Request r;
    START(MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, COMM(c), &r), "MPI_Ibcast");
    if (c->rank == root) c->st.bytes_sent += (double)bytes;
    return wait_req(c, &r, "MPI_Ibcast", t0, err);
}

dm_status dm_comm_barrier(dm_comm *c, dm_error *err)
{
    dm_status st = check_live(c, "MPI_Ibarrier", err);
    if (st || c->size == 1) return st;
    double t0 = now_s();
    MPI_Request r;
    START(MPI_Ibarrier(COMM(c), &r), "MPI_Ibarrier");
    return wait_req(c, &r, "MPI_Ibarrier", t0, err);
}

#else /* no MPI */

int dm_dist_built(void) { return 0; }

#define NO_MPI(err) dm_fail(err, DM_ERR_UNSUPPORTED, "this deepmoe was built without MPI: install libopenmpi-dev " \
                            "(scripts/deps.sh does) and rebuild (make MPI=1)")

dm_status dm_comm_world(double timeout_s, dm_comm **out, dm_error *err)
{
    DM_UNUSED(timeout_s);
    *out = NULL;
    return NO_MPI(err);
}
void dm_comm_free(dm_comm *c) { free(c); }
void dm_comm_abort(dm_comm *c, int code) { DM_UNUSED(c); exit(code); }
dm_status dm_comm_split(dm_comm *c, int color, int key, dm_comm **out, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(color), DM_UNUSED(key);
    *out = NULL;
    return NO_MPI(err);
}
dm_status dm_comm_split_host(dm_comm *c, dm_comm **out, dm_error *err)
{
    DM_UNUSED(c);
    *out = NULL;
    return NO_MPI(err);
}
dm_status dm_comm_allreduce(dm_comm *c, void *buf, int64_t n, dm_ctype t, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(n), DM_UNUSED(t);
    return NO_MPI(err);
}
dm_status dm_comm_iallreduce(dm_comm *c, float *buf, int64_t n, dm_creq *rq, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(n);
    rq->h = NULL;
    rq->arr = NULL;
    return NO_MPI(err);
}
int dm_comm_test(dm_comm *c, dm_creq *rq) { DM_UNUSED(c), DM_UNUSED(rq); return 1; }
dm_status dm_comm_ireduce_scatter(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(counts);
    rq->h = rq->arr = NULL;
    return NO_MPI(err);
}
dm_status dm_comm_iallgatherv(dm_comm *c, float *buf, const int *counts, dm_creq *rq, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(counts);
    rq->h = rq->arr = NULL;
    return NO_MPI(err);
}
dm_status dm_comm_wait(dm_comm *c, dm_creq *rq, dm_error *err) { DM_UNUSED(c), DM_UNUSED(rq), DM_UNUSED(err); return DM_OK; }
dm_status dm_comm_allgatherv(dm_comm *c, float *buf, const int *counts, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(counts);
    return NO_MPI(err);
}
dm_status dm_comm_alltoall_i64(dm_comm *c, const int64_t *send, int64_t *recv, int per, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(send), DM_UNUSED(recv), DM_UNUSED(per);
    return NO_MPI(err);
}
dm_status dm_comm_alltoallv_rows(dm_comm *c, const float *send, const int64_t *send_n, float *recv,
                                 const int64_t *recv_n, int width, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(send), DM_UNUSED(send_n), DM_UNUSED(recv), DM_UNUSED(recv_n), DM_UNUSED(width);
    return NO_MPI(err);
}
dm_status dm_comm_bcast(dm_comm *c, void *buf, int64_t bytes, int root, dm_error *err)
{
    DM_UNUSED(c), DM_UNUSED(buf), DM_UNUSED(bytes), DM_UNUSED(root);
    return NO_MPI(err);
}
dm_status dm_comm_barrier(dm_comm *c, dm_error *err) { DM_UNUSED(c); return NO_MPI(err); }

#endif
