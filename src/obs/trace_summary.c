/* trace_summary.c - PyTorch Profiler's key_averages() for a trace file: per op
 * name, calls, total and self time (self = the span less its direct children on
 * the same lane), from the complete ("X") events of a Chrome trace (jansson). */
#include "base/base.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct span {
    double ts, end;
    int lane, op;
} span;

static int by_lane_time(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->lane != y->lane) return x->lane < y->lane ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->end < y->end) - (x->end > y->end);   /* same start: the outer span first */
}

static int by_self(const void *a, const void *b)
{
    const dm_op_stat *x = a, *y = b;
    return (x->self_us < y->self_us) - (x->self_us > y->self_us);
}

/* index of name in ops (appended if new); -1 out of memory */
static int op_index(dm_op_stat **ops, int *n, int *cap, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*ops)[i].name, name)) return i;
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        dm_op_stat *g = realloc(*ops, (size_t)nc * sizeof *g);
        if (!g) return -1;
        *ops = g;
        *cap = nc;
    }
    dm_op_stat *o = &(*ops)[*n];
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", name);
    return (*n)++;
}

/* lane id of (pid, tid), -1 out of memory */
static int lane_index(int64_t (**lanes)[2], int *n, int *cap, int64_t pid, int64_t tid)
{
    for (int i = 0; i < *n; i++)
        if ((*lanes)[i][0] == pid && (*lanes)[i][1] == tid) return i;
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        int64_t (*g)[2] = realloc(*lanes, (size_t)nc * sizeof *g);
        if (!g) return -1;
        *lanes = g;
        *cap = nc;
    }
    (*lanes)[*n][0] = pid;
    (*lanes)[*n][1] = tid;
    return (*n)++;
}

void dm_trace_summary_free(dm_trace_summary *s)
{
    if (!s) return;
    free(s->ops);
    memset(s, 0, sizeof *s);
}

dm_status dm_trace_summarize(const char *path, dm_trace_summary *out, dm_error *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(f, 0, &je);
    fclose(f);
    if (!root) return dm_fail(err, DM_ERR_FORMAT, "%s: not a JSON trace (line %d: %s)", path, je.line, je.text);
    json_t *evs = json_is_array(root) ? root : json_object_get(root, "traceEvents");
    if (!json_is_array(evs)) {
        json_decref(root);
        return dm_fail(err, DM_ERR_FORMAT, "%s: no traceEvents array (a Chrome trace-event file?)", path);
    }
    size_t n_ev = json_array_size(evs), n = 0;
    span *sp = calloc(n_ev ? n_ev : 1, sizeof *sp);
    dm_op_stat *ops = NULL;
    int n_ops = 0, cap_ops = 0, n_lanes = 0, cap_lanes = 0;
    int64_t (*lanes)[2] = NULL;
    dm_status st = sp ? DM_OK : dm_fail(err, DM_ERR_NOMEM, "%s: out of memory for %zu events", path, n_ev);
    double t_min = 0, t_max = 0;
    for (size_t i = 0; i < n_ev && !st; i++) {
        json_t *e = json_array_get(evs, i);
        const char *ph = json_string_value(json_object_get(e, "ph"));
        if (!ph || strcmp(ph, "X")) continue;
        json_t *jn = json_object_get(e, "name"), *jts = json_object_get(e, "ts"), *jd = json_object_get(e, "dur");
        if (!json_is_string(jn) || !json_is_number(jts) || !json_is_number(jd)) {
            st = dm_fail(err, DM_ERR_FORMAT, "%s: event %zu is an \"X\" event without name, ts and dur", path, i);
            break;
        }
        double ts = json_number_value(jts), dur = json_number_value(jd);
        if (!(dur >= 0) || !(fabs(ts) < 1e15) || !(dur < 1e15)) {
            st = dm_fail(err, DM_ERR_FORMAT, "%s: event %zu has a negative or implausible ts/dur (%g, %g)", path, i, ts, dur);
            break;
        }
        int op = op_index(&ops, &n_ops, &cap_ops, json_string_value(jn));
        int lane = lane_index(&lanes, &n_lanes, &cap_lanes, json_integer_value(json_object_get(e, "pid")),
                              json_integer_value(json_object_get(e, "tid")));
        if (op < 0 || lane < 0) {
            st = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        sp[n++] = (span){ts, ts + dur, lane, op};
        ops[op].calls++;
        ops[op].total_us += dur;
        ops[op].self_us += dur;
        if (dur > ops[op].max_us) ops[op].max_us = dur;
        if (n == 1 || ts < t_min) t_min = ts;
        if (n == 1 || ts + dur > t_max) t_max = ts + dur;
    }
    json_decref(root);
    /* self time: each span's direct children on its lane (a stack of open spans) */
    int *stack = st ? NULL : malloc((n ? n : 1) * sizeof *stack);
    if (!st && !stack) st = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        if (n) qsort(sp, n, sizeof *sp, by_lane_time);
        const double eps = 0.002;   /* the file's microseconds have 3 decimals */
        size_t depth = 0;
        for (size_t i = 0; i < n; i++) {
            if (i && sp[i].lane != sp[i - 1].lane) depth = 0;
            while (depth && sp[stack[depth - 1]].end <= sp[i].ts + eps) depth--;
            if (depth) {
                const span *p = &sp[stack[depth - 1]];
                if (sp[i].end <= p->end + eps) ops[p->op].self_us -= sp[i].end - sp[i].ts;
                else out->overlaps++;   /* not nested: counted, treated as a sibling */
            }
            stack[depth++] = (int)i;
        }
        for (int i = 0; i < n_ops; i++)
            if (ops[i].self_us < 0) ops[i].self_us = 0;
        if (n_ops) qsort(ops, (size_t)n_ops, sizeof *ops, by_self);
        out->ops = ops;
        out->n_ops = n_ops;
        out->n_spans = (int64_t)n;
        out->n_lanes = n_lanes;
        out->wall_us = n ? t_max - t_min : 0;
        ops = NULL;
    }
    free(stack);
    free(sp);
    free(lanes);
    free(ops);
    return st;
}
