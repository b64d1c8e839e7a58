/* run_state.c - the run state to and from JSON, every field checked.
 *
 * One table lists the fields: JSON name, where it lives, its kind and its
 * range. Writing walks the table; reading requires every field exactly once,
 * refuses unknown ones, and checks each value's type and range before the
 * caller sees any of it. */
#include "train/run_state.h"
#include "base/base.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

typedef enum { F_INT, F_I64, F_BOOL, F_FLOAT, F_DOUBLE, F_ENUM, F_FLAGS } field_kind;

typedef struct field {
    const char *name;
    field_kind kind;
    size_t off;
    double lo, hi;           /* inclusive bounds; F_FLOAT, F_DOUBLE: hi_open says [lo, hi) */
    int hi_open, lo_open;
    const char *const *names;/* F_ENUM: value i is names[i]; F_FLAGS: bit i */
    int n_names;
    int since;               /* first version with the field (0: all); older files keep the default */
} field;

static const char *const task_names[] = {"classify", "regress"};
static const char *const loss_names[] = {"mse", "ce"};
static const char *const sched_names[] = {"cosine", "constant"};
static const char *const bal_names[] = {"seed", "switch", "aux_free", "z_loss"};
static const char *const prec_names[] = {"fp32", "bf16"};

#define RS(f) offsetof(dm_run_state, f)
#define TC(f) (offsetof(dm_run_state, tc) + offsetof(dm_train_config, f))
#define BIG 9.2e18    /* int64 fields: any non-negative value json_int_t holds */
static const field fields[] = {
    {"task", F_ENUM, RS(task), 0, 0, 0, 0, task_names, 2, 0},
    {"epoch", F_I64, RS(epoch), 0, BIG, 0, 0, NULL, 0, 0},
    {"pos", F_I64, RS(pos), 0, BIG, 0, 0, NULL, 0, 0},
    {"seed", F_I64, RS(seed), 0, BIG, 0, 0, NULL, 0, 0},
    {"holdout", F_DOUBLE, RS(holdout), -1, 1, 1, 0, NULL, 0, 0},   /* and -1 or >= 0: read_field */
    {"shuffle", F_BOOL, RS(shuffle), 0, 1, 0, 0, NULL, 0, 0},
    {"batch", F_INT, RS(batch), 1, 1 << 24, 0, 0, NULL, 0, 0},
    {"aug_shift", F_INT, RS(aug_shift), 0, 8, 0, 0, NULL, 0, 0},
    {"aug_flip", F_BOOL, RS(aug_flip), 0, 1, 0, 0, NULL, 0, 0},
    {"aug_drop", F_FLOAT, RS(aug_drop), 0, 1, 1, 0, NULL, 0, 0},
    {"checkpoint_every", F_I64, RS(checkpoint_every), 1, 2e9, 0, 0, NULL, 0, 0},
    {"log_every", F_I64, RS(log_every), 1, 2e9, 0, 0, NULL, 0, 0},
    {"eval_every", F_I64, RS(eval_every), 0, 2e9, 0, 0, NULL, 0, 0},
    {"loss", F_ENUM, TC(loss), 0, 0, 0, 0, loss_names, 2, 0},
    {"lr", F_FLOAT, TC(lr), 0, 1e6, 0, 1, NULL, 0, 0},
    {"weight_decay", F_FLOAT, TC(weight_decay), 0, 1e6, 0, 0, NULL, 0, 0},
    {"beta1", F_FLOAT, TC(beta1), 0, 1, 1, 0, NULL, 0, 0},
    {"beta2", F_FLOAT, TC(beta2), 0, 1, 1, 0, NULL, 0, 0},
    {"eps", F_FLOAT, TC(eps), 0, 1, 0, 1, NULL, 0, 0},
    {"warmup", F_I64, TC(warmup), 0, 2e9, 0, 0, NULL, 0, 0},
    {"schedule", F_ENUM, TC(schedule), 0, 0, 0, 0, sched_names, 2, 0},
    {"total_steps", F_I64, TC(total_steps), 1, 2e9, 0, 0, NULL, 0, 0},
    {"clip", F_FLOAT, TC(clip), 0, 1e30, 0, 0, NULL, 0, 0},
    {"grad_accum", F_INT, TC(grad_accum), 1, 1 << 20, 0, 0, NULL, 0, 0},
    {"balance", F_FLAGS, TC(balance), 0, 0, 0, 0, bal_names, 4, 0},
    {"coef_seed", F_FLOAT, TC(coef_seed), 0, 1e6, 0, 0, NULL, 0, 0},
    {"coef_switch", F_FLOAT, TC(coef_switch), 0, 1e6, 0, 0, NULL, 0, 0},
    {"coef_z", F_FLOAT, TC(coef_z), 0, 1e6, 0, 0, NULL, 0, 0},
    {"bias_update", F_FLOAT, TC(bias_update), 0, 1e6, 0, 0, NULL, 0, 0},
    {"label_smoothing", F_FLOAT, TC(label_smoothing), 0, 1, 1, 0, NULL, 0, 0},
    {"dropout", F_FLOAT, TC(dropout), 0, 1, 1, 0, NULL, 0, 0},
    {"precision", F_ENUM, TC(precision), 0, 0, 0, 0, prec_names, 2, 4},
};
#undef RS
#undef TC
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* ---------------------------------------------------------------- write */

static json_t *field_json(const field *f, const dm_run_state *rs)
{
    const char *p = (const char *)rs + f->off;
    switch (f->kind) {
    case F_INT: return json_integer(*(const int *)p);
    case F_I64: return json_integer((json_int_t)*(const int64_t *)p);
    case F_BOOL: return json_boolean(*(const int *)p);
    case F_FLOAT: return json_real((double)*(const float *)p);
    case F_DOUBLE: return json_real(*(const double *)p);
    case F_ENUM: {
        int v = *(const int *)p;
        return v >= 0 && v < f->n_names ? json_string(f->names[v]) : NULL;
    }
    case F_FLAGS: {
        unsigned v = *(const unsigned *)p;
        json_t *a = json_array();
        for (int i = 0; a && i < f->n_names; i++)
            if (v & (1u << i)) json_array_append_new(a, json_string(f->names[i]));
        return a;
    }
    }
    return NULL;
}

char *dm_run_state_to_json(const dm_run_state *rs)
{
    json_t *o = json_object();
    int ok = o && !json_object_set_new(o, "version", json_integer(DM_RUN_STATE_VERSION));
    for (size_t i = 0; ok && i < N_FIELDS; i++) {
        json_t *v = field_json(&fields[i], rs);
        ok = v && !json_object_set_new(o, fields[i].name, v);
    }
    char *s = ok ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(o);
    return s;
}

/* ---------------------------------------------------------------- read */

#define BAD(...) dm_fail(err, DM_ERR_FORMAT, __VA_ARGS__)

static dm_status read_enum(const field *f, json_t *v, int *out, const char *path, dm_error *err)
{
    for (int i = 0; json_is_string(v) && i < f->n_names; i++)
        if (!strcmp(json_string_value(v), f->names[i])) {
            *out = i;
            return DM_OK;
        }
    return BAD("%s: run state: field '%s' must be \"%s\" or \"%s\"", path, f->name, f->names[0], f->names[1]);
}

static dm_status read_flags(const field *f, json_t *v, unsigned *out, const char *path, dm_error *err)
{
    if (!json_is_array(v)) return BAD("%s: run state: field '%s' must be a list of names", path, f->name);
    unsigned flags = 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        int k = 0;
        while (k < f->n_names && !(json_is_string(e) && !strcmp(json_string_value(e), f->names[k]))) k++;
        if (k == f->n_names)
            return BAD("%s: run state: field '%s': entry %zu is not one of seed, switch, aux_free, z_loss",
                       path, f->name, i);
        flags |= 1u << k;
    }
    *out = flags;
    return DM_OK;
}

static dm_status read_number(const field *f, json_t *v, char *p, const char *path, dm_error *err)
{
    int integral = f->kind != F_FLOAT && f->kind != F_DOUBLE;
    if (integral ? !json_is_integer(v) : !json_is_number(v))
        return BAD("%s: run state: field '%s' must be %s", path, f->name, integral ? "an integer" : "a number");
    double x = json_number_value(v);
    int in = isfinite(x) && (f->lo_open ? x > f->lo : x >= f->lo) && (f->hi_open ? x < f->hi : x <= f->hi);
    if (!in)
        return BAD("%s: run state: field '%s' is %.17g, outside %c%.10g, %.10g%c", path, f->name, x,
                   f->lo_open ? '(' : '[', f->lo, f->hi, f->hi_open ? ')' : ']');
    switch (f->kind) {
    case F_INT: *(int *)p = (int)json_integer_value(v); break;
    case F_I64: *(int64_t *)p = (int64_t)json_integer_value(v); break;
    case F_DOUBLE: *(double *)p = x; break;
    default: *(float *)p = (float)x; break;
    }
    if (f->kind == F_FLOAT && !isfinite(*(float *)p))   /* finite as a double, not as a float */
        return BAD("%s: run state: field '%s' overflows float32", path, f->name);
    return DM_OK;
}

static dm_status read_field(const field *f, json_t *v, dm_run_state *rs, const char *path, dm_error *err)
{
    char *p = (char *)rs + f->off;
    switch (f->kind) {
    case F_BOOL:
        if (!json_is_boolean(v)) return BAD("%s: run state: field '%s' must be true or false", path, f->name);
        *(int *)p = json_is_true(v);
        return DM_OK;
    case F_ENUM: return read_enum(f, v, (int *)p, path, err);
    case F_FLAGS: return read_flags(f, v, (unsigned *)p, path, err);
    default: break;
    }
    dm_status st = read_number(f, v, p, path, err);
    if (!st && p == (char *)&rs->holdout && rs->holdout < 0 && rs->holdout != -1)
        return BAD("%s: run state: field 'holdout' is %.17g: want -1 (the data's own test split) or a share in [0, 1)",
                   path, rs->holdout);
    return st;
}

int dm_run_state_version(const char *text, size_t len)
{
    json_t *o = json_loadb(text, len, 0, NULL);
    json_t *v = json_object_get(o, "version");   /* NULL for a non-object */
    int ver = !json_is_object(o) ? 1 : json_is_integer(v) ? (int)DM_MAX(DM_MIN(json_integer_value(v), 1 << 30), 0) : 0;
    json_decref(o);
    return ver;
}

dm_status dm_run_state_from_json(const char *text, size_t len, const char *path, dm_run_state *rs, dm_error *err)
{
    memset(rs, 0, sizeof *rs);
    dm_train_config_default(&rs->tc);   /* struct_size; every field is then read */
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return BAD("%s: run state is not a JSON object (%s): written by an older version of deepmoe train?", path,
                   o ? "wrong type" : je.text);
    }
    dm_status st = DM_OK;
    json_t *ver = json_object_get(o, "version");
    int version = json_is_integer(ver) ? (int)DM_MAX(DM_MIN(json_integer_value(ver), 1 << 30), -1) : -1;
    if (version != DM_RUN_STATE_VERSION && version != DM_RUN_STATE_VERSION - 1)
        st = BAD("%s: run state: field 'version' is not %d: written by another version of deepmoe train", path,
                 DM_RUN_STATE_VERSION);
    for (size_t i = 0; !st && i < N_FIELDS; i++) {
        json_t *v = json_object_get(o, fields[i].name);
        if (!v && fields[i].since > version) continue;  /* an older file: the default */
        st = v ? read_field(&fields[i], v, rs, path, err)
               : BAD("%s: run state: field '%s' is missing", path, fields[i].name);
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (st) break;
        size_t i = 0;
        while (i < N_FIELDS && strcmp(key, fields[i].name)) i++;
        if (i == N_FIELDS && strcmp(key, "version"))
            st = BAD("%s: run state: unknown field '%.64s'", path, key);
    }
    json_decref(o);
    if (!st) {
        dm_error e2;
        if (dm_train_config_check(&rs->tc, &e2)) st = BAD("%s: run state: %s", path, e2.msg);
    }
    if (st) memset(rs, 0, sizeof *rs);
    return st;
}

/* ---------------------------------------------------------------- train config */

dm_status dm_train_config_check(const dm_train_config *tc, dm_error *err)
{
    dm_status st = dm_check_struct_size(tc->struct_size, sizeof *tc, "dm_train_config", "dm_train_config_default", err);
    if (st) return st;
    if (!(tc->lr > 0) || !isfinite(tc->lr)) return dm_fail(err, DM_ERR_ARG, "--lr %g must be positive", (double)tc->lr);
    if (!(tc->weight_decay >= 0) || !isfinite(tc->weight_decay))
        return dm_fail(err, DM_ERR_ARG, "--weight-decay %g must be >= 0", (double)tc->weight_decay);
    if (!(tc->beta1 >= 0 && tc->beta1 < 1 && tc->beta2 >= 0 && tc->beta2 < 1))
        return dm_fail(err, DM_ERR_ARG, "--betas %g,%g must be in [0, 1)", (double)tc->beta1, (double)tc->beta2);
    if (!(tc->eps > 0) || !isfinite(tc->eps)) return dm_fail(err, DM_ERR_ARG, "--eps %g must be positive", (double)tc->eps);
    if ((unsigned)tc->loss > DM_LOSS_CE) return dm_fail(err, DM_ERR_ARG, "unknown loss kind %d", (int)tc->loss);
    if ((unsigned)tc->precision > DM_PREC_BF16)
        return dm_fail(err, DM_ERR_ARG, "unknown precision %d (fp32 or bf16)", (int)tc->precision);
    if ((unsigned)tc->schedule > DM_SCHED_CONSTANT)
        return dm_fail(err, DM_ERR_ARG, "unknown schedule %d", (int)tc->schedule);
    if (tc->total_steps < 1) return dm_fail(err, DM_ERR_ARG, "total steps %lld must be >= 1", (long long)tc->total_steps);
    if (tc->warmup < 0) return dm_fail(err, DM_ERR_ARG, "--warmup %lld must be >= 0", (long long)tc->warmup);
    if (!(tc->clip >= 0) || !isfinite(tc->clip)) return dm_fail(err, DM_ERR_ARG, "--clip %g must be >= 0", (double)tc->clip);
    if (tc->grad_accum < 1) return dm_fail(err, DM_ERR_ARG, "--grad-accum %d must be >= 1", tc->grad_accum);
    if (tc->balance & ~(unsigned)(DM_BAL_SEED | DM_BAL_SWITCH | DM_BAL_AUX_FREE | DM_BAL_Z))
        return dm_fail(err, DM_ERR_ARG, "unknown balance flags 0x%x", tc->balance);
    const float coef[] = {tc->coef_seed, tc->coef_switch, tc->coef_z, tc->bias_update};
    for (int i = 0; i < 4; i++)
        if (!(coef[i] >= 0) || !isfinite(coef[i]))
            return dm_fail(err, DM_ERR_ARG, "balance coefficient %g must be >= 0 and finite", (double)coef[i]);
    if (!(tc->dropout >= 0 && tc->dropout < 1))
        return dm_fail(err, DM_ERR_ARG, "--dropout %g must be in [0, 1)", (double)tc->dropout);
    if (!(tc->label_smoothing >= 0 && tc->label_smoothing < 1))
        return dm_fail(err, DM_ERR_ARG, "--label-smoothing %g must be in [0, 1)", (double)tc->label_smoothing);
    return DM_OK;
}
