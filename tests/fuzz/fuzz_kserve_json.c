/* fuzz_kserve_json.c - dm_infer_parse of a JSON-only request body (no
 * Inference-Header-Content-Length). Properties: a refused request's error body
 * is valid JSON; an accepted one echoes back as a valid response. */
#include "fuzz_kserve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dm_infer_request *req = malloc(sizeof *req);
    FUZZ_CHECK(req != NULL);
    dm_error err;
    if (dm_infer_parse((const char *)data, size, -1, req, &err) == DM_OK) {
        FUZZ_CHECK(!req->raw_binary);
        fuzz_check_echo(req);
    } else {
        fuzz_check_error_body(err.msg);
    }
    dm_infer_request_free(req);
    free(req);
    return 0;
}
