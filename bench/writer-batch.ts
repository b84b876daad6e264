/**
 * The writer's cost per bar at a boundary, alone: WriterService.processBatch over jobs of 1,000
 * bars of distinct files (SYMBOLS symbols in each of the five default intervals: 40,000 bars at
 * 8,000, as the boundary where every interval closes hands them over), against a private Redis.
 * Prints µs per bar of wall time and of the writer's own CPU (its threads included), each round and
 * the median of the rounds after the first two (the first creates the files), and its ratio to a
 * ceiling measured in the same run: a row appended to each of the same files alone.
 *
 *   tsx bench/writer-batch.ts [SYMBOLS=8000] [ROUNDS=8]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { pino } from 'pino';
import { appendText, connectRedis, loadConfig, makeKeys, parseBarsJob } from '@candlewick/common';
import { barFromTrade, barId, encodeBarState, orderKey } from '@candlewick/core';
import { WRITER_JOBS, WriterService } from '@candlewick/writer';
import { freePort } from '@candlewick/cli';

const symbols = Number(process.argv[2] ?? 8000);
const rounds = Number(process.argv[3] ?? 8);
const intervals = ['1min', '5min', '15min', '30min', '1h'];
const walls: number[] = [];
const cpus: number[] = [];
const gcs: number[] = [];
// the writer's thread's garbage-collection pauses, by when they started (the observer is told a little later)
const gcPauses: { at: number; ms: number }[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcPauses.push({ at: e.startTime, ms: e.duration });
}).observe({ entryTypes: ['gc'] });
const port = await freePort();
const server = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
const redis = connectRedis(`redis://127.0.0.1:${port}`);
// (the client connects again until the server listens)
await redis.ping();
const dir = mkdtempSync(join(tmpdir(), 'cw-writer-batch-'));
const keys = makeKeys('wb');
const cfg = loadConfig({ DATA_DIR: dir, KEY_PREFIX: 'wb' });
const w = new WriterService(redis, cfg, keys, pino({ level: 'silent' }));
const start0 = Date.parse('2026-12-07T14:30:00Z');
const names = Array.from({ length: symbols }, (_, k) => `S${k}`);
try {
  for (let round = 0; round < rounds; round++) {
    // every interval's window ends at the same instant (one hour apart each round)
    const start = start0 + round * 3_600_000;
    const jobs: string[] = [];
    for (const interval of intervals)
      for (let i = 0; i < names.length; i += 1000)
        // as the closer enqueues them: packed (an outbox entry's text), as BullMQ stores a job's data
        jobs.push(
          JSON.stringify({
            packed: [
              JSON.stringify(
                names
                  .slice(i, i + 1000)
                  .map((symbol, k) => [
                    barId(interval, symbol, start),
                    encodeBarState({ ...barFromTrade(String(100 + (k % 97) / 8), 3, orderKey(start + k, '1-0')), trades: 2 }),
                    0,
                  ]),
              ),
            ],
          }),
        );
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    // WRITER_JOBS at once, as the worker takes them
    let next = 0;
    const lane = async () => {
      while (next < jobs.length) await w.processBatch(parseBarsJob(JSON.parse(jobs[next++]!)));
    };
    await Promise.all(Array.from({ length: WRITER_JOBS }, lane));
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    await new Promise((r) => setImmediate(r));
    const gc = gcPauses.filter((p) => p.at >= t0 && p.at <= t0 + wall).reduce((n, p) => n + p.ms, 0);
    const bars = symbols * intervals.length;
    const us = (x: number) => ((x * 1000) / bars).toFixed(1);
    if (round >= 2) {
      walls.push((wall * 1000) / bars);
      cpus.push((cpu.user + cpu.system) / bars);
      gcs.push((gc * 1000) / bars);
    }
    process.stdout.write(
      `round ${round + 1}${round === 0 ? ' (files new)' : ''}: ${bars} bars, wall ${wall.toFixed(0)} ms = ${us(wall)} µs a bar; ` +
        `process CPU ${us((cpu.user + cpu.system) / 1000)} µs a bar (user ${us(cpu.user / 1000)}, system ${us(cpu.system / 1000)}; threads included); ` +
        `its thread paused for garbage collection ${us(gc)} µs a bar\n`,
    );
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  // the ceiling, in the same run: a row appended to each of the same files in this thread alone
  // (appendText: open, fstat, write, close), with no job, no state to decode and no publish
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.csv'))
    .map((f) => join(dir, f));
  const row = '2026-12-07T09:30:00-05:00,100.125,100.25,100,100.125,100.1834,300,2\n';
  const t0 = performance.now();
  for (const f of files) {
    const st = statSync(f);
    appendText(f, row, st.size, st.ino);
  }
  const ceiling = ((performance.now() - t0) * 1000) / files.length;
  process.stdout.write(
    `median of rounds 3-${rounds}: wall ${median(walls).toFixed(1)} µs a bar, CPU ${median(cpus).toFixed(1)} µs a bar, ` +
      `garbage-collection pauses ${median(gcs).toFixed(1)} µs a bar; ` +
      `peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB\n` +
      `ceiling (a row appended to each file alone, stat included): ${ceiling.toFixed(1)} µs a file; the writer takes ${(median(walls) / ceiling).toFixed(1)}x that\n`,
  );
} finally {
  await w.stop();
  redis.disconnect();
  server.kill();
  rmSync(dir, { recursive: true, force: true });
}
