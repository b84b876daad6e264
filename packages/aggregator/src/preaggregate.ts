import {
  Clock,
  WindowCache,
  barFromTrade,
  barId,
  encodeBarState,
  mergeInto,
  orderKey,
  type BarState,
  type Interval,
  type TradeEntry,
} from '@candlewick/common';

export interface Partial {
  end: number;
  state: BarState;
}

export interface Preaggregated {
  /** bar id -> partial bar */
  bars: Map<string, Partial>;
  /** entries judged late at ingestion: their window end plus grace had passed the watermark */
  late: TradeEntry[];
}

/**
 * Pure: folds a batch of raw-stream entries into one partial bar per (interval, symbol, window).
 * A trade is late when the end of its base-interval window plus grace is at or before the
 * watermark it was ingested under; a late trade goes into no interval, so every bar equals the
 * roll-up of its base bars.
 */
export class Preaggregator {
  private readonly caches: WindowCache[];
  private readonly base: WindowCache;

  constructor(
    clock: Clock,
    private readonly intervals: readonly Interval[],
    baseMs: number,
    private readonly graceMs: number,
  ) {
    this.caches = intervals.map((iv) => new WindowCache(clock, iv.ms));
    this.base = new WindowCache(clock, baseMs);
  }

  run(entries: readonly TradeEntry[]): Preaggregated {
    const bars = new Map<string, Partial>();
    const late: TradeEntry[] = [];
    for (const e of entries) {
      const { t, s, p, v } = e.trade;
      if (this.base.window(t)[1] + this.graceMs <= e.w) {
        late.push(e);
        continue;
      }
      const key = orderKey(t, e.id);
      for (let i = 0; i < this.intervals.length; i++) {
        const [start, end] = this.caches[i]!.window(t);
        const id = barId(this.intervals[i]!.name, s, start);
        const cur = bars.get(id);
        const one = barFromTrade(p, v, key);
        if (cur) mergeInto(cur.state, one);
        else bars.set(id, { end, state: one });
      }
    }
    return { bars, late };
  }
}

/** ARGV tail of mergeBatch for a pre-aggregated batch. */
export function mergeArgs(ids: readonly string[], pre: Preaggregated): string[] {
  const args: string[] = [String(ids.length), ...ids, String(pre.late.length)];
  for (const e of pre.late) {
    const tr = e.trade;
    args.push(e.id, tr.s, tr.p, String(tr.v), String(tr.t), JSON.stringify(tr.c), String(tr.rx), String(e.w), 'window-closed-at-ingestion');
  }
  args.push(String(pre.bars.size));
  for (const [id, part] of pre.bars) args.push(id, String(part.end), encodeBarState(part.state));
  return args;
}
