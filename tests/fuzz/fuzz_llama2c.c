// libFuzzer target: llama2.c checkpoints. Accepted checkpoints also run one forward step.
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);   // aligned copy, as a mapping would be
    if (!buf) return 0;
    memcpy(buf, data, size);
    ct_model *m = NULL;
    ct_err err;
    if (ct_model_parse_llama2c(&m, buf, size, &err) == CT_OK) {
        int tok = 0;
        float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
        if (logits && (size_t)m->cfg.d_model * m->cfg.vocab_size < (1u << 22)) ct_model_forward(m, &tok, 1, NULL, NULL, logits, 0, &err);
        free(logits);
        ct_model_free(m);
    }
    free(buf);
    return 0;
}
