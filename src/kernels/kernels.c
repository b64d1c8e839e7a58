/* kernels.c - picks the kernel table for an ISA. */
#include "kernels/kernels.h"

const dm_kernels *dm_kernels_for(dm_isa isa)
{
    switch (isa) {
    case DM_ISA_AVX512: return &dm_kernels_avx512;
    case DM_ISA_AVX2: return &dm_kernels_avx2;
    default: return &dm_kernels_ref;
    }
}

void dm_pack_bt(const dm_kernels *k, const float *B, int N, int K, float *dst, float *tmp)
{
    /* blocked transpose: 32x32 tiles keep both sides in cache */
    for (int n0 = 0; n0 < N; n0 += 32)
        for (int k0 = 0; k0 < K; k0 += 32) {
            int n1 = n0 + 32 < N ? n0 + 32 : N, k1 = k0 + 32 < K ? k0 + 32 : K;
            for (int n = n0; n < n1; n++)
                for (int kk = k0; kk < k1; kk++) tmp[(size_t)kk * N + n] = B[(size_t)n * K + kk];
        }
    k->pack_b(tmp, K, N, dst);
}
