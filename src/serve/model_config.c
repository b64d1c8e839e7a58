/* model_config.c - Triton config.pbtxt: a protobuf text-format tokenizer and
 * recursive-descent parser for the ModelConfig subset deepmoe serves, its
 * validation and normalisation, and the text and JSON renderings.
 * Syntax and field rules: ../shared/research/serving.md section 3. */
#include "deepmoe.h"
#include "serve/model_config.h"
#include "base/base.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MC_MAX_DEPTH 64
#define MC_TOK_STR 1024
#define MC_MAX_FILE (16u << 20)

/* ---------------------------------------------------------------- parser state */

typedef struct P {
    const char *s;
    size_t n, pos;
    int line;
    const char *path;
    dm_error *err;
    char prefix[256];   /* "input." while inside an input entry */
    int depth;
} P;

enum { T_INT, T_FLOAT, T_STR, T_IDENT };

typedef struct tok {
    int kind, line;
    int neg;            /* T_INT: sign and magnitude */
    uint64_t mag;
    double f;           /* T_FLOAT */
    size_t len;
    char s[MC_TOK_STR]; /* T_STR contents / T_IDENT text, NUL-terminated */
} tok;

static int perr(P *p, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int perr(P *p, int line, const char *field, const char *fmt, ...)
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

static int cur(const P *p) { return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1; }
static int at(const P *p, size_t k) { return p->pos + k < p->n ? (unsigned char)p->s[p->pos + k] : -1; }

/* A printable description of character c for messages. */
static const char *chdesc(int c, char buf[16])
{
    if (c < 0) return "end of file";
    if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(P *p)
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

static int read_ident(P *p, const char *field, char *buf, size_t cap)
{
    size_t k = 0;
    while (is_id(cur(p))) {
        if (k + 1 >= cap) return perr(p, p->line, field, "identifier longer than %zu characters", cap - 1);
        buf[k++] = (char)cur(p);
        p->pos++;
    }
    buf[k] = 0;
    return 0;
}

/* ---------------------------------------------------------------- scalars */

static int put_byte(P *p, const char *field, int line, tok *t, unsigned b)
{
    if (t->len + 1 >= MC_TOK_STR) return perr(p, line, field, "string longer than %d bytes", MC_TOK_STR - 1);
    t->s[t->len++] = (char)b;
    t->s[t->len] = 0;
    return 0;
}

/* One quoted literal at the cursor, appended to t. */
static int read_string(P *p, const char *field, tok *t)
{
    int q = cur(p), line = p->line;
    p->pos++;
    for (;;) {
        int c = cur(p);
        if (c < 0 || c == '\n') return perr(p, line, field, "unterminated string");
        p->pos++;
        if (c == q) return 0;
        if (c != '\\') {
            if (put_byte(p, field, line, t, (unsigned)c)) return -1;
            continue;
        }
        int e = cur(p);
        if (e < 0 || e == '\n') return perr(p, line, field, "unterminated string");
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
            if (!is_hex(cur(p))) return perr(p, line, field, "invalid escape '\\x' without hex digits");
            v = 0;
            for (int k = 0; k < 2 && is_hex(cur(p)); k++, p->pos++) v = v * 16 + (unsigned)hexval(cur(p));
            break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
            v = (unsigned)(e - '0');
            for (int k = 0; k < 2 && cur(p) >= '0' && cur(p) <= '7'; k++, p->pos++) v = v * 8 + (unsigned)(cur(p) - '0');
            if (v > 255) return perr(p, line, field, "octal escape \\%o out of range", v);
            break;
        case 'u': case 'U': {
            int nd = e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < nd; k++, p->pos++) {
                if (!is_hex(cur(p))) return perr(p, line, field, "invalid escape '\\%c': needs %d hex digits", e, nd);
                cp = cp * 16 + (uint32_t)hexval(cur(p));
            }
            if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return perr(p, line, field, "invalid escape '\\%c': code point 0x%" PRIx32 " not allowed", e, cp);
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
            return perr(p, line, field, "invalid escape '\\' followed by %s", chdesc(e, b));
        }
        }
        if (v == 0) return perr(p, line, field, "NUL character in string is not supported");
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
static int number_end(P *p, const char *field, int line, size_t start)
{
    if (!is_id(cur(p)) && cur(p) != '.') return 0;
    size_t e = p->pos;
    while (e < p->n && (is_id((unsigned char)p->s[e]) || p->s[e] == '.')) e++;
    return perr(p, line, field, "invalid number '%.*s' (a number followed directly by an identifier)",
                (int)DM_MIN(e - start, 60), p->s + start);
}

static int read_number(P *p, const char *field, tok *t)
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
            return perr(p, line, field, "expected a number after '-', got '%s'", id);
        t->kind = T_FLOAT;
        t->f = ieq(id, "nan") || ieq(id, "nanf") ? NAN : (t->neg ? -INFINITY : INFINITY);
        return 0;
    }
    if (cur(p) == '0' && (at(p, 1) == 'x' || at(p, 1) == 'X')) {
        p->pos += 2;
        if (!is_hex(cur(p))) return perr(p, line, field, "invalid hex number: no digits after '0x'");
        for (; is_hex(cur(p)); p->pos++) {
            if (t->mag > (UINT64_MAX >> 4)) return perr(p, line, field, "integer out of range");
            t->mag = t->mag * 16 + (uint64_t)hexval(cur(p));
        }
        t->kind = T_INT;
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
    if (!nd) return perr(p, line, field, "invalid number");
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
        if (k >= sizeof buf) return perr(p, line, field, "number too long");
        memcpy(buf, p->s + dstart, k);
        buf[k] = 0;
        t->kind = T_FLOAT;
        t->f = strtod(buf, NULL);
        if (t->neg) t->f = -t->f;
        return 0;
    }
    int base = 10;
    if (p->s[dstart] == '0' && dend - dstart > 1) base = 8;
    for (size_t i = dstart; i < dend; i++) {
        unsigned d = (unsigned)(p->s[i] - '0');
        if (d >= (unsigned)base) return perr(p, line, field, "invalid octal number '%.*s'", (int)DM_MIN(dend - start, 40), p->s + start);
        if (t->mag > (UINT64_MAX - d) / (unsigned)base) return perr(p, line, field, "integer out of range");
        t->mag = t->mag * (unsigned)base + d;
    }
    t->kind = T_INT;
    return 0;
}

static int read_scalar(P *p, const char *field, tok *t)
{
    skip_ws(p);
    t->line = p->line;
    t->len = 0;
    t->s[0] = 0;
    int c = cur(p);
    if (c == '"' || c == '\'') {
        t->kind = T_STR;
        do {
            if (read_string(p, field, t)) return -1;
            skip_ws(p);
        } while (cur(p) == '"' || cur(p) == '\'');
        return 0;
    }
    if (c == '-' || is_dig(c) || (c == '.' && is_dig(at(p, 1)))) return read_number(p, field, t);
    if (is_id0(c)) {
        t->kind = T_IDENT;
        return read_ident(p, field, t->s, sizeof t->s);
    }
    char b[16];
    return perr(p, p->line, field, "expected a value, got %s", chdesc(c, b));
}

static const char *tdesc(const tok *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case T_INT: snprintf(buf, cap, "integer %s%" PRIu64, t->neg ? "-" : "", t->mag); break;
    case T_FLOAT: snprintf(buf, cap, "float %g", t->f); break;
    case T_STR: snprintf(buf, cap, "string \"%.40s\"", t->s); break;
    default: snprintf(buf, cap, "'%.40s'", t->s); break;
    }
    return buf;
}

static int tok_i64(P *p, const char *f, const tok *t, int64_t lo, int64_t hi, int64_t *out)
{
    char b[80];
    if (t->kind != T_INT) return perr(p, t->line, f, "expected an integer, got %s", tdesc(t, b, sizeof b));
    int64_t v;
    if (!t->neg) {
        if (t->mag > (uint64_t)INT64_MAX) return perr(p, t->line, f, "integer %" PRIu64 " out of range", t->mag);
        v = (int64_t)t->mag;
    } else {
        if (t->mag > (uint64_t)INT64_MAX + 1) return perr(p, t->line, f, "integer -%" PRIu64 " out of range", t->mag);
        v = t->mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)t->mag;
    }
    if (v < lo) return perr(p, t->line, f, "value %" PRId64 " must be >= %" PRId64, v, lo);
    if (v > hi) return perr(p, t->line, f, "value %" PRId64 " must be <= %" PRId64, v, hi);
    *out = v;
    return 0;
}

static int tok_int(P *p, const char *f, const tok *t, int64_t lo, int64_t hi, int *out)
{
    int64_t v;
    if (tok_i64(p, f, t, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

static int tok_bool(P *p, const char *f, const tok *t, int *out)
{
    if (t->kind == T_IDENT) {
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "t")) { *out = 1; return 0; }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False") || !strcmp(t->s, "f")) { *out = 0; return 0; }
    } else if (t->kind == T_INT && !t->neg && t->mag <= 1) {
        *out = (int)t->mag;
        return 0;
    }
    char b[80];
    return perr(p, t->line, f, "expected a bool (true/false), got %s", tdesc(t, b, sizeof b));
}

static int tok_str(P *p, const char *f, const tok *t, char *dst, size_t cap)
{
    char b[80];
    if (t->kind != T_STR) return perr(p, t->line, f, "expected a string, got %s", tdesc(t, b, sizeof b));
    if (t->len >= cap) return perr(p, t->line, f, "string longer than %zu bytes", cap - 1);
    memcpy(dst, t->s, t->len + 1);
    return 0;
}

typedef struct mc_enum { const char *name; int value; } mc_enum;

/* Index into e[0..n) of t (an identifier or the enum's integer). */
static int tok_enum(P *p, const char *f, const tok *t, const mc_enum *e, int n, const char *ename, int *idx)
{
    for (int i = 0; i < n; i++) {
        if ((t->kind == T_IDENT && !strcmp(t->s, e[i].name)) ||
            (t->kind == T_INT && !t->neg && t->mag == (uint64_t)e[i].value)) {
            *idx = i;
            return 0;
        }
    }
    char b[80];
    if (t->kind == T_IDENT || t->kind == T_INT)
        return perr(p, t->line, f, "unknown %s value %s", ename, tdesc(t, b, sizeof b));
    return perr(p, t->line, f, "expected a %s enum value, got %s", ename, tdesc(t, b, sizeof b));
}

/* ---------------------------------------------------------------- values and messages */

typedef struct it { int list, i; } it;

/* A scalar field's value(s): `name: v` or `name: [v, ...]`. */
static int sc_open(P *p, const char *f, int colon, int line, it *v)
{
    if (!colon) return perr(p, line, f, "expected ':' after the field name");
    skip_ws(p);
    v->i = 0;
    v->list = cur(p) == '[';
    if (v->list) p->pos++;
    return 0;
}

/* 1: t holds the next value; 0: done; -1: error. */
static int sc_next(P *p, const char *f, it *v, tok *t)
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
        if (cur(p) != ',') return perr(p, p->line, f, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b));
        p->pos++;
    }
    v->i++;
    return read_scalar(p, f, t) ? -1 : 1;
}

static int sc_one(P *p, const char *f, int colon, int line, tok *t)
{
    if (!colon) return perr(p, line, f, "expected ':' after the field name");
    skip_ws(p);
    if (cur(p) == '[') return perr(p, p->line, f, "not a repeated field: a list is not allowed");
    if (cur(p) == '{' || cur(p) == '<') return perr(p, p->line, f, "expected a value, not a message");
    return read_scalar(p, f, t);
}

static int msg_open(P *p, it *v)
{
    skip_ws(p);
    v->i = 0;
    v->list = cur(p) == '[';
    if (v->list) p->pos++;
    return 0;
}

/* 1: an opening '{' or '<' was consumed (*close, *line set); 0: done; -1: error. */
static int msg_next(P *p, const char *f, it *v, int *close, int *line)
{
    char b[16];
    skip_ws(p);
    if (v->list) {
        if (cur(p) == ']') {
            p->pos++;
            return 0;
        }
        if (v->i) {
            if (cur(p) != ',') return perr(p, p->line, f, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b));
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
    else return perr(p, p->line, f, "expected '{' or '<' to open a message, got %s", chdesc(c, b));
    *line = p->line;
    p->pos++;
    return 1;
}

static int msg_one(P *p, const char *f, int *close, int *line)
{
    it v;
    skip_ws(p);
    if (cur(p) == '[') return perr(p, p->line, f, "not a repeated field: a list is not allowed");
    msg_open(p, &v);
    return msg_next(p, f, &v, close, line) < 0 ? -1 : 0;
}

typedef int (*field_fn)(P *p, const char *name, int colon, int line, void *ctx);

/* Fields up to `close` (0: end of file). */
static int parse_body(P *p, int close, int open_line, field_fn fn, void *ctx)
{
    char b[16];
    if (++p->depth > MC_MAX_DEPTH) return perr(p, p->line, NULL, "messages nested deeper than %d", MC_MAX_DEPTH);
    for (;;) {
        skip_ws(p);
        int c = cur(p);
        if (c < 0) {
            if (!close) break;
            return perr(p, p->line, NULL, "unexpected end of file: '%c' opened at line %d is not closed",
                        close == '}' ? '{' : '<', open_line);
        }
        if (close && c == close) {
            p->pos++;
            break;
        }
        if (!is_id0(c)) {
            if (c == '}' || c == '>' || c == ']')
                return perr(p, p->line, NULL, "unexpected '%c' (unbalanced brackets)", c);
            return perr(p, p->line, NULL, "expected a field name, got %s", chdesc(c, b));
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
static int sub(P *p, const char *name, int close, int line, field_fn fn, void *ctx)
{
    size_t k = strlen(p->prefix);
    snprintf(p->prefix + k, sizeof p->prefix - k, "%s.", name);
    int r = parse_body(p, close, line, fn, ctx);
    if (r == 0) p->prefix[k] = 0;
    return r;
}

static int skip_field(P *p, const char *name, int colon, int line, void *ctx);

static int skip_value(P *p, const char *name, int colon, int line)
{
    tok *t = NULL;
    int r = 0, c, close, mline;
    skip_ws(p);
    c = cur(p);
    if (c == '{' || c == '<') {
        it v;
        msg_open(p, &v);
        if (msg_next(p, name, &v, &close, &mline) < 0) return -1;
        return sub(p, name, close, mline, skip_field, NULL);
    }
    if (c != '[' && !colon) return perr(p, line, name, "expected ':' after the field name");
    t = malloc(sizeof *t);
    if (!t) return perr(p, line, name, "out of memory");
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
            if (cur(p) != ',') { r = perr(p, p->line, name, "expected ',' or ']' in the list, got %s", chdesc(cur(p), b)); break; }
            p->pos++;
            skip_ws(p);
        }
        c = cur(p);
        if (c == '{' || c == '<') {
            mline = p->line;
            p->pos++;
            if ((r = sub(p, name, c == '{' ? '}' : '>', mline, skip_field, NULL))) break;
        } else {
            if (!colon) { r = perr(p, line, name, "expected ':' after the field name"); break; }
            if ((r = read_scalar(p, name, t))) break;
        }
    }
    free(t);
    return r;
}

static int skip_field(P *p, const char *name, int colon, int line, void *ctx)
{
    DM_UNUSED(ctx);
    return skip_value(p, name, colon, line);
}

static int once(P *p, unsigned *seen, unsigned bit, const char *f, int line)
{
    if (*seen & bit) return perr(p, line, f, "set more than once (not a repeated field)");
    *seen |= bit;
    return 0;
}

static int unknown(P *p, const char *f, int line, const char *msg)
{
    return perr(p, line, f, "unknown field in %s", msg);
}

/* ---------------------------------------------------------------- schema */

static const mc_enum DATA_TYPES[] = {
    {"TYPE_BOOL", 1}, {"TYPE_UINT8", 2}, {"TYPE_UINT16", 3}, {"TYPE_UINT32", 4}, {"TYPE_UINT64", 5},
    {"TYPE_INT8", 6}, {"TYPE_INT16", 7}, {"TYPE_INT32", 8}, {"TYPE_INT64", 9}, {"TYPE_FP16", 10},
    {"TYPE_FP32", 11}, {"TYPE_FP64", 12}, {"TYPE_STRING", 13}, {"TYPE_BF16", 14},
};
static const mc_enum FORMATS[] = {{"FORMAT_NONE", 0}, {"FORMAT_NHWC", 1}, {"FORMAT_NCHW", 2}};
static const mc_enum KINDS[] = {{"KIND_AUTO", 0}, {"KIND_GPU", 1}, {"KIND_CPU", 2}, {"KIND_MODEL", 3}};
static const mc_enum TIMEOUT_ACTIONS[] = {{"REJECT", 0}, {"DELAY", 1}};
#define NE(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct top_ctx {
    dm_triton_config *c;
    tok *t;                     /* scratch token */
    unsigned seen;
    int line_db;
    int pref_line[DM_MC_MAX_LIST];
    int in_line[DM_MC_MAX_TENSORS], out_line[DM_MC_MAX_TENSORS];
    int n_groups;
    int64_t count_sum;
    int vp_kind;                /* -1 = none set */
} top_ctx;

typedef struct tensor_ctx {
    top_ctx *top;
    dm_mc_tensor *t;
    int is_input;
    unsigned seen;
    int dims_seen, reshape;
} tensor_ctx;

static int tensor_field(P *p, const char *f, int colon, int line, void *vctx)
{
    tensor_ctx *x = vctx;
    tok *t = x->top->t;
    int r, v;
    it li;
    if (!strcmp(f, "name")) {
        if (once(p, &x->seen, 1, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_str(p, f, t, x->t->name, sizeof x->t->name);
    }
    if (!strcmp(f, "data_type")) {
        if (once(p, &x->seen, 2, f, line) || sc_one(p, f, colon, line, t)) return -1;
        if (tok_enum(p, f, t, DATA_TYPES, NE(DATA_TYPES), "DataType", &v)) return -1;
        snprintf(x->t->data_type, sizeof x->t->data_type, "%s", DATA_TYPES[v].name);
        return 0;
    }
    if (!strcmp(f, "dims")) {
        x->dims_seen = 1;
        if (sc_open(p, f, colon, line, &li)) return -1;
        while ((r = sc_next(p, f, &li, t)) > 0) {
            if (x->t->n_dims == DM_MC_MAX_DIMS) return perr(p, t->line, f, "more than %d dims", DM_MC_MAX_DIMS);
            if (tok_i64(p, f, t, -1, INT64_MAX, &x->t->dims[x->t->n_dims])) return -1;
            x->t->n_dims++;
        }
        return r;
    }
    if (!strcmp(f, "reshape")) {
        x->reshape = 1;
        return skip_value(p, f, colon, line);
    }
    if (!strcmp(f, "is_shape_tensor") || !strcmp(f, "is_non_linear_format_io") ||
        (x->is_input && (!strcmp(f, "allow_ragged_batch") || !strcmp(f, "optional")))) {
        if (sc_one(p, f, colon, line, t) || tok_bool(p, f, t, &v)) return -1;
        if (!strcmp(f, "optional")) x->t->optional = v;
        return 0;
    }
    if (x->is_input && !strcmp(f, "format")) {
        if (sc_one(p, f, colon, line, t)) return -1;
        return tok_enum(p, f, t, FORMATS, NE(FORMATS), "Format", &v);
    }
    if (!x->is_input && !strcmp(f, "label_filename")) {
        char tmp[MC_TOK_STR];
        if (sc_one(p, f, colon, line, t)) return -1;
        return tok_str(p, f, t, tmp, sizeof tmp);
    }
    return unknown(p, f, line, x->is_input ? "ModelInput" : "ModelOutput");
}

static int tensors(P *p, top_ctx *x, const char *f, int is_input)
{
    int *n = is_input ? &x->c->n_inputs : &x->c->n_outputs;
    dm_mc_tensor *arr = is_input ? x->c->inputs : x->c->outputs;
    int *lines = is_input ? x->in_line : x->out_line;
    int r, close, mline;
    it v;
    msg_open(p, &v);
    while ((r = msg_next(p, f, &v, &close, &mline)) > 0) {
        if (*n == DM_MC_MAX_TENSORS) return perr(p, mline, f, "more than %d entries", DM_MC_MAX_TENSORS);
        tensor_ctx tc = {.top = x, .t = &arr[*n], .is_input = is_input};
        lines[*n] = mline;
        if (sub(p, f, close, mline, tensor_field, &tc)) return -1;
        if (!tc.t->name[0]) return perr(p, mline, f, "entry has no 'name'");
        if (!tc.t->data_type[0]) return perr(p, mline, f, "'%s' has no 'data_type'", tc.t->name);
        if (tc.dims_seen && tc.t->n_dims == 0 && !tc.reshape)
            return perr(p, mline, f, "'%s': dims must have at least one dimension", tc.t->name);
        (*n)++;
    }
    return r;
}

typedef struct db_ctx {
    top_ctx *top;
    unsigned seen;
    int64_t priority_levels, default_priority_level;
    int prio_line;
} db_ctx;

typedef struct qp_ctx { top_ctx *top; unsigned seen; } qp_ctx;

static int queue_policy_field(P *p, const char *f, int colon, int line, void *vctx)
{
    qp_ctx *x = vctx;
    dm_triton_config *c = x->top->c;
    tok *t = x->top->t;
    int v;
    if (!strcmp(f, "timeout_action")) {
        if (once(p, &x->seen, 1, f, line) || sc_one(p, f, colon, line, t)) return -1;
        if (tok_enum(p, f, t, TIMEOUT_ACTIONS, NE(TIMEOUT_ACTIONS), "TimeoutAction", &v)) return -1;
        c->timeout_action_delay = v;
        return 0;
    }
    if (!strcmp(f, "default_timeout_microseconds")) {
        if (once(p, &x->seen, 2, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_i64(p, f, t, 0, INT64_MAX, &c->default_timeout_us);
    }
    if (!strcmp(f, "allow_timeout_override")) {
        if (once(p, &x->seen, 4, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_bool(p, f, t, &c->allow_timeout_override);
    }
    if (!strcmp(f, "max_queue_size")) {
        if (once(p, &x->seen, 8, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_i64(p, f, t, 0, UINT32_MAX, &c->max_queue_size);
    }
    return unknown(p, f, line, "ModelQueuePolicy");
}

static int dynbatch_field(P *p, const char *f, int colon, int line, void *vctx)
{
    db_ctx *x = vctx;
    dm_triton_config *c = x->top->c;
    tok *t = x->top->t;
    int r;
    it li;
    if (!strcmp(f, "preferred_batch_size")) {
        if (sc_open(p, f, colon, line, &li)) return -1;
        while ((r = sc_next(p, f, &li, t)) > 0) {
            if (c->n_preferred == DM_MC_MAX_LIST) return perr(p, t->line, f, "more than %d values", DM_MC_MAX_LIST);
            if (tok_int(p, f, t, INT32_MIN, INT32_MAX, &c->preferred_batch_size[c->n_preferred])) return -1;
            if (c->preferred_batch_size[c->n_preferred] <= 0)
                return perr(p, t->line, f, "preferred batch size %d must be > 0", c->preferred_batch_size[c->n_preferred]);
            x->top->pref_line[c->n_preferred++] = t->line;
        }
        return r;
    }
    if (!strcmp(f, "max_queue_delay_microseconds")) {
        if (once(p, &x->seen, 1, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_i64(p, f, t, 0, INT64_MAX, &c->max_queue_delay_us);
    }
    if (!strcmp(f, "preserve_ordering")) {
        if (once(p, &x->seen, 2, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_bool(p, f, t, &c->preserve_ordering);
    }
    if (!strcmp(f, "priority_levels")) {
        if (once(p, &x->seen, 4, f, line) || sc_one(p, f, colon, line, t)) return -1;
        x->prio_line = t->line;
        return tok_i64(p, f, t, 0, INT64_MAX, &x->priority_levels);
    }
    if (!strcmp(f, "default_priority_level")) {
        if (once(p, &x->seen, 8, f, line) || sc_one(p, f, colon, line, t)) return -1;
        if (!x->prio_line) x->prio_line = t->line;
        return tok_i64(p, f, t, 0, INT64_MAX, &x->default_priority_level);
    }
    if (!strcmp(f, "default_queue_policy")) {
        int close, mline;
        qp_ctx q = {.top = x->top};
        if (once(p, &x->seen, 16, f, line) || msg_one(p, f, &close, &mline)) return -1;
        return sub(p, f, close, mline, queue_policy_field, &q);
    }
    if (!strcmp(f, "priority_queue_policy")) return skip_value(p, f, colon, line);
    return unknown(p, f, line, "ModelDynamicBatching");
}

typedef struct ig_ctx { top_ctx *top; unsigned seen; int count, kind; } ig_ctx;

static int group_field(P *p, const char *f, int colon, int line, void *vctx)
{
    ig_ctx *x = vctx;
    tok *t = x->top->t;
    int r, v;
    it li;
    if (!strcmp(f, "name") || !strcmp(f, "host_policy")) {
        char tmp[MC_TOK_STR];
        if (sc_one(p, f, colon, line, t)) return -1;
        return tok_str(p, f, t, tmp, sizeof tmp);
    }
    if (!strcmp(f, "kind")) {
        if (once(p, &x->seen, 1, f, line) || sc_one(p, f, colon, line, t)) return -1;
        if (tok_enum(p, f, t, KINDS, NE(KINDS), "Kind", &v)) return -1;
        if (KINDS[v].value == 1 || KINDS[v].value == 3)
            return perr(p, t->line, f, "%s is not supported: deepmoe serves on CPUs (use KIND_CPU)", KINDS[v].name);
        x->kind = v;
        return 0;
    }
    if (!strcmp(f, "count")) {
        if (once(p, &x->seen, 2, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_int(p, f, t, 0, INT32_MAX, &x->count);
    }
    if (!strcmp(f, "gpus")) {
        if (sc_open(p, f, colon, line, &li)) return -1;
        if ((r = sc_next(p, f, &li, t)) > 0)
            return perr(p, t->line, f, "GPUs are not supported: deepmoe serves on CPUs (gpus must be empty)");
        return r;
    }
    if (!strcmp(f, "passive")) {
        if (sc_one(p, f, colon, line, t)) return -1;
        return tok_bool(p, f, t, &v);
    }
    if (!strcmp(f, "profile") || !strcmp(f, "secondary_devices") || !strcmp(f, "rate_limiter"))
        return skip_value(p, f, colon, line);
    return unknown(p, f, line, "ModelInstanceGroup");
}

static int instance_groups(P *p, top_ctx *x, const char *f)
{
    int r, close, mline;
    it v;
    msg_open(p, &v);
    while ((r = msg_next(p, f, &v, &close, &mline)) > 0) {
        ig_ctx g = {.top = x, .kind = 2 /* KIND_CPU */};
        if (sub(p, f, close, mline, group_field, &g)) return -1;
        if (x->n_groups == 0) snprintf(x->c->instance_kind, sizeof x->c->instance_kind, "%s", KINDS[g.kind].name);
        x->n_groups++;
        x->count_sum += g.count > 0 ? g.count : 1;
        if (x->count_sum > 1024) return perr(p, mline, f, "more than 1024 instances in all");
    }
    return r;
}

static int vp_latest_field(P *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    if (strcmp(f, "num_versions")) return unknown(p, f, line, "VersionPolicy.Latest");
    if (sc_one(p, f, colon, line, x->t)) return -1;
    return tok_int(p, f, x->t, 1, INT_MAX, &x->c->num_versions);
}

static int vp_all_field(P *p, const char *f, int colon, int line, void *vctx)
{
    DM_UNUSED(colon);
    DM_UNUSED(vctx);
    return unknown(p, f, line, "VersionPolicy.All");
}

static int vp_specific_field(P *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    dm_triton_config *c = x->c;
    int r;
    it li;
    if (strcmp(f, "versions")) return unknown(p, f, line, "VersionPolicy.Specific");
    if (sc_open(p, f, colon, line, &li)) return -1;
    while ((r = sc_next(p, f, &li, x->t)) > 0) {
        if (c->n_versions == DM_MC_MAX_LIST) return perr(p, x->t->line, f, "more than %d versions", DM_MC_MAX_LIST);
        if (tok_i64(p, f, x->t, 0, INT64_MAX, &c->versions[c->n_versions])) return -1;
        c->n_versions++;
    }
    return r;
}

static int vp_field(P *p, const char *f, int colon, int line, void *vctx)
{
    DM_UNUSED(colon);
    top_ctx *x = vctx;
    static const char *const names[] = {"latest", "all", "specific"};
    static const field_fn fns[] = {vp_latest_field, vp_all_field, vp_specific_field};
    for (int k = 0; k < 3; k++) {
        if (strcmp(f, names[k])) continue;
        if (x->vp_kind >= 0)
            return perr(p, line, f, "only one of 'latest', 'all', 'specific' may be set ('%s' is already set)",
                        names[x->vp_kind]);
        int close, mline;
        x->vp_kind = k;
        if (msg_one(p, f, &close, &mline)) return -1;
        if (sub(p, f, close, mline, fns[k], x)) return -1;
        if (k == 2 && x->c->n_versions == 0) return perr(p, mline, f, "needs at least one version");
        return 0;
    }
    return unknown(p, f, line, "ModelVersionPolicy");
}

typedef struct param_ctx {
    top_ctx *top;
    char key[64], val[256];
    int has_val;
} param_ctx;

static int param_value_field(P *p, const char *f, int colon, int line, void *vctx)
{
    param_ctx *x = vctx;
    if (strcmp(f, "string_value")) return unknown(p, f, line, "ModelParameter");
    if (sc_one(p, f, colon, line, x->top->t)) return -1;
    return tok_str(p, f, x->top->t, x->val, sizeof x->val);
}

static int param_field(P *p, const char *f, int colon, int line, void *vctx)
{
    param_ctx *x = vctx;
    if (!strcmp(f, "key")) {
        if (sc_one(p, f, colon, line, x->top->t)) return -1;
        return tok_str(p, f, x->top->t, x->key, sizeof x->key);
    }
    if (!strcmp(f, "value")) {
        int close, mline;
        x->val[0] = 0;
        if (msg_one(p, f, &close, &mline)) return -1;
        return sub(p, f, close, mline, param_value_field, x);
    }
    return unknown(p, f, line, "parameters entry (key, value)");
}

static int parameters(P *p, top_ctx *x, const char *f)
{
    dm_triton_config *c = x->c;
    int r, close, mline;
    it v;
    msg_open(p, &v);
    while ((r = msg_next(p, f, &v, &close, &mline)) > 0) {
        param_ctx pc = {.top = x};
        if (sub(p, f, close, mline, param_field, &pc)) return -1;
        int i = 0;
        while (i < c->n_params && strcmp(c->param_keys[i], pc.key)) i++;
        if (i == c->n_params) {
            if (c->n_params == DM_MC_MAX_LIST) return perr(p, mline, f, "more than %d entries", DM_MC_MAX_LIST);
            c->n_params++;
        }
        memcpy(c->param_keys[i], pc.key, sizeof pc.key);
        memcpy(c->param_vals[i], pc.val, sizeof pc.val);
    }
    return r;
}

static const char *const IGNORED[] = {
    "default_model_filename", "model_warmup", "optimization", "response_cache", "model_transaction_policy",
    "batch_input", "batch_output", "cc_model_filenames", "metric_tags", "model_repository_agents", "runtime",
};

static int top_field(P *p, const char *f, int colon, int line, void *vctx)
{
    top_ctx *x = vctx;
    dm_triton_config *c = x->c;
    tok *t = x->t;
    int close, mline;
    if (!strcmp(f, "name") || !strcmp(f, "platform") || !strcmp(f, "backend")) {
        char *dst = f[0] == 'n' ? c->name : f[0] == 'p' ? c->platform : c->backend;
        if (once(p, &x->seen, f[0] == 'n' ? 1u : f[0] == 'p' ? 2u : 4u, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_str(p, f, t, dst, DM_MC_NAME);
    }
    if (!strcmp(f, "max_batch_size")) {
        if (once(p, &x->seen, 8, f, line) || sc_one(p, f, colon, line, t)) return -1;
        return tok_int(p, f, t, 0, INT32_MAX, &c->max_batch_size);
    }
    if (!strcmp(f, "input")) return tensors(p, x, f, 1);
    if (!strcmp(f, "output")) return tensors(p, x, f, 0);
    if (!strcmp(f, "dynamic_batching")) {
        if (c->dynamic_batching) return perr(p, line, f, "set more than once (only one scheduling policy may be set)");
        db_ctx d = {.top = x};
        c->dynamic_batching = 1;
        x->line_db = line;
        if (msg_one(p, f, &close, &mline) || sub(p, f, close, mline, dynbatch_field, &d)) return -1;
        if (d.priority_levels > 0 && (d.default_priority_level < 1 || d.default_priority_level > d.priority_levels))
            return perr(p, d.prio_line, "dynamic_batching.default_priority_level",
                        "%" PRId64 " must be in 1..priority_levels (%" PRId64 ")", d.default_priority_level, d.priority_levels);
        return 0;
    }
    if (!strcmp(f, "sequence_batching") || !strcmp(f, "ensemble_scheduling"))
        return perr(p, line, f, "not supported by deepmoe (only dynamic_batching)");
    if (!strcmp(f, "instance_group")) return instance_groups(p, x, f);
    if (!strcmp(f, "version_policy")) {
        if (once(p, &x->seen, 16, f, line) || msg_one(p, f, &close, &mline)) return -1;
        if (sub(p, f, close, mline, vp_field, x)) return -1;
        return 0;
    }
    if (!strcmp(f, "parameters")) return parameters(p, x, f);
    for (int i = 0; i < NE(IGNORED); i++)
        if (!strcmp(f, IGNORED[i])) return skip_value(p, f, colon, line);
    return unknown(p, f, line, "ModelConfig");
}

static int unique_names(P *p, const dm_mc_tensor *ts, int n, const int *lines, const char *f)
{
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(ts[i].name, ts[j].name))
                return perr(p, lines[i], f, "duplicate name '%s' (also at line %d)", ts[i].name, lines[j]);
    return 0;
}

static int validate(P *p, top_ctx *x)
{
    dm_triton_config *c = x->c;
    if (!c->platform[0] && !c->backend[0])
        return perr(p, 1, "backend", "neither 'platform' nor 'backend' is set; one is required");
    if (unique_names(p, c->inputs, c->n_inputs, x->in_line, "input") ||
        unique_names(p, c->outputs, c->n_outputs, x->out_line, "output"))
        return -1;
    if (c->dynamic_batching) {
        if (c->max_batch_size == 0)
            return perr(p, x->line_db, "dynamic_batching", "requires max_batch_size > 0 (max_batch_size is 0)");
        for (int i = 0; i < c->n_preferred; i++)
            if (c->preferred_batch_size[i] > c->max_batch_size)
                return perr(p, x->pref_line[i], "dynamic_batching.preferred_batch_size",
                            "preferred batch size %d exceeds max_batch_size %d", c->preferred_batch_size[i],
                            c->max_batch_size);
        if (c->n_preferred == 0) c->preferred_batch_size[c->n_preferred++] = c->max_batch_size;
    }
    c->instance_count = x->n_groups ? (int)x->count_sum : 1;
    if (!c->instance_kind[0]) snprintf(c->instance_kind, sizeof c->instance_kind, "KIND_CPU");
    c->version_policy = x->vp_kind == 1 ? DM_VP_ALL : x->vp_kind == 2 ? DM_VP_SPECIFIC : DM_VP_LATEST;
    if (c->version_policy == DM_VP_LATEST && c->num_versions == 0) c->num_versions = 1;
    return 0;
}

dm_status dm_model_config_parse(const char *text, size_t len, const char *path, dm_triton_config *out, dm_error *err)
{
    if ((!text && len) || !out) return dm_fail(err, DM_ERR_ARG, "dm_model_config_parse: NULL argument");
    dm_triton_config *c = calloc(1, sizeof *c);
    tok *t = malloc(sizeof *t);
    if (!c || !t) {
        free(c);
        free(t);
        return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path ? path : "config.pbtxt");
    }
    P p = {.s = text ? text : "", .n = len, .line = 1, .path = path ? path : "config.pbtxt", .err = err};
    top_ctx x = {.c = c, .t = t, .vp_kind = -1};
    int r = parse_body(&p, 0, 1, top_field, &x);
    if (!r) r = validate(&p, &x);
    if (!r) *out = *c;
    free(c);
    free(t);
    return r ? DM_ERR_FORMAT : DM_OK;
}

dm_status dm_model_config_load(const char *path, dm_triton_config *out, dm_error *err)
{
    if (!path || !out) return dm_fail(err, DM_ERR_ARG, "dm_model_config_load: NULL argument");
    FILE *fp = fopen(path, "rb");
    if (!fp) return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    dm_status s = DM_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= MC_MAX_FILE) {
                s = dm_fail(err, DM_ERR_FORMAT, "%s:1: file larger than %u bytes", path, MC_MAX_FILE);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
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
    if (s == DM_OK) s = dm_model_config_parse(buf, n, path, out, err);
    free(buf);
    return s;
}

/* ---------------------------------------------------------------- text rendering */

typedef struct sb { char *s; size_t n, cap; int oom; } sb;

static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sb *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = b->cap ? b->cap : 1024;
        while (nc <= b->n + (size_t)k) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) { b->oom = 1; return; }
        b->s = ns;
        b->cap = nc;
    }
}

static void sb_str(sb *b, const char *s)
{
    sb_printf(b, "\"");
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') sb_printf(b, "\\%c", *q);
        else if (*q == '\n') sb_printf(b, "\\n");
        else if (*q == '\t') sb_printf(b, "\\t");
        else if (*q < 0x20 || *q == 0x7f) sb_printf(b, "\\%03o", *q);
        else sb_printf(b, "%c", *q);
    }
    sb_printf(b, "\"");
}

static void sb_tensors(sb *b, const char *f, const dm_mc_tensor *ts, int n, int is_input)
{
    if (!n) return;
    sb_printf(b, "%s [\n", f);
    for (int i = 0; i < n; i++) {
        sb_printf(b, "  {\n    name: ");
        sb_str(b, ts[i].name);
        sb_printf(b, "\n    data_type: %s\n", ts[i].data_type);
        if (ts[i].n_dims) {
            sb_printf(b, "    dims: [ ");
            for (int d = 0; d < ts[i].n_dims; d++) sb_printf(b, "%s%" PRId64, d ? ", " : "", ts[i].dims[d]);
            sb_printf(b, " ]\n");
        }
        if (is_input && ts[i].optional) sb_printf(b, "    optional: true\n");
        sb_printf(b, "  }%s\n", i + 1 < n ? "," : "");
    }
    sb_printf(b, "]\n");
}

char *dm_model_config_format(const dm_triton_config *c)
{
    sb b = {0};
    if (!c) return NULL;
    if (c->name[0]) { sb_printf(&b, "name: "); sb_str(&b, c->name); sb_printf(&b, "\n"); }
    if (c->platform[0]) { sb_printf(&b, "platform: "); sb_str(&b, c->platform); sb_printf(&b, "\n"); }
    if (c->backend[0]) { sb_printf(&b, "backend: "); sb_str(&b, c->backend); sb_printf(&b, "\n"); }
    sb_printf(&b, "max_batch_size: %d\n", c->max_batch_size);
    sb_tensors(&b, "input", c->inputs, c->n_inputs, 1);
    sb_tensors(&b, "output", c->outputs, c->n_outputs, 0);
    if (c->dynamic_batching) {
        sb_printf(&b, "dynamic_batching {\n");
        if (c->n_preferred) {
            sb_printf(&b, "  preferred_batch_size: [ ");
            for (int i = 0; i < c->n_preferred; i++) sb_printf(&b, "%s%d", i ? ", " : "", c->preferred_batch_size[i]);
            sb_printf(&b, " ]\n");
        }
        sb_printf(&b, "  max_queue_delay_microseconds: %" PRId64 "\n", c->max_queue_delay_us);
        if (c->preserve_ordering) sb_printf(&b, "  preserve_ordering: true\n");
        sb_printf(&b, "  default_queue_policy {\n    timeout_action: %s\n", c->timeout_action_delay ? "DELAY" : "REJECT");
        sb_printf(&b, "    default_timeout_microseconds: %" PRId64 "\n", c->default_timeout_us);
        sb_printf(&b, "    allow_timeout_override: %s\n", c->allow_timeout_override ? "true" : "false");
        sb_printf(&b, "    max_queue_size: %" PRId64 "\n  }\n}\n", c->max_queue_size);
    }
    sb_printf(&b, "instance_group [ { count: %d kind: %s } ]\n", c->instance_count > 0 ? c->instance_count : 1,
              c->instance_kind[0] ? c->instance_kind : "KIND_CPU");
    if (c->version_policy == DM_VP_ALL) {
        sb_printf(&b, "version_policy: { all { } }\n");
    } else if (c->version_policy == DM_VP_SPECIFIC) {
        sb_printf(&b, "version_policy: { specific { versions: [ ");
        for (int i = 0; i < c->n_versions; i++) sb_printf(&b, "%s%" PRId64, i ? ", " : "", c->versions[i]);
        sb_printf(&b, " ] } }\n");
    } else {
        sb_printf(&b, "version_policy: { latest { num_versions: %d } }\n", c->num_versions > 0 ? c->num_versions : 1);
    }
    for (int i = 0; i < c->n_params; i++) {
        sb_printf(&b, "parameters { key: ");
        sb_str(&b, c->param_keys[i]);
        sb_printf(&b, " value { string_value: ");
        sb_str(&b, c->param_vals[i]);
        sb_printf(&b, " } }\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---------------------------------------------------------------- JSON rendering */

static json_t *json_i64s(const int64_t *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

char *dm_model_config_json(const dm_triton_config *c)
{
    if (!c) return NULL;
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "platform", json_string(c->platform));
    json_object_set_new(o, "backend", json_string(c->backend));
    json_t *vp = json_object();
    if (c->version_policy == DM_VP_ALL) {
        json_object_set_new(vp, "all", json_object());
    } else if (c->version_policy == DM_VP_SPECIFIC) {
        json_t *sp = json_object();
        json_object_set_new(sp, "versions", json_i64s(c->versions, c->n_versions));
        json_object_set_new(vp, "specific", sp);
    } else {
        json_t *l = json_object();
        json_object_set_new(l, "num_versions", json_integer(c->num_versions > 0 ? c->num_versions : 1));
        json_object_set_new(vp, "latest", l);
    }
    json_object_set_new(o, "version_policy", vp);
    json_object_set_new(o, "max_batch_size", json_integer(c->max_batch_size));
    for (int io = 0; io < 2; io++) {
        const dm_mc_tensor *ts = io ? c->outputs : c->inputs;
        int n = io ? c->n_outputs : c->n_inputs;
        json_t *a = json_array();
        for (int i = 0; i < n; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(ts[i].name));
            json_object_set_new(e, "data_type", json_string(ts[i].data_type));
            if (!io) json_object_set_new(e, "format", json_string("FORMAT_NONE"));
            json_object_set_new(e, "dims", json_i64s(ts[i].dims, ts[i].n_dims));
            if (!io) json_object_set_new(e, "is_shape_tensor", json_false());
            if (!io) json_object_set_new(e, "allow_ragged_batch", json_false());
            if (!io) json_object_set_new(e, "optional", json_boolean(ts[i].optional));
            if (io) json_object_set_new(e, "label_filename", json_string(""));
            if (io) json_object_set_new(e, "is_shape_tensor", json_false());
            json_array_append_new(a, e);
        }
        json_object_set_new(o, io ? "output" : "input", a);
    }
    json_object_set_new(o, "batch_input", json_array());
    json_object_set_new(o, "batch_output", json_array());
    if (c->dynamic_batching) {
        json_t *d = json_object(), *pr = json_array(), *q = json_object();
        for (int i = 0; i < c->n_preferred; i++) json_array_append_new(pr, json_integer(c->preferred_batch_size[i]));
        json_object_set_new(d, "preferred_batch_size", pr);
        json_object_set_new(d, "max_queue_delay_microseconds", json_integer(c->max_queue_delay_us));
        json_object_set_new(d, "preserve_ordering", json_boolean(c->preserve_ordering));
        json_object_set_new(d, "priority_levels", json_integer(0));
        json_object_set_new(d, "default_priority_level", json_integer(0));
        json_object_set_new(q, "timeout_action", json_string(c->timeout_action_delay ? "DELAY" : "REJECT"));
        json_object_set_new(q, "default_timeout_microseconds", json_integer(c->default_timeout_us));
        json_object_set_new(q, "allow_timeout_override", json_boolean(c->allow_timeout_override));
        json_object_set_new(q, "max_queue_size", json_integer(c->max_queue_size));
        json_object_set_new(d, "default_queue_policy", q);
        json_object_set_new(d, "priority_queue_policy", json_object());
        json_object_set_new(o, "dynamic_batching", d);
    }
    json_t *groups = json_array(), *g = json_object();
    char gname[DM_MC_NAME + 8];
    snprintf(gname, sizeof gname, "%s_0", c->name);
    json_object_set_new(g, "name", json_string(gname));
    /* KIND_AUTO resolves to KIND_CPU: deepmoe has no GPUs (Triton prints the resolved kind). */
    json_object_set_new(g, "kind", json_string("KIND_CPU"));
    json_object_set_new(g, "count", json_integer(c->instance_count > 0 ? c->instance_count : 1));
    json_object_set_new(g, "gpus", json_array());
    json_object_set_new(g, "secondary_devices", json_array());
    json_object_set_new(g, "profile", json_array());
    json_object_set_new(g, "passive", json_false());
    json_object_set_new(g, "host_policy", json_string(""));
    json_array_append_new(groups, g);
    json_object_set_new(o, "instance_group", groups);
    json_object_set_new(o, "default_model_filename", json_string(""));
    json_t *params = json_object();
    for (int i = 0; i < c->n_params; i++) {
        json_t *pv = json_object();
        json_object_set_new(pv, "string_value", json_string(c->param_vals[i]));
        json_object_set_new(params, c->param_keys[i], pv);
    }
    json_object_set_new(o, "parameters", params);
    json_object_set_new(o, "model_warmup", json_array());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}
