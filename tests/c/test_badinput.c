// test_badinput.c - damaged inputs get a clear error naming what was expected, never a crash:
// truncated files, a header length past the end, overlapping and out-of-range offsets, unknown
// dtypes, missing tensors, wrong shapes, unknown architectures, invalid UTF-8 in tokenizers.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "core/fileio.h"
#include "model/model.h"
#include "formats/safetensors.h"

static ct_status parse_st(const char *header, size_t data_bytes, ct_err *err) {
    size_t hl = strlen(header), n = 8 + hl + data_bytes;
    uint8_t *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    ct_safetensors *st = NULL;
    ct_status rc = ct_safetensors_parse(&st, buf, n, err);
    ct_safetensors_free(st);
    free(buf);
    return rc;
}

static int has(const ct_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

int main(void) {
    ct_err e = {0};
    ct_status rc;
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &e);
    ok(rc == CT_OK, "a valid file parses (%s)", rc ? e.msg : "ok");
    uint8_t small[4] = {1, 2, 3, 4};
    ct_safetensors *st;
    rc = ct_safetensors_parse(&st, small, 4, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "shorter than the 8-byte"), "truncated header length: %s", e.msg);
    uint8_t big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    rc = ct_safetensors_parse(&st, big, 16, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "larger than"), "header length past the end: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "outside"), "offsets past the data: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "overlap"), "overlapping offsets: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &e);
    ok(rc == CT_STATUS_BAD_DTYPE && has(&e, "unknown dtype 'Q4'"), "unknown dtype: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, &e);
    ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "need 12"), "size disagrees with shape: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8, &e);
    ok(rc == CT_STATUS_BAD_SHAPE, "negative dimension: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "not valid JSON"), "broken JSON: %s", e.msg);
    rc = parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "twice"), "duplicate name: %s", e.msg);

    // conversions: F16 subnormals, inf, NaN; BF16 round to nearest even
    ok(ct_f16_to_f32(0x0001) == 5.9604645e-8f && ct_f16_to_f32(0x7c00) > 1e30f && ct_f16_to_f32(0x7e00) != ct_f16_to_f32(0x7e00) &&
       ct_f16_to_f32(0x3c00) == 1.0f && ct_f16_to_f32(0xc000) == -2.0f, "F16 to F32: subnormal, inf, NaN, normal");
    int rt = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;   // NaN payloads
        rt = rt && ct_f32_to_f16(ct_f16_to_f32((uint16_t)h)) == h;
    }
    ok(rt, "every finite F16 value round-trips through F32");
    ok(ct_f32_to_bf16(1.00390625f) == 0x3f80 && ct_f32_to_bf16(1.01171875f) == 0x3f82, "BF16 rounds to nearest even");

    // llama2.c checkpoints
    char tmp[] = "/tmp/ctrace-bad-XXXXXX", path[256];
    mkdtemp(tmp);
    snprintf(path, sizeof path, "%s/m.bin", tmp);
    int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    write_bytes(path, hdr, sizeof hdr);
    ct_model *m = NULL;
    rc = ct_model_load(NULL, &m, path, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "needs") && has(&e, "file has 0"), "truncated llama2.c checkpoint: %s", e.msg);
    int32_t bad[7] = {64, 172, 5, 7, 4, 512, 512};
    write_bytes(path, bad, sizeof bad);
    rc = ct_model_load(NULL, &m, path, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "multiple"), "dim not divisible by heads: %s", e.msg);
    write_bytes(path, hdr, 10);
    rc = ct_model_load(NULL, &m, path, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "28-byte header"), "file shorter than the header: %s", e.msg);

    // Hugging Face directories
    char dir[300], cfg[400];
    snprintf(dir, sizeof dir, "%s/hf", tmp);
    mkdir(dir, 0755);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_bytes(cfg, "{\"architectures\": [\"MambaForCausalLM\"]}", 39);
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_STATUS_UNSUPPORTED && has(&e, "unknown architecture 'MambaForCausalLM'"), "unknown architecture: %s", e.msg);
    const char *llama = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16, "
                        "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 10, \"tie_word_embeddings\": true}";
    write_bytes(cfg, llama, strlen(llama));
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_STATUS_NOT_FOUND && has(&e, "model.safetensors"), "no weights: %s", e.msg);
    float z[80] = {0};
    ct_st_entry ent = {.name = "model.embed_tokens.weight", .dtype = CT_DT_F32, .ndim = 2, .shape = {10, 8}, .data = z};
    char st_path[400];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    ct_safetensors_write(NULL, st_path, &ent, 1, NULL, 0, &e);
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_STATUS_NOT_FOUND && has(&e, "missing tensor 'model.norm.weight'"), "missing tensor: %s", e.msg);
    ent.shape[0] = 8, ent.shape[1] = 10;
    ct_safetensors_write(NULL, st_path, &ent, 1, NULL, 0, &e);
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "[8, 10]") && has(&e, "expected [10, 8]"), "wrong shape: %s", e.msg);

    // tokenizers
    char tp[300];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", tmp);
    const char *badutf = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\xff\": 0}, \"merges\": []}}";
    write_bytes(tp, badutf, strlen(badutf));
    ct_tokenizer *t = NULL;
    rc = ct_tokenizer_load(NULL, &t, tp, &e);
    ok(rc == CT_STATUS_BAD_UTF8, "invalid UTF-8 in tokenizer.json: %s", e.msg);
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    write_bytes(tp, wp, strlen(wp));
    rc = ct_tokenizer_load(NULL, &t, tp, &e);
    ok(rc == CT_STATUS_UNSUPPORTED && has(&e, "expected BPE"), "unsupported tokenizer model: %s", e.msg);
    snprintf(tp, sizeof tp, "%s/tok.bin", tmp);
    uint8_t tb[] = {4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xfe, 0, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 0, 0, 0, 1, 0, 0, 0, 'b'};
    write_bytes(tp, tb, sizeof tb);
    rc = ct_tokenizer_load(NULL, &t, tp, &e);
    ok(rc == CT_STATUS_BAD_UTF8, "invalid UTF-8 in a llama2.c tokenizer: %s", e.msg);
    write_bytes(tp, tb, 10);
    rc = ct_tokenizer_load(NULL, &t, tp, &e);
    ok(rc == CT_STATUS_BAD_FORMAT, "truncated llama2.c tokenizer: %s", e.msg);
    snprintf(cfg, sizeof cfg, "rm -rf %s", tmp);
    if (system(cfg) != 0) printf("# cleanup failed\n");
    return check_done();
}
