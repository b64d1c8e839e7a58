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

/* 64-byte aligned allocation; NULL on failure or n == 0 overflow. Free with dm_free. */
void *dm_alloc(size_t bytes);
void *dm_calloc(size_t bytes);
void dm_free(void *p);
/* a*b*c bytes with overflow check; returns 0 and sets *out, or -1 on overflow. */
int dm_mul_size(size_t a, size_t b, size_t *out);

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

/* Atomic file replace: open PATH.tmp.PID for writing, and on commit fflush +
 * fsync + fclose + rename over PATH. abort removes the temp file. */
typedef struct dm_atomic_file {
    FILE *fp;
    char tmp[4096];
    char path[4096];
} dm_atomic_file;
dm_status dm_atomic_open(dm_atomic_file *f, const char *path, dm_error *err);
dm_status dm_atomic_commit(dm_atomic_file *f, dm_error *err);
void dm_atomic_abort(dm_atomic_file *f);

/* 1 on a little-endian host. */
int dm_host_is_le(void);
/* Writes n floats as little-endian float32 (files are little-endian on any host); 0 or -1. */
int dm_write_f32le(FILE *fp, const float *x, size_t n);

#endif
