/* synthetic.c - the "regimes" set: rows drawn from R clusters, each with its
 * own smooth target map, so that a mixture of experts has something to route.
 *
 * Spec: synthetic[:key=value,...] with keys
 *   regimes R (8), dim D (32), rows N (20000), test T (0.1), noise s (0.15).
 *
 * The exact recipe (one dm_rng seeded with dm_rng_seed(seed); N(m, v) below
 * means mean m and variance v):
 *   1. For r = 0 .. R-1, in this order:
 *        c_r[j]    = dm_rng_uniform(-0.8, 0.8)                 j = 0 .. D-1
 *        W_r[i][j] = dm_rng_normal() / sqrt(D)   ~ N(0, 1/D)   row-major, i, j = 0 .. D-1
 *        b_r[i]    = dm_rng_normal() * sqrt(0.1) ~ N(0, 0.1)   i = 0 .. D-1
 *      (float arithmetic; the scales are computed in double and rounded to float once)
 *   2. For each of the N rows in turn:
 *        r    = a uniform draw from 0 .. R-1 (unbiased: rejection on dm_rng_u64)
 *        x[j] = clamp(c_r[j] + s * dm_rng_normal(), -1, 1)     j = 0 .. D-1 (float)
 *        y[i] = tanh(b_r[i] + sum_j W_r[i][j] x[j])            sum and tanh in double
 *   3. The first N - round(N * T) rows are the train split, the rest the test
 *      split (round = floor(v + 0.5)). T is the holdout: the test key, or
 *      dm_data_load_holdout's (which must agree with a test key given).
 * The parameters and x do not depend on the task: REGRESS keeps y (y_dim = D),
 * CLASSIFY keeps labels = r (n_classes = R); regime[] = r for both. */
#include "data/data.h"
#include "base/base.h"
#include "base/pool.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct synth_opts {
    int64_t regimes, dim, rows;
    double test, noise;
    int test_given;      /* the spec has a test= key */
} synth_opts;

#define SYNTH_KNOWN "(known: regimes, dim, rows, test, noise)"
#define SYNTH_MAX_REGIMES 65536
#define SYNTH_MAX_DIM 65536
#define SYNTH_MAX_ROWS INT32_MAX   /* the batcher's permutation is int32 */

/* A uniform draw from 0 .. n-1 (n >= 1) without modulo bias: values below
 * 2^64 mod n are rejected, so the rest is a whole number of copies of 0 .. n-1. */
static uint64_t rng_below(dm_rng *r, uint64_t n)
{
    uint64_t limit = (0 - n) % n;
    for (;;) {
        uint64_t u = dm_rng_u64(r);
        if (u >= limit) return u % n;
    }
}

static int parse_int(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int parse_real(const char *v, double lo, double hi, int hi_open, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi || (hi_open && x >= hi)) return -1;
    *out = x;
    return 0;
}

/* Parses "key=value,..." (NULL or "" = all defaults). */
static dm_status parse_opts(const char *opts, synth_opts *o, dm_error *err)
{
    *o = (synth_opts){ .regimes = 8, .dim = 32, .rows = 20000, .test = 0.1, .noise = 0.15 };
    if (!opts || !*opts) return DM_OK;
    char buf[512];
    if (strlen(opts) >= sizeof buf) return dm_fail(err, DM_ERR_ARG, "synthetic: option list too long");
    strcpy(buf, opts);
    int seen[5] = { 0 };
    static const char *const keys[5] = { "regimes", "dim", "rows", "test", "noise" };
    char *item = buf;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        char *eq = strchr(item, '=');
        if (!*item) return dm_fail(err, DM_ERR_ARG, "synthetic: empty option (want key=value,...)");
        if (!eq) return dm_fail(err, DM_ERR_ARG, "synthetic: '%s' is not key=value " SYNTH_KNOWN, item);
        *eq = '\0';
        const char *v = eq + 1;
        int k = -1;
        for (int i = 0; i < 5; i++)
            if (strcmp(item, keys[i]) == 0) k = i;
        if (k < 0) return dm_fail(err, DM_ERR_ARG, "synthetic: unknown key '%s' " SYNTH_KNOWN, item);
        if (seen[k]++) return dm_fail(err, DM_ERR_ARG, "synthetic: key '%s' given twice", item);
        int bad = 0;
        switch (k) {
        case 0: bad = parse_int(v, 1, SYNTH_MAX_REGIMES, &o->regimes); break;
        case 1: bad = parse_int(v, 1, SYNTH_MAX_DIM, &o->dim); break;
        case 2: bad = parse_int(v, 1, SYNTH_MAX_ROWS, &o->rows); break;
        case 3: bad = parse_real(v, 0.0, 1.0, 1, &o->test); break;
        default: bad = parse_real(v, 0.0, 1e6, 0, &o->noise); break;
        }
        if (bad) {
            static const char *const want[5] = {
                "an integer in [1, 65536]", "an integer in [1, 65536]", "an integer in [1, 2147483647]",
                "a number in [0, 1)", "a number >= 0",
            };
            return dm_fail(err, DM_ERR_ARG, "synthetic: %s='%s': want %s", item, v, want[k]);
        }
        if (!comma) break;
        item = comma + 1;
    }
    o->test_given = seen[3];
    return DM_OK;
}

/* Allocates a split's arrays for n rows (n may be 0). */
static dm_status alloc_split(dm_dataset *ds, int64_t n, int dim, dm_task task, dm_error *err)
{
    size_t nx;
    ds->n = n;
    ds->dim = dim;
    if (dm_mul_size((size_t)n, (size_t)dim * sizeof(float), &nx) != 0)
        return dm_fail(err, DM_ERR_ARG, "synthetic: %lld rows of %d features is too large", (long long)n, dim);
    ds->x = dm_alloc(nx);
    ds->regime = dm_alloc((size_t)n * sizeof(int32_t));
    int ok = ds->x && ds->regime;
    if (task == DM_TASK_REGRESS) {
        ds->y_dim = dim;
        ds->y = dm_alloc(nx);
        ok = ok && ds->y;
    } else {
        ds->labels = dm_alloc((size_t)n * sizeof(int32_t));
        ok = ok && ds->labels;
    }
    if (!ok) return dm_fail(err, DM_ERR_NOMEM, "synthetic: out of memory for %lld rows of %d features",
                            (long long)n, dim);
    return DM_OK;
}

#define TARGET_BLOCK 16   /* rows of one regime per task: its map's rows are read once for all of them */

typedef struct targets_arg {
    dm_data *d;
    int64_t n_train;
    int D;
    const float *b, *wt;   /* [R, D] biases, [R, D(j), D(i)] transposed maps */
    const int64_t *order;  /* every row, grouped by regime (row order within one) */
    const int64_t *chunk;  /* [n_chunks + 1] starts in order: at most TARGET_BLOCK rows, one regime each */
    double *acc;           /* [threads, TARGET_BLOCK, D] */
} targets_arg;

static float *row_of(const targets_arg *a, int64_t row, float **y, int *r)
{
    dm_dataset *ds = row < a->n_train ? &a->d->train : &a->d->test;
    int64_t i = row < a->n_train ? row : row - a->n_train;
    *y = ds->y + (size_t)i * a->D;
    *r = ds->regime[i];
    return ds->x + (size_t)i * a->D;
}

/* y[k] = tanh(b[k] + sum_j W[k][j] x[j]) for the rows of chunk t: for each row
 * and k the recipe's double sum, j ascending (rows and k sums run side by side). */
static void targets_task(void *arg, int64_t t, int tid)
{
    targets_arg *a = arg;
    int D = a->D, n = (int)(a->chunk[t + 1] - a->chunk[t]), r = 0;
    double *acc = a->acc + (size_t)tid * TARGET_BLOCK * D;
    const float *x[TARGET_BLOCK];
    float *y[TARGET_BLOCK];
    for (int q = 0; q < n; q++) x[q] = row_of(a, a->order[a->chunk[t] + q], &y[q], &r);
    const float *br = a->b + (size_t)r * D, *tr = a->wt + (size_t)r * D * D;
    for (int q = 0; q < n; q++)
        for (int k = 0; k < D; k++) acc[(size_t)q * D + k] = br[k];
    for (int j = 0; j < D; j++) {
        const float *row_j = tr + (size_t)j * D;
        for (int q = 0; q < n; q++) {
            const double xj = x[q][j];
            double *aq = acc + (size_t)q * D;
            for (int k = 0; k < D; k++) aq[k] += (double)row_j[k] * xj;
        }
    }
    for (int q = 0; q < n; q++)
        for (int k = 0; k < D; k++) y[q][k] = (float)tanh(acc[(size_t)q * D + k]);
}

dm_status dm_data_load_synthetic_(const char *opts, dm_task task, uint64_t seed, double holdout, dm_data *d,
                                  dm_error *err)
{
    synth_opts o;
    dm_status s = parse_opts(opts, &o, err);
    if (s != DM_OK) return s;
    if (holdout >= 0 && o.test_given && holdout != o.test)
        return dm_fail(err, DM_ERR_ARG, "synthetic: test=%g and holdout %g disagree: give one", o.test, holdout);
    if (holdout >= 0) o.test = holdout;
    d->holdout = o.test;
    int64_t n_test = (int64_t)floor((double)o.rows * o.test + 0.5), n_train = o.rows - n_test;
    if (n_train < 1)
        return dm_fail(err, DM_ERR_ARG, "synthetic: rows=%lld with test=%g leaves no train rows", (long long)o.rows,
                       o.test);
    const int R = (int)o.regimes, D = (int)o.dim;
    size_t nw;
    if (dm_mul_size((size_t)R * (size_t)D, (size_t)D * sizeof(float), &nw) != 0)
        return dm_fail(err, DM_ERR_ARG, "synthetic: regimes=%d with dim=%d is too large", R, D);
    float *c = dm_alloc((size_t)R * (size_t)D * sizeof(float)), *w = dm_alloc(nw),
          *b = dm_alloc((size_t)R * (size_t)D * sizeof(float)), *wt = dm_alloc(nw);
    if (!c || !w || !b || !wt) {
        s = dm_fail(err, DM_ERR_NOMEM, "synthetic: out of memory for %d regimes of dim %d", R, D);
        goto out;
    }
    snprintf(d->name, sizeof d->name, "synthetic");
    d->task = task;
    d->n_regimes = R;
    d->n_classes = task == DM_TASK_CLASSIFY ? R : 0;
    if ((s = alloc_split(&d->train, n_train, D, task, err)) != DM_OK) goto out;
    if ((s = alloc_split(&d->test, n_test, D, task, err)) != DM_OK) goto out;

    dm_rng rng;
    dm_rng_seed(&rng, seed);
    const float w_scale = (float)(1.0 / sqrt((double)D)), b_scale = (float)sqrt(0.1), noise = (float)o.noise;
    for (int r = 0; r < R; r++) {
        float *cr = c + (size_t)r * D, *wr = w + (size_t)r * D * D, *br = b + (size_t)r * D;
        for (int j = 0; j < D; j++) cr[j] = dm_rng_uniform(&rng, -0.8f, 0.8f);
        for (size_t i = 0; i < (size_t)D * D; i++) wr[i] = dm_rng_normal(&rng) * w_scale;
        for (int i = 0; i < D; i++) br[i] = dm_rng_normal(&rng) * b_scale;
        /* W_r transposed, [j][i]: the target's sums below run over i in the inner
         * loop (independent sums, vectorizable), each still adding its j terms in order */
        float *tr = wt + (size_t)r * D * D;
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) tr[(size_t)j * D + i] = wr[(size_t)i * D + j];
    }
    for (int64_t row = 0; row < o.rows; row++) {
        dm_dataset *ds = row < n_train ? &d->train : &d->test;
        int64_t i = row < n_train ? row : row - n_train;
        int r = (int)rng_below(&rng, (uint64_t)R);
        const float *cr = c + (size_t)r * D;
        float *x = ds->x + (size_t)i * D;
        for (int j = 0; j < D; j++) {
            float v = cr[j] + noise * dm_rng_normal(&rng);
            x[j] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
        }
        ds->regime[i] = r;
        if (ds->labels) ds->labels[i] = r;
    }
    /* the targets: rows are independent once x and r are drawn, so the pool's
     * threads take blocks of them (each row's sums as in the recipe, whichever thread) */
    if (d->train.y || d->test.y) {
        targets_arg ta = {d, n_train, D, b, wt, NULL, NULL, NULL};
        int64_t *order = dm_alloc_array2((size_t)o.rows, 1, sizeof *order);
        int64_t *start = dm_alloc_array2((size_t)R + 1, 1, sizeof *start);
        int64_t *chunk = dm_alloc_array2((size_t)(o.rows / TARGET_BLOCK + R + 1), 1, sizeof *chunk);
        dm_pool *pool = NULL;
        int nt = dm_pool_create(0, &pool, NULL) ? 1 : dm_pool_size(pool);
        double *acc = dm_alloc_array2((size_t)nt * TARGET_BLOCK, (size_t)D, sizeof(double));
        int64_t n_chunks = 0;
        if (order && start && chunk && acc) {
            /* rows grouped by regime, a stable counting sort */
            memset(start, 0, ((size_t)R + 1) * sizeof *start);
            for (int64_t row = 0; row < o.rows; row++)
                start[(row < n_train ? d->train.regime[row] : d->test.regime[row - n_train]) + 1]++;
            for (int q = 0; q < R; q++) start[q + 1] += start[q];
            for (int q = 0; q <= R; q++) chunk[q] = start[q];   /* scratch: each regime's next slot */
            for (int64_t row = 0; row < o.rows; row++)
                order[chunk[row < n_train ? d->train.regime[row] : d->test.regime[row - n_train]]++] = row;
            for (int q = 0; q < R; q++)
                for (int64_t at = start[q]; at < start[q + 1]; at += TARGET_BLOCK) chunk[n_chunks++] = at;
            chunk[n_chunks] = o.rows;
            ta.order = order;
            ta.chunk = chunk;
            ta.acc = acc;
            dm_pool_run(pool, n_chunks, targets_task, &ta);
        }
        dm_free(order);
        dm_free(start);
        dm_free(chunk);
        dm_free(acc);
        dm_pool_free(pool);
        if (!ta.acc) {
            s = dm_fail(err, DM_ERR_NOMEM, "synthetic: out of memory");
            goto out;
        }
    }
out:
    dm_free(c);
    dm_free(w);
    dm_free(b);
    dm_free(wt);
    return s;
}
