--[[
  Appends a batch of validated trades to a partition's raw stream and stamps each with the
  watermark it was ingested under, so lateness is judged at ingestion (DESIGN: lateness rule).

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] clock hash of the partition (fields: wm, lastId)
    ARGV[1] clock mode: "event" (watermark = highest event time ingested) or "wall" (Redis time)
    ARGV[2] grace ms
    ARGV[3..] 6 fields per trade: s, p, v, t, c, rx
  Output:
    the id of the last entry added
  Notes:
    w (the watermark before this trade) is what the aggregators compare against the trade's window
    end plus grace. It is written only when the trade could be late at all (t + grace < w, since a
    window ends after t); an entry without w was on time. ARGV[2] is the grace in ms.
    The watermark never goes backwards, also when the server clock steps back.
]]
local stream = KEYS[1]
local clock = KEYS[2]
local mode = ARGV[1]
local grace = tonumber(ARGV[2])
local wm = tonumber(redis.call('HGET', clock, 'wm') or '0')
local lastId = false
for i = 3, #ARGV, 6 do
  if mode == 'wall' then
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if ms > wm then wm = ms end
  end
  local t = tonumber(ARGV[i + 3])
  if t + grace < wm then
    lastId = redis.call('XADD', stream, '*', 's', ARGV[i], 'p', ARGV[i + 1], 'v', ARGV[i + 2],
      't', ARGV[i + 3], 'c', ARGV[i + 4], 'rx', ARGV[i + 5], 'w', string.format('%d', wm))
  else
    lastId = redis.call('XADD', stream, '*', 's', ARGV[i], 'p', ARGV[i + 1], 'v', ARGV[i + 2],
      't', ARGV[i + 3], 'c', ARGV[i + 4], 'rx', ARGV[i + 5])
  end
  if mode == 'event' and t > wm then wm = t end
end
if lastId then
  redis.call('HSET', clock, 'wm', string.format('%d', wm), 'lastId', lastId)
  -- new input: an end of input declared by a final close no longer holds
  redis.call('HDEL', clock, 'inputEnd')
end
return lastId
