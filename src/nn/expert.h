/* expert.h - expert kinds as one trait table: everything that differs between
 * the seed's expert (Linear -> ReLU -> LayerNorm -> Linear, + x) and DeepSeek's
 * SwiGLU expert (W2 (silu(W1 x) * W3 x)) is an entry here; the tensor layout,
 * the loader, packing, FLOP counts, the layer pipeline and the backward read
 * it instead of testing the kind. Shared experts are not a kind: they are
 * experts of the model's kind on every row with weight 1 (the span in
 * moe_layer.c). */
#ifndef DM_EXPERT_H
#define DM_EXPERT_H

#include "kernels/kernels.h"

typedef struct dm_expert_w dm_expert_w;

/* What a tensor of an expert is to the computation. */
typedef enum { DM_XT_W1, DM_XT_B1, DM_XT_GAMMA, DM_XT_BETA, DM_XT_W2, DM_XT_B2, DM_XT_W3 } dm_xt_role;

typedef struct dm_expert_tensor {
    const char *suffix;  /* state-dict name after "experts.{e}." */
    dm_xt_role role;
    char rows, cols;     /* 'H' (hidden) or 'D' (model width); cols 0 for 1-D */
} dm_expert_tensor;

#define DM_EXPERT_MAX_TENSORS 6

typedef struct dm_expert_ops {
    const char *name;
    int n_tensors;
    dm_expert_tensor tensors[DM_EXPERT_MAX_TENSORS];  /* in layout (file) order; [0] is the up weight W1 */
    int up_mult;          /* rows of the packed up weight per hidden unit: 1 (W1) or 2 ([W1; W3]) */
    dm_act up_act;        /* epilogue of the up GEMM */
    int residual;         /* the expert adds its input to its output */
    /* h1 [rows, ldh] (up GEMM output) -> hn [rows, ldn] (down GEMM input).
     * hn == h1 with mean == NULL: in place, nothing kept (inference). */
    void (*mid)(const dm_kernels *K, const dm_expert_w *x, float eps, int64_t rows, int H,
                float *h1, int64_t ldh, float *hn, int64_t ldn, float *mean, float *rstd);
    /* dhn [rows, ldh] -> the gradient of the up GEMM output, returned (dhn's
     * buffer or scratch [rows, ldh]); dgamma/dbeta accumulated (seed). */
    float *(*mid_bwd)(const dm_kernels *K, const dm_expert_w *x, int64_t rows, int H, const float *h1,
                      int64_t ldh, const float *mean, const float *rstd, float *dhn, float *scratch,
                      float *dgamma, float *dbeta);
} dm_expert_ops;

extern const dm_expert_ops dm_expert_kinds[];   /* by dm_expert_kind */
#define DM_N_EXPERT_KINDS 2

static inline const dm_expert_ops *dm_expert_ops_of(const dm_config *c) { return &dm_expert_kinds[c->expert]; }
/* Elements of tensor spec x for hidden width h and model width D. */
static inline int64_t dm_expert_tensor_numel(const dm_expert_tensor *x, int64_t h, int64_t D)
{
    int64_t r = x->rows == 'H' ? h : D, c = x->cols == 'H' ? h : x->cols == 'D' ? D : 1;
    return r * c;
}

#endif
