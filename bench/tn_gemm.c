/* tn_gemm.c - single-thread micro benchmark of the weight-gradient GEMM
 * (dm_kernels.gemm_tn, dW[N, K] += dY^T X) in fp32 against its bf16 twin
 * (gemm_tn_bf16: operands rounded to bf16, fp32 sums; vdpbf16ps where the CPU
 * has AVX512_BF16), on the seed expert's shapes with the rows an expert gets
 * from a batch of 1024 (k=2 of E=8: 256) and from all of it: N x K = 512 x 256
 * (W2) and 256 x 512 (W1), M = 256 and 1024. The two run interleaved, round
 * after round; each figure is the best single call over the rounds. Prints
 * GMAC/s per precision and bf16/fp32.
 *
 * Build (after `make lib`, or with `make kernel-bench`) and run, from the repository root:
 *   build/tn_gemm [isa (avx512)] [rounds (200)]
 */
#include "base/base.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    dm_isa isa = DM_ISA_AVX512;
    if (argc > 1) isa = !strcmp(argv[1], "ref") ? DM_ISA_REF : !strcmp(argv[1], "avx2") ? DM_ISA_AVX2 : DM_ISA_AVX512;
    int rounds = argc > 2 ? atoi(argv[2]) : 200;
    if (rounds < 1) rounds = 1;
    isa = dm_isa_resolve(isa);
    const dm_kernels *kt = dm_kernels_for(isa);
    static const int shapes[][3] = {{256, 512, 256}, {256, 256, 512}, {1024, 512, 256}, {1024, 256, 512}};
    printf("isa %s, one thread, best of %d calls each\n", dm_isa_name(isa), rounds);
    printf("%6s %5s %5s | %9s %9s | %6s  (GMAC/s)\n", "M", "N", "K", "fp32", "bf16", "bf16x");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = dm_alloc((size_t)M * N * sizeof(float)), *B = dm_alloc((size_t)M * K * sizeof(float));
        float *C = dm_alloc((size_t)N * K * sizeof(float));
        void *work = dm_alloc(dm_gemm_tn_bf16_work(M, N, K));
        if (!A || !B || !C || !work) {
            fprintf(stderr, "tn_gemm: out of memory\n");
            return 1;
        }
        dm_rng r;
        dm_rng_seed(&r, 1);
        for (int64_t i = 0; i < (int64_t)M * N; i++) A[i] = dm_rng_uniform(&r, -1, 1);
        for (int64_t i = 0; i < (int64_t)M * K; i++) B[i] = dm_rng_uniform(&r, -1, 1);
        memset(C, 0, (size_t)N * K * sizeof(float));
        dm_gemm_tn g = {.M = M, .N = N, .K = K, .A = A, .lda = N, .B = B, .ldb = K, .C = C, .ldc = K,
                        .n0 = 0, .n1 = N, .work = work};
        double best[2] = {1e30, 1e30};
        for (int i = 0; i < rounds; i++)
            for (int v = 0; v < 2; v++) {
                double t0 = now_s();
                if (v) kt->gemm_tn_bf16(&g);
                else kt->gemm_tn(&g);
                double t = now_s() - t0;
                if (t < best[v]) best[v] = t;
            }
        double macs = (double)M * N * K;
        printf("%6d %5d %5d | %9.1f %9.1f | %6.2f\n", M, N, K, macs / best[0] * 1e-9, macs / best[1] * 1e-9,
               best[0] / best[1]);
        dm_free(A); dm_free(B); dm_free(C); dm_free(work);
    }
    return 0;
}
