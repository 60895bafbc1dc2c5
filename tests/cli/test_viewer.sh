#!/usr/bin/env bash
# test_viewer.sh - the viewer page written beside a graph JSON, in headless Chromium (Debian's
# chromium): it loads with no script errors, it draws as many nodes and edges as the JSON, every
# node inside its position's column, clicking a node shows its details and highlights its edges
# (the page's ?selftest mode clicks its first feature node), an edge split by heads shows its heads
# and a head its QK pairs when clicked, the node-threshold slider hides the
# nodes beyond it, pins and supernodes survive load_graph + save_json into the page, automatic
# supernodes show in it, graphs of
# 100,000 and 500,000 links open without an error (the time printed),
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
local p = g:prune{heads = 3, qk = 8}   -- edges split by heads, 8 heads with their QK pairs
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
        ("shows " .. tostring(r.threshold_visible) .. " of " .. tostring(r.threshold_expected)),
      (r.highlighted == r.touching and r.touching > 0) and "highlighted" or ("highlighted " .. r.highlighted .. " of " .. r.touching),
      r.spill == 0 and "columns" or ("spill " .. r.spill),
      (r.heads_shown and r.qk_shown and r.qk_entries == 8) and "heads" or ("heads " .. tostring(r.heads_shown) .. " qk " ..
        tostring(r.qk_shown) .. " of " .. tostring(r.qk_entries)))' <<< "$result" 2>&1)
set -- $counts
[ "${1:-}" = same ] && ok "DOM nodes = JSON nodes" || bad "node count: $counts"
[ "${2:-}" = same ] && ok "edges drawn = JSON links" || bad "edge count: $counts"
[ "${3:-}" = shown ] && ok "clicking a node shows its details" || bad "details: $counts"
[ "${6:-}" = highlighted ] && ok "clicking a node highlights exactly its edges" || bad "highlight: $counts"
[ "${7:-}" = columns ] && ok "every node drawn inside its position's column" || bad "layout: $counts"
[ "${4:-}" = clean ] && ! grep -q 'CONSOLE.*Uncaught' "$tmp/console.txt" && ok "no script errors" || {
  bad "script errors: $counts"; grep CONSOLE "$tmp/console.txt" | head -5 | sed 's/^/#   /'; }

[ "${5:-}" = pruned ] && ok "the node-threshold slider at 0.5 shows exactly the nodes within it" || bad "node threshold: $counts"
[ "${8:-}" = heads ] && ok "clicking an edge split by heads shows its heads, clicking a head its QK pairs" ||
  bad "heads and QK: $counts"

# pins and supernodes in circuit-tracer's qParams: kept by load_graph + save_json, shown by the
# page and what its save link writes
"$CTRACE" -e '
local ct = require "ctrace"
local f = assert(io.open("'"$tmp"'/lily.json")); local g = ct.json_decode(f:read("*a")); f:close()
local ids = {}
for _, n in ipairs(g.nodes) do if n.feature_type == "cross layer transcoder" then ids[#ids + 1] = n.node_id end end
g.qParams.pinnedIds = {ids[1], ids[2]}
g.qParams.supernodes = {{"say she", ids[3], ids[4]}}
ct.write_file("'"$tmp"'/pins.json", ct.json_encode(g))
ct.load_graph("'"$tmp"'/pins.json"):save_json("'"$tmp"'/pins2.json", {slug = "pins"})
io.write(ids[1], " ", ids[2], " ", ids[3], " ", ids[4])' > "$tmp/ids.txt" 2>&1
read -r p1 p2 s1 s2 < "$tmp/ids.txt"
dom=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$tmp/pins2.html?selftest" 2> /dev/null)
pins=$(echo "$dom" | grep -o '<pre id="selftest">[^<]*' | sed 's/&quot;/"/g' | grep -o '"pinned":.*"supernodes":[^]]*]]')
[ -n "$p1" ] && [ "$pins" = "\"pinned\":[\"$p1\",\"$p2\"],\"supernodes\":[[\"say she\",\"$s1\",\"$s2\"]]" ] &&
  ok "pins and supernodes (qParams) through load_graph + save_json into the page and its save link" ||
  { bad "pins and supernodes: '$pins' (ids $p1 $p2 $s1 $s2)"; sed 's/^/#   /' "$tmp/ids.txt"; }

# automatic supernodes (g:supernodes, g:set_supernodes) in the page: the list the page holds and
# its save link writes is the graph JSON's, and the supernodes panel shows them
"$CTRACE" -e '
local ct = require "ctrace"
local m = ct.load_model("stories260K")
local p = ct.replacement_model(m, ct.load_transcoders("stories260K")):attribute("Once upon a time, there was a little girl named Lily. She", {verbose = false}):prune{}
p:set_supernodes(p:supernodes{})
p:save_json("'"$tmp"'/auto.json", {slug = "auto"})' || bad "automatic supernodes: graph not written"
dom=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$tmp/auto.html?selftest" 2> /dev/null)
same=$("$CTRACE" -e '
local ct = require "ctrace"
local dom = io.read("*a")
local st = dom:match("<pre id=\"selftest\">([^<]*)") or ""
st = st:gsub("&quot;", "\""):gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&amp;", "&")
local f = assert(io.open("'"$tmp"'/auto.json")); local g = ct.json_decode(f:read("*a")); f:close()
local want, got = g.qParams.supernodes, ct.json_decode(st).supernodes
local panel = dom:match("<div id=\"supernodes\">(.-)</div></div>") or ""
print(#want > 0 and ct.json_encode(want) == ct.json_encode(got) and select(2, panel:gsub("<b>", "")) == #want and "same" or
      ("want " .. #want .. " got " .. tostring(got and #got) .. " panel " .. select(2, panel:gsub("<b>", ""))))' <<< "$dom" 2>&1)
[ "$same" = same ] && ok "automatic supernodes: the page holds and shows the graph JSON's supernodes" ||
  bad "automatic supernodes in the page: $same"

# a page made from a stranger's JSON (viewer.write embeds it as it is): markup in a link's heads and
# in the QK splits is shown as text, never run; entries of the wrong shape are left out
"$CTRACE" -e '
local ct = require "ctrace"
local f = assert(io.open("'"$tmp"'/lily.json")); local g = ct.json_decode(f:read("*a")); f:close()
local evil = "<img src=x onerror=\"document.title=1\">"
for _, l in ipairs(g.links) do
  if l.heads and #l.heads > 0 then l.heads[1].layer = evil; l.heads[1].head = evil; l.residual = evil end
end
g.qk[1].layer = evil
g.qParams.supernodes = {{evil, g.nodes[1].node_id, g.nodes[2].node_id}}
g.qk[2].pairs[1].query = evil
g.qk[3] = ct.json_decode("null")
g.qk[4].pairs = "x"
ct.write_file("'"$tmp"'/evil.json", ct.json_encode(g))
require("ctrace.viewer").write("'"$tmp"'/evil.json")' > "$tmp/evil.txt" 2>&1
dom=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$tmp/evil.html?selftest" 2> /dev/null)
res=$(echo "$dom" | grep -o '<pre id="selftest">[^<]*' | sed 's/&quot;/"/g')
echo "$res" | grep -q '"errors":\[\]' && ! echo "$dom" | grep -q '<img src="x"' && echo "$dom" | grep -q '<title>' &&
  ! echo "$dom" | grep -q '<title>1</title>' &&
  ok "hostile heads, QK splits and a supernode's name in a stranger's JSON: shown as text, nothing run, no script error" ||
  { bad "hostile heads/QK: $res"; sed 's/^/#   /' "$tmp/evil.txt"; }

# graphs of 100,000 and 500,000 links (2,009 nodes): no script error, every edge drawn; the time
# from navigation to the drawn page printed (not asserted)
/usr/bin/python3 - "$tmp" <<'EOF'
import json, random, sys
random.seed(1)
T, L = 24, 18
nodes = [{"node_id": "%d_%d_%d" % (l, 1000 + i, i % T), "feature": 1000 + i, "layer": str(l), "ctx_idx": i % T,
          "feature_type": "cross layer transcoder", "influence": random.random(), "activation": 1.0, "clerp": ""}
         for l in range(L) for i in range(110)]
nodes += [{"node_id": "E_%d_%d" % (100 + p, p), "feature": 100 + p, "layer": "E", "ctx_idx": p, "feature_type": "embedding",
           "influence": None, "activation": None, "clerp": ""} for p in range(T)]
nodes += [{"node_id": "%d_%d_%d" % (L + 1, 7 + k, T - 1), "feature": 7 + k, "layer": str(L + 1), "ctx_idx": T - 1,
           "feature_type": "logit", "influence": None, "activation": None, "clerp": "", "token_prob": 0.1} for k in range(5)]
ids = [n["node_id"] for n in nodes]
for n_links in (100000, 500000):
    seen, links = set(), []
    while len(links) < n_links:
        s, t = random.randrange(len(ids)), random.randrange(len(ids))
        if s != t and (s, t) not in seen:
            seen.add((s, t))
            links.append({"source": ids[s], "target": ids[t], "weight": round(random.gauss(0, 1), 4)})
    g = {"metadata": {"slug": "big", "scan": "x", "prompt": "p", "prompt_tokens": ["t%d" % p for p in range(T)]},
         "qParams": {"pinnedIds": [], "supernodes": []}, "nodes": nodes, "links": links}
    json.dump(g, open("%s/big%d.json" % (sys.argv[1], n_links), "w"), separators=(",", ":"))
# a long prompt: 600 positions, a graph wider than a canvas may be (32,767 pixels)
T = 600
nodes = [{"node_id": "%d_%d_%d" % (l, 5, p), "feature": 5, "layer": str(l), "ctx_idx": p, "feature_type": "cross layer transcoder",
          "influence": random.random(), "activation": 1.0, "clerp": ""} for l in range(3) for p in range(T)]
nodes += [{"node_id": "E_%d_%d" % (100 + p, p), "feature": 100 + p, "layer": "E", "ctx_idx": p, "feature_type": "embedding",
           "influence": None, "activation": None, "clerp": ""} for p in range(T)]
links = [{"source": "E_%d_%d" % (100 + p, p), "target": "0_5_%d" % p, "weight": 1.0} for p in range(T)]
links += [{"source": "0_5_%d" % p, "target": "2_5_%d" % min(T - 1, p + 3), "weight": -0.5} for p in range(T)]
g = {"metadata": {"slug": "wide", "scan": "x", "prompt": "p", "prompt_tokens": ["t%d" % p for p in range(T)]},
     "qParams": {"pinnedIds": [], "supernodes": []}, "nodes": nodes, "links": links}
json.dump(g, open("%s/wide.json" % sys.argv[1], "w"), separators=(",", ":"))
EOF
"$CTRACE" -e "require('ctrace.viewer').write('$tmp/wide.json')" || bad "viewer page of a 600-position graph"
r=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$tmp/wide.html?selftest" 2> /dev/null |
    grep -o '<pre id="selftest">[^<]*' | sed 's/&quot;/"/g')
w=$(echo "$r" | grep -o '"graph_width":[0-9]*' | cut -d: -f2)
echo "$r" | grep -q '"canvas_follows":true' && echo "$r" | grep -q '"edges":1200,.*"errors":\[\]' && [ "${w:-0}" -gt 32767 ] &&
  ok "600 positions ($w pixels wide): the edge canvas keeps the view's size and follows the scroll; every edge drawn" ||
  bad "wide graph: $(echo "$r" | cut -c1-300)"
for k in 100000 500000; do
  "$CTRACE" -e "require('ctrace.viewer').write('$tmp/big$k.json')" || bad "viewer page of $k links"
  r=$(timeout 300 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$tmp/big$k.html?selftest" 2> /dev/null |
      grep -o '<pre id="selftest">[^<]*' | sed 's/&quot;/"/g')
  echo "$r" | grep -q "\"edges\":$k,.*\"errors\":\[\]" && echo "$r" | grep -q '"spill":0' &&
    ok "$k links: every edge drawn, no script error; open in $(echo "$r" | grep -o '"load_ms":[0-9]*' | cut -d: -f2) ms" ||
    bad "$k links: $(echo "$r" | cut -c1-300)"
done

mkdir -p build/test-artifacts
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,800 \
  --screenshot="$PWD/build/test-artifacts/viewer.png" "file://$tmp/lily.html?selftest" > /dev/null 2>&1
[ -s build/test-artifacts/viewer.png ] && ok "screenshot: build/test-artifacts/viewer.png" || bad "no screenshot"
echo "1..$n"
exit $fail
