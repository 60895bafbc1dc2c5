#!/usr/bin/env bash
# test_np_graphs.sh - graphs to and from Neuronpedia against the loopback server
# (tests/net/server.py): ctrace upload and ct.neuronpedia.upload through the upload flow of
# Neuronpedia's own client (signed-put, PUT, save-to-db, the key required), and ct.load_graph of a
# published graph by its page URL or neuronpedia:<model>/<slug>, cached like labels (a second
# process and offline mode read the cache), with the server's refusals passed on as messages.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${CTRACE_BUILD:-build}/ctrace
SET=$PWD/experiments/stories260K-transcoders/transcoders
. tests/net/server.sh
tmp=$(mktemp -d)
server=""
trap 'server_stop; rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
show() { sed 's/^/#   /' "$1"; }
mkdir -p "$tmp/files"
server_start "$tmp/files" "$tmp/server.log" || { echo "Bail out! the test server did not start"; exit 1; }
export CTRACE_NEURONPEDIA_URL=$base/np CTRACE_CACHE=$tmp/cache
unset NEURONPEDIA_API_KEY CTRACE_OFFLINE HF_HUB_OFFLINE
stat() { curl -s "$base/stats" | /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin).get('$1', 0))"; }
cd "$tmp"

"$CTRACE" attribute -p "Once upon a time" -t "$SET" --max_feature_nodes 200 -o once.pt > a.txt 2>&1 ||
  { bad "a graph to upload"; show a.txt; }
"$CTRACE" upload once.pt --scan stories260K > u0.txt 2>&1
[ $? = 1 ] && grep -q "NEURONPEDIA_API_KEY" u0.txt && [ "$(stat np.signed_put)" = 0 ] &&
  ok "without a key: exit 1, the message names NEURONPEDIA_API_KEY, nothing sent" || { bad "no key"; show u0.txt; }

export NEURONPEDIA_API_KEY=test-key
"$CTRACE" upload once.pt --scan stories260K > u1.txt 2> u1.err
[ $? = 0 ] && grep -qx "https://www.neuronpedia.org/stories260K/graph?slug=once" u1.txt &&
  [ "$(stat np.signed_put)" = 1 ] && [ "$(stat np.save_to_db)" = 1 ] && [ "$(stat s3.x-api-key)" = 0 ] &&
  ok "ctrace upload FILE.pt: signed-put and save-to-db with the key (refused without), PUT without it; prints the page" ||
  { bad "upload"; show u1.txt; show u1.err; }

cat > load.lua <<'EOF'
local ct = require "ctrace"
local g = ct.load_graph(arg[1])
local i = g:info()
io.write(string.format("%d %d %s|%s", i.n_kept, i.n_features, g:prompt(), i.scan))
EOF
"$CTRACE" convert once.pt local/once.json --scan stories260K > c.txt 2>&1
want=$("$CTRACE" load.lua local/once.json 2>&1)
got=$("$CTRACE" load.lua "https://www.neuronpedia.org/stories260K/graph?slug=once" 2>&1)
[ -n "$want" ] && [ "$got" = "$want" ] && [ "$(stat np.graph_get)" = 1 ] &&
  ok "ct.load_graph of the page URL: the graph as uploaded ($got)" || { bad "load by URL: '$got' vs '$want'"; show c.txt; }
got2=$("$CTRACE" load.lua neuronpedia:stories260K/once 2>&1)
got3=$(CTRACE_OFFLINE=1 "$CTRACE" load.lua neuronpedia:stories260K/once 2>&1)
[ "$got2" = "$want" ] && [ "$got3" = "$want" ] && [ "$(stat np.graph_get)" = 1 ] &&
  ok "neuronpedia:<model>/<slug> in another process, and offline: from the cache (one request in all)" ||
  { bad "cached graph: '$got2' '$got3' ($(stat np.graph_get) requests)"; }
CTRACE_OFFLINE=1 "$CTRACE" load.lua neuronpedia:stories260K/other > o.txt 2>&1
[ $? != 0 ] && grep -q "OFFLINE" o.txt && grep -q "not in the cache" o.txt &&
  ok "offline, a graph never fetched: OFFLINE, not in the cache" || { bad "offline miss"; show o.txt; }
"$CTRACE" load.lua neuronpedia:stories260K/missing > m.txt 2>&1
[ $? != 0 ] && grep -q "Graph not found" m.txt && ok "an unknown slug: the server's 'Graph not found'" || { bad "unknown slug"; show m.txt; }

# a graph JSON as it is; the server's refusals passed on
"$CTRACE" upload local/once.json > u2.txt 2>&1 && grep -q "slug=once$" u2.txt && [ "$(stat np.save_to_db)" = 2 ] &&
  ok "ctrace upload FILE.json: the JSON as it is" || { bad "upload json"; show u2.txt; }
"$CTRACE" upload once.pt --scan fault-none --slug x > u3.txt 2>&1
[ $? = 1 ] && grep -q "ERR_MODEL_DOES_NOT_EXIST" u3.txt && ok "a scan Neuronpedia does not know: its ERR_MODEL_DOES_NOT_EXIST, exit 1" ||
  { bad "unknown model"; show u3.txt; }
"$CTRACE" upload once.pt --scan stories260K --slug "bad slug" > u4.txt 2>&1
[ $? = 1 ] && grep -q "slug 'bad slug'" u4.txt && [ "$(stat np.signed_put)" = 3 ] &&
  ok "a slug with a space refused before anything is sent" || { bad "bad slug"; show u4.txt; }
"$CTRACE" -e 'local g = require("ctrace").load_graph("local/once.json")
print(require("ctrace").neuronpedia.upload(g, {slug = "from-lua", scan = "stories260K"}))' > u5.txt 2>&1 &&
  grep -q "slug=from-lua" u5.txt && ok "ct.neuronpedia.upload(graph, {slug, scan}) from Lua" || { bad "upload from Lua"; show u5.txt; }

# a dotted slug (Neuronpedia takes [A-Za-z0-9_-]) and a graph without a Neuronpedia scan: refused
# before anything is sent
"$CTRACE" upload once.pt --scan stories260K --slug v1.2 > u6.txt 2>&1
s6=$?
"$CTRACE" upload once.pt > u7.txt 2>&1
s7=$?
"$CTRACE" -e 'local g = require("ctrace").load_graph("once.pt")
require("ctrace").neuronpedia.upload(g, {slug = "no-scan"})' > u8.txt 2>&1
[ $s6 = 1 ] && grep -q "slug 'v1.2' has '.'" u6.txt && [ $s7 = 2 ] && grep -q "names no scan" u7.txt &&
  grep -q "no Neuronpedia model id" u8.txt &&
  [ "$(stat np.signed_put)" = 4 ] && ok "a dotted slug, a graph with no scan: refused before anything is sent" ||
  { bad "slug/scan rules ($(stat np.signed_put) signed-puts)"; show u6.txt; show u7.txt; }
echo "1..$n"
exit $fail
