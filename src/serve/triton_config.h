/* triton_config.h - a Triton model configuration (config.pbtxt), the subset
 * deepmoe serves: the schema (dm_triton_config), reading and validating it
 * (triton_config.c, over the protobuf text-format reader pbtxt.h) and its
 * renderings as config.pbtxt text and as Triton's JSON (triton_render.c).
 * Field meanings and defaults: ../shared/research/serving.md section 3. */
#ifndef DM_SERVE_TRITON_CONFIG_H
#define DM_SERVE_TRITON_CONFIG_H

#include "deepmoe.h"

#define DM_TRITON_NAME 128        /* names (model, tensor, backend) are shorter */
#define DM_TRITON_MAX_TENSORS 16
#define DM_TRITON_MAX_DIMS 8
#define DM_TRITON_MAX_LIST 32     /* preferred batch sizes, versions, parameters */

typedef struct dm_triton_tensor {
    char name[DM_TRITON_NAME];
    char data_type[32];               /* "TYPE_FP32", ... (validated against Triton's DataType enum) */
    int n_dims;
    int64_t dims[DM_TRITON_MAX_DIMS]; /* -1 = variable */
    int optional;                     /* input only */
} dm_triton_tensor;

typedef enum { DM_TRITON_VP_LATEST = 0, DM_TRITON_VP_ALL, DM_TRITON_VP_SPECIFIC } dm_triton_version_policy;

typedef struct dm_triton_config {
    char name[DM_TRITON_NAME];        /* "" if absent (then the directory name is used) */
    char backend[DM_TRITON_NAME];
    char platform[DM_TRITON_NAME];
    int max_batch_size;               /* >= 0 */
    int n_inputs, n_outputs;
    dm_triton_tensor inputs[DM_TRITON_MAX_TENSORS], outputs[DM_TRITON_MAX_TENSORS];
    /* dynamic_batching */
    int dynamic_batching;             /* 1 if the block is present (even empty) */
    int n_preferred;
    int preferred_batch_size[DM_TRITON_MAX_LIST];  /* normalised: empty -> [max_batch_size] */
    int64_t max_queue_delay_us;
    int preserve_ordering;
    int64_t max_queue_size;           /* default_queue_policy; 0 = unlimited */
    int64_t default_timeout_us;       /* 0 = none */
    int allow_timeout_override;
    int timeout_action_delay;         /* 0 = REJECT (default), 1 = DELAY */
    /* instance_group: summed over the groups */
    int instance_count;               /* default 1 */
    char instance_kind[32];           /* "KIND_CPU" (default), "KIND_AUTO" accepted; GPU/MODEL refused */
    /* version_policy */
    dm_triton_version_policy version_policy;
    int num_versions;                 /* latest: default 1 */
    int n_versions;
    int64_t versions[DM_TRITON_MAX_LIST];  /* specific */
    /* parameters { key: .. value { string_value: .. } }: kept for the server */
    int n_params;
    char param_keys[DM_TRITON_MAX_LIST][64];
    char param_vals[DM_TRITON_MAX_LIST][256];
} dm_triton_config;

/* ---------------------------------------------------------------- reading (triton_config.c) */

/* Parses config.pbtxt text (len bytes, not necessarily NUL-terminated), then
 * validates and normalises it. Errors read "PATH:LINE: field 'x': problem" and
 * refuse unknown fields (typos), wrong types, invalid enum values, preferred
 * sizes outside 1..max_batch_size, a oneof set twice, sequence_batching or
 * ensemble_scheduling (not supported), kinds other than CPU/AUTO. */
dm_status dm_triton_config_parse(const char *text, size_t len, const char *path, dm_triton_config *out, dm_error *err);
/* Reads and parses a file. */
dm_status dm_triton_config_load(const char *path, dm_triton_config *out, dm_error *err);
/* The config deepmoe writes for a model m (`deepmoe export`): input "input"
 * and output "output" (FP32, [in] and [out]), the routing outputs
 * "routing_experts" (INT32) and "routing_weights" (FP32) of [layers * k],
 * dynamic batching preferring max_batch_size with no queue delay, one CPU
 * instance, the latest version. */
void dm_triton_config_for_model(const dm_config *m, const char *name, int max_batch_size, dm_triton_config *out);

/* ---------------------------------------------------------------- rendering (triton_render.c) */

/* The text format of c (what `deepmoe export` writes); malloc'd, NULL on OOM. */
char *dm_triton_config_format(const dm_triton_config *c);
/* Triton's JSON rendering of the config (GET /v2/models/<m>/config) as a
 * malloc'd string (free with free()); NULL on OOM. */
char *dm_triton_config_json(const dm_triton_config *c);

#endif
