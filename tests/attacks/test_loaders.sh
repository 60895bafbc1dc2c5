#!/usr/bin/env bash
# test_loaders.sh - attacks on the file loaders of a confined script: reads outside the read roots
# (through ct.sha256, ct.list_dir, ct.exists, every loader, a transcoder config.yaml's list, links,
# paths that cannot be resolved), the content of a refused file showing up in an error, files
# built to make a loader hang (quadratic loops, members that share their data), overflow
# (n_layers = 2^31 - 1, dimensions of 2^40) or block (FIFOs).
#
# A confined script sets its read roots and locks them (require("ctrace.core").set_read_roots,
# lock_roots), as a sandboxed run does, without depending on `ctrace run`.
cd "$(dirname "$0")/../.."
. tests/attacks/lib.sh
PY=/usr/bin/python3

in=$tmp/in          # the only directory a confined script may read
out=$tmp/out        # outside: the secret lives here
mkdir -p "$in" "$out"
secret_file "$out/secret.txt"
cp "$out/secret.txt" "$out/layer_0.safetensors"
cp "$out/secret.txt" "$out/tokenizer.json"
cp "$out/secret.txt" "$out/graph.json"
for f in secret.txt layer_0.safetensors tokenizer.json graph.json; do canary "$out/$f"; done

# confined NAME LUA: runs LUA with reads confined to $in; output in $tmp/NAME.log, status in $st
confined() {
  local name=$1 body=$2
  cat > "$tmp/$name.lua" <<EOF
local core = require("ctrace.core")
core.set_read_roots{"$in"}
core.lock_roots()
$body
EOF
  timeout 60 "$CTRACE" "$tmp/$name.lua" > "$tmp/$name.log" 2>&1
  st=$?
}
# says NAME TEXT: the log of NAME holds TEXT
says() { if grep -qF -- "$2" "$tmp/$1.log"; then ok "$1: says '$2'"; else bad "$1: no '$2'"; show "$tmp/$1.log"; fi; }
# no_signal NAME: the process ended by itself (no crash, no timeout)
no_signal() { if [ "$st" -lt 124 ]; then ok "$1: ended with a status of its own ($st)"; else bad "$1: status $st (a crash or a hang)"; show "$tmp/$1.log"; fi; }

# ---- the core functions that take paths -------------------------------------------------------
confined sha256_outside "print(core.sha256('$out/secret.txt'))"
attack "sha256 of a file outside the read roots" $st "$tmp/sha256_outside.log"
says sha256_outside "may read only under"

confined list_dir_outside "print(#core.list_dir('$out'))"
attack "list_dir of a directory outside the read roots" $st "$tmp/list_dir_outside.log"
says list_dir_outside "may read only under"

for what in "file:$out/secret.txt" "dir:$out" "missing:$out/nothing"; do
  confined exists_outside "print(core.exists('${what#*:}'))"
  [ $st -ne 0 ] && grep -qF "may read only under" "$tmp/exists_outside.log" ||
    { bad "exists of ${what%%:*} outside the roots: status $st"; show "$tmp/exists_outside.log"; }
done
confined exists_inside "print(core.exists('$in'), core.exists('$in/nothing'))"
if [ $st -eq 0 ] && grep -qx $'directory\tnil' "$tmp/exists_inside.log"; then
  ok "exists: refused for every path outside the roots (a file, a directory, a missing one alike), the truth inside"
else bad "exists inside the roots"; show "$tmp/exists_inside.log"; fi

# ---- paths that cannot be resolved: denied by default -----------------------------------------
# a directory chain whose real path is longer than PATH_MAX, outside the roots, reached through
# links (a link's target is at most PATH_MAX itself: two hops of 12 directories): realpath fails
# (ENAMETOOLONG), the kernel still opens the file
( cd "$out" && for i in $(seq 1 24); do d=$(printf 'd%0200d' "$i"); mkdir "$d" && cd "$d" || exit 1; done
  printf '%s\n' "$SECRET" > secret.txt ) || bad "could not build the long path"
half() { for i in $(seq "$1" "$2"); do printf 'd%0200d/' "$i"; done; }
ln -s "$(half 1 12)" "$out/hop1"
ln -s "$(half 13 24)" "$out/$(half 1 12)hop2"
ln -s "$out/hop1/hop2" "$in/deepest"
confined long_path "print(core.sha256('$in/deepest/secret.txt'))"
attack "sha256 through a link whose target is longer than PATH_MAX" $st "$tmp/long_path.log"
says long_path "refused"
confined long_path_dir "print(#core.list_dir('$in/deepest'))"
attack "list_dir through a link whose target is longer than PATH_MAX" $st "$tmp/long_path_dir.log"
confined long_path_graph "core.load_graph('$in/deepest/secret.txt')"
attack "load_graph through a link whose target is longer than PATH_MAX" $st "$tmp/long_path_graph.log"

ln -s loop_b "$in/loop_a"; ln -s loop_a "$in/loop_b"
confined link_loop "print(#core.list_dir('$in/loop_a'))"
attack "list_dir of a loop of links (ELOOP)" $st "$tmp/link_loop.log"
says link_loop "cannot be resolved"

# ---- every loader on a file outside the roots, directly and through a link inside them ---------
ln -s "$out/secret.txt" "$in/link.json"
ln -s "$out/secret.txt" "$in/link.safetensors"
ln -s "$out/tokenizer.json" "$in/tokenizer.json"
ln -s "$out/secret.txt" "$in/tok.bin"
for what in "load_graph:$out/graph.json" "load_graph:$in/link.json" "load_graph:$in/link.safetensors" \
            "load_tokenizer:$out/tokenizer.json" "load_tokenizer:$in/tokenizer.json" "load_tokenizer:$in/tok.bin" \
            "load_model:$out/secret.txt" "load_model:$in/link.safetensors" "load_transcoders:$out/layer_0.safetensors" \
            "load_transcoders:$in/link.safetensors"; do
  fn=${what%%:*} p=${what#*:}
  name=refused_${fn}_$(basename "$p" | tr -c 'a-z0-9\n' _)_$RANDOM
  confined "$name" "core.$fn('$p')"
  [ $st -ne 0 ] && grep -qF "may read only under" "$tmp/$name.log" || { bad "$fn $p: not refused"; show "$tmp/$name.log"; }
done
ok "graph, tokenizer, model and transcoder loaders refuse files outside the roots, also through links"

# ---- a transcoder config.yaml listing files outside the roots ---------------------------------
mkdir -p "$in/tc_abs" "$in/tc_dotdot/sub" "$in/tc_link"
printf 'model_kind: transcoder_set\ntranscoders:\n  - %s\n' "$out/layer_0.safetensors" > "$in/tc_abs/config.yaml"
printf 'model_kind: transcoder_set\ntranscoders:\n  - ../../../out/layer_0.safetensors\n' > "$in/tc_dotdot/sub/config.yaml"
ln -s "$out/layer_0.safetensors" "$in/tc_link/layer_0.safetensors"
printf 'model_kind: transcoder_set\ntranscoders:\n  - layer_0.safetensors\n' > "$in/tc_link/config.yaml"
for c in tc_abs tc_dotdot/sub tc_link; do
  name=config_$(echo "$c" | tr / _)
  confined "$name" "core.load_transcoders('$in/$c/config.yaml')"
  attack "config.yaml listing a file outside the roots ($c)" $st "$tmp/$name.log"
  says "$name" "may read only under"
done
# an entry that does not exist outside the roots is refused too (nothing is told about it)
mkdir -p "$in/tc_missing"
printf 'model_kind: transcoder_set\ntranscoders:\n  - %s\n' "$out/nothing.safetensors" > "$in/tc_missing/config.yaml"
confined config_missing "core.load_transcoders('$in/tc_missing/config.yaml')"
attack "config.yaml listing a missing file outside the roots" $st "$tmp/config_missing.log"
says config_missing "may read only under"

# the secret appears in no output of any refused read
no_secret "refused reads" "$tmp"/*.log

# ---- FIFOs: refused at once, never waited on ---------------------------------------------------
mkfifo "$in/fifo.json" "$in/fifo.safetensors" "$in/fifo.bin"
mkdir -p "$in/fifo_model" && mkfifo "$in/fifo_model/model.bin"
for what in "load_graph:$in/fifo.json" "load_graph:$in/fifo.safetensors" "load_tokenizer:$in/fifo.bin" \
            "load_model:$in/fifo_model" "load_model:$in/fifo.bin" "load_transcoders:$in/fifo.safetensors" "sha256:$in/fifo.bin"; do
  fn=${what%%:*} p=${what#*:}
  confined fifo "core.$fn('$p')"
  if [ $st -ne 0 ] && [ $st -lt 124 ] && grep -qF "not a regular file" "$tmp/fifo.log"; then :; else
    bad "$fn on a FIFO: status $st"; show "$tmp/fifo.log"; fi
done
ok "FIFOs as graph, tokenizer, model, transcoders and sha256 input are refused without blocking"

# ---- graph JSON: 200,000 prompt tokens load in linear time -------------------------------------
# (quadratic, this took minutes; linear, about a second: timeout 60 tells them apart)
"$PY" - "$in/big.json" <<'EOF'
import json, sys
T = 200000
nodes = [{"node_id": "E_%d_%d" % (t % 50, t), "feature": t, "layer": "E", "ctx_idx": t, "feature_type": "embedding"}
         for t in range(T)]
nodes.append({"node_id": "2_7_%d" % (T - 1), "feature": 7, "layer": "2", "ctx_idx": T - 1, "feature_type": "logit",
              "clerp": "Output \"x\" (p=0.5)", "token_prob": 0.5})
links = [{"source": "E_%d_%d" % (t % 50, t), "target": "2_7_%d" % (T - 1), "weight": 0.5} for t in range(T)]
json.dump({"metadata": {"prompt_tokens": ["t%d" % t for t in range(T)], "prompt": "p"}, "nodes": nodes, "links": links},
          open(sys.argv[1], "w"))
EOF
confined big_json "local g = core.load_graph('$in/big.json')
local i = g:info()
print('n_pos', i.n_pos, 'n_nodes', i.n_nodes, 'last token', g:tokens()[200000])"
if [ $st -eq 0 ] && grep -q "n_pos	200000	n_nodes	400001	last token	49" "$tmp/big_json.log"; then
  ok "a graph JSON of 200,000 prompt tokens loads whole within 60 s (linear)"
else bad "graph JSON of 200,000 tokens (status $st)"; show "$tmp/big_json.log"; fi

# ---- graph safetensors whose metadata overflows ------------------------------------------------
"$PY" - "$in" <<'EOF'
import json, struct, sys
def st(path, tensors, meta):
    header, data = {"__metadata__": meta}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
i64 = lambda *v: struct.pack("<%dq" % len(v), *v)
base = {"active_features": ("I64", [0, 3], b""), "selected_features": ("I64", [0], b""),
        "activation_values": ("F32", [0], b""), "input_tokens": ("I64", [1], i64(5)),
        "logit_tokens": ("I64", [1], i64(3)), "logit_probabilities": ("F32", [1], struct.pack("<f", 1.0))}
for name, nl in [("layers_int_max", "2147483647"), ("layers_negative", "-1"), ("layers_junk", "3x")]:
    t = dict(base); t["adjacency_matrix"] = ("F32", [0, 0], b"")
    st("%s/%s.safetensors" % (sys.argv[1], name), t, {"n_layers": nl})
# dimensions of 2^40 x 2^40 (and 2^53 along an axis of an empty tensor)
t = dict(base); t["adjacency_matrix"] = ("F32", [1 << 40, 1 << 40], b"")
st("%s/huge_adjacency.safetensors" % sys.argv[1], t, {"n_layers": "1"})
t = dict(base); t["input_tokens"] = ("I64", [0, 1 << 53], b""); t["adjacency_matrix"] = ("F32", [0, 0], b"")
st("%s/huge_tokens.safetensors" % sys.argv[1], t, {"n_layers": "1"})
# a model whose embedding claims 2^40 rows; one with a weight of 2^53 x 0
import os
os.makedirs("%s/model_huge" % sys.argv[1], exist_ok=True)
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "vocab_size": 16}, open("%s/model_huge/config.json" % sys.argv[1], "w"))
st("%s/model_huge/model.safetensors" % sys.argv[1], {"model.embed_tokens.weight": ("F32", [1 << 40, 8], b"")}, {})
os.makedirs("%s/model_zero" % sys.argv[1], exist_ok=True)
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "vocab_size": 16}, open("%s/model_zero/config.json" % sys.argv[1], "w"))
st("%s/model_zero/model.safetensors" % sys.argv[1], {"model.embed_tokens.weight": ("F32", [1 << 53, 0], b"")}, {})
# a transcoder layer whose biases claim 2^53 features with a d_model of 0
st("%s/tc_huge.safetensors" % sys.argv[1], {"W_enc": ("F32", [1 << 53, 0], b""), "W_dec": ("F32", [1 << 53, 0], b""),
   "b_enc": ("F32", [1 << 53], b""), "b_dec": ("F32", [0], b"")}, {})
st("%s/tc_zero.safetensors" % sys.argv[1], {"W_enc": ("F32", [0, 0], b""), "W_dec": ("F32", [0, 0], b""),
   "b_enc": ("F32", [0], b""), "b_dec": ("F32", [0], b"")}, {})
EOF
for name in layers_int_max layers_negative layers_junk; do
  confined "$name" "core.load_graph('$in/$name.safetensors')"
  attack "graph safetensors with n_layers $name" $st "$tmp/$name.log"
  says "$name" "n_layers must be a decimal integer"
done
for what in "huge_adjacency:load_graph:$in/huge_adjacency.safetensors:BAD_SHAPE" \
            "huge_tokens:load_graph:$in/huge_tokens.safetensors:BAD_" \
            "model_huge:load_model:$in/model_huge:BAD_SHAPE" "model_zero:load_model:$in/model_zero:BAD_SHAPE" \
            "tc_huge:load_transcoders:$in/tc_huge.safetensors:BAD_SHAPE" \
            "tc_zero:load_transcoders:$in/tc_zero.safetensors:BAD_SHAPE"; do
  IFS=: read -r name fn p code <<< "$what"
  confined "$name" "core.$fn('$p')"
  if [ $st -ne 0 ] && [ $st -lt 124 ] && grep -qF "$code" "$tmp/$name.log"; then ok "$name: $fn says $code"
  else bad "$name: $fn status $st"; show "$tmp/$name.log"; fi
done

# ---- npz: dimensions of 2^40, members that share their data ------------------------------------
"$PY" - "$in" <<'EOF'
import struct, sys, zipfile, zlib
def npy(shape, data=b""):
    h = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ", ".join(str(s) for s in shape)).encode()
    h += b" " * (63 - len(h) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data
with zipfile.ZipFile("%s/huge.npz" % sys.argv[1], "w") as z:
    z.writestr("W_enc.npy", npy([1 << 40, 1 << 40]))
# one member of 1 MB, listed 20,000 times in the central directory (every entry the same data)
payload = npy([1 << 18], b"\0" * (1 << 20))
local = struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, 0, 0, 0, zlib.crc32(payload), len(payload), len(payload), 5, 0) + b"a.npy"
cd = b""
for i in range(20000):
    name = b"m%05d.npy" % i
    cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, 0, 0, 0, zlib.crc32(payload), len(payload),
                      len(payload), len(name), 0, 0, 0, 0, 0, 0) + name
body = local + payload
eocd = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 20000 & 0xFFFF, 20000 & 0xFFFF, len(cd), len(body), 0)
open("%s/shared.npz" % sys.argv[1], "wb").write(body + cd + eocd)
EOF
confined npz_huge "core.load_transcoders('$in/huge.npz')"
attack "npz member with a shape of 2^40 x 2^40" $st "$tmp/npz_huge.log"
says npz_huge "npy: shape overflows"
confined npz_shared "core.load_transcoders('$in/shared.npz')"
attack "npz whose 20,000 members share one 1 MB payload" $st "$tmp/npz_shared.log"
says npz_shared "more than the"

# ---- YAML and index files built for quadratic loops --------------------------------------------
"$PY" - "$in" <<'EOF'
import json, os, sys
d = sys.argv[1]
os.makedirs(d + "/yaml_keys", exist_ok=True)
with open(d + "/yaml_keys/config.yaml", "w") as f:
    for i in range(400000): f.write("k%d: %d\n" % (i, i))
    f.write("k7: again\n")
os.makedirs(d + "/yaml_list", exist_ok=True)
with open(d + "/yaml_list/config.yaml", "w") as f:
    f.write("model_kind: transcoder_set\ntranscoders: [" + ", ".join("f%d" % i for i in range(1000000)) + "]\n")
os.makedirs(d + "/shards", exist_ok=True)
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "vocab_size": 16}, open(d + "/shards/config.json", "w"))
json.dump({"weight_map": {"t%d" % i: "shard-%d.safetensors" % i for i in range(300000)}},
          open(d + "/shards/model.safetensors.index.json", "w"))
json.dump({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []},
           "added_tokens": [{"id": 2, "content": "<x>"}, {"id": 2, "content": "<y>"}]}, open(d + "/dup_added.json", "w"))
EOF
confined yaml_keys "core.load_transcoders('$in/yaml_keys/config.yaml')"
attack "config.yaml of 400,000 keys with one repeated" $st "$tmp/yaml_keys.log"
says yaml_keys "duplicate key 'k7' (first on line 8)"
confined yaml_list "core.load_transcoders('$in/yaml_list/config.yaml')"
attack "config.yaml with a flow list of 1,000,000 entries" $st "$tmp/yaml_list.log"
says yaml_list "1000000 layers; expected 1..4096"
confined shards "core.load_model('$in/shards')"
attack "model index mapping 300,000 tensors to 300,000 shards" $st "$tmp/shards.log"
says shards "shard-0.safetensors"
confined dup_added "core.load_tokenizer('$in/dup_added.json')"
attack "tokenizer.json with two added tokens of one id" $st "$tmp/dup_added.log"
says dup_added "expected distinct ids"

# ---- control characters from a file never reach the terminal -----------------------------------
printf '\x1b[2J\x1b]0;pwned\x07' > "$tmp/esc"
"$PY" - "$in/esc.safetensors" <<'EOF'
import json, struct, sys
h = json.dumps({"\x1b[2Jevil\x07": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0")
EOF
confined esc "core.load_graph('$in/esc.safetensors')"
attack "safetensors whose tensor name holds terminal escapes" $st "$tmp/esc.log"
if grep -q $'\x1b' "$tmp/esc.log"; then bad "an escape byte from the file reached the output"; else ok "the message quotes the name sanitized"; fi

no_secret "every case" "$tmp"/*.log
canaries_intact
finish
