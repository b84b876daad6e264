import { describe, expect, it } from 'vitest';
import { decodeTradeEntry, tradeArgs, validateTrade } from './trade.js';

const ok = { s: 'AAPL', p: 187.25, v: 100, t: 1700000000123, c: ['1', '12'] };

describe('validateTrade', () => {
  it('accepts a Finnhub trade and keeps the price text', () => {
    const v = validateTrade(ok, 5);
    expect(v).toEqual({ ok: true, trade: { s: 'AAPL', p: '187.25', v: 100, t: 1700000000123, c: ['1', '12'], rx: 5 } });
    expect(validateTrade({ ...ok, p: '0.00141342', c: undefined }, 0)).toMatchObject({ ok: true, trade: { p: '0.00141342', c: [] } });
    expect(validateTrade({ ...ok, v: 0 }, 0).ok).toBe(true);
  });

  it.each([
    [null, /not an object/],
    [[1, 2], /not an object/],
    [{ ...ok, s: '' }, /symbol/],
    [{ ...ok, s: 42 }, /symbol/],
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

describe('stream codec', () => {
  it('decodes what tradeArgs encodes', () => {
    const v = validateTrade(ok, 77);
    if (!v.ok) throw new Error('valid');
    const a = tradeArgs(v.trade);
    const fields = ['s', a[0]!, 'p', a[1]!, 'v', a[2]!, 't', a[3]!, 'c', a[4]!, 'rx', a[5]!, 'w', '42'];
    expect(decodeTradeEntry('1-0', fields)).toEqual({ id: '1-0', trade: v.trade, w: 42 });
  });
});
