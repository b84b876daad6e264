import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { connectRedis, correctionsPath, csvPath, encodeBarEntry, loadConfig, makeKeys } from '@candlewick/common';
import { PgSink } from '@candlewick/writer';
import { pino } from 'pino';
import { freePort } from '@candlewick/cli';
import { createServer, type Socket } from 'node:net';
import { ProviderServer } from '@candlewick/backfill';
import { readTapeTrades } from '@candlewick/common';
import {
  BUNDLED_TAPE,
  LEAN_AIG_TAPE,
  csvOutputs,
  finishCli,
  redisUrl,
  runCli,
  startCli,
  tempDir,
  testRedis,
  uniquePrefix,
  stopForGood,
  waitFor,
} from './helpers.js';
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

/** The sink's group on bars:1min: the entries it has read, and those of them pending (not acknowledged). */
async function sinkGroup(prefix: string): Promise<{ read: number; pending: number } | undefined> {
  const groups = (await redis.xinfo('GROUPS', makeKeys(prefix).bars('1min'))) as unknown[][];
  const f = groups[0];
  if (!f) return undefined;
  const get = (k: string) => Number(f[f.indexOf(k) + 1]);
  return { read: get('entries-read'), pending: get('pending') };
}

/** Every entry of bars:1min read by the sink's group and acknowledged. */
async function caughtUp(prefix: string, entries: number): Promise<boolean> {
  const g = await sinkGroup(prefix);
  return g?.read === entries && g.pending === 0;
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

  it('LATE=amend through `stack` with DATABASE_URL: every bar in its newest revision, equal to its CSV row or newest correction and to a run with the late trades on time', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const dir = tempDir('pg-amend');
    const truthDir = join(dir, 'truth');
    const lateDir = join(dir, 'late');
    // two hours of the bundled tape; A and B (20 s apart, one minute bar) arrive 10 and 40 minutes late
    const T = Date.parse('2019-10-11T12:03:17.123Z');
    const a = { s: 'BINANCE:XRPETH', p: '0.0015', v: 100, t: T, c: [] as string[] };
    const b = { s: 'BINANCE:XRPETH', p: '0.0012', v: 40, t: T + 20_000, c: [] as string[] };
    const slice = readTapeTrades(BUNDLED_TAPE).filter(
      (x) => x.t >= Date.parse('2019-10-11T11:30:00Z') && x.t < Date.parse('2019-10-11T13:30:00Z'),
    );
    const tapeWith = (name: string, extra: { trade: typeof a; at: number }[]) => {
      const tape = [...slice];
      for (const { trade, at } of extra)
        tape.splice(
          tape.findIndex((x) => x.t > at),
          0,
          trade,
        );
      const path = join(dir, `${name}.jsonl`);
      writeFileSync(path, tape.map((x) => JSON.stringify(x)).join('\n'));
      return path;
    };
    // the truth: A and B in their places, folded by `candlewick bars` (the files `stack` writes, byte for byte)
    const truth = await runCli(
      [
        'bars',
        '--tape',
        tapeWith('truth', [
          { trade: a, at: a.t },
          { trade: b, at: b.t },
        ]),
        '--out',
        truthDir,
      ],
      {},
    );
    expect(truth.code, truth.stderr).toBe(0);
    const late = tapeWith('late', [
      { trade: a, at: T + 10 * 60_000 },
      { trade: b, at: T + 40 * 60_000 },
    ]);
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('pg-amend'),
      DATA_DIR: lateDir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: late,
      // 30 minutes of tape between A and B take 1.2 s: the closer has corrected A's bars before B comes
      REPLAY_SPEED: '1500',
      REPLAY_SHIFT: 'false',
      LATE: 'amend',
      DATABASE_URL: db.url,
      DATABASE_PASSWORD: db.password,
    });
    expect(res.code, res.stdout.slice(-2000)).toBe(0);
    expect(res.stdout).toMatch(/late\s+2 /);

    const table = await db.query<{ interval: string; label: string; line: string; rev: number }>(
      `SELECT "interval", label, rev, concat_ws(',', label, open::text, high::text, low::text, close::text, coalesce(vwap::text, ''),
         volume::text, coalesce(trades::text, '')) AS line FROM bars WHERE symbol = 'BINANCE:XRPETH' ORDER BY "interval", start`,
    );
    expect(await rowCount()).toBe(table.length);
    const lines = (path: string) => readFileSync(path, 'utf8').trimEnd().split('\n').slice(1);
    let stale = 0;
    for (const interval of ['1min', '5min', '15min', '30min', '1h']) {
      // the files: the main rows as first written, then each correction appended with its revision
      const want = new Map(
        lines(csvPath(lateDir, interval, 'BINANCE:XRPETH')).map((l) => [l.slice(0, l.indexOf(',')), { line: l, rev: 0 }]),
      );
      const corrections = lines(correctionsPath(lateDir, interval, 'BINANCE:XRPETH'));
      expect(corrections.length, interval).toBeGreaterThan(0);
      for (const c of corrections) {
        const cells = c.split(',');
        const rev = Number(cells.pop());
        const label = cells[0]!;
        // (a minute without trades has no row in the main file: its first revision is the correction)
        const had = want.get(label) ?? { line: '', rev: 0 };
        if (had.rev > 0) stale++;
        if (rev > had.rev) want.set(label, { line: cells.join(','), rev });
      }
      const mine = table.filter((r) => r.interval === interval);
      // every bar once, in the newest revision the files hold, with its revision
      expect(
        mine.map((r) => ({ line: r.line, rev: r.rev })),
        interval,
      ).toEqual([...want.entries()].sort(([x], [y]) => Date.parse(x) - Date.parse(y)).map(([, w]) => w));
      // and that is the bar as if A and B had come on time
      expect(
        mine.map((r) => r.line),
        interval,
      ).toEqual(lines(csvPath(truthDir, interval, 'BINANCE:XRPETH')));
    }
    // B came after A's correction: its bars were corrected twice, and the table holds revision 2, not 1
    expect(stale).toBeGreaterThan(0);
    expect(table.filter((r) => r.rev === 2).length).toBeGreaterThan(0);
  }, 120_000);

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

  it('acknowledgements refused (a Redis user without XACK), then allowed: every bar in the table, none left pending', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const prefix = uniquePrefix('pg-noack');
    const keys = makeKeys(prefix);
    const want = await publishBars(prefix, 0, 1000);
    // the sink's own Redis user, first without XACK (a user set up short of the shipped ACL)
    const user = `${prefix}-sink`;
    const secret = randomBytes(12).toString('hex');
    await redis.call('ACL', 'SETUSER', user, 'on', `>${secret}`, '~*', '&*', '+@all', '-xack');
    const url = new URL(redisUrl());
    url.username = user;
    url.password = secret;
    const sinkRedis = connectRedis(url.toString());
    const cfg = loadConfig({ INTERVALS: '1min', KEY_PREFIX: prefix, DATABASE_URL: db.urlWithPassword, DATABASE_BATCH: '100' });
    const sink = new PgSink(sinkRedis, cfg, keys, pino({ level: 'silent' }));
    await sink.start();
    try {
      // written, every acknowledgement refused: the first batch is in the table, its entries pending
      await waitFor(async () => (await rowCount()) >= 100, 30_000, 'the first batch written');
      await new Promise((r) => setTimeout(r, 2500));
      expect(await caughtUp(prefix, 1100)).toBe(false);
      await redis.call('ACL', 'SETUSER', user, '+xack');
      // allowed again: what was written and not acknowledged is read again from the first of it (a
      // batch read ahead after it does not skip it), and every entry ends acknowledged
      await waitFor(() => caughtUp(prefix, 1100), 30_000, 'every entry written and acknowledged');
    } finally {
      await sink.stop();
      await sinkRedis.quit();
      await redis.call('ACL', 'DELUSER', user);
    }
    expect(await tableState()).toEqual(want);
  }, 90_000);
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
      await waitFor(() => caughtUp(prefix, 3), 20_000, 'three entries written and acknowledged');
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
    // the entries not acknowledged when it died: the next sink writes each of them once (the ones it
    // had read, pending, read again from its pending list, a batch read ahead among them), no more
    // and 25 more read by it and not written (pending: read again first, on from where a batch read ahead ends)
    await redis.xreadgroup('GROUP', 'pg-sink', 'pg-sink', 'COUNT', 25, 'STREAMS', makeKeys(prefix).bars('1min'), '>');
    const group = (await sinkGroup(prefix))!;
    const unacknowledged = entries - (group.read - group.pending);
    const metricsPort = await freePort();
    const second = startCli(['pg-sink'], { ...env, METRICS_PORT: String(metricsPort) });
    try {
      await waitFor(() => caughtUp(prefix, entries), 120_000, 'the restarted sink caught up');
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(Number(/^candlewick_pg_rows_total(?:{[^}]*})? (\d+)$/m.exec(metrics)?.[1])).toBe(unacknowledged);
    } finally {
      await second.stop();
    }
    expect(await tableState()).toEqual(want);
  }, 180_000);

  it('PostgreSQL killed -9 for PG_DOWN_S (30) s under a running stack: said once and "back" once, /healthz 503 with the lag, every row equals its CSV row, none twice', async () => {
    await db.query('DROP TABLE IF EXISTS bars, candlewick_migrations');
    const downS = Number(process.env.PG_DOWN_S ?? 30);
    const dir = tempDir('pg-kill9');
    // the roles serve /healthz on METRICS_PORT and up, one port each in the order they start
    const metricsPort = await freePort();
    const stack = startCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('pg-kill9'),
      DATA_DIR: dir,
      DATABASE_URL: db.url,
      DATABASE_PASSWORD: db.password,
      // the tape's ~60 hours paced to the outage + 20 s: bars keep closing while PostgreSQL is down,
      // and the stack still runs when it is back
      REPLAY_SPEED: String(Math.round(216_000 / (downS + 20))),
      REPLAY_SHIFT: 'false',
      EXIT_WHEN_IDLE_MS: '2000',
      METRICS_PORT: String(metricsPort),
    });
    const run = finishCli(stack, ['stack'], (downS + 150) * 1000);
    const sinkHealth = async () => {
      for (let port = metricsPort; port < metricsPort + 8; port++) {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
        const body = res && ((await res.json().catch(() => ({}))) as { database?: string; entriesBehind?: number });
        if (res && body && 'database' in body) return { status: res.status, ...body };
      }
      return undefined;
    };
    try {
      await waitFor(
        async () => (await db.query('SELECT 1 FROM pg_tables WHERE tablename = $1', ['bars'])).length === 1,
        60_000,
        'the table',
      );
      await waitFor(async () => (await rowCount()) >= 50, 60_000, 'the first rows written');
      expect((await sinkHealth())?.status).toBe(200);
      const csvCount = () => [...csvLines(csvOutputs(dir)).values()].reduce((n, rows) => n + rows.length, 0);
      await db.kill();
      const killedAt = Date.now();
      const rowsAtKill = csvCount();
      // the lag is measured every 5 s: 503, and entries waiting in Redis for the table
      await waitFor(
        async () => {
          const h = await sinkHealth();
          return h?.status === 503 && (h.entriesBehind ?? 0) > 0;
        },
        30_000,
        "pg-sink's /healthz 503 with the backlog",
      );
      await new Promise((r) => setTimeout(r, Math.max(0, killedAt + downS * 1000 - Date.now())));
      // the outage was mid-run: the stack has not ended, bars are still closing
      expect(stack.output().stdout).not.toContain('candlewick summary');
      // bars closed meanwhile, in their files and waiting in Redis for the table
      expect(csvCount()).toBeGreaterThan(rowsAtKill);
      db.start();
    } catch (err) {
      await stopForGood(stack);
      throw err;
    } finally {
      try {
        db.start();
      } catch {
        // running already
      }
    }
    const res = await run;
    const log = res.stdout + res.stderr;
    expect(res.code, log.slice(-3000)).toBe(0);
    expect(res.stdout).toMatch(/candlewick summary[\s\S]*bars written\s+1min=\d+/);
    expect(log.match(/database unreachable or refusing/g) ?? [], log.slice(-3000)).toHaveLength(1);
    expect(log.match(/database is back/g) ?? []).toHaveLength(1);
    expect(log).not.toContain(db.password);
    // every row of the table is its CSV row, and the table has as many rows as the files: none lost, none twice
    expect(await expectTableIsFiles(dir)).toBeGreaterThan(1000);
  }, 400_000);

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
