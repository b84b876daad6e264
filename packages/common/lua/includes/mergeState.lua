-- Bar state encoding shared with packages/core/src/bar.ts:
--   open|openKey|high|low|close|closeKey|volume|pv|n[|flags]
-- These run once per bar a batch touches (a whole market trading gives batches of distinct
-- symbols, so a bar each), hence plain finds and a fast path for sums that fit a double.
local match, sub, format, concat = string.match, string.sub, string.format, table.concat

local STATE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|?([^|]*)'

local function splitState(s)
  local f1, f2, f3, f4, f5, f6, f7, f8, f9, f10 = match(s, STATE)
  -- the 10th field (flags) is absent when empty
  return {f1, f2, f3, f4, f5, f6, f7, f8, f9, f10 ~= '' and f10 or nil}
end

-- a + b for non-negative decimal integers of any length (volume and Σp·v are exact scaled
-- integers, see decimal.ts). Both under 16 digits: their sum is below 2^53, exact in a double;
-- longer ones in chunks of 14 digits, so every step is exact.
local function addDec(a, b)
  local la, lb = #a, #b
  if la < 16 and lb < 16 then return format('%d', tonumber(a) + tonumber(b)) end
  if la < 29 and lb < 29 then
    -- two chunks of 14 digits each at most
    local lo = tonumber(sub(a, -14)) + tonumber(sub(b, -14))
    local hi = (la > 14 and tonumber(sub(a, 1, -15)) or 0) + (lb > 14 and tonumber(sub(b, 1, -15)) or 0)
    if lo >= 1e14 then lo = lo - 1e14; hi = hi + 1 end
    if hi == 0 then return format('%d', lo) end
    return format('%d%014d', hi, lo)
  end
  local out, n, carry = {}, 0, 0
  local i, j = la, lb
  while i > 0 or j > 0 do
    local x = carry
    if i > 0 then x = x + tonumber(sub(a, i > 14 and i - 13 or 1, i)); i = i - 14 end
    if j > 0 then x = x + tonumber(sub(b, j > 14 and j - 13 or 1, j)); j = j - 14 end
    if x >= 1e14 then carry = 1; x = x - 1e14 else carry = 0 end
    n = n + 1
    out[n] = x
  end
  if carry > 0 then n = n + 1; out[n] = 1 end
  local parts = {format('%d', out[n])}
  for k = n - 1, 1, -1 do parts[n - k + 1] = format('%014d', out[k]) end
  return concat(parts)
end

-- Folds encoded state bEnc into aEnc (the rules of mergeInto in bar.ts): open = smallest order key,
-- close = largest, high/low by value ('' = none: a partial of trades that may not set them), sums added.
-- A batch folds the same partial into each interval's bar of a symbol (its trades in one minute
-- fall in one window of every interval), so the last partial's fields are kept for the next call.
local lastB, lastFields, lastHigh, lastLow
local function mergeState(aEnc, bEnc)
  local a = splitState(aEnc)
  if bEnc ~= lastB then
    lastB, lastFields = bEnc, splitState(bEnc)
    lastHigh, lastLow = tonumber(lastFields[3]), tonumber(lastFields[4])
  end
  local b = lastFields
  if b[2] < a[2] then a[1] = b[1]; a[2] = b[2] end
  if b[6] > a[6] then a[5] = b[5]; a[6] = b[6] end
  if lastHigh and (a[3] == '' or lastHigh > tonumber(a[3])) then a[3] = b[3] end
  if lastLow and (a[4] == '' or lastLow < tonumber(a[4])) then a[4] = b[4] end
  a[7] = addDec(a[7], b[7])
  a[8] = addDec(a[8], b[8])
  a[9] = format('%d', tonumber(a[9]) + tonumber(b[9]))
  if b[10] then a[10] = format('%d', bit.bor(tonumber(a[10] or '0'), tonumber(b[10]))) end
  return concat(a, '|')
end

-- Folds partial states into open bars (hash bars, index zset scored by window end): encs[i] into
-- bar ids[i], whose window ends at ends[i]; ids are distinct. One HMGET, one HSET and one ZADD (the
-- bars not open yet) per 500 bars rather than calls per bar.
local FOLD_CHUNK = 500
local function foldPartials(bars, index, ids, ends, encs)
  for from = 1, #ids, FOLD_CHUNK do
    local to = math.min(from + FOLD_CHUNK - 1, #ids)
    local cur = redis.call('HMGET', bars, unpack(ids, from, to))
    local sets, adds = {}, {}
    for i = from, to do
      local c, enc = cur[i - from + 1], encs[i]
      if c then
        enc = mergeState(c, enc)
      else
        adds[#adds + 1] = ends[i]
        adds[#adds + 1] = ids[i]
      end
      sets[#sets + 1] = ids[i]
      sets[#sets + 1] = enc
    end
    redis.call('HSET', bars, unpack(sets))
    if #adds > 0 then redis.call('ZADD', index, unpack(adds)) end
  end
end
