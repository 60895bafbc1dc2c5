-- ctrace.study - perturbation studies: a declared set of interventions run against one prompt,
-- recorded as a table (CSV and JSON) and drawn as SVG charts in a case-study folder.
--
--   local study = require "ctrace.study"
--   local s = study.run(rm, {
--     prompt = "...",
--     targets = {" loved", 381},                     -- one-token strings or ids: logit and probability
--     watch = {node, ...},                           -- downstream features: activation / clean
--     interventions = {{name = "inhibit 4_396", list = {{node = f, scale = -2}}}, ...},
--     scales = {-2, -1, 0, 1, 2},                    -- optional: every scale op replaced by each value
--     layer_ranges = {{0, 0}, {0, 1}, ...},          -- optional: constrained patching, one run each
--     opts = {...},                                  -- options for every rm:intervene
--   })
--   s.rows        one per (intervention, scale, layer range): name, scale, layers, and per target
--                 logit, dlogit, prob, dprob; per watched node its fraction of clean
--   study.write(s, dir, name, {chart = "bars" | "scales" | "layers", target = 1})
--       -> dir/name.csv, name.json, name.svg
--   study.pearson(xs, ys) -> the Pearson correlation of two lists of numbers
--   study.faithfulness(rm, graph, {prompt =, top = 20, target = 1}) -> {points, r, r_direct}
--       the graph's predicted effect of removing each of its top nodes on the target logit (the
--       signed sum over paths of the adjacency, and the direct edge alone) against the effect
--       measured by ablating the node with free propagation; Pearson correlations
--   study.write_faithfulness(f, dir, name)
local ct = require "ctrace"
local svg = require "ctrace.svg"

local M = {}

local function fail(msg, level) error("BAD_ARG: study: " .. msg, (level or 1) + 1) end

local function target_ids(rm, targets)
  local model, out = rm:model(), {}
  for i, x in ipairs(targets or {}) do
    if type(x) == "number" then
      out[i] = {id = x, label = model:token_label(x)}   -- the id itself without a tokenizer
    elseif type(x) == "string" then
      local ok, tok = pcall(model.tokenizer, model)
      if not ok and not tostring(tok):find("NOT_FOUND", 1, true) then error(tok, 0) end
      if not ok then fail(string.format("target %q is text and the model has no tokenizer; give its token id", x), 3) end
      local ids = tok:encode(x, {add_special_tokens = false})
      if #ids ~= 1 then fail(string.format("target %q is %d tokens; a target must be one token", x, #ids), 3) end
      out[i] = {id = ids[1], label = x}
    else
      fail("target " .. i .. ": expected a token id or string", 3)
    end
  end
  return out
end

-- The intervention list with every scale operation's factor replaced by k.
local function with_scale(list, k)
  local out = {}
  for i, iv in ipairs(list) do
    local c = {}
    for key, v in pairs(iv) do c[key] = v end
    if c.scale ~= nil then c.scale = k end
    out[i] = c
  end
  return out
end

local function record(rm, spec, targets, clean, name, list, scale, layers)
  local opts = {}
  for k, v in pairs(spec.opts or {}) do opts[k] = v end
  opts.activations = spec.watch ~= nil and #spec.watch > 0
  opts.watch = opts.activations and spec.watch or nil
  if layers then opts.constrained_layers = layers end
  local r = rm:intervene(spec.prompt, list, opts)
  local row = {name = name, scale = scale, layers = layers and (layers[1] .. "-" .. layers[2]) or "", targets = {}, watch = {}}
  local T = r.logits:size(1)
  for i, t in ipairs(targets) do
    local logit, p = r.logits:get(T, t.id + 1), r:prob(t.id)
    row.targets[i] = {token = t.label, logit = logit, dlogit = logit - clean.logits:get(T, t.id + 1), prob = p,
                      dprob = p - clean:prob(t.id)}
  end
  for i, a in ipairs(r.activations or {}) do
    row.watch[i] = {node = string.format("%d_%d_%d", a.layer, a.feature, a.pos), fraction = a.clean ~= 0 and a.value / a.clean or 0}
  end
  return row
end

function M.run(rm, spec)
  if type(spec) ~= "table" or type(spec.prompt) ~= "string" and type(spec.prompt) ~= "table" then
    fail("expected a spec with a prompt", 2)
  end
  if type(spec.interventions) ~= "table" or #spec.interventions == 0 then
    fail("expected a non-empty list of interventions", 2)
  end
  local targets = target_ids(rm, spec.targets)
  if #targets == 0 then fail("expected at least one target token", 2) end
  local clean = rm:intervene(spec.prompt, {}, {activations = false})
  local runs = {}   -- the sweep: interventions x scales x layer ranges
  for _, iv in ipairs(spec.interventions) do
    if type(iv.list) ~= "table" or #iv.list == 0 then
      fail("intervention '" .. tostring(iv.name) .. "' has an empty list", 2)
    end
    for _, k in ipairs(spec.scales or {false}) do
      for _, layers in ipairs(spec.layer_ranges or {false}) do
        runs[#runs + 1] = {name = iv.name or ("intervention " .. #runs + 1), list = iv.list, k = k, layers = layers}
      end
    end
  end
  -- under MPI the runs are shared among the ranks (ct.dist.map); every rank gets every row
  local rows = ct.dist.map(runs, function(r)
    return record(rm, spec, targets, clean, r.name, r.k and with_scale(r.list, r.k) or r.list, r.k or nil, r.layers or nil)
  end, {to = "all"})
  return {prompt = spec.prompt, targets = targets, rows = rows, clean = clean:top_logits(5)}
end

local write_file = ct.write_file   -- whole files or nothing

local function csv_field(v)
  v = tostring(v == nil and "" or v)
  if v:find('[,"\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- A study's table as CSV and JSON, and a chart: bars (one group per intervention), lines over
-- scales, or lines over the constrained range's last layer. (Under MPI every rank holds the same
-- study, and ct.write_file writes on rank 0.)
function M.write(s, dir, name, o)
  o = o or {}
  local ti = o.target or 1
  local head = {"name", "scale", "layers"}
  for _, t in ipairs(s.targets) do
    for _, k in ipairs {"logit", "dlogit", "prob", "dprob"} do head[#head + 1] = t.label .. " " .. k end
  end
  local first = s.rows[1]
  for _, w in ipairs(first.watch) do head[#head + 1] = w.node .. " fraction" end
  local lines = {}
  for i, h in ipairs(head) do head[i] = csv_field(h) end
  lines[1] = table.concat(head, ",")
  for _, r in ipairs(s.rows) do
    local f = {csv_field(r.name), csv_field(r.scale), csv_field(r.layers)}
    for _, t in ipairs(r.targets) do
      for _, k in ipairs {"logit", "dlogit", "prob", "dprob"} do f[#f + 1] = string.format("%.6g", t[k]) end
    end
    for _, w in ipairs(r.watch) do f[#f + 1] = string.format("%.6g", w.fraction) end
    lines[#lines + 1] = table.concat(f, ",")
  end
  write_file(dir .. "/" .. name .. ".csv", table.concat(lines, "\n") .. "\n")
  write_file(dir .. "/" .. name .. ".json", ct.json_encode({prompt = s.prompt, targets = s.targets, rows = s.rows}, true) .. "\n")
  local target = s.targets[ti].label
  local chart
  if (o.chart or "bars") == "bars" then
    local labels, dp, dl = {}, {}, {}
    for i, r in ipairs(s.rows) do
      labels[i] = r.name .. (r.scale and (" x" .. r.scale) or "")
      dp[i], dl[i] = r.targets[ti].dprob, r.targets[ti].dlogit
    end
    chart = svg.bars{title = o.title or ("Effect on " .. target), y_label = "change from the clean run",
                     labels = labels, series = {{name = "probability", values = dp}, {name = "logit", values = dl}}}
  else
    local key = o.chart == "scales" and "scale" or "layers"
    local xs, series, by = {}, {}, {}
    for _, r in ipairs(s.rows) do
      local x = key == "scale" and r.scale or tonumber(r.layers:match("%-(%d+)$"))
      if not by[r.name] then
        by[r.name] = {name = r.name, values = {}}
        series[#series + 1] = by[r.name]
      end
      if #series == 1 then xs[#xs + 1] = x end
      by[r.name].values[#by[r.name].values + 1] = r.targets[ti].prob
    end
    chart = svg.lines{title = o.title or ("Probability of " .. target), x = xs, series = series, y_label = "probability",
                      x_label = key == "scale" and "scale applied to the activation" or "last constrained layer"}
  end
  write_file(dir .. "/" .. name .. ".svg", chart)
end

-- Pearson correlation of two lists (0 when either is constant).
function M.pearson(xs, ys)
  local n, mx, my = #xs, 0, 0
  for i = 1, n do mx, my = mx + xs[i] / n, my + ys[i] / n end
  local sxy, sxx, syy = 0, 0, 0
  for i = 1, n do
    sxy = sxy + (xs[i] - mx) * (ys[i] - my)
    sxx = sxx + (xs[i] - mx) ^ 2
    syy = syy + (ys[i] - my) ^ 2
  end
  if sxx == 0 or syy == 0 then return 0 end
  return sxy / math.sqrt(sxx * syy)
end

function M.faithfulness(rm, g, o)
  o = o or {}
  local prompt = o.prompt or g:prompt()
  local logit = g:logits()[o.target or 1]
  local total = g:total_effects(logit.index)   -- signed sum over paths to the logit
  local function demeaned(lg)
    local T, V, s = lg:size(1), lg:size(2), 0
    for v = 1, V do s = s + lg:get(T, v) end
    return lg:get(T, logit.id + 1) - s / V
  end
  local base = demeaned(rm:intervene(prompt, {}, {activations = false}).logits)
  local points, px, pd, my = {}, {}, {}, {}
  for _, n in ipairs(g:top_features{n = o.top or 20}) do
    local measured = demeaned(rm:intervene(prompt, {{node = n, scale = 0}}, {activations = false, freeze_attention = o.freeze_attention ~= false}).logits) - base
    local predicted = -total:get(n.index)
    local direct = 0
    for _, e in ipairs(g:edges_in(logit.index)) do
      if e.node.index == n.index then direct = -e.weight end
    end
    points[#points + 1] = {predicted, measured, n.node_id}
    px[#px + 1], pd[#pd + 1], my[#my + 1] = predicted, direct, measured
  end
  return {points = points, r = M.pearson(px, my), r_direct = M.pearson(pd, my), target = logit.token}
end

function M.write_faithfulness(f, dir, name)
  local lines = {"node,predicted,measured"}
  for _, p in ipairs(f.points) do lines[#lines + 1] = string.format("%s,%.6g,%.6g", p[3], p[1], p[2]) end
  write_file(dir .. "/" .. name .. ".csv", table.concat(lines, "\n") .. "\n")
  write_file(dir .. "/" .. name .. ".svg", svg.scatter{
    title = string.format("Ablating the top %d features: graph vs model (logit of %q)", #f.points, f.target),
    x_label = "predicted change of the demeaned logit (graph paths)", y_label = "measured change (free propagation)",
    points = f.points, diagonal = true, note = string.format("Pearson r = %.3f (direct edges only: %.3f)", f.r, f.r_direct)})
end

return M
