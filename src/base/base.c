/* base.c - error values, aligned memory, RNG, half-float conversion, atomic files. */
#define _DEFAULT_SOURCE 1   /* madvise */
#include "base/base.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- errors */

int dm_version(int *major, int *minor, int *patch)
{
    if (major) *major = DM_VERSION_MAJOR;
    if (minor) *minor = DM_VERSION_MINOR;
    if (patch) *patch = DM_VERSION_PATCH;
    return DM_VERSION_NUMBER;
}

const char *dm_version_string(void) { return DM_VERSION; }

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
        [DM_ERR_DIVERGED] = "training diverged",
        [DM_ERR_COMM] = "distributed communication failed",
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

dm_status dm_check_struct_size(size_t got, size_t want, const char *type, const char *init, dm_error *err)
{
    if (got == want) return DM_OK;
    if (got == 0)
        return dm_fail(err, DM_ERR_ARG, "%s is not initialised (struct_size 0): call %s first", type, init);
    return dm_fail(err, DM_ERR_ARG, "%s.struct_size is %zu, but this library's %s is %zu bytes: call %s first "
                   "(or the program was built against another deepmoe.h)", type, got, type, want, init);
}

/* ---------------------------------------------------------------- memory */

/* Buffers of 4 MiB and more (weights, gradients, moments, activations) are
 * 2 MiB aligned and asked to be backed by transparent huge pages: a page
 * fault then brings in 2 MiB, not 4 KiB. Where faults are dear (measured on
 * this project's virtual machines: 12 us per 4 KiB page, first touch at
 * 0.34 GB/s against 11.9 GB/s with huge pages) this is the cost of every
 * buffer's first use, and of every re-use of memory that ZeRO releases. */
#define DM_HUGE_MIN ((size_t)4 << 20)
#define DM_HUGE_PAGE ((size_t)2 << 20)

void *dm_alloc(size_t bytes)
{
    if (bytes == 0) bytes = DM_ALIGN;
    size_t align = bytes >= DM_HUGE_MIN ? DM_HUGE_PAGE : DM_ALIGN;
    size_t rounded = (bytes + align - 1) / align * align;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(align, rounded);
#ifdef MADV_HUGEPAGE
    if (p && align == DM_HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
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

void *dm_alloc_array(size_t n, size_t size)
{
    size_t bytes;
    return dm_mul_size(n, size, &bytes) == 0 ? dm_alloc(bytes) : NULL;
}

void *dm_alloc_array2(size_t a, size_t b, size_t size)
{
    size_t n;
    return dm_mul_size(a, b, &n) == 0 ? dm_alloc_array(n, size) : NULL;
}

int dm_growbuf_reserve(dm_growbuf *b, size_t need)
{
    if (need > b->max) return -1;
    if (need <= b->cap && b->p) return 0;
    size_t cap = b->cap ? b->cap : (size_t)1 << 16;
    while (cap < need && cap <= SIZE_MAX / 2) cap *= 2;
    if (cap > b->max) cap = b->max;
    if (cap < need) cap = need;
    void *p = dm_alloc(cap);
    if (!p) return -1;
    if (b->p && b->cap) memcpy(p, b->p, b->cap);
    dm_free(b->p);
    b->p = p;
    b->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------- name index */

/* qsort has no context argument in C11: the table reaches the comparator here,
 * per thread, for the length of one sort. */
static _Thread_local struct { const void *table; dm_name_fn name; } sort_ctx;

static int cmp_rows(const void *a, const void *b)
{
    return strcmp(sort_ctx.name(sort_ctx.table, *(const int *)a), sort_ctx.name(sort_ctx.table, *(const int *)b));
}

int *dm_name_index(const void *table, int n, dm_name_fn name)
{
    int *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) return NULL;
    for (int i = 0; i < n; i++) order[i] = i;
    sort_ctx.table = table, sort_ctx.name = name;
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_rows);
    sort_ctx.table = NULL, sort_ctx.name = NULL;
    return order;
}

int dm_name_lookup(const void *table, const int *order, int n, dm_name_fn name, const char *key)
{
    int lo = 0, hi = n - 1;
    while (order && key && lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name(table, order[mid]), key);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
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

/* The directory that holds path: "." when it has no slash, "/" for "/name". */
static void dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* Removes the temp files of path that killed writers left behind: names of
 * exactly the form BASE.tmp.PID, regular files only, PID not our own and no
 * such process on this host (kill(PID, 0) fails with ESRCH; EPERM means it
 * lives). Best effort: every error is ignored. A live writer of the same path
 * in another PID namespace or on another host would look dead, but two
 * writers of one final path race anyway (the last rename wins). */
static void remove_stale_temps(const char *path)
{
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl == 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        const char *name = e->d_name, *p = name + bl + 5;
        if (strncmp(name, base, bl) || strncmp(name + bl, ".tmp.", 5)) continue;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 9 || p[digits] || *p == '0') continue;
        long pid = strtol(p, NULL, 10);
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            unlinkat(dirfd(d), name, 0);
    }
    closedir(d);
}

dm_status dm_atomic_open(dm_atomic_file *f, const char *path, dm_error *err)
{
    memset(f, 0, sizeof *f);
    if (strlen(path) + 32 > sizeof f->tmp)
        return dm_fail(err, DM_ERR_ARG, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%d", path, (int)getpid());
    remove_stale_temps(path);
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp)
        return dm_fail(err, DM_ERR_IO, "%s: cannot create %s: %s", path, f->tmp, strerror(errno));
    return DM_OK;
}

/* fsync of the directory that holds path, so that a rename into it survives a
 * crash. Filesystems that cannot sync a directory (EINVAL, ENOTSUP) and a
 * directory we may write but not read (EACCES) are let through: there is no
 * stronger guarantee to be had there. */
dm_status dm_sync_parent(const char *path, dm_error *err)
{
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EACCES) return DM_OK;
        return dm_fail(err, DM_ERR_IO, "%s: written, but its directory %s cannot be opened to sync it: %s", path, dir,
                       strerror(errno));
    }
    int r = fsync(fd), e = errno;
    close(fd);
    if (r != 0 && e != EINVAL && e != ENOTSUP && e != EOPNOTSUPP)
        return dm_fail(err, DM_ERR_IO, "%s: written, but syncing its directory %s failed: %s", path, dir, strerror(e));
    return DM_OK;
}

dm_status dm_atomic_commit(dm_atomic_file *f, dm_error *err)
{
    int bad = ferror(f->fp), e = EIO;
    if (!bad && (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)) { bad = 1; e = errno; }
    if (fclose(f->fp) != 0 && !bad) { bad = 1; e = errno; }
    f->fp = NULL;
    if (bad) {
        remove(f->tmp);
        return dm_fail(err, DM_ERR_IO, "%s: write failed: %s", f->path, strerror(e));
    }
    /* the data is on disk before the new name points at it ... */
    if (rename(f->tmp, f->path) != 0) {
        e = errno;
        remove(f->tmp);
        return dm_fail(err, DM_ERR_IO, "%s: rename from %s failed: %s", f->path, f->tmp, strerror(e));
    }
    /* ... and the name is on disk before we report success */
    return dm_sync_parent(f->path, err);
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
