/* triton_render.c - a dm_triton_config written out: as config.pbtxt text (what
 * `deepmoe export` writes; it parses back to the same config) and as the JSON
 * Triton answers GET /v2/models/<m>/config with, every field Triton prints
 * present, defaults included. */
#include "serve/triton_config.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void sb_tensors(sb *b, const char *f, const dm_triton_tensor *ts, int n, int is_input)
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

char *dm_triton_config_format(const dm_triton_config *c)
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
    if (c->version_policy == DM_TRITON_VP_ALL) {
        sb_printf(&b, "version_policy: { all { } }\n");
    } else if (c->version_policy == DM_TRITON_VP_SPECIFIC) {
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

char *dm_triton_config_json(const dm_triton_config *c)
{
    if (!c) return NULL;
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "platform", json_string(c->platform));
    json_object_set_new(o, "backend", json_string(c->backend));
    json_t *vp = json_object();
    if (c->version_policy == DM_TRITON_VP_ALL) {
        json_object_set_new(vp, "all", json_object());
    } else if (c->version_policy == DM_TRITON_VP_SPECIFIC) {
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
        const dm_triton_tensor *ts = io ? c->outputs : c->inputs;
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
    char gname[DM_TRITON_NAME + 8];
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
