/* checkpoint.c - the whole training state in one safetensors file:
 *   tensors   every parameter (model names), optim.m.NAME and optim.v.NAME
 *   metadata  deepmoe.checkpoint "1", deepmoe.config (model), deepmoe.step,
 *             deepmoe.blob (the caller's state, hex), deepmoe.crc32 (CRC-32 of
 *             the data section, hex)
 * Written through dm_st_write (temp file, fsync, rename). Loading checks the
 * CRC, the model config and every tensor before touching the trainer. */
#include "train/trainer.h"
#include "io/model_io.h"
#include "nn/config_fields.h"
#include "io/safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define NAME_MAX_CK (DM_NAME_MAX + 16)

/* The metadata the CRC also covers, so that an edited step or caller state is refused too. */
static uLong crc_meta(uLong crc, const char *cfg, const char *step, const char *blob)
{
    crc = crc32(crc, (const Bytef *)cfg, (uInt)strlen(cfg));
    crc = crc32(crc, (const Bytef *)step, (uInt)strlen(step));
    return crc32(crc, (const Bytef *)blob, (uInt)strlen(blob));
}

/* zlib takes at most 4 GiB a call (uInt). */
static uLong crc_bytes(uLong crc, const void *data, size_t bytes)
{
    const unsigned char *p = data;
    while (bytes) {
        uInt chunk = bytes > (1u << 30) ? (1u << 30) : (uInt)bytes;
        crc = crc32(crc, p, chunk);
        p += chunk;
        bytes -= chunk;
    }
    return crc;
}

/* files are little-endian; so is every host deepmoe builds on (dm_host_is_le is checked at save) */
static uLong crc_floats(uLong crc, const float *x, int64_t n) { return crc_bytes(crc, x, (size_t)n * 4); }

static int decode_blob(const char *hex, void *blob, size_t cap, size_t *len);

dm_status dm_trainer_save(const dm_trainer *t, const char *path, const void *blob, size_t blob_len, dm_error *err)
{
    const dm_model *m = t->m;
    if (!dm_host_is_le()) return dm_fail(err, DM_ERR_UNSUPPORTED, "%s: checkpoints need a little-endian host", path);
    int n = m->n_tensors;
    dm_st_out *o = calloc((size_t)3 * n, sizeof *o);
    char (*names)[NAME_MAX_CK] = calloc((size_t)2 * n, sizeof *names);
    char *cfg = dm_config_to_json(&m->cfg);
    char *hex = malloc(2 * blob_len + 1);
    if (!o || !names || !cfg || !hex) {
        free(o); free(names); free(cfg); free(hex);
        return dm_fail(err, DM_ERR_NOMEM, "%s: out of memory", path);
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int part = 0; part < 3; part++)
        for (int i = 0; i < n; i++) {
            const dm_tensor_desc *d = &m->tensors[i];
            dm_st_out *x = &o[part * n + i];
            const float *base = part == 0 ? m->params : part == 1 ? t->adam_m : t->adam_v;
            if (part) {
                snprintf(names[(part - 1) * n + i], NAME_MAX_CK, "optim.%s.%s", part == 1 ? "m" : "v", d->name);
                x->name = names[(part - 1) * n + i];
            } else {
                x->name = d->name;
            }
            x->ndim = d->ndim;
            x->shape[0] = d->shape[0];
            x->shape[1] = d->shape[1];
            x->data = base + d->offset;
            crc = crc_floats(crc, x->data, d->numel);
        }
    for (size_t i = 0; i < blob_len; i++) sprintf(hex + 2 * i, "%02x", ((const unsigned char *)blob)[i]);
    hex[2 * blob_len] = 0;
    char step[32], crcs[16];
    snprintf(step, sizeof step, "%" PRId64, t->step);
    crc = crc_meta(crc, cfg, step, hex);
    snprintf(crcs, sizeof crcs, "%08lx", (unsigned long)crc);
    const char *meta[] = {"deepmoe.checkpoint", "1", DM_CONFIG_KEY, cfg, "deepmoe.step", step,
                          "deepmoe.blob", hex, "deepmoe.crc32", crcs};
    dm_status st = dm_st_write(path, o, 3 * n, meta, 5, err);
    free(o); free(names); free(cfg); free(hex);
    return st;
}

/* The metadata of an opened checkpoint. */
typedef struct ck_meta { const char *cfg, *step, *hex; } ck_meta;

/* Opens a checkpoint and checks its CRC before any field of it is used. */
static dm_status ck_open(const char *path, dm_st_file *f, ck_meta *cm, dm_error *err)
{
    dm_status st = dm_st_open(path, f, err);
    if (st) return st;
    const char *kind = dm_st_meta(f, "deepmoe.checkpoint"), *crcs = dm_st_meta(f, "deepmoe.crc32");
    cm->cfg = dm_st_meta(f, DM_CONFIG_KEY);
    cm->step = dm_st_meta(f, "deepmoe.step");
    cm->hex = dm_st_meta(f, "deepmoe.blob");
    if (!kind || !cm->cfg || !cm->step || !cm->hex || !crcs) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: not a deepmoe checkpoint (metadata missing)", path);
    } else if (strcmp(kind, "1")) {
        st = dm_fail(err, DM_ERR_UNSUPPORTED, "%s: checkpoint format \"%.16s\" is not 1 (a newer deepmoe?)", path, kind);
    } else {
        /* in file order, which is the order they were written and summed in */
        uLong crc = crc32(0L, Z_NULL, 0);
        for (int i = 0; i < f->n_tensors; i++)
            crc = crc_bytes(crc, f->tensors[i].data, (size_t)(f->tensors[i].end - f->tensors[i].begin));
        crc = crc_meta(crc, cm->cfg, cm->step, cm->hex);
        char want[16];
        snprintf(want, sizeof want, "%08lx", (unsigned long)crc);
        if (strcmp(want, crcs))
            st = dm_fail(err, DM_ERR_FORMAT, "%s: checksum mismatch (stored %.16s, data %s): the checkpoint is corrupt",
                         path, crcs, want);
    }
    if (st) dm_st_close(f);
    return st;
}

dm_status dm_trainer_load(dm_trainer *t, const char *path, void *blob, size_t blob_cap, size_t *blob_len, dm_error *err)
{
    dm_model *m = t->m;
    dm_st_file f;
    ck_meta cm;
    dm_status st = ck_open(path, &f, &cm, err);
    if (st) return st;
    const char *cfgs = cm.cfg, *steps = cm.step, *hex = cm.hex;
    dm_config c;
    dm_error e2;
    int diff;
    if ((st = dm_config_from_json(cfgs, &c, path, err))) goto done;
    if (dm_config_validate(&c, &e2)) {
        st = dm_fail(err, DM_ERR_SHAPE, "%s: checkpoint is for a different model (its config: %s)", path, e2.msg);
        goto done;
    }
    if ((diff = dm_config_diff(&c, &m->cfg)) >= 0) {
        const dm_config_field *f = &dm_config_fields[diff];
        char in_file[64], in_model[64];
        st = dm_fail(err, DM_ERR_SHAPE, "%s: checkpoint is for a different model: %s is %s in the checkpoint, "
                     "%s in this model", path, f->key, dm_config_field_str(&c, f, in_file, sizeof in_file),
                     dm_config_field_str(&m->cfg, f, in_model, sizeof in_model));
        goto done;
    }
    char *end;
    long long step = strtoll(steps, &end, 10);
    if (*end || end == steps || step < 0) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: bad step \"%s\"", path, steps);
        goto done;
    }
    size_t hl = strlen(hex);
    if (hl % 2 || hl / 2 > blob_cap || strspn(hex, "0123456789abcdef") != hl) {
        st = dm_fail(err, DM_ERR_FORMAT, "%s: bad caller state (%zu hex digits for at most %zu bytes)", path, hl, blob_cap);
        goto done;
    }
    /* every tensor present with its shape, F32, before anything is overwritten */
    int n = m->n_tensors;
    for (int part = 0; part < 3 && !st; part++)
        for (int i = 0; i < n && !st; i++) {
            const dm_tensor_desc *d = &m->tensors[i];
            char name[NAME_MAX_CK];
            snprintf(name, sizeof name, "%s%s", part == 0 ? "" : part == 1 ? "optim.m." : "optim.v.", d->name);
            const dm_st_tensor *x = dm_st_find(&f, name);
            if (!x || x->dtype != DM_DT_F32 || x->numel != d->numel)
                st = dm_fail(err, DM_ERR_FORMAT, "%s: tensor %s missing or of the wrong type or size", path, name);
        }
    if (st) goto done;
    for (int part = 0; part < 3 && !st; part++)
        for (int i = 0; i < n && !st; i++) {
            const dm_tensor_desc *d = &m->tensors[i];
            char name[NAME_MAX_CK];
            snprintf(name, sizeof name, "%s%s", part == 0 ? "" : part == 1 ? "optim.m." : "optim.v.", d->name);
            float *dst = (part == 0 ? m->params : part == 1 ? t->adam_m : t->adam_v) + d->offset;
            st = dm_st_read_f32(&f, dm_st_find(&f, name), dst, err);
        }
    if (st) goto done;
    t->step = step;
    decode_blob(hex, blob, blob_cap, blob_len);  /* checked above */
    dm_tr_sync(t);
done:
    dm_st_close(&f);
    return st;
}

/* Decodes the hex caller state; -1 if malformed or too long. */
static int decode_blob(const char *hex, void *blob, size_t cap, size_t *len)
{
    size_t hl = strlen(hex);
    if (hl % 2 || hl / 2 > cap || strspn(hex, "0123456789abcdef") != hl) return -1;
    for (size_t i = 0; i < hl / 2; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        ((unsigned char *)blob)[i] = (unsigned char)v;
    }
    if (len) *len = hl / 2;
    return 0;
}

dm_status dm_checkpoint_blob(const char *path, void *blob, size_t blob_cap, size_t *blob_len, dm_error *err)
{
    dm_st_file f;
    ck_meta cm;
    dm_status st = ck_open(path, &f, &cm, err);
    if (st) return st;
    if (decode_blob(cm.hex, blob, blob_cap, blob_len))
        st = dm_fail(err, DM_ERR_FORMAT, "%s: bad caller state in the checkpoint (%zu hex digits for at most %zu bytes)",
                     path, strlen(cm.hex), blob_cap);
    dm_st_close(&f);
    return st;
}
