// tiny.h - tiny random checkpoints of every model family and transcoder sets in the published
// formats, written with ctrace's safetensors writer, for the C tests.
#ifndef CT_TINY_H
#define CT_TINY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"
#include "model/model.h"
#include "model/transcoder.h"

static uint64_t rng = 12345;
static float urand(void) {   // uniform(-0.5, 0.5)
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) / 16777216.0) - 0.5f;
}

#define MAX_T 64
typedef struct {
    ct_st_entry e[MAX_T * 4];
    float *data[MAX_T * 4];
    int n;
} ckpt;

static void add(ckpt *c, const char *name, ct_dtype dt, int nd, int64_t d0, int64_t d1, float base) {
    ct_st_entry *e = &c->e[c->n];
    size_t numel = (size_t)d0 * (size_t)(nd == 2 ? d1 : 1);
    float *p = malloc(sizeof(float) * numel);
    for (size_t i = 0; i < numel; i++) p[i] = base + urand();
    e->name = strdup(name);
    e->dtype = dt;
    e->ndim = nd;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->data = p;
    c->data[c->n++] = p;
}

// A float32 tensor (d0, d1, d2) of uniform(-0.5, 0.5) + base.
static void add3(ckpt *c, const char *name, int64_t d0, int64_t d1, int64_t d2, float base) {
    add(c, name, CT_DT_F32, 2, d0, d1 * d2, base);
    ct_st_entry *e = &c->e[c->n - 1];
    e->ndim = 3, e->shape[1] = d1, e->shape[2] = d2;
}

static void ckpt_free(ckpt *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->data[i]);
        free((char *)c->e[i].name);
    }
    c->n = 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

// Element (r, c) of a weight matrix in its stored dtype, through the scalar conversions (the
// tests' reading of a ct_mat, apart from the engine's vectorised ones).
__attribute__((unused)) static float mat_at(const ct_mat *m, int64_t r, int64_t c) {
    const uint8_t *p = m->data + (size_t)(r * m->rs + c * m->cs) * ct_dtype_size(m->dtype);
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    float f;
    switch (m->dtype) {
    case CT_DT_BF16: return ct_bf16_to_f32(h);
    case CT_DT_F16: return ct_f16_to_f32(h);
    default: memcpy(&f, p, 4); return f;
    }
}

enum { D = 16, F = 32, V = 40, L = 2, H = 4, KV = 2 };

// Gemma-3 checkpoints are 18 wide: sqrt(18) is not a BF16 or F16 number, so the embedding scale's
// rounding to the stored dtype shows.
enum { D_GEMMA3 = 18 };
static int is_gemma3(const char *arch) { return strncmp(arch, "Gemma3For", 9) == 0; }
// The width of a family's tiny checkpoint.
__attribute__((unused)) static int family_width(const char *arch) { return is_gemma3(arch) ? D_GEMMA3 : D; }

// Gemma-3: Gemma3ForCausalLM in the older config form (rope_theta, rope_local_base_freq,
// sliding_window_pattern, rope_scaling), Gemma3ForConditionalGeneration in the newer one nested in
// text_config (layer_types, rope_parameters per layer type) with most keys left to
// Gemma3TextConfig's defaults. Either way one sliding layer (window 3, shorter than the tests'
// 8-token prompts, local RoPE base 1e4) and one full-attention layer (base 1e6, linear scaling 8),
// q/k norms, no softcaps.
static void gemma3_config(char *cfg, size_t n, const char *arch) {
    if (strcmp(arch, "Gemma3ForCausalLM") == 0)
        snprintf(cfg, n, "{\"architectures\": [\"Gemma3ForCausalLM\"], \"model_type\": \"gemma3_text\", \"hidden_size\": %d, "
                 "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
                 "\"head_dim\": 8, \"vocab_size\": %d, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, "
                 "\"rope_local_base_freq\": 10000.0, \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}, "
                 "\"sliding_window\": 3, \"sliding_window_pattern\": 2, \"query_pre_attn_scalar\": 8, "
                 "\"attn_logit_softcapping\": null, \"final_logit_softcapping\": null, \"hidden_activation\": \"gelu_pytorch_tanh\", "
                 "\"tie_word_embeddings\": true, \"max_position_embeddings\": 32768, \"bos_token_id\": 2, \"eos_token_id\": 1}",
                 D_GEMMA3, F, L, H, KV, V);
    else
        snprintf(cfg, n, "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"model_type\": \"gemma3\", "
                 "\"text_config\": {\"model_type\": \"gemma3_text\", \"hidden_size\": %d, \"intermediate_size\": %d, "
                 "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": 8, "
                 "\"vocab_size\": %d, \"sliding_window\": 3, \"layer_types\": [\"full_attention\", \"sliding_attention\"], "
                 "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0}, "
                 "\"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}, \"query_pre_attn_scalar\": 8}, "
                 "\"vision_config\": {\"model_type\": \"siglip_vision_model\", \"hidden_size\": 8}, \"mm_tokens_per_image\": 256, "
                 "\"boi_token_index\": 255999, \"eos_token_id\": [1, 106]}", D_GEMMA3, F, L, H, KV, V);
}

// Writes a tiny random checkpoint of a family into dir.
static void make_family(const char *dir, const char *arch, ct_dtype dt) {
    mkdir(dir, 0755);
    ckpt c = {0};
    char n[128], cfg[2048], path[1100];
    int hd = strcmp(arch, "Qwen3ForCausalLM") == 0 || is_gemma3(arch) ? 8 : D / H;
    if (is_gemma3(arch)) {
        const int d = D_GEMMA3;
        const char *pre = strcmp(arch, "Gemma3ForCausalLM") == 0 ? "" : "language_model.";
        gemma3_config(cfg, sizeof cfg, arch);
        snprintf(n, sizeof n, "%smodel.embed_tokens.weight", pre);
        add(&c, n, dt, 2, V, d, 0);
        for (int l = 0; l < L; l++) {
#define A(suffix, nd, a, b) (snprintf(n, sizeof n, "%smodel.layers.%d.%s", pre, l, suffix), add(&c, n, dt, nd, a, b, 0))
            A("input_layernorm.weight", 1, d, 0);
            A("self_attn.q_proj.weight", 2, H * hd, d); A("self_attn.k_proj.weight", 2, KV * hd, d);
            A("self_attn.v_proj.weight", 2, KV * hd, d); A("self_attn.o_proj.weight", 2, d, H * hd);
            A("self_attn.q_norm.weight", 1, hd, 0); A("self_attn.k_norm.weight", 1, hd, 0);
            A("post_attention_layernorm.weight", 1, d, 0); A("pre_feedforward_layernorm.weight", 1, d, 0);
            A("post_feedforward_layernorm.weight", 1, d, 0);
            A("mlp.gate_proj.weight", 2, F, d); A("mlp.up_proj.weight", 2, F, d); A("mlp.down_proj.weight", 2, d, F);
#undef A
        }
        snprintf(n, sizeof n, "%smodel.norm.weight", pre);
        add(&c, n, dt, 1, d, 0, 0);
        if (*pre) {   // the vision tower's tensors, which a text model does not read
            add(&c, "vision_tower.vision_model.embeddings.patch_embedding.weight", dt, 2, 8, 12, 0);
            add(&c, "multi_modal_projector.mm_input_projection_weight", dt, 2, 8, d, 0);
        }
    } else if (strcmp(arch, "GPT2LMHeadModel") == 0) {
        snprintf(cfg, sizeof cfg, "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": %d, \"n_layer\": %d, "
                 "\"n_head\": %d, \"n_positions\": 16, \"vocab_size\": %d, \"layer_norm_epsilon\": 1e-5, "
                 "\"activation_function\": \"gelu_new\"}", D, L, H, V);
        add(&c, "transformer.wte.weight", dt, 2, V, D, 0);
        add(&c, "transformer.wpe.weight", dt, 2, 16, D, 0);
        for (int l = 0; l < L; l++) {
#define A(suffix, nd, a, b, base) (snprintf(n, sizeof n, "transformer.h.%d.%s", l, suffix), add(&c, n, dt, nd, a, b, base))
            A("ln_1.weight", 1, D, 0, 1); A("ln_1.bias", 1, D, 0, 0);
            A("attn.c_attn.weight", 2, D, 3 * D, 0); A("attn.c_attn.bias", 1, 3 * D, 0, 0);
            A("attn.c_proj.weight", 2, D, D, 0); A("attn.c_proj.bias", 1, D, 0, 0);
            A("ln_2.weight", 1, D, 0, 1); A("ln_2.bias", 1, D, 0, 0);
            A("mlp.c_fc.weight", 2, D, 4 * D, 0); A("mlp.c_fc.bias", 1, 4 * D, 0, 0);
            A("mlp.c_proj.weight", 2, 4 * D, D, 0); A("mlp.c_proj.bias", 1, D, 0, 0);
#undef A
        }
        add(&c, "transformer.ln_f.weight", dt, 1, D, 0, 1);
        add(&c, "transformer.ln_f.bias", dt, 1, D, 0, 0);
    } else {
        int gemma = strcmp(arch, "Gemma2ForCausalLM") == 0, qwen = hd == 8, llama = !gemma && !qwen;
        snprintf(cfg, sizeof cfg, "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
                 "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                 "\"vocab_size\": %d, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s%s}",
                 arch, D, F, L, H, KV, hd, V, llama ? "false" : "true",
                 gemma ? ", \"query_pre_attn_scalar\": 8, \"attn_logit_softcapping\": 50.0, \"final_logit_softcapping\": 30.0, "
                         "\"sliding_window\": 4, \"hidden_activation\": \"gelu_pytorch_tanh\""
                 : llama ? ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                           "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}" : "");
        add(&c, "model.embed_tokens.weight", dt, 2, V, D, 0);
        for (int l = 0; l < L; l++) {
#define A(suffix, nd, a, b, base) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), add(&c, n, dt, nd, a, b, base))
            A("input_layernorm.weight", 1, D, 0, gemma ? 0 : 1);
            A("self_attn.q_proj.weight", 2, H * hd, D, 0); A("self_attn.k_proj.weight", 2, KV * hd, D, 0);
            A("self_attn.v_proj.weight", 2, KV * hd, D, 0); A("self_attn.o_proj.weight", 2, D, H * hd, 0);
            if (qwen) { A("self_attn.q_norm.weight", 1, hd, 0, 1); A("self_attn.k_norm.weight", 1, hd, 0, 1); }
            A("post_attention_layernorm.weight", 1, D, 0, gemma ? 0 : 1);
            if (gemma) { A("pre_feedforward_layernorm.weight", 1, D, 0, 0); A("post_feedforward_layernorm.weight", 1, D, 0, 0); }
            A("mlp.gate_proj.weight", 2, F, D, 0); A("mlp.up_proj.weight", 2, F, D, 0); A("mlp.down_proj.weight", 2, D, F, 0);
#undef A
        }
        add(&c, "model.norm.weight", dt, 1, D, 0, gemma ? 0 : 1);
        if (llama) add(&c, "lm_head.weight", dt, 2, V, D, 0);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, cfg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ct_err err = {0};
    const char *meta[] = {"format", "pt"};
    if (ct_safetensors_write(NULL, path, c.e, c.n, meta, 1, &err)) printf("# write failed: %s\n", err.msg);
    ckpt_free(&c);
}


// Transcoders for a tiny model of width d: per-layer (circuit-tracer layer_{i}.safetensors) or
// cross-layer (W_enc_{i} / W_dec_{i}) files and a config.yaml. act: "relu", "jumprelu", "topk" (k 4)
// or "topk-negative" (k 4, encoder biases near -2, so that most kept pre-activations are negative).
// enc: how the encoders are stored: TC_ENC_F32 (F, D) float32 as circuit-tracer writes them,
// TC_ENC_BF16 (F, D) bf16 as the published Llama, Qwen and cross-layer sets, TC_ENC_GS2 a per-layer
// set with GemmaScope-2 keys (w_enc (D, F) float32, w_dec, threshold, affine_skip_connection).
enum { TF = 32 };
enum { TC_ENC_F32, TC_ENC_BF16, TC_ENC_GS2 };
__attribute__((unused)) static void make_transcoders_enc(const char *dir, int d, int clt, const char *act, int skip,
                                                         const char *in_hook, const char *out_hook, int enc) {
    mkdir(dir, 0755);
    char path[1200], yaml[2048];
    ct_err err = {0};
    int jump = strcmp(act, "jumprelu") == 0, neg = strcmp(act, "topk-negative") == 0, topk = neg || strcmp(act, "topk") == 0;
    snprintf(yaml, sizeof yaml, "model_name: tiny\nmodel_kind: %s\nfeature_input_hook: %s\nfeature_output_hook: %s\n%s",
             clt ? "cross_layer_transcoder" : "transcoder_set", in_hook, out_hook, topk ? "activation: topk\nk: 4\n" : "");
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    write_file(path, yaml);
    for (int l = 0; l < L; l++) {
        ckpt c = {0};
        char n[64];
        int n_out = clt ? L - l : 1, gs2 = enc == TC_ENC_GS2 && !clt;
        snprintf(n, sizeof n, clt ? "W_enc_%d" : gs2 ? "w_enc" : "W_enc", l);
        if (gs2) add(&c, n, CT_DT_F32, 2, d, TF, 0);
        else add(&c, n, enc == TC_ENC_BF16 ? CT_DT_BF16 : CT_DT_F32, 2, TF, d, 0);
        snprintf(n, sizeof n, clt ? "b_enc_%d" : "b_enc", l);
        add(&c, n, CT_DT_F32, 1, TF, 0, neg ? -2.0f : 0.1f);
        snprintf(n, sizeof n, clt ? "b_dec_%d" : "b_dec", l);
        add(&c, n, CT_DT_F32, 1, d, 0, 0);
        if (jump) {
            snprintf(n, sizeof n, clt ? "threshold_%d" : gs2 ? "threshold" : "activation_function.threshold", l);
            add(&c, n, CT_DT_F32, 1, TF, 0, 0.5f);   // uniform(0, 1)
        }
        if (skip && clt) add3(&c, "W_skip", L, d, d, 0);
        if (skip && !clt) add(&c, gs2 ? "affine_skip_connection" : "W_skip", CT_DT_F32, 2, d, d, 0);
        if (!clt) add(&c, gs2 ? "w_dec" : "W_dec", CT_DT_F32, 2, TF, d, 0);
        snprintf(path, sizeof path, clt ? "%s/W_enc_%d.safetensors" : "%s/layer_%d.safetensors", dir, l);
        if (ct_safetensors_write(NULL, path, c.e, c.n, NULL, 0, &err)) printf("# write failed: %s\n", err.msg);
        ckpt_free(&c);
        if (clt) {
            snprintf(n, sizeof n, "W_dec_%d", l);
            add3(&c, n, TF, n_out, d, 0);
            snprintf(path, sizeof path, "%s/W_dec_%d.safetensors", dir, l);
            if (ct_safetensors_write(NULL, path, c.e, c.n, NULL, 0, &err)) printf("# write failed: %s\n", err.msg);
            ckpt_free(&c);
        }
    }
}

__attribute__((unused)) static void make_transcoders(const char *dir, int d, int clt, const char *act, int skip,
                                                     const char *in_hook, const char *out_hook) {
    make_transcoders_enc(dir, d, clt, act, skip, in_hook, out_hook, TC_ENC_F32);
}

// A tiny model of family arch (stored in dt) at mdir and a transcoder set for it at tdir (as
// make_transcoders_enc writes one), then both loaded: 1 with *m and *tc (the caller frees them), or
// 0 with err saying why.
__attribute__((unused)) static int make_and_load(const char *mdir, const char *tdir, const char *arch, ct_dtype dt, int clt,
                                                 const char *act, int skip, const char *in_hook, const char *out_hook,
                                                 int enc, ct_model **m, ct_transcoders **tc, ct_err *err) {
    make_family(mdir, arch, dt);
    make_transcoders_enc(tdir, family_width(arch), clt, act, skip, in_hook, out_hook, enc);
    *m = NULL, *tc = NULL;
    return ct_model_load(NULL, m, mdir, err) == CT_OK && ct_transcoders_load(NULL, tc, tdir, err) == CT_OK;
}

#endif
