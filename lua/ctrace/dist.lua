-- ctrace.dist - the MPI job this process is a rank of (README, "MPI"); ct.dist.
--
--   dist.rank, dist.size   this process's rank and the job's size (0 and 1 without mpirun or srun)
--   dist.mpi               whether this build joins MPI jobs (make MPI=1)
--   dist.map(items, fn [, {to = "all"}]) -> on rank 0 the list {fn(items[1], 1), fn(items[2], 2),
--       ...} in input order (nil on the other ranks; to = "all": on every rank). Item i is done
--       by rank (i - 1) % size, which works alone while it does it (its attributions are not
--       shared among the ranks, a map inside fn stays on it; files it saves, it writes). Results
--       travel as JSON (ct.json_encode: numbers exact, strings, booleans, tables; nil stays nil;
--       keys of sparse tables become strings), on one process too, so a job gives rank 0 what one
--       process gives it. A failing fn ends the job (under MPI, even inside pcall).
local core = require "ctrace.core"

local rank, size, mpi = core.dist()
local M = {rank = rank, size = size, mpi = mpi}

-- Under MPI an attribution that fails on any rank ends the job (its message printed with the rank):
-- the other ranks may be waiting for its rows, so it cannot be caught with pcall and carried on from.
if size > 1 then
  local RM = core.methods("ctrace.ReplacementModel")
  local attribute = RM.attribute
  function RM.attribute(...)
    local r = {pcall(attribute, ...)}
    if not r[1] and select(2, core.dist()) > 1 then core.dist_abort(tostring(r[2])) end
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, table.maxn(r))
  end
end

-- Whether this process writes files: rank 0, or any rank working alone (inside a map's fn). The
-- saving methods of graphs, ct.write_file and ct.write_json do nothing elsewhere.
function M.writes() return (core.dist()) == 0 end

-- A failure of this rank's share: under MPI the others would wait for its results, so the job ends
-- (even inside pcall); one process raises it.
local function fail(msg)
  if select(2, core.dist()) > 1 then core.dist_abort(tostring(msg)) end
  error(msg, 0)
end

function M.map(items, fn, opts)
  if type(items) ~= "table" or type(fn) ~= "function" or (opts ~= nil and type(opts) ~= "table") then
    error("BAD_ARG: dist.map(items, fn [, opts]): expected a list, a function and an options table", 2)
  end
  local to_all = opts and opts.to == "all"
  if opts and opts.to ~= nil and not to_all then error("BAD_ARG: dist.map: to = \"all\" or nothing", 2) end
  local me, n = core.dist()   -- inside another map's fn: 0 of 1
  local mine = {}
  for i = 1, #items do
    if (i - 1) % n == me then
      core.dist_alone(true)
      local ok, r = pcall(fn, items[i], i)
      core.dist_alone(false)
      if not ok then fail(r) end
      mine[#mine + 1] = {i, r}
    end
  end
  local ok, text_mine = pcall(core.json_encode, mine)
  if not ok then fail("dist.map: a result cannot travel as JSON: " .. tostring(text_mine)) end
  local parts = core.dist_gather(text_mine)
  local text
  if parts then
    local all = {}
    for _, part in ipairs(parts) do
      for _, e in ipairs(core.json_decode(part)) do all[#all + 1] = e end
    end
    table.sort(all, function(a, b) return a[1] < b[1] end)
    text = core.json_encode(all)
  end
  if to_all then text = core.dist_bcast(text or "") end
  if not text then return nil end
  local out = {}
  for _, e in ipairs(core.json_decode(text)) do out[e[1]] = e[2] end
  return out
end

return M
