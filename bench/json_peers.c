/* json_peers.c - the measurement behind the JSON library choice: parse a
 * typical inference request (one FP32 row of 512 values as JSON data) and
 * read its numbers, with jansson and with json-c. Run by bench/json_peers.sh.
 * (json-c's half is in json_peers_c.c: the two libraries' names clash.)
 * Usage: json_peers ITERS */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double json_c_parse(const char *body, int n, int iters);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    char *body = malloc(1 << 16);
    int n = sprintf(body, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,512],\"datatype\":\"FP32\",\"data\":[");
    for (int i = 0; i < 512; i++) n += sprintf(body + n, "%s%.7g", i ? "," : "", (i * 37 % 101) / 50.5 - 1);
    n += sprintf(body + n, "]}]}");
    double sum = 0, t0 = now();
    for (int it = 0; it < iters; it++) {
        json_error_t e;
        json_t *root = json_loadb(body, (size_t)n, 0, &e);
        json_t *data = json_object_get(json_array_get(json_object_get(root, "inputs"), 0), "data");
        for (size_t i = 0; i < json_array_size(data); i++) sum += json_number_value(json_array_get(data, i));
        json_decref(root);
    }
    double tj = (now() - t0) / iters;
    t0 = now();
    sum += json_c_parse(body, n, iters);
    double tc = (now() - t0) / iters;
    printf("JSON tensor request, %d bytes (512 FP32 values): jansson %.1f us, json-c %.1f us per parse\n", n,
           tj * 1e6, tc * 1e6);
    /* the header of a binary request, as tritonclient sends by default */
    const char *hdr = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,512],\"datatype\":\"FP32\","
                      "\"parameters\":{\"binary_data_size\":2048}}],\"outputs\":[{\"name\":\"output\","
                      "\"parameters\":{\"binary_data\":true}}]}";
    int hn = (int)strlen(hdr);
    t0 = now();
    for (int it = 0; it < iters; it++) {
        json_error_t e;
        json_t *root = json_loadb(hdr, (size_t)hn, 0, &e);
        sum += (double)json_array_size(json_object_get(root, "inputs"));
        json_decref(root);
    }
    tj = (now() - t0) / iters;
    t0 = now();
    sum += json_c_parse(hdr, hn, iters);
    tc = (now() - t0) / iters;
    printf("binary request header, %d bytes: jansson %.2f us, json-c %.2f us per parse (checksum %g)\n", hn, tj * 1e6,
           tc * 1e6, sum);
    return 0;
}
