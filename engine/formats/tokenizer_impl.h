// tokenizer_impl.h - the tokenizer struct shared by tokenizer.c (llama2.c files, common
// parts) and tokenizer_hf.c (tokenizer.json). Not part of the public engine API.
#ifndef CT_TOKENIZER_IMPL_H
#define CT_TOKENIZER_IMPL_H

#include "formats/tokenizer.h"

typedef enum { CT_TOK_LLAMA2C, CT_TOK_HF } ct_tok_kind;

// String -> id hash map (open addressing, power-of-two capacity). Keys are borrowed.
typedef struct {
    const char **keys;
    int *lens;
    int *vals;
    size_t cap;
} ct_strmap;

int ct_strmap_init(ct_strmap *m, size_t n);
void ct_strmap_free(ct_strmap *m);
int ct_strmap_put(ct_strmap *m, const char *key, int len, int val);   // 0 when out of memory
int ct_strmap_get(const ct_strmap *m, const char *key, int len);      // -1 when absent

// UTF-8: length of the valid sequence at s (n bytes available), 0 if invalid.
int ct_utf8_len(const unsigned char *s, size_t n, uint32_t *cp);
int ct_utf8_valid(const char *s, size_t n);
int ct_utf8_put(char *out, uint32_t cp);   // writes 1-4 bytes, returns count

struct ct_hf_tok;   // tokenizer_hf.c

struct ct_tokenizer {
    ct_tok_kind kind;
    int n_vocab;           // ids 0..n_vocab-1 (incl. added tokens)
    char **pieces;         // (n_vocab,) NUL-terminated; NULL for holes in the id space
    int *piece_lens;
    float *scores;         // llama2.c only
    unsigned char *special;   // (n_vocab,) 1 for special tokens
    ct_strmap map;         // piece -> id
    int bos, eos;
    int limit;             // a model's vocabulary size (ct_tokenizer_fit): encode refuses ids >= it; 0 = none
    int byte_ids[256];     // llama2.c: id of <0xHH>, -1 if absent
    struct ct_hf_tok *hf;
};

ct_status ct_hf_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special, int **ids,
                       int *n_ids, ct_err *err);
ct_status ct_hf_decode(const ct_tokenizer *t, const int *ids, int n, int skip_special, char **text,
                       size_t *len, ct_err *err);
// The decoder chain without its Strip steps (one token's text as it sits inside a text).
ct_status ct_hf_decode_nostrip(const ct_tokenizer *t, const int *ids, int n, char **text, size_t *len, ct_err *err);
void ct_hf_free(struct ct_hf_tok *hf);
// The largest id encoding can give other than added tokens: model.vocab, merge results, the
// post-processor's template tokens, the unknown token.
int ct_hf_ordinary_max(const ct_tokenizer *t);

// Growable byte and int buffers used by the tokenizers.
typedef struct {
    char *p;
    size_t n, cap;
} ct_buf;
int ct_buf_put(ct_buf *b, const char *s, size_t n);   // 0 when out of memory

typedef struct {
    int *p;
    int n, cap;
} ct_ibuf;
int ct_ibuf_push(ct_ibuf *b, int v);

#endif
