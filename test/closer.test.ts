import { afterAll, describe, expect, it } from 'vitest';
import { AGGREGATOR_GROUP, addTrades, addTradesArgs, closeBars, decodeOutboxEntries, loadConfig, type Keys } from '@candlewick/common';
import { parseBarId } from '@candlewick/core';
import { ensureGroup } from '@candlewick/common';
import { testKeys, testRedis } from './helpers.js';
import type { Redis } from 'ioredis';

const redis = testRedis();
const other = testRedis();
afterAll(async () => {
  await redis.quit();
  await other.quit();
});

const M = 60_000;
const T0 = Date.parse('2024-03-05T15:00:00Z');

function close(conn: Redis, keys: Keys, graceMs: number) {
  return closeBars(conn, keys, 0, {
    group: AGGREGATOR_GROUP,
    graceMs,
    clock: 'event',
    flush: false,
    retentionMs: 0,
    maxBars: 7,
    amendWindowMs: 0,
  });
}

describe('closeBars', () => {
  it('closes each interval at its own boundary, and two closers racing never close a bar twice', async () => {
    const keys = testKeys('closers');
    const cfg = loadConfig({ INTERVALS: '1min,5min', KEY_PREFIX: keys.prefix });
    await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
    // open bars for 12 minutes of two symbols, as the aggregator leaves them
    for (const s of ['AAA', 'BBB']) {
      for (let m = 0; m < 12; m++) {
        for (const iv of cfg.intervals) {
          const start = Math.floor((T0 + m * M) / iv.ms) * iv.ms;
          const id = `${iv.name}|${s}|${start}`;
          await redis.hset(keys.openBars(0), id, `1|k|1|1|1|k|1|1|1`);
          await redis.zadd(keys.openIndex(0), start + iv.ms, id);
        }
      }
    }
    const grace = 2000;
    const closedAt = new Map<string, number>();
    // the watermark walks forward a second at a time; two closers on two connections race at each step
    for (let wm = T0; wm <= T0 + 12 * M + grace; wm += 1000) {
      await redis.hset(keys.clock(0), 'wm', String(wm));
      const calls = await Promise.all([close(redis, keys, grace), close(other, keys, grace), close(redis, keys, grace)]);
      const rows = (await redis.xrange(keys.outbox(0), '-', '+')) as [string, string[]][];
      // the bars of one call are one outbox entry
      expect(rows.map(([, f]) => decodeOutboxEntries(f).length).sort()).toEqual(
        calls
          .map((c) => c.closed)
          .filter((n) => n > 0)
          .sort(),
      );
      for (const [, f] of rows) {
        for (const b of decodeOutboxEntries(f)) {
          const id = `${b.interval}|${b.symbol}|${b.start}`;
          expect(closedAt.has(id)).toBe(false); // never twice
          closedAt.set(id, wm);
        }
      }
      if (rows.length) await redis.xdel(keys.outbox(0), ...rows.map(([x]) => x));
    }
    // per symbol: 12 one-minute bars and the 15:00 and 15:05 five-minute bars; 15:10-15:15 is still open
    expect(closedAt.size).toBe(2 * (12 + 2));
    for (const [id, wm] of closedAt) {
      const { interval, start } = parseBarId(id);
      const end = start + (interval === '5min' ? 5 * M : M);
      // closed on the first watermark step at or past end + grace
      expect(wm).toBe(end + grace);
    }
    expect((await redis.hkeys(keys.openBars(0))).sort()).toEqual([`5min|AAA|${T0 + 10 * M}`, `5min|BBB|${T0 + 10 * M}`]);
  });

  it('keeps a window open while an entry ingested before the watermark passed it is still pending', async () => {
    const keys = testKeys('backlog');
    const stream = keys.trades(0);
    await ensureGroup(redis, stream, AGGREGATOR_GROUP);
    // one trade at 15:00:30, then the watermark jumps far ahead with a later trade
    await addTrades(
      redis,
      keys,
      0,
      addTradesArgs(
        { clock: 'event', graceMs: 2000 },
        [],
        [
          { s: 'AAA', p: '10', v: 1, t: T0 + 30_000, c: [], rx: 0 },
          { s: 'AAA', p: '11', v: 1, t: T0 + 10 * M, c: [], rx: 0 },
        ],
      ),
    );
    await redis.hset(keys.openBars(0), `1min|AAA|${T0}`, '1|k|1|1|1|k|1|1|1');
    await redis.zadd(keys.openIndex(0), T0 + M, `1min|AAA|${T0}`);
    // the aggregator has read both entries but not merged them (a backlog)
    await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, 'slow', 'COUNT', 10, 'STREAMS', stream, '>');
    for (let i = 0; i < 3; i++) expect((await close(redis, keys, 2000)).closed).toBe(0);
    expect(await redis.xlen(keys.outbox(0))).toBe(0);
    // once they are acknowledged (merged), the window closes
    const pending = (await redis.xpending(stream, AGGREGATOR_GROUP, '-', '+', 10)) as [string][];
    await redis.xack(stream, AGGREGATOR_GROUP, ...pending.map((p) => p[0]));
    expect((await close(redis, keys, 2000)).closed).toBe(1);
  });
});
