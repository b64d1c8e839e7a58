/* quantize.c - compressed models: converting a model's weights to other
 * weight types (wtype.h), and what compression changes in routing (the
 * top-k flip rate). */
#include "base/base.h"
#include "nn/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* dm_model_quantize's fill: the source's fp32 values, quantized. */
typedef struct quant_fill { const dm_model *src; const dm_model *dst; float *tmp; } quant_fill;

static dm_status quantize_tensor(void *ctx, int i, void *const part[], dm_error *err)
{
    quant_fill *q = ctx;
    const dm_tensor_desc *d = &q->dst->tensors[i];
    dm_status st = dm_model_tensor_values(q->src, i, q->tmp, err);
    if (st) return st;
    for (int64_t j = 0; j < d->numel; j++)  /* a scale of Inf (or NaN) would be a file no loader takes */
        if (!isfinite(q->tmp[j]))
            return dm_fail(err, DM_ERR_NONFINITE, "quantize: %s holds %s at row %lld, column %lld; only finite "
                           "weights compress", d->name, q->tmp[j] != q->tmp[j] ? "NaN" : "Inf",
                           (long long)(j / d->shape[1]), (long long)(j % d->shape[1]));
    d->wm->type->quantize_ref(q->tmp, (int)d->shape[0], (int)d->shape[1], d->wm->group, part);
    return DM_OK;
}

dm_status dm_model_convert(const dm_model *src, const dm_wtype *wt, int group, const dm_wtype *gate_wt,
                           const dm_wtype *io_wt, dm_isa isa, dm_model **out, dm_error *err)
{
    *out = NULL;
    const dm_config *c = &src->cfg;
    if (group && (!wt->grouped || (group != 32 && group != 64 && group != 128)))
        return dm_fail(err, DM_ERR_ARG, "quantize: a group of %d: only %s takes a group, of 32, 64 or 128 "
                       "(0: one scale per output row)", group, "q8");
    /* every GEMM the types take must have a K they can hold */
    for (int i = 0; i < src->n_tensors; i++) {
        const dm_tensor_desc *d = &src->tensors[i];
        if (!d->wm || d->ndim != 2) continue;
        int gate = strstr(d->name, "gating.gate.weight") != NULL, io = d->wm == &src->embed.p || d->wm == &src->head.p;
        const dm_wtype *t = gate ? gate_wt : io ? io_wt : wt;
        if (t && d->shape[1] % t->k_multiple)
            return dm_fail(err, DM_ERR_SHAPE, "quantize: %s needs the input width of every weight to be a multiple "
                           "of %d, but %s is [%lld, %lld]", t->name, t->k_multiple, d->name,
                           (long long)d->shape[0], (long long)d->shape[1]);
    }
    dm_model_opts o;
    dm_model_opts_default(&o);
    o.isa = isa;
    dm_model *m = NULL;
    dm_status st = dm_model_create_typed(c, &o, wt, group, gate_wt, io_wt, &m, err);
    if (st) return st;
    int64_t most = 0;
    for (int i = 0; i < m->n_tensors; i++) most = DM_MAX(most, m->tensors[i].numel);
    quant_fill q = {src, m, dm_alloc_array((size_t)DM_MAX(most, 1), sizeof(float))};
    if (!q.tmp) st = dm_fail(err, DM_ERR_NOMEM, "quantize: out of memory");
    /* the tensors kept as fp32 (and the f32 operands' masters), then the typed operands */
    for (int i = 0; !st && i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        if (!d->wm || d->wm->type->id == DM_WT_F32) st = dm_model_tensor_values(src, i, m->params + d->offset, err);
    }
    if (!st && (st = dm_model_pack_masters(m))) dm_fail(err, st, "model: out of memory packing weights");
    if (!st) st = dm_model_fill_typed(m, quantize_tensor, &q, err);
    dm_free(q.tmp);
    if (!st && src->pre.method != DM_NORM_DEFAULT)
        st = dm_model_set_preprocess(m, dm_normalize_name(src->pre.method), src->pre.scale, src->pre.shift, err);
    if (!st && dm_model_is_typed(m)) st = dm_model_drop_master(m, err);
    if (st) {
        dm_model_free(m);
        return st;
    }
    *out = m;
    return DM_OK;
}

void dm_quantize_opts_default(dm_quantize_opts *o)
{
    *o = (dm_quantize_opts){.struct_size = sizeof *o, .type = "q8", .isa = DM_ISA_AUTO};
}

dm_status dm_model_quantize(const dm_model *src, const dm_quantize_opts *o, dm_model **out, dm_error *err)
{
    *out = NULL;
    dm_quantize_opts d;
    if (!o) {
        dm_quantize_opts_default(&d);
        o = &d;
    } else if (dm_check_struct_size(o->struct_size, sizeof *o, "dm_quantize_opts", "dm_quantize_opts_default", err)) {
        return DM_ERR_ARG;
    }
    const dm_wtype *wt = dm_wtype_by_name(o->type);
    if (!wt)
        return dm_fail(err, DM_ERR_ARG, "quantize: unknown weight type \"%.40s\" (known: %s)",
                       o->type ? o->type : "(null)", dm_wtype_names());
    const dm_wtype *f32 = &dm_wtypes[DM_WT_F32], *gt = o->router_same ? wt : f32, *it = o->embed_same ? wt : f32;
    if (dm_model_is_typed(src)) {
        /* from compressed values: dequantize first (exact values of the source type) */
        dm_model *tmp = NULL;
        dm_status st = dm_model_convert(src, f32, 0, f32, f32, src->isa, &tmp, err);
        if (st) return st;
        st = dm_model_convert(tmp, wt, o->group, gt, it, dm_isa_resolve(o->isa), out, err);
        dm_model_free(tmp);
        return st;
    }
    return dm_model_convert(src, wt, o->group, gt, it, dm_isa_resolve(o->isa), out, err);
}

const char *dm_model_wtype(const dm_model *m) { return m->wtype->name; }
const char *dm_model_router_wtype(const dm_model *m) { return m->gate_wtype->name; }
const char *dm_model_embed_wtype(const dm_model *m) { return m->io_wtype->name; }

int64_t dm_model_tensor_bytes(const dm_model *m, int i)
{
    const dm_tensor_desc *d = &m->tensors[i];
    if (!d->wm) return d->numel * (int64_t)sizeof(float);
    const dm_wtype *t = d->wm->type;
    int64_t n = 0;
    for (int p = 0; p < t->n_parts; p++) n += (int64_t)dm_wtype_part_bytes(t, p, (int)d->shape[0], d->wm->K, d->wm->group);
    return n;
}

dm_status dm_model_tensor_read(const dm_model *m, int i, float *dst, dm_error *err)
{
    if (i < 0 || i >= m->n_tensors) return dm_fail(err, DM_ERR_ARG, "model: no tensor %d (it has %d)", i, m->n_tensors);
    return dm_model_tensor_values(m, i, dst, err);
}

/* The routing of every layer for x: [n_layers, n, k] experts. */
static dm_status routes_of(const dm_model *m, dm_pool *pool, const float *x, int64_t n, int32_t *e, dm_error *err)
{
    dm_ctx *c = NULL;
    dm_status st = dm_ctx_create(m, pool, &c, err);
    float *y = st ? NULL : dm_alloc_array2((size_t)DM_MAX(n, 1), (size_t)dm_model_out_width(&m->cfg), sizeof *y);
    if (!st && !y) st = dm_fail(err, DM_ERR_NOMEM, "flip rate: out of memory");
    dm_routing r = {.experts = e};
    if (!st) st = dm_forward(c, x, n, y, &r, err);
    dm_free(y);
    dm_ctx_free(c);
    return st;
}

dm_status dm_topk_flip_rate(const dm_model *a, const dm_model *b, dm_pool *pool, const float *x, int64_t n,
                            double *rate, double *per_layer, dm_error *err)
{
    const dm_config *ca = &a->cfg, *cb = &b->cfg;
    if (ca->n_layers != cb->n_layers || ca->top_k != cb->top_k || ca->n_experts != cb->n_experts ||
        dm_model_in_width(ca) != dm_model_in_width(cb))
        return dm_fail(err, DM_ERR_ARG, "flip rate: the two models differ in shape (layers, experts, k or input width)");
    int L = ca->n_layers, k = ca->top_k;
    size_t total = (size_t)L * (size_t)DM_MAX(n, 1) * (size_t)k;
    int32_t *ea = dm_alloc_array(total, sizeof *ea), *eb = dm_alloc_array(total, sizeof *eb);
    int64_t *lay = calloc((size_t)L, sizeof *lay);
    dm_status st = ea && eb && lay ? DM_OK : dm_fail(err, DM_ERR_NOMEM, "flip rate: out of memory");
    if (!st) st = routes_of(a, pool, x, n, ea, err);
    if (!st) st = routes_of(b, pool, x, n, eb, err);
    int64_t flipped = 0;
    for (int64_t r = 0; !st && r < n; r++) {
        int any = 0;
        for (int l = 0; l < L; l++) {
            const int32_t *pa = ea + ((size_t)l * n + r) * k, *pb = eb + ((size_t)l * n + r) * k;
            int diff = 0;  /* the sets, not the order: each of a's experts among b's */
            for (int i = 0; i < k && !diff; i++) {
                int found = 0;
                for (int j = 0; j < k; j++) found |= pa[i] == pb[j];
                diff = !found;
            }
            lay[l] += diff;
            any |= diff;
        }
        flipped += any;
    }
    if (!st) {
        *rate = n ? (double)flipped / (double)n : 0.0;
        for (int l = 0; per_layer && l < L; l++) per_layer[l] = n ? (double)lay[l] / (double)n : 0.0;
    }
    dm_free(ea);
    dm_free(eb);
    free(lay);
    return st;
}
