-- ctrace.planted - models whose circuits are known: Llama-architecture checkpoints written with
-- weights that implement a computation by construction, and the ground truth beside them.
--
--   planted.two_hop(opts) -> truth   writes a model directory (config.json, model.safetensors,
--                                    tokenizer.json, truth.json) and returns the truth table
--   planted.evaluate(model, truth) -> {accuracy, wrong = {prompt, ...}, leads, margin}
--   planted.texts(truth, n, seed) -> n training prompts of the task's form (random fillers)
--   planted.dictionary(tc, truth, {model}) -> each planted variable's best-matching features
--   planted.roles(g, tc, truth, k) -> the planted variable each feature node of a graph stands for
--   planted.recovery(g, p, truth, roles, k) -> how the pruned graph p of prompt k (of
--                                    truth.prompts; g its full graph) recovers the planted path
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
  return r
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

local allowed = {dir = true, width = true, states = true, cities_per_state = true, distractors = true,
                 noise = true, seed = true, ablate = true}

local function check_opts(o)
  if type(o) ~= "table" then error("BAD_ARG: planted.two_hop expects an options table", 3) end
  for k in pairs(o) do
    if not allowed[k] then error("BAD_ARG: planted.two_hop: unknown option '" .. tostring(k) .. "'", 3) end
  end
  local function int(k, def, lo, hi)
    local v = o[k] == nil and def or o[k]
    if type(v) ~= "number" or v ~= math.floor(v) or v < lo or v > hi then
      error(string.format("BAD_ARG: planted.two_hop: %s must be an integer in %d..%d; found %s", k, lo, hi, tostring(v)), 4)
    end
    return v
  end
  local c = {
    dir = o.dir,
    width = int("width", 64, 8, 4096),
    states = int("states", 4, 2, #STATES),
    cities_per_state = int("cities_per_state", 3, 1, 3),
    distractors = int("distractors", 4, 0, #FILLERS),
    seed = int("seed", 1, 1, 2147483646),
    noise = o.noise == nil and 0 or o.noise,
    ablate = o.ablate or {},
  }
  if type(c.dir) ~= "string" or c.dir == "" then error("BAD_ARG: planted.two_hop: dir (a directory) is required", 3) end
  if type(c.noise) ~= "number" or not (c.noise >= 0 and c.noise < 1) then
    error("BAD_ARG: planted.two_hop: noise must be a number in [0, 1); found " .. tostring(c.noise), 3)
  end
  if type(c.ablate) ~= "table" then error("BAD_ARG: planted.two_hop: ablate must be a list of component names", 3) end
  return c
end

-- The task's prompts: every city in each of the templates (words around the city).
local TEMPLATES = {
  {{}, {}},
  {{"the", "city"}, {"of"}},
  {{"fact", "about"}, {"in", "the"}},
  {{"a", "big", "old"}, {"near"}},
}

function M.two_hop(opts)
  local o = check_opts(opts)
  local S, C, F = o.states, o.cities_per_state, o.distractors
  -- vocabulary: BOS, cities, " capital", filler words, capitals
  local vocab, id = {}, {}
  local function tok(w)
    vocab[#vocab + 1] = w
    id[w] = #vocab - 1
  end
  tok("<s>")
  local states, cities = {}, {}
  for s = 1, S do
    local st = STATES[s]
    states[s] = {name = st[1], capital = " " .. st[2], cities = {}}
    for c = 1, C do
      local city = " " .. st[3][c]
      tok(city)
      cities[#cities + 1] = {token = city, state = s}
      states[s].cities[c] = city
    end
  end
  tok(" capital")
  for f = 1, #FILLERS do tok(" " .. FILLERS[f]) end
  for s = 1, S do tok(states[s].capital) end
  local V, D = #vocab, o.width

  -- residual variables and their directions
  local vars, names = {}, {}
  local function var(name)
    names[#names + 1] = name
    vars[name] = #names
  end
  for i = 1, V - S do var("tok:" .. vocab[i]) end   -- capitals are outputs only
  var("const")
  var("is_city")
  for s = 1, S do var("state:" .. states[s].name) end
  for s = 1, S do var("moved:" .. states[s].name) end
  for s = 1, S do var("answer:" .. states[s].name) end
  for f = 1, F do var("attr:" .. FILLERS[f]) end
  local r = rng(o.seed)
  local dirs = {}
  local vecs = {}
  for i = 1, #names do
    local v = {}
    if #names <= D then
      for j = 1, D do v[j] = (j == i) and 1 or 0 end
    else
      for j = 1, D do v[j] = r.normal() end
    end
    vecs[i] = v
  end
  local function normalize(v)
    local n2 = 0
    for j = 1, D do n2 = n2 + v[j] * v[j] end
    for j = 1, D do v[j] = v[j] / math.sqrt(n2) end
  end
  for i = 1, #names do normalize(vecs[i]) end
  if #names > D then
    -- spread the directions apart: gradient steps on the sum of cos^4 over pairs, so the
    -- largest overlaps shrink toward the Welch bound
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
  local max_cos = 0
  for i = 1, #names do
    for k = i + 1, #names do
      local c = 0
      for j = 1, D do c = c + vecs[i][j] * vecs[k][j] end
      max_cos = math.max(max_cos, math.abs(c))
    end
  end
  for i, name in ipairs(names) do dirs[name] = vecs[i] end

  local hd = 16
  local d_mlp = math.max(#cities + F, S)
  local W = {
    ["model.embed_tokens.weight"] = ct.zeros(V, D),
    ["model.norm.weight"] = ct.zeros(D),
    ["lm_head.weight"] = ct.zeros(V, D),
  }
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
  local function add_row(t, row, dir, g)   -- t[row, :] += g * dir (row from 1)
    for j = 1, D do t:set(row, j, t:get(row, j) + g * dir[j]) end
  end
  local function add_col(t, col, dir, g)   -- t[:, col] += g * dir
    for j = 1, D do t:set(j, col, t:get(j, col) + g * dir[j]) end
  end
  for _, n in ipairs{"model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                     "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"} do
    for j = 1, D do W[n]:set(j, 1) end
  end

  -- embeddings: a token's identity, "const", and "is_city" for cities
  for i = 1, V - S do
    local e = W["model.embed_tokens.weight"]
    add_row(e, i, dirs["tok:" .. vocab[i]], 1)
    add_row(e, i, dirs["const"], 1)
  end
  for _, c in ipairs(cities) do add_row(W["model.embed_tokens.weight"], id[c.token] + 1, dirs["is_city"], 1) end

  -- Scales: a normalized residual holds its k unit variables at about sqrt(D / k) each.
  local a0 = math.sqrt(D / 3)   -- a city's position at layer 0: token, const, is_city
  local ablated = {}
  for _, name in ipairs(o.ablate) do ablated[name] = true end

  -- A neuron reads its variable (gain 4/a) with "const" as a bias (-2/a), so on its own input
  -- (about a each, normalized) the gate is 2 and the up projection 1; it writes out_gain units
  -- of its direction. Elsewhere its gate is negative and its up projection zero: silent.
  local function neuron(layer, n, reads, writes, a, out_gain)
    local p = "model.layers." .. layer .. ".mlp."
    add_row(W[p .. "gate_proj.weight"], n, dirs[reads], 8 / a)
    add_row(W[p .. "gate_proj.weight"], n, dirs["const"], -4 / a)
    add_row(W[p .. "up_proj.weight"], n, dirs[reads], 1 / a)
    add_col(W[p .. "down_proj.weight"], n, dirs[writes], out_gain / (4 / (1 + math.exp(-4))))
  end
  local mlp0 = {}
  for ci, c in ipairs(cities) do
    local name = "mlp0:" .. c.token:sub(2)
    mlp0[ci] = name
    if not ablated[name] then neuron(0, ci, "tok:" .. c.token, "state:" .. states[c.state].name, a0, 2) end
  end
  for f = 1, F do
    local name = "mlp0:" .. FILLERS[f]
    if not ablated[name] then neuron(0, #cities + f, "tok: " .. FILLERS[f], "attr:" .. FILLERS[f], math.sqrt(D / 2), 2) end
  end

  -- layer 1 attention: q/k on the slowest RoPE pair (head dims hd/2 and hd, from 1), which
  -- turns by under 1e-9 rad a position at rope_theta 1e12.
  local s1, s2 = hd / 2, hd
  local q, k, v, ov = W["model.layers.1.self_attn.q_proj.weight"], W["model.layers.1.self_attn.k_proj.weight"],
                      W["model.layers.1.self_attn.v_proj.weight"], W["model.layers.1.self_attn.o_proj.weight"]
  local a1 = math.sqrt(D / 3)   -- normalized scale at layer 1 (about three unit variables)
  add_row(q, s1, dirs["const"], 4 / a1)        -- every query looks for BOS...
  add_row(k, s1, dirs["tok:<s>"], 4 / a1)
  add_row(q, s2, dirs["tok: capital"], 8 / a1)  -- ...and " capital" for a city, more strongly
  add_row(k, s2, dirs["is_city"], 8 / a1)
  if not ablated["head1"] then
    for s = 1, S do
      -- value dim s reads the state; the output writes it as "moved"
      add_row(v, s, dirs["state:" .. states[s].name], 1 / a1)
      add_col(ov, s, dirs["moved:" .. states[s].name], 2)
    end
  end

  -- layer 1 MLP: neuron s reads "moved:state", writes "answer:state"
  local mlp1 = {}
  for s = 1, S do
    local name = "mlp1:" .. states[s].name
    mlp1[s] = name
    if not ablated[name] then neuron(1, s, "moved:" .. states[s].name, "answer:" .. states[s].name, math.sqrt(D / 3), 2) end
  end

  -- unembedding: a capital's token reads its answer direction
  -- (about 2 sqrt(D / 13) normalized at the last position: a logit near 20)
  for s = 1, S do add_row(W["lm_head.weight"], id[states[s].capital] + 1, dirs["answer:" .. states[s].name], 10 / math.sqrt(D / 13)) end

  if o.noise > 0 then
    local sorted = {}
    for name in pairs(W) do sorted[#sorted + 1] = name end
    table.sort(sorted)   -- the same draws for the same tensors on every run
    for _, name in ipairs(sorted) do
      local t = W[name]
      if t:dim() == 2 then
        local n1, n2 = t:size(1), t:size(2)
        for i = 1, n1 do
          for j = 1, n2 do t:set(i, j, t:get(i, j) + o.noise * r.normal()) end
        end
      end
    end
  end

  -- components a test may ablate, and the prompts each one is needed for
  local components = {head1 = "all"}
  for ci, c in ipairs(cities) do components[mlp0[ci]] = {city = c.token} end
  for f = 1, F do components["mlp0:" .. FILLERS[f]] = "none" end
  for s = 1, S do components[mlp1[s]] = {state = states[s].name} end
  for _, name in ipairs(o.ablate) do
    if not components[name] then error("BAD_ARG: planted.two_hop: ablate names an unknown component '" .. tostring(name) .. "'", 2) end
  end

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
                               state = st.name, answer = st.capital, answer_id = id[st.capital]}
    end
  end

  -- the planted path of each state: city token -> state (layer 0 MLP, city position) -> moved
  -- (layer 1 attention) -> answer (layer 1 MLP, last position) -> the capital's logit
  local variables = {}
  -- each variable: the MLP layer writing it, its neurons there, the residual variables its
  -- neurons read and the one they write
  for s = 1, S do
    local n = states[s].name
    local v = {name = "state:" .. n, layer = 0, position = "city", neurons = {}, reads = {}, writes = "state:" .. n}
    for ci, c in ipairs(cities) do
      if c.state == s then
        table.insert(v.neurons, ci - 1)
        table.insert(v.reads, "tok:" .. c.token)
      end
    end
    variables[#variables + 1] = v
    variables[#variables + 1] = {name = "answer:" .. n, layer = 1, position = "last", neurons = {s - 1},
                                 reads = {"moved:" .. n}, writes = "answer:" .. n}
  end
  for f = 1, F do
    variables[#variables + 1] = {name = "attr:" .. FILLERS[f], layer = 0, position = "filler", neurons = {#cities + f - 1},
                                 reads = {"tok: " .. FILLERS[f]}, writes = "attr:" .. FILLERS[f], distractor = true}
  end

  local truth = {
    task = "two_hop", width = D, states = S, cities_per_state = C, distractors = F, noise = o.noise, seed = o.seed,
    n_variables = #names, superposition = #names / D, max_overlap = max_cos, orthogonal = #names <= D, ablate = o.ablate,
    residual_variables = names, variables = variables, components = components, prompts = prompts,
    capitals = {}, cities = {}, directions = dirs, vocab = vocab,
  }
  for s = 1, S do truth.capitals[states[s].name] = states[s].capital end
  for _, c in ipairs(cities) do truth.cities[c.token] = states[c.state].name end

  -- files: config.json, model.safetensors, tokenizer.json, truth.json (directions included)
  ct.mkdirs(o.dir)
  ct.write_json(o.dir .. "/config.json", {
    architectures = {"LlamaForCausalLM"}, model_type = "llama", hidden_size = D, intermediate_size = d_mlp,
    num_hidden_layers = 2, num_attention_heads = 1, num_key_value_heads = 1, head_dim = hd, vocab_size = V,
    max_position_embeddings = 64, rms_norm_eps = 1e-5, rope_theta = 1e12, tie_word_embeddings = false,
    bos_token_id = 0, hidden_act = "silu", torch_dtype = "float32",
  })
  ct.save_safetensors(o.dir .. "/model.safetensors", W, {format = "pt"})
  local added, tv = {}, {}
  for i, w in ipairs(vocab) do
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

-- n prompts of the task's form: BOS, 0-3 filler words, a city, 0-3 filler words, " capital"
-- (drawn from seed; every filler word, not only the distractors).
function M.texts(truth, n, seed)
  local r = rng(seed or 1)
  local cities = {}
  for c in pairs(truth.cities) do cities[#cities + 1] = c end
  table.sort(cities)
  local function pick(list) return list[math.min(#list, math.floor(r.uniform() * #list) + 1)] end
  local out = {}
  for i = 1, n do
    local words = {}
    for _ = 1, math.floor(r.uniform() * 4) do words[#words + 1] = " " .. pick(FILLERS) end
    words[#words + 1] = pick(cities)
    for _ = 1, math.floor(r.uniform() * 4) do words[#words + 1] = " " .. pick(FILLERS) end
    words[#words + 1] = " capital"
    out[i] = table.concat(words)
  end
  return out
end

local function cosine(a, b)
  local ab, aa, bb = 0, 0, 0
  for j = 1, #a do
    ab, aa, bb = ab + a[j] * b[j], aa + a[j] * a[j], bb + b[j] * b[j]
  end
  if aa == 0 or bb == 0 then return 0 end
  return ab / math.sqrt(aa * bb)
end

-- Pearson correlation of two lists (0 when either is constant).
local function pearson(x, y)
  local n, mx, my = #x, 0, 0
  for i = 1, n do mx, my = mx + x[i], my + y[i] end
  mx, my = mx / n, my / n
  local sxy, sxx, syy = 0, 0, 0
  for i = 1, n do
    sxy, sxx, syy = sxy + (x[i] - mx) * (y[i] - my), sxx + (x[i] - mx) ^ 2, syy + (y[i] - my) ^ 2
  end
  if sxx == 0 or syy == 0 then return 0 end
  return sxy / math.sqrt(sxx * syy)
end

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
-- variables the model computes at the node's position in this prompt (the state at the city,
-- the answer at the last position, a distractor's attribute at its word), the one whose direction
-- its decoder slice at the variable's layer points along most, when that cosine is at least
-- `threshold` (0.3). In context, a feature that mixes several variables in the dictionary
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
  add(pr.city_position, "state:" .. pr.state)
  add(last, "answer:" .. pr.state)
  local layer_of = {}
  for _, v in ipairs(truth.variables) do layer_of[v.name] = v.layer end
  for pos, id in ipairs(g:tokens()) do
    local name = "attr:" .. (truth.vocab[id + 1] or ""):gsub("^ ", "")
    if layer_of[name] then add(pos - 1, name) end
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

return M
