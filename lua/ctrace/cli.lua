-- ctrace.cli - the ctrace program's subcommands:
--   ctrace run <folder>       runs <folder>/experiment.lua; results/ and results/manifest.json
--   ctrace check <folder>     runs it (unless --no-run) and compares results/ with expected/
--   ctrace new <folder>       a case-study folder that runs as is
--   ctrace attribute ...      circuit-tracer's command-line job: a graph without a script
--   ctrace serve <dir>        graphs and viewer pages on localhost
-- main(cmd, args) returns the process's exit status: 0, 1 when the command failed, 2 for bad
-- arguments. Case studies live in ctrace.casestudy, the sandbox in ctrace.sandbox.
local ct = require "ctrace"

local M = {}

local HELP = {
  run = [[usage: ctrace run <folder> [--timeout SECONDS] [--memory GIB] [--download-limit GIB] [--credentials]
                        [--unsafe]
Runs <folder>/experiment.lua (arg[0] is its path) in a process of its own, confined by the kernel
(Landlock, seccomp, resource limits): it reads only the folder, the project, the model
directories and the caches, writes only its results, runs no program, opens no connection
(ctrace run makes its Hugging Face downloads, up to --download-limit GiB (16), and Neuronpedia
requests, without your tokens unless --credentials) and sees no secret. Its Lua
has no os.execute, io.popen, ffi, debug, C modules or precompiled chunks; undefined globals raise.
The script writes into ct.results_dir(arg[0]); only a run that ends cleanly, every write synced,
becomes <folder>/results/, whole, with results/manifest.json (ctrace version, BLAS kernels and
threads, the isolation in force, every file read and written with its SHA-256, every attribution's
prompt tokens and options, time and peak memory). A failed, stopped or killed run leaves results/
as it was. One run of a folder at a time. --timeout and Ctrl-C stop the run (terminated, then
killed after 0.5 s). --memory caps what the run may allocate (GiB; default: the machine's
memory; mapped model files do not count). --unsafe: your own scripts only: no confinement, the full Lua (the results
are still a transaction and the deadline still holds).
Exit status: 0 done, 1 the experiment failed, 2 bad arguments, 75 the folder is busy, 77 this
kernel cannot sandbox (use --unsafe for trusted folders), 124 timeout, 130 Ctrl-C, 143 SIGTERM.]],
  check = [[usage: ctrace check <folder> [--no-run] [ctrace run's options]
Runs the folder (unless --no-run: then results/ must be the whole run its manifest records, with
unchanged inputs) and compares each file of <folder>/expected/ with the file of
the same name in results/: JSON files number by number within a tolerance (expected/tolerance.json
{"default": 1e-4} if present, else 1e-4, relative above 1), strings and other files exactly.
Prints every difference; exits 1 if there is one.]],
  attribute = [[usage: ctrace attribute (--prompt TEXT | --chat TEXT | --chat-file FILE.json)
                        [--model PATH_OR_NAME] [--transcoders PATH_OR_NAME]
                        [--slug NAME] [--graph-dir DIR] [--graph-file FILE.safetensors]
                        [--node-threshold 0.8] [--edge-threshold 0.98] [--max-feature-nodes 7500]
                        [--batch-size 256] [--max-n-logits 10] [--desired-logit-prob 0.95]
                        [--scan ID] [--server] [--port 8046]
Attributes the prompt (defaults: stories260K and its transcoders) and writes the pruned graph as
<graph-dir>/<slug>.json (default graphs/, slug from the prompt), its graph-metadata.json entry and
its viewer page; --graph-file also saves the full graph; --server then serves the directory.
--chat TEXT is one user turn through the model's chat template, the model's turn opened after it
(instruction-tuned models); --chat-file a JSON list of messages [{"role": ..., "content": ...}]
(ending in an assistant turn: that turn is continued).]],
  serve = [[usage: ctrace serve <dir> [--port 8046]
Serves the graphs, viewer pages and graph-metadata.json in <dir> on http://127.0.0.1:<port>/
until Ctrl-C.]],
  new = [[usage: ctrace new <folder>
Creates <folder> (a path, or a name under experiments/) with an experiment.lua that runs as is
(the attribution graph of a prompt on stories260K and a summary), a README.md and expected/.]],
}

local RUN_FLAGS = {["--timeout"] = {"timeout", "positive"}, ["--unsafe"] = {"unsafe"}, ["--memory"] = {"memory", "positive"},
                   ["--credentials"] = {"credentials"}, ["--download-limit"] = {"download_limit", "nonnegative"}}
local CHECK_FLAGS = {["--no-run"] = {"no_run"}}
for k, v in pairs(RUN_FLAGS) do CHECK_FLAGS[k] = v end

-- Each command's arguments: flags (a key, and whether it takes a number, a string or nothing)
-- and at most one positional argument.
local ARGS = {
  run = {positional = "folder", flags = RUN_FLAGS},
  check = {positional = "folder", flags = CHECK_FLAGS},
  new = {positional = "folder", flags = {}},
  serve = {positional = "dir", flags = {["--port"] = {"port", "number"}}},
  attribute = {flags = {
    ["--prompt"] = {"prompt", "string"}, ["--model"] = {"model", "string"}, ["--transcoders"] = {"transcoders", "string"},
    ["--chat"] = {"chat", "string"}, ["--chat-file"] = {"chat_file", "string"},
    ["--slug"] = {"slug", "string"}, ["--graph-dir"] = {"graph_dir", "string"}, ["--graph-file"] = {"graph_file", "string"},
    ["--scan"] = {"scan", "string"}, ["--node-threshold"] = {"node_threshold", "number"},
    ["--edge-threshold"] = {"edge_threshold", "number"}, ["--max-feature-nodes"] = {"max_feature_nodes", "number"},
    ["--batch-size"] = {"batch_size", "number"}, ["--max-n-logits"] = {"max_n_logits", "number"},
    ["--desired-logit-prob"] = {"desired_logit_prob", "number"}, ["--port"] = {"port", "number"},
    ["--server"] = {"server"}}},
}

-- Exit statuses of failures by their prefix (others: 1).
local EXIT = {BUSY = 75, SANDBOX = 77, TIMEOUT = 124, INTERRUPTED = 130, CANCELLED = 130, TERMINATED = 143}

-- Text that may come from a case-study folder (names, values, messages), printable: control
-- characters (C0, DEL, C1 as UTF-8) shown as '?', so nothing it holds can redraw the terminal.
local function printable(s)
  return (tostring(s):gsub("[%z\1-\8\11-\31\127]", "?"):gsub("\194[\128-\159]", "??"))
end

-- The options of cmd from args, or nil and the exit status after printing why (or the help).
local function parse(cmd, args)
  local spec, o, i = ARGS[cmd], {}, 1
  local function fail(msg)
    io.stderr:write("ctrace ", cmd, ": ", msg, "\n", HELP[cmd], "\n")
    return nil, 2
  end
  while i <= #args do
    local a = args[i]
    local flag = spec.flags[a]
    if a == "-h" or a == "--help" then
      print(HELP[cmd])
      return nil, 0
    elseif flag and flag[2] then
      local v = args[i + 1]
      if v == nil then return fail(a .. " needs a value") end
      if flag[2] ~= "string" then
        v = tonumber(v)
        if not v then return fail(a .. " needs a number") end
        if (flag[2] == "positive" and v <= 0) or (flag[2] == "nonnegative" and v < 0) then
          return fail(a .. " needs a " .. flag[2] .. " number")
        end
      end
      o[flag[1]] = v
      i = i + 1
    elseif flag then
      o[flag[1]] = true
    elseif spec.positional and a:sub(1, 1) ~= "-" and o[spec.positional] == nil then
      o[spec.positional] = a
    else
      return fail("unexpected argument '" .. a .. "'")
    end
    i = i + 1
  end
  return o
end

-- The prompt of ctrace attribute: --prompt text, or a chat (--chat, --chat-file), and the text a
-- slug is made from.
local function attribute_prompt(o)
  if o.chat then return {chat = {{role = "user", content = o.chat}}}, o.chat end
  if not o.chat_file then return o.prompt, o.prompt end
  local f, msg = io.open(o.chat_file, "rb")
  if not f then error("NOT_FOUND: --chat-file: " .. tostring(msg), 0) end
  local text = f:read("*a")
  f:close()
  local ok, messages = pcall(ct.json_decode, text)
  if not ok or type(messages) ~= "table" or #messages == 0 then
    error("BAD_ARG: --chat-file " .. o.chat_file .. ": expected a JSON list of messages [{\"role\": ..., \"content\": ...}]", 0)
  end
  local last = messages[#messages]
  return {chat = messages}, type(last) == "table" and type(last.content) == "string" and last.content or "chat"
end

local function attribute_cmd(o)
  local given = (o.prompt and 1 or 0) + (o.chat and 1 or 0) + (o.chat_file and 1 or 0)
  if given ~= 1 then error("BAD_ARG: give exactly one of --prompt, --chat and --chat-file", 0) end
  local prompt, about = attribute_prompt(o)
  local m = ct.load_model(o.model or "stories260K")
  local tc = ct.load_transcoders(o.transcoders or (o.model == nil and "stories260K" or error("BAD_ARG: --transcoders is needed with --model", 0)))
  local rm = ct.replacement_model(m, tc)
  local g = rm:attribute(prompt, {max_feature_nodes = o.max_feature_nodes or 7500, batch_size = o.batch_size or 256,
                                  max_n_logits = o.max_n_logits, desired_logit_prob = o.desired_logit_prob})
  local dir = o.graph_dir or "graphs"
  ct.mkdirs(dir)
  local slug = o.slug or about:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""):sub(1, 48)
  if slug == "" then slug = "graph" end
  if o.graph_file then g:save(o.graph_file) end
  local p = g:prune{node_threshold = o.node_threshold or 0.8, edge_threshold = o.edge_threshold or 0.98}
  p:save_json(dir .. "/" .. slug .. ".json", {slug = slug, scan = o.scan or tc.scan ~= "" and tc.scan or "stories260K"})
  print(p:summary())
  io.stderr:write("ctrace attribute: wrote ", dir, "/", slug, ".json and ", slug, ".html\n")
  if o.server then return M.main("serve", {dir, "--port", tostring(o.port or 8046)}) end
  return 0
end

local function serve_cmd(o)
  io.stderr:write("ctrace serve: ", o.dir, " (Ctrl-C stops)\n")
  require("ctrace.core").serve(o.dir, o.port or 8046)
  return 0
end

local function case_study(cmd, o)
  local casestudy = require "ctrace.casestudy"
  local folder = o.folder:gsub("/+$", "")
  if cmd == "run" then
    local mf = casestudy.run(folder, o)
    io.stderr:write(string.format("ctrace run: %s in %.2f s, peak memory %.0f MB; results/manifest.json\n", folder,
                                  mf.seconds, mf.peak_rss_bytes / 1e6))
  elseif cmd == "check" then
    local diffs, n, tol = casestudy.check(folder, o)
    for _, d in ipairs(diffs) do io.stderr:write("  ", printable(d), "\n") end
    if #diffs > 0 then error(string.format("CHECK: %s: %d difference(s) from expected/ (tolerance %g)", folder, #diffs, tol), 0) end
    io.stderr:write(string.format("ctrace check: %s matches expected/ (%d file(s), tolerance %g)\n", folder, n, tol))
  else
    io.stderr:write("ctrace new: created ", casestudy.new(folder), "\n")
  end
  return 0
end

function M.main(cmd, args)
  local o, status = parse(cmd, args)
  if not o then return status end
  local need = ARGS[cmd].positional or (cmd == "attribute" and not o.chat and not o.chat_file and "prompt")
  if need and not o[need] then
    io.stderr:write(HELP[cmd], "\n")
    return 2
  end
  local run = cmd == "attribute" and attribute_cmd or cmd == "serve" and serve_cmd or function(x) return case_study(cmd, x) end
  local ok, res = pcall(run, o)
  if not ok then
    res = tostring(res)
    io.stderr:write("ctrace ", cmd, ": ", printable(res), "\n")
    return EXIT[res:match("^(%u+):") or res:match("^[^\n]-:%d+: (%u+):")] or 1
  end
  return res
end

return M
