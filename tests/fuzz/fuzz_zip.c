/* fuzz_zip.c - the server's content codings (serve/http_zip.h) on any bytes:
 * dm_zip_inflate of the input as a request body (gzip or zlib framing, at
 * most 64 KiB inflated), and the first line of the input as a
 * Content-Encoding / Accept-Encoding value. Properties: an inflated body is
 * within the limit and NUL-terminated; deflating it again (both codings)
 * and inflating gives the same bytes back; an over-limit stream says so
 * (-2), never more. */
#include "fuzz.h"
#include "serve/http_zip.h"

#define MAX_OUT ((size_t)64 << 10)

static void round_trip(const char *p, size_t n, int coding)
{
    size_t zn = 0, back_n = 0;
    char *z = dm_zip_deflate(p, n, coding, &zn);
    FUZZ_CHECK(z != NULL);
    char *back = NULL;
    FUZZ_CHECK(dm_zip_inflate(z, zn, MAX_OUT, &back, &back_n) == 0);
    FUZZ_CHECK(back_n == n && memcmp(back, p, n) == 0);
    free(back);
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = NULL;
    size_t n = 0;
    int rc = dm_zip_inflate((const char *)data, size, MAX_OUT, &out, &n);
    FUZZ_CHECK(rc == 0 || rc == -1 || rc == -2 || rc == -3);
    if (rc == 0) {
        FUZZ_CHECK(out != NULL && n <= MAX_OUT && out[n] == 0);
        round_trip(out, n, DM_ZIP_GZIP);
        round_trip(out, n, DM_ZIP_DEFLATE);
        free(out);
    } else {
        FUZZ_CHECK(out == NULL && n == 0);
    }
    /* a header value: up to the first newline, as a C string */
    size_t line = 0;
    while (line < size && line < 256 && data[line] != '\n') line++;
    char value[257];
    memcpy(value, data, line);
    value[line] = 0;
    int ce = dm_zip_content_encoding(value), ae = dm_zip_accept(value);
    FUZZ_CHECK(ce >= DM_ZIP_NONE && ce <= DM_ZIP_UNKNOWN);
    FUZZ_CHECK(ae == DM_ZIP_NONE || ae == DM_ZIP_GZIP || ae == DM_ZIP_DEFLATE);
    return 0;
}
