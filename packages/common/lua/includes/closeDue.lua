-- Phase "close": bars whose window end is <= horizon leave the open set, at most maxBars of them,
-- skipping held symbols, each onto `out` ({bar id, state, rev}: the script writes them to the outbox
-- as one entry at its end); with LATE=amend each is also kept (rev 0) for corrections.
-- Flags waiting for a bar (backfill: incomplete, sources) are folded in as it closes. A bar starting
-- at or before the clock's `lost` (Redis lost candlewick's data then: see addTrades' marker) was open
-- when its earlier trades vanished: it closes incomplete and lost (BAR_FLAGS 1 + 256), never as if whole.
-- A bar the feed's corrections or cancels amend (marked `h:<id>` in k.fix by noteAmends) goes to
-- k.todo instead ("h#<state>"), for the closer to apply them (applyFix): counted in k.held; the call
-- then ends after that bar's window (as if at maxBars), so a later window of its file closes only
-- once it has been written; and while any held bar waits (`held` in k.fix: this closer's, or one
-- racing it), nothing closes (k.blocked).
-- Returns how many closed, the last closed window end (false: none) and whether it stopped at maxBars.
--- @include "mergeState"
local function closeDue(k, out, horizon, maxBars, held, anyHeld, amendMs)
  local withFlags = redis.call('HLEN', k.barFlags) > 0
  local lost = tonumber(redis.call('HGET', k.clock, 'lost') or '-1')
  local marked = tonumber(redis.call('HGET', k.fix, 'holds') or '0') > 0
  if tonumber(redis.call('HGET', k.fix, 'held') or '0') > 0 then
    k.blocked = true
    return 0, false, false
  end
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
    local stop = false
    local marks
    if #ids > 0 and marked then
      local fields = {}
      for i, id in ipairs(ids) do fields[i] = 'h:' .. id end
      marks = redis.call('HMGET', k.fix, unpack(fields))
      -- a held bar is written after this call: bars of later windows wait for the next call, so
      -- that every file still gets its rows in window order
      for i = 1, #ids do
        if marks[i] then
          local cut = ends[i]
          local n = i
          while n < #ids and ends[n + 1] == cut do n = n + 1 end
          for j = #ids, n + 1, -1 do ids[j] = nil; ends[j] = nil end
          lastEnd = tonumber(cut)
          stop = true
          break
        end
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
        if state and marks and marks[i] then
          redis.call('HSET', k.todo, id, 'h#' .. state)
          redis.call('HDEL', k.fix, 'h:' .. id)
          redis.call('HINCRBY', k.fix, 'holds', -1)
          redis.call('HINCRBY', k.fix, 'held', 1)
          k.held = k.held + 1
          closedCount = closedCount + 1
        elseif state then
          out[#out + 1] = {id, state, 0}
          -- (FEED=alpaca) trades the raw stream has not: its amends cannot be recomputed (BAR_FLAGS
          -- 8..1024 backfill sources, 256 lost)
          if k.feedAmends then
            local f = tonumber(splitState(state)[10] or '0')
            if bit.band(f, 2040) ~= 0 then
              redis.call('HSET', k.fix, 'u:' .. id, '1')
              redis.call('ZADD', k.fixIndex, ends[i], 'u:' .. id)
            end
          end
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
    if stop then return closedCount, lastEnd, true end
    if #page < 2 * want then break end
  end
  return closedCount, lastEnd, closedCount >= maxBars
end
