/* http_zip.c - gzip / deflate content codings (http_zip.h) over zlib. */
#include "serve/http_zip.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

int dm_zip_content_encoding(const char *v)
{
    if (!v || !*v || !strcasecmp(v, "identity")) return DM_ZIP_NONE;
    if (!strcasecmp(v, "gzip") || !strcasecmp(v, "x-gzip")) return DM_ZIP_GZIP;
    if (!strcasecmp(v, "deflate")) return DM_ZIP_DEFLATE;
    return DM_ZIP_UNKNOWN;
}

/* 1 if the comma list v names token with a q other than 0. */
static int accepts(const char *v, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = v; *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *semi = memchr(p, ';', (size_t)(e - p));
        const char *ne = semi ? semi : e;
        while (ne > p && ne[-1] == ' ') ne--;
        if ((size_t)(ne - p) == tl && !strncasecmp(p, token, tl)) {
            if (!semi) return 1;
            const char *q = strstr(semi, "q=");
            return !(q && q < e && strtod(q + 2, NULL) == 0.0);
        }
        p = e;
    }
    return 0;
}

int dm_zip_accept(const char *v)
{
    if (!v) return DM_ZIP_NONE;
    if (accepts(v, "gzip")) return DM_ZIP_GZIP;
    if (accepts(v, "deflate")) return DM_ZIP_DEFLATE;
    return DM_ZIP_NONE;
}

int dm_zip_inflate(const char *in, size_t n, size_t max, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK) return -3;   /* 15 + 32: gzip or zlib header, detected */
    size_t cap = n * 4 + 1024 < max + 1 ? n * 4 + 1024 : max + 1;
    char *buf = malloc(cap + 1);
    if (!buf) { inflateEnd(&z); return -3; }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    size_t len = 0;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        if (len == cap) {
            if (cap > max) { free(buf); inflateEnd(&z); return -2; }
            size_t nc = cap * 2 < max + 1 ? cap * 2 : max + 1;
            char *b = realloc(buf, nc + 1);
            if (!b) { free(buf); inflateEnd(&z); return -3; }
            buf = b;
            cap = nc;
        }
        z.next_out = (Bytef *)buf + len;
        z.avail_out = (uInt)(cap - len);
        rc = inflate(&z, Z_NO_FLUSH);
        len = cap - z.avail_out;
        if (rc == Z_STREAM_END) break;
        if (rc != Z_OK || (z.avail_in == 0 && z.avail_out != 0)) {   /* corrupt, or the input ended early */
            free(buf);
            inflateEnd(&z);
            return -1;
        }
    }
    inflateEnd(&z);
    if (len > max) { free(buf); return -2; }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return 0;
}

char *dm_zip_deflate(const char *in, size_t n, int coding, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* level 1: an answer is small and latency counts more than its bytes */
    if (deflateInit2(&z, 1, Z_DEFLATED, coding == DM_ZIP_GZIP ? 15 + 16 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, (uLong)n);
    char *buf = malloc(cap ? cap : 1);
    if (!buf) { deflateEnd(&z); return NULL; }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) { free(buf); return NULL; }
    return buf;
}
