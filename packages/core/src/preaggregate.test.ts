import { describe, expect, it } from 'vitest';
import {
  BarCalendar,
  Clock,
  ConditionRules,
  Preaggregator,
  encodeTradeEntry,
  parseInterval,
  rawEntries,
  volumeNumber,
  vwap,
  type FoldRules,
  type Interval,
  type RawEntry,
} from './index.js';

/** One trade (given as field/value pairs) as the aggregator reads it: through the raw stream's codec. */
function rawEntry(id: string, f: string[]): RawEntry {
  const get = (k: string) => (f.includes(k) ? f[f.indexOf(k) + 1]! : '');
  const c = get('c');
  const trade = {
    s: get('s'),
    p: get('p'),
    v: +get('v'),
    t: +get('t'),
    c: c === '' ? [] : (JSON.parse(c) as string[]),
    rx: +get('rx'),
    w: +get('w'),
  };
  return rawEntries(id, encodeTradeEntry([trade]))[0]!;
}

const NY = new Clock('America/New_York');
/** A fold with grace 2 s under these intervals and calendar settings, on one clock. */
const fold = (
  ivs: readonly Interval[],
  settings: { sessions?: 'regular' | 'extended' | 'all'; align?: 'clock' | 'session' } = {},
  rules: FoldRules = {},
) => new Preaggregator(new BarCalendar({ tz: NY.tz, intervals: ivs, graceMs: 2000, ...settings }, NY), rules);
const intervals = ['1min', '1h'].map(parseInterval);
let seq = 0;
const entry = (s: string, p: string, iso: string) =>
  rawEntry(`1700000000000-${seq++}`, ['s', s, 'p', p, 'v', '1', 't', String(Date.parse(iso)), 'c', '[]', 'rx', '0']);

// Monday 2013-10-07 (EDT): pre-market, regular and after-hours trades, plus a 24/7 symbol
const batch = [
  entry('SPY', '1', '2013-10-07T12:00:00Z'), // 08:00 pre
  entry('SPY', '2', '2013-10-07T13:45:00Z'), // 09:45 regular
  entry('SPY', '3', '2013-10-07T15:10:00Z'), // 11:10 regular
  entry('SPY', '4', '2013-10-07T21:00:00Z'), // 17:00 post
  entry('SPY', '5', '2013-10-08T02:00:00Z'), // 22:00 closed
  entry('SPY', '6', '2013-12-25T15:00:00Z'), // Christmas
  entry('BINANCE:BTCUSDT', '7', '2013-10-07T12:00:00Z'),
  entry('BINANCE:BTCUSDT', '8', '2013-12-25T15:00:00Z'),
];
const starts = (bars: Map<string, unknown>, prefix: string) =>
  [...bars.keys()]
    .filter((k) => k.startsWith(prefix))
    .map((k) => NY.label(Number(k.split('|')[2])))
    .sort();

describe('sessions and alignment', () => {
  it('SESSIONS=all keeps everything', () => {
    const r = fold(intervals, { sessions: 'all' }).run(batch);
    expect(r.filtered).toBe(0);
    expect(starts(r.bars, '1min|SPY|')).toHaveLength(6);
  });

  it('SESSIONS=regular keeps 09:30-16:00 on trading days; 24/7 symbols are never filtered', () => {
    const r = fold(intervals, { sessions: 'regular' }).run(batch);
    expect(r.filtered).toBe(4);
    expect(starts(r.bars, '1min|SPY|')).toEqual(['2013-10-07T09:45:00-04:00', '2013-10-07T11:10:00-04:00']);
    expect(starts(r.bars, '1min|BINANCE:BTCUSDT|')).toHaveLength(2);
  });

  it('SESSIONS=extended adds pre-market and after-hours', () => {
    const r = fold(intervals, { sessions: 'extended' }).run(batch);
    expect(r.filtered).toBe(2);
    expect(starts(r.bars, '1min|SPY|')).toHaveLength(4);
  });

  it('ALIGN=session starts equity hours at the open; 24/7 symbols stay on the clock', () => {
    const r = fold(intervals, { sessions: 'regular', align: 'session' }).run(batch);
    expect(starts(r.bars, '1h|SPY|')).toEqual(['2013-10-07T09:30:00-04:00', '2013-10-07T10:30:00-04:00']);
    expect(starts(r.bars, '1h|BINANCE:BTCUSDT|')).toEqual(['2013-10-07T08:00:00-04:00', '2013-12-25T10:00:00-05:00']);
    const clock = fold(intervals, { sessions: 'regular', align: 'clock' }).run(batch);
    expect(starts(clock.bars, '1h|SPY|')).toEqual(['2013-10-07T09:00:00-04:00', '2013-10-07T11:00:00-04:00']);
  });

  it('a year the calendar does not cover is reported, its equity trades left out', () => {
    const r = fold(intervals, { sessions: 'regular' }).run([entry('SPY', '1', '2040-01-03T15:00:00Z')]);
    expect(r.uncovered).toEqual([2040]);
    expect(r.filtered).toBe(1);
  });
});

describe('CONDITIONS=cta-utp', () => {
  const withC = (p: string, iso: string, c: string[], v = 100) =>
    rawEntry(`1700000000000-${seq++}`, [
      's',
      'IBM',
      'p',
      p,
      'v',
      String(v),
      't',
      String(Date.parse(iso)),
      'c',
      JSON.stringify(c),
      'rx',
      '0',
    ]);
  const minute = [
    withC('180', '2013-10-07T13:31:00.100Z', ['OddLot'], 10), // volume only: first, but not the open
    withC('181', '2013-10-07T13:31:01Z', ['Regular']),
    withC('190', '2013-10-07T13:31:02Z', ['OutOfSequence']), // may set the high, not the close
    withC('182', '2013-10-07T13:31:03Z', ['IntermarketSweep']),
    withC('150', '2013-10-07T13:31:04Z', ['OfficialClose'], 5000), // counts for nothing
    withC('170', '2013-10-07T13:31:05Z', ['AveragePrice'], 300), // volume only: last, but not the close
  ];
  const only = (r: ReturnType<Preaggregator['run']>, id: string) => r.bars.get(id)!.state;

  it('lets each print set only its fields; a print that may set nothing is left out and counted', () => {
    const r = fold(intervals, {}, { conditions: new ConditionRules() }).run(minute);
    const bar = only(r, `1min|IBM|${Date.parse('2013-10-07T13:31:00Z')}`);
    expect(bar).toMatchObject({ open: '181', high: '190', low: '181', close: '182', trades: 5 });
    expect(volumeNumber(bar.volume)).toBe(610);
    expect(vwap(bar)).toBeCloseTo((180 * 10 + 181 * 100 + 190 * 100 + 182 * 100 + 170 * 300) / 610, 9);
    expect(r.excluded).toBe(1);
    // the hour bar is the roll-up of the same partial
    expect(only(r, `1h|IBM|${Date.parse('2013-10-07T13:00:00Z')}`)).toMatchObject({
      open: '181',
      high: '190',
      close: '182',
      volume: bar.volume,
    });
  });

  it('CONDITIONS=all counts every print alike', () => {
    const r = fold(intervals).run(minute);
    const all = only(r, `1min|IBM|${Date.parse('2013-10-07T13:31:00Z')}`);
    expect(all).toMatchObject({ open: '180', high: '190', low: '150', close: '170', trades: 6 });
    expect(volumeNumber(all.volume)).toBe(5610);
    expect(r.excluded).toBe(0);
  });

  it('a window of volume-only prints has volume and no prices', () => {
    const r = fold(intervals, {}, { conditions: new ConditionRules() }).run([
      withC('180', '2013-10-07T13:40:00Z', ['OddLot'], 10),
      withC('181', '2013-10-07T13:40:30Z', ['Cash'], 20),
    ]);
    const bar = only(r, `1min|IBM|${Date.parse('2013-10-07T13:40:00Z')}`);
    expect(bar).toMatchObject({ open: '', high: '', low: '', close: '', trades: 2 });
    expect(volumeNumber(bar.volume)).toBe(30);
  });

  it('never applies to 24/7 symbols', () => {
    const e = rawEntry('1700000000000-999999', [
      's',
      'BINANCE:BTCUSDT',
      'p',
      '5',
      'v',
      '1',
      't',
      String(Date.parse('2013-10-07T13:31:00Z')),
      'c',
      '["OfficialClose"]',
      'rx',
      '0',
    ]);
    const r = fold(intervals, {}, { conditions: new ConditionRules() }).run([e]);
    expect(r.bars.size).toBe(2);
  });
});

describe('daily bars (1d)', () => {
  const daily = ['1min', '1d'].map(parseInterval);
  const closeOf = (pre: Preaggregator, s: string, iso: string) =>
    [...pre.run([entry(s, '10', iso)]).bars].find(([k]) => k.startsWith(`1d|${s}|`))![1].end;
  it('close at the end of the last kept session for equities (early closes included), at midnight for 24/7 symbols', () => {
    const regular = fold(daily, { sessions: 'regular' });
    expect(closeOf(regular, 'SPY', '2013-10-07T15:00:00Z')).toBe(Date.parse('2013-10-07T20:00:00Z')); // 16:00 EDT
    expect(closeOf(regular, 'SPY', '2013-11-29T15:00:00Z')).toBe(Date.parse('2013-11-29T18:00:00Z')); // 13:00 EST, the day after Thanksgiving
    expect(closeOf(regular, 'BINANCE:BTCUSDT', '2013-10-07T15:00:00Z')).toBe(Date.parse('2013-10-08T04:00:00Z')); // midnight EDT
    const extended = fold(daily, { sessions: 'extended' });
    expect(closeOf(extended, 'SPY', '2013-10-07T15:00:00Z')).toBe(Date.parse('2013-10-08T00:00:00Z')); // 20:00 EDT
    const all = fold(daily, { sessions: 'all' });
    expect(closeOf(all, 'SPY', '2013-10-07T15:00:00Z')).toBe(Date.parse('2013-10-08T04:00:00Z'));
  });
});

describe('price updates without a trade (v = 0)', () => {
  it('set the prices of their bars but add neither volume nor a transaction', () => {
    const upd = (p: string, iso: string, v = '0') =>
      rawEntry(`1700000000000-${seq++}`, ['s', 'OANDA:EUR_USD', 'p', p, 'v', v, 't', String(Date.parse(iso)), 'c', '[]', 'rx', '0']);
    const r = fold(intervals).run([
      upd('1.10', '2024-03-05T15:00:01Z'),
      upd('1.12', '2024-03-05T15:00:20Z'),
      upd('1.09', '2024-03-05T15:00:40Z'),
      upd('1.11', '2024-03-05T15:00:50Z', '5'),
      upd('1.13', '2024-03-05T15:01:10Z'),
    ]);
    const m1 = r.bars.get(`1min|OANDA:EUR_USD|${Date.parse('2024-03-05T15:00:00Z')}`)!.state;
    expect([m1.open, m1.high, m1.low, m1.close, m1.trades, volumeNumber(m1.volume)]).toEqual(['1.10', '1.12', '1.09', '1.11', 1, 5]);
    expect(vwap(m1)).toBeCloseTo(1.11, 12); // the one trade's price: updates weigh nothing
    const only = r.bars.get(`1min|OANDA:EUR_USD|${Date.parse('2024-03-05T15:01:00Z')}`)!.state;
    expect([only.open, only.close, only.trades, volumeNumber(only.volume), Number.isNaN(vwap(only))]).toEqual(['1.13', '1.13', 0, 0, true]);
  });
});
