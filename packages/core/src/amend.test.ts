import { describe, expect, it } from 'vitest';
import { alpacaAmend, applyAmends, type IdentifiedTrade, type TradeAmend } from './amend.js';
import type { RawEntry } from './trade.js';

const T = '2021-02-22T15:51:44.208123999Z';
const T_MS = Date.UTC(2021, 1, 22, 15, 51, 44, 208);

describe('alpacaAmend', () => {
  it('reads a cancel and a correction: ids with their exchange, the time cut to the ms, the corrected trade as the raw stream keeps one', () => {
    expect(alpacaAmend({ T: 'x', S: 'AAPL', i: 52983525033527, x: 'N', p: 126.5, s: 100, a: 'C', z: 'A', t: T })).toEqual({
      kind: 'cancel',
      s: 'AAPL',
      id: 'N:52983525033527',
      t: T_MS,
    });
    expect(
      alpacaAmend({
        T: 'c',
        S: 'AAPL',
        x: 'D',
        oi: 7,
        op: 126.5,
        os: 100,
        oc: ['@'],
        ci: 8,
        cp: 126.55,
        cs: 200,
        cc: ['@', 'I'],
        z: 'C',
        t: T,
      }),
    ).toEqual({ kind: 'correction', s: 'AAPL', id: 'D:7', t: T_MS, p: '126.55', v: 200, c: '["@","I"]', ni: 'D:8' });
    // no exchange: the id alone, as the trade itself was carried; no conditions: none
    expect(alpacaAmend({ T: 'c', S: 'AAPL', oi: 7, ci: 8, cp: 1, cs: 0, t: T })).toMatchObject({ id: '7', ni: '8', c: '' });
  });

  it('says what is wrong with one it cannot read', () => {
    expect(alpacaAmend(null)).toBe('not an object');
    expect(alpacaAmend({ T: 'x', i: 1, t: T })).toBe('S (symbol) missing');
    expect(alpacaAmend({ T: 'x', S: 'A', i: 1, t: 'yesterday' })).toMatch(/^t \(the trade's time\) is not an RFC-3339 time/);
    expect(alpacaAmend({ T: 'x', S: 'A', i: -1, t: T })).toMatch(/^i \(the cancelled trade's id\) is not a whole number/);
    expect(alpacaAmend({ T: 'c', S: 'A', oi: 1, ci: 2, cp: 0, cs: 1, t: T })).toMatch(/^cp \(corrected price\) must be a number > 0/);
    expect(alpacaAmend({ T: 'c', S: 'A', oi: 1, ci: 2, cp: 1, cs: -1, t: T })).toMatch(/^cs \(corrected size\)/);
    expect(alpacaAmend({ T: 'c', S: 'A', oi: 1, ci: 2, cp: 1, cs: 1, cc: 'F', t: T })).toMatch(/^cc \(corrected conditions\)/);
    expect(alpacaAmend({ T: 'q', S: 'A', t: T })).toMatch(/^T is neither/);
  });
});

describe('applyAmends', () => {
  const trade = (k: number, s = 'AAPL'): IdentifiedTrade => ({
    entry: { id: `100-${k}`, entry: '100-0', s, p: String(10 + k), v: k + 1, t: 1000 + k, w: 0, c: '', rx: 0 } satisfies RawEntry,
    i: `V:${k}`,
  });
  const trades = [0, 1, 2, 3].map((k) => trade(k));
  const cancel = (id: string, s = 'AAPL'): TradeAmend => ({ kind: 'cancel', s, id, t: 0 });
  const correct = (id: string, ni: string, p: string): TradeAmend => ({
    kind: 'correction',
    s: 'AAPL',
    id,
    t: 0,
    p,
    v: 50,
    c: '["@"]',
    ni,
  });

  it('a cancel leaves its trade out; a correction puts the corrected trade in its place (time, stream position kept)', () => {
    const { trades: out, found } = applyAmends(trades, [cancel('V:1'), correct('V:2', 'V:9', '99.5')]);
    expect(found).toEqual([true, true]);
    expect(out.map((e) => [e.id, e.p, e.v, e.t, e.c])).toEqual([
      ['100-0', '10', 1, 1000, ''],
      ['100-2', '99.5', 50, 1002, '["@"]'],
      ['100-3', '13', 4, 1003, ''],
    ]);
  });

  it('amends apply in order, a later one naming the corrected id; the same amend twice changes nothing more', () => {
    const chain = [correct('V:2', 'V:9', '99.5'), correct('V:9', 'V:10', '98'), cancel('V:10')];
    const once = applyAmends(trades, chain);
    expect(once.found).toEqual([true, true, true]);
    expect(once.trades.map((e) => e.id)).toEqual(['100-0', '100-1', '100-3']);
    const twice = applyAmends(trades, [...chain, ...chain]);
    expect(twice.trades).toEqual(once.trades);
    expect(twice.found).toEqual([true, true, true, false, false, false]);
  });

  it('an id of another symbol, or one not among the trades, finds nothing', () => {
    const { trades: out, found } = applyAmends([...trades, trade(1, 'MSFT')], [cancel('V:1', 'MSFT'), cancel('V:77')]);
    expect(found).toEqual([true, false]);
    expect(out.map((e) => `${e.s}:${e.id}`)).toEqual(['AAPL:100-0', 'AAPL:100-1', 'AAPL:100-2', 'AAPL:100-3']);
  });
});
