/* model.c - model construction: the tensor table, the flat parameter buffer,
 * PyTorch-default initialisation, and packing weights for the kernels. */
#include "base/base.h"
#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- layout */

typedef struct layout {
    dm_tensor_desc *t;
    int n, cap;
    int64_t total;
} layout;

static int add(layout *l, const char *name, int ndim, int64_t d0, int64_t d1)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        dm_tensor_desc *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return -1;
        l->t = t;
        l->cap = cap;
    }
    dm_tensor_desc *d = &l->t[l->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->ndim = ndim;
    d->shape[0] = d0;
    d->shape[1] = ndim > 1 ? d1 : 1;
    d->numel = d0 * (ndim > 1 ? d1 : 1);
    d->offset = l->total;
    l->total += (d->numel + 15) / 16 * 16;  /* keep every tensor 64-byte aligned */
    return 0;
}

/* "{pre}{name}" into buf. */
static const char *join(char *buf, const char *pre, const char *name)
{
    snprintf(buf, DM_NAME_MAX, "%s%s", pre, name);
    return buf;
}

static int add_expert(layout *l, const dm_config *c, const char *pre, const char *kind, int idx, int h)
{
    const dm_expert_ops *ops = dm_expert_ops_of(c);
    char n[DM_NAME_MAX];
    int rc = 0;
    for (int i = 0; i < ops->n_tensors; i++) {
        const dm_expert_tensor *x = &ops->tensors[i];
        snprintf(n, sizeof n, "%s%s.%d.%s", pre, kind, idx, x->suffix);
        int64_t r = x->rows == 'H' ? h : c->dim, cols = x->cols == 'H' ? h : c->dim;
        rc |= add(l, n, x->cols ? 2 : 1, r, x->cols ? cols : 0);
    }
    return rc;
}

static void layer_prefix(const dm_config *c, int l, char *pre)
{
    if (dm_model_is_bare(c)) pre[0] = 0;
    else snprintf(pre, 32, "layers.%d.", l);
}

static int build_layout(const dm_config *c, layout *l)
{
    memset(l, 0, sizeof *l);
    int rc = 0;
    char n[DM_NAME_MAX], pre[32];
    if (c->in_dim) {
        rc |= add(l, "embed.weight", 2, c->dim, c->in_dim);
        rc |= add(l, "embed.bias", 1, c->dim, 0);
    }
    for (int L = 0; L < c->n_layers; L++) {
        layer_prefix(c, L, pre);
        rc |= add(l, join(n, pre, "gating.gate.weight"), 2, c->n_experts, c->dim);
        rc |= add(l, join(n, pre, "gating.gate.bias"), 1, c->n_experts, 0);
        if (c->selection_bias) rc |= add(l, join(n, pre, "gating.expert_bias"), 1, c->n_experts, 0);
        for (int e = 0; e < c->n_experts; e++) rc |= add_expert(l, c, pre, "experts", e, c->hidden);
        for (int s = 0; s < c->n_shared; s++) rc |= add_expert(l, c, pre, "shared_experts", s, c->shared_hidden);
    }
    if (c->n_classes) {
        rc |= add(l, "norm.weight", 1, c->dim, 0);
        rc |= add(l, "norm.bias", 1, c->dim, 0);
        rc |= add(l, "head.weight", 2, c->n_classes, c->dim);
        rc |= add(l, "head.bias", 1, c->n_classes, 0);
    }
    return rc;
}

static int is_typed(const dm_tensor_desc *d) { return d->wm && d->wm->type->id != DM_WT_F32; }
static dm_status shrink_params(dm_model *m, int typed_only, dm_error *err);

/* ---------------------------------------------------------------- views */

static const char *desc_name(const void *t, int i) { return ((const dm_tensor_desc *)t)[i].name; }

/* A binary search: building a model binds every tensor by name. */
int dm_model_tensor_index(const dm_model *m, const char *name)
{
    return dm_name_lookup(m->tensors, m->by_name, m->n_tensors, desc_name, name);
}

int dm_model_tensor_at(const dm_model *m, const float *p)
{
    if (!p || p < m->params) return -1;
    int64_t off = p - m->params;
    int lo = 0, hi = m->n_tensors - 1;   /* offsets increase along the table */
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (m->tensors[mid].offset == off) return mid;
        if (m->tensors[mid].offset < off) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}


static float *param(dm_model *m, const char *name)
{
    int i = dm_model_tensor_index(m, name);
    return i < 0 || !m->tensors[i].stored ? NULL : m->params + m->tensors[i].offset;
}

static void bind_expert(dm_model *m, dm_expert_w *x, const char *pre, const char *kind, int idx, int h)
{
    const dm_expert_ops *ops = dm_expert_ops_of(&m->cfg);
    char n[DM_NAME_MAX];
    x->hidden = h;
    for (int i = 0; i < ops->n_tensors; i++) {
        snprintf(n, sizeof n, "%s%s.%d.%s", pre, kind, idx, ops->tensors[i].suffix);
        float *p = param(m, n);
        switch (ops->tensors[i].role) {
        case DM_XT_W1: x->w1 = p; break;
        case DM_XT_B1: x->b1 = p; break;
        case DM_XT_GAMMA: x->gamma = p; break;
        case DM_XT_BETA: x->beta = p; break;
        case DM_XT_W2: x->w2 = p; break;
        case DM_XT_B2: x->b2 = p; break;
        case DM_XT_W3: x->w3 = p; break;
        }
    }
}

static size_t up_rows(const dm_config *c, int h) { return (size_t)h * dm_expert_ops_of(c)->up_mult; }

/* Bytes of packed operands the model needs (and, with base != NULL, binds them).
 * Every operand starts on a 64-byte line. */
static size_t carve_packed(dm_model *m, unsigned char *base)
{
    const dm_config *c = &m->cfg;
    size_t off = 0;
#define TAKE(w, type, rows, cols) do { \
        int grp_ = (type)->grouped ? m->wgroup : 0; \
        size_t nd_ = dm_wmat_data_size(type, m->isa, (int)(rows), (int)(cols), grp_); \
        if (base) dm_wmat_bind(&(w), type, m->isa, (int)(rows), (int)(cols), grp_, base + off); \
        off += (nd_ + 63) / 64 * 64; \
    } while (0)
    if (c->in_dim) TAKE(m->embed.p, m->io_wtype, c->dim, c->in_dim);
    for (int L = 0; L < c->n_layers; L++) {
        dm_layer *ly = &m->layers[L];
        TAKE(ly->gate_p, m->gate_wtype, c->n_experts, c->dim);
        for (int i = 0; i < c->n_experts + c->n_shared; i++) {
            int h = i < c->n_experts ? c->hidden : c->shared_hidden;
            TAKE(ly->experts[i].p1, m->wtype, up_rows(c, h), c->dim);
            TAKE(ly->experts[i].p2, m->wtype, c->dim, h);
        }
    }
    if (c->n_classes) TAKE(m->head.p, m->io_wtype, c->n_classes, c->dim);
#undef TAKE
    return off;
}

static void bind_views(dm_model *m)
{
    const dm_config *c = &m->cfg;
    char pre[32], n[DM_NAME_MAX];
    if (c->in_dim) m->embed = (dm_linear){c->in_dim, c->dim, param(m, "embed.weight"), param(m, "embed.bias"), m->embed.p};
    for (int L = 0; L < c->n_layers; L++) {
        dm_layer *ly = &m->layers[L];
        layer_prefix(c, L, pre);
        ly->gate_w = param(m, join(n, pre, "gating.gate.weight"));
        ly->gate_b = param(m, join(n, pre, "gating.gate.bias"));
        ly->sel_bias = c->selection_bias ? param(m, join(n, pre, "gating.expert_bias")) : NULL;
        for (int i = 0; i < c->n_experts + c->n_shared; i++) {
            int routed = i < c->n_experts;
            bind_expert(m, &ly->experts[i], pre, routed ? "experts" : "shared_experts", routed ? i : i - c->n_experts,
                        routed ? c->hidden : c->shared_hidden);
        }
    }
    if (c->n_classes) {
        m->norm_w = param(m, "norm.weight");
        m->norm_b = param(m, "norm.bias");
        m->head = (dm_linear){c->dim, c->n_classes, param(m, "head.weight"), param(m, "head.bias"), m->head.p};
    }
}

/* Which packed operand holds each weight (the tensors dm_model_drop_master can drop). */
static void mark_packed(dm_model *m)
{
    const dm_config *c = &m->cfg;
    char pre[32], n[DM_NAME_MAX];
#define MARK(name, w, row0) do { int i_ = dm_model_tensor_index(m, name); \
        if (i_ >= 0) { m->tensors[i_].wm = (w); m->tensors[i_].wm_row0 = (row0); } } while (0)
    if (c->in_dim) MARK("embed.weight", &m->embed.p, 0);
    for (int L = 0; L < c->n_layers; L++) {
        dm_layer *ly = &m->layers[L];
        layer_prefix(c, L, pre);
        MARK(join(n, pre, "gating.gate.weight"), &ly->gate_p, 0);
        const dm_expert_ops *ops = dm_expert_ops_of(c);
        for (int i = 0; i < c->n_experts + c->n_shared; i++) {
            int routed = i < c->n_experts, idx = routed ? i : i - c->n_experts;
            dm_expert_w *x = &ly->experts[i];
            for (int j = 0; j < ops->n_tensors; j++) {
                dm_xt_role r = ops->tensors[j].role;
                if (r != DM_XT_W1 && r != DM_XT_W2 && r != DM_XT_W3) continue;
                snprintf(n, sizeof n, "%s%s.%d.%s", pre, routed ? "experts" : "shared_experts", idx,
                         ops->tensors[j].suffix);
                MARK(n, r == DM_XT_W2 ? &x->p2 : &x->p1, r == DM_XT_W3 ? x->hidden : 0);  /* [W1; W3] */
            }
        }
    }
    if (c->n_classes) MARK("head.weight", &m->head.p, 0);
#undef MARK
}

void dm_model_opts_default(dm_model_opts *o)
{
    *o = (dm_model_opts){.struct_size = sizeof *o, .isa = DM_ISA_AUTO, .top_k = 0};
}

dm_status dm_model_create(const dm_config *cin, const dm_model_opts *o, dm_model **out, dm_error *err)
{
    const dm_wtype *f32 = &dm_wtypes[DM_WT_F32];
    return dm_model_create_typed(cin, o, f32, 0, f32, f32, out, err);
}

dm_status dm_model_create_typed(const dm_config *cin, const dm_model_opts *o, const dm_wtype *wt, int group,
                                const dm_wtype *gate_wt, const dm_wtype *io_wt, dm_model **out, dm_error *err)
{
    *out = NULL;
    if (o && dm_check_struct_size(o->struct_size, sizeof *o, "dm_model_opts", "dm_model_opts_default", err))
        return DM_ERR_ARG;
    /* before the copy reads sizeof(dm_config) bytes of a struct that may be smaller */
    if (dm_check_struct_size(cin->struct_size, sizeof *cin, "dm_config", "dm_config_default", err)) return DM_ERR_ARG;
    dm_config c = *cin;
    dm_status st = dm_config_validate(&c, err);
    if (st) return st;
    dm_model *m = calloc(1, sizeof *m);
    if (!m) return dm_fail(err, DM_ERR_NOMEM, "model: out of memory");
    m->cfg = c;
    m->pre.method = DM_NORM_DEFAULT;   /* no preprocessing recorded */
    m->isa = dm_isa_resolve(o ? o->isa : DM_ISA_AUTO);
    m->kern = dm_kernels_for(m->isa);
    m->wtype = wt;
    m->gate_wtype = gate_wt;
    m->io_wtype = io_wt;
    m->wgroup = wt->grouped || gate_wt->grouped || io_wt->grouped ? group : 0;
    /* the widths the types' GEMMs take as K: D (up projections, router), H (down) */
    int kd = DM_MAX(wt->k_multiple, gate_wt->k_multiple);
    if (c.n_classes) kd = DM_MAX(kd, io_wt->k_multiple);  /* the head's K is D */
    if (c.in_dim % io_wt->k_multiple) {
        free(m);
        return dm_fail(err, DM_ERR_SHAPE, "model: %s embedding weights need the input width (%d) to be a multiple of %d",
                       io_wt->name, c.in_dim, io_wt->k_multiple);
    }
    if (c.dim % kd || c.hidden % wt->k_multiple || (c.n_shared && c.shared_hidden % wt->k_multiple)) {
        free(m);
        return dm_fail(err, DM_ERR_SHAPE, "model: %s weights need dim (%d), hidden (%d)%s to be multiples of %d",
                       wt->k_multiple >= gate_wt->k_multiple ? wt->name : gate_wt->name, c.dim, c.hidden,
                       c.n_shared ? " and the shared experts' hidden" : "", kd);
    }
    int typed = wt->id != DM_WT_F32 || gate_wt->id != DM_WT_F32 || io_wt->id != DM_WT_F32;
    layout l;
    if (build_layout(&c, &l)) {
        free(l.t);
        free(m);
        return dm_fail(err, DM_ERR_NOMEM, "model: out of memory");
    }
    m->tensors = l.t;
    m->n_tensors = l.n;
    m->n_params = l.total;
    m->by_name = dm_name_index(l.t, l.n, desc_name);
    /* a typed model's typed weights never get fp32 masters: the buffer is not
     * touched there (then dropped below), only the other tensors are zeroed */
    m->params = typed ? dm_alloc((size_t)l.total * sizeof(float)) : dm_calloc((size_t)l.total * sizeof(float));
    m->layers = calloc((size_t)c.n_layers, sizeof *m->layers);
    int ok = m->params && m->layers && m->by_name;
    for (int L = 0; ok && L < c.n_layers; L++)
        ok = (m->layers[L].experts = calloc((size_t)(c.n_experts + c.n_shared), sizeof(dm_expert_w))) != NULL;
    if (ok) m->packed = dm_calloc(carve_packed(m, NULL));
    if (!ok || !m->packed) {
        dm_model_free(m);
        return dm_fail(err, DM_ERR_NOMEM, "model: out of memory for %lld parameters", (long long)l.total);
    }
    carve_packed(m, m->packed);
    for (int i = 0; i < m->n_tensors; i++) m->tensors[i].stored = 1;
    bind_views(m);
    mark_packed(m);
    if (typed) {
        for (int i = 0; i < m->n_tensors; i++)
            if (!is_typed(&m->tensors[i]))
                memset(m->params + m->tensors[i].offset, 0, (size_t)m->tensors[i].numel * sizeof(float));
        if ((st = shrink_params(m, 1, err))) {
            dm_model_free(m);
            return st;
        }
        m->packed_only = 1;  /* inference only, from here on */
    }
    *out = m;
    return dm_model_pack_masters(m);  /* the f32 operands; typed ones are filled by dm_model_fill_typed */
}

void dm_model_free(dm_model *m)
{
    if (!m) return;
    for (int L = 0; m->layers && L < m->cfg.n_layers; L++) free(m->layers[L].experts);
    free(m->layers);
    dm_free(m->params);
    dm_free(m->packed);
    free(m->tensors);
    free(m->by_name);
    dm_preprocess_clear(&m->pre);
    free(m);
}

dm_status dm_model_sync(dm_model *m, dm_error *err)
{
    if (m->packed_only)
        return dm_fail(err, DM_ERR_ARG, "model: its weights exist only packed (loaded for inference%s); "
                                        "load it without dm_model_opts.packed_only to change them",
                       dm_model_is_typed(m) ? ", experts compressed" : "");
    dm_status st = dm_model_pack_masters(m);
    return st ? dm_fail(err, st, "model: out of memory packing weights") : DM_OK;
}

/* Packs every f32 operand whose master is stored (a typed model's router,
 * embedding and head before they are dropped); DM_ERR_NOMEM or DM_OK. */
dm_status dm_model_pack_masters(dm_model *m)
{
    const dm_config *c = &m->cfg;
    int D = c->dim;
    int f32_experts = m->wtype->id == DM_WT_F32;
    if (c->in_dim && m->embed.w && m->io_wtype->id == DM_WT_F32) dm_wmat_pack_f32(&m->embed.p, m->embed.w);
    if (c->n_classes && m->head.w && m->io_wtype->id == DM_WT_F32) dm_wmat_pack_f32(&m->head.p, m->head.w);
    float *tmp = NULL;
    if (dm_expert_ops_of(c)->up_mult == 2 && f32_experts) {
        int hmax = DM_MAX(c->hidden, c->shared_hidden);
        tmp = dm_alloc((size_t)2 * hmax * D * sizeof(float));
        if (!tmp) return DM_ERR_NOMEM;
    }
    for (int L = 0; L < c->n_layers; L++) {
        dm_layer *ly = &m->layers[L];
        if (m->gate_wtype->id == DM_WT_F32 && ly->gate_w) dm_wmat_pack_f32(&ly->gate_p, ly->gate_w);
        for (int i = 0; f32_experts && i < c->n_experts + c->n_shared; i++) {
            dm_expert_w *x = &ly->experts[i];
            int h = x->hidden;
            if (tmp) {  /* one GEMM computes both gate and up projections: [W1; W3] is [2H, D] */
                memcpy(tmp, x->w1, (size_t)h * D * sizeof(float));
                memcpy(tmp + (size_t)h * D, x->w3, (size_t)h * D * sizeof(float));
                dm_wmat_pack_f32(&x->p1, tmp);
            } else {
                dm_wmat_pack_f32(&x->p1, x->w1);
            }
            dm_wmat_pack_f32(&x->p2, x->w2);
        }
    }
    dm_free(tmp);
    return DM_OK;
}

dm_status dm_model_fresh(const dm_model *m, dm_error *err)
{
    if (!m->stale) return DM_OK;
    dm_model *w = (dm_model *)m;  /* the packs are a cache of the masters */
    if (dm_model_pack_masters(w)) return dm_fail(err, DM_ERR_NOMEM, "model: out of memory packing weights");
    w->stale = 0;
    return DM_OK;
}

/* ---------------------------------------------------------------- init */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

void dm_model_init_random(dm_model *m, uint64_t seed)
{
    if (m->packed_only) return;  /* no fp32 weights to write (documented: it does nothing) */
    dm_rng r;
    dm_rng_seed(&r, seed);
    /* nn.Linear: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
     * for the weight and the same bound for the bias; LayerNorm: gamma 1, beta 0. */
    for (int i = 0; i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        float *p = m->params + d->offset;
        const char *n = d->name;
        int is_ln = strstr(n, ".net.2.") != NULL || !strncmp(n, "norm.", 5);
        if (ends_with(n, "gating.expert_bias") || (is_ln && ends_with(n, ".bias"))) {
            memset(p, 0, (size_t)d->numel * sizeof *p);
        } else if (is_ln) {
            for (int64_t j = 0; j < d->numel; j++) p[j] = 1.0f;
        } else {
            /* a bias's fan_in is its weight's input width: the previous tensor */
            int64_t fan_in = d->ndim == 2 ? d->shape[1] : m->tensors[i - 1].shape[1];
            float b = 1.0f / sqrtf((float)fan_in);
            for (int64_t j = 0; j < d->numel; j++) p[j] = dm_rng_uniform(&r, -b, b);
        }
    }
    dm_model_sync(m, NULL);
}

/* ---------------------------------------------------------------- queries */

const dm_config *dm_model_config(const dm_model *m) { return &m->cfg; }
dm_isa dm_model_isa(const dm_model *m) { return m->isa; }
int dm_model_n_tensors(const dm_model *m) { return m->n_tensors; }

dm_tensor_info dm_model_tensor(const dm_model *m, int i)
{
    const dm_tensor_desc *d = &m->tensors[i];
    return (dm_tensor_info){
        .name = d->name, .ndim = d->ndim, .shape = {d->shape[0], d->ndim > 1 ? d->shape[1] : 0},
        .numel = d->numel, .data = d->stored ? m->params + d->offset : NULL,
        .wtype = d->wm ? d->wm->type->name : NULL,
    };
}

/* W [w->N, w->K] = the fp32 values of w (dequantized; exact for f32). */
static dm_status wmat_values(const dm_wmat *w, float *W, dm_error *err)
{
    if (w->type->id == DM_WT_F32) {
        void *part[DM_WPARTS] = {W};
        dm_wmat_unpack(w, part);
        return DM_OK;
    }
    void *buf = dm_alloc(dm_wtype_file_bytes(w->type, w->N, w->K, w->group) + 64), *part[DM_WPARTS];
    if (!buf) return dm_fail(err, DM_ERR_NOMEM, "model: out of memory unpacking a weight");
    dm_wtype_split(w->type, w->N, w->K, w->group, buf, part);
    dm_wmat_unpack(w, part);
    w->type->dequantize_ref((const void *const *)part, w->N, w->K, w->group, W);
    dm_free(buf);
    return DM_OK;
}

dm_status dm_model_tensor_values(const dm_model *m, int i, float *dst, dm_error *err)
{
    const dm_tensor_desc *d = &m->tensors[i];
    if (d->stored) {
        memcpy(dst, m->params + d->offset, (size_t)d->numel * sizeof *dst);
        return DM_OK;
    }
    const dm_wmat *w = d->wm;
    if (d->wm_row0 == 0 && w->N == d->shape[0]) return wmat_values(w, dst, err);
    float *all = dm_alloc_array2((size_t)w->N, (size_t)w->K, sizeof *all);  /* swiglu's [W1; W3]: keep a half */
    if (!all) return dm_fail(err, DM_ERR_NOMEM, "model: out of memory unpacking %s", d->name);
    dm_status st = wmat_values(w, all, err);
    if (!st) memcpy(dst, all + (size_t)d->wm_row0 * w->K, (size_t)d->numel * sizeof *dst);
    dm_free(all);
    return st;
}

/* params shrunk to the tensors that keep fp32 values: those no operand holds,
 * and with typed_only the f32 operands' masters too (a typed model until its
 * f32 operands are packed). Offsets stay increasing: a dropped weight sits
 * where the next tensor starts. */
static dm_status shrink_params(dm_model *m, int typed_only, dm_error *err)
{
    int64_t total = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        if (d->stored && !(d->wm && (!typed_only || is_typed(d)))) total += (d->numel + 15) / 16 * 16;
    }
    float *p = dm_alloc((size_t)(total ? total : 16) * sizeof *p);
    if (!p) return dm_fail(err, DM_ERR_NOMEM, "model: out of memory");
    int64_t off = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        dm_tensor_desc *d = &m->tensors[i];
        if (!d->stored || (d->wm && (!typed_only || is_typed(d)))) {
            d->offset = off;
            d->stored = 0;
            continue;
        }
        memcpy(p + off, m->params + d->offset, (size_t)d->numel * sizeof *p);
        d->offset = off;
        off += (d->numel + 15) / 16 * 16;
    }
    dm_free(m->params);
    m->params = p;
    m->n_params = total;
    bind_views(m);
    return DM_OK;
}

dm_status dm_model_drop_master(dm_model *m, dm_error *err)
{
    int all_dropped = 1;
    for (int i = 0; i < m->n_tensors; i++) all_dropped &= !(m->tensors[i].wm && m->tensors[i].stored);
    if (m->packed_only && all_dropped) return DM_OK;
    dm_status st = shrink_params(m, 0, err);
    if (!st) m->packed_only = 1;
    return st;
}

dm_status dm_model_find(const dm_model *m, const char *name, dm_tensor_info *out, dm_error *err)
{
    int i = name ? dm_model_tensor_index(m, name) : -1;
    if (i >= 0) {
        if (out) *out = dm_model_tensor(m, i);
        return DM_OK;
    }
    if (!err) return DM_ERR_ARG;
    /* as many of the valid names as one message holds, in layout order */
    char list[320];
    size_t o = 0;
    int shown = 0;
    for (; shown < m->n_tensors; shown++) {
        const char *t = m->tensors[shown].name;
        if (o + strlen(t) + 2 >= sizeof list) break;
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", shown ? ", " : "", t);
    }
    return dm_fail(err, DM_ERR_ARG, "the model has no tensor '%.64s'; its %d tensors: %s%s", name ? name : "(null)",
                   m->n_tensors, list, shown < m->n_tensors ? ", ... (dm_model_tensor lists them all)" : "");
}

void dm_model_rebase(dm_model *m, float *params, unsigned char *packed)
{
    m->params = params;
    m->packed = packed;
    carve_packed(m, packed);
    bind_views(m);
}

int64_t dm_model_memory(const dm_model *m)
{
    return m->n_params * (int64_t)sizeof(float) + (int64_t)carve_packed((dm_model *)m, NULL);
}

int64_t dm_model_param_count(const dm_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->tensors[i].numel;
    return n;
}

int64_t dm_model_active_params(const dm_model *m)
{
    const dm_config *c = &m->cfg;
    int64_t D = c->dim;
    int64_t router = (int64_t)c->n_experts * D + c->n_experts + (c->selection_bias ? c->n_experts : 0);
    int64_t layer = router + c->top_k * dm_expert_numel(c, c->hidden) + c->n_shared * dm_expert_numel(c, c->shared_hidden);
    int64_t n = layer * c->n_layers;
    if (c->in_dim) n += D * c->in_dim + D;
    if (c->n_classes) n += 2 * D + (int64_t)c->n_classes * D + c->n_classes;
    return n;
}

/* ---------------------------------------------------------------- typed weights */

int dm_model_is_typed(const dm_model *m)
{
    return m->wtype->id != DM_WT_F32 || m->gate_wtype->id != DM_WT_F32 || m->io_wtype->id != DM_WT_F32;
}

size_t dm_model_work_size(const dm_model *m, int64_t rows)
{
    size_t most = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const dm_wmat *w = m->tensors[i].wm;
        if (w && m->tensors[i].wm_row0 == 0) most = DM_MAX(most, dm_wmat_work_size(w, rows));
    }
    return (most + 63) / 64 * 64;
}

dm_status dm_model_fill_typed(dm_model *m, dm_parts_fill fill, void *ctx, dm_error *err)
{
    size_t cap = 0;
    unsigned char *buf = NULL;
    dm_status st = DM_OK;
    for (int i = 0; !st && i < m->n_tensors; i++) {
        const dm_tensor_desc *d = &m->tensors[i];
        const dm_wmat *w = d->wm;
        if (!w || w->type->id == DM_WT_F32 || d->wm_row0 != 0) continue;
        size_t need = dm_wtype_file_bytes(w->type, w->N, w->K, w->group) + 64;
        if (need > cap) {
            dm_free(buf);
            buf = dm_alloc(need);
            cap = buf ? need : 0;
            if (!buf) {
                st = dm_fail(err, DM_ERR_NOMEM, "model: out of memory packing %s", d->name);
                break;
            }
        }
        void *part[DM_WPARTS];
        memset(buf, 0, need);  /* rows no tensor fills would be packed as zeros, never stale */
        dm_wtype_split(w->type, w->N, w->K, w->group, buf, part);
        /* the tensors this operand stacks (swiglu: w1 then, two tensors on, w3) */
        for (int j = i; !st && j < m->n_tensors && j < i + 8; j++) {
            const dm_tensor_desc *e = &m->tensors[j];
            if (e->wm != w) continue;
            void *at[DM_WPARTS] = {0};
            for (int p = 0; p < w->type->n_parts; p++) {
                const dm_wpart *wp = &w->type->parts[p];
                at[p] = (unsigned char *)part[p] + (size_t)e->wm_row0 * (size_t)wp->cols(w->K, w->group) * (size_t)wp->elem;
            }
            st = fill(ctx, j, at, err);
        }
        if (!st) dm_wmat_pack((dm_wmat *)w, (const void *const *)part);
    }
    dm_free(buf);
    return st;
}

