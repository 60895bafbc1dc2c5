// libFuzzer target: tokenizer.json (the first byte picks the llama2.c format instead).
// Accepted tokenizers encode and decode a few fixed texts and a slice of the input.
#include <stdlib.h>
#include <string.h>

#include "formats/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    ct_tokenizer *t = NULL;
    ct_err err;
    ct_status rc = data[0] == 'L' ? ct_tokenizer_parse_llama2c(&t, data + 1, size - 1, 0, &err)
                                  : ct_tokenizer_parse_json(&t, (const char *)data, size, NULL, 0, &err);
    if (rc == CT_OK) {
        const char *texts[] = {"Hello world", "  a\tb\n", "日本 café 😀", "<s>x</s>", ""};
        for (int i = 0; i < 5; i++) {
            int *ids = NULL, n = 0;
            if (ct_tokenizer_encode(t, texts[i], strlen(texts[i]), 1, &ids, &n, &err) == CT_OK) {
                char *s = NULL;
                size_t len;
                if (ct_tokenizer_decode(t, ids, n, i & 1, &s, &len, &err) == CT_OK) free(s);
                free(ids);
            }
        }
        ct_tokenizer_free(t);
    }
    return 0;
}
