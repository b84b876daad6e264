import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import type { Trade } from '@candlewick/core';
import { barFromTrade, encodeBarState, orderKey } from '@candlewick/core';
import { loadConfig, monoMs, parseBarsJob, redisLink } from '@candlewick/common';
import { TradeSink } from '@candlewick/ingestor';
import { WriterService } from '@candlewick/writer';
import { watchEpoch } from '@candlewick/cli';
import { tempDir, testKeys, testRedis, waitFor } from './helpers.js';

/**
 * A step of this host's clock (NTP, `date -s`, a resumed VM) an hour either way: what is compared
 * with Redis's time (backfill holds, stream trims) is Redis's, and what is timed (the data marker's
 * checks, the replica checks) is on the monotonic clock. Unit-level, each against the test Redis: a
 * real process whose clock steps is the fault campaign's ("ingestor clock −1 h", "closer clock ±1 h").
 */
const redis = testRedis();
afterAll(() => redis.quit());
const quiet = pino({ level: 'silent' });
const HOUR = 3_600_000;

/** Redis's time now (ms), read from Redis. */
async function redisMs(): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** This process's clock against Redis's read as watchRedis reads it, then this host's clock stepped by `ms`. */
async function stepClock(ms: number): Promise<void> {
  const sent = monoMs();
  const at = await redisMs();
  const rtt = monoMs() - sent;
  redisLink.clockReading(at, Date.now() - rtt / 2, sent + rtt / 2);
  const real = Date.now.bind(Date);
  vi.spyOn(Date, 'now').mockImplementation(() => real() + ms);
}
afterEach(() => vi.restoreAllMocks());

const trade = (i: number): Trade => ({
  s: 'AAPL',
  p: String(100 + i),
  v: 1,
  t: Date.parse('2024-03-05T15:00:00Z') + i,
  c: [],
  rx: Date.now(),
});

describe('a step of this host’s clock', () => {
  it("a backfill hold's deadline is Redis's time plus BACKFILL_HOLD (compared in Lua with TIME), an hour back or not", async () => {
    const keys = testKeys('step-hold');
    const sink = new TradeSink(
      redis,
      {
        keys,
        partitions: 1,
        clock: 'wall',
        graceMs: 2000,
        batch: 10,
        flushMs: 1,
        backfill: { holdMs: 60_000, maxSpanMs: HOUR, floor: (_s, t) => t },
      },
      quiet,
    );
    await stepClock(-HOUR);
    await sink.hold(['AAPL']);
    const deadline = Number(await redis.hget(keys.holds(0), 'AAPL'));
    expect(Math.abs(deadline - (await redisMs()) - 60_000)).toBeLessThan(1000);
    await sink.close();
  });

  it("feed:corrections is trimmed to TRADES_RETENTION by Redis's time: an hour ahead keeps what it must", async () => {
    const keys = testKeys('step-corrections');
    const sink = new TradeSink(
      redis,
      { keys, partitions: 1, clock: 'wall', graceMs: 2000, batch: 10, flushMs: 1, tradesRetentionMs: 600_000 },
      quiet,
    );
    await sink.amends([{ kind: 'correction', symbol: 'AAPL', event: { n: 1 } }], Date.now());
    await stepClock(HOUR);
    await sink.amends([{ kind: 'cancel', symbol: 'AAPL', event: { n: 2 } }], Date.now());
    expect(await redis.xlen(keys.corrections())).toBe(2);
    await sink.close();
  });

  it('the replica check (WAIT) after a step back comes within CONFIRM_EVERY_MS, not an hour later', async () => {
    const keys = testKeys('step-confirm');
    const pipeline = vi.spyOn(redis, 'pipeline');
    const sink = new TradeSink(redis, { keys, partitions: 1, clock: 'wall', graceMs: 2000, batch: 1, flushMs: 1 }, quiet);
    sink.push(trade(1));
    await sink.flush();
    await waitFor(() => pipeline.mock.calls.length === 1, 2000, 'the first check');
    await stepClock(-HOUR);
    await new Promise((r) => setTimeout(r, 300));
    sink.push(trade(2));
    await sink.flush();
    await waitFor(() => pipeline.mock.calls.length >= 2, 2000, 'a check after the step');
    await sink.close();
  });

  it("the writer trims bars:{interval} to BARS_RETENTION by Redis's time: an hour ahead trims nothing recent", async () => {
    const keys = testKeys('step-trim');
    const cfg = loadConfig({ DATA_DIR: tempDir('step-trim'), KEY_PREFIX: keys.prefix, BARS_RETENTION: '10m' });
    const w = new WriterService(redis, cfg, keys, quiet);
    const start = Date.parse('2024-03-05T15:00:00Z');
    const job = (i: number) =>
      parseBarsJob({
        bars: [
          {
            interval: '1min',
            symbol: 'AAPL',
            start: start + i * 60_000,
            state: encodeBarState(barFromTrade('100', 1, orderKey(start, '1-0'))),
          },
        ],
      });
    await w.processBatch(job(0));
    await stepClock(HOUR);
    await w.processBatch(job(1));
    expect(await redis.xlen(keys.bars('1min'))).toBe(2);
  });

  it("the stack's check of the data marker goes on each second after a step back", async () => {
    const keys = testKeys('step-epoch');
    const marker = await watchEpoch(redis, keys, quiet);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await marker.check()).toBe('held');
    await stepClock(-HOUR);
    await redis.del(keys.epoch());
    await new Promise((r) => setTimeout(r, 1100));
    expect(await marker.check()).toBe('lost');
  });
});
