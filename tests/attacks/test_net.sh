#!/usr/bin/env bash
# test_net.sh - attacks on ctrace's network code, against servers of our own on loopback.
#
# Downloads: a hostile Hugging Face endpoint and CDN (tests/attacks/fake_hub.py) that lies about
# sizes, sends endless bodies, dribbles bytes, never answers, or redirects to another host
# through a URL that starts with the endpoint's own; the same for Neuronpedia. Repository
# listings (snapshots) that name paths outside the repository or the cache, a commit that is a
# path, endless or looping pages, pages elsewhere, files answered for another commit. Each must fail
# within a generous bound, leave no file in the hub cache and little on disk, and HF_TOKEN /
# NEURONPEDIA_API_KEY (the SECRET) must reach no server but the configured one.
# ctrace serve: slow and stalled clients and a flood of connections must not block others nor
# Ctrl-C; symbolic links out of the directory, foreign Host headers and crafted file names must
# not leak the outside canary or inject markup.
set -u
cd "$(dirname "$0")/../.."
. tests/attacks/lib.sh

pids=()
stop_all() { local p; for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; pids=(); }
cleanups+=(stop_all)
ms() { echo $(($(date +%s%N) / 1000000)); }

# start_server LOG [HOST] [OFFSITE]: a fake_hub.py in the background; sets srv_port
start_server() {
  local out=$tmp/port.${#pids[@]}
  /usr/bin/python3 tests/attacks/fake_hub.py "$@" > "$out" 2>> "$tmp/server.err" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.1; done
  srv_port=$(awk '{print $2}' "$out")
  [ -n "$srv_port" ] || { echo "Bail out! fake_hub.py did not start"; cat "$tmp/server.err"; exit 1; }
}

# ---- the servers ------------------------------------------------------------------
start_server "$tmp/offsite.log" 127.0.0.2
offsite=127.0.0.2:$srv_port
start_server "$tmp/endpoint.log" 127.0.0.1 "$offsite"
port=$srv_port

cat > "$tmp/get.lua" <<'EOF'
-- get.lua hub hf://... | snap org/repo | np <model id>: one download, snapshot (of layer_*.safetensors)
-- or feature with the options in $NET_OPTS
local ct = require "ctrace"
local opts = assert(load("return {" .. (os.getenv("NET_OPTS") or "") .. "}"))()
local p, msg, code
if arg[1] == "snap" then
  ct.hub.configure(opts)
  p, msg, code = ct.hub.snapshot(arg[2], {"layer_*.safetensors"})
  if p then p = p .. " " .. table.concat(msg, ",") end
elseif arg[1] == "hub" then
  ct.hub.configure(opts)
  p, msg, code = ct.hub.file(arg[2])
else
  ct.neuronpedia.configure(opts)
  p, msg, code = ct.neuronpedia.feature(arg[2], "0-x", 1)
end
if not p then io.stderr:write(tostring(code), ": ", tostring(msg), "\n") os.exit(1) end
print(type(p) == "table" and "feature " .. p.model_id or p)
EOF

hf=$tmp/hf/hub
export HF_HOME=$tmp/hf HF_ENDPOINT=http://127.0.0.1:$port HF_TOKEN=$SECRET
export CTRACE_NEURONPEDIA_URL=http://127.0.0.1:$port/np NEURONPEDIA_API_KEY=$SECRET
export XDG_CACHE_HOME=$tmp/cache CTRACE_CACHE=$tmp/cache/ctrace
unset HF_HUB_OFFLINE CTRACE_OFFLINE HF_HUB_CACHE
FAKE=abababababababababababababababababababababababababababababababab   # the ETag fake_hub.py announces
COMMIT=0123456789abcdef0123456789abcdef01234567
outs=()

# fetch KIND WHAT OPTS: runs get.lua (killed after 120 s); sets st, secs (elapsed), log
fetch() {
  log=$tmp/out.$n.log
  outs+=("$log")
  local t0; t0=$(ms)
  NET_OPTS=$3 timeout -s KILL 120 "$CTRACE" "$tmp/get.lua" "$1" "$2" > "$log" 2>&1
  st=$?
  secs=$((($(ms) - t0) / 1000))
}

# no_file_kept NAME REPO: nothing but refs and locks in the repo's cache folder, and the whole
# cache under 2 MB
no_file_kept() {
  local left used
  left=$(find "$hf/models--attack--$2" -type f ! -path '*/refs/*' 2>/dev/null; find "$hf/models--attack--$2" -type l 2>/dev/null)
  used=$(du -sk "$tmp/hf" | cut -f1)
  if [ -z "$left" ] && [ "$used" -lt 2048 ]; then ok "$1: no file in the cache, ${used} KB on disk"
  else bad "$1: the cache keeps $left (${used} KB)"; fi
}

# download_attack NAME REPO OPTS EXPECT_CODE BOUND_S: the download fails with that code within
# the bound and keeps nothing
download_attack() {
  local name=$1 repo=$2
  canary "$hf/models--attack--$repo/blobs/$FAKE"
  canary "$hf/models--attack--$repo/snapshots/$COMMIT/f.bin"
  fetch hub "hf://attack/$repo/f.bin" "$3"
  attack "$name" $st "$log"
  if grep -q "^$4: " "$log" && [ $secs -le $5 ]; then ok "$name: $4 after ${secs} s (bound $5 s): $(head -c 160 "$log")"
  else bad "$name: expected $4 within $5 s, got status $st after ${secs} s"; show "$log"; fi
}

# ---- sizes ------------------------------------------------------------------------
download_attack "HEAD announces 100 bytes, GET sends an endless body" liar "retries = 2, backoff = 0.1" TOO_LARGE 30
no_file_kept "endless body after a 100-byte announcement" liar
download_attack "X-Linked-Size 100, the CDN sends an endless chunked body" linked "retries = 2, backoff = 0.1" TOO_LARGE 30
no_file_kept "endless chunked body from the CDN" linked
download_attack "GET announces 10 GB after HEAD announced 100 bytes" bigcl "retries = 2, backoff = 0.1" TOO_LARGE 30
no_file_kept "a Content-Length above the announced size" bigcl
download_attack "no size announced anywhere, endless body, max_file = 1 MiB" nosize "retries = 2, max_file = 1048576" TOO_LARGE 30
no_file_kept "an unannounced size over max_file" nosize
grep -q "sent [0-9]* bytes of an endless body" "$tmp/endpoint.log" &&
  [ "$(grep -o 'sent [0-9]*' "$tmp/endpoint.log" | awk '{s += $2} END {print s < 64 * 1048576}')" = 1 ] &&
  ok "the endless bodies were abandoned: $(grep -o 'sent [0-9]*' "$tmp/endpoint.log" | awk '{s += $2} END {print s}') bytes sent in all" ||
  bad "the endless bodies went on: $(grep 'sent' "$tmp/endpoint.log" | tr '\n' ' ')"
fetch hub hf://attack/nosize/f.bin "max_file = -1"
attack "max_file = -1 is refused" $st "$log"
grep -q "max_file.*expected.*got -1" "$log" && ok "the error names what max_file expects and what it got" || { bad "max_file error"; show "$log"; }

# ---- time ---------------------------------------------------------------------------
download_attack "a 1000-byte body at 2 bytes/s with timeout = 2 (the min_rate window)" dribble "timeout = 2, retries = 0" TIMEOUT 30
download_attack "the same with 2 retries: still bounded" dribble "timeout = 2, retries = 2, backoff = 0.1" TIMEOUT 45
download_attack "a server that never answers the GET, timeout = 2" silent "timeout = 2, retries = 1, backoff = 0.1" TIMEOUT 30
download_attack "a body fast enough for min_rate but longer than file_timeout = 2" trickle \
  "file_timeout = 2, retries = 3, backoff = 0.1" TIMEOUT 30
grep -q "file_timeout" "$log" && ok "the error names file_timeout" || { bad "file_timeout not named"; show "$log"; }
used=$(du -sk "$tmp/hf" | cut -f1)
[ "$used" -lt 4096 ] && ok "after every timeout the cache holds ${used} KB (partial files kept to resume, within their announced sizes)" ||
  bad "the cache grew to ${used} KB"

# ---- where the token goes ---------------------------------------------------------
fetch hub hf://attack/offsite/f.bin "retries = 0"
grep -q "attack/offsite/resolve" "$tmp/endpoint.log" && grep -q "/cdn/good" "$tmp/offsite.log" &&
  ok "the download followed the redirect to 127.0.0.1:$port@$offsite (status $st)" || { bad "no redirect followed"; show "$log"; }
no_secret "HF_TOKEN and a redirect to another host behind a URL starting with the endpoint's" "$tmp/offsite.log"
grep -q "Authorization: Bearer $SECRET" "$tmp/endpoint.log" && ok "HF_TOKEN still goes to the endpoint itself" ||
  bad "the endpoint never got HF_TOKEN"
fetch np offsite "retries = 0, cache = false"
grep -q "/np/api/feature/good" "$tmp/offsite.log" && ok "Neuronpedia's redirect to $offsite was followed (status $st)" ||
  { bad "no Neuronpedia redirect followed"; show "$log"; }
no_secret "NEURONPEDIA_API_KEY and a redirect to another host" "$tmp/offsite.log"

# ---- repository listings ----------------------------------------------------------
# snap_attack NAME REPO OPTS EXPECT_CODE BOUND_S WORDS: a snapshot of attack/REPO fails with that
# code within the bound, the message holding WORDS; no file of it is kept in the cache (its refs
# and the record of a listing that was valid aside)
snap_attack() {
  local name=$1 repo=$2 left
  fetch snap "attack/$repo" "$3"
  attack "$name" $st "$log"
  if grep -q "^$4: " "$log" && grep -qF -- "$6" "$log" && [ $secs -le $5 ]; then
    ok "$name: $4 after ${secs} s (bound $5 s): $(head -c 200 "$log")"
  else bad "$name: expected $4 ($6) within $5 s, got status $st after ${secs} s"; show "$log"; fi
  left=$(find "$hf/models--attack--$repo" \( -type f -o -type l \) ! -path '*/refs/*' ! -path '*/ctrace-listings/*' 2>/dev/null)
  [ -z "$left" ] && ok "$name: no file of it in the cache" || bad "$name: the cache keeps $left"
}
mkdir -p "$tmp/outside"
for f in layer_0.safetensors layer_1.safetensors config.yaml; do canary "$tmp/outside/$f"; done
canary /etc/layer_1.safetensors
LIST_SHA=abababababababababababababababababababab
snap_attack "a listing naming ../../outside/layer_1.safetensors" list-traversal "retries = 0" BAD_RESPONSE 30 \
  "names '../../outside/layer_1.safetensors'; expected a relative path inside the repository"
snap_attack "a listing naming /etc/layer_1.safetensors" list-absolute "retries = 0" BAD_RESPONSE 30 "names '/etc/layer_1.safetensors'"
snap_attack "a listing naming a file with a control character" list-control "retries = 0" BAD_RESPONSE 30 "names 'layer_?.safetensors'"
snap_attack "a commit named ../../../../outside" list-badsha "retries = 0" BAD_RESPONSE 30 \
  "expected 40 lowercase hexadecimal digits, found '../../../../outside'"
[ ! -e "$tmp/outside/layer_0.safetensors" ] && [ ! -e "$hf/models--attack--list-badsha/snapshots" ] &&
  ok "no snapshot directory made for that commit, in the cache or outside it" || bad "a snapshot directory was made"
snap_attack "an endless listing (max_body 64 MiB)" list-endless "retries = 0" TOO_LARGE 30 "67108864-byte limit"
snap_attack "an HTML page for a listing" list-html "retries = 0" BAD_RESPONSE 30 "text/html"
snap_attack "a listing at 2 bytes/s, timeout = 2" list-slow "timeout = 2, retries = 0" TIMEOUT 30 "within the time limit"
snap_attack "a listing redirected to another host" list-redirect "retries = 0" BAD_RESPONSE 30 "an API answer comes from the endpoint itself"
snap_attack "tree pages of 1,000 files without end" list-manyfiles "retries = 0" TOO_LARGE 60 "holds more than 100000 entries"
snap_attack "empty tree pages, each linking to itself" list-loop "retries = 0" BAD_RESPONSE 90 "goes on past 1000 pages"
snap_attack "a tree page whose next page is on another host" list-offsite "retries = 0" BAD_RESPONSE 30 \
  "the next page of the listing is at 'http://127.0.0.1:$port@$offsite"
snap_attack "a tree page naming a file in another folder" list-outside "retries = 0" BAD_RESPONSE 30 \
  "names 'other/layer_0.safetensors', which is not directly in it"
snap_attack "a file asked at the listed commit answered for another" list-commitswap "retries = 0" BAD_RESPONSE 30 \
  "asked at commit $LIST_SHA, the server answered for commit $COMMIT"
[ ! -e "$hf/models--attack--list-commitswap/refs/$LIST_SHA" ] && ok "and no refs/<commit> file was written for it" ||
  bad "refs/$LIST_SHA was written"
snap_attack "an honest listing, a file announced as 100 bytes and sent without end" list-liar "retries = 0" TOO_LARGE 30 \
  "more than the 100 bytes announced"
! grep -q "list-redirect\|list-offsite\|attack/good/revision" "$tmp/offsite.log" 2>/dev/null &&
  ok "no listing request reached the other host" || bad "a listing request reached $offsite"
no_secret "HF_TOKEN and the listing attacks" "$tmp/offsite.log"
canaries_hold && ok "nothing was written outside the cache by the listing attacks" || bad "a canary changed"

# ---- Neuronpedia ------------------------------------------------------------------
fetch np dribble "timeout = 2, retries = 0, cache = false"
attack "a Neuronpedia body at 2 bytes/s with timeout = 2" $st "$log"
grep -q "^TIMEOUT" "$log" && [ $secs -le 30 ] && ok "TIMEOUT after ${secs} s" || { bad "dribble: ${secs} s"; show "$log"; }
fetch np endless "max_body = 1000000, retries = 2, cache = false"
attack "an endless Neuronpedia body with max_body = 1 MB" $st "$log"
grep -q "^TOO_LARGE" "$log" && [ $secs -le 30 ] && ok "TOO_LARGE after ${secs} s" || { bad "endless: ${secs} s"; show "$log"; }
fetch np busy "retries = 20, backoff = 0.1, backoff_max = 2, file_timeout = 3, cache = false"
attack "429 with Retry-After: 1 forever, 20 retries, file_timeout = 3" $st "$log"
grep -q "^RATE_LIMITED\|^TIMEOUT" "$log" && [ $secs -le 30 ] && ok "gave up after ${secs} s: $(head -c 160 "$log")" ||
  { bad "busy: ${secs} s"; show "$log"; }
no_secret "no key in any output of ctrace" "${outs[@]}"
stop_all

# ---- ctrace serve -------------------------------------------------------------------
www=$tmp/www
mkdir -p "$www/sub" "$tmp/outside/dir"
secret_file "$tmp/outside/secret.html"
secret_file "$tmp/outside/dir/secret.json"
canary "$tmp/outside/secret.html"
canary "$tmp/outside/dir/secret.json"
echo '<p>graph page</p>' > "$www/page.html"
head -c 16000000 /dev/zero > "$www/big.bin"
ln -s "$tmp/outside/secret.html" "$www/link.html"
ln -s "$tmp/outside/dir" "$www/out"
mkfifo "$www/fifo.html"
crafted=('javascript:alert(1).html' '"><script>alert(1)<%2Fscript>.html' "x' onmouseover='alert(1).html" 'a&b<c>.html'
         ' javascript:alert(2).html')
for f in "${crafted[@]}"; do echo '<p>x</p>' > "$www/$f"; done

"$CTRACE" serve "$www" --port 0 2> "$tmp/serve.txt" &
spid=$!
pids+=($spid)
for _ in $(seq 100); do grep -q listening "$tmp/serve.txt" && break; sleep 0.1; done
sport=$(grep -o "127.0.0.1:[0-9]*" "$tmp/serve.txt" | head -1 | cut -d: -f2)
[ -n "$sport" ] || { echo "Bail out! ctrace serve did not start"; cat "$tmp/serve.txt"; exit 1; }
base=http://127.0.0.1:$sport

# get PATH [curl args...]: sets code and body (a file)
get() {
  local path=$1
  shift
  body=$tmp/body.$n
  outs+=("$body")
  code=$(curl -s --max-time 10 -o "$body" -w '%{http_code}' "$@" "$base$path")
}

/usr/bin/python3 tests/attacks/slow_client.py stall "$sport" 3 > "$tmp/stall.txt" &
pids+=($!)
/usr/bin/python3 tests/attacks/slow_client.py reader "$sport" big.bin > "$tmp/reader.txt" &
pids+=($!)
for _ in $(seq 50); do grep -q READY "$tmp/stall.txt" && grep -q READY "$tmp/reader.txt" && break; sleep 0.1; done
get /page.html
[ "$code" = 200 ] && grep -q "graph page" "$body" &&
  ok "with 3 stalled requests and a reader at 1 byte/s connected, another client is served" ||
  bad "a slow client blocks the others (HTTP $code)"
/usr/bin/python3 tests/attacks/slow_client.py stall "$sport" 100 > "$tmp/flood.txt" &
flood=$!
pids+=($flood)
for _ in $(seq 100); do grep -q READY "$tmp/flood.txt" && break; sleep 0.1; done
get /page.html
[ "$code" = 200 ] && ok "a flood of 100 stalled connections: a new client is still served" || bad "flood: HTTP $code"
kill -9 $flood 2>/dev/null; wait $flood 2>/dev/null
# (after the flood, which evicts the oldest stalled requests: this one is timed out later)
/usr/bin/python3 tests/attacks/slow_client.py closed "$sport" > "$tmp/closed.txt" &
closed_pid=$!

get /link.html
[ "$code" = 403 ] || [ "$code" = 404 ] && ! grep -qF "$SECRET" "$body" &&
  ok "a symbolic link to a file outside: HTTP $code, no content" || bad "link to a file outside: HTTP $code"
get /out/secret.json
[ "$code" = 403 ] || [ "$code" = 404 ] && ! grep -qF "$SECRET" "$body" &&
  ok "a symbolic link to a directory outside: HTTP $code, no content" || bad "link to a directory outside: HTTP $code"
get /%6Cink.html
[ "$code" = 403 ] || [ "$code" = 404 ] && ok "the link's name percent-encoded: HTTP $code" || bad "encoded link name: HTTP $code"
get /
! grep -q "link.html" "$body" && ok "the index does not list the link" || bad "the index lists link.html"
t0=$(ms)
get /fifo.html
[ "$code" = 404 ] && [ $(($(ms) - t0)) -lt 5000 ] && ok "a FIFO named .html: 404 without blocking" || bad "fifo: HTTP $code"

for h in evil.example evil.example:$sport 127.0.0.1.evil.example "localhost:$sport@evil.example" "[::1].evil" "127.0.0.1:80:80"; do
  get /page.html -H "Host: $h"
  if [ "$code" = 403 ] && ! grep -q "graph page" "$body"; then ok "Host: $h gets 403 and no content"
  else bad "Host: $h: HTTP $code"; show "$body"; fi
done
get / -H "Host: evil.example"
[ "$code" = 403 ] && ! grep -q "page.html" "$body" && ok "Host: evil.example gets no index either" || bad "index for evil.example: $code"
for h in "127.0.0.1:$sport" "localhost:$sport" "LOCALHOST" "[::1]:$sport"; do
  get /page.html -H "Host: $h"
  [ "$code" = 200 ] && ok "Host: $h is served" || bad "Host: $h: HTTP $code"
done
get /page.html -H "Host:"
[ "$code" = 400 ] && ok "HTTP/1.1 without Host: 400" || bad "HTTP/1.1 without Host: $code"
get /page.html --http1.0 -H "Host:"
[ "$code" = 200 ] && ok "HTTP/1.0 without Host is served" || bad "HTTP/1.0 without Host: $code"
code=$(printf 'GET /page.html HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n' |
       timeout 10 /usr/bin/python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', $sport)); s.sendall(sys.stdin.buffer.read()); print(s.recv(100).split()[1].decode())")
[ "$code" = 400 ] && ok "two Host headers: 400" || bad "two Host headers: $code"

get /
ok_names=1
for f in "${crafted[@]}"; do
  enc=$(/usr/bin/python3 -c 'import sys, urllib.parse; print("./" + urllib.parse.quote(sys.argv[1], safe="-._~"))' "$f")
  esc=$(/usr/bin/python3 -c 'import sys, html; print(html.escape(sys.argv[1], quote=True).replace("&#x27;", "&#39;"))' "$f")
  grep -qF "<li><a href=\"$enc\">$esc</a></li>" "$body" || { ok_names=0; echo "# not found escaped: $f"; }
done
hrefs=$(grep -o 'href="[^"]*"' "$body")
[ $ok_names = 1 ] && ! grep -q '<script\|href="javascript\|href=" *javascript' "$body" &&
  ! echo "$hrefs" | grep -qv '^href="\./[A-Za-z0-9._~%-]*"$' &&
  ok "crafted names are HTML-escaped, their links relative and percent-encoded" ||
  { bad "crafted names"; show "$body"; }
enc=$(/usr/bin/python3 -c 'import urllib.parse; print(urllib.parse.quote("javascript:alert(1).html"))')
get "/$enc"
[ "$code" = 200 ] && ok "and the encoded link reaches the file" || bad "encoded link: HTTP $code"

# the stalled half request line is closed by the server after 10 s (bound 40 s)
for _ in $(seq 400); do [ -s "$tmp/closed.txt" ] && break; sleep 0.1; done
c=$(cat "$tmp/closed.txt")
[ -n "$c" ] && awk "BEGIN {exit !($c >= 5 && $c <= 40)}" && ok "a half request line is dropped after $c s" ||
  bad "a stalled request was not dropped: '$c'"
wait $closed_pid 2>/dev/null

/usr/bin/python3 tests/attacks/slow_client.py stall "$sport" 3 > "$tmp/stall2.txt" &
pids+=($!)
/usr/bin/python3 tests/attacks/slow_client.py reader "$sport" big.bin > "$tmp/reader2.txt" &
pids+=($!)
for _ in $(seq 50); do grep -q READY "$tmp/stall2.txt" && grep -q READY "$tmp/reader2.txt" && break; sleep 0.1; done
sleep 0.5
t0=$(ms)
kill -INT $spid
while [ $(($(ms) - t0)) -lt 5000 ] && kill -0 $spid 2>/dev/null && ! grep -q '^State:.*Z' /proc/$spid/status 2>/dev/null; do
  sleep 0.02
done
dt=$(($(ms) - t0))
wait $spid 2>/dev/null
[ $dt -le 1000 ] && ok "Ctrl-C with slow clients connected stops the server in $dt ms" || bad "Ctrl-C took $dt ms"

no_secret "no outside content in any response" "${outs[@]}"
canaries_intact
finish
