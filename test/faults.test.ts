import { describe, expect, it } from 'vitest';
import { FAULTS, LIBFAKETIME, canRun, referenceRun, runFault } from './faults/campaign.js';
import { needs } from './helpers.js';

/**
 * The fault campaign's short version: each fault once (seed 1), Redis down 35 s instead of 90
 * (longer than STALE_MS all the same), paused 10 s instead of 60. `npm run faults` runs the whole campaign over more seeds.
 */
const CI_FAULTS = Object.keys(FAULTS).filter((f) => f !== 'Redis killed 90 s' && f !== 'Redis paused 60 s');

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
