import { describe, expect, it } from 'vitest';
import { Clock, baseIntervalMs, parseDurationMs, parseInterval } from './time.js';

const NY = new Clock('America/New_York');
const H = 3_600_000;
const M = 60_000;
const utc = (s: string) => Date.parse(s);

describe('parseInterval', () => {
  it('accepts whole minutes and hours and names them canonically', () => {
    expect(parseInterval('1min')).toEqual({ name: '1min', ms: M });
    expect(parseInterval(' 15m ')).toEqual({ name: '15min', ms: 15 * M });
    expect(parseInterval('4h')).toEqual({ name: '4h', ms: 4 * H });
    expect(parseInterval('90min').ms).toBe(90 * M);
  });
  it.each(['', '0min', '1.5h', '30s', 'min', '-5min', '25h', '2d'])('rejects %j with a message that says what works', (s) => {
    expect(() => parseInterval(s)).toThrow(/whole number of minutes or hours|at most 24h|a daily bar is 1d/);
  });
  it('accepts 1d, a date rather than a length', () => {
    expect(parseInterval('1d')).toEqual({ name: '1d', ms: 24 * H, day: true });
    expect(parseInterval('24h')).toEqual({ name: '24h', ms: 24 * H });
  });
  it('finds the base interval as the gcd', () => {
    expect(baseIntervalMs([parseInterval('5min'), parseInterval('1h'), parseInterval('15min')])).toBe(5 * M);
    expect(baseIntervalMs([parseInterval('2min'), parseInterval('3min')])).toBe(M);
  });
});

describe('Clock.window in America/New_York', () => {
  it('floors by event time to the interval, 1h bars on the hour, 5min at :00, :05', () => {
    const t = utc('2019-10-11T14:37:12.345Z');
    expect(NY.window(t, M)).toEqual([utc('2019-10-11T14:37:00Z'), utc('2019-10-11T14:38:00Z')]);
    expect(NY.window(t, 5 * M)).toEqual([utc('2019-10-11T14:35:00Z'), utc('2019-10-11T14:40:00Z')]);
    expect(NY.window(t, H)).toEqual([utc('2019-10-11T14:00:00Z'), utc('2019-10-11T15:00:00Z')]);
  });

  it('labels bars in local time with the offset', () => {
    expect(NY.label(utc('2019-10-11T00:00:00Z'))).toBe('2019-10-10T20:00:00-04:00');
    expect(NY.label(utc('2019-12-02T14:30:00Z'))).toBe('2019-12-02T09:30:00-05:00');
  });

  it('floors windows that do not divide the hour from local midnight, truncated at the next midnight', () => {
    // 7-minute windows: 00:00, 00:07, ... the last of the day is 23:55-24:00 local (EDT here).
    const t = utc('2019-10-12T03:58:00Z'); // 23:58 EDT
    expect(NY.window(t, 7 * M)).toEqual([utc('2019-10-12T03:55:00Z'), utc('2019-10-12T04:00:00Z')]);
    expect(NY.window(utc('2019-10-12T04:01:00Z'), 7 * M)[0]).toBe(utc('2019-10-12T04:00:00Z'));
  });

  it('makes the repeated hour of the November night two bars with distinct labels', () => {
    // 2019-11-03: 01:00-02:00 EDT (05:00Z-06:00Z), then 01:00-02:00 EST (06:00Z-07:00Z)
    const edt = utc('2019-11-03T05:30:00Z');
    const est = utc('2019-11-03T06:30:00Z');
    expect(NY.window(edt, H)).toEqual([utc('2019-11-03T05:00:00Z'), utc('2019-11-03T06:00:00Z')]);
    expect(NY.window(est, H)).toEqual([utc('2019-11-03T06:00:00Z'), utc('2019-11-03T07:00:00Z')]);
    expect(NY.label(utc('2019-11-03T05:00:00Z'))).toBe('2019-11-03T01:00:00-04:00');
    expect(NY.label(utc('2019-11-03T06:00:00Z'))).toBe('2019-11-03T01:00:00-05:00');
    // 2h windows from midnight split at the change: 00:00-02:00 EDT is 04:00Z-06:00Z, then 06:00Z-07:00Z
    expect(NY.window(edt, 2 * H)).toEqual([utc('2019-11-03T04:00:00Z'), utc('2019-11-03T06:00:00Z')]);
    expect(NY.window(est, 2 * H)).toEqual([utc('2019-11-03T06:00:00Z'), utc('2019-11-03T07:00:00Z')]);
  });

  it('has no bar for the missing hour of the March night', () => {
    // 2019-03-10: 02:00 EST jumps to 03:00 EDT at 07:00Z
    expect(NY.window(utc('2019-03-10T06:59:59.999Z'), H)).toEqual([utc('2019-03-10T06:00:00Z'), utc('2019-03-10T07:00:00Z')]);
    expect(NY.window(utc('2019-03-10T07:00:00Z'), H)).toEqual([utc('2019-03-10T07:00:00Z'), utc('2019-03-10T08:00:00Z')]);
    expect(NY.label(utc('2019-03-10T07:00:00Z'))).toBe('2019-03-10T03:00:00-04:00');
    // 4h windows split at the change like November's: 00:00-02:00 EST (05:00Z-07:00Z), then 03:00-04:00 EDT
    expect(NY.window(utc('2019-03-10T06:30:00Z'), 4 * H)).toEqual([utc('2019-03-10T05:00:00Z'), utc('2019-03-10T07:00:00Z')]);
    expect(NY.window(utc('2019-03-10T07:30:00Z'), 4 * H)).toEqual([utc('2019-03-10T07:00:00Z'), utc('2019-03-10T08:00:00Z')]);
  });

  it('tiles time: every instant of both DST days is in exactly one window, windows nest', () => {
    for (const day of ['2019-03-10', '2019-11-03']) {
      for (const ms of [M, 5 * M, 30 * M, H, 2 * H, 4 * H]) {
        let prevEnd = NY.window(utc(`${day}T00:00:00Z`), ms)[0];
        for (let t = utc(`${day}T00:00:00Z`); t < utc(`${day}T12:00:00Z`); t += 7 * M + 13_000) {
          const [s, e] = NY.window(t, ms);
          expect(s).toBeLessThanOrEqual(t);
          expect(e).toBeGreaterThan(t);
          expect(s === prevEnd || NY.window(s, ms)[0] === s).toBe(true);
          // a 1min window lies inside its longer window
          const [s1, e1] = NY.window(t, M);
          expect(s1 >= s && e1 <= e).toBe(true);
          prevEnd = e;
        }
      }
    }
  });

  it('anchors windows at the equity open when asked: 09:30, 10:30, ... cut at midnight', () => {
    const a = 9 * H + 30 * M;
    expect(NY.window(utc('2013-10-07T14:10:00Z'), H, a)).toEqual([utc('2013-10-07T13:30:00Z'), utc('2013-10-07T14:30:00Z')]); // 10:10 EDT -> 09:30
    expect(NY.window(utc('2013-10-07T14:40:00Z'), 30 * M, a)).toEqual([utc('2013-10-07T14:30:00Z'), utc('2013-10-07T15:00:00Z')]);
    expect(NY.window(utc('2013-10-07T04:10:00Z'), H, a)).toEqual([utc('2013-10-07T04:00:00Z'), utc('2013-10-07T04:30:00Z')]); // 00:10: first window of the day cut at midnight
    expect(NY.window(utc('2013-10-07T14:10:00Z'), M, a)).toEqual(NY.window(utc('2013-10-07T14:10:00Z'), M)); // shorter intervals unchanged
  });

  it('works in a zone with a half-hour offset', () => {
    const kolkata = new Clock('Asia/Kolkata');
    // 1h bars start on the local hour: 10:00 IST = 04:30Z
    expect(kolkata.window(utc('2020-01-01T04:45:00Z'), H)).toEqual([utc('2020-01-01T04:30:00Z'), utc('2020-01-01T05:30:00Z')]);
  });

  it('rejects an unknown zone', () => {
    expect(() => new Clock('Mars/Olympus')).toThrow(/invalid time zone/);
  });
});

describe('parseDurationMs', () => {
  it('parses units', () => {
    expect(parseDurationMs('1h')).toBe(H);
    expect(parseDurationMs('90s')).toBe(90_000);
    expect(parseDurationMs('250')).toBe(250);
    expect(() => parseDurationMs('soon')).toThrow(/invalid duration/);
  });
});

describe('daily windows (1d)', () => {
  it('are the local date: 24 h, 23 h on the March night, 25 h on the November night, never split; labelled with the date', () => {
    const day = (iso: string) => NY.window(utc(iso), 24 * H, 0, true);
    expect(day('2024-03-08T15:00:00Z')).toEqual([utc('2024-03-08T05:00:00Z'), utc('2024-03-09T05:00:00Z')]);
    const spring = day('2024-03-10T12:00:00Z');
    expect(spring).toEqual([utc('2024-03-10T05:00:00Z'), utc('2024-03-11T04:00:00Z')]);
    expect(spring[1] - spring[0]).toBe(23 * H);
    const fall = day('2024-11-03T05:30:00Z'); // 01:30 EDT, the first of the repeated hour
    expect(fall).toEqual([utc('2024-11-03T04:00:00Z'), utc('2024-11-04T05:00:00Z')]);
    expect(fall[1] - fall[0]).toBe(25 * H);
    expect(day('2024-11-03T06:30:00Z')).toEqual(fall); // 01:30 EST, the second: the same bar
    // 24h is a length: it is cut where the offset changes
    expect(NY.window(utc('2024-11-03T06:30:00Z'), 24 * H)).not.toEqual(fall);
    expect(NY.labelOf(fall[0], true)).toBe('2024-11-03');
    expect(NY.parseLabel('2024-11-03')).toBe(fall[0]);
    expect(NY.parseLabel('2024-11-03T01:00:00-05:00')).toBe(utc('2024-11-03T06:00:00Z'));
  });
});
