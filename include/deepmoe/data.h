/* deepmoe/data.h - training data: Fashion-MNIST / MNIST IDX files, user .npy
 * arrays and the synthetic "regimes" set, loaded into a train and a test split.
 *
 * Spec strings (deepmoe train/eval --data SPEC):
 *   fashion-mnist[:DIR]   IDX files (raw or .gz) train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *                         t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; DIR defaults to
 *                         /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)
 *   mnist:DIR             the same file names, for MNIST
 *   X.npy,Y.npy           user arrays without a test split: the last floor(n * holdout) rows
 *                         (file order) are held out as the test split (holdout 0.1: n / 10)
 *   X.npy,Y.npy,XT.npy,YT.npy   explicit train and test arrays
 *   synthetic[:key=value,...]   the regimes set: keys regimes (8), dim (32), rows (20000),
 *                         test (the holdout: the last round(rows * test) rows are held out; 0.1),
 *                         noise (0.15)
 * IDX sets and four .npy files have their own test split; the other two hold
 * rows out of one set, by a share called the holdout (0 = train on every row,
 * leaving the test split empty).
 * Inputs are normalised (dm_data_load_norm chooses how; dm_normalize): by default
 * IDX pixels p -> p / 127.5 - 1 ("pixel"); user arrays per feature to [-1, 1] by the
 * train split's min and max ("minmax"; constant features -> 0; the test split uses
 * the train's scaling, so it may leave [-1, 1] slightly); synthetic rows as made
 * ("none": they are in [-1, 1] already). Every method is one affine map per
 * feature, x' = x * scale + shift, fitted on the train split and applied to both
 * splits as dm_forward applies a model's preprocessing (dm_model_set_preprocess),
 * so dm_data's scale and shift can be given to the model trained on the rows.
 * Labels: IDX labels; for user arrays with task CLASSIFY, Y must be one column of
 * non-negative integers (n_classes = max + 1); for REGRESS, Y is [n, y_dim] float.
 * The synthetic set: regime r has a centre c_r (uniform in [-0.8, 0.8]^dim) and a
 * target map y = tanh(W_r x + b_r) (W_r entries N(0, 1/dim), b_r N(0, 0.1));
 * a row picks r uniformly, x = c_r + noise * N(0, 1) clamped to [-1, 1];
 * REGRESS targets y (y_dim = dim), CLASSIFY labels r (n_classes = regimes). */
#include "deepmoe.h"

#ifndef DEEPMOE_DATA_H
#define DEEPMOE_DATA_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DM_TASK_CLASSIFY = 0, DM_TASK_REGRESS } dm_task;

/* How input features are scaled, per feature, x' = x * scale + shift (the names are
 * those of deepmoe train --normalize and of a model file's deepmoe.normalize). */
typedef enum {
    DM_NORM_DEFAULT = -1,    /* the set's own: pixel for IDX images, minmax for .npy arrays, none for synthetic */
    DM_NORM_NONE = 0,        /* "none": raw values */
    DM_NORM_MINMAX,          /* "minmax": x' = 2 (x - min) / (max - min) - 1 by the train split's min and max
                                (0 for a constant feature) */
    DM_NORM_STANDARD,        /* "standard": x' = (x - mean) / std, the train split's mean and population std
                                (0 for a constant feature) */
    DM_NORM_PIXEL,           /* "pixel": x' = x / 127.5 - 1 (pixels 0..255 to [-1, 1]) */
} dm_normalize;

/* "none", "minmax", "standard", "pixel" ("default" for DM_NORM_DEFAULT). */
DM_API const char *dm_normalize_name(dm_normalize n);
/* The method named (one of the four), or -1. */
DM_API int dm_normalize_parse(const char *name);

typedef struct dm_dataset {
    int64_t n;           /* rows */
    int dim;             /* features per row */
    float *x;            /* [n, dim], scaled as dm_data.normalize says */
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
    double holdout;      /* the share of rows held out as the test split; -1: the set's own test split */
    dm_dataset train, test;
    dm_normalize normalize; /* how x was scaled (both splits); never DM_NORM_DEFAULT after a load */
    float *scale, *shift;   /* [train.dim]: the map, x = raw * scale + shift; NULL for none */
} dm_data;

/* Loads SPEC for task; seed drives the synthetic generator only. Errors name
 * the file and the problem (missing directory: says to install
 * dataset-fashion-mnist). On error *d is left empty (safe to free). */
DM_API dm_status dm_data_load(const char *spec, dm_task task, uint64_t seed, dm_data *d, dm_error *err);
/* The same with the share of rows to hold out of a set without a test split:
 * holdout in [0, 1), or negative for the set's default (0.1, or synthetic's
 * test= key). A holdout >= 0 is refused (DM_ERR_ARG) for a set with its own
 * test split, and for a synthetic spec whose test= key says otherwise. */
DM_API dm_status dm_data_load_holdout(const char *spec, dm_task task, uint64_t seed, double holdout, dm_data *d,
                                      dm_error *err);
/* The same with the scaling chosen: DM_NORM_DEFAULT is the set's own (what the two
 * above do), DM_NORM_NONE loads raw values; the map is fitted on the train split. */
DM_API dm_status dm_data_load_norm(const char *spec, dm_task task, uint64_t seed, double holdout, dm_normalize norm,
                                   dm_data *d, dm_error *err);
/* The set's own scaling (DM_NORM_DEFAULT resolved) for SPEC, without loading it. */
DM_API dm_normalize dm_data_spec_normalize(const char *spec);
DM_API void dm_data_free(dm_data *d);
/* 1 if SPEC names a set without a test split of its own (X.npy,Y.npy or
 * synthetic), which a holdout applies to; 0 otherwise (without loading it). */
DM_API int dm_data_spec_holds_out(const char *spec);

#ifdef __cplusplus
}
#endif
#endif /* DEEPMOE_DATA_H */
