/**
 * npm run bench, section 8 (BENCH_PART=pg alone): pg-sink's writes into PostgreSQL against a
 * `COPY … FROM STDIN` of the same rows, its ceiling, in the same run, on a private cluster
 * (test/postgres.ts: initdb and pg_ctl on a free port, never the machine's own on 5432), fsync on
 * as a deployment has it.
 *
 * The rows are real bars: the tape's, every interval, read back from the CSV files `candlewick
 * bars` writes (CSV_EXTRA_COLUMNS on, so `complete` and `sources` are there as pg-sink writes
 * them), repeated over copies of the tape's symbols (AIG, AIG.1, AIG.2, …) up to BENCH_PG_ROWS,
 * ordered as a live feed closes them (window start, interval, symbol).
 *
 * Then end to end: `candlewick stack` with DATABASE_URL (pg-sink on) against the same stack without,
 * alternating, BENCH_RUNS each: trades/s of each and their ratio, and the sink's lag at the end,
 * the last row's commit (track_commit_timestamp) after the writer's last CSV row.
 */
import { spawn } from 'node:child_process';
import { readdirSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { fileSafeSymbol, loadConfig, tapeSymbols, type TapeItem } from '@candlewick/common';
import { Clock } from '@candlewick/core';
import { InProcessBars } from '@candlewick/cli';
import { migrate, readCsvFile, upsertBars, type TableBar } from '@candlewick/writer';
import { pgBin, startPostgres, type PgCluster } from '../test/postgres.js';
import { pgCatchUp } from './pg-catchup.js';
import { ROOT, benchSettings } from './settings.js';

/** What section 8 needs of a `candlewick stack` run (bench.ts's, 1 partition x 1 aggregator). */
export interface PgStackRun {
  tradesPerSec: number;
  rows: number;
  lastRowAt: number;
}

export interface PgBenchOptions {
  rows: number;
  runs: number;
  /** runs the stack over the bench's tape with these settings added */
  stack?: (env: Record<string, string>) => Promise<PgStackRun>;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The tape's bars of every interval as table rows, repeated over copies of its symbols up to `n`. */
export function benchRows(items: readonly TapeItem[], n: number): { rows: TableBar[]; bars: number; intervals: number } {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-pgrows-'));
  try {
    const cfg = loadConfig({ MODE: 'replay', DATA_DIR: dir, CSV_EXTRA_COLUMNS: 'true' });
    const symbols = tapeSymbols(items);
    new InProcessBars(cfg, symbols).run(items);
    const spelling = new Map(symbols.map((s) => [fileSafeSymbol(s), s]));
    const clock = new Clock(cfg.tz);
    const bars: TableBar[] = [];
    const raw = join(dir, 'raw');
    const intervals = readdirSync(raw).sort();
    for (const interval of intervals)
      for (const name of readdirSync(join(raw, interval)).sort()) {
        const suffix = `_${interval}.csv`;
        if (!name.endsWith(suffix)) continue;
        const safe = name.slice(0, -suffix.length);
        for (const b of readCsvFile(join(raw, interval, name), clock, spelling.get(safe) ?? safe, interval, false)) bars.push(b);
      }
    if (!bars.length) throw new Error('the tape gave no bars to write');
    const rows: TableBar[] = [];
    for (let copy = 0; rows.length < n; copy++)
      for (const b of bars) {
        if (rows.length >= n) break;
        rows.push(copy === 0 ? b : { ...b, symbol: `${b.symbol}.${copy}` });
      }
    rows.sort((a, b) => a.start - b.start || a.interval.localeCompare(b.interval) || a.symbol.localeCompare(b.symbol));
    return { rows, bars: bars.length, intervals: intervals.length };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** As pg-sink writes a read of DATABASE_BATCH entries: one transaction, one upsert. Rows per second. */
async function upsertAll(client: pg.Client, rows: readonly TableBar[], batch: number): Promise<number> {
  const t0 = performance.now();
  // one statement a batch, as pg-sink writes (its own transaction)
  for (let i = 0; i < rows.length; i += batch) await upsertBars(client, rows.slice(i, i + batch));
  return rows.length / ((performance.now() - t0) / 1000);
}

const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** A row as COPY's CSV format reads it (an empty unquoted cell is NULL). */
function csvLine(b: TableBar): string {
  return `${[
    quote(b.symbol),
    quote(b.interval),
    new Date(b.start).toISOString(),
    quote(b.timestamp),
    b.open,
    b.high,
    b.low,
    b.close,
    b.vwap,
    b.volume,
    b.trades === undefined ? '' : String(b.trades),
    b.complete === null ? '' : String(b.complete),
    b.sources === null ? '' : quote(b.sources),
    String(b.rev),
  ].join(',')}\n`;
}

/** The rows by `COPY bars_copy FROM STDIN` through psql, building the CSV text included. Rows per second. */
function copyAll(cluster: PgCluster, bin: string, rows: readonly TableBar[]): Promise<number> {
  const t0 = performance.now();
  const text = rows.map(csvLine).join('');
  return new Promise((resolve, reject) => {
    const psql = spawn(
      join(bin, 'psql'),
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'candlewick', '-d', 'candlewick'].concat([
        '-c',
        'COPY bars_copy FROM STDIN WITH (FORMAT csv)',
      ]),
      // (the password by the environment, never on a command line)
      { env: { ...process.env, PGPASSWORD: cluster.password }, stdio: ['pipe', 'ignore', 'pipe'] },
    );
    let err = '';
    psql.stderr.on('data', (d: Buffer) => (err += d.toString()));
    psql.on('error', reject);
    psql.on('exit', (code) =>
      code === 0 ? resolve(rows.length / ((performance.now() - t0) / 1000)) : reject(new Error(`psql COPY exited ${code}: ${err.trim()}`)),
    );
    psql.stdin.end(text);
  });
}

/**
 * The stack without and with pg-sink, alternating, `runs` each (an empty table each time); the
 * medians, and the sink's lag at the end: its last commit after the writer's last row.
 */
async function endToEnd(
  client: pg.Client,
  cluster: PgCluster,
  stack: NonNullable<PgBenchOptions['stack']>,
  runs: number,
): Promise<string[]> {
  const plain: number[] = [];
  const withSink: number[] = [];
  const lags: number[] = [];
  let rows = 0;
  for (let run = 0; run < runs; run++) {
    plain.push((await stack({})).tradesPerSec);
    await client.query('TRUNCATE bars');
    const r = await stack({ DATABASE_URL: cluster.url, DATABASE_PASSWORD: cluster.password });
    const t = (
      await client.query<{ n: number; last: number }>(
        'SELECT count(*)::int AS n, (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS last FROM bars',
      )
    ).rows[0]!;
    // (the stack stops pg-sink only once it has written what was closed: every CSV row is in the table)
    if (t.n !== r.rows) throw new Error(`pg bench: the stack wrote ${r.rows} CSV rows, the table holds ${t.n}`);
    rows = t.n;
    withSink.push(r.tradesPerSec);
    lags.push(t.last - r.lastRowAt);
  }
  const off = median(plain);
  const on = median(withSink);
  return [
    `  end to end, candlewick stack 1 x 1 over the tape, alternating, median of ${runs} runs each:`,
    `  ${'without DATABASE_URL'.padEnd(68)}${fmt(off).padStart(10)} trades/s`,
    `  ${`with DATABASE_URL (pg-sink on, ${fmt(rows)} rows)`.padEnd(68)}${fmt(on).padStart(10)} trades/s   ${(on / off).toFixed(2)}x without`,
    `  the sink's lag at the end: its last commit ${(median(lags) / 1000).toFixed(2)} s after the writer's last CSV row (worst of ${runs}: ${(Math.max(...lags) / 1000).toFixed(2)} s)`,
  ];
}

/**
 * pg-sink catching up on CATCH_UP_ROWS waiting in bars:{interval} (bench/pg-catchup.ts), median of
 * `runs`; with BENCH_BASELINE, that checkout's sink too, alternating with this one's.
 */
async function catchingUp(runs: number, ceiling: number): Promise<string[]> {
  const settings = benchSettings();
  const roots = settings.BENCH_BASELINE ? [ROOT, settings.BENCH_BASELINE] : [ROOT];
  const rates = roots.map(() => [] as number[]);
  for (let run = 0; run < runs; run++)
    for (const [k, root] of roots.entries()) rates[k]!.push((await pgCatchUp(root, CATCH_UP_ROWS)).rowsPerSec);
  const now = median(rates[0]!);
  const lines = [
    `  catching up: ${fmt(CATCH_UP_ROWS)} rows waiting in the five bars:{interval} streams, \`candlewick pg-sink\` from its first commit to its last, median of ${runs}:`,
    `  ${'pg-sink catching up'.padEnd(68)}${fmt(now).padStart(10)} rows/s   ${(now / ceiling).toFixed(2)}x the ceiling`,
  ];
  if (settings.BENCH_BASELINE) {
    const then = median(rates[1]!);
    lines.push(
      `  ${`pg-sink of ${settings.BENCH_BASELINE}, alternating`.padEnd(68)}${fmt(then).padStart(10)} rows/s   ${(then / ceiling).toFixed(2)}x the ceiling; this checkout ${(now / then).toFixed(2)}x`,
    );
  }
  return lines;
}

/** rows the catch-up measurement leaves waiting for the sink */
const CATCH_UP_ROWS = 100_000;

/** Section 8's lines; a machine without PostgreSQL is said and the section skipped. */
export async function pgSection(items: readonly TapeItem[], what: string, o: PgBenchOptions): Promise<string[]> {
  const bin = pgBin();
  if (!bin)
    return [
      '8. PostgreSQL sink: skipped, no PostgreSQL here (no initdb under /usr/lib/postgresql/*/bin); install Debian\'s "postgresql" to measure it',
    ];
  const { rows, bars, intervals } = benchRows(items, o.rows);
  const batch = loadConfig({ MODE: 'replay' }).databaseBatch;
  const cluster = await startPostgres('bench-pg', { fsync: true, commitTimestamps: true });
  const client = new pg.Client({ connectionString: cluster.urlWithPassword, application_name: 'candlewick bench' });
  try {
    await client.connect();
    await migrate(client, pino({ level: 'silent' }));
    await client.query('CREATE TABLE bars_copy (LIKE bars INCLUDING ALL)');
    const version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
    const upsert: number[] = [];
    const copy: number[] = [];
    const again: number[] = [];
    let rewritten = -1;
    let differ = -1;
    for (let run = 0; run < o.runs; run++) {
      await client.query('TRUNCATE bars, bars_copy');
      await client.query('CHECKPOINT');
      upsert.push(await upsertAll(client, rows, batch));
      await client.query('CHECKPOINT');
      copy.push(await copyAll(cluster, bin, rows));
      await client.query('CHECKPOINT');
      const before = (await client.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
      again.push(await upsertAll(client, rows, batch));
      if (run === 0) {
        // the same rows by both paths, and the second upsert changed nothing (no row has a newer xmin)
        const r = await client.query<{ n: number; d: number; c: number }>(
          `SELECT (SELECT count(*) FROM bars)::int AS n, (SELECT count(*) FROM bars_copy)::int AS c,
             (SELECT count(*) FROM ((TABLE bars EXCEPT ALL TABLE bars_copy) UNION ALL (TABLE bars_copy EXCEPT ALL TABLE bars)) x)::int AS d`,
        );
        const { n, c, d } = r.rows[0]!;
        if (n !== rows.length || c !== rows.length)
          throw new Error(`pg bench: ${rows.length} rows written, the table holds ${n} and the COPY's ${c}`);
        differ = d;
        rewritten = (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM bars WHERE xmin::text::bigint > $1', [before]))
          .rows[0]!.n;
        if (differ || rewritten)
          throw new Error(
            `pg bench: ${differ} rows differ between the upsert's table and the COPY's; the second upsert rewrote ${rewritten} rows`,
          );
      }
    }
    const ceiling = median(copy);
    const line = (label: string, x: number, ratio = true) =>
      `  ${label.padEnd(68)}${fmt(x).padStart(10)} rows/s${ratio ? `   ${(x / ceiling).toFixed(2)}x the ceiling` : '   <- the ceiling'}`;
    return [
      `8. PostgreSQL sink: PostgreSQL ${version} (private cluster, fsync on), ${fmt(rows.length)} rows: ${what}'s ${fmt(bars)} bars of ${intervals} intervals over copies of its symbols, median of ${o.runs} runs`,
      line('COPY … FROM STDIN (psql), into an empty table', ceiling, false),
      line(`upsert as pg-sink writes, ${fmt(batch)} rows a transaction, empty table`, median(upsert)),
      line('the same rows upserted again (all unchanged: WHERE rev <)', median(again)),
      `  checks: both tables hold the same ${fmt(rows.length)} rows (${differ} differ); the second upsert rewrote ${rewritten} rows`,
      ...(o.stack ? await endToEnd(client, cluster, o.stack, o.runs) : []),
      ...(await catchingUp(o.runs, ceiling)),
    ];
  } finally {
    await client.end().catch(() => undefined);
    cluster.stop();
    rmSync(cluster.dir, { recursive: true, force: true });
  }
}
