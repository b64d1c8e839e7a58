/* test_exchange.c - the exchange seam proven in one process: the routed
 * experts split across simulated ranks (threads) that trade rows through a
 * loopback exchange (counts, then rows, as MPI_Alltoall / MPI_Alltoallv will),
 * and every number comes out bit for bit as the plain run's:
 *   - inference: each rank's outputs and routing equal the plain forward of its rows;
 *   - training (one layer, forward + backward with a given output gradient):
 *     each rank's outputs and input gradients equal the plain run's rows, the
 *     gradients of the experts a rank owns equal the plain run's over all ranks'
 *     rows (the rows arrive in the order one process would see them), the
 *     router's equal the plain run over the rank's own rows, and the experts a
 *     rank does not own get no gradient there. */
#include "test.h"

#include "base/base.h"
#include "train/trainer.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_RANKS 4

/* ---------------------------------------------------------------- loopback */

typedef struct loop {
    pthread_barrier_t bar;
    int R;
    const int64_t *cnt[MAX_RANKS];
    const float *send[MAX_RANKS];
    const int64_t *send_n[MAX_RANKS];
} loop;

typedef struct rank_ctx { loop *lp; int rank; } rank_ctx;

static dm_status lb_counts(void *ctx, const int64_t *send, int64_t *recv, int per, dm_error *err)
{
    DM_UNUSED(err);
    rank_ctx *rc = ctx;
    loop *lp = rc->lp;
    lp->cnt[rc->rank] = send;
    pthread_barrier_wait(&lp->bar);
    for (int s = 0; s < lp->R; s++)
        for (int e = 0; e < per; e++) recv[(int64_t)s * per + e] = lp->cnt[s][(int64_t)rc->rank * per + e];
    pthread_barrier_wait(&lp->bar);  /* nobody reuses its send buffer before all have read */
    return DM_OK;
}

static dm_status lb_rows(void *ctx, const float *send, const int64_t *send_n, float *recv, const int64_t *recv_n,
                         int width, dm_error *err)
{
    rank_ctx *rc = ctx;
    loop *lp = rc->lp;
    lp->send[rc->rank] = send;
    lp->send_n[rc->rank] = send_n;
    pthread_barrier_wait(&lp->bar);
    int64_t at = 0;
    dm_status st = DM_OK;
    for (int s = 0; s < lp->R; s++) {
        int64_t off = 0;  /* rows rank s sends to ranks below this one */
        for (int o = 0; o < rc->rank; o++) off += lp->send_n[s][o];
        int64_t n = lp->send_n[s][rc->rank];
        if (n != recv_n[s]) st = dm_fail(err, DM_ERR_ARG, "loopback: rank %d expected %lld rows from %d, got %lld",
                                          rc->rank, (long long)recv_n[s], s, (long long)n);
        else if (n) memcpy(recv + at * width, lp->send[s] + off * width, (size_t)n * width * sizeof(float));
        at += recv_n[s];
    }
    pthread_barrier_wait(&lp->bar);
    return st;
}

/* ---------------------------------------------------------------- setup */

typedef struct variant {
    const char *name;
    dm_config c;
    int R;
    int interleave;       /* owner[e] = e % R, else contiguous blocks */
    int64_t rows[MAX_RANKS];
} variant;

static variant variant_at(int i)
{
    variant v = {0};
    dm_config_default(&v.c);
    v.c.dim = 20; v.c.n_experts = 6; v.c.top_k = 2; v.c.hidden = 12;
    v.R = 2;
    v.rows[0] = 37; v.rows[1] = 29;
    switch (i) {
    case 0: v.name = "seed experts, 2 ranks, blocks"; break;
    case 1:
        v.name = "swiglu + sigmoid + shared, 2 ranks, interleaved";
        v.c.expert = DM_EXPERT_SWIGLU; v.c.router = DM_ROUTER_SIGMOID; v.c.n_shared = 1; v.c.shared_hidden = 8;
        v.interleave = 1;
        break;
    case 2:
        v.name = "seed + shared, 3 ranks (one owns nothing routed here), 1 row on one rank";
        v.c.n_experts = 4; v.c.n_shared = 2; v.R = 3; v.rows[0] = 50; v.rows[1] = 1; v.rows[2] = 17;
        break;
    case 3:  /* inference only: a rank with no rows still takes part in every exchange */
        v.name = "2 ranks, one with no rows (its last batch was empty)";
        v.c.n_shared = 1; v.rows[0] = 16; v.rows[1] = 0;
        break;
    }
    return v;
}

static void owners_of(const variant *v, int32_t *owner)
{
    int E = v->c.n_experts;
    for (int e = 0; e < E; e++) owner[e] = v->interleave ? e % v->R : (int32_t)((int64_t)e * v->R / E);
}

/* ---------------------------------------------------------------- inference */

typedef struct infer_job {
    const dm_model *m;
    dm_moe_exchange x;
    rank_ctx rc;
    const float *in;
    int64_t n;
    float *y;
    int32_t *route_e;
    dm_status st;
    dm_error err;
} infer_job;

static void *infer_rank(void *arg)
{
    infer_job *j = arg;
    dm_ctx *ctx = NULL;
    j->st = dm_ctx_create(j->m, NULL, &ctx, &j->err);
    if (j->st) return NULL;
    dm_ctx_set_exchange(ctx, &j->x);
    dm_routing rt = {j->route_e, NULL};
    j->st = dm_forward(ctx, j->in, j->n, j->y, &rt, &j->err);
    dm_ctx_free(ctx);
    return NULL;
}

static void test_exchange_inference_bitwise(dm_t *t)
{
    for (int vi = 0; vi < 4; vi++) {
        variant v = variant_at(vi);
        dm_error err;
        dm_model *m = NULL;
        CHECK_OK(t, dm_model_create(&v.c, NULL, &m, &err), &err);
        if (!m) continue;
        dm_test_randomize(m, 11 + vi);
        int32_t owner[64];
        owners_of(&v, owner);
        loop lp = {.R = v.R};
        pthread_barrier_init(&lp.bar, NULL, (unsigned)v.R);
        infer_job jobs[MAX_RANKS];
        pthread_t th[MAX_RANKS];
        int D = v.c.dim, k = v.c.top_k;
        for (int r = 0; r < v.R; r++) {
            jobs[r] = (infer_job){.m = m, .n = v.rows[r]};
            jobs[r].rc = (rank_ctx){&lp, r};
            jobs[r].x = (dm_moe_exchange){v.R, r, owner, lb_counts, lb_rows, &jobs[r].rc};
            jobs[r].in = dm_test_rows(v.rows[r], D, 100 + r);
            jobs[r].y = malloc((size_t)v.rows[r] * D * sizeof(float));
            jobs[r].route_e = malloc((size_t)v.rows[r] * k * sizeof(int32_t));
            pthread_create(&th[r], NULL, infer_rank, &jobs[r]);
        }
        for (int r = 0; r < v.R; r++) pthread_join(th[r], NULL);
        dm_ctx *plain = NULL;
        CHECK_OK(t, dm_ctx_create(m, NULL, &plain, &err), &err);
        for (int r = 0; r < v.R && plain; r++) {
            CHECK(t, jobs[r].st == DM_OK, "%s: rank %d: %s", v.name, r, jobs[r].err.msg);
            float *y = malloc((size_t)v.rows[r] * D * sizeof(float));
            int32_t *re = malloc((size_t)v.rows[r] * k * sizeof(int32_t));
            dm_routing rt = {re, NULL};
            CHECK_OK(t, dm_forward(plain, jobs[r].in, v.rows[r], y, &rt, &err), &err);
            CHECK(t, !memcmp(y, jobs[r].y, (size_t)v.rows[r] * D * sizeof(float)),
                  "%s: rank %d outputs differ from the plain forward", v.name, r);
            CHECK(t, !memcmp(re, jobs[r].route_e, (size_t)v.rows[r] * k * sizeof(int32_t)),
                  "%s: rank %d routing differs", v.name, r);
            free(y); free(re);
        }
        for (int r = 0; r < v.R; r++) { free((void *)jobs[r].in); free(jobs[r].y); free(jobs[r].route_e); }
        dm_ctx_free(plain);
        pthread_barrier_destroy(&lp.bar);
        dm_model_free(m);
    }
}

/* ---------------------------------------------------------------- training */

/* One layer's forward and backward on a trainer: x [n, D] in, d [n, D] the
 * output gradient; out y [n, D], dx [n, D], gradients in t->grad. */
typedef struct layer_job {
    dm_trainer *t;
    const dm_moe_exchange *x;
    const float *in, *d;
    int64_t n;
    float *y, *dx;
    dm_status st;
    dm_error err;
} layer_job;

static void *layer_rank(void *arg)
{
    layer_job *j = arg;
    dm_trainer *t = j->t;
    const dm_config *c = &t->m->cfg;
    int64_t D = c->dim;
    dm_tr_set_exchange(t, j->x);
    if ((j->st = dm_tr_reserve(t, j->n, &j->err))) return NULL;
    t->n = j->n;
    t->x = j->in;
    memcpy(t->act, j->in, (size_t)j->n * D * sizeof(float));
    memset(t->grad, 0, (size_t)t->m->n_params * sizeof(float));
    if ((j->st = dm_tr_layer_forward(t, 0, &j->err))) return NULL;
    memcpy(j->y, t->act + j->n * D, (size_t)j->n * D * sizeof(float));
    memset(t->dw, 0, (size_t)j->n * c->top_k * sizeof(float));
    memset(t->dlogits, 0, (size_t)j->n * c->n_experts * sizeof(float));
    j->st = dm_tr_layer_backward(t, 0, j->d, j->dx, &j->err);
    return NULL;
}

static dm_trainer *trainer_for(dm_t *t, const dm_config *c, uint64_t seed, dm_model **mout)
{
    dm_error err;
    dm_model *m = NULL;
    CHECK_OK(t, dm_model_create(c, NULL, &m, &err), &err);
    if (!m) return NULL;
    dm_test_randomize(m, seed);
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 10;
    tc.dropout = 0.25f;   /* keyed by (global row, slot): the same mask wherever the expert runs */
    dm_trainer *tr = NULL;
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    *mout = m;
    return tr;
}

/* Does tensor i belong to routed expert e ("experts.{e}.")? */
static int tensor_expert(const char *name)
{
    if (strncmp(name, "experts.", 8)) return -1;
    return atoi(name + 8);
}

static void test_exchange_training_bitwise(dm_t *t)
{
    for (int vi = 0; vi < 3; vi++) {
        variant v = variant_at(vi);
        int D = v.c.dim, R = v.R;
        int32_t owner[64];
        owners_of(&v, owner);
        int64_t total = 0, off[MAX_RANKS + 1] = {0};
        for (int r = 0; r < R; r++) off[r + 1] = off[r] + v.rows[r];
        total = off[R];
        float *xall = dm_test_rows(total, D, 300 + vi), *dall = dm_test_rows(total, D, 400 + vi);

        /* plain: all rows in one process, and each rank's rows alone */
        dm_model *pm = NULL;
        dm_trainer *plain = trainer_for(t, &v.c, 21 + vi, &pm);
        float *py = malloc((size_t)total * D * sizeof(float)), *pdx = malloc((size_t)total * D * sizeof(float));
        layer_job pj = {plain, NULL, xall, dall, total, py, pdx, DM_OK, {0}};
        if (plain) layer_rank(&pj);
        CHECK(t, pj.st == DM_OK, "%s: plain: %s", v.name, pj.err.msg);

        dm_model *rm[MAX_RANKS] = {0}, *sm[MAX_RANKS] = {0};
        dm_trainer *rt[MAX_RANKS] = {0}, *solo[MAX_RANKS] = {0};
        layer_job jobs[MAX_RANKS], sj[MAX_RANKS];
        rank_ctx rc[MAX_RANKS];
        dm_moe_exchange xs[MAX_RANKS];
        loop lp = {.R = R};
        pthread_barrier_init(&lp.bar, NULL, (unsigned)R);
        pthread_t th[MAX_RANKS];
        for (int r = 0; r < R; r++) {
            rt[r] = trainer_for(t, &v.c, 21 + vi, &rm[r]);
            solo[r] = trainer_for(t, &v.c, 21 + vi, &sm[r]);
            if (rt[r]) rt[r]->drop_row0 = off[r];    /* rank r's rows are rows off[r].. of the plain batch */
            if (solo[r]) solo[r]->drop_row0 = off[r];
            rc[r] = (rank_ctx){&lp, r};
            xs[r] = (dm_moe_exchange){R, r, owner, lb_counts, lb_rows, &rc[r]};
            jobs[r] = (layer_job){rt[r], &xs[r], xall + off[r] * D, dall + off[r] * D, v.rows[r],
                                  malloc((size_t)v.rows[r] * D * sizeof(float)),
                                  malloc((size_t)v.rows[r] * D * sizeof(float)), DM_OK, {0}};
            sj[r] = (layer_job){solo[r], NULL, jobs[r].in, jobs[r].d, v.rows[r],
                                malloc((size_t)v.rows[r] * D * sizeof(float)),
                                malloc((size_t)v.rows[r] * D * sizeof(float)), DM_OK, {0}};
        }
        int ok = plain != NULL;
        for (int r = 0; r < R; r++) ok = ok && rt[r] && solo[r];
        if (ok) {
            for (int r = 0; r < R; r++) pthread_create(&th[r], NULL, layer_rank, &jobs[r]);
            for (int r = 0; r < R; r++) pthread_join(th[r], NULL);
            for (int r = 0; r < R; r++) layer_rank(&sj[r]);
        }
        for (int r = 0; ok && r < R; r++) {
            CHECK(t, jobs[r].st == DM_OK, "%s: rank %d: %s", v.name, r, jobs[r].err.msg);
            size_t bytes = (size_t)v.rows[r] * D * sizeof(float);
            CHECK(t, !memcmp(jobs[r].y, py + off[r] * D, bytes), "%s: rank %d outputs differ", v.name, r);
            CHECK(t, !memcmp(jobs[r].dx, pdx + off[r] * D, bytes), "%s: rank %d input gradients differ", v.name, r);
            for (int i = 0; i < rm[r]->n_tensors; i++) {
                const dm_tensor_desc *td = &rm[r]->tensors[i];
                const float *g = rt[r]->grad + td->offset;
                int e = tensor_expert(td->name);
                const float *want;
                const char *what;
                static const float zeros[4096];
                if (e >= 0 && owner[e] == r) { want = plain->grad + td->offset; what = "the plain run over all rows"; }
                else if (e >= 0) { want = NULL; what = "zero (expert owned elsewhere)"; }
                else { want = solo[r]->grad + td->offset; what = "the plain run over the rank's rows"; }
                int same = 1;
                if (want) same = !memcmp(g, want, (size_t)td->numel * sizeof(float));
                else
                    for (int64_t q = 0; q < td->numel; q += 4096)
                        same &= !memcmp(g + q, zeros, (size_t)DM_MIN(4096, td->numel - q) * sizeof(float));
                CHECK(t, same, "%s: rank %d: gradient of %s differs from %s", v.name, r, td->name, what);
            }
        }
        /* the split is real: some expert got rows from more than one rank */
        int shared_work = 0;
        for (int r = 0; ok && r < R; r++) shared_work |= rt[r]->xb[0].n_recv > rt[r]->lc[0].rb.offsets[v.c.n_experts] / R;
        CHECK(t, !ok || shared_work || R > 2, "%s: no rows crossed ranks", v.name);
        for (int r = 0; r < R; r++) {
            free(jobs[r].y); free(jobs[r].dx); free(sj[r].y); free(sj[r].dx);
            dm_trainer_free(rt[r]); dm_trainer_free(solo[r]); dm_model_free(rm[r]); dm_model_free(sm[r]);
        }
        pthread_barrier_destroy(&lp.bar);
        dm_trainer_free(plain);
        dm_model_free(pm);
        free(py); free(pdx); free(xall); free(dall);
    }
}

/* A rank that claims rows for an expert another rank owns is refused, not followed. */
static dm_status bad_counts(void *ctx, const int64_t *send, int64_t *recv, int per, dm_error *err)
{
    DM_UNUSED(ctx); DM_UNUSED(send); DM_UNUSED(err);
    for (int i = 0; i < 2 * per; i++) recv[i] = 1;
    return DM_OK;
}

static void test_exchange_bad_counts_refused(dm_t *t)
{
    variant v = variant_at(0);
    dm_error err;
    dm_model *m = NULL;
    CHECK_OK(t, dm_model_create(&v.c, NULL, &m, &err), &err);
    if (!m) return;
    dm_test_randomize(m, 3);
    int32_t owner[64];
    owners_of(&v, owner);
    dm_moe_exchange x = {2, 0, owner, bad_counts, lb_rows, NULL};
    dm_ctx *ctx = NULL;
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    if (ctx) {
        dm_ctx_set_exchange(ctx, &x);
        float *in = dm_test_rows(8, v.c.dim, 1), y[8 * 20];
        dm_status s = dm_forward(ctx, in, 8, y, NULL, &err);
        CHECK(t, s == DM_ERR_ARG && strstr(err.msg, "does not own"), "got %s: %s", dm_status_name(s), err.msg);
        free(in);
    }
    dm_ctx_free(ctx);
    ctx = NULL;
    /* an owner table naming a rank outside the group is refused, not half followed */
    int32_t bad_owner[6] = {0, 0, 1, 2, 1, 0};
    dm_moe_exchange y = {2, 0, bad_owner, lb_counts, lb_rows, NULL};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    if (ctx) {
        dm_ctx_set_exchange(ctx, &y);
        float *in = dm_test_rows(8, v.c.dim, 1), out[8 * 20];
        dm_status s = dm_forward(ctx, in, 8, out, NULL, &err);
        CHECK(t, s == DM_ERR_ARG && strstr(err.msg, "expert 3 is owned by rank 2, outside 0..1"), "got %s: %s",
              dm_status_name(s), err.msg);
        free(in);
    }
    dm_ctx_free(ctx);
    dm_model_free(m);
}

void suite_exchange(dm_t *t)
{
    DM_RUN(t, test_exchange_inference_bitwise);
    DM_RUN(t, test_exchange_training_bitwise);
    DM_RUN(t, test_exchange_bad_counts_refused);
}
