-- intervene.lua - interventions on stories260K with its default transcoders: one intervention
-- forward against a plain forward over the same prompt (medians of repeated runs, the prompt's
-- clean run kept between interventions as a study does), a sweep of 100 interventions, and
-- Result:top_logits / prob over one row of a 256,000-entry vocabulary (Gemma's size).
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

-- a result's top_logits(10) and prob(id) over (1, 256000) random logits, through Result's own
-- methods (softmax and selection in C); a stand-in model without a tokenizer (texts are ids)
local V = 256000
local big, seed = ct.zeros(1, V), 1
for v = 1, V do
  seed = (seed * 1103515245 + 12345) % 2147483648
  big:set(1, v, (seed / 2147483648 - 0.5) * 20)
end
local Result = require("ctrace.intervention").Result
local r = setmetatable({logits = big, model = {token_label = function(_, id) return tostring(id) end}}, Result)
local top = time(function() r:top_logits(10) end)
local prob = time(function() r:prob(12345) end)
print(string.format("top_logits over a %d-token vocabulary: %.2f ms for the 10 most probable; prob(id) %.2f ms (medians of %d)",
                    V, top * 1e3, prob * 1e3, reps))
