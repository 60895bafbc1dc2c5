-- test_json.lua - ctrace.json_encode / json_decode: round trips, sorted keys, errors.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

t.run {
  {"round trip", function()
    local v = {a = {1, 2.5, -3e-20, 1e300}, b = "q\"uote\n\226\150\129", c = {d = true, e = false}, n = {}}
    local back = ct.json_decode(ct.json_encode(v))
    t.eq(back.a[3], -3e-20, "doubles read back exactly")
    t.eq(back.a[4], 1e300, "large doubles")
    t.eq(back.b, v.b, "escapes and UTF-8")
    t.eq(back.c.e, false, "booleans")
    t.eq(#back.n, 0, "empty table as an empty array")
  end},
  {"every double reads back as itself (cJSON alone prints 0.1 + 0.2 as 0.3)", function()
    local xs, bad = {0.1 + 0.2, 1 / 3, 2 ^ 53 + 2, 5e-324, -0.0, 1e308, 0.1}, 0
    local seed = 12345
    for _ = 1, 2000 do   -- doubles of every magnitude and all 53 bits
      seed = (seed * 1103515245 + 12345) % 2147483648
      local m = seed / 2147483648
      seed = (seed * 1103515245 + 12345) % 2147483648
      xs[#xs + 1] = (m + seed / 2147483648 / 2147483648) * 2 ^ ((seed % 200) - 100)
    end
    local back = ct.json_decode(ct.json_encode(xs))
    for i, x in ipairs(xs) do if back[i] ~= x then bad = bad + 1 end end
    t.eq(bad, 0, #xs .. " doubles: none changed")
    t.eq(ct.json_encode({0.1, 3, 0.1 + 0.2}), "[0.1,3,0.30000000000000004]", "the shortest of 15, 16, 17 digits")
  end},

  {"same table, same bytes", function()
    local a, b = {}, {}
    for i = 1, 50 do a["k" .. i] = i end
    for i = 50, 1, -1 do b["k" .. i] = i end
    t.eq(ct.json_encode(a), ct.json_encode(b), "keys are sorted whatever the insertion order")
    t.eq(ct.json_encode({z = 1, a = 2}), '{"a":2,"z":1}', "sorted output")
  end},
  {"errors", function()
    t.raises(function() ct.json_encode({0 / 0}) end, "NaN", "NaN refused")
    t.raises(function() ct.json_encode({f = print}) end, "cannot encode a function", "functions refused")
    local cyc = {}
    cyc.self = cyc
    t.raises(function() ct.json_encode(cyc) end, "deeper than 200", "cycles refused")
    t.raises(function() ct.json_decode("{\"a\": [1, 2") end, "BAD_FORMAT", "truncated JSON")
  end},
}
t.done()
