import { spawn } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { describe, expect, it, onTestFinished } from 'vitest';
import { CLI, childPids, cmdline, waitFor, tempDir } from './helpers.js';

/** A process's nice level, from /proc/<pid>/stat (field 19), or undefined when it is gone. */
function niceOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // after "pid (comm) ": field 3 (state) onwards, so field 19 is the 17th
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  } catch {
    return undefined;
  }
}

describe('STACK_NICE', () => {
  it('is relative to the stack: under `nice -n 10` as a non-root user the closer and writer run at 15, with STACK_FEED_NICE=2 the feed roles at 17, Redis at 10, and the stack ends 0', async () => {
    const dir = tempDir('nice');
    chmodSync(dir, 0o777);
    // CI runs as root: drop to nobody, as a user's shell would be (not root, and so not allowed to raise a priority)
    const asUser = process.getuid?.() === 0 ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] : [];
    const proc = spawn('nice', ['-n', '10', ...asUser, process.execPath, CLI, 'stack'], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? '',
        LOG_LEVEL: 'info',
        HTTP_PORT: '0',
        DATA_DIR: dir,
        STACK_NICE: '5',
        // slow enough to look at every process while the tape plays
        REPLAY_SPEED: '20000',
        STACK_FEED_NICE: '2',
        REPLAY_SHIFT: 'false',
        EXIT_WHEN_IDLE_MS: '500',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onTestFinished(() => void proc.kill('SIGKILL'));
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));

    // nice and setpriv exec: the spawned pid is the stack itself
    const niceness = () => {
      const seen = new Map<string, number>();
      for (const pid of childPids(proc.pid!)) {
        const m = /redis-server|cli\.js (\S+)/.exec(cmdline(pid));
        const nice = niceOf(pid);
        if (m && nice !== undefined) seen.set(m[1] ?? 'redis-server', nice);
      }
      return seen;
    };
    const roles = ['redis-server', 'replay-server', 'write', 'close', 'aggregate', 'ingest'];
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`the stack exited ${proc.exitCode} before every role ran:\n${out}`);
        return roles.every((r) => niceness().has(r));
      },
      60_000,
      'every role running',
    );
    // (a role is set to its level just after it is spawned: look again a moment later)
    await new Promise((r) => setTimeout(r, 300));
    const seen = niceness();
    expect(niceOf(proc.pid!)).toBe(10);
    expect(Object.fromEntries(seen)).toEqual({
      'redis-server': 10,
      'replay-server': 17,
      write: 15,
      close: 15,
      aggregate: 17,
      ingest: 17,
    });
    expect(await exited, out).toBe(0);
    expect(out).toMatch(/candlewick summary/);
    expect(out).not.toMatch(/EACCES|EPERM|uncaught|STACK_NICE/);
  });
});
