import { describe, expect, it } from 'vitest';
import { BUNDLED_TAPE, LEAN_AIG_TAPE, csvOutputs, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

describe('scale-out', () => {
  it('1, 2 and 4 aggregators on the same tapes write byte-identical CSV files', async () => {
    const runs: Map<string, string>[] = [];
    for (const n of [1, 2, 4]) {
      const dataDir = tempDir(`scale-${n}`);
      const res = await runCli(
        ['stack'],
        {
          REDIS_URL: redisUrl(),
          KEY_PREFIX: uniquePrefix(`scale-${n}`),
          DATA_DIR: dataDir,
          EXIT_WHEN_IDLE_MS: '500',
          REPLAY_TAPE: `${BUNDLED_TAPE},${LEAN_AIG_TAPE}`,
          STREAM_PARTITIONS: '2',
          AGGREGATORS: String(n),
          AGGREGATOR_BATCH: '300',
        },
        180_000,
      );
      expect(res.code, res.stdout.slice(-2000)).toBe(0);
      expect(res.stdout).toMatch(/trades in\s+66795\n/);
      expect(res.stdout).toMatch(/late\s+0\n/);
      runs.push(csvOutputs(dataDir));
    }
    expect(runs[0]!.size).toBe(10); // 2 symbols x 5 intervals
    for (const other of runs.slice(1)) {
      expect([...other.keys()].sort()).toEqual([...runs[0]!.keys()].sort());
      for (const [file, text] of runs[0]!) expect(other.get(file) === text, file).toBe(true);
    }
  });
});
