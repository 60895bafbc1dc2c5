-- ctrace.transcoders - conveniences on ctrace.Transcoders written in Lua.
--
--   tc:active_features(model, prompt [, {include_bos = false}])
--       -> list of {layer, position, index, activation} (positions and layers from 0, sorted
--          by layer, position, index; position 0 (BOS) left out unless include_bos)
--   tc:feature(layer, index) -> {layer, index, encoder_norm, decoder_norm}
local core = require "ctrace.core"
local M = core.methods("ctrace.Transcoders")

local function norm(t)
  local s = 0
  for i = 1, #t do s = s + t[i] * t[i] end
  return math.sqrt(s)
end

function M.feature(tc, layer, index)
  local dec = 0
  for target = layer, (tc.kind == "clt" and tc.n_layers - 1 or layer) do
    dec = dec + norm(tc:decoder_row(layer, index, target)) ^ 2
  end
  return {layer = layer, index = index, encoder_norm = norm(tc:encoder_row(layer, index)), decoder_norm = math.sqrt(dec)}
end

function M.active_features(tc, model, prompt, opts)
  local include_bos = opts and opts.include_bos
  local hooks = {}
  for l = 0, tc.n_layers - 1 do hooks[#hooks + 1] = "blocks." .. l .. "." .. tc.feature_input_hook end
  local _, cache = model:run_with_cache(prompt, {hooks = hooks})
  local out = {}
  for l = 0, tc.n_layers - 1 do
    local pos, idx, val = tc:encode_sparse(l, cache["blocks." .. l .. "." .. tc.feature_input_hook])
    for i = 1, #pos do
      if pos[i] > 0 or include_bos then
        out[#out + 1] = {layer = l, position = pos[i], index = idx[i], activation = val[i]}
      end
    end
  end
  return out
end

return M
