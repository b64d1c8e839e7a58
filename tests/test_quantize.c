/* test_quantize.c - compressed models: every weight type through the whole
 * model (quantize, forward, save, load, inspect values), the files' checks
 * (missing, corrupt and unknown parts refused with clear messages), the
 * top-k flip rate, and 2:4 fine-tuning with the mask kept. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "kernels/wtype.h"
#include "nn/model.h"

#include <stdlib.h>
#include <string.h>

static dm_model *random_model(dm_t *t, const dm_config *c, uint64_t seed)
{
    dm_model *m = NULL;
    dm_error err;
    CHECK_OK(t, dm_model_create(c, NULL, &m, &err), &err);
    if (m) dm_test_randomize(m, seed);
    return m;
}

static float *forward(dm_t *t, const dm_model *m, const float *x, int64_t n, int32_t *experts)
{
    dm_ctx *ctx = NULL;
    dm_error err;
    float *y = calloc((size_t)(n * dm_model_out_width(&m->cfg) + 1), sizeof *y);
    dm_routing r = {.experts = experts};
    CHECK_OK(t, dm_ctx_create(m, NULL, &ctx, &err), &err);
    if (ctx) CHECK_OK(t, dm_forward(ctx, x, n, y, experts ? &r : NULL, &err), &err);
    dm_ctx_free(ctx);
    return y;
}

static dm_model *quantize(dm_t *t, const dm_model *m, const char *type, int group, int router_same, dm_isa isa)
{
    dm_quantize_opts q;
    dm_quantize_opts_default(&q);
    q.type = type;
    q.group = group;
    q.router_same = router_same;
    q.isa = isa;
    dm_model *out = NULL;
    dm_error err;
    CHECK_OK(t, dm_model_quantize(m, &q, &out, &err), &err);
    return out;
}

/* The configs the types run through: the bare seed layer, a SwiGLU layer with a
 * shared expert, a two-layer classifier with embedding and head. */
static void test_configs(dm_config c[3])
{
    for (int i = 0; i < 3; i++) dm_config_default(&c[i]);
    c[0].dim = 24; c[0].n_experts = 4; c[0].top_k = 2; c[0].hidden = 20;
    c[1].dim = 36; c[1].n_experts = 5; c[1].top_k = 2; c[1].hidden = 12; c[1].expert = DM_EXPERT_SWIGLU;
    c[1].n_shared = 1; c[1].shared_hidden = 8; c[1].router = DM_ROUTER_SOFTMAX;
    c[2].dim = 32; c[2].n_experts = 4; c[2].top_k = 2; c[2].hidden = 16; c[2].n_layers = 2; c[2].in_dim = 40;
    c[2].n_classes = 5;
}

/* Every type, both router choices, q8 with and without groups: the compressed
 * model's forward is the dequantized fp32 model's within what the type's
 * activations allow, on every ISA the same up to rounding; its routing (fp32
 * router, one layer) is the fp32 model's. */
static void test_quantize_types_forward(dm_t *t)
{
    dm_config cs[3];
    test_configs(cs);
    const int64_t n = 41;
    for (int ci = 0; ci < 3; ci++) {
        dm_model *m = random_model(t, &cs[ci], 100 + ci);
        if (!m) continue;
        int in = dm_model_in_width(&cs[ci]), out = dm_model_out_width(&cs[ci]);
        float *x = dm_test_rows(n, in, 7 + ci);
        int32_t *e0 = calloc((size_t)(n * cs[ci].top_k * cs[ci].n_layers), sizeof *e0);
        int32_t *e1 = calloc((size_t)(n * cs[ci].top_k * cs[ci].n_layers), sizeof *e1);
        for (int wi = 1; wi < DM_WT_COUNT; wi++) {
            const dm_wtype *w = &dm_wtypes[wi];
            for (int variant = 0; variant < (w->grouped ? 3 : 2); variant++) {
                int router_same = variant == 1, group = variant == 2 ? 32 : 0;
                dm_model *q = quantize(t, m, w->name, group, router_same, DM_ISA_AUTO);
                dm_model *qr = quantize(t, m, w->name, group, router_same, DM_ISA_REF);
                if (!q || !qr) { dm_model_free(q); dm_model_free(qr); continue; }
                CHECK(t, !strcmp(dm_model_wtype(q), w->name) &&
                         !strcmp(dm_model_router_wtype(q), router_same ? w->name : "f32") && q->packed_only,
                      "%s: types %s/%s", w->name, dm_model_wtype(q), dm_model_router_wtype(q));
                /* the fp32 model of the compressed values */
                dm_model *d = quantize(t, q, "f32", 0, 0, DM_ISA_AUTO);
                float *yq = forward(t, q, x, n, e1), *yr = forward(t, qr, x, n, NULL), *yd = d ? forward(t, d, x, n, e0) : NULL;
                double er = dm_test_relerr(yq, yr, n * out);
                CHECK(t, er < 1e-4, "%s cfg %d router %s group %d: best ISA vs reference kernels %.3g", w->name, ci,
                      router_same ? "same" : "f32", group, er);
                int same_routes = 1;
                for (int64_t j = 0; j < n * cs[ci].top_k * cs[ci].n_layers; j++) same_routes &= e0[j] == e1[j];
                if (same_routes && yd) {  /* only where routing agrees does the bound mean something */
                    double tol = wi == DM_WT_BF16 || wi == DM_WT_NM24_BF16 ? 3e-2 : wi == DM_WT_Q8 || wi == DM_WT_NM24_Q8 ? 6e-2 : 1e-4;
                    if (router_same && wi == DM_WT_NM24_BF16) tol = 3e-2;
                    if (wi == DM_WT_NM24_Q8 && !router_same) tol = 1e-4;  /* fp32 activations on int8 values: exact */
                    double e = dm_test_relerr(yq, yd, n * out);
                    CHECK(t, e < tol, "%s cfg %d router %s group %d: %.3g from the dequantized fp32 model (bound %.3g)",
                          w->name, ci, router_same ? "same" : "f32", group, e, tol);
                }
                if (!router_same && cs[ci].n_layers == 1) {
                    float *y0 = forward(t, m, x, n, e0);
                    int flips = 0;
                    for (int64_t j = 0; j < n * cs[ci].top_k; j++) flips += e0[j] != e1[j];
                    CHECK(t, flips == 0, "%s cfg %d: an fp32 router routes %d slots differently", w->name, ci, flips);
                    free(y0);
                }
                free(yq); free(yr); free(yd);
                dm_model_free(d); dm_model_free(q); dm_model_free(qr);
            }
        }
        free(e0); free(e1); free(x);
        dm_model_free(m);
    }
}

/* save -> load gives the same model (bitwise forward), save again gives the
 * same bytes; the values read back are the dequantized ones; memory shrinks. */
static void test_quantize_save_load(dm_t *t)
{
    dm_config cs[3];
    test_configs(cs);
    for (int ci = 0; ci < 3; ci++) {
        dm_model *m = random_model(t, &cs[ci], 200 + ci);
        if (!m) continue;
        int in = dm_model_in_width(&cs[ci]), out = dm_model_out_width(&cs[ci]);
        float *x = dm_test_rows(17, in, 3);
        for (int wi = 1; wi < DM_WT_COUNT; wi++) {
            const dm_wtype *w = &dm_wtypes[wi];
            dm_model *q = quantize(t, m, w->name, w->grouped && ci == 1 ? 64 : 0, ci == 2, DM_ISA_AUTO), *l = NULL;
            if (!q) continue;
            char p1[64], p2[64];
            snprintf(p1, sizeof p1, "q_%d_%d_a.safetensors", ci, wi);
            snprintf(p2, sizeof p2, "q_%d_%d_b.safetensors", ci, wi);
            const char *f1 = dm_test_write_file(p1, "", 0), *f1c = strdup(f1);
            dm_error err;
            CHECK_OK(t, dm_model_save(q, f1c, &err), &err);
            CHECK_OK(t, dm_model_load(f1c, NULL, &l, &err), &err);
            if (l) {
                const char *f2 = dm_test_write_file(p2, "", 0);
                char *f2c = strdup(f2);
                CHECK_OK(t, dm_model_save(l, f2c, &err), &err);
                size_t n1, n2;
                unsigned char *b1 = dm_test_slurp(f1c, &n1), *b2 = dm_test_slurp(f2c, &n2);
                CHECK(t, b1 && n1 == n2 && !memcmp(b1, b2, n1), "%s cfg %d: save(load(save(q))) differs", w->name, ci);
                free(b1); free(b2); free(f2c);
                float *yq = forward(t, q, x, 17, NULL), *yl = forward(t, l, x, 17, NULL);
                CHECK(t, !memcmp(yq, yl, (size_t)17 * out * sizeof *yq), "%s cfg %d: loaded forward differs", w->name, ci);
                free(yq); free(yl);
                CHECK(t, dm_model_memory(l) < dm_model_memory(m) / 2 + 64 * 1024, "%s cfg %d: memory %lld of fp32's %lld",
                      w->name, ci, (long long)dm_model_memory(l), (long long)dm_model_memory(m));
                /* values: the reference dequantization of the file's parts */
                for (int i = 0; i < l->n_tensors; i++) {
                    const dm_tensor_desc *dd = &l->tensors[i];
                    float *v = malloc((size_t)dd->numel * sizeof *v), *src = malloc((size_t)dd->numel * sizeof *v);
                    CHECK_OK(t, dm_model_tensor_read(l, i, v, &err), &err);
                    CHECK_OK(t, dm_model_tensor_read(m, i, src, &err), &err);
                    double e = dm_test_relerr(v, src, dd->numel);
                    int typed = dd->wm && dd->wm->type->id != DM_WT_F32;
                    double tol = !typed ? 0 : w->sparse ? 1.0 : wi == DM_WT_BF16 ? 8e-3 : wi == DM_WT_F16 ? 1e-3 : 1e-2;
                    if (e > tol) CHECK(t, 0, "%s cfg %d: %s read back %.3g from the source", w->name, ci, dd->name, e);
                    free(v); free(src);
                }
            }
            /* dequantize on load: an f32 model with the same values, which trains */
            dm_model_opts o;
            dm_model_opts_default(&o);
            o.dequantize = 1;
            dm_model *dq = NULL;
            CHECK_OK(t, dm_model_load(f1c, &o, &dq, &err), &err);
            if (dq && l) {
                CHECK(t, !dq->packed_only && dq->wtype->id == DM_WT_F32 && dq->loaded_wtype == w, "%s: dequantized load",
                      w->name);
                for (int i = 0; i < l->n_tensors; i++) {
                    const dm_tensor_desc *dd = &l->tensors[i];
                    float *v = malloc((size_t)dd->numel * sizeof *v);
                    dm_model_tensor_read(l, i, v, &err);
                    dm_tensor_info ti = dm_model_tensor(dq, i);
                    CHECK(t, ti.data && !memcmp(v, ti.data, (size_t)dd->numel * sizeof *v), "%s: %s dequantized differs",
                          w->name, dd->name);
                    free(v);
                }
            }
            dm_model_free(dq);
            free((void *)f1c);
            dm_model_free(l);
            dm_model_free(q);
        }
        free(x);
        dm_model_free(m);
    }
}

/* ---------------------------------------------------------------- bad files */

/* Copies the safetensors file src to dst, with tensor `name` dropped (mode 0),
 * its first 4 bytes set to bytes (mode 1) or its dtype relabelled U8 and shape
 * reinterpreted (mode 2: an I8/U8 part as the other), and metadata key `key`
 * set to val (NULL key: kept as is). */
static int rewrite(const char *src, const char *dst, const char *name, int mode, const unsigned char bytes[4],
                   const char *key, const char *val)
{
    dm_st_file f;
    dm_error err;
    if (dm_st_open(src, &f, &err)) return -1;
    dm_st_out *o = calloc((size_t)f.n_tensors, sizeof *o);
    unsigned char **copies = calloc((size_t)f.n_tensors, sizeof *copies);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const dm_st_tensor *s = &f.tensors[i];
        int hit = name && !strcmp(s->name, name);
        if (hit && mode == 0) continue;
        size_t bytes_n = (size_t)(s->end - s->begin);
        copies[n] = malloc(bytes_n + 4);
        memcpy(copies[n], s->data, bytes_n);
        if (hit && mode == 1 && bytes_n >= 4) memcpy(copies[n], bytes, 4);
        o[n] = (dm_st_out){.name = s->name, .ndim = s->ndim, .raw = copies[n], .dtype = s->dtype};
        if (hit && mode == 2) o[n].dtype = s->dtype == DM_DT_I8 ? DM_DT_U8 : DM_DT_I8;
        memcpy(o[n].shape, s->shape, sizeof s->shape);
        n++;
    }
    const char *meta[32];
    int nm = 0;
    for (int i = 0; i < f.n_meta && nm < 15; i++) {
        if (key && !strcmp(f.meta_keys[i], key)) continue;
        meta[2 * nm] = f.meta_keys[i];
        meta[2 * nm + 1] = f.meta_vals[i];
        nm++;
    }
    if (key && val) {
        meta[2 * nm] = key;
        meta[2 * nm + 1] = val;
        nm++;
    }
    int rc = dm_st_write(dst, o, n, meta, nm, &err) ? -1 : 0;
    for (int i = 0; i < n; i++) free(copies[i]);
    free(copies);
    free(o);
    dm_st_close(&f);
    return rc;
}

static void expect_load_error(dm_t *t, const char *path, dm_status code, const char *needle, const char *what)
{
    dm_model *m = NULL;
    dm_error err = {0};
    dm_status st = dm_model_load(path, NULL, &m, &err);
    CHECK(t, st == code && strstr(err.msg, needle), "%s: got %s '%s', want %s with '%s'", what, dm_status_name(st), err.msg,
          dm_status_name(code), needle);
    dm_model_free(m);
}

static void test_quantize_bad_files(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 16; c.n_experts = 3; c.top_k = 2; c.hidden = 8;
    dm_model *m = random_model(t, &c, 5);
    dm_model *q8 = m ? quantize(t, m, "q8", 0, 0, DM_ISA_AUTO) : NULL;
    dm_model *sp = m ? quantize(t, m, "nm24", 0, 0, DM_ISA_AUTO) : NULL;
    if (!q8 || !sp) { dm_model_free(m); dm_model_free(q8); dm_model_free(sp); return; }
    char *fq = strdup(dm_test_write_file("bad_q8.safetensors", "", 0));
    char *fs = strdup(dm_test_write_file("bad_nm24.safetensors", "", 0));
    char *fb = strdup(dm_test_write_file("bad_x.safetensors", "", 0));
    dm_error err;
    CHECK_OK(t, dm_model_save(q8, fq, &err), &err);
    CHECK_OK(t, dm_model_save(sp, fs, &err), &err);
    static const unsigned char nan_bytes[4] = {0, 0, 0xc0, 0x7f}, neg[4] = {0, 0, 0x80, 0xbf}, idx_bad[4] = {0x33, 0, 0, 0};
    /* missing scales */
    if (!rewrite(fq, fb, "experts.1.net.3.weight.scale", 0, NULL, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "missing tensor experts.1.net.3.weight.scale", "missing scales");
    /* corrupt scales: NaN, negative */
    if (!rewrite(fq, fb, "experts.0.net.0.weight.scale", 1, nan_bytes, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "corrupt scale tensor experts.0.net.0.weight.scale", "NaN scale");
    if (!rewrite(fq, fb, "experts.2.net.0.weight.scale", 1, neg, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "corrupt scale tensor", "negative scale");
    /* a part of the wrong dtype */
    if (!rewrite(fq, fb, "experts.0.net.3.weight", 2, NULL, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "is U8, expected I8", "values of the wrong dtype");
    /* a type the build does not know; a bad group */
    if (!rewrite(fq, fb, NULL, 0, NULL, "deepmoe.wtype", "q3"))
        expect_load_error(t, fb, DM_ERR_UNSUPPORTED, "weight type \"q3\" is not one this build knows", "unknown type");
    if (!rewrite(fq, fb, NULL, 0, NULL, "deepmoe.wgroup", "48"))
        expect_load_error(t, fb, DM_ERR_FORMAT, "a group is 0, 32, 64 or 128", "bad group");
    /* grouped scales [N, 2] without the group in the metadata: the shape says so */
    dm_config c64 = c;
    c64.dim = 64;
    dm_model *m64 = random_model(t, &c64, 8), *g64 = m64 ? quantize(t, m64, "q8", 32, 0, DM_ISA_AUTO) : NULL;
    char *fg = strdup(dm_test_write_file("bad_g.safetensors", "", 0));
    if (g64 && !dm_model_save(g64, fg, &err) && !rewrite(fg, fb, NULL, 0, NULL, "deepmoe.wgroup", NULL))
        expect_load_error(t, fb, DM_ERR_SHAPE, "experts.0.net.0.weight.scale has shape [8, 2], expected [8]",
                          "group vs scale shape");
    free(fg);
    dm_model_free(g64);
    dm_model_free(m64);
    /* an f32 file holding int8 experts is not the model its config says */
    if (!rewrite(fq, fb, NULL, 0, NULL, "deepmoe.wtype", NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "cannot be this model", "typed parts in an f32 file");
    /* nm24: a bad index nibble, missing indices */
    if (!rewrite(fs, fb, "experts.1.net.0.weight.idx", 1, idx_bad, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "corrupt index tensor experts.1.net.0.weight.idx", "bad 2:4 index");
    if (!rewrite(fs, fb, "experts.0.net.3.weight.idx", 0, NULL, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "missing tensor experts.0.net.3.weight.idx", "missing indices");
    /* an nm24 file whose config says dim 6: refused before anything is read */
    {
        dm_st_file f;
        if (!dm_st_open(fs, &f, &err)) {
            const char *cfg = dm_st_meta(&f, "deepmoe.config");
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", cfg ? cfg : "");
            char *p = strstr(buf, "\"dim\":16");
            dm_st_close(&f);
            if (p) {
                memmove(p + 7, p + 8, strlen(p + 8) + 1);  /* "dim":16 -> "dim":6 */
                p[6] = '6';
                if (!rewrite(fs, fb, NULL, 0, NULL, "deepmoe.config", buf))
                    expect_load_error(t, fb, DM_ERR_SHAPE, "nm24 weights need dim (6), hidden (8) to be multiples of 4",
                                      "nm24 with K % 4 != 0 in a file");
            }
        }
    }
    /* int8 values of -128, a router type that is neither f32 nor the experts' */
    static const unsigned char m128[4] = {0x80, 0, 0, 0};
    if (!rewrite(fq, fb, "experts.1.net.0.weight", 1, m128, NULL, NULL))
        expect_load_error(t, fb, DM_ERR_FORMAT, "value 0 is -128 (int8 weights are in [-127, 127])", "int8 -128");
    if (!rewrite(fq, fb, NULL, 0, NULL, "deepmoe.router_wtype", "bf16"))
        expect_load_error(t, fb, DM_ERR_FORMAT, "the router is f32 or of the experts' type (q8)", "mixed router type");
    /* a weight that is not finite does not compress */
    {
        dm_model *inf = random_model(t, &c, 5), *bad2 = NULL;
        if (inf) {
            inf->params[inf->tensors[dm_model_tensor_index(inf, "experts.2.net.3.weight")].offset + 9] = INFINITY;
            dm_quantize_opts qi;
            dm_quantize_opts_default(&qi);
            dm_error e3 = {0};
            dm_status s3 = dm_model_quantize(inf, &qi, &bad2, &e3);
            CHECK(t, s3 == DM_ERR_NONFINITE && strstr(e3.msg, "experts.2.net.3.weight holds Inf at row 1, column 1") && !bad2,
                  "Inf weight: %s '%s'", dm_status_name(s3), e3.msg);
        }
        dm_model_free(inf);
        dm_model_free(bad2);
    }
    /* nm24 of a shape that does not divide by 4 (D = 18); a group on a type without */
    dm_config c6 = c;
    c6.dim = 18;
    dm_model *m6 = random_model(t, &c6, 6), *bad = NULL;
    dm_quantize_opts qo;
    dm_quantize_opts_default(&qo);
    qo.type = "nm24";
    dm_error e2 = {0};
    if (m6) {
        dm_status st = dm_model_quantize(m6, &qo, &bad, &e2);
        CHECK(t, st == DM_ERR_SHAPE && strstr(e2.msg, "multiple") && strstr(e2.msg, "18") && !bad,
              "nm24 of K=18: %s '%s'", dm_status_name(st), e2.msg);
    }
    qo.type = "bf16";
    qo.group = 32;
    dm_status st = dm_model_quantize(m, &qo, &bad, &e2);
    CHECK(t, st == DM_ERR_ARG && strstr(e2.msg, "group") && !bad, "bf16 with a group: %s '%s'", dm_status_name(st), e2.msg);
    qo.type = "int4";
    qo.group = 0;
    st = dm_model_quantize(m, &qo, &bad, &e2);
    CHECK(t, st == DM_ERR_ARG && strstr(e2.msg, "unknown weight type \"int4\""), "unknown type: %s", e2.msg);
    /* training refuses a compressed model */
    dm_train_config tc;
    dm_train_config_default(&tc);
    dm_trainer *tr = NULL;
    st = dm_trainer_create(q8, &tc, NULL, &tr, &e2);
    CHECK(t, st != DM_OK && !tr, "a trainer on a q8 model: %s", dm_status_name(st));
    dm_trainer_free(tr);
    free(fq); free(fs); free(fb);
    dm_model_free(m6); dm_model_free(m); dm_model_free(q8); dm_model_free(sp);
}

/* ---------------------------------------------------------------- flip rate */

/* Against a direct count from the routings; 0 for the same model and for an
 * fp32 router on one layer; positive and bounded for a q8 router; and a
 * hand-made flip: one expert's router row pushed up takes rows over. */
static void test_quantize_flip_rate(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 32; c.n_experts = 6; c.top_k = 2; c.hidden = 8; c.n_layers = 2;
    dm_model *m = random_model(t, &c, 9);
    if (!m) return;
    const int64_t n = 300;
    float *x = dm_test_rows(n, c.dim, 11);
    double rate = -1, per[2];
    dm_error err;
    CHECK_OK(t, dm_topk_flip_rate(m, m, NULL, x, n, &rate, per, &err), &err);
    CHECK(t, rate == 0 && per[0] == 0 && per[1] == 0, "same model: %g", rate);
    dm_model *q = quantize(t, m, "q8", 0, 1, DM_ISA_AUTO);
    if (q) {
        CHECK_OK(t, dm_topk_flip_rate(m, q, NULL, x, n, &rate, per, &err), &err);
        /* the count by hand */
        int32_t *ea = calloc((size_t)(2 * n * 2), sizeof *ea), *eb = calloc((size_t)(2 * n * 2), sizeof *eb);
        free(forward(t, m, x, n, ea));
        free(forward(t, q, x, n, eb));
        int64_t rows = 0, lay0 = 0;
        for (int64_t r = 0; r < n; r++) {
            int any = 0;
            for (int l = 0; l < 2; l++) {
                const int32_t *a = ea + (l * n + r) * 2, *b = eb + (l * n + r) * 2;
                int same = (a[0] == b[0] && a[1] == b[1]) || (a[0] == b[1] && a[1] == b[0]);
                any |= !same;
                if (l == 0) lay0 += !same;
            }
            rows += any;
        }
        CHECK(t, rate == (double)rows / n && per[0] == (double)lay0 / n, "flip rate %g vs counted %g (layer 0 %g vs %g)",
              rate, (double)rows / n, per[0], (double)lay0 / n);
        CHECK(t, rate < 0.2, "a q8 router flips %.3f of the rows (bound 0.2)", rate);
        free(ea); free(eb);
    }
    /* expert 0's router row times 3 plus a large bias: most rows pick it in layer 0 */
    dm_model *b = random_model(t, &c, 9);
    if (b) {
        float *gw = (float *)b->layers[0].gate_w, *gb = (float *)b->layers[0].gate_b;
        for (int j = 0; j < c.dim; j++) gw[j] *= 3;
        gb[0] += 100;
        dm_model_sync(b, &err);
        CHECK_OK(t, dm_topk_flip_rate(m, b, NULL, x, n, &rate, per, &err), &err);
        CHECK(t, rate > 0.3 && per[0] > 0.3 && rate >= per[0] && rate >= per[1], "pushed expert: rate %g, layers %g %g",
              rate, per[0], per[1]);
    }
    dm_model_free(b);
    dm_model_free(q);
    free(x);
    dm_model_free(m);
}

/* ---------------------------------------------------------------- 2:4 fine-tuning */

static void test_quantize_keep_sparsity(dm_t *t)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 16; c.n_experts = 4; c.top_k = 2; c.hidden = 8;
    dm_model *m = random_model(t, &c, 21);
    dm_model *sp = m ? quantize(t, m, "nm24", 0, 0, DM_ISA_AUTO) : NULL;
    dm_model *d = sp ? quantize(t, sp, "f32", 0, 0, DM_ISA_AUTO) : NULL;
    if (!d) { dm_model_free(m); dm_model_free(sp); return; }
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.lr = 1e-2f;
    tc.total_steps = 5;
    tc.warmup = 0;
    dm_trainer *tr = NULL, *dense = NULL;
    dm_error err;
    CHECK_OK(t, dm_trainer_create(d, &tc, NULL, &tr, &err), &err);
    CHECK_OK(t, dm_trainer_create(m, &tc, NULL, &dense, &err), &err);
    if (tr && dense) {
        dm_status st = dm_trainer_keep_sparsity(dense, &err);
        CHECK(t, st == DM_ERR_ARG && strstr(err.msg, "not 2:4 sparse") && strstr(err.msg, "deepmoe quantize --type nm24"),
              "dense model: %s '%s'", dm_status_name(st), err.msg);
        CHECK_OK(t, dm_trainer_keep_sparsity(tr, &err), &err);
        /* the zeros before */
        float *before = malloc((size_t)d->n_params * sizeof *before);
        memcpy(before, d->params, (size_t)d->n_params * sizeof *before);
        float *x = dm_test_rows(64, c.dim, 1), *y = dm_test_rows(64, c.dim, 2);
        for (int s = 0; s < 5; s++) {
            dm_step_stats ss;
            CHECK_OK(t, dm_train_step(tr, x, y, NULL, 64, &ss, &err), &err);
        }
        int64_t stayed = 0, zeros = 0, moved = 0, kept = 0;
        for (int i = 0; i < d->n_tensors; i++) {
            const dm_tensor_desc *dd = &d->tensors[i];
            if (!dd->wm || strstr(dd->name, "gating")) continue;
            for (int64_t j = 0; j < dd->numel; j++) {
                float b = before[dd->offset + j], a = d->params[dd->offset + j];
                if (b == 0) { zeros++; stayed += a == 0; }
                else { kept++; moved += a != b; }
            }
        }
        CHECK(t, zeros >= kept && stayed == zeros, "pruned weights: %lld of %lld stayed zero", (long long)stayed,
              (long long)zeros);
        CHECK(t, moved > kept / 2, "kept weights: only %lld of %lld changed", (long long)moved, (long long)kept);
        /* the fine-tuned model packs back to nm24 with exactly its values */
        dm_model *again = quantize(t, d, "nm24", 0, 0, DM_ISA_AUTO);
        for (int i = 0; again && i < d->n_tensors; i++) {
            const dm_tensor_desc *dd = &d->tensors[i];
            float *v = malloc((size_t)dd->numel * sizeof *v);
            dm_model_tensor_read(again, i, v, &err);
            CHECK(t, !memcmp(v, d->params + dd->offset, (size_t)dd->numel * sizeof *v), "%s repacked differs", dd->name);
            free(v);
        }
        dm_model_free(again);
        free(before); free(x); free(y);
    }
    dm_trainer_free(tr);
    dm_trainer_free(dense);
    dm_model_free(d); dm_model_free(sp); dm_model_free(m);
}

/* Every linear layer in the type (--router same --embed same, as PyTorch's
 * quantize_dynamic): the classifier's embedding and head too; the forward
 * agrees with the reference kernels, saving and loading is byte-exact. */
static void test_quantize_every_linear(dm_t *t)
{
    dm_config cs[3];
    test_configs(cs);
    dm_model *m = random_model(t, &cs[2], 300);
    if (!m) return;
    float *x = dm_test_rows(29, cs[2].in_dim, 4);
    for (int wi = 1; wi < DM_WT_COUNT; wi++) {
        dm_quantize_opts q;
        dm_quantize_opts_default(&q);
        q.type = dm_wtypes[wi].name;
        q.router_same = q.embed_same = 1;
        dm_model *a = NULL, *r = NULL, *l = NULL;
        dm_error err;
        CHECK_OK(t, dm_model_quantize(m, &q, &a, &err), &err);
        q.isa = DM_ISA_REF;
        CHECK_OK(t, dm_model_quantize(m, &q, &r, &err), &err);
        if (!a || !r) { dm_model_free(a); dm_model_free(r); continue; }
        CHECK(t, !strcmp(dm_model_embed_wtype(a), q.type) && a->embed.p.type == &dm_wtypes[wi] &&
                 a->head.p.type == &dm_wtypes[wi], "%s: embedding/head type %s", q.type, dm_model_embed_wtype(a));
        float *ya = forward(t, a, x, 29, NULL), *yr = forward(t, r, x, 29, NULL);
        double e = dm_test_relerr(ya, yr, 29 * cs[2].n_classes);
        CHECK(t, e < 1e-4, "%s every linear: best ISA vs reference %.3g", q.type, e);
        char *p1 = strdup(dm_test_write_file("all_a.safetensors", "", 0)), *p2 = strdup(dm_test_write_file("all_b.safetensors", "", 0));
        CHECK_OK(t, dm_model_save(a, p1, &err), &err);
        CHECK_OK(t, dm_model_load(p1, NULL, &l, &err), &err);
        if (l) {
            CHECK_OK(t, dm_model_save(l, p2, &err), &err);
            size_t n1, n2;
            unsigned char *b1 = dm_test_slurp(p1, &n1), *b2 = dm_test_slurp(p2, &n2);
            CHECK(t, b1 && n1 == n2 && !memcmp(b1, b2, n1) && !strcmp(dm_model_embed_wtype(l), q.type),
                  "%s every linear: save(load(save)) differs", q.type);
            float *yl = forward(t, l, x, 29, NULL);
            CHECK(t, !memcmp(ya, yl, (size_t)29 * cs[2].n_classes * sizeof *ya), "%s every linear: loaded forward differs",
                  q.type);
            free(yl); free(b1); free(b2);
        }
        free(p1); free(p2); free(ya); free(yr);
        dm_model_free(l); dm_model_free(a); dm_model_free(r);
    }
    free(x);
    dm_model_free(m);
}

void suite_quantize(dm_t *t)
{
    DM_RUN(t, test_quantize_every_linear);
    DM_RUN(t, test_quantize_types_forward);
    DM_RUN(t, test_quantize_save_load);
    DM_RUN(t, test_quantize_bad_files);
    DM_RUN(t, test_quantize_flip_rate);
    DM_RUN(t, test_quantize_keep_sparsity);
}
