-- heliostat: fallback model (see heliostat/xds/translate/prefix_key.py)

-- A session (or request id) hashes into one of BUCKETS buckets; a share s moves the first
-- s * BUCKETS of them.
local BUCKETS = 10000

-- A polynomial hash of the key, then three Lehmer steps: keys that differ in their last
-- character (session-1, session-2, ...) would otherwise land in neighbouring buckets.
-- Every product stays below 2^53, exact in Lua's doubles.
local function bucket(key)
  local a = 0
  for i = 1, #key do a = (a * 31 + string.byte(key, i)) % 2147483647 end
  for _ = 1, 3 do a = (a * 48271) % 2147483647 end
  return a % BUCKETS
end

local function falls_back(headers, fallback)
  local share = tonumber(fallback.share) or 0
  if share <= 0 then return false end
  local key = headers:get(fallback.session_header)
  if key == nil then key = headers:get("x-request-id") end
  if key == nil then return math.random() < share end
  return bucket(key) < share * BUCKETS
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
