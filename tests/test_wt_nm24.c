/* test_wt_nm24.c - the 2:4 sparse weight types (nm24, nm24:bf16, nm24:q8):
 * magnitude pruning and the ".idx" nibbles on hand-made rows, a hand-checked
 * GEMM on every ISA, the optimized kernels against the reference at the
 * sizes their panels and chunks make awkward, and pruning's idempotence.
 * (tests/test_kernels.c's table, round-trip and GEMM tests cover these types
 * with every option as well.) */
#include "test.h"

#include "base/base.h"
#include "kernels/wtype.h"

#include <stdlib.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SENT (-1234.5f)

static const dm_wtype_id sparse_types[] = {DM_WT_NM24, DM_WT_NM24_BF16, DM_WT_NM24_Q8};

/* The file layout of W [N, K] as type t: one buffer, parts pointed into it. */
typedef struct file {
    void *buf;
    void *part[DM_WPARTS];
} file;

static void file_quantize(file *f, const dm_wtype *t, const float *W, int N, int K)
{
    f->buf = calloc(1, dm_wtype_file_bytes(t, N, K, 0) + 64);
    dm_wtype_split(t, N, K, 0, f->buf, f->part);
    t->quantize_ref(W, N, K, 0, f->part);
}

/* W packed for isa from its file layout. */
static dm_wmat pack_for(const dm_wtype *t, dm_isa isa, const file *f, int N, int K)
{
    dm_wmat w;
    dm_wmat_bind(&w, t, isa, N, K, 0, dm_alloc(dm_wmat_data_size(t, isa, N, K, 0) + 64));
    dm_wmat_pack(&w, (const void *const *)f->part);
    return w;
}

/* The ISAs this CPU runs (ref first). */
static int isa_runs(int isa) { return dm_isa_resolve((dm_isa)isa) == (dm_isa)isa; }

/* ---------------------------------------------------------------- pruning */

/* Hand-made groups of 4: which two are kept (ties keep the lower index) and
 * the nibble i0 | i1 << 2 they give. */
static void test_nm24_prune_known(dm_t *t)
{
    static const struct { float w[4]; int i0, i1; } cases[] = {
        {{1, -3, 2, 0.5f}, 1, 2},   /* |-3| and 2 the largest */
        {{0, 0, 0, 0}, 0, 1},       /* all tied: the two lowest */
        {{2, 2, 2, 2}, 0, 1},
        {{-1, 1, -1, 1}, 0, 1},     /* equal magnitudes, either sign */
        {{0.1f, -5, 5, 0.2f}, 1, 2},
        {{0, 0, 0, 7}, 0, 3},       /* one large, then the lowest of the tied zeros */
        {{3, 1, 3, 1}, 0, 2},
        {{1, 2, 2, 2}, 1, 2},       /* three tied for first: the two lowest of them */
        {{0.25f, 0.5f, -4, -8}, 2, 3},
        {{-9, 0, 0, 1}, 0, 3},
        {{0, 6, 0, -6}, 1, 3},
        {{5, 0, -5, 0}, 0, 2},
    };
    int K = 4 * COUNT(cases);
    float W[4 * COUNT(cases)];
    for (int g = 0; g < COUNT(cases); g++) memcpy(W + 4 * g, cases[g].w, sizeof cases[g].w);
    for (int ti = 0; ti < COUNT(sparse_types); ti++) {
        const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
        file f;
        file_quantize(&f, ty, W, 1, K);
        float back[4 * COUNT(cases)];
        ty->dequantize_ref((const void *const *)f.part, 1, K, 0, back);
        const uint8_t *idx = f.part[1];
        for (int g = 0; g < COUNT(cases); g++) {
            int nib = (idx[g / 2] >> (4 * (g & 1))) & 15;
            CHECK(t, nib == (cases[g].i0 | cases[g].i1 << 2), "%s group %d: nibble %d, want %d", ty->name, g, nib,
                  cases[g].i0 | cases[g].i1 << 2);
            for (int j = 0; j < 4; j++) {
                /* every value here is exact in bf16; the row's amax is 9, so q8 is within half a step */
                float want = j == cases[g].i0 || j == cases[g].i1 ? cases[g].w[j] : 0.0f;
                double tol = ty->id == DM_WT_NM24_Q8 ? 9.0 / 127 * 0.5000001 : 0;
                CHECK(t, fabs((double)back[4 * g + j] - want) <= tol, "%s group %d: W[%d] comes back %g, want %g",
                      ty->name, g, j, back[4 * g + j], want);
            }
        }
        if (ty->id == DM_WT_NM24) {  /* the kept values in order, exactly */
            const float *v = f.part[0];
            for (int g = 0; g < COUNT(cases); g++)
                CHECK(t, v[2 * g] == cases[g].w[cases[g].i0] && v[2 * g + 1] == cases[g].w[cases[g].i1],
                      "group %d: kept %g %g", g, v[2 * g], v[2 * g + 1]);
        }
        free(f.buf);
    }
}

/* The ".idx" bytes of a known row: group 2j in the low nibble of byte j, the
 * absent last group's nibble 0; the same for every value type; the kept values
 * in their value type (bf16 round to nearest even, q8 one scale per row). */
static void test_nm24_idx_layout(dm_t *t)
{
    /* 5 groups (K = 20): nibbles 9, 4, 12, 8, 14 -> bytes 0x49, 0x8C, 0x0E */
    static const float W[2][20] = {
        {0, 1.5f, -2, 0,   3, -4, 0, 0,   -0.5f, 0, 0, 6,   7, 0, 1.0f / 3, 0,   0, 0, 1, -1},
        {8, 0, 0, 0,   0, 0, 2, 1,   0, -3, 0.25f, 3,   0, 0, 0, 0,   1, 2, 3, 4},
    };
    static const uint8_t want[2][3] = {{0x49, 0x8C, 0x0E}, {0xE4, 0x4D, 0x0E}};
    /* row 1: groups (0,1) 4, (2,3) 14, (1,3) 13, (0,1) 4, (2,3) 14 */
    for (int ti = 0; ti < COUNT(sparse_types); ti++) {
        const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
        file f;
        file_quantize(&f, ty, &W[0][0], 2, 20);
        CHECK(t, dm_wtype_part_bytes(ty, 1, 2, 20, 0) == 6, "%s: idx part %zu bytes", ty->name,
              dm_wtype_part_bytes(ty, 1, 2, 20, 0));
        const uint8_t *idx = f.part[1];
        for (int n = 0; n < 2; n++)
            for (int b = 0; b < 3; b++)
                CHECK(t, idx[3 * n + b] == want[n][b], "%s row %d: idx byte %d = 0x%02x, want 0x%02x", ty->name, n, b,
                      idx[3 * n + b], want[n][b]);
        for (int n = 0; n < 2; n++) {
            float amax = 0;
            float kept[10];
            for (int g = 0; g < 5; g++) {
                int nib = (want[n][g / 2] >> (4 * (g & 1))) & 15;
                kept[2 * g] = W[n][4 * g + (nib & 3)];
                kept[2 * g + 1] = W[n][4 * g + (nib >> 2)];
            }
            for (int j = 0; j < 10; j++) amax = fmaxf(amax, fabsf(kept[j]));
            for (int j = 0; j < 10; j++) {
                int ok;
                if (ty->id == DM_WT_NM24) ok = ((const float *)f.part[0])[10 * n + j] == kept[j];
                else if (ty->id == DM_WT_NM24_BF16) ok = ((const uint16_t *)f.part[0])[10 * n + j] == dm_f32_to_bf16(kept[j]);
                else {
                    float s = amax / 127.0f;
                    ok = ((const int8_t *)f.part[0])[10 * n + j] == (int8_t)rintf(kept[j] / s) &&
                         ((const float *)f.part[2])[n] == s;
                }
                CHECK(t, ok, "%s row %d: kept value %d (%g) stored wrong", ty->name, n, j, kept[j]);
            }
        }
        free(f.buf);
    }
}

/* A matrix already 2:4 sparse (two nonzeros of distinct magnitude per group,
 * every |w| well above a q8 step) keeps exactly its nonzeros; quantizing its
 * dequantized form again gives the same file (q8: the same integers, the
 * scale to an ulp). */
static void test_nm24_idempotent(dm_t *t)
{
    const int N = 7, K = 68;
    float *W = malloc((size_t)N * K * sizeof *W), *back = malloc((size_t)N * K * sizeof *back);
    dm_rng r;
    dm_rng_seed(&r, 24);
    static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    for (int g = 0; g < N * K / 4; g++) {
        int pi = (int)(dm_rng_u64(&r) % 6);
        float *w = W + 4 * g;
        w[0] = w[1] = w[2] = w[3] = 0;
        float m = dm_rng_uniform(&r, 0.5f, 1.0f);
        w[pairs[pi][0]] = (dm_rng_u64(&r) & 1) ? m : -m;
        w[pairs[pi][1]] = (dm_rng_u64(&r) & 1) ? m * 0.75f : -m * 0.75f;
    }
    for (int ti = 0; ti < COUNT(sparse_types); ti++) {
        const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
        file f1, f2;
        file_quantize(&f1, ty, W, N, K);
        ty->dequantize_ref((const void *const *)f1.part, N, K, 0, back);
        int nz_same = 1;
        for (int64_t j = 0; j < (int64_t)N * K; j++) nz_same &= (back[j] != 0) == (W[j] != 0);
        CHECK(t, nz_same, "%s: the nonzeros of a 2:4 matrix moved", ty->name);
        if (ty->id == DM_WT_NM24) CHECK(t, !memcmp(back, W, (size_t)N * K * sizeof *W), "nm24: a 2:4 matrix changed");
        file_quantize(&f2, ty, back, N, K);
        for (int j = 0; j < ty->n_parts; j++) {
            size_t n = dm_wtype_part_bytes(ty, j, N, K, 0);
            if (ty->id == DM_WT_NM24_Q8 && j == 2) {
                const float *s1 = f1.part[2], *s2 = f2.part[2];
                for (int i = 0; i < N; i++)
                    CHECK(t, fabsf(s1[i] - s2[i]) <= s1[i] * 2.5e-7f, "q8 row %d: scale %g then %g", i, s1[i], s2[i]);
            } else {
                CHECK(t, !memcmp(f1.part[j], f2.part[j], n), "%s: part %d differs after quantizing again", ty->name, j);
            }
        }
        free(f1.buf);
        free(f2.buf);
    }
    free(W);
    free(back);
}

/* ---------------------------------------------------------------- gemm */

/* A 2 x 8 weight whose pruned form is known, times 2 rows, with every epilogue
 * option; every value and product exact in fp32, bf16 and q8 (row amax 127:
 * scale 1), so each type on each ISA must give these numbers exactly. */
static void test_nm24_gemm_known(dm_t *t)
{
    static const float W[2][8] = {
        {1, -3, 2, 0.5f, 0, 0, 0, 127},  /* kept: -3@1 2@2 | 0@0 127@3 */
        {3, 1, 3, 1, 1, 2, 2, 127},      /* kept: 3@0 3@2 | 2@1 127@3 */
    };
    static const float A[2][8] = {{1, 2, 3, 4, 5, 6, 7, 8}, {1, -1, 1, -1, 1, -1, 1, -1}};
    /* A W^T = [[1016, 1040], [-122, -123]];
     * s * (relu(acc + bias) + r) with bias (10, -1000), r rows (1, 1) and (0, 4), s (2, 0.5) */
    static const float plain[2][2] = {{1016, 1040}, {-122, -123}};
    static const float fused[2][2] = {{2054, 82}, {0, 2}};
    static const float bias[2] = {10, -1000}, R[2][2] = {{1, 1}, {0, 4}}, scale[2] = {2, 0.5f};
    for (int ti = 0; ti < COUNT(sparse_types); ti++) {
        const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
        file f;
        file_quantize(&f, ty, &W[0][0], 2, 8);
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            if (!isa_runs(isa)) continue;
            dm_wmat w = pack_for(ty, (dm_isa)isa, &f, 2, 8);
            size_t nw = dm_wmat_work_size(&w, 2);
            void *work = nw ? dm_alloc(nw) : NULL;
            for (int opt = 0; opt < 2; opt++) {
                float C[2][2] = {{SENT, SENT}, {SENT, SENT}};
                dm_gemm g = {.M = 2, .N = 2, .K = 8, .A = &A[0][0], .lda = 8, .B = &w, .C = &C[0][0], .ldc = 2,
                             .work = work};
                if (opt) {
                    g.bias = bias;
                    g.act = DM_ACT_RELU;
                    g.R = &R[0][0];
                    g.ldr = 2;
                    g.scale = scale;
                }
                dm_wmat_gemm(&g);
                const float (*want)[2] = opt ? fused : plain;
                for (int i = 0; i < 2; i++)
                    for (int n = 0; n < 2; n++)
                        CHECK(t, C[i][n] == want[i][n], "%s/%s%s: C[%d][%d] = %g, want %g", ty->name,
                              dm_isa_name(w.kern->isa), opt ? " fused" : "", i, n, C[i][n], want[i][n]);
            }
            /* batch 1 (the gemv paths), the second row through a_idx / c_idx */
            {
                float C[3] = {SENT, SENT, SENT};
                int32_t ai = 1, ci = 0;
                dm_gemm g = {.M = 1, .N = 2, .K = 8, .A = &A[0][0], .lda = 8, .a_idx = &ai, .B = &w, .C = C,
                             .ldc = 2, .c_idx = &ci, .work = work};
                dm_wmat_gemm(&g);
                CHECK(t, C[0] == -122 && C[1] == -123 && C[2] == SENT, "%s/%s batch 1: %g %g %g", ty->name,
                      dm_isa_name(w.kern->isa), C[0], C[1], C[2]);
            }
            dm_free(work);
            dm_free(w.data);
        }
        free(f.buf);
    }
}

/* Every kernel the CPU runs against the reference kernel at the sizes the
 * layouts make awkward: M = 0 (nothing written), 1 (gemv), 2..9, 17, 33
 * (tiles and their tails); N around the 8 / 16 lane panels and the 4 / 8
 * panel passes; K = 4 (one group), not a multiple of 8, 16 or 32 (the last
 * chunk of 8 groups partial), and 0 (the epilogue of zero sums). C has
 * padding columns that must stay untouched, and A is allocated to its last
 * used float so that a read past K is caught by AddressSanitizer. */
static void test_nm24_gemm_sizes(dm_t *t)
{
    static const int64_t Ms[] = {0, 1, 2, 3, 5, 8, 9, 17, 33};
    static const int Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 129, 257};
    static const int Ks[] = {4, 8, 12, 20, 28, 36, 44, 100, 132, 0};
    int ran = 0;
    for (int ti = 0; ti < COUNT(sparse_types); ti++) {
        const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
        for (int ci = 0; ci < 40; ci++) {
            int64_t M = Ms[ci % COUNT(Ms)];
            int N = Ns[(ci * 7 + ti) % COUNT(Ns)], K = Ks[(ci * 3 + ti) % COUNT(Ks)];
            int ldc = N + 3;
            float *W = dm_test_rows(N, K, (uint64_t)(ci * 31 + ti));
            file f;
            file_quantize(&f, ty, W, N, K);
            /* A: M rows of K floats, exactly (the last row ends the allocation) */
            float *A = dm_test_rows(M, K, (uint64_t)(ci * 17 + 5));
            float *bias = dm_test_rows(1, N, 3);
            float *want = NULL;
            for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
                if (!isa_runs(isa)) continue;
                dm_wmat w = pack_for(ty, (dm_isa)isa, &f, N, K);
                size_t nw = dm_wmat_work_size(&w, M);
                void *work = nw ? dm_alloc(nw) : NULL;
                float *C = malloc((size_t)(M * ldc + 1) * sizeof *C);
                for (int64_t j = 0; j < M * ldc + 1; j++) C[j] = SENT;
                dm_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = &w, .bias = ci % 3 ? bias : NULL,
                             .act = ci % 2 ? DM_ACT_RELU : DM_ACT_NONE, .C = C, .ldc = ldc, .work = work};
                dm_wmat_gemm(&g);
                int stray = 0;
                for (int64_t i = 0; i < M; i++)
                    for (int j = N; j < ldc; j++) stray += C[i * ldc + j] != SENT;
                stray += C[M * ldc] != SENT;
                CHECK(t, stray == 0, "%s/%s M=%lld N=%d K=%d: %d writes outside C", ty->name, dm_isa_name(w.kern->isa),
                      (long long)M, N, K, stray);
                if (!want) {
                    want = C;  /* the reference (isa ref comes first) */
                } else {
                    double e = dm_test_relerr(C, want, M * ldc);
                    CHECK(t, e <= 2e-5, "%s/%s M=%lld N=%d K=%d: relerr %.3g against the reference", ty->name,
                          dm_isa_name(w.kern->isa), (long long)M, N, K, e);
                    free(C);
                    ran++;
                }
                dm_free(work);
                dm_free(w.data);
            }
            free(want);
            free(W);
            free(A);
            free(bias);
            free(f.buf);
        }
    }
#if DM_HAVE_X86
    /* every optimized kernel of these types ran where the CPU has its ISA */
    if (isa_runs(DM_ISA_AVX2)) CHECK(t, ran >= 3 * 40, "only %d optimized runs", ran);
#endif
}

/* The packed form of each ISA gives the file layout back byte for byte at
 * sizes where panels, chunks and idx bytes end part-way (K/8 odd, N tails). */
static void test_nm24_pack_roundtrip(dm_t *t)
{
    static const int sizes[][2] = {{1, 4}, {9, 12}, {17, 20}, {16, 132}, {33, 36}, {3, 260}};
    for (int ti = 0; ti < COUNT(sparse_types); ti++)
        for (int isa = DM_ISA_REF; isa < DM_ISA_COUNT; isa++) {
            const dm_wtype *ty = &dm_wtypes[sparse_types[ti]];
            if (!isa_runs(isa)) continue;
            for (int s = 0; s < COUNT(sizes); s++) {
                int N = sizes[s][0], K = sizes[s][1];
                float *W = dm_test_rows(N, K, (uint64_t)(s + 77));
                file f, g;
                file_quantize(&f, ty, W, N, K);
                g.buf = calloc(1, dm_wtype_file_bytes(ty, N, K, 0) + 64);
                dm_wtype_split(ty, N, K, 0, g.buf, g.part);
                dm_wmat w = pack_for(ty, (dm_isa)isa, &f, N, K);
                dm_wmat_unpack(&w, g.part);
                for (int j = 0; j < ty->n_parts; j++)
                    CHECK(t, !memcmp(f.part[j], g.part[j], dm_wtype_part_bytes(ty, j, N, K, 0)),
                          "%s/%s N=%d K=%d: part %d not given back", ty->name, dm_isa_name(w.kern->isa), N, K, j);
                dm_free(w.data);
                free(W);
                free(f.buf);
                free(g.buf);
            }
        }
}

void suite_wt_nm24(dm_t *t)
{
    DM_RUN(t, test_nm24_prune_known);
    DM_RUN(t, test_nm24_idx_layout);
    DM_RUN(t, test_nm24_idempotent);
    DM_RUN(t, test_nm24_gemm_known);
    DM_RUN(t, test_nm24_gemm_sizes);
    DM_RUN(t, test_nm24_pack_roundtrip);
}
