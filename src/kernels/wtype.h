/* wtype.h - weight types: how a weight matrix is stored, packed and multiplied.
 *
 * Every GEMM operand the model owns is a dm_wmat: a weight W [N, K] (nn.Linear
 * layout) in the packed form of one weight type on one ISA. The type is a
 * trait entry (dm_wtype: name, file dtype, block size, reference quantize /
 * dequantize, and per ISA its pack/unpack/GEMM kernels, dm_wkern); call sites
 * never look at the bytes, they hand the dm_wmat to dm_wmat_gemm.
 *
 * Adding a weight type (bf16, f16, q8, nm24) touches only: its entry in
 * dm_wtypes (wtype.c) and its id here, its kernels (a dm_wkern per ISA,
 * beside the f32 ones in kernels_<isa>.c) with the reference twin in
 * kernels_ref.c, and its tests (tests/test_kernels.c: round trip and GEMM
 * against the reference at awkward sizes). docs/architecture.md keeps the list. */
#ifndef DM_WTYPE_H
#define DM_WTYPE_H

#include "kernels/kernels.h"

typedef enum { DM_WT_F32 = 0, DM_WT_COUNT } dm_wtype_id;

/* One weight type's kernels on one ISA. Sizes are in bytes (data) and floats
 * (scales); a type without scales has scales_size NULL. */
struct dm_wkern {
    dm_isa isa;
    size_t (*pack_size)(int N, int K);
    size_t (*scales_size)(int N, int K);
    /* W [N, K] fp32 -> packed data (+ scales) */
    void (*pack)(const float *W, int N, int K, void *data, float *scales);
    /* W [N, K] -> the packed form of W^T [K, N] (the input-gradient GEMM dX = dY W
     * uses it); tmp: N * K floats of scratch for types that transpose first */
    void (*pack_t)(const float *W, int N, int K, void *data, float *scales, float *tmp);
    /* packed -> fp32 W [N, K]: exact for f32, the dequantized values otherwise */
    void (*unpack)(const void *data, const float *scales, int N, int K, float *W);
    void (*gemm)(const dm_gemm *g);
};

struct dm_wtype {
    dm_wtype_id id;
    const char *name;         /* "f32": the name --type and the file metadata use */
    const char *st_dtype;     /* safetensors dtype of the stored values ("F32") */
    int block;                /* values per block along K */
    size_t block_bytes;       /* bytes per block in the file */
    const char *scale_suffix; /* file tensor "<weight name><suffix>" holding the scales (NULL: none) */
    /* reference (de)quantization of W [N, K] to the file layout and back */
    void (*quantize_ref)(const float *W, int N, int K, void *q, float *scales);
    void (*dequantize_ref)(const void *q, const float *scales, int N, int K, float *W);
    const dm_wkern *kern[DM_ISA_COUNT];  /* by ISA; NULL: the reference entry */
};

extern const dm_wtype dm_wtypes[DM_WT_COUNT];

/* The type called name, or NULL. */
const dm_wtype *dm_wtype_by_name(const char *name);
/* The type's kernels for isa (the reference kernels when it has none for it). */
const dm_wkern *dm_wtype_kern(const dm_wtype *t, dm_isa isa);

/* Bytes of data and floats of scales a [N, K] matrix takes packed. */
size_t dm_wmat_data_size(const dm_wtype *t, dm_isa isa, int N, int K);
size_t dm_wmat_scales_size(const dm_wtype *t, dm_isa isa, int N, int K);
/* Points w at storage for a [N, K] matrix of type t packed for isa. */
void dm_wmat_bind(dm_wmat *w, const dm_wtype *t, dm_isa isa, int N, int K, void *data, float *scales);
/* w = pack(W), W [w->N, w->K]. */
void dm_wmat_pack(dm_wmat *w, const float *W);
/* w = pack(W^T) from W [w->K, w->N]; tmp: N * K floats. */
void dm_wmat_pack_t(dm_wmat *w, const float *W, float *tmp);
/* W [w->N, w->K] = unpack(w). */
void dm_wmat_unpack(const dm_wmat *w, float *W);

static inline void dm_wmat_gemm(const dm_gemm *g) { g->B->kern->gemm(g); }

/* f32 kernels of each ISA (defined beside that ISA's other kernels). */
extern const dm_wkern dm_wkern_f32_ref;
extern const dm_wkern dm_wkern_f32_avx2;
extern const dm_wkern dm_wkern_f32_avx512;

#endif
