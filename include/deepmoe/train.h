/* deepmoe/train.h - a whole training run in one call: the data, a new or
 * given model, the trainer, the loop, metrics.jsonl, evaluation, checkpoints,
 * divergence, and bit-exact resume (what `deepmoe train` runs).
 *
 *     dm_run_opts o;
 *     dm_run_opts_init(&o);
 *     o.data = "synthetic";  o.out = "runs/a";  o.steps = 200;
 *     dm_run_result r = {.struct_size = sizeof r};
 *     if (dm_run_train(&o, on_progress, NULL, &r, &err)) ...
 *
 * The run writes, under out/: model.safetensors (the model, with its training
 * seed in the metadata), checkpoint/state.safetensors (the whole training
 * state and the run's settings as versioned JSON: docs/formats.md) every
 * checkpoint_every steps and at the end, and metrics.jsonl (one JSON object per
 * logged step and per evaluation). Each file is replaced atomically. The
 * library prints nothing: the progress callback gets every logged step,
 * evaluation and checkpoint. */
#include "deepmoe.h"
#include "deepmoe/data.h"
#include "deepmoe/dist.h"

#ifndef DEEPMOE_TRAIN_H
#define DEEPMOE_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* An option the run chooses: by the task, the data, or (resuming) the saved run. */
#define DM_RUN_DEFAULT (-1)

typedef struct dm_run_opts {
    size_t struct_size;      /* sizeof(dm_run_opts): dm_run_opts_init sets it; the run refuses another */
    /* data */
    const char *data;        /* the data spec (deepmoe/data.h); required */
    int task;                /* dm_task, or DM_RUN_DEFAULT: classify for fashion-mnist / mnist, else regress */
    double holdout;          /* share of a set without a test split held out for evaluation, in [0, 1)
                                (0: train on every row, no evaluation); DM_RUN_DEFAULT: the set's (0.1) */
    int normalize;           /* dm_normalize: how the features are scaled, fitted on the train split and stored
                                in the model (dm_model_set_preprocess), which applies it in dm_forward; or
                                DM_RUN_DEFAULT: a given model's own (when its file records one), else the
                                set's (pixel for IDX, minmax for .npy, none for synthetic). A resumed run
                                keeps its model's. */
    int shuffle;             /* a seeded shuffle per epoch (1); 0: file order */
    int aug_shift, aug_flip; /* square images: random shifts by up to aug_shift pixels (0..8), left-right flips */
    float aug_drop;          /* input dropout, [0, 1) */
    uint64_t seed;           /* model init, shuffles, augmentation, synthetic data (0; at most INT64_MAX) */
    int batch;               /* rows per micro-batch (256) */
    /* model */
    const char *model;       /* start from this model file; NULL: a new model from `config` */
    int model_top_k;         /* k for a model file without deepmoe metadata (0: 2) */
    dm_config config;        /* a new model: dm_config_default() but dim, hidden and n_layers are
                                DM_RUN_DEFAULT (classify: D=384, H=384, 2 layers; regress: D = the data's
                                width, H = D/2, 1 layer); in_dim and n_classes come from the data, and
                                aux_free balancing turns selection_bias on */
    /* optimisation */
    dm_train_config train;   /* init: lr 0 (by task: 5e-4 classify, 1e-3 regress), weight decay 0.01,
                                betas 0.9, 0.999, eps 1e-8, warmup 100 (a tenth of the run if that is
                                longer), cosine, clip 1, grad_accum 1, balance coefficients 0.01, 0.01,
                                0.001, bias_update 0.001. Its loss, balance and total_steps are not read:
                                they come from the three fields below. */
    int loss;                /* dm_loss_kind, or DM_RUN_DEFAULT: ce for classify, mse for regress */
    int balance;             /* DM_BAL_* flags, or DM_RUN_DEFAULT: aux_free for a new classifier, else none */
    int64_t steps, epochs;   /* optimizer steps in total, or epochs (one of them; neither, 0: 15 epochs
                                classify, 10 regress) */
    int64_t stop_at;         /* stop after this step (0: at the end), keeping the full run's schedule */
    /* run */
    const char *out;         /* output directory (made if missing); NULL with resume: resume */
    const char *resume;      /* continue the run saved in this directory (NULL: a new run). The saved
                                task, seed, holdout, shuffle, batch, augmentation and train config win
                                over these options; steps may set a new total. */
    int threads;             /* worker threads, 0 = all CPUs */
    int64_t log_every;       /* a metrics.jsonl record and DM_RUN_LOG every N steps (DM_RUN_DEFAULT: 50) */
    int64_t eval_every;      /* evaluate on the test split every N steps, 0 = at the end only (DM_RUN_DEFAULT: 0) */
    int64_t checkpoint_every;/* checkpoint every N steps, and at the end (DM_RUN_DEFAULT: 1000) */
                             /* (the three cadences: DM_RUN_DEFAULT on resume keeps the saved run's) */
    int64_t progress_every;  /* DM_RUN_STEP every N steps (0: none), e.g. for a terminal's live line */
    int64_t oracle_rows;     /* rows the final evaluation's routing oracle scores (1000; 0 = skip) */
    int keep_sparsity;       /* 2:4 fine-tuning of a pruned model (deepmoe quantize --type nm24): the
                                given model loads dequantized, its experts' zeros stay fixed
                                (dm_trainer_keep_sparsity), and every save also writes
                                model.packed.safetensors in the given file's type (nm24 for an f32
                                file). A resumed run that was keeping sparsity keeps it. */
    /* distributed (deepmoe/dist.h): every rank of comm calls dm_run_train with the same options */
    dm_comm *comm;           /* the ranks (NULL: one process) */
    int dist;                /* dm_dist_mode (DM_DIST_NONE: one process; anything else needs comm) */
    int expert_parallel;     /* experts split over this many ranks (0 or 1: none; with DM_DIST_DP) */
} dm_run_opts;

/* Every option at its default; data and out (or resume) are left to set. */
DM_API void dm_run_opts_init(dm_run_opts *o);

typedef enum {
    DM_RUN_START = 0,        /* once, before the first step: the data, the model, the plan */
    DM_RUN_STEP,             /* every progress_every steps (not at a DM_RUN_LOG step) */
    DM_RUN_LOG,              /* every log_every steps and the last: what metrics.jsonl got */
    DM_RUN_EVAL,             /* an evaluation on the test split (every eval_every steps; the final one) */
    DM_RUN_CHECKPOINT,       /* the model and the checkpoint were written */
} dm_run_event;

/* What the callback sees; pointers are valid during the call only. */
typedef struct dm_run_progress {
    dm_run_event event;
    int64_t step;            /* optimizer steps done */
    int64_t total_steps;     /* the run's total (the schedule's length) */
    int64_t stop_step;       /* where this call stops: stop_at or total_steps */
    double epoch;            /* step * step_rows / train rows */
    const dm_data *data;     /* the run's data, raw (normalize none): the model's preprocessing scales each
                                batch before the trainer sees it, and dm_forward scales the test rows */
    const dm_model *model;   /* the model being trained */
    int64_t step_rows;       /* rows per optimizer step: batch * grad_accum */
    int threads;
    /* DM_RUN_START */
    int resumed;             /* continuing a saved run, at `step` */
    int64_t data_epoch, data_pos;  /* the data position (epoch, row in it) the run starts from */
    int aug_shift, aug_flip; /* the augmentation in force (a resumed run's own) */
    float aug_drop;
    /* DM_RUN_STEP, DM_RUN_LOG: means over the steps since the last DM_RUN_LOG */
    double loss, balance_loss;
    double train_accuracy;   /* classify: share of rows whose argmax was the label; else -1 */
    double lr, grad_norm;    /* of the last step */
    double rows_per_s;       /* since the last DM_RUN_LOG (or evaluation) */
    double eta_s;            /* to stop_step at this call's speed so far */
    /* DM_RUN_STEP, DM_RUN_LOG (the last micro-batch's) and DM_RUN_EVAL (the evaluation's) */
    const double *expert_load;   /* [n_layers * n_experts]: share of assignments per expert */
    int n_layers, n_experts;
    double expert_utilization, max_vio;  /* mean over layers */
    /* DM_RUN_EVAL */
    const dm_eval *eval;
    int final;               /* the final evaluation (after the last step, with the routing oracle) */
    /* DM_RUN_CHECKPOINT */
    const char *path;        /* the checkpoint file written */
    /* distributed runs (events come on rank 0 only; step_rows counts every rank's rows) */
    int ranks;               /* 1 for one process */
    double comm_s, compute_s;/* DM_RUN_STEP, DM_RUN_LOG: seconds in collectives / the rest, since the last log */
    double comm_share;       /* comm_s / (comm_s + compute_s) */
    double bytes_sent;       /* this rank's bytes sent since the last log */
    const double *rank_load; /* DM_RUN_LOG: [ranks * n_layers * n_experts] each rank's last expert load */
    const double *rank_rss;  /* DM_RUN_LOG: [ranks] each rank's resident set, bytes */
    dm_train_memory memory;  /* DM_RUN_START, DM_RUN_LOG: rank 0's trainer memory */
    int host_ranks, hosts;   /* DM_RUN_START: gradients summed through shared memory by host_ranks ranks on
                              * each of hosts hosts (then MPI across them); host_ranks 1: MPI alone */
    int shared_replica;      /* DM_RUN_START: the host's ranks share one copy of the parameters and moments */
} dm_run_progress;

/* Returns 0 to go on; anything else stops the run after this step, as stop_at
 * would (the checkpoint is written; a later resume continues exactly). */
typedef int (*dm_run_progress_fn)(const dm_run_progress *p, void *user);

typedef struct dm_run_result {
    size_t struct_size;      /* sizeof(dm_run_result), set by the caller */
    int64_t step;            /* optimizer steps done when the run returned */
    int64_t total_steps;
    int64_t steps_run;       /* steps this call made */
    int64_t step_rows;
    int completed;           /* 1: step == total_steps; 0: stopped early (stop_at, the callback) */
    int evaluated;           /* the final evaluation ran (completed, and the test split has rows) */
    dm_eval eval;            /* the final evaluation (expert_load NULL) */
    double train_seconds;    /* the loop of this call */
} dm_run_result;

/* Runs o: trains and writes out/ as described above. cb may be NULL; res may be
 * NULL. Errors are statuses with a one-line message naming the option, file or
 * step: DM_ERR_ARG for options out of range (and o->struct_size not this
 * library's), DM_ERR_FORMAT for a bad checkpoint (one written before this run-state
 * version is refused, saying so), DM_ERR_DIVERGED when a step's loss or gradient
 * norm is not finite (the run stops there; earlier checkpoints are kept). */
DM_API dm_status dm_run_train(const dm_run_opts *o, dm_run_progress_fn cb, void *user, dm_run_result *res,
                              dm_error *err);

/* What a model file says of the run that trained it (deepmoe.train_seed and
 * deepmoe.train_holdout in its __metadata__). A file without them (made by
 * dm_model_save, or by another program) gives has_seed 0 and holdout -1. */
typedef struct dm_train_meta {
    int has_seed;
    uint64_t seed;           /* the run's seed (synthetic data, model init, shuffles) */
    double holdout;          /* the share of its data the run held out; -1: none recorded (or the data had a
                                test split of its own) */
} dm_train_meta;

DM_API dm_status dm_model_train_meta(const char *path, dm_train_meta *tm, dm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DEEPMOE_TRAIN_H */
