-- graph.lua - one attribution graph with circuit-tracer's command-line defaults (7,500 feature
-- nodes, batch 256, 10 logits), as bench/mpi.sh runs it on one process or as the ranks of an MPI
-- job. Rank 0 prints one line of figures:
--   ranks threads wall_s backward_s comm_s comm_MB batches batch_MB n_cols
--   ctrace bench/mpi/graph.lua [tokens]                 stories260K, its own greedy story of that length
--   ctrace bench/mpi/graph.lua MODEL SET "PROMPT"        a model and transcoder set (paths or names)
local ct = require "ctrace"
local model, set, prompt = arg[2] and arg[1], arg[2], arg[3]
local m = ct.load_model(model or "stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders(set or "stories260K"))
local ids = prompt
if not model then   -- BOS and the model's own greedy story (the same ids on every rank)
  local T = tonumber(arg[1]) or 512
  ids = m:tokenize(m:generate("", {max_tokens = T - 1, temperature = 0, stop_at_eos = false}))
  while #ids > T do table.remove(ids) end
end
local t0 = ct.clock()
local g, s = rm:attribute(ids, {max_feature_nodes = 7500, batch_size = 256, max_n_logits = 10})
local wall = ct.clock() - t0
local n_cols = s.n_active + (m.n_layers + 1) * #g:tokens() + #g:logits()
if ct.dist.rank == 0 then
  print(string.format("%d %d %.3f %.3f %.3f %.1f %d %.2f %d", ct.dist.size, ct.threads(), wall, s.backward_s, s.comm_s,
                      s.comm_bytes / 1e6, s.n_batches, s.batch_size * n_cols * 4 / 1e6, n_cols))
end
