#!/usr/bin/env bash
# The ctrace program: the README's main job, -e, scripts with arguments, the REPL, errors.
cd "$(dirname "$0")/../.."
CT=${CTRACE_BUILD:-build}/ctrace
SHARED=${CTRACE_MODELS:-../shared/models}
n=0; failed=0
check() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
$CT -e 'io.write(require("ctrace").load_model("stories260K"):generate("", {max_tokens=200, temperature=0}))' > "$out/g.txt"
cmp -s "$out/g.txt" "$SHARED/stories260K/greedy_200.txt"; check $? "the issue's -e command prints greedy_200.txt byte for byte"

printf 'print(#arg, arg[0], ...)\n' > "$out/s.lua"
[ "$($CT "$out/s.lua" a b)" = "2	$out/s.lua	a	b" ]; check $? "script receives arg and ..."

printf 'm = ct.load_model("stories260K")\nm.n_layers\nx = 40\nx + 2\n' | $CT > "$out/repl.txt"
[ "$(cat "$out/repl.txt")" = "$(printf '5\n42')" ]; check $? "REPL keeps state between lines"

# a timeout spent in one REPL line does not stop the next
printf '%s\n' 'm = ct.load_model("stories260K") rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))' \
  'ids = m:tokenize(m:generate("", {max_tokens = 300, temperature = 1, seed = 3, stop_at_eos = false}))' \
  'require("ctrace.core").set_timeout(0.05) rm:attribute(ids, {verbose = false})' \
  'ok2 = pcall(rm.attribute, rm, "Once upon a time", {verbose = false})' 'print(ok2)' | $CT > "$out/t.txt" 2>&1
grep -q "CANCELLED" "$out/t.txt" && [ "$(tail -1 "$out/t.txt")" = "true" ]
check $? "REPL: a timeout stops its own line and not the next"

$CT -e 'error("boom")' 2> "$out/err.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "boom" "$out/err.txt" && grep -q "traceback" "$out/err.txt"; check $? "errors exit 1 with a traceback (got $rc)"
printf 'error("script boom")\n' > "$out/e.lua"
$CT "$out/e.lua" 2> /dev/null; rc=$?
[ $rc -eq 1 ]; check $? "a script's error exits 1, as the README says (got $rc)"

$CT --bogus 2>/dev/null; [ $? -eq 2 ]; check $? "unknown option exits 2"
$CT --help | grep -q "usage: ctrace"; check $? "--help"

PKG_CONFIG_LIBDIR=/nonexistent make -n all > "$out/mk.txt" 2>&1
grep -q "missing Debian packages: libseccomp-dev libluajit-5.1-dev libcjson-dev libcurl4-openssl-dev libopenblas-dev libutf8proc-dev" "$out/mk.txt"
check $? "make names the Debian packages that are missing"

# many large tensors in a loop stay bounded without explicit frees
$CT -e 'local ct = require "ctrace"
local peak = 0
for i = 1, 400 do local t = ct.zeros(1024, 1024) peak = math.max(peak, ct.mem_bytes()) end
assert(peak < 512 * 2^20, "engine peaked at " .. peak .. " bytes")' 2> "$out/gc.txt"
check $? "the collector reclaims native tensor memory while 400 x 4 MB tensors are made (peak < 512 MB)"

echo "1..$n"
[ $failed -eq 0 ]
