-- ctrace.sandbox - inside the experiment process of a sandboxed `ctrace run` (host_run.c loads it
-- before the script): that process has no network and no secrets, so Hugging Face downloads and
-- Neuronpedia requests go to the parent, which makes them with its own settings (endpoints,
-- tokens, caches) and answers. The settings cannot change during the run.
--
-- A request: {call = name, args = {{v = arg1}, {v = arg2}, ...}} (a box per argument, so nil
-- survives JSON); the answer: {results = {{v = r1}, ...}} or {error = message}.
local core = require "ctrace.core"

local M = {forwarded = {"np_feature", "np_features", "np_search", "np_graph", "hub_file", "hub_cached", "hub_snapshot"}}

-- Replaces ctrace.core's network functions by requests to the parent (in the experiment process).
function M.install()
  for _, name in ipairs(M.forwarded) do
    core[name] = function(...)
      local args = {}
      for i = 1, select("#", ...) do args[i] = {v = (select(i, ...))} end
      local reply = core.json_decode(core.broker(core.json_encode({call = name, args = args})))
      if reply.error then error(reply.error, 2) end
      local out = {}
      for i, box in ipairs(reply.results) do out[i] = box.v end
      return unpack(out, 1, #reply.results)
    end
  end
  core.net_configure = function()
    error("BAD_ARG: network settings cannot change during ctrace run (the parent's environment sets them: "
          .. "HF_ENDPOINT, CTRACE_NEURONPEDIA_URL, ...)", 2)
  end
end

return M
