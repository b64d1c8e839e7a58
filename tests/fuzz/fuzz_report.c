/* fuzz_report.c - `deepmoe report`'s reader of metrics.jsonl (dm_report_write)
 * on any bytes as a run's metrics file (no model, no checkpoint beside it).
 * Properties: the report is written, or refused with a message naming the
 * metrics file; a written report is one HTML page with no script. */
#include "fuzz.h"

#include <sys/stat.h>

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/deepmoe-fuzz-report.%d", (int)getpid());
        mkdir(dir, 0700);
    }
    char metrics[128], out[128];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    snprintf(out, sizeof out, "%s/report.html", dir);
    FILE *f = fopen(metrics, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
    const char *runs[1] = {dir};
    dm_error err;
    remove(out);
    dm_status st = dm_report_write(runs, 1, out, &err);
    if (st) {
        FUZZ_CHECK(strstr(err.msg, "metrics.jsonl") != NULL);
        return 0;
    }
    f = fopen(out, "rb");
    FUZZ_CHECK(f != NULL);
    char head[16] = {0};
    FUZZ_CHECK(fread(head, 1, 15, f) == 15);
    fclose(f);
    FUZZ_CHECK(!strcmp(head, "<!DOCTYPE html>"));
    return 0;
}
