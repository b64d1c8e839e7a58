/* cpu.c - which kernels this CPU can run: AVX-512 -> AVX2 -> portable C.
 * DEEPMOE_ISA=ref|avx2|avx512 forces a lower path (tests and CI use it to
 * exercise every table on one machine); a path the CPU lacks is never used. */
#include "base/base.h"
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

static dm_isa best_supported(void)
{
#if DM_HAVE_X86 && defined(__x86_64__) /* the Makefile's: the AVX files are built in */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return DM_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return DM_ISA_AVX2;
#endif
    return DM_ISA_REF;
}

dm_isa dm_isa_resolve(dm_isa want)
{
    dm_isa best = best_supported();
    if (want == DM_ISA_AUTO) {
        const char *env = getenv("DEEPMOE_ISA");
        want = best;
        if (env && !strcmp(env, "ref")) want = DM_ISA_REF;
        else if (env && !strcmp(env, "avx2")) want = DM_ISA_AVX2;
        else if (env && !strcmp(env, "avx512")) want = DM_ISA_AVX512;
    }
    return want > best ? best : want;
}

const char *dm_isa_name(dm_isa isa)
{
    switch (isa) {
    case DM_ISA_AUTO: return "auto";
    case DM_ISA_REF: return "ref";
    case DM_ISA_AVX2: return "avx2";
    case DM_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

#include <stdatomic.h>

#if DM_HAVE_X86 && defined(__x86_64__)
#include <cpuid.h>
#endif

/* The features by CPUID (both gcc and clang: clang's __builtin_cpu_supports
 * lacks some of these names): F16C is leaf 1 ECX bit 29, AVX512_VNNI leaf 7.0
 * ECX bit 11, AVX512_BF16 leaf 7.1 EAX bit 5. The AVX-512 ones are only asked
 * for by AVX-512 kernels, which run only where the OS keeps the zmm state. */
static unsigned cpu_features(void)
{
    unsigned have = 0;
#if DM_HAVE_X86 && defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29))) have |= DM_CPU_F16C;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11))) have |= DM_CPU_VNNI;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) have |= DM_CPU_BF16;
#endif
    return have;
}

/* CPUID once per process (in a VM each one traps), so a kernel may ask per call. */
int dm_cpu_has(unsigned mask)
{
    static _Atomic unsigned cached; /* the features | 1u << 31 once read */
    if (!mask) return 1;
    unsigned have = cached;
    if (!have) cached = have = cpu_features() | 1u << 31;
    return (have & mask) == mask;
}
