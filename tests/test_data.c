/* test_data.c - the data module: IDX files (raw and gzip'd, written here byte
 * by byte, and every malformed one refused), user .npy arrays (integer dtypes,
 * scaling, splits, errors), the synthetic regimes set (its documented recipe,
 * reproduced here), the spec string, and the batcher's order and resumption.
 * Debian's Fashion-MNIST is loaded when it is installed. */
#include "test.h"
#include "base/base.h"
#include "data/data.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ---------------------------------------------------------------- helpers */

/* Asserts a failure: status, substring, one line, and (if path) that the
 * message starts with it. */
static void expect_err(dm_t *t, const char *label, dm_status got, const dm_error *e, dm_status want, const char *sub,
                       const char *path)
{
    CHECK(t, got == want, "%s: status %s, want %s (%s)", label, dm_status_name(got), dm_status_name(want), e->msg);
    CHECK(t, e->code == want, "%s: err.code %s", label, dm_status_name(e->code));
    CHECK(t, strstr(e->msg, sub) != NULL, "%s: message '%s' lacks '%s'", label, e->msg, sub);
    CHECK(t, strchr(e->msg, '\n') == NULL, "%s: message has a newline: '%s'", label, e->msg);
    if (path) CHECK(t, strncmp(e->msg, path, strlen(path)) == 0, "%s: message '%s' does not start with '%s'", label,
                    e->msg, path);
}

/* After a failed load, *d must be all zero (and so safe to free). */
static void expect_empty(dm_t *t, const char *label, const dm_data *d)
{
    static const dm_data zero;
    CHECK(t, memcmp(d, &zero, sizeof zero) == 0, "%s: dm_data not left empty", label);
}

/* Loads spec, expects failure with status and substring, and an empty d. */
static void expect_load_err(dm_t *t, const char *label, const char *spec, dm_task task, dm_status want,
                            const char *sub, const char *path)
{
    dm_data d;
    memset(&d, 0x5a, sizeof d);   /* garbage in: the loader must clear it */
    dm_error err = { 0 };
    dm_status s = dm_data_load(spec, task, 1, &d, &err);
    expect_err(t, label, s, &err, want, sub, path);
    expect_empty(t, label, &d);
    dm_data_free(&d);
}

static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dm_test_tmpdir(), name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (f) {
            if (n) gzwrite(f, data, (unsigned)n);
            gzclose(f);
        }
    } else {
        FILE *fp = fopen(path, "wb");
        if (fp) {
            if (n) fwrite(data, 1, n, fp);
            fclose(fp);
        }
    }
}

static size_t read_all(const char *path, unsigned char *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ---------------------------------------------------------------- IDX fixtures */

/* A small IDX set: 6 train images and 3 test images of 2x3 pixels. */
enum { TR_N = 6, TE_N = 3, IMG_R = 2, IMG_C = 3, IMG_D = IMG_R * IMG_C };
static const uint8_t tr_labels[TR_N] = { 0, 1, 2, 0, 1, 2 };
static const uint8_t te_labels[TE_N] = { 2, 0, 1 };

static uint8_t pixel(int split, int i, int k)
{
    if (split == 0 && i == 0) return k == 0 ? 0 : k == 1 ? 255 : (uint8_t)(k * 40);   /* both ends */
    return (uint8_t)((split * 101 + i * 37 + k * 11) % 256);
}

/* IDX image bytes: header + n images of rows x cols (pixels from pixel()). */
static size_t idx_images(unsigned char *buf, uint32_t magic, int split, uint32_t n, uint32_t rows, uint32_t cols)
{
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < rows * cols; k++) buf[16 + i * rows * cols + k] = pixel(split, (int)i, (int)k);
    return 16 + (size_t)n * rows * cols;
}

static size_t idx_labels(unsigned char *buf, uint32_t magic, const uint8_t *labels, uint32_t n)
{
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    memcpy(buf + 8, labels, n);
    return 8 + (size_t)n;
}

/* Writes the four files of the good set into tmpdir/name (gz: with .gz names). */
static const char *idx_dir(char *dir, size_t cap, const char *name, int gz)
{
    tmp_path(dir, cap, name);
    mkdir(dir, 0700);
    unsigned char buf[256];
    char p[1200];
    const char *ext = gz ? ".gz" : "";
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte%s", dir, ext);
    write_bytes(p, buf, idx_images(buf, 0x803, 0, TR_N, IMG_R, IMG_C), gz);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte%s", dir, ext);
    write_bytes(p, buf, idx_labels(buf, 0x801, tr_labels, TR_N), gz);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte%s", dir, ext);
    write_bytes(p, buf, idx_images(buf, 0x803, 1, TE_N, IMG_R, IMG_C), gz);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte%s", dir, ext);
    write_bytes(p, buf, idx_labels(buf, 0x801, te_labels, TE_N), gz);
    return dir;
}

/* Checks a loaded small IDX set against the bytes written. */
static void check_small_idx(dm_t *t, const char *label, const dm_data *d)
{
    CHECK(t, strcmp(d->name, "mnist") == 0, "%s: name %s", label, d->name);
    CHECK(t, d->normalize == DM_NORM_PIXEL && d->scale && d->shift && d->scale[0] == (float)(1.0 / 127.5) &&
          d->shift[IMG_D - 1] == -1.0f, "%s: scaled by the pixel map (%s)", label, dm_normalize_name(d->normalize));
    CHECK(t, d->task == DM_TASK_CLASSIFY && d->n_classes == 3 && d->n_regimes == 0, "%s: task %d classes %d", label,
          (int)d->task, d->n_classes);
    CHECK(t, d->train.n == TR_N && d->test.n == TE_N, "%s: n %lld/%lld", label, (long long)d->train.n,
          (long long)d->test.n);
    CHECK(t, d->train.dim == IMG_D && d->test.dim == IMG_D, "%s: dim %d", label, d->train.dim);
    CHECK(t, d->train.y == NULL && d->train.regime == NULL && d->test.y == NULL, "%s: no y/regime", label);
    if (d->train.n != TR_N || d->test.n != TE_N || d->train.dim != IMG_D || !d->train.labels || !d->test.labels)
        return;
    const dm_dataset *sp[2] = { &d->train, &d->test };
    int bad = 0;
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < sp[s]->n; i++) {
            for (int k = 0; k < IMG_D; k++) {
                /* the pixel map, x * scale + shift in float (two roundings, as dm_forward) */
                float want = (float)pixel(s, (int)i, k) * (float)(1.0 / 127.5);
                want = want - 1.0f;
                bad += sp[s]->x[i * IMG_D + k] != want;
                bad += fabsf(want - (float)(pixel(s, (int)i, k) / 127.5 - 1.0)) > 1.2e-7f;  /* the formula */
            }
            bad += sp[s]->labels[i] != (s ? te_labels : tr_labels)[i];
        }
    CHECK(t, bad == 0, "%s: %d values differ", label, bad);
    CHECK(t, d->train.x[0] == -1.0f && d->train.x[1] == 1.0f, "%s: 0 -> %g, 255 -> %g", label, d->train.x[0],
          d->train.x[1]);
}

/* ---------------------------------------------------------------- IDX tests */

static void test_data_idx_raw(dm_t *t)
{
    char dir[1024], spec[1100];
    idx_dir(dir, sizeof dir, "idx_raw", 0);
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    check_small_idx(t, "raw", &d);
    dm_data_free(&d);
    dm_data_free(&d);   /* twice: the first left it empty */
    CHECK(t, d.train.x == NULL && d.train.n == 0, "free clears");
}

static void test_data_idx_gzip(dm_t *t)
{
    char dir[1024], spec[1100];
    idx_dir(dir, sizeof dir, "idx_gz", 1);
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    check_small_idx(t, "gz", &d);
    dm_data_free(&d);

    /* the files really are gzip'd */
    unsigned char head[2] = { 0 };
    char p[1200];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    CHECK(t, read_all(p, head, 2) == 2 && head[0] == 0x1f && head[1] == 0x8b, "gzip magic %02x %02x", head[0],
          head[1]);

    /* mixed: raw train, gz test; fashion-mnist:DIR reads the same files */
    idx_dir(dir, sizeof dir, "idx_mixed", 0);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    unlink(p);
    unsigned char buf[256];
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_bytes(p, buf, idx_images(buf, 0x803, 1, TE_N, IMG_R, IMG_C), 1);
    snprintf(spec, sizeof spec, "fashion-mnist:%s", dir);
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    CHECK(t, strcmp(d.name, "fashion-mnist") == 0, "name %s", d.name);
    snprintf(d.name, sizeof d.name, "mnist");
    check_small_idx(t, "mixed", &d);
    dm_data_free(&d);
}

/* Replaces one file of a fresh good set, then expects the load to fail. */
static void idx_case(dm_t *t, const char *label, const char *file, const void *bytes, size_t n, int gz,
                     dm_status want, const char *sub)
{
    static int serial;
    char name[64], dir[1024], spec[1100], p[1200];
    snprintf(name, sizeof name, "idx_bad%d", serial++);
    idx_dir(dir, sizeof dir, name, 0);
    snprintf(p, sizeof p, "%s/%s", dir, file);
    unlink(p);
    if (bytes) {
        if (gz) strcat(p, ".gz");
        write_bytes(p, bytes, n, gz);
    }
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    expect_load_err(t, label, spec, DM_TASK_CLASSIFY, want, sub, dir);
}

static void test_data_idx_errors(dm_t *t)
{
    unsigned char buf[512];
    size_t n;
    const char *TI = "train-images-idx3-ubyte", *TL = "train-labels-idx1-ubyte";
    const char *EI = "t10k-images-idx3-ubyte", *EL = "t10k-labels-idx1-ubyte";

    idx_case(t, "missing file", EL, NULL, 0, 0, DM_ERR_IO, "t10k-labels-idx1-ubyte: not found");
    n = idx_images(buf, 0x801, 0, TR_N, IMG_R, IMG_C);
    idx_case(t, "images with label magic", TI, buf, n, 0, DM_ERR_FORMAT, "bad magic 0x00000801 (want 0x00000803");
    n = idx_labels(buf, 0x803, te_labels, TE_N);
    idx_case(t, "labels with image magic (gz)", EL, buf, n, 1, DM_ERR_FORMAT,
             "t10k-labels-idx1-ubyte.gz: bad magic 0x00000803 (want 0x00000801");
    idx_case(t, "not idx", TI, "PK\x03\x04zipfile", 11, 0, DM_ERR_FORMAT, "bad magic 0x504b0304");
    idx_case(t, "empty file", TL, "", 0, 0, DM_ERR_FORMAT, "truncated: the header has 0 of 8 bytes");
    idx_case(t, "short header", TI, "\0\0\x08\x03\0\0", 6, 0, DM_ERR_FORMAT, "truncated: the header has 6 of 16");

    n = idx_images(buf, 0x803, 0, TR_N, IMG_R, IMG_C);
    idx_case(t, "truncated pixels", TI, buf, n - 5, 0, DM_ERR_FORMAT, "truncated: the pixel data has 31 of 36 bytes");
    idx_case(t, "truncated pixels (gz)", TI, buf, n - 5, 1, DM_ERR_FORMAT, "truncated: the pixel data has 31 of 36");
    buf[n] = 7;
    idx_case(t, "trailing byte", TI, buf, n + 1, 0, DM_ERR_FORMAT, "unexpected data after the 6 images");
    n = idx_labels(buf, 0x801, tr_labels, TR_N);
    idx_case(t, "truncated labels", TL, buf, n - 1, 0, DM_ERR_FORMAT, "truncated: the label data has 5 of 6 bytes");
    buf[n] = 1;
    idx_case(t, "trailing label", TL, buf, n + 1, 1, DM_ERR_FORMAT, "unexpected data after the 6 labels");
    n = idx_labels(buf, 0x801, tr_labels, TR_N - 1);
    idx_case(t, "count mismatch", TL, buf, n, 0, DM_ERR_SHAPE, "train-labels-idx1-ubyte: 5 labels but");

    n = idx_images(buf, 0x803, 1, TE_N, IMG_C, IMG_R);
    idx_case(t, "test image size", EI, buf, n, 0, DM_ERR_SHAPE, "t10k-images-idx3-ubyte: 3x2 images but");
    n = idx_images(buf, 0x803, 0, TR_N, 0, IMG_C);
    idx_case(t, "zero rows", TI, buf, n, 0, DM_ERR_FORMAT, "implausible image size 0x3");
    n = idx_images(buf, 0x803, 0, 0, IMG_R, IMG_C);
    idx_case(t, "no train images", TI, buf, n, 0, DM_ERR_FORMAT, "train-images-idx3-ubyte: no images");
    put_be32(buf, 0x803);
    put_be32(buf + 4, 0x80000000u);   /* the header alone: no data follows */
    put_be32(buf + 8, IMG_R);
    put_be32(buf + 12, IMG_C);
    idx_case(t, "huge count", TI, buf, 16, 0, DM_ERR_FORMAT, "2147483648 items is more than supported");

    static const uint8_t unseen[TE_N] = { 2, 7, 1 };
    n = idx_labels(buf, 0x801, unseen, TE_N);
    idx_case(t, "test label unseen", EL, buf, n, 0, DM_ERR_FORMAT,
             "t10k-labels-idx1-ubyte: label 7 at row 1, but the train labels");

    /* a gzip header, then a deflate block of the reserved type 3 */
    static const unsigned char badgz[] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0, 0 };
    idx_case(t, "corrupt gzip", TI, badgz, sizeof badgz, 0, DM_ERR_FORMAT, "gzip error");

    /* a real gzip file cut short: in the data, and just before the trailer */
    char p[1200];
    tmp_path(p, sizeof p, "whole.gz");
    n = idx_images(buf, 0x803, 0, TR_N, IMG_R, IMG_C);
    write_bytes(p, buf, n, 1);
    unsigned char gz[512];
    size_t gn = read_all(p, gz, sizeof gz);
    CHECK(t, gn > 30, "gzip written (%zu bytes)", gn);
    idx_case(t, "cut gzip", TI, gz, gn / 2, 0, DM_ERR_FORMAT, "truncated");
    idx_case(t, "gzip without trailer", TI, gz, gn - 8, 0, DM_ERR_FORMAT, "the gzip stream ends early");
    /* a flipped CRC */
    gz[gn - 8] ^= 0xff;
    idx_case(t, "gzip bad crc", TI, gz, gn, 0, DM_ERR_FORMAT, "gzip error");

    /* directories and tasks */
    expect_load_err(t, "missing dir", "fashion-mnist:/nonexistent/deepmoe-fm", DM_TASK_CLASSIFY, DM_ERR_IO,
                    "/nonexistent/deepmoe-fm: directory not found; install Debian's dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist) or pass --data fashion-mnist:DIR", NULL);
    expect_load_err(t, "missing mnist dir", "mnist:/nonexistent/deepmoe-m", DM_TASK_CLASSIFY, DM_ERR_IO,
                    "directory not found", "/nonexistent/deepmoe-m");
    char file[1024], spec[1100];
    write_bytes(tmp_path(file, sizeof file, "plainfile"), "x", 1, 0);
    snprintf(spec, sizeof spec, "mnist:%s", file);
    expect_load_err(t, "not a dir", spec, DM_TASK_CLASSIFY, DM_ERR_IO, "not a directory", file);
    expect_load_err(t, "mnist needs dir", "mnist", DM_TASK_CLASSIFY, DM_ERR_ARG, "needs a directory", "mnist");
    expect_load_err(t, "mnist: empty dir", "mnist:", DM_TASK_CLASSIFY, DM_ERR_ARG, "needs a directory", "mnist");
    char dir[1024];
    idx_dir(dir, sizeof dir, "idx_regress", 0);
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    expect_load_err(t, "regress", spec, DM_TASK_REGRESS, DM_ERR_ARG, "needs the classify task", "mnist");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_data_fashion_mnist(dm_t *t)
{
    struct stat st;
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (stat(dir, &st) != 0) {
        printf("  skipped: no fashion-mnist\n");
        return;
    }
    dm_data d;
    dm_error err = { 0 };
    double t0 = now_s();
    dm_status s = dm_data_load("fashion-mnist", DM_TASK_CLASSIFY, 0, &d, &err);
    double secs = now_s() - t0;
    CHECK_OK(t, s, &err);
    if (s != DM_OK) return;
    printf("  fashion-mnist loaded in %.2f s\n", secs);
    CHECK(t, strcmp(d.name, "fashion-mnist") == 0 && d.n_classes == 10, "name %s classes %d", d.name, d.n_classes);
    CHECK(t, d.train.n == 60000 && d.test.n == 10000, "n %lld/%lld", (long long)d.train.n, (long long)d.test.n);
    CHECK(t, d.train.dim == 784 && d.test.dim == 784, "dim %d/%d", d.train.dim, d.test.dim);
    const dm_dataset *sp[2] = { &d.train, &d.test };
    for (int k = 0; k < 2; k++) {
        int64_t hist[10] = { 0 }, other = 0, out = 0, lo = 0, hi = 0;
        for (int64_t i = 0; i < sp[k]->n; i++) {
            int32_t l = sp[k]->labels[i];
            if (l >= 0 && l < 10) hist[l]++;
            else other++;
        }
        for (int64_t i = 0; i < sp[k]->n * 784; i++) {
            float v = sp[k]->x[i];
            out += !(v >= -1.0f && v <= 1.0f);
            lo += v == -1.0f;
            hi += v == 1.0f;
        }
        int64_t want = k == 0 ? 6000 : 1000;
        for (int c = 0; c < 10; c++) CHECK(t, hist[c] == want, "split %d class %d: %lld rows", k, c, (long long)hist[c]);
        CHECK(t, other == 0 && out == 0, "split %d: %lld bad labels, %lld pixels outside [-1, 1]", k,
              (long long)other, (long long)out);
        CHECK(t, lo > 0 && hi > 0, "split %d: pixels reach -1 (%lld) and 1 (%lld)", k, (long long)lo, (long long)hi);
    }
    dm_data_free(&d);
}

/* ---------------------------------------------------------------- npy */

/* A .npy file (v1.0) with dtype descr and shape text, holding raw bytes. */
static const char *npy_raw(const char *name, const char *descr, const char *shape, const void *data, size_t nd)
{
    char dict[200];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }\n", descr, shape);
    unsigned char *buf = malloc(10 + (size_t)dl + nd + 1);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    put_le(buf + 8, (uint64_t)dl, 2);
    memcpy(buf + 10, dict, (size_t)dl);
    if (nd) memcpy(buf + 10 + dl, data, nd);
    const char *p = dm_test_write_file(name, buf, 10 + (size_t)dl + nd);
    free(buf);
    return p;
}

static const char *npy_f32(const char *name, const float *v, int64_t rows, int64_t cols)
{
    static char paths[8][1024];
    static int slot;
    char *p = paths[slot++ % 8];
    tmp_path(p, 1024, name);
    dm_error err = { 0 };
    dm_npy_write(p, v, rows, cols, &err);
    return p;
}

static void test_data_npy_int_dtypes(dm_t *t)
{
    struct {
        const char *descr;
        int size;
        int64_t v[4];
    } ok[] = {
        { "<i4", 4, { -3, 0, 16777216, -16777216 } },
        { "<i8", 8, { 1, -2, 16777216, -16777216 } },
        { "|u1", 1, { 0, 255, 7, 128 } },
        { "<u1", 1, { 0, 255, 7, 128 } },
        { "|i1", 1, { -128, 127, -1, 0 } },
    };
    for (size_t c = 0; c < sizeof ok / sizeof ok[0]; c++) {
        unsigned char raw[32];
        for (int i = 0; i < 4; i++) put_le(raw + i * ok[c].size, (uint64_t)ok[c].v[i], ok[c].size);
        const char *p = npy_raw("int.npy", ok[c].descr, "(2, 2)", raw, 4 * (size_t)ok[c].size);
        dm_array a;
        dm_error err = { 0 };
        CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
        CHECK(t, a.rows == 2 && a.cols == 2, "%s: shape %lld x %lld", ok[c].descr, (long long)a.rows,
              (long long)a.cols);
        for (int i = 0; a.data && i < 4; i++)
            CHECK(t, a.data[i] == (float)ok[c].v[i], "%s[%d] = %g, want %lld", ok[c].descr, i, a.data[i],
                  (long long)ok[c].v[i]);
        dm_array_free(&a);
    }
    struct {
        const char *descr;
        int size;
        int64_t v;
        const char *sub;
    } bad[] = {
        { "<i4", 4, 16777217, "value 16777217 at row 1, column 0 is not exactly representable as float32" },
        { "<i4", 4, -16777217, "value -16777217 at row 1, column 0" },
        { "<i4", 4, INT32_MIN, "value -2147483648" },
        { "<i8", 8, INT64_C(1) << 40, "value 1099511627776" },
        { "<i8", 8, INT64_MIN, "value -9223372036854775808" },
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        unsigned char raw[24] = { 0 };
        put_le(raw + bad[c].size, (uint64_t)bad[c].v, bad[c].size);   /* row 1, column 0 of (3, 1) */
        const char *p = npy_raw("intbad.npy", bad[c].descr, "(3, 1)", raw, 3 * (size_t)bad[c].size);
        dm_array a = { .rows = 7 };
        dm_error err = { 0 };
        expect_err(t, bad[c].descr, dm_npy_read(p, &a, &err), &err, DM_ERR_UNSUPPORTED, bad[c].sub, p);
        CHECK(t, a.data == NULL && a.rows == 0, "%s: out zeroed", bad[c].descr);
    }
    /* still refused: unsigned wider than a byte, big-endian ints */
    dm_array a;
    dm_error err = { 0 };
    const char *p = npy_raw("u4.npy", "<u4", "(1,)", "\0\0\0\0", 4);
    expect_err(t, "u4", dm_npy_read(p, &a, &err), &err, DM_ERR_UNSUPPORTED, "dtype '<u4' not supported", p);
    p = npy_raw("bi4.npy", ">i4", "(1,)", "\0\0\0\0", 4);
    expect_err(t, ">i4", dm_npy_read(p, &a, &err), &err, DM_ERR_UNSUPPORTED, "dtype '>i4' not supported", p);
    /* a truncated integer file is still a size error */
    p = npy_raw("i8short.npy", "<i8", "(3,)", "\0\0\0\0\0\0\0\0", 8);
    expect_err(t, "i8 short", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT, "data is 8 bytes, shape (3,) needs 24", p);
}

/* X [20, 3]: column 0 = i, column 1 = 5 (constant), column 2 = -0.5 i. */
static void make_x(float *x, int n)
{
    for (int i = 0; i < n; i++) {
        x[i * 3 + 0] = (float)i;
        x[i * 3 + 1] = 5.0f;
        x[i * 3 + 2] = -0.5f * (float)i;
    }
}

static void test_data_npy_split(dm_t *t)
{
    float x[60], y[20];
    make_x(x, 20);
    for (int i = 0; i < 20; i++) y[i] = (float)(i % 4);
    char spec[2200];
    snprintf(spec, sizeof spec, "%s,%s", npy_f32("X.npy", x, 20, 3), npy_f32("Y.npy", y, 20, 1));
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    CHECK(t, strcmp(d.name, "npy") == 0 && d.task == DM_TASK_CLASSIFY && d.n_classes == 4 && d.n_regimes == 0,
          "name %s classes %d", d.name, d.n_classes);
    CHECK(t, d.train.n == 18 && d.test.n == 2 && d.train.dim == 3 && d.test.dim == 3, "n %lld/%lld dim %d",
          (long long)d.train.n, (long long)d.test.n, d.train.dim);
    if (d.train.n == 18 && d.test.n == 2 && d.train.labels && d.test.labels) {
        int bad = 0;
        const dm_dataset *sp[2] = { &d.train, &d.test };
        for (int s = 0; s < 2; s++)
            for (int64_t r = 0; r < sp[s]->n; r++) {
                int i = (int)r + (s ? 18 : 0);
                /* train min/max: column 0 in [0, 17], column 2 in [-8.5, 0] */
                float w0 = (float)((i - 0.0) * (2.0 / 17.0) - 1.0), w2 = (float)((-0.5 * i + 8.5) * (2.0 / 8.5) - 1.0);
                const float *row = sp[s]->x + r * 3;
                bad += fabsf(row[0] - w0) > 1e-6f || row[1] != 0.0f || fabsf(row[2] - w2) > 1e-6f;
                bad += sp[s]->labels[r] != i % 4;
            }
        CHECK(t, bad == 0, "%d rows differ", bad);
        CHECK(t, d.train.x[0] == -1.0f && d.train.x[17 * 3] == 1.0f, "train column 0 spans [-1, 1]");
        CHECK(t, d.test.x[0] > 1.0f, "test uses the train's scale: %g", d.test.x[0]);
        CHECK(t, d.train.y == NULL && d.train.regime == NULL, "no y or regime");
    }
    dm_data_free(&d);

    /* the same labels as a 1-D int64 array (what numpy writes by default) */
    unsigned char raw[160];
    for (int i = 0; i < 20; i++) put_le(raw + 8 * i, (uint64_t)(i % 4), 8);
    snprintf(spec, sizeof spec, "%s,%s", npy_f32("X.npy", x, 20, 3), npy_raw("Yi8.npy", "<i8", "(20,)", raw, 160));
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    CHECK(t, d.train.n == 18 && d.n_classes == 4 && d.train.labels && d.train.labels[5] == 1 &&
          d.test.labels && d.test.labels[1] == 3, "1-D int64 labels");
    dm_data_free(&d);

    /* regression: Y [20, 2] as is, split the same way */
    float yr[40];
    for (int i = 0; i < 40; i++) yr[i] = (float)i * 0.25f - 3.0f;
    snprintf(spec, sizeof spec, "%s,%s", npy_f32("X.npy", x, 20, 3), npy_f32("Yr.npy", yr, 20, 2));
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 0, &d, &err), &err);
    CHECK(t, d.task == DM_TASK_REGRESS && d.n_classes == 0 && d.train.labels == NULL, "regress task");
    CHECK(t, d.train.y_dim == 2 && d.test.y_dim == 2 && d.train.n == 18 && d.test.n == 2, "regress shape");
    if (d.train.y && d.test.y && d.train.n == 18) {
        CHECK(t, memcmp(d.train.y, yr, 36 * sizeof(float)) == 0, "train y");
        CHECK(t, memcmp(d.test.y, yr + 36, 4 * sizeof(float)) == 0, "test y");
    }
    dm_data_free(&d);

    /* fewer than 10 rows: no test split */
    snprintf(spec, sizeof spec, "%s,%s", npy_f32("X9.npy", x, 9, 3), npy_f32("Y9.npy", y, 9, 1));
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    CHECK(t, d.train.n == 9 && d.test.n == 0, "9 rows: %lld/%lld", (long long)d.train.n, (long long)d.test.n);
    dm_data_free(&d);
}

static void test_data_npy_four_files(dm_t *t)
{
    float x[60], y[20], xt[6] = { 34, 5, 0, -17, 6, -17 }, yt[2] = { 1, 3 };
    make_x(x, 20);
    for (int i = 0; i < 20; i++) y[i] = (float)(i % 4);
    char spec[4400];
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", npy_f32("X.npy", x, 20, 3), npy_f32("Y.npy", y, 20, 1),
             npy_f32("XT.npy", xt, 2, 3), npy_f32("YT.npy", yt, 2, 1));
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, &err), &err);
    CHECK(t, d.train.n == 20 && d.test.n == 2 && d.n_classes == 4, "n %lld/%lld", (long long)d.train.n,
          (long long)d.test.n);
    if (d.test.n == 2 && d.test.x && d.test.labels) {
        /* train column 0 spans [0, 19], column 2 [-9.5, 0] */
        float want[6] = { (float)(34 * (2.0 / 19) - 1), 0.0f, (float)((0 + 9.5) * (2.0 / 9.5) - 1),
                          (float)(-17 * (2.0 / 19) - 1), 0.0f, (float)((-17 + 9.5) * (2.0 / 9.5) - 1) };
        for (int i = 0; i < 6; i++) CHECK(t, fabsf(d.test.x[i] - want[i]) < 1e-6f, "xt[%d] %g want %g", i, d.test.x[i],
                                          want[i]);
        CHECK(t, d.test.labels[0] == 1 && d.test.labels[1] == 3, "test labels");
    }
    dm_data_free(&d);

    /* regression with 4 files */
    float yr[40], ytr[4] = { 1, 2, 3, 4 };
    for (int i = 0; i < 40; i++) yr[i] = (float)i;
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", npy_f32("X.npy", x, 20, 3), npy_f32("Yr.npy", yr, 20, 2),
             npy_f32("XT.npy", xt, 2, 3), npy_f32("YTr.npy", ytr, 2, 2));
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 0, &d, &err), &err);
    CHECK(t, d.train.n == 20 && d.test.n == 2 && d.test.y_dim == 2 && d.test.y && d.test.y[3] == 4.0f,
          "regress 4 files");
    dm_data_free(&d);
}

static void test_data_npy_errors(dm_t *t)
{
    float x[60], y[20], y2[40], bad[20];
    make_x(x, 20);
    for (int i = 0; i < 20; i++) y[i] = (float)(i % 4);
    for (int i = 0; i < 40; i++) y2[i] = 0;
    char spec[4400];
    const char *X = npy_f32("eX.npy", x, 20, 3);
    char xpath[1024];
    snprintf(xpath, sizeof xpath, "%s", X);

    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eY19.npy", y, 19, 1));
    expect_load_err(t, "row mismatch", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE, "eX.npy: 20 rows but ", xpath);
    expect_load_err(t, "row mismatch names Y", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE, "eY19.npy has 19", xpath);
    memcpy(bad, y, sizeof bad);
    bad[7] = 2.5f;
    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eYfrac.npy", bad, 20, 1));
    expect_load_err(t, "fractional label", spec, DM_TASK_CLASSIFY, DM_ERR_FORMAT,
                    "eYfrac.npy: row 7: label 2.5 is not an integer", NULL);
    bad[7] = -1.0f;
    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eYneg.npy", bad, 20, 1));
    expect_load_err(t, "negative label", spec, DM_TASK_CLASSIFY, DM_ERR_FORMAT, "label -1 is not an integer", NULL);
    bad[7] = NAN;
    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eYnan.npy", bad, 20, 1));
    expect_load_err(t, "NaN label", spec, DM_TASK_CLASSIFY, DM_ERR_NONFINITE, "eYnan.npy: row 7, column 0 is NaN",
                    NULL);
    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eY2.npy", y2, 20, 2));
    expect_load_err(t, "two label columns", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE,
                    "eY2.npy: classification labels must be one column, got 2", NULL);
    float xn[60];
    memcpy(xn, x, sizeof xn);
    xn[3 * 3 + 1] = INFINITY;
    char xnpath[1024];
    snprintf(xnpath, sizeof xnpath, "%s", npy_f32("eXinf.npy", xn, 20, 3));
    snprintf(spec, sizeof spec, "%s,%s", xnpath, npy_f32("eY.npy", y, 20, 1));
    expect_load_err(t, "Inf feature", spec, DM_TASK_CLASSIFY, DM_ERR_NONFINITE, "row 3, column 1 is Inf", xnpath);

    /* labels sorted by class: the file-order test split holds a class the train split lacks */
    float sorted[20];
    for (int i = 0; i < 20; i++) sorted[i] = i < 18 ? (float)(i / 6) : 3.0f;
    snprintf(spec, sizeof spec, "%s,%s", xpath, npy_f32("eYsorted.npy", sorted, 20, 1));
    expect_load_err(t, "unseen test label", spec, DM_TASK_CLASSIFY, DM_ERR_FORMAT,
                    "label 3 at row 18 (test split) but the train split's labels only reach 2; shuffle", NULL);

    /* four files: shapes and labels must agree with the train pair */
    float xt[8] = { 0 }, yt[2] = { 0, 9 };
    char ypath[1024];
    snprintf(ypath, sizeof ypath, "%s", npy_f32("eY.npy", y, 20, 1));
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", xpath, ypath, npy_f32("eXT4.npy", xt, 2, 4), npy_f32("eYT.npy", yt, 2, 1));
    expect_load_err(t, "test columns", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE, "eXT4.npy: 4 columns but", NULL);
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", xpath, ypath, npy_f32("eXT.npy", xt, 2, 3), npy_f32("eYT.npy", yt, 2, 1));
    expect_load_err(t, "test label unseen", spec, DM_TASK_CLASSIFY, DM_ERR_FORMAT,
                    "eYT.npy: label 9 at row 1 but the labels of", NULL);
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", xpath, npy_f32("eYr2.npy", y2, 20, 2), npy_f32("eXT.npy", xt, 2, 3),
             npy_f32("eYT1.npy", yt, 2, 1));
    expect_load_err(t, "test y columns", spec, DM_TASK_REGRESS, DM_ERR_SHAPE, "eYT1.npy: 1 columns but", NULL);
    snprintf(spec, sizeof spec, "%s,%s,%s,%s", xpath, ypath, npy_f32("eXT.npy", xt, 2, 3), npy_f32("eYT3.npy", yt, 1, 1));
    expect_load_err(t, "test rows", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE, "eXT.npy: 2 rows but", NULL);

    /* empty X, missing and malformed files (dm_npy_read's own messages) */
    snprintf(spec, sizeof spec, "%s,%s", npy_f32("eX0.npy", x, 0, 3), npy_f32("eY0.npy", y, 0, 1));
    expect_load_err(t, "no rows", spec, DM_TASK_CLASSIFY, DM_ERR_SHAPE, "eX0.npy: no rows", NULL);
    char missing[1100];
    tmp_path(missing, sizeof missing, "missing.npy");
    snprintf(spec, sizeof spec, "%s,%s", xpath, missing);
    expect_load_err(t, "missing Y", spec, DM_TASK_CLASSIFY, DM_ERR_IO, "cannot open", missing);
    const char *junk = dm_test_write_file("junk.npy", "not numpy", 9);
    snprintf(spec, sizeof spec, "%s,%s", junk, ypath);
    expect_load_err(t, "junk X", spec, DM_TASK_CLASSIFY, DM_ERR_FORMAT, "not a .npy file", junk);
}

/* ---------------------------------------------------------------- spec */

static void test_data_spec_errors(dm_t *t)
{
    expect_load_err(t, "NULL", NULL, DM_TASK_CLASSIFY, DM_ERR_ARG, "empty data spec", NULL);
    expect_load_err(t, "empty", "", DM_TASK_CLASSIFY, DM_ERR_ARG, "empty data spec", NULL);
    expect_load_err(t, "unknown", "cifar10", DM_TASK_CLASSIFY, DM_ERR_ARG,
                    "cifar10: unknown data spec (want fashion-mnist[:DIR], mnist:DIR, X.npy,Y.npy", "cifar10");
    expect_load_err(t, "prefix only", "synthetics", DM_TASK_CLASSIFY, DM_ERR_ARG, "unknown data spec", "synthetics");
    expect_load_err(t, "one npy", "X.npy", DM_TASK_CLASSIFY, DM_ERR_ARG, "X.npy: .npy data needs features and targets",
                    "X.npy");
    expect_load_err(t, "three", "a.npy,b.npy,c.npy", DM_TASK_CLASSIFY, DM_ERR_ARG, "3 comma-separated paths", NULL);
    expect_load_err(t, "five", "a,b,c,d,e", DM_TASK_CLASSIFY, DM_ERR_ARG, "5 comma-separated paths", NULL);
    expect_load_err(t, "empty path", "a.npy,", DM_TASK_CLASSIFY, DM_ERR_ARG, "empty path 2 of 2", NULL);
    expect_load_err(t, "bad task", "synthetic", (dm_task)7, DM_ERR_ARG, "synthetic: unknown task 7", NULL);
    dm_error err = { 0 };
    CHECK(t, dm_data_load("synthetic", DM_TASK_CLASSIFY, 0, NULL, &err) == DM_ERR_ARG, "NULL d");
    dm_data_free(NULL);
}

/* ---------------------------------------------------------------- synthetic */

static void test_data_synthetic_defaults(dm_t *t)
{
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load("synthetic", DM_TASK_CLASSIFY, 42, &d, &err), &err);
    CHECK(t, strcmp(d.name, "synthetic") == 0 && d.n_regimes == 8 && d.n_classes == 8, "name %s R %d C %d", d.name,
          d.n_regimes, d.n_classes);
    CHECK(t, d.train.n == 18000 && d.test.n == 2000 && d.train.dim == 32 && d.test.dim == 32, "n %lld/%lld dim %d",
          (long long)d.train.n, (long long)d.test.n, d.train.dim);
    if (d.train.n != 18000 || !d.train.labels || !d.train.regime || !d.test.regime) {
        dm_data_free(&d);
        return;
    }
    CHECK(t, d.train.y == NULL && d.train.y_dim == 0, "classify has no y");
    int64_t count[8] = { 0 }, mismatch = 0, out = 0;
    for (int64_t i = 0; i < d.train.n; i++) {
        if (d.train.regime[i] >= 0 && d.train.regime[i] < 8) count[d.train.regime[i]]++;
        mismatch += d.train.labels[i] != d.train.regime[i];
    }
    for (int64_t i = 0; i < d.train.n * 32; i++) out += !(d.train.x[i] >= -1.0f && d.train.x[i] <= 1.0f);
    CHECK(t, mismatch == 0 && out == 0, "%lld labels != regime, %lld x outside [-1, 1]", (long long)mismatch,
          (long long)out);
    for (int r = 0; r < 8; r++) CHECK(t, count[r] > 2000 && count[r] < 2500, "regime %d: %lld rows", r,
                                      (long long)count[r]);   /* 2250 +- 45 */

    /* the regimes are clusters: nearest train centroid recovers the test regime */
    double cen[8][32] = { { 0 } };
    for (int64_t i = 0; i < d.train.n; i++)
        for (int j = 0; j < 32; j++) cen[d.train.regime[i]][j] += d.train.x[i * 32 + j] / (double)count[d.train.regime[i]];
    int64_t right = 0;
    for (int64_t i = 0; i < d.test.n; i++) {
        int best = 0;
        double bd = INFINITY;
        for (int r = 0; r < 8; r++) {
            double dd = 0;
            for (int j = 0; j < 32; j++) dd += (d.test.x[i * 32 + j] - cen[r][j]) * (d.test.x[i * 32 + j] - cen[r][j]);
            if (dd < bd) bd = dd, best = r;
        }
        right += best == d.test.labels[i];
    }
    CHECK(t, right > d.test.n * 95 / 100, "nearest centroid: %lld of %lld", (long long)right, (long long)d.test.n);
    dm_data_free(&d);
}

static uint64_t below(dm_rng *r, uint64_t n)
{
    uint64_t limit = (0 - n) % n;
    for (;;) {
        uint64_t u = dm_rng_u64(r);
        if (u >= limit) return u % n;
    }
}

/* Regenerates the set from the recipe in data.h / synthetic.c and compares bits. */
static void test_data_synthetic_recipe(dm_t *t)
{
    enum { R = 3, D = 4, N = 50 };
    const float noise = 0.1f;
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load("synthetic:regimes=3,dim=4,rows=50,test=0.2,noise=0.1", DM_TASK_REGRESS, 7, &d, &err),
             &err);
    CHECK(t, d.train.n == 40 && d.test.n == 10 && d.train.y_dim == D && d.n_classes == 0 && d.n_regimes == R,
          "shape %lld/%lld y_dim %d", (long long)d.train.n, (long long)d.test.n, d.train.y_dim);
    if (d.train.n != 40 || d.test.n != 10 || !d.train.y || !d.test.y || d.train.labels) {
        CHECK(t, 0, "unexpected layout");
        dm_data_free(&d);
        return;
    }
    dm_rng rng;
    dm_rng_seed(&rng, 7);
    float c[R][D], w[R][D][D], b[R][D];
    const float ws = (float)(1.0 / sqrt((double)D)), bs = (float)sqrt(0.1);
    for (int r = 0; r < R; r++) {
        for (int j = 0; j < D; j++) c[r][j] = dm_rng_uniform(&rng, -0.8f, 0.8f);
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) w[r][i][j] = dm_rng_normal(&rng) * ws;
        for (int i = 0; i < D; i++) b[r][i] = dm_rng_normal(&rng) * bs;
    }
    int bad = 0;
    for (int row = 0; row < N; row++) {
        const dm_dataset *ds = row < 40 ? &d.train : &d.test;
        int i = row < 40 ? row : row - 40;
        int r = (int)below(&rng, R);
        float x[D];
        for (int j = 0; j < D; j++) x[j] = fminf(1.0f, fmaxf(-1.0f, c[r][j] + noise * dm_rng_normal(&rng)));
        bad += ds->regime[i] != r;
        for (int j = 0; j < D; j++) bad += memcmp(&ds->x[i * D + j], &x[j], 4) != 0;
        for (int k = 0; k < D; k++) {
            double acc = b[r][k];
            for (int j = 0; j < D; j++) acc += (double)w[r][k][j] * x[j];
            float y = (float)tanh(acc);
            bad += memcmp(&ds->y[i * D + k], &y, 4) != 0;
        }
    }
    CHECK(t, bad == 0, "%d values differ from the recipe", bad);
    dm_data_free(&d);
}

static void test_data_synthetic_deterministic(dm_t *t)
{
    const char *spec = "synthetic:rows=300,dim=6,regimes=4";
    dm_data a, b, c, e;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 5, &a, &err), &err);
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 5, &b, &err), &err);
    CHECK_OK(t, dm_data_load(spec, DM_TASK_REGRESS, 6, &c, &err), &err);
    CHECK_OK(t, dm_data_load(spec, DM_TASK_CLASSIFY, 5, &e, &err), &err);
    if (a.train.x && b.train.x && c.train.x && e.train.x && a.train.n == 270 && a.test.n == 30) {
        size_t nx = 270 * 6 * sizeof(float);
        CHECK(t, memcmp(a.train.x, b.train.x, nx) == 0 && memcmp(a.train.y, b.train.y, nx) == 0 &&
              memcmp(a.test.x, b.test.x, 30 * 6 * sizeof(float)) == 0 &&
              memcmp(a.train.regime, b.train.regime, 270 * 4) == 0, "same seed, same data");
        CHECK(t, memcmp(a.train.x, c.train.x, nx) != 0, "another seed, other data");
        CHECK(t, memcmp(a.train.x, e.train.x, nx) == 0 && memcmp(a.train.regime, e.train.regime, 270 * 4) == 0 &&
              e.train.labels && memcmp(e.train.labels, e.train.regime, 270 * 4) == 0 && e.train.y == NULL,
              "x does not depend on the task; labels = regime");
        double ymin = 1, ymax = -1;
        for (int i = 0; i < 270 * 6; i++) ymin = fmin(ymin, a.train.y[i]), ymax = fmax(ymax, a.train.y[i]);
        CHECK(t, ymin > -1 && ymax < 1 && ymax - ymin > 0.5, "y in (-1, 1) and varied: [%g, %g]", ymin, ymax);
    } else {
        CHECK(t, 0, "load failed");
    }
    dm_data_free(&a);
    dm_data_free(&b);
    dm_data_free(&c);
    dm_data_free(&e);

    /* test=0: no test rows; "synthetic:" alone is the defaults */
    CHECK_OK(t, dm_data_load("synthetic:rows=10,test=0", DM_TASK_CLASSIFY, 1, &a, &err), &err);
    CHECK(t, a.train.n == 10 && a.test.n == 0, "test=0: %lld/%lld", (long long)a.train.n, (long long)a.test.n);
    dm_data_free(&a);
    CHECK_OK(t, dm_data_load("synthetic:", DM_TASK_CLASSIFY, 1, &a, &err), &err);
    CHECK(t, a.train.n == 18000 && a.train.dim == 32, "synthetic: = defaults");
    dm_data_free(&a);
}

static void test_data_synthetic_keys(dm_t *t)
{
    static const struct { const char *spec, *sub; } cases[] = {
        { "synthetic:foo=1", "synthetic: unknown key 'foo' (known: regimes, dim, rows, test, noise)" },
        { "synthetic:dim", "synthetic: 'dim' is not key=value" },
        { "synthetic:dim=0", "synthetic: dim='0': want an integer in [1, 65536]" },
        { "synthetic:dim=4x", "dim='4x'" },
        { "synthetic:dim=", "dim=''" },
        { "synthetic:regimes=-2", "regimes='-2'" },
        { "synthetic:rows=0", "rows='0'" },
        { "synthetic:rows=99999999999999999999", "rows='99999999999999999999'" },
        { "synthetic:test=1", "test='1': want a number in [0, 1)" },
        { "synthetic:test=-0.1", "test='-0.1'" },
        { "synthetic:test=nan", "test='nan'" },
        { "synthetic:noise=-1", "noise='-1': want a number >= 0" },
        { "synthetic:noise=inf", "noise='inf'" },
        { "synthetic:dim=4,dim=5", "synthetic: key 'dim' given twice" },
        { "synthetic:dim=4,", "synthetic: empty option" },
        { "synthetic:,dim=4", "synthetic: empty option" },
        { "synthetic:rows=1,test=0.9", "synthetic: rows=1 with test=0.9 leaves no train rows" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_load_err(t, cases[i].spec, cases[i].spec, DM_TASK_CLASSIFY, DM_ERR_ARG, cases[i].sub, "synthetic: ");
    char longspec[700] = "synthetic:";
    for (int i = 0; i < 60; i++) strcat(longspec, "dim=4,dim=");
    expect_load_err(t, "too long", longspec, DM_TASK_CLASSIFY, DM_ERR_ARG, "option list too long", "synthetic: ");
}

/* ---------------------------------------------------------------- batcher */

/* n rows, dim 3: x = (i, 10 i, -i), y = (2 i), labels = i % 5, regime = i % 3. */
typedef struct toy {
    dm_dataset ds;
    float x[3 * 64], y[64];
    int32_t labels[64], regime[64];
} toy;

static void make_toy(toy *s, int n)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < n; i++) {
        s->x[3 * i] = (float)i;
        s->x[3 * i + 1] = 10.0f * (float)i;
        s->x[3 * i + 2] = -(float)i;
        s->y[i] = 2.0f * (float)i;
        s->labels[i] = i % 5;
        s->regime[i] = i % 3;
    }
    s->ds = (dm_dataset){ .n = n, .dim = 3, .x = s->x, .labels = s->labels, .y = s->y, .y_dim = 1, .regime = s->regime };
}

/* Draws one batch and returns the row indices (from x), checking that every
 * array copied belongs to the same row. */
static int64_t draw(dm_t *t, dm_batcher *b, int64_t batch, int *rows)
{
    float x[3 * 64], y[64];
    int32_t labels[64], regime[64];
    int64_t got = dm_batcher_next(b, batch, x, y, labels, regime);
    for (int64_t k = 0; k < got; k++) {
        int i = (int)x[3 * k];
        rows[k] = i;
        CHECK(t, x[3 * k + 1] == 10.0f * i && x[3 * k + 2] == -(float)i && y[k] == 2.0f * i && labels[k] == i % 5 &&
              regime[k] == i % 3, "row %d copied inconsistently", i);
    }
    return got;
}

static void test_data_batcher_permutation(dm_t *t)
{
    toy s;
    make_toy(&s, 12);
    dm_batcher b;
    dm_error err = { 0 };
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 3, 1, &err), &err);
    int order[3][12];
    for (int e = 0; e < 3; e++) {
        int seen[12] = { 0 };
        for (int k = 0; k < 3; k++) {
            CHECK(t, b.epoch == (k == 0 && e > 0 ? e - 1 : e), "epoch %lld before batch %d of %d", (long long)b.epoch,
                  k, e);
            CHECK(t, draw(t, &b, 4, order[e] + 4 * k) == 4, "batch of 4");
            CHECK(t, b.epoch == e && b.pos == 4 * (k + 1), "state (%lld, %lld)", (long long)b.epoch, (long long)b.pos);
        }
        for (int i = 0; i < 12; i++)
            if (order[e][i] >= 0 && order[e][i] < 12) seen[order[e][i]]++;
        for (int i = 0; i < 12; i++) CHECK(t, seen[i] == 1, "epoch %d: row %d seen %d times", e, i, seen[i]);
    }
    CHECK(t, memcmp(order[0], order[1], sizeof order[0]) != 0 && memcmp(order[1], order[2], sizeof order[0]) != 0 &&
          memcmp(order[0], order[2], sizeof order[0]) != 0, "epochs have different orders");
    int identity = 1;
    for (int i = 0; i < 12; i++) identity &= order[0][i] == i;
    CHECK(t, !identity, "epoch 0 is shuffled");
    dm_batcher_free(&b);
    dm_batcher_free(&b);

    /* uniform: n = 3, each of the 6 orders about 1/6 of 6000 epochs */
    make_toy(&s, 3);
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 11, 1, &err), &err);
    int hist[6] = { 0 };
    for (int e = 0; e < 6000; e++) {
        int r[3];
        draw(t, &b, 3, r);
        int code = r[0] * 2 + (r[1] > r[2]);   /* first row and the order of the other two */
        if (code >= 0 && code < 6) hist[code]++;
    }
    CHECK(t, b.epoch == 5999, "one epoch per full batch: %lld", (long long)b.epoch);
    for (int i = 0; i < 6; i++) CHECK(t, hist[i] > 850 && hist[i] < 1150, "order %d: %d of 6000", i, hist[i]);
    dm_batcher_free(&b);
}

static void test_data_batcher_deterministic(dm_t *t)
{
    toy s;
    make_toy(&s, 30);
    dm_batcher a, b, c;
    dm_error err = { 0 };
    CHECK_OK(t, dm_batcher_init(&a, &s.ds, 9, 1, &err), &err);
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 9, 1, &err), &err);
    CHECK_OK(t, dm_batcher_init(&c, &s.ds, 10, 1, &err), &err);
    int ra[7], rb[7], rc[7], same = 1, differ = 0;
    for (int k = 0; k < 40; k++) {   /* several epochs of batch 7 (30 = 4 * 7 + 2 dropped) */
        draw(t, &a, 7, ra);
        draw(t, &b, 7, rb);
        draw(t, &c, 7, rc);
        same &= memcmp(ra, rb, sizeof ra) == 0;
        differ |= memcmp(ra, rc, sizeof ra) != 0;
    }
    CHECK(t, same, "same seed, same batches");
    CHECK(t, differ, "another seed, other batches");
    CHECK(t, a.epoch == 9 && a.pos == 28, "40 batches of 4 per epoch: state (%lld, %lld)", (long long)a.epoch,
          (long long)a.pos);
    dm_batcher_free(&a);
    dm_batcher_free(&b);
    dm_batcher_free(&c);
}

static void test_data_batcher_drop_last(dm_t *t)
{
    toy s;
    make_toy(&s, 10);
    dm_batcher b, ref;
    dm_error err = { 0 };
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 1, 1, &err), &err);
    CHECK_OK(t, dm_batcher_init(&ref, &s.ds, 1, 1, &err), &err);
    int r0[4], r1[4], r2[4], want[10];
    draw(t, &b, 4, r0);
    draw(t, &b, 4, r1);
    CHECK(t, b.epoch == 0 && b.pos == 8, "2 left in epoch 0: (%lld, %lld)", (long long)b.epoch, (long long)b.pos);
    CHECK(t, draw(t, &b, 4, r2) == 4, "third batch");
    CHECK(t, b.epoch == 1 && b.pos == 4, "the 2 left were dropped: (%lld, %lld)", (long long)b.epoch,
          (long long)b.pos);
    CHECK_OK(t, dm_batcher_seek(&ref, 1, 0, &err), &err);
    draw(t, &ref, 10, want);
    CHECK(t, memcmp(r2, want, sizeof r2) == 0, "the third batch starts epoch 1");
    int seen[10] = { 0 }, dup = 0;
    for (int i = 0; i < 4; i++) {
        if (r0[i] >= 0 && r0[i] < 10) seen[r0[i]]++;
        if (r1[i] >= 0 && r1[i] < 10) seen[r1[i]]++;
    }
    for (int i = 0; i < 10; i++) dup += seen[i] > 1;
    CHECK(t, dup == 0, "no row twice within an epoch");

    /* batch == n: each call is a whole epoch; batch > n, 0 or negative: nothing */
    CHECK(t, dm_batcher_next(&b, 11, NULL, NULL, NULL, NULL) == 0, "batch > n");
    CHECK(t, dm_batcher_next(&b, 0, NULL, NULL, NULL, NULL) == 0, "batch 0");
    CHECK(t, dm_batcher_next(&b, -3, NULL, NULL, NULL, NULL) == 0, "batch < 0");
    CHECK(t, b.epoch == 1 && b.pos == 4, "refused calls change nothing");
    int whole[10];
    CHECK(t, draw(t, &b, 10, whole) == 10 && b.epoch == 2 && b.pos == 10, "batch = n");
    CHECK(t, draw(t, &b, 10, whole) == 10 && b.epoch == 3 && b.pos == 10, "batch = n again");

    /* only what is asked for, and what the dataset has, is copied */
    toy s2;
    make_toy(&s2, 10);
    s2.ds.y = NULL;
    s2.ds.regime = NULL;
    dm_batcher c;
    CHECK_OK(t, dm_batcher_init(&c, &s2.ds, 1, 0, &err), &err);
    float x[6], y[2] = { -7, -7 };
    int32_t labels[2], regime[2] = { -7, -7 };
    CHECK(t, dm_batcher_next(&c, 2, x, y, labels, regime) == 2, "partial dataset");
    CHECK(t, y[0] == -7 && regime[1] == -7 && labels[1] == 1 && x[3] == 1.0f, "absent arrays left alone");
    CHECK(t, dm_batcher_next(&c, 2, x, NULL, NULL, NULL) == 2 && x[0] == 2.0f, "x only");
    dm_batcher_free(&c);
    dm_batcher_free(&b);
    dm_batcher_free(&ref);
}

static void test_data_batcher_seek(dm_t *t)
{
    toy s;
    make_toy(&s, 23);
    dm_batcher b;
    dm_error err = { 0 };
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 77, 1, &err), &err);
    enum { STEPS = 25, BATCH = 5 };
    int64_t ep[STEPS], pos[STEPS];
    int rows[STEPS][BATCH];
    for (int k = 0; k < STEPS; k++) {
        ep[k] = b.epoch;
        pos[k] = b.pos;
        draw(t, &b, BATCH, rows[k]);
    }
    for (int k = 0; k < STEPS; k++) {
        dm_batcher r;
        CHECK_OK(t, dm_batcher_init(&r, &s.ds, 77, 1, &err), &err);
        CHECK_OK(t, dm_batcher_seek(&r, ep[k], pos[k], &err), &err);
        int got[BATCH];
        int ok = 1;
        for (int j = k; j < STEPS && ok; j++) {   /* and every batch after it */
            draw(t, &r, BATCH, got);
            ok = memcmp(got, rows[j], sizeof got) == 0;
        }
        CHECK(t, ok, "resume at step %d (%lld, %lld) replays the run", k, (long long)ep[k], (long long)pos[k]);
        dm_batcher_free(&r);
    }
    /* seeking back and forth on one batcher */
    CHECK_OK(t, dm_batcher_seek(&b, ep[3], pos[3], &err), &err);
    int got[BATCH];
    draw(t, &b, BATCH, got);
    CHECK(t, memcmp(got, rows[3], sizeof got) == 0, "seek back");
    CHECK_OK(t, dm_batcher_seek(&b, 0, 23, &err), &err);   /* the end of an epoch */
    draw(t, &b, BATCH, got);
    CHECK(t, b.epoch == 1 && b.pos == BATCH, "seek to the end then next: (%lld, %lld)", (long long)b.epoch,
          (long long)b.pos);

    expect_err(t, "pos > n", dm_batcher_seek(&b, 0, 24, &err), &err, DM_ERR_ARG, "out of range", NULL);
    expect_err(t, "pos < 0", dm_batcher_seek(&b, 0, -1, &err), &err, DM_ERR_ARG, "out of range", NULL);
    expect_err(t, "epoch < 0", dm_batcher_seek(&b, -1, 0, &err), &err, DM_ERR_ARG, "out of range", NULL);
    dm_batcher_free(&b);
    dm_batcher z = { 0 };
    expect_err(t, "uninitialised", dm_batcher_seek(&z, 0, 0, &err), &err, DM_ERR_ARG, "not initialised", NULL);
    CHECK(t, dm_batcher_next(&z, 1, NULL, NULL, NULL, NULL) == 0, "next on an empty batcher");
}

static void test_data_batcher_no_shuffle(dm_t *t)
{
    toy s;
    make_toy(&s, 9);
    dm_batcher b;
    dm_error err = { 0 };
    CHECK_OK(t, dm_batcher_init(&b, &s.ds, 123, 0, &err), &err);
    int ok = 1;
    for (int e = 0; e < 3; e++)
        for (int k = 0; k < 2; k++) {   /* batches of 4: rows 0-3, 4-7; row 8 dropped */
            int r[4];
            draw(t, &b, 4, r);
            for (int i = 0; i < 4; i++) ok &= r[i] == 4 * k + i;
        }
    CHECK(t, ok, "file order in every epoch");
    dm_batcher_free(&b);

    /* errors; an empty dataset is valid but yields nothing */
    expect_err(t, "NULL ds", dm_batcher_init(&b, NULL, 0, 1, &err), &err, DM_ERR_ARG, "NULL dataset", NULL);
    CHECK(t, b.perm == NULL, "failed init leaves no perm");
    dm_batcher_free(&b);
    dm_dataset neg = { .n = -1, .dim = 1 };
    expect_err(t, "negative n", dm_batcher_init(&b, &neg, 0, 1, &err), &err, DM_ERR_ARG, "-1 rows", NULL);
    dm_dataset nox = { .n = 3, .dim = 2 };
    expect_err(t, "no x", dm_batcher_init(&b, &nox, 0, 1, &err), &err, DM_ERR_ARG, "no features", NULL);
    dm_dataset empty = { .n = 0, .dim = 2 };
    CHECK_OK(t, dm_batcher_init(&b, &empty, 0, 1, &err), &err);
    float x[2];
    CHECK(t, dm_batcher_next(&b, 1, x, NULL, NULL, NULL) == 0, "empty dataset");
    dm_batcher_free(&b);
}

/* The batcher over a loaded set: regime and labels travel with their rows. */
static void test_data_batcher_synthetic(dm_t *t)
{
    dm_data d;
    dm_error err = { 0 };
    CHECK_OK(t, dm_data_load("synthetic:rows=500,dim=8,regimes=5", DM_TASK_CLASSIFY, 3, &d, &err), &err);
    dm_batcher b;
    CHECK_OK(t, dm_batcher_init(&b, &d.train, 3, 1, &err), &err);
    float x[64 * 8];
    int32_t labels[64], regime[64];
    int bad = 0;
    for (int k = 0; k < 20; k++) {
        CHECK(t, dm_batcher_next(&b, 64, x, NULL, labels, regime) == 64, "batch");
        for (int i = 0; i < 64; i++) {
            bad += labels[i] != regime[i] || labels[i] < 0 || labels[i] >= 5;
            /* find the row by its x and check its label */
            int found = 0;
            for (int64_t r = 0; r < d.train.n && !found; r++)
                if (memcmp(d.train.x + r * 8, x + i * 8, 8 * sizeof(float)) == 0) found = d.train.labels[r] == labels[i];
            bad += !found;
        }
    }
    CHECK(t, bad == 0, "%d rows inconsistent", bad);
    dm_batcher_free(&b);
    dm_data_free(&d);
}

/* A data-parallel rank's share of a step: its rows of the whole step's order,
 * shifted, flipped and dropped out as the whole batch's call does them. */
static void test_data_rank_slices(dm_t *t)
{
    dm_data d;
    dm_error err;
    CHECK(t, !dm_data_load_norm("synthetic:dim=16,rows=400,regimes=4", DM_TASK_REGRESS, 5, 0.1, DM_NORM_NONE, &d, &err),
          "%s", err.msg);
    enum { STEP = 48, W = 16 };
    float whole[STEP * W], part[STEP * W], y[STEP * W], yp[STEP * W];
    dm_batcher a, b;
    CHECK(t, !dm_batcher_init(&a, &d.train, 9, 1, &err) && !dm_batcher_init(&b, &d.train, 9, 1, &err), "%s", err.msg);
    for (int step = 0; step < 12; step++) {   /* crosses epochs (360 train rows) */
        dm_batcher_next(&a, STEP, whole, y, NULL, NULL);
        dm_augment_images(whole, STEP, 4, 1, 1, 0.0f, 3, step);
        dm_augment_dropout(whole, STEP * W, 0.2f, 3, step);
        int64_t cuts[] = {0, 7, 24, 25, 48};   /* uneven shares, an odd value offset */
        for (int q = 0; q + 1 < 5; q++) {
            int64_t r0 = cuts[q], n = cuts[q + 1] - cuts[q];
            dm_batcher c = b;   /* the same position for every share of this step */
            int32_t *perm = malloc((size_t)d.train.n * sizeof *perm);
            memcpy(perm, b.perm, (size_t)d.train.n * sizeof *perm);
            c.perm = perm;
            CHECK(t, dm_batcher_next_slice(&c, STEP, r0, n, part, yp, NULL, NULL) == n, "slice rows");
            dm_augment_images_at(part, r0, n, 4, 1, 1, 0.0f, 3, step);
            dm_augment_dropout_at(part, r0 * W, n * W, 0.2f, 3, step);
            CHECK(t, !memcmp(part, whole + r0 * W, (size_t)(n * W) * sizeof *part), "step %d rows %lld+%lld differ", step,
                  (long long)r0, (long long)n);
            CHECK(t, !memcmp(yp, y + r0 * W, (size_t)(n * W) * sizeof *yp), "targets of step %d differ", step);
            free(perm);
        }
        dm_batcher_next_slice(&b, STEP, 0, 0, NULL, NULL, NULL, NULL);   /* advances like the whole step */
        CHECK(t, a.epoch == b.epoch && a.pos == b.pos, "position %lld/%lld vs %lld/%lld", (long long)a.epoch,
              (long long)a.pos, (long long)b.epoch, (long long)b.pos);
    }
    CHECK(t, dm_batcher_next_slice(&b, STEP, 40, 9, part, NULL, NULL, NULL) == 0, "a share past the step is refused");
    dm_batcher_free(&a);
    dm_batcher_free(&b);
    dm_data_free(&d);
}

void suite_data(dm_t *t)
{
    DM_RUN(t, test_data_rank_slices);
    DM_RUN(t, test_data_idx_raw);
    DM_RUN(t, test_data_idx_gzip);
    DM_RUN(t, test_data_idx_errors);
    DM_RUN(t, test_data_fashion_mnist);
    DM_RUN(t, test_data_npy_int_dtypes);
    DM_RUN(t, test_data_npy_split);
    DM_RUN(t, test_data_npy_four_files);
    DM_RUN(t, test_data_npy_errors);
    DM_RUN(t, test_data_spec_errors);
    DM_RUN(t, test_data_synthetic_defaults);
    DM_RUN(t, test_data_synthetic_recipe);
    DM_RUN(t, test_data_synthetic_deterministic);
    DM_RUN(t, test_data_synthetic_keys);
    DM_RUN(t, test_data_batcher_permutation);
    DM_RUN(t, test_data_batcher_deterministic);
    DM_RUN(t, test_data_batcher_drop_last);
    DM_RUN(t, test_data_batcher_seek);
    DM_RUN(t, test_data_batcher_no_shuffle);
    DM_RUN(t, test_data_batcher_synthetic);
}
