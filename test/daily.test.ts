import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { CsvFiles, csvPath } from '@candlewick/common';
import { Carry } from '@candlewick/writer';
import { loadConfig } from '@candlewick/common';
import { BarCalendar, Clock, barFromTrade, orderKey } from '@candlewick/core';
import { readCsv, redisUrl, runCli, tempDir, uniquePrefix, type CsvBar } from './helpers.js';

/**
 * Daily bars (1d): one per date in BAR_TZ — 23 and 25 hours long on the DST days, never split —
 * following SESSIONS for equities (none on a weekend or a holiday, the early close's trades only to
 * 13:00 with SESSIONS=regular), every calendar day for 24/7 symbols; each equal to the roll-up of
 * the day's base bars, through the real stack.
 */
const ZONE = 'America/New_York';
const DATES = [
  '2024-03-08',
  '2024-03-10',
  '2024-03-11',
  '2024-11-01',
  '2024-11-03',
  '2024-11-04',
  '2024-11-28',
  '2024-11-29',
  '2024-12-02',
];
const EQUITY = 'DLY';
const ALLDAY = 'BINANCE:DLYUSD';

/** A trade every 7 minutes of every listed date, for both symbols, from 00:03 local to midnight. */
function tape(): { s: string; p: number; v: number; t: number; c: string[] }[] {
  const out: { s: string; p: number; v: number; t: number; c: string[] }[] = [];
  let i = 0;
  for (const date of DATES) {
    const start = DateTime.fromISO(`${date}T00:03:00`, { zone: ZONE });
    const end = start.startOf('day').plus({ days: 1 }).toMillis();
    for (let t = start.toMillis(); t < end; t += 7 * 60_000, i++) {
      for (const s of [EQUITY, ALLDAY]) out.push({ s, p: 100 + (i % 50) / 10, v: 1 + (i % 3), t, c: [] });
    }
  }
  return out;
}

/** The bar of a day made from that day's 1-minute rows. */
function rollUp(rows: CsvBar[]): Omit<CsvBar, 'timestamp' | 'start' | 'vwap'> {
  return {
    open: rows[0]!.open,
    high: Math.max(...rows.map((r) => r.high)),
    low: Math.min(...rows.map((r) => r.low)),
    close: rows[rows.length - 1]!.close,
    volume: rows.reduce((v, r) => v + r.volume, 0),
    n: rows.reduce((n, r) => n + r.n, 0),
  };
}

const dateOf = (start: number) => DateTime.fromMillis(start, { zone: ZONE }).toISODate()!;

describe('daily bars (1d)', () => {
  it("one per date in New York, DST days whole, following SESSIONS: equal to the roll-up of the day's 1-minute bars", async () => {
    const dir = tempDir('daily');
    const trades = tape();
    const path = join(dir, 'days.jsonl');
    writeFileSync(path, trades.map((t) => JSON.stringify(t)).join('\n'));
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('daily'),
      DATA_DIR: dir,
      REPLAY_TAPE: path,
      EXIT_WHEN_IDLE_MS: '500',
      INTERVALS: '1min,1h,1d',
      SESSIONS: 'regular',
      SYMBOLS: `${EQUITY},${ALLDAY}`,
    });
    expect(res.code, res.stdout.slice(-2000)).toBe(0);
    expect(res.stdout).toMatch(/late\s+0\n/);
    for (const symbol of [EQUITY, ALLDAY]) {
      const days = readCsv(csvPath(dir, '1d', symbol)).rows;
      const minutes = readCsv(csvPath(dir, '1min', symbol)).rows;
      // labelled with the date, one row per date, in order
      expect(days.every((d) => /^\d{4}-\d{2}-\d{2}$/.test(d.timestamp))).toBe(true);
      for (const d of days) {
        expect(d.timestamp, symbol).toBe(dateOf(d.start));
        const ofDay = minutes.filter((m) => dateOf(m.start) === d.timestamp);
        const want = rollUp(ofDay);
        expect({ open: d.open, high: d.high, low: d.low, close: d.close, n: d.n }, `${symbol} ${d.timestamp}`).toEqual({
          open: want.open,
          high: want.high,
          low: want.low,
          close: want.close,
          n: want.n,
        });
        expect(d.volume).toBeCloseTo(want.volume, 6);
      }
      if (symbol === ALLDAY) {
        // every date, and the DST days whole: 23 and 25 hours of trades in one bar each
        expect(days.map((d) => d.timestamp)).toEqual(DATES);
        const count = (date: string) => trades.filter((t) => t.s === ALLDAY && dateOf(t.t) === date).length;
        expect(days.find((d) => d.timestamp === '2024-03-10')!.n).toBe(count('2024-03-10'));
        expect(days.find((d) => d.timestamp === '2024-11-03')!.n).toBe(count('2024-11-03'));
        expect(count('2024-03-10')).toBeLessThan(count('2024-03-11'));
        expect(count('2024-11-03')).toBeGreaterThan(count('2024-11-04'));
      } else {
        // trading days only: no weekend (the DST Sundays), no Thanksgiving; the early close's last trade before 13:00
        expect(days.map((d) => d.timestamp)).toEqual(['2024-03-08', '2024-03-11', '2024-11-01', '2024-11-04', '2024-11-29', '2024-12-02']);
        const early = trades.filter(
          (t) =>
            t.s === EQUITY &&
            dateOf(t.t) === '2024-11-29' &&
            DateTime.fromMillis(t.t, { zone: ZONE }).hour * 60 + DateTime.fromMillis(t.t, { zone: ZONE }).minute >= 570 &&
            DateTime.fromMillis(t.t, { zone: ZONE }).hour < 13,
        );
        expect(days.find((d) => d.timestamp === '2024-11-29')!.n).toBe(early.length);
        expect(days.find((d) => d.timestamp === '2024-11-29')!.close).toBe(early[early.length - 1]!.p);
      }
    }
  });
});

describe('EMPTY_BARS=carry with daily bars', () => {
  it('carries a flat day over trading days only for an equity, over every date for a 24/7 symbol', () => {
    const dir = tempDir('carry-daily');
    const cfg = loadConfig({ DATA_DIR: dir, INTERVALS: '1d', EMPTY_BARS: 'carry', SYMBOLS: `${EQUITY},${ALLDAY}` });
    const clock = new Clock(ZONE);
    const files = new CsvFiles(dir, clock, false, undefined, new Set(['1d']));
    const carry = new Carry(cfg, new BarCalendar(cfg, clock));
    const wed = DateTime.fromISO('2024-11-27', { zone: ZONE }).toMillis();
    const bar = { ...barFromTrade('100', 1, orderKey(wed, '1-0')) };
    for (const s of [EQUITY, ALLDAY]) files.append('1d', s, wed, bar);
    const through = DateTime.fromISO('2024-12-03', { zone: ZONE }).toMillis();
    const equity = carry.fill(files, '1d', EQUITY, undefined, through).map((f) => clock.date(f.start));
    expect(equity).toEqual(['2024-11-29', '2024-12-02']); // not Thanksgiving, not the weekend
    const allDay = carry.fill(files, '1d', ALLDAY, undefined, through).map((f) => clock.date(f.start));
    expect(allDay).toEqual(['2024-11-28', '2024-11-29', '2024-11-30', '2024-12-01', '2024-12-02']);
    expect(readCsv(csvPath(dir, '1d', EQUITY)).rows.map((r) => [r.timestamp, r.close, r.n])).toEqual([
      ['2024-11-27', 100, 1],
      ['2024-11-29', 100, 0],
      ['2024-12-02', 100, 0],
    ]);
  });
});

describe('price updates without a trade (v = 0)', () => {
  it("set the bar's prices but count as neither volume nor a transaction, through the stack", async () => {
    const dir = tempDir('zero-volume');
    const t0 = Date.parse('2024-03-05T15:00:00Z');
    const rows = [
      { p: 1.1, v: 0, t: t0 + 1_000 },
      { p: 1.12, v: 0, t: t0 + 20_000 },
      { p: 1.11, v: 5, t: t0 + 30_000 },
      { p: 1.09, v: 0, t: t0 + 50_000 },
      { p: 1.13, v: 0, t: t0 + 70_000 },
      { p: 1.14, v: 0, t: t0 + 80_000 },
      { p: 1.15, v: 2, t: t0 + 130_000 },
    ];
    const path = join(dir, 'fx.jsonl');
    writeFileSync(path, rows.map((r) => JSON.stringify({ s: 'OANDA:EUR_USD', ...r, c: [] })).join('\n'));
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('zero-volume'),
      DATA_DIR: dir,
      REPLAY_TAPE: path,
      EXIT_WHEN_IDLE_MS: '500',
      INTERVALS: '1min,5min',
    });
    expect(res.code).toBe(0);
    expect(
      readFileSync(csvPath(dir, '1min', 'OANDA:EUR_USD'), 'utf8')
        .trim()
        .split('\n')
        .slice(1),
    ).toEqual([
      '2024-03-05T10:00:00-05:00,1.1,1.12,1.09,1.09,1.11,5,1',
      '2024-03-05T10:01:00-05:00,1.13,1.14,1.13,1.14,,0,0',
      '2024-03-05T10:02:00-05:00,1.15,1.15,1.15,1.15,1.15,2,1',
    ]);
    expect(
      readFileSync(csvPath(dir, '5min', 'OANDA:EUR_USD'), 'utf8')
        .trim()
        .split('\n')[1],
    ).toBe('2024-03-05T10:00:00-05:00,1.1,1.15,1.09,1.15,1.12142857142857,7,2');
  });
});
