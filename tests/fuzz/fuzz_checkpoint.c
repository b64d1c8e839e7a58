/* fuzz_checkpoint.c - dm_trainer_load (and dm_checkpoint_blob) on any bytes,
 * into a trainer of a tiny fixed model (D=8 E=4 k=2 H=8, one layer: what
 * `deepmoe train --data synthetic:dim=8,regimes=4 --dim 8 --experts 4 --top-k 2
 * --hidden 8` makes); a checkpoint that loads then trains one step.
 *
 * The CRC-32 a checkpoint stores would refuse nearly every mutated input, so
 * before loading, the harness recomputes it the way checkpoint.c does and
 * writes it over the stored value (when it appears verbatim in the header):
 * the decoding behind the checksum gets fuzzed too. Keep fix_crc in step with
 * dm_trainer_load's recipe. */
#include "fuzz.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "train/run_state.h"

#include <zlib.h>

#define ROWS 4
#define BLOB_CAP 4096

static uLong crc_str(uLong crc, const char *s) { return crc32(crc, (const Bytef *)s, (uInt)strlen(s)); }

/* Recomputes the checksum of the checkpoint at path (whose bytes buf[size]
 * are) and writes it into the file fd. */
static void fix_crc(const uint8_t *buf, size_t size, int fd, const char *path)
{
    dm_st_file f;
    dm_error err;
    if (dm_st_open(path, &f, &err) != DM_OK) return;
    const char *cfg = dm_st_meta(&f, DM_CONFIG_KEY), *step = dm_st_meta(&f, "deepmoe.step");
    const char *blob = dm_st_meta(&f, "deepmoe.blob"), *stored = dm_st_meta(&f, "deepmoe.crc32");
    if (cfg && step && blob && stored && strlen(stored) == 8) {
        uLong crc = crc32(0L, Z_NULL, 0);
        for (int i = 0; i < f.n_tensors; i++)
            crc = crc32(crc, f.tensors[i].data, (uInt)(f.tensors[i].end - f.tensors[i].begin));
        crc = crc_str(crc_str(crc_str(crc, cfg), step), blob);
        char want[16];
        snprintf(want, sizeof want, "%08lx", (unsigned long)crc);
        /* the value of "deepmoe.crc32": the key, optional spaces, ':', spaces, '"', 8 digits, '"' */
        const char *key = "\"deepmoe.crc32\"";
        const uint8_t *k = memmem(buf, size, key, strlen(key));
        size_t at = k ? (size_t)(k - buf) + strlen(key) : size;
        while (at < size && (buf[at] == ' ' || buf[at] == ':')) at++;
        if (at + 10 <= size && buf[at] == '"' && buf[at + 9] == '"' && !memcmp(buf + at + 1, stored, 8)) {
            FUZZ_CHECK(pwrite(fd, want, 8, (off_t)(at + 1)) == 8);
        }
    }
    dm_st_close(&f);
}

static void train_one_step(dm_trainer *t)
{
    float x[ROWS * 8], y[ROWS * 8];
    for (int i = 0; i < ROWS * 8; i++) x[i] = 0.1f * (float)(i % 7) - 0.3f, y[i] = 0.05f * (float)(i % 5);
    dm_step_stats st;
    dm_error err;
    dm_train_step(t, x, y, NULL, ROWS, &st, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dm_config c;
    dm_config_default(&c);
    c.dim = 8, c.n_experts = 4, c.top_k = 2, c.hidden = 8;
    dm_train_config tc;
    dm_train_config_default(&tc);
    tc.total_steps = 10;
    dm_model *m = NULL;
    dm_trainer *t = NULL;
    dm_error err;
    FUZZ_CHECK(dm_config_validate(&c, &err) == DM_OK && dm_model_create(&c, NULL, &m, &err) == DM_OK);
    dm_model_init_random(m, 1);
    FUZZ_CHECK(dm_trainer_create(m, &tc, NULL, &t, &err) == DM_OK);

    char path[32];
    int fd = fuzz_memfile(data, size, path);
    fix_crc(data, size, fd, path);

    /* what `deepmoe train --resume` does: the run state first, then the tensors */
    static unsigned char blob[BLOB_CAP];
    size_t blob_len = 0;
    dm_run_state rs;
    if (dm_checkpoint_blob(path, blob, sizeof blob, &blob_len, &err) == DM_OK &&
        dm_run_state_from_json((const char *)blob, blob_len, path, &rs, &err) == DM_OK) {
        /* a state that reads back writes the same state again */
        char *js = dm_run_state_to_json(&rs);
        dm_run_state rs2;
        FUZZ_CHECK(js && dm_run_state_from_json(js, strlen(js), path, &rs2, &err) == DM_OK);
        char *js2 = dm_run_state_to_json(&rs2);
        FUZZ_CHECK(js2 && !strcmp(js, js2));
        free(js);
        free(js2);
        /* and its settings make a trainer, when they fit this model */
        dm_trainer *t2 = NULL;
        rs.tc.grad_accum = 1;   /* ROWS rows make one micro-batch */
        if (dm_trainer_create(m, &rs.tc, NULL, &t2, &err) == DM_OK) {
            dm_trainer_free(t);
            t = t2;
        }
    }
    if (dm_trainer_load(t, path, blob, sizeof blob, &blob_len, &err) == DM_OK) train_one_step(t);
    close(fd);
    dm_trainer_free(t);
    dm_model_free(m);
    return 0;
}
