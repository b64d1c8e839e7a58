/* repository.h - the model repository on disk, DIR/<model>/config.pbtxt and
 * DIR/<model>/<version>/model.safetensors (Triton's layout), and the model
 * versions loaded from it: per version its parsed config, the model, its
 * scheduler (dynamic batcher + instances) and its counters. Which versions
 * load follows the config's version_policy.
 *
 * Not thread-safe: the HTTP endpoints hold their lock around every call
 * (shared for lookups, exclusive for load and unload). */
#ifndef DM_SERVE_REPOSITORY_H
#define DM_SERVE_REPOSITORY_H

#include "deepmoe.h"
#include "serve/metrics.h"
#include "serve/sched.h"
#include "serve/triton_config.h"

#define DM_REPOSITORY_MAX_MODELS 64   /* model versions loaded at once */

/* One loaded version of a model. */
typedef struct dm_served_model {
    char name[DM_TRITON_NAME];
    int64_t version;
    dm_triton_config cfg;             /* its config.pbtxt, name = the directory name */
    dm_model *model;
    dm_sched *sched;
    int in, out, layers, k;           /* input width, output width, MoE layers, experts per row */
    dm_metrics metrics;
} dm_served_model;

typedef struct dm_repository {
    const char *dir;                  /* not copied */
    int threads;                      /* threads per model instance (>= 1) */
    int n_models;
    dm_served_model *models[DM_REPOSITORY_MAX_MODELS];
} dm_repository;

/* Loads every model of r->dir (r: dir and threads set, no models yet); at
 * least one is required. On failure r holds no models. */
dm_status dm_repository_open(dm_repository *r, dm_error *err);
/* Frees every loaded version. */
void dm_repository_close(dm_repository *r);
/* (Re)loads DIR/name: its config, then the versions it selects, which replace
 * the ones loaded; on failure those stay as they were. */
dm_status dm_repository_load(dm_repository *r, const char *name, dm_error *err);
/* Unloads every version of name; 0 if none was loaded. */
int dm_repository_unload(dm_repository *r, const char *name);
/* Version v of the model named name[0..len), or its highest loaded version
 * when v < 0; NULL if not loaded. */
dm_served_model *dm_repository_find(const dm_repository *r, const char *name, size_t len, int64_t v);
/* Calls fn(name, ctx) for each model directory of dir (a name not starting
 * with '.' that holds a config.pbtxt), in directory order, until fn returns
 * nonzero; returns that value, 0 after the last, -1 if dir cannot be opened. */
int dm_repository_scan(const char *dir, int (*fn)(const char *name, void *ctx), void *ctx);

#endif
