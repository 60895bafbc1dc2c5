-- ctrace.cli - the ctrace program's subcommands:
--   ctrace run <folder>       runs <folder>/experiment.lua; results/ and results/manifest.json
--   ctrace check <folder>     runs it (unless --no-run) and compares results/ with expected/
--   ctrace new <folder>       a case-study folder that runs as is
--   ctrace attribute ...      circuit-tracer's command-line job (and its flags): a graph without a script
--   ctrace serve <dir>        graphs and viewer pages on localhost (start-server: circuit-tracer's name)
--   ctrace convert IN OUT     a graph between .pt, .safetensors and graph JSON
--   ctrace upload GRAPH       a graph to Neuronpedia (NEURONPEDIA_API_KEY)
-- main(cmd, args) returns the process's exit status: 0, 1 when the command failed, 2 for bad
-- arguments. A failure prints its message without Lua's file and line (--trace or CTRACE_TRACE=1:
-- with them and the traceback). Case studies live in ctrace.casestudy, the sandbox in ctrace.sandbox.
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
  attribute = [[usage: ctrace attribute (-p/--prompt TEXT | --prompts FILE | --chat TEXT | --chat-file FILE.json)
                        [-t/--transcoder_set NAME_OR_PATH] [-m/--model NAME_OR_PATH]
                        [--slug NAME] [--graph_file_dir DIR] [-o/--graph_output_path FILE]
                        [--node_threshold 0.8] [--edge_threshold 0.98] [--max_feature_nodes 7500]
                        [--batch_size 256] [--max_n_logits 10] [--desired_logit_prob 0.95]
                        [--offload {cpu,disk,None}] [--dtype {float32,bfloat16,float16,fp32,bf16,fp16}]
                        [--verbose] [--scan ID] [--server] [--port 8041] [--features_dir DIR]
                        [--lazy-encoder] [--lazy-decoder] [--backend {transformerlens,nnsight}] [--trace]
                        [--split-layers] [--edge-heads N]
circuit-tracer's command line. Attributes the prompt with the transcoder set (default:
stories260K's) on the model its config.yaml names (model_name), or on --model, and writes the
pruned graph as <graph_file_dir>/<slug>.json (default graphs/, slug from the prompt) with its
graph-metadata.json entry and its viewer page; with -o alone (no --slug, no --graph_file_dir),
only the full graph FILE (circuit-tracer's .pt, or .safetensors). --server then serves the directory (with -o alone: the
default directory and slug). --features_dir DIR (an existing directory): the set's dashboards
(dashboards.json beside its config) written there as the feature files circuit-tracer's viewer
reads (its start-server --features_dir DIR shows them for a scan starting with /); ctrace's own
viewer shows the dashboards its page holds and serves no feature files. --prompts FILE: a graph
a prompt (one a line, or a JSON object a line: {"prompt", "slug", "targets"}), each
<graph_file_dir>/<slug>.json with its page (slug: its own, else <n>-<slug of the prompt>), all
listed in graph-metadata.json in the file's order; under mpirun the prompts are shared among the
ranks, each graph computed by one rank. --split-layers (under mpirun): each rank holds only its
share of the model's and the set's layers and runs its part of every pass, for models that do
not fit one machine (the same graph bytes as one process); without it the ranks share the rows.
--offload: where the rows of the graph wait while it is computed: cpu (and None) in memory up to
2 GiB, then a file; disk: a file beyond 512 MiB (working memory 1 GiB). --dtype: the model's
weights as the same checkpoint saved in that dtype holds them: bfloat16 or float16 round them and
hold the matrices in that dtype (a float32 checkpoint's in half the memory); float32 (the default)
reads narrower ones exactly as they are, without widening them in memory; the arithmetic stays
float32 and the transcoders stay as stored. --lazy-encoder, --lazy-decoder: ctrace
always maps encoders and decoders and reads them as they are used. --backend: ctrace has one
engine; both names give the same graph. --verbose: progress on standard error (the default on a
terminal). --chat TEXT is one user turn through the model's chat template, the model's turn
opened after it (instruction-tuned models); --chat-file a JSON list of messages [{"role": ...,
"content": ...}] (ending in an assistant turn: that turn is continued). --edge-heads N: every
edge of the pruned graph split by attention heads, each link of the graph JSON carrying its N
(1..8) largest heads' parts, its residual part and its multi-hop rest (ctrace's own fields).
Flags may be written with underscores or hyphens (--graph_file_dir, --graph-file-dir), as
--flag=value, and shortened to any unambiguous prefix; ctrace's older names --transcoders and
--graph-dir still work. Errors print without Lua's file and line; --trace (or CTRACE_TRACE=1)
adds them and the traceback. Exit status: 0 done, 1 failed, 2 bad arguments.]],
  convert = [[usage: ctrace convert <input> <output> [--slug NAME] [--scan ID] [--node_threshold 0.8]
                      [--edge_threshold 0.98]
Converts a graph between circuit-tracer's .pt (Graph.to_pt), ctrace's .safetensors and the graph
JSON Neuronpedia and the viewers read, by the files' extensions. A full graph (.pt, .safetensors)
becomes .pt or .safetensors as it is, or .json pruned with the thresholds (as circuit-tracer's
create_graph_files: slug from the output's name, graph-metadata.json and the viewer page beside
it); a graph JSON holds only its pruned graph, so it converts to .json alone.
Exit status: 0 done, 1 failed, 2 bad arguments.]],
  upload = [[usage: ctrace upload <graph> [--slug NAME] [--scan ID] [--node_threshold 0.8] [--edge_threshold 0.98]
Uploads a graph to Neuronpedia as its own client does (a signed URL, the bytes, then the graph
saved), with the key in NEURONPEDIA_API_KEY (CTRACE_NEURONPEDIA_URL: another server), and prints
the graph's page. <graph>: a graph JSON (.json, as it is: its metadata names slug and scan), or a
full graph (.pt, .safetensors: pruned with the thresholds first; slug from the file's name unless
--slug, scan the graph's unless --scan). Open a published graph with ct.load_graph of its page URL
or "neuronpedia:<model>/<slug>". Exit status: 0 done, 1 failed, 2 bad arguments.]],
  ["start-server"] = [[usage: ctrace start-server --graph_file_dir DIR [--port 8041] [--features_dir DIR]
circuit-tracer's name for ctrace serve DIR (--features_dir: see ctrace attribute --help).]],
  serve = [[usage: ctrace serve <dir> [--port 8041] [--features_dir DIR]
Serves the graphs, viewer pages and graph-metadata.json in <dir> on http://127.0.0.1:<port>/
until Ctrl-C.]],
  new = [[usage: ctrace new <folder>
Creates <folder> (a path, or a name under experiments/) with an experiment.lua that runs as is
(the attribution graph of a prompt on stories260K and a summary), a README.md and expected/.]],
}

-- Each command's flags: the long name (hyphens) -> {key, kind}, kind one of "string", "number",
-- "positive", "nonnegative", "unit" (0..1), "count" (a whole number from 1), "port" (0..65535),
-- "dir" (an existing directory), a list of choices, or nil (a switch); aliases: other names of a
-- flag (short forms, circuit-tracer's and older spellings) -> the long name; at most one
-- positional argument; prefixes: whether a unique prefix names a flag (circuit-tracer's commands,
-- as argparse reads them; never run's and check's, whose --unsafe and --credentials must be
-- written out).
local RUN_FLAGS = {["--timeout"] = {"timeout", "positive"}, ["--unsafe"] = {"unsafe"}, ["--memory"] = {"memory", "positive"},
                   ["--credentials"] = {"credentials"}, ["--download-limit"] = {"download_limit", "nonnegative"}}
local CHECK_FLAGS = {["--no-run"] = {"no_run"}}
for k, v in pairs(RUN_FLAGS) do CHECK_FLAGS[k] = v end

local ARGS = {
  run = {positional = "folder", flags = RUN_FLAGS},
  check = {positional = "folder", flags = CHECK_FLAGS},
  new = {positional = "folder", flags = {}},
  upload = {positional = "input", prefixes = true,
            flags = {["--slug"] = {"slug", "string"}, ["--scan"] = {"scan", "string"},
                     ["--node-threshold"] = {"node_threshold", "unit"}, ["--edge-threshold"] = {"edge_threshold", "unit"}}},
  convert = {positional = {"input", "output"}, prefixes = true,
             flags = {["--slug"] = {"slug", "string"}, ["--scan"] = {"scan", "string"},
                      ["--node-threshold"] = {"node_threshold", "unit"}, ["--edge-threshold"] = {"edge_threshold", "unit"}}},
  serve = {positional = "dir", flags = {["--port"] = {"port", "port"}, ["--features-dir"] = {"features_dir", "dir"}}},
  ["start-server"] = {prefixes = true, flags = {["--graph-file-dir"] = {"dir", "string"}, ["--port"] = {"port", "port"},
                                                ["--features-dir"] = {"features_dir", "dir"}}},
  attribute = {
    prefixes = true,
    flags = {
      ["--prompt"] = {"prompt", "string"}, ["--prompts"] = {"prompts", "string"}, ["--model"] = {"model", "string"},
      ["--transcoder-set"] = {"transcoders", "string"}, ["--chat"] = {"chat", "string"},
      ["--chat-file"] = {"chat_file", "string"}, ["--slug"] = {"slug", "string"},
      ["--graph-file-dir"] = {"graph_dir", "string"}, ["--graph-output-path"] = {"graph_file", "string"},
      ["--scan"] = {"scan", "string"}, ["--node-threshold"] = {"node_threshold", "unit"},
      ["--edge-threshold"] = {"edge_threshold", "unit"}, ["--max-feature-nodes"] = {"max_feature_nodes", "count"},
      ["--batch-size"] = {"batch_size", "count"}, ["--max-n-logits"] = {"max_n_logits", "count"},
      ["--desired-logit-prob"] = {"desired_logit_prob", "unit"}, ["--port"] = {"port", "port"},
      ["--features-dir"] = {"features_dir", "dir"},
      ["--server"] = {"server"}, ["--verbose"] = {"verbose"},
      ["--offload"] = {"offload", {"cpu", "disk", "None"}},
      ["--dtype"] = {"dtype", {"float32", "bfloat16", "float16", "fp32", "bf16", "fp16"}},
      ["--lazy-encoder"] = {"lazy_encoder"}, ["--lazy-decoder"] = {"lazy_decoder"},
      ["--split-layers"] = {"split_layers"}, ["--edge-heads"] = {"edge_heads", "count"},
      ["--backend"] = {"backend", {"transformerlens", "nnsight"}}},
    aliases = {["-p"] = "--prompt", ["-m"] = "--model", ["-t"] = "--transcoder-set", ["-o"] = "--graph-output-path",
               ["--transcoders"] = "--transcoder-set", ["--graph-dir"] = "--graph-file-dir"}},
}

-- Exit statuses of failures by their prefix (others: 1); USAGE: a bad combination of arguments.
local EXIT = {USAGE = 2, BUSY = 75, SANDBOX = 77, TIMEOUT = 124, INTERRUPTED = 130, CANCELLED = 130, TERMINATED = 143}

-- Text that may come from a case-study folder (names, values, messages), printable: control
-- characters (C0, DEL, C1 as UTF-8) shown as '?', so nothing it holds can redraw the terminal.
local function printable(s)
  return (tostring(s):gsub("[%z\1-\8\11-\31\127]", "?"):gsub("\194[\128-\159]", "??"))
end

local closest = ct.closest   -- a likely typo's intended name (ctrace.closest)

-- The long name of flag a of spec (an alias, underscores for hyphens, a unique prefix as
-- argparse takes them), or nil and why not.
local function resolve(spec, a)
  local aliases = spec.aliases or {}
  if spec.flags[a] or aliases[a] then return aliases[a] or a end
  if not a:match("^%-%-%w") then return nil end
  local norm = "--" .. a:sub(3):gsub("_", "-")
  if spec.flags[norm] or aliases[norm] then return aliases[norm] or norm end
  local names, found, seen = {}, {}, {}
  for n in pairs(spec.flags) do names[#names + 1] = n end
  for n in pairs(aliases) do if n:sub(1, 2) == "--" then names[#names + 1] = n end end
  table.sort(names)
  for _, n in ipairs(spec.prefixes and names or {}) do
    local long = aliases[n] or n
    if n:sub(1, #norm) == norm and not seen[long] then found[#found + 1], seen[long] = long, true end
  end
  table.sort(found)
  if #found == 1 then return found[1] end
  if #found > 1 then return nil, "ambiguous option '" .. a .. "': could be " .. table.concat(found, ", ") end
  local near = closest(norm, names)
  return nil, "unexpected argument '" .. a .. "'" .. (near and ("; did you mean " .. near .. "?") or "")
end

-- The options of cmd from args, or nil and the exit status after printing why (or the help).
-- A command's positional arguments, in order.
local function positionals(spec)
  return type(spec.positional) == "table" and spec.positional or {spec.positional}
end

local function parse(cmd, args)
  local spec, o, i = ARGS[cmd], {}, 1
  local function fail(msg)
    io.stderr:write("ctrace ", cmd, ": ", msg, "\n", HELP[cmd], "\n")
    return nil, 2
  end
  while i <= #args do
    local a, value = args[i], nil
    -- --help, and under argparse's prefixes --h, --he, --hel (no other flag starts with --h)
    if a == "-h" or a == "--help" or (spec.prefixes and #a >= 3 and ("--help"):sub(1, #a) == a) then
      print(HELP[cmd])
      return nil, 0
    end
    local name, why = nil, nil
    if a:match("^%-%-[^=]+=") then a, value = a:match("^(%-%-[^=]+)=(.*)$") end
    if a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      name, why = resolve(spec, a)
      if not name and not value and a:match("^%-%a.") and (spec.aliases or {})[a:sub(1, 2)] then   -- -pTEXT, -p=TEXT
        name, value = spec.aliases[a:sub(1, 2)], a:sub(a:sub(3, 3) == "=" and 4 or 3)
      end
      if not name then return fail(why or ("unexpected argument '" .. a .. "'")) end
    end
    local flag = name and spec.flags[name]
    if flag and flag[2] then
      if value == nil then
        value = args[i + 1]
        if value == nil then return fail(name .. " needs a value") end
        if not value:find(" ") and (value:match("^%-%-.") or (spec.aliases or {})[value:sub(1, 2)]) then
          return fail(name .. " needs a value, got the flag " .. value)   -- as argparse reads it
        end
        i = i + 1
      end
      local kind = flag[2]
      if type(kind) == "table" then
        local okc = false
        for _, c in ipairs(kind) do okc = okc or c == value end
        if not okc then
          return fail(string.format("%s: '%s' is not one of %s", name, value, table.concat(kind, ", ")))
        end
      elseif kind == "dir" then
        if ct.exists(value) ~= "directory" then return fail(name .. ": no directory " .. value) end
      elseif kind ~= "string" then
        local v = tonumber(value)
        if not v or v ~= v or v == math.huge or v == -math.huge then
          return fail(name .. " needs a number, got '" .. value .. "'")
        end
        local whole = v == math.floor(v)
        local why = (kind == "positive" and v <= 0 and "a positive number") or (kind == "nonnegative" and v < 0 and "a number >= 0")
          or (kind == "unit" and (v < 0 or v > 1) and "a number from 0 to 1")
          or (kind == "count" and (v < 1 or not whole) and "a whole number from 1")
          or (kind == "port" and (v < 0 or v > 65535 or not whole) and "a port number from 0 to 65535 (0: any free port)")
        if why then return fail(name .. " needs " .. why .. ", got " .. value) end
        value = v
      end
      o[flag[1]] = value
    elseif flag then
      if value ~= nil then return fail(name .. " takes no value") end
      o[flag[1]] = true
    else
      local slot
      for _, p in ipairs(positionals(spec)) do slot = slot or (o[p] == nil and p) end
      if not slot then return fail("unexpected argument '" .. a .. "'") end
      o[slot] = a
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

-- Working memory of an attribution by --offload (rm:attribute's memory_limit: rows beyond half of
-- it wait in a file); cpu and None: the engine's default (4 GiB)
local OFFLOAD_MEMORY = {disk = 2^30}

-- The note printed when --features_dir is given: ctrace's viewer does not read feature files yet.
local function features_note(o)
  if o.features_dir then
    io.stderr:write("ctrace: --features_dir ", o.features_dir, ": ctrace's viewer shows the labels and dashboards ",
                    "its page holds and reads no feature files; the directory is not served\n")
  end
end

local function serve_cmd(o)
  features_note(o)
  io.stderr:write("ctrace serve: ", o.dir, " (Ctrl-C stops)\n")
  require("ctrace.core").serve(o.dir, o.port)   -- the engine's default port: 8041
  return 0
end

-- A failure's message for a person: without the Lua file and line an engine error carries
-- (CTRACE_TRACE=1 keeps them, with the traceback)
local function user_message(msg)
  return (msg:gsub("^[^\n]-%.lua:%d+: ", ""))
end

-- The feature dashboards a set keeps beside its config.yaml (dashboards.json, as ctrace's own sets
-- do): labels every feature node of the pruned graph p and returns the dashboards for its viewer
-- page; nil for a set without them (a note when they do not fit the set).
-- The set's dashboards.json (nil without one, or a note when it cannot be read) and its directory.
local function load_dashboards(tc)
  local path = tc.path or ""
  local dir = ct.exists(path) == "directory" and path or path:match("^(.*)/[^/]*$")
  if not dir then return nil end
  local ok, d = pcall(require("ctrace.dashboards").load, dir)
  if ok then return d, dir end
  io.stderr:write("ctrace attribute: ", dir, "/dashboards.json cannot be read (", user_message(tostring(d)), ")\n")
  return nil
end

local function set_dashboards(tc, m, p)
  local d, dir = load_dashboards(tc)
  if not d then return nil end
  -- every feature node of the graph in the dashboards before any label is set: all or none
  for _, n in ipairs(p:nodes("feature")) do
    local layer = type(d.layers) == "table" and d.layers[n.layer + 1]
    if type(layer) ~= "table" or not layer[n.feature + 1] then
      io.stderr:write(string.format("ctrace attribute: %s/dashboards.json does not fit the set (no feature %d of " ..
                                    "layer %d): no labels\n", dir, n.feature, n.layer))
      return nil
    end
  end
  return require("ctrace.dashboards").annotate(p, m, d)
end

-- A slug made of a text: lower case, runs of other characters as "-", at most 48 characters.
local function slugify(text)
  local slug = text:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""):sub(1, 48)
  return slug ~= "" and slug or "graph"
end

-- The prompts of --prompts FILE: one a line (empty lines skipped), or a JSON object a line:
-- {"prompt": text, "slug": name, "targets": [token, ...]}. Each gets a slug: its own, else
-- "<n>-<slug of the prompt>" (n its number among the prompts, from 1).
local function read_prompts(path)
  local f, msg = io.open(path, "rb")
  if not f then error("NOT_FOUND: --prompts: " .. tostring(msg), 0) end
  local items, n = {}, 0
  for line in f:lines() do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:match("^%s*{") then
      local ok, it = pcall(ct.json_decode, line)
      if not ok or type(it) ~= "table" or type(it.prompt) ~= "string" or (it.slug ~= nil and type(it.slug) ~= "string")
         or (it.targets ~= nil and type(it.targets) ~= "table") then
        f:close()
        error("BAD_ARG: --prompts " .. path .. " line " .. n .. ": expected a prompt, or a JSON object " ..
              "{\"prompt\": text, \"slug\": name, \"targets\": [token, ...]}", 0)
      end
      items[#items + 1] = {prompt = it.prompt, slug = it.slug, targets = it.targets}
    elseif line:match("%S") then
      items[#items + 1] = {prompt = line}
    end
  end
  f:close()
  if #items == 0 then error("BAD_ARG: --prompts " .. path .. ": no prompt in the file", 0) end
  -- checked before any work: a slug names a file in the graph directory, and two alike would
  -- leave one graph in place of two
  local seen = {}
  for i, it in ipairs(items) do
    it.slug = it.slug or (i .. "-" .. slugify(it.prompt))
    if not it.slug:match("^[%w_.-]+$") then
      error("BAD_ARG: --prompts " .. path .. ": prompt " .. i .. "'s slug '" .. it.slug ..
            "' may hold only letters, digits, '-', '_' and '.'", 0)
    end
    if seen[it.slug] then
      error("BAD_ARG: --prompts " .. path .. ": prompts " .. seen[it.slug] .. " and " .. i .. " have the same slug '" ..
            it.slug .. "'", 0)
    end
    seen[it.slug] = i
  end
  return items
end

local function attribute_cmd(o)
  -- what circuit-tracer's parser refuses, refused before any work (exit 2)
  local given = (o.prompt and 1 or 0) + (o.chat and 1 or 0) + (o.chat_file and 1 or 0) + (o.prompts and 1 or 0)
  if given ~= 1 then error("USAGE: give exactly one of --prompt, --prompts, --chat and --chat-file", 0) end
  if o.prompts and (o.graph_file or o.slug) then
    error("USAGE: --prompts writes one graph a prompt into --graph_file_dir, each with its own slug: " ..
          "-o and --slug name a single graph", 0)
  end
  if o.prompts and o.split_layers then
    error("USAGE: --split-layers runs each graph over every rank; --prompts gives each rank its own prompts: " ..
          "give one of them", 0)
  end
  if o.edge_heads and (o.edge_heads > 8 or o.split_layers) then
    error(o.split_layers and "USAGE: --edge-heads needs the whole model in one process; --split-layers divides it"
          or "USAGE: --edge-heads " .. o.edge_heads .. ": expected 1..8 heads an edge", 0)
  end
  if o.model == "" then o.model = nil end   -- as circuit-tracer: the set's model_name then
  if o.model and not o.transcoders then
    error("USAGE: --model " .. o.model .. " needs its transcoder set: give it with -t/--transcoder_set", 0)
  end
  if o.graph_file and not (o.graph_file:lower():match("%.pt$") or o.graph_file:lower():match("%.safetensors$")) then
    error("USAGE: -o " .. o.graph_file .. ": the full graph is written as circuit-tracer's .pt or as .safetensors; " ..
          "give a path ending in .pt or .safetensors", 0)
  end
  local prompt, about
  local items = o.prompts and read_prompts(o.prompts)
  if not items then prompt, about = attribute_prompt(o) end
  -- the set first: its config names the model (circuit-tracer's order)
  local split = o.split_layers or nil
  local tc = ct.load_transcoders(o.transcoders or "stories260K", {layer_split = split})
  local model = o.model or (tc.model_name ~= "" and tc.model_name)
  if not model then
    error("USAGE: the transcoder set's config.yaml names no model_name; give the model with --model (-m)", 0)
  end
  local m = ct.load_model(model, {dtype = o.dtype or "float32", layer_split = split})   -- float32: circuit-tracer's default
  local rank = ct.dist.rank   -- under MPI every rank computes its share of the rows; rank 0 writes
  local function feature_files()   -- the set's dashboards as the feature files circuit-tracer's viewer reads
    if not o.features_dir then return end
    local d = load_dashboards(tc)
    if d then
      local n = require("ctrace.dashboards").feature_files(m, d, o.features_dir)
      io.stderr:write("ctrace attribute: wrote the dashboards of ", n, " features to ", o.features_dir, " (index.json.gz, ",
                      "layer_*.bin: circuit-tracer's start-server --features_dir shows them for a scan starting with /)\n")
    else
      io.stderr:write("ctrace attribute: --features_dir: the set keeps no dashboards.json; no feature files written\n")
    end
  end
  local rm = ct.replacement_model(m, tc)
  local opts = {max_feature_nodes = o.max_feature_nodes or 7500, batch_size = o.batch_size or 256,
                max_n_logits = o.max_n_logits, desired_logit_prob = o.desired_logit_prob,
                memory_limit = OFFLOAD_MEMORY[o.offload], verbose = o.verbose}
  if rank ~= 0 then opts.verbose = false end   -- progress from rank 0 only
  local dir = o.graph_dir or "graphs"
  local scan = o.scan or (tc.scan ~= "" and tc.scan) or (tc.model_name ~= "" and tc.model_name) or model
  local thresholds = {node_threshold = o.node_threshold or 0.8, edge_threshold = o.edge_threshold or 0.98,
                      heads = o.edge_heads}
  if items then   -- a graph a prompt, the prompts shared among the ranks; rank 0 lists them in order
    local done = ct.dist.map(items, function(it)
      opts.targets = it.targets
      local p = rm:attribute(it.prompt, opts):prune(thresholds)
      local path = dir .. "/" .. it.slug .. ".json"
      p:save_json(path, {slug = it.slug, scan = scan, dashboards = set_dashboards(tc, m, p), metadata = false})
      return {path = path, summary = p:summary()}
    end)
    if rank ~= 0 then return 0 end
    feature_files()
    for _, d in ipairs(done) do
      require("ctrace.core").graph_metadata_add(d.path)
      print(d.summary)
    end
    io.stderr:write("ctrace attribute: wrote ", #done, " graphs and their pages into ", dir, "/ (graph-metadata.json lists them)\n")
    if o.server then return serve_cmd{dir = dir, port = o.port} end
    return 0
  end
  local g = rm:attribute(prompt, opts)
  if rank ~= 0 then return 0 end
  feature_files()
  if o.graph_file then
    io.stderr:write("ctrace attribute: writing the full graph to ", o.graph_file, "\n")
    g:save(o.graph_file)
    io.stderr:write("ctrace attribute: wrote ", o.graph_file, "\n")
    -- circuit-tracer: -o alone writes no graph files (--server needs them: then the defaults)
    if not o.slug and not o.graph_dir and not o.server then return 0 end
  end
  local slug = o.slug or slugify(about)
  -- what follows the attribution takes seconds on a large graph: said before it starts
  io.stderr:write(string.format("ctrace attribute: pruning (node threshold %g, edge threshold %g) and writing %s/%s.json\n",
                                o.node_threshold or 0.8, o.edge_threshold or 0.98, dir, slug))
  local p = g:prune(thresholds)
  p:save_json(dir .. "/" .. slug .. ".json", {slug = slug, scan = scan, dashboards = set_dashboards(tc, m, p)})
  print(p:summary())
  io.stderr:write("ctrace attribute: wrote ", dir, "/", slug, ".json and ", slug, ".html\n")
  if o.server then return serve_cmd{dir = dir, port = o.port} end
  return 0
end

-- The extension of a graph file ctrace reads and writes: "pt", "safetensors" or "json" (nil else).
local function graph_kind(path)
  local ext = path:lower():match("%.(%w+)$")
  return (ext == "pt" or ext == "safetensors" or ext == "json") and ext or nil
end

local function convert_cmd(o)
  for _, p in ipairs{o.input, o.output} do
    if not graph_kind(p) then
      error("USAGE: " .. p .. ": expected a graph file ending in .pt, .safetensors or .json", 0)
    end
  end
  if graph_kind(o.input) == "json" and graph_kind(o.output) ~= "json" then
    error("USAGE: " .. o.input .. " holds a pruned graph (graph JSON); only a full graph (.pt, .safetensors) " ..
          "converts to " .. o.output, 0)
  end
  local g = ct.load_graph(o.input)   -- (saving makes the output's directory, as create_graph_files does)
  if graph_kind(o.output) ~= "json" then
    g:save(o.output)
  else
    local slug = o.slug or o.output:match("([^/]*)%.[^./]*$")
    if not g:info().pruned then
      g = g:prune{node_threshold = o.node_threshold or 0.8, edge_threshold = o.edge_threshold or 0.98}
    end
    g:save_json(o.output, {slug = slug, scan = o.scan})
  end
  io.stderr:write("ctrace convert: wrote ", o.output, "\n")
  return 0
end

local function upload_cmd(o)
  local kind = graph_kind(o.input)
  if not kind then error("USAGE: " .. o.input .. ": expected a graph file ending in .json, .pt or .safetensors", 0) end
  local np = require "ctrace.neuronpedia"
  local url
  if kind == "json" then
    if o.slug or o.scan then error("USAGE: a graph JSON is uploaded as it is: its metadata names slug and scan", 0) end
    url = np.upload(o.input)
  else
    local g = ct.load_graph(o.input)
    local p = g:prune{node_threshold = o.node_threshold or 0.8, edge_threshold = o.edge_threshold or 0.98}
    local scan = o.scan or (g:info().scan ~= "" and g:info().scan) or nil
    if not scan then error("USAGE: " .. o.input .. " names no scan (Neuronpedia's model id): give it with --scan", 0) end
    url = np.upload(p, {slug = o.slug or o.input:match("([^/]*)%.[^./]*$"), scan = scan})
  end
  print(url)
  return 0
end

local function case_study(cmd, o)
  local casestudy = require "ctrace.casestudy"
  local folder = o.folder:gsub("/+$", "")
  if cmd == "run" then
    local mf = casestudy.run(folder, o)
    if ct.dist.rank == 0 then   -- under MPI rank 0 committed the results
      io.stderr:write(string.format("ctrace run: %s in %.2f s, peak memory %.0f MB%s; results/manifest.json\n", folder,
                                    mf.seconds, mf.peak_rss_bytes / 1e6,
                                    ct.dist.size > 1 and (" (rank 0 of " .. ct.dist.size .. ")") or ""))
    end
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
  local trace = os.getenv("CTRACE_TRACE") == "1"
  local rest = {}
  for _, a in ipairs(args) do
    if a == "--trace" then trace = true else rest[#rest + 1] = a end
  end
  local o, status = parse(cmd, rest)
  if not o then return status end
  local need = ARGS[cmd].positional and positionals(ARGS[cmd])
    or {(cmd == "attribute" and not o.chat and not o.chat_file and not o.prompts and "prompt") or
        (cmd == "start-server" and "dir") or nil}
  for _, k in ipairs(need) do
    if not o[k] then
      io.stderr:write(HELP[cmd], "\n")
      return 2
    end
  end
  local run = cmd == "attribute" and attribute_cmd or (cmd == "serve" or cmd == "start-server") and serve_cmd
    or cmd == "convert" and convert_cmd or cmd == "upload" and upload_cmd or function(x) return case_study(cmd, x) end
  -- the handler is C (core.traceback): a Lua one would be stopped by the hook Ctrl-C installs,
  -- which raises at the next Lua instruction ("error in error handling")
  local ok, res = xpcall(function() return run(o) end, require("ctrace.core").traceback)
  if not ok then
    res = tostring(res)
    if not trace then res = res:gsub("\nstack traceback:.*$", "") end
    local code = EXIT[res:match("^(%u+):") or res:match("^[^\n]-:%d+: (%u+):")] or 1
    local rank = ct.dist.size > 1 and ("[rank " .. ct.dist.rank .. "] ") or ""   -- which rank of an MPI job
    io.stderr:write("ctrace ", rank, cmd, ": ", printable(trace and res or user_message(res)), "\n")
    return code
  end
  return res
end

return M
