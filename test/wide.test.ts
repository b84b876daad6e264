import { describe, expect, it } from 'vitest';
import { percentile, runWide, wideReport, type WideOptions } from '../bench/wide.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { wideTapeLines } from '../bench/wide-tape.js';
import { ROOT, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * A whole market at a minute boundary, at live pace (CLOCK=wall, GRACE_MS=2000, two aggregators):
 * every symbol of a generated tape trades every few seconds, so the boundary closes a bar of each
 * of them at once. One interval, 1min, so every boundary closes the same number of bars whatever
 * minute the test runs in (with the default intervals a boundary that is also a 5min, 15min or
 * hour boundary closes two to five times as many). Each bar
 * must be published (and so be in its file) within grace + 1 s of its window's end at p99 and
 * grace + 2 s at worst, and every file must equal `candlewick bars` over the trades the pipeline
 * ingested, byte for byte. (`npm run bench:wide` is the full-size form: 8,000 symbols.)
 */
const GRACE = 2000;
/** one boundary of 1min bars, 10 s or more into a live-paced replay */
const ONE_BOUNDARY = {
  seconds: 80,
  root: ROOT,
  graceMs: GRACE,
  intervals: ['1min'],
  redisServerBin: process.env.REDIS_SERVER_BIN ?? 'redis-server',
  firstBoundaryOnly: true,
};

describe('a wide universe at live pace', () => {
  it('3,000 symbols closing at one boundary: on time and exact', async () => {
    const o: WideOptions = {
      ...ONE_BOUNDARY,
      symbols: 3000,
      heavy: 3,
      lightEveryMs: 3000,
      heavyPerSec: 50,
      seed: 7,
      aggregators: 2,
      exact: true,
    };
    const r = await runWide(o);
    console.log(wideReport(o, r).join('\n'));
    expect(r.missing).toEqual([]);
    expect(r.exact?.problems).toEqual([]);
    // the replay ran at least 10 s before the boundary and every symbol trades every ~3 s (a replay
    // begun in a minute's last 10 s also closes that minute's bars: the boundary timed is the last)
    const timed = r.boundaries.reduce((a, b) => (b.end > a.end ? b : a));
    expect(timed.bars).toBe(o.symbols);
    const worst = r.worst.map((w) => `${w.interval} ${w.symbol} ${new Date(w.start).toISOString()} ${w.lag} ms`).join('; ');
    expect(percentile(r.lags, 0.99), worst).toBeLessThanOrEqual(GRACE + 1000);
    expect(r.lags[r.lags.length - 1], worst).toBeLessThanOrEqual(GRACE + 2000);
  }, 150_000);

  it('a boundary closes when it is due, not at the next polled tick: CLOSE_EVERY_MS=5000, every bar within grace + 0.5 s', async () => {
    const o: WideOptions = {
      ...ONE_BOUNDARY,
      symbols: 100,
      heavy: 0,
      lightEveryMs: 2000,
      heavyPerSec: 0,
      seed: 11,
      aggregators: 1,
      exact: false,
      // polled alone, the boundary would wait for the first tick past it (its checkpoint) and the next
      env: { CLOSE_EVERY_MS: '5000' },
    };
    const r = await runWide(o);
    console.log(wideReport(o, r).join('\n'));
    expect(r.missing).toEqual([]);
    expect(r.bars.get('1min')).toBe(o.symbols);
    expect(r.lags[r.lags.length - 1]).toBeLessThanOrEqual(GRACE + 500);
  }, 150_000);

  it('a tape of 20,000 symbols: their list is longer than one environment variable may be, and stack replays every one', async () => {
    const dir = tempDir('wide-list');
    const tape = join(dir, 'tape.jsonl');
    const o = { symbols: 20_000, heavy: 0, seconds: 1, lightEveryMs: 1000, heavyPerSec: 0, seed: 3 };
    writeFileSync(tape, `${wideTapeLines(o).join('\n')}\n`);
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('wide-list'),
      DATA_DIR: join(dir, 'data'),
      REPLAY_TAPE: tape,
      INTERVALS: '1min',
      EXIT_WHEN_IDLE_MS: '500',
      LOG_LEVEL: 'warn',
    });
    expect(res.code, `${res.stdout.slice(-2000)}\n${res.stderr.slice(-2000)}`).toBe(0);
    // every symbol subscribed before the replay starts (they take longer to arrive than the settle)
    expect(res.stdout).toMatch(/trades in\s+20000\n/);
    expect(res.stdout).toMatch(/bars written\s+1min=20000\n/);
  }, 120_000);
});
