/* base.c - error values, aligned memory, RNG, half-float conversion, atomic files. */
#include "base/base.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors */

const char *dm_status_name(dm_status s)
{
    static const char *const names[] = {
        [DM_OK] = "ok",
        [DM_ERR_ARG] = "invalid argument",
        [DM_ERR_IO] = "I/O error",
        [DM_ERR_FORMAT] = "bad format",
        [DM_ERR_SHAPE] = "shape mismatch",
        [DM_ERR_UNSUPPORTED] = "unsupported",
        [DM_ERR_NONFINITE] = "non-finite value",
        [DM_ERR_NOMEM] = "out of memory",
    };
    if ((unsigned)s < sizeof names / sizeof names[0] && names[s]) return names[s];
    return "unknown status";
}

dm_status dm_fail(dm_error *err, dm_status code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        for (char *p = err->msg; *p; p++)  /* one line, always */
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return code;
}

/* ---------------------------------------------------------------- memory */

void *dm_alloc(size_t bytes)
{
    if (bytes == 0) bytes = DM_ALIGN;
    size_t rounded = (bytes + DM_ALIGN - 1) / DM_ALIGN * DM_ALIGN;
    if (rounded < bytes) return NULL;
    return aligned_alloc(DM_ALIGN, rounded);
}

void *dm_calloc(size_t bytes)
{
    void *p = dm_alloc(bytes);
    if (p) memset(p, 0, bytes ? bytes : DM_ALIGN);
    return p;
}

void dm_free(void *p) { free(p); }

int dm_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* ---------------------------------------------------------------- RNG */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void dm_rng_seed(dm_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t dm_rng_u64(dm_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

float dm_rng_uniform(dm_rng *r, float lo, float hi)
{
    float u = (float)(dm_rng_u64(r) >> 40) * (1.0f / 16777216.0f);  /* 24 bits in [0,1) */
    return lo + (hi - lo) * u;
}

float dm_rng_normal(dm_rng *r)
{
    double u1 = ((dm_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);  /* (0,1] */
    double u2 = (dm_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---------------------------------------------------------------- half floats */

static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

float dm_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t dm_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float dm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));     /* Inf/NaN */
    if (exp == 0) {                                                          /* zero/subnormal */
        float v = (float)man * (1.0f / 16777216.0f);                         /* man * 2^-24 */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t dm_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);                  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                 /* overflow -> Inf */
    if (a < 0x38800000u) {                                                   /* subnormal */
        float v = bits_f32(a) * 16777216.0f;                                 /* in units of 2^-24 */
        return (uint16_t)(sign | (uint32_t)nearbyintf(v));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}

/* ---------------------------------------------------------------- atomic files */

dm_status dm_atomic_open(dm_atomic_file *f, const char *path, dm_error *err)
{
    memset(f, 0, sizeof *f);
    if (strlen(path) + 32 > sizeof f->tmp)
        return dm_fail(err, DM_ERR_ARG, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%d", path, (int)getpid());
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp)
        return dm_fail(err, DM_ERR_IO, "%s: cannot create %s: %s", path, f->tmp, strerror(errno));
    return DM_OK;
}

dm_status dm_atomic_commit(dm_atomic_file *f, dm_error *err)
{
    int bad = ferror(f->fp) || fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0;
    int e = errno;
    if (fclose(f->fp) != 0 && !bad) { bad = 1; e = errno; }
    f->fp = NULL;
    if (bad) {
        remove(f->tmp);
        return dm_fail(err, DM_ERR_IO, "%s: write failed: %s", f->path, strerror(e));
    }
    if (rename(f->tmp, f->path) != 0) {
        e = errno;
        remove(f->tmp);
        return dm_fail(err, DM_ERR_IO, "%s: rename from %s failed: %s", f->path, f->tmp, strerror(e));
    }
    return DM_OK;
}

void dm_atomic_abort(dm_atomic_file *f)
{
    if (f->fp) fclose(f->fp);
    f->fp = NULL;
    if (f->tmp[0]) remove(f->tmp);
}

/* ---------------------------------------------------------------- byte order */

int dm_host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

int dm_write_f32le(FILE *fp, const float *x, size_t n)
{
    if (dm_host_is_le()) return n == 0 || fwrite(x, 4, n, fp) == n ? 0 : -1;
    unsigned char buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof buf / 4 && i < n; k++, i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            for (int b = 0; b < 4; b++) buf[4 * k + b] = (unsigned char)(u >> (8 * b));
        }
        if (fwrite(buf, 4, k, fp) != k) return -1;
    }
    return 0;
}
