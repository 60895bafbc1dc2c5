-- Do attribution graphs recover circuits we planted? Two-layer Llama-architecture models are
-- written with weights that compute a task by construction (ctrace.planted): a two-hop lookup
-- (city -> its state -> the state's capital, the "Dallas -> Texas -> Austin" shape), an
-- induction circuit (previous-token head + induction head) and a variable binding (a pronoun to
-- the name of its gender). ctrace trains transcoders on each, attributes every prompt of the task,
-- prunes as usual and measures how much of the planted circuit the graphs keep (and, for the
-- attention hops, whether QK attribution names the planted query-key pair), and whether automatic
-- supernodes group the features as the planted variables group them, as superposition grows, for
-- per-layer and cross-layer transcoders of two sizes.
--   ctrace run experiments/planted-circuits     (writes results/ beside this file)
--   ctrace check experiments/planted-circuits   (and compares them with expected/)
local ct = require "ctrace"
local planted = require "ctrace.planted"
local supernodes = require "ctrace.supernodes"

local out = ct.results_dir(arg and arg[0])

-- the models: residual width, distractor facts (each adds two variables), weight noise
local LEVELS = {
  {width = 64, distractors = 4, noise = 0},
  {width = 48, distractors = 16, noise = 0},
  {width = 40, distractors = 16, noise = 0},
  {width = 32, distractors = 16, noise = 0},
  {width = 28, distractors = 16, noise = 0},
  {width = 64, distractors = 4, noise = 0.03},
}
-- the transcoders: kind, features per layer, TopK k
local DICTS = {
  {kind = "plt", d = 24, k = 1},
  {kind = "plt", d = 96, k = 2},
  {kind = "clt", d = 24, k = 1},
  {kind = "clt", d = 96, k = 2},
}
local PRUNE = {node_threshold = 0.8, edge_threshold = 0.98}

local function r6(x) return math.floor(x * 1e6 + 0.5) / 1e6 end

local rows = {}
for li, lv in ipairs(LEVELS) do
  local name = string.format("w%d-d%d%s", lv.width, lv.distractors, lv.noise > 0 and ("-n" .. lv.noise) or "")
  local mdir = out .. "/models/" .. name
  local truth = planted.two_hop{dir = mdir, width = lv.width, distractors = lv.distractors, noise = lv.noise, seed = 1}
  local m = ct.load_model(mdir)
  local acc = planted.evaluate(m, truth)
  local texts = planted.texts(truth, 2000, 1)
  local task = {}
  for i, p in ipairs(truth.prompts) do task[i] = p.text end
  for _, dc in ipairs(DICTS) do
    local tdir = out .. "/transcoders/" .. name .. "-" .. dc.kind .. dc.d .. "k" .. dc.k
    ct.train_transcoders(m, texts, {dir = tdir, kind = dc.kind == "clt" and "clt" or nil, d_transcoder = dc.d, k = dc.k,
                                    k_aux = math.min(32, dc.d), steps = 2000, batch = 64, lr = 3e-3, seed = 1, quiet = true})
    local tc = ct.load_transcoders(tdir)
    local ev = tc:evaluate(m, task)
    -- the dictionary: each planted path variable's best feature by decoder, encoder, activation
    local dict = planted.dictionary(tc, truth, {model = m})
    local dict_cos, enc_cos, act_r, n_path = 0, 0, 0, 0
    for _, v in ipairs(truth.variables) do
      if not v.distractor then
        local d = dict[v.name]
        dict_cos, enc_cos, act_r, n_path = dict_cos + d.decoder.cos, enc_cos + d.encoder.cos, act_r + d.activation.r, n_path + 1
      end
    end
    local rm = ct.replacement_model(m, tc)
    local sum = {recall = 0, nodes_found = 0, precision = 0, path_share = 0, error_share = 0, features = 0, whole = 0}
    local truth_labels, found_labels = {}, {}
    for k, p in ipairs(truth.prompts) do
      local g = rm:attribute(p.text, {verbose = false})
      local pg = g:prune(PRUNE)
      local roles = planted.roles(g, tc, truth, k)
      local rc = planted.recovery(g, pg, truth, roles, k)
      for _, key in ipairs{"recall", "nodes_found", "precision", "path_share", "error_share"} do sum[key] = sum[key] + rc[key] end
      if rc.recall == 1 then sum.whole = sum.whole + 1 end
      -- supernodes against the planted variables, pooled over the prompts (labels kept apart per
      -- prompt; a feature standing for no planted variable is a group of its own)
      local group_of = {}
      for gi, grp in ipairs(pg:supernodes{min_size = 1}) do
        for _, node in ipairs(grp.members) do group_of[node.node_id] = gi end
      end
      for _, node in ipairs(pg:nodes("feature")) do
        truth_labels[#truth_labels + 1] = k .. " " .. (roles[node.node_id] and roles[node.node_id].variable or node.node_id)
        found_labels[#found_labels + 1] = k .. " " .. group_of[node.node_id]
        sum.features = sum.features + 1
      end
      -- the first level's wider per-layer set: one graph kept, with its supernodes, for the viewer
      if li == 1 and dc == DICTS[2] and p.text == " the city Dallas of capital" then
        pg:set_supernodes(pg:supernodes{})
        pg:save_json(out .. "/two-hop-dallas.json", {slug = "two-hop-dallas", scan = "planted-circuits"})
      end
    end
    local n = #truth.prompts
    rows[#rows + 1] = {
      model = name, width = lv.width, distractors = lv.distractors, noise = lv.noise,
      superposition = r6(truth.superposition), max_overlap = r6(truth.max_overlap), model_accuracy = r6(acc.accuracy),
      transcoders = dc.kind, d_transcoder = dc.d, k = dc.k,
      fvu = {r6(ev.layers[1].fvu), r6(ev.layers[2].fvu)}, decoder_cos = r6(dict_cos / n_path),
      encoder_cos = r6(enc_cos / n_path), activation_r = r6(act_r / n_path),
      recall = r6(sum.recall / n), whole_path = r6(sum.whole / n), nodes_found = r6(sum.nodes_found / n),
      precision = r6(sum.precision / n), path_share = r6(sum.path_share / n), error_share = r6(sum.error_share / n),
      supernode_ari = r6(supernodes.ari(truth_labels, found_labels)), features_per_graph = r6(sum.features / n),
    }
    tc:free()
  end
  m:free()
end

-- the attention hops: induction and binding, where the planted variables reach the answer
-- through an attention head's query-key match
local ATTENTION = {
  {task = "induction", width = 48, distractors = 4}, {task = "induction", width = 32, distractors = 4},
  {task = "induction", width = 24, distractors = 4},
  {task = "binding", width = 48, distractors = 0}, {task = "binding", width = 32, distractors = 8},
  {task = "binding", width = 24, distractors = 8},
}
local ADICTS = {{kind = "plt", d = 20, k = 1}, {kind = "plt", d = 96, k = 2}, {kind = "clt", d = 20, k = 1}, {kind = "clt", d = 96, k = 2}}
local arows = {}
for _, lv in ipairs(ATTENTION) do
  local name = string.format("%s-w%d-d%d", lv.task, lv.width, lv.distractors)
  local mdir = out .. "/models/" .. name
  local truth = planted[lv.task]{dir = mdir, width = lv.width, distractors = lv.distractors, seed = 1}
  local m = ct.load_model(mdir)
  local acc = planted.evaluate(m, truth)
  local texts = planted.texts(truth, 2000, 1)
  for _, dc in ipairs(ADICTS) do
    local tdir = out .. "/transcoders/" .. name .. "-" .. dc.kind .. dc.d .. "k" .. dc.k
    ct.train_transcoders(m, texts, {dir = tdir, kind = dc.kind == "clt" and "clt" or nil, d_transcoder = dc.d, k = dc.k,
                                    k_aux = math.min(32, dc.d), steps = 2000, batch = 64, lr = 3e-3, seed = 1, quiet = true})
    local tc = ct.load_transcoders(tdir)
    local rm = ct.replacement_model(m, tc)
    local gender_cos, n_gender = 0, 0
    for vname, d in pairs(planted.dictionary(tc, truth)) do
      if vname:match("^gender:") then gender_cos, n_gender = gender_cos + d.decoder.cos, n_gender + 1 end
    end
    local sum = {ov_edge = 0, qk_top = 0, qk_share = 0, prob = 0}
    for k, p in ipairs(truth.prompts) do
      local g = rm:attribute(p.text, {verbose = false})
      local pg = g:prune(PRUNE)
      local rc = planted.attention_recovery(rm, pg, truth, planted.roles(g, tc, truth, k), k)
      sum.ov_edge = sum.ov_edge + (rc.ov_edge and 1 or 0)
      sum.qk_top = sum.qk_top + (rc.qk_top and 1 or 0)
      sum.qk_share, sum.prob = sum.qk_share + rc.qk_share, sum.prob + rc.prob
    end
    local n = #truth.prompts
    arows[#arows + 1] = {
      model = name, task = lv.task, width = lv.width, distractors = lv.distractors, superposition = r6(truth.superposition),
      max_overlap = r6(truth.max_overlap), model_accuracy = r6(acc.accuracy), prompts = n,
      transcoders = dc.kind, d_transcoder = dc.d, k = dc.k, fvu = {},
      gender_decoder_cos = n_gender > 0 and r6(gender_cos / n_gender) or nil,
      ov_edge = r6(sum.ov_edge / n), qk_top = r6(sum.qk_top / n), qk_share = r6(sum.qk_share / n), attention_prob = r6(sum.prob / n),
    }
    local ev = tc:evaluate(m, texts)
    for l, x in ipairs(ev.layers) do arows[#arows].fvu[l] = r6(x.fvu) end
    tc:free()
  end
  m:free()
end

-- the tables: results/recovery.md and .csv (two-hop), results/attention.md and .csv; the numbers
-- in results/summary.json
local function write_table(base, cols, list)
  local md = {"| " .. table.concat(cols, " | ") .. " |", "|" .. string.rep(" --- |", #cols)}
  local csv = {table.concat(cols, ",")}
  for _, r in ipairs(list) do
    local cells = {}
    for i, c in ipairs(cols) do
      local v = r[c]
      cells[i] = type(v) == "number" and (v % 1 == 0 and tostring(v) or string.format("%.3f", v)) or tostring(v or "")
    end
    md[#md + 1] = "| " .. table.concat(cells, " | ") .. " |"
    csv[#csv + 1] = table.concat(cells, ",")
  end
  ct.write_file(out .. "/" .. base .. ".md", table.concat(md, "\n") .. "\n")
  ct.write_file(out .. "/" .. base .. ".csv", table.concat(csv, "\n") .. "\n")
  return table.concat(md, "\n")
end
print(write_table("recovery", {"model", "superposition", "model_accuracy", "transcoders", "d_transcoder", "k", "decoder_cos",
                               "encoder_cos", "activation_r", "recall", "whole_path", "precision", "path_share",
                               "error_share", "supernode_ari", "features_per_graph"}, rows))
print(write_table("attention", {"model", "superposition", "model_accuracy", "transcoders", "d_transcoder", "k",
                                "gender_decoder_cos", "ov_edge", "qk_top", "qk_share", "attention_prob"}, arows))
ct.write_json(out .. "/summary.json", {two_hop = rows, attention = arows, prune = PRUNE})

