/* data.h - training data: Fashion-MNIST / MNIST IDX files, user .npy arrays,
 * and the synthetic "regimes" set; seeded shuffling and batching.
 *
 * Spec strings (deepmoe train/eval --data SPEC):
 *   fashion-mnist[:DIR]   IDX files (raw or .gz) train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *                         t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; DIR defaults to
 *                         /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)
 *   mnist:DIR             the same file names, for MNIST
 *   X.npy,Y.npy           user arrays; the last 10% of rows (file order) are the test split
 *   X.npy,Y.npy,XT.npy,YT.npy   explicit train and test arrays
 *   synthetic[:key=value,...]   the regimes set: keys regimes (8), dim (32), rows (20000),
 *                         test (0.1 = share held out), noise (0.15)
 * Inputs are normalised to [-1, 1]: IDX pixels p -> p / 127.5 - 1; user arrays
 * per feature by the train split's min and max (constant features -> 0; the test
 * split uses the train's scaling, so it may leave [-1, 1] slightly).
 * Labels: IDX labels; for user arrays with task CLASSIFY, Y must be one column of
 * non-negative integers (n_classes = max + 1); for REGRESS, Y is [n, y_dim] float.
 * The synthetic set: regime r has a centre c_r (uniform in [-0.8, 0.8]^dim) and a
 * target map y = tanh(W_r x + b_r) (W_r entries N(0, 1/dim), b_r N(0, 0.1));
 * a row picks r uniformly, x = c_r + noise * N(0, 1) clamped to [-1, 1];
 * REGRESS targets y (y_dim = dim), CLASSIFY labels r (n_classes = regimes). */
#ifndef DM_DATA_H
#define DM_DATA_H

#include "deepmoe.h"
#include "base/base.h"

typedef enum { DM_TASK_CLASSIFY = 0, DM_TASK_REGRESS } dm_task;

typedef struct dm_dataset {
    int64_t n;           /* rows */
    int dim;             /* features per row */
    float *x;            /* [n, dim] normalised */
    int32_t *labels;     /* [n] (classify) or NULL */
    float *y;            /* [n, y_dim] (regress) or NULL */
    int y_dim;
    int32_t *regime;     /* [n] true regime (synthetic) or NULL */
} dm_dataset;

typedef struct dm_data {
    char name[64];       /* "fashion-mnist", "synthetic", "npy" ... */
    dm_task task;
    int n_classes;       /* classify */
    int n_regimes;       /* synthetic, else 0 */
    dm_dataset train, test;
} dm_data;

/* Loads SPEC for task; seed drives the synthetic generator only. Errors name
 * the file and the problem (missing directory: says to install
 * dataset-fashion-mnist). On error *d is left empty (safe to free). */
dm_status dm_data_load(const char *spec, dm_task task, uint64_t seed, dm_data *d, dm_error *err);
void dm_data_free(dm_data *d);

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
void dm_batcher_free(dm_batcher *b);

/* Augments n square images of side x side pixels in place (IDX data): each is
 * shifted by dx, dy uniform in [-max_shift, max_shift] (background -1 comes in)
 * and, if flip, mirrored left-right with probability 1/2. The draws depend only
 * on (seed, step): a resumed run augments its batches the same way. */
void dm_augment_images(float *x, int64_t n, int side, int max_shift, int flip, uint64_t seed, int64_t step);
/* Input dropout on n values: each is zeroed with probability p, the rest are
 * scaled by 1 / (1 - p) (inverted dropout); draws depend only on (seed, step). */
void dm_augment_dropout(float *x, int64_t n, float p, uint64_t seed, int64_t step);

#endif
