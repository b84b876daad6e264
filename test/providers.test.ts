import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { BACKFILL_GROUP, addTrades, addTradesArgs, loadConfig } from '@candlewick/common';
import { BAR_FLAGS, decodeBarState, volumeNumber, type Trade } from '@candlewick/core';
import { ensureGroup } from '@candlewick/common';
import {
  BackfillService,
  FinnhubCandles,
  Massive,
  ProviderError,
  ProviderServer,
  TokenBucket,
  backfillPreaggregator,
  parseRequest,
  retryAfterMs,
  type Fault,
} from '@candlewick/backfill';
import { Splicer } from '@candlewick/core';
import { readTapeTrades } from '@candlewick/common';
import { ROOT, runCli, tempDir, testKeys, testRedis } from './helpers.js';

const TICK = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');
const tape = readTapeTrades(TICK);
const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());

async function withServer<T>(faults: Fault[], f: (base: string, server: ProviderServer) => Promise<T>): Promise<T> {
  const server = new ProviderServer(tape, { finnhubToken: 't', massiveKey: 'k', pageSize: 500, faults });
  const base = await server.start();
  try {
    return await f(base, server);
  } finally {
    await server.stop();
  }
}
const http = (provider: string, headers: Record<string, string>) => ({
  provider,
  bucket: new TokenBucket(100_000),
  retries: 3,
  headers,
  log: quiet,
  backoffMs: 20,
});
const T = (iso: string) => Date.parse(iso);

describe('providers over HTTP', () => {
  it('Massive trades: every page followed, in (time, sequence) order', async () => {
    await withServer([], async (base, server) => {
      const m = new Massive(base, http('massive', { authorization: 'Bearer k' }));
      const from = T('2013-10-10T10:00:00-04:00');
      const to = T('2013-10-10T10:30:00-04:00');
      const got = await m.trades('AIG', from, to);
      const want = tape.filter((tr) => tr.t >= from && tr.t <= to);
      expect(got.length).toBe(want.length);
      expect(got.map((x) => [x.t, x.p, x.v])).toEqual(want.map((x) => [x.t, String(Number(x.p)), x.v]));
      expect(server.requests.length).toBe(Math.ceil(want.length / 500));
    });
  });

  it('Massive aggregates carry VWAP and counts; Finnhub candles do not', async () => {
    await withServer([], async (base) => {
      const from = T('2013-10-10T10:00:00-04:00');
      const to = T('2013-10-10T10:09:59-04:00');
      const m = await new Massive(base, http('massive', { authorization: 'Bearer k' })).candles('AIG', from, to);
      const f = await new FinnhubCandles(`${base}/api/v1`, http('finnhub', { 'x-finnhub-token': 't' })).candles('AIG', from, to);
      expect(m).toHaveLength(10);
      expect(m.every((c) => c.vwap !== undefined && c.n !== undefined)).toBe(true);
      expect(f.map((c) => [c.start, c.open, c.high, c.low, c.close, c.volume])).toEqual(
        m.map((c) => [c.start, c.open, c.high, c.low, c.close, c.volume]),
      );
      expect(f.every((c) => c.vwap === undefined && c.n === undefined)).toBe(true);
    });
  });

  it('429 with Retry-After: waits that long, then succeeds', async () => {
    await withServer([{ path: /trades/, status: 429, times: 1, headers: { 'Retry-After': '1' } }], async (base, server) => {
      const m = new Massive(base, http('massive', { authorization: 'Bearer k' }));
      const got = await m.trades('AIG', T('2013-10-10T10:00:00-04:00'), T('2013-10-10T10:01:00-04:00'));
      expect(got.length).toBeGreaterThan(0);
      expect(server.requests.map((r) => r.status)).toEqual([429, 200]);
      expect(server.requests[1]!.at - server.requests[0]!.at).toBeGreaterThanOrEqual(950);
    });
    expect(retryAfterMs('2')).toBe(2000);
    expect(retryAfterMs(new Date(Date.now() + 3000).toUTCString())).toBeGreaterThan(1000);
    expect(retryAfterMs(null)).toBeUndefined();
  });

  it('500: retried with backoff, then succeeds; still failing after the retries: a clear error', async () => {
    await withServer([{ path: /candle/, status: 500, times: 2 }], async (base, server) => {
      const f = new FinnhubCandles(`${base}/api/v1`, http('finnhub', { 'x-finnhub-token': 't' }));
      expect(await f.candles('AIG', T('2013-10-10T10:00:00-04:00'), T('2013-10-10T10:04:59-04:00'))).toHaveLength(5);
      expect(server.requests.map((r) => r.status)).toEqual([500, 500, 200]);
    });
    await withServer([{ path: /candle/, status: 500, times: 10 }], async (base) => {
      const f = new FinnhubCandles(`${base}/api/v1`, http('finnhub', { 'x-finnhub-token': 't' }));
      const err = await f.candles('AIG', 0, 1).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ProviderError);
      expect((err as ProviderError).message).toMatch(
        /^finnhub: HTTP 500 from http:\/\/127\.0\.0\.1:\d+\/api\/v1\/stock\/candle.* after 4 attempts/,
      );
      expect((err as ProviderError).permanent).toBe(false);
    });
  });

  it('a malformed body, a refused key and a 403 each give an error that says what is wrong', async () => {
    await withServer(
      [
        { path: /candle/, status: 200, times: 1, body: '<html>maintenance</html>' },
        { path: /aggs/, status: 200, times: 1, body: '{"results":[{"t":"x"}]}' },
      ],
      async (base) => {
        const f = new FinnhubCandles(`${base}/api/v1`, http('finnhub', { 'x-finnhub-token': 't' }));
        await expect(f.candles('AIG', 0, 1)).rejects.toThrow(/finnhub: malformed body from .*: not JSON \(starts "<html>maintenance/);
        const m = new Massive(base, http('massive', { authorization: 'Bearer k' }));
        await expect(m.candles('AIG', 0, 1)).rejects.toThrow(/massive: malformed body for aggregates of AIG: results\.0\.t/);
        const wrongKey = new Massive(base, http('massive', { authorization: 'Bearer nope' }));
        const e401 = (await wrongKey.trades('AIG', 0, 1).catch((e: unknown) => e)) as ProviderError;
        expect(e401.message).toMatch(/HTTP 401 .*the API key was refused/);
        expect(e401.message).not.toMatch(/nope/);
        expect(e401.permanent).toBe(true);
      },
    );
    await withServer([{ path: /candle/, status: 403, times: 1 }], async (base) => {
      const f = new FinnhubCandles(`${base}/api/v1`, http('finnhub', { 'x-finnhub-token': 't' }));
      await expect(f.candles('AIG', 0, 1)).rejects.toThrow(/HTTP 403 .*no access to this endpoint \(it may need a paid plan\)/);
    });
  });

  it('the token bucket spaces requests to the rate', async () => {
    const b = new TokenBucket(600, 1); // 10 a second, no burst
    const t0 = Date.now();
    for (let i = 0; i < 4; i++) await b.take();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });
});

describe('the splice', () => {
  const cfg = loadConfig({ INTERVALS: '1min,1h', KEY_PREFIX: 'x' });
  const splicer = new Splicer(backfillPreaggregator(cfg));
  const t = T('2013-10-10T10:15:20.123-04:00');
  const req = { id: '1-0', partition: 0, symbol: 'AIG', from: T('2013-10-10T10:00:00-04:00'), to: t, p: '10.5', v: 100 };
  const tr = (dt: number, p: string, v: number, seq: number) => ({ t: t + dt, p, v, seq, c: [] });

  it('ticks: t < the first live trade, plus the trades the provider sequences before it in its millisecond', () => {
    const s = splicer.ticks(
      req,
      [tr(-5000, '10', 1, 1), tr(0, '10.4', 2, 2), tr(0, '10.5', 100, 3), tr(0, '10.6', 3, 4), tr(10, '11', 5, 5)],
      BAR_FLAGS.MASSIVE_TRADES,
    );
    expect(s.used).toBe(2);
    const minute = s.partials.get(`1min|AIG|${T('2013-10-10T10:15:00-04:00')}`)!.state;
    expect(minute).toMatchObject({ open: '10', close: '10.4', trades: 2, flags: BAR_FLAGS.MASSIVE_TRADES });
    expect(volumeNumber(minute.volume)).toBe(3);
    expect(s.flags.size).toBe(0);
  });

  it('ticks: when the live trade is not among the provider’s, its millisecond is left out and the bars marked incomplete', () => {
    const s = splicer.ticks(req, [tr(-5000, '10', 1, 1), tr(0, '10.4', 2, 2)], BAR_FLAGS.MASSIVE_TRADES);
    expect(s.used).toBe(1);
    expect([...s.flags.values()]).toEqual([BAR_FLAGS.INCOMPLETE, BAR_FLAGS.INCOMPLETE]);
  });

  it('candles: whole minutes strictly before the live minute; the live minute’s bars incomplete', () => {
    const c = (min: number) => ({
      start: T('2013-10-10T10:00:00-04:00') + min * 60_000,
      open: 1,
      high: 2,
      low: 0.5,
      close: 1.5,
      volume: 10,
    });
    const s = splicer.candles(req, [c(0), c(14), c(15)], BAR_FLAGS.FINNHUB_CANDLES);
    expect(s.used).toBe(2);
    const hour = s.partials.get(`1h|AIG|${T('2013-10-10T10:00:00-04:00')}`)!.state;
    expect(hour).toMatchObject({ trades: 0, flags: BAR_FLAGS.FINNHUB_CANDLES | BAR_FLAGS.APPROXIMATE });
    expect(volumeNumber(hour.volume)).toBe(20);
    expect(s.flags.get(`1min|AIG|${T('2013-10-10T10:15:00-04:00')}`)).toBe(BAR_FLAGS.INCOMPLETE);
  });
});

describe('exactly once', () => {
  it('a request a dead worker fetched is merged once by the worker that reclaims it; the dead one’s late merge changes nothing', async () => {
    const keys = testKeys('bf-once');
    await withServer([], async (base) => {
      const cfg = loadConfig({
        INTERVALS: '1min,1h',
        KEY_PREFIX: keys.prefix,
        MODE: 'replay',
        BACKFILL: 'on',
        BACKFILL_PROVIDER: 'massive',
        MASSIVE_API_KEY: 'k',
        MASSIVE_REST_URL: base,
        BACKFILL_RATE: '6000',
      });
      await ensureGroup(redis, keys.backfillRequests(0), BACKFILL_GROUP);
      // the first live trade of AIG files a request for 10:00 .. it and holds AIG's bars
      const first = tape.find((x) => x.t >= T('2013-10-10T10:20:00-04:00'))!;
      const live: Trade = { s: 'AIG', p: first.p, v: first.v, t: first.t, c: [], rx: first.t };
      // (one request: the 1st trade of the batch, floor 10:00, no cap)
      await addTrades(
        redis,
        keys,
        0,
        addTradesArgs(
          { clock: 'event', graceMs: 2000, backfillHoldMs: 60_000 },
          [{ at: 1, floorMs: T('2013-10-10T10:00:00-04:00'), capMs: 0 }],
          [live],
        ),
      );
      expect(await redis.hexists(keys.holds(0), 'AIG')).toBe(1);
      const a = new BackfillService(redis, cfg, keys, quiet);
      const b = new BackfillService(redis, cfg, keys, quiet);
      const read = (await redis.xreadgroup('GROUP', BACKFILL_GROUP, a.consumer, 'COUNT', 1, 'STREAMS', keys.backfillRequests(0), '>')) as [
        string,
        [string, string[]][],
      ][];
      const [id, fields] = read[0]![1][0]!;
      // worker a "dies" holding the request; b reclaims it and merges
      const claimed = (await redis.xautoclaim(keys.backfillRequests(0), BACKFILL_GROUP, b.consumer, 0, '0-0')) as [
        string,
        [string, string[]][],
      ];
      expect(claimed[1]).toHaveLength(1);
      await b.start();
      await b.handle(parseRequest(0, id, fields));
      const after = await redis.hgetall(keys.openBars(0));
      // a wakes up and merges its copy: refused, nothing changes
      await a.start();
      await a.handle(parseRequest(0, id, fields));
      expect(await redis.hgetall(keys.openBars(0))).toEqual(after);
      await a.stop();
      await b.stop();
      const want = tape.filter((x) => x.t >= T('2013-10-10T10:00:00-04:00') && x.t < first.t);
      const hour = decodeBarState(after[`1h|AIG|${T('2013-10-10T10:00:00-04:00')}`]!);
      expect(hour.trades).toBe(want.length);
      expect(volumeNumber(hour.volume)).toBe(want.reduce((v, x) => v + x.v, 0));
      expect(Number((await redis.hgetall(keys.partitionStats(0))).backfilled)).toBe(want.length);
      expect(await redis.hexists(keys.holds(0), 'AIG')).toBe(0);
    });
  });
});

describe('historical mode', () => {
  it('names what is wrong with a bad range', async () => {
    const res = await runCli(['backfill', '--symbols', 'AIG', '--from', '2013-10-11', '--to', '2013-10-10'], {
      DATA_DIR: tempDir('hist-bad'),
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--from must be before --to/);
  });
});
