/* model_flags.c - parse the shared model-definition options and print their
 * help, both from the library's config field list. */
#include "cli.h"
#include "model_flags.h"

#include <string.h>

int model_flag_code(const char *name)
{
    for (int i = 0; i < dm_config_field_count(); i++)
        if (!strcmp(dm_config_field_at(i)->name, name)) return OPT_MODEL_FIRST + i;
    return -1;
}

const struct option *model_long_options(const struct option *own)
{
    static struct option all[128];
    int n = 0;
    for (; own[n].name && n < 64; n++) all[n] = own[n];
    for (int i = 0; i < dm_config_field_count() && n < 127; i++) {
        const dm_config_field *f = dm_config_field_at(i);
        if (f->flag)
            all[n++] = (struct option){f->flag, f->kind == DM_KIND_BOOL ? no_argument : required_argument, 0,
                                       OPT_MODEL_FIRST + i};
    }
    all[n] = (struct option){0, 0, 0, 0};
    return all;
}

void model_flags_help(FILE *fp)
{
    fputs("model:\n", fp);
    for (int i = 0; i < dm_config_field_count(); i++) {
        const dm_config_field *f = dm_config_field_at(i);
        if (!f->flag) continue;
        char usage[64];
        snprintf(usage, sizeof usage, "--%s%s%s", f->flag, *f->metavar ? " " : "", f->metavar);
        fprintf(fp, "  %-21s%s\n", usage, f->help);
    }
}

int model_flag(const char *cmd, int opt, const char *arg, dm_config *c)
{
    const dm_config_field *f = dm_config_field_at(opt - OPT_MODEL_FIRST);
    if (opt < OPT_MODEL_FIRST || !f || !f->flag) return 0;
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
    case DM_KIND_ENUM: {
        dm_error err;
        if (dm_config_field_enum(f, arg, dm_config_int(c, f), &err)) {
            /* err: "unknown router 'x' (expected seed, softmax or sigmoid)" */
            const char *exp = strstr(err.msg, "(expected ");
            char list[sizeof err.msg];
            snprintf(list, sizeof list, "%s", exp ? exp + 10 : err.msg);
            size_t L = strlen(list);
            if (exp && L && list[L - 1] == ')') list[L - 1] = 0;
            cli_usage(cmd, "--%s '%s': expected %s", f->flag, arg, list);
            return -1;
        }
        return 1;
    }
    }
    return 0;
}
