import { describe, expect, it } from 'vitest';
import { binanceSymbol, decimal8 } from './binance.js';

describe('Binance replay encoding', () => {
  it("writes prices and quantities with 8 decimals from the tape's text, exponent forms included, never rounding", () => {
    expect(decimal8('0.00141342')).toBe('0.00141342');
    expect(decimal8('0.0014')).toBe('0.00140000');
    expect(decimal8('167')).toBe('167.00000000');
    expect(decimal8(23)).toBe('23.00000000');
    expect(decimal8(1e-7)).toBe('0.00000010');
    expect(decimal8(1.5e-10)).toBe('0.00000000015');
    expect(decimal8(2e21)).toBe('2000000000000000000000.00000000');
    expect(decimal8('0.123456789')).toBe('0.123456789');
  });

  it('names a tape symbol as Binance does: BINANCE:XRPETH and xrpeth are XRPETH; anything else has no stream', () => {
    expect(binanceSymbol('BINANCE:XRPETH')).toBe('XRPETH');
    expect(binanceSymbol('xrpeth')).toBe('XRPETH');
    expect(binanceSymbol('OANDA:EUR_USD')).toBeUndefined();
    expect(binanceSymbol('BRK.B')).toBeUndefined();
  });
});
