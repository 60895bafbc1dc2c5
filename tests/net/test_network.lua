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
    -- a slow server (about 2 MB/s): the rate and the time left
    f = io.open(path, "w") f:write('print(require("ctrace").hub.file("hf://test/slow/big.bin"))') f:close()
    out = sh(string.format("HF_HUB_CACHE=%s/pb2 script -qfec '%s %s' /dev/null 2>&1", tmp, ctrace_bin, path))
    local mbs, left = out:match("hf://test/slow/big%.bin  [%d.]+ / 8%.0 MB +%d+%%  ([%d.]+) MB/s  (%d+) s left")
    t.ok(mbs and tonumber(mbs) > 0.3 and tonumber(mbs) < 20 and tonumber(left) < 30,
         "a slow download shows its rate and time left (" .. tostring(mbs) .. " MB/s, " .. tostring(left) .. " s left)",
         out:sub(1, 300))
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
    -- an instruction-tuned Gemma-3 by repository id: its chat template comes with it, and the
    -- replacement model holds <bos><start_of_turn>user\n constant (the hub name ends in -it)
    local g3 = ct.load_model("test/gemma-3-tiny-it")
    local ids = g3:apply_chat_template({{role = "user", content = "Hi"}}, {add_generation_prompt = true})
    t.eq(table.concat(ids, " "), "2 105 2364 107 10979 106 107 105 4368 107", "the chat template fetched with the model")
    local rm3 = ct.replacement_model(g3, ct.load_transcoders(tmp .. "/gen/g3/transcoders"))
    t.eq(rm3:constant_positions(), 4, "test/gemma-3-tiny-it: 4 constant positions (its name, from the hub cache path)")
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
  {"published names: each into a fresh cache from the loopback hub, then offline from that cache", function()
    local files = tmp .. "/files"
    -- what each load prints: for a set its kind, shape, hooks and a fingerprint of encoder and decoder
    -- rows, then its scan; for a model its family and 6 greedy tokens
    local prelude = [[
local ct = require "ctrace"
ct.hub.configure{progress = false}
local function rows(t) local s = 0 for i = 1, #t do s = s + t[i] * i end return string.format("%.9g", s) end
function tc_summary(tc)
  local out = {tc.kind, tc.n_layers, tc.d_model, tc.feature_input_hook, tc.feature_output_hook}
  for l = 0, tc.n_layers - 1 do
    for f = 0, 3 do
      out[#out + 1] = rows(tc:encoder_row(l, f)) .. "/" .. rows(tc:decoder_row(l, f, tc.kind == "clt" and tc.n_layers - 1 or l))
    end
  end
  return table.concat(out, " ")
end
function model_summary(m) return m:config().architecture .. " " .. m:generate("", {max_tokens = 6, temperature = 0}) end
]]
    assert(load(prelude))()
    local ref = {
      model = model_summary(ct.load_model(tmp .. "/gen/gemma-2-2b")),   -- the same weights in one file
      npz = tc_summary(ct.load_transcoders(tmp .. "/gen/gemma-scope")),   -- the same npz files, local
      gemma = tc_summary(ct.load_transcoders(files .. "/mwhanna/gemma-scope-transcoders")),
      clt = tc_summary(ct.load_transcoders(files .. "/mntss/clt-gemma-2-2b-426k")),
      llama = tc_summary(ct.load_transcoders(files .. "/mntss/transcoder-Llama-3.2-1B")),
      gs2 = tc_summary(ct.load_transcoders(files .. "/mwhanna/gemma-scope-2-1b-it/transcoder_all/width_16k_l0_small_affine")),
      wide = tc_summary(ct.load_transcoders(files .. "/test/wide")),
    }
    local M_GEMMA = {"models--google--gemma-2-2b/config.json", "models--google--gemma-2-2b/model-00001-of-00002.safetensors",
                     "models--google--gemma-2-2b/model-00002-of-00002.safetensors",
                     "models--google--gemma-2-2b/model.safetensors.index.json", "models--google--gemma-2-2b/tokenizer.json"}
    local function set_files(repo, names)
      local out = {}
      for i, n in ipairs(names) do out[i] = "models--" .. repo:gsub("/", "--") .. "/" .. n end
      return out
    end
    local CLT = set_files("mntss/clt-gemma-2-2b-426k", {"W_dec_0.safetensors", "W_dec_1.safetensors", "W_enc_0.safetensors",
                                                         "W_enc_1.safetensors", "config.yaml"})
    local LLAMA = set_files("mntss/transcoder-Llama-3.2-1B", {"config.yaml", "layer_0.safetensors", "layer_1.safetensors"})
    local GS2 = set_files("mwhanna/gemma-scope-2-1b-it", {"transcoder_all/width_16k_l0_small_affine/config.yaml",
                                                          "transcoder_all/width_16k_l0_small_affine/layer_0.safetensors",
                                                          "transcoder_all/width_16k_l0_small_affine/layer_1.safetensors"})
    local forms = {
      -- name, what (load_model or load_transcoders), reference, scan, the snapshot's files, API requests
      -- {revision endpoint, tree pages}
      {"google/gemma-2-2b", "model", ref.model, nil, M_GEMMA, {1, 0}},   -- the shards at its commit: no second listing
      {"gemma", "tc", ref.gemma, "mwhanna/gemma-scope-transcoders",
       set_files("mwhanna/gemma-scope-transcoders", {"config.yaml", "layer_0.safetensors", "layer_1.safetensors"}), {1, 0}},
      {"mntss/clt-gemma-2-2b-426k", "tc", ref.clt, "mntss/clt-gemma-2-2b-426k", CLT, {1, 0}},
      {"hf://mntss/clt-gemma-2-2b-426k?revision=v2", "tc", ref.clt, "mntss/clt-gemma-2-2b-426k@v2", CLT, {1, 0}},
      {"mntss/transcoder-Llama-3.2-1B", "tc", ref.llama, "mntss/transcoder-Llama-3.2-1B", LLAMA, {1, 0}},
      {"llama", "tc", ref.llama, "mntss/transcoder-Llama-3.2-1B", LLAMA, {1, 0}},
      {"mwhanna/gemma-scope-2-1b-it/transcoder_all/width_16k_l0_small_affine", "tc", ref.gs2,
       "mwhanna/gemma-scope-2-1b-it//transcoder_all/width_16k_l0_small_affine", GS2, {1, 0}},
      {"mwhanna/gemma-scope-2-1b-it//transcoder_all/width_16k_l0_small_affine@v1", "tc", ref.gs2,
       "mwhanna/gemma-scope-2-1b-it//transcoder_all/width_16k_l0_small_affine@v1", GS2, {1, 0}},
      {"hf://mwhanna/gemma-scope-2-1b-it/transcoder_all/width_16k_l0_small_affine/config.yaml", "tc", ref.gs2,
       "mwhanna/gemma-scope-2-1b-it//transcoder_all/width_16k_l0_small_affine", GS2, {1, 0}},
      {"test/wide", "tc", ref.wide, "test/wide", set_files("test/wide", {"config.yaml", "layer_0.safetensors", "layer_1.safetensors"}),
       {1, 3}},   -- 2,503 siblings: the root in three pages of 1,000
      {"mntss/gemma-scope-transcoders", "tc", ref.npz, "mntss/gemma-scope-transcoders",
       {"models--google--gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76/params.npz",
        "models--google--gemma-scope-2b-pt-transcoders/layer_1/width_16k/average_l0_65/params.npz",
        "models--mntss--gemma-scope-transcoders/config.yaml"}, {1, 1}},   -- 1,101 siblings: the root by the tree API
    }
    for i, f in ipairs(forms) do
      local name, what, want, scan, want_files, api = f[1], f[2], f[3], f[4], f[5], f[6]
      local cache = string.format("%s/fresh%d", tmp, i)
      local code = prelude .. (what == "model" and string.format("print(model_summary(ct.load_model(%q)))", name)
                               or string.format("local tc = ct.load_transcoders(%q) print(tc_summary(tc)) print(tc.scan)", name))
      reset()
      local out = child(code, false, "HF_HUB_CACHE=" .. cache)
      local s = stats()
      local want_out = want .. "\n" .. (scan and (scan .. "\n") or "")
      t.eq(out, want_out, name .. ": loads from the hub into a fresh cache and equals the local copy" .. (scan and (", scan " .. scan) or ""))
      t.ok((s["hf.api.revision"] or 0) == api[1] and (s["hf.api.tree"] or 0) == api[2],
           string.format("%s: %d revision request(s), %d tree page(s)", name, api[1], api[2]),
           string.format("got %s and %s", tostring(s["hf.api.revision"]), tostring(s["hf.api.tree"])))
      local got, same = {}, true
      for line in sh("cd " .. cache .. " && find . -path '*/snapshots/*' \\( -type f -o -type l \\) | sort"):gmatch("[^\n]+") do
        local repo, rest = line:match("^%./models%-%-([^/]+)/snapshots/%x+/(.+)$")
        got[#got + 1] = "models--" .. repo .. "/" .. rest
        local org, rname = repo:match("^(.-)%-%-(.+)$")
        same = same and sha(cache .. "/" .. line:sub(3)) == sha(files .. "/" .. org .. "/" .. rname .. "/" .. rest)
      end
      table.sort(want_files)
      t.eq(table.concat(got, " "), table.concat(want_files, " "), name .. ": only the files it needs are fetched")
      t.ok(same and #got > 0, name .. ": each cached file is byte for byte the served one")
      reset()
      local again = child(code, false, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" .. cache)
      s = stats()
      t.eq(again, want_out, name .. ": HF_HUB_OFFLINE=1 loads the same from the cache")
      t.ok(s["hf.api.revision"] == nil and s["hf.resolve"] == nil and s["hf.api.tree"] == nil and s["cdn.get"] == nil,
           name .. ": offline, no request reached the server")
    end
    -- refs: the branch and the tag as huggingface_hub records them
    t.eq(sh("cat " .. tmp .. "/fresh4/models--mntss--clt-gemma-2-2b-426k/refs/v2"), sh("printf v2 | sha1sum"):sub(1, 40),
         "refs/v2 holds the commit the revision endpoint named")
    -- the model and a set through a replacement model, both by name
    local r = child(prelude .. [[
local rm = ct.replacement_model(ct.load_model("google/gemma-2-2b"), ct.load_transcoders("mntss/clt-gemma-2-2b-426k"))
local g = rm:attribute("Hello world", {max_feature_nodes = 16, verbose = false})
print("GRAPH", #g:nodes("feature") > 0)]], false, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" .. tmp .. "/fresh1")
    t.ok(r:find("OFFLINE", 1, true), "a cache holding the model only: the set is OFFLINE, named", r:sub(1, 300))
    os.execute(string.format("cp -r %s/fresh3/models--mntss--clt-gemma-2-2b-426k %s/fresh1/", tmp, tmp))
    r = child(prelude .. [[
local rm = ct.replacement_model(ct.load_model("google/gemma-2-2b"), ct.load_transcoders("mntss/clt-gemma-2-2b-426k"))
local g = rm:attribute("Hello world", {max_feature_nodes = 16, verbose = false})
print("GRAPH", #g:nodes("feature") > 0)]], false, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" .. tmp .. "/fresh1")
    t.ok(r:find("GRAPH\ttrue", 1, true), "google/gemma-2-2b with mntss/clt-gemma-2-2b-426k, both by name: an attribution graph", r:sub(1, 300))
  end},
  {"snapshots: an interrupted one, huggingface_hub's listings, an unreachable endpoint, bad names", function()
    local cache = tmp .. "/fresh3"
    local snapdir = sh("ls -d " .. cache .. "/models--mntss--clt-gemma-2-2b-426k/snapshots/0123*"):gsub("%s+$", "")
    os.remove(snapdir .. "/W_dec_1.safetensors")
    local load = 'local ok, e = pcall(require("ctrace").load_transcoders, "mntss/clt-gemma-2-2b-426k") print(ok and ("LAYERS " .. e.n_layers) or e)'
    local r = child(load, false, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=" .. cache)
    t.ok(r:find("OFFLINE", 1, true) and r:find("lacks 1 of its 4 files (W_dec_1.safetensors)", 1, true),
         "a snapshot missing a file, offline: OFFLINE naming the file (the recorded listing says what belongs)", r)
    reset()
    r = child(load, false, "HF_HUB_CACHE=" .. cache)
    local s = stats()
    t.ok(r:find("LAYERS 2", 1, true) and s["cdn.get"] == nil and s["hf.resolve"] == 1,
         "online: the missing file is linked again from its cached blob (one HEAD, no download)", r)
    -- the endpoint unreachable: the cached snapshot, with a note; a repository not cached: NETWORK
    r = child(load, false, "HF_ENDPOINT=http://127.0.0.1:1 HF_HUB_CACHE=" .. cache)
    t.ok(r:find("LAYERS 2", 1, true) and r:find("using the cached snapshot", 1, true), "endpoint unreachable: the cached snapshot, said on stderr", r)
    r = child('print(require("ctrace").hub.snapshot("test/wide", {"layer_*.safetensors"}))', false,
              "HF_ENDPOINT=http://127.0.0.1:1 HF_HUB_CACHE=" .. cache)
    t.ok(r:find("nil", 1, true) and r:find("NETWORK", 1, true) and r:find("no snapshot of it either", 1, true),
         "endpoint unreachable, nothing cached: NETWORK, saying so", r)
    -- a cache huggingface_hub wrote: refs/main, snapshots, and trees/<commit>.json listing the commit's files
    local d, c = hf_cache .. "/models--py--snap", string.rep("cd", 20)
    os.execute(string.format("mkdir -p %s/refs %s/blobs %s/trees %s/snapshots/%s/sub && printf %s > %s/refs/main && printf one > %s/blobs/b1 && " ..
                             "ln -s ../../../blobs/b1 %s/snapshots/%s/sub/layer_0.safetensors", d, d, d, d, c, c, d, d, d, c))
    local f = io.open(d .. "/trees/" .. c .. ".json", "w")
    f:write('{"format_version": 1, "files": {"sub/layer_0.safetensors": {"size": 3, "blob_id": "x"}, ' ..
            '"sub/layer_1.safetensors": {"size": 3, "blob_id": "y"}, "README.md": {"size": 1, "blob_id": "z"}}}')
    f:close()
    r = child('print(require("ctrace").hub.snapshot("py/snap", {"sub/layer_*.safetensors"}))', false, "HF_HUB_OFFLINE=1")
    t.ok(r:find("OFFLINE", 1, true) and r:find("(sub/layer_1.safetensors)", 1, true),
         "huggingface_hub's trees/<commit>.json: offline, the file it lists and the cache lacks is named", r)
    os.execute(string.format("ln -s ../../../blobs/b1 %s/snapshots/%s/sub/layer_1.safetensors", d, c))
    local dir, got, commit = hub.snapshot("py/snap", {"sub/layer_*.safetensors"})
    t.ok(dir == nil, "online, py/snap is no repository of the server's", got)
    hub.configure{offline = true}
    dir, got, commit = hub.snapshot("py/snap", {"sub/layer_*.safetensors"})
    hub.configure{offline = false}
    t.ok(dir and #got == 2 and got[2] == "sub/layer_1.safetensors" and commit == c and dir:find("/snapshots/" .. c, 1, true),
         "offline with the file there: the snapshot directory, both files, the commit", tostring(got))
    -- no listing known (huggingface_hub's cache of hf_hub_download): what is there is taken; nothing there is OFFLINE
    hub.configure{offline = true}
    dir, got = hub.snapshot("py/made", {"sub/*.txt"})
    local none, msg, code = hub.snapshot("py/made", {"sub/*.safetensors"})
    hub.configure{offline = false}
    t.ok(dir and #got == 1 and got[1] == "sub/file.txt", "offline, no listing: the matching files the snapshot holds", tostring(got))
    t.ok(none == nil and code == "OFFLINE" and msg:find("holds no file matching sub/*.safetensors", 1, true),
         "offline, no listing, no match: OFFLINE naming the pattern", msg)
    -- bad names and arguments raise; missing pieces are NOT_FOUND naming them
    t.raises(function() ct.load_transcoders("mntss/clt-gemma-2-2b-426k/../x") end, "without '.' or '..'", "'..' in a set's folder")
    t.raises(function() hub.snapshot("hf://org/repo/file.txt", {"x"}) end, "names a file", "a file where a repository is expected")
    t.raises(function() hub.snapshot("org/repo", {}) end, "1..64 file patterns", "no patterns")
    t.raises(function() hub.snapshot("org/repo", {"a/../b/*.x"}) end, "pattern 'a/../b/*.x'", "'..' in a pattern")
    t.raises(function() hub.file("hf://org/repo") end, "a whole repository is a snapshot's", "hub.file on a repository")
    local ok, e = pcall(ct.load_model, "test/badindex")
    t.ok(not ok and tostring(e):find("NOT_FOUND", 1, true) and tostring(e):find("model-00009-of-00009.safetensors", 1, true),
         "an index naming a shard the repository lacks: NOT_FOUND naming it", e)
    ok, e = pcall(ct.load_model, "test/noweights")
    t.ok(not ok and tostring(e):find("holds neither model.safetensors nor model.safetensors.index.json", 1, true),
         "a repository without weights: NOT_FOUND saying so", e)
    ok, e = pcall(ct.load_transcoders, "test/emptyset")
    t.ok(not ok and tostring(e):find("NOT_FOUND", 1, true) and tostring(e):find("lists no transcoder files", 1, true) and
         tostring(e):find("holds no layer_*.safetensors", 1, true), "a config without a list over a folder without set files: NOT_FOUND", e)
    ok, e = pcall(ct.load_transcoders, "test/wide//nothing/here")
    t.ok(not ok and tostring(e):find("NOT_FOUND", 1, true) and tostring(e):find("nothing/here/config.yaml does not exist", 1, true),
         "a folder that is not there: NOT_FOUND naming its config.yaml", e)
    ok, e = pcall(ct.load_transcoders, "nobody/none")
    t.ok(not ok and tostring(e):find("RepoNotFound", 1, true) and tostring(e):find("HF_TOKEN", 1, true), "a repository that is not there", e)
  end},
  {"ctrace run: names load through the parent, within --download-limit", function()
    local folder = tmp .. "/hubrun"
    os.execute("mkdir -p " .. folder)
    local f = io.open(folder .. "/experiment.lua", "w")
    f:write([[
local ct = require "ctrace"
local m = ct.load_model("google/gemma-2-2b")
local tc = ct.load_transcoders("mntss/clt-gemma-2-2b-426k")
local g = ct.replacement_model(m, tc):attribute("Hello world", {max_feature_nodes = 16, verbose = false})
ct.write_json(ct.results_dir(arg[0]) .. "/out.json", {layers = tc.n_layers, scan = tc.scan, features = #g:nodes("feature")})
]])
    f:close()
    reset()
    local cache = tmp .. "/runcache"
    local out = sh(string.format("HF_HUB_CACHE=%s %s run %s 2>&1; echo EXIT $?", cache, ctrace_bin, folder))
    local s = stats()
    local res = io.open(folder .. "/results/out.json") and ct.json_decode(sh("cat " .. folder .. "/results/out.json"))
    t.ok(out:find("EXIT 0", 1, true) and res and res.layers == 2 and res.scan == "mntss/clt-gemma-2-2b-426k" and res.features > 0,
         "a sandboxed run loads google/gemma-2-2b and mntss/clt-gemma-2-2b-426k by name and attributes", out:sub(-400))
    t.ok((s["hf.api.revision"] or 0) == 2 and (s["cdn.get"] or 0) == 6, "the parent made the listing and download requests", ct.json_encode(s))
    local manifest = ct.json_decode(sh("cat " .. folder .. "/results/manifest.json"))
    local inputs = {}
    for _, i in ipairs(manifest.inputs or {}) do inputs[#inputs + 1] = i.path end
    local all = table.concat(inputs, "\n")
    t.ok(manifest.isolation and manifest.isolation.landlock_abi and all:find("models--mntss--clt-gemma-2-2b-426k/snapshots/", 1, true)
         and all:find("model-00002-of-00002.safetensors", 1, true), "the manifest records the isolation and the snapshot files read")
    -- a budget smaller than the set: refused before any of its files is downloaded
    local small = tmp .. "/runcache-small"
    local f2 = io.open(folder .. "/experiment.lua", "w")
    f2:write('local tc = require("ctrace").load_transcoders("mntss/clt-gemma-2-2b-426k")\n')
    f2:close()
    out = sh(string.format("HF_HUB_CACHE=%s %s run %s --download-limit 0.000001 2>&1; echo EXIT $?", small, ctrace_bin, folder))
    local blobs = #files_under(small .. "/models--mntss--clt-gemma-2-2b-426k/blobs", "*")
    t.ok(not out:find("EXIT 0", 1, true) and out:find("TOO_LARGE", 1, true) and out:find("files still to download hold", 1, true)
         and out:find("download-limit", 1, true) and blobs == 1,
         "--download-limit 1 KiB: config.yaml fetched, the 4 set files refused at once by their announced sizes (" .. blobs .. " blob)",
         out:sub(-600))
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
