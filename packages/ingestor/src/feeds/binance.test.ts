import { describe, expect, it } from 'vitest';
import { binanceSymbol, validateTrade } from '@candlewick/core';
import { binanceProtocol, shortDecimal } from './binance.js';

const agg = (extra: Record<string, unknown> = {}) => ({
  e: 'aggTrade',
  E: 1570752011700,
  s: 'XRPETH',
  a: 13519807,
  p: '0.00141300',
  q: '23.00000000',
  f: 15373518,
  l: 15373518,
  T: 1570752011620,
  m: true,
  M: true,
  ...extra,
});

describe('the Binance protocol', () => {
  const proto = binanceProtocol({ url: 'ws://x/stream', stream: 'aggTrade', symbols: ['BINANCE:XRPETH', 'ethbtc'] });

  it('reads a combined-stream aggTrade as a raw trade of the configured symbol, with its id and aggressor side', () => {
    const f = proto.readFrame(JSON.stringify({ stream: 'xrpeth@aggTrade', data: agg() }));
    expect(f.kind).toBe('trade');
    const raw = (f as { data: unknown[] }).data[0];
    const v = validateTrade(raw, 5);
    expect(v).toEqual({
      ok: true,
      trade: { s: 'BINANCE:XRPETH', p: '0.001413', v: 23, t: 1570752011620, c: [], rx: 5, i: '13519807', a: 's' },
    });
    // a raw stream (/ws) sends the event bare; the buyer as taker is a buy
    const bare = proto.readFrame(JSON.stringify(agg({ s: 'ETHBTC', m: false })));
    expect(validateTrade((bare as { data: unknown[] }).data[0], 5)).toMatchObject({ ok: true, trade: { s: 'ethbtc', a: 'b' } });
  });

  it('reads trade events with their id t under BINANCE_STREAM=trade, and ignores the other kind', () => {
    const trades = binanceProtocol({ url: 'ws://x/stream', stream: 'trade', symbols: ['XRPETH'] });
    const t = { e: 'trade', E: 1, s: 'XRPETH', t: 15373518, p: '0.00141342', q: '1.5', T: 1570752011620, m: false, M: true };
    const f = trades.readFrame(JSON.stringify({ stream: 'xrpeth@trade', data: t }));
    expect(validateTrade((f as { data: unknown[] }).data[0], 0)).toMatchObject({
      ok: true,
      trade: { i: '15373518', p: '0.00141342', v: 1.5 },
    });
    expect(trades.readFrame(JSON.stringify({ stream: 'xrpeth@aggTrade', data: agg() }))).toEqual({ kind: 'unknown', type: 'aggTrade' });
  });

  it('acknowledgements, errors with what to do, a shutdown notice, and what is not JSON', () => {
    expect(proto.readFrame('{"result":null,"id":1}')).toEqual({ kind: 'ack' });
    expect(proto.readFrame('{"code":2,"msg":"Invalid request: too many parameters"}')).toEqual({
      kind: 'error',
      msg: 'code 2: Invalid request: too many parameters',
      hint: expect.stringMatching(/SYMBOLS/),
    });
    expect(proto.readFrame('{"error":{"code":3,"msg":"Invalid JSON"},"id":4}')).toMatchObject({
      kind: 'error',
      msg: 'code 3: Invalid JSON',
    });
    expect(proto.readFrame('{"e":"serverShutdown","E":1}')).toEqual({ kind: 'ack' });
    expect(proto.readFrame('{')).toEqual({ kind: 'not-json' });
  });

  it('a malformed trade is handed on as it came, for validation to refuse with its reason', () => {
    const f = proto.readFrame(JSON.stringify(agg({ p: '-1' })));
    expect(validateTrade((f as { data: unknown[] }).data[0], 0)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^p \(price\)/),
    });
  });

  it('subscribes in messages of 100 streams, lower-case names, numbered ids', () => {
    const symbols = Array.from({ length: 250 }, (_, k) => `BINANCE:P${k}USDT`);
    const msgs = binanceProtocol({ url: 'ws://x', stream: 'aggTrade', symbols })
      .subscribe(symbols)
      .map((m) => JSON.parse(m));
    expect(msgs.map((m) => m.params.length)).toEqual([100, 100, 50]);
    expect(msgs.map((m) => m.id)).toEqual([1, 2, 3]);
    expect(msgs[0].method).toBe('SUBSCRIBE');
    expect(msgs[0].params[0]).toBe('p0usdt@aggTrade');
    expect(proto.messagesPerSecond).toBeLessThan(5);
  });

  it('names and prices as Binance has them', () => {
    expect(binanceSymbol('BINANCE:BTCUSDT')).toBe('BTCUSDT');
    expect(binanceSymbol('btcusdt')).toBe('BTCUSDT');
    expect(shortDecimal('0.00141300')).toBe('0.001413');
    expect(shortDecimal('100.00000000')).toBe('100');
    expect(shortDecimal('7')).toBe('7');
  });
});
