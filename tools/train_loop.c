/* train_loop.c - the body of `deepmoe train`: data, model, trainer, the loop
 * with progress and metrics, evaluation, checkpoints, resume. */
#include "cli.h"
#include "train_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "train"
#define RUN_BLOB_MAX 4096   /* the run state's JSON is ~800 bytes */

static int is_idx_spec(const char *s) { return !strncmp(s, "fashion-mnist", 13) || !strncmp(s, "mnist", 5); }

static void path_join(char *buf, size_t n, const char *dir, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* A new model from the flags, with the task's defaults for flags not given. */
static dm_status new_model(const opts *o, const dm_config *flags, const dm_data *d, dm_train_config *tc,
                           dm_model **m, dm_error *err)
{
    dm_config c = *flags;
    int cls = d->task == DM_TASK_CLASSIFY;
#define SET(flag, field, value) if (!o->cfg_set[(flag) - 1000]) c.field = (value)
    if (cls) {
        SET(OPT_DIM, dim, 384);
        SET(OPT_HIDDEN, hidden, 384);
        c.n_layers = o->layers ? o->layers : 2;
        c.in_dim = d->train.dim;
        c.n_classes = d->n_classes;
    } else {
        SET(OPT_DIM, dim, d->train.dim);
        c.n_layers = o->layers ? o->layers : 1;
        if (c.dim != d->train.dim) c.in_dim = d->train.dim;
        if (d->train.y_dim != c.dim)
            return dm_fail(err, DM_ERR_SHAPE, "regression targets have %d values per row but the model outputs %d "
                           "(the seed layer maps D to D: give --dim %d)", d->train.y_dim, c.dim, d->train.dim);
    }
#undef SET
    if (tc->balance & DM_BAL_AUX_FREE) c.selection_bias = 1;
    dm_status st = dm_model_create(&c, NULL, m, err);
    if (!st) dm_model_init_random(*m, (uint64_t)o->seed);
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

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

static int save_all(dm_trainer *tr, dm_model *m, const char *out, const dm_run_state *rs)
{
    char path[4096];
    dm_error err;
    /* The model first: a checkpoint then always has a model beside it (of
     * its step or one later), which --resume reads for the config. Each file
     * is replaced atomically (temp file, fsync, rename, fsync of the dir). */
    path_join(path, sizeof path, out, "model.safetensors");
    if (dm_model_save(m, path, &err)) return cli_error(CMD, &err);
    path_join(path, sizeof path, out, "checkpoint");
    if (mkdir_p(path)) { fprintf(stderr, "deepmoe train: cannot create %s\n", path); return 1; }
    path_join(path, sizeof path, out, "checkpoint/state.safetensors");
    char *json = dm_run_state_to_json(rs);
    if (!json) { fprintf(stderr, "deepmoe train: out of memory\n"); return 1; }
    dm_status st = dm_trainer_save(tr, path, json, strlen(json), &err);
    free(json);
    if (st) return cli_error(CMD, &err);
    return 0;
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
static int trim_metrics(const char *path, int64_t step, int64_t total)
{
    FILE *in = fopen(path, "r");
    if (!in) return 0;   /* none yet */
    dm_atomic_file af;
    dm_error err;
    if (dm_atomic_open(&af, path, &err)) {
        fclose(in);
        return cli_error(CMD, &err);
    }
    char line[1 << 16];
    int bad = 0;
    while (!bad && fgets(line, sizeof line, in)) {
        int is_eval;
        int64_t s = record_step(line, &is_eval);
        if (s < 0 || s > step || (is_eval && s == step && step == total)) continue;
        bad = fputs(line, af.fp) == EOF;
    }
    bad |= ferror(in);
    fclose(in);
    if (bad) {
        dm_atomic_abort(&af);
        fprintf(stderr, "deepmoe train: %s: cannot rewrite it\n", path);
        return 1;
    }
    return dm_atomic_commit(&af, &err) ? cli_error(CMD, &err) : 0;
}

int train_run(opts *o, const dm_config *flags, int top_k_flag)
{
    dm_error err;
    dm_data d = {0};
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_trainer *tr = NULL;
    dm_batcher b = {0};
    FILE *mf = NULL;
    float *x = NULL, *y = NULL;
    int32_t *labels = NULL;
    double *load = NULL;
    int rc = 1;
    char path[4096];
    int tty = isatty(STDOUT_FILENO);
    double t_start = cli_now();

    /* a resumed run keeps its own settings: read them before anything else */
    dm_run_state saved = {0};
    char blob[RUN_BLOB_MAX];
    if (o->resume) {
        size_t len = 0;
        path_join(path, sizeof path, o->resume, "checkpoint/state.safetensors");
        /* the checksum is checked, then every field, before any is used */
        if (dm_checkpoint_blob(path, blob, sizeof blob, &len, &err) ||
            dm_run_state_from_json(blob, len, path, &saved, &err))
            goto fail;
        o->task = saved.task;
        o->seed = (long long)saved.seed;
        o->shuffle = saved.shuffle;
        o->batch = saved.batch;
        o->grad_accum = saved.tc.grad_accum;
        if (o->ckpt_every < 0) o->ckpt_every = saved.checkpoint_every;
        if (o->log_every < 0) o->log_every = saved.log_every;
        if (o->eval_every < 0) o->eval_every = saved.eval_every;
        printf("resuming %s: its seed, batch, shuffle, augmentation and optimisation settings are kept%s\n",
               o->resume, o->steps ? "; --steps sets the new total" : "");
    }
    if (o->ckpt_every < 0) o->ckpt_every = 1000;   /* the defaults --help gives */
    if (o->log_every < 0) o->log_every = 50;
    if (o->eval_every < 0) o->eval_every = 0;
    dm_task task = o->task >= 0 ? (dm_task)o->task : is_idx_spec(o->data) ? DM_TASK_CLASSIFY : DM_TASK_REGRESS;
    if (dm_data_load(o->data, task, (uint64_t)o->seed, &d, &err)) goto fail;

    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.loss = o->loss >= 0 ? (dm_loss_kind)o->loss : task == DM_TASK_CLASSIFY ? DM_LOSS_CE : DM_LOSS_MSE;
    tc.lr = o->lr > 0 ? o->lr : task == DM_TASK_CLASSIFY ? 5e-4f : 1e-3f;
    tc.weight_decay = o->wd;
    tc.beta1 = o->b1;
    tc.beta2 = o->b2;
    tc.eps = o->eps;
    tc.warmup = o->warmup;
    tc.schedule = (dm_schedule)o->schedule;
    tc.clip = o->clip;
    tc.grad_accum = o->grad_accum;
    tc.bias_update = o->bias_update;
    tc.label_smoothing = o->label_smoothing;
    tc.dropout = o->dropout;
    /* classifiers balance their experts DeepSeek-V3's way unless told otherwise */
    const char *balance = o->balance ? o->balance : task == DM_TASK_CLASSIFY && !o->model && !o->resume ? "aux_free" : NULL;
    if (balance && parse_balance(balance, &tc)) {
        rc = cli_usage(CMD, "--balance '%s': expected none or a list of seed, switch, aux_free, z_loss", balance);
        goto done;
    }
    if (o->bal_coef >= 0) tc.coef_seed = tc.coef_switch = tc.coef_z = o->bal_coef;
    if (o->resume) tc = saved.tc;

    /* the model: resumed, given, or new */
    if (o->resume) {
        path_join(path, sizeof path, o->resume, "model.safetensors");
        if (dm_model_load(path, NULL, &m, &err)) goto fail;
    } else if (o->model) {
        dm_model_opts mo;
        dm_model_opts_default(&mo);
        mo.top_k = top_k_flag;
        if (dm_model_load(o->model, &mo, &m, &err)) goto fail;
    } else if (new_model(o, flags, &d, &tc, &m, &err)) {
        goto fail;
    }
    if (check_fit(m, &d, &tc, &err)) goto fail;
    const dm_config *c = dm_model_config(m);
    int in = d.train.dim, out = c->n_classes ? c->n_classes : c->dim, L = c->n_layers, E = c->n_experts;

    int64_t step_rows = (int64_t)o->batch * o->grad_accum;
    if (d.train.n < step_rows) {
        fprintf(stderr, "deepmoe train: the train split has %lld rows, fewer than one step's %lld (--batch x --grad-accum)\n",
                (long long)d.train.n, (long long)step_rows);
        goto done;
    }
    int64_t steps_per_epoch = d.train.n / step_rows;
    int64_t epochs = o->epochs ? o->epochs : task == DM_TASK_CLASSIFY ? 15 : 10;
    if (!o->resume) {
        tc.total_steps = o->steps ? o->steps : epochs * steps_per_epoch;
        if (tc.warmup >= tc.total_steps) tc.warmup = tc.total_steps / 10;  /* documented in --help */
    } else if (o->steps) {
        tc.total_steps = o->steps;
    }

    if (dm_pool_create(o->threads, &pool, &err) || dm_trainer_create(m, &tc, pool, &tr, &err)) goto fail;
    if (dm_batcher_init(&b, &d.train, (uint64_t)o->seed, o->shuffle, &err)) goto fail;
    dm_run_state rs = {.task = task, .seed = (uint64_t)o->seed, .shuffle = o->shuffle, .batch = o->batch, .tc = tc};
    rs.checkpoint_every = o->ckpt_every, rs.log_every = o->log_every, rs.eval_every = o->eval_every;
    if (o->resume) {
        size_t len = 0;
        path_join(path, sizeof path, o->resume, "checkpoint/state.safetensors");
        if (dm_trainer_load(tr, path, blob, sizeof blob, &len, &err)) goto fail;
        if (dm_trainer_step_count(tr) > tc.total_steps) {
            fprintf(stderr, "deepmoe train: %s is at step %lld, past --steps %lld\n", path,
                    (long long)dm_trainer_step_count(tr), (long long)tc.total_steps);
            goto done;
        }
        if (dm_batcher_seek(&b, saved.epoch, saved.pos, &err)) goto fail;
        rs = saved;
        rs.tc = tc;
        rs.checkpoint_every = o->ckpt_every, rs.log_every = o->log_every, rs.eval_every = o->eval_every;
    }
    if (mkdir_p(o->out)) {
        fprintf(stderr, "deepmoe train: cannot create directory %s\n", o->out);
        goto done;
    }
    path_join(path, sizeof path, o->out, "metrics.jsonl");
    if (o->resume && trim_metrics(path, dm_trainer_step_count(tr), tc.total_steps)) goto done;
    mf = fopen(path, o->resume ? "a" : "w");
    if (!mf) {
        fprintf(stderr, "deepmoe train: cannot write %s\n", path);
        goto done;
    }
    x = dm_alloc_array2((size_t)step_rows, (size_t)in, sizeof *x);   /* step_rows <= the train split's rows */
    y = task == DM_TASK_REGRESS ? dm_alloc_array2((size_t)step_rows, (size_t)out, sizeof *y) : NULL;
    labels = dm_alloc_array((size_t)step_rows, sizeof *labels);
    load = malloc((size_t)L * E * sizeof *load);
    if (!x || (task == DM_TASK_REGRESS && !y) || !labels || !load) {
        fprintf(stderr, "deepmoe train: out of memory\n");
        goto done;
    }

    /* augmentation: comma list of shift=N, flip, drop=P (shift and flip: square images only) */
    int aug_shift = 0, aug_flip = 0, side = (int)lround(sqrt((double)in));
    float aug_drop = 0;
    const char *aug = o->augment && !o->resume ? o->augment : "none";
    if (o->resume) {
        aug_shift = saved.aug_shift;
        aug_flip = saved.aug_flip;
        aug_drop = saved.aug_drop;
    }
    if (strcmp(aug, "none")) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", aug);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            int ok = 1;
            if (!strncmp(tok, "shift=", 6)) ok = cli_int(tok + 6, 0, 8, &aug_shift) == 0;
            else if (!strcmp(tok, "flip")) aug_flip = 1;
            else if (!strncmp(tok, "drop=", 5)) ok = cli_float(tok + 5, &aug_drop) == 0 && aug_drop >= 0 && aug_drop < 1;
            else ok = 0;
            if (!ok) {
                rc = cli_usage(CMD, "--augment '%s': expected none or a list of shift=N (0..8), flip, drop=P (0..1)", aug);
                goto done;
            }
        }
    }
    /* for the flags and for a resumed run's saved augmentation alike */
    if ((aug_shift || aug_flip) && (side * side != in || side > 64)) {
        fprintf(stderr, "deepmoe train: %s shift/flip augmentation needs square images of at most 64x64; rows have %d values\n",
                o->resume ? "the resumed run's" : "--augment", in);
        goto done;
    }

    rs.aug_shift = aug_shift;
    rs.aug_flip = aug_flip;
    rs.aug_drop = aug_drop;
    int64_t step = dm_trainer_step_count(tr), first = step, stop = o->stop_at ? DM_MIN(o->stop_at, tc.total_steps) : tc.total_steps;
    printf("training %s on %s: %lld train rows, %lld test rows, %lld steps of %lld rows (%.2f epochs), %d threads\n",
           c->n_classes ? "classifier" : "regressor", d.name, (long long)d.train.n, (long long)d.test.n,
           (long long)tc.total_steps, (long long)step_rows, (double)tc.total_steps * step_rows / d.train.n,
           dm_pool_size(pool));
    printf("model: in %d -> D=%d, %d MoE layer(s) E=%d k=%d H=%d %s/%s%s%s, %lld parameters\n", in, c->dim, L, E,
           c->top_k, c->hidden, dm_router_name(c->router), dm_expert_name(c->expert),
           c->n_classes ? ", head " : "", c->n_classes ? "LayerNorm+Linear" : "", (long long)dm_model_param_count(m));
    if (aug_shift || aug_flip || aug_drop > 0)
        printf("augmentation: shifts up to %d pixels%s, input dropout %.2f\n", aug_shift, aug_flip ? ", left-right flips" : "",
               (double)aug_drop);
    if (step > 0) printf("resumed at step %lld (epoch %lld, row %lld)\n", (long long)step, (long long)rs.epoch, (long long)rs.pos);
    fflush(stdout);

    double t0 = cli_now(), t_log = t0, loss_acc = 0, bal_acc = 0;
    int64_t rows_log = 0, n_acc = 0, correct_acc = 0;
    dm_step_stats st = {0};
    while (step < stop) {
        dm_batcher_next(&b, step_rows, x, y, labels, NULL);
        if (aug_shift || aug_flip) dm_augment_images(x, step_rows, side, aug_shift, aug_flip, (uint64_t)o->seed, step);
        if (aug_drop > 0) dm_augment_dropout(x, step_rows * in, aug_drop, (uint64_t)o->seed, step);
        if (dm_train_step(tr, x, y, labels, step_rows, &st, &err)) goto fail;
        if (!isfinite(st.loss) || !isfinite(st.grad_norm)) {
            if (tty) printf("\n");
            fprintf(stderr, "deepmoe train: training diverged at step %lld (loss %g, gradient norm %g); "
                            "lower --lr or set --clip (any earlier checkpoint in %s is kept)\n",
                    (long long)st.step, st.loss, st.grad_norm, o->out);
            goto done;
        }
        step = st.step;
        rs.epoch = b.epoch;
        rs.pos = b.pos;
        loss_acc += st.loss;
        bal_acc += st.balance_loss;
        correct_acc += st.correct;
        n_acc++;
        rows_log += step_rows;
        int log_now = step % o->log_every == 0 || step == stop;
        double now = cli_now();
        if (log_now || (tty && (step % 5 == 0))) {
            double rps = rows_log / fmax(now - t_log, 1e-9);
            double epoch = (double)step * step_rows / d.train.n;
            double acc = task == DM_TASK_CLASSIFY ? (double)correct_acc / ((double)n_acc * step_rows) : -1;
            double util, vio;
            dm_trainer_expert_load(tr, load);
            load_stats(load, L, E, &util, &vio);
            char eta[32], bars[128], accs[32] = "";
            fmt_eta(eta, sizeof eta, (now - t0) / (double)(step - first) * (double)(stop - step));
            bar(bars, load, E);
            if (acc >= 0) snprintf(accs, sizeof accs, " acc %.3f", acc);
            if (tty)
                printf("\rstep %lld/%lld  epoch %.2f  loss %.4f %s  %.0f rows/s  ETA %s  load |%s|   ",
                       (long long)step, (long long)tc.total_steps, epoch, loss_acc / n_acc, accs, rps, eta, bars);
            if (log_now) {
                if (!tty)
                    printf("step %lld/%lld epoch %.2f loss %.4f%s rows/s %.0f util %.3f ETA %s\n",
                           (long long)step, (long long)tc.total_steps, epoch, loss_acc / n_acc, accs, rps, util, eta);
                fprintf(mf, "{\"step\":%lld", (long long)step);
                json_num(mf, "epoch", epoch);
                json_num(mf, "loss", loss_acc / n_acc);
                json_num(mf, "balance_loss", bal_acc / n_acc);
                json_num(mf, "lr", st.lr);
                json_num(mf, "grad_norm", st.grad_norm);
                json_num(mf, "rows_per_s", rps);
                if (acc >= 0) json_num(mf, "train_accuracy", acc);
                fprintf(mf, ",\"expert_load\":");
                json_load(mf, load, L, E);
                json_num(mf, "expert_utilization", util);
                json_num(mf, "max_vio", vio);
                fprintf(mf, "}\n");
                fflush(mf);
                loss_acc = bal_acc = 0;
                n_acc = correct_acc = rows_log = 0;
                t_log = cli_now();
            }
            fflush(stdout);
        }
        if (o->eval_every && step % o->eval_every == 0 && step < stop && d.test.n > 0) {
            dm_eval ev;
            if (evaluate(CMD, m, pool, &d, 0, &ev, load)) goto done;
            eval_json(mf, step, &ev, load, L, E);
            if (tty) printf("\n");
            printf("eval step %lld: loss %.4f%s%.4f utilization %.3f\n", (long long)step, ev.loss,
                   ev.accuracy >= 0 ? " accuracy " : " mse ", ev.accuracy >= 0 ? ev.accuracy : ev.mse,
                   ev.expert_utilization);
            t_log = cli_now();
        }
        if (step % o->ckpt_every == 0 && step < stop && save_all(tr, m, o->out, &rs)) goto done;
    }
    if (tty) printf("\n");
    double train_s = cli_now() - t0;
    if (save_all(tr, m, o->out, &rs)) goto done;
    if (step < tc.total_steps) {
        printf("stopped at step %lld of %lld; continue with --resume %s\n", (long long)step, (long long)tc.total_steps, o->out);
        rc = 0;
        goto done;
    }
    dm_eval ev;
    if (d.test.n == 0) {
        printf("the test split is empty: no evaluation\ntrain time %.1f s\n", train_s);
        rc = 0;
        goto done;
    }
    if (evaluate(CMD, m, pool, &d, 1000, &ev, load)) goto done;
    eval_json(mf, step, &ev, load, L, E);
    printf("test: loss %.4f", ev.loss);
    if (ev.accuracy >= 0) printf(", accuracy %.4f", ev.accuracy);
    if (ev.mse >= 0) printf(", mse %.5f", ev.mse);
    printf(", expert utilization %.3f, MaxVio %.3f", ev.expert_utilization, ev.max_vio);
    if (ev.routing_accuracy >= 0) printf(", routing accuracy %.3f (%lld rows)", ev.routing_accuracy, (long long)ev.oracle_rows);
    if (ev.purity >= 0) printf(", regime purity %.3f", ev.purity);
    printf("\ntrain time %.1f s (%.0f rows/s), total %.1f s\n", train_s,
           (double)(step - first) * step_rows / fmax(train_s, 1e-9), cli_now() - t_start);
    if (!strncmp(d.name, "fashion-mnist", 13) && ev.accuracy >= 0)
        printf("Fashion-MNIST benchmark (non-convolutional): MLP 256-128-100 0.883, SVC 0.897, XGBoost 0.898; "
               "deepmoe %.4f\n", ev.accuracy);
    printf("wrote %s/model.safetensors, %s/checkpoint/, %s/metrics.jsonl\n", o->out, o->out, o->out);
    rc = 0;
    goto done;
fail:
    rc = cli_error(CMD, &err);
done:
    if (mf) fclose(mf);
    dm_batcher_free(&b);
    dm_trainer_free(tr);
    dm_pool_free(pool);
    dm_model_free(m);
    dm_data_free(&d);
    free(x); free(y); free(labels); free(load);
    return rc;
}
