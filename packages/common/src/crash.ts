import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Crash points for the crash tests: CANDLEWICK_CRASH="aggregate:read@3,write:appended@2" makes the
 * process SIGKILL itself the 3rd time it reaches `aggregate:read`, and so on. With
 * CANDLEWICK_CRASH_ONCE_DIR each point fires once across restarts (a marker file per point). Unset
 * (always, outside tests) a crash point is one map lookup on an empty map.
 *
 * This is the one place outside config.ts that reads the environment: a test hook, not a setting.
 */
const targets = new Map<string, number>(
  (process.env.CANDLEWICK_CRASH ?? '')
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => {
      const [name, at] = s.trim().split('@');
      return [name!, Math.max(1, Number(at ?? '1') || 1)];
    }),
);
const onceDir = process.env.CANDLEWICK_CRASH_ONCE_DIR;
const hits = new Map<string, number>();

/** `stack` itself (its final close) never crashes: the points are for its roles. */
export function disableCrashPoints(): void {
  targets.clear();
}

export function crashPoint(name: string): void {
  if (targets.size === 0) return;
  const at = targets.get(name);
  if (at === undefined) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n !== at) return;
  if (onceDir) {
    // created exclusively: two processes at the same point at once (two aggregators) fire it once
    const marker = join(onceDir, name.replace(/[^a-z0-9-]/gi, '_'));
    try {
      writeFileSync(marker, String(process.pid), { flag: 'wx' });
    } catch {
      return;
    }
  }
  process.kill(process.pid, 'SIGKILL');
}
