import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { PrivateRedis, freePort } from '@candlewick/cli';
import { connectRedis, type RedisClient } from '@candlewick/common';
import { readFileSync } from 'node:fs';
import { alive, childPids, cmdline, klineProblems, runCli, startCli, tempDir, uniquePrefix, waitFor } from './helpers.js';

/** Redis going away, as operators meet it: never there, gone for a while, the stack's own dying. */
describe('without Redis', () => {
  it('an unreachable REDIS_URL ends with exit 3 and a message after REDIS_CONNECT_TIMEOUT: a role, tap and the stack', async () => {
    const port = await freePort(); // nothing listens there
    const env = { REDIS_URL: `redis://:s3cret@127.0.0.1:${port}`, REDIS_CONNECT_TIMEOUT: '2s', DATA_DIR: tempDir('unreachable') };
    for (const args of [['aggregate'], ['tap', 'trades'], ['stack']]) {
      const t0 = Date.now();
      const res = await runCli(args, env, 30_000);
      expect(res.code, args.join(' ')).toBe(3);
      expect(Date.now() - t0).toBeLessThan(12_000);
      expect(res.stderr).toMatch(
        new RegExp(
          `cannot reach Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}/? within 2 s \\(.*ECONNREFUSED.*\\): check that it is running`,
        ),
      );
      expect(res.stdout + res.stderr).not.toContain('s3cret');
    }
  });

  it('a role that loses Redis says so once, stays quiet while it waits, says when it is back, and answers SIGTERM without it', async () => {
    const dir = tempDir('quiet');
    const server = new PrivateRedis(join(dir, 'redis'), 'redis-server', false);
    const url = await server.start();
    try {
      const env = { REDIS_URL: url, KEY_PREFIX: uniquePrefix('quiet'), DATA_DIR: dir };
      const roles = ['aggregate', 'close', 'write'].map((r) => ({ role: r, cli: startCli([r], env) }));
      for (const { cli } of roles)
        await waitFor(() => /(aggregator|closer|writer) started/.test(cli.output().stdout), 30_000, 'the role to start');
      // Redis away for 6 s, then back
      const port = server.port;
      server.kill();
      await new Promise((r) => setTimeout(r, 6000));
      await server.start(port);
      // each reconnects on its own backoff: on a busy machine that can take a few seconds
      for (const { role, cli } of roles)
        await waitFor(() => /Redis is back/.test(cli.output().stdout), 20_000, `${role} to say Redis is back`);
      await new Promise((r) => setTimeout(r, 1000));
      for (const { role, cli } of roles) {
        const out = cli.output().stdout;
        const during = out.slice(out.indexOf('lost the connection to Redis'));
        expect(out.match(/lost the connection to Redis/g), role).toHaveLength(1);
        expect(out.match(/Redis is back/g), role).toHaveLength(1);
        // a few lines for the whole outage, not one per retry
        expect(during.trim().split('\n').length, `${role}:\n${during}`).toBeLessThanOrEqual(4);
      }
      // gone for good this time: SIGTERM still stops every role within seconds
      server.kill();
      await new Promise((r) => setTimeout(r, 500));
      for (const { role, cli } of roles) {
        const r = await cli.stop();
        expect(r.ms, role).toBeLessThan(8000);
        expect(r.code, `${role}\n${r.stdout.slice(-1500)}`).toBe(0);
        expect(r.stdout).toMatch(/Redis is unreachable: stopping without it/);
      }
    } finally {
      await server.stop();
    }
  });

  it('"Redis is back" waits for every connection of the process: one on a slow backoff that fails once more is the same outage', async () => {
    const dir = tempDir('link-all');
    const server = new PrivateRedis(join(dir, 'redis'), 'redis-server', false);
    const url = await server.start();
    const lines: { msg: string; slowStatus: string }[] = [];
    let slow: RedisClient | undefined;
    const log = pino(
      { level: 'info' },
      { write: (s: string) => void lines.push({ msg: (JSON.parse(s) as { msg: string }).msg, slowStatus: slow?.status ?? '' }) },
    );
    // one connection retries every 50 ms, the other every 2.5 s (as ioredis's backoff grows, or a
    // Sentinel client still trying the old master): both belong to one process's link
    const fast = connectRedis(url, log, { extra: { retryStrategy: () => 50 } });
    slow = connectRedis(url, log, { extra: { retryStrategy: () => 2500 } });
    try {
      await Promise.all([fast.ping(), slow.ping()]);
      const port = server.port;
      server.kill();
      await waitFor(() => fast.status !== 'ready' && slow!.status !== 'ready', 5000, 'both connections to see Redis gone');
      await new Promise((r) => setTimeout(r, 300));
      await server.start(port);
      await waitFor(() => fast.status === 'ready', 5000, 'the fast connection back');
      await waitFor(() => lines.some((l) => l.msg === 'Redis is back'), 10_000, '"Redis is back"');
      const said = lines.map((l) => l.msg);
      expect(said.filter((m) => /lost the connection to Redis/.test(m))).toHaveLength(1);
      expect(said.filter((m) => m === 'Redis is back')).toHaveLength(1);
      // said when the last connection was back, not at the first
      expect(lines.find((l) => l.msg === 'Redis is back')!.slowStatus).toBe('ready');
    } finally {
      fast.disconnect();
      slow.disconnect();
      await server.stop();
    }
  });

  it("the stack's private redis-server dies mid-run: the stack says so, restarts it on its port and data, and every bar is exact", async () => {
    const dir = tempDir('redis-dies');
    const stack = startCli(['stack'], { DATA_DIR: dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '3000' });
    await waitFor(() => /replaying tape/.test(stack.output().stdout), 60_000, 'the replay to start');
    await new Promise((r) => setTimeout(r, 2500));
    const pid = Number(readFileSync(join(dir, 'redis', 'candlewick-redis.pid'), 'utf8'));
    expect(cmdline(pid)).toMatch(/redis-server/);
    process.kill(pid, 'SIGKILL');
    const code = await stack.exited;
    const out = stack.output().stdout;
    expect(code, out.slice(-3000)).toBe(0);
    expect(out.match(/the private redis-server died; restarting it/g)).toHaveLength(1);
    expect(out).toMatch(/private redis-server restarted/);
    expect(out).toMatch(/trades in\s+12477\n/);
    expect(out).toMatch(/merged\s+12477\n/);
    expect(klineProblems(dir)).toEqual([]);
    const restarted = Number(readFileSync(join(dir, 'redis', 'candlewick-redis.pid'), 'utf8'));
    expect(restarted).not.toBe(pid);
    expect(alive(restarted)).toBe(false);
    expect(childPids(stack.pid)).toEqual([]);
  });
});
