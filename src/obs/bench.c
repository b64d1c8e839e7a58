/* bench.c - the machine's fp32 FMA peak, measured on the pool's threads, and
 * the useful FLOPs of a model (the denominators of `deepmoe bench`). */
#include "base/base.h"
#include "base/pool.h"
#include "nn/model.h"

#include <stdlib.h>
#include <time.h>

float dm_peak_probe_avx512(int64_t iters);
float dm_peak_probe_avx2(int64_t iters);

typedef struct probe_arg {
    dm_isa isa;
    int64_t iters;
    double start[1024], end[1024];
    volatile float sink[1024];
} probe_arg;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void probe_task(void *arg, int64_t i, int tid)
{
    DM_UNUSED(tid);
    probe_arg *a = arg;
    a->start[i] = now_s();
#if DM_HAVE_X86 /* without the AVX files (X86=0) the ISA resolves to ref: never reached */
    a->sink[i] = a->isa == DM_ISA_AVX512 ? dm_peak_probe_avx512(a->iters) : dm_peak_probe_avx2(a->iters);
#else
    a->sink[i] = 0;
#endif
    a->end[i] = now_s();
}

double dm_peak_gflops(dm_pool *pool, dm_isa isa, double seconds)
{
    isa = dm_isa_resolve(isa);
    if (isa == DM_ISA_REF) return 0;
    int n = dm_pool_size(pool);
    probe_arg *ap = calloc(1, sizeof *ap);
    if (!ap) return 0;
#define a (*ap)
    a.isa = isa;
    double lanes = isa == DM_ISA_AVX512 ? 16 : 8;
    /* calibrate on one thread, then all threads at once */
    a.iters = 1 << 20;
    probe_task(&a, 0, 0);
    double t1 = a.end[0] - a.start[0];
    a.iters = (int64_t)((double)a.iters * seconds / (t1 > 1e-6 ? t1 : 1e-6));
    if (a.iters < 1000) a.iters = 1000;
    dm_pool_run(pool, n, probe_task, &a);
    double s = a.start[0], e = a.end[0];
    for (int i = 1; i < n; i++) {
        s = a.start[i] < s ? a.start[i] : s;
        e = a.end[i] > e ? a.end[i] : e;
    }
    double g = (double)n * (double)a.iters * 12.0 * lanes * 2.0 / (e - s) * 1e-9;
#undef a
    free(ap);
    return g;
}

double dm_model_flops_per_row(const dm_model *m)
{
    const dm_config *c = &m->cfg;
    /* 2 FLOPs per multiply-add: the up weight (H or 2H rows) and W2 */
    double D = c->dim, per = 2.0 * (dm_expert_ops_of(c)->up_mult + 1);
    double layer = 2.0 * D * c->n_experts + c->top_k * per * D * c->hidden + c->n_shared * per * D * c->shared_hidden;
    double f = layer * c->n_layers;
    if (c->in_dim) f += 2.0 * c->in_dim * D;
    if (c->n_classes) f += 2.0 * D * c->n_classes;
    return f;
}
