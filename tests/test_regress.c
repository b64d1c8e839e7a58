/* test_regress.c - the inputs that once triggered memory bugs
 * (tests/fuzz/regress/<target>/, made by tests/fuzz/make_regress.py), each
 * run through the library with the error it must give now.
 *
 * Several of the old bugs were allocations sized by a header's word (4 GB for
 * a 16-byte pipe, a 1024 x 4096 model for a 130-byte file): with overcommit
 * such an allocation succeeds and the error that follows reads the same. So
 * outside the sanitizers each call runs in a child process whose address
 * space is capped at what it has plus 512 MiB: the old code then fails with
 * "out of memory" (or dies) where the fixed code gives its format error.
 * Under ASan (which reserves terabytes of shadow) the cap is left off and the
 * sanitizer itself catches the overflows. */
#include "test.h"
#include "base/base.h"
#include "data/data.h"
#include "nn/model.h"
#include "serve/infer_codec.h"
#include "train/run_state.h"

#include <stdlib.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define REGRESS_DIR "tests/fuzz/regress"

/* The bytes of REGRESS_DIR/target/name (malloc'd), *n their count; NULL if missing. */
static unsigned char *read_input(const char *target, const char *name, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", REGRESS_DIR, target, name);
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    unsigned char *buf = malloc(1 << 16);
    *n = buf ? fread(buf, 1, 1 << 16, fp) : 0;
    fclose(fp);
    return buf;
}

typedef dm_status (*regress_fn)(const unsigned char *data, size_t n, dm_error *err);

/* Runs fn in a child with a capped address space; the status and message come
 * back through a pipe. A child that dies reports DM_ERR_IO "child died". */
static dm_status run_capped(regress_fn fn, const unsigned char *data, size_t n, dm_error *err)
{
    if (UNDER_ASAN) return fn(data, n, err);
    int p[2];
    if (pipe(p) != 0) return dm_fail(err, DM_ERR_IO, "pipe failed");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        long pages = 0;
        FILE *sf = fopen("/proc/self/statm", "r");
        if (sf && fscanf(sf, "%ld", &pages) != 1) pages = 0;
        if (sf) fclose(sf);
        rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)512 << 20);
        struct rlimit rl = {cap, cap};
        setrlimit(RLIMIT_AS, &rl);
        dm_error e = {0};
        e.code = fn(data, n, &e);
        ssize_t w = write(p[1], &e, sizeof e);
        _exit(w == (ssize_t)sizeof e ? 0 : 1);
    }
    close(p[1]);
    dm_error e = {0};
    ssize_t r = pid > 0 ? read(p[0], &e, sizeof e) : -1;
    close(p[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    if (r != (ssize_t)sizeof e) return dm_fail(err, DM_ERR_IO, "child died");
    *err = e;
    return e.code;
}

static void expect(dm_t *t, const char *target, const char *name, regress_fn fn, dm_status want, const char *text)
{
    size_t n = 0;
    unsigned char *data = read_input(target, name, &n);
    CHECK(t, data != NULL, "%s/%s/%s missing", REGRESS_DIR, target, name);
    if (!data) return;
    dm_error err = {0};
    dm_status s = run_capped(fn, data, n, &err);
    CHECK(t, s == want && strstr(err.msg, text), "%s/%s: got %s \"%s\", want %s \"%s\"", target, name,
          dm_status_name(s), err.msg, dm_status_name(want), text);
    free(data);
}

/* ---------------------------------------------------------------- the parsers, as the harnesses call them */

/* npy: first byte odd = through a pipe (a FIFO served by a child), else a regular file. */
static dm_status npy_input(const unsigned char *data, size_t n, dm_error *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/regress.npy", dm_test_tmpdir());
    unlink(path);
    pid_t pid = -1;
    if (data[0] & 1) {
        if (mkfifo(path, 0600) != 0) return dm_fail(err, DM_ERR_IO, "mkfifo failed");
        pid = fork();
        if (pid == 0) {
            signal(SIGPIPE, SIG_DFL);
            int fd = open(path, O_WRONLY);
            if (fd >= 0 && write(fd, data + 1, n - 1) < 0) _exit(1);
            _exit(0);
        }
    } else {
        dm_test_write_file("regress.npy", data + 1, n - 1);
    }
    dm_array a;
    dm_status s = dm_npy_read(path, &a, err);
    if (pid > 0) waitpid(pid, NULL, 0);
    dm_array_free(&a);
    unlink(path);
    return s;
}

static dm_status model_input(const unsigned char *data, size_t n, dm_error *err)
{
    const char *path = dm_test_write_file("regress.safetensors", data, n);
    dm_model *m = NULL;
    dm_status s = dm_model_load(path, NULL, &m, err);
    dm_model_free(m);
    return s;
}

static dm_status kserve_json_input(const unsigned char *data, size_t n, dm_error *err)
{
    dm_infer_request *req = calloc(1, sizeof *req);
    if (!req) return dm_fail(err, DM_ERR_NOMEM, "test: out of memory");
    dm_status s = dm_infer_parse((const char *)data, n, -1, req, err);
    dm_infer_request_free(req);
    free(req);
    return s;
}

/* idx: a 6-byte prefix of u16 LE lengths of the first three files, the fourth takes the rest. */
static dm_status idx_input(const unsigned char *data, size_t n, dm_error *err)
{
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/regress-idx", dm_test_tmpdir());
    mkdir(dir, 0700);
    size_t off = 6;
    for (int i = 0; i < 4; i++) {
        size_t len = i < 3 ? (size_t)(data[2 * i] | data[2 * i + 1] << 8) : n - off;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *fp = fopen(path, "wb");
        if (!fp || fwrite(data + off, 1, len, fp) != len) return dm_fail(err, DM_ERR_IO, "cannot write %s", path);
        fclose(fp);
        off += len;
    }
    char spec[700];
    snprintf(spec, sizeof spec, "mnist:%s", dir);
    dm_data d = {0};
    dm_status s = dm_data_load(spec, DM_TASK_CLASSIFY, 0, &d, err);
    dm_data_free(&d);
    return s;
}

/* ---------------------------------------------------------------- tests */

static void test_regress_npy_pipe(dm_t *t)
{
    expect(t, "npy", "pipe-size-wrap", npy_input, DM_ERR_FORMAT, "shape is too large");
    expect(t, "npy", "pipe-huge-shape", npy_input, DM_ERR_FORMAT, "data is 16 bytes, shape (1000000000,) needs 4000000000");
}

static void test_regress_model_bigger_than_file(dm_t *t)
{
    expect(t, "model", "config-bigger-than-file", model_input, DM_ERR_ARG, "1024 layers of");
    expect(t, "model", "config-128x128", model_input, DM_ERR_FORMAT, "cannot be this model");
    expect(t, "model", "layout-overflow", model_input, DM_ERR_ARG, "larger than the 2147483647 supported");
}

static void test_regress_kserve_json_shape(dm_t *t)
{
    expect(t, "kserve_json", "huge-shape", kserve_json_input, DM_ERR_FORMAT,
           "unexpected number of elements for input 'input': got 3, shape [1,4000000000] needs 4000000000");
}

/* Found by fuzz_kserve_json (10-minute run): a tensor with no elements but a
 * dim near 1e18 was accepted by the parser and refused by the response
 * builder (the two counted elements differently): its echo came back NULL. */
static void test_regress_kserve_zero_elements(dm_t *t)
{
    size_t n = 0;
    unsigned char *data = read_input("kserve_json", "zero-elements-huge-dim", &n);
    CHECK(t, data != NULL, "input missing");
    if (!data) return;
    dm_infer_request *req = calloc(1, sizeof *req);
    dm_error err = {0};
    CHECK_OK(t, dm_infer_parse((const char *)data, n, -1, req, &err), &err);
    CHECK(t, req->n_inputs == 1 && req->inputs[0].numel == 0, "parsed %d inputs", req->n_inputs);
    dm_infer_output o = {.name = "a", .datatype = "FP32", .ndims = req->inputs[0].ndims, .data = req->inputs[0].f32};
    memcpy(o.shape, req->inputs[0].shape, sizeof o.shape);
    size_t body_len = 0, header_len = 0;
    for (int binary = 0; binary < 2; binary++) {
        o.binary = binary;
        char *body = dm_infer_response("m", "1", "", &o, 1, &body_len, &header_len);
        CHECK(t, body && strstr(body, "[1000000001389287561,0]"), "response (binary %d): %s", binary, body ? body : "NULL");
        free(body);
    }
    dm_infer_request_free(req);
    free(req);
    free(data);
}

static void test_regress_idx_counts(dm_t *t)
{
    expect(t, "idx", "label-count-huge", idx_input, DM_ERR_FORMAT, "truncated: the label data has 2 of 900000000 bytes");
    expect(t, "idx", "image-count-huge", idx_input, DM_ERR_FORMAT, "truncated: the pixel data has 16 of");
}

/* dm_config_size counts what dm_model_create builds, without building it. */
static void test_regress_config_size_matches_model(dm_t *t)
{
    dm_config cs[6];
    for (int i = 0; i < 6; i++) {
        dm_config_default(&cs[i]);
        cs[i].dim = 12;
        cs[i].hidden = 10;
        cs[i].n_experts = 6;
    }
    cs[1].expert = DM_EXPERT_SWIGLU;
    cs[2].n_shared = 2, cs[2].shared_hidden = 7;
    cs[3].selection_bias = 1, cs[3].n_layers = 3;
    cs[4].in_dim = 20, cs[4].n_classes = 5, cs[4].n_layers = 2;
    cs[5].expert = DM_EXPERT_SWIGLU, cs[5].n_shared = 1, cs[5].in_dim = 9, cs[5].n_classes = 3, cs[5].selection_bias = 1;
    for (int i = 0; i < 6; i++) {
        dm_model *m = NULL;
        dm_error err;
        int64_t nt = -1, np = -1;
        CHECK_OK(t, dm_config_validate(&cs[i], &err), &err);   /* resolves the 0 = default widths */
        CHECK_OK(t, dm_config_size(&cs[i], &nt, &np, &err), &err);
        CHECK_OK(t, dm_model_create(&cs[i], NULL, &m, &err), &err);
        if (!m) continue;
        CHECK(t, nt == dm_model_n_tensors(m) && np == dm_model_param_count(m), "config %d: counted %lld/%lld, built %d/%lld",
              i, (long long)nt, (long long)np, dm_model_n_tensors(m), (long long)dm_model_param_count(m));
        dm_model_free(m);
    }
    /* the products, not each width alone: every width in range, the model not */
    dm_config c;
    dm_error err;
    dm_config_default(&c);
    c.dim = 1 << 15, c.hidden = 1 << 15, c.n_experts = 4096, c.n_layers = 1024;
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "parameters each are more than"),
          "too many parameters: %s", err.msg);
    dm_config_default(&c);
    c.dim = 4, c.hidden = 2, c.n_experts = 4096, c.n_layers = 1024;
    CHECK(t, dm_config_validate(&c, &err) == DM_ERR_ARG && strstr(err.msg, "tensors each are more than"),
          "too many tensors: %s", err.msg);
}

static void test_regress_growbuf(dm_t *t)
{
    dm_growbuf b = {.max = 100000};
    CHECK(t, dm_growbuf_reserve(&b, 10) == 0 && b.cap == 65536, "first reserve %zu", b.cap);
    memset(b.p, 7, 10);
    CHECK(t, dm_growbuf_reserve(&b, 70000) == 0 && b.cap == 100000, "capped at max: %zu", b.cap);
    CHECK(t, ((unsigned char *)b.p)[9] == 7, "contents kept");
    CHECK(t, dm_growbuf_reserve(&b, 100001) == -1 && b.cap == 100000, "past max refused");
    dm_free(b.p);
    size_t big;
    CHECK(t, dm_mul_size(SIZE_MAX / 2, 3, &big) == -1 && dm_alloc_array(SIZE_MAX / 2, 3) == NULL, "overflow refused");
}

/* The run state survives JSON bit for bit (a resumed run must be exact), and
 * reading refuses any field out of range, naming it. */
static void test_regress_run_state(dm_t *t)
{
    dm_run_state a = {.task = 1, .epoch = 7, .pos = 123456789012LL, .seed = 9007199254740993ull, .holdout = 0.25,
                      .shuffle = 1, .batch = 96, .aug_shift = 3, .aug_flip = 1, .aug_drop = 0.1f,
                      .checkpoint_every = 25, .log_every = 5, .eval_every = 0};
    dm_train_config_default(&a.tc);
    a.tc.lr = 3.0000001e-4f, a.tc.eps = 1.17549435e-38f, a.tc.total_steps = 1999999999, a.tc.warmup = 17;
    a.tc.balance = DM_BAL_SEED | DM_BAL_Z, a.tc.label_smoothing = 0.99999994f, a.tc.schedule = DM_SCHED_CONSTANT;
    a.tc.precision = DM_PREC_BF16;
    char *js = dm_run_state_to_json(&a);
    dm_run_state b;
    dm_error err = {0};
    CHECK(t, js != NULL, "to_json");
    if (!js) return;
    CHECK_OK(t, dm_run_state_from_json(js, strlen(js), "rs", &b, &err), &err);
    CHECK(t, b.task == a.task && b.epoch == a.epoch && b.pos == a.pos && b.seed == a.seed && b.holdout == a.holdout &&
          b.shuffle == a.shuffle &&
          b.batch == a.batch && b.aug_shift == a.aug_shift && b.aug_flip == a.aug_flip && b.aug_drop == a.aug_drop &&
          b.checkpoint_every == a.checkpoint_every && b.log_every == a.log_every && b.eval_every == a.eval_every,
          "run fields: %s", js);
    const dm_train_config *x = &a.tc, *y = &b.tc;
    CHECK(t, x->loss == y->loss && x->lr == y->lr && x->weight_decay == y->weight_decay && x->beta1 == y->beta1 &&
          x->beta2 == y->beta2 && x->eps == y->eps && x->warmup == y->warmup && x->schedule == y->schedule &&
          x->total_steps == y->total_steps && x->clip == y->clip && x->grad_accum == y->grad_accum &&
          x->balance == y->balance && x->coef_seed == y->coef_seed && x->coef_switch == y->coef_switch &&
          x->coef_z == y->coef_z && x->bias_update == y->bias_update && x->label_smoothing == y->label_smoothing &&
          x->dropout == y->dropout && x->precision == y->precision && y->precision == DM_PREC_BF16,
          "train config fields: %s", js);
    {   /* a version 3 file (no precision) still reads, as fp32 */
        char old[4096];
        const char *at = strstr(js, ",\"precision\"");
        CHECK(t, at && strstr(js, "\"version\":4"), "precision and version 4 in %s", js);
        if (at) {
            snprintf(old, sizeof old, "%.*s}", (int)(at - js), js);
            char *v = strstr(old, "\"version\":4");
            if (v) v[10] = '3';
            CHECK_OK(t, dm_run_state_from_json(old, strlen(old), "rs", &b, &err), &err);
            CHECK(t, b.tc.precision == DM_PREC_FP32 && b.tc.dropout == a.tc.dropout, "version 3: fp32 (%s)", old);
            if (v) v[10] = '4';
            CHECK(t, dm_run_state_from_json(old, strlen(old), "rs", &b, &err) == DM_ERR_FORMAT &&
                         strstr(err.msg, "'precision' is missing"), "version 4 without precision: %s", err.msg);
        }
    }
    /* each kind of bad value, by editing the text */
    static const struct { const char *from, *to, *msg; } bad[] = {
        {"\"batch\":96", "\"batch\":0", "field 'batch' is 0"},
        {"\"batch\":96", "\"batch\":96.5", "field 'batch' must be an integer"},
        {"\"aug_shift\":3", "\"aug_shift\":9", "field 'aug_shift' is 9"},
        {"\"shuffle\":true", "\"shuffle\":1", "field 'shuffle' must be true or false"},
        {"\"epoch\":7", "\"epoch\":-1", "field 'epoch' is -1"},
        {"\"grad_accum\":1", "\"grad_accum\":0", "field 'grad_accum' is 0"},
        {"\"beta2\":", "\"beta2\":0.5,\"x\":", "unknown field 'x'"},
        {"\"lr\":", "\"lr\":1e300,\"y\":", "field 'lr' is 1.0000000000000001e+300"},
        {"\"balance\":[\"seed\"", "\"balance\":[\"magic\"", "field 'balance': entry 0"},
        {"\"version\":4", "\"version\":2", "field 'version' is not 4"},
        {"\"precision\":\"bf16\"", "\"precision\":\"fp16\"", "field 'precision'"},
        {"\"holdout\":0.25", "\"holdout\":-0.5", "field 'holdout' is -0.5"},
        {"\"holdout\":0.25", "\"holdout\":1", "field 'holdout' is 1"},
        {"\"holdout\":0.25", "\"holdout\":\"x\"", "field 'holdout' must be a number"},
        {"\"checkpoint_every\":25", "\"checkpoint_every\":0", "field 'checkpoint_every' is 0"},
    };
    /* what the run checks first: the version, 1 for the raw bytes of version 1 */
    CHECK(t, dm_run_state_version(js, strlen(js)) == DM_RUN_STATE_VERSION, "version of %s", js);
    CHECK(t, dm_run_state_version("\x01\0\0\0", 4) == 1 && dm_run_state_version("{\"version\":2}", 13) == 2 &&
          dm_run_state_version("{}", 2) == 0 && dm_run_state_version("[3]", 3) == 1, "older versions");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[4096];
        const char *at = strstr(js, bad[i].from);
        CHECK(t, at != NULL, "%s in %s", bad[i].from, js);
        if (!at) continue;
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - js), js, bad[i].to, at + strlen(bad[i].from));
        dm_status s = dm_run_state_from_json(buf, strlen(buf), "rs", &b, &err);
        CHECK(t, s == DM_ERR_FORMAT && strstr(err.msg, bad[i].msg), "%s: %s", bad[i].to, err.msg);
    }
    free(js);
}

void suite_regress(dm_t *t)
{
    DM_RUN(t, test_regress_run_state);
    DM_RUN(t, test_regress_npy_pipe);
    DM_RUN(t, test_regress_model_bigger_than_file);
    DM_RUN(t, test_regress_kserve_json_shape);
    DM_RUN(t, test_regress_idx_counts);
    DM_RUN(t, test_regress_kserve_zero_elements);
    DM_RUN(t, test_regress_config_size_matches_model);
    DM_RUN(t, test_regress_growbuf);
}
