// libFuzzer target: .npz archives (and, with a leading 'N', a bare .npy image). Accepted float
// arrays are converted.
#include <stdlib.h>

#include "formats/npz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_err err;
    if (size > 0 && data[0] == 'N') {
        ct_npy_array a;
        if (ct_npy_parse(&a, data + 1, size - 1, &err) == CT_OK && ct_npy_numel(&a) < (1 << 20)) {
            float *out = malloc(sizeof(float) * (size_t)(ct_npy_numel(&a) + 1));
            if (out) ct_npy_to_f32(out, &a, &err);
            free(out);
        }
        return 0;
    }
    ct_npz *z = NULL;
    if (ct_npz_parse(&z, data, size, &err) == CT_OK) {
        for (int i = 0; i < z->n; i++) {
            if (ct_npy_numel(&z->arrays[i]) > (1 << 20)) continue;
            float *out = malloc(sizeof(float) * (size_t)(ct_npy_numel(&z->arrays[i]) + 1));
            if (out) ct_npy_to_f32(out, &z->arrays[i], &err);
            free(out);
        }
        ct_npz_free(z);
    }
    return 0;
}
