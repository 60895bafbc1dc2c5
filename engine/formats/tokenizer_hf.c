// tokenizer_hf.c - Hugging Face tokenizer.json with model type BPE.
//
// Pipeline (as the tokenizers library runs it): split out added tokens (longest match) ->
// normalizers (NFC, Prepend, Replace) -> pre-tokenizers (Split by the GPT-2 / Llama-3 / Qwen2
// regexes or a string, ByteLevel) -> BPE by merge rank (leftmost first among equal ranks),
// ignore_merges, byte fallback to <0xHH> -> post-processor (TemplateProcessing special tokens).
// Decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip. Regex classes follow Unicode:
// \p{L} and \p{N} by general category, \s as the White_Space property.
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "formats/tokenizer_impl.h"

enum { NORM_NFC, NORM_PREPEND, NORM_REPLACE };
enum { PRE_REGEX, PRE_STRING, PRE_BYTELEVEL };
enum { RX_GPT2, RX_LLAMA3, RX_QWEN2 };
enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP };

#define MAX_STEPS 16

typedef struct {
    int type;
    char *a, *b;   // prepend text / replace pattern and content
} norm_step;

typedef struct {
    int type;
    int regex;           // RX_*
    int merged_prev;     // PRE_STRING: MergedWithPrevious (else Isolated)
    char *str;
    int add_prefix_space, use_regex;   // ByteLevel
} pre_step;

typedef struct {
    int type;
    char *a, *b;
    int start, stop;
} dec_step;

typedef struct {
    uint64_t *keys;   // (left id << 32 | right id) + 1, 0 = empty
    int *rank, *result;
    size_t cap;
} merge_map;

typedef struct {
    const char *content;   // borrowed from the tokenizer's pieces
    int len, id, special, lstrip, rstrip;
} added_token;

struct ct_hf_tok {
    int n_norm, n_pre, n_dec;
    norm_step norm[MAX_STEPS];
    pre_step pre[MAX_STEPS];
    dec_step dec[MAX_STEPS];
    merge_map merges;
    int byte_fallback, ignore_merges, unk_id;
    int ordinary_max;           // the largest id of model.vocab and of the merges' results
    int n_added;
    added_token *added;
    ct_strmap added_map;   // content -> index into added
    int *added_lens;       // distinct content lengths, descending
    int n_added_lens;
    int n_prefix, n_suffix;
    int prefix[8], suffix[8];   // post-processor special ids around the sequence
    uint32_t byte2uni[256];
    int uni2byte[512];          // code point (< 512) -> byte, -1 if none
    int byte_tok[256];          // id of <0xHH>, -1 if absent
};

// ----------------------------------------------------------------------------
// Small helpers

static char *dupstr(const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int merges_init(merge_map *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 1) cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->result = malloc(cap * sizeof *m->result);
    m->cap = cap;
    return m->keys && m->rank && m->result;
}

static void merges_put(merge_map *m, int a, int b, int rank, int result) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = mix64(key) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == key) return;   // first (lowest rank) wins
    m->keys[i] = key;
    m->rank[i] = rank;
    m->result[i] = result;
}

static int merges_get(const merge_map *m, int a, int b, int *result) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = mix64(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == key) {
            *result = m->result[i];
            return m->rank[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

void ct_hf_free(struct ct_hf_tok *hf) {
    if (!hf) return;
    for (int i = 0; i < hf->n_norm; i++) free(hf->norm[i].a), free(hf->norm[i].b);
    for (int i = 0; i < hf->n_pre; i++) free(hf->pre[i].str);
    for (int i = 0; i < hf->n_dec; i++) free(hf->dec[i].a), free(hf->dec[i].b);
    free(hf->merges.keys);
    free(hf->merges.rank);
    free(hf->merges.result);
    free(hf->added);
    ct_strmap_free(&hf->added_map);
    free(hf->added_lens);
    free(hf);
}

// A JSON number that is an integer in [lo, hi], else def (NaN and huge values included).
static int json_int_in(const cJSON *v, int lo, int hi, int def) {
    if (!cJSON_IsNumber(v)) return def;
    double d = v->valuedouble;
    return d >= lo && d <= hi && d == (double)(int)d ? (int)d : def;
}

static int is_letter(uint32_t c) {
    if (c < 128) return (c | 32) >= 'a' && (c | 32) <= 'z';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c) {
    if (c < 128) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

// Unicode White_Space property.
static int is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }

// ----------------------------------------------------------------------------
// Regex pre-tokenizers, written out by hand. cps (n,) code points; returns the end of the
// match starting at i (always > i).

static int lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? (int)(c | 32) : (int)c; }

static int match_contraction(const uint32_t *c, int n, int i, int fold) {
    if (c[i] != '\'' || i + 1 >= n) return 0;
    int a = fold ? lower_ascii(c[i + 1]) : (int)c[i + 1];
    int b = i + 2 < n ? (fold ? lower_ascii(c[i + 2]) : (int)c[i + 2]) : -1;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static int regex_match(int kind, const uint32_t *c, int n, int i) {
    int k, j;
    if (kind == RX_GPT2) {
        // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
        if ((k = match_contraction(c, n, i, 0))) return i + k;
        j = i + (c[i] == ' ' && i + 1 < n);
        if (is_letter(c[j])) {
            while (j < n && is_letter(c[j])) j++;
            return j;
        }
        if (is_number(c[j])) {
            while (j < n && is_number(c[j])) j++;
            return j;
        }
        if (!is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) {
            while (j < n && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) j++;
            return j;
        }
    } else {
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
        // |\s*[\r\n]+|\s+(?!\S)|\s+      (Qwen2: \p{N} alone)
        if ((k = match_contraction(c, n, i, 1))) return i + k;
        j = i;
        if (!is_nl(c[j]) && !is_letter(c[j]) && !is_number(c[j]) && j + 1 < n && is_letter(c[j + 1])) j++;
        if (is_letter(c[j])) {
            while (j < n && is_letter(c[j])) j++;
            return j;
        }
        if (is_number(c[i])) {
            int max = kind == RX_LLAMA3 ? 3 : 1;
            for (j = i; j < n && j - i < max && is_number(c[j]);) j++;
            return j;
        }
        j = i + (c[i] == ' ' && i + 1 < n && !is_space(c[i + 1]) && !is_letter(c[i + 1]) && !is_number(c[i + 1]));
        if (!is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) {
            while (j < n && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) j++;
            while (j < n && is_nl(c[j])) j++;
            return j;
        }
        // \s*[\r\n]+ : up to and including the last newline of the whitespace run
        int e = i, last_nl = -1;
        while (e < n && is_space(c[e])) {
            if (is_nl(c[e])) last_nl = e;
            e++;
        }
        if (last_nl >= 0) {
            j = last_nl + 1;
            while (j < n && is_nl(c[j])) j++;
            return j;
        }
    }
    // \s+(?!\S) | \s+
    int e = i;
    while (e < n && is_space(c[e])) e++;
    if (e > i) {
        if (e == n || e - 1 == i) return e;
        return e - 1;
    }
    return i + 1;   // unreachable for the patterns above; keeps progress guaranteed
}

static const struct {
    const char *pattern;
    int kind;
} known_regexes[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", RX_LLAMA3},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", RX_QWEN2},
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", RX_GPT2},
};

// ----------------------------------------------------------------------------
// Loading

static ct_status parse_normalizer(struct ct_hf_tok *hf, const cJSON *n, ct_err *err) {
    if (!n || cJSON_IsNull(n)) return CT_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(type)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: normalizer without a type");
    const char *t = type->valuestring;
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            ct_status rc = parse_normalizer(hf, e, err);
            if (rc) return rc;
        }
        return CT_OK;
    }
    if (hf->n_norm == MAX_STEPS) return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: too many normalizers");
    norm_step *s = &hf->norm[hf->n_norm];
    if (strcmp(t, "NFC") == 0) {
        s->type = NORM_NFC;
    } else if (strcmp(t, "Prepend") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(p)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: Prepend without a string");
        s->type = NORM_PREPEND;
        s->a = dupstr(p->valuestring);
    } else if (strcmp(t, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(pat) || !cJSON_IsString(content) || !pat->valuestring[0])
            return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: Replace normalizer needs a non-empty String pattern "
                           "and a content (regex patterns are not supported)");
        s->type = NORM_REPLACE;
        s->a = dupstr(pat->valuestring);
        s->b = dupstr(content->valuestring);
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: normalizer '%.40s' is not supported "
                       "(supported: NFC, Prepend, Replace, Sequence)", t);
    }
    hf->n_norm++;
    return CT_OK;
}

static ct_status parse_pre(struct ct_hf_tok *hf, const cJSON *n, ct_err *err) {
    if (!n || cJSON_IsNull(n)) return CT_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(type)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: pre_tokenizer without a type");
    const char *t = type->valuestring;
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "pretokenizers")) {
            ct_status rc = parse_pre(hf, e, err);
            if (rc) return rc;
        }
        return CT_OK;
    }
    if (hf->n_pre == MAX_STEPS) return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: too many pre-tokenizers");
    pre_step *s = &hf->pre[hf->n_pre];
    if (strcmp(t, "ByteLevel") == 0) {
        s->type = PRE_BYTELEVEL;
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(n, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(n, "use_regex");
        s->add_prefix_space = cJSON_IsTrue(aps);
        s->use_regex = ur ? cJSON_IsTrue(ur) : 1;
        s->regex = RX_GPT2;
    } else if (strcmp(t, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(n, "behavior");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "invert")))
            return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: inverted Split is not supported");
        const char *b = cJSON_IsString(beh) ? beh->valuestring : "";
        if (cJSON_IsString(rx)) {
            if (strcmp(b, "Isolated") != 0)
                return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: Split regex behavior '%.32s' (supported: Isolated)", b);
            s->type = PRE_REGEX;
            s->regex = -1;
            for (size_t i = 0; i < sizeof known_regexes / sizeof *known_regexes; i++)
                if (strcmp(rx->valuestring, known_regexes[i].pattern) == 0) s->regex = known_regexes[i].kind;
            if (s->regex < 0)
                return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: Split regex '%.120s' is not one ctrace knows "
                               "(GPT-2, Llama-3, Qwen2)", rx->valuestring);
        } else if (cJSON_IsString(str) && str->valuestring[0]) {
            if (strcmp(b, "Isolated") != 0 && strcmp(b, "MergedWithPrevious") != 0)
                return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: Split behavior '%.32s' (supported: Isolated, "
                               "MergedWithPrevious)", b);
            s->type = PRE_STRING;
            s->str = dupstr(str->valuestring);
            s->merged_prev = strcmp(b, "MergedWithPrevious") == 0;
        } else {
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: Split needs a Regex or a non-empty String pattern");
        }
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: pre-tokenizer '%.40s' is not supported "
                       "(supported: ByteLevel, Split, Sequence)", t);
    }
    hf->n_pre++;
    return CT_OK;
}

static ct_status parse_decoder(struct ct_hf_tok *hf, const cJSON *n, ct_err *err) {
    if (!n || cJSON_IsNull(n)) return CT_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(type)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: decoder without a type");
    const char *t = type->valuestring;
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "decoders")) {
            ct_status rc = parse_decoder(hf, e, err);
            if (rc) return rc;
        }
        return CT_OK;
    }
    if (hf->n_dec == MAX_STEPS) return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: too many decoders");
    dec_step *s = &hf->dec[hf->n_dec];
    if (strcmp(t, "ByteLevel") == 0) s->type = DEC_BYTELEVEL;
    else if (strcmp(t, "ByteFallback") == 0) s->type = DEC_BYTEFALLBACK;
    else if (strcmp(t, "Fuse") == 0) s->type = DEC_FUSE;
    else if (strcmp(t, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(pat) || !cJSON_IsString(content) || !pat->valuestring[0])
            return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: Replace decoder needs a String pattern");
        s->type = DEC_REPLACE;
        s->a = dupstr(pat->valuestring);
        s->b = dupstr(content->valuestring);
    } else if (strcmp(t, "Strip") == 0) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(n, "content");
        s->type = DEC_STRIP;
        s->a = dupstr(cJSON_IsString(content) ? content->valuestring : " ");
        s->start = json_int_in(cJSON_GetObjectItemCaseSensitive(n, "start"), 0, 1000, 0);
        s->stop = json_int_in(cJSON_GetObjectItemCaseSensitive(n, "stop"), 0, 1000, 0);
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: decoder '%.40s' is not supported "
                       "(supported: ByteLevel, ByteFallback, Fuse, Replace, Strip, Sequence)", t);
    }
    hf->n_dec++;
    return CT_OK;
}

// Special ids the post-processor puts before and after the sequence.
static ct_status parse_post(struct ct_hf_tok *hf, const cJSON *n, const ct_tokenizer *t, ct_err *err) {
    if (!n || cJSON_IsNull(n)) return CT_OK;
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "type"));
    if (!type) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: post_processor without a type");
    if (strcmp(type, "ByteLevel") == 0) return CT_OK;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "processors")) {
            ct_status rc = parse_post(hf, e, t, err);
            if (rc) return rc;
        }
        return CT_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: post_processor '%.40s' is not supported "
                       "(supported: TemplateProcessing, ByteLevel, Sequence)", type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single"), *item;
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
    int seen_seq = 0;
    cJSON_ArrayForEach(item, single) {
        if (cJSON_GetObjectItemCaseSensitive(item, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "id"));
        if (!name) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: TemplateProcessing item without an id");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name), "ids"), *v;
        if (!cJSON_IsArray(ids))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: TemplateProcessing special token '%.40s' has no ids", name);
        cJSON_ArrayForEach(v, ids) {
            int id = json_int_in(v, 0, t->n_vocab - 1, -1);
            if (id < 0)
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: special token '%.40s' id out of range", name);
            int *cnt = seen_seq ? &hf->n_suffix : &hf->n_prefix;
            int *arr = seen_seq ? hf->suffix : hf->prefix;
            if (*cnt == 8) return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: too many template tokens");
            arr[(*cnt)++] = id;
        }
    }
    return CT_OK;
}

static int cmp_int_desc(const void *a, const void *b) { return *(const int *)b - *(const int *)a; }

static ct_status add_piece(ct_tokenizer *t, int id, const char *s, ct_err *err) {
    if (id < 0 || id >= t->n_vocab)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: token id %d outside 0..%d", id, t->n_vocab - 1);
    if (!ct_utf8_valid(s, strlen(s)))
        return ct_fail(err, CT_STATUS_BAD_UTF8, "tokenizer.json: token %d is not valid UTF-8", id);
    free(t->pieces[id]);
    t->pieces[id] = dupstr(s);
    if (!t->pieces[id]) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    t->piece_lens[id] = (int)strlen(s);
    return CT_OK;
}

// Token id of a tokenizer_config.json entry ("<s>" or {"content": "<s>"}), or -1.
static int config_token(const ct_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? ct_tokenizer_lookup(t, v->valuestring) : -1;
}

static ct_status parse_json(ct_tokenizer *t, const cJSON *j, const cJSON *cfg, ct_err *err) {
    struct ct_hf_tok *hf = t->hf;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const char *mtype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(model) || !cJSON_IsObject(vocab))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: expected \"model\" with a \"vocab\" object");
    if (!mtype || strcmp(mtype, "BPE") != 0)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: model type '%.32s'; expected BPE", mtype ? mtype : "?");
    if (!cJSON_IsArray(merges)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: model.merges must be an array");
    const cJSON *e, *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    // vocabulary size: one past the largest id of vocab and added tokens
    int max_id = -1, n_entries = 0;
    cJSON_ArrayForEach(e, vocab) {
        int id = json_int_in(e, 0, (1 << 24) - 1, -1);
        if (id < 0) return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: vocab entry '%.40s' has an invalid id", e->string);
        if (id > max_id) max_id = id;
        n_entries++;
    }
    hf->ordinary_max = max_id;
    cJSON_ArrayForEach(e, added) {
        int id = json_int_in(cJSON_GetObjectItemCaseSensitive(e, "id"), 0, (1 << 24) - 1, -1);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (id < 0 || !cJSON_IsString(content) || !content->valuestring[0])
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: added token needs an id in 0..16777215 and non-empty content");
        if (id > max_id) max_id = id;
        n_entries++;
    }
    t->n_vocab = max_id + 1;
    t->pieces = calloc((size_t)t->n_vocab + 1, sizeof *t->pieces);
    t->piece_lens = calloc((size_t)t->n_vocab + 1, sizeof *t->piece_lens);
    t->special = calloc((size_t)t->n_vocab + 1, 1);
    if (!t->pieces || !t->piece_lens || !t->special || !ct_strmap_init(&t->map, (size_t)n_entries))
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_status rc;
    cJSON_ArrayForEach(e, vocab) {
        if ((rc = add_piece(t, (int)e->valuedouble, e->string, err))) return rc;
    }
    // added tokens (may also be in vocab)
    int n_added = cJSON_GetArraySize(added);
    hf->added = calloc((size_t)n_added + 1, sizeof *hf->added);
    hf->added_lens = calloc((size_t)n_added + 1, sizeof *hf->added_lens);
    unsigned char *taken = calloc((size_t)t->n_vocab + 1, 1);   // ids of the added tokens so far
    if (!taken || !hf->added || !hf->added_lens || !ct_strmap_init(&hf->added_map, (size_t)n_added)) {
        free(taken);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    cJSON_ArrayForEach(e, added) {
        int id = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "id"));
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
        // an added token keeps its piece: a second one with its id would free it under the first
        if (taken[id]) {
            free(taken);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: added token %d has id %d, as an earlier one; "
                           "expected distinct ids", hf->n_added, id);
        }
        taken[id] = 1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "normalized")) && hf->n_norm > 0) {
            free(taken);
            return ct_fail(err, CT_STATUS_UNSUPPORTED, "tokenizer.json: added token '%.40s' is normalized; only "
                           "unnormalized added tokens are supported", content);
        }
        if ((rc = add_piece(t, id, content, err))) {
            free(taken);
            return rc;
        }
        added_token *a = &hf->added[hf->n_added++];
        a->content = t->pieces[id];
        a->len = t->piece_lens[id];
        a->id = id;
        a->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        t->special[id] = (unsigned char)a->special;
    }
    free(taken);
    // string -> id for the whole vocabulary; then added tokens (their id wins, as in the library)
    for (int i = 0; i < t->n_vocab; i++)
        if (t->pieces[i]) ct_strmap_put(&t->map, t->pieces[i], t->piece_lens[i], i);
    for (int i = 0; i < hf->n_added; i++) {
        added_token *a = &hf->added[i];
        ct_strmap_put(&t->map, a->content, a->len, a->id);
        ct_strmap_put(&hf->added_map, a->content, a->len, i);
        int seen = 0;
        for (int k = 0; k < hf->n_added_lens && !seen; k++) seen = hf->added_lens[k] == a->len;
        if (!seen) hf->added_lens[hf->n_added_lens++] = a->len;
    }
    qsort(hf->added_lens, (size_t)hf->n_added_lens, sizeof(int), cmp_int_desc);
    // merges: "a b" strings or [a, b] pairs
    if (!merges_init(&hf->merges, (size_t)cJSON_GetArraySize(merges))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    int rank = 0;
    ct_buf tmp = {0};
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp) {
                free(tmp.p);
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: merge %d '%.40s' has no space", rank, e->valuestring);
            }
            a = e->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring, la = strlen(a);
            b = cJSON_GetArrayItem(e, 1)->valuestring, lb = strlen(b);
        } else {
            free(tmp.p);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: merge %d is neither \"a b\" nor [a, b]", rank);
        }
        int ia = ct_strmap_get(&t->map, a, (int)la), ib = ct_strmap_get(&t->map, b, (int)lb);
        tmp.n = 0;
        if (!ct_buf_put(&tmp, a, la) || !ct_buf_put(&tmp, b, lb)) {
            free(tmp.p);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
        int ir = ct_strmap_get(&t->map, tmp.p, (int)tmp.n);
        if (ia >= 0 && ib >= 0 && ir >= 0) {
            merges_put(&hf->merges, ia, ib, rank, ir);
            if (ir > hf->ordinary_max) hf->ordinary_max = ir;
        }
        rank++;
    }
    free(tmp.p);
    hf->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    hf->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const char *unk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token"));
    hf->unk_id = unk ? ct_tokenizer_lookup(t, unk) : -1;
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", b);
        hf->byte_tok[b] = ct_strmap_get(&t->map, p, 6);
    }
    if ((rc = parse_normalizer(hf, cJSON_GetObjectItemCaseSensitive(j, "normalizer"), err))) return rc;
    if ((rc = parse_pre(hf, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), err))) return rc;
    if ((rc = parse_decoder(hf, cJSON_GetObjectItemCaseSensitive(j, "decoder"), err))) return rc;
    if ((rc = parse_post(hf, cJSON_GetObjectItemCaseSensitive(j, "post_processor"), t, err))) return rc;
    // BOS: the post-processor's first special token, else tokenizer_config.json's bos_token
    t->bos = hf->n_prefix > 0 ? hf->prefix[0] : config_token(t, cfg, "bos_token");
    t->eos = config_token(t, cfg, "eos_token");
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
    cJSON_ArrayForEach(e, extra) {
        int id = cJSON_IsString(e) ? ct_tokenizer_lookup(t, e->valuestring) : -1;
        if (id >= 0) t->special[id] = 1;
    }
    // GPT-2 byte <-> unicode map
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        hf->byte2uni[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int i = 0; i < 512; i++) hf->uni2byte[i] = -1;
    for (int b = 0; b < 256; b++) hf->uni2byte[hf->byte2uni[b]] = b;
    return CT_OK;
}

ct_status ct_tokenizer_parse_json(ct_tokenizer **out, const char *json, size_t len, const char *config,
                                  size_t config_len, ct_err *err) {
    *out = NULL;
    if (!ct_utf8_valid(json, len)) return ct_fail(err, CT_STATUS_BAD_UTF8, "tokenizer.json is not valid UTF-8");
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json is not a JSON object");
    }
    cJSON *cfg = config ? cJSON_ParseWithLength(config, config_len) : NULL;
    if (config && !cJSON_IsObject(cfg)) {
        cJSON_Delete(j);
        cJSON_Delete(cfg);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer_config.json is not a JSON object");
    }
    ct_tokenizer *t = calloc(1, sizeof *t);
    ct_status rc = CT_OK;
    if (!t || !(t->hf = calloc(1, sizeof *t->hf))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        t->kind = CT_TOK_HF;
        t->bos = t->eos = -1;
        rc = parse_json(t, j, cfg, err);
    }
    cJSON_Delete(j);
    cJSON_Delete(cfg);
    if (rc) {
        ct_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Encoding

typedef struct {
    const char *p;
    size_t n;
} span;

typedef struct {
    span *v;
    int n, cap;
} spans;

static int spans_push(spans *s, const char *p, size_t n) {
    if (n == 0) return 1;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        span *v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return 0;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){p, n};
    return 1;
}

// Decodes UTF-8 (valid) into code points; offs (n+1,) byte offsets.
static int to_cps(const char *s, size_t n, uint32_t **cps, int **offs) {
    *cps = malloc(sizeof(uint32_t) * (n + 1));
    *offs = malloc(sizeof(int) * (n + 1));
    if (!*cps || !*offs) return -1;
    int k = 0;
    size_t i = 0;
    while (i < n) {
        int l = ct_utf8_len((const unsigned char *)s + i, n - i, &(*cps)[k]);
        if (!l) l = 1, (*cps)[k] = 0xFFFD;
        (*offs)[k++] = (int)i;
        i += (size_t)l;
    }
    (*offs)[k] = (int)n;
    return k;
}

// Applies the normalizers to s (n bytes) into out.
static ct_status normalize(const struct ct_hf_tok *hf, const char *s, size_t n, ct_buf *out, ct_err *err) {
    ct_buf cur = {0}, next = {0};
    if (!ct_buf_put(&cur, s, n)) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int k = 0; k < hf->n_norm; k++) {
        const norm_step *st = &hf->norm[k];
        next.n = 0;
        int ok = 1;
        if (st->type == NORM_NFC) {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)cur.p, (utf8proc_ssize_t)cur.n, &dst,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            ok = m >= 0 && ct_buf_put(&next, (const char *)dst, (size_t)m);
            free(dst);
        } else if (st->type == NORM_PREPEND) {
            ok = cur.n == 0 || (ct_buf_put(&next, st->a, strlen(st->a)) && ct_buf_put(&next, cur.p, cur.n));
            if (cur.n == 0) ok = ct_buf_put(&next, "", 0);
        } else {
            size_t la = strlen(st->a), lb = strlen(st->b), i = 0;
            ok = ct_buf_put(&next, "", 0);
            while (ok && i < cur.n) {
                if (i + la <= cur.n && memcmp(cur.p + i, st->a, la) == 0) {
                    ok = ct_buf_put(&next, st->b, lb);
                    i += la;
                } else {
                    ok = ct_buf_put(&next, cur.p + i, 1);
                    i++;
                }
            }
        }
        if (!ok) {
            free(cur.p);
            free(next.p);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "normalizer failed (out of memory)");
        }
        ct_buf sw = cur;
        cur = next;
        next = sw;
        if (cur.n > 16 * n + 4096) {   // chained replacements could grow the text without bound
            free(cur.p);
            free(next.p);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "tokenizer.json: the normalizers expand %zu bytes of text to more "
                           "than %zu", n, 16 * n + 4096);
        }
    }
    free(next.p);
    *out = cur;
    return CT_OK;
}

// Splits every span of in by pre-tokenizer step st into out. Byte-level mapping happens later.
static int pre_split(const pre_step *st, const spans *in, spans *out) {
    for (int s = 0; s < in->n; s++) {
        const char *p = in->v[s].p;
        size_t n = in->v[s].n;
        if (st->type == PRE_STRING) {
            size_t ls = strlen(st->str), start = 0, i = 0;
            while (i + ls <= n) {
                if (memcmp(p + i, st->str, ls) == 0) {
                    if (st->merged_prev) {
                        if (!spans_push(out, p + start, i + ls - start)) return 0;
                    } else if (!spans_push(out, p + start, i - start) || !spans_push(out, p + i, ls)) {
                        return 0;
                    }
                    i += ls;
                    start = i;
                } else {
                    i++;
                }
            }
            if (!spans_push(out, p + start, n - start)) return 0;
            continue;
        }
        if (st->type == PRE_BYTELEVEL && !st->use_regex) {
            if (!spans_push(out, p, n)) return 0;
            continue;
        }
        uint32_t *cps;
        int *offs;
        int k = to_cps(p, n, &cps, &offs);
        int okp = k >= 0;
        for (int i = 0; okp && i < k;) {
            int e = regex_match(st->regex, cps, k, i);
            okp = spans_push(out, p + offs[i], (size_t)(offs[e] - offs[i]));
            i = e;
        }
        free(cps);
        free(offs);
        if (!okp) return 0;
    }
    return 1;
}

typedef struct {
    int id;           // -1: not in the vocabulary
    int start, end;   // bytes of the word
    int prev, next;   // linked list; -2 = removed
} symbol;

typedef struct {
    int rank, pos, left, right_id_check;
} heap_item;

static void heap_push(heap_item *h, int *n, heap_item it) {
    int i = (*n)++;
    h[i] = it;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p].rank < h[i].rank || (h[p].rank == h[i].rank && h[p].pos <= h[i].pos)) break;
        heap_item tmp = h[p];
        h[p] = h[i];
        h[i] = tmp;
        i = p;
    }
}

static heap_item heap_pop(heap_item *h, int *n) {
    heap_item top = h[0];
    h[0] = h[--(*n)];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && (h[l].rank < h[m].rank || (h[l].rank == h[m].rank && h[l].pos < h[m].pos))) m = l;
        if (r < *n && (h[r].rank < h[m].rank || (h[r].rank == h[m].rank && h[r].pos < h[m].pos))) m = r;
        if (m == i) break;
        heap_item tmp = h[m];
        h[m] = h[i];
        h[i] = tmp;
        i = m;
    }
    return top;
}

// BPE of one word (UTF-8, already byte-level mapped if needed), ids appended to out.
static int bpe_word(const ct_tokenizer *t, const char *w, size_t n, ct_ibuf *out) {
    const struct ct_hf_tok *hf = t->hf;
    if (n == 0) return 1;
    if (hf->ignore_merges) {
        int id = ct_strmap_get(&t->map, w, (int)n);
        if (id >= 0) return ct_ibuf_push(out, id);
    }
    uint32_t *cps;
    int *offs;
    int k = to_cps(w, n, &cps, &offs);
    symbol *sym = malloc(sizeof *sym * (size_t)(k + 1));
    heap_item *heap = malloc(sizeof *heap * (size_t)(2 * k + 2));
    int ok = k >= 0 && sym && heap, nh = 0;
    for (int i = 0; ok && i < k; i++) {
        sym[i] = (symbol){ct_strmap_get(&t->map, w + offs[i], offs[i + 1] - offs[i]), offs[i], offs[i + 1], i - 1,
                          i + 1 < k ? i + 1 : -1};
    }
    // candidate merge between symbol i and its next; pos = i orders equal ranks leftmost first
    for (int i = 0; ok && i + 1 < k; i++) {
        int r, res;
        if (sym[i].id >= 0 && sym[i + 1].id >= 0 && (r = merges_get(&hf->merges, sym[i].id, sym[i + 1].id, &res)) >= 0)
            heap_push(heap, &nh, (heap_item){r, sym[i].start, i, sym[i + 1].id});
    }
    while (ok && nh > 0) {
        heap_item it = heap_pop(heap, &nh);
        symbol *a = &sym[it.left];
        if (a->next == -2 || a->next < 0) continue;
        symbol *b = &sym[a->next];
        int res;
        if (a->id < 0 || b->id != it.right_id_check || merges_get(&hf->merges, a->id, b->id, &res) != it.rank) continue;
        // merge b into a
        a->id = res;
        a->end = b->end;
        int bn = b->next;
        b->next = -2;
        a->next = bn;
        if (bn >= 0) sym[bn].prev = it.left;
        int r;
        if (a->prev >= 0) {
            symbol *pv = &sym[a->prev];
            if (pv->id >= 0 && (r = merges_get(&hf->merges, pv->id, a->id, &res)) >= 0)
                heap_push(heap, &nh, (heap_item){r, pv->start, a->prev, a->id});
        }
        if (bn >= 0 && sym[bn].id >= 0 && (r = merges_get(&hf->merges, a->id, sym[bn].id, &res)) >= 0)
            heap_push(heap, &nh, (heap_item){r, a->start, it.left, sym[bn].id});
    }
    for (int i = 0; ok && k > 0 && i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            ok = ct_ibuf_push(out, sym[i].id);
        } else if (hf->byte_fallback) {
            int all = 1;
            for (int b = sym[i].start; b < sym[i].end; b++) all = all && hf->byte_tok[(unsigned char)w[b]] >= 0;
            if (all) {
                for (int b = sym[i].start; ok && b < sym[i].end; b++) ok = ct_ibuf_push(out, hf->byte_tok[(unsigned char)w[b]]);
            } else if (hf->unk_id >= 0) {
                ok = ct_ibuf_push(out, hf->unk_id);
            }
        } else if (hf->unk_id >= 0) {
            ok = ct_ibuf_push(out, hf->unk_id);
        }
    }
    free(cps);
    free(offs);
    free(sym);
    free(heap);
    return ok;
}

// Pre-tokenizes and BPE-encodes one normalized section.
static int encode_section(const ct_tokenizer *t, const char *s, size_t n, ct_ibuf *out) {
    const struct ct_hf_tok *hf = t->hf;
    spans cur = {0}, next = {0};
    int ok = spans_push(&cur, s, n), byte_level = 0;
    char *prefixed = NULL;
    for (int k = 0; ok && k < hf->n_pre; k++) {
        const pre_step *st = &hf->pre[k];
        if (st->type == PRE_BYTELEVEL) {
            byte_level = 1;
            if (st->add_prefix_space && cur.n > 0 && cur.v[0].p[0] != ' ' && !prefixed) {
                // only the section's first piece can lack its space here
                prefixed = malloc(n + 2);
                if (!prefixed) { ok = 0; break; }
                prefixed[0] = ' ';
                memcpy(prefixed + 1, s, n);
                cur.n = 0;
                spans_push(&cur, prefixed, n + 1);
            }
        }
        next.n = 0;
        ok = pre_split(st, &cur, &next);
        spans sw = cur;
        cur = next;
        next = sw;
    }
    ct_buf mapped = {0};
    for (int i = 0; ok && i < cur.n; i++) {
        if (!byte_level) {
            ok = bpe_word(t, cur.v[i].p, cur.v[i].n, out);
            continue;
        }
        mapped.n = 0;
        ok = ct_buf_put(&mapped, "", 0);
        for (size_t b = 0; ok && b < cur.v[i].n; b++) {
            char u[4];
            int l = ct_utf8_put(u, hf->byte2uni[(unsigned char)cur.v[i].p[b]]);
            ok = ct_buf_put(&mapped, u, (size_t)l);
        }
        if (ok) ok = bpe_word(t, mapped.p, mapped.n, out);
    }
    free(mapped.p);
    free(cur.v);
    free(next.v);
    free(prefixed);
    return ok;
}

static int is_space_byte_at(const char *s, size_t n, size_t i, int *len) {
    uint32_t cp;
    int l = ct_utf8_len((const unsigned char *)s + i, n - i, &cp);
    *len = l ? l : 1;
    return l && (is_space(cp) || cp == 0xFEFF);
}

// Trims trailing (or leading) whitespace of a span, as JavaScript's trimEnd/trimStart.
static void trim_span(span *sp, int end) {
    if (end) {
        while (sp->n > 0) {
            size_t i = sp->n - 1;
            while (i > 0 && ((unsigned char)sp->p[i] & 0xC0) == 0x80) i--;
            int l;
            if (!is_space_byte_at(sp->p, sp->n, i, &l)) break;
            sp->n = i;
        }
    } else {
        while (sp->n > 0) {
            int l;
            if (!is_space_byte_at(sp->p, sp->n, 0, &l)) break;
            sp->p += l;
            sp->n -= (size_t)l;
        }
    }
}

int ct_hf_ordinary_max(const ct_tokenizer *t) {
    const struct ct_hf_tok *hf = t->hf;
    int m = hf->ordinary_max;
    for (int k = 0; k < hf->n_prefix; k++) m = hf->prefix[k] > m ? hf->prefix[k] : m;
    for (int k = 0; k < hf->n_suffix; k++) m = hf->suffix[k] > m ? hf->suffix[k] : m;
    return hf->unk_id > m ? hf->unk_id : m;
}

ct_status ct_hf_encode(const ct_tokenizer *t, const char *text, size_t len, int add_special, int **ids, int *n_ids,
                       ct_err *err) {
    const struct ct_hf_tok *hf = t->hf;
    // 1. split out added tokens: at each position the longest added token that starts there
    spans sec = {0};
    ct_ibuf out = {0};
    int ok = 1;
    size_t start = 0, i = 0;
    ct_ibuf kinds = {0};   // -1 text, else index into hf->added
    while (ok && i < len) {
        int hit = -1, hit_len = 0;
        for (int k = 0; k < hf->n_added_lens && hit < 0; k++) {
            int l = hf->added_lens[k];
            if (i + (size_t)l <= len && (hit = ct_strmap_get(&hf->added_map, text + i, l)) >= 0) hit_len = l;
        }
        if (hit >= 0) {
            if (i > start) ok = spans_push(&sec, text + start, i - start) && ct_ibuf_push(&kinds, -1);
            ok = ok && spans_push(&sec, text + i, (size_t)hit_len) && ct_ibuf_push(&kinds, hit);
            i += (size_t)hit_len;
            start = i;
        } else {
            i++;
        }
    }
    if (ok && start < len) ok = spans_push(&sec, text + start, len - start) && ct_ibuf_push(&kinds, -1);
    // lstrip / rstrip of the neighbours
    for (int s = 0; ok && s < sec.n; s++) {
        if (kinds.p[s] < 0) continue;
        const added_token *a = &hf->added[kinds.p[s]];
        if (a->lstrip && s > 0 && kinds.p[s - 1] < 0) trim_span(&sec.v[s - 1], 1);
        if (a->rstrip && s + 1 < sec.n && kinds.p[s + 1] < 0) trim_span(&sec.v[s + 1], 0);
    }
    // 2. template prefix, sections, suffix
    if (add_special)
        for (int k = 0; ok && k < hf->n_prefix; k++) ok = ct_ibuf_push(&out, hf->prefix[k]);
    ct_status rc = CT_OK;
    for (int s = 0; ok && !rc && s < sec.n; s++) {
        if (kinds.p[s] >= 0) {
            const added_token *a = &hf->added[kinds.p[s]];
            if (t->limit && a->id >= t->limit) {   // an added token the model's embedding has no row for
                rc = ct_fail(err, CT_STATUS_OUT_OF_RANGE, "the text holds '%.60s', token %d of the tokenizer (%d ids), "
                             "outside the model's vocabulary of %d", a->content, a->id, t->n_vocab, t->limit);
                break;
            }
            ok = ct_ibuf_push(&out, a->id);
            continue;
        }
        if (sec.v[s].n == 0) continue;
        ct_buf norm = {0};
        if ((rc = normalize(hf, sec.v[s].p, sec.v[s].n, &norm, err))) break;
        ok = encode_section(t, norm.p, norm.n, &out);
        free(norm.p);
    }
    if (add_special)
        for (int k = 0; ok && k < hf->n_suffix; k++) ok = ct_ibuf_push(&out, hf->suffix[k]);
    free(sec.v);
    free(kinds.p);
    if (!ok && !rc) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory while encoding");
    if (rc) {
        free(out.p);
        return rc;
    }
    if (!out.p && !(out.p = malloc(sizeof(int)))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    *ids = out.p;
    *n_ids = out.n;
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Decoding: a list of byte strings run through the decoder chain.

typedef struct {
    ct_buf *v;
    int n;
} toks;

static void toks_free(toks *t) {
    for (int i = 0; i < t->n; i++) free(t->v[i].p);
    free(t->v);
}

static int is_added_id(const ct_tokenizer *t, int id) {
    const struct ct_hf_tok *hf = t->hf;
    int k = ct_strmap_get(&hf->added_map, t->pieces[id], t->piece_lens[id]);
    return k >= 0;
}

static ct_status decode_chain(const ct_tokenizer *t, const int *ids, int n, int skip_special, int strip, char **text,
                              size_t *len, ct_err *err);

ct_status ct_hf_decode(const ct_tokenizer *t, const int *ids, int n, int skip_special, char **text, size_t *len,
                       ct_err *err) {
    return decode_chain(t, ids, n, skip_special, 1, text, len, err);
}

ct_status ct_hf_decode_nostrip(const ct_tokenizer *t, const int *ids, int n, char **text, size_t *len, ct_err *err) {
    return decode_chain(t, ids, n, 0, 0, text, len, err);
}

static ct_status decode_chain(const ct_tokenizer *t, const int *ids, int n, int skip_special, int strip, char **text,
                              size_t *len, ct_err *err) {
    const struct ct_hf_tok *hf = t->hf;
    toks cur = {calloc((size_t)n + 1, sizeof(ct_buf)), 0};
    unsigned char *added = calloc((size_t)n + 1, 1);
    int ok = cur.v && added;
    for (int i = 0; ok && i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->pieces[id]) {
            toks_free(&cur);
            free(added);
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "decode: id %d at index %d is not a token (vocabulary 0..%d)", id, i,
                           t->n_vocab - 1);
        }
        if (skip_special && t->special[id]) continue;
        added[cur.n] = (unsigned char)is_added_id(t, id);
        ok = ct_buf_put(&cur.v[cur.n++], t->pieces[id], (size_t)t->piece_lens[id]);
    }
    for (int k = 0; ok && k < hf->n_dec; k++) {
        const dec_step *st = &hf->dec[k];
        if (st->type == DEC_BYTELEVEL) {
            // runs of ordinary tokens -> bytes; added tokens stay as they are
            toks nx = {calloc((size_t)cur.n + 1, sizeof(ct_buf)), 0};
            ok = nx.v != NULL;
            for (int i = 0; ok && i < cur.n; i++) {
                if (added[i]) {
                    ok = ct_buf_put(&nx.v[nx.n++], cur.v[i].p, cur.v[i].n);
                    continue;
                }
                ct_buf *b = &nx.v[nx.n];
                ok = ct_buf_put(b, "", 0);
                for (; ok && i < cur.n && !added[i]; i++) {
                    size_t j = 0;
                    while (ok && j < cur.v[i].n) {
                        uint32_t cp;
                        int l = ct_utf8_len((const unsigned char *)cur.v[i].p + j, cur.v[i].n - j, &cp);
                        if (!l) l = 1, cp = 0xFFFD;
                        int byte = cp < 512 ? hf->uni2byte[cp] : -1;
                        if (byte >= 0) {
                            char c = (char)byte;
                            ok = ct_buf_put(b, &c, 1);
                        } else {
                            ok = ct_buf_put(b, cur.v[i].p + j, (size_t)l);
                        }
                        j += (size_t)l;
                    }
                }
                i--;
                nx.n++;
            }
            toks_free(&cur);
            cur = nx;
            memset(added, 0, (size_t)n + 1);
        } else if (st->type == DEC_REPLACE) {
            size_t la = strlen(st->a), lb = strlen(st->b);
            for (int i = 0; ok && i < cur.n; i++) {
                ct_buf nb = {0};
                ok = ct_buf_put(&nb, "", 0);
                for (size_t j = 0; ok && j < cur.v[i].n;) {
                    if (j + la <= cur.v[i].n && memcmp(cur.v[i].p + j, st->a, la) == 0) {
                        ok = ct_buf_put(&nb, st->b, lb);
                        j += la;
                    } else {
                        ok = ct_buf_put(&nb, cur.v[i].p + j, 1);
                        j++;
                    }
                }
                free(cur.v[i].p);
                cur.v[i] = nb;
            }
        } else if (st->type == DEC_BYTEFALLBACK) {
            // consecutive <0xHH> tokens become one token of their bytes
            toks nx = {calloc((size_t)cur.n + 1, sizeof(ct_buf)), 0};
            ok = nx.v != NULL;
            int in_run = 0;
            for (int i = 0; ok && i < cur.n; i++) {
                unsigned int byte;
                char c;
                if (cur.v[i].n == 6 && sscanf(cur.v[i].p, "<0x%02X%c", &byte, &c) == 2 && c == '>') {
                    char bc = (char)byte;
                    if (!in_run) nx.n++;
                    ok = ct_buf_put(&nx.v[nx.n - 1], &bc, 1);
                    in_run = 1;
                } else {
                    ok = ct_buf_put(&nx.v[nx.n++], cur.v[i].p, cur.v[i].n);
                    in_run = 0;
                }
            }
            toks_free(&cur);
            cur = nx;
        } else if (st->type == DEC_FUSE) {
            ct_buf all = {0};
            ok = ct_buf_put(&all, "", 0);
            for (int i = 0; ok && i < cur.n; i++) ok = ct_buf_put(&all, cur.v[i].p, cur.v[i].n);
            toks_free(&cur);
            cur.v = calloc((size_t)n + 1, sizeof(ct_buf));
            ok = ok && cur.v;
            if (ok) cur.v[0] = all, cur.n = 1;
            else free(all.p);
        } else if (st->type == DEC_STRIP && strip) {
            size_t lc = strlen(st->a);
            for (int i = 0; i < cur.n; i++) {
                ct_buf *b = &cur.v[i];
                for (int s = 0; s < st->start && b->n >= lc && memcmp(b->p, st->a, lc) == 0; s++) {
                    memmove(b->p, b->p + lc, b->n - lc + 1);
                    b->n -= lc;
                }
                for (int s = 0; s < st->stop && b->n >= lc && memcmp(b->p + b->n - lc, st->a, lc) == 0; s++) {
                    b->n -= lc;
                    b->p[b->n] = 0;
                }
            }
        }
    }
    ct_buf res = {0};
    ok = ok && ct_buf_put(&res, "", 0);
    for (int i = 0; ok && i < cur.n; i++) ok = ct_buf_put(&res, cur.v[i].p, cur.v[i].n);
    toks_free(&cur);
    free(added);
    if (!ok) {
        free(res.p);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory while decoding");
    }
    *text = res.p;
    *len = res.n;
    return CT_OK;
}
