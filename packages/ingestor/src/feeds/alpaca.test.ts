import { describe, expect, it } from 'vitest';
import { ConfigError } from '@candlewick/common';
import { rfc3339Ms, validateTrade } from '@candlewick/core';
import { ALPACA_LIMIT_WAIT_MS, ALPACA_SUBSCRIBE_SYMBOLS, alpacaProtocol, alpacaSubscriptions } from './alpaca.js';

const trade = (extra: Record<string, unknown> = {}) => ({
  T: 't',
  S: 'AAPL',
  i: 96921,
  x: 'D',
  p: 126.55,
  s: 1,
  t: '2021-02-22T15:51:44.208Z',
  c: ['@', 'I'],
  z: 'C',
  ...extra,
});
const error = (code: number, msg: string) => JSON.stringify([{ T: 'error', code, msg }]);

describe('the Alpaca protocol', () => {
  const proto = alpacaProtocol({ url: 'ws://x/v2/iex', key: 'AK-123', secret: 'sec-456', symbols: ['AAPL', 'MSFT', 'BRK.A'] });

  it('reads an array of trades as raw trades: i the id with its exchange, the SIP letters as the conditions, no side', () => {
    const f = proto.readFrame(JSON.stringify([trade(), trade({ S: 'MSFT', p: 231.1, s: 40, c: undefined, i: 7 })]));
    expect(f.kind).toBe('trade');
    const [a, b] = (f as { data: unknown[] }).data;
    expect(validateTrade(a, 5)).toEqual({
      ok: true,
      trade: { s: 'AAPL', p: '126.55', v: 1, t: Date.UTC(2021, 1, 22, 15, 51, 44, 208), c: ['@', 'I'], rx: 5, i: 'D:96921' },
    });
    expect(validateTrade(b, 5)).toMatchObject({ ok: true, trade: { s: 'MSFT', v: 40, c: [], i: 'D:7' } });
    // no exchange named: the id alone
    const [c] = (proto.readFrame(JSON.stringify([trade({ x: undefined })])) as { data: unknown[] }).data;
    expect(validateTrade(c, 5)).toMatchObject({ ok: true, trade: { i: '96921' } });
  });

  it('times to whole ms, cut (never rounded up) at nanosecond precision, with offsets; a bad time goes on for validation to refuse', () => {
    const base = Date.UTC(2021, 1, 22, 15, 51, 44);
    expect(rfc3339Ms('2021-02-22T15:51:44.208999999Z')).toBe(base + 208);
    expect(rfc3339Ms('2021-02-22T15:51:44.999999999Z')).toBe(base + 999);
    expect(rfc3339Ms('2021-02-22T15:51:44.000000001Z')).toBe(base);
    expect(rfc3339Ms('2021-02-22T15:51:44.5Z')).toBe(base + 500);
    expect(rfc3339Ms('2021-02-22T15:51:44Z')).toBe(base);
    expect(rfc3339Ms('2021-02-22T10:51:44.123456789-05:00')).toBe(base + 123);
    expect(rfc3339Ms('yesterday')).toBe('yesterday');
    const f = proto.readFrame(JSON.stringify([trade({ t: '2021-02-22T15:51:44.2089999Z' }), trade({ t: 'soon' })]));
    const [a, b] = (f as { data: unknown[] }).data;
    expect(validateTrade(a, 0)).toMatchObject({ ok: true, trade: { t: base + 208 } });
    expect(validateTrade(b, 0)).toMatchObject({ ok: false });
  });

  it('corrections and cancels are read as amends, with the trades of the same message', () => {
    const correction = {
      T: 'c',
      S: 'AAPL',
      x: 'N',
      oi: 52983525033527,
      op: 126.5,
      os: 100,
      oc: [' '],
      ci: 52983525034734,
      cp: 126.55,
      cs: 100,
      cc: [' '],
      z: 'A',
      t: '2021-02-22T15:51:44.208Z',
    };
    const cancel = { T: 'x', S: 'AAPL', i: 96921, x: 'D', p: 126.55, s: 1, a: 'C', z: 'C', t: '2021-02-22T15:51:44.208Z' };
    const f = proto.readFrame(JSON.stringify([trade(), correction, cancel]));
    expect(f).toEqual({
      kind: 'amends',
      amends: [
        { kind: 'correction', symbol: 'AAPL', event: correction },
        { kind: 'cancel', symbol: 'AAPL', event: cancel },
      ],
      data: [{ s: 'AAPL', p: 126.55, v: 1, t: Date.UTC(2021, 1, 22, 15, 51, 44, 208), c: ['@', 'I'], i: 'D:96921' }],
    });
    expect(proto.readFrame(JSON.stringify([cancel]))).toMatchObject({ kind: 'amends', data: [] });
  });

  it('control messages: connected and subscription are acknowledgements, authenticated lets the subscriptions go', () => {
    expect(proto.readFrame('[{"T":"success","msg":"connected"}]')).toEqual({ kind: 'ack' });
    expect(proto.readFrame('[{"T":"success","msg":"authenticated"}]')).toEqual({ kind: 'authorized' });
    expect(proto.readFrame('[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]')).toEqual({ kind: 'ack' });
  });

  it('every error code: a refused key, a plan without the feed and v2 not enabled stop the feed; a connection limit waits; the rest are said', () => {
    expect(proto.readFrame(error(402, 'auth failed'))).toEqual({
      kind: 'fatal',
      msg: expect.stringMatching(
        /^Alpaca refused ALPACA_API_KEY \/ ALPACA_API_SECRET \(402 auth failed\): check the key id .*not retrying$/,
      ),
    });
    expect(proto.readFrame(error(409, 'insufficient subscription'))).toEqual({
      kind: 'fatal',
      msg: expect.stringMatching(
        /\(409 insufficient subscription\).*ALPACA_WS_URL=wss:\/\/stream\.data\.alpaca\.markets\/v2\/iex \(use \/v2\/iex\)/,
      ),
    });
    expect(proto.readFrame(error(408, 'v2 not enabled'))).toMatchObject({ kind: 'fatal', msg: expect.stringMatching(/v2 stream/) });
    expect(proto.readFrame(error(406, 'connection limit exceeded'))).toEqual({
      kind: 'limited',
      msg: expect.stringMatching(/reached its number of connections at once \(406 connection limit exceeded\)/),
      retryAfterMs: ALPACA_LIMIT_WAIT_MS,
    });
    expect(proto.readFrame(error(405, 'symbol limit exceeded (30)'))).toEqual({
      kind: 'error',
      msg: '405 symbol limit exceeded (30)',
      hint: expect.stringMatching(/^more symbols than the plan allows \(30\): /),
    });
    expect(proto.readFrame(error(405, 'symbol limit exceeded'))).toMatchObject({
      hint: expect.stringMatching(/^more symbols than the plan allows: /),
    });
    const said: [number, string, RegExp][] = [
      [400, 'invalid syntax', /could not read a message/],
      [401, 'not authenticated', /before the login/],
      [403, 'already authenticated', /second login/],
      [404, 'auth timeout', /login came too late/],
      [407, 'slow client', /reads too slowly/],
      [410, 'invalid subscribe action for this feed', /does not offer/],
      [500, 'internal error', /Alpaca's own error/],
    ];
    for (const [code, msg, hint] of said)
      expect(proto.readFrame(error(code, msg))).toEqual({ kind: 'error', msg: `${code} ${msg}`, hint: expect.stringMatching(hint) });
    expect(proto.readFrame(error(499, 'mystery'))).toEqual({ kind: 'error', msg: '499 mystery' });
    // a refusal in the same message as an acknowledgement is what counts
    expect(proto.readFrame('[{"T":"success","msg":"connected"},{"T":"error","code":402,"msg":"auth failed"}]').kind).toBe('fatal');
  });

  it('what is not JSON, and messages of another kind', () => {
    expect(proto.readFrame('[{')).toEqual({ kind: 'not-json' });
    expect(proto.readFrame('[{"T":"q","S":"AAPL"}]')).toEqual({ kind: 'unknown', type: 'q' });
    expect(proto.readFrame('[7]')).toEqual({ kind: 'unknown', type: undefined });
  });

  it('logs in with the key and secret in a message, never in the URL; subscribes trades in batches', () => {
    expect(proto.url()).toBe('ws://x/v2/iex');
    expect(JSON.parse(proto.login!())).toEqual({ action: 'auth', key: 'AK-123', secret: 'sec-456' });
    expect(proto.subscribe(['AAPL', 'BRK.A']).map((m) => JSON.parse(m))).toEqual([{ action: 'subscribe', trades: ['AAPL', 'BRK.A'] }]);
    const many = Array.from({ length: 2500 }, (_, k) => `S${k}`);
    const msgs = alpacaSubscriptions(many).map((m) => JSON.parse(m) as { trades: string[] });
    expect(msgs.length).toBe(3);
    for (const m of msgs) expect(m.trades.length).toBeLessThanOrEqual(ALPACA_SUBSCRIBE_SYMBOLS);
    expect(msgs.flatMap((m) => m.trades)).toEqual(many);
  });

  it('refuses SYMBOLS that are not stock tickers, naming them', () => {
    try {
      alpacaProtocol({ url: 'ws://x', key: 'k', secret: 's', symbols: ['AAPL', 'BINANCE:XRPETH'] });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as Error).message).toMatch(/SYMBOLS: "BINANCE:XRPETH" is not a US stock ticker \(FEED=alpaca/);
    }
  });
});
