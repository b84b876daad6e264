import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { connect } from 'node:net';
import { setPriority } from 'node:os';
import { Queue } from 'bullmq';
import {
  disableCrashPoints,
  connectRedis,
  makeKeys,
  sleep,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
} from '@candlewick/common';
import { readTape, tapeSymbols } from '@candlewick/ingestor';
import { BarCloser, barsQueue } from '@candlewick/aggregator';
import { BUNDLED_TAPE, rootLogger } from './roles.js';
import { PrivateRedis, PrivateRedisCluster, freePort } from './redis-server.js';

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
}

/** The counters behind the summary, summed over partitions. */
export interface Counters {
  in: number;
  rejected: number;
  badFrames: number;
  late: number;
  merged: number;
  filtered: number;
  /** CONDITIONS=cta-utp: trades whose conditions let them set nothing */
  excluded: number;
  /** trades carrying condition codes the table does not know */
  unknownConditions: number;
  /** LATE=amend: late trades past LATE_AMEND_WINDOW for every bar they belong to (in no correction) */
  amendTooOld: number;
  written: Record<string, number>;
  /** the ingestor's hold of trades outside Redis (receipt to Redis's answer), as it last reported */
  holdMaxMs: number;
  holdMeanMs: number;
  firstRx: number;
  lastRx: number;
  feedUp: number;
  lastMerge: number;
}

/** One run's summary: the counters' differences, plus timing. */
export type StackSummary = Pick<Counters, 'rejected' | 'badFrames' | 'late' | 'merged' | 'filtered' | 'excluded' | 'unknownConditions' | 'amendTooOld' | 'written' | 'holdMaxMs' | 'holdMeanMs'> & {
  tradesIn: number;
  wallMs: number;
  tradesPerSec: number;
};

export async function readCounters(redis: RedisClient, cfg: Config, keys: Keys): Promise<Counters> {
  const stats = await redis.hgetall(keys.stats());
  const c: Counters = {
    in: 0,
    rejected: Number(stats.rejected ?? 0),
    badFrames: Number(stats.badFrames ?? 0),
    late: 0,
    merged: 0,
    filtered: 0,
    excluded: 0,
    unknownConditions: 0,
    amendTooOld: 0,
    written: {},
    holdMaxMs: Number(stats.ingestHoldMaxMs ?? 0),
    holdMeanMs: Number(stats.ingestHoldMeanMs ?? 0),
    firstRx: Number(stats.firstRx ?? 0),
    lastRx: Number(stats.lastRx ?? 0),
    feedUp: Number(stats.feedUp ?? 0),
    lastMerge: 0,
  };
  for (let p = 0; p < cfg.partitions; p++) {
    c.in += Number((await redis.hget(keys.clock(p), 'in')) ?? 0);
    const ps = await redis.hgetall(keys.partitionStats(p));
    c.late += Number(ps.late ?? 0);
    c.merged += Number(ps.merged ?? 0);
    c.filtered += Number(ps.filtered ?? 0);
    c.excluded += Number(ps.excluded ?? 0);
    c.unknownConditions += Number(ps.unknownConditions ?? 0);
    c.amendTooOld += Number(ps.amendTooOld ?? 0);
    c.lastMerge = Math.max(c.lastMerge, Number(ps.lastMergeMs ?? 0));
  }
  for (const iv of cfg.intervals) c.written[iv.name] = Number(stats[`written:${iv.name}`] ?? 0);
  return c;
}

/**
 * This run's summary: counters now minus counters at start (Redis keeps them across runs).
 * Throughput counts the time trades spent in the pipeline: from the first trade received to the
 * last batch merged, plus the final close-and-write; the idle wait before the exit is not counted.
 */
export function summarize(before: Counters, after: Counters, startedAt: number, endedAt: number, finishMs: number): StackSummary {
  const tradesIn = after.in - before.in;
  const firstRx = after.firstRx >= startedAt ? after.firstRx : startedAt;
  const lastMerge = after.lastMerge > before.lastMerge ? after.lastMerge : endedAt;
  const span = Math.max(1, lastMerge - firstRx + finishMs);
  const written: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.written)) written[k] = v - (before.written[k] ?? 0);
  return {
    tradesIn,
    rejected: after.rejected - before.rejected,
    badFrames: after.badFrames - before.badFrames,
    late: after.late - before.late,
    merged: after.merged - before.merged,
    filtered: after.filtered - before.filtered,
    excluded: after.excluded - before.excluded,
    unknownConditions: after.unknownConditions - before.unknownConditions,
    amendTooOld: after.amendTooOld - before.amendTooOld,
    written,
    holdMaxMs: after.holdMaxMs,
    holdMeanMs: after.holdMeanMs,
    wallMs: endedAt - startedAt,
    tradesPerSec: Math.round((tradesIn / span) * 1000),
  };
}

function lateNote(s: StackSummary): string {
  if (s.late === 0) return '';
  const notes = ['kept in trades:late'];
  if (s.amendTooOld) notes.push(`${s.amendTooOld} past LATE_AMEND_WINDOW, in no correction`);
  if (s.late === s.tradesIn) notes.push('a replay of an already-seen day is all late: start from an empty DATA_DIR');
  return ` (${notes.join('; ')})`;
}

export function formatSummary(s: StackSummary, dataDir: string): string {
  const bars = Object.entries(s.written).map(([k, v]) => `${k}=${v}`).join(' ');
  const left: string[] = [];
  if (s.filtered) left.push(`${s.filtered} outside SESSIONS, left out`);
  if (s.excluded) left.push(`${s.excluded} whose CONDITIONS set nothing`);
  return [
    'candlewick summary',
    `  trades in        ${s.tradesIn}`,
    `  rejected         ${s.rejected} (plus ${s.badFrames} unreadable frames)`,
    `  late             ${s.late}${lateNote(s)}`,
    `  merged           ${s.merged - s.filtered - s.excluded}${left.length ? ` (plus ${left.join(', ')})` : ''}`,
    ...(s.unknownConditions ? [`  conditions       ${s.unknownConditions} trades with codes not in the table, counted as regular (see CONDITION_CODES)`] : []),
    `  bars written     ${bars}`,
    `  ingest hold      mean ${s.holdMeanMs} ms, max ${s.holdMaxMs} ms (a trade's time outside Redis: receipt to Redis's answer)`,
    `  wall time        ${(s.wallMs / 1000).toFixed(2)} s`,
    `  throughput       ${s.tradesPerSec} trades/s (first trade received to last merge, plus the final close and write)`,
    `  CSV              ${join(dataDir, 'raw')}`,
  ].join('\n');
}

/**
 * `candlewick stack`: every role in one terminal. Uses REDIS_URL or starts a private redis-server;
 * with no FINNHUB_TOKEN it also starts the replay server on the bundled tape (or REPLAY_TAPE).
 * With EXIT_WHEN_IDLE_MS it ends by itself once the feed has been quiet that long and every stage
 * has drained: it closes the remaining bars, waits for the writer, prints a summary and exits 0.
 */
export async function runStack(cfg: Config, env: NodeJS.ProcessEnv): Promise<number> {
  disableCrashPoints();
  const startedAt = Date.now();
  const color = Boolean(process.stdout.isTTY);
  const log = rootLogger(cfg, 'stack', (line) => process.stdout.write(`${formatLogLine('stack', line.trimEnd(), color)}\n`));
  const keys = makeKeys(cfg.keyPrefix);
  const childEnv: NodeJS.ProcessEnv = { ...env, LOG_PRETTY: 'false', MODE: cfg.mode };

  let privateRedis: PrivateRedis | PrivateRedisCluster | undefined;
  let redisUrl = cfg.redisUrl;
  if (!redisUrl && cfg.redisCluster) {
    const dir = join(cfg.dataDir, 'redis-cluster');
    privateRedis = new PrivateRedisCluster(dir, cfg.redisServerBin);
    redisUrl = await privateRedis.start();
    log.info({ redis: redisUrl, dir }, 'started a private 3-master redis cluster (AOF on)');
  } else if (!redisUrl) {
    privateRedis = new PrivateRedis(join(cfg.dataDir, 'redis'), cfg.redisServerBin);
    redisUrl = await privateRedis.start();
    log.info({ redis: redisUrl, dir: join(cfg.dataDir, 'redis') }, 'started a private redis-server (AOF on)');
  }
  childEnv.REDIS_URL = redisUrl;

  if (cfg.mode === 'replay') {
    const tapePath = cfg.replayTape ?? BUNDLED_TAPE;
    childEnv.REPLAY_TAPE = tapePath;
    if (cfg.symbols.length === 0) childEnv.SYMBOLS = tapeSymbols(readTape(tapePath)).join(',');
    const port = cfg.replayPort || (await freePort());
    childEnv.REPLAY_PORT = String(port);
    childEnv.FINNHUB_WS_URL = `ws://127.0.0.1:${port}`;
    log.info({ tape: tapePath, symbols: childEnv.SYMBOLS ?? cfg.symbols.join(',') }, 'no FINNHUB_TOKEN: replaying a recorded tape');
  }

  const children: Child[] = [];
  let stopping = false;
  let failed: string | undefined;
  // METRICS_PORT set: each role serves /metrics and /healthz on its own port, from METRICS_PORT up
  const metricsPorts = new Map<string, number>();
  const spawnChild = (role: string, name: string, existing?: Child): Child => {
    const own: NodeJS.ProcessEnv = { LOG_NAME: name.replace(/\./g, '-') };
    if (cfg.metricsPort > 0) {
      if (!metricsPorts.has(name)) metricsPorts.set(name, cfg.metricsPort + metricsPorts.size);
      own.METRICS_PORT = String(metricsPorts.get(name));
    }
    const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]!, role], {
      env: { ...childEnv, ...own },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let markReady: () => void = () => undefined;
    const ready = new Promise<void>((r) => (markReady = r));
    const child = existing ?? { role, name, proc, restarts: [], ready };
    child.proc = proc;
    child.ready = ready;
    // On one machine Redis is the critical path: the Node roles yield the CPU to it.
    if (cfg.stackNice > 0 && proc.pid) setPriority(proc.pid, cfg.stackNice);
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => process.stdout.write(`${formatLogLine(name, line, color)}\n`));
    }
    proc.on('message', (msg: { ready?: boolean }) => {
      if (msg?.ready) markReady();
    });
    proc.on('exit', (code, signal) => {
      if (stopping) return;
      const now = Date.now();
      child.restarts = child.restarts.filter((t) => now - t < 60_000);
      if (code === 2 || child.restarts.length >= 5) {
        failed = `${name} exited (code ${code ?? signal}) and is not restarted`;
        log.error(failed);
        return;
      }
      child.restarts.push(now);
      log.warn({ role: name, code, signal }, 'role exited unexpectedly; restarting it');
      setTimeout(() => !stopping && spawnChild(role, name, child), 500);
    });
    return child;
  };

  const redis = connectRedis(redisUrl, log.child({ component: 'redis' }), { cluster: cfg.redisCluster });
  const baseline = await readCounters(redis, cfg, keys);
  const bars = barsQueue(redis, keys);
  const closer = new BarCloser(redis, bars, cfg, keys, log.child({ component: 'final-close' }));

  const shutdown = async () => {
    stopping = true;
    // Downstream last: the writer finishes its job, the aggregator its batch.
    const order = ['ingest', 'replay-server', 'backfill', 'aggregate', 'close', 'write'];
    for (const role of order) {
      const cs = children.filter((c) => c.role === role && c.proc.exitCode === null);
      await Promise.all(
        cs.map(
          (c) =>
            new Promise<void>((res) => {
              c.proc.once('exit', () => res());
              c.proc.kill('SIGTERM');
              setTimeout(() => (c.proc.kill('SIGKILL'), res()), 15_000).unref();
            }),
        ),
      );
    }
    await bars.close().catch(() => undefined);
    await redis.quit().catch(() => undefined);
    await privateRedis?.stop();
  };

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(1);
    interrupted = true;
    log.info('stopping every role');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  if (cfg.mode === 'replay') {
    children.push(spawnChild('replay-server', 'replay-server'));
    await waitForPort(Number(childEnv.REPLAY_PORT), 30_000);
  }
  children.push(spawnChild('write', 'write'));
  children.push(spawnChild('close', 'close'));
  for (let i = 0; i < cfg.aggregators; i++) children.push(spawnChild('aggregate', cfg.aggregators > 1 ? `aggregate.${i + 1}` : 'aggregate'));
  if (cfg.backfill) children.push(spawnChild('backfill', 'backfill'));
  // The feed starts last, once every downstream role is up, so no stage starts behind.
  await Promise.race([Promise.all(children.map((c) => c.ready)), sleep(60_000)]);
  children.push(spawnChild('ingest', 'ingest'));

  let code = 0;
  for (;;) {
    await sleep(200);
    if (interrupted) break;
    if (failed) {
      code = 1;
      break;
    }
    if (cfg.exitWhenIdleMs > 0 && (await idleAndDrained(redis, cfg, keys, startedAt))) {
      log.info({ idleMs: cfg.exitWhenIdleMs }, 'feed idle and every stage drained; closing the remaining bars');
      const t0 = Date.now();
      await finish(redis, bars, closer, cfg, keys);
      const summary = summarize(baseline, await readCounters(redis, cfg, keys), startedAt, Date.now(), Date.now() - t0);
      await shutdown();
      process.stdout.write(`${formatSummary(summary, cfg.dataDir)}\n`);
      return 0;
    }
  }
  await shutdown();
  return code;
}

function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => (sock.destroy(), resolve()));
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > until) reject(new Error(`replay server did not listen on port ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

async function idleAndDrained(redis: RedisClient, cfg: Config, keys: Keys, startedAt: number): Promise<boolean> {
  const c = await readCounters(redis, cfg, keys);
  // The idle clock starts when this run's feed is first up, so a slow start is not mistaken for the end.
  if (c.feedUp < startedAt) return false;
  if (Date.now() - Math.max(c.lastRx, c.feedUp) < cfg.exitWhenIdleMs) return false;
  if (c.merged + c.late < c.in) return false;
  // a symbol still waiting for its backfill is not done
  for (let p = 0; p < cfg.partitions; p++) if ((await redis.hlen(keys.holds(p))) > 0) return false;
  return true;
}

/** Closes every remaining bar once everything ingested is merged, and waits for the writer. */
async function finish(redis: RedisClient, bars: Queue, closer: BarCloser, cfg: Config, keys: Keys): Promise<void> {
  for (;;) {
    const r = await closer.tick(true);
    if (r.merged) break;
    await sleep(50);
  }
  for (;;) {
    const counts = await bars.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    let outbox = 0;
    for (let p = 0; p < cfg.partitions; p++) outbox += await redis.xlen(keys.outbox(p));
    if (Object.values(counts).every((n) => n === 0) && outbox === 0) return;
    await sleep(50);
  }
}

