#!/usr/bin/env bash
# test_sandbox.sh - ctrace run's sandbox: each forbidden operation raises a clear error; a script
# cannot write outside results/ (from Lua or through the engine) nor read outside the folder,
# project, model directories and caches; --unsafe lifts it; a timeout and a Ctrl-C during an
# attribution end the run promptly with no half-written result.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }

# refuses name code expected-message: the run fails and says why
refuses() {
  mkdir -p "$tmp/$1"
  printf '%s\n' "$2" > "$tmp/$1/experiment.lua"
  if out=$("$CTRACE" run "$tmp/$1" 2>&1); then bad "$1: ran"; echo "$out" | sed 's/^/#   /'; return; fi
  if echo "$out" | grep -qF "$3"; then ok "$1: $3"; else bad "$1: no '$3'"; echo "$out" | sed 's/^/#   /'; fi
}

refuses execute 'os.execute("true")' "os.execute is not available"
refuses popen 'io.popen("ls")' "io.popen is not available"
refuses ffi 'require "ffi"' "require 'ffi': experiments may require ctrace"
refuses core 'require "ctrace.core"' "require 'ctrace.core'"
refuses debug 'print(debug.traceback())' "undefined global 'debug'"
refuses sandbox_module 'require("ctrace.sandbox").confine("/nonexistent")' "require 'ctrace.sandbox'"
refuses casestudy_module 'require("ctrace.casestudy").run(".", {unsafe = true})' "require 'ctrace.casestudy'"
refuses package 'package.loadlib("x", "y")' "undefined global 'package'"
refuses global_write 'x = 1' "assignment to undefined global 'x'"
refuses global_read 'print(y)' "undefined global 'y'"
refuses write_outside "local f = io.open('$tmp/outside.txt', 'w')" "may write only under"
refuses write_dotdot "local f = io.open(arg[0]:match('^(.*)/') .. '/results/../x.txt', 'w')" "may write only under"
refuses rename_outside "os.rename(arg[0], '$tmp/moved.lua')" "may write only under"
refuses read_outside "local f = io.open('/etc/passwd')" "may read only"
refuses engine_write 'local ct = require "ctrace"
local m = ct.load_model("stories260K")
local g = ct.replacement_model(m, ct.load_transcoders("stories260K")):attribute("Once upon", {verbose = false})
g:save("'"$tmp"'/outside.safetensors")' "may write only under"
refuses engine_mkdir 'require("ctrace").mkdirs("'"$tmp"'/elsewhere")' "may write only under"
test ! -e "$tmp/outside.txt" -a ! -e "$tmp/outside.safetensors" -a ! -e "$tmp/elsewhere" -a ! -e "$tmp/x.txt" &&
  ok "nothing was written outside results/" || bad "something was written outside results/"

# files a transcoder config.yaml lists are read through the same checks: an absolute path outside,
# and a link inside the folder that points outside, are refused
cp experiments/stories260K-transcoders/transcoders/layer_0.safetensors "$tmp/secret.safetensors"
for how in absolute link; do
  mkdir -p "$tmp/tc_$how/set"
  if [ $how = absolute ]; then entry=$tmp/secret.safetensors; else ln -s "$tmp/secret.safetensors" "$tmp/tc_$how/set/l0.safetensors"; entry=l0.safetensors; fi
  printf 'model_kind: transcoder_set\ntranscoders:\n  - %s\n' "$entry" > "$tmp/tc_$how/set/config.yaml"
  refuses "tc_$how" 'require("ctrace").load_transcoders(arg[0]:match("^(.*)/") .. "/set")' "may read only"
done

# the manifest lists every file the run read (the engine's reads and the script's own), each once,
# with its SHA-256, and nothing the run wrote itself
mkdir -p "$tmp/inputs"
printf 'Once upon a time\n' > "$tmp/inputs/prompts.txt"
cat > "$tmp/inputs/experiment.lua" <<'LUA'
local ct = require "ctrace"
local here = arg[0]:match("^(.*)/")
local f = assert(io.open(here .. "/prompts.txt"))
local prompt = f:read("*l")
f:close()
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local g = rm:attribute(prompt, {verbose = false})
g:save_json(here .. "/results/g.json", {slug = "g"})
assert(ct.load_graph(here .. "/results/g.json"))   -- reading back what the run wrote: no input
LUA
if "$CTRACE" run "$tmp/inputs" > "$tmp/inputs.out" 2>&1; then
  got=$(/usr/bin/python3 - "$tmp/inputs/results/manifest.json" "$PWD" <<'PY'
import hashlib, json, os, sys
m = json.load(open(sys.argv[1]))
paths = [i["path"] for i in m["inputs"]]
bad = [i["path"] for i in m["inputs"] if hashlib.sha256(open(i["path"], "rb").read()).hexdigest() != i["sha256"]]
root = sys.argv[2]
want = [os.path.realpath(p) for p in [os.path.dirname(sys.argv[1]) + "/../experiment.lua", os.path.dirname(sys.argv[1]) + "/../prompts.txt",
        root + "/../shared/models/stories260K/stories260K.bin", root + "/../shared/models/stories260K/tok512.bin",
        root + "/experiments/stories260K-transcoders/transcoders/config.yaml"] +
        [root + "/experiments/stories260K-transcoders/transcoders/layer_%d.safetensors" % l for l in range(5)]]
missing = [p for p in want if p not in paths]
extra = [p for p in paths if p not in want]
dup = len(paths) != len(set(paths))
print("ok" if not (bad or missing or extra or dup) else "bad hashes %s; missing %s; extra %s; duplicates %s" % (bad, missing, extra, dup))
PY
)
  [ "$got" = ok ] && ok "manifest: every file read, once, with its SHA-256, and nothing else" || bad "manifest inputs: $got"
else
  bad "inputs run failed"; sed 's/^/#   /' "$tmp/inputs.out"
fi

# --unsafe: no sandbox, but the manifest still lists every file read (the script's own reads
# included), and a second run lists the same files (nothing the first run wrote)
if "$CTRACE" run "$tmp/inputs" --unsafe > /dev/null 2>&1 && cp "$tmp/inputs/results/manifest.json" "$tmp/m1.json" &&
   "$CTRACE" run "$tmp/inputs" --unsafe > /dev/null 2>&1; then
  got=$(/usr/bin/python3 -c '
import json, sys
a, b = (json.load(open(p))["inputs"] for p in sys.argv[1:3])
paths = [i["path"] for i in b]
print("ok" if a == b and any(p.endswith("/prompts.txt") for p in paths) and len(paths) == 10 else "%d inputs: %s" % (len(paths), paths))
' "$tmp/m1.json" "$tmp/inputs/results/manifest.json")
  [ "$got" = ok ] && ok "--unsafe manifest: every file read, the same twice" || bad "--unsafe manifest: $got"
else
  bad "--unsafe inputs run failed"
fi

mkdir -p "$tmp/inside"
cat > "$tmp/inside/experiment.lua" <<'LUA'
local ct = require "ctrace"
local here = arg[0]:match("^(.*)/")
local f = assert(io.open(here .. "/results/note.txt", "w"))
f:write("inside\n")
f:close()
local study = require "ctrace.study"
assert(type(study.run) == "function")
LUA
"$CTRACE" run "$tmp/inside" 2>/dev/null && test -s "$tmp/inside/results/note.txt" && test -s "$tmp/inside/results/manifest.json" &&
  ok "writes under results/ and the manifest" || bad "writes under results/"

mkdir -p "$tmp/unsafe"
echo 'os.execute("touch '"$tmp"'/unsafe/touched")' > "$tmp/unsafe/experiment.lua"
"$CTRACE" run "$tmp/unsafe" --unsafe 2>/dev/null && test -e "$tmp/unsafe/touched" && ok "--unsafe lifts the sandbox" ||
  bad "--unsafe"

# a long attribution: stories260K's whole context with 7,500 feature rows (about 15 s here)
long() {
  mkdir -p "$tmp/$1"
  cat > "$tmp/$1/experiment.lua" <<'LUA'
local ct = require "ctrace"
local here = arg[0]:match("^(.*)/")
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local ids = m:tokenize(m:generate("", {max_tokens = 600, temperature = 1, seed = 7, stop_at_eos = false}))
while #ids > 512 do ids[#ids] = nil end
local g = rm:attribute(ids, {max_feature_nodes = 7500, batch_size = 256, verbose = false})
g:save_json(here .. "/results/graph.json", {slug = "long"})
LUA
}
long timeout
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
out=$("$CTRACE" run "$tmp/timeout" --timeout 2 2>&1); st=$?
secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
if [ $st -ne 0 ] && echo "$out" | grep -q "CANCELLED" && awk "BEGIN { exit !($secs < 8) }"; then
  ok "--timeout 2 stops the attribution (${secs} s): $(echo "$out" | grep -m1 -o 'CANCELLED[^.]*')"
else
  bad "--timeout: status $st after ${secs} s"; echo "$out" | sed 's/^/#   /'
fi
ls "$tmp/timeout/results" | grep -qv '^manifest.json$' && bad "timeout left files: $(ls "$tmp/timeout/results")" ||
  ok "no result files after the timeout"

long sigint
"$CTRACE" run "$tmp/sigint" > "$tmp/sigint.out" 2>&1 &
pid=$!
sleep 2
t0=$(ms)
kill -INT $pid
wait $pid; st=$?
secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
if [ $st -ne 0 ] && grep -q "CANCELLED" "$tmp/sigint.out" && awk "BEGIN { exit !($secs < 5) }"; then
  ok "Ctrl-C during the attribution stops it in ${secs} s"
else
  bad "Ctrl-C: status $st after ${secs} s"; sed 's/^/#   /' "$tmp/sigint.out"
fi
ls "$tmp/sigint/results" | grep -q . && bad "Ctrl-C left files: $(ls "$tmp/sigint/results")" || ok "no result files after Ctrl-C"

echo "1..$n"
exit $fail
