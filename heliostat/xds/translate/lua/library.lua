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

-- (lua/fallback.lua and lua/entry.lua follow: see prefix_key.py)
