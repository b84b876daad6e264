-- Redis server time in ms: the wall clock of the watermark, holds and retention.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
