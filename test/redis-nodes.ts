import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { Redis, type RedisOptions } from 'ioredis';
import { freePort } from '@candlewick/cli';
import { klineProblems, waitFor } from './helpers.js';

/**
 * Real redis-server processes with any arguments (TLS, ACL files, replicas, sentinels), for the
 * tests of Sentinel, TLS and per-role users. Each runs in its own process group on a free port.
 */
export interface Node {
  port: number;
  proc: ChildProcess;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function startNode(
  dir: string,
  args: string[],
  probe: RedisOptions,
  opts: { sentinel?: boolean; port?: number } = {},
): Promise<Node> {
  mkdirSync(dir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const portArgs = probe.tls ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)];
  let argv: string[];
  if (opts.sentinel) {
    // a sentinel needs a config file it can rewrite
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\n${args.join('\n')}\n`);
    argv = [conf, '--sentinel'];
  } else argv = [...portArgs, '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', ...args];
  const proc = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const probeClient = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...probe,
  });
  probeClient.on('error', () => undefined);
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
      try {
        await probeClient.connect();
        await probeClient.ping();
        return true;
      } catch {
        probeClient.disconnect();
        return false;
      }
    },
    10_000,
    `redis-server on ${port}`,
  );
  probeClient.disconnect();
  return {
    port,
    proc,
    output: () => out,
    kill: async (signal = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await exited;
    },
  };
}

/**
 * A CA, a server certificate for `serverName` (a DNS name only: not 127.0.0.1, so a client reaching
 * it there must be told the name), a client certificate, and a CA that signed neither.
 */
export function makeCerts(
  dir: string,
  serverName: string,
): Record<'ca' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey' | 'otherCa', string> {
  mkdirSync(dir, { recursive: true });
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ca = (name: string) => {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.crt`),
    );
  };
  ca('test-ca');
  ca('other-ca');
  const leaf = (name: string, ext: string) => {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    writeFileSync(f(`${name}.ext`), ext);
    ssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('test-ca.crt'),
      '-CAkey',
      f('test-ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.crt`),
    );
  };
  leaf(serverName, `subjectAltName=DNS:${serverName}\nextendedKeyUsage=serverAuth\n`);
  leaf('client', 'extendedKeyUsage=clientAuth\n');
  return {
    ca: f('test-ca.crt'),
    serverCert: f(`${serverName}.crt`),
    serverKey: f(`${serverName}.key`),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    otherCa: f('other-ca.crt'),
  };
}

/** Every log a run left: its output and the JSON logs under DATA_DIR/logs. */
export function allLogs(output: string, dataDir: string): string {
  let text = output;
  const logs = join(dataDir, 'logs');
  try {
    for (const f of readdirSync(logs)) if (statSync(join(logs, f)).isFile()) text += readFileSync(join(logs, f), 'utf8');
  } catch {
    // no log folder
  }
  return text;
}

/**
 * A stack run of the bundled tape: exit 0, every trade once, every bar of every default interval
 * equal to Binance's klines (rolled up), each interval's trades adding up to the tape's.
 */
export function expectTapeExact(res: { code: number | null; stdout: string }, dataDir: string): void {
  expect(res.code, res.stdout.slice(-3000)).toBe(0);
  expect(res.stdout).toMatch(/trades in\s+12477\n/);
  expect(res.stdout).toMatch(/late\s+0\n/);
  expect(res.stdout).toMatch(/merged\s+12477\n/);
  expect(klineProblems(dataDir)).toEqual([]);
}

/** Lines of a run's output that match. */
export function lines(out: string, re: RegExp): string[] {
  return out.split('\n').filter((l) => re.test(l));
}

export interface LogLine {
  level: number;
  time: number;
  msg: string;
}

/** Each role's JSON log (DATA_DIR/logs/{role}.1.log), role -> lines. */
export function roleLogs(dataDir: string): Map<string, LogLine[]> {
  const out = new Map<string, LogLine[]>();
  for (const f of readdirSync(join(dataDir, 'logs'))) {
    const role = f.replace(/\.\d+\.log$/, '');
    const text = readFileSync(join(dataDir, 'logs', f), 'utf8');
    out.set(
      role,
      text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as LogLine),
    );
  }
  return out;
}

/** The one WARN a role says for a failover: a lost connection, or (a paused master) Redis not answering. */
export const FAILOVER_WARN =
  /^(lost the connection to Redis; retrying \(every role waits, nothing is dropped\)|Redis is not answering for \d+ s \(paused, swapping or stuck\?\); every role waits, nothing is dropped)$/;

/**
 * A failover said as a routine event: no ERROR line (level 50) and no stack trace in the run's
 * output or any role's log; each role that said anything of it (every one of `mustSee` did) said one
 * WARN when it started and one "Redis is back" INFO when it was over, at most `withinMs` after
 * `electedAt` (the new master elected or promoted). Returns, per role, ms from `electedAt` to its INFO.
 */
export function expectFailoverSaid(
  out: string,
  dataDir: string,
  opts: { electedAt: number; withinMs: number; mustSee: readonly string[] },
): Map<string, number> {
  const logs = roleLogs(dataDir);
  expect(lines(out, /"level":50|\bERROR\b/), 'error lines').toEqual([]);
  expect(lines(out, /^\s+at /), 'stack traces').toEqual([]);
  for (const [role, log] of logs)
    expect(
      log.filter((l) => l.level >= 50).map((l) => l.msg),
      `${role}: errors`,
    ).toEqual([]);
  const said: Record<string, { warn: string[]; back: number[] }> = {};
  for (const [role, log] of logs) {
    const warn = log.filter((l) => l.level >= 40).map((l) => l.msg);
    const back = log.filter((l) => l.level === 30 && l.msg === 'Redis is back').map((l) => l.time);
    if (warn.length || back.length) said[role] = { warn, back };
  }
  for (const role of opts.mustSee) expect(Object.keys(said), 'roles that saw the failover').toContain(role);
  const backs = new Map<string, number>();
  for (const [role, { warn, back }] of Object.entries(said)) {
    expect(warn.length, `${role}: warnings ${JSON.stringify(warn)}`).toBe(1);
    expect(warn[0], `${role}: warning`).toMatch(FAILOVER_WARN);
    expect(back.length, `${role}: "Redis is back" lines`).toBe(1);
    expect(back[0]! - opts.electedAt, `${role}: back after the new master`).toBeLessThanOrEqual(opts.withinMs);
    backs.set(role, back[0]! - opts.electedAt);
  }
  return backs;
}
