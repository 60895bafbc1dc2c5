-- test_intervention.lua - interventions on stories260K with its default transcoders, through the
-- public API: with everything frozen (constrained to every layer, pre-activation readout) the
-- change an intervention makes equals the attribution graph's column for every feature target
-- and logit (negative-activation features among the sources); a no-op in free propagation gives the real model's logits; supernodes, swaps and
-- generation; bad input.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local m = ct.load_model("stories260K")
local tc = ct.load_transcoders("stories260K")
local rm = ct.replacement_model(m, tc)
local prompt = "Once upon a time, there was a little girl named Lily. She"
local g = rm:attribute(prompt, {verbose = false})
local A = g:adjacency()
local features = g:nodes("feature")
local logits = g:logits()

-- demeaned logit of token id at the last position
local function demeaned(lg, id)
  local T, V = lg:size(1), lg:size(2)
  local s = 0
  for v = 1, V do s = s + lg:get(T, v) end
  return lg:get(T, id + 1) - s / V
end

local function maxdiff(a, b)
  local worst = 0
  for i = 1, a:size(1) do for j = 1, a:size(2) do worst = math.max(worst, math.abs(a:get(i, j) - b:get(i, j))) end end
  return worst
end

-- a slow reference for Result:top_logits / prob: the softmax of row t in double and a sort of
-- the whole vocabulary by logit (ties: lower id), in Lua
local function slow_top(lg, t)
  local V = lg:size(2)
  local mx, z, order = -math.huge, 0, {}
  for v = 1, V do mx = math.max(mx, lg:get(t, v)) end
  for v = 1, V do z = z + math.exp(lg:get(t, v) - mx) end
  for v = 1, V do order[v] = v end
  table.sort(order, function(a, b)
    local la, lb = lg:get(t, a), lg:get(t, b)
    if la ~= lb then return la > lb end
    return a < b
  end)
  local out = {}
  for i, v in ipairs(order) do out[i] = {id = v - 1, logit = lg:get(t, v), prob = math.exp(lg:get(t, v) - mx) / z} end
  return out
end

t.run {
  {"everything frozen: intervention deltas equal the graph's columns", function()
    local frozen = {constrained_layers = "all", readout = "pre", watch = features}
    local clean = rm:intervene(prompt, {}, frozen)
    -- sources: 40 features spread over the graph, every error node past BOS, every token
    local sources = {}
    for i = 1, #features, math.max(1, math.floor(#features / 40)) do sources[#sources + 1] = features[i] end
    -- and every feature whose activation is negative (TopK keeps such values as they are)
    local n_negative = 0
    for _, f in ipairs(features) do
      if f.activation < 0 then sources[#sources + 1], n_negative = f, n_negative + 1 end
    end
    t.ok(n_negative > 0, n_negative .. " active features with a negative activation among the sources")
    for _, n in ipairs(g:nodes("error")) do if n.pos > 0 then sources[#sources + 1] = n end end
    for _, n in ipairs(g:nodes("token")) do sources[#sources + 1] = n end
    local worst_f, worst_l, bad = 0, 0, 0
    for _, s in ipairs(sources) do
      local r = rm:intervene(prompt, {{node = s, scale = 2}}, frozen)   -- doubles a feature, adds an error / token vector again
      for k, f in ipairs(features) do
        local d = math.abs((r.activations[k].value - clean.activations[k].value) - A:get(f.index, s.index))
        worst_f = math.max(worst_f, d)
        if d > 5e-4 then bad = bad + 1 end
      end
      for _, l in ipairs(logits) do
        local edge = A:get(l.index, s.index)
        local d = math.abs((demeaned(r.logits, l.id) - demeaned(clean.logits, l.id)) - edge)
        worst_l = math.max(worst_l, d / (1e-5 + 1e-3 * math.abs(edge)))
        if d > 1e-5 + 1e-3 * math.abs(edge) then bad = bad + 1 end
      end
    end
    t.ok(bad == 0, string.format("%d sources x %d feature targets and %d logits: worst feature |diff| %.2g, worst logit "
                                 .. "diff / tolerance %.2g", #sources, #features, #logits, worst_f, worst_l))
  end},

  {"constrained layers: with no intervention the real model's logits, whatever the range", function()
    -- constrained MLP outputs are the clean run's: with nothing changed the pass is the real one
    -- (per-layer set writing mlp.hook_out, cross-layer set writing hook_mlp_out)
    local real = m:forward(prompt)
    for _, name in ipairs {"stories260K", "stories260K-clt"} do
      local r = name == "stories260K" and rm or ct.replacement_model(m, ct.load_transcoders(name))
      for _, cl in ipairs {{0, 0}, {0, 1}, {2, 4}, "all"} do
        local out = r:intervene(prompt, {}, {constrained_layers = cl, activations = false})
        local d = maxdiff(out.logits, real)
        t.ok(d <= 1e-4, string.format("%s, constrained %s: logits equal to 1e-4 (%.2g)", name,
                                      type(cl) == "table" and (cl[1] .. "-" .. cl[2]) or cl, d))
      end
    end
  end},

  {"free propagation: a no-op intervention gives the real model's logits", function()
    local real = m:forward(prompt)
    local ops = {}
    for i = 1, 5 do ops[i] = {node = features[i * 7], scale = 1} end
    for _, fa in ipairs {true, false} do
      local r = rm:intervene(prompt, ops, {freeze_attention = fa, activations = false})
      t.ok(maxdiff(r.logits, real) <= 1e-5, "freeze_attention " .. tostring(fa) .. ": logits equal to 1e-5",
           string.format("%.3g", maxdiff(r.logits, real)))
    end
    local r = rm:intervene(prompt, {{layer = 2, pos = {1, "end"}, feature = 5, add = 0}}, {})
    t.ok(maxdiff(r.logits, real) <= 1e-5, "add 0 over every position")
  end},

  {"inhibition changes the logits; activations report their change from the clean run", function()
    local top   -- the most influential feature below the last layer
    for _, f in ipairs(g:prune{}:top_features{n = 20}) do
      if f.layer < m.n_layers - 1 then top = f break end
    end
    local r = rm:intervene(prompt, {{node = top, scale = -2}})
    local before, after = g:logits()[1], r:top_logits(3)
    t.ok(r:prob(before.id) < before.prob, string.format("p(%q) %.3f -> %.3f", before.token, before.prob, r:prob(before.id)))
    t.ok(#after == 3 and after[1].prob >= after[2].prob and after[1].id and after[1].logit, "top_logits entries")
    local changed = 0
    for _, a in ipairs(r.activations) do
      if a.layer > top.layer and a.pos == top.pos and a.delta ~= 0 then changed = changed + 1 end
    end
    t.ok(changed > 0, changed .. " later features at its position change")
    local a = r:activation(top.layer, top.pos, top.feature)
    t.ok(a and a.clean > 0, "the feature's own activation entry")
  end},

  {"top_logits and prob equal a slow Lua softmax and sort of the vocabulary", function()
    local tok, V = m:tokenizer(), m.d_vocab
    local clean = rm:intervene(prompt, {}, {activations = false})
    local r = rm:intervene(prompt, {{node = features[#features], scale = -3}}, {activations = false})
    local T = r.logits:size(1)
    local bad_order, bad_logit, bad_token, worst, n_checked = 0, 0, 0, 0, 0
    for _, res in ipairs {clean, r} do
      for pos = 1, T do
        local want, got = slow_top(res.logits, pos), res:top_logits(V, pos)
        if #got ~= V then bad_order = bad_order + 1 end
        for i = 1, V do
          local g, w = got[i], want[i]
          if not g or g.id ~= w.id then bad_order = bad_order + 1 break end
          if g.logit ~= w.logit then bad_logit = bad_logit + 1 end
          if g.token ~= tok:token_text(w.id) then bad_token = bad_token + 1 end
          worst = math.max(worst, math.abs(g.prob - w.prob) / w.prob)
          local p = res:prob(w.id, pos)
          worst = math.max(worst, math.abs(p - w.prob) / w.prob)
          n_checked = n_checked + 1
        end
      end
    end
    t.ok(bad_order == 0 and bad_logit == 0 and bad_token == 0 and worst <= 1e-12,
         string.format("%d positions x %d tokens: same order, logits and token texts; probabilities within %.2g relative",
                       2 * T, V, worst),
         string.format("%d wrong orders, %d logits, %d token texts", bad_order, bad_logit, bad_token))
    local last = r:top_logits()
    t.ok(#last == 5 and last[1].id == slow_top(r.logits, T)[1].id, "default: the last position, 5 entries")
    t.eq(#r:top_logits(V + 10), V, "n beyond the vocabulary: every token")
    t.eq(#r:top_logits(0), 0, "n = 0: none")
    -- ties and their order, through the same C path
    local lg = ct.zeros(2, 6)
    for v, x in ipairs {1, 3, 3, -1, 3, 0} do lg:set(2, v, x) end
    local tied = setmetatable({logits = lg, model = m}, getmetatable(r)):top_logits(6, 2)
    local ids = {}
    for i, x in ipairs(tied) do ids[i] = x.id end
    t.eq(table.concat(ids, " "), "1 2 4 0 5 3", "equal logits: the lower id first")
    local z = 3 * math.exp(3) + math.exp(1) + math.exp(-1) + 1
    t.ok(math.abs(tied[1].prob - math.exp(3) / z) < 1e-15 and math.abs(tied[6].prob - math.exp(-1) / z) < 1e-15,
         "probabilities of the tied row")
    t.raises(function() r:top_logits(3, T + 1) end, "OUT_OF_RANGE", "position past the prompt")
    t.raises(function() r:prob(V, T) end, "OUT_OF_RANGE", "id past the vocabulary")
    t.raises(function() ct.zeros(4):softmax_top(1, 2) end, "BAD_SHAPE", "softmax_top of a 1-d tensor")
  end},

  {"top_logits of a model without a tokenizer: the ids as token texts", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir .. " && cp " .. m.path .. " " .. dir .. "/")
    local bare = ct.load_model(dir .. "/" .. m.path:match("[^/]+$"))
    t.raises(function() bare:tokenizer() end, "NOT_FOUND", "no tokenizer beside the checkpoint")
    local ids = m:tokenize(prompt)
    local rb = ct.replacement_model(bare, tc):intervene(ids, {}, {activations = false})
    local want = rm:intervene(ids, {}, {activations = false}):top_logits(4)
    local got = rb:top_logits(4)
    local same = #got == 4
    for i = 1, 4 do
      same = same and got[i].id == want[i].id and got[i].token == tostring(want[i].id) and got[i].prob == want[i].prob
    end
    t.ok(same, "the same ids and probabilities; token = tostring(id)")
    local tok, labels_ok, ids_ok = m:tokenizer(), true, true
    for id = 0, m.d_vocab - 1 do
      labels_ok = labels_ok and m:token_label(id) == tok:token_text(id)
      ids_ok = ids_ok and bare:token_label(id) == tostring(id)
    end
    t.ok(labels_ok and ids_ok, "token_label: the token's text with a tokenizer, the id without, for all " .. m.d_vocab .. " ids")
    t.raises(function() bare:token_label(m.d_vocab) end, "OUT_OF_RANGE", "token_label past the vocabulary")
    t.raises(function() bare:token_label(-1) end, "OUT_OF_RANGE", "token_label below 0")
    -- the study and dashboard helpers label by id without a tokenizer
    local study = require "ctrace.study"
    local brm = ct.replacement_model(bare, tc)
    local s = study.run(brm, {prompt = ids, targets = {want[1].id},
                              interventions = {{name = "a", list = {{node = features[1], scale = 0}}}}})
    t.eq(s.targets[1].label, tostring(want[1].id), "study target labelled by its id")
    t.eq(s.clean[1].token, tostring(want[1].id), "study's clean top logits labelled by id")
    t.raises(function() study.run(brm, {prompt = ids, targets = {" she"}, interventions = {{name = "a", list = {{node = features[1], scale = 0}}}}}) end,
             "model has no tokenizer; give its token id", "a text target without a tokenizer")
    local dash = require "ctrace.dashboards"
    local d = assert(dash.load(tc.path))
    local fm, fb = dash.feature(d, m, 2, 7), dash.feature(d, bare, 2, 7)
    local same_logits = #fb.top_logits > 0
    for i, x in ipairs(fb.top_logits) do
      same_logits = same_logits and x.token == tostring(x.id) and fm.top_logits[i].token == tok:token_text(x.id)
    end
    t.ok(same_logits, "dashboard logits: token texts with a tokenizer, ids without")
    bare:free()
    os.execute("rm -rf " .. dir)
  end},

  {"constrained layers: effects stop at the range's end", function()
    local f = features[1]   -- layer 0
    local r1 = rm:intervene(prompt, {{node = f, scale = 0}}, {constrained_layers = {0, 0}, activations = false})
    local r2 = rm:intervene(prompt, {{node = f, scale = 0}}, {activations = false})
    t.ok(maxdiff(r1.logits, r2.logits) > 0, "constrained to layer 0 differs from free propagation")
  end},

  {"supernodes and swaps", function()
    local sn = ct.supernode("she", {features[#features], features[#features - 1]})
    local r1 = rm:intervene(prompt, {{supernode = sn, scale = -2}}, {activations = false})
    local r2 = rm:intervene(prompt, {{node = sn.members[1], scale = -2}, {node = sn.members[2], scale = -2}},
                            {activations = false})
    t.eq(maxdiff(r1.logits, r2.logits), 0, "a supernode acts as its members together")
    -- swap from the same prompt: every member keeps its value
    local same = rm:intervene(prompt, {{swap = sn, from = prompt}}, {activations = false})
    local clean = rm:intervene(prompt, {}, {activations = false})
    t.ok(maxdiff(same.logits, clean.logits) < 1e-5, "swap from the same prompt changes nothing")
    -- swap from another prompt: the members take the donor's activations
    local donor = "Once upon a time, there was a little boy named Tom. He"
    local d = rm:intervene(donor, {}, {freeze_attention = false})
    local sw = rm:intervene(prompt, {{swap = sn, from = donor}}, {activations = false})
    local ops = {}
    for k, n in ipairs(sn.members) do
      local a = d:activation(n.layer, n.pos, n.feature)
      ops[k] = {layer = n.layer, pos = n.pos, feature = n.feature, value = a and a.value or 0}
    end
    local explicit = rm:intervene(prompt, ops, {activations = false})
    t.eq(maxdiff(sw.logits, explicit.logits), 0, "swap = setting the donor's activations")
  end},

  {"studies: rows, tables and charts", function()
    local study = require "ctrace.study"
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local top = g:prune{}:top_features{n = 2}
    local s = study.run(rm, {prompt = prompt, targets = {logits[1].id}, watch = {features[#features]},
                             interventions = {{name = "a", list = {{node = top[1], scale = 1}}}, {name = "b", list = {{node = top[2], scale = 1}}}},
                             scales = {-1, 0, 1}})
    t.eq(#s.rows, 6, "interventions x scales rows")
    local one = s.rows[3]   -- "a" at scale 1: a no-op
    t.ok(one.scale == 1 and math.abs(one.targets[1].dprob) < 1e-6 and math.abs(one.watch[1].fraction - 1) < 1e-6,
         "scale 1 changes nothing and leaves watched features at their clean value")
    study.write(s, dir, "sweep", {chart = "scales"})
    local f = io.open(dir .. "/sweep.svg")
    local text = f:read("*a")
    f:close()
    t.ok(text:find("<svg", 1, true) and text:find("<polyline", 1, true) and text:find(">a</text>", 1, true), "SVG lines with a legend")
    local csv = io.open(dir .. "/sweep.csv"):read("*a")
    local n = 0
    for _ in csv:gmatch("\n") do n = n + 1 end
    t.eq(n, 7, "CSV: a header and six rows")
    os.execute("rm -rf " .. dir)
  end},

  {"generation with interventions", function()
    local a = rm:generate(prompt, {}, {max_tokens = 20, temperature = 0})
    local b = m:generate(prompt, {max_tokens = 20, temperature = 0})
    t.eq(a, b, "no interventions: the model's own continuation")
    local T = #m:tokenize(prompt)
    local noop = rm:generate(prompt, {{layer = 1, pos = {T - 1, "end"}, feature = 3, scale = 1}}, {max_tokens = 20, temperature = 0})
    t.eq(noop, b, "an open-ended no-op changes nothing")
    local top = g:prune{}:top_features{n = 2}
    local steered, ids = rm:generate(prompt, {{node = top[1], scale = -4}, {node = top[2], scale = -4}},
                                     {max_tokens = 20, temperature = 0})
    t.ok(steered ~= b and #ids > 0, "inhibiting the top features changes the continuation: " .. steered)
  end},

  {"bad input: clear errors", function()
    t.raises(function() rm:intervene(prompt, {{layer = 9, pos = 3, feature = 1, scale = 2}}) end, "layer 9 outside", "layer")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 99, feature = 1, scale = 2}}) end, "positions 99..99", "position")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 5000, scale = 2}}) end, "feature 5000", "feature")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 1, scale = 0 / 0}}) end, "finite", "NaN")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 1, value = math.huge}}) end, "finite", "infinity")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 1}}) end, "exactly one of", "no operation")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 1, scale = 2, add = 1}}) end, "exactly one of", "two operations")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = {4, 2}, feature = 1, scale = 2}}) end, "positions 4..2", "reversed range")
    t.raises(function() rm:intervene(prompt, {{layer = 1, pos = 3, feature = 1, scale = 2, bogus = 1}}) end, "unknown option 'bogus'", "unknown key")
    t.raises(function() rm:intervene(prompt, {{supernode = {name = "x", members = {}}, scale = 2}}) end, "non-empty", "empty supernode")
    t.raises(function() ct.supernode("x", {}) end, "non-empty", "supernode without nodes")
    t.raises(function() rm:intervene(prompt, {{swap = ct.supernode("x", {features[1]})}}) end, "from", "swap without a donor")
    t.raises(function() rm:intervene(prompt, "x") end, "expected a list", "not a list")
    t.raises(function() rm:intervene(prompt, {}, {constrained_layers = {3, 9}}) end, "constrained layers 3..9", "range")
    t.raises(function() rm:intervene(prompt, {}, {readout = "mid"}) end, "readout", "readout")
    local logit_node = g:node(logits[1].index)
    t.raises(function() rm:intervene(prompt, {{node = logit_node, scale = 2}}) end, "kind logit", "a logit node")
    local study = require "ctrace.study"
    t.raises(function() study.run(rm, {prompt = prompt, targets = {5}, interventions = {}}) end, "non-empty", "study without interventions")
    t.raises(function() study.run(rm, {prompt = prompt, targets = {5}, interventions = {{name = "x", list = {}}}}) end,
             "empty list", "study intervention with an empty list")
    t.raises(function() study.run(rm, {prompt = prompt, interventions = {{name = "x", list = {{node = features[1], scale = 0}}}}}) end,
             "target", "study without targets")
    -- a node of a graph made with other transcoders
    local rm2 = ct.replacement_model(m, ct.load_transcoders("stories260K-clt"))
    local g2 = rm2:attribute(prompt, {verbose = false, max_feature_nodes = 20})
    t.raises(function() rm:intervene(prompt, {{node = g2:nodes("feature")[1], scale = 2}}) end, "another model or transcoder set",
             "node from a graph of another transcoder set")
  end},
}

t.done()
