function envoy_on_request(handle)
  local meta = handle:metadata()
  local fallback = meta:get("fallback")
  local chars = meta:get("prefix_chars")
  if fallback == nil and chars == nil then return end
  local session_header, key_header = meta:get("session_header"), meta:get("key_header")
  local headers = handle:headers()
  local moved = fallback ~= nil and falls_back(headers, fallback)
  if moved then
    headers:replace(fallback.model_header, fallback.model)
    headers:replace(fallback.from_header, fallback.from)
    handle:clearRouteCache()
    -- the fallback's own prefix key, if it hashes on one
    chars, session_header, key_header =
      fallback.prefix_chars, fallback.prefix_session_header, fallback.key_header
  end
  local wants_key = false
  if chars ~= nil then
    headers:remove(key_header)
    wants_key = headers:get(session_header) == nil
  end
  if not moved and not wants_key then return end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local raw = body:getBytes(0, body:length())
  if moved then
    local rewritten = with_model(raw, fallback.model)
    if rewritten ~= nil then
      body:setBytes(rewritten)  -- Envoy updates content-length
      raw = rewritten
    end
  end
  if not wants_key then return end
  local ok, parsed = pcall(function()
    local value = parse_value(raw, skip(raw, 1))
    return value
  end)
  if not ok or type(parsed) ~= "table" then return end
  local text = prompt_text(parsed)
  if text == nil or text == "" then return end
  -- body() yielded: handles taken before it are out of scope, take the headers again.
  handle:headers():replace(key_header, digest(first_chars(text, chars)))
end
