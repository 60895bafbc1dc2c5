#!/usr/bin/env bash
# Labels for a stories260K graph's features from a Neuronpedia-like server on loopback
# (tests/net/server.py, which takes 50 ms per batch request as a real server takes a while):
# the batch path at concurrency 1 and 4, and one GET per feature, with the label cache off.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
server=""
trap '[ -n "$server" ] && { kill -9 $server; wait $server; } 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p $tmp/files
python3 tests/net/server.py ../shared/reference/fixtures/neuronpedia $tmp/files > $tmp/port &
server=$!
for _ in $(seq 50); do [ -s $tmp/port ] && break; sleep 0.1; done
CTRACE_NEURONPEDIA_URL=http://127.0.0.1:$(awk '{print $2}' $tmp/port)/np XDG_CACHE_HOME=$tmp/cache build/ctrace bench/labels.lua
