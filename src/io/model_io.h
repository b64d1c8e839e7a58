/* model_io.h - the model config as JSON (shared by model files and checkpoints). */
#ifndef DM_MODEL_IO_H
#define DM_MODEL_IO_H

#include "deepmoe.h"

#define DM_CONFIG_KEY "deepmoe.config"

/* Compact JSON of every config key; malloc'd (free), NULL on out of memory. */
char *dm_config_to_json(const dm_config *c);
/* Parses JSON text into c (absent keys take defaults; unknown keys are refused).
 * Errors read "PATH: ...". */
dm_status dm_config_from_json(const char *text, dm_config *c, const char *path, dm_error *err);

/* dm_model_save with n_extra more __metadata__ entries: extra holds key, value,
 * key, value ... (what trained the model: src/train/run.c). */
#define DM_MODEL_EXTRA_MAX 4
dm_status dm_model_save_meta(const dm_model *m, const char *path, const char *const *extra, int n_extra,
                             dm_error *err);

#endif
