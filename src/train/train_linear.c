/* train_linear.c - the classifier's embedding (in -> D) and head
 * (LayerNorm, D -> C), forward with caches and backward. Rows are split across
 * threads for per-row work; weight gradients are split by output rows so each
 * element is summed by one thread in row order. */
#include "train/trainer.h"

#include <string.h>

#define ROW_BLOCK DM_TR_ROW_BLOCK
#define OUT_BLOCK 32

typedef struct lin_arg {
    dm_trainer *t;
    const dm_linear *lin;
    const dm_wmat *w;    /* the weight the GEMM runs on: lin->p, or the trainer's bf16 copy */
    const float *x; int64_t ldx;
    float *y; int64_t ldy;
} lin_arg;

static void fwd_rows(void *arg, int64_t ti, int tid)
{
    lin_arg *a = arg;
    int64_t r0 = ti * ROW_BLOCK, rn = DM_MIN(a->t->n - r0, ROW_BLOCK);
    dm_gemm g = {.M = rn, .N = a->lin->out, .K = a->lin->in, .A = a->x + r0 * a->ldx, .lda = a->ldx,
                 .B = a->w, .bias = a->lin->b, .C = a->y + r0 * a->ldy, .ldc = a->ldy,
                 .work = a->t->bwork ? dm_tr_bwork_gemm(a->t, tid) : NULL};
    dm_wmat_gemm(&g);
}

static int64_t row_tasks(const dm_trainer *t) { return (t->n + ROW_BLOCK - 1) / ROW_BLOCK; }

void dm_tr_embed_forward(dm_trainer *t)
{
    const dm_config *c = &t->m->cfg;
    if (!c->in_dim) {
        dm_pool_copy(t->pool, t->act, t->x, (size_t)t->n * c->dim * sizeof *t->act);
        return;
    }
    lin_arg a = {t, &t->m->embed, t->bf16 ? &t->embed_fw : &t->m->embed.p, t->x, c->in_dim, t->act, c->dim};
    dm_pool_run(t->pool, row_tasks(t), fwd_rows, &a);
}

/* dW[o, :] += sum_r d[r, o] x[r, :], db[o] += sum_r d[r, o], split by output rows. */
typedef struct wgrad_arg {
    dm_trainer *t;
    const float *d; int out;
    const float *x; int in;
    float *gw, *gb;
    int bf16;            /* the embedding under --precision bf16: gemm_tn_bf16 */
    int block;           /* output rows per task */
} wgrad_arg;

static void wgrad_task(void *arg, int64_t ti, int tid)
{
    wgrad_arg *a = arg;
    int n0 = (int)ti * a->block, n1 = DM_MIN(a->out, n0 + a->block);
    const dm_kernels *K = a->t->m->kern;
    dm_gemm_tn g = {.M = a->t->n, .N = a->out, .K = a->in, .A = a->d, .lda = a->out, .B = a->x, .ldb = a->in,
                    .C = a->gw, .ldc = a->in, .n0 = n0, .n1 = n1};
    if (a->bf16) {
        g.work = dm_tr_bwork_gemm(a->t, tid);
        K->gemm_tn_bf16(&g);
    } else {
        K->gemm_tn(&g);
    }
    /* bias: the same columns [n0, n1) of d, summed over rows in order */
    K->colsum(a->d + n0, a->out, NULL, NULL, a->t->n, n1 - n0, a->gb + n0);
}

static void weight_grads(dm_trainer *t, const float *d, int out, const float *x, int in, float *gw, float *gb, int bf16)
{
    /* bf16 packs the rows of x once per task: one task per thread, 16 outputs a multiple */
    int block = bf16 ? ((out + t->n_threads - 1) / t->n_threads + 15) / 16 * 16 : OUT_BLOCK;
    wgrad_arg a = {t, d, out, x, in, gw, gb, bf16, block};
    dm_pool_run(t->pool, (out + block - 1) / block, wgrad_task, &a);
}

void dm_tr_embed_backward(dm_trainer *t, const float *d)
{
    const dm_config *c = &t->m->cfg;
    weight_grads(t, d, c->dim, t->x, c->in_dim, t->g_embed_w, t->g_embed_b, t->bf16);
}

/* ---------------------------------------------------------------- head */

static void norm_rows(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    dm_trainer *t = arg;
    const dm_config *c = &t->m->cfg;
    int64_t r0 = ti * ROW_BLOCK, rn = DM_MIN(t->n - r0, ROW_BLOCK), D = c->dim;
    const float *h = t->act + (int64_t)c->n_layers * t->n * D;
    t->m->kern->layernorm_fwd(h + r0 * D, rn, (int)D, D, t->m->norm_w, t->m->norm_b, c->ln_eps, t->xn + r0 * D, D,
                              t->hmean + r0, t->hrstd + r0);
}

void dm_tr_head_forward(dm_trainer *t)
{
    const dm_config *c = &t->m->cfg;
    dm_pool_run(t->pool, row_tasks(t), norm_rows, t);
    lin_arg a = {t, &t->m->head, &t->m->head.p, t->xn, c->dim, t->out, c->n_classes};
    dm_pool_run(t->pool, row_tasks(t), fwd_rows, &a);
}

typedef struct head_arg { dm_trainer *t; float *dx; int phase; } head_arg;

/* phase 0: dxn = dlogits Wh; phase 1: LayerNorm backward in place (row blocks). */
static void head_dx_task(void *arg, int64_t ti, int tid)
{
    DM_UNUSED(tid);
    head_arg *a = arg;
    dm_trainer *t = a->t;
    const dm_config *c = &t->m->cfg;
    int64_t r0 = ti * ROW_BLOCK, rn = DM_MIN(t->n - r0, ROW_BLOCK), D = c->dim;
    if (a->phase == 0) {
        dm_gemm g = {.M = rn, .N = (int)D, .K = c->n_classes, .A = t->dout + r0 * c->n_classes,
                     .lda = c->n_classes, .B = &t->head_pt, .C = a->dx + r0 * D, .ldc = D};
        dm_wmat_gemm(&g);
        return;
    }
    const float *h = t->act + (int64_t)c->n_layers * t->n * D;
    t->m->kern->layernorm_bwd(h + r0 * D, t->hmean + r0, t->hrstd + r0, a->dx + r0 * D, rn, (int)D, D,
                              t->m->norm_w, a->dx + r0 * D, NULL, NULL);
}

void dm_tr_head_backward(dm_trainer *t, float *dx)
{
    const dm_config *c = &t->m->cfg;
    int D = c->dim;
    weight_grads(t, t->dout, c->n_classes, t->xn, D, t->g_head_w, t->g_head_b, 0);
    head_arg a = {t, dx, 0};
    dm_pool_run(t->pool, row_tasks(t), head_dx_task, &a);
    /* norm gamma/beta: dgamma += sum_r dxn * xhat, dbeta += sum_r dxn, rows in order */
    const float *h = t->act + (int64_t)c->n_layers * t->n * D;
    for (int64_t r = 0; r < t->n; r++) {
        const float *hr = h + r * D, *dr = dx + r * D;
        for (int j = 0; j < D; j++) {
            float xhat = (hr[j] - t->hmean[r]) * t->hrstd[r];
            t->g_norm_w[j] += dr[j] * xhat;
            t->g_norm_b[j] += dr[j];
        }
    }
    a.phase = 1;
    dm_pool_run(t->pool, row_tasks(t), head_dx_task, &a);
}
