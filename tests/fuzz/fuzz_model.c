/* fuzz_model.c - dm_model_load on any bytes; a model that loads (and has at
 * most FUZZ_MAX_PARAMS parameters, to keep one execution fast) runs one
 * forward on a few rows. Property: every chosen expert index is in [0, E). */
#include "fuzz.h"

#include <math.h>

#define FUZZ_MAX_PARAMS 1000000
#define ROWS 3

static void forward(const dm_model *m)
{
    const dm_config *c = dm_model_config(m);
    int64_t in = c->in_dim ? c->in_dim : c->dim, out = c->n_classes ? c->n_classes : c->dim;
    int64_t slots = (int64_t)c->n_layers * ROWS * c->top_k;
    float *x = malloc((size_t)(ROWS * in) * sizeof *x), *y = malloc((size_t)(ROWS * out) * sizeof *y);
    int32_t *experts = malloc((size_t)slots * sizeof *experts);
    float *weights = malloc((size_t)slots * sizeof *weights);
    FUZZ_CHECK(x && y && experts && weights);
    for (int64_t i = 0; i < ROWS * in; i++) x[i] = sinf((float)i);
    dm_ctx *ctx = NULL;
    dm_error err;
    dm_routing route = {experts, weights};
    if (dm_ctx_create(m, NULL, &ctx, &err) == DM_OK && dm_forward(ctx, x, ROWS, y, &route, &err) == DM_OK)
        for (int64_t i = 0; i < slots; i++) FUZZ_CHECK(experts[i] >= 0 && experts[i] < c->n_experts);
    dm_ctx_free(ctx);
    free(x); free(y); free(experts); free(weights);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[32];
    int fd = fuzz_memfile(data, size, path);
    dm_model *m = NULL;
    dm_error err;
    if (dm_model_load(path, NULL, &m, &err) == DM_OK) {
        if (dm_model_param_count(m) <= FUZZ_MAX_PARAMS) forward(m);
        dm_model_free(m);
    }
    close(fd);
    return 0;
}
