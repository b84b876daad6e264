import { afterAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { pino } from 'pino';
import { makeKeys } from '@candlewick/common';
import { readTape } from '@candlewick/common';
import { ReplayServer } from '@candlewick/ingestor';
import { csvPath } from '@candlewick/common';
import { freePort } from '@candlewick/cli';
import {
  BUNDLED_TAPE,
  ingested,
  compareBars,
  loadKlines,
  readCsv,
  redisUrl,
  rollUpKlines,
  runCli,
  runThroughOutage,
  tempDir,
  testRedis,
  uniquePrefix,
} from './helpers.js';

const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());
const TOKEN = 'fake-feed-token-7';

describe('feed lifecycle', () => {
  it('a refused token stops the ingestor with exit code 2 and a message, never retrying, never logging the token', async () => {
    const server = new ReplayServer(
      readTape(BUNDLED_TAPE).slice(0, 10),
      { port: 0, speed: 0, frameTrades: 10, token: 'the-right-one' },
      quiet,
    );
    const port = await server.start();
    const res = await runCli(
      ['ingest'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('auth'),
        FINNHUB_TOKEN: TOKEN,
        FINNHUB_WS_URL: `ws://127.0.0.1:${port}`,
        SYMBOLS: 'BINANCE:XRPETH',
      },
      20_000,
    );
    await server.stop();
    expect(res.code).toBe(2);
    expect(res.stdout).toMatch(/refused FINNHUB_TOKEN \(HTTP 401\)/);
    expect(res.stdout).toMatch(/cannot continue/);
    expect(res.stdout.match(/refused FINNHUB_TOKEN/g)).toHaveLength(2); // the error, and the fatal line: one attempt
    expect(res.stdout + res.stderr).not.toContain(TOKEN);
  });

  it('HTTP 429 at the handshake: waits Retry-After, then connects', async () => {
    const tape = readTape(BUNDLED_TAPE).slice(0, 100);
    const server = new ReplayServer(
      tape,
      {
        port: 0,
        speed: 0,
        frameTrades: 50,
        settleMs: 10,
        refuse: (n) => (n === 1 ? { status: 429, headers: { 'Retry-After': '1' } } : undefined),
      },
      quiet,
    );
    const port = await server.start();
    const prefix = uniquePrefix('429');
    const t0 = Date.now();
    const res = await runCli(
      ['ingest'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: prefix,
        FINNHUB_TOKEN: TOKEN,
        FINNHUB_WS_URL: `ws://127.0.0.1:${port}`,
        SYMBOLS: 'BINANCE:XRPETH',
      },
      30_000,
      2500,
    );
    await server.stop();
    expect(res.stdout).toMatch(/rate limiting this key \(HTTP 429\); retrying in 1 s/);
    expect(await ingested(redis, makeKeys(prefix))).toBe(100);
    expect(Date.now() - t0).toBeGreaterThan(1000);
  });

  it('a silent socket is terminated after STALE_MS and the feed reconnects', async () => {
    const port = await freePort();
    const wss = new WebSocketServer({ port, host: '127.0.0.1' });
    let connections = 0;
    wss.on('connection', () => connections++); // accepts and never says a word
    await new Promise((r) => wss.once('listening', r));
    const res = await runCli(
      ['ingest'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('stale'),
        FINNHUB_TOKEN: TOKEN,
        FINNHUB_WS_URL: `ws://127.0.0.1:${port}`,
        SYMBOLS: 'AAPL',
        STALE_MS: '1000',
      },
      30_000,
      3500,
    );
    await new Promise((r) => wss.close(r));
    expect(res.stdout).toMatch(/no frame from the feed; terminating the socket/);
    expect(connections).toBeGreaterThanOrEqual(2);
    expect(res.stdout).toMatch(/"conn":2/);
  });

  it('the feed dies mid-stream and comes back: reconnect, resubscribe, gap recorded, every trade exactly once', async () => {
    const tape = readTape(BUNDLED_TAPE);
    const half = 6000;
    const dir = tempDir('reconnect');
    const prefix = uniquePrefix('reconnect');
    const { code, out } = await runThroughOutage(tape.slice(0, half), tape.slice(half), {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      FINNHUB_TOKEN: TOKEN,
      SYMBOLS: 'BINANCE:XRPETH',
    });
    const keys = makeKeys(prefix);
    expect(code).toBe(0);
    expect(out).toMatch(/trades in\s+12477\n/);
    expect(out).toMatch(/feed connected; subscribing.*conn=[2-9]/); // a later connection subscribed again
    expect(out).toMatch(/feed outage recorded/);
    const gaps = (await redis.xrange(keys.gaps(), '-', '+')) as [string, string[]][];
    expect(gaps).toHaveLength(1);
    const f = gaps[0]![1];
    const start = Number(f[f.indexOf('start') + 1]);
    const end = Number(f[f.indexOf('end') + 1]);
    expect(end - start).toBeGreaterThanOrEqual(600);
    expect(f[f.indexOf('symbols') + 1]).toBe('BINANCE:XRPETH');
    expect(compareBars(readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows, rollUpKlines(loadKlines(), 1))).toEqual([]);
    expect(out).not.toContain(TOKEN);
  });
});
