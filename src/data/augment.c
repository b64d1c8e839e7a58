/* augment.c - random shifts and horizontal flips of square images (IDX data),
 * drawn from (seed, step) so that a resumed run sees the same batches. */
#include "data/data.h"

#include <string.h>

void dm_augment_images(float *x, int64_t n, int side, int max_shift, int flip, float background, uint64_t seed,
                       int64_t step)
{
    if (max_shift <= 0 && !flip) return;
    dm_rng r;
    dm_rng_seed(&r, seed * 0xd1342543de82ef95ull + (uint64_t)step * 0x9e3779b97f4a7c15ull + 7);
    float img[64 * 64];
    if (side > 64) return;
    int span = 2 * max_shift + 1;
    for (int64_t i = 0; i < n; i++) {
        float *p = x + i * side * side;
        int dx = max_shift > 0 ? (int)(dm_rng_u64(&r) % (uint64_t)span) - max_shift : 0;
        int dy = max_shift > 0 ? (int)(dm_rng_u64(&r) % (uint64_t)span) - max_shift : 0;
        int fl = flip ? (int)(dm_rng_u64(&r) & 1) : 0;
        if (!dx && !dy && !fl) continue;
        memcpy(img, p, (size_t)side * side * sizeof *img);
        for (int yy = 0; yy < side; yy++)
            for (int xx = 0; xx < side; xx++) {
                int sx = xx - dx, sy = yy - dy;
                if (fl) sx = side - 1 - sx;
                /* outside the source image: background */
                p[yy * side + xx] = sx >= 0 && sx < side && sy >= 0 && sy < side ? img[sy * side + sx] : background;
            }
    }
}

void dm_augment_dropout(float *x, int64_t n, float p, uint64_t seed, int64_t step)
{
    if (!(p > 0) || p >= 1) return;
    dm_rng r;
    dm_rng_seed(&r, seed * 0x2545f4914f6cdd1dull + (uint64_t)step * 0x9e3779b97f4a7c15ull + 11);
    uint64_t cut = (uint64_t)((double)p * 4294967296.0);
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i += 2) {  /* two 32-bit draws per 64-bit number */
        uint64_t u = dm_rng_u64(&r);
        x[i] = (u & 0xffffffffu) < cut ? 0.0f : x[i] * keep;
        if (i + 1 < n) x[i + 1] = (u >> 32) < cut ? 0.0f : x[i + 1] * keep;
    }
}
