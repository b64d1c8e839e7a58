/* pbtxt.c - the protobuf text format: a tokenizer (identifiers, numbers in
 * every base protobuf accepts, strings with C escapes, comments) and a
 * recursive-descent reader of message bodies that hands each field to the
 * schema's callback (pbtxt.h). Nothing here knows a field name.
 * Syntax: ../shared/research/serving.md section 3. */
#include "serve/pbtxt.h"
#include "base/base.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- errors and characters */

int dm_pbtxt_fail(dm_pbtxt *p, int line, const char *field, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (field)
        dm_fail(p->err, DM_ERR_FORMAT, "%s:%d: field '%s%s': %s", p->path, line, p->prefix, field, msg);
    else if (p->prefix[0])  /* the enclosing message, without the trailing '.' */
        dm_fail(p->err, DM_ERR_FORMAT, "%s:%d: field '%.*s': %s", p->path, line,
                (int)strlen(p->prefix) - 1, p->prefix, msg);
    else
        dm_fail(p->err, DM_ERR_FORMAT, "%s:%d: %s", p->path, line, msg);
    return -1;
}

static int is_id0(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_dig(int c) { return c >= '0' && c <= '9'; }
static int is_id(int c) { return is_id0(c) || is_dig(c); }
static int is_hex(int c) { return is_dig(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int hexval(int c) { return is_dig(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

static int cur(const dm_pbtxt *p) { return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1; }
static int at(const dm_pbtxt *p, size_t k) { return p->pos + k < p->n ? (unsigned char)p->s[p->pos + k] : -1; }

/* A printable description of character c for messages. */
static const char *chdesc(int c, char buf[16])
{
    if (c < 0) return "end of file";
    if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(dm_pbtxt *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c == '\n') {
            p->line++;
            p->pos++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
            p->pos++;
        } else if (c == '#') {
            while (p->pos < p->n && p->s[p->pos] != '\n') p->pos++;
        } else {
            break;
        }
    }
}

static int read_ident(dm_pbtxt *p, const char *field, char *buf, size_t cap)
{
    size_t k = 0;
    while (is_id(cur(p))) {
        if (k + 1 >= cap) return dm_pbtxt_fail(p, p->line, field, "identifier longer than %zu characters", cap - 1);
        buf[k++] = (char)cur(p);
        p->pos++;
    }
    buf[k] = 0;
    return 0;
}

/* ---------------------------------------------------------------- scalars */

static int put_byte(dm_pbtxt *p, const char *field, int line, dm_pbtxt_tok *t, unsigned b)
{
    if (t->len + 1 >= DM_PBTXT_TOK_STR) return dm_pbtxt_fail(p, line, field, "string longer than %d bytes", DM_PBTXT_TOK_STR - 1);
    t->s[t->len++] = (char)b;
    t->s[t->len] = 0;
    return 0;
}

/* One quoted literal at the cursor, appended to t. */
static int read_string(dm_pbtxt *p, const char *field, dm_pbtxt_tok *t)
{
    int q = cur(p), line = p->line;
    p->pos++;
    for (;;) {
        int c = cur(p);
        if (c < 0 || c == '\n') return dm_pbtxt_fail(p, line, field, "unterminated string");
        p->pos++;
        if (c == q) return 0;
        if (c != '\\') {
            if (put_byte(p, field, line, t, (unsigned)c)) return -1;
            continue;
        }
        int e = cur(p);
        if (e < 0 || e == '\n') return dm_pbtxt_fail(p, line, field, "unterminated string");
        p->pos++;
        unsigned v;
        switch (e) {
        case 'n': v = '\n'; break;
        case 't': v = '\t'; break;
        case 'r': v = '\r'; break;
        case 'a': v = '\a'; break;
        case 'b': v = '\b'; break;
        case 'f': v = '\f'; break;
        case 'v': v = '\v'; break;
        case '\\': v = '\\'; break;
        case '\'': v = '\''; break;
        case '"': v = '"'; break;
        case '?': v = '?'; break;
        case 'x': case 'X':
            if (!is_hex(cur(p))) return dm_pbtxt_fail(p, line, field, "invalid escape '\\x' without hex digits");
            v = 0;
            for (int k = 0; k < 2 && is_hex(cur(p)); k++, p->pos++) v = v * 16 + (unsigned)hexval(cur(p));
            break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
            v = (unsigned)(e - '0');
            for (int k = 0; k < 2 && cur(p) >= '0' && cur(p) <= '7'; k++, p->pos++) v = v * 8 + (unsigned)(cur(p) - '0');
            if (v > 255) return dm_pbtxt_fail(p, line, field, "octal escape \\%o out of range", v);
            break;
        case 'u': case 'U': {
            int nd = e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < nd; k++, p->pos++) {
                if (!is_hex(cur(p))) return dm_pbtxt_fail(p, line, field, "invalid escape '\\%c': needs %d hex digits", e, nd);
                cp = cp * 16 + (uint32_t)hexval(cur(p));
            }
            if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return dm_pbtxt_fail(p, line, field, "invalid escape '\\%c': code point 0x%" PRIx32 " not allowed", e, cp);
            unsigned char u[4];
            int nu;
            if (cp < 0x80) { u[0] = (unsigned char)cp; nu = 1; }
            else if (cp < 0x800) { u[0] = (unsigned char)(0xc0 | (cp >> 6)); u[1] = (unsigned char)(0x80 | (cp & 0x3f)); nu = 2; }
            else if (cp < 0x10000) {
                u[0] = (unsigned char)(0xe0 | (cp >> 12)); u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                u[2] = (unsigned char)(0x80 | (cp & 0x3f)); nu = 3;
            } else {
                u[0] = (unsigned char)(0xf0 | (cp >> 18)); u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (unsigned char)(0x80 | (cp & 0x3f)); nu = 4;
            }
            for (int k = 0; k < nu; k++)
                if (put_byte(p, field, line, t, u[k])) return -1;
            continue;
        }
        default: {
            char b[16];
            return dm_pbtxt_fail(p, line, field, "invalid escape '\\' followed by %s", chdesc(e, b));
        }
        }
        if (v == 0) return dm_pbtxt_fail(p, line, field, "NUL character in string is not supported");
        if (put_byte(p, field, line, t, v)) return -1;
    }
}

static int ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if ((*a | 0x20) != (*b | 0x20)) return 0;
    return *a == *b;
}

/* Rejects `10bar`, `1.5.3`, `0x1g`: a number token directly followed by more. */
static int number_end(dm_pbtxt *p, const char *field, int line, size_t start)
{
    if (!is_id(cur(p)) && cur(p) != '.') return 0;
    size_t e = p->pos;
    while (e < p->n && (is_id((unsigned char)p->s[e]) || p->s[e] == '.')) e++;
    return dm_pbtxt_fail(p, line, field, "invalid number '%.*s' (a number followed directly by an identifier)",
                         (int)DM_MIN(e - start, 60), p->s + start);
}

static int read_number(dm_pbtxt *p, const char *field, dm_pbtxt_tok *t)
{
    int line = p->line;
    size_t start = p->pos;
    t->neg = 0;
    t->mag = 0;
    if (cur(p) == '-') {
        t->neg = 1;
        p->pos++;
    }
    if (is_id0(cur(p))) {  /* -inf, -nan */
        char id[32];
        if (read_ident(p, field, id, sizeof id)) return -1;
        if (!ieq(id, "inf") && !ieq(id, "infinity") && !ieq(id, "nan") && !ieq(id, "inff") && !ieq(id, "nanf"))
            return dm_pbtxt_fail(p, line, field, "expected a number after '-', got '%s'", id);
        t->kind = DM_PBTXT_FLOAT;
        t->f = ieq(id, "nan") || ieq(id, "nanf") ? NAN : (t->neg ? -INFINITY : INFINITY);
        return 0;
    }
    if (cur(p) == '0' && (at(p, 1) == 'x' || at(p, 1) == 'X')) {
        p->pos += 2;
        if (!is_hex(cur(p))) return dm_pbtxt_fail(p, line, field, "invalid hex number: no digits after '0x'");
        for (; is_hex(cur(p)); p->pos++) {
            if (t->mag > (UINT64_MAX >> 4)) return dm_pbtxt_fail(p, line, field, "integer out of range");
            t->mag = t->mag * 16 + (uint64_t)hexval(cur(p));
        }
        t->kind = DM_PBTXT_INT;
        return number_end(p, field, line, start);
    }
    size_t dstart = p->pos;
    int is_float = 0, nd = 0;
    while (is_dig(cur(p))) { p->pos++; nd++; }
    if (cur(p) == '.') {
        is_float = 1;
        p->pos++;
        while (is_dig(cur(p))) { p->pos++; nd++; }
    }
    if (!nd) return dm_pbtxt_fail(p, line, field, "invalid number");
    if ((cur(p) == 'e' || cur(p) == 'E') &&
        (is_dig(at(p, 1)) || ((at(p, 1) == '+' || at(p, 1) == '-') && is_dig(at(p, 2))))) {
        is_float = 1;
        p->pos += 2;
        while (is_dig(cur(p))) p->pos++;
    }
    size_t dend = p->pos;
    if (cur(p) == 'f' || cur(p) == 'F') {
        is_float = 1;
        p->pos++;
    }
    if (number_end(p, field, line, start)) return -1;
    if (is_float) {
        char buf[128];
        size_t k = dend - dstart;
        if (k >= sizeof buf) return dm_pbtxt_fail(p, line, field, "number too long");
        memcpy(buf, p->s + dstart, k);
        buf[k] = 0;
        t->kind = DM_PBTXT_FLOAT;
        t->f = strtod(buf, NULL);
        if (t->neg) t->f = -t->f;
        return 0;
    }
    int base = 10;
    if (p->s[dstart] == '0' && dend - dstart > 1) base = 8;
    for (size_t i = dstart; i < dend; i++) {
        unsigned d = (unsigned)(p->s[i] - '0');
        if (d >= (unsigned)base)
            return dm_pbtxt_fail(p, line, field, "invalid octal number '%.*s'", (int)DM_MIN(dend - start, 40), p->s + start);
        if (t->mag > (UINT64_MAX - d) / (unsigned)base) return dm_pbtxt_fail(p, line, field, "integer out of range");
        t->mag = t->mag * (unsigned)base + d;
    }
    t->kind = DM_PBTXT_INT;
    return 0;
}

static int read_scalar(dm_pbtxt *p, const char *field, dm_pbtxt_tok *t)
{
    skip_ws(p);
    t->line = p->line;
    t->len = 0;
    t->s[0] = 0;
    int c = cur(p);
    if (c == '"' || c == '\'') {
        t->kind = DM_PBTXT_STR;
        do {
            if (read_string(p, field, t)) return -1;
            skip_ws(p);
        } while (cur(p) == '"' || cur(p) == '\'');
        return 0;
    }
    if (c == '-' || is_dig(c) || (c == '.' && is_dig(at(p, 1)))) return read_number(p, field, t);
    if (is_id0(c)) {
        t->kind = DM_PBTXT_IDENT;
        return read_ident(p, field, t->s, sizeof t->s);
    }
    char b[16];
    return dm_pbtxt_fail(p, p->line, field, "expected a value, got %s", chdesc(c, b));
}

static const char *tdesc(const dm_pbtxt_tok *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case DM_PBTXT_INT: snprintf(buf, cap, "integer %s%" PRIu64, t->neg ? "-" : "", t->mag); break;
    case DM_PBTXT_FLOAT: snprintf(buf, cap, "float %g", t->f); break;
    case DM_PBTXT_STR: snprintf(buf, cap, "string \"%.40s\"", t->s); break;
    default: snprintf(buf, cap, "'%.40s'", t->s); break;
    }
    return buf;
}

int dm_pbtxt_tok_i64(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int64_t lo, int64_t hi, int64_t *out)
{
    char b[80];
    if (t->kind != DM_PBTXT_INT) return dm_pbtxt_fail(p, t->line, f, "expected an integer, got %s", tdesc(t, b, sizeof b));
    int64_t v;
    if (!t->neg) {
        if (t->mag > (uint64_t)INT64_MAX) return dm_pbtxt_fail(p, t->line, f, "integer %" PRIu64 " out of range", t->mag);
        v = (int64_t)t->mag;
    } else {
        if (t->mag > (uint64_t)INT64_MAX + 1) return dm_pbtxt_fail(p, t->line, f, "integer -%" PRIu64 " out of range", t->mag);
        v = t->mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)t->mag;
    }
    if (v < lo) return dm_pbtxt_fail(p, t->line, f, "value %" PRId64 " must be >= %" PRId64, v, lo);
    if (v > hi) return dm_pbtxt_fail(p, t->line, f, "value %" PRId64 " must be <= %" PRId64, v, hi);
    *out = v;
    return 0;
}

int dm_pbtxt_tok_int(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int64_t lo, int64_t hi, int *out)
{
    int64_t v;
    if (dm_pbtxt_tok_i64(p, f, t, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int dm_pbtxt_tok_bool(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, int *out)
{
    if (t->kind == DM_PBTXT_IDENT) {
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "t")) { *out = 1; return 0; }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False") || !strcmp(t->s, "f")) { *out = 0; return 0; }
    } else if (t->kind == DM_PBTXT_INT && !t->neg && t->mag <= 1) {
        *out = (int)t->mag;
        return 0;
    }
    char b[80];
    return dm_pbtxt_fail(p, t->line, f, "expected a bool (true/false), got %s", tdesc(t, b, sizeof b));
}

int dm_pbtxt_tok_str(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, char *dst, size_t cap)
{
    char b[80];
    if (t->kind != DM_PBTXT_STR) return dm_pbtxt_fail(p, t->line, f, "expected a string, got %s", tdesc(t, b, sizeof b));
    if (t->len >= cap) return dm_pbtxt_fail(p, t->line, f, "string longer than %zu bytes", cap - 1);
    memcpy(dst, t->s, t->len + 1);
    return 0;
}

/* Index into e[0..n) of t (an identifier or the enum's integer). */
int dm_pbtxt_tok_enum(dm_pbtxt *p, const char *f, const dm_pbtxt_tok *t, const dm_pbtxt_enum *e, int n,
                      const char *ename, int *idx)
{
    for (int i = 0; i < n; i++) {
        if ((t->kind == DM_PBTXT_IDENT && !strcmp(t->s, e[i].name)) ||
            (t->kind == DM_PBTXT_INT && !t->neg && t->mag == (uint64_t)e[i].value)) {
            *idx = i;
            return 0;
        }
    }
    char b[80];
    if (t->kind == DM_PBTXT_IDENT || t->kind == DM_PBTXT_INT)
        return dm_pbtxt_fail(p, t->line, f, "unknown %s value %s", ename, tdesc(t, b, sizeof b));
    return dm_pbtxt_fail(p, t->line, f, "expected a %s enum value, got %s", ename, tdesc(t, b, sizeof b));
}

/* ---------------------------------------------------------------- values and messages */

/* A scalar field's value(s): `name: v` or `name: [v, ...]`. */
int dm_pbtxt_scalars_open(dm_pbtxt *p, const char *f, int colon, int line, dm_pbtxt_iter *v)
{
    if (!colon) return dm_pbtxt_fail(p, line, f, "expected ':' after the field name");
    skip_ws(p);
    v->i = 0;
    v->list = cur(p) == '[';
    if (v->list) p->pos++;
    return 0;
}

/* 1: t holds the next value; 0: done; -1: error. */
int dm_pbtxt_scalars_next(dm_pbtxt *p, const char *f, dm_pbtxt_iter *v, dm_pbtxt_tok *t)
{
    if (!v->list) {
        if (v->i) return 0;
        v->i++;
        return read_scalar(p, f, t) ? -1 : 1;
    }
    skip_ws(p);
    if (cur(p) == ']') {
        p->pos++;
        return 0;
    }
    if (v->i) {
        char b[16];
        if (cur(p) != ',') return dm_pbtxt_fail(p, p->line, f, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b));
        p->pos++;
    }
    v->i++;
    return read_scalar(p, f, t) ? -1 : 1;
}

int dm_pbtxt_scalar(dm_pbtxt *p, const char *f, int colon, int line, dm_pbtxt_tok *t)
{
    if (!colon) return dm_pbtxt_fail(p, line, f, "expected ':' after the field name");
    skip_ws(p);
    if (cur(p) == '[') return dm_pbtxt_fail(p, p->line, f, "not a repeated field: a list is not allowed");
    if (cur(p) == '{' || cur(p) == '<') return dm_pbtxt_fail(p, p->line, f, "expected a value, not a message");
    return read_scalar(p, f, t);
}

void dm_pbtxt_messages_open(dm_pbtxt *p, dm_pbtxt_iter *v)
{
    skip_ws(p);
    v->i = 0;
    v->list = cur(p) == '[';
    if (v->list) p->pos++;
}

/* 1: an opening '{' or '<' was consumed (*close, *line set); 0: done; -1: error. */
int dm_pbtxt_messages_next(dm_pbtxt *p, const char *f, dm_pbtxt_iter *v, int *close, int *line)
{
    char b[16];
    skip_ws(p);
    if (v->list) {
        if (cur(p) == ']') {
            p->pos++;
            return 0;
        }
        if (v->i) {
            if (cur(p) != ',') return dm_pbtxt_fail(p, p->line, f, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b));
            p->pos++;
            skip_ws(p);
        }
    } else if (v->i) {
        return 0;
    }
    v->i++;
    int c = cur(p);
    if (c == '{') *close = '}';
    else if (c == '<') *close = '>';
    else return dm_pbtxt_fail(p, p->line, f, "expected '{' or '<' to open a message, got %s", chdesc(c, b));
    *line = p->line;
    p->pos++;
    return 1;
}

int dm_pbtxt_message(dm_pbtxt *p, const char *f, int *close, int *line)
{
    dm_pbtxt_iter v;
    skip_ws(p);
    if (cur(p) == '[') return dm_pbtxt_fail(p, p->line, f, "not a repeated field: a list is not allowed");
    dm_pbtxt_messages_open(p, &v);
    return dm_pbtxt_messages_next(p, f, &v, close, line) < 0 ? -1 : 0;
}

/* Fields up to `close` (0: end of file). */
static int parse_body(dm_pbtxt *p, int close, int open_line, dm_pbtxt_field_fn fn, void *ctx)
{
    char b[16];
    if (++p->depth > DM_PBTXT_MAX_DEPTH)
        return dm_pbtxt_fail(p, p->line, NULL, "messages nested deeper than %d", DM_PBTXT_MAX_DEPTH);
    for (;;) {
        skip_ws(p);
        int c = cur(p);
        if (c < 0) {
            if (!close) break;
            return dm_pbtxt_fail(p, p->line, NULL, "unexpected end of file: '%c' opened at line %d is not closed",
                                 close == '}' ? '{' : '<', open_line);
        }
        if (close && c == close) {
            p->pos++;
            break;
        }
        if (!is_id0(c)) {
            if (c == '}' || c == '>' || c == ']')
                return dm_pbtxt_fail(p, p->line, NULL, "unexpected '%c' (unbalanced brackets)", c);
            return dm_pbtxt_fail(p, p->line, NULL, "expected a field name, got %s", chdesc(c, b));
        }
        char name[64];
        int line = p->line;
        if (read_ident(p, NULL, name, sizeof name)) return -1;
        skip_ws(p);
        int colon = cur(p) == ':';
        if (colon) p->pos++;
        if (fn(p, name, colon, line, ctx)) return -1;
        skip_ws(p);
        if (cur(p) == ',' || cur(p) == ';') p->pos++;
    }
    p->depth--;
    return 0;
}

/* A sub-message body, with "name." added to the error prefix meanwhile. */
int dm_pbtxt_sub(dm_pbtxt *p, const char *name, int close, int line, dm_pbtxt_field_fn fn, void *ctx)
{
    size_t k = strlen(p->prefix);
    snprintf(p->prefix + k, sizeof p->prefix - k, "%s.", name);
    int r = parse_body(p, close, line, fn, ctx);
    if (r == 0) p->prefix[k] = 0;
    return r;
}

static int skip_field(dm_pbtxt *p, const char *name, int colon, int line, void *ctx);

int dm_pbtxt_skip(dm_pbtxt *p, const char *name, int colon, int line)
{
    dm_pbtxt_tok *t = NULL;
    int r = 0, c, close, mline;
    skip_ws(p);
    c = cur(p);
    if (c == '{' || c == '<') {
        dm_pbtxt_iter v;
        dm_pbtxt_messages_open(p, &v);
        if (dm_pbtxt_messages_next(p, name, &v, &close, &mline) < 0) return -1;
        return dm_pbtxt_sub(p, name, close, mline, skip_field, NULL);
    }
    if (c != '[' && !colon) return dm_pbtxt_fail(p, line, name, "expected ':' after the field name");
    t = malloc(sizeof *t);
    if (!t) return dm_pbtxt_fail(p, line, name, "out of memory");
    if (c != '[') {
        r = read_scalar(p, name, t);
        free(t);
        return r;
    }
    p->pos++;
    for (int i = 0;; i++) {
        char b[16];
        skip_ws(p);
        if (cur(p) == ']') {
            p->pos++;
            break;
        }
        if (i) {
            if (cur(p) != ',') {
                r = dm_pbtxt_fail(p, p->line, name, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b));
                break;
            }
            p->pos++;
            skip_ws(p);
        }
        c = cur(p);
        if (c == '{' || c == '<') {
            mline = p->line;
            p->pos++;
            if ((r = dm_pbtxt_sub(p, name, c == '{' ? '}' : '>', mline, skip_field, NULL))) break;
        } else {
            if (!colon) { r = dm_pbtxt_fail(p, line, name, "expected ':' after the field name"); break; }
            if ((r = read_scalar(p, name, t))) break;
        }
    }
    free(t);
    return r;
}

static int skip_field(dm_pbtxt *p, const char *name, int colon, int line, void *ctx)
{
    DM_UNUSED(ctx);
    return dm_pbtxt_skip(p, name, colon, line);
}

int dm_pbtxt_once(dm_pbtxt *p, unsigned *seen, unsigned bit, const char *f, int line)
{
    if (*seen & bit) return dm_pbtxt_fail(p, line, f, "set more than once (not a repeated field)");
    *seen |= bit;
    return 0;
}

int dm_pbtxt_unknown(dm_pbtxt *p, const char *f, int line, const char *msg)
{
    return dm_pbtxt_fail(p, line, f, "unknown field in %s", msg);
}

/* ---------------------------------------------------------------- documents and files */

void dm_pbtxt_init(dm_pbtxt *p, const char *text, size_t len, const char *path, dm_error *err)
{
    memset(p, 0, sizeof *p);
    p->s = text ? text : "";
    p->n = len;
    p->line = 1;
    p->path = path ? path : "config.pbtxt";
    p->err = err;
}

int dm_pbtxt_parse(dm_pbtxt *p, dm_pbtxt_field_fn fn, void *ctx) { return parse_body(p, 0, 1, fn, ctx); }

dm_status dm_pbtxt_read_file(const char *path, size_t max, char **out, size_t *len, dm_error *err)
{
    *out = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    dm_status s = DM_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= max) {
                s = dm_fail(err, DM_ERR_FORMAT, "%s:1: file larger than %zu bytes", path, max);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, fp);
        n += k;
        if (k == 0) {
            if (ferror(fp)) s = dm_fail(err, DM_ERR_IO, "%s: read failed", path);
            break;
        }
    }
    fclose(fp);
    if (!buf) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    if (s != DM_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    *len = n;
    return DM_OK;
}
