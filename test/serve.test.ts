import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

/**
 * The HTTP API of `candlewick serve` against a real stack run of the bundled tape: every bar it
 * returns is the CSV's, ranges at their edges, bad input answered with a 4xx, the token required
 * everywhere but /healthz and never logged, Bull Board read-only, the live stream answering.
 */
const TOKEN = 'tok-3f9a1c0e77d2';
const SYMBOL = 'BINANCE:XRPETH';

describe('candlewick serve: the HTTP API', () => {
  const dir = tempDir('serve-api');
  const prefix = uniquePrefix('serve-api');
  let serve: CliProcess;
  let base = '';
  const auth = { authorization: `Bearer ${TOKEN}` };
  const get = (path: string, headers: Record<string, string> = auth) => fetch(`${base}${path}`, { headers });
  const json = async (path: string) => {
    const r = await get(path);
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix, DATA_DIR: dir, REPLAY_TAPE: BUNDLED_TAPE };
    const run = await runCli(['stack'], env);
    expect(run.code, run.stderr).toBe(0);
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // no SYMBOLS: the symbol is named from the published bars, not the file name
    serve = startCli(['serve'], { ...env, HTTP_PORT: String(port), HTTP_TOKEN: TOKEN, LOG_LEVEL: 'debug' });
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve /healthz');
  }, 180_000);

  afterAll(async () => {
    const r = await serve?.stop();
    // the token is in no log line
    expect(`${r?.stdout}${r?.stderr}`).not.toContain(TOKEN);
  });

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
      const { body } = await json(`/api/bars?symbol=${encodeURIComponent(SYMBOL)}&interval=${iv}&from=0&limit=50000`);
      const bars = body.bars as {
        timestamp: string;
        start: number;
        open: number;
        high: number;
        low: number;
        close: number;
        volume: number;
        vwap: number;
        trades: number;
      }[];
      expect(bars.length, iv).toBe(rows.length);
      expect(body.truncated).toBe(false);
      bars.forEach((b, i) => {
        const r = rows[i]!;
        expect([b.timestamp, b.start, b.open, b.high, b.low, b.close, b.vwap, b.volume, b.trades]).toEqual([
          r.timestamp,
          r.start,
          r.open,
          r.high,
          r.low,
          r.close,
          r.vwap,
          r.volume,
          r.n,
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
    const status = JSON.parse(/event: status\ndata: (.*)\n/.exec(text)![1]!) as { tradesIn: number; merged: number; late: number };
    expect(status).toMatchObject({ tradesIn: 12477, merged: 12477, late: 0 });
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
            bars: { start: number; high: number; volume: number; rev: number }[];
          }
        ).bars;
      const latest = await bars('');
      const original = await bars('revisions=original');
      expect(latest.map((b) => [b.start, b.high, b.volume, b.rev])).toEqual([
        [at('10:00:00'), 100, 3, 1],
        [at('10:01:00'), 13, 2, 0],
        [at('10:02:00'), 14, 1, 0],
      ]);
      expect(original[0]).toMatchObject({ high: 11, volume: 2, rev: 0 });
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
