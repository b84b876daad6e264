import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { Queue, Worker, type Job } from 'bullmq';
import {
  BARS_QUEUE,
  RecurringError,
  SlotTransactions,
  isConnectionError,
  isRefusal,
  barRowCells,
  crashPoint,
  decodeBarEntry,
  duplicateRedis,
  encodeBarEntryJson,
  parseBarsJob,
  publishBars,
  type BarsJob,
  type BarRowCells,
  metrics,
  redisLink,
  reportWorkerError,
  closeWorker,
  reportRedisError,
  sleep,
  FileLock,
  RedisLease,
  describeHolder,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
  STATS,
  writtenField,
} from '@candlewick/common';
import { BarCalendar, decodeBarState, eventLabel, parseBarId, type BarState, type Clock } from '@candlewick/core';
import {
  AppendThreads,
  CsvFiles,
  isAppendDone,
  FileChangedError,
  formatRow,
  incompletePath,
  rowCells,
  type AppendReply,
  type FileEvent,
  type PlannedAppend,
} from '@candlewick/common';

import { Carry } from './carry.js';
import { ActivityFiles } from './activity-files.js';

/** how often the writer creates the files of newly opened bars ahead of their first row */
const PREPARE_EVERY_MS = 5000;
/** open bars' ids read at a time by a preparing pass (the files made ready between two looks at the jobs) */
const PREPARE_PAGE = 200;

/**
 * Jobs the writer takes at once: one's appends while the other publishes and completes. Their
 * appends and publishes take turns in the order the jobs were taken (appendTurn, publishTurn).
 * (Four at once was tried for a whole market's boundary, where a job waits on Redis longer than it
 * works: with EMPTY_BARS=carry over two partitions the files then differed from `candlewick bars`
 * in one run of three, and the boundary was done no sooner.)
 */
export const WRITER_JOBS = 2;

/** The lock file of the writer that owns a DATA_DIR's CSV files. */
export const WRITER_LOCK_FILE = 'candlewick-writer.lock';

/**
 * The write role: a BullMQ worker (WRITER_JOBS jobs at once, their appends and their publishes each taking
 * turns in the order the jobs were taken, so rows reach each file in the order the closer enqueued
 * them) that appends each closed bar to its CSV file and publishes it on bars:{interval}.
 *
 * A failed disk write (a full disk, a permission) is retried in place with backoff — never failing
 * the job, which would be retried after later bars and then be skipped as stale — and resumes by
 * itself when the disk takes writes again; /healthz says unhealthy meanwhile. Rows that go missing
 * from the end of a file while it runs are noticed before the next append and written again from
 * bars:{interval} (kept BARS_RETENTION); a file that cannot be read back is set aside.
 */
export class WriterService {
  private worker: Worker | undefined;
  private readonly files: CsvFiles;
  private readonly clock: Clock;
  written = 0;
  skipped = 0;
  private readonly metrics = {
    written: metrics.barsWritten(),
    lag: metrics.closeLag(),
    fileEvents: metrics.csvFileEvents(),
    diskFailing: metrics.diskFailing(),
  };
  /** which windows there are: the daily intervals are labelled with the date, ending at midnight in BAR_TZ */
  private readonly calendar: BarCalendar;
  private readonly disk: RecurringError;
  /** files found short while verifying, to restore before the next append */
  private readonly missing: Extract<FileEvent, { kind: 'rows-missing' }>[] = [];
  /**
   * Rows of the jobs under way appended but not yet published on bars:{interval} (a job's publish
   * goes once its rows are in), one list per job: rows cut from a file mid-job are restored from
   * here as well (a rare search, so the lists are kept flat, not indexed: a job adds to them per bar).
   */
  private readonly unpublished = new Set<Unpublished>();
  /**
   * Two jobs are taken at once (WRITER_JOBS), so one's publish and its completion (Redis round trips, long at a
   * busy boundary) overlap the next one's appends; their appends take turns in the order the jobs
   * were taken, and so do their publishes: rows reach each file, and entries each bars:{interval},
   * in the order the closer enqueued them.
   */
  private readonly appendTurn = new Turns();
  /** the threads a job's rows are appended in (made at start, or at the first job of a writer not started; ended by stop) */
  private appender: AppendThreads | undefined;
  /** activity bars' files (made at the first activity bar) */
  private activityFiles: ActivityFiles | undefined;
  private readonly publishTurn = new Turns();

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.calendar = new BarCalendar(cfg);
    this.clock = this.calendar.clock;
    this.files = new CsvFiles(cfg.dataDir, this.clock, cfg.csvExtraColumns, (e) => this.onFileEvent(e), this.calendar.days);
    this.carry = cfg.emptyBars === 'carry' ? new Carry(cfg, this.calendar) : undefined;
    this.disk = new RecurringError(
      log,
      'appending to the CSV files failed; retrying until the disk takes writes again (check space and permissions of DATA_DIR)',
    );
  }

  private readonly carry: Carry | undefined;

  health(): Health {
    return this.disk.active
      ? { ok: false, csv: 'appends failing (see the log): check space and permissions of DATA_DIR' }
      : { ok: true, csv: 'ok' };
  }

  private onFileEvent(e: FileEvent): void {
    this.metrics.fileEvents.inc({ kind: e.kind });
    const stats = this.keys.stats();
    void this.redis
      .hincrby(stats, `${STATS.csvPrefix}${e.kind}`, 1)
      .catch((err: unknown) => reportRedisError(this.log, err, 'failed to count a file event'));
    if (e.kind === 'cut-partial-row')
      this.log.warn({ file: e.path, bytes: e.bytes }, 'cut a partial last row (a write cut short) back to the last whole row');
    else if (e.kind === 'set-aside')
      this.log.error(
        { file: e.path, aside: e.asidePath, reason: e.reason },
        'a CSV file could not be read back: set it aside and started a new one (every other file goes on)',
      );
    else this.missing.push(e);
  }

  async start(): Promise<void> {
    await this.takeOwnership();
    // the threads start now, not with the first job: that one is a boundary's, which they would delay by their start-up
    this.startAppender();
    await this.finishOrphanedJobs();
    this.worker = new Worker(BARS_QUEUE, (job: Job) => this.inJob(() => this.processBatch(parseBarsJob(job.data))), {
      connection: duplicateRedis(this.redis, this.log),
      prefix: this.keys.queuePrefix(),
      // two at once: one's appends while the other publishes and completes (see appendTurn)
      concurrency: WRITER_JOBS,
      // A writer killed mid-job: its restarted successor finishes that job first (finishOrphanedJobs);
      // otherwise BullMQ hands it back within ~4-6 s (a job takes well under a second; the lock is
      // renewed every 2 s), and a job may stall a few times before BullMQ gives up on it.
      lockDuration: 4000,
      stalledInterval: 2000,
      maxStalledCount: 10,
      // after a Redis error (an outage, a refusal) try again within a second, not BullMQ's 15 s
      runRetryDelay: 1000,
    });
    let vanishedSaid = false;
    this.worker.on('error', (err) => {
      // a job whose keys Redis lost while it was written (FLUSHALL, an empty replica): its rows are in
      // the files; the loss itself is said by the ingestor and the stack
      if (/^Missing key for job/.test(err.message)) {
        if (!vanishedSaid)
          this.log.warn({ reason: err.message }, 'a job vanished from Redis while its bars were written (Redis lost its data?)');
        vanishedSaid = true;
        return;
      }
      reportWorkerError(this.log, err, 'writer worker error');
    });
    this.worker.on('failed', (job, err) => reportRedisError(this.log, err, 'bars could not be written', { job: job?.id }));
    this.preparing = setInterval(() => void this.prepareFiles(), PREPARE_EVERY_MS);
    this.preparing.unref();
    this.log.info({ dataDir: this.cfg.dataDir }, 'writer started');
  }

  private preparing: NodeJS.Timeout | undefined;
  /**
   * the files (interval|symbol) made ready or found there: the next passes skip them without
   * working out their paths (a pass reads every open bar, tens of thousands for a whole market)
   */
  private readonly prepared = new Set<string>();
  private prepareRunning = false;
  private stopped = false;
  private prepareRefused = false;
  /** a job being written: preparing files yields to it */
  private jobs = 0;

  /**
   * The files of the bars now open, created ahead of their first row (CsvFiles.prepare): read from
   * the open index every PREPARE_EVERY_MS, a few hundred files at a time, giving way to any job. A
   * pass that created files is followed at once by another, for the bars that opened meanwhile (a
   * whole market subscribing at start opens its bars over seconds, and its first boundary may be
   * close): files are created as fast as the disk takes them until none is missing.
   */
  private async prepareFiles(): Promise<void> {
    if (this.prepareRunning || this.prepareRefused) return;
    this.prepareRunning = true;
    try {
      while (!this.stopped && (await this.preparePass()) > 0);
    } finally {
      this.prepareRunning = false;
    }
  }

  /**
   * One pass over the open bars of every partition; returns how many files it created. The index
   * is read a page at a time (PREPARE_PAGE ids, by rank), never while a job is being written: a
   * whole market has 40,000 bars open, and their ids held through a boundary's jobs were copied by
   * every collection of the writer's young generation there. A page read while bars open and close
   * may miss some (ranks shift): the next pass finds them, and a file not ready gets its header
   * with its first row.
   */
  private async preparePass(): Promise<number> {
    let created = 0;
    for (let p = 0; p < this.cfg.partitions; p++) {
      for (let from = 0; ; from += PREPARE_PAGE) {
        while (this.jobs > 0 && !this.stopped) await sleep(50);
        if (this.stopped) return created;
        let ids: string[];
        try {
          ids = await this.redis.zrange(this.keys.openIndex(p), from, from + PREPARE_PAGE - 1);
        } catch (err) {
          if (/NOPERM/.test((err as Error).message)) {
            this.prepareRefused = true;
            this.log.warn(
              { err },
              "the writer's Redis user may not read the open bars' index: files are created at their first row (give it the shipped ACL)",
            );
          } else reportRedisError(this.log, err, 'reading the open bars to prepare their files failed');
          return created;
        }
        for (const id of ids) {
          // interval|symbol: the file; one made ready before (or found there) is skipped
          const file = id.slice(0, id.lastIndexOf('|'));
          if (this.prepared.has(file)) continue;
          const { interval, symbol } = parseBarId(id);
          try {
            if (this.files.prepare(interval, symbol)) created++;
            this.prepared.add(file);
          } catch {
            // a file the first row will report on (a clash of names, a disk refusing writes)
          }
        }
        if (ids.length < PREPARE_PAGE) break;
        await new Promise((r) => setImmediate(r));
      }
    }
    return created;
  }

  private lease: RedisLease | undefined;
  private fileLock: FileLock | undefined;
  private failWith: (err: Error) => void = () => undefined;
  /** a condition this writer cannot go on under (another writer took over): the role stops, exit 2 */
  readonly fatal = new Promise<Error>((resolve) => (this.failWith = resolve));

  /**
   * One writer per DATA_DIR and key prefix: two would each skip the other's bars as stale. The
   * prefix is held in Redis (a heartbeat, as the aggregators' membership), the files by a lock
   * file in DATA_DIR (so writers on different Redis or prefixes but one DATA_DIR are refused
   * too). A restarted writer takes over from its dead predecessor at once; a live one elsewhere
   * is refused (exit 2) naming it.
   */
  private async takeOwnership(): Promise<void> {
    const fix = 'one writer per DATA_DIR and key prefix: stop that one, or give this one its own DATA_DIR and KEY_PREFIX';
    mkdirSync(this.cfg.dataDir, { recursive: true });
    this.fileLock = new FileLock(join(this.cfg.dataDir, WRITER_LOCK_FILE), this.cfg.takeoverMs, this.log);
    await this.fileLock.acquire(`the CSV files in DATA_DIR ${resolve(this.cfg.dataDir)}`, fix);
    this.lease = new RedisLease(this.redis, this.keys.owner('writer'), this.cfg.takeoverMs, this.log);
    this.lease.onLost = (by) =>
      this.failWith(
        new Error(
          `another writer (${by ? describeHolder(by) : 'unknown'}) took over key prefix ${this.keys.prefix} while this one was silent: stopping`,
        ),
      );
    try {
      await this.lease.acquire(`the writer of key prefix ${this.keys.prefix}`, fix);
    } catch (err) {
      await this.fileLock.release();
      throw err;
    }
  }

  /**
   * A writer killed mid-job leaves that job active until BullMQ notices the stall (seconds later);
   * taking newer jobs first would write later bars before its rest, which could then never be
   * appended. So a starting writer first finishes every active job itself, oldest first: writing is
   * idempotent, so the job's second run, when BullMQ hands it out again, changes nothing.
   */
  private async finishOrphanedJobs(): Promise<void> {
    const queue = new Queue(BARS_QUEUE, { connection: duplicateRedis(this.redis, this.log), prefix: this.keys.queuePrefix() });
    queue.on('error', (err) => reportRedisError(this.log, err, 'bars queue error'));
    try {
      // in the order they were taken (BullMQ's active list, oldest first), then by when they were
      // added: the jobs of one hand-over (addBulk) share a timestamp, and a stable sort keeps them
      // in the order taken, which is the order added (their ids are bar ids, not numbers)
      const active = await queue.getJobs(['active'], 0, -1, true);
      active.sort((a, b) => a.timestamp - b.timestamp);
      for (const job of active) {
        const r = await this.processBatch(parseBarsJob(job.data));
        this.log.warn({ job: job.id, ...r }, 'finished the job a previous writer stopped in');
      }
    } finally {
      await queue.close();
    }
  }

  /** Runs a file operation until the disk takes it (backoff up to 5 s): a full disk delays rows, never loses them. */
  private async onDisk<T>(what: () => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.missing.length) await this.restoreMissing();
      try {
        const r = what();
        if (this.disk.active) {
          this.disk.ok('the CSV files take writes again');
          this.metrics.diskFailing.set(0);
        }
        return r;
      } catch (err) {
        // changed under us (rows cut from its end): restore what is missing, then append again
        if (err instanceof FileChangedError) continue;
        this.disk.report(err);
        this.metrics.diskFailing.set(1);
        await sleep(Math.min(5000, 200 * 2 ** attempt));
      }
    }
  }

  /**
   * Rows that went missing from the end of a file (found by verify): appended again, in order,
   * from bars:{interval}, before anything after them. What the stream no longer has is said.
   */
  private async restoreMissing(): Promise<void> {
    while (this.missing.length) {
      const m = this.missing.shift()!;
      const after = m.after ?? -Infinity;
      const found = new Map<number, string[]>();
      let reachedStart = false;
      let end = '+';
      for (;;) {
        const page = (await this.redis.xrevrange(this.keys.bars(m.interval), end, '-', 'COUNT', 1000)) as [string, string[]][];
        for (const [id, f] of page) {
          const b = decodeBarEntry(id, m.interval, f);
          if (b.symbol !== m.symbol || b.rev !== 0) continue;
          if (b.start <= after) reachedStart = true;
          else if (b.start <= m.through && !found.has(b.start)) found.set(b.start, f);
        }
        if (reachedStart || page.length < 1000) break;
        end = `(${page[page.length - 1]![0]}`;
      }
      // rows of the jobs under way not yet published (the stream has them only once a job's rows are in)
      for (const job of this.unpublished)
        for (let k = 0; k < job.bars.length; k++) {
          const { interval, symbol, start } = job.bars[k]!;
          if (interval === m.interval && symbol === m.symbol && start > after && start <= m.through && !found.has(start))
            found.set(start, JSON.parse(job.fields[k]!) as string[]);
        }
      // (a bar written aside, in the .incomplete.csv, is not one of the bar file's rows)
      const aside = (f: string[]) => !this.cfg.csvExtraColumns && decodeBarEntry('', m.interval, f).lost === true;
      const starts = [...found.keys()].filter((start) => !aside(found.get(start)!)).sort((a, b) => a - b);
      for (const start of starts) {
        const cells = barRowCells(decodeBarEntry('', m.interval, found.get(start)!));
        await this.onDisk(() => this.files.appendRow(m.interval, m.symbol, start, formatRow(cells, this.cfg.csvExtraColumns), cells.close));
      }
      const said = {
        file: m.path,
        lastRow: m.after === undefined ? 'none' : this.clock.label(m.after),
        writtenThrough: this.clock.label(m.through),
        restored: starts.length,
      };
      if (reachedStart || m.after === undefined)
        this.log.error(
          said,
          `rows went missing from the end of a CSV file while the writer ran: wrote them again from ${this.keys.bars(m.interval)}`,
        );
      else
        this.log.error(
          said,
          `rows went missing from the end of a CSV file while the writer ran; ${this.keys.bars(m.interval)} no longer holds all of them (BARS_RETENTION): the rest are gone`,
        );
    }
  }

  /** The append threads: two (one on a single core); at a whole market's boundary their appends are a job's longest part. */
  private startAppender(): void {
    if (!this.stopped) this.appender ??= new AppendThreads(Math.min(2, availableParallelism()));
  }

  /** Appends a batch of closed bars (in closing order) and publishes them. */
  async processBatch(batch: BarsJob): Promise<{ written: number; skipped: number }> {
    this.startAppender();
    this.jobs++;
    const unpublished: Unpublished = { bars: [], fields: [] };
    this.unpublished.add(unpublished);
    try {
      return await this.writeBatch(batch, unpublished);
    } finally {
      this.unpublished.delete(unpublished);
      this.jobs--;
    }
  }

  private async writeBatch(batch: BarsJob, unpublished: Unpublished): Promise<{ written: number; skipped: number }> {
    // each bar's cells and row, worked out before this job's turn to append (while another appends)
    const rows = batch.bars.map((bar) => this.rowOf(bar));
    const appended = await this.appendTurn.take();
    let r: Awaited<ReturnType<WriterService['appendBatch']>>;
    let publishing: Promise<() => void>;
    try {
      r = await this.appendBatch(batch, rows, unpublished);
      // the publish's turn is taken before the next job may append: publishes go in the same order
      publishing = this.publishTurn.take();
    } finally {
      appended();
    }
    const published = await publishing;
    try {
      await this.publishBatch(r.steps);
    } finally {
      published();
    }
    this.written += r.written;
    this.skipped += r.skipped;
    return { written: r.written, skipped: r.skipped };
  }

  /**
   * A bar's cells (for the row and the publish alike) and its row where it goes to the bar file.
   * Its decoded state is kept only for a correction (whose file takes the state): a job's bars
   * wait their turn with these, and what stays alive is copied by every collection of the young
   * generation meanwhile (at a whole market's boundary the collector took a third of the writer's CPU).
   */
  private rowOf(bar: BarsJob['bars'][number]): JobRow {
    const state = decodeBarState(bar.state);
    const cells = rowCells(this.clock, bar.start, state, this.calendar.days.has(bar.interval));
    // a bar Redis's loss of data left incomplete is never written as if whole: in the default
    // format (no `complete` column) it goes beside the bar file, in its .incomplete.csv
    const aside = bar.rev === 0 && cells.lost === true && !this.cfg.csvExtraColumns;
    return {
      state: bar.rev > 0 ? state : undefined,
      cells,
      aside,
      text: bar.rev === 0 ? formatRow(cells, this.cfg.csvExtraColumns) : undefined,
    };
  }

  /**
   * A job's rows into their files; what to publish and count, as steps for publishBatch. Rows of
   * the bar files go to the append threads together (each file once a call), planned against each
   * file as this writer left it; the rest — a bar file not yet read back or new, a bar not newer than
   * its file's last row, corrections, bars set aside, carry — and whatever the thread did not do
   * are appended here, one by one with their checks, in the job's order.
   */
  private async appendBatch(
    batch: BarsJob,
    rows: readonly JobRow[],
    unpublished: Unpublished,
  ): Promise<{ written: number; skipped: number; steps: ((tx: SlotTransactions) => void)[] }> {
    // the Redis side (bars:{interval}, counts) is built as steps, so a refused write is sent again whole
    const steps: ((tx: SlotTransactions) => void)[] = [];
    // entry ids are Redis's time: the cut is too (this host's clock may be an hour off)
    const minId = String(redisLink.redisNowMs() - this.cfg.barsRetentionMs);
    const counts = new Map<string, number>();
    /** the closed bars (and corrections) among them, for the metric: carried ones are not closed bars */
    const closedWritten = new Map<string, number>();
    let written = 0;
    let skipped = 0;
    /** bars:{interval} -> the entries to publish there (encodeBarEntryJson), in order (one publishBars call per few hundred) */
    const entries = new Map<string, string[]>();
    const publish = (bar: { interval: string; symbol: string; start: number }, rev: number, fields: string) => {
      const stream = this.keys.bars(bar.interval);
      if (rev === 0) {
        unpublished.bars.push(bar);
        unpublished.fields.push(fields);
      }
      let list = entries.get(stream);
      if (!list) entries.set(stream, (list = []));
      list.push(fields);
    };
    const ready = async (interval: string, symbol: string) => {
      await this.onDisk(() => this.files.verify(interval, symbol));
      if (this.missing.length) await this.restoreMissing();
    };
    const flat = async (interval: string, symbol: string, before: number | undefined, through: number | undefined) => {
      if (!this.carry) return;
      await this.onDisk(() =>
        this.carry!.fill(this.files, interval, symbol, before, through, (f) => {
          written++;
          counts.set(interval, (counts.get(interval) ?? 0) + 1);
          const cells = rowCells(this.clock, f.start, f.state, this.calendar.days.has(interval));
          publish({ interval, symbol, start: f.start }, 0, encodeBarEntryJson(symbol, f.start, 0, cells));
        }),
      );
    };
    /** what follows a bar's append: counted, its close lag observed, published (a 'present' row too) */
    const appended = (bar: BarsJob['bars'][number], row: JobRow, outcome: 'written' | 'present' | 'stale') => {
      crashPoint('write:appended'); // the row is in the file; not yet published or counted
      if (outcome === 'stale') {
        skipped++;
        return;
      }
      // 'present': an earlier attempt appended this row and died before publishing it; publish now.
      if (outcome === 'written') {
        written++;
        const k = bar.rev > 0 ? `corrections:${bar.interval}` : bar.interval;
        counts.set(k, (counts.get(k) ?? 0) + 1);
        closedWritten.set(k, (closedWritten.get(k) ?? 0) + 1);
        if (bar.rev === 0) {
          const iv = this.calendar.interval(bar.interval);
          const end = iv ? this.calendar.window(bar.symbol, bar.start, iv)[1] : bar.start;
          this.lagOf(bar.interval).observe((Date.now() - end) / 1000);
        }
      }
      publish(bar, bar.rev, encodeBarEntryJson(bar.symbol, bar.start, bar.rev, row.cells));
    };
    /** one bar appended here, with its checks and retries */
    const one = async (bar: BarsJob['bars'][number], row: JobRow) => {
      const rev = bar.rev;
      // Without carry an append checks its file itself (in its own open: rows cut from its end
      // are restored before it goes on), so no look at the file first: a system call per bar
      // saved. Carry reads the file's last row before it appends, so that must be current.
      if (rev === 0 && this.carry) await ready(bar.interval, bar.symbol);
      if (rev === 0) await flat(bar.interval, bar.symbol, bar.start, undefined);
      if (row.aside) this.sayAside(bar.interval, bar.symbol);
      const outcome = await this.onDisk(() =>
        rev > 0
          ? this.files.appendCorrection(bar.interval, bar.symbol, bar.start, rev, row.state!)
          : this.files.appendRow(bar.interval, bar.symbol, bar.start, row.text!, row.cells.close, row.aside ? 'incomplete' : 'bars'),
      );
      appended(bar, row, outcome);
    };
    /** bars planned for the append threads, each file once */
    let planned: { bar: BarsJob['bars'][number]; row: JobRow; plan: PlannedAppend }[] = [];
    const plannedFiles = new Set<string>();
    const flush = async () => {
      if (planned.length === 0) return;
      const list = planned;
      planned = [];
      plannedFiles.clear();
      const replies = await this.appender!.appendMany(list.map((x) => x.plan)).catch((err: unknown) => {
        // the thread failed: every row of the call is appended here (each checks its file first)
        this.log.warn({ reason: (err as Error).message }, 'an append thread failed: appending in the writer itself from now on');
        return [] as (AppendReply | undefined)[];
      });
      for (const [k, { bar, row, plan }] of list.entries()) {
        const reply = replies[k];
        if (isAppendDone(reply)) {
          this.files.commit(plan, reply, bar.start, row.cells.close);
          appended(bar, row, 'written');
          continue;
        }
        // not done there (its file changed, a failed write, or not tried after one): here, in order
        if (typeof reply === 'object' && 'error' in reply && reply.partialRow) this.files.forget(plan);
        await one(bar, row);
      }
    };
    const batched = !this.carry && this.appender?.usable === true;
    for (const [k, bar] of batch.bars.entries()) {
      const row = rows[k]!;
      if (batched && bar.rev === 0 && !row.aside) {
        const plan = this.files.plan(bar.interval, bar.symbol, bar.start, row.text!);
        if (plan && !plannedFiles.has(plan.path)) {
          planned.push({ bar, row, plan });
          plannedFiles.add(plan.path);
          continue;
        }
      }
      await flush();
      await one(bar, row);
    }
    await flush();
    // activity bars (docs/activity-bars.md): each after its file's last, published with its number and end
    if (batch.activity?.length) {
      const activity = batch.activity.map((bar) => ({ bar, state: decodeBarState(bar.state) }));
      this.activityFiles ??= new ActivityFiles(this.cfg.dataDir, this.clock, this.log);
      const done = await this.onDisk(() => this.activityFiles!.appendAll(activity));
      // in their files, the job not done: taken again, they are found there (reached once per bar, so
      // a crash test's `write:activity@N` fires however the restarts before it batched the bars in jobs)
      for (let i = 0; i < activity.length; i++) crashPoint('write:activity');
      activity.forEach(({ bar, state }, i) => {
        // one found in its file (an earlier attempt appended it and died) is published all the same
        if (done[i]) {
          written++;
          counts.set(bar.interval, (counts.get(bar.interval) ?? 0) + 1);
          closedWritten.set(bar.interval, (closedWritten.get(bar.interval) ?? 0) + 1);
        } else skipped++;
        const cells = { ...rowCells(this.clock, bar.start, state), timestamp: eventLabel(bar.start, this.clock) };
        const stream = this.keys.bars(bar.interval);
        let list = entries.get(stream);
        if (!list) entries.set(stream, (list = []));
        list.push(encodeBarEntryJson(bar.symbol, bar.start, 0, cells, `,"end","${bar.end}","bar","${bar.seq}"`));
      });
    }
    if (this.carry && batch.horizon) {
      for (const symbol of this.carry.symbolsOf(batch.horizon.partition)) {
        for (const iv of this.cfg.intervals) {
          await ready(iv.name, symbol);
          await flat(iv.name, symbol, undefined, batch.horizon.through);
        }
      }
    }
    for (const [interval, n] of closedWritten) this.metrics.written.inc({ interval }, n);
    for (const [stream, list] of entries) steps.push((tx) => publishBars(tx.on(stream), stream, minId, list));
    const stats = this.keys.stats();
    for (const [interval, n] of counts) steps.push((tx) => void tx.on(stats).hincrby(stats, writtenField(interval), n));
    return { written, skipped, steps };
  }

  /** Publishes a job's bars and counts them, in one transaction per slot, waiting out a Redis refusing writes. */
  private async publishBatch(steps: ((tx: SlotTransactions) => void)[]): Promise<void> {
    // Redis refusing writes (its memory full, its disk): the rows are in the files; the publish and
    // counts wait for Redis rather than fail the job (which would lose them), like every other write
    for (let attempt = 0; ; attempt++) {
      const exec = new SlotTransactions(this.redis);
      for (const step of steps) step(exec);
      try {
        await exec.exec();
        break;
      } catch (err) {
        if (!isRefusal(err) && !isConnectionError(err)) throw err;
        reportRedisError(this.log, err, 'publishing written bars failed');
        await sleep(Math.min(5000, 200 * 2 ** attempt));
      }
    }
    redisLink.wrote();
  }

  private asideSaid = false;

  /** The first bar written aside (Redis lost the data): said once, naming where such bars go. */
  private sayAside(interval: string, symbol: string): void {
    if (this.asideSaid) return;
    this.asideSaid = true;
    this.log.warn(
      { file: incompletePath(this.cfg.dataDir, interval, symbol) },
      "bars open when Redis lost candlewick's data are incomplete: each is written beside its bar file, in <file>.incomplete.csv " +
        '(same columns), so the bar files hold whole bars only',
    );
  }

  /** the close-lag histogram of each interval (its labels resolved once, not per bar) */
  private readonly lags = new Map<string, { observe(v: number): void }>();

  private lagOf(interval: string): { observe(v: number): void } {
    let h = this.lags.get(interval);
    if (!h) this.lags.set(interval, (h = this.metrics.lag.labels({ interval })));
    return h;
  }

  /** jobs in progress in this process (a stop waits for them) */
  private jobsInProgress = 0;

  private async inJob<T>(run: () => Promise<T>): Promise<T> {
    this.jobsInProgress++;
    try {
      return await run();
    } finally {
      this.jobsInProgress--;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.preparing) clearInterval(this.preparing);
    // the job in progress is finished first (closeWorker: Worker.close, bounded only once no job runs)
    if (this.worker) await closeWorker(this.worker, () => this.jobsInProgress > 0, this.log);
    await this.appender?.stop();
    await this.lease?.release();
    await this.fileLock?.release();
    this.log.info({ written: this.written, skipped: this.skipped }, 'writer stopped');
  }
}

/** Turns taken in the order asked for: take() resolves to the function that ends the turn. */
class Turns {
  private last: Promise<void> = Promise.resolve();

  take(): Promise<() => void> {
    let end!: () => void;
    const mine = new Promise<void>((resolve) => (end = resolve));
    const before = this.last;
    this.last = mine;
    return before.then(() => end);
  }
}

/** A job's rows appended and not yet published: for each, its bar (the job's own object) and entry fields (encodeBarEntryJson). */
interface Unpublished {
  bars: { interval: string; symbol: string; start: number }[];
  fields: string[];
}

/** A bar of a job as the writer works it out before appending: its cells, its row, and a correction's state. */
interface JobRow {
  /** a correction's state (revision > 0), appended to its corrections file */
  state: BarState | undefined;
  /** its cells: its row's close, and its entry on bars:{interval} (encodeBarEntryJson, made once it is in) */
  cells: BarRowCells;
  /** the bar goes beside its file, in its .incomplete.csv */
  aside: boolean;
  /** its row (revision 0) */
  text: string | undefined;
}
