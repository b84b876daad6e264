import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, readTapeTrades } from '@candlewick/common';
import { alpacaConditions, validateTrade } from '@candlewick/core';
import { alpacaProtocol } from '@candlewick/ingestor';
import {
  AlpacaHistory,
  Massive,
  ProviderError,
  ProviderServer,
  TokenBucket,
  alpacaFeed,
  makeProvider,
  rateLimitResetMs,
  type Fault,
} from '@candlewick/backfill';
import { LEAN_AIG_TAPE } from './helpers.js';

/**
 * Backfill from Alpaca's REST history (trades, 1-minute bars) against provider-server serving the
 * bundled AIG day in Alpaca's shapes: pages, times to the nanosecond, the live adapter's reading of
 * prices, times and conditions, the key headers, and Alpaca's refusals.
 */
const tape = readTapeTrades(LEAN_AIG_TAPE);
const quiet = pino({ level: 'silent' });
const T = (iso: string) => Date.parse(iso);
const KEY = 'AKHISTORY5E2D';
const SECRET = 'history-secret-9c41f7';
const http = (secret = SECRET) => ({
  provider: 'alpaca',
  bucket: new TokenBucket(100_000),
  retries: 3,
  headers: { 'APCA-API-KEY-ID': KEY, 'APCA-API-SECRET-KEY': secret },
  log: quiet,
  backoffMs: 20,
});

async function withServer<T>(
  opts: { pageSize?: number; faults?: Fault[] },
  f: (base: string, server: ProviderServer) => Promise<T>,
): Promise<T> {
  const server = new ProviderServer(tape, { alpacaKey: KEY, alpacaSecret: SECRET, massiveKey: 'k', ...opts });
  const base = await server.start();
  try {
    return await f(base, server);
  } finally {
    await server.stop();
  }
}

describe('Alpaca history over HTTP', () => {
  it('trades: every page followed by page_token, the span inclusive to the nanosecond, each trade read as the live adapter reads it', async () => {
    const from = T('2013-10-10T10:00:00-04:00');
    // a millisecond with trades: the end takes every trade in it (end = …999999 ns)
    const last = tape.find((tr) => tr.t >= T('2013-10-10T10:30:00-04:00'))!.t;
    const want = tape.filter((tr) => tr.t >= from && tr.t <= last);
    expect(want.length).toBeGreaterThan(1000);
    expect(want.at(-1)!.t).toBe(last);
    await withServer({ pageSize: 500 }, async (base, server) => {
      const got = await new AlpacaHistory(base, http(), 'iex').trades('AIG', from, last);
      expect(got.map((x) => [x.t, x.v, x.c])).toEqual(want.map((x) => [x.t, x.v, alpacaConditions(x.c)]));
      expect(got.map((x) => x.p)).toEqual(want.map((x) => String(Number(x.p))));
      expect(got.map((x) => x.seq)).toEqual(want.map((_, k) => k));
      expect(server.requests).toHaveLength(Math.ceil(want.length / 500));
      const queries = server.requests.map((r) => new URLSearchParams(r.query));
      expect(queries.every((q) => q.get('feed') === 'iex' && q.get('limit') === '10000' && q.get('sort') === 'asc')).toBe(true);
      expect(queries[0]!.get('start')).toBe('2013-10-10T14:00:00.000Z');
      expect(queries[0]!.get('end')).toBe(`${new Date(last).toISOString().slice(0, -1)}999999Z`);
      expect(queries[0]!.has('page_token')).toBe(false);
      expect(queries.slice(1).every((q) => (q.get('page_token') ?? '') !== '')).toBe(true);
    });
    // the live adapter on the same trade messages: the same price text, time and conditions
    await withServer({}, async (base) => {
      const res = await fetch(`${base}/v2/stocks/AIG/trades?start=2013-10-10T14:00:00Z&end=2013-10-10T14:00:10Z&limit=50`, {
        headers: { 'APCA-API-KEY-ID': KEY, 'APCA-API-SECRET-KEY': SECRET },
      });
      const page = (await res.json()) as { trades: Record<string, unknown>[]; symbol: string; next_page_token: string | null };
      expect(page.symbol).toBe('AIG');
      expect(page.trades.length).toBeGreaterThan(0);
      expect(page.trades.every((tr) => /^2013-10-10T14:00:0\d\.\d{9}Z$/.test(String(tr.t)))).toBe(true);
      const frame = alpacaProtocol({ url: 'ws://x/v2/iex', key: '', secret: '', symbols: ['AIG'] }).readFrame(
        JSON.stringify(page.trades.map((tr) => ({ T: 't', S: 'AIG', ...tr }))),
      );
      expect(frame.kind).toBe('trade');
      const live = (frame as { data: unknown[] }).data.map((raw) => {
        const v = validateTrade(raw, 0);
        if (!v.ok) throw new Error(v.reason);
        return [v.trade.t, v.trade.p, v.trade.v, [...v.trade.c]];
      });
      const got = await new AlpacaHistory(base, http(), 'iex').trades('AIG', T('2013-10-10T14:00:00Z'), T('2013-10-10T14:00:10Z'));
      expect(got.slice(0, live.length).map((x) => [x.t, x.p, x.v, x.c])).toEqual(live);
    });
  });

  it('bars: 1-minute bars with VWAP and trade counts, paged; OHLCV equal to Massive’s aggregates of the same tape', async () => {
    const from = T('2013-10-10T10:00:00-04:00');
    const to = T('2013-10-10T10:59:59-04:00');
    await withServer({ pageSize: 25 }, async (base, server) => {
      const got = await new AlpacaHistory(base, http(), 'sip').candles('AIG', from, to);
      expect(got).toHaveLength(60);
      expect(server.requests).toHaveLength(3);
      const q = new URLSearchParams(server.requests[0]!.query);
      expect([q.get('timeframe'), q.get('adjustment'), q.get('feed')]).toEqual(['1Min', 'raw', 'sip']);
      const massive = await new Massive(base, { ...http(), provider: 'massive', headers: { authorization: 'Bearer k' } }).candles(
        'AIG',
        from,
        to,
      );
      expect(got).toEqual(massive);
      const minute = tape.filter((tr) => tr.t >= from && tr.t < from + 60_000);
      expect(got[0]!.n).toBe(minute.length);
      const vwap = minute.reduce((s, tr) => s + Number(tr.p) * tr.v, 0) / minute.reduce((s, tr) => s + tr.v, 0);
      expect(got[0]!.vwap).toBeCloseTo(vwap, 9);
    });
  });

  it('a refused key (403) and a plan without the data each say what to check, are not retried, and never show the secret', async () => {
    await withServer({}, async (base, server) => {
      const wrong = 'wrong-secret-0b7e13';
      const err = (await new AlpacaHistory(base, http(wrong), 'iex').trades('AIG', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(err).toBeInstanceOf(ProviderError);
      expect(err.message).toMatch(
        /^alpaca: Alpaca refused ALPACA_API_KEY \/ ALPACA_API_SECRET \(HTTP 403: forbidden\.\): check the key id and its secret/,
      );
      expect([err.permanent, err.status, err.symbol]).toEqual([true, 403, undefined]);
      expect(err.message).not.toContain(wrong);
      expect(err.message).not.toContain(KEY);
      expect(server.requests.map((r) => r.status)).toEqual([403]);
    });
    const faults: Fault[] = [
      { path: /trades/, status: 403, times: 1, body: '{"message":"subscription does not permit querying recent SIP data"}' },
      // a body that quotes the secret back: cut from the message
      { path: /bars/, status: 401, times: 1, body: `{"message":"access key verification failed for ${SECRET}"}` },
    ];
    await withServer({ faults }, async (base) => {
      const plan = (await new AlpacaHistory(base, http(), 'sip').trades('AIG', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(plan.message).toMatch(/HTTP 403 .*subscription does not permit.*the free plan reads IEX \(ALPACA_WS_URL ending \/v2\/iex\)/);
      expect(plan.permanent).toBe(true);
      const quoted = (await new AlpacaHistory(base, http(), 'sip').candles('AIG', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(quoted.message).toMatch(/HTTP 401: access key verification failed for \[redacted\]/);
      expect(quoted.message).not.toContain(SECRET);
    });
  });

  it('422: a symbol Alpaca does not take fails that symbol only; another bad request says what Alpaca said', async () => {
    await withServer(
      { faults: [{ path: /bars/, status: 422, times: 1, body: '{"code":42210000,"message":"invalid timeframe"}' }] },
      async (base) => {
        const a = new AlpacaHistory(base, http(), 'iex');
        const bad = (await a.trades('AIG$', 0, 1).catch((e: unknown) => e)) as ProviderError;
        expect(bad.message).toMatch(
          /^alpaca: Alpaca does not take the symbol AIG\$ \(HTTP 422: invalid symbol\): write it as Alpaca does, e\.g\. AAPL/,
        );
        expect([bad.permanent, bad.symbol]).toEqual([true, 'AIG$']);
        const other = (await a.candles('AIG', 0, 1).catch((e: unknown) => e)) as ProviderError;
        expect(other.message).toMatch(/HTTP 422 from .*\/v2\/stocks\/AIG\/bars.*: Alpaca could not take the request: invalid timeframe$/);
        expect([other.permanent, other.symbol]).toEqual([true, undefined]);
      },
    );
  });

  it('429 without Retry-After: waited out until X-RateLimit-Reset; a window used up (Remaining 0) is waited out before the next request', async () => {
    const reset = () => String(Math.ceil(Date.now() / 1000) + 1);
    await withServer(
      {
        faults: [
          {
            path: /trades/,
            status: 429,
            times: 1,
            headers: { 'X-RateLimit-Limit': '200', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset() },
          },
        ],
      },
      async (base, server) => {
        const got = await new AlpacaHistory(base, http(), 'iex').trades(
          'AIG',
          T('2013-10-10T10:00:00-04:00'),
          T('2013-10-10T10:01:00-04:00'),
        );
        expect(got.length).toBeGreaterThan(0);
        expect(server.requests.map((r) => r.status)).toEqual([429, 200]);
        expect(server.requests[1]!.at - server.requests[0]!.at).toBeGreaterThanOrEqual(900);
      },
    );
    await withServer(
      {
        faults: [
          {
            path: /trades/,
            status: 200,
            times: 1,
            headers: { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset() },
            body: '{"trades":[],"symbol":"AIG","next_page_token":null}',
          },
        ],
      },
      async (base, server) => {
        const a = new AlpacaHistory(base, http(), 'iex');
        expect(await a.trades('AIG', 0, 1)).toEqual([]);
        await a.trades('AIG', T('2013-10-10T10:00:00-04:00'), T('2013-10-10T10:01:00-04:00'));
        expect(server.requests.map((r) => r.status)).toEqual([200, 200]);
        expect(server.requests[1]!.at - server.requests[0]!.at).toBeGreaterThanOrEqual(900);
      },
    );
    expect(rateLimitResetMs('1381413600', 60_000, 1381413598_500)).toBe(1500);
    expect(rateLimitResetMs('1381413600', 60_000, 1381400000_000)).toBe(60_000);
    expect(rateLimitResetMs(null, 60_000)).toBeUndefined();
  });

  it('FEED=alpaca with its key and secret makes Alpaca the history provider, in ticks, with the stream’s feed', () => {
    const env = { FEED: 'alpaca', MODE: 'replay', KEY_PREFIX: 'x', ALPACA_API_KEY: KEY, ALPACA_API_SECRET: SECRET };
    const cfg = loadConfig(env);
    expect([cfg.backfillProvider, cfg.backfillMode, cfg.backfillRate, cfg.alpacaRestUrl]).toEqual([
      'alpaca',
      'ticks',
      200,
      'https://data.alpaca.markets',
    ]);
    expect(alpacaFeed(cfg.alpacaWsUrl)).toBe('iex');
    expect(alpacaFeed('wss://stream.data.alpaca.markets/v2/sip')).toBe('sip');
    expect(alpacaFeed('ws://127.0.0.1:8765/v2/iex/')).toBe('iex');
    expect(alpacaFeed('wss://stream.data.alpaca.markets/v2/test')).toBeUndefined();
    // the feed replayed without keys: as before (Finnhub's candles, or Massive with its key)
    expect(loadConfig({ FEED: 'alpaca', MODE: 'replay', KEY_PREFIX: 'x' }).backfillProvider).toBe('finnhub');
    expect(loadConfig({ FEED: 'alpaca', MODE: 'replay', KEY_PREFIX: 'x', MASSIVE_API_KEY: 'k' }).backfillProvider).toBe('massive');
    expect(() => loadConfig({ BACKFILL_PROVIDER: 'alpaca', MODE: 'replay', KEY_PREFIX: 'x', ALPACA_API_KEY: KEY })).toThrow(ConfigError);
    const none = loadConfig({ BACKFILL_PROVIDER: 'alpaca', MODE: 'replay', KEY_PREFIX: 'x' });
    expect(() => makeProvider(none, quiet)).toThrow(/ALPACA_API_KEY and ALPACA_API_SECRET are not both set/);
  });
});
