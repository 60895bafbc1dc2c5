-- What makes stories260K continue "Once upon a time, there was a little girl named Lily. She"
-- with " lo(ved)"? Trace the graph, take the features it points at, inhibit and amplify them,
-- sweep their scale and the layers an ablation is confined to, swap the last position's features
-- for those of a "... boy named Tom. He" prompt, and check how faithful the graph is.
--   ctrace run experiments/stories260K-lily-she     (writes results/ beside this file)
--   ctrace check experiments/stories260K-lily-she   (and compares them with expected/)
local ct = require "ctrace"
local study = require "ctrace.study"

local out = ct.results_dir(arg and arg[0])

local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local prompt = "Once upon a time, there was a little girl named Lily. She"
local donor = "Once upon a time, there was a little boy named Tom. He"

-- 1. the graph; its two most likely next tokens are the study's targets
local g = rm:attribute(prompt, {verbose = false})
local targets = {g:logits()[1].id, g:logits()[2].id}
local was = m:tokenizer():token_to_id(" was")
local pruned = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
-- labels and dashboards from the transcoder set's own feature dashboards, for the viewer page
local dash = require "ctrace.dashboards"
local dashboards = dash.annotate(pruned, m, assert(dash.load(ct.root .. "/" .. ct.default_transcoders.stories260K)))
-- automatic supernodes (features grouped by decoder direction and edge profiles, named from their
-- members' dashboard labels), written into the graph JSON's qParams for the viewer
local groups = pruned:supernodes{}
pruned:set_supernodes(groups)
pruned:save_json(out .. "/lily-she.json", {slug = "lily-she", scan = "stories260K", dashboards = dashboards})
local full_r, full_c = g:scores()
local pr, pc = pruned:scores()
local top = pruned:top_features{n = 6}
local T = #m:tokenize(prompt)

-- 2. inhibit (x-2) and amplify (x+2) each of the top features
local ivs = {}
for _, f in ipairs(top) do
  ivs[#ivs + 1] = {name = f.node_id .. " x-2", list = {{node = f, scale = -2}}}
  ivs[#ivs + 1] = {name = f.node_id .. " x+2", list = {{node = f, scale = 2}}}
end
local later = {}   -- features downstream of the first top feature: how much of them is left
for _, e in ipairs(pruned:edges_out(top[#top])) do
  if e.node.kind == "feature" then later[#later + 1] = e.node end
end
local s1 = study.run(rm, {prompt = prompt, targets = targets, watch = later, interventions = ivs})
study.write(s1, out, "inhibit-amplify", {title = 'Inhibiting (x-2) and amplifying (x+2) the top features: " lo"'})

-- 3. the scale of the three most influential features, -2 .. 3
local sweep = {}
for i = 1, 3 do sweep[i] = {name = top[i].node_id, list = {{node = top[i], scale = 1}}} end
local s2 = study.run(rm, {prompt = prompt, targets = targets, interventions = sweep, scales = {-2, -1, 0, 1, 2, 3}})
study.write(s2, out, "scale-sweep", {chart = "scales", title = 'Probability of " lo" as each feature is scaled'})

-- 4. localising layers: ablate the lowest top feature with its effect confined to layers l0 .. l
local low = top[1]
for _, f in ipairs(top) do if f.layer < low.layer then low = f end end
local ranges = {}
for l = low.layer, m.n_layers - 1 do ranges[#ranges + 1] = {low.layer, l} end
local s3 = study.run(rm, {prompt = prompt, targets = targets, layer_ranges = ranges,
                          interventions = {{name = low.node_id .. " ablated", list = {{node = low, scale = 0}}}}})
study.write(s3, out, "layer-sweep", {chart = "layers", title = "Ablation confined to layers " .. low.layer .. " .. l"})

-- 5. swap: the top features at the last position take their values on the donor prompt
local last = {}
for _, f in ipairs(top) do if f.pos == T - 1 then last[#last + 1] = f end end
local Td = #m:tokenize(donor)
local s4 = study.run(rm, {prompt = prompt, targets = {targets[1], targets[2], was}, interventions = {
  {name = "swap from 'Tom. He'", list = {{swap = ct.supernode("She, last position", last), from = donor, from_pos = Td - 1}}},
  {name = "inhibit them (x-2)", list = {{supernode = ct.supernode("She, last position", last), scale = -2}}}}})
study.write(s4, out, "swap", {title = "Swapping the last position's top features for the donor's"})

-- 6. faithfulness: what the graph predicts for ablating its top 20 features against the model
local f = study.faithfulness(rm, g, {top = 20})
study.write_faithfulness(f, out, "faithfulness")

-- the numbers the README quotes (and expected/ checks)
local function r6(x) return math.floor(x * 1e6 + 0.5) / 1e6 end
local summary = {
  prompt = prompt, tokens = T, clean = {}, graph = {active_features = g:info().n_active, nodes = pruned:info().n_kept,
  edges = pruned:info().n_edges, replacement = r6(full_r), completeness = r6(full_c), pruned_replacement = r6(pr),
  pruned_completeness = r6(pc)}, top_features = {}, faithfulness = {r = r6(f.r), r_direct = r6(f.r_direct)},
  inhibit_amplify = {}, swap = {}, supernodes = {},
}
for i, x in ipairs(rm:intervene(prompt, {}, {activations = false}):top_logits(3)) do
  summary.clean[i] = {token = x.token, prob = r6(x.prob)}
end
for i, n in ipairs(top) do summary.top_features[i] = {node = n.node_id, activation = r6(n.activation), influence = r6(n.influence)} end
for i, r in ipairs(s1.rows) do summary.inhibit_amplify[i] = {name = r.name, dprob = r6(r.targets[1].dprob)} end
for i, r in ipairs(s4.rows) do
  summary.swap[i] = {name = r.name, lo = r6(r.targets[1].prob), had = r6(r.targets[2].prob), was = r6(r.targets[3].prob)}
end
for i, grp in ipairs(groups) do
  local ids = {}
  for j, n in ipairs(grp.members) do ids[j] = n.node_id end
  summary.supernodes[i] = {name = grp.name, members = ids, similarity = r6(grp.similarity)}
end
ct.write_json(out .. "/summary.json", summary)

-- a report to read first
local lines = {"# " .. prompt, "",
  string.format("Next token: %q p=%.3f, %q p=%.3f.", summary.clean[1].token, summary.clean[1].prob, summary.clean[2].token,
                summary.clean[2].prob), "",
  string.format("Graph: %d active features; pruned to %d nodes and %d edges (`lily-she.html` to explore it). "
                .. "Replacement %.3f, completeness %.3f (pruned: %.3f, %.3f).", summary.graph.active_features,
                summary.graph.nodes, summary.graph.edges, full_r, full_c, pr, pc), "",
  "Top features: " .. table.concat((function() local t = {} for i, f in ipairs(summary.top_features) do t[i] = f.node end return t end)(), ", "),
  "", "| intervention | change of p(" .. summary.clean[1].token .. ") |", "|---|---|"}
for _, r in ipairs(summary.inhibit_amplify) do lines[#lines + 1] = string.format("| %s | %+.3f |", r.name, r.dprob) end
lines[#lines + 1] = ""
lines[#lines + 1] = string.format("Faithfulness over the top 20 features: Pearson r = %.3f (`faithfulness.svg`).", f.r)
lines[#lines + 1] = "Charts: `inhibit-amplify.svg`, `scale-sweep.svg`, `layer-sweep.svg`, `swap.svg`."
lines[#lines + 1] = ""
lines[#lines + 1] = string.format("Automatic supernodes: %d groups of 2 or more features (shown in `lily-she.html`); the first five:", #groups)
for i = 1, math.min(5, #groups) do
  local ids = {}
  for j, n in ipairs(groups[i].members) do ids[j] = n.node_id end
  lines[#lines + 1] = string.format("- %s: %s", groups[i].name, table.concat(ids, ", "))
end
ct.write_file(out .. "/report.md", table.concat(lines, "\n") .. "\n")
print(table.concat(lines, "\n"))
