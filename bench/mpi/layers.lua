-- layers.lua - one attribution graph with circuit-tracer's command-line defaults (7,500 feature
-- nodes, batch 256, 10 logits) on a model whose layers are split among the ranks (layer_split; one
-- process: all of them), as bench/mpi_layers.sh runs it. Every rank writes one line of figures to
-- OUT.<rank>:
--   rank ranks threads first_layer last_layer weight_MB wall_s backward_s comm_s comm_MB peak_rss_MB
--   ctrace bench/mpi/layers.lua OUT [tokens]              stories260K over a story of that length
--   ctrace bench/mpi/layers.lua OUT MODEL SET "PROMPT"    a model and transcoder set (paths or names)
local ct = require "ctrace"
local out, model, set, prompt = arg[1], arg[3] and arg[2], arg[3], arg[4]
local m = ct.load_model(model or "stories260K", {layer_split = true})
local rm = ct.replacement_model(m, ct.load_transcoders(set or "stories260K", {layer_split = true}))
local ids = prompt
if not model then   -- a story of the given length (tokens of a repeated text; the same on every rank)
  local T = tonumber(arg[2]) or 512
  ids = m:tokenize(string.rep("Once upon a time, there was a little girl named Lily. She liked to play in the park. ", 64))
  while #ids > T do table.remove(ids) end
end
local t0 = ct.clock()
local _, s = rm:attribute(ids, {max_feature_nodes = 7500, batch_size = 256, max_n_logits = 10})
local wall = ct.clock() - t0
local hwm = 0
for line in io.lines("/proc/self/status") do hwm = tonumber(line:match("^VmHWM:%s*(%d+)")) or hwm end
local held = m.held_layers or {0, m.n_layers - 1}
local f = assert(io.open(out .. "." .. ct.dist.rank, "w"))
f:write(string.format("%d %d %d %d %d %.1f %.3f %.3f %.3f %.1f %.0f\n", ct.dist.rank, ct.dist.size, ct.threads(), held[1],
                      held[2], m.step_bytes / 1e6, wall, s.backward_s, s.comm_s, s.comm_bytes / 1e6, hwm / 1024))
f:close()
