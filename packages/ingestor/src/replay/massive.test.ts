import { describe, expect, it } from 'vitest';
import { CONDITION_TABLE, LEAN_CONDITION_BITS } from '@candlewick/core';
import { MASSIVE_CONDITION_IDS, massiveConditions } from './massive.js';

describe('Massive replay encoding', () => {
  it("writes a tape's condition names as Massive's condition ids, each once; a name without an id is left out", () => {
    expect(massiveConditions(['IntermarketSweep', 'TradeThroughExempt'])).toEqual([14, 41]);
    expect(massiveConditions(['FormT', 'ExtendedHours', 'OddLot'])).toEqual([12, 37]);
    expect(massiveConditions(['Suspicious'])).toEqual([]);
    expect(massiveConditions([])).toEqual([]);
  });

  it('names only conditions candlewick knows, and covers every Lean condition that has a Massive id', () => {
    for (const name of Object.keys(MASSIVE_CONDITION_IDS)) expect(CONDITION_TABLE, name).toHaveProperty(name);
    const leanWithout = LEAN_CONDITION_BITS.filter((n) => !(n in MASSIVE_CONDITION_IDS));
    expect(leanWithout).not.toContain('IntermarketSweep');
    expect(leanWithout).not.toContain('OpeningPrints');
  });
});
