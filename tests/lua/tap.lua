-- tap.lua - a small TAP harness for Lua tests: cases are rows {name, fn}; each runs under
-- pcall with a full GC around it; raises(fn, pattern) checks error rows.
local M = {}
local n, failed = 0, 0

function M.ok(cond, name, diag)
  n = n + 1
  if not cond then failed = failed + 1 end
  io.write((cond and "ok " or "not ok "), n, " - ", name, "\n")
  if not cond and diag then io.write("#   ", tostring(diag):gsub("\n", "\n#   "), "\n") end
  return cond
end

function M.eq(got, want, name)
  return M.ok(got == want, name, "got " .. tostring(got) .. ", want " .. tostring(want))
end

-- fn must raise an error whose message matches pattern (plain find).
function M.raises(fn, pattern, name)
  local okc, err = pcall(fn)
  if okc then return M.ok(false, name, "no error raised") end
  return M.ok(tostring(err):find(pattern, 1, true) ~= nil, name, "error was: " .. tostring(err))
end

function M.close(a, b, tol, name)
  return M.ok(math.abs(a - b) <= tol, name, string.format("%.9g vs %.9g (tol %g)", a, b, tol))
end

-- Runs rows {name, fn}; an error inside fn is a failed case.
function M.run(cases)
  for _, c in ipairs(cases) do
    collectgarbage("collect")
    local okc, err = pcall(c[2])
    if not okc then M.ok(false, c[1] .. " (raised)", err) end
  end
  collectgarbage("collect")
end

function M.done()
  io.write("1..", n, "\n")
  if failed > 0 then io.write("# ", failed, " of ", n, " failed\n") os.exit(1) end
end

-- The whole content of the file at path (bytes).
function M.slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

M.shared = os.getenv("CTRACE_MODELS") or (require("ctrace").root .. "/../shared/models")

return M
