/* fuzz_kserve_binary.c - dm_infer_parse of a request with the binary tensor
 * extension: the first 4 input bytes (u32 little-endian, mod body length + 1)
 * are the Inference-Header-Content-Length, the rest is the body (JSON header,
 * then binary tails). A header length of 0 is a raw binary request, which goes
 * on to dm_infer_parse_raw for a model input whose datatype and dims the top
 * byte of the prefix picks. Properties as in fuzz_kserve_json.c; and
 * dm_infer_parse_memo (one memo over the whole run, so a header may meet the
 * memory of another input's) gives dm_infer_parse's answer, twice in a row. */
#include "fuzz_kserve.h"

static const char *const DTYPES[] = {"FP32", "FP16", "BF16", "FP64", "INT32", "INT64",
                                     "INT8", "UINT8", "BOOL", "BYTES"};

static void parse_raw(const char *body, size_t len, uint32_t pick, dm_infer_request *req)
{
    static const int64_t dims[3][2] = {{-1, 0}, {2, -1}, {4, 0}};
    static const int ndims[3] = {1, 2, 1};
    int d = (int)(pick >> 28) % 3;
    dm_error err;
    dm_infer_request_free(req);
    if (dm_infer_parse_raw(body, len, "input", DTYPES[(pick >> 24 & 15) % 10], dims[d], ndims[d], req, &err) ==
        DM_OK) {
        FUZZ_CHECK(req->raw_binary && req->n_inputs == 1);
        fuzz_check_echo(req);
    } else {
        fuzz_check_error_body(err.msg);
    }
}

/* a and b: the same parse (status given equal and DM_OK). */
static void same_request(const dm_infer_request *a, const dm_infer_request *b)
{
    FUZZ_CHECK(a->n_inputs == b->n_inputs && a->n_outputs == b->n_outputs && !strcmp(a->id, b->id));
    FUZZ_CHECK(a->binary_data_output == b->binary_data_output && a->timeout_us == b->timeout_us &&
               a->raw_binary == b->raw_binary);
    for (int i = 0; i < a->n_inputs; i++) {
        const dm_infer_tensor *x = &a->inputs[i], *y = &b->inputs[i];
        FUZZ_CHECK(!strcmp(x->name, y->name) && !strcmp(x->datatype, y->datatype) && x->numel == y->numel &&
                   x->ndims == y->ndims && !memcmp(x->shape, y->shape, sizeof x->shape));
        FUZZ_CHECK(!memcmp(x->f32, y->f32, (size_t)x->numel * sizeof(float)));
    }
    for (int i = 0; i < a->n_outputs; i++)
        FUZZ_CHECK(!strcmp(a->output_names[i], b->output_names[i]) && a->output_binary[i] == b->output_binary[i]);
}

static dm_infer_memo memo;

static void check_memo(const char *body, size_t size, int64_t header_len, dm_status want, const dm_infer_request *ref,
                       const char *want_msg)
{
    dm_infer_request *m = malloc(sizeof *m);
    FUZZ_CHECK(m != NULL);
    for (int round = 0; round < 2; round++) {
        dm_error err;
        dm_status st = dm_infer_parse_memo(&memo, body, size, header_len, m, &err);
        FUZZ_CHECK(st == want);
        if (st == DM_OK) {
            same_request(m, ref);
            dm_infer_request_free(m);
        } else {
            FUZZ_CHECK(!strcmp(err.msg, want_msg));
        }
    }
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    uint32_t prefix = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    const char *body = (const char *)data + 4;
    size -= 4;
    int64_t header_len = (int64_t)((prefix & 0xffffff) % (size + 1));
    dm_infer_request *req = malloc(sizeof *req);
    FUZZ_CHECK(req != NULL);
    dm_error err;
    dm_status st = dm_infer_parse(body, size, header_len, req, &err);
    check_memo(body, size, header_len, st, req, err.msg);
    if (st == DM_OK) {
        FUZZ_CHECK(req->raw_binary == (header_len == 0));
        if (req->raw_binary) parse_raw(body, size, prefix, req);
        else fuzz_check_echo(req);
    } else {
        fuzz_check_error_body(err.msg);
    }
    dm_infer_request_free(req);
    free(req);
    return 0;
}
