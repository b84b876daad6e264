import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Trade } from '@candlewick/core';
import { TradeSink } from '@candlewick/ingestor';
import { rawTrades, testKeys, testRedis, waitFor } from './helpers.js';

const redis = testRedis();
afterAll(() => redis.quit());

const T0 = Date.parse('2024-03-05T15:00:00Z');
const trade = (i: number): Trade => ({ s: 'AAPL', p: String(100 + i), v: 1, t: T0 + i * 1000, c: [], rx: T0 + i });

/** Redis "loses" its last `batches` raw entries (`trades` trades) and the batch numbers that appended them, as a kill between two fsyncs would. */
async function loseLast(keys: ReturnType<typeof testKeys>, batches: number, trades: number, lastBatchKept: number): Promise<void> {
  const top = (await redis.xrevrange(keys.trades(0), '+', '-', 'COUNT', batches)) as [string, string[]][];
  await redis.xdel(keys.trades(0), ...top.map(([id]) => id));
  const field = (await redis.hkeys(keys.clock(0))).find((k) => k.startsWith('batch:'))!;
  await redis.hset(keys.clock(0), field, String(lastBatchKept));
  await redis.hincrby(keys.clock(0), 'in', -trades);
}

/** The event times on the raw stream, in stream order (seconds after T0). */
async function streamTimes(keys: ReturnType<typeof testKeys>): Promise<number[]> {
  return (await rawTrades(redis, keys.trades(0))).map((e) => (e.trade.t - T0) / 1000);
}

function logLines(): { lines: string[]; log: pino.Logger } {
  const lines: string[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (l: string) => lines.push(l) }) };
}

describe('the ingestor sink when Redis loses batches it acknowledged', () => {
  it('notices at the next batch and sends the lost ones again, in order, each once', async () => {
    const keys = testKeys('sink-resend');
    const { lines, log } = logLines();
    const sink = new TradeSink(redis, { keys, partitions: 1, clock: 'event', graceMs: 2000, batch: 10, flushMs: 1, retainMs: 60_000 }, log);
    for (let i = 1; i <= 30; i++) sink.push(trade(i));
    await sink.flush();
    expect(await streamTimes(keys)).toHaveLength(30);
    // Redis restarted without its last writes: batches 1 and 2 (trades 11-30) are gone
    await loseLast(keys, 2, 20, 0);
    for (let i = 31; i <= 40; i++) sink.push(trade(i));
    await sink.flush();
    await waitFor(async () => (await streamTimes(keys)).length === 40, 5000, 'the lost batches sent again');
    expect(await streamTimes(keys)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(await redis.hget(keys.clock(0), 'in')).toBe('40');
    expect(sink.lost.trades).toBe(0);
    expect(lines.join('')).toMatch(/Redis does not have batches it acknowledged/);
    expect((await sink.close()).trades).toBe(0);
  });

  it('batches older than it keeps are accounted for exactly: counted, said, recorded as a gap, and the rest goes on', async () => {
    const keys = testKeys('sink-lost');
    const { lines, log } = logLines();
    const sink = new TradeSink(redis, { keys, partitions: 1, clock: 'event', graceMs: 2000, batch: 10, flushMs: 1, retainMs: 0 }, log);
    for (let i = 1; i <= 30; i++) sink.push(trade(i));
    await sink.flush();
    await new Promise((r) => setTimeout(r, 20));
    await loseLast(keys, 2, 20, 0);
    for (let i = 31; i <= 40; i++) sink.push(trade(i));
    await sink.flush();
    await waitFor(async () => (await streamTimes(keys)).length === 20, 5000, 'the batch after the hole applied');
    await new Promise((r) => setTimeout(r, 100));
    expect(await streamTimes(keys)).toEqual([
      ...Array.from({ length: 10 }, (_, i) => i + 1),
      ...Array.from({ length: 10 }, (_, i) => i + 31),
    ]);
    expect(sink.lost).toEqual({ trades: 20, firstRx: T0 + 11, lastRx: T0 + 30 });
    expect(lines.join('')).toMatch(/Redis lost batches of trades it had acknowledged/);
    const gaps = (await redis.xrange(keys.gaps(), '-', '+')) as [string, string[]][];
    expect(gaps).toHaveLength(1);
    const f = gaps[0]![1];
    expect([f[f.indexOf('start') + 1], f[f.indexOf('end') + 1], f[f.indexOf('reason') + 1]]).toEqual([
      String(T0 + 11),
      String(T0 + 30),
      'redis lost acknowledged trades',
    ]);
    await sink.close();
  });
});

describe("the ingestor sink and a feed's corrections and cancels", () => {
  it('counts them per kind, keeps each as received on feed:corrections with the watermark it came under (trimmed to TRADES_RETENTION), says so once', async () => {
    const keys = testKeys('sink-amends');
    const { lines, log } = logLines();
    const sink = new TradeSink(
      redis,
      { keys, partitions: 1, clock: 'event', graceMs: 2000, batch: 10, flushMs: 1, tradesRetentionMs: 200 },
      log,
    );
    const correction = { T: 'c', S: 'AAPL', oi: 1, op: 1.5, os: 10, ci: 2, cp: 1.6, cs: 10, t: '2021-02-22T15:51:44.208Z' };
    const cancel = { T: 'x', S: 'MSFT', i: 3, p: 2.5, s: 5, a: 'C', t: '2021-02-22T15:51:45.000Z' };
    // CLOCK=event: an amend comes under the highest trade time taken before it
    const t0 = Date.UTC(2021, 1, 22, 15, 51, 44, 208);
    sink.push({ s: 'AAPL', p: '1.5', v: 10, t: t0, c: [], rx: Date.now() });
    await sink.flush();
    await sink.amends([{ kind: 'correction', symbol: 'AAPL', event: correction }], Date.now());
    sink.push({ s: 'MSFT', p: '2.5', v: 5, t: t0 + 792, c: [], rx: Date.now() });
    await sink.amends(
      [
        { kind: 'cancel', symbol: 'MSFT', event: cancel },
        { kind: 'correction', symbol: 'AAPL', event: correction },
      ],
      Date.now(),
    );
    expect(sink.amended).toEqual({ correction: 2, cancel: 1 });
    expect(await redis.hmget(keys.stats(), 'corrections', 'cancels')).toEqual(['2', '1']);
    const kept = (await redis.xrange(keys.corrections(), '-', '+')) as [string, string[]][];
    expect(kept.map(([, f]) => [f[1], f[3], JSON.parse(f[5]!), f[9]])).toEqual([
      ['correction', 'AAPL', correction, String(t0)],
      ['cancel', 'MSFT', cancel, String(t0 + 792)],
      ['correction', 'AAPL', correction, String(t0 + 792)],
    ]);
    expect(lines.filter((l) => l.includes('the feed corrected or cancelled a trade it sent before: the closer applies it'))).toHaveLength(
      1,
    );
    // past TRADES_RETENTION, the older entries go with the next one kept
    await new Promise((r) => setTimeout(r, 300));
    await sink.amends([{ kind: 'cancel', symbol: 'MSFT', event: cancel }], Date.now());
    expect(await redis.xlen(keys.corrections())).toBe(1);
    expect(await redis.hmget(keys.stats(), 'corrections', 'cancels')).toEqual(['2', '2']);
    await sink.close();
  });
});
