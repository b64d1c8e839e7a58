/* test.h - a tiny test harness: CHECK records a failure and goes on; each
 * suite is a function that runs its tests through DM_RUN. A test that cannot
 * fail is a defect: every test asserts on values it computed. */
#ifndef DM_TEST_H
#define DM_TEST_H

#include "deepmoe.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct dm_t {
    int passed, failed;     /* tests */
    int cur_failed;         /* checks failed in the running test */
    const char *cur;        /* running test's name */
    const char *only;       /* run only tests whose name contains this */
} dm_t;

#define CHECK(t, cond, ...) do {                                              \
        if (!(cond)) {                                                        \
            (t)->cur_failed++;                                                \
            if ((t)->cur_failed <= 5) {                                       \
                fprintf(stderr, "  %s:%d: %s: check failed: %s: ", __FILE__,  \
                        __LINE__, (t)->cur, #cond);                           \
                fprintf(stderr, __VA_ARGS__);                                 \
                fputc('\n', stderr);                                          \
            }                                                                 \
        }                                                                     \
    } while (0)

/* CHECK that a call returned DM_OK, printing its error otherwise. */
#define CHECK_OK(t, call, errp) do {                                          \
        dm_status s_ = (call);                                                \
        CHECK(t, s_ == DM_OK, "%s: %s", dm_status_name(s_), (errp)->msg);     \
    } while (0)

void dm_test_run(dm_t *t, const char *name, void (*fn)(dm_t *));
#define DM_RUN(t, fn) dm_test_run((t), #fn, fn)

/* max |a-b| / max(max |b|, tiny): the normalized error the tests bound. */
double dm_test_relerr(const float *a, const float *b, int64_t n);
/* n random rows of d values in [-1, 1), deterministic in seed; free with free(). */
float *dm_test_rows(int64_t n, int d, uint64_t seed);
/* Every parameter of m random (LayerNorm too), router weights scaled up so that
 * routing is decisive; then dm_model_sync. */
void dm_test_randomize(dm_model *m, uint64_t seed);
/* The whole file, malloc'd; *n its size (NULL and 0 if it cannot be read). */
unsigned char *dm_test_slurp(const char *path, size_t *n);
/* A scratch directory for this process (created once, under $TMPDIR). */
const char *dm_test_tmpdir(void);
/* Writes bytes to tmpdir/name, returns the full path (static buffer per call slot). */
const char *dm_test_write_file(const char *name, const void *data, size_t n);
/* Path to a fixture file: tests/fixtures/name relative to the source tree. */
const char *dm_test_fixture(const char *name);

/* Suites (one per tests/test_*.c). */
void suite_base(dm_t *t);
void suite_kernels(dm_t *t);
void suite_wt_half(dm_t *t);
void suite_wt_nm24(dm_t *t);
void suite_wt_q8(dm_t *t);
void suite_io(dm_t *t);
void suite_moe(dm_t *t);
void suite_exchange(dm_t *t);
void suite_parity(dm_t *t);
void suite_quant_parity(dm_t *t);
void suite_data(dm_t *t);
void suite_train(dm_t *t);
void suite_train_parity(dm_t *t);
void suite_train_bf16(dm_t *t);
void suite_serve_config(dm_t *t);
void suite_serve_codec(dm_t *t);
void suite_serve_sched(dm_t *t);
void suite_regress(dm_t *t);
void suite_quantize(dm_t *t);
void suite_run(dm_t *t);
void suite_config(dm_t *t);
void suite_preprocess(dm_t *t);
void suite_trace(dm_t *t);
void suite_prom(dm_t *t);

#endif
