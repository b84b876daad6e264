/**
 * npm run bench:soak: does memory stay flat at a steady rate of symbols? `candlewick stack` runs live
 * (CLOCK=wall, GRACE_MS=2000, two aggregators, the default intervals, its own Redis with AOF on)
 * against a feed this script serves on a local WebSocket in Finnhub's protocol: SOAK_SYMBOLS
 * symbols, each trading every 6 s at its own phase and five of them 75 times a second besides (the
 * wide bench's tape, generated as it goes, stamped now) for SOAK_MINUTES (default 120).
 *
 * Every minute it samples each process's RSS (VmRSS) and Redis's used_memory; at the end it prints,
 * per process, the slope of a least-squares line through the samples of the second half of the run
 * (the first half is warm-up: heaps reaching their size, the retained streams and the writer's
 * completed jobs — kept an hour — filling up) in MB per hour, and a verdict: flat when no slope
 * rises by SOAK_FLAT_MB_PER_HOUR (default 10) or more, else growing. The raw trades and bars:{interval} are
 * kept 5 and 15 minutes (TRADES_RETENTION, BARS_RETENTION) so Redis reaches its steady size within
 * the warm-up rather than growing for the week BARS_RETENTION keeps by default. Also printed: the
 * bars written and the close lag of the bars still on bars:{interval} (the last 15 minutes).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { WebSocketServer, type WebSocket } from 'ws';
import { decodeBarEntry, makeKeys } from '@candlewick/common';
import { Clock, parseInterval } from '@candlewick/core';
import { PrivateRedis } from '@candlewick/cli';
import { ROOT, benchSettings } from './settings.js';
import { DEFAULT_WIDE_INTERVALS, percentile, procName } from './wide.js';
import { WIDE_DEFAULTS, wideSymbol } from './wide-tape.js';
import { descendants, procMemory } from '../test/procs.js';

const settings = benchSettings();
const minutes = settings.SOAK_MINUTES;
const symbols = settings.SOAK_SYMBOLS;
const flatMbPerHour = settings.SOAK_FLAT_MB_PER_HOUR;
const out = (line = '') => process.stdout.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const mb = (b: number) => b / 2 ** 20;

/** The feed: Finnhub's trade protocol, every symbol once per lightEveryMs at its phase, the heavy ones heavyPerSec. */
function startFeed(names: readonly string[]): Promise<{ port: number; sent: () => number; close: () => Promise<void> }> {
  const { lightEveryMs, heavy, heavyPerSec } = WIDE_DEFAULTS;
  const tickMs = 100;
  const slots = lightEveryMs / tickMs;
  let seed = 7;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const bySlot: number[][] = Array.from({ length: slots }, () => []);
  names.forEach((_, i) => bySlot[Math.floor(rnd() * slots)]!.push(i));
  const cents = names.map(() => 1000 + Math.floor(rnd() * 50_000));
  const heavyPerTick = (heavyPerSec * tickMs) / 1000;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  const clients = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    clients.add(ws);
    ws.on('close', () => clients.delete(ws));
    ws.on('error', () => clients.delete(ws));
  });
  let tick = 0;
  let sent = 0;
  const trade = (i: number, t: number) => {
    cents[i] = Math.max(1, cents[i]! + Math.floor(rnd() * 21) - 10);
    return { s: names[i]!, p: cents[i]! / 100, v: 1 + Math.floor(rnd() * 500), t, c: ['1'] };
  };
  const timer = setInterval(() => {
    const t = Date.now();
    const data = bySlot[tick++ % slots]!.map((i) => trade(i, t));
    for (let h = 0; h < Math.min(heavy, names.length); h++) for (let k = 0; k < heavyPerTick; k++) data.push(trade(h, t));
    if (clients.size === 0 || data.length === 0) return;
    const frame = JSON.stringify({ type: 'trade', data });
    for (const ws of clients) ws.send(frame);
    sent += data.length;
  }, tickMs);
  return new Promise((resolve) =>
    wss.on('listening', () =>
      resolve({
        port: (wss.address() as { port: number }).port,
        sent: () => sent,
        close: async () => {
          clearInterval(timer);
          for (const ws of clients) ws.terminate();
          await new Promise((r) => wss.close(r));
        },
      }),
    ),
  );
}

/** Least-squares slope of y (bytes) over x (minutes), in MB per hour. */
function slopeMbPerHour(points: readonly [number, number][]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return mb(num / den) * 60;
}

const names = Array.from({ length: symbols }, (_, i) => wideSymbol(i));
const dir = mkdtempSync(join(tmpdir(), 'cw-soak-'));
const server = new PrivateRedis(join(dir, 'redis'), settings.REDIS_SERVER_BIN, true);
const url = await server.start();
const redis = new Redis(url);
const feed = await startFeed(names);
const prefix = 'soak';
const keys = makeKeys(prefix);
out(`Soak: ${symbols.toLocaleString('en-US')} symbols live for ${minutes} min (CLOCK=wall, GRACE_MS=2000, two aggregators)`);
const proc = spawn(process.execPath, [join(ROOT, 'packages/cli/dist/cli.js'), 'stack'], {
  env: {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    MODE: 'live',
    // the local feed takes any token; nothing real is sent anywhere
    FINNHUB_TOKEN: 'soak',
    FINNHUB_WS_URL: `ws://127.0.0.1:${feed.port}`,
    SYMBOLS: names.join(','),
    BACKFILL: 'off',
    REDIS_URL: url,
    KEY_PREFIX: prefix,
    DATA_DIR: join(dir, 'data'),
    CLOCK: 'wall',
    GRACE_MS: '2000',
    AGGREGATORS: '2',
    INTERVALS: DEFAULT_WIDE_INTERVALS.join(','),
    TRADES_RETENTION: '5min',
    BARS_RETENTION: '15min',
    LOG_LEVEL: 'warn',
    HTTP_PORT: '0',
  },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let tail = '';
const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-20_000));
proc.stdout.on('data', keep);
proc.stderr.on('data', keep);
const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
let gone = false;
void exited.then(() => (gone = true));

const samples = new Map<string, [number, number][]>();
const sample = async (minute: number) => {
  const seen = new Map<string, number>();
  const row: string[] = [];
  for (const pid of [proc.pid!, ...descendants(proc.pid!)]) {
    let name = procName(pid);
    if (name === '' || name === 'redis') continue;
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    if (name === 'aggregate' || n > 1) name = `${name}.${n}`;
    const rss = procMemory(pid, 'VmRSS');
    if (!samples.has(name)) samples.set(name, []);
    samples.get(name)!.push([minute, rss]);
    row.push(`${name} ${mb(rss).toFixed(0)}`);
  }
  const used = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1] ?? 0);
  if (!samples.has('redis used_memory')) samples.set('redis used_memory', []);
  samples.get('redis used_memory')!.push([minute, used]);
  out(
    `  min ${String(minute).padStart(3)}: RSS MB ${row.join(', ')}; redis ${mb(used).toFixed(1)}; trades sent ${feed.sent().toLocaleString('en-US')}`,
  );
};

try {
  const started = Date.now();
  for (let m = 1; m <= minutes; m++) {
    await sleep(started + m * 60_000 - Date.now());
    if (gone) throw new Error(`the stack exited\n${tail}`);
    await sample(m);
  }
  // the bars still on bars:{interval} (BARS_RETENTION): their close lag
  const clock = new Clock('America/New_York');
  const lags: number[] = [];
  const written: string[] = [];
  for (const iv of DEFAULT_WIDE_INTERVALS) {
    const ms = parseInterval(iv).ms;
    written.push(`${iv}=${Number(await redis.hget(keys.stats(), `written:${iv}`)).toLocaleString('en-US')}`);
    for (let after = '-'; ;) {
      const page = (await redis.xrange(keys.bars(iv), after, '+', 'COUNT', 5000)) as [string, string[]][];
      for (const [id, f] of page) lags.push(Number(id.split('-')[0]) - clock.window(decodeBarEntry(id, iv, f).start, ms, 0)[1]);
      if (page.length < 5000) break;
      after = `(${page[page.length - 1]![0]}`;
    }
  }
  lags.sort((a, b) => a - b);
  out(`  bars written: ${written.join(' ')}`);
  out(
    `  close lag of the last 15 minutes' ${lags.length.toLocaleString('en-US')} bars: p50 ${percentile(lags, 0.5)} ms, p99 ${percentile(lags, 0.99)} ms, worst ${lags[lags.length - 1]} ms`,
  );
  const from = Math.max(1, Math.floor(minutes / 2));
  out(`  slope over minutes ${from}-${minutes} (least squares; flat below ${flatMbPerHour} MB/hour):`);
  let growing = 0;
  for (const [name, points] of samples) {
    const late = points.filter(([m]) => m >= from);
    const slope = slopeMbPerHour(late);
    // falling memory (a heap given back after its warm-up) is no leak: only a rise counts
    const flat = slope < flatMbPerHour;
    if (!flat) growing++;
    out(
      `    ${name.padEnd(18)} ${mb(late[0]![1]).toFixed(1).padStart(7)} -> ${mb(late[late.length - 1]![1])
        .toFixed(1)
        .padStart(7)} MB, ${slope.toFixed(1).padStart(6)} MB/hour: ${flat ? (slope <= -flatMbPerHour ? 'falling' : 'flat') : 'GROWING'}`,
    );
  }
  out(`  verdict: ${growing === 0 ? 'flat' : `growing (${growing} of ${samples.size} above ${flatMbPerHour} MB/hour)`}`);
  if (growing) process.exitCode = 1;
} finally {
  proc.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(60_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') proc.kill('SIGKILL');
  else if (code !== 0) out(`  the stack exited ${code}\n${tail.slice(-3000)}`);
  await feed.close();
  redis.disconnect();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
