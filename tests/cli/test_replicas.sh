#!/usr/bin/env bash
# test_replicas.sh - the replicas of the published models and transcoder sets (bench/replicas):
# at full depth, the planned tensor bytes are the published sizes and the config.yaml texts are
# the published ones byte for byte; at 2 layers (same widths and vocabularies) every target's
# files read as their formats (tests/ref/check_replicas.py: safetensors headers and indexes, npz
# members, config.json keys, config.yaml as circuit-tracer reads it), load into ctrace from a
# directory (hf:// entries of a config through a loopback hub), fit their model, and have about
# the published number of active features on a prompt the calibration never saw
# (tests/cli/replicas.lua). The same seed gives the same bytes. One model family at a time is on
# disk (the 2-layer Gemma-2 is 3 GB, its embedding alone 2.4 GB), removed when its checks end.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${CTRACE_BUILD:-build}/ctrace
PY=/usr/bin/python3
GEN="$PY bench/replicas/replicas.py"
CHECK="$PY tests/ref/check_replicas.py"
tmp=$(mktemp -d)
out=$tmp/out
server=""
trap '[ -n "$server" ] && { kill -9 $server; wait $server; } 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$out"
n=0
fail=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; [ -n "${2:-}" ] && echo "$2" | tail -25 | sed 's/^/#   /'; }

# check_replicas.py's TAP lines as one test: ok when all of its checks pass
check() {
  local what=$1 res
  shift
  if res=$($CHECK "$@" 2>&1); then ok "$what ($(echo "$res" | tail -1 | sed 's/^# //'))"
  else not_ok "$what" "$(echo "$res" | grep -v '^ok ')"; fi
}

# replicas.lua's lines, numbered here; ctrace failing outright is a failure too
lua() {
  local res rc line
  res=$(HF_HOME=$tmp/hf HF_ENDPOINT=http://127.0.0.1:$port/hf "$CTRACE" tests/cli/replicas.lua "$@" 2>&1)
  rc=$?
  while IFS= read -r line; do
    case $line in
      "ok - "*) ok "${line#ok - }" ;;
      "not ok - "*) not_ok "${line#not ok - }" ;;
      "#"*) echo "$line" ;;
    esac
  done <<< "$res"
  [ $rc = 0 ] || not_ok "ctrace tests/cli/replicas.lua $1 ran to the end" "$res"
}

# a check that must fail: replicas.lua or check_replicas.py reporting "not ok" on a line
# matching PATTERN (and nothing failing outright) is a pass
must_fail() {
  local what=$1 pattern=$2 res
  shift 2
  res=$("$@" 2>&1)
  if echo "$res" | grep "^not ok" | grep -q -- "$pattern"; then
    ok "$what is caught: $(echo "$res" | grep -m1 -- "$pattern" | cut -c1-110)"
  else not_ok "$what is caught" "$res"; fi
}

gen() {
  local res t0=$SECONDS
  if res=$($GEN "$out" "$@" 2>&1); then ok "generated $* in $((SECONDS - t0)) s: $(echo "$res" | tail -1 | sed 's/^replicas: //')"
  else not_ok "replicas.py $*" "$res"; fi
}

# ---- full depth: sizes and texts (nothing written but the texts)
if $GEN --plan gemma-2-2b llama-3.2-1b qwen3-0.6b gemma-3 > $tmp/plan 2>&1; then check "planned sizes at full depth" --plan $tmp/plan
else not_ok "replicas.py --plan" "$(cat $tmp/plan)"; fi
if $GEN $tmp/texts --texts > $tmp/texts.log 2>&1; then check "config.yaml texts at full depth" --texts $tmp/texts
else not_ok "replicas.py --texts" "$(cat $tmp/texts.log)"; fi

# ---- errors are named
res=$($GEN "$out" no/such-repo --layers 2 2>&1) && not_ok "an unknown target is refused" "$res" ||
  { echo "$res" | grep -q "unknown target 'no/such-repo'; expected one of" && ok "an unknown target is refused, naming it" ||
    not_ok "an unknown target is refused, naming it" "$res"; }
res=$($GEN "$out" google/gemma-3-270m --gemmascope-l0 3 2>&1) && not_ok "--gemmascope-l0 3 is refused" "$res" ||
  { echo "$res" | grep -q "expects a comma list of 0, 1, 2; got '3'" && ok "--gemmascope-l0 3 is refused, naming it" ||
    not_ok "--gemmascope-l0 3 is refused, naming it" "$res"; }

# ---- deterministic: the same seed gives the same bytes, another seed others
for d in a b c; do
  seed=0; [ $d = c ] && seed=1
  $PY bench/replicas/replicas.py $tmp/det-$d mwhanna/gemma-scope-2-270m-pt --layers 1 --gs2-layout b --seed $seed > /dev/null 2>&1
done
if diff -r $tmp/det-a $tmp/det-b > /dev/null && [ -s $tmp/det-a/google/gemma-scope-2-270m-pt/transcoder_all/layer_0_width_16k_l0_small_affine/params.safetensors ]; then
  ok "the same seed, the same bytes"
else not_ok "the same seed, the same bytes"; fi
cmp -s $tmp/det-a/google/gemma-scope-2-270m-pt/transcoder_all/layer_0_width_16k_l0_small_affine/params.safetensors \
  $tmp/det-c/google/gemma-scope-2-270m-pt/transcoder_all/layer_0_width_16k_l0_small_affine/params.safetensors &&
  not_ok "another seed, other weights" || ok "another seed, other weights"
rm -rf $tmp/det-*

# ---- the loopback hub serving the replicas (hf:// entries of configs)
$PY tests/net/server.py ../shared/reference/fixtures/neuronpedia "$out" > $tmp/port 2> $tmp/server.log &
server=$!
for _ in $(seq 100); do [ -s $tmp/port ] && break; sleep 0.1; done
port=$(awk '{print $2}' $tmp/port)
[ -n "$port" ] || { echo "Bail out! the loopback hub did not start"; cat $tmp/server.log; exit 1; }

L0_0=76,65 L0_1=115,104 L0_2=165,173   # the bundled GemmaScope variants' first two layers

# ---- Gemma-2-2B: the model in shards, the GemmaScope sets in every form, the 426k CLT
G=$out/google/gemma-2-2b
gen google/gemma-2-2b --layers 2 --max-shard-size 1000000000
check "google/gemma-2-2b" "$out" google/gemma-2-2b --layers 2
gen google/gemma-scope-2b-pt-transcoders mntss/gemma-scope-transcoders decoderesearch/circuit-tracer \
  mwhanna/gemma-scope-transcoders --layers 2 --gemmascope-l0 0,1,2
for t in google/gemma-scope-2b-pt-transcoders mntss/gemma-scope-transcoders decoderesearch/circuit-tracer \
         mwhanna/gemma-scope-transcoders; do
  check "$t" "$out" $t --layers 2
done
lua l0 $G $out/mwhanna/gemma-scope-transcoders $L0_0
lua l0 $G $out/mntss/gemma-scope-transcoders $L0_0                   # list form: hf:// npz through the hub
lua same $out/mwhanna/gemma-scope-transcoders $out/mntss/gemma-scope-transcoders $G
lua l0 $G gemma $L0_0                                                 # circuit-tracer's short name, through the hub
must_fail "an L0 three times the target" "L0 per layer" "$CTRACE" tests/cli/replicas.lua l0 $G $out/mwhanna/gemma-scope-transcoders 228,195
# circuit-tracer's bundled configs before August 2025 (transcoders as a list of maps of id, layer
# and filepath) load as they are, hf:// npz through the hub
lua l0 $G $out/decoderesearch/circuit-tracer/circuit_tracer/configs/gemmascope-l0-0.yaml $L0_0
lua l0 $G $out/decoderesearch/circuit-tracer/circuit_tracer/configs/gemmascope-l0-1.yaml $L0_1
lua l0 $G $out/decoderesearch/circuit-tracer/circuit_tracer/configs/gemmascope-l0-2.yaml $L0_2
rm -rf $out/google/gemma-scope-2b-pt-transcoders $out/mwhanna/gemma-scope-transcoders $tmp/hf
gen mntss/clt-gemma-2-2b-426k --layers 2
check "mntss/clt-gemma-2-2b-426k" "$out" mntss/clt-gemma-2-2b-426k --layers 2
lua l0 $G $out/mntss/clt-gemma-2-2b-426k 11,11
rm -rf $out/google/gemma-2-2b $out/mntss $out/decoderesearch

# ---- Llama-3.2-1B: the model, its per-layer set (W_skip) and the 524k CLT
M=$out/meta-llama/Llama-3.2-1B
gen meta-llama/Llama-3.2-1B mntss/transcoder-Llama-3.2-1B mntss/clt-llama-3.2-1b-524k --layers 2
for t in meta-llama/Llama-3.2-1B mntss/transcoder-Llama-3.2-1B mntss/clt-llama-3.2-1b-524k; do
  check "$t" "$out" $t --layers 2
done
lua l0 $M $out/mntss/transcoder-Llama-3.2-1B 64,64
lua l0 $M $out/mntss/clt-llama-3.2-1b-524k 11,11
rm -rf $out/meta-llama $out/mntss

# ---- Qwen3-0.6B: the model (lm_head stored) and the low-L0 per-layer set
gen Qwen/Qwen3-0.6B mwhanna/qwen3-0.6b-transcoders-lowl0 --layers 2
for t in Qwen/Qwen3-0.6B mwhanna/qwen3-0.6b-transcoders-lowl0; do check "$t" "$out" $t --layers 2; done
lua l0 $out/Qwen/Qwen3-0.6B $out/mwhanna/qwen3-0.6b-transcoders-lowl0 50,50
lua roundtrip $out/Qwen/Qwen3-0.6B $out/mwhanna/qwen3-0.6b-transcoders-lowl0
rm -rf $out/Qwen $out/mwhanna

# ---- Gemma-3: the models, and the GemmaScope-2 sets in both layouts (a: circuit-tracer layer
# files; b: a config listing Google's params.safetensors). Activity is measured on the prompt, as
# for the other families, and on mlp.hook_in rows made from each model's stored norm gains (the
# rows the calibration used), where both layouts must agree.
for size in 270m 1b; do
  for v in pt it; do
    if [ $size = 270m ]; then model=google/gemma-3-270m; else model=google/gemma-3-1b-$v; fi
    [ -d $out/$model ] || { gen $model --layers 2; check "$model" "$out" $model --layers 2; }
    set=mwhanna/gemma-scope-2-$size-$v
    gen $set --layers 2 --gs2-layout b
    $PY bench/replicas/replicas.py $tmp/a $set --layers 2 --gs2-layout a > /dev/null 2>&1
    check "$set, layout b" "$out" $set --layers 2
    check "$set, layout a" $tmp/a $set --layers 2
    check "$set: layouts a and b" --same $tmp/a "$out"
    if [ $set = mwhanna/gemma-scope-2-270m-pt ]; then   # the checker catches broken files
      sub=$tmp/a/$set/transcoder_all/width_16k_l0_small_affine
      sed -i 's/mlp.hook_in/hook_resid_mid/' $sub/config.yaml
      must_fail "a config.yaml with another input hook" "hooks mlp.hook_in" $CHECK $tmp/a $set --layers 2
      sed -i 's/hook_resid_mid/mlp.hook_in/' $sub/config.yaml
      printf 'x' >> $sub/layer_1.safetensors
      must_fail "a byte past a layer file's tensors" "data holds" $CHECK $tmp/a $set --layers 2
      $PY bench/replicas/replicas.py $tmp/a $set --layers 2 --gs2-layout a --seed 1 > /dev/null 2>&1
      must_fail "layouts a and b of other seeds" "the same numbers" $CHECK --same $tmp/a "$out"
      $PY bench/replicas/replicas.py $tmp/a $set --layers 2 --gs2-layout a > /dev/null 2>&1
    fi
    lua l0 $out/$model $out/$set/transcoder_all/width_16k_l0_small_affine 15,15
    check "$model: mlp.hook_in rows" --inputs "$out" $model 12 $tmp/rows.json
    lua inputs $out/$set/transcoder_all/width_16k_l0_small_affine $tmp/rows.json 15,15 \
      $tmp/a/$set/transcoder_all/width_16k_l0_small_affine
    rm -rf $tmp/a $out/mwhanna $out/google/gemma-scope-2-* $tmp/hf
  done
  rm -rf $out/google
done

echo "1..$n"
exit $fail
