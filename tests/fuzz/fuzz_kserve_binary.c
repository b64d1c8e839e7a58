/* fuzz_kserve_binary.c - dm_infer_parse of a request with the binary tensor
 * extension: the first 4 input bytes (u32 little-endian, mod body length + 1)
 * are the Inference-Header-Content-Length, the rest is the body (JSON header,
 * then binary tails). A header length of 0 is a raw binary request, which goes
 * on to dm_infer_parse_raw for a model input whose datatype and dims the top
 * byte of the prefix picks. Properties as in fuzz_kserve_json.c. */
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
    if (dm_infer_parse(body, size, header_len, req, &err) == DM_OK) {
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
