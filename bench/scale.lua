-- scale.lua - one model and transcoder set at their real size, phase by phase, as
-- circuit-tracer's command line runs them (max_feature_nodes 7,500, batch 256, 10 logits,
-- desired_logit_prob 0.95). Prints one "scale:" line per figure; asserts nothing about time.
--
--   ctrace bench/scale.lua MODEL TRANSCODERS PROMPT [GRAPH_DIR] [--chat] [--tokens N] [--gflops X] [--bandwidth X] [--quick]
--     MODEL, TRANSCODERS   anything ct.load_model / ct.load_transcoders take (hub names too)
--     PROMPT               the prompt text (--chat: one user turn through the chat template)
--     GRAPH_DIR            where the graph files go (default: a directory under /tmp)
--     --tokens N           the prompt's tokens repeated (after BOS) to exactly N tokens
--     --gflops X           the sgemm rate measured in the same run, to state the multiply-add bound
--     --bandwidth X        the rate (GB/s) all threads read memory at, measured in the same run
--                          (bench/sgemm read), to state the bound it sets on generation (the
--                          weight bytes a token reads over X)
--     --quick              the graph only: no graph files, interventions or generation
--   ctrace bench/scale.lua --json GRAPH.safetensors OUT.json
--     writes the JSON of a saved full graph with every node kept, and the anonymous memory that
--     took beyond the graph itself
local ct = require "ctrace"

local clock = ct.clock
local function gib(b) return b / 2^30 end

if arg[1] == "--json" then
  local g = ct.load_graph(arg[2]):prune{node_threshold = 1, edge_threshold = 1}   -- save_json alone prunes as circuit-tracer
  local before = ct.memory()
  local t = clock()
  g:save_json(arg[3], {slug = "graph"})
  local after = ct.memory()
  local size = io.open(arg[3]):seek("end")
  print(string.format("scale: save_json every node %.2f s, %d nodes, %d edges, %.1f MB file, anonymous memory %+.1f MB "
                      .. "across the write (peak rss %.2f GiB)", clock() - t, g:info().n_kept, g:info().n_edges, size / 1e6,
                      (after.anon - before.anon) / 1e6, gib(after.peak_rss)))
  os.exit(0)
end

local args, chat, gflops, bandwidth, n_tokens, quick = {}, false, nil, nil, nil, false
local i = 1
while i <= #arg do
  if arg[i] == "--chat" then chat = true
  elseif arg[i] == "--quick" then quick = true
  elseif arg[i] == "--gflops" then i = i + 1; gflops = tonumber(arg[i])
  elseif arg[i] == "--bandwidth" then i = i + 1; bandwidth = tonumber(arg[i])
  elseif arg[i] == "--tokens" then i = i + 1; n_tokens = tonumber(arg[i])
  else args[#args + 1] = arg[i] end
  i = i + 1
end
local model_ref, tc_ref, prompt, dir = args[1], args[2], args[3], args[4]
assert(model_ref and tc_ref and prompt, "usage: scale.lua MODEL TRANSCODERS PROMPT [GRAPH_DIR] [--chat] [--tokens N] "
       .. "[--gflops X] [--bandwidth X] [--quick]")
dir = dir or os.tmpname() .. ".d"
ct.mkdirs(dir)

local function mem(tag)
  local m = ct.memory()
  print(string.format("scale: memory %-22s rss %.2f GiB (anon %.2f, file %.2f of which %.2f in 2 MiB pages), peak rss %.2f GiB",
                      tag, gib(m.rss), gib(m.anon), gib(m.file), gib(m.file_huge or 0), gib(m.peak_rss)))
  return m
end
local function median(t) table.sort(t) return t[math.floor((#t + 1) / 2)] end

local t0 = clock()
local m = ct.load_model(model_ref)
local t_model = clock() - t0
local cfg = m:config()
print(string.format("scale: load model %.2f s (%s, %d layers, d_model %d, vocab %d)", t_model, cfg.architecture,
                    cfg.n_layers, cfg.d_model, cfg.d_vocab))
local t1 = clock()
local tc = ct.load_transcoders(tc_ref)
local t_tc = clock() - t1
print(string.format("scale: load transcoders %.2f s (%s, %d layers, %d features per layer)", t_tc, tc.kind,
                    tc.n_layers, tc:d_transcoder(0)))
mem("after loading")

local rm = ct.replacement_model(m, tc)
local input = chat and {chat = {{role = "user", content = prompt}}} or prompt
if n_tokens then   -- BOS, then the prompt's tokens over and over
  local ids = m:tokenize(prompt)
  input = {ids[1]}
  while #input < n_tokens do input[#input + 1] = ids[(#input - 1) % (#ids - 1) + 2] end
end
local opts = {max_feature_nodes = 7500, batch_size = 256, max_n_logits = 10, desired_logit_prob = 0.95, verbose = false}
local t2 = clock()
local g, st = rm:attribute(input, opts)
local t_attr = clock() - t2
local info = g:info()
print(string.format("scale: attribute %.2f s = setup %.2f + logit rows %.2f + feature rows %.2f + graph %.2f; "
                    .. "%d tokens, %d active features, %d rows in %d batches of %d", t_attr, st.setup_s, st.logits_s,
                    st.features_s, st.graph_s, info.n_pos, st.n_active, st.n_rows, st.n_batches, st.batch_size))
print(string.format("scale: backward %.2f s (%.2f s in sgemm), %.1f GFLOP, %.1f GFLOP/s%s", st.backward_s,
                    st.backward_gemm_s, st.backward_flops / 1e9, st.backward_flops / 1e9 / st.backward_s,
                    gflops and string.format(" = %.0f%% of sgemm (%.1f GFLOP/s)", 100 * st.backward_flops / 1e9 / st.backward_s / gflops, gflops) or ""))
-- multiply-adds of the whole graph: the clean forward (weights times positions, attention
-- scores), encoding every layer, and the backward passes
local T, D, L, F, V = info.n_pos, cfg.d_model, cfg.n_layers, cfg.d_mlp, cfg.d_vocab
local qd, kvd = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
local per_tok = L * (D * qd + 2 * D * kvd + qd * D + 3 * D * F)
local fwd = T * per_tok + L * cfg.n_heads * cfg.d_head * T * T + V * D
local enc = 0
for l = 0, tc.n_layers - 1 do enc = enc + T * tc:d_transcoder(l) * D end
local macs = fwd + enc + st.backward_flops / 2
print(string.format("scale: multiply-adds %.1f G (forward %.1f, encoders %.1f, backward %.1f)%s", macs / 1e9, fwd / 1e9,
                    enc / 1e9, st.backward_flops / 2e9,
                    gflops and string.format("; at sgemm's %.1f GFLOP/s they need %.2f s; attribution took %.2fx that",
                                             gflops, 2 * macs / 1e9 / gflops, t_attr / (2 * macs / 1e9 / gflops)) or ""))
-- the backward's largest products: a batch's rows at every position through W_O and W_V
print(string.format("scale: backward shapes %dx%dx%d %dx%dx%d (M x N x K, for sgemm at the same shapes)",
                    st.batch_size * T, D, qd, st.batch_size * T, kvd, D))
mem("after attribution")
if quick then
  print(string.format("scale: total %.2f s from script start", clock() - t0))
  os.exit(0)
end

-- graph files: the pruned JSON streams (anonymous memory before and after the write)
local p = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
local before = ct.memory()
local t3 = clock()
p:save_json(dir .. "/graph.json", {slug = "graph"})
local t_json = clock() - t3
local after = ct.memory()
local size = io.open(dir .. "/graph.json"):seek("end")
print(string.format("scale: save_json %.2f s, %.1f MB file, anonymous memory %+.1f MB across the write", t_json, size / 1e6,
                    (after.anon - before.anon) / 1e6))
g:save(dir .. "/graph.safetensors")   -- for the JSON-of-every-feature measurement in a process of its own

-- interventions: the first after the graph (the clean run is kept), then more, against a forward
local ids = g:tokens()
local feats = p:top_features{n = 3}
local iv = {{node = feats[1], scale = -2}}
local t4 = clock()
local r = rm:intervene(ids, iv, {activations = false})
local t_iv1 = clock() - t4
local fw, ivs = {}, {}
for k = 1, 3 do
  local a = clock(); m:forward(ids); fw[k] = clock() - a
  a = clock(); rm:intervene(ids, iv, {activations = false}); ivs[k] = clock() - a
end
print(string.format("scale: intervention on a layer-%d feature first %.2f s, then %.2f s; forward %.2f s (first %.2fx, "
                    .. "then %.2fx a forward)", feats[1].layer, t_iv1, median(ivs), median(fw), t_iv1 / median(fw),
                    median(ivs) / median(fw)))
-- the same on the pruned graph's deepest feature: its pass starts at that layer
local deep = feats[1]
for _, f in ipairs(p:nodes("feature")) do if f.layer > deep.layer then deep = f end end
local ivd = {}
for k = 1, 3 do
  local a = clock(); rm:intervene(ids, {{node = deep, scale = -2}}, {activations = false}); ivd[k] = clock() - a
end
print(string.format("scale: intervention on a layer-%d feature of %d layers %.2f s (%.2fx a forward)", deep.layer,
                    cfg.n_layers, median(ivd), median(ivd) / median(fw)))
local tl = {}
for k = 1, 21 do
  local a = clock(); r:top_logits(10); tl[k] = clock() - a
end
print(string.format("scale: top_logits(10) over %d logits %.2f ms (median of 21)", V, median(tl) * 1e3))

-- generation: tokens per second after the prompt (17 tokens generated less 1), against the bound
-- memory bandwidth sets
local n_gen = 16
local a = clock()
m:generate(ids, {max_tokens = 1, temperature = 0, stop_at_eos = false})
local t_one = clock() - a
a = clock()
m:generate(ids, {max_tokens = n_gen + 1, temperature = 0, stop_at_eos = false})
local t_gen = clock() - a - t_one
print(string.format("scale: generation %.2f tokens/s (%d tokens after the %d-token prompt's pass); %.2f GB of %s weights "
                    .. "a token%s", n_gen / t_gen, n_gen, T, cfg.step_bytes / 1e9, cfg.dtype,
                    bandwidth and string.format(": at the read bandwidth's %.1f GB/s at most %.2f tokens/s", bandwidth,
                                                bandwidth * 1e9 / cfg.step_bytes) or ""))
mem("at the end")
print(string.format("scale: total %.2f s from script start", clock() - t0))
