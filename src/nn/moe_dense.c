/* moe_dense.c - the reference twin of dm_forward: the seed's dense formula.
 * Every expert runs on every row (plain loops, no kernels, no threads) and the
 * outputs are summed with the full routing matrix, zero for experts not chosen.
 * Tests hold the sparse path to it. */
#include "base/base.h"
#include "nn/model.h"
#include "nn/router.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[D] = expert(x[D]); h [2H] scratch. */
static void expert_row(const dm_model *m, const dm_expert_w *w, const float *x, float *h, float *y)
{
    int D = m->cfg.dim, H = w->hidden;
    if (m->cfg.expert == DM_EXPERT_SEED) {
        double mean = 0, var = 0;
        for (int i = 0; i < H; i++) {
            double s = w->b1[i];
            for (int d = 0; d < D; d++) s += (double)x[d] * w->w1[(int64_t)i * D + d];
            h[i] = s > 0 ? (float)s : 0.0f;
            mean += h[i];
        }
        mean /= H;
        for (int i = 0; i < H; i++) var += (h[i] - mean) * (h[i] - mean);
        var /= H;
        double inv = 1.0 / sqrt(var + m->cfg.ln_eps);
        for (int i = 0; i < H; i++) h[i] = (float)((h[i] - mean) * inv * w->gamma[i] + w->beta[i]);
        for (int d = 0; d < D; d++) {
            double s = w->b2[d] + x[d];
            for (int i = 0; i < H; i++) s += (double)h[i] * w->w2[(int64_t)d * H + i];
            y[d] = (float)s;
        }
    } else {
        for (int i = 0; i < H; i++) {
            double g = 0, u = 0;
            for (int d = 0; d < D; d++) {
                g += (double)x[d] * w->w1[(int64_t)i * D + d];
                u += (double)x[d] * w->w3[(int64_t)i * D + d];
            }
            h[i] = (float)(g / (1.0 + exp(-g)) * u);
        }
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int i = 0; i < H; i++) s += (double)h[i] * w->w2[(int64_t)d * H + i];
            y[d] = (float)s;
        }
    }
}

/* y[out] = W x + b, plain loops in double. */
static void linear_row(const dm_linear *l, const float *x, float *y)
{
    for (int o = 0; o < l->out; o++) {
        double s = l->b[o];
        for (int i = 0; i < l->in; i++) s += (double)x[i] * l->w[(int64_t)o * l->in + i];
        y[o] = (float)s;
    }
}

/* One MoE layer on one row, the seed's dense formula. */
static void layer_row(const dm_model *m, const dm_layer *ly, const float *xr, float *out, float *logits,
                      float *tmp, float *full, float *h, float *ye, double *acc, int32_t *ex, float *wt)
{
    const dm_config *c = &m->cfg;
    int D = c->dim, E = c->n_experts, k = c->top_k;
    for (int e = 0; e < E; e++) {
        double s = ly->gate_b[e];
        for (int d = 0; d < D; d++) s += (double)xr[d] * ly->gate_w[(int64_t)e * D + d];
        logits[e] = (float)s;
    }
    dm_route_row(c, ly->sel_bias, logits, tmp, ex, wt);
    memset(full, 0, (size_t)E * sizeof *full);
    for (int j = 0; j < k; j++) full[ex[j]] = wt[j];
    memset(acc, 0, (size_t)D * sizeof *acc);
    for (int e = 0; e < E; e++) {
        expert_row(m, &ly->experts[e], xr, h, ye);
        for (int d = 0; d < D; d++) acc[d] += (double)full[e] * ye[d];
    }
    for (int s = 0; s < c->n_shared; s++) {
        expert_row(m, &ly->experts[E + s], xr, h, ye);
        for (int d = 0; d < D; d++) acc[d] += ye[d];
    }
    for (int d = 0; d < D; d++) out[d] = (float)acc[d];
}

dm_status dm_forward_dense(const dm_model *m, const float *x, int64_t n, float *y,
                           const dm_routing *route, dm_error *err)
{
    const dm_config *c = &m->cfg;
    if (n < 0 || (n > 0 && (!x || !y)))
        return dm_fail(err, DM_ERR_ARG, "forward: bad arguments (n_rows %lld)", (long long)n);
    if (m->packed_only)
        return dm_fail(err, DM_ERR_ARG, "forward_dense: the reference twin reads the fp32 weights, which a "
                                        "packed-only model does not keep");
    int in = dm_model_in_width(c), outw = dm_model_out_width(c);
    dm_status st = dm_check_input(NULL, x, n, in, err);
    if (st) return st;
    float *xs = NULL;   /* the rows after the model's preprocessing */
    if (m->pre.scale) {
        if (!(xs = dm_alloc_array2((size_t)n ? (size_t)n : 1, (size_t)in, sizeof *xs)))
            return dm_fail(err, DM_ERR_NOMEM, "dense forward: out of memory");
        if ((st = dm_preprocess_rows(m, x, n, xs, err))) {
            dm_free(xs);
            return st;
        }
        x = xs;
    }
    int D = c->dim, E = c->n_experts, k = c->top_k;
    int hmax = DM_MAX(c->hidden, c->shared_hidden);
    float *logits = malloc((size_t)E * sizeof *logits);
    float *tmp = malloc((size_t)dm_route_scratch(c) * sizeof *tmp);
    float *full = malloc((size_t)E * sizeof *full);     /* the dense routing row */
    float *h = malloc((size_t)2 * hmax * sizeof *h);
    float *ye = malloc((size_t)D * sizeof *ye);
    float *a = malloc((size_t)D * sizeof *a), *b = malloc((size_t)D * sizeof *b);
    double *acc = malloc((size_t)D * sizeof *acc);
    int32_t *ex = malloc((size_t)k * sizeof *ex);
    float *wt = malloc((size_t)k * sizeof *wt);
    if (!logits || !tmp || !full || !h || !ye || !a || !b || !acc || !ex || !wt) {
        st = dm_fail(err, DM_ERR_NOMEM, "dense forward: out of memory");
        goto done;
    }
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * in;
        if (c->in_dim) linear_row(&m->embed, xr, a);
        else memcpy(a, xr, (size_t)D * sizeof *a);
        for (int l = 0; l < c->n_layers; l++) {
            layer_row(m, &m->layers[l], a, b, logits, tmp, full, h, ye, acc, ex, wt);
            memcpy(a, b, (size_t)D * sizeof *a);
            size_t off = ((size_t)l * n + r) * k;
            if (route && route->experts) memcpy(route->experts + off, ex, (size_t)k * sizeof *ex);
            if (route && route->weights) memcpy(route->weights + off, wt, (size_t)k * sizeof *wt);
        }
        if (c->n_classes) {
            double mean = 0, var = 0;
            for (int d = 0; d < D; d++) mean += a[d];
            mean /= D;
            for (int d = 0; d < D; d++) var += (a[d] - mean) * (a[d] - mean);
            var /= D;
            double inv = 1.0 / sqrt(var + c->ln_eps);
            for (int d = 0; d < D; d++) b[d] = (float)((a[d] - mean) * inv * m->norm_w[d] + m->norm_b[d]);
            linear_row(&m->head, b, y + r * outw);
        } else {
            memcpy(y + r * outw, a, (size_t)D * sizeof *a);
        }
    }
done:
    free(logits); free(tmp); free(full); free(h); free(ye); free(a); free(b); free(acc); free(ex); free(wt);
    dm_free(xs);
    return st;
}
