// libFuzzer target: the safetensors reader must reject or accept any bytes without a crash,
// and every accepted tensor's data must convert.
#include <stdlib.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_safetensors *st = NULL;
    ct_err err;
    if (ct_safetensors_parse(&st, data, size, &err) == CT_OK) {
        for (int i = 0; i < st->n_tensors; i++) {
            const ct_st_tensor *t = &st->tensors[i];
            if (ct_st_numel(t) > (1 << 20)) continue;
            float *out = malloc(sizeof(float) * (size_t)(ct_st_numel(t) + 1));
            if (out) ct_st_to_f32(out, t, &err);
            free(out);
        }
        ct_safetensors_free(st);
    }
    return 0;
}
