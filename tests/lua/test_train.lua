-- test_train.lua - transcoder training: deterministic for a seed (identical files), resumable
-- from a checkpoint with the same bits, and the trained set loads and reconstructs better than
-- its random initialisation would.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local m = ct.load_model("stories260K")
local texts = ct.sample_texts(m, 6, 64, 7)
local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)

local slurp = t.slurp

local function same_set(a, b, clt)
  for l = 0, 4 do
    local names = clt and {"W_enc_" .. l, "W_dec_" .. l} or {"layer_" .. l}
    for _, n in ipairs(names) do
      if slurp(a .. "/" .. n .. ".safetensors") ~= slurp(b .. "/" .. n .. ".safetensors") then return false end
    end
  end
  return slurp(a .. "/config.yaml") == slurp(b .. "/config.yaml")
end

local base = {d_transcoder = 96, k = 4, k_aux = 8, batch = 64, lr = 3e-3, quiet = true, log_every = 10}
local function opts(extra)
  local o = {}
  for k, v in pairs(base) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return o
end

t.run {
  {"same seed, same files; another seed, other files", function()
    ct.train_transcoders(m, texts, opts {dir = tmp .. "/a", steps = 40, seed = 3})
    ct.train_transcoders(m, texts, opts {dir = tmp .. "/b", steps = 40, seed = 3})
    ct.train_transcoders(m, texts, opts {dir = tmp .. "/c", steps = 40, seed = 4})
    t.ok(same_set(tmp .. "/a", tmp .. "/b"), "two runs with seed 3 write identical files")
    t.ok(not same_set(tmp .. "/a", tmp .. "/c"), "seed 4 writes other weights")
  end},
  {"checkpoint and resume give the same bits", function()
    os.execute("mkdir -p " .. tmp .. "/ck")
    ct.train_transcoders(m, texts, opts {dir = tmp .. "/half", steps = 20, seed = 3, checkpoint_dir = tmp .. "/ck"})
    ct.train_transcoders(m, texts, opts {dir = tmp .. "/resumed", steps = 40, seed = 3, checkpoint_dir = tmp .. "/ck",
                                          resume = true})
    t.ok(same_set(tmp .. "/a", tmp .. "/resumed"), "20 steps, a checkpoint, 20 more = 40 steps straight")
  end},
  {"the trained set loads and learns", function()
    local tc = ct.load_transcoders(tmp .. "/a")
    t.eq(tc.activation, "topk", "TopK set")
    t.eq(tc.k, 4, "k")
    t.eq(tc.feature_input_hook, "mlp.hook_in", "input hook")
    t.ok(tc:check(m), "fits stories260K")
    local short = ct.train_transcoders(m, texts, opts {dir = tmp .. "/short", steps = 2, seed = 3})
    local e_short = ct.load_transcoders(short):evaluate(m, texts)
    local e_long = tc:evaluate(m, texts)
    t.ok(e_long.layers[1].fvu < e_short.layers[1].fvu,
         string.format("40 steps beat 2 steps on layer 0 FVU (%.3f < %.3f)", e_long.layers[1].fvu, e_short.layers[1].fvu))
    t.ok(e_long.layers[1].l0 <= 4 + 1e-9, "L0 is at most k")
    -- error vectors: output hook = reconstruction from the input hooks + error, every layer
    local prompt = "Once upon a time"
    local errs = tc:errors(m, prompt)
    local hooks = {}
    for l = 0, 4 do hooks[#hooks + 1] = "blocks." .. l .. ".mlp.hook_in" hooks[#hooks + 1] = "blocks." .. l .. ".mlp.hook_out" end
    local _, c = m:run_with_cache(prompt, {hooks = hooks})
    local ins = {}
    for l = 0, 4 do ins[l + 1] = c["blocks." .. l .. ".mlp.hook_in"] end
    local rec, worst = tc:reconstruct(ins), 0
    for l = 0, 4 do
      local y = c["blocks." .. l .. ".mlp.hook_out"]
      for i = 1, y:size(1) do for j = 1, y:size(2) do
        worst = math.max(worst, math.abs(rec[l + 1]:get(i, j) + errs[l + 1]:get(i, j) - y:get(i, j)))
      end end
    end
    t.ok(#errs == 5 and worst < 1e-5, "reconstruction + error = the real output hook (max diff " .. worst .. ")")
  end},
  {"dashboards agree with encode", function()
    local dash = require "ctrace.dashboards"
    local tc = ct.load_transcoders(tmp .. "/a")
    local d = dash.compute(m, tc, texts, {examples = 4})
    dash.save(d, tmp .. "/a")
    local back = dash.load(tmp .. "/a")
    local f = dash.feature(back, m, 1, 5)
    t.ok(f.density >= 0 and f.density <= 1, "density in [0, 1]")
    local ok_sorted, ok_match = true, true
    for i, e in ipairs(f.examples) do
      if i > 1 and e.activation > f.examples[i - 1].activation then ok_sorted = false end
      -- recompute the activation from the model at that text and position
      local ids = m:tokenize(texts[e.text])
      local _, cache = m:run_with_cache(ids, {hooks = {"blocks.1.mlp.hook_in"}})
      local _, acts = tc:encode(1, cache["blocks.1.mlp.hook_in"])
      if math.abs(acts:get(e.position + 1, 6) - e.activation) > 1e-5 then ok_match = false end
      if e.tokens[e.marked] ~= m:tokenizer():token_text(ids[e.position + 1]) then ok_match = false end
    end
    t.ok(#f.examples > 0, "feature 5 of layer 1 has examples")
    t.ok(ok_sorted, "examples in descending activation")
    t.ok(ok_match, "each example's activation and marked token match a fresh encode")
    t.eq(#f.top_logits, 5, "five top logits")
    t.ok(type(f.label) == "string" and #f.label > 0, "a label: " .. tostring(f.label))
  end},
  {"cross-layer: deterministic, resumable, loads and reconstructs", function()
    local a = tmp .. "/clt_a"
    ct.train_transcoders(m, texts, opts {kind = "clt", steps = 20, seed = 5, dir = a})
    ct.train_transcoders(m, texts, opts {kind = "clt", steps = 20, seed = 5, dir = tmp .. "/clt_b"})
    t.ok(same_set(a, tmp .. "/clt_b", true), "two CLT runs with one seed write identical files")
    os.execute("mkdir -p " .. tmp .. "/cltck")
    ct.train_transcoders(m, texts, opts {kind = "clt", steps = 10, seed = 5, dir = tmp .. "/clt_half", checkpoint_dir = tmp .. "/cltck"})
    ct.train_transcoders(m, texts, opts {kind = "clt", steps = 20, seed = 5, dir = tmp .. "/clt_res", checkpoint_dir = tmp .. "/cltck",
                                          resume = true})
    t.ok(same_set(a, tmp .. "/clt_res", true), "a resumed CLT run equals a straight one")
    local tc = ct.load_transcoders(a)
    t.eq(tc.kind, "clt", "saved as a cross-layer directory")
    t.eq(tc.feature_input_hook, "hook_resid_mid", "CLT input hook")
    t.ok(tc:check(m), "fits stories260K")
    local e = tc:evaluate(m, texts)
    t.ok(e.layers[5].l0 <= 4 + 1e-9 and e.layers[5].fvu < 2, string.format("evaluates (layer 4 fvu %.3f)", e.layers[5].fvu))
    t.raises(function() ct.train_transcoders(m, texts, opts {kind = "clt", skip = true, dir = tmp .. "/x", steps = 1}) end,
             "per-layer sets only", "CLT with skip refused")
  end},
  {"bad options", function()
    t.raises(function() ct.train_transcoders(m, texts, {steps = 1}) end, "'dir'", "dir is required")
    t.raises(function() ct.train_transcoders(m, texts, opts {dir = tmp .. "/x", k = 0, steps = 1}) end, "BAD_ARG", "k = 0")
    t.raises(function() ct.train_transcoders(m, texts, opts {dir = tmp .. "/x", bogus = 1}) end, "unknown option", "unknown option")
    t.raises(function() ct.train_transcoders(m, texts, opts {dir = tmp .. "/x", d_transcoder = 64}) end, "equals d_model",
             "a square decoder is refused")
  end},
}
os.execute("rm -rf " .. tmp)
t.done()
