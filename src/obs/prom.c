/* prom.c - Prometheus text format reader (prom.h). One pass over the lines; a
 * sample is NAME[{LABELS}] VALUE [TIMESTAMP]. */
#include "obs/prom.h"
#include "base/base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'; }
static int name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

/* One sample line [p, e) into s; 0 ok, else a static reason. */
static const char *parse_line(const char *p, const char *e, dm_prom_sample *s)
{
    size_t n = 0;
    if (p == e || !name_start(*p)) return "a sample must start with a metric name";
    while (p < e && name_char(*p)) {
        if (n + 1 >= sizeof s->name) return "metric name too long";
        s->name[n++] = *p++;
    }
    s->name[n] = 0;
    n = 0;
    s->labels[0] = 0;
    if (p < e && *p == '{') {
        p++;
        for (;;) {
            while (p < e && (*p == ' ' || *p == ',')) {
                if (*p == ',' && n && s->labels[n - 1] != ',') {
                    if (n + 1 >= sizeof s->labels) return "labels too long";
                    s->labels[n++] = ',';
                }
                p++;
            }
            if (p < e && *p == '}') { p++; break; }
            if (n && s->labels[n - 1] != ',') return "labels must be separated by commas";
            if (p == e || !name_start(*p)) return "bad label name";
            const char *l0 = p;
            while (p < e && name_char(*p)) {
                if (n + 1 >= sizeof s->labels) return "labels too long";
                if (p - l0 + 1 >= DM_PROM_NAME) return "label name too long";
                s->labels[n++] = *p++;
            }
            if (p == e || *p != '=') return "a label needs =\"value\"";
            p++;
            if (p == e || *p != '"') return "a label value must be quoted";
            if (n + 2 >= sizeof s->labels) return "labels too long";
            s->labels[n++] = '=';
            s->labels[n++] = *p++;
            for (;;) {
                if (p == e) return "unterminated label value";
                if (n + 2 >= sizeof s->labels) return "labels too long";
                if (*p == '\\') {
                    if (p + 1 == e) return "unterminated label value";
                    s->labels[n++] = *p++;
                    s->labels[n++] = *p++;
                    continue;
                }
                s->labels[n++] = *p;
                if (*p++ == '"') break;
            }
        }
        if (n && s->labels[n - 1] == ',') n--;
        s->labels[n] = 0;
    }
    if (p == e || (*p != ' ' && *p != '\t')) return "expected a space and a value";
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    char num[64];
    size_t k = 0;
    while (p < e && *p != ' ' && *p != '\t') {
        if (k + 1 >= sizeof num) return "value too long";
        num[k++] = *p++;
    }
    num[k] = 0;
    char *end;
    s->value = strtod(num, &end);
    if (!k || *end) return "the value is not a number";
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    if (p < e) {   /* a timestamp: an integer, ignored */
        if (*p == '-') p++;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9') p++;
        if (p == d) return "a timestamp must be an integer";
        while (p < e && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
        if (p < e) return "unexpected text after the value";
    }
    return NULL;
}

dm_status dm_prom_parse(const char *text, size_t len, dm_prom *out, dm_error *err)
{
    out->s = NULL;
    out->n = 0;
    int cap = 0, lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        lineno++;
        const char *q = p;
        while (q < e && (*q == ' ' || *q == '\t')) q++;
        const char *le = e;
        if (le > q && le[-1] == '\r') le--;
        if (q < le && *q != '#') {
            if (out->n == DM_PROM_MAX) {
                dm_prom_free(out);
                return dm_fail(err, DM_ERR_FORMAT, "metrics: more than %d samples", DM_PROM_MAX);
            }
            if (out->n == cap) {
                int nc = cap ? cap * 2 : 256;
                dm_prom_sample *g = realloc(out->s, (size_t)nc * sizeof *g);
                if (!g) {
                    dm_prom_free(out);
                    return dm_fail(err, DM_ERR_NOMEM, "metrics: out of memory");
                }
                out->s = g;
                cap = nc;
            }
            const char *why = parse_line(q, le, &out->s[out->n]);
            if (why) {
                dm_prom_free(out);
                return dm_fail(err, DM_ERR_FORMAT, "metrics line %d: %s", lineno, why);
            }
            out->n++;
        }
        p = nl ? nl + 1 : end;
    }
    return DM_OK;
}

void dm_prom_free(dm_prom *p)
{
    free(p->s);
    p->s = NULL;
    p->n = 0;
}

int dm_prom_label(const dm_prom_sample *s, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    const char *p = s->labels;
    while (*p) {
        const char *eq = strchr(p, '=');
        if (!eq || eq[1] != '"') return -1;
        int match = (size_t)(eq - p) == kl && !strncmp(p, key, kl);
        const char *v = eq + 2;
        size_t n = 0;
        while (*v && *v != '"') {
            char c = *v++;
            if (c == '\\' && *v) {
                c = *v++;
                if (c == 'n') c = '\n';
            }
            if (match && n + 1 < cap) out[n++] = c;
        }
        if (match) {
            if (cap) out[n] = 0;
            return 0;
        }
        p = *v ? v + 1 : v;
        if (*p == ',') p++;
    }
    return -1;
}

/* Does s carry every k=v of match? */
static int matches(const dm_prom_sample *s, const char *match)
{
    while (match && *match) {
        const char *comma = strchr(match, ','), *e = comma ? comma : match + strlen(match);
        const char *eq = memchr(match, '=', (size_t)(e - match));
        if (!eq) return 0;
        char key[DM_PROM_NAME], want[DM_PROM_LABELS], got[DM_PROM_LABELS];
        snprintf(key, sizeof key, "%.*s", (int)(eq - match), match);
        snprintf(want, sizeof want, "%.*s", (int)(e - eq - 1), eq + 1);
        if (dm_prom_label(s, key, got, sizeof got) || strcmp(got, want)) return 0;
        match = comma ? comma + 1 : e;
    }
    return 1;
}

double dm_prom_sum(const dm_prom *p, const char *name, const char *match)
{
    double sum = 0;
    int any = 0;
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->s[i].name, name) && matches(&p->s[i], match)) {
            sum += p->s[i].value;
            any = 1;
        }
    return any ? sum : NAN;
}
