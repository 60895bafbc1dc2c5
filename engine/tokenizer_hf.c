// tokenizer_hf.c - Hugging Face tokenizer.json (BPE).
#include <stdlib.h>

#include "tokenizer_impl.h"

ct_status ct_tokenizer_parse_json(ct_tokenizer **out, const char *json, size_t len, const char *config,
                                  size_t config_len, ct_err *err) {
    (void)json; (void)len; (void)config; (void)config_len;
    *out = NULL;
    return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: not yet supported");
}
ct_status ct_hf_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special, int **ids,
                       int *n_ids, ct_err *err) {
    (void)t; (void)text; (void)len; (void)add_special; (void)ids; (void)n_ids;
    return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: not yet supported");
}
ct_status ct_hf_decode(const ct_tokenizer *t, const int *ids, int n, int skip_special, char **text,
                       size_t *len, ct_err *err) {
    (void)t; (void)ids; (void)n; (void)skip_special; (void)text; (void)len;
    return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: not yet supported");
}
void ct_hf_free(struct ct_hf_tok *hf) { (void)hf; }
