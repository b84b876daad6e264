import { describe, expect, it } from 'vitest';
import { FutureGuard, duration } from './future.js';

const H = 3_600_000;
const LIMIT = 15 * 60_000;
const T0 = Date.UTC(2019, 9, 11, 12);
/** Runs trades (times) through a guard; returns what passed, in order, and what was rejected with why. */
function run(times: number[], eventClock = true, now = Date.UTC(2026, 0, 1)) {
  const g = new FutureGuard<{ t: number }>(LIMIT, eventClock, () => now);
  const passed: number[] = [];
  const rejected: [number, string][] = [];
  const accept = (tr: { t: number }) => passed.push(tr.t);
  const reject = (tr: { t: number }, why: string) => rejected.push([tr.t, why]);
  for (const t of times) g.offer({ t }, (x) => ({ ...x }), accept, reject);
  g.end(reject);
  return { passed, rejected };
}

describe('FutureGuard', () => {
  it('rejects a lone trade far ahead of the feed and passes the rest in order', () => {
    const r = run([T0, T0 + 1000, T0 + 24 * H, T0 + 2000, T0 + 3000]);
    expect(r.passed).toEqual([T0, T0 + 1000, T0 + 2000, T0 + 3000]);
    expect(r.rejected).toEqual([[T0 + 24 * H, expect.stringMatching(/ahead of the feed by 24h .*not confirmed/)]]);
  });

  it('accepts a jump the next trade confirms (a new day of a multi-day tape), before the trade confirming it', () => {
    const r = run([T0, T0 + 12 * H, T0 + 12 * H + 5, T0 + 12 * H + 1]);
    expect(r.passed).toEqual([T0, T0 + 12 * H, T0 + 12 * H + 5, T0 + 12 * H + 1]);
    expect(r.rejected).toEqual([]);
  });

  it('rejects a trade ahead of the clock in either clock mode, however the feed runs', () => {
    const now = T0 + 1000;
    for (const event of [true, false]) {
      const r = run([T0, Date.UTC(2099, 11, 31), T0 + 2 * H, T0 + 500], event, now);
      expect(r.rejected.map(([t, why]) => [t, /ahead of the clock by/.test(why)])).toEqual([
        [Date.UTC(2099, 11, 31), true],
        [T0 + 2 * H, true],
      ]);
      expect(r.passed).toEqual([T0, T0 + 500]);
    }
  });

  it('a held trade the input ends on is rejected; the first trade sets the feed time', () => {
    expect(run([T0, T0 + 24 * H]).rejected).toEqual([[T0 + 24 * H, expect.stringMatching(/no later trade/)]]);
    expect(run([T0 + 24 * H]).passed).toEqual([T0 + 24 * H]);
  });

  it('CLOCK=wall: the clock is the only bound (a quiet symbol trading again is not held)', () => {
    const r = run([T0, T0 + 24 * H, T0 + 1], false);
    expect(r.passed).toEqual([T0, T0 + 24 * H, T0 + 1]);
  });

  it('says spans plainly', () => {
    expect(duration(24 * H)).toBe('24h');
    expect(duration(90_000)).toBe('1.5min');
    expect(duration(100 * H)).toBe('4.2d');
  });
});
