/* preprocess.c - a model's input preprocessing (preprocess.h): the methods'
 * names, fitting them on a train split, applying the affine map, and the
 * model's getter and setter. */
#include "base/base.h"
#include "nn/model.h"
#include "nn/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const norm_names[] = {"none", "minmax", "standard", "pixel"};
#define N_NORM ((int)(sizeof norm_names / sizeof norm_names[0]))

const char *dm_normalize_name(dm_normalize n)
{
    if (n == DM_NORM_DEFAULT) return "default";
    return (int)n >= 0 && (int)n < N_NORM ? norm_names[n] : "unknown";
}

int dm_normalize_parse(const char *name)
{
    for (int i = 0; name && i < N_NORM; i++)
        if (!strcmp(name, norm_names[i])) return i;
    return -1;
}

/* Two float roundings, never fused into one multiply-add: the product, then the
 * sum. GCC in ISO C mode (-std=c11) does not contract; the attribute and the
 * pragma keep it so under other flags and compilers. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
int64_t dm_preprocess_apply(const float *x, int64_t n, int width, const float *scale, const float *shift,
                            float *out)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        const float *xr = x + i * width;
        float *yr = out + i * width;
        int inf = 0;
        for (int j = 0; j < width; j++) {
            float v = xr[j] * scale[j];
            v = v + shift[j];
            yr[j] = v;
            inf |= isinf(v);
        }
        if (inf && bad < 0)
            for (int j = 0; j < width && bad < 0; j++)
                if (isinf(yr[j])) bad = i * width + j;
    }
    return bad;
}

/* scale = s and shift = b0 - at * scale, rounded to float (the shift from the
 * rounded scale, so that x = at maps to b0 as closely as floats allow); 0, 0
 * when either does not fit a float. */
static void put(float *scale, float *shift, double s, double at, double b0)
{
    float sf = (float)s, bf = (float)(b0 - at * (double)sf);
    if (!isfinite(sf) || !isfinite(bf)) sf = bf = 0.0f;
    *scale = sf;
    *shift = bf;
}

void dm_preprocess_fit(dm_normalize method, const float *x, int64_t n, int width, float *scale, float *shift)
{
    for (int j = 0; j < width; j++) {
        scale[j] = 0.0f;
        shift[j] = 0.0f;
        if (method == DM_NORM_NONE || method == DM_NORM_DEFAULT) {
            scale[j] = 1.0f;
        } else if (method == DM_NORM_PIXEL) {
            scale[j] = (float)(1.0 / 127.5);
            shift[j] = -1.0f;
        } else if (n > 0 && method == DM_NORM_MINMAX) {
            float lo = x[j], hi = x[j];
            for (int64_t i = 1; i < n; i++) {
                float v = x[i * width + j];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            /* in double: hi - lo can overflow float for huge but finite inputs */
            double range = (double)hi - (double)lo;
            if (range > 0) put(&scale[j], &shift[j], 2.0 / range, lo, -1.0);   /* min -> -1 */
        } else if (n > 0 && method == DM_NORM_STANDARD) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < n; i++) mean += x[i * width + j];
            mean /= (double)n;
            for (int64_t i = 0; i < n; i++) {
                double d = x[i * width + j] - mean;
                var += d * d;
            }
            double sd = sqrt(var / (double)n);
            if (sd > 0) put(&scale[j], &shift[j], 1.0 / sd, mean, 0.0);   /* mean -> 0 */
        }
    }
}

void dm_preprocess_clear(dm_preprocess *p)
{
    dm_free(p->scale);
    dm_free(p->shift);
    p->scale = p->shift = NULL;
    p->method = DM_NORM_DEFAULT;
}

/* ---------------------------------------------------------------- the model's */

dm_status dm_model_set_preprocess(dm_model *m, const char *method, const float *scale, const float *shift,
                                  dm_error *err)
{
    if (!m) return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: NULL model");
    if (!method) {
        if (scale || shift)
            return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: scale and shift without a method name");
        dm_preprocess_clear(&m->pre);
        return DM_OK;
    }
    int id = dm_normalize_parse(method);
    if (id < 0)
        return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: unknown method \"%.40s\" (known: " DM_NORMALIZE_NAMES
                       ")", method);
    if (id == DM_NORM_NONE) {
        if (scale || shift)
            return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: method none takes no scale or shift");
        dm_preprocess_clear(&m->pre);
        m->pre.method = DM_NORM_NONE;
        return DM_OK;
    }
    if (!scale || !shift)
        return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: method %s needs both scale and shift", method);
    int in = dm_model_in_width(&m->cfg);
    for (int j = 0; j < in; j++)
        if (!isfinite(scale[j]) || !isfinite(shift[j]))
            return dm_fail(err, DM_ERR_ARG, "dm_model_set_preprocess: %s[%d] is %s; the map must be finite",
                           isfinite(scale[j]) ? "shift" : "scale", j,
                           isnan(isfinite(scale[j]) ? shift[j] : scale[j]) ? "NaN" : "Inf");
    float *s = dm_alloc_array((size_t)in, sizeof *s), *b = dm_alloc_array((size_t)in, sizeof *b);
    if (!s || !b) {
        dm_free(s);
        dm_free(b);
        return dm_fail(err, DM_ERR_NOMEM, "dm_model_set_preprocess: out of memory");
    }
    memcpy(s, scale, (size_t)in * sizeof *s);
    memcpy(b, shift, (size_t)in * sizeof *b);
    dm_preprocess_clear(&m->pre);
    m->pre = (dm_preprocess){.method = (dm_normalize)id, .scale = s, .shift = b};
    return DM_OK;
}

int dm_model_preprocess(const dm_model *m, const char **method, const float **scale, const float **shift)
{
    const dm_preprocess *p = &m->pre;
    if (method) *method = p->method == DM_NORM_DEFAULT ? NULL : dm_normalize_name(p->method);
    if (scale) *scale = p->scale;
    if (shift) *shift = p->shift;
    return p->scale != NULL;
}
