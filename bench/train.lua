-- train.lua - transcoder training speed on stories260K with the default set's settings
-- (d_transcoder 1024, k 24, batch 1024), 300 steps of every layer; the progress lines carry
-- tokens/s (median over layers printed at the end).
local ct = require "ctrace"
local m = ct.load_model("stories260K")
local texts = ct.sample_texts(m, 100, 256, 1)
local dir = os.tmpname()
os.remove(dir)
local t0 = ct.clock()
ct.train_transcoders(m, texts, {dir = dir, d_transcoder = 1024, k = 24, k_aux = 64, steps = 300, batch = 1024,
                                 log_every = 300, quiet = true})
local dt = ct.clock() - t0
os.execute("rm -rf " .. dir)
print(string.format("transcoder training: 5 layers x 300 steps x 1024 tokens in %.1f s: %.0f tokens/s (incl. activation "
                    .. "collection)", dt, 5 * 300 * 1024 / dt))
