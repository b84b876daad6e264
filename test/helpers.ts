import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { expect, inject } from 'vitest';
import { connectRedis, loadConfig, makeKeys, type Keys, type RedisClient } from '@candlewick/common';
import { type TapeItem } from '@candlewick/common';
import { decodeTradeEntries, type TradeEntry } from '@candlewick/core';
import { ReplayServer } from '@candlewick/ingestor';
import { csvPath } from '@candlewick/common';
import { freePort } from '@candlewick/cli';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { DateTime } from 'luxon';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = join(ROOT, 'packages/cli/dist/cli.js');
export const BUNDLED_TAPE = join(ROOT, 'tapes/binance-xrpeth-aggtrades-2019-10-11.json.gz');
export const BUNDLED_KLINES = join(ROOT, 'tapes/binance-xrpeth-klines-1m-2019-10-11.json.gz');
/** One bundled Lean day: AIG's consolidated prints of 2013-10-10 (54,318 trades). */
export const LEAN_AIG_TAPE = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');

/** Every CSV under DATA_DIR/raw, "interval/file" -> contents. */
export function csvOutputs(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const raw = join(dataDir, 'raw');
  for (const iv of readdirSync(raw))
    for (const f of readdirSync(join(raw, iv))) out.set(`${iv}/${f}`, readFileSync(join(raw, iv, f), 'utf8'));
  return out;
}

export function redisUrl(): string {
  return inject('redisUrl');
}

let seq = 0;
/** A key prefix no other test uses, so test files run in parallel on one Redis. */
export function uniquePrefix(name: string): string {
  return `t-${name}-${process.pid}-${Date.now().toString(36)}-${seq++}`;
}

export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `cw-${name}-`));
}

/** Every file under `dir`, its text (to look for what must never be written, e.g. a key). */
export function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => statSync(f).isFile())
    .map((f) => readFileSync(f, 'utf8'));
}

/** Every trade of a raw stream, in stream order, decoded as the tap decodes them. */
export async function rawTrades(redis: RedisClient, stream: string): Promise<TradeEntry[]> {
  const entries = (await redis.xrange(stream, '-', '+')) as [string, string[]][];
  return entries.flatMap(([id, fields]) => decodeTradeEntries(id, fields));
}

/** A client of the test Redis (a single server: the cluster tests start their own). */
export function testRedis(): Redis {
  return connectRedis(redisUrl()) as Redis;
}

/** Trades appended to the raw streams so far (the addTrades count, over `partitions`). */
export async function ingested(redis: RedisClient, keys: Keys, partitions = 1): Promise<number> {
  let n = 0;
  for (let p = 0; p < partitions; p++) n += Number((await redis.hget(keys.clock(p), 'in')) ?? 0);
  return n;
}

export function testKeys(name: string): Keys {
  return makeKeys(uniquePrefix(name));
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A running CLI child process: its output so far, its exit, and a SIGTERM that waits for it. */
export interface CliProcess {
  readonly pid: number;
  output(): { stdout: string; stderr: string };
  readonly exited: Promise<number | null>;
  /** SIGTERM, then its exit code, output and how long it took to exit */
  stop(): Promise<CliResult & { ms: number }>;
  kill(signal: NodeJS.Signals): void;
}

/** Starts the built CLI as a real child process. */
export function startCli(args: string[], env: Record<string, string>): CliProcess {
  const proc = spawn(process.execPath, [CLI, ...args], {
    // no chart page unless a test asks for one (HTTP_PORT): parallel stacks would want the same port
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    pid: proc.pid!,
    output: () => ({ stdout, stderr }),
    exited,
    kill: (signal) => proc.kill(signal),
    stop: async () => {
      const started = Date.now();
      proc.kill('SIGTERM');
      const code = await exited;
      return { code, stdout, stderr, ms: Date.now() - started };
    },
  };
}

/** Runs the built CLI to its end; with `stopAfterMs`, sends it SIGTERM then. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 120_000, stopAfterMs?: number): Promise<CliResult> {
  return finishCli(startCli(args, env), args, timeoutMs, stopAfterMs);
}

/**
 * Waits for a started CLI's end. Past `timeoutMs` it is stopped as a user would stop a stack that
 * hangs (a signal, then a second one: the stack kills its roles, which run in process groups of
 * their own and would outlive a SIGKILL of the stack), then killed, and the wait fails.
 */
export async function finishCli(cli: CliProcess, args: string[], timeoutMs = 120_000, stopAfterMs?: number): Promise<CliResult> {
  const stopTimer = stopAfterMs !== undefined ? setTimeout(() => cli.kill('SIGTERM'), stopAfterMs) : undefined;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void stopForGood(cli).then(() => {
        const { stdout, stderr } = cli.output();
        reject(new Error(`candlewick ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
      });
    }, timeoutMs);
  });
  try {
    const code = await Promise.race([cli.exited, timedOut]);
    return { code, ...cli.output() };
  } finally {
    clearTimeout(timer);
    clearTimeout(stopTimer);
  }
}

/** A CLI process stopped however it has to be: SIGTERM, a second SIGTERM, then SIGKILL; resolves once it is gone. */
export async function stopForGood(cli: CliProcess): Promise<void> {
  const gone = cli.exited.then(() => true);
  const within = (ms: number) => Promise.race([gone, new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  cli.kill('SIGTERM');
  if (await within(600)) return;
  cli.kill('SIGTERM');
  if (await within(10_000)) return;
  cli.kill('SIGKILL');
  await gone;
}

/** Binance's own 1-minute klines: [open time ms, open, high, low, close, base volume]. */
export type Kline = [number, number, number, number, number, number];

export function loadKlines(): Kline[] {
  return JSON.parse(gunzipSync(readFileSync(BUNDLED_KLINES)).toString('utf8')) as Kline[];
}

export interface CsvBar {
  timestamp: string;
  start: number;
  open: number;
  high: number;
  low: number;
  close: number;
  vwap: number;
  volume: number;
  n: number;
}

export function readCsv(path: string): { header: string; rows: CsvBar[] } {
  const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
  const header = lines.shift()!;
  const rows = lines.map((l) => {
    const f = l.split(',');
    return {
      timestamp: f[0]!,
      // a daily bar is labelled with its date in BAR_TZ (New York here)
      start: /^\d{4}-\d{2}-\d{2}$/.test(f[0]!) ? DateTime.fromISO(f[0]!, { zone: 'America/New_York' }).toMillis() : Date.parse(f[0]!),
      open: Number(f[1]),
      high: Number(f[2]),
      low: Number(f[3]),
      close: Number(f[4]),
      vwap: Number(f[5]),
      volume: Number(f[6]),
      n: Number(f[7]),
    };
  });
  return { header, rows };
}

/** Rolls 1-minute klines up into bars of `minutes` minutes (UTC-aligned; New York offsets are whole hours). */
export function rollUpKlines(klines: Kline[], minutes: number): Map<number, Kline> {
  const ms = minutes * 60_000;
  const out = new Map<number, Kline>();
  for (const k of klines) {
    if (k[5] === 0) continue; // Binance's flat zero-volume bars are not trades
    const start = Math.floor(k[0] / ms) * ms;
    const cur = out.get(start);
    if (!cur) out.set(start, [start, k[1], k[2], k[3], k[4], k[5]]);
    else {
      cur[2] = Math.max(cur[2], k[2]);
      cur[3] = Math.min(cur[3], k[3]);
      cur[4] = k[4];
      cur[5] += k[5];
    }
  }
  return out;
}

/**
 * Every interval a stack writes by default (INTERVALS unset), [name, minutes]: Binance's klines are
 * 1-minute bars, so each is checked against them rolled up to its length.
 */
export const DEFAULT_INTERVALS: readonly (readonly [string, number])[] = loadConfig({}).intervals.map(
  (i) => [i.name, i.ms / 60_000] as const,
);

/**
 * The bundled tape's XRP/ETH files in `dataDir` against Binance's klines at each of `intervals`
 * ([name, minutes]; every default interval unless told): mismatched bars, a trade count other than
 * the tape's 12,477, a row twice. Empty = exact.
 */
export function klineProblems(dataDir: string, intervals: readonly (readonly [string, number])[] = DEFAULT_INTERVALS): string[] {
  const klines = loadKlines();
  const problems: string[] = [];
  for (const [interval, minutes] of intervals) {
    const { rows } = readCsv(csvPath(dataDir, interval, 'BINANCE:XRPETH'));
    problems.push(...compareBars(rows, rollUpKlines(klines, minutes)).map((p) => `${interval}: ${p}`));
    const n = rows.reduce((sum, r) => sum + r.n, 0);
    if (n !== 12477) problems.push(`${interval}: ${n} trades, not 12477`);
    if (new Set(rows.map((r) => r.start)).size !== rows.length) problems.push(`${interval}: a row written twice`);
  }
  return problems;
}

/** Compares a CSV file with oracle bars; returns the mismatches (empty = exact). */
export function compareBars(rows: CsvBar[], oracle: Map<number, Kline>): string[] {
  const problems: string[] = [];
  const seen = new Set<number>();
  for (const r of rows) {
    seen.add(r.start);
    const k = oracle.get(r.start);
    if (!k) {
      problems.push(`${r.timestamp}: bar not in the oracle`);
      continue;
    }
    const [, o, h, l, c, v] = k;
    if (r.open !== o || r.high !== h || r.low !== l || r.close !== c || Math.abs(r.volume - v) > 1e-9 * Math.max(1, v)) {
      problems.push(`${r.timestamp}: got ${r.open}/${r.high}/${r.low}/${r.close}/${r.volume}, oracle ${o}/${h}/${l}/${c}/${v}`);
    }
  }
  for (const start of oracle.keys()) if (!seen.has(start)) problems.push(`${new Date(start).toISOString()}: missing bar`);
  return problems;
}

/**
 * A live stack (MODE=live, event clock) against a replay server that serves `before`, goes away
 * once all of it is ingested, and comes back 700 ms later serving `after`. Resolves when the stack
 * exits (EXIT_WHEN_IDLE_MS), with its output.
 */
export async function runThroughOutage(
  before: readonly TapeItem[],
  after: readonly TapeItem[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  const quiet = pino({ level: 'silent' });
  const port = await freePort();
  const first = new ReplayServer(before, { port, speed: 0, frameTrades: 200, settleMs: 10 }, quiet);
  await first.start();
  const stack = spawn(process.execPath, [CLI, 'stack'], {
    env: {
      PATH: process.env.PATH ?? '',
      MODE: 'live',
      FINNHUB_WS_URL: `ws://127.0.0.1:${port}`,
      CLOCK: 'event',
      EXIT_WHEN_IDLE_MS: '2500',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  stack.stdout.on('data', (d: Buffer) => (out += d.toString()));
  stack.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => stack.on('exit', (c) => r(c)));
  const redis = testRedis();
  try {
    const keys = makeKeys(env.KEY_PREFIX!);
    await waitFor(async () => (await ingested(redis, keys)) === before.length, 60_000, 'the first part ingested');
  } finally {
    await redis.quit();
  }
  await first.stop(); // the feed goes away: sockets cut
  await new Promise((r) => setTimeout(r, 700));
  const second = new ReplayServer(after, { port, speed: 0, frameTrades: 200, settleMs: 10 }, quiet);
  await second.start();
  const code = await exited;
  await second.stop();
  return { code, out };
}

/** Whether a process is alive (signal 0). */
export { alive, childPids, cmdline, descendants } from './procs.js';

/**
 * A test that needs something a machine may not give (root, a Docker engine, a program): reported
 * as skipped with the reason (`ctx.skip` ends the test there); where CANDLEWICK_CI=1 (our CI, which
 * provides all of it) a missing need fails the test instead.
 */
export function needs(ctx: { skip: (note?: string) => never }, ok: boolean, reason: string): void {
  if (ok) return;
  if (process.env.CANDLEWICK_CI === '1') throw new Error(`this test cannot run here (${reason}), and CI must run it`);
  ctx.skip(`cannot run here: ${reason} (CANDLEWICK_CI=1 makes this a failure)`);
}

/**
 * `stack` replaying its tape through FEED's protocol with its ingestor killed -9 once, right after
 * its 5th append (crash point `ingest:appended`), on a tape paced so the kill lands mid-tape: the
 * restarted ingestor's new connection gets the tape from the start. Checks that it ran to exit 0,
 * the kill happened once and the trades sent again were dropped as duplicates; the run and its folder.
 */
export async function stackWithIngestKilled(feed: string, env: Record<string, string> = {}): Promise<{ res: CliResult; dir: string }> {
  const dir = tempDir(`${feed}-kill`);
  const once = tempDir(`${feed}-kill-once`);
  const res = await runCli(
    ['stack'],
    {
      FEED: feed,
      MODE: 'replay',
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix(`${feed}-kill`),
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '1500',
      AGGREGATORS: '2',
      INGEST_BATCH: '200',
      REPLAY_SPEED: '30000',
      REPLAY_SHIFT: 'false',
      CANDLEWICK_CRASH: 'ingest:appended@5',
      CANDLEWICK_CRASH_ONCE_DIR: once,
      ...env,
    },
    180_000,
  );
  expect(res.code, res.stdout.slice(-3000)).toBe(0);
  expect(readdirSync(once)).toEqual(['ingest_appended']);
  expect(res.stdout).toMatch(/ingest.*SIGKILL/);
  expect(res.stdout).toMatch(/duplicates\s+[1-9]/);
  return { res, dir };
}
