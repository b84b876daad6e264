--[[
  Merges one pre-aggregated batch of trades into the open bars and acknowledges the batch, in one
  atomic step, so a trade is counted exactly once even when a worker dies mid-batch or two workers
  race on a reclaimed batch.

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] open bars hash (field = bar id, value = encoded bar state)
    KEYS[3] open index sorted set (member = bar id, score = window end ms)
    KEYS[4] late trade stream of the partition
    KEYS[5] partition stats hash
    KEYS[6] clock hash of the partition (closed = horizon up to which windows are closed)
    KEYS[7] LATE=amend: pending corrections hash (field = bar id, value = encoded late trades)
    KEYS[8] LATE=amend: pending corrections by window end
    ARGV[1] consumer group
    ARGV[2] consumer name
    ARGV[3] n = number of raw entries in the batch, followed by their n ids in ascending order
    then    the number of trades in those entries
    then    m = number of late trades, followed by 11 fields each: id s p v t c rx w reason i a
            (i and a: the feed's trade id and aggressor side, '' where it gave none; kept only when given)
    then    k = number of partial bars, followed by 3 fields each: bar id, window end, encoded state
    then    a = number of late partial bars (LATE=amend, else 0), 3 fields each as above; they wait
            in KEYS[7] until their bar has closed, then closeBars emits the correction
  Output:
    {1, merged trades, late trades} when merged and acknowledged
    {0, id1, id2, ...} when some ids are no longer pending for this consumer (reclaimed or already
      acknowledged by another worker): nothing was changed; the caller re-aggregates just the ids
      returned, which are still its own
  State encoding (also packages/core/src/bar.ts):
    open|openKey|high|low|close|closeKey|volume|pv|n
]]
--- @include "nowMs"
--- @include "mergeState"

local stream, bars, index, late, stats, clock = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local amends, amendIndex = KEYS[7], KEYS[8]
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
-- ids are ARGV[4 .. 3 + n], ascending

-- The batch is ours only while every entry is still pending for this consumer: a worker that
-- reclaimed part of it (XAUTOCLAIM) owns that part now, and an entry already acknowledged is gone
-- from the pending list. One ranged XPENDING filtered by consumer answers that for the whole batch;
-- XCLAIM ... JUSTID would too, but costs about four times as much per id (README, "Performance").
if n > 0 then
  local pending = redis.call('XPENDING', stream, group, ARGV[4], ARGV[3 + n], n * 10 + 1000, consumer)
  -- Both lists ascend, so in the usual case they are equal element by element.
  local same = #pending == n
  if same then
    for i = 1, n do
      if pending[i][1] ~= ARGV[3 + i] then same = false; break end
    end
  end
  if not same then
    local mine = {}
    for _, e in ipairs(pending) do mine[e[1]] = true end
    local out = {0}
    for i = 1, n do
      if mine[ARGV[3 + i]] then out[#out + 1] = ARGV[3 + i] end
    end
    return out
  end
end

local pos = 4 + n
local trades = tonumber(ARGV[pos]); pos = pos + 1
local m = tonumber(ARGV[pos]); pos = pos + 1
for j = 1, m do
  local i, a = ARGV[pos + 9], ARGV[pos + 10]
  if i == '' and a == '' then
    redis.call('XADD', late, '*', 'id', ARGV[pos], 's', ARGV[pos + 1], 'p', ARGV[pos + 2], 'v', ARGV[pos + 3],
      't', ARGV[pos + 4], 'c', ARGV[pos + 5], 'rx', ARGV[pos + 6], 'w', ARGV[pos + 7], 'reason', ARGV[pos + 8])
  else
    local fields = {'id', ARGV[pos], 's', ARGV[pos + 1], 'p', ARGV[pos + 2], 'v', ARGV[pos + 3], 't', ARGV[pos + 4],
      'c', ARGV[pos + 5], 'rx', ARGV[pos + 6], 'w', ARGV[pos + 7], 'reason', ARGV[pos + 8]}
    if i ~= '' then fields[#fields + 1] = 'i'; fields[#fields + 1] = i end
    if a ~= '' then fields[#fields + 1] = 'a'; fields[#fields + 1] = a end
    redis.call('XADD', late, '*', unpack(fields))
  end
  pos = pos + 11
end


local closed = tonumber(redis.call('HGET', clock, 'closed') or '-1')
local k = tonumber(ARGV[pos]); pos = pos + 1
local merged = 0
local lostClosed = 0
local ids, ends, encs = {}, {}, {}
for j = 1, k do
  local id, wend, enc = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  if tonumber(wend) <= closed then
    -- Cannot happen while the watermark is monotonic (see closeBars); kept visible, never folded in.
    redis.call('XADD', late, '*', 'bar', id, 'state', enc, 'reason', 'window-already-closed')
    lostClosed = lostClosed + tonumber(splitState(enc)[9])
  else
    ids[#ids + 1], ends[#ends + 1], encs[#encs + 1] = id, wend, enc
  end
end
foldPartials(bars, index, ids, ends, encs)

local a = tonumber(ARGV[pos] or '0'); pos = pos + 1
for j = 1, a do
  local id, wend, enc = ARGV[pos], tonumber(ARGV[pos + 1]), ARGV[pos + 2]
  pos = pos + 3
  local cur = redis.call('HGET', amends, id)
  redis.call('HSET', amends, id, cur and mergeState(cur, enc) or enc)
  redis.call('ZADD', amendIndex, wend, id)
end

local CHUNK = 1000
for i = 1, n, CHUNK do
  redis.call('XACK', stream, group, unpack(ARGV, 3 + i, 3 + math.min(i + CHUNK - 1, n)))
end
redis.call('HINCRBY', stats, 'merged', trades - m)
redis.call('HSET', stats, 'lastMergeMs', string.format('%d', nowMs()))
if m > 0 then redis.call('HINCRBY', stats, 'late', m) end
if lostClosed > 0 then redis.call('HINCRBY', stats, 'lateAfterClose', lostClosed) end
return {1, trades - m, m}
