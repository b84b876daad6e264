import type { Keys } from './keys.js';
import { partitionOf } from './keys.js';
import { duplicateRedis, ioredis, type RedisClient } from './redis.js';
import { decodeTradeEntries, type Trade } from '@candlewick/core';
import { decodeBarEntry, type TappedBar } from './entries.js';

/**
 * A typed reader of candlewick's streams for other services: the raw trades (`trades:{p}`) and the
 * closed bars (`bars:{interval}`). Without a group it reads with XREAD from `from` (default `$`,
 * only what arrives from now on) and leaves no trace in Redis; with a group it is a consumer
 * group of its own (created at `from` if new), so it resumes where it stopped and acknowledges an
 * entry once the caller asks for the next one (at least once). Neither disturbs the aggregators.
 * Entries older than the retention (TRADES_RETENTION, BARS_RETENTION) are trimmed whatever a tap
 * has read.
 */
export interface TapOptions {
  /** `$` (default): from now on; `0`: everything retained; or an id (a trade's: the trades after it) */
  from?: string;
  /** only these symbols (trades: only the partitions that hold them are read) */
  symbols?: readonly string[];
  /** a consumer group of its own; without it, plain XREAD */
  group?: string;
  /** consumer name inside the group (default: tap-{pid}) */
  consumer?: string;
  /** stops the reader (it returns within blockMs) */
  signal?: AbortSignal;
  /** entries per read (default 500) */
  count?: number;
  /** longest wait of one read (default 1000 ms) */
  blockMs?: number;
}

/** A trade as the ingestor appended it. */
export interface TappedTrade {
  /** its stream position (ms-seq: the time Redis appended its batch, and its place in it) */
  id: string;
  partition: number;
  symbol: string;
  /** price as received, a decimal string */
  price: string;
  volume: number;
  /** event time, ms since the epoch */
  time: number;
  /** trade conditions as received */
  conditions: readonly string[];
  /** when the ingestor received it, ms since the epoch */
  received: number;
  /** the feed's own id of the trade, where the feed gives one (Binance, Alpaca, Massive) */
  feedId?: string;
  /** the aggressor side, where the feed gives it: b = a buyer took an offer, s = a seller hit a bid */
  side?: 'b' | 's';
}

type Entry = [id: string, fields: string[]];
type ReadReply = [stream: string, entries: Entry[]][] | null;

/** Raw entries of `streams`, oldest first per stream. */
async function* readStreams(
  redis: RedisClient,
  streams: readonly string[],
  opts: TapOptions,
): AsyncGenerator<[stream: string, entry: Entry]> {
  const conn = duplicateRedis(redis);
  const count = opts.count ?? 500;
  const blockMs = opts.blockMs ?? 1000;
  const group = opts.group;
  const consumer = opts.consumer ?? `tap-${process.pid}`;
  // A Cluster cannot read streams of different slots in one command: read them in turn without
  // blocking, resting briefly when all are quiet.
  const oneCall = streams.length === 1 || !(conn instanceof ioredis().Cluster);
  const last = new Map<string, string>();
  // a group consumer first takes back what it read and did not acknowledge before it stopped
  let backlog = group !== undefined;
  // a blocked read (or one waiting for Redis to come back) ends at once when the tap is stopped;
  // between reads the connection stays up to acknowledge what the caller has taken
  let reading = false;
  const stop = () => {
    if (reading) conn.disconnect();
  };
  opts.signal?.addEventListener('abort', stop, { once: true });
  try {
    if (group) {
      for (const s of streams) {
        await conn.xgroup('CREATE', s, group, opts.from ?? '$', 'MKSTREAM').catch((err: Error) => {
          if (!/BUSYGROUP/.test(err.message)) throw err;
        });
      }
    } else if ((opts.from ?? '$') === '$') {
      // XREAD from "$" per call would skip what arrives between two calls: pin the current end
      for (const s of streams) {
        const top = (await conn.xrevrange(s, '+', '-', 'COUNT', 1)) as Entry[];
        last.set(s, top[0]?.[0] ?? '0-0');
      }
    } else {
      for (const s of streams) last.set(s, opts.from!);
    }
    while (!opts.signal?.aborted) {
      const read = (list: readonly string[], block: boolean): Promise<ReadReply> => {
        const blockArgs = block ? ['BLOCK', blockMs] : [];
        const args = group
          ? ['GROUP', group, consumer, 'COUNT', count, ...blockArgs, 'STREAMS', ...list, ...list.map(() => (backlog ? '0' : '>'))]
          : ['COUNT', count, ...blockArgs, 'STREAMS', ...list, ...list.map((s) => last.get(s)!)];
        return conn.call(group ? 'XREADGROUP' : 'XREAD', ...args) as Promise<ReadReply>;
      };
      let replies: [string, Entry[]][] = [];
      reading = true;
      try {
        if (oneCall) replies = (await read(streams, true)) ?? [];
        else for (const s of streams) replies.push(...((await read([s], false)) ?? []));
      } catch (err) {
        if (opts.signal?.aborted) break;
        throw err;
      } finally {
        reading = false;
      }
      let got = 0;
      for (const [stream, entries] of replies) {
        for (const entry of entries) {
          got++;
          last.set(stream, entry[0]);
          yield [stream, entry];
        }
        // the caller has taken every entry of this reply: acknowledge them
        if (group && entries.length) await conn.xack(stream, group, ...entries.map(([id]) => id));
      }
      if (backlog && got === 0) backlog = false;
      else if (!oneCall && got === 0) await new Promise((r) => setTimeout(r, Math.min(100, blockMs)));
    }
  } finally {
    opts.signal?.removeEventListener('abort', stop);
    conn.disconnect();
  }
}

/** The raw trade stream, all partitions (or those of `opts.symbols`). */
export async function* tapTrades(redis: RedisClient, keys: Keys, partitions: number, opts: TapOptions = {}): AsyncGenerator<TappedTrade> {
  const wanted = opts.symbols?.length ? new Set(opts.symbols) : undefined;
  const parts = wanted ? [...new Set([...wanted].map((s) => partitionOf(s, partitions)))] : Array.from({ length: partitions }, (_, p) => p);
  const streams = parts.map((p) => keys.trades(p));
  // A trade's id may lie inside an entry (an entry holds a batch): read from the start of its
  // millisecond, and leave out the trades up to it.
  const after = /^(\d+)-(\d+)$/.exec(opts.from ?? '');
  const afterMs = after ? Number(after[1]) : 0;
  const afterSeq = after ? Number(after[2]) : 0;
  const from = after ? (afterMs > 0 ? `${afterMs - 1}-18446744073709551615` : '0') : opts.from;
  for await (const [stream, [id, fields]] of readStreams(redis, streams, { ...opts, from })) {
    const partition = parts[streams.indexOf(stream)]!;
    for (const { id: tradeId, trade } of decodeTradeEntries(id, fields)) {
      if (after) {
        const dash = tradeId.indexOf('-');
        const ms = Number(tradeId.slice(0, dash));
        if (ms < afterMs || (ms === afterMs && Number(tradeId.slice(dash + 1)) <= afterSeq)) continue;
      }
      if (wanted && !wanted.has(trade.s)) continue;
      yield toTapped(tradeId, partition, trade);
    }
  }
}

function toTapped(id: string, partition: number, t: Trade): TappedTrade {
  const tapped: TappedTrade = { id, partition, symbol: t.s, price: t.p, volume: t.v, time: t.t, conditions: t.c, received: t.rx };
  if (t.i !== undefined) tapped.feedId = t.i;
  if (t.a !== undefined) tapped.side = t.a;
  return tapped;
}

/** The closed bars of one interval (e.g. "5min"). */
export async function* tapBars(redis: RedisClient, keys: Keys, interval: string, opts: TapOptions = {}): AsyncGenerator<TappedBar> {
  const wanted = opts.symbols?.length ? new Set(opts.symbols) : undefined;
  for await (const [, [id, f]] of readStreams(redis, [keys.bars(interval)], opts)) {
    const bar = decodeBarEntry(id, interval, f);
    if (wanted && !wanted.has(bar.symbol)) continue;
    yield bar;
  }
}
