/* wt_half.h - what the bf16 / f16 SIMD kernels (wt_bf16_<isa>.c,
 * wt_f16_<isa>.c) show the tests and benchmarks besides their dm_wkern: the
 * conversions they run, one function per ISA, and the bf16 AMX switch.
 * Defined only where the x86 files are built (DM_HAVE_X86); each needs the
 * CPU features of its kernel (avx512 bf16: DM_CPU_BF16, the rest F16C). */
#ifndef DM_WT_HALF_H
#define DM_WT_HALF_H

#include "kernels/kernels.h"

/* out[i] = dm_f32_to_bf16(x[i]), bit for bit (what the bf16 kernels do to
 * activations before their dot products). */
void dm_wt_bf16_round_avx512(const float *x, int64_t n, uint16_t *out);
void dm_wt_bf16_round_avx2(const float *x, int64_t n, uint16_t *out);

/* out[i] = dm_f16_to_f32(h[i]) (how the f16 kernels widen weights); bit for
 * bit except that a signaling NaN comes back quiet (F16C quiets it). */
void dm_wt_f16_widen_avx512(const uint16_t *h, int64_t n, float *out);
void dm_wt_f16_widen_avx2(const uint16_t *h, int64_t n, float *out);

/* The bf16 AVX-512 kernel runs its tiles on AMX-BF16 when the CPU has it,
 * the OS grants it (arch_prctl ARCH_REQ_XCOMP_PERM, once per process) and
 * DEEPMOE_AMX is not "0"; otherwise on vdpbf16ps. mode 0 turns AMX off, 1
 * back on (where allowed), -1 only asks. Returns 1 if AMX is in use after
 * the call. Results agree either way up to fp32 summation order. */
int dm_wt_bf16_amx(int mode);

/* kernels.h's gemm_tn_bf16 on vdpbf16ps (needs DM_CPU_BF16). */
void dm_gemm_tn_bf16_avx512(const dm_gemm_tn *g);

#endif
