-- test_network.lua - run by tests/cli/test_network.sh, which starts tests/net/server.py and
-- points HF_ENDPOINT, CTRACE_NEURONPEDIA_URL, HF_HOME and XDG_CACHE_HOME at it and a
-- temporary directory. Every fault the server injects ends in a result or in nil, message, code
-- naming the cause, within its time limit, and leaves no corrupt cache entry.
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"
local np, hub, labels = ct.neuronpedia, ct.hub, ct.labels

local base, tmp, ctrace_bin = os.getenv("CT_TEST_BASE"), os.getenv("CT_TEST_TMP"), os.getenv("CTRACE_BIN")
local hf_cache = tmp .. "/hf/hub"
local np_cache = tmp .. "/cache/ctrace"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end
local function stats() return ct.json_decode(sh("curl -s " .. base .. "/stats")) end
local function reset() sh("curl -s -X POST " .. base .. "/reset") end
local function exists(p) local f = io.open(p, "rb") if f then f:close() return true end return false end
local function size(p) local f = io.open(p, "rb") if not f then return -1 end local n = f:seek("end") f:close() return n end
local function sha(p) return (sh("sha256sum " .. p):match("^(%x+)")) end
local function files_under(dir, pattern)
  local out = {}
  for line in sh("find " .. dir .. " -mindepth 1 -name '" .. pattern .. "' 2>/dev/null"):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end
-- Runs a Lua snippet in another ctrace process (same environment); returns its output.
local n_children = 0
local function child(code, background, env)
  n_children = n_children + 1
  local path = string.format("%s/child%d.lua", tmp, n_children)
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local cmd = (env and (env .. " ") or "") .. ctrace_bin .. " " .. path
  if background then
    return sh(cmd .. " > " .. path .. ".out 2>&1 & echo $!"):match("%d+"), path .. ".out"
  end
  return sh(cmd .. " 2>&1")
end

local GEMMA, SRC = "gemma-2-2b", "18-gemmascope-transcoder-16k"
np.configure{backoff = 0.05, backoff_max = 2, retries = 2, timeout = 1}
hub.configure{backoff = 0.05, retries = 3, progress = false}

t.run {
  {"the fixture feature: label by the np_max-act-logits rule, logits, density, nulls accepted", function()
    local f, msg, code = np.feature(GEMMA, SRC, 7731)
    t.ok(f ~= nil, "GET /api/feature/gemma-2-2b/" .. SRC .. "/7731", msg)
    t.eq(f.label, "rivers and waterways in France", "label")
    t.eq(f.index, 7731, "index (a string on the wire) read as a number")
    t.eq(#f.explanations, 2, "both explanations")
    t.eq(f.explanations[2].type, "human", "second explanation's type")
    t.eq(f.top_logits[1].token, " Seine", "top logit")
    t.close(f.density, 0.000912, 1e-12, "density = frac_nonzero")
    t.close(f.max_activation, 27.906, 1e-9, "max activation")
  end},
  {"not found: 404, 404 with error and message, 200 with null", function()
    local f, msg, code = np.feature(GEMMA, SRC, 99999)
    t.ok(f == nil and code == "NOT_FOUND" and msg:find("not available", 1, true), "404 -> nil, message, NOT_FOUND", msg)
    f, msg, code = np.feature("fault-missingmodel", "0-x", 1)
    t.ok(f == nil and code == "NOT_FOUND", "model missing (error + message) -> NOT_FOUND", msg)
    f, msg, code = np.feature("fault-nullbody", "0-x", 1)
    t.ok(f == nil and code == "NOT_FOUND" and msg:find("null", 1, true), "200 null (older servers) -> NOT_FOUND", msg)
  end},
  {"faults: each ends in a label or nil, message, code, within its limit", function()
    local cases = {
      -- fault, expected code (nil: a label after retries), words in the message, seconds at most
      -- (bounds against hanging, with room for a loaded machine: the slow route would take 9 s
      -- if the 1 s limit were not kept, Retry-After asks for 3600 s)
      {"slow", "TIMEOUT", "time limit", 6},   -- 3 attempts of 1 s each plus backoff
      {"ratelimited", nil, nil, 4},             -- 429 twice, then 200: backoff, no Retry-After
      {"always429", "RATE_LIMITED", "Rate limit exceeded", 4},
      {"retryafter", "RATE_LIMITED", "asks to wait 3600 s", 3},
      {"flaky500", nil, nil, 4},
      {"always500", "HTTP", "HTTP 500", 4},
      {"gateway", "HTTP", "502", 4},
      {"reset", "NETWORK", "reset", 4},
      {"truncated", "NETWORK", "bytes remaining", 4},
      {"badjson", "BAD_RESPONSE", "not valid JSON", 3},
      {"notobject", "BAD_RESPONSE", "found an array", 3},
      {"huge", "TOO_LARGE", "16777216-byte limit", 10},
      {"html", "BAD_RESPONSE", "text/html", 3},
      {"redirectloop", "BAD_RESPONSE", "redirect", 3},
    }
    for _, c in ipairs(cases) do
      local t0 = ct.clock()
      local f, msg, code = np.feature("fault-" .. c[1], "0-x", 1)
      local dt = ct.clock() - t0
      if c[2] == nil then
        t.ok(f and f.label == "0-x feature 1" and dt < c[4], string.format("%s: label after retries (%.2f s)", c[1], dt), msg)
      else
        t.ok(f == nil and code == c[2] and msg:find(c[3], 1, true) and dt < c[4],
             string.format("%s: %s in %.2f s", c[1], c[2], dt), tostring(code) .. ": " .. tostring(msg))
      end
    end
    t.eq(#files_under(np_cache, "*.tmp"), 0, "no temporary files left in the label cache")
    -- every cache entry still verifies: read them all back offline
    np.configure{offline = true}
    local f = np.feature(GEMMA, SRC, 7731)
    t.ok(f and f.label == "rivers and waterways in France", "offline: the fixture feature comes from the cache")
    local g, msg, code = np.feature("fault-slow", "0-x", 1)
    t.ok(g == nil and code == "OFFLINE" and msg:find("not in the cache", 1, true), "offline: a miss says what is missing", msg)
    np.configure{offline = false}
  end},
  {"500 labels through the batch endpoint: counted requests, concurrency, time; then the cache", function()
    reset()
    local list = {}
    for i = 1, 500 do list[i] = {GEMMA, ((i - 1) % 26) .. "-gemmascope-transcoder-16k", 1000 + i} end
    list[501] = {GEMMA, "3-gemmascope-transcoder-16k", 99999}   -- left out by the server
    list[502] = {GEMMA, "4-gemmascope-transcoder-16k", 4800000000}   -- a feature number past 2^32
    list[503] = list[1]   -- asked twice
    local t0 = ct.clock()
    local res, errs, requests = np.features(list)
    local dt = ct.clock() - t0
    local s = stats()
    local good = 0
    for i = 1, 500 do
      local want = (1000 + i) % 10 == 3 and "" or string.format("%s feature %d", list[i][2], 1000 + i)
      if res[i] and res[i].label == want and res[i].index == 1000 + i then good = good + 1 end
    end
    t.eq(good, 500, "all 500 labels right (matched by layer and index; the server answers out of order)")
    t.ok(res[501] == false and errs[501].code == "NOT_FOUND", "a feature the server leaves out: false, NOT_FOUND", errs[501] and errs[501].message)
    t.ok(res[502] and res[502].index == 4800000000 and res[502].label:find("4800000000", 1, true), "feature 4,800,000,000 read exactly")
    t.ok(res[503] and res[503].label == res[1].label, "a key listed twice gets the same answer")
    t.eq(requests, 4, "502 distinct features in 4 batch requests of up to 128")
    t.eq(s["np.batch"], 4, "server counted 4 batch requests")
    t.ok(s.max_inflight >= 2, "requests overlapped (server saw " .. tostring(s.max_inflight) .. " at once)")
    io.write(string.format("# 502 features: %d requests, %.3f s, %d at once on the server\n", requests, dt, s.max_inflight))
    reset()
    t0 = ct.clock()
    local again, _, r2 = np.features(list)
    io.write(string.format("# again from the cache: %d requests, %.3f s\n", r2, ct.clock() - t0))
    t.ok(r2 == 1 and again[250].label == res[250].label and (stats()["np.batch"] or 0) == 1,
         "second time: only the missing feature is asked for (" .. r2 .. " request)")
  end},
  {"explanation search: one page, pagination, rate limit", function()
    local r = np.search("river", {model_id = GEMMA, sources = {SRC, "19-gemmascope-transcoder-16k"}})
    t.ok(r and #r.results == 2 and r.results[1].label == "rivers and waterways in France" and r.results[1].index == 7731,
         "fixture page: results with labels and numeric indices")
    t.ok(r.has_more == false and r.next_offset == nil, "hasMore false, no nextOffset: paging stops")
    reset()
    r = np.search("paged", {model_id = GEMMA, sources = {"1-x"}, pages = 10})
    t.ok(r and #r.results == 45 and r.results[45].label == "paged 44" and not r.has_more,
         "45 results over pages of 20, 20 and 5")
    t.eq(stats()["np.search"], 3, "3 search requests")
    local nores, msg, code = np.search("limit", {model_id = GEMMA})
    t.ok(nores == nil and code == "RATE_LIMITED", "429 on search -> RATE_LIMITED after backoff", msg)
  end},
  {"bad arguments raise", function()
    t.raises(function() np.feature(GEMMA, SRC, -1) end, "BAD_ARG", "negative index")
    t.raises(function() np.feature(GEMMA, SRC, 1.5) end, "BAD_ARG", "fractional index")
    t.raises(function() np.feature(GEMMA, nil, 1) end, "BAD_ARG", "missing source id")
    t.raises(function() np.features({{GEMMA, SRC}}) end, "BAD_ARG", "an item without an index")
    t.raises(function() np.configure{bogus = 1} end, "unknown option 'bogus'", "unknown option")
    t.raises(function() np.configure{concurrency = 0} end, "option 'concurrency': expected 1..64 requests, got 0", "concurrency 0")
    t.raises(function() np.search("ab", {model_id = GEMMA}) end, "3 characters", "short query")
    t.raises(function() hub.file("hf://justone") end, "BAD_ARG", "hf:// without a repository")
    t.raises(function() hub.file("hf://org/repo/../../etc/passwd") end, "without '..'", "'..' in the path")
    t.raises(function() hub.file("hf://org/repo/x?rev=1") end, "revision=", "bad query")
  end},
  {"the proxy from the environment", function()
    reset()
    local r = child('local f, m = require("ctrace").neuronpedia.feature("gemma-2-2b", "1-x", 5) print(f and f.label or m)', false,
                    "http_proxy=" .. base .. " CTRACE_NEURONPEDIA_URL=http://neuronpedia.invalid/np")
    t.ok(r:find("1-x feature 5", 1, true) and stats().proxied == 1, "http_proxy: the request to an unresolvable host goes through it", r)
  end},
  {"keys go only to their own servers", function()
    local s = stats()
    t.ok((s["np.x-api-key"] or 0) > 0 and s["np.x-api-key"] == (s["np.batch"] or 0) + (s["np.get"] or 0) + (s["np.search"] or 0),
         "NEURONPEDIA_API_KEY on every Neuronpedia request")
    t.ok(s["np.authorization"] == nil, "no HF_TOKEN to Neuronpedia")
  end},
  {"Hugging Face: files into the hub cache, resume, checks, errors", function()
    reset()
    local p, msg, code = hub.file("hf://test/plain/config.json")
    t.ok(p and p:find(hf_cache .. "/models--test--plain/snapshots/0123456789abcdef0123456789abcdef01234567/config.json", 1, true),
         "a git file: snapshots/<commit>/config.json", msg)
    t.eq(sh("readlink " .. p):gsub("%s+$", ""), "../../blobs/" .. sh("git hash-object " .. p):gsub("%s+$", ""),
         "snapshot entry is a relative symlink to blobs/<git blob sha1>, as huggingface_hub writes it")
    t.eq(sh("cat " .. hf_cache .. "/models--test--plain/refs/main"), "0123456789abcdef0123456789abcdef01234567", "refs/main holds the commit")
    hub.file("hf://test/plain/config.json")
    t.eq(stats()["cdn.get"], nil, "no download the second time")

    reset()
    p, msg = hub.file("hf://test/cut/big.bin")
    local s = stats()
    t.ok(p and sha(p) == sha(tmp .. "/files/test/cut/big.bin"), "connection reset half-way: the download resumes and the file matches", msg)
    t.ok(s["cdn.range"] == 1 and s["cdn.range_start"] > 0, "resumed with Range from byte " .. tostring(s["cdn.range_start"]))
    t.eq(s["cdn.authorization"], nil, "HF_TOKEN not sent to the CDN the endpoint redirects to")
    t.ok((s["hf.authorization"] or 0) == s["hf.resolve"], "HF_TOKEN sent to the endpoint")
    t.eq(s["hf.x-api-key"], nil, "no Neuronpedia key to Hugging Face")

    local before = #files_under(hf_cache .. "/models--fault--wrongsha/blobs", "*")
    p, msg, code = hub.file("hf://fault/wrongsha/big.bin")
    t.ok(p == nil and code == "CHECKSUM" and msg:find("sha256", 1, true), "LFS file with a wrong sha256 -> CHECKSUM", msg)
    p, msg, code = hub.file("hf://fault/wrongsha/config.json")
    t.ok(p == nil and code == "CHECKSUM" and msg:find("git blob sha1", 1, true), "git file with a wrong ETag -> CHECKSUM", msg)
    t.eq(#files_under(hf_cache .. "/models--fault--wrongsha/blobs", "*") - before, 0, "nothing kept in blobs/ (no .incomplete either)")
    t.eq(#files_under(hf_cache .. "/models--fault--wrongsha/snapshots", "*.bin"), 0, "no snapshot entry")

    -- a partial file of garbage where the server ignores Range: started again from byte 0
    p = hub.file("hf://test/norange/big.bin")
    local blob = sh("readlink -f " .. p):gsub("%s+$", "")
    os.remove(blob)
    os.remove(p)
    local f = io.open(blob .. ".incomplete", "wb") f:write(string.rep("x", 1000)) f:close()
    p, msg = hub.file("hf://test/norange/big.bin")
    t.ok(p and sha(p) == sha(tmp .. "/files/test/norange/big.bin"), "Range ignored: the partial file is replaced and the result matches", msg)

    p, msg, code = hub.file("hf://test/plain/missing.json")
    t.ok(p == nil and code == "NOT_FOUND" and msg:find("EntryNotFound", 1, true), "missing file -> NOT_FOUND (EntryNotFound)", msg)
    p, msg, code = hub.file("hf://nobody/none/x.json")
    t.ok(p == nil and code == "HTTP" and msg:find("RepoNotFound", 1, true) and msg:find("HF_TOKEN", 1, true),
         "missing repository -> HTTP 401 RepoNotFound, naming the token", msg)
  end},
  {"a progress bar on a terminal", function()
    local path = string.format("%s/progress.lua", tmp)
    local f = io.open(path, "w") f:write('print(require("ctrace").hub.file("hf://test/norange/big.bin"))') f:close()
    -- script(1) gives the child a terminal
    local out = sh(string.format("HF_HUB_CACHE=%s/pb script -qfec '%s %s' /dev/null 2>&1", tmp, ctrace_bin, path))
    t.ok(out:find("hf://test/norange/big.bin  8.0 / 8.0 MB  100%", 1, true), "name, MB done of total, percent", out:sub(1, 300))
  end},
  {"kill -9 half-way: the cache stays clean and the next run resumes", function()
    local pid, out = child('print(require("ctrace").hub.file("hf://test/slow/big.bin"))', true)
    local dir = hf_cache .. "/models--test--slow/blobs"
    local part
    for _ = 1, 100 do
      part = files_under(dir, "*.incomplete")[1]
      if part and size(part) > 1000000 then break end
      os.execute("sleep 0.1")
    end
    os.execute("kill -9 " .. pid)
    os.execute("sleep 0.2")
    local n = size(part or "")
    t.ok(n > 1000000 and n < 8000000, "killed with " .. n .. " of 8000000 bytes in blobs/<sha256>.incomplete")
    local final = 0
    for _, b in ipairs(files_under(dir, "*")) do final = final + (b:match("/%x+$") and 1 or 0) end
    t.eq(final, 0, "no blob under its final name")
    t.eq(#files_under(hf_cache .. "/models--test--slow/snapshots", "big.bin"), 0, "no snapshot entry")
    reset()
    local p, msg = hub.file("hf://test/slow/big.bin")
    local s = stats()
    t.ok(p and sha(p) == sha(tmp .. "/files/test/slow/big.bin"), "the next run finishes the file and it matches", msg)
    t.ok(s["cdn.range_start"] and s["cdn.range_start"] >= n, "it resumed from byte " .. tostring(s["cdn.range_start"]))
  end},
  {"two processes fetching one file at once", function()
    local blob_dir = hf_cache .. "/models--test--cut/blobs"
    for _, b in ipairs(files_under(blob_dir, "*")) do os.remove(b) end
    os.execute("rm -rf " .. hf_cache .. "/models--test--cut/snapshots")
    local code = 'local p, m = require("ctrace").hub.file("hf://test/cut/big.bin") print(p and require("ctrace").sha256(p) or m) print("DONE")'
    local a, oa = child(code, true)
    local b, ob = child(code, true)
    local t0 = ct.clock()   -- wait for both to print (an orphan's exit is reaped late)
    while ct.clock() - t0 < 30 and not (sh("cat " .. oa):find("DONE") and sh("cat " .. ob):find("DONE")) do os.execute("sleep 0.1") end
    local want = sha(tmp .. "/files/test/cut/big.bin")
    t.ok(sh("cat " .. oa):find(want, 1, true) and sh("cat " .. ob):find(want, 1, true), "both get the whole file",
         sh("cat " .. oa) .. sh("cat " .. ob))
    t.eq(#files_under(blob_dir, "*"), 1, "one blob, no leftovers")
  end},
  {"Ctrl-C stops a request in flight", function()
    local pid, out = child([[
      local ct = require "ctrace"
      ct.neuronpedia.configure{timeout = 20, cache = false}
      io.write("READY\n") io.stdout:flush()
      local f, msg, code = ct.neuronpedia.feature("fault-slow", "0-x", 7)
      print(code)
    ]], true)
    local w = ct.clock()
    while ct.clock() - w < 20 and not sh("cat " .. out):find("READY", 1, true) do os.execute("sleep 0.05") end
    os.execute("sleep 0.5")
    local t0 = ct.clock()
    os.execute("kill -INT " .. pid)
    local text = ""
    while ct.clock() - t0 < 5 and not text:find("CANCELLED", 1, true) do   -- (an orphan's exit is reaped late: watch its output)
      os.execute("sleep 0.02")
      text = sh("cat " .. out)
    end
    local dt = ct.clock() - t0
    t.ok(dt < 2 and text:find("CANCELLED: interrupted", 1, true),
         string.format("SIGINT 0.5 s into a 3 s response: the request stops and the script ends %.2f s later", dt), text)
  end},
  {"offline: answers from the cache, never touches the network, says what is missing", function()
    reset()
    local r = child([[
      local h, np = require("ctrace").hub, require("ctrace").neuronpedia
      print(h.file("hf://test/plain/config.json"))
      print(h.file("hf://test/plain/never.json"))
      print(np.feature("gemma-2-2b", "18-gemmascope-transcoder-16k", 7731).label)
      print(np.feature("gemma-2-2b", "18-gemmascope-transcoder-16k", 7732))
    ]], false, "HF_HUB_OFFLINE=1")
    t.ok(r:find("/snapshots/0123456789abcdef0123456789abcdef01234567/config.json", 1, true), "HF_HUB_OFFLINE=1: a cached file", r)
    t.ok(r:find("OFFLINE", 1, true) and r:find("hf://test/plain/never.json is not in the Hugging Face cache", 1, true),
         "HF_HUB_OFFLINE=1: a missing file -> OFFLINE, naming it", r)
    t.ok(r:find("rivers and waterways in France", 1, true) and r:find("7732 is not in the cache", 1, true),
         "HF_HUB_OFFLINE=1: Neuronpedia labels from the cache; a miss -> OFFLINE", r)
    local s = stats()
    t.ok(s["hf.resolve"] == nil and s["np.get"] == nil and s["cdn.get"] == nil, "the offline process sent no request")
  end},
  {"hf:// entries of a local config.yaml use the hub settings of the Lua state", function()
    -- a local set whose config.yaml lists its layer files as hf:// addresses on the test server
    local dir = tmp .. "/localset"
    os.execute("mkdir -p " .. dir .. " && cp " .. tmp .. "/files/test/scope-tiny/config.yaml " .. dir .. "/")
    local load = 'local ok, e = pcall(require("ctrace").load_transcoders, "' .. dir .. '") print(ok and ("LAYERS " .. e.n_layers) or e)'
    -- offline configured in Lua, with the environment pointing at the server: OFFLINE, no request
    reset()
    local r = child('require("ctrace").hub.configure{offline = true}\n' .. load, false, "HF_HUB_CACHE=" .. tmp .. "/hub-a")
    local s = stats()
    t.ok(r:find("OFFLINE", 1, true) and r:find("hf://test/scope-tiny/", 1, true), "configure{offline = true}: OFFLINE naming the file", r)
    t.ok(s["hf.resolve"] == nil and s["cdn.get"] == nil, "and no request reached the server")
    -- the server configured in Lua, the environment's endpoint unreachable: the files come from the server
    reset()
    r = child('require("ctrace").hub.configure{url = "' .. base .. '/hf"}\n' .. load, false,
              "HF_HUB_CACHE=" .. tmp .. "/hub-b HF_ENDPOINT=http://127.0.0.1:1")
    s = stats()
    t.ok(r:find("LAYERS 2", 1, true), "configure{url = ...}: the set loads from the configured server", r)
    t.ok((s["hf.resolve"] or 0) >= 2, "the server answered its requests (" .. tostring(s["hf.resolve"]) .. ")")
  end},
  {"keys are never written to disk or into messages", function()
    local found = sh("grep -rl -e np-secret-key -e hf-secret-token " .. tmp .. "/cache " .. tmp .. "/hf 2>/dev/null")
    t.eq(found, "", "no key in either cache")
    local _, msg = hub.file("hf://nobody/none/x.json")
    local _, msg2 = np.feature("fault-always500", "0-x", 1)
    t.ok(not msg:find("hf-secret-token", 1, true) and not msg2:find("np-secret-key", 1, true), "no key in error messages")
  end},
  {"huggingface_hub's own cache entries are read", function()
    -- a cache entry laid out by huggingface_hub: refs/main, blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>
    local d = hf_cache .. "/models--py--made"
    local commit = string.rep("ab", 20)
    os.execute(string.format("mkdir -p %s/refs %s/blobs %s/snapshots/%s/sub && printf %s > %s/refs/main && printf hello > %s/blobs/h1 && " ..
                             "ln -s ../../../blobs/h1 %s/snapshots/%s/sub/file.txt", d, d, d, commit, commit, d, d, d, commit))
    local p, msg = hub.cached("hf://py/made/sub/file.txt")
    t.ok(p and sh("cat " .. p) == "hello", "hub.cached finds a file huggingface_hub downloaded", msg)
    p = hub.cached("hf://py/made/sub/file.txt?revision=" .. commit)
    t.ok(p ~= nil, "and by commit")
  end},
  {"models and transcoder sets from repositories", function()
    local dir = hub.default_model()
    t.ok(dir:find("models--karpathy--tinyllamas/snapshots/", 1, true), "stories260K from karpathy/tinyllamas, hashes checked")
    local m = ct.load_model(dir)
    local f = io.open(t.shared .. "/stories260K/greedy_200.txt", "rb")
    local want = f:read("*a") f:close()
    t.eq(m:generate("", {max_tokens = 200, temperature = 0}), want, "the downloaded model prints greedy_200.txt")
    -- a project with no ../shared beside it: load_model("stories260K") downloads the model
    os.execute(string.format("mkdir -p %s/lone && cp -r %s/lua %s/lone/", tmp, ct.root, tmp))
    local r = child('print(require("ctrace").load_model("stories260K"):generate("", {max_tokens = 200, temperature = 0}))', false,
                    string.format("CTRACE_ROOT=%s/lone CTRACE_MODELS= HF_HUB_CACHE=%s/lone-hub", tmp, tmp))
    t.eq(r, want .. "\n", "no ../shared: load_model(\"stories260K\") downloads it into the hub cache and it prints greedy_200.txt")
    t.raises(function() hub.pinned{repo = "karpathy/tinyllamas", files = {{"stories260K/tok512.bin", string.rep("0", 64)}}} end,
             "CHECKSUM", "a pinned file with another hash is refused")
    local gm = ct.load_model("test/gemma-tiny")
    t.eq(gm:config().architecture, "Gemma2ForCausalLM", "org/repo id: config, tokenizer and weights fetched, model loads")
    local tok = ct.load_tokenizer("test/gemma-tiny")
    t.eq(tok:vocab_size(), gm:tokenizer():vocab_size(), "org/repo tokenizer: its tokenizer.json")
    local other = tmp .. "/other-hub"
    local r = child('print(require("ctrace").hub.file("hf://test/plain/config.json"))', false, "HF_HUB_CACHE=" .. other)
    t.ok(r:find(other .. "/models--test--plain/snapshots/", 1, true), "HF_HUB_CACHE chooses the cache directory", r)
    local tc = ct.load_transcoders("hf://test/scope-tiny/config.yaml")
    t.eq(tc.n_layers, 2, "hf:// transcoder config whose list names hf:// files")
    t.eq(ct.load_transcoders("test/scope-tiny").n_layers, 2, "a transcoder set by repository id (circuit-tracer's form)")
    t.eq(ct.load_transcoders("test/scope-tiny@main").n_layers, 2, "... with @revision")
    local ids = np.source_of(tc)
    t.ok(ids and ids.model_id == "gemma-2-2b" and ids.source_set == "gemmascope-transcoder-16k", "Neuronpedia ids from the set's config")
  end},
  {"labels fill graph nodes and the JSON's clerp", function()
    local m = ct.load_model("stories260K")
    local tc = ct.load_transcoders("stories260K")
    local rm = ct.replacement_model(m, tc)
    local g = rm:attribute("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
                           {max_feature_nodes = 1500, verbose = false})
    local src = labels.neuronpedia{model_id = "stories260K", source_set = "ctrace-tc"}
    np.configure{cache = false}
    reset()
    local t0 = ct.clock()
    local r = g:label(src)
    local dt, s = ct.clock() - t0, stats()
    np.configure{cache = true}
    io.write(string.format("# graph labels: %d features of %d nodes, %d batch requests, %d at once, %.3f s\n",
                           r.features, r.labelled + r.missing, r.requests, s.max_inflight, dt))
    t.ok(r.features >= 500 and r.requests == math.ceil(r.features / 128) and s["np.batch"] == r.requests and s.max_inflight >= 2,
         string.format("a graph's %d distinct features labelled through %d concurrent batch requests", r.features, r.requests))
    t.ok(r.labelled > 0 and r.missing > 0, string.format("%d nodes labelled; %d without (features whose explanation list is empty)",
         r.labelled, r.missing))
    local n = g:nodes("feature")[1]
    local want = (n.feature % 10 == 3) and nil or string.format("%d-ctrace-tc feature %d", n.layer, n.feature)
    t.eq(n.label, want, "node label from Neuronpedia")
    local path = tmp .. "/g.json"
    g:save_json(path, {slug = "labelled", scan = "stories260K", viewer = false})
    local j = ct.json_decode(sh("cat " .. path))
    local found = 0
    for _, node in ipairs(j.nodes) do
      if node.feature_type == "cross layer transcoder" and node.clerp:find("-ctrace-tc feature ", 1, true) then found = found + 1 end
    end
    t.ok(found > 0, found .. " feature nodes with their label as clerp in the graph JSON")
    local lf = tmp .. "/labels.json"
    local fh = io.open(lf, "w") fh:write(string.format('{"%d_%d": "hand-written"}', n.layer, n.feature)) fh:close()
    r = g:label(labels.file(lf))
    t.ok(g:nodes("feature")[1].label == "hand-written" and r.labelled >= 1, "a hand-written labels file")
    t.raises(function() labels.file(tmp .. "/nope.json") end, "NOT_FOUND", "missing labels file")
    local dash = require "ctrace.dashboards"
    local d = dash.load(ct.root .. "/" .. ct.default_transcoders.stories260K)
    r = g:label(labels.dashboards(m, d))
    local first = g:nodes("feature")[1]
    t.ok(r.labelled == #g:nodes("feature") and first.label == dash.feature(d, m, first.layer, first.feature).label,
         "local dashboards as a label source: every node labelled")
    t.raises(function() labels.neuronpedia(tc) end, "no Neuronpedia ids", "a set Neuronpedia does not cover")
  end},
}
t.done()
