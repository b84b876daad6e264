import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PrivateRedis, freePort } from '@candlewick/cli';
import { CLI, redisUrl, runCli, tempDir, uniquePrefix, waitFor } from './helpers.js';

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

/** The value of one sample line of a Prometheus text body (summed over label sets that match). */
function sample(body: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of body.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `))
      if (line.includes(labels)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('metrics, health and log files', () => {
  it('/healthz follows the Redis connection: 200, 503 while Redis is down, 200 again', async () => {
    const dir = tempDir('health-redis');
    const redis = new PrivateRedis(dir, process.env.REDIS_SERVER_BIN ?? 'redis-server');
    const url = await redis.start();
    const port = await freePort();
    const proc = spawn(process.execPath, [CLI, 'close'], {
      env: { PATH: process.env.PATH ?? '', REDIS_URL: url, METRICS_PORT: String(port), DATA_DIR: dir, LOG_LEVEL: 'warn' },
      stdio: 'ignore',
    });
    try {
      await waitFor(async () => (await get(port, '/healthz')).status === 200, 20_000, 'healthy');
      const ok = JSON.parse((await get(port, '/healthz')).body) as Record<string, unknown>;
      expect(ok).toMatchObject({ role: 'close', ok: true, redis: 'ready' });
      const m = await get(port, '/metrics');
      expect(m.body).toMatch(/^# TYPE candlewick_bars_closed_total counter$/m);
      expect(m.body).toMatch(/candlewick_process_cpu_seconds_total\{role="close"\}/);
      expect((await get(port, '/nope')).status).toBe(404);

      await redis.stop();
      await waitFor(async () => (await get(port, '/healthz')).status === 503, 20_000, 'unhealthy');
      expect(JSON.parse((await get(port, '/healthz')).body)).toMatchObject({ role: 'close', ok: false });
      await redis.start(redis.port);
      await waitFor(async () => (await get(port, '/healthz')).status === 200, 30_000, 'healthy again');
    } finally {
      proc.kill('SIGTERM');
      await redis.stop();
    }
  }, 90_000);

  it('under stack every role serves its metrics on its own port while it works, and keeps a rotated JSON log', async () => {
    const base = await freePort();
    const dataDir = tempDir('metrics');
    const run = runCli(
      ['stack'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('metrics'),
        DATA_DIR: dataDir,
        EXIT_WHEN_IDLE_MS: '1500',
        REPLAY_SPEED: '20000',
        REPLAY_SHIFT: 'false',
        METRICS_PORT: String(base),
        LOG_LEVEL: 'debug',
        LOG_FILE_SIZE: '1k',
        LOG_FILE_COUNT: '2',
      },
      180_000,
    );
    // stack's order: replay-server, write, close, aggregate, ingest
    const port = { write: base + 1, close: base + 2, aggregate: base + 3, ingest: base + 4 };
    const scrape = async (role: keyof typeof port) => (await get(port[role], '/metrics')).body;
    await waitFor(
      async () => sample(await scrape('write'), 'candlewick_bars_written_total', 'interval="1min"') > 0,
      60_000,
      'bars written',
    );
    const ingest = await scrape('ingest');
    const aggregate = await scrape('aggregate');
    const close = await scrape('close');
    const write = await scrape('write');
    expect(sample(ingest, 'candlewick_trades_in_total')).toBeGreaterThan(0);
    expect(sample(ingest, 'candlewick_ingest_hold_seconds_count')).toBeGreaterThan(0);
    expect(sample(aggregate, 'candlewick_trades_merged_total')).toBeGreaterThan(0);
    expect(sample(aggregate, 'candlewick_batch_size_count')).toBeGreaterThan(0);
    expect(sample(aggregate, 'candlewick_merge_seconds_count')).toBeGreaterThan(0);
    expect(aggregate).toMatch(/^# TYPE candlewick_pending_entries gauge$/m);
    expect(sample(close, 'candlewick_bars_closed_total', 'interval="1min"')).toBeGreaterThan(0);
    expect(sample(write, 'candlewick_close_lag_seconds_count', 'interval="1min"')).toBeGreaterThan(0);
    for (const role of Object.keys(port) as (keyof typeof port)[]) {
      expect(JSON.parse((await get(port[role], '/healthz')).body)).toMatchObject({ role, ok: true });
    }
    const res = await run;
    expect(res.code, res.stdout.slice(-2000)).toBe(0);

    // JSON log files per process under DATA_DIR/logs; the chatty closer's (debug) rotated at 1k, 2 old files kept
    const logs = readdirSync(join(dataDir, 'logs'));
    for (const role of ['stack', 'replay-server', 'write', 'close', 'aggregate', 'ingest']) {
      expect(
        logs.some((f) => f.startsWith(`${role}.`)),
        role,
      ).toBe(true);
    }
    const closeLogs = logs.filter((f) => /^close\.\d+\.log$/.test(f)).sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
    expect(closeLogs.length).toBeLessThanOrEqual(3);
    expect(Number(closeLogs.at(-1)!.split('.')[1])).toBeGreaterThan(3);
    const first = readFileSync(join(dataDir, 'logs', closeLogs[0]!), 'utf8').split('\n')[0]!;
    expect(JSON.parse(first)).toMatchObject({ name: 'close' });
  }, 200_000);
});
