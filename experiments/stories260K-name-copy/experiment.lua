-- How does stories260K copy a name introduced earlier? After "Once upon a time, there was a
-- little girl named Lily. One day," it says " Lily" (p 0.51) rather than " she" (0.41). The graph
-- of the logit difference " Lily" - " she" shows which features carry the name to the end; we
-- ablate the name-position features it points at, and swap in those of a prompt about Tom.
--   ctrace run experiments/stories260K-name-copy
local ct = require "ctrace"
local study = require "ctrace.study"

local out = ct.results_dir(arg and arg[0])

local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local tok = m:tokenizer()
local prompt = "Once upon a time, there was a little girl named Lily. One day,"
local donor = "Once upon a time, there was a little boy named Tom. One day,"
local ids, dids = m:tokenize(prompt), m:tokenize(donor)
local lily, she = tok:token_to_id(" Lily"), tok:token_to_id(" she")
local function position_of(list, id)
  for i = #list, 1, -1 do if list[i] == id then return i - 1 end end
end
local name_pos, donor_name_pos = position_of(ids, lily), position_of(dids, tok:token_to_id(" T"))

-- the graph of the logit difference " Lily" - " she" (a direction, not a token)
local u = ct.zeros(m.d_model)
local ul, us = m:unembedding(lily), m:unembedding(she)
for i = 1, m.d_model do u:set(i, ul:get(i) - us:get(i)) end
local g = rm:attribute(prompt, {targets = {{vector = u, label = "Lily - she", weight = 1}}, verbose = false})
local pruned = g:prune{}
pruned:save_json(out .. "/lily-vs-she.json", {slug = "lily-vs-she", scan = "stories260K"})
local r, c = g:scores()

-- features at the name's position that the pruned graph keeps, most influential first
local at_name = {}
for _, f in ipairs(pruned:top_features{n = 200}) do
  if f.pos == name_pos and #at_name < 6 then at_name[#at_name + 1] = f end
end
local group = ct.supernode("name features", at_name)
local s = study.run(rm, {prompt = prompt, targets = {lily, she}, interventions = {
  {name = "ablate the name features", list = {{supernode = group, scale = 0}}},
  {name = "inhibit them (x-2)", list = {{supernode = group, scale = -2}}},
  {name = "amplify them (x2)", list = {{supernode = group, scale = 2}}},
  {name = "swap in Tom's", list = {{swap = group, from = donor, from_pos = donor_name_pos}}},
  {name = "ablate the name token", list = {{token = true, pos = name_pos, scale = 0}}},
}})
study.write(s, out, "name-features", {title = 'Probability of " Lily" when the name-position features change'})

local function r6(x) return math.floor(x * 1e6 + 0.5) / 1e6 end
local summary = {prompt = prompt, name_pos = name_pos, graph = {nodes = pruned:info().n_kept, edges = pruned:info().n_edges,
                 replacement = r6(r), completeness = r6(c)}, name_features = {}, effects = {}}
for i, f in ipairs(at_name) do summary.name_features[i] = f.node_id end
for i, row in ipairs(s.rows) do
  summary.effects[i] = {name = row.name, lily = r6(row.targets[1].prob), she = r6(row.targets[2].prob)}
end
local clean = rm:intervene(prompt, {}, {activations = false})
summary.clean = {lily = r6(clean:prob(lily)), she = r6(clean:prob(she))}
ct.write_json(out .. "/summary.json", summary)
print(ct.json_encode(summary, true))
