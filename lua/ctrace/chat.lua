-- ctrace.chat - conversations through a model's chat template, for instruction-tuned models.
--
--   local chat = require "ctrace.chat"        (also ctrace.chat)
--   chat.load(dir [, family]) -> template      the chat template beside a model or tokenizer in dir:
--       tokenizer_config.json "chat_template" (a string, or a list of {name, template}: "default"),
--       else chat_template.jinja, else chat_template.json; none there: the family's (Gemma2For*,
--       Gemma3For*, Qwen3For*). Raises UNSUPPORTED for a template ctrace does not implement.
--   template:render(messages [, opts]) -> text
--   template.kind -> "gemma", "llama3" or "chatml" (Qwen3's); template.source -> the file or family
--   chat.ids(model, messages [, opts]) -> token ids: the rendered text tokenized with no special
--       token added (the template writes BOS itself), as transformers' apply_chat_template
--
--   messages: a list of {role = "system" | "user" | "assistant" | ..., content = "text"} (content
--   may also be a list of {type = "text", text = ...} blocks on Gemma-3).
--   opts: add_generation_prompt (false), continue_final_message (false: as transformers, the
--   final message left open, its end-of-turn cut), enable_thinking (read by Qwen3's template,
--   ignored by the others as Jinja would; absent: the template's default).
--
-- Jinja is not interpreted: each implemented template is written out in Lua and checked against
-- the template text rendered by Jinja (tests/cli/test_chat.sh). Implemented: Gemma's (Gemma-2:
-- no system role; Gemma-3: a system message prefixed to the first user turn), Llama-3's (the
-- 3.0 form: a header per message; the dated system block of 3.1 and later is not implemented),
-- Qwen3's ChatML (thinking blocks; no tools).
--
-- Prompts given as {chat = messages [, add_generation_prompt =, continue_final_message =,
-- enable_thinking =]} are accepted by rm:attribute, rm:intervene, rm:generate, m:tokenize,
-- m:forward, m:run_with_cache and m:generate. Their defaults suit attribution: a conversation
-- ending in a user (or system) turn gets the model turn's header (add_generation_prompt), one
-- ending in an assistant turn is continued (continue_final_message), as circuit-tracer's Gemma
-- demo does. m:apply_chat_template(messages [, opts]) keeps transformers' defaults (both false,
-- tokenize = true).
local core = require "ctrace.core"

local M = {}

local function fail(code, msg, level)
  error(code .. ": chat: " .. msg, (level or 1) + 1)
end

local function read(path)
  local ok, what = pcall(core.exists, path)
  if not ok or what ~= "file" then return nil end
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Python's str.strip() whitespace (Jinja's trim), as UTF-8 byte sequences.
local SPACE = {}
for _, c in ipairs {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001,
                    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F,
                    0x205F, 0x3000} do
  local s
  if c < 0x80 then s = string.char(c)
  elseif c < 0x800 then s = string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64)
  else s = string.char(0xE0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64) end
  SPACE[#SPACE + 1] = s
end

local function space_at(s, i, back)   -- length of the whitespace character ending (back) or starting at i
  for _, w in ipairs(SPACE) do
    local n = #w
    if back then
      if i - n + 1 >= 1 and s:sub(i - n + 1, i) == w then return n end
    elseif s:sub(i, i + n - 1) == w then return n end
  end
  return 0
end

local function lstrip(s)
  local i = 1
  while i <= #s do
    local n = space_at(s, i, false)
    if n == 0 then break end
    i = i + n
  end
  return s:sub(i)
end

local function rstrip(s)
  local j = #s
  while j >= 1 do
    local n = space_at(s, j, true)
    if n == 0 then break end
    j = j - n
  end
  return s:sub(1, j)
end

local function strip(s) return rstrip(lstrip(s)) end

-- s without leading / trailing newlines (Python's strip('\n'))
local function lstrip_nl(s) return (s:gsub("^\n+", "")) end
local function rstrip_nl(s) return (s:gsub("\n+$", "")) end

-- Python's s.split(sep): the pieces between occurrences of sep (plain text)
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local a, b = s:find(sep, i, true)
    if not a then out[#out + 1] = s:sub(i) return out end
    out[#out + 1] = s:sub(i, a - 1)
    i = b + 1
  end
end

-- The last occurrence of plain text t in s (its start), or nil.
local function rfind(s, t)
  local at, i = nil, 1
  while true do
    local a = s:find(t, i, true)
    if not a then return at end
    at, i = a, a + 1
  end
end

local function check_messages(messages, level)
  if type(messages) ~= "table" or #messages == 0 then
    fail("BAD_ARG", "expected a non-empty list of messages {role =, content =}, got " ..
         (type(messages) == "table" and "an empty list" or type(messages)), level + 1)
  end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      fail("BAD_ARG", "message " .. i .. ": expected {role = \"user\" | \"assistant\" | \"system\", content = text}", level + 1)
    end
    local c = m.content
    if type(c) ~= "string" and type(c) ~= "table" then
      fail("BAD_ARG", "message " .. i .. " (" .. m.role .. "): content must be text, got " .. type(c), level + 1)
    end
    for k in pairs(m) do
      if k ~= "role" and k ~= "content" and k ~= "reasoning_content" then
        fail("BAD_ARG", "message " .. i .. ": unknown field '" .. tostring(k) .. "' (role, content" ..
             ", reasoning_content)", level + 1)
      end
    end
  end
end

-- The text of a message's content: a string, or (where allowed) the text blocks of a list.
local function text_of(m, i, blocks_ok, each)
  if type(m.content) == "string" then return each and each(m.content) or m.content end
  if not blocks_ok then fail("BAD_ARG", "message " .. i .. ": content must be a string for this template", 3) end
  local out = {}
  for k, b in ipairs(m.content) do
    if type(b) ~= "table" or b.type ~= "text" or type(b.text) ~= "string" then
      fail("UNSUPPORTED", "message " .. i .. " block " .. k .. ": only {type = \"text\", text = ...} blocks (no images)", 3)
    end
    out[#out + 1] = each and each(b.text) or b.text
  end
  return table.concat(out)
end

-- ---------------------------------------------------------------------------------------------
-- The templates, written out

-- Gemma: <bos>, then <start_of_turn>{user|model}\n{content, trimmed}<end_of_turn>\n per message,
-- roles alternating from user; Gemma-3 folds a leading system message into the first turn.
local function render_gemma(t, messages, o)
  local out, loop = {t.bos}, messages
  local prefix = ""
  if messages[1].role == "system" then
    if not t.system then fail("UNSUPPORTED", "this model's chat template has no system role (" .. t.source .. ")", 3) end
    local c = messages[1].content
    prefix = (type(c) == "string" and c or (type(c[1]) == "table" and c[1].text or "")) .. "\n\n"
    loop = {}
    for i = 2, #messages do loop[#loop + 1] = messages[i] end
  end
  for i, m in ipairs(loop) do
    if (m.role == "user") ~= ((i - 1) % 2 == 0) then
      fail("BAD_ARG", "conversation roles must alternate user/assistant/user/assistant/... (message " ..
           (i + #messages - #loop) .. " is " .. m.role .. ")", 3)
    end
    local role = m.role == "assistant" and "model" or m.role
    out[#out + 1] = "<start_of_turn>" .. role .. "\n" .. (i == 1 and prefix or "")
    out[#out + 1] = text_of(m, i, t.system, strip)
    out[#out + 1] = "<end_of_turn>\n"
  end
  if o.add_generation_prompt then out[#out + 1] = "<start_of_turn>model\n" end
  return table.concat(out)
end

-- Llama-3 (3.0): <|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|> per
-- message, BOS before the first; the assistant header after (always, when the template does not
-- ask add_generation_prompt).
local function render_llama3(t, messages, o)
  local out = {}
  for i, m in ipairs(messages) do
    local c = "<|start_header_id|>" .. m.role .. "<|end_header_id|>\n\n" .. strip(text_of(m, i, false)) .. "<|eot_id|>"
    out[i] = i == 1 and t.bos .. c or c
  end
  if o.add_generation_prompt or not t.conditional then out[#out + 1] = "<|start_header_id|>assistant<|end_header_id|>\n\n" end
  return table.concat(out)
end

-- Qwen3's ChatML: <|im_start|>{role}\n{content}<|im_end|>\n, an optional system message first,
-- assistant turns after the last user query with their <think> block, tool results as user turns.
local function render_qwen3(t, messages, o)
  local out = {}
  local function put(s) out[#out + 1] = s end
  local N = #messages
  if messages[1].role == "system" then put("<|im_start|>system\n" .. text_of(messages[1], 1, false) .. "<|im_end|>\n") end
  local multi_step_tool, last_query = true, N - 1   -- 0-based, as the template
  for index = N - 1, 0, -1 do
    local m = messages[index + 1]
    local c = type(m.content) == "string" and m.content or ""
    if multi_step_tool and m.role == "user" and
       not (c:sub(1, 15) == "<tool_response>" and #c >= 16 and c:sub(-16) == "</tool_response>") then
      multi_step_tool, last_query = false, index
    end
  end
  for i, m in ipairs(messages) do
    local i0, content = i - 1, text_of(m, i, false)
    if m.role == "user" or (m.role == "system" and i > 1) then
      put("<|im_start|>" .. m.role .. "\n" .. content .. "<|im_end|>\n")
    elseif m.role == "assistant" then
      local reasoning = ""
      if m.reasoning_content ~= nil then
        reasoning = m.reasoning_content
      elseif content:find("</think>", 1, true) then
        local parts = split(content, "</think>")
        local before = split(rstrip_nl(parts[1]), "<think>")
        reasoning = lstrip_nl(before[#before])
        content = lstrip_nl(parts[#parts])
      end
      if i0 > last_query and (i == N or reasoning ~= "") then
        put("<|im_start|>assistant\n<think>\n" .. lstrip_nl(rstrip_nl(reasoning)) .. "\n</think>\n\n" .. lstrip_nl(content))
      else
        put("<|im_start|>assistant\n" .. content)
      end
      put("<|im_end|>\n")
    elseif m.role == "tool" then
      if i == 1 or messages[i - 1].role ~= "tool" then put("<|im_start|>user") end
      put("\n<tool_response>\n" .. content .. "\n</tool_response>")
      if i == N or messages[i + 1].role ~= "tool" then put("<|im_end|>\n") end
    end
  end
  if o.add_generation_prompt then
    put("<|im_start|>assistant\n")
    if o.enable_thinking == false then put("<think>\n\n</think>\n\n") end
  end
  return table.concat(out)
end

local RENDER = {gemma = render_gemma, llama3 = render_llama3, chatml = render_qwen3}

local Template = {}
Template.__index = Template

local OPTS = {add_generation_prompt = true, continue_final_message = true, enable_thinking = true}

local function check_opts(o, level)
  if o ~= nil and type(o) ~= "table" then fail("BAD_ARG", "options must be a table, got " .. type(o), level + 1) end
  for k, v in pairs(o or {}) do
    if not OPTS[k] then
      fail("BAD_ARG", "unknown option '" .. tostring(k) .. "' (add_generation_prompt, continue_final_message, " ..
           "enable_thinking)", level + 1)
    end
    if type(v) ~= "boolean" then fail("BAD_ARG", "option " .. k .. " must be true or false, got " .. type(v), level + 1) end
  end
end

function Template:render(messages, o)
  check_messages(messages, 2)
  check_opts(o, 2)
  o = o or {}
  if o.continue_final_message and o.add_generation_prompt then
    fail("BAD_ARG", "continue_final_message and add_generation_prompt exclude each other", 2)
  end
  local text = RENDER[self.kind](self, messages, o)
  if o.continue_final_message then   -- transformers: cut after the final message's text
    local last = messages[#messages]
    local final = type(last.content) == "string" and last.content or nil
    if not final then
      for k = #last.content, 1, -1 do
        if type(last.content[k]) == "table" and last.content[k].text then final = last.content[k].text break end
      end
    end
    local at = final and rfind(text, strip(final))
    if not at then fail("BAD_ARG", "continue_final_message: the final message does not appear in the rendered chat", 2) end
    if text:sub(at, at + #lstrip(final) - 1) == final then
      text = text:sub(1, at + #lstrip(final) - 1)
    else
      text = text:sub(1, at + #strip(final) - 1)
    end
  end
  return text
end

-- A special token's text from tokenizer_config.json ("<bos>" or {content = "<bos>"}).
local function token_text(v)
  if type(v) == "table" then v = v.content end
  return type(v) == "string" and v or ""
end

local FAMILY = {Gemma2ForCausalLM = "gemma2", Gemma3ForCausalLM = "gemma3", Gemma3ForConditionalGeneration = "gemma3",
                Qwen3ForCausalLM = "qwen3"}

-- The template of the text (nil: none given; family: the model's architecture, for that case).
local function classify(text, source, bos, family)
  local t = {source = source, bos = bos}
  if text then
    if text:find("<start_of_turn>", 1, true) then
      t.kind, t.system = "gemma", text:find("first_user_prefix", 1, true) ~= nil
    elseif text:find("<|start_header_id|>", 1, true) then
      if text:find("Cutting Knowledge Date", 1, true) then
        fail("UNSUPPORTED", source .. ": the Llama-3.1 and later template (a dated system block) is not implemented; " ..
             "render the conversation yourself and pass token ids", 3)
      end
      t.kind, t.conditional = "llama3", text:find("add_generation_prompt", 1, true) ~= nil
    elseif text:find("<|im_start|>", 1, true) and text:find("</think>", 1, true) then
      t.kind = "chatml"
    else
      fail("UNSUPPORTED", source .. ": a chat template ctrace does not implement (it implements Gemma's, Llama-3's " ..
           "and Qwen3's); render the conversation yourself and pass token ids", 3)
    end
  else
    local f = FAMILY[family or ""]
    if not f then
      fail("NOT_FOUND", source .. ": no chat template (tokenizer_config.json chat_template, chat_template.jinja or " ..
           "chat_template.json), and none known for " .. tostring(family or "this model"), 3)
    end
    t.source = (family or "?") .. " (no chat template file: the family's)"
    if f == "qwen3" then t.kind = "chatml" else t.kind, t.system = "gemma", f == "gemma3" end
    if t.kind == "gemma" and t.bos == "" then t.bos = "<bos>" end
  end
  return setmetatable(t, Template)
end

function M.load(dir, family)
  if type(dir) ~= "string" then fail("BAD_ARG", "load expects a directory, got " .. type(dir), 2) end
  local bos, text, source = "", nil, dir
  local cfg_path = dir .. "/tokenizer_config.json"
  local cfg_text = read(cfg_path)
  if cfg_text then
    local ok, cfg = pcall(core.json_decode, cfg_text)
    if not ok or type(cfg) ~= "table" then fail("BAD_FORMAT", cfg_path .. " is not a JSON object", 2) end
    bos = token_text(cfg.bos_token)
    local ct = cfg.chat_template
    if type(ct) == "table" then   -- named templates: "default"
      for _, e in ipairs(ct) do
        if type(e) == "table" and e.name == "default" then ct = e.template end
      end
      if type(ct) ~= "string" then fail("UNSUPPORTED", cfg_path .. ": named chat templates without a \"default\"", 2) end
    end
    if type(ct) == "string" then text, source = ct, cfg_path end
  end
  if not text then
    text = read(dir .. "/chat_template.jinja")
    if text then source = dir .. "/chat_template.jinja" end
  end
  if not text then
    local j = read(dir .. "/chat_template.json")
    if j then
      local ok, v = pcall(core.json_decode, j)
      if ok and type(v) == "table" and type(v.chat_template) == "string" then
        text, source = v.chat_template, dir .. "/chat_template.json"
      end
    end
  end
  return classify(text, source, bos, family)
end

-- The directory a model was loaded from (its tokenizer and template live there).
local function model_dir(model)
  local p = model.path
  if type(p) ~= "string" or p == "" then fail("BAD_ARG", "the model has no path", 3) end
  if core.exists(p) == "file" then p = p:match("^(.*)/[^/]*$") or "." end
  return p
end

function M.for_model(model)
  return M.load(model_dir(model), model.architecture)
end

function M.ids(model, messages, o)
  local text = M.for_model(model):render(messages, o)
  return model:tokenize(text, {add_special_tokens = false})
end

-- A prompt given as {chat = messages, ...}: its token ids with the attribution defaults (the
-- model turn opened after a user turn, continued after an assistant turn). Other prompts as given.
function M.prompt(model, prompt)
  if type(prompt) ~= "table" or prompt.chat == nil then return prompt end
  local o = {}
  for k, v in pairs(prompt) do
    if k ~= "chat" then
      if not OPTS[k] then
        fail("BAD_ARG", "unknown prompt field '" .. tostring(k) .. "' (chat, add_generation_prompt, " ..
             "continue_final_message, enable_thinking)", 3)
      end
      o[k] = v
    end
  end
  check_messages(prompt.chat, 3)
  local last = prompt.chat[#prompt.chat].role == "assistant"
  if o.add_generation_prompt == nil and o.continue_final_message == nil then
    o.add_generation_prompt, o.continue_final_message = not last, last
  end
  local ok, ids = pcall(M.ids, model, prompt.chat, o)
  if not ok then error((tostring(ids):gsub("^[^:]*:%d+: ", "")), 3) end
  return ids
end

-- ---------------------------------------------------------------------------------------------
-- Prompts as chats on the model and replacement model methods

local Model = core.methods("ctrace.Model")
local RM = core.methods("ctrace.ReplacementModel")

function Model.apply_chat_template(model, messages, o)
  local tokenize = true
  if type(o) == "table" and o.tokenize ~= nil then
    tokenize = o.tokenize
    local c = {}
    for k, v in pairs(o) do if k ~= "tokenize" then c[k] = v end end
    o = c
  end
  local ok, res = pcall(function()
    local text = M.for_model(model):render(messages, o)
    return tokenize and model:tokenize(text, {add_special_tokens = false}) or text
  end)
  if not ok then error((tostring(res):gsub("^[^:]*:%d+: ", "")), 2) end
  return res
end

-- Wraps method name of a methods table so its argument `arg` (after self) may be a chat prompt.
local function accept_chat(methods, name, arg, model_of)
  local raw = methods[name]
  methods[name] = function(self, ...)
    local args = {...}
    local n = select("#", ...)
    local p = args[arg]
    if type(p) == "table" and p.chat ~= nil then args[arg] = M.prompt(model_of(self), p) end
    return raw(self, unpack(args, 1, math.max(n, arg)))
  end
end

local function itself(m) return m end
local function model_of_rm(rm) return rm:model() end

-- m:tokenize(text_or_chat, opts): a chat gives its ids (opts do not apply)
local tokenize_raw = Model.tokenize
function Model.tokenize(model, p, o)
  if type(p) == "table" and p.chat ~= nil then return M.prompt(model, p) end
  return tokenize_raw(model, p, o)
end
for _, name in ipairs {"forward", "run_with_cache", "generate"} do accept_chat(Model, name, 1, itself) end
for _, name in ipairs {"attribute", "intervene_raw", "generate", "donor_values"} do accept_chat(RM, name, 1, model_of_rm) end

return M
