/* fuzz_kserve.h - the property both KServe harnesses check on a request that
 * parses: echoing its inputs back as outputs (dm_infer_response, JSON and
 * binary alternately) gives a body whose JSON part parses and whose binary
 * tail is exactly the binary outputs' bytes. */
#ifndef DM_FUZZ_KSERVE_H
#define DM_FUZZ_KSERVE_H

#include "fuzz.h"

static inline void fuzz_check_echo(const dm_infer_request *req)
{
    dm_infer_output outs[DM_INFER_MAX_TENSORS];
    size_t tail = 0;
    for (int i = 0; i < req->n_inputs; i++) {
        const dm_infer_tensor *t = &req->inputs[i];
        outs[i] = (dm_infer_output){.name = t->name, .datatype = "FP32", .ndims = t->ndims, .data = t->f32,
                                    .binary = i % 2};
        memcpy(outs[i].shape, t->shape, sizeof t->shape);
        if (outs[i].binary) tail += (size_t)t->numel * sizeof(float);
    }
    size_t body_len = 0, header_len = 0;
    char *body = dm_infer_response("m", "1", req->id, outs, req->n_inputs, &body_len, &header_len);
    FUZZ_CHECK(body != NULL);
    size_t json_len = header_len ? header_len : body_len;
    FUZZ_CHECK(body_len - json_len == tail);
    json_error_t je;
    json_t *j = json_loadb(body, json_len, 0, &je);
    if (!j) fprintf(stderr, "response JSON does not parse (%s): %.*s\n", je.text, (int)json_len, body);
    FUZZ_CHECK(json_is_object(j));
    json_decref(j);
    free(body);
}

#endif
