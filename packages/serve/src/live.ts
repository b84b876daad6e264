import {
  AGGREGATOR_GROUP,
  barRowCells,
  decodeBarEntry,
  decodeGapEntry,
  partitionOf,
  readCounters,
  rowCells,
  type BarIdentity,
  type BarRowCells,
  type Config,
  type GapEntry,
  type Keys,
  type Logger,
  type RedisClient,
  CLOCK,
  STATS,
} from '@candlewick/common';
import { BarCalendar, decodeBarState, eventLabel, parseBarId, type Clock } from '@candlewick/core';

/**
 * What the page and other HTTP clients see live, from Redis: closed bars and corrections (the
 * `bars:{interval}` streams the writer publishes), the bar still forming (the open bar state the
 * aggregators merge into), feed gaps, and the pipeline's health from its own counters. One reader
 * per process, whatever the number of clients: it polls only for what some client asked for.
 */

/**
 * A bar as the API sends it: the CSV row's cells, with its start and identity. Prices, VWAP and
 * volume are the CSV's text as written (JSON strings): a number would drop what was received
 * (`1.10` read back as `1.1`, `0.00000012` as `1.2e-7`).
 */
export interface ApiBar extends BarIdentity, Omit<BarRowCells, 'trades' | 'vwap'> {
  /** null when unknown (no volume, or part of the bar from candles without it) */
  vwap: string | null;
  /** null when unknown */
  trades: number | null;
  /** an activity bar (docs/activity-bars.md): its number, and its last trade's time (UTC ms) and label */
  bar?: number;
  end?: number;
  endTimestamp?: string;
}

export interface Status {
  at: number;
  /** trades appended per second over the last RATE_WINDOW_MS, whoever asks and however often */
  tradesPerSec: number;
  tradesIn: number;
  merged: number;
  late: number;
  rejected: number;
  /** trades dropped at the append as already on the raw stream (their feed's trade id seen before) */
  duplicates: number;
  /** the feed's corrections and cancels of trades it sent before (FEED=alpaca): kept in feed:corrections, applied to their bars */
  corrections: number;
  cancels: number;
  /** raw entries read by an aggregator and not merged yet */
  pending: number;
  /** seconds from a window's end to its bar being published, for the newest bar (CLOCK=wall only) */
  closeLagSec: number | null;
  feedConnected: boolean;
  /** false when Redis holds no trace of a pipeline under KEY_PREFIX (no feed, no trade): serve shows files alone */
  pipeline: boolean;
  /** ms since the epoch of the newest trade received, 0 if none */
  lastTradeAt: number;
  barsWritten: Record<string, number>;
}

export interface Subscriber {
  symbols: ReadonlySet<string>;
  intervals: ReadonlySet<string>;
  send(event: 'bar' | 'forming' | 'gap' | 'status', data: unknown): void;
}

const num = (s: string): number | null => (s === '' ? null : Number(s));

/** trades/s is measured over this window, from the server's own samples of the trade counter (one a second). */
export const RATE_WINDOW_MS = 5_000;

/** An API bar from a row's cells as written: the one shape the files, the streams and the open state share. */
export function apiBar(interval: string, symbol: string, start: number, c: BarRowCells, rev: number): ApiBar {
  return {
    interval,
    symbol,
    start,
    timestamp: c.timestamp,
    open: c.open,
    high: c.high,
    low: c.low,
    close: c.close,
    vwap: c.vwap === '' ? null : c.vwap,
    volume: c.volume,
    trades: num(c.trades),
    complete: c.complete,
    sources: c.sources,
    rev,
  };
}

export class LiveHub {
  /** each client with the forming bars sent to it, by bar id: their encoded state (a new client gets the current ones) */
  private readonly subscribers = new Map<Subscriber, Map<string, string>>();
  private readonly clock: Clock;
  /** which bars are forming at the watermark */
  private readonly calendar: BarCalendar;
  /** the last id read per stream */
  private readonly cursors = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private lastStatus: Status | undefined;
  /** the trade counter as sampled (oldest first): one at or before the rate window's start, then newer ones */
  private readonly inSamples: { n: number; at: number }[] = [];
  private lastSample = 0;
  private newestBar: { end: number; publishedAt: number } | undefined;
  private stopped = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
    private readonly pollMs = 250,
  ) {
    this.calendar = new BarCalendar(cfg);
    this.clock = this.calendar.clock;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.pollMs);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.subscribers.clear();
  }

  get clients(): number {
    return this.subscribers.size;
  }

  subscribe(s: Subscriber): () => void {
    this.subscribers.set(s, new Map());
    if (this.lastStatus) s.send('status', this.lastStatus);
    return () => this.subscribers.delete(s);
  }

  /** The pipeline's health now, from the counters behind /metrics and the summary. */
  async status(): Promise<Status> {
    const c = await readCounters(this.redis, this.cfg, this.keys);
    let pending = 0;
    for (let p = 0; p < this.cfg.partitions; p++) {
      const reply = (await this.redis.xpending(this.keys.trades(p), AGGREGATOR_GROUP).catch(() => [0])) as [number, ...unknown[]];
      pending += Number(reply[0] ?? 0);
    }
    const stats = await this.redis.hmget(this.keys.stats(), STATS.feedUp, STATS.feedDown);
    const up = Number(stats[0] ?? 0);
    const down = Number(stats[1] ?? 0);
    const now = Date.now();
    const rate = this.rate(c.in, now);
    const lag = this.cfg.clock === 'wall' && this.newestBar ? (this.newestBar.publishedAt - this.newestBar.end) / 1000 : null;
    return {
      at: now,
      tradesPerSec: Math.max(0, Math.round(rate)),
      tradesIn: c.in,
      merged: c.merged,
      late: c.late,
      rejected: c.rejected,
      duplicates: c.duplicates,
      corrections: c.corrections,
      cancels: c.cancels,
      pending,
      closeLagSec: lag,
      feedConnected: up > 0 && up > down,
      pipeline: up > 0 || down > 0 || c.in > 0,
      lastTradeAt: c.lastRx,
      barsWritten: c.written,
    };
  }

  /** Feed gaps recorded by the ingestor that touch [from, to) and one of the symbols (all when empty). */
  async gaps(symbol: string | undefined, from = 0, to = Number.MAX_SAFE_INTEGER): Promise<GapEntry[]> {
    const entries = (await this.redis.xrange(this.keys.gaps(), '-', '+')) as [string, string[]][];
    return entries
      .map(([, f]) => decodeGapEntry(f))
      .filter((g) => g.end > from && g.start < to && (symbol === undefined || g.symbols.length === 0 || g.symbols.includes(symbol)));
  }

  /**
   * Trades/s from the counter's sample at or before the window's start to `n` now: the same for every
   * caller (a rate since the previous caller's poll would say 0 to the second of two pollers).
   */
  private rate(n: number, now: number): number {
    this.addSample(n, now);
    const base = this.inSamples[0]!;
    return now - base.at >= 500 ? ((n - base.n) * 1000) / (now - base.at) : 0;
  }

  private addSample(n: number, at: number): void {
    const s = this.inSamples;
    if (s.length > 0 && at < s[s.length - 1]!.at) return;
    s.push({ n, at });
    this.lastSample = at;
    // keep one sample at or before the window's start
    while (s.length > 1 && s[1]!.at <= at - RATE_WINDOW_MS) s.shift();
  }

  /** The trade counter, sampled once a second whether or not anyone asks (the rate's window). */
  private async sampleIn(): Promise<void> {
    if (Date.now() - this.lastSample < 1000) return;
    let n = 0;
    for (let p = 0; p < this.cfg.partitions; p++) n += Number((await this.redis.hget(this.keys.clock(p), CLOCK.in)) ?? 0);
    this.addSample(n, Date.now());
  }

  private async tick(): Promise<void> {
    if (!this.busy && !this.stopped) {
      this.busy = true;
      await this.sampleIn()
        .catch(() => undefined)
        .finally(() => (this.busy = false));
    }
    if (this.busy || this.stopped || this.subscribers.size === 0) {
      // nothing to send: keep the cursors at the streams' ends, so a new client starts from now
      if (this.subscribers.size === 0) this.cursors.clear();
      return;
    }
    this.busy = true;
    try {
      await this.readStreams();
      await this.pollForming();
      if (!this.lastStatus || Date.now() - this.lastStatus.at >= 1000) {
        this.lastStatus = await this.status();
        for (const s of this.subscribers.keys()) s.send('status', this.lastStatus);
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'live poll failed; trying again');
    } finally {
      this.busy = false;
    }
  }

  private async cursor(key: string): Promise<string> {
    let id = this.cursors.get(key);
    if (id === undefined) {
      const last = (await this.redis.xrevrange(key, '+', '-', 'COUNT', 1)) as [string, string[]][];
      id = last[0]?.[0] ?? '0-0';
      this.cursors.set(key, id);
    }
    return id;
  }

  /** New entries of the bars streams and the gaps stream (plain XREAD, one key at a time: Cluster-safe). */
  private async readStreams(): Promise<void> {
    const wanted = new Set<string>();
    for (const s of this.subscribers.keys()) for (const iv of s.intervals) wanted.add(iv);
    for (const iv of wanted) {
      const key = this.keys.bars(iv);
      for (;;) {
        const from = await this.cursor(key);
        const reply = (await this.redis.xread('COUNT', 1000, 'STREAMS', key, from)) as [string, [string, string[]][]][] | null;
        const entries = reply?.[0]?.[1] ?? [];
        for (const [id, fields] of entries) {
          const t = decodeBarEntry(id, iv, fields);
          const bar = apiBar(iv, t.symbol, t.start, barRowCells(t), t.rev);
          if (t.bar !== undefined) Object.assign(bar, { bar: t.bar, end: t.end, endTimestamp: eventLabel(t.end!, this.clock) });
          for (const sent of this.subscribers.values()) sent.delete(`${iv}|${bar.symbol}|${bar.start}`);
          if (iv === this.cfg.intervals[0]!.name && bar.rev === 0) {
            this.newestBar = { end: bar.start + this.cfg.baseMs, publishedAt: Number(id.slice(0, id.indexOf('-'))) };
          }
          for (const s of this.subscribers.keys()) if (s.intervals.has(iv) && s.symbols.has(bar.symbol)) s.send('bar', bar);
        }
        if (entries.length > 0) this.cursors.set(key, entries[entries.length - 1]![0]);
        if (entries.length < 1000) break;
      }
    }
    const gapsKey = this.keys.gaps();
    const reply = (await this.redis.xread('COUNT', 1000, 'STREAMS', gapsKey, await this.cursor(gapsKey))) as
      [string, [string, string[]][]][] | null;
    for (const [id, fields] of reply?.[0]?.[1] ?? []) {
      const gap = decodeGapEntry(fields);
      this.cursors.set(gapsKey, id);
      for (const s of this.subscribers.keys())
        if (gap.symbols.length === 0 || gap.symbols.some((x) => s.symbols.has(x))) s.send('gap', gap);
    }
  }

  /**
   * The bar forming now for each (symbol, interval) some client follows: the window holding its
   * partition's watermark, as the aggregators have merged it so far. Sent to each client when it
   * changed since that client last had it: a page opened while the market is quiet gets it too.
   */
  private async pollForming(): Promise<void> {
    const byPartition = new Map<number, Map<string, Set<string>>>();
    for (const s of this.subscribers.keys()) {
      for (const sym of s.symbols) {
        const p = partitionOf(sym, this.cfg.partitions);
        let syms = byPartition.get(p);
        if (!syms) byPartition.set(p, (syms = new Map()));
        let ivs = syms.get(sym);
        if (!ivs) syms.set(sym, (ivs = new Set()));
        for (const iv of s.intervals) ivs.add(iv);
      }
    }
    for (const [p, syms] of byPartition) {
      const wm = Number((await this.redis.hget(this.keys.clock(p), CLOCK.wm)) ?? 0);
      if (wm <= 0) continue;
      const ids: string[] = [];
      for (const [sym, ivs] of syms) for (const { id } of this.calendar.barsAt(sym, wm)) if (ivs.has(parseBarId(id).interval)) ids.push(id);
      if (ids.length === 0) continue;
      const states = await this.redis.hmget(this.keys.openBars(p), ...ids);
      ids.forEach((id, i) => {
        const enc = states[i];
        if (!enc) return;
        const { interval, symbol } = parseBarId(id);
        let bar: ApiBar | undefined | null = null;
        for (const [s, sent] of this.subscribers) {
          if (!s.symbols.has(symbol) || !s.intervals.has(interval) || sent.get(id) === enc) continue;
          sent.set(id, enc);
          if (sent.size > 1_000) sent.delete(sent.keys().next().value!);
          if (bar === null) bar = this.formingBar(id, enc);
          if (bar) s.send('forming', bar);
        }
      });
    }
  }

  private formingBar(id: string, enc: string): ApiBar | undefined {
    const { interval, symbol, start } = parseBarId(id);
    const state = decodeBarState(enc);
    // a partial whose trades set no price yet (conditions that may not set the open) has nothing to draw
    if (state.open === '' || state.high === '') return undefined;
    return apiBar(interval, symbol, start, rowCells(this.clock, start, state, this.calendar.days.has(interval)), 0);
  }
}
