-- test_model.lua - the Lua surface of ctrace.Model, ctrace.Tensor and ctrace.Tokenizer on
-- stories260K: entry points, hooks, generation, and errors that must raise, never crash.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local m = ct.load_model("stories260K")

t.run {
  {"load_model's dtype: bfloat16 rounds the float32 weights (held in BF16), bad names and options raise", function()
    local mb = ct.load_model("stories260K", {dtype = "bf16"})
    t.eq(m:config().dtype, "F32", "stored F32")
    t.eq(mb:config().dtype, "BF16", "held in BF16")
    local a, b = m:forward("Once upon a time"), mb:forward("Once upon a time")
    t.ok(a:get(3, 100) ~= b:get(3, 100), "the logits change with the weights")
    t.close(a:get(3, 100), b:get(3, 100), 0.5, "and stay close")
    t.eq(ct.load_model("stories260K", {dtype = "float32"}):forward("Once upon a time"):get(3, 100), a:get(3, 100),
         "float32: as stored")
    t.raises(function() ct.load_model("stories260K", {dtype = "int8"}) end, "dtype int8; expected float32, bfloat16 or float16", "int8")
    t.raises(function() ct.load_model("stories260K", {dtipe = "bf16"}) end, "unknown option 'dtipe'", "a misspelt option")
  end},
  {"greedy 200 from BOS equals greedy_200.txt", function()
    local f = assert(io.open(t.shared .. "/stories260K/greedy_200.txt", "rb"))
    local want = f:read("*a") f:close()
    t.eq(m:generate("", {max_tokens = 200, temperature = 0}), want, "generate text")
  end},
  {"config fields", function()
    t.eq(m.d_model, 64, "d_model")
    t.eq(m.n_layers, 5, "n_layers")
    t.eq(m.n_kv_heads, 4, "n_kv_heads")
    t.eq(m.d_vocab, 512, "d_vocab")
    t.eq(m:config().architecture, "llama2.c", "architecture")
  end},
  {"tokenize / detokenize", function()
    local ids = m:tokenize("Once upon a time")
    t.eq(ids[1], 1, "BOS first")
    t.eq(#m:tokenize("Once upon a time", {add_special_tokens = false}), #ids - 1, "without BOS")
    t.eq(m:detokenize(ids, {skip_special_tokens = true}), "Once upon a time", "round trip")
  end},
  {"forward logits match run_with_cache and generation", function()
    local logits = m:forward("Once upon a time")
    local shape = logits:shape()
    t.eq(shape[1], 5, "T")
    t.eq(shape[2], 512, "V")
    local lg2, cache = m:run_with_cache("Once upon a time")
    t.eq(lg2:get(5, 7), logits:get(5, 7), "same logits with the cache on")
    local last = logits[5]
    local greedy = m:generate("Once upon a time", {max_tokens = 1, temperature = 0})
    t.eq(m:detokenize({last:argmax() - 1}), greedy:gsub("^ ", ""), "argmax of the last row is the greedy token")
    -- every hook of the issue is present with its shape
    local D, T = 64, 5
    for l = 0, 4 do
      for _, h in ipairs {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "ln1.hook_normalized",
                          "ln2.hook_normalized", "mlp.hook_in", "mlp.hook_out", "hook_mlp_out", "hook_attn_out"} do
        local x = cache["blocks." .. l .. "." .. h]
        t.ok(x and x:shape()[1] == T and x:shape()[2] == D, "blocks." .. l .. "." .. h .. " is (T, D)")
      end
      local p = cache["blocks." .. l .. ".attn.hook_pattern"]
      t.ok(p and p:shape()[1] == 8 and p:shape()[2] == T and p:shape()[3] == T, "pattern is (H, T, T)")
      t.ok(cache["blocks." .. l .. ".ln1.hook_scale"]:shape()[1] == T, "ln1 scale is (T,)")
      t.ok(cache["blocks." .. l .. ".ln2.hook_scale"]:shape()[1] == T, "ln2 scale is (T,)")
    end
    t.ok(cache["ln_final.hook_scale"] and cache["unembed.hook_pre"] and cache["hook_embed"], "global hooks")
    -- residual bookkeeping: resid_post = resid_mid + mlp_out, resid_mid = resid_pre + attn_out
    local pre, mid, post = cache["blocks.2.hook_resid_pre"], cache["blocks.2.hook_resid_mid"], cache["blocks.2.hook_resid_post"]
    local ao, mo = cache["blocks.2.hook_attn_out"], cache["blocks.2.hook_mlp_out"]
    local worst = 0
    for i = 1, T do for j = 1, D do
      worst = math.max(worst, math.abs(pre:get(i, j) + ao:get(i, j) - mid:get(i, j)),
                       math.abs(mid:get(i, j) + mo:get(i, j) - post:get(i, j)))
    end end
    t.ok(worst < 1e-5, "residual sums hold (max err " .. worst .. ")")
    -- pattern rows sum to one and are causal
    local pat = cache["blocks.1.attn.hook_pattern"]
    local s = 0
    for k = 1, T do s = s + pat:get(3, 4, k) end
    t.close(s, 1, 1e-5, "pattern row sums to 1")
    t.eq(pat:get(3, 2, 4), 0, "pattern is causal")
  end},
  {"TransformerLens aliases and selected hooks", function()
    local _, c = m:run_with_cache({1, 403, 407}, {hooks = {"blocks.3.hook_mlp_in", "blocks.1.ln2.hook_normalized"}})
    t.ok(c["blocks.3.mlp.hook_in"] ~= nil, "hook_mlp_in is an alias of mlp.hook_in")
    local n = 0
    for _ in pairs(c) do n = n + 1 end
    t.eq(n, 2, "only the requested hooks")
  end},
  {"seeded sampling repeats", function()
    local a = m:generate("Lily", {max_tokens = 30, temperature = 1, top_p = 0.9, seed = 7})
    local b = m:generate("Lily", {max_tokens = 30, temperature = 1, top_p = 0.9, seed = 7})
    t.eq(a, b, "same seed same text")
  end},
  {"tensor views and printing", function()
    local x = ct.tensor {1, 2, 3, 4, 5, 6}
    t.eq(#x, 6, "length")
    t.eq(x[3], 3, "index")
    local s = x:slice(1, 2, 4)
    t.eq(s:numel(), 3, "slice length")
    t.eq(s[1], 2, "slice starts at 2")
    x:set(2, 20)
    t.eq(s[1], 20, "slice shares storage")
    t.ok(tostring(x):find("tensor%(%[1%.0000, 20%.0000") ~= nil, "tostring: " .. tostring(x))
    local z = ct.zeros(2, 3)
    t.eq(z[2]:numel(), 3, "row view of a 2-d tensor")
    t.eq(#z:totable(), 2, "totable")
    local view = z[1]
    z = nil
    collectgarbage("collect")
    t.eq(view[1], 0, "a view outlives its parent")
  end},
  {"load_tokenizer alone", function()
    local tok = ct.load_tokenizer(t.shared .. "/stories260K/tok512.bin")
    t.eq(tok:vocab_size(), 512, "vocab")
    t.eq(tok.bos_token_id, 1, "bos")
    local ids = tok:encode("Lily")
    t.eq(tok:decode(ids, {skip_special_tokens = true}), "Lily", "round trip")
    local mt = m:tokenizer()
    t.eq(#mt:encode("Lily"), #ids, "model tokenizer agrees")
  end},
}

-- errors: wrong types, unknown options, freed objects, out-of-range indices
t.run {
  {"a BF16 checkpoint: the unembedding as stored, whole and by row", function()
    -- a one-layer untied Llama in BF16 written with numpy (tests/ref); lm_head.txt holds the
    -- float32 values of its unembedding, row by row
    local dir = os.tmpname()
    os.remove(dir)
    local py = [[
import json, os, sys
sys.path.insert(0, "tests/ref")
import numpy as np
from make_transcoders import save_safetensors
d = sys.argv[1]
os.makedirs(d)
D, F, V, H = 8, 16, 11, 2
rng = np.random.default_rng(3)
u = lambda *s: (rng.uniform(-1, 1, size=s).astype(np.float32), "BF16")
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": D, "intermediate_size": F, "num_hidden_layers": 1,
           "num_attention_heads": H, "num_key_value_heads": H, "vocab_size": V, "tie_word_embeddings": False},
          open(d + "/config.json", "w"))
p = "model.layers.0."
w = {"model.embed_tokens.weight": u(V, D), "model.norm.weight": u(D), "lm_head.weight": u(V, D),
     p + "input_layernorm.weight": u(D), p + "post_attention_layernorm.weight": u(D),
     p + "self_attn.q_proj.weight": u(D, D), p + "self_attn.k_proj.weight": u(D, D),
     p + "self_attn.v_proj.weight": u(D, D), p + "self_attn.o_proj.weight": u(D, D),
     p + "mlp.gate_proj.weight": u(F, D), p + "mlp.up_proj.weight": u(F, D), p + "mlp.down_proj.weight": u(D, F)}
save_safetensors(d + "/model.safetensors", w)
np.savetxt(d + "/lm_head.txt", w["lm_head.weight"][0].reshape(-1).astype(np.float64), "%.17g")
]]
    local f = assert(io.open(dir .. ".py", "w"))
    f:write(py) f:close()
    t.ok(os.execute("/usr/bin/python3 " .. dir .. ".py " .. dir) == 0, "numpy writes the checkpoint")
    local bm = ct.load_model(dir)
    local U = bm:unembedding()
    t.eq(U:shape()[1] * 100 + U:shape()[2], 1108, "unembedding (11, 8)")
    local want, bad, i = {}, 0, 0
    for line in io.lines(dir .. "/lm_head.txt") do want[#want + 1] = tonumber(line) end
    for r = 1, 11 do for c = 1, 8 do
      i = i + 1
      if U:get(r, c) ~= want[i] then bad = bad + 1 end
    end end
    t.eq(#want == 88 and bad, 0, "every BF16 value of lm_head.weight as float32, exactly")
    local row, rbad = bm:unembedding(3), 0
    for c = 1, 8 do if row[c] ~= want[3 * 8 + c] then rbad = rbad + 1 end end
    t.eq(rbad, 0, "unembedding(3) is row 3 (from 0)")
    t.eq(bm:forward({0, 5, 9}):shape()[2], 11, "the BF16 model runs")
    bm:free()
    os.execute("rm -rf " .. dir .. " " .. dir .. ".py")
  end},
  {"errors raise cleanly", function()
    t.raises(function() ct.load_model("no/such/model") end, "NOT_FOUND", "missing model")
    t.raises(function() ct.load_model(42) end, "BAD_ARG", "number as path")
    t.raises(function() m:generate("x", {max_tokens = 1, bogus = 1}) end, "unknown option 'bogus'", "unknown option")
    t.raises(function() m:generate("x", {max_tokens = "many"}) end, "expects a number", "wrong option type")
    t.raises(function() m:forward({1, 9999}) end, "OUT_OF_RANGE", "token outside the vocabulary")
    t.raises(function() m:forward({}) end, "BAD_ARG", "empty input")
    t.raises(function() m:forward(12) end, "expects a prompt string", "number as prompt")
    t.raises(function() m:run_with_cache("x", {hooks = {"blocks.9.hook_resid_mid"}}) end, "NOT_FOUND", "layer out of range")
    t.raises(function() m:run_with_cache("x", {hooks = {"blocks.0.ln1_post.hook_scale"}}) end, "does not exist",
             "Gemma-only hook on a Llama model")
    t.raises(function() m:tokenize("\255abc") end, "BAD_UTF8", "invalid UTF-8 text")
    local x = ct.tensor {1, 2, 3}
    t.raises(function() return x[4] end, "OUT_OF_RANGE", "index past the end")
    t.raises(function() return x[0] end, "OUT_OF_RANGE", "index 0")
    t.raises(function() x:slice(1, 2, 9) end, "OUT_OF_RANGE", "slice past the end")
    t.raises(function() x:get(1, 1) end, "expected 1 indices", "wrong index count")
    t.raises(function() x.select(m, 1, 1) end, "ctrace.Tensor expected", "model passed as tensor")
    x:free()
    t.raises(function() return x[1] end, "a freed ctrace.Tensor was used", "freed tensor")
    t.raises(function() return x:shape() end, "ctrace.Tensor:shape called on a freed Tensor", "freed tensor: the method named")
    local m2 = ct.load_model("stories260K")
    local tok = m2:tokenizer()
    m2:free()
    t.raises(function() m2:forward({1}) end, "a freed ctrace.Model was used", "freed model")
    t.raises(function() m2:tokenizer() end, "ctrace.Model:tokenizer called on a freed Model", "freed model: the method named")
    t.raises(function() tok:encode("a") end, "freed", "tokenizer of a freed model")
    m2:free()   -- idempotent
  end},

  {"process memory: resident, anonymous and file-backed bytes", function()
    local before = ct.memory()
    local big = {}
    for i = 1, 2000000 do big[i] = i end           -- 16 MB of Lua array: anonymous memory
    local after = ct.memory()
    t.ok(type(before.rss) == "number" and before.rss >= before.anon and before.rss >= before.file and
         before.peak_rss >= before.rss, "rss >= anon, rss >= file, peak >= rss")
    t.ok(before.file_huge == nil or (type(before.file_huge) == "number" and before.file_huge >= 0 and
         before.file_huge <= before.file), "file pages in 2 MiB mappings: within the file pages, where the kernel tells")
    t.ok(after.anon - before.anon > 8e6, string.format("a 2M-element table shows as anonymous memory (+%.1f MB)",
                                                         (after.anon - before.anon) / 1e6))
    big = nil
  end},
}
t.done()
