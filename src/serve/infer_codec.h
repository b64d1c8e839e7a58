/* infer_codec.h - the KServe v2 / Triton HTTP inference request and response
 * bodies, including the binary tensor data extension: parsing a request
 * (JSON header + binary tails) into float32 tensors, and building a response
 * (JSON + binary tails) and error bodies. No I/O; pure functions over buffers.
 * Protocol: ../shared/research/serving.md sections 0, 1 and 2. */
#ifndef DM_INFER_CODEC_H
#define DM_INFER_CODEC_H

#include "deepmoe.h"

#include <stddef.h>
#include <stdint.h>

#define DM_INFER_MAX_TENSORS 16
#define DM_INFER_MAX_DIMS 8

/* One parsed request input. */
typedef struct dm_infer_tensor {
    char name[128];
    char datatype[16];          /* "FP32", "FP16", "BF16", "FP64", "INT32", "INT64", ... (numeric types only) */
    int ndims;
    int64_t shape[DM_INFER_MAX_DIMS];
    float *f32;                 /* the data converted to float32 (owned, malloc'd, at least one element even
                                 * when numel == 0; NULL only after dm_infer_request_free) */
    int64_t numel;              /* product(shape) (1 for shape []) */
} dm_infer_tensor;

/* A parsed inference request. */
typedef struct dm_infer_request {
    char id[256];               /* "" if absent */
    int n_inputs;
    dm_infer_tensor inputs[DM_INFER_MAX_TENSORS];
    int n_outputs;              /* requested outputs (0 = all) */
    char output_names[DM_INFER_MAX_TENSORS][128];
    int output_binary[DM_INFER_MAX_TENSORS];   /* 1 binary, 0 JSON, -1 not said (use binary_data_output) */
    int binary_data_output;     /* request-level parameters.binary_data_output (0/1) */
    int64_t timeout_us;         /* parameters.timeout, 0 if absent */
    int raw_binary;             /* Inference-Header-Content-Length: 0 (raw binary request) */
} dm_infer_request;

/* Parses the request body[len]; header_len = the Inference-Header-Content-Length value, or -1 when the
 * header is absent (then the whole body is JSON). Inputs that carry parameters.binary_data_size take their
 * bytes from the tail after the JSON header, in inputs order; the tail must be consumed exactly.
 *
 * Returns DM_ERR_FORMAT with a message for: header length outside [0, len], malformed JSON (jansson's
 * text), missing/invalid fields, data + binary_data_size both given (or neither), binary sizes not matching
 * elements * size or running past the body (or bytes left over), JSON leaf count != product(shape)
 * ("unexpected number of elements for input 'x': got N, shape [..] needs M"; nothing is allocated for a
 * shape larger than the body can hold), FP16/BF16 given as JSON
 * ("receiving FP16 data via JSON is not supported. Please use the binary data format for input X"),
 * unsupported datatypes (BOOL, BYTES, unknown), reserved parameters starting with "triton_", more than
 * DM_INFER_MAX_TENSORS inputs/outputs, duplicate input/output names. DM_ERR_NOMEM if allocation fails.
 * Not checked here (needs the model): input names/shapes against the model, equal dim 0 across inputs.
 *
 * Raw binary requests (header_len == 0): the body is the single input's data, whose name/datatype/dims only
 * the model knows, so this returns DM_OK with req->raw_binary = 1, n_inputs = 0, binary_data_output = 1 and
 * the caller then calls dm_infer_parse_raw. On any error req holds no allocations (safe to free again). */
dm_status dm_infer_parse(const char *body, size_t len, int64_t header_len, dm_infer_request *req, dm_error *err);

/* dm_infer_parse with a memory of the last JSON header it parsed: a client
 * sends the same header bytes for every request of one shape
 * (tritonclient does), so when the header and the body length equal the
 * last ones, the parse is copied and only the inputs' binary data are
 * decoded from the new body (jansson's parse was a tenth of the server's
 * time per request). Only headers whose inputs are all binary are kept.
 * The result, errors included, is dm_infer_parse's. One memo per thread;
 * zero-initialise it, free it with dm_infer_memo_free. */
typedef struct dm_infer_memo {
    char *json;                 /* the header's bytes (malloc'd), NULL = none yet */
    size_t json_len, body_len;
    dm_infer_request req;       /* its parse, inputs without data */
} dm_infer_memo;

dm_status dm_infer_parse_memo(dm_infer_memo *m, const char *body, size_t len, int64_t header_len,
                              dm_infer_request *req, dm_error *err);
void dm_infer_memo_free(dm_infer_memo *m);

/* A raw binary request for a model with one input (name, datatype, dims without the batch dim, at most one
 * -1 which is inferred from len): shape [1, dims...], raw_binary = 1, binary_data_output = 1 (all outputs
 * binary). DM_ERR_FORMAT if len does not fit the dims or the datatype is not numeric. */
dm_status dm_infer_parse_raw(const char *body, size_t len, const char *name, const char *datatype,
                             const int64_t *dims, int ndims, dm_infer_request *req, dm_error *err);

/* Frees the inputs' data; the request may be freed again. */
void dm_infer_request_free(dm_infer_request *req);

/* Byte size of one element of a fixed-size datatype ("FP32" -> 4); 0 for BYTES or an unknown name. */
size_t dm_infer_datatype_size(const char *datatype);

/* One response output. */
typedef struct dm_infer_output {
    const char *name;
    const char *datatype;       /* "FP32" or "INT32" (also "FP64", "INT64"; other fixed types binary only) */
    int ndims;
    int64_t shape[DM_INFER_MAX_DIMS];
    const void *data;           /* little-endian, numel * size bytes */
    int binary;                 /* 1: binary tail, 0: JSON "data" (flat array) */
} dm_infer_output;

/* The response body: JSON {"id"? (only if non-empty), "model_name", "model_version" (string),
 * "outputs":[{"name","datatype","shape", "data" | "parameters":{"binary_data_size":N}}]} and, when any
 * output is binary, the binary tails in outputs order; *header_len = JSON length when any output is
 * binary, else 0 (then the whole body is JSON). FP32 JSON values are printed with 9 significant digits
 * (exact round trip); non-finite values become null. malloc'd; NULL on OOM, a negative shape entry, or a
 * JSON output of a type it cannot print (FP16/BF16/...). */
char *dm_infer_response(const char *model, const char *version, const char *id, const dm_infer_output *outs, int n,
                        size_t *body_len, size_t *header_len);

/* {"error":"<msg>"} (malloc'd, JSON-escaped; bytes of invalid UTF-8 become '?'). NULL on OOM. */
char *dm_infer_error_body(const char *msg);

#endif
