-- ctrace.graph - conveniences on ctrace.Graph written in Lua.
--
--   g:top_features{n = 10} -> the n feature nodes with the most influence on the logits, most
--       influential first (nodes as g:nodes() gives them)
--   g:summary([n]) -> a few lines: prompt, logit targets, scores, the top n features
--   g:save_json(path, {slug, scan, source_set, metadata, viewer = true, dashboards})
--       the graph JSON, its graph-metadata.json entry, and (unless viewer = false) the viewer page
--       beside it (path with .html); dashboards: feature dashboards for the page
--   g:save(path) -> the full graph (.pt: circuit-tracer's file, else safetensors)
--   save_json, save and save_svg make the file's directory when it is missing, as circuit-tracer's
--   create_graph_files makes its output directory; under MPI they write on rank 0 only
--   g:save_svg(path) -> a static picture of the (pruned) graph
--   g:label(source) -> labels every feature node from a label source (ctrace.labels): returns
--       {labelled, missing, errors, requests, features}
--   g:edge_heads(source, target[, rm]) -> rm:edge_heads(g, source, target), rm defaulting to the
--       replacement model that attributed g (or the graph g was pruned from) in this session
--   g:supernodes{threshold = 0.5, min_size = 2, transcoders, model, weights} -> the pruned graph's
--       features grouped by role (ctrace.supernodes): {{name, members, similarity}, ...}; the
--       transcoders and model default to those of the replacement model that attributed g in this
--       session (without them the grouping uses edge profiles only)
--   g:set_supernodes(groups) -> writes groups ({{name =, members = {nodes or node ids}}, ...}) into
--       the graph JSON's qParams as circuit-tracer's viewer saves them ([name, node_id, ...]),
--       keeping its pins; the viewer page shows them
--   g:prune{..., heads = n [, qk = m]} -> the pruned graph with every kept edge split by heads, its
--       n largest heads (1..8) written into the graph JSON's links (rm:record_heads; g:head_edges()
--       lists them); with qk, the m heads (layer, head, query, key) carrying the most across
--       positions have their scores split into QK pairs, the graph JSON's "qk" (8 pairs each), which
--       the viewer shows for a head clicked in an edge's list
local core = require "ctrace.core"
local M = core.methods("ctrace.Graph")

-- Under MPI only rank 0 writes files: the others hold the same graph and skip the saving methods
-- (ctrace.dist.writes).
local writes = require("ctrace.dist").writes

-- The directory of path, made when missing (path must be a string: the C method says so otherwise).
local function make_dir_of(path)
  local dir = type(path) == "string" and path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then core.mkdirs(dir) end
end

local save = M.save
function M.save(g, path, ...)
  if not writes() then return end
  make_dir_of(path)
  return save(g, path, ...)
end

local save_json = M.save_json
function M.save_json(g, path, opts)
  if not writes() then return end
  make_dir_of(path)
  local o, viewer, dashboards = {}, true, nil
  for k, v in pairs(opts or {}) do
    if k == "viewer" then viewer = v
    elseif k == "dashboards" then dashboards = v
    else o[k] = v end
  end
  save_json(g, path, o)
  if viewer ~= false then
    -- the page is streamed from the graph like the JSON itself, with the same slug (default: the
    -- file's name) and labels
    local slug = o.slug or path:match("([^/]*)$"):gsub("%.json$", "")
    local prefix, suffix = require("ctrace.viewer").page_parts(slug, dashboards)
    g:save_page(path:gsub("%.json$", "") .. ".html", prefix, suffix, {slug = slug, scan = o.scan, source_set = o.source_set})
  end
end

function M.save_svg(g, path)
  if not writes() then return end
  make_dir_of(path)
  return require("ctrace.viewer").svg(core.json_decode(g:json{slug = "svg"}), path)
end

-- The replacement model that attributed each graph in this session (weak keys), for g:edge_heads.
local made_by = setmetatable({}, {__mode = "k"})
local RM = core.methods("ctrace.ReplacementModel")
local attribute = RM.attribute
function RM.attribute(rm, ...)
  local g, stats = attribute(rm, ...)
  made_by[g] = rm
  return g, stats
end
local function model_of(g, rm, what)
  rm = rm or made_by[g]
  if not rm then
    error("BAD_ARG: " .. what .. ": this graph was not attributed in this session; give its replacement model", 3)
  end
  return rm
end

-- The m (layer, head, query, key) whose one-hop parts are the largest among g's edges across
-- positions, each split into its top 8 QK pairs: a list for g:set_qk_json.
local function qk_splits(rm, g, m)
  local best, keys = {}, {}
  for _, e in ipairs(g:head_edges()) do
    local s, t = g:node(e.source), g:node(e.target)
    for _, h in ipairs(s.pos ~= t.pos and e.heads or {}) do
      local k = string.format("%d %d %d %d", h.layer, h.head, t.pos, s.pos)
      if not best[k] then keys[#keys + 1] = k; best[k] = 0 end
      best[k] = math.max(best[k], math.abs(h.value))
    end
  end
  table.sort(keys, function(a, b) if best[a] ~= best[b] then return best[a] > best[b] end return a < b end)
  local out, ids = {}, g:tokens()
  for i = 1, math.min(m, #keys) do
    local layer, head, query, key = keys[i]:match("(%d+) (%d+) (%d+) (%d+)")
    local r = rm:qk(ids, {layer = tonumber(layer), head = tonumber(head), query = tonumber(query), key = tonumber(key), top = 8})
    local pairs_ = {}
    for j, x in ipairs(r.terms) do
      pairs_[j] = {query = x.query.node_id, key = x.key.node_id, value = x.value, shift = x.shift}
    end
    out[i] = {layer = r.layer, head = r.head, query = r.query, key = r.key, score = r.score, prob = r.prob, pairs = pairs_}
  end
  return out
end

local prune = M.prune
function M.prune(g, opts)
  local o, heads, qk = {}, nil, nil
  for k, v in pairs(opts or {}) do
    if k == "heads" then heads = v elseif k == "qk" then qk = v else o[k] = v end
  end
  if qk ~= nil and (not heads or type(qk) ~= "number" or qk < 1 or qk % 1 ~= 0) then
    error("BAD_ARG: prune: qk = m (a count from 1) goes with heads = n", 2)
  end
  local p = prune(g, o)
  made_by[p] = made_by[g]
  if heads then
    local rm = model_of(g, nil, "prune{heads}")
    rm:record_heads(p, heads)
    if qk then p:set_qk_json(core.json_encode(qk_splits(rm, p, qk))) end
  end
  return p
end

-- rm: the graph's replacement model when it was not attributed here (loaded from a file)
function M.edge_heads(g, source, target, rm)
  return model_of(g, rm, "edge_heads (give it as g:edge_heads(source, target, rm))"):edge_heads(g, source, target)
end

function M.supernodes(g, opts)
  if opts ~= nil and type(opts) ~= "table" then error("BAD_ARG: supernodes expects an options table; found " .. type(opts), 2) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local rm = made_by[g]
  if rm and o.transcoders == nil then o.transcoders = rm:transcoders() end
  if rm and o.model == nil then o.model = rm:model() end
  return require("ctrace.supernodes").find(g, o)
end

function M.set_supernodes(g, groups)
  if type(groups) ~= "table" then error("BAD_ARG: set_supernodes expects a list of {name =, members =}", 2) end
  local qp = g:qparams()
  qp = qp and core.json_decode(qp) or {pinnedIds = {}, linkType = "both", clickedId = "", sg_pos = ""}
  local n = 0
  for _ in pairs(groups) do n = n + 1 end
  if n ~= #groups then error("BAD_ARG: set_supernodes expects a list (1.." .. #groups .. "), found " .. n .. " entries", 2) end
  local list = {}
  for i, grp in ipairs(groups) do
    if type(grp) ~= "table" or type(grp.name) ~= "string" or type(grp.members) ~= "table" or #grp.members == 0 then
      error("BAD_ARG: set_supernodes: group " .. i .. " needs a name (string) and members (a non-empty list)", 2)
    end
    local entry = {grp.name}
    for _, m in ipairs(grp.members) do entry[#entry + 1] = type(m) == "table" and m.node_id or m end
    list[i] = entry
  end
  qp.supernodes = list
  g:set_qparams(core.json_encode(qp))   -- (an empty table encodes as [])
end

function M.label(g, source)
  return require("ctrace.labels").apply(g, source)
end

function M.top_features(g, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "n" then error("BAD_ARG: top_features: unknown option '" .. tostring(k) .. "' (expected n)", 2) end
  end
  local nodes = g:nodes("feature")
  -- influence is the cumulative rank fraction: smaller means more influential
  table.sort(nodes, function(a, b)
    if a.influence ~= b.influence then return a.influence < b.influence end
    return a.index < b.index
  end)
  local out = {}
  for i = 1, math.min(opts.n or 10, #nodes) do out[i] = nodes[i] end
  return out
end

-- s in double quotes on one line: a quote and a backslash escaped, newlines and tabs as \n, \r
-- and \t, other control characters (C0, DEL) as \ddd, so no token or label can break a line or
-- redraw the terminal
local ESC = {["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ['"'] = '\\"', ["\\"] = "\\\\"}
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or string.format("\\%03d", c:byte()) end) .. '"'
end
M.quote = quote

-- s on one line without quotes (a label): control characters escaped as quote escapes them
local function oneline(s)
  return (s:gsub("%c", function(c) return ESC[c] or string.format("\\%03d", c:byte()) end))
end

function M.summary(g, n)
  local lines = {"prompt: " .. quote(g:prompt())}
  local logits = {}
  for _, l in ipairs(g:logits()) do logits[#logits + 1] = string.format("%s %.3f", quote(l.token), l.prob) end
  lines[#lines + 1] = "logit targets: " .. table.concat(logits, ", ")
  local ok, r, c = pcall(g.scores, g)
  if ok then lines[#lines + 1] = string.format("replacement %.3f, completeness %.3f", r, c) end
  for _, f in ipairs(g:top_features{n = n or 5}) do
    lines[#lines + 1] = string.format("  %-12s act %.3f  influence %.3f%s", f.node_id, f.activation, f.influence,
                                      f.label and ("  " .. oneline(f.label)) or "")
  end
  return table.concat(lines, "\n")
end

return M
