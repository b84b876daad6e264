--[[
  Publishes closed bars on one bars:{interval} stream, in order, one entry each: the writer's
  publish of a job whose rows are in their files. One call per stream and a few hundred bars, their
  fields as one JSON argument, rather than a command per bar: a whole market's boundary is tens of
  thousands of bars, and each command and argument costs the writer more than the entry costs Redis.

  Input:
    KEYS[1] bars:{interval}
    ARGV[1] MINID: entries older than this id are trimmed (approximately: BARS_RETENTION), once
            per call after the entries are added (a trim per entry costs a fifth of the call)
    ARGV[2] the bars: a JSON array of each bar's fields (encodeBarEntry), all strings
  Output:
    how many entries were added
]]
local stream, minId = KEYS[1], ARGV[1]
local bars = cjson.decode(ARGV[2])
for _, fields in ipairs(bars) do
  redis.call('XADD', stream, '*', unpack(fields))
end
redis.call('XTRIM', stream, 'MINID', '~', minId)
return #bars
