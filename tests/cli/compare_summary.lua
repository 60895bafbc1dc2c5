-- compare_summary.lua EXPECTED GOT - every number of EXPECTED equals GOT's within 1e-4 (relative
-- above 1), every string exactly; exits 1 naming the first difference.
local ct = require "ctrace"
local function read(p)
  local f = assert(io.open(p, "rb"), "cannot open " .. p)
  local s = f:read("*a")
  f:close()
  return ct.json_decode(s)
end
local function cmp(a, b, path)
  if type(a) == "number" and type(b) == "number" then
    if math.abs(a - b) > 1e-4 * math.max(1, math.abs(a)) then error(path .. ": expected " .. a .. ", got " .. b, 0) end
  elseif type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do cmp(v, b[k], path .. "." .. tostring(k)) end
  elseif a ~= b then
    error(path .. ": expected " .. tostring(a) .. ", got " .. tostring(b), 0)
  end
end
cmp(read(arg[1]), read(arg[2]), "summary")
