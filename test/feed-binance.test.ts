import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { makeKeys, readTape } from '@candlewick/common';
import { ReplayServer } from '@candlewick/ingestor';
import { freePort } from '@candlewick/cli';
import {
  BUNDLED_TAPE,
  csvOutputs,
  stackWithIngestKilled,
  ingested,
  klineProblems,
  redisUrl,
  runCli,
  tempDir,
  testRedis,
  uniquePrefix,
} from './helpers.js';

/**
 * FEED=binance end to end: the Binance adapter (packages/ingestor/src/feeds/binance.ts) against the
 * project's own Binance-protocol replay server, in real processes on a real Redis.
 */
const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());

describe('FEED=binance', () => {
  it("the bundled tape through Binance's protocol, two aggregators: every bar equals Binance's klines, every file the same bytes as through Finnhub's", async () => {
    const binanceDir = tempDir('binance-feed');
    const bin = await runCli(
      ['stack'],
      {
        FEED: 'binance',
        MODE: 'replay',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('binance-feed'),
        DATA_DIR: binanceDir,
        EXIT_WHEN_IDLE_MS: '1500',
        AGGREGATORS: '2',
        STREAM_PARTITIONS: '2',
      },
      150_000,
    );
    expect(bin.code, bin.stdout.slice(-3000)).toBe(0);
    expect(bin.stdout).toMatch(/feed connected; subscribing.*feed=Binance/);
    expect(bin.stdout).toMatch(/trades in\s+12477\n/);
    expect(bin.stdout).toMatch(/merged\s+12477\n/);
    expect(bin.stdout).toMatch(/late\s+0\n/);
    expect(klineProblems(binanceDir)).toEqual([]);

    const finnhubDir = tempDir('finnhub-feed');
    const fin = await runCli(
      ['stack'],
      { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('finnhub-feed'), DATA_DIR: finnhubDir, EXIT_WHEN_IDLE_MS: '1500' },
      150_000,
    );
    expect(fin.code, fin.stdout.slice(-3000)).toBe(0);
    const a = csvOutputs(binanceDir);
    expect(a.size).toBe(5);
    expect(a).toEqual(csvOutputs(finnhubDir));
  }, 320_000);

  it('the same day replayed twice into one Redis: the second time every trade is a duplicate, every file unchanged', async () => {
    const dir = tempDir('binance-twice');
    const env = {
      FEED: 'binance',
      MODE: 'replay',
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('binance-twice'),
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '1500',
    };
    const first = await runCli(['stack'], env, 150_000);
    expect(first.code, first.stdout.slice(-3000)).toBe(0);
    const files = csvOutputs(dir);
    const second = await runCli(['stack'], env, 150_000);
    expect(second.code, second.stdout.slice(-3000)).toBe(0);
    expect(second.stdout).toMatch(/duplicates\s+12477\b/);
    expect(second.stdout).toMatch(/late\s+0\n/);
    expect(csvOutputs(dir)).toEqual(files);
    expect(klineProblems(dir)).toEqual([]);
  }, 320_000);

  it('the ingestor killed -9 mid-tape and restarted: its new connection gets the tape from the start, every trade counted once', async () => {
    const { res, dir } = await stackWithIngestKilled('binance');
    expect(res.stdout).toMatch(/merged\s+12477\n/);
    expect(klineProblems(dir)).toEqual([]);
  }, 200_000);

  it("1,000 pairs subscribed within Binance's limit of 5 messages a second: one connection, never closed for it", async () => {
    // the stand-in closes a connection past 5 incoming messages a second, as Binance does
    const server = new ReplayServer(
      readTape(BUNDLED_TAPE).slice(0, 300),
      { port: 0, speed: 0, frameTrades: 100, settleMs: 1500, feed: 'binance' },
      quiet,
    );
    const port = await server.start();
    const prefix = uniquePrefix('binance-pairs');
    const symbols = ['BINANCE:XRPETH', ...Array.from({ length: 999 }, (_, k) => `P${k}USDT`)];
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'binance',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: prefix,
        BINANCE_WS_URL: `ws://127.0.0.1:${port}/stream`,
        SYMBOLS: symbols.join(','),
      },
      60_000,
      9000,
    );
    await server.stop();
    expect(server.connections).toBe(1);
    expect(res.stdout).not.toMatch(/feed disconnected|the feed reported an error/);
    expect(res.stdout).toMatch(/"feed":"Binance".*"symbols":1000.*feed connected; subscribing/);
    // the one subscribed pair of the tape came through, every trade of it
    expect(await ingested(redis, makeKeys(prefix))).toBe(300);
  });

  it('nothing answering at BINANCE_WS_URL: each attempt said with its retry, and past STALE_MS what to check', async () => {
    const port = await freePort();
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'binance',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('binance-unreachable'),
        BINANCE_WS_URL: `ws://127.0.0.1:${port}/stream`,
        SYMBOLS: 'BTCUSDT',
        STALE_MS: '1000',
      },
      30_000,
      5000,
    );
    expect(res.stdout).toMatch(/feed connection failed; retrying/);
    expect(res.stdout).toMatch(
      new RegExp(
        `cannot reach Binance at ws://127\\.0\\.0\\.1:${port}/stream for \\d+ s \\(.*ECONNREFUSED.*\\): check this host's network \\(DNS, a firewall or proxy\\) and BINANCE_WS_URL`,
      ),
    );
    // it never connected: nothing was "disconnected"
    expect(res.stdout).not.toMatch(/feed disconnected/);
  });

  it("a replay of a tape without the symbols asked for says so, naming the tape's", async () => {
    const res = await runCli(
      ['stack'],
      {
        FEED: 'binance',
        MODE: 'replay',
        SYMBOLS: 'BTCUSDT',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('binance-none'),
        DATA_DIR: tempDir('binance-none'),
        EXIT_WHEN_IDLE_MS: '1500',
      },
      120_000,
    );
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(res.stdout).toMatch(/none of the symbols subscribed is on the tape.*BINANCE:XRPETH/);
  });

  it('Binance refusing this location (HTTP 451): exit 2 at once, saying so, never retrying', async () => {
    const server = new ReplayServer(
      readTape(BUNDLED_TAPE).slice(0, 10),
      { port: 0, speed: 0, frameTrades: 10, feed: 'binance', refuse: () => ({ status: 451 }) },
      quiet,
    );
    const port = await server.start();
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'binance',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('binance-451'),
        BINANCE_WS_URL: `ws://127.0.0.1:${port}/stream`,
        SYMBOLS: 'BTCUSDT',
      },
      20_000,
    );
    await server.stop();
    expect(res.code).toBe(2);
    expect(res.stdout).toMatch(/Binance refused the connection \(HTTP 451\): it serves no market data to this location/);
    expect(server.connections).toBe(0);
  });
});
