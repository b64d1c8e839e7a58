/* pbtxt.h - a reader for the protobuf text format (what config.pbtxt is written
 * in), with no knowledge of any schema.
 *
 * A streaming callback API: dm_pbtxt_parse reads `name: value`, `name { ... }`,
 * `name [ ... ]` fields and calls a dm_pbtxt_field_fn for each field name; the
 * callback then reads that field's value with the calls below (a scalar, a
 * list of scalars, one message or a list of messages, whose body it parses with
 * dm_pbtxt_sub and another callback) or skips it. The schema lives in the
 * callbacks (triton_config.c), the syntax here.
 *
 * Every call returns 0 on success and -1 on an error, which is recorded once in
 * the dm_error given to dm_pbtxt_init as "PATH:LINE: field 'a.b.c': problem"
 * (dm_pbtxt_fail), the field path being the messages the reader is inside.
 * Syntax accepted: ../shared/research/serving.md section 3. */
#ifndef DM_SERVE_PBTXT_H
#define DM_SERVE_PBTXT_H

#include "deepmoe.h"

#include <stddef.h>
#include <stdint.h>

#define DM_PBTXT_TOK_STR 1024   /* longest string value + 1 */
#define DM_PBTXT_MAX_DEPTH 64   /* messages nested deeper are refused */

/* The reader's state; fill with dm_pbtxt_init. */
typedef struct dm_pbtxt {
    const char *s;
    size_t n, pos;
    int line;
    const char *path;
    dm_error *err;
    char prefix[256];   /* "input." while inside an input entry */
    int depth;
} dm_pbtxt;

enum { DM_PBTXT_INT, DM_PBTXT_FLOAT, DM_PBTXT_STR, DM_PBTXT_IDENT };

/* One scalar value. */
typedef struct dm_pbtxt_tok {
    int kind, line;                 /* DM_PBTXT_*; the line it starts on */
    int neg;                        /* DM_PBTXT_INT: sign and magnitude */
    uint64_t mag;
    double f;                       /* DM_PBTXT_FLOAT */
    size_t len;
    char s[DM_PBTXT_TOK_STR];       /* DM_PBTXT_STR contents / DM_PBTXT_IDENT text, NUL-terminated */
} dm_pbtxt_tok;

/* Position in a field's values: one value or a `[ ... ]` list. */
typedef struct dm_pbtxt_iter { int list, i; } dm_pbtxt_iter;

/* An enum value: its identifier and its number. */
typedef struct dm_pbtxt_enum { const char *name; int value; } dm_pbtxt_enum;

/* Called for each field of a message body: its name, whether a ':' followed
 * it, the line of the name. Reads (or skips) the value; 0 or -1. */
typedef int (*dm_pbtxt_field_fn)(dm_pbtxt *p, const char *name, int colon, int line, void *ctx);

/* text: len bytes, not necessarily NUL-terminated (NULL if len is 0); path
 * names the file in messages (NULL: "config.pbtxt"). */
void dm_pbtxt_init(dm_pbtxt *p, const char *text, size_t len, const char *path, dm_error *err);
/* The whole text as one message body. */
int dm_pbtxt_parse(dm_pbtxt *p, dm_pbtxt_field_fn fn, void *ctx);
/* Records "PATH:LINE: field 'PREFIX.field': msg" (field NULL: the enclosing
 * message, or no field at top level) as DM_ERR_FORMAT; returns -1. */
int dm_pbtxt_fail(dm_pbtxt *p, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---------------------------------------------------------------- reading a field's value */

/* A non-repeated scalar field: `name: v` (a list or a message is refused). */
int dm_pbtxt_scalar(dm_pbtxt *p, const char *f, int colon, int line, dm_pbtxt_tok *t);
/* A repeated scalar field, `name: v` or `name: [v, ...]`: open, then next
 * until it returns 0 (1: t holds the next value; -1: error). */
int dm_pbtxt_scalars_open(dm_pbtxt *p, const char *f, int colon, int line, dm_pbtxt_iter *v);
int dm_pbtxt_scalars_next(dm_pbtxt *p, const char *f, dm_pbtxt_iter *v, dm_pbtxt_tok *t);
/* A non-repeated message field: consumes the opening '{' or '<'; *close is the
 * bracket that ends it and *line the line it opens on (for dm_pbtxt_sub). */
int dm_pbtxt_message(dm_pbtxt *p, const char *f, int *close, int *line);
/* A repeated message field, `name { }` or `name [ { }, ... ]`: open, then next
 * until it returns 0 (1: a message was opened, parse it with dm_pbtxt_sub). */
void dm_pbtxt_messages_open(dm_pbtxt *p, dm_pbtxt_iter *v);
int dm_pbtxt_messages_next(dm_pbtxt *p, const char *f, dm_pbtxt_iter *v, int *close, int *line);
/* The body of an opened message up to `close`, calling fn for its fields, with
 * "name." added to the field path of messages meanwhile. */
int dm_pbtxt_sub(dm_pbtxt *p, const char *name, int close, int line, dm_pbtxt_field_fn fn, void *ctx);
/* Skips a field's value of any shape (scalars, lists, nested messages). */
int dm_pbtxt_skip(dm_pbtxt *p, const char *name, int colon, int line);

/* ---------------------------------------------------------------- helpers for schemas */

/* Refuses a second occurrence of a non-repeated field: bit in *seen. */
int dm_pbtxt_once(dm_pbtxt *p, unsigned *seen, unsigned bit, const char *f, int line);
/* "unknown field in MSG". */
int dm_pbtxt_unknown(dm_pbtxt *p, const char *f, int line, const char *msg);

/* ---------------------------------------------------------------- converting a value */

/* An integer in lo..hi. */
int dm_pbtxt_tok_i64(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int64_t lo, int64_t hi, int64_t *out);
int dm_pbtxt_tok_int(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int64_t lo, int64_t hi, int *out);
/* true/True/t/false/False/f or 0/1. */
int dm_pbtxt_tok_bool(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int *out);
/* A string of fewer than cap bytes, copied with its NUL. */
int dm_pbtxt_tok_str(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, char *dst, size_t cap);
/* *idx = the index into e[0..n) of t (an identifier or the enum's number);
 * ename names the enum type in messages. */
int dm_pbtxt_tok_enum(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, const dm_pbtxt_enum *e, int n,
                      const char *ename, int *idx);

/* ---------------------------------------------------------------- files */

/* Reads a whole file of at most max bytes into *buf (malloc'd, *len bytes). */
dm_status dm_pbtxt_read_file(const char *path, size_t max, char **buf, size_t *len, dm_error *err);

#endif
