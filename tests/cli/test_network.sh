#!/usr/bin/env bash
# test_network.sh - Neuronpedia labels, Hugging Face downloads and the caches against a loopback
# server of our own (tests/net/server.py: fixtures, a fake hub and CDN, injected faults) on a
# random port. Sets up the server's files, points every endpoint and cache at it and at a
# temporary directory, runs tests/net/test_network.lua (the TAP stream), stops the server.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${CTRACE_BUILD:-build}/ctrace
. tests/net/server.sh
tmp=$(mktemp -d)
server=""
trap 'server_stop; rm -rf "$tmp"' EXIT

files=$tmp/files
mkdir -p $files/karpathy/tinyllamas/stories260K $files/test/slow $files/test/cut $files/test/norange $files/fault/wrongsha \
         $files/test/plain $files/test/gemma-tiny $files/test/scope-tiny
cp ../shared/models/stories260K/stories260K.bin ../shared/models/stories260K/tok512.bin $files/karpathy/tinyllamas/stories260K/
head -c 8000000 /dev/urandom > $files/test/slow/big.bin
for d in cut norange; do cp $files/test/slow/big.bin $files/test/$d/; done
cp $files/test/slow/big.bin $files/fault/wrongsha/
echo '{"hidden_size": 16}' > $files/test/plain/config.json
cp $files/test/plain/config.json $files/fault/wrongsha/
# the published repositories circuit-tracer loads by name, at tiny sizes, and a tiny Gemma-3 -it with
# the real tokenizer and chat template (test/gemma-3-tiny-it)
hub_files $files $tmp/gen || { echo "Bail out! the hub's files"; exit 1; }
# a tiny Gemma-2 checkpoint and GemmaScope-format set whose config lists its files as hf:// URIs
cp $tmp/gen/gemma-2-2b/* $files/test/gemma-tiny/
cp $tmp/gen/gemma-scope/*.npz $files/test/scope-tiny/
sed 's#^  - \(layer_.*\)$#  - hf://test/scope-tiny/\1#' $tmp/gen/gemma-scope/config.yaml > $files/test/scope-tiny/config.yaml
printf 'neuronpedia_model_id: gemma-2-2b\nneuronpedia_source_set: gemmascope-transcoder-16k\n' >> $files/test/scope-tiny/config.yaml
# broken ones: an index naming a shard the repository lacks; a checkpoint without weights; a set
# whose config lists nothing and whose folder holds no set files
mkdir -p $files/test/badindex $files/test/noweights $files/test/emptyset
cp $files/google/gemma-2-2b/config.json $files/google/gemma-2-2b/model-00001-of-00002.safetensors $files/test/badindex/
sed 's/model-00002-of-00002/model-00009-of-00009/' $files/google/gemma-2-2b/model.safetensors.index.json > $files/test/badindex/model.safetensors.index.json
cp $files/google/gemma-2-2b/config.json $files/test/noweights/
printf 'model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n' > $files/test/emptyset/config.yaml

server_start $files $tmp/server.log || { echo "Bail out! the test server did not start"; exit 1; }
port=${base##*:}

env -u HF_HUB_OFFLINE -u CTRACE_OFFLINE -u HF_HUB_CACHE -u CTRACE_CACHE \
  CT_TEST_BASE=http://127.0.0.1:$port CT_TEST_TMP=$tmp CTRACE_BIN=$CTRACE \
  HF_HOME=$tmp/hf HF_ENDPOINT=http://127.0.0.1:$port/hf HF_TOKEN=hf-secret-token \
  CTRACE_NEURONPEDIA_URL=http://127.0.0.1:$port/np NEURONPEDIA_API_KEY=np-secret-key XDG_CACHE_HOME=$tmp/cache \
  "$CTRACE" tests/net/test_network.lua
