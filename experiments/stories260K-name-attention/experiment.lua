-- Why does the head that carries a name look at the name? After "Once upon a time, there was a
-- little girl named Lily. One day," stories260K says " Lily". The graph of the logit difference
-- " Lily" - " she", its edges split by attention heads, names the head that moves most from the
-- name's position to the last one; QK attribution splits that head's score there into pairs of
-- query-side and key-side nodes; and the explanation is tested by taking the top key-side feature
-- out: in the frozen model with only that layer's attention free the pattern must move exactly as
-- the split predicts; in the real model (free propagation) we report how far it does.
--   ctrace run experiments/stories260K-name-attention
--   ctrace check experiments/stories260K-name-attention
local ct = require "ctrace"

local out = ct.results_dir(arg and arg[0])
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local tok = m:tokenizer()
local prompt = "Once upon a time, there was a little girl named Lily. One day,"
local ids = m:tokenize(prompt)
local T, last = #ids, #ids - 1
local lily, she = tok:token_to_id(" Lily"), tok:token_to_id(" she")
local name_pos
for i = #ids, 1, -1 do if ids[i] == lily then name_pos = i - 1 break end end
local function r6(x) return math.floor(x * 1e6 + 0.5) / 1e6 end

-- 1. the graph of " Lily" - " she", pruned, every kept edge split by heads (top 3 in the JSON)
local u = ct.zeros(m.d_model)
local ul, us = m:unembedding(lily), m:unembedding(she)
for i = 1, m.d_model do u:set(i, ul:get(i) - us:get(i)) end
local g = rm:attribute(prompt, {targets = {{vector = u, label = "Lily - she", weight = 1}}, verbose = false})
local pg = g:prune{heads = 3}
pg:save_json(out .. "/lily-vs-she-heads.json", {slug = "lily-vs-she-heads", scan = "stories260K"})

-- 2. the head carrying the most from the name's position to the last: each head's one-hop parts
-- summed over the kept edges from a node at the name's position into one at the last position
local by_head, n_edges = {}, 0
for _, t in ipairs(pg:nodes()) do
  if t.pos == last and (t.kind == "feature" or t.kind == "logit") then
    for _, e in ipairs(pg:edges_in(t)) do
      if e.node.pos == name_pos then
        n_edges = n_edges + 1
        for _, h in ipairs(pg:edge_heads(e.node, t).heads) do
          local k = h.layer * m.n_heads + h.head
          by_head[k] = (by_head[k] or 0) + h.value
        end
      end
    end
  end
end
local heads = {}
for k, v in pairs(by_head) do heads[#heads + 1] = {layer = math.floor(k / m.n_heads), head = k % m.n_heads, sum = v} end
table.sort(heads, function(a, b)
  if math.abs(a.sum) ~= math.abs(b.sum) then return math.abs(a.sum) > math.abs(b.sum) end
  return a.layer * m.n_heads + a.head < b.layer * m.n_heads + b.head
end)
local H = heads[1]

-- 3. why it attends there: its score from the last position to the name split into pairs, and the
-- whole row (where else it looks)
local qk = rm:qk(prompt, {layer = H.layer, head = H.head, key = name_pos, top = 12})
local row = rm:qk(prompt, {layer = H.layer, head = H.head, top = 1})

-- 4. the test: take out the top pair's key-side node (a token: its embedding at the name's
-- position) and the key-side feature there with the largest terms among the top pairs (scale 0).
-- The split predicts the row of probabilities without the node (its parts gone from the query and
-- from every key); the frozen model with only this layer's attention free must give exactly that;
-- the real model (free propagation: later features, norms and every pattern respond) shows how much
-- of it survives there.
local key_sum, key_node = {}, {}
for _, t in ipairs(qk.terms) do
  if t.key.kind == "feature" and t.key.pos == name_pos then
    key_sum[t.key.node_id] = (key_sum[t.key.node_id] or 0) + t.value
    key_node[t.key.node_id] = t.key
  end
end
local best
for id, v in pairs(key_sum) do
  if not best or math.abs(v) > math.abs(key_sum[best]) or (math.abs(v) == math.abs(key_sum[best]) and id < best) then best = id end
end
local hook = "blocks." .. H.layer .. ".attn.hook_pattern"
local function p_at(r, key) return r.hooks[hook]:get(H.head + 1, T, key + 1) end
local function test(node, iv)
  local pred = rm:qk(prompt, {layer = H.layer, head = H.head, top = 1, without = node})
  local frozen = rm:intervene(prompt, {iv}, {constrained_layers = "all", free_attention_layer = H.layer, hooks = {hook},
                                             activations = false})
  local free = rm:intervene(prompt, {iv}, {freeze_attention = false, hooks = {hook}, activations = false})
  local worst = 0
  for _, k in ipairs(pred.keys) do worst = math.max(worst, math.abs(p_at(frozen, k.key) - k.prob_without)) end
  local at = pred.keys[name_pos - pred.keys[1].key + 1]
  return {node = node.node_id, prob = r6(at.prob), predicted = r6(at.prob_without), frozen = r6(p_at(frozen, name_pos)),
          frozen_within_1e5 = worst < 1e-5, free = r6(p_at(free, name_pos)),
          free_share = r6((at.prob - p_at(free, name_pos)) / (at.prob - at.prob_without))}, worst
end
local top_key = qk.terms[1].key
local f = key_node[best]
local tests, worst = {}, {}
tests[1], worst[1] = test(top_key, top_key.kind == "token" and {token = true, pos = top_key.pos, scale = 0}
                                   or {layer = top_key.layer, pos = top_key.pos, feature = top_key.feature, scale = 0})
tests[2], worst[2] = test(f, {layer = f.layer, pos = f.pos, feature = f.feature, scale = 0})
tests[2].key_terms = r6(key_sum[best])
for i = 1, 2 do io.stderr:write(string.format("test %d (%s): worst key off by %.3g in the frozen model\n", i, tests[i].node, worst[i])) end

-- the report
local summary = {
  prompt = prompt, name_pos = name_pos, last = last,
  graph = {nodes = pg:info().n_kept, edges = pg:info().n_edges, edges_name_to_last = n_edges},
  heads = {}, head = {layer = H.layer, head = H.head, prob = r6(qk.prob), score = r6(qk.score), total = r6(qk.total)},
  row = {}, top_pairs = {}, tests = tests,
}
for i = 1, 5 do summary.heads[i] = {layer = heads[i].layer, head = heads[i].head, sum = r6(heads[i].sum)} end
for _, k in ipairs(row.keys) do summary.row[#summary.row + 1] = {key = k.key, token = tok:id_to_token(ids[k.key + 1]), prob = r6(k.prob)} end
for i, t in ipairs(qk.terms) do
  summary.top_pairs[i] = {query = t.query.node_id, key = t.key.node_id, value = r6(t.value), shift = r6(t.shift)}
end
ct.write_json(out .. "/summary.json", summary)
local lines = {"term,query,key,value,shift"}
for i, t in ipairs(qk.terms) do lines[#lines + 1] = string.format("%d,%s,%s,%.6f,%.6f", i, t.query.node_id, t.key.node_id, t.value, t.shift) end
ct.write_file(out .. "/qk-pairs.csv", table.concat(lines, "\n") .. "\n")
print(ct.json_encode(summary, true))
