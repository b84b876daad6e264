import { afterAll, describe, expect, it } from 'vitest';
import { addTrades, addTradesArgs, makeKeys, tapTrades, type TappedBar, type TappedTrade } from '@candlewick/common';
import { readTapeTrades } from '@candlewick/common';
import { encodeTradeEntry, type Trade } from '@candlewick/core';
import { csvPath } from '@candlewick/common';
import {
  BUNDLED_TAPE,
  ingested,
  startCli,
  compareBars,
  finishCli,
  loadKlines,
  readCsv,
  redisUrl,
  rollUpKlines,
  runCli,
  tempDir,
  testRedis,
  uniquePrefix,
  waitFor,
} from './helpers.js';

/** `candlewick tap …` as a child; `lines()` is what it printed so far. */
function startTap(args: string[], env: Record<string, string>) {
  const cli = startCli(['tap', ...args], { LOG_LEVEL: 'warn', ...env });
  return { ...cli, lines: () => cli.output().stdout.split('\n').filter(Boolean) };
}

describe('tapping the streams', () => {
  const redis = testRedis();
  afterAll(() => redis.quit());

  it('a second consumer group started mid-run and the aggregators both see every trade; tap prints the closed bars', async () => {
    const prefix = uniquePrefix('tap');
    const keys = makeKeys(prefix);
    const dataDir = tempDir('tap');
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix };
    const tape = readTapeTrades(BUNDLED_TAPE);
    // a paced replay (~9 s), original trade times
    const run = runCli(
      ['stack'],
      { ...env, DATA_DIR: dataDir, EXIT_WHEN_IDLE_MS: '1500', REPLAY_SPEED: '30000', REPLAY_SHIFT: 'false' },
      180_000,
    );
    // the CLI tap of the one-minute bars, from the start of the stream
    const barsTap = startTap(['bars:1min', '--from', '0'], env);
    // the pipeline is running: trades are arriving
    await waitFor(async () => (await ingested(redis, keys)) > 0, 60_000, 'first trades');
    const auditStart = await ingested(redis, keys);
    expect(auditStart).toBeLessThan(tape.length);

    // a second group of its own, from the beginning of the stream, read with the typed reader
    const abort = new AbortController();
    const seen: string[] = [];
    const reader = (async () => {
      for await (const t of tapTrades(redis, keys, 1, { group: 'audit', from: '0', signal: abort.signal })) {
        seen.push(`${t.symbol}|${t.time}|${t.price}|${t.volume}`);
        if (seen.length === tape.length) abort.abort();
      }
    })();
    const res = await run;
    await Promise.race([reader, new Promise((r) => setTimeout(r, 20_000))]);
    abort.abort();
    await reader;
    expect(res.code, res.stdout.slice(-2000)).toBe(0);

    // the audit group saw every trade of the tape, once
    const expected = tape.map((t) => `${t.s}|${t.t}|${t.p}|${t.v}`);
    expect(seen.length).toBe(expected.length);
    expect([...seen].sort()).toEqual([...expected].sort());
    // and left nothing pending; the aggregators merged every trade and the bars are exact
    const groups = (await redis.xinfo('GROUPS', keys.trades(0))) as (string | number)[][];
    const info = new Map(groups.map((g) => [String(g[1]), g]));
    expect([...info.keys()].sort()).toEqual(['aggregator', 'audit']);
    expect(info.get('audit')![info.get('audit')!.indexOf('pending') + 1]).toBe(0);
    expect(res.stdout).toMatch(/merged\s+12477\n/);
    const { rows } = readCsv(csvPath(dataDir, '1min', 'BINANCE:XRPETH'));
    expect(compareBars(rows, rollUpKlines(loadKlines(), 1))).toEqual([]);

    // the CLI tap printed every one-minute bar the writer published, equal to the CSV's rows
    await waitFor(() => barsTap.lines().length >= rows.length, 20_000, 'tapped bars');
    const tapped = await barsTap.stop();
    expect(tapped.code, tapped.stderr).toBe(0);
    expect(tapped.ms).toBeLessThan(5000);
    const bars = tapped.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TappedBar);
    expect(bars).toHaveLength(rows.length);
    bars.forEach((b, i) => {
      const r = rows[i]!;
      expect([b.timestamp, Number(b.open), Number(b.high), Number(b.low), Number(b.close), Number(b.volume), b.trades]).toEqual([
        r.timestamp,
        r.open,
        r.high,
        r.low,
        r.close,
        r.volume,
        r.n,
      ]);
    });
  }, 240_000);

  it('tap trades --symbols filters, starts at the live end without --from, and a wrong target is a clear error', async () => {
    const prefix = uniquePrefix('tap-cli');
    const keys = makeKeys(prefix);
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix, STREAM_PARTITIONS: '2' };
    const row = (s: string, t: number) => encodeTradeEntry([{ s, p: '1.5', v: 2, t, c: [], rx: t }]);
    const { partitionOf } = await import('@candlewick/common');
    // written before the tap starts: not shown
    for (const s of ['AAA', 'BBB']) await redis.xadd(keys.trades(partitionOf(s, 2)), '*', ...row(s, 1));
    const tap = startTap(['trades', '--symbols', 'BBB'], env);
    await new Promise((r) => setTimeout(r, 1500));
    for (let i = 0; i < 5; i++) for (const s of ['AAA', 'BBB']) await redis.xadd(keys.trades(partitionOf(s, 2)), '*', ...row(s, 100 + i));
    await waitFor(() => tap.lines().length >= 5, 10_000, 'tapped trades');
    const out = await tap.stop();
    expect(out.code).toBe(0);
    const trades = out.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { symbol: string; time: number; price: string });
    expect(trades.map((t) => [t.symbol, t.time, t.price])).toEqual([0, 1, 2, 3, 4].map((i) => ['BBB', 100 + i, '1.5']));

    const bad = startTap(['bars:2min'], env);
    expect(await bad.exited).toBe(2);
    const r = await bad.stop();
    expect(r.stderr).toMatch(/"bars:2min" is not a stream to tap: use trades, or one of bars:1min, bars:5min/);
  }, 60_000);

  it('a batch is one entry, each of its trades an id of its own: reading from a trade’s id gives the trades after it, in order', async () => {
    const keys = makeKeys(uniquePrefix('tap-ids'));
    const T0 = Date.parse('2024-03-05T15:00:00Z');
    const trade = (i: number) => ({
      s: i % 2 ? 'AAA' : 'BBB',
      p: String(10 + i),
      v: 1,
      t: T0 + i,
      c: i === 3 ? ['OddLot'] : [],
      rx: T0 + i + 5,
    });
    await addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: 1000 }, [], [0, 1, 2, 3, 4].map(trade)));
    await addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: 1000 }, [], [5, 6].map(trade)));
    expect(await redis.xlen(keys.trades(0))).toBe(2);
    // reads until `want` trades came, or 3 s passed
    const read = async (from: string, want: number) => {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 3000);
      const got: TappedTrade[] = [];
      for await (const t of tapTrades(redis, keys, 1, { from, signal: abort.signal, blockMs: 100 })) {
        got.push(t);
        if (got.length === want) abort.abort();
      }
      clearTimeout(timer);
      return got;
    };
    const all = await read('0', 7);
    expect(all.map((t) => [t.symbol, t.price, t.time - T0, t.received - T0, t.conditions])).toEqual(
      [0, 1, 2, 3, 4, 5, 6].map((i) => [trade(i).s, trade(i).p, i, i + 5, trade(i).c]),
    );
    // ids: distinct, increasing, the first of each entry its entry's id
    const ids = all.map((t) => t.id);
    expect(new Set(ids).size).toBe(7);
    const n = (id: string) => id.split('-').map(Number) as [number, number];
    for (let i = 1; i < 7; i++) expect(n(ids[i]!)[0] > n(ids[i - 1]!)[0] || n(ids[i]!)[1] > n(ids[i - 1]!)[1]).toBe(true);
    const entries = (await redis.xrange(keys.trades(0), '-', '+')).map(([id]) => id);
    expect([ids[0], ids[5]]).toEqual(entries);
    // from the middle of the first entry
    expect((await read(ids[2]!, 4)).map((t) => t.id)).toEqual(ids.slice(3));
  });

  it("each trade comes with its feed's id and aggressor side where the feed gives them, none where it does not", async () => {
    const keys = makeKeys(uniquePrefix('tap-feed-ids'));
    const T0 = Date.parse('2019-10-11T00:00:00Z');
    const trade = (k: number) => ({ s: 'BINANCE:XRPETH', p: '0.0014', v: 1, t: T0 + k, c: [], rx: T0 + k });
    const args = (trades: Trade[]) => addTradesArgs({ clock: 'event', graceMs: 1000, idsIncrease: true }, [], trades);
    await addTrades(redis, keys, 0, args([{ ...trade(0), i: '13519807', a: 's' }, trade(1), { ...trade(2), i: '13519809', a: 'b' }]));
    // sent again with one new trade: only that one is tapped
    await addTrades(
      redis,
      keys,
      0,
      args([
        { ...trade(2), i: '13519809', a: 'b' },
        { ...trade(3), i: '13519810' },
      ]),
    );
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 3000);
    const got: TappedTrade[] = [];
    for await (const t of tapTrades(redis, keys, 1, { from: '0', signal: abort.signal, blockMs: 100 })) {
      got.push(t);
      if (got.length === 4) abort.abort();
    }
    clearTimeout(timer);
    expect(got.map((t) => [t.time - T0, t.feedId, t.side])).toEqual([
      [0, '13519807', 's'],
      [1, undefined, undefined],
      [2, '13519809', 'b'],
      [3, '13519810', undefined],
    ]);
    expect(['feedId' in got[1]!, 'side' in got[3]!]).toEqual([false, false]);
  });

  it("beside a running stack, tap needs no REDIS_URL: it finds the stack's private Redis from DATA_DIR", async () => {
    const dataDir = tempDir('tap-beside');
    const stack = startCli(['stack'], { DATA_DIR: dataDir, EXIT_WHEN_IDLE_MS: '0' });
    try {
      await waitFor(() => /tape finished/.test(stack.output().stdout), 60_000, 'the replay');
      expect(stack.output().stdout).toMatch(/npx candlewick tap bars:1min` finds it/);
      const res = await runCli(['tap', 'bars:1min', '--from', '0'], { DATA_DIR: dataDir, LOG_LEVEL: 'info' }, 30_000, 3000);
      expect(res.code).toBe(0);
      expect(res.stderr).toMatch(/REDIS_URL unset: using the private Redis of the stack running on DATA_DIR/);
      const rows = res.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as TappedBar);
      expect(rows.length).toBeGreaterThan(2000);
      expect(rows[0]!.symbol).toBe('BINANCE:XRPETH');

      // a tap following it when the stack is stopped ends, saying so, rather than waiting for good
      const follower = startCli(['tap', 'bars:1min'], { DATA_DIR: dataDir, LOG_LEVEL: 'info' });
      await waitFor(() => /REDIS_URL unset/.test(follower.output().stderr), 30_000, 'the tap following');
      const stopped = await stack.stop();
      expect(stopped.code).toBe(0);
      const t0 = Date.now();
      const ended = await finishCli(follower, ['tap'], 30_000);
      expect(ended.code, ended.stderr.slice(-2000)).toBe(3);
      expect(ended.stderr).toMatch(/candlewick tap: the stack stopped, nothing more will come: the stack on DATA_DIR .* is not running/);
      expect(Date.now() - t0).toBeLessThan(15_000);
    } finally {
      await stack.stop();
    }
  });
});
