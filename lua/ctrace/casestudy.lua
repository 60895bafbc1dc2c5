-- ctrace.casestudy - case-study folders: run one, check it against expected/, make a new one.
--
--   casestudy.run(folder, {timeout =, memory = GiB, unsafe =}) -> manifest
--       runs <folder>/experiment.lua in an experiment process of its own (host_run.c): confined
--       by the kernel (Landlock, seccomp, limits; see run/confine.h) unless unsafe, stopped by
--       signals at the timeout or on Ctrl-C. It writes into a staging directory; only a run that
--       ended cleanly, every write synced, becomes results/, in one atomic rename, with
--       results/manifest.json: the ctrace version, BLAS kernels and threads, the isolation in
--       force, every file the run read (SHA-256), every file it wrote (SHA-256), every
--       attribution's prompt tokens and options, the wall-clock time and peak memory. A failed
--       run leaves results/ as it was. A lock keeps a second run of the folder out.
--   casestudy.check(folder, {no_run =, timeout =}) -> differences, files compared, tolerance
--   casestudy.new(folder) -> the folder made (a path, or a name under experiments/)
--
-- Errors carry a prefix cli.lua maps to the exit status: TIMEOUT, INTERRUPTED, TERMINATED, BUSY,
-- SANDBOX (no kernel sandbox here), FAILED (the experiment failed).
local ct = require "ctrace"
local core = require "ctrace.core"
local sandbox = require "ctrace.sandbox"

local M = {}

-- What a sandboxed run may read: the folder, the project's lua/ and experiments/, the model
-- directories and the caches (Hugging Face's hub cache, not its home: the token lives there).
local function read_roots(folder)
  local home = os.getenv("HOME") or "/nonexistent"
  local cache = os.getenv("XDG_CACHE_HOME") or (home .. "/.cache")
  local hf = os.getenv("HF_HUB_CACHE") or (os.getenv("HF_HOME") and os.getenv("HF_HOME") .. "/hub")
             or (cache .. "/huggingface/hub")
  local roots, seen = {}, {}
  local function add(d)
    local r = d and d ~= "" and core.exists(d) == "directory" and core.realpath(d)
    if r and not seen[r] then roots[#roots + 1], seen[r] = r, true end
  end
  add(folder)
  add((ct.root or ".") .. "/lua")           -- of the project, only its modules and case studies: not
  add((ct.root or ".") .. "/experiments")   -- its .git/config, say
  add(os.getenv("CTRACE_CACHE") or (cache .. "/ctrace"))
  if hf ~= "" and not core.exists(hf) then pcall(core.mkdirs, hf) end   -- what the run downloads lands there
  add(hf)
  for _, d in ipairs(ct.model_dirs()) do add(d) end
  return roots
end

-- The parent's answer to a request of the experiment process (ctrace.sandbox): the call made
-- here, with this process's network settings, and its results.
local FORWARDED = {}
for _, name in ipairs(sandbox.forwarded) do FORWARDED[name] = true end

local function answer(text)
  local ok, req = pcall(core.json_decode, text)
  if not ok or type(req) ~= "table" or not FORWARDED[req.call] or type(req.args) ~= "table" then
    return core.json_encode({error = "BAD_ARG: a malformed request to the parent"})
  end
  local args, n = {}, #req.args
  for i = 1, n do args[i] = type(req.args[i]) == "table" and req.args[i].v or nil end
  local res = {pcall(core[req.call], unpack(args, 1, n))}
  if not res[1] then return core.json_encode({error = tostring(res[2])}) end
  local boxes = {}
  for i = 2, table.maxn(res) do boxes[i - 1] = {v = res[i]} end
  return core.json_encode({results = boxes})
end

-- What a run may download (Hugging Face files fetched for it), GiB, unless --download-limit.
local DOWNLOAD_LIMIT_GIB = 16

local STOPPED = {timeout = "TIMEOUT: stopped after %s s (--timeout)", interrupted = "INTERRUPTED: stopped by Ctrl-C",
                 terminated = "TERMINATED: stopped by a signal to ctrace run"}

-- The child's report, checked: it comes from a process that ran a stranger's script.
local function check_report(text, unsafe)
  local ok, r = pcall(core.json_decode, text or "")
  local good = ok and type(r) == "table" and type(r.inputs) == "table" and type(r.attributions) == "table"
               and (unsafe or type(r.isolation) == "table")
               and type(r.seconds) == "number" and type(r.peak_rss_bytes) == "number"
  for _, f in ipairs(good and r.inputs or {}) do
    good = good and type(f) == "table" and type(f.path) == "string" and type(f.sha256) == "string"
           and f.sha256:match("^%x+$") and #f.sha256 == 64
  end
  if not good then error("FAILED: the experiment process sent a malformed report", 0) end
  return r
end

local function run_staged(folder, script, staging, o, probe)
  local spec = {folder = core.realpath(folder), script = script, staging = staging, root = ct.root or ".", unsafe = o.unsafe or false}
  if ct.dist.size > 1 then   -- the experiment joins the job through this process
    spec.rank, spec.size, spec.threads = ct.dist.rank, ct.dist.size, ct.threads()
  end
  if not o.unsafe then
    spec.read = read_roots(folder)
    spec.memory = o.memory and math.floor(o.memory * 2 ^ 30) or probe.memory_total   -- RLIMIT_DATA
    spec.file_size = 64 * 2 ^ 30           -- RLIMIT_FSIZE: the largest file it may write
  end
  local t0 = ct.clock()
  local limit = (o.download_limit or DOWNLOAD_LIMIT_GIB) * 2 ^ 30
  local r = core.run_child(core.json_encode(spec), {timeout = o.timeout, unsafe = o.unsafe, credentials = o.credentials,
                                                    download_limit = limit, quiet = ct.dist.rank ~= 0}, answer)
  if STOPPED[r.how] then error(string.format(STOPPED[r.how], tostring(o.timeout)), 0) end
  if r.how == "signaled" then error("FAILED: the experiment process was killed by signal " .. r.signal
                                    .. (r.signal == 9 and " (out of memory?)" or r.signal == 25 and " (a file too large)" or ""), 0) end
  if r.code ~= 0 or not r.report then error("FAILED: the experiment failed (exit " .. r.code .. ")", 0) end
  local report = check_report(r.report, o.unsafe)
  local outputs = {}   -- synced; only regular files; a manifest.json of the script's is replaced
  local left = o.timeout and math.max(0.001, o.timeout - (ct.clock() - t0))   -- hashing counts in the deadline
  for _, f in ipairs(core.run_outputs(staging, left)) do
    if f.path ~= "manifest.json" then outputs[#outputs + 1] = f end
  end
  local manifest = {ctrace_version = ct.version, blas_core = ct.blas_core, threads = ct.threads(), folder = folder,
                    mpi_ranks = ct.dist.size > 1 and ct.dist.size or nil,
                    run_options = {timeout = o.timeout, memory = o.memory, unsafe = o.unsafe or false,
                                   credentials = o.credentials or false, download_limit_bytes = limit},
                    isolation = o.unsafe and "none (--unsafe)" or report.isolation,
                    seconds = ct.clock() - t0, peak_rss_bytes = report.peak_rss_bytes, inputs = report.inputs,
                    outputs = outputs, attributions = report.attributions}
  ct.write_json(staging .. "/manifest.json", manifest)
  return manifest
end

-- ctrace run as the ranks of an MPI job: rank 0 holds the folder's lock, and commits; every rank
-- runs the script in its own confined process (which reaches the job through this one) writing
-- into a staging directory of its own; the other ranks' are removed. A failure on any rank ends
-- the job (MPI_Abort) before anything is committed: its experiment's partners may be waiting for it.
local function run_ranks(folder, script, o, p)
  local rank = ct.dist.rank
  local lock, staging, ok, msg
  if rank == 0 then
    ok, msg = pcall(function() lock = core.run_lock(folder, true); staging = core.run_staging(folder) end)
  end
  msg = core.dist_bcast(rank == 0 and not ok and tostring(msg) or "")
  if msg ~= "" then error(msg, 0) end   -- rank 0 could not start: every rank stops
  local manifest
  ok, msg = pcall(function()
    if rank ~= 0 then staging = core.run_staging(folder, true) end   -- after rank 0's, which cleaned up
    manifest = run_staged(folder, core.realpath(script), staging, o, p)
    if rank ~= 0 then core.remove_tree(staging) end   -- before waiting for the others: nothing of it is kept
  end)
  if not ok then
    if staging then pcall(core.remove_tree, staging) end
    core.dist_abort(tostring(msg) .. "\n(results/ left as they were)")
  end
  -- every rank's experiment ended well: an agreement, which no rank leaves before all reach it
  -- (a rank failing after its script's last collective aborts the job first: rank 0 never commits)
  core.dist_agree(true)
  if rank ~= 0 then return manifest end
  local committed, err = pcall(core.run_commit, staging, folder .. "/results")
  if not committed then pcall(core.remove_tree, staging) end
  lock:release()
  if not committed then error(tostring(err) .. "\n(results/ left as they were)", 0) end
  return manifest
end

function M.run(folder, o)
  local script = folder .. "/experiment.lua"
  if core.exists(script) ~= "file" then error("NOT_FOUND: " .. script .. " does not exist (ctrace new makes one)", 0) end
  local p = core.sandbox_probe()
  if not o.unsafe and (p.landlock_abi < 1 or not p.seccomp) then
    error("SANDBOX: this kernel cannot confine an experiment (Landlock ABI " .. p.landlock_abi .. ", seccomp "
          .. tostring(p.seccomp) .. "; Linux 5.13 or later with Landlock enabled is needed). "
          .. "Run only folders you trust, with --unsafe.", 0)
  end
  if ct.dist.size > 1 then return run_ranks(folder, script, o, p) end
  local lock = core.run_lock(folder, true)
  local staging = core.run_staging(folder)
  local ok, manifest = pcall(run_staged, folder, core.realpath(script), staging, o, p)
  local committed, err = ok and pcall(core.run_commit, staging, folder .. "/results")
  if not committed then
    pcall(core.remove_tree, staging)
    lock:release()
    error(tostring(ok and err or manifest) .. "\n(results/ left as they were)", 0)
  end
  lock:release()
  return manifest
end

-- The folder's file rel (under expected/ or results/), read without following a link: a folder
-- may come from a stranger and the checks run unconfined. nil and a message when it cannot be.
local function folder_file(folder, rel)
  return core.run_read(folder, rel, 256 * 2 ^ 20)
end

-- Whether results/ is one whole run: its files are exactly the manifest's outputs, unchanged, and
-- the inputs the run read (those under the roots a run may read) are unchanged too. Differences
-- appended to out.
local function verify_results(folder, out)
  local text, msg = folder_file(folder, "results/manifest.json")
  if not text then
    out[#out + 1] = "results/ holds no complete run (" .. msg .. "): run it with ctrace run"
    return
  end
  local okj, m = pcall(ct.json_decode, text)
  if not okj or type(m) ~= "table" or type(m.outputs) ~= "table" then
    out[#out + 1] = "results/manifest.json: not a manifest of ctrace run"
    return
  end
  local want = {}
  for _, f in ipairs(m.outputs) do
    if type(f) == "table" and type(f.path) == "string" then want[f.path] = f.sha256 end
  end
  local ok, files = pcall(core.run_outputs, folder .. "/results")
  if not ok then
    out[#out + 1] = tostring(files)
    return
  end
  for _, f in ipairs(files) do
    if f.path ~= "manifest.json" then
      if want[f.path] == nil then out[#out + 1] = "results/" .. f.path .. ": not written by the run the manifest records"
      elseif want[f.path] ~= f.sha256 then out[#out + 1] = "results/" .. f.path .. ": changed since the run" end
      want[f.path] = nil
    end
  end
  for path in pairs(want) do out[#out + 1] = "results/" .. path .. ": missing (the manifest lists it)" end
  local roots = read_roots(folder)
  for _, f in ipairs(type(m.inputs) == "table" and m.inputs or {}) do
    local real = type(f) == "table" and type(f.path) == "string" and core.realpath(f.path)
    local under = false
    for _, r in ipairs(roots) do under = under or (real and real:sub(1, #r + 1) == r .. "/") end
    if not under then
      out[#out + 1] = tostring(type(f) == "table" and f.path) .. ": an input outside what a run may read (not checked)"
    else
      local okh, sum = pcall(ct.sha256, real)
      if not okh or sum ~= f.sha256 then out[#out + 1] = f.path .. ": input changed since the run (results are stale)" end
    end
  end
end

-- Differences between expected and got (decoded JSON), within tol; appended to out.
local function compare(want, got, tol, path, out)
  if type(want) == "number" and type(got) == "number" then
    if not (math.abs(want - got) <= tol * math.max(1, math.abs(want))) then
      out[#out + 1] = string.format("%s: expected %.9g, got %.9g", path, want, got)
    end
  elseif type(want) == "table" and type(got) == "table" then
    if #want ~= #got then   -- a list longer or shorter than expected (extra keys of an object are allowed)
      out[#out + 1] = string.format("%s: expected %d entries, got %d", path, #want, #got)
    end
    for k, v in pairs(want) do compare(v, got[k], tol, path .. "." .. tostring(k), out) end
  elseif want ~= got then
    out[#out + 1] = string.format("%s: expected %s, got %s", path, tostring(want), tostring(got))
  end
end

-- A run that read expected/ proves nothing by matching it: a difference for each such input.
local function read_expected(folder, out)
  local m = folder_file(folder, "results/manifest.json")
  local ok, man = pcall(ct.json_decode, m or "")
  local dir = (core.realpath(folder) or folder) .. "/expected/"
  for _, f in ipairs(ok and type(man) == "table" and type(man.inputs) == "table" and man.inputs or {}) do
    if type(f) == "table" and type(f.path) == "string" and f.path:sub(1, #dir) == dir then
      out[#out + 1] = f.path .. ": the run read expected/ (matching it proves nothing)"
    end
  end
end

function M.check(folder, o)
  local diffs, n = {}, 0
  local lock
  if o.no_run then
    lock = core.run_lock(folder, false)
    verify_results(folder, diffs)
  else
    M.run(folder, o)
  end
  read_expected(folder, diffs)
  if #diffs > 0 then   -- not one whole, honest run: nothing in it is worth comparing
    if lock then lock:release() end
    return diffs, 0, 0
  end
  local ok, listed = pcall(core.run_outputs, folder .. "/expected")   -- regular files only, no link
  if not ok or #listed == 0 then
    if lock then lock:release() end
    error("NOT_FOUND: " .. folder .. "/expected/ holds nothing to check" .. (ok and "" or " (" .. tostring(listed) .. ")"), 0)
  end
  local tol = 1e-4
  local tj = folder_file(folder, "expected/tolerance.json")
  if tj then
    local okj, t = pcall(ct.json_decode, tj)
    tol = okj and type(t) == "table" and type(t.default) == "number" and t.default or tol
  end
  for _, f in ipairs(listed) do
    local name = f.path
    if name ~= "tolerance.json" and not name:match("^%.") and not name:match("/%.") then   -- .keep and the like
      n = n + 1
      local want, got = folder_file(folder, "expected/" .. name), folder_file(folder, "results/" .. name)
      local okw, w = pcall(ct.json_decode, want or "")
      local okg, g = pcall(ct.json_decode, got or "")
      if not got then
        diffs[#diffs + 1] = name .. ": missing from results/"
      elseif name:match("%.json$") and okw and okg then
        compare(w, g, tol, name, diffs)
      elseif want ~= got then
        diffs[#diffs + 1] = name .. ": differs from expected/ (compared byte for byte)"
      end
    end
  end
  if lock then lock:release() end
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
