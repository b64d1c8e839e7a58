/* model_flags.h - the model-definition options shared by init and train, one
 * per config field that has a CLI(...) entry in src/nn/config_fields.h. */
#ifndef DM_MODEL_FLAGS_H
#define DM_MODEL_FLAGS_H

#include <getopt.h>
#include <stdio.h>
#include "deepmoe.h"
#include "nn/config_fields.h"

/* Option codes: OPT_MODEL_FIRST + the field's index, so they never clash with
 * a command's own short options (< 1000) and index a per-field array. */
enum { OPT_MODEL_FIRST = 1000, OPT_MODEL_FLAGS_END = OPT_MODEL_FIRST + DM_CF_COUNT };
#define OPT_MODEL(field) (OPT_MODEL_FIRST + DM_CF_##field)
/* the codes train_loop.c and cmd_train.c name */
enum { OPT_DIM = OPT_MODEL(dim), OPT_TOPK = OPT_MODEL(top_k), OPT_HIDDEN = OPT_MODEL(hidden) };

/* getopt_long entries, each followed by a comma: `{...}, MODEL_LONG_OPTIONS {0, 0, 0, 0}`.
 * A field's cli column picks MF_EMIT (CLI) or MF_SKIP (NOCLI) for its entry. */
#define MF_WHEN_CLI(flag, metavar, help) MF_EMIT
#define MF_WHEN_NOCLI MF_SKIP
#define MF_FLAG_CLI(flag, metavar, help) flag
#define MF_EMIT(...) __VA_ARGS__
#define MF_SKIP(...)
#define MF_HAS_ARG_INT required_argument
#define MF_HAS_ARG_BOOL no_argument
#define MF_HAS_ARG_FLOAT required_argument
#define MF_HAS_ARG_ENUM(type, names) required_argument
#define MF_OPTION(name, kind, key, label, def, lo, hi, cli) \
    MF_WHEN_##cli({MF_FLAG_##cli, MF_HAS_ARG_##kind, 0, OPT_MODEL(name)},)
#define MODEL_LONG_OPTIONS DM_CONFIG_FIELDS(MF_OPTION)

/* The "model:" section of a command's --help, from the list. */
void model_flags_help(FILE *fp);

/* Applies one model option; 1 if handled, 0 if opt is not a model option,
 * -1 (after printing a usage error for cmd) if the value is bad. */
int model_flag(const char *cmd, int opt, const char *arg, dm_config *c);

#endif
