/* model_io.c - models to and from safetensors.
 *
 * A deepmoe file carries its config as JSON in __metadata__["deepmoe.config"].
 * A plain PyTorch state dict of the seed model (no such key) is read by
 * inferring D, E and H from the tensor shapes, the expert type and the shared
 * experts from the names, the selection bias from gating.expert_bias, and k
 * from the caller (default 2). Every tensor of the model must be present with
 * its exact shape and the file must hold no other tensor. */
#include "base/base.h"
#include "io/safetensors.h"
#include "nn/config_fields.h"
#include "nn/model.h"
#include "nn/preprocess.h"
#include "io/model_io.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_KEY DM_CONFIG_KEY
#define DM_WTYPE_KEY "deepmoe.wtype"          /* the experts' weight type; absent = f32 */
#define DM_WGROUP_KEY "deepmoe.wgroup"        /* q8's group along K; absent = 0 (one scale per row) */
#define DM_ROUTER_WTYPE_KEY "deepmoe.router_wtype" /* the router's weight type; absent = f32 */
#define DM_EMBED_WTYPE_KEY "deepmoe.embed_wtype"   /* the embedding's and head's; absent = f32 */

/* ---------------------------------------------------------------- config JSON */

/* Every field of the list in its order (so the key order, and with it the text
 * that files and checkpoint CRCs hold, stays what it has been), each as its
 * kind says: integer, true/false, number (17 digits), name. */
char *dm_config_to_json(const dm_config *c)
{
    json_t *o = json_object();
    int ok = o != NULL;
    for (int i = 0; ok && i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        int v = f->kind == DM_KIND_FLOAT ? 0 : dm_config_get_int(c, f);
        json_t *j = NULL;
        switch (f->kind) {
        case DM_KIND_INT: j = json_integer(v); break;
        case DM_KIND_BOOL: j = json_boolean(v); break;
        case DM_KIND_FLOAT: j = json_real((double)dm_config_get_float(c, f)); break;
        case DM_KIND_ENUM: j = json_string(dm_config_enum_name(f, v)); break;
        }
        ok = j && !json_object_set_new(o, f->key, j);
    }
    char *s = ok ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

/* One key's value by its field's kind; ranges are dm_config_validate's. */
static dm_status set_key(dm_config *c, const dm_config_field *f, json_t *v, const char *path, dm_error *err)
{
    switch (f->kind) {
    case DM_KIND_INT:
        if (!json_is_integer(v) || json_integer_value(v) < -1000000000LL || json_integer_value(v) > 1000000000LL)
            return dm_fail(err, DM_ERR_FORMAT, "%s: config key \"%s\" must be an integer", path, f->key);
        *dm_config_int(c, f) = (int)json_integer_value(v);
        return DM_OK;
    case DM_KIND_BOOL:
        if (!json_is_boolean(v))
            return dm_fail(err, DM_ERR_FORMAT, "%s: config key \"%s\" must be true or false", path, f->key);
        *dm_config_int(c, f) = json_is_true(v);
        return DM_OK;
    case DM_KIND_FLOAT:
        if (!json_is_number(v))
            return dm_fail(err, DM_ERR_FORMAT, "%s: config key \"%s\" must be a number", path, f->key);
        *dm_config_float(c, f) = (float)json_number_value(v);
        return DM_OK;
    case DM_KIND_ENUM: {
        int n = (int)f->hi + 1, id;
        if (!json_is_string(v) || dm_names_parse(f->label, f->names, n, json_string_value(v), &id, NULL)) {
            char list[128];
            return dm_fail(err, DM_ERR_FORMAT, "%s: config key \"%s\" must be %s", path, f->key,
                           dm_names_list(f->names, n, 1, list, sizeof list));
        }
        *dm_config_int(c, f) = id;
        return DM_OK;
    }
    }
    return DM_OK;
}

dm_status dm_config_from_json(const char *text, dm_config *c, const char *path, dm_error *err)
{
    json_error_t je;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return dm_fail(err, DM_ERR_FORMAT, "%s: metadata \"%s\" is not a JSON object (%s)", path,
                       CONFIG_KEY, o ? "wrong type" : je.text);
    }
    dm_config_default(c);
    c->hidden = 0;  /* absent keys: hidden = dim / 2, shared_hidden = hidden */
    const char *key;
    json_t *v;
    dm_status st = DM_OK;
    json_object_foreach(o, key, v) {
        const dm_config_field *k = dm_config_field_by_key(key);
        if (!k) {
            st = dm_fail(err, DM_ERR_FORMAT, "%s: unknown config key \"%s\" (written by a newer deepmoe?)", path, key);
            break;
        }
        if ((st = set_key(c, k, v, path, err))) break;
    }
    json_decref(o);
    return st;
}

/* ---------------------------------------------------------------- inference from names */

static int count_prefixed(const dm_st_file *f, const char *prefix, const char *suffix)
{
    int n = 0;
    char name[DM_NAME_MAX];
    for (;;) {
        snprintf(name, sizeof name, "%s.%d.%s", prefix, n, suffix);
        if (!dm_st_find(f, name)) return n;
        n++;
    }
}

/* A tensor dimension as a config width; one too large for an int becomes -1,
 * which validation then refuses with its range. */
static int as_width(int64_t v) { return v > INT32_MAX ? -1 : (int)v; }

static dm_status infer_config(const dm_st_file *f, int top_k, dm_config *c, dm_error *err)
{
    const char *path = f->path;
    dm_config_default(c);
    const dm_st_tensor *g = dm_st_find(f, "gating.gate.weight");
    if (!g || g->ndim != 2)
        return dm_fail(err, DM_ERR_FORMAT, "%s: no deepmoe metadata and no 2-D tensor gating.gate.weight: "
                       "not a deepmoe or seed-model state dict", path);
    c->n_experts = as_width(g->shape[0]);
    c->dim = as_width(g->shape[1]);
    const char *up = NULL;  /* the kind whose up weight is there */
    char name0[DM_NAME_MAX];
    for (int k = 0; !up && k < DM_N_EXPERT_KINDS; k++) {
        snprintf(name0, sizeof name0, "experts.0.%s", dm_expert_kinds[k].tensors[0].suffix);
        if (dm_st_find(f, name0)) {
            c->expert = (dm_expert_kind)k;
            up = dm_expert_kinds[k].tensors[0].suffix;
        }
    }
    if (!up)
        return dm_fail(err, DM_ERR_FORMAT, "%s: missing tensor experts.0.net.0.weight (or experts.0.w1.weight)", path);
    char name[DM_NAME_MAX];
    snprintf(name, sizeof name, "experts.0.%s", up);
    const dm_st_tensor *w1 = dm_st_find(f, name);
    if (w1->ndim != 2)
        return dm_fail(err, DM_ERR_SHAPE, "%s: tensor %s must be 2-D", path, name);
    c->hidden = as_width(w1->shape[0]);
    c->n_shared = count_prefixed(f, "shared_experts", up);
    if (c->n_shared > 0) {
        snprintf(name, sizeof name, "shared_experts.0.%s", up);
        const dm_st_tensor *s = dm_st_find(f, name);
        c->shared_hidden = s->ndim == 2 ? as_width(s->shape[0]) : -1;
    }
    c->selection_bias = dm_st_find(f, "gating.expert_bias") != NULL;
    c->top_k = top_k > 0 ? top_k : 2;
    if (c->top_k > c->n_experts)
        return dm_fail(err, DM_ERR_ARG, "%s: top-k %d exceeds the model's %d experts (set --top-k)",
                       path, c->top_k, c->n_experts);
    return DM_OK;
}

/* ---------------------------------------------------------------- load */

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Before anything is built, the file must be able to hold the model its
 * config describes: every parameter in the smallest float type (2 bytes),
 * and nearly as many tensors as the model has (a few missing ones are left
 * to the name checks below, which say which). So a small file cannot make the
 * loader build and zero a huge model on its word: what is built is bounded by
 * the file's size. */
#define MISSING_SLACK 64

static dm_status check_holds(const dm_st_file *f, const dm_config *cin, int typed, dm_error *err)
{
    dm_config c = *cin;
    dm_error e2;
    int64_t n_tensors = 0, n_params = 0;
    if (dm_config_validate(&c, &e2) || dm_config_size(&c, &n_tensors, &n_params, &e2))
        return dm_fail(err, e2.code, "%s: %s", f->path, e2.msg);
    /* compressed experts: at least half a byte per parameter (nm24:q8 takes 5/8) */
    uint64_t most = typed ? f->data_size * 2 : f->data_size / 2;
    if ((uint64_t)n_params > most || n_tensors > (int64_t)f->n_tensors + MISSING_SLACK)
        return dm_fail(err, DM_ERR_FORMAT, "%s: the config describes %lld tensors of %lld values in all, "
                       "but the file holds %d tensors in %llu bytes of data: it cannot be this model", f->path,
                       (long long)n_tensors, (long long)n_params, f->n_tensors, (unsigned long long)f->data_size);
    return DM_OK;
}

/* Is t a part its weight's type declares beside the weight itself ("<weight
 * name><suffix>": q8's ".scale", nm24's ".idx")? Its dtype and shape are
 * checked where the part is read. */
static int declared_extra(const dm_model *m, const dm_st_tensor *t)
{
    size_t n = strlen(t->name);
    for (int i = 0; i < DM_WT_COUNT; i++)
        for (int j = 1; j < dm_wtypes[i].n_parts; j++) {
            const char *suf = dm_wtypes[i].parts[j].suffix;
            size_t k = strlen(suf);
            if (n <= k || strcmp(t->name + n - k, suf) || n - k >= DM_NAME_MAX) continue;
            char base[DM_NAME_MAX];
            memcpy(base, t->name, n - k);
            base[n - k] = 0;
            int ti = dm_model_tensor_index(m, base);
            if (ti < 0 || !m->tensors[ti].wm) continue;
            const dm_wtype *wt = m->tensors[ti].wm->type;
            for (int jj = 1; jj < wt->n_parts; jj++)
                if (!strcmp(wt->parts[jj].suffix, suf)) return 1;
        }
    return 0;
}

static int is_preprocess(const char *name) { return !strcmp(name, DM_PRE_SCALE) || !strcmp(name, DM_PRE_SHIFT); }

/* The input preprocessing (preprocess.scale, preprocess.shift, deepmoe.normalize):
 * both tensors or neither, F32 of shape [in], finite, under a known method name;
 * "none" has no tensors, the others need them. A file with none of it has no
 * preprocessing (every file before it). */
static dm_status read_preprocess(const dm_st_file *f, dm_model *m, dm_error *err)
{
    const char *path = f->path, *method = dm_st_meta(f, DM_NORMALIZE_KEY);
    const dm_st_tensor *t[2] = {dm_st_find(f, DM_PRE_SCALE), dm_st_find(f, DM_PRE_SHIFT)};
    static const char *const names[2] = {DM_PRE_SCALE, DM_PRE_SHIFT};
    if (!method && !t[0] && !t[1]) return DM_OK;
    if (!t[0] != !t[1])
        return dm_fail(err, DM_ERR_FORMAT, "%s: tensor %s without %s: the input preprocessing needs both", path,
                       names[t[0] ? 0 : 1], names[t[0] ? 1 : 0]);
    if (!method)
        return dm_fail(err, DM_ERR_FORMAT, "%s: tensors %s and %s without metadata %s (the method's name)", path,
                       DM_PRE_SCALE, DM_PRE_SHIFT, DM_NORMALIZE_KEY);
    int id = dm_normalize_parse(method);
    if (id < 0)
        return dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s \"%.40s\" is not a preprocessing this build knows "
                       "(known: " DM_NORMALIZE_NAMES ")", path, DM_NORMALIZE_KEY, method);
    if (id == DM_NORM_NONE && t[0])
        return dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s is \"none\" but the file holds %s and %s", path,
                       DM_NORMALIZE_KEY, DM_PRE_SCALE, DM_PRE_SHIFT);
    if (id != DM_NORM_NONE && !t[0])
        return dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s is \"%s\" but the file has no %s and %s", path,
                       DM_NORMALIZE_KEY, method, DM_PRE_SCALE, DM_PRE_SHIFT);
    if (id == DM_NORM_NONE) return dm_model_set_preprocess(m, "none", NULL, NULL, err);
    int in = dm_model_in_width(&m->cfg);
    float *v[2] = {NULL, NULL};
    dm_status st = DM_OK;
    for (int k = 0; k < 2 && !st; k++) {
        char got[64];
        shape_str(got, sizeof got, t[k]->ndim, t[k]->shape);
        if (t[k]->ndim != 1 || t[k]->shape[0] != in)
            st = dm_fail(err, DM_ERR_SHAPE, "%s: tensor %s has shape %s, expected [%d] (the model's input width)",
                         path, names[k], got, in);
        else if (t[k]->dtype != DM_DT_F32)
            st = dm_fail(err, DM_ERR_FORMAT, "%s: tensor %s is %s, expected F32", path, names[k],
                         dm_dtypes[t[k]->dtype].name);
        else if (!(v[k] = dm_alloc_array((size_t)in, sizeof(float))))
            st = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
        else
            st = dm_st_read_f32(f, t[k], v[k], err);
        for (int j = 0; !st && j < in; j++)
            if (!isfinite(v[k][j]))
                st = dm_fail(err, DM_ERR_FORMAT, "%s: tensor %s: value %d is %s; the preprocessing must be finite",
                             path, names[k], j, isnan(v[k][j]) ? "NaN" : "Inf");
    }
    if (!st) st = dm_model_set_preprocess(m, method, v[0], v[1], err);
    dm_free(v[0]);
    dm_free(v[1]);
    return st;
}

/* A weight type from the metadata key (absent: f32). */
static dm_status meta_wtype(const dm_st_file *f, const char *key, const dm_wtype **out, dm_error *err)
{
    const char *name = dm_st_meta(f, key);
    *out = name ? dm_wtype_by_name(name) : &dm_wtypes[DM_WT_F32];
    if (!*out)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "%s: metadata %s: weight type \"%.40s\" is not one this build knows "
                       "(known: %s)", f->path, key, name, dm_wtype_names());
    return DM_OK;
}

/* The part p of tensor d: name, dtype, shape [rows, cols] (a 1-column part
 * past the first: [rows]) checked, then its bytes copied. Scales must be finite
 * and >= 0, nm24 index nibbles two distinct ascending positions. */
static dm_status read_part(const dm_st_file *f, const dm_tensor_desc *d, const dm_wmat *w, int p, void *dst,
                           dm_error *err)
{
    const dm_wtype *wt = w->type;
    const dm_wpart *wp = &wt->parts[p];
    char name[DM_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", d->name, wp->suffix);
    int64_t rows = d->shape[0], cols = wp->cols(w->K, w->group);
    const dm_st_tensor *t = dm_st_find(f, name);
    if (!t)
        return dm_fail(err, DM_ERR_FORMAT, "%s: missing tensor %s (the %s weight %s needs it)", f->path, name,
                       wt->name, d->name);
    if (t->dtype != (dm_dtype)dm_dtype_parse(wp->dtype))
        return dm_fail(err, DM_ERR_FORMAT, "%s: tensor %s is %s, expected %s (weight type %s)", f->path, name,
                       dm_dtypes[t->dtype].name, wp->dtype, wt->name);
    int flat = p > 0 && cols == 1;
    int same = t->ndim == (flat ? 1 : 2) && t->shape[0] == rows && (flat || t->shape[1] == cols);
    if (!same) {
        char got[64];
        shape_str(got, sizeof got, t->ndim, t->shape);
        if (flat)
            return dm_fail(err, DM_ERR_SHAPE, "%s: tensor %s has shape %s, expected [%lld] (weight type %s)", f->path,
                           name, got, (long long)rows, wt->name);
        return dm_fail(err, DM_ERR_SHAPE, "%s: tensor %s has shape %s, expected [%lld, %lld] (weight type %s%s)",
                       f->path, name, got, (long long)rows, (long long)cols, wt->name,
                       w->group ? ", group from " DM_WGROUP_KEY : "");
    }
    size_t n = (size_t)rows * (size_t)cols * (size_t)wp->elem;
    if (n) memcpy(dst, t->data, n);
    if (!strcmp(wp->dtype, "F32") && p > 0) {  /* scales */
        const float *v = dst;
        for (size_t j = 0; j < (size_t)rows * (size_t)cols; j++)
            if (!isfinite(v[j]) || v[j] < 0)
                return dm_fail(err, DM_ERR_FORMAT, "%s: corrupt scale tensor %s: value %zu is %g (scales are finite "
                               "and >= 0)", f->path, name, j, (double)v[j]);
    }
    if (!strcmp(wp->dtype, "I8")) {  /* symmetric int8: -128 is never written (and would overflow sums) */
        const int8_t *q = dst;
        for (size_t j = 0; j < (size_t)rows * (size_t)cols; j++)
            if (q[j] == -128)
                return dm_fail(err, DM_ERR_FORMAT, "%s: corrupt tensor %s: value %zu is -128 (int8 weights are in "
                               "[-127, 127])", f->path, name, j);
    }
    if (!strcmp(wp->suffix, ".idx")) {
        const uint8_t *b = dst;
        int64_t groups = w->K / 4;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < groups; g++) {
                int nib = (b[r * cols + g / 2] >> (4 * (g & 1))) & 15;
                if ((nib & 3) >= (nib >> 2))
                    return dm_fail(err, DM_ERR_FORMAT, "%s: corrupt index tensor %s: row %lld, group %lld holds "
                                   "positions %d and %d (2:4 keeps two distinct positions, ascending)", f->path, name,
                                   (long long)r, (long long)g, nib & 3, nib >> 2);
            }
    }
    return DM_OK;
}

typedef struct file_fill { const dm_st_file *f; const dm_model *m; } file_fill;

static dm_status file_tensor(void *ctx, int i, void *const part[], dm_error *err)
{
    file_fill *ff = ctx;
    const dm_tensor_desc *d = &ff->m->tensors[i];
    dm_status st = DM_OK;
    for (int p = 0; !st && p < d->wm->type->n_parts; p++) st = read_part(ff->f, d, d->wm, p, part[p], err);
    return st;
}

dm_status dm_model_load(const char *path, const dm_model_opts *o, dm_model **out, dm_error *err)
{
    *out = NULL;
    if (o && dm_check_struct_size(o->struct_size, sizeof *o, "dm_model_opts", "dm_model_opts_default", err))
        return DM_ERR_ARG;
    dm_st_file f;
    dm_status st = dm_st_open(path, &f, err);
    if (st) return st;
    dm_config c;
    const char *meta = dm_st_meta(&f, CONFIG_KEY);
    st = meta ? dm_config_from_json(meta, &c, path, err) : infer_config(&f, o ? o->top_k : 0, &c, err);
    /* the weight types (absent: f32, every file before weight types) */
    const dm_wtype *wt = NULL, *gate_wt = NULL, *io_wt = NULL;
    int group = 0;
    if (!st) st = meta_wtype(&f, DM_WTYPE_KEY, &wt, err);
    if (!st) st = meta_wtype(&f, DM_ROUTER_WTYPE_KEY, &gate_wt, err);
    if (!st) st = meta_wtype(&f, DM_EMBED_WTYPE_KEY, &io_wt, err);
    const char *gs = dm_st_meta(&f, DM_WGROUP_KEY);
    if (!st && gs) {
        char *end;
        long g = strtol(gs, &end, 10);
        if (*end || end == gs || (g != 0 && g != 32 && g != 64 && g != 128) ||
            !(wt->grouped || gate_wt->grouped || io_wt->grouped))
            st = dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s \"%.20s\": a group is 0, 32, 64 or 128, and only "
                         "for q8 weights", path, DM_WGROUP_KEY, gs);
        group = (int)g;
    }
    if (!st && gate_wt != wt && gate_wt->id != DM_WT_F32)
        st = dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s is %s: the router is f32 or of the experts' type (%s)", path,
                     DM_ROUTER_WTYPE_KEY, gate_wt->name, wt->name);
    if (!st && io_wt != wt && io_wt->id != DM_WT_F32)
        st = dm_fail(err, DM_ERR_FORMAT, "%s: metadata %s is %s: the embedding and head are f32 or of the experts' "
                     "type (%s)", path, DM_EMBED_WTYPE_KEY, io_wt->name, wt->name);
    int typed = !st && (wt->id != DM_WT_F32 || gate_wt->id != DM_WT_F32 || io_wt->id != DM_WT_F32);
    dm_model *m = NULL;
    if (!st) st = check_holds(&f, &c, typed, err);
    if (!st) {
        dm_error e2;
        dm_model_opts mo;
        if (o) mo = *o;
        else dm_model_opts_default(&mo);
        st = dm_model_create_typed(&c, &mo, wt, group, gate_wt, io_wt, &m, &e2);
        if (st) dm_fail(err, st, "%s: %s", path, e2.msg);
    }
    /* every model tensor, exact shape (a typed operand's tensors: their parts, below) */
    for (int i = 0; !st && i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        if (d->wm && d->wm->type->id != DM_WT_F32) continue;
        const dm_st_tensor *t = dm_st_find(&f, d->name);
        char want[64], got[64];
        shape_str(want, sizeof want, d->ndim, d->shape);
        if (!t) {
            st = dm_fail(err, DM_ERR_FORMAT, "%s: missing tensor %s (expected shape %s)", path, d->name, want);
            break;
        }
        int same = t->ndim == d->ndim;
        for (int j = 0; same && j < d->ndim; j++) same = t->shape[j] == d->shape[j];
        if (!same) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            st = dm_fail(err, DM_ERR_SHAPE, "%s: tensor %s has shape %s, expected %s", path, d->name, got, want);
            break;
        }
        st = dm_st_read_f32(&f, t, m->params + d->offset, err);
    }
    /* and nothing else but the parts the weight types declare (scales, indices):
     * an extra tensor means the file is not the model we think */
    for (int i = 0; !st && i < f.n_tensors; i++)
        if (dm_model_tensor_index(m, f.tensors[i].name) < 0 && !declared_extra(m, &f.tensors[i]) &&
            !is_preprocess(f.tensors[i].name))
            st = dm_fail(err, DM_ERR_FORMAT, "%s: unexpected tensor %s (not part of a model with router %s, experts %s, E=%d, shared=%d, weights %s)",
                         path, f.tensors[i].name, dm_router_name(c.router), dm_expert_name(c.expert),
                         c.n_experts, c.n_shared, wt->name);
    if (!st) st = read_preprocess(&f, m, err);
    if (!st && (st = dm_model_pack_masters(m))) dm_fail(err, st, "model: out of memory packing weights");
    if (!st && typed) {
        file_fill ff = {&f, m};
        st = dm_model_fill_typed(m, file_tensor, &ff, err);
    }
    dm_st_close(&f);
    /* a typed model's masters were never filled: its values are the packed ones */
    if (!st && (typed || (o && o->packed_only))) st = dm_model_drop_master(m, err);
    if (!st && typed && o && o->dequantize) {  /* an f32 model of the dequantized values */
        dm_model *d = NULL;
        const dm_wtype *f32 = &dm_wtypes[DM_WT_F32];
        st = dm_model_convert(m, f32, 0, f32, f32, m->isa, &d, err);
        dm_model_free(m);
        m = d;
        if (!st) m->loaded_wtype = wt;
    }
    if (st) {
        dm_model_free(m);
        return st;
    }
    *out = m;
    return DM_OK;
}

/* ---------------------------------------------------------------- save */

dm_status dm_model_save(const dm_model *m, const char *path, dm_error *err)
{
    return dm_model_save_meta(m, path, NULL, 0, err);
}

/* The file parts of tensor d (a typed operand's rows) into buf: its operand
 * unpacked, the tensor's rows of each part copied out; part[p] set. */
static dm_status typed_parts(const dm_tensor_desc *d, unsigned char *buf, void *part[DM_WPARTS], dm_error *err)
{
    const dm_wmat *w = d->wm;
    const dm_wtype *t = w->type;
    unsigned char *all = dm_alloc(dm_wtype_file_bytes(t, w->N, w->K, w->group) + 64);
    if (!all) return dm_fail(err, DM_ERR_NOMEM, "out of memory unpacking %s", d->name);
    void *wp[DM_WPARTS];
    dm_wtype_split(t, w->N, w->K, w->group, all, wp);
    dm_wmat_unpack(w, wp);
    dm_wtype_split(t, (int)d->shape[0], w->K, w->group, buf, part);
    for (int p = 0; p < t->n_parts; p++) {
        size_t row = (size_t)t->parts[p].cols(w->K, w->group) * (size_t)t->parts[p].elem;
        memcpy(part[p], (unsigned char *)wp[p] + (size_t)d->wm_row0 * row, (size_t)d->shape[0] * row);
    }
    dm_free(all);
    return DM_OK;
}

dm_status dm_model_save_meta(const dm_model *m, const char *path, const char *const *extra, int n_extra,
                             dm_error *err)
{
    if (n_extra < 0 || n_extra > DM_MODEL_EXTRA_MAX || (n_extra && !extra))
        return dm_fail(err, DM_ERR_ARG, "%s: dm_model_save_meta: %d extra metadata pairs", path, n_extra);
    int max_out = m->n_tensors * DM_WPARTS + 2;   /* every part, + the preprocessing's two */
    dm_st_out *t = calloc((size_t)max_out, sizeof *t);
    char (*names)[DM_NAME_MAX + 16] = calloc((size_t)max_out, sizeof *names);
    char *cfg = dm_config_to_json(&m->cfg);
    /* a packed-only model's f32 weights are unpacked (exact) into one buffer, its
     * typed ones into their file parts */
    int64_t unstored = 0;
    size_t typed = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        if (d->stored) continue;
        if (d->wm->type->id == DM_WT_F32) unstored += d->numel;
        else typed += dm_wtype_file_bytes(d->wm->type, (int)d->shape[0], d->wm->K, d->wm->group);
    }
    float *tmp = unstored ? dm_alloc_array((size_t)unstored, sizeof(float)) : NULL;
    unsigned char *tbuf = typed ? dm_alloc(typed) : NULL;
    dm_status st = DM_OK;
    if (!t || !names || !cfg || (unstored && !tmp) || (typed && !tbuf)) st = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    int64_t at = 0;
    size_t tat = 0;
    int n_out = 0;
    for (int i = 0; !st && i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        dm_st_out *o = &t[n_out++];
        o->name = d->name;
        o->ndim = d->ndim;
        o->shape[0] = d->shape[0];
        o->shape[1] = d->shape[1];
        dm_error e2;
        if (d->stored) {
            o->data = m->params + d->offset;
        } else if (d->wm->type->id == DM_WT_F32) {
            if ((st = dm_model_tensor_values(m, i, tmp + at, &e2))) {
                dm_fail(err, e2.code, "%s: %s", path, e2.msg);
                break;
            }
            o->data = tmp + at;
            at += d->numel;
        } else {
            const dm_wtype *wt = d->wm->type;
            void *part[DM_WPARTS];
            if ((st = typed_parts(d, tbuf + tat, part, &e2))) {
                dm_fail(err, e2.code, "%s: %s", path, e2.msg);
                break;
            }
            tat += dm_wtype_file_bytes(wt, (int)d->shape[0], d->wm->K, d->wm->group);
            for (int p = 0; p < wt->n_parts; p++) {
                dm_st_out *q = p ? &t[n_out++] : o;
                int64_t cols = wt->parts[p].cols(d->wm->K, d->wm->group);
                snprintf(names[i * DM_WPARTS + p], sizeof names[0], "%s%s", d->name, wt->parts[p].suffix);
                q->name = names[i * DM_WPARTS + p];
                q->ndim = p > 0 && cols == 1 ? 1 : 2;
                q->shape[0] = d->shape[0];
                q->shape[1] = q->ndim == 2 ? cols : 0;
                q->raw = part[p];
                q->dtype = (dm_dtype)dm_dtype_parse(wt->parts[p].dtype);
            }
        }
    }
    /* the input preprocessing: after the parameters, outside their layout */
    int n_meta = 3;
    const float *pre[2] = {m->pre.scale, m->pre.shift};
    static const char *const pre_names[2] = {DM_PRE_SCALE, DM_PRE_SHIFT};
    for (int k = 0; !st && k < 2 && pre[0]; k++)
        t[n_out++] = (dm_st_out){.name = pre_names[k], .ndim = 1, .shape = {dm_model_in_width(&m->cfg)},
                                 .data = pre[k]};
    const char *meta[2 * (7 + DM_MODEL_EXTRA_MAX)] = {"format", "pt", CONFIG_KEY, cfg, "deepmoe.version", DM_VERSION};
    char group[16];
    if (m->pre.method != DM_NORM_DEFAULT) {
        meta[2 * n_meta] = DM_NORMALIZE_KEY;
        meta[2 * n_meta + 1] = dm_normalize_name(m->pre.method);
        n_meta++;
    }
    if (m->wtype->id != DM_WT_F32) {  /* f32 files stay as they were */
        meta[2 * n_meta] = DM_WTYPE_KEY;
        meta[2 * n_meta + 1] = m->wtype->name;
        n_meta++;
    }
    if (m->gate_wtype->id != DM_WT_F32) {
        meta[2 * n_meta] = DM_ROUTER_WTYPE_KEY;
        meta[2 * n_meta + 1] = m->gate_wtype->name;
        n_meta++;
    }
    if (m->io_wtype->id != DM_WT_F32) {
        meta[2 * n_meta] = DM_EMBED_WTYPE_KEY;
        meta[2 * n_meta + 1] = m->io_wtype->name;
        n_meta++;
    }
    if (m->wgroup) {
        snprintf(group, sizeof group, "%d", m->wgroup);
        meta[2 * n_meta] = DM_WGROUP_KEY;
        meta[2 * n_meta + 1] = group;
        n_meta++;
    }
    for (int i = 0; i < 2 * n_extra; i++) meta[2 * n_meta + i] = extra[i];
    if (!st) st = dm_st_write(path, t, n_out, meta, n_meta + n_extra, err);
    dm_free(tmp);
    dm_free(tbuf);
    free(t);
    free(names);
    free(cfg);
    return st;
}
