/* run_state.h - what a resumed training run needs besides the tensors: the
 * data position and the run's own settings (which win over the command line
 * on --resume). Saved as JSON in a checkpoint's caller state; read back, every
 * field is type- and range-checked, and an error names the field. */
#ifndef DM_RUN_STATE_H
#define DM_RUN_STATE_H

#include "deepmoe.h"
#include <stddef.h>
#include <stdint.h>

/* 1 was raw struct bytes; 2 had no holdout. Older ones are refused: the run
 * (src/train/run.c) says the checkpoint predates this deepmoe. */
#define DM_RUN_STATE_VERSION 4  /* 4: precision (3 is still read: fp32) */

typedef struct dm_run_state {
    int task;                /* dm_task: 0 classify, 1 regress */
    int64_t epoch, pos;      /* the batcher's position */
    uint64_t seed;           /* data order, augmentation, model init (<= INT64_MAX) */
    double holdout;          /* the share of the data held out for evaluation; -1: its own test split */
    int shuffle, batch;
    int aug_shift, aug_flip; /* image augmentation: shift 0..8 pixels, left-right flips */
    float aug_drop;          /* input dropout in [0, 1) */
    int64_t checkpoint_every, log_every, eval_every;   /* the run's cadence (eval 0 = off) */
    dm_train_config tc;      /* total_steps included */
} dm_run_state;

/* Compact JSON (malloc'd; NULL on OOM). Floats print exactly (17 digits). */
char *dm_run_state_to_json(const dm_run_state *rs);
/* The "version" of a run state's JSON text[len]: 1 if it is not a JSON object
 * (version 1 was raw struct bytes), 0 if it has no integer version. */
int dm_run_state_version(const char *text, size_t len);
/* Parses text[len] (not NUL-terminated) into *rs. DM_ERR_FORMAT naming the
 * field for a missing, unknown, mistyped or out-of-range field, or another
 * version; errors read "PATH: run state: field 'x': problem". */
dm_status dm_run_state_from_json(const char *text, size_t len, const char *path, dm_run_state *rs, dm_error *err);

/* The model-independent checks dm_trainer_create applies to a train config
 * (learning rate, betas, steps, ...); messages name the command-line flag. */
dm_status dm_train_config_check(const dm_train_config *tc, dm_error *err);

#endif
