--[[
  Commits one cut of activity bars (docs/activity-bars.md) of a partition, exactly once: where the
  cut has got to in the raw stream, each symbol's state after it, and the bars it closed into the
  outbox, together — or nothing, when another closer committed a cut since this one was read.

  Input:
    KEYS[1] activity:{p} (hash: `cursor`, the raw entry to read from next; `h`, the horizon cut
            through; `s:<symbol>`, each symbol's state)
    KEYS[2] outbox:{p}
    ARGV[1] cursor as read ('' when none)
    ARGV[2] h as read ('' when none)
    ARGV[3] the new cursor
    ARGV[4] the new h
    ARGV[5] k, how many outbox entries the bars closed take (up to 1,000 bars each)
    ARGV[6..5+k] each entry's bars, a JSON array (encodeActivityOutbox)
    ARGV[6+k..] symbol, state pairs
  Output:
    1 committed, 0 not (the cut was made by another: nothing written)
]]
local activity, outbox = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', activity, 'cursor', 'h')
if (cur[1] or '') ~= ARGV[1] or (cur[2] or '') ~= ARGV[2] then return 0 end
local k = tonumber(ARGV[5])
local set = {'cursor', ARGV[3], 'h', ARGV[4]}
for i = 6 + k, #ARGV, 2 do
  set[#set + 1] = 's:' .. ARGV[i]
  set[#set + 1] = ARGV[i + 1]
end
-- states in chunks: a whole market's cut is thousands of symbols
for from = 1, #set, 1000 do
  redis.call('HSET', activity, unpack(set, from, math.min(from + 999, #set)))
end
for i = 6, 5 + k do redis.call('XADD', outbox, '*', 'activity', ARGV[i]) end
return 1
