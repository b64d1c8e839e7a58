/* test_config.c - the model config and its field list (src/nn/config_fields.h):
 * files written before the list existed, the JSON, ranges, the checkpoint
 * comparison, name parsing and the struct_size checks of the structs callers
 * fill. (That the struct and the list agree is checked when config.c compiles;
 * tests/test_config_table.sh shows that a mismatch fails the build.) */
#include "test.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "nn/config_fields.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- files from before */

/* tests/fixtures/compat/: written by deepmoe 0.1 (before the list), never regenerated. */
static void compat_config(const char *name, dm_config *c)
{
    dm_config_default(c);
    c->dim = 16, c->n_experts = 4, c->top_k = 2, c->hidden = 8, c->shared_hidden = 8;
    c->selection_bias = 1;
    if (!strcmp(name, "v0.1-seed")) {
        c->dim = 24, c->hidden = 16, c->shared_hidden = 16, c->selection_bias = 0;
    } else if (!strcmp(name, "v0.1-classifier")) {
        c->n_layers = 2, c->in_dim = 12, c->n_classes = 4;
    } else {  /* v0.1-stack */
        c->router = DM_ROUTER_SIGMOID, c->expert = DM_EXPERT_SWIGLU, c->n_shared = 1;
    }
}

static void test_config_compat_files(dm_t *t)
{
    const char *names[] = {"v0.1-seed", "v0.1-classifier", "v0.1-stack"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char rel[64], out[1024];
        snprintf(rel, sizeof rel, "compat/%s.safetensors", names[i]);
        const char *path = dm_test_fixture(rel);
        dm_error err;
        dm_model *m = NULL, *back = NULL;
        CHECK_OK(t, dm_model_load(path, NULL, &m, &err), &err);
        if (!m) continue;
        dm_config want;
        compat_config(names[i], &want);
        int d = dm_config_diff(dm_model_config(m), &want);
        CHECK(t, d < 0, "%s: config field %s differs", names[i], d < 0 ? "" : dm_config_fields[d].name);
        CHECK(t, dm_model_config(m)->ln_eps == 1e-5f && dm_model_config(m)->route_scale == 1.0f,
              "%s: floats read exactly", names[i]);

        /* the JSON written now is the JSON these files hold, byte for byte: the
         * keys, their order and the number formatting are unchanged */
        dm_st_file f;
        CHECK_OK(t, dm_st_open(path, &f, &err), &err);
        char *now = dm_config_to_json(dm_model_config(m));
        const char *then = dm_st_meta(&f, DM_CONFIG_KEY);
        CHECK(t, now && then && !strcmp(now, then), "%s: JSON\n  now  %s\n  file %s", names[i], now, then);
        free(now);

        /* and what is saved now loads back to the same model */
        snprintf(out, sizeof out, "%s/compat-%s.safetensors", dm_test_tmpdir(), names[i]);
        CHECK_OK(t, dm_model_save(m, out, &err), &err);
        CHECK_OK(t, dm_model_load(out, NULL, &back, &err), &err);
        if (back) {
            CHECK(t, dm_config_diff(dm_model_config(back), dm_model_config(m)) < 0, "%s: config round trip", names[i]);
            int n = dm_model_n_tensors(m), same = n == dm_model_n_tensors(back) && n == f.n_tensors;
            for (int j = 0; same && j < n; j++) {
                dm_tensor_info a = dm_model_tensor(m, j), b;
                same = dm_model_find(back, a.name, &b, &err) == DM_OK && a.numel == b.numel &&
                       !memcmp(a.data, b.data, (size_t)a.numel * sizeof(float));
            }
            CHECK(t, same, "%s: every tensor round trips", names[i]);
        }

        /* and it computes what deepmoe 0.1 computed: compat/NAME.y.npy is 0.1's
         * `infer` of compat/xW.npy (W the input width), on any ISA within rounding */
        static const int widths[] = {24, 12, 16};
        char xr[64], yr[64];
        snprintf(xr, sizeof xr, "compat/x%d.npy", widths[i]);
        snprintf(yr, sizeof yr, "compat/%s.y.npy", names[i]);
        dm_array x = {0}, y = {0};
        CHECK_OK(t, dm_npy_read(dm_test_fixture(xr), &x, &err), &err);
        CHECK_OK(t, dm_npy_read(dm_test_fixture(yr), &y, &err), &err);
        dm_ctx *ctx = NULL;
        CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
        if (ctx && x.data && y.data) {
            float *got = calloc((size_t)(y.rows * y.cols), sizeof *got);
            CHECK_OK(t, dm_forward(ctx, x.data, x.rows, got, NULL, &err), &err);
            double e = dm_test_relerr(got, y.data, y.rows * y.cols);
            CHECK(t, e < 1e-5, "%s: outputs differ from deepmoe 0.1's by %.3g", names[i], e);
            free(got);
        }
        dm_ctx_free(ctx);
        dm_array_free(&x);
        dm_array_free(&y);
        dm_st_close(&f);
        dm_model_free(back);
        dm_model_free(m);
    }
}

/* ---------------------------------------------------------------- the list */

/* A valid value other than the default for field i (the config stays valid). */
static void change_field(dm_config *c, int i)
{
    const dm_config_field *f = &dm_config_fields[i];
    if (f->kind == DM_KIND_FLOAT) {
        *dm_config_float(c, f) = *dm_config_float(c, f) == 0.5f ? 0.25f : 0.5f;
        return;
    }
    int *v = dm_config_int(c, f);
    if (i == DM_CF_top_k || i == DM_CF_topk_groups || i == DM_CF_n_groups) *v = *v == 2 ? 1 : 2;
    else if (f->kind == DM_KIND_INT) *v += 4;
    else *v = *v == (int)f->hi ? (int)f->lo : (int)f->hi;
}

static void test_config_json_every_field(dm_t *t)
{
    dm_config base;
    dm_config_default(&base);
    base.dim = 24, base.hidden = 12, base.n_experts = 8, base.n_groups = 2;   /* topk_groups can grow */
    dm_error err;
    for (int i = 0; i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        dm_config c = base, back;
        change_field(&c, i);
        CHECK(t, dm_config_diff(&c, &base) == i, "%s: diff names it", f->name);
        CHECK_OK(t, dm_config_validate(&c, &err), &err);
        char *s = dm_config_to_json(&c);
        CHECK(t, s != NULL, "%s: to JSON", f->name);
        if (!s) continue;
        CHECK_OK(t, dm_config_from_json(s, &back, "x", &err), &err);
        CHECK(t, dm_config_diff(&back, &c) < 0, "%s: JSON round trip: %s", f->name, s);
        /* every key, in list order */
        const char *p = s;
        for (int j = 0; j < DM_CF_COUNT && p; j++) {
            char key[64];
            snprintf(key, sizeof key, "\"%s\":", dm_config_fields[j].key);
            p = strstr(p, key);
            CHECK(t, p != NULL, "%s: key %s missing or out of order in %s", f->name, key, s);
        }
        free(s);
    }
    /* absent keys take the defaults (hidden: dim / 2); a wrong type names the key */
    dm_config c;
    CHECK_OK(t, dm_config_from_json("{\"dim\": 40}", &c, "x", &err), &err);
    CHECK_OK(t, dm_config_validate(&c, &err), &err);
    CHECK(t, c.dim == 40 && c.hidden == 20 && c.n_experts == 8 && c.ln_eps == 1e-5f, "defaults for absent keys");
    CHECK(t, dm_config_from_json("{\"norm_topk\": 1}", &c, "x", &err) == DM_ERR_FORMAT &&
             strstr(err.msg, "x: config key \"norm_topk\" must be true or false"), "%s", err.msg);
    CHECK(t, dm_config_from_json("{\"expert\": \"moe\"}", &c, "x", &err) == DM_ERR_FORMAT &&
             strstr(err.msg, "\"expert\" must be \"seed\" or \"swiglu\""), "%s", err.msg);
}

/* Each field one step outside its range: refused, the message names it. */
static void test_config_ranges(dm_t *t)
{
    dm_error err;
    for (int i = 0; i < DM_CF_COUNT; i++) {
        const dm_config_field *f = &dm_config_fields[i];
        for (int side = 0; side < 2; side++) {
            dm_config c;
            dm_config_default(&c);
            if (f->kind == DM_KIND_FLOAT) *dm_config_float(&c, f) = side ? (float)f->hi * 2 : (float)f->lo;
            else *dm_config_int(&c, f) = side ? (int)f->hi + 1 : (int)f->lo - 1;
            dm_status st = dm_config_validate(&c, &err);
            CHECK(t, st == DM_ERR_ARG, "%s %s: %s", f->name, side ? "above" : "below", dm_status_name(st));
            CHECK(t, strstr(err.msg, f->label) != NULL, "%s: message \"%s\" lacks \"%s\"", f->name, err.msg, f->label);
        }
    }
    dm_config c;
    dm_config_default(&c);
    c.route_scale = NAN;
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "route scale nan must be in (0, 1e+06]"),
          "NaN: %s", err.msg);
    dm_config_default(&c);
    c.dim = 1, c.hidden = 0;   /* the range admits hidden 0 (= dim / 2), the rule after it not dim / 2 = 0 */
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "hidden 0 (dim / 2)"), "%s", err.msg);
    dm_config_default(&c);
    c.router = (dm_router_kind)7;
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "unknown router kind 7 (0..2: seed, softmax or sigmoid)"),
          "%s", err.msg);
}

static void test_config_defaults(dm_t *t)
{
    dm_config c;
    memset(&c, 0xff, sizeof c);
    dm_config_default(&c);
    /* the public header's promise */
    CHECK(t, c.struct_size == sizeof c && c.dim == 512 && c.n_experts == 8 && c.top_k == 2 && c.hidden == 256 &&
             c.router == DM_ROUTER_SEED && c.expert == DM_EXPERT_SEED && c.n_layers == 1 && c.in_dim == 0 &&
             c.n_classes == 0 && c.route_scale == 1.0f && c.ln_eps == 1e-5f && c.n_shared == 0,
          "dm_config_default");
    dm_error err;
    CHECK_OK(t, dm_config_validate(&c, &err), &err);
    dm_model_opts o;
    memset(&o, 0xff, sizeof o);
    dm_model_opts_default(&o);
    CHECK(t, o.struct_size == sizeof o && o.isa == DM_ISA_AUTO && o.top_k == 0, "dm_model_opts_default");
    dm_train_config tc;
    dm_train_config_default(&tc);
    CHECK(t, tc.struct_size == sizeof tc, "dm_train_config_default sets struct_size");
}

/* ---------------------------------------------------------------- struct_size */

static void test_config_struct_size(dm_t *t)
{
    dm_error err;
    dm_model *m = NULL;
    dm_config c, zero;
    memset(&zero, 0, sizeof zero);
    CHECK(t, dm_config_validate(&zero, &err) == DM_ERR_ARG &&
             strstr(err.msg, "dm_config is not initialised (struct_size 0): call dm_config_default first"),
          "zeroed config: %s", err.msg);
    CHECK(t, dm_model_create(&zero, NULL, &m, &err) == DM_ERR_ARG && !m && strstr(err.msg, "call dm_config_default first"),
          "zeroed config, create: %s", err.msg);
    dm_config_default(&c);
    c.dim = 16, c.hidden = 8;
    c.struct_size = sizeof c - 4;   /* a caller built against another layout */
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "dm_config.struct_size is") &&
             strstr(err.msg, "call dm_config_default first"), "other layout: %s", err.msg);
    c.struct_size = sizeof c;

    dm_model_opts o;
    memset(&o, 0, sizeof o);
    CHECK(t, dm_model_create(&c, &o, &m, &err) == DM_ERR_ARG && !m && strstr(err.msg, "call dm_model_opts_default first"),
          "zeroed opts, create: %s", err.msg);
    CHECK(t, dm_model_load(dm_test_fixture("compat/v0.1-seed.safetensors"), &o, &m, &err) == DM_ERR_ARG && !m &&
             strstr(err.msg, "dm_model_opts"), "zeroed opts, load: %s", err.msg);
    dm_model_opts_default(&o);
    o.isa = DM_ISA_REF;
    CHECK_OK(t, dm_model_create(&c, &o, &m, &err), &err);
    if (!m) return;
    CHECK(t, dm_model_isa(m) == DM_ISA_REF, "opts used");

    dm_train_config tc;
    memset(&tc, 0, sizeof tc);
    tc.lr = 1e-3f, tc.total_steps = 1, tc.grad_accum = 1, tc.eps = 1e-8f;
    dm_trainer *tr = NULL;
    CHECK(t, dm_trainer_create(m, &tc, NULL, &tr, &err) == DM_ERR_ARG && !tr &&
             strstr(err.msg, "call dm_train_config_default first"), "zeroed train config: %s", err.msg);
    dm_train_config_default(&tc);
    tc.total_steps = 1;
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &tr, &err), &err);
    dm_trainer_free(tr);
    dm_model_free(m);
}

/* ---------------------------------------------------------------- names */

static void test_config_parse_names(dm_t *t)
{
    dm_error err;
    dm_router_kind r = DM_ROUTER_SEED;
    CHECK(t, dm_router_parse("sigmoid", &r, &err) == DM_OK && r == DM_ROUTER_SIGMOID, "sigmoid");
    CHECK(t, dm_router_parse("softmax", &r, NULL) == DM_OK && r == DM_ROUTER_SOFTMAX, "softmax, err NULL");
    CHECK(t, dm_router_parse("magic", &r, &err) == DM_ERR_ARG && r == DM_ROUTER_SOFTMAX &&
             !strcmp(err.msg, "unknown router 'magic' (expected seed, softmax or sigmoid)"), "unknown: %s", err.msg);
    CHECK(t, dm_router_parse(NULL, &r, &err) == DM_ERR_ARG && strstr(err.msg, "expected seed, softmax or sigmoid"),
          "NULL: %s", err.msg);
    dm_expert_kind e = DM_EXPERT_SEED;
    CHECK(t, dm_expert_parse("swiglu", &e, &err) == DM_OK && e == DM_EXPERT_SWIGLU, "swiglu");
    CHECK(t, dm_expert_parse("SwiGLU", &e, &err) == DM_ERR_ARG && e == DM_EXPERT_SWIGLU &&
             !strcmp(err.msg, "unknown expert type 'SwiGLU' (expected seed or swiglu)"), "case matters: %s", err.msg);
    for (int i = 0; i <= DM_ROUTER_SIGMOID; i++)
        CHECK(t, dm_router_parse(dm_router_name((dm_router_kind)i), &r, NULL) == DM_OK && (int)r == i, "router %d", i);
}

void suite_config(dm_t *t)
{
    DM_RUN(t, test_config_compat_files);
    DM_RUN(t, test_config_json_every_field);
    DM_RUN(t, test_config_ranges);
    DM_RUN(t, test_config_defaults);
    DM_RUN(t, test_config_struct_size);
    DM_RUN(t, test_config_parse_names);
}
