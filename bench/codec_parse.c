/* codec_parse.c - time dm_infer_parse on KServe JSON requests of ROWS rows of
 * 784 FP32 values (the Fashion-MNIST model's input): the server's JSON path.
 * bench/codec_parse.sh builds it against two library builds and runs them in
 * turn, so a codec change is measured side by side.
 * Usage: codec_parse ROWS ITERS   (prints microseconds per parse, best of 5) */
#include "serve/infer_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 1, iters = argc > 2 ? atoi(argv[2]) : 2000, cols = 784;
    if (rows < 1 || iters < 1) return 2;
    size_t cap = (size_t)rows * cols * 12 + 256, n = 0;
    char *body = malloc(cap);
    if (!body) return 1;
    n += (size_t)snprintf(body + n, cap - n, "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[%d,%d],\"data\":[", rows, cols);
    for (int i = 0; i < rows * cols; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s%.4f", i ? "," : "", (double)((i * 37 % 255) / 127.5 - 1.0));
    n += (size_t)snprintf(body + n, cap - n, "]}]}");
    dm_infer_request *req = calloc(1, sizeof *req);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int it = 0; it < iters; it++) {
            dm_error err;
            if (dm_infer_parse(body, n, -1, req, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            dm_infer_request_free(req);
        }
        double us = (now() - t0) / iters * 1e6;
        if (us < best) best = us;
    }
    printf("%.2f\n", best);
    free(req);
    free(body);
    return 0;
}
