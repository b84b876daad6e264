import { describe, expect, it } from 'vitest';
import { ALPACA_CONDITION_LETTERS, CONDITION_TABLE, LEAN_CONDITION_BITS, alpacaConditions, alpacaTime, rfc3339Ms } from '@candlewick/core';

describe('Alpaca replay encoding', () => {
  it("writes a tape's condition names as the SIP's letters, each once; a name without one is left out", () => {
    expect(alpacaConditions(['IntermarketSweep', 'TradeThroughExempt'])).toEqual(['F', '8']);
    expect(alpacaConditions(['FormT', 'ExtendedHours', 'OddLot'])).toEqual(['T', 'I']);
    expect(alpacaConditions(['Regular'])).toEqual(['@']);
    expect(alpacaConditions(['Suspicious'])).toEqual([]);
  });

  it('names only conditions candlewick knows, and covers the Lean conditions of the bundled day', () => {
    for (const name of Object.keys(ALPACA_CONDITION_LETTERS)) expect(CONDITION_TABLE, name).toHaveProperty(name);
    const leanWithout = LEAN_CONDITION_BITS.filter((n) => !(n in ALPACA_CONDITION_LETTERS));
    for (const name of ['Regular', 'IntermarketSweep', 'ExtendedHours', 'OpeningPrints', 'ClosingPrints', 'AveragePrice'])
      expect(leanWithout).not.toContain(name);
  });

  it('writes times as RFC-3339 with nanoseconds that the adapter cuts back to the same millisecond', () => {
    const ms = Date.UTC(2013, 9, 10, 13, 30, 0, 995);
    expect(alpacaTime(ms, 999_999)).toBe('2013-10-10T13:30:00.995999999Z');
    expect(alpacaTime(ms, 7)).toBe('2013-10-10T13:30:00.995000007Z');
    for (const sub of [0, 1, 500_000, 999_999]) expect(rfc3339Ms(alpacaTime(ms, sub))).toBe(ms);
  });
});
