import type { Config } from './config.js';
import { CLOCK, PARTITION_STATS as PS, STATS, writtenField } from './fields.js';
import type { Keys } from './keys.js';
import { monoMs, RECONNECT_WITHIN_MS, redisLink, type RedisClient, type RedisLink } from './redis.js';

/** The counters behind the summary, summed over partitions. */
export interface Counters {
  in: number;
  /** trades dropped at the append as already on the raw stream (their id seen; feeds whose ids increase) */
  duplicates: number;
  rejected: number;
  /** of the rejected: ahead of the clock or the feed (FUTURE_LIMIT_MS) */
  future: number;
  /** trades for symbols not subscribed, dropped */
  foreign: number;
  badFrames: number;
  /** the feed's corrections and cancels of trades it sent before (FEED=alpaca): kept in feed:corrections, applied by the closer */
  corrections: number;
  cancels: number;
  /** bars written with them applied (as they closed, or as a revision) */
  amendedBars: number;
  /** bars an amend was in, past LATE_AMEND_WINDOW at the watermark it came under (or no longer kept): not amended */
  amendsTooOld: number;
  /** closed bars whose every trade the amends took out: left as written */
  amendsEmptied: number;
  /** bars an amend was in whose trades are not all on the raw stream (backfilled, trimmed, lost): not amended */
  amendsUnmade: number;
  late: number;
  merged: number;
  filtered: number;
  /** CONDITIONS=cta-utp: trades whose conditions let them set nothing */
  excluded: number;
  /** trades carrying condition codes the table does not know */
  unknownConditions: number;
  /** LATE=amend: late trades past LATE_AMEND_WINDOW for every bar they belong to (in no correction) */
  amendTooOld: number;
  /** trades of partials for windows already closed, kept in trades:late and in no bar (should stay 0) */
  lateAfterClose: number;
  /** BACKFILL=on: symbols whose hold passed BACKFILL_HOLD, so their bars closed without the backfill */
  holdsExpired: number;
  /** BACKFILL=on: trades or candles of a backfill that came after its hold expired, in no bar */
  backfillTooLate: number;
  written: Record<string, number>;
  /** the ingestor's hold of trades outside Redis (receipt to Redis's answer), as it last reported */
  holdMaxMs: number;
  holdMeanMs: number;
  firstRx: number;
  lastRx: number;
  feedUp: number;
  lastMerge: number;
}

/** The counters from the stats hash and each partition's `in`, `dup` and stats hash (all empty: zeros). */
export function countersFrom(
  cfg: Config,
  stats: Record<string, string>,
  partitions: { in: number; dup?: number; stats: Record<string, string> }[],
): Counters {
  const c: Counters = {
    in: 0,
    duplicates: 0,
    rejected: Number(stats[STATS.rejected] ?? 0),
    future: Number(stats[STATS.future] ?? 0),
    foreign: Number(stats[STATS.foreign] ?? 0),
    badFrames: Number(stats[STATS.badFrames] ?? 0),
    corrections: Number(stats[STATS.corrections] ?? 0),
    cancels: Number(stats[STATS.cancels] ?? 0),
    amendedBars: 0,
    amendsTooOld: 0,
    amendsEmptied: 0,
    amendsUnmade: 0,
    late: 0,
    merged: 0,
    filtered: 0,
    excluded: 0,
    unknownConditions: 0,
    amendTooOld: 0,
    lateAfterClose: 0,
    holdsExpired: 0,
    backfillTooLate: 0,
    written: {},
    holdMaxMs: Number(stats[STATS.ingestHoldMaxMs] ?? 0),
    holdMeanMs: Number(stats[STATS.ingestHoldMeanMs] ?? 0),
    firstRx: Number(stats[STATS.firstRx] ?? 0),
    lastRx: Number(stats[STATS.lastRx] ?? 0),
    feedUp: Number(stats[STATS.feedUp] ?? 0),
    lastMerge: 0,
  };
  for (const { in: n, dup, stats: ps } of partitions) {
    c.in += n;
    c.duplicates += dup ?? 0;
    c.late += Number(ps[PS.late] ?? 0);
    c.merged += Number(ps[PS.merged] ?? 0);
    c.filtered += Number(ps[PS.filtered] ?? 0);
    c.excluded += Number(ps[PS.excluded] ?? 0);
    c.unknownConditions += Number(ps[PS.unknownConditions] ?? 0);
    c.amendTooOld += Number(ps[PS.amendTooOld] ?? 0);
    c.amendedBars += Number(ps[PS.amendedBars] ?? 0);
    c.amendsTooOld += Number(ps[PS.amendsTooOld] ?? 0);
    c.amendsEmptied += Number(ps[PS.amendsEmptied] ?? 0);
    c.amendsUnmade += Number(ps[PS.amendsUnmade] ?? 0);
    c.lateAfterClose += Number(ps[PS.lateAfterClose] ?? 0);
    c.holdsExpired += Number(ps[PS.holdsExpired] ?? 0);
    c.backfillTooLate += Number(ps[PS.backfillTooLate] ?? 0);
    c.lastMerge = Math.max(c.lastMerge, Number(ps[PS.lastMergeMs] ?? 0));
  }
  for (const iv of [...cfg.intervals, ...cfg.activity]) c.written[iv.name] = Number(stats[writtenField(iv.name)] ?? 0);
  return c;
}

/** Counters that count nothing yet: the baseline after Redis lost its data. */
export function zeroCounters(cfg: Config): Counters {
  return countersFrom(cfg, {}, []);
}

export async function readCounters(redis: RedisClient, cfg: Config, keys: Keys): Promise<Counters> {
  const partitions: { in: number; dup: number; stats: Record<string, string> }[] = [];
  for (let p = 0; p < cfg.partitions; p++) {
    const [n, dup] = await redis.hmget(keys.clock(p), CLOCK.in, CLOCK.dup);
    partitions.push({ in: Number(n ?? 0), dup: Number(dup ?? 0), stats: await redis.hgetall(keys.partitionStats(p)) });
  }
  return countersFrom(cfg, await redis.hgetall(keys.stats()), partitions);
}

/**
 * The input is over and every stage has drained: the feed has been quiet `idleMs` (by Redis's
 * counters and, where given, the ingestor's own word, which holds while Redis cannot take its
 * trades), everything ingested is merged, and no symbol waits for a backfill.
 */
export async function idleAndDrained(
  redis: RedisClient,
  cfg: Config,
  keys: Keys,
  idleMs: number,
  since: number,
  quiet: Quiet,
  ingest?: { lastRx: number; pending: number },
): Promise<boolean> {
  const c = await readCounters(redis, cfg, keys);
  // The idle clock starts when this run's feed is first up, so a slow start is not mistaken for the end.
  // (the ingestor's own word counts too: a Redis that lost its data has lost feedUp with it)
  if (c.feedUp < since && !(ingest && ingest.lastRx >= since)) return false;
  if (ingest && ingest.pending > 0) return false;
  // Quiet = nothing new seen for idleMs on this process's monotonic clock. Not now − lastRx: the
  // receive times are the ingestor's clock, maybe another host's, and a step of either clock would
  // end the input early (bars closed under trades still coming) or keep it open for an hour.
  if (quiet.for(`${c.in}:${c.lastRx}:${c.feedUp}:${ingest?.lastRx ?? 0}:${ingest?.pending ?? 0}`) < idleMs) return false;
  if (c.merged + c.late < c.in) return false;
  for (let p = 0; p < cfg.partitions; p++) if ((await redis.hlen(keys.holds(p))) > 0) return false;
  return true;
}

/**
 * How long a marker of activity has stayed the same, on the monotonic clock, as far as this
 * process could see it. Time Redis was away from this process is not quiet seen: the others went
 * on meanwhile (an ingestor holds what its feed sent and hands it over once it is back, on its own
 * reconnect, perhaps after this process). So while Redis is away the count is 0, and after an
 * outage it starts again only once every process has had time to be back (RECONNECT_WITHIN_MS).
 */
export class Quiet {
  private marker: string | undefined;
  private since: number;

  constructor(
    private readonly link: Pick<RedisLink, 'downForMs' | 'upForMs'> = redisLink,
    private readonly now: () => number = monoMs,
  ) {
    this.since = now();
  }

  for(marker: string): number {
    const now = this.now();
    if (marker !== this.marker || this.link.downForMs > 0) {
      this.marker = marker;
      this.since = now;
    }
    // (upForMs: Infinity when this process has never lost Redis)
    const from = Math.max(this.since, now - this.link.upForMs + RECONNECT_WITHIN_MS);
    return Math.max(0, now - from);
  }
}
