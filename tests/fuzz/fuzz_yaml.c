// libFuzzer target: config files through libyaml (formats/yaml.h), every node of the tree read
// back through the type helpers.
#include <stdint.h>

#include "formats/yaml.h"

static void walk(const ct_yaml *y, int *sink) {
    long long v;
    *sink += ct_yaml_int(y, &v) + ct_yaml_is_null(y) + (int)ct_yaml_type(y)[0];
    for (int i = 0; i < y->n; i++) walk(&y->items[i], sink);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_yaml *y = NULL;
    ct_err err;
    if (ct_yaml_parse(&y, (const char *)data, size, "config.yaml", &err) == CT_OK) {
        int sink = 0;
        ct_yaml_str(y, "model_kind");
        ct_yaml_get(y, "transcoders");
        walk(y, &sink);
        ct_yaml_free(y);
    }
    return 0;
}
