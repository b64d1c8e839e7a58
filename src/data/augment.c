/* augment.c - random shifts and horizontal flips of square images (IDX data),
 * drawn from (seed, step) so that a resumed run sees the same batches. */
#include "data/data.h"

#include <string.h>

void dm_augment_images(float *x, int64_t n, int side, int max_shift, int flip, float background, uint64_t seed,
                       int64_t step)
{
    dm_augment_images_at(x, 0, n, side, max_shift, flip, background, seed, step);
}

void dm_augment_images_at(float *x, int64_t row0, int64_t n, int side, int max_shift, int flip, float background,
                          uint64_t seed, int64_t step)
{
    if (max_shift <= 0 && !flip) return;
    dm_rng r;
    dm_rng_seed(&r, seed * 0xd1342543de82ef95ull + (uint64_t)step * 0x9e3779b97f4a7c15ull + 7);
    int64_t skip = row0 * ((max_shift > 0 ? 2 : 0) + (flip ? 1 : 0));   /* the draws of the rows before row0 */
    for (int64_t i = 0; i < skip; i++) dm_rng_u64(&r);
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
    dm_augment_dropout_at(x, 0, n, p, seed, step);
}

void dm_augment_dropout_at(float *x, int64_t at, int64_t n, float p, uint64_t seed, int64_t step)
{
    if (!(p > 0) || p >= 1) return;
    dm_rng r;
    dm_rng_seed(&r, seed * 0x2545f4914f6cdd1dull + (uint64_t)step * 0x9e3779b97f4a7c15ull + 11);
    uint64_t cut = (uint64_t)((double)p * 4294967296.0);
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < at / 2; i++) dm_rng_u64(&r);   /* value j uses half j % 2 of draw j / 2 */
    uint64_t u = at % 2 ? dm_rng_u64(&r) : 0;
    for (int64_t j = at; j < at + n; j++) {
        if (j % 2 == 0) u = dm_rng_u64(&r);
        uint32_t h = j % 2 ? (uint32_t)(u >> 32) : (uint32_t)(u & 0xffffffffu);
        x[j - at] = h < cut ? 0.0f : x[j - at] * keep;
    }
}
