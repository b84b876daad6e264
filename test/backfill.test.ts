import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { ProviderServer } from '@candlewick/backfill';
import { readTapeTrades } from '@candlewick/common';
import { csvPath } from '@candlewick/common';
import { ROOT, redisUrl, runCli, runThroughOutage, startCli, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';
import { freePort } from '@candlewick/cli';
import { alpacaConditions, alpacaSubMs, alpacaTime } from '@candlewick/core';

/**
 * Backfill against a local HTTP server that serves Finnhub candles, Massive aggregates and trades,
 * and Alpaca trades and bars computed from a real tape (AIG, 2013-10-10, bundled). The stack starts in the middle of
 * the tape (REPLAY_FROM); with backfill its bars from the start of the current hour on must equal a
 * run that saw the whole tape live.
 */
const TICK = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');
const FROM = '2013-10-10T12:17:30.000-04:00';
const HOUR = Date.parse('2013-10-10T12:00:00-04:00');
const INTERVALS = ['1min', '5min', '15min', '30min', '1h'];
const KEY = 'test-massive-key';
const TOKEN = 'test-finnhub-token';
const ALPACA_KEY = 'AKBACKFILL3D8E';
const ALPACA_SECRET = 'backfill-secret-6a0c2f';

let server: ProviderServer;
let base = '';
let whole = '';

function rows(dataDir: string, interval: string): string[] {
  return readFileSync(csvPath(dataDir, interval, 'AIG'), 'utf8')
    .trimEnd()
    .split('\n')
    .slice(1);
}
const startOf = (row: string) => Date.parse(row.slice(0, row.indexOf(',')));
const cells = (row: string) => row.split(',');

beforeAll(async () => {
  server = new ProviderServer(readTapeTrades(TICK), {
    finnhubToken: TOKEN,
    massiveKey: KEY,
    alpacaKey: ALPACA_KEY,
    alpacaSecret: ALPACA_SECRET,
    // the 1,310 trades from 12:00 to the first live one come in two pages
    pageSize: 1000,
  });
  base = await server.start();
  whole = tempDir('bf-whole');
  const res = await runCli(['stack'], {
    REDIS_URL: redisUrl(),
    KEY_PREFIX: uniquePrefix('bf-whole'),
    DATA_DIR: whole,
    REPLAY_TAPE: TICK,
    EXIT_WHEN_IDLE_MS: '500',
  });
  expect(res.code).toBe(0);
});
const redis = testRedis();
afterAll(async () => {
  await server.stop();
  await redis.quit();
});

function midTape(name: string, env: Record<string, string>) {
  const dataDir = tempDir(name);
  return runCli(['stack'], {
    REDIS_URL: redisUrl(),
    KEY_PREFIX: uniquePrefix(name),
    DATA_DIR: dataDir,
    REPLAY_TAPE: TICK,
    REPLAY_FROM: FROM,
    EXIT_WHEN_IDLE_MS: '500',
    BACKFILL: 'on',
    BACKFILL_RATE: '6000',
    MODE: 'replay',
    ...env,
  }).then((res) => ({ res, dataDir }));
}

/** Every interval's rows from 12:00 on equal the run that saw the whole tape live, every cell (VWAP included: sums are exact, so the same trades give the same bytes); the 1-minute bars before the first live trade came from the provider only. */
function expectAsWholeTape(dataDir: string): void {
  for (const iv of INTERVALS) {
    const want = rows(whole, iv).filter((r) => startOf(r) >= HOUR);
    const got = rows(dataDir, iv);
    expect(
      got.map((r) => r.split(',')[0]),
      iv,
    ).toEqual(want.map((r) => r.split(',')[0]));
    expect(got, iv).toEqual(want);
  }
  expect(rows(dataDir, '1min')[0]!.startsWith('2013-10-10T12:00:00-04:00,')).toBe(true);
}

describe('backfill at start-up, in the middle of a trading day', () => {
  it('with Massive trades (tick mode): every interval equals the run that saw the whole tape live', async () => {
    const { res, dataDir } = await midTape('bf-ticks', { BACKFILL_PROVIDER: 'massive', MASSIVE_API_KEY: KEY, MASSIVE_REST_URL: base });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/backfilled/);
    expect(res.stdout).not.toContain(KEY);
    expectAsWholeTape(dataDir);
  });

  it('FEED=alpaca with Alpaca trades (tick mode, the provider by default): every interval equals the run that saw the whole tape live', async () => {
    const asked = server.requests.length;
    const { res, dataDir } = await midTape('bf-alpaca', {
      FEED: 'alpaca',
      ALPACA_API_KEY: ALPACA_KEY,
      ALPACA_API_SECRET: ALPACA_SECRET,
      ALPACA_REST_URL: base,
    });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/feed=Alpaca/);
    expect(res.stdout).toMatch(/backfilled/);
    for (const s of [ALPACA_KEY, ALPACA_SECRET]) expect(res.stdout).not.toContain(s);
    expectAsWholeTape(dataDir);
    // Alpaca's trades of the stream's feed (the replay's /v2/iex), more than one page of them
    const mine = server.requests.slice(asked).filter((r) => r.path === '/v2/stocks/AIG/trades');
    expect(mine.length).toBeGreaterThan(1);
    expect(mine.every((r) => r.status === 200 && new URLSearchParams(r.query).get('feed') === 'iex')).toBe(true);
  });

  it('FEED=alpaca, cancels of live trades in bars part of which were backfilled: no revision recomputed from their live trades alone (their trades are not all on the raw stream), said and counted', async () => {
    // the tape from FROM as Alpaca's stream sends it (trade k of the day as id N:k), the second
    // live trade cancelled in the first frame
    const live = readTapeTrades(TICK)
      .map((tr, n) => ({ tr, k: n + 1 }))
      .filter(({ tr }) => tr.t >= Date.parse(FROM));
    const at = (x: (typeof live)[number]) => alpacaTime(x.tr.t, alpacaSubMs(x.k));
    const messages: object[] = live.map((x) => ({
      T: 't',
      S: 'AIG',
      i: x.k,
      x: 'N',
      p: Number(x.tr.p),
      s: x.tr.v,
      t: at(x),
      c: alpacaConditions(x.tr.c),
    }));
    const cancel = (x: (typeof live)[number]) => ({
      T: 'x',
      S: 'AIG',
      i: x.k,
      x: 'N',
      p: Number(x.tr.p),
      s: x.tr.v,
      a: 'C',
      z: 'A',
      t: at(x),
    });
    // one as the live trades begin, one an hour on (the bars, the same five, closed by then)
    const later = live.findIndex((x) => x.tr.t >= Date.parse('2013-10-10T13:05:00-04:00'));
    messages.splice(later, 0, cancel(live[2]!));
    messages.splice(3, 0, cancel(live[1]!));
    const tape = join(tempDir('bf-alpaca-amend-tape'), 'alpaca.frames');
    const frames: string[] = [];
    for (let i = 0; i < messages.length; i += 20) frames.push(JSON.stringify(messages.slice(i, i + 20)));
    writeFileSync(tape, `${frames.join('\n')}\n`);
    const { res, dataDir } = await midTape('bf-alpaca-amend', {
      FEED: 'alpaca',
      ALPACA_API_KEY: ALPACA_KEY,
      ALPACA_API_SECRET: ALPACA_SECRET,
      ALPACA_REST_URL: base,
      REPLAY_TAPE: tape,
      SYMBOLS: 'AIG',
      EXIT_WHEN_IDLE_MS: '2500',
    });
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(res.stdout).toMatch(/backfilled/);
    // the five bars of the cancelled trades each began before the first live trade: none is
    // recomputed from its live trades alone, none gets a revision
    // the first finds the five bars open (each held at its close and written as it closed) or, the
    // tape going out at once, closed already (AMEND_SETTLE_MS); the second finds them closed: no
    // revision either way
    expect(res.stdout).toMatch(
      /amended {10}0 corrections and 2 cancels received \(kept in feed:corrections\): 0 bars written with them \(as they closed, or as a revision in \.corrections\.csv\); (5|10) bars with trades the raw stream has not \(a backfill, a trim\) not amended/,
    );
    expect(res.stdout).toMatch(/a bar part of which came from a backfill .* it is written as it closed, or its revision left out/);
    expectAsWholeTape(dataDir);
    for (const iv of INTERVALS) expect(existsSync(join(dataDir, 'raw', iv, `AIG_${iv}.corrections.csv`)), iv).toBe(false);
  });

  it('with Finnhub candles: OHLCV exact where minutes are whole, VWAP and count left empty, the live minute’s bars incomplete', async () => {
    const { res, dataDir } = await midTape('bf-candles', {
      BACKFILL_PROVIDER: 'finnhub',
      FINNHUB_TOKEN: TOKEN,
      FINNHUB_REST_URL: `${base}/api/v1`,
      CSV_EXTRA_COLUMNS: 'true',
    });
    expect(res.code).toBe(0);
    expect(res.stdout).not.toContain(TOKEN);
    const liveMinute = Date.parse('2013-10-10T12:17:00-04:00');
    for (const iv of INTERVALS) {
      const ms = { '1min': 1, '5min': 5, '15min': 15, '30min': 30, '1h': 60 }[iv]! * 60_000;
      const want = new Map(rows(whole, iv).map((r) => [startOf(r), cells(r)]));
      const header = readFileSync(csvPath(dataDir, iv, 'AIG'), 'utf8').split('\n')[0];
      expect(header).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions,complete,sources');
      for (const r of rows(dataDir, iv)) {
        const g = cells(r);
        const start = startOf(r);
        const w = want.get(start)!;
        const holdsLiveMinute = start <= liveMinute && liveMinute < start + ms;
        const fromCandles = start < liveMinute;
        if (holdsLiveMinute) {
          expect(g[8], `${iv} ${g[0]}`).toBe('false');
        } else {
          expect(g[8], `${iv} ${g[0]}`).toBe('true');
          expect([...g.slice(0, 5), g[6]], `${iv} ${g[0]}`).toEqual([...w.slice(0, 5), w[6]]);
        }
        if (fromCandles) {
          // candles without VWAP or trade counts: unknown, never invented
          expect([g[5], g[7]], `${iv} ${g[0]}`).toEqual(['', '']);
          expect(g[9]).toMatch(/finnhub-candles/);
        } else {
          expect(g[9]).toBe('live');
          if (!holdsLiveMinute) expect(g[7]).toBe(w[7]);
        }
      }
    }
    expect(rows(dataDir, '1min').filter((r) => startOf(r) < liveMinute)).toHaveLength(17);
  });

  it('a 403 (premium endpoint) warns once; the stack runs on without backfill and marks the first bars incomplete', async () => {
    const refusing = new ProviderServer([], {
      finnhubToken: TOKEN,
      faults: [{ path: /candle/, status: 403, times: 100, body: '{"error":"You don\'t have access to this resource."}' }],
    });
    const url = await refusing.start();
    try {
      const { res, dataDir } = await midTape('bf-403', {
        BACKFILL_PROVIDER: 'finnhub',
        FINNHUB_TOKEN: TOKEN,
        FINNHUB_REST_URL: `${url}/api/v1`,
        CSV_EXTRA_COLUMNS: 'true',
      });
      expect(res.code).toBe(0);
      expect(res.stdout.match(/backfill is off for this run/g)).toHaveLength(1);
      expect(res.stdout).toMatch(/HTTP 403/);
      expect(refusing.requests).toHaveLength(1);
      const first = rows(dataDir, '1min')[0]!;
      expect(first.startsWith('2013-10-10T12:17:00-04:00,')).toBe(true);
      expect(cells(first)[8]).toBe('false');
      expect(cells(rows(dataDir, '1h')[0]!)[8]).toBe('false');
      expect(cells(rows(dataDir, '1min')[1]!)[8]).toBe('true');
    } finally {
      await refusing.stop();
    }
  });
});

describe('backfill of a feed outage', () => {
  it('the feed dies for 25 minutes mid-morning: the outage is filled from Massive trades and every bar equals the whole-tape run', async () => {
    const tape = readTapeTrades(TICK);
    // cut where the millisecond changes, so the live feed never splits one
    const at = (iso: string) => {
      let k = tape.findIndex((tr) => tr.t >= Date.parse(iso));
      while (tape[k]!.t === tape[k - 1]!.t) k++;
      return k;
    };
    const [cut, resume] = [at('2013-10-10T11:00:00-04:00'), at('2013-10-10T11:25:13-04:00')];
    const dir = tempDir('bf-gap');
    const prefix = uniquePrefix('bf-gap');
    const { code, out } = await runThroughOutage(tape.slice(0, cut), tape.slice(resume), {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      FINNHUB_TOKEN: TOKEN,
      SYMBOLS: 'AIG',
      BACKFILL: 'on',
      BACKFILL_PROVIDER: 'massive',
      MASSIVE_API_KEY: KEY,
      MASSIVE_REST_URL: base,
      BACKFILL_RATE: '6000',
    });
    const keys = makeKeys(prefix);
    expect(code, out).toBe(0);
    expect(out).toMatch(/feed outage recorded/);
    expect(out).not.toContain(KEY);
    const stats = await redis.hgetall(keys.partitionStats(0));
    expect(Number(stats.backfilled)).toBe(resume - cut);
    for (const iv of INTERVALS) {
      const want = rows(whole, iv);
      const got = rows(dir, iv);
      expect(
        got.map((r) => r.split(',')[0]),
        iv,
      ).toEqual(want.map((r) => r.split(',')[0]));
      expect(got, iv).toEqual(want);
    }
  });
});

describe('historical mode', () => {
  it('candlewick backfill --symbols --from --to builds the day’s bars, equal to the live run’s; a second run changes nothing', async () => {
    const dataDir = tempDir('historical');
    const env = {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('historical'),
      DATA_DIR: dataDir,
      BACKFILL_PROVIDER: 'massive',
      MASSIVE_API_KEY: KEY,
      MASSIVE_REST_URL: base,
      BACKFILL_RATE: '6000',
    };
    const args = ['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'];
    const one = await runCli(args, env);
    expect(one.stderr).toBe('');
    expect(one.code).toBe(0);
    // not a terminal: plain progress lines
    expect(one.stdout).toMatch(/^backfill 1\/1 AIG 2013-10-10\n/m);
    expect(one.stdout).toMatch(/backfill done: \d+ bars written, 0 already there, from 54318 trades \(massive ticks\)/);
    for (const iv of INTERVALS) {
      const want = rows(whole, iv);
      const got = rows(dataDir, iv);
      expect(got.length, iv).toBe(want.length);
      expect(got, iv).toEqual(want);
    }
    const before = INTERVALS.map((iv) => readFileSync(csvPath(dataDir, iv, 'AIG'), 'utf8'));
    const two = await runCli(args, env);
    expect(two.code).toBe(0);
    expect(two.stdout).toMatch(/backfill done: 0 bars written, \d+ already there/);
    expect(INTERVALS.map((iv) => readFileSync(csvPath(dataDir, iv, 'AIG'), 'utf8'))).toEqual(before);
  });

  it('from a clone, without keys: `candlewick provider-server` serves a tape as provider history, and historical mode reads it', async () => {
    const port = await freePort();
    const server = startCli(['provider-server', '--tape', TICK, '--port', String(port)], { MASSIVE_API_KEY: 'demo' });
    try {
      await waitFor(
        () => /serving the tape as Finnhub .* Massive .* and Alpaca/.test(server.output().stdout),
        30_000,
        'the provider server',
      );
      const dataDir = tempDir('demo-history');
      const res = await runCli(['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'], {
        DATA_DIR: dataDir,
        MASSIVE_API_KEY: 'demo',
        MASSIVE_REST_URL: `http://127.0.0.1:${port}`,
      });
      expect(res.code, res.stderr).toBe(0);
      for (const iv of INTERVALS) expect(rows(dataDir, iv), iv).toEqual(rows(whole, iv));
    } finally {
      await server.stop();
    }
  });

  it('from Alpaca through `candlewick provider-server` (FEED=alpaca, its key and secret): the day’s bars equal the live run’s', async () => {
    const port = await freePort();
    const keys = { ALPACA_API_KEY: ALPACA_KEY, ALPACA_API_SECRET: ALPACA_SECRET };
    const server = startCli(['provider-server', '--tape', TICK, '--port', String(port)], keys);
    try {
      await waitFor(() => /serving the tape as .* Alpaca/.test(server.output().stdout), 30_000, 'the provider server');
      const dataDir = tempDir('alpaca-history');
      const res = await runCli(['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'], {
        DATA_DIR: dataDir,
        FEED: 'alpaca',
        ...keys,
        ALPACA_REST_URL: `http://127.0.0.1:${port}`,
        BACKFILL_RATE: '6000',
      });
      expect(res.stderr).toBe('');
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/backfill done: \d+ bars written, 0 already there, from 54318 trades \(alpaca ticks\)/);
      for (const s of Object.values(keys)) expect(`${res.stdout}${server.output().stdout}`).not.toContain(s);
      for (const iv of INTERVALS) expect(rows(dataDir, iv), iv).toEqual(rows(whole, iv));
    } finally {
      await server.stop();
    }
  });

  it('from Alpaca’s 1-minute bars (candles): every bar’s OHLC, volume and count equal the live run’s, VWAP from the bars', async () => {
    const dataDir = tempDir('alpaca-candles');
    const res = await runCli(['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'], {
      DATA_DIR: dataDir,
      BACKFILL_PROVIDER: 'alpaca',
      BACKFILL_MODE: 'candles',
      ALPACA_API_KEY: ALPACA_KEY,
      ALPACA_API_SECRET: ALPACA_SECRET,
      ALPACA_REST_URL: base,
      BACKFILL_RATE: '6000',
    });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/backfill done: \d+ bars written, 0 already there, from \d+ candles \(alpaca candles\)/);
    for (const iv of INTERVALS) {
      const want = rows(whole, iv).map(cells);
      const got = rows(dataDir, iv).map(cells);
      expect(got.length, iv).toBe(want.length);
      got.forEach((g, k) => {
        const w = want[k]!;
        // every cell but the VWAP (the bars' vw, a float) the same text
        expect([...g.slice(0, 5), ...g.slice(6)], `${iv} ${g[0]}`).toEqual([...w.slice(0, 5), ...w.slice(6)]);
        expect(Math.abs(Number(g[5]) - Number(w[5])), `${iv} ${g[0]}`).toBeLessThanOrEqual(1e-9 * Number(w[5]));
      });
    }
  });

  it('from Alpaca with a wrong secret: exit 2 at once, saying which settings to check, never retrying, the secret in no output', async () => {
    const asked = server.requests.length;
    const wrong = 'wrong-secret-e5a9d1';
    const res = await runCli(['backfill', '--symbols', 'AIG', '--from', '2013-10-10', '--to', '2013-10-11'], {
      DATA_DIR: tempDir('alpaca-wrong'),
      BACKFILL_PROVIDER: 'alpaca',
      ALPACA_API_KEY: ALPACA_KEY,
      ALPACA_API_SECRET: wrong,
      ALPACA_REST_URL: base,
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(
      /^candlewick backfill: alpaca: Alpaca refused ALPACA_API_KEY \/ ALPACA_API_SECRET \(HTTP 403: forbidden\.\): check the key id/m,
    );
    expect(`${res.stdout}${res.stderr}`).not.toContain(wrong);
    expect(`${res.stdout}${res.stderr}`).not.toContain(ALPACA_KEY);
    expect(server.requests.slice(asked).map((r) => r.status)).toEqual([403]);
  });
});
