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
    ARGV[5] the bars closed, a JSON array (encodeActivityOutbox), or '' for none
    ARGV[6..] symbol, state pairs
  Output:
    1 committed, 0 not (the cut was made by another: nothing written)
]]
local activity, outbox = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', activity, 'cursor', 'h')
if (cur[1] or '') ~= ARGV[1] or (cur[2] or '') ~= ARGV[2] then return 0 end
local set = {'cursor', ARGV[3], 'h', ARGV[4]}
for i = 6, #ARGV, 2 do
  set[#set + 1] = 's:' .. ARGV[i]
  set[#set + 1] = ARGV[i + 1]
end
-- states in chunks: a whole market's cut is thousands of symbols
for from = 1, #set, 1000 do
  redis.call('HSET', activity, unpack(set, from, math.min(from + 999, #set)))
end
if ARGV[5] ~= '' then redis.call('XADD', outbox, '*', 'activity', ARGV[5]) end
return 1
