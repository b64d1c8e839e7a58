/* test_io.c - safetensors and .npy: round trips, files built byte by byte
 * (as other writers lay them out), and every malformed input the readers
 * must refuse with the right status and a one-line "PATH: problem" message. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

/* Asserts a failure: status, substring, one line, names the path. */
static void expect_err(dm_t *t, const char *label, dm_status got, const dm_error *e,
                       dm_status want, const char *sub, const char *path)
{
    CHECK(t, got == want, "%s: status %s, want %s (%s)", label, dm_status_name(got), dm_status_name(want), e->msg);
    CHECK(t, e->code == want, "%s: err.code %s", label, dm_status_name(e->code));
    CHECK(t, strstr(e->msg, sub) != NULL, "%s: message '%s' lacks '%s'", label, e->msg, sub);
    CHECK(t, strchr(e->msg, '\n') == NULL, "%s: message has a newline: '%s'", label, e->msg);
    if (path) CHECK(t, strstr(e->msg, path) == e->msg, "%s: message '%s' does not start with the path", label, e->msg);
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file: u64 LE header length, the header text, then data. */
static const char *st_file(const char *name, const char *header, const void *data, size_t nd)
{
    size_t hl = strlen(header);
    unsigned char *buf = malloc(8 + hl + nd + 1);
    put_le(buf, hl, 8);
    memcpy(buf + 8, header, hl);
    if (nd) memcpy(buf + 8 + hl, data, nd);
    const char *p = dm_test_write_file(name, buf, 8 + hl + nd);
    free(buf);
    return p;
}

/* A .npy file with the given version and dict text (no padding needed). */
static const char *npy_file(const char *name, int major, const char *dict, const void *data, size_t nd)
{
    size_t dl = strlen(dict), lb = major == 1 ? 2 : 4, pre = 8 + lb;
    unsigned char *buf = malloc(pre + dl + nd + 1);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    put_le(buf + 8, dl, (int)lb);
    memcpy(buf + pre, dict, dl);
    if (nd) memcpy(buf + pre + dl, data, nd);
    const char *p = dm_test_write_file(name, buf, pre + dl + nd);
    free(buf);
    return p;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int read_bytes(const char *path, unsigned char *buf, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    return (int)got;
}

static int file_exists(const char *path) { return file_size(path) >= 0; }

/* ---------------------------------------------------------------- dtypes */

static void test_io_dtype_table(dm_t *t)
{
    static const char *names[] = { "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL" };
    static const int sizes[] = { 8, 4, 2, 2, 8, 4, 2, 1, 1, 1 };
    for (int i = 0; i < DM_DT_COUNT; i++) {
        CHECK(t, dm_dtype_parse(names[i]) == i, "%s parses to %d", names[i], dm_dtype_parse(names[i]));
        CHECK(t, strcmp(dm_dtypes[i].name, names[i]) == 0, "name %d is %s", i, dm_dtypes[i].name);
        CHECK(t, dm_dtypes[i].size == sizes[i], "%s size %d", names[i], dm_dtypes[i].size);
        CHECK(t, (dm_dtypes[i].to_f32 != NULL) == (i <= DM_DT_BF16), "%s converter", names[i]);
    }
    CHECK(t, dm_dtype_parse("f32") == -1, "dtype names are case sensitive");
    CHECK(t, dm_dtype_parse("F8_E4M3") == -1, "unknown dtype");
    CHECK(t, dm_dtype_parse(NULL) == -1, "NULL");
}

/* ---------------------------------------------------------------- safetensors write/read */

static void test_io_st_roundtrip(dm_t *t)
{
    float a[15], b[7], c[1] = { -3.25f };
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) b[i] = 1.0f / (float)(i + 1);
    dm_st_out outs[4] = {
        { .name = "layer.weight", .ndim = 2, .shape = { 3, 5 }, .data = a },
        { .name = "bias", .ndim = 1, .shape = { 7 }, .data = b },
        { .name = "scalar", .ndim = 0, .data = c },
        { .name = "empty", .ndim = 2, .shape = { 0, 4 }, .data = NULL },
    };
    const char *meta[] = { "format", "pt", "deepmoe.dim", "5" };
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.safetensors", dm_test_tmpdir());
    dm_error err = { 0 };
    CHECK_OK(t, dm_st_write(path, outs, 4, meta, 2, &err), &err);

    /* header length: 8 + N is a multiple of 8, and N covers the JSON + spaces */
    unsigned char head[512] = { 0 };
    int got = read_bytes(path, head, sizeof head - 1);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | head[i];
    CHECK(t, got > 8 && (8 + hl) % 8 == 0, "header length %llu", (unsigned long long)hl);
    CHECK(t, file_size(path) == (long)(8 + hl + (15 + 7 + 1) * 4), "file size %ld", file_size(path));
    const char *json = (const char *)head + 8;
    const char *meta_json = "{\"__metadata__\":{\"format\":\"pt\",\"deepmoe.dim\":\"5\"},";
    CHECK(t, strncmp(json, meta_json, strlen(meta_json)) == 0, "metadata first: %.60s", json);
    const char *pw = strstr(json, "\"layer.weight\""), *pb = strstr(json, "\"bias\""),
               *ps = strstr(json, "\"scalar\""), *pe = strstr(json, "\"empty\"");
    CHECK(t, pw && pb && ps && pe && pw < pb && pb < ps && ps < pe, "tensors in the given order");
    CHECK(t, strstr(json, "\"data_offsets\":[60,88]") != NULL, "offsets are integers: %s", json);
    /* after the JSON's closing brace, fewer than 8 spaces of padding */
    uint64_t close = hl;
    while (close > 0 && json[close - 1] == ' ') close--;
    CHECK(t, hl < sizeof head - 8 && close > 0 && json[close - 1] == '}' && hl - close < 8,
          "padding: %llu spaces", (unsigned long long)(hl - close));

    dm_st_file f;
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 4, "n_tensors %d", f.n_tensors);
    CHECK(t, f.n_meta == 2, "n_meta %d", f.n_meta);
    CHECK(t, dm_st_meta(&f, "format") && strcmp(dm_st_meta(&f, "format"), "pt") == 0, "meta format");
    CHECK(t, dm_st_meta(&f, "deepmoe.dim") && strcmp(dm_st_meta(&f, "deepmoe.dim"), "5") == 0, "meta dim");
    CHECK(t, dm_st_meta(&f, "absent") == NULL, "absent meta");
    CHECK(t, dm_st_find(&f, "absent") == NULL, "absent tensor");
    for (int i = 1; i < f.n_tensors; i++)
        CHECK(t, f.tensors[i - 1].begin <= f.tensors[i].begin, "sorted by offset at %d", i);

    const dm_st_tensor *tw = dm_st_find(&f, "layer.weight"), *tb = dm_st_find(&f, "bias"),
                       *ts = dm_st_find(&f, "scalar"), *te = dm_st_find(&f, "empty");
    CHECK(t, tw && tb && ts && te, "all tensors found");
    if (tw && tb && ts && te) {
        CHECK(t, tw->dtype == DM_DT_F32 && tw->ndim == 2 && tw->shape[0] == 3 && tw->shape[1] == 5 &&
                 tw->numel == 15 && tw->begin == 0 && tw->end == 60, "weight entry");
        CHECK(t, tb->ndim == 1 && tb->shape[0] == 7 && tb->numel == 7 && tb->begin == 60, "bias entry");
        CHECK(t, ts->ndim == 0 && ts->numel == 1, "scalar entry");
        CHECK(t, te->ndim == 2 && te->shape[0] == 0 && te->shape[1] == 4 && te->numel == 0 &&
                 te->begin == te->end, "empty entry");
        /* the data section starts 8-byte aligned within the (page-aligned) mapping */
        uintptr_t off = (uintptr_t)((const char *)tw->data - (const char *)f.map);
        CHECK(t, off % 8 == 0 && off == 8 + hl, "data section at %lu", (unsigned long)off);
        CHECK(t, memcmp(tw->data, a, sizeof a) == 0, "zero-copy weight bytes");
        float buf[15];
        CHECK_OK(t, dm_st_read_f32(&f, tw, buf, &err), &err);
        CHECK(t, memcmp(buf, a, sizeof a) == 0, "weight values");
        CHECK_OK(t, dm_st_read_f32(&f, tb, buf, &err), &err);
        CHECK(t, memcmp(buf, b, sizeof b) == 0, "bias values");
        CHECK_OK(t, dm_st_read_f32(&f, ts, buf, &err), &err);
        CHECK(t, buf[0] == -3.25f, "scalar %g", buf[0]);
        CHECK_OK(t, dm_st_read_f32(&f, te, NULL, &err), &err);
    }
    dm_st_close(&f);
    CHECK(t, f.map == NULL && f.tensors == NULL && f.n_tensors == 0 && f.path == NULL, "close zeroes");
    dm_st_close(&f);   /* twice is harmless */
}

/* Raw tensors of other dtypes (a weight type's stored values, int8 scales'
 * companions) are written as given and read back. */
static void test_io_st_write_raw_dtypes(dm_t *t)
{
    const uint16_t bf[3] = {0x3f80, 0xc000, 0x3e80};   /* 1, -2, 0.25 in bfloat16 */
    const int8_t q[4] = {-128, -1, 0, 127};
    float f32[2] = {0.5f, -7};
    dm_st_out outs[3] = {
        {.name = "w.bf16", .ndim = 1, .shape = {3}, .raw = bf, .dtype = DM_DT_BF16},
        {.name = "w.q", .ndim = 2, .shape = {2, 2}, .raw = q, .dtype = DM_DT_I8},
        {.name = "w.scales", .ndim = 1, .shape = {2}, .data = f32},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/raw.safetensors", dm_test_tmpdir());
    dm_error err = {0};
    CHECK_OK(t, dm_st_write(path, outs, 3, NULL, 0, &err), &err);
    dm_st_file f;
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    const dm_st_tensor *a = dm_st_find(&f, "w.bf16"), *b = dm_st_find(&f, "w.q"), *c = dm_st_find(&f, "w.scales");
    CHECK(t, a && b && c, "tensors present");
    if (a && b && c) {
        CHECK(t, a->dtype == DM_DT_BF16 && b->dtype == DM_DT_I8 && c->dtype == DM_DT_F32, "dtypes %d %d %d",
              a->dtype, b->dtype, c->dtype);
        float v[3];
        CHECK_OK(t, dm_st_read_f32(&f, a, v, &err), &err);
        CHECK(t, v[0] == 1 && v[1] == -2 && v[2] == 0.25f, "bf16 values %g %g %g", v[0], v[1], v[2]);
        CHECK(t, b->ndim == 2 && !memcmp(b->data, q, 4), "int8 bytes");
    }
    dm_st_close(&f);
    dm_st_out bad = {.name = "x", .ndim = 1, .shape = {1}, .raw = q, .dtype = DM_DT_COUNT};
    CHECK(t, dm_st_write(path, &bad, 1, NULL, 0, &err) == DM_ERR_ARG, "unknown dtype refused");
}

static void test_io_st_write_no_meta_and_order(dm_t *t)
{
    float z[2] = { 1, 2 }, a[3] = { 3, 4, 5 };
    dm_st_out outs[2] = {
        { .name = "z", .ndim = 1, .shape = { 2 }, .data = z },
        { .name = "a", .ndim = 1, .shape = { 3 }, .data = a },
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/nometa.safetensors", dm_test_tmpdir());
    dm_error err = { 0 };
    CHECK_OK(t, dm_st_write(path, outs, 2, NULL, 0, &err), &err);
    unsigned char head[256] = { 0 };
    read_bytes(path, head, sizeof head - 1);
    CHECK(t, strstr((char *)head + 8, "__metadata__") == NULL, "no empty metadata written");
    CHECK(t, strncmp((char *)head + 8, "{\"z\":", 5) == 0, "given order, not sorted: %s", (char *)head + 8);
    dm_st_file f;
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 2 && f.n_meta == 0, "%d tensors %d meta", f.n_tensors, f.n_meta);
    CHECK(t, f.n_tensors == 2 && strcmp(f.tensors[0].name, "z") == 0, "z first by offset");
    dm_st_close(&f);

    /* writing again replaces the file atomically, leaving no temp file */
    CHECK_OK(t, dm_st_write(path, outs + 1, 1, NULL, 0, &err), &err);
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 1 && dm_st_find(&f, "a") && !dm_st_find(&f, "z"), "overwritten");
    dm_st_close(&f);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    CHECK(t, !file_exists(tmp), "temp file removed");

    /* zero tensors and no metadata: "{}" padded to 8 */
    CHECK_OK(t, dm_st_write(path, NULL, 0, NULL, 0, &err), &err);
    CHECK(t, file_size(path) == 16, "empty file size %ld", file_size(path));
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 0 && f.n_meta == 0, "empty");
    dm_st_close(&f);
}

static void test_io_st_write_errors(dm_t *t)
{
    float x[4] = { 0 };
    char path[1024];
    snprintf(path, sizeof path, "%s/werr.safetensors", dm_test_tmpdir());
    const char *meta_null[] = { "k", NULL };
    const char *meta_dup[] = { "k", "1", "k", "2" };
    struct {
        const char *label;
        dm_st_out o[2];
        int n;
        const char *const *meta;
        int n_meta;
        const char *sub;
    } cases[] = {
        { "NULL name", { { .name = NULL, .ndim = 1, .shape = { 4 }, .data = x } }, 1, NULL, 0, "no name" },
        { "ndim 9", { { .name = "a", .ndim = 9, .data = x } }, 1, NULL, 0, "ndim 9" },
        { "ndim -1", { { .name = "a", .ndim = -1, .data = x } }, 1, NULL, 0, "ndim -1" },
        { "negative dim", { { .name = "a", .ndim = 2, .shape = { 2, -2 }, .data = x } }, 1, NULL, 0, "negative" },
        { "no data", { { .name = "a", .ndim = 1, .shape = { 4 }, .data = NULL } }, 1, NULL, 0, "no data" },
        { "dup name", { { .name = "a", .ndim = 1, .shape = { 1 }, .data = x },
                        { .name = "a", .ndim = 1, .shape = { 1 }, .data = x } }, 2, NULL, 0, "duplicate tensor 'a'" },
        { "reserved", { { .name = "__metadata__", .ndim = 1, .shape = { 1 }, .data = x } }, 1, NULL, 0,
          "__metadata__" },
        { "NULL meta", { { .name = "a", .ndim = 1, .shape = { 1 }, .data = x } }, 1, meta_null, 1, "metadata entry 0" },
        { "dup meta", { { .name = "a", .ndim = 1, .shape = { 1 }, .data = x } }, 1, meta_dup, 2, "duplicate metadata" },
        { "n < 0", { { .name = "a" } }, -1, NULL, 0, "bad tensor" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dm_error err = { 0 };
        dm_status s = dm_st_write(path, cases[i].o, cases[i].n, cases[i].meta, cases[i].n_meta, &err);
        expect_err(t, cases[i].label, s, &err, DM_ERR_ARG, cases[i].sub, path);
        CHECK(t, !file_exists(path), "%s: nothing written", cases[i].label);
    }
    dm_error err = { 0 };
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", dm_test_tmpdir());
    dm_st_out o = { .name = "a", .ndim = 1, .shape = { 4 }, .data = x };
    expect_err(t, "missing dir", dm_st_write(bad, &o, 1, NULL, 0, &err), &err, DM_ERR_IO, "No such file", bad);
    expect_err(t, "NULL path", dm_st_write(NULL, &o, 1, NULL, 0, &err), &err, DM_ERR_ARG, "NULL path", NULL);
}

/* F16/BF16/F64/F32 at odd offsets, built byte by byte: exercises the
 * unaligned little-endian converters (UBSan would flag a cast). */
static void test_io_st_half_floats(dm_t *t)
{
    static const uint16_t f16[5] = { 0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001 };
    static const float f16_want[5] = { 1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-8f };
    static const uint16_t bf16[4] = { 0x3F80, 0xC000, 0x4049, 0xFF80 };
    static const float bf16_want[4] = { 1.0f, -2.0f, 3.140625f, -INFINITY };
    static const double f64_want[2] = { 0.1, -1e30 };
    static const float f32_want[2] = { 1.5f, -0.25f };
    unsigned char data[64];
    size_t o = 0;
    data[o++] = 7;                                                  /* u8 at [0, 1) */
    for (int i = 0; i < 5; i++, o += 2) put_le(data + o, f16[i], 2); /* f16 at [1, 11) */
    for (int i = 0; i < 4; i++, o += 2) put_le(data + o, bf16[i], 2); /* bf16 at [11, 19) */
    for (int i = 0; i < 2; i++, o += 8) {                            /* f64 at [19, 35) */
        uint64_t u;
        memcpy(&u, &f64_want[i], 8);
        put_le(data + o, u, 8);
    }
    for (int i = 0; i < 2; i++, o += 4) {                            /* f32 at [35, 43) */
        uint32_t u;
        memcpy(&u, &f32_want[i], 4);
        put_le(data + o, u, 4);
    }
    for (int i = 0; i < 2; i++, o += 8) put_le(data + o, (uint64_t)(i + 40), 8); /* i64 at [43, 59) */
    const char *hdr =
        "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[1,11]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[11,19]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[19,35]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[35,43]},"
        "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[43,59]}}";
    const char *path = st_file("half.safetensors", hdr, data, o);
    dm_st_file f;
    dm_error err = { 0 };
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    float buf[8];
    const dm_st_tensor *th = dm_st_find(&f, "h"), *tb = dm_st_find(&f, "b"), *td = dm_st_find(&f, "d"),
                       *ts = dm_st_find(&f, "s"), *ti = dm_st_find(&f, "i"), *tu = dm_st_find(&f, "u");
    CHECK(t, th && tb && td && ts && ti && tu, "all found");
    if (th && tb && td && ts && ti && tu) {
        CHECK_OK(t, dm_st_read_f32(&f, th, buf, &err), &err);
        for (int i = 0; i < 5; i++) CHECK(t, buf[i] == f16_want[i], "f16[%d] %g want %g", i, buf[i], f16_want[i]);
        CHECK(t, tb->ndim == 2 && tb->shape[1] == 2, "bf16 shape");
        CHECK_OK(t, dm_st_read_f32(&f, tb, buf, &err), &err);
        for (int i = 0; i < 4; i++) CHECK(t, buf[i] == bf16_want[i], "bf16[%d] %g want %g", i, buf[i], bf16_want[i]);
        CHECK_OK(t, dm_st_read_f32(&f, td, buf, &err), &err);
        for (int i = 0; i < 2; i++) CHECK(t, buf[i] == (float)f64_want[i], "f64[%d] %g", i, buf[i]);
        CHECK_OK(t, dm_st_read_f32(&f, ts, buf, &err), &err);
        for (int i = 0; i < 2; i++) CHECK(t, buf[i] == f32_want[i], "f32[%d] %g", i, buf[i]);
        expect_err(t, "I64 read", dm_st_read_f32(&f, ti, buf, &err), &err, DM_ERR_UNSUPPORTED, "dtype I64", path);
        CHECK(t, strstr(err.msg, "'i'") != NULL, "names the tensor: %s", err.msg);
        expect_err(t, "U8 read", dm_st_read_f32(&f, tu, buf, &err), &err, DM_ERR_UNSUPPORTED, "dtype U8", path);
        CHECK(t, ((const unsigned char *)tu->data)[0] == 7, "u8 byte");
        CHECK(t, f.tensors[0].begin == 0 && f.tensors[5].begin == 43, "sorted by offset");
    }
    dm_st_close(&f);
}

/* As Python's writers may lay a file out: keys in another order inside
 * entries, __metadata__ last, entries not in offset order, no padding. */
static void test_io_st_foreign_layout(dm_t *t)
{
    float v[5] = { 1, 2, 3, 4, 5 };
    const char *hdr =
        "{\"second\": {\"data_offsets\": [8, 20], \"shape\": [3], \"dtype\": \"F32\"}, "
        "\"first\": {\"shape\": [1, 2], \"data_offsets\": [0, 8], \"dtype\": \"F32\"}, "
        "\"__metadata__\": {\"format\": \"pt\"}}";
    const char *path = st_file("foreign.safetensors", hdr, v, sizeof v);
    dm_st_file f;
    dm_error err = { 0 };
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 2 && f.n_meta == 1, "%d tensors %d meta", f.n_tensors, f.n_meta);
    if (f.n_tensors == 2) {
        CHECK(t, strcmp(f.tensors[0].name, "first") == 0 && strcmp(f.tensors[1].name, "second") == 0,
              "sorted by begin");
        float buf[3];
        CHECK_OK(t, dm_st_read_f32(&f, dm_st_find(&f, "second"), buf, &err), &err);
        CHECK(t, buf[0] == 3 && buf[1] == 4 && buf[2] == 5, "second values %g %g %g", buf[0], buf[1], buf[2]);
    }
    CHECK(t, dm_st_meta(&f, "format") && strcmp(dm_st_meta(&f, "format"), "pt") == 0, "meta last");
    dm_st_close(&f);

    /* the header padded with trailing spaces (what the Rust writer does) */
    const char *padded = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}      ";
    path = st_file("padded.safetensors", padded, v, 8);
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 1 && f.tensors[0].numel == 2, "padded header");
    dm_st_close(&f);

    /* "{}": valid, zero tensors */
    path = st_file("emptyobj.safetensors", "{}", NULL, 0);
    CHECK_OK(t, dm_st_open(path, &f, &err), &err);
    CHECK(t, f.n_tensors == 0 && f.n_meta == 0, "empty header");
    dm_st_close(&f);
}

typedef struct st_bad {
    const char *label;
    const char *header;
    size_t data_bytes;
    dm_status code;
    const char *sub;
} st_bad;

/* Every malformed header: status, a distinctive part of the message, one
 * line, the path named, and *f left closed. */
static void test_io_st_bad_headers(dm_t *t)
{
#define T1(shape, offs) "{\"a\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" offs "}}"
    static const st_bad cases[] = {
        { "zero header length", "", 0, DM_ERR_FORMAT, "header length is 0" },
        { "bad JSON", "{\"a\": {", 0, DM_ERR_FORMAT, "not valid JSON" },
        { "JSON position", "{\"a\" 1}", 0, DM_ERR_FORMAT, "column" },
        { "trailing garbage", "{} x", 0, DM_ERR_FORMAT, "not valid JSON" },
        { "duplicate keys", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DM_ERR_FORMAT,
          "duplicate" },
        { "huge integer", T1("[99999999999999999999]", "[0,4]"), 4, DM_ERR_FORMAT, "not valid JSON" },
        { "array header", "[1, 2]", 0, DM_ERR_FORMAT, "not a JSON object" },
        { "scalar header", "42", 0, DM_ERR_FORMAT, "not a JSON object" },
        { "entry not object", "{\"a\": 5}", 0, DM_ERR_FORMAT, "'a': entry is not an object" },
        { "no dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DM_ERR_FORMAT, "'a' has no \"dtype\"" },
        { "dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DM_ERR_FORMAT,
          "\"dtype\" is not a string" },
        { "unknown dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
          DM_ERR_UNSUPPORTED, "unknown dtype 'F8_E4M3'" },
        { "no shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, DM_ERR_FORMAT, "has no \"shape\"" },
        { "shape not array", T1("3", "[0,12]"), 12, DM_ERR_FORMAT, "\"shape\" is not an array" },
        { "negative dim", T1("[2,-1]", "[0,4]"), 4, DM_ERR_FORMAT, "shape[1] is not a non-negative integer" },
        { "float dim", T1("[2.0]", "[0,8]"), 8, DM_ERR_FORMAT, "shape[0] is not a non-negative integer" },
        { "string dim", T1("[\"2\"]", "[0,8]"), 8, DM_ERR_FORMAT, "shape[0] is not a non-negative integer" },
        { "numel overflow", T1("[4294967296,4294967296,4]", "[0,4]"), 4, DM_ERR_FORMAT, "count overflows" },
        { "bytes overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976,4],\"data_offsets\":[0,8]}}",
          8, DM_ERR_FORMAT, "byte size overflows" },
        { "too many dims", T1("[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, DM_ERR_UNSUPPORTED, "9 dims, at most 8" },
        { "no offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DM_ERR_FORMAT, "has no \"data_offsets\"" },
        { "one offset", T1("[1]", "[0]"), 4, DM_ERR_FORMAT, "not [begin, end]" },
        { "string offset", T1("[1]", "[\"0\",4]"), 4, DM_ERR_FORMAT, "not [begin, end]" },
        { "negative offset", T1("[1]", "[-4,0]"), 4, DM_ERR_FORMAT, "not [begin, end]" },
        { "offsets object", T1("[1]", "{}"), 4, DM_ERR_FORMAT, "not [begin, end]" },
        { "begin > end", T1("[0]", "[8,4]"), 8, DM_ERR_FORMAT, "begin 8 > end 4" },
        { "size mismatch", T1("[2,3]", "[0,20]"), 24, DM_ERR_FORMAT,
          "'a': shape [2, 3] x F32 needs 24 bytes but data_offsets span 20" },
        { "past data", T1("[4]", "[0,16]"), 8, DM_ERR_FORMAT, "past the end of the data section (8 bytes)" },
        { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, DM_ERR_FORMAT,
          "tensors 'a' [0, 8] and 'b' [4, 12] overlap" },
        { "nested overlap", "{\"big\":{\"dtype\":\"U8\",\"shape\":[12],\"data_offsets\":[0,12]},"
                            "\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
                            "\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}", 12, DM_ERR_FORMAT,
          "'big' [0, 12] and 'x'" },
        { "metadata array", "{\"__metadata__\":[1]}", 0, DM_ERR_FORMAT, "\"__metadata__\" is not an object" },
        { "metadata value", "{\"__metadata__\":{\"ok\":\"1\",\"k\":1}}", 0, DM_ERR_FORMAT,
          "metadata 'k' is not a string" },
    };
#undef T1
    static const unsigned char zeros[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        const char *path = st_file(name, cases[i].header, zeros, cases[i].data_bytes);
        dm_st_file f;
        dm_error err = { 0 };
        dm_status s = dm_st_open(path, &f, &err);
        expect_err(t, cases[i].label, s, &err, cases[i].code, cases[i].sub, path);
        CHECK(t, f.map == NULL && f.tensors == NULL && f.n_tensors == 0 && f.n_meta == 0 && f.path == NULL,
              "%s: f left closed", cases[i].label);
        dm_st_close(&f);
    }
}

static void test_io_st_bad_files(dm_t *t)
{
    dm_st_file f;
    dm_error err = { 0 };
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dm_test_tmpdir());
    expect_err(t, "missing", dm_st_open(missing, &f, &err), &err, DM_ERR_IO, "No such file", missing);
    CHECK(t, f.path == NULL && f.map == NULL, "closed after missing");

    const char *path = dm_test_write_file("empty.safetensors", "", 0);
    expect_err(t, "empty", dm_st_open(path, &f, &err), &err, DM_ERR_FORMAT, "file is 0 bytes, too short", path);
    path = dm_test_write_file("short.safetensors", "\x02\0\0\0\0", 5);
    expect_err(t, "short", dm_st_open(path, &f, &err), &err, DM_ERR_FORMAT, "file is 5 bytes, too short", path);

    unsigned char buf[18] = { 0 };
    put_le(buf, 1000, 8);
    memcpy(buf + 8, "{}        ", 10);
    path = dm_test_write_file("hlen.safetensors", buf, sizeof buf);
    expect_err(t, "header past end", dm_st_open(path, &f, &err), &err, DM_ERR_FORMAT,
               "header length 1000 exceeds the 10 bytes", path);
    put_le(buf, UINT64_MAX, 8);   /* must not wrap around in the bounds check */
    path = dm_test_write_file("hlenmax.safetensors", buf, sizeof buf);
    expect_err(t, "header length max", dm_st_open(path, &f, &err), &err, DM_ERR_FORMAT, "exceeds", path);

    expect_err(t, "directory", dm_st_open(dm_test_tmpdir(), &f, &err), &err, DM_ERR_IO, "not a regular file",
               dm_test_tmpdir());
    expect_err(t, "NULL path", dm_st_open(NULL, &f, &err), &err, DM_ERR_ARG, "NULL", NULL);
    dm_st_close(&f);
    dm_st_close(NULL);
}

/* ---------------------------------------------------------------- npy */

static void test_io_npy_roundtrip(dm_t *t)
{
    float x[15];
    for (int i = 0; i < 15; i++) x[i] = (float)i * 1.25f - 7.0f;
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.npy", dm_test_tmpdir());
    dm_error err = { 0 };
    CHECK_OK(t, dm_npy_write(path, x, 3, 5, &err), &err);

    /* byte for byte what numpy 1.24 writes for np.save(np.zeros((3,5),np.float32)) */
    unsigned char want[128];
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }";
    memcpy(want, "\x93NUMPY\x01\x00v\x00", 10);
    memset(want + 10, ' ', sizeof want - 10);
    memcpy(want + 10, dict, strlen(dict));
    want[127] = '\n';
    unsigned char got[128 + 60 + 1];
    CHECK(t, read_bytes(path, got, sizeof got) == 128 + 60, "file size %ld", file_size(path));
    CHECK(t, memcmp(got, want, 128) == 0, "header bytes differ from numpy's: %.118s", (char *)got + 10);
    CHECK(t, memcmp(got + 128, x, 60) == 0, "data bytes");

    dm_array a;
    CHECK_OK(t, dm_npy_read(path, &a, &err), &err);
    CHECK(t, a.rows == 3 && a.cols == 5, "shape %lld x %lld", (long long)a.rows, (long long)a.cols);
    CHECK(t, a.data && memcmp(a.data, x, sizeof x) == 0, "values");
    CHECK(t, ((uintptr_t)a.data % 64) == 0, "dm_alloc aligned");
    dm_array_free(&a);
    CHECK(t, a.data == NULL && a.rows == 0 && a.cols == 0, "free zeroes");
    dm_array_free(&a);
    dm_array_free(NULL);

    /* empty arrays and a long shape keep the 64-byte preamble rule */
    CHECK_OK(t, dm_npy_write(path, NULL, 0, 4, &err), &err);
    CHECK(t, file_size(path) == 128, "empty size %ld", file_size(path));
    CHECK_OK(t, dm_npy_read(path, &a, &err), &err);
    CHECK(t, a.rows == 0 && a.cols == 4 && a.data != NULL, "empty read");
    dm_array_free(&a);
    CHECK_OK(t, dm_npy_write(path, NULL, 1234567890123LL, 0, &err), &err);
    CHECK(t, file_size(path) == 128, "long-shape size %ld", file_size(path));
    CHECK_OK(t, dm_npy_read(path, &a, &err), &err);
    CHECK(t, a.rows == 1234567890123LL && a.cols == 0, "long shape read");
    dm_array_free(&a);
}

static void test_io_npy_variants(dm_t *t)
{
    float v[4] = { 1.5f, -2.0f, 0.25f, 1e-3f };
    dm_error err = { 0 };
    dm_array a;

    /* v2.0 and v3.0: u32 header length */
    const char *p = npy_file("v2.npy", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }   \n",
                             v, sizeof v);
    CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
    CHECK(t, a.rows == 2 && a.cols == 2 && a.data && memcmp(a.data, v, sizeof v) == 0, "v2.0");
    dm_array_free(&a);
    p = npy_file("v3.npy", 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1), }\n", v, sizeof v);
    CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
    CHECK(t, a.rows == 4 && a.cols == 1 && a.data && memcmp(a.data, v, sizeof v) == 0, "v3.0");
    dm_array_free(&a);

    /* 1-D reads as one row */
    p = npy_file("1d.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", v, sizeof v);
    CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
    CHECK(t, a.rows == 1 && a.cols == 4 && a.data && memcmp(a.data, v, sizeof v) == 0, "1-D");
    dm_array_free(&a);

    /* double quotes, other key order, no trailing comma, Python 2 'L' */
    p = npy_file("dq.npy", 1, "{\"shape\": (2L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}", v, sizeof v);
    CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
    CHECK(t, a.rows == 2 && a.cols == 2 && a.data && memcmp(a.data, v, sizeof v) == 0, "double quotes");
    dm_array_free(&a);

    /* float64 converts to float32 */
    double d[6] = { 0.1, -1.0 / 3.0, 1e10, -0.0, 3.5, 1e-40 };
    unsigned char db[48];
    for (int i = 0; i < 6; i++) {
        uint64_t u;
        memcpy(&u, &d[i], 8);
        put_le(db + 8 * i, u, 8);
    }
    p = npy_file("f8.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }\n", db, sizeof db);
    CHECK_OK(t, dm_npy_read(p, &a, &err), &err);
    CHECK(t, a.rows == 3 && a.cols == 2, "f8 shape");
    for (int i = 0; a.data && i < 6; i++) CHECK(t, a.data[i] == (float)d[i], "f8[%d] %g", i, a.data[i]);
    dm_array_free(&a);
}

typedef struct npy_bad {
    const char *label;
    int major;
    const char *dict;
    size_t data_bytes;
    dm_status code;
    const char *sub;
} npy_bad;

static void test_io_npy_bad_headers(dm_t *t)
{
#define D(descr, order, shape) "{'descr': " descr ", 'fortran_order': " order ", 'shape': " shape ", }\n"
    static const npy_bad cases[] = {
        { "complex", 1, D("'<c8'", "False", "(2, 2)"), 32, DM_ERR_UNSUPPORTED, "dtype '<c8' not supported" },
        { "big endian", 1, D("'>f4'", "False", "(2, 2)"), 16, DM_ERR_UNSUPPORTED, "dtype '>f4' not supported" },
        { "object", 1, D("'|O'", "False", "(2, 2)"), 16, DM_ERR_UNSUPPORTED, "dtype '|O'" },
        { "structured", 1, D("[('a', '<f4')]", "False", "(2,)"), 8, DM_ERR_UNSUPPORTED, "structured dtype" },
        { "fortran", 1, D("'<f4'", "True", "(2, 2)"), 16, DM_ERR_UNSUPPORTED, "Fortran order" },
        { "3-D", 1, D("'<f4'", "False", "(2, 2, 2)"), 32, DM_ERR_UNSUPPORTED, "shape has 3 dims" },
        { "0-D", 1, D("'<f4'", "False", "()"), 4, DM_ERR_UNSUPPORTED, "shape has 0 dims" },
        { "negative dim", 1, D("'<f4'", "False", "(-1, 2)"), 0, DM_ERR_FORMAT, "not a non-negative integer" },
        { "dim overflow", 1, D("'<f4'", "False", "(99999999999999999999, 1)"), 0, DM_ERR_FORMAT, "overflows" },
        { "shape overflow", 1, D("'<f4'", "False", "(4294967296, 4294967296)"), 0, DM_ERR_FORMAT, "too large" },
        { "order word", 1, D("'<f4'", "Falsey", "(2, 2)"), 16, DM_ERR_FORMAT, "not True or False" },
        { "shape not tuple", 1, D("'<f4'", "False", "[2, 2]"), 16, DM_ERR_FORMAT, "'shape' is not a tuple" },
        { "bad shape sep", 1, D("'<f4'", "False", "(2; 2)"), 16, DM_ERR_FORMAT, "expected ',' or ')'" },
        { "descr not str", 1, D("4", "False", "(2, 2)"), 16, DM_ERR_FORMAT, "'descr' is not a string" },
        { "extra key", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4, DM_ERR_FORMAT,
          "unexpected key 'x'" },
        { "repeated key", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4,
          DM_ERR_FORMAT, "key 'descr' repeated" },
        { "missing shape", 1, "{'descr': '<f4', 'fortran_order': False}", 0, DM_ERR_FORMAT, "no 'shape' key" },
        { "missing descr", 1, "{'fortran_order': False, 'shape': (1,)}", 4, DM_ERR_FORMAT, "no 'descr' key" },
        { "no colon", 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", 4, DM_ERR_FORMAT,
          "expected ':'" },
        { "unquoted key", 1, "{descr: '<f4'}", 4, DM_ERR_FORMAT, "expected a quoted key" },
        { "unterminated", 1, "{'descr': '<f4", 4, DM_ERR_FORMAT, "'descr' is not a string" },
        { "no brace", 1, "'descr': '<f4'", 4, DM_ERR_FORMAT, "does not start with '{'" },
        { "no close", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) ", 4, DM_ERR_FORMAT,
          "expected ',' or '}'" },
        { "junk after", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", 4, DM_ERR_FORMAT,
          "unexpected text after the dict" },
        { "garbage", 1, "\x01\x02garbage\xff", 4, DM_ERR_FORMAT, "bad header" },
        { "version 4", 4, D("'<f4'", "False", "(1,)"), 4, DM_ERR_UNSUPPORTED, "version 4.0" },
        { "truncated data", 1, D("'<f4'", "False", "(2, 3)"), 16, DM_ERR_FORMAT,
          "data is 16 bytes, shape (2, 3) needs 24" },
        { "trailing data", 1, D("'<f4'", "False", "(2, 3)"), 28, DM_ERR_FORMAT,
          "data is 28 bytes, shape (2, 3) needs 24" },
        { "truncated 1-D f8", 1, D("'<f8'", "False", "(3,)"), 20, DM_ERR_FORMAT, "data is 20 bytes, shape (3,) needs 24" },
    };
#undef D
    static const unsigned char zeros[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.npy", i);
        const char *path = npy_file(name, cases[i].major, cases[i].dict, zeros, cases[i].data_bytes);
        dm_array a = { .rows = 9, .cols = 9 };
        dm_error err = { 0 };
        dm_status s = dm_npy_read(path, &a, &err);
        expect_err(t, cases[i].label, s, &err, cases[i].code, cases[i].sub, path);
        CHECK(t, a.data == NULL && a.rows == 0 && a.cols == 0, "%s: out zeroed", cases[i].label);
        dm_array_free(&a);
    }
}

static void test_io_npy_bad_files(dm_t *t)
{
    dm_array a;
    dm_error err = { 0 };
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/missing.npy", dm_test_tmpdir());
    expect_err(t, "missing", dm_npy_read(missing, &a, &err), &err, DM_ERR_IO, "No such file", missing);

    const char *p = dm_test_write_file("magic.npy", "\x93NUMPX\x01\x00\x10\x00{}", 12);
    expect_err(t, "bad magic", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT, "bad magic", p);
    p = dm_test_write_file("tiny.npy", "PK", 2);
    expect_err(t, "tiny", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT, "bad magic", p);
    p = dm_test_write_file("nolen.npy", "\x93NUMPY\x01\x00\x10", 9);
    expect_err(t, "no length", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT, "no header length", p);

    /* header declares 118 bytes, the file ends after 20 */
    unsigned char buf[30];
    static const char trunc[] = "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fo";
    memcpy(buf, trunc, sizeof trunc - 1);
    p = dm_test_write_file("trunchdr.npy", buf, sizeof buf);
    expect_err(t, "truncated header", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT,
               "header truncated: 118 bytes declared, 20 present", p);

    /* v2.0 with a huge declared header length */
    memcpy(buf, "\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12);
    p = dm_test_write_file("hugehdr.npy", buf, 12);
    expect_err(t, "huge header", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT, "implausibly large", p);

    /* a shape far larger than the file is refused before allocating */
    p = npy_file("lie.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }", "", 0);
    expect_err(t, "lying shape", dm_npy_read(p, &a, &err), &err, DM_ERR_FORMAT,
               "data is 0 bytes, shape (1000000000, 1000) needs 4000000000000", p);
    expect_err(t, "directory", dm_npy_read(dm_test_tmpdir(), &a, &err), &err, DM_ERR_IO, "is a directory",
               dm_test_tmpdir());
    expect_err(t, "NULL", dm_npy_read(NULL, &a, &err), &err, DM_ERR_ARG, "NULL", NULL);
}

/* Reads a .npy served through a FIFO by a child process: a stream with no
 * size, so the reader's short-read and trailing-byte checks are what decide. */
static dm_status read_via_fifo(const char *path, const void *bytes, size_t n, dm_array *a, dm_error *err)
{
    unlink(path);
    if (mkfifo(path, 0600) != 0) return dm_fail(err, DM_ERR_IO, "mkfifo failed");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return dm_fail(err, DM_ERR_IO, "fork failed");
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        int fd = open(path, O_WRONLY);
        if (fd >= 0) {
            ssize_t w = write(fd, bytes, n);   /* the reader may stop early: SIGPIPE ends us */
            (void)w;
            close(fd);
        }
        _exit(0);
    }
    dm_status s = dm_npy_read(path, a, err);
    int status;
    waitpid(pid, &status, 0);
    unlink(path);
    return s;
}

static void test_io_npy_stream(dm_t *t)
{
    static const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    unsigned char buf[128 + 28];
    size_t dl = sizeof dict - 1, pre = 10 + dl;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    put_le(buf + 8, dl, 2);
    memcpy(buf + 10, dict, dl);
    float v[7] = { 1, 2, 3, 4, 5, 6, 7 };
    memcpy(buf + pre, v, sizeof v);
    char path[1024];
    snprintf(path, sizeof path, "%s/stream.npy", dm_test_tmpdir());
    dm_array a;
    dm_error err = { 0 };
    CHECK_OK(t, read_via_fifo(path, buf, pre + 24, &a, &err), &err);
    CHECK(t, a.rows == 2 && a.cols == 3 && a.data && memcmp(a.data, v, 24) == 0, "streamed read");
    dm_array_free(&a);
    expect_err(t, "stream truncated", read_via_fifo(path, buf, pre + 16, &a, &err), &err, DM_ERR_FORMAT,
               "data is 16 bytes, shape (2, 3) needs 24", path);
    CHECK(t, a.data == NULL, "out zeroed");
    expect_err(t, "stream trailing", read_via_fifo(path, buf, pre + 28, &a, &err), &err, DM_ERR_FORMAT,
               "data is more than 24 bytes, shape (2, 3) needs 24", path);
    CHECK(t, a.data == NULL, "out zeroed");
}

static void test_io_npy_write_errors(dm_t *t)
{
    float x[4] = { 0 };
    dm_error err = { 0 };
    char path[1024], bad[1100];
    snprintf(path, sizeof path, "%s/werr.npy", dm_test_tmpdir());
    expect_err(t, "negative", dm_npy_write(path, x, -1, 2, &err), &err, DM_ERR_ARG, "negative shape (-1, 2)", path);
    expect_err(t, "NULL data", dm_npy_write(path, NULL, 2, 2, &err), &err, DM_ERR_ARG, "NULL data", path);
    expect_err(t, "overflow", dm_npy_write(path, x, INT64_MAX, 2, &err), &err, DM_ERR_ARG, "too large", path);
    CHECK(t, !file_exists(path), "nothing written");
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.npy", dm_test_tmpdir());
    expect_err(t, "missing dir", dm_npy_write(bad, x, 2, 2, &err), &err, DM_ERR_IO, "No such file", bad);
    expect_err(t, "NULL path", dm_npy_write(NULL, x, 2, 2, &err), &err, DM_ERR_ARG, "NULL path", NULL);
}

void suite_io(dm_t *t)
{
    DM_RUN(t, test_io_dtype_table);
    DM_RUN(t, test_io_st_roundtrip);
    DM_RUN(t, test_io_st_write_no_meta_and_order);
    DM_RUN(t, test_io_st_write_raw_dtypes);
    DM_RUN(t, test_io_st_write_errors);
    DM_RUN(t, test_io_st_half_floats);
    DM_RUN(t, test_io_st_foreign_layout);
    DM_RUN(t, test_io_st_bad_headers);
    DM_RUN(t, test_io_st_bad_files);
    DM_RUN(t, test_io_npy_roundtrip);
    DM_RUN(t, test_io_npy_variants);
    DM_RUN(t, test_io_npy_bad_headers);
    DM_RUN(t, test_io_npy_bad_files);
    DM_RUN(t, test_io_npy_stream);
    DM_RUN(t, test_io_npy_write_errors);
}
