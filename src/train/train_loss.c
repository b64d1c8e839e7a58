/* train_loss.c - the task losses (MSE, softmax cross-entropy) and the balance
 * terms (seed, switch, z; aux-free is an update, not a loss), each with its
 * gradient. Values are returned unscaled; gradients are multiplied by `scale`
 * (1 / grad_accum). Definitions: include/deepmoe.h above DM_BAL_SEED. */
#include "train/trainer.h"

#include <math.h>
#include <string.h>

/* MSE over row blocks on the pool: each block's sum of squares into
 * loss_part[block], summed in block order (the same for any thread count). */
typedef struct mse_arg { dm_trainer *t; const float *out, *target; int outw; float scale; } mse_arg;

static void mse_task(void *arg, int64_t b, int tid)
{
    DM_UNUSED(tid);
    mse_arg *a = arg;
    dm_trainer *t = a->t;
    int64_t n = t->n, i0 = b * DM_TR_LOSS_BLOCK * a->outw, i1 = DM_MIN(n, (b + 1) * DM_TR_LOSS_BLOCK) * a->outw;
    double inv = 1.0 / ((double)n * a->outw);
    /* grad = scale 2 d / (n outw), as ((scale 2) d) inv in double */
    t->loss_part[b] = t->m->kern->mse_grad(a->out + i0, a->target + i0, i1 - i0, a->scale * 2.0, inv, t->dout + i0);
}

double dm_tr_task_loss(dm_trainer *t, const float *target, const int32_t *labels, float scale, int64_t *correct)
{
    const dm_config *c = &t->m->cfg;
    int64_t n = t->n;
    int outw = dm_model_out_width(c);
    const float *out = c->n_classes ? t->out : t->act + (int64_t)c->n_layers * n * c->dim;
    double loss = 0;
    if (t->tc.loss == DM_LOSS_MSE) {
        mse_arg a = {t, out, target, outw, scale};
        int64_t nb = (n + DM_TR_LOSS_BLOCK - 1) / DM_TR_LOSS_BLOCK;
        dm_pool_run(t->pool, nb, mse_task, &a);
        for (int64_t b = 0; b < nb; b++) loss += t->loss_part[b];
        return loss / ((double)n * outw);
    }
    for (int64_t r = 0; r < n; r++) {
        const float *z = out + r * outw;
        float *g = t->dout + r * outw;
        int best = 0;
        double mx = z[0], sum = 0;
        for (int j = 1; j < outw; j++) {
            if (z[j] > z[best]) best = j;
            mx = fmax(mx, z[j]);
        }
        for (int j = 0; j < outw; j++) sum += exp(z[j] - mx);
        double lse = mx + log(sum), ls = t->tc.label_smoothing, zbar = 0;
        for (int j = 0; j < outw; j++) zbar += z[j];
        /* target q = (1 - ls) onehot + ls / C: loss = lse - sum_j q_j z_j, gradient p - q */
        loss += lse - (1 - ls) * z[labels[r]] - ls * zbar / outw;
        for (int j = 0; j < outw; j++)
            g[j] = (float)(scale * (exp(z[j] - lse) - (1 - ls) * (j == labels[r]) - ls / outw) / (double)n);
        *correct += best == labels[r];
    }
    return loss / (double)n;
}

/* Router probabilities of row r over all E, for the switch loss: softmax of
 * the logits (seed, softmax routers) or sigmoid scores normalised to sum 1. */
static double row_probs(const dm_config *c, const float *logits, double *p)
{
    int E = c->n_experts;
    double sum = 0;
    if (c->router == DM_ROUTER_SIGMOID) {
        for (int e = 0; e < E; e++) sum += p[e] = 1.0 / (1.0 + exp(-(double)logits[e]));
    } else {
        double mx = logits[0];
        for (int e = 1; e < E; e++) mx = fmax(mx, logits[e]);
        for (int e = 0; e < E; e++) sum += p[e] = exp(logits[e] - mx);
    }
    for (int e = 0; e < E; e++) p[e] /= sum;
    return sum;
}

double dm_tr_balance(dm_trainer *t, int l, float scale)
{
    const dm_config *c = &t->m->cfg;
    const dm_train_config *tc = &t->tc;
    const dm_moe_state *lc = &t->lc[l];
    int64_t n = t->n;
    int E = c->n_experts, k = c->top_k;
    memset(t->dw, 0, (size_t)n * k * sizeof *t->dw);
    memset(t->dlogits, 0, (size_t)n * E * sizeof *t->dlogits);
    double value = 0;
    double *P = t->probsum;

    if (tc->balance & DM_BAL_SEED) {
        for (int e = 0; e < E; e++) P[e] = 0;
        for (int64_t i = 0; i < n * k; i++) P[lc->rb.e[i]] += lc->rb.w[i];
        double v = 0;
        for (int e = 0; e < E; e++) {
            P[e] /= (double)n;
            v += P[e] * (1 - P[e]);  /* mean_e(E P (1 - P)) = sum_e P (1 - P) */
        }
        value += tc->coef_seed * v;
        for (int64_t i = 0; i < n * k; i++)
            t->dw[i] += (float)(scale * tc->coef_seed * (1 - 2 * P[lc->rb.e[i]]) / (double)n);
    }
    if (tc->balance & DM_BAL_SWITCH) {
        double *f = t->bal, p[4096];
        for (int e = 0; e < E; e++) { P[e] = 0; f[e] = (double)(lc->rb.offsets[e + 1] - lc->rb.offsets[e]) / (double)(n * k); }
        for (int64_t r = 0; r < n; r++) {
            row_probs(c, lc->rb.logits + r * E, p);
            for (int e = 0; e < E; e++) P[e] += p[e];
        }
        double v = 0;
        for (int e = 0; e < E; e++) v += f[e] * P[e] / (double)n;
        value += tc->coef_switch * E * v;
        for (int64_t r = 0; r < n; r++) {
            const float *lg = lc->rb.logits + r * E;
            double qsum = row_probs(c, lg, p), pg = 0;
            for (int e = 0; e < E; e++) pg += p[e] * f[e];
            double g0 = scale * tc->coef_switch * E / (double)n;  /* dL/dp_e = g0 * f_e */
            for (int e = 0; e < E; e++) {
                double dl;
                if (c->router == DM_ROUTER_SIGMOID) {
                    double q = p[e] * qsum;  /* the sigmoid itself */
                    dl = g0 * (f[e] - pg) / qsum * q * (1 - q);
                } else {
                    dl = g0 * p[e] * (f[e] - pg);
                }
                t->dlogits[r * E + e] += (float)dl;
            }
        }
    }
    if (tc->balance & DM_BAL_Z) {
        double v = 0;
        for (int64_t r = 0; r < n; r++) {
            const float *lg = lc->rb.logits + r * E;
            double mx = lg[0], sum = 0;
            for (int e = 1; e < E; e++) mx = fmax(mx, lg[e]);
            for (int e = 0; e < E; e++) sum += exp(lg[e] - mx);
            double lse = mx + log(sum);
            v += lse * lse;
            for (int e = 0; e < E; e++)
                t->dlogits[r * E + e] += (float)(scale * tc->coef_z * 2 * lse * exp(lg[e] - lse) / (double)n);
        }
        value += tc->coef_z * v / (double)n;
    }
    return value;
}
