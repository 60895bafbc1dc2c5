// tokenizer.c - llama2.c tokenizer files and the parts every tokenizer shares.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "formats/tokenizer_impl.h"

// ----------------------------------------------------------------------------
// Helpers

static uint64_t hash_bytes(const char *s, int n) {
    uint64_t h = 1469598103934665603ULL;   // FNV-1a
    for (int i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

int ct_strmap_init(ct_strmap *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 1) cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->lens = calloc(cap, sizeof *m->lens);
    m->vals = calloc(cap, sizeof *m->vals);
    m->cap = cap;
    return m->keys && m->lens && m->vals;
}

void ct_strmap_free(ct_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

int ct_strmap_put(ct_strmap *m, const char *key, int len, int val) {
    size_t i = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, (size_t)len) == 0) {
            m->vals[i] = val;   // later entries win, as in a dict
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = key;
    m->lens[i] = len;
    m->vals[i] = val;
    return 1;
}

int ct_strmap_get(const ct_strmap *m, const char *key, int len) {
    if (!m->cap) return -1;
    size_t i = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, (size_t)len) == 0) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

int ct_utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

int ct_utf8_valid(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int k = ct_utf8_len((const unsigned char *)s + i, n - i, &cp);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

int ct_utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int ct_buf_put(ct_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

int ct_ibuf_push(ct_ibuf *b, int v) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        int *p = realloc(b->p, sizeof *p * (size_t)cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = v;
    return 1;
}

// ----------------------------------------------------------------------------
// Common API

void ct_tokenizer_free(ct_tokenizer *t) {
    if (!t) return;
    if (t->pieces)
        for (int i = 0; i < t->n_vocab; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->piece_lens);
    free(t->scores);
    free(t->special);
    ct_strmap_free(&t->map);
    ct_hf_free(t->hf);
    free(t);
}

const char *ct_tokenizer_piece(const ct_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->pieces[id] : NULL;
}

int ct_tokenizer_vocab_size(const ct_tokenizer *t) { return t->n_vocab; }

ct_status ct_tokenizer_fit(ct_tokenizer *t, int vocab_size, ct_err *err) {
    // every piece of a llama2.c file is ordinary; a tokenizer.json's ordinary ids are its
    // model's vocabulary, merge results and template tokens, beside which added tokens may lie
    int max = t->kind == CT_TOK_HF ? ct_hf_ordinary_max(t) : t->n_vocab - 1;
    if (t->bos > max) max = t->bos;
    if (max >= vocab_size) {
        const char *p = ct_tokenizer_piece(t, max);
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "the tokenizer has %d ids, its ordinary tokens up to id %d ('%.40s'), "
                       "and does not fit the model's vocabulary of %d (vocab_size): every token but added ones must be "
                       "below it", t->n_vocab, max, p ? p : "", vocab_size);
    }
    t->limit = vocab_size < t->n_vocab ? vocab_size : 0;
    return CT_OK;
}
int ct_tokenizer_bos(const ct_tokenizer *t) { return t->bos; }
int ct_tokenizer_eos(const ct_tokenizer *t) { return t->eos; }

int ct_tokenizer_lookup(const ct_tokenizer *t, const char *piece) {
    return ct_strmap_get(&t->map, piece, (int)strlen(piece));
}

ct_status ct_tokenizer_load(ct_ctx *ctx, ct_tokenizer **out, const char *path, ct_err *err) {
    *out = NULL;
    size_t n = strlen(path);
    char *text;
    size_t len;
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0) {
        ct_status rc = ct_read_file(ctx, path, &text, &len, 512u << 20, err);
        if (rc) return rc;
        // tokenizer_config.json beside it, when present
        char cfg_path[1200], *cfg = NULL;
        size_t cfg_len = 0;
        snprintf(cfg_path, sizeof cfg_path, "%.*stokenizer_config.json",
                 (int)(strrchr(path, '/') ? strrchr(path, '/') - path + 1 : 0), path);
        if (ct_is_file(cfg_path) && (rc = ct_read_file(ctx, cfg_path, &cfg, &cfg_len, 64u << 20, err))) {
            free(text);
            return rc;
        }
        rc = ct_tokenizer_parse_json(out, text, len, cfg, cfg_len, err);
        free(text);
        free(cfg);
        if (rc) {
            ct_err_where(err, path);
        }
        return rc;
    }
    ct_status rc = ct_read_file(ctx, path, &text, &len, 256u << 20, err);
    if (rc) return rc;
    rc = ct_tokenizer_parse_llama2c(out, (const uint8_t *)text, len, 0, err);
    free(text);
    if (rc) {
        ct_err_where(err, path);
    }
    return rc;
}

static ct_status check_text(const char *text, size_t len, ct_err *err) {
    if (!ct_utf8_valid(text, len)) {
        size_t i = 0;
        uint32_t cp;
        while (i < len) {
            int k = ct_utf8_len((const unsigned char *)text + i, len - i, &cp);
            if (!k) break;
            i += (size_t)k;
        }
        return ct_fail(err, CT_STATUS_BAD_UTF8, "encode: text is not valid UTF-8 (byte 0x%02X at offset %zu)",
                       (unsigned char)text[i], i);
    }
    return CT_OK;
}

// ----------------------------------------------------------------------------
// llama2.c tokenizer

ct_status ct_tokenizer_parse_llama2c(ct_tokenizer **out, const uint8_t *buf, size_t size, int n_vocab,
                                     ct_err *err) {
    *out = NULL;
    if (size < 4) return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: %zu bytes, expected a 4-byte header", size);
    int32_t max_len;
    memcpy(&max_len, buf, 4);
    if (max_len <= 0 || max_len > 65536)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: max_token_length %d, expected 1..65536", max_len);
    // count entries (or check the requested count fits)
    size_t off = 4;
    int count = 0;
    while (off < size && (n_vocab == 0 || count < n_vocab)) {
        int32_t len;
        if (size - off < 8)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: truncated at token %d (offset %zu)", count, off);
        memcpy(&len, buf + off + 4, 4);
        if (len < 0 || len > max_len || (size_t)len > size - off - 8)
            return ct_fail(err, CT_STATUS_BAD_FORMAT,
                           "llama2.c tokenizer: token %d has length %d; expected 0..%d within the file", count, len, max_len);
        off += 8 + (size_t)len;
        if (++count > (1 << 24)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: too many tokens");
    }
    if (n_vocab && count < n_vocab)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: %d tokens, the model needs %d", count, n_vocab);
    if (count < 3) return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: %d tokens, expected at least 3", count);
    ct_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    t->kind = CT_TOK_LLAMA2C;
    t->n_vocab = count;
    t->bos = 1;
    t->eos = 2;
    t->pieces = calloc((size_t)count, sizeof *t->pieces);
    t->piece_lens = calloc((size_t)count, sizeof *t->piece_lens);
    t->scores = calloc((size_t)count, sizeof *t->scores);
    t->special = calloc((size_t)count, 1);
    if (!t->pieces || !t->piece_lens || !t->scores || !t->special || !ct_strmap_init(&t->map, (size_t)count)) {
        ct_tokenizer_free(t);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    off = 4;
    for (int i = 0; i < count; i++) {
        int32_t len;
        memcpy(&t->scores[i], buf + off, 4);
        memcpy(&len, buf + off + 4, 4);
        t->pieces[i] = malloc((size_t)len + 1);
        if (!t->pieces[i]) {
            ct_tokenizer_free(t);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
        memcpy(t->pieces[i], buf + off + 8, (size_t)len);
        t->pieces[i][len] = 0;
        t->piece_lens[i] = len;
        off += 8 + (size_t)len;
        if (!ct_utf8_valid(t->pieces[i], (size_t)len)) {
            ct_tokenizer_free(t);
            return ct_fail(err, CT_STATUS_BAD_UTF8, "llama2.c tokenizer: token %d is not valid UTF-8", i);
        }
        if (!isfinite(t->scores[i])) {
            ct_tokenizer_free(t);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c tokenizer: token %d has a non-finite score", i);
        }
        ct_strmap_put(&t->map, t->pieces[i], len, i);
    }
    t->special[1] = t->special[2] = 1;
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", b);
        t->byte_ids[b] = ct_strmap_get(&t->map, p, 6);
    }
    *out = t;
    return CT_OK;
}

// Score-ordered merges as llama2.c's encoder does them: tokens (n) merged in place.
static ct_status llama2c_merge(const ct_tokenizer *t, ct_ibuf *ids, ct_err *err) {
    char *tmp = NULL;
    size_t tmp_cap = 0;
    for (;;) {
        float best = -1e10f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i + 1 < ids->n; i++) {
            int a = ids->p[i], b = ids->p[i + 1];
            size_t la = (size_t)t->piece_lens[a], lb = (size_t)t->piece_lens[b];
            if (la + lb + 1 > tmp_cap) {
                tmp_cap = 2 * (la + lb + 1);
                char *p = realloc(tmp, tmp_cap);
                if (!p) {
                    free(tmp);
                    return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                }
                tmp = p;
            }
            memcpy(tmp, t->pieces[a], la);
            memcpy(tmp + la, t->pieces[b], lb);
            int id = ct_strmap_get(&t->map, tmp, (int)(la + lb));
            if (id >= 0 && t->scores[id] > best) {
                best = t->scores[id];
                best_id = id;
                best_i = i;
            }
        }
        if (best_i < 0) break;
        ids->p[best_i] = best_id;
        memmove(ids->p + best_i + 1, ids->p + best_i + 2, sizeof(int) * (size_t)(ids->n - best_i - 2));
        ids->n--;
    }
    free(tmp);
    return CT_OK;
}

static ct_status llama2c_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special, int **out,
                                int *n_out, ct_err *err) {
    ct_ibuf ids = {0};
    int ok = 1;
    if (add_special) ok = ct_ibuf_push(&ids, t->bos);
    int space = ct_strmap_get(&t->map, " ", 1);
    if (len > 0 && space >= 0) ok = ok && ct_ibuf_push(&ids, space);   // dummy prefix
    size_t i = 0;
    while (ok && i < len) {
        uint32_t cp;
        int k = ct_utf8_len((const unsigned char *)text + i, len - i, &cp);
        int id = ct_strmap_get(&t->map, text + i, k);
        if (id >= 0) {
            ok = ct_ibuf_push(&ids, id);
        } else {
            for (int j = 0; ok && j < k; j++) {
                int b = t->byte_ids[(unsigned char)text[i + j]];
                if (b < 0) {
                    free(ids.p);
                    return ct_fail(err, CT_STATUS_NOT_FOUND, "encode: no token for byte 0x%02X and no <0x%02X> fallback",
                                   (unsigned char)text[i + j], (unsigned char)text[i + j]);
                }
                ok = ct_ibuf_push(&ids, b);
            }
        }
        i += (size_t)k;
    }
    if (!ok) {
        free(ids.p);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    // merge only the text part (never across BOS)
    ct_ibuf body = {ids.p + (add_special ? 1 : 0), ids.n - (add_special ? 1 : 0), 0};
    ct_status rc = llama2c_merge(t, &body, err);
    ids.n = body.n + (add_special ? 1 : 0);
    if (rc) {
        free(ids.p);
        return rc;
    }
    *out = ids.p;
    *n_out = ids.n;
    if (!ids.p) {
        *out = malloc(sizeof(int));
        if (!*out) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    return CT_OK;
}

static ct_status llama2c_decode(const ct_tokenizer *t, const int *ids, int n, int skip_special, char **text,
                                size_t *len, ct_err *err) {
    ct_buf b = {0};
    int ok = ct_buf_put(&b, "", 0), started = 0;
    for (int i = 0; ok && i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            free(b.p);
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "decode: id %d at index %d outside 0..%d", id, i, t->n_vocab - 1);
        }
        if (t->special[id]) {
            if (!skip_special) ok = ct_buf_put(&b, id == t->bos ? "<s>" : "</s>", id == t->bos ? 3 : 4);
            continue;
        }
        const char *p = t->pieces[id];
        size_t pl = (size_t)t->piece_lens[id];
        unsigned int byte;
        char c;
        if (pl == 6 && sscanf(p, "<0x%02X%c", &byte, &c) == 2 && c == '>') {
            char ch = (char)byte;
            ok = ct_buf_put(&b, &ch, 1);
        } else {
            if (!started && pl && p[0] == ' ') p++, pl--;   // the dummy prefix
            ok = ct_buf_put(&b, p, pl);
        }
        started = 1;
    }
    if (!ok) {
        free(b.p);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    *text = b.p;
    *len = b.n;
    return CT_OK;
}

ct_status ct_tokenizer_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special, int **ids,
                              int *n_ids, ct_err *err) {
    *ids = NULL;
    *n_ids = 0;
    ct_status rc = check_text(text, len, err);
    if (rc) return rc;
    if (t->kind == CT_TOK_LLAMA2C) return llama2c_encode(t, text, len, add_special, ids, n_ids, err);
    return ct_hf_encode(t, text, len, add_special, ids, n_ids, err);
}

ct_status ct_tokenizer_token_text(const ct_tokenizer *t, int id, char **text, size_t *len, ct_err *err) {
    *text = NULL;
    *len = 0;
    if (id < 0 || id >= t->n_vocab || !t->pieces[id])
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "token id %d is not in the vocabulary 0..%d", id, t->n_vocab - 1);
    if (t->kind == CT_TOK_HF) return ct_hf_decode_nostrip(t, &id, 1, text, len, err);
    unsigned int byte;
    char c;
    const char *p = t->pieces[id];
    size_t n = (size_t)t->piece_lens[id];
    char b;
    if (n == 6 && sscanf(p, "<0x%02X%c", &byte, &c) == 2 && c == '>') b = (char)byte, p = &b, n = 1;
    // llama2.c's exports write the control pieces with newlines around them ("\n<s>\n"): shown
    // as the tokens' names, as Hugging Face's decode shows them
    if (n > 2 && p[0] == '\n' && p[n - 1] == '\n' && p[1] == '<' && p[n - 2] == '>') p++, n -= 2;
    *text = malloc(n + 1);
    if (!*text) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    memcpy(*text, p, n);
    (*text)[n] = 0;
    *len = n;
    return CT_OK;
}

ct_status ct_tokenizer_decode(const ct_tokenizer *t, const int *ids, int n_ids, int skip_special, char **text,
                              size_t *len, ct_err *err) {
    *text = NULL;
    *len = 0;
    if (t->kind == CT_TOK_LLAMA2C) return llama2c_decode(t, ids, n_ids, skip_special, text, len, err);
    return ct_hf_decode(t, ids, n_ids, skip_special, text, len, err);
}

ct_status ct_tokenizer_continuation(const ct_tokenizer *t, const int *prompt, int n, const int *gen, int n_gen,
                                    char **text, size_t *len, ct_err *err) {
    *text = NULL;
    *len = 0;
    int *all = malloc(sizeof(int) * (size_t)(n + n_gen + 1));
    char *full = NULL, *prefix = NULL;
    size_t full_len = 0, prefix_len = 0;
    ct_status rc = all ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        memcpy(all, prompt, sizeof(int) * (size_t)n);
        memcpy(all + n, gen, sizeof(int) * (size_t)n_gen);
        rc = ct_tokenizer_decode(t, all, n + n_gen, 1, &full, &full_len, err);
    }
    if (!rc) rc = ct_tokenizer_decode(t, prompt, n, 1, &prefix, &prefix_len, err);
    if (!rc && prefix_len <= full_len && memcmp(full, prefix, prefix_len) == 0) {
        memmove(full, full + prefix_len, full_len - prefix_len + 1);   // with the NUL
        full_len -= prefix_len;
    }
    free(all), free(prefix);
    if (rc) {
        free(full);
        return rc;
    }
    *text = full;
    *len = full_len;
    return CT_OK;
}
