-- test_qk.lua - attention on stories260K with its default transcoders through the public API.
-- rm:qk: one key's score split into pairs (the terms sum to the score; the pairs sorted, with their
-- nodes, values and probability shifts), the whole row (every key the query sees, each as its own
-- split, probabilities summing to 1), the same numbers on a second call, bad input refused.
-- g:edge_heads: a pruned graph's edges split by heads (the parts sum to the edge; no head above the
-- last layer; a source at another position has no residual part), pruned edges and graphs from
-- files refused with a message. The C tests (tests/c/test_qk.c, test_heads.c) check both against
-- the frozen model on every family.
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

-- head-resolved edges
local g = rm:attribute(prompt, {verbose = false})
local pg = g:prune{}
local logit = pg:nodes("logit")[1]
local n_edges, sums, cross, last = 0, true, 0, nil
local targets = pg:top_features{n = 4}
table.insert(targets, 1, logit)
for _, target in ipairs(targets) do
  for _, e in ipairs(pg:edges_in(target, {n = 6})) do
    local r = pg:edge_heads(e.node, target)
    local total = r.residual + r.multi
    for i, h in ipairs(r.heads) do
      total = total + h.value
      sums = sums and (i == 1 or math.abs(h.value) <= math.abs(r.heads[i - 1].value)) and h.layer >= 0 and h.head < 8
    end
    sums = sums and r.edge == e.weight and math.abs(total - r.edge) <= 1e-9 * (1 + math.abs(r.edge))
    if e.node.pos ~= target.pos then
      cross = cross + 1
      sums = sums and r.residual == 0 and #r.heads > 0
    end
    if target.kind == "logit" and e.node.kind == "feature" and e.node.layer == 4 then last = r end
    n_edges = n_edges + 1
  end
end
t.ok(n_edges >= 20 and cross > 0 and sums, string.format("%d edges (%d across positions): residual, heads by size and the " ..
     "multi-hop rest sum to each edge; across positions no residual part", n_edges, cross))
t.ok(last and #last.heads == 0 and math.abs(last.multi) <= 1e-5 * math.abs(last.edge),
     "a last-layer feature's edge to a logit goes through no head")
local low, high   -- a layer-0 feature and a later one: no edge from the later one
for _, n in ipairs(pg:nodes("feature")) do
  if n.layer == 0 and not low then low = n end
  if n.layer == 4 then high = n end
end
local okc, e = pcall(pg.edge_heads, pg, high, low)
t.ok(not okc and tostring(e):find("is not kept in this pruned graph", 1, true), "an edge not in the pruned graph: " .. tostring(e))
local dir = os.tmpname()
os.remove(dir)
g:save(dir .. ".pt")
local loaded = ct.load_graph(dir .. ".pt")
okc, e = pcall(loaded.edge_heads, loaded, 1, loaded:nodes("logit")[1])
t.ok(not okc and tostring(e):find("give its replacement model", 1, true), "a graph from a file without its model: " .. tostring(e))
local r1 = loaded:edge_heads(1, loaded:nodes("logit")[1], rm)
local r2 = g:edge_heads(1, g:nodes("logit")[1])
t.ok(r1.edge == r2.edge and r1.residual == r2.residual and r1.multi == r2.multi, "with its model given: the same split")
os.remove(dir .. ".pt")

-- every kept edge split while pruning, its top heads in the graph JSON's links
local hp = g:prune{heads = 3}
hp:save_json(dir .. ".json", {viewer = false})
local j = ct.json_decode(io.open(dir .. ".json"):read("*a"))
os.remove(dir .. ".json")
local n_links, n_heads, same = 0, 0, true
for _, l in ipairs(j.links) do
  if l.heads then
    n_heads = n_heads + 1
    local r = hp:edge_heads(l.source, l.target)
    same = same and #l.heads == math.min(3, #r.heads) and math.abs(l.residual - r.residual) <= 1e-6 * (1 + math.abs(r.residual))
      and math.abs(l.multi_hop - r.multi) <= 1e-5 * (1 + math.abs(r.edge))
    for i, h in ipairs(l.heads) do
      same = same and h.layer == r.heads[i].layer and h.head == r.heads[i].head and math.abs(h.weight - r.heads[i].value) <= 1e-6 * (1 + math.abs(h.weight))
    end
  end
  n_links = n_links + 1
end
t.ok(n_heads == n_links and n_links > 100 and same, string.format("%d of %d links carry their top 3 heads, residual and " ..
     "multi-hop parts, as g:edge_heads gives them", n_heads, n_links))
okc, e = pcall(rm.record_heads, rm, g, 3)
t.ok(not okc and tostring(e):find("record the heads of a pruned graph", 1, true), "a full graph refused: " .. tostring(e))
okc, e = pcall(rm.record_heads, rm, hp, 9)
t.ok(not okc and tostring(e):find("expected an integer in 1..8", 1, true), "9 heads an edge refused: " .. tostring(e))

-- the heads and QK splits through a graph JSON and back: the same bytes; a hostile file refused
local qp = g:prune{heads = 3, qk = 4}
qp:save_json(dir .. "-a.json", {slug = "a", viewer = false})
ct.load_graph(dir .. "-a.json"):save_json(dir .. "-b.json", {slug = "a", viewer = false})
local a, b = io.open(dir .. "-a.json"):read("*a"), io.open(dir .. "-b.json"):read("*a")
t.ok(a == b and a:find('"qk": [', 1, true) and a:find('"multi_hop"', 1, true), "heads and QK splits through load_graph + save_json: the same bytes")
local ja = ct.json_decode(a)
local function hostile(edit, want, what)
  local j = ct.json_decode(a)
  edit(j)
  ct.write_file(dir .. "-h.json", ct.json_encode(j))
  local okh, eh = pcall(ct.load_graph, dir .. "-h.json")
  t.ok(not okh and tostring(eh):find(want, 1, true), what .. ": " .. tostring(eh))
end
local function first_split(j) for _, l in ipairs(j.links) do if #l.heads > 0 then return l end end end
hostile(function(j) local l = first_split(j); for i = 1, 9 do l.heads[i] = l.heads[1] end end, "at most 8 heads", "nine heads on a link")
hostile(function(j) first_split(j).heads[1].layer = 5 end, "expected layer (0..4), head (0..65535) and a finite weight; found layer 5", "a head's layer past the last")
hostile(function(j) first_split(j).heads[1].head = -1 end, "found layer 0, head -1", "a negative head")
hostile(function(j) first_split(j).heads = "L2H6" end, "heads must be a list", "heads not a list")
hostile(function(j) first_split(j).residual = nil end, "with residual and multi_hop finite numbers", "no residual part")
hostile(function(j) first_split(j).residual = 1e39 end, "with residual and multi_hop finite numbers", "a residual past float32")
hostile(function(j) j.qk[1] = "x" end, "qk: entry 1: expected {layer, head, query, key", "a qk entry not an object")
hostile(function(j) j.qk[2].pairs[1].value = "<img>" end, "qk: entry 2, pair 1: expected {query, key: node ids", "a qk pair with a string value")
hostile(function(j) j.qk = {layer = 1} end, "qk: expected a list of heads' QK splits", "qk not a list")
local okq, eq = pcall(g.set_qk_json, g, "[]")
t.ok(not okq and tostring(eq):find("go with a pruned graph", 1, true), "QK splits on a full graph refused: " .. tostring(eq))
os.remove(dir .. "-a.json"); os.remove(dir .. "-b.json"); os.remove(dir .. "-h.json")

-- a head's pattern answering an intervention: the row predicted without a node (rm:qk{without})
-- against the frozen model with only that layer's attention free, read through hooks
local hook = "blocks.4.attn.hook_pattern"
local q4 = rm:qk(prompt, {layer = 4, head = 1, key = 12, top = 20})
local node
for _, term in ipairs(q4.terms) do if term.key.kind == "feature" then node = term.key break end end
local pred = rm:qk(prompt, {layer = 4, head = 1, top = 1, without = node})
local iv = {{layer = node.layer, pos = node.pos, feature = node.feature, scale = 0}}
local fr = rm:intervene(prompt, iv, {constrained_layers = "all", free_attention_layer = 4, hooks = {hook}, activations = false})
local worst, sum = 0, 0
for _, k in ipairs(pred.keys) do
  worst = math.max(worst, math.abs(fr.hooks[hook]:get(2, T, k.key + 1) - k.prob_without))
  sum = sum + k.prob_without
end
t.ok(worst <= 1e-5 and math.abs(sum - 1) <= 1e-9 and pred.keys[13].prob_without ~= pred.keys[13].prob,
     string.format("without %s: the frozen model with layer 4's attention free gives the predicted row (worst %.2g; 1e-5)",
                   node.node_id, worst))
local by_id = rm:qk(prompt, {layer = 4, head = 1, top = 1, without = node.node_id})
t.ok(by_id.keys[13].prob_without == pred.keys[13].prob_without, "without = a node_id: the same row")
local still = rm:intervene(prompt, iv, {constrained_layers = "all", hooks = {hook}, activations = false})
t.ok(math.abs(still.hooks[hook]:get(2, T, 13) - q4.prob) <= 1e-6, "every pattern frozen: the clean probability stays")
local function refuses_iv(opts, want, what)
  local okc, e = pcall(rm.intervene, rm, prompt, iv, opts)
  t.ok(not okc and tostring(e):find(want, 1, true), what .. ": " .. tostring(e))
end
refuses_iv({free_attention_layer = 5}, "free_attention_layer 5 outside 0..4", "a free layer past the last")
refuses_iv({free_attention_layer = 1, freeze_attention = false}, "every pattern is free already", "a free layer with no frozen patterns")
refuses_iv({hooks = {"blocks.9.attn.hook_pattern"}}, "layer in 0..4", "a hook of no layer")
refuses_iv({hooks = "x"}, "hooks expects a list of hook names", "hooks not a list")
okc, e = pcall(rm.generate, rm, prompt, {}, {max_tokens = 2, free_attention_layer = 1})
t.ok(not okc and tostring(e):find("for one pass over a prompt", 1, true), "generate with a free layer refused: " .. tostring(e))
okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, key = 3, without = node})
t.ok(not okc and tostring(e):find("leave out key", 1, true), "without with one key refused: " .. tostring(e))
okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, without = "4_99999_3"})
t.ok(not okc and tostring(e):find("is not active in the prompt's clean run", 1, true), "without an inactive feature: " .. tostring(e))
okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, without = "nonsense"})
t.ok(not okc and tostring(e):find("is no node id", 1, true), "without a bad id: " .. tostring(e))
for _, bad in ipairs({"3_-2_4", "3_5_4x", "3__4", "99999999999_1_2", "E_1_", "E_x_3"}) do
  okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, without = bad})
  t.ok(not okc and tostring(e):find("is no node id", 1, true), "without '" .. bad .. "': " .. tostring(e))
end
okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, without = "E_999_3"})
t.ok(not okc and tostring(e):find("names token 999 at position 3, where the prompt has", 1, true), "without a token the prompt does not have there: " .. tostring(e))
local tok3 = m:tokenize(prompt)[4]
t.ok(pcall(rm.qk, rm, prompt, {layer = 4, head = 1, top = 1, without = "E_" .. tok3 .. "_3"}), "without the token the prompt has there")
okc, e = pcall(rm.qk, rm, prompt, {layer = 4, head = 1, without = {kind = "feature", layer = 1, pos = 3}})
t.ok(not okc and tostring(e):find("needs its feature index", 1, true), "without a feature with no index: " .. tostring(e))
okc, e = pcall(rm.intervene, rm, prompt, {}, {hooks = {"blocks.1.mlp.hook_pre"}})
t.ok(not okc and tostring(e):find("is inside the MLP", 1, true), "an MLP-internal hook refused: " .. tostring(e))
okc, e = pcall(rm.generate, rm, prompt, {}, {max_tokens = 2, hooks = {"blocks.1.attn.hook_pattern"}})
t.ok(not okc and tostring(e):find("hooks are read from one pass", 1, true), "generate with hooks refused: " .. tostring(e))
local hq = rm:intervene(prompt, {}, {hooks = {"blocks.1.mlp.hook_out", "blocks.2.attn.hook_pattern"}, activations = false})
local sum_out = 0
for i = 1, hq.hooks["blocks.1.mlp.hook_out"]:size(2) do sum_out = sum_out + math.abs(hq.hooks["blocks.1.mlp.hook_out"]:get(T, i)) end
t.ok(sum_out > 0, "hooks of the pass are filled (mlp.hook_out at the last position)")
t.done()
