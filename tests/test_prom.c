/* test_prom.c - the Prometheus text reader behind `deepmoe top` (src/obs/prom.h):
 * samples, labels with escapes, special values, timestamps, comments and CRLF;
 * each malformed line refused with its number; label lookup and sums. */
#include "test.h"
#include "obs/prom.h"

#include <math.h>
#include <string.h>

static void test_prom_parse(dm_t *t)
{
    static const char page[] =
        "# HELP nv_inference_count Number of inferences\n"
        "# TYPE nv_inference_count counter\n"
        "nv_inference_count{model=\"a\",version=\"1\"} 10\n"
        "nv_inference_count{model=\"b\",version=\"1\"} 32 1700000000000\r\n"
        "  \n"
        "lat{model=\"a\",quantile=\"0.99\"} 170\n"
        "odd{path=\"C:\\\\x \\\"q\\\"\", l2=\"v,w\",} NaN\n"
        "big +Inf\n"
        "neg -Inf\n"
        "plain 1.5e3";
    dm_prom p;
    dm_error err;
    CHECK_OK(t, dm_prom_parse(page, sizeof page - 1, &p, &err), &err);
    CHECK(t, p.n == 7, "7 samples, got %d", p.n);
    if (p.n != 7) { dm_prom_free(&p); return; }
    CHECK(t, !strcmp(p.s[0].name, "nv_inference_count") && p.s[0].value == 10, "first sample");
    CHECK(t, p.s[1].value == 32, "a timestamp is ignored, CRLF accepted");
    CHECK(t, isnan(p.s[3].value) && isinf(p.s[4].value) && p.s[4].value > 0 && p.s[5].value < 0, "NaN, +Inf, -Inf");
    CHECK(t, p.s[6].value == 1500, "exponent");
    char v[64];
    CHECK(t, !dm_prom_label(&p.s[3], "path", v, sizeof v) && !strcmp(v, "C:\\x \"q\""), "unescaped label: %s", v);
    CHECK(t, !dm_prom_label(&p.s[3], "l2", v, sizeof v) && !strcmp(v, "v,w"), "a comma inside a value: %s", v);
    CHECK(t, dm_prom_label(&p.s[3], "nope", v, sizeof v) == -1, "a missing label");
    CHECK(t, dm_prom_sum(&p, "nv_inference_count", NULL) == 42, "sum over every label set");
    CHECK(t, dm_prom_sum(&p, "nv_inference_count", "model=b") == 32, "sum of one model");
    CHECK(t, dm_prom_sum(&p, "nv_inference_count", "model=a,version=1") == 10, "two labels");
    CHECK(t, isnan(dm_prom_sum(&p, "nv_inference_count", "model=c")), "no match: NaN");
    CHECK(t, dm_prom_sum(&p, "lat", "quantile=0.99") == 170, "quantile label");
    dm_prom_free(&p);
}

static void test_prom_errors(dm_t *t)
{
    static const struct { const char *text; const char *msg; } bad[] = {
        {"ok 1\n9bad 2\n", "line 2"},
        {"x{a=\"1} 2\n", "unterminated"},
        {"x{a=1} 2\n", "quoted"},
        {"x{=\"1\"} 2\n", "label name"},
        {"x 1 2 3\n", "after the value"},
        {"x\n", "value"},
        {"x abc\n", "not a number"},
        {"x 1 12a\n", "after the value"},
        {"x 1 -\n", "timestamp"},
        {"x{a=\"1\" b=\"2\"} 3\n", "commas"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dm_prom p;
        dm_error err;
        dm_status s = dm_prom_parse(bad[i].text, strlen(bad[i].text), &p, &err);
        CHECK(t, s == DM_ERR_FORMAT && strstr(err.msg, bad[i].msg), "'%s': %s", bad[i].text, s ? err.msg : "accepted");
        CHECK(t, p.n == 0 && p.s == NULL, "nothing kept after an error");
    }
    char longname[300];
    memset(longname, 'a', 200);
    strcpy(longname + 200, " 1\n");
    dm_prom p;
    dm_error err;
    CHECK(t, dm_prom_parse(longname, strlen(longname), &p, &err) == DM_ERR_FORMAT && strstr(err.msg, "too long"),
          "a 200-character name is refused");
}

void suite_prom(dm_t *t)
{
    DM_RUN(t, test_prom_parse);
    DM_RUN(t, test_prom_errors);
}
