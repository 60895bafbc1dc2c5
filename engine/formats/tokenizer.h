// tokenizer.h - text <-> token ids.
//
// Two families:
//   - llama2.c tokenizer files (tok512.bin): SentencePiece-style BPE driven by token scores,
//     a dummy prefix space, <0xHH> byte fallback, BOS = 1, EOS = 2.
//   - Hugging Face tokenizer.json with model type BPE, byte-level (GPT-2, Llama-3, Qwen3) or
//     SentencePiece-style ("▁" space marker, byte fallback: Llama-2, Gemma), merges by rank,
//     added and special tokens, BOS from the post-processor or tokenizer_config.json.
// Ids are int; text is UTF-8 bytes with an explicit length (NUL bytes are text too).
#ifndef CT_TOKENIZER_H
#define CT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"

typedef struct ct_tokenizer ct_tokenizer;

// Loads tok*.bin (llama2.c) or tokenizer.json (with tokenizer_config.json beside it if present).
ct_status ct_tokenizer_load(ct_ctx *ctx, ct_tokenizer **out, const char *path, ct_err *err);
// llama2.c file; n_vocab 0 reads entries until the end of the file.
ct_status ct_tokenizer_parse_llama2c(ct_tokenizer **out, const uint8_t *buf, size_t size, int n_vocab,
                                     ct_err *err);
// tokenizer.json text (len bytes) and optional tokenizer_config.json text (NULL for none).
ct_status ct_tokenizer_parse_json(ct_tokenizer **out, const char *json, size_t len,
                                  const char *config, size_t config_len, ct_err *err);
void ct_tokenizer_free(ct_tokenizer *t);

// Encodes len bytes of text; *ids is malloc'ed (free with free()). add_special adds BOS (and
// whatever the post-processor adds) as Hugging Face does by default.
ct_status ct_tokenizer_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special,
                              int **ids, int *n_ids, ct_err *err);
// Decodes ids to malloc'ed UTF-8 (NUL-terminated, *len excludes the NUL). skip_special drops
// special tokens (BOS, EOS, ...).
ct_status ct_tokenizer_decode(const ct_tokenizer *t, const int *ids, int n_ids, int skip_special,
                              char **text, size_t *len, ct_err *err);
// The text generated after a prompt: decode(prompt + gen) less decode(prompt), so a space that
// belongs between the two stays (decode(gen) alone may drop it); special tokens skipped.
// malloc'ed; *len bytes.
ct_status ct_tokenizer_continuation(const ct_tokenizer *t, const int *prompt, int n, const int *gen, int n_gen,
                                    char **text, size_t *len, ct_err *err);
// The text one token stands for inside a text (leading spaces kept, byte tokens as their
// byte): the decoders without Strip. malloc'ed; *len bytes.
ct_status ct_tokenizer_token_text(const ct_tokenizer *t, int id, char **text, size_t *len, ct_err *err);
// The stored string of one token (byte-level tokens in their unicode-mapped form); NULL if out
// of range.
const char *ct_tokenizer_piece(const ct_tokenizer *t, int id);
int ct_tokenizer_vocab_size(const ct_tokenizer *t);
// Binds t to a model whose vocabulary has vocab_size ids (the rows of its embedding). Every id
// encoding can give from ordinary text (a tokenizer.json's model vocabulary and merge results,
// its template and unknown tokens, BOS; every token of a llama2.c file) must be below
// vocab_size, else BAD_SHAPE naming both sizes. Added tokens may lie beyond it (Gemma-3's
// tokenizer has 262,145 ids, its <image_soft_token> at 262,144, for the 262,144 rows of
// gemma-3-1b): encode then refuses a text that holds one (OUT_OF_RANGE naming the token).
ct_status ct_tokenizer_fit(ct_tokenizer *t, int vocab_size, ct_err *err);
int ct_tokenizer_bos(const ct_tokenizer *t);   // -1 when there is none
int ct_tokenizer_eos(const ct_tokenizer *t);
// Id of a token string exactly as stored, or -1.
int ct_tokenizer_lookup(const ct_tokenizer *t, const char *piece);

#endif
