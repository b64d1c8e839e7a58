/* fuzz_npy.c - dm_npy_read on any bytes, from a regular file or a pipe (the
 * reader sizes the two differently): the first input byte chooses (odd: pipe),
 * the rest is the file. Property: a read array's values are all readable. */
#include "fuzz.h"

#include <fcntl.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int use_pipe = data[0] & 1;
    data++, size--;
    char path[32];
    int fd;
    if (use_pipe) {
        int p[2];
        FUZZ_CHECK(pipe(p) == 0);
        /* the whole input must fit the pipe, as nothing reads it yet */
        if (size > 65536 && fcntl(p[1], F_SETPIPE_SZ, (int)size) < 0) {
            close(p[0]); close(p[1]);
            return 0;
        }
        fuzz_write_all(p[1], data, size);
        close(p[1]);
        fd = p[0];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    } else {
        fd = fuzz_memfile(data, size, path);
    }
    dm_array a;
    dm_error err;
    if (dm_npy_read(path, &a, &err) == DM_OK) {
        volatile float sum = 0;
        for (int64_t i = 0; i < a.rows * a.cols; i++) sum += a.data[i];
        (void)sum;
    }
    dm_array_free(&a);
    close(fd);
    return 0;
}
