-- Phase "corrections" (LATE=amend): late trades folded per bar wait in `amends` until their bar has
-- closed; then the corrected bar (the closed one merged with them, revision n + 1) goes to `out`
-- (the outbox entry).
-- A bar evicted before its correction came counts its trades as amendTooOld (partition stats). Then closed bars no
-- trade still on its way can correct are forgotten: the aggregators fold a late trade into a
-- correction only while its bar's end + amendMs is after the watermark it was ingested under, and
-- every entry not merged yet was ingested under a watermark >= the checkpoint's W (horizon + grace),
-- so bars ending by W - amendMs are past every future correction. Not while due corrections are
-- left for the next call: their bars must still be here. Returns how many corrections went out and
-- whether more are due.
local function emitCorrections(k, out, clock, horizon, wm, grace, amendMs, maxBars)
  local through = tonumber(redis.call('HGET', clock, 'closed') or '-1')
  if horizon == math.huge then through = math.huge end
  local max = through == math.huge and '+inf' or string.format('%d', through)
  local due = redis.call('ZRANGEBYSCORE', k.amendIndex, '-inf', max, 'WITHSCORES', 'LIMIT', 0, maxBars)
  local evicted = tonumber(redis.call('HGET', clock, 'evicted') or '-1')
  local emitted = 0
  local holding = redis.call('HLEN', k.todo) > 0
  for i = 1, #due, 2 do
    local id, wend = due[i], tonumber(due[i + 1])
    -- a bar held for the feed's amends (closeDue) is not in closedBars yet: its late trades wait for it
    if not (holding and redis.call('HEXISTS', k.todo, id) == 1) then
      local add = redis.call('HGET', k.amends, id)
      redis.call('HDEL', k.amends, id)
      redis.call('ZREM', k.amendIndex, id)
      if add and wend <= evicted then
        redis.call('HINCRBY', k.stats, 'amendTooOld', tonumber(splitState(add)[9]))
      elseif add then
        local cur = redis.call('HGET', k.closedBars, id)
        local rev, enc = 1, add
        if cur then
          local hash = string.find(cur, '#', 1, true)
          rev = tonumber(string.sub(cur, 1, hash - 1)) + 1
          enc = mergeState(string.sub(cur, hash + 1), add)
        end
        redis.call('HSET', k.closedBars, id, rev .. '#' .. enc)
        redis.call('ZADD', k.closedIndex, wend, id)
        out[#out + 1] = {id, enc, rev}
        emitted = emitted + 1
      end
    end
  end
  if #due == 2 * maxBars then return emitted, true end
  local cut = (horizon == math.huge and wm or horizon + grace) - amendMs
  local old = redis.call('ZRANGEBYSCORE', k.closedIndex, '-inf', string.format('%d', cut), 'WITHSCORES', 'LIMIT', 0, maxBars)
  for i = 1, #old, 2 do
    redis.call('HDEL', k.closedBars, old[i])
    redis.call('ZREM', k.closedIndex, old[i])
    if tonumber(old[i + 1]) > evicted then evicted = tonumber(old[i + 1]) end
  end
  if #old > 0 then redis.call('HSET', clock, 'evicted', string.format('%d', evicted)) end
  return emitted, false
end
