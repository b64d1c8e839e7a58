/* export.c - a deepmoe model written into a model repository
 * (deepmoe/serve.h): the safetensors file under its version directory and
 * the config.pbtxt deepmoe serves it with (dm_triton_config_for_model), in
 * the layout repository.c reads. */
#include "deepmoe.h"
#include "serve/triton_config.h"
#include "base/base.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void dm_export_opts_default(dm_export_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->name = "moe_model";
    o->max_batch_size = 64;
    o->version = 1;
}

int dm_export_name_ok(const char *name)
{
    return name && *name && strlen(name) < DM_TRITON_NAME && !strpbrk(name, "/\\ \t\n\"'");
}

static dm_status mkdir_one(const char *p, dm_error *err)
{
    if (mkdir(p, 0777) && errno != EEXIST) return dm_fail(err, DM_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    return DM_OK;
}

dm_status dm_export_model(const dm_model *m, const dm_export_opts *o, dm_error *err)
{
    if (!m || !o) return dm_fail(err, DM_ERR_ARG, "dm_export_model: NULL argument");
    if (o->struct_size != sizeof *o)
        return dm_fail(err, DM_ERR_ARG, "dm_export_model: options of size %zu, expected %zu (fill them with "
                       "dm_export_opts_default)", o->struct_size, sizeof *o);
    if (!o->repository) return dm_fail(err, DM_ERR_ARG, "dm_export_model: no repository");
    if (!dm_export_name_ok(o->name))
        return dm_fail(err, DM_ERR_ARG, "name '%s': use a plain name (letters, digits, '_', '-', '.')",
                       o->name ? o->name : "");
    if (o->max_batch_size < 1) return dm_fail(err, DM_ERR_ARG, "max_batch_size %d must be >= 1", o->max_batch_size);
    if (o->version < 1) return dm_fail(err, DM_ERR_ARG, "version %d must be >= 1", o->version);

    const char *repo = o->repository, *name = o->name;
    dm_triton_config *mc = malloc(sizeof *mc);
    if (!mc) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    dm_triton_config_for_model(dm_model_config(m), name, o->max_batch_size, mc);
    char *text = dm_triton_config_format(mc);
    free(mc);
    if (!text) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    char path[4096];
    dm_status st;
    snprintf(path, sizeof path, "%s", repo);
    if ((st = mkdir_one(path, err))) goto done;
    snprintf(path, sizeof path, "%s/%s", repo, name);
    if ((st = mkdir_one(path, err))) goto done;
    snprintf(path, sizeof path, "%s/%s/%d", repo, name, o->version);
    if ((st = mkdir_one(path, err))) goto done;
    snprintf(path, sizeof path, "%s/%s/%d/model.safetensors", repo, name, o->version);
    if ((st = dm_model_save(m, path, err))) goto done;
    snprintf(path, sizeof path, "%s/%s/config.pbtxt", repo, name);
    FILE *fp = fopen(path, "w");
    int bad = !fp, e = errno;
    if (fp && fputs(text, fp) < 0) {
        bad = 1;
        e = errno;
        fclose(fp);
    } else if (fp && fclose(fp) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) st = dm_fail(err, DM_ERR_IO, "%s: cannot write: %s", path, strerror(e));
done:
    free(text);
    return st;
}
