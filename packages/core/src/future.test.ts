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

  it('accepts a jump the next trades confirm (a new day of a multi-day tape): 3 held trades over 10 s, passed on in arrival order', () => {
    const r = run([T0, T0 + 12 * H, T0 + 12 * H + 5, T0 + 12 * H + 20_000, T0 + 12 * H + 1, T0 + 12 * H + 30_000]);
    expect(r.passed).toEqual([T0, T0 + 12 * H, T0 + 12 * H + 5, T0 + 12 * H + 20_000, T0 + 12 * H + 1, T0 + 12 * H + 30_000]);
    expect(r.rejected).toEqual([]);
  });

  it('a burst of two bad trades does not confirm itself: both rejected when the feed goes on', () => {
    const r = run([T0, T0 + 24 * H, T0 + 24 * H + 1, T0 + 1000, T0 + 2000]);
    expect(r.passed).toEqual([T0, T0 + 1000, T0 + 2000]);
    expect(r.rejected).toEqual([
      [
        T0 + 24 * H,
        expect.stringMatching(/ahead of the feed by 24h .*not confirmed \(2 held, spanning 0s: a jump needs 3 trades over 10s or more\)/),
      ],
      [T0 + 24 * H + 1, expect.stringMatching(/ahead of the feed by 24h/)],
    ]);
  });

  it('a small burst (five trades within 3 s, a day ahead) is rejected whole; so is one at the end of the input', () => {
    const burst = [0, 500, 1000, 2000, 3000].map((ms) => T0 + 24 * H + ms);
    const r = run([T0, ...burst, T0 + 1000]);
    expect(r.passed).toEqual([T0, T0 + 1000]);
    expect(r.rejected.map(([t]) => t)).toEqual(burst);
    expect(run([T0, ...burst]).rejected.map(([t, why]) => [t, /no later trade came to confirm/.test(why)])).toEqual(
      burst.map((t) => [t, true]),
    );
  });

  it('held trades far ahead of a later one that is itself ahead of the feed are rejected; the later one is held in their place', () => {
    const r = run([T0, T0 + 48 * H, T0 + 12 * H, T0 + 12 * H + 10_000, T0 + 12 * H + 20_000]);
    expect(r.rejected.map(([t]) => t)).toEqual([T0 + 48 * H]);
    expect(r.passed).toEqual([T0, T0 + 12 * H, T0 + 12 * H + 10_000, T0 + 12 * H + 20_000]);
  });

  it('more than 10,000 trades held at the new time confirm it whatever their span', () => {
    const many = Array.from({ length: 10_001 }, () => T0 + 24 * H);
    const r = run([T0, ...many, T0 + 24 * H + 1]);
    expect(r.rejected).toEqual([]);
    expect(r.passed).toHaveLength(10_003);
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
