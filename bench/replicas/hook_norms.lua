-- hook_norms.lua - the norm of each position's activation at some hook points of every layer,
-- for replicas.py's calibration of transcoder thresholds and biases.
--
--   ctrace bench/replicas/hook_norms.lua MODEL_DIR HOOK[,HOOK...] TEXT...
--       -> JSON {hook: [[[norm of each position] for each text] for layer 0, 1, ...]} on stdout
--          (texts are tokenized as ctrace tokenizes a prompt; position 0 is BOS when the
--          tokenizer adds one)
local ct = require "ctrace"
local dir, hooks = arg[1], arg[2]
assert(dir and hooks and arg[3], "usage: hook_norms.lua MODEL_DIR HOOK[,HOOK...] TEXT...")
local m = ct.load_model(dir)
local list = {}
for h in hooks:gmatch("[^,]+") do list[#list + 1] = h end
local out = {}
for _, h in ipairs(list) do
  out[h] = {}
  for l = 1, m.n_layers do out[h][l] = {} end
end
for i = 3, #arg do
  local names = {}
  for _, h in ipairs(list) do
    for l = 0, m.n_layers - 1 do names[#names + 1] = ("blocks.%d.%s"):format(l, h) end
  end
  local _, cache = m:run_with_cache(arg[i], {hooks = names})
  for _, h in ipairs(list) do
    for l = 0, m.n_layers - 1 do
      local t = cache[("blocks.%d.%s"):format(l, h)]   -- (T, D)
      local norms = {}
      for p = 1, t:size(1) do
        local s = 0
        for _, v in ipairs(t[p]:totable()) do s = s + v * v end
        norms[p] = math.sqrt(s)
      end
      out[h][l + 1][i - 2] = norms
    end
  end
end
io.write(ct.json_encode(out))
