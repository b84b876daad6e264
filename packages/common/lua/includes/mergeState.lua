-- Bar state encoding shared with packages/core/src/bar.ts:
--   open|openKey|high|low|close|closeKey|volume|pv|n[|flags]
local function splitState(s)
  local f = {}
  for part in string.gmatch(s, '([^|]*)|?') do
    f[#f + 1] = part
    if #f == 10 then break end
  end
  -- gmatch yields one empty match past the end of a 9-field state
  if #f == 10 and f[10] == '' then f[10] = nil end
  return f
end

-- a + b for non-negative decimal integers of any length (volume and Σp·v are exact scaled
-- integers, see decimal.ts), in chunks of 14 digits so every step is exact in a double.
local function addDec(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local x = carry
    if i > 0 then x = x + tonumber(string.sub(a, math.max(1, i - 13), i)); i = i - 14 end
    if j > 0 then x = x + tonumber(string.sub(b, math.max(1, j - 13), j)); j = j - 14 end
    if x >= 1e14 then carry = 1; x = x - 1e14 else carry = 0 end
    table.insert(out, 1, x)
  end
  if #out == 0 then return '0' end
  local s = string.format('%d', out[1])
  for k = 2, #out do s = s .. string.format('%014d', out[k]) end
  return s
end

-- Folds encoded state bEnc into aEnc (the rules of mergeInto in bar.ts): open = smallest order key,
-- close = largest, high/low by value ('' = none: a partial of trades that may not set them), sums added.
local function mergeState(aEnc, bEnc)
  local a, b = splitState(aEnc), splitState(bEnc)
  if b[2] < a[2] then a[1] = b[1]; a[2] = b[2] end
  if b[6] > a[6] then a[5] = b[5]; a[6] = b[6] end
  if b[3] ~= '' and (a[3] == '' or tonumber(b[3]) > tonumber(a[3])) then a[3] = b[3] end
  if b[4] ~= '' and (a[4] == '' or tonumber(b[4]) < tonumber(a[4])) then a[4] = b[4] end
  a[7] = addDec(a[7], b[7])
  a[8] = addDec(a[8], b[8])
  a[9] = string.format('%d', tonumber(a[9]) + tonumber(b[9]))
  if b[10] then a[10] = string.format('%d', bit.bor(tonumber(a[10] or '0'), tonumber(b[10]))) end
  return table.concat(a, '|')
end

-- Folds partial state enc into open bar id (hash bars, index zset scored by window end wend).
local function foldPartial(bars, index, id, wend, enc)
  local cur = redis.call('HGET', bars, id)
  if cur then
    enc = mergeState(cur, enc)
  else
    redis.call('ZADD', index, wend, id)
  end
  redis.call('HSET', bars, id, enc)
end
