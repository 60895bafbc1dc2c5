-- How does stories260K choose the pronoun? After "... a little girl named Lily. One day," it gives
-- " she" p 0.41 and " he" almost nothing; after "... a boy named Tom. One day," " he" comes
-- second. The graph of the logit difference " she" - " he" shows the features that decide; we
-- inhibit them, and give them the values they take in the Tom prompt.
--   ctrace run experiments/stories260K-pronoun
local ct = require "ctrace"
local study = require "ctrace.study"

local out = ct.results_dir(arg and arg[0])

local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local tok = m:tokenizer()
local prompt = "Once upon a time, there was a little girl named Lily. One day,"
local donor = "Once upon a time, there was a boy named Tom. One day,"
local she, he = tok:token_to_id(" she"), tok:token_to_id(" he")
local T, Td = #m:tokenize(prompt), #m:tokenize(donor)

local u = ct.zeros(m.d_model)
local a, b = m:unembedding(she), m:unembedding(he)
for i = 1, m.d_model do u:set(i, a:get(i) - b:get(i)) end
local g = rm:attribute(prompt, {targets = {{vector = u, label = "she - he", weight = 1}}, verbose = false})
local pruned = g:prune{}
pruned:save_json(out .. "/she-vs-he.json", {slug = "she-vs-he", scan = "stories260K"})
local r, c = g:scores()

-- the most influential features at the last position decide; elsewhere, the girl / Lily positions
local last, earlier = {}, {}
for _, f in ipairs(pruned:top_features{n = 100}) do
  if f.pos == T - 1 and #last < 5 then last[#last + 1] = f end
  if f.pos < T - 1 and #earlier < 5 then earlier[#earlier + 1] = f end
end
local L, E = ct.supernode("last position", last), ct.supernode("earlier positions", earlier)
local s = study.run(rm, {prompt = prompt, targets = {she, he}, interventions = {
  {name = "inhibit the last position's (x-2)", list = {{supernode = L, scale = -2}}},
  {name = "inhibit the earlier ones (x-2)", list = {{supernode = E, scale = -2}}},
  {name = "last position from Tom's prompt", list = {{swap = L, from = donor, from_pos = Td - 1}}},
  {name = "both groups inhibited", list = {{supernode = L, scale = -2}, {supernode = E, scale = -2}}},
}})
study.write(s, out, "pronoun", {title = 'Probability of " she" as the deciding features change'})

local function r6(x) return math.floor(x * 1e6 + 0.5) / 1e6 end
local clean = rm:intervene(prompt, {}, {activations = false})
local summary = {prompt = prompt, clean = {she = r6(clean:prob(she)), he = r6(clean:prob(he))},
                 graph = {nodes = pruned:info().n_kept, edges = pruned:info().n_edges, replacement = r6(r), completeness = r6(c)},
                 last = {}, earlier = {}, effects = {}}
for i, f in ipairs(last) do summary.last[i] = f.node_id end
for i, f in ipairs(earlier) do summary.earlier[i] = f.node_id end
for i, row in ipairs(s.rows) do summary.effects[i] = {name = row.name, she = r6(row.targets[1].prob), he = r6(row.targets[2].prob)} end
ct.write_json(out .. "/summary.json", summary)
print(ct.json_encode(summary, true))
