-- ctrace.supernodes - a pruned graph's features grouped by their roles, automatically.
--
--   supernodes.find(g, {threshold, min_size, transcoders, model, weights}) -> groups, most
--       influential first: {{name =, members = {node tables}, similarity =}, ...}
--   supernodes.ari(a, b) -> the adjusted Rand index of two labelings (lists of equal length)
--   supernodes.cosine(a, b) -> the cosine of two lists of numbers
--
-- Two features are similar when they write the same direction and sit alike in the graph:
--   decoder  the cosine of their total writes to the residual stream (a cross-layer feature's
--            decoder slices summed: every slice adds to the same stream), when the transcoders
--            are given;
--   outputs  the cosine of their outgoing edge weights (over the graph's nodes);
--   inputs   the cosine of their incoming edge weights.
-- The similarity is the weighted mean (weights {decoder = 1, outputs = 1, inputs = 1}; without
-- transcoders {outputs = 1, inputs = 1}). Groups come from average-linkage
-- agglomerative clustering: the two groups of largest mean pairwise similarity merge while it is
-- at least `threshold` (0.5); ties merge the pair with the lowest node indices first, so the
-- groups are the same for the same graph. Groups of fewer than `min_size` (2) features are not
-- returned. A group's name: the label most of its members share (node labels, as g:label or
-- dashboards set them), else its most influential member's label, else, with a model and
-- transcoders, the token its members' decoders promote most (summed direct logit effects),
-- else "L<layers> <first feature id>". The clustering is cubic in the number of features: 0.14 s
-- for the 238 of a pruned stories260K graph, 33 s for the 1,920 of the full one.
local M = {}

-- The cosine of two lists of numbers (0 when either is zero).
function M.cosine(a, b)
  local ab, aa, bb = 0, 0, 0
  for j = 1, #a do
    ab, aa, bb = ab + a[j] * b[j], aa + a[j] * a[j], bb + b[j] * b[j]
  end
  if aa == 0 or bb == 0 then return 0 end
  return ab / math.sqrt(aa * bb)
end

-- sparse vectors: {[key] = value}
local function cosine_sparse(a, b)
  local ab, aa, bb = 0, 0, 0
  for k, x in pairs(a) do
    aa = aa + x * x
    if b[k] then ab = ab + x * b[k] end
  end
  for _, y in pairs(b) do bb = bb + y * y end
  if aa == 0 or bb == 0 then return 0 end
  return ab / math.sqrt(aa * bb)
end

local function total_write(tc, n)
  local last = tc.kind == "clt" and tc.n_layers - 1 or n.layer
  local w
  for target = n.layer, last do
    local row = tc:decoder_row(n.layer, n.feature, target):totable()
    if not w then w = row else for j = 1, #w do w[j] = w[j] + row[j] end end
  end
  return w
end

local allowed = {threshold = true, min_size = true, transcoders = true, model = true, weights = true}

function M.find(g, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("BAD_ARG: supernodes expects an options table; found " .. type(opts), 3) end
  for k in pairs(opts) do
    if not allowed[k] then
      error("BAD_ARG: supernodes: unknown option '" .. tostring(k) .. "' (expected threshold, min_size, transcoders, model, weights)", 3)
    end
  end
  local threshold, min_size, tc = opts.threshold or 0.5, opts.min_size or 2, opts.transcoders
  if type(threshold) ~= "number" or threshold ~= threshold then
    error("BAD_ARG: supernodes: threshold must be a number; found " .. tostring(threshold), 3)
  end
  if type(min_size) ~= "number" or min_size < 1 or min_size % 1 ~= 0 then
    error("BAD_ARG: supernodes: min_size must be an integer >= 1; found " .. tostring(min_size), 3)
  end
  local w = opts.weights or (tc and {decoder = 1, outputs = 1, inputs = 1} or {outputs = 1, inputs = 1})
  for k, v in pairs(w) do
    if (k ~= "decoder" and k ~= "outputs" and k ~= "inputs") or type(v) ~= "number" or not (v >= 0 and v < math.huge) then
      error("BAD_ARG: supernodes: weights are {decoder =, outputs =, inputs =} finite numbers >= 0; found " .. tostring(k)
            .. " = " .. tostring(v), 3)
    end
  end
  if (w.decoder or 0) > 0 and not tc then error("BAD_ARG: supernodes: a decoder weight needs the transcoders", 3) end
  local wsum = (w.decoder or 0) + (w.outputs or 0) + (w.inputs or 0)
  if wsum <= 0 then error("BAD_ARG: supernodes: the weights sum to 0", 3) end

  local nodes = g:nodes("feature")
  local n = #nodes
  local dec, outs, ins = {}, {}, {}
  for i, nd in ipairs(nodes) do
    if (w.decoder or 0) > 0 then dec[i] = total_write(tc, nd) end
    outs[i], ins[i] = {}, {}
    for _, e in ipairs(g:edges_out(nd)) do outs[i][e.node.index] = e.weight end
    for _, e in ipairs(g:edges_in(nd)) do ins[i][e.node.index] = e.weight end
  end
  local sim = {}
  for i = 1, n do
    sim[i] = {}
    for j = 1, i - 1 do
      local s = 0
      if (w.decoder or 0) > 0 then s = s + w.decoder * M.cosine(dec[i], dec[j]) end
      if (w.outputs or 0) > 0 then s = s + w.outputs * cosine_sparse(outs[i], outs[j]) end
      if (w.inputs or 0) > 0 then s = s + w.inputs * cosine_sparse(ins[i], ins[j]) end
      sim[i][j] = s / wsum
    end
  end
  local function S(i, j) if i > j then return sim[i][j] else return sim[j][i] end end

  -- average linkage: groups as lists of node positions (1..n), merged while the best mean
  -- similarity reaches the threshold
  local groups = {}
  for i = 1, n do groups[i] = {i} end
  local link = {}   -- link[a][b] (a > b): summed similarity between groups a and b
  for a = 1, n do
    link[a] = {}
    for b = 1, a - 1 do link[a][b] = S(a, b) end
  end
  local alive = {}
  for i = 1, n do alive[i] = true end
  while true do
    local best, ba, bb = -math.huge, nil, nil
    for a = 1, n do
      if alive[a] then
        for b = 1, a - 1 do
          if alive[b] then
            local m = link[a][b] / (#groups[a] * #groups[b])
            if m > best then best, ba, bb = m, a, b end
          end
        end
      end
    end
    if not ba or best < threshold then break end
    -- merge ba into bb (bb < ba keeps the lower position)
    for _, x in ipairs(groups[ba]) do table.insert(groups[bb], x) end
    alive[ba] = false
    for c = 1, n do
      if alive[c] and c ~= bb then
        local sbc = (c < bb and link[bb][c] or link[c][bb]) + (c < ba and link[ba][c] or link[c][ba])
        if c < bb then link[bb][c] = sbc else link[c][bb] = sbc end
      end
    end
  end

  local out = {}
  for a = 1, n do
    if alive[a] and #groups[a] >= min_size then
      local members, s, pairs_ = {}, 0, 0
      table.sort(groups[a])
      for _, i in ipairs(groups[a]) do members[#members + 1] = nodes[i] end
      for x = 1, #groups[a] do
        for y = x + 1, #groups[a] do
          s, pairs_ = s + S(groups[a][x], groups[a][y]), pairs_ + 1
        end
      end
      table.sort(members, function(p, q)
        if p.influence ~= q.influence then return p.influence < q.influence end
        return p.index < q.index
      end)
      out[#out + 1] = {members = members, similarity = pairs_ > 0 and s / pairs_ or 1}
    end
  end
  table.sort(out, function(p, q)
    if p.members[1].influence ~= q.members[1].influence then return p.members[1].influence < q.members[1].influence end
    return p.members[1].index < q.members[1].index
  end)
  local used = {}
  for _, grp in ipairs(out) do
    local name = M.suggest_name(grp.members, tc, opts.model)
    local base, k = name, 1
    while used[name] do
      k = k + 1
      name = base .. " (" .. k .. ")"
    end
    used[name] = true
    grp.name = name
  end
  return out
end

-- The name a group suggests (see the header).
function M.suggest_name(members, tc, model)
  local count, first = {}, nil
  for _, m in ipairs(members) do
    if m.label and m.label ~= "" then
      count[m.label] = (count[m.label] or 0) + 1
      first = first or m.label
    end
  end
  local best, bc = nil, 1
  for label, c in pairs(count) do
    if c > bc or (c == bc and best and label < best) then best, bc = label, c end
  end
  if best then return best end
  if first then return first end
  local layers = {}
  for _, m in ipairs(members) do layers[#layers + 1] = m.layer end
  table.sort(layers)
  local span = layers[1] == layers[#layers] and tostring(layers[1]) or (layers[1] .. "-" .. layers[#layers])
  if tc and model then
    local effect, label = {}, {}
    for _, m in ipairs(members) do
      for _, t in ipairs(tc:top_logits(model, m.layer, m.feature, 5).top) do
        effect[t.id] = (effect[t.id] or 0) + t.value
        label[t.id] = t.token
      end
    end
    local top, tv = nil, -math.huge
    for id, v in pairs(effect) do
      if v > tv or (v == tv and id < top) then top, tv = id, v end
    end
    if top then return string.format("L%s -> %q", span, label[top]) end
  end
  return "L" .. span .. " " .. members[1].node_id
end

-- Adjusted Rand index (Hubert and Arabie, 1985) of two labelings of the same items: 1 for the
-- same partition, about 0 for chance; two partitions into singletons only count as equal (1).
function M.ari(a, b)
  if #a ~= #b then error(string.format("BAD_ARG: ari: labelings of %d and %d items; expected the same items", #a, #b), 2) end
  local n = #a
  local function c2(x) return x * (x - 1) / 2 end
  local cell, ra, rb = {}, {}, {}   -- keyed by the labels themselves: 1 and "1" stay apart
  for i = 1, n do
    local x, y = a[i], b[i]
    if x == nil or y == nil or x ~= x or y ~= y then error("BAD_ARG: ari: label " .. i .. " is nil or NaN", 2) end
    cell[x] = cell[x] or {}
    cell[x][y] = (cell[x][y] or 0) + 1
    ra[x] = (ra[x] or 0) + 1
    rb[y] = (rb[y] or 0) + 1
  end
  local sij, sa, sb = 0, 0, 0
  for _, row in pairs(cell) do
    for _, x in pairs(row) do sij = sij + c2(x) end
  end
  for _, x in pairs(ra) do sa = sa + c2(x) end
  for _, x in pairs(rb) do sb = sb + c2(x) end
  local expected = n > 1 and sa * sb / c2(n) or 0
  local max = (sa + sb) / 2
  if max == expected then return 1 end
  return (sij - expected) / (max - expected)
end

return M
