import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { ALL, ActivityCutter, Clock, VOLUME, eventLabel, parseActivityInterval, type ActivityBar, type ActivityTrade } from './index.js';

function cut(name: string, trades: readonly Partial<ActivityTrade>[]): { bars: ActivityBar[]; forming: number[] } {
  const cutter = new ActivityCutter([parseActivityInterval(name)]);
  const bars: ActivityBar[] = [];
  trades.forEach((t, i) => cutter.push({ s: 'X', t: 1000 + i, p: '10', v: 1, elig: ALL, ...t }, (b) => bars.push(b)));
  return { bars, forming: [...cutter.forming()].map((f) => f.trades) };
}

describe('activity bar names', () => {
  it('reads every form, and refuses others naming the rule', () => {
    expect(parseActivityInterval('100t')).toMatchObject({ measure: 't', rule: 'size', threshold: '100' });
    expect(parseActivityInterval('0.5V')).toMatchObject({ name: '0.5v', measure: 'v', rule: 'size' });
    expect(parseActivityInterval('1000000val-run')).toMatchObject({ measure: 'val', rule: 'run', threshold: '1000000' });
    expect(parseActivityInterval('v-imb-e50-k10-max90-w5')).toMatchObject({
      measure: 'v',
      rule: 'imb',
      ewma: { t0: 50, w: 5, k: 10, min: 1, max: 90 },
    });
    expect(parseActivityInterval('t-run-e20').ewma).toMatchObject({ t0: 20, w: 20, k: 20 });
    for (const bad of ['2.5t', '0t', '0.0v', '1.00000000005v', 't-imb-e0', 't-imb-e10-min20-max10', 't-imb-e10-w3-w4', '100x', 't-imb'])
      expect(() => parseActivityInterval(bad), bad).toThrow(/invalid interval .*activity bars are/);
  });
});

describe('eventLabel', () => {
  it("spells an event time as luxon's ISO 8601 does, milliseconds and offset always", () => {
    for (const tz of ['America/New_York', 'Asia/Kolkata', 'UTC', 'Australia/Lord_Howe', 'America/St_Johns']) {
      const clock = new Clock(tz);
      // the epoch, a Lean trade, the November repeated hour's two sides, the March gap, a 7 ms trade
      for (const t of [0, 1381411800123, 1699162200000, 1699165800001, 1710054000500, Date.UTC(2024, 3, 6, 15, 30, 0, 7)])
        expect(eventLabel(t, clock), `${tz} ${t}`).toBe(
          DateTime.fromMillis(t, { zone: tz }).toISO({ includeOffset: true })!.replace(/Z$/, '+00:00'),
        );
    }
  });
});

describe('ActivityCutter', () => {
  it('closes size bars on the trade that reaches the threshold, never splitting it', () => {
    const { bars, forming } = cut('10v', [{ v: 4 }, { v: 4 }, { v: 3, p: '11' }, { v: 9, p: '9' }, { v: 1 }, { v: 2 }]);
    expect(
      bars.map((b) => [b.seq, b.state.trades, Number(b.state.volume) / 1e10, b.state.open, b.state.high, b.state.low, b.state.close]),
    ).toEqual([
      [1, 3, 11, '10', '11', '10', '11'],
      [2, 2, 10, '9', '10', '9', '10'],
    ]);
    expect(bars[0]!.start).toBe(1000);
    expect(bars[0]!.end).toBe(1002);
    expect(forming).toEqual([1]);
  });

  it('sums exactly: ten trades of 0.1 make a 1v bar', () => {
    const { bars } = cut(
      '1v',
      Array.from({ length: 10 }, () => ({ v: 0.1 })),
    );
    expect(bars).toHaveLength(1);
    expect(bars[0]!.state.trades).toBe(10);
  });

  it('follows the worked example of docs/activity-bars.md (t-imb-e3-w3-k3)', () => {
    const prices = ['10', '11', '11', '10', '12', '13', '13'];
    const { bars, forming } = cut(
      't-imb-e3-w3-k3',
      prices.map((p) => ({ p })),
    );
    expect(bars.map((b) => [b.seq, b.start, b.end, b.state.trades])).toEqual([[1, 1000, 1002, 3]]);
    expect(forming).toEqual([4]);
    // one more buy makes theta 3, the threshold: bar 2 closes
    const more = cut(
      't-imb-e3-w3-k3',
      [...prices, '14'].map((p) => ({ p })),
    );
    expect(more.bars.map((b) => [b.seq, b.state.trades, b.state.open, b.state.close])).toEqual([
      [1, 3, '10', '11'],
      [2, 5, '10', '14'],
    ]);
  });

  it('takes the side of a trade that may not set the close from the trade before, and lets it set no price', () => {
    // a fixed tick imbalance of 2: buy (first), odd lot at a lower price (no OPEN_CLOSE: still a buy) closes it
    const { bars } = cut('2t-imb', [{ p: '10' }, { p: '9', elig: VOLUME }]);
    expect(bars.map((b) => [b.state.trades, b.state.open, b.state.high, b.state.low, b.state.close])).toEqual([
      [2, '10', '10', '10', '10'],
    ]);
    // the same with a last sale: a sell, the imbalance 0, no bar
    expect(cut('2t-imb', [{ p: '10' }, { p: '9' }]).bars).toEqual([]);
  });

  it('counts a price update (v = 0) in no measure, yet takes its prices', () => {
    const { bars } = cut('2t', [{ p: '10' }, { p: '12', v: 0 }, { p: '11' }]);
    expect(bars.map((b) => [b.state.trades, b.state.high, b.state.close])).toEqual([[2, '12', '11']]);
  });

  it('runs bars: the longer one-sided run closes the bar', () => {
    // buy, sell, sell, buy, sell: sells reach 3 on the fifth trade
    const { bars } = cut(
      '3t-run',
      ['10', '9', '8', '9', '8'].map((p) => ({ p })),
    );
    expect(bars.map((b) => b.state.trades)).toEqual([5]);
  });

  it('keeps each symbol to itself', () => {
    const cutter = new ActivityCutter([parseActivityInterval('2t')]);
    const bars: ActivityBar[] = [];
    for (const s of ['A', 'B', 'A', 'B', 'A']) cutter.push({ s, t: 1, p: '1', v: 1, elig: ALL }, (b) => bars.push(b));
    expect(bars.map((b) => [b.symbol, b.seq])).toEqual([
      ['A', 1],
      ['B', 1],
    ]);
  });
});

describe('ActivityCutter state', () => {
  it('saved and loaded into a new cutter every few trades, cuts what one cutter cuts', () => {
    const names = ['7t', '12.5v', '300val', '5t-imb', '40v-run', 't-imb-e9-k5', 'v-run-e6-w3', 'val-imb-e8-min3-max20'];
    const intervals = names.map(parseActivityInterval);
    // a deterministic walk of two symbols: prices up and down, sizes with decimals, some price updates
    let x = 12345;
    const rnd = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
    const trades: ActivityTrade[] = [];
    let price = 100;
    for (let i = 0; i < 3000; i++) {
      price = Math.max(1, price + Math.round((rnd() - 0.5) * 6) / 100);
      trades.push({
        s: rnd() < 0.5 ? 'A' : 'B',
        t: 1000 + i,
        p: price.toFixed(2),
        v: rnd() < 0.03 ? 0 : Math.round(rnd() * 500) / 100,
        elig: rnd() < 0.05 ? VOLUME : ALL,
      });
    }
    const straight: ActivityBar[] = [];
    const one = new ActivityCutter(intervals);
    for (const t of trades) one.push(t, (b) => straight.push(b));
    const resumed: ActivityBar[] = [];
    const saved = new Map<string, string>();
    for (let from = 0; from < trades.length; from += 37) {
      const c = new ActivityCutter(intervals);
      for (const [s, text] of saved) c.load(s, text);
      for (const t of trades.slice(from, from + 37)) c.push(t, (b) => resumed.push(b));
      for (const s of c.takeTouched()) saved.set(s, c.save(s)!);
    }
    expect(straight.length).toBeGreaterThan(300);
    expect(resumed).toEqual(straight);
  });

  it('an interval added since the state was saved starts afresh; one taken out is forgotten', () => {
    const a = new ActivityCutter([parseActivityInterval('3t')]);
    for (let i = 0; i < 2; i++) a.push({ s: 'X', t: i, p: '1', v: 1, elig: ALL }, () => undefined);
    const b = new ActivityCutter([parseActivityInterval('2t'), parseActivityInterval('3t')]);
    b.load('X', a.save('X')!);
    const bars: ActivityBar[] = [];
    b.push({ s: 'X', t: 3, p: '1', v: 1, elig: ALL }, (bar) => bars.push(bar));
    expect(bars.map((bar) => [bar.interval, bar.state.trades])).toEqual([['3t', 3]]);
  });
});
