#!/usr/bin/python3
"""Writes a Llama-shaped Hugging Face checkpoint with random weights (numpy alone), a tensor at a
time so it never holds more than one in memory: config.json and model.safetensors, weights
uniform(-1, 1) / sqrt(fan-in) (norm gains 1 + uniform(-0.1, 0.1)), stored BF16, F16 or F32.
Defaults are Llama-3.2-1B's shapes (tied embeddings). Benchmark tooling only.

    make_llama.py OUTDIR [--dtype BF16] [--d-model 2048] [--d-mlp 8192] [--layers 16]
                         [--heads 32] [--kv-heads 8] [--head-dim 64] [--vocab 128256]
"""
import argparse
import json
import os
import struct

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--dtype", default="BF16", choices=["BF16", "F16", "F32"])
p.add_argument("--d-model", type=int, default=2048)
p.add_argument("--d-mlp", type=int, default=8192)
p.add_argument("--layers", type=int, default=16)
p.add_argument("--heads", type=int, default=32)
p.add_argument("--kv-heads", type=int, default=8)
p.add_argument("--head-dim", type=int, default=64)
p.add_argument("--vocab", type=int, default=128256)
a = p.parse_args()
D, F, L, H, KV, HD, V = a.d_model, a.d_mlp, a.layers, a.heads, a.kv_heads, a.head_dim, a.vocab
rng = np.random.default_rng(1)
os.makedirs(a.out, exist_ok=True)

cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D, "intermediate_size": F,
       "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V,
       "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": True,
       "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16",
       "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192}}
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)

# (name, shape, kind): kind "norm" for gains, else the fan-in of the matrix
tensors = [("model.embed_tokens.weight", (V, D), 1), ("model.norm.weight", (D,), "norm")]
for l in range(L):
    q = "model.layers.%d." % l
    tensors += [(q + "input_layernorm.weight", (D,), "norm"), (q + "post_attention_layernorm.weight", (D,), "norm"),
                (q + "self_attn.q_proj.weight", (H * HD, D), D), (q + "self_attn.k_proj.weight", (KV * HD, D), D),
                (q + "self_attn.v_proj.weight", (KV * HD, D), D), (q + "self_attn.o_proj.weight", (D, H * HD), H * HD),
                (q + "mlp.gate_proj.weight", (F, D), D), (q + "mlp.up_proj.weight", (F, D), D),
                (q + "mlp.down_proj.weight", (D, F), F)]
tensors.sort(key=lambda t: t[0])
size = {"BF16": 2, "F16": 2, "F32": 4}[a.dtype]
header, off = {"__metadata__": {"format": "pt"}}, 0
for name, shape, _ in tensors:
    n = int(np.prod(shape)) * size
    header[name] = {"dtype": a.dtype, "shape": list(shape), "data_offsets": [off, off + n]}
    off += n
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)


def encode(x):
    if a.dtype == "F32":
        return x.astype("<f4").tobytes()
    if a.dtype == "F16":
        return x.astype("<f2").tobytes()
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()   # round to nearest even


with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name, shape, kind in tensors:
        n, chunk = int(np.prod(shape)), 1 << 24
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            if kind == "norm":
                x = 1.0 + rng.uniform(-0.1, 0.1, m).astype(np.float32)
            else:
                x = (rng.uniform(-1.0, 1.0, m) / np.sqrt(kind)).astype(np.float32)
            f.write(encode(x))
print("%s: %d tensors, %.2f GB of %s" % (a.out, len(tensors), off / 1e9, a.dtype))
