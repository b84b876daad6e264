import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvPath, loadConfig, readTapeTrades } from '@candlewick/common';
import { BackfillService, BinanceHistory, ProviderError, ProviderServer, TokenBucket, type Fault } from '@candlewick/backfill';
import {
  BUNDLED_TAPE,
  compareBars,
  klineProblems,
  loadKlines,
  readCsv,
  rollUpKlines,
  runCli,
  tempDir,
  testKeys,
  testRedis,
} from './helpers.js';

/**
 * Backfill from Binance's REST history (klines, aggregate trades) against provider-server serving the
 * bundled XRP/ETH tape in Binance's shapes; Binance's own klines of those days are the oracle.
 */
const tape = readTapeTrades(BUNDLED_TAPE);
const quiet = pino({ level: 'silent' });
const T = (iso: string) => Date.parse(iso);
const http = () => ({ provider: 'binance', bucket: new TokenBucket(100_000), retries: 3, headers: {}, log: quiet, backoffMs: 20 });

async function withServer<T>(
  opts: { pageSize?: number; faults?: Fault[] },
  f: (base: string, server: ProviderServer) => Promise<T>,
): Promise<T> {
  const server = new ProviderServer(tape, opts);
  const base = await server.start();
  try {
    return await f(base, server);
  } finally {
    await server.stop();
  }
}

describe('Binance history over HTTP', () => {
  it('aggregate trades: every trade of the span in (time, id) order, paged by id past 1,000 and by the hour', async () => {
    // 10 hours, paged 100 at a time: the first page of each hour by time, then on by fromId
    const from = T('2019-10-11T00:00:00Z');
    const to = T('2019-10-11T09:59:59.999Z');
    const want = tape.filter((tr) => tr.t >= from && tr.t <= to);
    expect(want.length).toBeGreaterThan(1000);
    await withServer({}, async (base, server) => {
      const got = await new BinanceHistory(base, http(), 100).trades('BINANCE:XRPETH', from, to);
      expect(got.map((x) => [x.t, x.p, x.v, x.seq])).toEqual(want.map((x) => [x.t, x.p, x.v, Number(x.i)]));
      expect(server.requests.every((r) => r.status === 200 && r.path === '/api/v3/aggTrades')).toBe(true);
      expect(server.requests.length).toBeGreaterThanOrEqual(Math.ceil(want.length / 100));
    });
    // at Binance's own page size, a quiet span takes one request an hour (the 1-hour rule)
    await withServer({}, async (base, server) => {
      const got = await new BinanceHistory(base, http()).trades('XRPETH', from, to);
      expect(got).toHaveLength(want.length);
      expect(server.requests).toHaveLength(10);
    });
  });

  it('provider-server keeps Binance’s rules: a span of an hour or more, fromId with a time, a bad symbol, each in Binance’s error shape', async () => {
    await withServer({}, async (base) => {
      const get = async (q: string) => {
        const res = await fetch(`${base}/api/v3/aggTrades?${q}`);
        return [res.status, await res.json()];
      };
      expect(await get(`symbol=XRPETH&startTime=${T('2019-10-11T00:00:00Z')}&endTime=${T('2019-10-11T01:00:00Z')}`)).toEqual([
        400,
        { code: -1127, msg: 'More than 1 hours between startTime and endTime.' },
      ]);
      expect(await get(`symbol=XRPETH&fromId=13519807&startTime=${T('2019-10-11T00:00:00Z')}`)).toEqual([
        400,
        { code: -1128, msg: 'Combination of optional parameters invalid.' },
      ]);
      expect(await get('symbol=XRPBTC&fromId=1')).toEqual([400, { code: -1121, msg: 'Invalid symbol.' }]);
      const [status, first] = (await get('symbol=XRPETH&fromId=13519807&limit=2')) as [number, { a: number; m: boolean }[]];
      expect(status).toBe(200);
      expect(first.map((x) => x.a)).toEqual([13519807, 13519808]);
      // the tape's side: the buyer was the maker
      expect(first[0]!.m).toBe(true);
    });
  });

  it('klines carry VWAP (quote volume / volume) and trade counts; Binance’s zero-volume minutes are left out; paged by 1,000', async () => {
    const from = T('2019-10-11T00:00:00Z');
    const to = T('2019-10-11T23:59:59.999Z');
    await withServer({ pageSize: 200 }, async (base, server) => {
      const got = await new BinanceHistory(base, http(), 200).candles('BINANCE:XRPETH', from, to);
      const oracle = loadKlines().filter((k) => k[0] >= from && k[0] <= to && k[5] > 0);
      expect(got.map((c) => [c.start, c.open, c.high, c.low, c.close])).toEqual(oracle.map((k) => k.slice(0, 5)));
      got.forEach((c, i) => expect(c.volume).toBeCloseTo(oracle[i]![5], 6));
      const day = tape.filter((tr) => tr.t >= from && tr.t <= to);
      expect(got.reduce((n, c) => n + c.n!, 0)).toBe(day.length);
      const first = day.filter((tr) => tr.t < from + 60_000);
      const vwap = first.reduce((s, tr) => s + Number(tr.p) * tr.v, 0) / first.reduce((s, tr) => s + tr.v, 0);
      expect(got[0]!.vwap).toBeCloseTo(vwap, 12);
      // the stand-in answers flat minutes too, as Binance does: more than the candles kept, 200 a page
      const served = (await (
        await fetch(`${base}/api/v3/klines?symbol=XRPETH&interval=1m&startTime=${from}&endTime=${to}&limit=1000`)
      ).json()) as unknown[];
      expect(served.length).toBe(200);
      expect(server.requests.filter((r) => r.path === '/api/v3/klines').length).toBeGreaterThan(5);
    });
  });

  it('a 429 with Retry-After is waited out, then the span is fetched', async () => {
    await withServer(
      {
        faults: [
          { path: /aggTrades/, status: 429, times: 1, headers: { 'Retry-After': '1' }, body: '{"code":-1003,"msg":"Too many requests."}' },
        ],
      },
      async (base, server) => {
        const got = await new BinanceHistory(base, http()).trades('XRPETH', T('2019-10-11T00:00:00Z'), T('2019-10-11T00:59:59.999Z'));
        expect(got.length).toBeGreaterThan(0);
        expect(server.requests.map((r) => r.status)).toEqual([429, 200]);
        expect(server.requests[1]!.at - server.requests[0]!.at).toBeGreaterThanOrEqual(950);
      },
    );
  });

  it('an unknown symbol, a ban (418) and a restricted location (451) each say what is wrong and what to do', async () => {
    await withServer({}, async (base) => {
      const err = (await new BinanceHistory(base, http()).trades('BINANCE:XRP-ETH', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(err).toBeInstanceOf(ProviderError);
      expect(err.message).toMatch(
        /^binance: Binance has no symbol XRP-ETH \(configured as BINANCE:XRP-ETH\) \(Binance -1121: Invalid symbol\.\)/,
      );
      expect(err.message).toMatch(/base and quote asset in capitals with no separator, e\.g\. XRPETH/);
      expect([err.permanent, err.symbol]).toEqual([true, 'BINANCE:XRP-ETH']);
    });
    const faults: Fault[] = [
      {
        path: /klines/,
        status: 418,
        times: 1,
        headers: { 'Retry-After': '120' },
        body: '{"code":-1003,"msg":"Way too many requests; IP banned."}',
      },
      { path: /aggTrades/, status: 451, times: 1, body: '{"code":0,"msg":"Service unavailable from a restricted location."}' },
    ];
    await withServer({ faults }, async (base) => {
      const b = new BinanceHistory(base, http());
      const ban = (await b.candles('XRPETH', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(ban.message).toMatch(/banned this IP address for 120 s \(HTTP 418\).*lower BACKFILL_RATE/);
      expect([ban.permanent, ban.symbol]).toEqual([true, undefined]);
      const where = (await b.trades('XRPETH', 0, 1).catch((e: unknown) => e)) as ProviderError;
      expect(where.message).toMatch(/HTTP 451 .*refuses requests from this location.*BINANCE_REST_URL/);
    });
  });

  it('FEED=binance makes Binance the history provider, in ticks, within its request weight', () => {
    const cfg = loadConfig({ FEED: 'binance', MODE: 'replay', KEY_PREFIX: 'x' });
    expect([cfg.backfillProvider, cfg.backfillMode, cfg.backfillRate, cfg.binanceRestUrl]).toEqual([
      'binance',
      'ticks',
      240,
      'https://api.binance.com',
    ]);
    expect(loadConfig({ MODE: 'replay', KEY_PREFIX: 'x' }).backfillProvider).toBe('finnhub');
  });
});

describe('the backfill role on Binance', () => {
  const redis = testRedis();
  afterAll(() => redis.quit());

  it('a symbol Binance does not know fails its own request; backfill stays on for the others', async () => {
    const keys = testKeys('bf-binance-symbol');
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    await withServer({}, async (base, server) => {
      const cfg = loadConfig({
        INTERVALS: '1min,1h',
        KEY_PREFIX: keys.prefix,
        MODE: 'replay',
        BACKFILL: 'on',
        FEED: 'binance',
        BINANCE_REST_URL: base,
        BACKFILL_RATE: '6000',
      });
      const service = new BackfillService(redis, cfg, keys, log);
      await service.start();
      try {
        const live = tape.find((tr) => tr.t >= T('2019-10-11T01:00:00Z'))!;
        const req = (id: string, symbol: string) => ({
          id,
          partition: 0,
          symbol,
          from: T('2019-10-11T00:30:00Z'),
          to: live.t,
          p: live.p,
          v: live.v,
        });
        await service.handle(req('1-0', 'BINANCE:XRPUSDX'));
        await service.handle(req('2-0', 'BINANCE:XRPETH'));
      } finally {
        await service.stop();
      }
      expect(server.requests.map((r) => r.status)).toEqual([400, 200]);
      const said = lines.map((l) => JSON.parse(l) as { msg: string; reason?: string });
      expect(said.find((l) => l.reason?.includes('no symbol XRPUSDX'))?.msg).toMatch(/backfill failed/);
      expect(said.some((l) => /backfill is off/.test(l.msg))).toBe(false);
      expect(said.some((l) => l.msg === 'backfilled')).toBe(true);
    });
  });
});

describe('historical mode from Binance', () => {
  let server: ProviderServer;
  let base = '';
  beforeAll(async () => {
    server = new ProviderServer(tape);
    base = await server.start();
  });
  afterAll(() => server.stop());
  // the tape runs from 2019-10-10 20:00 to 2019-10-13 07:19 New York time
  const args = (symbols: string) => ['backfill', '--symbols', symbols, '--from', '2019-10-10', '--to', '2019-10-14'];
  const env = (dataDir: string, mode: string) => ({
    DATA_DIR: dataDir,
    BACKFILL_PROVIDER: 'binance',
    BACKFILL_MODE: mode,
    BINANCE_REST_URL: base,
    BACKFILL_RATE: '100000',
    INTERVALS: '1min,5min,1h',
    CSV_EXTRA_COLUMNS: 'true',
  });

  it('ticks (aggregate trades): every bar equals Binance’s own klines, every trade counted once', async () => {
    const dataDir = tempDir('binance-hist-ticks');
    const res = await runCli(args('BINANCE:XRPETH'), env(dataDir, 'ticks'));
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/backfill done: \d+ bars written, 0 already there, from 12477 trades \(binance ticks\)/);
    expect(
      klineProblems(dataDir, [
        ['1min', 1],
        ['5min', 5],
        ['1h', 60],
      ]),
    ).toEqual([]);
    const { header, rows } = readCsv(csvPath(dataDir, '1min', 'BINANCE:XRPETH'));
    expect(header).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions,complete,sources');
    expect(rows.every((r) => Number.isFinite(r.vwap) && r.vwap >= r.low && r.vwap <= r.high)).toBe(true);
    const lines = readFileSync(csvPath(dataDir, '1min', 'BINANCE:XRPETH'), 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1);
    expect(new Set(lines.map((r) => r.split(',')[9]))).toEqual(new Set(['binance-trades']));
  });

  it('candles (klines): OHLCV equal to Binance’s klines, VWAP and trade count from the klines; an unknown symbol is named, the other filled', async () => {
    const dataDir = tempDir('binance-hist-candles');
    const ticksDir = tempDir('binance-hist-candles-ticks');
    const res = await runCli(args('BINANCE:XRPUSDX,BINANCE:XRPETH'), env(dataDir, 'candles'));
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^candlewick backfill: BINANCE:XRPUSDX not filled: binance: Binance has no symbol XRPUSDX .*e\.g\. XRPETH/m);
    expect(res.stdout).toMatch(/backfill done: \d+ bars written, 0 already there, from 2469 candles \(binance candles\)/);
    const ticks = await runCli(args('BINANCE:XRPETH'), env(ticksDir, 'ticks'));
    expect(ticks.code).toBe(0);
    for (const [iv, minutes] of [
      ['1min', 1],
      ['5min', 5],
      ['1h', 60],
    ] as const) {
      const { rows } = readCsv(csvPath(dataDir, iv, 'BINANCE:XRPETH'));
      expect(compareBars(rows, rollUpKlines(loadKlines(), minutes)), iv).toEqual([]);
      // the klines' VWAP and trade counts: the same as the trades give, to the CSV's digits
      const want = readCsv(csvPath(ticksDir, iv, 'BINANCE:XRPETH')).rows;
      expect(rows.map((r) => r.n)).toEqual(want.map((r) => r.n));
      rows.forEach((r, k) => expect(Math.abs(r.vwap - want[k]!.vwap), `${iv} ${r.timestamp}`).toBeLessThanOrEqual(1e-9 * r.vwap));
      expect(rows.reduce((n, r) => n + r.n, 0)).toBe(12477);
    }
    const minutes = readFileSync(csvPath(dataDir, '1min', 'BINANCE:XRPETH'), 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1);
    expect(minutes).toHaveLength(2469);
    expect(new Set(minutes.map((r) => r.split(',')[9]))).toEqual(new Set(['binance-candles']));
  });
});
