import {
  BACKFILL_GROUP,
  decodeBackfillRequest,
  duplicateRedis,
  ensureGroup,
  mergeBackfill,
  metrics,
  processId,
  reportRedisError,
  sleep,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
  type StreamEntry,
} from '@candlewick/common';
import { BAR_FLAGS, BarCalendar, Preaggregator, Splicer, conditionRules, type BackfillRequest, type Splice } from '@candlewick/core';
import { ProviderError } from './http.js';
import { makeProvider, type Provider } from './providers.js';

/** A request of partition p as the stream holds it (the entry is defined with its codec in common). */
export const parseRequest = decodeBackfillRequest;

/** The Preaggregator the backfill folds with: the aggregators' bar calendar, and their conditions. */
export function backfillPreaggregator(cfg: Config): Preaggregator {
  return new Preaggregator(new BarCalendar(cfg), {
    conditions: conditionRules(cfg, 'other'),
  });
}

/**
 * The backfill role in a live pipeline: a consumer-group worker on the backfill request streams.
 * For each request it fetches the span from the provider, splices it against the first live trade
 * and merges the bars with mergeBackfill, which also acknowledges the request and releases the
 * symbol's hold, in one step: a crash anywhere before it repeats the request, never doubles it.
 */
export class BackfillService {
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly conns: RedisClient[] = [];
  private provider: Provider | undefined;
  /** set after a permanent provider error (a refused key, a premium endpoint): no more calls */
  private disabled: string | undefined;
  private readonly splicer: Splicer;
  readonly consumer = processId();
  done = 0;
  private readonly outcomes = metrics.backfills();

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.splicer = new Splicer(backfillPreaggregator(cfg));
  }

  async start(): Promise<void> {
    if (!this.cfg.backfill) {
      // (docker compose runs this service whatever BACKFILL says): nothing to do, quietly and healthy
      this.log.info('BACKFILL=off: no requests are filed, so this role waits idle');
      return;
    }
    for (let p = 0; p < this.cfg.partitions; p++) await ensureGroup(this.redis, this.keys.backfillRequests(p), BACKFILL_GROUP);
    try {
      this.provider = makeProvider(this.cfg, this.log, this.abort.signal);
    } catch (err) {
      this.disable(err as Error);
    }
    // one blocking reader per partition: the request streams lie in different Cluster slots
    for (let p = 0; p < this.cfg.partitions; p++) {
      const conn = duplicateRedis(this.redis, this.log);
      this.conns.push(conn);
      this.loops.push(this.run(p, conn));
    }
    this.log.info(
      { provider: this.cfg.backfillProvider, mode: this.cfg.backfillMode, disabled: this.disabled !== undefined },
      'backfill started',
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await Promise.all(this.loops);
    await Promise.all(this.conns.map((c) => c.quit().catch(() => undefined)));
    this.log.info({ done: this.done }, 'backfill stopped');
  }

  private disable(err: Error): void {
    if (this.disabled) return;
    this.disabled = err.message;
    this.log.warn(
      { reason: err.message },
      'backfill is off for this run: the pipeline runs on without it, and bars around the start and around outages are marked incomplete',
    );
  }

  private async run(p: number, conn: RedisClient): Promise<void> {
    const stream = this.keys.backfillRequests(p);
    let lastClaim = -Infinity;
    while (!this.stopped) {
      try {
        if (performance.now() - lastClaim > 5_000) {
          lastClaim = performance.now();
          // requests a dead worker held for a while: take them over
          const res = (await conn.xautoclaim(stream, BACKFILL_GROUP, this.consumer, 30_000, '0-0', 'COUNT', 10)) as [string, StreamEntry[]];
          for (const [id, fields] of res[1]) if (fields) await this.handle(parseRequest(p, id, fields));
        }
        const res = (await conn.xreadgroup('GROUP', BACKFILL_GROUP, this.consumer, 'COUNT', 10, 'BLOCK', 1000, 'STREAMS', stream, '>')) as
          [string, StreamEntry[]][] | null;
        for (const [id, fields] of res?.[0]?.[1] ?? []) if (fields) await this.handle(parseRequest(p, id, fields));
      } catch (err) {
        if (this.stopped) break;
        reportRedisError(this.log, err, 'backfill loop error; retrying', { partition: p });
        await sleep(1000, this.abort.signal);
      }
    }
  }

  /** Fetches and splices one request; errors other than a stop end in an incomplete-marked merge. */
  async handle(req: BackfillRequest): Promise<void> {
    const log = this.log.child({ symbol: req.symbol, from: new Date(req.from).toISOString(), to: new Date(req.to).toISOString() });
    let splice: Splice;
    if (this.disabled || !this.provider) {
      splice = this.splicer.failed(req);
    } else {
      try {
        splice = await this.fetch(this.provider, req);
        log.info({ used: splice.used, bars: splice.partials.size }, 'backfilled');
      } catch (err) {
        if (this.stopped) return; // the request stays pending and is retried by the next worker
        // a symbol the provider does not know fails its own requests only: the other symbols go on
        if (err instanceof ProviderError && err.permanent && err.symbol === undefined) this.disable(err);
        else log.error({ reason: (err as Error).message }, 'backfill failed: the bars around this span are marked incomplete');
        splice = this.splicer.failed(req);
      }
    }
    await this.merge(req, splice, log);
  }

  private fetch(provider: Provider, req: BackfillRequest): Promise<Splice> {
    if (this.cfg.backfillMode === 'ticks' && provider.trades) {
      return provider.trades(req.symbol, req.from, req.to).then((tr) => this.splicer.ticks(req, tr, provider.tradeFlag));
    }
    if (!provider.candles) throw new ProviderError(provider.name, 0, 'gives no candles', true);
    return provider.candles(req.symbol, req.from, req.to).then((c) => this.splicer.candles(req, c, provider.candleFlag));
  }

  private async merge(req: BackfillRequest, s: Splice, log: Logger): Promise<void> {
    const r = await mergeBackfill(this.redis, this.keys, req.partition, {
      group: BACKFILL_GROUP,
      consumer: this.consumer,
      requestId: req.id,
      symbol: req.symbol,
      partials: s.partials,
      flags: s.flags,
      used: s.used,
    });
    if (r === 'hold-expired')
      log.warn('the hold on this symbol expired before the backfill was done (BACKFILL_HOLD): its bars were written without it');
    if (r === 'not-mine') log.info('request already done by another worker');
    else {
      this.done++;
      const incomplete = [...s.flags.values()].some((f) => f & BAR_FLAGS.INCOMPLETE);
      this.outcomes.inc({ outcome: r === 'hold-expired' ? 'expired' : incomplete ? 'incomplete' : 'filled' });
    }
  }
}
