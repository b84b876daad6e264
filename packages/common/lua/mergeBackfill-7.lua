--[[
  Merges the bars built from one backfill request into the open bars, exactly once, and releases
  the symbol's hold when it has no other request open.

  Input:
    KEYS[1] backfill request stream of the partition
    KEYS[2] open bars hash
    KEYS[3] open index sorted set (score = window end)
    KEYS[4] holds: symbol -> deadline ms
    KEYS[5] open requests per symbol
    KEYS[6] flags to add to bars as they close (field = bar id)
    KEYS[7] partition stats
    ARGV[1] consumer group, ARGV[2] consumer, ARGV[3] request id, ARGV[4] symbol
    ARGV[5] k = number of partial bars, followed by 3 fields each: bar id, window end, encoded state
    then    f = number of flagged bars, followed by 2 fields each: bar id, flags
    then    how many trades or candles the partials hold (for the stats)
  Output:
    1 merged; 0 the symbol's hold had expired, so its bars may have been written already: nothing
    merged (counted as backfillTooLate); -1 the request is not pending for this consumer (done by
    another worker, or reclaimed): nothing done
]]
local requests, bars, index, holds, open, flags, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, consumer, reqId, symbol = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local pending = redis.call('XPENDING', requests, group, reqId, reqId, 1, consumer)
if #pending == 0 then return -1 end

--- @include "mergeState"

local k = tonumber(ARGV[5])
local pos = 6
local f = tonumber(ARGV[pos + 3 * k])
local used = tonumber(ARGV[pos + 3 * k + 1 + 2 * f])
local result = 1
if redis.call('HEXISTS', holds, symbol) == 0 then
  redis.call('HINCRBY', stats, 'backfillTooLate', used)
  result = 0
else
  local ids, ends, encs = {}, {}, {}
  for j = 1, k do
    ids[j], ends[j], encs[j] = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
    pos = pos + 3
  end
  foldPartials(bars, index, ids, ends, encs)
  pos = pos + 1
  for j = 1, f do
    local id, bits = ARGV[pos], tonumber(ARGV[pos + 1])
    pos = pos + 2
    local cur = tonumber(redis.call('HGET', flags, id) or '0')
    redis.call('HSET', flags, id, string.format('%d', bit.bor(cur, bits)))
  end
  redis.call('HINCRBY', stats, 'backfilled', used)
end
redis.call('XACK', requests, group, reqId)
if redis.call('HINCRBY', open, symbol, -1) <= 0 then
  redis.call('HDEL', open, symbol)
  redis.call('HDEL', holds, symbol)
end
return result
