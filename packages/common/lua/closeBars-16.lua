--[[
  Finalizes the bars whose window end plus grace has passed the watermark and moves them to the
  outbox in the same atomic step, so a crash between closing and enqueueing loses nothing. The bars
  of one call are one outbox entry (field `bars`: a JSON array of [bar id, state, rev], in closing
  order): a whole market's boundary (40,000 bars) is ten entries to hand over, not one per bar.

  A window is closed only once every entry ingested before the watermark passed its end plus grace
  has been merged (DESIGN: a backlog delays bars, it never makes on-time trades late). To know that,
  the script keeps a checkpoint (W, L): the watermark W and the last stream id L at one instant.
  Entries after L were stamped with a watermark >= W, so once everything up to L is merged, every
  window with end + grace <= W may close.

  Input:
    KEYS[1] raw trade stream of the partition
    KEYS[2] clock hash (wm, lastId, ckW, ckL, closed, covered, inputEnd, evicted, lost)
    KEYS[3] open bars hash
    KEYS[4] open index sorted set (score = window end)
    KEYS[5] outbox stream
    KEYS[6] late trade stream (trimmed by age with the raw stream)
    KEYS[7] LATE=amend: closed bars kept for corrections (field = bar id, value = "rev#state")
    KEYS[8] LATE=amend: closed bars by window end
    KEYS[9] LATE=amend: pending corrections (late trades folded per bar)
    KEYS[10] LATE=amend: pending corrections by window end
    KEYS[11] backfill holds: symbol -> deadline ms; a held symbol's bars stay open until then
    KEYS[12] backfill flags to add to bars as they close (field = bar id)
    KEYS[13] partition stats hash (counts holdsExpired and amendTooOld)
    KEYS[14] fix:{p}: the feed's corrections and cancels (noteAmends); `h:<bar id>` marks a bar
             that one of them amends, to be held at its close
    KEYS[15] fix-todo:{p}: a marked bar, closed, waits here ("h#<state>") for the closer to apply
             the amends (applyFix) before it goes to the outbox
    KEYS[16] fix-index:{p}: what fix:{p} holds, by the window end after which it can go
    ARGV[1] consumer group of the aggregators
    ARGV[2] grace ms
    ARGV[3] clock mode: "event" or "wall"
    ARGV[4] "1" to close every open bar (end of a replay), once everything ingested is merged; the
            watermark then moves past the last closed window
    ARGV[5] retention of the raw stream in ms (0 = keep everything)
    ARGV[6] at most this many bars per call
    ARGV[7] LATE=amend: keep closed bars this many ms past the watermark for corrections (0 = drop)
    ARGV[8] FEED=alpaca (the feed amends trades): a bar closing with trades the raw stream has not
            (backfilled, lost: BAR_FLAGS' source bits and LOST) is marked `u:<bar id>` in fix:{p},
            so that no revision is recomputed from part of it (0: the feed amends nothing)
  Output:
    {bars closed (corrections included), horizon closed through (window end ms; -2 after a flush:
     everything; -1 when nothing could close), more ready (0/1: stopped at ARGV[6], call again),
     merged (0/1: everything ingested so far is merged), bars held for their amends (in fix-todo),
     blocked (0/1: bars held before wait in fix-todo: nothing closed)}
  Phases, in order (each an include below, with its own header):
    holds, group progress, checkpoint, close, coverage, corrections (LATE=amend), trim
]]

--- @include "nowMs"
--- @include "streamIds"
--- @include "holds"
--- @include "groupProgress"
--- @include "checkpoint"
--- @include "closeDue"
--- @include "coverage"
--- @include "corrections"
--- @include "trim"

local stream, clock, late = KEYS[1], KEYS[2], KEYS[6]
local k = {
  bars = KEYS[3], index = KEYS[4], outbox = KEYS[5], closedBars = KEYS[7], closedIndex = KEYS[8],
  amends = KEYS[9], amendIndex = KEYS[10], barFlags = KEYS[12], clock = KEYS[2], stats = KEYS[13],
  fix = KEYS[14], todo = KEYS[15], fixIndex = KEYS[16], held = 0, blocked = false,
  feedAmends = tonumber(ARGV[8] or '0') > 0,
}
local group, grace, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local flush = ARGV[4] == '1'
local retention, maxBars = tonumber(ARGV[5]), tonumber(ARGV[6])
local amendMs = tonumber(ARGV[7] or '0')

local now = nowMs()
local wm = tonumber(redis.call('HGET', clock, 'wm') or '0')
if mode == 'wall' and now > wm then
  wm = now
  redis.call('HSET', clock, 'wm', string.format('%d', wm))
end
local lastId = redis.call('HGET', clock, 'lastId') or '0-0'

local held, anyHeld = readHolds(KEYS[11], k.stats, now)
local delivered, minPending, mergedThrough = groupProgress(stream, group)
local horizon = closingHorizon(clock, wm, lastId, grace, flush, mergedThrough)

local closed, more = 0, false
local out = {}
if horizon then
  local lastEnd
  closed, lastEnd, more = closeDue(k, out, horizon, maxBars, held, anyHeld, amendMs)
  -- The horizon (and with it `closed`, `covered` and the corrections due) moves only once every bar
  -- up to it has left the open set: a call that stopped at its bar limit, or that skipped held
  -- symbols, leaves it where it was, so a correction never finds its bar still open.
  -- (`closing` says which horizon a call that stopped at its limit, or skipped held symbols, is
  -- closing: noteAmends tells by it a bar closed already from one still to close)
  if more or anyHeld then redis.call('HSET', clock, 'closing', string.format('%d', horizon == math.huge and 9e15 or horizon))
  elseif not k.blocked then redis.call('HDEL', clock, 'closing') end
  if anyHeld or more or k.blocked then horizon = false end
  if horizon then wm = recordCoverage(clock, horizon, wm, grace, lastEnd) end
end
if amendMs > 0 and horizon then
  local emitted, moreDue = emitCorrections(k, out, clock, horizon, wm, grace, amendMs, maxBars)
  closed = closed + emitted
  more = more or moreDue
end
if #out > 0 then redis.call('XADD', k.outbox, '*', 'bars', cjson.encode(out)) end
trimByAge(stream, late, now, retention, delivered, minPending)

local h = -1
if horizon then h = horizon == math.huge and -2 or horizon end
return {closed, h, more and 1 or 0, mergedThrough(lastId) and 1 or 0, k.held, k.blocked and 1 or 0}
