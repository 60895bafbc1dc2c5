#!/usr/bin/env bash
# test_circuit_tracer_cli.sh - ctrace attribute takes circuit-tracer's command line: the examples
# of circuit-tracer's README as written there (its hub sets replaced by ctrace's default set),
# its short forms, underscores, --flag=value and unambiguous prefixes (argparse's), its defaults
# (port 8041, graph files only with --slug and --graph_file_dir when -o is given), the model taken
# from the set's config.yaml, and messages that say what was expected.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
SET=$PWD/experiments/stories260K-transcoders/transcoders
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
show() { sed 's/^/#   /' "$1"; }
cd "$tmp"

# circuit-tracer's README, "Complete workflow with visualization" (--transcoder_set gemma -> the
# stories260K set; the server is stopped once it listens)
port_free=1
(exec 3<> /dev/tcp/127.0.0.1/8041) 2> /dev/null && port_free=0
if [ $port_free = 1 ]; then
  "$CTRACE" attribute \
    --prompt "The International Advanced Security Group (IAS" \
    --transcoder_set "$SET" \
    --slug gemma-demo \
    --graph_file_dir ./graph_files \
    --server > out1.txt 2>&1 &
  pid=$!
  for _ in $(seq 300); do grep -q listening out1.txt && break; kill -0 $pid 2> /dev/null || break; sleep 0.1; done
  grep -q "listening on http://127.0.0.1:8041/" out1.txt && ok "README workflow: serving on circuit-tracer's port 8041" ||
    { bad "README workflow: no server on 8041"; show out1.txt; }
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8041/gemma-demo.json)
  [ "$code" = 200 ] && ok "the graph is served as <slug>.json" || bad "served graph: $code"
  kill -INT $pid; wait $pid 2> /dev/null; pid=
else
  echo "# port 8041 is busy here: the README workflow runs without --server"
  "$CTRACE" attribute --prompt "The International Advanced Security Group (IAS" --transcoder_set "$SET" \
    --slug gemma-demo --graph_file_dir ./graph_files > out1.txt 2>&1 || { bad "README workflow"; show out1.txt; }
fi
test -s graph_files/gemma-demo.json -a -s graph_files/graph-metadata.json -a -s graph_files/gemma-demo.html &&
  ok "README workflow: graph_files/gemma-demo.json, graph-metadata.json and the viewer page" ||
  { bad "README workflow files"; ls -R . | sed 's/^/#   /'; }
grep -q '"slug": *"gemma-demo"' graph_files/gemma-demo.json && grep -q '"scan": *"stories260K"' graph_files/gemma-demo.json &&
  ok "its metadata: the slug, and the scan of a set that names none is its model" || bad "slug/scan in the JSON"
grep -q '"prompt": *"<s> The International' graph_files/gemma-demo.json ||
  grep -q 'The International Advanced Security Group' graph_files/gemma-demo.json &&
  ok "the prompt as given" || bad "prompt not in the JSON"

# the set's own feature dashboards (dashboards.json beside its config): labels in the graph JSON,
# dashboards in the viewer page
labelled=$(grep -c '"clerp": "on ' graph_files/gemma-demo.json)
[ "$labelled" -gt 0 ] && grep -q '"top":\[\[' graph_files/gemma-demo.html &&
  ok "labels from the set's dashboards: $labelled feature nodes labelled, their dashboards in the viewer page" ||
  bad "no labels from the set's dashboards ($labelled)"

# dashboards that do not fit the set, or that cannot be read: a note, the graph written, no label
mkdir -p badset && cp "$SET"/config.yaml "$SET"/layer_*.safetensors badset/
echo '{"layers": [[]], "corpus": [], "window": [8, 2]}' > badset/dashboards.json
"$CTRACE" attribute -p "Once upon a time" -t badset --slug bd --graph_file_dir bdg > bd1.txt 2>&1 &&
  grep -q "does not fit the set" bd1.txt && test -s bdg/bd.json && ! grep -q '"clerp": "on ' bdg/bd.json &&
  echo 'not json' > badset/dashboards.json &&
  "$CTRACE" attribute -p "Once upon a time" -t badset --slug bd2 --graph_file_dir bdg > bd2.txt 2>&1 &&
  grep -q "cannot be read" bd2.txt && test -s bdg/bd2.json &&
  ok "dashboards that do not fit the set or cannot be read: a note, the graph written without labels" ||
  { bad "bad dashboards"; show bd1.txt; show bd2.txt; }

# "Basic Usage" repeats --slug and --graph_file_dir: argparse keeps the last
"$CTRACE" attribute --prompt "Once upon a time" --transcoder_set "$SET" --slug first --graph_file_dir ./one \
  --slug basic --graph_file_dir ./basic > out2.txt 2>&1 && test -s basic/basic.json -a ! -e one &&
  ok "Basic Usage: a repeated flag, the last one counts" || { bad "repeated flags"; show out2.txt; }

# "Attribution only (save raw graph)", verbatim: -o alone writes the full graph (circuit-tracer's
# .pt) and no graph files; .safetensors is ctrace's own form of the same graph
"$CTRACE" attribute \
  --prompt "The capital of France is" \
  --transcoder_set "$SET" \
  --graph_output_path france_capital.pt > out3.txt 2>&1 &&
  test -s france_capital.pt -a ! -e graphs && /usr/bin/python3 -c "import sys, zipfile
sys.exit('france_capital/data.pkl' not in zipfile.ZipFile('france_capital.pt').namelist())" &&
  ok "Attribution only: the full graph as circuit-tracer's .pt (a zip with france_capital/data.pkl), no graph files" ||
  { bad "-o alone"; show out3.txt; }
cat > info.lua <<'LUA'
local g = require("ctrace").load_graph(arg[1])
local i = g:info()
io.write(i.n_features, " ", i.n_logits, " ", g:prompt(), "\n")
LUA
"$CTRACE" info.lua france_capital.pt > out4.txt 2>&1 && grep -q "capital of France" out4.txt &&
  ok "and it loads with its prompt" || { bad "graph from -o"; show out4.txt; }
"$CTRACE" attribute -p "The capital of France is" -t "$SET" -o france_capital.safetensors > out5.txt 2>&1 &&
  "$CTRACE" convert france_capital.safetensors fc.pt > out5b.txt 2>&1 && "$CTRACE" convert france_capital.pt fc.safetensors \
  >> out5b.txt 2>&1 && cmp -s fc.safetensors france_capital.safetensors &&
  ok "-o FILE.safetensors: the same graph (converted to .pt and back from circuit-tracer's: the same bytes)" ||
  { bad "-o .safetensors"; show out5.txt; show out5b.txt; }
"$CTRACE" attribute -p "The capital of France is" -t "$SET" -o france.npz > out5c.txt 2>&1
[ $? = 2 ] && grep -q "\.pt or \.safetensors" out5c.txt && ! grep -q '\.lua:[0-9]' out5c.txt && test ! -e france.npz &&
  ! grep -q "replacement" out5c.txt && ok "-o FILE.npz: refused before any work with what ctrace writes (exit 2)" ||
  { bad "-o .npz"; show out5c.txt; }

# argparse's spellings: --flag=value, -pTEXT, prefixes, hyphens for underscores, ctrace's older names
"$CTRACE" attribute -p="Once upon a time" --transcoder-set="$SET" --max_feat 50 --node-thresh=0.5 --graph-dir old \
  --slug=spell --graph_output=spell.safetensors --batch_size 64 --max_n_logits=3 --desired_logit_prob 0.9 \
  --offload disk --dtype fp32 --lazy-encoder --lazy-decoder --backend nnsight > out6.txt 2>&1 &&
  test -s old/spell.json -a -s spell.safetensors &&
  ok "-p=TEXT, --flag=value, unique prefixes, hyphens, older names, every accepted flag" || { bad "spellings"; show out6.txt; }
grep -q '"prompt": *"Once upon a time"' old/spell.json || grep -q 'Once upon a time' old/spell.json &&
  ! grep -q '=Once' old/spell.json && ok "-p=TEXT: the prompt without its '='" || bad "-p=TEXT kept the '='"
"$CTRACE" attribute -p"Once upon a time" -t "$SET" -o attached.safetensors > out6b.txt 2>&1 && test -s attached.safetensors &&
  ok "-pTEXT" || { bad "-pTEXT"; show out6b.txt; }
"$CTRACE" info.lua spell.safetensors > out7.txt 2>&1
read -r nf nl _ < out7.txt
[ "${nf:-99}" -le 50 ] 2> /dev/null && [ "${nl:-99}" -le 3 ] 2> /dev/null &&
  ok "--max_feat 50 and --max_n_logits=3 took effect ($nf features, $nl logits)" || { bad "options ignored"; show out7.txt; }
# --dtype: the float32 stories260K held in bfloat16 gives the graph of the model loaded that way in Lua,
# not the float32 one
"$CTRACE" attribute -p "Once upon a time" -t "$SET" --dtype bf16 -o dt.safetensors > out8.txt 2>&1 &&
  "$CTRACE" attribute -p "Once upon a time" -t "$SET" -o f32.safetensors > out8b.txt 2>&1 &&
  printf '%s\n' 'local ct = require "ctrace"' \
    'local m = ct.load_model("stories260K", {dtype = "bfloat16"})' 'assert(m:config().dtype == "BF16")' \
    'local rm = ct.replacement_model(m, ct.load_transcoders(arg[1]))' \
    'rm:attribute("Once upon a time", {max_feature_nodes = 7500, batch_size = 256}):save("lua.safetensors")' > bf16.lua &&
  "$CTRACE" bf16.lua "$SET" > out8c.txt 2>&1 && cmp -s dt.safetensors lua.safetensors && ! cmp -s dt.safetensors f32.safetensors &&
  ok "--dtype bf16: the graph of the model held in bfloat16 (ct.load_model dtype), not the float32 one" ||
  { bad "--dtype bf16"; show out8.txt; show out8c.txt; }

# bad arguments: exit 2, the expected form named
expect2() {   # expect2 NAME PATTERN ARGS...: exit 2 and PATTERN in the message
  local name=$1 pat=$2
  shift 2
  "$CTRACE" attribute "$@" > err.txt 2>&1
  local rc=$?
  [ $rc = 2 ] && grep -q -- "$pat" err.txt && ok "$name" || { bad "$name (exit $rc)"; show err.txt; }
}
expect2 "a typo: did you mean" "did you mean --prompt" --promt "x"
expect2 "a typo in circuit-tracer's spelling" "did you mean --transcoder-set" -p x --transcoder_sett "$SET"
expect2 "an ambiguous prefix names the candidates" "could be" -p x --graph y
expect2 "a choice outside the list" "'int8' is not one of float32" -p x --dtype int8
expect2 "--offload outside the list" "is not one of cpu, disk, None" -p x --offload gpu
expect2 "--prompt with no value" "--prompt needs a value" --prompt
expect2 "--prompt followed by a flag" "--prompt needs a value, got the flag --server" --prompt --server
expect2 "-t followed by a short flag" "needs a value, got the flag -p" -t -p x
expect2 "a switch given a value" "takes no value" -p x --server=yes
expect2 "a bad number" "needs a number" -p x --batch_size many
expect2 "NaN for an integer" "needs a number" -p x --batch_size nan
expect2 "a fraction for an integer" "needs a whole number from 1" -p x --max_n_logits 2.5
expect2 "a port that is not one" "needs a port number" -p x --server --port 80.7
expect2 "a threshold above 1" "needs a number from 0 to 1" -p x --edge_threshold 3
expect2 "a features dir that does not exist" "no directory" -p x --features_dir ./nowhere
expect2 "-m without its set" "needs its transcoder set" -p x -m stories260K
expect2 "-p and --chat together" "exactly one of" -p x --chat y
expect2 "-p followed by an attached short flag" "got the flag -tfoo" -p -tfoo
"$CTRACE" run ./nowhere --u > err.txt 2>&1; rc=$?
[ $rc = 2 ] && grep -q "unexpected argument '--u'" err.txt &&
  ok "ctrace run takes no prefix: --u is not --unsafe" || { bad "run --u (exit $rc)"; show err.txt; }
"$CTRACE" attribute -p "-- a comment, then a story" -t "$SET" -o dash.safetensors > out13.txt 2>&1 && test -s dash.safetensors &&
  ok "a prompt starting with -- that holds a space is a value, as argparse reads it" || { bad "prompt with --"; show out13.txt; }
"$CTRACE" attribute -p "Once upon a time" -t "$SET" --graph_file gdir --slug s > out14.txt 2>&1 && test -s gdir/s.json &&
  ok "--graph_file is a prefix of --graph_file_dir, as in argparse" || { bad "--graph_file"; show out14.txt; }
# --features_dir: the set's dashboards written as the feature files circuit-tracer's viewer reads
# for a local scan, checked by reading them as its JavaScript does (index.json.gz: per layer a
# file and byte offsets; each record a 4-byte length and zlib JSON; features named by the Cantor
# pair of layer and index, as the graph JSON's nodes name them)
mkdir feats
"$CTRACE" attribute -p "Once upon a time" -t "$SET" --features_dir feats --slug f --graph_file_dir fg > out15.txt 2>&1 &&
  SET="$SET" /usr/bin/python3 - > feats.txt 2>&1 <<'EOF'
import json, math, struct, zlib
index = json.loads(zlib.decompress(open("feats/index.json.gz", "rb").read()))
g = json.load(open("fg/f.json"))
feats = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]
dash = json.load(open(__import__("os").environ["SET"] + "/dashboards.json"))
for n in feats:
    z = n["feature"]                         # util.cantorUnpair
    w = math.floor((math.sqrt(8 * z + 1) - 1) / 2)
    idx = z - w * (w + 1) // 2
    layer = w - idx
    assert (layer, idx) == (int(n["layer"]), int(n["node_id"].split("_")[1])), n["node_id"]
    e = index[layer]
    start, end = e["offsets"][idx], e["offsets"][idx + 1]
    blob = open("feats/" + e["filename"], "rb").read()[start:end + 1]   # an HTTP range: end inclusive
    length = struct.unpack("<I", blob[:4])[0]
    f = json.loads(zlib.decompress(blob[4:4 + length]).decode("utf-8", "replace"))   # as pako's UTF-8 decoding reads it
    assert f["index"] == z and f["act_min"] <= f["act_max"]
    ex = f["examples_quantiles"][0]["examples"]
    fe = dash["layers"][layer][idx]
    assert len(ex) == len(fe["examples"])
    for x, y in zip(ex, fe["examples"]):
        assert len(x["tokens"]) == len(x["tokens_acts_list"]) and abs(x["tokens_acts_list"][x["train_token_ind"]] - y[2]) < 1e-6
    assert all(isinstance(t, str) for t in f["top_logits"] + f["bottom_logits"])
print(len(feats), sum(len(e["offsets"]) - 1 for e in index))
EOF
[ $? = 0 ] && grep -q "wrote the dashboards of" out15.txt &&
  ok "--features_dir: the set's dashboards as circuit-tracer's feature files (graph features read back: $(cat feats.txt))" ||
  { bad "--features_dir"; show out15.txt; show feats.txt; }

# the model is the one the set's config.yaml names
mkdir noname named
for f in "$SET"/layer_*.safetensors; do ln -s "$f" noname/; ln -s "$f" named/; done
grep -v model_name "$SET/config.yaml" > noname/config.yaml
sed 's/^model_name: .*/model_name: nosuch-org\/nosuch-model/' "$SET/config.yaml" > named/config.yaml
HF_HUB_OFFLINE=1 "$CTRACE" attribute -p x -t noname > out9.txt 2>&1
[ $? = 2 ] && grep -q "names no model_name; give the model with --model" out9.txt &&
  ok "a set naming no model: exit 2, asks for --model" || { bad "no model_name"; show out9.txt; }
HF_HUB_OFFLINE=1 "$CTRACE" attribute -p x -t named > out10.txt 2>&1
[ $? = 1 ] && grep -q "nosuch-org/nosuch-model" out10.txt && ! grep -q '\.lua:[0-9]' out10.txt &&
  ok "the model the config names is the one loaded (and its error has no Lua file:line)" || { bad "model_name"; show out10.txt; }
HF_HUB_OFFLINE=1 "$CTRACE" attribute -p "Once upon a time" -t named -m stories260K --slug m --graph_file_dir m > out11.txt 2>&1 &&
  test -s m/m.json && ok "-m overrides the config" || { bad "-m"; show out11.txt; }
HF_HUB_OFFLINE=1 CTRACE_TRACE=1 "$CTRACE" attribute -p x -t named > out12.txt 2>&1
grep -q "traceback" out12.txt && ok "CTRACE_TRACE=1: the traceback" || { bad "no traceback"; show out12.txt; }

# -o with --server (no --slug, no --graph_file_dir): the graph files go to the defaults and are served
"$CTRACE" attribute -p "Once upon a time" -t "$SET" -o srv.safetensors --server --port 0 > out16.txt 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q listening out16.txt && break; kill -0 $pid 2> /dev/null || break; sleep 0.1; done
grep -q listening out16.txt && test -s graphs/once-upon-a-time.json && test -s srv.safetensors &&
  ok "-o with --server: the full graph, and the graph files served from graphs/" || { bad "-o --server"; show out16.txt; }
kill -INT $pid 2> /dev/null; wait $pid 2> /dev/null; pid=

# start-server: circuit-tracer's name for serve
"$CTRACE" start-server --graph_file_dir graph_files --port 0 2> srv.txt &
pid=$!
for _ in $(seq 50); do grep -q listening srv.txt && break; sleep 0.1; done
port=$(grep listening srv.txt | grep -o "127.0.0.1:[0-9]*" | cut -d: -f2)
[ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/gemma-demo.json")" = 200 ] &&
  ok "start-server --graph_file_dir serves the graphs" || { bad "start-server"; show srv.txt; }
if [ -n "$port" ]; then
  "$CTRACE" serve graph_files --port "$port" > busy.txt 2>&1
  [ $? = 1 ] && grep -q "choose another port with --port" busy.txt &&
    ok "a busy port: exit 1 and the hint to choose another with --port" || { bad "busy port"; show busy.txt; }
else bad "a busy port: no server to collide with"; fi
kill -INT $pid; wait $pid 2> /dev/null; pid=
"$CTRACE" start-server > srv2.txt 2>&1
[ $? = 2 ] && grep -q "graph_file_dir" srv2.txt && ok "start-server without --graph_file_dir: exit 2 and its usage" ||
  { bad "start-server usage"; show srv2.txt; }
# --h is --help (argparse's prefix); --trace keeps Lua's file, line and traceback on an error
"$CTRACE" attribute --h > h.txt 2>&1 && grep -q "^usage: ctrace attribute" h.txt &&
  ok "--h: the usage, exit 0 (argparse reads it as --help)" || { bad "--h"; show h.txt; }
"$CTRACE" attribute -p "x" -t "$tmp/none" > t1.txt 2>&1
s1=$?
"$CTRACE" attribute -p "x" -t "$tmp/none" --trace > t2.txt 2>&1
s2=$?
[ $s1 = 1 ] && [ $s2 = 1 ] && ! grep -q '\.lua:[0-9]' t1.txt && grep -q '\.lua:[0-9]' t2.txt && grep -q "stack traceback" t2.txt &&
  ok "a failure: the message alone (exit 1); with --trace, Lua's file and line and the traceback" ||
  { bad "--trace"; show t1.txt; show t2.txt; }
# a misspelt model or set name: "did you mean"
"$CTRACE" attribute -p "x" -t stories260k > dy1.txt 2>&1
"$CTRACE" attribute -p "x" -t stories260K -m stories260k > dy2.txt 2>&1
grep -q "no transcoder set named 'stories260k' (did you mean 'stories260K'?)" dy1.txt &&
  grep -q "no model named 'stories260k' (did you mean 'stories260K'?)" dy2.txt &&
  ok "a misspelt set or model name: did you mean 'stories260K'?" || { bad "did you mean (names)"; show dy1.txt; show dy2.txt; }

# Ctrl-C during the feature rows: exit 130, the message on a line of its own after the progress
# line (whose time left counts the feature rows' own rate)
long=$(for i in 1 2 3 4 5 6; do printf 'Once upon a time there was a little girl named Lily who liked to play in the park. '; done)
"$CTRACE" attribute -p "$long" -t "$SET" --verbose -o long.pt > int.out 2> int.err &
pid=$!
for _ in $(seq 600); do grep -q "feature rows" int.err && break; kill -0 $pid 2> /dev/null || break; sleep 0.05; done
kill -INT $pid
wait $pid
st=$?
pid=
[ $st = 130 ] && grep -q "^ctrace attribute: CANCELLED: interrupted" int.err && grep -q "s left" int.err && test ! -e long.pt &&
  ok "Ctrl-C: exit 130, 'CANCELLED: interrupted' on its own line after the progress, no graph file" ||
  { bad "Ctrl-C (exit $st)"; show int.err; }
# --prompts FILE: a graph a prompt (plain lines and JSON lines with slug and targets), each as
# a single --prompt run writes it, all listed in graph-metadata.json in the file's order
printf 'Once upon a time\n\n{"prompt": "Lily had a dog", "slug": "dog"}\n{"prompt": "The sun was", "targets": [300, 301]}\n' > prompts.txt
"$CTRACE" attribute --prompts prompts.txt -t "$SET" --max_feature_nodes 200 --graph_file_dir many > many.log 2> many.err &&
  "$CTRACE" attribute -p "Lily had a dog" -t "$SET" --max_feature_nodes 200 --slug dog --graph_file_dir one > /dev/null 2>&1 &&
  cmp -s many/dog.json one/dog.json && cmp -s many/dog.html one/dog.html &&
  [ "$(grep -o '"slug":"[^"]*"' many/graph-metadata.json | tr '\n' ' ')" = '"slug":"1-once-upon-a-time" "slug":"dog" "slug":"3-the-sun-was" ' ] &&
  [ "$(grep '"slug":"dog"' one/graph-metadata.json)" = "$(grep '"slug":"dog"' many/graph-metadata.json | sed 's/,$//')" ] &&
  grep -q '"slug": *"3-the-sun-was"' many/3-the-sun-was.json && [ "$(grep -c '^prompt:' many.log)" = 3 ] &&
  ok "--prompts: 3 graphs and pages, each as --prompt writes it, listed in order in graph-metadata.json" ||
  { bad "--prompts"; show many.err; }
printf 'x\n{"prompt": 7}\n' > badprompts.txt
"$CTRACE" attribute --prompts badprompts.txt -t "$SET" > bp.txt 2>&1
[ $? = 1 ] && grep -q "badprompts.txt line 2: expected a prompt" bp.txt && ok "--prompts: a bad line named" || { bad "bad --prompts"; show bp.txt; }
# slugs from a stranger's prompt file: a path out of the directory, or two alike, refused before any work
printf '{"prompt": "x", "slug": "../escaped"}\n' > trav.txt
"$CTRACE" attribute --prompts trav.txt -t "$SET" --graph_file_dir tg > tr.txt 2>&1
[ $? = 1 ] && grep -q "slug '../escaped' may hold only" tr.txt && [ ! -e escaped.json ] && [ ! -e tg ] &&
  ok "--prompts: a slug leaving the directory refused, nothing written" || { bad "--prompts traversal"; show tr.txt; }
printf 'a\n{"prompt": "b", "slug": "1-a"}\n' > dup.txt
"$CTRACE" attribute --prompts dup.txt -t "$SET" --graph_file_dir dg > du.txt 2>&1
[ $? = 1 ] && grep -q "prompts 1 and 2 have the same slug '1-a'" du.txt && [ ! -e dg ] &&
  ok "--prompts: two prompts with one slug refused, nothing written" || { bad "--prompts duplicate slugs"; show du.txt; }
"$CTRACE" attribute --prompts prompts.txt -o x.pt > bp2.txt 2>&1
[ $? = 2 ] && grep -q "name a single graph" bp2.txt && ok "--prompts with -o: refused (exit 2)" || { bad "--prompts -o"; show bp2.txt; }

# --edge-heads: every link of the graph JSON carries its top heads by size (none for an edge no head
# carries: a last-layer feature into a logit), its residual and multi-hop parts
"$CTRACE" attribute -p "Once upon a time" -t "$SET" --edge-heads 3 --slug eh --graph_file_dir eh > eh.txt 2>&1
python3 - eh/eh.json > ehc.txt 2>&1 <<'PY'
import json, sys
links = json.load(open(sys.argv[1]))["links"]
bad = [l for l in links if not ("heads" in l and len(l["heads"]) <= 3 and "residual" in l and "multi_hop" in l and
       all(abs(a["weight"]) >= abs(b["weight"]) for a, b in zip(l["heads"], l["heads"][1:])))]
three = sum(len(l.get("heads", [])) == 3 for l in links)
print("%d links, %d with 3 heads, %d bad" % (len(links), three, len(bad)))
sys.exit(1 if bad or three < 100 else 0)
PY
[ $? = 0 ] && ok "--edge-heads 3: every link carries up to 3 heads by size, its residual and multi-hop parts: $(cat ehc.txt)" ||
  { bad "--edge-heads"; show eh.txt; show ehc.txt; }
"$CTRACE" attribute -p "x" -t "$SET" --edge-heads 9 > eh9.txt 2>&1
[ $? = 2 ] && grep -q "edge-heads 9: expected 1..8" eh9.txt && ok "--edge-heads 9 refused (exit 2)" || { bad "--edge-heads 9"; show eh9.txt; }

echo "1..$n"
exit $fail
