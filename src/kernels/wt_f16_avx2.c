/* wt_f16_avx2.c - f16 weights on AVX2 + FMA + F16C: fp32 activations times
 * the weights widened exactly by vcvtph2ps, fp32 FMAs. The kernels (layout,
 * tiles, the two ways by M) are written once for bf16 and f16 in
 * wt_half_avx2.h. */
#define HALF_BF16 0
#include "kernels/wt_half_avx2.h"

const dm_wkern dm_wkern_f16_avx2 = {
    .isa = DM_ISA_AVX2, .needs = DM_CPU_F16C,
    .pack_size = half_pack_size, .work_size = half_work_size,
    .pack = half_pack, .unpack = half_unpack, .gemm = half_gemm,
};
