-- generate.lua - ctrace on stories260K: greedy generation tokens/s from BOS and the time of one
-- forward pass over a prompt (all positions at once), medians of repeated runs.
--   ctrace bench/generate.lua [tokens] [repeats]
local ct = require "ctrace"
local n, reps = tonumber(arg[1]) or 256, tonumber(arg[2]) or 21
local m = ct.load_model("stories260K")
local function median(t) table.sort(t) return t[math.floor(#t / 2) + 1] end
local clock = ct.clock

local gen = {}
for i = 1, reps do
  local t0 = clock()
  m:generate("", {max_tokens = n, temperature = 0, stop_at_eos = false})
  gen[i] = clock() - t0
end
print(string.format("ctrace generate: %d tokens from BOS, median of %d runs: %.0f tok/s", n, reps, n / median(gen)))

local ids = {1}
for i = 2, n do ids[i] = (i * 37) % 512 end
for _, T in ipairs {16, 64, n} do
  local p = {}
  for i = 1, T do p[i] = ids[i] end
  local fw = {}
  for i = 1, reps do
    local t0 = clock()
    m:forward(p)
    fw[i] = clock() - t0
  end
  print(string.format("ctrace forward over a %d-token prompt: median %.3f ms (%.0f positions/s)", T, median(fw) * 1e3,
                      T / median(fw)))
end
