import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { BULLMQ_COMMANDS, BULLMQ_READ_COMMANDS, freePort, PrivateRedisCluster } from '@candlewick/cli';
import { ProviderServer } from '@candlewick/backfill';
import { csvPath, encodeBarEntry, luaCommands, makeKeys, readTapeTrades, SCRIPTS, scriptSource } from '@candlewick/common';
import { CLI, readCsv, ROOT, runCli, startCli, tempDir, uniquePrefix, waitFor } from './helpers.js';
import { startPostgres } from './postgres.js';
import { allLogs, expectTapeExact, startNode, type Node } from './redis-nodes.js';

const TICK = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');
const ROLES = ['stack', 'ingest', 'aggregate', 'close', 'write', 'pg-sink', 'backfill', 'serve', 'tap'];

/**
 * The chart page's API and read-only Bull Board's (job counts and lists, a job and its logs, the job
 * schedulers, Redis's stats), asked again and again until `until` settles: path -> statuses answered.
 */
async function askServe(base: string, until: Promise<unknown>): Promise<Map<string, Set<number>>> {
  const got = new Map<string, Set<number>>();
  const ask = async (path: string) => {
    const r = await fetch(base + path).catch(() => undefined);
    if (!r) return undefined;
    let set = got.get(path);
    if (!set) got.set(path, (set = new Set()));
    set.add(r.status);
    return r.ok ? ((await r.json().catch(() => undefined)) as unknown) : undefined;
  };
  let over = false;
  void until.finally(() => (over = true));
  while (!over) {
    for (const path of ['/api/meta', '/api/status', '/api/gaps', '/queues/api/redis/stats', '/queues/api/job-schedulers']) await ask(path);
    await ask('/queues/api/queues?activeQueue=close&status=latest&page=1');
    const list = (await ask('/queues/api/queues?activeQueue=bars&status=completed&page=1')) as
      { queues?: { name: string; jobs?: { id: string }[] }[] } | undefined;
    const id = list?.queues?.find((q) => q.name === 'bars')?.jobs?.[0]?.id;
    if (id !== undefined) {
      // (one path per kind in `got`, whichever job)
      for (const [kind, tail] of [
        ['/queues/api/queues/bars/:job', ''],
        ['/queues/api/queues/bars/:job/logs', '/logs'],
      ] as const) {
        const r = await fetch(`${base}/queues/api/queues/bars/${encodeURIComponent(id)}${tail}`).catch(() => undefined);
        if (r) {
          let set = got.get(kind);
          if (!set) got.set(kind, (set = new Set()));
          set.add(r.status);
        }
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return got;
}

/**
 * A redis-server whose only users are the ones `candlewick acl` writes (plus an admin for the test
 * itself; the default user is off): a stack whose every role connects as its own user runs the
 * bundled tape exact without one refused command, and serve's user cannot write.
 */
describe('a Redis user per role', () => {
  const dir = tempDir('redis-acl');
  const prefix = `acl${Date.now().toString(36)}`;
  const admin = `admin-${randomBytes(8).toString('hex')}`;
  const passwords = Object.fromEntries(ROLES.map((r) => [r, randomBytes(12).toString('hex')]));
  const usersFile = join(dir, 'redis-users');
  writeFileSync(usersFile, ROLES.map((r) => `${r} ${prefix}-${r} ${passwords[r]}`).join('\n') + '\n');
  let node: Node;
  let adminClient: Redis;

  beforeAll(async () => {
    const acl = execFileSync(process.execPath, [CLI, 'acl'], {
      env: { PATH: process.env.PATH ?? '', KEY_PREFIX: prefix, REDIS_USERS_FILE: usersFile },
      encoding: 'utf8',
    });
    const aclFile = join(dir, 'users.acl');
    writeFileSync(aclFile, `${acl}user default off\nuser admin on >${admin} ~* &* +@all\n`);
    node = await startNode(join(dir, 'redis'), ['--aclfile', aclFile], { username: 'admin', password: admin });
    adminClient = new Redis({ port: node.port, host: '127.0.0.1', username: 'admin', password: admin });
  });
  afterAll(async () => {
    adminClient?.disconnect();
    await node?.kill();
  });

  it('the ACL file holds no password, only SHA-256 digests; the shipped deploy/redis-acl.conf is the one for cw', () => {
    const acl = execFileSync(process.execPath, [CLI, 'acl'], {
      env: { PATH: process.env.PATH ?? '', KEY_PREFIX: prefix, REDIS_USERS_FILE: usersFile },
      encoding: 'utf8',
    });
    for (const r of ROLES) expect(acl).not.toContain(passwords[r]!);
    expect(acl).toMatch(new RegExp(`user ${prefix}-serve reset on #[0-9a-f]{64} `));
    const shipped = execFileSync(process.execPath, [CLI, 'acl'], { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8' });
    expect(readFileSync(join(ROOT, 'deploy/redis-acl.conf'), 'utf8')).toBe(shipped);
  });

  it('every role under its own user: every bar exact, no command refused, no password logged', async () => {
    const dataDir = tempDir('redis-acl-run');
    // who is connected, as Redis sees it, while the stack runs
    const seen = new Set<string>();
    let running = true;
    const sampling = (async () => {
      while (running) {
        const list = (await adminClient.client('LIST')) as string;
        for (const m of list.matchAll(/ user=(\S+)/g)) seen.add(m[1]!);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const httpPort = await freePort();
    const run = runCli(
      ['stack'],
      {
        REDIS_URL: `redis://127.0.0.1:${node.port}`,
        REDIS_USERS_FILE: usersFile,
        KEY_PREFIX: prefix,
        DATA_DIR: dataDir,
        EXIT_WHEN_IDLE_MS: '2000',
        HTTP_PORT: String(httpPort),
        BACKFILL: 'on',
      },
      150_000,
    );
    // serve under its user: the page's API and read-only Bull Board answer (BullMQ's read scripts)
    const asked = await askServe(`http://127.0.0.1:${httpPort}`, run);
    const res = await run;
    running = false;
    await sampling;
    expectTapeExact(res, dataDir);
    for (const [path, statuses] of asked) expect([...statuses], path).toContain(200);
    expect(asked.size, [...asked.keys()].join(' ')).toBe(9);
    const logs = allLogs(res.stdout + res.stderr, dataDir);
    expect(logs).not.toMatch(/NOPERM/);
    for (const r of ROLES) expect(logs).not.toContain(passwords[r]!);
    const refused = ((await adminClient.acl('LOG', '1000')) as unknown[]).map(String).join('\n');
    expect(refused, 'ACL LOG: commands or keys refused').toBe('');
    // every role that ran connected as its own user, and no one as another (a connection not yet
    // through AUTH is listed as the default user, which is off: it can run nothing)
    expect([...seen].filter((u) => u !== 'admin' && u !== 'default').sort()).toEqual(
      ['aggregate', 'backfill', 'close', 'ingest', 'serve', 'stack', 'write'].map((r) => `${prefix}-${r}`),
    );

    // tap under its own user: the closed bars from the start (XREAD), the trades from now (XREVRANGE first)
    const env = { REDIS_URL: `redis://127.0.0.1:${node.port}`, REDIS_USERS_FILE: usersFile, KEY_PREFIX: prefix, LOG_LEVEL: 'warn' };
    const bars = startCli(['tap', 'bars:1min', '--from', '0'], env);
    const trades = startCli(['tap', 'trades'], env);
    const rows = readCsv(csvPath(dataDir, '1min', 'BINANCE:XRPETH')).rows.length;
    try {
      await waitFor(() => bars.output().stdout.split('\n').filter(Boolean).length >= rows, 20_000, 'the tapped bars');
      expect(String(await adminClient.client('LIST'))).toContain(` user=${prefix}-tap `);
    } finally {
      // (side by side: a tap takes seconds to end)
      for (const r of await Promise.all([bars.stop(), trades.stop()])) {
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).not.toMatch(/NOPERM/);
      }
    }
    const tapRefused = ((await adminClient.acl('LOG', '1000')) as unknown[]).map(String).join('\n');
    expect(tapRefused, 'ACL LOG after tap: commands or keys refused').toBe('');
  }, 180_000);

  it('backfill under its own user: a mid-day start backfilled from a provider, nothing refused', async () => {
    const provider = new ProviderServer(readTapeTrades(TICK), { finnhubToken: 'test-token', massiveKey: 'test-key', pageSize: 2000 });
    const base = await provider.start();
    try {
      const res = await runCli(
        ['stack'],
        {
          REDIS_URL: `redis://127.0.0.1:${node.port}`,
          REDIS_USERS_FILE: usersFile,
          KEY_PREFIX: prefix,
          DATA_DIR: tempDir('redis-acl-backfill'),
          REPLAY_TAPE: TICK,
          REPLAY_FROM: '2013-10-10T12:17:30.000-04:00',
          EXIT_WHEN_IDLE_MS: '500',
          MODE: 'replay',
          BACKFILL: 'on',
          BACKFILL_RATE: '6000',
          BACKFILL_PROVIDER: 'massive',
          MASSIVE_API_KEY: 'test-key',
          MASSIVE_REST_URL: base,
        },
        150_000,
      );
      expect(res.code, res.stdout.slice(-3000)).toBe(0);
      expect(res.stdout).toMatch(/backfilled/);
      expect(res.stdout).not.toMatch(/NOPERM/);
      const refused = ((await adminClient.acl('LOG', '1000')) as unknown[]).map(String).join('\n');
      expect(refused, 'ACL LOG: commands or keys refused').toBe('');
    } finally {
      await provider.stop();
    }
  }, 180_000);

  it('pg-sink under its own user: closed bars into PostgreSQL, nothing refused; no other key, no other command', async () => {
    const db = await startPostgres('redis-acl-pg');
    try {
      const stream = makeKeys(prefix).bars('1min');
      const t0 = Date.parse('2024-03-05T10:00:00Z');
      // 30 closed bars as the writer publishes them
      for (let i = 0; i < 30; i++)
        await adminClient.xadd(
          stream,
          '*',
          ...encodeBarEntry('ACL', t0 + i * 60_000, 0, {
            timestamp: new Date(t0 + i * 60_000).toISOString(),
            open: '1',
            high: '2',
            low: '1',
            close: `1.${i}`,
            vwap: '1.5',
            volume: '3',
            trades: '2',
            complete: true,
            sources: 'live',
          }),
        );
      const sink = startCli(['pg-sink'], {
        REDIS_URL: `redis://127.0.0.1:${node.port}`,
        REDIS_USERS_FILE: usersFile,
        KEY_PREFIX: prefix,
        INTERVALS: '1min',
        DATABASE_URL: db.urlWithPassword,
      });
      // (the stream also holds the bars of the stack runs above, on the same prefix: the sink writes those too)
      const rows = async () =>
        Number((await db.query<{ n: string }>("SELECT count(*) AS n FROM bars WHERE symbol = 'ACL'").catch(() => [{ n: '0' }]))[0]!.n);
      try {
        await waitFor(async () => (await rows()) === 30, 30_000, 'the bars in the table');
        // (its lag measured at least once more: XINFO, XPENDING, XRANGE under its user)
        await new Promise((r) => setTimeout(r, 5500));
      } finally {
        const r = await sink.stop();
        expect(r.code, r.stdout.slice(-2000)).toBe(0);
        expect(r.stdout + r.stderr).not.toMatch(/NOPERM/);
        expect(r.stdout + r.stderr).not.toContain(passwords['pg-sink']!);
      }
      const refused = ((await adminClient.acl('LOG', '1000')) as unknown[]).map(String).join('\n');
      expect(refused, 'ACL LOG: commands or keys refused').toBe('');
      const own = new Redis({ port: node.port, host: '127.0.0.1', username: `${prefix}-pg-sink`, password: passwords['pg-sink'] });
      try {
        // the streams it reads, but not written to, and no other key
        await expect(own.xadd(stream, '*', 'f', 'v')).rejects.toThrow(/NOPERM/);
        await expect(own.del(stream)).rejects.toThrow(/NOPERM/);
        await expect(own.xrange(`${prefix}:trades:{0}`, '-', '+')).rejects.toThrow(/NOPERM/);
        await expect(own.get(`${prefix}:stats`)).rejects.toThrow(/NOPERM/);
      } finally {
        own.disconnect();
        await adminClient.acl('LOG', 'RESET');
      }
    } finally {
      db.stop();
    }
  }, 90_000);

  it("serve's user reads but cannot write: NOPERM", async () => {
    const serve = new Redis({ port: node.port, host: '127.0.0.1', username: `${prefix}-serve`, password: passwords.serve });
    try {
      expect(await serve.exists(`${prefix}:stats`)).toBeGreaterThanOrEqual(0);
      await expect(serve.set(`${prefix}:stats`, 'x')).rejects.toThrow(/NOPERM/);
      await expect(serve.xadd(`${prefix}:bars:1min`, '*', 'f', 'v')).rejects.toThrow(/NOPERM/);
      await expect(serve.flushall()).rejects.toThrow(/NOPERM/);
      // the queue's keys it may name in a script (BullMQ's read scripts), but not write, in a script or not
      await expect(serve.set(`{${prefix}:q}:bars:meta`, 'x')).rejects.toThrow(/NOPERM/);
      await expect(serve.eval("return redis.call('SET', KEYS[1], 'x')", 1, `{${prefix}:q}:bars:meta`)).rejects.toThrow(
        /can't run this command/,
      );
      expect(await serve.eval("return redis.call('EXISTS', KEYS[1])", 1, `{${prefix}:q}:bars:meta`)).toBeGreaterThanOrEqual(0);
      // and the ingestor's user touches no bar or queue key
      const ingest = new Redis({ port: node.port, host: '127.0.0.1', username: `${prefix}-ingest`, password: passwords.ingest });
      try {
        await expect(ingest.hgetall(`${prefix}:open:{0}`)).rejects.toThrow(/NOPERM/);
        await expect(ingest.get(`{${prefix}:q}:bars:id`)).rejects.toThrow(/NOPERM/);
      } finally {
        ingest.disconnect();
      }
    } finally {
      serve.disconnect();
      await adminClient.acl('LOG', 'RESET');
    }
  });

  it('commands by name, not by category: no user may list, kill or pause clients, read the configuration or the keyspace, flush or shut down', async () => {
    const never = [
      ['CLIENT', 'KILL', 'ID', '1'],
      ['CLIENT', 'PAUSE', '10'],
      ['CLIENT', 'LIST'],
      ['CLIENT', 'NO-EVICT', 'on'],
      ['CONFIG', 'GET', 'maxmemory'],
      ['KEYS', `${prefix}:*`],
      ['SCAN', '0'],
      ['FLUSHALL'],
      ['SHUTDOWN'],
      ['DEBUG', 'SLEEP', '0'],
      ['ACL', 'WHOAMI'],
      ['PUBLISH', 'c', 'm'],
    ];
    for (const r of ROLES)
      for (const cmd of never)
        expect(String(await adminClient.call('ACL', 'DRYRUN', `${prefix}-${r}`, ...cmd)), `${r}: ${cmd.join(' ')}`).not.toBe('OK');
    // and what a role sends is allowed by name: the ingestor's WAIT, the closer's BullMQ wait for a job
    expect(await adminClient.call('ACL', 'DRYRUN', `${prefix}-ingest`, 'WAIT', '1', '10')).toBe('OK');
    expect(await adminClient.call('ACL', 'DRYRUN', `${prefix}-close`, 'BZPOPMIN', `{${prefix}:q}:close:marker`, '1')).toBe('OK');
    expect(String(await adminClient.call('ACL', 'DRYRUN', `${prefix}-aggregate`, 'BZPOPMIN', `${prefix}:trades:{0}`, '1'))).not.toBe('OK');
  });

  it("the users' commands cover their scripts': every command of candlewick's Lua scripts by name, BullMQ's for the roles that run BullMQ (its read ones for serve)", async () => {
    // candlewick's scripts name every command literally (the ACL is read from them)
    for (const name of Object.keys(SCRIPTS) as (keyof typeof SCRIPTS)[]) {
      const lua = scriptSource(name);
      expect(luaCommands(lua).length, name).toBeGreaterThan(0);
      expect(lua.match(/redis\.p?call\b/g)!.length, `${name}: a command not named literally`).toBe(
        lua.match(/redis\.p?call(?:\(|,)\s*'[A-Za-z]+'/g)!.length,
      );
    }
    // BullMQ's installed scripts: every command they call is in BULLMQ_COMMANDS
    const scripts = join(dirname(createRequire(import.meta.url).resolve('bullmq')), 'scripts');
    const called = new Set<string>();
    for (const f of readdirSync(scripts).filter((f) => /-\d+\.js$/.test(f))) {
      const text = readFileSync(join(scripts, f), 'utf8');
      for (const m of text.matchAll(/(?:rcall|redis\.p?call)\(\s*["']([A-Za-z]+)["']/g)) called.add(m[1]!.toLowerCase());
      // commands named in a variable: LIFO pushes and paginate's scans
      for (const m of text.matchAll(/["'](RPUSH|LPUSH|SSCAN|HSCAN)["']/g)) called.add(m[1]!.toLowerCase());
    }
    expect(called.size).toBeGreaterThan(40);
    expect(
      [...called].filter((c) => !BULLMQ_COMMANDS.includes(c)),
      'commands of BullMQ scripts missing from BULLMQ_COMMANDS',
    ).toEqual([]);
    // the read ones: those Redis flags readonly, the two that run scripts, and MULTI/EXEC
    const readonly: string[] = [];
    for (const c of new Set(BULLMQ_COMMANDS)) {
      if (c.includes('|')) continue;
      const [info] = (await adminClient.call('COMMAND', 'INFO', c)) as [string, number, string[]][];
      if (info![2].includes('readonly')) readonly.push(c);
    }
    expect([...BULLMQ_READ_COMMANDS].sort()).toEqual([...readonly, 'eval', 'evalsha', 'multi', 'exec', 'discard'].sort());
  });
});

/**
 * The same users on a private Redis Cluster with replicas (ACL users live on each node: set on all
 * six): ioredis's slot map (CLUSTER SLOTS), its replicas' READONLY, the failover guard's PING of each
 * master, and every role's own commands, all under the role's user.
 */
describe('a Redis user per role on a Redis Cluster', () => {
  it('every role under its own user on 3 masters and 3 replicas: every bar exact, nothing refused on any node', async () => {
    const dir = tempDir('redis-acl-cluster');
    const prefix = uniquePrefix('acl-cluster');
    const passwords = Object.fromEntries(ROLES.map((r) => [r, randomBytes(12).toString('hex')]));
    const usersFile = join(dir, 'redis-users');
    writeFileSync(usersFile, ROLES.map((r) => `${r} ${prefix}-${r} ${passwords[r]}`).join('\n') + '\n');
    const acl = execFileSync(process.execPath, [CLI, 'acl'], {
      env: { PATH: process.env.PATH ?? '', KEY_PREFIX: prefix, REDIS_USERS_FILE: usersFile },
      encoding: 'utf8',
    });
    const cluster = new PrivateRedisCluster(join(dir, 'cluster'), process.env.REDIS_SERVER_BIN ?? 'redis-server', 3, { replicas: 1 });
    const url = await cluster.start();
    // (the nodes' default user stays: the cluster's own links and this test use it)
    const admins = cluster.servers.map((s) => new Redis(s.url));
    try {
      for (const admin of admins)
        for (const line of acl.trim().split('\n')) {
          const [, name, ...rules] = line.split(' ');
          await admin.call('ACL', 'SETUSER', name!, ...rules);
        }
      const seen = new Set<string>();
      let running = true;
      const sampling = (async () => {
        while (running) {
          for (const admin of admins) for (const m of String(await admin.client('LIST')).matchAll(/ user=(\S+)/g)) seen.add(m[1]!);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const dataDir = tempDir('redis-acl-cluster-run');
      const res = await runCli(
        ['stack'],
        {
          REDIS_URL: url,
          REDIS_CLUSTER: 'on',
          REDIS_USERS_FILE: usersFile,
          KEY_PREFIX: prefix,
          DATA_DIR: dataDir,
          STREAM_PARTITIONS: '6',
          AGGREGATORS: '2',
          EXIT_WHEN_IDLE_MS: '1000',
          HTTP_PORT: String(await freePort()),
        },
        150_000,
      );
      running = false;
      await sampling;
      expectTapeExact(res, dataDir);
      const logs = allLogs(res.stdout + res.stderr, dataDir);
      expect(logs).not.toMatch(/NOPERM/);
      for (const r of ROLES) expect(logs).not.toContain(passwords[r]!);
      for (const [i, admin] of admins.entries()) {
        const refused = ((await admin.acl('LOG', '1000')) as unknown[]).map(String).join('\n');
        expect(refused, `ACL LOG of node ${i}: commands or keys refused`).toBe('');
      }
      for (const r of ['aggregate', 'close', 'ingest', 'serve', 'stack', 'write']) expect([...seen]).toContain(`${prefix}-${r}`);
    } finally {
      for (const admin of admins) admin.disconnect();
      await cluster.stop();
    }
  }, 180_000);
});
