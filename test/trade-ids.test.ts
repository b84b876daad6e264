import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import {
  AGGREGATOR_GROUP,
  ensureGroup,
  type StreamEntry,
  addTrades,
  addTradesArgs,
  readCounters,
  loadConfig,
  type AddTradesOptions,
  type BackfillAsk,
  type Keys,
} from '@candlewick/common';
import { encodeTradeEntry, type Trade } from '@candlewick/core';
import { TradeSink, alpacaTradeId } from '@candlewick/ingestor';
import { Aggregator } from '@candlewick/aggregator';
import { formatSummary, summarize } from '@candlewick/cli';
import { zeroCounters } from '@candlewick/common';
import { rawTrades, testKeys, testRedis } from './helpers.js';

/*
 * Feed trade ids and aggressor sides on the raw stream, and appends made idempotent by id for feeds
 * whose ids increase per symbol: on a real Redis, through the real script and the real sink.
 */
const redis = testRedis();
afterAll(() => redis.quit());

const T0 = Date.parse('2019-10-11T00:00:00Z');
const BTC = 'BINANCE:BTCUSDT';
const ETH = 'BINANCE:ETHUSDT';
/** A Binance trade: id `id`, its time and price following from it, sold into when the id is odd. */
const trade = (id: number, s = BTC): Trade => ({
  s,
  p: String(8000 + id),
  v: 1,
  t: T0 + id * 10,
  c: [],
  rx: T0 + id * 10 + 3,
  i: String(id),
  a: id % 2 ? 's' : 'b',
});
const range = (from: number, to: number, s = BTC) => Array.from({ length: to - from + 1 }, (_, k) => trade(from + k, s));

const base: AddTradesOptions = { clock: 'event', graceMs: 60_000 };
const append = (keys: Keys, trades: Trade[], o: Partial<AddTradesOptions> = {}, requests: BackfillAsk[] = []) =>
  addTrades(redis, keys, 0, addTradesArgs({ ...base, ...o }, requests, trades));
/** The trades of the raw stream as decoded: symbol, feed id, side, and the price (from the d line). */
const onStream = async (keys: Keys) => (await rawTrades(redis, keys.trades(0))).map((e) => [e.trade.s, e.trade.i, e.trade.a, e.trade.p]);
const expected = (trades: Trade[]) => trades.map((t) => [t.s, t.i, t.a, t.p]);
const clockField = async (keys: Keys, f: string) => Number((await redis.hget(keys.clock(0), f)) ?? 0);

/**
 * Two sinks on one feed, the second joining after the first five trades and seeing each a moment
 * after the first: together they append every trade once and count the rest as duplicates.
 */
async function twoSinks(keys: Keys, opts: ConstructorParameters<typeof TradeSink>[1], all: Trade[]): Promise<void> {
  const log = pino({ level: 'silent' });
  const one = new TradeSink(redis, opts, log);
  const two = new TradeSink(redis, opts, log);
  for (const [k, t] of all.entries()) {
    one.push(t);
    if (k >= 5) two.push(t);
    if (k % 4 === 3) await Promise.all([one.flush(), two.flush()]);
  }
  await Promise.all([one.close(), two.close()]);
  expect(one.added + two.added).toBe(all.length);
  expect(one.duplicates + two.duplicates).toBe(all.length - 5);
  expect((await onStream(keys)).sort()).toEqual(expected(all).sort());
}

describe('feed trade ids and sides on the raw stream', () => {
  it('a batch with ids and sides comes back whole, each aligned with its trade, with and without the id check', async () => {
    for (const idsIncrease of [false, true]) {
      const keys = testKeys('ids-roundtrip');
      // a trade without an id and one without a side among them
      const trades = [trade(1), { ...trade(2), i: undefined }, { ...trade(3), a: undefined }, trade(4, ETH)];
      const reply = await append(keys, trades, { idsIncrease });
      expect(reply).toMatchObject({ status: 'applied', dup: 0 });
      const [[, fields]] = (await redis.xrange(keys.trades(0), '-', '+')) as [[string, string[]]];
      expect(fields).toEqual(encodeTradeEntry(trades));
      expect(fields.slice(6)).toEqual(['i', '1\n\n3\n4', 'a', 'sb-b']);
      expect((await rawTrades(redis, keys.trades(0))).map((e) => e.trade)).toEqual(trades);
    }
  });

  it('trades dropped as already appended take their ids and sides with them: what is left stays aligned', async () => {
    const keys = testKeys('ids-aligned');
    await append(keys, [trade(2), trade(5), trade(3, ETH)], { idsIncrease: true });
    // 1, 2 and 5 of BTC are not above its 5; ETH 3 is not above ETH's 3; ETH 4 and BTC 6, 7 are new
    const batch = [trade(1), trade(6), trade(2), trade(3, ETH), trade(4, ETH), { ...trade(7), a: undefined }, trade(5)];
    expect(await append(keys, batch, { idsIncrease: true })).toMatchObject({ status: 'applied', dup: 4 });
    const entries = (await redis.xrange(keys.trades(0), '-', '+')) as [string, string[]][];
    expect(entries).toHaveLength(2);
    const kept = [trade(6), trade(4, ETH), { ...trade(7), a: undefined }];
    expect(entries[1]![1]).toEqual(['n', '3', 'rx', String(trade(1).rx), 'd', expect.any(String), 'i', '6\n4\n7', 'a', 'bb-']);
    expect(await onStream(keys)).toEqual(expected([trade(2), trade(5), trade(3, ETH), ...kept]));
    // each kept trade its own stream position, without holes: the next entry starts right after them
    const ids = (await rawTrades(redis, keys.trades(0))).map((e) => e.id);
    const [ms, seq] = entries[1]![0].split('-').map(Number) as [number, number];
    expect(ids.slice(3)).toEqual([`${ms}-${seq}`, `${ms}-${seq + 1}`, `${ms}-${seq + 2}`]);
    expect(await redis.hget(keys.clock(0), 'next')).toBe(`${ms}-${seq + 3}`);
    expect([await clockField(keys, 'in'), await clockField(keys, 'dup')]).toEqual([6, 4]);
    expect(await redis.hgetall(keys.highIds(0))).toEqual({ [BTC]: '7', [ETH]: '4' });
  });

  it('a backfill request goes with the trade it was filed for: none for a dropped trade, the kept trade its own position', async () => {
    const keys = testKeys('ids-backfill');
    const o = { idsIncrease: true, backfillHoldMs: 60_000 };
    const ask = (at: number): BackfillAsk => ({ at, floorMs: T0 - 60_000, capMs: T0 - 60_000 });
    await append(keys, range(1, 3), o, [ask(1)]);
    // a second connection's first trades: BTC 2 was appended already, ETH 4 is new
    await append(keys, [trade(2), trade(3), trade(4, ETH), trade(5)], o, [ask(1), ask(3)]);
    // each request: its symbol and the stream position of the live trade it was filed with
    const requests = ((await redis.xrange(keys.backfillRequests(0), '-', '+')) as [string, string[]][]).map(([, f]) => [
      f[f.indexOf('symbol') + 1],
      f[f.indexOf('id') + 1],
    ]);
    const stream = await rawTrades(redis, keys.trades(0));
    expect(requests).toEqual([
      [BTC, stream[0]!.id],
      [ETH, stream.find((e) => e.trade.s === ETH)!.id],
    ]);
    expect(stream.map((e) => e.trade.i)).toEqual(['1', '2', '3', '4', '5']);
  });

  it('a late trade is kept whole in trades:late, its feed id and side too', async () => {
    const keys = testKeys('ids-late');
    const cfg = loadConfig({ INTERVALS: '1min', GRACE_MS: '1000', KEY_PREFIX: keys.prefix });
    await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
    const later = { ...trade(1), t: T0 + 600_000 };
    await append(keys, [later], { graceMs: 1000, idsIncrease: true });
    // ids 2, 3 and 4 come after 1 but their event times are ten minutes older: late; 3 gave no side, 4 no id
    await append(keys, [trade(2), { ...trade(3), a: undefined }, { ...trade(4), i: undefined }, { ...later, i: '5', t: later.t + 1 }], {
      graceMs: 1000,
      idsIncrease: true,
    });
    const agg = new Aggregator(redis, cfg, keys, pino({ level: 'silent' }));
    const read = (await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, agg.consumer, 'STREAMS', keys.trades(0), '>')) as [
      string,
      StreamEntry[],
    ][];
    await agg.process(0, read[0]![1]);
    const late = ((await redis.xrange(keys.late(0), '-', '+')) as [string, string[]][]).map(([, f]) => {
      const get = (k: string) => (f.includes(k) ? f[f.indexOf(k) + 1] : undefined);
      return [get('p'), get('i'), get('a')];
    });
    expect(late).toEqual([
      [trade(2).p, '2', 'b'],
      [trade(3).p, '3', undefined],
      [trade(4).p, undefined, 'b'],
    ]);
  });

  it('a feed without ids (Finnhub) is unaffected, byte for byte, also with the id check on', async () => {
    const finnhub = (k: number): Trade => ({ s: 'AAPL', p: `17${k}.25`, v: 100, t: T0 + k, c: k % 2 ? ['1', '12'] : [], rx: T0 + k + 5 });
    const trades = Array.from({ length: 5 }, (_, k) => finnhub(k));
    for (const idsIncrease of [false, true]) {
      const keys = testKeys('ids-finnhub');
      await append(keys, trades, { idsIncrease });
      await append(keys, trades, { idsIncrease }); // sent twice: without ids nothing can tell, both land
      const entries = (await redis.xrange(keys.trades(0), '-', '+')) as [string, string[]][];
      expect(entries.map(([, f]) => f)).toEqual([encodeTradeEntry(trades), encodeTradeEntry(trades)]);
      expect(entries[0]![1].filter((_, i) => i % 2 === 0)).toEqual(['n', 'rx', 'd']);
      expect(await clockField(keys, 'in')).toBe(10);
      expect(await redis.hexists(keys.clock(0), 'dup')).toBe(0);
      expect(await redis.exists(keys.highIds(0))).toBe(0);
    }
  });

  it('ids are compared as whole numbers of any length, never as floats, leading zeros aside', async () => {
    const keys = testKeys('ids-big');
    const big = (i: string): Trade => ({ ...trade(1), i });
    // 2^53 + 1 and 2^53 + 2 are one float; 20-digit ids beyond any float's precision
    const ids = ['9007199254740993', '9007199254740994', '99999999999999999999', '100000000000000000000', '0100000000000000000001'];
    expect(await append(keys, ids.map(big), { idsIncrease: true })).toMatchObject({ dup: 0 });
    expect(
      await append(keys, ['9007199254740994', '100000000000000000001', '99999999999999999999'].map(big), { idsIncrease: true }),
    ).toMatchObject({
      dup: 3,
    });
    expect(await append(keys, ['100000000000000000002', 'not-a-number'].map(big), { idsIncrease: true })).toMatchObject({ dup: 0 });
    expect(await redis.hget(keys.highIds(0), BTC)).toBe('100000000000000000002');
    expect((await onStream(keys)).map(([, i]) => i)).toEqual([...ids, '100000000000000000002', 'not-a-number']);
  });
});

describe('appends idempotent by id (FEED=binance)', () => {
  it('two senders with overlapping ids append each id once; the rest is counted as dup', async () => {
    const keys = testKeys('ids-two');
    const a = (seq: number, trades: Trade[]) => append(keys, trades, { idsIncrease: true, sender: 'ingest-a', seq });
    const b = (seq: number, trades: Trade[]) => append(keys, trades, { idsIncrease: true, sender: 'ingest-b', seq });
    // two ingestors on one feed, each seeing every trade, their batches cut differently and interleaved
    await a(0, range(1, 4));
    await b(0, range(1, 2));
    await b(1, [...range(3, 6), ...range(1, 3, ETH)]);
    await a(1, [...range(5, 8), ...range(1, 2, ETH)]);
    await a(2, range(3, 5, ETH));
    await b(2, [...range(7, 9), ...range(4, 5, ETH)]);
    const all = [...range(1, 9), ...range(1, 5, ETH)];
    const got = await onStream(keys);
    expect(got).toHaveLength(all.length);
    expect([...got].sort()).toEqual(expected(all).sort());
    // per symbol in id order: what an aggregator folds is the feed's sequence
    for (const s of [BTC, ETH]) {
      const seen = (await rawTrades(redis, keys.trades(0))).filter((e) => e.trade.s === s).map((e) => Number(e.trade.i));
      expect(seen).toEqual([...seen].sort((x, y) => x - y));
    }
    const sent = 4 + 2 + 7 + 6 + 3 + 5;
    expect([await clockField(keys, 'in'), await clockField(keys, 'dup')]).toEqual([all.length, sent - all.length]);
  });

  it('the same batches sent again by a restarted sender (a new sender name) append nothing the second time', async () => {
    const keys = testKeys('ids-restart');
    const batches = [range(1, 5), [...range(6, 8), ...range(1, 3, ETH)]];
    for (const [seq, trades] of batches.entries()) await append(keys, trades, { idsIncrease: true, sender: 'ingest-1', seq });
    const before = await redis.xrange(keys.trades(0), '-', '+');
    // a new process: its batch numbers start at 0 again, so only the ids can tell
    for (const [seq, trades] of batches.entries())
      expect(await append(keys, trades, { idsIncrease: true, sender: 'ingest-2', seq })).toEqual({
        status: 'applied',
        entryId: '',
        dup: trades.length,
      });
    expect(await redis.xrange(keys.trades(0), '-', '+')).toEqual(before);
    expect([await clockField(keys, 'in'), await clockField(keys, 'dup')]).toEqual([11, 11]);
    // and the batch numbers moved on: its next batch, with new trades, lands
    expect(await append(keys, range(9, 10), { idsIncrease: true, sender: 'ingest-2', seq: 2 })).toMatchObject({
      status: 'applied',
      dup: 0,
    });
    expect(await onStream(keys)).toEqual(expected([...batches.flat(), ...range(9, 10)]));
  });

  it('two sinks on one feed append each trade once, count the rest, and the summary says so', async () => {
    const keys = testKeys('ids-sinks');
    const opts = { keys, partitions: 1, clock: 'event' as const, graceMs: 60_000, batch: 7, flushMs: 1, idsIncrease: true };
    const all = [...range(1, 20), ...range(1, 12, ETH)].sort((x, y) => x.t - y.t);
    await twoSinks(keys, opts, all);
    const cfg = loadConfig({ KEY_PREFIX: keys.prefix });
    const counters = await readCounters(redis, cfg, keys);
    expect([counters.in, counters.duplicates]).toEqual([all.length, all.length - 5]);
    expect(formatSummary(summarize(zeroCounters(cfg), counters, 0, 1, 0), '/data')).toMatch(
      new RegExp(`duplicates +${all.length - 5} trades dropped as already on the raw stream`),
    );
  });
});

describe('appends idempotent by id within a window (FEED=alpaca: ids unique per symbol, exchange and day, in no order)', () => {
  /** An Alpaca trade of `s` on exchange `x`: its id as the adapter carries it (`x:i`). */
  const alpaca = (i: number, x = 'N', s = 'AIG', t = T0 + (i % 7) * 10): Trade => ({
    s,
    p: String(48 + i / 100),
    v: 100,
    t,
    c: [],
    rx: t + 3,
    i: alpacaTradeId(x, i) as string,
  });
  const windowed = { idsWindowMs: 60_000 };

  it('the adapter carries the exchange with the id; what is not a whole number is left for validation to judge', () => {
    expect(alpacaTradeId('N', 52983525029461)).toBe('N:52983525029461');
    expect(alpacaTradeId('D', '7')).toBe('D:7');
    expect(alpacaTradeId(undefined, 5)).toBe(5);
    expect(alpacaTradeId('N', 1.5)).toBe(1.5);
    expect(alpacaTradeId('N', -3)).toBe(-3);
  });

  it('a trade sent again (same symbol, exchange, id and time) is dropped; the same id on another exchange, symbol or time is kept', async () => {
    const keys = testKeys('ids-window');
    // ids in no order, as Alpaca's across exchanges: 9 before 3, and 3 on two exchanges
    const first = [alpaca(9), alpaca(3), alpaca(3, 'D'), alpaca(4, 'N', 'MSFT'), { ...alpaca(5), i: undefined }];
    expect(await append(keys, first, windowed)).toMatchObject({ status: 'applied', dup: 0 });
    // again: every trade with an id dropped; the one without an id cannot be told and lands again;
    // N:3 of AIG at another time is another trade (ids restart each day), and a repeat inside one batch lands once
    const again = [...first, { ...alpaca(3), t: T0 + 86_400_000 }, alpaca(11), alpaca(11)];
    expect(await append(keys, again, windowed)).toMatchObject({ status: 'applied', dup: 5 });
    expect((await onStream(keys)).map(([s, i]) => `${s} ${i ?? '-'}`)).toEqual([
      'AIG N:9',
      'AIG N:3',
      'AIG D:3',
      'MSFT N:4',
      'AIG -',
      'AIG -',
      'AIG N:3',
      'AIG N:11',
    ]);
    expect([await clockField(keys, 'in'), await clockField(keys, 'dup')]).toEqual([8, 5]);
    // kept by (symbol, id, time), one member a trade with an id, none in the increasing feeds' hash
    expect(await redis.zcard(keys.seenIds(0))).toBe(6);
    expect(await redis.exists(keys.highIds(0))).toBe(0);
  });

  it('past the window a trade is news again, and what fell out of the window is trimmed', async () => {
    const keys = testKeys('ids-window-expiry');
    const o = { idsWindowMs: 300 };
    expect(await append(keys, [alpaca(1), alpaca(2)], o)).toMatchObject({ dup: 0 });
    expect(await append(keys, [alpaca(1)], o)).toMatchObject({ dup: 1 });
    await new Promise((r) => setTimeout(r, 450));
    expect(await append(keys, [alpaca(1), alpaca(3)], o)).toMatchObject({ dup: 0 });
    // 2 was appended more than 300 ms ago: gone from the set; 1 again and 3 are there
    expect((await redis.zrange(keys.seenIds(0), 0, -1)).map((m) => m.split('\t')[1]).sort()).toEqual(['N:1', 'N:3']);
  });

  it('two sinks on one Alpaca feed append each trade once and count the rest', async () => {
    const keys = testKeys('ids-window-sinks');
    const opts = { keys, partitions: 1, clock: 'event' as const, graceMs: 60_000, batch: 7, flushMs: 1, idsWindowMs: 60_000 };
    // ids in no order: each exchange its own numbers, interleaved
    const all = Array.from({ length: 30 }, (_, k) => alpaca(k % 2 ? 1000 - k : k, k % 3 ? 'N' : 'P', 'AIG', T0 + k));
    await twoSinks(keys, opts, all);
  });
});
