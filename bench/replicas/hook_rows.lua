-- hook_rows.lua - a model's activations at one hook point of every layer, for measure_l0.py.
--
--   ctrace bench/replicas/hook_rows.lua MODEL_DIR HOOK TEXT OUT_JSON
--       -> OUT_JSON: {"hook": ..., "rows": [[[value] * D] * positions] * layers}
--          (the text is tokenized as ctrace tokenizes a prompt, BOS first when the tokenizer adds it)
local ct = require "ctrace"
local dir, hook, text, out = arg[1], arg[2], arg[3], arg[4]
assert(dir and hook and text and out, "usage: hook_rows.lua MODEL_DIR HOOK TEXT OUT_JSON")
local m = ct.load_model(dir)
local names = {}
for l = 0, m.n_layers - 1 do names[#names + 1] = ("blocks.%d.%s"):format(l, hook) end
local _, cache = m:run_with_cache(text, {hooks = names})
local rows = {}
for l = 1, m.n_layers do rows[l] = cache[names[l]]:totable() end
ct.write_file(out, ct.json_encode({hook = hook, rows = rows}))
