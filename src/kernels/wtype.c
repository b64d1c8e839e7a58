/* wtype.c - the weight-type table (wtype.h). */
#include "kernels/wtype.h"

#include <string.h>

static void f32_quantize_ref(const float *W, int N, int K, void *q, float *scales)
{
    (void)scales;
    if (N > 0 && K > 0) memcpy(q, W, (size_t)N * (size_t)K * sizeof(float));
}

static void f32_dequantize_ref(const void *q, const float *scales, int N, int K, float *W)
{
    (void)scales;
    if (N > 0 && K > 0) memcpy(W, q, (size_t)N * (size_t)K * sizeof(float));
}

const dm_wtype dm_wtypes[DM_WT_COUNT] = {
    [DM_WT_F32] = {
        .id = DM_WT_F32, .name = "f32", .st_dtype = "F32", .block = 1, .block_bytes = 4,
        .quantize_ref = f32_quantize_ref, .dequantize_ref = f32_dequantize_ref,
        .kern = {
            [DM_ISA_REF] = &dm_wkern_f32_ref,
#if DM_HAVE_X86
            [DM_ISA_AVX2] = &dm_wkern_f32_avx2,
            [DM_ISA_AVX512] = &dm_wkern_f32_avx512,
#endif
        },
    },
};

const dm_wtype *dm_wtype_by_name(const char *name)
{
    for (int i = 0; i < DM_WT_COUNT; i++)
        if (name && !strcmp(dm_wtypes[i].name, name)) return &dm_wtypes[i];
    return NULL;
}

const dm_wkern *dm_wtype_kern(const dm_wtype *t, dm_isa isa)
{
    const dm_wkern *k = isa >= 0 && isa < DM_ISA_COUNT ? t->kern[isa] : NULL;
    return k ? k : t->kern[DM_ISA_REF];
}

size_t dm_wmat_data_size(const dm_wtype *t, dm_isa isa, int N, int K)
{
    return dm_wtype_kern(t, isa)->pack_size(N, K);
}

size_t dm_wmat_scales_size(const dm_wtype *t, dm_isa isa, int N, int K)
{
    const dm_wkern *k = dm_wtype_kern(t, isa);
    return k->scales_size ? k->scales_size(N, K) : 0;
}

void dm_wmat_bind(dm_wmat *w, const dm_wtype *t, dm_isa isa, int N, int K, void *data, float *scales)
{
    *w = (dm_wmat){.type = t, .kern = dm_wtype_kern(t, isa), .N = N, .K = K, .data = data, .scales = scales};
}

void dm_wmat_pack(dm_wmat *w, const float *W) { w->kern->pack(W, w->N, w->K, w->data, w->scales); }

void dm_wmat_pack_t(dm_wmat *w, const float *W, float *tmp)
{
    w->kern->pack_t(W, w->K, w->N, w->data, w->scales, tmp);
}

void dm_wmat_unpack(const dm_wmat *w, float *W) { w->kern->unpack(w->data, w->scales, w->N, w->K, W); }
