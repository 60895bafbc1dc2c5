-- ctrace.planted - models whose circuits are known: Llama-architecture checkpoints written with
-- weights that implement a computation by construction, and the ground truth beside them.
--
--   planted.two_hop(opts), planted.induction(opts), planted.binding(opts) -> truth
--                                    each writes a model directory (config.json, model.safetensors,
--                                    tokenizer.json, truth.json) and returns the truth table
--   planted.evaluate(model, truth) -> {accuracy, wrong = {prompt, ...}, leads, margin}
--   planted.texts(truth, n, seed) -> n training prompts of the task's form (random fillers)
--   planted.dictionary(tc, truth, {model}) -> each planted variable's best-matching features
--   planted.roles(g, tc, truth, k) -> the planted variable each feature node of a graph stands for
--   planted.recovery(g, p, truth, roles, k) -> how the pruned graph p of prompt k (of
--                                    truth.prompts; g its full graph) recovers the planted path
--   planted.attention_recovery(rm, p, truth, roles, k) -> the attention hop's edge and QK pair
--
-- The two-hop fact lookup (the "Dallas -> Texas -> Austin" shape), two layers:
--   layer 0 MLP, at a city's position: one neuron per city writes its state's direction
--     ("state:Texas"); one neuron per distractor word writes that word's attribute.
--   layer 1 attention, one head, at the " capital" position: attends to the city (a key read
--     from "is_city"; every other query attends to BOS), and moves the state into a second
--     direction ("moved:Texas").
--   layer 1 MLP, at the " capital" position: one neuron per state writes "answer:Texas", which
--     the unembedding reads as the capital's token (" Austin").
-- A prompt is BOS, filler words, a city, filler words, " capital"; the answer is the capital of
-- the city's state. Layer 0's attention and layer 1's unused neurons are zero.
--
-- Every residual variable (token identities, "const" (in every token), "is_city", the states,
-- moved states, answers and distractor attributes) has a direction. When they number at most
-- `width`, the directions are distinct basis vectors; beyond it they are random unit vectors
-- (superposition: variables / width > 1) drawn from `seed` and spread apart (300 gradient steps
-- on the sum of cos^4 over pairs), and truth.max_overlap is their largest |cos|. `noise` adds
-- N(0, noise^2) to every entry of the projection matrices (drawn after the directions). Neurons
-- read "const" as a negative bias of half their gain, so a neuron is silent unless its own
-- variable is present. The generator does not promise the task is computed: M.evaluate measures it
-- (at 60 variables in 28 dimensions, or noise 0.05, some prompts fail).
local ct = require "ctrace"

local M = {}

-- Park-Miller minimal standard generator: exact in doubles, the same numbers on every machine.
local function rng(seed)
  local x = (math.floor(seed) % 2147483646) + 1
  local r = {}
  function r.uniform()
    x = (x * 16807) % 2147483647
    return x / 2147483647
  end
  function r.normal()   -- Box-Muller
    local u, v = r.uniform(), r.uniform()
    return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * v)
  end
  function r.pick(list) return list[math.min(#list, math.floor(r.uniform() * #list) + 1)] end
  return r
end

local function normalize(v)
  local n2 = 0
  for j = 1, #v do n2 = n2 + v[j] * v[j] end
  for j = 1, #v do v[j] = v[j] / math.sqrt(n2) end
end

-- A unit direction in R^D for each name: basis vectors when they fit, else random ones spread
-- apart (300 gradient steps on the sum of cos^4 over pairs, so the largest overlaps shrink
-- toward the Welch bound). -> directions by name, the largest |cos| of two of them
local function directions(names, D, r)
  local vecs = {}
  for i = 1, #names do
    local v = {}
    for j = 1, D do
      if #names <= D then v[j] = (j == i) and 1 or 0 else v[j] = r.normal() end
    end
    normalize(v)
    vecs[i] = v
  end
  if #names > D then
    for _ = 1, 300 do
      local step = {}
      for i = 1, #names do
        local g = {}
        for j = 1, D do g[j] = 0 end
        for k = 1, #names do
          if k ~= i then
            local c = 0
            for j = 1, D do c = c + vecs[i][j] * vecs[k][j] end
            local w = c * c * c
            for j = 1, D do g[j] = g[j] + w * vecs[k][j] end
          end
        end
        step[i] = g
      end
      for i = 1, #names do
        for j = 1, D do vecs[i][j] = vecs[i][j] - 0.5 * step[i][j] end
        normalize(vecs[i])
      end
    end
  end
  local dirs, max_cos = {}, 0
  for i = 1, #names do
    for k = i + 1, #names do
      local c = 0
      for j = 1, D do c = c + vecs[i][j] * vecs[k][j] end
      max_cos = math.max(max_cos, math.abs(c))
    end
    dirs[names[i]] = vecs[i]
  end
  return dirs, max_cos
end

-- A two-layer Llama model under construction: B.W holds its weights by Hugging Face name (norm
-- gains 1, everything else 0), B.dirs its residual variables' directions. One attention head of
-- hd dimensions per layer; d_mlp neurons per MLP.
local function new_model(o, vocab, names, hd, d_mlp, rope_theta)
  local V, D = #vocab, o.width
  local B = {V = V, D = D, hd = hd, d_mlp = d_mlp, rope_theta = rope_theta, vocab = vocab, names = names,
             r = rng(o.seed), ablated = {}, id = {}}
  for i, w in ipairs(vocab) do B.id[w] = i - 1 end
  for _, name in ipairs(o.ablate) do B.ablated[name] = true end
  B.dirs, B.max_cos = directions(names, D, B.r)
  local W = {["model.embed_tokens.weight"] = ct.zeros(V, D), ["model.norm.weight"] = ct.zeros(D), ["lm_head.weight"] = ct.zeros(V, D)}
  for l = 0, 1 do
    local p = "model.layers." .. l .. "."
    W[p .. "input_layernorm.weight"] = ct.zeros(D)
    W[p .. "post_attention_layernorm.weight"] = ct.zeros(D)
    W[p .. "self_attn.q_proj.weight"] = ct.zeros(hd, D)
    W[p .. "self_attn.k_proj.weight"] = ct.zeros(hd, D)
    W[p .. "self_attn.v_proj.weight"] = ct.zeros(hd, D)
    W[p .. "self_attn.o_proj.weight"] = ct.zeros(D, hd)
    W[p .. "mlp.gate_proj.weight"] = ct.zeros(d_mlp, D)
    W[p .. "mlp.up_proj.weight"] = ct.zeros(d_mlp, D)
    W[p .. "mlp.down_proj.weight"] = ct.zeros(D, d_mlp)
  end
  for name, t in pairs(W) do
    if name:match("norm%.weight$") then
      for j = 1, D do t:set(j, 1) end
    end
  end
  B.W = W
  return B
end

local function add_row(B, t, row, dir, g)   -- t[row, :] += g * dir (row from 1)
  for j = 1, B.D do t:set(row, j, t:get(row, j) + g * B.dirs[dir][j]) end
end

local function add_col(B, t, col, dir, g)   -- t[:, col] += g * dir
  for j = 1, B.D do t:set(j, col, t:get(j, col) + g * B.dirs[dir][j]) end
end

local function wt(B, layer, name) return B.W["model.layers." .. layer .. "." .. name .. ".weight"] end

-- A token's embedding: its identity, "const", and the extra variables listed.
local function embed(B, word, extra)
  local e = B.W["model.embed_tokens.weight"]
  add_row(B, e, B.id[word] + 1, "tok:" .. word, 1)
  add_row(B, e, B.id[word] + 1, "const", 1)
  for _, x in ipairs(extra or {}) do add_row(B, e, B.id[word] + 1, x, 1) end
end

-- Neuron n (from 1) of layer's MLP reads its variable (gain 8/a) with "const" as a bias (-4/a),
-- so on its own input (about a each, normalized) the gate is 4 and the up projection 1; it
-- writes out_gain units of its direction. Elsewhere its gate is negative and its up projection
-- zero: silent.
local function neuron(B, layer, n, reads, writes, a, out_gain)
  add_row(B, wt(B, layer, "mlp.gate_proj"), n, reads, 8 / a)
  add_row(B, wt(B, layer, "mlp.gate_proj"), n, "const", -4 / a)
  add_row(B, wt(B, layer, "mlp.up_proj"), n, reads, 1 / a)
  add_col(B, wt(B, layer, "mlp.down_proj"), n, writes, out_gain / (4 / (1 + math.exp(-4))))
end

-- Head dimension (from 1) of content slot c (from 1) in a head of 64 dimensions at RoPE base
-- 1e4: the 16 dimensions of the 8 slowest pairs (24..31 with 56..63, counting from 0), which
-- turn by under 0.001 rad a position, so a query and a key there match wherever they sit.
local function slot(c)
  assert(c >= 1 and c <= 16, "content slot out of range")
  return c <= 8 and 24 + c or 56 + (c - 8)
end

-- A planted variable an MLP layer computes: members are {neuron (from 1), token} pairs, each
-- neuron reading its token's identity and writing the variable's direction.
local function mlp_variable(name, layer, position, members)
  local v = {name = name, layer = layer, position = position, neurons = {}, reads = {}, writes = name}
  for _, m in ipairs(members) do
    table.insert(v.neurons, m[1] - 1)
    table.insert(v.reads, "tok:" .. m[2])
  end
  return v
end

-- Distractor facts: a layer-0 neuron per word (neurons first + 1, ...) writing "attr:<word>",
-- which nothing reads. Each is a component no prompt needs and a planted variable (distractor).
local function add_distractors(B, words, first, position, components, variables)
  for i, w in ipairs(words) do
    if not B.ablated["mlp0:" .. w] then neuron(B, 0, first + i, "tok: " .. w, "attr:" .. w, math.sqrt(B.D / 2), 2) end
    components["mlp0:" .. w] = "none"
    local v = mlp_variable("attr:" .. w, 0, position, {{first + i, " " .. w}})
    v.distractor = true
    variables[#variables + 1] = v
  end
end

-- Adds N(0, noise^2) to every entry of the projection matrices, tensors in name order (the same
-- draws every run).
local function add_noise(B, noise)
  if noise <= 0 then return end
  local sorted = {}
  for name in pairs(B.W) do sorted[#sorted + 1] = name end
  table.sort(sorted)
  for _, name in ipairs(sorted) do
    local t = B.W[name]
    if t:dim() == 2 then
      for i = 1, t:size(1) do
        for j = 1, t:size(2) do t:set(i, j, t:get(i, j) + noise * B.r.normal()) end
      end
    end
  end
end

-- Fills the fields every truth has, checks the ablated names and writes the files:
-- config.json, model.safetensors, tokenizer.json (every word an added token, BOS prepended by
-- the post-processor), truth.json (directions included).
local function finish(B, o, truth, fn)
  add_noise(B, o.noise)
  for _, name in ipairs(o.ablate) do
    if not truth.components[name] then
      error("BAD_ARG: planted." .. fn .. ": ablate names an unknown component '" .. tostring(name) .. "'", 3)
    end
  end
  truth.width, truth.noise, truth.seed, truth.ablate = B.D, o.noise, o.seed, o.ablate
  truth.n_variables, truth.superposition, truth.max_overlap = #B.names, #B.names / B.D, B.max_cos
  truth.orthogonal, truth.residual_variables, truth.directions, truth.vocab = #B.names <= B.D, B.names, B.dirs, B.vocab
  ct.mkdirs(o.dir)
  ct.write_json(o.dir .. "/config.json", {
    architectures = {"LlamaForCausalLM"}, model_type = "llama", hidden_size = B.D, intermediate_size = B.d_mlp,
    num_hidden_layers = 2, num_attention_heads = 1, num_key_value_heads = 1, head_dim = B.hd, vocab_size = B.V,
    max_position_embeddings = 64, rms_norm_eps = 1e-5, rope_theta = B.rope_theta, tie_word_embeddings = false,
    bos_token_id = 0, hidden_act = "silu", torch_dtype = "float32",
  })
  ct.save_safetensors(o.dir .. "/model.safetensors", B.W, {format = "pt"})
  local added, tv = {}, {}
  for i, w in ipairs(B.vocab) do
    tv[w] = i - 1
    added[i] = {id = i - 1, content = w, single_word = false, lstrip = false, rstrip = false, normalized = false,
                special = i == 1}
  end
  local bos = {SpecialToken = {id = "<s>", type_id = 0}}
  ct.write_json(o.dir .. "/tokenizer.json", {
    version = "1.0", added_tokens = added,
    post_processor = {type = "TemplateProcessing", single = {bos, {Sequence = {id = "A", type_id = 0}}},
                      pair = {bos, {Sequence = {id = "A", type_id = 0}}, {Sequence = {id = "B", type_id = 1}}},
                      special_tokens = {["<s>"] = {id = "<s>", ids = {0}, tokens = {"<s>"}}}},
    model = {type = "BPE", vocab = tv, merges = {}, fuse_unk = false, byte_fallback = false, ignore_merges = false},
  })
  ct.write_json(o.dir .. "/truth.json", truth)
  return truth
end

-- Options: each generator's keys, checked strictly; integers in their ranges.
local function check_opts(fn, o, ints)
  if type(o) ~= "table" then error("BAD_ARG: planted." .. fn .. " expects an options table", 3) end
  local c = {dir = o.dir, noise = o.noise == nil and 0 or o.noise, ablate = o.ablate or {}}
  for k in pairs(o) do
    if not ints[k] and k ~= "dir" and k ~= "noise" and k ~= "ablate" then
      error("BAD_ARG: planted." .. fn .. ": unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  for k, spec in pairs(ints) do
    local v = o[k] == nil and spec[1] or o[k]
    if type(v) ~= "number" or v ~= math.floor(v) or v < spec[2] or v > spec[3] then
      error(string.format("BAD_ARG: planted.%s: %s must be an integer in %d..%d; found %s", fn, k, spec[2], spec[3], tostring(v)), 3)
    end
    c[k] = v
  end
  if type(c.dir) ~= "string" or c.dir == "" then error("BAD_ARG: planted." .. fn .. ": dir (a directory) is required", 3) end
  if type(c.noise) ~= "number" or not (c.noise >= 0 and c.noise < 1) then
    error("BAD_ARG: planted." .. fn .. ": noise must be a number in [0, 1); found " .. tostring(c.noise), 3)
  end
  if type(c.ablate) ~= "table" then error("BAD_ARG: planted." .. fn .. ": ablate must be a list of component names", 3) end
  return c
end

local STATES = {
  {"Texas", "Austin", {"Dallas", "Houston", "Lubbock"}},
  {"California", "Sacramento", {"Fresno", "Oakland", "Irvine"}},
  {"Florida", "Tallahassee", {"Miami", "Orlando", "Tampa"}},
  {"Illinois", "Springfield", {"Chicago", "Peoria", "Aurora"}},
  {"Ohio", "Columbus", {"Cleveland", "Dayton", "Toledo"}},
  {"Georgia", "Atlanta", {"Macon", "Savannah", "Augusta"}},
  {"Nevada", "Carson", {"Reno", "Henderson", "Sparks"}},
  {"Michigan", "Lansing", {"Detroit", "Flint", "Warren"}},
}
local FILLERS = {"the", "city", "of", "in", "near", "big", "old", "new", "fact", "about", "a", "its",
                 "known", "for", "is", "and"}

-- The task's prompts: every city in each of the templates (words around the city).
local TEMPLATES = {
  {{}, {}},
  {{"the", "city"}, {"of"}},
  {{"fact", "about"}, {"in", "the"}},
  {{"a", "big", "old"}, {"near"}},
}

function M.two_hop(opts)
  local o = check_opts("two_hop", opts, {width = {64, 8, 4096}, states = {4, 2, #STATES}, cities_per_state = {3, 1, 3},
                                         distractors = {4, 0, #FILLERS}, seed = {1, 1, 2147483646}})
  local S, C, F = o.states, o.cities_per_state, o.distractors
  -- vocabulary: BOS, cities, " capital", filler words, capitals
  local vocab, states, cities = {"<s>"}, {}, {}
  for s = 1, S do
    local st = STATES[s]
    states[s] = {name = st[1], capital = " " .. st[2]}
    for c = 1, C do
      vocab[#vocab + 1] = " " .. st[3][c]
      cities[#cities + 1] = {token = " " .. st[3][c], state = s}
    end
  end
  vocab[#vocab + 1] = " capital"
  for f = 1, #FILLERS do vocab[#vocab + 1] = " " .. FILLERS[f] end
  for s = 1, S do vocab[#vocab + 1] = states[s].capital end

  -- residual variables (capitals are outputs only: no identity)
  local names = {}
  for i = 1, #vocab - S do names[#names + 1] = "tok:" .. vocab[i] end
  names[#names + 1] = "const"
  names[#names + 1] = "is_city"
  for _, kind in ipairs{"state:", "moved:", "answer:"} do
    for s = 1, S do names[#names + 1] = kind .. states[s].name end
  end
  for f = 1, F do names[#names + 1] = "attr:" .. FILLERS[f] end
  local B = new_model(o, vocab, names, 16, math.max(#cities + F, S), 1e12)
  local D, ablated = B.D, B.ablated

  -- embeddings: a token's identity, "const", and "is_city" for cities
  for i = 1, #vocab - S do embed(B, vocab[i], (i >= 2 and i <= #cities + 1) and {"is_city"} or nil) end

  -- layer 0 MLP: a neuron per city writes its state (distractors below).
  -- (A normalized residual holds its k unit variables at about sqrt(D / k) each.)
  for ci, c in ipairs(cities) do
    if not ablated["mlp0:" .. c.token:sub(2)] then neuron(B, 0, ci, "tok:" .. c.token, "state:" .. states[c.state].name, math.sqrt(D / 3), 2) end
  end

  -- layer 1 attention: q/k on the slowest RoPE pair (head dims hd/2 and hd, from 1), which
  -- turns by under 1e-9 rad a position at rope_theta 1e12
  local s1, s2, a1 = 8, 16, math.sqrt(D / 3)   -- about three unit variables at layer 1
  add_row(B, wt(B, 1, "self_attn.q_proj"), s1, "const", 4 / a1)           -- every query looks for BOS...
  add_row(B, wt(B, 1, "self_attn.k_proj"), s1, "tok:<s>", 4 / a1)
  add_row(B, wt(B, 1, "self_attn.q_proj"), s2, "tok: capital", 8 / a1)    -- ...and " capital" for a city, more strongly
  add_row(B, wt(B, 1, "self_attn.k_proj"), s2, "is_city", 8 / a1)
  if not ablated["head1"] then
    for s = 1, S do   -- value dimension s reads the state; the output writes it as "moved"
      add_row(B, wt(B, 1, "self_attn.v_proj"), s, "state:" .. states[s].name, 1 / a1)
      add_col(B, wt(B, 1, "self_attn.o_proj"), s, "moved:" .. states[s].name, 2)
    end
  end

  -- layer 1 MLP: neuron s reads "moved:<state>", writes "answer:<state>"
  for s = 1, S do
    if not ablated["mlp1:" .. states[s].name] then
      neuron(B, 1, s, "moved:" .. states[s].name, "answer:" .. states[s].name, math.sqrt(D / 3), 2)
    end
  end

  -- unembedding: a capital's token reads its answer direction
  -- (about 2 sqrt(D / 13) normalized at the last position: a logit near 20)
  for s = 1, S do add_row(B, B.W["lm_head.weight"], B.id[states[s].capital] + 1, "answer:" .. states[s].name, 10 / math.sqrt(D / 13)) end

  -- components a test may ablate, and the prompts each one is needed for
  local components = {head1 = "all"}
  for _, c in ipairs(cities) do components["mlp0:" .. c.token:sub(2)] = {city = c.token} end
  for s = 1, S do components["mlp1:" .. states[s].name] = {state = states[s].name} end

  -- the task: every city in every template
  local prompts = {}
  for ti, tp in ipairs(TEMPLATES) do
    for _, c in ipairs(cities) do
      local words = {}
      for _, w in ipairs(tp[1]) do words[#words + 1] = " " .. w end
      local city_pos = #words + 1   -- after BOS
      words[#words + 1] = c.token
      for _, w in ipairs(tp[2]) do words[#words + 1] = " " .. w end
      words[#words + 1] = " capital"
      local st = states[c.state]
      prompts[#prompts + 1] = {text = table.concat(words), template = ti, city = c.token, city_position = city_pos,
                               state = st.name, answer = st.capital, answer_id = B.id[st.capital]}
    end
  end

  -- the planted variables: the MLP layer writing each, its neurons there, the residual
  -- variables they read and the one they write. The path of a state: city token -> state
  -- (layer 0 MLP, city position) -> moved (layer 1 attention) -> answer (layer 1 MLP, last
  -- position) -> the capital's logit.
  local variables = {}
  for s = 1, S do
    local n, members = states[s].name, {}
    for ci, c in ipairs(cities) do
      if c.state == s then members[#members + 1] = {ci, c.token} end
    end
    variables[#variables + 1] = mlp_variable("state:" .. n, 0, "city", members)
    variables[#variables + 1] = {name = "answer:" .. n, layer = 1, position = "last", neurons = {s - 1},
                                 reads = {"moved:" .. n}, writes = "answer:" .. n}
  end
  add_distractors(B, {unpack(FILLERS, 1, F)}, #cities, "filler", components, variables)

  local truth = {task = "two_hop", states = S, cities_per_state = C, distractors = F, variables = variables,
                 components = components, prompts = prompts, capitals = {}, cities = {}}
  for s = 1, S do truth.capitals[states[s].name] = states[s].capital end
  for _, c in ipairs(cities) do truth.cities[c.token] = states[c.state].name end
  return finish(B, o, truth, "two_hop")
end

local WORDS = {"apple", "river", "stone", "cloud", "tiger", "lamp", "chair", "bread", "ghost", "piano", "wheel", "candle",
               "mirror", "forest", "bottle", "garden"}

-- Layer 0's previous-token head: on RoPE's 8 fastest pairs (dims 1..8 with 33..40, from 1) the
-- key is `amp` along each pair and the query the same turned back by the pair's angle a
-- position, so a query at t scores a key at s by amp^2 / 8 * sum_i cos(theta_i (t - s - 1)):
-- largest at s = t - 1. amp is set so that the next best of s = 0..63 trails by 16.
local function previous_token_head(B, a0)
  local thetas = {}
  for i = 0, 7 do thetas[i + 1] = 1 / (B.rope_theta ^ (2 * i / B.hd)) end
  local function f(delta)
    local x = 0
    for _, th in ipairs(thetas) do x = x + math.cos(th * (delta - 1)) end
    return x
  end
  local gap = math.huge
  for delta = 0, 63 do
    if delta ~= 1 then gap = math.min(gap, f(1) - f(delta)) end
  end
  local amp = math.sqrt(16 * math.sqrt(B.hd) / gap)
  local q, k = wt(B, 0, "self_attn.q_proj"), wt(B, 0, "self_attn.k_proj")
  for i, th in ipairs(thetas) do
    add_row(B, k, i, "const", amp / a0)
    add_row(B, q, i, "const", amp * math.cos(th) / a0)
    add_row(B, q, i + B.hd / 2, "const", -amp * math.sin(th) / a0)
  end
end

-- An induction (copy) circuit: after "... A B ... A" the model says B.
--   layer 0 attention (the previous-token head): every position attends to the one before it
--     and copies that token's identity into "prev:<word>";
--   layer 1 attention (the induction head): the query reads the current token ("tok:A"), keys
--     read "prev:A" (the position after an earlier A) on RoPE's slowest pairs, BOS is the sink;
--     it copies the attended token's identity into "out:B", which the unembedding reads as B.
-- Options: width (48), words (8, up to 15), distractors (0: words with a layer 0 MLP neuron
-- writing an attribute), noise, seed, ablate (components: head0, head1, prev:<word> (head 0's
-- copy of one word), copy:<word> (head 1's), mlp0:<word>). Prompts: BOS, 3..6 different words,
-- then one of them again (not the last); the answer is the word that followed it.
function M.induction(opts)
  -- (at most 15 words: content slot 16 is the sink's)
  local o = check_opts("induction", opts, {width = {48, 8, 4096}, words = {8, 3, 15}, distractors = {0, 0, 15},
                                           seed = {1, 1, 2147483646}})
  local n, F = o.words, o.distractors
  if F > n then
    error(string.format("BAD_ARG: planted.induction: distractors (%d) must be at most words (%d): they are words", F, n), 2)
  end
  local vocab, words = {"<s>"}, {}
  for i = 1, n do
    words[i] = " " .. WORDS[i]
    vocab[#vocab + 1] = words[i]
  end
  local names = {"tok:<s>", "const"}
  for _, kind in ipairs{"tok:", "prev:", "out:"} do
    for i = 1, n do names[#names + 1] = kind .. words[i] end
  end
  for i = 1, F do names[#names + 1] = "attr:" .. WORDS[i] end
  local B = new_model(o, vocab, names, 64, math.max(F, 1), 1e4)
  local D, ablated = B.D, B.ablated
  for _, w in ipairs(vocab) do embed(B, w) end
  local a0, a1 = math.sqrt(D / 2), math.sqrt(D / 6)   -- layer 0: token, const; layer 1: and prev (2 units)
  if not ablated["head0"] then
    previous_token_head(B, a0)
    for i = 1, n do
      if not ablated["prev:" .. WORDS[i]] then
        add_row(B, wt(B, 0, "self_attn.v_proj"), i, "tok:" .. words[i], 1 / a0)
        add_col(B, wt(B, 0, "self_attn.o_proj"), i, "prev:" .. words[i], 2)
      end
    end
  end
  if not ablated["head1"] then
    local q, k = wt(B, 1, "self_attn.q_proj"), wt(B, 1, "self_attn.k_proj")
    for i = 1, n do
      add_row(B, q, slot(i), "tok:" .. words[i], 8 / a1)
      add_row(B, k, slot(i), "prev:" .. words[i], 8 / a1)
      if not ablated["copy:" .. WORDS[i]] then
        add_row(B, wt(B, 1, "self_attn.v_proj"), i, "tok:" .. words[i], 1 / a1)
        add_col(B, wt(B, 1, "self_attn.o_proj"), i, "out:" .. words[i], 2)
      end
    end
    -- the sink: BOS scores 8 (a match 16), so with no match BOS takes all but e^-8 per position
    add_row(B, q, slot(16), "const", 8 / a1)
    add_row(B, k, slot(16), "tok:<s>", 8 / a0)
  end
  -- unembedding: a word reads "out:<word>" (2 units among about 10: a logit near 20)
  for i = 1, n do add_row(B, B.W["lm_head.weight"], B.id[words[i]] + 1, "out:" .. words[i], 10 / math.sqrt(D / 10)) end

  local components = {head0 = "all", head1 = "all"}
  for i = 1, n do
    components["prev:" .. WORDS[i]] = {repeated = words[i]}
    components["copy:" .. WORDS[i]] = {answer = words[i]}
  end

  -- 48 prompts from their own generator: 3..6 different words, then one of them again
  local r, prompts = rng(o.seed * 7 + 3), {}
  while #prompts < 48 do
    local m = 3 + (#prompts % 4)
    local pool, seq = {}, {}
    for i = 1, n do pool[i] = words[i] end
    for i = 1, math.min(m, n) do seq[i] = table.remove(pool, math.floor(r.uniform() * #pool) + 1) end
    local j = math.min(#seq - 1, math.floor(r.uniform() * (#seq - 1)) + 1)   -- 1..#seq-1
    prompts[#prompts + 1] = {text = table.concat(seq) .. seq[j], repeated = seq[j], first_position = j,
                             key_position = j + 1, answer = seq[j + 1], answer_id = B.id[seq[j + 1]]}
  end
  local variables = {}
  add_distractors(B, {unpack(WORDS, 1, F)}, 0, "word", components, variables)
  local truth = {task = "induction", words = words, distractors = F, variables = variables, components = components,
                 prompts = prompts}
  return finish(B, o, truth, "induction")
end

local FEMALE, MALE = {"Mary", "Anna", "Lucy", "Emma"}, {"John", "Tom", "Jack", "Paul"}
local BIND_FILLERS = {"and", "met", "then", "saw", "at", "the", "park", "school"}

-- Variable binding: a pronoun bound to the name of its gender. "Mary and John met then she" -> Mary.
--   layer 0 MLP, at a name: one neuron per name writes its gender ("gender:female");
--   layer 1 attention, at the pronoun: " she" queries "gender:female", " he" "gender:male" (keys
--     on RoPE's slowest pairs; BOS is the sink) and copies the attended name's identity into
--     "out:<name>", which the unembedding reads as the name.
-- The gender variables reach the answer only through the head's query-key match: a graph with
-- frozen attention shows the name's token feeding its logit, and QK attribution (rm:qk) shows
-- why the head looked there. Options: width (48), distractors (0: filler words with a layer 0
-- neuron writing an attribute), noise, seed, ablate (components: head1, mlp0:<name>,
-- copy:<name>, mlp0:<filler>). Prompts: every female-male pair, in both orders, with " she" and
-- " he", in two templates alternately (64).
function M.binding(opts)
  local o = check_opts("binding", opts, {width = {48, 8, 4096}, distractors = {0, 0, #BIND_FILLERS}, seed = {1, 1, 2147483646}})
  local F = o.distractors
  local vocab, people = {"<s>"}, {}
  for _, nm in ipairs(FEMALE) do people[#people + 1] = {token = " " .. nm, gender = "female"} end
  for _, nm in ipairs(MALE) do people[#people + 1] = {token = " " .. nm, gender = "male"} end
  for _, p in ipairs(people) do vocab[#vocab + 1] = p.token end
  for _, w in ipairs(BIND_FILLERS) do vocab[#vocab + 1] = " " .. w end
  vocab[#vocab + 1] = " she"
  vocab[#vocab + 1] = " he"
  local names = {"const", "gender:female", "gender:male"}
  for _, w in ipairs(vocab) do names[#names + 1] = "tok:" .. w end
  for _, p in ipairs(people) do names[#names + 1] = "out:" .. p.token end
  for i = 1, F do names[#names + 1] = "attr:" .. BIND_FILLERS[i] end
  local B = new_model(o, vocab, names, 64, #people + F, 1e4)
  local D, ablated = B.D, B.ablated
  for _, w in ipairs(vocab) do embed(B, w) end
  local a0, a1 = math.sqrt(D / 2), math.sqrt(D / 6)   -- layer 0: token, const; layer 1 at a name: and gender (2 units)
  for i, p in ipairs(people) do
    if not ablated["mlp0:" .. p.token:sub(2)] then neuron(B, 0, i, "tok:" .. p.token, "gender:" .. p.gender, a0, 2) end
  end
  if not ablated["head1"] then
    local q, k = wt(B, 1, "self_attn.q_proj"), wt(B, 1, "self_attn.k_proj")
    local ap = math.sqrt(D / 2)   -- the pronoun's position at layer 1: token, const
    add_row(B, q, slot(1), "tok: she", 8 / ap)
    add_row(B, k, slot(1), "gender:female", 8 / a1)
    add_row(B, q, slot(2), "tok: he", 8 / ap)
    add_row(B, k, slot(2), "gender:male", 8 / a1)
    -- the sink: BOS scores 8 (a match 16), so with no match BOS takes all but e^-8 per position
    add_row(B, q, slot(16), "const", 8 / ap)
    add_row(B, k, slot(16), "tok:<s>", 8 / a0)
    for i, p in ipairs(people) do
      if not ablated["copy:" .. p.token:sub(2)] then
        add_row(B, wt(B, 1, "self_attn.v_proj"), i, "tok:" .. p.token, 1 / a1)
        add_col(B, wt(B, 1, "self_attn.o_proj"), i, "out:" .. p.token, 2)
      end
    end
  end
  -- unembedding: a name reads "out:<name>" (2 units among about 6 at the pronoun)
  for _, p in ipairs(people) do add_row(B, B.W["lm_head.weight"], B.id[p.token] + 1, "out:" .. p.token, 10 / math.sqrt(D / 6)) end

  local components = {head1 = "all"}
  for _, p in ipairs(people) do
    components["mlp0:" .. p.token:sub(2)] = {answer = p.token}
    components["copy:" .. p.token:sub(2)] = {answer = p.token}
  end

  local prompts = {}
  for fi = 1, #FEMALE do
    for mi = 1, #MALE do
      for order = 1, 2 do
        for _, pron in ipairs{" she", " he"} do
          local f, m = " " .. FEMALE[fi], " " .. MALE[mi]
          local first, second = order == 1 and f or m, order == 1 and m or f
          local template = #prompts % 2 == 0 and {first, " and", second, " met", " then", pron}
                                              or {" then", first, " saw", second, " at", " the", " park", pron}
          local answer = pron == " she" and f or m
          local key
          for i, w in ipairs(template) do if w == answer then key = i end end   -- positions count BOS as 0
          prompts[#prompts + 1] = {text = table.concat(template), pronoun = pron, answer = answer, answer_id = B.id[answer],
                                   key_position = key, gender = pron == " she" and "female" or "male",
                                   other = answer == f and m or f}
        end
      end
    end
  end
  local variables = {}
  for _, g in ipairs{"female", "male"} do
    local members = {}
    for i, p in ipairs(people) do
      if p.gender == g then members[#members + 1] = {i, p.token} end
    end
    variables[#variables + 1] = mlp_variable("gender:" .. g, 0, "name", members)
  end
  add_distractors(B, {unpack(BIND_FILLERS, 1, F)}, #people, "filler", components, variables)
  local truth = {task = "binding", distractors = F, variables = variables, components = components, prompts = prompts,
                 people = {}, fillers = {}}
  for _, p in ipairs(people) do truth.people[p.token] = p.gender end
  for i, w in ipairs(BIND_FILLERS) do truth.fillers[i] = " " .. w end
  return finish(B, o, truth, "binding")
end

-- Runs the task: accuracy (the answer is the argmax at the last position), the prompts answered
-- wrongly, each prompt's lead (the answer's logit minus the best other logit: negative when
-- wrong) and the smallest lead.
function M.evaluate(model, truth)
  local right, wrong, leads, margin = 0, {}, {}, math.huge
  for i, p in ipairs(truth.prompts) do
    local logits = model:forward(p.text)
    local row = logits[logits:size(1)]
    local answer, other = row[p.answer_id + 1], -math.huge
    for v = 1, row:size(1) do
      if v ~= p.answer_id + 1 and row[v] > other then other = row[v] end
    end
    leads[i] = answer - other
    margin = math.min(margin, leads[i])
    if leads[i] > 0 then right = right + 1 else wrong[#wrong + 1] = p end
  end
  return {accuracy = right / #truth.prompts, wrong = wrong, leads = leads, margin = margin, n = #truth.prompts}
end

-- n training prompts of the task's form, drawn from seed:
--   two_hop    BOS, 0-3 filler words, a city, 0-3 filler words, " capital" (every filler word);
--   induction  3-8 words, each a new one or (one time in three, from the fourth on) an earlier
--              one again;
--   binding    0-2 filler words, a name, 1-2 filler words, a name, 0-2 filler words, a pronoun
--              (names of any genders: a pronoun without its name too).
function M.texts(truth, n, seed)
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
    error("BAD_ARG: planted.texts: n must be a count (an integer >= 0); found " .. tostring(n), 2)
  end
  local r = rng(seed or 1)
  local out = {}
  if truth.task == "two_hop" then
    local cities = {}
    for c in pairs(truth.cities) do cities[#cities + 1] = c end
    table.sort(cities)
    for i = 1, n do
      local words = {}
      for _ = 1, math.floor(r.uniform() * 4) do words[#words + 1] = " " .. r.pick(FILLERS) end
      words[#words + 1] = r.pick(cities)
      for _ = 1, math.floor(r.uniform() * 4) do words[#words + 1] = " " .. r.pick(FILLERS) end
      words[#words + 1] = " capital"
      out[i] = table.concat(words)
    end
  elseif truth.task == "induction" then
    for i = 1, n do
      local seq = {}
      for j = 1, 3 + math.floor(r.uniform() * 6) do
        seq[j] = (j >= 4 and r.uniform() < 1 / 3) and seq[math.floor(r.uniform() * (j - 1)) + 1] or r.pick(truth.words)
      end
      out[i] = table.concat(seq)
    end
  elseif truth.task == "binding" then
    local names = {}
    for nm in pairs(truth.people) do names[#names + 1] = nm end
    table.sort(names)
    local function fill(lo, hi, words)
      for _ = 1, lo + math.floor(r.uniform() * (hi - lo + 1)) do words[#words + 1] = r.pick(truth.fillers) end
    end
    for i = 1, n do
      local words = {}
      fill(0, 2, words)
      words[#words + 1] = r.pick(names)
      fill(1, 2, words)
      words[#words + 1] = r.pick(names)
      fill(0, 2, words)
      words[#words + 1] = r.uniform() < 0.5 and " she" or " he"
      out[i] = table.concat(words)
    end
  else
    error("BAD_ARG: planted.texts: unknown task '" .. tostring(truth.task) .. "'", 2)
  end
  return out
end

local cosine, pearson = require("ctrace.supernodes").cosine, require("ctrace.study").pearson

-- The dictionary's side: for each planted variable, the features that match it best by
--   decoder     the cosine of the feature's decoder slice at the variable's layer with the
--               direction the variable's neurons write (over the features that reach the layer);
--   encoder     the cosine of its encoder with what the neurons read (their input directions summed);
--   activation  the Pearson correlation, over every position of the task's prompts, of its
--               activation with the variable's neurons' summed output (model given);
-- and n_above: how many features' decoders reach `threshold` (0.5).
-- -> {[variable] = {decoder = {layer, index, cos}, encoder = {...}, activation = {layer, index, r}, n_above}}
function M.dictionary(tc, truth, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "threshold" and k ~= "model" then
      error("BAD_ARG: planted.dictionary: unknown option '" .. tostring(k) .. "' (expected threshold, model)", 2)
    end
  end
  local threshold, model = opts.threshold or 0.5, opts.model
  local feats = {}   -- (layer, index) -> activations over every position of every prompt
  local neuron = {}  -- layer -> the MLP's post-activation rows (each a list) over the same positions
  if model then
    for l = 0, tc.n_layers - 1 do feats[l], neuron[l] = {}, {} end
    for _, p in ipairs(truth.prompts) do
      local hooks = {}
      for l = 0, tc.n_layers - 1 do
        hooks[#hooks + 1] = "blocks." .. l .. "." .. tc.feature_input_hook
        hooks[#hooks + 1] = "blocks." .. l .. ".mlp.hook_post"
      end
      local _, cache = model:run_with_cache(p.text, {hooks = hooks})
      for l = 0, tc.n_layers - 1 do
        local _, acts = tc:encode(l, cache["blocks." .. l .. "." .. tc.feature_input_hook])
        local post = cache["blocks." .. l .. ".mlp.hook_post"]
        for pos = 2, acts:size(1) do   -- positions after BOS, as the graphs
          local a, row = acts[pos]:totable(), post[pos]:totable()
          for i = 1, #a do
            feats[l][i] = feats[l][i] or {}
            table.insert(feats[l][i], a[i])
          end
          table.insert(neuron[l], row)
        end
      end
    end
  end
  local out = {}
  for _, v in ipairs(truth.variables) do
    local reads = {}
    for j = 1, truth.width do reads[j] = 0 end
    for _, r in ipairs(v.reads) do
      for j = 1, truth.width do reads[j] = reads[j] + truth.directions[r][j] end
    end
    local value = {}
    if model then
      for t, row in ipairs(neuron[v.layer]) do
        value[t] = 0
        for _, nu in ipairs(v.neurons) do value[t] = value[t] + row[nu + 1] end
      end
    end
    local best = {decoder = {cos = -math.huge}, encoder = {cos = -math.huge}, activation = {r = -math.huge}, n_above = 0}
    for l = 0, v.layer do
      if l == v.layer or tc.kind == "clt" then
        for i = 0, tc:d_transcoder(l) - 1 do
          local c = cosine(tc:decoder_row(l, i, v.layer):totable(), truth.directions[v.name])
          if c > best.decoder.cos then best.decoder = {layer = l, index = i, cos = c} end
          if c >= threshold then best.n_above = best.n_above + 1 end
          if l == v.layer then   -- a feature reads its own layer's input
            local e = cosine(tc:encoder_row(l, i):totable(), reads)
            if e > best.encoder.cos then best.encoder = {layer = l, index = i, cos = e} end
            if model then
              local r = pearson(feats[l][i + 1], value)
              if r > best.activation.r then best.activation = {layer = l, index = i, r = r} end
            end
          end
        end
      end
    end
    if not model then best.activation = nil end
    out[v.name] = best
  end
  return out
end

-- The planted variable each feature node of graph g (of truth.prompts[k]) stands for: among the
-- variables the model computes at the node's position in this prompt (two-hop: the state at the
-- city, the answer at the last position; binding: a name's gender; a distractor's attribute at
-- its word), the one whose direction its decoder slice at the variable's layer points along
-- most, when that cosine is at least `threshold` (0.3). In context, a feature that mixes several variables in the dictionary
-- stands for the one the prompt holds. -> {[node_id] = {variable =, cos =}}
function M.roles(g, tc, truth, k, threshold)
  threshold = threshold or 0.3
  local pr = truth.prompts[k]
  if not pr then error("BAD_ARG: planted.roles: no prompt " .. tostring(k) .. " in the truth", 2) end
  local last = #g:tokens() - 1
  local at = {}   -- position -> list of variables computed there
  local function add(pos, name)
    at[pos] = at[pos] or {}
    table.insert(at[pos], name)
  end
  if truth.task == "two_hop" then
    add(pr.city_position, "state:" .. pr.state)
    add(last, "answer:" .. pr.state)
  end
  local layer_of = {}
  for _, v in ipairs(truth.variables) do layer_of[v.name] = v.layer end
  for pos, id in ipairs(g:tokens()) do
    local word = truth.vocab[id + 1] or ""
    local name = "attr:" .. word:gsub("^ ", "")
    if layer_of[name] then add(pos - 1, name) end
    if truth.task == "binding" and truth.people[word] then add(pos - 1, "gender:" .. truth.people[word]) end
  end
  local out = {}
  for _, n in ipairs(g:nodes("feature")) do
    local best, best_cos = nil, threshold
    for _, name in ipairs(at[n.pos] or {}) do
      local lv = layer_of[name]
      if lv == n.layer or (tc.kind == "clt" and lv > n.layer) then
        local c = cosine(tc:decoder_row(n.layer, n.feature, lv):totable(), truth.directions[name])
        if c >= best_cos then best, best_cos = name, c end
      end
    end
    if best then out[n.node_id] = {variable = best, cos = best_cos} end
  end
  return out
end

-- How a graph recovers the planted path of prompt k (an index into truth.prompts): g the full
-- graph, p its pruned graph, roles from M.roles(g, ...). The planted path: the city's token node
-- -> features standing for "state:<its state>" (layer 0, the city's position) -> features
-- standing for "answer:<state>" (layer 1, the last position) -> the capital's logit.
-- -> {recall (of the 3 planted edges: any kept edge between nodes of the two roles),
--     nodes_found (of the 4 roles, kept nodes present), precision (planted edges among the kept
--     edges whose ends are not error nodes), path_share (the planted path's effect on the
--     capital's logit in the full graph, over the logit's total attribution from tokens and
--     error nodes), error_share (the error nodes' part of that total), missing = {edge names}}
function M.recovery(g, p, truth, roles, k)
  local pr = truth.prompts[k]
  if not pr then error("BAD_ARG: planted.recovery: no prompt " .. tostring(k) .. " in the truth", 2) end
  local function role(n)
    if n.kind == "token" then return n.pos == pr.city_position and "city" or nil end
    if n.kind == "logit" then return n.token == pr.answer_id and "logit" or nil end
    local r = n.kind == "feature" and roles[n.node_id]
    if not r then return nil end
    if r.variable == "state:" .. pr.state then return "state" end
    if r.variable == "answer:" .. pr.state then return "answer" end
    return nil
  end
  local planted = {["city>state"] = true, ["state>answer"] = true, ["answer>logit"] = true}
  local found, present, n_edges, n_planted = {}, {}, 0, 0
  for _, n in ipairs(p:nodes()) do
    local rt = role(n)
    if rt then present[rt] = true end
    if n.kind ~= "error" then
      for _, e in ipairs(p:edges_in(n)) do
        if e.node.kind ~= "error" then
          n_edges = n_edges + 1
          local rs = role(e.node)
          local name = rs and rt and (rs .. ">" .. rt)
          if name and planted[name] then
            found[name] = true
            n_planted = n_planted + 1
          end
        end
      end
    end
  end
  local n_found, missing, n_present = 0, {}, 0
  for _, name in ipairs{"city>state", "state>answer", "answer>logit"} do
    if found[name] then n_found = n_found + 1 else missing[#missing + 1] = name end
  end
  for _, r in ipairs{"city", "state", "answer", "logit"} do if present[r] then n_present = n_present + 1 end end

  -- shares of the capital's logit in the full graph
  local by_role, logit = {city = {}, state = {}, answer = {}}, nil
  for _, n in ipairs(g:nodes()) do
    local r = role(n)
    if r == "logit" then logit = n elseif r then table.insert(by_role[r], n.index) end
  end
  local path_share, error_share = 0, 0
  if logit then
    local A = g:adjacency()   -- (N, N): rows targets, columns sources
    local te = g:total_effects(logit)
    local total, errors = 0, 0
    for _, n in ipairs(g:nodes()) do
      if n.kind == "token" or n.kind == "error" then total = total + te[n.index] end
      if n.kind == "error" then errors = errors + te[n.index] end
    end
    local path = 0
    for _, c in ipairs(by_role.city) do
      for _, st in ipairs(by_role.state) do
        for _, a in ipairs(by_role.answer) do
          path = path + A:get(st, c) * A:get(a, st) * A:get(logit.index, a)
        end
      end
    end
    if total ~= 0 then path_share, error_share = path / total, errors / total end
  end
  return {recall = n_found / 3, nodes_found = n_present / 4, precision = n_edges > 0 and n_planted / n_edges or 0,
          path_share = path_share, error_share = error_share, missing = missing, kept_edges = n_edges}
end

-- How the attention hop of prompt k is recovered (induction, binding): whether the pruned graph
-- p holds the edge from the token the head copies (at the key position) to the answer's logit
-- (ov_edge), and whether QK attribution (rm:qk: layer 1's head, the last position against the
-- key position) puts a planted pair first: for induction the repeated token at the query with
-- the same token just before the key (read through layer 0's previous-token head), for binding
-- the pronoun with a feature standing for the name's gender at the key (roles from M.roles).
-- -> {ov_edge, qk_top, qk_share (the planted pairs' part of the score among the top 20 pairs),
--     prob (the head's attention probability at the key)}
function M.attention_recovery(rm, p, truth, roles, k)
  local pr = truth.prompts[k]
  if not pr or not pr.key_position then
    error("BAD_ARG: planted.attention_recovery: prompt " .. tostring(k) .. " has no attention hop (induction or binding)", 2)
  end
  local last = #p:tokens() - 1
  local ov = false
  for _, n in ipairs(p:nodes("logit")) do
    if n.token == pr.answer_id then
      for _, e in ipairs(p:edges_in(n)) do
        ov = ov or (e.node.kind == "token" and e.node.pos == pr.key_position)
      end
    end
  end
  local function planted(t)
    if t.query.kind ~= "token" or t.query.pos ~= last then return false end
    if truth.task == "induction" then
      return t.key.kind == "token" and t.key.pos == pr.key_position - 1 and t.key.token == t.query.token
    end
    local r = t.key.kind == "feature" and roles[t.key.node_id]
    return t.key.pos == pr.key_position and r and r.variable == "gender:" .. pr.gender or false
  end
  local q = rm:qk(pr.text, {layer = 1, head = 0, query = last, key = pr.key_position, top = 20})
  local share = 0
  for _, t in ipairs(q.terms) do
    if planted(t) then share = share + t.value end
  end
  return {ov_edge = ov, qk_top = q.terms[1] ~= nil and planted(q.terms[1]), qk_share = q.total ~= 0 and share / q.total or 0,
          prob = q.prob}
end

return M
