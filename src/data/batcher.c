/* batcher.c - epoch-based batching with a seeded shuffle.
 *
 * Epoch e's order: the identity when !shuffle, else a Fisher-Yates shuffle of
 * the identity (i = n-1 down to 1: swap perm[i] with perm[j], j a uniform draw
 * from 0 .. i) using a dm_rng seeded with dm_rng_seed(seed * 0x9e3779b97f4a7c15
 * + e + 1). The draw is unbiased: values of dm_rng_u64 below 2^64 mod (i+1)
 * are rejected, then the rest is taken mod (i+1).
 *
 * (epoch, pos) is the whole state. next() moves to the next epoch lazily:
 * when the current one has fewer than `batch` rows left (drop_last), so after
 * an epoch's last full batch the state is still (e, n - rest) until the next
 * call. Any (epoch, pos) a run passes through can be restored with seek(). */
#include "data/data.h"

#include <string.h>

/* A uniform draw from 0 .. n-1 (n >= 1) without modulo bias. */
static uint64_t rng_below(dm_rng *r, uint64_t n)
{
    uint64_t limit = (0 - n) % n;   /* 2^64 mod n */
    for (;;) {
        uint64_t u = dm_rng_u64(r);
        if (u >= limit) return u % n;
    }
}

/* Fills b->perm with epoch's order. */
static void make_order(dm_batcher *b, int64_t epoch)
{
    int64_t n = b->ds->n;
    for (int64_t i = 0; i < n; i++) b->perm[i] = (int32_t)i;
    if (b->shuffle && n > 1) {
        dm_rng rng;
        dm_rng_seed(&rng, b->seed * 0x9e3779b97f4a7c15ull + (uint64_t)epoch + 1);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)rng_below(&rng, (uint64_t)i + 1);
            int32_t t = b->perm[i];
            b->perm[i] = b->perm[j];
            b->perm[j] = t;
        }
    }
    b->epoch = epoch;
}

dm_status dm_batcher_init(dm_batcher *b, const dm_dataset *ds, uint64_t seed, int shuffle, dm_error *err)
{
    if (!b) return dm_fail(err, DM_ERR_ARG, "dm_batcher_init: NULL batcher");
    memset(b, 0, sizeof *b);
    if (!ds) return dm_fail(err, DM_ERR_ARG, "dm_batcher_init: NULL dataset");
    if (ds->n < 0 || ds->n > INT32_MAX)
        return dm_fail(err, DM_ERR_ARG, "dm_batcher_init: %lld rows (want 0 .. %d)", (long long)ds->n, INT32_MAX);
    if (ds->n > 0 && (!ds->x || ds->dim < 1))
        return dm_fail(err, DM_ERR_ARG, "dm_batcher_init: dataset has rows but no features");
    b->perm = dm_alloc((size_t)ds->n * sizeof(int32_t));
    if (!b->perm) return dm_fail(err, DM_ERR_NOMEM, "dm_batcher_init: out of memory for %lld rows", (long long)ds->n);
    b->ds = ds;
    b->seed = seed;
    b->shuffle = shuffle != 0;
    make_order(b, 0);
    return DM_OK;
}

dm_status dm_batcher_seek(dm_batcher *b, int64_t epoch, int64_t pos, dm_error *err)
{
    if (!b || !b->perm) return dm_fail(err, DM_ERR_ARG, "dm_batcher_seek: batcher not initialised");
    if (epoch < 0 || pos < 0 || pos > b->ds->n)
        return dm_fail(err, DM_ERR_ARG, "dm_batcher_seek: epoch %lld, pos %lld out of range (epoch >= 0, 0 <= pos <= %lld)",
                       (long long)epoch, (long long)pos, (long long)b->ds->n);
    if (epoch != b->epoch) make_order(b, epoch);
    b->pos = pos;
    return DM_OK;
}

int64_t dm_batcher_next(dm_batcher *b, int64_t batch, float *x, float *y, int32_t *labels, int32_t *regime)
{
    return dm_batcher_next_slice(b, batch, 0, batch, x, y, labels, regime);
}

#define BATCH_AHEAD 4 /* rows */

int64_t dm_batcher_next_slice(dm_batcher *b, int64_t batch, int64_t row0, int64_t rows, float *x, float *y,
                              int32_t *labels, int32_t *regime)
{
    if (!b || !b->perm || batch < 1 || batch > b->ds->n || row0 < 0 || rows < 0 || row0 + rows > batch) return 0;
    const dm_dataset *ds = b->ds;
    if (ds->n - b->pos < batch) {   /* drop_last: skip the rest, start the next epoch */
        make_order(b, b->epoch + 1);
        b->pos = 0;
    }
    size_t dim = (size_t)ds->dim, ydim = (size_t)ds->y_dim;
    for (int64_t k = 0; k < rows; k++) {
        size_t r = (size_t)b->perm[b->pos + row0 + k];
        if (k + BATCH_AHEAD < rows) {  /* random rows defeat the hardware prefetcher: fetch ahead */
            size_t q = (size_t)b->perm[b->pos + row0 + k + BATCH_AHEAD];
            for (size_t o = 0; x && o < dim; o += 16) __builtin_prefetch(ds->x + q * dim + o);
            for (size_t o = 0; y && ds->y && o < ydim; o += 16) __builtin_prefetch(ds->y + q * ydim + o);
        }
        if (x) memcpy(x + (size_t)k * dim, ds->x + r * dim, dim * sizeof(float));
        if (y && ds->y) memcpy(y + (size_t)k * ydim, ds->y + r * ydim, ydim * sizeof(float));
        if (labels && ds->labels) labels[k] = ds->labels[r];
        if (regime && ds->regime) regime[k] = ds->regime[r];
    }
    b->pos += batch;
    return rows;
}

void dm_batcher_free(dm_batcher *b)
{
    if (!b) return;
    dm_free(b->perm);
    memset(b, 0, sizeof *b);
}
