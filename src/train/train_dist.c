/* train_dist.c - the trainer over several ranks: data parallel, ZeRO 1/2/3,
 * expert parallel (docs/distributed.md).
 *
 * The flat layout is cut into units (0 the embedding, 1..L the MoE layers,
 * L + 1 the final norm and head) and, under ZeRO, into one contiguous shard
 * per rank (by element count, 1024-float aligned). Per step:
 *
 *   dp      each unit's gradients are all-reduced (non-blocking, in buckets)
 *           as soon as the last micro-batch's backward has finished it; every
 *           rank then runs the same AdamW on the same sums.
 *   zero1   the same all-reduce; AdamW on the rank's shard only (moments exist
 *           for it alone); the updated shards are all-gathered and re-packed.
 *   zero2   gradients reduce-scattered per unit: each rank keeps its shard's
 *           sums, the rest of the unit's gradient pages are released.
 *   zero3   also the parameters: a unit is all-gathered (and packed) before
 *           its forward and again before its backward, and released after.
 *   ep      (with dp) experts split over P ranks: rows travel through the
 *           layer's exchange (MPI_Alltoall + MPI_Alltoallv); an expert's
 *           gradients are all-reduced only among the ranks that own it.
 *
 * "Released" memory: buffers keep their full-size virtual layout (views and
 * offsets never change) and the pages outside what a rank holds go back to
 * the kernel (madvise MADV_DONTNEED, reading zero afterwards), so the
 * resident set is what ZeRO's formulas count. Units are reduced in the same
 * order on every rank; float sums follow MPI's order (the same on every rank). */
#define _DEFAULT_SOURCE 1   /* madvise */
#include "train/trainer.h"
#include "dist/comm.h"
#include "dist/exchange.h"
#include "dist/shm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHARD_ALIGN 1024                      /* floats: shards start on pages */
#define DEFAULT_BUCKET ((int64_t)1 << 20)     /* floats per all-reduce (4 MiB) */

struct dm_tr_dist {
    dm_comm *world;          /* every rank (the caller's) */
    dm_comm *edp;            /* expert parallel: the ranks owning the same experts (owned), else NULL */
    dm_comm *ep;             /* expert parallel: the ranks that exchange rows (owned), else NULL */
    dm_dist_xchg *x;         /* the exchange over ep */
    int mode, R, rank, P, ep_rank;
    int n_units;
    int64_t *u_lo, *u_hi;    /* [n_units] float ranges of the layout */
    int64_t *sh;             /* [R + 1] shard boundaries */
    int *cnt;                /* [R] scratch counts */
    unsigned char **pk;      /* [n_units * 4] byte ranges of the unit's packed and transposed operands */
    int64_t *own_lo, *own_hi;/* [L] expert parallel: this rank's experts' float range per layer */
    int64_t *ex_lo, *ex_hi;  /* [L] every routed expert's float range per layer */
    dm_shm *shm;             /* dp / zero1 on shared hosts: the gradients live in it (t->grad) */
    int replica;             /* dp on shared hosts: 1 pending (made at the first step), 2 made: one copy of the
                              * parameters, packs and moments per host, each rank updating its groups */
    float *own_p, *own_m, *own_v;         /* the replica: the private buffers, released, back at the end */
    unsigned char *own_pk, *own_tpk;
    int owned;               /* the replica on one host: each rank sums only its groups' gradients */
    unsigned char *arena;    /* the replica's memory (dm_shm_host_arena, made at distribute) */
    struct pend {            /* a reduction in flight */
        dm_creq rq;
        dm_comm *c;
        uint64_t shm_id;     /* a request of shm (rq unused), or 0 */
        int scatter;         /* 1: a reduce-scatter of grad [lo, hi), finished by moving the rank's piece */
        int64_t lo, hi;
    } *rq;
    int n_rq, cap_rq, done_rq;  /* [done_rq, n_rq) may still be in flight */
    int64_t bucket;
    int nosync;              /* dm_trainer_set_sync(t, 0): no gradient reductions (measurement) */
    float *gacc;             /* zero2/3 with grad_accum > 1: [shard] the step's reduced gradient so far */
    int first_micro;         /* the reductions in flight belong to the step's first micro-batch */
    /* zero3: the units in the order a micro-batch uses them, and the gather in flight */
    int *seq, n_seq, at_seq;
    dm_creq pre;
    int pre_unit;            /* the unit being prefetched, or -1 */
};

static size_t replica_layout(dm_trainer *t, size_t *np, size_t *npk, size_t *ntp, size_t off[4]);

int dm_trd_ranks(const dm_trainer *t) { return t->dist ? t->dist->R : 1; }

void dm_trainer_comm_stats(const dm_trainer *t, dm_comm_stats *s)
{
    *s = (dm_comm_stats){0};
    if (!t->dist) return;
    dm_comm *cs[3] = {t->dist->world, t->dist->edp, t->dist->ep};
    for (int i = 0; i < 3; i++) {
        if (!cs[i]) continue;
        s->seconds += cs[i]->st.seconds;
        s->bytes_sent += cs[i]->st.bytes_sent;
        s->calls += cs[i]->st.calls;
    }
}
int dm_trd_rank(const dm_trainer *t) { return t->dist ? t->dist->rank : 0; }

/* ---------------------------------------------------------------- memory */

/* [lo, hi) floats of base read zero afterwards; the whole pages inside it go
 * back to the kernel, the rest is zeroed in place. hot: the range is used and
 * released again at every step (ZeRO-2's gradients, ZeRO-3's parameters and
 * packed operands), so the pages are 2 MiB ones: the buffers are backed by
 * transparent huge pages (dm_alloc), and releasing 4 KiB pieces would split
 * them, every later touch faulting 4 KiB at a time (12 us a fault on this
 * project's virtual machines: ZeRO-3 ran at 400 rows/s so, against 8.8k for
 * dp). The price: up to 2 MiB at each end of a hot range stays resident. */
#define HOT_PAGE ((uintptr_t)2 << 20)
static void release(float *base, int64_t lo, int64_t hi, int hot)
{
    if (!base || hi <= lo) return;
    uintptr_t page = hot ? HOT_PAGE : (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(base + lo), b = (uintptr_t)(base + hi);
    uintptr_t a2 = (a + page - 1) / page * page, b2 = b / page * page;
    if (b2 <= a2) {
        memset((void *)a, 0, b - a);
        return;
    }
    memset((void *)a, 0, a2 - a);
    memset((void *)b2, 0, b - b2);
    madvise((void *)a2, b2 - a2, MADV_DONTNEED);
}

static void release_bytes(unsigned char *a, unsigned char *b, int hot)
{
    if (a && b > a) release((float *)(void *)a, 0, (int64_t)((size_t)(b - a) / sizeof(float)), hot);
}

/* Releases [lo, hi) but for the rank's shard. */
static void release_but_shard(const dm_tr_dist *d, float *base, int64_t lo, int64_t hi, int hot)
{
    int64_t s0 = d->sh[d->rank], s1 = d->sh[d->rank + 1];
    release(base, lo, DM_MIN(hi, s0), hot);
    release(base, DM_MAX(lo, s1), hi, hot);
}

/* counts[r] = |[lo, hi) ∩ shard r|; returns this rank's first element in the range. */
static int64_t shard_counts(dm_tr_dist *d, int64_t lo, int64_t hi)
{
    for (int r = 0; r < d->R; r++) {
        int64_t a = DM_MAX(lo, d->sh[r]), b = DM_MIN(hi, d->sh[r + 1]);
        d->cnt[r] = (int)(b > a ? b - a : 0);
    }
    return DM_MAX(lo, d->sh[d->rank]);
}

/* ---------------------------------------------------------------- units */

static int64_t off_of(const dm_model *m, const float *p) { return (int64_t)(p - m->params); }

static void unit_ranges(dm_trainer *t, dm_tr_dist *d)
{
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    int L = c->n_layers;
    d->u_lo[0] = c->in_dim ? off_of(m, m->embed.w) : 0;
    for (int l = 0; l < L; l++) d->u_lo[l + 1] = off_of(m, m->layers[l].gate_w);
    d->u_lo[L + 1] = c->n_classes ? off_of(m, m->norm_w) : m->n_params;
    for (int u = 0; u <= L; u++) d->u_hi[u] = d->u_lo[u + 1];
    d->u_hi[L + 1] = m->n_params;
    if (!c->in_dim) d->u_hi[0] = d->u_lo[0];   /* no embedding: an empty unit */
    for (int l = 0; l < L; l++) {
        const dm_layer *ly = &m->layers[l];
        int E = c->n_experts, S = c->n_shared;
        d->ex_lo[l] = off_of(m, ly->experts[0].w1);
        d->ex_hi[l] = S ? off_of(m, ly->experts[E].w1) : d->u_hi[l + 1];
    }
}

/* The byte range [lo, hi) covering a set of packed operands. */
static void cover(unsigned char **lo, unsigned char **hi, const dm_wmat *w, dm_isa isa)
{
    if (!w->data) return;
    unsigned char *a = (unsigned char *)w->data, *b = a + dm_wmat_data_size(w->type, isa, w->N, w->K, w->group);
    if (!*lo || a < *lo) *lo = a;
    if (!*hi || b > *hi) *hi = b;
}

static void unit_packs(dm_trainer *t, dm_tr_dist *d)
{
    const dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    int L = c->n_layers, S = c->n_experts + c->n_shared;
    for (int u = 0; u < d->n_units; u++) {
        unsigned char **p = d->pk + 4 * u;
        if (u == 0 && c->in_dim) cover(&p[0], &p[1], &m->embed.p, m->isa);
        if (u == L + 1 && c->n_classes) {
            cover(&p[0], &p[1], &m->head.p, m->isa);
            cover(&p[2], &p[3], &t->head_pt, m->isa);
        }
        if (u >= 1 && u <= L) {
            const dm_layer *ly = &m->layers[u - 1];
            cover(&p[0], &p[1], &ly->gate_p, m->isa);
            cover(&p[2], &p[3], &t->gate_pt[u - 1], m->isa);
            for (int j = 0; j < S; j++) {
                cover(&p[0], &p[1], &ly->experts[j].p1, m->isa);
                cover(&p[0], &p[1], &ly->experts[j].p2, m->isa);
                cover(&p[2], &p[3], &t->ext[(u - 1) * S + j].p1t, m->isa);
                cover(&p[2], &p[3], &t->ext[(u - 1) * S + j].p2t, m->isa);
            }
        }
    }
}

typedef struct sync_arg { dm_trainer *t; int64_t g0; } sync_arg;

static void sync_range_task(void *arg, int64_t i, int tid)
{
    sync_arg *a = arg;
    dm_tr_sync_group(a->t, a->g0 + i, tid);
}

/* Re-packs unit u's operands from its (gathered) parameters. */
static void pack_unit(dm_trainer *t, int u)
{
    const dm_config *c = &t->m->cfg;
    int L = c->n_layers, per = c->n_experts + c->n_shared + 1;
    sync_arg a = {t, 0};
    int64_t n = 1;
    if (u == 0) a.g0 = (int64_t)L * per;
    else if (u == L + 1) a.g0 = (int64_t)L * per + 1;
    else a.g0 = (int64_t)(u - 1) * per, n = per;
    dm_pool_run(t->pool, n, sync_range_task, &a);
}

/* ---------------------------------------------------------------- setup */

static void dist_free(dm_tr_dist *d)
{
    if (!d) return;
    dm_shm_free(d->shm);
    dm_dist_xchg_free(d->x);
    dm_comm_free(d->edp);
    dm_comm_free(d->ep);
    for (int i = 0; i < d->n_rq; i++) free(d->rq[i].rq.h), free(d->rq[i].rq.arr);
    free(d->rq);
    free(d->pre.h), free(d->pre.arr);
    free(d->seq);
    dm_free(d->gacc);
    free(d->u_lo); free(d->u_hi); free(d->sh); free(d->cnt); free(d->pk);
    free(d->own_lo); free(d->own_hi); free(d->ex_lo); free(d->ex_hi);
    free(d);
}

/* The shared replica's contents back into the private buffers (before its mapping goes). */
static void replica_restore(dm_trainer *t)
{
    dm_tr_dist *d = t->dist;
    dm_model *m = t->m;
    size_t np = (size_t)m->n_params * sizeof(float), npk = (size_t)dm_model_memory(m) - np,
           ntp = dm_tr_tpacked_bytes(t);
    memcpy(d->own_p, m->params, np);
    memcpy(d->own_pk, m->packed, npk);
    memcpy(d->own_tpk, t->tpacked, ntp);
    memcpy(d->own_m, t->adam_m, np);
    memcpy(d->own_v, t->adam_v, np);
    dm_model_rebase(m, d->own_p, d->own_pk);
    dm_tr_rebase(t, d->own_tpk, d->own_m, d->own_v);
}

void dm_trd_free(dm_trainer *t)
{
    if (!t->dist) return;
    if (t->dist->replica == 2) replica_restore(t);
    if (t->dist->shm) t->grad = NULL;   /* the gradients were the shared buffer */
    free(t->skip_group);
    free(t->skip_tensor);
    t->skip_group = NULL;
    t->skip_tensor = NULL;
    dist_free(t->dist);
    t->dist = NULL;
}

/* Drops what this rank does not hold between steps (after a load or a gather). */
/* Bytes of the packed operands (forward and transposed) of routed expert e of layer l. */
static size_t expert_packed(const dm_trainer *t, int l, int e, int do_release)
{
    const dm_model *m = t->m;
    int S = m->cfg.n_experts + m->cfg.n_shared;
    const dm_wmat *w[4] = {&m->layers[l].experts[e].p1, &m->layers[l].experts[e].p2, &t->ext[l * S + e].p1t,
                           &t->ext[l * S + e].p2t};
    size_t bytes = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char *lo = NULL, *hi = NULL;
        cover(&lo, &hi, w[i], m->isa);
        if (do_release) release_bytes(lo, hi, 0);
        bytes += (size_t)(hi - lo);
    }
    return bytes;
}

/* Expert parallel: the experts other ranks own are never computed here, so
 * their parameters, gradients, moments and packed operands are released too
 * (a gather brings them back for a checkpoint or an evaluation). */
static void release_others_experts(dm_trainer *t)
{
    dm_tr_dist *d = t->dist;
    const dm_config *c = &t->m->cfg;
    float *bufs[4] = {t->m->params, t->grad, t->adam_m, t->adam_v};
    for (int l = 0; l < c->n_layers; l++) {
        for (int b = 0; b < 4; b++) {
            release(bufs[b], d->ex_lo[l], d->own_lo[l], 0);
            release(bufs[b], d->own_hi[l], d->ex_hi[l], 0);
        }
        for (int e = 0; e < c->n_experts; e++)
            if (d->x->owner[e] != d->ep_rank) expert_packed(t, l, e, 1);
    }
}

static void release_all(dm_trainer *t)
{
    dm_tr_dist *d = t->dist;
    int64_t n = t->m->n_params;
    if (d->P > 1) release_others_experts(t);
    if (d->mode >= DM_DIST_ZERO1) {
        release_but_shard(d, t->adam_m, 0, n, 0);
        release_but_shard(d, t->adam_v, 0, n, 0);
    }
    if (d->mode >= DM_DIST_ZERO2) release_but_shard(d, t->grad, 0, n, 1);
    if (d->mode == DM_DIST_ZERO3) {
        release_but_shard(d, t->m->params, 0, n, 1);
        for (int u = 0; u < d->n_units; u++) {
            release_bytes(d->pk[4 * u], d->pk[4 * u + 1], 1);
            release_bytes(d->pk[4 * u + 2], d->pk[4 * u + 3], 1);
        }
    }
}

dm_status dm_trainer_distribute(dm_trainer *t, dm_comm *world, int mode, int expert_parallel, dm_error *err)
{
    const dm_config *c = &t->m->cfg;
    int L = c->n_layers, E = c->n_experts;
    if (t->dist) return dm_fail(err, DM_ERR_ARG, "trainer: already distributed");
    if (t->step) return dm_fail(err, DM_ERR_ARG, "trainer: distribute it before its first step");
    if (mode < DM_DIST_DP || mode > DM_DIST_ZERO3) return dm_fail(err, DM_ERR_ARG, "unknown distributed mode %d", mode);
    int R = dm_comm_size(world), P = expert_parallel ? expert_parallel : 1;
    if (P < 1 || R % P)
        return dm_fail(err, DM_ERR_ARG, "--expert-parallel %d must divide the %d ranks (ranks = data parallel x "
                       "expert parallel)", P, R);
    if (P > 1 && mode != DM_DIST_DP)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "expert parallelism combines with --dist dp only, not %s",
                       dm_dist_mode_name(mode));
    if (P > E) return dm_fail(err, DM_ERR_ARG, "--expert-parallel %d is more than the model's %d experts", P, E);
    if (t->mask && mode >= DM_DIST_ZERO1)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "2:4 fine-tuning (keep sparsity) runs with --dist dp only");
    dm_tr_dist *d = calloc(1, sizeof *d);
    if (!d) return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory");
    d->world = world;
    d->mode = mode;
    d->R = R;
    d->rank = dm_comm_rank(world);
    d->P = P;
    d->ep_rank = d->rank % P;
    d->n_units = L + 2;
    d->bucket = DEFAULT_BUCKET;
    d->u_lo = calloc((size_t)d->n_units, sizeof *d->u_lo);
    d->u_hi = calloc((size_t)d->n_units, sizeof *d->u_hi);
    d->sh = calloc((size_t)R + 1, sizeof *d->sh);
    d->cnt = calloc((size_t)R, sizeof *d->cnt);
    d->pk = calloc((size_t)d->n_units * 4, sizeof *d->pk);
    d->own_lo = calloc((size_t)L, sizeof *d->own_lo);
    d->own_hi = calloc((size_t)L, sizeof *d->own_hi);
    d->ex_lo = calloc((size_t)L, sizeof *d->ex_lo);
    d->ex_hi = calloc((size_t)L, sizeof *d->ex_hi);
    d->seq = calloc((size_t)2 * (L + 2), sizeof *d->seq);
    d->pre_unit = -1;
    if (d->seq) {   /* forward 0, 1..L, L+1 (forward and backward), backward L..1, 0 */
        for (int u = 0; u <= L + 1; u++) d->seq[d->n_seq++] = u;
        for (int u = L; u >= 0; u--) d->seq[d->n_seq++] = u;
    }
    if (!d->seq || !d->u_lo || !d->u_hi || !d->sh || !d->cnt || !d->pk || !d->own_lo || !d->own_hi || !d->ex_lo || !d->ex_hi) {
        dist_free(d);
        return dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory");
    }
    unit_ranges(t, d);
    unit_packs(t, d);
    int64_t n = t->m->n_params;
    for (int r = 0; r <= R; r++) d->sh[r] = DM_MIN(n, (n * r / R + SHARD_ALIGN - 1) / SHARD_ALIGN * SHARD_ALIGN);
    d->sh[R] = n;
    dm_status st = DM_OK;
    if (P > 1) {
        /* ranks r = dp * P + ep: the P consecutive ranks exchange rows, ranks with the same ep own the same experts */
        if (!(st = dm_comm_split(world, d->rank / P, d->ep_rank, &d->ep, err)) &&
            !(st = dm_comm_split(world, d->ep_rank, d->rank / P, &d->edp, err)))
            st = dm_dist_xchg_create(d->ep, E, &d->x, err);
        if (!st && !(t->skip_group = calloc((size_t)dm_tr_n_groups(c), 1))) st = dm_fail(err, DM_ERR_NOMEM, "out of memory");
        int per = E + c->n_shared + 1;
        for (int l = 0; !st && l < L; l++) {
            const dm_layer *ly = &t->m->layers[l];
            int e0 = -1, e1 = -1;
            for (int e = 0; e < E; e++) {
                int mine = d->x->owner[e] == d->ep_rank;
                if (mine && e0 < 0) e0 = e;
                if (mine) e1 = e + 1;
                t->skip_group[(int64_t)l * per + e] = !mine;
            }
            d->own_lo[l] = off_of(t->m, ly->experts[e0].w1);
            d->own_hi[l] = e1 < E ? off_of(t->m, ly->experts[e1].w1) : d->ex_hi[l];
        }
        if (!st) dm_tr_set_exchange(t, &d->x->x);
    }
    if (!st && mode >= DM_DIST_ZERO2 && t->tc.grad_accum > 1 &&
        !(d->gacc = dm_alloc((size_t)DM_MAX(d->sh[d->rank + 1] - d->sh[d->rank], 1) * sizeof(float))))
        st = dm_fail(err, DM_ERR_NOMEM, "trainer: out of memory");
    /* dp and zero1 all-reduce whole gradients: on ranks that share a host, through shared memory */
    if (!st && mode <= DM_DIST_ZERO1 && P == 1 && !(st = dm_shm_create(world, n, t->m->kern, &d->shm, err)) && d->shm)
        dm_free(dm_tr_swap_grad(t, dm_shm_buffer(d->shm)));
    /* dp in fp32: one replica per host, filled at the first step (after a resume has loaded the state) */
    const char *rep = getenv("DEEPMOE_SHM_REPLICA");
    d->replica = d->shm && mode == DM_DIST_DP && !t->mask && !(rep && !strcmp(rep, "0"));
    if (d->replica) {   /* its memory now (a shared-memory filesystem too small: a copy per rank, said now) */
        size_t np, npk, ntp, off[4];
        size_t bytes = replica_layout(t, &np, &npk, &ntp, off);
        if (!(st = dm_shm_host_arena(d->shm, bytes, &d->arena, err)) && !d->arena) d->replica = 0;
    }
    /* every rank starts from rank 0's parameters */
    if (!st) st = dm_comm_bcast(world, t->m->params, n * (int64_t)sizeof(float), 0, err);
    if (st) {
        float *g = d->shm ? dm_calloc((size_t)n * sizeof(float)) : NULL;
        if (g) dm_tr_swap_grad(t, g);
        else if (d->shm) t->grad = NULL;   /* no memory left for a private copy: the trainer cannot step */
        dist_free(d);
        return st;
    }
    dm_tr_sync(t);
    t->dist = d;
    release_all(t);
    return DM_OK;
}

/* ---------------------------------------------------------------- the host's replica */

/* dp with ranks sharing a host: the parameters, their packed copies and the
 * AdamW moments live once per host (dm_shm_host_arena), and each rank updates
 * its share of the groups (AdamW and re-pack of a layer's router, an expert,
 * the embedding, the head), sizes balanced greedily, the same on every rank.
 * Every rank holds every reduced gradient, so each group's update is the one
 * every rank computed before: bitwise the same. Ordering: a rank updates only
 * after the step's last all-reduce (every rank finished its backward) and the
 * counts' all-reduce after it; dm_trd_end_update's host barrier ends the
 * update before any rank's next forward (or rank 0's evaluation). */
/* A unit of the update: a fused group's tensor (tensor >= 0) or a whole
 * group; at is its place in the layout. */
typedef struct upd_unit { int64_t g, size, at; int tensor; } upd_unit;

/* Largest first; equal sizes in the layout's order (the deal must be the same on every rank). */
static int unit_cmp(const void *pa, const void *pb)
{
    const upd_unit *a = pa, *b = pb;
    if (a->size != b->size) return a->size > b->size ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at);
}

/* Deals the update's units to the host's ranks, the largest first to the
 * least loaded (ties: the lower rank), the same on every rank: an expert's
 * group goes tensor by tensor (its two matrices are half of it each). */
static dm_status replica_owners(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    const dm_model *m = t->m;
    int64_t G = dm_tr_n_groups(&m->cfg), nu = 0;
    int hn = dm_shm_host_ranks(d->shm), me = dm_shm_host_rank(d->shm);
    upd_unit *u = malloc((size_t)(G + m->n_tensors) * sizeof *u);
    int64_t *load = calloc((size_t)hn, sizeof *load);
    t->skip_tensor = calloc((size_t)m->n_tensors, 1);
    if (!u || !load || !t->skip_tensor) {
        free(u), free(load);
        return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    }
    for (int64_t g = 0; g < G; g++) {
        int fused = dm_tr_group_fused(t, g);
        int64_t size = 0;
        for (int i = t->grp_t0[g]; i < t->grp_t1[g]; i++) {
            if (fused) u[nu] = (upd_unit){g, m->tensors[i].numel, nu, i}, nu++;
            size += m->tensors[i].numel;
        }
        if (!fused) u[nu] = (upd_unit){g, size, nu, -1}, nu++;
        t->skip_group[g] = 1;
    }
    qsort(u, (size_t)nu, sizeof *u, unit_cmp);
    for (int64_t k = 0; k < nu; k++) {
        int r = 0;
        for (int q = 1; q < hn; q++)
            if (load[q] < load[r]) r = q;
        load[r] += u[k].size;
        if (u[k].tensor >= 0) t->skip_tensor[u[k].tensor] = r != me;
        if (r == me) t->skip_group[u[k].g] = 0;
    }
    free(u), free(load);
    return DM_OK;
}

/* Whether this rank updates tensor i of group g (the host's replica). */
static int updates(const dm_trainer *t, int64_t g, int i)
{
    return !t->skip_group[g] && !(t->skip_tensor && t->skip_tensor[i]);
}

/* One host: a rank needs the sums of its own groups' gradients only (it
 * updates nothing else), so the all-reduce becomes a reduce-scatter into the
 * owners (no copies back), where the groups cover every tensor once. */
static dm_status own_gradients(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    const dm_model *m = t->m;
    int64_t G = dm_tr_n_groups(&m->cfg);
    int *cover = calloc((size_t)m->n_tensors, sizeof *cover);
    int64_t *lo = malloc((size_t)m->n_tensors * 2 * sizeof *lo), *hi = lo ? lo + m->n_tensors : NULL;
    if (!cover || !lo) {
        free(cover), free(lo);
        return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    }
    int n = 0, once = 1;
    for (int64_t g = 0; g < G; g++)
        for (int i = t->grp_t0[g]; i < t->grp_t1[g]; i++) {
            cover[i]++;
            if (!updates(t, g, i)) continue;
            const dm_tensor_desc *a = &m->tensors[i];
            if (n && hi[n - 1] == a->offset) hi[n - 1] += a->numel;   /* one range for neighbours */
            else lo[n] = a->offset, hi[n++] = a->offset + a->numel;
        }
    for (int i = 0; i < m->n_tensors; i++) once &= cover[i] == 1;
    dm_status st = DM_OK;
    if (once && !(st = dm_shm_set_owned(d->shm, lo, hi, n, err))) d->owned = 1;
    free(cover), free(lo);
    return st;
}

/* The replica's layout in the host's arena: parameters, model packs, the
 * trainer's packs, the two moments; returns the bytes. */
static size_t replica_layout(dm_trainer *t, size_t *np, size_t *npk, size_t *ntp, size_t off[4])
{
    const dm_model *m = t->m;
    *np = (size_t)m->n_params * sizeof(float);
    *npk = (size_t)dm_model_memory(m) - *np;
    *ntp = dm_tr_tpacked_bytes(t);
#define UP(x) (((x) + 4095) / 4096 * 4096)
    off[0] = UP(*np), off[1] = off[0] + UP(*npk), off[2] = off[1] + UP(*ntp), off[3] = off[2] + UP(*np);
    return off[3] + UP(*np);
#undef UP
}

static dm_status replica_make(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    dm_model *m = t->m;
    d->replica = 0;
    if (!(t->skip_group = calloc((size_t)dm_tr_n_groups(&m->cfg), 1))) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    size_t np, npk, ntp, off[4];
    replica_layout(t, &np, &npk, &ntp, off);
    size_t o_pk = off[0], o_tp = off[1], o_m = off[2], o_v = off[3];
    unsigned char *a = d->arena;
    dm_status st = DM_OK;
    if (a) {
        if (dm_shm_host_rank(d->shm) == 0) {   /* every rank holds the same state: the first one copies it */
            memcpy(a, m->params, np);
            memcpy(a + o_pk, m->packed, npk);
            memcpy(a + o_tp, t->tpacked, ntp);
            memcpy(a + o_m, t->adam_m, np);
            memcpy(a + o_v, t->adam_v, np);
        }
        st = dm_shm_host_barrier(d->shm, err);
    }
    if (st || !a) {
        free(t->skip_group);
        t->skip_group = NULL;
        return st;
    }
    d->own_p = m->params, d->own_pk = m->packed, d->own_tpk = t->tpacked, d->own_m = t->adam_m, d->own_v = t->adam_v;
    dm_model_rebase(m, (float *)(void *)a, a + o_pk);
    dm_tr_rebase(t, a + o_tp, (float *)(void *)(a + o_m), (float *)(void *)(a + o_v));
    /* the private copies' pages go back to the kernel until the end */
    int64_t nf = m->n_params;
    release(d->own_p, 0, nf, 0);
    release(d->own_m, 0, nf, 0);
    release(d->own_v, 0, nf, 0);
    release_bytes(d->own_pk, d->own_pk + npk, 0);
    release_bytes(d->own_tpk, d->own_tpk + ntp, 0);
    d->replica = 2;   /* from here the restore at the end is due */
    if ((st = replica_owners(t, err))) return st;
    return dm_shm_hosts(d->shm) == 1 ? own_gradients(t, err) : DM_OK;
}

/* bf16 training leaves the model's own f32 packs stale (its forward uses the
 * trainer's bf16 copies), and a forward on them (rank 0's evaluation) would
 * re-pack the shared copies while the other ranks run: before a gather (every
 * rank, ahead of any evaluation or checkpoint) each rank re-packs the f32
 * copies of what it updates, then the host's barrier. */
static dm_status replica_fresh(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    dm_model *m = t->m;
    const dm_config *c = &m->cfg;
    if (d->replica != 2 || !t->bf16) return DM_OK;   /* every rank of the host, or the barrier would not meet */
    int S = c->n_experts + c->n_shared, per = S + 1, D = c->dim;
    int64_t layers = (int64_t)c->n_layers * per;
    float *cat = t->ttmp + t->cat_off;
    for (int64_t g = 0; g < dm_tr_n_groups(c); g++) {
        if (g == layers && c->in_dim && updates(t, g, t->grp_t0[g])) dm_wmat_pack_f32(&m->embed.p, m->embed.w);
        if (g >= layers || g % per == S) continue;   /* routers and the head are re-packed in f32 at every step */
        dm_expert_w *x = &m->layers[g / per].experts[g % per];
        if (updates(t, g, dm_model_tensor_at(m, x->w1))) {
            if (dm_expert_ops_of(c)->up_mult == 2) {   /* [W1; W3], as dm_model_pack_masters */
                memcpy(cat, x->w1, (size_t)x->hidden * D * sizeof *cat);
                memcpy(cat + (size_t)x->hidden * D, x->w3, (size_t)x->hidden * D * sizeof *cat);
                dm_wmat_pack_f32(&x->p1, cat);
            } else {
                dm_wmat_pack_f32(&x->p1, x->w1);
            }
        }
        if (updates(t, g, dm_model_tensor_at(m, x->w2))) dm_wmat_pack_f32(&x->p2, x->w2);
    }
    dm_status st = dm_shm_host_barrier(d->shm, err);
    if (!st) m->stale = 0;
    return st;
}

dm_status dm_trd_end_update(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    return d && d->replica == 2 ? dm_shm_host_barrier(d->shm, err) : DM_OK;
}

/* ---------------------------------------------------------------- the step */

dm_status dm_trd_begin_step(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    dm_status st = DM_OK;
    if (d && d->P > 1) {   /* every gradient but the other ranks' experts' (released: zero) */
        int64_t at = 0;
        for (int l = 0; l < t->m->cfg.n_layers; l++) {
            memset(t->grad + at, 0, (size_t)(d->ex_lo[l] - at) * sizeof *t->grad);
            memset(t->grad + d->own_lo[l], 0, (size_t)(d->own_hi[l] - d->own_lo[l]) * sizeof *t->grad);
            at = d->ex_hi[l];
        }
        memset(t->grad + at, 0, (size_t)(t->m->n_params - at) * sizeof *t->grad);
        return DM_OK;
    }
    if (d && d->replica == 1 && (st = replica_make(t, err))) return st;
    if (!d || d->mode < DM_DIST_ZERO2) {
        /* shared gradients: the peers may still be copying the last step's sums out of them */
        if (d && d->shm && (st = dm_shm_quiesce(d->shm, err))) return st;
        dm_pool_copy(t->pool, t->grad, NULL, (size_t)t->m->n_params * sizeof *t->grad);
        return DM_OK;
    }
    /* the rest was released (reads zero) when its unit was reduced */
    int64_t s0 = d->sh[d->rank], s1 = d->sh[d->rank + 1];
    memset(t->grad + s0, 0, (size_t)(s1 - s0) * sizeof *t->grad);
    return DM_OK;
}

static dm_status start_gather(dm_trainer *t, int u, dm_creq *rq, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    shard_counts(d, d->u_lo[u], d->u_hi[u]);
    return dm_comm_iallgatherv(d->world, t->m->params + d->u_lo[u], d->cnt, rq, err);
}

/* zero3: unit u gathered (the prefetch started at the previous use, else now)
 * and packed; then the next unit of the micro-batch's order starts gathering
 * while this one computes (two units are resident at a time). */
dm_status dm_trd_unit_use(dm_trainer *t, int u, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    if (!d || d->mode != DM_DIST_ZERO3) return DM_OK;
    while (d->at_seq < d->n_seq && d->seq[d->at_seq] != u) d->at_seq++;   /* the use sequence (u = 0 restarts it) */
    if (u == 0 && d->at_seq == d->n_seq) d->at_seq = 0;
    dm_status st = DM_OK;
    if (d->u_hi[u] > d->u_lo[u]) {
        dm_creq now = {0};
        dm_creq *rq = d->pre_unit == u ? &d->pre : &now;
        if (d->pre_unit != u) {
            if (d->pre_unit >= 0 && (st = dm_comm_wait(d->world, &d->pre, err))) return st;   /* an unused prefetch */
            if ((st = start_gather(t, u, &now, err))) return st;
        }
        d->pre_unit = -1;
        if ((st = dm_comm_wait(d->world, rq, err))) return st;
        pack_unit(t, u);
    }
    /* the next unit of the order (not past the backward's end: the update changes the parameters) */
    for (int i = d->at_seq + 1; i < d->n_seq; i++) {
        int v = d->seq[i];
        if (v == u || d->u_hi[v] <= d->u_lo[v]) continue;
        if ((st = start_gather(t, v, &d->pre, err))) return st;
        d->pre_unit = v;
        break;
    }
    d->at_seq++;
    return st;
}

void dm_trd_unit_done(dm_trainer *t, int u)
{
    dm_tr_dist *d = t->dist;
    if (!d || d->mode != DM_DIST_ZERO3) return;
    release_but_shard(d, t->m->params, d->u_lo[u], d->u_hi[u], 1);
    release_bytes(d->pk[4 * u], d->pk[4 * u + 1], 1);
    release_bytes(d->pk[4 * u + 2], d->pk[4 * u + 3], 1);
}

static struct pend *new_pend(dm_tr_dist *d, dm_error *err)
{
    if (d->n_rq == d->cap_rq) {
        int cap = d->cap_rq ? 2 * d->cap_rq : 16;
        struct pend *n = realloc(d->rq, (size_t)cap * sizeof *n);
        if (!n) {
            dm_fail(err, DM_ERR_NOMEM, "out of memory");
            return NULL;
        }
        d->rq = n;
        d->cap_rq = cap;
    }
    struct pend *p = &d->rq[d->n_rq];
    *p = (struct pend){.c = d->world};
    return p;
}

static dm_status start_allreduce(dm_tr_dist *d, dm_comm *c, float *g, int64_t lo, int64_t hi, dm_error *err)
{
    for (int64_t a = lo; a < hi; a += d->bucket) {
        struct pend *p = new_pend(d, err);
        if (!p) return DM_ERR_NOMEM;
        p->c = c;
        if (d->shm && c == d->world) {   /* g is the shared buffer */
            dm_status st = dm_shm_start(d->shm, a, DM_MIN(d->bucket, hi - a), &p->shm_id, err);
            if (st) return st;
            d->n_rq++;
            continue;
        }
        dm_status st = dm_comm_iallreduce(c, g + a, DM_MIN(d->bucket, hi - a), &p->rq, err);
        if (st) return st;
        if (p->rq.h) {
            p->rq.what = c == d->world ? "MPI_Iallreduce (gradients)" : "MPI_Iallreduce (expert gradients)";
            d->n_rq++;
        }
    }
    return DM_OK;
}

/* zero2/3: [lo, hi) reduce-scattered in buckets; each finishes by moving the
 * rank's sums (landed at the bucket's start) to their place and releasing the rest. */
static dm_status start_scatter(dm_tr_dist *d, float *g, int64_t lo, int64_t hi, dm_error *err)
{
    for (int64_t a = lo; a < hi; a += d->bucket) {
        int64_t b = DM_MIN(hi, a + d->bucket);
        struct pend *p = new_pend(d, err);
        if (!p) return DM_ERR_NOMEM;
        *p = (struct pend){.c = d->world, .scatter = 1, .lo = a, .hi = b};
        shard_counts(d, a, b);
        dm_status st = dm_comm_ireduce_scatter(d->world, g + a, d->cnt, &p->rq, err);
        if (st) return st;
        d->n_rq++;
    }
    return DM_OK;
}

static void finish_scatter(dm_trainer *t, const struct pend *p)
{
    dm_tr_dist *d = t->dist;
    int64_t mine = shard_counts(d, p->lo, p->hi), n = d->cnt[d->rank];
    float *g = t->grad + mine;
    memmove(g, t->grad + p->lo, (size_t)n * sizeof *t->grad);
    release_but_shard(d, t->grad, p->lo, p->hi, 1);
    if (d->gacc) {   /* micro-batches: the shard's sums accumulate here, the gradient starts again at 0 */
        float *acc = d->gacc + (mine - d->sh[d->rank]);
        if (d->first_micro) memcpy(acc, g, (size_t)n * sizeof *acc);
        else for (int64_t i = 0; i < n; i++) acc[i] += g[i];
        memset(g, 0, (size_t)n * sizeof *g);
    }
}

/* Finishes the reductions in order: all of them (wait), or those already done. */
static dm_status drain(dm_trainer *t, int wait, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    dm_status st = DM_OK;
    while (d->done_rq < d->n_rq) {
        struct pend *p = &d->rq[d->done_rq];
        if (p->shm_id) {
            if (!wait && !dm_shm_test(d->shm, p->shm_id)) break;
            if ((st = dm_shm_wait(d->shm, p->shm_id, err))) return st;
            d->done_rq++;
            continue;
        }
        if (!wait && !dm_comm_test(p->c, &p->rq)) break;
        if ((st = dm_comm_wait(p->c, &p->rq, err))) return st;
        if (p->scatter) finish_scatter(t, p);
        d->done_rq++;
    }
    if (d->done_rq == d->n_rq) d->n_rq = d->done_rq = 0;
    return st;
}

void dm_trainer_set_sync(dm_trainer *t, int sync)
{
    if (t->dist) t->dist->nosync = !sync;
}

dm_status dm_trd_grads_ready(dm_trainer *t, int u, int last_micro, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    if (!d || d->nosync) return DM_OK;
    int64_t lo = d->u_lo[u], hi = d->u_hi[u];
    dm_status st = DM_OK;
    if (d->mode >= DM_DIST_ZERO2 && d->gacc) {
        /* with micro-batches each one's gradients are reduce-scattered (DeepSpeed's stage 2),
         * so no rank ever holds more than the units in flight; all done before the next one */
        int A = t->tc.grad_accum;
        d->first_micro = t->micro % A == 0;
        if (hi > lo && (st = start_scatter(d, t->grad, lo, hi, err))) return st;
        return drain(t, u == 0 && !last_micro, err);
    }
    if (!last_micro || hi <= lo) return DM_OK;
    if (d->mode >= DM_DIST_ZERO2) {
        if ((st = start_scatter(d, t->grad, lo, hi, err))) return st;
        return drain(t, 0, err);
    }
    int l = u - 1;
    if (d->P > 1 && u >= 1 && u <= t->m->cfg.n_layers) {
        /* router and shared experts: every rank; the rank's own experts: their owners */
        if (!(st = start_allreduce(d, d->world, t->grad, lo, d->ex_lo[l], err)) &&
            !(st = start_allreduce(d, d->edp, t->grad, d->own_lo[l], d->own_hi[l], err)))
            st = start_allreduce(d, d->world, t->grad, d->ex_hi[l], hi, err);
    } else {
        st = start_allreduce(d, d->world, t->grad, lo, hi, err);
    }
    if (d->shm && d->n_rq > d->done_rq) dm_shm_test(d->shm, d->rq[d->n_rq - 1].shm_id);   /* progress */
    for (int i = d->done_rq; i < d->n_rq && !st; i++)
        if (!d->rq[i].shm_id) dm_comm_test(d->rq[i].c, &d->rq[i].rq);
    return st;
}

dm_status dm_trd_end_backward(dm_trainer *t, double *stats, int n, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    if (!d) return DM_OK;
    dm_status st = drain(t, 1, err);
    if (st) return st;
    d->at_seq = 0;
    if (d->gacc && !d->nosync)
        memcpy(t->grad + d->sh[d->rank], d->gacc, (size_t)(d->sh[d->rank + 1] - d->sh[d->rank]) * sizeof *t->grad);
    const dm_config *c = &t->m->cfg;
    int64_t LE = (int64_t)c->n_layers * c->n_experts;
    if ((st = dm_comm_allreduce(d->world, t->counts, LE, DM_T_I64, err))) return st;
    return dm_comm_allreduce(d->world, stats, n, DM_T_F64, err);
}

dm_status dm_trd_grad_norm(dm_trainer *t, double *norm, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    double s = 0;
    if (d->P > 1) {
        /* expert parallel: an expert's gradients are whole on its owners only (zero elsewhere):
         * rank 0 counts the replicated tensors, the first data-parallel group the experts it owns */
        dm_tr_tensor_sq(t, 0, t->m->n_params);
        for (int i = 0; i < t->m->n_tensors; i++) {
            int64_t off = t->m->tensors[i].offset;
            int expert = 0, mine = 0;
            for (int l = 0; l < t->m->cfg.n_layers && !expert; l++) {
                expert = off >= d->ex_lo[l] && off < d->ex_hi[l];
                mine = off >= d->own_lo[l] && off < d->own_hi[l];
            }
            if (expert ? mine && d->rank / d->P == 0 : d->rank == 0) s += t->tensor_sq[i];
        }
    } else if (d->owned) {
        /* each rank holds the sums of its own groups' gradients only: their squares */
        const dm_model *m = t->m;
        for (int64_t g = 0; g < dm_tr_n_groups(&m->cfg); g++)
            for (int i = t->grp_t0[g]; i < t->grp_t1[g]; i++)
                if (updates(t, g, i) && !t->frozen[i]) s += m->kern->sumsq(t->grad + m->tensors[i].offset, m->tensors[i].numel);
    } else {
        /* each rank sums its shard's squares (under dp and zero1 every rank holds the same whole
         * gradient; the shards split the work), then one all-reduce of the sum */
        dm_tr_tensor_sq(t, d->sh[d->rank], d->sh[d->rank + 1]);
        for (int i = 0; i < t->m->n_tensors; i++) s += t->tensor_sq[i];
    }
    dm_status st = dm_comm_allreduce(d->world, &s, 1, DM_T_F64, err);
    if (st) return st;
    *norm = sqrt(s);
    return DM_OK;
}

typedef struct zadam_arg { const adam_arg *a; int64_t lo, hi; } zadam_arg;

static void zadam_task(void *arg, int64_t i, int tid)
{
    DM_UNUSED(tid);
    zadam_arg *z = arg;
    const dm_tensor_desc *d = &z->a->t->m->tensors[i];
    dm_tr_adamw_range(z->a, (int)i, DM_MAX(d->offset, z->lo), DM_MIN(d->offset + d->numel, z->hi));
}

int dm_trd_update(dm_trainer *t, const adam_arg *a, dm_status *st, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    *st = DM_OK;
    if (!d || d->mode == DM_DIST_DP) return 0;
    zadam_arg z = {a, d->sh[d->rank], d->sh[d->rank + 1]};
    dm_pool_run(t->pool, t->m->n_tensors, zadam_task, &z);
    if (d->mode == DM_DIST_ZERO3) return 1;   /* the next forward gathers each unit */
    shard_counts(d, 0, t->m->n_params);
    if (!(*st = dm_comm_allgatherv(d->world, t->m->params, d->cnt, err))) dm_tr_sync(t);
    return 1;
}

/* ---------------------------------------------------------------- whole state */

static uint64_t fnv(uint64_t h, const float *x, int64_t n)
{
    const unsigned char *p = (const unsigned char *)x;
    for (int64_t i = 0; i < n * (int64_t)sizeof *x; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Every rank holds the same whole state after a gather: a rank whose
 * replicated parameters, selection biases or moments drifted is an error. */
static dm_status check_replicas(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    int64_t n = t->m->n_params;
    uint64_t h = fnv(fnv(fnv(0xcbf29ce484222325ull, t->m->params, n), t->adam_m, n), t->adam_v, n), h0 = h;
    dm_status st = dm_comm_bcast(d->world, &h0, sizeof h0, 0, err);
    int64_t bad = h != h0;
    if (!st) st = dm_comm_allreduce(d->world, &bad, 1, DM_T_I64, err);
    if (!st && bad)
        st = dm_fail(err, DM_ERR_COMM, "rank %d: after step %lld the state of %lld rank(s) differs from rank 0's "
                     "(parameters, selection biases or moments): the replicas diverged", d->rank, (long long)t->step,
                     (long long)bad);
    return st;
}

static dm_status gather_state(dm_trainer *t, dm_error *err);

dm_status dm_trainer_gather(dm_trainer *t, dm_error *err)
{
    if (!t->dist) return DM_OK;
    dm_status st = replica_fresh(t, err);
    if (!st) st = gather_state(t, err);
    return st ? st : check_replicas(t, err);
}

static dm_status gather_state(dm_trainer *t, dm_error *err)
{
    dm_tr_dist *d = t->dist;
    dm_status st = DM_OK;
    int64_t n = t->m->n_params;
    if (d->mode >= DM_DIST_ZERO1) {
        shard_counts(d, 0, n);
        if (!(st = dm_comm_allgatherv(d->world, t->adam_m, d->cnt, err)))
            st = dm_comm_allgatherv(d->world, t->adam_v, d->cnt, err);
        if (!st && d->mode == DM_DIST_ZERO3 && !(st = dm_comm_allgatherv(d->world, t->m->params, d->cnt, err)))
            dm_tr_sync(t);
        return st;
    }
    if (d->P > 1) {   /* each rank's experts from their owner in data-parallel group 0 */
        for (int l = 0; l < t->m->cfg.n_layers && !st; l++)
            for (int p = 0; p < d->P && !st; p++) {
                /* rank p owns the experts of ep rank p; their range on every rank is the same */
                int64_t lo = 0, hi = 0;
                int E = t->m->cfg.n_experts;
                for (int e = 0; e < E; e++)
                    if (d->x->owner[e] == p) {
                        const dm_expert_w *x = &t->m->layers[l].experts[e];
                        if (!hi) lo = off_of(t->m, x->w1);
                        hi = e + 1 < E ? off_of(t->m, t->m->layers[l].experts[e + 1].w1) : d->ex_hi[l];
                    }
                float *bufs[3] = {t->m->params, t->adam_m, t->adam_v};
                for (int b = 0; b < 3 && !st; b++)
                    st = dm_comm_bcast(d->world, bufs[b] + lo, (hi - lo) * (int64_t)sizeof(float), p, err);
            }
        if (!st) dm_tr_sync(t);
    }
    return st;
}

void dm_trainer_release(dm_trainer *t)
{
    if (t->dist) release_all(t);
}

void dm_trainer_reduce_topology(const dm_trainer *t, int *host_ranks, int *hosts, int *replica)
{
    const dm_tr_dist *d = t->dist;
    *host_ranks = d && d->shm ? dm_shm_host_ranks(d->shm) : 1;
    *hosts = d ? d->R / *host_ranks : 1;
    *replica = d && d->replica;
}

void dm_trainer_memory(const dm_trainer *t, dm_train_memory *mem)
{
    const dm_tr_dist *d = t->dist;
    int64_t n = t->m->n_params, sh = d ? d->sh[d->rank + 1] - d->sh[d->rank] : n;
    int mode = d ? d->mode : DM_DIST_NONE;
    size_t unit_max = 0;
    for (int i = 0; d && i < d->n_units; i++) {
        size_t u = (size_t)(d->pk[4 * i + 1] - d->pk[4 * i]) + (size_t)(d->pk[4 * i + 3] - d->pk[4 * i + 2]);
        unit_max = DM_MAX(unit_max, u);
    }
    size_t packed = t->packed_bytes;
    int64_t others = 0;   /* expert parallel: the other ranks' experts' floats (released) */
    for (int l = 0; d && d->P > 1 && l < t->m->cfg.n_layers; l++) {
        others += (d->ex_hi[l] - d->ex_lo[l]) - (d->own_hi[l] - d->own_lo[l]);
        for (int e = 0; e < t->m->cfg.n_experts; e++)
            if (d->x->owner[e] != d->ep_rank) packed -= expert_packed(t, l, e, 0);
    }
    int64_t unit_floats = 0;
    for (int i = 0; d && i < d->n_units; i++) unit_floats = DM_MAX(unit_floats, d->u_hi[i] - d->u_lo[i]);
    *mem = (dm_train_memory){
        .n_params = n,
        .params = (mode == DM_DIST_ZERO3 ? sh : n - others) * 4,
        .grads = (mode >= DM_DIST_ZERO2 ? sh : n - others) * 4,
        .moments = (mode >= DM_DIST_ZERO1 ? sh : n - others) * 8,
        .packed = (int64_t)(mode == DM_DIST_ZERO3 ? unit_max : packed),
        .gathered = mode >= DM_DIST_ZERO2 ? unit_floats * 4 : 0,
    };
    if (d && d->replica == 2) {   /* one copy per host: each of its ranks counts its share */
        int h = dm_shm_host_ranks(d->shm);
        mem->params /= h, mem->moments /= h, mem->packed /= h;
    }
    dm_mem_rss(&mem->rss, &mem->rss_peak);
}
