-- Two-hop factual recall in Gemma-2-2B with its GemmaScope transcoders (the Circuit Tracing
-- paper's example): "Fact: the capital of the state containing Dallas is" -> " Austin".
-- Hypothesis: features at " Dallas" represent Texas; features at the last position say "a capital"
-- and, with Texas, "say Austin". Inhibiting the Texas group should lower p(" Austin"); giving it
-- the values the same features have at " Oakland" in the California prompt should move the answer
-- towards " Sacramento".
--   ctrace run experiments/gemma-2-2b-dallas-austin
-- Files: the checkpoint as a Hugging Face directory named gemma-2-2b in $CTRACE_MODELS (or the
-- path in $CTRACE_GEMMA_MODEL, else google/gemma-2-2b downloaded), the transcoder set's
-- config.yaml in $CTRACE_GEMMA_TRANSCODERS (default: circuit-tracer's set,
-- hf://mntss/gemma-scope-transcoders/config.yaml, downloaded into the Hugging Face cache).
local ct = require "ctrace"
local study = require "ctrace.study"

local out = ct.results_dir(arg and arg[0])

-- the checkpoint: $CTRACE_GEMMA_MODEL, a gemma-2-2b directory in the model directories, else
-- google/gemma-2-2b from Hugging Face (a gated repository: set HF_TOKEN)
local function checkpoint()
  local ok, path = pcall(ct.resolve_model, "gemma-2-2b")
  return os.getenv("CTRACE_GEMMA_MODEL") or (ok and path) or "google/gemma-2-2b"
end
local m = ct.load_model(checkpoint())
local tc = ct.load_transcoders(os.getenv("CTRACE_GEMMA_TRANSCODERS") or "hf://mntss/gemma-scope-transcoders/config.yaml")
local rm = ct.replacement_model(m, tc)
local tok = m:tokenizer()
local function one(word)
  local ids = tok:encode(word, {add_special_tokens = false})
  assert(#ids == 1, word .. " is not one token")
  return ids[1]
end
local prompt = "Fact: the capital of the state containing Dallas is"
local donor = "Fact: the capital of the state containing Oakland is"
local austin, sacramento, texas = one(" Austin"), one(" Sacramento"), one(" Texas")
local ids, dids = m:tokenize(prompt), m:tokenize(donor)
local function pos_of(list, id)
  for i = #list, 1, -1 do if list[i] == id then return i - 1 end end
end
local dallas, oakland, T = pos_of(ids, one(" Dallas")), pos_of(dids, one(" Oakland")), #ids

-- the graph (Neuronpedia's server settings: 5000 features, batch 48 would also do)
local g, stats = rm:attribute(prompt, {max_feature_nodes = 7500, batch_size = 128, verbose = false})
local pruned = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
-- feature labels from Neuronpedia (the numbers below do not depend on them; offline or
-- unreachable, the graph is written without them)
local lab = pruned:label(ct.labels.neuronpedia(ct.neuronpedia.source_of(tc) or
                                                {model_id = "gemma-2-2b", source_set = "gemmascope-transcoder-16k"}))
print(string.format("labels: %d of %d feature nodes from Neuronpedia (%d requests)", lab.labelled,
                    lab.labelled + lab.missing, lab.requests))
pruned:save_json(out .. "/dallas-austin.json", {slug = "dallas-austin", scan = "gemma-2-2b",
                                                source_set = "gemmascope-transcoder-16k"})
local r, c = g:scores()
local pr, pc = pruned:scores()

-- hypothesis groups: the most influential features at " Dallas" and at the last position
local at_dallas, at_last = {}, {}
for _, f in ipairs(pruned:top_features{n = 500}) do
  if f.pos == dallas and #at_dallas < 8 then at_dallas[#at_dallas + 1] = f end
  if f.pos == T - 1 and #at_last < 8 then at_last[#at_last + 1] = f end
end
local interventions = {}
if #at_dallas > 0 then
  local texas_group = ct.supernode("Texas (at Dallas)", at_dallas)
  interventions[#interventions + 1] = {name = "inhibit Texas (x-2)", list = {{supernode = texas_group, scale = -2}}}
  interventions[#interventions + 1] = {name = "Texas from the Oakland prompt",
                                       list = {{swap = texas_group, from = donor, from_pos = oakland}}}
end
if #at_last > 0 then
  interventions[#interventions + 1] = {name = "inhibit the last position (x-2)",
                                       list = {{supernode = ct.supernode("say a capital", at_last), scale = -2}}}
end
local s = study.run(rm, {prompt = prompt, targets = {austin, sacramento, texas}, interventions = interventions})
study.write(s, out, "interventions", {title = 'Probability of " Austin" under each intervention'})

local clean = rm:intervene(prompt, {}, {activations = false})
local summary = {prompt = prompt, clean = {austin = clean:prob(austin), sacramento = clean:prob(sacramento),
                 top = clean:top_logits(5)}, graph = {active_features = g:info().n_active, features = g:info().n_features,
                 nodes = pruned:info().n_kept, edges = pruned:info().n_edges, replacement = r, completeness = c,
                 pruned_replacement = pr, pruned_completeness = pc, seconds = stats.setup_s + stats.logits_s + stats.features_s},
                 texas = {}, say_capital = {}, effects = {}}
for i, f in ipairs(at_dallas) do summary.texas[i] = f.node_id end
for i, f in ipairs(at_last) do summary.say_capital[i] = f.node_id end
for i, row in ipairs(s.rows) do
  summary.effects[i] = {name = row.name, austin = row.targets[1].prob, sacramento = row.targets[2].prob}
end
ct.write_json(out .. "/summary.json", summary)
print(ct.json_encode(summary, true))
