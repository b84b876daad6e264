import { join, resolve } from 'node:path';
import {
  EXIT,
  RedisUnavailableError,
  connectRedis,
  createLogger,
  describeRedis,
  redisAccess,
  handleShutdown,
  isConnectionError,
  isRefusal,
  redisLink,
  reportRedisError,
  requireNoEviction,
  sleep,
  watchRedis,
  readRedisClock,
  waitForRedis,
  makeKeys,
  isTapeTrade,
  listenError,
  type Component,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
  MetricsServer,
  tapBars,
  tapTrades,
  type Health,
  type RoleMessage,
  type RoleProgress,
  type StackMessage,
} from '@candlewick/common';
import type { Progress } from '@candlewick/backfill';
import { stackRedis } from './redis-server.js';
import { openTable, replayTape, tableCells, tapeSubscription } from './tape.js';

/*
 * The roles that talk to Redis or serve a port. Each imports its package when it runs, so a role
 * loads its own libraries (BullMQ, fastify, ws...) and no other role's.
 */

export function rootLogger(cfg: Config, name: string, write?: (line: string) => void): Logger {
  const file = cfg.logFile
    ? { path: join(cfg.dataDir, 'logs', cfg.logName ?? name), size: cfg.logFileSize, count: cfg.logFileCount }
    : undefined;
  return createLogger({ level: cfg.logLevel, pretty: cfg.logPretty, name, write, file });
}

const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * REDIS_URL (with REDIS_PASSWORD), else the private Redis of a stack running on DATA_DIR (with its
 * password), else the local default. A stack's address file whose server is gone (the stack
 * stopped) is a RedisUnavailableError saying so: some other Redis on the default port is not it.
 */
function redisUrlFor(cfg: Config, log?: Logger): { url: string; password: string | undefined } {
  if (cfg.redisUrl) return { url: cfg.redisUrl, password: cfg.redisPassword };
  // a label only: the sentinels name the master
  if (cfg.redisSentinels.length > 0) return { url: DEFAULT_REDIS_URL, password: cfg.redisPassword };
  const stacks = cfg.redisCluster ? undefined : stackRedis(cfg.dataDir);
  if (stacks && 'stale' in stacks) throw new RedisUnavailableError(stacks.stale);
  if (stacks)
    log?.info({ redis: stacks.url, dataDir: cfg.dataDir }, 'REDIS_URL unset: using the private Redis of the stack running on DATA_DIR');
  return stacks ?? { url: DEFAULT_REDIS_URL, password: cfg.redisPassword };
}

function redisFor(cfg: Config, log: Logger, role: string): { redis: RedisClient; url: string; stackUrl: string | undefined } {
  const { url, password: stackPassword } = redisUrlFor(cfg, log);
  const access = redisAccess(cfg, role);
  // the private Redis of a stack on DATA_DIR has a password of its own
  if (!cfg.redisUrl && cfg.redisSentinels.length === 0 && stackPassword !== undefined) access.password = stackPassword;
  const where = describeRedis(url, access);
  log.info({ redis: where, ...(access.username ? { user: access.username } : {}) }, 'connecting to redis');
  // (the private Redis of a stack on DATA_DIR: its URL, which a tap follows)
  const stackUrl = !cfg.redisUrl && cfg.redisSentinels.length === 0 && stackPassword !== undefined ? url : undefined;
  return { redis: connectRedis(url, log.child({ component: 'redis' }), access), url: where, stackUrl };
}

const goneMessage = (why: string) => `candlewick tap: the stack stopped, nothing more will come: ${why}\n`;

/** how long a stack's address file must stay stale before a tap following it ends (the stack restarts a dead Redis in less) */
const STACK_GONE_MS = 5000;

/**
 * Under `candlewick stack` (an IPC channel to the parent), a role whose parent is gone stops itself
 * through the usual shutdown path, so a killed stack never leaves orphans behind.
 */
/** The CPU this process has used so far, µs (user + system). */
function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** A message to the `stack` that started this role (none without one). */
function tellStack(msg: RoleMessage): void {
  process.send?.(msg);
}

function stopWithParent(): void {
  if (!process.send) return;
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  // the parent's summary asks each role for the CPU it has used (µs, user + system)
  process.on('message', (msg: StackMessage) => {
    if (msg?.type === 'cpu' && process.connected) tellStack({ type: 'cpu', cpu: cpuUs() });
  });
}

/** /metrics and /healthz on METRICS_PORT, when it is set. */
function metricsServer(cfg: Config, role: string, log: Logger, health: () => Health): MetricsServer | undefined {
  if (cfg.metricsPort === 0) return undefined;
  return new MetricsServer({ port: cfg.metricsPort, host: cfg.metricsHost, role }, health, log.child({ component: 'metrics' }));
}

/** Runs one role until SIGINT/SIGTERM. */
async function runRole(cfg: Config, name: string, make: (redis: RedisClient, log: Logger) => Component): Promise<void> {
  const log = rootLogger(cfg, name);
  const { redis, url } = redisFor(cfg, log, name);
  const role = make(redis, log);
  const server = metricsServer(cfg, name, log, () => {
    const own = role.health?.() ?? { ok: true };
    const down = redisLink.downForMs;
    // (a paused Redis keeps its connection "ready": the link says it is not answering)
    const reachable = redis.status === 'ready' && down === 0;
    return {
      ...own,
      ok: reachable && !redisLink.policyProblem && own.ok,
      redis: !reachable
        ? `unreachable${down ? ` for ${Math.round(down / 1000)} s` : ''}${redisLink.reason ? ` (${redisLink.reason})` : ''}`
        : (redisLink.policyProblem ?? 'ready'),
    };
  });
  let started = false;
  handleShutdown(
    log,
    async () => {
      if (started) await role.stop();
      await server?.stop();
      await redis.quit().catch(() => undefined);
    },
    { unsaved: () => role.unsaved?.() },
  );
  stopWithParent();
  await server?.start();
  // A Redis never reached is a configuration problem to say, not a reason to hang: exit 3.
  await waitForRedis(redis, url, cfg.redisConnectTimeoutMs);
  // a Redis that may evict our keys loses bars without an error: refused (exit 2), saying what to set
  await requireNoEviction(redis);
  // Redis's clock, read before the role starts: what a role compares across processes is Redis's time
  await readRedisClock(redis);
  watchRedis(redis, { answerTimeoutMs: cfg.redisAnswerTimeoutMs, checkEveryMs: cfg.redisCheckEveryMs });
  started = true;
  // Redis refusing writes at start (a full disk under it) is waited out like one mid-run
  for (let attempt = 0; ; attempt++) {
    try {
      await role.start();
      break;
    } catch (err) {
      // an error that carries its exit code is final (a database not reached: its message may quote
      // "connect ECONNREFUSED", which is not Redis's)
      if ((err as { exitCode?: number }).exitCode !== undefined || (!isRefusal(err) && !isConnectionError(err))) throw err;
      reportRedisError(log, err, 'starting');
      await sleep(Math.min(5000, 250 * 2 ** attempt));
    }
  }
  const fatal = (role as { fatal?: Promise<Error> }).fatal;
  void fatal?.then(async (err) => {
    // A condition retrying cannot fix (a refused token): stop cleanly, exit 2 so supervisors do not loop.
    log.fatal({ reason: err.message }, `${name} cannot continue`);
    await role.stop().catch(() => undefined);
    await redis.quit().catch(() => undefined);
    process.exit(EXIT.CONFIG);
  });
  log.debug(`${name} ready`);
  // Under `candlewick stack` the parent waits for this before it starts the next stage.
  tellStack({ type: 'ready', cpu: cpuUs() });
  // ... and judges the end of a replay by this too, for Redis may not be there to say it
  if (process.send && role.endInput) process.on('message', (msg: StackMessage) => msg?.type === 'end-input' && role.endInput!());
  if (process.send && role.progress) {
    let last = '';
    setInterval(() => {
      const p = JSON.stringify(role.progress!());
      if (p !== last && process.connected) tellStack({ type: 'progress', progress: JSON.parse(p) as RoleProgress });
      last = p;
    }, 200).unref();
  }
}

type Service = new (redis: RedisClient, cfg: Config, keys: Keys, log: Logger) => Component;

/** The roles that are one service on one Redis connection, each loaded when it runs. */
export const SERVICES: Record<string, () => Promise<Service>> = {
  ingest: async () => (await import('@candlewick/ingestor')).Ingestor,
  aggregate: async () => (await import('@candlewick/aggregator')).Aggregator,
  close: async () => (await import('@candlewick/aggregator')).CloserService,
  write: async () => (await import('@candlewick/writer')).WriterService,
  'pg-sink': async () => (await import('@candlewick/writer')).PgSink,
  backfill: async () => (await import('@candlewick/backfill')).BackfillService,
  serve: async () => (await import('@candlewick/serve')).ServeService,
};

export async function runService(cfg: Config, role: string): Promise<void> {
  const Svc = await SERVICES[role]!();
  const keys = makeKeys(cfg.keyPrefix);
  // serve writes nothing under DATA_DIR (it may see it read-only): its log goes to stdout alone
  if (role === 'serve') cfg = Object.freeze({ ...cfg, logFile: false });
  // a replaying ingestor without SYMBOLS subscribes to the tape's (as `stack` does), and a writer
  // carrying flat bars carries them for the tape's symbols
  const bySymbol = role === 'ingest' || (role === 'write' && cfg.emptyBars === 'carry');
  if (bySymbol && cfg.mode === 'replay' && cfg.symbols.length === 0)
    cfg = Object.freeze({ ...cfg, symbols: tapeSubscription(cfg, replayTape(cfg)) });
  // serve with DATABASE_URL: /api/bars from the bars table (its reader is the writer package's, so serve loads no client of its own)
  const Reader = role === 'serve' && cfg.databaseUrl ? (await import('@candlewick/writer/dist/bars-table.js')).TableReader : undefined;
  if (Reader) {
    const Serve = Svc as unknown as new (
      ...args: [...ConstructorParameters<Service>, InstanceType<NonNullable<typeof Reader>>]
    ) => Component;
    return runRole(cfg, role, (redis, log) => new Serve(redis, cfg, keys, log, new Reader(cfg, log.child({ component: 'database' }))));
  }
  return runRole(cfg, role, (redis, log) => new Svc(redis, cfg, keys, log));
}

export async function runReplayServer(cfg: Config): Promise<void> {
  const { ReplayServer } = await import('@candlewick/ingestor');
  const log = rootLogger(cfg, 'replay-server');
  const { items, problems } = replayTape(cfg);
  problems.slice(0, 20).forEach((problem) => log.warn(problem));
  if (problems.length > 20) log.warn({ more: problems.length - 20 }, 'more tape lines left out');
  let tape = items;
  const from = cfg.replayFrom;
  if (from !== undefined) tape = tape.filter((item) => !isTapeTrade(item) || item.t >= from);
  const server = new ReplayServer(
    tape,
    {
      feed: cfg.feed,
      // FEED=massive: a login with another key is refused (auth_failed), as Massive does;
      // FEED=alpaca: with another key or secret (402 auth failed), as Alpaca does
      token: cfg.feed === 'massive' ? cfg.massiveApiKey : cfg.feed === 'alpaca' ? cfg.alpacaApiKey : undefined,
      secret: cfg.feed === 'alpaca' ? cfg.alpacaApiSecret : undefined,
      port: cfg.replayPort,
      host: cfg.replayHost,
      speed: cfg.replaySpeed,
      frameTrades: cfg.replayFrameTrades,
      progressEveryMs: cfg.replayProgressMs,
      shiftToNow: cfg.replayShift,
      // under `stack`: a kept-running replay stopped after this closes and writes every bar
      onFinished: () => process.connected && tellStack({ type: 'tape-done' }),
    },
    log,
  );
  const metrics = metricsServer(cfg, 'replay-server', log, () => ({ ok: true }));
  handleShutdown(log, async () => {
    await server.stop();
    await metrics?.stop();
  });
  stopWithParent();
  await metrics?.start();
  await server.start().catch((err: unknown) => {
    throw listenError(err, {
      port: cfg.replayPort,
      host: cfg.replayHost,
      portSetting: 'REPLAY_PORT',
      hostSetting: 'REPLAY_HOST',
      todo: process.connected
        ? 'choose a free port with REPLAY_PORT, or leave it unset and stack picks one'
        : 'choose a free port with REPLAY_PORT (or --port; 0 picks one), and point the ingestor at it',
    });
  });
  tellStack({ type: 'ready', cpu: cpuUs() });
}

/**
 * `candlewick provider-server`: REPLAY_TAPE served over HTTP in the history providers' shapes
 * (Finnhub candles, Massive aggregates and trades, Binance klines and aggregate trades, Alpaca
 * trades and bars) on REPLAY_PORT, accepting FINNHUB_TOKEN, MASSIVE_API_KEY and ALPACA_API_KEY with
 * ALPACA_API_SECRET: historical mode and backfill tried from a clone, with no key and no internet.
 */
export async function runProviderServer(cfg: Config): Promise<void> {
  const { ProviderServer } = await import('@candlewick/backfill');
  const log = rootLogger(cfg, 'provider-server');
  const { path, items } = replayTape(cfg);
  const server = new ProviderServer(items.filter(isTapeTrade), {
    host: cfg.replayHost,
    port: cfg.replayPort || 8766,
    finnhubToken: cfg.finnhubToken,
    massiveKey: cfg.massiveApiKey,
    alpacaKey: cfg.alpacaApiKey,
    alpacaSecret: cfg.alpacaApiSecret,
  });
  handleShutdown(log, () => server.stop());
  const base = await server.start().catch((err: unknown) => {
    throw listenError(err, {
      port: cfg.replayPort || 8766,
      host: cfg.replayHost,
      portSetting: 'REPLAY_PORT',
      hostSetting: 'REPLAY_HOST',
      todo: 'choose a free port with REPLAY_PORT (or --port), and point FINNHUB_REST_URL, BINANCE_REST_URL, MASSIVE_REST_URL or ALPACA_REST_URL at it',
    });
  });
  log.info(
    { tape: path, url: base },
    `serving the tape as Finnhub (${base}/api/v1), Binance (${base}), Massive (${base}) and Alpaca (${base}) history: point FINNHUB_REST_URL, BINANCE_REST_URL, MASSIVE_REST_URL or ALPACA_REST_URL here`,
  );
}

/** Progress of a historical backfill: a bar in a terminal, plain lines otherwise. */
async function progressFor(out: NodeJS.WriteStream): Promise<Progress> {
  if (out.isTTY) {
    const { SingleBar, Presets } = await import('cli-progress');
    const bar = new SingleBar(
      { format: 'backfill [{bar}] {value}/{total} {what} | eta {eta_formatted}', stream: out },
      Presets.shades_classic,
    );
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

/** `candlewick backfill --symbols … --from … --to …`: exit 0 done, 2 the provider refused (a symbol, or everything). */
export async function runHistoricalBackfill(cfg: Config): Promise<number> {
  const { ProviderError, runHistorical } = await import('@candlewick/backfill');
  const log = rootLogger(cfg, 'backfill', (line) => process.stderr.write(line));
  if (cfg.symbols.length === 0) {
    process.stderr.write('candlewick backfill: name the symbols, e.g. --symbols AAPL,MSFT\n');
    return EXIT.CONFIG;
  }
  // DATABASE_URL: the rows into the table too (connected first: a database not there costs no request, exit 3)
  const table = cfg.databaseUrl ? await openTable(cfg, 'candlewick backfill') : undefined;
  try {
    const r = await runHistorical(
      cfg,
      cfg.symbols,
      cfg.backfillFrom!,
      cfg.backfillTo!,
      log,
      await progressFor(process.stdout),
      table &&
        (async (rows) => {
          for (const { cells, ...bar } of rows) table.add({ ...bar, rev: 0, ...tableCells(cells) });
          await table.flush();
        }),
    );
    process.stdout.write(
      `backfill done: ${r.written} bars written, ${r.present} already there, from ${cfg.backfillMode === 'ticks' ? `${r.trades} trades` : `${r.candles} candles`} (${cfg.backfillProvider} ${cfg.backfillMode})${table ? `; ${table.written} rows upserted into PostgreSQL (${table.where})` : ''}\n`,
    );
    // a symbol the provider does not know: the others are done, this one is named with what to do
    for (const { symbol, reason } of r.refused) process.stderr.write(`candlewick backfill: ${symbol} not filled: ${reason}\n`);
    return r.refused.length ? EXIT.CONFIG : EXIT.OK;
  } catch (err) {
    if (err instanceof ProviderError) {
      process.stderr.write(`candlewick backfill: ${err.message}\n`);
      return err.permanent ? EXIT.CONFIG : EXIT.FAILURE;
    }
    throw err;
  } finally {
    await table?.close();
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
  const intervals = [...cfg.intervals, ...cfg.activity].map((iv) => iv.name);
  const bars = /^bars:(.+)$/.exec(req.target);
  if (req.target !== 'trades' && !(bars && intervals.includes(bars[1]!))) {
    process.stderr.write(
      `candlewick tap: "${req.target}" is not a stream to tap: use trades, or one of ${intervals.map((i) => `bars:${i}`).join(', ')}\n`,
    );
    return EXIT.CONFIG;
  }
  if (req.group !== undefined && !/^[A-Za-z0-9_.-]+$/.test(req.group)) {
    process.stderr.write(`candlewick tap: --group "${req.group}": letters, digits, _ . - only\n`);
    return EXIT.CONFIG;
  }
  const log = rootLogger({ ...cfg, logFile: false }, 'tap', (line) => process.stderr.write(line));
  const { redis, url, stackUrl } = redisFor(cfg, log, 'tap');
  const keys = makeKeys(cfg.keyPrefix);
  const abort = new AbortController();
  // following the private Redis of a stack on DATA_DIR: once that stack has stopped (its Redis with
  // it), nothing more will come; the tap ends, saying so, rather than waiting for good
  let stackGone: string | undefined;
  let staleSince = 0;
  const stackWatch = stackUrl
    ? setInterval(() => {
        // (its address file gone, stale, or naming another Redis: a stack started since is another run)
        const now = stackRedis(cfg.dataDir);
        if (now && !('stale' in now) && now.url === stackUrl) staleSince = 0;
        else if (staleSince === 0) staleSince = Date.now();
        else if (Date.now() - staleSince >= STACK_GONE_MS && stackGone === undefined) {
          stackGone =
            now && 'stale' in now
              ? now.stale
              : `the stack on DATA_DIR ${resolve(cfg.dataDir)} is not running (${now ? 'another one runs there now' : 'its address file is gone'})`;
          stop();
          // (a read queued while the connection was down is not failed by disconnect(): end here)
          setTimeout(() => {
            process.stderr.write(goneMessage(stackGone!));
            process.exit(EXIT.NO_REDIS);
          }, 3000).unref();
        }
      }, 1000)
    : undefined;
  const stop = () => {
    if (abort.signal.aborted) process.exit(EXIT.OK); // a second signal: now
    abort.abort();
    // a read waiting on a Redis that is not there would never return: close the connection
    setTimeout(() => redis.disconnect(), 1500).unref();
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, stop);
  process.stdout.on('error', stop); // a closed pipe (| head) ends the tap
  const symbols = req.symbols
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const opts = { symbols, from: req.from, group: req.group, signal: abort.signal };
  try {
    await Promise.race([
      waitForRedis(redis, url, cfg.redisConnectTimeoutMs),
      new Promise((r) => abort.signal.addEventListener('abort', r)),
    ]);
    if (abort.signal.aborted) return EXIT.OK;
    const items = bars ? tapBars(redis, keys, bars[1]!, opts) : tapTrades(redis, keys, cfg.partitions, opts);
    for await (const item of items) {
      if (!process.stdout.write(`${JSON.stringify(item)}\n`)) {
        await new Promise((r) => {
          process.stdout.once('drain', r);
          abort.signal.addEventListener('abort', r, { once: true });
        });
      }
    }
  } catch (err) {
    // the connection closed under a read by a stop is the end, not an error
    if (!abort.signal.aborted) throw err;
  } finally {
    clearInterval(stackWatch);
    redis.disconnect();
  }
  if (stackGone !== undefined) {
    process.stderr.write(goneMessage(stackGone));
    return EXIT.NO_REDIS;
  }
  return EXIT.OK;
}
