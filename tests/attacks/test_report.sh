#!/usr/bin/env bash
# test_report.sh - a lying experiment process: its report to ctrace run is checked, not trusted.
# An --unsafe script has ffi, so it can write frames of its own on the socket to its parent
# (descriptor 3) and leave without the real report, as a compromised experiment process could:
# a malformed report, a report with a forged hash, a report of the wrong kind. Each run must fail
# and leave the previous results exactly as they were.
cd "$(dirname "$0")/../.."
. tests/attacks/lib.sh

exp() { rm -rf "${tmp:?}/$1"; mkdir -p "$tmp/$1"; printf '%s\n' "$2" > "$tmp/$1/experiment.lua"; }
tree() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) | sha256sum; }
GOOD='local ct = require "ctrace"; ct.write_json(ct.results_dir(arg[0]) .. "/a.json", {run = "good"})'
# lie NAME PAYLOAD KIND: a run whose experiment sends frame KIND with PAYLOAD, then exits 0
lie() {
  exp "$1" "$GOOD"
  "$CTRACE" run "$tmp/$1" > "$tmp/$1.out" 2>&1 || { bad "$1: the good run failed"; show "$tmp/$1.out"; return; }
  local before; before=$(tree "$tmp/$1/results")
  cat > "$tmp/$1/experiment.lua" <<LUA
local ffi = require "ffi"
ffi.cdef "long write(int, const void *, unsigned long); void _exit(int);"
local ct = require "ctrace"
ct.write_json(ct.results_dir(arg[0]) .. "/a.json", {run = "forged"})
local payload = [==[$2]==]
local n = #payload
local head = string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, 0) .. "$3"
ffi.C.write(3, head .. payload, 5 + n)
io.stdout:flush()
ffi.C._exit(0)
LUA
  "$CTRACE" run "$tmp/$1" --unsafe > "$tmp/$1.out" 2>&1; local st=$?
  if [ $st -ne 0 ] && grep -q "$4" "$tmp/$1.out" && [ "$(tree "$tmp/$1/results")" = "$before" ]; then
    ok "$1: the run fails ($4), results/ untouched"
  else bad "$1: exit $st, results/ $( [ "$(tree "$tmp/$1/results")" = "$before" ] && echo untouched || echo changed)"; show "$tmp/$1.out"; fi
}
lie malformed '{"attributions": []}' R "malformed report"
lie forged_hash '{"inputs": [{"path": "/etc/passwd", "sha256": "not-a-hash"}], "attributions": [], "seconds": 1, "peak_rss_bytes": 1}' R "malformed report"
lie not_json 'this is not JSON' R "malformed report"
lie wrong_kind '{}' X "out of protocol"
lie big_request "$(head -c 1100000 /dev/zero | tr '\0' 'x')" Q "out of protocol"
finish
