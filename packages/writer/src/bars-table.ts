import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { CSV_EXTRA_HEADER, CSV_HEADER, EXIT, fileSafeSymbol, type Config, type Logger, type TappedBar } from '@candlewick/common';
import { Clock } from '@candlewick/core';

/**
 * The `bars` table in PostgreSQL, as every writer of it shares it: pg-sink (closed bars from
 * bars:{interval}), `candlewick bars` and the historical backfill (the rows they write to their
 * CSV files), `candlewick pg-load` (CSV files already written); and serve reads it. One schema,
 * one upsert: a row is keyed by (symbol, interval, start) and replaced only by a newer revision,
 * so writing the same bars twice, or an older revision after a newer one, changes nothing.
 */

/** The schema, in order; a migration is applied once, its version recorded in candlewick_migrations. */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'bars',
    sql: `CREATE TABLE IF NOT EXISTS bars (
  symbol text NOT NULL,
  "interval" text NOT NULL,
  start timestamptz NOT NULL,
  label text NOT NULL,
  open numeric NOT NULL,
  high numeric NOT NULL,
  low numeric NOT NULL,
  close numeric NOT NULL,
  vwap numeric,
  volume numeric NOT NULL,
  trades bigint,
  complete boolean NOT NULL,
  sources text NOT NULL,
  rev integer NOT NULL,
  PRIMARY KEY (symbol, "interval", start)
)`,
  },
  {
    // CSV files written without CSV_EXTRA_COLUMNS do not say whether a bar is complete nor where it
    // came from: loaded from them, the two are unknown (NULL) rather than made up
    version: 2,
    name: 'complete and sources unknown for rows loaded from CSV files without them',
    sql: 'ALTER TABLE bars ALTER COLUMN complete DROP NOT NULL, ALTER COLUMN sources DROP NOT NULL',
  },
];

// Any constant: the advisory lock that makes two writers starting at once apply each migration once.
const MIGRATION_LOCK = 0x63616e64; // "cand"

/** The database cannot be reached or refuses the login at start: exit 3, like a Redis never reached. */
export class DatabaseUnavailableError extends Error {
  override readonly name = 'DatabaseUnavailableError';
  readonly exitCode = EXIT.NO_REDIS;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The URL as it may be printed: its password replaced by `***`. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(DATABASE_URL that is not a URL)';
  }
}

/**
 * DATABASE_PASSWORD put into the URL when the URL has none (node-postgres lets a connection
 * string's fields, an absent password included, override the options beside it).
 */
export function withPassword(url: string, password: string | undefined): string {
  if (password === undefined) return url;
  try {
    const u = new URL(url);
    if (u.password) return url;
    u.password = encodeURIComponent(password);
    return u.toString();
  } catch {
    return url;
  }
}

/** PostgreSQL's answers that waiting cannot fix: a refused login, a database or role that does not exist. */
export const REFUSED = new Set(['28P01', '28000', '3D000']);

/** A connection's own wait (node-postgres' connectionTimeoutMillis): a host that never answers is given up on. */
const ATTEMPT_MS = 10_000;

/** The options of a connection to DATABASE_URL; `waitMs` bounds one attempt. */
export function clientOptions(cfg: Config, application: string, waitMs = ATTEMPT_MS): pg.ClientConfig {
  return {
    connectionString: withPassword(cfg.databaseUrl!, cfg.databasePassword),
    connectionTimeoutMillis: Math.max(250, Math.min(ATTEMPT_MS, waitMs)),
    application_name: application,
  };
}

/** The two messages every role says of a database not there at start (exit 3). */
export function unavailable(cfg: Config, err: unknown, refused: boolean): DatabaseUnavailableError {
  const where = redactDatabaseUrl(cfg.databaseUrl!);
  const code = (err as { code?: string }).code ?? '';
  const reason = (err as Error).message || code;
  return refused
    ? new DatabaseUnavailableError(
        `DATABASE_URL=${where}: the database refused the login (${code}: ${reason}); check the user, the password (DATABASE_PASSWORD / DATABASE_PASSWORD_FILE) and the database name`,
        { cause: err },
      )
    : new DatabaseUnavailableError(
        `DATABASE_URL=${where}: no database reached within DATABASE_CONNECT_TIMEOUT (${Math.round(cfg.databaseConnectTimeoutMs / 1000)} s): ${reason}; check the host, the port and that PostgreSQL runs`,
        { cause: err },
      );
}

/**
 * A connection to DATABASE_URL with the schema migrated, tried until `deadline` (a refused login
 * at once): DatabaseUnavailableError (exit 3) past it. Each attempt waits at most what is left,
 * so a host that takes the connection and never answers costs no more than the deadline either.
 */
export async function connectBarsTable(
  cfg: Config,
  log: Logger,
  application: string,
  opts: { deadline?: number; once?: boolean; onRetry?: (reason: string) => void } = {},
): Promise<pg.Client> {
  const deadline = opts.deadline ?? Date.now() + cfg.databaseConnectTimeoutMs;
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client(clientOptions(cfg, application, opts.once ? ATTEMPT_MS : deadline - Date.now()));
    // a lost connection is found by the next query; this only keeps the error from being unhandled
    client.on('error', () => undefined);
    try {
      await client.connect();
      await migrate(client, log);
      return client;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (opts.once) throw err;
      if (REFUSED.has((err as { code?: string }).code ?? '')) throw unavailable(cfg, err, true);
      if (Date.now() >= deadline) throw unavailable(cfg, err, false);
      opts.onRetry?.((err as Error).message);
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt, Math.max(0, deadline - Date.now()))));
    }
  }
}

const UPSERT = `INSERT INTO bars (symbol, "interval", start, label, open, high, low, close, vwap, volume, trades, complete, sources, rev)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[],
  $8::numeric[], $9::numeric[], $10::numeric[], $11::bigint[], $12::boolean[], $13::text[], $14::integer[])
ON CONFLICT (symbol, "interval", start) DO UPDATE SET label = EXCLUDED.label, open = EXCLUDED.open, high = EXCLUDED.high,
  low = EXCLUDED.low, close = EXCLUDED.close, vwap = EXCLUDED.vwap, volume = EXCLUDED.volume, trades = EXCLUDED.trades,
  complete = EXCLUDED.complete, sources = EXCLUDED.sources, rev = EXCLUDED.rev
WHERE bars.rev < EXCLUDED.rev
  OR (bars.rev = EXCLUDED.rev AND bars.complete IS NULL AND EXCLUDED.complete IS NOT NULL)`;

/** A row for the table: a bar as published, its `complete` and `sources` unknown when loaded from a file without them. */
export type TableBar = Omit<TappedBar, 'id' | 'complete' | 'sources'> & { complete: boolean | null; sources: string | null };

/**
 * Writes bars (in the caller's transaction, if any); of two revisions of one bar, the newer. A row
 * already there is replaced only by a newer revision, or by the same revision that knows its
 * `complete` and `sources` where the row did not.
 */
export async function upsertBars(client: pg.ClientBase, bars: readonly TableBar[]): Promise<void> {
  const newest = new Map<string, TableBar>();
  for (const b of bars) {
    const key = `${b.symbol}\u0000${b.interval}\u0000${b.start}`;
    const had = newest.get(key);
    if (!had || had.rev < b.rev || (had.rev === b.rev && had.complete === null)) newest.set(key, b);
  }
  const rows = [...newest.values()];
  const col = <T>(f: (b: TableBar) => T) => rows.map(f);
  await client.query(UPSERT, [
    col((b) => b.symbol),
    col((b) => b.interval),
    col((b) => new Date(b.start).toISOString()),
    col((b) => b.timestamp),
    col((b) => b.open),
    col((b) => b.high),
    col((b) => b.low),
    col((b) => b.close),
    col((b) => (b.vwap === '' ? null : b.vwap)),
    col((b) => b.volume),
    col((b) => (b.trades === undefined ? null : String(b.trades))),
    col((b) => b.complete),
    col((b) => b.sources),
    col((b) => b.rev),
  ]);
}

/** Applies the migrations not yet recorded, in order, under an advisory lock. */
export async function migrate(client: pg.ClientBase, log: Logger): Promise<number> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS candlewick_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set((await client.query<{ version: number }>('SELECT version FROM candlewick_migrations')).rows.map((r) => r.version));
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO candlewick_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      log.info({ version: m.version, name: m.name }, 'database schema migrated');
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return MIGRATIONS.at(-1)!.version;
}

/**
 * Bars written by one process (`candlewick bars`, a historical backfill) on their way into the
 * table: gathered, and written `batch` at a time, each batch in one transaction. Connects (and
 * migrates) at `open()`, so a database that is not there is said before any work (exit 3).
 */
export class TableWriter {
  private client: pg.Client | undefined;
  private readonly rows: TableBar[] = [];
  /** rows sent to the table (those already there with this revision or a newer one change nothing) */
  written = 0;
  /** DATABASE_URL as it may be printed */
  readonly where: string;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly application: string,
    private readonly batch = 5000,
  ) {
    this.where = redactDatabaseUrl(cfg.databaseUrl!);
  }

  async open(): Promise<void> {
    this.client = await connectBarsTable(this.cfg, this.log, this.application);
  }

  /** A bar to write (rev 0: as first written); written once `batch` of them wait, or at flush(). */
  add(bar: TableBar): void {
    this.rows.push(bar);
  }

  async query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.client!.query<T>(sql, params)).rows;
  }

  get waiting(): number {
    return this.rows.length;
  }

  /** Writes what waits when a batch is full (or everything, `all`). */
  async flush(all = true): Promise<void> {
    while (this.rows.length >= (all ? 1 : this.batch)) {
      const rows = this.rows.splice(0, this.batch);
      await this.client!.query('BEGIN');
      try {
        await upsertBars(this.client!, rows);
        await this.client!.query('COMMIT');
      } catch (err) {
        await this.client!.query('ROLLBACK').catch(() => undefined);
        throw new Error(
          `writing bars to the database (DATABASE_URL=${redactDatabaseUrl(this.cfg.databaseUrl!)}) failed: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      this.written += rows.length;
    }
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }
}

/** A CSV file under DATA_DIR that cannot be loaded: which, where and why. */
export class CsvLoadError extends Error {
  override readonly name = 'CsvLoadError';
  readonly exitCode = EXIT.CONFIG;
}

export interface LoadCounts {
  files: number;
  rows: number;
  corrections: number;
  /** files whose symbol is taken from the file name (SYMBOLS did not name it) */
  namedByFile: string[];
}

/**
 * `candlewick pg-load`: every CSV file under DATA_DIR/raw (the bars, and LATE=amend's corrections
 * at their revisions) into the table through the same upsert, a file at a time. A file name holds
 * the symbol as fileSafeSymbol wrote it; the feed's spelling (BINANCE:XRPETH for BINANCE_XRPETH)
 * comes from SYMBOLS, or from rows the table already has.
 */
export async function loadCsvFiles(cfg: Config, log: Logger, progress: (file: string) => void = () => undefined): Promise<LoadCounts> {
  const raw = join(cfg.dataDir, 'raw');
  if (!existsSync(raw))
    throw new CsvLoadError(
      `DATA_DIR=${cfg.dataDir}: there is no raw/ folder of CSV files under it; point DATA_DIR at the folder a writer wrote`,
    );
  const clock = new Clock(cfg.tz);
  const writer = new TableWriter(cfg, log, 'candlewick pg-load');
  await writer.open();
  const counts: LoadCounts = { files: 0, rows: 0, corrections: 0, namedByFile: [] };
  try {
    const spelling = new Map<string, string>();
    const known = await writer.query<{ symbol: string }>(DISTINCT_SYMBOLS);
    for (const { symbol } of known) spelling.set(fileSafeSymbol(symbol), symbol);
    for (const s of cfg.symbols) spelling.set(fileSafeSymbol(s), s);
    const intervals = new Map(cfg.intervals.map((iv) => [iv.name, iv.day === true]));
    for (const interval of readdirSync(raw).sort()) {
      const day = intervals.get(interval);
      if (day === undefined) {
        log.warn({ folder: join(raw, interval) }, `not one of INTERVALS (${[...intervals.keys()].join(', ')}): its files left out`);
        continue;
      }
      for (const name of readdirSync(join(raw, interval)).sort()) {
        const corrections = name.endsWith(`_${interval}.corrections.csv`);
        const suffix = corrections ? `_${interval}.corrections.csv` : `_${interval}.csv`;
        if (!name.endsWith(suffix)) continue;
        const safe = name.slice(0, -suffix.length);
        const symbol = spelling.get(safe) ?? safe;
        if (!spelling.has(safe) && !counts.namedByFile.includes(safe)) counts.namedByFile.push(safe);
        const path = join(raw, interval, name);
        for (const bar of readCsvFile(path, clock, symbol, interval, corrections)) {
          writer.add(bar);
          if (corrections) counts.corrections++;
          else counts.rows++;
          if (writer.waiting >= 5000) await writer.flush(false);
        }
        await writer.flush();
        counts.files++;
        progress(path);
      }
    }
  } finally {
    await writer.close();
  }
  return counts;
}

/** The rows of one CSV file as table rows; corrections files carry their revision in a last column. */
export function readCsvFile(path: string, clock: Clock, symbol: string, interval: string, corrections: boolean): TableBar[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const header = (lines[0] ?? '').replace(/\r$/, '').split(',');
  const base = header.slice(0, corrections ? -1 : undefined).join(',');
  const extra = base === [...CSV_HEADER, ...CSV_EXTRA_HEADER].join(',');
  if (!extra && base !== CSV_HEADER.join(','))
    throw new CsvLoadError(`${path}: its header is not candlewick's (${CSV_HEADER.join(',')}[,complete,sources]); is this a bar file?`);
  const width = header.length;
  const out: TableBar[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    // (a last row without its newline is one a writer is still appending: left for the next load)
    if (line === '' || i === lines.length - 1) continue;
    const c = line.split(',');
    const start = clock.parseLabel(c[0] ?? '');
    if (c.length !== width || Number.isNaN(start))
      throw new CsvLoadError(
        `${path}:${i + 1}: not a bar row (${c.length !== width ? `${c.length} cells, the header has ${width}` : `"${c[0]}" is not a label`}); repair or move the file, then load again`,
      );
    out.push({
      interval,
      symbol,
      start,
      timestamp: c[0]!,
      open: c[1]!,
      high: c[2]!,
      low: c[3]!,
      close: c[4]!,
      vwap: c[5]!,
      volume: c[6]!,
      trades: c[7] === '' ? undefined : Number(c[7]),
      complete: extra ? c[8] === 'true' : null,
      sources: extra ? c[9]! : null,
      rev: corrections ? Number(c[width - 1]) : 0,
    });
  }
  return out;
}

/** A range of one bar file's rows as the table has them: CSV lines in the files' columns, with their revision. */
export interface TableRange {
  header: string;
  rows: { line: string; rev: number }[];
  truncated: boolean;
}

/**
 * serve's reads of the table (`/api/bars` with DATABASE_URL): a small pool, connected on demand,
 * so a database that is away fails the requests that need it (serve answers 503 with the reason)
 * and nothing else. Only reads: serve never creates nor migrates the table.
 */
export class TableReader {
  private readonly pool: pg.Pool;
  readonly where: string;

  constructor(
    private readonly cfg: Config,
    log: Logger,
  ) {
    this.where = redactDatabaseUrl(cfg.databaseUrl!);
    // a request waits for the database at most 5 s (or DATABASE_CONNECT_TIMEOUT, if shorter)
    this.pool = new pg.Pool({ ...clientOptions(cfg, 'candlewick serve', Math.min(5000, cfg.databaseConnectTimeoutMs)), max: 4 });
    this.pool.on('error', (err) => log.debug({ err: err.message }, 'an idle database connection was lost'));
  }

  /**
   * Rows of (interval, symbol) in [from, to), at most `limit`: with `from` the oldest, else the
   * newest (as readRows reads a file). A table not created yet has no rows.
   */
  async range(interval: string, symbol: string, q: { from?: number; to?: number; limit: number }): Promise<TableRange> {
    const extra = this.cfg.csvExtraColumns;
    const header = (extra ? [...CSV_HEADER, ...CSV_EXTRA_HEADER] : [...CSV_HEADER]).join(',');
    const cells = `concat_ws(',', label, open::text, high::text, low::text, close::text, coalesce(vwap::text, ''), volume::text, coalesce(trades::text, '')${
      extra ? `, coalesce(complete::text, ''), coalesce(sources, '')` : ''
    })`;
    const newest = q.from === undefined;
    const params: unknown[] = [symbol, interval, q.limit + 1];
    let where = 'symbol = $1 AND "interval" = $2';
    // (times past what both JavaScript and PostgreSQL hold: their common range)
    const at = (t: number) => new Date(Math.min(8.64e15, Math.max(-2e14, t))).toISOString();
    if (q.from !== undefined) where += ` AND start >= $${params.push(at(q.from))}`;
    if (q.to !== undefined) where += ` AND start < $${params.push(at(q.to))}`;
    const sql = `SELECT ${cells} AS line, rev FROM bars WHERE ${where} ORDER BY start ${newest ? 'DESC' : 'ASC'} LIMIT $3`;
    let rows: { line: string; rev: number }[];
    try {
      rows = (await this.pool.query<{ line: string; rev: number }>(sql, params)).rows;
    } catch (err) {
      if ((err as { code?: string }).code === '42P01') return { header, rows: [], truncated: false };
      throw err;
    }
    const truncated = rows.length > q.limit;
    rows = rows.slice(0, q.limit);
    if (newest) rows.reverse();
    // (boolean::text is 'true'/'false', as the files write it)
    return { header, rows, truncated };
  }

  /** The symbols the table has bars of, through its primary key (a skip scan); none when it is away. */
  async symbols(): Promise<string[]> {
    try {
      const r = await this.pool.query<{ symbol: string }>(DISTINCT_SYMBOLS);
      return r.rows.map((x) => x.symbol);
    } catch {
      return [];
    }
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

/** Every distinct symbol through the primary key's index (a skip scan), not a scan of the table. */
const DISTINCT_SYMBOLS = `WITH RECURSIVE s AS (SELECT min(symbol) AS symbol FROM bars UNION ALL
  SELECT (SELECT min(symbol) FROM bars WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL)
SELECT symbol FROM s WHERE symbol IS NOT NULL`;
