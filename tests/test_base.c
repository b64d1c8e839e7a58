/* test_base.c - RNG, half floats, thread pool, atomic files, ISA resolution. */
#include "test.h"
#include "base/base.h"
#include "base/pool.h"

#include <stdatomic.h>
#include <stdlib.h>

static void test_base_rng_deterministic(dm_t *t)
{
    dm_rng a, b, c;
    dm_rng_seed(&a, 42);
    dm_rng_seed(&b, 42);
    dm_rng_seed(&c, 43);
    int same = 1, differ = 0;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        float u = dm_rng_uniform(&a, -1, 1), v = dm_rng_uniform(&b, -1, 1), w = dm_rng_uniform(&c, -1, 1);
        same &= u == v;
        differ |= u != w;
        CHECK(t, u >= -1 && u < 1, "uniform %g out of range", (double)u);
        sum += u;
    }
    CHECK(t, same, "same seed must give the same stream");
    CHECK(t, differ, "different seeds must differ");
    CHECK(t, fabs(sum / 10000) < 0.05, "mean %g of U(-1,1) too far from 0", sum / 10000);
}

static void test_base_half_floats(dm_t *t)
{
    CHECK(t, dm_f16_to_f32(0x3c00) == 1.0f, "f16 1.0");
    CHECK(t, dm_f16_to_f32(0xc000) == -2.0f, "f16 -2.0");
    CHECK(t, dm_f16_to_f32(0x7bff) == 65504.0f, "f16 max");
    CHECK(t, dm_f16_to_f32(0x0001) == 5.9604644775390625e-08f, "f16 smallest subnormal");
    CHECK(t, isinf(dm_f16_to_f32(0x7c00)), "f16 inf");
    CHECK(t, dm_bf16_to_f32(0x3f80) == 1.0f, "bf16 1.0");
    CHECK(t, dm_bf16_to_f32(0xc040) == -3.0f, "bf16 -3.0");
    /* round trips of representable values and round-to-nearest-even */
    for (uint32_t h = 0; h < 0x7c00; h += 7) {
        float f = dm_f16_to_f32((uint16_t)h);
        CHECK(t, dm_f32_to_f16(f) == h, "f16 round trip 0x%04x", h);
    }
    CHECK(t, dm_f32_to_f16(1.0f + 2.0f / 4096) == 0x3c00, "f16 ties to even (down)");
    CHECK(t, dm_f32_to_f16(1.0f + 6.0f / 4096) == 0x3c02, "f16 ties to even (up)");
    CHECK(t, dm_f32_to_bf16(1.00390625f) == 0x3f80, "bf16 ties to even");
    CHECK(t, dm_f32_to_bf16(-3.0f) == 0xc040, "bf16 -3");
}

typedef struct { _Atomic int hits[1000]; _Atomic int bad_tid; int n_threads; } pool_arg;

static void count_task(void *v, int64_t task, int tid)
{
    pool_arg *a = v;
    atomic_fetch_add(&a->hits[task], 1);
    if (tid < 0 || tid >= a->n_threads) atomic_store(&a->bad_tid, 1);
}

static void test_base_pool_runs_each_task_once(dm_t *t)
{
    for (int nt = 1; nt <= 4; nt++) {
        dm_pool *p;
        dm_error err;
        CHECK_OK(t, dm_pool_create(nt, &p, &err), &err);
        CHECK(t, dm_pool_size(p) == nt, "pool size %d", dm_pool_size(p));
        for (int rep = 0; rep < 50; rep++) {
            static pool_arg a;
            memset(&a, 0, sizeof a);
            a.n_threads = nt;
            int n = 1 + (rep * 37) % 1000;
            dm_pool_run(p, n, count_task, &a);
            int ok = 1;
            for (int i = 0; i < 1000; i++) ok &= a.hits[i] == (i < n);
            CHECK(t, ok, "threads %d, %d tasks: each task must run exactly once", nt, n);
            CHECK(t, !a.bad_tid, "tid out of range");
        }
        dm_pool_free(p);
    }
    dm_pool *p;
    dm_error err;
    CHECK(t, dm_pool_create(-1, &p, &err) == DM_ERR_ARG, "negative thread count must fail");
    CHECK(t, strstr(err.msg, "thread count") != NULL, "message: %s", err.msg);
}

/* dm_pool_copy: copies and clears of awkward sizes (pieces of 64 KB and a
 * tail), nothing touched past the end, with and without a pool. */
static void test_base_pool_copy(dm_t *t)
{
    static const size_t sizes[] = {0, 1, 63, 65536, 65537, 3 * 65536 + 5, 1000003};
    for (int nt = 0; nt <= 2; nt++) {
        dm_pool *p = NULL;
        dm_error err;
        if (nt) CHECK_OK(t, dm_pool_create(nt, &p, &err), &err);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            unsigned char *src = malloc(n + 1), *dst = malloc(n + 1);
            for (size_t i = 0; i <= n; i++) src[i] = (unsigned char)(i * 7 + 1), dst[i] = 0xee;
            dm_pool_copy(p, dst, src, n);
            CHECK(t, !memcmp(dst, src, n) && dst[n] == 0xee, "copy of %zu bytes (%d threads)", n, nt);
            dm_pool_copy(p, dst, NULL, n);
            int zero = 1;
            for (size_t i = 0; i < n; i++) zero &= dst[i] == 0;
            CHECK(t, zero && dst[n] == 0xee, "clear of %zu bytes (%d threads)", n, nt);
            free(src);
            free(dst);
        }
        dm_pool_free(p);
    }
}

static void test_base_atomic_file(dm_t *t)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/atomic.bin", dm_test_tmpdir());
    dm_test_write_file("atomic.bin", "old", 3);
    dm_atomic_file f;
    dm_error err;
    CHECK_OK(t, dm_atomic_open(&f, path, &err), &err);
    fputs("new contents", f.fp);
    dm_atomic_abort(&f);  /* an aborted write leaves the old file */
    FILE *fp = fopen(path, "rb");
    char buf[32] = {0};
    CHECK(t, fp && fread(buf, 1, sizeof buf, fp) == 3 && !memcmp(buf, "old", 3), "abort must keep the old file");
    if (fp) fclose(fp);
    CHECK_OK(t, dm_atomic_open(&f, path, &err), &err);
    fputs("new", f.fp);
    CHECK_OK(t, dm_atomic_commit(&f, &err), &err);
    fp = fopen(path, "rb");
    memset(buf, 0, sizeof buf);
    CHECK(t, fp && fread(buf, 1, sizeof buf, fp) == 3 && !memcmp(buf, "new", 3), "commit must replace");
    if (fp) fclose(fp);
    CHECK(t, dm_atomic_open(&f, "/nonexistent-dir/x.bin", &err) == DM_ERR_IO, "missing dir must fail");
    CHECK(t, strstr(err.msg, "/nonexistent-dir/x.bin") != NULL, "message names the path: %s", err.msg);
}

static void test_base_isa_resolve(dm_t *t)
{
    CHECK(t, dm_isa_resolve(DM_ISA_REF) == DM_ISA_REF, "ref is always available");
    dm_isa best = dm_isa_resolve(DM_ISA_AVX512);
    CHECK(t, best >= DM_ISA_REF && best <= DM_ISA_AVX512, "resolved isa %d", (int)best);
    CHECK(t, dm_isa_resolve(DM_ISA_AUTO) != DM_ISA_AUTO, "auto must resolve");
}

void suite_base(dm_t *t)
{
    DM_RUN(t, test_base_rng_deterministic);
    DM_RUN(t, test_base_half_floats);
    DM_RUN(t, test_base_pool_runs_each_task_once);
    DM_RUN(t, test_base_pool_copy);
    DM_RUN(t, test_base_atomic_file);
    DM_RUN(t, test_base_isa_resolve);
}
