/* triton_config.c - the Triton ModelConfig schema deepmoe serves, read from
 * config.pbtxt through the generic protobuf text-format reader (pbtxt.h): one
 * callback per message type, the checks a field can make alone as it is read,
 * then the checks across fields and the normalisation (validate). The
 * renderings are in triton_render.c.
 * Field meanings and defaults: ../shared/research/serving.md section 3. */
#include "serve/triton_config.h"
#include "serve/pbtxt.h"
#include "base/base.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DM_TRITON_MAX_FILE (16u << 20)  /* a config.pbtxt larger than this is refused */

/* ---------------------------------------------------------------- enums */

static const dm_pbtxt_enum DATA_TYPES[] = {
    {"TYPE_BOOL", 1}, {"TYPE_UINT8", 2}, {"TYPE_UINT16", 3}, {"TYPE_UINT32", 4}, {"TYPE_UINT64", 5},
    {"TYPE_INT8", 6}, {"TYPE_INT16", 7}, {"TYPE_INT32", 8}, {"TYPE_INT64", 9}, {"TYPE_FP16", 10},
    {"TYPE_FP32", 11}, {"TYPE_FP64", 12}, {"TYPE_STRING", 13}, {"TYPE_BF16", 14},
};
static const dm_pbtxt_enum FORMATS[] = {{"FORMAT_NONE", 0}, {"FORMAT_NHWC", 1}, {"FORMAT_NCHW", 2}};
static const dm_pbtxt_enum KINDS[] = {{"KIND_AUTO", 0}, {"KIND_GPU", 1}, {"KIND_CPU", 2}, {"KIND_MODEL", 3}};
static const dm_pbtxt_enum TIMEOUT_ACTIONS[] = {{"REJECT", 0}, {"DELAY", 1}};
#define NE(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---------------------------------------------------------------- messages */

typedef struct top_ctx {
    dm_triton_config *c;
    dm_pbtxt_tok *t;            /* scratch token */
    unsigned seen;
    int line_db;
    int pref_line[DM_TRITON_MAX_LIST];
    int in_line[DM_TRITON_MAX_TENSORS], out_line[DM_TRITON_MAX_TENSORS];
    int n_groups;
    int64_t count_sum;
    int vp_kind;                /* -1 = none set */
} top_ctx;

typedef struct tensor_ctx {
    top_ctx *top;
    dm_triton_tensor *t;
    int is_input;
    unsigned seen;
    int dims_seen, reshape;
} tensor_ctx;

static int tensor_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    tensor_ctx *x = vctx;
    dm_pbtxt_tok *t = x->top->t;
    int r, v;
    dm_pbtxt_iter li;
    if (!strcmp(f, "name")) {
        if (dm_pbtxt_once(p, &x->seen, 1, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_str(p, f, t, x->t->name, sizeof x->t->name);
    }
    if (!strcmp(f, "data_type")) {
        if (dm_pbtxt_once(p, &x->seen, 2, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        if (dm_pbtxt_tok_enum(p, f, t, DATA_TYPES, NE(DATA_TYPES), "DataType", &v)) return -1;
        snprintf(x->t->data_type, sizeof x->t->data_type, "%s", DATA_TYPES[v].name);
        return 0;
    }
    if (!strcmp(f, "dims")) {
        x->dims_seen = 1;
        if (dm_pbtxt_scalars_open(p, f, colon, line, &li)) return -1;
        while ((r = dm_pbtxt_scalars_next(p, f, &li, t)) > 0) {
            if (x->t->n_dims == DM_TRITON_MAX_DIMS) return dm_pbtxt_fail(p, t->line, f, "more than %d dims", DM_TRITON_MAX_DIMS);
            if (dm_pbtxt_tok_i64(p, f, t, -1, INT64_MAX, &x->t->dims[x->t->n_dims])) return -1;
            x->t->n_dims++;
        }
        return r;
    }
    if (!strcmp(f, "reshape")) {
        x->reshape = 1;
        return dm_pbtxt_skip(p, f, colon, line);
    }
    if (!strcmp(f, "is_shape_tensor") || !strcmp(f, "is_non_linear_format_io") ||
        (x->is_input && (!strcmp(f, "allow_ragged_batch") || !strcmp(f, "optional")))) {
        if (dm_pbtxt_scalar(p, f, colon, line, t) || dm_pbtxt_tok_bool(p, f, t, &v)) return -1;
        if (!strcmp(f, "optional")) x->t->optional = v;
        return 0;
    }
    if (x->is_input && !strcmp(f, "format")) {
        if (dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_enum(p, f, t, FORMATS, NE(FORMATS), "Format", &v);
    }
    if (!x->is_input && !strcmp(f, "label_filename")) {
        char tmp[DM_PBTXT_TOK_STR];
        if (dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_str(p, f, t, tmp, sizeof tmp);
    }
    return dm_pbtxt_unknown(p, f, line, x->is_input ? "ModelInput" : "ModelOutput");
}

static int tensors(dm_pbtxt *p, top_ctx *x, const char *f, int is_input)
{
    int *n = is_input ? &x->c->n_inputs : &x->c->n_outputs;
    dm_triton_tensor *arr = is_input ? x->c->inputs : x->c->outputs;
    int *lines = is_input ? x->in_line : x->out_line;
    int r, close, mline;
    dm_pbtxt_iter v;
    dm_pbtxt_messages_open(p, &v);
    while ((r = dm_pbtxt_messages_next(p, f, &v, &close, &mline)) > 0) {
        if (*n == DM_TRITON_MAX_TENSORS) return dm_pbtxt_fail(p, mline, f, "more than %d entries", DM_TRITON_MAX_TENSORS);
        tensor_ctx tc = {.top = x, .t = &arr[*n], .is_input = is_input};
        lines[*n] = mline;
        if (dm_pbtxt_sub(p, f, close, mline, tensor_field, &tc)) return -1;
        if (!tc.t->name[0]) return dm_pbtxt_fail(p, mline, f, "entry has no 'name'");
        if (!tc.t->data_type[0]) return dm_pbtxt_fail(p, mline, f, "'%s' has no 'data_type'", tc.t->name);
        if (tc.dims_seen && tc.t->n_dims == 0 && !tc.reshape)
            return dm_pbtxt_fail(p, mline, f, "'%s': dims must have at least one dimension", tc.t->name);
        (*n)++;
    }
    return r;
}

typedef struct db_ctx {
    top_ctx *top;
    unsigned seen;
    int64_t priority_levels, default_priority_level;
    int prio_line;
} db_ctx;

typedef struct qp_ctx { top_ctx *top; unsigned seen; } qp_ctx;

static int queue_policy_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    qp_ctx *x = vctx;
    dm_triton_config *c = x->top->c;
    dm_pbtxt_tok *t = x->top->t;
    int v;
    if (!strcmp(f, "timeout_action")) {
        if (dm_pbtxt_once(p, &x->seen, 1, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        if (dm_pbtxt_tok_enum(p, f, t, TIMEOUT_ACTIONS, NE(TIMEOUT_ACTIONS), "TimeoutAction", &v)) return -1;
        c->timeout_action_delay = v;
        return 0;
    }
    if (!strcmp(f, "default_timeout_microseconds")) {
        if (dm_pbtxt_once(p, &x->seen, 2, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_i64(p, f, t, 0, INT64_MAX, &c->default_timeout_us);
    }
    if (!strcmp(f, "allow_timeout_override")) {
        if (dm_pbtxt_once(p, &x->seen, 4, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_bool(p, f, t, &c->allow_timeout_override);
    }
    if (!strcmp(f, "max_queue_size")) {
        if (dm_pbtxt_once(p, &x->seen, 8, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_i64(p, f, t, 0, UINT32_MAX, &c->max_queue_size);
    }
    return dm_pbtxt_unknown(p, f, line, "ModelQueuePolicy");
}

static int dynbatch_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    db_ctx *x = vctx;
    dm_triton_config *c = x->top->c;
    dm_pbtxt_tok *t = x->top->t;
    int r;
    dm_pbtxt_iter li;
    if (!strcmp(f, "preferred_batch_size")) {
        if (dm_pbtxt_scalars_open(p, f, colon, line, &li)) return -1;
        while ((r = dm_pbtxt_scalars_next(p, f, &li, t)) > 0) {
            if (c->n_preferred == DM_TRITON_MAX_LIST)
                return dm_pbtxt_fail(p, t->line, f, "more than %d values", DM_TRITON_MAX_LIST);
            if (dm_pbtxt_tok_int(p, f, t, INT32_MIN, INT32_MAX, &c->preferred_batch_size[c->n_preferred])) return -1;
            if (c->preferred_batch_size[c->n_preferred] <= 0)
                return dm_pbtxt_fail(p, t->line, f, "preferred batch size %d must be > 0", c->preferred_batch_size[c->n_preferred]);
            x->top->pref_line[c->n_preferred++] = t->line;
        }
        return r;
    }
    if (!strcmp(f, "max_queue_delay_microseconds")) {
        if (dm_pbtxt_once(p, &x->seen, 1, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_i64(p, f, t, 0, INT64_MAX, &c->max_queue_delay_us);
    }
    if (!strcmp(f, "preserve_ordering")) {
        if (dm_pbtxt_once(p, &x->seen, 2, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_bool(p, f, t, &c->preserve_ordering);
    }
    if (!strcmp(f, "priority_levels")) {
        if (dm_pbtxt_once(p, &x->seen, 4, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        x->prio_line = t->line;
        return dm_pbtxt_tok_i64(p, f, t, 0, INT64_MAX, &x->priority_levels);
    }
    if (!strcmp(f, "default_priority_level")) {
        if (dm_pbtxt_once(p, &x->seen, 8, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        if (!x->prio_line) x->prio_line = t->line;
        return dm_pbtxt_tok_i64(p, f, t, 0, INT64_MAX, &x->default_priority_level);
    }
    if (!strcmp(f, "default_queue_policy")) {
        int close, mline;
        qp_ctx q = {.top = x->top};
        if (dm_pbtxt_once(p, &x->seen, 16, f, line) || dm_pbtxt_message(p, f, &close, &mline)) return -1;
        return dm_pbtxt_sub(p, f, close, mline, queue_policy_field, &q);
    }
    if (!strcmp(f, "priority_queue_policy")) return dm_pbtxt_skip(p, f, colon, line);
    return dm_pbtxt_unknown(p, f, line, "ModelDynamicBatching");
}

typedef struct ig_ctx { top_ctx *top; unsigned seen; int count, kind; } ig_ctx;

static int group_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    ig_ctx *x = vctx;
    dm_pbtxt_tok *t = x->top->t;
    int r, v;
    dm_pbtxt_iter li;
    if (!strcmp(f, "name") || !strcmp(f, "host_policy")) {
        char tmp[DM_PBTXT_TOK_STR];
        if (dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_str(p, f, t, tmp, sizeof tmp);
    }
    if (!strcmp(f, "kind")) {
        if (dm_pbtxt_once(p, &x->seen, 1, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        if (dm_pbtxt_tok_enum(p, f, t, KINDS, NE(KINDS), "Kind", &v)) return -1;
        if (KINDS[v].value == 1 || KINDS[v].value == 3)
            return dm_pbtxt_fail(p, t->line, f, "%s is not supported: deepmoe serves on CPUs (use KIND_CPU)", KINDS[v].name);
        x->kind = v;
        return 0;
    }
    if (!strcmp(f, "count")) {
        if (dm_pbtxt_once(p, &x->seen, 2, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_int(p, f, t, 0, INT32_MAX, &x->count);
    }
    if (!strcmp(f, "gpus")) {
        if (dm_pbtxt_scalars_open(p, f, colon, line, &li)) return -1;
        if ((r = dm_pbtxt_scalars_next(p, f, &li, t)) > 0)
            return dm_pbtxt_fail(p, t->line, f, "GPUs are not supported: deepmoe serves on CPUs (gpus must be empty)");
        return r;
    }
    if (!strcmp(f, "passive")) {
        if (dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_bool(p, f, t, &v);
    }
    if (!strcmp(f, "profile") || !strcmp(f, "secondary_devices") || !strcmp(f, "rate_limiter"))
        return dm_pbtxt_skip(p, f, colon, line);
    return dm_pbtxt_unknown(p, f, line, "ModelInstanceGroup");
}

static int instance_groups(dm_pbtxt *p, top_ctx *x, const char *f)
{
    int r, close, mline;
    dm_pbtxt_iter v;
    dm_pbtxt_messages_open(p, &v);
    while ((r = dm_pbtxt_messages_next(p, f, &v, &close, &mline)) > 0) {
        ig_ctx g = {.top = x, .kind = 2 /* KIND_CPU */};
        if (dm_pbtxt_sub(p, f, close, mline, group_field, &g)) return -1;
        if (x->n_groups == 0) snprintf(x->c->instance_kind, sizeof x->c->instance_kind, "%s", KINDS[g.kind].name);
        x->n_groups++;
        x->count_sum += g.count > 0 ? g.count : 1;
        if (x->count_sum > 1024) return dm_pbtxt_fail(p, mline, f, "more than 1024 instances in all");
    }
    return r;
}

static int vp_latest_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    if (strcmp(f, "num_versions")) return dm_pbtxt_unknown(p, f, line, "VersionPolicy.Latest");
    if (dm_pbtxt_scalar(p, f, colon, line, x->t)) return -1;
    return dm_pbtxt_tok_int(p, f, x->t, 1, INT_MAX, &x->c->num_versions);
}

static int vp_all_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    DM_UNUSED(colon);
    DM_UNUSED(vctx);
    return dm_pbtxt_unknown(p, f, line, "VersionPolicy.All");
}

static int vp_specific_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    dm_triton_config *c = x->c;
    int r;
    dm_pbtxt_iter li;
    if (strcmp(f, "versions")) return dm_pbtxt_unknown(p, f, line, "VersionPolicy.Specific");
    if (dm_pbtxt_scalars_open(p, f, colon, line, &li)) return -1;
    while ((r = dm_pbtxt_scalars_next(p, f, &li, x->t)) > 0) {
        if (c->n_versions == DM_TRITON_MAX_LIST)
            return dm_pbtxt_fail(p, x->t->line, f, "more than %d versions", DM_TRITON_MAX_LIST);
        if (dm_pbtxt_tok_i64(p, f, x->t, 0, INT64_MAX, &c->versions[c->n_versions])) return -1;
        c->n_versions++;
    }
    return r;
}

static int vp_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    DM_UNUSED(colon);
    top_ctx *x = vctx;
    static const char *const names[] = {"latest", "all", "specific"};
    static const dm_pbtxt_field_fn fns[] = {vp_latest_field, vp_all_field, vp_specific_field};
    for (int k = 0; k < 3; k++) {
        if (strcmp(f, names[k])) continue;
        if (x->vp_kind >= 0)
            return dm_pbtxt_fail(p, line, f, "only one of 'latest', 'all', 'specific' may be set ('%s' is already set)",
                                 names[x->vp_kind]);
        int close, mline;
        x->vp_kind = k;
        if (dm_pbtxt_message(p, f, &close, &mline)) return -1;
        if (dm_pbtxt_sub(p, f, close, mline, fns[k], x)) return -1;
        if (k == 2 && x->c->n_versions == 0) return dm_pbtxt_fail(p, mline, f, "needs at least one version");
        return 0;
    }
    return dm_pbtxt_unknown(p, f, line, "ModelVersionPolicy");
}

typedef struct param_ctx {
    top_ctx *top;
    char key[64], val[256];
    int has_val;
} param_ctx;

static int param_value_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    param_ctx *x = vctx;
    if (strcmp(f, "string_value")) return dm_pbtxt_unknown(p, f, line, "ModelParameter");
    if (dm_pbtxt_scalar(p, f, colon, line, x->top->t)) return -1;
    return dm_pbtxt_tok_str(p, f, x->top->t, x->val, sizeof x->val);
}

static int param_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    param_ctx *x = vctx;
    if (!strcmp(f, "key")) {
        if (dm_pbtxt_scalar(p, f, colon, line, x->top->t)) return -1;
        return dm_pbtxt_tok_str(p, f, x->top->t, x->key, sizeof x->key);
    }
    if (!strcmp(f, "value")) {
        int close, mline;
        x->val[0] = 0;
        if (dm_pbtxt_message(p, f, &close, &mline)) return -1;
        return dm_pbtxt_sub(p, f, close, mline, param_value_field, x);
    }
    return dm_pbtxt_unknown(p, f, line, "parameters entry (key, value)");
}

static int parameters(dm_pbtxt *p, top_ctx *x, const char *f)
{
    dm_triton_config *c = x->c;
    int r, close, mline;
    dm_pbtxt_iter v;
    dm_pbtxt_messages_open(p, &v);
    while ((r = dm_pbtxt_messages_next(p, f, &v, &close, &mline)) > 0) {
        param_ctx pc = {.top = x};
        if (dm_pbtxt_sub(p, f, close, mline, param_field, &pc)) return -1;
        int i = 0;
        while (i < c->n_params && strcmp(c->param_keys[i], pc.key)) i++;
        if (i == c->n_params) {
            if (c->n_params == DM_TRITON_MAX_LIST) return dm_pbtxt_fail(p, mline, f, "more than %d entries", DM_TRITON_MAX_LIST);
            c->n_params++;
        }
        memcpy(c->param_keys[i], pc.key, sizeof pc.key);
        memcpy(c->param_vals[i], pc.val, sizeof pc.val);
    }
    return r;
}

static const char *const IGNORED[] = {
    "default_model_filename", "model_warmup", "optimization", "response_cache", "model_transaction_policy",
    "batch_input", "batch_output", "cc_model_filenames", "metric_tags", "model_repository_agents", "runtime",
};

static int top_field(dm_pbtxt *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    dm_triton_config *c = x->c;
    dm_pbtxt_tok *t = x->t;
    int close, mline;
    if (!strcmp(f, "name") || !strcmp(f, "platform") || !strcmp(f, "backend")) {
        char *dst = f[0] == 'n' ? c->name : f[0] == 'p' ? c->platform : c->backend;
        unsigned bit = f[0] == 'n' ? 1u : f[0] == 'p' ? 2u : 4u;
        if (dm_pbtxt_once(p, &x->seen, bit, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_str(p, f, t, dst, DM_TRITON_NAME);
    }
    if (!strcmp(f, "max_batch_size")) {
        if (dm_pbtxt_once(p, &x->seen, 8, f, line) || dm_pbtxt_scalar(p, f, colon, line, t)) return -1;
        return dm_pbtxt_tok_int(p, f, t, 0, INT32_MAX, &c->max_batch_size);
    }
    if (!strcmp(f, "input")) return tensors(p, x, f, 1);
    if (!strcmp(f, "output")) return tensors(p, x, f, 0);
    if (!strcmp(f, "dynamic_batching")) {
        if (c->dynamic_batching) return dm_pbtxt_fail(p, line, f, "set more than once (only one scheduling policy may be set)");
        db_ctx d = {.top = x};
        c->dynamic_batching = 1;
        x->line_db = line;
        if (dm_pbtxt_message(p, f, &close, &mline) || dm_pbtxt_sub(p, f, close, mline, dynbatch_field, &d)) return -1;
        if (d.priority_levels > 0 && (d.default_priority_level < 1 || d.default_priority_level > d.priority_levels))
            return dm_pbtxt_fail(p, d.prio_line, "dynamic_batching.default_priority_level",
                                 "%" PRId64 " must be in 1..priority_levels (%" PRId64 ")", d.default_priority_level,
                                 d.priority_levels);
        return 0;
    }
    if (!strcmp(f, "sequence_batching") || !strcmp(f, "ensemble_scheduling"))
        return dm_pbtxt_fail(p, line, f, "not supported by deepmoe (only dynamic_batching)");
    if (!strcmp(f, "instance_group")) return instance_groups(p, x, f);
    if (!strcmp(f, "version_policy")) {
        if (dm_pbtxt_once(p, &x->seen, 16, f, line) || dm_pbtxt_message(p, f, &close, &mline)) return -1;
        if (dm_pbtxt_sub(p, f, close, mline, vp_field, x)) return -1;
        return 0;
    }
    if (!strcmp(f, "parameters")) return parameters(p, x, f);
    for (int i = 0; i < NE(IGNORED); i++)
        if (!strcmp(f, IGNORED[i])) return dm_pbtxt_skip(p, f, colon, line);
    return dm_pbtxt_unknown(p, f, line, "ModelConfig");
}

/* ---------------------------------------------------------------- across fields */

static int unique_names(dm_pbtxt *p, const dm_triton_tensor *ts, int n, const int *lines, const char *f)
{
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(ts[i].name, ts[j].name))
                return dm_pbtxt_fail(p, lines[i], f, "duplicate name '%s' (also at line %d)", ts[i].name, lines[j]);
    return 0;
}

static int validate(dm_pbtxt *p, top_ctx *x)
{
    dm_triton_config *c = x->c;
    if (!c->platform[0] && !c->backend[0])
        return dm_pbtxt_fail(p, 1, "backend", "neither 'platform' nor 'backend' is set; one is required");
    if (unique_names(p, c->inputs, c->n_inputs, x->in_line, "input") ||
        unique_names(p, c->outputs, c->n_outputs, x->out_line, "output"))
        return -1;
    if (c->dynamic_batching) {
        if (c->max_batch_size == 0)
            return dm_pbtxt_fail(p, x->line_db, "dynamic_batching", "requires max_batch_size > 0 (max_batch_size is 0)");
        for (int i = 0; i < c->n_preferred; i++)
            if (c->preferred_batch_size[i] > c->max_batch_size)
                return dm_pbtxt_fail(p, x->pref_line[i], "dynamic_batching.preferred_batch_size",
                                     "preferred batch size %d exceeds max_batch_size %d", c->preferred_batch_size[i],
                                     c->max_batch_size);
        if (c->n_preferred == 0) c->preferred_batch_size[c->n_preferred++] = c->max_batch_size;
    }
    c->instance_count = x->n_groups ? (int)x->count_sum : 1;
    if (!c->instance_kind[0]) snprintf(c->instance_kind, sizeof c->instance_kind, "KIND_CPU");
    c->version_policy = x->vp_kind == 1 ? DM_TRITON_VP_ALL : x->vp_kind == 2 ? DM_TRITON_VP_SPECIFIC : DM_TRITON_VP_LATEST;
    if (c->version_policy == DM_TRITON_VP_LATEST && c->num_versions == 0) c->num_versions = 1;
    return 0;
}

/* ---------------------------------------------------------------- entry points */

dm_status dm_triton_config_parse(const char *text, size_t len, const char *path, dm_triton_config *out, dm_error *err)
{
    if ((!text && len) || !out) return dm_fail(err, DM_ERR_ARG, "dm_triton_config_parse: NULL argument");
    dm_triton_config *c = calloc(1, sizeof *c);
    dm_pbtxt_tok *t = malloc(sizeof *t);
    if (!c || !t) {
        free(c);
        free(t);
        return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path ? path : "config.pbtxt");
    }
    dm_pbtxt p;
    dm_pbtxt_init(&p, text, len, path, err);
    top_ctx x = {.c = c, .t = t, .vp_kind = -1};
    int r = dm_pbtxt_parse(&p, top_field, &x);
    if (!r) r = validate(&p, &x);
    if (!r) *out = *c;
    free(c);
    free(t);
    return r ? DM_ERR_FORMAT : DM_OK;
}

dm_status dm_triton_config_load(const char *path, dm_triton_config *out, dm_error *err)
{
    if (!path || !out) return dm_fail(err, DM_ERR_ARG, "dm_triton_config_load: NULL argument");
    char *buf;
    size_t n;
    dm_status s = dm_pbtxt_read_file(path, DM_TRITON_MAX_FILE, &buf, &n, err);
    if (s == DM_OK) s = dm_triton_config_parse(buf, n, path, out, err);
    free(buf);
    return s;
}

/* ---------------------------------------------------------------- the config of a deepmoe model */

void dm_triton_config_for_model(const dm_config *m, const char *name, int max_batch_size, dm_triton_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->backend, sizeof c->backend, "deepmoe");
    c->max_batch_size = max_batch_size;
    c->n_inputs = 1;
    c->inputs[0] = (dm_triton_tensor){.name = "input", .data_type = "TYPE_FP32", .n_dims = 1,
                                      .dims = {m->in_dim ? m->in_dim : m->dim}};
    int64_t lk = (int64_t)m->n_layers * m->top_k;
    c->n_outputs = 3;
    c->outputs[0] = (dm_triton_tensor){.name = "output", .data_type = "TYPE_FP32", .n_dims = 1,
                                       .dims = {m->n_classes ? m->n_classes : m->dim}};
    c->outputs[1] = (dm_triton_tensor){.name = "routing_experts", .data_type = "TYPE_INT32", .n_dims = 1, .dims = {lk}};
    c->outputs[2] = (dm_triton_tensor){.name = "routing_weights", .data_type = "TYPE_FP32", .n_dims = 1, .dims = {lk}};
    c->dynamic_batching = 1;
    c->n_preferred = 1;
    c->preferred_batch_size[0] = max_batch_size;
    c->max_queue_delay_us = 0;  /* Triton's default: no wait when idle, batches form under backlog */
    c->instance_count = 1;
    snprintf(c->instance_kind, sizeof c->instance_kind, "KIND_CPU");
    c->version_policy = DM_TRITON_VP_LATEST;
    c->num_versions = 1;
}
