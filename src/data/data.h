/* data.h - the data layer's internals: seeded shuffling and batching, and
 * augmentation. Datasets, spec strings and loading are public
 * (include/deepmoe/data.h). */
#ifndef DM_DATA_H
#define DM_DATA_H

#include "deepmoe.h"
#include "base/base.h"

/* Entry points of idx.c and synthetic.c, called by dm_data_load (data.c).
 * holdout: as dm_data_load_holdout's (negative: the default). */
dm_status dm_data_load_idx_(const char *kind, const char *dir, dm_data *d, dm_error *err);
dm_status dm_data_load_synthetic_(const char *opts, dm_task task, uint64_t seed, double holdout, dm_data *d,
                                  dm_error *err);

/* Epoch-based batching. Epoch e's order is a Fisher-Yates permutation drawn
 * from dm_rng seeded with (seed, e) (identity if !shuffle), so (epoch, pos)
 * is the whole state: resuming at the same (epoch, pos) replays the same rows.
 * A batch never straddles epochs: when fewer than `batch` rows remain, the
 * rest of the epoch is skipped (drop_last) and the next epoch starts. */
typedef struct dm_batcher {
    const dm_dataset *ds;
    uint64_t seed;
    int shuffle;
    int64_t epoch, pos;
    int32_t *perm;       /* [ds->n] order of the current epoch */
} dm_batcher;

dm_status dm_batcher_init(dm_batcher *b, const dm_dataset *ds, uint64_t seed, int shuffle, dm_error *err);
/* Moves to (epoch, pos) (regenerating that epoch's order). */
dm_status dm_batcher_seek(dm_batcher *b, int64_t epoch, int64_t pos, dm_error *err);
/* Copies the next `batch` rows: x [batch, dim], and y [batch, y_dim] / labels [batch] /
 * regime [batch] when those pointers and the dataset's arrays are non-NULL.
 * Returns the rows copied (= batch; 0 if the dataset has fewer than batch rows). */
int64_t dm_batcher_next(dm_batcher *b, int64_t batch, float *x, float *y, int32_t *labels, int32_t *regime);
/* The same step of `batch` rows, copying only its rows [row0, row0 + rows)
 * (a data-parallel rank's share); returns rows (0 on bad arguments). */
int64_t dm_batcher_next_slice(dm_batcher *b, int64_t batch, int64_t row0, int64_t rows, float *x, float *y,
                              int32_t *labels, int32_t *regime);
void dm_batcher_free(dm_batcher *b);

/* Augments n square images of side x side pixels in place (IDX data): each is
 * shifted by dx, dy uniform in [-max_shift, max_shift] (pixels of value
 * `background` come in: the training run augments raw pixels, so 0) and, if
 * flip, mirrored left-right with probability 1/2. The draws depend only on
 * (seed, step): a resumed run augments its batches the same way. */
void dm_augment_images(float *x, int64_t n, int side, int max_shift, int flip, float background, uint64_t seed,
                       int64_t step);
/* Input dropout on n values: each is zeroed with probability p, the rest are
 * scaled by 1 / (1 - p) (inverted dropout); draws depend only on (seed, step). */
void dm_augment_dropout(float *x, int64_t n, float p, uint64_t seed, int64_t step);
/* The same two on the rows [row0, row0 + n) of a step's batch (a data-parallel
 * rank's share): x holds those rows and gets what the whole batch's call
 * would give them (dropout: x holds n values from value row0 on). */
void dm_augment_images_at(float *x, int64_t row0, int64_t n, int side, int max_shift, int flip, float background,
                          uint64_t seed, int64_t step);
void dm_augment_dropout_at(float *x, int64_t at, int64_t n, float p, uint64_t seed, int64_t step);

#endif
