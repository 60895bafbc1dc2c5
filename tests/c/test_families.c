// test_families.c - Hugging Face checkpoints of every family: tiny random checkpoints written
// with ctrace's safetensors writer (F32, F16, BF16) load, run, expose every hook point with
// the right shape and round-trip through the writer; stories260K written as a Hugging Face
// Llama directory gives the llama2.c checkpoint's logits.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "tiny.h"
#include "model/model.h"
#include "formats/safetensors.h"

// Reads dir/model.safetensors as float32 entries (names borrowed from *st) and copies
// config.json into out_dir. dtype: the dtype the entries will be written with (-1: keep).
static ct_st_entry *read_entries(const char *dir, const char *out_dir, int dtype, ct_safetensors **st) {
    char path[1100], cmd[2400];
    mkdir(out_dir, 0755);
    snprintf(cmd, sizeof cmd, "cp %s/config.json %s/config.json", dir, out_dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ct_err err = {0};
    if (system(cmd) != 0 || ct_safetensors_open(NULL, st, path, &err)) return NULL;
    ct_st_entry *e = calloc((size_t)(*st)->n_tensors, sizeof *e);
    for (int i = 0; i < (*st)->n_tensors; i++) {
        const ct_st_tensor *t = &(*st)->tensors[i];
        float *p = malloc(sizeof(float) * (size_t)ct_st_numel(t));
        ct_st_to_f32(p, t, &err);
        e[i] = (ct_st_entry){.name = t->name, .dtype = dtype < 0 ? t->dtype : (ct_dtype)dtype, .ndim = t->ndim, .data = p};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
    }
    return e;
}

static void free_entries(ct_st_entry *e, ct_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free((void *)e[i].data);
    free(e);
    ct_safetensors_free(st);
}

// Re-saves every tensor of dir/model.safetensors as F32 (dtype -1: in its own dtype) into out_dir
// (with the same config).
static int resave(const char *dir, const char *out_dir, int dtype) {
    ct_safetensors *st;
    ct_st_entry *e = read_entries(dir, out_dir, dtype, &st);
    if (!e) return 0;
    char path[1100];
    ct_err err = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    int ok_ = ct_safetensors_write(NULL, path, e, st->n_tensors, NULL, 0, &err) == CT_OK;
    free_entries(e, st);
    return ok_;
}

// Splits dir/model.safetensors into two shards with a model.safetensors.index.json in out_dir;
// bad_entry (may be NULL) adds an index line for a tensor no shard holds.
static int shard(const char *dir, const char *out_dir, const char *bad_entry) {
    ct_safetensors *st;
    ct_st_entry *e = read_entries(dir, out_dir, -1, &st);
    if (!e) return 0;
    char path[1100];
    ct_err err = {0};
    int n = st->n_tensors, ok_;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out_dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", e[i].name, 1 + (i >= n / 2));
    if (bad_entry) fprintf(f, ", \"%s\": \"model-00001-of-00002.safetensors\"", bad_entry);
    fprintf(f, "}}\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", out_dir);
    ok_ = ct_safetensors_write(NULL, path, e, n / 2, NULL, 0, &err) == CT_OK;
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", out_dir);
    ok_ = ok_ && ct_safetensors_write(NULL, path, e + n / 2, n - n / 2, NULL, 0, &err) == CT_OK;
    free_entries(e, st);
    return ok_;
}

static const int prompt[8] = {0, 3, 4, 3, 2, 5, 3, 8};

// A hook's tensor data in a cache filled for every hook.
static const float *hook_data(const ct_hook_cache *hc, ct_hook_kind kind, int layer) {
    for (int i = 0; i < hc->n; i++)
        if (hc->ids[i].kind == kind && hc->ids[i].layer == layer) return ct_tensor_data(hc->values[i]);
    return NULL;
}

// Gemma-3 specifics, by hand: the embedding scale sqrt(18) rounded to the stored dtype as
// transformers does (F32 4.2426405, BF16 4.25, F16 4.2421875: 18 is 1.125 * 16, sqrt = 4 * 1.06066,
// 8 and 11 significand bits); which layer slides; the RoPE tables (full-attention layers: base 1e6
// and linear scaling 8; sliding layers: base 1e4); q/k norms with 1 + w gains; a window of 3
// leaving zeros in the sliding layer's attention pattern and none in the full layer's.
static void check_gemma3_model(const ct_model *m, const char *arch, ct_dtype dt, const ct_hook_cache *hc) {
    const ct_config *c = &m->cfg;
    float want = dt == CT_DT_BF16 ? 4.25f : dt == CT_DT_F16 ? 4.2421875f : sqrtf(18.0f);
    ok(c->embed_scale == want, "%s %s: embedding scale %.9g (expected %.9g)", arch, ct_dtype_name(dt), c->embed_scale, want);
    int causal = strcmp(arch, "Gemma3ForCausalLM") == 0;   // layer 0 slides; ConditionalGeneration: layer 1
    ok(m->layers[0].sliding == causal && m->layers[1].sliding == !causal && c->sliding_window == 3,
       "%s: layer %d slides (window 3), layer %d attends fully", arch, causal ? 0 : 1, causal ? 1 : 0);
    int rope_ok = m->rope_local_inv_freq != NULL && c->qk_norm && !c->attn_softcap && !c->final_softcap;
    for (int i = 0; rope_ok && i < 4; i++)
        rope_ok = fabsf(m->rope_inv_freq[i] - (float)(pow(1e6, -i / 4.0) / 8)) <= 1e-7f * m->rope_inv_freq[i] + 1e-12f &&
                  fabsf(m->rope_local_inv_freq[i] - (float)pow(1e4, -i / 4.0)) <= 1e-7f * m->rope_local_inv_freq[i];
    ok(rope_ok, "%s: RoPE 1e6 / 8 on full layers, 1e4 on sliding layers; q/k norms; no softcaps", arch);
    // the attention patterns: (H, T, T); position t sees t-2 .. t in the sliding layer
    int slide = causal ? 0 : 1, full = 1 - slide, window_ok = 1;
    const float *ps = hook_data(hc, CT_HOOK_PATTERN, slide), *pf = hook_data(hc, CT_HOOK_PATTERN, full);
    for (int h = 0; h < H && ps && pf; h++)
        for (int t = 0; t < 8; t++)
            for (int j = 0; j <= t; j++) {
                float a = ps[((size_t)h * 8 + t) * 8 + j], b = pf[((size_t)h * 8 + t) * 8 + j];
                window_ok = window_ok && (t - j >= 3 ? a == 0.0f : a > 0.0f) && b > 0.0f;
            }
    ok(ps && pf && window_ok, "%s: the sliding layer attends to the last 3 positions, the full layer to all", arch);
    // q at position 0 (no rotation) of layer 0 = RMSNorm(q_proj x) * (1 + q_norm) per head
    const float *xin = hook_data(hc, CT_HOOK_ATTN_IN, 0), *q = hook_data(hc, CT_HOOK_Q, 0);
    const ct_layer *w = &m->layers[0];
    double worst = 0;
    for (int h = 0; h < H && xin && q; h++) {
        float raw[8];
        double ss = 0;
        for (int i = 0; i < 8; i++) {
            float row[D_GEMMA3];   // (d_model,): row h * 8 + i of q_proj
            double s = 0;
            ct_mat_row(&w->wq, h * 8 + i, row);
            for (int k = 0; k < c->d_model; k++) s += (double)row[k] * xin[k];
            raw[i] = (float)s;
            ss += s * s;
        }
        for (int i = 0; i < 8; i++) {
            double ref = raw[i] / sqrt(ss / 8 + 1e-6) * (1.0 + w->q_norm[i]);
            worst = fmax(worst, fabs(ref - q[h * 8 + i]));
        }
    }
    ok(xin && q && worst < 1e-5, "%s: q at position 0 is the head's RMS-normed projection times (1 + q_norm) "
       "(max |diff| %.2g, tol 1e-5)", arch, worst);
}

// Where the weights of a loaded checkpoint live: every matrix a view into the mapped file in
// the file's dtype, and the memory the model owns exactly the float32 copies of its vectors
// (norm gains, biases) when they are not F32, counted from the file itself.
static void check_storage(const ct_model *m, const char *arch, ct_dtype dt) {
    const ct_safetensors *st = m->shards[0];
    int views = m->n_shards == 1, n_mats = 0;
    size_t vec_floats = 0, owned = 0;
    for (int i = 0; i < st->n_tensors; i++)
        if (st->tensors[i].ndim == 1) vec_floats += (size_t)ct_st_numel(&st->tensors[i]);
    for (int i = 0; i < m->n_owned; i++) owned += m->owned_bytes[i];
    const ct_mat *top[3] = {&m->embed, &m->lm_head, &m->pos_embed};
    for (int l = -1; l < m->cfg.n_layers; l++) {
        const ct_layer *w = l >= 0 ? &m->layers[l] : NULL;
        const ct_mat *mats[7] = {w ? &w->wq : top[0], w ? &w->wk : top[1], w ? &w->wv : top[2], w ? &w->wo : NULL,
                                 w ? &w->w_gate : NULL, w ? &w->w_up : NULL, w ? &w->w_down : NULL};
        for (int k = 0; k < 7; k++) {
            if (!mats[k] || !mats[k]->data) continue;
            n_mats++;
            views = views && mats[k]->dtype == dt && mats[k]->data >= st->map && mats[k]->data < st->map + st->size;
        }
    }
    size_t want = dt == CT_DT_F32 ? 0 : vec_floats * sizeof(float);
    ok(views && n_mats > 0 && owned == want, "%s %s: %d weight matrices are views into the mapped file in %s; the "
       "model owns %zu bytes (its %zu vector floats as float32%s)", arch, ct_dtype_name(dt), n_mats, ct_dtype_name(dt),
       owned, vec_floats, dt == CT_DT_F32 ? ": none, F32 is used in place" : "");
}

static void check_hold_as(const char *dir, const char *arch, ct_dtype stored, const float *logits);

static void check_family(const char *tmp, const char *arch, ct_dtype dt) {
    char dir[512], dir2[600];
    snprintf(dir, sizeof dir, "%s/%s-%s", tmp, arch, ct_dtype_name(dt));
    snprintf(dir2, sizeof dir2, "%s-resaved", dir);
    make_family(dir, arch, dt);
    ct_model *m = NULL, *m2 = NULL;
    ct_err err = {0};
    ct_status rc = ct_model_load(NULL, &m, dir, &err);
    ok(rc == CT_OK, "%s %s loads (%s)", arch, ct_dtype_name(dt), rc ? err.msg : "ok");
    if (rc) return;
    check_storage(m, arch, dt);
    char fl[256];
    if (thp_here())   // every pass reads the weights whole
        ok(m->n_shards == 1 && vma_flags(m->shards[0]->map, fl, sizeof fl) && strstr(fl, " hg"),
           "%s %s: the weights' file mapped with the huge-page hint (VmFlags:%s)", arch, ct_dtype_name(dt), fl);
    ct_hook_cache hc;
    ct_hook_cache_init_all(&hc, m, &err);
    float logits[8 * V], logits2[8 * V];
    rc = ct_model_forward(m, prompt, 8, NULL, &hc, logits, 1, &err);
    int finite = 1;
    for (int i = 0; i < 8 * V; i++) finite = finite && isfinite(logits[i]);
    ok(rc == CT_OK && finite, "%s %s forward gives finite logits", arch, ct_dtype_name(dt));
    if (getenv("CTRACE_FAMILIES_DIR")) {   // kept for the independent numpy reference
        char lp[700];
        snprintf(lp, sizeof lp, "%s/logits.f32", dir);
        FILE *f = fopen(lp, "wb");
        if (f) fwrite(logits, sizeof(float), 8 * V, f), fclose(f);
    }
    int shapes_ok = hc.n > 0;
    for (int i = 0; i < hc.n; i++) {
        int64_t want[4];
        int nd = ct_hook_shape(m, hc.ids[i], 8, want);
        ct_tensor *t = hc.values[i];
        int good = t && t->ndim == nd;
        for (int d = 0; good && d < nd; d++) good = t->shape[d] == want[d];
        if (!good) {
            char name[96];
            ct_hook_name(hc.ids[i], name, sizeof name);
            printf("# bad hook %s\n", name);
        }
        shapes_ok = shapes_ok && good;
    }
    int expect = 5 + (m->cfg.learned_pos ? 1 : 0) - 1 + L * (CT_HOOK_N_LAYER - (m->cfg.post_norms ? 0 : 2) - (m->cfg.qk_norm ? 0 : 2));
    ok(shapes_ok && hc.n == expect, "%s: all %d hook points present with the right shapes", arch, hc.n);
    if (is_gemma3(arch)) check_gemma3_model(m, arch, dt, &hc);
    // incremental decoding with the KV cache equals the batched pass
    ct_kv_cache kv;
    ct_kv_cache_init(&kv, m, 8, &err);
    float step[V];
    int same = 1;
    for (int t = 0; t < 8; t++) {
        ct_model_forward(m, &prompt[t], 1, &kv, NULL, step, 0, &err);
        for (int v = 0; v < V; v++) same = same && fabsf(step[v] - logits[t * V + v]) <= 1e-5f + 1e-5f * fabsf(step[v]);
    }
    ct_kv_cache_free(&kv);
    ok(same, "%s: KV-cache steps match the batched forward (1e-5)", arch);
    if (dt != CT_DT_F32) {   // products converting one row of a weight at a time: the same logits
        ct_model *m1 = NULL;
        ct_mat_tile_limit(1);
        rc = ct_model_load(NULL, &m1, dir, &err);
        if (!rc) rc = ct_model_forward(m1, prompt, 8, NULL, NULL, logits2, 1, &err);
        ct_mat_tile_limit(0);
        ok(rc == CT_OK && check_close(logits2, logits, 8 * V, 1e-5, 1e-5, "one-row tiles"),
           "%s %s: tiles of one row give the whole-matrix tile's logits (1e-5 (1 + |x|))", arch, ct_dtype_name(dt));
        ct_model_free(m1);
    }
    ct_hook_cache_free(&hc);
    // Gemma-3's embedding scale follows the stored dtype: its checkpoints are re-saved in their own
    int keep = is_gemma3(arch);
    ok(resave(dir, dir2, keep ? -1 : CT_DT_F32), "%s: re-saved through the writer as %s", arch, keep ? ct_dtype_name(dt) : "F32");
    rc = ct_model_load(NULL, &m2, dir2, &err);
    if (!rc) rc = ct_model_forward(m2, prompt, 8, NULL, NULL, logits2, 1, &err);
    ok(rc == CT_OK && memcmp(logits, logits2, sizeof logits) == 0, "%s %s: the re-saved checkpoint gives identical logits",
       arch, ct_dtype_name(dt));
    if (dt == CT_DT_BF16) {   // sharded: two files and an index
        ct_model *m3 = NULL;
        snprintf(dir2, sizeof dir2, "%s-sharded", dir);
        rc = shard(dir, dir2, NULL) ? ct_model_load(NULL, &m3, dir2, &err) : CT_STATUS_IO;
        if (!rc) rc = ct_model_forward(m3, prompt, 8, NULL, NULL, logits2, 1, &err);
        ok(rc == CT_OK && m3->n_shards == 2 && memcmp(logits, logits2, sizeof logits) == 0,
           "%s: two shards and an index give identical logits (%s)", arch, rc ? err.msg : "ok");
        ct_model_free(m3);
        snprintf(dir2, sizeof dir2, "%s-badindex", dir);
        rc = shard(dir, dir2, "model.extra.weight") ? ct_model_load(NULL, &m3, dir2, &err) : CT_STATUS_IO;
        ok(rc == CT_STATUS_NOT_FOUND && strstr(err.msg, "model.extra.weight"), "%s: an index naming a missing tensor: %s",
           arch, err.msg);
    }
    check_hold_as(dir, arch, dt, logits);
    ct_model_free(m);
    ct_model_free(m2);
}

// A checkpoint held in F32, BF16 or F16 (ct_model_hold_as, --dtype) computes exactly as the same
// checkpoint saved in that dtype by the writer: every matrix and vector rounded, the embedding scale
// too (Gemma-3: rounded in BF16 and F16, sqrt(d_model) in F32), matrices held in the dtype unless
// they would be widened. A float32 checkpoint held in BF16 or F16 does change its logits.
static void check_hold_as(const char *dir, const char *arch, ct_dtype stored, const float *logits) {
    const ct_dtype dts[] = {CT_DT_BF16, CT_DT_F16, CT_DT_F32};
    for (int k = 0; k < 3; k++) {
        ct_dtype dt = dts[k];
        char dir2[700];
        snprintf(dir2, sizeof dir2, "%s-as-%s", dir, ct_dtype_name(dt));
        ct_model *saved = NULL, *held = NULL;
        ct_err err = {0};
        static float want[8 * V], got[8 * V];
        ct_status rc = resave(dir, dir2, dt) ? ct_model_load(NULL, &saved, dir2, &err) : CT_STATUS_IO;
        if (!rc) rc = ct_model_forward(saved, prompt, 8, NULL, NULL, want, 1, &err);
        if (!rc) rc = ct_model_load(NULL, &held, dir, &err);
        if (!rc) rc = ct_model_hold_as(held, dt, &err);
        if (!rc) rc = ct_model_forward(held, prompt, 8, NULL, NULL, got, 1, &err);
        ct_dtype in = dt == CT_DT_F32 ? stored : dt;
        int where = !rc && held->layers[0].wq.dtype == in && held->embed.dtype == in && held->layers[1].w_down.dtype == in;
        int changed = stored != CT_DT_F32 || dt == CT_DT_F32 || memcmp(got, logits, sizeof got) != 0;
        ok(where && changed && memcmp(want, got, sizeof got) == 0 && held->cfg.embed_scale == saved->cfg.embed_scale,
           "%s %s held as %s: matrices in %s, the logits of the checkpoint saved in %s (%s)", arch, ct_dtype_name(stored),
           ct_dtype_name(dt), ct_dtype_name(in), ct_dtype_name(dt), rc ? err.msg : "ok");
        ct_model_free(saved);
        ct_model_free(held);
    }
    ct_model *m = NULL;
    ct_err err = {0};
    ct_status rc = ct_model_load(NULL, &m, dir, &err);
    if (!rc) rc = ct_model_hold_as(m, CT_DT_I8, &err);
    ok(rc == CT_STATUS_BAD_ARG && strstr(err.msg, "F32, BF16 or F16") && strstr(err.msg, "I8"), "%s held as I8: %s",
       arch, err.msg);
    ct_model_free(m);
}

// Gemma-3 configs that cannot run: each refused with a message naming the key and what was expected.
static void check_gemma3_config_errors(const char *tmp) {
    char dir[600], cond[600];
    snprintf(dir, sizeof dir, "%s/Gemma3ForCausalLM-F32", tmp);
    snprintf(cond, sizeof cond, "%s/Gemma3ForConditionalGeneration-F32", tmp);
#define G3 "{\"architectures\": [\"Gemma3ForCausalLM\"], \"hidden_size\": 18, \"intermediate_size\": 32, " \
           "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, \"vocab_size\": 40"
    static const struct { const char *json; ct_status want; const char *says; } cases[] = {
        {G3 ", \"layer_types\": [\"full_attention\"]}", CT_STATUS_BAD_FORMAT, "layer_types must list 2 layer types, got 1"},
        {G3 ", \"layer_types\": [\"full_attention\", \"global\"]}", CT_STATUS_BAD_FORMAT, "layer_types[1] is 'global'"},
        {G3 ", \"layer_types\": \"sliding_attention\"}", CT_STATUS_BAD_FORMAT, "layer_types must be a list of 2"},
        {G3 ", \"sliding_window_pattern\": 0}", CT_STATUS_BAD_FORMAT, "sliding_window_pattern must be at least 1, got 0"},
        {G3 ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}", CT_STATUS_UNSUPPORTED,
         "rope_scaling type 'yarn'; expected default or linear"},
        {G3 ", \"rope_scaling\": {\"rope_type\": \"linear\"}}", CT_STATUS_BAD_FORMAT, "linear needs a factor > 0, got 0"},
        {G3 ", \"rope_parameters\": {\"global\": {\"rope_theta\": 1}}}", CT_STATUS_BAD_FORMAT,
         "rope_parameters: expected {\"full_attention\""},
        {G3 ", \"rope_parameters\": {\"sliding_attention\": {\"rope_type\": \"dynamic\"}}}", CT_STATUS_UNSUPPORTED,
         "rope_parameters.sliding_attention type 'dynamic'"},
        {G3 ", \"use_bidirectional_attention\": true}", CT_STATUS_UNSUPPORTED, "use_bidirectional_attention"},
        {G3 ", \"hidden_activation\": \"silu\"}", CT_STATUS_UNSUPPORTED, "hidden_activation 'silu'; expected gelu_pytorch_tanh"},
        {G3 ", \"rope_local_base_freq\": -1}", CT_STATUS_BAD_FORMAT, "RoPE theta"},
        // a value of the wrong type is refused, not read as the key's default
        {G3 ", \"rope_theta\": \"1000000\"}", CT_STATUS_BAD_FORMAT,
         "\"rope_theta\" is the string \"1000000\"; expected a number"},
        {G3 ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": \"8\"}}", CT_STATUS_BAD_FORMAT,
         "\"factor\" is the string \"8\"; expected a number"},
        {G3 ", \"rope_parameters\": {\"full_attention\": {\"rope_theta\": [1]}}}", CT_STATUS_BAD_FORMAT,
         "\"rope_theta\" is a list; expected a number"},
        {G3 ", \"max_position_embeddings\": 1024.5}", CT_STATUS_BAD_FORMAT,
         "\"max_position_embeddings\" is 1024.5; expected an integer"},
        {G3 ", \"rms_norm_eps\": true}", CT_STATUS_BAD_FORMAT, "\"rms_norm_eps\" is a boolean; expected a number"},
        {G3 ", \"sliding_window\": {}}", CT_STATUS_BAD_FORMAT, "\"sliding_window\" is an object; expected an integer"},
        {G3 ", \"eos_token_id\": [\"1\"]}", CT_STATUS_BAD_FORMAT, "\"eos_token_id\" is the string \"1\"; expected a token id"},
        {G3 ", \"tie_word_embeddings\": \"false\"}", CT_STATUS_BAD_FORMAT,
         "\"tie_word_embeddings\" is the string \"false\"; expected true or false"},
        {G3 ", \"sliding_window_pattern\": \"6\"}", CT_STATUS_BAD_FORMAT,
         "\"sliding_window_pattern\" is the string \"6\"; expected an integer"},
        {"{\"architectures\": [\"Gemma3ForCausalLM\"], \"hidden_size\": \"18\"}", CT_STATUS_BAD_FORMAT,
         "\"hidden_size\" is the string \"18\"; expected an integer"},
        {"{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"text_config\": 5}", CT_STATUS_BAD_FORMAT,
         "\"text_config\" must be an object"},
        {"{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"text_config\": {\"hidden_size\": 18}}",
         CT_STATUS_BAD_SHAPE, "expected [262208, 18]"},   // Gemma3TextConfig's defaults for the rest
    };
#undef G3
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ct_model *m = NULL;
        ct_err err = {0};
        ct_status rc = ct_model_load_hf_config(NULL, &m, dir, cases[i].json, strlen(cases[i].json), &err);
        ok(rc == cases[i].want && strstr(err.msg, cases[i].says), "Gemma-3 config refused: %s", rc ? err.msg : "(loaded)");
        ct_model_free(m);
    }
    // the multimodal checkpoint's tensors under language_model.model. are not a Gemma3ForCausalLM's
    char cfg[2048];
    gemma3_config(cfg, sizeof cfg, "Gemma3ForCausalLM");
    ct_model *m = NULL;
    ct_err err = {0};
    ct_status rc = ct_model_load_hf_config(NULL, &m, cond, cfg, strlen(cfg), &err);
    ok(rc == CT_STATUS_NOT_FOUND && strstr(err.msg, "'model.embed_tokens.weight'"), "prefixed tensors for a CausalLM config: %s",
       err.msg);
    ct_model_free(m);
    // and a text-only checkpoint (model.*) under a ConditionalGeneration config loads
    gemma3_config(cfg, sizeof cfg, "Gemma3ForConditionalGeneration");
    rc = ct_model_load_hf_config(NULL, &m, dir, cfg, strlen(cfg), &err);
    ok(rc == CT_OK, "Gemma3ForConditionalGeneration config over unprefixed tensors loads (%s)", rc ? err.msg : "ok");
    ct_model_free(m);
}

// Gemma-2 keys a config leaves out take Gemma2Config's defaults (softcaps 50 and 30, window 4096,
// query_pre_attn_scalar 256); a null value means none, as transformers reads None.
static void check_gemma2_defaults(const char *tmp) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/Gemma2ForCausalLM-F32", tmp);
#define G2 "{\"architectures\": [\"Gemma2ForCausalLM\"], \"hidden_size\": 16, \"intermediate_size\": 32, " \
           "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 4, " \
           "\"vocab_size\": 40"
    static const struct { const char *json; float attn, final, scale; int window; } cases[] = {
        {G2 "}", 50.0f, 30.0f, 0.0625f, 4096},
        {G2 ", \"attn_logit_softcapping\": null, \"final_logit_softcapping\": null, \"sliding_window\": null}", 0, 0,
         0.0625f, 0},
        {G2 ", \"attn_logit_softcapping\": 20, \"sliding_window\": 7, \"query_pre_attn_scalar\": 4}", 20.0f, 30.0f, 0.5f, 7},
    };
#undef G2
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ct_model *m = NULL;
        ct_err err = {0};
        ct_status rc = ct_model_load_hf_config(NULL, &m, dir, cases[i].json, strlen(cases[i].json), &err);
        const ct_config *c = rc ? NULL : &m->cfg;
        ok(c && c->attn_softcap == cases[i].attn && c->final_softcap == cases[i].final && c->attn_scale == cases[i].scale &&
           c->sliding_window == cases[i].window,
           "Gemma-2 config %zu: softcaps %g / %g, attention scale %g, window %d (expected %g / %g, %g, %d)%s%s", i,
           c ? c->attn_softcap : -1, c ? c->final_softcap : -1, c ? c->attn_scale : -1, c ? c->sliding_window : -1,
           cases[i].attn, cases[i].final, cases[i].scale, cases[i].window, rc ? ": " : "", rc ? err.msg : "");
        ct_model_free(m);
    }
}

// The name a model goes by (circuit-tracer's Gemma-3 -it rule reads it): a Hub snapshot's repository,
// else the last component of the path.
static void check_model_names(void) {
    static const char *const cases[][2] = {
        {"/home/u/.cache/huggingface/hub/models--google--gemma-3-1b-it/snapshots/0123abcd", "google/gemma-3-1b-it"},
        {"/home/u/.cache/huggingface/hub/models--google--gemma-3-1b-it/snapshots/0123abcd/", "google/gemma-3-1b-it"},
        {"/c/models--org--name--v2/snapshots/r", "org/name--v2"},
        {"/data/models/gemma-3-1b-it/", "gemma-3-1b-it"},
        {"/data/models--x/other/snapshots/r/sub", "sub"},
        {"../shared/models/stories260K/stories260K.bin", "stories260K.bin"},
        {"gemma-3-270m", "gemma-3-270m"},
    };
    int good = 1;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ct_model m = {0};
        char name[256];
        snprintf(m.path, sizeof m.path, "%s", cases[i][0]);
        ct_model_name(&m, name, sizeof name);
        if (strcmp(name, cases[i][1]) != 0) printf("# %s -> %s, expected %s\n", cases[i][0], name, cases[i][1]), good = 0;
    }
    ok(good, "model names: Hub snapshots give org/name, other paths their last component");
}

// stories260K as a Hugging Face Llama directory: q/k rows permuted from llama2.c's interleaved
// RoPE pairs to rotate-half order.
static void check_llama2c_as_hf(const char *tmp) {
    const char *models = getenv("CTRACE_MODELS") ? getenv("CTRACE_MODELS") : "../shared/models";
    char path[1100], dir[512];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", models);
    ct_model *a = NULL, *b = NULL;
    ct_err err = {0};
    if (ct_model_load(NULL, &a, path, &err)) {
        ok(0, "load stories260K (%s)", err.msg);
        return;
    }
    const ct_config *c = &a->cfg;
    int d = c->d_model, f = c->d_mlp, hd = c->head_dim, kvd = c->n_kv_heads * hd;
    snprintf(dir, sizeof dir, "%s/stories260K-hf", tmp);
    mkdir(dir, 0755);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d, "
             "\"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"max_position_embeddings\": %d, \"tie_word_embeddings\": true, "
             "\"bos_token_id\": 1, \"eos_token_id\": 2}", d, f, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->max_seq_len);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, cfg);
    ct_st_entry e[256];
    float *owned[256];
    int n = 0, no = 0;
    char names[256][96];
#define F32(mat) ((const float *)(mat).data)   // llama2.c weights: F32 in place
#define E(nm, p, a0, a1) (snprintf(names[n], 96, "%s", nm), e[n] = (ct_st_entry){.name = names[n], .dtype = CT_DT_F32, .ndim = (a1) ? 2 : 1, .shape = {a0, a1}, .data = p}, n++)
    E("model.embed_tokens.weight", (const float *)a->embed.data, c->vocab_size, d);   // llama2.c: F32 in place
    E("model.norm.weight", a->lnf_w, d, 0);
    for (int l = 0; l < c->n_layers; l++) {
        const ct_layer *w = &a->layers[l];
        char nm[96];
        float *q = owned[no++] = malloc(sizeof(float) * (size_t)d * d), *k = owned[no++] = malloc(sizeof(float) * (size_t)kvd * d);
        // HF row (h, j, i) = llama2.c row (h, i, j): pairs (2i, 2i+1) -> (i, i + hd/2)
        for (int r = 0; r < d; r++) {
            int h = r / hd, j = (r % hd) / (hd / 2), i = r % (hd / 2);
            memcpy(q + (size_t)r * d, F32(w->wq) + (size_t)(h * hd + 2 * i + j) * d, sizeof(float) * (size_t)d);
            if (r < kvd) memcpy(k + (size_t)r * d, F32(w->wk) + (size_t)(h * hd + 2 * i + j) * d, sizeof(float) * (size_t)d);
        }
#define L_(s, p, a0, a1) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), E(nm, p, a0, a1))
        L_("input_layernorm.weight", w->ln1_w, d, 0);
        L_("self_attn.q_proj.weight", q, d, d);
        L_("self_attn.k_proj.weight", k, kvd, d);
        L_("self_attn.v_proj.weight", F32(w->wv), kvd, d);
        L_("self_attn.o_proj.weight", F32(w->wo), d, d);
        L_("post_attention_layernorm.weight", w->ln2_w, d, 0);
        L_("mlp.gate_proj.weight", F32(w->w_gate), f, d);
        L_("mlp.up_proj.weight", F32(w->w_up), f, d);
        L_("mlp.down_proj.weight", F32(w->w_down), d, f);
#undef L_
    }
#undef E
#undef F32
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ct_status rc = ct_safetensors_write(NULL, path, e, n, NULL, 0, &err);
    for (int i = 0; i < no; i++) free(owned[i]);
    if (!rc) rc = ct_model_load(NULL, &b, dir, &err);
    ok(rc == CT_OK, "stories260K written as a Hugging Face Llama directory loads (%s)", rc ? err.msg : "ok");
    int ids[32] = {1};
    for (int t = 1; t < 32; t++) ids[t] = (t * 37) % c->vocab_size;
    float *la = malloc(sizeof(float) * 32 * (size_t)c->vocab_size), *lb = malloc(sizeof(float) * 32 * (size_t)c->vocab_size);
    if (!rc) rc = ct_model_forward(a, ids, 32, NULL, NULL, la, 1, &err);
    if (!rc) rc = ct_model_forward(b, ids, 32, NULL, NULL, lb, 1, &err);
    ok(rc == CT_OK && check_close(lb, la, 32 * (size_t)c->vocab_size, 1e-5, 0, "llama2.c vs HF logits"),
       "llama2.c checkpoint and its Hugging Face form agree to 1e-5 on 32 positions");
    free(la);
    free(lb);
    ct_model_free(a);
    ct_model_free(b);
}

// Long prompts: the batched attention works in blocks of queries; with a sliding window (layer 0,
// with a RoPE base of its own as Gemma-3's sliding layers) and a softcap, a 150-position pass
// equals one-token steps and a pass split in two (100 + 50), up to float32 rounding of sums in
// another order (150 terms of size ~1: well under 1e-5).
static void check_long_attention(void) {
    ct_config c = {.d_model = 16, .d_mlp = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
                   .vocab_size = 40, .max_seq_len = 256, .norm = CT_NORM_RMS, .norm_eps = 1e-6f, .rope = CT_ROPE_HALF,
                   .rope_theta = 10000.0f, .rope_local_theta = 500.0f, .attn_scale = 0.35f, .attn_softcap = 5.0f,
                   .sliding_window = 20, .gated_mlp = 1, .act = CT_ACT_SILU, .embed_scale = 1.0f, .tied = 1};
    ct_model *m = NULL;
    ct_err err = {0};
    enum { T = 150 };
    if (ct_model_random(&m, &c, 11, &err)) {   // (fills the RoPE table itself)
        ok(0, "random model (%s)", err.msg);
        return;
    }
    m->layers[0].sliding = 1;
    int ids[T];
    for (int t = 0; t < T; t++) ids[t] = (t * 7 + 3) % 40;
    float *all = malloc(sizeof(float) * T * 40), *part = malloc(sizeof(float) * T * 40), step[40];
    ct_status rc = ct_model_forward(m, ids, T, NULL, NULL, all, 1, &err);
    ct_kv_cache kv;
    if (!rc) rc = ct_kv_cache_init(&kv, m, T, &err);
    if (!rc) rc = ct_model_forward(m, ids, 100, &kv, NULL, part, 1, &err);
    if (!rc) rc = ct_model_forward(m, ids + 100, T - 100, &kv, NULL, part + 100 * 40, 1, &err);
    double worst_split = 0, worst_step = 0;
    for (int i = 0; !rc && i < T * 40; i++) worst_split = fmax(worst_split, fabs(part[i] - all[i]) / (1.0 + fabs(all[i])));
    if (!rc) ct_kv_cache_free(&kv);
    if (!rc) rc = ct_kv_cache_init(&kv, m, T, &err);
    for (int t = 0; !rc && t < T; t++) {
        rc = ct_model_forward(m, &ids[t], 1, &kv, NULL, step, 0, &err);
        for (int v = 0; v < 40; v++) worst_step = fmax(worst_step, fabs(step[v] - all[t * 40 + v]) / (1.0 + fabs(all[t * 40 + v])));
    }
    if (!rc) ct_kv_cache_free(&kv);
    ok(rc == CT_OK && worst_split < 1e-5 && worst_step < 1e-5,
       "150 positions, window 20, softcap: one pass = 100 + 50 (%.1e) = one-token steps (%.1e), |diff| <= 1e-5 (1 + |x|)",
       worst_split, worst_step);
    free(all), free(part);
    ct_model_free(m);
}

int main(void) {
    char tmp[512] = "/tmp/ctrace-families-XXXXXX";
    const char *keep = getenv("CTRACE_FAMILIES_DIR");   // write checkpoints there and keep them
    if (keep) snprintf(tmp, sizeof tmp, "%s", keep);
    else if (!mkdtemp(tmp)) return 1;
    const char *archs[] = {"LlamaForCausalLM", "Gemma2ForCausalLM", "GPT2LMHeadModel", "Qwen3ForCausalLM",
                           "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"};
    const ct_dtype dts[] = {CT_DT_F32, CT_DT_BF16, CT_DT_F16};
    for (int a = 0; a < 6; a++)
        for (int k = 0; k < 3; k++) check_family(tmp, archs[a], dts[k]);
    check_gemma3_config_errors(tmp);
    check_gemma2_defaults(tmp);
    check_model_names();
    check_llama2c_as_hf(tmp);
    check_long_attention();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (!keep && system(cmd) != 0) printf("# could not remove %s\n", tmp);
    return check_done();
}
