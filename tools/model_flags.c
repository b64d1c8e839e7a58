/* model_flags.c - parse the shared model-definition options and print their
 * help, both from the config field list (src/nn/config_fields.h). */
#include "cli.h"
#include "model_flags.h"

#include <string.h>

void model_flags_help(FILE *fp)
{
    fputs("model:\n", fp);
    for (int i = 0; i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        if (!f->flag) continue;
        char usage[64];
        snprintf(usage, sizeof usage, "--%s%s%s", f->flag, *f->metavar ? " " : "", f->metavar);
        fprintf(fp, "  %-21s%s\n", usage, f->help);
    }
}

int model_flag(const char *cmd, int opt, const char *arg, dm_config *c)
{
    if (opt < OPT_MODEL_FIRST || opt >= OPT_MODEL_FLAGS_END) return 0;
    const dm_config_field *f = &dm_config_fields[opt - OPT_MODEL_FIRST];
    if (!f->flag) return 0;
    /* the list's range here too, so that the message names the flag */
    switch (f->kind) {
    case DM_KIND_BOOL:
        *dm_config_int(c, f) = 1;
        return 1;
    case DM_KIND_INT:
        if (cli_int(arg, (long)f->lo, (long)f->hi, dm_config_int(c, f))) {
            cli_usage(cmd, "--%s '%s' must be an integer in %ld..%ld", f->flag, arg, (long)f->lo, (long)f->hi);
            return -1;
        }
        return 1;
    case DM_KIND_FLOAT: {
        float v;
        if (cli_float(arg, &v) || !(v > f->lo && v <= f->hi)) {
            cli_usage(cmd, "--%s '%s' must be a number in (%g, %g]", f->flag, arg, f->lo, f->hi);
            return -1;
        }
        *dm_config_float(c, f) = v;
        return 1;
    }
    case DM_KIND_ENUM:
        if (dm_names_parse(f->label, f->names, (int)f->hi + 1, arg, dm_config_int(c, f), NULL)) {
            char list[128];
            cli_usage(cmd, "--%s '%s': expected %s", f->flag, arg,
                      dm_names_list(f->names, (int)f->hi + 1, 0, list, sizeof list));
            return -1;
        }
        return 1;
    }
    return 0;
}
