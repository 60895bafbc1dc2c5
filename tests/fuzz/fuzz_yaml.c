// libFuzzer target: the config.yaml subset reader.
#include <stdint.h>

#include "formats/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_yaml *y = NULL;
    ct_err err;
    if (ct_yaml_parse(&y, (const char *)data, size, &err) == CT_OK) {
        ct_yaml_str(y, "model_kind");
        ct_yaml_get(y, "transcoders");
        ct_yaml_free(y);
    }
    return 0;
}
