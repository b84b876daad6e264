import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { connect } from 'node:net';
import { getPriority, setPriority } from 'node:os';
import type { Queue } from 'bullmq';
import { Cluster } from 'ioredis';
import {
  ConfigError,
  EXIT,
  FileLock,
  RedisLease,
  RedisUnavailableError,
  connectRedis,
  describeRedis,
  redisAccess,
  disableCrashPoints,
  ensureEpoch,
  epochHeld,
  idleAndDrained,
  monoMs,
  Quiet,
  readCounters,
  zeroCounters,
  makeKeys,
  redisLink,
  reportRedisError,
  requireNoEviction,
  signalExitCode,
  sleep,
  waitForRedis,
  watchRedis,
  readRedisClock,
  checkEvictions,
  type Config,
  type Counters,
  type Keys,
  type Logger,
  type RedisClient,
  type RoleMessage,
  type RoleProgress,
  type StackMessage,
} from '@candlewick/common';
import { BarCloser, barsQueue, type CloseResult } from '@candlewick/aggregator';
import { rootLogger } from './roles.js';
import { replayTape, tapeSubscription } from './tape.js';
import { PrivateRedis, PrivateRedisCluster, freePort, generatePassword, privateRedisFiles } from './redis-server.js';
import { formatSummary, summarize, type CpuUse, type StackSummary } from './summary.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<number, string> = { 40: '\x1b[33m', 50: '\x1b[31m', 60: '\x1b[31m' };

/** Turns a child's pino JSON line into one readable line. */
export function formatLogLine(role: string, line: string, color: boolean): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${role.padEnd(14)} ${line}`;
  }
  const { level, time, msg, name: _n, pid: _p, hostname: _h, ...rest } = rec;
  const lv = Number(level);
  const ts = new Date(Number(time)).toISOString().slice(11, 23);
  const extra = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
  const text = `${ts} ${role.padEnd(14)} ${LEVELS[lv] ?? lv} ${String(msg ?? '')}${extra ? `  ${extra}` : ''}`;
  return color && COLORS[lv] ? `${COLORS[lv]}${text}\x1b[0m` : text;
}

interface Child {
  role: string;
  name: string;
  proc: ChildProcess;
  restarts: number[];
  /** settles when the role has logged that it is ready */
  ready: Promise<void>;
  /** the CPU it had used (µs) when it was ready, and as it last answered */
  cpuAtReady?: number;
  cpuUs?: number;
  /** what the role last said of its progress (the ingestor: newest receive time, trades held) */
  progress?: RoleProgress;
  /** the replay server: it has sent the whole tape */
  tapeDone?: boolean;
}

/** A message to a role (an error of a channel closing meanwhile is ignored). */
function tellRole(c: Child, msg: StackMessage): void {
  c.proc.send(msg, () => undefined);
}

/**
 * The one stop request of a stack: the first signal (or a closed stdout) asks for a graceful stop,
 * a second one stops at once. Every wait in the stack races `stopped`, so no wait — on Redis, on
 * the writer, on the final close — keeps it from answering.
 */
class StopRequest {
  reason: NodeJS.Signals | undefined;
  private resolve: () => void = () => undefined;
  readonly stopped = new Promise<void>((r) => (this.resolve = r));

  request(reason: NodeJS.Signals): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.resolve();
  }

  /** `p`, or undefined as soon as a stop is requested */
  race<T>(p: Promise<T>): Promise<T | undefined> {
    return Promise.race([p, this.stopped.then(() => undefined)]);
  }
}

/**
 * The stack's terminal: a closed stdout (`npm start | head`) is a request to stop, never a crash;
 * lines after that are dropped (the log file keeps them).
 */
class Terminal {
  private broken = false;
  onBroken: () => void = () => undefined;

  constructor(private readonly out: NodeJS.WriteStream) {
    out.on('error', () => {
      if (this.broken) return;
      this.broken = true;
      this.onBroken();
    });
  }

  line(text: string): void {
    if (!this.broken) this.out.write(`${text}\n`);
  }
}

/** Shutdown order: upstream first, so every stage hands what it holds to the next. */
const STOP_ORDER = ['ingest', 'replay-server', 'backfill', 'aggregate', 'close', 'write', 'pg-sink', 'serve'];
/**
 * Roles the pipeline does not need: not waited for at start, and one that cannot start is left off
 * (pg-sink: a database refusing its login or not reached at start, exit 3, stops no CSV file).
 */
const OPTIONAL_ROLES: ReadonlySet<string> = new Set(['serve', 'pg-sink']);

/**
 * The roles of a stack as child processes. Each runs in a process group of its own (a terminal's
 * Ctrl-C reaches the stack alone, which stops the roles in order), under a stable name per slot
 * (a restarted aggregator takes back what its predecessor had read), at STACK_NICE below the
 * stack; its log lines are made readable on the terminal and its messages (ready, progress, CPU,
 * tape done) kept on its Child. A role that exits unexpectedly is restarted under its name after
 * half a second; a configuration problem, or five exits within a minute, fails the stack instead,
 * and an optional role (serve, pg-sink) that cannot start is left off.
 */
class Supervisor {
  readonly children: Child[] = [];
  /** stopping on purpose: a role's exit is not restarted */
  stopping = false;
  /** a second Ctrl-C: every role killed, nothing waited for */
  forced = false;
  /** METRICS_PORT set: each role serves /metrics and /healthz on its own port, from METRICS_PORT up */
  private readonly metricsPorts = new Map<string, number>();
  private readonly nicer: (pid: number, feed: boolean) => void;

  /**
   * `env` is what every role gets; the stack completes it (Redis, the replay server) before it
   * starts the roles that need it. `fail` gives up the stack.
   */
  constructor(
    private readonly cfg: Config,
    private readonly env: NodeJS.ProcessEnv,
    private readonly term: Terminal,
    private readonly color: boolean,
    private readonly log: Logger,
    private readonly fail: (code: number, why: string) => void,
  ) {
    this.nicer = makeNicer(cfg.stackNice, cfg.stackFeedNice, log);
  }

  /** Starts a role under a name (the slot: `aggregate.2`) and supervises it. */
  start(role: string, name = role): Child {
    const child = this.spawn(role, name);
    this.children.push(child);
    return child;
  }

  find(role: string): Child | undefined {
    return this.children.find((c) => c.role === role);
  }

  /** Settles when every role the pipeline needs has said it is ready. */
  ready(): Promise<unknown> {
    return Promise.all(this.children.filter((c) => !OPTIONAL_ROLES.has(c.role)).map((c) => c.ready));
  }

  /** The replay server has sent its whole tape. */
  get tapeDone(): boolean {
    return this.children.some((c) => c.tapeDone);
  }

  /** A second Ctrl-C: every role killed now, none restarted. */
  killAll(): void {
    this.forced = true;
    for (const c of this.children) c.proc.kill('SIGKILL');
  }

  /**
   * Stops every role, upstream first, so each stage hands what it holds to the next (SIGTERM, then
   * SIGKILL after 20 s; at once when forced). With Redis away every role stops without it (a few
   * seconds each): they are stopped all at once then.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    const groups = redisLink.downForMs > 0 ? [STOP_ORDER] : STOP_ORDER.map((r) => [r]);
    for (const roles of groups) {
      const cs = this.children.filter((c) => roles.includes(c.role) && c.proc.exitCode === null && c.proc.signalCode === null);
      await Promise.all(cs.map((c) => stopChild(c.proc, this.forced ? 0 : 20_000)));
    }
  }

  /** Spawns a role's process (again, for a restart: `existing` keeps its name and restarts). */
  private spawn(role: string, name: string, existing?: Child): Child {
    const { cfg } = this;
    const own: NodeJS.ProcessEnv = { LOG_NAME: name.replace(/\./g, '-') };
    // a stable name per slot: a restarted aggregator takes back what its predecessor had read
    if (role === 'aggregate') own.CONSUMER_NAME = name;
    if (cfg.metricsPort > 0) {
      if (!this.metricsPorts.has(name)) this.metricsPorts.set(name, cfg.metricsPort + this.metricsPorts.size);
      own.METRICS_PORT = String(this.metricsPorts.get(name));
    }
    const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]!, role], {
      env: { ...this.env, ...own },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // its own process group: a terminal's Ctrl-C goes to the stack alone, which stops roles in order
      detached: true,
    });
    let markReady: () => void = () => undefined;
    const readyP = new Promise<void>((r) => (markReady = r));
    const child = existing ?? { role, name, proc, restarts: [], ready: readyP };
    child.proc = proc;
    child.ready = readyP;
    // On one machine Redis is the critical path: the Node roles yield the CPU to it; and the feed's
    // roles yield it to closing and writing (trades wait safely in their stream for a second or
    // two, while a boundary's bars are what users wait for).
    if (proc.pid) this.nicer(proc.pid, FEED_ROLES.has(role));
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => this.term.line(formatLogLine(name, line, this.color)));
    }
    proc.on('message', (msg: RoleMessage) => {
      switch (msg?.type) {
        case 'ready':
          child.cpuAtReady = msg.cpu;
          markReady();
          break;
        case 'cpu':
          child.cpuUs = msg.cpu;
          break;
        case 'progress':
          child.progress = msg.progress;
          break;
        case 'tape-done':
          child.tapeDone = true;
          break;
      }
    });
    proc.on('exit', (exitCode, signal) => this.exited(child, exitCode, signal));
    return child;
  }

  /** A role's process exited: restarted, left off, or the stack fails (see the class). */
  private exited(child: Child, exitCode: number | null, signal: NodeJS.Signals | null): void {
    const { role, name } = child;
    // (killed by a second Ctrl-C: not restarted)
    if (this.stopping || this.forced) return;
    const now = Date.now();
    child.restarts = child.restarts.filter((t) => now - t < 60_000);
    // the page is a view: a port it cannot have (said in its log) leaves the pipeline running without it
    if ((exitCode === EXIT.CONFIG || exitCode === EXIT.NO_REDIS) && OPTIONAL_ROLES.has(role))
      return this.log.warn({ role: name }, `${name} did not start (see above); the pipeline runs on without it`);
    if (exitCode === EXIT.CONFIG)
      // (a refused key, symbols the feed cannot have: the stack's own exit says configuration too, so a supervisor does not loop)
      return this.fail(EXIT.CONFIG, `${name} stopped on a configuration problem (exit ${exitCode}, see above); not restarting it`);
    if (child.restarts.length >= 5)
      return this.fail(EXIT.FAILURE, `${name} exited (${exitCode ?? signal}) 5 times within a minute; not restarting it`);
    child.restarts.push(now);
    this.log.warn({ role: name, code: exitCode, signal }, 'role exited unexpectedly; restarting it');
    setTimeout(() => !this.stopping && this.spawn(role, name, child), 500);
  }
}

/** What a run is measured from: its counters, when it started, the CPU when the feed started. */
interface RunStart {
  startedAt: number;
  /** the counters at the start (zero again from a loss of Redis's data) */
  baseline: Counters;
  cpu: { at: number; stack: number; redis: number | undefined };
}

/**
 * The summary of a run at its end: the counters' differences since its start, the final close's
 * time (from `closeStartedAt`), each process's CPU, and when Redis lost the data if it did. Undefined when
 * Redis does not answer within 2 s after a stop at once (`finished` false: a second Ctrl-C), so
 * such a stop never waits for it.
 */
async function runSummary(
  redis: RedisClient,
  cfg: Config,
  keys: Keys,
  supervisor: Supervisor,
  run: RunStart,
  o: { finished: boolean; closeStartedAt: number; privateRedis: boolean; dataLostAt: number | undefined },
): Promise<StackSummary | undefined> {
  const settled = <T>(p: Promise<T>): Promise<T | undefined> => (o.finished ? p : Promise.race([p, sleep(2000).then(() => undefined)]));
  // (keys Redis evicted in the last moments are as lost as the others: a last look)
  await settled(checkEvictions(redis));
  const counters = await settled(readCounters(redis, cfg, keys));
  const cpu = counters && (await settled(cpuAccount(supervisor.children, redis, run.cpu, o.privateRedis)));
  if (!counters || !cpu) return undefined;
  const summary = summarize(run.baseline, counters, run.startedAt, Date.now(), Date.now() - o.closeStartedAt);
  summary.cpu = cpu;
  summary.cpuWallMs = Date.now() - run.cpu.at;
  if (o.dataLostAt !== undefined) {
    summary.dataLostAt = o.dataLostAt;
    if (!cfg.csvExtraColumns) summary.incompleteFiles = incompleteFiles(cfg.dataDir, run.startedAt);
  }
  if (redisLink.evicted > 0) summary.evicted = { keys: redisLink.evicted, at: redisLink.evictedAt ?? Date.now() };
  return summary;
}

/** The `.incomplete.csv` files under DATA_DIR/raw written to since `since` (this run's), as raw/<interval>/<file>. */
function incompleteFiles(dataDir: string, since: number): string[] {
  const raw = join(dataDir, 'raw');
  const out: string[] = [];
  if (!existsSync(raw)) return out;
  for (const iv of readdirSync(raw, { withFileTypes: true })) {
    if (!iv.isDirectory()) continue;
    for (const name of readdirSync(join(raw, iv.name)))
      if (name.endsWith('.incomplete.csv') && statSync(join(raw, iv.name, name)).mtimeMs >= since) out.push(join('raw', iv.name, name));
  }
  return out.sort();
}

/**
 * The stop requests of a stack: SIGINT, SIGTERM or SIGHUP (or a closed stdout) asks for a graceful
 * stop; a second signal kills every role at once and cuts the final close short (`windDown`).
 */
function stopOnSignals(stop: StopRequest, roles: Supervisor, term: Terminal, log: Logger, windDown: () => StopRequest | undefined): void {
  let firstSignalAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    // npm start / npx forward the terminal's SIGINT to the stack, which had it from the terminal
    // too: the same signal within half a second is that one Ctrl-C, not a second
    if (stop.reason === sig && Date.now() - firstSignalAt < 500) return;
    if (stop.reason !== undefined) {
      // a second Ctrl-C: no more waiting
      windDown()?.request(sig);
      log.warn({ signal: sig }, 'second signal: killing every role now');
      roles.killAll();
      return;
    }
    log.info({ signal: sig }, 'stopping every role in order (a second Ctrl-C kills them now)');
    firstSignalAt = Date.now();
    stop.request(sig);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
  term.onBroken = () => {
    log.info('stdout closed; stopping every role in order');
    stop.request('SIGPIPE');
  };
}

/** A replay's tape, read before anything starts, and its subscription, given to every role. */
function replayEnv(cfg: Config, childEnv: NodeJS.ProcessEnv, log: Logger): void {
  const tape = replayTape(cfg);
  const tapePath = tape.path;
  childEnv.REPLAY_TAPE = tapePath;
  const symbols = tapeSubscription(cfg, tape);
  // One environment variable holds at most 128 KiB on Linux (spawn fails with E2BIG past it), and
  // a whole market's list is more: a long list is left for each role to take from the tape
  // itself, as a replaying role without SYMBOLS does.
  if (cfg.symbols.length === 0 && symbols.join(',').length <= 64 * 1024) childEnv.SYMBOLS = symbols.join(',');
  log.info(
    { tape: tapePath, feed: cfg.feed, symbols: symbols.length > 50 ? `${symbols.length} symbols` : symbols.join(',') },
    cfg.feed === 'finnhub'
      ? 'no FINNHUB_TOKEN: replaying a recorded tape'
      : `replay mode: replaying a recorded tape in the ${cfg.feed} protocol`,
  );
}

/**
 * Starts the stack's private Redis, supervised (restarted when it dies), and gives the roles its
 * password by file (never in a log or a URL). Returns its URL.
 */
async function startPrivateRedis(
  own: ReturnType<typeof privateRedisOf>,
  cfg: Config,
  childEnv: NodeJS.ProcessEnv,
  log: Logger,
  stopping: () => boolean,
  fail: (code: number, why: string) => void,
): Promise<string> {
  const redisUrl = await own.server.start();
  log.info(
    { redis: redisUrl, dir: join(cfg.dataDir, cfg.redisCluster ? 'redis-cluster' : 'redis') },
    `started a private ${cfg.redisCluster ? '3-master redis cluster' : 'redis-server'} (AOF on)${cfg.redisCluster ? '' : '; from another terminal in this folder, `npx candlewick tap bars:1min` finds it'}`,
  );
  superviseRedis(own.server, log, stopping, fail);
  // the roles get the private server's password from its file (never in a log or a URL)
  delete childEnv.REDIS_PASSWORD;
  delete childEnv.REDIS_PASSWORD_FILE;
  if (own.passwordFile) childEnv.REDIS_PASSWORD_FILE = own.passwordFile;
  delete childEnv.REDIS_USERNAME;
  delete childEnv.REDIS_USERS_FILE;
  return redisUrl;
}

/**
 * The run until it ends: true once the feed has been idle for EXIT_WHEN_IDLE_MS and every stage
 * has drained (never with EXIT_WHEN_IDLE_MS=0), false on a stop request. Meanwhile the data marker
 * is watched: Redis losing the data starts the summary's counters again from nothing.
 */
async function untilIdle(
  redis: RedisClient,
  cfg: Config,
  keys: Keys,
  stop: StopRequest,
  roles: Supervisor,
  run: RunStart,
  marker: { check(): Promise<'held' | 'lost' | undefined> },
  redisBackAt: () => number,
): Promise<boolean> {
  const quiet = new Quiet();
  let endInputAsks = 0;
  while (stop.reason === undefined) {
    await stop.race(sleep(200));
    // Redis lost the data: the counters start again from nothing, so the summary does too
    if ((await marker.check()) === 'lost') run.baseline = zeroCounters(cfg);
    if (stop.reason !== undefined || cfg.exitWhenIdleMs === 0) continue;
    const ingest = roles.find('ingest');
    // (redisBackAt: while Redis was away the ingestor could not report what it received)
    const idle = await stop.race(
      idleAndDrained(redis, cfg, keys, cfg.exitWhenIdleMs, run.startedAt, quiet, ingest?.progress)
        .then((v) => v && monoMs() - redisBackAt() >= cfg.exitWhenIdleMs)
        .catch(() => false),
    );
    if (!idle) continue;
    // (asked a few times at most: an ingestor that cannot answer does not keep the stack from ending)
    if (ingest?.progress?.held && endInputAsks++ < 10) {
      // the input is over: a trade held back for confirmation (FUTURE_LIMIT_MS) is rejected now, so the summary counts it
      if (ingest.proc.connected) tellRole(ingest, { type: 'end-input' });
      continue;
    }
    return true;
  }
  return false;
}

/** What the end of a run works with. */
interface RunEnd {
  redis: RedisClient;
  bars: Queue;
  closer: BarCloser;
  cfg: Config;
  keys: Keys;
  log: Logger;
  term: Terminal;
  roles: Supervisor;
  run: RunStart;
  marker: { lostAt: number | undefined };
  privateRedis: boolean;
  /** every role stopped, Redis last */
  shutdown: () => Promise<void>;
}

/**
 * The end of a replay: every remaining bar closed and written (`finish`), the summary, every role
 * stopped. A stop request during it (`until`) leaves the bars not yet closed in Redis for the next
 * run. Returns the exit code.
 */
async function endOfRun(until: StopRequest, e: RunEnd): Promise<number> {
  const t0 = Date.now();
  const finished = await finish(e.redis, e.bars, e.closer, e.cfg, e.keys, until, e.log);
  const summary = await runSummary(e.redis, e.cfg, e.keys, e.roles, e.run, {
    finished,
    closeStartedAt: t0,
    privateRedis: e.privateRedis,
    dataLostAt: e.marker.lostAt,
  });
  await e.shutdown();
  if (!summary) {
    e.term.line('  (stopped at once; Redis did not answer, so no summary: bars not yet closed stay in Redis for the next run)');
    return signalExitCode(until.reason!);
  }
  e.term.line(formatSummary(summary, e.cfg.dataDir));
  if (!finished) {
    e.term.line('  (stopped during the final close: bars not yet closed stay in Redis for the next run)');
    return signalExitCode(until.reason!);
  }
  // the files are not whole (incomplete bars, rows missing, keys evicted): not a clean end
  return dataLost(e.marker) ? EXIT.FAILURE : EXIT.OK;
}

/**
 * `candlewick stack`: every role in one terminal. Uses REDIS_URL or starts a private redis-server;
 * in replay mode (no FINNHUB_TOKEN; FEED=massive: no MASSIVE_API_KEY; FEED=alpaca: no ALPACA_API_KEY and secret) it also starts the replay
 * server on the bundled tape (or REPLAY_TAPE).
 * With EXIT_WHEN_IDLE_MS it ends by itself once the feed has been quiet that long and every stage
 * has drained: it closes the remaining bars, waits for the writer, prints a summary and exits 0.
 *
 * Every child runs in a process group of its own, so Ctrl-C in a terminal (which signals the
 * terminal's whole group) reaches only the stack, which then stops the roles in order and Redis
 * last. A private redis-server that dies is restarted on its port and data. A replay stopped after
 * its whole tape was sent ends as it would have by itself (final close, summary, exit 0). Exit code:
 * 0 when the replay finished, or a run that ends only on request (live) was stopped cleanly; 128 + n when
 * signal n stopped a replay before its end; 1 when a role failed for good; 2 bad configuration; 3 no Redis.
 *
 * Its parts: the Supervisor (the roles' processes), `stopOnSignals`, the private Redis
 * (`startPrivateRedis`), and at the end `endOfRun`: `finish` (the final close), then `runSummary`.
 */
export async function runStack(cfg: Config, env: NodeJS.ProcessEnv): Promise<number> {
  disableCrashPoints();
  const startedAt = Date.now();
  const color = Boolean(process.stdout.isTTY);
  const term = new Terminal(process.stdout);
  const log = rootLogger(cfg, 'stack', (line) => term.line(formatLogLine('stack', line.trimEnd(), color)));
  const keys = makeKeys(cfg.keyPrefix);
  // the stack closes the last bars itself at its end (EXIT_WHEN_IDLE_MS): its closer must not earlier
  const childEnv: NodeJS.ProcessEnv = { ...env, LOG_PRETTY: 'false', MODE: cfg.mode, CLOSE_WHEN_IDLE_MS: '0' };

  const stop = new StopRequest();
  /** the final close a stop request leads to (a kept-running replay whose tape is done) */
  let windDown: StopRequest | undefined;
  /** why the stack gives up: a role that cannot be restarted, Redis gone for good */
  let failed: { code: number; why: string } | undefined;
  const fail = (code: number, why: string) => {
    failed ??= { code, why };
    log.error(why);
    stop.request('SIGTERM');
  };
  const roles = new Supervisor(cfg, childEnv, term, color, log, fail);
  stopOnSignals(stop, roles, term, log, () => windDown);
  // The tape is read before anything starts: a tape that cannot be read is a configuration error.
  if (cfg.mode === 'replay') replayEnv(cfg, childEnv, log);

  let privateRedis: PrivateRedis | PrivateRedisCluster | undefined;
  let privateRedisPassword: string | undefined;
  let redis: RedisClient | undefined;
  let bars: Queue | undefined;

  const shutdown = async () => {
    await roles.stop();
    await Promise.race([bars?.close().catch(() => undefined), sleep(2000)]);
    // (a lease's release is one Redis command: not waited for past 2 s, its heartbeat lapses by itself)
    for (const o of owned.reverse()) await Promise.race([o.release(), sleep(2000)]);
    redis?.disconnect();
    // Redis last: every role has handed over what it held
    await privateRedis?.stop();
  };

  let code: number = EXIT.OK;
  const owned: (FileLock | RedisLease)[] = [];
  try {
    // before anything starts (its private Redis included): a stack already running here is left alone
    owned.push(await ownDataDir(cfg, log));
    let redisUrl = cfg.redisUrl;
    // with sentinels the roles find the master themselves: no private Redis, the URL is a label
    if (!redisUrl && cfg.redisSentinels.length > 0) redisUrl = 'redis://127.0.0.1:6379';
    else if (!redisUrl) {
      const own = privateRedisOf(cfg);
      privateRedis = own.server;
      privateRedisPassword = own.password;
      redisUrl = await startPrivateRedis(own, cfg, childEnv, log, () => roles.stopping, fail);
    }
    if (cfg.redisSentinels.length === 0) childEnv.REDIS_URL = redisUrl;
    const access = privateRedis ? { cluster: cfg.redisCluster, password: privateRedisPassword } : redisAccess(cfg, 'stack');
    redis = connectRedis(redisUrl, log.child({ component: 'redis' }), access);
    // While Redis is away the ingestor cannot report the trades it receives, so the idle clock
    // starts again when the connection is back.
    let redisBackAt = 0;
    redis.on('ready', () => (redisBackAt = monoMs()));
    const ready = await stop.race(waitForRedis(redis, describeRedis(redisUrl, access), cfg.redisConnectTimeoutMs));
    if (stop.reason !== undefined && ready === undefined) return exitFor(stop.reason, cfg);
    // before any role starts: a Redis that may evict our keys is refused (exit 2), saying what to set
    await requireNoEviction(redis);
    await readRedisClock(redis);
    watchRedis(redis, { answerTimeoutMs: cfg.redisAnswerTimeoutMs, checkEveryMs: cfg.redisCheckEveryMs });
    owned.push(await ownPrefix(redis, keys, cfg, log));
    const marker = await watchEpoch(redis, keys, log);
    const run: RunStart = {
      startedAt,
      baseline: await readCounters(redis, cfg, keys),
      cpu: { at: Date.now(), stack: 0, redis: undefined },
    };
    bars = barsQueue(redis, keys);
    bars.on('error', () => undefined); // connection errors are said once by the link
    const closer = new BarCloser(redis, bars, cfg, keys, log.child({ component: 'final-close' }));

    if (cfg.mode === 'replay') {
      const port = cfg.replayPort || (await freePort());
      childEnv.REPLAY_PORT = String(port);
      // the replay server speaks FEED's protocol; the ingestor reads it where that feed's URL points
      if (cfg.feed === 'binance') childEnv.BINANCE_WS_URL = `ws://127.0.0.1:${port}/stream`;
      else if (cfg.feed === 'massive') childEnv.MASSIVE_WS_URL = `ws://127.0.0.1:${port}/stocks`;
      else if (cfg.feed === 'alpaca') childEnv.ALPACA_WS_URL = `ws://127.0.0.1:${port}/v2/iex`;
      else childEnv.FINNHUB_WS_URL = `ws://127.0.0.1:${port}`;
      roles.start('replay-server');
      await stop.race(waitForPort(port, 30_000));
    }
    roles.start('write');
    // DATABASE_URL: the closed bars into PostgreSQL too, off the CSV path (its own consumer group)
    if (cfg.databaseUrl) roles.start('pg-sink');
    roles.start('close');
    for (let i = 0; i < cfg.aggregators; i++) roles.start('aggregate', cfg.aggregators > 1 ? `aggregate.${i + 1}` : 'aggregate');
    if (cfg.backfill) roles.start('backfill');
    if (cfg.httpPort > 0) roles.start('serve');
    // The feed starts last, once every downstream role is up, so no stage starts behind.
    await stop.race(Promise.race([roles.ready(), sleep(60_000)]));
    // CPU is counted from here: start-up is not a cost per trade
    run.cpu = { at: Date.now(), stack: stackCpuUs(), redis: await redisCpuUs(redis).catch(() => undefined) };
    if (stop.reason === undefined) roles.start('ingest');

    const closeAndReport = (until: StopRequest): Promise<number> =>
      endOfRun(until, {
        redis: redis!,
        bars: bars!,
        closer,
        cfg,
        keys,
        log,
        term,
        roles,
        run,
        marker,
        privateRedis: privateRedis !== undefined,
        shutdown,
      });

    if (await untilIdle(redis, cfg, keys, stop, roles, run, marker, () => redisBackAt)) {
      log.info({ idleMs: cfg.exitWhenIdleMs }, 'feed idle and every stage drained; closing the remaining bars');
      return await closeAndReport(stop);
    }
    // A kept-running replay (EXIT_WHEN_IDLE_MS=0) whose tape is done, stopped on request, ends as it
    // would have by itself: nothing more can come, so every bar is closed and written. Stopped
    // before the tape's end (or live), the open bars stay in Redis for the next run instead.
    if (failed === undefined && !roles.forced && roles.tapeDone) {
      windDown = new StopRequest();
      log.info('the tape is done: closing the remaining bars before stopping (a second Ctrl-C stops at once)');
      const ingest = roles.find('ingest');
      // the input is over: a trade still held back for confirmation (FUTURE_LIMIT_MS) is rejected now
      if (ingest?.progress?.held && ingest.proc.connected) tellRole(ingest, { type: 'end-input' });
      await untilDrained(redis, cfg, keys, startedAt, () => ingest?.progress, windDown);
      return await closeAndReport(windDown);
    }
    code = failed?.code ?? exitFor(stop.reason!, cfg); // (untilIdle returns false only on a stop request)
    // a run stopped on request whose data Redis lost (or evicted) does not end clean either
    if (code === EXIT.OK && dataLost(marker)) code = EXIT.FAILURE;
  } catch (err) {
    if (err instanceof RedisUnavailableError) code = EXIT.NO_REDIS;
    else if (err instanceof ConfigError) code = EXIT.CONFIG;
    else code = EXIT.FAILURE;
    throw err;
  } finally {
    if (!roles.stopping) await shutdown();
  }
  return code;
}

/**
 * The run's data marker (epoch.ts), checked every second: Redis coming back without candlewick's
 * data (FLUSHALL, an AOF lost, a failover to an empty replica) is said, and the summary counts from
 * then (the ingestor says which bars it left incomplete).
 */
export async function watchEpoch(redis: RedisClient, keys: Keys, log: Logger) {
  const epoch = await ensureEpoch(redis, keys);
  // (monotonic: a step of this host's clock back must not stop the checks for an hour)
  let lastCheck = monoMs();
  const state = {
    lostAt: undefined as number | undefined,
    async check(): Promise<'held' | 'lost' | undefined> {
      if (monoMs() - lastCheck < 1000) return undefined;
      lastCheck = monoMs();
      const held = await epochHeld(redis, keys, epoch).catch(() => true);
      if (held) return 'held';
      state.lostAt ??= Date.now();
      log.error(
        { marker: keys.epoch() },
        `Redis lost candlewick's data (the marker key ${keys.epoch()} is gone): the summary counts only what came after, and the run ends with exit 1`,
      );
      return 'lost';
    },
  };
  return state;
}

const STACK_FIX =
  'one stack per DATA_DIR and key prefix: stop that one (Ctrl-C in its terminal), or give this one its own DATA_DIR and KEY_PREFIX';

/**
 * A second stack on a running one's DATA_DIR would stop its private Redis and write its files: the
 * DATA_DIR is held by a lock file (host, pid, since), checked before anything starts.
 */
async function ownDataDir(cfg: Config, log: Logger): Promise<FileLock> {
  mkdirSync(cfg.dataDir, { recursive: true });
  const lock = new FileLock(join(cfg.dataDir, 'candlewick-stack.lock'), cfg.takeoverMs, log);
  await lock.acquire(`DATA_DIR ${resolve(cfg.dataDir)} (a candlewick stack)`, STACK_FIX);
  return lock;
}

/**
 * A second stack on a running one's Redis and key prefix would read its counters, call itself idle
 * and print its summary while its writer took the first one's bars: the prefix is held in Redis
 * (a heartbeat), checked before any role starts.
 */
async function ownPrefix(redis: RedisClient, keys: Keys, cfg: Config, log: Logger): Promise<RedisLease> {
  const lease = new RedisLease(redis, keys.owner('stack'), cfg.takeoverMs, log);
  await lease.acquire(`key prefix ${keys.prefix} (a candlewick stack on this Redis)`, STACK_FIX);
  return lease;
}

/**
 * The private Redis of a stack without REDIS_URL: a redis-server under DATA_DIR/redis with a
 * password generated for this run (kept in a file only its owner can read, which the roles are
 * given as REDIS_PASSWORD_FILE), or a 3-master cluster under DATA_DIR/redis-cluster (no password).
 */
function privateRedisOf(cfg: Config): {
  server: PrivateRedis | PrivateRedisCluster;
  password?: string;
  passwordFile?: string;
} {
  if (cfg.redisCluster) return { server: new PrivateRedisCluster(join(cfg.dataDir, 'redis-cluster'), cfg.redisServerBin) };
  const dir = join(cfg.dataDir, 'redis');
  const password = generatePassword();
  return {
    server: new PrivateRedis(dir, cfg.redisServerBin, true, [], password),
    password,
    passwordFile: resolve(privateRedisFiles(dir).password),
  };
}

/**
 * The CPU every process has used on the run's trades (µs, user + system), from the moment each was
 * ready (the stack and Redis: from the feed's start), so start-up is not counted: each role's,
 * asked over IPC (a role that does not answer within a second is left out; a restarted role counts
 * from its restart), the stack's own, and Redis's (INFO cpu, its forks included; every master of a
 * cluster). A Redis given by REDIS_URL may serve others too: its figure is marked shared.
 */
async function cpuAccount(
  children: Child[],
  redis: RedisClient,
  atStart: { at: number; stack: number; redis: number | undefined },
  privateRedis: boolean,
): Promise<CpuUse[]> {
  const live = children.filter((c) => c.proc.connected);
  for (const c of live) c.cpuUs = undefined;
  for (const c of live) tellRole(c, { type: 'cpu' });
  const until = monoMs() + 1000;
  while (monoMs() < until && live.some((c) => c.cpuUs === undefined)) await sleep(10);
  const out: CpuUse[] = live
    .filter((c) => c.cpuUs !== undefined)
    .map((c) => ({ name: c.name, role: c.role, us: c.cpuUs! - (c.cpuAtReady ?? 0) }));
  out.push({ name: 'stack', role: 'stack', us: stackCpuUs() - atStart.stack });
  const redisNow = await redisCpuUs(redis).catch(() => undefined);
  if (redisNow !== undefined && atStart.redis !== undefined)
    out.push({ name: privateRedis ? 'redis' : 'redis (shared)', role: 'redis', us: redisNow - atStart.redis });
  return out;
}

function stackCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Redis's CPU so far, µs: main thread and forks (AOF rewrites), every master of a cluster. */
async function redisCpuUs(redis: RedisClient): Promise<number> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  let us = 0;
  for (const node of nodes) {
    const info = await node.info('cpu');
    for (const f of ['used_cpu_sys', 'used_cpu_user', 'used_cpu_sys_children', 'used_cpu_user_children']) {
      const m = new RegExp(`^${f}:([\\d.]+)`, 'm').exec(info);
      if (m) us += Math.round(Number(m[1]) * 1e6);
    }
  }
  return us;
}

/**
 * What a stop by `signal` means: a run that only ends on request (live, or EXIT_WHEN_IDLE_MS=0)
 * stopped cleanly is done (0); a replay that would have ended by itself was cut short (128 + n).
 */
/** Redis lost candlewick's data during the run: its marker went, or it evicted keys (the files may be wrong). */
function dataLost(marker: { lostAt: number | undefined }): boolean {
  return marker.lostAt !== undefined || redisLink.evicted > 0;
}

function exitFor(signal: NodeJS.Signals, cfg: Config): number {
  return cfg.exitWhenIdleMs === 0 ? EXIT.OK : signalExitCode(signal);
}

/**
 * STACK_NICE is relative: the roles run that many `nice` levels below the stack itself (the feed's
 * roles STACK_FEED_NICE more), and the private Redis (started by the stack) at the stack's own — so
 * under `nice -n 10 candlewick stack` the roles are at 15 and Redis at 10. An absolute level would
 * ask a non-root user for a higher priority than the stack has (EACCES), and as root would put the
 * roles above Redis. A refused setpriority is said once and costs nothing else: the roles then run
 * at the stack's level.
 */
function makeNicer(stackNice: number, feedNice: number, log: Logger): (pid: number, feed: boolean) => void {
  const base = getPriority();
  let said = false;
  return (pid, feed) => {
    const lower = stackNice + (feed ? feedNice : 0);
    if (lower === 0) return;
    const level = Math.min(19, base + lower);
    try {
      setPriority(pid, level);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return; // the role is already gone
      if (!said)
        log.warn(
          { nice: level, reason: (err as Error).message },
          "STACK_NICE: could not lower the roles' priority; they run at the stack's",
        );
      said = true;
    }
  };
}

/** The roles of the feed's side: STACK_FEED_NICE levels further below the others. */
const FEED_ROLES = new Set(['replay-server', 'ingest', 'aggregate', 'backfill']);

/** SIGTERM, then SIGKILL after `killAfterMs`; resolves when the process has exited. */
function stopChild(proc: ChildProcess, killAfterMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill(killAfterMs === 0 ? 'SIGKILL' : 'SIGTERM');
    if (killAfterMs > 0) setTimeout(() => proc.kill('SIGKILL'), killAfterMs).unref();
  });
}

/**
 * Restarts a private redis-server that dies, on its port and data (AOF), so the roles — which
 * wait for it — carry on; more than five deaths in a minute stop the stack with exit 3.
 */
function superviseRedis(
  redis: PrivateRedis | PrivateRedisCluster,
  log: Logger,
  stopping: () => boolean,
  fail: (code: number, why: string) => void,
): void {
  const restarts: number[] = [];
  const servers = redis instanceof PrivateRedisCluster ? redis.servers : [redis];
  for (const server of servers) {
    server.onUnexpectedExit = (how) => {
      if (stopping()) return;
      const said = server.lastLines.slice(-3).join(' | ');
      const now = Date.now();
      while (restarts.length && now - restarts[0]! > 60_000) restarts.shift();
      if (restarts.length >= 5) return fail(EXIT.NO_REDIS, `the private redis-server ${how} 5 times within a minute (${said}); stopping`);
      restarts.push(now);
      log.error(
        { redis: server.url, how, said },
        'the private redis-server died; restarting it on the same port and data (every role waits for it)',
      );
      setTimeout(() => {
        if (stopping()) return;
        server.start(server.port).then(
          () => log.info({ redis: server.url }, 'private redis-server restarted'),
          (err: unknown) =>
            fail(
              EXIT.NO_REDIS,
              `the private redis-server could not be restarted: ${(err as Error).message} (${server.lastLines.slice(-3).join(' | ')})`,
            ),
        );
      }, 200);
    };
  }
}

function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = monoMs() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => (sock.destroy(), resolve()));
      sock.once('error', () => {
        sock.destroy();
        if (monoMs() > until) reject(new Error(`replay server did not listen on port ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/**
 * Waits until what the feed delivered is merged and nothing more arrives (a quarter of a second
 * with nothing received, for the last frames may still be in the socket), or a stop request.
 */
async function untilDrained(
  redis: RedisClient,
  cfg: Config,
  keys: Keys,
  since: number,
  ingest: () => { lastRx: number; pending: number } | undefined,
  stop: StopRequest,
): Promise<void> {
  const quiet = new Quiet();
  while (stop.reason === undefined) {
    if (await stop.race(idleAndDrained(redis, cfg, keys, 250, since, quiet, ingest()).catch(() => false))) return;
    await stop.race(sleep(100));
  }
}

/**
 * Closes every remaining bar once everything ingested is merged, and waits for the writer.
 * Returns false when a stop request came first.
 */
async function finish(
  redis: RedisClient,
  bars: Queue,
  closer: BarCloser,
  cfg: Config,
  keys: Keys,
  stop: StopRequest,
  log: Logger,
): Promise<boolean> {
  for (;;) {
    // Redis away or refusing writes here is waited out like anywhere else
    const r = await stop.race(
      closer.tick(true).catch((err: unknown) => {
        reportRedisError(log, err, 'the final close failed; trying again');
        return sleep(500).then((): CloseResult => ({ merged: false, closed: 0, through: -Infinity }));
      }),
    );
    if (r === undefined) return false;
    if (r.merged && !r.waiting) break;
    await stop.race(sleep(50));
  }
  for (;;) {
    const drained = await stop.race(
      (async () => {
        const counts = await bars.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        let outbox = 0;
        for (let p = 0; p < cfg.partitions; p++) outbox += await redis.xlen(keys.outbox(p));
        return Object.values(counts).every((n) => n === 0) && outbox === 0;
      })().catch((err: unknown) => {
        reportRedisError(log, err, 'waiting for the writer failed; trying again');
        return false;
      }),
    );
    if (drained === undefined) return false;
    if (drained) return true;
    await stop.race(sleep(50));
  }
}
