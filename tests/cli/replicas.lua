-- replicas.lua - what test_replicas.sh asks ctrace about the replicas (bench/replicas): each
-- command prints TAP lines "ok - ..." / "not ok - ..." (the shell numbers them) and raises nothing.
--
--   ctrace tests/cli/replicas.lua l0 MODEL_DIR TRANSCODERS L0S
--       the model and the set load, fit each other (ct.replacement_model) and, on a prompt the
--       calibration never saw, each layer's mean number of active features (BOS left out) is
--       within FACTOR of its target (L0S: one number per layer, comma-separated)
--   ctrace tests/cli/replicas.lua same TRANSCODERS_A TRANSCODERS_B MODEL_DIR
--       both sets give the same activations on the model's hook inputs (the same transcoders in
--       two layouts)
--   ctrace tests/cli/replicas.lua inputs TRANSCODERS INPUTS_JSON L0S [TRANSCODERS_B]
--       L0 on given input rows (JSON {layer: rows}); with
--       TRANSCODERS_B, also the same activations and reconstructions from both
local ct = require "ctrace"

local FACTOR = 1.5   -- the measured L0 against the target (replicas.py calibrates to about 1.3x)
local PROMPT = "Fact: the capital of the state containing Dallas is"

local function say(ok, what, detail)
  print((ok and "ok - " or "not ok - ") .. what)
  if not ok and detail then print("#   " .. tostring(detail):gsub("\n", "\n#   ")) end
  return ok
end

local function targets(s)
  local t = {}
  for v in s:gmatch("[^,]+") do t[#t + 1] = tonumber(v) end
  return t
end

local function within(l0, want)
  return l0 >= want / FACTOR and l0 <= want * FACTOR
end

-- "layer l: measured (target)" for every layer; true when all are within FACTOR
local function judge(per_layer, want)
  local ok, parts = true, {}
  for l = 0, #want - 1 do
    local v = per_layer[l] or 0
    ok = ok and within(v, want[l + 1])
    parts[#parts + 1] = ("%d: %.1f (%g)"):format(l, v, want[l + 1])
  end
  return ok, table.concat(parts, ", ")
end

-- a (T, D) tensor from a list of rows
local function matrix(rows)
  local t = ct.zeros(#rows, #rows[1])
  for i, r in ipairs(rows) do
    for j, v in ipairs(r) do t:set(i, j, v) end
  end
  return t
end

local function load(path)
  local ok, tc = pcall(ct.load_transcoders, path)
  return ok and tc or nil, tc
end

local function l0(mdir, tpath, want)
  local okm, m = pcall(ct.load_model, mdir)
  if not say(okm, "load_model " .. mdir, m) then return end
  local tc, e = load(tpath)
  if not say(tc ~= nil, "load_transcoders " .. tpath, e) then return end
  say(tc.n_layers == #want, ("%s: %d layers"):format(tpath, #want), tc.n_layers)
  local okr, err = pcall(ct.replacement_model, m, tc)
  if not say(okr, "replacement_model: the set fits the model", err) then return end
  local T = #m:tokenize(PROMPT)
  local count = {}
  for _, f in ipairs(tc:active_features(m, PROMPT)) do count[f.layer] = (count[f.layer] or 0) + 1 end
  for l, c in pairs(count) do count[l] = c / (T - 1) end
  local ok, detail = judge(count, want)
  say(ok, ("%s: L0 per layer within %gx of the target (%s)"):format(tpath, FACTOR, detail), detail)
end

-- A text prompt whose tokens start with an ordinary token gets BOS in front (circuit-tracer's
-- ensure_tokenized), so that the graph's tokens, given back as ids, are the same prompt: the same
-- tokens and the same logits as the text.
local function roundtrip(mdir, tpath)
  local m, tc = ct.load_model(mdir), ct.load_transcoders(tpath)
  local rm = ct.replacement_model(m, tc)
  local text = m:tokenize(PROMPT)
  local g = rm:attribute(PROMPT, {max_feature_nodes = 10, batch_size = 16, verbose = false})
  local ids = g:tokens()
  say(#ids == #text + 1 and ids[2] == text[1] and ids[#ids] == text[#text],
      ("%s: the text's %d tokens (the first %d) get BOS in front: %d tokens, the first %d"):format(mdir, #text, text[1],
        #ids, ids[1]))
  local a = rm:intervene(PROMPT, {}, {activations = false}).logits
  local b = rm:intervene(ids, {}, {activations = false}).logits
  local same = #a:shape() == #b:shape() and a:numel() == b:numel()
  for i = 1, a:size(2) do
    if not same then break end
    same = a:get(a:size(1), i) == b:get(b:size(1), i)
  end
  say(same, "the graph's tokens as ids run the same prompt as the text: the same logits", "")
end

local cmd = arg[1]
if cmd == "l0" then
  l0(arg[2], arg[3], targets(arg[4]))
elseif cmd == "roundtrip" then
  roundtrip(arg[2], arg[3])
elseif cmd == "same" then
  local a, ea = load(arg[2])
  local b, eb = load(arg[3])
  if not say(a and b, "load both " .. arg[2] .. " and " .. arg[3], tostring(ea) .. " / " .. tostring(eb)) then return end
  local m = ct.load_model(arg[4])
  local names = {}
  for l = 0, a.n_layers - 1 do names[#names + 1] = ("blocks.%d.%s"):format(l, a.feature_input_hook) end
  local _, cache = m:run_with_cache(PROMPT, {hooks = names})
  local same, n = true, 0
  for l = 0, a.n_layers - 1 do
    local x = cache[names[l + 1]]
    local pa, ia, va = a:encode_sparse(l, x)
    local pb, ib, vb = b:encode_sparse(l, x)
    same = same and #pa == #pb
    for i = 1, math.min(#pa, #pb) do
      same = same and pa[i] == pb[i] and ia[i] == ib[i] and math.abs(va[i] - vb[i]) <= 1e-5 * math.max(1, math.abs(va[i]))
    end
    n = n + #pa
  end
  say(same and n > 0, ("the two layouts give the same %d activations"):format(n))
elseif cmd == "inputs" then
  local tc, e = load(arg[2])
  if not say(tc ~= nil, "load_transcoders " .. arg[2], e) then return end
  local f = assert(io.open(arg[3]))
  local rows = ct.json_decode(f:read("*a"))
  f:close()
  local want = targets(arg[4])
  local xs, count = {}, {}
  for l = 0, tc.n_layers - 1 do
    xs[l + 1] = matrix(rows[tostring(l)])
    local pos = tc:encode_sparse(l, xs[l + 1])
    count[l] = #pos / #rows[tostring(l)]
  end
  local ok, detail = judge(count, want)
  say(ok, ("%s: L0 per layer within %gx of the target on rows with the model's norm gains (%s)"):format(arg[2], FACTOR,
      detail), detail)
  if arg[5] then
    local b, eb = load(arg[5])
    if not say(b ~= nil, "load_transcoders " .. arg[5], eb) then return end
    local same = true
    for l = 0, tc.n_layers - 1 do
      local pa, ia, va = tc:encode_sparse(l, xs[l + 1])
      local pb, ib, vb = b:encode_sparse(l, xs[l + 1])
      same = same and #pa == #pb and #pa > 0
      for i = 1, math.min(#pa, #pb) do
        same = same and pa[i] == pb[i] and ia[i] == ib[i] and math.abs(va[i] - vb[i]) <= 1e-5 * math.max(1, math.abs(va[i]))
      end
    end
    say(same, "both layouts give the same activations")
    -- the reconstruction goes through the decoders, b_dec and the affine skip (x W_skip^T in
    -- circuit-tracer's layout, x A in Google's): the same up to float rounding
    local ra, rb = tc:reconstruct(xs), b:reconstruct(xs)
    local worst, scale = 0, 0
    for l = 1, #ra do
      local ta, tb = ra[l]:totable(), rb[l]:totable()
      for i = 1, #ta do
        for j = 1, #ta[i] do
          worst = math.max(worst, math.abs(ta[i][j] - tb[i][j]))
          scale = math.max(scale, math.abs(ta[i][j]))
        end
      end
    end
    say(scale > 0 and worst <= 1e-4 * scale, ("both layouts reconstruct the same outputs (largest difference %.2g of %.3g)"):format(
      worst, scale))
  end
else
  say(false, "replicas.lua: unknown command " .. tostring(cmd))
end
