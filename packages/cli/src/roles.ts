import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import {
  connectRedis,
  createLogger,
  handleShutdown,
  makeKeys,
  redactUrl,
  type Component,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
  MetricsServer,
  tapBars,
  tapTrades,
  type Health,
} from '@candlewick/common';
import { Ingestor, ReplayServer, isRawFrame, readTape } from '@candlewick/ingestor';
import { Aggregator, CloserService } from '@candlewick/aggregator';
import { WriterService } from '@candlewick/writer';
import { BackfillService, ProviderError, runHistorical, type Progress } from '@candlewick/backfill';
import { SingleBar, Presets } from 'cli-progress';

/** The bundled tape: Binance XRP/ETH aggTrades, 2019-10-11 .. 2019-10-13 (see tapes/README.md). */
export const BUNDLED_TAPE = fileURLToPath(new URL('../../../tapes/binance-xrpeth-aggtrades-2019-10-11.json.gz', import.meta.url));

export function rootLogger(cfg: Config, name: string, write?: (line: string) => void): Logger {
  const file = cfg.logFile ? { path: join(cfg.dataDir, 'logs', cfg.logName ?? name), size: cfg.logFileSize, count: cfg.logFileCount } : undefined;
  return createLogger({ level: cfg.logLevel, pretty: cfg.logPretty, name, write, file });
}

function redisFor(cfg: Config, log: Logger): RedisClient {
  const url = cfg.redisUrl ?? 'redis://127.0.0.1:6379';
  log.info({ redis: redactUrl(url) }, 'connecting to redis');
  return connectRedis(url, log.child({ component: 'redis' }), { cluster: cfg.redisCluster });
}


/**
 * Under `candlewick stack` (an IPC channel to the parent), a role whose parent is gone stops itself
 * through the usual shutdown path, so a killed stack never leaves orphans behind.
 */
function stopWithParent(): void {
  if (process.send) process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}

/** /metrics and /healthz on METRICS_PORT, when it is set. */
function metricsServer(cfg: Config, role: string, log: Logger, health: () => Health): MetricsServer | undefined {
  if (cfg.metricsPort === 0) return undefined;
  return new MetricsServer({ port: cfg.metricsPort, host: cfg.metricsHost, role }, health, log.child({ component: 'metrics' }));
}

/** Runs one role until SIGINT/SIGTERM. */
async function runRole(cfg: Config, name: string, make: (redis: RedisClient, log: Logger) => Component): Promise<void> {
  const log = rootLogger(cfg, name);
  const redis = redisFor(cfg, log);
  const role = make(redis, log);
  const server = metricsServer(cfg, name, log, () => {
    const own = role.health?.() ?? { ok: true };
    return { ...own, ok: redis.status === 'ready' && own.ok, redis: redis.status };
  });
  handleShutdown(log, async () => {
    await role.stop();
    await server?.stop();
    await redis.quit().catch(() => undefined);
  });
  stopWithParent();
  await server?.start();
  await role.start();
  const fatal = (role as { fatal?: Promise<Error> }).fatal;
  void fatal?.then(async (err) => {
    // A condition retrying cannot fix (a refused token): stop cleanly, exit 2 so supervisors do not loop.
    log.fatal({ reason: err.message }, `${name} cannot continue`);
    await role.stop().catch(() => undefined);
    await redis.quit().catch(() => undefined);
    process.exit(2);
  });
  log.debug(`${name} ready`);
  // Under `candlewick stack` the parent waits for this before it starts the next stage.
  process.send?.({ ready: true });
}

/** Every role the CLI runs (`candlewick <role>`). */
export const ROLES = ['stack', 'ingest', 'replay-server', 'aggregate', 'close', 'write', 'backfill', 'tap', 'help'] as const;

type Service = new (redis: RedisClient, cfg: Config, keys: Keys, log: Logger) => Component;

/** The roles that are one service on one Redis connection. */
export const SERVICES: Record<string, Service> = {
  ingest: Ingestor,
  aggregate: Aggregator,
  close: CloserService,
  write: WriterService,
  backfill: BackfillService,
};

export function runService(cfg: Config, role: string): Promise<void> {
  const Svc = SERVICES[role]!;
  const keys = makeKeys(cfg.keyPrefix);
  return runRole(cfg, role, (redis, log) => new Svc(redis, cfg, keys, log));
}

export async function runReplayServer(cfg: Config): Promise<void> {
  const log = rootLogger(cfg, 'replay-server');
  const tapePath = cfg.replayTape ?? BUNDLED_TAPE;
  let tape = readTape(tapePath);
  const from = cfg.replayFrom;
  if (from !== undefined) tape = tape.filter((item) => isRawFrame(item) || item.t >= from);
  const server = new ReplayServer(tape, { port: cfg.replayPort, host: cfg.replayHost, speed: cfg.replaySpeed, frameTrades: cfg.replayFrameTrades, shiftToNow: cfg.replayShift }, log);
  const metrics = metricsServer(cfg, 'replay-server', log, () => ({ ok: true }));
  handleShutdown(log, async () => {
    await server.stop();
    await metrics?.stop();
  });
  stopWithParent();
  await metrics?.start();
  await server.start();
  process.send?.({ ready: true });
}

/** Progress of a historical backfill: a bar in a terminal, plain lines otherwise. */
function progressFor(out: NodeJS.WriteStream): Progress {
  if (out.isTTY) {
    const bar = new SingleBar({ format: 'backfill [{bar}] {value}/{total} {what} | eta {eta_formatted}', stream: out }, Presets.shades_classic);
    return { start: (total) => bar.start(total, 0, { what: '' }), step: (what) => bar.increment(1, { what }), stop: () => bar.stop() };
  }
  let done = 0;
  let total = 0;
  return {
    start: (n) => (total = n),
    step: (what) => out.write(`backfill ${++done}/${total} ${what}\n`),
    stop: () => undefined,
  };
}

/** `candlewick backfill --symbols … --from … --to …`: exit 0 done, 2 the provider refused. */
export async function runHistoricalBackfill(cfg: Config): Promise<number> {
  const log = rootLogger(cfg, 'backfill', (line) => process.stderr.write(line));
  if (cfg.symbols.length === 0) {
    process.stderr.write('candlewick backfill: name the symbols, e.g. --symbols AAPL,MSFT\n');
    return 2;
  }
  try {
    const r = await runHistorical(cfg, cfg.symbols, cfg.backfillFrom!, cfg.backfillTo!, log, progressFor(process.stdout));
    process.stdout.write(
      `backfill done: ${r.written} bars written, ${r.present} already there, from ${r.trades ? `${r.trades} trades` : `${r.candles} candles`} (${cfg.backfillProvider} ${cfg.backfillMode})\n`,
    );
    return 0;
  } catch (err) {
    if (err instanceof ProviderError) {
      process.stderr.write(`candlewick backfill: ${err.message}\n`);
      return err.permanent ? 2 : 1;
    }
    throw err;
  }
}

export interface TapRequest {
  /** "trades" or "bars:{interval}" */
  target: string;
  symbols?: string;
  from?: string;
  group?: string;
}

/**
 * `candlewick tap trades|bars:5min`: one JSON line per entry on stdout until Ctrl-C (exit 0), or
 * 2 with a message for a target that does not exist.
 */
export async function runTap(cfg: Config, req: TapRequest): Promise<number> {
  const intervals = cfg.intervals.map((iv) => iv.name);
  const bars = /^bars:(.+)$/.exec(req.target);
  if (req.target !== 'trades' && !(bars && intervals.includes(bars[1]!))) {
    process.stderr.write(`candlewick tap: "${req.target}" is not a stream to tap: use trades, or one of ${intervals.map((i) => `bars:${i}`).join(', ')}\n`);
    return 2;
  }
  if (req.group !== undefined && !/^[A-Za-z0-9_.-]+$/.test(req.group)) {
    process.stderr.write(`candlewick tap: --group "${req.group}": letters, digits, _ . - only\n`);
    return 2;
  }
  const log = rootLogger({ ...cfg, logFile: false }, 'tap', (line) => process.stderr.write(line));
  const redis = redisFor(cfg, log);
  const keys = makeKeys(cfg.keyPrefix);
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort());
  process.stdout.on('error', () => abort.abort()); // a closed pipe (| head) ends the tap
  const symbols = req.symbols?.split(',').map((s) => s.trim()).filter(Boolean);
  const opts = { symbols, from: req.from, group: req.group, signal: abort.signal };
  try {
    const items = bars ? tapBars(redis, keys, bars[1]!, opts) : tapTrades(redis, keys, cfg.partitions, opts);
    for await (const item of items) {
      if (!process.stdout.write(`${JSON.stringify(item)}\n`)) {
        await new Promise((r) => {
          process.stdout.once('drain', r);
          abort.signal.addEventListener('abort', r, { once: true });
        });
      }
    }
  } finally {
    redis.disconnect();
  }
  return 0;
}
