#!/usr/bin/python3
"""Tiny random stand-ins, in the real formats, for the files the Gemma-2-2B case study loads: a
Gemma2ForCausalLM checkpoint directory (config.json, model.safetensors, a tokenizer.json) and a
GemmaScope transcoder set (params npz per layer, JumpReLU, ln2.hook_normalized -> hook_mlp_out,
config.yaml). Test tooling only: the numbers mean nothing; the case study must run end to end.

    make_gemma_dryrun.py OUTDIR TOKENIZER_JSON   ->  OUTDIR/gemma-2-2b/, OUTDIR/gemma-scope/
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_transcoders import save_safetensors  # noqa: E402

D, F, L, H, KV, HD, TF = 16, 32, 2, 4, 2, 4, 64
rng = np.random.default_rng(7)


def u(*shape, base=0.0):
    return (base + rng.uniform(-0.5, 0.5, size=shape)).astype(np.float32)


def main():
    out, tok = sys.argv[1], sys.argv[2]
    mdir, tdir = os.path.join(out, "gemma-2-2b"), os.path.join(out, "gemma-scope")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    shutil.copy(tok, os.path.join(mdir, "tokenizer.json"))
    with open(tok) as f:
        t = json.load(f)
    V = max(list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]) + 1
    cfg = {"architectures": ["Gemma2ForCausalLM"], "hidden_size": D, "intermediate_size": F, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V, "rms_norm_eps": 1e-6,
           "rope_theta": 10000.0, "tie_word_embeddings": True, "query_pre_attn_scalar": HD,
           "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "sliding_window": 4096,
           "hidden_activation": "gelu_pytorch_tanh", "bos_token_id": 2, "eos_token_id": 1, "max_position_embeddings": 8192}
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f)
    w = {"model.embed_tokens.weight": (u(V, D), "F32"), "model.norm.weight": (u(D), "F32")}
    for l in range(L):
        p = "model.layers.%d." % l
        for name, shape in (("input_layernorm.weight", (D,)), ("self_attn.q_proj.weight", (H * HD, D)),
                            ("self_attn.k_proj.weight", (KV * HD, D)), ("self_attn.v_proj.weight", (KV * HD, D)),
                            ("self_attn.o_proj.weight", (D, H * HD)), ("post_attention_layernorm.weight", (D,)),
                            ("pre_feedforward_layernorm.weight", (D,)), ("post_feedforward_layernorm.weight", (D,)),
                            ("mlp.gate_proj.weight", (F, D)), ("mlp.up_proj.weight", (F, D)), ("mlp.down_proj.weight", (D, F))):
            w[p + name] = (u(*shape), "F32")
    save_safetensors(os.path.join(mdir, "model.safetensors"), w)
    names = []
    for l in range(L):
        name = "layer_%d.npz" % l
        np.savez(os.path.join(tdir, name), W_enc=u(D, TF), W_dec=u(TF, D), b_enc=u(TF, base=0.1), b_dec=u(D),
                 threshold=u(TF, base=0.5))
        names.append(name)
    with open(os.path.join(tdir, "config.yaml"), "w") as f:
        f.write("model_name: google/gemma-2-2b\nmodel_kind: transcoder_set\nfeature_input_hook: ln2.hook_normalized\n"
                "feature_output_hook: hook_mlp_out\ntranscoders:\n" + "".join("  - %s\n" % n for n in names))


if __name__ == "__main__":
    main()
