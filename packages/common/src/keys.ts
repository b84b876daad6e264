/**
 * Every Redis key candlewick uses comes from here. Keys of one stream partition carry the hash tag
 * `{p}` so that every key a Lua script touches lies in one Redis Cluster slot.
 */
export interface Keys {
  readonly prefix: string;
  /**
   * Raw trade stream of partition p: one entry per ingested batch (fields n, rx, d: the count, the
   * first receive time, and one tab-separated line per trade — s, p, v, t, c, rx offset, w; where
   * the feed gives them, i: the trade ids, a line each, and a: the aggressor sides); see
   * core's trade.ts (`encodeTradeEntry`, `rawEntries`).
   */
  trades(p: number): string;
  /** Late trades of partition p, kept for inspection and corrections. */
  late(p: number): string;
  /** Open bar state of partition p: field = bar id, value = encoded partial bar. */
  openBars(p: number): string;
  /** Sorted set of open bar ids of partition p, scored by window end (ms). */
  openIndex(p: number): string;
  /** Watermark, checkpoint and closed horizon of partition p. */
  clock(p: number): string;
  /** LATE=amend: closed bars kept for corrections (field = bar id, value = "rev#state"). */
  closed(p: number): string;
  /** LATE=amend: closed bars by window end, for eviction. */
  closedIndex(p: number): string;
  /** LATE=amend: late trades folded per bar, waiting for their bar to close (field = bar id). */
  amends(p: number): string;
  /** LATE=amend: pending corrections by window end. */
  amendIndex(p: number): string;
  /** Closed bars waiting to be handed to the writer queue. */
  outbox(p: number): string;
  /** Activity bars: where their cut has got to in trades:{p} and each symbol's state (docs/activity-bars.md). */
  activity(p: number): string;
  /** The feed's corrections and cancels of partition p's symbols, noted (noteAmends-6.lua's header). */
  fix(p: number): string;
  /** Bars of partition p waiting for the closer to apply the feed's amends (applyFix-10.lua). */
  fixTodo(p: number): string;
  /** What fix:{p} holds, by the window end after which it can go. */
  fixIndex(p: number): string;
  /** Counters of partition p written by Lua (late trades, merged trades). */
  partitionStats(p: number): string;
  /** Counters written outside Lua: trades in, rejected, bars written. */
  stats(): string;
  /** Rejected trades with their reason. */
  rejected(): string;
  /** Closed bars of one interval, for other services to tap. */
  bars(interval: string): string;
  /** Feed outages recorded by the ingestor. */
  gaps(): string;
  /**
   * Corrections and cancels of trades the feed sent before (FEED=alpaca), one entry each as received
   * (fields kind, s, raw, rx, and w: the watermark it came under), read and applied to their bars by
   * the closer (aggregator/src/amend.ts); trimmed to TRADES_RETENTION.
   */
  corrections(): string;
  /** Backfill: symbols of partition p whose bars wait for a backfill (field = symbol, value = deadline ms). */
  holds(p: number): string;
  /** Backfill: open requests per symbol of partition p (field = symbol, value = count). */
  holdRequests(p: number): string;
  /** Backfill: requests of partition p (symbol, span, the first live trade after it). */
  backfillRequests(p: number): string;
  /** Backfill: event time of the last live trade ingested per symbol of partition p. */
  lastTrade(p: number): string;
  /**
   * The highest trade id appended per symbol of partition p (field = symbol, value = the id, a whole
   * number), for feeds whose ids increase per symbol: addTrades drops a trade at or below it.
   */
  highIds(p: number): string;
  /** trades appended in the last TRADE_IDS_WINDOW, by (symbol, id, t): feeds whose ids are unique but in no order (Alpaca) */
  seenIds(p: number): string;
  /** Backfill: flags (e.g. incomplete) to add to bars of partition p when they close (field = bar id). */
  barFlags(p: number): string;
  /** A consumer group member's heartbeat (a short TTL): present while it lives. */
  member(group: string, name: string): string;
  /** The run's data marker (epoch.ts): gone means Redis lost candlewick's data. */
  epoch(): string;
  /** The one process of `role` (writer, stack) on this prefix: its holder and heartbeat (a short TTL). */
  owner(role: 'writer' | 'stack'): string;
  /**
   * Key prefix BullMQ uses for the queues: one hash tag, so that each queue's keys (which BullMQ's
   * scripts touch together) share a Redis Cluster slot.
   */
  queuePrefix(): string;
}

export function makeKeys(prefix: string): Keys {
  const tag = (p: number) => `{${p}}`;
  return Object.freeze({
    prefix,
    trades: (p: number) => `${prefix}:trades:${tag(p)}`,
    late: (p: number) => `${prefix}:trades:late:${tag(p)}`,
    openBars: (p: number) => `${prefix}:open:${tag(p)}`,
    openIndex: (p: number) => `${prefix}:open-index:${tag(p)}`,
    clock: (p: number) => `${prefix}:clock:${tag(p)}`,
    outbox: (p: number) => `${prefix}:outbox:${tag(p)}`,
    activity: (p: number) => `${prefix}:activity:${tag(p)}`,
    fix: (p: number) => `${prefix}:fix:${tag(p)}`,
    fixTodo: (p: number) => `${prefix}:fix-todo:${tag(p)}`,
    fixIndex: (p: number) => `${prefix}:fix-index:${tag(p)}`,
    closed: (p: number) => `${prefix}:closed:${tag(p)}`,
    closedIndex: (p: number) => `${prefix}:closed-index:${tag(p)}`,
    amends: (p: number) => `${prefix}:amends:${tag(p)}`,
    amendIndex: (p: number) => `${prefix}:amend-index:${tag(p)}`,
    partitionStats: (p: number) => `${prefix}:stats:${tag(p)}`,
    stats: () => `${prefix}:stats`,
    rejected: () => `${prefix}:trades:rejected`,
    bars: (interval: string) => `${prefix}:bars:${interval}`,
    gaps: () => `${prefix}:feed:gaps`,
    corrections: () => `${prefix}:feed:corrections`,
    holds: (p: number) => `${prefix}:backfill:holds:${tag(p)}`,
    holdRequests: (p: number) => `${prefix}:backfill:open:${tag(p)}`,
    backfillRequests: (p: number) => `${prefix}:backfill:requests:${tag(p)}`,
    lastTrade: (p: number) => `${prefix}:feed:last:${tag(p)}`,
    highIds: (p: number) => `${prefix}:feed:ids:${tag(p)}`,
    seenIds: (p: number) => `${prefix}:feed:seen:${tag(p)}`,
    barFlags: (p: number) => `${prefix}:backfill:flags:${tag(p)}`,
    member: (group: string, name: string) => `${prefix}:members:${group}:${name}`,
    epoch: () => `${prefix}:epoch`,
    owner: (role: string) => `${prefix}:owner:${role}`,
    queuePrefix: () => `{${prefix}:q}`,
  });
}

export const AGGREGATOR_GROUP = 'aggregator';
export const BARS_QUEUE = 'bars';
export const CLOSE_QUEUE = 'close';
export const BACKFILL_GROUP = 'backfill';

/** Stable partition of a symbol: FNV-1a 32-bit hash modulo the partition count. */
export function partitionOf(symbol: string, partitions: number): number {
  if (partitions <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < symbol.length; i++) {
    h ^= symbol.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/** A symbol as a file-name part: BINANCE:BTCUSDT -> BINANCE_BTCUSDT. */
export function fileSafeSymbol(symbol: string): string {
  return symbol.replace(/[^A-Za-z0-9._-]/g, '_');
}

/**
 * A BullMQ job id for a bar. BullMQ refuses ':' in custom ids, and symbols such as BINANCE:BTCUSDT
 * contain one, so the symbol is percent-encoded (which keeps distinct symbols distinct, unlike
 * fileSafeSymbol).
 */
export function barJobId(interval: string, symbol: string, start: number, rev = 0): string {
  return `${interval}-${encodeURIComponent(symbol).replace(/%/g, '~')}-${start}${rev ? `r${rev}` : ''}`;
}
