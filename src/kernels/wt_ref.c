/* wt_ref.c - the reference twin of every compressed weight type: quantize,
 * dequantize, and a portable dm_wkern whose packed form is the file layout
 * itself (the parts, each on a 64-byte boundary), whose GEMM is the
 * definition in wtype.h written as plainly as possible. Dot products are
 * summed in double (q8: in int64, exact) and rounded to float once. */
#include "base/base.h"
#include "kernels/wtype.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- quantizers */

static int n_groups(int K, int group) { return group > 0 ? (K + group - 1) / group : 1; }

void dm_wt_bf16_quantize(const float *W, int N, int K, int group, void *const part[])
{
    (void)group;
    uint16_t *q = part[0];
    for (int64_t i = 0; i < (int64_t)N * K; i++) q[i] = dm_f32_to_bf16(W[i]);
}

void dm_wt_bf16_dequantize(const void *const part[], int N, int K, int group, float *W)
{
    (void)group;
    const uint16_t *q = part[0];
    for (int64_t i = 0; i < (int64_t)N * K; i++) W[i] = dm_bf16_to_f32(q[i]);
}

void dm_wt_f16_quantize(const float *W, int N, int K, int group, void *const part[])
{
    (void)group;
    uint16_t *q = part[0];
    for (int64_t i = 0; i < (int64_t)N * K; i++) q[i] = dm_f32_to_f16(W[i]);
}

void dm_wt_f16_dequantize(const void *const part[], int N, int K, int group, float *W)
{
    (void)group;
    const uint16_t *q = part[0];
    for (int64_t i = 0; i < (int64_t)N * K; i++) W[i] = dm_f16_to_f32(q[i]);
}

/* rint(v) clamped to [-127, 127]; NaN gives 0 (as the SIMD conversions' packs do). */
static int8_t q8_clamp(float v)
{
    if (!(v == v)) return 0;
    return (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v);
}

/* Symmetric int8 of w[0..n) with one scale (wtype.h): *scale and q. */
static void q8_run(const float *w, int n, int8_t *q, float *scale)
{
    float amax = 0.0f;
    for (int k = 0; k < n; k++) amax = fmaxf(amax, fabsf(w[k]));
    float s = amax / 127.0f;
    *scale = s;
    for (int k = 0; k < n; k++) {
        q[k] = q8_clamp(s > 0.0f ? rintf(w[k] / s) : 0.0f);
    }
}

void dm_wt_q8_quantize(const float *W, int N, int K, int group, void *const part[])
{
    int8_t *q = part[0];
    float *sc = part[1];
    int G = group > 0 ? group : K, ng = n_groups(K, group);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < ng; g++) {
            int k0 = g * G, len = K - k0 < G ? K - k0 : G;
            q8_run(W + (int64_t)n * K + k0, len, q + (int64_t)n * K + k0, sc + (int64_t)n * ng + g);
        }
}

void dm_wt_q8_dequantize(const void *const part[], int N, int K, int group, float *W)
{
    const int8_t *q = part[0];
    const float *sc = part[1];
    int G = group > 0 ? group : K, ng = n_groups(K, group);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            W[(int64_t)n * K + k] = (float)q[(int64_t)n * K + k] * sc[(int64_t)n * ng + k / G];
}

/* 2:4 pruning of one row: kept values (fp32) into v [K/2], nibbles into idx [ceil(K/8)]. */
static void nm24_prune_row(const float *w, int K, float *v, uint8_t *idx)
{
    memset(idx, 0, (size_t)(K + 7) / 8);
    for (int g = 0; g < K / 4; g++) {
        const float *x = w + 4 * g;
        /* the two largest magnitudes; ties keep the lower index */
        int a = 0;
        for (int j = 1; j < 4; j++)
            if (fabsf(x[j]) > fabsf(x[a])) a = j;
        int b = a == 0 ? 1 : 0;
        for (int j = 0; j < 4; j++)
            if (j != a && fabsf(x[j]) > fabsf(x[b])) b = j;
        int i0 = a < b ? a : b, i1 = a < b ? b : a;
        v[2 * g] = x[i0];
        v[2 * g + 1] = x[i1];
        idx[g / 2] |= (uint8_t)((i0 | i1 << 2) << (4 * (g & 1)));
    }
}

/* The value type of an nm24 variant: 0 f32, 1 bf16, 2 q8. */
static void nm24_quantize_as(int vt, const float *W, int N, int K, void *const part[])
{
    float v[1024];
    for (int n = 0; n < N; n++) {
        const float *w = W + (int64_t)n * K;
        uint8_t *idx = (uint8_t *)part[1] + (int64_t)n * ((K + 7) / 8);
        int64_t h = K / 2;
        /* prune in chunks of 2048 columns: the kept values go straight to their type */
        memset(idx, 0, (size_t)(K + 7) / 8);
        float amax = 0.0f;
        for (int k0 = 0; k0 < K; k0 += 2048) {
            int len = K - k0 < 2048 ? K - k0 : 2048;
            uint8_t tmp[256];
            nm24_prune_row(w + k0, len, v, tmp);
            for (int j = 0; j < (len + 7) / 8; j++) idx[k0 / 8 + j] = tmp[j];
            for (int j = 0; j < len / 2; j++) {
                int64_t o = (int64_t)n * h + k0 / 2 + j;
                if (vt == 0) ((float *)part[0])[o] = v[j];
                else if (vt == 1) ((uint16_t *)part[0])[o] = dm_f32_to_bf16(v[j]);
                else amax = fmaxf(amax, fabsf(v[j]));
            }
        }
        if (vt == 2) {  /* one scale over the row's kept values: a second pass */
            float s = amax / 127.0f;
            ((float *)part[2])[n] = s;
            int8_t *q = (int8_t *)part[0] + (int64_t)n * h;
            for (int k0 = 0; k0 < K; k0 += 2048) {
                int len = K - k0 < 2048 ? K - k0 : 2048;
                uint8_t tmp[256];
                nm24_prune_row(w + k0, len, v, tmp);
                for (int j = 0; j < len / 2; j++) {
                    q[k0 / 2 + j] = q8_clamp(s > 0.0f ? rintf(v[j] / s) : 0.0f);
                }
            }
        }
    }
}

/* Row n's kept values as fp32 into v [K/2]. */
static void nm24_values(int vt, const void *const part[], int n, int K, float *v)
{
    int64_t h = K / 2, o = (int64_t)n * h;
    for (int64_t j = 0; j < h; j++)
        v[j] = vt == 0 ? ((const float *)part[0])[o + j]
             : vt == 1 ? dm_bf16_to_f32(((const uint16_t *)part[0])[o + j])
                       : (float)((const int8_t *)part[0])[o + j] * ((const float *)part[2])[n];
}

static void nm24_dequantize_as(int vt, const void *const part[], int N, int K, float *W)
{
    for (int n = 0; n < N; n++) {
        float *w = W + (int64_t)n * K;
        const uint8_t *idx = (const uint8_t *)part[1] + (int64_t)n * ((K + 7) / 8);
        /* the kept values land in W's own row, then spread from the back */
        nm24_values(vt, part, n, K, w);
        for (int g = K / 4 - 1; g >= 0; g--) {
            float v0 = w[2 * g], v1 = w[2 * g + 1];
            int nib = (idx[g / 2] >> (4 * (g & 1))) & 15;
            w[4 * g] = w[4 * g + 1] = w[4 * g + 2] = w[4 * g + 3] = 0.0f;
            w[4 * g + (nib & 3)] = v0;
            w[4 * g + (nib >> 2)] = v1;
        }
    }
}

void dm_wt_nm24_quantize(const float *W, int N, int K, int group, void *const part[])
{ (void)group; nm24_quantize_as(0, W, N, K, part); }
void dm_wt_nm24_dequantize(const void *const part[], int N, int K, int group, float *W)
{ (void)group; nm24_dequantize_as(0, part, N, K, W); }
void dm_wt_nm24_bf16_quantize(const float *W, int N, int K, int group, void *const part[])
{ (void)group; nm24_quantize_as(1, W, N, K, part); }
void dm_wt_nm24_bf16_dequantize(const void *const part[], int N, int K, int group, float *W)
{ (void)group; nm24_dequantize_as(1, part, N, K, W); }
void dm_wt_nm24_q8_quantize(const float *W, int N, int K, int group, void *const part[])
{ (void)group; nm24_quantize_as(2, W, N, K, part); }
void dm_wt_nm24_q8_dequantize(const void *const part[], int N, int K, int group, float *W)
{ (void)group; nm24_dequantize_as(2, part, N, K, W); }

/* ---------------------------------------------------------------- reference wkerns */

/* The packed form is the file layout (dm_wtype_split of one buffer). */
#define REF_TYPE(id) (&dm_wtypes[id])

static void ref_copy_parts(const dm_wtype *t, int N, int K, int group, const void *const src[], void *const dst[])
{
    for (int j = 0; j < t->n_parts; j++) {
        size_t n = dm_wtype_part_bytes(t, j, N, K, group);
        if (n) memcpy(dst[j], src[j], n);
    }
}

static void ref_rows(const dm_gemm *g, int64_t i, const float **a, float **c, const float **r, float *s)
{
    *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda;
    *c = g->C + (g->c_idx ? g->c_idx[i] : i) * g->ldc;
    *r = g->R ? g->R + (g->r_idx ? g->r_idx[i] : i) * g->ldr : NULL;
    *s = g->scale ? g->scale[i] : 1.0f;
}

static void ref_store(const dm_gemm *g, float *c, const float *r, float s, int n, float acc)
{
    c[n] = dm_epilogue_ref(acc, g->bias ? g->bias[n] : 0.0f, g->act, r ? r[n] : 0.0f, s);
}

/* Dense types with fp32-exact weights (bf16, f16): deq(w) row by row. round_a:
 * the activations are rounded to bf16 first. */
static void ref_gemm_dense16(const dm_gemm *g, float (*deq)(uint16_t), int round_a)
{
    const uint16_t *q = g->B->data;
    for (int64_t i = 0; i < g->M; i++) {
        const float *a, *r;
        float *c, s;
        ref_rows(g, i, &a, &c, &r, &s);
        for (int n = 0; n < g->N; n++) {
            const uint16_t *b = q + (int64_t)n * g->K;
            double acc = 0.0;
            float as = round_a && g->a_scale ? g->a_scale[i] : 1.0f;
            for (int k = 0; k < g->K; k++) {
                float x = round_a ? dm_bf16_to_f32(dm_f32_to_bf16(g->a_scale ? as * a[k] : a[k])) : a[k];
                acc += (double)x * (double)deq(b[k]);
            }
            ref_store(g, c, r, s, n, (float)acc);
        }
    }
}

#define PACK_FNS(name, id)                                                                          \
    static size_t name##_ref_pack_size(int N, int K, int group)                                     \
    { return dm_wtype_file_bytes(REF_TYPE(id), N, K, group); }                                      \
    static void name##_ref_pack(const void *const part[], int N, int K, int group, void *data)      \
    {                                                                                               \
        void *dst[DM_WPARTS];                                                                       \
        dm_wtype_split(REF_TYPE(id), N, K, group, data, dst);                                       \
        ref_copy_parts(REF_TYPE(id), N, K, group, part, dst);                                       \
    }                                                                                               \
    static void name##_ref_unpack(const void *data, int N, int K, int group, void *const part[])    \
    {                                                                                               \
        void *src[DM_WPARTS];                                                                       \
        dm_wtype_split(REF_TYPE(id), N, K, group, (void *)data, src);                               \
        ref_copy_parts(REF_TYPE(id), N, K, group, (const void *const *)src, part);                  \
    }

PACK_FNS(bf16, DM_WT_BF16)
PACK_FNS(f16, DM_WT_F16)
PACK_FNS(q8, DM_WT_Q8)
PACK_FNS(nm24, DM_WT_NM24)
PACK_FNS(nm24_bf16, DM_WT_NM24_BF16)
PACK_FNS(nm24_q8, DM_WT_NM24_Q8)

static void bf16_ref_gemm(const dm_gemm *g) { ref_gemm_dense16(g, dm_bf16_to_f32, 1); }
static void f16_ref_gemm(const dm_gemm *g) { ref_gemm_dense16(g, dm_f16_to_f32, 0); }

/* q8: activations quantized per row as wtype.h states; integer sums exact in int64. */
static void q8_ref_gemm(const dm_gemm *g)
{
    const dm_wmat *w = g->B;
    void *part[DM_WPARTS];
    dm_wtype_split(w->type, w->N, w->K, w->group, w->data, part);
    const int8_t *q = part[0];
    const float *sc = part[1];
    int K = g->K, G = w->group > 0 ? w->group : K, ng = n_groups(K, w->group);
    int8_t *qa = g->work;  /* [K] */
    for (int64_t i = 0; i < g->M; i++) {
        const float *a, *r;
        float *c, s;
        ref_rows(g, i, &a, &c, &r, &s);
        float amax = 0.0f;
        for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(a[k]));
        float sa = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int k = 0; k < K; k++) qa[k] = q8_clamp(rintf(a[k] * inv));
        for (int n = 0; n < g->N; n++) {
            const int8_t *b = q + (int64_t)n * K;
            float acc = 0.0f;
            for (int gi = 0; gi < ng; gi++) {
                int64_t isum = 0;
                for (int k = gi * G; k < K && k < (gi + 1) * G; k++) isum += (int64_t)qa[k] * b[k];
                acc += (float)isum * (sa * sc[(int64_t)n * ng + gi]);
            }
            ref_store(g, c, r, s, n, acc);
        }
    }
}

static size_t q8_ref_work_size(int64_t M, int K)
{
    (void)M;
    return (size_t)(K > 0 ? K : 0) + 64;
}

static void nm24_ref_gemm_as(const dm_gemm *g, int vt)
{
    const dm_wmat *w = g->B;
    void *part[DM_WPARTS];
    dm_wtype_split(w->type, w->N, w->K, w->group, w->data, part);
    int K = g->K;
    float *v = g->work;  /* [K/2] */
    for (int n = 0; n < g->N; n++) {
        nm24_values(vt, (const void *const *)part, n, K, v);
        const uint8_t *idx = (const uint8_t *)part[1] + (int64_t)n * ((K + 7) / 8);
        for (int64_t i = 0; i < g->M; i++) {
            const float *a, *r;
            float *c, s;
            ref_rows(g, i, &a, &c, &r, &s);
            double acc = 0.0;
            for (int gi = 0; gi < K / 4; gi++) {
                int nib = (idx[gi / 2] >> (4 * (gi & 1))) & 15;
                acc += (double)a[4 * gi + (nib & 3)] * v[2 * gi] + (double)a[4 * gi + (nib >> 2)] * v[2 * gi + 1];
            }
            ref_store(g, c, r, s, n, (float)acc);
        }
    }
}

static size_t nm24_ref_work_size(int64_t M, int K)
{
    (void)M;
    return (size_t)(K > 0 ? K / 2 : 0) * sizeof(float) + 64;
}

static void nm24_ref_gemm(const dm_gemm *g) { nm24_ref_gemm_as(g, 0); }
static void nm24_bf16_ref_gemm(const dm_gemm *g) { nm24_ref_gemm_as(g, 1); }
static void nm24_q8_ref_gemm(const dm_gemm *g) { nm24_ref_gemm_as(g, 2); }

#define REF_KERN(name, work)                                                                        \
    const dm_wkern dm_wkern_##name##_ref = {                                                        \
        .isa = DM_ISA_REF, .pack_size = name##_ref_pack_size, .work_size = work,                    \
        .pack = name##_ref_pack, .unpack = name##_ref_unpack, .gemm = name##_ref_gemm,              \
    };

REF_KERN(bf16, NULL)
REF_KERN(f16, NULL)
REF_KERN(q8, q8_ref_work_size)
REF_KERN(nm24, nm24_ref_work_size)
REF_KERN(nm24_bf16, nm24_ref_work_size)
REF_KERN(nm24_q8, nm24_ref_work_size)
