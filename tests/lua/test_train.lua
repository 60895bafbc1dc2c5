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

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function same_set(a, b)
  for l = 0, 4 do
    if slurp(a .. "/layer_" .. l .. ".safetensors") ~= slurp(b .. "/layer_" .. l .. ".safetensors") then return false end
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
