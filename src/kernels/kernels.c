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
