--[[
  Publishes closed bars on one bars:{interval} stream, in order, one entry each: the writer's
  publish of a job whose rows are in their files. One call per stream and a few hundred bars rather
  than a command per bar: a whole market's boundary is tens of thousands of bars, and each command
  costs the writer more than the entry costs Redis.

  Input:
    KEYS[1] bars:{interval}
    ARGV[1] MINID: entries older than this id are trimmed (approximately: BARS_RETENTION)
    ARGV[2] n = fields per bar (encodeBarEntry)
    ARGV[3..] the bars' fields, n per bar
  Output:
    how many entries were added
]]
local stream, minId, n = KEYS[1], ARGV[1], tonumber(ARGV[2])
local added = 0
for i = 3, #ARGV, n do
  redis.call('XADD', stream, 'MINID', '~', minId, '*', unpack(ARGV, i, i + n - 1))
  added = added + 1
end
return added
