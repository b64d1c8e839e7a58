/* train_cli.h - shared by the train and eval commands. */
#ifndef DM_TRAIN_CLI_H
#define DM_TRAIN_CLI_H

#include <stdio.h>
#include "deepmoe.h"
#include "model_flags.h"
#include "data/data.h"

typedef struct opts {
    const char *data, *out, *model, *resume, *balance, *augment;
    int task;               /* -1 = by data */
    int shuffle, layers, threads, grad_accum, batch;
    int64_t steps, epochs, warmup, eval_every, log_every, ckpt_every, stop_at;
    long long seed;
    int loss;               /* -1 = by task */
    float lr, wd, b1, b2, eps, clip, bal_coef, bias_update, label_smoothing, dropout;
    int schedule;
    dm_config cfg;
    int cfg_set[OPT_MODEL_FLAGS_END - 1000];
} opts;

#include "train/run_state.h"   /* dm_run_state: what a checkpoint keeps of the run */


int parse_balance(const char *s, dm_train_config *tc);
int mkdir_p(const char *dir);
/* ,"key":v, or null when v is not finite. */
void json_num(FILE *fp, const char *key, double v);
void json_load(FILE *fp, const double *load, int L, int E);
void load_stats(const double *load, int L, int E, double *util, double *vio);
void bar(char *out, const double *load, int E);
int evaluate(const char *cmd, dm_model *m, dm_pool *pool, const dm_data *d, int64_t oracle_rows, dm_eval *ev,
             double *load);
void eval_json(FILE *fp, int64_t step, const dm_eval *ev, const double *load, int L, int E);
int train_run(opts *o, const dm_config *flags, int top_k_flag);

#endif
