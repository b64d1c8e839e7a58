/* fuzz.h - what the libFuzzer harnesses (tests/fuzz/fuzz_<target>.c) share:
 * the input as a memory-backed file, a property check that crashes, and the
 * KServe error-body property. Included first by every harness (it sets
 * _GNU_SOURCE for memfd_create and F_SETPIPE_SZ; the library does not). */
#ifndef DM_FUZZ_H
#define DM_FUZZ_H

#define _GNU_SOURCE
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "deepmoe.h"
#include "serve/infer_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken property is a crash, so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz property failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            __builtin_trap();                                                                 \
        }                                                                                     \
    } while (0)

/* Writes all of data[size] to fd. */
static inline void fuzz_write_all(int fd, const uint8_t *data, size_t size)
{
    while (size) {
        ssize_t w = write(fd, data, size);
        FUZZ_CHECK(w > 0);
        data += w;
        size -= (size_t)w;
    }
}

/* data[size] as a file in memory (memfd); path gets "/proc/self/fd/N" (>= 32
 * bytes). Returns the fd, which the caller closes. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path)
{
    int fd = memfd_create("deepmoe-fuzz", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    fuzz_write_all(fd, data, size);
    snprintf(path, 32, "/proc/self/fd/%d", fd);
    return fd;
}

/* The server sends dm_infer_error_body(msg) for every refused request: it must
 * be a JSON object {"error": "..."} whatever bytes the message quotes. */
static inline void fuzz_check_error_body(const char *msg)
{
    FUZZ_CHECK(msg[0] != '\0');
    char *body = dm_infer_error_body(msg);
    FUZZ_CHECK(body != NULL);
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    if (!j) fprintf(stderr, "error body is not JSON (%s): %s\n", je.text, body);
    FUZZ_CHECK(j != NULL);
    FUZZ_CHECK(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    free(body);
}

#endif
