/* wt_bf16_avx2.c - bf16 weights on AVX2 + FMA: the activations rounded to
 * bf16 exactly as the reference does, the weights widened by a 16-bit shift,
 * fp32 FMAs. The kernels (layout, tiles, the two ways by M) are written once
 * for bf16 and f16 in wt_half_avx2.h. */
#define HALF_BF16 1
#include "kernels/wt_half_avx2.h"

const dm_wkern dm_wkern_bf16_avx2 = {
    .isa = DM_ISA_AVX2, .needs = DM_CPU_F16C,  /* F16C: the Makefile builds wt_*_avx2.c with it */
    .pack_size = half_pack_size, .work_size = half_work_size,
    .pack = half_pack, .unpack = half_unpack, .gemm = half_gemm,
};
