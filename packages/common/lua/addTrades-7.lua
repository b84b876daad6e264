--[[
  Appends a batch of validated trades to a partition's raw stream and stamps each with the
  watermark it was ingested under, so lateness is judged at ingestion (DESIGN: lateness rule).
  With backfill on it also keeps each symbol's last trade time and, in the same step as the first
  trade of a symbol on a feed connection, files a backfill request for the span before it and
  holds the symbol's bars until the request is done.
  For a feed whose trade ids increase per symbol it drops, in the same step, every trade whose id
  is not above the highest id already appended for its symbol (a reconnect that sends trades again,
  a day replayed twice, two ingestors on one feed), so each id lands on the stream once.

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] clock hash of the partition (fields: wm, lastId, in = trades appended, dup = trades dropped
            as already appended (by id), batch:{sender} = last batch applied)
    KEYS[3] last trade time per symbol (backfill)
    KEYS[4] holds: symbol -> deadline ms (backfill)
    KEYS[5] open backfill requests per symbol (backfill)
    KEYS[6] backfill request stream
    KEYS[7] with ARGV[8] "1": the highest trade id appended per symbol (hash: symbol -> id, a whole
            number); with ARGV[8] "w:<ms>": the trades appended in the last <ms> (sorted set: member
            symbol TAB id TAB t, scored by the server time of its append)
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
    ARGV[7] the data marker: '' (no check), "a:<epoch>" (this sender's first batch here: set the
            marker if it is missing) or "m:<epoch>:<ms>" (this sender has appended here before: a
            missing marker means Redis lost candlewick's data since — FLUSHALL, an empty AOF, a
            failover to an empty replica — so the marker is set again and `lost` raised to <ms>,
            the newest event time the sender had seen: bars starting at or before it close
            incomplete, see closeDue)
    ARGV[8] "1" when the feed's trade ids increase per symbol: a trade whose id is a whole number not
            above its symbol's highest in KEYS[7] is dropped (no stream position, not counted in
            `in`, counted in `dup`); ids are compared as whole numbers of any length, never as
            floats; trades without an id, or with one that is not a whole number, are kept
            "w:<ms>" when the feed's ids are unique but in no order (Alpaca's: unique per symbol,
            exchange and day, the exchange carried in the id): a trade whose (symbol, id, event time)
            was appended in the last <ms> by the server clock, or earlier in this batch, is dropped
            the same way; trades without an id are kept
    ARGV[9] r = number of backfill requests, followed by 3 fields each:
            index of the trade in this batch (1-based), floor ms (where the span starts when the
            symbol has no earlier trade), cap ms (the earliest the span may start)
    then    u = number of symbols (0 when backfill is off), followed by 2 fields each: the symbol
            and its latest event time in this batch
    then    rx0, the receive time of the batch's first trade
    then    "1" when some trade of the batch has an id (each trade then has a third field), else "0"
    then    the aggressor sides, one character per trade (b, s or -), or '' when no trade has one
    then    2 fields per trade: t (event time ms) and its line (s TAB p TAB v TAB t TAB c TAB rx - rx0;
            packages/core/src/trade.ts), and a third, its id ('' for none), when the batch has ids
  Output:
    {1, id of the entry added, lost, dup} applied ('' for the id when no trade was left to append);
                                      dup = trades dropped as already appended
    {0, last batch applied}           a batch already applied: nothing done
    {-1, last batch applied}          a hole before this batch: nothing done; send from the next one
    a third element 1 on any of these when this call found the marker missing (the data lost)
  Notes:
    The batch is one stream entry, fields n, rx, d (the lines joined by newlines), and i (the ids,
    one line per trade, empty for a trade without one) and a (the sides) only when some trade kept
    has them; a dropped trade leaves no line in any of them, so they stay aligned. Its id is
    ms-seq with ms the server time (never below the previous entry's), and the next entry starts
    at ms-(seq + n) or later: trade k of this entry owns the stream position ms-(seq + k).
    w (the watermark before this trade) is what the aggregators compare against the trade's window
    end plus grace. It is appended to the line (TAB w) only when the trade could be late at all
    (t + grace < w, since a window ends after t); a line without w was on time. The watermark
    never goes backwards, also when the server clock steps back. Under CLOCK=wall the watermark is
    the server time of the batch.
    A request's span starts just after the symbol's last trade time before this batch, or at the
    floor when there is none; never before the cap.
]]
--- @include "nowMs"

local stream, clock, lastKey, holds, open, requests, highIds = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local seenIds = KEYS[7]
local mode = ARGV[1]
local grace = tonumber(ARGV[2])
local holdMs = tonumber(ARGV[4])
local sender = ARGV[5]
local force = string.sub(ARGV[6], -1) == '!'
local seq = tonumber(force and string.sub(ARGV[6], 1, -2) or ARGV[6])
local checkIds = ARGV[8] == '1'
local seenWindow = tonumber(string.match(ARGV[8], '^w:(%d+)$') or '')
local r = tonumber(ARGV[9])
local u = tonumber(ARGV[10 + 3 * r])
local rx0 = ARGV[11 + 3 * r + 2 * u]
local withIds = ARGV[12 + 3 * r + 2 * u] == '1'
local sides = ARGV[13 + 3 * r + 2 * u]
local first = 14 + 3 * r + 2 * u
local stride = withIds and 3 or 2
local n = (#ARGV - first + 1) / stride

-- The marker is this script's first write: a script refused at its first write (MISCONF, OOM)
-- has changed nothing, and one past it runs to its end (Redis lets a script that has written finish).
-- The data marker comes first: a loss is recorded (and the bars it touched marked) before anything
-- of this batch lands in what is left.
local lostNow = 0
local marker = ARGV[7]
if marker ~= '' and not redis.call('HGET', clock, 'epoch') then
  local kind, epoch, seen = string.match(marker, '^(%a):([^:]*):?(%d*)$')
  redis.call('HSET', clock, 'epoch', epoch)
  if kind == 'm' then
    lostNow = 1
    local prev = tonumber(redis.call('HGET', clock, 'lost') or '-1')
    if tonumber(seen) > prev then redis.call('HSET', clock, 'lost', seen) end
  end
end
if sender ~= '' then
  local done = tonumber(redis.call('HGET', clock, 'batch:' .. sender) or '-1')
  if seq <= done then return {0, done, lostNow} end
  if seq > done + 1 and not force then return {-1, done, lostNow} end
  redis.call('HSET', clock, 'batch:' .. sender, string.format('%d', seq))
end

-- Trades already appended, by id (ARGV[8]): kept[at] is false for them. One HGET per symbol of the
-- batch; the raised highs are written with the entry.
local kept, dup, raised = nil, 0, nil
if checkIds and withIds then
  kept, raised = {}, {}
  local high = {}
  local at = 0
  for i = first, #ARGV, 3 do
    at = at + 1
    local id = ARGV[i + 2]
    kept[at] = true
    if string.find(id, '^%d+$') then
      -- a whole number: compared by length, then digit by digit (leading zeros do not count)
      if string.byte(id) == 48 then id = string.match(id, '^0*(%d+)$') end
      local s = string.match(ARGV[i + 1], '^[^\t]*')
      local h = high[s]
      if h == nil then h = redis.call('HGET', highIds, s) or false end
      if h and (#id < #h or (#id == #h and id <= h)) then
        kept[at] = false
        dup = dup + 1
        high[s] = h
      else
        high[s] = id
        raised[s] = id
      end
    end
  end
  if dup == 0 then kept = nil end
end
-- Trades already appended, by (symbol, id, t) within the window (ARGV[8] "w:<ms>"): one ZSCORE a
-- trade with an id; the new ones are added with the entry, the expired trimmed then.
local now = nowMs()
local fresh = nil
if seenWindow and withIds then
  kept, fresh = {}, {}
  local inBatch = {}
  local at = 0
  for i = first, #ARGV, stride do
    at = at + 1
    local id = ARGV[i + 2]
    kept[at] = true
    if id ~= '' then
      local s = string.match(ARGV[i + 1], '^[^\t]*')
      local member = s .. '\t' .. id .. '\t' .. ARGV[i]
      local score = inBatch[member] or redis.call('ZSCORE', seenIds, member)
      if inBatch[member] or (score and tonumber(score) > now - seenWindow) then
        kept[at] = false
        dup = dup + 1
      else
        inBatch[member] = true
        fresh[#fresh + 1] = member
      end
    end
  end
  if dup == 0 then kept = nil end
end
n = n - dup
redis.call('HINCRBY', clock, 'in', n)
if dup > 0 then redis.call('HINCRBY', clock, 'dup', dup) end
if n == 0 then return {1, '', lostNow, dup} end

-- this entry's id, and the positions of its trades
local ms, sq = now, 0
local nxt = redis.call('HGET', clock, 'next')
if nxt then
  local dash = string.find(nxt, '-', 1, true)
  local nms, nsq = tonumber(string.sub(nxt, 1, dash - 1)), tonumber(string.sub(nxt, dash + 1))
  if ms <= nms then ms, sq = nms, nsq end
else
  -- a stream older than the clock hash (or one without it): start past its last entry
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if top then
    local dash = string.find(top[1], '-', 1, true)
    local tms = tonumber(string.sub(top[1], 1, dash - 1))
    if ms <= tms then ms, sq = tms, tonumber(string.sub(top[1], dash + 1)) + 1 end
  end
end
local id = string.format('%d-%d', ms, sq)

-- requests by trade index; the span's start is read before this batch moves the last trade times
local req = {}
for k = 0, r - 1 do
  local at = tonumber(ARGV[10 + 3 * k])
  local line = ARGV[first + (at - 1) * stride + 1]
  local s = string.match(line, '^[^\t]*')
  local from = tonumber(ARGV[11 + 3 * k])
  local last = redis.call('HGET', lastKey, s)
  if last then from = tonumber(last) + 1 end
  local cap = tonumber(ARGV[12 + 3 * k])
  if from < cap then from = cap end
  req[at] = from
end

local wm = tonumber(redis.call('HGET', clock, 'wm') or '0')
if mode == 'wall' and now > wm then wm = now end
local event = mode == 'event'
local lines, ids, keptSides = {}, {}, {}
local anyId = false
-- at: the trade's place in the batch; k: in the entry (the trades kept)
local at, k = 0, 0
for i = first, #ARGV, stride do
  at = at + 1
  if not kept or kept[at] then
    k = k + 1
    local t = tonumber(ARGV[i])
    if t + grace < wm then
      lines[k] = ARGV[i + 1] .. '\t' .. string.format('%d', wm)
    else
      lines[k] = ARGV[i + 1]
    end
    if event and t > wm then wm = t end
    if withIds then
      ids[k] = ARGV[i + 2]
      if ids[k] ~= '' then anyId = true end
    end
    if kept and sides ~= '' then keptSides[k] = string.sub(sides, at, at) end
    local from = req[at]
    if from and from < t then
      local s, p, v = string.match(ARGV[i + 1], '^([^\t]*)\t([^\t]*)\t([^\t]*)')
      redis.call('XADD', requests, '*', 'symbol', s, 'from', string.format('%d', from), 'to', ARGV[i],
        'p', p, 'v', v, 'id', string.format('%d-%d', ms, sq + k - 1))
      redis.call('HINCRBY', open, s, 1)
      redis.call('HSET', holds, s, string.format('%d', now + holdMs))
    end
  end
end
-- i and a beside d (readers of the numbers never parse them), written only when a trade has one
local fields = {'n', n, 'rx', rx0, 'd', table.concat(lines, '\n')}
if anyId then
  fields[7], fields[8] = 'i', table.concat(ids, '\n')
end
if kept and sides ~= '' then sides = table.concat(keptSides) end
if string.find(sides, '[bs]') then
  local m = #fields
  fields[m + 1], fields[m + 2] = 'a', sides
end
redis.call('XADD', stream, id, unpack(fields))
if raised then
  for s, high in pairs(raised) do redis.call('HSET', highIds, s, high) end
end
if fresh and #fresh > 0 then
  local stamp = string.format('%d', now)
  for from = 1, #fresh, 500 do
    local args = {}
    for j = from, math.min(from + 499, #fresh) do
      args[#args + 1] = stamp
      args[#args + 1] = fresh[j]
    end
    redis.call('ZADD', seenIds, unpack(args))
  end
  redis.call('ZREMRANGEBYSCORE', seenIds, '-inf', string.format('(%d', now - seenWindow))
end
redis.call('HSET', clock, 'wm', string.format('%d', wm), 'lastId', id, 'next', string.format('%d-%d', ms, sq + n))
-- new input: an end of input declared by a final close no longer holds
redis.call('HDEL', clock, 'inputEnd')
for k = 0, u - 1 do
  local s, t = ARGV[11 + 3 * r + 2 * k], tonumber(ARGV[12 + 3 * r + 2 * k])
  local prev = redis.call('HGET', lastKey, s)
  if not prev or t > tonumber(prev) then redis.call('HSET', lastKey, s, string.format('%d', t)) end
end
return {1, id, lostNow, dup}
