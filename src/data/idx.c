/* idx.c - MNIST-style IDX files: Fashion-MNIST and MNIST.
 *
 * An IDX file is a big-endian header, then raw C-order data:
 *   magic  u32   0x00000803 for unsigned-byte images [n, rows, cols],
 *                0x00000801 for unsigned-byte labels [n]
 *                (bytes: 0, 0, type 0x08 = u8, number of dims)
 *   dims   u32 each, then n * rows * cols (or n) bytes.
 * Files are opened with zlib's gzopen/gzread, which read gzip'd and plain
 * files alike, so both "name" and "name.gz" work (the plain one is tried first).
 *
 * A dataset directory holds four files: train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte.
 * Images flatten to rows*cols features, the raw pixel values 0..255 as floats
 * (dm_data_load_norm then scales them: by default "pixel", p -> p / 127.5 - 1,
 * so 0 -> -1 and 255 -> 1); n_classes = the largest train label + 1, and every
 * test label must be below it. */
#include "data/data.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define IDX_DIM_MAX 65536u              /* an image side; real sets use 28 */
#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* ---------------------------------------------------------------- one file */

typedef struct idx_file {
    gzFile gz;
    char path[4096];
    uint32_t dims[3];   /* [n, rows, cols] for images, [n] for labels */
    uint64_t avail;     /* data bytes the file can hold at most: what follows the header
                         * (plain), or the deflate bound of 1032 per compressed byte (gzip) */
} idx_file;

/* deflate expands one input byte to at most 1032 output bytes (zlib's FAQ) */
#define DEFLATE_MAX_RATIO 1032

/* The error behind a gzread that returned fewer bytes than asked: a read or
 * gzip error when zlib reports one, else the file simply ended. */
static dm_status read_error(idx_file *f, const char *what, uint64_t got, uint64_t want, dm_error *err)
{
    int zerr = Z_OK;
    const char *msg = gzerror(f->gz, &zerr);
    if (zerr == Z_ERRNO) return dm_fail(err, DM_ERR_IO, "%s: read failed: %s", f->path, strerror(errno));
    if (zerr != Z_OK && zerr != Z_BUF_ERROR)   /* Z_BUF_ERROR: gzip stream cut short */
        return dm_fail(err, DM_ERR_FORMAT, "%s: gzip error: %s", f->path, msg ? msg : "unknown");
    return dm_fail(err, DM_ERR_FORMAT, "%s: truncated: %s has %llu of %llu bytes", f->path, what,
                   (unsigned long long)got, (unsigned long long)want);
}

/* Reads exactly n bytes; *got = what arrived. 0 on success, -1 otherwise. */
static int read_full(idx_file *f, unsigned char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        unsigned chunk = (unsigned)DM_MIN(n - *got, (size_t)1 << 30);
        int r = gzread(f->gz, buf + *got, chunk);
        if (r <= 0) return -1;
        *got += (size_t)r;
    }
    return 0;
}

/* dir/base, or dir/base.gz when only that exists. */
static dm_status find_file(const char *dir, const char *base, char *out, size_t cap, dm_error *err)
{
    struct stat st;
    int n = snprintf(out, cap, "%s/%s", dir, base);
    if (n < 0 || (size_t)n + 3 >= cap) return dm_fail(err, DM_ERR_ARG, "%s: path too long", dir);
    if (stat(out, &st) == 0) return DM_OK;
    strcat(out, ".gz");
    if (stat(out, &st) == 0) return DM_OK;
    out[n] = '\0';
    return dm_fail(err, DM_ERR_IO, "%s: not found (nor %s.gz)", out, base);
}

/* Opens path and reads its header: ndim dims after the expected magic. */
static dm_status idx_open(idx_file *f, const char *path, uint32_t magic, int ndim, dm_error *err)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return dm_fail(err, errno ? DM_ERR_IO : DM_ERR_NOMEM, "%s: cannot open: %s", path,
                       errno ? strerror(errno) : "out of memory");
    gzbuffer(f->gz, 1u << 17);
    unsigned char h[16];
    size_t want = 4 + 4 * (size_t)ndim, got;
    if (read_full(f, h, 4, &got) != 0) return read_error(f, "the header", got, want, err);
    uint32_t m = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (m != magic)
        return dm_fail(err, DM_ERR_FORMAT, "%s: bad magic 0x%08x (want 0x%08x: IDX unsigned-byte %s)", path,
                       (unsigned)m, (unsigned)magic, ndim == 3 ? "images" : "labels");
    if (read_full(f, h + 4, want - 4, &got) != 0) return read_error(f, "the header", 4 + got, want, err);
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = h + 4 + 4 * i;
        f->dims[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    }
    if (f->dims[0] > INT32_MAX)
        return dm_fail(err, DM_ERR_FORMAT, "%s: %u items is more than supported (%d)", path,
                       (unsigned)f->dims[0], INT32_MAX);
    struct stat st;
    uint64_t size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (gzdirect(f->gz)) f->avail = size > want ? size - want : 0;
    else f->avail = size > UINT64_MAX / DEFLATE_MAX_RATIO ? UINT64_MAX : size * DEFLATE_MAX_RATIO;
    return DM_OK;
}

/* After the data: the file (and its gzip stream, trailer included) must end here. */
static dm_status idx_expect_end(idx_file *f, const char *what, dm_error *err)
{
    unsigned char extra;
    int r = gzread(f->gz, &extra, 1), zerr = Z_OK;
    if (r == 1)
        return dm_fail(err, DM_ERR_FORMAT, "%s: unexpected data after the %u %s the header declares", f->path,
                       (unsigned)f->dims[0], what);
    const char *msg = gzerror(f->gz, &zerr);
    if (zerr == Z_ERRNO) return dm_fail(err, DM_ERR_IO, "%s: read failed: %s", f->path, strerror(errno));
    if (zerr == Z_BUF_ERROR) return dm_fail(err, DM_ERR_FORMAT, "%s: truncated: the gzip stream ends early", f->path);
    if (zerr != Z_OK) return dm_fail(err, DM_ERR_FORMAT, "%s: gzip error: %s", f->path, msg ? msg : "unknown");
    return DM_OK;
}

static void idx_close(idx_file *f)
{
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

/* Reads `total` data bytes, converting each chunk with conv into out: sized
 * at once for what the file can hold (f->avail), and grown past that only as
 * bytes really arrive, so a header's counts are believed only as far as the
 * file, possibly gzip'd, backs them; out_size = bytes per item out. */
typedef void (*idx_conv)(const unsigned char *in, size_t n, void *out);

static dm_status read_items(idx_file *f, size_t total, size_t out_size, idx_conv conv, const char *what,
                            dm_growbuf *out, dm_error *err)
{
    enum { CHUNK = 1 << 16 };
    unsigned char *chunk = dm_alloc(CHUNK);
    if (!chunk) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", f->path);
    /* Room for what the file can really hold, at once: an honest file is read
     * with no regrowth, a lying header costs at most the file's own bound. */
    dm_status s = DM_OK;
    size_t done = 0, first = (size_t)DM_MIN((uint64_t)total, f->avail);
    if (first && dm_growbuf_reserve(out, first * out_size) != 0)
        s = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory for %s", f->path, what);
    while (s == DM_OK && done < total) {
        size_t want = DM_MIN((size_t)CHUNK, total - done), got;
        if (read_full(f, chunk, want, &got) != 0) {
            s = read_error(f, what, done + got, total, err);
            break;
        }
        if (dm_growbuf_reserve(out, (done + want) * out_size) != 0) {   /* <= out->max: no overflow */
            s = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory for %s", f->path, what);
            break;
        }
        conv(chunk, want, (unsigned char *)out->p + done * out_size);
        done += want;
    }
    dm_free(chunk);
    if (s == DM_OK && !out->p && dm_growbuf_reserve(out, out_size) != 0)   /* no items: still a buffer */
        s = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", f->path);
    return s;
}

static void pixels_to_f32(const unsigned char *in, size_t n, void *out)
{
    float *x = out;
    for (size_t i = 0; i < n; i++) x[i] = (float)in[i];
}

static void labels_to_i32(const unsigned char *in, size_t n, void *out)
{
    int32_t *y = out;
    for (size_t i = 0; i < n; i++) y[i] = in[i];
}

/* Images -> ds->x [n, rows*cols], raw pixel values; side = {rows, cols}. */
static dm_status read_images(const char *path, dm_dataset *ds, uint32_t side[2], dm_error *err)
{
    idx_file f;
    dm_status s = idx_open(&f, path, IDX_IMAGES_MAGIC, 3, err);
    if (s != DM_OK) goto out;
    uint32_t n = f.dims[0], rows = f.dims[1], cols = f.dims[2];
    if (rows == 0 || cols == 0 || rows > IDX_DIM_MAX || cols > IDX_DIM_MAX || (uint64_t)rows * cols > INT_MAX) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: implausible image size %ux%u", path, (unsigned)rows, (unsigned)cols);
        goto out;
    }
    size_t total, bytes;
    if (dm_mul_size((size_t)n, (size_t)rows * cols, &total) != 0 || dm_mul_size(total, sizeof(float), &bytes) != 0) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: %u images of %ux%u is too large", path, (unsigned)n, (unsigned)rows,
                    (unsigned)cols);
        goto out;
    }
    dm_growbuf x = {.max = DM_MAX(bytes, sizeof(float))};
    s = read_items(&f, total, sizeof(float), pixels_to_f32, "the pixel data", &x, err);
    ds->x = x.p;   /* the caller frees it, on error too */
    if (s != DM_OK) goto out;
    ds->n = n;
    ds->dim = (int)(rows * cols);
    side[0] = rows;
    side[1] = cols;
    s = idx_expect_end(&f, "images", err);
out:
    idx_close(&f);
    return s;
}

/* Labels -> ds->labels [n]; *n_labels = n, *max_label = the largest (-1 when n = 0). */
static dm_status read_labels(const char *path, dm_dataset *ds, int64_t *n_labels, int *max_label, dm_error *err)
{
    idx_file f;
    dm_status s = idx_open(&f, path, IDX_LABELS_MAGIC, 1, err);
    if (s != DM_OK) goto out;
    size_t n = f.dims[0];
    dm_growbuf y = {.max = DM_MAX(n, 1) * sizeof(int32_t)};   /* n <= INT32_MAX */
    s = read_items(&f, n, sizeof(int32_t), labels_to_i32, "the label data", &y, err);
    ds->labels = y.p;
    if (s != DM_OK) goto out;
    *max_label = -1;
    for (size_t i = 0; i < n; i++)
        if (ds->labels[i] > *max_label) *max_label = ds->labels[i];
    *n_labels = (int64_t)n;
    s = idx_expect_end(&f, "labels", err);
out:
    idx_close(&f);
    return s;
}

/* What loading one split learned, for the checks across splits. */
typedef struct idx_split {
    char images[4096], labels[4096];   /* the paths read */
    uint32_t side[2];                  /* image rows, cols */
    int max_label;                     /* -1 when there are no rows */
} idx_split;

/* One split (prefix "train" or "t10k"): images and labels, same count. */
static dm_status load_split(const char *dir, const char *prefix, dm_dataset *ds, idx_split *sp, dm_error *err)
{
    char base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    dm_status s = find_file(dir, base, sp->images, sizeof sp->images, err);
    if (s != DM_OK) return s;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if ((s = find_file(dir, base, sp->labels, sizeof sp->labels, err)) != DM_OK) return s;
    if ((s = read_images(sp->images, ds, sp->side, err)) != DM_OK) return s;
    if (ds->n == 0 && strcmp(prefix, "train") == 0) return dm_fail(err, DM_ERR_FORMAT, "%s: no images", sp->images);
    int64_t n_labels = 0;
    if ((s = read_labels(sp->labels, ds, &n_labels, &sp->max_label, err)) != DM_OK) return s;
    if (n_labels != ds->n)
        return dm_fail(err, DM_ERR_SHAPE, "%s: %lld labels but %s has %lld images", sp->labels, (long long)n_labels,
                       sp->images, (long long)ds->n);
    return DM_OK;
}

/* kind is "fashion-mnist" or "mnist"; dir NULL means Debian's fashion-mnist
 * directory. Fills d (the caller frees it on error). */
dm_status dm_data_load_idx_(const char *kind, const char *dir, dm_data *d, dm_error *err)
{
    int fashion = strcmp(kind, "fashion-mnist") == 0;
    if (!dir) dir = FASHION_MNIST_DIR;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (fashion)
            return dm_fail(err, DM_ERR_IO, "%s: directory not found; install Debian's dataset-fashion-mnist "
                           "(apt-get install dataset-fashion-mnist) or pass --data fashion-mnist:DIR", dir);
        return dm_fail(err, DM_ERR_IO, "%s: directory not found (--data mnist:DIR names a directory holding "
                       "train-images-idx3-ubyte[.gz] and the other three IDX files)", dir);
    }
    if (!S_ISDIR(st.st_mode)) return dm_fail(err, DM_ERR_IO, "%s: not a directory", dir);

    snprintf(d->name, sizeof d->name, "%s", kind);
    d->task = DM_TASK_CLASSIFY;
    idx_split tr = { .max_label = -1 }, te = { .max_label = -1 };
    dm_status s = load_split(dir, "train", &d->train, &tr, err);
    if (s != DM_OK) return s;
    if ((s = load_split(dir, "t10k", &d->test, &te, err)) != DM_OK) return s;
    if (te.side[0] != tr.side[0] || te.side[1] != tr.side[1])
        return dm_fail(err, DM_ERR_SHAPE, "%s: %ux%u images but %s has %ux%u", te.images, (unsigned)te.side[0],
                       (unsigned)te.side[1], tr.images, (unsigned)tr.side[0], (unsigned)tr.side[1]);
    d->n_classes = tr.max_label + 1;
    if (te.max_label >= d->n_classes) {
        int64_t row = 0;
        while (d->test.labels[row] < d->n_classes) row++;
        return dm_fail(err, DM_ERR_FORMAT, "%s: label %d at row %lld, but the train labels (%s) only reach %d "
                       "(n_classes %d)", te.labels, (int)d->test.labels[row], (long long)row, tr.labels,
                       tr.max_label, d->n_classes);
    }
    return DM_OK;
}
