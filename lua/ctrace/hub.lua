-- ctrace.hub - files from Hugging Face repositories, in the standard hub cache (shared with
-- huggingface_hub: files either downloaded are reused by the other).
--
--   local hub = require "ctrace.hub"            (also ctrace.hub)
--   hub.configure{url = HF endpoint, timeout =, retries =, backoff =, offline =, progress =,
--                 min_rate = bytes/s, min_rate_window = s, file_timeout = s, max_file = bytes}
--       (a file never grows past its announced size, else max_file: TOO_LARGE, nothing kept;
--        file_timeout bounds one file as a whole, 0 = none; see README "Labels and downloads")
--   hub.file("hf://org/repo/path?revision=main") -> local path | nil, message, code
--   hub.cached(uri) -> local path | nil, message, code     (never touches the network)
--   hub.snapshot("org/repo" or "hf://org/repo?revision=r", {pattern, ...})
--       -> snapshot directory, {paths matched}, commit | nil, message, code
--       the repository's files at one commit whose paths match the patterns (shell wildcards in
--       the last segment: "config.yaml", "sub/dir/layer_*.safetensors"), listed and fetched as
--       huggingface_hub's snapshot_download does (see README "Labels and downloads")
--   hub.escape(name) -> a pattern matching exactly that file name
--   hub.model("org/repo" or "hf://org/repo?revision=r") -> local snapshot directory (raises):
--       config.json, tokenizer.json when the repository has one, the chat template when it has
--       one (tokenizer_config.json, chat_template.jinja, chat_template.json), and the safetensors
--       weights (model.safetensors, or model.safetensors.index.json and every shard it names), all
--       at the commit the revision names
--   hub.default_model() -> directory of stories260K downloaded from karpathy/tinyllamas, each
--       file checked against its pinned SHA-256 (raises)
--
-- Endpoint $HF_ENDPOINT (default https://huggingface.co); cache $HF_HUB_CACHE, $HF_HOME/hub or
-- ~/.cache/huggingface/hub; $HF_TOKEN sent to the endpoint only; $HF_HUB_OFFLINE=1 (or
-- $CTRACE_OFFLINE=1) never touches the network. Codes as ctrace.neuronpedia, plus CHECKSUM.
local core = require "ctrace.core"
local M = {}

-- The settings live in the Lua state's context, where every download of this state finds them
-- (hf:// entries of a transcoder config.yaml included).
function M.configure(t)
  core.net_configure("hub", t)   -- raises on unknown or bad options
end

function M.file(uri)
  return core.hub_file(uri)
end

function M.cached(uri)
  return core.hub_cached(uri)
end

function M.snapshot(repo, patterns)
  return core.hub_snapshot(repo, patterns)
end

function M.escape(name)
  return (name:gsub("[%*%?%[%]\\]", "\\%0"))
end

local function must(uri)
  local p, msg, code = M.file(uri)
  if not p then error(code .. ": " .. msg, 3) end
  return p
end

-- "org/repo", "org/repo?revision=r", "hf://org/repo..." -> repo, revision
local function split_repo(s)
  s = s:gsub("^hf://", "")
  local repo, rev = s:match("^([^?]+)%?revision=(.+)$")
  repo = repo or s
  if not repo:match("^[%w._-]+/[%w._-]+$") then
    error("BAD_ARG: '" .. s .. "': expected org/repo or hf://org/repo[?revision=...]", 3)
  end
  return repo, rev or "main"
end

local function uri(repo, rev, path)
  return "hf://" .. repo .. "/" .. path .. (rev ~= "main" and ("?revision=" .. rev) or "")
end

local function repo_uri(repo, rev)
  return "hf://" .. repo .. (rev ~= "main" and ("?revision=" .. rev) or "")
end

-- The snapshot (raises): directory, set of the paths matched, commit.
local function snap(repo, rev, patterns)
  local dir, files, commit = M.snapshot(repo_uri(repo, rev), patterns)
  if not dir then error(commit .. ": " .. files, 3) end
  local have = {}
  for _, f in ipairs(files) do have[f] = true end
  return dir, have, commit
end

function M.model(id)
  local repo, rev = split_repo(id)
  local where = repo_uri(repo, rev)
  local dir, have, commit = snap(repo, rev, {"config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json",
                                             "tokenizer_config.json", "chat_template.jinja", "chat_template.json"})
  if not have["config.json"] then error("NOT_FOUND: " .. where .. " has no config.json", 2) end
  if not have["model.safetensors"] then
    if not have["model.safetensors.index.json"] then
      error("NOT_FOUND: " .. where .. " holds neither model.safetensors nor model.safetensors.index.json", 2)
    end
    local f = assert(io.open(dir .. "/model.safetensors.index.json", "rb"))
    local ok, j = pcall(core.json_decode, f:read("*a"))
    f:close()
    local shards, seen = {}, {}
    for _, file in pairs(ok and type(j) == "table" and type(j.weight_map) == "table" and j.weight_map or {}) do
      if type(file) ~= "string" or file:find("/", 1, true) or file == "" then
        error("BAD_FORMAT: " .. where .. ": model.safetensors.index.json maps a tensor to '" .. tostring(file) ..
              "'; expected a file name beside it", 2)
      end
      if not seen[file] then seen[file] = true shards[#shards + 1] = file end
    end
    if #shards == 0 then error("BAD_FORMAT: " .. where .. ": model.safetensors.index.json has no weight_map", 2) end
    table.sort(shards)
    for first = 1, #shards, 64 do   -- every shard at the same commit, in snapshots of up to 64 names
      local pats = {}
      for i = first, math.min(#shards, first + 63) do pats[#pats + 1] = M.escape(shards[i]) end
      local _, got = snap(repo, commit, pats)
      for i = first, math.min(#shards, first + 63) do
        if not got[shards[i]] then
          error("NOT_FOUND: " .. where .. ": model.safetensors.index.json names " .. shards[i] .. ", which the repository does not hold", 2)
        end
      end
    end
  end
  return dir
end

-- The embedded default model's files, pinned (the hashes in ../shared/models/stories260K/README.md).
M.stories260K = {
  repo = "karpathy/tinyllamas",
  files = {
    {"stories260K/stories260K.bin", "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"},
    {"stories260K/tok512.bin", "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"},
  },
}

-- Downloads files pinned by SHA-256 ({repo, files = {{path, sha256}}}) and returns the
-- directory of the first one. A file whose hash differs is an error naming both hashes.
function M.pinned(spec)
  local dir
  for _, f in ipairs(spec.files) do
    local p = must(uri(spec.repo, spec.revision or "main", f[1]))
    local got = core.sha256(p)
    if got ~= f[2] then
      error("CHECKSUM: hf://" .. spec.repo .. "/" .. f[1] .. " has sha256 " .. got .. "; expected " .. f[2], 2)
    end
    dir = dir or p:match("^(.*)/[^/]*$")
  end
  return dir
end

function M.default_model()
  return M.pinned(M.stories260K)
end

return M
