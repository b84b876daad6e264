import { Queue, Worker, type Job } from 'bullmq';
import { MINUTE } from '@candlewick/core';
import { ActivityStep } from './activity.js';
import { AmendStep, rawRetentionMs } from './amend.js';
import {
  AGGREGATOR_GROUP,
  BARS_QUEUE,
  RecurringError,
  idleAndDrained,
  isConnectionError,
  isRefusal,
  monoMs,
  sleep,
  Quiet,
  redisLink,
  reportRedisError,
  reportWorkerError,
  CLOSE_QUEUE,
  barsJobIdOf,
  closedBarOf,
  outboxPacked,
  type PackedBar,
  decodeActivityOutbox,
  horizonJobId,
  type BarsJobData,
  closeBars,
  closeWorker,
  crashPoint,
  duplicateRedis,
  metrics,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
  CLOCK,
} from '@candlewick/common';

export interface CloseResult {
  closed: number;
  /** true when everything ingested so far has been merged */
  merged: boolean;
  /** every window ending at or before this has closed, in every partition (-Infinity: not known) */
  through: number;
  /** bars held for the feed's amends (by a closer racing this one) were still waiting to be written: closed nothing after them */
  waiting?: boolean;
}

/**
 * Closes bars and hands them to the writer. Closing is the closeBars Lua step (finalize + outbox,
 * atomically; the bars of one call, up to CLOSE_BARS_PER_CALL, are one outbox entry); handing over enqueues an
 * entry's bars, up to JOB_BARS, as one BullMQ job (packed: the entry's text as the outbox holds it,
 * or a piece of it packed again, which the writer takes apart) whose id is built from the identities (interval, symbol, start)
 * of its first and last bar and their count, then deletes the entry. A crash in between re-enqueues the
 * same bars: BullMQ drops a job id it has seen, and the writer never writes a bar not newer than
 * its file's last row. One job per outbox read rather than per bar keeps the writer far ahead of
 * the closer.
 */
export class BarCloser {
  private readonly closedBars = metrics.barsClosed();
  private readonly activity: ActivityStep | undefined;
  /** FEED=alpaca: the feed's corrections and cancels, applied (docs/feeds.md) */
  private readonly amend: AmendStep | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly bars: Queue,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.activity = cfg.activity.length ? new ActivityStep(redis, cfg, keys, log) : undefined;
    this.amend = cfg.feed === 'alpaca' ? new AmendStep(redis, cfg, keys, log) : undefined;
    this.retentionMs = rawRetentionMs(cfg);
  }

  /** how long the raw and late streams are kept (TRADES_RETENTION, longer for a feed that amends trades) */
  private readonly retentionMs: number;

  async closePartition(p: number, flush = false): Promise<CloseResult> {
    let closed = 0;
    let merged = false;
    let through = -Infinity;
    let blocked = 0;
    let waiting = false;
    // the feed's amends: bars a crash left waiting written first (before anything closes after them,
    // and before a note forgets what they need), then those kept since the last tick noted (bars
    // still open are held at their close) and the closed bars they are in written as revisions
    if (this.amend) {
      await this.amend.settle(p);
      if ((await this.amend.note(p, flush)) > 0) await this.amend.settle(p);
    }
    // A boundary of a whole market closes tens of thousands of bars: the calls follow each other
    // without waiting, and what they close is handed over beside them — each read of the outbox
    // takes what the calls so far put there, their jobs added at once — so the writer starts on the
    // first call's bars while the rest are closed. (Entries are deleted only once enqueued, under ids
    // of their bars: a hand-over racing another closer's, or a crash between enqueueing and
    // deleting, enqueues nothing twice.)
    const hand = new HandOver(() => this.drainOutbox(p, false));
    try {
      for (;;) {
        const r = await closeBars(this.redis, this.keys, p, {
          group: AGGREGATOR_GROUP,
          graceMs: this.cfg.graceMs,
          clock: this.cfg.clock,
          flush,
          retentionMs: this.retentionMs,
          maxBars: CLOSE_BARS_PER_CALL,
          amendWindowMs: this.cfg.late === 'amend' ? this.cfg.lateAmendWindowMs : 0,
          feedAmendWindowMs: this.amend ? this.cfg.lateAmendWindowMs : 0,
        });
        closed += r.closed;
        merged = r.merged;
        // bars held for their amends go to the outbox now, before anything of a later window closes
        if (r.held > 0) await this.amend?.settle(p);
        if (r.blocked && this.amend) {
          // bars held by another closer racing this one: written by whichever gets to them first, then on
          if (++blocked > 100) {
            waiting = true;
            break;
          }
          if ((await this.amend.settle(p)) === 0) await sleep(20);
          continue;
        }
        through = r.horizon === 'all' ? Infinity : (r.horizon ?? -Infinity);
        if (r.closed > 0) crashPoint('close:closed'); // bars are in the outbox, not yet enqueued
        if (!r.more) break;
        hand.kick();
      }
      await hand.end();
    } finally {
      // a call that failed: the hand-over under way ends before the error goes up (its own error is the next tick's)
      await hand.end().catch(() => undefined);
    }
    await this.drainOutbox(p);
    // activity bars: the trades final through this horizon, cut (docs/activity-bars.md)
    if (this.activity && through > -Infinity && (await this.activity.cut(p, through)) > 0) await this.drainOutbox(p);
    return { closed, merged, through, waiting };
  }

  async tick(flush = false): Promise<CloseResult> {
    let closed = 0;
    let merged = true;
    let through = Infinity;
    let waiting = false;
    for (let p = 0; p < this.cfg.partitions; p++) {
      const r = await this.closePartition(p, flush);
      closed += r.closed;
      merged &&= r.merged;
      waiting ||= r.waiting === true;
      through = Math.min(through, r.through);
    }
    if (closed) this.log.debug({ closed }, 'bars closed');
    return { closed, merged, through, waiting };
  }

  private readonly horizonSent = new Map<number, number>();

  /**
   * Enqueues the outbox's entries, oldest first, and deletes them. `untilEmpty` false (a hand-over
   * while the next call closes): one read of what is there, not another to see it empty (the
   * final drain of a close does that, and sends the horizon): a round trip less per call's bars.
   */
  async drainOutbox(p: number, untilEmpty = true): Promise<number> {
    const outbox = this.keys.outbox(p);
    // Read before draining: closeBars moved every bar ending by this horizon to the outbox in the
    // same step that set it, so they are all in the jobs added below (or earlier ones).
    const through =
      untilEmpty && this.cfg.emptyBars === 'carry' ? Number((await this.redis.hget(this.keys.clock(p), CLOCK.covered)) ?? -1) : -1;
    let total = 0;
    for (;;) {
      // a closeBars call's bars are one entry (up to CLOSE_BARS_PER_CALL bars and its corrections): a few entries at a time
      const rows = (await this.redis.xrange(outbox, '-', '+', 'COUNT', OUTBOX_READ)) as [string, string[]][];
      if (rows.length === 0) {
        if (through > (this.horizonSent.get(p) ?? -1)) {
          const data: BarsJobData = { bars: [], horizon: { partition: p, through } };
          await this.bars.add('horizon', data, { jobId: horizonJobId(p, through) });
          this.horizonSent.set(p, through);
        }
        return total;
      }
      // an entry of activity bars is a job of its own, its id the entry's (the writer skips bars it has)
      const timeRows: [string, string[]][] = [];
      for (const [id, f] of rows) {
        const activity = decodeActivityOutbox(f);
        if (activity === undefined) {
          timeRows.push([id, f]);
          continue;
        }
        const data: BarsJobData = { bars: [], activity };
        await this.bars.add('activity', data, { jobId: `activity-${p}-${id}` });
        crashPoint('close:enqueued');
        for (const [interval, n] of countBy(activity.map((b) => b.interval))) this.closedBars.inc({ interval }, n);
        await this.redis.xdel(outbox, id);
        total += activity.length;
      }
      // handed on as the outbox holds them (packed): only the first and last bar's ids and the
      // counts are read here, the writer takes the bars apart
      const entries = timeRows.map(([id, f]) => ({ id, ...outboxPacked(f) }));
      // an entry of more than JOB_BARS bars handed on in pieces of JOB_BARS (the same pieces however
      // often it is read: their job ids are the same)
      const pieces = entries.flatMap((e) => (e.bars.length <= JOB_BARS ? [e] : piecesOf(e.bars)));
      // whole pieces per job, up to JOB_BARS bars (entries of one bar, as earlier versions wrote, grouped);
      // the jobs of a read added at once (one round trip), then its entries deleted
      const jobs: { name: string; data: BarsJobData; opts: { jobId: string } }[] = [];
      const counts = new Map<string, number>();
      for (let i = 0; i < pieces.length;) {
        const packed: string[] = [];
        let count = 0;
        let first: PackedBar | undefined;
        let last: PackedBar | undefined;
        while (i < pieces.length && (count === 0 || count + pieces[i]!.bars.length <= JOB_BARS)) {
          const e = pieces[i]!;
          if (e.bars.length > 0) {
            packed.push(e.packed);
            first ??= e.bars[0];
            last = e.bars[e.bars.length - 1];
            count += e.bars.length;
            for (const [bar, , rev] of e.bars) {
              const interval = bar.slice(0, bar.indexOf('|'));
              const k = rev ? `corrections:${interval}` : interval;
              counts.set(k, (counts.get(k) ?? 0) + 1);
            }
          }
          i++;
        }
        if (first && last)
          jobs.push({ name: 'bars', data: { packed }, opts: { jobId: barsJobIdOf(closedBarOf(first), closedBarOf(last), count) } });
        total += count;
      }
      if (jobs.length > 0) {
        await this.bars.addBulk(jobs);
        crashPoint('close:enqueued'); // enqueued, still in the outbox
        for (const [interval, n] of counts) this.closedBars.inc({ interval }, n);
      }
      if (entries.length > 0) await this.redis.xdel(outbox, ...entries.map((e) => e.id));
      if (!untilEmpty && rows.length < OUTBOX_READ) return total;
    }
  }
}

/**
 * The hand-over beside a partition's closing calls: `kick` after a call that left entries in the
 * outbox starts a read (or another once the one under way is done); `end` waits for it and stops.
 * A read that fails ends it; its error is end's.
 */
class HandOver {
  private running: Promise<void> | undefined;
  private again = false;
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(private readonly drain: () => Promise<number>) {}

  kick(): void {
    this.again = true;
    if (this.wake) this.wake();
    else if (!this.running) {
      this.running = this.loop();
      this.running.catch(() => undefined); // awaited by end(); not unhandled while the calls go on
    }
  }

  private async loop(): Promise<void> {
    for (;;) {
      this.again = false;
      await this.drain();
      if (this.ended) return;
      if (!this.again) await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
      if (this.ended && !this.again) return;
    }
  }

  end(): Promise<void> {
    this.ended = true;
    this.wake?.();
    return this.running ?? Promise.resolve();
  }
}

/** outbox entries read at a time (a closeBars call's bars are one entry, up to CLOSE_BARS_PER_CALL) */
const OUTBOX_READ = 20;

/**
 * Bars a closeBars call closes at most: one outbox entry (handed over in jobs of JOB_BARS). A call of 4,000
 * holds Redis 16-18 ms (4-5 ms a thousand, measured alone); at a whole market's boundary, on a
 * machine busy with the feed, each call also waits its turn in Redis and for a core, 30-40 ms
 * whatever its size, so 40,000 bars close in ten calls' waits rather than forty.
 */
export const CLOSE_BARS_PER_CALL = 4000;

/**
 * Bars a writer's job holds at most. Fewer than a call's: the writer publishes a job's bars once all
 * its rows are in, so a smaller job's are published sooner, and a job's bars are in its memory
 * until then (a job of 4,000 kept more of them alive through its collections: more CPU, not less).
 */
export const JOB_BARS = 1000;

/** An entry's bars in pieces of JOB_BARS, each packed again. */
function piecesOf(bars: readonly PackedBar[]): { packed: string; bars: PackedBar[] }[] {
  const out: { packed: string; bars: PackedBar[] }[] = [];
  for (let i = 0; i < bars.length; i += JOB_BARS) {
    const slice = bars.slice(i, i + JOB_BARS);
    out.push({ packed: JSON.stringify(slice), bars: slice });
  }
  return out;
}

function countBy(keys: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}

export function barsQueue(connection: RedisClient, keys: Keys): Queue {
  return new Queue(BARS_QUEUE, {
    connection,
    prefix: keys.queuePrefix(),
    defaultJobOptions: {
      // Completed jobs are kept a while so a re-enqueued bar is recognised by its id; the writer's
      // own check (never a row not newer than the file's last) covers the rest.
      removeOnComplete: { age: 3600, count: 20_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
      attempts: 1,
    },
  });
}

/**
 * The close role: a BullMQ job scheduler emits a tick every CLOSE_EVERY_MS; whichever closer
 * process takes the job runs BarCloser.tick. Two closers never close a bar twice: closeBars is one
 * atomic script and a closed bar leaves the open set in it.
 */
/** a boundary's first tick comes this long after its end + grace (hosts' clocks differ by a few ms) */
const BOUNDARY_MARGIN_MS = 20;
/** ticks at a boundary follow each other this often until it has closed ... */
const BOUNDARY_RETRY_MS = 20;
/** ... for at most this long (a backlog, a held symbol: the scheduled ticks close it when it can) */
const BOUNDARY_PATIENCE_MS = 2000;

export class CloserService {
  private queue: Queue | undefined;
  private worker: Worker | undefined;
  private readonly bars: Queue;
  readonly closer: BarCloser;

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.bars = barsQueue(redis, keys);
    this.bars.on('error', (err) => reportRedisError(log, err, 'bars queue error'));
    this.closer = new BarCloser(redis, this.bars, cfg, keys, log);
  }

  /** (again) the BullMQ job scheduler that emits the ticks */
  private schedule(): Promise<unknown> {
    this.queue ??= new Queue(CLOSE_QUEUE, { connection: this.redis, prefix: this.keys.queuePrefix() });
    return this.queue.upsertJobScheduler(
      'close-tick',
      { every: this.cfg.closeEveryMs },
      { name: 'tick', opts: { removeOnComplete: true, removeOnFail: 100 } },
    );
  }

  async start(): Promise<void> {
    await this.schedule();
    this.worker = new Worker(
      CLOSE_QUEUE,
      async (_job: Job) => {
        await this.runTick();
      },
      {
        connection: duplicateRedis(this.redis, this.log),
        prefix: this.keys.queuePrefix(),
        concurrency: 1,
        // after a Redis error (an outage, a refusal) try again within a second, not BullMQ's 15 s
        runRetryDelay: 1000,
        // a tick takes milliseconds: a closer killed mid-tick leaves it stalled for at most ~4 s
        lockDuration: 4000,
        stalledInterval: 2000,
        maxStalledCount: 100,
      },
    );
    // The scheduler drives the ticks; should its ticks stop coming (a stalled tick, a scheduler
    // Redis lost), this closer ticks by itself until they are back: closing never waits on BullMQ.
    // Several closers ticking at once are safe (closeBars is one atomic step).
    // BullMQ times scheduled and delayed jobs by each client's wall clock (the next tick is stamped
    // with the clock of whoever scheduled it, and taken when a worker's clock passes it): a closer
    // whose clock is behind sees no tick due, and one whose clock stepped ahead schedules ticks an
    // hour away for every other. So this watchdog runs on the monotonic clock, and the bars' own
    // time is Redis's (closeBars): a clock step on any host delays no bar by more than `late`.
    // (A scheduler whose next tick a refused write lost is set up again when the watchdog steps in.)
    const late = Math.max(1000, this.cfg.closeEveryMs * 4);
    this.watchdog = setInterval(() => {
      if (monoMs() - this.lastTick < late || this.ticking) return;
      if (monoMs() - this.rescheduled >= 10_000) {
        this.rescheduled = monoMs();
        this.schedule().catch((err: unknown) => reportRedisError(this.log, err, 'close scheduler failed'));
      }
      this.runTick().catch((err: unknown) => reportRedisError(this.log, err, 'close tick failed'));
    }, this.cfg.closeEveryMs);
    this.watchdog.unref();
    if (this.cfg.clock === 'wall') this.scheduleBoundary();
    const failing = new RecurringError(this.log, 'closing bars failed; the next tick tries again');
    this.worker.on('failed', (_job, err) =>
      isConnectionError(err) || isRefusal(err) ? reportRedisError(this.log, err, 'close tick failed') : failing.report(err),
    );
    this.worker.on('completed', () => {
      failing.ok();
      redisLink.wrote();
    });
    this.worker.on('error', (err) => reportWorkerError(this.log, err, 'close worker error'));
    this.queue!.on('error', (err) => reportRedisError(this.log, err, 'close queue error'));
    this.log.info({ everyMs: this.cfg.closeEveryMs, clock: this.cfg.clock, graceMs: this.cfg.graceMs }, 'closer started');
  }

  /** when the last tick ran (for /healthz: a closer whose ticks stopped is not working) */
  private lastTick = monoMs();
  private readonly quiet = new Quiet();
  private rescheduled = monoMs();
  /** the tick under way in this process */
  private tickRunning: Promise<CloseResult> | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private boundaryTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  private get ticking(): boolean {
    return this.tickRunning !== undefined;
  }

  /** One tick, never two at once in this process (the scheduler's, the watchdog's, a boundary's). */
  private runTick(): Promise<CloseResult | undefined> {
    if (this.tickRunning) return Promise.resolve(undefined);
    const run = (async () => {
      try {
        this.lastTick = monoMs();
        const r = await this.closer.tick(false);
        await this.closeWhenIdle();
        this.lastTick = monoMs();
        return r;
      } finally {
        this.tickRunning = undefined;
      }
    })();
    this.tickRunning = run;
    return run;
  }

  /**
   * CLOCK=wall: every window ends on a whole minute, and its bars are due grace later. Polled ticks
   * would reach a boundary up to two ticks late — the first tick past it records the checkpoint
   * (closeBars: the watermark and the last ingested entry at one instant), and only a later one,
   * once the aggregators have merged up to that entry, closes — so at each minute's end + grace the
   * closer ticks at once, and again every BOUNDARY_RETRY_MS (the aggregators merge within
   * milliseconds) until the boundary has closed in every partition, for at most BOUNDARY_PATIENCE_MS;
   * the scheduled ticks go on beside it. They are timed by Redis's clock (the monotonic clock plus
   * its offset to Redis's, as watchRedis measures it), the clock closeBars decides by.
   */
  private scheduleBoundary(): void {
    if (this.stopping) return;
    const now = redisLink.redisNowMs();
    const end = Math.floor((now - this.cfg.graceMs) / MINUTE) * MINUTE + MINUTE;
    this.boundaryTimer = setTimeout(
      () => {
        this.atBoundary(end)
          .catch((err: unknown) => reportRedisError(this.log, err, 'close tick failed'))
          .finally(() => this.scheduleBoundary());
      },
      end + this.cfg.graceMs - now + BOUNDARY_MARGIN_MS,
    );
    this.boundaryTimer.unref();
  }

  private async atBoundary(end: number): Promise<void> {
    const until = monoMs() + BOUNDARY_PATIENCE_MS;
    while (!this.stopping) {
      // a tick under way may have begun before the boundary was due: one more after it
      while (this.tickRunning) await this.tickRunning.catch(() => undefined);
      const r = await this.runTick();
      if ((r && r.through >= end) || monoMs() >= until) return;
      await sleep(BOUNDARY_RETRY_MS);
    }
  }

  health(): Health {
    const since = monoMs() - this.lastTick;
    const limit = Math.max(10_000, this.cfg.closeEveryMs * 20);
    return since > limit ? { ok: false, closer: `no tick for ${Math.round(since / 1000)} s` } : { ok: true, closer: 'ticking' };
  }

  /**
   * CLOSE_WHEN_IDLE_MS (event clock): at the end of a replay the watermark stops short of the last
   * windows; once the feed has been quiet that long and everything is merged, close every open bar
   * — once per input (a later trade starts a new input, see addTrades' inputEnd).
   */
  private async closeWhenIdle(): Promise<void> {
    if (this.cfg.clock !== 'event' || this.cfg.closeWhenIdleMs === 0) return;
    let open = false;
    for (let p = 0; p < this.cfg.partitions; p++) {
      const [lastId, inputEnd] = await this.redis.hmget(this.keys.clock(p), CLOCK.lastId, CLOCK.inputEnd);
      if (lastId && !inputEnd) open = true;
    }
    if (!open || !(await idleAndDrained(this.redis, this.cfg, this.keys, this.cfg.closeWhenIdleMs, 0, this.quiet))) return;
    const r = await this.closer.tick(true);
    if (r.merged)
      this.log.info(
        { closed: r.closed, idleMs: this.cfg.closeWhenIdleMs },
        'feed idle and everything merged: closed every open bar (CLOSE_WHEN_IDLE_MS)',
      );
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.boundaryTimer) clearTimeout(this.boundaryTimer);
    // (a tick is one atomic script: nothing is in progress outside Redis but the tick itself)
    if (this.worker) await closeWorker(this.worker, () => this.ticking, this.log);
    await this.queue?.close();
    await this.bars.close();
  }
}
