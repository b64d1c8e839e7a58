/* model_flags.h - the model-definition options shared by init and train: one
 * per config field with a command-line flag, from the library's field list
 * (include/deepmoe/config.h), so a new field needs no change here. */
#ifndef DM_MODEL_FLAGS_H
#define DM_MODEL_FLAGS_H

#include <getopt.h>
#include <stdio.h>
#include "deepmoe.h"

/* Option codes: OPT_MODEL_FIRST + the field's index, so they never clash with
 * a command's own short options (< 1000). */
enum { OPT_MODEL_FIRST = 1000 };
/* The option code of the field named name (e.g. "top_k"), -1 if none. */
int model_flag_code(const char *name);

/* own (terminated by {0}) followed by the model options and a terminator, in
 * static storage (one command runs per process). */
const struct option *model_long_options(const struct option *own);

/* The "model:" section of a command's --help, from the list. */
void model_flags_help(FILE *fp);

/* Applies one model option; 1 if handled, 0 if opt is not a model option,
 * -1 (after printing a usage error for cmd) if the value is bad. */
int model_flag(const char *cmd, int opt, const char *arg, dm_config *c);

#endif
