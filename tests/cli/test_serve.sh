#!/usr/bin/env bash
# test_serve.sh - ctrace attribute (a graph, its metadata and viewer page without a script) and
# ctrace serve (the directory on 127.0.0.1: files byte for byte, 404, no way out of the directory,
# Ctrl-C stops it).
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }

"$CTRACE" attribute --prompt "Once upon a time" --graph-dir "$tmp/g" --slug once --max-feature-nodes 200 \
  -o "$tmp/once.safetensors" > "$tmp/out.txt" 2>&1 &&
  test -s "$tmp/g/once.json" -a -s "$tmp/g/once.html" -a -s "$tmp/g/graph-metadata.json" -a -s "$tmp/once.safetensors" &&
  ok "ctrace attribute writes the graph, graph-metadata.json, the viewer page and the full graph" ||
  { bad "ctrace attribute"; sed 's/^/#   /' "$tmp/out.txt"; }
grep -q "replacement" "$tmp/out.txt" && ok "and prints the summary" || bad "no summary"
"$CTRACE" attribute --prompt "x" --node-threshold abc > /dev/null 2>&1; [ $? -eq 2 ] && ok "a bad number exits 2" || bad "bad number"

"$CTRACE" serve "$tmp/g" --port 0 2> "$tmp/serve.txt" &
pid=$!
for i in $(seq 50); do grep -q listening "$tmp/serve.txt" && break; sleep 0.1; done
port=$(grep listening "$tmp/serve.txt" | grep -o "127.0.0.1:[0-9]*" | cut -d: -f2)
[ -n "$port" ] && ok "serving on port $port" || bad "no port: $(cat "$tmp/serve.txt")"
curl -s "http://127.0.0.1:$port/once.html" -o "$tmp/got.html" && cmp -s "$tmp/got.html" "$tmp/g/once.html" &&
  ok "the viewer page, byte for byte" || bad "viewer page"
curl -s "http://127.0.0.1:$port/once.json" -o "$tmp/got.json" && cmp -s "$tmp/got.json" "$tmp/g/once.json" &&
  ok "the graph JSON, byte for byte" || bad "graph JSON"
ct=$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$port/once.json")
[ "$ct" = application/json ] && ok "content type $ct" || bad "content type $ct"
curl -s "http://127.0.0.1:$port/" | grep -q 'once.html' && ok "/ lists the pages" || bad "index"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/missing.json")
[ "$code" = 404 ] && ok "missing file: 404" || bad "missing file: $code"
code=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/../../etc/passwd")
[ "$code" = 400 ] && ok "a path leaving the directory: 400" || bad "traversal: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/%2e%2e/%2e%2e/etc/passwd")
[ "$code" = 400 ] && ok "an encoded path leaving the directory: 400" || bad "encoded traversal: $code"
kill -INT $pid
for i in $(seq 30); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && bad "still running after Ctrl-C" || ok "Ctrl-C stops the server"
pid=
echo "1..$n"
exit $fail
