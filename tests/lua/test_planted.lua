-- test_planted.lua - planted-circuit models are what they claim by construction: each computes
-- its task on every input, ablating a planted component breaks exactly the prompts that need
-- it (and nothing else), and the files are the same bytes for the same options.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"
local planted = require "ctrace.planted"

local tmp = os.tmpname()
os.remove(tmp)
ct.mkdirs(tmp)

local function build(name, opts, task)
  opts.dir = tmp .. "/" .. name
  local truth = planted[task or "two_hop"](opts)
  local m = ct.load_model(opts.dir)
  local r = planted.evaluate(m, truth)
  m:free()
  return truth, r
end

-- The prompts a component is needed for, as a set of texts.
local function needs(truth, part)
  local out = {}
  for _, p in ipairs(truth.prompts) do
    local hit = part == "all"
    if type(part) == "table" then
      for k, v in pairs(part) do hit = hit or p[k] == v end
    end
    if hit then out[p.text] = true end
  end
  return out
end

-- Ablating each component in turn (a model rebuilt without it): the prompts it is needed for
-- lose their answer's lead, every other prompt keeps its answer. `want` bounds
--   keep  the largest share of its lead a needed prompt keeps,
--   mean  the mean share the needed prompts keep,
--   move  the largest relative change of another prompt's lead,
-- each given or not (1e-5 of slack: float32 logits; a tie comes out as a lead of +-3e-7).
local function ablations(label, opts, want, task)
  local base, rb = build(label, opts, task)
  local names = {}
  for name in pairs(base.components) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local o = {ablate = {name}}
    for k, v in pairs(opts) do if k ~= "dir" then o[k] = v end end
    local truth, r = build(label .. "-ablated", o, task)
    local part = needs(truth, base.components[name])
    local keep, sum, n_in, move, rest_right = -math.huge, 0, 0, 0, true
    for i, p in ipairs(truth.prompts) do
      local rel = r.leads[i] / rb.leads[i]
      if part[p.text] then
        keep, sum, n_in = math.max(keep, rel), sum + rel, n_in + 1
      else
        move, rest_right = math.max(move, math.abs(rel - 1)), rest_right and r.leads[i] > 0
      end
    end
    local mean = n_in > 0 and sum / n_in or 0
    t.ok((n_in > 0) == (base.components[name] ~= "none") and rest_right and
         (n_in == 0 or ((not want.keep or keep <= want.keep + 1e-5) and (not want.mean or mean <= want.mean + 1e-5))) and
         (not want.move or move <= want.move + 1e-5),
         label .. ": ablating " .. name .. " breaks exactly its " .. n_in .. " prompts",
         string.format("%d prompts need it; they keep at most %.3g of their lead, %.3g on average; the others %s, their "
                       .. "leads moved by up to %.3g (bounds: %s)", n_in, keep, mean, rest_right and "keep their answers" or
                       "do not all keep their answers", move, ct.json_encode(want)))
  end
end

-- Transcoders trained on the planted model at dir, every prompt attributed and pruned:
-- {recall = the smallest recall over the prompts, ari = supernodes against the planted variables
-- (pooled over the prompts), ari_none = the same with no group merged, wrong_state_recall}
local function recover(dir, truth, kind, d, k)
  local m = ct.load_model(dir)
  local tdir = dir .. "/tc-" .. kind .. d
  ct.train_transcoders(m, planted.texts(truth, 2000, 1), {dir = tdir, kind = kind == "clt" and "clt" or nil, d_transcoder = d,
                                                          k = k, k_aux = math.min(32, d), steps = 2000, batch = 64, lr = 3e-3,
                                                          seed = 1, quiet = true})
  local tc = ct.load_transcoders(tdir)
  local rm = ct.replacement_model(m, tc)
  local sn = require "ctrace.supernodes"
  local out = {recall = 1, wrong_state_recall = 0}
  local A, B, C = {}, {}, {}
  for i, p in ipairs(truth.prompts) do
    local g = rm:attribute(p.text, {verbose = false})
    local pg = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
    local roles = planted.roles(g, tc, truth, i)
    out.recall = math.min(out.recall, planted.recovery(g, pg, truth, roles, i).recall)
    -- the same graph scored against another state's path (roles found anew for it) finds none
    local other = setmetatable({prompts = {}}, {__index = truth})
    for j, q in ipairs(truth.prompts) do other.prompts[j] = q end
    local j = i % #truth.prompts + 1
    while truth.prompts[j].state == p.state do j = j % #truth.prompts + 1 end
    other.prompts[i] = setmetatable({state = truth.prompts[j].state, answer_id = truth.prompts[j].answer_id},
                                    {__index = p})
    local other_roles = planted.roles(g, tc, other, i)
    out.wrong_state_recall = math.max(out.wrong_state_recall, planted.recovery(g, pg, other, other_roles, i).recall)
    local of = {}
    for gi, grp in ipairs(pg:supernodes{min_size = 1}) do for _, n in ipairs(grp.members) do of[n.node_id] = gi end end
    for _, n in ipairs(pg:nodes("feature")) do
      A[#A + 1] = i .. " " .. (roles[n.node_id] and roles[n.node_id].variable or n.node_id)
      B[#B + 1] = i .. " " .. of[n.node_id]
      C[#C + 1] = i .. " " .. n.node_id
    end
  end
  out.ari, out.ari_none = sn.ari(A, B), sn.ari(A, C)
  out.decoder_cos, out.activation_r = 1, 1
  for _, v in pairs(planted.dictionary(tc, truth, {model = m})) do
    out.decoder_cos, out.activation_r = math.min(out.decoder_cos, v.decoder.cos), math.min(out.activation_r, v.activation.r)
  end
  out.tc = tc
  m:free()
  return out
end

t.run {
  {"two-hop, no superposition: every prompt answered", function()
    local truth, r = build("plain", {width = 64, distractors = 4})
    t.eq(truth.orthogonal, true, "64 dimensions hold the 48 variables as basis vectors")
    t.eq(r.n, 48, "4 states x 3 cities x 4 templates")
    t.eq(r.accuracy, 1, "accuracy")
    t.ok(r.margin > 10, "the answer leads the next logit by over 10", r.margin)
  end},
  {"two-hop in superposition (60 variables in 32 dimensions): every prompt answered", function()
    local truth, r = build("super", {width = 32, distractors = 16})
    t.eq(truth.orthogonal, false, "directions are not a basis")
    t.close(truth.superposition, 60 / 32, 1e-12, "60 variables over 32 dimensions")
    t.ok(truth.max_overlap > 0.1 and truth.max_overlap < 0.2, "the largest overlap of two directions", truth.max_overlap)
    t.eq(r.accuracy, 1, "accuracy")
  end},
  {"graphs of the two-hop model without superposition recover the planted path, supernodes its variables", function()
    local truth = build("plain", {width = 64, distractors = 4})
    for _, tc in ipairs{{"plt", 24, 1}, {"plt", 96, 2}, {"clt", 24, 1}, {"clt", 96, 2}} do
      local name = tc[1] .. " " .. tc[2] .. " features, k " .. tc[3]
      local r = recover(tmp .. "/plain", truth, tc[1], tc[2], tc[3])
      t.eq(r.recall, 1, name .. ": every pruned graph holds the planted path (recall 1.0 on all 48 prompts)")
      t.ok(r.ari >= 0.9, name .. ": automatic supernodes match the planted variables (ARI >= 0.9)", r.ari)
      -- (a set that mixes states in its features can have one mixed feature pass the 0.3 role
      -- threshold for another state: measured 1/3 of that path for the cross-layer 96, k 2)
      if tc[3] == 1 then
        t.eq(r.wrong_state_recall, 0, name .. ": scored against another state's path, nothing is found")
      else
        t.ok(r.wrong_state_recall < 1, name .. ": scored against another state's path, never the whole of it", r.wrong_state_recall)
      end
      if tc[3] == 2 then
        t.ok(r.ari_none < 0.9, name .. ": the ARI has teeth: no grouping scores below 0.9 (answers split over features)", r.ari_none)
      end
      if tc[1] == "plt" and tc[2] == 24 then
        -- measured: decoder cosines 0.953 and up, activation correlations 0.809 and up
        t.ok(r.decoder_cos >= 0.9 and r.activation_r >= 0.7, name .. ": every planted variable has a feature writing its direction",
             string.format("decoder cos %.3f, activation r %.3f", r.decoder_cos, r.activation_r))
        -- the same features scored against directions no MLP writes (token identities)
        local toks, shifted = {}, {}
        for _, n in ipairs(truth.residual_variables) do if n:match("^tok:") then toks[#toks + 1] = n end end
        for i, v in ipairs(truth.variables) do shifted[v.name] = truth.directions[toks[i]] end
        local worst = -1
        for _, v in pairs(planted.dictionary(r.tc, {variables = truth.variables, width = truth.width,
                                                    directions = setmetatable(shifted, {__index = truth.directions})})) do
          worst = math.max(worst, v.decoder.cos)
        end
        t.ok(worst < 0.6, name .. ": against token directions, which no MLP writes, no decoder matches (cos < 0.6)", worst)
      end
    end
  end},
  {"attention hops: the copied token's edge to the answer, and the planted query-key pair first in QK attribution", function()
    for _, spec in ipairs{{"induction", {width = 48, distractors = 4}}, {"binding", {width = 48}}} do
      local task = spec[1]
      local truth = build("att-" .. task, spec[2], task)
      local m = ct.load_model(tmp .. "/att-" .. task)
      ct.train_transcoders(m, planted.texts(truth, 2000, 1), {dir = tmp .. "/att-" .. task .. "/tc", d_transcoder = 20, k = 1,
                                                              k_aux = 20, steps = 2000, batch = 64, lr = 3e-3, seed = 1, quiet = true})
      local tc = ct.load_transcoders(tmp .. "/att-" .. task .. "/tc")
      local rm = ct.replacement_model(m, tc)
      local ov, top, share, moved, blind = 0, 0, 1, 0, 0
      for k, p in ipairs(truth.prompts) do
        local g = rm:attribute(p.text, {verbose = false})
        local pg = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
        local roles = planted.roles(g, tc, truth, k)
        local r = planted.attention_recovery(rm, pg, truth, roles, k)
        ov, top, share = ov + (r.ov_edge and 1 or 0), top + (r.qk_top and 1 or 0), math.min(share, r.qk_share)
        -- teeth: the key moved one position on finds neither; no roles, no gender pair
        local shifted = {prompts = {}, task = truth.task}
        for j, q in ipairs(truth.prompts) do shifted.prompts[j] = q end
        shifted.prompts[k] = setmetatable({key_position = p.key_position == 1 and 2 or p.key_position - 1}, {__index = p})
        local s = planted.attention_recovery(rm, pg, shifted, roles, k)
        if s.ov_edge or s.qk_top then moved = moved + 1 end
        -- binding: the key feature must stand for the pronoun's gender; scored as the other gender, no pair is planted
        if task == "binding" then
          local flipped = setmetatable({prompts = {}}, {__index = truth})
          for j, q in ipairs(truth.prompts) do flipped.prompts[j] = q end
          flipped.prompts[k] = setmetatable({gender = p.gender == "female" and "male" or "female"}, {__index = p})
          if planted.attention_recovery(rm, pg, flipped, roles, k).qk_top then blind = blind + 1 end
        end
      end
      local n = #truth.prompts
      t.eq(ov, n, task .. ": every pruned graph holds the edge from the copied token to the answer's logit")
      t.eq(top, n, task .. ": QK attribution puts the planted pair first on every prompt")
      t.ok(share > 0.8, task .. ": the planted pairs carry over 80% of the score on every prompt", share)
      t.eq(moved, 0, task .. ": scored at the wrong key position, neither is found")
      if task == "binding" then t.eq(blind, 0, "binding: scored as the other gender, no planted pair is found") end
      m:free()
    end
  end},
  {"the generator reports a model that fails its task: width 24 is too narrow", function()
    local _, r = build("narrow", {width = 24, distractors = 4})
    t.ok(r.accuracy < 1, "accuracy below 1 is reported, not hidden", r.accuracy)
  end},
  -- measured (largest over components): two-hop in superposition keeps 0.264 of a lead, moves
  -- others by 0.007; induction moves others by 0.291 (a word's missing "prev" changes the last
  -- position's norm, so every logit there scales), in superposition one prompt keeps 0.578 of
  -- its lead without head 0 (interference alone can favour the answer) but the part's mean stays
  -- at or below 0; binding keeps 0.0004 (the sink leaves e^-8 per position), in superposition 0.052
  {"ablations break exactly their part (no superposition)", function() ablations("plain", {width = 64, distractors = 4}, {keep = 0, move = 0}) end},
  {"ablations break exactly their part (superposition)", function() ablations("super", {width = 32, distractors = 16}, {keep = 1 / 3, move = 0.01}) end},
  {"induction: every prompt answered, with and without superposition", function()
    local truth, r = build("ind", {width = 48}, "induction")
    t.eq(truth.orthogonal, true, "48 dimensions hold the 26 variables as basis vectors")
    t.eq(r.accuracy, 1, "accuracy on 48 prompts")
    local sup, rs = build("ind-super", {width = 24}, "induction")
    t.eq(sup.orthogonal, false, "26 variables in 24 dimensions")
    t.eq(rs.accuracy, 1, "accuracy in superposition")
    local m = ct.load_model(tmp .. "/ind")
    local worst_prev, worst_ind = 1, 1
    for _, p in ipairs(truth.prompts) do
      local _, c = m:run_with_cache(p.text, {hooks = {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}})
      local p0, p1 = c["blocks.0.attn.hook_pattern"], c["blocks.1.attn.hook_pattern"]
      local T = p1:size(2)
      for q = 2, T do worst_prev = math.min(worst_prev, p0:get(1, q, q - 1)) end
      worst_ind = math.min(worst_ind, p1:get(1, T, p.key_position + 1))
    end
    t.ok(worst_prev > 0.999, "head 0 attends to the previous position (smallest probability)", worst_prev)
    t.ok(worst_ind > 0.999, "head 1 attends to the token after the earlier occurrence (smallest probability)", worst_ind)
    m:free()
  end},
  {"ablations break exactly their part (induction)", function() ablations("ind", {width = 48}, {keep = 1e-3, move = 0.3}, "induction") end},
  {"ablations break exactly their part (induction in superposition)", function() ablations("ind-super", {width = 24}, {mean = 1 / 3}, "induction") end},
  {"binding: every prompt answered, with and without superposition", function()
    local truth, r = build("bind", {width = 48}, "binding")
    t.eq(truth.orthogonal, true, "48 dimensions hold the 30 variables")
    t.eq(r.n, 64, "16 pairs x 2 orders x 2 pronouns")
    t.eq(r.accuracy, 1, "accuracy")
    local sup, rs = build("bind-super", {width = 32, distractors = 8}, "binding")
    t.eq(sup.orthogonal, false, "38 variables in 32 dimensions")
    t.eq(rs.accuracy, 1, "accuracy in superposition")
  end},
  {"ablations break exactly their part (binding)", function() ablations("bind", {width = 48}, {keep = 1e-3, move = 0}, "binding") end},
  {"ablations break exactly their part (binding in superposition)", function() ablations("bind-super", {width = 32, distractors = 8}, {mean = 1 / 3}, "binding") end},
  {"same options, same bytes; another seed, other directions", function()
    build("a", {width = 32, distractors = 8, noise = 0.01, seed = 5})
    build("b", {width = 32, distractors = 8, noise = 0.01, seed = 5})
    build("c", {width = 32, distractors = 8, noise = 0.01, seed = 6})
    for _, f in ipairs{"model.safetensors", "tokenizer.json", "config.json", "truth.json"} do
      t.eq(ct.sha256(tmp .. "/a/" .. f), ct.sha256(tmp .. "/b/" .. f), f .. " is the same")
    end
    t.ok(ct.sha256(tmp .. "/a/model.safetensors") ~= ct.sha256(tmp .. "/c/model.safetensors"), "seed 6 gives other weights")
  end},
  {"the tokenizer splits a prompt into its words, BOS first", function()
    local m = ct.load_model(tmp .. "/plain")
    local ids = m:tokenize(" the city Dallas of capital")
    local words = {}
    for i, id in ipairs(ids) do words[i] = m:token_label(id) end
    t.eq(table.concat(words, "|"), "<s>| the| city| Dallas| of| capital", "tokens")
    m:free()
  end},
  {"save_safetensors: names and metadata in order, the same bytes for the same tables; bad names refused", function()
    local a, b = ct.zeros(2, 3), ct.zeros(4)
    a:set(1, 2, 5)
    local m1, m2 = {}, {}
    for i = 1, 12 do m1["k" .. i] = "v" .. i end
    for i = 12, 1, -1 do m2["k" .. i] = "v" .. i end
    ct.save_safetensors(tmp .. "/s1.safetensors", {b = b, a = a[2], c = a}, m1)
    ct.save_safetensors(tmp .. "/s2.safetensors", {c = a, a = a[2], b = b}, m2)
    t.eq(ct.sha256(tmp .. "/s1.safetensors"), ct.sha256(tmp .. "/s2.safetensors"), "tables built in other orders: the same bytes")
    local bytes = t.slurp(tmp .. "/s1.safetensors")
    local n = 0
    for i = 8, 1, -1 do n = n * 256 + bytes:byte(i) end
    local header = bytes:sub(9, 8 + n)
    t.ok(header:find('^{"__metadata__":{"k1":"v1","k10":"v10","k11":"v11","k12":"v12","k2":"v2"') ~= nil, "metadata first, keys sorted", header)
    t.ok(header:find('"a":{"dtype":"F32","shape":%[3%],"data_offsets":%[0,12%]},"b":{"dtype":"F32","shape":%[4%]') ~= nil,
         "tensors by name, a view written as its own contiguous rows", header)
    t.eq(#bytes, 8 + n + 4 * (3 + 4 + 6), "the data: 13 floats")
    t.raises(function() ct.save_safetensors(tmp .. "/x", {["a\0b"] = a}) end, "holds a NUL byte", "a NUL in a name")
    t.raises(function() ct.save_safetensors(tmp .. "/x", {__metadata__ = a}) end, "is __metadata__", "the metadata key as a name")
    t.raises(function() ct.save_safetensors(tmp .. "/x", {a = 1}) end, "must be name = Tensor; found string = number", "not a tensor")
    local freed = ct.zeros(1)
    freed:free()
    t.raises(function() ct.save_safetensors(tmp .. "/x", {a = freed}) end, "(freed)", "a freed tensor")
    t.eq(ct.exists(tmp .. "/x"), nil, "nothing written")
  end},
  {"induction: 15 words at most (slot 16 is the sink)", function()
    local _, r = build("ind15", {width = 64, words = 15}, "induction")
    t.eq(r.accuracy, 1, "15 words: every prompt answered")
    t.raises(function() planted.induction{dir = tmp .. "/x", words = 16} end, "words must be an integer in 3..15; found 16", "16 refused")
    t.raises(function() planted.induction{dir = tmp .. "/x", words = 4, distractors = 5} end, "distractors (5) must be at most words (4)", "more distractors than words")
  end},
  {"bad options are refused by name", function()
    t.raises(function() planted.two_hop{dir = tmp .. "/x", width = 4} end, "width must be an integer in 8..4096; found 4", "width too small")
    t.raises(function() planted.two_hop{dir = tmp .. "/x", wdth = 64} end, "unknown option 'wdth'", "unknown option")
    t.raises(function() planted.two_hop{dir = tmp .. "/x", ablate = {"mlp0:Paris"}} end, "unknown component 'mlp0:Paris'", "unknown component")
    t.raises(function() planted.two_hop{dir = tmp .. "/x", noise = -1} end, "noise must be a number in [0, 1)", "negative noise")
    t.raises(function() planted.two_hop{width = 64} end, "dir (a directory) is required", "no directory")
    t.raises(function() planted.texts({task = "two_hop"}, -3) end, "n must be a count", "a negative count")
    t.raises(function() planted.dictionary(nil, {}, {modle = 1}) end, "unknown option 'modle'", "a dictionary option misspelt")
  end},
}
os.execute("rm -rf " .. tmp)
t.done()
