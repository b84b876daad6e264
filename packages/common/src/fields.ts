/**
 * The field names of candlewick's counter and clock hashes, spelled once: TypeScript reads and
 * writes them through these tables, and the Lua scripts, which spell them as literals (a script
 * stays readable and takes no extra arguments), are checked against them by `fields.test.ts`.
 */

/** Each partition's clock hash (`clock:{p}`): written by the scripts, read by the roles. */
export const CLOCK = Object.freeze({
  /** the watermark (ms) */
  wm: 'wm',
  /** the raw stream's last entry id, and the id the next entry starts at */
  lastId: 'lastId',
  next: 'next',
  /** trades appended */
  in: 'in',
  /** trades dropped as already appended: their id not above their symbol's highest (feeds whose ids increase) */
  dup: 'dup',
  /** the run's data marker (epoch.ts), and the newest event time seen when Redis lost it */
  epoch: 'epoch',
  lost: 'lost',
  /** closeBars' checkpoint: the watermark and the last stream id at one instant */
  ckW: 'ckW',
  ckL: 'ckL',
  /** how far windows are closed, covered (EMPTY_BARS=carry), and forgotten for corrections */
  closed: 'closed',
  covered: 'covered',
  evicted: 'evicted',
  /** the horizon a closeBars call that stopped at its bar limit (or skipped held symbols) is closing */
  closing: 'closing',
  /** the watermark a final close ended the input at */
  inputEnd: 'inputEnd',
  /** `batch:{sender}`: the last batch a sender applied */
  batchPrefix: 'batch:',
});

/** Each partition's stats hash (`stats:{p}`): counters of the aggregators, the closer and backfill. */
export const PARTITION_STATS = Object.freeze({
  merged: 'merged',
  late: 'late',
  lastMergeMs: 'lastMergeMs',
  /** outside SESSIONS */
  filtered: 'filtered',
  /** CONDITIONS=cta-utp: trades whose conditions let them set nothing */
  excluded: 'excluded',
  unknownConditions: 'unknownConditions',
  /** LATE=amend: late trades in no correction (past LATE_AMEND_WINDOW, or their bar forgotten first) */
  amendTooOld: 'amendTooOld',
  /** partials for a window already closed, kept in trades:late (mergeBatch) */
  lateAfterClose: 'lateAfterClose',
  /** backfill holds past BACKFILL_HOLD: their bars closed without the backfill */
  holdsExpired: 'holdsExpired',
  /** trades or candles a backfill merged, and those that came after their hold expired */
  backfilled: 'backfilled',
  backfillTooLate: 'backfillTooLate',
  /** the feed's corrections and cancels (FEED=alpaca): bars written with them applied (as closed, or a revision) */
  amendedBars: 'amendedBars',
  /** bars an amend was in that were past LATE_AMEND_WINDOW (or no longer kept): not amended */
  amendsTooOld: 'amendsTooOld',
  /** closed bars whose every trade the amends took out: left as written */
  amendsEmptied: 'amendsEmptied',
  /** bars an amend was in whose trades are not all on the raw stream (backfilled, trimmed, lost): not amended */
  amendsUnmade: 'amendsUnmade',
});

/** The stats hash (`stats`): counters of the ingestor and the writer. */
export const STATS = Object.freeze({
  rejected: 'rejected',
  /** of the rejected: ahead of the clock or the feed */
  future: 'future',
  foreign: 'foreign',
  badFrames: 'badFrames',
  /** the feed's corrections and cancels of trades sent before: kept in feed:corrections, applied by the closer */
  corrections: 'corrections',
  cancels: 'cancels',
  firstRx: 'firstRx',
  lastRx: 'lastRx',
  feedUp: 'feedUp',
  feedDown: 'feedDown',
  ingestHoldMaxMs: 'ingestHoldMaxMs',
  ingestHoldMeanMs: 'ingestHoldMeanMs',
  /** `written:{interval}`: rows the writer appended */
  writtenPrefix: 'written:',
  /** `csv:{kind}`: files the writer repaired */
  csvPrefix: 'csv:',
});

export const writtenField = (interval: string): string => `${STATS.writtenPrefix}${interval}`;
