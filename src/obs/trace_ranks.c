/* trace_ranks.c - a distributed run's trace (dm_trace_stop_ranks): each rank
 * writes its own file, then rank 0 splices every rank's events into one. A file
 * of its own so that a program which never calls it does not link MPI. */
#include "base/base.h"
#include "obs/trace.h"
#include "dist/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- ranks */

/* One of our own trace files, read whole (malloc'd, NUL-terminated), with its
 * events at [*ev, *ev + *len) (between "[\n" and "\n],") and what follows them
 * at *rest. NULL: unreadable, or not written by dm_trace_stop. */
static char *read_trace(const char *path, const char **ev, size_t *len, const char **rest)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *g = realloc(buf, cap);
            if (!g) { free(buf); fclose(f); return NULL; }
            buf = g;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    fclose(f);
    buf[n] = 0;
    static const char head[] = "{\"traceEvents\":[\n", tail[] = "\n],\"displayTimeUnit\"";
    const char *a = strncmp(buf, head, sizeof head - 1) ? NULL : buf + sizeof head - 1;
    const char *b = a ? strstr(a, tail) : NULL;
    if (!b) { free(buf); return NULL; }
    *ev = a;
    *len = (size_t)(b - a);
    *rest = b;
    return buf;
}

dm_status dm_trace_stop_ranks(const char *path, dm_comm *comm, dm_error *err)
{
    int rank = comm ? dm_comm_rank(comm) : 0, ranks = comm ? dm_comm_size(comm) : 1;
    char own[4096];
    if (ranks <= 1) return dm_trace_stop(path, err);
    if (snprintf(own, sizeof own, rank ? "%s.rank%d" : "%s", path, rank) >= (int)sizeof own)
        return dm_fail(err, DM_ERR_ARG, "trace: path '%s' is too long", path);
    dm_status st = dm_trace_stop(own, err);
    dm_error e2;
    dm_status sb = dm_comm_barrier(comm, st ? &e2 : err);   /* every rank's file is written */
    if (st || sb || rank) return st ? st : sb;
    /* rank 0: the others' events spliced after its own, its closing part (otherData) kept;
     * a file rank 0 cannot read (another host) stays where it is */
    const char *ev0, *rest0;
    size_t len0;
    char *mine = read_trace(path, &ev0, &len0, &rest0);
    if (!mine) return dm_fail(err, DM_ERR_FORMAT, "trace: cannot read back %s", path);
    dm_atomic_file f;
    if ((st = dm_atomic_open(&f, path, err))) { free(mine); return st; }
    fprintf(f.fp, "{\"traceEvents\":[\n");
    fwrite(ev0, 1, len0, f.fp);
    int merged = 1;
    for (int r = 1; r < ranks; r++) {
        char p[4200];
        snprintf(p, sizeof p, "%s.rank%d", path, r);
        const char *ev, *rest;
        size_t len;
        char *other = read_trace(p, &ev, &len, &rest);
        if (!other) continue;
        fputs(",\n", f.fp);
        fwrite(ev, 1, len, f.fp);
        free(other);
        remove(p);
        merged++;
    }
    fputs(rest0, f.fp);
    free(mine);
    st = dm_atomic_commit(&f, err);
    if (!st && merged < ranks)
        return dm_fail(err, DM_ERR_IO, "trace: %d of %d ranks merged into %s; the others' PATH.rankR files are on their "
                       "hosts", merged, ranks, path);
    return st;
}
