#!/usr/bin/env bash
# test_run.sh - attacks on `ctrace run` and `ctrace check`: a case-study folder from a stranger.
# Each case asserts with canaries (files outside that must not appear or change), a secret (in a
# file outside, in the environment as HF_TOKEN and NEURONPEDIA_API_KEY, and as the Hugging Face
# token file) that must appear in no output, servers that must receive nothing, exit statuses, and
# a results/ that must be exactly as it was after a failed run.
cd "$(dirname "$0")/../.."
. tests/attacks/lib.sh
ROOT=$PWD

outside=$tmp/outside
mkdir -p "$outside" "$tmp/home/.cache/huggingface/hub"
echo "canary" > "$outside/canary.txt"
secret_file "$outside/secret.txt"
secret_file "$tmp/home/.cache/huggingface/token"
canary "$outside/canary.txt"
canary "$outside/new.txt"
canary "$outside/secret.txt"
canary "$tmp/home/.cache/huggingface/token"
canary "$ROOT/lua/ctrace/init.lua"
export HOME=$tmp/home HF_TOKEN=$SECRET NEURONPEDIA_API_KEY=$SECRET
unset XDG_CACHE_HOME HF_HOME HF_HUB_CACHE CTRACE_CACHE

# exp NAME CODE: a folder $tmp/NAME whose experiment.lua is CODE
exp() { rm -rf "${tmp:?}/$1"; mkdir -p "$tmp/$1"; printf '%s\n' "$2" > "$tmp/$1/experiment.lua"; }
# runs NAME [ARGS...]: ctrace run; output in $tmp/NAME.out, status in $st
runs() { "$CTRACE" run "$tmp/$1" "${@:2}" > "$tmp/$1.out" 2>&1; st=$?; }
# tree DIR: a digest of every path, type and content under DIR (links not followed)
tree() { (cd "$1" 2>/dev/null && find . -printf '%p %y %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) | sha256sum; }
# refused NAME CODE EXPECTED: the run fails saying EXPECTED; canaries hold; the secret appears nowhere
refused() {
  exp "$1" "$2"
  runs "$1" "${@:4}"
  if [ $st -eq 0 ]; then bad "$1: ran (exit 0)"; show "$tmp/$1.out"
  elif ! grep -qF -- "$3" "$tmp/$1.out"; then bad "$1: no '$3' (exit $st)"; show "$tmp/$1.out"
  elif ! canaries_hold; then bad "$1: a canary changed"; show "$tmp/$1.out"
  elif grep -qF "$SECRET" "$tmp/$1.out"; then bad "$1: the secret appears in the output"
  else ok "$1: refused ($3)"; fi
}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# running PID: the process exists and is no zombie
running() { [ -n "$1" ] && [ -e /proc/$1 ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status 2>/dev/null; }

# ---- command execution ------------------------------------------------------------------------
refused execute "os.execute('touch $outside/new.txt')" "os.execute is not available"
refused popen "io.popen('cat $outside/secret.txt')" "io.popen is not available"
refused ffi 'local ffi = require "ffi"; ffi.cdef("int system(const char *)"); ffi.C.system("touch '"$outside"'/new.txt")' "require 'ffi'"
refused bytecode_dump 'local f = string.dump(function() return 1 end)' "string.dump is not available"
refused bytecode_load 'local f, e = loadstring("\27LJ\2\0\0\0\0\0\0"); assert(f, e); f()' "precompiled (binary) chunks"
refused bytecode_reader 'local parts = {"\27LJ", "\2\0\0"}; local i = 0
assert(load(function() i = i + 1; return parts[i] end))()' "precompiled (binary) chunks"
refused string_metatable 'getmetatable("").__index.format = function() return "x" end' "attempt to index a boolean"
refused stdlib_write 'string.format = function() return "x" end' "the standard library is read-only"
refused stdlib_rawset 'rawset(string, "format", function() return "x" end)' "the standard library is read-only"
refused os_table_write 'os.execute = function() end' "the standard library is read-only"
refused io_table_write 'io.open = function() end' "the standard library is read-only"
refused debug 'debug.sethook(function() end, "c")' "undefined global 'debug'"
refused package 'package.loadlib("libc.so.6", "system")' "undefined global 'package'"
refused jit 'jit.off()' "undefined global 'jit'"
refused setfenv 'setfenv(1, {})' "undefined global 'setfenv'"
refused dofile "dofile('$outside/secret.txt')" "undefined global 'dofile'"
refused require_init 'require "ctrace.init"' "require 'ctrace.init'"
refused require_casestudy 'require("ctrace.casestudy").run(".", {unsafe = true})' "require 'ctrace.casestudy'"
refused require_cli 'require("ctrace.cli").main("run", {".", "--unsafe"})' "require 'ctrace.cli'"
refused global_write 'x = 1' "assignment to undefined global 'x'"
refused os_exit 'os.exit(0)' "os.exit is not available"
refused serve 'require("ctrace.core").serve(".", 0)' "serve"

# a folder that ships its own ctrace modules, run from inside the folder: they are not loaded
exp shipped 'local ct = require "ctrace"; local s = require "ctrace.study"; print(s.SHIPPED and "SHIPPED" or "from the project")'
mkdir -p "$tmp/shipped/ctrace" "$tmp/shipped/lua/ctrace"
for f in "$tmp/shipped/ctrace/study.lua" "$tmp/shipped/lua/ctrace/study.lua" "$tmp/shipped/ctrace/init.lua"; do
  echo "os.execute('touch $outside/new.txt'); return {SHIPPED = true}" > "$f"
done
(cd "$tmp/shipped" && "$CTRACE" run . > "$tmp/shipped.out" 2>&1)
grep -q "from the project" "$tmp/shipped.out" && ! grep -q SHIPPED "$tmp/shipped.out" && canaries_hold &&
  ok "a folder's own ctrace/*.lua is never loaded (run from inside it)" || { bad "shipped modules"; show "$tmp/shipped.out"; }

# ---- reads outside the roots ------------------------------------------------------------------
refused read_passwd 'print(io.open("/etc/passwd"):read("*a"))' "reading /etc/passwd"
refused read_secret "print(io.open('$outside/secret.txt'):read('*a'))" "secret.txt"
refused read_lines "for l in io.lines('$outside/secret.txt') do print(l) end" "secret.txt"
refused read_token "print(io.open('$HOME/.cache/huggingface/token'):read('*a'))" "token"
refused read_environ 'print(io.open("/proc/self/environ"):read("*a"))' "environ"
refused read_parent_environ "print(io.open('/proc/$$/environ'):read('*a'))" "environ"
refused sha256_outside "print(require('ctrace').sha256('$outside/secret.txt'))" "secret.txt"
refused list_dir_outside "print(#require('ctrace').list_dir('$outside'))" "outside"
refused model_secret "require('ctrace').load_model('$outside/secret.txt')" "secret.txt"
refused graph_secret "require('ctrace').load_graph('$outside/secret.txt')" "secret.txt"
refused tokenizer_secret "require('ctrace').load_tokenizer('$outside/secret.txt')" "secret.txt"
exp link_secret "print(io.open(arg[0]:match('^(.*)/') .. '/link.txt'):read('*a'))"
ln -s "$outside/secret.txt" "$tmp/link_secret/link.txt"
runs link_secret
attack "a link in the folder to a secret outside" $st "$tmp/link_secret.out"
no_secret "link to a secret" "$tmp/link_secret.out"
exp getenv 'print("token:", os.getenv("HF_TOKEN"), os.getenv("NEURONPEDIA_API_KEY"), os.getenv("HF_TOKEN_PATH"))'
runs getenv
[ $st -eq 0 ] && grep -q "token:	nil	nil" "$tmp/getenv.out" && ok "os.getenv sees no token or key" ||
  { bad "getenv (exit $st)"; show "$tmp/getenv.out"; }
no_secret "getenv" "$tmp/getenv.out"
# a short path whose resolution is longer than PATH_MAX (links into deep directories) to a secret
exp long_path "print(io.open(arg[0]:match('^(.*)/') .. '/short/next/s'):read('*a'))"
seg=$(printf 'd%.0s' $(seq 100)); rel=$(for i in $(seq 22); do printf '%s/' $seg; done)
(cd "$tmp/long_path" && mkdir -p "$rel" && ln -s "$rel" short && cd "$rel" && mkdir -p "$rel" && ln -s "$rel" next &&
 cd "$rel" && ln -s "$outside/secret.txt" s)
runs long_path
attack "a path resolving past PATH_MAX to a secret" $st "$tmp/long_path.out"
no_secret "long path" "$tmp/long_path.out"
# transcoder config.yaml entries: absolute, ../ and a link, each to a file outside
cp experiments/stories260K-transcoders/transcoders/layer_0.safetensors "$outside/l0.safetensors"
canary "$outside/l0.safetensors"
for how in absolute dotdot link; do
  exp "tc_$how" 'require("ctrace").load_transcoders(arg[0]:match("^(.*)/") .. "/set")'
  mkdir -p "$tmp/tc_$how/set"
  case $how in
    absolute) entry=$outside/l0.safetensors ;;
    dotdot) entry=../../outside/l0.safetensors ;;
    link) ln -s "$outside/l0.safetensors" "$tmp/tc_$how/set/l0.safetensors"; entry=l0.safetensors ;;
  esac
  printf 'model_kind: transcoder_set\ntranscoders:\n  - %s\n' "$entry" > "$tmp/tc_$how/set/config.yaml"
  runs "tc_$how"
  attack "transcoder config.yaml entry outside the roots ($how)" $st "$tmp/tc_$how.out"
done

# ---- writes outside results/ ------------------------------------------------------------------
refused write_outside "io.open('$outside/new.txt', 'w'):write('x')" "may write only under"
refused append_outside "io.open('$outside/canary.txt', 'a'):write('x')" "may write only under"
refused write_dotdot "io.open(require('ctrace').results_dir(arg[0]) .. '/../../outside/new.txt', 'w')" "may write only under"
refused write_results_link "local f = io.open(arg[0]:match('^(.*)/') .. '/results/../../outside/new.txt', 'w')" "may write only under"
refused rename_outside "os.rename(arg[0], '$outside/new.txt')" "may write only under"
refused remove_outside "os.remove('$outside/canary.txt')" "may write only under"
refused engine_write 'local ct = require "ctrace"
local m = ct.load_model("stories260K")
local g = ct.replacement_model(m, ct.load_transcoders("stories260K")):attribute("Once upon", {verbose = false, max_feature_nodes = 20})
g:save("'"$outside"'/new.txt")' "may write only under"
refused engine_mkdir "require('ctrace').mkdirs('$outside/new.txt/d')" "may write only under"
refused write_file_outside "require('ctrace').write_file('$outside/canary.txt', 'x')" "may write only under"
refused safetensors_outside "local ct = require('ctrace'); ct.save_safetensors('$outside/new.txt', {a = ct.zeros(2)})" "may write only under"
refused planted_outside "require('ctrace.planted').two_hop{dir = '$outside/new.txt'}" "may write only under"
refused np_cache_dir "require('ctrace').neuronpedia.configure{cache_dir = '$outside/new.txt', cache_max = 1}" "cannot change during ctrace run"

# results/ shipped as a link to a directory outside, and holding a link to a file outside: a run
# replaces results/ and never writes through either link
mkdir -p "$outside/resdir"
echo keep > "$outside/resdir/keep.txt"
canary "$outside/resdir/keep.txt"
canary "$outside/resdir/out.txt"
exp results_link 'local out = require("ctrace").results_dir(arg[0]); local f = assert(io.open(out .. "/out.txt", "w")); f:write("new\n"); f:close()'
ln -s "$outside/resdir" "$tmp/results_link/results"
runs results_link
[ $st -eq 0 ] && canaries_hold && [ -d "$tmp/results_link/results" ] && [ ! -L "$tmp/results_link/results" ] &&
  [ "$(cat "$tmp/results_link/results/out.txt")" = new ] && ok "results/ shipped as a link: replaced, nothing written through it" ||
  { bad "results/ as a link (exit $st)"; show "$tmp/results_link.out"; }
exp results_inner_link 'local out = require("ctrace").results_dir(arg[0]); local f = assert(io.open(out .. "/keep.txt", "w")); f:write("new\n"); f:close()'
mkdir -p "$tmp/results_inner_link/results"
ln -s "$outside/resdir/keep.txt" "$tmp/results_inner_link/results/keep.txt"
runs results_inner_link
[ $st -eq 0 ] && canaries_hold && [ ! -L "$tmp/results_inner_link/results/keep.txt" ] &&
  ok "a link inside a shipped results/: replaced, not written through" || { bad "inner link (exit $st)"; show "$tmp/results_inner_link.out"; }
# an unsafe run that leaves a link in its results fails: results hold only regular files
exp unsafe_link "os.execute('ln -s $outside/secret.txt ' .. require('ctrace').results_dir(arg[0]) .. '/s.txt')"
runs unsafe_link --unsafe
[ $st -ne 0 ] && grep -q "only regular files" "$tmp/unsafe_link.out" && [ ! -e "$tmp/unsafe_link/results" ] &&
  ok "a link in the results fails the run, even --unsafe" || { bad "link in results (exit $st)"; show "$tmp/unsafe_link.out"; }

# ---- the network: no connection, no secret, no endpoint of the script's choosing --------------
python3 - "$tmp/evil.log" > "$tmp/evil.port" 2>/dev/null <<'PY' &
import socket, sys, threading
log = open(sys.argv[1], "ab", buffering=0)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    c.settimeout(5)
    try:
        log.write(c.recv(65536)); c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except Exception: pass
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
evil=$!
cleanups+=("kill $evil 2>/dev/null")
for _ in $(seq 50); do [ -s "$tmp/evil.port" ] && break; sleep 0.1; done
eport=$(cat "$tmp/evil.port")
touch "$tmp/evil.log"
refused hub_url "require('ctrace').hub.configure{url = 'http://127.0.0.1:$eport'}" "cannot change during ctrace run"
refused np_url "require('ctrace').neuronpedia.configure{url = 'http://127.0.0.1:$eport'}" "cannot change during ctrace run"
refused net_configure "require('ctrace.core').net_configure('hub', {url = 'http://127.0.0.1:$eport'})" "cannot change during ctrace run"
refused socket_direct "require('ctrace').load_model('http://127.0.0.1:$eport/x')" "reading http://"
refused broker_call "print(require('ctrace.core').broker('{\"call\":\"write_file\",\"args\":[{\"v\":\"$outside/new.txt\"},{\"v\":\"x\"}]}'))
error('the parent answered')" "the parent answered"
refused broker_traversal "print(require('ctrace.core').hub_file('hf://org/repo/../../../outside/new.txt'))" "without '..'"
[ ! -s "$tmp/evil.log" ] && ok "a server the script chose received nothing" || { bad "the evil server got: $(head -c 200 "$tmp/evil.log")"; }
# the parent makes the script's Neuronpedia requests with its own settings; the key goes only to
# the configured server and never reaches the script
mkdir -p "$tmp/npfiles"
python3 tests/net/server.py ../shared/reference/fixtures/neuronpedia "$tmp/npfiles" > "$tmp/np.port" 2> "$tmp/np.log" &
npserver=$!
cleanups+=("kill $npserver 2>/dev/null")
for _ in $(seq 50); do [ -s "$tmp/np.port" ] && break; sleep 0.1; done
nport=$(awk '{print $2}' "$tmp/np.port")
exp np_broker 'local f = assert(require("ctrace").neuronpedia.feature("synthetic", "3-clt", 17)); print("label:", f.label, f.index)
print(require("ctrace").neuronpedia.settings().url)'
CTRACE_NEURONPEDIA_URL=http://127.0.0.1:$nport/np XDG_CACHE_HOME=$tmp/npcache "$CTRACE" run "$tmp/np_broker" > "$tmp/np_broker.out" 2>&1; st=$?
keys=$(curl -s "http://127.0.0.1:$nport/stats" | python3 -c 'import json,sys; print(sum(v for k, v in json.load(sys.stdin).items() if k.endswith("x-api-key")))')
[ $st -eq 0 ] && grep -q "label:" "$tmp/np_broker.out" && [ "$keys" = 0 ] &&
  ok "labels through the parent: the configured server answers, without the key (no --credentials)" ||
  { bad "np broker (exit $st, keys $keys)"; show "$tmp/np_broker.out"; }
no_secret "np broker" "$tmp/np_broker.out"

# ---- deadlines --------------------------------------------------------------------------------
# timed NAME CODE ARGS...: the run's exit status ($st) and wall time in seconds ($secs)
timed() { exp "$1" "$2"; local t0; t0=$(ms); runs "$1" "${@:3}"; secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }"); }
within() { awk "BEGIN { exit !($secs < $1) }"; }
timed jit_loop 'while true do end' --timeout 2
[ $st -eq 124 ] && within 4 && grep -q TIMEOUT "$tmp/jit_loop.out" && ok "--timeout 2 stops a compiled loop in $secs s (exit 124)" ||
  { bad "jit loop: exit $st after $secs s"; show "$tmp/jit_loop.out"; }
timed pcall_loop 'while true do pcall(function() while true do end end) end' --timeout 2
[ $st -eq 124 ] && within 4 && ok "a pcall cannot swallow the deadline ($secs s)" || { bad "pcall loop: exit $st after $secs s"; }
LONG='local ct = require "ctrace"
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local ids = m:tokenize(m:generate("", {max_tokens = 600, temperature = 1, seed = 7, stop_at_eos = false}))
while #ids > 512 do ids[#ids] = nil end
for _ = 1, 100 do
  print(pcall(rm.attribute, rm, ids, {max_feature_nodes = 7500, batch_size = 256, verbose = false}))
end'
timed pcall_attribution "$LONG" --timeout 2
[ $st -eq 124 ] && within 3 && ok "--timeout 2 stops a pcall-wrapped attribution in $secs s" || { bad "attribution: exit $st after $secs s"; show "$tmp/pcall_attribution.out"; }
for what in load_model load_graph load_tokenizer io_open io_lines; do
  case $what in io_open) code="io.open(arg[0]:match('^(.*)/') .. '/f'):read('*a')" ;;
                io_lines) code="for l in io.lines(arg[0]:match('^(.*)/') .. '/f') do end" ;;
                *) code="require('ctrace').$what(arg[0]:match('^(.*)/') .. '/f')" ;; esac
  exp "fifo_$what" "$code"
  mkfifo "$tmp/fifo_$what/f"
  t0=$(ms); runs "fifo_$what" --timeout 10; secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
  [ $st -ne 0 ] && [ $st -ne 124 ] && within 5 && ok "a FIFO given to $what is refused without blocking ($secs s)" ||
    { bad "FIFO $what: exit $st after $secs s"; show "$tmp/fifo_$what.out"; }
done
# Ctrl-C (SIGINT to ctrace run) and SIGTERM: the run stops within a second, the child with it
for sig in INT TERM; do
  exp "sig$sig" "$LONG"
  "$CTRACE" run "$tmp/sig$sig" > "$tmp/sig$sig.out" 2>&1 &
  pid=$!
  sleep 2
  child=$(pgrep -P $pid)
  t0=$(ms); kill -$sig $pid; wait $pid; st=$?; secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
  want=$([ $sig = INT ] && echo 130 || echo 143)
  sleep 0.2
  [ $st -eq $want ] && within 1 && [ -n "$child" ] && ! running $child && [ ! -e "$tmp/sig$sig/results" ] &&
    ok "SIG$sig stops the run in $secs s (exit $st), the experiment process with it, no results" ||
    { bad "SIG$sig: exit $st after $secs s (child $child)"; show "$tmp/sig$sig.out"; }
done

# every thread of the experiment process runs under the seccomp filter, with no_new_privs
exp threads "$LONG"
"$CTRACE" run "$tmp/threads" > "$tmp/threads.out" 2>&1 &
pid=$!
# the experiment process starts its BLAS threads when its first product runs (later on a loaded
# machine): wait for them, up to 30 s
for _ in $(seq 150); do
  sleep 0.2
  child=$(pgrep -P $pid)
  tasks=$(ls /proc/$child/task 2>/dev/null | wc -l)
  [ "$tasks" -ge 2 ] && break
done
# (a thread that ends between the listing and the reading of its status is not counted)
unconfined=$(for t in /proc/$child/task/*; do
  st=$(cat $t/status 2> /dev/null) || continue
  echo "$st" | grep -q "^Seccomp:[[:space:]]*2" && echo "$st" | grep -q "^NoNewPrivs:[[:space:]]*1" || echo $t
done)
capeff=$(awk '/^CapEff/ {print $2}' /proc/$child/status)
kill -INT $pid; wait $pid
[ "$tasks" -ge 2 ] && [ -z "$unconfined" ] && [ "$capeff" = 0000000000000000 ] &&
  ok "all $tasks threads of the experiment process are filtered, no_new_privs, no capabilities" ||
  { bad "threads: $tasks tasks, unconfined: $unconfined, CapEff $capeff"; }

# memory: --memory caps what the run may allocate (not under AddressSanitizer: its shadow memory
# alone is past any such limit, so ctrace built with it sets none)
case $CTRACE in
  */asan/*) echo "# --memory case skipped: AddressSanitizer build" ;;
  *)
timed memory 'local t = {} for i = 1, 1e6 do t[i] = string.rep("x", 1e6) .. i end' --memory 0.5 --timeout 60
[ $st -eq 1 ] && grep -q "not enough memory" "$tmp/memory.out" && ok "--memory 0.5 stops an allocation bomb ($secs s)" ||
  { bad "memory: exit $st after $secs s"; show "$tmp/memory.out"; } ;;
esac

# ---- results as a transaction -----------------------------------------------------------------
# a folder with results from a good run; every failed rerun must leave them exactly as they were
GOOD='local ct = require "ctrace"
local out = ct.results_dir(arg[0])
ct.write_json(out .. "/a.json", {run = "good"})
local f = assert(io.open(out .. "/b.txt", "w")); f:write("good\n"); f:close()'
exp txn "$GOOD"
mkdir -p "$tmp/txn/expected"
echo '{"run": "good"}' > "$tmp/txn/expected/a.json"
runs txn
[ $st -eq 0 ] && ok "a good run commits results/" || { bad "good run (exit $st)"; show "$tmp/txn.out"; }
before=$(tree "$tmp/txn/results")
"$CTRACE" check "$tmp/txn" --no-run > "$tmp/check0.out" 2>&1
# rerun_fails NAME CODE [ARGS]: a rerun with CODE fails and results/ is unchanged
rerun_fails() {
  printf '%s\n' "$2" > "$tmp/txn/experiment.lua"
  "$CTRACE" run "$tmp/txn" "${@:3}" > "$tmp/txn.out" 2>&1; st=$?
  printf '%s\n' "$GOOD" > "$tmp/txn/experiment.lua"
  if [ $st -ne 0 ] && [ "$(tree "$tmp/txn/results")" = "$before" ] && grep -q "left as they were" "$tmp/txn.out" &&
     ! ls -a "$tmp/txn" | grep -q ctrace-staging; then ok "$1: results/ untouched (exit $st)"
  else bad "$1: exit $st, results/ changed or staging left"; show "$tmp/txn.out"; fi
}
HALF='local ct = require "ctrace"
local out = ct.results_dir(arg[0])
ct.write_json(out .. "/a.json", {run = "half"})'
rerun_fails "an error after some writes" "$HALF
error('boom')"
rerun_fails "a timeout after some writes" "$HALF
while true do end" --timeout 1
rerun_fails "a swallowed write error" "$HALF
local f = assert(io.open(out .. '/c.txt', 'w')); pcall(f.write, f, setmetatable({}, {__tostring = function() return 'x' end}))
f:close()
pcall(function() io.open(out .. '/../../outside.txt', 'w') end)
error('still failing')"
rerun_fails "os.exit(0) in an unsafe run (no report)" "$HALF
os.exit(0)" --unsafe
rerun_fails "a crash (SIGSEGV) of the experiment process" "$HALF
os.execute('kill -SEGV ' .. io.open('/proc/self/stat'):read('*l'):match('^(%d+)'))
while true do end" --unsafe

# kill -9 of ctrace run itself mid-rerun: the experiment process dies with it, results/ is the old
# run, check --no-run passes on it, and the next run clears the staging left behind
printf '%s\n' "$HALF
$LONG" > "$tmp/txn/experiment.lua"
"$CTRACE" run "$tmp/txn" > "$tmp/kill.out" 2>&1 &
pid=$!
sleep 2
child=$(pgrep -P $pid)
kill -9 $pid; wait $pid 2>/dev/null
sleep 0.5
[ -n "$child" ] && ! running $child && [ "$(tree "$tmp/txn/results")" = "$before" ] &&
  ok "kill -9 of ctrace run: its experiment process dies too, results/ untouched" || { bad "kill -9 (child $child)"; }
printf '%s\n' "$GOOD" > "$tmp/txn/experiment.lua"
"$CTRACE" check "$tmp/txn" --no-run > "$tmp/check1.out" 2>&1; st=$?
[ $st -eq 0 ] && grep -q "matches expected" "$tmp/check1.out" && ok "check --no-run after the kill: results/ is still one whole run" ||
  { bad "check --no-run after kill (exit $st)"; show "$tmp/check1.out"; }
runs txn
[ $st -eq 0 ] && ! ls -a "$tmp/txn" | grep -q ctrace-staging && ok "the next run clears what the killed one left" ||
  { bad "rerun after kill (exit $st)"; ls -a "$tmp/txn" | sed 's/^/#   /'; }
before=$(tree "$tmp/txn/results")
# kill -9 of the experiment process alone
printf '%s\n' "$HALF
$LONG" > "$tmp/txn/experiment.lua"
"$CTRACE" run "$tmp/txn" > "$tmp/kill2.out" 2>&1 &
pid=$!
sleep 2
kill -9 $(pgrep -P $pid); wait $pid; st=$?
printf '%s\n' "$GOOD" > "$tmp/txn/experiment.lua"
[ $st -eq 1 ] && grep -q "killed by signal 9" "$tmp/kill2.out" && [ "$(tree "$tmp/txn/results")" = "$before" ] &&
  ok "kill -9 of the experiment process: the run fails (exit 1), results/ untouched" || { bad "kill child: exit $st"; show "$tmp/kill2.out"; }

# two runs of one folder at once: the second fails at once, the first completes alone
printf '%s\n' "$HALF
local t0 = os.clock() while os.clock() - t0 < 3 do end" > "$tmp/txn/experiment.lua"
"$CTRACE" run "$tmp/txn" > "$tmp/first.out" 2>&1 &
pid=$!
sleep 1
t0=$(ms); "$CTRACE" run "$tmp/txn" > "$tmp/second.out" 2>&1; st=$?; secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
wait $pid; st1=$?
[ $st -eq 75 ] && within 1 && grep -q "another ctrace run is using" "$tmp/second.out" && [ $st1 -eq 0 ] &&
  grep -q '"half"' "$tmp/txn/results/a.json" && [ ! -e "$tmp/txn/results/b.txt" ] &&
  ok "a concurrent second run fails at once (exit 75, $secs s); the first commits whole" ||
  { bad "concurrent: second exit $st after $secs s, first $st1"; show "$tmp/second.out"; }
printf '%s\n' "$GOOD" > "$tmp/txn/experiment.lua"
runs txn

# check --no-run: results/ must be the whole run its manifest records, with unchanged inputs
cp -r "$tmp/txn" "$tmp/tamper"
echo '{"run": "forged"}' > "$tmp/tamper/results/a.json"
"$CTRACE" check "$tmp/tamper" --no-run > "$tmp/tamper.out" 2>&1; st=$?
[ $st -eq 1 ] && grep -q "a.json: changed since the run" "$tmp/tamper.out" && ok "check --no-run: a changed result fails" ||
  { bad "tampered (exit $st)"; show "$tmp/tamper.out"; }
rm -rf "$tmp/tamper"; cp -r "$tmp/txn" "$tmp/tamper"
echo x > "$tmp/tamper/results/planted.txt"
"$CTRACE" check "$tmp/tamper" --no-run > "$tmp/tamper.out" 2>&1; st=$?
[ $st -eq 1 ] && grep -q "planted.txt: not written by the run" "$tmp/tamper.out" && ok "check --no-run: a planted file fails" ||
  { bad "planted (exit $st)"; show "$tmp/tamper.out"; }
rm -rf "$tmp/tamper"; cp -r "$tmp/txn" "$tmp/tamper"
echo "-- edited" >> "$tmp/tamper/experiment.lua"
sed -i "s#$tmp/txn/#$tmp/tamper/#" "$tmp/tamper/results/manifest.json"
"$CTRACE" check "$tmp/tamper" --no-run > "$tmp/tamper.out" 2>&1; st=$?
[ $st -eq 1 ] && grep -q "input changed since the run" "$tmp/tamper.out" && ok "check --no-run: stale results (an edited input) fail" ||
  { bad "stale (exit $st)"; show "$tmp/tamper.out"; }
rm -rf "$tmp/tamper/results"
"$CTRACE" check "$tmp/tamper" --no-run > "$tmp/tamper.out" 2>&1; st=$?
[ $st -eq 1 ] && grep -q "no complete run" "$tmp/tamper.out" && ok "check --no-run: no results fails" || { bad "no results (exit $st)"; show "$tmp/tamper.out"; }

# a full disk (a 3 MB tmpfs): the failed run says so and leaves the previous results whole
if unshare -m true 2>/dev/null; then
  unshare -m bash -s "$CTRACE" "$tmp" > "$tmp/disk.tap" 2>&1 <<'SH'
CTRACE=$1 tmp=$2
disk=$tmp/disk; mkdir -p $disk && mount -t tmpfs -o size=3m tmpfs $disk || { echo "MOUNT FAILED"; exit 0; }
mkdir $disk/f
case_() {
  printf '%s\n' "$2" > $disk/f/experiment.lua
  $CTRACE run $disk/f > $disk/../disk_$1.out 2>&1; echo "$1 $?"
}
case_ good 'local ct = require "ctrace"; ct.write_json(ct.results_dir(arg[0]) .. "/a.json", {run = "good"})'
sum() { (cd $disk/f/results && cat $(ls)) | sha256sum; }
good=$(sum)
big='local ct = require "ctrace"; local out = ct.results_dir(arg[0]); ct.write_json(out .. "/a.json", {run = "new"})
local chunk = string.rep("x", 65536)'
case_ lua_write "$big
local f = assert(io.open(out .. '/big.bin', 'w')) for i = 1, 80 do pcall(f.write, f, chunk) end pcall(f.close, f)"
[ "$(sum)" = "$good" ] && echo "SAME lua_write" || echo "CHANGED lua_write"
case_ left_open "$big
local f = assert(io.open(out .. '/big.bin', 'w')) for i = 1, 80 do pcall(f.write, f, chunk) end"
[ "$(sum)" = "$good" ] && echo "SAME left_open" || echo "CHANGED left_open"
case_ write_file "$big
pcall(ct.write_file, out .. '/big.bin', string.rep(chunk, 80))"
[ "$(sum)" = "$good" ] && echo "SAME write_file" || echo "CHANGED write_file"
ls -a $disk/f | grep -c ctrace-staging | sed 's/^/STAGING /'
umount $disk
SH
  if grep -q "MOUNT FAILED" "$tmp/disk.tap"; then
    echo "# full-disk cases skipped: tmpfs cannot be mounted here"
  else
    grep -q "^good 0" "$tmp/disk.tap" && ok "full disk: a small run fits" || bad "full disk: the small run failed"
    for c in lua_write left_open write_file; do
      grep -q "^$c 1" "$tmp/disk.tap" && grep -q "SAME $c" "$tmp/disk.tap" &&
        ok "full disk ($c, errors swallowed by pcall): the run fails, previous results whole" ||
        { bad "full disk $c"; show "$tmp/disk.tap" "$tmp/disk_$c.out"; }
    done
    grep -q "STAGING 0" "$tmp/disk.tap" && ok "full disk: no staging left behind" || bad "full disk: staging left"
  fi
else
  echo "# full-disk cases skipped: no mount namespace here"
fi

# ---- no kernel sandbox: refused unless --unsafe, and the manifest says what was in force ------
if cc -O1 -o "$tmp/nolandlock" tests/attacks/nolandlock.c -lseccomp 2>"$tmp/cc.out"; then
  exp nosandbox "$GOOD"
  "$tmp/nolandlock" "$CTRACE" run "$tmp/nosandbox" > "$tmp/nosandbox.out" 2>&1; st=$?
  [ $st -eq 77 ] && grep -q "cannot confine" "$tmp/nosandbox.out" && [ ! -e "$tmp/nosandbox/results" ] &&
    ok "without Landlock, ctrace run refuses (exit 77) and says why" || { bad "no Landlock: exit $st"; show "$tmp/nosandbox.out"; }
  "$tmp/nolandlock" "$CTRACE" run "$tmp/nosandbox" --unsafe > "$tmp/nosandbox.out" 2>&1; st=$?
  [ $st -eq 0 ] && grep -q '"isolation":.*"none (--unsafe)"' <(tr -d '\n\t' < "$tmp/nosandbox/results/manifest.json") &&
    ok "--unsafe runs it, and the manifest records no isolation" || { bad "--unsafe without Landlock: exit $st"; show "$tmp/nosandbox.out"; }
else
  bad "nolandlock.c does not build"; show "$tmp/cc.out"
fi
grep -q '"landlock_abi"' "$tmp/txn/results/manifest.json" && ok "a sandboxed run's manifest records the isolation" ||
  bad "no isolation in the manifest"

# ---- what a sandboxed run may still do ---------------------------------------------------------
mkdir -p "$tmp/inputs"
printf 'Once upon a time\n' > "$tmp/inputs/prompts.txt"
cat > "$tmp/inputs/experiment.lua" <<'LUA'
local ct = require "ctrace"
local here = arg[0]:match("^(.*)/")
local f = assert(io.open(here .. "/prompts.txt"))
local prompt = f:read("*l")
f:close()
local out = ct.results_dir(arg[0])
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local g = rm:attribute(prompt, {verbose = false})
g:save_json(out .. "/g.json", {slug = "g"})
assert(ct.load_graph(out .. "/g.json"))   -- reading back what the run wrote: no input
local study = require "ctrace.study"
assert(type(study.run) == "function")
LUA
for mode in sandboxed unsafe; do
  "$CTRACE" run "$tmp/inputs" $([ $mode = unsafe ] && echo --unsafe) > "$tmp/inputs.out" 2>&1; st=$?
  got=$(python3 - "$tmp/inputs/results/manifest.json" "$PWD" <<'PY'
import hashlib, json, os, sys
m = json.load(open(sys.argv[1]))
paths = [i["path"] for i in m["inputs"]]
bad = [i["path"] for i in m["inputs"] if hashlib.sha256(open(i["path"], "rb").read()).hexdigest() != i["sha256"]]
root = sys.argv[2]
res = os.path.dirname(sys.argv[1])
want = [os.path.realpath(p) for p in [res + "/../experiment.lua", res + "/../prompts.txt",
        root + "/../shared/models/stories260K/stories260K.bin", root + "/../shared/models/stories260K/tok512.bin",
        root + "/experiments/stories260K-transcoders/transcoders/config.yaml"] +
        [root + "/experiments/stories260K-transcoders/transcoders/layer_%d.safetensors" % l for l in range(5)]]
missing = [p for p in want if p not in paths]
extra = [p for p in paths if p not in want]
outs = {o["path"]: o["sha256"] for o in m["outputs"]}
want_outs = ["g.html", "g.json", "graph-metadata.json"]
wrong = [p for p, h in outs.items() if hashlib.sha256(open(res + "/" + p, "rb").read()).hexdigest() != h]
# every option in force: the one given (verbose) and the defaults
opts = m["attributions"][0]["options"] if len(m["attributions"]) == 1 else {}
want_opts = {"verbose": False, "batch_size": 512, "max_n_logits": 10, "desired_logit_prob": 0.95, "update_interval": 4,
             "max_feature_nodes": "unlimited", "memory_limit": 4 << 30}
# and the logit targets attributed: token ids with their labels and probabilities
lt = m["attributions"][0].get("logit_targets", []) if len(m["attributions"]) == 1 else []
lt_ok = len(lt) >= 1 and all(isinstance(t["id"], int) and 0 <= t["id"] < 512 and isinstance(t["label"], str) and
                             0 < t["weight"] <= 1 for t in lt) and sum(t["weight"] for t in lt) > 0.5
ok = not (bad or missing or extra or wrong) and len(paths) == len(set(paths)) and sorted(outs) == want_outs and opts == want_opts
ok = ok and lt_ok
print("ok" if ok else "bad hashes %s; missing %s; extra %s; outputs %s %s; options %s; targets %s" % (bad, missing, extra,
      list(outs), wrong, opts, lt))
PY
)
  [ $st -eq 0 ] && [ "$got" = ok ] && ok "$mode run: the manifest lists every file read and written, once, with its SHA-256, every option in force and the logit targets" ||
    { bad "$mode manifest (exit $st): $got"; show "$tmp/inputs.out"; }
done
exp unsafe_lifts "os.execute('touch $tmp/unsafe_lifts/touched')"
runs unsafe_lifts --unsafe
[ $st -eq 0 ] && [ -e "$tmp/unsafe_lifts/touched" ] && ok "--unsafe lifts the sandbox" || { bad "--unsafe (exit $st)"; show "$tmp/unsafe_lifts.out"; }
# ---- the manifest cannot lie; check reads a stranger's folder safely; the parent holds --------
# the manifest's inputs: a script cannot erase or hide what it read
exp hide_inputs 'local ct = require "ctrace"
local here = arg[0]:match("^(.*)/")
local v = io.open(here .. "/input.txt"):read("*a")
require("ctrace.core").clear_files_read()
ct.write_file(ct.results_dir(arg[0]) .. "/out.txt", v)'
echo v1 > "$tmp/hide_inputs/input.txt"
runs hide_inputs
if [ $st -ne 0 ]; then ok "clear_files_read in an experiment: the run fails (exit $st)"
elif grep -q '"'"$tmp"'/hide_inputs/input.txt"' "$tmp/hide_inputs/results/manifest.json" &&
     grep -q '"'"$tmp"'/hide_inputs/experiment.lua"' "$tmp/hide_inputs/results/manifest.json"; then
  ok "clear_files_read cannot erase the run's inputs from the manifest"
else bad "core.clear_files_read() in the experiment erased its inputs from the manifest"; fi
# Lua code after the report (a __gc of the file handles' metatable, run by lua_close) reads and
# writes unrecorded: the manifest omits the input, and check --no-run passes after it changes
exp gc_after_report 'local ct = require "ctrace"
local out, here = ct.results_dir(arg[0]), arg[0]:match("^(.*)/")
local ran = false
getmetatable(io.stdout).__gc = function()
  if ran then return end
  ran = true
  local g = io.open(out .. "/late.txt", "w")
  g:write(io.open(here .. "/late_input.txt"):read("*a"))
  g:close()
end
ct.write_file(out .. "/a.txt", "a")'
echo v1 > "$tmp/gc_after_report/late_input.txt"
runs gc_after_report
if [ $st -ne 0 ] || { [ ! -e "$tmp/gc_after_report/results/late.txt" ] ||
     grep -q 'late_input.txt' "$tmp/gc_after_report/results/manifest.json"; }; then
  ok "no unrecorded reads or writes after the report (exit $st)"
else bad "a __gc finalizer ran after the report: late.txt written from an input the manifest omits"; fi
# attributions in the manifest come from the engine, not from a function the script can replace
exp forged_attr 'local core = require "ctrace.core"
local real = core.json_encode
core.json_encode = function(v, ...)
  if type(v) == "table" and #v == 0 then return "[{\"prompt_tokens\":[1,2,3],\"options\":{\"note\":\"forged\"}}]" end
  return real(v, ...)
end'
runs forged_attr
if [ $st -eq 0 ] && grep -q '"note"' "$tmp/forged_attr/results/manifest.json"; then
  bad "the manifest's attributions were forged by replacing core.json_encode"
else ok "the manifest's attributions cannot be forged (exit $st)"; fi
# check compares expected/ and results/ in the unconfined parent: a link in expected/ to a JSON
# file outside must not be read (its values are printed as differences)
printf '{"token": "%s"}\n' "$SECRET" > "$outside/secret.json"
canary "$outside/secret.json"
exp check_link 'local ct = require "ctrace"; ct.write_json(ct.results_dir(arg[0]) .. "/creds.json", {})'
mkdir -p "$tmp/check_link/expected"
ln -s "$outside/secret.json" "$tmp/check_link/expected/creds.json"
"$CTRACE" check "$tmp/check_link" > "$tmp/check_link.out" 2>&1
"$CTRACE" check "$tmp/check_link" --no-run >> "$tmp/check_link.out" 2>&1
no_secret "check with expected/ linking to a JSON file outside" "$tmp/check_link.out"
# a FIFO in expected/ (or results/) must not hang ctrace check
exp check_fifo 'local ct = require "ctrace"; ct.write_json(ct.results_dir(arg[0]) .. "/a.json", {})'
runs check_fifo
mkdir -p "$tmp/check_fifo/expected" && mkfifo "$tmp/check_fifo/expected/b.txt"
timeout 10 "$CTRACE" check "$tmp/check_fifo" --no-run > "$tmp/check_fifo.out" 2>&1; st=$?
[ $st -ne 124 ] && ok "a FIFO in expected/ does not hang check --no-run (exit $st)" || bad "check --no-run hangs on a FIFO in expected/"
# the parent decodes the child's requests: a 64 MB request must not hold it past --timeout
exp big_request 'local n = math.floor((64 * 2^20 - 100) / 3)
require("ctrace.core").broker("{\"call\":\"np_features\",\"args\":[{\"v\":[" .. string.rep("[],", n - 1) .. "[]]}]}")'
timed big_request "$(cat "$tmp/big_request/experiment.lua")" --timeout 4
[ $st -ne 0 ] && within 8 && ok "a 64 MB request cannot hold the parent past --timeout (exit $st, $secs s)" ||
  bad "a 64 MB request held the parent: exit $st after $secs s with --timeout 4"
# the experiment process has no controlling terminal (TIOCSTI) and is in a session of its own
if command -v script > /dev/null; then
  exp session 'local t0 = os.clock() while os.clock() - t0 < 3 do end'
  script -qec "$CTRACE run $tmp/session" /dev/null > "$tmp/session.out" 2>&1 &
  spid=$!
  sleep 1.5
  parent=$(pgrep -f "^$CTRACE run $tmp/session\$" | head -1)
  child=$(pgrep -P "$parent" 2>/dev/null | head -1)
  psess=$(awk '{print $6}' /proc/$parent/stat 2>/dev/null); csess=$(awk '{print $6}' /proc/$child/stat 2>/dev/null)
  ctty=$(awk '{print $7}' /proc/$child/stat 2>/dev/null)
  wait $spid
  [ -n "$child" ] && [ "$csess" != "$psess" ] && [ "$ctty" = 0 ] &&
    ok "the experiment process has a session of its own and no controlling terminal" ||
    bad "the experiment process shares the parent's session ($csess) and terminal ($ctty): TIOCSTI reaches the user's shell"
fi

# a tree of directories too deep for results: the run fails, nothing of it stays, the next run works
exp deep 'local ct = require "ctrace"; ct.mkdirs(ct.results_dir(arg[0]) .. string.rep("/d", 300))'
runs deep
st1=$st
printf '%s\n' "$GOOD" > "$tmp/deep/experiment.lua"
runs deep
[ $st1 -ne 0 ] && [ $st -eq 0 ] && ! ls -a "$tmp/deep" | grep -q ctrace-staging &&
  ok "results nested too deep fail the run and leave nothing; the next run works" || { bad "deep: exit $st1 then $st"; show "$tmp/deep.out"; }
# a manifest.json of the script's is replaced by ctrace run's own
exp own_manifest 'local ct = require "ctrace"; ct.write_file(ct.results_dir(arg[0]) .. "/manifest.json", "{\"forged\": true}")'
runs own_manifest
[ $st -eq 0 ] && ! grep -q forged "$tmp/own_manifest/results/manifest.json" && grep -q '"inputs"' "$tmp/own_manifest/results/manifest.json" &&
  ok "a manifest.json written by the script is replaced by ctrace run's" || { bad "own manifest (exit $st)"; show "$tmp/own_manifest.out"; }
# check --no-run does not hash files outside what a run may read for a shipped manifest
cp -r "$tmp/txn" "$tmp/oracle"
python3 - "$tmp/oracle/results/manifest.json" "$outside/secret.txt" <<'PY'
import hashlib, json, sys
m = json.load(open(sys.argv[1]))
m["inputs"].append({"path": sys.argv[2], "sha256": hashlib.sha256(b"guess\n").hexdigest()})
json.dump(m, open(sys.argv[1], "w"))
PY
"$CTRACE" check "$tmp/oracle" --no-run > "$tmp/oracle.out" 2>&1; st=$?
[ $st -eq 1 ] && grep -q "an input outside what a run may read (not checked)" "$tmp/oracle.out" &&
  ok "check --no-run hashes no file outside the run's roots for a shipped manifest" || { bad "oracle (exit $st)"; show "$tmp/oracle.out"; }
# the experiment's output reaches a terminal with its control characters shown, not obeyed
if command -v script > /dev/null; then
  exp escapes 'io.stdout:write("done\27[8m hidden\r\n")'
  script -qec "$CTRACE run $tmp/escapes" /dev/null > "$tmp/escapes.tty" 2>&1
  grep -q 'done?\[8m hidden' "$tmp/escapes.tty" && ! grep -q $'\e\[8m' "$tmp/escapes.tty" &&
    ok "escape sequences from the experiment are shown as text on a terminal" || { bad "escapes"; show "$tmp/escapes.tty"; }
fi
# progress lines of an attribution reach a person's terminal through the relay (no escape
# sequence in them), and stay out of a pipe
exp progress 'local ct = require "ctrace"
ct.replacement_model(ct.load_model("stories260K"), ct.load_transcoders("stories260K")):attribute("Once upon a time", {max_feature_nodes = 50})'
if command -v script > /dev/null; then
  script -qec "$CTRACE run $tmp/progress" /dev/null > "$tmp/progress.tty" 2>&1
  grep -q "attribute: done in" "$tmp/progress.tty" && ! grep -q $'\e' "$tmp/progress.tty" &&
    ok "attribution progress shows on a terminal under ctrace run" || { bad "no progress on a terminal"; show "$tmp/progress.tty"; }
fi
"$CTRACE" run "$tmp/progress" > "$tmp/progress.out" 2>&1
! grep -q "attribute:" "$tmp/progress.out" && ok "and not in a pipe" || { bad "progress in a pipe"; show "$tmp/progress.out"; }
# downloads made for a run: within --download-limit, and with the user's token only if --credentials
mkdir -p "$tmp/npfiles/test/big"
head -c 2000000 /dev/urandom > "$tmp/npfiles/test/big/big.bin"
exp budget 'print("got:", require("ctrace").hub.file("hf://test/big/big.bin"))'
for lim in 0.001 1; do
  HF_ENDPOINT=http://127.0.0.1:$nport/hf "$CTRACE" run "$tmp/budget" --download-limit $lim > "$tmp/budget.out" 2>&1; st=$?
  blobs=$(find "$HOME/.cache/huggingface/hub" -path '*blobs*' -type f 2>/dev/null | wc -l)
  if [ $lim = 0.001 ]; then
    [ $st -eq 0 ] && grep -q "more than this run may still download" "$tmp/budget.out" && [ "$blobs" = 0 ] &&
      ok "--download-limit: a 2 MB file is refused under a 1 MB limit, nothing cached" || { bad "budget (exit $st, $blobs blobs)"; show "$tmp/budget.out"; }
  else
    [ $st -eq 0 ] && grep -q "got:	/" "$tmp/budget.out" && [ "$blobs" = 1 ] && ok "within the limit the file is fetched for the run" ||
      { bad "budget 1 GiB (exit $st, $blobs blobs)"; show "$tmp/budget.out"; }
  fi
done
CTRACE_NEURONPEDIA_URL=http://127.0.0.1:$nport/np XDG_CACHE_HOME=$tmp/npcache2 "$CTRACE" run "$tmp/np_broker" --credentials > "$tmp/np_cred.out" 2>&1; st=$?
keys2=$(curl -s "http://127.0.0.1:$nport/stats" | python3 -c 'import json,sys; print(sum(v for k, v in json.load(sys.stdin).items() if k.endswith("x-api-key")))')
[ $st -eq 0 ] && [ "$keys2" -ge 1 ] && ok "--credentials: the key goes to the configured server ($keys2 request(s))" ||
  { bad "--credentials (exit $st, keys $keys2)"; show "$tmp/np_cred.out"; }
no_secret "--credentials" "$tmp/np_cred.out"

# ---- output floods, sparse files, deep trees, escapes in check, expected/ read by the run ------
# a flood of output to a slow reader (a pipe to a pager or tee, a slow terminal): the relay loop
# never returns to the wait loop, so --timeout, Ctrl-C and SIGTERM are never acted on
exp flood 'local s = string.rep("x", 1000000) .. "\n" while true do io.stdout:write(s) end'
cat > "$tmp/slow_reader.py" <<'PY'
import sys, time
while sys.stdin.buffer.read(65536): time.sleep(0.05)
PY
t0=$(ms)
timeout -s KILL 20 "$CTRACE" run "$tmp/flood" --timeout 2 2> "$tmp/flood.out" > >(python3 "$tmp/slow_reader.py")
secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
within 6 && grep -q TIMEOUT "$tmp/flood.out" && ok "a flood of output to a slow reader stops at --timeout 2 ($secs s)" ||
  bad "a flood of output to a slow reader outlives --timeout 2 (still running after $secs s; killed)"
exp flood_int 'local s = string.rep("x", 1000000) .. "\n" while true do io.stdout:write(s) end'
"$CTRACE" run "$tmp/flood_int" 2> "$tmp/flood_int.out" > >(python3 "$tmp/slow_reader.py") &
parent=$!
sleep 2
kill -INT "$parent" 2>/dev/null
sleep 2
if running "$parent"; then bad "Ctrl-C (SIGINT) does not stop a run flooding a slow reader (parent still running 2 s later)"
else ok "Ctrl-C stops a run flooding a slow reader"; fi
kill -KILL "$parent" 2>/dev/null; wait "$parent" 2>/dev/null

# sparse outputs: the child seeks far and writes a byte (nothing on disk, no time); the parent then
# syncs and hashes 60 GiB of holes after the child exited, outside --timeout (minutes to hours)
exp sparse 'local out = require("ctrace").results_dir(arg[0])
for i = 1, 4 do local f = assert(io.open(out .. "/s" .. i .. ".bin", "w")); f:seek("set", 15 * 2^30); f:write("x"); f:close() end'
t0=$(ms)
timeout -s KILL 20 "$CTRACE" run "$tmp/sparse" --timeout 3 > "$tmp/sparse.out" 2>&1; st=$?
secs=$(awk "BEGIN { print ($(ms) - $t0) / 1000 }")
within 8 && ok "sparse outputs cannot hold ctrace run past --timeout 3 (exit $st, $secs s)" ||
  bad "60 GiB of sparse outputs hold ctrace run past --timeout 3 (exit $st after $secs s)"
rm -rf "$tmp/sparse"

# results nested as deep as PATH_MAX allows, with the usual limit of 1024 open files: removing the
# staging directory runs out of descriptors; it stays behind and every later run of the folder fails
exp deep_fd 'local ct = require "ctrace"; local out = ct.results_dir(arg[0])
ct.mkdirs(out .. string.rep("/d", math.floor((4000 - #out) / 2)))'
(ulimit -n 1024; "$CTRACE" run "$tmp/deep_fd" > "$tmp/deep_fd.out" 2>&1)
printf '%s\n' "$GOOD" > "$tmp/deep_fd/experiment.lua"
(ulimit -n 1024; "$CTRACE" run "$tmp/deep_fd" >> "$tmp/deep_fd.out" 2>&1); st=$?
[ $st -eq 0 ] && ! ls -a "$tmp/deep_fd" | grep -q ctrace-staging &&
  ok "a tree as deep as paths allow (ulimit -n 1024) leaves no staging; the next run works" ||
  { bad "a deep tree with ulimit -n 1024: staging left behind, the next run fails (exit $st)"; show "$tmp/deep_fd.out"; }

# check prints values from results/ and expected/ (and names, and a shipped manifest's paths) to
# the terminal as they are: the experiment's escape sequences reach it unfiltered, and a failed
# check can be redrawn as a pass
if command -v script > /dev/null; then
  exp check_escape 'local ct = require "ctrace"
ct.write_json(ct.results_dir(arg[0]) .. "/summary.json", {answer = "\r\27[2Kctrace check: matches expected/ (1 file(s))\27[8m"})'
  mkdir -p "$tmp/check_escape/expected"
  echo '{"answer": "42"}' > "$tmp/check_escape/expected/summary.json"
  script -qec "$CTRACE check $tmp/check_escape" /dev/null > "$tmp/check_escape.tty" 2>&1
  script -qec "$CTRACE check $tmp/check_escape --no-run" /dev/null >> "$tmp/check_escape.tty" 2>&1
  ! grep -q $'\e' "$tmp/check_escape.tty" && ok "check shows the experiment's escape sequences as text on a terminal" ||
    { bad "check prints the experiment's escape sequences raw to the terminal"; show "$tmp/check_escape.tty"; }
  # C1 controls (CSI U+009B, OSC U+009D, as UTF-8) pass the relay's filter; many terminals obey them
  exp c1 'io.stdout:write("a\194\15531mRED\194\1570;TITLE\7 end\n")'
  script -qec "$CTRACE run $tmp/c1" /dev/null > "$tmp/c1.tty" 2>&1
  ! grep -q $'\xc2\x9b' "$tmp/c1.tty" && ! grep -q $'\xc2\x9d' "$tmp/c1.tty" &&
    ok "C1 control characters from the experiment are shown as text on a terminal" ||
    bad "C1 control characters (UTF-8 CSI/OSC) pass the relay's filter to the terminal"
fi

# check passes when the experiment copies expected/ into its results: the folder (and so expected/)
# is readable by the run; the manifest lists expected/summary.json as an input, check ignores it
exp copy_expected 'local ct = require "ctrace"; local here = arg[0]:match("^(.*)/")
ct.write_file(ct.results_dir(arg[0]) .. "/summary.json", io.open(here .. "/expected/summary.json"):read("*a"))'
mkdir -p "$tmp/copy_expected/expected"
echo '{"logit": 0.123456, "top": "Lily"}' > "$tmp/copy_expected/expected/summary.json"
"$CTRACE" check "$tmp/copy_expected" > "$tmp/copy_expected.out" 2>&1; st=$?
[ $st -ne 0 ] && ok "check fails a run that read expected/ (exit $st)" ||
  bad "check passes an experiment that copies expected/ into results/ (exit 0)"

# core.realpath is not checked against the read roots: existence and link targets outside
exp realpath_outside "print('real:', require('ctrace.core').realpath('$outside/secret.txt'))"
runs realpath_outside
! grep -qF "real:	$outside/secret.txt" "$tmp/realpath_outside.out" && ok "core.realpath tells nothing outside the roots" ||
  bad "core.realpath resolves paths outside the read roots (an existence oracle)"

canaries_intact
no_secret "all runs" "$tmp"/*.out
finish
