import { describe, expect, it } from 'vitest';
import { FAULTS, LIBFAKETIME, canRun, referenceRun, runFault } from './faults/campaign.js';
import { needs } from './helpers.js';

/**
 * The fault campaign's short version: each fault once (seed 1), Redis down 35 s instead of 90
 * (longer than STALE_MS all the same), paused 10 s instead of 60. Left to `npm run faults` (the
 * whole campaign over more seeds), as other files of `npm test` cover them: a kill -9 of the
 * closer, the writer and the ingestor (test/crash.test.ts kills each role at its crash points;
 * test/feed-binance.test.ts the ingestor mid-tape), an aggregator stopped and continued
 * (test/recovery.test.ts pauses one past the takeover deadline), Redis down 1 s (35 s here).
 */
const LONG_ONLY = new Set(['Redis killed 90 s', 'Redis paused 60 s']);
const ELSEWHERE = new Set(['kill -9 close', 'kill -9 write', 'kill -9 ingest', 'STOP/CONT aggregate', 'Redis killed 1 s']);
const CI_FAULTS = Object.keys(FAULTS).filter((f) => !LONG_ONLY.has(f) && !ELSEWHERE.has(f));

describe('the fault campaign, one seed', () => {
  let reference: Map<string, string>;
  it('a run without faults', async () => {
    reference = await referenceRun();
    expect(reference.size).toBe(5);
  });
  for (const name of CI_FAULTS) {
    it(`${name}: the same bytes as a run without it`, { timeout: 300_000 }, async (ctx) => {
      if (FAULTS[name]!.root) needs(ctx, process.getuid?.() === 0, 'a tmpfs mount needs root');
      if (FAULTS[name]!.faketime) needs(ctx, canRun(name), `a clock step needs libfaketime (${LIBFAKETIME}: Debian's faketime)`);
      const r = await runFault(name, 1, reference);
      expect(r.problems).toEqual([]);
      expect(r.exact).toBe(true);
    });
  }
});
