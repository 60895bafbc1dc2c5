-- ctrace.cli - the ctrace program's subcommands on case-study folders:
--   ctrace run <folder>     runs <folder>/experiment.lua; results/ and results/manifest.json
--   ctrace check <folder>   runs it (unless --no-run) and compares results/ with expected/
--   ctrace new <folder>     a case-study folder that runs as is
-- main(cmd, args) returns the process's exit status.
local ct = require "ctrace"

local M = {}

local HELP = {
  run = [[usage: ctrace run <folder>
Runs <folder>/experiment.lua (arg[0] is its path). The script writes its results into
<folder>/results/; ctrace adds results/manifest.json: the ctrace version, the BLAS kernels and
thread count, every model and transcoder file the script loaded with its SHA-256, every
attribution's prompt tokens and options, the run's wall-clock time and peak memory.]],
  check = [[usage: ctrace check <folder> [--no-run]
Runs the folder (unless --no-run) and compares each file of <folder>/expected/ with the file of
the same name in results/: JSON files number by number within a tolerance (expected/tolerance.json
{"default": 1e-4} if present, else 1e-4, relative above 1), strings and other files exactly.
Prints every difference; exits 1 if there is one.]],
  new = [[usage: ctrace new <folder>
Creates <folder> (a path, or a name under experiments/) with an experiment.lua that runs as is
(the attribution graph of a prompt on stories260K and a summary), a README.md and expected/.]],
}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function exists(path) return read(path) ~= nil end

-- Files behind a loaded path: the file itself, or every file of a directory, sorted.
local function files_of(path)
  local names, is_dir = ct.list_dir(path)
  if not is_dir then return {path} end
  local out = {}
  for _, n in ipairs(names) do
    local p = path .. "/" .. n
    local _, sub = ct.list_dir(p)
    if not sub and not n:match("%.tmp") then out[#out + 1] = p end
  end
  return out
end

-- Runs the experiment with loads and attributions recorded; returns the manifest table.
local function run_folder(folder)
  local script = folder .. "/experiment.lua"
  if not exists(script) then error("NOT_FOUND: " .. script .. " does not exist (ctrace new makes one)", 0) end
  ct.mkdirs(folder .. "/results")
  local inputs, seen, attributions = {}, {}, {}
  local function note(path)
    for _, p in ipairs(files_of(path)) do
      if not seen[p] then
        seen[p] = true
        inputs[#inputs + 1] = {path = p, sha256 = ct.sha256(p)}
      end
    end
  end
  local load_model, load_transcoders = ct.load_model, ct.load_transcoders
  ct.load_model = function(...)
    local m = load_model(...)
    note(m.path)
    return m
  end
  ct.load_transcoders = function(...)
    local tc = load_transcoders(...)
    note(tc.path)
    return tc
  end
  local methods = require("ctrace.core").methods("ctrace.ReplacementModel")
  local attribute = methods.attribute
  methods.attribute = function(rm, prompt, opts)
    local g, stats = attribute(rm, prompt, opts)
    local o = {}
    for k, v in pairs(opts or {}) do
      if type(v) ~= "table" and type(v) ~= "function" and type(v) ~= "userdata" then o[k] = v end
    end
    attributions[#attributions + 1] = {prompt_tokens = g:tokens(), options = o, seconds = stats.setup_s + stats.logits_s
                                       + stats.features_s + stats.graph_s}
    return g, stats
  end
  local t0 = ct.clock()
  local chunk, err = loadfile(script)
  local ok
  if chunk then
    arg = {[0] = script}
    ok, err = xpcall(chunk, debug.traceback)
  end
  ct.load_model, ct.load_transcoders, methods.attribute = load_model, load_transcoders, attribute
  if not chunk or not ok then error(err, 0) end
  local manifest = {ctrace_version = ct.version, blas_core = ct.blas_core, threads = ct.threads(), folder = folder,
                    seconds = ct.clock() - t0, peak_rss_bytes = ct.peak_rss(), inputs = inputs,
                    attributions = attributions}
  write(folder .. "/results/manifest.json", ct.json_encode(manifest, true) .. "\n")
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

local function check_folder(folder, run)
  if run then run_folder(folder) end
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

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local out = here .. "/results"
ct.mkdirs(out)

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
local f = assert(io.open(out .. "/summary.json", "wb"))
f:write(ct.json_encode(summary, true), "\n")
f:close()
print(pruned:summary())
]]

local function new_folder(folder)
  if not folder:find("/", 1, true) then folder = "experiments/" .. folder end
  if exists(folder .. "/experiment.lua") then error("BAD_ARG: " .. folder .. "/experiment.lua exists already", 0) end
  local name = folder:match("([^/]+)$")
  if not name:match("^[%w%-_.]+$") then error("BAD_ARG: a folder name may hold letters, digits, '-', '_' and '.'", 0) end
  ct.mkdirs(folder .. "/expected")
  write(folder .. "/experiment.lua", string.format(TEMPLATE, name, folder, folder, name))
  write(folder .. "/README.md", "# " .. name .. "\n\nThe question, the hypothesis, and what the results show.\n\n"
        .. "Run `ctrace run " .. folder .. "`; copy the results worth pinning (summary.json) into expected/ and\n"
        .. "`ctrace check " .. folder .. "` compares a run with them.\n")
  write(folder .. "/expected/.keep", "")
  return folder
end

function M.main(cmd, args)
  local folder = args[1]
  if folder == "-h" or folder == "--help" then
    print(HELP[cmd])
    return 0
  end
  if not folder or folder:sub(1, 1) == "-" then
    io.stderr:write(HELP[cmd], "\n")
    return 2
  end
  folder = folder:gsub("/+$", "")
  local ok, err = pcall(function()
    if cmd == "run" then
      local mf = run_folder(folder)
      io.stderr:write(string.format("ctrace run: %s in %.2f s, peak memory %.0f MB; results/manifest.json\n", folder,
                                    mf.seconds, mf.peak_rss_bytes / 1e6))
    elseif cmd == "check" then
      local diffs, n, tol = check_folder(folder, args[2] ~= "--no-run")
      for _, d in ipairs(diffs) do io.stderr:write("  ", d, "\n") end
      if #diffs > 0 then error(string.format("CHECK: %s: %d difference(s) from expected/ (tolerance %g)", folder, #diffs, tol), 0) end
      io.stderr:write(string.format("ctrace check: %s matches expected/ (%d file(s), tolerance %g)\n", folder, n, tol))
    elseif cmd == "new" then
      io.stderr:write("ctrace new: created ", new_folder(folder), "\n")
    end
  end)
  if not ok then
    io.stderr:write("ctrace ", cmd, ": ", tostring(err), "\n")
    return 1
  end
  return 0
end

return M
