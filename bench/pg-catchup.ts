/**
 * The sink catching up (section 8 of npm run bench, BENCH_PART=pg): bars:{interval} of the five
 * default intervals filled with `rows` in all (as a sink finds them after its database was away), then
 * `candlewick pg-sink` started on them; rows/s from its first row's commit to its last's (commit
 * times kept), so its start-up and connection are not counted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { encodeBarEntryJson, loadConfig, makeKeys } from '@candlewick/common';
import { PrivateRedis } from '@candlewick/cli';
import { startPostgres } from '../test/postgres.js';

export interface CatchUp {
  rows: number;
  /** first commit to last, ms */
  ms: number;
  rowsPerSec: number;
}

/** the intervals whose streams pg-sink reads when INTERVALS is not set: the ones filled */
const INTERVALS = loadConfig({ MODE: 'replay' }).intervals.map((iv) => iv.name);

export async function pgCatchUp(root: string, rows: number, redisBin = 'redis-server'): Promise<CatchUp> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-pg-catchup-'));
  const server = new PrivateRedis(dir, redisBin, false);
  await server.start();
  const db = await startPostgres('bench-pg-catchup', { fsync: true, commitTimestamps: true });
  const redis = new Redis(server.url);
  const keys = makeKeys('bench');
  let sink: ChildProcess | undefined;
  try {
    const perStream = Math.ceil(rows / INTERVALS.length);
    const base = Date.UTC(2026, 0, 5, 14, 30);
    for (const iv of INTERVALS) {
      for (let from = 0; from < perStream; from += 1000) {
        const tx = redis.pipeline();
        for (let k = from; k < Math.min(perStream, from + 1000); k++) {
          const start = base + Math.floor(k / 8000) * 60_000;
          const fields = JSON.parse(
            encodeBarEntryJson(`S${String(k % 8000).padStart(5, '0')}`, start, 0, {
              timestamp: new Date(start).toISOString(),
              open: '101.25',
              high: '101.5',
              low: '100.75',
              close: '101',
              vwap: '101.1275',
              volume: '1500',
              trades: '12',
              complete: true,
              sources: 'feed',
            }),
          ) as string[];
          tx.xadd(keys.bars(iv), '*', ...fields);
        }
        await tx.exec();
      }
    }
    sink = spawn(process.execPath, [join(root, 'packages/cli/dist/cli.js'), 'pg-sink'], {
      env: {
        ...process.env,
        REDIS_URL: server.url,
        KEY_PREFIX: 'bench',
        DATABASE_URL: db.url,
        DATABASE_PASSWORD: db.password,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const total = perStream * INTERVALS.length;
    const deadline = Date.now() + 600_000;
    for (;;) {
      const [r] = await db.query<{ n: string }>('SELECT count(*) AS n FROM bars').catch(() => [{ n: '0' }]);
      if (Number(r!.n) >= total) break;
      if (Date.now() > deadline || sink.exitCode !== null) throw new Error(`pg-sink wrote ${r!.n} of ${total} rows`);
      await new Promise((res) => setTimeout(res, 200));
    }
    const [t] = await db.query<{ first: number; last: number }>(
      `SELECT (extract(epoch FROM min(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS first,
              (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS last FROM bars`,
    );
    const ms = t!.last - t!.first;
    return { rows: total, ms, rowsPerSec: Math.round(total / (ms / 1000)) };
  } finally {
    // (also when it fell short: no sink left running on a stopped Redis and cluster)
    sink?.kill('SIGTERM');
    redis.disconnect();
    db.stop();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
