/* wtype.h - weight types: how a weight matrix is stored, packed and multiplied.
 *
 * Every GEMM operand the model owns is a dm_wmat: a weight W [N, K] (nn.Linear
 * layout) in the packed form of one weight type on one ISA. The type is a
 * trait entry (dm_wtype): its name, its file layout (the parts below), its
 * reference quantize / dequantize, and per ISA its pack/unpack/GEMM kernels
 * (dm_wkern). Call sites never look at the bytes: they hand the dm_wmat to
 * dm_wmat_gemm.
 *
 * The file layout of a type is up to DM_WPARTS row-major parts, each
 * [N, cols(K, group)] elements of one safetensors dtype, stored as the tensor
 * "<weight name><suffix>" (suffix "" is the weight's own name):
 *   f32        "" F32 [N, K]
 *   bf16       "" BF16 [N, K]                     (round to nearest even)
 *   f16        "" F16 [N, K]                      (IEEE half, round to nearest even)
 *   q8         "" I8 [N, K], ".scale" F32 [N, ceil(K / G)]  (G = group, 0: one per row)
 *   nm24       "" F32 [N, K/2] kept values, ".idx" U8 [N, ceil(K/8)]
 *   nm24:bf16  "" BF16 [N, K/2], ".idx" U8
 *   nm24:q8    "" I8 [N, K/2], ".idx" U8, ".scale" F32 [N, 1]
 * q8 (and nm24:q8 over a row's kept values): per row n and group g,
 * amax = max |w|, scale = amax / 127, q = clamp(rint(w / scale), -127, 127);
 * amax 0 gives scale 0 and q 0. nm24: per group of 4 along K the 2 largest |w|
 * are kept (ties: the lower index), i0 < i1 their positions in 0..3; kept values
 * v[2g] = W[4g + i0], v[2g + 1] = W[4g + i1]; idx byte j of a row holds group 2j
 * in its low nibble and group 2j + 1 in its high nibble, nibble = i0 | i1 << 2
 * (an absent last group's nibble is 0).
 * (a file stores a one-column part past the first as [N]). Because every part
 * is row-major with whole rows, stacking two matrices'
 * rows (swiglu's [W1; W3]) is stacking each part's rows.
 *
 * The GEMM each type computes (the reference kernel defines it; optimized
 * twins may differ by float rounding only):
 *   f32, f16, nm24*   C = epilogue(A · deq(W)^T): fp32 activations
 *   bf16              A rounded to bf16 (nearest even) first, products summed in fp32
 *   q8                per row of A: amax = max |a|, sa = amax / 127, qa = clamp(rint(a * (127 / amax)), ±127)
 *                     (a zero row gives 0; rint of NaN, from 0 * Inf, gives 0), per group g of K:
 *                     isum = sum qa * q (exact integers),
 *                     C = epilogue(sum_g (float)isum_g * (sa * scale[n, g]))
 *
 * Adding a weight type touches only: its id here and entry in dm_wtypes
 * (wtype.c), its reference file (wt_<name>.c: quantize, dequantize and the
 * reference dm_wkern), its optimized kernels (wt_<name>_<isa>.c), and its tests
 * (tests/test_wt_*.c; tests/test_kernels.c's table, round-trip and GEMM tests
 * loop over every type and ISA). docs/architecture.md keeps the list. */
#ifndef DM_WTYPE_H
#define DM_WTYPE_H

#include "kernels/kernels.h"

typedef enum {
    DM_WT_F32 = 0,
    DM_WT_BF16,
    DM_WT_F16,
    DM_WT_Q8,
    DM_WT_NM24,       /* 2:4 sparse, f32 values */
    DM_WT_NM24_BF16,  /* 2:4 sparse, bf16 values */
    DM_WT_NM24_Q8,    /* 2:4 sparse, int8 values with one scale per row */
    DM_WT_COUNT
} dm_wtype_id;

#define DM_WPARTS 3

typedef struct dm_wpart {
    const char *suffix;                 /* "" for the weight's own tensor; ".scale", ".idx" */
    const char *dtype;                  /* safetensors dtype: "F32", "BF16", "F16", "I8", "U8" */
    int elem;                           /* bytes per element */
    int64_t (*cols)(int K, int group);  /* elements per row of W */
} dm_wpart;

/* One weight type's kernels on one ISA. */
struct dm_wkern {
    dm_isa isa;
    unsigned needs;  /* DM_CPU_* it uses beyond the ISA (dm_wtype_kern skips it on a CPU without them) */
    size_t (*pack_size)(int N, int K, int group);      /* bytes of packed data */
    size_t (*work_size)(int64_t M, int K);             /* bytes of dm_gemm.work for M rows; NULL: none */
    /* the file layout (part[j] as dm_wtype.parts[j] describes) -> packed data */
    void (*pack)(const void *const part[], int N, int K, int group, void *data);
    /* Training's dX = dY W (f32; bf16 on AVX-512): W [N, K] fp32 -> the
     * packed form of the type's quantization of W^T [K, N]; only W's rows
     * [r0, r1) (r0 even; the whole pack is r0 = 0, r1 = N), written where the
     * whole pack has them, the rest of data untouched; tmp: N * K floats of
     * scratch. NULL: dm_wmat_pack_t transposes, quantizes and packs. */
    void (*pack_t)(const float *W, int N, int K, int r0, int r1, void *data, float *tmp);
    /* Optional: W [N, K] fp32 -> the packed form of its quantization, what
     * quantize_ref then pack would give (training's re-pack in bf16). */
    void (*quant_pack)(const float *W, int N, int K, int group, void *data);
    /* 0, or G: the pack of N rows is its panels of G rows in row order, each
     * pack_size(G, K) bytes, so that G-aligned rows pack on their own
     * (dm_wmat_quant_pack_rows). */
    int panel_rows;
    /* packed data -> the file layout, exactly what pack was given */
    void (*unpack)(const void *data, int N, int K, int group, void *const part[]);
    void (*gemm)(const dm_gemm *g);
    /* Optional (NULL: the kernel quantizes in gemm only). Bytes of one row of
     * K values as quant lays it out for group, and M rows of A [M, lda] into
     * q (row i at q + i * ld, ld >= quant_ld(K, group), 64-byte aligned) with
     * their scales sa [M]: what gemm would compute from each row itself, for
     * dm_gemm.aq. */
    size_t (*quant_ld)(int K, int group);
    void (*quant)(int K, int group, const float *A, int64_t lda, int64_t M, unsigned char *q, size_t ld, float *sa);
};

struct dm_wtype {
    dm_wtype_id id;
    const char *name;        /* "f32", "q8", "nm24:bf16": the name --type and the file metadata use */
    int n_parts;
    dm_wpart parts[DM_WPARTS];
    int k_multiple;          /* K must be a multiple of this (nm24: 4) */
    int grouped;             /* takes a group size along K (q8: 0 or 32, 64, 128) */
    int sparse;              /* 2:4 along K: quantize_ref prunes by magnitude */
    /* reference (de)quantization of W [N, K] to the file layout and back */
    void (*quantize_ref)(const float *W, int N, int K, int group, void *const part[]);
    void (*dequantize_ref)(const void *const part[], int N, int K, int group, float *W);
    const dm_wkern *kern[DM_ISA_COUNT];  /* by ISA; NULL: the next lower ISA's */
};

extern const dm_wtype dm_wtypes[DM_WT_COUNT];

/* The type called name, or NULL. */
const dm_wtype *dm_wtype_by_name(const char *name);
/* "f32, bf16, ...": every type's name, for messages. */
const char *dm_wtype_names(void);
/* The type's kernels for isa: its own, or the highest lower ISA's, skipping
 * kernels whose features the CPU lacks (the reference kernels at worst). */
const dm_wkern *dm_wtype_kern(const dm_wtype *t, dm_isa isa);

/* Bytes of part j of the file layout for [N, K]; and of all parts. */
size_t dm_wtype_part_bytes(const dm_wtype *t, int j, int N, int K, int group);
size_t dm_wtype_file_bytes(const dm_wtype *t, int N, int K, int group);
/* Points part[j] into one buffer of dm_wtype_file_bytes (parts in order, each
 * starting on a 64-byte boundary inside it: file_bytes counts that padding). */
void dm_wtype_split(const dm_wtype *t, int N, int K, int group, void *buf, void *part[DM_WPARTS]);

/* A weight W [N, K] of type t packed for one ISA. */
size_t dm_wmat_data_size(const dm_wtype *t, dm_isa isa, int N, int K, int group);
void dm_wmat_bind(dm_wmat *w, const dm_wtype *t, dm_isa isa, int N, int K, int group, void *data);
/* w = pack(part): the file layout. */
void dm_wmat_pack(dm_wmat *w, const void *const part[]);
/* w = pack(W) for f32 (W [w->N, w->K]). */
void dm_wmat_pack_f32(dm_wmat *w, const float *W);
/* w = pack(quantize(W)): W [w->N, w->K] fp32 in w's type (f32: as is);
 * tmp: dm_wtype_file_bytes of scratch (untouched where the kernel has quant_pack). */
void dm_wmat_quant_pack(dm_wmat *w, const float *W, void *tmp);
/* w = pack(quantize(W^T)) from W [w->K, w->N] fp32; tmp: N * K floats plus
 * dm_wtype_file_bytes(w) of scratch (N * K floats where the kernel has pack_t). */
void dm_wmat_pack_t(dm_wmat *w, const float *W, float *tmp);
/* Training's fused AdamW + re-pack (W's rows a slice at a time, still in
 * cache): the row granularity at which w = quant_pack(W) (fwd: W [N, K]) and
 * wt = pack_t(W) (W [wt->K, wt->N]) of the same W can be built a slice of
 * W's rows at a time, or 0 where the kernels cannot. */
int dm_wmat_rows_step(const dm_wmat *fwd, const dm_wmat *wt);
/* Rows [r0, r1) of W only, into their place in w's pack: r0 a multiple of
 * dm_wmat_rows_step, r1 too or the last row. Whole-pack results, bit for bit. */
void dm_wmat_quant_pack_rows(dm_wmat *w, const float *W, int r0, int r1);
void dm_wmat_pack_t_rows(dm_wmat *w, const float *W, int r0, int r1, float *tmp);
/* Scratch bytes dm_wmat_pack_t and dm_wmat_quant_pack may use for w. */
size_t dm_wmat_pack_tmp(const dm_wmat *w);
/* part = the file layout of w (exact). */
void dm_wmat_unpack(const dm_wmat *w, void *const part[]);
/* Bytes of dm_gemm.work a GEMM on w over M rows needs (0: none). */
size_t dm_wmat_work_size(const dm_wmat *w, int64_t M);

static inline void dm_wmat_gemm(const dm_gemm *g) { g->B->kern->gemm(g); }

/* The reference epilogue of one output, in the order dm_gemm documents:
 * s * (act(acc + bias) + r). Every reference kernel ends with it. */
static inline float dm_epilogue_ref(float acc, float bias, dm_act act, float r, float s)
{
    float v = acc + bias;
    if (act == DM_ACT_RELU && v < 0.0f) v = 0.0f;  /* `v < 0` keeps NaN, as PyTorch's relu */
    v = v + r;
    return s * v;
}

/* Kernels of each type and ISA (defined in wt_<type>[_<isa>].c, f32 beside the
 * other kernels of its ISA in kernels_<isa>.c). */
extern const dm_wkern dm_wkern_f32_ref, dm_wkern_f32_avx2, dm_wkern_f32_avx512;
extern const dm_wkern dm_wkern_bf16_ref, dm_wkern_bf16_avx2, dm_wkern_bf16_avx512;
extern const dm_wkern dm_wkern_f16_ref, dm_wkern_f16_avx2, dm_wkern_f16_avx512;
extern const dm_wkern dm_wkern_q8_ref, dm_wkern_q8_avx2, dm_wkern_q8_avx512;
extern const dm_wkern dm_wkern_nm24_ref, dm_wkern_nm24_avx2, dm_wkern_nm24_avx512;
extern const dm_wkern dm_wkern_nm24_bf16_ref, dm_wkern_nm24_bf16_avx2, dm_wkern_nm24_bf16_avx512;
extern const dm_wkern dm_wkern_nm24_q8_ref, dm_wkern_nm24_q8_avx2, dm_wkern_nm24_q8_avx512;

/* The reference (de)quantizers, for the table. */
void dm_wt_bf16_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_bf16_dequantize(const void *const part[], int N, int K, int group, float *W);
void dm_wt_f16_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_f16_dequantize(const void *const part[], int N, int K, int group, float *W);
void dm_wt_q8_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_q8_dequantize(const void *const part[], int N, int K, int group, float *W);
/* nm24*: magnitude pruning per group of 4 along K (the 2 largest |w| kept; ties
 * keep the lower index), then the kept values in the value type */
void dm_wt_nm24_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_nm24_dequantize(const void *const part[], int N, int K, int group, float *W);
void dm_wt_nm24_bf16_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_nm24_bf16_dequantize(const void *const part[], int N, int K, int group, float *W);
void dm_wt_nm24_q8_quantize(const float *W, int N, int K, int group, void *const part[]);
void dm_wt_nm24_q8_dequantize(const void *const part[], int N, int K, int group, float *W);

#endif
