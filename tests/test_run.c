/* test_run.c - the run API (deepmoe/train.h) on tiny synthetic data: the
 * progress events a run reports, resume and a callback's stop giving the
 * bytes of an uninterrupted run, the held-out split, the training seed in the
 * model file, and the refusals (options of another size, a diverging run, a
 * checkpoint of an older run-state version), through the public header only. */
#include "test.h"

#include <stdlib.h>

#define SYN "synthetic:regimes=4,dim=8,rows=400"

/* A small regression run into tmpdir/name: 24 steps of 16 rows. */
static dm_run_opts tiny(const char *name)
{
    static char dirs[8][1024];
    static int slot;
    char *dir = dirs[slot++ % 8];
    snprintf(dir, 1024, "%s/%s", dm_test_tmpdir(), name);
    dm_run_opts o;
    dm_run_opts_init(&o);
    o.data = SYN;
    o.out = dir;
    o.config.n_experts = 4;
    o.config.hidden = 8;
    o.batch = 16;
    o.steps = 24;
    o.train.warmup = 3;
    o.log_every = 5;
    o.checkpoint_every = 10;
    o.eval_every = 12;
    o.threads = 1;
    o.seed = 5;
    return o;
}

typedef struct counts {
    int n[5];                /* per dm_run_event */
    int64_t last_log, finals;
    int stop_after;          /* DM_RUN_LOG events before asking to stop (0 = never) */
    int ordered;             /* START came first, steps never went back */
    int64_t last_step;
} counts;

static int count(const dm_run_progress *p, void *user)
{
    counts *c = user;
    if ((p->event == DM_RUN_START) != (c->n[0] + c->n[1] + c->n[2] + c->n[3] + c->n[4] == 0) || p->step < c->last_step)
        c->ordered = 0;
    c->last_step = p->step;
    c->n[p->event]++;
    if (p->event == DM_RUN_LOG) c->last_log = p->step;
    if (p->event == DM_RUN_EVAL && p->final) c->finals++;
    return c->stop_after && p->event == DM_RUN_LOG && c->n[DM_RUN_LOG] >= c->stop_after;
}


static int same_file(const char *dir_a, const char *dir_b, const char *name)
{
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/%s", dir_a, name);
    snprintf(pb, sizeof pb, "%s/%s", dir_b, name);
    size_t na, nb;
    unsigned char *a = dm_test_slurp(pa, &na), *b = dm_test_slurp(pb, &nb);
    int same = a && b && na == nb && !memcmp(a, b, na);
    free(a);
    free(b);
    return same;
}

static int lines(const char *dir, const char *name)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t n;
    unsigned char *s = dm_test_slurp(p, &n);
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    free(s);
    return k;
}

/* Every event once per cadence, in order; the files and the result agree. */
static void test_run_events(dm_t *t)
{
    dm_run_opts o = tiny("events");
    counts c = {.ordered = 1};
    dm_run_result r = {.struct_size = sizeof r};
    dm_error err;
    CHECK_OK(t, dm_run_train(&o, count, &c, &r, &err), &err);
    /* logs at 5, 10, 15, 20 and the last step 24; evaluations at 12 and the final one;
     * checkpoints at 10, 20 and the end */
    CHECK(t, c.n[DM_RUN_START] == 1 && c.n[DM_RUN_LOG] == 5 && c.last_log == 24 && c.n[DM_RUN_EVAL] == 2 &&
          c.finals == 1 && c.n[DM_RUN_CHECKPOINT] == 3 && c.n[DM_RUN_STEP] == 0 && c.ordered,
          "start %d log %d (last %lld) eval %d (final %lld) checkpoint %d step %d ordered %d", c.n[0], c.n[2],
          (long long)c.last_log, c.n[3], (long long)c.finals, c.n[4], c.n[1], c.ordered);
    CHECK(t, r.completed && r.evaluated && r.step == 24 && r.total_steps == 24 && r.steps_run == 24 && r.step_rows == 16,
          "result: completed %d evaluated %d step %lld", r.completed, r.evaluated, (long long)r.step);
    CHECK(t, r.eval.mse > 0 && r.eval.routing_accuracy >= 0 && r.eval.expert_load == NULL, "final eval mse %g",
          r.eval.mse);
    CHECK(t, lines(o.out, "metrics.jsonl") == 7, "metrics.jsonl: %d lines (5 logs, 2 evaluations)",
          lines(o.out, "metrics.jsonl"));
    /* progress_every adds STEP events between the logs */
    dm_run_opts o2 = tiny("events_step");
    o2.progress_every = 2;
    counts c2 = {.ordered = 1};
    CHECK_OK(t, dm_run_train(&o2, count, &c2, NULL, &err), &err);
    CHECK(t, c2.n[DM_RUN_STEP] == 9, "steps 2..22 even, not at 10 or 20: %d STEP events", c2.n[DM_RUN_STEP]);
    CHECK(t, same_file(o.out, o2.out, "model.safetensors"), "progress events change nothing");
}

/* N straight == N/2, then resume (through the API) for the rest: the same bytes. */
static void test_run_resume_bit_exact(dm_t *t)
{
    dm_run_opts a = tiny("straight"), b = tiny("halves");
    dm_error err;
    CHECK_OK(t, dm_run_train(&a, NULL, NULL, NULL, &err), &err);
    b.stop_at = 11;
    dm_run_result r = {.struct_size = sizeof r};
    CHECK_OK(t, dm_run_train(&b, NULL, NULL, &r, &err), &err);
    CHECK(t, !r.completed && r.step == 11 && !r.evaluated, "stopped: completed %d step %lld", r.completed,
          (long long)r.step);
    dm_run_opts c;
    dm_run_opts_init(&c);
    c.data = SYN;
    c.resume = b.out;
    c.threads = 2;   /* any thread count gives the same bytes */
    counts n = {.ordered = 1};
    CHECK_OK(t, dm_run_train(&c, count, &n, &r, &err), &err);
    CHECK(t, r.completed && r.steps_run == 13 && r.evaluated, "resumed: completed %d ran %lld", r.completed,
          (long long)r.steps_run);
    CHECK(t, same_file(a.out, b.out, "model.safetensors") && same_file(a.out, b.out, "checkpoint/state.safetensors"),
          "model and checkpoint bytes of the resumed run differ from the straight run's");
    /* the resumed run kept its cadence: logs 15, 20 and 24 after 5, 10 and the stop at 11; evaluations at 12, 24 */
    CHECK(t, n.n[DM_RUN_LOG] == 3 && lines(b.out, "metrics.jsonl") == 8, "resumed logs %d, metrics lines %d",
          n.n[DM_RUN_LOG], lines(b.out, "metrics.jsonl"));
}

/* A callback that asks to stop: the checkpoint is written and a resume finishes exactly. */
static void test_run_callback_stop(dm_t *t)
{
    dm_run_opts a = tiny("stop_ref"), b = tiny("stop");
    dm_error err;
    CHECK_OK(t, dm_run_train(&a, NULL, NULL, NULL, &err), &err);
    counts c = {.ordered = 1, .stop_after = 3};
    dm_run_result r = {.struct_size = sizeof r};
    CHECK_OK(t, dm_run_train(&b, count, &c, &r, &err), &err);
    CHECK(t, !r.completed && r.step == 15 && c.n[DM_RUN_CHECKPOINT] == 2, "stopped at %lld, %d checkpoints",
          (long long)r.step, c.n[DM_RUN_CHECKPOINT]);
    dm_run_opts o;
    dm_run_opts_init(&o);
    o.data = SYN;
    o.resume = b.out;
    CHECK_OK(t, dm_run_train(&o, NULL, NULL, &r, &err), &err);
    CHECK(t, r.completed && same_file(a.out, b.out, "model.safetensors"), "stop + resume == straight");
}

/* holdout: rows held out of a set without a test split, 0 = every row trains and nothing is evaluated. */
static void test_run_holdout(dm_t *t)
{
    dm_error err;
    dm_data d;
    CHECK_OK(t, dm_data_load_holdout(SYN, DM_TASK_REGRESS, 1, 0.25, &d, &err), &err);
    CHECK(t, d.train.n == 300 && d.test.n == 100 && d.holdout == 0.25, "0.25: %lld/%lld", (long long)d.train.n,
          (long long)d.test.n);
    dm_data_free(&d);
    CHECK_OK(t, dm_data_load(SYN, DM_TASK_REGRESS, 1, &d, &err), &err);
    CHECK(t, d.train.n == 360 && d.test.n == 40 && d.holdout == 0.1, "default: %lld/%lld", (long long)d.train.n,
          (long long)d.test.n);
    dm_data_free(&d);
    CHECK(t, dm_data_load_holdout(SYN ",test=0.2", DM_TASK_REGRESS, 1, 0.1, &d, &err) == DM_ERR_ARG &&
          strstr(err.msg, "disagree"), "test= and holdout disagree: %s", err.msg);
    CHECK_OK(t, dm_data_load_holdout(SYN ",test=0.2", DM_TASK_REGRESS, 1, 0.2, &d, &err), &err);
    dm_data_free(&d);
    CHECK(t, dm_data_spec_holds_out(SYN) && dm_data_spec_holds_out("x.npy,y.npy") &&
          !dm_data_spec_holds_out("a.npy,b.npy,c.npy,d.npy") && !dm_data_spec_holds_out("fashion-mnist"),
          "which specs hold rows out");

    dm_run_opts o = tiny("holdout0");
    o.holdout = 0;
    counts c = {.ordered = 1};
    dm_run_result r = {.struct_size = sizeof r};
    CHECK_OK(t, dm_run_train(&o, count, &c, &r, &err), &err);
    CHECK(t, r.completed && !r.evaluated && c.n[DM_RUN_EVAL] == 0, "holdout 0: evaluated %d, %d evaluations",
          r.evaluated, c.n[DM_RUN_EVAL]);
    dm_train_meta tm;
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", o.out);
    CHECK_OK(t, dm_model_train_meta(path, &tm, &err), &err);
    CHECK(t, tm.has_seed && tm.seed == 5 && tm.holdout == 0, "model metadata: seed %d/%llu holdout %g", tm.has_seed,
          (unsigned long long)tm.seed, tm.holdout);
    /* a file dm_model_save wrote records no run */
    dm_model *m;
    CHECK_OK(t, dm_model_load(path, NULL, &m, &err), &err);
    snprintf(path, sizeof path, "%s/plain.safetensors", o.out);
    CHECK_OK(t, dm_model_save(m, path, &err), &err);
    dm_model_free(m);
    CHECK_OK(t, dm_model_train_meta(path, &tm, &err), &err);
    CHECK(t, !tm.has_seed && tm.holdout == -1, "plain model: seed %d holdout %g", tm.has_seed, tm.holdout);
}

static void test_run_refusals(dm_t *t)
{
    dm_error err;
    dm_run_opts o = tiny("refused");
    o.struct_size = sizeof o - 8;
    CHECK(t, dm_run_train(&o, NULL, NULL, NULL, &err) == DM_ERR_ARG && strstr(err.msg, "dm_run_opts_init"),
          "another struct size: %s", err.msg);
    o = tiny("refused");
    dm_run_result r = {.struct_size = 3};
    CHECK(t, dm_run_train(&o, NULL, NULL, &r, &err) == DM_ERR_ARG, "result size: %s", err.msg);
    o.batch = 0;
    CHECK(t, dm_run_train(&o, NULL, NULL, NULL, &err) == DM_ERR_ARG && strstr(err.msg, "batch 0"), "batch: %s", err.msg);
    o = tiny("refused");
    o.holdout = 1.5;
    CHECK(t, dm_run_train(&o, NULL, NULL, NULL, &err) == DM_ERR_ARG && strstr(err.msg, "holdout"), "holdout: %s",
          err.msg);
    o = tiny("refused");
    o.steps = 10, o.epochs = 2;
    CHECK(t, dm_run_train(&o, NULL, NULL, NULL, &err) == DM_ERR_ARG, "steps and epochs: %s", err.msg);

    /* divergence is a status of its own, at the step where it happened */
    o = tiny("diverged");
    o.train.lr = 1e6f, o.train.clip = 0, o.train.warmup = 0, o.steps = 50;
    dm_status s = dm_run_train(&o, NULL, NULL, NULL, &err);
    CHECK(t, s == DM_ERR_DIVERGED && strstr(err.msg, "diverged at step"), "%s: %s", dm_status_name(s), err.msg);

    /* a checkpoint whose run state is an older version: refused, saying what to do */
    o = tiny("old_state");
    o.steps = 5;
    CHECK_OK(t, dm_run_train(&o, NULL, NULL, NULL, &err), &err);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", o.out);
    dm_model *m = NULL;
    dm_trainer *tr = NULL;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 5;
    CHECK_OK(t, dm_model_load(path, NULL, &m, &err), &err);
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    static const char old[] = "{\"version\":2,\"task\":\"regress\",\"epoch\":0,\"pos\":80}";
    snprintf(path, sizeof path, "%s/checkpoint/state.safetensors", o.out);
    CHECK_OK(t, dm_trainer_save(tr, path, old, strlen(old), &err), &err);
    dm_trainer_free(tr);
    dm_model_free(m);
    dm_run_opts re;
    dm_run_opts_init(&re);
    re.data = SYN;
    re.resume = o.out;
    s = dm_run_train(&re, NULL, NULL, NULL, &err);
    CHECK(t, s == DM_ERR_FORMAT && strstr(err.msg, "predates this version of deepmoe") &&
          strstr(err.msg, "run state version 2") && strstr(err.msg, "--model") && strstr(err.msg, "start a new run"),
          "%s: %s", dm_status_name(s), err.msg);
}

void suite_run(dm_t *t)
{
    DM_RUN(t, test_run_events);
    DM_RUN(t, test_run_resume_bit_exact);
    DM_RUN(t, test_run_callback_stop);
    DM_RUN(t, test_run_holdout);
    DM_RUN(t, test_run_refusals);
}
