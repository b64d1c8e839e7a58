/* base.h - small shared pieces: error values, aligned memory, RNG, half floats.
 * Everything here is pure or works on caller-owned state: no globals. */
#ifndef DM_BASE_H
#define DM_BASE_H

#include "deepmoe.h"
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#define DM_ALIGN 64
#define DM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DM_UNUSED(x) ((void)(x))

/* Fills err (if not NULL) with a printf-style one-line message and returns code. */
dm_status dm_fail(dm_error *err, dm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The struct_size check of the public structs callers fill (dm_config,
 * dm_model_opts, dm_train_config): `got` must be this library's sizeof, which
 * the struct's init function `init` sets. DM_ERR_ARG otherwise: 0 is a struct
 * that init never filled, another size a caller built against another deepmoe.h. */
dm_status dm_check_struct_size(size_t got, size_t want, const char *type, const char *init, dm_error *err);

/* 64-byte aligned allocation; NULL on failure or n == 0 overflow. Free with dm_free. */
void *dm_alloc(size_t bytes);
void *dm_calloc(size_t bytes);
void dm_free(void *p);
/* Sizes from untrusted numbers (file headers, request shapes) go through
 * these: a*b with an overflow check (0 and *out set, or -1 on overflow), and
 * n elements of `size` bytes, aligned, NULL on overflow or out of memory. */
int dm_mul_size(size_t a, size_t b, size_t *out);
void *dm_alloc_array(size_t n, size_t size);
void *dm_alloc_array2(size_t a, size_t b, size_t size);   /* a*b elements */

/* A buffer that grows as data actually arrives, never past `max` bytes: a
 * reader whose size comes from a header it cannot check up front (a pipe, a
 * gzip stream) allocates for the bytes present, not for what the header
 * claims. Start from {0} with max set; free p with dm_free. */
typedef struct dm_growbuf {
    void *p;
    size_t cap, max;
} dm_growbuf;
/* Room for `need` bytes (need <= max): capacity doubles, from 64 KiB, capped
 * at max; contents kept. 0, or -1 when need > max or out of memory. */
int dm_growbuf_reserve(dm_growbuf *b, size_t need);

/* A name index over any table (a model's tensors, a file's): order[] sorts
 * the rows by name(table, i), so lookups are binary searches and building a
 * model that binds every tensor by name stays O(n log n). The index is
 * malloc'd (NULL on OOM; free with free); lookup returns the row or -1. */
typedef const char *(*dm_name_fn)(const void *table, int i);
int *dm_name_index(const void *table, int n, dm_name_fn name);
int dm_name_lookup(const void *table, const int *order, int n, dm_name_fn name, const char *key);

/* splitmix64-seeded xoshiro256** generator; state is caller-owned. */
typedef struct dm_rng { uint64_t s[4]; } dm_rng;
void dm_rng_seed(dm_rng *r, uint64_t seed);
uint64_t dm_rng_u64(dm_rng *r);
float dm_rng_uniform(dm_rng *r, float lo, float hi); /* [lo, hi) */
float dm_rng_normal(dm_rng *r);                      /* N(0, 1), Box-Muller */

/* IEEE half and bfloat16 <-> float32 (round to nearest even on the way down). */
float dm_f16_to_f32(uint16_t h);
float dm_bf16_to_f32(uint16_t h);
uint16_t dm_f32_to_f16(float f);
uint16_t dm_f32_to_bf16(float f);

/* Atomic, durable file replace: open writes PATH.tmp.PID (and first removes
 * PATH.tmp.N files whose process N no longer exists: what a killed writer
 * left); commit does fflush + fsync + fclose, renames over PATH, then fsyncs
 * PATH's directory so the rename survives a crash too. A reader of PATH sees
 * the old file or the new one, never a part. abort removes the temp file. */
typedef struct dm_atomic_file {
    FILE *fp;
    char tmp[4096];
    char path[4096];
} dm_atomic_file;
dm_status dm_atomic_open(dm_atomic_file *f, const char *path, dm_error *err);
dm_status dm_atomic_commit(dm_atomic_file *f, dm_error *err);
/* fsync of the directory holding path (after a rename or mkdir in it). */
dm_status dm_sync_parent(const char *path, dm_error *err);
void dm_atomic_abort(dm_atomic_file *f);

/* 1 on a little-endian host. */
int dm_host_is_le(void);
/* Writes n floats as little-endian float32 (files are little-endian on any host); 0 or -1. */
int dm_write_f32le(FILE *fp, const float *x, size_t n);

#endif
