/* repository.c - loading a model repository (repository.h): a model is a
 * directory with a config.pbtxt; its versions are the subdirectories named by
 * a positive integer without a leading 0 (as Triton reads them), each with a
 * model.safetensors whose widths must match the config. A model loads whole or
 * not at all: a version that fails unloads the ones loaded before it. */
#include "serve/repository.h"
#include "base/base.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- one model */

static int is_version_dir(const char *s)
{
    if (!*s || *s == '0') return 0;  /* Triton ignores names that start with 0 */
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return strlen(s) < 18;
}

static void served_model_free(dm_served_model *sv)
{
    if (!sv) return;
    dm_sched_free(sv->sched);
    dm_model_free(sv->model);
    dm_metrics_destroy(&sv->metrics);
    free(sv);
}

/* Loads version v of DIR/name with its parsed config. */
static dm_status load_version(const char *repo, const char *name, int64_t v, const dm_triton_config *cfg,
                              int threads, dm_served_model **out, dm_error *err)
{
    *out = NULL;
    char path[4096];
    dm_served_model *sv = calloc(1, sizeof *sv);
    if (!sv) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    dm_metrics_init(&sv->metrics);
    memcpy(sv->name, name, strlen(name) + 1);
    sv->cfg = *cfg;
    sv->version = v;
    dm_status st;
    snprintf(path, sizeof path, "%s/%s/%lld/model.safetensors", repo, name, (long long)v);
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.packed_only = 1;  /* a served model keeps only what its kernels read */
    if ((st = dm_model_load(path, &mo, &sv->model, err))) goto fail;
    const dm_config *mc = dm_model_config(sv->model);
    sv->in = mc->in_dim ? mc->in_dim : mc->dim;
    sv->out = mc->n_classes ? mc->n_classes : mc->dim;
    sv->layers = mc->n_layers;
    sv->k = mc->top_k;
    const dm_triton_config *c = &sv->cfg;
    if (c->n_inputs != 1 || c->inputs[0].n_dims != 1 || c->inputs[0].dims[0] != sv->in ||
        strcmp(c->inputs[0].data_type, "TYPE_FP32")) {
        st = dm_fail(err, DM_ERR_SHAPE, "%s/%s/config.pbtxt: version %lld takes one TYPE_FP32 input of dims [%d]", repo,
                     name, (long long)v, sv->in);
        goto fail;
    }
    dm_sched_config sc = {
        .max_batch_size = c->max_batch_size > 0 ? c->max_batch_size : 1,
        .dynamic_batching = c->dynamic_batching,
        .n_preferred = c->n_preferred,
        .max_queue_delay_us = c->max_queue_delay_us,
        .max_queue_size = c->max_queue_size,
        .default_timeout_us = c->default_timeout_us,
        .allow_timeout_override = c->allow_timeout_override,
        .instances = c->instance_count > 0 ? c->instance_count : 1,
        .threads_per_instance = threads > 0 ? threads : 1,
        .name = name,
    };
    for (int i = 0; i < c->n_preferred && i < 32; i++) sc.preferred[i] = c->preferred_batch_size[i];
    if ((st = dm_sched_create(sv->model, &sc, &sv->sched, err))) goto fail;
    *out = sv;
    return DM_OK;
fail:
    served_model_free(sv);
    return st;
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Loads DIR/name: its config, then the versions its version_policy selects
 * (latest N: the N highest; all; specific: each listed one, which must exist). */
static dm_status load_model(const char *repo, const char *name, int threads, dm_served_model **list, int cap,
                            int *n, dm_error *err)
{
    *n = 0;
    char path[4096];
    dm_triton_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return dm_fail(err, DM_ERR_NOMEM, "out of memory");
    dm_status st = DM_OK;
    if (strlen(name) >= sizeof cfg->name) {
        st = dm_fail(err, DM_ERR_ARG, "%s/%.64s...: model name too long", repo, name);
        goto done;
    }
    snprintf(path, sizeof path, "%s/%s/config.pbtxt", repo, name);
    if ((st = dm_triton_config_load(path, cfg, err))) goto done;
    if (cfg->name[0] && strcmp(cfg->name, name)) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: name \"%s\" differs from the directory name \"%s\"", path, cfg->name, name);
        goto done;
    }
    memcpy(cfg->name, name, strlen(name) + 1);
    snprintf(path, sizeof path, "%s/%s", repo, name);
    int64_t have[256];
    int nh = 0;
    DIR *d = opendir(path);
    if (!d) {
        st = dm_fail(err, DM_ERR_IO, "%s: cannot open the model directory", path);
        goto done;
    }
    for (struct dirent *e; (e = readdir(d));)
        if (is_version_dir(e->d_name) && nh < 256) have[nh++] = strtoll(e->d_name, NULL, 10);
    closedir(d);
    qsort(have, (size_t)nh, sizeof *have, cmp_desc);
    int64_t pick[256];
    int np = 0;
    if (cfg->version_policy == DM_TRITON_VP_SPECIFIC) {
        for (int i = 0; i < cfg->n_versions; i++) {
            int found = 0;
            for (int j = 0; j < nh; j++) found |= have[j] == cfg->versions[i];
            if (!found) {
                st = dm_fail(err, DM_ERR_FORMAT, "%s: version_policy names version %lld, which has no directory", path,
                             (long long)cfg->versions[i]);
                goto done;
            }
            pick[np++] = cfg->versions[i];
        }
    } else {
        int want = cfg->version_policy == DM_TRITON_VP_ALL ? nh : DM_MIN(nh, cfg->num_versions > 0 ? cfg->num_versions : 1);
        for (int j = 0; j < want; j++) pick[np++] = have[j];
    }
    if (!np) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: no version directory (e.g. %s/1/model.safetensors)", path, path);
        goto done;
    }
    if (np > cap) {
        st = dm_fail(err, DM_ERR_UNSUPPORTED, "%s: %d versions selected, at most %d can be served", path, np, cap);
        goto done;
    }
    for (int i = 0; i < np && !st; i++)
        if (!(st = load_version(repo, name, pick[i], cfg, threads, &list[*n], err))) (*n)++;
    if (st) {
        for (int i = 0; i < *n; i++) served_model_free(list[i]);
        *n = 0;
    }
done:
    free(cfg);
    return st;
}

/* ---------------------------------------------------------------- the repository */

int dm_repository_scan(const char *dir, int (*fn)(const char *name, void *ctx), void *ctx)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int r = 0;
    for (struct dirent *e; !r && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s/config.pbtxt", dir, e->d_name);
        if (stat(path, &sb) != 0) continue;  /* not a model directory */
        r = fn(e->d_name, ctx);
    }
    closedir(d);
    return r;
}

typedef struct open_ctx {
    dm_repository *r;
    dm_error *err;
    dm_status st;
} open_ctx;

static int open_one(const char *name, void *vctx)
{
    open_ctx *x = vctx;
    dm_repository *r = x->r;
    int n = 0;
    x->st = load_model(r->dir, name, r->threads, r->models + r->n_models, DM_REPOSITORY_MAX_MODELS - r->n_models, &n,
                       x->err);
    r->n_models += n;
    return x->st != DM_OK;
}

dm_status dm_repository_open(dm_repository *r, dm_error *err)
{
    open_ctx x = {.r = r, .err = err};
    if (dm_repository_scan(r->dir, open_one, &x) < 0)
        return dm_fail(err, DM_ERR_IO, "%s: cannot open the model repository", r->dir);
    dm_status st = x.st;
    if (!st && !r->n_models) st = dm_fail(err, DM_ERR_FORMAT, "%s: no models (expected DIR/<model>/config.pbtxt)", r->dir);
    if (st) dm_repository_close(r);
    return st;
}

void dm_repository_close(dm_repository *r)
{
    for (int i = 0; i < r->n_models; i++) served_model_free(r->models[i]);
    r->n_models = 0;
}

dm_served_model *dm_repository_find(const dm_repository *r, const char *name, size_t len, int64_t v)
{
    dm_served_model *best = NULL;
    for (int i = 0; i < r->n_models; i++) {
        dm_served_model *m = r->models[i];
        if (strlen(m->name) != len || strncmp(m->name, name, len)) continue;
        if (v >= 0 ? m->version == v : (!best || m->version > best->version)) best = m;
    }
    return best;
}

/* Drops every version of name, then appends fresh[0..n). */
static void replace(dm_repository *r, const char *name, dm_served_model **fresh, int n)
{
    int k = 0;
    for (int i = 0; i < r->n_models; i++) {
        if (!strcmp(r->models[i]->name, name)) served_model_free(r->models[i]);
        else r->models[k++] = r->models[i];
    }
    r->n_models = k;
    for (int i = 0; i < n; i++) r->models[r->n_models++] = fresh[i];
}

dm_status dm_repository_load(dm_repository *r, const char *name, dm_error *err)
{
    dm_served_model *fresh[DM_REPOSITORY_MAX_MODELS];
    int nf = 0, room = DM_REPOSITORY_MAX_MODELS - r->n_models;
    for (int i = 0; i < r->n_models; i++) room += !strcmp(r->models[i]->name, name);  /* replaced */
    dm_status st = load_model(r->dir, name, r->threads, fresh, room, &nf, err);
    if (st) return st;
    replace(r, name, fresh, nf);
    return DM_OK;
}

int dm_repository_unload(dm_repository *r, const char *name)
{
    int had = 0;
    for (int i = 0; i < r->n_models; i++) had |= !strcmp(r->models[i]->name, name);
    replace(r, name, NULL, 0);
    return had;
}
