import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * handleShutdown in a process of its own (signals cannot be sent to a test worker): a stop that
 * takes 400 ms, its log lines on stdout.
 */
async function stopped(signals: { signal: NodeJS.Signals; afterMs: number }[]): Promise<{ code: number | null; out: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-lifecycle-'));
  const script = join(dir, 'role.ts');
  writeFileSync(
    script,
    `import { handleShutdown } from ${JSON.stringify(fileURLToPath(new URL('./lifecycle.ts', import.meta.url)))};
const say = (level) => (...args) => console.log(level, args.find((a) => typeof a === 'string'));
const log = Object.fromEntries(['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((l) => [l, say(l)]));
handleShutdown(log, () => new Promise((r) => setTimeout(r, 400)));
setInterval(() => {}, 1000);
console.log('ready');
`,
  );
  const proc = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  while (!out.includes('ready')) await new Promise((r) => setTimeout(r, 20));
  for (const { signal, afterMs } of signals) {
    await new Promise((r) => setTimeout(r, afterMs));
    proc.kill(signal);
  }
  return { code: await exited, out };
}

describe('handleShutdown', () => {
  it('the same signal again within half a second (npm run / npx forwarding the Ctrl-C the process also had) is one request', async () => {
    const r = await stopped([
      { signal: 'SIGINT', afterMs: 0 },
      { signal: 'SIGINT', afterMs: 100 },
    ]);
    expect(r.code).toBe(0);
    expect(r.out.match(/info stopping/g)).toHaveLength(1);
    expect(r.out).not.toMatch(/second signal/);
  });

  it('another signal during the stop exits at once, 1', async () => {
    const r = await stopped([
      { signal: 'SIGINT', afterMs: 0 },
      { signal: 'SIGTERM', afterMs: 100 },
    ]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/warn second signal: exiting now/);
  });
});
