// Redis CPU per bar of mergeBatch (section 1 of `npm run bench`): batches of distinct symbols' trades, as a
// whole market trading every few seconds gives them (pre-aggregation folds nothing), merged into bars not
// open yet, then into bars already open — the aggregators' cost at a wide universe (docs/performance.md).
import {
  AGGREGATOR_GROUP,
  addTrades,
  addTradesArgs,
  ensureGroup,
  loadConfig,
  makeKeys,
  mergeBatch,
  mergeBatchArgs,
  type RedisClient,
  type StreamEntry,
} from '@candlewick/common';
import { BarCalendar, Preaggregator, rawEntries, type Trade } from '@candlewick/core';

/** Redis's own time in EVALSHA so far (INFO commandstats), in µs. */
async function evalUsec(redis: RedisClient): Promise<number> {
  const m = /cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(await redis.info('commandstats'));
  return m ? Number(m[1]) : 0;
}

export interface MergeCost {
  /** µs of Redis per bar a batch opens */
  opened: number;
  /** µs of Redis per bar a batch merges into (the median of the later rounds) */
  merged: number;
}

/** `symbols` symbols, one trade each per round, in batches of `batch` symbols; the five default intervals. */
export async function mergeCost(redis: RedisClient, symbols = 2000, batch = 200, rounds = 5): Promise<MergeCost> {
  const cfg = loadConfig({ INTERVALS: '1min,5min,15min,30min,1h', GRACE_MS: '3600000', KEY_PREFIX: 'bench-merge' });
  const calendar = new BarCalendar(cfg);
  const keys = makeKeys('bench-merge');
  await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
  // mid-minute, so every round's trades fall in the same windows
  const t0 = Date.parse('2024-03-04T15:00:05Z');
  const perBar: number[] = [];
  for (let round = 0; round < rounds; round++) {
    let usec = 0;
    let bars = 0;
    for (let i = 0; i < symbols; i += batch) {
      const trades: Trade[] = [];
      for (let s = i; s < Math.min(i + batch, symbols); s++)
        trades.push({
          s: `SYM${s}`,
          p: String(100 + ((s * 7 + round * 13) % 997) / 100),
          v: 1 + ((s + round) % 300),
          t: t0 + round * 6000 + s,
          c: [],
          rx: 0,
        });
      await addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: cfg.graceMs }, [], trades));
      const res = (await redis.xreadgroup('GROUP', AGGREGATOR_GROUP, 'bench', 'COUNT', 1000, 'STREAMS', keys.trades(0), '>')) as [
        string,
        StreamEntry[],
      ][];
      const entries = res[0]![1];
      const pre = new Preaggregator(calendar).run(entries.flatMap(([id, f]) => rawEntries(id, f!)));
      const before = await evalUsec(redis);
      const r = await mergeBatch(
        redis,
        keys,
        0,
        mergeBatchArgs(
          AGGREGATOR_GROUP,
          'bench',
          entries.map(([id]) => id),
          pre,
        ),
      );
      if (r.status !== 'merged') throw new Error(`mergeBatch: ${r.status}`);
      usec += (await evalUsec(redis)) - before;
      bars += pre.bars.size;
    }
    perBar.push(usec / bars);
  }
  const later = perBar.slice(1).sort((a, b) => a - b);
  return { opened: perBar[0]!, merged: later[Math.floor(later.length / 2)]! };
}
