/* wt_nm24.h - the packed layout the SIMD kernels of the 2:4 sparse types share
 * (nm24, nm24:bf16, nm24:q8; wt_nm24_avx2.c with NR = 8, wt_nm24_avx512.c with
 * NR = 16), and its portable pack / unpack.
 *
 * W [N, K] (file layout: wtype.h) is cut into ceil(N / NR) panels of NR
 * outputs (lane j of panel p is output n = p*NR + j; lanes past N are zero).
 * With G = K / 4 groups per row, cut into chunks of 8 groups (32 k), a panel is
 *
 *   [scale: NR f32]                                  nm24:q8 only: the rows' scales
 *   chunk c = 0 .. ceil(G / 8) - 1:
 *     idx:  NR u32    lane j = bytes 4c .. 4c+3 of row n's ".idx" (little endian,
 *                     bytes past the row's ceil(K/8) zero): so group 8c + s has
 *                     its nibble i0 | i1 << 2 at bits 4s .. 4s+3
 *     the chunk's groups g = 8c .. min(8c + 8, G) - 1, each as
 *       f32   v0: NR f32, v1: NR f32                 (v0 = v[2g], v1 = v[2g + 1])
 *       bf16  NR u32, lane j = v0 | v1 << 16          (bf16 bits)
 *       q8    v0: NR i8, v1: NR i8
 *
 * So one group of one panel is NR * (8, 4, 2) bytes of values plus NR / 2
 * bytes of indices: the file's bytes, transposed so that a kernel reads each
 * panel front to back. The kernels shift the chunk's index vector right by 4
 * per group and use its low bits as the permute index that fetches each
 * lane's kept activations. The last chunk holds only the groups that exist
 * (the kernels never read activations past K). */
#ifndef DM_WT_NM24_H
#define DM_WT_NM24_H

#include "kernels/wtype.h"

#include <string.h>

/* The value type of an nm24 variant (as in wt_ref.c): 0 f32, 1 bf16, 2 q8. */
enum { NM24_F32 = 0, NM24_BF16 = 1, NM24_Q8 = 2 };

/* Bytes of one group's values for one panel lane. */
static inline int nm24_vbytes(int vt) { return vt == NM24_F32 ? 8 : vt == NM24_BF16 ? 4 : 2; }

static inline int nm24_chunks(int K) { return (K / 4 + 7) / 8; }

/* Bytes of the scale header of a panel of nr lanes. */
static inline size_t nm24_hdr_bytes(int nr, int vt) { return vt == NM24_Q8 ? (size_t)nr * 4 : 0; }

/* Bytes of one chunk of a full 8 groups (the stride between chunks). */
static inline size_t nm24_chunk_bytes(int nr, int vt) { return (size_t)nr * 4 + 8 * (size_t)nr * nm24_vbytes(vt); }

/* Bytes of one panel: header, the chunks' indices, every group's values. */
static inline size_t nm24_panel_bytes(int nr, int vt, int K)
{
    int G = K > 0 ? K / 4 : 0;
    return nm24_hdr_bytes(nr, vt) + (size_t)nm24_chunks(K > 0 ? K : 0) * nr * 4 + (size_t)G * nr * nm24_vbytes(vt);
}

/* Never 0 (K = 0 still has outputs to write: the kernels then read no panel
 * bytes, but their pointers stay inside an allocation). */
static inline size_t nm24_pack_size(int nr, int vt, int N, int K)
{
    int np = N > 0 ? (N + nr - 1) / nr : 0;
    size_t n = (size_t)np * nm24_panel_bytes(nr, vt, K);
    return n ? n : 64;
}

/* Where group g's values start inside a panel (g's chunk, after its indices). */
static inline size_t nm24_group_off(int nr, int vt, int g)
{
    return nm24_hdr_bytes(nr, vt) + (size_t)(g / 8) * nm24_chunk_bytes(nr, vt) + (size_t)nr * 4 +
           (size_t)(g % 8) * nr * nm24_vbytes(vt);
}

static inline size_t nm24_idx_off(int nr, int vt, int c)
{
    return nm24_hdr_bytes(nr, vt) + (size_t)c * nm24_chunk_bytes(nr, vt);
}

/* The file layout (part[0] values, part[1] idx, part[2] q8 scales) -> panels. */
static inline void nm24_pack(int nr, int vt, const void *const part[], int N, int K, unsigned char *data)
{
    int G = K / 4, nc = nm24_chunks(K), ib = (K + 7) / 8;
    size_t pb = nm24_panel_bytes(nr, vt, K);
    memset(data, 0, nm24_pack_size(nr, vt, N, K));
    for (int n = 0; n < N; n++) {
        unsigned char *p = data + (size_t)(n / nr) * pb;
        int j = n % nr;
        const uint8_t *idx = (const uint8_t *)part[1] + (size_t)n * ib;
        if (vt == NM24_Q8) memcpy(p + (size_t)j * 4, (const float *)part[2] + n, 4);
        for (int c = 0; c < nc; c++)
            for (int b = 0; b < 4 && 4 * c + b < ib; b++) p[nm24_idx_off(nr, vt, c) + (size_t)j * 4 + b] = idx[4 * c + b];
        for (int g = 0; g < G; g++) {
            unsigned char *v = p + nm24_group_off(nr, vt, g);
            size_t o = (size_t)n * (K / 2) + 2 * (size_t)g;
            if (vt == NM24_F32) {
                memcpy(v + (size_t)j * 4, (const float *)part[0] + o, 4);
                memcpy(v + (size_t)(nr + j) * 4, (const float *)part[0] + o + 1, 4);
            } else if (vt == NM24_BF16) {
                const uint16_t *q = (const uint16_t *)part[0] + o;
                uint32_t d = (uint32_t)q[0] | (uint32_t)q[1] << 16;
                memcpy(v + (size_t)j * 4, &d, 4);
            } else {
                const int8_t *q = (const int8_t *)part[0] + o;
                memcpy(v + j, q, 1);
                memcpy(v + nr + j, q + 1, 1);
            }
        }
    }
}

/* Panels -> the file layout, exactly the bytes nm24_pack was given. */
static inline void nm24_unpack(int nr, int vt, const unsigned char *data, int N, int K, void *const part[])
{
    int G = K / 4, nc = nm24_chunks(K), ib = (K + 7) / 8;
    size_t pb = nm24_panel_bytes(nr, vt, K);
    for (int n = 0; n < N; n++) {
        const unsigned char *p = data + (size_t)(n / nr) * pb;
        int j = n % nr;
        uint8_t *idx = (uint8_t *)part[1] + (size_t)n * ib;
        if (vt == NM24_Q8) memcpy((float *)part[2] + n, p + (size_t)j * 4, 4);
        for (int c = 0; c < nc; c++)
            for (int b = 0; b < 4 && 4 * c + b < ib; b++) idx[4 * c + b] = p[nm24_idx_off(nr, vt, c) + (size_t)j * 4 + b];
        for (int g = 0; g < G; g++) {
            const unsigned char *v = p + nm24_group_off(nr, vt, g);
            size_t o = (size_t)n * (K / 2) + 2 * (size_t)g;
            if (vt == NM24_F32) {
                memcpy((float *)part[0] + o, v + (size_t)j * 4, 4);
                memcpy((float *)part[0] + o + 1, v + (size_t)(nr + j) * 4, 4);
            } else if (vt == NM24_BF16) {
                uint32_t d;
                memcpy(&d, v + (size_t)j * 4, 4);
                uint16_t *q = (uint16_t *)part[0] + o;
                q[0] = (uint16_t)(d & 0xFFFF);
                q[1] = (uint16_t)(d >> 16);
            } else {
                int8_t *q = (int8_t *)part[0] + o;
                memcpy(q, v + j, 1);
                memcpy(q + 1, v + nr + j, 1);
            }
        }
    }
}

#endif
