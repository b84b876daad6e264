import {
  AGGREGATOR_GROUP,
  CLOCK,
  Membership,
  RecurringError,
  crashPoint,
  duplicateRedis,
  ensureGroup,
  isConnectionError,
  isRefusal,
  mergeBatch,
  mergeBatchArgs,
  monoMs,
  metrics,
  redisLink,
  sleep,
  workerName,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
  type StreamEntry,
  PARTITION_STATS,
} from '@candlewick/common';
import {
  BAR_FLAGS,
  CalendarRangeError,
  BarCalendar,
  Preaggregator,
  conditionRules,
  rawEntries,
  type ConditionRules,
  type RawEntry,
} from '@candlewick/core';
import type { Gauge } from 'prom-client';

/** how long after finding its consumer group gone the aggregator judges whether Redis lost its data */
const GROUP_GONE_JUDGED_MS = 2000;

/**
 * A consumer-group worker on the raw trade streams. Per partition: reclaim stale entries of dead
 * workers now and then (XAUTOCLAIM), XREADGROUP a batch, pre-aggregate it in memory, and merge it
 * into the open bars with one mergeBatch call that also acknowledges it.
 */
export class Aggregator {
  readonly consumer: string;
  private stopped = false;
  private loops: Promise<void>[] = [];
  private readonly conns: RedisClient[] = [];
  private readonly pre: Preaggregator;
  /** raw entries per read: each holds an ingested batch of up to INGEST_BATCH trades */
  private readonly readCount: number;
  merged = 0;
  late = 0;
  filtered = 0;
  excluded = 0;
  batches = 0;
  private readonly conditions: ConditionRules | undefined;
  private readonly metrics = {
    merged: metrics.tradesMerged(),
    late: metrics.tradesLate(),
    batch: metrics.batchSize(),
    seconds: metrics.mergeSeconds(),
  };
  /** a batch Redis keeps refusing (MISCONF on a full disk, OOM): said when it starts, then once a minute */
  private readonly failing: RecurringError;
  private readonly membership: Membership;
  private readonly takeoverMetrics = { count: metrics.takeovers(), seconds: metrics.takeoverSeconds() };
  /** condition codes already reported as unknown */
  private readonly reportedCodes = new Set<string>();

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
    private readonly partitions: readonly number[] = Array.from({ length: cfg.partitions }, (_, i) => i),
  ) {
    this.consumer = workerName(cfg.consumerName);
    this.readCount = Math.max(1, Math.floor(cfg.aggregatorBatch / cfg.ingestBatch));
    this.membership = new Membership(redis, keys, AGGREGATOR_GROUP, this.consumer, cfg.takeoverMs, log);
    this.failing = new RecurringError(log, 'merging a batch failed; retrying every 0.5 s (nothing is acknowledged until it is merged)');
    // the live feed's condition codes: Finnhub's numbering, or (FEED=massive) Massive's, read as its backfill's are,
    // or (FEED=alpaca) the SIP's letters, named through CONDITION_CODES
    this.conditions = conditionRules(cfg, cfg.feed === 'massive' || cfg.feed === 'alpaca' ? 'other' : 'finnhub');
    this.pre = new Preaggregator(new BarCalendar(cfg), {
      amendWindowMs: cfg.late === 'amend' ? cfg.lateAmendWindowMs : 0,
      conditions: this.conditions,
      flags: cfg.backfill ? BAR_FLAGS.LIVE : 0,
    });
  }

  async start(): Promise<void> {
    for (const p of this.partitions) {
      await ensureGroup(this.redis, this.keys.trades(p), AGGREGATOR_GROUP);
      this.lostMark.set(p, await this.readLostMark(p));
    }
    // a stable name: what a predecessor of this name read and did not merge is taken back first (the loop's ownPending)
    await this.membership.join();
    metrics.pendingEntries((gauge) => this.pendingByConsumer(gauge));
    this.log.info({ consumer: this.consumer, partitions: this.partitions.length, takeoverMs: this.cfg.takeoverMs }, 'aggregator started');
    for (const p of this.partitions) {
      // XREADGROUP BLOCK holds its connection, so each partition loop gets its own.
      const conn = duplicateRedis(this.redis, this.log);
      this.conns.push(conn);
      this.loops.push(this.loop(p, conn));
    }
  }

  /** per partition: the clock's `lost` mark (addTrades: the newest event time when Redis lost the data), as last read */
  private readonly lostMark = new Map<number, string | null>();

  private readLostMark(p: number): Promise<string | null> {
    return this.redis.hget(this.keys.clock(p), CLOCK.lost).catch(() => null);
  }

  /**
   * The consumer group was gone (recreated from the stream's start). Redis losing all of
   * candlewick's data takes it too, and that loss is said by the ingestor (which marks it on the
   * partition's clock at its next append) and the stack: no second alarm then, only a debug line.
   * A group gone alone (deleted by hand) is said. Judged a moment later, once the ingestor's append
   * has had time to mark the loss.
   */
  private groupGone(p: number, stream: string): void {
    setTimeout(() => {
      void this.readLostMark(p).then((mark) => {
        const lost = mark !== null && mark !== this.lostMark.get(p);
        this.lostMark.set(p, mark);
        if (lost) this.log.debug({ stream }, 'consumer group gone with the data Redis lost (said by the ingestor); recreated');
        else this.log.warn({ stream }, 'consumer group missing; recreated it');
      });
    }, GROUP_GONE_JUDGED_MS).unref();
  }

  /** per partition loop: when it last went round (a read blocks 0.5 s at most) */
  private readonly beat = new Map<number, number>();

  health(): Health {
    const now = monoMs();
    const stuck = [...this.beat].filter(([, t]) => now - t > 30_000).map(([p]) => p);
    return stuck.length
      ? {
          ok: false,
          aggregator: `loop of partition ${stuck.join(', ')} stuck for ${Math.round((now - Math.min(...stuck.map((p) => this.beat.get(p)!))) / 1000)} s`,
        }
      : { ok: true, aggregator: 'reading' };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await this.membership.leave();
    await Promise.all(this.conns.map((c) => c.quit().catch(() => undefined)));
    this.log.info({ merged: this.merged, late: this.late, batches: this.batches }, 'aggregator stopped');
  }

  /** The group's pending entries per partition and consumer (XPENDING summary), for /metrics. */
  private async pendingByConsumer(gauge: Gauge<'partition' | 'consumer'>): Promise<void> {
    gauge.reset();
    for (const p of this.partitions) {
      const [, , , consumers] = (await this.redis.xpending(this.keys.trades(p), AGGREGATOR_GROUP)) as [
        number,
        string | null,
        string | null,
        [string, string][] | null,
      ];
      for (const [consumer, n] of consumers ?? []) gauge.set({ partition: String(p), consumer }, Number(n));
    }
  }

  private read(conn: RedisClient, stream: string): Promise<StreamEntry[]> {
    return (
      conn.xreadgroup('GROUP', AGGREGATOR_GROUP, this.consumer, 'COUNT', this.readCount, 'BLOCK', 500, 'STREAMS', stream, '>') as Promise<
        [string, StreamEntry[]][] | null
      >
    ).then((res) => res?.[0]?.[1] ?? []);
  }

  /**
   * One partition's loop. The next batch is read while the current one is merged (a read only
   * makes entries pending for this consumer; if the process dies they are reclaimed), so Redis
   * works on one batch while this process parses the other.
   */
  private async loop(p: number, conn: RedisClient): Promise<void> {
    const stream = this.keys.trades(p);
    let nextReclaim = 0;
    let nextTakeover = 0;
    let next: Promise<StreamEntry[]> | undefined;
    // After a reconnect, entries Redis delivered to this consumer may have lost their reply on the
    // way (the read was sent again and got newer ones): take back our own pending entries first,
    // rather than leave them to a reclaim half a minute later.
    let ownPending = true;
    conn.on('ready', () => (ownPending = true));
    while (!this.stopped) {
      this.beat.set(p, monoMs());
      try {
        if (ownPending) {
          ownPending = false;
          await next?.then((entries) => this.process(p, entries));
          next = undefined;
          await this.takeBackOwn(p, conn);
        }
        if (monoMs() >= nextTakeover) {
          // a member whose heartbeat lapsed: its entries now, not after RECLAIM_IDLE_MS
          const dead = await this.deadWithPending(p);
          if (dead.length) {
            await next?.then((entries) => this.process(p, entries));
            next = undefined;
            for (const member of dead) await this.takeOver(p, member);
          }
          nextTakeover = monoMs() + Math.max(50, this.cfg.takeoverMs / 3);
        }
        if (monoMs() >= nextReclaim) {
          await next?.then((entries) => this.process(p, entries));
          next = undefined;
          await this.reclaim(p);
          nextReclaim = monoMs() + Math.max(100, this.cfg.reclaimIdleMs / 2);
        }
        const entries = await (next ?? this.read(conn, stream));
        next = this.stopped ? undefined : this.read(conn, stream);
        // a read-ahead that fails while this batch is merged is seen when it is awaited
        next?.catch(() => undefined);
        if (entries.length) await this.process(p, entries);
        this.failing.ok();
      } catch (err) {
        // what this consumer read and did not merge (the failed batch, a read-ahead dropped here)
        // stays pending for it: take it back first when the loop goes on
        next = undefined;
        ownPending = true;
        const msg = String((err as Error).message);
        // (UNBLOCKED: a read waiting on the stream when it was deleted)
        if (msg.includes('NOGROUP') || msg.includes('UNBLOCKED')) {
          await ensureGroup(this.redis, stream, AGGREGATOR_GROUP).catch(() => undefined);
          this.groupGone(p, stream);
        } else {
          if (isConnectionError(err)) redisLink.error(err, 'aggregator');
          else if (isRefusal(err)) redisLink.refused(err);
          else this.failing.report(err, { partition: p });
          await sleep(500);
        }
      }
    }
    // Entries read ahead but not merged stay pending for this consumer; merge them before leaving.
    const left = await next?.catch(() => []);
    if (left?.length) await this.process(p, left);
  }

  /** Members of the group with entries pending whose heartbeat has lapsed. */
  private async deadWithPending(p: number): Promise<string[]> {
    const [, , , consumers] = (await this.redis.xpending(this.keys.trades(p), AGGREGATOR_GROUP)) as [
      number,
      string | null,
      string | null,
      [string, string][] | null,
    ];
    const holding = (consumers ?? []).filter(([name, n]) => name !== this.consumer && Number(n) > 0).map(([name]) => name);
    return holding.length ? this.membership.dead(holding) : [];
  }

  /** Claims and merges a dead member's pending entries (mergeBatch's ownership check keeps it exactly once). */
  private async takeOver(p: number, member: string): Promise<void> {
    const stream = this.keys.trades(p);
    let taken = 0;
    for (;;) {
      const pending = (await this.redis.xpending(stream, AGGREGATOR_GROUP, '-', '+', this.readCount, member)) as [
        string,
        string,
        number,
        number,
      ][];
      if (pending.length === 0) break;
      const claimed = (await this.redis.xclaim(stream, AGGREGATOR_GROUP, this.consumer, 0, ...pending.map(([id]) => id))) as StreamEntry[];
      if (taken === 0) this.takeoverMetrics.seconds.observe(Math.max(...pending.map(([, , idle]) => Number(idle))) / 1000);
      taken += claimed.length;
      if (claimed.length) await this.process(p, claimed);
      if (pending.length < this.readCount) break;
    }
    if (taken) {
      this.takeoverMetrics.count.inc();
      this.log.warn({ member, entries: taken, partition: p }, 'took over the pending entries of a member whose heartbeat had lapsed');
    }
  }

  /** Merges the entries still pending for this consumer (XREADGROUP from 0: its own pending list). */
  private async takeBackOwn(p: number, conn: RedisClient): Promise<void> {
    const stream = this.keys.trades(p);
    let after = '0';
    for (;;) {
      const res = (await conn.xreadgroup('GROUP', AGGREGATOR_GROUP, this.consumer, 'COUNT', this.readCount, 'STREAMS', stream, after)) as
        [string, StreamEntry[]][] | null;
      const entries = res?.[0]?.[1] ?? [];
      if (entries.length === 0) return;
      this.log.info({ entries: entries.length, partition: p }, 'merging entries this consumer had read and not merged');
      after = entries[entries.length - 1]![0];
      await this.process(p, entries);
    }
  }

  /** Takes over entries another worker left pending for longer than RECLAIM_IDLE_MS. */
  private async reclaim(p: number): Promise<void> {
    const stream = this.keys.trades(p);
    let cursor = '0-0';
    do {
      const res = (await this.redis.xautoclaim(
        stream,
        AGGREGATOR_GROUP,
        this.consumer,
        this.cfg.reclaimIdleMs,
        cursor,
        'COUNT',
        this.readCount,
      )) as [string, StreamEntry[], string[]?];
      cursor = res[0];
      const entries = res[1];
      if (entries.length) {
        this.log.info({ entries: entries.length, partition: p }, 'reclaimed stale pending entries');
        await this.process(p, entries);
      }
    } while (cursor !== '0-0' && !this.stopped);
  }

  /**
   * Merges raw stream entries this consumer holds (read or claimed) into the open bars, exactly
   * once: entries another worker acknowledged meanwhile are left out and the rest re-aggregated.
   */
  async process(p: number, raw: StreamEntry[]): Promise<void> {
    crashPoint('aggregate:read'); // read and pending for this consumer, not merged
    const ids: string[] = [];
    let entries: RawEntry[] = [];
    for (const [id, fields] of raw) {
      ids.push(id);
      // a deleted entry claimed back has no fields: acknowledged with the rest, nothing to merge
      if (fields) rawEntries(id, fields, entries);
    }
    let todo = ids;
    const began = performance.now();
    for (;;) {
      const pre = this.pre.run(entries);
      // late trades are kept whole, with their feed ids and sides from their entries' fields
      const fieldsOf = pre.late.length ? new Map(raw) : undefined;
      const res = await mergeBatch(this.redis, this.keys, p, mergeBatchArgs(AGGREGATOR_GROUP, this.consumer, todo, pre, fieldsOf));
      if (res.status === 'merged') {
        redisLink.wrote();
        this.merged += res.merged;
        this.late += res.late;
        this.batches++;
        this.metrics.merged.inc(res.merged);
        this.metrics.late.inc(res.late);
        this.metrics.batch.observe(ids.length);
        this.metrics.seconds.observe((performance.now() - began) / 1000);
        if (pre.filtered) {
          this.filtered += pre.filtered;
          await this.redis.hincrby(this.keys.partitionStats(p), PARTITION_STATS.filtered, pre.filtered);
        }
        if (pre.tooOld) await this.redis.hincrby(this.keys.partitionStats(p), PARTITION_STATS.amendTooOld, pre.tooOld);
        if (pre.excluded) {
          this.excluded += pre.excluded;
          await this.redis.hincrby(this.keys.partitionStats(p), PARTITION_STATS.excluded, pre.excluded);
        }
        if (this.conditions) await this.reportUnknownCodes(p);
        if (pre.uncovered.length) this.log.error({ years: [...new Set(pre.uncovered)] }, new CalendarRangeError(pre.uncovered[0]!).message);
        if (pre.late.length) this.reportLate(pre.late);
        return;
      }
      this.conditions?.takeUnknown(); // counted again when the rest is re-aggregated
      // Another worker acknowledged part of this batch: merge only what is still ours.
      const still = new Set(res.stillMine);
      this.log.info({ dropped: todo.length - still.size }, 'part of the batch was merged by another worker; re-aggregating');
      todo = todo.filter((id) => still.has(id));
      entries = entries.filter((e) => still.has(e.entry));
      if (todo.length === 0) return;
    }
  }

  private lateSaid = 0;
  private lateSinceSaid = 0;

  /**
   * Late trades: the first is described, then a count at most once a minute (a replay of a day
   * already seen is all late: a line per batch would be thousands).
   */
  private reportLate(late: readonly RawEntry[]): void {
    const now = monoMs();
    this.lateSinceSaid += late.length;
    if (this.lateSaid !== 0 && now - this.lateSaid < 60_000) return;
    const first = late[0]!;
    this.log.warn(
      { late: this.lateSinceSaid, total: this.late, example: { s: first.s, p: first.p, t: first.t, w: first.w } },
      this.lateSaid === 0
        ? 'late trades kept in trades:late (their window had closed when they were ingested)'
        : 'more late trades kept in trades:late',
    );
    this.lateSaid = now;
    this.lateSinceSaid = 0;
  }

  /** Counts trades with condition codes the table does not know, and names each new code once. */
  private async reportUnknownCodes(p: number): Promise<void> {
    const unknown = this.conditions!.takeUnknown();
    if (unknown.size === 0) return;
    let total = 0;
    for (const [code, count] of unknown) {
      total += count;
      if (this.reportedCodes.has(code)) continue;
      this.reportedCodes.add(code);
      this.log.warn(
        { code },
        `trade condition code ${JSON.stringify(code)} is not in the condition table: such trades count as regular. ` +
          'Map it to a condition name in the CONDITION_CODES file (see docs/internals.md, "Trade conditions")',
      );
    }
    await this.redis.hincrby(this.keys.partitionStats(p), PARTITION_STATS.unknownConditions, total);
  }
}
