import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AGGREGATOR_GROUP,
  addTrades,
  addTradesArgs,
  ensureGroup,
  loadConfig,
  mergeBatch,
  mergeBatchArgs,
  type Keys,
  type StreamEntry,
} from '@candlewick/common';
import { BarCalendar, ConditionRules, decodeBarState, type Trade } from '@candlewick/core';
import { Aggregator } from '@candlewick/aggregator';
import { Preaggregator, rawEntries } from '@candlewick/core';
import { ROOT, rawTrades, testKeys, testRedis, waitFor } from './helpers.js';
import { pino } from 'pino';

const redis = testRedis();
afterAll(() => redis.quit());

const T0 = Date.parse('2019-11-03T05:50:00Z'); // spans the repeated hour of the November night
const cfg = loadConfig({ INTERVALS: '1min,5min,1h', GRACE_MS: '3600000', KEY_PREFIX: 'unused' });
const calendar = new BarCalendar(cfg);
const quiet = pino({ level: 'silent' });

const tradeArb = fc.record({
  s: fc.constantFrom('AAPL', 'BINANCE:XRPETH'),
  cents: fc.integer({ min: 1, max: 50_000 }),
  v: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.double({ min: 0, max: 10, noNaN: true })),
  // few distinct milliseconds, so ties on t are common
  dt: fc.integer({ min: 0, max: 40 }).map((k) => k * 97_531),
  // condition sets of every kind: all fields, no open/close, volume only, nothing
  c: fc.constantFrom([], [], ['Regular'], ['OutOfSequence'], ['OddLot'], ['Cash', 'FormT'], ['OfficialClose']),
});

/** Appends the trades as the ingestor does, in batches of the given sizes (one raw entry each), and reads them as `consumer`. */
async function ingest(keys: Keys, trades: Trade[], consumer = 'reader', sizes: readonly number[] = [10]): Promise<StreamEntry[]> {
  const stream = keys.trades(0);
  await ensureGroup(redis, stream, AGGREGATOR_GROUP);
  for (let i = 0, k = 0; i < trades.length; k++) {
    const n = sizes[k % sizes.length]!;
    await addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: cfg.graceMs }, [], trades.slice(i, i + n)));
    i += n;
  }
  const res = (await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, consumer, 'COUNT', 100_000, 'STREAMS', stream, '>')) as [
    string,
    StreamEntry[],
  ][];
  return res[0]![1];
}

async function openBars(keys: Keys) {
  const h = await redis.hgetall(keys.openBars(0));
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, decodeBarState(v)]));
}

function expected(entries: StreamEntry[], rules?: ConditionRules) {
  const pre = new Preaggregator(calendar, { conditions: rules }).run(entries.flatMap(([id, f]) => rawEntries(id, f!)));
  return Object.fromEntries([...pre.bars].map(([k, v]) => [k, v.state]));
}

function expectSameBars(actual: Record<string, ReturnType<typeof decodeBarState>>, want: ReturnType<typeof expected>) {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(want).sort());
  for (const [id, w] of Object.entries(want)) {
    const a = actual[id]!;
    // volume and Σp·v are exact: the same integers whatever the batches and their order
    expect(a).toEqual(w);
  }
}

/** Random batches, merged by the Lua script in a random order, equal one TypeScript fold of them all. */
async function luaAgrees(rules: () => ConditionRules | undefined): Promise<void> {
  await fc.assert(
    fc.asyncProperty(
      fc.array(tradeArb, { minLength: 1, maxLength: 120 }),
      fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }),
      fc.integer(),
      async (raw, sizes, seed) => {
        const keys = testKeys('lua');
        const trades: Trade[] = raw.map((r) => ({ s: r.s, p: String(r.cents / 100), v: r.v, t: T0 + r.dt, c: r.c, rx: 0 }));
        // ingested in batches of the given sizes, each a raw entry; merged in pairs of entries, in a seed-determined order
        const entries = await ingest(keys, trades, 'reader', sizes);
        const batches: StreamEntry[][] = [];
        for (let i = 0; i < entries.length; i += 2) batches.push(entries.slice(i, i + 2));
        const order = batches.map((_, i) => i).sort((a, b) => ((a * 7919 + seed) % 13) - ((b * 7919 + seed) % 13));
        for (const i of order) {
          const b = batches[i]!;
          const pre = new Preaggregator(calendar, { conditions: rules() }).run(b.flatMap(([id, f]) => rawEntries(id, f!)));
          const res = await mergeBatch(
            redis,
            keys,
            0,
            mergeBatchArgs(
              AGGREGATOR_GROUP,
              'reader',
              b.map(([id]) => id),
              pre,
            ),
          );
          expect(res.status).toBe('merged');
        }
        expectSameBars(await openBars(keys), expected(entries, rules()));
        expect(((await redis.xpending(keys.trades(0), AGGREGATOR_GROUP)) as unknown[])[0]).toBe(0);
      },
    ),
    { numRuns: 40 },
  );
}

describe('mergeBatch (Lua) agrees with the TypeScript merge', () => {
  it('on random batches applied in random order', () => luaAgrees(() => undefined));

  it('with CONDITIONS=cta-utp: partials without an open/close or without extremes merge the same way', () =>
    luaAgrees(() => new ConditionRules()));
});

describe("mergeState's exact sums (Lua)", () => {
  const include = readFileSync(join(ROOT, 'packages/common/lua/includes/mergeState.lua'), 'utf8');
  const addAll = `${include}\nlocal out = {}\nfor i = 1, #ARGV, 2 do out[#out + 1] = addDec(ARGV[i], ARGV[i + 1]) end\nreturn out`;

  it('add decimal integers of every length across the fast paths (15/16 and 28/29 digits) and carries', async () => {
    const digits = fc.integer({ min: 1, max: 45 }).chain((n) =>
      fc.oneof(
        fc.stringMatching(new RegExp(`^[1-9][0-9]{${n - 1}}$`)),
        // nines force carries across every chunk
        fc.constant('9'.repeat(n)),
      ),
    );
    // low chunks summing to exactly 10^14 carry one
    const half = '5' + '0'.repeat(13);
    const edges: [string, string][] = [
      [`10${half}`, `10${half}`],
      [`1${'0'.repeat(13)}${half}`, half],
      [`1${'0'.repeat(27)}${half}`, `2${'0'.repeat(27)}${half}`],
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.oneof(digits, fc.constant('0')), fc.oneof(digits, fc.constant('0'))), { minLength: 1, maxLength: 50 }),
        async (pairs) => {
          const all = [...edges, ...pairs];
          const got = (await redis.eval(addAll, 0, ...all.flat())) as string[];
          expect(got).toEqual(all.map(([a, b]) => String(BigInt(a) + BigInt(b))));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('exactly once when workers race on a reclaimed batch', () => {
  it('a worker that lost part of its batch to another merges only the rest', async () => {
    const keys = testKeys('race');
    const trades: Trade[] = Array.from({ length: 500 }, (_, i) => ({
      s: i % 3 ? 'AAPL' : 'MSFT',
      p: String(100 + (i % 17) / 4),
      v: 1 + (i % 5),
      t: T0 + i * 731,
      c: [],
      rx: 0,
    }));
    const slow = new Aggregator(redis, cfg, keys, quiet.child({ w: 'slow' }));
    const fast = new Aggregator(redis, cfg, keys, quiet.child({ w: 'fast' }));
    const entries = await ingest(keys, trades, slow.consumer); // all pending for the slow worker
    // The fast worker reclaims a middle part of the slow worker's pending batch and merges it first.
    const stolen = (await redis.xclaim(
      keys.trades(0),
      AGGREGATOR_GROUP,
      fast.consumer,
      0,
      ...entries.slice(10, 30).map(([id]) => id),
    )) as StreamEntry[];
    expect(stolen).toHaveLength(20); // 200 trades, in batches of 10
    await fast.process(0, stolen);
    // Now the slow worker finishes its whole batch: the 200 already merged must not count again.
    await slow.process(0, entries);
    expectSameBars(await openBars(keys), expected(entries));
    const stats = await redis.hgetall(keys.partitionStats(0));
    expect(Number(stats.merged)).toBe(500);
    expect(((await redis.xpending(keys.trades(0), AGGREGATOR_GROUP)) as unknown[])[0]).toBe(0);
    // And running the same batch once more changes nothing.
    await slow.process(0, entries);
    expect(Number((await redis.hgetall(keys.partitionStats(0))).merged)).toBe(500);
    expectSameBars(await openBars(keys), expected(entries));
  });
});

describe('a dead worker', () => {
  it('has its pending entries reclaimed by a live one within a bounded time, each counted once', async () => {
    const keys = testKeys('reclaim');
    const trades: Trade[] = Array.from({ length: 300 }, (_, i) => ({
      s: 'AAPL',
      p: String(50 + (i % 9)),
      v: 2,
      t: T0 + i * 997,
      c: [],
      rx: 0,
    }));
    const entries = await ingest(keys, trades, 'dead-worker'); // read, never merged: the worker "died"
    const liveCfg = loadConfig({ INTERVALS: '1min,5min,1h', GRACE_MS: '3600000', RECLAIM_IDLE_MS: '300', KEY_PREFIX: keys.prefix });
    const live = new Aggregator(redis, liveCfg, keys, quiet);
    const started = Date.now();
    await live.start();
    try {
      await waitFor(async () => Number(await redis.hget(keys.partitionStats(0), 'merged')) === 300, 10_000, 'reclaimed entries merged');
      // bounded: idle threshold plus one reclaim period, with slack for a loaded machine
      expect(Date.now() - started).toBeLessThan(300 + 150 + 3000);
      expectSameBars(await openBars(keys), expected(entries));
      expect(((await redis.xpending(keys.trades(0), AGGREGATOR_GROUP)) as unknown[])[0]).toBe(0);
    } finally {
      await live.stop();
    }
  });
});

describe('addTrades applies each batch once, in order', () => {
  const trade = (t: number): Trade => ({ s: 'AAPL', p: '10.5', v: 3, t: T0 + t, c: [], rx: T0 + t });
  const batch = (seq: number, ts: number[], sender = 'ingestor-a', force = false) =>
    addTradesArgs({ clock: 'event', graceMs: cfg.graceMs, sender, seq, force }, [], ts.map(trade));

  it('a batch resent after its reply was lost (a Redis restart) is not appended twice; a later batch is', async () => {
    const keys = testKeys('resend');
    const first = await addTrades(redis, keys, 0, batch(0, [1, 2, 3]));
    expect(first.status).toBe('applied');
    expect(await addTrades(redis, keys, 0, batch(0, [1, 2, 3]))).toEqual({ status: 'duplicate', applied: 0 });
    expect(await rawTrades(redis, keys.trades(0))).toHaveLength(3);
    expect((await addTrades(redis, keys, 0, batch(1, [4, 5]))).status).toBe('applied');
    // an older batch arriving after a newer one is a resend too
    expect((await addTrades(redis, keys, 0, batch(0, [1, 2, 3]))).status).toBe('duplicate');
    expect(await rawTrades(redis, keys.trades(0))).toHaveLength(5);
    expect(await redis.hget(keys.clock(0), 'in')).toBe('5');
    // another sender's batch 0 is its own
    expect((await addTrades(redis, keys, 0, batch(0, [6], 'ingestor-b'))).status).toBe('applied');
    expect(await rawTrades(redis, keys.trades(0))).toHaveLength(6);
  });

  it('a batch after a hole (Redis lost acknowledged batches) is refused until the lost ones come again; "force" skips a hole for good', async () => {
    const keys = testKeys('hole');
    expect((await addTrades(redis, keys, 0, batch(0, [1]))).status).toBe('applied');
    // batches 1 and 2 were acknowledged, then lost with Redis's last second: 3 must not go first
    expect(await addTrades(redis, keys, 0, batch(3, [4]))).toEqual({ status: 'hole', applied: 0 });
    expect(await rawTrades(redis, keys.trades(0))).toHaveLength(1);
    for (const [seq, t] of [
      [1, 2],
      [2, 3],
      [3, 4],
    ] as const)
      expect((await addTrades(redis, keys, 0, batch(seq, [t]))).status).toBe('applied');
    const ts = (await rawTrades(redis, keys.trades(0))).map((e) => e.trade.t - T0);
    expect(ts).toEqual([1, 2, 3, 4]);
    // a sender that no longer holds batches 4..5 applies 6 anyway, and says so (the sink's account)
    expect((await addTrades(redis, keys, 0, batch(6, [7]))).status).toBe('hole');
    expect((await addTrades(redis, keys, 0, batch(6, [7], 'ingestor-a', true))).status).toBe('applied');
    expect((await addTrades(redis, keys, 0, batch(7, [8]))).status).toBe('applied');
    expect(await rawTrades(redis, keys.trades(0))).toHaveLength(6);
  });
});
