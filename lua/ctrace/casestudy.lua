-- ctrace.casestudy - case-study folders: run one, check it against expected/, make a new one.
--
--   casestudy.run(folder, {timeout =, unsafe =}) -> manifest
--       runs <folder>/experiment.lua (sandboxed unless unsafe: see ctrace.sandbox) and writes
--       results/manifest.json: the ctrace version, BLAS kernels and threads, every file the run
--       read (the engine's and the script's own reads, with their SHA-256), every attribution's
--       prompt tokens and options, the wall-clock time and peak memory
--   casestudy.check(folder, {no_run =, timeout =}) -> differences, files compared, tolerance
--   casestudy.new(folder) -> the folder made (a path, or a name under experiments/)
local ct = require "ctrace"
local core = require "ctrace.core"

local M = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Runs fn (as xpcall, with a traceback) with every attribution recorded into list (prompt tokens,
-- options, seconds); returns ok, error.
local function recording_attributions(list, fn)
  local methods = core.methods("ctrace.ReplacementModel")
  local attribute = methods.attribute
  methods.attribute = function(rm, prompt, opts)
    local g, stats = attribute(rm, prompt, opts)
    local o = {}
    for k, v in pairs(opts or {}) do
      if type(v) ~= "table" and type(v) ~= "function" and type(v) ~= "userdata" then o[k] = v end
    end
    list[#list + 1] = {prompt_tokens = g:tokens(), options = o,
                       seconds = stats.setup_s + stats.logits_s + stats.features_s + stats.graph_s}
    return g, stats
  end
  local ok, err = xpcall(fn, core.traceback)
  methods.attribute = attribute
  return ok, err
end

function M.run(folder, o)
  local script = folder .. "/experiment.lua"
  if core.exists(script) ~= "file" then error("NOT_FOUND: " .. script .. " does not exist (ctrace new makes one)", 0) end
  ct.mkdirs(folder .. "/results")
  local chunk, err = loadfile(script)
  if not chunk then error(err, 0) end
  core.clear_files_read()   -- this run's own inputs from here on
  local attributions = {}
  local t0 = ct.clock()
  if o.unsafe then
    arg = {[0] = script}
    require("ctrace.sandbox").record_reads()
  else
    local env = require("ctrace.sandbox").confine(folder)
    rawset(env, "arg", {[0] = script})
    setfenv(chunk, env)
  end
  core.note_read(script)
  if o.timeout then core.set_timeout(o.timeout) end
  local ok, e = recording_attributions(attributions, chunk)
  if o.timeout then core.set_timeout(0) end
  if not ok then error(e, 0) end
  -- every file read, but what the run itself wrote under results/ (read back, or left by an
  -- earlier run)
  local results = (core.realpath(folder .. "/results") or "") .. "/"
  local inputs = {}
  for _, f in ipairs(core.files_read()) do
    if f.path:sub(1, #results) ~= results then inputs[#inputs + 1] = {path = f.path, sha256 = ct.sha256(f.path)} end
  end
  local manifest = {ctrace_version = ct.version, blas_core = ct.blas_core, threads = ct.threads(), folder = folder,
                    run_options = {timeout = o.timeout, unsafe = o.unsafe or false},
                    seconds = ct.clock() - t0, peak_rss_bytes = ct.peak_rss(), inputs = inputs,
                    attributions = attributions}
  ct.write_json(folder .. "/results/manifest.json", manifest)
  return manifest
end

-- Differences between expected and got (decoded JSON), within tol; appended to out.
local function compare(want, got, tol, path, out)
  if type(want) == "number" and type(got) == "number" then
    if not (math.abs(want - got) <= tol * math.max(1, math.abs(want))) then
      out[#out + 1] = string.format("%s: expected %.9g, got %.9g", path, want, got)
    end
  elseif type(want) == "table" and type(got) == "table" then
    for k, v in pairs(want) do compare(v, got[k], tol, path .. "." .. tostring(k), out) end
  elseif want ~= got then
    out[#out + 1] = string.format("%s: expected %s, got %s", path, tostring(want), tostring(got))
  end
end

function M.check(folder, o)
  if not o.no_run then M.run(folder, o) end
  local names, is_dir = ct.list_dir(folder .. "/expected")
  if not is_dir or #names == 0 then error("NOT_FOUND: " .. folder .. "/expected/ holds nothing to check", 0) end
  local tol = 1e-4
  local tj = read(folder .. "/expected/tolerance.json")
  if tj then tol = ct.json_decode(tj).default or tol end
  local diffs, n = {}, 0
  for _, name in ipairs(names) do
    if name ~= "tolerance.json" then
      n = n + 1
      local want, got = read(folder .. "/expected/" .. name), read(folder .. "/results/" .. name)
      if not got then
        diffs[#diffs + 1] = name .. ": missing from results/"
      elseif name:match("%.json$") then
        compare(ct.json_decode(want), ct.json_decode(got), tol, name, diffs)
      elseif want ~= got then
        diffs[#diffs + 1] = name .. ": differs from expected/ (compared byte for byte)"
      end
    end
  end
  return diffs, n, tol
end

local TEMPLATE = [[
-- %s: a case study. Question: what makes stories260K predict its next token after the prompt?
-- Run it with: ctrace run %s   (results/ beside this file), check it with: ctrace check %s
local ct = require "ctrace"

local out = ct.results_dir(arg and arg[0])

local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local prompt = "Once upon a time, there was a little girl named Lily. She"
local g = rm:attribute(prompt, {verbose = false})
local pruned = g:prune{node_threshold = 0.8, edge_threshold = 0.98}
pruned:save_json(out .. "/graph.json", {slug = "%s", scan = "stories260K"})

local r, c = g:scores()
local summary = {prompt = prompt, logits = {}, replacement = r, completeness = c, top_features = {}}
for i, l in ipairs(g:logits()) do summary.logits[i] = {token = l.token, prob = l.prob} end
for i, f in ipairs(pruned:top_features{n = 5}) do summary.top_features[i] = f.node_id end
ct.write_json(out .. "/summary.json", summary)
print(pruned:summary())
]]

function M.new(folder)
  if not folder:find("/", 1, true) then folder = "experiments/" .. folder end
  if core.exists(folder .. "/experiment.lua") then error("BAD_ARG: " .. folder .. "/experiment.lua exists already", 0) end
  local name = folder:match("([^/]+)$")
  if not name:match("^[%w%-_.]+$") then error("BAD_ARG: a folder name may hold letters, digits, '-', '_' and '.'", 0) end
  ct.mkdirs(folder .. "/expected")
  ct.write_file(folder .. "/experiment.lua", string.format(TEMPLATE, name, folder, folder, name))
  ct.write_file(folder .. "/README.md", "# " .. name .. "\n\nThe question, the hypothesis, and what the results show.\n\n"
                .. "Run `ctrace run " .. folder .. "`; copy the results worth pinning (summary.json) into expected/ and\n"
                .. "`ctrace check " .. folder .. "` compares a run with them.\n")
  ct.write_file(folder .. "/expected/.keep", "")
  return folder
end

return M
