/* fuzz_safetensors.c - dm_st_open on any bytes, then every float tensor read
 * with dm_st_read_f32. Property: each tensor is found again by its name. */
#include "fuzz.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[32];
    int fd = fuzz_memfile(data, size, path);
    dm_st_file f;
    dm_error err;
    if (dm_st_open(path, &f, &err) == DM_OK) {
        for (int i = 0; i < f.n_tensors; i++) {
            const dm_st_tensor *t = &f.tensors[i];
            FUZZ_CHECK(dm_st_find(&f, t->name) != NULL);
            if (!dm_dtypes[t->dtype].to_f32) continue;
            float *buf = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
            FUZZ_CHECK(buf != NULL);
            dm_st_read_f32(&f, t, buf, &err);
            free(buf);
        }
        for (int i = 0; i < f.n_meta; i++) FUZZ_CHECK(dm_st_meta(&f, f.meta_keys[i]) != NULL);
    }
    dm_st_close(&f);
    close(fd);
    return 0;
}
