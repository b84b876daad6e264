import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { pino } from 'pino';
import { makeKeys, readTape } from '@candlewick/common';
import { ReplayServer } from '@candlewick/ingestor';
import { freePort } from '@candlewick/cli';
import {
  LEAN_AIG_TAPE,
  csvOutputs,
  filesUnder,
  rawTrades,
  redisUrl,
  runCli,
  stackWithIngestKilled,
  tempDir,
  testRedis,
  uniquePrefix,
} from './helpers.js';
import { writeAmendedTape } from './amend-tape.js';

/**
 * FEED=alpaca end to end: the Alpaca adapter (packages/ingestor/src/feeds/alpaca.ts) against the
 * project's own Alpaca-protocol replay server (replay/alpaca.ts), in real processes on a real Redis.
 */
const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());

describe('FEED=alpaca', () => {
  it("the AIG day through Alpaca's protocol: every file the same bytes as the same tape through Finnhub's; key and secret in no log", async () => {
    const alpacaDir = tempDir('alpaca-feed');
    const key = 'AKREPLAY7F3A9C';
    const secret = 'replay-secret-b41d0e';
    const alp = await runCli(
      ['stack'],
      {
        FEED: 'alpaca',
        MODE: 'replay',
        // the stand-in checks the login against them; the ingestor sends them
        ALPACA_API_KEY: key,
        ALPACA_API_SECRET: secret,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('alpaca-feed'),
        DATA_DIR: alpacaDir,
        EXIT_WHEN_IDLE_MS: '1500',
        AGGREGATORS: '2',
        STREAM_PARTITIONS: '2',
        LOG_LEVEL: 'debug',
      },
      150_000,
    );
    expect(alp.code, alp.stdout.slice(-3000)).toBe(0);
    expect(alp.stdout).toMatch(/feed connected; subscribing.*feed=Alpaca/);
    // without REPLAY_TAPE: the bundled equity day
    expect(alp.stdout).toMatch(/replay mode: replaying a recorded tape in the alpaca protocol.*aig_20131010_trade\.zip/);
    const tradesIn = /trades in\s+(\d+)\n/.exec(alp.stdout)?.[1];
    expect(Number(tradesIn)).toBe(readTape(LEAN_AIG_TAPE).length);
    expect(alp.stdout).toMatch(new RegExp(`merged\\s+${tradesIn}\\n`));
    expect(alp.stdout).not.toMatch(/not applied/);
    for (const s of [key, secret]) {
      expect(`${alp.stdout}${alp.stderr}`).not.toContain(s);
      expect(filesUnder(alpacaDir).some((text) => text.includes(s))).toBe(false);
    }

    const finnhubDir = tempDir('alpaca-feed-finnhub');
    const fin = await runCli(
      ['stack'],
      {
        REPLAY_TAPE: LEAN_AIG_TAPE,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('alpaca-feed-finnhub'),
        DATA_DIR: finnhubDir,
        EXIT_WHEN_IDLE_MS: '1500',
      },
      150_000,
    );
    expect(fin.code, fin.stdout.slice(-3000)).toBe(0);
    expect(fin.stdout).toMatch(new RegExp(`trades in\\s+${tradesIn}\\n`));
    const a = csvOutputs(alpacaDir);
    expect(a.size).toBe(5);
    expect(a).toEqual(csvOutputs(finnhubDir));
  }, 320_000);

  it('the ingestor killed -9 mid-tape and restarted: its new connection gets the tape from the start, every trade counted once', async () => {
    const { res, dir } = await stackWithIngestKilled('alpaca');
    // every trade of the tape merged once (the rest dropped by id within TRADE_IDS_WINDOW), and the
    // files as a run without the kill writes them
    const trades = readTape(LEAN_AIG_TAPE).length;
    expect(res.stdout).toMatch(new RegExp(`merged\\s+${trades}\\n`));
    const once = tempDir('alpaca-once');
    const plain = await runCli(
      ['stack'],
      {
        FEED: 'alpaca',
        MODE: 'replay',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('alpaca-once'),
        DATA_DIR: once,
        EXIT_WHEN_IDLE_MS: '1500',
      },
      150_000,
    );
    expect(plain.code, plain.stdout.slice(-3000)).toBe(0);
    expect(csvOutputs(dir)).toEqual(csvOutputs(once));
  }, 320_000);

  it('a wrong ALPACA_API_SECRET: exit 2 at once, saying so, never retrying, neither key nor secret in any log', async () => {
    const server = new ReplayServer(
      readTape(LEAN_AIG_TAPE).slice(0, 10),
      { port: 0, speed: 0, frameTrades: 10, feed: 'alpaca', token: 'AKRIGHT', secret: 'the-right-secret' },
      quiet,
    );
    const port = await server.start();
    const dir = tempDir('alpaca-wrong-key');
    const wrong = 'wrong-secret-5d1e8b2c';
    const res = await runCli(
      ['ingest'],
      {
        FEED: 'alpaca',
        ALPACA_API_KEY: 'AKRIGHT',
        ALPACA_API_SECRET: wrong,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('alpaca-wrong-key'),
        DATA_DIR: dir,
        ALPACA_WS_URL: `ws://127.0.0.1:${port}/v2/iex`,
        SYMBOLS: 'AIG',
        LOG_LEVEL: 'debug',
      },
      20_000,
    );
    await server.stop();
    expect(res.code).toBe(2);
    expect(res.stdout).toMatch(/Alpaca refused ALPACA_API_KEY \/ ALPACA_API_SECRET \(402 auth failed\): check the key id/);
    expect(res.stdout).toMatch(/ingest cannot continue/);
    expect(server.connections).toBe(1);
    for (const s of ['AKRIGHT', wrong]) {
      expect(`${res.stdout}${res.stderr}`).not.toContain(s);
      expect(filesUnder(dir).some((text) => text.includes(s))).toBe(false);
    }
  });

  it("Alpaca's refusals after the login: 409 (a plan without SIP) exits 2 saying use /v2/iex; 406 (connection limit) is said and waited out, one connection", async () => {
    const port = await freePort();
    const wss = new WebSocketServer({ port, host: '127.0.0.1' });
    let answer = '';
    let connections = 0;
    const asked: string[] = [];
    wss.on('connection', (ws) => {
      connections++;
      ws.send('[{"T":"success","msg":"connected"}]');
      ws.on('message', (data) => {
        asked.push(JSON.parse(data.toString()).action as string);
        ws.send(answer);
        ws.close();
      });
    });
    await new Promise((r) => wss.once('listening', r));
    const ingest = (stopAfterMs?: number) =>
      runCli(
        ['ingest'],
        {
          FEED: 'alpaca',
          ALPACA_API_KEY: 'AKLIMIT4C9E',
          ALPACA_API_SECRET: 'limit-secret-77a1',
          REDIS_URL: redisUrl(),
          KEY_PREFIX: uniquePrefix('alpaca-refusals'),
          ALPACA_WS_URL: `ws://127.0.0.1:${port}/v2/sip`,
          SYMBOLS: 'AIG',
        },
        30_000,
        stopAfterMs,
      );
    try {
      answer = '[{"T":"error","code":409,"msg":"insufficient subscription"}]';
      const sip = await ingest();
      expect(sip.code).toBe(2);
      expect(sip.stdout).toMatch(/\(409 insufficient subscription\).*\(use \/v2\/iex\)/);
      expect(connections).toBe(1);

      answer = '[{"T":"error","code":406,"msg":"connection limit exceeded"}]';
      const limited = await ingest(4000);
      expect(limited.stdout).toMatch(/reached its number of connections at once \(406 connection limit exceeded\).*retrying in 60 s/);
      expect(limited.code).not.toBe(2);
      expect(connections).toBe(2);
      // the login went first each time, and nothing was subscribed on a connection that was refused
      expect(asked).toEqual(['auth', 'auth']);
      for (const res of [sip, limited])
        for (const s of ['AKLIMIT4C9E', 'limit-secret-77a1']) expect(`${res.stdout}${res.stderr}`).not.toContain(s);
    } finally {
      await new Promise((r) => wss.close(r));
    }
  });

  it('a correction and a cancel: the 1min bar closed before they came gets a revision, the 1h bar still open is written with them; counted, kept on feed:corrections', async () => {
    const dir = tempDir('alpaca-corrections');
    const tape = join(dir, 'alpaca.frames');
    const t = (k: number) => new Date(Date.UTC(2021, 1, 22, 15, 51, k)).toISOString().replace('.000Z', '.123999999Z');
    const trade = (k: number) => ({ T: 't', S: 'AAPL', i: 1000 + k, x: 'V', p: 126 + k / 100, s: 10 + k, t: t(k), c: ['@'], z: 'C' });
    const correction = {
      T: 'c',
      S: 'AAPL',
      x: 'V',
      oi: 1002,
      op: 126.02,
      os: 12,
      oc: ['@'],
      ci: 1099,
      cp: 126.2,
      cs: 12,
      cc: ['@'],
      z: 'C',
      t: t(2),
    };
    const cancel = { T: 'x', S: 'AAPL', i: 1003, x: 'V', p: 126.03, s: 13, a: 'C', z: 'C', t: t(3) };
    // a trade two minutes on: the 15:51 minute closes at once (CLOCK=event), a second before the
    // closer takes the amends (AMEND_SETTLE_MS); the hour stays open to the end of the tape
    const later = { ...trade(6), i: 1006, t: '2021-02-22T15:53:10.000000000Z' };
    const frames = [
      [trade(0), trade(1), trade(2)],
      [trade(3), trade(4), trade(5), later],
      [correction, cancel],
    ];
    writeFileSync(tape, `${frames.map((f) => JSON.stringify(f)).join('\n')}\n`);
    const prefix = uniquePrefix('alpaca-corrections');
    const res = await runCli(['stack'], {
      FEED: 'alpaca',
      MODE: 'replay',
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '4000',
      REPLAY_TAPE: tape,
      SYMBOLS: 'AAPL',
      INTERVALS: '1min,1h',
      STREAM_PARTITIONS: '1',
    });
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+7\n/);
    expect(res.stdout.match(/the feed corrected or cancelled a trade it sent before: the closer applies it/g)).toHaveLength(1);
    // the 15:51 minute and the hour as the corrected trades make them (candlewick bars over them)
    const corrected = join(dir, 'corrected.jsonl');
    const fixed = [0, 1, 2, 4, 5, 6].map((k) => {
      const m = k === 6 ? later : trade(k);
      const p = k === 2 ? correction.cp : m.p;
      return JSON.stringify({ s: 'AAPL', p: String(p), v: m.s, t: Date.parse(m.t.slice(0, 23) + 'Z'), c: ['@'] });
    });
    writeFileSync(corrected, `${fixed.join('\n')}\n`);
    const oracle = tempDir('alpaca-corrections-oracle');
    const bars = await runCli(['bars', '--tape', corrected, '--out', oracle], { INTERVALS: '1min,1h', SYMBOLS: 'AAPL' });
    expect(bars.code, bars.stdout).toBe(0);
    const want = (iv: string) =>
      readFileSync(join(oracle, 'raw', iv, `AAPL_${iv}.csv`), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
    const got = (iv: string, f = `AAPL_${iv}.csv`) =>
      readFileSync(join(dir, 'raw', iv, f), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
    // the minute closed as first sent (5 + 1 trades), then its revision 1 with them applied
    expect(got('1min')[0]).toMatch(/^2021-02-22T10:51:00-05:00,126,126.05,126,126.05,[\d.]+,75,6$/);
    expect(got('1min', 'AAPL_1min.corrections.csv')).toEqual([`${want('1min')[0]},1`]);
    expect(got('1min')[1]).toBe(want('1min')[1]);
    // the hour was written once, with them
    expect(got('1h')).toEqual(want('1h'));
    expect(existsSync(join(dir, 'raw', '1h', 'AAPL_1h.corrections.csv'))).toBe(false);
    expect(res.stdout).toContain(
      'amended          1 corrections and 1 cancels received (kept in feed:corrections): 2 bars written with them (as they closed, or as a revision in .corrections.csv)',
    );
    const keys = makeKeys(prefix);
    const kept = (await redis.xrange(keys.corrections(), '-', '+')) as [string, string[]][];
    const fields = kept.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, k) => [f[2 * k], f[2 * k + 1]])));
    expect(fields.map((f) => [f.kind, f.s, JSON.parse(f.raw!), f.w])).toEqual([
      ['correction', 'AAPL', correction, String(Date.UTC(2021, 1, 22, 15, 53, 10))],
      ['cancel', 'AAPL', cancel, String(Date.UTC(2021, 1, 22, 15, 53, 10))],
    ]);
    expect(await redis.hmget(keys.stats(), 'corrections', 'cancels')).toEqual(['1', '1']);
    // the trades themselves as first sent: ids carried with their exchange, times to the ms
    const raw = await rawTrades(redis, keys.trades(0));
    expect(raw.map((e) => [e.trade.i, e.trade.t])).toEqual([
      ...[0, 1, 2, 3, 4, 5].map((k) => [`V:${1000 + k}`, Date.UTC(2021, 1, 22, 15, 51, k, 123)]),
      ['V:1006', Date.UTC(2021, 1, 22, 15, 53, 10)],
    ]);
  });
});

/**
 * An Alpaca tape with corrections and cancels built from the AIG day by the recipe in
 * test/amend-tape.ts (docs/feeds.md): the pipeline's bars, each the newest of its row and its
 * revisions, equal `candlewick bars` over the trades the amends leave — with two aggregators, with
 * one and LATE=amend, and across an ingestor kill -9.
 */
describe('FEED=alpaca: corrections and cancels against the corrected trades', () => {
  const dir = tempDir('alpaca-amend-recipe');
  const made = writeAmendedTape(LEAN_AIG_TAPE, dir);
  const oracle = tempDir('alpaca-amend-oracle');
  const env = { REPLAY_TAPE: made.frames, SYMBOLS: 'AIG', LATE_AMEND_WINDOW: '24h' };

  it('the recipe: 613 cancels and 463 corrections of the AIG day, sent 0 to 4,000 trades after their trade', async () => {
    expect([made.tape.cancels, made.tape.corrections, made.tape.corrected.length]).toEqual([
      613,
      463,
      readTape(LEAN_AIG_TAPE).length - 612,
    ]);
    const bars = await runCli(['bars', '--tape', made.corrected, '--out', oracle], { SYMBOLS: 'AIG' });
    expect(bars.code, bars.stdout).toBe(0);
  });

  const run = async (name: string, extra: Record<string, string>) => {
    const out = tempDir(`alpaca-amend-${name}`);
    const res = await runCli(
      ['stack'],
      {
        FEED: 'alpaca',
        MODE: 'replay',
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix(`alpaca-amend-${name}`),
        DATA_DIR: out,
        EXIT_WHEN_IDLE_MS: '2000',
        ...env,
        ...extra,
      },
      180_000,
    );
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    return { res, out };
  };

  it('two aggregators, two partitions: every bar as the corrected trades make it, most as revisions, some as they closed', async () => {
    const { res, out } = await run('two', { AGGREGATORS: '2', STREAM_PARTITIONS: '2' });
    expect(res.stdout).toMatch(/amended\s+463 corrections and 613 cancels received .*: (\d+) bars written with them/);
    expect(newestRows(out)).toEqual(newestRows(oracle, false));
    // what was first written differs: the amends came after most bars had closed
    expect(csvOutputs(out).get('1min/AIG_1min.csv')).not.toBe(csvOutputs(oracle).get('1min/AIG_1min.csv'));
  }, 240_000);

  it('one aggregator, LATE=amend (revisions through its corrections path): the same bars', async () => {
    const { out } = await run('late', { LATE: 'amend' });
    expect(newestRows(out)).toEqual(newestRows(oracle, false));
  }, 240_000);

  it('the closer killed -9 with bars recomputed and not written, and again with bars closed and not handed over: the same bars', async () => {
    const once = tempDir('alpaca-amend-crash-once');
    const { res, out } = await run('crash', {
      AGGREGATORS: '2',
      INGEST_BATCH: '200',
      CLOSE_EVERY_MS: '100',
      REPLAY_SPEED: '30000',
      REPLAY_SHIFT: 'false',
      CANDLEWICK_CRASH: 'amend:settle@2,close:closed@3',
      CANDLEWICK_CRASH_ONCE_DIR: once,
    });
    expect(readdirSync(once).sort()).toEqual(['amend_settle', 'close_closed']);
    expect(res.stdout.match(/role exited unexpectedly; restarting it/g)).toHaveLength(2);
    expect(newestRows(out)).toEqual(newestRows(oracle, false));
  }, 240_000);

  it('the ingestor killed -9 mid-tape and restarted (the tape and its amends sent again): the same bars', async () => {
    const { dir: out } = await stackWithIngestKilled('alpaca', env);
    expect(newestRows(out)).toEqual(newestRows(oracle, false));
  }, 240_000);
});

/**
 * Every bar file under DATA_DIR/raw as its rows stand with their newest revisions (a
 * `.corrections.csv` row, its revision dropped, in place of the row of the same window), per file.
 */
function newestRows(dataDir: string, corrections = true): Map<string, string[]> {
  const files = csvOutputs(dataDir);
  const out = new Map<string, string[]>();
  for (const [name, text] of files) {
    if (name.endsWith('.corrections.csv')) continue;
    const rows = new Map(
      text
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => [l.slice(0, l.indexOf(',')), l]),
    );
    const c = files.get(name.replace(/\.csv$/, '.corrections.csv'));
    if (corrections && c !== undefined) {
      const rev = new Map<string, number>();
      for (const l of c.trim().split('\n').slice(1)) {
        const cut = l.lastIndexOf(',');
        const key = l.slice(0, l.indexOf(','));
        const n = Number(l.slice(cut + 1));
        if ((rev.get(key) ?? -1) < n) {
          rev.set(key, n);
          rows.set(key, l.slice(0, cut));
        }
      }
    }
    out.set(
      name,
      [...rows.keys()].sort().map((k) => rows.get(k)!),
    );
  }
  return out;
}
