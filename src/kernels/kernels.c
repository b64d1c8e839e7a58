/* kernels.c - picks the kernel table for an ISA. */
#include "kernels/kernels.h"
#include "base/base.h"

#include <string.h>

const dm_kernels *dm_kernels_for(dm_isa isa)
{
    switch (isa) {
#if DM_HAVE_X86 /* the Makefile: 0 when the AVX files are left out (X86=0, not x86-64) */
    case DM_ISA_AVX512: return &dm_kernels_avx512;
    case DM_ISA_AVX2: return &dm_kernels_avx2;
#endif
    default: return &dm_kernels_ref;
    }
}

void dm_pack_panels(const float *B, int N, int K, int nr, float *dst)
{
    int P = (N + nr - 1) / nr;
    for (int p = 0; p < P; p++) {
        float *panel = dst + (size_t)p * K * nr;  /* [K, nr] */
        int n0 = p * nr, cols = N - n0 < nr ? N - n0 : nr;
        /* blocks of 64 k keep the panel's written lines in L1 across the nr rows */
        for (int k0 = 0; k0 < K; k0 += 64) {
            int k1 = k0 + 64 < K ? k0 + 64 : K;
            for (int j = 0; j < nr; j++) {
                const float *b = j < cols ? B + (size_t)(n0 + j) * K : NULL;
                for (int k = k0; k < k1; k++) panel[(size_t)k * nr + j] = b ? b[k] : 0.0f;
            }
        }
    }
}

void dm_pack_panels_t(const float *B, int N, int K, int r0, int r1, int nr, float *dst)
{
    /* B^T is [K, N]: its panels cover nr columns of B, and panel row n is B[n, k0 .. k0+nr) */
    int P = (K + nr - 1) / nr;
    for (int p = 0; p < P; p++) {
        float *panel = dst + (size_t)p * N * nr;  /* [N, nr] */
        int k0 = p * nr, cols = K - k0 < nr ? K - k0 : nr;
        for (int n = r0; n < r1; n++) {
            float *o = panel + (size_t)n * nr;
            memcpy(o, B + (size_t)n * K + k0, (size_t)cols * sizeof *o);
            for (int j = cols; j < nr; j++) o[j] = 0.0f;
        }
    }
}

void dm_unpack_panels(const float *src, int N, int K, int nr, float *B)
{
    int P = (N + nr - 1) / nr;
    for (int p = 0; p < P; p++) {
        const float *panel = src + (size_t)p * K * nr;  /* [K, nr] */
        int n0 = p * nr, cols = N - n0 < nr ? N - n0 : nr;
        for (int j = 0; j < cols; j++) {
            float *b = B + (size_t)(n0 + j) * K;
            for (int k = 0; k < K; k++) b[k] = panel[(size_t)k * nr + j];
        }
    }
}

size_t dm_gemm_tn_bf16_work(int64_t M, int N, int K)
{
    /* the larger of the vdpbf16ps packs (pairs of A's and B's rows) and the
     * rounded fp32 copies of dm_gemm_tn_bf16_emul, with alignment slack */
    size_t m = (size_t)(M > 0 ? M : 0) + 1;
    return m * ((size_t)(N > 0 ? N : 0) + (size_t)(K > 0 ? K : 0) + 32) * sizeof(float) + 256;
}

static float round_bf16(float x) { return dm_bf16_to_f32(dm_f32_to_bf16(x)); }

void dm_gemm_tn_bf16_emul(const dm_kernels *kt, const dm_gemm_tn *g)
{
    if (g->M <= 0 || g->n1 <= g->n0 || g->K <= 0) return; /* C untouched */
    int nn = g->n1 - g->n0, K = g->K;
    float *Ar = g->work; /* [M, nn] bf16(s a) */
    float *Br = Ar + ((size_t)g->M * nn + 15) / 16 * 16; /* [M, K] bf16(b) */
    for (int64_t i = 0; i < g->M; i++) {
        const float *a = g->A + (g->a_idx ? g->a_idx[i] : i) * g->lda + g->n0;
        const float *b = g->B + (g->b_idx ? g->b_idx[i] : i) * g->ldb;
        float s = g->scale ? g->scale[i] : 1.0f;
        for (int n = 0; n < nn; n++) Ar[i * nn + n] = round_bf16(g->scale ? s * a[n] : a[n]);
        for (int k = 0; k < K; k++) Br[i * K + k] = round_bf16(b[k]);
    }
    dm_gemm_tn h = {.M = g->M, .N = nn, .K = K, .A = Ar, .lda = nn, .B = Br, .ldb = K,
                    .C = g->C + (int64_t)g->n0 * g->ldc, .ldc = g->ldc, .n0 = 0, .n1 = nn};
    kt->gemm_tn(&h);
}

int dm_precision_native(dm_precision p, dm_isa isa)
{
    if (p == DM_PREC_FP32) return 1;
    return p == DM_PREC_BF16 && DM_HAVE_X86 && dm_isa_resolve(isa) == DM_ISA_AVX512 && dm_cpu_has(DM_CPU_BF16);
}
