/* run.c - dm_run_train: a whole training run, the body of `deepmoe train`.
 *
 * Order of a run: the saved run state first when resuming (its settings win
 * over the options), then the data, the train config (task defaults), the
 * model (resumed, given or new), the trainer and batcher (a resumed run loads
 * its checkpoint and seeks the batcher to the saved position), metrics.jsonl
 * (a resumed run drops the records a killed run wrote past its checkpoint),
 * then the loop: step, divergence check, log record, evaluation, checkpoint.
 * At the end the model and checkpoint are written, and a finished run with a
 * test split is evaluated with the routing oracle. Everything the caller sees
 * goes through the progress callback; nothing is printed. */
#include "deepmoe.h"
#include "base/base.h"
#include "data/data.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "nn/model.h"
#include "train/prefetch.h"
#include "train/run_state.h"
#include "dist/comm.h"
#include "obs/trace.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define RUN_BLOB_MAX 4096   /* the run state's JSON is ~900 bytes */
#define RUN_PATH_MAX 4096
#define TRAIN_SEED_KEY "deepmoe.train_seed"
#define SPARSITY_KEY "deepmoe.sparsity"       /* "2:4": the run keeps the experts' 2:4 zeros (keep_sparsity) */
#define PACKED_KEY "deepmoe.packed_wtype"     /* the type model.packed.safetensors is written in */
#define TRAIN_HOLDOUT_KEY "deepmoe.train_holdout"

/* Everything a run holds; run_free releases it all. */
#define STEP_RING 4096   /* step times kept per log interval for its p50/p99 (the latest ones) */

typedef struct run {
    dm_run_opts o;           /* the options, defaults resolved */
    double t_called;         /* when dm_run_train began (startup_s: until the first step) */
    double step_s[STEP_RING];
    int64_t n_step_s;        /* steps timed in this log interval */
    dm_run_progress_fn cb;
    void *user;
    int stop_req;            /* the callback asked to stop */
    dm_data d;
    dm_model *m;
    dm_pool *pool;
    dm_trainer *tr;
    dm_batcher b;
    dm_train_config tc;
    dm_run_state rs;         /* what the next checkpoint stores */
    FILE *mf;                /* metrics.jsonl */
    dm_batch batch[2];       /* two steps' inputs [local_rows, in], targets [local_rows, out], labels */
    dm_prefetch *pf;         /* prepares the next step's batch while the step runs */
    double *load;            /* [L * E] */
    int in, L, E, side;
    int64_t step_rows;       /* rows of one optimizer step over every rank */
    int64_t local_rows;      /* this rank's share of them */
    int rank, ranks;         /* distributed: this rank, the ranks (0, 1 for one process) */
    double *rank_buf;        /* [ranks * (L * E + 1)] each rank's expert load and resident set (log records) */
    const char *packed_type; /* keep_sparsity: the weight type the packed copy is written in */
} run;

/* the profiler's ops of the run around the step (docs/profiling.md) */
static const dm_span_kind SK_BATCH = {"batch", "data", "rows", "step"};
static const dm_span_kind SK_LOG = {"log", "io", "step", NULL};
static const dm_span_kind SK_EVAL = {"eval", "train", "step", NULL};
static const dm_span_kind SK_CKPT = {"checkpoint write", "io", "step", NULL};

#define ORACLE_SAMPLE 256   /* test rows the routing oracle scores at each evaluation during training */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_join(char *buf, const char *dir, const char *name)
{
    snprintf(buf, RUN_PATH_MAX, "%s/%s", dir, name);   /* dir is checked to leave room */
}

static int is_idx_spec(const char *s) { return !strncmp(s, "fashion-mnist", 13) || !strncmp(s, "mnist", 5); }

/* Each directory made is synced into its parent, so files renamed into it
 * later survive a crash with their path. */
static dm_status mkdir_one(const char *dir, dm_error *err)
{
    if (mkdir(dir, 0777) == 0) return dm_sync_parent(dir, err);
    if (errno == EEXIST) return DM_OK;
    return dm_fail(err, DM_ERR_IO, "cannot create directory %s: %s", dir, strerror(errno));
}

static dm_status mkdir_p(const char *dir, dm_error *err)
{
    char buf[RUN_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            dm_status st = mkdir_one(buf, err);
            if (st) return st;
            *p = '/';
        }
    return mkdir_one(buf, err);
}

/* ---------------------------------------------------------------- options */

void dm_run_opts_init(dm_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->task = DM_RUN_DEFAULT;
    o->holdout = DM_RUN_DEFAULT;
    o->normalize = DM_RUN_DEFAULT;
    o->shuffle = 1;
    o->batch = 256;
    dm_config_default(&o->config);
    o->config.dim = o->config.hidden = o->config.n_layers = DM_RUN_DEFAULT;
    dm_train_config_default(&o->train);
    o->train.lr = 0;          /* by task */
    o->train.warmup = 100;
    o->train.clip = 1.0f;
    o->loss = DM_RUN_DEFAULT;
    o->balance = DM_RUN_DEFAULT;
    o->log_every = o->eval_every = o->checkpoint_every = DM_RUN_DEFAULT;
    o->oracle_rows = 1000;
}

#define BAD_OPT(...) dm_fail(err, DM_ERR_ARG, "dm_run_train: " __VA_ARGS__)

/* The options' own ranges (the train config and the model config are checked
 * where they are used, by the trainer and the model). */
static dm_status check_opts(const dm_run_opts *o, dm_error *err)
{
    const char *dir = o->out ? o->out : o->resume;
    if (!o->data || !*o->data) return BAD_OPT("no data spec");
    if (!dir || !*dir) return BAD_OPT("no output directory (out, or resume)");
    if (strlen(dir) > RUN_PATH_MAX - 64 || (o->resume && strlen(o->resume) > RUN_PATH_MAX - 64))
        return BAD_OPT("directory name too long");
    if (o->task != DM_RUN_DEFAULT && o->task != DM_TASK_CLASSIFY && o->task != DM_TASK_REGRESS)
        return BAD_OPT("unknown task %d", o->task);
    if (!(o->holdout == DM_RUN_DEFAULT || (o->holdout >= 0 && o->holdout < 1)))
        return BAD_OPT("holdout %g must be in [0, 1)", o->holdout);
    if (o->normalize != DM_RUN_DEFAULT && (o->normalize < DM_NORM_NONE || o->normalize > DM_NORM_PIXEL))
        return BAD_OPT("unknown normalize %d", o->normalize);
    if (o->shuffle != 0 && o->shuffle != 1) return BAD_OPT("shuffle %d must be 0 or 1", o->shuffle);
    if (o->aug_shift < 0 || o->aug_shift > 8 || (o->aug_flip != 0 && o->aug_flip != 1) ||
        !(o->aug_drop >= 0 && o->aug_drop < 1))
        return BAD_OPT("augmentation shift %d (0..8), flip %d (0 or 1), drop %g ([0, 1)) out of range", o->aug_shift,
                       o->aug_flip, (double)o->aug_drop);
    if (o->seed > (uint64_t)INT64_MAX) return BAD_OPT("seed %llu is above 2^63 - 1", (unsigned long long)o->seed);
    if (o->batch < 1 || o->batch > (1 << 24)) return BAD_OPT("batch %d must be in 1..16777216", o->batch);
    if (o->model_top_k < 0) return BAD_OPT("model_top_k %d must be >= 0", o->model_top_k);
    if (o->loss != DM_RUN_DEFAULT && o->loss != DM_LOSS_MSE && o->loss != DM_LOSS_CE)
        return BAD_OPT("unknown loss %d", o->loss);
    const int all_bal = DM_BAL_SEED | DM_BAL_SWITCH | DM_BAL_AUX_FREE | DM_BAL_Z;
    if (o->balance != DM_RUN_DEFAULT && (o->balance < 0 || (o->balance & ~all_bal)))
        return BAD_OPT("unknown balance flags 0x%x", (unsigned)o->balance);
    if (o->steps < 0 || o->steps > 2000000000 || o->epochs < 0 || o->epochs > 1000000)
        return BAD_OPT("steps %lld (0..2e9) or epochs %lld (0..1e6) out of range", (long long)o->steps,
                       (long long)o->epochs);
    if (o->steps && o->epochs) return BAD_OPT("give steps or epochs, not both");
    if (o->stop_at < 0) return BAD_OPT("stop_at %lld must be >= 0", (long long)o->stop_at);
    if (o->threads < 0 || o->threads > 1024) return BAD_OPT("threads %d must be in 0..1024", o->threads);
    const int64_t cad[3] = {o->log_every, o->eval_every, o->checkpoint_every}, lo[3] = {1, 0, 1};
    static const char *const cad_name[3] = {"log_every", "eval_every", "checkpoint_every"};
    for (int i = 0; i < 3; i++)
        if (cad[i] != DM_RUN_DEFAULT && (cad[i] < lo[i] || cad[i] > 2000000000))
            return BAD_OPT("%s %lld must be in %lld..2000000000", cad_name[i], (long long)cad[i], (long long)lo[i]);
    if (o->progress_every < 0) return BAD_OPT("progress_every %lld must be >= 0", (long long)o->progress_every);
    if (o->oracle_rows < 0) return BAD_OPT("oracle_rows %lld must be >= 0", (long long)o->oracle_rows);
    if (o->dist < DM_DIST_NONE || o->dist > DM_DIST_ZERO3) return BAD_OPT("unknown distributed mode %d", o->dist);
    if (o->dist != DM_DIST_NONE && !o->comm) return BAD_OPT("distributed mode %s needs a communicator (comm)",
                                                            dm_dist_mode_name(o->dist));
    if (o->expert_parallel < 0 || (o->expert_parallel > 1 && o->dist == DM_DIST_NONE))
        return BAD_OPT("expert_parallel %d needs a distributed mode (--dist dp)", o->expert_parallel);
    return DM_OK;
}

/* ---------------------------------------------------------------- resume */

/* The saved run's state: the checksum is checked, then the version (an older
 * one is refused with what to do instead), then every field. */
static dm_status read_saved(const char *dir, dm_run_state *saved, dm_error *err)
{
    char path[RUN_PATH_MAX], blob[RUN_BLOB_MAX];
    size_t len = 0;
    path_join(path, dir, "checkpoint/state.safetensors");
    dm_status st = dm_checkpoint_blob(path, blob, sizeof blob, &len, err);
    if (st) return st;
    int ver = dm_run_state_version(blob, len);
    if (ver >= 1 && ver < DM_RUN_STATE_VERSION - 1)  /* the version before still reads (run_state.c) */
        return dm_fail(err, DM_ERR_FORMAT, "%s: the checkpoint predates this version of deepmoe (run state version %d, "
                       "this one reads %d): start a new run, or train from its model file with --model "
                       "%s/model.safetensors", path, ver, DM_RUN_STATE_VERSION, dir);
    if (ver > DM_RUN_STATE_VERSION)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "%s: run state version %d is newer than this deepmoe reads (%d)", path,
                       ver, DM_RUN_STATE_VERSION);
    return dm_run_state_from_json(blob, len, path, saved, err);
}

/* A resumed run keeps its own settings: they replace the options'. */
static void apply_saved(dm_run_opts *o, const dm_run_state *s)
{
    o->task = s->task;
    o->seed = s->seed;
    o->holdout = s->holdout;
    o->shuffle = s->shuffle;
    o->batch = s->batch;
    o->aug_shift = s->aug_shift;
    o->aug_flip = s->aug_flip;
    o->aug_drop = s->aug_drop;
    if (o->checkpoint_every == DM_RUN_DEFAULT) o->checkpoint_every = s->checkpoint_every;
    if (o->log_every == DM_RUN_DEFAULT) o->log_every = s->log_every;
    if (o->eval_every == DM_RUN_DEFAULT) o->eval_every = s->eval_every;
}

/* The step of a metrics.jsonl record ({"step":N... or {"eval":true,"step":N...),
 * -1 for a line that is not a whole record (a killed writer's last line). */
static int64_t record_step(const char *line, int *is_eval)
{
    size_t n = strlen(line);
    const char *s = strstr(line, "\"step\":");
    *is_eval = !strncmp(line, "{\"eval\":true,", 14);
    if (n < 2 || line[0] != '{' || line[n - 1] != '\n' || line[n - 2] != '}' || !s) return -1;
    char *end;
    long long v = strtoll(s + 7, &end, 10);
    return end == s + 7 ? -1 : v;
}

/* A resumed run continues after its checkpoint's step: records a killed run
 * wrote past it (and a final evaluation at it, which comes after the last
 * save) would be written again, so they go, atomically. */
static dm_status trim_metrics(const char *path, int64_t step, int64_t total, dm_error *err)
{
    FILE *in = fopen(path, "r");
    if (!in) return DM_OK;   /* none yet */
    enum { LINE_MAX_REC = 1 << 16 };   /* a record is far shorter; a longer line is cut and then dropped */
    char *line = malloc(LINE_MAX_REC);
    dm_atomic_file af;
    dm_status st = line ? dm_atomic_open(&af, path, err) : dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    if (st) {
        free(line);
        fclose(in);
        return st;
    }
    int bad = 0;
    while (!bad && fgets(line, LINE_MAX_REC, in)) {
        int is_eval;
        int64_t s = record_step(line, &is_eval);
        if (s < 0 || s > step || (is_eval && s == step && step == total)) continue;
        bad = fputs(line, af.fp) == EOF;
    }
    bad |= ferror(in);
    fclose(in);
    free(line);
    if (bad) {
        dm_atomic_abort(&af);
        return dm_fail(err, DM_ERR_IO, "%s: cannot rewrite it", path);
    }
    return dm_atomic_commit(&af, err);
}

/* ---------------------------------------------------------------- model */

/* A new model from the options' config, with the task's defaults where it says DM_RUN_DEFAULT. */
static dm_status new_model(run *r, dm_error *err)
{
    const dm_data *d = &r->d;
    dm_config c = r->o.config;
    if (d->task == DM_TASK_CLASSIFY) {
        if (c.dim == DM_RUN_DEFAULT) c.dim = 384;
        if (c.hidden == DM_RUN_DEFAULT) c.hidden = 384;
        if (c.n_layers == DM_RUN_DEFAULT) c.n_layers = 2;
        c.in_dim = d->train.dim;
        c.n_classes = d->n_classes;
    } else {
        if (c.dim == DM_RUN_DEFAULT) c.dim = d->train.dim;
        if (c.hidden == DM_RUN_DEFAULT) c.hidden = 0;   /* dim / 2 */
        if (c.n_layers == DM_RUN_DEFAULT) c.n_layers = 1;
        c.in_dim = c.dim != d->train.dim ? d->train.dim : 0;
        c.n_classes = 0;
        if (d->train.y_dim != c.dim)
            return dm_fail(err, DM_ERR_SHAPE, "regression targets have %d values per row but the model outputs %d "
                           "(the seed layer maps D to D: give --dim %d)", d->train.y_dim, c.dim, d->train.dim);
    }
    if (r->tc.balance & DM_BAL_AUX_FREE) c.selection_bias = 1;
    dm_status st = dm_model_create(&c, NULL, &r->m, err);
    if (!st) dm_model_init_random(r->m, r->o.seed);
    return st;
}

static dm_status check_fit(const dm_model *m, const dm_data *d, const dm_train_config *tc, dm_error *err)
{
    const dm_config *c = dm_model_config(m);
    int in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    if (in != d->train.dim)
        return dm_fail(err, DM_ERR_SHAPE, "the data has %d features per row but the model takes %d", d->train.dim, in);
    if (d->task == DM_TASK_CLASSIFY && !c->n_classes)
        return dm_fail(err, DM_ERR_SHAPE, "the model has no classifier head (n_classes 0); use --task regress");
    if (d->task == DM_TASK_CLASSIFY && out < d->n_classes)
        return dm_fail(err, DM_ERR_SHAPE, "the data has %d classes but the model outputs %d", d->n_classes, out);
    if (d->task == DM_TASK_REGRESS && out != d->train.y_dim)
        return dm_fail(err, DM_ERR_SHAPE, "the targets have %d values per row but the model outputs %d",
                       d->train.y_dim, out);
    if (tc->loss == DM_LOSS_CE && d->task != DM_TASK_CLASSIFY)
        return dm_fail(err, DM_ERR_ARG, "--loss ce needs --task classify");
    if (tc->loss == DM_LOSS_MSE && d->task == DM_TASK_CLASSIFY)
        return dm_fail(err, DM_ERR_ARG, "--loss mse needs --task regress");
    if ((tc->balance & DM_BAL_AUX_FREE) && !c->selection_bias)
        return dm_fail(err, DM_ERR_ARG, "aux_free needs a model with a selection bias (gating.expert_bias); "
                       "start from a new model or one created with --selection-bias");
    return DM_OK;
}

/* The model's input preprocessing. The data stays raw: each batch is scaled
 * by the model's map before the trainer sees it, and the evaluation gives the
 * raw test rows to dm_forward, which scales them as `deepmoe eval`, `infer`
 * and the server do, so the run's evaluation is theirs on the saved model.
 * A resumed run keeps its model file's (the run wrote it; a file without one
 * is an older run's, which scaled the data the set's way); a given model
 * keeps its own unless o->normalize names one; otherwise the map is fitted on
 * the train split by o->normalize or the set's method. */
static dm_status set_preprocess(run *r, dm_error *err)
{
    const dm_run_opts *o = &r->o;
    const char *have;
    dm_model_preprocess(r->m, &have, NULL, NULL);
    if (have && (o->resume || o->normalize == DM_RUN_DEFAULT)) return DM_OK;
    dm_normalize norm = o->resume || o->normalize == DM_RUN_DEFAULT ? dm_data_spec_normalize(o->data)
                                                                    : (dm_normalize)o->normalize;
    if (norm == DM_NORM_NONE) return dm_model_set_preprocess(r->m, "none", NULL, NULL, err);
    float *scale = dm_alloc_array((size_t)r->in, sizeof *scale), *shift = dm_alloc_array((size_t)r->in, sizeof *shift);
    dm_status st = scale && shift ? DM_OK : dm_fail(err, DM_ERR_NOMEM, "out of memory");
    if (!st) {
        dm_preprocess_fit(norm, r->d.train.x, r->d.train.n, r->in, scale, shift);
        st = dm_model_set_preprocess(r->m, dm_normalize_name(norm), scale, shift, err);
    }
    dm_free(scale);
    dm_free(shift);
    return st;
}

/* ---------------------------------------------------------------- progress and metrics */

static void load_stats(const double *load, int L, int E, double *util, double *vio)
{
    *util = *vio = 0;
    for (int l = 0; l < L; l++) {
        *util += dm_expert_utilization(load + l * E, E) / L;
        *vio += dm_max_vio(load + l * E, E) / L;
    }
}

/* ,"key":v, or null when v is not finite (JSON has no NaN or Inf). */
static void json_num(FILE *fp, const char *key, double v)
{
    if (isfinite(v)) fprintf(fp, ",\"%s\":%.6g", key, v);
    else fprintf(fp, ",\"%s\":null", key);
}

static void json_load(FILE *fp, const double *load, int L, int E)
{
    fprintf(fp, ",\"expert_load\":[");
    for (int l = 0; l < L; l++) {
        fprintf(fp, "%s[", l ? "," : "");
        for (int e = 0; e < E; e++) fprintf(fp, "%s%.5f", e ? "," : "", load[l * E + e]);
        fputc(']', fp);
    }
    fputc(']', fp);
}

/* The aux-free selection biases of every layer ("sel_bias":[[...], ...]), if the model has them. */
static void json_biases(FILE *fp, const dm_model *m)
{
    const dm_config *c = dm_model_config(m);
    if (!m->layers[0].sel_bias) return;
    fprintf(fp, ",\"sel_bias\":[");
    for (int l = 0; l < c->n_layers; l++) {
        fprintf(fp, "%s[", l ? "," : "");
        for (int e = 0; e < c->n_experts; e++) fprintf(fp, "%s%.6g", e ? "," : "", m->layers[l].sel_bias[e]);
        fputc(']', fp);
    }
    fputc(']', fp);
}

/* A training record of metrics.jsonl (docs/formats.md). */
static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* "step_ms_p50" and "step_ms_p99" of the interval's step times (the latest STEP_RING of them). */
static void json_step_times(FILE *fp, const double *ring, int64_t n_timed)
{
    int n = (int)DM_MIN(n_timed, (int64_t)STEP_RING);
    if (n <= 0) return;
    double t[STEP_RING];
    memcpy(t, ring, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_dbl);
    json_num(fp, "step_ms_p50", 1e3 * t[(n - 1) / 2]);
    json_num(fp, "step_ms_p99", 1e3 * t[(int)ceil(0.99 * n) - 1]);
}

static void write_log(FILE *fp, const dm_run_progress *p, const dm_model *m, double time_s, double startup_s,
                      const double *ring, int64_t n_timed)
{
    fprintf(fp, "{\"step\":%lld", (long long)p->step);
    json_num(fp, "time_s", time_s);
    if (startup_s >= 0) json_num(fp, "startup_s", startup_s);
    json_step_times(fp, ring, n_timed);
    json_num(fp, "epoch", p->epoch);
    json_num(fp, "loss", p->loss);
    json_num(fp, "balance_loss", p->balance_loss);
    json_num(fp, "lr", p->lr);
    json_num(fp, "grad_norm", p->grad_norm);
    json_num(fp, "rows_per_s", p->rows_per_s);
    if (p->train_accuracy >= 0) json_num(fp, "train_accuracy", p->train_accuracy);
    json_load(fp, p->expert_load, p->n_layers, p->n_experts);
    json_num(fp, "expert_utilization", p->expert_utilization);
    json_num(fp, "max_vio", p->max_vio);
    json_biases(fp, m);
    fprintf(fp, ",\"rss\":%lld,\"rss_peak\":%lld", (long long)p->memory.rss, (long long)p->memory.rss_peak);
    if (p->ranks > 1) {   /* distributed: communication, memory, every rank's load */
        fprintf(fp, ",\"ranks\":%d", p->ranks);
        json_num(fp, "comm_s", p->comm_s);
        json_num(fp, "compute_s", p->compute_s);
        json_num(fp, "comm_share", p->comm_share);
        json_num(fp, "bytes_sent", p->bytes_sent);
        const dm_train_memory *m = &p->memory;
        fprintf(fp, ",\"memory\":{\"n_params\":%lld,\"params\":%lld,\"grads\":%lld,\"moments\":%lld,\"packed\":%lld,\"rss\":%lld,"
                "\"rss_peak\":%lld}", (long long)m->n_params, (long long)m->params, (long long)m->grads, (long long)m->moments,
                (long long)m->packed, (long long)m->rss, (long long)m->rss_peak);
        if (p->rank_load) {
            fprintf(fp, ",\"rank_expert_load\":[");
            for (int q = 0; q < p->ranks; q++) {
                fprintf(fp, "%s{\"rank\":%d", q ? "," : "", q);
                json_load(fp, p->rank_load + (int64_t)q * p->n_layers * p->n_experts, p->n_layers, p->n_experts);
                fprintf(fp, ",\"rss\":%.0f}", p->rank_rss[q]);
            }
            fputc(']', fp);
        }
    }
    fprintf(fp, "}\n");
    fflush(fp);
}

/* An evaluation record of metrics.jsonl. */
static void write_eval(FILE *fp, int64_t step, const dm_eval *ev, const double *load, int L, int E)
{
    fprintf(fp, "{\"eval\":true,\"step\":%lld", (long long)step);
    json_num(fp, "loss", ev->loss);
    /* a classification result has an accuracy (a count, never NaN); otherwise report the MSE */
    if (ev->accuracy >= 0) json_num(fp, "accuracy", ev->accuracy);
    else json_num(fp, "mse", ev->mse);
    json_load(fp, load, L, E);
    json_num(fp, "expert_utilization", ev->expert_utilization);
    json_num(fp, "max_vio", ev->max_vio);
    if (ev->routing_accuracy >= 0) json_num(fp, "routing_accuracy", ev->routing_accuracy);
    if (ev->purity >= 0) json_num(fp, "regime_purity", ev->purity);
    fprintf(fp, "}\n");
    fflush(fp);
}

/* The fields every event carries. */
static dm_run_progress progress(const run *r, dm_run_event ev, int64_t step, int64_t stop)
{
    return (dm_run_progress){
        .event = ev, .step = step, .total_steps = r->tc.total_steps, .stop_step = stop,
        .epoch = (double)step * (double)r->step_rows / (double)r->d.train.n, .data = &r->d, .model = r->m,
        .step_rows = r->step_rows, .threads = dm_pool_size(r->pool), .aug_shift = r->rs.aug_shift,
        .aug_flip = r->rs.aug_flip, .aug_drop = r->rs.aug_drop, .train_accuracy = -1, .n_layers = r->L,
        .n_experts = r->E, .ranks = r->ranks,
    };
}

static void emit(run *r, const dm_run_progress *p)
{
    if (r->rank == 0 && r->cb && r->cb(p, r->user)) r->stop_req = 1;
}

static dm_status evaluate(run *r, int64_t oracle_rows, dm_eval *ev, dm_error *err)
{
    dm_ctx *ctx;
    dm_status st = dm_ctx_create(r->m, r->pool, &ctx, err);
    if (st) return st;
    ev->expert_load = r->load;
    const dm_dataset *t = &r->d.test;
    st = dm_evaluate(ctx, t->x, t->y, r->d.task == DM_TASK_CLASSIFY ? t->labels : NULL, t->regime, t->n, oracle_rows,
                     ev, err);
    dm_ctx_free(ctx);
    return st;
}

/* An evaluation: its metrics.jsonl record and its event. */
static dm_status eval_event_(run *r, int64_t step, int64_t stop, int final, dm_eval *ev, dm_error *err);

static dm_status eval_event(run *r, int64_t step, int64_t stop, int final, dm_eval *ev, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    dm_status st = eval_event_(r, step, stop, final, ev, err);
    dm_span_end(&SK_EVAL, t0, step, 0);
    return st;
}

static dm_status eval_event_(run *r, int64_t step, int64_t stop, int final, dm_eval *ev, dm_error *err)
{
    /* distributed: rank 0 evaluates the gathered model, the others go on to the next collective */
    dm_status st = dm_trainer_gather(r->tr, err);
    /* routing accuracy: the final evaluation on oracle_rows test rows, the ones during
     * training on the same first ORACLE_SAMPLE of them (a series to follow, cheaply) */
    int64_t oracle = final ? r->o.oracle_rows : DM_MIN(r->o.oracle_rows, ORACLE_SAMPLE);
    if (!st && r->rank == 0) st = evaluate(r, oracle, ev, err);
    dm_trainer_release(r->tr);
    if (st || r->rank) return st;
    write_eval(r->mf, step, ev, r->load, r->L, r->E);
    dm_run_progress p = progress(r, DM_RUN_EVAL, step, stop);
    p.eval = ev;
    p.final = final;
    p.expert_load = r->load;
    p.expert_utilization = ev->expert_utilization;
    p.max_vio = ev->max_vio;
    emit(r, &p);
    return DM_OK;
}

/* ---------------------------------------------------------------- save */

/* The model first: a checkpoint then always has a model beside it (of its
 * step or one later), which a resume reads for the config. Each file is
 * replaced atomically (temp file, fsync, rename, fsync of the directory). */
static dm_status save_files(run *r, int64_t stop, dm_error *err);

/* A distributed run gathers the whole state first (collective) and rank 0 writes it. */
static dm_status save_all(run *r, int64_t stop, dm_error *err)
{
    uint64_t t0 = dm_span_begin();
    dm_status st = dm_trainer_gather(r->tr, err);
    if (!st && r->rank == 0) st = save_files(r, stop, err);
    dm_trainer_release(r->tr);
    dm_span_end(&SK_CKPT, t0, dm_trainer_step_count(r->tr), 0);
    return st;
}

static dm_status save_files(run *r, int64_t stop, dm_error *err)
{
    char path[RUN_PATH_MAX], seed[32], holdout[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->rs.seed);
    snprintf(holdout, sizeof holdout, "%.15g", r->rs.holdout);   /* "0.1", unless it would not read back */
    if (strtod(holdout, NULL) != r->rs.holdout) snprintf(holdout, sizeof holdout, "%.17g", r->rs.holdout);
    const char *meta[8] = {TRAIN_SEED_KEY, seed};
    int n_meta = 1;
    if (r->rs.holdout >= 0) {
        meta[2 * n_meta] = TRAIN_HOLDOUT_KEY;
        meta[2 * n_meta++ + 1] = holdout;
    }
    if (r->packed_type) {
        meta[2 * n_meta] = SPARSITY_KEY;
        meta[2 * n_meta++ + 1] = "2:4";
        meta[2 * n_meta] = PACKED_KEY;
        meta[2 * n_meta++ + 1] = r->packed_type;
    }
    path_join(path, r->o.out, "model.safetensors");
    dm_status st = dm_model_save_meta(r->m, path, meta, n_meta, err);
    if (st) return st;
    if (r->packed_type) {  /* the fine-tuned weights packed again (the zeros are the mask's, so nothing moves) */
        dm_quantize_opts q;
        dm_quantize_opts_default(&q);
        q.type = r->packed_type;
        q.isa = r->m->isa;
        dm_model *pk = NULL;
        path_join(path, r->o.out, "model.packed.safetensors");
        st = dm_model_quantize(r->m, &q, &pk, err);
        if (!st) st = dm_model_save_meta(pk, path, meta, n_meta, err);
        dm_model_free(pk);
        if (st) return st;
    }
    path_join(path, r->o.out, "checkpoint");
    if ((st = mkdir_p(path, err))) return st;
    path_join(path, r->o.out, "checkpoint/state.safetensors");
    char *json = dm_run_state_to_json(&r->rs);
    if (!json) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    st = dm_trainer_save(r->tr, path, json, strlen(json), err);
    free(json);
    if (st) return st;
    dm_run_progress p = progress(r, DM_RUN_CHECKPOINT, dm_trainer_step_count(r->tr), stop);
    p.path = path;
    emit(r, &p);
    return DM_OK;
}

dm_status dm_model_train_meta(const char *path, dm_train_meta *tm, dm_error *err)
{
    *tm = (dm_train_meta){.has_seed = 0, .seed = 0, .holdout = -1};
    dm_st_file f;
    dm_status st = dm_st_open(path, &f, err);
    if (st) return st;
    const char *s = dm_st_meta(&f, TRAIN_SEED_KEY), *h = dm_st_meta(&f, TRAIN_HOLDOUT_KEY);
    char *end;
    if (s) {
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || v > (unsigned long long)INT64_MAX)
            st = dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s \"%.32s\" is not a seed", path, TRAIN_SEED_KEY, s);
        tm->has_seed = 1;
        tm->seed = v;
    }
    if (h && !st) {
        double v = strtod(h, &end);
        if (end == h || *end || !(v >= 0 && v < 1))
            st = dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s \"%.32s\" is not a share in [0, 1)", path,
                         TRAIN_HOLDOUT_KEY, h);
        tm->holdout = v;
    }
    dm_st_close(&f);
    if (st) *tm = (dm_train_meta){.has_seed = 0, .seed = 0, .holdout = -1};
    return st;
}

/* ---------------------------------------------------------------- the run */

/* Everything before the first step: data, config, model, trainer, files. */
static dm_status setup(run *r, const dm_run_state *saved, dm_error *err)
{
    dm_run_opts *o = &r->o;
    char path[RUN_PATH_MAX];
    dm_status st;
    dm_task task = o->task >= 0 ? (dm_task)o->task : is_idx_spec(o->data) ? DM_TASK_CLASSIFY : DM_TASK_REGRESS;
    if ((st = dm_data_load_norm(o->data, task, o->seed, o->holdout, DM_NORM_NONE, &r->d, err))) return st;   /* raw */

    dm_train_config *tc = &r->tc;
    *tc = o->train;
    tc->loss = o->loss >= 0 ? (dm_loss_kind)o->loss : task == DM_TASK_CLASSIFY ? DM_LOSS_CE : DM_LOSS_MSE;
    if (!(tc->lr > 0)) tc->lr = task == DM_TASK_CLASSIFY ? 5e-4f : 1e-3f;
    /* classifiers balance their experts DeepSeek-V3's way unless told otherwise */
    tc->balance = o->balance >= 0 ? (unsigned)o->balance
                  : task == DM_TASK_CLASSIFY && !o->model && !o->resume ? DM_BAL_AUX_FREE : 0;
    if (saved) *tc = saved->tc;

    /* the model: resumed, given, or new */
    int keep = o->keep_sparsity;
    const char *from = o->resume ? path : o->model;
    if (o->resume) path_join(path, o->resume, "model.safetensors");
    if (from) {  /* a run that kept sparsity keeps it; a compressed file trains only that way */
        dm_st_file f;
        if ((st = dm_st_open(from, &f, err))) return st;
        const char *sp = dm_st_meta(&f, SPARSITY_KEY), *pt = dm_st_meta(&f, PACKED_KEY);
        const char *wt = dm_st_meta(&f, "deepmoe.wtype"), *rt = dm_st_meta(&f, "deepmoe.router_wtype");
        const char *et = dm_st_meta(&f, "deepmoe.embed_wtype");
        const dm_wtype *ft = wt ? dm_wtype_by_name(wt) : NULL, *frt = rt ? dm_wtype_by_name(rt) : NULL;
        const dm_wtype *fet = et ? dm_wtype_by_name(et) : NULL;
        int typed_e = wt && (!ft || ft->id != DM_WT_F32);
        int typed = typed_e || (rt && (!frt || frt->id != DM_WT_F32)) || (et && (!fet || fet->id != DM_WT_F32));
        /* the packed copy's type: the run's, else the file's if it is a 2:4 type, else nm24 */
        const dm_wtype *t = dm_wtype_by_name(pt ? pt : ft && ft->sparse ? ft->name : "nm24");
        keep |= o->resume && sp && !strcmp(sp, "2:4");  /* a resumed 2:4 run stays one */
        r->packed_type = t ? t->name : NULL;  /* static storage: the type table's name */
        char wname[24];
        snprintf(wname, sizeof wname, "%s", typed_e ? wt : rt ? rt : et ? et : "");
        dm_st_close(&f);
        if (typed && !keep)
            return dm_fail(err, DM_ERR_UNSUPPORTED, "%s holds compressed (%s) expert weights: training needs fp32 "
                           "weights. Dequantize it with deepmoe quantize --type f32, or fine-tune a 2:4 model "
                           "(nm24) with --keep-sparsity", from, wname);
        if (keep && !r->packed_type)
            return dm_fail(err, DM_ERR_FORMAT, "%s: metadata names an unknown weight type", from);
    } else if (keep) {
        return dm_fail(err, DM_ERR_ARG, "keep_sparsity needs a given model (--model PRUNED, from deepmoe quantize "
                       "--type nm24)");
    }
    if (!keep) r->packed_type = NULL;
    if (from) {
        dm_model_opts mo;
        dm_model_opts_default(&mo);
        mo.top_k = o->resume ? 0 : o->model_top_k;
        mo.dequantize = keep;  /* a pruned nm24 file trains as the f32 model of its values */
        st = dm_model_load(from, &mo, &r->m, err);
    } else {
        st = new_model(r, err);
    }
    if (st || (st = check_fit(r->m, &r->d, tc, err))) return st;
    const dm_config *c = dm_model_config(r->m);
    r->in = r->d.train.dim;
    if ((st = set_preprocess(r, err))) return st;
    r->L = c->n_layers;
    r->E = c->n_experts;
    int out = c->n_classes ? c->n_classes : c->dim;

    r->local_rows = (int64_t)o->batch * tc->grad_accum;
    r->step_rows = r->local_rows * r->ranks;
    if (r->d.train.n < r->step_rows)
        return dm_fail(err, DM_ERR_ARG, "the train split has %lld rows, fewer than one step's %lld "
                       "(--batch x --grad-accum%s)", (long long)r->d.train.n, (long long)r->step_rows,
                       r->ranks > 1 ? " x ranks" : "");
    int64_t steps_per_epoch = r->d.train.n / r->step_rows;
    int64_t epochs = o->epochs ? o->epochs : task == DM_TASK_CLASSIFY ? 15 : 10;
    if (!saved) {
        tc->total_steps = o->steps ? o->steps : epochs * steps_per_epoch;
        if (tc->warmup >= tc->total_steps) tc->warmup = tc->total_steps / 10;  /* documented in --help */
    } else if (o->steps) {
        tc->total_steps = o->steps;
    }

    if ((st = dm_pool_create(o->threads, &r->pool, err)) || (st = dm_trainer_create(r->m, tc, r->pool, &r->tr, err)) ||
        (st = dm_batcher_init(&r->b, &r->d.train, o->seed, o->shuffle, err)))
        return st;
    if (r->packed_type && (st = dm_trainer_keep_sparsity(r->tr, err))) {
        dm_error e2 = *err;
        return dm_fail(err, e2.code, "%s: %s", from, e2.msg);
    }
    if (o->dist != DM_DIST_NONE && (st = dm_trainer_distribute(r->tr, o->comm, o->dist, o->expert_parallel, err)))
        return st;
    r->rs = (dm_run_state){.task = task, .seed = o->seed, .holdout = r->d.holdout, .shuffle = o->shuffle,
                           .batch = o->batch};
    if (saved) {
        char blob[RUN_BLOB_MAX];
        size_t len = 0;
        path_join(path, o->resume, "checkpoint/state.safetensors");
        if ((st = dm_trainer_load(r->tr, path, blob, sizeof blob, &len, err))) return st;
        dm_trainer_release(r->tr);   /* distributed: what this rank does not hold */
        if (dm_trainer_step_count(r->tr) > tc->total_steps)
            return dm_fail(err, DM_ERR_ARG, "%s is at step %lld, past --steps %lld", path,
                           (long long)dm_trainer_step_count(r->tr), (long long)tc->total_steps);
        if ((st = dm_batcher_seek(&r->b, saved->epoch, saved->pos, err))) return st;
        r->rs = *saved;
    }
    r->rs.tc = *tc;
    r->rs.checkpoint_every = o->checkpoint_every, r->rs.log_every = o->log_every, r->rs.eval_every = o->eval_every;
    r->rs.aug_shift = o->aug_shift, r->rs.aug_flip = o->aug_flip, r->rs.aug_drop = o->aug_drop;
    /* for the options and for a resumed run's saved augmentation alike */
    r->side = (int)lround(sqrt((double)r->in));
    if ((o->aug_shift || o->aug_flip) && (r->side * r->side != r->in || r->side > 64))
        return dm_fail(err, DM_ERR_ARG, "%s shift/flip augmentation needs square images of at most 64x64; "
                       "rows have %d values", saved ? "the resumed run's" : "--augment", r->in);

    if (r->rank == 0) {   /* a distributed run's files are rank 0's */
        if ((st = mkdir_p(o->out, err))) return st;
        path_join(path, o->out, "metrics.jsonl");
        if (saved && (st = trim_metrics(path, dm_trainer_step_count(r->tr), tc->total_steps, err))) return st;
        if (!(r->mf = fopen(path, saved ? "a" : "w")))
            return dm_fail(err, DM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        dm_batch *b = &r->batch[i];
        b->x = dm_alloc_array2((size_t)r->local_rows, (size_t)r->in, sizeof *b->x);   /* <= the train rows */
        b->y = task == DM_TASK_REGRESS ? dm_alloc_array2((size_t)r->local_rows, (size_t)out, sizeof *b->y) : NULL;
        b->labels = dm_alloc_array((size_t)r->local_rows, sizeof *b->labels);
        ok = ok && b->x && (task != DM_TASK_REGRESS || b->y) && b->labels;
    }
    r->load = calloc((size_t)r->L * (size_t)r->E, sizeof *r->load);
    r->rank_buf = calloc((size_t)r->ranks * ((size_t)r->L * r->E + 1), sizeof *r->rank_buf);
    if (!ok || !r->load || !r->rank_buf)
        return dm_fail(err, DM_ERR_NOMEM, "out of memory for a step of %lld rows", (long long)r->local_rows);
    return DM_OK;
}

/* Distributed: each rank's expert load and resident set, on every rank (an
 * all-reduce of rows each rank fills its own of). */
static dm_status gather_ranks(run *r, dm_error *err)
{
    int64_t LE = (int64_t)r->L * r->E, n = (LE + 1) * r->ranks;
    memset(r->rank_buf, 0, (size_t)n * sizeof *r->rank_buf);
    dm_trainer_expert_load(r->tr, r->rank_buf + r->rank * LE);   /* loads [ranks, L, E], then rss [ranks] */
    int64_t rss, hwm;
    dm_mem_rss(&rss, &hwm);
    r->rank_buf[LE * r->ranks + r->rank] = (double)rss;
    return r->ranks > 1 ? dm_comm_allreduce(r->o.comm, r->rank_buf, n, DM_T_F64, err) : DM_OK;
}

/* The batch of step b->step (0-based) into b: this rank's rows of the step,
 * [rank * local_rows, + local_rows) of the data order and augmentation; raw
 * rows, shifts and flips move raw pixels (background 0), then the model's
 * preprocessing, then input dropout on what the model sees. Runs on the
 * prefetch thread, one step after another in order. */
static void fill_batch(void *ctx, dm_batch *b)
{
    run *r = ctx;
    int64_t step = b->step, row0 = (int64_t)r->rank * r->local_rows, n = r->local_rows;
    uint64_t ts = dm_span_begin();
    dm_batcher_next_slice(&r->b, r->step_rows, row0, n, b->x, b->y, b->labels, NULL);
    b->epoch = r->b.epoch;
    b->pos = r->b.pos;
    b->st = DM_OK;
    if (r->rs.aug_shift || r->rs.aug_flip)
        dm_augment_images_at(b->x, row0, n, r->side, r->rs.aug_shift, r->rs.aug_flip, 0.0f, r->rs.seed, step);
    if (dm_model_preprocess(r->m, NULL, NULL, NULL)) b->st = dm_preprocess_rows(r->m, b->x, n, b->x, &b->err);
    if (!b->st && r->rs.aug_drop > 0)
        dm_augment_dropout_at(b->x, row0 * r->in, n * r->in, r->rs.aug_drop, r->rs.seed, step);
    dm_span_end(&SK_BATCH, ts, n, step + 1);
}

/* The loop, from the trainer's step to stop; then the last save and the final evaluation. */
static dm_status train_loop(run *r, dm_run_result *res, dm_error *err)
{
    const dm_run_opts *o = &r->o;
    dm_status st;
    int64_t step = dm_trainer_step_count(r->tr), first = step;
    int64_t stop = o->stop_at ? DM_MIN(o->stop_at, r->tc.total_steps) : r->tc.total_steps;
    int cls = r->d.task == DM_TASK_CLASSIFY;

    dm_run_progress p = progress(r, DM_RUN_START, step, stop);
    dm_trainer_memory(r->tr, &p.memory);
    dm_trainer_reduce_topology(r->tr, &p.host_ranks, &p.hosts, &p.shared_replica);
    p.resumed = o->resume != NULL;
    p.data_epoch = r->rs.epoch;
    p.data_pos = r->rs.pos;
    emit(r, &p);
    if (r->stop_req) stop = step;

    double t0 = now_s(), t_log = t0, loss_acc = 0, bal_acc = 0;
    int first_log = 1;   /* the first record carries startup_s */
    int64_t rows_log = 0, n_acc = 0, correct_acc = 0;
    dm_step_stats ss = {0};
    dm_comm_stats comm_log;
    dm_trainer_comm_stats(r->tr, &comm_log);
    dm_eval ev;
    if (step < stop) {
        if ((st = dm_prefetch_start(&r->pf, r->batch, fill_batch, r, err))) return st;
        dm_prefetch_request(r->pf, step);
    }
    while (step < stop) {
        dm_batch *bt = dm_prefetch_get(r->pf);
        if (bt->st) return dm_fail(err, bt->st, "the batch of step %lld: %s", (long long)step + 1, bt->err.msg);
        if (step + 1 < stop) dm_prefetch_request(r->pf, step + 1);  /* while this step runs */
        uint64_t ts;
        double ts0 = now_s();
        if ((st = dm_train_step(r->tr, bt->x, bt->y, bt->labels, r->local_rows, &ss, err))) return st;
        r->step_s[r->n_step_s++ % STEP_RING] = now_s() - ts0;
        if (!isfinite(ss.loss) || !isfinite(ss.grad_norm))
            return dm_fail(err, DM_ERR_DIVERGED, "training diverged at step %lld (loss %g, gradient norm %g); "
                           "lower --lr or set --clip (any earlier checkpoint in %s is kept)",
                           (long long)ss.step, ss.loss, ss.grad_norm, o->out);
        step = ss.step;
        r->rs.epoch = bt->epoch;   /* the batcher itself may be a step ahead (the prefetch) */
        r->rs.pos = bt->pos;
        loss_acc += ss.loss;
        bal_acc += ss.balance_loss;
        correct_acc += ss.correct;
        n_acc++;
        rows_log += r->step_rows;
        int log_now = step % o->log_every == 0 || step == stop;
        if (log_now || (o->progress_every && step % o->progress_every == 0)) {
            ts = dm_span_begin();
            double now = now_s();
            p = progress(r, log_now ? DM_RUN_LOG : DM_RUN_STEP, step, stop);
            p.loss = loss_acc / (double)n_acc;
            p.balance_loss = bal_acc / (double)n_acc;
            p.train_accuracy = cls ? (double)correct_acc / ((double)n_acc * (double)r->step_rows) : -1;
            p.lr = ss.lr;
            p.grad_norm = ss.grad_norm;
            p.rows_per_s = (double)rows_log / fmax(now - t_log, 1e-9);
            p.eta_s = (now - t0) / (double)(step - first) * (double)(stop - step);
            dm_trainer_expert_load(r->tr, r->load);
            load_stats(r->load, r->L, r->E, &p.expert_utilization, &p.max_vio);
            p.expert_load = r->load;
            dm_comm_stats cs;
            dm_trainer_comm_stats(r->tr, &cs);
            p.comm_s = cs.seconds - comm_log.seconds;
            p.compute_s = fmax(now - t_log - p.comm_s, 0);
            p.comm_share = p.comm_s / fmax(now - t_log, 1e-9);
            p.bytes_sent = cs.bytes_sent - comm_log.bytes_sent;
            dm_trainer_memory(r->tr, &p.memory);
            if (log_now && r->ranks > 1) {
                if ((st = gather_ranks(r, err))) return st;
                p.rank_load = r->rank_buf;
                p.rank_rss = r->rank_buf + (int64_t)r->ranks * r->L * r->E;
            }
            if (log_now && r->mf) write_log(r->mf, &p, r->m, now - t0, first_log ? t0 - r->t_called : -1, r->step_s, r->n_step_s);
            if (log_now) {
                first_log = 0;
                r->n_step_s = 0;
            }
            emit(r, &p);
            if (log_now) {
                loss_acc = bal_acc = 0;
                n_acc = correct_acc = rows_log = 0;
                t_log = now_s();
                dm_trainer_comm_stats(r->tr, &comm_log);
            }
            dm_span_end(&SK_LOG, ts, step, 0);
        }
        if (o->eval_every && step % o->eval_every == 0 && step < stop && r->d.test.n > 0) {
            if ((st = eval_event(r, step, stop, 0, &ev, err))) return st;
            t_log = now_s();
            dm_trainer_comm_stats(r->tr, &comm_log);
        }
        if (step % o->checkpoint_every == 0 && step < stop && (st = save_all(r, stop, err))) return st;
        if (r->ranks > 1) {   /* every rank stops at the same step: any rank's request counts */
            int64_t req = r->stop_req;
            if ((st = dm_comm_allreduce(o->comm, &req, 1, DM_T_I64, err))) return st;
            r->stop_req = req > 0;
        }
        if (r->stop_req) stop = step;
    }
    res->train_seconds = now_s() - t0;
    dm_prefetch_stop(r->pf);   /* a batch asked for before a stop request is dropped */
    r->pf = NULL;
    if ((st = save_all(r, stop, err))) return st;
    res->step = step;
    res->total_steps = r->tc.total_steps;
    res->steps_run = step - first;
    res->step_rows = r->step_rows;
    res->completed = step >= r->tc.total_steps;
    if (!res->completed || r->d.test.n == 0) return DM_OK;
    if ((st = eval_event(r, step, stop, 1, &ev, err))) return st;
    if (r->rank) return DM_OK;   /* rank 0 evaluated */
    res->evaluated = 1;
    res->eval = ev;
    res->eval.expert_load = NULL;
    return DM_OK;
}

dm_status dm_run_train(const dm_run_opts *opts, dm_run_progress_fn cb, void *user, dm_run_result *res, dm_error *err)
{
    if (!opts || opts->struct_size != sizeof *opts)
        return dm_fail(err, DM_ERR_ARG, "dm_run_train: options of %zu bytes, this library's are %zu: fill them with "
                       "dm_run_opts_init (built against another deepmoe.h?)", opts ? opts->struct_size : 0, sizeof *opts);
    if (res && res->struct_size != sizeof *res)
        return dm_fail(err, DM_ERR_ARG, "dm_run_train: result of %zu bytes, this library's is %zu (set struct_size)",
                       res->struct_size, sizeof *res);
    dm_status st = check_opts(opts, err);
    if (st) return st;
    run *r = calloc(1, sizeof *r);
    if (!r) return dm_fail(err, DM_ERR_NOMEM, "dm_run_train: out of memory");
    r->o = *opts;
    r->t_called = now_s();
    r->cb = cb;
    r->user = user;
    r->rank = r->o.dist != DM_DIST_NONE ? dm_comm_rank(r->o.comm) : 0;
    r->ranks = r->o.dist != DM_DIST_NONE ? dm_comm_size(r->o.comm) : 1;
    if (!r->o.out) r->o.out = r->o.resume;

    /* a resumed run keeps its own settings: read them before anything else */
    dm_run_state saved;
    if (r->o.resume) {
        if ((st = read_saved(r->o.resume, &saved, err))) goto done;
        apply_saved(&r->o, &saved);
    }
    if (r->o.checkpoint_every == DM_RUN_DEFAULT) r->o.checkpoint_every = 1000;
    if (r->o.log_every == DM_RUN_DEFAULT) r->o.log_every = 50;
    if (r->o.eval_every == DM_RUN_DEFAULT) r->o.eval_every = 0;

    dm_run_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    if (!(st = setup(r, r->o.resume ? &saved : NULL, err))) st = train_loop(r, res, err);
    if (r->mf && (ferror(r->mf) | fclose(r->mf)) && !st) {
        st = dm_fail(err, DM_ERR_IO, "%s/metrics.jsonl: write failed", r->o.out);
    }
done:
    dm_prefetch_stop(r->pf);
    dm_batcher_free(&r->b);
    dm_trainer_free(r->tr);
    dm_pool_free(r->pool);
    dm_model_free(r->m);
    dm_data_free(&r->d);
    for (int i = 0; i < 2; i++) {
        dm_free(r->batch[i].x);
        dm_free(r->batch[i].y);
        dm_free(r->batch[i].labels);
    }
    free(r->load);
    free(r->rank_buf);
    free(r);
    return st;
}
