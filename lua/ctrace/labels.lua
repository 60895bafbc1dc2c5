-- ctrace.labels - where feature labels come from, behind one interface.
--
--   local labels = require "ctrace.labels"      (also ctrace.labels)
--   local src = labels.neuronpedia(tc)                      -- ids from the transcoder set
--   local src = labels.neuronpedia{model_id = "gemma-2-2b", source_set = "gemmascope-transcoder-16k"}
--   local src = labels.dashboards(model, d)                  -- ctrace.dashboards of a local set
--   local src = labels.file("labels.json")                  -- {"<layer>_<index>": "label", ...}
--   src:lookup({{layer, index}, ...}) -> {["layer_index"] = label}, {["layer_index"] = {message, code}}
--   labels.apply(graph, src) -> {labelled = n, missing = n, errors = {...}, requests = n}
--       sets every feature node's label (g:node(...).label, and clerp in the graph JSON); an
--       empty label (a feature without explanations) counts as missing
--
-- Any table with a lookup method is a label source, so a study can combine them.
local M = {}

local function key(layer, index) return string.format("%d_%d", layer, index) end

-- Neuronpedia: source ids are "<layer>-<source_set>".
function M.neuronpedia(spec)
  local ids = spec
  if type(spec) == "userdata" then
    ids = require("ctrace.neuronpedia").source_of(spec)
    if not ids then
      error("NOT_FOUND: no Neuronpedia ids for the transcoder set '" .. tostring(spec.scan) ..
            "'; set neuronpedia_model_id and neuronpedia_source_set in its config.yaml, or pass them", 2)
    end
  end
  if type(ids) ~= "table" or type(ids.model_id) ~= "string" or type(ids.source_set) ~= "string" then
    error("BAD_ARG: labels.neuronpedia expects a transcoder set or {model_id = string, source_set = string}", 2)
  end
  return {
    model_id = ids.model_id, source_set = ids.source_set,
    lookup = function(self, feats)
      local list = {}
      for i, f in ipairs(feats) do list[i] = {self.model_id, f[1] .. "-" .. self.source_set, f[2]} end
      local res, errs, requests = require("ctrace.neuronpedia").features(list)
      if not res then   -- nothing could be asked: errs is the message, requests the code
        local e = {}
        for _, f in ipairs(feats) do e[key(f[1], f[2])] = {message = errs, code = requests} end
        return {}, e, 0
      end
      local out, bad = {}, {}
      for i, f in ipairs(feats) do
        if res[i] then out[key(f[1], f[2])] = res[i].label else bad[key(f[1], f[2])] = errs[i] end
      end
      return out, bad, requests
    end,
  }
end

-- Local dashboards computed by ctrace.dashboards (for sets Neuronpedia does not cover).
function M.dashboards(model, d)
  local dash = require "ctrace.dashboards"
  return {
    lookup = function(_, feats)
      local out = {}
      for _, f in ipairs(feats) do out[key(f[1], f[2])] = dash.feature(d, model, f[1], f[2]).label end
      return out, {}
    end,
  }
end

-- A hand-written JSON file: an object from "<layer>_<index>" to a label.
function M.file(path)
  local f, err = io.open(path, "rb")
  if not f then error("NOT_FOUND: labels file " .. path .. ": " .. tostring(err), 2) end
  local text = f:read("*a")
  f:close()
  local ok, t = pcall(require("ctrace").json_decode, text)
  if not ok or type(t) ~= "table" then error("BAD_FORMAT: labels file " .. path .. ": expected a JSON object", 2) end
  for k, v in pairs(t) do
    if type(k) ~= "string" or not k:match("^%d+_%d+$") or type(v) ~= "string" then
      error("BAD_FORMAT: labels file " .. path .. ": entry '" .. tostring(k) ..
            "' must map \"<layer>_<index>\" to a string", 2)
    end
  end
  return {
    lookup = function(_, feats)
      local out, bad = {}, {}
      for _, f in ipairs(feats) do
        local k = key(f[1], f[2])
        if t[k] then out[k] = t[k] else bad[k] = {message = "not in " .. path, code = "NOT_FOUND"} end
      end
      return out, bad
    end,
  }
end

function M.apply(graph, src)
  if type(src) ~= "table" or type(src.lookup) ~= "function" then
    error("BAD_ARG: labels.apply expects a label source (a table with a lookup method)", 2)
  end
  local nodes, feats, seen = graph:nodes("feature"), {}, {}
  for _, n in ipairs(nodes) do
    local k = key(n.layer, n.feature)
    if not seen[k] then seen[k] = true feats[#feats + 1] = {n.layer, n.feature} end
  end
  local got, bad, requests = src:lookup(feats)
  local labelled, missing = 0, 0
  for _, n in ipairs(nodes) do
    local l = got[key(n.layer, n.feature)]
    if l and l ~= "" then graph:set_label(n, l) labelled = labelled + 1 else missing = missing + 1 end
  end
  return {labelled = labelled, missing = missing, errors = bad or {}, requests = requests or 0, features = #feats}
end

return M
