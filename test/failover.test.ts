import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { connectRedis, duplicateRedis, makeKeys, partitionOf, redisLink, watchRedis, type Keys } from '@candlewick/common';
import { PrivateRedisCluster } from '@candlewick/cli';
import {
  BUNDLED_TAPE,
  type CliProcess,
  finishCli,
  klineProblems,
  startCli,
  stopForGood,
  tempDir,
  uniquePrefix,
  waitFor,
} from './helpers.js';
import { expectFailoverSaid } from './redis-nodes.js';

/**
 * A Redis Cluster with replicas (3 masters, 3 replicas, AOF everysec): the master holding the
 * tape's partition is killed -9 mid-replay; its replica takes over after the node timeout, and every
 * role carries on by itself — every bar exact, a failover said in one WARN and one INFO per role.
 * The short node timeout runs in CI; Redis's default (15 s) with `npm run test:failover-default`.
 */

/** The port of the master serving `slot`, as node `via` sees it (undefined while no master serves it). */
async function masterOf(via: Redis, slot: number): Promise<number | undefined> {
  const lines = String(await via.call('CLUSTER', 'NODES'))
    .trim()
    .split('\n');
  for (const line of lines) {
    const [, addr, flags, , , , , state, ...slots] = line.split(' ');
    if (!flags!.includes('master') || flags!.includes('fail') || state !== 'connected') continue;
    for (const r of slots) {
      const [a, b] = r.split('-').map(Number);
      if (slot >= a! && slot <= (b ?? a!)) return Number(addr!.split(':')[1]!.split('@')[0]);
    }
  }
  return undefined;
}

/** The port of the replica of the master on `masterPort`. */
async function replicaOf(via: Redis, masterPort: number): Promise<number> {
  const nodes = String(await via.call('CLUSTER', 'NODES'))
    .trim()
    .split('\n')
    .map((l) => l.split(' '));
  const port = (addr: string) => Number(addr.split(':')[1]!.split('@')[0]);
  const master = nodes.find((n) => port(n[1]!) === masterPort)!;
  return port(nodes.find((n) => n[2]!.includes('slave') && n[3] === master[0])![1]!);
}

interface Scene {
  cluster: PrivateRedisCluster;
  /** a client of the master about to be killed, and its port */
  victim: Redis;
  victimPort: number;
  probes: Redis[];
  partition: number;
  keys: Keys;
}

async function failover(
  nodeTimeoutMs: number,
  replayS: number,
  env: Record<string, string> = {},
  beforeKill?: (s: Scene) => Promise<() => void>,
  /** 'pause': the master is stopped with SIGSTOP instead (and killed -9 once the run is over) */
  how: 'kill' | 'pause' = 'kill',
) {
  const dir = tempDir(`failover-${nodeTimeoutMs}`);
  const cluster = new PrivateRedisCluster(`${dir}/cluster`, process.env.REDIS_SERVER_BIN ?? 'redis-server', 3, {
    replicas: 1,
    nodeTimeoutMs,
  });
  const url = await cluster.start();
  const prefix = uniquePrefix('failover');
  const keys = makeKeys(prefix);
  const partitions = 6;
  const p = partitionOf('BINANCE:XRPETH', partitions);
  const slot = calculateSlot(keys.trades(p));
  const probes = url.split(',').map((u) => {
    const r = new Redis(u, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    r.on('error', () => undefined);
    return r;
  });
  let paused: { kill(): void } | undefined;
  let cli: CliProcess | undefined;
  let ended = false;
  try {
    const dataDir = tempDir('failover-out');
    cli = startCli(['stack'], {
      REDIS_URL: url,
      REDIS_CLUSTER: 'on',
      KEY_PREFIX: prefix,
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '2000',
      REPLAY_TAPE: BUNDLED_TAPE,
      // the tape's ~60 hours paced to about `replayS`: the kill and the failover fall in the middle
      REPLAY_SPEED: String(Math.round(216_000 / replayS)),
      REPLAY_SHIFT: 'false',
      STREAM_PARTITIONS: String(partitions),
      AGGREGATORS: '2',
      ...env,
    });
    const run = finishCli(cli, ['stack'], (replayS + nodeTimeoutMs / 1000 + 120) * 1000);
    const victimPort = (await masterOf(probes[0]!, slot))!;
    const victim = cluster.servers.find((s) => s.port === victimPort)!;
    const onVictim = probes[cluster.servers.indexOf(victim)]!;
    await waitFor(
      async () => Number((await onVictim.hget(keys.clock(p), 'in').catch(() => 0)) ?? 0) > 2000,
      60_000,
      'a part of the tape ingested',
    );
    const afterKill = await beforeKill?.({ cluster, victim: onVictim, victimPort, probes, partition: p, keys });
    if (how === 'pause') {
      paused = victim;
      process.kill(victim.pid!, 'SIGSTOP');
    } else victim.kill();
    const killedAt = Date.now();
    afterKill?.();
    const survivor = probes.find((_, i) => cluster.servers[i] !== victim)!;
    await waitFor(
      async () => {
        const m = await masterOf(survivor, slot).catch(() => undefined);
        return m !== undefined && m !== victimPort;
      },
      nodeTimeoutMs + 30_000,
      'a replica elected master',
    );
    const electedAt = Date.now();
    const res = await run;
    ended = true;
    return { res, dataDir, killedAt, electedAt };
  } finally {
    // a test that failed before the stack's end does not leave it (and its roles) running
    if (cli && !ended) await stopForGood(cli);
    paused?.kill(); // SIGKILL: it never wakes
    for (const r of probes) r.disconnect();
    await cluster.stop();
  }
}

function expectRodeItOut(r: Awaited<ReturnType<typeof failover>>, nodeTimeoutMs: number, how = 'killed') {
  const { res, dataDir, killedAt, electedAt } = r;
  const out = res.stdout + res.stderr;
  expect(res.code, out.slice(-4000)).toBe(0);
  expect(res.stdout).toMatch(/trades in\s+12477\n/);
  expect(res.stdout).toMatch(/merged\s+12477\n/);
  expect(res.stdout).toMatch(/late\s+0\n/);
  expect(klineProblems(dataDir)).toEqual([]);
  // a routine failover: no errors, no stack traces; per role one WARN and one INFO, in time
  const backs = [
    ...expectFailoverSaid(out, dataDir, {
      electedAt,
      withinMs: nodeTimeoutMs + 5000,
      mustSee: ['ingest', 'aggregate-1', 'aggregate-2'],
    }).values(),
  ];
  console.log(
    `node timeout ${nodeTimeoutMs} ms: replica elected ${electedAt - killedAt} ms after the master was ${how}; roles back ${Math.min(...backs)}..${Math.max(...backs)} ms after the election`,
  );
}

/** 2000 in CI; FAILOVER_NODE_TIMEOUT=15000 (`npm run test:failover-default`) for Redis's default */
const NODE_TIMEOUT = Number(process.env.FAILOVER_NODE_TIMEOUT ?? 2000);

describe('Redis Cluster with replicas: a master killed mid-run', () => {
  it(`cluster-node-timeout ${NODE_TIMEOUT}: every role resumes, every bar exact, no errors`, async () => {
    const r = await failover(NODE_TIMEOUT, Math.max(30, (NODE_TIMEOUT / 1000) * 4));
    expectRodeItOut(r, NODE_TIMEOUT);
  }, 600_000);
});

describe('Redis Cluster with replicas: a master paused (SIGSTOP) mid-run and never resumed', () => {
  it(`cluster-node-timeout ${NODE_TIMEOUT}: the commands waiting on it go to the new master, every role resumes, every bar exact, no errors`, async () => {
    const r = await failover(NODE_TIMEOUT, Math.max(20, (NODE_TIMEOUT / 1000) * 4), {}, undefined, 'pause');
    expectRodeItOut(r, NODE_TIMEOUT, 'paused');
  }, 600_000);
});

describe('Redis Cluster with replicas: acknowledged means kept', () => {
  it('batches the master acknowledged and never passed to its replica are sent again after the failover: nothing lost', async () => {
    const r = await failover(2000, 30, { INGEST_RETAIN: '200ms' }, async ({ cluster, victim, victimPort, probes, partition, keys }) => {
      // the replica stops taking the stream: paused, it is dropped by its master after repl-timeout
      const replicaPort = await replicaOf(probes[0]!, victimPort);
      const replica = cluster.servers.find((s) => s.port === replicaPort)!;
      await victim.config('SET', 'repl-timeout', '2');
      process.kill(replica.pid!, 'SIGSTOP');
      await waitFor(async () => /connected_slaves:0/.test(await victim.info('replication')), 20_000, 'the replica dropped');
      // then the master acknowledges batches only it has, for longer than INGEST_RETAIN
      const before = Number(await victim.hget(keys.clock(partition), 'in'));
      await waitFor(
        async () => Number(await victim.hget(keys.clock(partition), 'in')) > before + 300,
        20_000,
        'trades only the master has',
      );
      await new Promise((res) => setTimeout(res, 500));
      const only = Number(await victim.hget(keys.clock(partition), 'in')) - before;
      expect(only).toBeGreaterThan(300);
      // killed with them: the replica wakes up and takes over without them
      return () => process.kill(replica.pid!, 'SIGCONT');
    });
    const { res, dataDir } = r;
    expect(res.code, (res.stdout + res.stderr).slice(-4000)).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toMatch(/merged\s+12477\n/);
    expect(res.stdout + res.stderr).not.toMatch(/Redis lost batches|lost batches are older/);
    expect(klineProblems(dataDir)).toEqual([]);
  }, 600_000);
});

describe('Redis Cluster with replicas: clients that connect while a master is paused', () => {
  it('each becomes ready once a replica has taken over (a ready check sent to the paused master is sent again), and only then is Redis back', async () => {
    const dir = tempDir('failover-connect');
    const cluster = new PrivateRedisCluster(`${dir}/cluster`, process.env.REDIS_SERVER_BIN ?? 'redis-server', 3, {
      replicas: 1,
      nodeTimeoutMs: 2000,
    });
    const url = await cluster.start();
    const main = connectRedis(url, undefined, { cluster: true });
    const stopWatch = watchRedis(main, { answerTimeoutMs: 1000, checkEveryMs: 0 });
    const victim = cluster.servers[0]!;
    const dups: ReturnType<typeof duplicateRedis>[] = [];
    try {
      await waitFor(async () => main.status === 'ready', 10_000, 'the client ready');
      // every master in use, as in a role
      for (let i = 0; i < 64; i++) await main.set(`cw-connect-${i}`, '1');
      const survivor = new Redis(cluster.servers[1]!.url, { lazyConnect: true });
      survivor.on('error', () => undefined);
      const victimSlot = Number(
        String(await survivor.call('CLUSTER', 'NODES'))
          .split('\n')
          .find((l) => l.includes(`:${victim.port}@`))!
          .split(' ')
          .slice(8)[0]!
          .split('-')[0],
      );
      process.kill(victim.pid!, 'SIGSTOP');
      // clients made now (BullMQ makes its connections as it goes) ask the paused master, at random, whether the cluster is ok
      await new Promise((res) => setTimeout(res, 300));
      for (let i = 0; i < 20; i++) {
        const d = duplicateRedis(main);
        d.on('error', () => undefined);
        dups.push(d);
      }
      await waitFor(
        async () => {
          const m = await masterOf(survivor, victimSlot).catch(() => undefined);
          return m !== undefined && m !== victim.port;
        },
        30_000,
        'a replica elected master',
      );
      const electedAt = Date.now();
      survivor.disconnect();
      await waitFor(async () => dups.every((d) => d.status === 'ready'), 7_000, 'every client ready after the election').catch(
        (err: Error) => {
          throw new Error(
            `${err.message}: ${dups.filter((d) => d.status !== 'ready').length} of ${dups.length} still ${dups.find((d) => d.status !== 'ready')?.status}`,
          );
        },
      );
      await waitFor(async () => redisLink.downForMs === 0, 5_000, 'Redis said to be back');
      expect(Date.now() - electedAt).toBeLessThanOrEqual(2000 + 5000);
    } finally {
      stopWatch();
      victim.kill();
      for (const d of dups) d.disconnect();
      main.disconnect();
      await cluster.stop();
    }
  }, 120_000);
});
