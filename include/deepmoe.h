/* deepmoe.h - public API of libdeepmoe: DeepSeek-style Mixture-of-Experts in C.
 *
 * Conventions
 *  - Every public symbol starts with dm_ / DM_.
 *  - Functions that can fail return a dm_status and, when the caller passes a
 *    dm_error, fill it with a one-line message that names the file or argument
 *    and the problem. The library never exits, aborts or prints.
 *  - Handles are opaque. There is no global mutable state (but the profiler's,
 *    deepmoe/trace.h, which is process-wide by nature): a dm_model holds
 *    immutable weights that any number of dm_ctx instances (each with its own
 *    scratch memory and thread pool) can share.
 *  - Matrices are row-major float32; a weight [N, K] maps K inputs to N outputs
 *    (PyTorch's nn.Linear layout).
 */
#ifndef DEEPMOE_H
#define DEEPMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "deepmoe/api.h"   /* DM_API, DM_VERSION_* */

/* The version of the library linked at run time (DM_VERSION_NUMBER of its build);
 * compare with the header's to detect a mismatch. */
DM_API int dm_version(int *major, int *minor, int *patch);
DM_API const char *dm_version_string(void);

/* ---------------------------------------------------------------- errors */

typedef enum {
    DM_OK = 0,
    DM_ERR_ARG,         /* invalid argument or configuration */
    DM_ERR_IO,          /* open/read/write/rename failed */
    DM_ERR_FORMAT,      /* file is not in the expected format (corrupt, truncated) */
    DM_ERR_SHAPE,       /* tensor or input shape does not match the model */
    DM_ERR_UNSUPPORTED, /* valid but not supported (dtype, npy order, ...) */
    DM_ERR_NONFINITE,   /* NaN or Inf in an input */
    DM_ERR_NOMEM,       /* allocation failed */
    DM_ERR_DIVERGED,    /* training diverged: a non-finite loss or gradient norm */
    DM_ERR_COMM,        /* a collective of a distributed run failed or timed out (a rank died or hangs) */
} dm_status;

typedef struct dm_error {
    dm_status code;
    char msg[512];      /* one line, no trailing newline */
} dm_error;

DM_API const char *dm_status_name(dm_status s);

/* ---------------------------------------------------------------- config */

typedef enum {
    DM_ROUTER_SEED = 0, /* top-k of the logits, softmax over the k kept logits (the seed's MoEGating) */
    DM_ROUTER_SOFTMAX,  /* softmax over all E, then top-k; optional renormalisation (DeepSeek V2) */
    DM_ROUTER_SIGMOID,  /* sigmoid, then top-k, renormalised to sum 1 (DeepSeek V3) */
} dm_router_kind;

typedef enum {
    DM_EXPERT_SEED = 0, /* Linear -> ReLU -> LayerNorm -> Linear, + x (the seed's ExpertLayer) */
    DM_EXPERT_SWIGLU,   /* W2 (silu(W1 x) * W3 x), no biases (DeepSeek) */
} dm_expert_kind;

/* Fill with dm_config_default, then set fields: struct_size is how the library
 * tells a caller built against another layout (and an uninitialised struct)
 * from a valid one. The fields, their JSON keys, defaults and ranges are one
 * list in the library (src/nn/config_fields.h); the build checks this struct
 * against it. */
typedef struct dm_config {
    size_t struct_size;  /* sizeof(dm_config), set by dm_config_default; never serialized */
    int dim;             /* D: width of an input row */
    int n_experts;       /* E: routed experts */
    int top_k;           /* k: experts chosen per row, 1 <= k <= E */
    int hidden;          /* H: hidden width of a routed expert */
    dm_router_kind router;
    int norm_topk;       /* softmax router only: renormalise the k weights to sum 1 */
    float route_scale;   /* multiplies the routed weights (1 = off) */
    int n_groups;        /* group-limited routing: E split into n_groups equal groups (1 = off) */
    int topk_groups;     /* groups a row may use; group score = sum of its top-2 scores */
    int selection_bias;  /* 1: per-expert bias added to the scores for selection only */
    dm_expert_kind expert;
    int n_shared;        /* shared experts: always active, weight 1, added to the routed sum */
    int shared_hidden;   /* hidden width of each shared expert (0 = same as hidden) */
    float ln_eps;        /* LayerNorm epsilon (seed experts, final norm) (1e-5) */
    /* The network around the MoE layers (defaults: the bare seed layer). */
    int n_layers;        /* MoE layers stacked (1) */
    int in_dim;          /* 0: input rows have dim values; else Linear in_dim -> dim first ("embed") */
    int n_classes;       /* 0: output the last layer [n, dim]; else LayerNorm + Linear dim -> n_classes */
} dm_config;

/* The seed's DeepSeekMoE defaults: D=512, E=8, k=2, H=256, seed router and experts. */
DM_API void dm_config_default(dm_config *c);
/* hidden = 0 means dim/2 and shared_hidden = 0 means hidden; validate resolves both.
 * DM_ERR_ARG naming the field for a value out of range, and for a struct that
 * dm_config_default did not fill (struct_size). */
DM_API dm_status dm_config_validate(dm_config *c, dm_error *err);
DM_API const char *dm_router_name(dm_router_kind r);
DM_API const char *dm_expert_name(dm_expert_kind e);
/* Parse a name ("seed", "softmax", "sigmoid" / "seed", "swiglu") into *out;
 * DM_ERR_ARG listing the valid names if unknown (*out untouched). */
DM_API dm_status dm_router_parse(const char *name, dm_router_kind *out, dm_error *err);
DM_API dm_status dm_expert_parse(const char *name, dm_expert_kind *out, dm_error *err);

/* ---------------------------------------------------------------- CPU */

typedef enum {
    DM_ISA_AUTO = 0,    /* best the CPU supports; DEEPMOE_ISA=ref|avx2|avx512 overrides */
    DM_ISA_REF,         /* portable C reference kernels */
    DM_ISA_AVX2,        /* AVX2 + FMA */
    DM_ISA_AVX512,      /* AVX-512 F/BW/VL + FMA */
} dm_isa;

/* Resolves DM_ISA_AUTO (CPU features, then the DEEPMOE_ISA variable) and
 * falls back to what the CPU supports when a requested ISA is missing. */
DM_API dm_isa dm_isa_resolve(dm_isa want);
DM_API const char *dm_isa_name(dm_isa isa);

/* ---------------------------------------------------------------- thread pool */

typedef struct dm_pool dm_pool;

/* n_threads >= 1 workers including the caller's thread; 0 = number of online CPUs. */
DM_API dm_status dm_pool_create(int n_threads, dm_pool **out, dm_error *err);
DM_API void dm_pool_free(dm_pool *pool);
DM_API int dm_pool_size(const dm_pool *pool);

/* ---------------------------------------------------------------- model */

typedef struct dm_model dm_model;

typedef struct dm_tensor_info {
    const char *name;    /* PyTorch state-dict name, e.g. "experts.3.net.0.weight" */
    int ndim;
    int64_t shape[2];
    int64_t numel;
    float *data;         /* float32, row-major, inside the model's flat parameter buffer; NULL for
                            a GEMM weight of a packed-only model (its values: dm_model_save) */
    const char *wtype;   /* the weight type a GEMM weight is packed as ("f32"); NULL for tensors
                            the kernels read as they are (biases, norms, the selection bias) */
} dm_tensor_info;

/* Fill with dm_model_opts_default, then set fields (or pass NULL for the defaults). */
typedef struct dm_model_opts {
    size_t struct_size;  /* sizeof(dm_model_opts), set by dm_model_opts_default */
    dm_isa isa;          /* kernels the model packs its weights for (DM_ISA_AUTO) */
    int top_k;           /* k for files without deepmoe metadata (0 = 2) */
    int packed_only;     /* 1 (inference): keep only what the kernels read, no fp32 copy of the
                            GEMM weights; their dm_tensor_info.data is NULL, dm_model_save unpacks
                            them, dm_model_sync, training and dm_forward_dense refuse the model */
    int dequantize;      /* 1: a file with compressed weights (q8, nm24, ...) loads as an f32 model
                            of its dequantized values, which trains; 0: it loads packed-only */
} dm_model_opts;

DM_API void dm_model_opts_default(dm_model_opts *o);

/* A model with all parameters zero. o may be NULL (the defaults). */
DM_API dm_status dm_model_create(const dm_config *c, const dm_model_opts *o, dm_model **out, dm_error *err);
/* PyTorch's default init: Linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * LayerNorm gamma 1 and beta 0, selection bias 0. Deterministic in seed. */
DM_API void dm_model_init_random(dm_model *m, uint64_t seed);   /* does nothing to a packed-only model */
/* Load safetensors: deepmoe metadata if present, else infer a seed-named state dict. */
DM_API dm_status dm_model_load(const char *path, const dm_model_opts *o, dm_model **out, dm_error *err);
/* Write safetensors (F32, config in __metadata__) atomically: temp file, fsync, rename. */
DM_API dm_status dm_model_save(const dm_model *m, const char *path, dm_error *err);

/* ---------------------------------------------------------------- compression */

/* Fill with dm_quantize_opts_default, then set fields. */
typedef struct dm_quantize_opts {
    size_t struct_size;  /* sizeof(dm_quantize_opts), set by dm_quantize_opts_default */
    const char *type;    /* the experts' weight type: "bf16", "f16", "q8", "nm24" (= "nm24:f32"),
                            "nm24:bf16", "nm24:q8", or "f32" (dequantize); default "q8" */
    int group;           /* q8: values per scale along K, 32, 64 or 128; 0 (default): one per row */
    int router_same;     /* 1: the router in `type` too; 0 (default): the router stays f32 */
    int embed_same;      /* 1: the embedding and head in `type` too (every nn.Linear, as PyTorch's
                            quantize_dynamic does); 0 (default): they stay f32 */
    dm_isa isa;          /* kernels the result packs for (DM_ISA_AUTO) */
} dm_quantize_opts;

DM_API void dm_quantize_opts_default(dm_quantize_opts *o);
/* A new model holding src's weights in o's types (nm24: pruned by magnitude, the
 * 2 largest of every 4 along K). Embedding and head stay f32 unless embed_same. A compressed
 * result is packed-only (inference; dm_model_save writes its types); an f32
 * result is a trainable model. */
DM_API dm_status dm_model_quantize(const dm_model *src, const dm_quantize_opts *o, dm_model **out, dm_error *err);
/* The experts' weight type name ("f32", "q8", ...) and the router's. */
DM_API const char *dm_model_wtype(const dm_model *m);
DM_API const char *dm_model_router_wtype(const dm_model *m);
DM_API const char *dm_model_embed_wtype(const dm_model *m);   /* the embedding's and head's */
/* Bytes tensor i takes in the model's file under its type (all parts: values,
 * scales, indices). */
DM_API int64_t dm_model_tensor_bytes(const dm_model *m, int i);
/* Tensor i's fp32 values into dst[numel]: stored, or unpacked and dequantized. */
DM_API dm_status dm_model_tensor_read(const dm_model *m, int i, float *dst, dm_error *err);
/* The share of rows (in [0, 1]) whose chosen expert set differs between a and b
 * in any layer, over x [n_rows, in]; both models must have the same config
 * shape. per_layer [n_layers] (or NULL) gets each layer's share. */
DM_API dm_status dm_topk_flip_rate(const dm_model *a, const dm_model *b, dm_pool *pool, const float *x,
                                   int64_t n_rows, double *rate, double *per_layer, dm_error *err);
DM_API void dm_model_free(dm_model *m);

DM_API const dm_config *dm_model_config(const dm_model *m);
DM_API dm_isa dm_model_isa(const dm_model *m);
DM_API int dm_model_n_tensors(const dm_model *m);
/* Tensor i (0 <= i < n_tensors), in the stable layout order. */
DM_API dm_tensor_info dm_model_tensor(const dm_model *m, int i);
/* Tensor by name into *out (out may be NULL: a presence test); DM_ERR_ARG if the
 * model has no such tensor (dm_model_tensor lists them). */
DM_API dm_status dm_model_find(const dm_model *m, const char *name, dm_tensor_info *out, dm_error *err);
DM_API int64_t dm_model_param_count(const dm_model *m);
/* Bytes the model's weights occupy in memory: fp32 tensors kept plus packed operands. */
DM_API int64_t dm_model_memory(const dm_model *m);
/* Parameters one row touches: router + k routed experts + shared experts. */
DM_API int64_t dm_model_active_params(const dm_model *m);
/* Call after writing to tensor data: rebuilds the kernels' packed weights. */
DM_API dm_status dm_model_sync(dm_model *m, dm_error *err);

/* Input preprocessing: a per-feature affine map the model applies to every input
 * row before anything else, x'[j] = x[j] * scale[j] + shift[j] (j < in; in float,
 * the product rounded, then the sum: never a fused multiply-add), so that callers pass raw features. A training run
 * fits it on its train split (deepmoe train --normalize; the methods are dm_normalize's,
 * deepmoe/data.h) and model files carry it (tensors preprocess.scale and
 * preprocess.shift, metadata deepmoe.normalize: docs/formats.md). It is not a
 * parameter: not in the tensor table, not trained, not in checkpoints.
 * method "minmax", "standard" or "pixel" takes scale and shift [in] (finite; copied);
 * "none" takes both NULL (the model takes raw features, and its file says so); NULL
 * clears it (nothing recorded: rows go in as given, as with files from before).
 * Not while a context runs a forward on the model. */
DM_API dm_status dm_model_set_preprocess(dm_model *m, const char *method, const float *scale, const float *shift,
                                         dm_error *err);
/* The model's preprocessing: *method its name (NULL: nothing recorded), *scale and
 * *shift [in] or NULL (valid until the model is freed or set again); any out pointer
 * may be NULL. Returns 1 if the model transforms its inputs, else 0. */
DM_API int dm_model_preprocess(const dm_model *m, const char **method, const float **scale, const float **shift);

/* ---------------------------------------------------------------- inference */

typedef struct dm_ctx dm_ctx;  /* one inference instance: scratch memory + a pool */

/* pool may be NULL (single-threaded). The model must outlive the ctx. */
DM_API dm_status dm_ctx_create(const dm_model *m, dm_pool *pool, dm_ctx **out, dm_error *err);
DM_API void dm_ctx_free(dm_ctx *ctx);

/* The routing decision: for each layer and row, the k chosen experts in selection
 * order (descending selection score, ties to the lower index) and their final
 * weights; arrays are [n_layers, n_rows, k], layer-major. */
typedef struct dm_routing {
    int32_t *experts;    /* [n_layers, n_rows, k] or NULL */
    float *weights;      /* [n_layers, n_rows, k] or NULL */
} dm_routing;

/* y[n_rows, out] = model(x[n_rows, in]); in = in_dim or dim, out = n_classes or dim. Rows with NaN/Inf are refused with
 * DM_ERR_NONFINITE (message names the row and column); nothing is computed. A model
 * with a preprocessing map (dm_model_set_preprocess) applies it to the rows first,
 * into the ctx's scratch (x is not written); a value it takes past the float range
 * is refused the same way. x and y must not overlap. route may be NULL. */
DM_API dm_status dm_forward(dm_ctx *ctx, const float *x, int64_t n_rows, float *y,
                     const dm_routing *route, dm_error *err);

/* Reference twin: every expert on every row, weighted sum with the routing
 * weights (the seed's dense formula), portable kernels, one thread; the model's
 * preprocessing first, as dm_forward. */
DM_API dm_status dm_forward_dense(const dm_model *m, const float *x, int64_t n_rows, float *y,
                           const dm_routing *route, dm_error *err);

/* ---------------------------------------------------------------- training */

typedef enum { DM_LOSS_MSE = 0, DM_LOSS_CE } dm_loss_kind;
typedef enum { DM_SCHED_COSINE = 0, DM_SCHED_CONSTANT } dm_schedule;
/* Training's GEMM precision. BF16 (mixed precision, as PyTorch's
 * autocast(bfloat16) does for linear layers): the experts' GEMMs (forward,
 * input and weight gradients) and the input embedding's (forward, weight
 * gradient) take bf16 operands, rounded to nearest even, and sum in fp32;
 * their outputs stay fp32. Master weights, gradients, AdamW moments, the
 * router, the head, LayerNorm, softmax and the loss stay fp32 (DeepSeek-V3
 * keeps gating and the output head in higher precision too). */
typedef enum { DM_PREC_FP32 = 0, DM_PREC_BF16 } dm_precision;
/* 1 if models packed for isa (resolved) run training precision p's GEMMs in
 * hardware: fp32 always; bf16 on AVX-512 with AVX512_BF16 (elsewhere it is
 * computed from rounded fp32 copies: the same numbers, slower than fp32). */
DM_API int dm_precision_native(dm_precision p, dm_isa isa);

/* Balance terms, combinable (bit flags). Definitions (P_e, f_e over the
 * micro-batch's rows; n rows, k slots, E experts, per MoE layer, summed over layers):
 *   SEED     coef_seed * mean_e(E * P_e * (1 - P_e)), P_e = mean routing weight of e
 *            (the seed's formula: it is largest at perfect balance, so minimising
 *            it drives collapse; kept for fidelity, see docs/balance.md)
 *   SWITCH   coef_switch * E * sum_e f_e * P_e, f_e = share of the n*k assignments
 *            to e (no gradient), P_e = mean over rows of the router's probability of e
 *            (softmax of the logits for seed/softmax routers; sigmoid scores
 *            normalised over all E for the sigmoid router)
 *   AUX_FREE after each optimizer step: b_e += bias_update * sign(mean_load - load_e)
 *            on the selection bias (DeepSeek-V3; needs selection_bias)
 *   Z        coef_z * mean_rows(logsumexp(logits)^2) */
enum { DM_BAL_SEED = 1, DM_BAL_SWITCH = 2, DM_BAL_AUX_FREE = 4, DM_BAL_Z = 8 };

/* Fill with dm_train_config_default, then set fields (struct_size as in dm_config). */
typedef struct dm_train_config {
    size_t struct_size;  /* sizeof(dm_train_config), set by dm_train_config_default; never serialized */
    dm_loss_kind loss;   /* MSE: mean over rows*outputs; CE: mean over rows of softmax cross-entropy */
    float lr;            /* peak learning rate */
    float weight_decay;  /* AdamW decoupled decay, applied to every parameter */
    float beta1, beta2, eps;
    int64_t warmup;      /* steps of linear warm-up: lr * (t + 1) / warmup for t < warmup */
    dm_schedule schedule;/* after warm-up: cosine to 0 at total_steps, or constant */
    int64_t total_steps; /* optimizer steps of the whole run (the cosine's length) */
    float clip;          /* global gradient L2-norm clip (0 = off), as clip_grad_norm_ */
    int grad_accum;      /* micro-batches per optimizer step (>= 1) */
    unsigned balance;    /* DM_BAL_* flags */
    float coef_seed;     /* 0.01 */
    float coef_switch;   /* 0.01 */
    float coef_z;        /* 0.001 */
    float bias_update;   /* aux-free gamma, 0.001 */
    float label_smoothing; /* CE: target (1 - s) one-hot + s / C (0 = off) */
    float dropout;       /* dropout on every expert's hidden activations (0 = off) */
    dm_precision precision; /* the experts' and embedding's GEMMs: fp32 (default) or bf16 operands */
} dm_train_config;

/* lr 1e-3, wd 0.01, betas (0.9, 0.999), eps 1e-8, no warm-up, cosine, clip 0,
 * accum 1, no balance terms, coefficients as above. total_steps must be set. */
DM_API void dm_train_config_default(dm_train_config *tc);

typedef struct dm_trainer dm_trainer;

/* Trains m in place (the model must outlive the trainer; pool may be NULL).
 * Allocates gradients and AdamW moments in the model's flat layout. tc must
 * come from dm_train_config_default (struct_size); DM_ERR_ARG otherwise. */
DM_API dm_status dm_trainer_create(dm_model *m, const dm_train_config *tc, dm_pool *pool,
                            dm_trainer **out, dm_error *err);
DM_API void dm_trainer_free(dm_trainer *t);
/* 2:4 fine-tuning (NVIDIA ASP's recipe): the experts' weights keep their
 * current zeros (every group of 4 along K must hold at most 2 nonzeros, as
 * dm_model_quantize's nm24 leaves them): those weights get no gradient and stay
 * exactly zero through every step. DM_ERR_ARG names a group that is not 2:4. */
DM_API dm_status dm_trainer_keep_sparsity(dm_trainer *t, dm_error *err);

typedef struct dm_step_stats {
    double loss;          /* task loss (MSE or CE), mean over the step's micro-batches */
    double balance_loss;  /* sum of the enabled balance terms, mean over micro-batches */
    double grad_norm;     /* global L2 norm before clipping */
    double lr;            /* learning rate used by this step */
    int64_t step;         /* optimizer steps done, after this one */
    int64_t correct;      /* CE: rows whose argmax equals the label */
} dm_step_stats;

/* One optimizer step on n_rows rows, split into grad_accum equal micro-batches
 * (n_rows must be a multiple of grad_accum). x [n_rows, input width];
 * MSE: target [n_rows, output width]; CE: labels [n_rows] in [0, n_classes).
 * Allocates nothing after the first call with the largest batch. */
DM_API dm_status dm_train_step(dm_trainer *t, const float *x, const float *target, const int32_t *labels,
                        int64_t n_rows, dm_step_stats *st, dm_error *err);

/* Expert load of the last micro-batch: load[layer * E + e] (share of assignments). */
DM_API void dm_trainer_expert_load(const dm_trainer *t, double *load);
DM_API int64_t dm_trainer_step_count(const dm_trainer *t);

/* Checkpoints: the whole training state (parameters, AdamW moments, step,
 * configs, and an opaque caller blob for the data position and RNG), one
 * safetensors file with a CRC-32 of the data, written atomically. Loading
 * into a trainer checks that the model config matches and the checksum holds. */
DM_API dm_status dm_trainer_save(const dm_trainer *t, const char *path, const void *blob, size_t blob_len,
                          dm_error *err);
DM_API dm_status dm_trainer_load(dm_trainer *t, const char *path, void *blob, size_t blob_cap,
                          size_t *blob_len, dm_error *err);
/* Reads only a checkpoint's caller blob (to restore a run's settings before
 * the trainer exists); dm_trainer_load verifies the whole file later. */
DM_API dm_status dm_checkpoint_blob(const char *path, void *blob, size_t blob_cap, size_t *blob_len, dm_error *err);

/* ---------------------------------------------------------------- routing metrics */

/* load[e] = share of the n_rows*k (row, slot) assignments routed to expert e. */
DM_API void dm_expert_load(const int32_t *experts, int64_t n_rows, int k, int n_experts, double *load);
/* mean_e(load) / max_e(load): 1 = perfectly balanced. */
DM_API double dm_expert_utilization(const double *load, int n_experts);
/* (max_e load - mean load) / mean load: 0 = perfectly balanced. */
DM_API double dm_max_vio(const double *load, int n_experts);

/* ---------------------------------------------------------------- evaluation */

typedef struct dm_eval {
    double loss;              /* mean CE (labels) or MSE (targets) */
    double accuracy;          /* classify: share of rows whose argmax is the label; else -1 */
    double mse;               /* regress: mean squared error; else -1 */
    double *expert_load;      /* caller's [n_layers * E] or NULL: share of assignments per expert */
    double expert_utilization;/* mean over layers of mean(load) / max(load) */
    double max_vio;           /* mean over layers of (max load - mean) / mean */
    double routing_accuracy;  /* share of (row, layer) pairs whose chosen top-k set equals the oracle's */
    double purity;            /* regimes known: share of rows whose top-1 expert is their regime's
                                 most common one (mean over layers); else -1 */
    int64_t oracle_rows;      /* rows the oracle scored */
} dm_eval;

/* Evaluates the ctx's model on n rows (labels for CE, else targets for MSE;
 * regime may be NULL). The routing oracle ranks, for each row and layer, the
 * experts by the row's loss when that expert alone (weight 1) serves the layer;
 * its top-k set is compared with the router's. It costs E forwards per layer,
 * so it runs on the first oracle_rows rows (0 = skip, routing_accuracy -1). */
DM_API dm_status dm_evaluate(dm_ctx *ctx, const float *x, const float *target, const int32_t *labels,
                      const int32_t *regime, int64_t n, int64_t oracle_rows, dm_eval *out, dm_error *err);

/* ---------------------------------------------------------------- benchmarking */

/* fp32 FMA peak of the pool's threads in GFLOP/s, measured for about `seconds`
 * by a register-resident FMA loop on the given ISA (0 for DM_ISA_REF). */
DM_API double dm_peak_gflops(dm_pool *pool, dm_isa isa, double seconds);
/* Useful forward FLOPs of one row: embedding, router, the k chosen experts and
 * the shared experts of every layer, head (2 per multiply-add). */
DM_API double dm_model_flops_per_row(const dm_model *m);

/* ---------------------------------------------------------------- arrays (.npy) */

typedef struct dm_array {
    int64_t rows, cols;  /* a 1-D file of n values reads as rows=1, cols=n */
    float *data;         /* float32, row-major; free with dm_array_free */
} dm_array;

/* Reads 1-D or 2-D C-order .npy (v1.0, v2.0, v3.0) of dtype '<f4', '<f8', '<i4', '<i8',
 * '|u1' ('<u1') or '|i1', converted to float32; an integer with |v| > 2^24 (not exact
 * in float32) is refused with DM_ERR_UNSUPPORTED. */
DM_API dm_status dm_npy_read(const char *path, dm_array *out, dm_error *err);
/* Writes a float32 .npy v1.0 [rows, cols], atomically. */
DM_API dm_status dm_npy_write(const char *path, const float *data, int64_t rows, int64_t cols, dm_error *err);
DM_API void dm_array_free(dm_array *a);

#ifdef __cplusplus
}
#endif

/* The data sets, whole training runs, the server (each header includes this one first). */
#include "deepmoe/config.h"
#include "deepmoe/data.h"
#include "deepmoe/train.h"
#include "deepmoe/serve.h"   /* the server and export (dm_server_*, dm_export_*) */
#include "deepmoe/trace.h"   /* the op-level profiler (Chrome trace-event JSON) */
#include "deepmoe/report.h"  /* the training report (self-contained HTML) */
#include "deepmoe/dist.h"    /* MPI: communicators, distributed modes, expert-parallel inference */

#endif /* DEEPMOE_H */
