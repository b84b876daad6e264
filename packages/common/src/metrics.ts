import { createServer, type Server } from 'node:http';
import type { Gauge, Registry } from 'prom-client';
import { listenError } from './errors.js';
import { lazyRequire } from './lazy.js';
import type { Logger } from './logger.js';

/**
 * Prometheus metrics of this process (prom-client). Every metric candlewick exports is defined
 * here, once; a role creates the ones it updates. Creating one twice (two components in one
 * process, as in tests) returns the same metric.
 */
const prom = lazyRequire<typeof import('prom-client')>('prom-client');
let made: Registry | undefined;
/** The registry, made (and prom-client loaded) by the first metric a role creates. */
export const registry = (): Registry => (made ??= new (prom().Registry)());

function once<T>(name: string, make: () => T): T {
  return (registry().getSingleMetric(name) as T | undefined) ?? make();
}
const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
  once(name, () => new (prom().Counter<L>)({ name, help, labelNames, registers: [registry()] }));
const gauge = (name: string, help: string) => once(name, () => new (prom().Gauge)({ name, help, registers: [registry()] }));
const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
  once(name, () => new (prom().Histogram<L>)({ name, help, buckets, labelNames, registers: [registry()] }));

export const metrics = {
  // ingestor
  tradesIn: () => counter('candlewick_trades_in_total', 'Trades received from the feed and appended to the raw stream'),
  tradesDuplicate: () =>
    counter(
      'candlewick_trades_duplicate_total',
      "Trades dropped at the append as already on the raw stream: their id not above their symbol's highest (feeds whose ids increase)",
    ),
  feedAmends: () =>
    counter(
      'candlewick_feed_amends_total',
      "The feed's corrections and cancels of trades it sent before (kind): kept in feed:corrections and applied to their bars by the closer",
      ['kind'] as const,
    ),
  tradesRejected: () => counter('candlewick_trades_rejected_total', 'Trades or frames refused by validation (kept in trades:rejected)'),
  ingestHold: () =>
    histogram(
      'candlewick_ingest_hold_seconds',
      'Time a trade spent outside Redis: receipt to Redis acknowledging the append (oldest of each batch)',
      [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    ),
  ingestStart: () =>
    gauge(
      'candlewick_ingest_start_seconds',
      "From this ingestor starting to its first trades in Redis (a restart's time to flowing again)",
    ),
  wsReconnects: () => counter('candlewick_ws_reconnects_total', 'Feed WebSocket connections opened after the first'),
  feedGaps: () => counter('candlewick_feed_gaps_total', 'Feed outages recorded in feed:gaps'),
  redisDataLost: () =>
    counter('candlewick_redis_data_lost_total', 'Partitions whose data Redis lost (their marker gone): bars open then close incomplete'),
  // aggregator
  tradesMerged: () => counter('candlewick_trades_merged_total', 'Trades folded into open bars'),
  tradesLate: () => counter('candlewick_trades_late_total', 'Trades older than the closed horizon (kept in trades:late, in no bar)'),
  batchSize: () =>
    histogram('candlewick_batch_size', 'Raw stream entries per aggregator batch', [1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000]),
  mergeSeconds: () =>
    histogram(
      'candlewick_merge_seconds',
      'Time of one batch: pre-aggregation and the mergeBatch script',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    ),
  pendingEntries: (collect: (g: Gauge<'partition' | 'consumer'>) => Promise<void>) =>
    once(
      'candlewick_pending_entries',
      () =>
        new (prom().Gauge)({
          name: 'candlewick_pending_entries',
          help: 'Raw stream entries delivered to an aggregator and not yet merged, per partition and consumer (read at scrape time)',
          labelNames: ['partition', 'consumer'] as const,
          registers: [registry()],
          async collect() {
            await collect(this);
          },
        }),
    ),
  takeovers: () =>
    counter('candlewick_takeovers_total', 'Times this aggregator took over the pending entries of a member whose heartbeat had lapsed'),
  takeoverSeconds: () =>
    histogram(
      'candlewick_takeover_seconds',
      'How long the entries of a dead member had waited when they were taken over',
      [0.5, 1, 2, 3, 5, 10, 30, 60],
    ),
  // closer
  barsClosed: () => counter('candlewick_bars_closed_total', 'Bars closed and handed to the writer queue', ['interval']),
  // writer
  barsWritten: () =>
    counter('candlewick_bars_written_total', 'Rows appended to the CSV files (corrections as interval "corrections:…")', ['interval']),
  csvFileEvents: () =>
    counter(
      'candlewick_csv_file_events_total',
      'CSV files the writer repaired: partial rows cut, damaged files set aside, missing rows found',
      ['kind'],
    ),
  diskFailing: () => gauge('candlewick_csv_append_failing', '1 while appending to the CSV files fails (a full disk, permissions), else 0'),
  closeLag: () =>
    histogram(
      'candlewick_close_lag_seconds',
      "From the end of a bar's window to its row reaching the CSV (wall clock)",
      [0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 3600],
      ['interval'],
    ),
  // pg-sink
  pgLagEntries: () => gauge('candlewick_pg_lag_entries', 'Closed bars (bars:{interval} entries) not yet committed to PostgreSQL'),
  pgLagSeconds: () => gauge('candlewick_pg_lag_seconds', 'Age of the oldest closed bar not yet committed to PostgreSQL (0: caught up)'),
  pgRowsWritten: () => counter('candlewick_pg_rows_total', 'Bar rows (and corrections) committed to PostgreSQL'),
  // backfill
  backfills: () =>
    counter('candlewick_backfills_total', 'Backfill requests handled, by outcome (filled, incomplete, expired)', ['outcome']),
};

/** What a role reports on /healthz: `ok` false answers 503. */
export interface Health {
  ok: boolean;
  [detail: string]: unknown;
}

/**
 * The role's HTTP endpoint: GET /metrics (Prometheus text) and GET /healthz (JSON, 200 or 503).
 * Node's own http module: two routes need no framework.
 */
export class MetricsServer {
  private server: Server | undefined;

  constructor(
    private readonly opts: { port: number; host: string; role: string },
    private readonly health: () => Health | Promise<Health>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const metricsOf = registry();
    if (!metricsOf.getSingleMetric('candlewick_process_cpu_seconds_total'))
      prom().collectDefaultMetrics({ register: metricsOf, prefix: 'candlewick_' });
    metricsOf.setDefaultLabels({ role: this.opts.role });
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const reply = async () => {
        if (req.method !== 'GET') return [405, 'text/plain', 'GET only\n'] as const;
        if (path === '/metrics') return [200, metricsOf.contentType, await metricsOf.metrics()] as const;
        if (path === '/healthz') {
          const h = await this.health();
          return [h.ok ? 200 : 503, 'application/json', `${JSON.stringify({ role: this.opts.role, ...h })}\n`] as const;
        }
        return [404, 'text/plain', 'not found: try /metrics or /healthz\n'] as const;
      };
      reply().then(
        ([status, type, body]) => res.writeHead(status, { 'content-type': type }).end(body),
        (err: unknown) => {
          this.log.warn({ err, path }, 'metrics endpoint error');
          res.writeHead(500, { 'content-type': 'text/plain' }).end('error\n');
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        // a port in use or not allowed: exit 2, as a configuration to change
        const unavailable = listenError(err, {
          port: this.opts.port,
          host: this.opts.host,
          portSetting: 'METRICS_PORT',
          hostSetting: 'METRICS_HOST',
          what: 'cannot serve metrics',
          todo: 'choose another METRICS_PORT (under stack, each role takes the next one from it), or 0 to turn it off',
        });
        reject(
          unavailable !== err
            ? unavailable
            : new Error(
                `cannot serve metrics on ${this.opts.host}:${this.opts.port} (${err.code ?? err.message}): choose another METRICS_PORT, or 0 to turn it off`,
                { cause: err },
              ),
        );
      });
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.server = server;
    this.log.info({ port: this.opts.port, host: this.opts.host }, 'serving /metrics and /healthz');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
