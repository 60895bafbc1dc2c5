-- chat.lua - ctrace's token ids for each conversation of a cases file through the chat template
-- beside a tokenizer (tests/cli/test_chat.sh compares them with Jinja and the official
-- tokenizers): one line of ids per case, or ERROR when ctrace refuses the conversation.
--   ctrace tests/tok/chat.lua <tokenizer dir> <cases.json>
local ct = require "ctrace"
local dir, cases_path = arg[1], arg[2]
local f = assert(io.open(cases_path, "rb"))
local cases = ct.json_decode(f:read("*a"))
f:close()
local template = ct.chat.load(dir)
local tok = ct.load_tokenizer(dir .. "/tokenizer.json")
for _, c in ipairs(cases) do
  local ok, text = pcall(template.render, template, c.messages, {add_generation_prompt = c.add_generation_prompt,
                          continue_final_message = c.continue_final_message, enable_thinking = c.enable_thinking})
  if ok then
    print(table.concat(tok:encode(text, {add_special_tokens = false}), " "))
  else
    io.stderr:write("# ", tostring(text), "\n")
    print("ERROR")
  end
end
