-- ctrace.intervention - interventions from Lua: results, supernodes, swaps.
--
--   rm:intervene(prompt, interventions, opts) -> result
--       interventions: a list of
--         {layer =, pos =, feature =, scale = k | value = v | add = d}   a transcoder feature
--         {node = graph_node, scale = ... }                              a feature, error or token node
--         {error = true, layer =, pos =, scale = ...}, {token = true, pos =, scale = ...}
--         {supernode = sn, scale = ...}                                  every member of a supernode
--         {swap = sn, from = prompt2 [, with = sn2] [, from_pos = "same" | p]}
--             members take the activations the same features (or sn2's, member by member) have
--             on prompt2 (at the same position, or at from_pos)
--       pos: an index, {first, last}, {first, "end"} (also generated tokens) or "all".
--       opts: freeze_attention (true), constrained_layers ({first, last} or "all": direct
--             effects), readout ("post" | "pre"), activations (true: every feature's activation
--             and its change from the clean run), free_attention_layer (one layer whose patterns
--             are recomputed while the others stay frozen), hooks (a list of hook names: the
--             pass's values there, result.hooks[name], tensors as m:run_with_cache gives them).
--   result.logits (T, V); result:top_logits(n [, pos]) -> {{token, id, prob, logit}, ...};
--   result.activations (list of {layer, pos, feature, value, clean, delta}; made when first read
--   from result.acts, a ctrace.Activations kept in C); result:activation(layer, pos, feature) ->
--   entry or nil; result:fraction(node) -> value / clean
--   rm:generate(prompt, interventions, {max_tokens, temperature, top_p, seed, ...}) -> text, ids
--   ctrace.supernode(name, nodes) -> {name =, members = {...}}
local core = require "ctrace.core"
local M = core.methods("ctrace.ReplacementModel")

local Result = {}
-- r.activations: the list of every entry, made from the C-side set (ctrace.Activations) when first read
Result.__index = function(r, k)
  if k == "activations" and rawget(r, "acts") then
    local list = r.acts:list()
    rawset(r, "activations", list)
    return list
  end
  return Result[k]
end

-- The n most probable tokens at position pos (1-based, default the last), most probable first
-- (ties: the lower id): {token, id, prob, logit}; the token text is the id ("1234") when the
-- model has no tokenizer or its tokenizer no such token (Model:token_label). The softmax and
-- the selection run in C (Tensor:softmax_top).
function Result:top_logits(n, pos)
  local top = self.logits:softmax_top(pos or self.logits:size(1), math.max(0, n or 5))
  local out, model = {}, self.model
  for i, x in ipairs(top) do
    local id = x.index - 1
    out[i] = {token = model:token_label(id), id = id, prob = x.prob, logit = x.value}
  end
  return out
end

-- Probability of token id at position pos (1-based, default the last).
function Result:prob(id, pos)
  local _, p = self.logits:softmax_top(pos or self.logits:size(1), 0, id + 1)
  return p
end

function Result:activation(layer, pos, feature)
  if self.acts then return self.acts:get(layer, pos, feature) end
  if not self.activations then error("BAD_ARG: this result was run with activations = false", 2) end
  for _, a in ipairs(self.activations) do   -- a watched list
    if a.layer == layer and a.pos == pos and a.feature == feature then return a end
  end
end

-- A feature's activation as a fraction of its clean value (nil when it was not active clean).
function Result:fraction(node)
  local a = self:activation(node.layer, node.pos, node.feature)
  if not a or a.clean == 0 then return nil end
  return a.value / a.clean
end

local function supernode_members(sn, i)
  if type(sn) ~= "table" or type(sn.members) ~= "table" or #sn.members == 0 then
    error("BAD_ARG: intervention " .. i .. ": a supernode needs a non-empty members list", 4)
  end
  return sn.members
end

-- Expands supernodes and swaps into plain interventions.
function M.expand_interventions(rm, list)
  if type(list) ~= "table" then error("BAD_ARG: interventions: expected a list, got " .. type(list), 3) end
  local out = {}
  for i, iv in ipairs(list) do
    if type(iv) == "table" and iv.supernode then
      for _, node in ipairs(supernode_members(iv.supernode, i)) do
        local e = {node = node, scale = iv.scale, value = iv.value, add = iv.add}
        out[#out + 1] = e
      end
    elseif type(iv) == "table" and iv.swap then
      local members = supernode_members(iv.swap, i)
      local source = iv.with and supernode_members(iv.with, i) or members
      if #source ~= #members then
        error("BAD_ARG: intervention " .. i .. ": swap with a group of " .. #source .. " for " .. #members .. " members", 3)
      end
      if iv.from == nil then error("BAD_ARG: intervention " .. i .. ": swap needs from = a second prompt", 3) end
      local src = {}
      for k, node in ipairs(source) do
        local pos = iv.from_pos
        if pos == nil or pos == "same" then pos = node.pos end
        if type(pos) ~= "number" then
          error(string.format("BAD_ARG: intervention %d: from_pos must be a position or \"same\", got %s", i, tostring(pos)), 3)
        end
        src[k] = {layer = node.layer, pos = pos, feature = node.feature}
      end
      local ok, values = pcall(rm.donor_values, rm, iv.from, src)   -- the donor prompt's activations, in C
      if not ok then
        local code, msg = tostring(values):gsub("^[^:]*:%d+: ", ""):match("^([A-Z_]+): (.*)$")
        error((code or "BAD_ARG") .. ": intervention " .. i .. ": " .. (msg or tostring(values)), 3)
      end
      for k, node in ipairs(members) do
        out[#out + 1] = {layer = node.layer, pos = node.pos, feature = node.feature, value = values[k]}
      end
    else
      out[#out + 1] = iv
    end
  end
  return out
end

function M.intervene(rm, prompt, list, opts)
  local flat = rm:expand_interventions(list)
  local logits, acts, hooks = rm:intervene_raw(prompt, flat, opts)
  local r = {logits = logits, model = rm:model(), interventions = flat, hooks = hooks}
  if type(acts) == "table" then r.activations = acts else r.acts = acts end   -- watched list, or every feature
  return setmetatable(r, Result)
end

local gen_raw = M.generate
function M.generate(rm, prompt, list, opts)
  return gen_raw(rm, prompt, rm:expand_interventions(list), opts)
end

-- A named group of nodes (graph node tables or {layer, pos, feature} tables) acted on together.
local function supernode(name, nodes)
  if type(name) ~= "string" then error("BAD_ARG: supernode: expected a name, got " .. type(name), 2) end
  if type(nodes) ~= "table" or #nodes == 0 then error("BAD_ARG: supernode '" .. name .. "': expected a non-empty list of nodes", 2) end
  return {name = name, members = nodes}
end

return {Result = Result, supernode = supernode}
