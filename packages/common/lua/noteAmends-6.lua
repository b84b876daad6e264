--[[
  Notes the feed's corrections and cancels of partition p (docs/feeds.md, "Corrections and
  cancels") exactly once: where the closer has read feed:corrections to, each symbol's amends (kept
  for the bars they may still amend), and for each bar an amend is in, what happens to it — a bar
  not closed yet is marked, so that closeBars holds it at its close for the closer to apply the
  amends to (the bar as first written is the amended one); a closed bar waits in fix-todo for a new
  revision — or nothing, when another closer noted them first. (A bar past LATE_AMEND_WINDOW at the
  watermark its amend came under is not amended: the closer leaves it out and counts it here.)

  Input:
    KEYS[1] fix:{p} (hash: `cursor`, the last feed:corrections entry read; `a:<symbol>`, the
            symbol's amends, a JSON list; `v:<symbol>`, how many times it changed; `h:<bar id>`,
            a bar to hold at its close, and `holds` their count; `held`, how many bars closeBars
            holds in fix-todo, closing nothing more meanwhile; `r:<bar id>`, LATE=drop: a bar's
            last revision; `u:<bar id>`, a closed bar with trades the raw stream has not)
    KEYS[2] fix-todo:{p} (hash: bar id -> "h#<state>" held at its close, or "d#<window end>" closed,
            waiting for a revision)
    KEYS[3] fix-index:{p} (sorted set: a:, h: and r: fields of KEYS[1] by the window end after which
            they can go, with LATE_AMEND_WINDOW)
    KEYS[4] clock hash of the partition (`closed`: the horizon closed through; `closing`: the one
            a closeBars that stopped at its bar limit is closing)
    KEYS[5] partition stats hash (amendsTooOld)
    KEYS[6] open bars hash
    ARGV[1] cursor as read ('' when none)
    ARGV[2] the new cursor
    ARGV[3] LATE_AMEND_WINDOW ms
    ARGV[4] the highest watermark these amends came under (kept as `w`: what is older than the
            window before it, and before the closed horizon, can go)
    ARGV[5] how many of their bars were past the window (counted as amendsTooOld)
    ARGV[6] s, how many symbols; then per symbol: the symbol, its new amends (a JSON list to
            append), the last window end of their bars, b (how many bars), then b pairs: bar id,
            window end
  Output:
    {1, bars waiting for a revision} noted, {0} not (noted by another: nothing written)
]]
local fix, todo, index, clock, stats, open = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if (redis.call('HGET', fix, 'cursor') or '') ~= ARGV[1] then return {0} end
redis.call('HSET', fix, 'cursor', ARGV[2])
local window = tonumber(ARGV[3])
local closed = tonumber(redis.call('HGET', clock, 'closed') or '-1')
local closing = tonumber(redis.call('HGET', clock, 'closing') or '-1')
-- First, what no amend can need any more: a symbol's amends, marks and revision counts of bars past
-- the window before both the closed horizon (a marked bar has closed) and the highest watermark
-- earlier amends came under (these, under a watermark no lower, are too late for them)
local wasW = tonumber(redis.call('HGET', fix, 'w') or '0')
if closed >= 0 and wasW > 0 then
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', string.format('%d', math.min(closed, wasW) - window), 'LIMIT', 0, 1000)
  for _, f in ipairs(old) do
    local gone = redis.call('HDEL', fix, f)
    if gone == 1 and string.sub(f, 1, 2) == 'h:' then redis.call('HINCRBY', fix, 'holds', -1) end
    if string.sub(f, 1, 2) == 'a:' then redis.call('HDEL', fix, 'v:' .. string.sub(f, 3)) end
  end
  if #old > 0 then redis.call('ZREM', index, unpack(old)) end
end
if tonumber(ARGV[4]) > wasW then redis.call('HSET', fix, 'w', ARGV[4]) end
local due, tooOld = 0, tonumber(ARGV[5])
local pos = 7
for _ = 1, tonumber(ARGV[6]) do
  local s, list, last, b = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  pos = pos + 4
  local cur = redis.call('HGET', fix, 'a:' .. s)
  local all = cjson.decode(list)
  if cur then
    local was = cjson.decode(cur)
    for _, a in ipairs(all) do was[#was + 1] = a end
    all = was
  end
  redis.call('HSET', fix, 'a:' .. s, cjson.encode(all))
  redis.call('HINCRBY', fix, 'v:' .. s, 1)
  local keep = redis.call('ZSCORE', index, 'a:' .. s)
  if not keep or tonumber(keep) < tonumber(last) then redis.call('ZADD', index, last, 'a:' .. s) end
  for _ = 1, b do
    local id, wend = ARGV[pos], tonumber(ARGV[pos + 1])
    pos = pos + 2
    if redis.call('HEXISTS', todo, id) == 1 then
      -- already waiting: its amends are read when it is done
    elseif wend > closed and (wend > closing or redis.call('HEXISTS', open, id) == 1) then
      if redis.call('HSETNX', fix, 'h:' .. id, '1') == 1 then
        redis.call('HINCRBY', fix, 'holds', 1)
        redis.call('ZADD', index, wend, 'h:' .. id)
      end
    else
      redis.call('HSET', todo, id, 'd#' .. string.format('%d', wend))
      due = due + 1
    end
  end
end
if tooOld > 0 then redis.call('HINCRBY', stats, 'amendsTooOld', tooOld) end
return {1, due}
