-- test_transcoders.lua - every transcoder format, built by tests/ref/make_transcoders.py with
-- numpy alone (GemmaScope npz stored and deflated, circuit-tracer safetensors in both decoder
-- orientations, TopK (k in the file or in config.yaml, kept values of both signs), GemmaScope-2
-- keys, a cross-layer directory with BF16 decoders, a GemmaScope-2 cross-layer set with per-layer
-- files and an affine skip; and wide sets whose encoders ctrace reads in several tiles and a
-- partial one: npz (D, F) float32 unaligned in the archive, (F, D) bf16, f16 and unaligned
-- float32 safetensors, a bf16 cross-layer set), loads
-- and gives numpy's dense encode / decode / reconstruction to 4e-6, relative for values above
-- one (|a - b| <= 4e-6 max(1, |b|)): float32 carries 6e-8 relative precision and these are
-- sums of 16-160 terms, numpy's in another order and ctrace's with the fused multiply-adds of the
-- BLAS kernels the CPU gets (worst seen 2.2e-6; 120 terms bound the error near 7e-6). Encoder
-- rows equal the file's values exactly (conversion to float32 is exact). Loading keeps every
-- encoder and decoder in its file: the engine's allocations grow by the set's vectors (biases,
-- thresholds, skip matrices) and nothing more; the wide encoders give the same bits on 1 and 3
-- threads. An npz member with one flipped byte is refused.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. " && /usr/bin/python3 tests/ref/make_transcoders.py " .. dir) == 0,
       "make_transcoders.py failed")

-- Lines of numbers; named: the first word of each line is its key.
local function read_rows(path, named)
  local rows = {}
  for line in io.lines(path) do
    local name, rest = line, line
    if named then name, rest = line:match("^(%S+) (.*)$") end
    local v = {}
    for x in rest:gmatch("%S+") do v[#v + 1] = tonumber(x) end
    if named then rows[name] = v else rows[#rows + 1] = v end
  end
  return rows
end

local function tensor2d(v, T, n)
  local x = ct.zeros(T, n)
  for i = 1, T do for j = 1, n do x:set(i, j, v[(i - 1) * n + j]) end end
  return x
end

-- max |a - b| / max(1, |b|) over a (T, n) tensor and a flat list
local function maxdiff(x, v)
  local T, n, worst = x:size(1), x:size(2), 0
  for i = 1, T do for j = 1, n do
    local b = v[(i - 1) * n + j]
    worst = math.max(worst, math.abs(x:get(i, j) - b) / math.max(1, math.abs(b)))
  end end
  return worst
end

local cases = {
  {"gemmascope_stored", "gemmascope_stored/params.npz", "plt", "jump_relu"},
  {"gemmascope_deflated", "gemmascope_deflated/params.npz", "plt", "jump_relu"},
  {"circuit_tracer", "circuit_tracer/config.yaml", "plt", "jump_relu"},
  {"circuit_tracer_old", "circuit_tracer_old/layer_0.safetensors", "plt", "relu"},
  {"topk", "topk", "plt", "topk"},
  {"topk_config", "topk_config", "plt", "topk"},
  {"gemmascope2", "gemmascope2/params.safetensors", "plt", "jump_relu"},
  {"clt", "clt", "clt", "jump_relu"},
  {"gemmascope2_clt", "gemmascope2_clt/config.yaml", "clt", "jump_relu"},
  {"wide_npz", "wide_npz/params.npz", "plt", "jump_relu"},
  {"wide_bf16", "wide_bf16/layer_0.safetensors", "plt", "relu"},
  {"wide_f16", "wide_f16/layer_0.safetensors", "plt", "jump_relu"},
  {"wide_f32_unaligned", "wide_f32_unaligned/layer_0.safetensors", "plt", "relu"},
  {"wide_clt_bf16", "wide_clt_bf16", "clt", "relu"},
}

for _, c in ipairs(cases) do
  local name, path, kind, act = c[1], c[2], c[3], c[4]
  local ok_, err = pcall(function()
    collectgarbage()
    local before = ct.mem_bytes()
    local tc = ct.load_transcoders(dir .. "/" .. path)
    local grown = ct.mem_bytes() - before
    t.eq(tc.kind, kind, name .. ": kind")
    t.eq(tc.activation, act, name .. ": activation")
    local xs, want = read_rows(dir .. "/" .. name .. "/x.txt"), read_rows(dir .. "/" .. name .. "/expected.txt", true)
    local D, L = tc.d_model, tc.n_layers
    local T = #xs[1] / D
    local inputs, worst = {}, {enc = 0, dec = 0, rec = 0}
    for l = 0, L - 1 do
      local x = tensor2d(xs[l + 1], T, D)
      inputs[l + 1] = x
      local pre, acts = tc:encode(l, x)
      worst.enc = math.max(worst.enc, maxdiff(pre, want["pre_" .. l]), maxdiff(acts, want["act_" .. l]))
      for target = l, L - 1 do
        local w = want["dec_" .. l .. "_" .. target]
        if w then worst.dec = math.max(worst.dec, maxdiff(tc:decode(l, acts, target), w)) end
      end
    end
    -- what loading allocated: at most the vectors of every layer (b_enc, threshold, b_dec) and a
    -- skip matrix, each allocation a byte over; a float32 copy of an encoder alone is F * D floats
    local vectors, enc_copy = 0, math.huge
    for l = 0, L - 1 do
      local F = tc:d_transcoder(l)
      vectors = vectors + 4 * (2 * F + D + D * D) + 4
      enc_copy = math.min(enc_copy, 4 * F * D)
    end
    t.ok(grown <= vectors, string.format("%s: loading allocated %d bytes, no more than the vectors and skips (%d; an "
                                         .. "encoder's float32 copy would be %d)", name, grown, vectors, enc_copy))
    local rows_exact = true
    for key, v in pairs(want) do
      local l, f = key:match("^encrow_(%d+)_(%d+)$")
      if l then
        local r = tc:encoder_row(tonumber(l), tonumber(f))
        for i = 1, D do rows_exact = rows_exact and r:get(i) == v[i] end
      end
    end
    t.ok(rows_exact, name .. ": encoder rows equal the file's values")
    if name:match("^wide") then   -- the tiles shared among 1 or 3 threads: the same bits
      local n0, same = ct.threads(), true
      ct.threads(1)
      local p1 = tc:encode(0, inputs[1])
      ct.threads(3)
      local p3 = tc:encode(0, inputs[1])
      ct.threads(n0)
      for i = 1, p1:size(1) do for j = 1, p1:size(2) do same = same and p1:get(i, j) == p3:get(i, j) end end
      t.ok(same, name .. ": encoding on 1 and on 3 threads gives the same bits")
    end
    local rec = tc:reconstruct(inputs)
    for l = 0, L - 1 do worst.rec = math.max(worst.rec, maxdiff(rec[l + 1], want["recon_" .. l])) end
    t.ok(worst.enc <= 4e-6, string.format("%s: encode (pre and activations) matches numpy, max diff %.2g", name, worst.enc))
    t.ok(worst.dec <= 4e-6, string.format("%s: every decoder slice matches numpy, max diff %.2g", name, worst.dec))
    t.ok(worst.rec <= 4e-6, string.format("%s: reconstruction (bias, skip, all decoders) matches numpy, max diff %.2g",
                                          name, worst.rec))
  end)
  if not ok_ then t.ok(false, name .. " raised", err) end
end

t.run {
  {"config.yaml hooks and names", function()
    local tc = ct.load_transcoders(dir .. "/circuit_tracer")
    t.eq(tc.feature_input_hook, "mlp.hook_in", "input hook from config.yaml")
    t.eq(tc.feature_output_hook, "mlp.hook_out", "output hook")
    t.eq(tc.model_name, "test/tiny", "model_name")
    t.eq(tc.n_layers, 2, "two layers from the list")
    t.ok(tc.skip, "skip connection found")
    local g = ct.load_transcoders(dir .. "/gemmascope_stored/params.npz")
    t.eq(g.feature_input_hook, "ln2.hook_normalized", "GemmaScope default input hook")
    -- every member of an npz is read whole (its CRC-32): the archive is mapped with the huge-page
    -- hint from the start, where the kernel has transparent huge pages
    local thp = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp then
      thp:close()
      local flags, in_npz = {}, false
      for line in io.lines("/proc/self/smaps") do
        if line:match("^%x+%-%x+ ") then in_npz = line:find("gemmascope_stored/params.npz", 1, true) ~= nil
        elseif in_npz and line:match("^VmFlags:") then flags[#flags + 1] = line end
      end
      local all, huge = #flags > 0, 0
      for _, f in ipairs(flags) do   -- the decoder's range: random reads, no huge pages
        local hg, rr_nh = f:find(" hg", 1, true), f:find(" rr", 1, true) and f:find(" nh", 1, true)
        all = all and (hg or rr_nh) ~= nil
        if hg then huge = huge + 1 end
      end
      t.ok(all and huge > 0, "the npz's mappings hint huge pages, but for the decoder's: " .. table.concat(flags, " | "))
    end
    t.eq(ct.load_transcoders(dir .. "/clt").feature_input_hook, "hook_resid_mid", "CLT hook")
    t.eq(ct.load_transcoders(dir .. "/topk").k, 4, "TopK k read from the file")
  end},
  {"TopK keeps the k largest pre-activations as they are, negative ones included (hand-worked)", function()
    -- W_enc rows (1,0) (0,1) (1,1) (-1,0) (0,-1), b_enc -0.5 each, k 3; W_dec rows (1,0) (0,1) (1,1)
    -- (2,0) (0,2), b_dec (0.1, -0.1)
    local tc = ct.load_transcoders(dir .. "/topk_hand")
    t.eq(tc.activation, "topk", "activation")
    t.eq(tc.k, 3, "k from config.yaml")
    local x = tensor2d({-1, -2,   1, 0.5,   0, 0,   -2, 1}, 4, 2)
    local pre, acts = tc:encode(0, x)
    local want_pre = {-1.5, -2.5, -3.5, 0.5, 1.5,   0.5, 0, 1, -1.5, -1,   -0.5, -0.5, -0.5, -0.5, -0.5,
                      -2.5, 0.5, -1.5, 1.5, -1.5}
    local want_act = {
      -1.5, 0, 0, 0.5, 1.5,    -- kept 1.5, 0.5 and -1.5: the negative one stays (ReLU would give 0)
      0.5, 0, 1, 0, 0,         -- kept 1, 0.5 and 0 (a kept zero is not active)
      -0.5, -0.5, -0.5, 0, 0,  -- five equal values: the three lowest indices, all negative
      0, 0.5, -1.5, 1.5, 0}    -- 1.5, 0.5, then -1.5 twice: feature 2 (the lower index) is kept
    t.ok(maxdiff(pre, want_pre) == 0, "pre-activations")
    t.ok(maxdiff(acts, want_act) == 0, "activations: " .. table.concat(acts:totable()[1], " ") .. " / ...")
    -- reconstruction of row 1: -1.5 (1,0) + 0.5 (2,0) + 1.5 (0,2) + (0.1, -0.1) = (-0.4, 2.9)
    local rec = tc:reconstruct({x})[1]
    t.ok(math.abs(rec:get(1, 1) - -0.4) < 1e-6 and math.abs(rec:get(1, 2) - 2.9) < 1e-6,
         string.format("reconstruction (%.7g, %.7g) = (-0.4, 2.9)", rec:get(1, 1), rec:get(1, 2)))
    local pos, idx, val = tc:encode_sparse(0, x)
    local got = {}
    for i = 1, #pos do got[#got + 1] = string.format("%d:%d=%g", pos[i], idx[i], val[i]) end
    t.eq(table.concat(got, " "), "0:0=-1.5 0:3=0.5 0:4=1.5 1:0=0.5 1:2=1 2:0=-0.5 2:1=-0.5 2:2=-0.5 3:1=0.5 3:2=-1.5 3:3=1.5",
         "active features: every non-zero kept value, negative ones included")
  end},
  {"bad inputs", function()
    t.raises(function() ct.load_transcoders(dir .. "/nothing") end, "NOT_FOUND", "missing path")
    local tc = ct.load_transcoders(dir .. "/clt")
    t.raises(function() tc:encode(3, ct.zeros(2, 16)) end, "OUT_OF_RANGE", "layer out of range")
    t.raises(function() tc:encode(0, ct.zeros(2, 15)) end, "BAD_SHAPE", "input of the wrong width")
    t.raises(function() tc:decoder_row(2, 0, 3) end, "OUT_OF_RANGE", "CLT target past the last layer")
    t.raises(function() tc:decode(1, ct.zeros(2, 40), 0) end, "OUT_OF_RANGE", "CLT target before the source layer")
    local m = ct.load_model("stories260K")
    t.raises(function() tc:check(m) end, "d_model 16", "d_model mismatch with the model")
    local b = dir .. "/bad/"
    t.raises(function() ct.load_transcoders(b .. "fortran.npz") end, "fortran_order", "npy in Fortran order")
    t.raises(function() ct.load_transcoders(b .. "bigendian.npz") end, "big-endian", "big-endian npy")
    t.raises(function() ct.load_transcoders(b .. "corrupt_directory.npz") end, "corrupt central directory", "corrupt zip directory")
    t.raises(function() ct.load_transcoders(b .. "truncated.npz") end, "BAD_FORMAT", "truncated npz")
    t.ok(ct.load_transcoders(b .. "good.npz") ~= nil, "the undamaged archive loads")
    t.raises(function() ct.load_transcoders(b .. "flipped_W_dec.npz") end, "member 'W_dec.npy' fails its CRC-32 check",
             "a decoder with one flipped byte")
    t.raises(function() ct.load_transcoders(b .. "flipped_W_enc.npz") end, "member 'W_enc.npy' fails its CRC-32 check",
             "an encoder with one flipped byte")
    t.raises(function() ct.load_transcoders(b .. "yaml_syntax") end, "config.yaml line 4", "config.yaml syntax error names its line")
    t.raises(function() ct.load_transcoders(b .. "unknown_activation") end, "unknown activation 'gelu'", "unknown activation")
    t.raises(function() ct.load_transcoders(b .. "duplicate_layer") end, "repeats the file of layer 0", "duplicate layer")
    t.raises(function() ct.load_transcoders(b .. "missing_layer") end, "layer_1.safetensors is missing", "missing layer")
    t.raises(function() ct.load_transcoders(b .. "topk_k_too_big") end, "k = 41 but layer 0 has 40 features",
             "TopK k above the features of a layer")
    t.ok(ct.load_transcoders(b .. "stories_hooks_ok"):check(m), "a set with hooks the model has passes check")
    t.raises(function() ct.load_transcoders(b .. "stories_hooks_bad"):check(m) end, "'mlp.hook_nonexistent' is not a hook point",
             "hook names the model lacks")
  end},
}
os.execute("rm -rf " .. dir)
t.done()
