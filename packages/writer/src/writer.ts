import { Queue, Worker, type Job } from 'bullmq';
import { BARS_QUEUE, BAR_FLAGS, Clock, crashPoint, barSources, decodeBarState, formatNumber, volumeNumber, duplicateRedis, metrics, sleep, type BarState, type Config, type Keys, type Logger, type RedisClient, SlotTransactions } from '@candlewick/common';
import { CsvFiles, barCells } from './csv.js';
import { Carry } from './carry.js';

export interface BarJobData {
  interval: string;
  symbol: string;
  start: number;
  state: string;
  /** 0: the bar as closed; 1, 2, ...: corrections by late trades */
  rev?: number;
}

export interface BarBatchData {
  bars: BarJobData[];
  /** EMPTY_BARS=carry: windows of this partition ending by `through` are final */
  horizon?: { partition: number; through: number };
}

/**
 * The write role: a BullMQ worker (concurrency 1, so rows reach each file in the order the closer
 * enqueued them) that appends each closed bar to its CSV file and publishes it on bars:{interval}.
 * A failed disk write is retried in place with backoff rather than failing the job, because a
 * failed job would be retried after later bars and then be skipped as stale.
 */
export class WriterService {
  private worker: Worker | undefined;
  private readonly files: CsvFiles;
  private readonly clock: Clock;
  written = 0;
  skipped = 0;
  private readonly metrics = { written: metrics.barsWritten(), lag: metrics.closeLag() };
  private readonly intervalMs: Map<string, number>;

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.clock = new Clock(cfg.tz);
    this.intervalMs = new Map(cfg.intervals.map((iv) => [iv.name, iv.ms]));
    this.files = new CsvFiles(cfg.dataDir, this.clock, cfg.csvExtraColumns);
    this.carry = cfg.emptyBars === 'carry' ? new Carry(cfg, this.clock) : undefined;
  }

  private readonly carry: Carry | undefined;

  async start(): Promise<void> {
    await this.finishOrphanedJobs();
    this.worker = new Worker(BARS_QUEUE, (job: Job<BarBatchData>) => this.processBatch(job.data), {
      connection: duplicateRedis(this.redis, this.log),
      prefix: this.keys.queuePrefix(),
      concurrency: 1,
      // A writer killed mid-job: its job is back in the queue within ~5-10 s (a job takes well
      // under a second; the lock is renewed every 2.5 s), and a job may stall a few times before
      // BullMQ gives up on it.
      lockDuration: 5000,
      stalledInterval: 5000,
      maxStalledCount: 10,
    });
    this.worker.on('error', (err) => this.log.warn({ err }, 'writer worker error'));
    this.worker.on('failed', (job, err) => this.log.error({ err, bar: job?.id }, 'bar could not be written'));
    this.log.info({ dataDir: this.cfg.dataDir }, 'writer started');
  }

  /**
   * A writer killed mid-job leaves that job active until BullMQ notices the stall (seconds later);
   * taking newer jobs first would write later bars before its rest, which could then never be
   * appended. So a starting writer first finishes every active job itself, oldest first: writing is
   * idempotent, so the job's second run, when BullMQ hands it out again, changes nothing.
   */
  private async finishOrphanedJobs(): Promise<void> {
    const queue = new Queue(BARS_QUEUE, { connection: duplicateRedis(this.redis, this.log), prefix: this.keys.queuePrefix() });
    try {
      const active = (await queue.getJobs(['active'])) as Job<BarBatchData>[];
      active.sort((a, b) => a.timestamp - b.timestamp || Number(a.id ?? 0) - Number(b.id ?? 0));
      for (const job of active) {
        const r = await this.processBatch(job.data);
        this.log.warn({ job: job.id, ...r }, 'finished the job a previous writer stopped in');
      }
    } finally {
      await queue.close();
    }
  }

  /** Appends a batch of closed bars (in closing order) and publishes them. */
  async processBatch(batch: BarBatchData): Promise<{ written: number; skipped: number }> {
    const tx = new SlotTransactions(this.redis);
    const minId = String(Date.now() - this.cfg.barsRetentionMs);
    const counts = new Map<string, number>();
    let written = 0;
    let skipped = 0;
    const publish = (interval: string, symbol: string, start: number, state: BarState, rev: number) => {
      const cells = barCells(state);
      const flags = state.flags ?? 0;
      const stream = this.keys.bars(interval);
      tx.on(stream).xadd(
        stream, 'MINID', '~', minId, '*',
        's', symbol, 'start', String(start), 'ts', this.clock.label(start),
        'o', state.open, 'h', state.high, 'l', state.low, 'c', state.close,
        'vwap', cells.vwap, 'v', formatNumber(volumeNumber(state.volume)), 'n', cells.n, 'rev', String(rev),
        'complete', flags & BAR_FLAGS.INCOMPLETE ? '0' : '1', 'sources', barSources(flags),
      );
    };
    const flat = (interval: string, symbol: string, before: number | undefined, through: number | undefined) => {
      for (const f of this.carry?.fill(this.files, interval, symbol, before, through) ?? []) {
        written++;
        counts.set(interval, (counts.get(interval) ?? 0) + 1);
        publish(interval, symbol, f.start, f.state, 0);
      }
    };
    for (const bar of batch.bars) {
      const state = decodeBarState(bar.state);
      if (this.carry && !bar.rev) flat(bar.interval, bar.symbol, bar.start, undefined);
      const rev = bar.rev ?? 0;
      let outcome: ReturnType<CsvFiles['append']>;
      for (let attempt = 0; ; attempt++) {
        try {
          outcome = rev > 0 ? this.files.appendCorrection(bar.interval, bar.symbol, bar.start, rev, state) : this.files.append(bar.interval, bar.symbol, bar.start, state);
          break;
        } catch (err) {
          this.log.error({ err, attempt }, 'appending to the CSV failed; retrying (check disk space and permissions)');
          await sleep(Math.min(30_000, 200 * 2 ** attempt));
        }
      }
      crashPoint('write:appended'); // the row is in the file; not yet published or counted
      if (outcome === 'stale') {
        skipped++;
        continue;
      }
      // 'present': an earlier attempt appended this row and died before publishing it; publish now.
      if (outcome === 'written') {
        written++;
        const k = rev > 0 ? `corrections:${bar.interval}` : bar.interval;
        counts.set(k, (counts.get(k) ?? 0) + 1);
        this.metrics.written.inc({ interval: k });
        if (rev === 0) this.metrics.lag.observe({ interval: bar.interval }, (Date.now() - bar.start - (this.intervalMs.get(bar.interval) ?? 0)) / 1000);
      }
      publish(bar.interval, bar.symbol, bar.start, state, rev);
    }
    if (this.carry && batch.horizon) {
      for (const symbol of this.carry.symbolsOf(batch.horizon.partition)) {
        for (const iv of this.cfg.intervals) flat(iv.name, symbol, undefined, batch.horizon.through);
      }
    }
    for (const [interval, n] of counts) tx.on(this.keys.stats()).hincrby(this.keys.stats(), `written:${interval}`, n);
    await tx.exec();
    this.written += written;
    this.skipped += skipped;
    return { written, skipped };
  }

  async stop(): Promise<void> {
    // Worker.close waits for the job in progress to finish.
    await this.worker?.close();
    this.log.info({ written: this.written, skipped: this.skipped }, 'writer stopped');
  }
}
