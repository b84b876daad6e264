import { describe, expect, it } from 'vitest';
import { readTapeTrades } from '@candlewick/common';
import { ActivityCutter, parseActivityInterval } from '@candlewick/core';
import { referenceBars, type RefBar, type RefTrade } from './activity-reference.js';
import { BUNDLED_TAPE, LEAN_AIG_TAPE } from './helpers.js';

/**
 * The production activity-bar cutter against a reference written from docs/activity-bars.md
 * alone (test/activity-reference.ts): the page's worked example, then every kind of name on the
 * bundled Binance tape and the Lean AIG day, bar by bar and field by field.
 *
 * Price updates (v = 0), which the tapes do not have, are compared on a small made-up tape.
 */

/** A tape's trades in event order: by time, the tape's order breaking ties. */
function eventOrder(spec: string): RefTrade[] {
  return readTapeTrades(spec)
    .map((x, i) => ({ x, i }))
    .sort((a, b) => a.x.t - b.x.t || a.i - b.i)
    .map(({ x }) => ({ s: x.s, t: x.t, p: x.p, v: x.v }));
}

/** What the production cutter closes, per interval name, as the reference's bars. */
function production(trades: readonly RefTrade[], names: readonly string[]): Map<string, RefBar[]> {
  const out = new Map<string, RefBar[]>(names.map((n) => [n, []]));
  const cutter = new ActivityCutter(names.map((n) => parseActivityInterval(n)));
  for (const tr of trades)
    cutter.push({ s: tr.s, t: tr.t, p: tr.p, v: tr.v, elig: 7, side: tr.a }, (e) => {
      out.get(e.interval)!.push({
        symbol: e.symbol,
        seq: e.seq,
        start: e.start,
        end: e.end,
        open: e.state.open,
        high: e.state.high,
        low: e.state.low,
        close: e.state.close,
        volume: e.state.volume,
        vwapNumerator: e.state.pv,
        trades: e.state.trades,
      });
    });
  return out;
}

/** The first bar where the two differ (by position), with both sides, or undefined. */
function firstDifference(got: readonly RefBar[], want: readonly RefBar[]): { index: number; got?: RefBar; want?: RefBar } | undefined {
  const fields = Object.keys(want[0] ?? got[0] ?? {}) as (keyof RefBar)[];
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    const g = got[i];
    const w = want[i];
    if (!g || !w || fields.some((f) => g[f] !== w[f])) return { index: i, got: g, want: w };
  }
  return undefined;
}

describe("the page's worked example: t-imb-e3-w3-k3 on prices 10, 11, 11, 10, 12, 13, 13", () => {
  const trades: RefTrade[] = [10, 11, 11, 10, 12, 13, 13].map((p, i) => ({ s: 'X', t: 1_000 + i, p: String(p), v: 1 }));
  const want: RefBar = {
    symbol: 'X',
    seq: 1,
    start: 1_000,
    end: 1_002,
    open: '10',
    high: '11',
    low: '10',
    close: '11',
    volume: 3n * 10n ** 10n,
    vwapNumerator: 32n * 10n ** 22n,
    trades: 3,
  };

  it('the reference closes bar 1 on trade 3 and nothing else', () => {
    expect(referenceBars(trades, 't-imb-e3-w3-k3')).toEqual([want]);
    // bar 2 (θ = 2 after trade 7, threshold 3) closes on one more buy at the same price
    const more = [...trades, { s: 'X', t: 1_007, p: '13', v: 1 }];
    expect(referenceBars(more, 't-imb-e3-w3-k3').map((b) => [b.seq, b.start, b.end, b.trades])).toEqual([
      [1, 1_000, 1_002, 3],
      [2, 1_003, 1_007, 5],
    ]);
  });

  it('the production cutter closes bar 1 on trade 3 and nothing else', () => {
    expect(production(trades, ['t-imb-e3-w3-k3']).get('t-imb-e3-w3-k3')).toEqual([want]);
    const more = [...trades, { s: 'X', t: 1_007, p: '13', v: 1 }];
    expect(production(more, ['t-imb-e3-w3-k3']).get('t-imb-e3-w3-k3')).toEqual(referenceBars(more, 't-imb-e3-w3-k3'));
  });
});

/** The EWMA runs forms both tapes are cut with. */
const RUNS_EWMA = [
  't-run-e100',
  't-run-e50-w5-k10-min5-max200',
  'v-run-e100',
  'v-run-e100-w20-k50-min10-max1000',
  'val-run-e100',
  'val-run-e50-w5-k10-min5-max200',
];

/**
 * Names of every kind, sized for each tape so that each closes a few dozen bars or more. The XRP
 * tape's sizes are XRP (tens to thousands a trade, 5.5 million in all) and its values ETH (8,183 in
 * all); the AIG day's sizes are shares (11.4 million) and its values dollars (560 million).
 */
const TAPES: { name: string; spec: string; intervals: string[] }[] = [
  {
    name: 'Binance XRPETH 2019-10-11',
    spec: BUNDLED_TAPE,
    intervals: [
      '100t',
      '50000v',
      '33333.3v',
      '50val',
      '12.345678val',
      '30t-imb',
      '30000v-imb',
      '30val-imb',
      '100t-run',
      '100000v-run',
      '100val-run',
      't-imb-e100',
      't-imb-e20-k10-min10-max40',
      't-imb-e10-w3-k50-min2-max20',
      'v-imb-e100-k200-min50-max150',
      'v-imb-e30-w10-k100-min20-max60',
      'val-imb-e100-k200-min50-max150',
      'val-imb-e20-k10-min10-max40',
      ...RUNS_EWMA,
    ],
  },
  {
    name: 'Lean AIG 2013-10-10',
    spec: LEAN_AIG_TAPE,
    intervals: [
      '500t',
      '100000v',
      '5000000val',
      '50t-imb',
      '20000v-imb',
      '1000000val-imb',
      '300t-run',
      '100000v-run',
      '5000000val-run',
      't-imb-e20-w5-k20-min10-max100',
      't-imb-e50-k50-min20-max200',
      't-imb-e10-w3-k50-min2-max20',
      'v-imb-e100-k200-min50-max150',
      'v-imb-e30-w10-k100-min20-max60',
      'val-imb-e100-k200-min50-max150',
      'val-imb-e50-k50-min20-max200',
      ...RUNS_EWMA,
    ],
  },
];

const MIN_BARS = 10;

for (const tape of TAPES) {
  describe(`every kind on ${tape.name}`, () => {
    const trades = eventOrder(tape.spec);
    const symbols = [...new Set(trades.map((t) => t.s))];
    // one cutter for all the names, as `bars` runs them
    const prod = production(trades, tape.intervals);

    it.each(tape.intervals)('%s: the production bars are the reference bars', (name) => {
      for (const s of symbols) {
        const mine = trades.filter((t) => t.s === s);
        const want = referenceBars(mine, name);
        const got = prod.get(name)!.filter((b) => b.symbol === s);
        expect(firstDifference(got, want), `${s} ${name}: first differing bar`).toBeUndefined();
        expect(got.length).toBe(want.length);
        expect(want.length, `${s} ${name}: bars closed`).toBeGreaterThan(MIN_BARS);
        // bars follow each other: numbered 1, 2, 3..., each starting where the previous ended or later
        want.forEach((b, i) => {
          expect(b.seq).toBe(i + 1);
          if (i > 0) expect(b.start).toBeGreaterThanOrEqual(want[i - 1]!.end);
        });
        // every trade but the unfinished bar's is in exactly one bar
        const inBars = want.reduce((n, b) => n + b.trades, 0);
        expect(inBars).toBeLessThanOrEqual(mine.length);
        expect(inBars).toBeGreaterThan(mine.length / 2);
      }
    });
  });
}

describe('symbols keep their own state', () => {
  it("the two tapes interleaved in time give each symbol's bars as its tape alone does", () => {
    const xrp = eventOrder(BUNDLED_TAPE);
    const aig = eventOrder(LEAN_AIG_TAPE);
    // the AIG day moved onto the XRP day, both then merged by time (XRP first on a tie)
    const shift = xrp[0]!.t - aig[0]!.t;
    const moved = aig.map((t) => ({ ...t, t: t.t + shift }));
    const merged = [...xrp, ...moved].map((x, i) => ({ x, i })).sort((a, b) => a.x.t - b.x.t || a.i - b.i);
    expect(new Set(merged.slice(0, 2_000).map(({ x }) => x.s)).size).toBe(2);
    const names = ['100t', 't-imb-e20-k10-min10-max40', 'v-run-e100-w20-k50-min10-max1000', '30t-imb'];
    const prod = production(
      merged.map(({ x }) => x),
      names,
    );
    for (const name of names)
      for (const [symbol, alone] of [
        ['BINANCE:XRPETH', xrp],
        ['AIG', moved],
      ] as const) {
        const want = referenceBars(alone, name);
        expect(want.length).toBeGreaterThan(MIN_BARS);
        expect(
          firstDifference(
            prod.get(name)!.filter((b) => b.symbol === symbol),
            want,
          ),
          `${symbol} ${name}`,
        ).toBeUndefined();
      }
  });
});

describe('price updates (v = 0), which the tapes have none of', () => {
  it('set prices, are no sale for the tick rule and add to no measure, in both', () => {
    // 10 (a buy, first), a price update at 12, 11: above the last sale (10), so a buy, not a sell
    const trades: RefTrade[] = [
      { s: 'X', t: 1, p: '10', v: 1 },
      { s: 'X', t: 2, p: '12', v: 0 },
      { s: 'X', t: 3, p: '11', v: 1 },
      { s: 'X', t: 4, p: '9', v: 0 },
      { s: 'X', t: 5, p: '9.5', v: 2 },
      { s: 'X', t: 6, p: '9.75', v: 1 },
    ];
    for (const name of ['2t-imb', '2t', '3v', 't-imb-e2-k2', 'v-run-e2-k2']) {
      const want = referenceBars(trades, name);
      expect(want.length, name).toBeGreaterThan(0);
      expect(firstDifference(production(trades, [name]).get(name)!, want), name).toBeUndefined();
    }
    const [bar] = referenceBars(trades, '2t-imb');
    expect([bar!.trades, bar!.high, bar!.close]).toEqual([2, '12', '11']);
  });
});

describe("the feed's aggressor sides (Binance's, in the bundled tape) instead of the tick rule", () => {
  const trades = readTapeTrades(BUNDLED_TAPE)
    .map((x, i) => ({ x, i }))
    .sort((a, b) => a.x.t - b.x.t || a.i - b.i)
    .map(({ x }) => ({ s: x.s, t: x.t, p: x.p, v: x.v, a: x.a }));
  it("every imbalance and runs kind: the production bars are the reference bars, and not the tick rule's", () => {
    expect(trades.every((t) => t.a === 'b' || t.a === 's')).toBe(true);
    const names = ['30t-imb', '30000v-imb', '100t-run', 't-imb-e100', 'v-run-e100', 'val-imb-e100-k200-min50-max150'];
    // (the feed's sides go to the cutter as it gets them from the raw stream)
    const out = production(trades, names);
    let differs = 0;
    for (const name of names) {
      const want = referenceBars(trades, name);
      expect(want.length, name).toBeGreaterThan(10);
      expect(firstDifference(out.get(name)!, want), name).toBeUndefined();
      const tick = referenceBars(
        trades.map(({ a: _a, ...t }) => t),
        name,
      );
      if (firstDifference(tick, want) !== undefined) differs++;
    }
    expect(differs).toBe(names.length);
  });
});
