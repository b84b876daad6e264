import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBarEntry, fileSafeSymbol, loadConfig, makeKeys } from '@candlewick/common';
import { PgSink } from '@candlewick/writer';
import { pino } from 'pino';
import { freePort } from '@candlewick/cli';
import { redisUrl, runCli, startCli, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';
import { startPostgres, type PgCluster } from './postgres.js';

const redis = testRedis();
let db: PgCluster;
beforeAll(async () => {
  db = await startPostgres('pg-sink');
}, 60_000);
afterAll(async () => {
  db?.stop();
  await redis.quit();
});

type Row = { interval: string; symbol: string; line: string; rev: number };

/** Every row of the table as its CSV line would start (timestamp,open,high,low,close,vwap,volume,n). */
async function tableRows(): Promise<Row[]> {
  return db.query<Row>(
    `SELECT "interval", symbol, rev, concat_ws(',', label, open::text, high::text, low::text, close::text, coalesce(vwap::text, ''),
       volume::text, coalesce(trades::text, '')) AS line FROM bars ORDER BY "interval", symbol, start`,
  );
}

/** The CSV rows under DATA_DIR/raw as the same lines (their first eight cells). */
function csvRows(dir: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const iv of readdirSync(join(dir, 'raw')))
    for (const f of readdirSync(join(dir, 'raw', iv))) {
      const lines = readFileSync(join(dir, 'raw', iv, f), 'utf8')
        .trimEnd()
        .split('\n')
        .slice(1);
      out.set(
        `${iv}/${f}`,
        lines.map((l) => l.split(',').slice(0, 8).join(',')),
      );
    }
  return out;
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
      },
      240_000,
    );
    expect(res.code, res.stderr).toBe(0);
    const rows = await tableRows();
    const files = csvRows(dir);
    let n = 0;
    for (const [file, lines] of files) {
      const [iv, name] = file.split('/') as [string, string];
      const symbol = name.slice(0, name.length - `_${iv}.csv`.length);
      const mine = rows.filter((r) => r.interval === iv && fileSafeSymbol(r.symbol) === symbol).map((r) => r.line);
      expect(mine, file).toEqual(lines);
      n += lines.length;
    }
    expect(n).toBeGreaterThan(1000);
    expect(rows).toHaveLength(n);
    expect(await db.query('SELECT version FROM candlewick_migrations')).toEqual([{ version: 1 }]);
    // the password is in no line of the output
    expect(res.stdout + res.stderr).not.toContain(db.password);
  }, 300_000);

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

  it('a refused login: exit 3 with a message naming DATABASE_URL and no password in it', async () => {
    const wrong = db.urlWithPassword.replace(db.password, 'not-the-password');
    const res = await runCli(['pg-sink'], { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('pg-bad'), DATABASE_URL: wrong }, 60_000);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/DATABASE_URL=postgres:\/\/candlewick:\*\*\*@127\.0\.0\.1:\d+\/candlewick: the database refused the login/);
    expect(res.stdout + res.stderr).not.toContain('not-the-password');
  }, 60_000);
});
