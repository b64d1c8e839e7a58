/* metrics.c - expert load, utilization and MaxVio from a routing decision
 * (definitions in docs/architecture.md; MaxVio as in Loss-Free Balancing). */
#include "base/base.h"

void dm_expert_load(const int32_t *experts, int64_t n, int k, int E, double *load)
{
    for (int e = 0; e < E; e++) load[e] = 0;
    int64_t total = n * k, counted = 0;
    for (int64_t i = 0; i < total; i++)
        if (experts[i] >= 0 && experts[i] < E) { load[experts[i]] += 1; counted++; }
    for (int e = 0; e < E && counted; e++) load[e] /= (double)counted;
}

static void mean_max(const double *load, int E, double *mean, double *max)
{
    double s = 0, m = 0;
    for (int e = 0; e < E; e++) {
        s += load[e];
        if (load[e] > m) m = load[e];
    }
    *mean = E ? s / E : 0;
    *max = m;
}

double dm_expert_utilization(const double *load, int E)
{
    double mean, max;
    mean_max(load, E, &mean, &max);
    return max > 0 ? mean / max : 0;
}

double dm_max_vio(const double *load, int E)
{
    double mean, max;
    mean_max(load, E, &mean, &max);
    return mean > 0 ? (max - mean) / mean : 0;
}
