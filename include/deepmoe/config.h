/* deepmoe/config.h - the model config's fields, listed at run time.
 *
 * The library keeps one list of dm_config's fields (every field once, in
 * struct order); defaults, validation, the model file's JSON, the checkpoint
 * comparison and the command line's model flags all come from it. This header
 * lets a program walk the same list: a front end gets every field's name, kind,
 * range and help without listing them itself. */
#ifndef DEEPMOE_CONFIG_H
#define DEEPMOE_CONFIG_H

#include "deepmoe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DM_KIND_INT, DM_KIND_BOOL, DM_KIND_FLOAT, DM_KIND_ENUM } dm_field_kind;

typedef struct dm_config_field {
    const char *name;         /* the dm_config member */
    const char *key;          /* its key in a model file's "deepmoe.config" JSON */
    const char *label;        /* what messages call it */
    dm_field_kind kind;       /* INT, BOOL and ENUM fields are ints in dm_config, FLOAT fields floats */
    size_t offset;            /* offsetof(dm_config, name) */
    double lo, hi;            /* valid: lo <= v <= hi (INT, BOOL, ENUM), lo < v <= hi (FLOAT) */
    const char *const *names; /* ENUM: hi + 1 names, value i is names[i] */
    const char *flag;         /* the command line's flag without "--", or NULL */
    const char *metavar;      /* the flag's value in --help ("" for a switch) */
    const char *help;
} dm_config_field;

/* The fields, i in [0, dm_config_field_count()), in struct order; NULL out of range. */
DM_API int dm_config_field_count(void);
DM_API const dm_config_field *dm_config_field_at(int i);
/* An ENUM field's value called name: DM_ERR_ARG naming the valid ones otherwise. */
DM_API dm_status dm_config_field_enum(const dm_config_field *f, const char *name, int *out, dm_error *err);

/* A field's storage in c. */
static inline int *dm_config_int(dm_config *c, const dm_config_field *f) { return (int *)(void *)((char *)c + f->offset); }
static inline float *dm_config_float(dm_config *c, const dm_config_field *f)
{
    return (float *)(void *)((char *)c + f->offset);
}

#ifdef __cplusplus
}
#endif
#endif
