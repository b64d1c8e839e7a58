/* suite_kernels.c - the kernel suite of the portable test binary (make X86=0).
 *
 * tests/test_kernels.c names the x86 tables (dm_kernels_avx2, dm_kernels_avx512)
 * outside any #if, so it cannot link into a build that leaves the AVX files out;
 * the Makefile links this instead and the run says so. Once test_kernels.c guards
 * those names with #if DM_HAVE_X86 (the Makefile defines it 0 or 1), drop this
 * file and the Makefile's filter-out. */
#include "../test.h"

void suite_kernels(dm_t *t)
{
    (void)t;
    printf("SKIP suite_kernels: tests/test_kernels.c needs the x86 tables (tests/portable/suite_kernels.c)\n");
}
