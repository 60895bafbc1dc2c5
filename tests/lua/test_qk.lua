-- test_qk.lua - rm:qk on stories260K with its default transcoders through the public API: one key's
-- score split into pairs (the terms sum to the score; the pairs sorted, with their nodes, values and
-- probability shifts), the whole row (every key the query sees, each as its own split, probabilities
-- summing to 1), the same numbers on a second call, and bad input refused with a message.
-- The C tests (tests/c/test_qk.c) check the split against the frozen model on every family.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local prompt = "Once upon a time, there was a little girl named Lily. She"
local T = #m:tokenize(prompt)

local r = rm:qk(prompt, {layer = 4, head = 1, key = 12, top = 8})
t.ok(r.layer == 4 and r.head == 1 and r.query == T - 1 and r.key == 12, "one key: layer, head, query (the last), key")
t.ok(math.abs(r.total - r.score) <= 1e-5 * math.abs(r.score), string.format("the terms sum to the score %.6g (%.6g)", r.score, r.total))
t.ok(r.prob > 0 and r.prob < 1, string.format("the attention probability %.6g", r.prob))
local sorted, kinds = #r.terms == 8, {}
for i, term in ipairs(r.terms) do
  sorted = sorted and (i == 1 or math.abs(term.value) <= math.abs(r.terms[i - 1].value))
  sorted = sorted and type(term.query.node_id) == "string" and type(term.key.node_id) == "string"
  -- a pair that raises the score raises the probability, and by at most what the key has
  sorted = sorted and (term.value >= 0) == (term.shift >= 0) and term.shift <= r.prob
  kinds[term.query.kind] = true
  kinds[term.key.kind] = true
end
t.ok(sorted, "8 terms by size, each with its nodes and a shift of the probability's sign")
t.ok(kinds.constant and kinds.feature, "the constants and features among the top pairs")
local q = r.terms[1].query
t.ok(q.kind ~= "feature" or (q.layer < 4 and q.pos <= T - 1 and q.activation ~= 0 and q.node_id == string.format("%d_%d_%d", q.layer, q.feature, q.pos)),
     "a feature node: layer below the head's, position up to the query, activation, graph JSON id")

local again = rm:qk(prompt, {layer = 4, head = 1, key = 12, top = 8})
local same = again.score == r.score and again.total == r.total
for i = 1, #r.terms do same = same and again.terms[i].value == r.terms[i].value and again.terms[i].key.node_id == r.terms[i].key.node_id end
t.ok(same, "the same numbers on a second call")

local row = rm:qk(prompt, {layer = 4, head = 1, top = 3})
local psum, row_ok = 0, #row.keys == T
for i, k in ipairs(row.keys) do
  psum = psum + k.prob
  row_ok = row_ok and k.key == i - 1 and #k.terms == 3 and math.abs(k.total - k.score) <= 1e-5 * math.abs(k.score) + 1e-6
end
t.ok(row_ok, string.format("the row: %d keys, each with 3 terms summing to its score", #row.keys))
t.ok(math.abs(psum - 1) <= 1e-9, string.format("the row's probabilities sum to %.12g", psum))
local k12 = row.keys[13]
t.ok(k12.score == r.score and k12.prob == r.prob and k12.terms[1].query.node_id == r.terms[1].query.node_id,
     "key 12 of the row is the one-key split's")

local function refuses(opts, want, what)
  local okc, e = pcall(rm.qk, rm, prompt, opts)
  t.ok(not okc and tostring(e):find(want, 1, true), what .. ": " .. tostring(e))
end
refuses({layer = 5, head = 1, key = 0}, "layer 5 head 1; the model has layers 0..4", "a layer past the last")
refuses({layer = 0, head = 8, key = 0}, "heads 0..7", "a head past the last")
refuses({layer = 0, head = 0, key = T}, "expected 0 <= key <= query", "a key after the query")
refuses({layer = 0, head = 0, key = 3, query = 2}, "expected 0 <= key <= query", "a query before the key")
refuses({layer = 0, head = 0, key = -1}, "expected 0 <= key <= query", "a negative key")
refuses({layer = 0, head = 0, key = 1.5}, "option 'key' expects an integer, got number", "a fractional key")
refuses({layer = 0, head = 0, key = 1, top = 0}, "top must be in 1..100000, got 0", "no pairs")
refuses({head = 0, key = 1}, "option 'layer' expects an integer, got nil", "no layer")
refuses({layer = 0, head = 0, keys = 1}, "keys", "an unknown option")
t.done()
