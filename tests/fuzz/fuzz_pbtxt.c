/* fuzz_pbtxt.c - dm_triton_config_parse on any text. Properties of a config
 * that parses: its rendering (dm_triton_config_format) parses again and
 * renders to the identical text, and its JSON rendering is valid JSON. */
#include "fuzz.h"
#include "serve/triton_config.h"

#define PATH "fuzz/config.pbtxt"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dm_triton_config *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    FUZZ_CHECK(a && b);
    dm_error err;
    if (dm_triton_config_parse((const char *)data, size, PATH, a, &err) == DM_OK) {
        char *text = dm_triton_config_format(a);
        FUZZ_CHECK(text != NULL);
        dm_status st = dm_triton_config_parse(text, strlen(text), PATH, b, &err);
        if (st != DM_OK) fprintf(stderr, "rendered config does not parse: %s\n%s", err.msg, text);
        FUZZ_CHECK(st == DM_OK);
        char *again = dm_triton_config_format(b);
        FUZZ_CHECK(again != NULL);
        if (strcmp(text, again)) fprintf(stderr, "rendering changed:\n%s\n--- to ---\n%s", text, again);
        FUZZ_CHECK(strcmp(text, again) == 0);

        char *js = dm_triton_config_json(a);
        FUZZ_CHECK(js != NULL);
        json_error_t je;
        json_t *j = json_loads(js, 0, &je);
        if (!j) fprintf(stderr, "config JSON does not parse (%s): %s\n", je.text, js);
        FUZZ_CHECK(json_is_object(j));
        json_decref(j);
        free(js);
        free(again);
        free(text);
    }
    free(a);
    free(b);
    return 0;
}
