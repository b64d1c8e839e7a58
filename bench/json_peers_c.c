/* json_peers_c.c - json-c's half of bench/json_peers.c. */
#include <json-c/json.h>

double json_c_parse(const char *body, int n, int iters);

double json_c_parse(const char *body, int n, int iters)
{
    double sum = 0;
    for (int it = 0; it < iters; it++) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *root = json_tokener_parse_ex(tok, body, n), *inputs = NULL, *data = NULL;
        json_object_object_get_ex(root, "inputs", &inputs);
        if (inputs && json_object_object_get_ex(json_object_array_get_idx(inputs, 0), "data", &data) &&
            json_object_is_type(data, json_type_array))
            for (size_t i = 0; i < json_object_array_length(data); i++)
                sum += json_object_get_double(json_object_array_get_idx(data, i));
        else
            sum += 1;
        json_object_put(root);
        json_tokener_free(tok);
    }
    return sum;
}
