-- encode.lua - ctrace's token ids for a corpus, one line per input line (split on '\n'), in
-- the format of oracle.js; with "roundtrip" also checks decode(encode(x)) == x per line and
-- prints "roundtrip <same> <checked> <skipped>" to stderr.
--   ctrace tests/tok/encode.lua tokenizer(.json|.bin) corpus.txt [roundtrip [lossy...]]
-- lossy names the documented lossy cases of a tokenizer, whose lines are skipped:
--   nfc      text that NFC normalization changes (combining marks, conjoining jamo)
--   <text>   lines containing this added token (SentencePiece-style tokenizers put a prefix
--            space after it)
local ct = require "ctrace"
local tok_path, corpus, roundtrip = arg[1], arg[2], arg[3] == "roundtrip"
local lossy = {select(4, ...)}

local function is_lossy(line)
  if line:find("\226\150\129", 1, true) then return true end   -- the space marker itself
  for _, l in ipairs(lossy) do
    if l == "nfc" then
      if line:find("\204[\128-\191]") or line:find("\205[\128-\175]") or line:find("\225[\132-\135]") then return true end
    elseif line:find(l, 1, true) then
      return true
    end
  end
  return false
end
local tok = ct.load_tokenizer(tok_path)
local f = assert(io.open(corpus, "rb"))
local text = f:read("*a")
f:close()
local out, same, checked, skipped = {}, 0, 0, 0
for line in (text .. "\n"):gmatch("(.-)\n") do
  local ids = tok:encode(line)
  out[#out + 1] = table.concat(ids, " ")
  if roundtrip then
    if is_lossy(line) then
      skipped = skipped + 1
    else
      checked = checked + 1
      local back = tok:decode(tok:encode(line, {add_special_tokens = false}))
      if back == line then
        same = same + 1
      elseif os.getenv("CTRACE_SHOW") then
        io.stderr:write(string.format("%q -> %q\n", line, back))
      end
    end
  end
end
io.write(table.concat(out, "\n"), "\n")
if roundtrip then io.stderr:write(string.format("roundtrip %d %d %d\n", same, checked, skipped)) end
