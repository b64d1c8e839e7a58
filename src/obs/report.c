/* report.c - `deepmoe report`: one self-contained HTML page (inline SVG, no
 * script, nothing fetched) from one or more training run directories, W&B's
 * job for deepmoe's runs. Each run gives metrics.jsonl (every record), its
 * model file's config and its checkpoint's run state; several runs share each
 * chart, one color each, and the summary table marks the settings that differ. */
#include "base/base.h"
#include "obs/svg.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KV 160

typedef struct dvec { double *v; int n, cap; int oom; } dvec;

static void push(dvec *d, double x)
{
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 64;
        double *v = realloc(d->v, (size_t)cap * sizeof *v);
        if (!v) { d->oom = 1; return; }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
}

typedef struct kv { char key[64], val[160]; int result; } kv;   /* result: a final metric, else a setting */

/* Every series of a run, once: training records (load and bias hold L*E values
 * per record), then evaluation records. */
#define RUN_SERIES(X) \
    X(step) X(time) X(loss) X(acc) X(lr) X(rps) X(util) X(vio) X(rss_peak) X(p99) X(comm) X(load) X(bias) \
    X(e_step) X(e_loss) X(e_acc) X(e_mse) X(e_util) X(e_vio) X(e_route)

typedef struct run_data {
    char dir[1024], name[256];
    int L, E, has_bias, classify;
#define DECLARE(f) dvec f;
    RUN_SERIES(DECLARE)
#undef DECLARE
    double startup;
    kv cfg[MAX_KV];
    int n_cfg, in_results;
} run_data;

static void run_free(run_data *r)
{
#define FREE(f) free(r->f.v);
    RUN_SERIES(FREE)
#undef FREE
}

static int any_oom(const run_data *r)
{
#define OOM(f) r->f.oom ||
    return RUN_SERIES(OOM) 0;
#undef OOM
}

static void add_kv(run_data *r, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_kv(run_data *r, const char *key, const char *fmt, ...)
{
    if (r->n_cfg == MAX_KV) return;
    kv *k = &r->cfg[r->n_cfg++];
    k->result = r->in_results;
    snprintf(k->key, sizeof k->key, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->val, sizeof k->val, fmt, ap);
    va_end(ap);
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* An [L][E] array of numbers into d (L*E values); sets *L, *E from the first one. 0 ok, -1 a shape mismatch. */
static int push_matrix(dvec *d, json_t *a, int *L, int *E)
{
    if (!json_is_array(a) || !json_array_size(a)) return -1;
    int l = (int)json_array_size(a), e = (int)json_array_size(json_array_get(a, 0));
    if (!*L) *L = l, *E = e;
    if (l != *L || e != *E || e <= 0) return -1;
    for (int i = 0; i < l; i++) {
        json_t *row = json_array_get(a, (size_t)i);
        if (!json_is_array(row) || (int)json_array_size(row) != e) return -1;
        for (int j = 0; j < e; j++) push(d, json_number_value(json_array_get(row, (size_t)j)));
    }
    return 0;
}

/* d grown to want values by fill values in front of what it holds. */
static dm_status pad_front(dvec *d, int64_t want, double fill, const char *path, dm_error *err)
{
    int64_t have = d->n, add = want - have;
    if (add <= 0) return DM_OK;
    for (int64_t i = 0; i < add; i++) push(d, fill);
    if (d->oom) return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    memmove(d->v + add, d->v, (size_t)have * sizeof *d->v);
    for (int64_t i = 0; i < add; i++) d->v[i] = fill;
    return DM_OK;
}

static dm_status read_metrics(run_data *r, dm_error *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return dm_fail(err, DM_ERR_IO, "%s: cannot open: %s (is %s a 'deepmoe train --out' directory?)", path,
                       strerror(errno), r->dir);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0;
    dm_status st = DM_OK;
    while (!st && (got = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (got <= 1) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!json_is_object(o)) {
            st = dm_fail(err, DM_ERR_FORMAT, "%s:%d: not a JSON object (%s)", path, lineno, o ? "another JSON value" : je.text);
            json_decref(o);
            break;
        }
        double step = num(o, "step");
        if (!isfinite(step)) { json_decref(o); continue; }
        if (json_is_true(json_object_get(o, "eval"))) {
            push(&r->e_step, step);
            push(&r->e_loss, num(o, "loss"));
            push(&r->e_acc, num(o, "accuracy"));
            push(&r->e_mse, num(o, "mse"));
            push(&r->e_util, num(o, "expert_utilization"));
            push(&r->e_vio, num(o, "max_vio"));
            push(&r->e_route, num(o, "routing_accuracy"));
            if (json_object_get(o, "accuracy")) r->classify = 1;
        } else {
            push(&r->step, step);
            push(&r->time, num(o, "time_s"));
            push(&r->loss, num(o, "loss"));
            push(&r->acc, num(o, "train_accuracy"));
            push(&r->lr, num(o, "lr"));
            push(&r->rps, num(o, "rows_per_s"));
            push(&r->util, num(o, "expert_utilization"));
            push(&r->vio, num(o, "max_vio"));
            push(&r->rss_peak, num(o, "rss_peak"));
            push(&r->p99, num(o, "step_ms_p99"));
            push(&r->comm, num(o, "comm_share"));
            if (isfinite(num(o, "startup_s"))) r->startup = num(o, "startup_s");
            if (json_object_get(o, "train_accuracy")) r->classify = 1;
            int n0 = r->load.n;
            if (push_matrix(&r->load, json_object_get(o, "expert_load"), &r->L, &r->E)) {
                r->load.n = n0;   /* a record without a load (or of another shape): zeros keep the columns aligned */
                for (int i = 0; i < r->L * r->E; i++) push(&r->load, 0);
            }
            json_t *b = json_object_get(o, "sel_bias");
            n0 = r->bias.n;
            if (b && r->L && !push_matrix(&r->bias, b, &r->L, &r->E)) r->has_bias = 1;
            else {
                r->bias.n = n0;
                for (int i = 0; i < r->L * r->E; i++) push(&r->bias, NAN);
            }
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    /* records before the first with an expert_load could not be padded (L, E unknown then): their
     * cells go in front now, so load and bias hold L*E values for every training record */
    int64_t want = (int64_t)r->step.n * r->L * r->E;
    if (!st) st = pad_front(&r->load, want, 0.0, path, err);
    if (!st) st = pad_front(&r->bias, want, NAN, path, err);
    if (!st && any_oom(r)) st = dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    if (!st && r->step.n == 0 && r->e_step.n == 0)
        st = dm_fail(err, DM_ERR_FORMAT, "%s: no training or evaluation records (did the run log a step?)", path);
    return st;
}

/* The model file's config (every dm_config field) and size, if the run wrote one. */
static void read_config(run_data *r)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", r->dir);
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.packed_only = 1;
    dm_model *m = NULL;
    dm_error e;
    if (dm_model_load(path, &mo, &m, &e)) {
        add_kv(r, "model", "(%s)", e.msg);
        return;
    }
    const dm_config *c = dm_model_config(m);
    for (int i = 0; i < dm_config_field_count(); i++) {
        const dm_config_field *f = dm_config_field_at(i);
        const void *p = (const char *)c + f->offset;
        if (f->kind == DM_KIND_FLOAT) add_kv(r, f->key, "%g", *(const float *)p);
        else if (f->kind == DM_KIND_ENUM && f->names) add_kv(r, f->key, "%s", f->names[*(const int *)p]);
        else if (f->kind == DM_KIND_BOOL) add_kv(r, f->key, "%s", *(const int *)p ? "yes" : "no");
        else add_kv(r, f->key, "%d", *(const int *)p);
    }
    add_kv(r, "parameters", "%lld", (long long)dm_model_param_count(m));
    add_kv(r, "active parameters per row", "%lld", (long long)dm_model_active_params(m));
    dm_model_free(m);
}

static void json_value_text(json_t *v, char *buf, size_t n)
{
    if (json_is_string(v)) snprintf(buf, n, "%s", json_string_value(v));
    else if (json_is_integer(v)) snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, n, "%.6g", json_real_value(v));
    else if (json_is_boolean(v)) snprintf(buf, n, "%s", json_is_true(v) ? "true" : "false");
    else {
        char *s = json_dumps(v, JSON_COMPACT);
        snprintf(buf, n, "%s", s ? s : "?");
        free(s);
    }
}

/* The checkpoint's run state (the training settings), flattened one level. */
static void read_run_state(run_data *r)
{
    char path[1100], blob[8192];
    snprintf(path, sizeof path, "%s/checkpoint/state.safetensors", r->dir);
    size_t len = 0;
    dm_error e;
    if (dm_checkpoint_blob(path, blob, sizeof blob - 1, &len, &e)) return;
    json_t *o = json_loadb(blob, len, 0, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (!strcmp(k, "version") || !strcmp(k, "epoch") || !strcmp(k, "pos")) continue;   /* where it stopped, not a setting */
        if (json_is_object(v)) {
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2) {
                char key[64], val[160];
                snprintf(key, sizeof key, "%s.%s", k, k2);
                json_value_text(v2, val, sizeof val);
                add_kv(r, key, "%s", val);
            }
        } else {
            char val[160];
            json_value_text(v, val, sizeof val);
            add_kv(r, k, "%s", val);
        }
    }
    json_decref(o);
}

static double last_finite(const dvec *d)
{
    for (int i = d->n - 1; i >= 0; i--)
        if (isfinite(d->v[i])) return d->v[i];
    return NAN;
}

static double max_finite(const dvec *d)
{
    double m = NAN;
    for (int i = 0; i < d->n; i++)
        if (isfinite(d->v[i]) && !(d->v[i] <= m)) m = d->v[i];
    return m;
}

static void final_metrics(run_data *r)
{
    double v;
    r->in_results = 1;
    if (r->classify && isfinite(v = last_finite(&r->e_acc))) add_kv(r, "final test accuracy", "%.4f", v);
    if (isfinite(v = last_finite(&r->e_mse))) add_kv(r, "final test MSE", "%.6g", v);
    if (isfinite(v = last_finite(&r->e_loss))) add_kv(r, "final test loss", "%.4f", v);
    if (isfinite(v = last_finite(&r->e_route))) add_kv(r, "final routing accuracy", "%.3f", v);
    if (isfinite(v = last_finite(&r->e_util))) add_kv(r, "final expert utilization (test)", "%.3f", v);
    if (isfinite(v = last_finite(&r->e_vio))) add_kv(r, "final MaxVio (test)", "%.3f", v);
    if (isfinite(v = last_finite(&r->loss))) add_kv(r, "last train loss", "%.4f", v);
    if (isfinite(v = last_finite(&r->step))) add_kv(r, "steps logged", "%.0f", v);
    if (isfinite(v = last_finite(&r->time))) add_kv(r, "train time (s)", "%.1f", v);
    double s = 0;
    int n = 0;
    for (int i = 0; i < r->rps.n; i++)
        if (isfinite(r->rps.v[i])) s += r->rps.v[i], n++;
    if (n) add_kv(r, "mean rows/s", "%.0f", s / n);
    if (isfinite(v = max_finite(&r->rss_peak))) add_kv(r, "peak memory (MiB)", "%.1f", v / 1048576.0);
    if (isfinite(v = max_finite(&r->p99))) add_kv(r, "worst step p99 (ms)", "%.2f", v);
    if (isfinite(v = last_finite(&r->comm))) add_kv(r, "communication share (last)", "%.3f", v);
    if (r->startup > 0) add_kv(r, "startup (s)", "%.2f", r->startup);
    r->in_results = 0;
}

/* ---------------------------------------------------------------- the page */

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_PAL ((int)(sizeof palette / sizeof palette[0]))

/* One chart of a field over every run: train (solid) and/or eval (dashed) series. */
static void chart(dm_sb *b, run_data *runs, int n, const char *id, const char *title, const char *ylabel, size_t train_off,
                  size_t eval_off, const svg_chart *extra)
{
    svg_series s[2 * 16];
    char names[2 * 16][300];
    int k = 0;
    for (int i = 0; i < n && i < 16; i++) {
        for (int pass = 0; pass < 2; pass++) {
            size_t off = pass ? eval_off : train_off;
            if (off == (size_t)-1) continue;
            const dvec *y = (const dvec *)(const void *)((const char *)&runs[i] + off);
            const dvec *x = pass ? &runs[i].e_step : &runs[i].step;
            int finite = 0;
            for (int j = 0; j < y->n; j++) finite |= isfinite(y->v[j]);
            if (!finite) continue;
            snprintf(names[k], sizeof names[k], "%s%s", runs[i].name,
                     train_off != (size_t)-1 && eval_off != (size_t)-1 ? (pass ? " test" : " train") : "");
            s[k] = (svg_series){names[k], palette[i % N_PAL], x->v, y->v, y->n, pass};
            k++;
        }
    }
    svg_chart c = extra ? *extra : (svg_chart){0};
    c.id = id;
    c.title = title;
    c.xlabel = "step";
    c.ylabel = ylabel;
    dm_sb_printf(b, "<figure>");
    svg_line_chart(b, &c, s, k);
    dm_sb_printf(b, "</figure>\n");
}

#define OFF(f) offsetof(run_data, f)
#define NONE ((size_t)-1)

static void summary_table(dm_sb *b, run_data *runs, int n, int results, const char *id)
{
    /* the union of keys, in order of first appearance */
    kv *keys = malloc((size_t)MAX_KV * 16 * sizeof *keys);
    if (!keys) { b->oom = 1; return; }
    int nk = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < runs[i].n_cfg; j++) {
            int seen = 0;
            if (runs[i].cfg[j].result != results) continue;
            for (int q = 0; q < nk && !seen; q++) seen = !strcmp(keys[q].key, runs[i].cfg[j].key);
            if (!seen && nk < MAX_KV * 16) keys[nk++] = runs[i].cfg[j];
        }
    dm_sb_printf(b, "<table id=\"%s\"><thead><tr><th>%s</th>", id, results ? "result" : "setting");
    for (int i = 0; i < n; i++) {
        dm_sb_printf(b, "<th><span class=\"swatch\" style=\"background:%s\"></span>", palette[i % N_PAL]);
        dm_sb_escape(b, runs[i].name);
        dm_sb_printf(b, "</th>");
    }
    dm_sb_printf(b, "</tr></thead><tbody>\n");
    for (int q = 0; q < nk; q++) {
        const char *vals[64];
        int differ = 0;
        for (int i = 0; i < n && i < 64; i++) {
            vals[i] = "–";
            for (int j = 0; j < runs[i].n_cfg; j++)
                if (!strcmp(runs[i].cfg[j].key, keys[q].key)) vals[i] = runs[i].cfg[j].val;
            if (i && strcmp(vals[i], vals[0])) differ = 1;
        }
        dm_sb_printf(b, "<tr%s><td>", differ ? " class=\"diff\"" : "");
        dm_sb_escape(b, keys[q].key);
        dm_sb_printf(b, "</td>");
        for (int i = 0; i < n && i < 64; i++) {
            dm_sb_printf(b, "<td>");
            dm_sb_escape(b, vals[i]);
            dm_sb_printf(b, "</td>");
        }
        dm_sb_printf(b, "</tr>\n");
    }
    dm_sb_printf(b, "</tbody></table>\n");
    free(keys);
}

static void per_run(dm_sb *b, run_data *r, int idx)
{
    dm_sb_printf(b, "<h2 id=\"run-%d\">", idx);
    dm_sb_escape(b, r->name);
    dm_sb_printf(b, ": experts per layer</h2>\n<div class=\"grid\">\n");
    int cols = r->step.n, LE = r->L * r->E;
    double *m = LE && cols ? malloc((size_t)LE * cols * sizeof *m) : NULL;
    for (int l = 0; l < r->L; l++) {
        char id[64], title[400];
        double vmax = 0;
        for (int e = 0; m && e < r->E; e++)
            for (int c = 0; c < cols; c++) {
                double v = r->load.v[(size_t)c * LE + l * r->E + e];
                m[(size_t)e * cols + c] = v;
                vmax = fmax(vmax, v);
            }
        snprintf(id, sizeof id, "heatmap-%d-L%d", idx, l);
        snprintf(title, sizeof title, "%s: expert load, layer %d (share of the micro-batch's slots)", r->name, l);
        dm_sb_printf(b, "<figure>");
        svg_heatmap(b, id, title, m, m ? r->E : 0, cols, r->step.v, vmax, "e", "step");
        dm_sb_printf(b, "</figure>\n");
        if (!r->has_bias) continue;
        svg_series s[64];
        char nm[64][16];
        double *bias = malloc((size_t)r->E * cols * sizeof *bias);
        int ns = 0;
        for (int e = 0; bias && e < r->E && e < 64; e++) {
            for (int c = 0; c < cols; c++) bias[(size_t)e * cols + c] = r->bias.v[(size_t)c * LE + l * r->E + e];
            snprintf(nm[e], sizeof nm[e], "e%d", e);
            s[ns++] = (svg_series){nm[e], palette[e % N_PAL], r->step.v, bias + (size_t)e * cols, cols, e >= N_PAL};
        }
        snprintf(id, sizeof id, "bias-%d-L%d", idx, l);
        snprintf(title, sizeof title, "%s: aux-free selection biases, layer %d", r->name, l);
        svg_chart c = {.id = id, .title = title, .xlabel = "step", .ylabel = "bias"};
        dm_sb_printf(b, "<figure>");
        svg_line_chart(b, &c, s, ns);
        dm_sb_printf(b, "</figure>\n");
        free(bias);
    }
    free(m);
    dm_sb_printf(b, "</div>\n");
}

static const char css[] =
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1280px}"
    "h1{font-size:22px}h2{font-size:17px;margin-top:28px}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}"
    "figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:4px}"
    "svg{width:100%;height:auto;display:block}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}"
    "tr.diff td{background:#fff6d5}.swatch{display:inline-block;width:10px;height:10px;margin-right:5px}"
    "p.note{color:#555;font-size:13px}";

static void page(dm_sb *b, run_data *runs, int n)
{
    dm_sb_printf(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>deepmoe report: ");
    for (int i = 0; i < n; i++) {
        dm_sb_escape(b, runs[i].name);
        if (i + 1 < n) dm_sb_printf(b, ", ");
    }
    dm_sb_printf(b, "</title><style>%s</style></head><body>\n<h1>deepmoe training report</h1>\n<p class=\"note\">", css);
    for (int i = 0; i < n; i++) {
        dm_sb_printf(b, "%s<span class=\"swatch\" style=\"background:%s\"></span>", i ? " &nbsp; " : "", palette[i % N_PAL]);
        dm_sb_escape(b, runs[i].dir);
    }
    dm_sb_printf(b, ". Solid lines: training records (metrics.jsonl, every --log-every steps); dashed: "
                    "evaluations. Metric definitions: docs/metrics.md. Highlighted rows differ between runs.</p>\n");
    dm_sb_printf(b, "<h2>Results</h2>\n");
    summary_table(b, runs, n, 1, "results");
    int cls = 0;
    for (int i = 0; i < n; i++) cls |= runs[i].classify;
    dm_sb_printf(b, "<h2>Training</h2>\n<div class=\"grid\">\n");
    chart(b, runs, n, "chart-loss", "Loss", "loss", OFF(loss), OFF(e_loss), NULL);
    if (cls) chart(b, runs, n, "chart-accuracy", "Accuracy", "accuracy", OFF(acc), OFF(e_acc), NULL);
    else chart(b, runs, n, "chart-mse", "Test MSE", "MSE", NONE, OFF(e_mse), NULL);
    chart(b, runs, n, "chart-lr", "Learning rate", "lr", OFF(lr), NONE, &(svg_chart){.y_from_zero = 1});
    chart(b, runs, n, "chart-throughput", "Throughput", "rows/s", OFF(rps), NONE, &(svg_chart){.y_from_zero = 1});
    chart(b, runs, n, "chart-steptime", "Step time p99 (per log interval)", "ms", OFF(p99), NONE,
          &(svg_chart){.y_from_zero = 1});
    dm_sb_printf(b, "</div>\n<h2>Routing and balance</h2>\n<div class=\"grid\">\n");
    chart(b, runs, n, "chart-utilization", "Expert utilization (mean/max load)", "utilization", OFF(util), OFF(e_util),
          &(svg_chart){.has_hline = 1, .hline = 0.85, .hline_label = "seed: 85%", .y_from_zero = 1});
    chart(b, runs, n, "chart-maxvio", "MaxVio ((max - mean) / mean load)", "MaxVio", OFF(vio), OFF(e_vio),
          &(svg_chart){.y_from_zero = 1});
    chart(b, runs, n, "chart-routing", "Routing accuracy (vs the loss oracle)", "routing accuracy", NONE, OFF(e_route),
          &(svg_chart){.y_from_zero = 1});
    int dist = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < runs[i].comm.n; j++) dist |= isfinite(runs[i].comm.v[j]);
    if (dist)   /* distributed runs: the seed's communication share, with its 15% line */
        chart(b, runs, n, "chart-comm", "Communication share of step time", "share", OFF(comm), NONE,
              &(svg_chart){.has_hline = 1, .hline = 0.15, .hline_label = "seed: < 15%", .y_from_zero = 1});
    dm_sb_printf(b, "</div>\n");
    for (int i = 0; i < n; i++) per_run(b, &runs[i], i);
    dm_sb_printf(b, "<h2>Settings</h2>\n<p class=\"note\">The model file's config (model.safetensors), then the "
                    "checkpoint's training settings (checkpoint/state.safetensors).</p>\n");
    summary_table(b, runs, n, 0, "settings");
    dm_sb_printf(b, "</body></html>\n");
}

static void base_name(char *out, size_t n, const char *dir)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, n, "%.*s", (int)(len - start), dir + start);
    if (!out[0]) snprintf(out, n, "%s", dir);
}

dm_status dm_report_write(const char *const *run_dirs, int n_runs, const char *out_path, dm_error *err)
{
    if (n_runs < 1 || n_runs > 16 || !run_dirs || !out_path)
        return dm_fail(err, DM_ERR_ARG, "report: %d runs given: 1 to 16 run directories", n_runs);
    run_data *runs = calloc((size_t)n_runs, sizeof *runs);
    if (!runs) return dm_fail(err, DM_ERR_NOMEM, "report: out of memory");
    dm_status st = DM_OK;
    for (int i = 0; i < n_runs && !st; i++) {
        snprintf(runs[i].dir, sizeof runs[i].dir, "%s", run_dirs[i]);
        base_name(runs[i].name, sizeof runs[i].name, run_dirs[i]);
        st = read_metrics(&runs[i], err);
        if (!st) {
            final_metrics(&runs[i]);
            read_config(&runs[i]);
            read_run_state(&runs[i]);
        }
    }
    dm_sb b = {0};
    if (!st) {
        page(&b, runs, n_runs);
        if (b.oom) st = dm_fail(err, DM_ERR_NOMEM, "report: out of memory building the page");
    }
    if (!st) {
        dm_atomic_file f;
        if (!(st = dm_atomic_open(&f, out_path, err))) {
            fwrite(b.p, 1, b.len, f.fp);
            st = dm_atomic_commit(&f, err);
        }
    }
    dm_sb_free(&b);
    for (int i = 0; i < n_runs; i++) run_free(&runs[i]);
    free(runs);
    return st;
}
