/* test_serve_codec.c - the inference request/response codec: JSON and binary
 * tensor data requests (serving.md section 2), raw binary requests, each
 * refused request class with its message, and response / error bodies. */
#include "deepmoe.h"
#include "test.h"
#include "serve/infer_codec.h"
#include "base/base.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* body = json + bin[nbin]; returns a malloc'd buffer and its length. */
static char *mkbody(const char *json, const void *bin, size_t nbin, size_t *len)
{
    size_t jl = strlen(json);
    char *b = malloc(jl + nbin + 1);
    if (!b) return NULL;
    memcpy(b, json, jl);
    if (nbin) memcpy(b + jl, bin, nbin);
    *len = jl + nbin;
    return b;
}

/* Parses json + bin with the header set when bin is given. */
static dm_status parse2(const char *json, const void *bin, size_t nbin, dm_infer_request *req, dm_error *err)
{
    size_t len = 0;
    char *b = mkbody(json, bin, nbin, &len);
    err->msg[0] = 0;
    dm_status s = dm_infer_parse(b, len, bin ? (int64_t)strlen(json) : -1, req, err);
    free(b);
    return s;
}

static void test_serve_codec_example_binary(dm_t *t)
{
    const char *js = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,512],\"datatype\":\"FP32\","
                     "\"parameters\":{\"binary_data_size\":2048}}],"
                     "\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":true}}]}";
    float x[512];
    for (int i = 0; i < 512; i++) x[i] = (float)i * 0.37f - 50.0f;
    dm_infer_request r;
    dm_error e;
    CHECK_OK(t, parse2(js, x, sizeof x, &r, &e), &e);
    CHECK(t, r.n_inputs == 1 && !strcmp(r.inputs[0].name, "input") && !strcmp(r.inputs[0].datatype, "FP32"),
          "n_inputs %d", r.n_inputs);
    CHECK(t, r.inputs[0].ndims == 2 && r.inputs[0].shape[0] == 1 && r.inputs[0].shape[1] == 512 &&
          r.inputs[0].numel == 512, "shape");
    CHECK(t, r.inputs[0].f32 && !memcmp(r.inputs[0].f32, x, sizeof x), "values differ");
    CHECK(t, r.n_outputs == 1 && !strcmp(r.output_names[0], "output") && r.output_binary[0] == 1, "outputs");
    CHECK(t, r.id[0] == 0 && r.timeout_us == 0 && r.binary_data_output == 0 && r.raw_binary == 0, "defaults");
    dm_infer_request_free(&r);
    dm_infer_request_free(&r);  /* idempotent */
}

static void test_serve_codec_json_flat_nested(dm_t *t)
{
    dm_infer_request r;
    dm_error e;
    CHECK_OK(t, parse2("{\"id\":\"req-7\",\"inputs\":[{\"name\":\"a\",\"shape\":[2,3],\"datatype\":\"FP32\","
                       "\"data\":[1,2.5,-3,4e2,5,6]},"
                       "{\"name\":\"b\",\"shape\":[2,2],\"datatype\":\"FP32\",\"data\":[[1,2],[3,[4]]]},"
                       "{\"name\":\"c\",\"shape\":[3],\"datatype\":\"INT64\",\"data\":[-7,0,9000000000]},"
                       "{\"name\":\"d\",\"shape\":[2],\"datatype\":\"FP64\",\"data\":[0.1,1e300]}]}",
                       NULL, 0, &r, &e), &e);
    CHECK(t, r.n_inputs == 4, "n_inputs %d", r.n_inputs);
    CHECK(t, !strcmp(r.id, "req-7"), "id '%s'", r.id);
    float a[] = {1, 2.5f, -3, 400, 5, 6}, b[] = {1, 2, 3, 4}, c[] = {-7, 0, 9e9f};
    CHECK(t, r.n_inputs == 4 && !memcmp(r.inputs[0].f32, a, sizeof a), "flat");
    CHECK(t, r.n_inputs == 4 && !memcmp(r.inputs[1].f32, b, sizeof b), "nested");
    CHECK(t, r.n_inputs == 4 && !memcmp(r.inputs[2].f32, c, sizeof c), "int64");
    CHECK(t, r.n_inputs == 4 && r.inputs[3].f32[0] == 0.1f && isinf(r.inputs[3].f32[1]), "fp64 %g %g",
          r.inputs[3].f32[0], r.inputs[3].f32[1]);
    CHECK(t, r.n_outputs == 0, "all outputs");
    dm_infer_request_free(&r);

    /* an empty tensor and a scalar shape */
    CHECK_OK(t, parse2("{\"inputs\":[{\"name\":\"z\",\"shape\":[0,4],\"datatype\":\"FP32\",\"data\":[]},"
                       "{\"name\":\"s\",\"shape\":[],\"datatype\":\"INT32\",\"data\":[5]}]}", NULL, 0, &r, &e), &e);
    CHECK(t, r.n_inputs == 2 && r.inputs[0].numel == 0 && r.inputs[1].numel == 1 && r.inputs[1].f32[0] == 5,
          "empty/scalar");
    dm_infer_request_free(&r);
}

static void test_serve_codec_binary_types(dm_t *t)
{
    /* FP64, FP16, BF16 (upper 2 bytes of FP32, as the Python client sends), INT32, in inputs order */
    double d[3] = {1.5, -2.25, 1e-3};
    float want[3] = {1.5f, -2.25f, 0.001f};
    uint16_t h[3], bf[3];
    int32_t i32[3] = {-5, 0, 123456};
    for (int i = 0; i < 3; i++) {
        h[i] = dm_f32_to_f16(want[i]);
        uint32_t u;
        memcpy(&u, &want[i], 4);
        bf[i] = (uint16_t)(u >> 16);
    }
    unsigned char bin[24 + 6 + 6 + 12];
    memcpy(bin, d, 24);
    memcpy(bin + 24, h, 6);
    memcpy(bin + 30, bf, 6);
    memcpy(bin + 36, i32, 12);
    const char *js = "{\"inputs\":["
                     "{\"name\":\"d\",\"shape\":[3],\"datatype\":\"FP64\",\"parameters\":{\"binary_data_size\":24}},"
                     "{\"name\":\"h\",\"shape\":[1,3],\"datatype\":\"FP16\",\"parameters\":{\"binary_data_size\":6}},"
                     "{\"name\":\"j\",\"shape\":[1,1],\"datatype\":\"FP32\",\"data\":[[42]]},"
                     "{\"name\":\"b\",\"shape\":[3,1],\"datatype\":\"BF16\",\"parameters\":{\"binary_data_size\":6}},"
                     "{\"name\":\"i\",\"shape\":[3],\"datatype\":\"INT32\",\"parameters\":{\"binary_data_size\":12}}"
                     "]}";
    dm_infer_request r;
    dm_error e;
    CHECK_OK(t, parse2(js, bin, sizeof bin, &r, &e), &e);
    CHECK(t, r.n_inputs == 5, "n_inputs %d", r.n_inputs);
    if (r.n_inputs == 5) {
        CHECK(t, dm_test_relerr(r.inputs[0].f32, want, 3) == 0, "fp64");
        CHECK(t, dm_test_relerr(r.inputs[1].f32, want, 3) < 1e-3, "fp16 %g %g %g", r.inputs[1].f32[0],
              r.inputs[1].f32[1], r.inputs[1].f32[2]);
        CHECK(t, r.inputs[2].f32[0] == 42, "json between binaries");
        CHECK(t, dm_test_relerr(r.inputs[3].f32, want, 3) < 1e-2, "bf16 %g %g %g", r.inputs[3].f32[0],
              r.inputs[3].f32[1], r.inputs[3].f32[2]);
        CHECK(t, r.inputs[4].f32[0] == -5 && r.inputs[4].f32[1] == 0 && r.inputs[4].f32[2] == 123456, "int32");
        CHECK(t, !strcmp(r.inputs[3].datatype, "BF16") && r.inputs[3].shape[0] == 3, "bf16 meta");
    }
    dm_infer_request_free(&r);

    /* binary_data_size 0 = empty tensor */
    CHECK_OK(t, parse2("{\"inputs\":[{\"name\":\"e\",\"shape\":[0],\"datatype\":\"FP32\","
                       "\"parameters\":{\"binary_data_size\":0}}]}", "", 0, &r, &e), &e);
    CHECK(t, r.n_inputs == 1 && r.inputs[0].numel == 0, "empty binary");
    dm_infer_request_free(&r);
}

static void test_serve_codec_outputs_params(dm_t *t)
{
    dm_infer_request r;
    dm_error e;
    CHECK_OK(t, parse2("{\"id\":\"abc\",\"parameters\":{\"binary_data_output\":true,\"timeout\":250000,"
                       "\"priority\":2,\"custom\":\"x\"},"
                       "\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}],"
                       "\"outputs\":[{\"name\":\"o1\",\"parameters\":{\"binary_data\":false}},{\"name\":\"o2\"},"
                       "{\"name\":\"o3\",\"parameters\":{\"binary_data\":true}}]}", NULL, 0, &r, &e), &e);
    CHECK(t, !strcmp(r.id, "abc"), "id");
    CHECK(t, r.binary_data_output == 1 && r.timeout_us == 250000, "params %d %lld", r.binary_data_output,
          (long long)r.timeout_us);
    CHECK(t, r.n_outputs == 3 && !strcmp(r.output_names[0], "o1") && !strcmp(r.output_names[1], "o2") &&
          !strcmp(r.output_names[2], "o3"), "names");
    CHECK(t, r.output_binary[0] == 0 && r.output_binary[1] == -1 && r.output_binary[2] == 1, "flags %d %d %d",
          r.output_binary[0], r.output_binary[1], r.output_binary[2]);
    dm_infer_request_free(&r);
}

static void test_serve_codec_raw_binary(dm_t *t)
{
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (float)i - 3.5f;
    dm_infer_request r;
    dm_error e = {0};
    /* header 0 flags the request as raw binary */
    CHECK_OK(t, dm_infer_parse((const char *)x, sizeof x, 0, &r, &e), &e);
    CHECK(t, r.raw_binary == 1 && r.n_inputs == 0 && r.binary_data_output == 1, "raw flag");
    dm_infer_request_free(&r);

    int64_t dims[] = {8};
    CHECK_OK(t, dm_infer_parse_raw((const char *)x, sizeof x, "input", "FP32", dims, 1, &r, &e), &e);
    CHECK(t, r.raw_binary && r.n_inputs == 1 && r.inputs[0].ndims == 2 && r.inputs[0].shape[0] == 1 &&
          r.inputs[0].shape[1] == 8 && !strcmp(r.inputs[0].name, "input"), "raw shape");
    CHECK(t, r.n_inputs == 1 && !memcmp(r.inputs[0].f32, x, sizeof x), "raw values");
    dm_infer_request_free(&r);

    int64_t var[] = {2, -1};
    CHECK_OK(t, dm_infer_parse_raw((const char *)x, sizeof x, "input", "FP32", var, 2, &r, &e), &e);
    CHECK(t, r.n_inputs == 1 && r.inputs[0].ndims == 3 && r.inputs[0].shape[2] == 4, "variable dim");
    dm_infer_request_free(&r);

    CHECK(t, dm_infer_parse_raw((const char *)x, 12, "input", "FP32", dims, 1, &r, &e) == DM_ERR_FORMAT &&
          strstr(e.msg, "needs 8 elements"), "raw size: %s", e.msg);
    CHECK(t, dm_infer_parse_raw((const char *)x, 6, "input", "FP32", dims, 1, &r, &e) == DM_ERR_FORMAT &&
          strstr(e.msg, "whole number"), "raw partial: %s", e.msg);
    CHECK(t, dm_infer_parse_raw((const char *)x, 8, "input", "BOOL", dims, 1, &r, &e) == DM_ERR_FORMAT &&
          strstr(e.msg, "not supported"), "raw bool: %s", e.msg);
    dm_infer_request_free(&r);
}

/* json + bin must fail with DM_ERR_FORMAT and a message containing sub. */
static void expect_fail(dm_t *t, const char *json, const void *bin, size_t nbin, const char *sub)
{
    dm_infer_request r;
    dm_error e;
    dm_status s = parse2(json, bin, nbin, &r, &e);
    CHECK(t, s == DM_ERR_FORMAT && strstr(e.msg, sub), "%s: got %s '%s', want '%s'", json, dm_status_name(s), e.msg,
          sub);
    CHECK(t, r.n_inputs == 0, "inputs left after failure");
    dm_infer_request_free(&r);
}

#define IN(dt, shape, rest) "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"" dt "\",\"shape\":" shape "," rest "}]}"

static void test_serve_codec_errors(dm_t *t)
{
    dm_infer_request r;
    dm_error e;
    const char *js = "{\"inputs\":[]}";
    CHECK(t, dm_infer_parse(js, strlen(js), 100, &r, &e) == DM_ERR_FORMAT && strstr(e.msg, "outside [0, 13]"),
          "header: %s", e.msg);
    CHECK(t, dm_infer_parse(js, strlen(js), -5, &r, &e) == DM_ERR_FORMAT && strstr(e.msg, "outside"),
          "header neg: %s", e.msg);
    expect_fail(t, "{\"inputs\":[", NULL, 0, "failed to parse the request JSON");
    expect_fail(t, "[1]", NULL, 0, "must be a JSON object");
    expect_fail(t, "{}", NULL, 0, "missing or invalid 'inputs'");
    expect_fail(t, "{\"inputs\":[]}", NULL, 0, "must not be empty");
    expect_fail(t, "{\"id\":5,\"inputs\":[]}", NULL, 0, "'id' must be a string");
    expect_fail(t, "{\"inputs\":[{\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}", NULL, 0,
                "missing or invalid 'name'");
    expect_fail(t, "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"data\":[1]}]}", NULL, 0,
                "missing or invalid 'datatype'");
    expect_fail(t, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"data\":[1]}]}", NULL, 0,
                "missing or invalid 'shape'");
    expect_fail(t, IN("FP32", "[-1]", "\"data\":[1]"), NULL, 0, "non-negative integers");
    expect_fail(t, IN("FP32", "[1.5]", "\"data\":[1]"), NULL, 0, "non-negative integers");
    expect_fail(t, IN("FP32", "[4294967296,4294967296]", "\"data\":[1]"), NULL, 0, "too large");
    expect_fail(t, IN("FP32", "[2]", "\"data\":[1,\"a\"]"), NULL, 0, "must hold numbers");
    expect_fail(t, IN("INT32", "[1]", "\"data\":[1.5]"), NULL, 0, "INT32 integers");
    expect_fail(t, IN("INT32", "[1]", "\"data\":[3000000000]"), NULL, 0, "INT32 integers");
    expect_fail(t, IN("FP32", "[1]", "\"data\":[1],\"parameters\":{\"binary_data_size\":4}"), "abcd", 4,
                "has both 'data' and 'binary_data_size'");
    expect_fail(t, IN("FP32", "[1]", "\"parameters\":{}"), NULL, 0, "must specify valid 'data'");
    expect_fail(t, IN("FP32", "[2]", "\"parameters\":{\"binary_data_size\":4}"), "abcd", 4,
                "unexpected binary_data_size for input 'x': got 4, expected 8");
    expect_fail(t, IN("FP32", "[2]", "\"parameters\":{\"binary_data_size\":8}"), "abcd", 4,
                "runs past the end");
    expect_fail(t, IN("FP32", "[1]", "\"parameters\":{\"binary_data_size\":4}"), "abcdefgh", 8,
                "unexpected 4 bytes of binary data");
    expect_fail(t, IN("FP32", "[1]", "\"parameters\":{\"binary_data_size\":4}"), NULL, 0, "runs past the end");
    expect_fail(t, IN("FP32", "[2,2]", "\"data\":[1,2,3]"), NULL, 0,
                "unexpected number of elements for input 'x': got 3, shape [2,2] needs 4");
    expect_fail(t, IN("FP32", "[1]", "\"data\":[[1],[2]]"), NULL, 0, "got 2, shape [1] needs 1");
    expect_fail(t, IN("FP16", "[1]", "\"data\":[1]"), NULL, 0,
                "receiving FP16 data via JSON is not supported. Please use the binary data format for input x");
    expect_fail(t, IN("BF16", "[1]", "\"data\":[1]"), NULL, 0, "receiving BF16 data via JSON is not supported");
    expect_fail(t, IN("BOOL", "[1]", "\"data\":[true]"), NULL, 0, "datatype BOOL is not supported");
    expect_fail(t, IN("BYTES", "[1]", "\"data\":[\"a\"]"), NULL, 0, "datatype BYTES is not supported");
    expect_fail(t, IN("FP8", "[1]", "\"data\":[1]"), NULL, 0, "invalid datatype 'FP8'");
    expect_fail(t, "{\"parameters\":{\"triton_x\":1},\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                   "\"shape\":[1],\"data\":[1]}]}", NULL, 0, "reserved for Triton usage");
    expect_fail(t, IN("FP32", "[1]", "\"data\":[1],\"parameters\":{\"triton_enable_x\":true}"), NULL, 0,
                "reserved for Triton usage");
    expect_fail(t, "{\"parameters\":{\"timeout\":-1},\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                   "\"shape\":[1],\"data\":[1]}]}", NULL, 0, "'timeout' must be a non-negative integer");
    expect_fail(t, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]},"
                   "{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}", NULL, 0,
                "given more than once");
    expect_fail(t, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}],"
                   "\"outputs\":[{\"name\":\"o\",\"parameters\":{\"binary_data\":1}}]}", NULL, 0,
                "'binary_data' must be a bool");

    /* nesting deeper than 100 */
    char deep[600];
    int k = snprintf(deep, sizeof deep, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":");
    for (int i = 0; i < 102; i++) deep[k++] = '[';
    deep[k++] = '1';
    for (int i = 0; i < 102; i++) deep[k++] = ']';
    snprintf(deep + k, sizeof deep - (size_t)k, "}]}");
    expect_fail(t, deep, NULL, 0, "nested deeper than 100");

    /* a later input's failure frees the earlier inputs' data (ASan checks the leak) */
    expect_fail(t, "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]},"
                   "{\"name\":\"b\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1]}]}", NULL, 0,
                "input 'b': got 1");
}

static void test_serve_codec_response_json(dm_t *t)
{
    float y[6] = {0.1f, -2, 3.25f, 1e-20f, 5e20f, 6};
    int32_t c[2] = {-3, 7};
    dm_infer_output outs[2] = {
        {"output", "FP32", 2, {2, 3}, y, 0},
        {"cls", "INT32", 1, {2}, c, 0},
    };
    size_t len = 99, hl = 99;
    char *body = dm_infer_response("moe_model", "1", "", outs, 2, &len, &hl);
    CHECK(t, body != NULL, "NULL");
    if (!body) return;
    CHECK(t, hl == 0 && len == strlen(body), "header_len %zu len %zu", hl, len);
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    CHECK(t, root != NULL, "%s: %s", je.text, body);
    if (root) {
        CHECK(t, !json_object_get(root, "id"), "empty id echoed");
        CHECK(t, !strcmp(json_string_value(json_object_get(root, "model_name")), "moe_model"), "model_name");
        json_t *ver = json_object_get(root, "model_version");
        CHECK(t, json_is_string(ver) && !strcmp(json_string_value(ver), "1"), "model_version string");
        json_t *o = json_array_get(json_object_get(root, "outputs"), 0);
        CHECK(t, !strcmp(json_string_value(json_object_get(o, "name")), "output") &&
              !strcmp(json_string_value(json_object_get(o, "datatype")), "FP32"), "meta");
        json_t *sh = json_object_get(o, "shape");
        CHECK(t, json_array_size(sh) == 2 && json_integer_value(json_array_get(sh, 1)) == 3, "shape");
        json_t *d = json_object_get(o, "data");
        CHECK(t, json_array_size(d) == 6 && !json_object_get(o, "parameters"), "data size");
        for (size_t i = 0; i < 6 && i < json_array_size(d); i++)
            CHECK(t, (float)json_number_value(json_array_get(d, i)) == y[i], "value %zu: %s", i, body);
        json_t *o2 = json_array_get(json_object_get(root, "outputs"), 1);
        json_t *d2 = json_object_get(o2, "data");
        CHECK(t, json_is_integer(json_array_get(d2, 0)) && json_integer_value(json_array_get(d2, 0)) == -3 &&
              json_integer_value(json_array_get(d2, 1)) == 7, "int32 data");
        json_decref(root);
    }
    free(body);
}

static void test_serve_codec_response_binary(dm_t *t)
{
    float y[4] = {1, 2, 3, 4};
    int32_t c[3] = {9, 8, 7};
    float z[2] = {-1, 0.5f};
    dm_infer_output outs[3] = {
        {"a", "FP32", 2, {1, 4}, y, 1},
        {"b", "FP32", 1, {2}, z, 0},
        {"c", "INT32", 2, {1, 3}, c, 1},
    };
    size_t len = 0, hl = 0;
    char *body = dm_infer_response("m", "3", "req-1", outs, 3, &len, &hl);
    CHECK(t, body != NULL, "NULL");
    if (!body) return;
    CHECK(t, hl > 0 && len == hl + 16 + 12, "hl %zu len %zu", hl, len);
    json_error_t je;
    json_t *root = json_loadb(body, hl, 0, &je);
    CHECK(t, root != NULL, "%s", je.text);
    if (root) {
        CHECK(t, !strcmp(json_string_value(json_object_get(root, "id")), "req-1"), "id echoed");
        CHECK(t, !strcmp(json_string_value(json_object_get(root, "model_version")), "3"), "version");
        json_t *o = json_object_get(root, "outputs");
        json_t *p0 = json_object_get(json_array_get(o, 0), "parameters");
        json_t *p2 = json_object_get(json_array_get(o, 2), "parameters");
        CHECK(t, json_integer_value(json_object_get(p0, "binary_data_size")) == 16 &&
              !json_object_get(json_array_get(o, 0), "data"), "a binary");
        CHECK(t, json_integer_value(json_object_get(p2, "binary_data_size")) == 12, "c binary");
        CHECK(t, json_array_size(json_object_get(json_array_get(o, 1), "data")) == 2, "b json");
        json_decref(root);
    }
    if (len == hl + 28) {
        CHECK(t, !memcmp(body + hl, y, 16), "tail a");
        CHECK(t, !memcmp(body + hl + 16, c, 12), "tail c");
    }
    free(body);

    /* an empty binary output: binary_data_size 0, no bytes */
    dm_infer_output e = {"e", "FP32", 2, {0, 4}, NULL, 1};
    body = dm_infer_response("m", "1", NULL, &e, 1, &len, &hl);
    CHECK(t, body && hl > 0 && len == hl && strstr(body, "\"binary_data_size\":0") && !strstr(body, "\"id\""),
          "empty binary: %s", body ? body : "(null)");
    free(body);
}

/* Every output binary: the header is written directly (no jansson tree);
 * its bytes must be jansson's compact dump of the same answer, and a string
 * that needs escaping still takes the general path. */
static void test_serve_codec_response_binary_direct(dm_t *t)
{
    float y[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t ex[4] = {3, 1, 0, 2};
    dm_infer_output outs[2] = {
        {"output", "FP32", 2, {2, 4}, y, 1},
        {"routing_experts", "INT32", 2, {2, 2}, ex, 1},
    };
    size_t len = 0, hl = 0;
    char *body = dm_infer_response("moe_model", "12", "req 7", outs, 2, &len, &hl);
    const char *want = "{\"id\":\"req 7\",\"model_name\":\"moe_model\",\"model_version\":\"12\",\"outputs\":["
                       "{\"name\":\"output\",\"datatype\":\"FP32\",\"shape\":[2,4],\"parameters\":{\"binary_data_size\":32}},"
                       "{\"name\":\"routing_experts\",\"datatype\":\"INT32\",\"shape\":[2,2],\"parameters\":"
                       "{\"binary_data_size\":16}}]}";
    CHECK(t, body && hl == strlen(want) && !memcmp(body, want, hl) && len == hl + 48, "header %.*s", (int)hl,
          body ? body : "(null)");
    if (body && len == hl + 48) CHECK(t, !memcmp(body + hl, y, 32) && !memcmp(body + hl + 32, ex, 16), "tails");
    if (body) {   /* jansson's own dump of what it parses back: the same bytes */
        json_t *root = json_loadb(body, hl, 0, NULL);
        char *again = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
        CHECK(t, again && strlen(again) == hl && !memcmp(again, body, hl), "jansson dumps %s", again ? again : "(null)");
        free(again);
        json_decref(root);
    }
    free(body);
    /* an id with a quote and a newline: escaped (the general path), and it round-trips */
    body = dm_infer_response("m", "1", "a\"b\n", outs, 1, &len, &hl);
    json_t *root = body ? json_loadb(body, hl, 0, NULL) : NULL;
    CHECK(t, root && !strcmp(json_string_value(json_object_get(root, "id")), "a\"b\n") && len == hl + 32,
          "escaped id: %.*s", (int)hl, body ? body : "(null)");
    json_decref(root);
    free(body);
}

/* One body through the memo and through dm_infer_parse: the same status,
 * message and request (values included). 1 when they agree. */
static int memo_agrees(dm_t *t, dm_infer_memo *m, const char *json, const void *bin, size_t nbin, const char *what)
{
    size_t len = 0;
    char *b = mkbody(json, bin, nbin, &len);
    dm_infer_request a, c;
    dm_error ea = {0}, ec = {0};
    int64_t hl = (int64_t)strlen(json);
    dm_status sa = dm_infer_parse_memo(m, b, len, hl, &a, &ea);
    dm_status sc = dm_infer_parse(b, len, hl, &c, &ec);
    int ok = sa == sc && !strcmp(ea.msg, ec.msg);
    if (ok && !sa) {
        ok = a.n_inputs == c.n_inputs && a.n_outputs == c.n_outputs && !strcmp(a.id, c.id) &&
             a.binary_data_output == c.binary_data_output && a.timeout_us == c.timeout_us;
        for (int i = 0; ok && i < a.n_inputs; i++)
            ok = !strcmp(a.inputs[i].name, c.inputs[i].name) && !strcmp(a.inputs[i].datatype, c.inputs[i].datatype) &&
                 a.inputs[i].numel == c.inputs[i].numel && a.inputs[i].ndims == c.inputs[i].ndims &&
                 !memcmp(a.inputs[i].shape, c.inputs[i].shape, sizeof a.inputs[i].shape) &&
                 !memcmp(a.inputs[i].f32, c.inputs[i].f32, (size_t)a.inputs[i].numel * sizeof(float));
        for (int i = 0; ok && i < a.n_outputs; i++)
            ok = !strcmp(a.output_names[i], c.output_names[i]) && a.output_binary[i] == c.output_binary[i];
    }
    CHECK(t, ok, "%s: memo %d '%s', parse %d '%s'", what, sa, ea.msg, sc, ec.msg);
    if (!sa) dm_infer_request_free(&a);
    if (!sc) dm_infer_request_free(&c);
    free(b);
    return ok;
}

/* The parse memo: a repeated header with new data gives the new values; a
 * changed header, a different body length, JSON data and errors give
 * exactly dm_infer_parse's answer. */
static void test_serve_codec_parse_memo(dm_t *t)
{
    const char *js = "{\"id\":\"q\",\"parameters\":{\"timeout\":7},\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],"
                     "\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":12}},{\"name\":\"h\",\"shape\":[2],"
                     "\"datatype\":\"FP16\",\"parameters\":{\"binary_data_size\":4}}],"
                     "\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":true}}]}";
    dm_infer_memo m = {0};
    unsigned char bin[16];
    float f[3] = {1.5f, -2, 3};
    uint16_t h[2] = {0x3c00, 0xc000};   /* 1.0, -2.0 */
    memcpy(bin, f, 12);
    memcpy(bin + 12, h, 4);
    memo_agrees(t, &m, js, bin, 16, "first (parsed, kept)");
    CHECK(t, m.json != NULL && m.json_len == strlen(js), "an all-binary header is kept");
    f[0] = 42;
    h[1] = 0x4000;
    memcpy(bin, f, 12);
    memcpy(bin + 12, h, 4);
    memo_agrees(t, &m, js, bin, 16, "same header, new data (from the memo)");
    size_t len = 0;
    char *b = mkbody(js, bin, 16, &len);
    dm_infer_request r;
    dm_error e = {0};
    if (b && !dm_infer_parse_memo(&m, b, len, (int64_t)strlen(js), &r, &e)) {
        CHECK(t, r.n_inputs == 2 && r.inputs[0].f32[0] == 42 && r.inputs[1].f32[1] == 2, "new values: %g %g",
              r.inputs[0].f32[0], r.inputs[1].f32[1]);
        dm_infer_request_free(&r);
    }
    free(b);
    memo_agrees(t, &m, js, bin, 15, "same header, a byte short (an error)");
    memo_agrees(t, &m, js, bin, 12, "same header, the second input missing");
    char js2[1024];
    snprintf(js2, sizeof js2, "%s", js);
    js2[strlen("{\"id\":\"")] = 'r';   /* another id: parsed again */
    memo_agrees(t, &m, js2, bin, 16, "another header");
    const char *jsdata = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,2]},"
                         "{\"name\":\"y\",\"shape\":[1],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":4}}]}";
    memo_agrees(t, &m, jsdata, bin, 4, "JSON data (not kept)");
    CHECK(t, m.json_len == strlen(js2), "a header with JSON data is not kept");
    memo_agrees(t, &m, jsdata, bin, 4, "JSON data again");
    memo_agrees(t, &m, "{\"inputs\":[", bin, 4, "malformed JSON");
    memo_agrees(t, &m, js2, bin, 16, "the kept header again");
    dm_infer_memo_free(&m);
    CHECK(t, !m.json, "freed");
}

static void test_serve_codec_error_body(dm_t *t)
{
    char *b = dm_infer_error_body("unexpected \"x\"\\ for 'y'\n");
    CHECK(t, b != NULL, "NULL");
    if (!b) return;
    CHECK(t, !strcmp(b, "{\"error\":\"unexpected \\\"x\\\"\\\\ for 'y'\\n\"}"), "%s", b);
    json_t *root = json_loads(b, 0, NULL);
    CHECK(t, root && !strcmp(json_string_value(json_object_get(root, "error")), "unexpected \"x\"\\ for 'y'\n"),
          "round trip");
    json_decref(root);
    free(b);
    /* a message cut mid UTF-8 character still gives valid JSON */
    b = dm_infer_error_body("bad \xc3");
    CHECK(t, b && !strcmp(b, "{\"error\":\"bad ?\"}"), "%s", b ? b : "(null)");
    free(b);
}

void suite_serve_codec(dm_t *t)
{
    DM_RUN(t, test_serve_codec_example_binary);
    DM_RUN(t, test_serve_codec_json_flat_nested);
    DM_RUN(t, test_serve_codec_binary_types);
    DM_RUN(t, test_serve_codec_outputs_params);
    DM_RUN(t, test_serve_codec_raw_binary);
    DM_RUN(t, test_serve_codec_errors);
    DM_RUN(t, test_serve_codec_response_json);
    DM_RUN(t, test_serve_codec_response_binary);
    DM_RUN(t, test_serve_codec_response_binary_direct);
    DM_RUN(t, test_serve_codec_parse_memo);
    DM_RUN(t, test_serve_codec_error_body);
}
