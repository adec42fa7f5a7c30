"""The listener's Lua program: prefix keys (`affinity.prefix_chars`) and fallback moves.

Envoy's hash policies read headers, not bodies. For clients that send no session header, this
program (Envoy's Lua HTTP filter, one copy per listener) reads the OpenAI body, takes the
first N characters of `prompt` (or of the chat messages' contents, joined by newlines) and
writes a digest of them into a header the route hashes on; requests that share a long system
prompt then land on the replica whose prefix cache holds it.

It acts only on routes whose metadata (under the filter's name) carries `prefix_chars`,
`session_header` and `key_header`, so other routes never buffer their bodies here, and only
when the session header is absent (a session key wins). A client-sent key header is removed
first. Bodies that are not JSON objects, or have no prompt, get no key: Envoy then picks a
replica at random within the hash load balancer's bounds.

The same program moves a share of a model's requests to its fallback model, on routes whose
metadata carries `fallback` (see `fallback_lua.py`). A moved request is decided before its
prefix key, and gets the key its new model asks for (or none). One program, one JSON parser,
one copy of the body: SOURCE is the parser and prompt functions (LIBRARY), the fallback's
functions, then the entry point.
"""

from __future__ import annotations

from heliostat.xds.translate.fallback_lua import FALLBACK_FUNCTIONS

LIBRARY = r"""
-- heliostat: prefix key for consistent hashing (see heliostat/xds/translate/prefix_key.py)

local escapes = {['"'] = '"', ['\\'] = '\\', ['/'] = '/',
                 b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'}

local function skip(s, i)
  local _, last = string.find(s, "^[ \t\r\n]*", i)
  return last + 1
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
  end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64,
                       0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                     0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local parse_value

local function parse_string(s, i)
  local parts, pos = {}, i + 1
  while true do
    local at = string.find(s, '["\\]', pos)
    if not at then error("unterminated string") end
    if at > pos then parts[#parts + 1] = string.sub(s, pos, at - 1) end
    if string.sub(s, at, at) == '"' then return table.concat(parts), at + 1 end
    local e = string.sub(s, at + 1, at + 1)
    if e == "u" then
      local cp = tonumber(string.sub(s, at + 2, at + 5), 16)
      if not cp then error("bad unicode escape") end
      pos = at + 6
      if cp >= 0xD800 and cp <= 0xDBFF and string.sub(s, pos, pos + 1) == "\\u" then
        local low = tonumber(string.sub(s, pos + 2, pos + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 1024 + (low - 0xDC00)
          pos = pos + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      local plain = escapes[e]
      if not plain then error("bad escape") end
      parts[#parts + 1] = plain
      pos = at + 2
    end
  end
end

local function parse_array(s, i)
  local out = {}
  i = skip(s, i + 1)
  if string.sub(s, i, i) == "]" then return out, i + 1 end
  while true do
    local value
    value, i = parse_value(s, i)
    out[#out + 1] = value
    i = skip(s, i)
    local c = string.sub(s, i, i)
    if c == "]" then return out, i + 1 end
    if c ~= "," then error("expected , or ]") end
    i = skip(s, i + 1)
  end
end

local function parse_object(s, i)
  local out = {}
  i = skip(s, i + 1)
  if string.sub(s, i, i) == "}" then return out, i + 1 end
  while true do
    if string.sub(s, i, i) ~= '"' then error("expected a key") end
    local key, value
    key, i = parse_string(s, i)
    i = skip(s, i)
    if string.sub(s, i, i) ~= ":" then error("expected :") end
    value, i = parse_value(s, skip(s, i + 1))
    out[key] = value
    i = skip(s, i)
    local c = string.sub(s, i, i)
    if c == "}" then return out, i + 1 end
    if c ~= "," then error("expected , or }") end
    i = skip(s, i + 1)
  end
end

parse_value = function(s, i)
  local c = string.sub(s, i, i)
  if c == "{" then return parse_object(s, i) end
  if c == "[" then return parse_array(s, i) end
  if c == '"' then return parse_string(s, i) end
  local number = string.match(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if number and #number > 0 then return tonumber(number), i + #number end
  if string.sub(s, i, i + 3) == "true" then return true, i + 4 end
  if string.sub(s, i, i + 4) == "false" then return false, i + 5 end
  if string.sub(s, i, i + 3) == "null" then return nil, i + 4 end
  error("unexpected character at " .. i)
end

local function prompt_text(body)
  local prompt = body.prompt
  if type(prompt) == "table" and type(prompt[1]) ~= "number" then prompt = prompt[1] end
  if type(prompt) == "string" then return prompt end
  if type(prompt) == "table" then
    local ids = {}
    for index = 1, #prompt do ids[index] = tostring(prompt[index]) end
    return table.concat(ids, " ")
  end
  if type(body.messages) ~= "table" then return nil end
  local parts = {}
  for _, message in ipairs(body.messages) do
    local content = type(message) == "table" and message.content or nil
    if type(content) == "string" then
      parts[#parts + 1] = content
    elseif type(content) == "table" then
      for _, part in ipairs(content) do
        if type(part) == "table" and type(part.text) == "string" then
          parts[#parts + 1] = part.text
        end
      end
    end
  end
  return table.concat(parts, "\n")
end

local function first_chars(s, n)
  if #s <= n then return s end
  local head = string.sub(s, 1, n)
  if not string.find(head, "[\128-\255]") then return head end
  local i, count, length = 1, 0, #s
  while i <= length and count < n do
    local c = string.byte(s, i)
    if c >= 0xF0 then i = i + 4
    elseif c >= 0xE0 then i = i + 3
    elseif c >= 0xC0 then i = i + 2
    else i = i + 1 end
    count = count + 1
  end
  return string.sub(s, 1, i - 1)
end

local function digest(s)
  local a, b = 0, 0
  for i = 1, #s do
    local c = string.byte(s, i)
    a = (a * 31 + c) % 2147483647
    b = (b * 131 + c) % 2147483629
  end
  return string.format("%08x%08x", a, b)
end

-- (the fallback's functions and the entry point follow: see prefix_key.py)
"""

ENTRY = r"""
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
"""

SOURCE = LIBRARY + FALLBACK_FUNCTIONS + ENTRY
