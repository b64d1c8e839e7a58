/* wtype.c - the weight-type table (wtype.h). */
#include "kernels/wtype.h"

#include <stdio.h>
#include <string.h>

static void f32_quantize_ref(const float *W, int N, int K, int group, void *const part[])
{
    (void)group;
    if (N > 0 && K > 0) memcpy(part[0], W, (size_t)N * (size_t)K * sizeof(float));
}

static void f32_dequantize_ref(const void *const part[], int N, int K, int group, float *W)
{
    (void)group;
    if (N > 0 && K > 0) memcpy(W, part[0], (size_t)N * (size_t)K * sizeof(float));
}

static int64_t cols_k(int K, int group) { (void)group; return K; }
static int64_t cols_half(int K, int group) { (void)group; return K / 2; }
static int64_t cols_idx(int K, int group) { (void)group; return (K + 7) / 8; }
static int64_t cols_groups(int K, int group) { return group > 0 ? (K + group - 1) / group : 1; }
static int64_t cols_one(int K, int group) { (void)K; (void)group; return 1; }

#define P_VALUES(dt, sz) {"", dt, sz, cols_k}
#define P_KEPT(dt, sz) {"", dt, sz, cols_half}
#define P_IDX {".idx", "U8", 1, cols_idx}

#if DM_HAVE_X86
#define X86(avx2, avx512) [DM_ISA_AVX2] = avx2, [DM_ISA_AVX512] = avx512,
#else
#define X86(avx2, avx512)
#endif

const dm_wtype dm_wtypes[DM_WT_COUNT] = {
    [DM_WT_F32] = {
        .id = DM_WT_F32, .name = "f32", .n_parts = 1, .parts = {P_VALUES("F32", 4)}, .k_multiple = 1,
        .quantize_ref = f32_quantize_ref, .dequantize_ref = f32_dequantize_ref,
        .kern = {[DM_ISA_REF] = &dm_wkern_f32_ref, X86(&dm_wkern_f32_avx2, &dm_wkern_f32_avx512)},
    },
    [DM_WT_BF16] = {
        .id = DM_WT_BF16, .name = "bf16", .n_parts = 1, .parts = {P_VALUES("BF16", 2)}, .k_multiple = 1,
        .quantize_ref = dm_wt_bf16_quantize, .dequantize_ref = dm_wt_bf16_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_bf16_ref, X86(&dm_wkern_bf16_avx2, &dm_wkern_bf16_avx512)},
    },
    [DM_WT_F16] = {
        .id = DM_WT_F16, .name = "f16", .n_parts = 1, .parts = {P_VALUES("F16", 2)}, .k_multiple = 1,
        .quantize_ref = dm_wt_f16_quantize, .dequantize_ref = dm_wt_f16_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_f16_ref, X86(&dm_wkern_f16_avx2, &dm_wkern_f16_avx512)},
    },
    [DM_WT_Q8] = {
        .id = DM_WT_Q8, .name = "q8", .n_parts = 2,
        .parts = {P_VALUES("I8", 1), {".scale", "F32", 4, cols_groups}}, .k_multiple = 1, .grouped = 1,
        .quantize_ref = dm_wt_q8_quantize, .dequantize_ref = dm_wt_q8_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_q8_ref, X86(&dm_wkern_q8_avx2, &dm_wkern_q8_avx512)},
    },
    [DM_WT_NM24] = {
        .id = DM_WT_NM24, .name = "nm24", .n_parts = 2, .parts = {P_KEPT("F32", 4), P_IDX},
        .k_multiple = 4, .sparse = 1,
        .quantize_ref = dm_wt_nm24_quantize, .dequantize_ref = dm_wt_nm24_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_nm24_ref, X86(&dm_wkern_nm24_avx2, &dm_wkern_nm24_avx512)},
    },
    [DM_WT_NM24_BF16] = {
        .id = DM_WT_NM24_BF16, .name = "nm24:bf16", .n_parts = 2, .parts = {P_KEPT("BF16", 2), P_IDX},
        .k_multiple = 4, .sparse = 1,
        .quantize_ref = dm_wt_nm24_bf16_quantize, .dequantize_ref = dm_wt_nm24_bf16_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_nm24_bf16_ref, X86(&dm_wkern_nm24_bf16_avx2, &dm_wkern_nm24_bf16_avx512)},
    },
    [DM_WT_NM24_Q8] = {
        .id = DM_WT_NM24_Q8, .name = "nm24:q8", .n_parts = 3,
        .parts = {P_KEPT("I8", 1), P_IDX, {".scale", "F32", 4, cols_one}}, .k_multiple = 4, .sparse = 1,
        .quantize_ref = dm_wt_nm24_q8_quantize, .dequantize_ref = dm_wt_nm24_q8_dequantize,
        .kern = {[DM_ISA_REF] = &dm_wkern_nm24_q8_ref, X86(&dm_wkern_nm24_q8_avx2, &dm_wkern_nm24_q8_avx512)},
    },
};

const dm_wtype *dm_wtype_by_name(const char *name)
{
    for (int i = 0; i < DM_WT_COUNT; i++)
        if (name && !strcmp(dm_wtypes[i].name, name)) return &dm_wtypes[i];
    if (name && !strcmp(name, "nm24:f32")) return &dm_wtypes[DM_WT_NM24];
    return NULL;
}

const char *dm_wtype_names(void)
{
    return "f32, bf16, f16, q8, nm24 (nm24:f32), nm24:bf16, nm24:q8";
}

const dm_wkern *dm_wtype_kern(const dm_wtype *t, dm_isa isa)
{
    int i = isa >= 0 && isa < DM_ISA_COUNT ? (int)isa : DM_ISA_REF;
    for (; i > DM_ISA_REF; i--) {
        const dm_wkern *k = t->kern[i];
        if (k && dm_cpu_has(k->needs)) return k;
    }
    return t->kern[DM_ISA_REF];
}

size_t dm_wtype_part_bytes(const dm_wtype *t, int j, int N, int K, int group)
{
    const dm_wpart *p = &t->parts[j];
    return (size_t)(N > 0 ? N : 0) * (size_t)p->cols(K > 0 ? K : 0, group) * (size_t)p->elem;
}

size_t dm_wtype_file_bytes(const dm_wtype *t, int N, int K, int group)
{
    size_t n = 0;
    for (int j = 0; j < t->n_parts; j++) n += (dm_wtype_part_bytes(t, j, N, K, group) + 63) / 64 * 64;
    return n;
}

void dm_wtype_split(const dm_wtype *t, int N, int K, int group, void *buf, void *part[DM_WPARTS])
{
    size_t off = 0;
    for (int j = 0; j < DM_WPARTS; j++) {
        part[j] = j < t->n_parts ? (unsigned char *)buf + off : NULL;
        if (j < t->n_parts) off += (dm_wtype_part_bytes(t, j, N, K, group) + 63) / 64 * 64;
    }
}

size_t dm_wmat_data_size(const dm_wtype *t, dm_isa isa, int N, int K, int group)
{
    return dm_wtype_kern(t, isa)->pack_size(N, K, group);
}

void dm_wmat_bind(dm_wmat *w, const dm_wtype *t, dm_isa isa, int N, int K, int group, void *data)
{
    *w = (dm_wmat){.type = t, .kern = dm_wtype_kern(t, isa), .N = N, .K = K, .group = group, .data = data};
}

void dm_wmat_pack(dm_wmat *w, const void *const part[]) { w->kern->pack(part, w->N, w->K, w->group, w->data); }

void dm_wmat_pack_f32(dm_wmat *w, const float *W)
{
    const void *part[DM_WPARTS] = {W};
    dm_wmat_pack(w, part);
}

void dm_wmat_quant_pack(dm_wmat *w, const float *W, void *tmp)
{
    if (w->type->id == DM_WT_F32) {
        dm_wmat_pack_f32(w, W);
    } else if (w->kern->quant_pack) {
        w->kern->quant_pack(W, w->N, w->K, w->group, w->data);
    } else {
        void *part[DM_WPARTS];
        dm_wtype_split(w->type, w->N, w->K, w->group, tmp, part);
        w->type->quantize_ref(W, w->N, w->K, w->group, part);
        dm_wmat_pack(w, (const void *const *)part);
    }
}

void dm_wmat_pack_t(dm_wmat *w, const float *W, float *tmp)
{
    if (w->kern->pack_t) {
        w->kern->pack_t(W, w->K, w->N, 0, w->K, w->data, tmp);
        return;
    }
    int N = w->N, K = w->K;  /* W is [K, N]: tmp = W^T [N, K], then quantized and packed */
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) tmp[(size_t)n * K + k] = W[(size_t)k * N + n];
    dm_wmat_quant_pack(w, tmp, tmp + (size_t)N * K);
}

/* Forward packs that split at panel boundaries: f32's own pack, or a quant_pack. */
static int fwd_rows_step(const dm_wmat *w)
{
    const dm_wkern *k = w->kern;
    return k->panel_rows > 0 && (w->type->id == DM_WT_F32 || k->quant_pack) ? k->panel_rows : 0;
}

int dm_wmat_rows_step(const dm_wmat *fwd, const dm_wmat *wt)
{
    int g = fwd_rows_step(fwd);
    if (!g || !wt->kern->pack_t || fwd->N != wt->K || fwd->K != wt->N) return 0;
    return g % 2 ? 2 * g : g;  /* pack_t takes pairs of rows */
}

void dm_wmat_quant_pack_rows(dm_wmat *w, const float *W, int r0, int r1)
{
    int G = fwd_rows_step(w), K = w->K;
    if (r1 <= r0) return;
    const float *Ws = W + (size_t)r0 * K;
    unsigned char *d = (unsigned char *)w->data + (size_t)(r0 / G) * w->kern->pack_size(G, K, w->group);
    if (w->type->id == DM_WT_F32) {
        const void *part[DM_WPARTS] = {Ws};
        w->kern->pack(part, r1 - r0, K, w->group, d);
    } else {
        w->kern->quant_pack(Ws, r1 - r0, K, w->group, d);
    }
}

void dm_wmat_pack_t_rows(dm_wmat *w, const float *W, int r0, int r1, float *tmp)
{
    if (r1 > r0) w->kern->pack_t(W, w->K, w->N, r0, r1, w->data, tmp);
}

size_t dm_wmat_pack_tmp(const dm_wmat *w)
{
    return (size_t)w->N * w->K * sizeof(float) + dm_wtype_file_bytes(w->type, w->N, w->K, w->group);
}

void dm_wmat_unpack(const dm_wmat *w, void *const part[]) { w->kern->unpack(w->data, w->N, w->K, w->group, part); }

size_t dm_wmat_work_size(const dm_wmat *w, int64_t M)
{
    return w->kern->work_size ? w->kern->work_size(M, w->K) : 0;
}
