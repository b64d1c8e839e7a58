/* infer_codec.c - KServe v2 / Triton inference request parsing (JSON and the
 * binary tensor data extension) into float32 tensors, and response / error
 * body building. Protocol: ../shared/research/serving.md sections 0-2. */
#include "deepmoe.h"
#include "serve/infer_codec.h"
#include "base/base.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IC_MAX_DEPTH 100

/* ---------------------------------------------------------------- datatypes */

enum { K_FLOAT, K_INT, K_UINT, K_F16, K_BF16, K_BOOL, K_BYTES };

typedef struct ic_type {
    const char *name;
    size_t size;
    int kind;
    int64_t min, max;       /* integer kinds: the JSON value range */
} ic_type;

static const ic_type IC_TYPES[] = {
    {"FP32", 4, K_FLOAT, 0, 0},
    {"FP64", 8, K_FLOAT, 0, 0},
    {"FP16", 2, K_F16, 0, 0},
    {"BF16", 2, K_BF16, 0, 0},
    {"INT8", 1, K_INT, INT8_MIN, INT8_MAX},
    {"INT16", 2, K_INT, INT16_MIN, INT16_MAX},
    {"INT32", 4, K_INT, INT32_MIN, INT32_MAX},
    {"INT64", 8, K_INT, INT64_MIN, INT64_MAX},
    {"UINT8", 1, K_UINT, 0, UINT8_MAX},
    {"UINT16", 2, K_UINT, 0, UINT16_MAX},
    {"UINT32", 4, K_UINT, 0, UINT32_MAX},
    {"UINT64", 8, K_UINT, 0, INT64_MAX},
    {"BOOL", 1, K_BOOL, 0, 1},
    {"BYTES", 0, K_BYTES, 0, 0},
};

static const ic_type *ic_type_find(const char *name)
{
    for (size_t i = 0; i < sizeof IC_TYPES / sizeof IC_TYPES[0]; i++)
        if (!strcmp(IC_TYPES[i].name, name)) return &IC_TYPES[i];
    return NULL;
}

size_t dm_infer_datatype_size(const char *datatype)
{
    const ic_type *ty = datatype ? ic_type_find(datatype) : NULL;
    return ty ? ty->size : 0;
}

static float ic_d2f(double d)
{
    if (d > FLT_MAX) return INFINITY;
    if (d < -FLT_MAX) return -INFINITY;
    return (float)d;
}

static uint64_t ic_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Converts numel little-endian elements of type ty at p to float. */
static void ic_decode(const ic_type *ty, const unsigned char *p, int64_t numel, float *out)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (ty->kind == K_FLOAT && ty->size == 4) {   /* FP32 on a little-endian host: the bytes as they are */
        memcpy(out, p, (size_t)numel * 4);
        return;
    }
#endif
    for (int64_t i = 0; i < numel; i++, p += ty->size) {
        uint64_t v = ic_le(p, ty->size);
        switch (ty->kind) {
        case K_FLOAT:
            if (ty->size == 4) {
                uint32_t u = (uint32_t)v;
                memcpy(&out[i], &u, 4);
            } else {
                double d;
                memcpy(&d, &v, 8);
                out[i] = ic_d2f(d);
            }
            break;
        case K_F16: out[i] = dm_f16_to_f32((uint16_t)v); break;
        case K_BF16: out[i] = dm_bf16_to_f32((uint16_t)v); break;
        case K_INT: {
            int sh = 64 - 8 * (int)ty->size;  /* sign-extend */
            int64_t s = sh ? (int64_t)(v << sh) >> sh : (int64_t)v;
            out[i] = (float)s;
            break;
        }
        default: out[i] = (float)v; break;
        }
    }
}

/* ------------------------------------------------------------------- parsing */

/* Elements of a shape, for the parser and the response builder alike: 0 when
 * any dim is 0 (whatever the others), else the product, which must stay under
 * INT64_MAX / 16 so that its byte count (8-byte types, with headroom) fits.
 * -1 for a negative dim or a product past that bound. */
#define IC_NUMEL_MAX (INT64_MAX / 16)
static int64_t ic_shape_numel(const int64_t *shape, int ndims)
{
    for (int i = 0; i < ndims; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) return 0;
    }
    int64_t n = 1;
    for (int i = 0; i < ndims; i++) {
        if (n > IC_NUMEL_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

static void ic_shape_str(const int64_t *shape, int ndims, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = 0;
    k += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndims && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? "," : "", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* Checks a parameters object: values string/number/bool, no "triton_" keys. */
static dm_status ic_check_params(json_t *params, const char *where, dm_error *err)
{
    if (!json_is_object(params)) return dm_fail(err, DM_ERR_FORMAT, "%s: 'parameters' must be an object", where);
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v) {
        if (!strncmp(key, "triton_", 7))
            return dm_fail(err, DM_ERR_FORMAT,
                           "%s: parameter keys starting with 'triton_' are reserved for Triton usage and should "
                           "not be specified ('%s')", where, key);
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
            return dm_fail(err, DM_ERR_FORMAT, "%s: parameter '%s' must be a string, number or bool", where, key);
    }
    return DM_OK;
}

typedef struct ic_walk {
    const ic_type *ty;
    const char *name;
    float *out;
    int64_t numel, count;
} ic_walk;

static dm_status ic_walk_leaves(ic_walk *w, json_t *v, int depth, dm_error *err)
{
    if (json_is_array(v)) {
        if (depth >= IC_MAX_DEPTH)
            return dm_fail(err, DM_ERR_FORMAT, "input '%s': 'data' is nested deeper than %d", w->name,
                           IC_MAX_DEPTH);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            dm_status s = ic_walk_leaves(w, e, depth + 1, err);
            if (s) return s;
        }
        return DM_OK;
    }
    float f;
    if (w->ty->kind == K_FLOAT) {
        if (!json_is_number(v))
            return dm_fail(err, DM_ERR_FORMAT, "input '%s': 'data' must hold numbers (element %" PRId64 ")",
                           w->name, w->count);
        f = ic_d2f(json_number_value(v));
    } else {
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (!json_is_integer(v) || x < w->ty->min || x > w->ty->max)
            return dm_fail(err, DM_ERR_FORMAT,
                           "input '%s': 'data' must hold %s integers in range (element %" PRId64 ")", w->name,
                           w->ty->name, w->count);
        f = (float)x;
    }
    if (w->out && w->count < w->numel) w->out[w->count] = f;
    w->count++;
    return DM_OK;
}

/* Parses one input object into t; *cursor is the next unread binary byte. */
static dm_status ic_parse_input(json_t *in, int idx, const unsigned char *body, size_t len, size_t *cursor,
                                dm_infer_tensor *t, dm_error *err)
{
    if (!json_is_object(in)) return dm_fail(err, DM_ERR_FORMAT, "inputs[%d] must be an object", idx);
    json_t *jn = json_object_get(in, "name");
    if (!json_is_string(jn) || !json_string_length(jn))
        return dm_fail(err, DM_ERR_FORMAT, "inputs[%d]: missing or invalid 'name'", idx);
    if (json_string_length(jn) >= sizeof t->name)
        return dm_fail(err, DM_ERR_FORMAT, "inputs[%d]: name longer than %zu bytes", idx, sizeof t->name - 1);
    snprintf(t->name, sizeof t->name, "%s", json_string_value(jn));

    json_t *jd = json_object_get(in, "datatype");
    if (!json_is_string(jd))
        return dm_fail(err, DM_ERR_FORMAT, "input '%s': missing or invalid 'datatype'", t->name);
    const ic_type *ty = ic_type_find(json_string_value(jd));
    if (!ty)
        return dm_fail(err, DM_ERR_FORMAT, "input '%s': invalid datatype '%.32s'", t->name, json_string_value(jd));
    if (ty->kind == K_BOOL || ty->kind == K_BYTES)
        return dm_fail(err, DM_ERR_FORMAT, "input '%s': datatype %s is not supported (numeric inputs only)",
                       t->name, ty->name);
    snprintf(t->datatype, sizeof t->datatype, "%s", ty->name);

    json_t *js = json_object_get(in, "shape");
    if (!json_is_array(js)) return dm_fail(err, DM_ERR_FORMAT, "input '%s': missing or invalid 'shape'", t->name);
    if (json_array_size(js) > DM_INFER_MAX_DIMS)
        return dm_fail(err, DM_ERR_FORMAT, "input '%s': shape has more than %d dims", t->name, DM_INFER_MAX_DIMS);
    t->ndims = (int)json_array_size(js);
    for (int i = 0; i < t->ndims; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return dm_fail(err, DM_ERR_FORMAT, "input '%s': shape entries must be non-negative integers", t->name);
        t->shape[i] = json_integer_value(d);
    }
    int64_t numel = ic_shape_numel(t->shape, t->ndims);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / sizeof(float) / 2)
        return dm_fail(err, DM_ERR_FORMAT, "input '%s': shape is too large", t->name);
    t->numel = numel;

    json_t *params = json_object_get(in, "parameters"), *bds = NULL;
    char where[160];
    snprintf(where, sizeof where, "input '%s'", t->name);
    if (params) {
        dm_status s = ic_check_params(params, where, err);
        if (s) return s;
        bds = json_object_get(params, "binary_data_size");
        if (json_object_get(params, "shared_memory_region"))
            return dm_fail(err, DM_ERR_FORMAT, "input '%s': shared memory inputs are not supported", t->name);
    }
    json_t *data = json_object_get(in, "data");
    if (data && bds)
        return dm_fail(err, DM_ERR_FORMAT, "input '%s' has both 'data' and 'binary_data_size'", t->name);
    if (!data && !bds)
        return dm_fail(err, DM_ERR_FORMAT,
                       "must specify valid 'data' field or 'binary_data_size' parameter for input '%s'", t->name);

    /* The bound above makes numel * 8 fit; it can still be too large to allocate, which is NOMEM. */
    if (bds) {
        if (!json_is_integer(bds) || json_integer_value(bds) < 0)
            return dm_fail(err, DM_ERR_FORMAT, "input '%s': 'binary_data_size' must be a non-negative integer",
                           t->name);
        uint64_t want = (uint64_t)numel * ty->size, got = (uint64_t)json_integer_value(bds);
        if (got != want)
            return dm_fail(err, DM_ERR_FORMAT,
                           "unexpected binary_data_size for input '%s': got %" PRIu64 ", expected %" PRIu64
                           " (%" PRId64 " elements of %s)", t->name, got, want, numel, ty->name);
        if (got > len - *cursor)
            return dm_fail(err, DM_ERR_FORMAT,
                           "binary data for input '%s' runs past the end of the request body (%" PRIu64
                           " bytes at offset %zu, body is %zu bytes)", t->name, got, *cursor, len);
        t->f32 = malloc((size_t)(numel ? numel : 1) * sizeof(float));
        if (!t->f32) return dm_fail(err, DM_ERR_NOMEM, "input '%s': out of memory", t->name);
        ic_decode(ty, body + *cursor, numel, t->f32);
        *cursor += (size_t)got;
        return DM_OK;
    }

    if (ty->kind == K_F16 || ty->kind == K_BF16)
        return dm_fail(err, DM_ERR_FORMAT,
                       "receiving %s data via JSON is not supported. Please use the binary data format for input %s",
                       ty->name, t->name);
    /* The declared shape is believed only as far as the body can back it: a
     * JSON value takes at least two bytes ("1,"), so a body of len bytes holds
     * at most (len + 1) / 2 of them. Past that nothing is allocated (the walk
     * only counts, for the message); within it the allocation is bounded by
     * the body's length, and one walk checks and fills. */
    int fits = (uint64_t)numel <= ((uint64_t)len + 1) / 2;
    if (fits) {
        t->f32 = malloc((size_t)(numel ? numel : 1) * sizeof(float));
        if (!t->f32) return dm_fail(err, DM_ERR_NOMEM, "input '%s': out of memory", t->name);
    }
    ic_walk w = {ty, t->name, t->f32, numel, 0};
    dm_status s = ic_walk_leaves(&w, data, 0, err);
    if (s) return s;
    if (w.count != numel) {
        char sh[160];
        ic_shape_str(t->shape, t->ndims, sh, sizeof sh);
        return dm_fail(err, DM_ERR_FORMAT,
                       "unexpected number of elements for input '%s': got %" PRId64 ", shape %s needs %" PRId64,
                       t->name, w.count, sh, numel);
    }
    return DM_OK;
}

static dm_status ic_parse_outputs(json_t *outs, dm_infer_request *req, dm_error *err)
{
    if (!json_is_array(outs)) return dm_fail(err, DM_ERR_FORMAT, "'outputs' must be an array");
    if (json_array_size(outs) > DM_INFER_MAX_TENSORS)
        return dm_fail(err, DM_ERR_FORMAT, "too many outputs requested (%zu, at most %d)", json_array_size(outs),
                       DM_INFER_MAX_TENSORS);
    size_t i;
    json_t *o;
    json_array_foreach(outs, i, o) {
        if (!json_is_object(o)) return dm_fail(err, DM_ERR_FORMAT, "outputs[%zu] must be an object", i);
        json_t *jn = json_object_get(o, "name");
        if (!json_is_string(jn) || !json_string_length(jn))
            return dm_fail(err, DM_ERR_FORMAT, "outputs[%zu]: missing or invalid 'name'", i);
        if (json_string_length(jn) >= sizeof req->output_names[0])
            return dm_fail(err, DM_ERR_FORMAT, "outputs[%zu]: name longer than %zu bytes", i,
                           sizeof req->output_names[0] - 1);
        const char *name = json_string_value(jn);
        for (int k = 0; k < req->n_outputs; k++)
            if (!strcmp(req->output_names[k], name))
                return dm_fail(err, DM_ERR_FORMAT, "output '%s' is requested more than once", name);
        snprintf(req->output_names[req->n_outputs], sizeof req->output_names[0], "%s", name);
        int binary = -1;
        json_t *params = json_object_get(o, "parameters");
        if (params) {
            char where[160];
            snprintf(where, sizeof where, "output '%s'", name);
            dm_status s = ic_check_params(params, where, err);
            if (s) return s;
            json_t *b = json_object_get(params, "binary_data");
            if (b) {
                if (!json_is_boolean(b))
                    return dm_fail(err, DM_ERR_FORMAT, "output '%s': 'binary_data' must be a bool", name);
                binary = json_is_true(b);
            }
            if (json_object_get(params, "classification"))
                return dm_fail(err, DM_ERR_FORMAT, "output '%s': classification is not supported", name);
            if (json_object_get(params, "shared_memory_region"))
                return dm_fail(err, DM_ERR_FORMAT, "output '%s': shared memory outputs are not supported", name);
        }
        req->output_binary[req->n_outputs++] = binary;
    }
    return DM_OK;
}

static dm_status ic_parse_json(json_t *root, const unsigned char *body, size_t len, size_t json_len,
                               dm_infer_request *req, dm_error *err)
{
    if (!json_is_object(root)) return dm_fail(err, DM_ERR_FORMAT, "inference request must be a JSON object");
    json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) return dm_fail(err, DM_ERR_FORMAT, "'id' must be a string");
        if (json_string_length(id) >= sizeof req->id)
            return dm_fail(err, DM_ERR_FORMAT, "'id' longer than %zu bytes", sizeof req->id - 1);
        snprintf(req->id, sizeof req->id, "%s", json_string_value(id));
    }
    json_t *params = json_object_get(root, "parameters");
    if (params) {
        dm_status s = ic_check_params(params, "request", err);
        if (s) return s;
        json_t *t = json_object_get(params, "timeout");
        if (t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0)
                return dm_fail(err, DM_ERR_FORMAT, "request parameter 'timeout' must be a non-negative integer");
            req->timeout_us = json_integer_value(t);
        }
        json_t *b = json_object_get(params, "binary_data_output");
        if (b) {
            if (!json_is_boolean(b))
                return dm_fail(err, DM_ERR_FORMAT, "request parameter 'binary_data_output' must be a bool");
            req->binary_data_output = json_is_true(b);
        }
        json_t *p = json_object_get(params, "priority");
        if (p && (!json_is_integer(p) || json_integer_value(p) < 0))
            return dm_fail(err, DM_ERR_FORMAT, "request parameter 'priority' must be a non-negative integer");
    }
    json_t *ins = json_object_get(root, "inputs");
    if (!json_is_array(ins)) return dm_fail(err, DM_ERR_FORMAT, "missing or invalid 'inputs' array");
    if (json_array_size(ins) == 0) return dm_fail(err, DM_ERR_FORMAT, "'inputs' must not be empty");
    if (json_array_size(ins) > DM_INFER_MAX_TENSORS)
        return dm_fail(err, DM_ERR_FORMAT, "too many inputs (%zu, at most %d)", json_array_size(ins),
                       DM_INFER_MAX_TENSORS);
    size_t cursor = json_len;
    for (size_t i = 0; i < json_array_size(ins); i++) {
        dm_infer_tensor *t = &req->inputs[req->n_inputs];
        dm_status s = ic_parse_input(json_array_get(ins, i), (int)i, body, len, &cursor, t, err);
        if (t->f32) req->n_inputs++;  /* owned from here on, freed by the caller on failure */
        if (s) return s;
        for (int k = 0; k + 1 < req->n_inputs; k++)
            if (!strcmp(req->inputs[k].name, t->name))
                return dm_fail(err, DM_ERR_FORMAT, "input '%s' is given more than once", t->name);
    }
    if (cursor != len)
        return dm_fail(err, DM_ERR_FORMAT, "unexpected %zu bytes of binary data after the last input", len - cursor);
    json_t *outs = json_object_get(root, "outputs");
    if (outs) return ic_parse_outputs(outs, req, err);
    return DM_OK;
}

dm_status dm_infer_parse(const char *body, size_t len, int64_t header_len, dm_infer_request *req, dm_error *err)
{
    memset(req, 0, sizeof *req);
    if (header_len < -1 || (header_len >= 0 && (uint64_t)header_len > len))
        return dm_fail(err, DM_ERR_FORMAT,
                       "Inference-Header-Content-Length %" PRId64 " is outside [0, %zu] (the body length)",
                       header_len, len);
    if (header_len == 0) {
        req->raw_binary = 1;
        req->binary_data_output = 1;
        return DM_OK;
    }
    if (!body) return dm_fail(err, DM_ERR_FORMAT, "empty request body");
    size_t json_len = header_len < 0 ? len : (size_t)header_len;
    json_error_t jerr;
    json_t *root = json_loadb(body, json_len, 0, &jerr);
    if (!root)
        return dm_fail(err, DM_ERR_FORMAT, "failed to parse the request JSON: %s (line %d, column %d)", jerr.text,
                       jerr.line, jerr.column);
    dm_status s = ic_parse_json(root, (const unsigned char *)body, len, json_len, req, err);
    json_decref(root);
    if (s) {
        dm_infer_request_free(req);
        req->n_inputs = 0;
    }
    return s;
}

dm_status dm_infer_parse_memo(dm_infer_memo *m, const char *body, size_t len, int64_t header_len,
                              dm_infer_request *req, dm_error *err)
{
    if (!m || header_len <= 0 || !body || (uint64_t)header_len > len) return dm_infer_parse(body, len, header_len, req, err);
    size_t jl = (size_t)header_len;
    if (m->json && m->json_len == jl && m->body_len == len && !memcmp(m->json, body, jl)) {
        *req = m->req;
        size_t at = jl;
        for (int i = 0; i < req->n_inputs; i++) {
            dm_infer_tensor *t = &req->inputs[i];
            const ic_type *ty = ic_type_find(t->datatype);
            t->f32 = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
            if (!t->f32) {
                dm_infer_request_free(req);
                req->n_inputs = 0;
                return dm_fail(err, DM_ERR_NOMEM, "input '%s': out of memory", t->name);
            }
            ic_decode(ty, (const unsigned char *)body + at, t->numel, t->f32);
            at += (size_t)t->numel * ty->size;
        }
        return DM_OK;
    }
    dm_status st = dm_infer_parse(body, len, header_len, req, err);
    if (st) return st;
    /* kept when every input's data is binary: their sizes then fill the tail exactly */
    size_t tail = 0;
    for (int i = 0; i < req->n_inputs; i++)
        tail += (size_t)req->inputs[i].numel * ic_type_find(req->inputs[i].datatype)->size;
    if (tail != len - jl) return DM_OK;
    char *copy = malloc(jl);
    if (!copy) return DM_OK;   /* not kept: the answer stands */
    memcpy(copy, body, jl);
    free(m->json);
    m->json = copy;
    m->json_len = jl;
    m->body_len = len;
    m->req = *req;
    for (int i = 0; i < DM_INFER_MAX_TENSORS; i++) m->req.inputs[i].f32 = NULL;
    return DM_OK;
}

void dm_infer_memo_free(dm_infer_memo *m)
{
    if (!m) return;
    free(m->json);
    memset(m, 0, sizeof *m);
}

dm_status dm_infer_parse_raw(const char *body, size_t len, const char *name, const char *datatype,
                             const int64_t *dims, int ndims, dm_infer_request *req, dm_error *err)
{
    memset(req, 0, sizeof *req);
    req->raw_binary = 1;
    req->binary_data_output = 1;
    if (!name || !*name || strlen(name) >= sizeof req->inputs[0].name)
        return dm_fail(err, DM_ERR_ARG, "raw binary request: invalid input name");
    if (ndims < 0 || ndims > DM_INFER_MAX_DIMS - 1 || (ndims && !dims))
        return dm_fail(err, DM_ERR_ARG, "raw binary request: invalid dims (%d)", ndims);
    const ic_type *ty = datatype ? ic_type_find(datatype) : NULL;
    if (!ty || ty->kind == K_BOOL || ty->kind == K_BYTES)
        return dm_fail(err, DM_ERR_FORMAT, "raw binary request: datatype %s of input '%s' is not supported",
                       datatype ? datatype : "(null)", name);
    if (len % ty->size)
        return dm_fail(err, DM_ERR_FORMAT, "raw binary request: %zu bytes is not a whole number of %s elements",
                       len, ty->name);
    dm_infer_tensor *t = &req->inputs[0];
    int64_t have = (int64_t)(len / ty->size), known = 1;
    int var = -1;
    t->ndims = ndims + 1;
    t->shape[0] = 1;
    for (int i = 0; i < ndims; i++) {
        if (dims[i] == -1 && var < 0) {
            var = i;
        } else if (dims[i] < 0) {
            return dm_fail(err, DM_ERR_FORMAT, "raw binary request: input '%s' has more than one variable dim",
                           name);
        } else {
            if (dims[i] && known > INT64_MAX / dims[i])
                return dm_fail(err, DM_ERR_FORMAT, "raw binary request: dims too large");
            known *= dims[i];
        }
        t->shape[i + 1] = dims[i];
    }
    if (var >= 0) {
        if (known == 0 ? have != 0 : have % known)
            return dm_fail(err, DM_ERR_FORMAT,
                           "raw binary request: %" PRId64 " elements do not fit the dims of input '%s'", have, name);
        t->shape[var + 1] = known ? have / known : 0;
    } else if (known != have) {
        return dm_fail(err, DM_ERR_FORMAT,
                       "raw binary request: got %zu bytes, input '%s' needs %" PRId64 " elements of %s", len,
                       name, known, ty->name);
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->datatype, sizeof t->datatype, "%s", ty->name);
    t->numel = have;
    t->f32 = malloc((size_t)(have ? have : 1) * sizeof(float));
    if (!t->f32) return dm_fail(err, DM_ERR_NOMEM, "raw binary request: out of memory");
    if (have) ic_decode(ty, (const unsigned char *)body, have, t->f32);
    req->n_inputs = 1;
    return DM_OK;
}

void dm_infer_request_free(dm_infer_request *req)
{
    if (!req) return;
    for (int i = 0; i < DM_INFER_MAX_TENSORS; i++) {
        free(req->inputs[i].f32);
        req->inputs[i].f32 = NULL;
    }
}

/* ------------------------------------------------------------------ response */

/* Flat JSON array of the output's values; NULL on OOM or an unprintable type. */
static json_t *ic_json_data(const ic_type *ty, const unsigned char *p, int64_t numel)
{
    if (ty->kind != K_FLOAT && ty->kind != K_INT && ty->kind != K_UINT) return NULL;
    json_t *a = json_array();
    for (int64_t i = 0; a && i < numel; i++, p += ty->size) {
        uint64_t v = ic_le(p, ty->size);
        json_t *e;
        if (ty->kind == K_FLOAT) {
            double d;
            if (ty->size == 4) {
                float f;
                uint32_t u = (uint32_t)v;
                memcpy(&f, &u, 4);
                d = f;
            } else {
                memcpy(&d, &v, 8);
            }
            e = isfinite(d) ? json_real(d) : json_null();
        } else if (ty->kind == K_INT) {
            int sh = 64 - 8 * (int)ty->size;
            e = json_integer(sh ? (int64_t)(v << sh) >> sh : (int64_t)v);
        } else {
            e = json_integer((json_int_t)v);
        }
        if (json_array_append_new(a, e)) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* 1 when s needs no JSON escape: printable ASCII other than '"' and '\\'. */
static int ic_plain(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '"' || *s == '\\') return 0;
    return 1;
}

/* The common answer, every output binary and every string plain, written
 * directly: the same bytes as the jansson path below writes (its compact
 * form, keys in insertion order), without building and dumping a tree
 * (about a fifth of the server's time per request at batch 1). NULL when it
 * does not apply or on OOM: the caller takes the general path. */
static char *ic_response_binary(const char *model, const char *version, const char *id, const dm_infer_output *outs,
                                int n, size_t *body_len, size_t *header_len)
{
    if (!model || !version || n < 1 || !outs || !ic_plain(model) || !ic_plain(version) || (id && !ic_plain(id)))
        return NULL;
    size_t tail = 0, cap = 96 + strlen(model) + strlen(version) + (id ? strlen(id) : 0);
    for (int i = 0; i < n; i++) {
        const dm_infer_output *o = &outs[i];
        const ic_type *ty = o->datatype ? ic_type_find(o->datatype) : NULL;
        if (!o->binary || !ty || !ty->size || !o->name || !ic_plain(o->name) || o->ndims < 0 ||
            o->ndims > DM_INFER_MAX_DIMS)
            return NULL;
        int64_t numel = ic_shape_numel(o->shape, o->ndims);
        if (numel < 0 || (numel && !o->data) || (uint64_t)numel > (SIZE_MAX / 4 - tail) / ty->size) return NULL;
        tail += (size_t)numel * ty->size;
        cap += 96 + strlen(o->name) + (size_t)o->ndims * 21;
    }
    char *body = malloc(cap + tail + 1);
    if (!body) return NULL;
    size_t at = 0;
#define PUT(...) (at += (size_t)snprintf(body + at, cap - at, __VA_ARGS__))
    PUT("{");
    if (id && *id) PUT("\"id\":\"%s\",", id);
    PUT("\"model_name\":\"%s\",\"model_version\":\"%s\",\"outputs\":[", model, version);
    for (int i = 0; i < n; i++) {
        const dm_infer_output *o = &outs[i];
        const ic_type *ty = ic_type_find(o->datatype);
        PUT("%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[", i ? "," : "", o->name, ty->name);
        for (int d = 0; d < o->ndims; d++) PUT("%s%" PRId64, d ? "," : "", o->shape[d]);
        PUT("],\"parameters\":{\"binary_data_size\":%" PRId64 "}}",
            ic_shape_numel(o->shape, o->ndims) * (int64_t)ty->size);
    }
    PUT("]}");
#undef PUT
    if (at >= cap) {   /* cannot happen with the sizes above; the general path then */
        free(body);
        return NULL;
    }
    size_t jl = at;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)ic_shape_numel(outs[i].shape, outs[i].ndims) * ic_type_find(outs[i].datatype)->size;
        if (bytes) memcpy(body + at, outs[i].data, bytes);
        at += bytes;
    }
    body[at] = 0;
    *body_len = at;
    *header_len = jl;
    return body;
}

char *dm_infer_response(const char *model, const char *version, const char *id, const dm_infer_output *outs, int n,
                        size_t *body_len, size_t *header_len)
{
    char *fast = ic_response_binary(model, version, id, outs, n, body_len, header_len);
    if (fast) return fast;
    json_t *root = json_object(), *arr = json_array();
    size_t tail = 0;
    int any_binary = 0, ok = root && arr && model && version && n >= 0 && (n == 0 || outs);
    if (ok && id && *id) ok = !json_object_set_new(root, "id", json_string(id));
    if (ok) ok = !json_object_set_new(root, "model_name", json_string(model));
    if (ok) ok = !json_object_set_new(root, "model_version", json_string(version));
    for (int i = 0; ok && i < n; i++) {
        const dm_infer_output *o = &outs[i];
        const ic_type *ty = o->datatype ? ic_type_find(o->datatype) : NULL;
        ok = ty && ty->size && o->name && o->ndims >= 0 && o->ndims <= DM_INFER_MAX_DIMS;
        json_t *jo = ok ? json_object() : NULL, *sh = ok ? json_array() : NULL;
        ok = ok && jo && sh;
        int64_t sn = ok ? ic_shape_numel(o->shape, o->ndims) : -1;
        ok = ok && sn >= 0;
        uint64_t numel = ok ? (uint64_t)sn : 0;
        for (int d = 0; ok && d < o->ndims; d++) ok = !json_array_append_new(sh, json_integer(o->shape[d]));
        size_t bytes = (size_t)(numel * ty->size);
        ok = ok && (numel == 0 || o->data) && bytes <= SIZE_MAX / 2 - tail;
        ok = ok && !json_object_set_new(jo, "name", json_string(o->name));
        ok = ok && !json_object_set_new(jo, "datatype", json_string(ty->name));
        ok = ok && !json_object_set(jo, "shape", sh);
        if (ok && o->binary) {
            json_t *params = json_pack("{s:I}", "binary_data_size", (json_int_t)bytes);
            ok = params && !json_object_set_new(jo, "parameters", params);
            tail += bytes;
            any_binary = 1;
        } else if (ok) {
            json_t *data = ic_json_data(ty, o->data, (int64_t)numel);
            ok = data && !json_object_set_new(jo, "data", data);
        }
        json_decref(sh);
        ok = ok && !json_array_append(arr, jo);
        json_decref(jo);
    }
    if (ok) ok = !json_object_set(root, "outputs", arr);
    char *js = ok ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(arr);
    json_decref(root);
    if (!js) return NULL;
    size_t jl = strlen(js);
    if (!any_binary) {
        *body_len = jl;
        *header_len = 0;
        return js;
    }
    char *body = malloc(jl + tail + 1);
    if (!body) {
        free(js);
        return NULL;
    }
    memcpy(body, js, jl);
    free(js);
    size_t at = jl;
    for (int i = 0; i < n; i++) {
        if (!outs[i].binary) continue;
        size_t bytes = (size_t)ic_shape_numel(outs[i].shape, outs[i].ndims) * dm_infer_datatype_size(outs[i].datatype);
        if (bytes) memcpy(body + at, outs[i].data, bytes);
        at += bytes;
    }
    body[at] = 0;
    *body_len = at;
    *header_len = jl;
    return body;
}

char *dm_infer_error_body(const char *msg)
{
    if (!msg) msg = "";
    json_t *s = json_string(msg);
    if (!s) {  /* invalid UTF-8 (e.g. a message truncated mid-character): replace non-ASCII bytes */
        size_t n = strlen(msg);
        char *copy = malloc(n + 1);
        if (!copy) return NULL;
        for (size_t i = 0; i <= n; i++) copy[i] = (unsigned char)msg[i] >= 0x80 ? '?' : msg[i];
        s = json_string(copy);
        free(copy);
        if (!s) return NULL;
    }
    json_t *root = json_object();
    char *out = NULL;
    if (!root) {
        json_decref(s);
        return NULL;
    }
    if (!json_object_set_new(root, "error", s)) out = json_dumps(root, JSON_COMPACT);  /* steals s */
    json_decref(root);
    return out;
}
