#!/usr/bin/python3
"""Independent reference forward passes (numpy, float32) for Hugging Face checkpoints of the
families ctrace runs: LlamaForCausalLM (incl. rope_scaling llama3), Gemma2ForCausalLM,
GPT2LMHeadModel, Qwen3ForCausalLM, Gemma3ForCausalLM and the text tower of
Gemma3ForConditionalGeneration. Written from the transformers modeling code's definitions,
sharing nothing with ctrace. Test tooling only.

    hf_reference.py <checkpoint dir> <logits.f32 from ctrace> <token ids...>

Compares the logits (T, V) and prints one TAP line; exit status 1 on mismatch.
"""
import json
import math
import struct
import sys

import numpy as np


DTYPES = {}   # tensor name -> stored dtype ("F32", "F16", "BF16")


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        if name != "__metadata__":
            DTYPES[name] = e["dtype"]
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(e["dtype"])
        out[name] = a.reshape(e["shape"]).astype(np.float32)
    return out


def rms_norm(x, w, eps, offset=0.0):
    x = x.astype(np.float32)
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * (offset + w)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def rope_inv_freq(cfg, hd):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * math.pi / inv
        scaled = np.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = ~(wl < high_wl) & ~(wl > low_wl)
        inv = np.where(is_mid, mid, scaled)
    return inv.astype(np.float32)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, inv, T):   # x (heads, T, hd)
    freqs = np.outer(np.arange(T, dtype=np.float32), inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def attend(q, k, v, scale, softcap=None, window=None):   # q (H, T, hd), k, v (KV, T, hd)
    H, T, _ = q.shape
    rep = H // k.shape[0]
    k = np.repeat(k, rep, axis=0)
    v = np.repeat(v, rep, axis=0)
    s = q @ k.transpose(0, 2, 1) * scale
    if softcap:
        s = np.tanh(s / softcap) * softcap
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = ki > qi
    if window:
        mask = mask | (qi - ki >= window)
    s = np.where(mask, -np.inf, s)
    return softmax(s) @ v   # (H, T, hd)


def forward_llama_like(cfg, w, ids, arch):
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", D // H)
    eps = cfg.get("rms_norm_eps", 1e-6)
    gemma = arch == "Gemma2ForCausalLM"
    off = 1.0 if gemma else 0.0
    T = len(ids)
    inv = rope_inv_freq(cfg, hd)
    h = w["model.embed_tokens.weight"][ids]
    if gemma:
        h = h * np.float32(math.sqrt(D))
    scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps, off)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = apply_rope(q, inv, T), apply_rope(k, inv, T)
        window = cfg.get("sliding_window") if gemma and l % 2 == 0 else None
        a = attend(q, k, v, scale, cfg.get("attn_logit_softcapping") if gemma else None, window)
        o = a.transpose(1, 0, 2).reshape(T, H * hd) @ w[p + "self_attn.o_proj.weight"].T
        if gemma:
            o = rms_norm(o, w[p + "post_attention_layernorm.weight"], eps, off)
            h = h + o
            x = rms_norm(h, w[p + "pre_feedforward_layernorm.weight"], eps, off)
        else:
            h = h + o
            x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps, off)
        gate = x @ w[p + "mlp.gate_proj.weight"].T
        up = x @ w[p + "mlp.up_proj.weight"].T
        act = gelu_tanh(gate) if gemma else gate / (1.0 + np.exp(-gate))
        m = (act * up) @ w[p + "mlp.down_proj.weight"].T
        if gemma:
            m = rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps, off)
        h = h + m
    h = rms_norm(h, w["model.norm.weight"], eps, off)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    logits = h @ head.T
    if gemma and cfg.get("final_logit_softcapping"):
        c = cfg["final_logit_softcapping"]
        logits = np.tanh(logits / c) * c
    return logits


def forward_gpt2(cfg, w, ids):
    pre = "transformer." if "transformer.wte.weight" in w else ""
    D, H = cfg["n_embd"], cfg["n_head"]
    hd, T, eps = D // H, len(ids), cfg.get("layer_norm_epsilon", 1e-5)
    h = w[pre + "wte.weight"][ids] + w[pre + "wpe.weight"][:T]
    for l in range(cfg["n_layer"]):
        p = pre + "h.%d." % l
        x = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = x @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = [a.reshape(T, H, hd).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=-1)]
        a = attend(q, k, v, hd ** -0.5)
        h = h + a.transpose(1, 0, 2).reshape(T, D) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        x = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = gelu_tanh(x @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    h = layer_norm(h, w[pre + "ln_f.weight"], w[pre + "ln_f.bias"], eps)
    return h @ w[pre + "wte.weight"].T


def to_dtype(x, dtype):
    """A float32 scalar cast to a stored dtype and back, as torch's .to(dtype) (round to nearest even)."""
    x = np.float32(x)
    if dtype == "F16":
        return np.float32(np.float16(x))
    if dtype == "BF16":
        u = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return np.array([u], dtype=np.uint32).view(np.float32)[0]
    return x


def gemma3_text_config(cfg, arch):
    """The text model's settings as Gemma3TextConfig fills them (its defaults for absent keys)."""
    t = cfg.get("text_config", cfg) if arch == "Gemma3ForConditionalGeneration" else cfg
    d = {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
         "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208, "rms_norm_eps": 1e-6,
         "query_pre_attn_scalar": 256, "sliding_window": 4096, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
         "final_logit_softcapping": None, "attn_logit_softcapping": None}
    c = {k: (t[k] if t.get(k) is not None else v) for k, v in d.items()}
    c["final_logit_softcapping"], c["attn_logit_softcapping"] = t.get("final_logit_softcapping"), t.get("attn_logit_softcapping")
    L = c["num_hidden_layers"]
    pattern = t.get("sliding_window_pattern", 6)
    c["layer_types"] = t.get("layer_types") or ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                                for i in range(L)]
    # rope parameters per layer type (convert_rope_params_to_dict): rope_scaling applies to full attention
    rp = {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "default"}}
    for k, v in (t.get("rope_parameters") or {}).items():
        rp[k] = dict(v)
    if t.get("rope_scaling"):
        rp["full_attention"].update(t["rope_scaling"])
    rp["full_attention"].setdefault("rope_theta", c["rope_theta"])
    rp["sliding_attention"].setdefault("rope_theta", c["rope_local_base_freq"])
    c["rope"] = rp
    return c


def forward_gemma3(cfg, w, ids, arch):
    c = gemma3_text_config(cfg, arch)
    w = {("model." + k[len("language_model.model."):] if k.startswith("language_model.model.") else k): v
         for k, v in w.items()}
    D, H, KV, hd, eps = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
    T = len(ids)
    inv = {}
    for kind, p in c["rope"].items():   # compute_default_rope_parameters, then linear: inv_freq / factor
        f = (1.0 / (np.float32(p["rope_theta"]) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
        if p.get("rope_type", p.get("type", "default")) == "linear":
            f = (f / np.float32(p["factor"])).astype(np.float32)
        inv[kind] = f
    emb_name = "model.embed_tokens.weight" if "model.embed_tokens.weight" in DTYPES else "language_model.model.embed_tokens.weight"
    scale = to_dtype(math.sqrt(D), DTYPES[emb_name])   # embed_scale.to(weight.dtype)
    h = w["model.embed_tokens.weight"][ids] * scale
    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        kind = c["layer_types"][l]
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps, 1.0)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps, 1.0)
        k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps, 1.0)
        q, k = apply_rope(q, inv[kind], T), apply_rope(k, inv[kind], T)
        window = c["sliding_window"] if kind == "sliding_attention" else None
        a = attend(q, k, v, c["query_pre_attn_scalar"] ** -0.5, c["attn_logit_softcapping"], window)
        o = a.transpose(1, 0, 2).reshape(T, H * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = h + rms_norm(o, w[p + "post_attention_layernorm.weight"], eps, 1.0)
        x = rms_norm(h, w[p + "pre_feedforward_layernorm.weight"], eps, 1.0)
        m = (gelu_tanh(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        h = h + rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps, 1.0)
    h = rms_norm(h, w["model.norm.weight"], eps, 1.0)
    logits = h @ w["model.embed_tokens.weight"].T
    if c["final_logit_softcapping"]:
        logits = np.tanh(logits / c["final_logit_softcapping"]) * c["final_logit_softcapping"]
    return logits


def main():
    d, logits_path = sys.argv[1], sys.argv[2]
    ids = [int(x) for x in sys.argv[3:]]
    cfg = json.load(open(d + "/config.json"))
    w = load_safetensors(d + "/model.safetensors")
    arch = cfg["architectures"][0]
    if arch == "GPT2LMHeadModel":
        ref = forward_gpt2(cfg, w, ids)
    elif arch.startswith("Gemma3For"):
        ref = forward_gemma3(cfg, w, ids, arch)
    else:
        ref = forward_llama_like(cfg, w, ids, arch)
    got = np.fromfile(logits_path, dtype="<f4").reshape(ref.shape)
    diff = np.abs(got - ref)
    worst = float(diff.max())
    good = bool(np.all(diff <= 1e-4 + 1e-4 * np.abs(ref)))
    print("%s - %s (%s): ctrace logits match the numpy reference, max |diff| %.2g (tol 1e-4 + 1e-4 |ref|)"
          % ("ok" if good else "not ok", arch, d.rsplit("/", 1)[-1], worst))
    sys.exit(0 if good else 1)


main()
