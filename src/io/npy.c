/* npy.c - read and write NumPy .npy files holding 1-D or 2-D arrays.
 * Reading accepts little-endian float32/float64 and the integer dtypes
 * '<i4', '<i8', '|u1'/'<u1', '|i1' (what numpy writes for labels and images),
 * all converted to float32; an integer too large to be exact in float32
 * (|v| > 2^24) is refused rather than rounded. Writing is float32 only.
 *
 * Format: "\x93NUMPY", major, minor, header length (u16 LE in v1.0, u32 LE in
 * v2.0/v3.0), then a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }
 * padded with spaces and ending in '\n', then the raw C-order data.
 * The dict is parsed by a small hand-written scanner: it only ever holds the
 * three keys above, so a general Python-literal parser would be overkill. */
#include "base/base.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Our headers are tiny; a huge declared length means a corrupt file, and
 * refusing it avoids a large allocation on its word. */
#define NPY_HEADER_MAX (1u << 20)

/* ---------------------------------------------------------------- header dict */

/* How a value is stored: IEEE float, or a signed / unsigned integer. */
typedef enum { NPY_FLOAT = 0, NPY_INT, NPY_UINT } npy_kind;

typedef struct npy_header {
    npy_kind kind;
    int itemsize;         /* bytes per value: 4 or 8 for floats; 1, 4 or 8 for integers */
    int ndim;             /* dims in the file's shape tuple */
    int64_t shape[2];     /* the first two dims */
    int seen_descr, seen_order, seen_shape;
} npy_header;

/* A cursor over the header text, with what it needs to report errors. */
typedef struct npy_scan {
    const char *p, *end;
    const char *path;
    dm_error *err;
} npy_scan;

static void skip_ws(npy_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

/* A problem with no useful position (a key that is missing altogether). */
static dm_status bad(npy_scan *s, const char *what)
{
    return dm_fail(s->err, DM_ERR_FORMAT, "%s: bad header: %s", s->path, what);
}

/* A problem at the cursor, with its offset to help find it in the file. */
static dm_status bad_at(npy_scan *s, const char *begin, const char *what)
{
    return dm_fail(s->err, DM_ERR_FORMAT, "%s: bad header: %s at byte %ld of the dict",
                   s->path, what, (long)(s->p - begin));
}

static int expect(npy_scan *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 0;
    }
    return -1;
}

/* A quoted string (' or "); sets *str and *len to its contents. No escapes:
 * nothing valid in these headers needs one. */
static int scan_string(npy_scan *s, const char **str, size_t *len)
{
    skip_ws(s);
    if (s->p >= s->end || (*s->p != '\'' && *s->p != '"')) return -1;
    char q = *s->p++;
    const char *b = s->p;
    while (s->p < s->end && *s->p != q) {
        if (*s->p == '\\' || *s->p == '\n') return -1;
        s->p++;
    }
    if (s->p >= s->end) return -1;
    *str = b;
    *len = (size_t)(s->p - b);
    s->p++;
    return 0;
}

static int scan_word(npy_scan *s, const char *w)
{
    skip_ws(s);
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0) return -1;
    const char *after = s->p + n;
    if (after < s->end && (after[0] == '_' || (after[0] >= 'A' && after[0] <= 'Z') ||
                           (after[0] >= 'a' && after[0] <= 'z') || (after[0] >= '0' && after[0] <= '9')))
        return -1;   /* "Falsey" is not False */
    s->p = after;
    return 0;
}

/* A non-negative decimal integer (Python 2 numpy wrote a trailing 'L'). */
static int scan_dim(npy_scan *s, int64_t *out)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') return -1;
    int64_t v = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        int d = *s->p++ - '0';
        if (v > (INT64_MAX - d) / 10) return -2;
        v = v * 10 + d;
    }
    if (s->p < s->end && *s->p == 'L') s->p++;
    *out = v;
    return 0;
}

/* The dtypes dm_npy_read accepts (numpy writes '|u1' for uint8; '<u1' is the
 * same type spelled with an explicit byte order). */
static const struct { const char *descr; npy_kind kind; int itemsize; } npy_dtypes[] = {
    { "<f4", NPY_FLOAT, 4 }, { "<f8", NPY_FLOAT, 8 },
    { "<i4", NPY_INT, 4 },   { "<i8", NPY_INT, 8 },
    { "|u1", NPY_UINT, 1 },  { "<u1", NPY_UINT, 1 }, { "|i1", NPY_INT, 1 },
};
#define NPY_DTYPES_NEED "(need '<f4', '<f8', '<i4', '<i8', '|u1' or '|i1')"

static dm_status parse_descr(npy_scan *s, const char *begin, npy_header *h)
{
    const char *str;
    size_t len;
    skip_ws(s);
    if (s->p < s->end && *s->p == '[')
        return dm_fail(s->err, DM_ERR_UNSUPPORTED, "%s: structured dtype not supported " NPY_DTYPES_NEED, s->path);
    if (scan_string(s, &str, &len) != 0) return bad_at(s, begin, "'descr' is not a string");
    for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++) {
        if (len == 3 && memcmp(str, npy_dtypes[i].descr, 3) == 0) {
            h->kind = npy_dtypes[i].kind;
            h->itemsize = npy_dtypes[i].itemsize;
            return DM_OK;
        }
    }
    return dm_fail(s->err, DM_ERR_UNSUPPORTED, "%s: dtype '%.*s' not supported " NPY_DTYPES_NEED,
                   s->path, (int)DM_MIN(len, 40), str);
}

static dm_status parse_order(npy_scan *s, const char *begin)
{
    if (scan_word(s, "False") == 0) return DM_OK;
    if (scan_word(s, "True") == 0)
        return dm_fail(s->err, DM_ERR_UNSUPPORTED, "%s: Fortran order (column-major) not supported", s->path);
    return bad_at(s, begin, "'fortran_order' is not True or False");
}

/* A tuple of non-negative ints: "()", "(5,)", "(3, 5)", trailing comma allowed. */
static dm_status parse_shape(npy_scan *s, const char *begin, npy_header *h)
{
    if (expect(s, '(') != 0) return bad_at(s, begin, "'shape' is not a tuple");
    h->ndim = 0;
    skip_ws(s);
    while (s->p < s->end && *s->p != ')') {
        int64_t v;
        int r = scan_dim(s, &v);
        if (r == -2) return bad_at(s, begin, "shape dimension overflows");
        if (r != 0) return bad_at(s, begin, "shape dimension is not a non-negative integer");
        if (h->ndim < 2) h->shape[h->ndim] = v;
        h->ndim++;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
        } else if (s->p < s->end && *s->p != ')') {
            return bad_at(s, begin, "expected ',' or ')' in shape");
        }
    }
    if (expect(s, ')') != 0) return bad_at(s, begin, "unterminated shape tuple");
    if (h->ndim < 1 || h->ndim > 2)
        return dm_fail(s->err, DM_ERR_UNSUPPORTED, "%s: shape has %d dims, need 1 or 2", s->path, h->ndim);
    return DM_OK;
}

static dm_status parse_entry(npy_scan *s, const char *begin, npy_header *h)
{
    const char *key;
    size_t len;
    if (scan_string(s, &key, &len) != 0) return bad_at(s, begin, "expected a quoted key");
    if (expect(s, ':') != 0) return bad_at(s, begin, "expected ':' after a key");
    int *seen;
    dm_status st;
    if (len == 5 && memcmp(key, "descr", 5) == 0) {
        seen = &h->seen_descr;
        st = parse_descr(s, begin, h);
    } else if (len == 13 && memcmp(key, "fortran_order", 13) == 0) {
        seen = &h->seen_order;
        st = parse_order(s, begin);
    } else if (len == 5 && memcmp(key, "shape", 5) == 0) {
        seen = &h->seen_shape;
        st = parse_shape(s, begin, h);
    } else {
        return dm_fail(s->err, DM_ERR_FORMAT, "%s: bad header: unexpected key '%.*s'", s->path,
                       (int)DM_MIN(len, 40), key);
    }
    if (st != DM_OK) return st;
    if ((*seen)++)
        return dm_fail(s->err, DM_ERR_FORMAT, "%s: bad header: key '%.*s' repeated", s->path, (int)len, key);
    return DM_OK;
}

/* Parses the whole dict text [text, text+n) into h. */
static dm_status parse_dict(const char *path, const char *text, size_t n, npy_header *h, dm_error *err)
{
    npy_scan s = { .p = text, .end = text + n, .path = path, .err = err };
    memset(h, 0, sizeof *h);
    if (expect(&s, '{') != 0) return bad_at(&s, text, "header does not start with '{'");
    for (;;) {
        skip_ws(&s);
        if (s.p < s.end && *s.p == '}') break;
        dm_status st = parse_entry(&s, text, h);
        if (st != DM_OK) return st;
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') s.p++;
        else if (s.p >= s.end || *s.p != '}') return bad_at(&s, text, "expected ',' or '}'");
    }
    s.p++;   /* the '}' */
    skip_ws(&s);
    if (s.p != s.end) return bad_at(&s, text, "unexpected text after the dict");
    if (!h->seen_descr) return bad(&s, "no 'descr' key");
    if (!h->seen_order) return bad(&s, "no 'fortran_order' key");
    if (!h->seen_shape) return bad(&s, "no 'shape' key");
    return DM_OK;
}

/* ---------------------------------------------------------------- read */

/* Reads the magic, version and header length; *hlen and *pre (bytes before
 * the dict) on success. */
static dm_status read_preamble(FILE *fp, const char *path, uint32_t *hlen, size_t *pre, dm_error *err)
{
    unsigned char b[12];
    size_t got = fread(b, 1, 8, fp);
    if (got < 8 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        if (got >= NPY_MAGIC_LEN && memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) == 0)
            return dm_fail(err, DM_ERR_FORMAT, "%s: truncated .npy preamble (%zu bytes)", path, got);
        return dm_fail(err, DM_ERR_FORMAT, "%s: not a .npy file (bad magic)", path);
    }
    int major = b[6], minor = b[7];
    size_t lenbytes = major == 1 ? 2 : 4;
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "%s: .npy version %d.%d not supported (1.0, 2.0, 3.0)",
                       path, major, minor);
    if (fread(b + 8, 1, lenbytes, fp) != lenbytes)
        return dm_fail(err, DM_ERR_FORMAT, "%s: truncated .npy preamble (no header length)", path);
    *hlen = lenbytes == 2 ? (uint32_t)(b[8] | (b[9] << 8))
                          : (uint32_t)b[8] | ((uint32_t)b[9] << 8) | ((uint32_t)b[10] << 16) | ((uint32_t)b[11] << 24);
    *pre = 8 + lenbytes;
    return DM_OK;
}

static dm_status read_header(FILE *fp, const char *path, npy_header *h, size_t *pre, dm_error *err)
{
    uint32_t hlen = 0;
    dm_status s = read_preamble(fp, path, &hlen, pre, err);
    if (s != DM_OK) return s;
    if (hlen > NPY_HEADER_MAX)
        return dm_fail(err, DM_ERR_FORMAT, "%s: header length %u is implausibly large", path, (unsigned)hlen);
    char *text = malloc(hlen ? hlen : 1);
    if (!text) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    size_t got = fread(text, 1, hlen, fp);
    if (got != hlen) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: header truncated: %u bytes declared, %zu present",
                    path, (unsigned)hlen, got);
    } else {
        s = parse_dict(path, text, hlen, h, err);
        *pre += hlen;
    }
    free(text);
    return s;
}

static void fmt_shape(const npy_header *h, char *buf, size_t n)
{
    if (h->ndim == 1) snprintf(buf, n, "(%lld,)", (long long)h->shape[0]);
    else snprintf(buf, n, "(%lld, %lld)", (long long)h->shape[0], (long long)h->shape[1]);
}

static dm_status size_error(const char *path, const npy_header *h, const char *have, uint64_t need, dm_error *err)
{
    char sh[64];
    fmt_shape(h, sh, sizeof sh);
    return dm_fail(err, DM_ERR_FORMAT, "%s: data is %s bytes, shape %s needs %llu", path, have, sh,
                   (unsigned long long)need);
}

/* Integers must convert to float32 exactly: every integer with |v| <= 2^24 does. */
#define NPY_INT_EXACT (INT64_C(1) << 24)

/* One little-endian value of h's dtype as float32; -1 if it is an integer
 * float32 cannot hold exactly (*iv then holds it). */
static int convert_value(const npy_header *h, const unsigned char *p, float *out, int64_t *iv)
{
    uint64_t u = 0;
    for (int b = h->itemsize - 1; b >= 0; b--) u = (u << 8) | p[b];   /* little-endian */
    if (h->kind == NPY_FLOAT) {
        if (h->itemsize == 4) {
            uint32_t u32 = (uint32_t)u;
            memcpy(out, &u32, 4);
        } else {
            double d;
            memcpy(&d, &u, 8);
            *out = (float)d;
        }
        return 0;
    }
    int64_t v;
    if (h->itemsize == 8) {
        memcpy(&v, &u, 8);                       /* two's complement, as every host stores it */
    } else {
        int bits = 8 * h->itemsize;              /* 1- or 4-byte: u < 2^bits fits int64 */
        v = (int64_t)u;
        if (h->kind == NPY_INT && (u >> (bits - 1)) != 0) v -= INT64_C(1) << bits;   /* sign-extend */
    }
    *iv = v;
    if (v < -NPY_INT_EXACT || v > NPY_INT_EXACT) return -1;
    *out = (float)v;
    return 0;
}

/* Reads n values of h's dtype as float32 into out (grown as values arrive, so
 * a pipe whose header declares a huge shape costs only the bytes it holds),
 * in chunks so that 8-byte input never needs a second full-size buffer.
 * Returns the values read; stops early at the end of the data, when memory
 * runs out (*nomem), or at an integer float32 cannot represent exactly
 * (*inexact, *bad_index, *bad_value). */
static size_t read_values(FILE *fp, const npy_header *h, dm_growbuf *out, size_t n, int *inexact, int *nomem,
                          size_t *bad_index, int64_t *bad_value)
{
    unsigned char buf[8192];
    size_t itemsize = (size_t)h->itemsize, per = sizeof buf / itemsize, done = 0;
    *inexact = *nomem = 0;
    while (done < n) {
        size_t want = DM_MIN(per, n - done), got = fread(buf, itemsize, want, fp);
        if (got && dm_growbuf_reserve(out, (done + got) * sizeof(float)) != 0) {   /* <= n floats: no overflow */
            *nomem = 1;
            return done;
        }
        float *dst = out->p;
        for (size_t i = 0; i < got; i++) {
            if (convert_value(h, buf + i * itemsize, &dst[done + i], bad_value) != 0) {
                *inexact = 1;
                *bad_index = done + i;
                return done + i;
            }
        }
        done += got;
        if (got < want) break;
    }
    return done;
}

/* Checks the data size against the shape before allocating: for a regular
 * file against its size, for a pipe by growing the buffer only as data
 * arrives. Then reads exactly that much. */
static dm_status read_data(FILE *fp, const char *path, const npy_header *h, size_t pre, dm_array *out,
                           dm_error *err)
{
    int64_t rows = h->ndim == 1 ? 1 : h->shape[0], cols = h->ndim == 1 ? h->shape[0] : h->shape[1];
    size_t n, need, fbytes;
    if (dm_mul_size((size_t)rows, (size_t)cols, &n) != 0 || dm_mul_size(n, (size_t)h->itemsize, &need) != 0 ||
        dm_mul_size(n, sizeof(float), &fbytes) != 0 || need > (size_t)INT64_MAX || fbytes > (size_t)INT64_MAX)
        return dm_fail(err, DM_ERR_FORMAT, "%s: shape is too large", path);
    dm_growbuf data = {.max = fbytes ? fbytes : sizeof(float)};
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode)) {
        uint64_t have = (uint64_t)st.st_size < pre ? 0 : (uint64_t)st.st_size - pre;
        if (have != need) {
            char hs[32];
            snprintf(hs, sizeof hs, "%llu", (unsigned long long)have);
            return size_error(path, h, hs, need, err);
        }
        /* sized by the file: allocate it all at once */
        if (dm_growbuf_reserve(&data, fbytes) != 0)
            return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory for %zu values", path, n);
    }
    int inexact = 0, nomem = 0;
    size_t bad_index = 0;
    int64_t bad_value = 0;
    size_t got = read_values(fp, h, &data, n, &inexact, &nomem, &bad_index, &bad_value);
    dm_status s = DM_OK;
    if (nomem) {
        s = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory for %zu values", path, n);
    } else if (inexact) {
        s = dm_fail(err, DM_ERR_UNSUPPORTED,
                    "%s: value %lld at row %lld, column %lld is not exactly representable as float32 (|v| > 2^24)",
                    path, (long long)bad_value, (long long)(bad_index / (size_t)cols),
                    (long long)(bad_index % (size_t)cols));
    } else if (got != n || ferror(fp)) {
        char hs[32];
        snprintf(hs, sizeof hs, "%zu", got * (size_t)h->itemsize);
        s = ferror(fp) ? dm_fail(err, DM_ERR_IO, "%s: read failed: %s", path, strerror(errno))
                       : size_error(path, h, hs, need, err);
    } else if (fgetc(fp) != EOF) {   /* only reached for pipes: regular files were sized above */
        char hs[48];
        snprintf(hs, sizeof hs, "more than %llu", (unsigned long long)need);
        s = size_error(path, h, hs, need, err);
    } else if (!data.p && dm_growbuf_reserve(&data, sizeof(float)) != 0) {   /* an empty array still owns a buffer */
        s = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (s != DM_OK) {
        dm_free(data.p);
        return s;
    }
    out->rows = rows;
    out->cols = cols;
    out->data = data.p;
    return DM_OK;
}

dm_status dm_npy_read(const char *path, dm_array *out, dm_error *err)
{
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return dm_fail(err, DM_ERR_ARG, "dm_npy_read: NULL argument");
    FILE *fp = fopen(path, "rb");
    if (!fp) return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {   /* fopen accepts directories */
        fclose(fp);
        return dm_fail(err, DM_ERR_IO, "%s: is a directory", path);
    }
    npy_header h;
    size_t pre = 0;
    dm_status s = read_header(fp, path, &h, &pre, err);
    if (s == DM_OK) s = read_data(fp, path, &h, pre, out, err);
    fclose(fp);
    return s;
}

/* ---------------------------------------------------------------- write */

/* numpy's header for a C-order float32 [rows, cols] array, byte for byte:
 * the dict, numpy's spare spaces for growing axis 0 (21 - digits of rows),
 * then spaces and '\n' so the preamble is a multiple of 64 bytes (numpy
 * adds a full 64 when it already is). Returns the preamble length. */
static size_t npy_preamble(unsigned char *buf, size_t cap, int64_t rows, int64_t cols)
{
    char dict[160];
    int d = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)cols);
    char digits[24];
    int growth = 21 - snprintf(digits, sizeof digits, "%lld", (long long)rows);
    size_t body = (size_t)d + (size_t)DM_MAX(growth, 0) + 1;            /* + '\n' */
    size_t pad = 64 - (10 + body) % 64, total = 10 + body + pad;
    if (total > cap) return 0;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1;
    buf[7] = 0;
    size_t hlen = total - 10;
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)d);
    memset(buf + 10 + d, ' ', total - 11 - (size_t)d);
    buf[total - 1] = '\n';
    return total;
}

dm_status dm_npy_write(const char *path, const float *data, int64_t rows, int64_t cols, dm_error *err)
{
    if (!path) return dm_fail(err, DM_ERR_ARG, "dm_npy_write: NULL path");
    size_t n, bytes;
    if (rows < 0 || cols < 0)
        return dm_fail(err, DM_ERR_ARG, "%s: negative shape (%lld, %lld)", path, (long long)rows, (long long)cols);
    if (dm_mul_size((size_t)rows, (size_t)cols, &n) != 0 || dm_mul_size(n, 4, &bytes) != 0)
        return dm_fail(err, DM_ERR_ARG, "%s: shape (%lld, %lld) too large", path, (long long)rows, (long long)cols);
    if (n > 0 && !data) return dm_fail(err, DM_ERR_ARG, "%s: NULL data", path);
    unsigned char pre[256];
    size_t plen = npy_preamble(pre, sizeof pre, rows, cols);
    dm_atomic_file af;
    dm_status s = dm_atomic_open(&af, path, err);
    if (s != DM_OK) return s;
    if (plen == 0 || fwrite(pre, 1, plen, af.fp) != plen || dm_write_f32le(af.fp, data, n) != 0) {
        int e = errno;
        dm_atomic_abort(&af);
        return dm_fail(err, DM_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return dm_atomic_commit(&af, err);
}

void dm_array_free(dm_array *a)
{
    if (!a) return;
    dm_free(a->data);
    memset(a, 0, sizeof *a);
}
