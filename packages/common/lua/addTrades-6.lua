--[[
  Appends a batch of validated trades to a partition's raw stream and stamps each with the
  watermark it was ingested under, so lateness is judged at ingestion (DESIGN: lateness rule).
  With backfill on it also keeps each symbol's last trade time and, in the same step as the first
  trade of a symbol on a feed connection, files a backfill request for the span before it and
  holds the symbol's bars until the request is done.

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] clock hash of the partition (fields: wm, lastId, in = trades appended, batch:{sender} = last batch applied)
    KEYS[3] last trade time per symbol (backfill)
    KEYS[4] holds: symbol -> deadline ms (backfill)
    KEYS[5] open backfill requests per symbol (backfill)
    KEYS[6] backfill request stream
    ARGV[1] clock mode: "event" (watermark = highest event time ingested) or "wall" (Redis time)
    ARGV[2] grace ms
    ARGV[3] "1" when backfill is on
    ARGV[4] hold: ms a symbol's bars wait for its backfill at most
    ARGV[5] sender: the ingestor process appending ('' = no sequence check)
    ARGV[6] its batch number in this partition, 0, 1, 2, ... without holes; a batch is applied only
            right after the one before it: a batch sent again (the client resends a command whose
            reply a Redis restart cut off) is recognised and not appended twice, and a batch after
            a hole (Redis lost acknowledged batches: killed between two fsyncs) is refused, so the
            sender sends the lost ones again first, in order
            "<n>!" forces batch n to apply whatever came before (the sender no longer holds the
            lost ones, and says so)
    ARGV[7] r = number of backfill requests, followed by 3 fields each:
            index of the trade in this batch (1-based), floor ms (where the span starts when the
            symbol has no earlier trade), cap ms (the earliest the span may start)
    then    6 fields per trade: s, p, v, t, c, rx
  Output:
    {1, id of the last entry added}   applied
    {0, last batch applied}           a batch already applied: nothing done
    {-1, last batch applied}          a hole before this batch: nothing done; send from the next one
  Notes:
    w (the watermark before this trade) is what the aggregators compare against the trade's window
    end plus grace. It is written only when the trade could be late at all (t + grace < w, since a
    window ends after t); an entry without w was on time. The watermark never goes backwards, also
    when the server clock steps back.
    A request's span starts just after the symbol's last trade time before this batch, or at the
    floor when there is none; never before the cap.
]]
--- @include "nowMs"

local stream, clock, lastKey, holds, open, requests = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local mode = ARGV[1]
local grace = tonumber(ARGV[2])
local backfill = ARGV[3] == '1'
local holdMs = tonumber(ARGV[4])
local sender = ARGV[5]
local force = string.sub(ARGV[6], -1) == '!'
local seq = tonumber(force and string.sub(ARGV[6], 1, -2) or ARGV[6])
local r = tonumber(ARGV[7])
local first = 8 + 3 * r

-- The marker is this script's first write: a script refused at its first write (MISCONF, OOM)
-- has changed nothing, and one past it runs to its end (Redis lets a script that has written finish).
if sender ~= '' then
  local done = tonumber(redis.call('HGET', clock, 'batch:' .. sender) or '-1')
  if seq <= done then return {0, done} end
  if seq > done + 1 and not force then return {-1, done} end
  redis.call('HSET', clock, 'batch:' .. sender, string.format('%d', seq))
end
redis.call('HINCRBY', clock, 'in', (#ARGV - first + 1) / 6)

local now = nowMs()

-- requests by trade index; the span's start is read before this batch moves the last trade times
local req = {}
for k = 0, r - 1 do
  local at = tonumber(ARGV[8 + 3 * k])
  local s = ARGV[first + (at - 1) * 6]
  local from = tonumber(ARGV[9 + 3 * k])
  local last = redis.call('HGET', lastKey, s)
  if last then from = tonumber(last) + 1 end
  local cap = tonumber(ARGV[10 + 3 * k])
  if from < cap then from = cap end
  req[at] = from
end

local wm = tonumber(redis.call('HGET', clock, 'wm') or '0')
local lastId = false
local lastT = {}
local at = 0
for i = first, #ARGV, 6 do
  at = at + 1
  if mode == 'wall' then
    local ms = nowMs()
    if ms > wm then wm = ms end
  end
  local t = tonumber(ARGV[i + 3])
  if t + grace < wm then
    lastId = redis.call('XADD', stream, '*', 's', ARGV[i], 'p', ARGV[i + 1], 'v', ARGV[i + 2],
      't', ARGV[i + 3], 'c', ARGV[i + 4], 'rx', ARGV[i + 5], 'w', string.format('%d', wm))
  else
    lastId = redis.call('XADD', stream, '*', 's', ARGV[i], 'p', ARGV[i + 1], 'v', ARGV[i + 2],
      't', ARGV[i + 3], 'c', ARGV[i + 4], 'rx', ARGV[i + 5])
  end
  if mode == 'event' and t > wm then wm = t end
  if backfill then
    local s = ARGV[i]
    local cur = lastT[s]
    if not cur or t > cur then lastT[s] = t end
    local from = req[at]
    if from then
      if from < t then
        redis.call('XADD', requests, '*', 'symbol', s, 'from', string.format('%d', from), 'to', ARGV[i + 3],
          'p', ARGV[i + 1], 'v', ARGV[i + 2], 'id', lastId)
        redis.call('HINCRBY', open, s, 1)
        redis.call('HSET', holds, s, string.format('%d', now + holdMs))
      end
    end
  end
end
if lastId then
  redis.call('HSET', clock, 'wm', string.format('%d', wm), 'lastId', lastId)
  -- new input: an end of input declared by a final close no longer holds
  redis.call('HDEL', clock, 'inputEnd')
end
if backfill then
  for s, t in pairs(lastT) do
    local prev = redis.call('HGET', lastKey, s)
    if not prev or t > tonumber(prev) then redis.call('HSET', lastKey, s, string.format('%d', t)) end
  end
end
return {1, lastId or ''}
