-- test_attribution.lua - attribution graphs through the Lua API on stories260K with its default
-- transcoders: logit targets as circuit-tracer picks them (checked against the model's own
-- forward pass), custom directions by linearity, the feature budget (rows equal the full
-- graph's), determinism, graph JSON against the schema of formats.md section 5 (node ids, Cantor
-- numbers, links naming written nodes) and its round trip, graph-metadata.json upserts, the
-- safetensors form, pruning properties, and bad input.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"

local m = ct.load_model("stories260K")
local tc = ct.load_transcoders("stories260K")
local rm = ct.replacement_model(m, tc)
local prompt = "Once upon a time, there was a little girl named Lily. She"
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir) == 0)

local read = t.slurp

local g = rm:attribute(prompt, {verbose = false})
local info = g:info()

-- max |a - b| over two same-shaped tensors
local function maxdiff(a, b)
  local fa, fb, worst = a:totable(), b:totable(), 0
  local function walk(x, y)
    if type(x) == "table" then for i = 1, #x do walk(x[i], y[i]) end
    else worst = math.max(worst, math.abs(x - y)) end
  end
  walk(fa, fb)
  return worst
end

t.run {
  {"nodes: every active feature, L*T errors, T tokens, K logits", function()
    local ids = m:tokenize(prompt)
    local T, L = #ids, m.n_layers
    t.eq(info.n_pos, T, "positions = prompt tokens with BOS")
    t.eq(info.n_features, info.n_active, "no budget: every active feature is a node")
    t.eq(info.n_nodes, info.n_features + (L + 1) * T + info.n_logits, "node count")
    local kinds = {}
    for _, n in ipairs(g:nodes()) do kinds[n.kind] = (kinds[n.kind] or 0) + 1 end
    t.ok(kinds.error == L * T and kinds.token == T and kinds.logit == info.n_logits, "kinds")
    local toks = g:tokens()
    t.ok(#toks == T and toks[1] == m.bos_token_id and toks[T] == ids[T], "tokens start with BOS")
    t.eq(g:prompt(), prompt, "prompt")
  end},

  {"salient logits: top probabilities until 0.95, at most 10, from the model's own output", function()
    local logits = m:forward(m:tokenize(prompt))
    local T, V = logits:size(1), logits:size(2)
    local row, mx = {}, -math.huge
    for v = 1, V do row[v] = logits:get(T, v); mx = math.max(mx, row[v]) end
    local z = 0
    for v = 1, V do row[v] = math.exp(row[v] - mx); z = z + row[v] end
    local order = {}
    for v = 1, V do order[v] = v end
    table.sort(order, function(a, b) return row[a] > row[b] end)
    local want, cum = {}, 0
    for k = 1, 10 do
      want[k] = order[k] - 1
      cum = cum + row[order[k]] / z
      if cum >= 0.95 then break end
    end
    local got = g:logits()
    t.eq(#got, #want, "number of logit targets")
    for k = 1, #want do
      t.ok(got[k].id == want[k] and math.abs(got[k].prob - row[want[k] + 1] / z) < 1e-6,
           "target " .. k .. ": " .. got[k].token, string.format("%d %.6f", got[k].id, got[k].prob))
    end
    local g3 = rm:attribute(prompt, {max_n_logits = 1, verbose = false})
    t.eq(#g3:logits(), 1, "max_n_logits = 1")
  end},

  {"custom direction: the row of u_a - u_b is the difference of the two token rows", function()
    local lg = g:logits()
    local a, b = lg[1], lg[2]
    local D, V = m.d_model, m.d_vocab
    -- demeaning cancels in a difference: the raw unembedding rows are enough
    local u = ct.zeros(D)
    local ua, ub = m:unembedding(a.id), m:unembedding(b.id)
    for i = 1, D do u:set(i, ua:get(i) - ub:get(i)) end
    local gd = rm:attribute(prompt, {targets = {a.id, b.id, {vector = u, label = "a-b", weight = 1}}, verbose = false})
    local tl = gd:logits()
    t.ok(#tl == 3 and tl[3].id == V and tl[3].token == "a-b", "custom target gets vocab id V and its label")
    local A = gd:adjacency()
    local N = A:size(1)
    local ia, ib, ic = tl[1].index, tl[2].index, tl[3].index
    local worst, scale = 0, 0
    for s = 1, N do
      local d = A:get(ic, s) - (A:get(ia, s) - A:get(ib, s))
      worst = math.max(worst, math.abs(d))
      scale = math.max(scale, math.abs(A:get(ic, s)))
    end
    t.ok(worst <= 1e-5 * math.max(1, scale), "rows agree", string.format("max diff %.3g (row max %.3g)", worst, scale))
    t.ok(math.abs(tl[1].prob - a.prob) < 1e-7, "token targets carry their probability")
  end},

  {"feature budget: the influence queue picks max_feature_nodes rows, equal to the full graph's", function()
    local gb = rm:attribute(prompt, {max_feature_nodes = 300, batch_size = 64, verbose = false})
    local bi = gb:info()
    t.eq(bi.n_features, 300, "300 feature nodes")
    t.eq(bi.n_active, info.n_active, "same active features")
    -- every row and column of the budget graph equals the full graph's at the same nodes
    local map = {}
    for _, n in ipairs(gb:nodes()) do map[n.index] = g:node(n.node_id).index end
    local A, F = gb:adjacency(), g:adjacency()
    local N, worst, scale = A:size(1), 0, 0
    for r = 1, N do
      local fr = map[r]
      for s = 1, N do
        local w = A:get(r, s)
        scale = math.max(scale, math.abs(w))
        if w ~= 0 or true then worst = math.max(worst, math.abs(w - F:get(fr, map[s]))) end
      end
    end
    t.ok(worst <= 1e-5 * math.max(1, scale), "budget graph = full graph on its nodes", string.format("%.3g", worst))
    -- the picked features are influential: their total influence in the full graph beats the
    -- same number of features taken in index order
    local inf = g:influence()
    local picked, first = 0, 0
    for _, n in ipairs(gb:nodes("feature")) do picked = picked + inf:get(map[n.index]) end
    for i = 1, 300 do first = first + inf:get(i) end
    t.ok(picked > first, "ranked features carry more influence than the first 300",
         string.format("%.4f vs %.4f", picked, first))
  end},

  {"batch size changes nothing but rounding; same settings give the same bytes", function()
    local g1 = rm:attribute(prompt, {batch_size = 7, verbose = false})
    t.ok(maxdiff(g1:adjacency(), g:adjacency()) < 1e-5, "batch 7 vs 512")
    local g2 = rm:attribute(prompt, {verbose = false})
    g:save(dir .. "/a.safetensors")
    g2:save(dir .. "/b.safetensors")
    t.ok(read(dir .. "/a.safetensors") == read(dir .. "/b.safetensors"), "two runs: identical adjacency bytes")
    -- the thread count changes no bit (the products' pieces depend on the products alone), so the
    -- ranks of an MPI job, each with its own threads, compute the rows one process would
    local threads = ct.threads()
    for _, n in ipairs {1, 3} do
      ct.threads(n)
      rm:attribute(prompt, {verbose = false}):save(dir .. "/t" .. n .. ".safetensors")
    end
    ct.threads(threads)
    t.ok(read(dir .. "/t1.safetensors") == read(dir .. "/a.safetensors") and
         read(dir .. "/t3.safetensors") == read(dir .. "/a.safetensors"), "1, 3 and " .. threads .. " threads: identical bytes")
  end},

  {"rows spilled to a file give the same graph as rows in memory", function()
    -- limits below the rows' size (half of it holds rows) but above the batch's scratch
    for _, case in ipairs {{false, 64, 20e6}, {300, 16, 4.5e6}} do
      local budget, batch, limit = case[1], case[2], case[3]
      local opts = {batch_size = batch, verbose = false, max_feature_nodes = budget or nil}
      local g1, s1 = rm:attribute(prompt, opts)
      opts.memory_limit = limit
      local g2, s2 = rm:attribute(prompt, opts)
      t.ok(not s1.spilled and s2.spilled and s2.batch_size == batch, "the limit spills the rows, batch unchanged",
           string.format("%s %s %d", tostring(s1.spilled), tostring(s2.spilled), s2.batch_size))
      g1:save(dir .. "/m.safetensors")
      g2:save(dir .. "/s.safetensors")
      t.ok(read(dir .. "/m.safetensors") == read(dir .. "/s.safetensors"),
           "identical bytes (" .. (budget and "budget 300, ranking on spilled rows" or "every feature") .. ")")
      local i1 = g1:info()
      local full = 4 * s1.n_rows * (i1.n_active + (i1.n_layers + 1) * i1.n_pos + i1.n_logits)
      t.ok(s2.row_bytes == s1.row_bytes and s1.row_bytes < full / 2, string.format(
           "rows packed alike in memory and in the file: %.2f and %.2f MB, full width %.2f MB", s1.row_bytes / 1e6,
           s2.row_bytes / 1e6, full / 1e6))
    end
    local _, s3 = rm:attribute(prompt, {batch_size = 512, memory_limit = 16e6, verbose = false})
    t.ok(s3.batch_size < 512, "a small limit shrinks the batch (" .. s3.batch_size .. ")")
  end},

  {"safetensors form: circuit-tracer field names, and it loads back to the same graph", function()
    g:save(dir .. "/g.safetensors")
    local h = ct.load_graph(dir .. "/g.safetensors")
    t.eq(maxdiff(h:adjacency(), g:adjacency()), 0, "adjacency")
    local r1, c1 = g:scores()
    local r2, c2 = h:scores()
    t.ok(r1 == r2 and c1 == c2, "scores")
    t.eq(h:prompt(), prompt, "prompt")
    local s = read(dir .. "/g.safetensors")
    for _, name in ipairs {"adjacency_matrix", "active_features", "selected_features", "activation_values",
                           "logit_tokens", "logit_probabilities", "input_tokens"} do
      t.ok(s:find('"' .. name .. '"', 1, true), "tensor " .. name)
    end
  end},

  {"scores: both in [0, 1]; the pruned graph scores lower", function()
    local r, c = g:scores()
    t.ok(r > 0 and r <= 1 and c > 0 and c <= 1, string.format("full: replacement %.4f, completeness %.4f", r, c))
    local p = g:prune{}
    local pr, pc = p:scores()
    t.ok(pr <= r + 1e-9 and pc <= c + 1e-9, string.format("pruned: replacement %.4f, completeness %.4f", pr, pc))
  end},

  {"pruning: tokens and logits kept; kept nodes carry at least the node threshold share", function()
    local inf = g:influence()
    local total = 0
    for i = 1, info.n_nodes do total = total + inf:get(i) end
    for _, q in ipairs {0.5, 0.8, 0.95} do
      local p = g:prune{node_threshold = q, edge_threshold = 1}
      local kept, n_tok, n_logit = 0, 0, 0
      for _, n in ipairs(p:nodes()) do
        kept = kept + inf:get(n.index)
        if n.kind == "token" then n_tok = n_tok + 1 end
        if n.kind == "logit" then n_logit = n_logit + 1 end
      end
      t.ok(kept >= q * total - 1e-9, string.format("threshold %.2f: kept share %.4f", q, kept / total))
      t.ok(n_tok == info.n_pos and n_logit == info.n_logits, "threshold " .. q .. ": every token and logit node kept")
    end
    local p = g:prune{}
    -- every kept feature has a kept incoming and outgoing edge
    local good = true
    for _, n in ipairs(p:nodes("feature")) do
      if #p:edges_in(n) == 0 or #p:edges_out(n) == 0 then good = false end
    end
    t.ok(good, "kept features have kept incoming and outgoing edges")
    local pi = p:info()
    t.ok(pi.pruned and pi.n_kept < info.n_nodes and pi.node_threshold == 0.8 and pi.edge_threshold == 0.98, "defaults 0.8 / 0.98")
  end},

  {"graph JSON: schema, node ids, Cantor numbers, round trip", function()
    local p = g:prune{}
    local path = dir .. "/lily-she.json"
    p:save_json(path, {slug = "lily-she", scan = "stories260K"})
    local text = read(path)
    t.ok(text == p:json{slug = "lily-she", scan = "stories260K"}, "save_json streams the text json() returns")
    local j = ct.json_decode(text)
    local md = j.metadata
    t.ok(md.slug == "lily-she" and md.scan == "stories260K" and type(md.prompt) == "string" and
         #md.prompt_tokens == info.n_pos and md.schema_version == 1 and type(md.transcoder_list) == "table",
         "metadata: slug, scan, prompt, prompt_tokens, schema_version 1, transcoder_list")
    local q = j.qParams
    t.ok(type(q.pinnedIds) == "table" and type(q.supernodes) == "table" and q.linkType == "both" and
         q.clickedId == "" and q.sg_pos == "", "qParams defaults")
    local ids, bad, n_logit_first = {}, {}, 0
    local L = m.n_layers
    for _, n in ipairs(j.nodes) do
      ids[n.node_id] = n
      local ft = n.feature_type
      local okn = type(n.node_id) == "string" and type(n.feature) == "number" and type(n.layer) == "string" and
                  type(n.ctx_idx) == "number" and type(n.token_prob) == "number" and type(n.is_target_logit) == "boolean" and
                  n.run_idx == 0 and n.reverse_ctx_idx == 0 and type(n.jsNodeId) == "string" and type(n.clerp) == "string"
      if ft == "cross layer transcoder" then
        local l, i, pos = n.node_id:match("^(%d+)_(%d+)_(%d+)$")
        l, i, pos = tonumber(l), tonumber(i), tonumber(pos)
        okn = okn and l and n.layer == tostring(l) and n.ctx_idx == pos and n.feature == (l + i) * (l + i + 1) / 2 + i and
              n.jsNodeId == l .. "_" .. i .. "-0" and type(n.activation) == "number" and type(n.influence) == "number"
      elseif ft == "mlp reconstruction error" then
        local l, pos = n.node_id:match("^(%d+)_%-1_(%d+)$")
        okn = okn and l and n.feature == -1 and n.jsNodeId == l .. "_-1-" .. pos and n.activation == nil
      elseif ft == "embedding" then
        local tok, pos = n.node_id:match("^E_(%d+)_(%d+)$")
        okn = okn and tok and n.layer == "E" and n.feature == tonumber(pos) and n.jsNodeId == "E_" .. tok .. "-" .. pos
      elseif ft == "logit" then
        local l, v, pos = n.node_id:match("^(%d+)_(%d+)_(%d+)$")
        okn = okn and tonumber(l) == L + 1 and n.layer == tostring(L + 1) and tonumber(pos) == info.n_pos - 1 and
              n.feature == tonumber(v) and n.jsNodeId == "L_" .. v .. "-" .. pos and n.clerp:match('^Output ".*" %(p=%d%.%d%d%d%)$') and
              n.influence == nil
        if n.is_target_logit then n_logit_first = n_logit_first + 1 end
      else
        okn = false
      end
      if not okn then bad[#bad + 1] = n.node_id end
    end
    t.ok(#bad == 0, "every node follows the id and field rules", table.concat(bad, " "))
    t.eq(n_logit_first, 1, "one is_target_logit")
    local linked = true
    for _, l in ipairs(j.links) do
      if not (ids[l.source] and ids[l.target] and type(l.weight) == "number") then linked = false end
    end
    t.ok(linked and #j.links > 0, "links name written nodes and carry weights (" .. #j.links .. " links)")
    -- every node line carries influence and activation keys (null where absent)
    local lines_ok = true
    for line in text:gmatch('{"node_id"[^\n]*') do
      if not (line:find('"influence": ', 1, true) and line:find('"activation": ', 1, true)) then lines_ok = false end
    end
    t.ok(lines_ok, "nodes carry influence and activation (null when absent)")
    -- round trip: nodes and links read back and written again give the same bytes
    local back = ct.load_graph(path)
    back:save_json(dir .. "/again.json", {slug = "lily-she", scan = "stories260K", metadata = false})
    t.ok(read(dir .. "/again.json") == text, "load_graph(json) then save_json gives the same file")
    t.eq(#back:nodes(), #j.nodes, "loaded node count")
    -- a node listed twice (a stranger's file): refused, naming it
    local first_node = text:match('\n    ({"node_id"[^\n]-}),\n')
    f = io.open(dir .. "/dup.json", "w")
    f:write((text:gsub('"nodes": %[\n', function(h) return h .. "    " .. first_node .. ",\n" end, 1)))
    f:close()
    t.raises(function() ct.load_graph(dir .. "/dup.json") end, "the same node as an earlier one", "a node listed twice")
    -- the viewer page is streamed from the graph: the same bytes as the page made from the file,
    -- and a label holding "</script>", or "<!--" then "<script" (which would keep the element
    -- open past its own end tag), cannot end or escape the element the JSON sits in
    local viewer = require "ctrace.viewer"
    local fnode = back:nodes("feature")[1]
    back:set_label(fnode, "<!--<script></script><img src=x onerror=alert(1)>")
    back:save_json(dir .. "/labelled.json", {slug = "labelled", metadata = false})
    viewer.write(dir .. "/labelled.json", dir .. "/from-file.html")
    local page = read(dir .. "/labelled.html")
    t.ok(page == read(dir .. "/from-file.html"), "save_json's streamed page = the page viewer.write makes from the JSON file")
    local _, n_close = page:gsub("</script>", "")
    local _, n_open = page:gsub("<script", "")
    t.ok(n_close == n_open and not page:find("<!--", 1, true) and
         page:find("\\u003c!--\\u003cscript>\\u003c/script>\\u003cimg", 1, true),
         "the label's every '<' is written \\u003c (no <!--, no <script or </script> from it)")
    -- graph-metadata.json: one entry per slug, replaced on rewrite
    p:save_json(dir .. "/other.json", {slug = "other", scan = "stories260K"})
    p:save_json(path, {slug = "lily-she", scan = "stories260K"})
    local meta = ct.json_decode(read(dir .. "/graph-metadata.json"))
    t.eq(#meta.graphs, 2, "graph-metadata.json: two slugs, no duplicate")
    t.ok(read(dir .. "/graph-metadata.json"):find('\n  "graphs": [\n', 1, true), "indent 2")
    -- a full graph saves as its pruned JSON with the default thresholds
    g:save_json(dir .. "/full.json", {slug = "full", metadata = false})
    t.eq(#ct.json_decode(read(dir .. "/full.json")).links, #j.links, "full graph JSON = pruned at 0.8 / 0.98")
  end},

  {"node API: lookup by index, node_id and table; edges strongest first", function()
    local l1 = g:logits()[1]
    local n = g:node(l1.index)
    t.ok(n.kind == "logit" and g:node(n.node_id).index == n.index and g:node(n).index == n.index, "node lookups agree")
    local e = g:edges_in(n, {n = 5})
    t.eq(#e, 5, "five strongest")
    t.ok(math.abs(e[1].weight) >= math.abs(e[5].weight), "sorted by |weight|")
    local f = e[1].node
    t.ok(f.kind and f.layer ~= nil or f.kind == "token", "edge nodes are node tables")
    local top = g:top_features{n = 3}
    t.ok(#top == 3 and top[1].influence <= top[2].influence, "top_features by influence")
    t.ok(g:summary():find("replacement", 1, true), "summary")
    t.raises(function() g:node(info.n_nodes + 1) end, "OUT_OF_RANGE", "index past the end")
    t.raises(function() g:node("9_9_9") end, "NOT_FOUND", "unknown node id")
    local other = rm:attribute("One day", {verbose = false})
    t.raises(function() g:edges_in(other:node(other:info().n_nodes)) end, "another graph", "node of another graph")
    -- control tokens and characters shown on one line: BOS as its name, a newline as \n
    local nl = rm:attribute("One day\nthe \"sun\"", {verbose = false, max_feature_nodes = 20})
    t.eq(select(2, nl:tokens())[1], "<s>", "the BOS token shown as <s> (llama2.c writes it as \\n<s>\\n)")
    local first = nl:summary():match("^[^\n]*")
    t.eq(first, 'prompt: "One day\\nthe \\"sun\\""', "summary: the prompt on one line, newline and quotes escaped")
    local p = g:prune{}
    local dropped
    for _, x in ipairs(g:nodes("feature")) do
      if not pcall(p.node, p, x.node_id) then dropped = x break end
    end
    t.raises(function() p:node(dropped.node_id) end, "pruned", "pruned node")
  end},

  {"bad input: clear errors", function()
    t.raises(function() rm:attribute("", {}) end, "empty", "empty prompt")
    t.raises(function() rm:attribute({}, {}) end, "empty", "empty id list")
    local long = {}
    for i = 1, 600 do long[i] = 5 end
    t.raises(function() rm:attribute(long, {}) end, "context is 512", "prompt longer than the context")
    t.raises(function() rm:attribute(prompt, {max_feature_nodes = 0}) end, "max_feature_nodes", "max_feature_nodes 0")
    t.raises(function() rm:attribute(prompt, {max_feature_nodes = -5}) end, "max_feature_nodes", "max_feature_nodes < 0")
    t.raises(function() rm:attribute(prompt, {desired_logit_prob = 1.5}) end, "desired_logit_prob", "desired_logit_prob > 1")
    t.raises(function() rm:attribute(prompt, {batch_size = 0}) end, "batch_size", "batch size 0")
    t.raises(function() rm:attribute(prompt, {bogus = 1}) end, "unknown option 'bogus'", "unknown option")
    t.raises(function() rm:attribute(prompt, {targets = {99999}}) end, "not in the vocabulary", "target id outside the vocabulary")
    t.raises(function() rm:attribute(prompt, {targets = {" Lily is here"}}) end, "exactly one token", "multi-token target string")
    t.raises(function() rm:attribute(prompt, {targets = {{vector = {1, 2}}}}) end, "vector", "custom vector of the wrong size")
    t.raises(function() g:prune{node_threshold = 1.2} end, "node_threshold", "node threshold above 1")
    t.raises(function() g:prune{edge_threshold = -0.1} end, "edge_threshold", "edge threshold below 0")
    t.raises(function() g:save_json(dir .. "/x.json", {slug = "a b"}) end, "slug", "slug with a space")
    t.raises(function() ct.load_graph(dir .. "/missing.json") end, "NOT_FOUND", "missing graph file")
    local f = io.open(dir .. "/broken.json", "w")
    f:write('{"metadata": {"prompt_tokens": []}, "nodes": [{"node_id": 3}], "links": []}')
    f:close()
    t.raises(function() ct.load_graph(dir .. "/broken.json") end, "BAD_FORMAT", "malformed graph JSON")
    -- transcoders of another model
    local tdir = dir .. "/tc"
    assert(os.execute("mkdir -p " .. tdir .. " && /usr/bin/python3 tests/ref/make_transcoders.py " .. tdir .. " >/dev/null") == 0)
    local other = ct.load_transcoders(tdir .. "/circuit_tracer")
    t.raises(function() ct.replacement_model(m, other) end, "d_model", "transcoders that do not match the model")
    -- freed model
    local m2 = ct.load_model("stories260K")
    local rm2 = ct.replacement_model(m2, tc)
    m2:free()
    t.raises(function() rm2:attribute(prompt) end, "freed", "freed model")
  end},
}

os.execute("rm -rf " .. dir)
t.done()
