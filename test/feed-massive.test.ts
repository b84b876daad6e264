import { afterAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { pino } from 'pino';
import { readTape } from '@candlewick/common';
import { ReplayServer } from '@candlewick/ingestor';
import { freePort } from '@candlewick/cli';
import {
  LEAN_AIG_TAPE,
  csvOutputs,
  filesUnder,
  stackWithIngestKilled,
  redisUrl,
  runCli,
  tempDir,
  testRedis,
  uniquePrefix,
} from './helpers.js';

/**
 * FEED=massive end to end: the Massive adapter (packages/ingestor/src/feeds/massive.ts) against the
 * project's own Massive-protocol replay server (replay/massive.ts), in real processes on a real Redis.
 */
const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());

describe('FEED=massive', () => {
  it("the AIG day through Massive's protocol: every file the same bytes as the same tape through Finnhub's", async () => {
    const massiveDir = tempDir('massive-feed');
    const key = 'replay-key-7f3a9c';
    const mas = await runCli(
      ['stack'],
      {
        FEED: 'massive',
        MODE: 'replay',
        // the stand-in checks the login against it; the ingestor sends it
        MASSIVE_API_KEY: key,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('massive-feed'),
        DATA_DIR: massiveDir,
        EXIT_WHEN_IDLE_MS: '1500',
        AGGREGATORS: '2',
        STREAM_PARTITIONS: '2',
      },
      150_000,
    );
    expect(mas.code, mas.stdout.slice(-3000)).toBe(0);
    expect(mas.stdout).toMatch(/feed connected; subscribing.*feed=Massive/);
    // without REPLAY_TAPE: the bundled equity day, not the Binance tape
    expect(mas.stdout).toMatch(/replay mode: replaying a recorded tape in the massive protocol.*aig_20131010_trade\.zip/);
    const tradesIn = /trades in\s+(\d+)\n/.exec(mas.stdout)?.[1];
    expect(Number(tradesIn)).toBeGreaterThan(50_000);
    expect(mas.stdout).toMatch(new RegExp(`merged\\s+${tradesIn}\\n`));
    expect(mas.stdout).not.toMatch(/duplicates\s+[1-9]/);
    expect(`${mas.stdout}${mas.stderr}`).not.toContain(key);
    expect(filesUnder(massiveDir).some((text) => text.includes(key))).toBe(false);

    const finnhubDir = tempDir('massive-feed-finnhub');
    const fin = await runCli(
      ['stack'],
      {
        REPLAY_TAPE: LEAN_AIG_TAPE,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('massive-feed-finnhub'),
        DATA_DIR: finnhubDir,
        EXIT_WHEN_IDLE_MS: '1500',
      },
      150_000,
    );
    expect(fin.code, fin.stdout.slice(-3000)).toBe(0);
    expect(fin.stdout).toMatch(new RegExp(`trades in\\s+${tradesIn}\\n`));
    const a = csvOutputs(massiveDir);
    expect(a.size).toBe(5);
    expect(a).toEqual(csvOutputs(finnhubDir));
  }, 320_000);

  it('the ingestor killed -9 mid-tape and restarted: its new connection gets the tape from the start, every trade counted once', async () => {
    const { res } = await stackWithIngestKilled('massive');
    // every trade of the tape merged once: as many as the stand-in's tape has
    const trades = readTape(LEAN_AIG_TAPE).length;
    expect(res.stdout).toMatch(new RegExp(`merged\\s+${trades}\\n`));
  }, 200_000);

  it('a wrong MASSIVE_API_KEY: exit 2 at once, saying so, never retrying, the key in no log', async () => {
    const server = new ReplayServer(
      readTape(LEAN_AIG_TAPE).slice(0, 10),
      { port: 0, speed: 0, frameTrades: 10, feed: 'massive', token: 'the-right-key' },
      quiet,
    );
    const port = await server.start();
    const dir = tempDir('massive-wrong-key');
    const wrong = 'wrong-key-5d1e8b2c';
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'massive',
        MASSIVE_API_KEY: wrong,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('massive-wrong-key'),
        DATA_DIR: dir,
        MASSIVE_WS_URL: `ws://127.0.0.1:${port}/stocks`,
        SYMBOLS: 'AIG',
        LOG_LEVEL: 'debug',
      },
      20_000,
    );
    await server.stop();
    expect(res.code).toBe(2);
    expect(res.stdout).toMatch(/Massive refused MASSIVE_API_KEY \(auth_failed: authentication failed\): check the key/);
    expect(res.stdout).toMatch(/ingest cannot continue/);
    expect(server.connections).toBe(1);
    expect(`${res.stdout}${res.stderr}`).not.toContain(wrong);
    expect(filesUnder(dir).some((text) => text.includes(wrong))).toBe(false);
  });

  it("Massive's connection limit (max_connections): said, the connection closed, and no new one for a minute", async () => {
    const port = await freePort();
    const wss = new WebSocketServer({ port, host: '127.0.0.1' });
    let connections = 0;
    const asked: string[] = [];
    wss.on('connection', (ws) => {
      connections++;
      ws.send('[{"ev":"status","status":"connected","message":"Connected Successfully"}]');
      ws.on('message', (data) => {
        asked.push(JSON.parse(data.toString()).action as string);
        ws.send('[{"ev":"status","status":"max_connections","message":"Maximum number of websocket connections exceeded."}]');
        ws.close();
      });
    });
    await new Promise((r) => wss.once('listening', r));
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'massive',
        MASSIVE_API_KEY: 'some-key-4c9e',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('massive-limit'),
        MASSIVE_WS_URL: `ws://127.0.0.1:${port}/stocks`,
        SYMBOLS: 'AIG',
      },
      30_000,
      4000,
    );
    await new Promise((r) => wss.close(r));
    expect(res.stdout).toMatch(
      /this key has reached its number of WebSocket connections at once \(max_connections: Maximum number.*retrying in 60 s/,
    );
    expect(res.code).not.toBe(2);
    expect(connections).toBe(1);
    // the login went first, and nothing was subscribed on a connection that was refused
    expect(asked).toEqual(['auth']);
    expect(res.stdout + res.stderr).not.toContain('some-key-4c9e');
  });
});
