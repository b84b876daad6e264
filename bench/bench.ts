/**
 * npm run bench: replays a large real tape through the full stack (child processes, private
 * redis-server) and prints trades/s end to end, next to the Redis-only ceiling measured in the same
 * run: pipelined XADD of the same trades from one Node process.
 *
 * BENCH_TAPE   tape to replay (default: one day of the four Lean symbols in ../shared/data/real)
 * BENCH_AGGREGATORS   comma list of aggregator counts to run (default 1,2,4)
 * BENCH_RUNS   runs per aggregator count; the median is reported (default 3)
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { isTapeTrade, readTape, type TapeTrade } from '@candlewick/common';
import { loadConfig } from '@candlewick/common';
import { Clock, encodeBarState } from '@candlewick/core';
import { Preaggregator } from '@candlewick/core';
import { BUNDLED_TAPE, PrivateRedis } from '@candlewick/cli';
import { ROOT, benchSettings } from './settings.js';

const settings = benchSettings();
const LEAN_TICKS = join(settings.LEAN_DATA_DIR, 'tick');
const CLI = join(ROOT, 'packages/cli/dist/cli.js');

function defaultTape(): { spec: string; what: string } {
  if (existsSync(LEAN_TICKS)) {
    const files = readdirSync(LEAN_TICKS)
      .filter((f) => f.endsWith('_20131007_trade.zip'))
      .map((f) => join(LEAN_TICKS, f));
    if (files.length) return { spec: files.join(','), what: `Lean US equities ${files.length} symbols, 2013-10-07` };
  }
  process.stdout.write(
    `note: the Lean tick set is absent (looked in ${LEAN_TICKS}); benchmarking the bundled XRP/ETH tape instead (small: figures are start-up dominated)\n`,
  );
  return { spec: BUNDLED_TAPE, what: 'bundled Binance XRP/ETH tape' };
}

/** Redis memory of a retained raw trade and of an open bar (its state and its index entry). */
async function memoryFigures(redis: Redis, trades: TapeTrade[]): Promise<{ perTrade: number; perBar: number; bars: number }> {
  const perTrade = Number(await redis.call('MEMORY', 'USAGE', 'ceiling', 'SAMPLES', '0')) / trades.length;
  const cfg = loadConfig({ MODE: 'replay' });
  const pre = new Preaggregator(new Clock(cfg.tz), cfg.intervals, cfg.baseMs, cfg.graceMs);
  const entries = trades.map((tr, i) => ({ id: `1-${i}`, s: tr.s, p: tr.p, v: tr.v, t: tr.t, w: 0, c: '[]', fields: [] }));
  const bars = pre.run(entries).bars;
  const pipe = redis.pipeline();
  for (const [id, part] of bars) {
    pipe.hset('open', id, encodeBarState(part.state));
    pipe.zadd('open-index', part.end, id);
  }
  await pipe.exec();
  const bytes =
    Number(await redis.call('MEMORY', 'USAGE', 'open', 'SAMPLES', '0')) +
    Number(await redis.call('MEMORY', 'USAGE', 'open-index', 'SAMPLES', '0'));
  return { perTrade, perBar: bytes / bars.size, bars: bars.size };
}

async function redisCeiling(trades: TapeTrade[]): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-redis-'));
  const server = new PrivateRedis(dir, settings.REDIS_SERVER_BIN, false);
  const url = await server.start();
  const redis = new Redis(url);
  try {
    const t0 = performance.now();
    const BATCH = 1000;
    for (let i = 0; i < trades.length; i += BATCH) {
      const pipe = redis.pipeline();
      for (const tr of trades.slice(i, i + BATCH)) {
        pipe.xadd(
          'ceiling',
          '*',
          's',
          tr.s,
          'p',
          tr.p,
          'v',
          String(tr.v),
          't',
          String(tr.t),
          'c',
          JSON.stringify(tr.c),
          'rx',
          String(tr.t),
        );
      }
      await pipe.exec();
    }
    const tps = trades.length / ((performance.now() - t0) / 1000);
    const mem = await memoryFigures(redis, trades);
    process.stdout.write(
      `redis memory: ${mem.perTrade.toFixed(0)} bytes per retained raw trade; ${mem.perBar.toFixed(0)} bytes per open bar (state + index entry, ${mem.bars} bars)\n`,
    );
    return tps;
  } finally {
    redis.disconnect();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function runStack(
  tape: string,
  aggregators: number,
): Promise<{ tradesPerSec: number; wall: number; summary: string; holdMean: number; holdMax: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cw-bench-'));
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const proc = spawn(process.execPath, [CLI, 'stack'], {
      env: {
        ...process.env,
        DATA_DIR: dataDir,
        REPLAY_TAPE: tape,
        AGGREGATORS: String(aggregators),
        EXIT_WHEN_IDLE_MS: '500',
        LOG_LEVEL: 'warn',
        FINNHUB_TOKEN: '',
        MODE: 'replay',
        REDIS_URL: '',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.on('exit', (code) => {
      rmSync(dataDir, { recursive: true, force: true });
      if (code !== 0) return reject(new Error(`stack exited ${code}\n${out}`));
      const m = /throughput\s+(\d+) trades\/s/.exec(out);
      const h = /ingest hold\s+mean ([\d.]+) ms, max (\d+) ms/.exec(out);
      resolve({
        tradesPerSec: Number(m?.[1] ?? 0),
        wall: (performance.now() - t0) / 1000,
        summary: out.slice(out.indexOf('candlewick summary')),
        holdMean: Number(h?.[1] ?? NaN),
        holdMax: Number(h?.[2] ?? NaN),
      });
    });
  });
}

async function main(): Promise<void> {
  const { spec, what } = settings.BENCH_TAPE ? { spec: settings.BENCH_TAPE, what: settings.BENCH_TAPE } : defaultTape();
  const counts = settings.BENCH_AGGREGATORS;
  const trades = readTape(spec).filter(isTapeTrade);
  const cpu = cpus();
  process.stdout.write(`machine: ${cpu.length} x ${cpu[0]?.model ?? 'cpu'}, node ${process.version}\n`);
  process.stdout.write(`tape: ${what}: ${trades.length} trades; intervals 1min,5min,15min,30min,1h\n\n`);
  const ceiling = await redisCeiling(trades);
  process.stdout.write(`redis-only ceiling (pipelined XADD, one Node process): ${Math.round(ceiling)} trades/s\n`);
  const runs = settings.BENCH_RUNS;
  for (const n of counts) {
    const rs = [];
    for (let i = 0; i < runs; i++) {
      const r = await runStack(spec, n);
      rs.push(r);
      if (settings.BENCH_VERBOSE) process.stdout.write(`${r.summary}\n`);
    }
    const tps = rs.map((r) => r.tradesPerSec).sort((a, b) => a - b);
    const wall = rs.map((r) => r.wall).sort((a, b) => a - b);
    const holdMax = Math.max(...rs.map((r) => r.holdMax));
    const holdMean = rs.map((r) => r.holdMean).sort((a, b) => a - b)[rs.length >> 1]!;
    process.stdout.write(
      `end to end, ${n} aggregator${n > 1 ? 's' : ' '}: ${tps[tps.length >> 1]} trades/s median of ${runs} (range ${tps[0]}-${tps[tps.length - 1]}; stack wall time incl. start-up ${wall[wall.length >> 1]!.toFixed(1)} s; ingest hold mean ${holdMean} ms, max ${holdMax} ms)\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
