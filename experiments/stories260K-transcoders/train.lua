-- train.lua - trains the default transcoder set of stories260K and evaluates it.
--   build/ctrace experiments/stories260K-transcoders/train.lua [out_dir] [key=value ...]
-- kind=plt (default: per-layer, with skip, into transcoders/) or kind=clt (cross-layer, into clt/).
-- Corpus: texts sampled from stories260K itself (temperature 1, seeds 1..n_train); held-out
-- texts from seeds 1000001 on, used for the evaluation and the feature dashboards (written to
-- out_dir/dashboards.json). Deterministic for a given OpenBLAS kernel and thread count (see
-- README).
local ct = require "ctrace"
local here = arg[0]:match("^(.*)/[^/]*$") or "."

local cfg = {kind = "plt", n_train = 1000, n_eval = 100, max_tokens = 256, d_transcoder = 1024, k = 24, k_aux = 64,
             steps = 3000, batch = 1024, lr = 1e-3, seed = 1, skip = true, log_every = 500}
local out
for i = 1, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k and i == 1 then
    out = arg[1]
  else
    assert(k and cfg[k] ~= nil, "unknown setting " .. arg[i])
    if v == "true" or v == "false" then cfg[k] = v == "true" else cfg[k] = tonumber(v) or v end
  end
end
if cfg.kind == "clt" then cfg.skip = false end   -- skip connections are trained for per-layer sets
out = out or (here .. (cfg.kind == "clt" and "/clt" or "/transcoders"))

local m = ct.load_model("stories260K")
local t0 = ct.clock()
local train = ct.sample_texts(m, cfg.n_train, cfg.max_tokens, 1)
local held = ct.sample_texts(m, cfg.n_eval, cfg.max_tokens, 1000001)
local t1 = ct.clock()
ct.train_transcoders(m, train, {kind = cfg.kind, dir = out, model_name = "stories260K", d_transcoder = cfg.d_transcoder, k = cfg.k,
                                k_aux = cfg.k_aux, steps = cfg.steps, batch = cfg.batch, lr = cfg.lr, seed = cfg.seed,
                                skip = cfg.skip, log_every = cfg.log_every})
local t2 = ct.clock()
local e = ct.load_transcoders(out):evaluate(m, held)
local fvu, l0, dead = 0, 0, 0
for l, x in ipairs(e.layers) do
  print(string.format("layer %d  fvu %.4f  l0 %.2f  dead %.2f%%", l - 1, x.fvu, x.l0, 100 * x.dead))
  fvu, l0, dead = fvu + x.fvu / #e.layers, l0 + x.l0 / #e.layers, dead + x.dead / #e.layers
end
print(string.format("mean     fvu %.4f  l0 %.2f  dead %.2f%%", fvu, l0, 100 * dead))
print(string.format("replacement model: agreement %.4f  kl %.4f  (%d held-out positions)", e.agreement, e.kl, e.n_tokens))
local t3 = ct.clock()
local dash = require "ctrace.dashboards"
dash.save(dash.compute(m, ct.load_transcoders(out), held), out)
print(string.format("sampling %.1f s, training %.1f s, evaluation %.1f s, dashboards %.1f s, %d BLAS threads", t1 - t0,
                    t2 - t1, t3 - t2, ct.clock() - t3, ct.threads()))
