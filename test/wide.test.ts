import { describe, expect, it } from 'vitest';
import { DEFAULT_WIDE_INTERVALS, percentile, runWide, wideReport, type WideOptions } from '../bench/wide.js';
import { ROOT } from './helpers.js';

/**
 * A whole market at a minute boundary, at live pace (CLOCK=wall, GRACE_MS=2000, two aggregators,
 * the default intervals): every symbol of a generated tape trades every few seconds, so the
 * boundary closes a bar of each of them in every interval ending there, all at once. Each bar
 * must be published (and so be in its file) within grace + 1 s of its window's end at p99 and
 * grace + 2 s at worst, and every file must equal `candlewick bars` over the trades the pipeline
 * ingested, byte for byte. (`npm run bench:wide` is the full-size form: 8,000 symbols.)
 */
const GRACE = 2000;

describe('a wide universe at live pace', () => {
  it('3,000 symbols closing at one boundary: on time and exact', async () => {
    const o: WideOptions = {
      symbols: 3000,
      heavy: 3,
      seconds: 80,
      lightEveryMs: 3000,
      heavyPerSec: 50,
      seed: 7,
      root: ROOT,
      graceMs: GRACE,
      aggregators: 2,
      intervals: DEFAULT_WIDE_INTERVALS,
      redisServerBin: process.env.REDIS_SERVER_BIN ?? 'redis-server',
      exact: true,
      firstBoundaryOnly: true,
    };
    const r = await runWide(o);
    console.log(wideReport(o, r).join('\n'));
    expect(r.missing).toEqual([]);
    expect(r.exact?.problems).toEqual([]);
    // the replay ran at least 10 s before the boundary and every symbol trades every ~3 s
    expect(r.bars.get('1min')).toBe(o.symbols);
    const worst = r.worst.map((w) => `${w.interval} ${w.symbol} ${new Date(w.start).toISOString()} ${w.lag} ms`).join('; ');
    expect(percentile(r.lags, 0.99), worst).toBeLessThanOrEqual(GRACE + 1000);
    expect(r.lags[r.lags.length - 1], worst).toBeLessThanOrEqual(GRACE + 2000);
  }, 150_000);
});
