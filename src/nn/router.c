/* router.c - scores, selection bias, group limits, top-k and weights.
 *
 *   scores  seed: logits | softmax: softmax(logits) | sigmoid: sigmoid(logits)
 *   sel     scores + selection bias (the bias moves choices, never weights)
 *   groups  keep the topk_groups groups with the largest sum of their top-2 sel
 *   top-k   the k largest sel, ties to the lower expert index
 *   weights seed: softmax over the k chosen logits | softmax: scores (renormalised
 *           if norm_topk) | sigmoid: scores / their sum; then * route_scale */
#include "nn/router.h"

#include <math.h>

/* Index of the largest v[i] over i < n with v[i] > -INFINITY and !taken; the
 * strict comparison keeps the lower index on ties. -1 if none. */
static int argmax_free(const float *v, int n, const unsigned char *taken)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!(taken && taken[i]) && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

static void mask_groups(const dm_config *c, float *sel, float *gscore)
{
    int G = c->n_groups, per = c->n_experts / c->n_groups;
    for (int g = 0; g < G; g++) {
        const float *s = sel + g * per;
        int a = argmax_free(s, per, NULL);
        float sum = s[a];
        if (per > 1) {  /* second largest: the largest excluding a */
            int b = -1;
            for (int i = 0; i < per; i++)
                if (i != a && (b < 0 || s[i] > s[b])) b = i;
            sum += s[b];
        }
        gscore[g] = sum;
    }
    /* keep the topk_groups best groups: repeatedly take the best, mark it -inf in a copy */
    unsigned char keep[4096];  /* n_groups <= n_experts <= 4096 */
    for (int g = 0; g < G; g++) keep[g] = 0;
    for (int j = 0; j < c->topk_groups; j++) {
        int best = -1;
        for (int g = 0; g < G; g++)
            if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
        keep[best] = 1;
    }
    for (int g = 0; g < G; g++)
        if (!keep[g])
            for (int i = 0; i < per; i++) sel[g * per + i] = -INFINITY;
}

void dm_route_row(const dm_config *c, const float *sel_bias, const float *logits,
                  float *tmp, int32_t *experts, float *weights)
{
    int E = c->n_experts, k = c->top_k;
    float *scores = tmp, *sel = tmp + E, *gscore = tmp + 2 * E;
    switch (c->router) {
    case DM_ROUTER_SOFTMAX: {
        float mx = logits[0], sum = 0;
        for (int e = 1; e < E; e++) mx = fmaxf(mx, logits[e]);
        for (int e = 0; e < E; e++) sum += scores[e] = expf(logits[e] - mx);
        for (int e = 0; e < E; e++) scores[e] /= sum;
        break;
    }
    case DM_ROUTER_SIGMOID:
        for (int e = 0; e < E; e++) scores[e] = 1.0f / (1.0f + expf(-logits[e]));
        break;
    default:
        for (int e = 0; e < E; e++) scores[e] = logits[e];
    }
    for (int e = 0; e < E; e++) sel[e] = scores[e] + (sel_bias ? sel_bias[e] : 0.0f);
    if (c->n_groups > 1) mask_groups(c, sel, gscore);

    unsigned char taken[4096];  /* n_experts <= 4096 (dm_config_validate) */
    for (int e = 0; e < E; e++) taken[e] = 0;
    for (int j = 0; j < k; j++) {
        int e = argmax_free(sel, E, taken);
        taken[e] = 1;
        experts[j] = e;
    }

    float sum = 0;
    if (c->router == DM_ROUTER_SEED) {
        float mx = logits[experts[0]];
        for (int j = 1; j < k; j++) mx = fmaxf(mx, logits[experts[j]]);
        for (int j = 0; j < k; j++) sum += weights[j] = expf(logits[experts[j]] - mx);
    } else {
        for (int j = 0; j < k; j++) sum += weights[j] = scores[experts[j]];
    }
    int normalise = c->router != DM_ROUTER_SOFTMAX || c->norm_topk;
    if (!(sum > 0)) sum = 1.0f;  /* every chosen sigmoid underflowed to 0: weights stay 0, not NaN */
    float scale = c->route_scale / (normalise ? sum : 1.0f);
    for (int j = 0; j < k; j++) weights[j] *= scale;
}
