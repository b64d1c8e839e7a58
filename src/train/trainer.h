/* trainer.h - the trainer's internals.
 *
 * Parameters, gradients and AdamW moments are flat buffers in the model's
 * tensor-table layout (grad[i] is the gradient of params[i]), so ZeRO can
 * shard them by offset and checkpoints write them in one piece. Activations
 * are cached per layer for the backward pass in buffers sized for the largest
 * micro-batch seen; a step allocates nothing after that.
 *
 * Each MoE layer's forward leaves a dm_moe_state (moe_layer.h): routing,
 * dispatch lists, slot outputs and the cache rows of its compute list. */
#ifndef DM_TRAINER_H
#define DM_TRAINER_H

#include "base/base.h"
#include "nn/moe_layer.h"

typedef struct dm_tr_dist dm_tr_dist;   /* train_dist.c: a distributed trainer's state */

/* Packed transposed weights for the input-gradient GEMMs (bf16 under
 * --precision bf16). */
typedef struct expert_t {
    dm_wmat p1t;         /* (W1 or [W1; W3])^T: [D, H or 2H] packed */
    dm_wmat p2t;         /* W2^T: [H, D] packed */
} expert_t;

struct dm_trainer {
    dm_model *m;
    dm_train_config tc;
    dm_pool *pool;
    int n_threads;
    int64_t step;
    uint64_t drop_base;  /* dropout hash base of the running step */
    int64_t drop_row0;   /* global index (over every rank's micro-batches) of the running micro-batch's row 0 */
    int micro;           /* index of the running micro-batch in its step (over every data-parallel rank) */
    dm_tr_dist *dist;    /* distributed training (NULL: one process) */
    unsigned char *skip_group; /* [groups] or NULL: 1 = another rank owns it (expert parallel): no update */
    unsigned char *skip_tensor;/* [tensors] or NULL: 1 = another rank updates this tensor of a fused group (the
                                * host's replica splits experts' groups by tensor) */
    float *grad;         /* [n_params] */
    float *adam_m;       /* [n_params] */
    float *adam_v;       /* [n_params] */
    unsigned char *frozen;  /* [n_tensors] 1: no gradient, no AdamW (selection biases) */
    unsigned char *mask;    /* [n_params] or NULL: 0 keeps that weight at zero (2:4 fine-tuning) */
    unsigned char *masked;  /* [n_tensors] 1: the tensor has mask entries */
    double *tensor_sq;   /* [n_tensors] squared gradient norms */
    int *grp_t0, *grp_t1;/* [groups] tensor range each update task owns */

    /* transposed packs */
    unsigned char *tpacked; /* one allocation */
    size_t packed_bytes; /* the model's packed operands and tpacked */
    dm_wmat *gate_pt;    /* [L] Wg^T [D, E] */
    expert_t *ext;       /* [L * (E + S)] */
    dm_wmat head_pt;     /* Wh^T [D, C] */
    dm_wmat embed_fw;    /* bf16 only: the embedding's forward weight [D, in] (the model keeps its f32 pack) */
    float *ttmp;         /* [n_threads, ttmp_floats] transpose scratch */
    size_t ttmp_floats;
    size_t cat_off;      /* swiglu's [W1; W3] at ttmp + cat_off (after the pack's scratch) */
    int bf16;            /* tc.precision == DM_PREC_BF16 */
    dm_wmat *fw;         /* bf16: [L, S, 2] each expert's W1 (or [W1; W3]) and W2 in bf16 for the forward
                          * (dm_moe_pass.fw; the model keeps its f32 packs) */

    /* gradient views (same offsets as the model's weights) */
    struct layer_grad {
        float *gate_w, *gate_b;
        struct expert_grad { float *w1, *b1, *gamma, *beta, *w2, *b2, *w3; } *ex;  /* [E + S] */
    } *lg;               /* [L] */
    float *g_embed_w, *g_embed_b, *g_norm_w, *g_norm_b, *g_head_w, *g_head_b;

    /* activations for the current micro-batch (capacity cap rows) */
    int64_t cap;
    int64_t n;           /* rows of the running micro-batch */
    const float *x;      /* the micro-batch input [n, in] */
    float *act;          /* [(L + 1), cap, D]: act_0 = embed(x) or x, act_{l+1} = layer l's output */
    dm_moe_state *lc;    /* [L] */
    const dm_moe_exchange *xchg;  /* expert parallel (NULL: every expert here) */
    dm_moe_xbuf *xb;     /* [L] exchange buffers */
    float *xn, *hmean, *hrstd;  /* head: LayerNorm output [cap, D] and statistics [cap] */
    float *out;          /* [cap, out] model output */
    float *dout;         /* [cap, out] loss gradient */
    float *dact[2];      /* [cap, D] gradient w.r.t. a layer's output / input */
    float *dxslot;       /* [cap, J, D] input gradients per (row, slot) */
    float *dw;           /* [cap, k] gradient w.r.t. routing weights */
    float *dlogits;      /* [cap, E] */
    float *resid;        /* [cap] sum of residual weights per row (seed experts) */
    float *dscratch;     /* [n_threads, ecap, 2 * ldh] per-task expert gradient scratch */
    int64_t ecap;        /* rows of one expert dscratch holds: cap, or more when experts are exchanged */
    unsigned char *bwork;/* bf16: [n_threads, bwork_stride] the bf16 GEMMs' scratch (dm_tr_bwork_gemm) */
    size_t bwork_stride; /* dm_tr_bwork_stride(t, ecap) */
    float *route_tmp;    /* [n_threads, dm_route_scratch] */
    double *bal;         /* [E] per-layer balance statistics scratch */
    double *loss_part;   /* [cap / DM_TR_LOSS_BLOCK + 1] the MSE's per-block sums */
    double *probsum;     /* [E] */
    int64_t *counts;     /* [L, E] assignments of the running optimizer step (aux-free) */
    double *last_load;   /* [L, E] load of the last micro-batch */
    dm_moe_task *tasks;  /* scratch task list */
};

/* moe_backward.c: one MoE layer's forward (the shared pipeline, with the
 * cache) and its backward. Forward: act_l -> act_{l+1}. Backward: dact_{l+1}
 * (d) -> dact_l (dx), accumulating parameter gradients; t->dw / t->dlogits
 * hold the balance-loss gradients already. */
dm_status dm_tr_layer_forward(dm_trainer *t, int l, dm_error *err);
dm_status dm_tr_layer_backward(dm_trainer *t, int l, const float *d, float *dx, dm_error *err);
/* Expert parallel training: layers exchange rows through x (NULL: off). */
void dm_tr_set_exchange(dm_trainer *t, const dm_moe_exchange *x);

/* AdamW's step constants. */
typedef struct adam_arg { dm_trainer *t; float gscale, lr, bc1, bc2; } adam_arg;
/* train.c: AdamW on params [lo, hi) of tensor i (frozen: nothing; masked: zeros kept). */
void dm_tr_adamw_range(const adam_arg *a, int i, int64_t lo, int64_t hi);
/* train.c: the re-pack of group g (an expert, a router, the embedding, the head) and the groups' count. */
void dm_tr_sync_group(dm_trainer *t, int64_t g, int tid);
int64_t dm_tr_n_groups(const dm_config *c);
/* train.c: per-tensor squared gradient sums over [lo, hi) of the layout into t->tensor_sq. */
void dm_tr_tensor_sq(dm_trainer *t, int64_t lo, int64_t hi);

/* train_dist.c: the distributed step's parts (each a no-op without t->dist).
 * Units are the layout's pieces that are reduced, gathered and released
 * together: 0 the embedding, 1..L the MoE layers, L + 1 the final norm and head. */
int dm_trd_ranks(const dm_trainer *t);         /* data-parallel ranks (1 without) */
int dm_trd_rank(const dm_trainer *t);
dm_status dm_trd_begin_step(dm_trainer *t, dm_error *err);        /* gradients to zero */
dm_status dm_trd_unit_use(dm_trainer *t, int u, dm_error *err);   /* zero3: gather + pack unit u */
void dm_trd_unit_done(dm_trainer *t, int u);                      /* zero3: release unit u's copies */
dm_status dm_trd_grads_ready(dm_trainer *t, int u, int last_micro, dm_error *err); /* start reducing unit u */
/* Every reduction finished, the aux-free counts summed; stats [n] summed over the ranks. */
dm_status dm_trd_end_backward(dm_trainer *t, double *stats, int n, dm_error *err);
/* The global gradient norm (sharded gradients: the shards' sums, all-reduced). */
dm_status dm_trd_grad_norm(dm_trainer *t, double *norm, dm_error *err);
/* AdamW (on this rank's shard under ZeRO) and the re-pack; 1 if it did the update. */
int dm_trd_update(dm_trainer *t, const adam_arg *a, dm_status *st, dm_error *err);
void dm_trd_free(dm_trainer *t);                                   /* t->dist, and NULL */
dm_status dm_trd_end_update(dm_trainer *t, dm_error *err);        /* the shared replica: every rank updated */
/* The transposed packs' bytes; re-points the trainer at buffers holding the
 * same contents (the old ones stay the caller's). */
size_t dm_tr_tpacked_bytes(dm_trainer *t);
/* Group g's update runs tensor by tensor (an expert's AdamW + re-pack fused), so its tensors may
 * be updated by different ranks (skip_tensor). */
int dm_tr_group_fused(dm_trainer *t, int64_t g);
void dm_tr_rebase(dm_trainer *t, unsigned char *tpacked, float *adam_m, float *adam_v);
/* Makes g (n_params floats) the gradient buffer, with t->grad's contents; returns the old one. */
float *dm_tr_swap_grad(dm_trainer *t, float *g);

#define DM_TR_ROW_BLOCK 128  /* rows per task of train_linear.c's per-row work */
#define DM_TR_LOSS_BLOCK 64  /* rows per task of the MSE loss */

/* train.c: bytes of one thread's bwork for experts of up to rows rows (and
 * micro-batches of rows rows through the embedding). */
size_t dm_tr_bwork_stride(const dm_trainer *t, int64_t rows);
/* Thread tid's GEMM scratch in bwork. */
void *dm_tr_bwork_gemm(const dm_trainer *t, int tid);
/* train.c: activation buffers for micro-batches of up to n rows. */
dm_status dm_tr_reserve(dm_trainer *t, int64_t n, dm_error *err);
/* train.c: re-packs forward and transposed weights after the parameters changed. */
void dm_tr_sync(dm_trainer *t);

/* Loss (task + balance) and gradients into t->grad for one batch, no update (tests). */
dm_status dm_tr_loss_and_grad(dm_trainer *t, const float *x, const float *target, const int32_t *labels,
                              int64_t n, double *loss, dm_error *err);

/* train_loss.c */
double dm_tr_task_loss(dm_trainer *t, const float *target, const int32_t *labels, float scale, int64_t *correct);
double dm_tr_balance(dm_trainer *t, int l, float scale);  /* adds gradients into t->dw / t->dlogits */

/* train_linear.c: embedding and head, forward and backward. */
void dm_tr_embed_forward(dm_trainer *t);
void dm_tr_embed_backward(dm_trainer *t, const float *d);
void dm_tr_head_forward(dm_trainer *t);
void dm_tr_head_backward(dm_trainer *t, float *dx);

#endif
