import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { klineProblems, startCli, redisUrl, tempDir, uniquePrefix, waitFor } from './helpers.js';

/** The stack's child processes by role (from /proc: pid -> argv). */
function rolesOf(stackPid: number): Map<string, number> {
  const out = new Map<string, number>();
  const list = readFileSync(`/proc/${stackPid}/task/${stackPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  for (const pid of list) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const role = argv[argv.findIndex((a) => a.endsWith('cli.js')) + 1];
      if (role) out.set(role, pid);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

describe('graceful shutdown', () => {
  it('SIGTERM mid-run makes the aggregator, closer and writer finish their work and exit 0 quickly; restarted, the output is exact', async () => {
    const dataDir = tempDir('sigterm');
    const stack = startCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('sigterm'),
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '1500',
      REPLAY_SPEED: '20000',
      REPLAY_SHIFT: 'false',
      AGGREGATOR_BATCH: '200',
      CLOSE_EVERY_MS: '100',
    });
    const output = () => stack.output().stdout + stack.output().stderr;

    await waitFor(() => /feed connected/.test(output()), 60_000, 'the feed');
    const stopMs: Record<string, number> = {};
    // one role at a time, a second apart, while trades flow
    for (const role of ['aggregate', 'write', 'close']) {
      await new Promise((r) => setTimeout(r, 1000));
      const pid = rolesOf(stack.pid).get(role);
      expect(pid, `${role} running`).toBeDefined();
      const t0 = Date.now();
      process.kill(pid!, 'SIGTERM');
      await waitFor(
        () => !existsSync(`/proc/${pid}/cmdline`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z',
        20_000,
        `${role} to exit`,
      );
      stopMs[role] = Date.now() - t0;
    }
    const code = await stack.exited;
    const out = output();
    expect(code, out.slice(-3000)).toBe(0);
    // each stopped through its shutdown path and exited 0 (the stack then restarted it)
    for (const role of ['aggregate', 'write', 'close']) {
      expect(out, role).toMatch(new RegExp(`role exited unexpectedly; restarting it\\s+role=${role} code=0`));
      expect(stopMs[role], role).toBeLessThan(10_000);
    }
    expect(out).toMatch(/aggregator stopped\s+merged=\d+/);
    expect(out).toMatch(/writer stopped\s+written=\d+/);
    expect(out).toMatch(/merged\s+12477\n/);

    expect(klineProblems(dataDir)).toEqual([]);
  }, 200_000);
});
