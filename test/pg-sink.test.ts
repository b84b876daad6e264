import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBarEntry, loadConfig, makeKeys } from '@candlewick/common';
import { PgSink } from '@candlewick/writer';
import { pino } from 'pino';
import { redisUrl, runCli, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';
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
      const mine = rows.filter((r) => r.interval === iv && r.symbol.replace(/[^A-Za-z0-9._-]/g, '_') === symbol).map((r) => r.line);
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
    const cfg = loadConfig({ INTERVALS: '1min', KEY_PREFIX: prefix, DATABASE_URL: db.urlWithPassword });
    const start = Date.parse('2024-03-05T10:00:00Z');
    const cells = (close: string) => ({
      timestamp: '2024-03-05T05:00:00-05:00',
      open: '10',
      high: '12',
      low: '9',
      close,
      vwap: '10.5',
      volume: '3',
      n: '3',
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
    const sink = new PgSink(redis, cfg, keys, pino({ level: 'silent' }), { count: 1 });
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

  it('a refused login: exit 3 with a message naming DATABASE_URL and no password in it', async () => {
    const wrong = db.urlWithPassword.replace(db.password, 'not-the-password');
    const res = await runCli(['pg-sink'], { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('pg-bad'), DATABASE_URL: wrong }, 60_000);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/DATABASE_URL=postgres:\/\/candlewick:\*\*\*@127\.0\.0\.1:\d+\/candlewick: the database refused the login/);
    expect(res.stdout + res.stderr).not.toContain('not-the-password');
  }, 60_000);
});
