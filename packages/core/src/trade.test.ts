import { describe, expect, it } from 'vitest';
import { decodeTradeEntries, encodeTradeEntry, rawEntries, tradeId, tradeSides, validateTrade, type Trade } from './trade.js';

const ok = { s: 'AAPL', p: 187.25, v: 100, t: 1700000000123, c: ['1', '12'] };

describe('validateTrade', () => {
  it('accepts a Finnhub trade and keeps the price text', () => {
    const v = validateTrade(ok, 5);
    expect(v).toEqual({ ok: true, trade: { s: 'AAPL', p: '187.25', v: 100, t: 1700000000123, c: ['1', '12'], rx: 5 } });
    expect(validateTrade({ ...ok, p: '0.00141342', c: undefined }, 0)).toMatchObject({ ok: true, trade: { p: '0.00141342', c: [] } });
    expect(validateTrade({ ...ok, v: 0 }, 0).ok).toBe(true);
    for (const s of ['BRK.B', 'BINANCE:BTCUSDT', 'OANDA:EUR_USD', 'BTC-USD', '^GSPC', 'FXCM:EUR/USD'])
      expect(validateTrade({ ...ok, s }, 0).ok).toBe(true);
    expect(validateTrade({ ...ok, p: 1e12, v: 1e15 }, 0).ok).toBe(true);
  });

  it.each([
    [null, /not an object/],
    [[1, 2], /not an object/],
    [{ ...ok, s: '' }, /symbol/],
    [{ ...ok, s: 42 }, /symbol/],
    [{ ...ok, s: 'A\u200bB' }, /symbol\) must be 1 to 64 of .*got "A\\u200bB"/], // a zero-width space
    [{ ...ok, s: 'B\u0422C' }, /symbol/], // a Cyrillic T
    [{ ...ok, p: 1e308 }, /p \(price\) must be at most 1000000000000/],
    [{ ...ok, v: '1e308' }, /v \(volume\) must be at most/],
    [{ ...ok, s: undefined }, /symbol/],
    [{ ...ok, p: 0 }, /price/],
    [{ ...ok, p: -1 }, /price/],
    [{ ...ok, p: 'NaN' }, /price/],
    [{ ...ok, p: 'Infinity' }, /price/],
    [{ ...ok, p: null }, /price/],
    [{ ...ok, p: '12abc' }, /price/],
    [{ ...ok, v: -5 }, /volume/],
    [{ ...ok, v: '1e999' }, /volume/],
    [{ ...ok, t: 1700000000123.5 }, /event time/],
    [{ ...ok, t: '1700000000123' }, /event time/],
    [{ ...ok, t: 1234 }, /event time/],
    [{ ...ok, t: 9e15 }, /event time/],
    [{ ...ok, c: 'odd lot' }, /conditions/],
  ])('rejects %j with a reason', (raw, reason) => {
    const v = validateTrade(raw, 0);
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.reason).toMatch(reason);
  });
});

describe('raw stream codec', () => {
  it('decodes what encodeTradeEntry encodes: every trade, its position in the entry, w only where given', () => {
    const a = validateTrade({ ...ok, c: ['Regular', 'tab\there'] }, 77);
    const b = validateTrade({ ...ok, s: 'BINANCE:XRPETH', p: '0.001', v: 0.5, c: [] }, 80);
    if (!a.ok || !b.ok) throw new Error('valid');
    const fields = encodeTradeEntry([a.trade, { ...b.trade, w: 42 }, a.trade]);
    expect(fields.filter((_, i) => i % 2 === 0)).toEqual(['n', 'rx', 'd']);
    expect(decodeTradeEntries('1700000000000-5', fields)).toEqual([
      { id: '1700000000000-5', trade: a.trade, w: 0 },
      { id: '1700000000000-6', trade: b.trade, w: 42 },
      { id: '1700000000000-7', trade: a.trade, w: 0 },
    ]);
    expect(rawEntries('1-0', fields).map((e) => [e.id, e.entry, e.s, e.p, e.v, e.t, e.c, e.rx, e.w])).toEqual([
      ['1-0', '1-0', a.trade.s, a.trade.p, a.trade.v, a.trade.t, '["Regular","tab\\there"]', 77, 0],
      ['1-1', '1-0', 'BINANCE:XRPETH', '0.001', 0.5, b.trade.t, '', 80, 42],
      ['1-2', '1-0', a.trade.s, a.trade.p, a.trade.v, a.trade.t, '["Regular","tab\\there"]', 77, 0],
    ]);
    // a trade with w last, and one alone
    expect(rawEntries('1-0', encodeTradeEntry([a.trade, { ...b.trade, w: 7 }])).map((e) => [e.s, e.c, e.rx, e.w])).toEqual([
      [a.trade.s, '["Regular","tab\\there"]', 77, 0],
      ['BINANCE:XRPETH', '', 80, 7],
    ]);
    expect(rawEntries('1-0', encodeTradeEntry([{ ...b.trade, w: 9 }])).map((e) => [e.s, e.v, e.rx, e.w])).toEqual([
      ['BINANCE:XRPETH', 0.5, 80, 9],
    ]);
    expect(tradeId('1700000000000-5', 2)).toBe('1700000000000-7');
  });

  it('carries ids and sides in fields of their own, aligned with d, only when some trade has them', () => {
    const base = { s: 'BINANCE:XRPETH', p: '0.00141342', v: 23, t: 1570752011620, c: [], rx: 5 };
    const trades: Trade[] = [
      { ...base, i: '13519807', a: 's' },
      { ...base, a: 'b' },
      { ...base, i: '13519809' },
    ];
    const fields = encodeTradeEntry(trades);
    expect(fields.filter((_, i) => i % 2 === 0)).toEqual(['n', 'rx', 'd', 'i', 'a']);
    expect(fields[fields.indexOf('i') + 1]).toBe('13519807\n\n13519809');
    expect(fields[fields.indexOf('a') + 1]).toBe('sb-');
    // d is what it is without them: readers of the numbers see no difference
    const plain = trades.map(({ i: _i, a: _a, ...rest }) => rest);
    expect(fields.slice(0, 6)).toEqual(encodeTradeEntry(plain));
    expect(decodeTradeEntries('9-0', fields).map((e) => e.trade)).toEqual(trades);
    const decoded = decodeTradeEntries('9-0', fields).map((e) => e.trade);
    expect(['i' in decoded[1]!, 'a' in decoded[2]!]).toEqual([false, false]);
    // ids without sides, and neither
    expect(encodeTradeEntry([{ ...base, i: '1' }]).filter((_, i) => i % 2 === 0)).toEqual(['n', 'rx', 'd', 'i']);
    expect(encodeTradeEntry(plain).filter((_, i) => i % 2 === 0)).toEqual(['n', 'rx', 'd']);
    expect(tradeSides(plain)).toBe('');
  });
});

describe("a feed's trade id and aggressor side", () => {
  const base = { s: 'BINANCE:XRPETH', p: '0.00141342', v: 23, t: 1570752011620 };
  it('are kept when given (an id as a whole number or text), absent when not', () => {
    const a = validateTrade({ ...base, i: 13519807, a: 's' }, 1);
    expect(a.ok && a.trade.i).toBe('13519807');
    expect(a.ok && a.trade.a).toBe('s');
    const b = validateTrade({ ...base, i: 'ABC-42' }, 1);
    expect(b.ok && b.trade.i).toBe('ABC-42');
    expect(b.ok && b.trade.a).toBeUndefined();
    const c = validateTrade(base, 1);
    expect(c.ok && c.trade.i).toBeUndefined();
  });
  it('refuse a trade whose id or side is malformed, saying which field', () => {
    expect(validateTrade({ ...base, i: 'two words' }, 1)).toMatchObject({ ok: false, reason: expect.stringMatching(/^i \(trade id\)/) });
    expect(validateTrade({ ...base, i: -1 }, 1)).toMatchObject({ ok: false, reason: expect.stringMatching(/^i \(trade id\)/) });
    expect(validateTrade({ ...base, a: 'buy' }, 1)).toMatchObject({ ok: false, reason: expect.stringMatching(/^a \(aggressor side\)/) });
  });
});
