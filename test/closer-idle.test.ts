import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { loadConfig, makeKeys, readCounters } from '@candlewick/common';
import { freePort, PrivateRedis } from '@candlewick/cli';
import { barsQueue } from '@candlewick/aggregator';
import { ingested, klineProblems, startCli, stopForGood, tempDir, uniquePrefix, waitFor, type CliProcess } from './helpers.js';

/** the bundled tape's trades */
const TAPE_TRADES = 12_477;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The roles run apart, as docker compose runs them: a closer on the event clock closes every open
 * bar once the feed has been quiet CLOSE_WHEN_IDLE_MS (the end of a replay). An outage longer than
 * that is not quiet: the ingestor holds what its feed sent meanwhile and hands it over once it is
 * back, and it may be back after the closer (each role reconnects on its own backoff). Here the
 * ingestor is held (SIGSTOP) from the outage's start until 3.5 s after Redis is back, long after
 * the closer is: a closer that took the outage for quiet closed every bar then, and the rest of
 * the tape came in late.
 */
describe('CLOSE_WHEN_IDLE_MS through a Redis outage (roles run apart)', () => {
  const procs: CliProcess[] = [];
  let server: PrivateRedis | undefined;
  afterEach(async () => {
    for (const p of procs.splice(0)) {
      p.kill('SIGCONT');
      await stopForGood(p);
    }
    await server?.stop();
  });

  it('the closer back before the ingestor: no bar closed under the trades the ingestor held; every bar exact, none late', async () => {
    const dataDir = tempDir('closer-idle');
    server = new PrivateRedis(join(dataDir, 'own-redis'));
    const url = await server.start();
    const redisPort = server.port;
    const prefix = uniquePrefix('closer-idle');
    const keys = makeKeys(prefix);
    const feedPort = await freePort();
    const env = {
      REDIS_URL: url,
      KEY_PREFIX: prefix,
      DATA_DIR: dataDir,
      FINNHUB_WS_URL: `ws://127.0.0.1:${feedPort}`,
      CLOSE_WHEN_IDLE_MS: '2000',
      // the ingestor's own watchdog is not what is tried here
      STALE_MS: '60000',
    };
    const role = (name: string, extra: Record<string, string> = {}) => {
      const p = startCli([name], { ...env, ...extra });
      procs.push(p);
      return p;
    };
    const output = () => procs.map((p) => p.output().stdout + p.output().stderr).join('\n');
    // a paced replay (~8 s of tape) so the outage falls in the middle
    role('replay-server', { REPLAY_PORT: String(feedPort), REPLAY_HOST: '127.0.0.1', REPLAY_SPEED: '25000', REPLAY_SHIFT: 'false' });
    const close = role('close');
    role('aggregate');
    role('write');
    const watch = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    watch.on('error', () => undefined);
    try {
      await waitFor(() => /closer started/.test(close.output().stdout), 30_000, 'the closer');
      const ingest = role('ingest');
      await waitFor(async () => (await ingested(watch, keys, loadConfig({}).partitions)) > 3000, 60_000, 'a quarter of the tape ingested');

      await server.stop();
      ingest.kill('SIGSTOP');
      await sleep(4000);
      await server.start(redisPort);
      // the closer is back within a second or two (its next try); the ingestor later
      await waitFor(() => /Redis is back/.test(close.output().stdout), 10_000, 'the closer back');
      await sleep(3500);
      ingest.kill('SIGCONT');

      const cfg = loadConfig({ KEY_PREFIX: prefix });
      await waitFor(
        async () => {
          const c = await readCounters(watch, cfg, keys);
          return c.in === TAPE_TRADES && c.merged + c.late === c.in && /closed every open bar/.test(close.output().stdout);
        },
        60_000,
        'the whole tape merged and every bar closed',
      );
      // the writer's last jobs
      const bars = barsQueue(watch, keys);
      try {
        await waitFor(
          async () => {
            const n = await bars.getJobCounts('wait', 'active');
            return n.wait! + n.active! === 0;
          },
          30_000,
          'the writer done',
        );
      } finally {
        await bars.close();
      }
      const c = await readCounters(watch, cfg, keys);
      expect({ in: c.in, merged: c.merged, late: c.late }, output().slice(-4000)).toEqual({
        in: TAPE_TRADES,
        merged: TAPE_TRADES,
        late: 0,
      });
      // every interval's file equals Binance's klines (rolled up)
      expect(klineProblems(dataDir)).toEqual([]);
    } finally {
      watch.disconnect();
    }
  }, 180_000);
});
