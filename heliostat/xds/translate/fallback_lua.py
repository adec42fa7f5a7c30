"""The Lua side of the fallback model: which request moves, and its body's `"model"` rewritten.

A model's routes carry, while the control law gives its view a fallback share, route metadata
`fallback` (under the Lua filter's name): the fallback model, the share, the session header,
and the headers to write (see `fallback.py`). For each request the program:

1. decides: a request with the session header goes by a hash of it into 10,000 buckets, so a
   session stays on one model (and as the share grows, the sessions already moved stay
   moved); one without goes by a hash of Envoy's `x-request-id` (a UUID per request), and,
   should even that be missing, by `math.random`;
2. when it moves: replaces `x-model` with the fallback's name (header routes come before body
   routes, so a request routed by its body's model moves too), adds
   `x-heliostat-fallback-from`, and clears the route cache: Envoy routes it again, to the
   fallback model's own routes (its clusters, versions, tenant pinning, batch class and
   streaming rules, and its `x-heliostat-served-model`);
3. rewrites the top-level `"model"` of a JSON body to the fallback's name (a model server
   answers 404 to a model it does not serve); Envoy adjusts content-length. Other bytes of
   the body are left exactly as they were.

A request is moved at most once: the program runs once per request, and the fallback's own
routes' metadata is not read again. The functions use the JSON parser of `prefix_key.py`,
whose text comes first in the program.
"""

from __future__ import annotations

BUCKETS = 10_000

FALLBACK_FUNCTIONS = r"""
-- heliostat: fallback model (see heliostat/xds/translate/fallback_lua.py)

-- A polynomial hash of the key, then three Lehmer steps: keys that differ in their last
-- character (session-1, session-2, ...) would otherwise land in neighbouring buckets.
-- Every product stays below 2^53, exact in Lua's doubles.
local function bucket(key)
  local a = 0
  for i = 1, #key do a = (a * 31 + string.byte(key, i)) % 2147483647 end
  for _ = 1, 3 do a = (a * 48271) % 2147483647 end
  return a % 10000
end

local function falls_back(headers, fallback)
  local share = tonumber(fallback.share) or 0
  if share <= 0 then return false end
  local key = headers:get(fallback.session_header)
  if key == nil then key = headers:get("x-request-id") end
  if key == nil then return math.random() < share end
  return bucket(key) < share * 10000
end

-- Where the top-level "model" string of a JSON object starts and ends (one past), or nil.
local function model_span(s)
  local i = skip(s, 1)
  if string.sub(s, i, i) ~= "{" then return nil end
  i = skip(s, i + 1)
  while string.sub(s, i, i) == '"' do
    local key
    key, i = parse_string(s, i)
    i = skip(s, i)
    if string.sub(s, i, i) ~= ":" then return nil end
    local start = skip(s, i + 1)
    local value, finish = parse_value(s, start)
    if key == "model" and type(value) == "string" then return start, finish end
    i = skip(s, finish)
    if string.sub(s, i, i) ~= "," then return nil end
    i = skip(s, i + 1)
  end
  return nil
end

-- The body with its top-level "model" replaced by `model`, or nil to leave it as it is.
local function with_model(raw, model)
  local ok, start, finish = pcall(model_span, raw)
  if not ok or start == nil then return nil end
  return string.sub(raw, 1, start - 1) .. '"' .. model .. '"' .. string.sub(raw, finish)
end
"""
