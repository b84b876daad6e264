-- Phase "checkpoint": how far windows may close. A backlog delays bars, it never makes on-time trades
-- late (DESIGN), so the script keeps a checkpoint (W, L) — the watermark W and the last stream id L
-- at one instant — in the clock hash (ckW, ckL). Entries after L were stamped with a watermark >= W,
-- so once everything up to L is merged, every window with end + grace <= W may close.
-- Returns the horizon (window ends <= it close; math.huge with flush: everything), or false.
local function closingHorizon(clock, wm, lastId, grace, flush, mergedThrough)
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
  return horizon
end
