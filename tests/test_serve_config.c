/* test_serve_config.c - the config.pbtxt parser: protobuf text-format syntax,
 * the ModelConfig schema, validation and normalisation, the text and JSON
 * renderings, and invalid configs refused with their line and field. */
#include "deepmoe.h"
#include "test.h"
#include "serve/pbtxt.h"
#include "serve/triton_config.h"

#include <jansson.h>
#include <stdlib.h>

#define PATH "repo/m/config.pbtxt"

static dm_status parse(const char *text, dm_triton_config *c, dm_error *err)
{
    memset(c, 0x5a, sizeof *c);  /* parse must overwrite everything */
    err->msg[0] = 0;
    return dm_triton_config_parse(text, strlen(text), PATH, c, err);
}

/* A backend line so that snippets testing other things are valid configs. */
#define BK "backend: \"moe\"\n"

static int config_equal(const dm_triton_config *a, const dm_triton_config *b)
{
    if (strcmp(a->name, b->name) || strcmp(a->backend, b->backend) || strcmp(a->platform, b->platform)) return 0;
    if (a->max_batch_size != b->max_batch_size || a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs) return 0;
    for (int io = 0; io < 2; io++) {
        const dm_triton_tensor *x = io ? a->outputs : a->inputs, *y = io ? b->outputs : b->inputs;
        for (int i = 0; i < (io ? a->n_outputs : a->n_inputs); i++) {
            if (strcmp(x[i].name, y[i].name) || strcmp(x[i].data_type, y[i].data_type)) return 0;
            if (x[i].n_dims != y[i].n_dims || x[i].optional != y[i].optional) return 0;
            for (int d = 0; d < x[i].n_dims; d++)
                if (x[i].dims[d] != y[i].dims[d]) return 0;
        }
    }
    if (a->dynamic_batching != b->dynamic_batching || a->n_preferred != b->n_preferred) return 0;
    for (int i = 0; i < a->n_preferred; i++)
        if (a->preferred_batch_size[i] != b->preferred_batch_size[i]) return 0;
    if (a->max_queue_delay_us != b->max_queue_delay_us || a->preserve_ordering != b->preserve_ordering ||
        a->max_queue_size != b->max_queue_size || a->default_timeout_us != b->default_timeout_us ||
        a->allow_timeout_override != b->allow_timeout_override || a->timeout_action_delay != b->timeout_action_delay)
        return 0;
    if (a->instance_count != b->instance_count || strcmp(a->instance_kind, b->instance_kind)) return 0;
    if (a->version_policy != b->version_policy || a->n_versions != b->n_versions) return 0;
    if (a->version_policy == DM_TRITON_VP_LATEST && a->num_versions != b->num_versions) return 0;
    for (int i = 0; i < a->n_versions; i++)
        if (a->versions[i] != b->versions[i]) return 0;
    if (a->n_params != b->n_params) return 0;
    for (int i = 0; i < a->n_params; i++)
        if (strcmp(a->param_keys[i], b->param_keys[i]) || strcmp(a->param_vals[i], b->param_vals[i])) return 0;
    return 1;
}

static const char *EXAMPLE =
    "name: \"moe_model\"\n"
    "backend: \"moe\"\n"
    "max_batch_size: 32\n"
    "input [ { name: \"input\" data_type: TYPE_FP32 dims: [ 512 ] } ]\n"
    "output [ { name: \"output\" data_type: TYPE_FP32 dims: [ 512 ] } ]\n"
    "dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 500\n"
    "  default_queue_policy { max_queue_size: 256 default_timeout_microseconds: 100000 allow_timeout_override: true } }\n"
    "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
    "version_policy: { latest { num_versions: 1 } }\n";

static void test_serve_config_example(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    CHECK_OK(t, parse(EXAMPLE, &c, &err), &err);
    CHECK(t, !strcmp(c.name, "moe_model"), "name '%s'", c.name);
    CHECK(t, !strcmp(c.backend, "moe") && c.platform[0] == 0, "backend '%s' platform '%s'", c.backend, c.platform);
    CHECK(t, c.max_batch_size == 32, "max_batch_size %d", c.max_batch_size);
    CHECK(t, c.n_inputs == 1 && c.n_outputs == 1, "%d inputs %d outputs", c.n_inputs, c.n_outputs);
    CHECK(t, !strcmp(c.inputs[0].name, "input") && !strcmp(c.inputs[0].data_type, "TYPE_FP32"), "input %s %s",
          c.inputs[0].name, c.inputs[0].data_type);
    CHECK(t, c.inputs[0].n_dims == 1 && c.inputs[0].dims[0] == 512 && !c.inputs[0].optional, "input dims");
    CHECK(t, !strcmp(c.outputs[0].name, "output") && c.outputs[0].n_dims == 1 && c.outputs[0].dims[0] == 512,
          "output");
    CHECK(t, c.dynamic_batching == 1, "dynamic batching on");
    CHECK(t, c.n_preferred == 2 && c.preferred_batch_size[0] == 8 && c.preferred_batch_size[1] == 16, "preferred");
    CHECK(t, c.max_queue_delay_us == 500, "delay %lld", (long long)c.max_queue_delay_us);
    CHECK(t, c.max_queue_size == 256 && c.default_timeout_us == 100000 && c.allow_timeout_override == 1,
          "queue policy %lld %lld %d", (long long)c.max_queue_size, (long long)c.default_timeout_us,
          c.allow_timeout_override);
    CHECK(t, c.timeout_action_delay == 0 && c.preserve_ordering == 0, "defaults");
    CHECK(t, c.instance_count == 2 && !strcmp(c.instance_kind, "KIND_CPU"), "instances %d %s", c.instance_count,
          c.instance_kind);
    CHECK(t, c.version_policy == DM_TRITON_VP_LATEST && c.num_versions == 1, "version policy");
    CHECK(t, c.n_params == 0 && c.n_versions == 0, "no params/versions");
}

static void test_serve_config_seed_defaults(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    const char *seed =
        "name: \"moe_model\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 64\n"
        "input [ { name: \"input\" data_type: TYPE_FP32 dims: [512] } ]\n"
        "output [ { name: \"output\" data_type: TYPE_FP32 dims: [512] } ]\n"
        "dynamic_batching {}\n";
    CHECK_OK(t, parse(seed, &c, &err), &err);
    CHECK(t, c.dynamic_batching && c.n_preferred == 1 && c.preferred_batch_size[0] == 64, "preferred -> [64]: n=%d",
          c.n_preferred);
    CHECK(t, c.instance_count == 1 && !strcmp(c.instance_kind, "KIND_CPU"), "instance defaults %d %s",
          c.instance_count, c.instance_kind);
    CHECK(t, c.version_policy == DM_TRITON_VP_LATEST && c.num_versions == 1, "latest 1");
    CHECK(t, c.max_queue_delay_us == 0 && c.max_queue_size == 0 && c.default_timeout_us == 0, "zero defaults");
    CHECK(t, !strcmp(c.platform, "pytorch_libtorch") && c.backend[0] == 0, "platform only");

    /* no dynamic_batching: nothing normalised in */
    CHECK_OK(t, parse(BK "max_batch_size: 8\n", &c, &err), &err);
    CHECK(t, !c.dynamic_batching && c.n_preferred == 0 && c.n_inputs == 0, "no batching");
    /* an empty file but for the backend, max_batch_size 0 */
    CHECK_OK(t, parse(BK, &c, &err), &err);
    CHECK(t, c.max_batch_size == 0 && c.name[0] == 0, "empty config");
}

static void test_serve_config_comments_separators(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    const char *s =
        "# a comment\n"
        "name: \"m\"; # trailing comment with { unbalanced [ brackets\n"
        "backend: \"moe\",\n"
        "max_batch_size: 4;\r\n"
        "\t\v\finput { name: \"a\", data_type: TYPE_FP32; dims: 3, },\n"
        "input { name: \"b\" data_type: TYPE_INT64 dims: -1 };\n";
    CHECK_OK(t, parse(s, &c, &err), &err);
    CHECK(t, !strcmp(c.name, "m") && c.max_batch_size == 4, "name %s mbs %d", c.name, c.max_batch_size);
    CHECK(t, c.n_inputs == 2 && !strcmp(c.inputs[1].name, "b") && c.inputs[1].dims[0] == -1, "inputs %d",
          c.n_inputs);
    CHECK(t, !strcmp(c.inputs[1].data_type, "TYPE_INT64"), "dtype %s", c.inputs[1].data_type);
}

static void test_serve_config_lists_and_messages(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    /* repeated scalar by repetition, by list, mixed; empty list; message lists
       with and without colon; <> messages; colon before a message */
    const char *s = BK
        "max_batch_size: 16\n"
        "input { name: \"x\" data_type: TYPE_FP16 dims: 1 dims: 2 dims: [3, 4] dims: [] dims: -1 }\n"
        "input: [ < name: 'y' data_type: TYPE_BF16 dims: [ 7 ] >, { name: \"z\" data_type: TYPE_BOOL dims: 1 } ]\n"
        "input [ ]\n"
        "output: { name: \"o\" data_type: TYPE_UINT8 dims: [2,2] }\n"
        "output < name: \"p\" data_type: TYPE_STRING dims: [ 1 ] >\n"
        "dynamic_batching: < preferred_batch_size: 2 preferred_batch_size: [4, 8] preferred_batch_size: [] >\n"
        "instance_group [ { count: 2 }, { kind: KIND_AUTO count: 3 } ]\n"
        "instance_group { }\n"
        "version_policy < specific { versions: 1 versions: [3, 5] } >\n";
    CHECK_OK(t, parse(s, &c, &err), &err);
    CHECK(t, c.n_inputs == 3, "inputs %d", c.n_inputs);
    CHECK(t, c.inputs[0].n_dims == 5, "x dims %d", c.inputs[0].n_dims);
    int64_t want[5] = {1, 2, 3, 4, -1};
    for (int i = 0; i < 5 && i < c.inputs[0].n_dims; i++)
        CHECK(t, c.inputs[0].dims[i] == want[i], "dim %d = %lld", i, (long long)c.inputs[0].dims[i]);
    CHECK(t, !strcmp(c.inputs[1].name, "y") && !strcmp(c.inputs[1].data_type, "TYPE_BF16"), "y");
    CHECK(t, !strcmp(c.inputs[2].name, "z") && !strcmp(c.inputs[2].data_type, "TYPE_BOOL"), "z");
    CHECK(t, c.n_outputs == 2 && c.outputs[0].n_dims == 2 && !strcmp(c.outputs[1].data_type, "TYPE_STRING"),
          "outputs");
    CHECK(t, c.n_preferred == 3 && c.preferred_batch_size[0] == 2 && c.preferred_batch_size[2] == 8, "preferred %d",
          c.n_preferred);
    CHECK(t, c.instance_count == 2 + 3 + 1, "instance_count %d", c.instance_count);
    CHECK(t, !strcmp(c.instance_kind, "KIND_CPU"), "kind %s", c.instance_kind);
    CHECK(t, c.version_policy == DM_TRITON_VP_SPECIFIC && c.n_versions == 3 && c.versions[2] == 5, "specific");

    CHECK_OK(t, parse(BK "version_policy { all { } }", &c, &err), &err);
    CHECK(t, c.version_policy == DM_TRITON_VP_ALL, "all");
    CHECK_OK(t, parse(BK "version_policy { latest { num_versions: 3 } }", &c, &err), &err);
    CHECK(t, c.version_policy == DM_TRITON_VP_LATEST && c.num_versions == 3, "latest 3");
}

static void test_serve_config_numbers(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    CHECK_OK(t, parse(BK "max_batch_size: 0x1F\n", &c, &err), &err);
    CHECK(t, c.max_batch_size == 31, "hex %d", c.max_batch_size);
    CHECK_OK(t, parse(BK "max_batch_size: 0X10\n", &c, &err), &err);
    CHECK(t, c.max_batch_size == 16, "HEX %d", c.max_batch_size);
    CHECK_OK(t, parse(BK "max_batch_size: 017\n", &c, &err), &err);
    CHECK(t, c.max_batch_size == 15, "octal %d", c.max_batch_size);
    CHECK_OK(t, parse(BK "max_batch_size: 0\n", &c, &err), &err);
    CHECK(t, c.max_batch_size == 0, "zero");
    CHECK_OK(t, parse(BK "input { name: \"a\" data_type: TYPE_FP32 dims: [-1, -0x1, 9223372036854775807] }", &c, &err),
             &err);
    CHECK(t, c.inputs[0].dims[0] == -1 && c.inputs[0].dims[1] == -1 && c.inputs[0].dims[2] == INT64_MAX, "neg dims");
    /* floats are lexed (in skipped fields) in every form */
    CHECK_OK(t, parse(BK "optimization { a: 1.5 b: .5 c: 1e3 d: 10f e: inf f: nan g: -inf h: -2.5e-3F i: 1.E+2 }",
                      &c, &err), &err);
    /* and a float is no integer */
    CHECK(t, parse(BK "max_batch_size: 1.0\n", &c, &err) == DM_ERR_FORMAT, "float for int");
    CHECK(t, strstr(err.msg, ":2: field 'max_batch_size'") && strstr(err.msg, "integer"), "%s", err.msg);
    CHECK(t, parse(BK "max_batch_size: 10f\n", &c, &err) == DM_ERR_FORMAT, "10f is a float");
    CHECK(t, parse(BK "max_batch_size: 09\n", &c, &err) == DM_ERR_FORMAT, "bad octal");
    CHECK(t, strstr(err.msg, "octal"), "%s", err.msg);
    CHECK(t, parse(BK "max_batch_size: 99999999999999999999999\n", &c, &err) == DM_ERR_FORMAT, "overflow");
    CHECK(t, parse(BK "max_batch_size: 2147483648\n", &c, &err) == DM_ERR_FORMAT, "int32 overflow");
    CHECK(t, parse(BK "optimization { a: 1.5.3 }", &c, &err) == DM_ERR_FORMAT, "1.5.3");
    CHECK(t, parse(BK "optimization { a: 0x }", &c, &err) == DM_ERR_FORMAT, "0x");
}

static void test_serve_config_strings(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    CHECK_OK(t, parse(BK "name: \"a\\n\\t\\\\\\\"\\'\\x41\\101\\u00e9\"\n", &c, &err), &err);
    CHECK(t, !strcmp(c.name, "a\n\t\\\"'AA\xc3\xa9"), "escapes: '%s'", c.name);
    CHECK_OK(t, parse(BK "name: 'single \"quoted\"'\n", &c, &err), &err);
    CHECK(t, !strcmp(c.name, "single \"quoted\""), "single quotes: '%s'", c.name);
    CHECK_OK(t, parse(BK "name: \"moe\" '_' # comment between\n  \"model\"\n", &c, &err), &err);
    CHECK(t, !strcmp(c.name, "moe_model"), "concatenation: '%s'", c.name);
    CHECK_OK(t, parse(BK "name: \"\"\n", &c, &err), &err);
    CHECK(t, c.name[0] == 0, "empty string");
    CHECK(t, parse(BK "name: \"a\\0b\"\n", &c, &err) == DM_ERR_FORMAT, "NUL refused");
    char longname[300];
    memset(longname, 'x', sizeof longname);
    char buf[400];
    snprintf(buf, sizeof buf, BK "name: \"%.*s\"\n", (int)DM_TRITON_NAME, longname);
    CHECK(t, parse(buf, &c, &err) == DM_ERR_FORMAT && strstr(err.msg, "field 'name'"), "too long: %s", err.msg);
}

static void test_serve_config_bools_enums(dm_t *t)
{
    const char *trues[] = {"true", "True", "t", "1"}, *falses[] = {"false", "False", "f", "0"};
    dm_triton_config c;
    dm_error err;
    char buf[256];
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, BK "max_batch_size: 2 dynamic_batching { preserve_ordering: %s "
                 "default_queue_policy { allow_timeout_override: %s } }", trues[i], falses[i]);
        CHECK_OK(t, parse(buf, &c, &err), &err);
        CHECK(t, c.preserve_ordering == 1 && c.allow_timeout_override == 0, "%s/%s", trues[i], falses[i]);
    }
    CHECK(t, parse(BK "max_batch_size: 2 dynamic_batching { preserve_ordering: 2 }", &c, &err) == DM_ERR_FORMAT,
          "2 is no bool");
    CHECK(t, parse(BK "max_batch_size: 2 dynamic_batching { preserve_ordering: TRUE }", &c, &err) == DM_ERR_FORMAT,
          "TRUE is no bool");
    /* enums by integer */
    CHECK_OK(t, parse(BK "max_batch_size: 2 input { name: \"a\" data_type: 11 dims: 1 format: 0 }\n"
                      "dynamic_batching { default_queue_policy { timeout_action: 1 } }\n"
                      "instance_group { kind: 2 }", &c, &err), &err);
    CHECK(t, !strcmp(c.inputs[0].data_type, "TYPE_FP32"), "11 -> %s", c.inputs[0].data_type);
    CHECK(t, c.timeout_action_delay == 1, "1 -> DELAY");
    CHECK(t, !strcmp(c.instance_kind, "KIND_CPU"), "2 -> %s", c.instance_kind);
    CHECK_OK(t, parse(BK "input { name: \"a\" data_type: 14 dims: 1 } input { name: \"b\" data_type: 1 dims: 1 }",
                      &c, &err), &err);
    CHECK(t, !strcmp(c.inputs[0].data_type, "TYPE_BF16") && !strcmp(c.inputs[1].data_type, "TYPE_BOOL"), "14, 1");
    CHECK(t, parse(BK "input { name: \"a\" data_type: 15 dims: 1 }", &c, &err) == DM_ERR_FORMAT, "15 unknown");
    CHECK(t, parse(BK "input { name: \"a\" data_type: \"TYPE_FP32\" dims: 1 }", &c, &err) == DM_ERR_FORMAT,
          "quoted enum refused");
    CHECK_OK(t, parse(BK "instance_group { kind: KIND_AUTO }", &c, &err), &err);
    CHECK(t, !strcmp(c.instance_kind, "KIND_AUTO"), "AUTO kept: %s", c.instance_kind);
}

static void test_serve_config_known_ignored_and_params(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    const char *s = BK
        "max_batch_size: 8\n"
        "default_model_filename: \"model.safetensors\"\n"
        "runtime: \"x\"\n"
        "model_warmup [ { name: \"w\" batch_size: 1 inputs { key: \"input\" value: { data_type: TYPE_FP32 dims: [512] zero_data: true } } } ]\n"
        "optimization { cuda { graphs: true } input_pinned_memory { enable: true } }\n"
        "response_cache { enable: false }\n"
        "model_transaction_policy { decoupled: False }\n"
        "batch_input [] batch_output []\n"
        "cc_model_filenames { key: \"8.0\" value: \"a\" }\n"
        "metric_tags { key: \"k\" value: \"v\" }\n"
        "model_repository_agents { agents [ { name: \"a\" } ] }\n"
        "input { name: \"i\" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } allow_ragged_batch: false optional: true is_shape_tensor: false }\n"
        "input { name: \"j\" data_type: TYPE_FP32 dims: [] reshape: { shape: [ ] } }\n"
        "output { name: \"o\" data_type: TYPE_FP32 dims: [ 4 ] label_filename: \"labels.txt\" }\n"
        "dynamic_batching { priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 1 value { max_queue_size: 3 } } }\n"
        "instance_group [ { name: \"g\" count: 1 kind: KIND_CPU gpus: [] host_policy: \"h\" profile: [\"a\"] passive: false } ]\n"
        "parameters { key: \"a\" value { string_value: \"1\" } }\n"
        "parameters [ { key: \"b\" value: { string_value: \"2\" } }, { key: \"a\" value { string_value: \"3\" } } ]\n";
    CHECK_OK(t, parse(s, &c, &err), &err);
    CHECK(t, c.n_inputs == 2 && c.inputs[0].optional == 1 && c.inputs[1].n_dims == 0, "inputs");
    CHECK(t, c.n_params == 2, "params %d", c.n_params);
    CHECK(t, !strcmp(c.param_keys[0], "a") && !strcmp(c.param_vals[0], "3"), "later duplicate wins: %s=%s",
          c.param_keys[0], c.param_vals[0]);
    CHECK(t, !strcmp(c.param_keys[1], "b") && !strcmp(c.param_vals[1], "2"), "b=2");
}

static void test_serve_config_round_trip(dm_t *t)
{
    dm_triton_config a, b;
    dm_error err;
    const char *s =
        "name: \"m \\\"q\\\"\\n\"\nplatform: \"p\"\nbackend: \"moe\"\nmax_batch_size: 64\n"
        "input [ { name: \"input\" data_type: TYPE_FP32 dims: [ -1, 512 ] optional: true },\n"
        "        { name: \"mask\" data_type: TYPE_BOOL dims: [ 1 ] } ]\n"
        "output [ { name: \"output\" data_type: TYPE_FP16 dims: [ 512 ] }, { name: \"experts\" data_type: TYPE_INT32 dims: [ 2 ] } ]\n"
        "dynamic_batching { preferred_batch_size: [ 8, 64 ] max_queue_delay_microseconds: 250 preserve_ordering: true\n"
        "  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 7 allow_timeout_override: true max_queue_size: 9 } }\n"
        "instance_group [ { count: 3 kind: KIND_AUTO } ]\n"
        "parameters { key: \"k\" value { string_value: \"v\\\\\\t\" } }\n";
    const char *policies[] = {
        "version_policy { latest { num_versions: 2 } }", "version_policy { all { } }",
        "version_policy { specific { versions: [ 1, 4 ] } }",
    };
    char buf[2048];
    for (int k = 0; k < 3; k++) {
        snprintf(buf, sizeof buf, "%s%s\n", s, policies[k]);
        CHECK_OK(t, parse(buf, &a, &err), &err);
        char *text = dm_triton_config_format(&a);
        CHECK(t, text != NULL, "format");
        if (!text) return;
        CHECK_OK(t, parse(text, &b, &err), &err);
        CHECK(t, config_equal(&a, &b), "round trip %d differs:\n%s", k, text);
        free(text);
    }
    /* the minimal seed config too, and a file on disk via load */
    CHECK_OK(t, parse("name: \"moe_model\" backend: \"moe\" max_batch_size: 64 "
                      "input { name: \"input\" data_type: TYPE_FP32 dims: 512 } dynamic_batching { }", &a, &err), &err);
    char *text = dm_triton_config_format(&a);
    CHECK(t, text != NULL, "format");
    if (!text) return;
    const char *path = dm_test_write_file("config.pbtxt", text, strlen(text));
    free(text);
    CHECK_OK(t, dm_triton_config_load(path, &b, &err), &err);
    CHECK(t, config_equal(&a, &b), "load of formatted config differs");
    CHECK(t, dm_triton_config_load("/nonexistent/dir/config.pbtxt", &b, &err) == DM_ERR_IO, "missing file");
    CHECK(t, strstr(err.msg, "/nonexistent/dir/config.pbtxt"), "%s", err.msg);
    path = dm_test_write_file("bad.pbtxt", "backend: \"x\"\n\nbogus: 1\n", 23);
    CHECK(t, dm_triton_config_load(path, &b, &err) == DM_ERR_FORMAT, "bad file");
    CHECK(t, strstr(err.msg, "bad.pbtxt:3: field 'bogus'"), "%s", err.msg);
}

static void test_serve_config_json(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    CHECK_OK(t, parse(EXAMPLE, &c, &err), &err);
    char *s = dm_triton_config_json(&c);
    CHECK(t, s != NULL, "json");
    if (!s) return;
    json_error_t je;
    json_t *o = json_loads(s, 0, &je);
    CHECK(t, o && json_is_object(o), "invalid JSON: %s: %s", je.text, s);
    free(s);
    if (!o) return;
    CHECK(t, !strcmp(json_string_value(json_object_get(o, "name")), "moe_model"), "name");
    CHECK(t, json_is_string(json_object_get(o, "platform")), "platform must exist (perf_analyzer)");
    CHECK(t, !strcmp(json_string_value(json_object_get(o, "backend")), "moe"), "backend");
    CHECK(t, json_integer_value(json_object_get(o, "max_batch_size")) == 32, "max_batch_size");
    json_t *in = json_array_get(json_object_get(o, "input"), 0);
    CHECK(t, in && !strcmp(json_string_value(json_object_get(in, "name")), "input"), "input name");
    CHECK(t, in && !strcmp(json_string_value(json_object_get(in, "data_type")), "TYPE_FP32"), "data_type");
    CHECK(t, in && !strcmp(json_string_value(json_object_get(in, "format")), "FORMAT_NONE"), "format");
    CHECK(t, in && json_is_false(json_object_get(in, "optional")), "optional");
    json_t *dims = json_object_get(in, "dims");
    CHECK(t, json_array_size(dims) == 1 && json_integer_value(json_array_get(dims, 0)) == 512, "dims [512] as numbers");
    json_t *out = json_array_get(json_object_get(o, "output"), 0);
    CHECK(t, out && !strcmp(json_string_value(json_object_get(out, "name")), "output"), "output name");
    CHECK(t, out && json_is_string(json_object_get(out, "label_filename")), "label_filename");
    json_t *db = json_object_get(o, "dynamic_batching");
    CHECK(t, json_is_object(db), "dynamic_batching");
    json_t *pr = json_object_get(db, "preferred_batch_size");
    CHECK(t, json_array_size(pr) == 2 && json_integer_value(json_array_get(pr, 1)) == 16, "preferred");
    CHECK(t, json_integer_value(json_object_get(db, "max_queue_delay_microseconds")) == 500, "delay");
    CHECK(t, json_is_false(json_object_get(db, "preserve_ordering")), "preserve_ordering");
    json_t *q = json_object_get(db, "default_queue_policy");
    CHECK(t, !strcmp(json_string_value(json_object_get(q, "timeout_action")), "REJECT"), "timeout_action");
    CHECK(t, json_integer_value(json_object_get(q, "default_timeout_microseconds")) == 100000, "timeout");
    CHECK(t, json_is_true(json_object_get(q, "allow_timeout_override")), "override");
    CHECK(t, json_integer_value(json_object_get(q, "max_queue_size")) == 256, "queue size");
    json_t *g = json_array_get(json_object_get(o, "instance_group"), 0);
    CHECK(t, g && !strcmp(json_string_value(json_object_get(g, "name")), "moe_model_0"), "group name");
    CHECK(t, g && !strcmp(json_string_value(json_object_get(g, "kind")), "KIND_CPU"), "kind");
    CHECK(t, g && json_integer_value(json_object_get(g, "count")) == 2, "count");
    json_t *vp = json_object_get(json_object_get(o, "version_policy"), "latest");
    CHECK(t, json_integer_value(json_object_get(vp, "num_versions")) == 1, "version_policy");
    json_decref(o);

    /* without dynamic batching the key is absent; parameters render as a map */
    CHECK_OK(t, parse(BK "max_batch_size: 0 parameters { key: \"k\" value { string_value: \"v\" } }", &c, &err), &err);
    s = dm_triton_config_json(&c);
    o = s ? json_loads(s, 0, &je) : NULL;
    free(s);
    CHECK(t, o != NULL, "json 2");
    if (!o) return;
    CHECK(t, json_object_get(o, "dynamic_batching") == NULL, "no dynamic_batching key");
    CHECK(t, !strcmp(json_string_value(json_object_get(o, "platform")), ""), "empty platform printed");
    json_t *pv = json_object_get(json_object_get(o, "parameters"), "k");
    CHECK(t, pv && !strcmp(json_string_value(json_object_get(pv, "string_value")), "v"), "parameters map");
    json_decref(o);
}

/* Parse must fail with DM_ERR_FORMAT, naming PATH:line and field 'field'. */
static void bad(dm_t *t, const char *text, int line, const char *field, const char *also)
{
    dm_triton_config c;
    dm_error err;
    dm_status s = parse(text, &c, &err);
    CHECK(t, s == DM_ERR_FORMAT, "accepted (%s): %s", dm_status_name(s), text);
    char want[160];
    snprintf(want, sizeof want, PATH ":%d: field '%s'", line, field);
    CHECK(t, strncmp(err.msg, want, strlen(want)) == 0, "message '%s' lacks '%s'", err.msg, want);
    CHECK(t, !also || strstr(err.msg, also), "message '%s' lacks '%s'", err.msg, also);
    CHECK(t, !strchr(err.msg, '\n'), "message has a newline");
}

static void test_serve_config_invalid(dm_t *t)
{
    bad(t, BK "max_batch_size: 4\nmax_bach_size: 8\n", 3, "max_bach_size", "unknown field");
    bad(t, BK "input {\n name: \"a\"\n data_typ: TYPE_FP32\n}\n", 4, "input.data_typ", "unknown field");
    bad(t, BK "dynamic_batching {\n  default_queue_policy { max_queue_sz: 1 }\n}\n", 3,
        "dynamic_batching.default_queue_policy.max_queue_sz", "unknown field");
    bad(t, BK "max_batch_size 8\n", 2, "max_batch_size", "':'");
    bad(t, BK "name: \"abc\n\"\n", 2, "name", "unterminated string");
    bad(t, BK "name: \"abc", 2, "name", "unterminated string");
    bad(t, BK "\nname: \"a\\qb\"\n", 3, "name", "escape");
    bad(t, BK "name: \"a\\x\"\n", 2, "name", "escape");
    bad(t, BK "max_batch_size: 10bar\n", 2, "max_batch_size", "10bar");
    bad(t, BK "max_batch_size: \"8\"\n", 2, "max_batch_size", "expected an integer");
    bad(t, "name: 5\n" BK, 1, "name", "expected a string");
    bad(t, BK "input [\n { name: \"a\"\n   data_type: TYPE_FP33 } ]\n", 4, "input.data_type", "TYPE_FP33");
    bad(t, BK "instance_group { kind: KIND_TPU }\n", 2, "instance_group.kind", "KIND_TPU");
    bad(t, BK "max_batch_size: 8\ndynamic_batching {\n preferred_batch_size: [ 4, 0 ] }\n", 4,
        "dynamic_batching.preferred_batch_size", "> 0");
    bad(t, BK "dynamic_batching {\n preferred_batch_size: [ 4,\n 16 ] }\nmax_batch_size: 8\n", 4,
        "dynamic_batching.preferred_batch_size", "exceeds max_batch_size 8");
    bad(t, BK "max_batch_size: 0\n\ndynamic_batching { }\n", 4, "dynamic_batching", "max_batch_size");
    bad(t, BK "dynamic_batching { }\n", 2, "dynamic_batching", "max_batch_size");
    bad(t, BK "max_batch_size: 8\ndynamic_batching { }\ndynamic_batching { }\n", 4, "dynamic_batching", "more than once");
    bad(t, BK "input { name: \"x\" data_type: TYPE_FP32 dims: 1 }\ninput { name: \"y\" data_type: TYPE_FP32 dims: 1 }\n"
        "input { name: \"x\" data_type: TYPE_FP32 dims: 1 }\n", 4, "input", "duplicate name 'x' (also at line 2)");
    bad(t, BK "output [ { name: \"o\" data_type: TYPE_FP32 dims: 1 },\n { name: \"o\" data_type: TYPE_FP32 dims: 1 } ]\n",
        3, "output", "duplicate");
    bad(t, BK "instance_group [\n  { count: 1 kind: KIND_GPU } ]\n", 3, "instance_group.kind", "deepmoe serves on CPUs");
    bad(t, BK "instance_group [ { kind: KIND_MODEL } ]\n", 2, "instance_group.kind", "CPUs");
    bad(t, BK "instance_group [ { gpus: [ 0 ] } ]\n", 2, "instance_group.gpus", "CPUs");
    bad(t, BK "max_batch_size: 8\nsequence_batching { }\n", 3, "sequence_batching", "not supported");
    bad(t, BK "ensemble_scheduling { step [ ] }\n", 2, "ensemble_scheduling", "not supported");
    bad(t, BK "version_policy {\n latest { }\n all { } }\n", 4, "version_policy.all", "only one of");
    bad(t, BK "version_policy { latest { num_versions: 0 } }\n", 2, "version_policy.latest.num_versions", ">= 1");
    bad(t, BK "version_policy { specific { } }\n", 2, "version_policy.specific", "at least one");
    bad(t, BK "input {\n name: \"a\"\n data_type: TYPE_FP32\n", 5, "input", "end of file");
    bad(t, BK "input {\n name: \"a\"\n data_type: TYPE_FP32", 4, "input", "opened at line 2");
    bad(t, BK "dynamic_batching { default_queue_policy < max_queue_size: 1 }\n", 2,
        "dynamic_batching.default_queue_policy", "unbalanced");
    bad(t, BK "input { name: \"a\" data_type: TYPE_FP32 dims: [1, 2 }\n", 2, "input.dims", "expected ',' or ']'");
    bad(t, "max_batch_size: -1\n" BK, 1, "max_batch_size", ">= 0");
    bad(t, "name: \"x\"\nmax_batch_size: 4\n", 1, "backend", "platform");
    bad(t, BK "input { data_type: TYPE_FP32 dims: 1 }\n", 2, "input", "no 'name'");
    bad(t, BK "input {\n name: \"a\" dims: 1 }\n", 2, "input", "data_type");
    bad(t, BK "input { name: \"a\" data_type: TYPE_FP32 dims: [] }\n", 2, "input", "at least one dimension");
    bad(t, BK "input { name: \"a\" data_type: TYPE_FP32 dims: [ -2 ] }\n", 2, "input.dims", "-2");
    bad(t, BK "name: \"a\"\nname: \"b\"\n", 3, "name", "more than once");
    bad(t, BK "name: [\"a\"]\n", 2, "name", "not a repeated field");
    bad(t, BK "max_batch_size: 2 dynamic_batching { preserve_ordering: yes }\n", 2,
        "dynamic_batching.preserve_ordering", "bool");
    bad(t, BK "max_batch_size: 4 dynamic_batching { priority_levels: 2 default_priority_level: 3 }\n", 2,
        "dynamic_batching.default_priority_level", "priority_levels");
    bad(t, BK "output { name: \"o\" data_type: TYPE_FP32 optional: true }\n", 2, "output.optional", "unknown field");
    bad(t, BK "parameters { key: \"a\" value { int_value: 1 } }\n", 2, "parameters.value.int_value", "unknown field");
}

static void test_serve_config_syntax_errors(dm_t *t)
{
    dm_triton_config c;
    dm_error err;
    /* structural errors name the enclosing message (or none at top level) */
    CHECK(t, parse(BK "}\n", &c, &err) == DM_ERR_FORMAT && strstr(err.msg, PATH ":2: ") &&
          strstr(err.msg, "unbalanced"), "stray brace: %s", err.msg);
    CHECK(t, parse(BK "input { name: \"a\" data_type: TYPE_FP32 > \n", &c, &err) == DM_ERR_FORMAT &&
          strstr(err.msg, ":2: field 'input'"), "mismatched close: %s", err.msg);
    CHECK(t, parse(BK "optimization { a { b { c: 1 }\n", &c, &err) == DM_ERR_FORMAT &&
          strstr(err.msg, ":3: field 'optimization.a'") && strstr(err.msg, "opened at line 2"),
          "EOF in skipped message: %s", err.msg);
    CHECK(t, parse(BK "123: 4\n", &c, &err) == DM_ERR_FORMAT && strstr(err.msg, ":2: expected a field name"),
          "number as name: %s", err.msg);
    CHECK(t, parse(BK "name: \n", &c, &err) == DM_ERR_FORMAT && strstr(err.msg, "end of file"), "no value: %s",
          err.msg);
    CHECK(t, parse(BK "input { name: \"a\" data_type: TYPE_FP32 dims: [1,] }\n", &c, &err) == DM_ERR_FORMAT,
          "trailing comma in list");
    /* deep nesting is bounded, not a stack overflow */
    char deep[4096] = BK "optimization ";
    size_t k = strlen(deep);
    for (int i = 0; i < 500; i++) { memcpy(deep + k, "{ a ", 4); k += 4; }
    deep[k] = 0;
    CHECK(t, parse(deep, &c, &err) == DM_ERR_FORMAT && strstr(err.msg, "nested deeper"), "deep: %s", err.msg);
    /* text with embedded NUL bytes and an explicit length */
    const char nul[] = "backend: \"moe\"\n\0max_batch_size: 3";
    CHECK(t, dm_triton_config_parse(nul, sizeof nul - 1, PATH, &c, &err) == DM_ERR_FORMAT &&
          strstr(err.msg, "byte 0x00"), "NUL byte: %s", err.msg);
    CHECK_OK(t, dm_triton_config_parse("backend: \"moe\" max_batch_size: 3 trailing garbage", 32, PATH, &c, &err), &err);
    CHECK(t, c.max_batch_size == 3, "len bounds the text");
}

/* The text-format reader alone, with a two-field schema of its own: it knows
 * no Triton field, and every error carries the field path and line. */
typedef struct toy { int64_t n[4]; int n_n; char name[16]; int inner_flag; } toy;

static int toy_inner(dm_pbtxt *p, const char *f, int colon, int line, void *ctx)
{
    toy *x = ctx;
    dm_pbtxt_tok tk;
    if (strcmp(f, "flag")) return dm_pbtxt_unknown(p, f, line, "Inner");
    return dm_pbtxt_scalar(p, f, colon, line, &tk) || dm_pbtxt_tok_bool(p, f, &tk, &x->inner_flag);
}

static int toy_field(dm_pbtxt *p, const char *f, int colon, int line, void *ctx)
{
    toy *x = ctx;
    dm_pbtxt_tok tk;
    dm_pbtxt_iter it;
    int r, close, mline;
    if (!strcmp(f, "n")) {
        if (dm_pbtxt_scalars_open(p, f, colon, line, &it)) return -1;
        while ((r = dm_pbtxt_scalars_next(p, f, &it, &tk)) > 0) {
            if (x->n_n == 4) return dm_pbtxt_fail(p, tk.line, f, "too many");
            if (dm_pbtxt_tok_i64(p, f, &tk, -100, 100, &x->n[x->n_n++])) return -1;
        }
        return r;
    }
    if (!strcmp(f, "name"))
        return dm_pbtxt_scalar(p, f, colon, line, &tk) || dm_pbtxt_tok_str(p, f, &tk, x->name, sizeof x->name);
    if (!strcmp(f, "inner"))
        return dm_pbtxt_message(p, f, &close, &mline) || dm_pbtxt_sub(p, f, close, mline, toy_inner, x);
    if (!strcmp(f, "ignored")) return dm_pbtxt_skip(p, f, colon, line);
    return dm_pbtxt_unknown(p, f, line, "Toy");
}

static int toy_parse(const char *text, toy *x, dm_error *err)
{
    dm_pbtxt p;
    memset(x, 0, sizeof *x);
    dm_pbtxt_init(&p, text, strlen(text), "toy.pbtxt", err);
    return dm_pbtxt_parse(&p, toy_field, x);
}

static void test_serve_config_pbtxt_reader(dm_t *t)
{
    toy x;
    dm_error err;
    CHECK(t, toy_parse("n: 0x10 n: [ -3, 017 ] # comment\nname: 'a' \"b\"; inner < flag: True >\n"
                       "ignored [ { deep { x: 1 } }, { } ]", &x, &err) == 0, "%s", err.msg);
    CHECK(t, x.n_n == 3 && x.n[0] == 16 && x.n[1] == -3 && x.n[2] == 15, "n: %d values", x.n_n);
    CHECK(t, !strcmp(x.name, "ab") && x.inner_flag == 1, "name '%s', flag %d", x.name, x.inner_flag);
    CHECK(t, toy_parse("name: \"x\"\ninner {\n  flag: 2 }", &x, &err) != 0 && err.code == DM_ERR_FORMAT &&
          !strcmp(err.msg, "toy.pbtxt:3: field 'inner.flag': expected a bool (true/false), got integer 2"), "%s", err.msg);
    CHECK(t, toy_parse("n: 101", &x, &err) != 0 && strstr(err.msg, "toy.pbtxt:1: field 'n': value 101 must be <= 100"),
          "%s", err.msg);
    CHECK(t, toy_parse("inner { other: 1 }", &x, &err) != 0 &&
          strstr(err.msg, "field 'inner.other': unknown field in Inner"), "%s", err.msg);
    CHECK(t, toy_parse("inner { flag: true", &x, &err) != 0 && strstr(err.msg, "'{' opened at line 1 is not closed"),
          "%s", err.msg);
}

/* The public export API: option checks, then the files it writes, whose
 * config is dm_triton_config_for_model's. */
static void test_serve_config_export_api(dm_t *t)
{
    dm_error err;
    CHECK(t, dm_export_name_ok("moe_model-1.v2") && !dm_export_name_ok("") && !dm_export_name_ok("a/b") &&
          !dm_export_name_ok("a b") && !dm_export_name_ok("q\"") && !dm_export_name_ok(NULL), "names");
    char longname[DM_TRITON_NAME + 1];
    memset(longname, 'a', sizeof longname - 1);
    longname[DM_TRITON_NAME] = 0;
    CHECK(t, !dm_export_name_ok(longname), "name of %d bytes", DM_TRITON_NAME);
    longname[DM_TRITON_NAME - 1] = 0;
    CHECK(t, dm_export_name_ok(longname), "name of %d bytes", DM_TRITON_NAME - 1);

    dm_server_opts so;
    dm_server_opts_default(&so);
    CHECK(t, so.struct_size == sizeof so && so.http_port == 8000 && so.metrics_port == 8002 && so.threads == 1 &&
          so.max_body == 64u << 20 && !strcmp(so.host, "127.0.0.1") && !so.repository, "server defaults");
    dm_server *s = (dm_server *)&so;  /* not NULL: a refused start must clear it */
    so.repository = "/nonexistent";
    so.struct_size--;
    CHECK(t, dm_server_start(&so, &s, &err) == DM_ERR_ARG && !s && strstr(err.msg, "dm_server_opts_default"),
          "server opts size: %s", err.msg);
    dm_server_opts_default(&so);
    CHECK(t, dm_server_start(&so, &s, &err) == DM_ERR_ARG && !s, "no repository: %s", err.msg);

    dm_config c;
    dm_config_default(&c);
    c.dim = 8;
    c.hidden = 4;
    c.n_experts = 3;
    c.top_k = 2;
    dm_model *m;
    CHECK_OK(t, dm_model_create(&c, NULL, &m, &err), &err);
    if (!m) return;
    dm_model_init_random(m, 7);
    char repo[1024];
    snprintf(repo, sizeof repo, "%s/export_repo", dm_test_tmpdir());
    dm_export_opts eo;
    dm_export_opts_default(&eo);
    CHECK(t, eo.struct_size == sizeof eo && !strcmp(eo.name, "moe_model") && eo.max_batch_size == 64 && eo.version == 1,
          "export defaults");
    eo.repository = repo;
    eo.struct_size = 0;
    CHECK(t, dm_export_model(m, &eo, &err) == DM_ERR_ARG && strstr(err.msg, "dm_export_opts_default"), "%s", err.msg);
    dm_export_opts_default(&eo);
    eo.repository = repo;
    eo.name = "a/b";
    CHECK(t, dm_export_model(m, &eo, &err) == DM_ERR_ARG && strstr(err.msg, "name 'a/b'"), "%s", err.msg);
    eo.name = "toy";
    eo.max_batch_size = 16;
    eo.version = 3;
    CHECK_OK(t, dm_export_model(m, &eo, &err), &err);
    char path[1200];
    snprintf(path, sizeof path, "%s/toy/3/model.safetensors", repo);
    dm_model *back = NULL;
    CHECK_OK(t, dm_model_load(path, NULL, &back, &err), &err);
    dm_model_free(back);
    snprintf(path, sizeof path, "%s/toy/config.pbtxt", repo);
    dm_triton_config got, want;
    CHECK_OK(t, dm_triton_config_load(path, &got, &err), &err);
    dm_triton_config_for_model(dm_model_config(m), "toy", 16, &want);
    CHECK(t, config_equal(&got, &want), "exported config differs");
    CHECK(t, got.inputs[0].dims[0] == 8 && got.outputs[1].dims[0] == 2 && got.preferred_batch_size[0] == 16,
          "widths");
    dm_model_free(m);
}

void suite_serve_config(dm_t *t)
{
    DM_RUN(t, test_serve_config_example);
    DM_RUN(t, test_serve_config_seed_defaults);
    DM_RUN(t, test_serve_config_comments_separators);
    DM_RUN(t, test_serve_config_lists_and_messages);
    DM_RUN(t, test_serve_config_numbers);
    DM_RUN(t, test_serve_config_strings);
    DM_RUN(t, test_serve_config_bools_enums);
    DM_RUN(t, test_serve_config_known_ignored_and_params);
    DM_RUN(t, test_serve_config_round_trip);
    DM_RUN(t, test_serve_config_json);
    DM_RUN(t, test_serve_config_invalid);
    DM_RUN(t, test_serve_config_syntax_errors);
    DM_RUN(t, test_serve_config_pbtxt_reader);
    DM_RUN(t, test_serve_config_export_api);
}
