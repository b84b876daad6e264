import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { settingsTable } from '@candlewick/common';
import { ROLES } from '@candlewick/cli';
import { CLI, ROOT, tempDir } from './helpers.js';

/**
 * The CLI as a user meets it: `--help` for each role, `--version`, mistakes still refused, and a
 * role loading only its own libraries (what it loads is traced in the real process, not assumed).
 */

const PRELOAD = join(ROOT, 'test/load-trace/preload.mjs');
/** (vitest sets MODE=test, which is no candlewick mode) */
const BASE_ENV = { ...process.env, MODE: 'replay' };

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...BASE_ENV, ...env }, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The node_modules packages a command loads (ES modules and CommonJS ones alike). */
function packagesLoaded(args: string[], env: Record<string, string> = {}): { code: number | null; stderr: string; packages: Set<string> } {
  const trace = join(tempDir('load-trace'), 'modules');
  writeFileSync(trace, '');
  const r = spawnSync(process.execPath, ['--import', PRELOAD, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...BASE_ENV, ...env, LOAD_TRACE: trace },
    timeout: 30_000,
  });
  const packages = new Set<string>();
  for (const line of readFileSync(trace, 'utf8').split('\n')) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line);
    if (m) packages.add(m[1]!);
  }
  return { code: r.status, stderr: r.stderr, packages };
}

/** What `candlewick bars` and `--help` have no use for: the queue, Redis, the servers, metrics, the logger. */
const HEAVY = ['bullmq', 'ioredis', 'fastify', '@bull-board/api', '@fastify/static', 'ws', 'prom-client', 'pino', 'cli-progress'];

describe('candlewick <role> --help', () => {
  it.each(ROLES.filter((r) => r !== 'help'))('%s --help prints its usage and exactly the settings it reads, exit 0', (role) => {
    const r = cli([role, '--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`usage: candlewick ${role} `);
    const listed = [...r.stdout.matchAll(/^ {2}([A-Z][A-Z0-9_]+)\b/gm)].map((m) => m[1]);
    const reads = settingsTable(role).map((s) => s.env);
    expect(listed).toEqual(reads);
    expect(listed.length).toBeGreaterThan(0);
    // `help <role>` says the same
    expect(cli(['help', role]).stdout).toBe(r.stdout);
  });

  it('lists only what a role reads: bars no Redis setting, acl no feed setting, stack every setting', () => {
    const bars = cli(['bars', '-h']).stdout;
    expect(bars).toMatch(/^ {2}REPLAY_TAPE \(--tape\) /m);
    expect(bars).toMatch(/^ {2}INTERVALS /m);
    expect(bars).not.toMatch(/REDIS_URL|HTTP_PORT|METRICS_PORT/);
    const acl = cli(['acl', '--help']).stdout;
    expect(acl).toMatch(/^ {2}KEY_PREFIX /m);
    expect(acl).not.toMatch(/FINNHUB_TOKEN|INTERVALS/);
    const stack = cli(['stack', '--help']).stdout;
    expect([...stack.matchAll(/^ {2}([A-Z][A-Z0-9_]+)\b/gm)].length).toBe(settingsTable().length);
  });

  it('--help wins over the other flags and runs nothing', () => {
    const out = tempDir('help-runs-nothing');
    const r = cli(['bars', '--out', out, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: candlewick bars');
    expect(r.stdout).not.toContain('bars written');
  });
});

describe('candlewick --version', () => {
  it.each(['--version', '-v'])('%s prints the version in package.json', (flag) => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'packages/cli/package.json'), 'utf8')) as { version: string };
    const root = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = cli([flag]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`candlewick ${pkg.version}\n`);
    expect(pkg.version).toBe(root.version);
  });
});

describe('mistakes are still refused', () => {
  it('an unknown role: exit 2, the usage on stderr', () => {
    const r = cli(['nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('candlewick: unknown role "nope"');
    expect(r.stderr).toContain('usage: candlewick <role>');
    expect(r.stdout).toBe('');
  });

  it('an unknown flag: exit 2, the closest flag named', () => {
    const r = cli(['bars', '--tpe', 'x.jsonl']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown flag --tpe: did you mean --tape?');
  });
});

describe('a role loads only what it uses', () => {
  it('the trace sees libraries loaded both ways (import, and require on first use)', () => {
    const r = packagesLoaded([
      '--input-type=module',
      '-e',
      "import { createRequire } from 'node:module'; await import('bullmq'); createRequire(process.cwd() + '/')('ioredis');",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.packages).toContain('bullmq');
    expect(r.packages).toContain('ioredis');
  });

  it('candlewick bars loads no queue, Redis client, server, metrics or logger', () => {
    const dir = tempDir('bars-loads');
    const tape = join(dir, 'tape.jsonl');
    writeFileSync(tape, '{"s":"AAPL","p":"150.25","v":10,"t":1700000000000,"c":[]}\n');
    const r = packagesLoaded([CLI, 'bars', '--tape', tape, '--out', join(dir, 'out')]);
    expect(r.code, r.stderr).toBe(0);
    // it did load what it needs: the settings schema and the CSV writer
    expect(r.packages).toContain('zod');
    expect(r.packages).toContain('csv-stringify');
    expect([...r.packages].filter((p) => HEAVY.includes(p))).toEqual([]);
  });

  it('--help and --version load none of it either', () => {
    for (const args of [['write', '--help'], ['--version']]) {
      const r = packagesLoaded([CLI, ...args]);
      expect(r.code, r.stderr).toBe(0);
      expect([...r.packages].filter((p) => HEAVY.includes(p))).toEqual([]);
    }
  });
});
