--[[
  Applies the feed's corrections and cancels to one bar (noteAmends), exactly once: the bar the
  closer recomputed from its trades with them is written to the outbox — as it closes (a bar held
  at its close: revision 0) or as its next revision (a bar closed before: LATE=amend's closed bars
  and its late trades, else a count of its own) — or nothing, when the bar's amends changed since
  they were read (or, LATE=amend, its late trades), or another closer did it.

  Input:
    KEYS[1] fix:{p}        KEYS[2] fix-todo:{p}        KEYS[3] fix-index:{p}
    KEYS[4] outbox:{p}
    KEYS[5] LATE=amend: closed bars ("rev#state")       KEYS[6] and by window end
    KEYS[7] LATE=amend: pending late corrections        KEYS[8] and by window end
    KEYS[9] late trade stream                           KEYS[10] partition stats hash
    ARGV[1] bar id
    ARGV[2] its fix-todo value as read
    ARGV[3] its symbol's `v:` as read ('' when none)
    ARGV[4] the bar's state with its amends ('' when they left it no trade)
    ARGV[5] window end ms
    ARGV[6] LATE=amend: LATE_AMEND_WINDOW ms (0 = LATE=drop)
    ARGV[7] LATE=amend, a revision: the late stream's last entry id as read ('' when empty): the
            state holds every late trade up to it, so the bar's pending late corrections are in it
    ARGV[8] "1" when the amends cannot be applied (the raw stream has not all of the bar's trades:
            part of it was backfilled, trimmed or lost; counted as amendsUnmade): a held bar is
            written as it closed (ARGV[4]), no revision is made
  Output:
    1 written; 0 done by another; -1 read again (its amends or late trades changed); 2 not written:
    the amends left the bar no trade (counted); 3 no revision: the closed bar is no longer kept
    (LATE=amend), or its amends cannot be applied (ARGV[8])
]]
local fix, todo, index, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local closedBars, closedIndex, amends, amendIndex, late, stats = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local id, expect, version, state, wend = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local amendMs = tonumber(ARGV[6])
if redis.call('HGET', todo, id) ~= expect then return 0 end
local first = string.find(id, '|', 1, true)
local rest = string.sub(id, first + 1)
local symbol = string.sub(rest, 1, string.find(rest, '|[^|]*$') - 1)
if (redis.call('HGET', fix, 'v:' .. symbol) or '') ~= version then return -1 end
local held = string.sub(expect, 1, 2) == 'h#'
if not held and amendMs > 0 then
  local last = redis.call('XREVRANGE', late, '+', '-', 'COUNT', 1)
  if (last[1] and last[1][1] or '') ~= ARGV[7] then return -1 end
end
redis.call('HDEL', todo, id)
if held then redis.call('HINCRBY', fix, 'held', -1) end
if ARGV[8] == '1' then
  redis.call('HINCRBY', stats, 'amendsUnmade', 1)
  if not held then return 3 end
  -- and no later revision of it either (closeBars marks such a bar as it closes; this one was held)
  redis.call('HSET', fix, 'u:' .. id, '1')
  redis.call('ZADD', index, wend, 'u:' .. id)
end
local rev = 0
if held then
  if state == '' then
    redis.call('HINCRBY', stats, 'amendsEmptied', 1)
    return 2
  end
  if amendMs > 0 then
    redis.call('HSET', closedBars, id, '0#' .. state)
    redis.call('ZADD', closedIndex, wend, id)
  end
else
  if state == '' then
    redis.call('HINCRBY', stats, 'amendsEmptied', 1)
    return 2
  end
  if amendMs > 0 then
    local cur = redis.call('HGET', closedBars, id)
    if not cur then
      redis.call('HINCRBY', stats, 'amendsTooOld', 1)
      return 3
    end
    rev = tonumber(string.sub(cur, 1, string.find(cur, '#', 1, true) - 1)) + 1
    redis.call('HSET', closedBars, id, rev .. '#' .. state)
    -- its late trades are in the state: their pending correction goes with it
    redis.call('HDEL', amends, id)
    redis.call('ZREM', amendIndex, id)
  else
    rev = redis.call('HINCRBY', fix, 'r:' .. id, 1)
    redis.call('ZADD', index, wend, 'r:' .. id)
  end
end
redis.call('XADD', outbox, '*', 'bars', cjson.encode({{id, state, rev}}))
redis.call('HINCRBY', stats, 'amendedBars', 1)
return 1
