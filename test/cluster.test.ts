import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { partitionOf } from '@candlewick/common';
import { PrivateRedisCluster } from '@candlewick/cli';
import { BUNDLED_TAPE, LEAN_AIG_TAPE, csvOutputs, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * A local 3-master Redis Cluster (redis-server --cluster-enabled yes, redis-cli --cluster create):
 * the pipeline with several stream partitions runs on it and writes the same files as on one Redis.
 */
describe('Redis Cluster', () => {
  const cluster = new PrivateRedisCluster(tempDir('cluster-redis'), process.env.REDIS_SERVER_BIN ?? 'redis-server');
  let url = '';

  beforeAll(async () => {
    url = await cluster.start();
  }, 60_000);
  afterAll(() => cluster.stop());

  it('5 partitions and 2 aggregators on a 3-master cluster write the files one Redis writes, byte for byte', async () => {
    // the two symbols fall in different partitions, whose keys hash to different masters (checked below)
    expect(partitionOf('BINANCE:XRPETH', 5)).not.toBe(partitionOf('AIG', 5));
    const tapes = `${BUNDLED_TAPE},${LEAN_AIG_TAPE}`;
    const prefix = uniquePrefix('cluster');
    const onCluster = tempDir('cluster-out');
    const res = await runCli(
      ['stack'],
      {
        REDIS_URL: url,
        REDIS_CLUSTER: 'on',
        KEY_PREFIX: prefix,
        DATA_DIR: onCluster,
        EXIT_WHEN_IDLE_MS: '500',
        REPLAY_TAPE: tapes,
        STREAM_PARTITIONS: '5',
        AGGREGATORS: '2',
        AGGREGATOR_BATCH: '300',
      },
      180_000,
    );
    expect(res.code, res.stdout.slice(-2000)).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+66795\n/);
    expect(res.stdout).toMatch(/merged\s+66795\n/);

    const single = tempDir('cluster-single');
    const ref = await runCli(
      ['stack'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('cluster-ref'),
        DATA_DIR: single,
        EXIT_WHEN_IDLE_MS: '500',
        REPLAY_TAPE: tapes,
      },
      180_000,
    );
    expect(ref.code, ref.stdout.slice(-2000)).toBe(0);

    const a = csvOutputs(onCluster);
    const b = csvOutputs(single);
    expect(a.size).toBe(10); // 2 symbols x 5 intervals
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    for (const [file, text] of b) expect(a.get(file) === text, file).toBe(true);

    // the two non-empty raw trade streams really lie on different masters
    const holders: number[] = [];
    for (const node of url.split(',')) {
      const r = new Redis(node);
      try {
        let cursor = '0';
        let found = 0;
        do {
          const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:trades:{*}`, 'COUNT', 1000);
          cursor = next;
          for (const k of keys) if ((await r.xlen(k)) > 0) found++;
        } while (cursor !== '0');
        holders.push(found);
      } finally {
        r.disconnect();
      }
    }
    expect([...holders].sort(), `non-empty trade streams per master: ${holders.join(',')}`).toEqual([0, 1, 1]);
  }, 400_000);

  it('one master with an evicting maxmemory-policy is refused (exit 2), naming it', async () => {
    const third = url.split(',')[2]!;
    const r = new Redis(third);
    try {
      await r.config('SET', 'maxmemory-policy', 'volatile-lru');
      const res = await runCli(
        ['write'],
        { REDIS_URL: url, REDIS_CLUSTER: 'on', KEY_PREFIX: uniquePrefix('cluster-evict'), DATA_DIR: tempDir('cluster-evict') },
        60_000,
      );
      expect(res.code, res.stdout.slice(-1500) + res.stderr).toBe(2);
      expect(res.stderr).toContain(`at ${new URL(third).host} has maxmemory-policy volatile-lru`);
      expect(res.stderr.match(/has maxmemory-policy/g)).toHaveLength(1);
    } finally {
      await r.config('SET', 'maxmemory-policy', 'noeviction');
      r.disconnect();
    }
  }, 90_000);
});
