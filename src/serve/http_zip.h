/* http_zip.h - HTTP content codings over zlib: request bodies sent with
 * Content-Encoding gzip or deflate (deflate = a zlib stream, as Triton and
 * its clients mean it), and responses compressed for an Accept-Encoding that
 * names one of them. */
#ifndef DM_SERVE_HTTP_ZIP_H
#define DM_SERVE_HTTP_ZIP_H

#include <stddef.h>

enum { DM_ZIP_NONE = 0, DM_ZIP_GZIP, DM_ZIP_DEFLATE, DM_ZIP_UNKNOWN };

/* The coding a Content-Encoding value names (NULL or "identity": none). */
int dm_zip_content_encoding(const char *value);
/* The coding to answer with for an Accept-Encoding value: gzip, else deflate,
 * else none (q=0 refuses one). */
int dm_zip_accept(const char *value);

/* Inflates in[n] (gzip or zlib framing, either) into a malloc'd buffer of at
 * most max bytes (plus a NUL after). 0 and *out, *out_len; -1 for a corrupt
 * or truncated stream, -2 when it inflates to more than max, -3 out of memory. */
int dm_zip_inflate(const char *in, size_t n, size_t max, char **out, size_t *out_len);
/* Compresses in[n] with coding (DM_ZIP_GZIP or DM_ZIP_DEFLATE); malloc'd, NULL on failure. */
char *dm_zip_deflate(const char *in, size_t n, int coding, size_t *out_len);

#endif
