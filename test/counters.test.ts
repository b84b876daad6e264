import { afterAll, describe, expect, it } from 'vitest';
import {
  AGGREGATOR_GROUP,
  addTrades,
  addTradesArgs,
  closeBars,
  ensureGroup,
  loadConfig,
  mergeBackfill,
  mergeBatch,
  mergeBatchArgs,
  readCounters,
  zeroCounters,
  type Config,
  type Keys,
  type StreamEntry,
} from '@candlewick/common';
import { BarCalendar, Preaggregator, rawEntries, type RawEntry, type Trade } from '@candlewick/core';
import { formatSummary, summarize } from '@candlewick/cli';
import { testKeys, testRedis } from './helpers.js';

/**
 * The counters the scripts keep for what should not happen (a hold past BACKFILL_HOLD, a backfill
 * after it, a partial for a closed window, a correction for a forgotten bar): each driven through the
 * real scripts on Redis, read back by readCounters and shown in the stack summary.
 */
const redis = testRedis();
afterAll(() => redis.quit());

const M = 60_000;
const T0 = Date.parse('2024-03-05T15:00:00Z');
const GRACE = 2000;
const S = 'BINANCE:XRPETH';

const trade = (t: number, p = '1'): Trade => ({ s: S, p, v: 1, t, c: [], rx: t });

function setup(name: string, env: Record<string, string> = {}): { keys: Keys; cfg: Config } {
  const keys = testKeys(name);
  return { keys, cfg: loadConfig({ INTERVALS: '1min', GRACE_MS: String(GRACE), KEY_PREFIX: keys.prefix, ...env }) };
}

const pre = (cfg: Config) =>
  new Preaggregator(new BarCalendar(cfg), {
    amendWindowMs: cfg.late === 'amend' ? cfg.lateAmendWindowMs : 0,
  });

const close = (keys: Keys, amendWindowMs = 0) =>
  closeBars(redis, keys, 0, {
    group: AGGREGATOR_GROUP,
    graceMs: GRACE,
    clock: 'event',
    flush: false,
    retentionMs: 0,
    maxBars: 1000,
    amendWindowMs,
  });

/** Appends the trades (one batch) and merges them as an aggregator does. */
async function ingestAndMerge(keys: Keys, cfg: Config, trades: Trade[]): Promise<void> {
  await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
  await addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: GRACE }, [], trades));
  const res = (await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, 'agg', 'STREAMS', keys.trades(0), '>')) as [string, StreamEntry[]][];
  const entries = res[0]![1];
  const batch = pre(cfg).run(entries.flatMap(([id, f]) => rawEntries(id, f!)));
  const r = await mergeBatch(
    redis,
    keys,
    0,
    mergeBatchArgs(
      AGGREGATOR_GROUP,
      'agg',
      entries.map(([id]) => id),
      batch,
    ),
  );
  expect(r.status).toBe('merged');
}

/** A batch of trades as the aggregator reads them, `w` the watermark they were stamped with. */
function entries(ts: number[], w: number): RawEntry[] {
  return ts.map((t, i) => ({ id: `1-${i}`, entry: '1-0', s: S, p: '2', v: 1, t, w, c: '', rx: t }));
}

async function summary(keys: Keys, cfg: Config): Promise<string> {
  const c = await readCounters(redis, cfg, keys);
  return formatSummary(summarize(zeroCounters(cfg), c, 0, 1, 0), '/data');
}

describe('counters the scripts keep, read where they are written and shown in the summary', () => {
  it('a backfill hold past BACKFILL_HOLD (holdsExpired), and the backfill that came after it (backfillTooLate)', async () => {
    const { keys, cfg } = setup('ctr-holds');
    await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
    await ensureGroup(redis, keys.backfillRequests(0), 'bf');
    // the symbol's first trade on a connection files a backfill request and holds its bars for 1 ms
    const args = addTradesArgs(
      { clock: 'event', graceMs: GRACE, backfillHoldMs: 1 },
      [{ at: 1, floorMs: T0 - 60 * M, capMs: T0 - 60 * M }],
      [trade(T0 + 1000)],
    );
    expect((await addTrades(redis, keys, 0, args)).status).toBe('applied');
    expect(await redis.hexists(keys.holds(0), S)).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    await close(keys);
    expect(await redis.hexists(keys.holds(0), S)).toBe(0);

    const req = (await redis.xreadgroup('GROUP', 'bf', 'w1', 'STREAMS', keys.backfillRequests(0), '>')) as [string, StreamEntry[]][];
    const requestId = req[0]![1][0]![0];
    const backfilled = pre(cfg).run(entries([T0 - 5 * M, T0 - 5 * M + 1, T0 - 4 * M], 0));
    const outcome = await mergeBackfill(redis, keys, 0, {
      group: 'bf',
      consumer: 'w1',
      requestId,
      symbol: S,
      partials: backfilled.bars,
      flags: new Map(),
      used: 3,
    });
    expect(outcome).toBe('hold-expired');

    const c = await readCounters(redis, cfg, keys);
    expect(c.holdsExpired).toBe(1);
    expect(c.backfillTooLate).toBe(3);
    const text = await summary(keys, cfg);
    expect(text).toContain('backfill         1 holds past BACKFILL_HOLD');
    expect(text).toContain('3 backfilled trades or candles came after their hold, in no bar');
  });

  it('a partial for a window already closed (lateAfterClose)', async () => {
    const { keys, cfg } = setup('ctr-after-close');
    await ingestAndMerge(keys, cfg, [trade(T0 + 10_000), trade(T0 + 5 * M)]);
    expect((await close(keys)).closed).toBe(1); // 15:00 closes
    // trades of 15:00 stamped on time (a watermark that went back), merged after their window closed
    const batch = pre(cfg).run(entries([T0 + 20_000, T0 + 30_000], 0));
    expect((await mergeBatch(redis, keys, 0, mergeBatchArgs(AGGREGATOR_GROUP, 'agg', [], batch))).status).toBe('merged');

    expect((await readCounters(redis, cfg, keys)).lateAfterClose).toBe(2);
    expect(await summary(keys, cfg)).toContain('after close      2 trades for windows already closed, in no bar');
  });

  it('LATE=amend: a correction for a closed bar already forgotten (amendTooOld, counted by closeBars)', async () => {
    const { keys, cfg } = setup('ctr-amend', { LATE: 'amend', LATE_AMEND_WINDOW: '2min' });
    const amendMs = cfg.lateAmendWindowMs;
    await ingestAndMerge(keys, cfg, [trade(T0 + 10_000), trade(T0 + 10 * M)]);
    // 15:00 closes and, past LATE_AMEND_WINDOW, is forgotten in the same call
    expect((await close(keys, amendMs)).closed).toBeGreaterThan(0);
    expect(await redis.hexists(keys.closed(0), `1min|${S}|${T0}`)).toBe(0);
    // late trades for 15:00 ingested while it could still be corrected, merged only now
    const batch = pre(cfg).run(entries([T0 + 20_000, T0 + 30_000, T0 + 40_000], T0 + M + GRACE + 1000));
    expect(batch.lateBars.size).toBe(1);
    expect((await mergeBatch(redis, keys, 0, mergeBatchArgs(AGGREGATOR_GROUP, 'agg', [], batch))).status).toBe('merged');
    await close(keys, amendMs);

    const c = await readCounters(redis, cfg, keys);
    expect(c.amendTooOld).toBe(3);
    expect(c.late).toBe(3);
    expect(await summary(keys, cfg)).toContain('3 past LATE_AMEND_WINDOW, in no correction');
  });
});
