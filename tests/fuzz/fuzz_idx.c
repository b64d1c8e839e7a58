/* fuzz_idx.c - the IDX (MNIST-style) loader through dm_data_load("mnist:DIR").
 * The input is the directory's four files: a 6-byte prefix holds the lengths
 * of the first three (u16 little-endian each, cut to what is left), the fourth
 * takes the rest. They go to a scratch directory of this process under
 * $TMPDIR, else /dev/shm, else /tmp. Property: every label is below n_classes. */
#include "fuzz.h"
#include "data/data.h"

#include <sys/stat.h>

static const char *const NAMES[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
static char dir[256];

static void file_path(char *out, size_t cap, int i) { snprintf(out, cap, "%s/%s", dir, NAMES[i]); }

static void cleanup(void)
{
    char p[512];
    for (int i = 0; i < 4; i++) {
        file_path(p, sizeof p, i);
        unlink(p);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/deepmoe-fuzz-idx.%d", base, (int)getpid());
    FUZZ_CHECK(mkdir(dir, 0700) == 0);
    atexit(cleanup);
    return 0;
}

static void check_labels(const dm_dataset *ds, int n_classes)
{
    for (int64_t i = 0; ds->labels && i < ds->n; i++) FUZZ_CHECK(ds->labels[i] >= 0 && ds->labels[i] < n_classes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6) return 0;
    size_t len[4], left = size - 6;
    const uint8_t *p = data + 6;
    for (int i = 0; i < 3; i++) {
        len[i] = (size_t)data[2 * i] | (size_t)data[2 * i + 1] << 8;
        if (len[i] > left) len[i] = left;
        left -= len[i];
    }
    len[3] = left;
    for (int i = 0; i < 4; i++) {
        char path[512];
        file_path(path, sizeof path, i);
        FILE *f = fopen(path, "wb");
        FUZZ_CHECK(f && fwrite(p, 1, len[i], f) == len[i] && fclose(f) == 0);
        p += len[i];
    }
    char spec[300];
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    dm_data d;
    dm_error err;
    if (dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err) == DM_OK) {
        check_labels(&d.train, d.n_classes);
        check_labels(&d.test, d.n_classes);
    }
    dm_data_free(&d);
    return 0;
}
