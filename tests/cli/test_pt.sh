#!/usr/bin/env bash
# test_pt.sh - circuit-tracer's .pt graph files against PyTorch itself (Debian's python3-torch):
# torch.load reads the .pt ctrace writes as circuit-tracer's Graph.from_pt does (the classes of
# circuit_tracer it names: UnifiedConfig, LogitTarget, defined here as circuit-tracer defines them,
# and a Graph(**d) with Graph.__init__'s parameters), every tensor equal to ctrace's safetensors
# of the same graph; ctrace reads what torch.save writes (a view at an offset into a larger
# storage, bfloat16 activations, a list scan, the older tensor of logit token ids) and refuses
# what it cannot read (strided views, the legacy format, a pickle calling anything) with a message;
# ctrace convert between .pt, .safetensors and JSON.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
show() { sed 's/^/#   /' "$1"; }
if ! $PY -c "import torch" 2> /dev/null; then
  echo "1..0 # SKIP python3-torch is not installed (tests/setup.sh test installs it)"
  exit 0
fi
cd "$tmp"

# the stand-ins of circuit-tracer's classes a .pt names (fields as circuit-tracer defines them)
mkdir -p ct/circuit_tracer/utils ct/circuit_tracer/attribution
touch ct/circuit_tracer/__init__.py ct/circuit_tracer/utils/__init__.py ct/circuit_tracer/attribution/__init__.py
cat > ct/circuit_tracer/utils/tl_nnsight_mapping.py <<'EOF'
from dataclasses import dataclass
from typing import Any
@dataclass
class UnifiedConfig:
    n_layers: int
    d_model: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    tokenizer_name: str
    model_name: str
    original_architecture: str
    n_key_value_heads: int | None = None
    dtype: Any | None = None
EOF
cat > ct/circuit_tracer/attribution/targets.py <<'EOF'
from typing import NamedTuple
class LogitTarget(NamedTuple):
    token_str: str
    vocab_idx: int
EOF
cat > ct/circuit_tracer/graph.py <<'EOF'
import inspect, torch
class Graph:   # Graph.__init__'s parameters and from_pt's call, as circuit-tracer has them
    def __init__(self, input_string, input_tokens, active_features, adjacency_matrix, cfg, selected_features,
                 activation_values, logit_targets, logit_probabilities, scan=None, vocab_size=None):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})
    @staticmethod
    def from_pt(path):
        return Graph(**torch.load(path, weights_only=False, map_location="cpu"))
EOF
cat > st.py <<'EOF'
import json, struct, numpy as np
def read(path):   # a safetensors file: tensors as numpy arrays, and the metadata
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    dt = {"F32": np.float32, "I64": np.int64}
    out = {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=dt[v["dtype"]]).reshape(v["shape"])
           for k, v in h.items() if k != "__metadata__"}
    return out, h.get("__metadata__", {})
EOF
cat > graph.lua <<'EOF'
local ct = require "ctrace"
local m, tc = ct.load_model("stories260K"), ct.load_transcoders("stories260K")
local g = ct.replacement_model(m, tc):attribute("Once upon a time, there was a little girl named Lily",
                                                 {max_feature_nodes = 300})
g:save("g.pt")
g:save("g.safetensors")
-- a target whose label is no UTF-8 (as a byte token's label is)
local v = ct.zeros(64)
for i = 1, 64 do v:set(i, math.sin(i)) end
local b = ct.replacement_model(m, tc):attribute("Once upon a time", {max_feature_nodes = 20,
  targets = {{vector = v, label = "\226\128 odd", weight = 1}}})
b:save("bytes.pt")
b:save("bytes.safetensors")
EOF
"$CTRACE" graph.lua > g.log 2>&1 && test -s g.pt -a -s g.safetensors && ok "ctrace writes a stories260K graph as .pt and .safetensors" ||
  { bad "writing the graph"; show g.log; }

# 1. torch reads ctrace's .pt as circuit-tracer's Graph.from_pt does
PYTHONPATH=ct $PY - > load.log 2>&1 <<'EOF'
import numpy as np, torch, st
from circuit_tracer.graph import Graph
from circuit_tracer.utils.tl_nnsight_mapping import UnifiedConfig
from circuit_tracer.attribution.targets import LogitTarget
g = Graph.from_pt("g.pt")
t, meta = st.read("g.safetensors")
assert isinstance(g.cfg, UnifiedConfig), type(g.cfg)
c = g.cfg
assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.d_vocab, c.n_key_value_heads) == (5, 64, 8, 8, 172, 512, 4), c
assert c.model_name == c.tokenizer_name == meta["model_name"] and c.original_architecture == "llama2.c", c
assert c.dtype == torch.float32 and g.scan == (meta["scan_name"] or None) and g.vocab_size == 512, (c.dtype, g.scan)
assert g.input_string == meta["input_string"], g.input_string
for name, dtype in [("adjacency_matrix", torch.float32), ("active_features", torch.int64), ("selected_features", torch.int64),
                    ("activation_values", torch.float32), ("logit_probabilities", torch.float32), ("input_tokens", torch.int64)]:
    v = getattr(g, name)
    assert v.dtype == dtype and v.is_contiguous(), (name, v.dtype)
    assert np.array_equal(v.numpy(), t[name]), name
assert all(isinstance(x, LogitTarget) for x in g.logit_targets)
assert [x.vocab_idx for x in g.logit_targets] == t["logit_tokens"].tolist()
assert [x.token_str for x in g.logit_targets] == __import__("json").loads(meta["logit_labels"])
N = len(g.selected_features) + (c.n_layers + 1) * len(g.input_tokens) + len(g.logit_targets)
assert g.adjacency_matrix.shape == (N, N) and g.active_features.shape[1] == 3
# what circuit-tracer's create_graph_files reads of it
i = 0
layer, pos, feat = g.active_features[g.selected_features[i]].tolist()
act = g.activation_values[g.selected_features[i]].item()
print("torch %s read %d nodes, %d features; node 0 is feature %d of layer %d at position %d (activation %.4f)"
      % (torch.__version__, N, len(g.selected_features), feat, layer, pos, act))
EOF
[ $? = 0 ] && ok "torch.load + Graph(**d) as circuit-tracer's from_pt: UnifiedConfig, LogitTarget, every tensor equal to ctrace's ($(tail -1 load.log))" ||
  { bad "torch reading ctrace's .pt"; show load.log; }

PYTHONPATH=ct $PY - > bytes.log 2>&1 <<'EOF'
import torch
d = torch.load("bytes.pt", weights_only=False)
assert d["logit_targets"][0].token_str == "\ufffd\ufffd odd", d["logit_targets"]
EOF
[ $? = 0 ] && "$CTRACE" convert bytes.pt bytes2.safetensors > bytes2.log 2>&1 && cmp -s bytes.safetensors bytes2.safetensors &&
  ok "a label that is no UTF-8: U+FFFD in the pickle (torch.load reads it), byte for byte back in ctrace" ||
  { bad "labels that are no UTF-8"; show bytes.log; show bytes2.log; }

# 2. torch writes, ctrace reads
PYTHONPATH=ct $PY - > save.log 2>&1 <<'EOF'
import torch
from circuit_tracer.graph import Graph
d = torch.load("g.pt", weights_only=False)
torch.save(d, "torch.pt")                                   # as Graph.to_pt writes it
e = dict(d)
big = torch.zeros(len(d["input_tokens"]) + 7, dtype=torch.int64)
big[5:5 + len(d["input_tokens"])] = d["input_tokens"]
e["input_tokens"] = big[5:5 + len(d["input_tokens"])]       # a view at an offset into a larger storage
e["activation_values"] = d["activation_values"].to(torch.bfloat16)
e["scan"] = ["transcoder-a", "transcoder-b"]
e["logit_targets"] = torch.tensor([x.vocab_idx for x in d["logit_targets"]])   # older files
torch.save(e, "variants.pt")
s = dict(d); s["adjacency_matrix"] = d["adjacency_matrix"].t()                # a strided view
torch.save(s, "strided.pt")
torch.save(d, "legacy.pt", _use_new_zipfile_serialization=False)
print("ok")
EOF
[ $? = 0 ] || { bad "torch.save"; show save.log; }
cat > read.lua <<'EOF'
local ct = require "ctrace"
local g = ct.load_graph(arg[1])
local i = g:info()
io.write(string.format("%d %d %d %d %s %s|", i.n_nodes, i.n_features, i.n_logits, i.n_pos, i.scan, i.model_name))
g:save(arg[2])
EOF
"$CTRACE" read.lua torch.pt torch.safetensors > r1.log 2>&1 && $PY - <<'EOF'
import numpy as np, st, sys
a, ma = st.read("g.safetensors"); b, mb = st.read("torch.safetensors")
assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])]
keys = ["input_string", "model_name", "scan_name", "n_layers", "d_model", "vocab_size", "logit_labels", "architecture"]
assert all(ma[k] == mb[k] for k in keys), [k for k in keys if ma[k] != mb[k]]
EOF
[ $? = 0 ] && ok "ctrace reads torch.save's file: the same graph (every tensor, prompt, model, scan, labels)" ||
  { bad "ctrace reading torch's .pt"; show r1.log; }
"$CTRACE" read.lua variants.pt variants.safetensors > r2.log 2>&1 && grep -q "transcoder-a,transcoder-b" r2.log && $PY - <<'EOF'
import numpy as np, st, torch
a, _ = st.read("g.safetensors"); b, _ = st.read("variants.safetensors")
assert np.array_equal(a["input_tokens"], b["input_tokens"]) and np.array_equal(a["logit_tokens"], b["logit_tokens"])
bf = torch.from_numpy(a["activation_values"].copy()).to(torch.bfloat16).float().numpy()
assert np.array_equal(bf, b["activation_values"])
assert np.array_equal(a["adjacency_matrix"], b["adjacency_matrix"])
EOF
[ $? = 0 ] && ok "a view at an offset, bfloat16 activations (converted exactly), a list scan, logit ids as a tensor" ||
  { bad "torch.save variants"; show r2.log; }
# refused FILE LOG MESSAGE DESCRIPTION: ctrace fails to read FILE, saying MESSAGE
refused() {
  "$CTRACE" read.lua "$1" x.safetensors > "$2" 2>&1
  [ $? != 0 ] && grep -q "$3" "$2" && ok "$4" || { bad "$4"; show "$2"; }
}
"$CTRACE" read.lua strided.pt x.safetensors > r3.log 2>&1
[ $? != 0 ] && grep -q "strides other than C order" r3.log && ok "a strided view is refused: $(grep -o 'a tensor with strides[^;]*' r3.log)" ||
  { bad "strided view"; show r3.log; }
refused legacy.pt r4.log "legacy format" "the legacy (pre-zip) format is refused with how to resave it"

# 3. a pickle that calls things: nothing is called (os.system becomes an inert object)
PYTHONPATH=ct $PY - > evil.log 2>&1 <<'EOF'
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))
d = torch.load("g.pt", weights_only=False)
d["cfg"] = Evil()
torch.save(d, "evil.pt")
EOF
"$CTRACE" read.lua evil.pt x.safetensors > r5.log 2>&1
[ $? != 0 ] && test ! -e pwned && grep -q "cfg has no n_layers" r5.log && ok "a pickle calling os.system runs nothing (the call is an inert object; the graph lacks its cfg)" ||
  { bad "evil pickle"; show r5.log; ls; }

# hostile archives: a pickle of two million values, a compressed member (torch.save compresses
# nothing: a deflated member could claim a thousand times its size)
$PY - <<'EOF'
import zipfile
with zipfile.ZipFile("many.pt", "w") as z:
    z.writestr("many/data.pkl", b"\x80\x02" + b"N" * 2000000 + b".")
with zipfile.ZipFile("deflated.pt", "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("deflated/data.pkl", b"\x80\x02N.")
EOF
refused many.pt r6.log "more than 1048576 values" "a pickle making two million values is refused (at most 2^20)"
refused deflated.pt r7.log "is compressed" "a compressed member is refused before it is inflated"

# 4. ctrace convert
"$CTRACE" convert g.pt c.safetensors > c1.log 2>&1 && cmp -s c.safetensors g.safetensors &&
  "$CTRACE" convert g.safetensors c.pt >> c1.log 2>&1 && "$CTRACE" convert c.pt c2.safetensors >> c1.log 2>&1 &&
  cmp -s c2.safetensors g.safetensors && ok "convert .pt -> .safetensors -> .pt -> .safetensors: the same bytes as written first" ||
  { bad "convert round trip"; show c1.log; }
"$CTRACE" convert torch.pt out/lily.json > c2.log 2>&1 && test -s out/lily.json -a -s out/graph-metadata.json -a -s out/lily.html &&
  grep -q '"slug": *"lily"' out/lily.json && ok "convert torch's .pt -> graph JSON (pruned; metadata entry and viewer page beside it)" ||
  { bad "convert to JSON"; show c2.log; }
"$CTRACE" convert out/lily.json back.pt > c3.log 2>&1
[ $? = 2 ] && grep -q "pruned graph" c3.log && ok "convert graph JSON -> .pt refused (exit 2): a graph JSON holds only the pruned graph" ||
  { bad "convert json -> pt"; show c3.log; }

echo "1..$n"
exit $fail
