import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { correctionsPath, csvPath } from '../packages/common/src/csv.js';
import { encodeGapEntry } from '../packages/common/src/entries.js';
import { makeKeys } from '../packages/common/src/keys.js';
import { freePort } from '../packages/cli/src/redis-server.js';
import {
  BUNDLED_TAPE,
  readCsv,
  redisUrl,
  runCli,
  startCli,
  tempDir,
  testRedis,
  uniquePrefix,
  waitFor,
  type CliProcess,
} from './helpers.js';
import { startPostgres, type PgCluster } from './postgres.js';

/**
 * The HTTP API of `candlewick serve` against a real stack run of the bundled tape: every bar it
 * returns is the CSV's, ranges at their edges, bad input answered with a 4xx, the token required
 * everywhere but /healthz and never logged, Bull Board read-only, the live stream answering.
 */
const TOKEN = 'tok-3f9a1c0e77d2';
const SYMBOL = 'BINANCE:XRPETH';

/** Where /api/bars reads: the CSV files, or with DATABASE_URL the table pg-sink wrote in the same run. */
const SOURCES = ['files', 'PostgreSQL'] as const;
type Source = (typeof SOURCES)[number];

describe('candlewick serve: the HTTP API', () => {
  const dir = tempDir('serve-api');
  const prefix = uniquePrefix('serve-api');
  let serve: CliProcess;
  let fromTable: CliProcess;
  let db: PgCluster;
  let base = '';
  const bases: Record<Source, string> = { files: '', PostgreSQL: '' };
  let servedAt = 0;
  const auth = { authorization: `Bearer ${TOKEN}` };
  /** requests to the serve reading `source` (the one reading the files unless said) */
  const on = (source: Source) => {
    const get = (path: string, headers: Record<string, string> = auth) => fetch(`${bases[source]}${path}`, { headers });
    const json = async (path: string) => {
      const r = await get(path);
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    return { get, json };
  };
  const { get, json } = on('files');

  beforeAll(async () => {
    db = await startPostgres('serve-api');
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix, DATA_DIR: dir, REPLAY_TAPE: BUNDLED_TAPE };
    const database = { DATABASE_URL: db.url, DATABASE_PASSWORD: db.password };
    // the run writes the files and, through pg-sink, the table
    const run = await runCli(['stack'], { ...env, ...database });
    expect(run.code, run.stderr).toBe(0);
    const start = async (extra: Record<string, string>) => {
      const port = await freePort();
      // no SYMBOLS: the symbol is named from the published bars, not the file name
      const proc = startCli(['serve'], { ...env, ...extra, HTTP_PORT: String(port), HTTP_TOKEN: TOKEN, LOG_LEVEL: 'debug' });
      const at = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${at}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve /healthz');
      return { proc, at };
    };
    const files = await start({});
    const table = await start(database);
    [serve, fromTable] = [files.proc, table.proc];
    bases.files = base = files.at;
    bases.PostgreSQL = table.at;
    servedAt = Date.now();
  }, 180_000);

  afterAll(async () => {
    const r = await serve?.stop();
    const t = await fromTable?.stop();
    db?.stop();
    // the token and the database password are in no log line
    expect(`${r?.stdout}${r?.stderr}${t?.stdout}${t?.stderr}`).not.toContain(TOKEN);
    expect(`${t?.stdout}${t?.stderr}`).not.toContain(db.password);
  });

  describe.each(SOURCES)('/api/bars from %s', (source) => {
    const { get, json } = on(source);

    it('lists the symbols and intervals there are', async () => {
      const { status, body } = await json('/api/meta');
      expect(status).toBe(200);
      expect(body).toMatchObject({ symbols: [SYMBOL], intervals: ['1min', '5min', '15min', '30min', '1h'], tz: 'America/New_York' });
    });

    it('every bar of every interval equals the CSV row, as JSON and as CSV', async () => {
      for (const iv of ['1min', '5min', '15min', '30min', '1h']) {
        const path = csvPath(dir, iv, SYMBOL);
        const file = readFileSync(path, 'utf8');
        const rows = readCsv(path).rows;
        const cells = file
          .trimEnd()
          .split('\n')
          .slice(1)
          .map((l) => l.split(','));
        const { body } = await json(`/api/bars?symbol=${encodeURIComponent(SYMBOL)}&interval=${iv}&from=0&limit=50000`);
        const bars = body.bars as {
          timestamp: string;
          start: number;
          open: string;
          high: string;
          low: string;
          close: string;
          volume: string;
          vwap: string;
          trades: number;
        }[];
        expect(bars.length, iv).toBe(rows.length);
        expect(body.truncated).toBe(false);
        bars.forEach((b, i) => {
          const [timestamp, open, high, low, close, vwap, volume] = cells[i]!;
          // prices, VWAP and volume as written (text), not numbers read back
          expect([b.timestamp, b.start, b.open, b.high, b.low, b.close, b.vwap, b.volume, b.trades]).toEqual([
            timestamp,
            rows[i]!.start,
            open,
            high,
            low,
            close,
            vwap,
            volume,
            rows[i]!.n,
          ]);
        });
        // as CSV: the file's own bytes
        const csv = await (await get(`/api/bars?symbol=BINANCE_XRPETH&interval=${iv}&from=0&limit=50000&format=csv`)).text();
        expect(csv).toBe(file);
      }
    });

    it('ranges: from inclusive, to exclusive, the newest by default, cut at the limit with the cut said', async () => {
      const path = csvPath(dir, '1min', SYMBOL);
      const rows = readCsv(path).rows;
      const lines = readFileSync(path, 'utf8').trimEnd().split('\n').slice(1);
      const q = (s: string) => `/api/bars?symbol=${encodeURIComponent(SYMBOL)}&interval=1min&${s}`;
      const starts = async (s: string) => ((await json(q(s))).body.bars as { start: number }[]).map((b) => b.start);

      // [rows[10].start, rows[20].start): rows 10..19
      expect(await starts(`from=${rows[10]!.start}&to=${rows[20]!.start}`)).toEqual(rows.slice(10, 20).map((r) => r.start));
      // ISO times with the offset, as the labels are written
      expect(await starts(`from=${encodeURIComponent(rows[10]!.timestamp)}&to=${encodeURIComponent(rows[12]!.timestamp)}`)).toEqual([
        rows[10]!.start,
        rows[11]!.start,
      ]);
      // a local time without its offset is read in BAR_TZ
      expect(await starts(`from=${rows[10]!.timestamp.slice(0, 19)}&limit=2`)).toEqual([rows[10]!.start, rows[11]!.start]);
      // a from inside a gap between bars starts at the next bar
      expect((await starts(`from=${rows[0]!.start + 1}&limit=1`))[0]).toBe(rows[1]!.start);
      // the first and the last bars, and nothing beyond them
      expect(await starts(`to=${rows[0]!.start}`)).toEqual([]);
      expect(await starts(`from=${rows[0]!.start - 86_400_000}&to=${rows[0]!.start + 1}`)).toEqual([rows[0]!.start]);
      expect(await starts(`from=${rows.at(-1)!.start}`)).toEqual([rows.at(-1)!.start]);
      expect(await starts(`from=${rows.at(-1)!.start + 1}`)).toEqual([]);
      // no range: the newest, up to the limit
      expect(await starts('limit=3')).toEqual(rows.slice(-3).map((r) => r.start));
      const cut = await get(q(`from=0&limit=5&format=csv`));
      expect(cut.headers.get('x-truncated')).toBe('true');
      expect((await cut.text()).trimEnd().split('\n').slice(1)).toEqual(lines.slice(0, 5));
      expect((await json(q('from=0&limit=5'))).body.truncated).toBe(true);
    });

    it('bad input gets a 4xx that says what is wrong; the server keeps answering', async () => {
      const bad: [string, number, RegExp][] = [
        ['/api/bars?symbol=NOPE&interval=1min', 404, /unknown symbol "NOPE".*BINANCE:XRPETH/],
        [`/api/bars?symbol=${SYMBOL}&interval=2min`, 400, /interval "2min" is not one of INTERVALS: 1min, 5min/],
        ['/api/bars?interval=1min', 400, /symbol is required/],
        [`/api/bars?symbol=${SYMBOL}&interval=1min&from=yesterday`, 400, /from="yesterday" is not a time/],
        [`/api/bars?symbol=${SYMBOL}&interval=1min&from=2000&to=1000`, 400, /from must be before to/],
        [`/api/bars?symbol=${SYMBOL}&interval=1min&limit=0`, 400, /limit must be at least 1/],
        [`/api/bars?symbol=${SYMBOL}&interval=1min&limit=9999999`, 400, /limit is at most 50000/],
        [`/api/bars?symbol=${SYMBOL}&interval=1min&format=xml`, 400, /format is json or csv/],
        ['/api/stream?symbols=NOPE', 404, /unknown symbol/],
        ['/api/stream', 400, /symbols is required/],
      ];
      for (const [path, status, message] of bad) {
        const r = await json(path);
        expect(r.status, path).toBe(status);
        expect(String(r.body.error), path).toMatch(message);
      }
      expect((await json('/api/meta')).status).toBe(200);
    });
  });

  it('HTTP_TOKEN: everything but /healthz needs it; the page sends a browser to sign in', async () => {
    expect((await get('/healthz', {})).status).toBe(200);
    for (const path of ['/api/meta', '/api/bars?symbol=x&interval=1min', '/api/stream?symbols=x', '/queues/', '/app.js']) {
      const r = await get(path, {});
      expect(r.status, path).toBe(401);
      expect(await r.text()).toMatch(/Authorization: Bearer/);
    }
    expect((await get('/api/meta', { authorization: 'Bearer wrong' })).status).toBe(401);
    const page = await fetch(`${base}/`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect([page.status, page.headers.get('location')]).toEqual([302, '/login.html']);
    // the sign-in form sets an HttpOnly cookie the page's requests then carry
    const login = await fetch(`${base}/login`, {
      method: 'POST',
      body: new URLSearchParams({ token: TOKEN }),
      redirect: 'manual',
    });
    expect(login.status).toBe(303);
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect((await get('/api/meta', { cookie: cookie.split(';')[0]! })).status).toBe(200);
    const wrong = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token: 'x' }), redirect: 'manual' });
    expect([wrong.status, wrong.headers.get('set-cookie')]).toEqual([303, null]);
  });

  it('a malformed sign-in cookie is a 401 (a browser is sent to sign in), not a 500', async () => {
    for (const cookie of ['cw_token=%E0%A4%A', 'cw_token=%', `cw_token=${TOKEN}%ZZ`]) {
      const r = await get('/api/meta', { cookie });
      expect(r.status, cookie).toBe(401);
      expect(await r.text()).toMatch(/Authorization: Bearer/);
      const page = await fetch(`${base}/`, { headers: { accept: 'text/html', cookie }, redirect: 'manual' });
      expect([page.status, page.headers.get('location')], cookie).toEqual([302, '/login.html']);
    }
  });

  it('serves the page, the chart library from the installed package with its licence, and Bull Board read-only', async () => {
    const html = await (await get('/')).text();
    expect(html).toMatch(/lightweight-charts\.standalone\.production\.js/);
    expect(html).toMatch(/TradingView Lightweight Charts/);
    const lib = await get('/vendor/lightweight-charts/lightweight-charts.standalone.production.js');
    expect(lib.status).toBe(200);
    expect((await lib.text()).length).toBeGreaterThan(100_000);
    expect(await (await get('/vendor/lightweight-charts/LICENSE')).text()).toMatch(/Apache License/);
    expect((await get('/vendor/lightweight-charts/package.json')).status).toBe(404);
    expect((await get('/queues/')).status).toBe(200);
    const queues = (await (await get('/queues/api/queues')).json()) as { queues: { name: string; readOnlyMode: boolean }[] };
    expect(queues.queues.map((q) => [q.name, q.readOnlyMode]).sort()).toEqual([
      ['bars', true],
      ['close', true],
    ]);
  });

  it('feed gaps the ingestor records: by symbol and range, and live on the stream', async () => {
    const redis = testRedis();
    const keys = makeKeys(prefix);
    const t0 = Date.parse('2019-10-11T12:00:00Z');
    const ours = { start: t0, end: t0 + 90_000, symbols: [SYMBOL], reason: 'feed socket closed' };
    try {
      const ac = new AbortController();
      const r = await fetch(`${base}/api/stream?symbols=${encodeURIComponent(SYMBOL)}`, { headers: auth, signal: ac.signal });
      const reader = r.body!.getReader();
      let text = '';
      const until = async (re: RegExp) => {
        while (!re.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      };
      // two status events: the reader has gone round once since this client came
      await until(/event: status[^]*event: status/);
      // as the ingestor records them (its codec): one of this symbol, one of another
      await redis.xadd(keys.gaps(), '*', ...encodeGapEntry(ours));
      await redis.xadd(keys.gaps(), '*', ...encodeGapEntry({ start: t0, end: t0 + 1000, symbols: ['OTHER'] }));
      await until(/event: gap\ndata: .*\n\n/);
      ac.abort();
      expect([...text.matchAll(/event: gap\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1]!) as unknown)).toEqual([ours]);
      expect((await json(`/api/gaps?symbol=${encodeURIComponent(SYMBOL)}`)).body.gaps).toEqual([ours]);
      expect((await json(`/api/gaps?symbol=${encodeURIComponent(SYMBOL)}&from=${t0 + 30_000}&to=${t0 + 60_000}`)).body.gaps).toEqual([
        ours,
      ]);
      expect((await json(`/api/gaps?symbol=${encodeURIComponent(SYMBOL)}&from=${t0 + 90_000}`)).body.gaps).toEqual([]);
      expect((await json(`/api/gaps?symbol=${encodeURIComponent(SYMBOL)}&to=${t0}`)).body.gaps).toEqual([]);
      expect(((await json('/api/gaps')).body.gaps as unknown[]).length).toBe(2);
    } finally {
      await redis.quit();
    }
  });

  it('the live stream answers with the pipeline status, as Server-Sent Events', async () => {
    const ac = new AbortController();
    const r = await fetch(`${base}/api/stream?symbols=${encodeURIComponent(SYMBOL)}&intervals=1min`, { headers: auth, signal: ac.signal });
    expect(r.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = r.body!.getReader();
    let text = '';
    while (!/event: status\ndata: .*\n\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    const status = JSON.parse(/event: status\ndata: (.*)\n/.exec(text)![1]!) as {
      tradesIn: number;
      merged: number;
      late: number;
      duplicates: number;
    };
    expect(status).toMatchObject({ tradesIn: 12477, merged: 12477, late: 0, duplicates: 0, corrections: 0, cancels: 0, pipeline: true });
  });

  // (these two change what the others read: last)
  it('trades/s is the same for every caller, over a window the server keeps, however often another polls', async () => {
    const redis = testRedis();
    try {
      // serve has sampled the counter for more than RATE_WINDOW_MS (5 s); then 600 trades come in
      await new Promise((r) => setTimeout(r, Math.max(0, servedAt + 6000 - Date.now())));
      await redis.hincrby(makeKeys(prefix).clock(0), 'in', 600);
      const rate = async () => ((await json('/api/status')).body as { tradesPerSec: number }).tradesPerSec;
      // a dashboard polling fast, then a second caller right after it
      const fast: number[] = [];
      for (let i = 0; i < 5; i++) fast.push(await rate());
      const other = await rate();
      // 600 trades over a window of 5 s (up to 2 s more on a busy machine): 85 to 120 trades/s, for each
      for (const r of [...fast, other]) {
        expect(r).toBeGreaterThanOrEqual(85);
        expect(r).toBeLessThanOrEqual(120);
      }
    } finally {
      await redis.quit();
    }
  });

  it('/login: at most 10 wrong tokens a minute from one address, then 429 with Retry-After (even for the right token)', async () => {
    const login = (token: string) => fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
    // (one wrong attempt was made by the sign-in test above)
    const codes: number[] = [];
    for (let i = 0; i < 10; i++) codes.push((await login(`wrong-${i}`)).status);
    expect(codes).toEqual([303, 303, 303, 303, 303, 303, 303, 303, 303, 429]);
    const r = await login(TOKEN);
    expect(r.status).toBe(429);
    expect(r.headers.get('set-cookie')).toBe(null);
    const retry = Number(r.headers.get('retry-after'));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
    expect(((await r.json()) as { error: string }).error).toMatch(/too many sign-in attempts .* try again in \d+ s/);
    // the API with the token still answers: only the sign-in form is limited
    expect((await get('/api/meta')).status).toBe(200);
  });

  it('the database down: /api/bars from it is a 503 saying why; the rest of the API, and the original revisions from the files, go on', async () => {
    const table = on('PostgreSQL');
    const q = `/api/bars?symbol=${encodeURIComponent(SYMBOL)}&interval=1min&limit=3`;
    expect((await table.json(q)).status).toBe(200);
    db.stop();
    try {
      const r = await table.json(q);
      expect(r.status).toBe(503);
      expect(String(r.body.error)).toMatch(
        /^the bars database \(DATABASE_URL=postgres:\/\/candlewick@127\.0\.0\.1:\d+\/candlewick\) did not answer: .+; live bars and the rest of the API go on/,
      );
      expect((await table.json('/api/meta')).status).toBe(200);
      expect((await table.json('/api/status')).status).toBe(200);
      expect((await table.get('/healthz', {})).status).toBe(200);
      const original = await table.json(`${q}&revisions=original`);
      expect(original.status).toBe(200);
      expect(original.body.bars).toEqual((await json(q)).body.bars);
    } finally {
      db.start();
    }
    expect((await table.json(q)).status).toBe(200);
  });
});

describe('candlewick serve on files alone (no pipeline)', () => {
  const dir = tempDir('serve-files');
  const FEED = 'BINANCE:TINYUSD';
  // a 24/7 symbol's bars as written: prices with a trailing zero, and tiny ones
  const header = 'timestamp,open,high,low,close,vwap,volume,num_transactions';
  const rows = [
    '2026-11-01T01:58:00-04:00,1.10,1.20,1.00,1.10,1.1034482758620689655,2.9,3',
    '2026-11-01T01:59:00-04:00,0.00000012,0.00000015,0.00000010,0.00000012,0.0000001275,4000,2',
  ];
  let serve: CliProcess;
  let base = '';
  let port = 0;
  let env: Record<string, string> = {};
  /** every path under DATA_DIR with its size and modification time */
  const snapshot = () =>
    (readdirSync(dir, { recursive: true }) as string[]).sort().map((f) => {
      const st = statSync(join(dir, f));
      return `${f} ${st.size} ${st.mtimeMs}`;
    });
  let before: string[] = [];

  beforeAll(async () => {
    const path = csvPath(dir, '1min', FEED);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${header}\n${rows.join('\n')}\n`);
    before = snapshot();
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // open beyond loopback without a token, and a Redis with nothing of this prefix: files alone
    env = { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('serve-files'), DATA_DIR: dir, INTERVALS: '1min', HTTP_PORT: String(port) };
    serve = startCli(['serve'], { ...env, HTTP_HOST: '0.0.0.0' });
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve /healthz');
  });

  afterAll(async () => {
    await serve?.stop();
  });

  it('a symbol known only by its file is found by its feed spelling too; prices are the text as written', async () => {
    expect(((await (await fetch(`${base}/api/meta`)).json()) as { symbols: string[] }).symbols).toEqual(['BINANCE_TINYUSD']);
    for (const s of [FEED, 'BINANCE_TINYUSD']) {
      const r = await fetch(`${base}/api/bars?symbol=${encodeURIComponent(s)}&interval=1min&from=0`);
      expect(r.status, s).toBe(200);
      const bars = ((await r.json()) as { bars: Record<string, unknown>[] }).bars;
      expect(bars.map((b) => [b.open, b.high, b.low, b.close, b.vwap, b.volume])).toEqual([
        ['1.10', '1.20', '1.00', '1.10', '1.1034482758620689655', '2.9'],
        ['0.00000012', '0.00000015', '0.00000010', '0.00000012', '0.0000001275', '4000'],
      ]);
    }
  });

  it('the status says there is no pipeline (rather than a feed down)', async () => {
    const s = (await (await fetch(`${base}/api/status`)).json()) as { pipeline: boolean; feedConnected: boolean; tradesIn: number };
    expect(s).toMatchObject({ pipeline: false, feedConnected: false, tradesIn: 0 });
  });

  it('a port in use: "port N is in use" naming HTTP_PORT, exit 2 (as the README says for serve alone)', async () => {
    const r = await runCli(['serve'], env, 30_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`port ${port} is in use on 127.0.0.1 (HTTP_PORT=${port}, HTTP_HOST=127.0.0.1)`);
    expect(r.stderr).not.toMatch(/invalid configuration/);
  });

  it('warns once, loudly, when open beyond loopback without a token; writes nothing under DATA_DIR', async () => {
    const { stdout } = await serve.stop();
    expect(stdout.match(/HTTP_HOST=0\.0\.0\.0 WITHOUT HTTP_TOKEN/g)?.length).toBe(1);
    expect(snapshot()).toEqual(before);
  });
});

describe('candlewick serve: LATE=amend corrections', () => {
  it('the API gives the newest revision of a corrected bar in its place, and the bar as first written on request', async () => {
    const dir = tempDir('serve-amend');
    const at = (hms: string) => Date.parse(`2024-03-05T${hms}Z`);
    // the trade at 10:00:30 comes after the watermark passed 10:01:00 + grace: late, and a correction of its bars
    const trades = [
      { p: 10, t: at('10:00:10') },
      { p: 11, t: at('10:00:50') },
      { p: 12, t: at('10:01:01') },
      { p: 13, t: at('10:01:30') },
      { p: 100, t: at('10:00:30') },
      { p: 14, t: at('10:02:10') },
    ];
    const tape = join(dir, 'tape.jsonl');
    writeFileSync(tape, trades.map((x) => JSON.stringify({ s: 'TEST', p: x.p, v: 1, t: x.t, c: [] })).join('\n'));
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('serve-amend'), DATA_DIR: dir, INTERVALS: '1min,5min', LATE: 'amend' };
    const run = await runCli(['stack'], { ...env, REPLAY_TAPE: tape, EXIT_WHEN_IDLE_MS: '400' });
    expect(run.code, run.stdout).toBe(0);
    const port = await freePort();
    const serve = startCli(['serve'], { ...env, HTTP_PORT: String(port) });
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve /healthz');
      const bars = async (q: string) =>
        (
          (await (await fetch(`${base}/api/bars?symbol=TEST&interval=1min&from=0&${q}`)).json()) as {
            bars: { start: number; high: string; volume: string; rev: number }[];
          }
        ).bars;
      const latest = await bars('');
      const original = await bars('revisions=original');
      expect(latest.map((b) => [b.start, b.high, b.volume, b.rev])).toEqual([
        [at('10:00:00'), '100', '3', 1],
        [at('10:01:00'), '13', '2', 0],
        [at('10:02:00'), '14', '1', 0],
      ]);
      expect(original[0]).toMatchObject({ high: '11', volume: '2', rev: 0 });
      // the CSV answer with the correction in place, the main file's columns
      const csv = await (await fetch(`${base}/api/bars?symbol=TEST&interval=1min&from=0&format=csv`)).text();
      const correction = readFileSync(correctionsPath(dir, '1min', 'TEST'), 'utf8')
        .trim()
        .split('\n')[1]!;
      expect(csv.split('\n')[1]).toBe(correction.slice(0, correction.lastIndexOf(',')));
    } finally {
      await serve.stop();
    }
  });
});
