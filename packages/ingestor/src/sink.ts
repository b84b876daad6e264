import { addTradesKeys, metrics, partitionOf, processId, writeTradeArgs, type Keys, type Logger, type Trade, type RedisClient, SlotTransactions } from '@candlewick/common';

/** Backfill requests: what the sink needs to file one with the first trade of a symbol on a connection. */
export interface SinkBackfill {
  /** ms a symbol's bars wait for its backfill at most */
  holdMs: number;
  /** the span never reaches further back than this before the first live trade */
  maxSpanMs: number;
  /** where the span starts for a symbol with no earlier trade: its longest interval's window start */
  floor(symbol: string, t: number): number;
}

export interface SinkOptions {
  keys: Keys;
  partitions: number;
  clock: 'wall' | 'event';
  graceMs: number;
  /** flush when this many trades are buffered */
  batch: number;
  /** ... or when the oldest buffered trade has waited this long */
  flushMs: number;
  /** pause the source above this many trades in flight to Redis */
  highWater?: number;
  /** BACKFILL=on */
  backfill?: SinkBackfill;
}

/**
 * Buffers validated trades for at most `flushMs` (or `batch` trades) and appends them to the raw
 * stream with addTrades, one script call per partition and batch. Calls go out on one connection
 * in order, so the stream keeps arrival order. This buffer is the only place a trade lives outside
 * Redis; its size in time is `flushMs` plus one Redis round trip.
 */
export class TradeSink {
  private buf: Trade[][] = [];
  /** per partition: ARGV triples (index in batch, floor, cap) of the trades that file a backfill request */
  private requests: string[][] = [];
  /** symbols seen on the current feed connection */
  private seen = new Set<string>();
  private count = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private flushing: Promise<void> = Promise.resolve();
  private sentFirst = false;
  added = 0;
  lastRx = 0;
  /** receive time of the oldest trade in the buffer */
  private oldestRx = 0;
  /** how long trades waited outside Redis: from receipt to Redis's answer (per batch's oldest trade) */
  readonly holdTime = { maxMs: 0, sumMs: 0, batches: 0 };
  private holdReport: NodeJS.Timeout | undefined;
  /** this process as a sender of batches, and its batch number: addTrades never applies a batch twice */
  private readonly sender = processId();
  private batchSeq = 0;
  private readonly metrics = { in: metrics.tradesIn(), rejected: metrics.tradesRejected(), hold: metrics.ingestHold() };

  constructor(
    private readonly redis: RedisClient,
    private readonly opts: SinkOptions,
    private readonly log: Logger,
    private readonly onPressure?: (paused: boolean) => void,
  ) {
    for (let p = 0; p < opts.partitions; p++) {
      this.buf.push([]);
      this.requests.push([]);
    }
  }

  /** A new feed connection: the first trade of each symbol on it files a backfill request. */
  newConnection(): void {
    this.seen = new Set();
  }

  push(trade: Trade): void {
    const p = partitionOf(trade.s, this.opts.partitions);
    const bf = this.opts.backfill;
    if (bf && !this.seen.has(trade.s)) {
      this.seen.add(trade.s);
      this.requests[p]!.push(String(this.buf[p]!.length + 1), String(bf.floor(trade.s, trade.t)), String(trade.t - bf.maxSpanMs));
    }
    if (this.count === 0) this.oldestRx = trade.rx;
    this.buf[p]!.push(trade);
    this.count++;
    this.lastRx = trade.rx;
    if (this.count >= this.opts.batch) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.opts.flushMs);
  }

  /** Sends everything buffered; the promise settles when Redis has it. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.count === 0) return this.flushing;
    const batches = this.buf;
    const oldestRx = this.oldestRx;
    const requests = this.requests;
    const n = this.count;
    this.buf = batches.map(() => []);
    this.requests = requests.map(() => []);
    this.count = 0;
    this.inFlight += n;
    const high = this.opts.highWater ?? this.opts.batch * 8;
    if (this.inFlight > high) this.onPressure?.(true);
    const sends: Promise<unknown>[] = [];
    batches.forEach((trades, p) => {
      if (trades.length === 0) return;
      const req = requests[p]!;
      const args: string[] = new Array(7 + req.length + trades.length * 6);
      args[0] = this.opts.clock;
      args[1] = String(this.opts.graceMs);
      args[2] = this.opts.backfill ? '1' : '0';
      args[3] = String(this.opts.backfill?.holdMs ?? 0);
      args[4] = this.sender;
      args[5] = String(this.batchSeq);
      args[6] = String(req.length / 3);
      let k = 7;
      for (const x of req) args[k++] = x;
      for (const tr of trades) k = writeTradeArgs(tr, args, k);
      sends.push(this.redis.cwAddTrades_v1(...addTradesKeys(this.opts.keys, p), ...args));
    });
    this.batchSeq++;
    sends.push(this.redis.hset(this.opts.keys.stats(), 'lastRx', String(this.lastRx)));
    if (!this.sentFirst) {
      // first trade this process appended: where `stack` starts counting throughput
      this.sentFirst = true;
      sends.push(this.redis.hset(this.opts.keys.stats(), 'firstRx', String(this.lastRx)));
    }
    const done = Promise.all(sends).then(
      () => {
        this.added += n;
        this.inFlight -= n;
        const held = Date.now() - oldestRx;
        this.metrics.in.inc(n);
        this.metrics.hold.observe(held / 1000);
        this.holdTime.batches++;
        this.holdTime.sumMs += held;
        if (held > this.holdTime.maxMs) this.holdTime.maxMs = held;
        this.holdReport ??= setTimeout(() => void this.reportHold(), 1000);
        if (this.inFlight <= high / 2) this.onPressure?.(false);
      },
      (err: unknown) => {
        // With maxRetriesPerRequest null, ioredis waits through reconnects, so an error here is a
        // script or server error: keep the process alive but make it loud.
        this.inFlight -= n;
        this.log.error({ err, trades: n }, 'failed to append trades to the raw stream');
      },
    );
    this.flushing = this.flushing.then(() => done);
    return this.flushing;
  }

  /** Records rejected trades with their reason (counted and kept in trades:rejected). */
  reject(raw: unknown, reason: string, rx: number): void {
    let text: string;
    try {
      text = JSON.stringify(raw) ?? String(raw);
    } catch {
      text = String(raw);
    }
    if (text.length > 2000) text = `${text.slice(0, 2000)}…`;
    this.metrics.rejected.inc();
    const tx = new SlotTransactions(this.redis);
    const { rejected, stats } = { rejected: this.opts.keys.rejected(), stats: this.opts.keys.stats() };
    tx.on(rejected).xadd(rejected, 'MAXLEN', '~', '100000', '*', 'raw', text, 'reason', reason, 'rx', String(rx));
    tx.on(stats).hincrby(stats, 'rejected', 1);
    void tx
      .exec()
      .catch((err: unknown) => this.log.error({ err }, 'failed to record a rejected trade'));
  }

  /**
   * The feed went down: hold the bars of these symbols (up to holdMs) so that none closes before
   * the backfill of the outage can reach it.
   */
  async hold(symbols: readonly string[]): Promise<void> {
    const bf = this.opts.backfill;
    if (!bf || symbols.length === 0) return;
    const byPartition = new Map<number, string[]>();
    const deadline = String(Date.now() + bf.holdMs);
    for (const s of symbols) {
      const p = partitionOf(s, this.opts.partitions);
      if (!byPartition.has(p)) byPartition.set(p, []);
      byPartition.get(p)!.push(s, deadline);
    }
    await Promise.all([...byPartition].map(([p, fields]) => this.redis.hset(this.opts.keys.holds(p), ...fields)));
  }

  /** Counts a frame that is not JSON or has an unknown type. */
  badFrame(): void {
    this.metrics.rejected.inc();
    void this.redis.hincrby(this.opts.keys.stats(), 'badFrames', 1).catch(() => undefined);
  }

  /** Publishes the hold figures (this process's) in the stats hash, at most once a second. */
  private reportHold(): Promise<unknown> {
    this.holdReport = undefined;
    const h = this.holdTime;
    return this.redis
      .hset(this.opts.keys.stats(), 'ingestHoldMaxMs', String(h.maxMs), 'ingestHoldMeanMs', (h.sumMs / Math.max(1, h.batches)).toFixed(2))
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.flush();
    await this.flushing;
    if (this.holdReport) {
      clearTimeout(this.holdReport);
      await this.reportHold();
    }
  }
}
