/* test_train_parity.c - deepmoe's trainer against PyTorch trajectories.
 *
 * tests/gen_train_fixtures.py trained the seed layer (D=16, E=4, k=2, H=8) in
 * float64 PyTorch for 10 AdamW steps on one batch of 32 rows and wrote, per
 * case NAME: the initial model train_NAME.safetensors, inputs and targets
 * train_NAME.x.npy / .y.npy, the training config train_NAME.cfg.json, the
 * per-step log train_NAME.log.npy [steps, 4] (MSE, balance loss, gradient
 * norm before clipping, learning rate) and the trained model
 * train_NAME.final.safetensors. Each case loads the model for every ISA the
 * CPU has, trains it with a pool of 1 and of 2 threads (the full batch every
 * step, MSE to the targets), and checks every step's statistics to 1e-4
 * relative (a balance loss of 0 must be exactly 0) and every trained tensor
 * to 1e-4 normalized error. The generator keeps every routing decision, ReLU
 * kink and LayerNorm variance of the trajectory away from float32 trouble and
 * checks that float32 PyTorch follows the float64 trajectory to 2e-5. The
 * cases (none, seed, switch, aux_free, z, all, accum, accum_bal, bf16) are
 * listed in the generator's docstring. The bf16 case ("precision": "bf16" in
 * its cfg.json) trains with --precision bf16 against PyTorch running the same
 * bf16-operand GEMMs (the same tolerances: its fp32 trajectory is 3e-4 away,
 * so an fp32 run fails them), and its loss and gradient norm against
 * torch.autocast(bfloat16)'s own trajectory (train_bf16.autocast.npy, which
 * also rounds each Linear's output) to AUTOCAST_TOL. */
#include "test.h"

#include <jansson.h>
#include <stdlib.h>

#define LOG_TOL 1e-4     /* per-step statistics, relative */
#define WEIGHT_TOL 1e-4  /* trained tensors, normalized (dm_test_relerr) */
#define AUTOCAST_TOL 3e-3      /* bf16 case: loss vs autocast's, relative (measured 3.7e-4) */
#define AUTOCAST_NORM_TOL 5e-2 /* bf16 case: gradient norm vs autocast's (measured 8.5e-3) */

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

#define REGEN "regenerate with /usr/bin/python3 tests/gen_train_fixtures.py tests/fixtures"

/* Path of train_NAME.SUFFIX, or NULL (and a failed check) if the file is missing. */
static const char *fixture_path(dm_t *t, const char *name, const char *suffix)
{
    char file[256];
    snprintf(file, sizeof file, "train_%s.%s", name, suffix);
    const char *path = dm_test_fixture(file);
    if (!file_exists(path)) {
        CHECK(t, 0, "missing fixture %s (%s)", path, REGEN);
        return NULL;
    }
    return path;
}

static int read_npy(dm_t *t, const char *name, const char *suffix, dm_array *a)
{
    const char *path = fixture_path(t, name, suffix);
    if (!path) return -1;
    dm_error err = {0};
    dm_status s = dm_npy_read(path, a, &err);
    CHECK(t, s == DM_OK, "%s: %s", dm_status_name(s), err.msg);
    return s == DM_OK ? 0 : -1;
}

/* ---------------------------------------------------------------- cfg.json */

static int json_num(dm_t *t, const char *path, json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    CHECK(t, v && json_is_number(v), "%s: key \"%s\" missing or not a number", path, key);
    if (!v || !json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

static int json_int(dm_t *t, const char *path, json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    CHECK(t, v && json_is_integer(v), "%s: key \"%s\" missing or not an integer", path, key);
    if (!v || !json_is_integer(v)) return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Fills tc (from dm_train_config_default) and the number of steps to run. */
static int parse_train_cfg(dm_t *t, const char *path, dm_train_config *tc, int64_t *steps)
{
    json_error_t je;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    CHECK(t, o && json_is_object(o), "%s: not a JSON object (%s)", path, o ? "wrong type" : je.text);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return -1;
    }
    dm_train_config_default(tc);
    tc->loss = DM_LOSS_MSE;
    double lr, wd, b1, b2, eps, clip, cs, csw, cz, bu;
    int64_t warmup, total, accum;
    int bad = json_num(t, path, o, "lr", &lr) | json_num(t, path, o, "weight_decay", &wd) |
              json_num(t, path, o, "beta1", &b1) | json_num(t, path, o, "beta2", &b2) |
              json_num(t, path, o, "eps", &eps) | json_num(t, path, o, "clip", &clip) |
              json_num(t, path, o, "coef_seed", &cs) | json_num(t, path, o, "coef_switch", &csw) |
              json_num(t, path, o, "coef_z", &cz) | json_num(t, path, o, "bias_update", &bu) |
              json_int(t, path, o, "warmup", &warmup) | json_int(t, path, o, "total_steps", &total) |
              json_int(t, path, o, "grad_accum", &accum) | json_int(t, path, o, "steps", steps);
    json_t *sched = json_object_get(o, "schedule");
    const char *sn = json_is_string(sched) ? json_string_value(sched) : "";
    CHECK(t, !strcmp(sn, "cosine") || !strcmp(sn, "constant"),
          "%s: \"schedule\" must be \"cosine\" or \"constant\"", path);
    bad |= strcmp(sn, "cosine") && strcmp(sn, "constant");
    dm_schedule schedule = strcmp(sn, "cosine") ? DM_SCHED_CONSTANT : DM_SCHED_COSINE;
    json_t *bal = json_object_get(o, "balance");
    CHECK(t, json_is_array(bal), "%s: \"balance\" must be an array", path);
    unsigned flags = 0;
    if (json_is_array(bal)) {
        size_t i;
        json_t *v;
        json_array_foreach(bal, i, v) {
            const char *b = json_is_string(v) ? json_string_value(v) : "";
            unsigned f = !strcmp(b, "seed") ? DM_BAL_SEED : !strcmp(b, "switch") ? DM_BAL_SWITCH
                       : !strcmp(b, "aux_free") ? DM_BAL_AUX_FREE : !strcmp(b, "z") ? DM_BAL_Z : 0;
            CHECK(t, f, "%s: unknown balance term \"%s\"", path, b);
            if (!f) bad = 1;
            flags |= f;
        }
    } else {
        bad = 1;
    }
    json_t *prec = json_object_get(o, "precision");  /* absent: fp32 */
    const char *pn = json_is_string(prec) ? json_string_value(prec) : "fp32";
    CHECK(t, !prec || !strcmp(pn, "fp32") || !strcmp(pn, "bf16"), "%s: \"precision\" must be \"fp32\" or \"bf16\"", path);
    tc->precision = !strcmp(pn, "bf16") ? DM_PREC_BF16 : DM_PREC_FP32;
    json_decref(o);  /* sn, pn and the balance names die here */
    if (bad) return -1;
    tc->lr = (float)lr;
    tc->weight_decay = (float)wd;
    tc->beta1 = (float)b1;
    tc->beta2 = (float)b2;
    tc->eps = (float)eps;
    tc->warmup = warmup;
    tc->schedule = schedule;
    tc->total_steps = total;
    tc->clip = (float)clip;
    tc->grad_accum = (int)accum;
    tc->balance = flags;
    tc->coef_seed = (float)cs;
    tc->coef_switch = (float)csw;
    tc->coef_z = (float)cz;
    tc->bias_update = (float)bu;
    return 0;
}

/* ---------------------------------------------------------------- the trajectory */

typedef struct train_arrays {
    dm_array x, y, log;
    dm_array autocast;   /* bf16 case: torch.autocast's log [steps, 4] (else empty) */
} train_arrays;

typedef struct train_worst {
    double stat[4];      /* loss, balance_loss, grad_norm, lr: worst relative error */
    double weights;      /* worst normalized tensor error */
    double autocast[2];  /* bf16: loss, grad norm vs torch.autocast */
    char weights_name[64];
    int runs;
} train_worst;

static const char *const stat_names[4] = { "loss", "balance_loss", "grad_norm", "lr" };

static double stat_err(double got, double want)
{
    double den = fabs(want) > 1e-6 ? fabs(want) : 1e-6;
    double e = fabs(got - want) / den;
    return e == e ? e : INFINITY;
}

/* Compares every tensor of the trained model with the reference model. */
static void check_weights(dm_t *t, const char *name, const char *what, const dm_model *m,
                          const dm_model *ref, train_worst *worst)
{
    int n = dm_model_n_tensors(m);
    CHECK(t, n == dm_model_n_tensors(ref), "%s %s: %d tensors, reference has %d", name, what, n,
          dm_model_n_tensors(ref));
    for (int i = 0; i < n; i++) {
        dm_tensor_info a = dm_model_tensor(m, i), b;
        if (dm_model_find(ref, a.name, &b, NULL) != DM_OK) {
            CHECK(t, 0, "%s %s: tensor %s missing from the reference", name, what, a.name);
            continue;
        }
        CHECK(t, a.numel == b.numel, "%s %s: tensor %s has %lld values, reference %lld", name, what,
              a.name, (long long)a.numel, (long long)b.numel);
        if (a.numel != b.numel) continue;
        double e = dm_test_relerr(a.data, b.data, a.numel);
        CHECK(t, e <= WEIGHT_TOL, "%s %s: trained %s rel err %.3g > %.0e", name, what, a.name, e,
              WEIGHT_TOL);
        if (!(e <= worst->weights)) {
            worst->weights = e;
            snprintf(worst->weights_name, sizeof worst->weights_name, "%s", a.name);
        }
    }
}

/* One run: a fresh model for isa, a trainer on a pool of `threads`, the steps. */
static void train_run(dm_t *t, const char *name, const char *model_path, dm_isa isa, int threads,
                      const dm_train_config *tc, int64_t steps, const train_arrays *a,
                      const dm_model *ref, train_worst *worst)
{
    char what[64];
    snprintf(what, sizeof what, "(%s, %d thread%s)", dm_isa_name(isa), threads, threads > 1 ? "s" : "");
    dm_model_opts opts;
    dm_model_opts_default(&opts);
    opts.isa = isa;
    dm_model *m = NULL;
    dm_pool *pool = NULL;
    dm_trainer *tr = NULL;
    dm_error err = {0};
    dm_status s = dm_model_load(model_path, &opts, &m, &err);
    CHECK(t, s == DM_OK, "%s %s: dm_model_load: %s: %s", name, what, dm_status_name(s), err.msg);
    if (s) goto out;
    CHECK(t, dm_model_isa(m) == isa, "%s: model packed for %s, asked for %s", name,
          dm_isa_name(dm_model_isa(m)), dm_isa_name(isa));
    const dm_config *c = dm_model_config(m);
    CHECK(t, c->dim == a->x.cols && c->dim == a->y.cols, "%s: model dim %d, x has %lld columns, y %lld",
          name, c->dim, (long long)a->x.cols, (long long)a->y.cols);
    if (c->dim != a->x.cols || c->dim != a->y.cols) goto out;
    s = dm_pool_create(threads, &pool, &err);
    CHECK(t, s == DM_OK, "%s %s: dm_pool_create: %s: %s", name, what, dm_status_name(s), err.msg);
    if (s) goto out;
    s = dm_trainer_create(m, tc, pool, &tr, &err);
    CHECK(t, s == DM_OK, "%s %s: dm_trainer_create: %s: %s", name, what, dm_status_name(s), err.msg);
    if (s) goto out;

    for (int64_t step = 0; step < steps; step++) {
        dm_step_stats st;
        memset(&st, 0xff, sizeof st);  /* NaN / -1: unwritten fields show */
        s = dm_train_step(tr, a->x.data, a->y.data, NULL, a->x.rows, &st, &err);
        CHECK(t, s == DM_OK, "%s %s: step %lld: dm_train_step: %s: %s", name, what, (long long)step,
              dm_status_name(s), err.msg);
        if (s) goto out;
        CHECK(t, st.step == step + 1, "%s %s: step %lld: stats say %lld steps done", name, what,
              (long long)step, (long long)st.step);
        const float *want = a->log.data + step * 4;
        double got[4] = { st.loss, st.balance_loss, st.grad_norm, st.lr };
        for (int q = 0; q < 4; q++) {
            double e = q == 1 && want[q] == 0.0f ? (got[q] == 0.0 ? 0.0 : INFINITY)
                                                 : stat_err(got[q], want[q]);
            CHECK(t, e <= LOG_TOL, "%s %s: step %lld: %s %.9g, want %.9g (rel err %.3g)", name, what,
                  (long long)step, stat_names[q], got[q], (double)want[q], e);
            if (!(e <= worst->stat[q])) worst->stat[q] = e;
        }
        if (a->autocast.data) {  /* PyTorch's own autocast: the loss and the gradient norm */
            const float *ac = a->autocast.data + step * 4;
            double el = stat_err(st.loss, ac[0]), en = stat_err(st.grad_norm, ac[2]);
            CHECK(t, el <= AUTOCAST_TOL && en <= AUTOCAST_NORM_TOL,
                  "%s %s: step %lld: loss %.9g, grad norm %.9g; autocast(bfloat16) %.9g, %.9g (rel %.3g, %.3g)",
                  name, what, (long long)step, st.loss, st.grad_norm, (double)ac[0], (double)ac[2], el, en);
            if (!(el <= worst->autocast[0])) worst->autocast[0] = el;
            if (!(en <= worst->autocast[1])) worst->autocast[1] = en;
        }
    }
    CHECK(t, dm_trainer_step_count(tr) == steps, "%s %s: dm_trainer_step_count %lld, want %lld",
          name, what, (long long)dm_trainer_step_count(tr), (long long)steps);
    check_weights(t, name, what, m, ref, worst);
    worst->runs++;
out:
    dm_trainer_free(tr);
    dm_pool_free(pool);
    dm_model_free(m);
}

static void train_parity_case(dm_t *t, const char *name)
{
    train_arrays a = {0};
    dm_model *ref = NULL;
    dm_train_config tc;
    int64_t steps = 0;
    const char *model_path = fixture_path(t, name, "safetensors");
    if (!model_path) goto out;
    char model_file[1024];
    snprintf(model_file, sizeof model_file, "%s", model_path);  /* dm_test_fixture reuses buffers */
    const char *cfg_path = fixture_path(t, name, "cfg.json");
    if (!cfg_path || parse_train_cfg(t, cfg_path, &tc, &steps)) goto out;
    if (read_npy(t, name, "x.npy", &a.x) || read_npy(t, name, "y.npy", &a.y) ||
        read_npy(t, name, "log.npy", &a.log))
        goto out;
    if (tc.precision == DM_PREC_BF16 && read_npy(t, name, "autocast.npy", &a.autocast)) goto out;
    CHECK(t, !a.autocast.data || (a.autocast.rows == steps && a.autocast.cols == 4), "%s: autocast log is %lldx%lld",
          name, (long long)a.autocast.rows, (long long)a.autocast.cols);
    if (a.autocast.data && (a.autocast.rows != steps || a.autocast.cols != 4)) goto out;
    CHECK(t, a.y.rows == a.x.rows && a.log.rows == steps && a.log.cols == 4 && steps > 0,
          "%s: fixture shapes disagree: x %lldx%lld, y %lldx%lld, log %lldx%lld, %lld steps", name,
          (long long)a.x.rows, (long long)a.x.cols, (long long)a.y.rows, (long long)a.y.cols,
          (long long)a.log.rows, (long long)a.log.cols, (long long)steps);
    if (a.y.rows != a.x.rows || a.log.rows != steps || a.log.cols != 4 || steps <= 0) goto out;
    const char *final_path = fixture_path(t, name, "final.safetensors");
    if (!final_path) goto out;
    dm_model_opts ropts;
    dm_model_opts_default(&ropts);
    ropts.isa = DM_ISA_REF;
    dm_error err = {0};
    dm_status s = dm_model_load(final_path, &ropts, &ref, &err);
    CHECK(t, s == DM_OK, "%s: dm_model_load: %s: %s", name, dm_status_name(s), err.msg);
    if (s) goto out;

    static const dm_isa isas[] = { DM_ISA_REF, DM_ISA_AVX2, DM_ISA_AVX512 };
    train_worst worst = {0};
    char isa_list[64] = "";
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (dm_isa_resolve(isas[i]) != isas[i]) continue;  /* the CPU lacks it */
        for (int threads = 1; threads <= 2; threads++)
            train_run(t, name, model_file, isas[i], threads, &tc, steps, &a, ref, &worst);
        strncat(isa_list, " ", sizeof isa_list - strlen(isa_list) - 1);
        strncat(isa_list, dm_isa_name(isas[i]), sizeof isa_list - strlen(isa_list) - 1);
    }
    CHECK(t, worst.runs > 0, "%s: no training run completed", name);
    printf("  train parity %s: max rel err loss %.1e, balance %.1e, grad norm %.1e, lr %.1e, "
           "weights %.1e (%s); %d runs:%s\n", name, worst.stat[0], worst.stat[1], worst.stat[2],
           worst.stat[3], worst.weights, worst.weights_name[0] ? worst.weights_name : "-",
           worst.runs, isa_list);
    if (a.autocast.data)
        printf("  train parity %s vs torch.autocast(bfloat16): max rel err loss %.1e, grad norm %.1e\n", name,
               worst.autocast[0], worst.autocast[1]);
out:
    dm_model_free(ref);
    dm_array_free(&a.x);
    dm_array_free(&a.y);
    dm_array_free(&a.log);
    dm_array_free(&a.autocast);
}

#define TRAIN_PARITY_CASE(nm) \
    static void test_train_parity_##nm(dm_t *t) { train_parity_case(t, #nm); }

TRAIN_PARITY_CASE(none)
TRAIN_PARITY_CASE(seed)
TRAIN_PARITY_CASE(switch)
TRAIN_PARITY_CASE(aux_free)
TRAIN_PARITY_CASE(z)
TRAIN_PARITY_CASE(all)
TRAIN_PARITY_CASE(accum)
TRAIN_PARITY_CASE(accum_bal)
TRAIN_PARITY_CASE(bf16)

void suite_train_parity(dm_t *t)
{
    DM_RUN(t, test_train_parity_none);
    DM_RUN(t, test_train_parity_seed);
    DM_RUN(t, test_train_parity_switch);
    DM_RUN(t, test_train_parity_aux_free);
    DM_RUN(t, test_train_parity_z);
    DM_RUN(t, test_train_parity_all);
    DM_RUN(t, test_train_parity_accum);
    DM_RUN(t, test_train_parity_accum_bal);
    DM_RUN(t, test_train_parity_bf16);
}
