-- Phase "holds": symbols waiting for a backfill keep their bars open (the writer appends in order, so
-- a bar written before the backfill arrives would turn the backfilled ones away). A hold past its
-- deadline is dropped and counted in the partition stats (holdsExpired): those bars close without it.
-- Returns the set of held symbols and whether there is any.
local function readHolds(holds, stats, now)
  local held, anyHeld = {}, false
  local h = redis.call('HGETALL', holds)
  for i = 1, #h, 2 do
    if tonumber(h[i + 1]) < now then
      redis.call('HDEL', holds, h[i])
      redis.call('HINCRBY', stats, 'holdsExpired', 1)
    else
      held[h[i]] = true
      anyHeld = true
    end
  end
  return held, anyHeld
end

-- The symbol of a bar id "interval|symbol|start" (a symbol may hold '|'-free colons).
local function symbolOf(id)
  local first = string.find(id, '|', 1, true)
  local rest = string.sub(id, first + 1)
  local last = string.find(rest, '|[^|]*$')
  return string.sub(rest, 1, last - 1)
end
