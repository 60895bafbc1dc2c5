-- ctrace.neuronpedia - feature labels and explanation search from Neuronpedia.
--
--   local np = require "ctrace.neuronpedia"      (also ctrace.neuronpedia)
--   np.configure{url = "http://127.0.0.1:8080", concurrency = 4, chunk = 128, timeout = 60,
--                connect_timeout = 10, retries = 4, backoff = 1, backoff_max = 60,
--                cache = true, cache_dir = ..., cache_max = bytes, offline = false,
--                max_body = bytes, min_rate = bytes/s, min_rate_window = s,
--                file_timeout = s (one call, retries included; 0 = none)}
--   np.feature(model_id, source_id, index) -> feature | nil, message, code
--       feature = {model_id, source_id, index, label, explanations = {{description, type, model}},
--                  top_logits = {{token, value}}, bottom_logits, density, max_activation}
--   np.features({{model_id, source_id, index}, ...}) -> list (feature or false per item),
--       errors ({[i] = {message, code}} for the false ones), requests made
--       (the batch endpoint, `chunk` features per request, `concurrency` requests at a time)
--   np.search(query, {model_id =, sources = {...}, offset = 0, pages = 1})
--       -> {results = {{model_id, source_id, index, label, type, cosine}}, has_more, next_offset}
--          | nil, message, code
--   np.url(model_id, source_id, index) -> the feature's dashboard page
--   np.upload(graph or graph JSON path, {slug =, scan =}) -> the graph's page on Neuronpedia
--       (a full graph is pruned first with the default thresholds, as save_json does; needs
--       $NEURONPEDIA_API_KEY; the upload flow of Neuronpedia's own client: signed URL, PUT, save)
--   np.graph(model_id, slug) -> a graph published on Neuronpedia (cached like features; also
--       ctrace.load_graph("https://www.neuronpedia.org/<model>/graph?slug=<slug>") or
--       ctrace.load_graph("neuronpedia:<model>/<slug>"))
--   np.source_of(tc) -> {model_id, source_set} for a transcoder set, or nil
--
-- The server is $CTRACE_NEURONPEDIA_URL or https://www.neuronpedia.org; $NEURONPEDIA_API_KEY is
-- sent as x-api-key to that server only. Features are cached on disk (ctrace's cache directory,
-- see README); offline mode ($CTRACE_OFFLINE or $HF_HUB_OFFLINE) answers from the cache only.
-- Codes: NOT_FOUND, RATE_LIMITED, TIMEOUT, NETWORK, HTTP, BAD_RESPONSE, TOO_LARGE, OFFLINE,
-- CANCELLED.
local core = require "ctrace.core"
local M = {}

local settings = {}

-- The settings live in the Lua state's context (and a copy here, for settings() and url()).
function M.configure(t)
  settings = core.net_configure("neuronpedia", t)   -- raises on unknown or bad options
end

function M.settings()
  local c = {}
  for k, v in pairs(settings) do c[k] = v end
  return c
end

function M.feature(model_id, source_id, index)
  return core.np_feature(model_id, source_id, index)
end

function M.features(list)
  return core.np_features(list)
end

function M.search(query, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "model_id" and k ~= "sources" and k ~= "offset" and k ~= "pages" then
      error("BAD_ARG: neuronpedia.search: unknown option '" .. tostring(k) .. "' (expected model_id, sources, offset, pages)", 2)
    end
  end
  if type(query) ~= "string" or #query < 3 then error("BAD_ARG: neuronpedia.search: the query must be a string of 3 characters or more", 2) end
  if type(opts.model_id) ~= "string" then error("BAD_ARG: neuronpedia.search: model_id (a string) is required", 2) end
  local out = {results = {}, has_more = false}
  local offset = opts.offset or 0
  for _ = 1, opts.pages or 1 do
    local page, msg, code = core.np_search(opts.model_id, opts.sources or {}, query, offset)
    if not page then return nil, msg, code end
    for _, r in ipairs(page.results) do out.results[#out.results + 1] = r end
    out.has_more, out.next_offset = page.has_more, page.next_offset
    if not page.has_more or not page.next_offset then break end
    offset = page.next_offset
  end
  return out
end

function M.url(model_id, source_id, index)
  local base = settings.url or os.getenv("CTRACE_NEURONPEDIA_URL") or "https://www.neuronpedia.org"
  return string.format("%s/%s/%s/%d", base:gsub("/+$", ""), model_id, source_id, index)
end

-- Transcoder sets Neuronpedia has dashboards for, by Hugging Face repository (the part of a
-- set's scan before any "//" or "@").
M.sources = {
  ["mntss/gemma-scope-transcoders"] = {model_id = "gemma-2-2b", source_set = "gemmascope-transcoder-16k"},
  ["mwhanna/gemma-scope-transcoders"] = {model_id = "gemma-2-2b", source_set = "gemmascope-transcoder-16k"},
  ["mntss/clt-gemma-2-2b-2.5M"] = {model_id = "gemma-2-2b", source_set = "clt-hp"},
  ["mwhanna/qwen3-4b-transcoders"] = {model_id = "qwen3-4b", source_set = "transcoder-hp"},
  ["mwhanna/qwen3-8b-transcoders"] = {model_id = "qwen3-8b", source_set = "transcoder-hp"},
  ["mwhanna/qwen3-14b-transcoders"] = {model_id = "qwen3-14b", source_set = "transcoder-hp"},
  ["mwhanna/qwen3-0.6b-transcoders-lowl0"] = {model_id = "qwen3-0.6b", source_set = "transcoder-hp-lowl0"},
  ["mwhanna/qwen3-1.7b-transcoders-lowl0"] = {model_id = "qwen3-1.7b", source_set = "transcoder-hp-lowl0"},
  ["mwhanna/qwen3-14b-transcoders-lowl0"] = {model_id = "qwen3-14b", source_set = "transcoder-hp-lowl0"},
}

-- A transcoder set's Neuronpedia ids: its config's neuronpedia_model_id / neuronpedia_source_set
-- when set, else the table above by repository.
function M.source_of(tc)
  if tc.neuronpedia_model_id and tc.neuronpedia_model_id ~= "" then
    return {model_id = tc.neuronpedia_model_id, source_set = tc.neuronpedia_source_set}
  end
  local repo = (tc.scan or ""):match("^([^/@]+/[^/@]+)")
  return repo and M.sources[repo]
end

-- Graphs

function M.upload(g, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "slug" and k ~= "scan" then error("BAD_ARG: neuronpedia.upload: unknown option '" .. tostring(k) .. "' (expected slug, scan)", 2) end
  end
  local text
  if type(g) == "string" then   -- a graph JSON file: as it is (its metadata names slug and scan)
    local f = assert(io.open(g, "rb"))
    text = f:read("*a")
    f:close()
  else
    text = g:json{slug = opts.slug, scan = opts.scan}
  end
  local slug = opts.slug or text:match('"slug"%s*:%s*"([^"]*)"') or ""
  -- the scan is Neuronpedia's model id: checked before the bytes go out (save-to-db refuses
  -- anything but [A-Za-z0-9_-], and model ids it does not know)
  local scan = text:match('"scan"%s*:%s*"([^"]*)"') or ""
  if not scan:match("^[%w_-]+$") or scan == "ctrace" then
    error("BAD_ARG: neuronpedia.upload: the graph's scan '" .. scan .. "' is no Neuronpedia model id; give one " ..
          "(scan = \"gemma-2-2b\", ctrace upload --scan)", 2)
  end
  return core.np_upload_graph(text, slug)
end

function M.graph(model_id, slug)
  return core.parse_graph_json(core.np_graph(model_id, slug), "neuronpedia:" .. model_id .. "/" .. slug)
end

-- model_id, slug of a Neuronpedia graph reference (its page URL, or neuronpedia:<model>/<slug>),
-- or nil
function M.graph_ref(ref)
  local model, slug = ref:match("^neuronpedia:([^/]+)/(.+)$")
  if model then return model, slug end
  model, slug = ref:match("^https?://[%w.]*neuronpedia%.org/([^/]+)/graph%?slug=([^&#]+)")
  if model then return model, (slug:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
  return nil
end

return M
