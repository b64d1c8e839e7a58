/* safetensors.c - read (mmap, zero-copy, fully validated) and write safetensors.
 *
 * The reader trusts nothing in the file: every length, offset and shape is
 * checked (with overflow checks) before any pointer into the mapping is
 * formed, so a corrupt or hostile file yields a one-line "PATH: problem"
 * error instead of an out-of-bounds read. */
#include "io/safetensors.h"
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- byte order */

/* The format is little-endian; these decode byte by byte so they work on any
 * host and at any alignment (the mapping gives no alignment guarantee). */
static uint16_t rd_le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t rd_le64(const unsigned char *p)
{
    return (uint64_t)rd_le32(p) | ((uint64_t)rd_le32(p + 4) << 32);
}

/* ---------------------------------------------------------------- dtypes */

static void f64_to_f32(const void *src, float *dst, int64_t n)
{
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = rd_le64(s + 8 * i);
        double d;
        memcpy(&d, &u, 8);
        dst[i] = (float)d;
    }
}

static void f32_to_f32(const void *src, float *dst, int64_t n)
{
    if (dm_host_is_le()) {            /* the common case: one bulk copy */
        memcpy(dst, src, (size_t)n * 4);
        return;
    }
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = rd_le32(s + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

static void f16_to_f32(const void *src, float *dst, int64_t n)
{
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = dm_f16_to_f32(rd_le16(s + 2 * i));
}

static void bf16_to_f32(const void *src, float *dst, int64_t n)
{
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = dm_bf16_to_f32(rd_le16(s + 2 * i));
}

const dm_dtype_traits dm_dtypes[DM_DT_COUNT] = {
    [DM_DT_F64]  = { .name = "F64",  .size = 8, .to_f32 = f64_to_f32 },
    [DM_DT_F32]  = { .name = "F32",  .size = 4, .to_f32 = f32_to_f32 },
    [DM_DT_F16]  = { .name = "F16",  .size = 2, .to_f32 = f16_to_f32 },
    [DM_DT_BF16] = { .name = "BF16", .size = 2, .to_f32 = bf16_to_f32 },
    [DM_DT_I64]  = { .name = "I64",  .size = 8, .to_f32 = NULL },
    [DM_DT_I32]  = { .name = "I32",  .size = 4, .to_f32 = NULL },
    [DM_DT_I16]  = { .name = "I16",  .size = 2, .to_f32 = NULL },
    [DM_DT_I8]   = { .name = "I8",   .size = 1, .to_f32 = NULL },
    [DM_DT_U8]   = { .name = "U8",   .size = 1, .to_f32 = NULL },
    [DM_DT_BOOL] = { .name = "BOOL", .size = 1, .to_f32 = NULL },
};

int dm_dtype_parse(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < DM_DT_COUNT; i++)
        if (strcmp(dm_dtypes[i].name, name) == 0) return i;
    return -1;
}

/* ---------------------------------------------------------------- close / lookup */

void dm_st_close(dm_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static const char *st_name(const void *tensors, int i) { return ((const dm_st_tensor *)tensors)[i].name; }

const dm_st_tensor *dm_st_find(const dm_st_file *f, const char *name)
{
    if (!f) return NULL;
    int i = dm_name_lookup(f->tensors, f->by_name, f->n_tensors, st_name, name);
    return i < 0 ? NULL : &f->tensors[i];
}

const char *dm_st_meta(const dm_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

dm_status dm_st_read_f32(const dm_st_file *f, const dm_st_tensor *t, float *dst, dm_error *err)
{
    if (!f || !t || (!dst && t->numel > 0))
        return dm_fail(err, DM_ERR_ARG, "dm_st_read_f32: NULL argument");
    const dm_dtype_traits *tr = &dm_dtypes[t->dtype];
    if (!tr->to_f32)
        return dm_fail(err, DM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, not a float type (F32, F16, BF16, F64)",
                       f->path ? f->path : "?", t->name, tr->name);
    if (t->numel > 0) tr->to_f32(t->data, dst, t->numel);   /* dst may be NULL when empty */
    return DM_OK;
}

/* ---------------------------------------------------------------- open: header parsing */

/* What the header parser needs besides the file: for messages and bounds. */
typedef struct st_parse {
    dm_st_file *f;
    dm_error *err;
    uint64_t data_size;              /* bytes in the data section */
    const unsigned char *data;       /* start of the data section */
} st_parse;

/* A JSON integer >= 0 (jansson integers are signed long long). */
static int json_nonneg(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

static dm_status parse_shape(st_parse *p, const char *name, const json_t *shape, dm_st_tensor *t)
{
    const char *path = p->f->path;
    if (!shape)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s' has no \"shape\"", path, name);
    if (!json_is_array(shape))
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': \"shape\" is not an array", path, name);
    size_t nd = json_array_size(shape);
    if (nd > DM_ST_MAX_DIMS)
        return dm_fail(p->err, DM_ERR_UNSUPPORTED, "%s: tensor '%s' has %zu dims, at most %d supported",
                       path, name, nd, DM_ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t d = 0; d < nd; d++) {
        uint64_t dim;
        if (json_nonneg(json_array_get(shape, d), &dim) != 0)
            return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                           path, name, d);
        /* json_int_t is at most INT64_MAX, so dim fits; the product may not. */
        if (dim != 0 && (uint64_t)numel > (uint64_t)INT64_MAX / dim)
            return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': shape element count overflows", path, name);
        t->shape[d] = (int64_t)dim;
        numel *= (int64_t)dim;
    }
    t->numel = numel;
    return DM_OK;
}

static dm_status parse_offsets(st_parse *p, const char *name, const json_t *offs, dm_st_tensor *t)
{
    const char *path = p->f->path;
    if (!offs)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s' has no \"data_offsets\"", path, name);
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        json_nonneg(json_array_get(offs, 0), &t->begin) != 0 ||
        json_nonneg(json_array_get(offs, 1), &t->end) != 0)
        return dm_fail(p->err, DM_ERR_FORMAT,
                       "%s: tensor '%s': \"data_offsets\" is not [begin, end] of non-negative integers", path, name);
    if (t->begin > t->end)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu",
                       path, name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > p->data_size)
        return dm_fail(p->err, DM_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data section (%llu bytes)",
                       path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)p->data_size);
    return DM_OK;
}

/* "[2, 3]" for messages. */
static void fmt_shape(const dm_st_tensor *t, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* Checks one tensor entry and fills t (name set by the caller). */
static dm_status parse_tensor(st_parse *p, const char *name, const json_t *e, dm_st_tensor *t)
{
    const char *path = p->f->path;
    if (!json_is_object(e))
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
    const json_t *dt = json_object_get(e, "dtype");
    if (!dt)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s' has no \"dtype\"", path, name);
    if (!json_is_string(dt))
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is not a string", path, name);
    int k = dm_dtype_parse(json_string_value(dt));
    if (k < 0)
        return dm_fail(p->err, DM_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'",
                       path, name, json_string_value(dt));
    t->dtype = (dm_dtype)k;
    dm_status s = parse_shape(p, name, json_object_get(e, "shape"), t);
    if (s == DM_OK) s = parse_offsets(p, name, json_object_get(e, "data_offsets"), t);
    if (s != DM_OK) return s;
    uint64_t size = (uint64_t)dm_dtypes[k].size;
    if ((uint64_t)t->numel > UINT64_MAX / size)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensor '%s': byte size overflows", path, name);
    uint64_t want = (uint64_t)t->numel * size;
    if (want != t->end - t->begin) {
        char sh[DM_ST_MAX_DIMS * 21 + 4];
        fmt_shape(t, sh, sizeof sh);
        return dm_fail(p->err, DM_ERR_FORMAT,
                       "%s: tensor '%s': shape %s x %s needs %llu bytes but data_offsets span %llu",
                       path, name, sh, dm_dtypes[k].name, (unsigned long long)want,
                       (unsigned long long)(t->end - t->begin));
    }
    t->data = p->data + t->begin;
    return DM_OK;
}

static dm_status parse_metadata(st_parse *p, const json_t *meta)
{
    dm_st_file *f = p->f;
    if (!json_is_object(meta))
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: \"__metadata__\" is not an object", f->path);
    size_t n = json_object_size(meta);
    if (n == 0) return DM_OK;
    if (n > INT_MAX)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: too many metadata entries", f->path);
    f->meta_keys = calloc(n, sizeof *f->meta_keys);
    f->meta_vals = calloc(n, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return dm_fail(p->err, DM_ERR_NOMEM, "%s: out of memory for metadata", f->path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        if (!json_is_string(v))
            return dm_fail(p->err, DM_ERR_FORMAT, "%s: metadata '%s' is not a string", f->path, key);
        int i = f->n_meta;
        f->meta_keys[i] = strdup(key);
        f->meta_vals[i] = strdup(json_string_value(v));
        if (f->meta_keys[i] || f->meta_vals[i]) f->n_meta++;  /* so close frees what was made */
        if (!f->meta_keys[i] || !f->meta_vals[i])
            return dm_fail(p->err, DM_ERR_NOMEM, "%s: out of memory for metadata", f->path);
    }
    return DM_OK;
}

/* Sort by (begin, end); names break ties so the order never depends on qsort. */
static int cmp_tensor(const void *a, const void *b)
{
    const dm_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* After sorting, a tensor overlaps an earlier one iff it starts before the
 * furthest end seen so far. Empty tensors occupy no bytes and never overlap. */
static dm_status check_overlap(st_parse *p)
{
    dm_st_file *f = p->f;
    const dm_st_tensor *far = NULL;
    for (int i = 0; i < f->n_tensors; i++) {
        const dm_st_tensor *t = &f->tensors[i];
        if (t->begin == t->end) continue;
        if (far && t->begin < far->end)
            return dm_fail(p->err, DM_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                           f->path, far->name, (unsigned long long)far->begin, (unsigned long long)far->end,
                           t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
        if (!far || t->end > far->end) far = t;
    }
    return DM_OK;
}

static dm_status parse_header(st_parse *p, const json_t *root)
{
    dm_st_file *f = p->f;
    if (!json_is_object(root))
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: header is not a JSON object", f->path);
    size_t n = json_object_size(root);
    if (n > INT_MAX)
        return dm_fail(p->err, DM_ERR_FORMAT, "%s: too many tensors", f->path);
    if (n) {
        f->tensors = calloc(n, sizeof *f->tensors);
        if (!f->tensors) return dm_fail(p->err, DM_ERR_NOMEM, "%s: out of memory for %zu tensors", f->path, n);
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        dm_status s;
        if (strcmp(key, "__metadata__") == 0) {
            s = parse_metadata(p, v);
        } else {
            dm_st_tensor *t = &f->tensors[f->n_tensors];
            t->name = strdup(key);
            if (!t->name) return dm_fail(p->err, DM_ERR_NOMEM, "%s: out of memory", f->path);
            f->n_tensors++;
            s = parse_tensor(p, key, v, t);
        }
        if (s != DM_OK) return s;
    }
    if (f->n_tensors > 1) qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    return check_overlap(p);
}

/* The name index; names are unique (the JSON parser refuses duplicate keys). */
static dm_status build_index(st_parse *p)
{
    dm_st_file *f = p->f;
    f->by_name = dm_name_index(f->tensors, f->n_tensors, st_name);
    if (!f->by_name) return dm_fail(p->err, DM_ERR_NOMEM, "%s: out of memory", f->path);
    f->total_numel = 0;
    f->data_size = p->data_size;
    for (int i = 0; i < f->n_tensors; i++)
        f->total_numel += f->tensors[i].numel;   /* each tensor's bytes lie in the file: the sum cannot overflow */
    return DM_OK;
}

/* ---------------------------------------------------------------- open */

static dm_status map_file(dm_st_file *f, dm_error *err)
{
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    dm_status s = DM_OK;
    if (fstat(fd, &st) != 0) {
        s = dm_fail(err, DM_ERR_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        s = dm_fail(err, DM_ERR_IO, "%s: not a regular file", f->path);
    } else if (st.st_size < 8) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: file is %lld bytes, too short for the 8-byte header length",
                    f->path, (long long)st.st_size);
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        s = dm_fail(err, DM_ERR_IO, "%s: file too large to map", f->path);
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            s = dm_fail(err, DM_ERR_IO, "%s: cannot mmap: %s", f->path, strerror(errno));
        } else {
            f->map = m;
            f->map_size = (size_t)st.st_size;
        }
    }
    close(fd);   /* the mapping stays valid without the descriptor */
    return s;
}

dm_status dm_st_open(const char *path, dm_st_file *f, dm_error *err)
{
    if (f) memset(f, 0, sizeof *f);
    if (!path || !f) return dm_fail(err, DM_ERR_ARG, "dm_st_open: NULL argument");
    f->path = strdup(path);
    if (!f->path) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    dm_status s = map_file(f, err);
    if (s != DM_OK) {
        dm_st_close(f);
        return s;
    }
    const unsigned char *base = f->map;
    uint64_t hlen = rd_le64(base), avail = (uint64_t)f->map_size - 8;
    if (hlen > avail) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: header length %llu exceeds the %llu bytes after the length field",
                    path, (unsigned long long)hlen, (unsigned long long)avail);
        dm_st_close(f);
        return s;
    }
    if (hlen == 0) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: header length is 0: no JSON header", path);
        dm_st_close(f);
        return s;
    }
    json_error_t je;
    /* JSON_DECODE_ANY so a scalar header gets the "not an object" message;
     * duplicate keys would silently shadow a tensor, so they are an error. */
    json_t *root = json_loadb((const char *)base + 8, (size_t)hlen,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        s = dm_fail(err, DM_ERR_FORMAT, "%s: header is not valid JSON: %s (line %d, column %d, byte %d)",
                    path, je.text, je.line, je.column, je.position);
        dm_st_close(f);
        return s;
    }
    st_parse p = { .f = f, .err = err, .data_size = avail - hlen, .data = base + 8 + hlen };
    s = parse_header(&p, root);
    if (s == DM_OK) s = build_index(&p);
    json_decref(root);
    if (s != DM_OK) dm_st_close(f);
    return s;
}

/* ---------------------------------------------------------------- write */

/* Total elements of a tensor to write, or -1 on a bad or overflowing shape. */
static int64_t out_numel(const dm_st_out *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        int64_t s = t->shape[d];
        if (s < 0 || (s && n > INT64_MAX / 4 / s)) return -1;  /* bytes must fit too */
        n *= s;
    }
    return n;
}

static dm_status check_outputs(const char *path, const dm_st_out *t, int n,
                               const char *const *meta, int n_meta, dm_error *err)
{
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && !meta))
        return dm_fail(err, DM_ERR_ARG, "%s: dm_st_write: bad tensor or metadata list", path);
    for (int i = 0; i < n; i++) {
        if (!t[i].name)
            return dm_fail(err, DM_ERR_ARG, "%s: tensor %d has no name", path, i);
        if (strcmp(t[i].name, "__metadata__") == 0)
            return dm_fail(err, DM_ERR_ARG, "%s: a tensor cannot be named __metadata__", path);
        if (t[i].ndim < 0 || t[i].ndim > DM_ST_MAX_DIMS)
            return dm_fail(err, DM_ERR_ARG, "%s: tensor '%s' has ndim %d, need 0..%d",
                           path, t[i].name, t[i].ndim, DM_ST_MAX_DIMS);
        int64_t numel = out_numel(&t[i]);
        if (numel < 0)
            return dm_fail(err, DM_ERR_ARG, "%s: tensor '%s' has a negative or too large shape", path, t[i].name);
        if (numel > 0 && !t[i].data && !t[i].raw)
            return dm_fail(err, DM_ERR_ARG, "%s: tensor '%s' has no data", path, t[i].name);
        if (t[i].raw && (t[i].dtype < 0 || t[i].dtype >= DM_DT_COUNT))
            return dm_fail(err, DM_ERR_ARG, "%s: tensor '%s' has an unknown dtype", path, t[i].name);
    }
    for (int i = 0; i < 2 * n_meta; i++)
        if (!meta[i]) return dm_fail(err, DM_ERR_ARG, "%s: metadata entry %d is NULL", path, i / 2);
    return DM_OK;
}

/* Adds key -> value to obj, refusing duplicates (jansson would overwrite). */
static dm_status add_unique(json_t *obj, const char *key, json_t *value, const char *path,
                            const char *what, dm_error *err)
{
    if (!value) return dm_fail(err, DM_ERR_ARG, "%s: %s '%s': value is not valid UTF-8 or out of memory",
                               path, what, key);
    if (json_object_get(obj, key)) {
        json_decref(value);
        return dm_fail(err, DM_ERR_ARG, "%s: duplicate %s '%s'", path, what, key);
    }
    if (json_object_set_new(obj, key, value) != 0)
        return dm_fail(err, DM_ERR_ARG, "%s: %s '%s': name is not valid UTF-8", path, what, key);
    return DM_OK;
}

static json_t *tensor_entry(const dm_st_out *t, uint64_t begin, uint64_t end)
{
    json_t *shape = json_array();
    for (int d = 0; shape && d < t->ndim; d++)
        json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    return json_pack("{s:s, s:o, s:[I,I]}", "dtype", t->raw ? dm_dtypes[t->dtype].name : "F32", "shape", shape,
                     "data_offsets", (json_int_t)begin, (json_int_t)end);
}

/* The header object: "__metadata__" first (if any), then tensors in order. */
static dm_status build_header(const char *path, const dm_st_out *t, int n, const char *const *meta,
                              int n_meta, json_t **out, dm_error *err)
{
    json_t *root = json_object();
    if (!root) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    dm_status s = DM_OK;
    if (n_meta > 0) {
        json_t *m = json_object();
        s = add_unique(root, "__metadata__", m, path, "metadata", err);
        for (int i = 0; s == DM_OK && i < n_meta; i++)
            s = add_unique(m, meta[2 * i], json_string(meta[2 * i + 1]), path, "metadata key", err);
    }
    uint64_t off = 0;
    for (int i = 0; s == DM_OK && i < n; i++) {
        uint64_t bytes = (uint64_t)out_numel(&t[i]) * (uint64_t)(t[i].raw ? dm_dtypes[t[i].dtype].size : 4);
        if (off + bytes > (uint64_t)INT64_MAX) {
            s = dm_fail(err, DM_ERR_ARG, "%s: total tensor size overflows", path);
            break;
        }
        s = add_unique(root, t[i].name, tensor_entry(&t[i], off, off + bytes), path, "tensor", err);
        off += bytes;
    }
    if (s != DM_OK) {
        json_decref(root);
        return s;
    }
    *out = root;
    return DM_OK;
}

static dm_status write_file(const char *path, const char *hdr, const dm_st_out *t, int n, dm_error *err)
{
    size_t len = strlen(hdr), padded = (len + 7) / 8 * 8;   /* 8 + padded is a multiple of 8 */
    unsigned char lenbuf[8];
    for (int b = 0; b < 8; b++) lenbuf[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    dm_atomic_file af;
    dm_status s = dm_atomic_open(&af, path, err);
    if (s != DM_OK) return s;
    int bad = fwrite(lenbuf, 1, 8, af.fp) != 8 || fwrite(hdr, 1, len, af.fp) != len;
    for (size_t i = len; !bad && i < padded; i++) bad = fputc(' ', af.fp) == EOF;
    for (int i = 0; !bad && i < n; i++) {
        size_t bytes = (size_t)out_numel(&t[i]) * (size_t)(t[i].raw ? dm_dtypes[t[i].dtype].size : 4);
        /* raw elements are little-endian already (every target deepmoe builds for is) */
        if (t[i].raw) bad = bytes && fwrite(t[i].raw, 1, bytes, af.fp) != bytes;
        else bad = dm_write_f32le(af.fp, t[i].data, out_numel(&t[i])) != 0;
    }
    if (bad) {
        int e = errno;
        dm_atomic_abort(&af);
        return dm_fail(err, DM_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return dm_atomic_commit(&af, err);
}

dm_status dm_st_write(const char *path, const dm_st_out *t, int n,
                      const char *const *meta, int n_meta, dm_error *err)
{
    if (!path) return dm_fail(err, DM_ERR_ARG, "dm_st_write: NULL path");
    dm_status s = check_outputs(path, t, n, meta, n_meta, err);
    json_t *root = NULL;
    if (s == DM_OK) s = build_header(path, t, n, meta, n_meta, &root, err);
    if (s != DM_OK) return s;
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr) return dm_fail(err, DM_ERR_NOMEM, "%s: cannot serialise the header", path);
    s = write_file(path, hdr, t, n, err);
    free(hdr);
    return s;
}
