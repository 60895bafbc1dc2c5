-- intervene.lua - interventions on stories260K with its default transcoders: one intervention
-- forward against a plain forward over the same prompt (medians of repeated runs, the prompt's
-- clean run kept between interventions as a study does), and a sweep of 100 interventions.
--   ctrace bench/intervene.lua [repeats]
local ct = require "ctrace"
local reps = tonumber(arg[1]) or 51
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders("stories260K"))
local clock = ct.clock
local function median(t) table.sort(t) return t[math.floor(#t / 2) + 1] end
local prompt = "Once upon a time, there was a little girl named Lily. She liked to play with her ball in the park"
local ids = m:tokenize(prompt)

local function time(f)
  local t = {}
  for i = 1, reps do
    local t0 = clock()
    f()
    t[i] = clock() - t0
  end
  return median(t)
end

local iv = {{layer = 2, pos = #ids - 1, feature = 7, scale = -2}}
rm:intervene(ids, iv, {activations = false})   -- the prompt's clean run, kept
local plain = time(function() m:forward(ids) end)
local frozen = time(function() rm:intervene(ids, iv, {activations = false}) end)
local free = time(function() rm:intervene(ids, iv, {activations = false, freeze_attention = false}) end)
local full = time(function() rm:intervene(ids, iv) end)
print(string.format("intervene, %d tokens: plain forward %.3f ms; one intervention %.3f ms (%.2fx) with attention "
                    .. "frozen, %.3f ms (%.2fx) free; %.3f ms (%.2fx) with every activation read out",
                    #ids, plain * 1e3, frozen * 1e3, frozen / plain, free * 1e3, free / plain, full * 1e3, full / plain))

-- a sweep: 100 features of the last position, each inhibited at -2 (logits only)
local g = rm:attribute(ids, {verbose = false})
local feats = {}
for _, f in ipairs(g:nodes("feature")) do
  if #feats < 100 then feats[#feats + 1] = f end
end
local sweeps = {}
for r = 1, 5 do
  local t0 = clock()
  for _, f in ipairs(feats) do rm:intervene(ids, {{node = f, scale = -2}}, {activations = false}) end
  sweeps[r] = clock() - t0
end
print(string.format("intervene sweep: %d single-feature interventions in %.3f s (median of 5)", #feats, median(sweeps)))
