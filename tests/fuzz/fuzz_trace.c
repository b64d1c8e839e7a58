/* fuzz_trace.c - `deepmoe profile-summary` (dm_trace_summarize) on any bytes as
 * a trace file. Properties: a trace is summarized or refused with an error
 * naming the file (negative or implausible times are refused); a summary's counts are consistent: calls sum to the spans
 * read, each op's self time lies in [0, total], and at most as many lanes as
 * spans. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[32];
    int fd = fuzz_memfile(data, size, path);
    dm_trace_summary s;
    dm_error err;
    dm_status st = dm_trace_summarize(path, &s, &err);
    close(fd);
    if (st) {
        FUZZ_CHECK(strstr(err.msg, "/proc/self/fd/") != NULL);
        return 0;
    }
    int64_t calls = 0;
    for (int i = 0; i < s.n_ops; i++) {
        const dm_op_stat *o = &s.ops[i];
        calls += o->calls;
        FUZZ_CHECK(o->calls >= 1);
        FUZZ_CHECK(!(o->self_us < 0));
        FUZZ_CHECK(o->total_us >= 0 && o->self_us <= o->total_us * (1 + 1e-9) + 1e-6);
    }
    FUZZ_CHECK(calls == s.n_spans);
    FUZZ_CHECK(s.n_lanes <= s.n_spans);
    dm_trace_summary_free(&s);
    return 0;
}
