import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { PrivateRedis } from '@candlewick/cli';
import { csvPath } from '@candlewick/common';
import { Redis } from 'ioredis';
import { compareBars, ingested, loadKlines, readCsv, rollUpKlines, runCli, tempDir, uniquePrefix, waitFor } from './helpers.js';

/**
 * Redis stops (SHUTDOWN, AOF with appendfsync everysec) in the middle of a run and comes back on the
 * same port: every role reconnects by itself and the run completes with exact bars.
 */
async function throughRestart(name: string, downMs: number, env: Record<string, string> = {}) {
  const dataDir = tempDir(name);
  const server = new PrivateRedis(join(dataDir, 'own-redis'));
  const url = await server.start();
  const port = server.port;
  const prefix = uniquePrefix(name);
  const keys = makeKeys(prefix);
  const watch = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  watch.on('error', () => undefined);
  try {
    const run = runCli(
      ['stack'],
      {
        REDIS_URL: url,
        KEY_PREFIX: prefix,
        DATA_DIR: dataDir,
        EXIT_WHEN_IDLE_MS: '3000',
        // a paced replay (~8 s) so the restart falls in the middle
        REPLAY_SPEED: '25000',
        REPLAY_SHIFT: 'false',
        ...env,
      },
      180_000,
    );
    await waitFor(async () => (await ingested(watch, keys)) > 3000, 60_000, 'a third of the tape ingested');
    await server.stop();
    await new Promise((r) => setTimeout(r, downMs));
    await server.start(port);
    const res = await run;
    const gaps = await watch.xlen(keys.gaps());
    return { res, dataDir, gaps };
  } finally {
    watch.disconnect();
    await server.stop();
  }
}

function expectExact(res: { code: number | null; stdout: string }, dataDir: string): void {
  expect(res.code, res.stdout.slice(-3000)).toBe(0);
  // every trade once: a batch whose reply the restart cut off is resent by the client and not appended twice
  expect(res.stdout).toMatch(/trades in\s+12477\n/);
  expect(res.stdout).toMatch(/late\s+0\n/);
  expect(res.stdout).toMatch(/merged\s+12477\n/);
  const klines = loadKlines();
  for (const [interval, minutes] of [
    ['1min', 1],
    ['1h', 60],
  ] as const) {
    const { rows } = readCsv(csvPath(dataDir, interval, 'BINANCE:XRPETH'));
    expect(compareBars(rows, rollUpKlines(klines, minutes)), interval).toEqual([]);
  }
}

describe('a Redis restart mid-run', () => {
  it('every role reconnects; the CSVs still equal the klines', async () => {
    const { res, dataDir } = await throughRestart('redis-restart', 1500);
    expectExact(res, dataDir);
  });

  it('an outage longer than STALE_MS: the ingestor holds the socket (its own backpressure is not a dead feed), nothing doubled, no gap recorded', async () => {
    // small batches make the ingestor pause its socket early; the feed watchdog must not take that for a silent feed
    const { res, dataDir, gaps } = await throughRestart('redis-long-outage', 5000, { STALE_MS: '1500', INGEST_BATCH: '50' });
    expectExact(res, dataDir);
    expect(res.stdout).not.toMatch(/no frame from the feed; terminating the socket/);
    expect(gaps).toBe(0);
  });
});
