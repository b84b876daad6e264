import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderServer } from '@candlewick/backfill';
import { readTapeFile } from '@candlewick/ingestor';
import { csvPath } from '@candlewick/writer';
import { ROOT, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * Backfill against a local HTTP server that serves Finnhub candles, Massive aggregates and Massive
 * trades computed from a real tape (AIG, 2013-10-10, bundled). The stack starts in the middle of
 * the tape (REPLAY_FROM); with backfill its bars from the start of the current hour on must equal a
 * run that saw the whole tape live.
 */
const TICK = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');
const FROM = '2013-10-10T12:17:30.000-04:00';
const HOUR = Date.parse('2013-10-10T12:00:00-04:00');
const INTERVALS = ['1min', '5min', '15min', '30min', '1h'];
const KEY = 'test-massive-key';
const TOKEN = 'test-finnhub-token';

let server: ProviderServer;
let base = '';
let whole = '';

function rows(dataDir: string, interval: string): string[] {
  return readFileSync(csvPath(dataDir, interval, 'AIG'), 'utf8').trimEnd().split('\n').slice(1);
}
const startOf = (row: string) => Date.parse(row.slice(0, row.indexOf(',')));
const cells = (row: string) => row.split(',');

beforeAll(async () => {
  server = new ProviderServer(readTapeFile(TICK), { finnhubToken: TOKEN, massiveKey: KEY, pageSize: 2000 });
  base = await server.start();
  whole = tempDir('bf-whole');
  const res = await runCli(['stack'], { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('bf-whole'), DATA_DIR: whole, REPLAY_TAPE: TICK, EXIT_WHEN_IDLE_MS: '500' });
  expect(res.code).toBe(0);
});
afterAll(() => server.stop());

function midTape(name: string, env: Record<string, string>) {
  const dataDir = tempDir(name);
  return runCli(['stack'], {
    REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix(name), DATA_DIR: dataDir, REPLAY_TAPE: TICK, REPLAY_FROM: FROM,
    EXIT_WHEN_IDLE_MS: '500', BACKFILL: 'on', BACKFILL_RATE: '6000', MODE: 'replay', ...env,
  }).then((res) => ({ res, dataDir }));
}

describe('backfill at start-up, in the middle of a trading day', () => {
  it('with Massive trades (tick mode): every interval equals the run that saw the whole tape live', async () => {
    const { res, dataDir } = await midTape('bf-ticks', { BACKFILL_PROVIDER: 'massive', MASSIVE_API_KEY: KEY, MASSIVE_REST_URL: base });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/backfilled/);
    expect(res.stdout).not.toContain(KEY);
    for (const iv of INTERVALS) {
      const want = rows(whole, iv).filter((r) => startOf(r) >= HOUR);
      const got = rows(dataDir, iv);
      expect(got.map((r) => r.split(',')[0]), iv).toEqual(want.map((r) => r.split(',')[0]));
      for (let i = 0; i < want.length; i++) {
        const [w, g] = [cells(want[i]!), cells(got[i]!)];
        // timestamp, OHLC, volume and count exactly; VWAP up to float summation order
        expect([...g.slice(0, 5), g[6], g[7]], `${iv} ${w[0]}`).toEqual([...w.slice(0, 5), w[6], w[7]]);
        expect(Number(g[5])).toBeCloseTo(Number(w[5]), 9);
      }
    }
    // the 1-minute bars before the first live trade came from the provider only
    expect(rows(dataDir, '1min')[0]!.startsWith('2013-10-10T12:00:00-04:00,')).toBe(true);
  });

  it('with Finnhub candles: OHLCV exact where minutes are whole, VWAP and count left empty, the live minute’s bars incomplete', async () => {
    const { res, dataDir } = await midTape('bf-candles', {
      BACKFILL_PROVIDER: 'finnhub', FINNHUB_TOKEN: TOKEN, FINNHUB_REST_URL: `${base}/api/v1`, CSV_EXTRA_COLUMNS: 'true',
    });
    expect(res.code).toBe(0);
    expect(res.stdout).not.toContain(TOKEN);
    const liveMinute = Date.parse('2013-10-10T12:17:00-04:00');
    for (const iv of INTERVALS) {
      const ms = { '1min': 1, '5min': 5, '15min': 15, '30min': 30, '1h': 60 }[iv]! * 60_000;
      const want = new Map(rows(whole, iv).map((r) => [startOf(r), cells(r)]));
      const header = readFileSync(csvPath(dataDir, iv, 'AIG'), 'utf8').split('\n')[0];
      expect(header).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions,complete,sources');
      for (const r of rows(dataDir, iv)) {
        const g = cells(r);
        const start = startOf(r);
        const w = want.get(start)!;
        const holdsLiveMinute = start <= liveMinute && liveMinute < start + ms;
        const fromCandles = start < liveMinute;
        if (holdsLiveMinute) {
          expect(g[8], `${iv} ${g[0]}`).toBe('false');
        } else {
          expect(g[8], `${iv} ${g[0]}`).toBe('true');
          expect([...g.slice(0, 5), g[6]], `${iv} ${g[0]}`).toEqual([...w.slice(0, 5), w[6]]);
        }
        if (fromCandles) {
          // candles without VWAP or trade counts: unknown, never invented
          expect([g[5], g[7]], `${iv} ${g[0]}`).toEqual(['', '']);
          expect(g[9]).toMatch(/finnhub-candles/);
        } else {
          expect(g[9]).toBe('live');
          if (!holdsLiveMinute) expect(g[7]).toBe(w[7]);
        }
      }
    }
    expect(rows(dataDir, '1min').filter((r) => startOf(r) < liveMinute)).toHaveLength(17);
  });

  it('a 403 (premium endpoint) warns once; the stack runs on without backfill and marks the first bars incomplete', async () => {
    const refusing = new ProviderServer([], { finnhubToken: TOKEN, faults: [{ path: /candle/, status: 403, times: 100, body: '{"error":"You don\'t have access to this resource."}' }] });
    const url = await refusing.start();
    try {
      const { res, dataDir } = await midTape('bf-403', {
        BACKFILL_PROVIDER: 'finnhub', FINNHUB_TOKEN: TOKEN, FINNHUB_REST_URL: `${url}/api/v1`, CSV_EXTRA_COLUMNS: 'true',
      });
      expect(res.code).toBe(0);
      expect(res.stdout.match(/backfill is off for this run/g)).toHaveLength(1);
      expect(res.stdout).toMatch(/HTTP 403/);
      expect(refusing.requests).toHaveLength(1);
      const first = rows(dataDir, '1min')[0]!;
      expect(first.startsWith('2013-10-10T12:17:00-04:00,')).toBe(true);
      expect(cells(first)[8]).toBe('false');
      expect(cells(rows(dataDir, '1h')[0]!)[8]).toBe('false');
      expect(cells(rows(dataDir, '1min')[1]!)[8]).toBe('true');
    } finally {
      await refusing.stop();
    }
  });
});
