/* wt_q8.h - what the optimized q8 kernels (wt_q8_avx2.c, wt_q8_avx512.c)
 * share: the geometry of the packed form, its pack and unpack (scalar: q8
 * weights are packed once at load), and the layout of the quantized
 * activations in dm_gemm.work. Everything is static inline, compiled into
 * each kernel file with its own ISA flags.
 *
 * Packed form of W [N, K] (int8 q, fp32 scale per row or per group of G):
 * ceil(N / nr) panels of nr outputs, each panel
 *   values  [kq][nr][4] int8   quad j holds, for each output lane, the 4
 *                              consecutive k positions 4j .. 4j+3 (zero past N
 *                              and in the padding below); lane order may be
 *                              permuted (perm[slot] = the output in that slot)
 *   comp    [nb][nr] int32     -128 * sum of the block's q (only if with_comp:
 *                              the u8 x s8 offset trick of VNNI)
 *   scale   [nb][nr] fp32      the block's scale (0 past N)
 * K is cut into nb scale blocks of bk values: the group, or for one scale per
 * row (no group, or one at least K long) blocks of at most KBLK (an int32
 * bound, below; K = 0 has one empty block of scale 0). A block starts on a
 * quad: block b holds k positions [b gp, b gp + round4(len_b)), gp =
 * round4(bk), so a group size that is not a multiple of 4 gets zero padding
 * after each group (kpos maps k to its position). The activations are laid
 * out with the same kpos, zero in the padding.
 *
 * int32 exactness: a block's true sum isum = sum qa q has |isum| <= 127 * 127
 * * bk < 2^31 for bk <= KBLK = 131072. Both kernels accumulate with wrapping
 * int32 adds (vpdpbusd, vpaddd), so partial sums may wrap (the VNNI u8 operand
 * qa + 128 reaches 255 * 127 * K, past 2^31 for K > 66311) and the finished
 * block sum is still exact. Rows with K > KBLK and one scale get several
 * blocks with the same scale; their sums are added in fp32 (each block sum
 * exact, converted to float once), where the reference adds all of K in
 * int64 and converts once: a difference of float rounding only. A group
 * shorter than K but longer than 133143 values (so K > 133143 too) could
 * wrap; groups are 32, 64 or 128 (wtype.h). */
#ifndef DM_WT_Q8_H
#define DM_WT_Q8_H

#include "kernels/wtype.h"

#include <string.h>

enum { Q8_KBLK = 131072 };

typedef struct q8_geom {
    int K, group;
    int bk;         /* k per scale block */
    int gp;         /* positions per block: round4(bk) */
    int nb;         /* scale blocks (at least 1) */
    int kp;         /* k positions in all: a multiple of 4 */
    int nr;         /* outputs per panel */
    int with_comp;  /* the comp part is present */
    int per_group;  /* the blocks are the file's groups (else all use the row's one scale) */
    size_t wbytes;  /* values of one panel: kp * nr */
    size_t panel;   /* bytes of one panel */
} q8_geom;

static inline int q8_round4(int x) { return (x + 3) / 4 * 4; }

static inline q8_geom q8_geometry(int N, int K, int group, int nr, int with_comp)
{
    (void)N;
    q8_geom q = {.K = K > 0 ? K : 0, .group = group, .nr = nr, .with_comp = with_comp};
    if (group > 0 && group < q.K) {  /* a group of the whole row is one scale per row */
        q.bk = group;
        q.nb = (q.K + group - 1) / group;
        q.per_group = 1;
    } else {
        q.bk = q.K <= Q8_KBLK ? (q.K > 0 ? q.K : 1) : Q8_KBLK;
        q.nb = q.K <= Q8_KBLK ? 1 : (q.K + Q8_KBLK - 1) / Q8_KBLK;
    }
    q.gp = q8_round4(q.bk);
    q.kp = q.K > 0 ? (q.nb - 1) * q.gp + q8_round4(q.K - (q.nb - 1) * q.bk) : 0;
    q.wbytes = (size_t)q.kp * (size_t)nr;
    q.panel = q.wbytes + (size_t)q.nb * (size_t)nr * (with_comp ? 8 : 4);
    return q;
}

static inline int q8_panels(int N, int nr) { return N > 0 ? (N + nr - 1) / nr : 0; }
static inline size_t q8_pack_bytes(int N, int K, int group, int nr, int with_comp)
{
    return (size_t)q8_panels(N, nr) * q8_geometry(N, K, group, nr, with_comp).panel;
}

/* The position of k in a packed row (and in a quantized activation row). */
static inline int64_t q8_kpos(const q8_geom *q, int k) { return (int64_t)(k / q->bk) * q->gp + k % q->bk; }
/* Quads of block b: [*j0, *j1). */
static inline void q8_block_quads(const q8_geom *q, int b, int *j0, int *j1)
{
    *j0 = b * (q->gp / 4);
    *j1 = b == q->nb - 1 ? q->kp / 4 : *j0 + q->gp / 4;
}
/* The file's scale column of block b (one per row when ungrouped). */
static inline int q8_file_group(const q8_geom *q, int b) { return q->per_group ? b : 0; }
/* scale columns of the file: ceil(K / G), 1 when ungrouped (and 0 for grouped K = 0) */
static inline int q8_file_groups(const q8_geom *q) { return q->group > 0 ? (q->K + q->group - 1) / q->group : 1; }

static inline const int32_t *q8_comp(const q8_geom *q, const unsigned char *panel)
{
    return (const int32_t *)(const void *)(panel + q->wbytes);
}
static inline const float *q8_scales(const q8_geom *q, const unsigned char *panel)
{
    return (const float *)(const void *)(panel + q->wbytes + (q->with_comp ? (size_t)q->nb * q->nr * 4 : 0));
}

/* part (the file layout: I8 [N, K], F32 [N, groups]) -> the packed form.
 * perm[slot]: the panel output held in lane slot (NULL: identity). */
static inline void q8_pack_panels(const void *const part[], int N, int K, int group, int nr, int with_comp,
                                  const int *perm, void *data)
{
    const int8_t *qv = part[0];
    const float *sc = part[1];
    q8_geom q = q8_geometry(N, K, group, nr, with_comp);
    int ng = q8_file_groups(&q);
    unsigned char *dst = data;
    memset(dst, 0, q8_pack_bytes(N, K, group, nr, with_comp));
    for (int p = 0; p < q8_panels(N, nr); p++) {
        unsigned char *panel = dst + (size_t)p * q.panel;
        int32_t *comp = (int32_t *)(void *)(panel + q.wbytes);
        float *scale = (float *)(void *)(panel + q.wbytes + (with_comp ? (size_t)q.nb * nr * 4 : 0));
        for (int slot = 0; slot < nr; slot++) {
            int j = perm ? perm[slot] : slot, n = p * nr + j;
            if (n >= N) continue;
            const int8_t *row = qv + (int64_t)n * q.K;
            for (int k = 0; k < q.K; k++) {
                int64_t pos = q8_kpos(&q, k);
                panel[(pos / 4 * nr + slot) * 4 + pos % 4] = (unsigned char)row[k];
            }
            for (int b = 0; b < q.nb; b++) {
                int32_t cs = 0;
                for (int k = b * q.bk; k < q.K && k < (b + 1) * q.bk; k++) cs += row[k];
                if (with_comp) comp[b * nr + j] = -128 * cs;
                scale[b * nr + j] = q8_file_group(&q, b) < ng ? sc[(int64_t)n * ng + q8_file_group(&q, b)] : 0.0f;
            }
        }
    }
}

/* The packed form -> the file layout, exactly what pack was given. */
static inline void q8_unpack_panels(const void *data, int N, int K, int group, int nr, int with_comp,
                                    const int *perm, void *const part[])
{
    int8_t *qv = part[0];
    float *sc = part[1];
    q8_geom q = q8_geometry(N, K, group, nr, with_comp);
    int ng = q8_file_groups(&q);
    const unsigned char *src = data;
    for (int p = 0; p < q8_panels(N, nr); p++) {
        const unsigned char *panel = src + (size_t)p * q.panel;
        const float *scale = q8_scales(&q, panel);
        for (int slot = 0; slot < nr; slot++) {
            int j = perm ? perm[slot] : slot, n = p * nr + j;
            if (n >= N) continue;
            int8_t *row = qv + (int64_t)n * q.K;
            for (int k = 0; k < q.K; k++) {
                int64_t pos = q8_kpos(&q, k);
                row[k] = (int8_t)panel[(pos / 4 * nr + slot) * 4 + pos % 4];
            }
            for (int g = 0; g < ng; g++) sc[(int64_t)n * ng + g] = scale[g * nr + j];
        }
    }
}

/* ---------------------------------------------------------------- activations in work
 *
 * The rows of a call are quantized in chunks: each chunk's rows [rows][ld]
 * (elem bytes per value, kpos layout, zero padded), then their scales sa
 * [rows] fp32. A chunk (about Q8_CHUNK_BYTES) stays in L2 while every panel
 * sweeps it. work_size knows K but not the group, so the chunk is sized for
 * the plain layout (kp = round4(K)) plus room for one row of the widest
 * (group 1: kp = 4K); a group that pads its blocks gets fewer rows per chunk. */
enum { Q8_CHUNK_BYTES = 256 * 1024 };

static inline size_t q8_row_ld(int kp, int elem) { return ((size_t)(kp > 0 ? kp : 1) * elem + 63) / 64 * 64; }
static inline size_t q8_ld_plain(int K, int elem) { return q8_row_ld(q8_round4(K > 0 ? K : 0), elem); }
static inline size_t q8_ld_widest(int K, int elem) { return q8_row_ld(4 * (K > 0 ? K : 0), elem); }

/* Rows per chunk of the plain layout: a multiple of mr (at least mr), at most M. */
static inline int64_t q8_chunk_rows(int64_t M, int K, int elem, int mr)
{
    int64_t c = (int64_t)(Q8_CHUNK_BYTES / q8_ld_plain(K, elem)) / mr * mr;
    if (c < mr) c = mr;
    return M < c ? M : c;
}

/* Bytes for the rows of a chunk (any group), before the scales. */
static inline size_t q8_chunk_bytes(int64_t M, int K, int elem, int mr)
{
    return (size_t)q8_chunk_rows(M, K, elem, mr) * q8_ld_plain(K, elem) + q8_ld_widest(K, elem) -
           q8_ld_plain(K, elem);
}

static inline size_t q8_work_bytes(int64_t M, int K, int elem, int mr)
{
    if (M <= 0) return 0;
    return q8_chunk_bytes(M, K, elem, mr) + (size_t)q8_chunk_rows(M, K, elem, mr) * sizeof(float) + 64;
}

/* Where a call's chunks live in work for geometry q: rows per chunk, their
 * stride, the rows and the scales. */
typedef struct q8_work {
    int64_t rows;
    size_t ld;
    unsigned char *qa;
    float *sa;
} q8_work;

static inline q8_work q8_work_layout(const q8_geom *q, int64_t M, int elem, int mr, void *work)
{
    q8_work w = {.rows = q8_chunk_rows(M, q->K, elem, mr), .ld = q8_row_ld(q->kp, elem), .qa = work};
    size_t avail = q8_chunk_bytes(M, q->K, elem, mr);
    if (w.ld != q8_ld_plain(q->K, elem) && (int64_t)(avail / w.ld) < w.rows) w.rows = (int64_t)(avail / w.ld);
    w.sa = (float *)(void *)(w.qa + (size_t)w.rows * w.ld);
    return w;
}

/* Spreads a row quantized contiguously (K values of elem bytes) to the kpos
 * layout, zero in the padding: in place, back to front. */
static inline void q8_spread_row(const q8_geom *q, unsigned char *row, int elem)
{
    if (q->gp == q->bk) {  /* positions are k: only the tail to zero */
        memset(row + (size_t)q->K * elem, 0, (size_t)(q->kp - q->K) * elem);
        return;
    }
    for (int b = q->nb - 1; b >= 0; b--) {
        int len = q->K - b * q->bk < q->bk ? q->K - b * q->bk : q->bk;
        size_t to = (size_t)b * q->gp * elem, end = b == q->nb - 1 ? (size_t)q->kp * elem : to + (size_t)q->gp * elem;
        memmove(row + to, row + (size_t)b * q->bk * elem, (size_t)len * elem);
        memset(row + to + (size_t)len * elem, 0, end - to - (size_t)len * elem);
    }
}

#endif
