-- Phase "close": bars whose window end is <= horizon leave the open set, at most maxBars of them,
-- skipping held symbols, each onto `out` ({bar id, state, rev}: the script writes them to the outbox
-- as one entry at its end); with LATE=amend each is also kept (rev 0) for corrections.
-- Flags waiting for a bar (backfill: incomplete, sources) are folded in as it closes. A bar starting
-- at or before the clock's `lost` (Redis lost candlewick's data then: see addTrades' marker) was open
-- when its earlier trades vanished: it closes incomplete and lost (BAR_FLAGS 1 + 256), never as if whole.
-- Returns how many closed, the last closed window end (false: none) and whether it stopped at maxBars.
--- @include "mergeState"
local function closeDue(k, out, horizon, maxBars, held, anyHeld, amendMs)
  local withFlags = redis.call('HLEN', k.barFlags) > 0
  local lost = tonumber(redis.call('HGET', k.clock, 'lost') or '-1')
  local max = horizon == math.huge and '+inf' or string.format('%d', horizon)
  local closedCount, offset, lastEnd = 0, 0, false
  while closedCount < maxBars do
    local want = maxBars - closedCount
    local page = redis.call('ZRANGEBYSCORE', k.index, '-inf', max, 'LIMIT', offset, want, 'WITHSCORES')
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
      local states = redis.call('HMGET', k.bars, unpack(ids))
      local kept, keptEnds = {}, {}
      for i, id in ipairs(ids) do
        local state = states[i]
        if state and withFlags then
          local f = redis.call('HGET', k.barFlags, id)
          if f then
            state = mergeState(state, table.concat({'', '~', '', '', '', '', '0', '0', '0', f}, '|'))
            redis.call('HDEL', k.barFlags, id)
          end
        end
        if state and lost >= 0 and tonumber(string.match(id, '|(%d+)$')) <= lost then
          state = mergeState(state, '|~|||||0|0|0|257')
        end
        if state then
          out[#out + 1] = {id, state, 0}
          closedCount = closedCount + 1
          if amendMs > 0 then
            kept[#kept + 1] = id
            kept[#kept + 1] = '0#' .. state
            keptEnds[#keptEnds + 1] = ends[i]
            keptEnds[#keptEnds + 1] = id
          end
        end
      end
      -- a page's bars leave in one call per key, not one per bar
      redis.call('HDEL', k.bars, unpack(ids))
      redis.call('ZREM', k.index, unpack(ids))
      if #kept > 0 then
        redis.call('HSET', k.closedBars, unpack(kept))
        redis.call('ZADD', k.closedIndex, unpack(keptEnds))
      end
    end
    if #page < 2 * want then break end
  end
  return closedCount, lastEnd, closedCount >= maxBars
end
