/* config.c - the MoE layer's configuration: defaults, names, validation, all
 * driven by the field list in config_fields.h. */
#include "base/base.h"
#include "nn/config_fields.h"
#include "nn/model.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- names */

const char *const dm_router_names[] = {
    [DM_ROUTER_SEED] = "seed", [DM_ROUTER_SOFTMAX] = "softmax", [DM_ROUTER_SIGMOID] = "sigmoid",
};
const char *const dm_expert_names[] = {
    [DM_EXPERT_SEED] = "seed", [DM_EXPERT_SWIGLU] = "swiglu",
};
#define N_ROUTERS ((int)(sizeof dm_router_names / sizeof dm_router_names[0]))
#define N_EXPERTS ((int)(sizeof dm_expert_names / sizeof dm_expert_names[0]))

const char *dm_router_name(dm_router_kind r)
{
    return (unsigned)r < (unsigned)N_ROUTERS ? dm_router_names[r] : "unknown";
}

const char *dm_expert_name(dm_expert_kind e)
{
    return (unsigned)e < (unsigned)N_EXPERTS ? dm_expert_names[e] : "unknown";
}

const char *dm_names_list(const char *const *names, int n, int quote, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, quote ? "%s\"%s\"" : "%s%s",
                              i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    return buf;
}

dm_status dm_names_parse(const char *what, const char *const *names, int n, const char *name, int *out,
                         dm_error *err)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) {
            *out = i;
            return DM_OK;
        }
    char list[256];
    dm_names_list(names, n, 0, list, sizeof list);
    return dm_fail(err, DM_ERR_ARG, "unknown %s '%.64s' (expected %s)", what, name ? name : "(null)", list);
}

dm_status dm_router_parse(const char *name, dm_router_kind *out, dm_error *err)
{
    int v = 0;
    dm_status st = dm_names_parse("router", dm_router_names, N_ROUTERS, name, &v, err);
    if (!st) *out = (dm_router_kind)v;
    return st;
}

dm_status dm_expert_parse(const char *name, dm_expert_kind *out, dm_error *err)
{
    int v = 0;
    dm_status st = dm_names_parse("expert type", dm_expert_names, N_EXPERTS, name, &v, err);
    if (!st) *out = (dm_expert_kind)v;
    return st;
}

/* ---------------------------------------------------------------- the field list */

/* Each X entry's kind and cli columns select a macro by pasting: INT, BOOL,
 * FLOAT, ENUM(type, names); CLI(flag, metavar, help), NOCLI. */
#define KIND_INT DM_KIND_INT
#define KIND_BOOL DM_KIND_BOOL
#define KIND_FLOAT DM_KIND_FLOAT
#define KIND_ENUM(type, names) DM_KIND_ENUM
#define NAMES_INT NULL
#define NAMES_BOOL NULL
#define NAMES_FLOAT NULL
#define NAMES_ENUM(type, names) names
#define CLI_CLI(flag, metavar, help) flag, metavar, help
#define CLI_NOCLI NULL, NULL, NULL
#define FIELD(name, kind, key, label, def, lo, hi, cli) \
    [DM_CF_##name] = {#name, key, label, KIND_##kind, offsetof(dm_config, name), lo, hi, NAMES_##kind, CLI_##cli},
const dm_config_field dm_config_fields[DM_CF_COUNT] = {DM_CONFIG_FIELDS(FIELD)};
#undef FIELD

/* The struct in deepmoe.h against the list: a mirror built from the list must
 * have the same size, and every listed member the same offset and type, so a
 * member out of order, of another type, or missing from either side fails
 * here. (A member added to the struct alone, where the padding at its end can
 * hold it without changing the size, is caught by dm_config_default's
 * positional initializer below.) */
#define CTYPE_INT int
#define CTYPE_BOOL int
#define CTYPE_FLOAT float
#define CTYPE_ENUM(type, names) type
#define MIRROR(name, kind, ...) CTYPE_##kind name;
struct config_mirror { size_t struct_size; DM_CONFIG_FIELDS(MIRROR) };
#undef MIRROR
_Static_assert(sizeof(dm_config) == sizeof(struct config_mirror),
               "dm_config (deepmoe.h) and DM_CONFIG_FIELDS (config_fields.h) list different fields");
_Static_assert(offsetof(dm_config, struct_size) == 0, "struct_size must stay the first member");
/* an enum field's name table names every value 0..hi, and its storage is an int */
#define N_NAMES_INT 0
#define N_NAMES_BOOL 0
#define N_NAMES_FLOAT 0
#define N_NAMES_ENUM(type, names) (sizeof names / sizeof names[0])
#define CHECK_FIELD(name, kind, key, label, def, lo, hi, cli)                                               \
    _Static_assert(offsetof(dm_config, name) == offsetof(struct config_mirror, name),                       \
                   "dm_config." #name " is not where DM_CONFIG_FIELDS puts it (order, or a member missing)"); \
    _Static_assert(_Generic(((dm_config *)0)->name, CTYPE_##kind: 1, default: 0),                          \
                   "dm_config." #name " is not of the type its DM_CONFIG_FIELDS kind says");                \
    _Static_assert(sizeof(((dm_config *)0)->name) == sizeof(int) || KIND_##kind == DM_KIND_FLOAT,           \
                   "dm_config." #name ": the field accessors read an int");                                 \
    _Static_assert(KIND_##kind != DM_KIND_ENUM || N_NAMES_##kind == (size_t)(hi) + 1,                       \
                   "dm_config." #name ": the name table must name every value 0..hi");
DM_CONFIG_FIELDS(CHECK_FIELD)
#undef CHECK_FIELD

/* ---------------------------------------------------------------- defaults and fields */

void dm_config_default(dm_config *c)
{
    /* Positional, in list order, on purpose: a dm_config member that the list
     * lacks is then a missing initializer, an error even where the padding at
     * the struct's end hides it from the size check above. */
#define DEFAULT(name, kind, key, label, def, ...) (def),
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wmissing-field-initializers"
    *c = (dm_config){sizeof(dm_config), DM_CONFIG_FIELDS(DEFAULT)};
#pragma GCC diagnostic pop
#undef DEFAULT
}

const dm_config_field *dm_config_field_by_key(const char *key)
{
    for (int i = 0; i < DM_CF_COUNT; i++)
        if (!strcmp(key, dm_config_fields[i].key)) return &dm_config_fields[i];
    return NULL;
}

int dm_config_field_count(void) { return DM_CF_COUNT; }

const dm_config_field *dm_config_field_at(int i) { return i >= 0 && i < DM_CF_COUNT ? &dm_config_fields[i] : NULL; }

dm_status dm_config_field_enum(const dm_config_field *f, const char *name, int *out, dm_error *err)
{
    if (!f || f->kind != DM_KIND_ENUM) return dm_fail(err, DM_ERR_ARG, "dm_config_field_enum: not an enum field");
    return dm_names_parse(f->label, f->names, (int)f->hi + 1, name, out, err);
}

const char *dm_config_enum_name(const dm_config_field *f, int v)
{
    return v >= 0 && v <= (int)f->hi ? f->names[v] : "unknown";
}

const char *dm_config_field_str(const dm_config *c, const dm_config_field *f, char *buf, size_t n)
{
    int v = f->kind == DM_KIND_FLOAT ? 0 : dm_config_get_int(c, f);
    switch (f->kind) {
    case DM_KIND_INT: snprintf(buf, n, "%d", v); break;
    case DM_KIND_BOOL: snprintf(buf, n, "%s", v ? "true" : "false"); break;
    case DM_KIND_FLOAT: snprintf(buf, n, "%.9g", (double)dm_config_get_float(c, f)); break;
    case DM_KIND_ENUM: snprintf(buf, n, "%s", dm_config_enum_name(f, v)); break;
    }
    return buf;
}

int dm_config_diff(const dm_config *a, const dm_config *b)
{
    for (int i = 0; i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        int same = f->kind == DM_KIND_FLOAT ? dm_config_get_float(a, f) == dm_config_get_float(b, f)
                                            : dm_config_get_int(a, f) == dm_config_get_int(b, f);
        if (!same) return i;
    }
    return -1;
}

/* ---------------------------------------------------------------- validation */

/* One expert's parameters and tensors. Widths <= 2^20: fits int64 easily. */
int64_t dm_expert_numel(const dm_config *c, int64_t h)
{
    const dm_expert_ops *ops = dm_expert_ops_of(c);
    int64_t n = 0;
    for (int i = 0; i < ops->n_tensors; i++) n += dm_expert_tensor_numel(&ops->tensors[i], h, c->dim);
    return n;
}

static int expert_tensors(const dm_config *c) { return dm_expert_ops_of(c)->n_tensors; }

dm_status dm_config_size(const dm_config *c, int64_t *n_tensors, int64_t *n_params, dm_error *err)
{
    int64_t D = c->dim, E = c->n_experts, S = c->n_shared;
    /* the largest single tensor: an expert matrix, the router, the embedding or the head */
    int64_t big = DM_MAX(DM_MAX((int64_t)c->hidden, c->n_shared ? (int64_t)c->shared_hidden : 0), E) * D;
    big = DM_MAX(big, DM_MAX((int64_t)c->in_dim, (int64_t)c->n_classes) * D);
    if (big > DM_MAX_TENSOR_NUMEL)
        return dm_fail(err, DM_ERR_ARG, "a tensor of %lld elements is larger than the %lld supported "
                       "(dims multiply: e.g. hidden x dim)", (long long)big, (long long)DM_MAX_TENSOR_NUMEL);
    /* one layer: <= 2^13 experts of < 2^42 parameters each, so < 2^56 */
    int64_t layer_p = E * D + E + (c->selection_bias ? E : 0) + E * dm_expert_numel(c, c->hidden) +
                      S * dm_expert_numel(c, c->shared_hidden);
    int64_t layer_t = 2 + (c->selection_bias ? 1 : 0) + (E + S) * expert_tensors(c);
    int64_t extra_p = (c->in_dim ? D * c->in_dim + D : 0) + (c->n_classes ? 2 * D + (int64_t)c->n_classes * D + c->n_classes : 0);
    int64_t extra_t = (c->in_dim ? 2 : 0) + (c->n_classes ? 4 : 0), L = c->n_layers;
    if (layer_p > (DM_MAX_PARAMS - extra_p) / L)
        return dm_fail(err, DM_ERR_ARG, "%lld layers of %lld parameters each are more than the %lld supported",
                       (long long)L, (long long)layer_p, (long long)DM_MAX_PARAMS);
    if (layer_t > (DM_MAX_TENSORS - extra_t) / L)
        return dm_fail(err, DM_ERR_ARG, "%lld layers of %lld tensors each are more than the %lld supported",
                       (long long)L, (long long)layer_t, (long long)DM_MAX_TENSORS);
    if (n_params) *n_params = L * layer_p + extra_p;
    if (n_tensors) *n_tensors = L * layer_t + extra_t;
    return DM_OK;
}

/* Each field against its range in the list. */
static dm_status check_ranges(const dm_config *c, dm_error *err)
{
    for (int i = 0; i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        if (f->kind == DM_KIND_FLOAT) {
            float v = dm_config_get_float(c, f);
            if (!(v > f->lo && v <= f->hi))   /* NaN fails too */
                return dm_fail(err, DM_ERR_ARG, "%s %g must be in (%g, %g]", f->label, (double)v, f->lo, f->hi);
            continue;
        }
        int v = dm_config_get_int(c, f);
        if (v >= f->lo && v <= f->hi) continue;
        if (f->kind == DM_KIND_ENUM) {
            char list[128];
            return dm_fail(err, DM_ERR_ARG, "unknown %s kind %d (0..%d: %s)", f->label, v, (int)f->hi,
                           dm_names_list(f->names, (int)f->hi + 1, 0, list, sizeof list));
        }
        return dm_fail(err, DM_ERR_ARG, "%s %d out of range (%d..%d)", f->label, v, (int)f->lo, (int)f->hi);
    }
    return DM_OK;
}

dm_status dm_config_validate(dm_config *c, dm_error *err)
{
    dm_status st = dm_check_struct_size(c->struct_size, sizeof *c, "dm_config", "dm_config_default", err);
    if (st || (st = check_ranges(c, err))) return st;
    /* the rules between fields */
    if (c->hidden == 0) c->hidden = c->dim / 2;
    if (c->shared_hidden == 0) c->shared_hidden = c->hidden;
    if (c->hidden < 1)
        return dm_fail(err, DM_ERR_ARG, "hidden %d (dim / 2) out of range (1..%d): give hidden", c->hidden, DM_MAX_WIDTH);
    if (c->top_k > c->n_experts)
        return dm_fail(err, DM_ERR_ARG, "top-k %d out of range (1..experts = %d)", c->top_k, c->n_experts);
    if (c->n_experts % c->n_groups != 0)
        return dm_fail(err, DM_ERR_ARG, "groups %d must divide the %d experts", c->n_groups, c->n_experts);
    if (c->topk_groups > c->n_groups)
        return dm_fail(err, DM_ERR_ARG, "topk-groups %d out of range (1..groups = %d)", c->topk_groups, c->n_groups);
    if (c->top_k > c->topk_groups * (c->n_experts / c->n_groups))
        return dm_fail(err, DM_ERR_ARG, "top-k %d exceeds the %d experts in the %d kept groups",
                       c->top_k, c->topk_groups * (c->n_experts / c->n_groups), c->topk_groups);
    return dm_config_size(c, NULL, NULL, err);
}
