-- Phase "coverage": once every bar up to the horizon has closed, record how far windows are final.
-- `covered` (EMPTY_BARS=carry fills empty windows up to it) is the horizon, or at the end of the
-- input the watermark itself; `closed` is how far windows are closed (mergeBatch refuses partials for
-- windows ending by it, corrections are due up to it). A flush (horizon math.huge) ends the input:
-- the watermark moves past the last closed window, so a later trade for one of them is late rather
-- than the start of a second bar. Returns the watermark, moved or not.
local function recordCoverage(clock, horizon, wm, grace, lastEnd)
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
  local prevClosed = tonumber(redis.call('HGET', clock, 'closed') or '-1')
  if horizon == math.huge and lastEnd then
    if lastEnd + grace > wm then
      wm = lastEnd + grace
      redis.call('HSET', clock, 'wm', string.format('%d', wm))
    end
    if lastEnd > prevClosed then redis.call('HSET', clock, 'closed', string.format('%d', lastEnd)) end
  end
  if horizon ~= math.huge and horizon > prevClosed then
    redis.call('HSET', clock, 'closed', string.format('%d', horizon))
  end
  return wm
end
