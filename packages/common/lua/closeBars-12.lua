--[[
  Finalizes the bars whose window end plus grace has passed the watermark and moves them to the
  outbox in the same atomic step, so a crash between closing and enqueueing loses nothing.

  A window is closed only once every entry ingested before the watermark passed its end plus grace
  has been merged (DESIGN: a backlog delays bars, it never makes on-time trades late). To know that,
  the script keeps a checkpoint (W, L): the watermark W and the last stream id L at one instant.
  Entries after L were stamped with a watermark >= W, so once everything up to L is merged, every
  window with end + grace <= W may close.

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] clock hash (wm, lastId, ckW, ckL, closed, covered, inputEnd, evicted)
    KEYS[3] open bars hash
    KEYS[4] open index sorted set (score = window end)
    KEYS[5] outbox stream
    KEYS[6] late trade stream (trimmed by age with the raw stream)
    KEYS[7] LATE=amend: closed bars kept for corrections (field = bar id, value = "rev#state")
    KEYS[8] LATE=amend: closed bars by window end
    KEYS[9] LATE=amend: pending corrections (late trades folded per bar)
    KEYS[10] LATE=amend: pending corrections by window end
    KEYS[11] backfill holds: symbol -> deadline ms; a held symbol's bars stay open until then
    KEYS[12] backfill flags to add to bars as they close (field = bar id)
    ARGV[1] consumer group of the aggregators
    ARGV[2] grace ms
    ARGV[3] clock mode: "event" or "wall"
    ARGV[4] "1" to close every open bar (end of a replay), once everything ingested is merged; the
            watermark then moves past the last closed window
    ARGV[5] retention of the raw stream in ms (0 = keep everything)
    ARGV[6] at most this many bars per call
    ARGV[7] LATE=amend: keep closed bars this many ms past the watermark for corrections (0 = drop)
  Output:
    {bars closed, horizon closed through (ms, -1 if none), more bars ready (0/1), merged (0/1)}
]]
local stream, clock, bars, index, outbox, late = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local closedBars, closedIndex, amends, amendIndex = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local holds, barFlags = KEYS[11], KEYS[12]
local amendMs = tonumber(ARGV[7] or '0')

--- @include "mergeState"
local group = ARGV[1]
local grace = tonumber(ARGV[2])
local mode = ARGV[3]
local flush = ARGV[4] == '1'
local retention = tonumber(ARGV[5])
local maxBars = tonumber(ARGV[6])

local function parseId(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
-- a <= b for stream ids
local function idLe(a, b)
  local am, as = parseId(a)
  local bm, bs = parseId(b)
  return am < bm or (am == bm and as <= bs)
end

local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local wm = tonumber(redis.call('HGET', clock, 'wm') or '0')
if mode == 'wall' and nowMs > wm then
  wm = nowMs
  redis.call('HSET', clock, 'wm', string.format('%d', wm))
end
local lastId = redis.call('HGET', clock, 'lastId') or '0-0'

-- Symbols waiting for a backfill keep their bars open (the writer appends in order, so a bar
-- written before the backfill arrives would turn the backfilled ones away). A hold past its
-- deadline is dropped and counted: those bars close without the backfill.
local held, anyHeld = {}, false
local h = redis.call('HGETALL', holds)
for i = 1, #h, 2 do
  if tonumber(h[i + 1]) < nowMs then
    redis.call('HDEL', holds, h[i])
    redis.call('HINCRBY', clock, 'holdsExpired', 1)
  else
    held[h[i]] = true
    anyHeld = true
  end
end
local withFlags = redis.call('HLEN', barFlags) > 0
local function symbolOf(id)
  local first = string.find(id, '|', 1, true)
  local rest = string.sub(id, first + 1)
  local last = string.find(rest, '|[^|]*$')
  return string.sub(rest, 1, last - 1)
end

-- What the group has merged: everything up to last-delivered-id, except entries still pending.
local delivered, minPending = '0-0', false
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
if ok then
  for _, g in ipairs(groups) do
    local name, pending, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then
      delivered = last
      if pending > 0 then
        minPending = redis.call('XPENDING', stream, group)[2]
      end
    end
  end
end
local function mergedThrough(id)
  if id == '0-0' then return true end
  if not idLe(id, delivered) then return false end
  if minPending and idLe(minPending, id) then return false end
  return true
end

local horizon = false
if mergedThrough(lastId) then
  horizon = flush and math.huge or (wm - grace)
  redis.call('HDEL', clock, 'ckW', 'ckL')
else
  local ckL = redis.call('HGET', clock, 'ckL')
  if ckL and mergedThrough(ckL) then
    horizon = tonumber(redis.call('HGET', clock, 'ckW')) - grace
    ckL = false
  end
  if not ckL then
    redis.call('HSET', clock, 'ckW', string.format('%d', wm), 'ckL', lastId)
  end
end

local closedCount, more = 0, 0
local lastEnd = false
if horizon then
  local max = horizon == math.huge and '+inf' or string.format('%d', horizon)
  local offset = 0
  while closedCount < maxBars do
    local want = maxBars - closedCount
    local page = redis.call('ZRANGEBYSCORE', index, '-inf', max, 'LIMIT', offset, want, 'WITHSCORES')
    if #page == 0 then break end
    local ids, ends = {}, {}
    for i = 1, #page, 2 do
      if anyHeld and held[symbolOf(page[i])] then
        offset = offset + 1
      else
        ids[#ids + 1] = page[i]
        ends[#ends + 1] = page[i + 1]
        lastEnd = tonumber(page[i + 1])
      end
    end
    if #ids > 0 then
      local states = redis.call('HMGET', bars, unpack(ids))
      for i, id in ipairs(ids) do
        local state = states[i]
        if state and withFlags then
          local f = redis.call('HGET', barFlags, id)
          if f then
            state = mergeState(state, table.concat({'', '~', '', '', '', '', '0', '0', '0', f}, '|'))
            redis.call('HDEL', barFlags, id)
          end
        end
        if state then
          redis.call('XADD', outbox, '*', 'bar', id, 'state', state)
          closedCount = closedCount + 1
          if amendMs > 0 then
            redis.call('HSET', closedBars, id, '0#' .. state)
            redis.call('ZADD', closedIndex, ends[i], id)
          end
        end
        redis.call('HDEL', bars, id)
        redis.call('ZREM', index, id)
      end
    end
    if #page < 2 * want then break end
  end
  if closedCount >= maxBars then more = 1 end
  -- The horizon (and with it `closed`, `covered` and the corrections due) moves only once every
  -- bar up to it has left the open set: a call that stopped at its bar limit, or that skipped held
  -- symbols, leaves it where it was, so a correction never finds its bar still open.
  if anyHeld or more == 1 then horizon = false end
end
if horizon then
  -- Windows ending by `covered` are final and fully covered by the input (EMPTY_BARS=carry fills the
  -- empty ones up to here): the horizon, or at the end of the input the watermark itself.
  local covered = horizon == math.huge and wm or horizon
  local inputEnd = redis.call('HGET', clock, 'inputEnd')
  if horizon == math.huge and not inputEnd then
    -- the input ends here: later ticks must not count the windows past it as covered
    inputEnd = string.format('%d', wm)
    redis.call('HSET', clock, 'inputEnd', inputEnd)
  end
  if inputEnd and tonumber(inputEnd) < covered then covered = tonumber(inputEnd) end
  local prevCovered = tonumber(redis.call('HGET', clock, 'covered') or '-1')
  if covered > prevCovered then redis.call('HSET', clock, 'covered', string.format('%d', covered)) end
  if horizon == math.huge and lastEnd then
    -- Closing everything ends the input: move the watermark past the last closed window, so a trade
    -- for any of these windows that arrives later is late rather than the start of a second bar.
    if lastEnd + grace > wm then
      wm = lastEnd + grace
      redis.call('HSET', clock, 'wm', string.format('%d', wm))
    end
    local prev = tonumber(redis.call('HGET', clock, 'closed') or '-1')
    if lastEnd > prev then redis.call('HSET', clock, 'closed', string.format('%d', lastEnd)) end
  end
  if horizon ~= math.huge then
    local prev = tonumber(redis.call('HGET', clock, 'closed') or '-1')
    if horizon > prev then redis.call('HSET', clock, 'closed', string.format('%d', horizon)) end
  end
end

-- LATE=amend: corrections for bars that have closed, oldest first; then forget bars past the window.
if amendMs > 0 and horizon then
  local through = tonumber(redis.call('HGET', clock, 'closed') or '-1')
  if horizon == math.huge then through = math.huge end
  local max = through == math.huge and '+inf' or string.format('%d', through)
  local due = redis.call('ZRANGEBYSCORE', amendIndex, '-inf', max, 'WITHSCORES', 'LIMIT', 0, maxBars)
  local evicted = tonumber(redis.call('HGET', clock, 'evicted') or '-1')
  for i = 1, #due, 2 do
    local id, wend = due[i], tonumber(due[i + 1])
    local add = redis.call('HGET', amends, id)
    redis.call('HDEL', amends, id)
    redis.call('ZREM', amendIndex, id)
    if add and wend <= evicted then
      redis.call('HINCRBY', clock, 'amendTooOld', tonumber(splitState(add)[9]))
    elseif add then
      local cur = redis.call('HGET', closedBars, id)
      local rev, enc = 1, add
      if cur then
        local hash = string.find(cur, '#', 1, true)
        rev = tonumber(string.sub(cur, 1, hash - 1)) + 1
        enc = mergeState(string.sub(cur, hash + 1), add)
      end
      redis.call('HSET', closedBars, id, rev .. '#' .. enc)
      redis.call('ZADD', closedIndex, wend, id)
      redis.call('XADD', outbox, '*', 'bar', id, 'state', enc, 'rev', rev)
      closedCount = closedCount + 1
    end
  end
  -- Forget closed bars no trade still on its way can correct. The aggregators fold a late trade into
  -- a correction only while its bar's end + amendMs is after the watermark it was ingested under
  -- (w), and every entry not merged yet was ingested under a watermark >= the checkpoint's W
  -- (horizon + grace), so bars ending by W - amendMs are past every future correction. Not while
  -- due corrections are left for the next call: their bars must still be here.
  local old = {}
  if #due == 2 * maxBars then
    more = 1
  else
    local cut = (horizon == math.huge and wm or horizon + grace) - amendMs
    old = redis.call('ZRANGEBYSCORE', closedIndex, '-inf', string.format('%d', cut), 'WITHSCORES', 'LIMIT', 0, maxBars)
  end
  for i = 1, #old, 2 do
    redis.call('HDEL', closedBars, old[i])
    redis.call('ZREM', closedIndex, old[i])
    if tonumber(old[i + 1]) > evicted then evicted = tonumber(old[i + 1]) end
  end
  if #old > 0 then redis.call('HSET', clock, 'evicted', string.format('%d', evicted)) end
end

-- Trim by age, never past what the group has not merged yet.
if retention > 0 then
  local cutMs = nowMs - retention
  if minPending then
    local pm = parseId(minPending)
    if pm < cutMs then cutMs = pm end
  end
  local dm = parseId(delivered)
  if dm < cutMs then cutMs = dm end
  if cutMs > 0 then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', cutMs))
    redis.call('XTRIM', late, 'MINID', '~', string.format('%d', nowMs - retention))
  end
end

local h = -1
if horizon then h = horizon == math.huge and -2 or horizon end
return {closedCount, h, more, mergedThrough(lastId) and 1 or 0}
