/* expert.c - the expert kinds (expert.h). */
#include "base/base.h"
#include "nn/model.h"

#include <string.h>

/* ---------------------------------------------------------------- expert kinds */

static void seed_mid(const dm_kernels *K, const dm_expert_w *x, float eps, int64_t rows, int H, float *h1,
                     int64_t ldh, float *hn, int64_t ldn, float *mean, float *rstd)
{
    if (!mean) K->layernorm(h1, rows, H, ldh, x->gamma, x->beta, eps);
    else K->layernorm_fwd(h1, rows, H, ldh, x->gamma, x->beta, eps, hn, ldn, mean, rstd);
}

static float *seed_mid_bwd(const dm_kernels *K, const dm_expert_w *x, int64_t rows, int H, const float *h1,
                           int64_t ldh, const float *mean, const float *rstd, float *dh, float *scratch,
                           float *dgamma, float *dbeta)
{
    DM_UNUSED(scratch);
    K->layernorm_bwd(h1, mean, rstd, dh, rows, H, ldh, x->gamma, dh, dgamma, dbeta);
    for (int64_t i = 0; i < rows; i++) {  /* ReLU: h1 holds the post-ReLU values */
        const float *hr = h1 + i * ldh;
        float *dr = dh + i * ldh;
        /* dr = hr > 0 ? dr : +0, as a bit mask: a branch on the sign of
         * each activation mispredicts half the time (it was 6% of a step) */
        for (int j = 0; j < H; j++) {
            uint32_t b;
            memcpy(&b, &dr[j], sizeof b);
            b &= 0u - (uint32_t)(hr[j] > 0);
            memcpy(&dr[j], &b, sizeof b);
        }
    }
    return dh;
}

static void swiglu_mid(const dm_kernels *K, const dm_expert_w *x, float eps, int64_t rows, int H, float *h1,
                       int64_t ldh, float *hn, int64_t ldn, float *mean, float *rstd)
{
    DM_UNUSED(x); DM_UNUSED(eps); DM_UNUSED(mean); DM_UNUSED(rstd);
    K->silu_mul(h1, rows, H, ldh, hn, ldn);
}

static float *swiglu_mid_bwd(const dm_kernels *K, const dm_expert_w *x, int64_t rows, int H, const float *h1,
                             int64_t ldh, const float *mean, const float *rstd, float *dh, float *scratch,
                             float *dgamma, float *dbeta)
{
    DM_UNUSED(x); DM_UNUSED(mean); DM_UNUSED(rstd); DM_UNUSED(dgamma); DM_UNUSED(dbeta);
    K->silu_mul_bwd(h1, dh, rows, H, ldh, ldh, scratch);  /* [dg | du], kept apart from dhn */
    return scratch;
}

const dm_expert_ops dm_expert_kinds[DM_N_EXPERT_KINDS] = {
    [DM_EXPERT_SEED] = {
        .name = "seed", .n_tensors = 6,
        .tensors = {{"net.0.weight", DM_XT_W1, 'H', 'D'}, {"net.0.bias", DM_XT_B1, 'H', 0},
                    {"net.2.weight", DM_XT_GAMMA, 'H', 0}, {"net.2.bias", DM_XT_BETA, 'H', 0},
                    {"net.3.weight", DM_XT_W2, 'D', 'H'}, {"net.3.bias", DM_XT_B2, 'D', 0}},
        .up_mult = 1, .up_act = DM_ACT_RELU, .residual = 1, .mid = seed_mid, .mid_bwd = seed_mid_bwd,
    },
    [DM_EXPERT_SWIGLU] = {
        .name = "swiglu", .n_tensors = 3,
        .tensors = {{"w1.weight", DM_XT_W1, 'H', 'D'}, {"w2.weight", DM_XT_W2, 'D', 'H'},
                    {"w3.weight", DM_XT_W3, 'H', 'D'}},
        .up_mult = 2, .up_act = DM_ACT_NONE, .residual = 0, .mid = swiglu_mid, .mid_bwd = swiglu_mid_bwd,
    },
};

