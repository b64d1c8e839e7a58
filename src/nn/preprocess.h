/* preprocess.h - a model's input preprocessing: one affine map per input
 * feature, x' = x * scale + shift, fitted on a train split (minmax, standard)
 * or fixed (pixel), applied by dm_forward and dm_forward_dense before anything
 * else, and carried by model files as preprocess.scale / preprocess.shift and
 * deepmoe.normalize (docs/formats.md). It is not a parameter: not in the
 * tensor table, not trained, not in checkpoints. The data loader and the
 * training run apply it with the same function, so the rows a model trained
 * on are bit for bit the rows dm_forward makes of the same raw values. */
#ifndef DM_PREPROCESS_H
#define DM_PREPROCESS_H

#include "deepmoe.h"

#define DM_NORMALIZE_KEY "deepmoe.normalize"
#define DM_PRE_SCALE "preprocess.scale"
#define DM_PRE_SHIFT "preprocess.shift"
#define DM_NORMALIZE_NAMES "none, minmax, standard, pixel"

typedef struct dm_preprocess {
    dm_normalize method;     /* DM_NORM_DEFAULT: nothing recorded (rows go in as given) */
    float *scale, *shift;    /* [in] (dm_alloc), or NULL: nothing recorded, or DM_NORM_NONE */
} dm_preprocess;

/* out[i, j] = x[i, j] * scale[j] + shift[j] for i < n, j < width, in float with
 * two roundings (the product, then the sum; never one fused multiply-add), as
 * numpy computes it on float32 arrays. out may be x.
 * Returns the index (i * width + j) of the first value that overflowed to
 * Inf, or -1 when every value is finite. */
int64_t dm_preprocess_apply(const float *x, int64_t n, int width, const float *scale, const float *shift,
                            float *out);

/* The map of `method` fitted on x [n, width] (a train split) into scale and
 * shift [width]:
 *   none      scale 1, shift 0
 *   pixel     scale (float)(1 / 127.5), shift -1 (IDX pixels 0..255 to [-1, 1])
 *   minmax    scale = 2 / (max - min), shift = -1 - min * scale: [min, max] to [-1, 1]
 *   standard  scale = 1 / std, shift = -mean * scale (population std)
 * (in double, rounded to float). A constant column (max = min, std 0), an
 * empty x, or a scale that does not fit a float gives scale 0 and shift 0. */
void dm_preprocess_fit(dm_normalize method, const float *x, int64_t n, int width, float *scale, float *shift);

/* Frees scale and shift; method becomes DM_NORM_DEFAULT. */
void dm_preprocess_clear(dm_preprocess *p);

#endif
