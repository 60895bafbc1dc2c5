-- bench/labels.lua (run by bench/labels.sh): a graph's feature labels over HTTP. Medians of 5.
local ct = require "ctrace"
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local g = rm:attribute("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, Max.",
                       {max_feature_nodes = 3000, verbose = false})
local src = ct.labels.neuronpedia{model_id = "stories260K", source_set = "ctrace"}
local function median(t) table.sort(t) return t[math.ceil(#t / 2)] end
for _, conc in ipairs{1, 4} do
  ct.neuronpedia.configure{cache = false, concurrency = conc}
  local times, r = {}, nil
  for i = 1, 5 do
    local t0 = ct.clock()
    r = g:label(src)
    times[i] = ct.clock() - t0
  end
  print(string.format("labels, batch endpoint, %d at a time: %d features of %d nodes in %d requests, median %.3f s " ..
                      "(the server's 50 ms per request alone: %.3f s)", conc, r.features, r.labelled + r.missing,
                      r.requests, median(times), math.ceil(r.requests / conc) * 0.05))
end
local feats, seen = {}, {}
for _, n in ipairs(g:nodes("feature")) do
  local k = n.layer .. "_" .. n.feature
  if not seen[k] then seen[k] = true feats[#feats + 1] = n end
end
ct.neuronpedia.configure{cache = false, concurrency = 4}
local list = {}
for i = 1, 500 do list[i] = {"stories260K", feats[i].layer .. "-ctrace", feats[i].feature} end
local times, requests = {}, 0
for i = 1, 5 do
  local t0 = ct.clock()
  local _, _, n = ct.neuronpedia.features(list)
  times[i], requests = ct.clock() - t0, n
end
print(string.format("labels, batch endpoint, 4 at a time: the graph's first 500 features in %d requests, median %.3f s",
                    requests, median(times)))
local t0 = ct.clock()
for _, n in ipairs(feats) do ct.neuronpedia.feature("stories260K", n.layer .. "-ctrace", n.feature) end
print(string.format("labels, one GET per feature, in turn: %d features, %.3f s", #feats, ct.clock() - t0))
ct.neuronpedia.configure{cache = true, cache_dir = os.getenv("XDG_CACHE_HOME") .. "/ctrace"}
g:label(src)
local times = {}
for i = 1, 5 do
  local t0 = ct.clock()
  g:label(src)
  times[i] = ct.clock() - t0
end
print(string.format("labels from the disk cache: median %.3f s", median(times)))
