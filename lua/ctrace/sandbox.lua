-- ctrace.sandbox - what an experiment run by `ctrace run` may do, and the environment its script
-- runs in.
--
--   sandbox.confine(folder) -> env
--       Restricts this process for good: files are written only under <folder>/results (by Lua
--       and by the engine, which checks every file it opens against the Lua state's context) and
--       read only from the folder, the project, the model directories and the caches (the roots
--       are locked: nothing can widen them afterwards); no os.execute, io.popen, os.exit,
--       io.input/output, package.loadlib, C modules, ffi or debug. Returns the script's
--       environment: the safe standard functions, `require` of the ctrace modules an experiment
--       uses (a fixed list), and globals that raise when read or written undefined.
--   sandbox.record_reads()
--       Lua's own file reads (io.open, io.lines) are checked and recorded like the engine's, so
--       the manifest lists them (confine does it; an unsafe run calls it alone).
local core = require "ctrace.core"
local ct = require "ctrace"

local M = {}

local SAFE = {"assert", "error", "ipairs", "pairs", "next", "pcall", "xpcall", "select", "tonumber", "tostring", "type",
              "unpack", "print", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable", "string", "table", "math",
              "coroutine", "bit"}

-- The directories a run may read: the folder, the project, the model directories and the caches.
local function read_roots(folder)
  local home = os.getenv("HOME") or "/nonexistent"
  local cache = os.getenv("XDG_CACHE_HOME") or (home .. "/.cache")
  local roots = {}
  local function add(d)
    if d and d ~= "" and core.exists(d) == "directory" then roots[#roots + 1] = d end
  end
  add(folder)
  add(ct.root or ".")
  add(os.getenv("CTRACE_CACHE") or (cache .. "/ctrace"))
  add(os.getenv("HF_HOME") or (cache .. "/huggingface"))
  add(os.getenv("HF_HUB_CACHE"))
  for _, d in ipairs(ct.model_dirs()) do add(d) end
  return roots
end

-- The modules an experiment may require (not ctrace.core, ctrace.cli, ctrace.casestudy,
-- ctrace.sandbox: they reach the process's own settings).
local MODULES = {}
for _, name in ipairs {"ctrace", "ctrace.study", "ctrace.svg", "ctrace.viewer", "ctrace.graph", "ctrace.intervention",
                       "ctrace.transcoders", "ctrace.dashboards", "ctrace.labels", "ctrace.neuronpedia", "ctrace.hub"} do
  MODULES[name] = true
end

function M.record_reads()
  local open = io.open
  io.open = function(path, mode)
    mode = mode or "r"
    if mode:find("[wa+]") then core.check_write(path)
    elseif core.exists(path) then core.note_read(path) end
    return open(path, mode)
  end
  local lines = io.lines
  io.lines = function(path, ...)
    if path then core.note_read(path) end
    return lines(path, ...)
  end
end

local function forbidden(name)
  return function() error("BAD_ARG: " .. name .. " is not available to experiments (ctrace run --unsafe allows it)", 2) end
end

function M.confine(folder)
  core.set_write_root(folder .. "/results")
  core.set_read_roots(read_roots(folder))
  core.lock_roots()
  M.record_reads()   -- Lua's own file access goes through the same checks as the engine's
  local rename, remove = os.rename, os.remove
  os.rename = function(a, b) core.check_write(a) core.check_write(b) return rename(a, b) end
  os.remove = function(a) core.check_write(a) return remove(a) end
  os.execute, io.popen, os.exit, os.tmpname = forbidden("os.execute"), forbidden("io.popen"), forbidden("os.exit"),
                                              forbidden("os.tmpname")
  io.input, io.output = forbidden("io.input"), forbidden("io.output")
  package.loadlib, package.cpath = forbidden("package.loadlib"), ""
  for i = #package.loaders, 3, -1 do package.loaders[i] = nil end   -- C loaders
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.io = {open = io.open, lines = io.lines, write = io.write, read = io.read, stdout = io.stdout, stderr = io.stderr}
  env.io.popen, env.io.input, env.io.output = io.popen, io.input, io.output
  env.os = {time = os.time, clock = os.clock, date = os.date, getenv = os.getenv, difftime = os.difftime,
            rename = os.rename, remove = os.remove, execute = os.execute, exit = os.exit, tmpname = os.tmpname}
  env.require = function(name)
    if not MODULES[name] then
      error("BAD_ARG: require '" .. tostring(name) .. "': experiments may require ctrace and its modules for studies "
            .. "only (ctrace run --unsafe allows more)", 2)
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

return M
