-- attention.lua - the cost of explaining attention, against a plain graph of the same prompt in the
-- same run (the named peer: what every study pays first). stories260K over a story of T tokens
-- (default 512), circuit-tracer's command-line defaults (7,500 feature nodes, batch 256, 10 logits),
-- N runs each (default 5), medians printed:
--   a plain graph (rm:attribute), then pruned as graph JSON prunes it (node 0.8, edge 0.98);
--   the same pruned graph with every kept edge split by heads (g:prune{heads = 3}): the time on
--     top of attribute + prune, and the ratio of the two (the target: at most 2x);
--   QK attribution of one head's whole row at the last position (rm:qk without key: every key
--     split into pairs, the top 5 pairs each), layer 4 head 1.
-- Figures only.
--   ctrace bench/attention.lua [T] [N]
local ct = require "ctrace"
local T, N = tonumber(arg[1]) or 512, tonumber(arg[2]) or 5
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local ids = m:tokenize(string.rep("Once upon a time, there was a little girl named Lily. She liked to play in the park. ", 64))
while #ids > T do table.remove(ids) end

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) / 2] or (xs[n / 2] + xs[n / 2 + 1]) / 2
end

local plain, heads, row, n_edges, n_keys, n_rows = {}, {}, {}, 0, 0, 0
for _ = 1, N do
  local t0 = ct.clock()
  local g, s = rm:attribute(ids, {max_feature_nodes = 7500, batch_size = 256, max_n_logits = 10, verbose = false})
  local t1 = ct.clock()
  g:prune{node_threshold = 0.8, edge_threshold = 0.98}
  local t2 = ct.clock()
  local p = g:prune{node_threshold = 0.8, edge_threshold = 0.98, heads = 3}
  local t3 = ct.clock()
  plain[#plain + 1] = t2 - t0                 -- attribute + prune
  heads[#heads + 1] = (t1 - t0) + (t3 - t2)   -- attribute + prune with heads
  n_rows = s.n_rows
  n_edges = #ct.json_decode(p:json{slug = "b"}).links
  local t4 = ct.clock()
  local r = rm:qk(ids, {layer = 4, head = 1, top = 5})
  row[#row + 1] = ct.clock() - t4
  n_keys = #r.keys
end
local mp, mh, mr = median(plain), median(heads), median(row)
print(string.format("# stories260K, %d tokens, %d threads: medians of %d runs", #ids, ct.threads(), N))
print(string.format("plain graph (attribute %d rows + prune): %.3f s", n_rows, mp))
print(string.format("the same with every kept edge split by heads (%d edges, top 3 heads each): %.3f s (%.2fx)",
                    n_edges, mh, mh / mp))
print(string.format("QK row, layer 4 head 1 at position %d: %d keys split into pairs: %.3f s (%.2fx the plain graph)",
                    #ids - 1, n_keys, mr, mr / mp))
