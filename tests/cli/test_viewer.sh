#!/usr/bin/env bash
# test_viewer.sh - the viewer page written beside a graph JSON, in headless Chromium (Debian's
# chromium): it loads with no script errors, its DOM holds as many nodes and edges as the JSON,
# clicking a node shows its details (the page's ?selftest mode clicks its first feature node),
# the node-threshold slider hides the nodes beyond it,
# and a screenshot is kept in build/test-artifacts/viewer.png. Also the static SVG.
set -u
cd "$(dirname "$0")/../.."
CTRACE=${BUILD:-build}/ctrace
CHROMIUM=$(command -v chromium || command -v chromium-browser)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
[ -n "$CHROMIUM" ] && ok "chromium at $CHROMIUM" || { bad "no chromium (tests/setup.sh test installs it)"; echo "1..$n"; exit 1; }

"$CTRACE" -e '
local ct = require "ctrace"
local m = ct.load_model("stories260K")
local g = ct.replacement_model(m, ct.load_transcoders("stories260K")):attribute("Once upon a time, there was a little girl named Lily. She", {verbose = false})
local p = g:prune{}
p:set_label(p:top_features{n = 1}[1], "she <b>&</b> \"quotes\"")   -- labels are escaped
p:save_json(arg and arg[1] or "'"$tmp"'/lily.json", {slug = "lily", scan = "stories260K"})
p:save_svg("'"$tmp"'/lily.svg")' && test -s "$tmp/lily.html" && ok "save_json writes the viewer page beside the JSON" ||
  bad "no viewer page"
grep -q "<script src=\|<link .*href=\"http\|https://" "$tmp/lily.html" && bad "the page loads something from the network" ||
  ok "self-contained (no external scripts, styles or URLs)"
grep -q '<circle' "$tmp/lily.svg" && grep -q '<line' "$tmp/lily.svg" && ok "static SVG with nodes and edges" || bad "static SVG"

dom=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 \
      --dump-dom "file://$tmp/lily.html?selftest" 2> "$tmp/console.txt")
result=$(echo "$dom" | grep -o '<pre id="selftest">[^<]*' | sed 's/<pre id="selftest">//; s/&quot;/"/g')
echo "# $result"
counts=$("$CTRACE" -e '
local ct = require "ctrace"
local r = ct.json_decode(io.read("*a"))
local f = assert(io.open(arg and arg[1] or "'"$tmp"'/lily.json"))
local g = ct.json_decode(f:read("*a"))
f:close()
print(r.nodes == #g.nodes and r.json_nodes == #g.nodes and "same" or "differ",
      r.edges == #g.links and r.json_links == #g.links and "same" or "differ",
      r.details_shown and "shown" or "missing", #r.errors == 0 and "clean" or table.concat(r.errors, "; "),
      (r.threshold_visible == r.threshold_expected and r.threshold_visible < #g.nodes) and "pruned" or
        ("shows " .. tostring(r.threshold_visible) .. " of " .. tostring(r.threshold_expected)))' <<< "$result" 2>&1)
set -- $counts
[ "${1:-}" = same ] && ok "DOM nodes = JSON nodes" || bad "node count: $counts"
[ "${2:-}" = same ] && ok "DOM edges = JSON links" || bad "edge count: $counts"
[ "${3:-}" = shown ] && ok "clicking a node shows its details" || bad "details: $counts"
[ "${4:-}" = clean ] && ! grep -q 'CONSOLE.*Uncaught' "$tmp/console.txt" && ok "no script errors" || {
  bad "script errors: $counts"; grep CONSOLE "$tmp/console.txt" | head -5 | sed 's/^/#   /'; }

[ "${5:-}" = pruned ] && ok "the node-threshold slider at 0.5 shows exactly the nodes within it" || bad "node threshold: $counts"

mkdir -p build/test-artifacts
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,800 \
  --screenshot="$PWD/build/test-artifacts/viewer.png" "file://$tmp/lily.html?selftest" > /dev/null 2>&1
[ -s build/test-artifacts/viewer.png ] && ok "screenshot: build/test-artifacts/viewer.png" || bad "no screenshot"
echo "1..$n"
exit $fail
