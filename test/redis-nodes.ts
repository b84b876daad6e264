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
