-- test_supernodes.lua - automatic supernodes: the adjusted Rand index against hand-worked values,
-- the grouping of a hand-built graph (edge profiles only), names from labels, and supernodes
-- written into the graph JSON's qParams as circuit-tracer's viewer saves them.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"
local core = require "ctrace.core"
local sn = require "ctrace.supernodes"

local slurp = t.slurp

-- tests/fuzz/seeds/graph/small.json with links of our own: features 4_174_2 and 4_356_2 read
-- " upon" and drive the logit alike; 4_500_2 reads another token and drives the logit;
-- 4_674_2 and 4_1020_2 read BOS with opposite signs and drive nothing.
local function hand_graph(labels)
  local j = ct.json_decode(slurp("tests/fuzz/seeds/graph/small.json"))
  j.links = {
    {source = "E_407_2", target = "4_174_2", weight = 1}, {source = "4_174_2", target = "6_261_2", weight = 1},
    {source = "E_407_2", target = "4_356_2", weight = 2}, {source = "4_356_2", target = "6_261_2", weight = 1.8},
    {source = "E_403_1", target = "4_500_2", weight = 1}, {source = "4_500_2", target = "6_261_2", weight = 1},
    {source = "E_1_0", target = "4_674_2", weight = 1}, {source = "E_1_0", target = "4_1020_2", weight = -1},
  }
  for _, n in ipairs(j.nodes) do
    if labels and labels[n.node_id] then n.clerp = labels[n.node_id] end
  end
  return core.parse_graph_json(ct.json_encode(j), "hand.json")
end

local function ids(group)
  local out = {}
  for i, n in ipairs(group.members) do out[i] = n.node_id end
  table.sort(out)
  return table.concat(out, " ")
end

t.run {
  {"adjusted Rand index: hand-worked values", function()
    t.close(sn.ari({1, 1, 2, 2}, {1, 1, 2, 3}), 4 / 7, 1e-12, "{1,1,2,2} vs {1,1,2,3}: (1 - 1/3) / (3/2 - 1/3) = 4/7")
    t.close(sn.ari({1, 1, 2, 2}, {1, 2, 1, 2}), -0.5, 1e-12, "crossed pairs: (0 - 2/3) / (2 - 2/3) = -1/2")
    t.eq(sn.ari({"a", "a", "b", "c"}, {7, 7, 3, 9}), 1, "the same partition under other names")
    t.eq(sn.ari({1, 2, 3}, {4, 5, 6}), 1, "two partitions into singletons are the same")
    t.eq(sn.ari({1, 2, 3}, {1, 1, 1}), 0, "singletons against one group: 0")
    t.close(sn.ari({1, "1"}, {5, 5}), 0, 1e-12, "1 and \"1\" are different labels")
    t.raises(function() sn.ari({1, 0 / 0}, {1, 2}) end, "label 2 is nil or NaN", "a NaN label")
    t.raises(function() sn.ari({1, 2}, {1}) end, "labelings of 2 and 1 items", "lengths differ")
  end},
  {"a hand-built graph groups as its edges say", function()
    local g = hand_graph()
    local groups = g:supernodes{threshold = 0.75}
    t.eq(#groups, 1, "one group of two or more at threshold 0.75")
    t.eq(ids(groups[1]), "4_174_2 4_356_2", "the two features with the same inputs and outputs")
    t.close(groups[1].similarity, 1, 1e-6, "their similarity (both cosines 1)")
    local all = g:supernodes{threshold = 0.75, min_size = 1}
    t.eq(#all, 4, "with min_size 1 the other three stand alone")
    local loose = g:supernodes{threshold = 0.5}
    t.eq(ids(loose[1]), "4_174_2 4_356_2 4_500_2", "at 0.5 the feature sharing only the output joins (mean 0.5)")
    t.eq(#loose, 1, "opposite inputs never join (similarity -0.5)")
    local function all(groups)
      local out = {}
      for i, grp in ipairs(groups) do out[i] = grp.name .. ": " .. ids(grp) .. string.format(" %.9g", grp.similarity) end
      return table.concat(out, "; ")
    end
    t.eq(all(g:supernodes{threshold = 0.5, min_size = 1}), all(hand_graph():supernodes{threshold = 0.5, min_size = 1}),
         "the same groups, names and similarities every time")
  end},
  {"names: the label most members share, else the most influential member's", function()
    local g = hand_graph({["4_174_2"] = "say upon", ["4_356_2"] = "say upon", ["4_500_2"] = "other"})
    t.eq(g:supernodes{threshold = 0.5}[1].name, "say upon", "the shared label")
    local one = hand_graph({["4_500_2"] = "other", ["4_356_2"] = "the more influential"})
    t.eq(one:supernodes{threshold = 0.5}[1].name, "the more influential", "no label shared: the most influential member's")
    local h = hand_graph()
    t.ok(h:supernodes{threshold = 0.75}[1].name:match("^L4 4_%d+_2$") ~= nil, "no labels: layer and first member",
         h:supernodes{threshold = 0.75}[1].name)
  end},
  {"set_supernodes writes circuit-tracer's qParams form, keeping pins", function()
    local g = hand_graph()
    local q = ct.json_decode(g:qparams())
    t.eq(#q.supernodes, 0, "none at first")
    q.pinnedIds = {"4_500_2"}
    g:set_qparams(ct.json_encode(q))
    g:set_supernodes(g:supernodes{threshold = 0.75})
    local path = os.tmpname()
    g:save_json(path, {viewer = false})
    local j = ct.json_decode(slurp(path))
    os.remove(path)
    os.remove(path:gsub("[^/]*$", "") .. "graph-metadata.json")
    local s = j.qParams.supernodes
    t.eq(#s, 1, "one supernode in the JSON")
    t.eq(type(s[1][1]), "string", "its name first")
    t.eq(s[1][2] .. " " .. s[1][3], "4_356_2 4_174_2", "then its members' node ids, most influential first (influence 0.469, 0.572)")
    t.eq(j.qParams.pinnedIds[1], "4_500_2", "pins kept")
    g:set_supernodes({})
    t.eq(#ct.json_decode(g:qparams()).supernodes, 0, "an empty list clears them")
  end},
  {"bad supernodes are refused by name", function()
    local g = hand_graph()
    t.raises(function() g:set_supernodes({{name = "x", members = {"4_999_2"}}}) end, "names node '4_999_2', which this graph does not have", "unknown node")
    t.raises(function() g:set_supernodes({{name = "x", members = {}}}) end, "needs a name (string) and members", "no members")
    t.raises(function() g:set_qparams("[1]") end, "expected a JSON object", "not an object")
    t.raises(function() g:set_qparams('{"supernodes": [], "supernodes": [["x", "nope"]]}') end, '"supernodes" appears twice', "a second list")
    t.raises(function() g:set_supernodes({{name = "x", members = {"4_174_2", "4_356_2", "4_174_2"}}}) end,
             "supernode 1 names node '4_174_2' twice", "a member twice")
    t.raises(function() g:set_supernodes({{name = "x", members = {"4_174_2"}}, nil, {name = "y", members = {"4_356_2"}}}) end,
             "expects a list", "a hole in the list")
    t.raises(function() g:supernodes(5) end, "expects an options table", "options not a table")
    t.raises(function() g:supernodes{weights = {outputs = 0 / 0}} end, "finite numbers >= 0", "a NaN weight")
    t.raises(function() g:set_qparams('{"supernodes": [["only a name"]]}') end, "is not [name, node_id, ...]", "no member")
    t.raises(function() g:set_qparams('{"supernodes": [["x", 3]]}') end, "supernode 1 entry 2 is not a string", "a number")
    t.raises(function() g:supernodes{treshold = 1} end, "unknown option 'treshold'", "unknown option")
    t.raises(function() g:supernodes{weights = {decoder = 1}} end, "a decoder weight needs the transcoders", "decoder without transcoders")
    t.raises(function() g:supernodes{min_size = 0} end, "min_size must be an integer >= 1", "min_size 0")
  end},
}
t.done()
