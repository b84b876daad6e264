import { describe, expect, it } from 'vitest';
import { ConfigError } from '@candlewick/common';
import { validateTrade } from '@candlewick/core';
import { MASSIVE_LIMIT_WAIT_MS, MASSIVE_PARAMS_CHARS, massiveProtocol, massiveSubscriptions } from './massive.js';

const trade = (extra: Record<string, unknown> = {}) => ({
  ev: 'T',
  sym: 'MSFT',
  x: 4,
  i: '12345',
  z: 3,
  p: 114.125,
  s: 100,
  c: [0, 12],
  t: 1536036818784,
  q: 3681328,
  ...extra,
});

describe('the Massive protocol', () => {
  const proto = massiveProtocol({ url: 'ws://x/stocks', key: 'k-123', symbols: ['MSFT', 'AAPL', 'BRK.A'] });

  it('reads an array of trade events as raw trades: q, the sequence number, is the id; the conditions stay as their codes', () => {
    const f = proto.readFrame(JSON.stringify([trade(), trade({ sym: 'AAPL', p: 190.5, s: 7, c: undefined, q: 9 })]));
    expect(f.kind).toBe('trade');
    const [a, b] = (f as { data: unknown[] }).data;
    expect(validateTrade(a, 5)).toEqual({
      ok: true,
      trade: { s: 'MSFT', p: '114.125', v: 100, t: 1536036818784, c: ['0', '12'], rx: 5, i: '3681328' },
    });
    expect(validateTrade(b, 5)).toMatchObject({ ok: true, trade: { s: 'AAPL', v: 7, c: [], i: '9' } });
  });

  it('a malformed trade is handed on as it came, for validation to refuse with its reason', () => {
    const f = proto.readFrame(JSON.stringify([trade({ p: -1 })]));
    expect(validateTrade((f as { data: unknown[] }).data[0], 0)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^p \(price\)/),
    });
  });

  it('status events: connected and subscribed are acknowledgements, auth_success lets the subscriptions go', () => {
    const st = (status: string, message = '') => JSON.stringify([{ ev: 'status', status, message }]);
    expect(proto.readFrame(st('connected', 'Connected Successfully'))).toEqual({ kind: 'ack' });
    expect(proto.readFrame(st('success', 'subscribed to: T.MSFT'))).toEqual({ kind: 'ack' });
    expect(proto.readFrame(st('auth_success', 'authenticated'))).toEqual({ kind: 'authorized' });
  });

  it('a refused key and a plan without the data stop the feed; a connection limit waits a minute; other errors are said', () => {
    const st = (status: string, message = '') => JSON.stringify([{ ev: 'status', status, message }]);
    expect(proto.readFrame(st('auth_failed', 'authentication failed'))).toEqual({
      kind: 'fatal',
      msg: expect.stringMatching(/^Massive refused MASSIVE_API_KEY \(auth_failed: authentication failed\): check the key .*not retrying$/),
    });
    expect(proto.readFrame(st('error', 'not authorized to access this cluster'))).toEqual({
      kind: 'fatal',
      msg: expect.stringMatching(/delayed data reads wss:\/\/delayed\.massive\.com\/stocks \(set MASSIVE_WS_URL\)/),
    });
    expect(proto.readFrame(st('max_connections', 'Maximum number of websocket connections exceeded.'))).toEqual({
      kind: 'limited',
      msg: expect.stringMatching(/reached its number of WebSocket connections at once \(max_connections: Maximum number/),
      retryAfterMs: MASSIVE_LIMIT_WAIT_MS,
    });
    expect(proto.readFrame(st('error', 'invalid subscription "X"'))).toEqual({
      kind: 'error',
      msg: 'error: invalid subscription "X"',
      hint: undefined,
    });
    // a refusal in the same message as an acknowledgement is what counts
    expect(
      proto.readFrame(
        JSON.stringify([
          { ev: 'status', status: 'connected' },
          { ev: 'status', status: 'auth_failed' },
        ]),
      ).kind,
    ).toBe('fatal');
  });

  it('what is not JSON, and events of another kind', () => {
    expect(proto.readFrame('[{')).toEqual({ kind: 'not-json' });
    expect(proto.readFrame('[{"ev":"Q","sym":"MSFT"}]')).toEqual({ kind: 'unknown', type: 'Q' });
    expect(proto.readFrame('[{"ev":"status","status":"mystery"}]')).toEqual({ kind: 'unknown', type: 'status mystery' });
    expect(proto.readFrame('[7]')).toEqual({ kind: 'unknown', type: undefined });
  });

  it('logs in with the key in a message, never in the URL; subscribes T.<ticker> in batches under the size kept', () => {
    expect(proto.url()).toBe('ws://x/stocks');
    expect(JSON.parse(proto.login!())).toEqual({ action: 'auth', params: 'k-123' });
    expect(proto.subscribe(['MSFT', 'BRK.A']).map((m) => JSON.parse(m))).toEqual([{ action: 'subscribe', params: 'T.MSFT,T.BRK.A' }]);
    const many = Array.from({ length: 3000 }, (_, k) => `S${k}`);
    const msgs = massiveSubscriptions(many).map((m) => JSON.parse(m) as { params: string });
    expect(msgs.length).toBeGreaterThan(1);
    for (const m of msgs) expect(m.params.length).toBeLessThanOrEqual(MASSIVE_PARAMS_CHARS);
    expect(msgs.flatMap((m) => m.params.split(','))).toEqual(many.map((s) => `T.${s}`));
  });

  it('refuses SYMBOLS that are not stock tickers, naming them', () => {
    try {
      massiveProtocol({ url: 'ws://x', key: 'k', symbols: ['AAPL', 'BINANCE:XRPETH'] });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as Error).message).toMatch(/SYMBOLS: "BINANCE:XRPETH" is not a US stock ticker \(FEED=massive/);
    }
  });
});
