#!/usr/bin/python3
"""A tiny random Gemma-3 instruction-tuned checkpoint with the real Gemma-3 tokenizer (its full
vocabulary of 262,145 ids, 16 wide), and a per-layer transcoder set for it in circuit-tracer's
format (JumpReLU with an affine skip, mlp.hook_in -> hook_mlp_out, as the GemmaScope-2 sets).
Test tooling only: the numbers mean nothing.

    make_gemma3_tiny.py OUTDIR TOKENIZER_DIR
        ->  OUTDIR/gemma-3-tiny-it/ (config.json, model.safetensors in BF16, tokenizer.json,
            tokenizer_config.json), OUTDIR/gemma-3-tiny-pt -> gemma-3-tiny-it (the same files
            under a base model's name), OUTDIR/transcoders/
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_transcoders import save_safetensors  # noqa: E402

D, F, L, H, KV, HD, TF = 16, 32, 2, 4, 1, 8, 64
rng = np.random.default_rng(3)


def u(*shape, base=0.0):
    return (base + rng.uniform(-0.5, 0.5, size=shape)).astype(np.float32)


def main():
    out, tok = sys.argv[1], sys.argv[2]
    mdir, tdir = os.path.join(out, "gemma-3-tiny-it"), os.path.join(out, "transcoders")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok, name), os.path.join(mdir, name))
    with open(os.path.join(tok, "tokenizer.json")) as f:
        t = json.load(f)
    V = max(list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]) + 1
    cfg = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": D,
           "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
           "head_dim": HD, "vocab_size": V, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "rope_local_base_freq": 10000.0, "rope_scaling": None, "sliding_window": 4, "sliding_window_pattern": 2,
           "query_pre_attn_scalar": HD, "attn_logit_softcapping": None, "final_logit_softcapping": None,
           "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True, "max_position_embeddings": 32768,
           "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f)
    w = {"model.embed_tokens.weight": (u(V, D), "BF16"), "model.norm.weight": (u(D), "BF16")}
    for l in range(L):
        p = "model.layers.%d." % l
        for name, shape in (("input_layernorm.weight", (D,)), ("self_attn.q_proj.weight", (H * HD, D)),
                            ("self_attn.k_proj.weight", (KV * HD, D)), ("self_attn.v_proj.weight", (KV * HD, D)),
                            ("self_attn.o_proj.weight", (D, H * HD)), ("self_attn.q_norm.weight", (HD,)),
                            ("self_attn.k_norm.weight", (HD,)), ("post_attention_layernorm.weight", (D,)),
                            ("pre_feedforward_layernorm.weight", (D,)), ("post_feedforward_layernorm.weight", (D,)),
                            ("mlp.gate_proj.weight", (F, D)), ("mlp.up_proj.weight", (F, D)),
                            ("mlp.down_proj.weight", (D, F))):
            w[p + name] = (u(*shape), "BF16")
    save_safetensors(os.path.join(mdir, "model.safetensors"), w)
    link = os.path.join(out, "gemma-3-tiny-pt")
    if not os.path.lexists(link):
        os.symlink("gemma-3-tiny-it", link)
    for l in range(L):
        save_safetensors(os.path.join(tdir, "layer_%d.safetensors" % l),
                         {"W_enc": (u(TF, D), "F32"), "W_dec": (u(TF, D), "F32"), "b_enc": (u(TF, base=0.1), "F32"),
                          "b_dec": (u(D), "F32"), "activation_function.threshold": (u(TF, base=0.5), "F32"),
                          "W_skip": (u(D, D) * 0.1, "F32")})
    with open(os.path.join(tdir, "config.yaml"), "w") as f:
        f.write('model_name: "google/gemma-3-1b-it"\nmodel_kind: "transcoder_set"\n'
                'feature_input_hook: "mlp.hook_in"\nfeature_output_hook: "hook_mlp_out"\n')


if __name__ == "__main__":
    main()
