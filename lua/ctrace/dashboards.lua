-- ctrace.dashboards - feature dashboards computed over a corpus, stored beside a transcoder set.
--
--   local dash = require "ctrace.dashboards"
--   local d = dash.compute(model, tc, texts, {examples = 8, logits = 5})
--   dash.save(d, dir)                        -- dir/dashboards.json
--   local d = dash.load(dir)
--   local f = dash.feature(d, model, layer, index)
--       -> {layer, index, density, max, examples = {{text, position, activation, tokens, marked}},
--           top_logits = {{token, value}}, bottom_logits = ..., label}
--   dash.feature_files(model, d, dir) -> the number of features written: the dashboards as the
--       feature files circuit-tracer's viewer reads for a local scan (its --features_dir)
--   dash.annotate(graph, model, d) -> viewer table: labels every feature node of the graph from
--       its dashboard and returns the dashboards of those features in the form ctrace.viewer
--       shows ({["layer_index"] = {top = {{context, activation}}, logits = {tokens}}})
-- Density is the fraction of corpus tokens (position >= 1) on which the feature is active (a
-- non-zero activation, negative TopK values included); examples are the top activations by
-- value (negative ones rank below every positive one; max may be negative for a feature active
-- only below zero), each with a window of tokens around the activating one (tokens[marked] is
-- the activating token).
local ct = require "ctrace"
local M = {}

function M.compute(model, tc, texts, opts)
  opts = opts or {}
  local n_ex, n_logits = opts.examples or 8, opts.logits or 5
  local L = tc.n_layers
  local hooks = {}
  for l = 0, L - 1 do hooks[l + 1] = "blocks." .. l .. "." .. tc.feature_input_hook end
  local corpus, count, top, n_tokens = {}, {}, {}, 0
  for l = 0, L - 1 do count[l], top[l] = {}, {} end
  for ti, text in ipairs(texts) do
    local ids = model:tokenize(text)
    corpus[ti] = ids
    n_tokens = n_tokens + #ids - 1
    local _, cache = model:run_with_cache(ids, {hooks = hooks})
    for l = 0, L - 1 do
      local pos, idx, val = tc:encode_sparse(l, cache[hooks[l + 1]])
      local c, tp = count[l], top[l]
      for i = 1, #pos do
        if pos[i] > 0 then
          local f, a = idx[i], val[i]
          c[f] = (c[f] or 0) + 1
          local list = tp[f]
          if not list then list = {} tp[f] = list end
          if #list < n_ex or a > list[#list][3] then   -- keep the n_ex largest, descending
            local j = #list < n_ex and #list + 1 or #list
            list[j] = {ti, pos[i], a}
            while j > 1 and list[j - 1][3] < list[j][3] do list[j - 1], list[j] = list[j], list[j - 1] j = j - 1 end
          end
        end
      end
    end
  end
  local layers = {}
  for l = 0, L - 1 do
    local feats = {}
    for f = 0, tc:d_transcoder(l) - 1 do
      local ex = top[l][f] or {}
      local lg = tc:top_logits(model, l, f, n_logits)
      local function ids_of(list)
        local out = {}
        for i, x in ipairs(list) do out[i] = {x.id, x.value} end
        return out
      end
      feats[f + 1] = {density = (count[l][f] or 0) / math.max(1, n_tokens), max = ex[1] and ex[1][3] or 0,
                      examples = ex, top_logits = ids_of(lg.top), bottom_logits = ids_of(lg.bottom)}
    end
    layers[l + 1] = feats
  end
  return {corpus = corpus, n_tokens = n_tokens, window = {opts.before or 8, opts.after or 2}, layers = layers}
end

function M.save(d, dir)
  local path = dir .. "/dashboards.json"
  ct.write_file(path, ct.json_encode(d))
  return path
end

local cache = {}
function M.load(dir)
  if cache[dir] then return cache[dir] end
  local f = io.open(dir .. "/dashboards.json", "rb")
  if not f then return nil, "NOT_FOUND: no dashboards.json in " .. dir end
  local d = ct.json_decode(f:read("*a"))
  f:close()
  cache[dir] = d
  return d
end

local quote = require("ctrace.graph").quote   -- tokens on one line (a newline token as \n)

-- A short label from the dashboard: the tokens the feature fires on most, and its top logits.
local function label(fe)
  local seen, on = {}, {}
  for _, e in ipairs(fe.examples) do
    local tok = e.tokens[e.marked]
    if not seen[tok] and #on < 3 then seen[tok] = true on[#on + 1] = quote(tok) end
  end
  local out = {}
  for i = 1, math.min(3, #fe.top_logits) do out[i] = quote(fe.top_logits[i].token) end
  if #on == 0 then return "never active on the corpus" end
  return "on " .. table.concat(on, ", ") .. " -> " .. table.concat(out, ", ")
end

function M.feature(d, model, layer, index)
  local fe = d.layers[layer + 1] and d.layers[layer + 1][index + 1]
  if not fe then error(string.format("OUT_OF_RANGE: no feature %d in layer %d of the dashboards", index, layer), 2) end
  local function piece(id) return model:token_label(id) end   -- the id itself without a tokenizer
  local out = {layer = layer, index = index, density = fe.density, max = fe.max, examples = {}, top_logits = {},
               bottom_logits = {}}
  local before, after = d.window[1], d.window[2]
  for i, e in ipairs(fe.examples) do
    local ids, p = d.corpus[e[1]], e[2] + 1   -- 1-based index of the activating token
    local tokens, lo = {}, math.max(2, p - before)
    for j = lo, math.min(#ids, p + after) do tokens[#tokens + 1] = piece(ids[j]) end
    out.examples[i] = {text = e[1], position = e[2], activation = e[3], tokens = tokens, marked = p - lo + 1}
  end
  for i, x in ipairs(fe.top_logits) do out.top_logits[i] = {id = x[1], token = piece(x[1]), value = x[2]} end
  for i, x in ipairs(fe.bottom_logits) do out.bottom_logits[i] = {id = x[1], token = piece(x[1]), value = x[2]} end
  out.label = label(out)
  return out
end

function M.annotate(graph, model, d)
  local out = setmetatable({}, {})
  for _, n in ipairs(graph:nodes("feature")) do
    local key = n.layer .. "_" .. n.feature
    if not out[key] then
      local fe = M.feature(d, model, n.layer, n.feature)
      local top, logits = {}, {}
      for i, e in ipairs(fe.examples) do
        local parts = {}
        for j, t in ipairs(e.tokens) do parts[j] = j == e.marked and ("[" .. t .. "]") or t end
        top[i] = {table.concat(parts), e.activation}
      end
      for i, x in ipairs(fe.top_logits) do logits[i] = x.token end
      out[key] = {top = top, logits = logits, label = fe.label}
    end
    graph:set_label(n, out[key].label)
  end
  return out
end

-- Feature files in the format circuit-tracer's viewer reads for a scan that starts with "/" (its
-- start-server --features_dir DIR serves them under /features/): DIR/index.json.gz, a
-- zlib-compressed JSON list with, for each layer, {filename = "layer_<l>.bin", offsets} (the byte
-- offset of each feature's record and the end), and DIR/layer_<l>.bin, each feature a record of a
-- 4-byte little-endian length and that many bytes of zlib-compressed JSON: {index (the Cantor pair
-- of layer and index, as graph JSON nodes name features), examples_quantiles = {{quantile_name,
-- examples = {{tokens, tokens_acts_list, train_token_ind, is_repeated_datapoint}}}}, top_logits,
-- bottom_logits (token texts), act_min, act_max}. ctrace's dashboards keep one activation an
-- example (the marked token's); the others are 0.
function M.feature_files(model, d, dir)
  local core = require "ctrace.core"
  local function u32(n) return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
                                           math.floor(n / 16777216) % 256) end
  ct.mkdirs(dir)
  local index, count = {}, 0
  for l = 0, #d.layers - 1 do
    local parts, offsets, at = {}, {0}, 0
    for f = 0, #d.layers[l + 1] - 1 do
      local fe = M.feature(d, model, l, f)
      local examples, act_max = {}, 0
      for i, e in ipairs(fe.examples) do
        local acts = {}
        for j = 1, #e.tokens do acts[j] = j == e.marked and e.activation or 0 end
        examples[i] = {tokens = e.tokens, tokens_acts_list = acts, train_token_ind = e.marked - 1,
                       is_repeated_datapoint = false}
        act_max = math.max(act_max, e.activation)
      end
      local top, bottom = {}, {}
      for i, x in ipairs(fe.top_logits) do top[i] = x.token end
      for i, x in ipairs(fe.bottom_logits) do bottom[i] = x.token end
      local json = ct.json_encode({index = (l + f) * (l + f + 1) / 2 + f, act_min = 0, act_max = act_max,
                                   examples_quantiles = {{quantile_name = "Top activations", examples = examples}},
                                   top_logits = top, bottom_logits = bottom, density = fe.density})
      local z = core.zlib_compress(json)
      parts[#parts + 1] = u32(#z) .. z
      at = at + 4 + #z
      offsets[#offsets + 1] = at
      count = count + 1
    end
    local name = "layer_" .. l .. ".bin"
    ct.write_file(dir .. "/" .. name, table.concat(parts))
    index[l + 1] = {filename = name, offsets = offsets}
  end
  ct.write_file(dir .. "/index.json.gz", core.zlib_compress(ct.json_encode(index)))
  return count
end

return M
