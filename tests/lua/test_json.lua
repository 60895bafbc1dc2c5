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
