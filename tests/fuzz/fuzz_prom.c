/* fuzz_prom.c - the Prometheus text reader of `deepmoe top` (obs/prom.h) on
 * any bytes, as a server's /metrics page would be. Properties: a page is
 * either read or refused with a message naming a line, never partly kept;
 * every sample read has a valid metric name and NUL-terminated labels; every
 * label of a sample can be looked up by its name, and sums over any name and
 * label set do not fault. */
#include "fuzz.h"
#include "obs/prom.h"

static int name_ok(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == ':')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dm_prom p;
    dm_error err;
    dm_status s = dm_prom_parse((const char *)data, size, &p, &err);
    if (s) {
        FUZZ_CHECK(p.n == 0 && p.s == NULL);
        FUZZ_CHECK(strstr(err.msg, "metrics") != NULL);
        return 0;
    }
    for (int i = 0; i < p.n; i++) {
        const dm_prom_sample *x = &p.s[i];
        FUZZ_CHECK(name_ok(x->name));
        FUZZ_CHECK(memchr(x->labels, 0, sizeof x->labels) != NULL);
        /* each label name written (up to '=') is found again */
        const char *q = x->labels;
        while (*q) {
            const char *eq = strchr(q, '=');
            FUZZ_CHECK(eq != NULL);
            char key[DM_PROM_NAME], v[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - q), q);
            FUZZ_CHECK(dm_prom_label(x, key, v, sizeof v) == 0);
            /* skip the quoted value */
            const char *e = eq + 2;
            while (*e && *e != '"') e += (*e == '\\' && e[1]) ? 2 : 1;
            q = *e ? e + 1 : e;
            if (*q == ',') q++;
        }
        (void)dm_prom_sum(&p, x->name, x->labels[0] ? "model=a,quantile=0.99" : NULL);
    }
    dm_prom_free(&p);
    return 0;
}
