/* data.c - dm_data_load: the spec string, user .npy arrays, dm_data_free.
 *
 * Spec forms (data.h has the full description):
 *   fashion-mnist[:DIR] | mnist:DIR          -> idx.c
 *   synthetic[:key=value,...]                -> synthetic.c
 *   X.npy,Y.npy | X.npy,Y.npy,XT.npy,YT.npy  -> here
 * Paths cannot contain commas; a spec that is none of the above is refused.
 *
 * Every loader reads raw values; dm_data_load_norm then scales the features
 * (nn/preprocess.c: one affine map per column fitted on the train split and
 * applied to both splits, as dm_forward applies a model's): by default pixel
 * for IDX images, none for synthetic rows, and for user arrays minmax,
 *   x' = 2 (x - min) / (max - min) - 1,  and 0 for a constant column,
 * the test split reusing the train's min and max.
 *
 * User arrays: X is [n, dim] (any dtype dm_npy_read accepts). With two files the last
 * floor(n * holdout) rows (file order) are the test split (holdout 0.1 by
 * default: n / 10, integer division). CLASSIFY: Y
 * is one column (or a 1-D array) of non-negative integers, n_classes = the
 * largest train label + 1, and a test label >= n_classes is an error. REGRESS:
 * Y is [n, y_dim] float, used as is. NaN or Inf anywhere is an error. */
#include "data/data.h"
#include "nn/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DATA_MAX_CLASSES 65536
#define DATA_MAX_ROWS INT32_MAX     /* the batcher's permutation is int32 */

/* ---------------------------------------------------------------- free */

static void free_split(dm_dataset *ds)
{
    dm_free(ds->x);
    dm_free(ds->labels);
    dm_free(ds->y);
    dm_free(ds->regime);
}

void dm_data_free(dm_data *d)
{
    if (!d) return;
    free_split(&d->train);
    free_split(&d->test);
    dm_free(d->scale);
    dm_free(d->shift);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- npy */

/* The arrays of one split as read, before they become a dm_dataset. */
typedef struct npy_pair {
    const char *xpath, *ypath;
    dm_array x, y;
} npy_pair;

/* A 1-D Y of n values reads as [1, n]; with n rows of X it means [n, 1]. */
static void y_as_column(npy_pair *p)
{
    if (p->y.rows == 1 && p->x.rows != 1 && p->y.cols == p->x.rows) {
        p->y.rows = p->y.cols;
        p->y.cols = 1;
    }
}

static dm_status check_finite(const char *path, const dm_array *a, dm_error *err)
{
    for (int64_t i = 0; i < a->rows * a->cols; i++)
        if (!isfinite(a->data[i]))
            return dm_fail(err, DM_ERR_NONFINITE, "%s: row %lld, column %lld is %s", path, (long long)(i / a->cols),
                           (long long)(i % a->cols), isnan(a->data[i]) ? "NaN" : "Inf");
    return DM_OK;
}

/* Reads and checks one X, Y pair. */
static dm_status read_pair(npy_pair *p, dm_task task, dm_error *err)
{
    dm_status s = dm_npy_read(p->xpath, &p->x, err);
    if (s != DM_OK) return s;
    if ((s = dm_npy_read(p->ypath, &p->y, err)) != DM_OK) return s;
    y_as_column(p);
    if (p->x.cols < 1) return dm_fail(err, DM_ERR_SHAPE, "%s: no columns (features)", p->xpath);
    if (p->x.cols > INT32_MAX) return dm_fail(err, DM_ERR_SHAPE, "%s: too many columns", p->xpath);
    if (p->x.rows > DATA_MAX_ROWS)
        return dm_fail(err, DM_ERR_SHAPE, "%s: %lld rows is more than supported (%d)", p->xpath,
                       (long long)p->x.rows, DATA_MAX_ROWS);
    if (p->x.rows != p->y.rows)
        return dm_fail(err, DM_ERR_SHAPE, "%s: %lld rows but %s has %lld", p->xpath, (long long)p->x.rows,
                       p->ypath, (long long)p->y.rows);
    if (p->y.cols < 1) return dm_fail(err, DM_ERR_SHAPE, "%s: no columns (targets)", p->ypath);
    if (task == DM_TASK_CLASSIFY && p->y.cols != 1)
        return dm_fail(err, DM_ERR_SHAPE, "%s: classification labels must be one column, got %lld", p->ypath,
                       (long long)p->y.cols);
    if (task == DM_TASK_REGRESS && p->y.cols > INT32_MAX)
        return dm_fail(err, DM_ERR_SHAPE, "%s: too many columns", p->ypath);
    if ((s = check_finite(p->xpath, &p->x, err)) != DM_OK) return s;
    if ((s = check_finite(p->ypath, &p->y, err)) != DM_OK) return s;
    if (task == DM_TASK_CLASSIFY) {
        for (int64_t i = 0; i < p->y.rows; i++) {
            float v = p->y.data[i];
            if (v < 0 || v != floorf(v) || v >= DATA_MAX_CLASSES)
                return dm_fail(err, DM_ERR_FORMAT, "%s: row %lld: label %g is not an integer in [0, %d)", p->ypath,
                               (long long)i, (double)v, DATA_MAX_CLASSES);
        }
    }
    return DM_OK;
}

/* Rows [from, from + n) of a [*, cols] array into a new buffer. */
static float *copy_rows(const dm_array *a, int64_t from, int64_t n)
{
    float *p = dm_alloc_array2((size_t)n, (size_t)a->cols, sizeof(float));
    if (p && n) memcpy(p, a->data + (size_t)from * (size_t)a->cols, (size_t)n * (size_t)a->cols * sizeof(float));
    return p;
}

/* Fills ds with rows [from, from + n) of the pair. take: the split may keep
 * the pair's buffers (rows beyond n stay allocated but unused), else copies. */
static dm_status fill_split(dm_dataset *ds, npy_pair *p, int64_t from, int64_t n, int take, dm_task task,
                            dm_error *err)
{
    ds->n = n;
    ds->dim = (int)p->x.cols;
    if (take && from == 0) {
        ds->x = p->x.data;
        p->x.data = NULL;
    } else if (!(ds->x = copy_rows(&p->x, from, n))) {
        return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", p->xpath);
    }
    if (task == DM_TASK_REGRESS) {
        ds->y_dim = (int)p->y.cols;
        if (take && from == 0) {
            ds->y = p->y.data;
            p->y.data = NULL;
        } else if (!(ds->y = copy_rows(&p->y, from, n))) {
            return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", p->ypath);
        }
    } else {
        ds->labels = dm_alloc_array((size_t)n, sizeof(int32_t));
        if (!ds->labels) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", p->ypath);
        for (int64_t i = 0; i < n; i++) ds->labels[i] = (int32_t)p->y.data[from + i];
    }
    return DM_OK;
}

static dm_status load_npy(char *const paths[4], int n_paths, dm_task task, double holdout, dm_data *d,
                          dm_error *err)
{
    if (n_paths == 4 && holdout >= 0)
        return dm_fail(err, DM_ERR_ARG, "%s: XT.npy,YT.npy are the test split; a holdout (%g) applies to X.npy,Y.npy "
                       "alone", paths[2], holdout);
    npy_pair tr = { .xpath = paths[0], .ypath = paths[1] }, te = { 0 };
    dm_status s = read_pair(&tr, task, err);
    if (s != DM_OK) goto out;
    if (tr.x.rows < 1) {
        s = dm_fail(err, DM_ERR_SHAPE, "%s: no rows", tr.xpath);
        goto out;
    }
    snprintf(d->name, sizeof d->name, "npy");
    d->task = task;
    if (n_paths == 2) {
        /* n / 10 for the default: floor(n * 0.1) is the same (0.1 rounds up as a double) */
        int64_t n = tr.x.rows, n_test = holdout < 0 ? n / 10 : (int64_t)floor((double)n * holdout);
        d->holdout = holdout < 0 ? 0.1 : holdout;
        if ((s = fill_split(&d->test, &tr, n - n_test, n_test, 0, task, err)) != DM_OK) goto out;
        if ((s = fill_split(&d->train, &tr, 0, n - n_test, 1, task, err)) != DM_OK) goto out;
    } else {
        te.xpath = paths[2];
        te.ypath = paths[3];
        if ((s = read_pair(&te, task, err)) != DM_OK) goto out;
        if (te.x.cols != tr.x.cols) {
            s = dm_fail(err, DM_ERR_SHAPE, "%s: %lld columns but %s has %lld", te.xpath, (long long)te.x.cols,
                        tr.xpath, (long long)tr.x.cols);
            goto out;
        }
        if (task == DM_TASK_REGRESS && te.y.cols != tr.y.cols) {
            s = dm_fail(err, DM_ERR_SHAPE, "%s: %lld columns but %s has %lld", te.ypath, (long long)te.y.cols,
                        tr.ypath, (long long)tr.y.cols);
            goto out;
        }
        if ((s = fill_split(&d->train, &tr, 0, tr.x.rows, 1, task, err)) != DM_OK) goto out;
        if ((s = fill_split(&d->test, &te, 0, te.x.rows, 1, task, err)) != DM_OK) goto out;
        d->holdout = -1;
    }
    if (task == DM_TASK_CLASSIFY) {
        int32_t max = 0;
        for (int64_t i = 0; i < d->train.n; i++) max = DM_MAX(max, d->train.labels[i]);
        d->n_classes = max + 1;
        for (int64_t i = 0; i < d->test.n; i++) {
            if (d->test.labels[i] < d->n_classes) continue;
            if (n_paths == 2)
                s = dm_fail(err, DM_ERR_FORMAT, "%s: label %d at row %lld (test split) but the train split's labels "
                            "only reach %d; shuffle the rows or pass X.npy,Y.npy,XT.npy,YT.npy", tr.ypath,
                            (int)d->test.labels[i], (long long)(d->train.n + i), (int)max);
            else
                s = dm_fail(err, DM_ERR_FORMAT, "%s: label %d at row %lld but the labels of %s only reach %d",
                            te.ypath, (int)d->test.labels[i], (long long)i, tr.ypath, (int)max);
            goto out;
        }
    }
out:
    dm_array_free(&tr.x);
    dm_array_free(&tr.y);
    dm_array_free(&te.x);
    dm_array_free(&te.y);
    return s;
}

/* ---------------------------------------------------------------- spec */

#define SPEC_FORMS "fashion-mnist[:DIR], mnist:DIR, X.npy,Y.npy[,XT.npy,YT.npy] or synthetic[:key=value,...]"

/* s is `word` or starts with `word:`; *rest = what follows the ':' (or NULL). */
static int spec_is(const char *s, const char *word, const char **rest)
{
    size_t n = strlen(word);
    if (strncmp(s, word, n) != 0 || (s[n] != '\0' && s[n] != ':')) return 0;
    *rest = s[n] == ':' ? s + n + 1 : NULL;
    return 1;
}

static dm_status dispatch(const char *spec, dm_task task, uint64_t seed, double holdout, dm_data *d, dm_error *err)
{
    const char *rest;
    if (spec_is(spec, "fashion-mnist", &rest) || spec_is(spec, "mnist", &rest)) {
        const char *kind = spec[0] == 'f' ? "fashion-mnist" : "mnist";
        if (rest && !*rest) rest = NULL;
        if (!rest && kind[0] == 'm') return dm_fail(err, DM_ERR_ARG, "mnist: needs a directory: mnist:DIR");
        if (task != DM_TASK_CLASSIFY)
            return dm_fail(err, DM_ERR_ARG, "%s: IDX data has class labels only; it needs the classify task", kind);
        if (holdout >= 0)
            return dm_fail(err, DM_ERR_ARG, "%s: the set has its own test split; a holdout (%g) applies to sets "
                           "without one (X.npy,Y.npy, synthetic)", kind, holdout);
        d->holdout = -1;
        return dm_data_load_idx_(kind, rest, d, err);
    }
    if (spec_is(spec, "synthetic", &rest)) return dm_data_load_synthetic_(rest, task, seed, holdout, d, err);

    char *buf = strdup(spec), *paths[4] = { 0 };
    if (!buf) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", spec);
    int n = 0;
    for (char *p = buf; n < 4;) {
        paths[n++] = p;
        p = strchr(p, ',');
        if (!p) break;
        *p++ = '\0';
    }
    dm_status s;
    int commas = 0;
    for (const char *p = spec; *p; p++) commas += *p == ',';
    size_t len = strlen(spec);
    if (commas == 0 && len > 4 && strcmp(spec + len - 4, ".npy") == 0) {
        s = dm_fail(err, DM_ERR_ARG, "%s: .npy data needs features and targets: X.npy,Y.npy", spec);
    } else if (commas == 0) {
        s = dm_fail(err, DM_ERR_ARG, "%s: unknown data spec (want " SPEC_FORMS ")", spec);
    } else if (commas != 1 && commas != 3) {
        s = dm_fail(err, DM_ERR_ARG, "%s: %d comma-separated paths; want X.npy,Y.npy or X.npy,Y.npy,XT.npy,YT.npy",
                    spec, commas + 1);
    } else {
        s = DM_OK;
        for (int i = 0; i < n && s == DM_OK; i++)
            if (!*paths[i]) s = dm_fail(err, DM_ERR_ARG, "%s: empty path %d of %d", spec, i + 1, n);
        if (s == DM_OK) s = load_npy(paths, n, task, holdout, d, err);
    }
    free(buf);
    return s;
}

int dm_data_spec_holds_out(const char *spec)
{
    const char *rest;
    if (!spec) return 0;
    if (spec_is(spec, "synthetic", &rest)) return 1;
    int commas = 0;
    for (const char *p = spec; *p; p++) commas += *p == ',';
    return commas == 1 && !spec_is(spec, "fashion-mnist", &rest) && !spec_is(spec, "mnist", &rest);
}

dm_normalize dm_data_spec_normalize(const char *spec)
{
    const char *rest;
    if (!spec) return DM_NORM_MINMAX;
    if (spec_is(spec, "fashion-mnist", &rest) || spec_is(spec, "mnist", &rest)) return DM_NORM_PIXEL;
    if (spec_is(spec, "synthetic", &rest)) return DM_NORM_NONE;
    return DM_NORM_MINMAX;
}

/* The features of both splits scaled by `norm` fitted on the train split. */
static dm_status scale_features(const char *spec, dm_normalize norm, dm_data *d, dm_error *err)
{
    d->normalize = norm;
    if (norm == DM_NORM_NONE) return DM_OK;
    int dim = d->train.dim;
    d->scale = dm_alloc_array((size_t)dim, sizeof(float));
    d->shift = dm_alloc_array((size_t)dim, sizeof(float));
    if (!d->scale || !d->shift) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", spec);
    dm_preprocess_fit(norm, d->train.x, d->train.n, dim, d->scale, d->shift);
    dm_dataset *sp[2] = {&d->train, &d->test};
    for (int k = 0; k < 2; k++) {
        if (sp[k]->n && sp[k]->dim != dim)
            return dm_fail(err, DM_ERR_SHAPE, "%s: the test split has %d features, the train split %d", spec,
                           sp[k]->dim, dim);
        int64_t bad = dm_preprocess_apply(sp[k]->x, sp[k]->n, dim, d->scale, d->shift, sp[k]->x);
        if (bad >= 0)
            return dm_fail(err, DM_ERR_NONFINITE, "%s: %s split row %lld, column %lld is Inf after %s scaling (x * %g "
                           "+ %g)", spec, k ? "test" : "train", (long long)(bad / dim), (long long)(bad % dim),
                           dm_normalize_name(norm), (double)d->scale[bad % dim], (double)d->shift[bad % dim]);
    }
    return DM_OK;
}

dm_status dm_data_load(const char *spec, dm_task task, uint64_t seed, dm_data *d, dm_error *err)
{
    return dm_data_load_norm(spec, task, seed, -1, DM_NORM_DEFAULT, d, err);
}

dm_status dm_data_load_holdout(const char *spec, dm_task task, uint64_t seed, double holdout, dm_data *d,
                               dm_error *err)
{
    return dm_data_load_norm(spec, task, seed, holdout, DM_NORM_DEFAULT, d, err);
}

dm_status dm_data_load_norm(const char *spec, dm_task task, uint64_t seed, double holdout, dm_normalize norm,
                            dm_data *d, dm_error *err)
{
    if (!d) return dm_fail(err, DM_ERR_ARG, "dm_data_load: NULL dm_data");
    memset(d, 0, sizeof *d);
    if (!spec || !*spec) return dm_fail(err, DM_ERR_ARG, "dm_data_load: empty data spec (want " SPEC_FORMS ")");
    if (task != DM_TASK_CLASSIFY && task != DM_TASK_REGRESS)
        return dm_fail(err, DM_ERR_ARG, "%s: unknown task %d", spec, (int)task);
    if (isnan(holdout) || holdout >= 1)
        return dm_fail(err, DM_ERR_ARG, "%s: holdout %g must be in [0, 1)", spec, holdout);
    if (holdout < 0) holdout = -1;
    if ((int)norm < DM_NORM_DEFAULT || (int)norm > DM_NORM_PIXEL)
        return dm_fail(err, DM_ERR_ARG, "%s: unknown normalization %d", spec, (int)norm);
    dm_status s = dispatch(spec, task, seed, holdout, d, err);
    if (s == DM_OK) s = scale_features(spec, norm == DM_NORM_DEFAULT ? dm_data_spec_normalize(spec) : norm, d, err);
    if (s != DM_OK) dm_data_free(d);
    return s;
}
