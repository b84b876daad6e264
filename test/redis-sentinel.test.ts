import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { makeKeys } from '@candlewick/common';
import { ingested, runCli, tempDir, uniquePrefix, waitFor } from './helpers.js';
import { expectFailoverSaid, expectTapeExact, startNode, type Node } from './redis-nodes.js';

/**
 * A master, one replica and three real sentinels (`redis-server --sentinel`, a 1 s down-after): a
 * stack given only REDIS_SENTINELS replays the bundled tape; the master is SIGKILLed mid-run, the
 * sentinels promote the replica, and every role (BullMQ's connections included) follows it on its
 * own. Every bar still equals Binance's klines, every trade counted once.
 */
/** the sentinels' down-after-milliseconds: a master silent this long is down */
const DOWN_AFTER_MS = 1000;

describe('Redis under Sentinel', () => {
  const nodes: Node[] = [];
  afterAll(async () => {
    for (const n of nodes.reverse()) await n.kill();
  });

  async function sentinelSet(name: string) {
    const dir = tempDir(name);
    const master = await startNode(join(dir, 'master'), [], {});
    nodes.push(master);
    const replica = await startNode(join(dir, 'replica'), ['--replicaof', '127.0.0.1', String(master.port)], {});
    nodes.push(replica);
    const sentinels: Node[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await startNode(
        join(dir, `sentinel-${i}`),
        [
          `sentinel monitor mymaster 127.0.0.1 ${master.port} 2`,
          `sentinel down-after-milliseconds mymaster ${DOWN_AFTER_MS}`,
          'sentinel failover-timeout mymaster 4000',
          'sentinel parallel-syncs mymaster 1',
        ],
        {},
        { sentinel: true },
      );
      sentinels.push(s);
      nodes.push(s);
    }
    const watch = new Redis({
      sentinels: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      name: 'mymaster',
      maxRetriesPerRequest: null,
      retryStrategy: () => 100,
      sentinelRetryStrategy: () => 100,
    });
    watch.on('error', () => undefined);
    // the sentinels know each other and the replica before anything is killed
    const probe = new Redis({ host: '127.0.0.1', port: sentinels[0]!.port });
    await waitFor(
      async () => {
        const info = (await probe.call('SENTINEL', 'MASTER', 'mymaster')) as string[];
        const f = (k: string) => Number(info[info.indexOf(k) + 1]);
        return f('num-slaves') === 1 && f('num-other-sentinels') === 2;
      },
      20_000,
      'three sentinels and a replica',
    );
    const promoted = () =>
      waitFor(
        async () => {
          const [, port] = (await probe.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster')) as string[];
          return Number(port) === replica.port;
        },
        30_000,
        'the replica promoted',
      );
    const masterClient = new Redis({ host: '127.0.0.1', port: master.port, retryStrategy: () => null });
    masterClient.on('error', () => undefined);
    const close = () => {
      probe.disconnect();
      watch.disconnect();
      masterClient.disconnect();
    };
    return { master, masterClient, replica, watch, promoted, close, list: sentinels.map((s) => `127.0.0.1:${s.port}`).join(',') };
  }

  function stack(list: string, prefix: string, dataDir: string, env: Record<string, string> = {}) {
    return runCli(
      ['stack'],
      {
        REDIS_SENTINELS: list,
        REDIS_SENTINEL_MASTER: 'mymaster',
        KEY_PREFIX: prefix,
        DATA_DIR: dataDir,
        EXIT_WHEN_IDLE_MS: '3000',
        // paced (~20 s) so the failover falls in the middle of the run
        REPLAY_SPEED: '10000',
        REPLAY_SHIFT: 'false',
        ...env,
      },
      180_000,
    );
  }

  it('the master killed -9 mid-run: the replica is promoted, every role follows, every bar exact', async () => {
    const set = await sentinelSet('redis-sentinel');
    const prefix = uniquePrefix('sentinel');
    const keys = makeKeys(prefix);
    const dataDir = tempDir('redis-sentinel-run');
    try {
      const run = stack(set.list, prefix, dataDir);
      await waitFor(async () => (await ingested(set.watch, keys)) > 3000, 60_000, 'a quarter of the tape ingested');
      const killedAt = Date.now();
      await set.master.kill('SIGKILL');
      await set.promoted();
      const promotedAt = Date.now();
      const promotedMs = promotedAt - killedAt;
      const before = await ingested(set.watch, keys);
      // the roles resume on the new master on their own
      await waitFor(async () => (await ingested(set.watch, keys)) > before, 20_000, 'trades flowing into the promoted replica');
      const resumedMs = Date.now() - killedAt;
      const res = await run;
      console.info(`sentinel failover: replica promoted ${promotedMs} ms after the kill, trades flowing again after ${resumedMs} ms`);
      expectTapeExact(res, dataDir);
      expect(promotedMs).toBeLessThan(15_000);
      // a failover is a routine event: said, not a stack trace; per process (stack, ingest, aggregate,
      // close, write) one WARN when it starts and one INFO when it is over, within down-after + 5 s
      // of the promotion
      const out = res.stdout + res.stderr;
      expect(out).toMatch(/lost the connection to Redis.*sentinel:\/\/mymaster/);
      const backs = expectFailoverSaid(out, dataDir, {
        electedAt: promotedAt,
        withinMs: DOWN_AFTER_MS + 5000,
        mustSee: ['stack', 'ingest', 'aggregate', 'close', 'write'],
      });
      console.info(`roles back ${Math.min(...backs.values())}..${Math.max(...backs.values())} ms after the promotion`);
    } finally {
      set.close();
    }
  }, 240_000);

  it('a promoted replica that missed the last second of writes: the ingestor sends what it held again, every bar exact', async () => {
    const set = await sentinelSet('redis-sentinel-behind');
    const prefix = uniquePrefix('sentinel-behind');
    const keys = makeKeys(prefix);
    const dataDir = tempDir('redis-sentinel-behind-run');
    try {
      // INGEST_RETAIN longer than the failover: the batches the replica never got are still held
      const run = stack(set.list, prefix, dataDir, { INGEST_RETAIN: '30s' });
      await waitFor(async () => (await ingested(set.watch, keys)) > 3000, 60_000, 'a quarter of the tape ingested');
      // the replica is cut off (stopped, its link closed by the master) for a moment, then the
      // master dies: what the master acknowledged meanwhile is on no surviving node
      set.replica.proc.kill('SIGSTOP');
      await set.masterClient.client('KILL', 'TYPE', 'replica');
      const atStop = await ingested(set.watch, keys);
      await waitFor(async () => (await ingested(set.watch, keys)) > atStop + 300, 10_000, 'writes the replica does not have');
      await set.master.kill('SIGKILL');
      set.replica.proc.kill('SIGCONT');
      await set.promoted();
      const res = await run;
      expect(res.stdout).toMatch(/Redis does not have batches it acknowledged/);
      expectTapeExact(res, dataDir);
    } finally {
      set.replica.proc.kill('SIGCONT');
      set.close();
    }
  }, 240_000);
});
