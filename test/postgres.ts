import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import pg from 'pg';
import { freePort } from '@candlewick/cli';
import { csvPath } from '@candlewick/common';
import { alive, descendants } from './procs.js';

/**
 * A private PostgreSQL cluster for a test: initdb + pg_ctl (Debian's, under
 * /usr/lib/postgresql/N/bin, not on PATH) on a free port of 127.0.0.1, its socket in its own
 * directory, never the machine's own on 5432. PostgreSQL refuses to run as root: as root the
 * cluster belongs to `nobody`. Password login (scram-sha-256) for the user `candlewick`. No
 * flush to disk (fsync off) unless `fsync` is asked for: the tests want speed, `npm run bench`
 * measures what a deployment pays. With `commitTimestamps`, each transaction's commit time is kept
 * (`track_commit_timestamp`): `pg_xact_commit_timestamp(xmin)` says when a row was written. (No
 * vitest here: the benchmarks start clusters too.)
 */
export interface PgCluster {
  port: number;
  dir: string;
  password: string;
  /** postgres://candlewick@127.0.0.1:port/candlewick (no password: give it as DATABASE_PASSWORD) */
  url: string;
  /** the same with the password in it */
  urlWithPassword: string;
  query<T extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<T[]>;
  stop(): void;
  /** the postmaster SIGKILLed (as a crash or the OOM killer would), waited for until it and its backends are gone */
  kill(): Promise<void>;
  start(): void;
}

/** Alive and not a zombie (a killed process whose parent has not reaped it holds nothing). */
function running(pid: number): boolean {
  if (!alive(pid)) return false;
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export function pgBin(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : undefined;
}

export async function startPostgres(name = 'pg', options: { fsync?: boolean; commitTimestamps?: boolean } = {}): Promise<PgCluster> {
  const bin = pgBin();
  if (!bin) throw new Error('no initdb under /usr/lib/postgresql/*/bin: install Debian\'s "postgresql" (.ci/run does)');
  const dir = mkdtempSync(join(tmpdir(), `cw-${name}-`));
  const asRoot = process.getuid?.() === 0;
  const run = (cmd: string, args: string[]) =>
    execFileSync(asRoot ? 'runuser' : join(bin, cmd), asRoot ? ['-u', 'nobody', '--', join(bin, cmd), ...args] : args, {
      stdio: 'pipe',
      cwd: dir,
    });
  if (asRoot) chownSync(dir, 65534, 65534);
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, `${password}\n`);
  if (asRoot) chownSync(pwfile, 65534, 65534);
  const data = join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'candlewick', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const opts = `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c fsync=${options.fsync ? 'on' : 'off'}${
    options.commitTimestamps ? ' -c track_commit_timestamp=on' : ''
  }`;
  const start = () => run('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-o', opts, '-w', '-t', '30', 'start']);
  const stop = () => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  start();
  const admin = { host: '127.0.0.1', port, user: 'candlewick', password, database: 'postgres' };
  const c = new pg.Client(admin);
  await c.connect();
  await c.query('CREATE DATABASE candlewick');
  await c.end();
  const url = `postgres://candlewick@127.0.0.1:${port}/candlewick`;
  return {
    port,
    dir,
    password,
    url,
    urlWithPassword: `postgres://candlewick:${password}@127.0.0.1:${port}/candlewick`,
    async query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) {
      const client = new pg.Client({ ...admin, database: 'candlewick' });
      await client.connect();
      try {
        return (await client.query<T>(sql, params)).rows;
      } finally {
        await client.end();
      }
    },
    stop: () => {
      try {
        stop();
      } catch {
        // already stopped
      }
    },
    kill: async () => {
      const pidFile = join(data, 'postmaster.pid');
      if (!existsSync(pidFile)) return;
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
      // its backends notice the postmaster's death and exit; until they have, a new postmaster refuses
      // to start over their shared memory ("pre-existing shared memory block is still in use")
      const backends = descendants(pid);
      process.kill(pid, 'SIGKILL');
      const until = Date.now() + 30_000;
      for (const p of [pid, ...backends]) while (running(p) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    },
    start,
  };
}

/**
 * The bars table as the CSV rows would start (timestamp,open,high,low,close,vwap,volume,n), one row
 * a bar, with its interval and symbol: the prices are numeric built from the CSV's text, so
 * `::text` gives the cell back character for character.
 */
export const BARS_AS_CSV_SQL = `SELECT "interval", symbol, concat_ws(',', label, open::text, high::text, low::text, close::text,
  coalesce(vwap::text, ''), volume::text, coalesce(trades::text, '')) AS line FROM bars ORDER BY "interval", symbol, start`;

export interface BarLine {
  interval: string;
  symbol: string;
  line: string;
}

/** Rows of BARS_AS_CSV_SQL by the CSV file they belong to (csvPath), named as under DATA_DIR/raw: `1min/BINANCE_XRPETH_1min.csv`. */
export function barsAsFiles(rows: BarLine[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const r of rows) {
    const file = relative('raw', csvPath('', r.interval, r.symbol));
    if (!out.has(file)) out.set(file, []);
    out.get(file)!.push(r.line);
  }
  return out;
}

/** CSV files (name under DATA_DIR/raw -> text) as the same lines: the rows without the header, their first eight cells. */
export function csvLines(files: Map<string, string>): Map<string, string[]> {
  return new Map(
    [...files].map(([name, text]) => [
      name,
      text
        .trimEnd()
        .split('\n')
        .slice(1)
        .map((l) => l.split(',').slice(0, 8).join(',')),
    ]),
  );
}
