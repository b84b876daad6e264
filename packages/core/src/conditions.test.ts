import { describe, expect, it } from 'vitest';
import {
  ALL,
  CONDITION_TABLE,
  ConditionCodesError,
  ConditionRules,
  HIGH_LOW,
  LEAN_CONDITION_BITS,
  VOLUME,
  leanConditions,
  parseConditionCodes,
} from './conditions.js';
import { NO_OPEN_KEY, mergeInto, orderKey, type BarState } from './bar.js';

describe('the condition table', () => {
  const rules = new ConditionRules();
  it('gives each kind of print its fields', () => {
    expect(rules.eligibility('[]')).toBe(ALL);
    expect(rules.eligibility('["Regular"]')).toBe(ALL);
    expect(rules.eligibility('["FormT"]')).toBe(ALL);
    expect(rules.eligibility('["OddLot"]')).toBe(VOLUME);
    expect(rules.eligibility('["AveragePrice"]')).toBe(VOLUME);
    expect(rules.eligibility('["OutOfSequence"]')).toBe(HIGH_LOW | VOLUME);
    expect(rules.eligibility('["OfficialClose"]')).toBe(0);
  });

  it('lets a trade set a field only if every one of its conditions allows it', () => {
    expect(rules.eligibility('["IntermarketSweep","OutOfSequence"]')).toBe(HIGH_LOW | VOLUME);
    expect(rules.eligibility('["OutOfSequence","OddLot"]')).toBe(VOLUME);
    expect(rules.eligibility('["OddLot","OfficialOpen"]')).toBe(0);
  });

  it('matches names without regard to case', () => {
    expect(rules.eligibility('["oddlot"]')).toBe(VOLUME);
  });

  it('counts codes it does not know, treats them as regular, and reports each use', () => {
    const r = new ConditionRules();
    expect(r.eligibility('["99"]')).toBe(ALL);
    expect(r.eligibility('["99","OddLot"]')).toBe(VOLUME);
    expect(r.eligibility('["99"]')).toBe(ALL);
    expect(r.takeUnknown()).toEqual(new Map([['99', 3]]));
    expect(r.takeUnknown().size).toBe(0);
  });

  it('maps a feed’s codes through CONDITION_CODES', () => {
    const codes = parseConditionCodes('{"12": "FormT", "37": "OddLot", "52": ["Contingent"]}', 'codes.json');
    const r = new ConditionRules(codes);
    expect(r.eligibility('["12"]')).toBe(ALL);
    expect(r.eligibility('["12","37"]')).toBe(VOLUME);
    expect(r.eligibility('["52"]')).toBe(VOLUME);
    expect(r.takeUnknown().size).toBe(0);
  });

  it('rejects a CONDITION_CODES file that names a condition the table does not have, saying which', () => {
    expect(() => parseConditionCodes('{"12": "FormTee"}', 'codes.json')).toThrow(
      /codes.json: code "12": unknown condition "FormTee"\. Known conditions: Regular/,
    );
    expect(() => parseConditionCodes('{"12": 5}', 'codes.json')).toThrow(ConditionCodesError);
    expect(() => parseConditionCodes('[1]', 'codes.json')).toThrow(/expected a JSON object/);
    expect(() => parseConditionCodes('{', 'codes.json')).toThrow(/not JSON/);
  });

  it('decodes every bit of a Lean sale-condition word to a condition the table has', () => {
    expect(LEAN_CONDITION_BITS).toHaveLength(32);
    for (const name of LEAN_CONDITION_BITS) expect(CONDITION_TABLE[name]).toBeTypeOf('number');
    expect(leanConditions('00000001')).toEqual(['Regular']);
    expect(leanConditions('20000020')).toEqual(['IntermarketSweep', 'TradeThroughExempt']);
    expect(leanConditions('80000000')).toEqual(['OddLot']);
    expect(leanConditions('01000000')).toEqual(['OfficialClose']);
  });
});

describe('merging partials whose trades may not set every field', () => {
  const key = (t: number) => orderKey(t, `1-${t}`);
  const full = (t: number, p: string, v: number): BarState => ({
    open: p,
    openKey: key(t),
    high: p,
    low: p,
    close: p,
    closeKey: key(t),
    volume: BigInt(v),
    pv: BigInt(+p * v),
    trades: 1,
  });
  const volumeOnly = (v: number, p: number): BarState => ({
    open: '',
    openKey: NO_OPEN_KEY,
    high: '',
    low: '',
    close: '',
    closeKey: '',
    volume: BigInt(v),
    pv: BigInt(p * v),
    trades: 1,
  });

  it('a volume-only partial adds volume and never a price, in either order', () => {
    const a = mergeInto(volumeOnly(50, 9), full(5, '10', 100));
    const b = mergeInto(full(5, '10', 100), volumeOnly(50, 9));
    for (const m of [a, b])
      expect(m).toEqual({
        open: '10',
        openKey: key(5),
        high: '10',
        low: '10',
        close: '10',
        closeKey: key(5),
        volume: 150n,
        pv: 1450n,
        trades: 2,
      });
  });

  it('a partial with extremes but no open/close moves high and low only', () => {
    const noLast: BarState = {
      open: '',
      openKey: NO_OPEN_KEY,
      high: '12',
      low: '8',
      close: '',
      closeKey: '',
      volume: 1n,
      pv: 12n,
      trades: 1,
    };
    expect(mergeInto(full(5, '10', 1), noLast)).toMatchObject({ open: '10', close: '10', high: '12', low: '8', trades: 2 });
  });

  it('two volume-only partials stay without prices', () => {
    expect(mergeInto(volumeOnly(1, 2), volumeOnly(3, 4))).toMatchObject({ open: '', high: '', low: '', close: '', volume: 4n });
  });
});
