import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { PrivateRedis, freePort } from '@candlewick/cli';
import { klineProblems, runCli, startCli, tempDir, uniquePrefix, waitFor, type CliProcess } from './helpers.js';

/**
 * A Redis that is not what candlewick needs, as operators meet it: set up as a cache (evicting),
 * full (noeviction at its maxmemory), paused. Each with a real redis-server of its own.
 */

async function get(port: number, path: string): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${port}${path}`)).status;
  } catch {
    return 0;
  }
}

async function ownRedis(name: string, args: string[] = []): Promise<{ server: PrivateRedis; url: string; client: Redis }> {
  const server = new PrivateRedis(join(tempDir(name), 'redis'), 'redis-server', false, args);
  const url = await server.start();
  return { server, url, client: new Redis(url) };
}

const STACK = { REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '3000' };

describe('a Redis that is not fit for candlewick', () => {
  it('an evicting maxmemory-policy is refused with exit 2 and what to set: the stack with REDIS_URL and a role', async () => {
    const { server, url, client } = await ownRedis('evicting', ['--maxmemory', '20mb', '--maxmemory-policy', 'allkeys-lru']);
    try {
      for (const policy of ['allkeys-lru', 'volatile-ttl']) {
        await client.config('SET', 'maxmemory-policy', policy);
        for (const args of [['stack'], ['write']]) {
          const res = await runCli(
            args,
            { ...STACK, REDIS_URL: url, KEY_PREFIX: uniquePrefix('evict'), DATA_DIR: tempDir('evict') },
            60_000,
          );
          expect(res.code, `${args[0]} ${policy}\n${res.stdout.slice(-1500)}${res.stderr}`).toBe(2);
          expect(res.stderr).toContain(`has maxmemory-policy ${policy}: it may evict candlewick's keys`);
          expect(res.stderr).toContain('CONFIG SET maxmemory-policy noeviction');
          // refused before anything ran: no role started, nothing written
          expect(res.stdout).not.toMatch(/replaying tape|writer started/);
        }
      }
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('a Redis that refuses CONFIG (a managed one) is judged by INFO memory: an evicting policy refused all the same', async () => {
    const { server, url, client } = await ownRedis('no-config', ['--maxmemory-policy', 'allkeys-random', '--rename-command', 'CONFIG', '']);
    try {
      await expect(client.config('GET', 'maxmemory-policy')).rejects.toThrow(/unknown command/);
      const res = await runCli(
        ['aggregate'],
        { REDIS_URL: url, KEY_PREFIX: uniquePrefix('no-config'), DATA_DIR: tempDir('no-config') },
        60_000,
      );
      expect(res.code, res.stdout.slice(-1500) + res.stderr).toBe(2);
      expect(res.stderr).toContain('has maxmemory-policy allkeys-random: it may evict');
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('a policy changed to an evicting one while a role runs is said loudly, /healthz fails, and its end is said', async () => {
    const { server, url, client } = await ownRedis('policy-change');
    const metrics = await freePort();
    const role = startCli(['aggregate'], {
      REDIS_URL: url,
      KEY_PREFIX: uniquePrefix('policy'),
      DATA_DIR: tempDir('policy'),
      REDIS_CHECK_EVERY: '1s',
      METRICS_PORT: String(metrics),
    });
    try {
      await waitFor(() => /aggregator started/.test(role.output().stdout), 30_000, 'the aggregator to start');
      await waitFor(async () => (await get(metrics, '/healthz')) === 200, 10_000, 'healthy');
      await client.config('SET', 'maxmemory-policy', 'allkeys-lfu');
      await waitFor(() => /Redis may now evict candlewick's keys/.test(role.output().stdout), 10_000, 'the change to be said');
      expect(role.output().stdout).toContain('has maxmemory-policy allkeys-lfu');
      expect(await get(metrics, '/healthz')).toBe(503);
      await client.config('SET', 'maxmemory-policy', 'noeviction');
      await waitFor(() => /maxmemory-policy is noeviction again/.test(role.output().stdout), 10_000, 'its end to be said');
      await waitFor(async () => (await get(metrics, '/healthz')) === 200, 10_000, 'healthy again');
      const r = await role.stop();
      expect(r.code).toBe(0);
    } finally {
      role.kill('SIGKILL');
      client.disconnect();
      await server.stop();
    }
  });

  it(
    'an evicting policy and a small maxmemory set mid-run: the keys evicted said loudly, DATA LOST in the summary, exit 1',
    { timeout: 200_000 },
    async () => {
      const { server, url, client } = await ownRedis('evict-mid-run');
      const dir = tempDir('evict-mid-run');
      let started: CliProcess | undefined;
      try {
        const stack = (started = startCli(['stack'], {
          ...STACK,
          REDIS_URL: url,
          KEY_PREFIX: uniquePrefix('evict-mid-run'),
          DATA_DIR: dir,
          REDIS_CHECK_EVERY: '1s',
        }));
        await waitFor(() => /replaying tape/.test(stack.output().stdout), 60_000, 'the replay to start');
        await new Promise((r) => setTimeout(r, 1000));
        // Redis set up as a cache while the run goes on, and short of memory: it evicts
        const evicted = async () => Number(/evicted_keys:(\d+)/.exec(await client.info('stats'))![1]);
        const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
        await client.config('SET', 'maxmemory-policy', 'allkeys-lru');
        await client.config('SET', 'maxmemory', String(Math.floor(used * 0.9)));
        await waitFor(async () => (await evicted()) > 0, 20_000, 'keys to be evicted');
        // and set right again (as an operator would): the run goes on, but what went is gone
        await client.config('SET', 'maxmemory', '0');
        await client.config('SET', 'maxmemory-policy', 'noeviction');
        const code = await Promise.race([stack.exited, new Promise((r) => setTimeout(r, 150_000)).then(() => 'timeout')]);
        const out = stack.output().stdout;
        expect(code, out.slice(-3000)).toBe(1);
        expect(out).toMatch(/Redis evicted \d+ keys? while candlewick ran \(INFO stats evicted_keys\): DATA LOST/);
        expect(out).toMatch(/candlewick summary[\s\S]*DATA LOST {8}Redis evicted \d+ keys? during the run/);
      } finally {
        // (a test that failed half-way leaves no stack behind)
        started?.kill('SIGKILL');
        client.disconnect();
        await server.stop();
      }
    },
  );

  it(
    'a noeviction Redis at its maxmemory mid-run: "out of memory" with its figures, and when memory is raised the run resumes, exact',
    { timeout: 200_000 },
    async () => {
      const { server, url, client } = await ownRedis('oom');
      const dir = tempDir('oom');
      let started: CliProcess | undefined;
      try {
        const stack = (started = startCli(['stack'], {
          ...STACK,
          REPLAY_SPEED: '10000',
          REDIS_URL: url,
          KEY_PREFIX: uniquePrefix('oom'),
          DATA_DIR: dir,
        }));
        await waitFor(() => /replaying tape/.test(stack.output().stdout), 60_000, 'the replay to start');
        await new Promise((r) => setTimeout(r, 1500));
        // full now: Redis refuses every write that needs memory
        const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
        await client.config('SET', 'maxmemory', String(used));
        await waitFor(() => /Redis is out of memory/.test(stack.output().stdout), 30_000, 'out of memory to be said');
        await new Promise((r) => setTimeout(r, 4000));
        await client.config('SET', 'maxmemory', '0');
        const code = await Promise.race([stack.exited, new Promise((r) => setTimeout(r, 150_000)).then(() => 'timeout')]);
        const out = stack.output().stdout;
        expect(code, out.slice(-3000)).toBe(0);
        const said = /Redis is out of memory \(([\d.]+[KMG]?) used of maxmemory ([\d.]+[KMG]?)\)/.exec(out);
        expect(said, out.slice(-3000)).not.toBeNull();
        expect(out).not.toMatch(/full disk|disk under Redis/);
        expect(out).toMatch(/Redis takes writes again/);
        // the written bars were published too (a refused publish waits for Redis, never fails its job)
        expect(out).not.toMatch(/bars could not be written/);
        expect(out).toMatch(/trades in\s+12477\n/);
        expect(out).toMatch(/merged\s+12477\n/);
        expect(klineProblems(dir)).toEqual([]);
      } finally {
        // (a test that failed half-way leaves no stack behind)
        started?.kill('SIGKILL');
        client.disconnect();
        await server.stop();
      }
    },
  );

  it(
    'Redis paused (SIGSTOP) mid-run is said like an outage, /healthz fails meanwhile, and the run is exact',
    { timeout: 200_000 },
    async () => {
      const { server, url, client } = await ownRedis('paused');
      const dir = tempDir('paused');
      let started: CliProcess | undefined;
      const metrics = await freePort();
      try {
        const stack = (started = startCli(['stack'], {
          ...STACK,
          REPLAY_SPEED: '10000',
          REDIS_URL: url,
          KEY_PREFIX: uniquePrefix('paused'),
          DATA_DIR: dir,
          REDIS_ANSWER_TIMEOUT: '2s',
          METRICS_PORT: String(metrics),
        }));
        await waitFor(() => /replaying tape/.test(stack.output().stdout), 60_000, 'the replay to start');
        await new Promise((r) => setTimeout(r, 1500));
        process.kill(server.pid!, 'SIGSTOP');
        try {
          await waitFor(() => /Redis is not answering for \d+ s/.test(stack.output().stdout), 15_000, 'the pause to be said');
          // the stack's roles serve /healthz from METRICS_PORT up: the replay server, then write, close, aggregate
          const roles = [1, 2, 3].map((i) => metrics + i);
          await waitFor(
            async () => (await Promise.all(roles.map((p) => get(p, '/healthz')))).every((s) => s === 503),
            10_000,
            '/healthz to fail',
          );
          await new Promise((r) => setTimeout(r, 3000));
        } finally {
          process.kill(server.pid!, 'SIGCONT');
        }
        const code = await Promise.race([stack.exited, new Promise((r) => setTimeout(r, 120_000)).then(() => 'timeout')]);
        const out = stack.output().stdout;
        expect(code, out.slice(-3000)).toBe(0);
        expect(out).toMatch(/Redis is back/);
        expect(out).toMatch(/trades in\s+12477\n/);
        expect(out).toMatch(/merged\s+12477\n/);
        expect(klineProblems(dir)).toEqual([]);
      } finally {
        // (a test that failed half-way leaves no stack behind)
        started?.kill('SIGKILL');
        client.disconnect();
        await server.stop();
      }
    },
  );
});
