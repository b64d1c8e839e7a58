/* test_main.c - runs every C test suite and prints "N passed, N failed".
 * Usage: test_deepmoe [substring]   (run only tests whose name contains it) */
#include "test.h"
#include "base/base.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>


void dm_test_run(dm_t *t, const char *name, void (*fn)(dm_t *))
{
    if (t->only && !strstr(name, t->only)) return;
    t->cur = name;
    t->cur_failed = 0;
    fn(t);
    if (t->cur_failed) {
        t->failed++;
        printf("FAIL %s (%d checks)\n", name, t->cur_failed);
    } else {
        t->passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

float *dm_test_rows(int64_t n, int d, uint64_t seed)
{
    float *x = malloc((size_t)(n ? n : 1) * d * sizeof *x);
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int64_t i = 0; i < n * d; i++) x[i] = dm_rng_uniform(&r, -1, 1);
    return x;
}

void dm_test_randomize(dm_model *m, uint64_t seed)
{
    dm_rng r;
    dm_rng_seed(&r, seed);
    for (int i = 0; i < dm_model_n_tensors(m); i++) {
        dm_tensor_info ti = dm_model_tensor(m, i);
        float s = strncmp(ti.name, "gating.", 7) == 0 ? 1.5f : 0.4f;
        for (int64_t j = 0; j < ti.numel; j++) ti.data[j] = dm_rng_uniform(&r, -s, s);
    }
    dm_error err;
    dm_model_sync(m, &err);
}

unsigned char *dm_test_slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    *n = 0;
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = len > 0 ? malloc((size_t)len) : NULL;
    if (p && fread(p, 1, (size_t)len, fp) == (size_t)len) *n = (size_t)len;
    fclose(fp);
    return p;
}

double dm_test_relerr(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY;  /* NaN */
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

const char *dm_test_tmpdir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/deepmoe-test-%d", base && *base ? base : "/tmp", (int)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

const char *dm_test_write_file(const char *name, const void *data, size_t n)
{
    static char paths[8][1024];
    static int slot;
    char *p = paths[slot++ % 8];
    snprintf(p, 1024, "%s/%s", dm_test_tmpdir(), name);
    FILE *fp = fopen(p, "wb");
    if (fp) {
        if (n) fwrite(data, 1, n, fp);
        fclose(fp);
    }
    return p;
}

const char *dm_test_fixture(const char *name)
{
    static char paths[8][1024];
    static int slot;
    char *p = paths[slot++ % 8];
    const char *dir = getenv("DEEPMOE_FIXTURES");
    snprintf(p, 1024, "%s/%s", dir && *dir ? dir : "tests/fixtures", name);
    return p;
}

int main(int argc, char **argv)
{
    dm_t t = {0};
    t.only = argc > 1 ? argv[1] : NULL;
    suite_base(&t);
    suite_trace(&t);
    suite_prom(&t);
    suite_kernels(&t);
    suite_wt_half(&t);
    suite_wt_nm24(&t);
    suite_wt_q8(&t);
    suite_io(&t);
    suite_moe(&t);
    suite_exchange(&t);
    suite_config(&t);
    suite_parity(&t);
    suite_quant_parity(&t);
    suite_data(&t);
    suite_train(&t);
    suite_train_parity(&t);
    suite_train_bf16(&t);
    suite_run(&t);
    suite_preprocess(&t);
    suite_serve_config(&t);
    suite_serve_codec(&t);
    suite_serve_sched(&t);
    suite_regress(&t);
    suite_quantize(&t);
    /* remove the scratch directory's files */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dm_test_tmpdir());
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dm_test_tmpdir());
    printf("%d passed, %d failed\n", t.passed, t.failed);
    return t.failed ? 1 : 0;
}
