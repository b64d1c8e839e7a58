/* shm.c - the host's all-reduce through shared memory (shm.h).
 *
 * Each rank's mapping: [n floats][control: three counters on their own cache
 * lines]. The counters only grow; a peer's counter >= id means it did that
 * step for request id and every earlier one (requests run in order). */
#include "dist/shm.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE 64
#define CHUNK 2048   /* floats summed at a time in a stack buffer (8 KB, in L1) */

typedef struct shm_ctl {
    _Alignas(LINE) _Atomic uint64_t ready;    /* the last request whose range this rank has written */
    _Alignas(LINE) _Atomic uint64_t reduced;  /* ... whose part this rank has summed (across hosts too) */
    _Alignas(LINE) _Atomic uint64_t copied;   /* ... whose other parts this rank has copied */
    _Alignas(LINE) _Atomic uint64_t barrier;  /* the last host barrier this rank reached */
} shm_ctl;

typedef struct shm_req {
    uint64_t id;
    int64_t lo, n;
    int phase;            /* 0 wait for every rank's range, 1 across hosts, 2 wait for every part */
    dm_creq x;            /* the all-reduce across hosts */
} shm_req;

struct dm_shm {
    dm_comm *c;           /* the caller's: timeout, statistics */
    dm_comm *host;        /* this host's ranks (owned) */
    dm_comm *cross;       /* the ranks with this one's place on every host (owned), NULL on one host */
    const dm_kernels *k;
    int hr, hn, hosts;
    int64_t n;
    size_t bytes;         /* of each mapping */
    unsigned char **map;  /* [hn] each host rank's mapping (map[hr]: this rank's) */
    shm_req *q;
    int head, tail, cap;  /* requests in flight: q[head, tail) */
    uint64_t next_id, last_done, barriers;
    int64_t tag[2];       /* the mappings' names: the host's first rank's process id, its count */
    int64_t *own_lo, *own_hi;  /* dm_shm_set_owned: the ranges this rank sums (then no copies), or NULL */
    int n_own;
    unsigned char *arena; /* dm_shm_host_arena's mapping, arena_bytes */
    size_t arena_bytes;
    dm_status fail;       /* an all-reduce across hosts failed: every later wait fails */
    dm_error fail_err;
};

static float *buf_of(const dm_shm *s, int r) { return (float *)(void *)s->map[r]; }
static shm_ctl *ctl_of(const dm_shm *s, int r)
{
    return (shm_ctl *)(void *)(s->map[r] + (((size_t)s->n * sizeof(float) + LINE - 1) / LINE * LINE));
}

float *dm_shm_buffer(dm_shm *s) { return buf_of(s, s->hr); }
int dm_shm_host_ranks(const dm_shm *s) { return s ? s->hn : 1; }
int dm_shm_hosts(const dm_shm *s) { return s ? s->hosts : 1; }
int dm_shm_host_rank(const dm_shm *s) { return s ? s->hr : 0; }

void dm_shm_free(dm_shm *s)
{
    if (!s) return;
    for (int r = 0; s->map && r < s->hn; r++)
        if (s->map[r]) munmap(s->map[r], s->bytes);
    if (s->arena) munmap(s->arena, s->arena_bytes);
    for (int i = s->head; i < s->tail; i++) free(s->q[i].x.h), free(s->q[i].x.arr);
    free(s->map);
    free(s->q);
    free(s->own_lo);
    dm_comm_free(s->cross);
    dm_comm_free(s->host);
    free(s);
}

static void shm_name(char *out, size_t cap, const int64_t *tag, int r)
{
    if (r < 0) snprintf(out, cap, "/deepmoe.%lld.%lld.arena", (long long)tag[0], (long long)tag[1]);
    else snprintf(out, cap, "/deepmoe.%lld.%lld.%d", (long long)tag[0], (long long)tag[1], r);
}

/* This rank's mapping, created (zeroed) under its name. */
static unsigned char *map_own(const char *name, size_t bytes)
{
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 && errno == EEXIST) {   /* left by a killed run that had this process id */
        shm_unlink(name);
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    }
    if (fd < 0) return NULL;
    /* the pages reserved now: a shared-memory filesystem too small for them (a container's
     * 64 MiB /dev/shm) fails here, and the run falls back to MPI, instead of a SIGBUS later */
    void *p = ftruncate(fd, (off_t)bytes) || posix_fallocate(fd, 0, (off_t)bytes)
                  ? MAP_FAILED
                  : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return NULL;
    }
    return p;
}

static unsigned char *map_peer(const char *name, size_t bytes)
{
    int fd = shm_open(name, O_RDWR, 0600);
    if (fd < 0) return NULL;
    struct stat sb;
    void *p = fstat(fd, &sb) || (size_t)sb.st_size != bytes ? MAP_FAILED
                                                            : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* The counts every rank agrees on: [0] ranks that said no, [1] sum of host
 * sizes, [2] sum of their squares (all hosts the same size iff R s2 = s1^2). */
static dm_status agree(dm_comm *c, dm_comm *host, int64_t *v, dm_error *err)
{
    const char *e = getenv("DEEPMOE_SHM");
    int hn = dm_comm_size(host);
    v[0] = e && !strcmp(e, "0");
    v[1] = hn;
    v[2] = (int64_t)hn * hn;
    return dm_comm_allreduce(c, v, 3, DM_T_I64, err);
}

dm_status dm_shm_create(dm_comm *c, int64_t n, const dm_kernels *k, dm_shm **out, dm_error *err)
{
    *out = NULL;
    int R = dm_comm_size(c);
    if (R == 1 || n <= 0) return DM_OK;
    dm_shm *s = calloc(1, sizeof *s);
    if (!s) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    s->c = c;
    s->k = k;
    s->n = n;
    dm_status st = dm_comm_split_host(c, &s->host, err);
    const char *K = getenv("DEEPMOE_SHM_HOST");
    if (!st && K && atoi(K) > 0) {   /* tests: K consecutive ranks of a host make a host */
        dm_comm *h = NULL;
        st = dm_comm_split(s->host, dm_comm_rank(s->host) / atoi(K), dm_comm_rank(s->host), &h, err);
        dm_comm_free(s->host);
        s->host = h;
    }
    int64_t v[3];
    if (!st) st = agree(c, s->host, v, err);
    if (st || v[0] || v[1] == R || v[2] * R != v[1] * v[1]) {   /* no, one rank per host, or uneven hosts */
        dm_shm_free(s);
        return st;
    }
    s->hr = dm_comm_rank(s->host);
    s->hn = dm_comm_size(s->host);
    s->hosts = R / s->hn;
    if (s->hosts > 1) st = dm_comm_split(c, s->hr, dm_comm_rank(c), &s->cross, err);
    /* names: the host's first rank's process id and its count of these buffers */
    static int64_t made;
    int64_t tag[2] = {(int64_t)getpid(), made++};
    if (!st) st = dm_comm_bcast(s->host, tag, sizeof tag, 0, err);
    memcpy(s->tag, tag, sizeof tag);
    s->bytes = ((size_t)n * sizeof(float) + LINE - 1) / LINE * LINE + sizeof(shm_ctl);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    s->bytes = (s->bytes + page - 1) / page * page;
    s->map = calloc((size_t)s->hn, sizeof *s->map);
    if (!st && !s->map) st = dm_fail(err, DM_ERR_NOMEM, "out of memory");
    if (st) {
        dm_shm_free(s);
        return st;
    }
    char name[96];
    shm_name(name, sizeof name, tag, s->hr);
    s->map[s->hr] = map_own(name, s->bytes);
    int64_t bad = !s->map[s->hr];
    if (!(st = dm_comm_allreduce(s->host, &bad, 1, DM_T_I64, err))) {   /* every one created */
        for (int r = 0; r < s->hn && !bad; r++) {
            if (r == s->hr) continue;
            char pn[96];
            shm_name(pn, sizeof pn, tag, r);
            if (!(s->map[r] = map_peer(pn, s->bytes))) bad = 1;
        }
        st = dm_comm_allreduce(c, &bad, 1, DM_T_I64, err);   /* every one mapped (everywhere) */
    }
    if (s->map[s->hr]) shm_unlink(name);   /* the mappings stay; nothing is left behind if a rank dies */
    if (st || bad) {
        dm_shm_free(s);
        return st;
    }
    *out = s;
    return DM_OK;
}

/* ---------------------------------------------------------------- requests */

static int all_reached(const dm_shm *s, size_t field, uint64_t id)
{
    for (int r = 0; r < s->hn; r++) {
        _Atomic uint64_t *f = (_Atomic uint64_t *)(void *)((unsigned char *)ctl_of(s, r) + field);
        if (atomic_load_explicit(f, memory_order_acquire) < id) return 0;
    }
    return 1;
}

static void post(dm_shm *s, size_t field, uint64_t id)
{
    _Atomic uint64_t *f = (_Atomic uint64_t *)(void *)((unsigned char *)ctl_of(s, s->hr) + field);
    atomic_store_explicit(f, id, memory_order_release);
}

/* host rank r's part of [lo, lo + n): [*a, *b), cut on 16 floats */
static void part(const dm_shm *s, const shm_req *q, int r, int64_t *a, int64_t *b)
{
    int64_t x = q->n * r / s->hn / 16 * 16, y = r + 1 == s->hn ? q->n : q->n * (r + 1) / s->hn / 16 * 16;
    *a = q->lo + x;
    *b = q->lo + y;
}

/* This rank's part: the sum over the host's buffers in host-rank order. */
static void sum_part(dm_shm *s, int64_t a, int64_t b)
{
    float tmp[CHUNK];
    float *out = buf_of(s, s->hr);
    for (int64_t i = a; i < b; i += CHUNK) {
        int m = (int)DM_MIN((int64_t)CHUNK, b - i);
        memcpy(tmp, buf_of(s, 0) + i, (size_t)m * sizeof *tmp);
        for (int r = 1; r < s->hn; r++) s->k->add_rows(tmp, buf_of(s, r) + i, 1, NULL, 0.0f, m);
        memcpy(out + i, tmp, (size_t)m * sizeof *tmp);
    }
}

/* dm_shm_set_owned: the owned ranges' sums in [lo, hi), and the request is done. */
static void sum_owned(dm_shm *s, int64_t lo, int64_t hi)
{
    for (int i = 0; i < s->n_own; i++) {
        int64_t a = DM_MAX(lo, s->own_lo[i]), b = DM_MIN(hi, s->own_hi[i]);
        if (b > a) sum_part(s, a, b);
    }
}

/* Advances the requests in order as far as they go without waiting. */
static void advance(dm_shm *s)
{
    while (s->head < s->tail && !s->fail) {
        shm_req *q = &s->q[s->head];
        int64_t a, b;
        if (q->phase == 0 && s->own_lo) {
            if (!all_reached(s, offsetof(shm_ctl, ready), q->id)) return;
            sum_owned(s, q->lo, q->lo + q->n);
            post(s, offsetof(shm_ctl, reduced), q->id);
            s->last_done = q->id;
            if (++s->head == s->tail) s->head = s->tail = 0;
            continue;
        }
        if (q->phase == 0) {
            if (!all_reached(s, offsetof(shm_ctl, ready), q->id)) return;
            part(s, q, s->hr, &a, &b);
            sum_part(s, a, b);
            if (s->cross && (s->fail = dm_comm_iallreduce(s->cross, buf_of(s, s->hr) + a, b - a, &q->x, &s->fail_err)))
                return;
            q->phase = 1;
        }
        if (q->phase == 1) {
            if (q->x.h) {
                if (!dm_comm_test(s->cross, &q->x)) return;
                if ((s->fail = dm_comm_wait(s->cross, &q->x, &s->fail_err))) return;
            }
            post(s, offsetof(shm_ctl, reduced), q->id);
            q->phase = 2;
        }
        if (!all_reached(s, offsetof(shm_ctl, reduced), q->id)) return;
        for (int r = 0; r < s->hn; r++) {
            if (r == s->hr) continue;
            part(s, q, r, &a, &b);
            memcpy(buf_of(s, s->hr) + a, buf_of(s, r) + a, (size_t)(b - a) * sizeof(float));
        }
        post(s, offsetof(shm_ctl, copied), q->id);
        s->last_done = q->id;
        if (++s->head == s->tail) s->head = s->tail = 0;
    }
}

dm_status dm_shm_start(dm_shm *s, int64_t lo, int64_t n, uint64_t *id, dm_error *err)
{
    if (s->fail) return dm_fail(err, s->fail, "%s", s->fail_err.msg);
    if (s->tail == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        shm_req *q = realloc(s->q, (size_t)cap * sizeof *q);
        if (!q) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
        s->q = q;
        s->cap = cap;
    }
    *id = ++s->next_id;
    s->q[s->tail++] = (shm_req){.id = *id, .lo = lo, .n = n};
    post(s, offsetof(shm_ctl, ready), *id);
    int R = dm_comm_size(s->c);
    s->c->st.bytes_sent += (s->own_lo ? 1.0 : 2.0) * (R - 1) / R * (double)n * sizeof(float);   /* textbook volumes */
    return DM_OK;
}

dm_status dm_shm_set_owned(dm_shm *s, const int64_t *lo, const int64_t *hi, int n, dm_error *err)
{
    if (s->hosts > 1) return dm_fail(err, DM_ERR_UNSUPPORTED, "owned ranges need one host (its ranks own every element)");
    if (s->head < s->tail) return dm_fail(err, DM_ERR_ARG, "owned ranges: requests are in flight");
    int64_t *a = malloc((size_t)DM_MAX(n, 1) * 2 * sizeof *a);
    if (!a) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    memcpy(a, lo, (size_t)n * sizeof *a);
    memcpy(a + DM_MAX(n, 1), hi, (size_t)n * sizeof *a);
    free(s->own_lo);
    s->own_lo = a;
    s->own_hi = a + DM_MAX(n, 1);
    s->n_own = n;
    return DM_OK;
}

int dm_shm_test(dm_shm *s, uint64_t id)
{
    double t0 = dm_comm_now();
    advance(s);
    s->c->st.seconds += dm_comm_now() - t0;
    return s->last_done >= id;
}

/* Spins on done(s, id) until it holds or the communicator's deadline passes. */
static dm_status spin(dm_shm *s, uint64_t id, int (*done)(dm_shm *, uint64_t), const char *what, dm_error *err)
{
    double t0 = dm_comm_now();
    unsigned spins = 0;
    dm_status st = DM_OK;
    while (!done(s, id)) {
        if (s->fail) {
            st = dm_fail(err, s->fail, "%s", s->fail_err.msg);
            break;
        }
        if ((++spins & 255) == 0) {
            double now = dm_comm_now();
            if (now - t0 > s->c->timeout_s) {
                s->fail = DM_ERR_COMM;
                dm_fail(&s->fail_err, DM_ERR_COMM, "rank %d: %s did not complete within %g s: another rank "
                        "died, hangs or left the run (resume from the last checkpoint)", dm_comm_rank(s->c), what,
                        s->c->timeout_s);
                st = dm_fail(err, s->fail, "%s", s->fail_err.msg);
                break;
            }
            if (now - t0 > 2e-3) {   /* a long wait: let the other ranks' threads have the core */
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
    }
    s->c->st.seconds += dm_comm_now() - t0;
    s->c->st.calls++;
    return st;
}

static int finished(dm_shm *s, uint64_t id)
{
    advance(s);
    return s->last_done >= id;
}

/* the peers finished reading this rank's buffer: copied it (all-reduce), or summed their ranges (owned) */
static int peers_copied(dm_shm *s, uint64_t id)
{
    return all_reached(s, s->own_lo ? offsetof(shm_ctl, reduced) : offsetof(shm_ctl, copied), id);
}

dm_status dm_shm_wait(dm_shm *s, uint64_t id, dm_error *err)
{
    return spin(s, id, finished, "the host's all-reduce (gradients, shared memory)", err);
}

dm_status dm_shm_quiesce(dm_shm *s, dm_error *err)
{
    dm_status st = spin(s, s->next_id, finished, "the host's all-reduce (gradients, shared memory)", err);
    return st ? st : spin(s, s->next_id, peers_copied, "the host's all-reduce (peers reading, shared memory)", err);
}

/* ---------------------------------------------------------------- the host's arena */

dm_status dm_shm_host_arena(dm_shm *s, size_t bytes, unsigned char **out, dm_error *err)
{
    *out = NULL;
    if (s->arena) return dm_fail(err, DM_ERR_ARG, "the host's shared arena exists already");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    bytes = (DM_MAX(bytes, (size_t)1) + page - 1) / page * page;
    char name[96];
    shm_name(name, sizeof name, s->tag, -1);
    const char *e = getenv("DEEPMOE_SHM_REPLICA");
    unsigned char *p = NULL;
    int64_t bad = e && !strcmp(e, "0");
    if (!bad && s->hr == 0) bad = !(p = map_own(name, bytes));
    dm_status st = dm_comm_allreduce(s->host, &bad, 1, DM_T_I64, err);   /* the first rank created it */
    if (!st) {
        if (!bad && s->hr) bad = !(p = map_peer(name, bytes));
        st = dm_comm_allreduce(s->c, &bad, 1, DM_T_I64, err);   /* mapped everywhere (every rank agrees) */
    }
    if (s->hr == 0 && p) shm_unlink(name);
    if (st || bad) {
        if (p) munmap(p, bytes);
        return st;
    }
    s->arena = p;
    s->arena_bytes = bytes;
    *out = p;
    return DM_OK;
}

static int all_barrier(dm_shm *s, uint64_t id) { return all_reached(s, offsetof(shm_ctl, barrier), id); }

dm_status dm_shm_host_barrier(dm_shm *s, dm_error *err)
{
    post(s, offsetof(shm_ctl, barrier), ++s->barriers);
    return spin(s, s->barriers, all_barrier, "the host's barrier (shared parameters)", err);
}
