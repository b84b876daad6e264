import {
  ConfigError,
  metrics,
  reportRedisError,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
  encodeGapEntry,
  ensureEpoch,
  type GapEntry,
  CLOCK,
  STATS,
} from '@candlewick/common';
import { BarCalendar, type Clock } from '@candlewick/core';
import { TradeFeed, feedIdsIncrease, feedIdsUnique, feedProtocol } from './feeds/index.js';
import { TradeSink } from './sink.js';

/** The ingest role: the feed (FEED) -> validation -> raw trade stream. */
export class Ingestor {
  readonly sink: TradeSink;
  readonly feed: TradeFeed;

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    if (cfg.symbols.length === 0)
      throw new ConfigError(['SYMBOLS is empty: name the symbols to subscribe, e.g. SYMBOLS=AAPL,BINANCE:BTCUSDT']);
    const calendar = new BarCalendar(cfg);
    const clock = calendar.clock;
    const reconnects = metrics.wsReconnects();
    const gaps = metrics.feedGaps();
    const longest = cfg.intervals[cfg.intervals.length - 1]!;
    this.sink = new TradeSink(
      redis,
      {
        keys,
        partitions: cfg.partitions,
        clock: cfg.clock,
        graceMs: cfg.graceMs,
        batch: cfg.ingestBatch,
        flushMs: cfg.ingestFlushMs,
        retainMs: cfg.ingestRetainMs,
        epoch: () => this.epoch,
        onLost: (p, seen) => this.dataLost(p, seen, cfg, clock),
        waitReplicas: cfg.ingestWaitReplicas,
        // Binance's trade ids (aggregate and raw) increase per symbol: a trade sent twice lands once
        idsIncrease: feedIdsIncrease(cfg),
        // Alpaca's are unique per symbol, exchange and day but in no order: kept for a window
        idsWindowMs: feedIdsUnique(cfg) ? cfg.tradeIdsWindowMs : undefined,
        tradesRetentionMs: cfg.tradesRetentionMs,
        backfill: cfg.backfill
          ? {
              holdMs: cfg.backfillHoldMs,
              maxSpanMs: cfg.backfillMaxSpanMs,
              floor: (symbol, t) => calendar.window(symbol, t, longest)[0],
            }
          : undefined,
      },
      log.child({ component: 'sink' }),
      (paused) => this.feed.pressure(paused),
    );
    /** An outage, as the backfill worker reads it (the gap entry), counted and said. */
    const recordGap = (gap: GapEntry, message: string): void => {
      log.warn({ gap }, message);
      gaps.inc();
      void redis
        .xadd(keys.gaps(), '*', ...encodeGapEntry(gap))
        .catch((err: unknown) => reportRedisError(log, err, 'failed to record a feed gap'));
    };
    this.feed = new TradeFeed(
      feedProtocol(cfg),
      {
        symbols: cfg.symbols,
        futureLimitMs: cfg.futureLimitMs,
        clock: cfg.clock,
        staleMs: cfg.staleMs,
        onUp: () => {
          if (this.connections++ > 0) reconnects.inc();
          void redis.hset(keys.stats(), STATS.feedUp, String(Date.now())).catch(() => undefined);
          // A live ingestor that replaces one that stopped (or died): the time between is an outage.
          if (this.previousRx > 0 && cfg.mode === 'live') {
            const gap = { start: this.previousRx, end: Date.now(), symbols: cfg.symbols, reason: 'ingestor restart' };
            this.previousRx = 0;
            recordGap(gap, 'ingestor restarted: outage recorded');
          }
        },
        onDown: () => {
          void redis.hset(keys.stats(), STATS.feedDown, String(Date.now())).catch(() => undefined);
          this.sink
            .hold(cfg.symbols)
            .catch((err: unknown) => reportRedisError(log, err, 'failed to hold bars for the backfill of an outage'));
        },
        onGap: (gap) => recordGap(gap, 'feed outage recorded'),
      },
      this.sink,
      log.child({ component: 'feed' }),
    );
  }

  /** settles with the reason when the feed gave up for good */
  get fatal(): Promise<Error> {
    return this.feed.fatal;
  }

  private connections = 0;
  /** the run's data marker (epoch.ts), read at start */
  private epoch: string | undefined;
  private lossSaid = false;

  /**
   * Redis lost candlewick's data (an append found partition p's marker gone): said once, in plain
   * words, with the span of the bars that were open — addTrades has already recorded the loss, so
   * they close incomplete (BAR_FLAGS.LOST), never as if whole: beside their bar files in the default
   * format, complete=false in them with CSV_EXTRA_COLUMNS.
   */
  private dataLost(p: number, seen: number, cfg: Config, clock: Clock): void {
    metrics.redisDataLost().inc();
    if (this.lossSaid) return;
    this.lossSaid = true;
    const from = Math.min(...cfg.intervals.map((iv) => clock.window(seen, iv.ms, 0, iv.day)[0]));
    this.log.error(
      { marker: this.keys.epoch(), partition: p, from: clock.label(from), to: clock.label(seen) },
      `Redis lost candlewick's data (the marker key ${this.keys.epoch()} is gone: FLUSHALL, a lost AOF, a failover to an empty replica): ` +
        `open bars from ${clock.label(from)} to ${clock.label(seen)} are incomplete — the trades merged into them are gone, so they are never written as if whole ` +
        `(${cfg.csvExtraColumns ? 'complete=false in their files' : 'not in their bar files but beside them, in <file>.incomplete.csv'}); ` +
        'bars closed but not yet written then are gone too, and the counters start again. The run carries on',
    );
  }

  health(): Health {
    return { ok: this.feed.connected, feed: this.feed.connected ? 'connected' : 'down' };
  }

  /** receive time of the last trade a previous ingestor appended (0: none) */
  private previousRx = 0;

  async start(): Promise<void> {
    const t0 = Date.now();
    this.previousRx = Number((await this.redis.hget(this.keys.stats(), STATS.lastRx)) ?? 0);
    this.epoch = await ensureEpoch(this.redis, this.keys);
    if (this.cfg.clock === 'event') {
      // the feed time a previous ingestor left: a restart does not forget how far the feed had come
      let wm = 0;
      for (let p = 0; p < this.cfg.partitions; p++) wm = Math.max(wm, Number((await this.redis.hget(this.keys.clock(p), CLOCK.wm)) ?? 0));
      this.feed.future.seed(wm);
    }
    await this.feed.start();
    // how long a (re)started ingestor takes to have trades flowing into Redis again
    const watch = setInterval(() => {
      // (trades dropped as already appended count: Redis has them, from this ingestor or its twin)
      if (this.sink.added + this.sink.duplicates === 0) return;
      clearInterval(watch);
      const ms = Date.now() - t0;
      metrics.ingestStart().set(ms / 1000);
      this.log.info({ ms }, 'trades flowing into Redis');
    }, 10);
    watch.unref();
  }

  async stop(): Promise<void> {
    await this.feed.stop();
    // the input has ended: a trade held back for confirmation is rejected, with its reason
    this.feed.endInput();
  }

  progress(): { lastRx: number; pending: number; held: number } {
    return { lastRx: this.sink.lastRx, pending: this.sink.holding(), held: this.feed.future.holding };
  }

  /** The supervisor saw the input end: a trade held back for confirmation is rejected. */
  endInput(): void {
    this.feed.endInput();
  }

  unsaved(): string | undefined {
    const p = this.sink.pending();
    if (p.trades === 0) return undefined;
    return `${p.trades} trades received ${new Date(p.firstRx).toISOString()} to ${new Date(p.lastRx).toISOString()} are not in Redis`;
  }
}
