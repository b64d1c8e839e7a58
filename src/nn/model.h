/* model.h - the model's internals: one flat parameter buffer carved by a
 * tensor table, typed views into it, and the kernels' packed copies.
 *
 * Stable layout (the order of the table, which is also the file order):
 *   [embed.weight [D, in], embed.bias [D]]                        if in_dim
 *   per MoE layer l (names prefixed "layers.{l}." unless the model is the
 *   bare seed layer: one layer, no embed, no head):
 *     gating.gate.weight [E, D], gating.gate.bias [E], gating.expert_bias [E]?,
 *     experts.{e}.*  for e < E, then shared_experts.{s}.*  for s < S, where
 *     seed expert:   net.0.weight [H, D], net.0.bias [H], net.2.weight [H] (gamma),
 *                    net.2.bias [H] (beta), net.3.weight [D, H], net.3.bias [D]
 *     swiglu expert: w1.weight [H, D], w2.weight [D, H], w3.weight [H, D]
 *   [norm.weight [D], norm.bias [D], head.weight [C, D], head.bias [C]]  if n_classes
 * Training, ZeRO sharding and checkpoints address parameters by this layout. */
#ifndef DM_MODEL_H
#define DM_MODEL_H

#include "deepmoe.h"
#include "kernels/wtype.h"
#include "nn/expert.h"
#include "nn/preprocess.h"

#define DM_NAME_MAX 64

typedef struct dm_tensor_desc {
    char name[DM_NAME_MAX];
    int ndim;
    int64_t shape[2];
    int64_t offset;              /* floats into params (packed-only weights: where they would be) */
    int64_t numel;
    int stored;                  /* 1: the fp32 values are in params; 0: only packed (wm) */
    const dm_wmat *wm;           /* the packed operand holding this weight, or NULL */
    int wm_row0;                 /* its first row in wm (swiglu packs [W1; W3]) */
} dm_tensor_desc;

/* One expert's weights (views into params) and packed GEMM operands. */
struct dm_expert_w {
    int hidden;                  /* H (or Hs for shared experts) */
    const float *w1;             /* [H, D]  seed net.0 / swiglu w1 */
    const float *b1;             /* [H]     seed only */
    const float *gamma, *beta;   /* [H]     seed LayerNorm */
    const float *w2;             /* [D, H]  seed net.3 / swiglu w2 */
    const float *b2;             /* [D]     seed only */
    const float *w3;             /* [H, D]  swiglu only */
    dm_wmat p1;                  /* packed up-projection: seed W1 [H, D], swiglu [W1; W3] [2H, D] */
    dm_wmat p2;                  /* packed W2 [D, H] */
};

/* One MoE layer. */
typedef struct dm_layer {
    const float *gate_w;         /* [E, D] */
    const float *gate_b;         /* [E] */
    float *sel_bias;             /* [E] or NULL (written by aux-free balancing) */
    dm_expert_w *experts;        /* [E + S]: routed, then shared */
    dm_wmat gate_p;              /* packed router weight [E, D] */
} dm_layer;

/* A plain linear map (embedding, head) with its packed weight. */
typedef struct dm_linear {
    int in, out;
    const float *w;              /* [out, in] */
    const float *b;              /* [out] */
    dm_wmat p;                   /* packed w */
} dm_linear;

struct dm_model {
    dm_config cfg;
    dm_isa isa;
    const dm_kernels *kern;
    const dm_wtype *wtype;       /* the experts' weight type (embed and head stay f32) */
    const dm_wtype *gate_wtype;  /* the router's: f32, or wtype (quantize --router same) */
    const dm_wtype *io_wtype;    /* the embedding's and head's: f32, or wtype (quantize --embed same) */
    int wgroup;                  /* the types' group along K (q8; 0: one scale per row) */
    const dm_wtype *loaded_wtype;/* dm_model_opts.dequantize: the type the file held (else NULL) */
    int n_tensors;
    dm_tensor_desc *tensors;     /* [n_tensors] */
    int *by_name;                /* [n_tensors] indices into tensors, sorted by name */
    int64_t n_params;            /* floats in params, padding included */
    float *params;               /* [n_params], one allocation: every tensor, or, packed-only,
                                  * the tensors no packed operand holds */
    int packed_only;             /* the GEMM weights exist only packed (an inference model) */
    _Atomic int stale;           /* 1: the experts' f32 packs are older than their masters (a bf16
                                  * trainer's steps re-pack only its own copies); dm_forward re-packs */
    dm_linear embed;             /* in_dim -> D (w NULL when in_dim == 0) */
    dm_layer *layers;            /* [n_layers] */
    const float *norm_w, *norm_b;/* [D] final LayerNorm (n_classes > 0) */
    dm_linear head;              /* D -> C (w NULL when n_classes == 0) */
    unsigned char *packed;       /* one allocation holding every packed operand */
    dm_preprocess pre;           /* the input preprocessing (not a parameter: outside the layout) */
};

static inline int dm_model_in_width(const dm_config *c) { return c->in_dim ? c->in_dim : c->dim; }
static inline int dm_model_out_width(const dm_config *c) { return c->n_classes ? c->n_classes : c->dim; }
/* The bare seed layer keeps the seed's state-dict names (no "layers.0." prefix). */
static inline int dm_model_is_bare(const dm_config *c)
{
    return c->n_layers == 1 && c->in_dim == 0 && c->n_classes == 0;
}

/* A tensor's fp32 values into dst[numel]: its stored values, or its packed
 * operand unpacked (dequantized). */
dm_status dm_model_tensor_values(const dm_model *m, int i, float *dst, dm_error *err);
/* Drops the fp32 copies of the weights the kernels read packed (an inference
 * model keeps only what its kernels read): params shrinks to the other tensors. */
dm_status dm_model_drop_master(dm_model *m, dm_error *err);

/* ---- typed (compressed) weights: a model whose experts (and, with quantize
 * --router same, router) are of a type other than f32 is always packed-only. */

/* dm_model_create with the experts of type wt (group along K for q8) and the
 * router of type gate_wt. A typed model is packed-only from the start: its
 * typed weights have no fp32 masters (never allocated), its f32 operands are
 * packed from their (zero) masters until the caller fills those and calls
 * dm_model_pack_masters; the typed operands are empty until dm_model_fill_typed.
 * DM_ERR_SHAPE when a width a type takes as K does not divide by its k_multiple. */
dm_status dm_model_create_typed(const dm_config *c, const dm_model_opts *o, const dm_wtype *wt, int group,
                                const dm_wtype *gate_wt, const dm_wtype *io_wt, dm_model **out, dm_error *err);
/* Packs every f32 operand from its stored master (dm_model_sync without the
 * packed-only refusal: a typed model's router, embedding and head are packed so
 * before dm_model_drop_master). DM_ERR_NOMEM or DM_OK. */
dm_status dm_model_pack_masters(dm_model *m);
/* Re-packs a stale model (dm_model.stale) before a forward pass; DM_ERR_NOMEM or DM_OK. */
dm_status dm_model_fresh(const dm_model *m, dm_error *err);
/* 1 if any operand's type is not f32. */
int dm_model_is_typed(const dm_model *m);
/* Writes tensor i's rows of its operand's file layout: part[p] points at the
 * tensor's first row of part p (rows = the tensor's shape[0]). */
typedef dm_status (*dm_parts_fill)(void *ctx, int i, void *const part[], dm_error *err);
/* Fills and packs every typed operand, tensor by tensor, through fill. */
dm_status dm_model_fill_typed(dm_model *m, dm_parts_fill fill, void *ctx, dm_error *err);
/* A new model with src's values in types wt (experts) and gate_wt (router):
 * quantized by the types' reference quantizers (nm24: pruned); an f32 target
 * gives a trainable model with the dequantized values. DM_ERR_SHAPE when a
 * weight's K does not divide by the type's k_multiple, DM_ERR_ARG for a bad group. */
dm_status dm_model_convert(const dm_model *src, const dm_wtype *wt, int group, const dm_wtype *gate_wt,
                           const dm_wtype *io_wt, dm_isa isa, dm_model **out, dm_error *err);
/* Bytes of dm_gemm.work one thread needs for any of the model's GEMMs over at
 * most rows rows (0 for an all-f32 model). */
size_t dm_model_work_size(const dm_model *m, int64_t rows);

/* DM_ERR_NONFINITE naming the first NaN/Inf in x [n, width]; DM_OK if none.
 * K: the kernel table that scans (NULL: the reference). */
dm_status dm_check_input(const dm_kernels *K, const float *x, int64_t n, int width, dm_error *err);
/* out [n, in] = the model's preprocessing of x (m->pre.scale must be set);
 * DM_ERR_NONFINITE naming the first value it takes past the float range. */
dm_status dm_preprocess_rows(const dm_model *m, const float *x, int64_t n, float *out, dm_error *err);

/* Index of tensor `name` in the table, or -1 (binary search of by_name). */
int dm_model_tensor_index(const dm_model *m, const char *name);
/* Index of the tensor whose data starts at p, or -1 (binary search by offset). */
int dm_model_tensor_at(const dm_model *m, const float *p);

/* What a config costs, computed without building anything: the tensors and
 * parameters (without padding) of the model it describes. DM_ERR_ARG when a
 * tensor, the tensor count or the parameter count passes its limit. The
 * widths must already be in range (dm_config_validate calls this last). */
#define DM_MAX_TENSOR_NUMEL ((int64_t)INT32_MAX)   /* elements of one tensor */
#define DM_MAX_TENSORS ((int64_t)1 << 21)          /* tensors of one model */
#define DM_MAX_PARAMS ((int64_t)1 << 34)           /* parameters of one model (64 GiB in fp32) */
dm_status dm_config_size(const dm_config *c, int64_t *n_tensors, int64_t *n_params, dm_error *err);
/* Parameters of one expert of hidden width h under c's expert type and D. */
int64_t dm_expert_numel(const dm_config *c, int64_t h);

/* Re-points m at params (n_params floats) and packed (the packed operands'
 * bytes: dm_model_memory - 4 n_params) that already hold the same contents;
 * the old buffers stay the caller's (distributed training's shared replica). */
void dm_model_rebase(dm_model *m, float *params, unsigned char *packed);

#endif
