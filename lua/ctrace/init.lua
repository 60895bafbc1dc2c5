-- ctrace: circuit tracing with a C engine. require "ctrace" gives this module.
--
-- ctrace.load_model(path_or_name)   llama2.c .bin, a directory holding one, a Hugging Face
--                                   directory or repository ("org/repo", "hf://org/repo"), or
--                                   the name "stories260K" (the default model)
-- ctrace.load_tokenizer(path)       tok512.bin, tokenizer.json, or a Hugging Face repository's
-- ctrace.tensor{...}, ctrace.zeros(d1, d2, ...)
-- ctrace.load_transcoders(path_or_name)
-- ctrace.replacement_model(model, transcoders [, {constant_positions = n}])
--                                   rm:attribute(prompt, opts) -> ctrace.Graph; a prompt is text,
--                                   token ids or a chat {chat = {{role =, content =}, ...}}
-- ctrace.chat                       chat templates (m:apply_chat_template(messages, opts))
-- ctrace.load_graph(path)           graph JSON, a full graph (.pt, .safetensors), or a Neuronpedia graph
-- ctrace.neuronpedia, ctrace.hub, ctrace.labels   feature labels, Hugging Face files, label sources
local core = require "ctrace.core"
require "ctrace.transcoders"   -- Lua methods of ctrace.Transcoders
require "ctrace.graph"         -- Lua methods of ctrace.Graph
local intervention = require "ctrace.intervention"   -- rm:intervene, rm:generate, supernodes
local dist = require "ctrace.dist"
local chat = require "ctrace.chat"   -- chat prompts ({chat = messages}) on models and replacement models

local M = {
  version = core.version,
  blas_core = core.blas_core,   -- the OpenBLAS kernel family in use
  root = core.root,
  tensor = core.tensor,
  zeros = core.zeros,
  threads = core.threads,
  -- the MPI job this process is a rank of: rank, size, mpi, map(items, fn) (ctrace.dist)
  dist = dist,
  mem_bytes = core.mem_bytes,
  clock = core.clock,   -- monotonic wall-clock seconds
  json_encode = core.json_encode,   -- (value [, pretty]) -> string
  json_decode = core.json_decode,
  replacement_model = core.replacement_model,
  sha256 = core.sha256,       -- (path) -> hex digest of a file
  peak_rss = core.peak_rss,   -- peak resident memory of the process, bytes
  memory = core.memory,       -- {rss, anon, file, peak_rss} bytes now (/proc/self/status), or nil
  mkdirs = core.mkdirs,       -- (path) creates a directory and its parents
  list_dir = core.list_dir,   -- (path) -> sorted entry names, is_directory
  exists = core.exists,       -- (path) -> "file", "directory" or nil
  -- (path, text): the file's new content, whole or not at all (a temporary file synced and
  -- renamed; a full disk raises IO and leaves the old file); every ctrace writer goes through it.
  -- Under MPI, rank 0 writes (ctrace.dist.writes)
  write_file = function(path, text)
    if dist.writes() then return core.write_file(path, text) end
  end,
  -- (path, {name = tensor, ...} [, {key = "string"}]): F32 safetensors, names sorted, written as
  -- write_file writes (whole or not at all); under MPI, rank 0 writes
  save_safetensors = function(path, tensors, metadata)
    if dist.writes() then return core.save_safetensors(path, tensors, metadata) end
  end,
  supernode = intervention.supernode,
  -- (path or Neuronpedia graph reference): graph JSON, full graph (.pt, .safetensors), or a graph
  -- published on Neuronpedia (its page URL, or neuronpedia:<model>/<slug>)
  load_graph = function(ref)
    local np = require "ctrace.neuronpedia"
    local model, slug
    if type(ref) == "string" then model, slug = np.graph_ref(ref) end
    if model then return np.graph(model, slug) end
    return core.load_graph(ref)
  end,
}

-- Whether a path is there, as a probe: a path outside a run's read roots counts as absent (the
-- load that follows says why it is refused).
local function exists(p)
  local ok, what = pcall(core.exists, p)
  return ok and what or nil
end

-- Directories searched for named models: $CTRACE_MODELS, then ../shared/models beside the
-- project.
function M.model_dirs()
  local dirs = {}
  local env = os.getenv("CTRACE_MODELS")
  if env and env ~= "" then dirs[#dirs + 1] = env end
  if M.root then dirs[#dirs + 1] = M.root .. "/../shared/models" end
  return dirs
end

-- Levenshtein distance of a and b (short strings: names and flags)
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:byte(i) == b:byte(j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

-- The closest of names to name, when it is close enough to be a likely typo; else nil.
function M.closest(name, names)
  local best, bd
  for _, n in ipairs(names) do
    local d = distance(name, n)
    if not bd or d < bd or (d == bd and n < best) then best, bd = n, d end
  end
  return best and bd <= math.max(2, math.floor(#name / 4)) and best or nil
end

-- " (did you mean 'x'?)" for a name close to one of names (a case slip or a typo), else "".
local function did_you_mean(name, names)
  for _, n in ipairs(names) do
    if n:lower() == name:lower() then return " (did you mean '" .. n .. "'?)" end
  end
  local near = M.closest(name, names)
  return near and (" (did you mean '" .. near .. "'?)") or ""
end

-- Resolves a model name ("stories260K") to a path; other strings are returned unchanged.
function M.resolve_model(name)
  if type(name) ~= "string" then
    error("BAD_ARG: ctrace.load_model expects a path or model name, got " .. type(name), 3)
  end
  if name:find("/", 1, true) or exists(name) then return name end
  for _, dir in ipairs(M.model_dirs()) do
    local p = dir .. "/" .. name
    if exists(p .. "/" .. name .. ".bin") or exists(p .. "/config.json") then return p end
  end
  local known = {}
  for _, dir in ipairs(M.model_dirs()) do
    local ok, names = pcall(core.list_dir, dir)
    for _, n in ipairs(ok and names or {}) do known[#known + 1] = n end
  end
  error("NOT_FOUND: no model named '" .. name .. "'" .. did_you_mean(name, known) .. " (looked in " ..
        table.concat(M.model_dirs(), ", ") .. "; set CTRACE_MODELS or pass a path)", 3)
end

-- The results folder of an experiment script: pass arg[0]. Under `ctrace run`, the run's
-- staging directory (it becomes the folder's results/ when the run succeeds); otherwise the
-- script's folder's results/, created.
function M.results_dir(script)
  if core.run_results then return core.run_results end
  local dir = (type(script) == "string" and script:match("^(.*)/[^/]*$") or ".") .. "/results"
  core.mkdirs(dir)
  return dir
end

-- Writes value as indented JSON and a newline to path (whole or not at all, as write_file).
function M.write_json(path, value)
  M.write_file(path, core.json_encode(value, true) .. "\n")
end

-- Raises for a name that is no local path and could not be had from Hugging Face either.
local function not_local(name, code, msg)
  error((code or "NOT_FOUND") .. ": '" .. name .. "' is not a local path; from Hugging Face: " .. msg, 0)
end

-- The local path of a Hugging Face file fetched for name (what the caller passed).
local function fetched(name, uri)
  local p, msg, code = M.hub.file(uri)
  if not p then not_local(name, code, msg) end
  return p
end

-- A model: a local path, a name in the model directories, "stories260K" (downloaded from
-- karpathy/tinyllamas when not on disk), or a Hugging Face repository ("org/repo",
-- "hf://org/repo?revision=r") fetched into the hub cache.
-- dtype names as circuit-tracer's --dtype takes them (and torch's), by the engine's name
local DTYPES = {float32 = "F32", fp32 = "F32", bfloat16 = "BF16", bf16 = "BF16", float16 = "F16", fp16 = "F16",
                half = "F16", F32 = "F32", BF16 = "BF16", F16 = "F16"}

-- opts.dtype: the weights held as the checkpoint saved in that dtype holds them ("float32",
-- "bfloat16", "float16"); without it, as stored. See README, "--dtype".
-- opts.layer_split: under MPI, this rank holds only its share of the layers (README, "Layers
-- across ranks"); load the transcoders with it too. One process holds them all.
function M.load_model(path_or_name, opts)
  local dtype, split
  if opts ~= nil and type(opts) ~= "table" then
    error("BAD_ARG: load_model: options must be a table ({dtype = ..., layer_split = ...}), not a " .. type(opts), 2)
  end
  for k, v in pairs(opts or {}) do
    if k == "dtype" then
      dtype = DTYPES[v] or error("BAD_ARG: load_model: dtype " .. tostring(v) .. "; expected float32, bfloat16 or float16", 2)
    elseif k == "layer_split" then
      if type(v) ~= "boolean" then error("BAD_ARG: load_model: layer_split expects a boolean, got " .. type(v), 2) end
      split = v
    else
      error("BAD_ARG: load_model: unknown option '" .. tostring(k) .. "' (expected dtype or layer_split)", 2)
    end
  end
  local load_model = function(p) return core.load_model(p, dtype, split) end
  if type(path_or_name) == "string" and not exists(path_or_name) then
    if path_or_name:match("^hf://") or path_or_name:match("^[%w._-]+/[%w._-]+$") or path_or_name:match("^[%w._-]+/[%w._-]+%?revision=") then
      local ok, dir = pcall(M.hub.model, path_or_name)
      if not ok then
        local status, msg = tostring(dir):match("^([A-Z_]+): (.*)$")
        not_local(path_or_name, status, msg or tostring(dir))
      end
      return load_model(dir)
    end
    if path_or_name == "stories260K" then
      local ok, p = pcall(M.resolve_model, path_or_name)
      if ok then return load_model(p) end
      local got, dir = pcall(M.hub.default_model)
      if not got then error(tostring(p):gsub("^[^:]*:%d+: ", "") .. "; downloading it failed: " .. tostring(dir), 0) end
      return load_model(dir)
    end
  end
  return load_model(M.resolve_model(path_or_name))
end

-- A tokenizer file, or a Hugging Face repository's tokenizer.json ("org/repo", "hf://org/repo",
-- "hf://org/repo/path/tokenizer.json").
function M.load_tokenizer(path)
  if type(path) == "string" and not exists(path) and (path:match("^hf://") or path:match("^[%w._-]+/[%w._-]+$")) then
    local uri = path:match("^hf://[^/]+/[^/?]+/") and path or ("hf://" .. path:gsub("^hf://", "") .. "/tokenizer.json")
    path = fetched(path, uri)
  end
  return core.load_tokenizer(path)
end

-- Default transcoder sets of named models, in the project.
M.default_transcoders = {stories260K = "experiments/stories260K-transcoders/transcoders",
                         ["stories260K-clt"] = "experiments/stories260K-transcoders/clt"}

-- circuit-tracer's short names for transcoder sets.
-- circuit-tracer's short names (its utils/hf_utils.py)
M.transcoder_sets = {gemma = "mwhanna/gemma-scope-transcoders", llama = "mntss/transcoder-Llama-3.2-1B"}

-- A transcoder set's Hugging Face name, as circuit-tracer takes it: "org/repo", "org/repo/folder",
-- "org/repo//folder" (its scan form), each with "@revision"; "hf://org/repo[/path][?revision=r]".
-- -> {repo, folder, rev, given_rev, file = path of a config (.yaml) or of a single transcoder
-- file (.npz, .safetensors) named in the address}, or nil when s is no such name.
local function hub_ref(s)
  local repo, path, rev, given
  if s:match("^hf://") then
    local body, query = s:sub(6):match("^([^?]*)(.*)$")
    rev = query == "" and "main" or query:match("^%?revision=(.+)$")
    given = query ~= ""
    repo, path = body:match("^([%w._-]+/[%w._-]+)(.*)$")
  else
    local ref, r = s:match("^([^@]*)@(.*)$")   -- the first "@" starts the revision
    ref, rev, given = ref or s, r or "main", r ~= nil
    repo, path = ref:match("^([%w._-]+/[%w._-]+)(.*)$")
  end
  if not repo or not rev or rev == "" or not (path == "" or path:match("^/")) then return nil end
  path = path:gsub("^//?", ""):gsub("/+$", "")
  local file = (path:match("%.ya?ml$") or path:match("%.npz$") or path:match("%.safetensors$")) and path or nil
  local folder = file and (file:match("^(.*)/[^/]*$") or "") or path
  return {repo = repo, folder = folder, rev = rev, given_rev = given, file = file}
end

-- A set from Hugging Face: its config.yaml (or the .yaml named) at the commit the revision names;
-- the files a config without a `transcoders` list needs (layer_*.safetensors, or W_enc_* and
-- W_dec_* for a cross-layer set) from the same folder at the same commit (circuit-tracer's
-- snapshot_download); the files a list names are fetched by the loader, each by its hf:// address.
local function hub_transcoders(name, ref, split)
  local F = ref.folder ~= "" and (ref.folder .. "/") or ""
  local function snap(rev, patterns)
    local dir, files, code = M.hub.snapshot("hf://" .. ref.repo .. (rev ~= "main" and ("?revision=" .. rev) or ""), patterns)
    if not dir then not_local(name, code, files) end
    return dir, files
  end
  local where = "hf://" .. ref.repo .. "/" .. F
  local cfg_name = ref.file and ref.file:match("[^/]*$") or "config.yaml"
  local dir, files, commit = M.hub.snapshot("hf://" .. ref.repo .. (ref.rev ~= "main" and ("?revision=" .. ref.rev) or ""),
                                            {F .. M.hub.escape(cfg_name)})
  if not dir then not_local(name, commit, files) end
  if #files == 0 then not_local(name, "NOT_FOUND", where .. cfg_name .. " does not exist (revision " .. ref.rev .. ")") end
  local cfg = dir .. "/" .. F .. cfg_name
  local info = core.transcoder_config(cfg)
  if not info.lists_files then
    local kind = info.model_kind
    local names = kind == "cross_layer_transcoder" and {"W_enc_*.safetensors", "W_dec_*.safetensors"}
                  or kind == "transcoder_set" and {"layer_*.safetensors"}
                  or {"layer_*.safetensors", "W_enc_*.safetensors", "W_dec_*.safetensors"}
    local pats = {}
    for i, p in ipairs(names) do pats[i] = F .. p end
    local _, got = snap(commit, pats)
    if #got == 0 then
      not_local(name, "NOT_FOUND", where .. cfg_name .. " lists no transcoder files and " .. where .. " holds no " ..
                table.concat(names, " or "))
    end
  end
  local scan = ref.repo .. (ref.folder ~= "" and ("//" .. ref.folder) or "") .. (ref.given_rev and ("@" .. ref.rev) or "")
  return core.load_transcoders(cfg, {scan = scan, layer_split = split})
end

-- A transcoder set: config.yaml, a directory, one .npz / .safetensors file, the name of a
-- model with a default set ("stories260K"), or a set on Hugging Face by circuit-tracer's names:
-- "gemma", "llama", "org/repo", "org/repo/folder", "org/repo//folder", each with "@revision",
-- and hf:// addresses of a repository, a folder, a config.yaml or one transcoder file.
-- opts.layer_split: under MPI, this rank's share of the layers only (as load_model's).
function M.load_transcoders(path_or_name, opts)
  local split
  if opts ~= nil and type(opts) ~= "table" then
    error("BAD_ARG: load_transcoders: options must be a table ({layer_split = ...}), not a " .. type(opts), 2)
  end
  for k, v in pairs(opts or {}) do
    if k ~= "layer_split" then error("BAD_ARG: load_transcoders: unknown option '" .. tostring(k) .. "' (expected layer_split)", 2) end
    if type(v) ~= "boolean" then error("BAD_ARG: load_transcoders: layer_split expects a boolean, got " .. type(v), 2) end
    split = v
  end
  local held = {layer_split = split}
  local default = M.default_transcoders[path_or_name]
  if default and not exists(path_or_name) then
    local p = (M.root or ".") .. "/" .. default
    if not exists(p .. "/config.yaml") then
      error("NOT_FOUND: the default transcoders of " .. path_or_name .. " are missing at " .. p ..
            " (regenerate them with experiments/stories260K-transcoders/train.lua)", 2)
    end
    return core.load_transcoders(p, held)
  end
  if type(path_or_name) == "string" and not exists(path_or_name) then
    local ref = hub_ref(M.transcoder_sets[path_or_name] or path_or_name)
    if ref and ref.file and not ref.file:match("%.ya?ml$") then   -- one transcoder file
      local uri = "hf://" .. ref.repo .. "/" .. ref.file .. (ref.rev ~= "main" and ("?revision=" .. ref.rev) or "")
      return core.load_transcoders(fetched(path_or_name, uri), held)
    end
    if ref then return hub_transcoders(path_or_name, ref, split) end
    if not path_or_name:find("/", 1, true) then   -- a bare name ctrace does not know
      local names = {}
      for k in pairs(M.default_transcoders) do names[#names + 1] = k end
      for k in pairs(M.transcoder_sets) do names[#names + 1] = k end
      table.sort(names)
      error("NOT_FOUND: no transcoder set named '" .. path_or_name .. "'" .. did_you_mean(path_or_name, names) ..
            " and no such path (names: " .. table.concat(names, ", ") .. "; or a path, org/repo or hf:// address)", 2)
    end
  end
  return core.load_transcoders(path_or_name, held)
end

-- Trains per-layer TopK transcoders for every layer of a model on texts and writes the set to
-- opts.dir (see README: Transcoders).
M.train_transcoders = core.train_transcoders

-- Texts sampled from a model itself: n texts of up to max_tokens tokens from BOS, temperature
-- 1, seeds first_seed .. first_seed + n - 1 (the model's own distribution, no dataset needed).
function M.sample_texts(model, n, max_tokens, first_seed)
  local texts = {}
  for i = 1, n do
    texts[i] = model:generate("", {max_tokens = max_tokens or 256, temperature = 1, seed = (first_seed or 1) + i - 1})
  end
  return texts
end

M.neuronpedia = require "ctrace.neuronpedia"
M.chat = chat
M.hub = require "ctrace.hub"
M.labels = require "ctrace.labels"

return M
