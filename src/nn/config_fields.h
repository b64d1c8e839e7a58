/* config_fields.h - the one list of the model config's fields.
 *
 * DM_CONFIG_FIELDS(X) holds every dm_config field once, in struct order, and
 * everything that handles fields one by one is derived from it:
 *   dm_config_default     the defaults, a positional initializer (config.c)
 *   dm_config_validate    each field's range; cross-field rules stay by hand (config.c)
 *   "deepmoe.config"      the JSON of model files and checkpoints, write and read (io/model_io.c)
 *   dm_config_diff        "is this checkpoint for this model", naming the field (train/checkpoint.c)
 *   model flags           getopt entries, parsing and --help text (tools/model_flags.{c,h})
 * The struct itself is written out in deepmoe.h for the readers of the public
 * header; config.c ties it to this list at compile time (member names,
 * order, types, size) and initialises it positionally, so a member missing
 * here, or here and not there, fails the build.
 *
 * X(name, kind, key, label, default, lo, hi, cli)
 *   name     the dm_config member
 *   kind     INT | BOOL (an int, 0 or 1; JSON true/false; a CLI switch) | FLOAT |
 *            ENUM(c_type, names): JSON and the CLI use the names, value i is names[i]
 *   key      the JSON key in "deepmoe.config" (docs/formats.md; never rename one:
 *            older files must keep loading)
 *   label    what error messages call the field
 *   default  dm_config_default's value
 *   lo, hi   the valid range: lo <= v <= hi for INT, BOOL and ENUM, lo < v <= hi for FLOAT
 *   cli      CLI(flag, metavar, help): the model flag --flag of init and train, or NOCLI
 *
 * A new field goes at the end of dm_config and of this list (the ABI grows;
 * struct_size tells the layouts apart). Files that carry its key are refused by
 * older readers, which refuse unknown keys rather than misread a model. */
#ifndef DM_CONFIG_FIELDS_H
#define DM_CONFIG_FIELDS_H

#include "deepmoe.h"
#include "deepmoe/config.h"

/* Sizes are capped so that every index fits an int32 and every byte count a
 * size_t without further checks downstream (dm_config_size then bounds the
 * products); docs/formats.md lists the limits. */
#define DM_MAX_WIDTH (1 << 20)
#define DM_MAX_EXPERTS 4096
#define DM_MAX_LAYERS 1024

/* clang-format off */
#define DM_CONFIG_FIELDS(X)                                                                                     \
    X(dim,            INT,   "dim",            "dim",            512,   1, DM_MAX_WIDTH,                       \
      CLI("dim", "D", "input/output width (512)"))                                                           \
    X(n_experts,      INT,   "n_experts",      "experts",        8,     1, DM_MAX_EXPERTS,                     \
      CLI("experts", "E", "routed experts (8)"))                                                             \
    X(top_k,          INT,   "top_k",          "top-k",          2,     1, DM_MAX_EXPERTS,                     \
      CLI("top-k", "K", "experts per row (2)"))                                                              \
    X(hidden,         INT,   "hidden",         "hidden",         256,   0, DM_MAX_WIDTH,  /* 0: dim / 2 */     \
      CLI("hidden", "H", "expert hidden width (D/2)"))                                                       \
    X(router,         ENUM(dm_router_kind, dm_router_names), "router", "router", DM_ROUTER_SEED,              \
                                                                        0, DM_ROUTER_SIGMOID,                  \
      CLI("router", "R", "seed | softmax | sigmoid (seed: softmax over the k kept logits)"))                 \
    X(norm_topk,      BOOL,  "norm_topk",      "norm-topk",      0,     0, 1,                                  \
      CLI("norm-topk", "", "softmax router: renormalise the k weights to sum 1"))                            \
    X(route_scale,    FLOAT, "route_scale",    "route scale",    1.0f,  0, 1e6,                                \
      CLI("route-scale", "F", "multiply the routed weights by F (1)"))                                       \
    X(n_groups,       INT,   "n_groups",       "groups",         1,     1, DM_MAX_EXPERTS,                     \
      CLI("groups", "G", "group-limited routing: E/G experts per group (1 = off)"))                          \
    X(topk_groups,    INT,   "topk_groups",    "topk-groups",    1,     1, DM_MAX_EXPERTS,                     \
      CLI("topk-groups", "M", "groups a row may use (sum of top-2 scores ranks groups)"))                    \
    X(selection_bias, BOOL,  "selection_bias", "selection bias", 0,     0, 1,                                  \
      CLI("selection-bias", "", "add a per-expert bias that moves selection, not weights"))                  \
    X(expert,         ENUM(dm_expert_kind, dm_expert_names), "expert", "expert", DM_EXPERT_SEED,              \
                                                                        0, DM_EXPERT_SWIGLU,                   \
      CLI("expert-type", "T", "seed (Linear-ReLU-LayerNorm-Linear + x) | swiglu"))                           \
    X(n_shared,       INT,   "n_shared",       "shared experts", 0,     0, DM_MAX_EXPERTS,                     \
      CLI("shared-experts", "S", "always-active shared experts (0)"))                                        \
    X(shared_hidden,  INT,   "shared_hidden",  "shared hidden",  0,     0, DM_MAX_WIDTH,  /* 0: hidden */     \
      CLI("shared-hidden", "H", "hidden width of a shared expert (same as --hidden)"))                       \
    X(ln_eps,         FLOAT, "ln_eps",         "LayerNorm eps",  1e-5f, 0, 1,                     NOCLI)      \
    /* the network around the layers: train sets these from the data (and --layers) */                      \
    X(n_layers,       INT,   "n_layers",       "layers",         1,     1, DM_MAX_LAYERS,             NOCLI)     \
    X(in_dim,         INT,   "in_dim",         "input dim",      0,     0, DM_MAX_WIDTH,              NOCLI)     \
    X(n_classes,      INT,   "n_classes",      "classes",        0,     0, DM_MAX_WIDTH,              NOCLI)
/* clang-format on */

/* DM_CF_dim, DM_CF_n_experts, ...: a field's index in the list. */
#define DM_CF_INDEX_(name, ...) DM_CF_##name,
enum { DM_CONFIG_FIELDS(DM_CF_INDEX_) DM_CF_COUNT };
#undef DM_CF_INDEX_

/* ---------------------------------------------------------------- the list at run time */

/* dm_field_kind and dm_config_field: include/deepmoe/config.h (public) */

/* The list, indexed by DM_CF_*. */
extern const dm_config_field dm_config_fields[DM_CF_COUNT];
/* The name tables of the enum fields (what ENUM(type, names) names). */
extern const char *const dm_router_names[];
extern const char *const dm_expert_names[];

/* The field with JSON key `key`, or NULL. */
const dm_config_field *dm_config_field_by_key(const char *key);
/* A field's value: INT, BOOL and ENUM fields are ints (an enum's storage is an
 * int, asserted in config.c), FLOAT fields floats. */
static inline int dm_config_get_int(const dm_config *c, const dm_config_field *f)
{
    return *(const int *)((const char *)c + f->offset);
}
static inline float dm_config_get_float(const dm_config *c, const dm_config_field *f)
{
    return *(const float *)((const char *)c + f->offset);
}
/* An ENUM field's name for value v ("unknown" outside the range). */
const char *dm_config_enum_name(const dm_config_field *f, int v);
/* The field's value as text (an integer, true/false, %.9g, an enum's name); returns buf. */
const char *dm_config_field_str(const dm_config *c, const dm_config_field *f, char *buf, size_t n);
/* The index of the first field in which a and b differ, or -1 if they are the same config. */
int dm_config_diff(const dm_config *a, const dm_config *b);

/* "seed, softmax or sigmoid" (quote: "\"seed\", \"softmax\" or \"sigmoid\""); returns buf. */
const char *dm_names_list(const char *const *names, int n, int quote, char *buf, size_t size);
/* names[i] == name: *out = i; else DM_ERR_ARG "unknown WHAT 'name' (expected a, b or c)". */
dm_status dm_names_parse(const char *what, const char *const *names, int n, const char *name, int *out,
                         dm_error *err);

#endif
