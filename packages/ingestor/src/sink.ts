import {
  crashPoint,
  addTrades,
  addTradesArgs,
  forcedArgs,
  type AddTradesArgs,
  type BackfillAsk,
  metrics,
  monoMs,
  partitionOf,
  processId,
  redisLink,
  reportRedisError,
  sleep,
  type AddTradesReply,
  type Keys,
  type Logger,
  type RedisClient,
  SlotTransactions,
  encodeGapEntry,
  CLOCK,
  STATS,
} from '@candlewick/common';
import { type Trade } from '@candlewick/core';

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
  /** how long a batch Redis acknowledged is kept to send again if Redis loses it (default 3 s) */
  retainMs?: number;
  /** the run's data marker (epoch.ts), once known: each batch carries it so Redis losing its data is found */
  epoch?: () => string | undefined;
  /** an append found partition p's marker gone: Redis lost its data; bars starting by `seen` close incomplete */
  onLost?: (p: number, seen: number) => void;
  /**
   * Where the partition's master has replicas: keep each batch until this many of them have it
   * (WAIT), however long that takes, so a failover to a replica loses nothing (default 1; 0: off)
   */
  waitReplicas?: number;
  /**
   * The feed's trade ids increase per symbol (FEED=binance): addTrades drops a trade whose id is not
   * above the highest already appended for its symbol, so a reconnect that sends trades again, a day
   * replayed twice or a second ingestor on the same feed appends each trade once (default false)
   */
  idsIncrease?: boolean;
  /**
   * The feed's trade ids are unique but in no order (FEED=alpaca, TRADE_IDS_WINDOW): addTrades drops
   * a trade whose (symbol, id, time) it appended within this many ms, so a second ingestor on the
   * same feed, or a connection that sends trades again, appends each trade once
   */
  idsWindowMs?: number;
  /** TRADES_RETENTION: feed:corrections is trimmed to entries this recent (default 1 h) */
  tradesRetentionMs?: number;
}

/** A correction or cancel of a trade the feed sent before, as the sink keeps it. */
export interface SinkAmend {
  kind: 'correction' | 'cancel';
  symbol: string;
  event: unknown;
}

/** One batch of one partition, from the moment it is cut until Redis has kept it for retainMs. */
interface Batch {
  seq: number;
  args: AddTradesArgs;
  n: number;
  firstRx: number;
  lastRx: number;
  /** sent at least once (a batch cut while its partition resynchronises waits) */
  sent: boolean;
  /** when Redis acknowledged it (0: not yet) */
  ackedAt: number;
}

/** What the sink could not hand over (Redis lost it and it was no longer held, or Redis never came back). */
export interface SinkLoss {
  trades: number;
  firstRx: number;
  lastRx: number;
}

/**
 * Buffers validated trades for at most `flushMs` (or `batch` trades) and appends them to the raw
 * stream with addTrades, one script call per partition and batch. Calls go out on one connection
 * in order, so the stream keeps arrival order. This buffer is the only place a trade lives outside
 * Redis; its size in time is `flushMs` plus one Redis round trip.
 *
 * Batches are numbered per partition without holes and addTrades applies batch n only right after
 * n - 1. So a batch ioredis sends again after a Redis restart is not appended twice, and batches
 * Redis acknowledged and then lost (killed between two AOF fsyncs, up to about a second) are
 * noticed at the next batch and sent again, in order, from what the sink still holds (`retainMs`).
 * A batch Redis refused (MISCONF on a full disk, OOM) is sent again after a backoff, never dropped.
 */
export class TradeSink {
  private buf: Trade[][] = [];
  /** per partition: ARGV triples (index in batch, floor, cap) of the trades that file a backfill request */
  private requests: BackfillAsk[][] = [];
  /** per partition: batches in flight and those acknowledged within retainMs, in batch order */
  private held: Batch[][] = [];
  private nextSeq: number[] = [];
  private resyncing: boolean[] = [];
  /** symbols seen on the current feed connection */
  private seen = new Set<string>();
  private count = 0;
  private timer: NodeJS.Timeout | undefined;
  /** trades cut into batches and not yet acknowledged */
  private inFlight = 0;
  private paused = false;
  private sentFirst = false;
  private settled: (() => void)[] = [];
  added = 0;
  /** trades addTrades dropped as already appended (idsIncrease) */
  duplicates = 0;
  lastRx = 0;
  /** trades Redis acknowledged, then lost, and the sink no longer held */
  readonly lost: SinkLoss = { trades: 0, firstRx: 0, lastRx: 0 };
  /** receive time of the oldest trade in the buffer */
  private oldestRx = 0;
  /** how long trades waited outside Redis: from receipt to Redis's answer (per batch's oldest trade) */
  readonly holdTime = { maxMs: 0, sumMs: 0, batches: 0 };
  private holdReport: NodeJS.Timeout | undefined;
  /** this process as a sender of batches: addTrades checks its batch numbers */
  private readonly sender = processId();
  private readonly retainMs: number;
  private readonly waitReplicas: number;
  /** per partition: the highest batch a replica is known to have (WAIT), -1 none yet */
  private replicated: number[] = [];
  /** per partition: its master had no replica when last asked (then retainMs alone keeps batches) */
  private noReplica: boolean[] = [];
  /** per partition: since when (monotonic) its master has had no replica (0: it has one; -1: never seen one) */
  private replicaGoneAt: number[] = [];
  /** per partition: a WAIT in flight */
  private confirming: boolean[] = [];
  /** per partition: not before this time (monotonic ms) the next WAIT, and its timer */
  private confirmAt: number[] = [];
  private confirmTimers: (NodeJS.Timeout | undefined)[] = [];
  private readonly metrics = {
    in: metrics.tradesIn(),
    duplicate: metrics.tradesDuplicate(),
    rejected: metrics.tradesRejected(),
    amends: metrics.feedAmends(),
    hold: metrics.ingestHold(),
  };

  constructor(
    private readonly redis: RedisClient,
    private readonly opts: SinkOptions,
    private readonly log: Logger,
    private readonly onPressure?: (paused: boolean) => void,
  ) {
    this.retainMs = opts.retainMs ?? 3000;
    this.waitReplicas = opts.waitReplicas ?? 1;
    for (let p = 0; p < opts.partitions; p++) {
      this.replicated.push(-1);
      this.noReplica.push(this.waitReplicas === 0);
      this.confirming.push(false);
      this.replicaGoneAt.push(-1);
      this.confirmAt.push(0);
      this.confirmTimers.push(undefined);
      this.buf.push([]);
      this.requests.push([]);
      this.held.push([]);
      this.nextSeq.push(0);
      this.resyncing.push(false);
      this.forgotten.push([]);
    }
  }

  /** A new feed connection: the first trade of each symbol on it files a backfill request. */
  newConnection(): void {
    this.seen = new Set();
  }

  push(trade: Trade): void {
    if (trade.t > this.seenT) this.seenT = trade.t;
    const p = partitionOf(trade.s, this.opts.partitions);
    const bf = this.opts.backfill;
    if (bf && !this.seen.has(trade.s)) {
      this.seen.add(trade.s);
      this.requests[p]!.push({ at: this.buf[p]!.length + 1, floorMs: bf.floor(trade.s, trade.t), capMs: trade.t - bf.maxSpanMs });
    }
    if (this.count === 0) this.oldestRx = trade.rx;
    this.buf[p]!.push(trade);
    this.count++;
    this.lastRx = trade.rx;
    if (this.count >= this.opts.batch) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.opts.flushMs);
  }

  private get highWater(): number {
    return this.opts.highWater ?? this.opts.batch * 8;
  }

  /** Cuts everything buffered into batches and sends them; the promise settles when Redis has them all. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.count > 0) this.cut();
    return this.drained();
  }

  private cut(): void {
    const bufs = this.buf;
    const requests = this.requests;
    const oldestRx = this.oldestRx;
    this.inFlight += this.count;
    this.buf = bufs.map(() => []);
    this.requests = requests.map(() => []);
    this.count = 0;
    if (this.inFlight > this.highWater && !this.paused) {
      this.paused = true;
      this.onPressure?.(true);
    }
    bufs.forEach((trades, p) => {
      if (trades.length === 0) return;
      const seq = this.nextSeq[p]!++;
      const epoch = this.opts.epoch?.();
      // the partition's marker: set by this sender's first batch there, expected by every later one
      const marker = epoch ? { epoch, seen: this.cutTo[p] ? this.maxT : undefined } : undefined;
      if (epoch) this.cutTo[p] = true;
      for (const t of trades) if (t.t > this.maxT) this.maxT = t.t;
      const args = addTradesArgs(
        {
          clock: this.opts.clock,
          graceMs: this.opts.graceMs,
          backfillHoldMs: this.opts.backfill?.holdMs,
          sender: this.sender,
          seq,
          marker,
          idsIncrease: this.opts.idsIncrease,
          idsWindowMs: this.opts.idsWindowMs,
        },
        requests[p]!,
        trades,
      );
      const batch: Batch = {
        seq,
        args,
        n: trades.length,
        firstRx: Math.max(oldestRx, trades[0]!.rx),
        lastRx: trades[trades.length - 1]!.rx,
        sent: false,
        ackedAt: 0,
      };
      this.held[p]!.push(batch);
      // while a partition resynchronises, its new batches wait their turn behind the ones it sends again
      if (!this.resyncing[p]) this.send(p, batch);
    });
    const stats = this.opts.keys.stats();
    const lastRx = String(this.lastRx);
    void this.redis
      .hset(stats, STATS.lastRx, lastRx)
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to record the last receive time'));
    if (!this.sentFirst) {
      // first trade this process appended: where `stack` starts counting throughput
      this.sentFirst = true;
      void this.redis
        .hset(stats, STATS.firstRx, lastRx)
        .catch((err: unknown) => reportRedisError(this.log, err, 'failed to record the first receive time'));
    }
  }

  private send(p: number, batch: Batch): Promise<void> {
    batch.sent = true;
    return addTrades(this.redis, this.opts.keys, p, batch.args).then(
      (reply) => this.onReply(p, batch, reply),
      (err: unknown) => {
        // With maxRetriesPerRequest null ioredis waits through reconnects, so this is Redis refusing
        // the script (MISCONF on a full disk, OOM, ...): nothing was applied; send it again later.
        reportRedisError(this.log, err, 'Redis refused a batch of trades; sending it again after a pause', { trades: batch.n });
        // not applied: a resync already under way must send it again before it calls itself done
        batch.sent = false;
        this.resync(p, undefined, true);
      },
    );
  }

  /** partitions this sink has cut a marked batch for; the newest event time cut so far */
  private readonly cutTo: boolean[] = [];
  /** partitions whose data Redis lost (said by the ingestor): their lost batches are part of it */
  private readonly dataLost = new Set<number>();
  private maxT = 0;

  /** an append that found the data marker gone: said by the ingestor (onLost) */
  private noticeLoss(p: number, reply: AddTradesReply, batch: Batch): void {
    if (!reply.lost) return;
    this.dataLost.add(p);
    this.opts.onLost?.(p, batch.args.options.marker?.seen ?? this.maxT);
  }

  private onReply(p: number, batch: Batch, reply: AddTradesReply): void {
    this.noticeLoss(p, reply, batch);
    if (reply.status === 'hole') {
      batch.sent = false; // (not applied, as above)
      if (!this.resyncing[p]) this.resync(p, reply.applied, false);
      return;
    }
    this.acked(p, batch, reply.status === 'applied' ? reply.dup : 0);
  }

  /** Redis has the batch; `dup` of its trades were dropped as already appended. */
  private acked(p: number, batch: Batch, dup = 0): void {
    if (batch.ackedAt !== 0) return; // a resend of a batch already counted
    redisLink.wrote();
    const now = Date.now();
    // (monotonic: how long a batch is kept must not follow a step of the wall clock)
    batch.ackedAt = monoMs();
    this.added += batch.n - dup;
    this.duplicates += dup;
    this.inFlight -= batch.n;
    const held = now - batch.firstRx;
    this.metrics.in.inc(batch.n - dup);
    if (dup) {
      this.metrics.duplicate.inc(dup);
      if (this.duplicates === dup)
        this.log.info(
          { partition: p, trades: dup },
          'trades already on the raw stream (their ids appended before: a resend, a replay, or another ingestor on this feed) are dropped and counted as duplicates',
        );
    }
    crashPoint('ingest:appended'); // a batch is in Redis, the rest of what the feed sent is not
    this.metrics.hold.observe(held / 1000);
    this.holdTime.batches++;
    this.holdTime.sumMs += held;
    if (held > this.holdTime.maxMs) this.holdTime.maxMs = held;
    this.holdReport ??= setTimeout(() => void this.reportHold(), 1000);
    if (this.paused && this.inFlight <= this.highWater / 2) {
      this.paused = false;
      this.onPressure?.(false);
    }
    this.trim(p, batch.ackedAt);
    this.confirm(p);
    if (this.inFlight === 0 && this.count === 0) for (const done of this.settled.splice(0)) done();
  }

  /**
   * Asks partition p's master, on the connection the batches went over, to wait until a replica
   * has everything this connection wrote (WAIT): the batches acknowledged before it may then be
   * forgotten. At most one WAIT per partition every CONFIRM_EVERY_MS (a batch is held for retainMs
   * anyway), so WAIT, which holds up the connection for a round trip to the replica, costs little.
   * A master without replicas is asked INFO instead (WAIT there would only wait out its timeout),
   * and found one the next time it has one.
   */
  private confirm(p: number): void {
    if (this.waitReplicas === 0 || this.confirming[p]) return;
    // (monotonic: a step of this host's clock must neither hold the next WAIT off for an hour nor hurry it)
    const wait = this.confirmAt[p]! - monoMs();
    if (wait > 0) {
      this.confirmTimers[p] ??= setTimeout(() => {
        this.confirmTimers[p] = undefined;
        this.confirm(p);
      }, wait).unref();
      return;
    }
    const held = this.held[p]!;
    let upTo = -1;
    for (const b of held) if (b.ackedAt !== 0) upTo = b.seq;
    if (upTo <= this.replicated[p]!) return;
    this.confirming[p] = true;
    this.confirmAt[p] = monoMs() + CONFIRM_EVERY_MS;
    const key = this.opts.keys.clock(p);
    const run = async () => {
      // the keyed read sends the pipeline to the partition's master on a Cluster (the same connection)
      // (a failover can send the pipeline to another node: its keyed read then fails with MOVED, and
      // that node's answer is not this partition's)
      const [[routeErr] = [null], [infoErr, info] = [null, '']] =
        (await this.redis.pipeline().exists(key).info('replication').exec()) ?? [];
      if (routeErr ?? infoErr) throw routeErr ?? infoErr;
      if (/connected_slaves:[1-9]/.test(String(info))) {
        this.replicaGoneAt[p] = 0;
        this.noReplica[p] = false;
      } else if (this.noReplica[p] || this.replicaGoneAt[p] === -1) {
        // never had one (a single Redis): INGEST_RETAIN alone, as without replicas
        this.noReplica[p] = true;
        return;
      } else {
        // its replica went (it lags, restarts, or took over a dead master): the batches wait for
        // one for REPLICA_GONE_MS, then INGEST_RETAIN alone keeps them
        const now = monoMs();
        if (this.replicaGoneAt[p] === 0) this.replicaGoneAt[p] = now;
        this.noReplica[p] = now - this.replicaGoneAt[p]! > REPLICA_GONE_MS;
        this.confirmAt[p] = now + LAGGING_MS;
        return;
      }
      // a healthy replica answers within a round trip; one that lags holds up the connection at
      // most WAIT_MS, and is asked again only after LAGGING_MS
      const [[movedErr] = [null], [waitErr, acks] = [null, 0]] =
        (await this.redis.pipeline().exists(key).call('WAIT', String(this.waitReplicas), String(WAIT_MS)).exec()) ?? [];
      if (movedErr ?? waitErr) throw movedErr ?? waitErr;
      if (Number(acks) >= this.waitReplicas) this.replicated[p] = Math.max(this.replicated[p]!, upTo);
      else this.confirmAt[p] = monoMs() + LAGGING_MS;
    };
    run().then(
      () => {
        this.confirming[p] = false;
        this.trim(p, monoMs());
        this.confirm(p);
      },
      (err: unknown) => {
        // a master lost on the way: the batches stay held; the next acknowledgement asks again
        this.confirming[p] = false;
        this.confirmAt[p] = monoMs() + LAGGING_MS;
        // MOVED: the slot map is changing (a failover the link reports); the next try finds the master
        if (!(err instanceof Error && /^(MOVED|ASK) /.test(err.message)))
          reportRedisError(this.log, err, 'could not ask Redis whether a replica has the batches');
      },
    );
  }

  /**
   * Forgets acknowledged batches older than retainMs (Redis has fsynced them by then) that a
   * replica has (or whose master has none), keeping a line per batch (its size and receive times)
   * for an exact account should Redis lose it anyway.
   */
  private trim(p: number, now: number): void {
    const held = this.held[p]!;
    const kept = this.noReplica[p] ? Infinity : this.replicated[p]!;
    let k = 0;
    while (k < held.length && held[k]!.ackedAt !== 0 && now - held[k]!.ackedAt > this.retainMs && held[k]!.seq <= kept) k++;
    if (k === 0) return;
    const log = this.forgotten[p]!;
    for (const b of held.splice(0, k)) log.push({ seq: b.seq, trades: b.n, firstRx: b.firstRx, lastRx: b.lastRx });
    if (log.length > 200_000) log.splice(0, log.length - 100_000);
  }

  /** Per partition, the batches trimmed from `held`, oldest first (bounded). */
  private readonly forgotten: (SinkLoss & { seq: number })[][] = [];

  /**
   * Sends partition p's batches again from the first one Redis does not have (`applied` + 1, read
   * from Redis when not given), in order, until Redis has every batch cut so far. Batches Redis
   * lost that the sink no longer holds are accounted for loudly, and the rest applied after them.
   */
  private resync(p: number, applied: number | undefined, pause: boolean): void {
    if (this.resyncing[p]) return;
    this.resyncing[p] = true;
    const run = async () => {
      let attempt = pause ? 1 : 0;
      for (;;) {
        if (attempt > 0) await sleep(Math.min(10_000, 250 * 2 ** Math.min(attempt - 1, 6)));
        try {
          const done = applied ?? Number((await this.redis.hget(this.opts.keys.clock(p), `${CLOCK.batchPrefix}${this.sender}`)) ?? -1);
          applied = undefined;
          const held = this.held[p]!;
          // Redis has these (a reply lost to a refusal of another batch sent with them): done
          for (const b of held) if (b.seq <= done && b.ackedAt === 0) this.acked(p, b);
          this.trim(p, monoMs());
          const todo = held.filter((b) => b.seq > done);
          if (todo.length === 0) break;
          let force = false;
          if (todo[0]!.seq > done + 1) {
            this.loseHeldGap(p, done, todo[0]!);
            force = true;
          }
          // batches that were only in flight (reordered by a failover's retries) are no news
          if (attempt === 0 && !pause && todo.some((b) => b.ackedAt !== 0))
            this.log.warn(
              { partition: p, from: done + 1, batches: todo.length },
              'Redis does not have batches it acknowledged (restarted without its last writes?): sending them again',
            );
          const settled = await Promise.allSettled(
            todo.map((b, i) => {
              b.sent = true;
              const args = i === 0 && force ? forcedArgs(b.args) : b.args;
              return addTrades(this.redis, this.opts.keys, p, args);
            }),
          );
          let hole: number | undefined;
          // what Redis applied is acked even when a later batch of the same round was refused
          settled.forEach((r, i) => {
            if (r.status === 'rejected') return;
            this.noticeLoss(p, r.value, todo[i]!);
            if (r.value.status === 'hole') hole ??= r.value.applied;
            else this.acked(p, todo[i]!, r.value.status === 'applied' ? r.value.dup : 0);
          });
          const refused = settled.find((r) => r.status === 'rejected');
          if (refused) throw refused.reason;
          if (hole === undefined && held.every((b) => b.sent)) break;
          applied = hole;
          attempt = hole === undefined ? 0 : attempt + 1;
        } catch (err) {
          reportRedisError(this.log, err, 'sending batches again failed; retrying', { partition: p });
          attempt++;
        }
      }
      this.resyncing[p] = false;
    };
    void run();
  }

  /** Batches done+1 .. first.seq-1 are gone from Redis and from here: say so, exactly, and count them. */
  private loseHeldGap(p: number, done: number, first: Batch): void {
    const batches = first.seq - done - 1;
    const lost: SinkLoss = { trades: 0, firstRx: 0, lastRx: 0 };
    let known = 0;
    for (const b of this.forgotten[p]!) {
      if (b.seq <= done || b.seq >= first.seq) continue;
      known++;
      lost.trades += b.trades;
      if (lost.firstRx === 0) lost.firstRx = b.firstRx;
      lost.lastRx = b.lastRx;
    }
    if (known < batches)
      this.log.error(
        { partition: p, batches, known },
        'some lost batches are older than this ingestor remembers: the count below is a lower bound',
      );
    this.lost.trades += lost.trades;
    if (this.lost.firstRx === 0) this.lost.firstRx = lost.firstRx;
    this.lost.lastRx = Math.max(this.lost.lastRx, lost.lastRx);
    if (this.dataLost.has(p))
      this.log.warn(
        { partition: p, batches, ...lost },
        'the trades of these batches went with the data Redis lost (see above); their span is recorded in feed:gaps',
      );
    else
      this.log.error(
        { partition: p, batches, ...lost },
        'Redis lost batches of trades it had acknowledged, older than this ingestor keeps them (INGEST_RETAIN): they are gone; the span is recorded in feed:gaps',
      );
    void this.redis
      .xadd(
        this.opts.keys.gaps(),
        '*',
        ...encodeGapEntry({ start: lost.firstRx, end: lost.lastRx, symbols: [], reason: 'redis lost acknowledged trades' }),
      )
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to record a gap'));
  }

  /** Resolves when every trade cut so far is in Redis. */
  private drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settled.push(resolve));
  }

  /** Records rejected trades with their reason (counted and kept in trades:rejected); `kind` counts them apart too. */
  reject(raw: unknown, reason: string, rx: number, kind?: 'future'): void {
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
    tx.on(stats).hincrby(stats, STATS.rejected, 1);
    if (kind) tx.on(stats).hincrby(stats, STATS[kind], 1);
    void tx.exec().catch((err: unknown) => reportRedisError(this.log, err, 'failed to record a rejected trade'));
  }

  /**
   * The feed went down: hold the bars of these symbols (up to holdMs) so that none closes before
   * the backfill of the outage can reach it.
   */
  async hold(symbols: readonly string[]): Promise<void> {
    const bf = this.opts.backfill;
    if (!bf || symbols.length === 0) return;
    const byPartition = new Map<number, string[]>();
    // compared in addTrades and closeBars with Redis's TIME: Redis's clock, not this host's
    const deadline = String(redisLink.redisNowMs() + bf.holdMs);
    for (const s of symbols) {
      const p = partitionOf(s, this.opts.partitions);
      if (!byPartition.has(p)) byPartition.set(p, []);
      byPartition.get(p)!.push(s, deadline);
    }
    await Promise.all([...byPartition].map(([p, fields]) => this.redis.hset(this.opts.keys.holds(p), ...fields)));
  }

  /** Counts a trade for a symbol not subscribed (dropped). */
  foreignTrade(): void {
    void this.redis
      .hincrby(this.opts.keys.stats(), STATS.foreign, 1)
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to count a trade for a symbol not in SYMBOLS'));
  }

  /** the feed's corrections and cancels of trades sent before, received by this process */
  readonly amended = { correction: 0, cancel: 0 };
  /** the highest event time of a trade taken so far: the watermark an amend comes under, CLOCK=event */
  private seenT = 0;

  /**
   * The feed's corrections and cancels of trades it sent before: each is counted (corrections,
   * cancels) and kept as received on feed:corrections (trimmed to TRADES_RETENTION) with the
   * watermark it came under (`w`: Redis's time, or CLOCK=event the highest event time taken before
   * it), where the closer reads and applies them (aggregator/src/amend.ts); the first is said.
   */
  amends(list: readonly SinkAmend[], rx: number): Promise<void> {
    if (list.length === 0) return Promise.resolve();
    const first = this.amended.correction + this.amended.cancel === 0;
    const key = this.opts.keys.corrections();
    const stats = this.opts.keys.stats();
    const tx = new SlotTransactions(this.redis);
    // exactly (not ~): corrections are few, and a trim by whole stream nodes would keep them all
    // (entry ids are Redis's time: so is the cut)
    const minId = String(Math.max(0, redisLink.redisNowMs() - (this.opts.tradesRetentionMs ?? 3_600_000)));
    const w = this.opts.clock === 'wall' ? Math.round(redisLink.redisNowMs()) : this.seenT;
    for (const a of list) {
      this.amended[a.kind]++;
      this.metrics.amends.inc({ kind: a.kind });
      let raw: string;
      try {
        raw = JSON.stringify(a.event) ?? String(a.event);
      } catch {
        raw = String(a.event);
      }
      tx.on(key).xadd(key, 'MINID', minId, '*', 'kind', a.kind, 's', a.symbol, 'raw', raw.slice(0, 4000), 'rx', String(rx), 'w', String(w));
      tx.on(stats).hincrby(stats, a.kind === 'correction' ? STATS.corrections : STATS.cancels, 1);
    }
    if (first)
      this.log.warn(
        { kind: list[0]!.kind, symbol: list[0]!.symbol, stream: key },
        "the feed corrected or cancelled a trade it sent before: the closer applies it to the trade's bars (a bar still open as it closes, a closed one as a new revision in its .corrections.csv); each is counted (the summary, /metrics' candlewick_feed_amends_total) and kept as received in feed:corrections (said once)",
      );
    return tx
      .exec()
      .then(() => undefined)
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to keep a correction or cancel'));
  }

  /** Counts a frame that is not JSON or has an unknown type. */
  badFrame(): void {
    this.metrics.rejected.inc();
    void this.redis
      .hincrby(this.opts.keys.stats(), STATS.badFrames, 1)
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to count a bad frame'));
  }

  /** Publishes the hold figures (this process's) in the stats hash, at most once a second. */
  private reportHold(): Promise<unknown> {
    this.holdReport = undefined;
    const h = this.holdTime;
    return this.redis
      .hset(
        this.opts.keys.stats(),
        STATS.ingestHoldMaxMs,
        String(h.maxMs),
        STATS.ingestHoldMeanMs,
        (h.sumMs / Math.max(1, h.batches)).toFixed(2),
      )
      .catch(() => undefined);
  }

  /** Trades received and not yet acknowledged by Redis: buffered, and cut into batches in flight. */
  holding(): number {
    return this.count + this.inFlight;
  }

  /** Trades cut into batches that Redis has not acknowledged yet (with their receive times). */
  pending(): SinkLoss {
    const out: SinkLoss = { trades: 0, firstRx: 0, lastRx: 0 };
    for (const held of this.held) {
      for (const b of held) {
        if (b.ackedAt !== 0) continue;
        out.trades += b.n;
        if (out.firstRx === 0 || b.firstRx < out.firstRx) out.firstRx = b.firstRx;
        out.lastRx = Math.max(out.lastRx, b.lastRx);
      }
    }
    return out;
  }

  /** Flushes and waits until Redis has everything, at most `timeoutMs`; returns what it could not hand over. */
  async close(timeoutMs = 10_000): Promise<SinkLoss> {
    const done = this.flush();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    for (const t of this.confirmTimers) clearTimeout(t);
    if (this.holdReport) {
      clearTimeout(this.holdReport);
      this.holdReport = undefined;
      if (this.inFlight === 0) await this.reportHold();
    }
    return this.pending();
  }
}

/** How often (ms) at most the sink asks a partition's master whether a replica has its batches. */
const CONFIRM_EVERY_MS = 250;
/** WAIT's timeout (ms), and the pause before asking again after a replica did not answer in time. */
const WAIT_MS = 50;
const LAGGING_MS = 1000;
/** How long batches wait for a master's replica that went away before INGEST_RETAIN alone keeps them. */
const REPLICA_GONE_MS = 60_000;
