-- ctrace.cli - the ctrace program's subcommands on case-study folders:
--   ctrace run <folder>     runs <folder>/experiment.lua; results/ and results/manifest.json
--   ctrace check <folder>   runs it (unless --no-run) and compares results/ with expected/
--   ctrace new <folder>     a case-study folder that runs as is
-- main(cmd, args) returns the process's exit status.
local ct = require "ctrace"

local M = {}

local HELP = {
  run = [[usage: ctrace run <folder> [--timeout SECONDS] [--unsafe]
Runs <folder>/experiment.lua (arg[0] is its path). The script writes its results into
<folder>/results/; ctrace adds results/manifest.json: the ctrace version, the BLAS kernels and
thread count, every model and transcoder file the script loaded with its SHA-256, every
attribution's prompt tokens and options, the run's wall-clock time and peak memory.
The script runs in a sandbox: no os.execute, io.popen, ffi, debug or C modules; reading or
writing an undefined global raises; files are written only under results/ and read only from the
folder, the project, the model directories and the caches. --unsafe lifts all of it.
--timeout stops the run (attribution included) after that many seconds; Ctrl-C stops it too.
Results are written under temporary names and renamed when complete.]],
  check = [[usage: ctrace check <folder> [--no-run] [--timeout SECONDS]
Runs the folder (unless --no-run) and compares each file of <folder>/expected/ with the file of
the same name in results/: JSON files number by number within a tolerance (expected/tolerance.json
{"default": 1e-4} if present, else 1e-4, relative above 1), strings and other files exactly.
Prints every difference; exits 1 if there is one.]],
  attribute = [[usage: ctrace attribute --prompt TEXT [--model PATH_OR_NAME] [--transcoders PATH_OR_NAME]
                        [--slug NAME] [--graph-dir DIR] [--graph-file FILE.safetensors]
                        [--node-threshold 0.8] [--edge-threshold 0.98] [--max-feature-nodes 7500]
                        [--batch-size 256] [--max-n-logits 10] [--desired-logit-prob 0.95]
                        [--scan ID] [--server] [--port 8046]
Attributes the prompt (defaults: stories260K and its transcoders) and writes the pruned graph as
<graph-dir>/<slug>.json (default graphs/, slug from the prompt), its graph-metadata.json entry and
its viewer page; --graph-file also saves the full graph; --server then serves the directory.]],
  serve = [[usage: ctrace serve <dir> [--port 8046]
Serves the graphs, viewer pages and graph-metadata.json in <dir> on http://127.0.0.1:<port>/
until Ctrl-C.]],
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

local SAFE = {"assert", "error", "ipairs", "pairs", "next", "pcall", "xpcall", "select", "tonumber", "tostring", "type",
              "unpack", "print", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable", "string", "table", "math",
              "coroutine", "bit"}

local function under(path, roots)
  for _, r in ipairs(roots) do
    if r and (path == r or path:sub(1, #r + 1) == r .. "/") then return true end
  end
  return false
end

-- Restricts this process to what an experiment may do (see HELP.run) and returns the script's
-- environment.
local function sandbox(folder)
  local core = require "ctrace.core"
  local results = folder .. "/results"
  core.set_write_root(results)
  local home = os.getenv("HOME") or "/nonexistent"
  local cache = os.getenv("XDG_CACHE_HOME") or (home .. "/.cache")
  local roots = {core.realpath(folder), core.realpath(ct.root or "."), core.realpath(cache .. "/ctrace"),
                 core.realpath(os.getenv("HF_HOME") or (cache .. "/huggingface")), core.realpath(os.getenv("HF_HUB_CACHE") or "")}
  for _, d in ipairs(ct.model_dirs()) do roots[#roots + 1] = core.realpath(d) end
  local function readable(path, what)
    local real = core.realpath(path)
    if real and not under(real, roots) then
      error("BAD_ARG: " .. what .. " " .. path .. ": this run may read only the folder, the project, the model "
            .. "directories and the caches", 3)
    end
  end
  local open = io.open
  io.open = function(path, mode)
    mode = mode or "r"
    if mode:find("[wa+]") then core.check_write(path) else readable(path, "reading") end
    return open(path, mode)
  end
  local lines = io.lines
  io.lines = function(path, ...)
    if path then readable(path, "reading") end
    return lines(path, ...)
  end
  local rename, remove = os.rename, os.remove
  os.rename = function(a, b) core.check_write(a) core.check_write(b) return rename(a, b) end
  os.remove = function(a) core.check_write(a) return remove(a) end
  local function forbidden(name)
    return function() error("BAD_ARG: " .. name .. " is not available to experiments (ctrace run --unsafe allows it)", 2) end
  end
  os.execute, io.popen, os.exit, os.tmpname = forbidden("os.execute"), forbidden("io.popen"), forbidden("os.exit"),
                                              forbidden("os.tmpname")
  io.input, io.output = forbidden("io.input"), forbidden("io.output")
  package.loadlib, package.cpath = forbidden("package.loadlib"), ""
  for i = #package.loaders, 3, -1 do package.loaders[i] = nil end   -- C loaders
  for _, name in ipairs {"load_model", "load_tokenizer", "load_transcoders", "load_graph"} do
    local f = ct[name]
    ct[name] = function(path, ...)
      if type(path) == "string" and path:find("/", 1, true) then readable(path, name) end
      return f(path, ...)
    end
  end
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.io = {open = io.open, lines = io.lines, write = io.write, read = io.read, stdout = io.stdout, stderr = io.stderr}
  env.io.popen, env.io.input, env.io.output = io.popen, io.input, io.output
  env.os = {time = os.time, clock = os.clock, date = os.date, getenv = os.getenv, difftime = os.difftime,
            rename = os.rename, remove = os.remove, execute = os.execute, exit = os.exit, tmpname = os.tmpname}
  env.require = function(name)
    if type(name) ~= "string" or not (name == "ctrace" or name:match("^ctrace%.[%w_]+$")) or name == "ctrace.core"
       or name == "ctrace.cli" then
      error("BAD_ARG: require '" .. tostring(name) .. "': experiments may require ctrace and its Lua modules only "
            .. "(ctrace run --unsafe allows more)", 2)
    end
    return require(name)
  end
  env.loadstring = function(text, name)
    local f, e = loadstring(text, name)
    if f then setfenv(f, env) end
    return f, e
  end
  env.load = env.loadstring
  env.debug, env.ffi, env.dofile, env.loadfile = nil, nil, nil, nil
  return setmetatable(env, {
    __index = function(_, k) error("undefined global '" .. tostring(k) .. "'", 2) end,
    __newindex = function(_, k) error("assignment to undefined global '" .. tostring(k) .. "' (declare it local)", 2) end,
  })
end

-- Runs the experiment with loads and attributions recorded; returns the manifest table.
local function run_folder(folder, o)
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
    local script_arg = {[0] = script}
    if o.unsafe then
      arg = script_arg
    else
      local env = sandbox(folder)
      rawset(env, "arg", script_arg)
      setfenv(chunk, env)
    end
    local traceback = require("ctrace.core").traceback
    if o.timeout then require("ctrace.core").set_timeout(o.timeout) end
    ok, err = xpcall(chunk, traceback)
    if o.timeout then require("ctrace.core").set_timeout(0) end
  end
  ct.load_model, ct.load_transcoders, methods.attribute = load_model, load_transcoders, attribute
  if not chunk or not ok then error(err, 0) end
  local manifest = {ctrace_version = ct.version, blas_core = ct.blas_core, threads = ct.threads(), folder = folder,
                    run_options = {timeout = o.timeout, unsafe = o.unsafe or false},
                    seconds = ct.clock() - t0, peak_rss_bytes = ct.peak_rss(), inputs = inputs,
                    attributions = attributions}
  require("ctrace.core").set_write_root("")
  write(folder .. "/results/manifest.json.tmp", ct.json_encode(manifest, true) .. "\n")
  assert(os.rename(folder .. "/results/manifest.json.tmp", folder .. "/results/manifest.json"))
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

local function check_folder(folder, o)
  if not o.no_run then run_folder(folder, o) end
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

-- ctrace attribute: circuit-tracer's command-line job, without a script.
local ATTR_FLAGS = {["--prompt"] = "prompt", ["--model"] = "model", ["--transcoders"] = "transcoders", ["--slug"] = "slug",
                    ["--graph-dir"] = "graph_dir", ["--graph-file"] = "graph_file", ["--scan"] = "scan",
                    ["--node-threshold"] = "node_threshold", ["--edge-threshold"] = "edge_threshold",
                    ["--max-feature-nodes"] = "max_feature_nodes", ["--batch-size"] = "batch_size",
                    ["--max-n-logits"] = "max_n_logits", ["--desired-logit-prob"] = "desired_logit_prob", ["--port"] = "port"}
local NUMERIC = {node_threshold = true, edge_threshold = true, max_feature_nodes = true, batch_size = true,
                 max_n_logits = true, desired_logit_prob = true, port = true}

local function attribute_cmd(args)
  local o, i = {}, 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then print(HELP.attribute) return 0 end
    if a == "--server" then
      o.server = true
    elseif ATTR_FLAGS[a] and args[i + 1] then
      local k, v = ATTR_FLAGS[a], args[i + 1]
      if NUMERIC[k] then
        v = tonumber(v)
        if not v then io.stderr:write("ctrace attribute: ", a, " needs a number\n") return 2 end
      end
      o[k] = v
      i = i + 1
    else
      io.stderr:write("ctrace attribute: unexpected argument '", a, "'\n", HELP.attribute, "\n")
      return 2
    end
    i = i + 1
  end
  if not o.prompt then io.stderr:write(HELP.attribute, "\n") return 2 end
  local m = ct.load_model(o.model or "stories260K")
  local tc = ct.load_transcoders(o.transcoders or (o.model == nil and "stories260K" or error("BAD_ARG: --transcoders is needed with --model", 0)))
  local rm = ct.replacement_model(m, tc)
  local g = rm:attribute(o.prompt, {max_feature_nodes = o.max_feature_nodes or 7500, batch_size = o.batch_size or 256,
                                    max_n_logits = o.max_n_logits, desired_logit_prob = o.desired_logit_prob})
  local dir = o.graph_dir or "graphs"
  ct.mkdirs(dir)
  local slug = o.slug or o.prompt:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""):sub(1, 48)
  if slug == "" then slug = "graph" end
  if o.graph_file then g:save(o.graph_file) end
  local p = g:prune{node_threshold = o.node_threshold or 0.8, edge_threshold = o.edge_threshold or 0.98}
  p:save_json(dir .. "/" .. slug .. ".json", {slug = slug, scan = o.scan or tc.scan ~= "" and tc.scan or "stories260K"})
  print(p:summary())
  io.stderr:write("ctrace attribute: wrote ", dir, "/", slug, ".json and ", slug, ".html\n")
  if o.server then return M.main("serve", {dir, "--port", tostring(o.port or 8046)}) end
  return 0
end

local function serve_cmd(args)
  local dir, port, i = nil, 8046, 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then print(HELP.serve) return 0 end
    if a == "--port" then
      port = tonumber(args[i + 1])
      i = i + 1
      if not port then io.stderr:write("ctrace serve: --port needs a number\n") return 2 end
    elseif not dir and a:sub(1, 1) ~= "-" then
      dir = a
    else
      io.stderr:write("ctrace serve: unexpected argument '", a, "'\n", HELP.serve, "\n")
      return 2
    end
    i = i + 1
  end
  if not dir then io.stderr:write(HELP.serve, "\n") return 2 end
  io.stderr:write("ctrace serve: ", dir, " (Ctrl-C stops)\n")
  require("ctrace.core").serve(dir, port)
  return 0
end

function M.main(cmd, args)
  if cmd == "attribute" or cmd == "serve" then
    local ok, res = pcall(cmd == "attribute" and attribute_cmd or serve_cmd, args)
    if not ok then
      io.stderr:write("ctrace ", cmd, ": ", tostring(res), "\n")
      return 1
    end
    return res
  end
  local folder, o = nil, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      print(HELP[cmd])
      return 0
    elseif a == "--unsafe" and cmd == "run" then
      o.unsafe = true
    elseif a == "--no-run" and cmd == "check" then
      o.no_run = true
    elseif a == "--timeout" and cmd ~= "new" then
      i = i + 1
      o.timeout = tonumber(args[i])
      if not o.timeout or o.timeout <= 0 then
        io.stderr:write("ctrace ", cmd, ": --timeout needs a number of seconds\n")
        return 2
      end
    elseif a:sub(1, 1) ~= "-" and not folder then
      folder = a
    else
      io.stderr:write("ctrace ", cmd, ": unexpected argument '", a, "'\n", HELP[cmd], "\n")
      return 2
    end
    i = i + 1
  end
  if not folder then
    io.stderr:write(HELP[cmd], "\n")
    return 2
  end
  folder = folder:gsub("/+$", "")
  local ok, err = pcall(function()
    if cmd == "run" then
      local mf = run_folder(folder, o)
      io.stderr:write(string.format("ctrace run: %s in %.2f s, peak memory %.0f MB; results/manifest.json\n", folder,
                                    mf.seconds, mf.peak_rss_bytes / 1e6))
    elseif cmd == "check" then
      local diffs, n, tol = check_folder(folder, o)
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
