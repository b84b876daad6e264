import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AGGREGATOR_GROUP, closeBars, makeKeys } from '@candlewick/common';
import { klineProblems, redisUrl, runCli, tempDir, testRedis, uniquePrefix } from './helpers.js';

/** Entries per stream node (Redis's stream-node-max-entries): what approximate MINID trimming may leave. */
const NODE = 100;

const idMs = (id: string) => Number(id.split('-')[0]);

describe('bounded memory: trimming by age', () => {
  const redis = testRedis();
  afterAll(() => redis.quit());

  it('closeBars trims acknowledged trades older than TRADES_RETENTION, never a pending or undelivered one', async () => {
    const k = makeKeys(uniquePrefix('trim'));
    const stream = k.trades(0);
    // 500 trades appended one a second, 10 to 1.7 minutes ago
    const base = Date.now() - 600_000;
    for (let i = 0; i < 500; i++) await redis.xadd(stream, `${base + i * 1000}-0`, 's', 'X', 'p', '1', 'v', '1', 't', String(i));
    await redis.xgroup('CREATE', stream, AGGREGATOR_GROUP, '0');
    const read = async (consumer: string, n: number, ack: boolean) => {
      const res = (await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, consumer, 'COUNT', n, 'STREAMS', stream, '>')) as [
        string,
        [string, string[]][],
      ][];
      const ids = res[0]![1].map(([id]) => id);
      if (ack) await redis.xack(stream, AGGREGATOR_GROUP, ...ids);
      return ids;
    };
    await read('a', 200, true); // merged
    const pending = await read('dead', 50, false); // read by a worker that died: pending
    await read('a', 150, true); // merged after them; the last 100 were never delivered
    const close = () =>
      closeBars(redis, k, 0, {
        group: AGGREGATOR_GROUP,
        graceMs: 0,
        clock: 'event',
        flush: false,
        retentionMs: 60_000,
        maxBars: 1000,
        amendWindowMs: 0,
      });

    await close();
    const left = (await redis.xrange(stream, '-', '+')).map(([id]) => id);
    // every pending entry and everything after it is kept
    expect(left.slice(-300)).toEqual([...pending, ...left.slice(-250)]);
    expect(left.slice(-300)[0]).toBe(pending[0]);
    // of the 200 merged entries older than the oldest pending one, whole stream nodes went
    expect(left.length).toBeLessThanOrEqual(300 + NODE);
    expect(left.length).toBeLessThan(500);

    // the dead worker's entries are reclaimed and merged, the rest delivered and merged
    await redis.xack(stream, AGGREGATOR_GROUP, ...pending);
    const rest = await read('a', 1000, true);
    expect(rest).toHaveLength(100);
    await close();
    const after = (await redis.xrange(stream, '-', '+')).map(([id]) => id);
    // all 500 are older than the retention: at most one stream node is left, ending with the newest
    expect(after.length).toBeLessThanOrEqual(NODE);
    expect(after.at(-1)).toBe(rest.at(-1));

    // a retention of 0 keeps everything
    const k2 = makeKeys(uniquePrefix('keep'));
    for (let i = 0; i < 300; i++) await redis.xadd(k2.trades(0), `${base + i * 1000}-0`, 's', 'X', 'p', '1', 'v', '1', 't', String(i));
    await redis.xgroup('CREATE', k2.trades(0), AGGREGATOR_GROUP, '$');
    await closeBars(redis, k2, 0, {
      group: AGGREGATOR_GROUP,
      graceMs: 0,
      clock: 'event',
      flush: false,
      retentionMs: 0,
      maxBars: 1000,
      amendWindowMs: 0,
    });
    expect(await redis.xlen(k2.trades(0))).toBe(300);
  });

  it('after a paced replay with a 1 s retention and an aggregator killed mid-batch, nothing pending was trimmed and Redis holds no more than the retention', async () => {
    const prefix = uniquePrefix('retention');
    const dataDir = tempDir('retention');
    const once = mkdtempSync(join(tmpdir(), 'cw-crash-once-'));
    // the dead aggregator's batch stays pending 3 s, three times the retention, before it is reclaimed
    const res = await runCli(
      ['stack'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: prefix,
        DATA_DIR: dataDir,
        EXIT_WHEN_IDLE_MS: '1500',
        AGGREGATORS: '2',
        AGGREGATOR_BATCH: '200',
        INGEST_BATCH: '200',
        RECLAIM_IDLE_MS: '3000',
        CLOSE_EVERY_MS: '100',
        REPLAY_SPEED: '30000',
        REPLAY_SHIFT: 'false',
        TRADES_RETENTION: '1s',
        BARS_RETENTION: '2s',
        CANDLEWICK_CRASH: 'aggregate:read@3',
        CANDLEWICK_CRASH_ONCE_DIR: once,
      },
      180_000,
    );
    const end = Date.now();
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(readdirSync(once)).toEqual(['aggregate_read']);
    expect(res.stdout).toMatch(/merged\s+12477\n/);

    // no trade lost (a trimmed pending entry would be) and none counted twice
    expect(
      klineProblems(dataDir, [
        ['1min', 1],
        ['1h', 60],
      ]),
    ).toEqual([]);

    const k = makeKeys(prefix);
    // the raw stream: the last close came well after the last trade, so at most one stream node is left
    expect(await redis.xlen(k.trades(0))).toBeLessThanOrEqual(NODE);
    expect(await redis.xlen(k.late(0))).toBe(0);
    // no closed bar is kept: the open state and its index are empty, the outbox handed over
    expect(await redis.hlen(k.openBars(0))).toBe(0);
    expect(await redis.zcard(k.openIndex(0))).toBe(0);
    expect(await redis.xlen(k.outbox(0))).toBe(0);
    // the closed-bar streams keep about BARS_RETENTION: of 2,469 one-minute bars published over ~9 s,
    // at most one stream node is older than the retention plus the time from the last write to exit
    const oneMin = (await redis.xrange(k.bars('1min'), '-', '+')).map(([id]) => idMs(id));
    expect(oneMin.filter((t) => t < end - 2000 - 3000).length).toBeLessThanOrEqual(NODE);
    expect(oneMin.length).toBeLessThan(2469);
  }, 200_000);
});
