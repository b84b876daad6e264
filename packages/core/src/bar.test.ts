import { describe, expect, it } from 'vitest';
import { barFromTrade, decodeBarState, encodeBarState, formatNumber, mergeInto, orderKey, parseBarId, barId, vwap } from './bar.js';
import { toScaled, volumeNumber } from './decimal.js';

describe('orderKey', () => {
  it('orders by event time first, then by stream id (ms, then sequence)', () => {
    const keys = [
      orderKey(1000, '1700000000000-5'),
      orderKey(999, '1700000000009-0'),
      orderKey(1000, '1700000000000-10'),
      orderKey(1000, '1699999999999-99'),
    ];
    expect([...keys].sort()).toEqual([keys[1], keys[3], keys[0], keys[2]]);
  });
});

describe('mergeInto', () => {
  const tr = (p: string, v: number, t: number, id: string) => barFromTrade(p, v, orderKey(t, id));

  it('takes open from the smallest (t, id), close from the largest, extremes, sums', () => {
    const a = tr('10', 1, 2000, '5-0');
    mergeInto(a, tr('12', 2, 1000, '9-0')); // earlier event time, later arrival: becomes the open
    mergeInto(a, tr('9', 3, 3000, '7-0'));
    mergeInto(a, tr('11', 4, 3000, '8-0')); // same ms as previous, later stream id: becomes the close
    expect(a.open).toBe('12');
    expect(a.close).toBe('11');
    expect(a.high).toBe('12');
    expect(a.low).toBe('9');
    expect(volumeNumber(a.volume)).toBe(10);
    expect(a.volume).toBe(10n * 10n ** 10n);
    expect(a.trades).toBe(4);
    expect(vwap(a)).toBeCloseTo((10 + 24 + 27 + 44) / 10, 12);
  });

  it('is order-independent', () => {
    const trades = [tr('1.5', 2, 10, '1-0'), tr('1.25', 1, 10, '1-1'), tr('2', 5, 5, '2-0'), tr('0.5', 1, 20, '3-0')];
    const fwd = trades.slice(1).reduce((a, b) => mergeInto(a, b), { ...trades[0]! });
    const rev = [...trades].reverse();
    const back = rev.slice(1).reduce((a, b) => mergeInto(a, b), { ...rev[0]! });
    expect(back).toEqual(fwd);
  });

  it('compares prices as numbers, not text', () => {
    const a = tr('9.5', 1, 1, '1-0');
    mergeInto(a, tr('10.25', 1, 2, '2-0'));
    expect(a.high).toBe('10.25');
    expect(a.low).toBe('9.5');
  });
});

describe('exact sums', () => {
  const tr = (p: string, v: number, t: number, id: string) => barFromTrade(p, v, orderKey(t, id));
  it('add up to the same bits in any order (no float rounding)', () => {
    const vols = [0.1, 0.2, 0.3, 1e-7, 123456.789, 23, 0.00141342];
    const prices = ['0.1', '48.97', '0.00141342', '3e-7', '182.15'];
    const bars = vols.map((v, i) => tr(prices[i % prices.length]!, v, i, `${i}-0`));
    const fwd = bars.slice(1).reduce((a, b) => mergeInto(a, b), { ...bars[0]! });
    const rev = [...bars].reverse();
    const back = rev.slice(1).reduce((a, b) => mergeInto(a, b), { ...rev[0]! });
    expect(back.volume).toBe(fwd.volume);
    expect(back.pv).toBe(fwd.pv);
    expect(volumeNumber(tr('1', 0.1, 0, '0-0').volume + tr('1', 0.2, 0, '0-1').volume)).toBe(0.3);
  });

  it('read decimals and exponent notation exactly', () => {
    expect(toScaled('48.97', 2)).toBe(4897n);
    expect(toScaled(1e-7, 10)).toBe(1000n);
    expect(toScaled('1.5e3', 0)).toBe(1500n);
    expect(toScaled('0.125', 2)).toBe(13n); // half up beyond the kept digits
    expect(() => toScaled('abc', 2)).toThrow(/not a decimal/);
  });
});

describe('encoding', () => {
  it('round-trips bar state and bar ids (symbols may contain ":")', () => {
    const b = barFromTrade('0.00141342', 23, orderKey(1570752011620, '1-0'));
    expect(decodeBarState(encodeBarState(b))).toEqual(b);
    expect(parseBarId(barId('5min', 'BINANCE:XRPETH', 1570752000000))).toEqual({
      interval: '5min',
      symbol: 'BINANCE:XRPETH',
      start: 1570752000000,
    });
    expect(() => decodeBarState('1|2|3')).toThrow(/corrupt/);
  });
});

describe('formatNumber', () => {
  it('prints float sums the way people expect, without exponents', () => {
    expect(formatNumber(0.1 + 0.2)).toBe('0.3');
    expect(formatNumber(1482)).toBe('1482');
    expect(formatNumber(0.00000012345)).toBe('0.00000012345');
    expect(formatNumber(0)).toBe('0');
    expect(formatNumber(NaN)).toBe('');
  });
});
