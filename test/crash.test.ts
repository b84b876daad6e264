import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { csvOutputs, klineProblems, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * Crash tests: real processes SIGKILL-ed at chosen points of the pipeline (crash points, see
 * packages/common/src/crash.ts), restarted by `stack`; the final CSVs must equal the oracle: no
 * trade lost, none counted twice, no row repeated — Binance's klines for the time bars, `candlewick
 * bars` for the activity bars beside them. `npm run stress` runs many seeds; CI runs these.
 */
const CRASH_POINTS = ['aggregate:read', 'close:closed', 'close:enqueued', 'activity:cut', 'write:appended', 'write:activity'] as const;

/** Activity bars beside the default intervals (docs/activity-bars.md): their files too must equal `candlewick bars`'. */
const INTERVALS = '1min,5min,15min,30min,1h,100t,50000v,30t-imb,t-imb-e100';

/** A seed picks, for every crash point, the hit at which it fires (1..4). */
function crashSpec(seed: number): string {
  let x = seed;
  return CRASH_POINTS.map((p) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return `${p}@${1 + (Math.floor(x / 65536) % 4)}`;
  }).join(',');
}

async function crashRun(seed: number, aggregators = 2) {
  const dataDir = tempDir(`crash-${seed}`);
  const once = mkdtempSync(join(tmpdir(), 'cw-crash-once-'));
  const res = await runCli(
    ['stack'],
    {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix(`crash-${seed}`),
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '1500',
      AGGREGATORS: String(aggregators),
      AGGREGATOR_BATCH: '200',
      RECLAIM_IDLE_MS: '1000',
      INGEST_BATCH: '200',
      CLOSE_EVERY_MS: '100',
      REPLAY_SPEED: '30000',
      REPLAY_SHIFT: 'false',
      INTERVALS,
      CANDLEWICK_CRASH: crashSpec(seed),
      CANDLEWICK_CRASH_ONCE_DIR: once,
    },
    180_000,
  );
  return { res, dataDir, fired: readdirSync(once) };
}

/** CRASH_SEEDS="1-20" (npm run stress) or "7,9"; CI runs seeds 1 and 2. */
function seeds(): number[] {
  const spec = process.env.CRASH_SEEDS ?? '1-2';
  return spec.split(',').flatMap((part) => {
    const [a, b] = part.split('-').map(Number);
    return b === undefined ? [a!] : Array.from({ length: b - a! + 1 }, (_, i) => a! + i);
  });
}

describe('kill -9 at chosen points, restarted by the stack', () => {
  for (const seed of seeds()) {
    it(`seed ${seed}: every role killed once mid-work, the output still equals Binance's klines exactly, its activity bars \`candlewick bars\`'`, async () => {
      const { res, dataDir, fired } = await crashRun(seed);
      expect(res.code, res.stdout.slice(-3000)).toBe(0);
      // each crash point fired (its role died by SIGKILL and was restarted)
      expect(
        fired.sort(),
        res.stdout
          .split('\n')
          .filter((l) => /SIGKILL/.test(l))
          .join('\n'),
      ).toEqual(CRASH_POINTS.map((p) => p.replace(/[^a-z0-9-]/gi, '_')).sort());
      expect(
        res.stdout.match(/role exited unexpectedly; restarting it/g)?.length,
        res.stdout
          .split('\n')
          .filter((l) => /exited|SIGKILL|fatal|ERROR/.test(l))
          .join('\n'),
      ).toBe(CRASH_POINTS.length);
      expect(klineProblems(dataDir)).toEqual([]);
      // the activity bars: byte for byte those of the tape folded in one process
      const out = tempDir(`crash-${seed}-bars`);
      expect((await runCli(['bars', '--out', out], { INTERVALS })).code).toBe(0);
      const activity = (dir: string) => new Map([...csvOutputs(dir)].filter(([k]) => !/^\d+(min|h)\//.test(k)));
      expect(activity(out).size).toBe(4);
      expect(activity(dataDir)).toEqual(activity(out));
    });
  }
});
