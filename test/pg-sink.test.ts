import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBarEntry, loadConfig, makeKeys } from '@candlewick/common';
import { PgSink } from '@candlewick/writer';
import { pino } from 'pino';
import { freePort } from '@candlewick/cli';
import { createServer, type Socket } from 'node:net';
import { ProviderServer } from '@candlewick/backfill';
import { readTapeTrades } from '@candlewick/common';
import { csvOutputs, LEAN_AIG_TAPE, redisUrl, runCli, startCli, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';
import { barsAsFiles, BARS_AS_CSV_SQL, csvLines, startPostgres, type BarLine, type PgCluster } from './postgres.js';

const redis = testRedis();
let db: PgCluster;
beforeAll(async () => {
  db = await startPostgres('pg-sink');
}, 60_000);
afterAll(async () => {
  db?.stop();
  await redis.quit();
});

/** Every row of the table equals its CSV row under DATA_DIR, file by file (no file without rows, no rows without a file); the rows compared. */
async function expectTableIsFiles(dir: string): Promise<number> {
  const table = barsAsFiles(await db.query<BarLine>(BARS_AS_CSV_SQL));
  const files = csvLines(csvOutputs(dir));
  expect([...table.keys()].sort()).toEqual([...files.keys()].sort());
  for (const [file, lines] of files) expect(table.get(file), file).toEqual(lines);
  return [...files.values()].reduce((n, lines) => n + lines.length, 0);
}

/** The whole table, every column as text, and each row's xmin (the transaction that last wrote it: a rewrite changes it). */
async function wholeTable(withXmin = false): Promise<Record<string, unknown>[]> {
  return db.query(
    `SELECT symbol, "interval", start, label, open::text, high::text, low::text, close::text, vwap::text, volume::text,
       trades::text, complete, sources, rev${withXmin ? ', xmin::text AS xmin' : ''} FROM bars ORDER BY symbol, "interval", start`,
  );
}

const T0 = Date.parse('2024-03-05T10:00:00Z');

/**
 * `n` closed 1-minute bars on bars:1min (100 symbols), every tenth followed later by a correction
 * (revision 1, another close); returns what the table must hold: key -> "close rev".
 */
async function publishBars(prefix: string, from: number, n: number): Promise<Map<string, string>> {
  const stream = makeKeys(prefix).bars('1min');
  const want = new Map<string, string>();
  const cells = (close: string, start: number) => ({
    timestamp: new Date(start).toISOString(),
    open: '1.5',
    high: '2.25',
    low: '1.125',
    close,
    vwap: '1.75',
    volume: '10',
    trades: '4',
    complete: true,
    sources: 'live',
  });
  const pipe = redis.pipeline();
  const corrections: [string, number, string][] = [];
  for (let i = from; i < from + n; i++) {
    const symbol = `S${i % 100}`;
    const start = T0 + Math.floor(i / 100) * 60_000;
    const close = `1.${String(i).padStart(6, '0')}`;
    pipe.xadd(stream, '*', ...encodeBarEntry(symbol, start, 0, cells(close, start)));
    want.set(`${symbol} ${start}`, `${close} 0`);
    if (i % 10 === 0) corrections.push([symbol, start, `2.${String(i).padStart(6, '0')}`]);
  }
  for (const [symbol, start, close] of corrections) {
    pipe.xadd(stream, '*', ...encodeBarEntry(symbol, start, 1, cells(close, start)));
    want.set(`${symbol} ${start}`, `${close} 1`);
  }
  await pipe.exec();
  return want;
}

/** The table as key -> "close rev". */
async function tableState(): Promise<Map<string, string>> {
  const rows = await db.query<{ symbol: string; ms: string; close: string; rev: number }>(
    `SELECT symbol, (extract(epoch FROM start) * 1000)::bigint::text AS ms, close::text AS close, rev FROM bars WHERE "interval" = '1min'`,
  );
  return new Map(rows.map((r) => [`${r.symbol} ${r.ms}`, `${r.close} ${r.rev}`]));
}

/** Every entry of bars:1min read by the sink's group and acknowledged. */
async function caughtUp(prefix: string, entries: number): Promise<boolean> {
  const groups = (await redis.xinfo('GROUPS', makeKeys(prefix).bars('1min'))) as unknown[][];
  const f = groups[0];
  if (!f) return false;
  const get = (k: string) => f[f.indexOf(k) + 1];
  return Number(get('entries-read')) === entries && Number(get('pending')) === 0;
}

const rowCount = async () => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM bars'))[0]!.n);

describe('pg-sink: closed bars in PostgreSQL', () => {
  it('the bundled tape through `stack` with DATABASE_URL: every row of every interval equals its CSV row', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const dir = tempDir('pg-stack');
    const pwFile = join(dir, 'db.pass');
    writeFileSync(pwFile, db.password);
    const res = await runCli(
      ['stack'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('pg-stack'),
        DATA_DIR: dir,
        EXIT_WHEN_IDLE_MS: '500',
        DATABASE_URL: db.url,
        DATABASE_PASSWORD_FILE: pwFile,
        // the files say complete and sources too: loaded back, every column is known
        CSV_EXTRA_COLUMNS: 'true',
      },
      240_000,
    );
    expect(res.code, res.stderr).toBe(0);
    expect(await expectTableIsFiles(dir)).toBeGreaterThan(1000);
    expect(await db.query('SELECT version FROM candlewick_migrations ORDER BY version')).toEqual([{ version: 1 }, { version: 2 }]);
    // the password is in no line of the output
    expect(res.stdout + res.stderr).not.toContain(db.password);

    // the same DATA_DIR loaded by `pg-load` into an empty table: what pg-sink wrote, column for column
    const sink = await wholeTable();
    await db.query('TRUNCATE bars');
    const load = await runCli(['pg-load', '--symbols', 'BINANCE:XRPETH'], {
      DATA_DIR: dir,
      CSV_EXTRA_COLUMNS: 'true',
      DATABASE_URL: db.url,
      DATABASE_PASSWORD_FILE: pwFile,
    });
    expect(load.code, load.stderr).toBe(0);
    expect(load.stdout).toMatch(new RegExp(`rows\\s+${sink.length} bars, 0 corrections upserted`));
    expect(await wholeTable()).toEqual(sink);
    expect(load.stdout + load.stderr).not.toContain(db.password);
  }, 300_000);

  it('the Lean day through `candlewick bars` with DATABASE_URL: every row equals its CSV row; run again or loaded from the files, nothing changes; a newer revision stays', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const dir = tempDir('pg-bars');
    const env = { DATABASE_URL: db.url, DATABASE_PASSWORD: db.password };
    const bars = () => runCli(['bars', '--tape', LEAN_AIG_TAPE, '--out', dir], env);
    const first = await bars();
    expect(first.code, first.stderr).toBe(0);
    const n = await expectTableIsFiles(dir);
    expect(n).toBeGreaterThan(400);
    expect(first.stdout).toMatch(new RegExp(`PostgreSQL\\s+${n} rows upserted into bars \\(postgres://candlewick@127`));
    // what the files without CSV_EXTRA_COLUMNS do not say, the table knows
    expect(await db.query('SELECT DISTINCT complete, sources FROM bars ORDER BY 1, 2')).toEqual([{ complete: true, sources: 'live' }]);
    const written = await wholeTable(true);

    // again: the files and the table as they were, no row rewritten (each row's xmin the same)
    const again = await bars();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/bars written\s+none/);
    expect(await wholeTable(true)).toEqual(written);
    // the files loaded into it: the same (the files, without CSV_EXTRA_COLUMNS, do not overwrite what the table knows)
    const load = () => runCli(['pg-load'], { ...env, DATA_DIR: dir });
    const loaded = await load();
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toMatch(new RegExp(`rows\\s+${n} bars, 0 corrections upserted`));
    expect(await wholeTable(true)).toEqual(written);

    // a row with a newer revision (a correction written by pg-sink) is not put back by either
    await db.query(`UPDATE bars SET close = 99.99, rev = 1 WHERE "interval" = '1min' AND start = (SELECT min(start) FROM bars)`);
    const corrected = await wholeTable();
    expect((await bars()).code).toBe(0);
    expect((await load()).code).toBe(0);
    expect(await wholeTable()).toEqual(corrected);
    expect(await db.query(`SELECT close::text AS close, rev FROM bars WHERE rev = 1`)).toEqual([{ close: '99.99', rev: 1 }]);
  }, 120_000);

  it('a historical backfill with DATABASE_URL: the table equals its files; run again, no row rewritten', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const server = new ProviderServer(readTapeTrades(LEAN_AIG_TAPE), { massiveKey: 'k', pageSize: 20_000 });
    const base = await server.start();
    try {
      const dir = tempDir('pg-backfill');
      const env = { DATA_DIR: dir, MASSIVE_API_KEY: 'k', MASSIVE_REST_URL: base, BACKFILL_PROVIDER: 'massive', BACKFILL_RATE: '6000' };
      const args = ['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'];
      const one = await runCli(args, { ...env, DATABASE_URL: db.urlWithPassword });
      expect(one.code, one.stderr).toBe(0);
      const n = await expectTableIsFiles(dir);
      expect(one.stdout).toMatch(new RegExp(`backfill done: ${n} bars written, 0 already there, .*; ${n} rows upserted into PostgreSQL`));
      // the whole day from the provider: complete, from Massive's trades
      expect(await db.query('SELECT DISTINCT complete, sources FROM bars')).toEqual([{ complete: true, sources: 'massive-trades' }]);
      const written = await wholeTable(true);
      const two = await runCli(args, { ...env, DATABASE_URL: db.urlWithPassword });
      expect(two.code, two.stderr).toBe(0);
      expect(two.stdout).toMatch(/backfill done: 0 bars written, \d+ already there/);
      expect(await wholeTable(true)).toEqual(written);
      expect(one.stdout + one.stderr + two.stdout + two.stderr).not.toContain(db.password);
    } finally {
      await server.stop();
    }
  }, 120_000);

  it('corrections arriving out of order: the newest revision wins, a stale one changes nothing', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const prefix = uniquePrefix('pg-rev');
    const keys = makeKeys(prefix);
    const cfg = loadConfig({ INTERVALS: '1min', KEY_PREFIX: prefix, DATABASE_URL: db.urlWithPassword, DATABASE_BATCH: '1' });
    const start = Date.parse('2024-03-05T10:00:00Z');
    const cells = (close: string) => ({
      timestamp: '2024-03-05T05:00:00-05:00',
      open: '10',
      high: '12',
      low: '9',
      close,
      vwap: '10.5',
      volume: '3',
      trades: '3',
      complete: true,
      sources: 'live',
    });
    // rev 0, then rev 2, then rev 1 arriving last (an older correction published late)
    for (const [rev, close] of [
      [0, '11.00'],
      [2, '11.20'],
      [1, '11.10'],
    ] as const)
      await redis.xadd(keys.bars('1min'), '*', ...encodeBarEntry('TEST', start, rev, cells(close)));
    const sink = new PgSink(redis, cfg, keys, pino({ level: 'silent' }));
    await sink.start();
    try {
      // every entry read and acknowledged: all three revisions went through the table
      await waitFor(
        async () => {
          const g = (await redis.xinfo('GROUPS', keys.bars('1min'))) as unknown[][];
          const f = g[0]!;
          const get = (k: string) => f[f.indexOf(k) + 1];
          return Number(get('entries-read')) === 3 && Number(get('pending')) === 0;
        },
        20_000,
        'three entries written and acknowledged',
      );
    } finally {
      await sink.stop();
    }
    expect(await db.query('SELECT close::text AS close, rev FROM bars')).toEqual([{ close: '11.20', rev: 2 }]);
  }, 60_000);

  it('the sink SIGKILLed mid-run and started again: every bar once, in its newest revision', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const prefix = uniquePrefix('pg-kill');
    const want = await publishBars(prefix, 0, 40_000);
    const entries = 40_000 + 4_000;
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix, INTERVALS: '1min', DATABASE_URL: db.urlWithPassword, DATABASE_BATCH: '50' };
    const first = startCli(['pg-sink'], env);
    await waitFor(
      async () => (await db.query('SELECT 1 FROM pg_tables WHERE tablename = $1', ['bars'])).length === 1 && (await rowCount()) >= 2000,
      60_000,
      'rows',
    );
    first.kill('SIGKILL');
    await first.exited;
    const atKill = await rowCount();
    // killed mid-run: part of the bars written, the rest (and a batch read, maybe not committed) pending
    expect(atKill).toBeLessThan(want.size);
    expect(await caughtUp(prefix, entries)).toBe(false);
    const second = startCli(['pg-sink'], env);
    try {
      await waitFor(() => caughtUp(prefix, entries), 120_000, 'the restarted sink caught up');
    } finally {
      await second.stop();
    }
    expect(await tableState()).toEqual(want);
  }, 180_000);

  it('PostgreSQL stopped for 20 s: said once, /healthz 503 with the lag, every bar written once it is back', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const prefix = uniquePrefix('pg-down');
    const port = await freePort();
    const env = {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      INTERVALS: '1min',
      DATABASE_URL: db.url,
      DATABASE_PASSWORD: db.password,
      METRICS_PORT: String(port),
    };
    const sink = startCli(['pg-sink'], env);
    const healthz = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
      return res && { status: res.status, body: (await res.json()) as { entriesBehind?: number; database?: string } };
    };
    try {
      const want = await publishBars(prefix, 0, 5000);
      await waitFor(() => caughtUp(prefix, 5500), 60_000, 'first bars written');
      expect((await healthz())?.status).toBe(200);
      db.stop();
      const stoppedAt = Date.now();
      for (const [k, v] of await publishBars(prefix, 5000, 5000)) want.set(k, v);
      // the lag is measured every 5 s
      await waitFor(
        async () => {
          const h = await healthz();
          return h?.status === 503 && (h.body.entriesBehind ?? 0) >= 5500;
        },
        20_000,
        '/healthz 503 with the backlog',
      );
      await new Promise((r) => setTimeout(r, Math.max(0, 20_000 - (Date.now() - stoppedAt))));
      db.start();
      await waitFor(() => caughtUp(prefix, 11_000), 60_000, 'caught up after the outage');
      await waitFor(async () => (await healthz())?.status === 200, 10_000, '/healthz 200 again');
      expect(await tableState()).toEqual(want);
    } finally {
      try {
        db.start();
      } catch {
        // running already
      }
      const res = await sink.stop();
      const log = res.stdout + res.stderr;
      expect(log.match(/database unreachable or refusing/g) ?? [], log).toHaveLength(1);
      expect(log.match(/database is back/g) ?? []).toHaveLength(1);
      expect(log).not.toContain(db.password);
      expect(res.code).toBe(0);
    }
  }, 180_000);

  it('bars trimmed from the stream (BARS_RETENTION) before the sink wrote them: the range said exactly', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const prefix = uniquePrefix('pg-trim');
    const keys = makeKeys(prefix);
    const stream = keys.bars('1min');
    const cells = {
      timestamp: 't',
      open: '1',
      high: '1',
      low: '1',
      close: '1',
      vwap: '',
      volume: '1',
      trades: '',
      complete: true,
      sources: 'live',
    };
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await redis.xadd(stream, '*', ...encodeBarEntry('OLD', T0 + i * 60_000, 0, cells)))!);
    // the sink's group exists (it ran before) and had read none of them when they were trimmed
    await redis.xgroup('CREATE', stream, 'pg-sink', '0');
    await redis.xtrim(stream, 'MAXLEN', 0);
    const kept: string[] = [];
    for (let i = 0; i < 5; i++) kept.push((await redis.xadd(stream, '*', ...encodeBarEntry('NEW', T0 + i * 60_000, 0, cells)))!);
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const cfg = loadConfig({ INTERVALS: '1min', KEY_PREFIX: prefix, DATABASE_URL: db.urlWithPassword });
    const sink = new PgSink(redis, cfg, keys, log);
    await sink.start();
    try {
      await waitFor(async () => (await rowCount()) === 5, 20_000, 'the retained bars written');
    } finally {
      await sink.stop();
    }
    const said = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => /trimmed from the stream/.test(String(l.msg)));
    expect(said, lines.join('')).toHaveLength(1);
    // (the trimmed ones lie between what the group had read, nothing, and the first entry kept)
    const order = (id: string) => id.split('-').map(Number) as [number, number];
    const [km, ks] = order(kept[0]!);
    expect(ids.every((id) => order(id)[0] < km || (order(id)[0] === km && order(id)[1] < ks))).toBe(true);
    expect(said[0]).toMatchObject({
      level: 50,
      stream,
      after: '0-0',
      before: kept[0],
      to: new Date(Number(kept[0]!.split('-')[0])).toISOString(),
    });
  }, 60_000);

  it('a refused login, an unreachable host: exit 3 with a message naming DATABASE_URL and no password in it, after DATABASE_CONNECT_TIMEOUT at most', async () => {
    const wrong = db.urlWithPassword.replace(db.password, 'not-the-password');
    const res = await runCli(['pg-sink'], { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('pg-bad'), DATABASE_URL: wrong }, 60_000);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/DATABASE_URL=postgres:\/\/candlewick:\*\*\*@127\.0\.0\.1:\d+\/candlewick: the database refused the login/);
    expect(res.stdout + res.stderr).not.toContain('not-the-password');

    // an unreachable host: a server that takes the connection and never answers (a firewall's
    // black hole looks the same), and a port where nothing listens; each gives up within
    // DATABASE_CONNECT_TIMEOUT (2 s) with exit 3 and a message naming the setting
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const hung = (silent.address() as { port: number }).port;
      const closed = await freePort();
      const dataDir = tempDir('pg-gone');
      mkdirSync(join(dataDir, 'raw'));
      for (const [port, role] of [
        [hung, 'pg-sink'],
        [closed, 'pg-sink'],
        [hung, 'pg-load'],
      ] as const) {
        const url = `postgres://candlewick:not-the-password@127.0.0.1:${port}/candlewick`;
        const t0 = Date.now();
        const r = await runCli(
          [role],
          {
            REDIS_URL: redisUrl(),
            KEY_PREFIX: uniquePrefix('pg-gone'),
            DATA_DIR: dataDir,
            DATABASE_URL: url,
            DATABASE_CONNECT_TIMEOUT: '2s',
          },
          30_000,
        );
        const took = Date.now() - t0;
        expect(r.code, `${role} :${port} ${r.stdout} ${r.stderr}`).toBe(3);
        expect(r.stderr).toContain(
          `DATABASE_URL=postgres://candlewick:***@127.0.0.1:${port}/candlewick: no database reached within DATABASE_CONNECT_TIMEOUT (2 s)`,
        );
        expect(r.stdout + r.stderr).not.toContain('not-the-password');
        // 2 s of trying, plus starting node
        expect(took).toBeGreaterThanOrEqual(2000);
        expect(took).toBeLessThan(12_000);
      }
      expect(sockets.length).toBeGreaterThan(0);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 90_000);
});
