/* q8_gemm.c - the q8 GEMM kernel against the f32 one, single thread, on the
 * seed experts' shapes (N x K = 256 x 512 and 512 x 256) at M = 1, 16, 64,
 * 256, 1024 rows (16 and 256: what each of the seed's 8 experts gets at top-2
 * from a batch of 64 and 1024): GMAC/s of each (the fastest of 100 interleaved batches of at least
 * 0.2 ms: the machine may be shared), their ratio, q8 with groups of 128, and the q8 rate as a share of
 * the vpdpbusd peak (64 MACs per instruction, measured here by a register
 * loop) and the f32 rate as a share of the FMA peak.
 *
 * Build (after make) and run:
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/q8_gemm.c \
 *      build/libdeepmoe.a -lm -pthread -o build/q8_gemm
 *   build/q8_gemm [avx512|avx2|ref]      (default: the best this CPU runs) */
#include "base/base.h"
#include "kernels/wtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

float dm_peak_probe_avx512(int64_t iters);
float dm_peak_probe_avx2(int64_t iters);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if DM_HAVE_X86
#include <immintrin.h>
/* vpdpbusd peak: twelve independent chains (the asm keeps each in a register). */
__attribute__((target("avx512f,avx512vnni"))) static int vnni_probe(int64_t iters)
{
    __m512i b = _mm512_set1_epi8(3), c = _mm512_set1_epi8(1);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m512i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    for (int64_t i = 0; i < iters; i++) {
#define D(x) x = _mm512_dpbusd_epi32(x, b, c); __asm__("" : "+v"(x));
        D(a0) D(a1) D(a2) D(a3) D(a4) D(a5) D(a6) D(a7) D(a8) D(a9) D(a10) D(a11)
#undef D
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    return _mm512_reduce_add_epi32(s);
}
#endif

/* Peak GMAC/s, the best of 40 runs of a few ms (raised, never lowered: main
 * measures before and after): vpdpbusd (64 MACs) and fp32 FMA (16 MACs per
 * zmm, 8 per ymm). */
static void peaks(dm_isa isa, double *vnni, double *fma)
{
#if DM_HAVE_X86
    int64_t it = 2000000;
    for (int r = 0; r < 40; r++) {
        double t = now();
        volatile int x = dm_cpu_has(DM_CPU_VNNI) ? vnni_probe(it) : 0;
        (void)x;
        double v = dm_cpu_has(DM_CPU_VNNI) ? 12.0 * it * 64 / (now() - t) / 1e9 : 0;
        t = now();
        volatile float y = isa == DM_ISA_AVX512 ? dm_peak_probe_avx512(it) : dm_peak_probe_avx2(it);
        (void)y;
        double f = 12.0 * it * (isa == DM_ISA_AVX512 ? 16 : 8) / (now() - t) / 1e9;
        if (v > *vnni) *vnni = v;
        if (f > *fma) *fma = f;
    }
#else
    (void)isa;
    (void)vnni;
    (void)fma;
#endif
}

/* One weight packed for isa, with its work buffer for M rows. */
typedef struct bw {
    dm_wmat w;
    void *data, *work;
} bw;

static void bw_init(bw *b, const dm_wtype *t, dm_isa isa, const float *W, int N, int K, int G, int64_t M)
{
    void *file = dm_alloc(dm_wtype_file_bytes(t, N, K, G) + 64), *part[DM_WPARTS];
    dm_wtype_split(t, N, K, G, file, part);
    t->quantize_ref(W, N, K, G, part);
    b->data = dm_alloc(dm_wmat_data_size(t, isa, N, K, G));
    dm_wmat_bind(&b->w, t, isa, N, K, G, b->data);
    dm_wmat_pack(&b->w, (const void *const *)part);
    size_t nw = dm_wmat_work_size(&b->w, M);
    b->work = nw ? dm_alloc(nw) : NULL;
    dm_free(file);
}

/* Calls per timed batch: a batch of at least 0.2 ms (short enough that most
 * batches run unpreempted on a shared machine). */
static int batch_reps(const dm_gemm *g)
{
    int reps = 1;
    for (;;) {
        double t = now();
        for (int i = 0; i < reps; i++) dm_wmat_gemm(g);
        if (now() - t >= 2e-4 || reps >= 1 << 20) return reps;
        reps *= 2;
    }
}

/* One batch; *best keeps the fastest seconds per call seen. */
static void time_batch(const dm_gemm *g, int reps, double *best)
{
    double t = now();
    for (int i = 0; i < reps; i++) dm_wmat_gemm(g);
    t = (now() - t) / reps;
    if (t < *best) *best = t;
}

int main(int argc, char **argv)
{
    dm_isa isa = dm_isa_resolve(DM_ISA_AUTO);
    if (argc > 1) isa = !strcmp(argv[1], "ref") ? DM_ISA_REF : !strcmp(argv[1], "avx2") ? DM_ISA_AVX2 : DM_ISA_AVX512;
    isa = dm_isa_resolve(isa);
    const dm_wtype *f32 = &dm_wtypes[DM_WT_F32], *q8 = &dm_wtypes[DM_WT_Q8];
    double pv = 0, pf = 0;
    peaks(isa, &pv, &pf);
    printf("isa %s (q8 kernels: %s), 1 thread; peaks: vpdpbusd %.0f GMAC/s, fp32 FMA %.0f GMAC/s\n",
           dm_isa_name(isa), dm_isa_name(dm_wtype_kern(q8, isa)->isa), pv, pf);
    printf("%9s %5s %10s %10s %10s %7s %8s %8s %9s %9s\n", "N x K", "M", "f32 GMAC/s", "q8 GMAC/s",
           "q8/g128", "q8/f32", "q8%vnni", "f32%fma", "f32 us", "q8 us");
    static const int shapes[][2] = {{256, 512}, {512, 256}};
    static const int64_t Ms[] = {1, 16, 64, 256, 1024};
    dm_rng r;
    dm_rng_seed(&r, 1);
    for (int s = 0; s < 2; s++)
        for (int mi = 0; mi < 5; mi++) {
            int N = shapes[s][0], K = shapes[s][1];
            int64_t M = Ms[mi];
            float *W = dm_alloc((size_t)N * K * sizeof *W), *A = dm_alloc((size_t)M * K * sizeof *A);
            float *C = dm_alloc((size_t)M * N * sizeof *C);
            for (int64_t j = 0; j < (int64_t)N * K; j++) W[j] = dm_rng_uniform(&r, -0.05f, 0.05f);
            for (int64_t j = 0; j < M * K; j++) A[j] = dm_rng_uniform(&r, -1, 1);
            bw bf, bq, bg;
            bw_init(&bf, f32, isa, W, N, K, 0, M);
            bw_init(&bq, q8, isa, W, N, K, 0, M);
            bw_init(&bg, q8, isa, W, N, K, 128, M);
            dm_gemm g[3];
            bw *b[3] = {&bf, &bq, &bg};
            double best[3] = {1e30, 1e30, 1e30};
            int reps[3];
            for (int v = 0; v < 3; v++) {
                g[v] = (dm_gemm){.M = M, .N = N, .K = K, .A = A, .lda = K, .B = &b[v]->w, .C = C, .ldc = N,
                                 .work = b[v]->work};
                reps[v] = batch_reps(&g[v]);
            }
            for (int round = 0; round < 100; round++)  /* interleaved: the same conditions for each */
                for (int v = 0; v < 3; v++) time_batch(&g[v], reps[v], &best[v]);
            double tf = best[0], tq = best[1], tg = best[2];
            double macs = (double)M * N * K;
            char share[16] = "-";  /* of the vpdpbusd peak: only for the VNNI kernel */
            if (pv > 0 && bq.w.kern->isa == DM_ISA_AVX512)
                snprintf(share, sizeof share, "%.1f%%", 100 * macs / tq / 1e9 / pv);
            printf("%4dx%-4d %5lld %10.1f %10.1f %10.1f %6.2fx %8s %7.1f%% %9.2f %9.2f\n", N, K, (long long)M,
                   macs / tf / 1e9, macs / tq / 1e9, macs / tg / 1e9, tf / tq, share,
                   pf > 0 ? 100 * macs / tf / 1e9 / pf : 0, tf * 1e6, tq * 1e6);
            dm_free(bf.data); dm_free(bf.work); dm_free(bq.data); dm_free(bq.work);
            dm_free(bg.data); dm_free(bg.work);
            dm_free(W); dm_free(A); dm_free(C);
        }
    double pv0 = pv, pf0 = pf;
    peaks(isa, &pv, &pf);
    if (pv > pv0 * 1.02 || pf > pf0 * 1.02)
        printf("(the peaks measured again at the end: vpdpbusd %.0f, FMA %.0f GMAC/s; the shares above used the first)\n",
               pv, pf);
    return 0;
}
