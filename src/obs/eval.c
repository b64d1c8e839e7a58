/* eval.c - held-out evaluation: loss, accuracy or MSE, expert load,
 * utilization, MaxVio, routing accuracy against a loss oracle, regime purity. */
#include "base/base.h"
#include "nn/moe_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 1024

/* Per-row loss of outputs y [n, out]: CE with labels, else MSE with targets. */
static void row_losses(const float *y, int64_t n, int out, const float *target, const int32_t *labels, double *loss,
                       int64_t *correct)
{
    for (int64_t r = 0; r < n; r++) {
        const float *z = y + r * out;
        if (labels) {
            int best = 0;
            double mx = z[0], sum = 0;
            for (int j = 1; j < out; j++) {
                if (z[j] > z[best]) best = j;
                mx = fmax(mx, z[j]);
            }
            for (int j = 0; j < out; j++) sum += exp(z[j] - mx);
            loss[r] = mx + log(sum) - z[labels[r]];
            if (correct) *correct += best == labels[r];
        } else {
            double s = 0;
            for (int j = 0; j < out; j++) {
                double d = (double)z[j] - target[r * out + j];
                s += d * d;
            }
            loss[r] = s / out;
        }
    }
}

static int cmp_rank(const void *a, const void *b)
{
    const double *x = a, *y = b;  /* (loss, expert) pairs: lower loss first, then lower index */
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

dm_status dm_evaluate(dm_ctx *ctx, const float *x, const float *target, const int32_t *labels,
                      const int32_t *regime, int64_t n, int64_t oracle_rows, dm_eval *out, dm_error *err)
{
    const dm_model *m = dm_ctx_model(ctx);
    const dm_config *c = &m->cfg;
    int in = dm_model_in_width(c), ow = dm_model_out_width(c), E = c->n_experts, k = c->top_k, L = c->n_layers;
    if (!labels && !target) return dm_fail(err, DM_ERR_ARG, "evaluate: needs labels or targets");
    if (n <= 0) return dm_fail(err, DM_ERR_ARG, "evaluate: the split is empty (no rows to score)");
    if (labels)
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= ow)
                return dm_fail(err, DM_ERR_ARG, "label %d of row %lld is outside [0, %d)", labels[i], (long long)i, ow);
    int64_t ch = DM_MIN(n, CHUNK) > 0 ? DM_MIN(n, CHUNK) : 1;
    float *y = malloc((size_t)ch * ow * sizeof *y);
    int32_t *e = malloc((size_t)L * ch * k * sizeof *e);
    double *loss = malloc((size_t)ch * sizeof *loss);
    int64_t *counts = calloc((size_t)L * E, sizeof *counts);
    int64_t *rc = regime ? calloc((size_t)L * 256 * E, sizeof *rc) : NULL;  /* regime x top-1 expert */
    int nreg = 0;
    dm_status st = DM_OK;
    if (!y || !e || !loss || !counts || (regime && !rc)) {
        st = dm_fail(err, DM_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    double total = 0;
    int64_t correct = 0;
    for (int64_t r0 = 0; r0 < n; r0 += ch) {
        int64_t rn = DM_MIN(ch, n - r0);
        dm_routing route = {e, NULL};
        if ((st = dm_forward(ctx, x + r0 * in, rn, y, &route, err))) goto done;
        row_losses(y, rn, ow, target ? target + r0 * ow : NULL, labels ? labels + r0 : NULL, loss, &correct);
        for (int64_t i = 0; i < rn; i++) total += loss[i];
        for (int l = 0; l < L; l++)
            for (int64_t i = 0; i < rn; i++) {
                for (int j = 0; j < k; j++) counts[(int64_t)l * E + e[((int64_t)l * rn + i) * k + j]]++;
                if (rc && regime[r0 + i] >= 0 && regime[r0 + i] < 256) {
                    int g = regime[r0 + i];
                    nreg = DM_MAX(nreg, g + 1);
                    rc[((int64_t)l * 256 + g) * E + e[((int64_t)l * rn + i) * k]]++;
                }
            }
    }
    out->loss = n ? total / n : 0;
    out->accuracy = labels ? (n ? (double)correct / n : 0) : -1;
    out->mse = labels ? -1 : out->loss;
    out->expert_utilization = out->max_vio = 0;
    double load[4096];
    for (int l = 0; l < L; l++) {
        int64_t sum = 0;
        for (int j = 0; j < E; j++) sum += counts[(int64_t)l * E + j];
        for (int j = 0; j < E; j++) load[j] = sum ? (double)counts[(int64_t)l * E + j] / sum : 0;
        if (out->expert_load) memcpy(out->expert_load + (int64_t)l * E, load, (size_t)E * sizeof *load);
        out->expert_utilization += dm_expert_utilization(load, E) / L;
        out->max_vio += dm_max_vio(load, E) / L;
    }
    out->purity = -1;
    if (rc && n) {
        double p = 0;
        for (int l = 0; l < L; l++) {
            int64_t hit = 0;
            for (int g = 0; g < nreg; g++) {
                int64_t best = 0;
                for (int j = 0; j < E; j++) best = DM_MAX(best, rc[((int64_t)l * 256 + g) * E + j]);
                hit += best;
            }
            p += (double)hit / n / L;
        }
        out->purity = p;
    }

    /* the oracle: per layer, per expert alone, each row's loss */
    int64_t on = DM_MIN(oracle_rows, DM_MIN(n, ch));
    out->oracle_rows = on;
    out->routing_accuracy = -1;
    if (on > 0) {
        double *pl = malloc((size_t)E * on * sizeof *pl), *rank = malloc((size_t)E * 2 * sizeof *rank);
        int32_t *chosen = malloc((size_t)L * on * k * sizeof *chosen);
        if (!pl || !rank || !chosen) {
            free(pl); free(rank); free(chosen);
            st = dm_fail(err, DM_ERR_NOMEM, "evaluate: out of memory");
            goto done;
        }
        dm_routing route = {chosen, NULL};
        st = dm_forward(ctx, x, on, y, &route, err);
        int64_t agree = 0;
        for (int l = 0; l < L && !st; l++) {
            for (int ex = 0; ex < E && !st; ex++) {
                dm_ctx_force(ctx, l, ex);
                st = dm_forward(ctx, x, on, y, NULL, err);
                row_losses(y, on, ow, target, labels, pl + (int64_t)ex * on, NULL);
            }
            dm_ctx_force(ctx, -1, 0);
            for (int64_t r = 0; r < on && !st; r++) {
                for (int ex = 0; ex < E; ex++) { rank[2 * ex] = pl[(int64_t)ex * on + r]; rank[2 * ex + 1] = ex; }
                qsort(rank, (size_t)E, 2 * sizeof *rank, cmp_rank);
                int same = 1;
                for (int j = 0; j < k && same; j++) {
                    int found = 0;
                    for (int i = 0; i < k; i++) found |= (int)rank[2 * i + 1] == chosen[((int64_t)l * on + r) * k + j];
                    same = found;
                }
                agree += same;
            }
        }
        out->routing_accuracy = (double)agree / ((double)on * L);
        free(pl); free(rank); free(chosen);
    }
done:
    dm_ctx_force(ctx, -1, 0);
    free(y); free(e); free(loss); free(counts); free(rc);
    return st;
}
