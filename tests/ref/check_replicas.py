#!/usr/bin/python3
"""Checks replicas (bench/replicas/replicas.py) as their formats define them, with readers of its
own: safetensors headers and offsets, shard indexes, npz members (numpy), config.json keys as the
published files have them, config.yaml read the way circuit-tracer reads it (yaml.safe_load, then
its rules), tokenizer ids against the vocabulary. Prints TAP lines; exit status 1 on a failure.

    check_replicas.py OUTDIR TARGET --layers N     one target's files
    check_replicas.py --same DIR_A DIR_B           GemmaScope-2 layouts a and b hold the same set
    check_replicas.py --plan PLAN_FILE             replicas.py --plan at full depth vs published sizes
    check_replicas.py --texts DIR                  replicas.py --texts vs the published texts' SHA-256
    check_replicas.py --inputs OUTDIR MODEL T FILE mlp.hook_in of a Gemma-3 replica for T positions:
                                                   random RMS-1 rows times pre_feedforward_layernorm's
                                                   gain (1 + w), as JSON {layer: rows} (FILE)
"""
import hashlib
import json
import os
import re
import struct
import sys
import zipfile

import numpy as np
import yaml

n_checks, failed = 0, 0


def check(ok, what, detail=""):
    global n_checks, failed
    n_checks += 1
    if ok:
        print(f"ok {n_checks} - {what}")
    else:
        failed += 1
        print(f"not ok {n_checks} - {what}" + (f"\n#   {detail}" if detail else ""))
    return ok


# ----------------------------------------------------------------------------
# Readers

def read_safetensors(path):
    """(metadata, [(name, dtype, shape, begin, end)] in file order, data size), checking the layout."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        assert 0 < n <= size - 8, f"{path}: header length {n} for a file of {size} bytes"
        raw = f.read(n)
    assert n % 8 == 0, f"{path}: header of {n} bytes, not a multiple of 8"
    h = json.loads(raw)
    meta = h.pop("__metadata__", None)
    items = sorted(((k, v["dtype"], v["shape"], *v["data_offsets"]) for k, v in h.items()), key=lambda t: t[3])
    pos = 0
    for name, dtype, shape, b, e in items:
        assert b == pos, f"{path}: '{name}' begins at {b}, expected {pos} (gap or overlap)"
        width = {"F32": 4, "BF16": 2, "F16": 2}[dtype]
        assert e - b == width * int(np.prod(shape, dtype=np.int64)), f"{path}: '{name}' spans {e - b} bytes for {shape} {dtype}"
        pos = e
    assert pos == size - 8 - n, f"{path}: tensors end at {pos}, data holds {size - 8 - n} bytes"
    # the order safetensors writes: dtype (F32 before BF16), then name
    rank = {"BF16": 0, "F16": 1, "F32": 2}
    order = [t[0] for t in items]
    assert order == [t[0] for t in sorted(items, key=lambda t: (-rank[t[1]], t[0]))], f"{path}: tensors not in name order"
    return meta, items, pos


def tensor(path, name):
    """One tensor as float32 (BF16 widened)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        v = h[name]
        b, e = v["data_offsets"]
        f.seek(8 + n + b)
        raw = f.read(e - b)
    if v["dtype"] == "BF16":
        a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(raw, "<f4")
    return a.reshape(v["shape"])


def shapes(items):
    return {t[0]: (t[1], list(t[2])) for t in items}


# ----------------------------------------------------------------------------
# Models

# config.json keys of the published files (README.md: sources)
CONFIG_KEYS = {
    "google/gemma-2-2b": "architectures attention_bias attention_dropout attn_logit_softcapping bos_token_id "
                         "cache_implementation eos_token_id final_logit_softcapping head_dim hidden_act "
                         "hidden_activation hidden_size initializer_range intermediate_size max_position_embeddings "
                         "model_type num_attention_heads num_hidden_layers num_key_value_heads pad_token_id "
                         "query_pre_attn_scalar rms_norm_eps rope_theta sliding_window torch_dtype "
                         "transformers_version use_cache vocab_size",
    "meta-llama/Llama-3.2-1B": "architectures attention_bias attention_dropout bos_token_id eos_token_id head_dim "
                               "hidden_act hidden_size initializer_range intermediate_size max_position_embeddings "
                               "mlp_bias model_type num_attention_heads num_hidden_layers num_key_value_heads "
                               "pretraining_tp rms_norm_eps rope_scaling rope_theta tie_word_embeddings torch_dtype "
                               "transformers_version use_cache vocab_size",
    "Qwen/Qwen3-0.6B": "architectures attention_bias attention_dropout bos_token_id eos_token_id head_dim hidden_act "
                       "hidden_size initializer_range intermediate_size max_position_embeddings max_window_layers "
                       "model_type num_attention_heads num_hidden_layers num_key_value_heads rms_norm_eps rope_scaling "
                       "rope_theta sliding_window tie_word_embeddings torch_dtype transformers_version use_cache "
                       "use_sliding_window vocab_size",
    "google/gemma-3-270m": "_sliding_window_pattern architectures attention_bias attention_dropout "
                           "attn_logit_softcapping bos_token_id eos_token_id final_logit_softcapping head_dim "
                           "hidden_activation hidden_size initializer_range intermediate_size layer_types "
                           "max_position_embeddings model_type num_attention_heads num_hidden_layers "
                           "num_key_value_heads pad_token_id query_pre_attn_scalar rms_norm_eps rope_local_base_freq "
                           "rope_scaling rope_theta sliding_window torch_dtype transformers_version "
                           "use_bidirectional_attention use_cache vocab_size",
}
CONFIG_KEYS["google/gemma-3-1b-pt"] = CONFIG_KEYS["google/gemma-3-1b-it"] = (
    "architectures attention_bias attention_dropout attn_logit_softcapping bos_token_id cache_implementation "
    "eos_token_id final_logit_softcapping head_dim hidden_activation hidden_size initializer_range intermediate_size "
    "max_position_embeddings model_type num_attention_heads num_hidden_layers num_key_value_heads pad_token_id "
    "query_pre_attn_scalar rms_norm_eps rope_local_base_freq rope_scaling rope_theta sliding_window "
    "sliding_window_pattern torch_dtype transformers_version use_cache vocab_size")
# (hidden, intermediate, heads, kv heads, head_dim, vocab, stored dtype, lm_head stored)
SHAPES = {
    "google/gemma-2-2b": (2304, 9216, 8, 4, 256, 256000, "F32", False),
    "meta-llama/Llama-3.2-1B": (2048, 8192, 32, 8, 64, 128256, "BF16", False),
    "Qwen/Qwen3-0.6B": (1024, 3072, 16, 8, 128, 151936, "BF16", True),
    "google/gemma-3-270m": (640, 2048, 4, 1, 256, 262144, "BF16", False),
    "google/gemma-3-1b-pt": (1152, 6912, 4, 1, 256, 262144, "BF16", False),
    "google/gemma-3-1b-it": (1152, 6912, 4, 1, 256, 262144, "BF16", False),
}
ARCH = {"google/gemma-2-2b": "Gemma2ForCausalLM", "meta-llama/Llama-3.2-1B": "LlamaForCausalLM",
        "Qwen/Qwen3-0.6B": "Qwen3ForCausalLM"}
# ids a tokenizer.json may hold past the model's vocabulary, as the published file does
EXTRA_IDS = {"google/gemma-3-270m": {262144}, "google/gemma-3-1b-pt": {262144}, "google/gemma-3-1b-it": {262144}}


def expected_tensors(repo, L):
    D, F, H, KV, hd, V, _, lm_head = SHAPES[repo]
    fam = "gemma" if "gemma" in repo else "qwen" if "Qwen" in repo else "llama"
    t = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "self_attn.q_proj.weight": [H * hd, D], p + "self_attn.k_proj.weight": [KV * hd, D],
                  p + "self_attn.v_proj.weight": [KV * hd, D], p + "self_attn.o_proj.weight": [D, H * hd],
                  p + "mlp.gate_proj.weight": [F, D], p + "mlp.up_proj.weight": [F, D], p + "mlp.down_proj.weight": [D, F],
                  p + "input_layernorm.weight": [D], p + "post_attention_layernorm.weight": [D]})
        if fam == "gemma":
            t.update({p + "pre_feedforward_layernorm.weight": [D], p + "post_feedforward_layernorm.weight": [D]})
        if fam == "qwen" or "gemma-3" in repo:
            t.update({p + "self_attn.q_norm.weight": [hd], p + "self_attn.k_norm.weight": [hd]})
    if lm_head:
        t["lm_head.weight"] = [V, D]
    return t


def check_model(out, repo, L):
    d = os.path.join(out, repo)
    D, F, H, KV, hd, V, dtype, lm_head = SHAPES[repo]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    check(sorted(cfg) == sorted(CONFIG_KEYS[repo].split()), f"{repo}: config.json has the published keys",
          f"extra {sorted(set(cfg) - set(CONFIG_KEYS[repo].split()))}, missing {sorted(set(CONFIG_KEYS[repo].split()) - set(cfg))}")
    check((cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
           cfg["head_dim"], cfg["vocab_size"], cfg["num_hidden_layers"]) == (D, F, H, KV, hd, V, L),
          f"{repo}: config.json widths, vocabulary and {L} layers")
    if "layer_types" in cfg:
        check(len(cfg["layer_types"]) == L, f"{repo}: layer_types lists {L} layers")
    with open(os.path.join(d, "generation_config.json")) as f:
        gen = json.load(f)
    check(gen["bos_token_id"] == cfg["bos_token_id"], f"{repo}: generation_config.json bos_token_id as config.json")
    # weights: one file or shards with an index
    idx = os.path.join(d, "model.safetensors.index.json")
    found = {}
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
        n = len(files)
        check(files == [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)] and n > 1,
              f"{repo}: {n} shards named model-0000i-of-{n:05d}.safetensors")
        total, wrong = 0, []
        for name in files:
            meta, items, size = read_safetensors(os.path.join(d, name))
            check(meta == {"format": "pt"}, f"{repo}/{name}: header valid, metadata format pt")
            total += size
            for t in items:
                found[t[0]] = (t[1], list(t[2]))
                if index["weight_map"].get(t[0]) != name:
                    wrong.append(t[0])
        check(set(index["weight_map"]) == set(found) and not wrong,
              f"{repo}: the index maps exactly the shards' tensors, each to its shard", f"{wrong[:5]}")
        check(index["metadata"]["total_size"] == total, f"{repo}: index total_size {index['metadata']['total_size']} "
              f"is the shards' tensor bytes ({total})")
    else:
        check(not any(re.match(r"model-\d{5}-of-\d{5}", n) for n in os.listdir(d)), f"{repo}: one file, no shards")
        meta, items, _ = read_safetensors(os.path.join(d, "model.safetensors"))
        check(meta == {"format": "pt"}, f"{repo}/model.safetensors: header valid, metadata format pt")
        found = shapes(items)
    want = expected_tensors(repo, L)
    check(set(found) == set(want), f"{repo}: tensor names as the family stores them ({len(want)})",
          f"extra {sorted(set(found) - set(want))[:5]}, missing {sorted(set(want) - set(found))[:5]}")
    bad = [k for k, v in want.items() if found.get(k) != (dtype, v)]
    check(not bad, f"{repo}: every tensor {dtype} with its shape", f"{bad[:5]}")
    if lm_head:
        f = os.path.join(d, "model.safetensors")
        check(np.array_equal(tensor(f, "lm_head.weight")[:64], tensor(f, "model.embed_tokens.weight")[:64]),
              f"{repo}: lm_head.weight holds the tied embedding's numbers")
    # tokenizer ids within the vocabulary
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    ids = set(tok["model"]["vocab"].values()) | {a["id"] for a in tok["added_tokens"]}
    over = sorted(i for i in ids if i >= V and i not in EXTRA_IDS.get(repo, set()))
    check(not over, f"{repo}: tokenizer.json ids within the {V:,}-id vocabulary", f"{over[:5]}")
    with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
        tcfg = json.load(f)
    check(all(int(k) in ids for k in tcfg.get("added_tokens_decoder", {})),
          f"{repo}: tokenizer_config.json's added tokens are tokenizer.json's")
    if repo == "google/gemma-2-2b":
        check(len(tok["model"]["vocab"]) == 256000 and max(ids) == 255999, f"{repo}: derived tokenizer has ids 0..255999")
    if repo == "meta-llama/Llama-3.2-1B":
        pp = tok["post_processor"]
        check(pp["type"] == "Sequence" and pp["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"] == [128000],
              f"{repo}: post-processor adds <|begin_of_text|>")


# ----------------------------------------------------------------------------
# Transcoder sets

GEMMASCOPE_L0 = [
    [76, 65, 49, 54, 88, 87, 95, 70, 52, 72, 88, 5, 6, 8, 8, 8, 10, 12, 13, 12, 11, 13, 15, 25, 37, 41],
    [115, 104, 87, 96, 157, 153, 176, 130, 92, 130, 159, 10, 10, 14, 14, 14, 17, 20, 21, 19, 19, 22, 24, 41, 59, 68],
    [165, 173, 155, 167, 282, 272, 329, 245, 168, 235, 287, 17, 18, 26, 24, 25, 29, 34, 34, 32, 31, 36, 40, 69, 96, 110],
]


def hf_local(out, uri):
    m = re.match(r"^hf://([^/]+/[^/]+)/([^?]+)(\?revision=.*)?$", uri)
    return os.path.join(out, m.group(1), m.group(2)) if m else None


def ct_config(out, path, L, kind, hooks, listed=None, model=None):
    """config.yaml read as circuit-tracer reads it: yaml.safe_load, model_kind, the two hooks,
    and transcoders (strings; hf:// entries resolved to files here)."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    rel = os.path.relpath(path, out)
    check(cfg.get("model_kind") == kind and (cfg.get("feature_input_hook"), cfg.get("feature_output_hook")) == hooks
          and (model is None or cfg.get("model_name") == model),
          f"{rel}: model_kind {kind}, hooks {hooks[0]} -> {hooks[1]}" + (f", model_name {model}" if model else ""))
    if listed is None:
        check("transcoders" not in cfg, f"{rel}: no transcoders list (layer files beside it)")
        return cfg
    entries = cfg.get("transcoders")
    check(isinstance(entries, list) and len(entries) == L and all(isinstance(e, str) for e in entries),
          f"{rel}: transcoders lists {L} strings")
    missing = [e for e in entries if not (hf_local(out, e) and os.path.isfile(hf_local(out, e)))]
    check(not missing, f"{rel}: every entry names a replica file", f"{missing[:3]}")
    check([hf_local(out, e) for e in entries] == [os.path.join(out, p) for p in listed], f"{rel}: entries in layer order")
    return cfg


def check_npz(path, D, F):
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    check(sorted(i.filename for i in infos) == ["W_dec.npy", "W_enc.npy", "b_dec.npy", "b_enc.npy", "threshold.npy"]
          and all(i.compress_type == zipfile.ZIP_STORED for i in infos),
          f"{'/'.join(path.split('/')[-4:-1])}: the five members, stored")
    with np.load(path) as z:
        want = {"W_enc": (D, F), "W_dec": (F, D), "b_enc": (F,), "b_dec": (D,), "threshold": (F,)}
        check(all(z[k].dtype == np.dtype("<f4") and z[k].shape == s for k, s in want.items()),
              f"{os.path.basename(os.path.dirname(path))}: <f4 members of GemmaScope's shapes")
        check(bool(np.all(z["threshold"] > 0)), f"{os.path.basename(os.path.dirname(path))}: thresholds positive")


def check_ct_layer(path, D, F, dtype, threshold, skip):
    meta, items, _ = read_safetensors(path)
    want = {"W_enc": [F, D], "W_dec": [F, D], "b_enc": [F], "b_dec": [D]}
    if threshold:
        want["activation_function.threshold"] = [F]
    if skip:
        want["W_skip"] = [D, D]
    got = shapes(items)
    check(got == {k: (dtype, v) for k, v in want.items()},
          f"{'/'.join(path.split('/')[-3:])}: circuit-tracer names, {dtype}, shapes", f"{got}")


def layer_files(out, sub, L):
    return [os.path.join(sub, f"layer_{i}.safetensors") for i in range(L)]


def check_target(out, target, L):
    if target in SHAPES:
        return check_model(out, target, L)
    d = os.path.join(out, target)
    if target == "google/gemma-scope-2b-pt-transcoders":
        n = 0
        for v in range(3):
            paths = [os.path.join(d, f"layer_{l}/width_16k/average_l0_{GEMMASCOPE_L0[v][l]}/params.npz") for l in range(L)]
            if all(os.path.exists(p) for p in paths):
                n += 1
                for p in paths:
                    check_npz(p, 2304, 16384)
        check(n > 0, f"{target}: the npz files of at least one L0 variant")
    elif target == "mntss/gemma-scope-transcoders":
        with open(os.path.join(d, "config.yaml")) as f:
            first = f.readline()
        check(first == "# Transcoder Configuration Gemma Scope Transcoders (lowest L0)\n", f"{target}: first line")
        ct_config(out, os.path.join(d, "config.yaml"), L, "transcoder_set", ("ln2.hook_normalized", "hook_mlp_out"),
                  [f"google/gemma-scope-2b-pt-transcoders/layer_{l}/width_16k/average_l0_{GEMMASCOPE_L0[0][l]}/params.npz"
                   for l in range(L)], "google/gemma-2-2b")
    elif target == "decoderesearch/circuit-tracer":
        for v in range(3):
            p = os.path.join(d, f"circuit_tracer/configs/gemmascope-l0-{v}.yaml")
            with open(p) as f:
                cfg = yaml.safe_load(f)
            ts = cfg.get("transcoders")
            ok = isinstance(ts, list) and len(ts) == L and all(
                isinstance(t, dict) and sorted(t) == ["filepath", "id", "layer"] and t["layer"] == i and
                t["id"] == f"gemma-2-2b-gemmascope-{i}-l0-{GEMMASCOPE_L0[v][i]}" and
                hf_local(out, t["filepath"]) == os.path.join(out, "google/gemma-scope-2b-pt-transcoders",
                                                             f"layer_{i}/width_16k/average_l0_{GEMMASCOPE_L0[v][i]}/params.npz")
                for i, t in enumerate(ts))
            check(ok and "model_kind" not in cfg and cfg["feature_input_hook"] == "ln2.hook_normalized",
                  f"gemmascope-l0-{v}.yaml: the pre-August-2025 form, {L} maps of id, layer and filepath")
    elif target == "mwhanna/gemma-scope-transcoders":
        ct_config(out, os.path.join(d, "config.yaml"), L, "transcoder_set", ("ln2.hook_normalized", "hook_mlp_out"),
                  model="google/gemma-2-2b")
        for l in range(L):
            p = os.path.join(d, f"layer_{l}.safetensors")
            check_ct_layer(p, 2304, 16384, "F32", True, False)
            npz = os.path.join(out, "google/gemma-scope-2b-pt-transcoders",
                               f"layer_{l}/width_16k/average_l0_{GEMMASCOPE_L0[0][l]}/params.npz")
            if os.path.exists(npz):
                with np.load(npz) as z:
                    same = (np.array_equal(tensor(p, "W_enc"), z["W_enc"].T) and np.array_equal(tensor(p, "W_dec"), z["W_dec"])
                            and np.array_equal(tensor(p, "activation_function.threshold"), z["threshold"])
                            and np.array_equal(tensor(p, "b_enc"), z["b_enc"]))
                check(same, f"{target} layer {l}: the numbers of the l0-0 npz (W_enc transposed)")
    elif target in ("mntss/clt-gemma-2-2b-426k", "mntss/clt-llama-3.2-1b-524k"):
        D, F, model = (2304, 16384, "google/gemma-2-2b") if "gemma" in target else (2048, 32768, "meta-llama/Llama-3.2-1B")
        ct_config(out, os.path.join(d, "config.yaml"), L, "cross_layer_transcoder", ("hook_resid_mid", "hook_mlp_out"),
                  model=model)
        for i in range(L):
            _, items, _ = read_safetensors(os.path.join(d, f"W_enc_{i}.safetensors"))
            check(shapes(items) == {f"W_enc_{i}": ("BF16", [F, D]), f"b_enc_{i}": ("BF16", [F]), f"b_dec_{i}": ("BF16", [D])},
                  f"{target}/W_enc_{i}.safetensors: W_enc_{i}, b_enc_{i}, b_dec_{i} BF16")
            _, items, _ = read_safetensors(os.path.join(d, f"W_dec_{i}.safetensors"))
            check(shapes(items) == {f"W_dec_{i}": ("BF16", [F, L - i, D])}, f"{target}/W_dec_{i}.safetensors: [{F}, {L - i}, {D}]")
        check(not os.path.exists(os.path.join(d, f"W_enc_{L}.safetensors")), f"{target}: {L} layers, no more")
    elif target == "mntss/transcoder-Llama-3.2-1B":
        ct_config(out, os.path.join(d, "config.yaml"), L, "transcoder_set", ("hook_resid_mid", "mlp.hook_out"),
                  model="meta-llama/Llama-3.2-1B")
        check(os.path.getsize(os.path.join(d, "config.yaml")) == 140, f"{target}: config.yaml of 140 bytes (the published size)")
        for l in range(L):
            check_ct_layer(os.path.join(d, f"layer_{l}.safetensors"), 2048, 131072, "BF16", False, True)
    elif target == "mwhanna/qwen3-0.6b-transcoders-lowl0":
        ct_config(out, os.path.join(d, "config.yaml"), L, "transcoder_set", ("mlp.hook_in", "mlp.hook_out"),
                  model="Qwen/Qwen3-0.6B")
        for l in range(L):
            check_ct_layer(os.path.join(d, f"layer_{l}.safetensors"), 1024, 163840, "BF16", False, False)
    elif target.startswith("mwhanna/gemma-scope-2-"):
        size, variant = re.match(r"mwhanna/gemma-scope-2-(\w+)-(pt|it)$", target).groups()
        D = {"270m": 640, "1b": 1152}[size]
        model = "google/gemma-3-270m" + ("-it" if variant == "it" else "") if size == "270m" else f"google/gemma-3-1b-{variant}"
        sub = os.path.join(d, "transcoder_all/width_16k_l0_small_affine")
        if os.path.exists(os.path.join(sub, "layer_0.safetensors")):
            ct_config(out, os.path.join(sub, "config.yaml"), L, "transcoder_set", ("mlp.hook_in", "hook_mlp_out"), model=model)
            for l in range(L):
                check_ct_layer(os.path.join(sub, f"layer_{l}.safetensors"), D, 16384, "F32", True, True)
        else:
            raw = [f"google/gemma-scope-2-{size}-{variant}/transcoder_all/layer_{l}_width_16k_l0_small_affine/params.safetensors"
                   for l in range(L)]
            ct_config(out, os.path.join(sub, "config.yaml"), L, "transcoder_set", ("mlp.hook_in", "hook_mlp_out"), raw, model)
            for p in raw:
                _, items, _ = read_safetensors(os.path.join(out, p))
                want = {"w_enc": [D, 16384], "w_dec": [16384, D], "b_enc": [16384], "b_dec": [D], "threshold": [16384],
                        "affine_skip_connection": [D, D]}
                check(shapes(items) == {k: ("F32", v) for k, v in want.items()}, f"{p}: GemmaScope-2 names, F32, shapes")
    else:
        check(False, f"unknown target {target}")


def check_same(a, b):
    """Layout a (circuit-tracer files) and layout b (Google's params) of the GemmaScope-2 sets hold
    the same numbers, as circuit-tracer maps them: W_enc = w_enc^T, W_skip = affine^T."""
    for root, _, files in os.walk(os.path.join(a, "mwhanna")):
        for name in sorted(files):
            m = re.match(r"layer_(\d+)\.safetensors$", name)
            if not m:
                continue
            pa = os.path.join(root, name)
            repo = os.path.relpath(pa, os.path.join(a, "mwhanna")).split("/")[0]
            pb = os.path.join(b, "google", repo, f"transcoder_all/layer_{m.group(1)}_width_16k_l0_small_affine/params.safetensors")
            same = (np.array_equal(tensor(pa, "W_enc"), tensor(pb, "w_enc").T) and
                    np.array_equal(tensor(pa, "W_dec"), tensor(pb, "w_dec")) and
                    np.array_equal(tensor(pa, "W_skip"), tensor(pb, "affine_skip_connection").T) and
                    np.array_equal(tensor(pa, "activation_function.threshold"), tensor(pb, "threshold")) and
                    all(np.array_equal(tensor(pa, k), tensor(pb, k)) for k in ("b_enc", "b_dec")))
            check(same, f"{repo} layer {m.group(1)}: layouts a and b hold the same numbers")


# replicas.py --plan at full depth against the published sizes (README.md: sources)
PUBLISHED = {
    "google/gemma-2-2b": 10457367552, "meta-llama/Llama-3.2-1B": 2471628800, "Qwen/Qwen3-0.6B": 1503264768,
    "google/gemma-3-270m": 536196352, "google/gemma-3-1b-pt": 1999771904, "google/gemma-3-1b-it": 1999771904,
    "google/gemma-scope-2b-pt-transcoders": 26 * 302130176, "mwhanna/gemma-scope-transcoders": 26 * 302130176,
    "mntss/transcoder-Llama-3.2-1B": 16 * 1082396672, "mwhanna/qwen3-0.6b-transcoders-lowl0": 28 * 671418368,
}
PUBLISHED_GB = {"mntss/clt-gemma-2-2b-426k": 28.46, "mntss/clt-llama-3.2-1b-524k": 20.40,
                "mwhanna/gemma-scope-2-270m-pt": 1.54, "mwhanna/gemma-scope-2-1b-pt": 4.07}
SHARD_GB = ["4.99", "4.98", "0.481"]   # the Hugging Face page's sizes of gemma-2-2b's shards


def check_plan(path):
    totals, shards = {}, []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[1] == "total":
                totals[parts[0]] = int(parts[2])
            elif parts[0].startswith("google/gemma-2-2b/model-"):
                shards.append(int(parts[1]))
    for repo, n in PUBLISHED.items():
        check(totals.get(repo) == n, f"{repo}: {n:,} bytes of tensors at full depth", f"planned {totals.get(repo)}")
    for repo, gb in PUBLISHED_GB.items():
        check(repo in totals and round(totals[repo] / 1e9, 2) == gb, f"{repo}: {gb} GB of tensors at full depth",
              f"planned {totals.get(repo)}")
    check([f"{s / 1e9:.3g}" for s in shards] == SHARD_GB, f"google/gemma-2-2b: shards of {', '.join(SHARD_GB)} GB",
          f"planned {shards}")


# SHA-256 of the published texts: mntss/gemma-scope-transcoders/config.yaml (commit 9250a2d, as
# PCfVW/candle-mi's src/clt/gemmascope_test_fixture.yaml quotes it without its two comment lines)
# and circuit-tracer's configs/gemmascope-l0-{0,1,2}.yaml at 23a2c10^
TEXTS = {
    "mntss-gemma-scope-transcoders.yaml": "8a913c995642468bf6ee3a4d53d12f6f4b74c5aee0da3e26923e52cea5f11487",
    "gemmascope-l0-0.yaml": "79a4b7cb9d4fa267f31ec80476b9965a87de427bf8f82eda4a8f2484ffb51bc8",
    "gemmascope-l0-1.yaml": "a2852c5d158413bcd434f3a19516f4b7d866c57f7eaebd25e7b4a0e1c68ba6b8",
    "gemmascope-l0-2.yaml": "482e53070d9af68cf3006c9697a3127a667f636f5dbe82ffe78e6e495e87b443",
}


def check_texts(d):
    for name, sha in TEXTS.items():
        with open(os.path.join(d, name), "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        check(got == sha, f"{name}: the published text, byte for byte", f"sha256 {got}")


def write_inputs(out, model, T, path):
    """What mlp.hook_in of a Gemma-3 model holds: the normalized residual (RMS 1) times the stored
    pre_feedforward_layernorm gain 1 + w; random rows stand in for the residual."""
    f = os.path.join(out, model, "model.safetensors")
    with open(os.path.join(out, model, "config.json")) as fh:
        L = json.load(fh)["num_hidden_layers"]
    rng = np.random.default_rng(5)
    res = {}
    for l in range(L):
        g = 1.0 + tensor(f, f"model.layers.{l}.pre_feedforward_layernorm.weight").astype(np.float64)
        n = rng.standard_normal((T, g.size))
        n /= np.sqrt(np.mean(n * n, axis=1, keepdims=True))
        res[str(l)] = (n * g).tolist()
    with open(path, "w") as fh:
        json.dump(res, fh)
    check(True, f"{model}: {L} layers of {T} mlp.hook_in rows from the stored gains")


def main(argv):
    try:
        if argv[0] == "--inputs":
            write_inputs(argv[1], argv[2], int(argv[3]), argv[4])
        elif argv[0] == "--same":
            check_same(argv[1], argv[2])
        elif argv[0] == "--plan":
            check_plan(argv[1])
        elif argv[0] == "--texts":
            check_texts(argv[1])
        else:
            out, target = argv[0], argv[1]
            L = int(argv[argv.index("--layers") + 1])
            check_target(out, target, L)
    except (AssertionError, KeyError, ValueError, OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        check(False, f"{' '.join(argv[:2])}: readable ({type(e).__name__}: {e})")
    print(f"# {n_checks - failed} of {n_checks} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
