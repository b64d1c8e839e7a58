/* safetensors.h - read (mmap, zero-copy) and write the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start. */
#ifndef DM_SAFETENSORS_H
#define DM_SAFETENSORS_H

#include "deepmoe.h"
#include <stddef.h>
#include <stdint.h>

/* Type-trait table: one row per safetensors dtype. */
typedef enum {
    DM_DT_F64, DM_DT_F32, DM_DT_F16, DM_DT_BF16,
    DM_DT_I64, DM_DT_I32, DM_DT_I16, DM_DT_I8, DM_DT_U8, DM_DT_BOOL,
    DM_DT_COUNT
} dm_dtype;

typedef struct dm_dtype_traits {
    const char *name;    /* "F32" */
    int size;            /* bytes per element */
    /* n elements from src (unaligned ok) to float32; NULL if not a float type we read */
    void (*to_f32)(const void *src, float *dst, int64_t n);
} dm_dtype_traits;

extern const dm_dtype_traits dm_dtypes[DM_DT_COUNT];
int dm_dtype_parse(const char *name);   /* -1 if unknown */

#define DM_ST_MAX_DIMS 8

typedef struct dm_st_tensor {
    char *name;
    dm_dtype dtype;
    int ndim;
    int64_t shape[DM_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;         /* byte offsets into the data section */
    const void *data;            /* into the mapping: zero-copy, maybe unaligned */
} dm_st_tensor;

typedef struct dm_st_file {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    dm_st_tensor *tensors;       /* sorted by data offset */
    int *by_name;                /* [n_tensors] indices into tensors, sorted by name (dm_st_find) */
    int64_t total_numel;         /* elements of every tensor together */
    uint64_t data_size;          /* bytes in the data section */
    int n_meta;
    char **meta_keys, **meta_vals;
} dm_st_file;

/* Opens and fully validates: header length within the file, JSON well formed,
 * every dtype known, shape product * size == end - begin, offsets inside the
 * data section, no two tensors overlapping, metadata values strings.
 * Errors read "PATH: problem". On error *f is left closed (safe to dm_st_close). */
dm_status dm_st_open(const char *path, dm_st_file *f, dm_error *err);
void dm_st_close(dm_st_file *f);
const dm_st_tensor *dm_st_find(const dm_st_file *f, const char *name);   /* O(log n) */
const char *dm_st_meta(const dm_st_file *f, const char *key);   /* NULL if absent */
/* Converts a float tensor (F32/F16/BF16/F64) to float32 into dst[numel]. */
dm_status dm_st_read_f32(const dm_st_file *f, const dm_st_tensor *t, float *dst, dm_error *err);

/* One tensor to write: float32 values (data), or raw little-endian elements of
 * any dtype (raw set: dtype says which, e.g. a weight type's stored values). */
typedef struct dm_st_out {
    const char *name;
    int ndim;
    int64_t shape[DM_ST_MAX_DIMS];
    const float *data;
    const void *raw;             /* if set, written as is, dtype elements */
    dm_dtype dtype;              /* with raw */
} dm_st_out;

/* Writes the tensors in the given order with __metadata__ (meta[2i] key,
 * meta[2i+1] value), header padded with spaces so data starts 8-byte aligned;
 * atomically (dm_atomic_*). */
dm_status dm_st_write(const char *path, const dm_st_out *t, int n,
                      const char *const *meta, int n_meta, dm_error *err);

#endif
