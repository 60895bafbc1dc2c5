-- test_default_set.lua - the committed default transcoders of stories260K meet their targets
-- on held-out text the model samples itself (seeds 1000001.., never used in training): mean
-- FVU <= 0.15 at mean L0 <= 24, next-token agreement of the replacement model >= 60%; dead
-- features < 10% in every layer over the dashboards' 100-text corpus; and the dashboards agree
-- with a fresh encode.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"
local dash = require "ctrace.dashboards"

local m = ct.load_model("stories260K")
local held = ct.sample_texts(m, 40, 256, 1000001)

for _, name in ipairs {"stories260K", "stories260K-clt"} do
  local tc = ct.load_transcoders(name)
  t.ok(tc:check(m), name .. " fits stories260K: " .. tostring(tc))
  local e = tc:evaluate(m, held)
  local fvu, l0 = 0, 0
  for l, x in ipairs(e.layers) do
    io.write(string.format("# %s layer %d: fvu %.4f  l0 %.2f  dead on this sample %.1f%%\n", name, l - 1, x.fvu, x.l0,
                           100 * x.dead))
    fvu, l0 = fvu + x.fvu / #e.layers, l0 + x.l0 / #e.layers
  end
  t.ok(fvu <= 0.15, string.format("%s: mean FVU %.4f <= 0.15 on %d held-out positions", name, fvu, e.n_tokens))
  t.ok(l0 <= 24, string.format("%s: mean L0 %.2f <= 24", name, l0))
  t.ok(e.agreement >= 0.60, string.format("%s: replacement model top-1 agreement %.4f >= 0.60 (mean KL %.4f)", name,
                                          e.agreement, e.kl))
  local d = assert(dash.load(tc.path))
  for l = 0, tc.n_layers - 1 do
    local dead = 0
    for _, f in ipairs(d.layers[l + 1]) do dead = dead + (f.density == 0 and 1 or 0) end
    t.ok(dead / #d.layers[l + 1] < 0.10, string.format("%s layer %d: %.1f%% of features never active on %d dashboard tokens",
                                                        name, l, 100 * dead / #d.layers[l + 1], d.n_tokens))
  end
end

local tc = ct.load_transcoders("stories260K")
local d = assert(dash.load(tc.path))

-- spot check: a dashboard example is what the model and the set give now
local f = dash.feature(d, m, 2, 7)
local ex = f.examples[1]
if ex then
  local ids = d.corpus[ex.text]
  local _, cache = m:run_with_cache(ids, {hooks = {"blocks.2." .. tc.feature_input_hook}})
  local _, acts = tc:encode(2, cache["blocks.2." .. tc.feature_input_hook])
  t.ok(math.abs(acts:get(ex.position + 1, 8) - ex.activation) < 1e-4, "dashboard example activation reproduces")
else
  t.ok(f.density == 0, "feature without examples has density 0")
end
t.done()
