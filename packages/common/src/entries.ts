import type { BackfillRequest } from '@candlewick/core';
import { parseBarId } from '@candlewick/core';
import { closedBarOf, packedBars, type ActivityBarJob, type ClosedBar, type PackedBar } from './jobs.js';

/**
 * The stream entries that cross between processes, each defined once: its fields, its encoder and
 * its decoder, which both ends import. (The raw trade entry is in @candlewick/core's trade.ts; the
 * entries Lua writes — outbox, backfill request — are encoded in their scripts, whose headers name
 * the same fields, and decoded here.)
 */

/** A field of a flat [k1, v1, k2, v2, ...] list ('' when absent). */
export function field(fields: readonly string[], name: string): string {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]!;
  return '';
}

// ---------------------------------------------------------------------------------------------
// bars:{interval}: closed bars for other services (the writer publishes, tapBars and the writer's restore read)

/**
 * A closed bar's cells as the CSV row has them (text exactly as written): the one declaration of a
 * bar's fields, which the published bar (TappedBar) and the API's bar (serve's ApiBar) derive from.
 */
export interface BarRowCells {
  /** window start in BAR_TZ with its offset (the date of a daily bar), as in the CSV */
  timestamp: string;
  open: string;
  high: string;
  low: string;
  close: string;
  /** empty when unknown (no volume, or part of the bar from candles without VWAP) */
  vwap: string;
  volume: string;
  /** trade count, empty when unknown */
  trades: string;
  complete: boolean;
  sources: string;
  /**
   * set (true) on a bar open when Redis lost candlewick's data (BAR_FLAGS.LOST, always incomplete):
   * in the default CSV format it is written to the bar file's `.incomplete.csv` beside it
   */
  lost?: boolean;
}

/** Which bar: its interval, symbol and window, and its revision. */
export interface BarIdentity {
  interval: string;
  symbol: string;
  /** window start, ms since the epoch */
  start: number;
  /** 0 for the bar as closed, n for its n-th correction (LATE=amend) */
  rev: number;
}

/** A closed bar as the writer published it (its bars:{interval} entry id, and the trade count read). */
export interface TappedBar extends BarIdentity, Omit<BarRowCells, 'trades'> {
  /** an activity bar's number, 1, 2, ... per symbol and interval */
  bar?: number;
  /** an activity bar's last trade's time (UTC ms); `start` is its first's */
  end?: number;
  id: string;
  /** trade count; undefined when unknown */
  trades: number | undefined;
}

/**
 * The fields of a bars:{interval} entry: encodeBarEntryJson's list (the one place they are spelt; the
 * writer publishes that text as it is).
 */
export function encodeBarEntry(symbol: string, start: number, rev: number, c: BarRowCells): string[] {
  return JSON.parse(encodeBarEntryJson(symbol, start, rev, c)) as string[];
}

/** a string JSON writes as it is between quotes (no quote, backslash, control character or lone surrogate) */
const JSON_PLAIN = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

function jsonString(s: string): string {
  return JSON_PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * A bars:{interval} entry's fields as a JSON list of strings, written directly (the writer publishes
 * tens of thousands at a boundary; publishBars takes them as text): s, start, ts, o, h, l, c, vwap,
 * v, n, rev, complete ('1' or '0'), sources, then lost '1' on a bar Redis's loss of data left
 * incomplete (only there: every other entry is as it always was), then `extra` (an activity bar's
 * end and number, as `,"end","…","bar","…"`).
 */
export function encodeBarEntryJson(symbol: string, start: number, rev: number, c: BarRowCells, extra = ''): string {
  return (
    `["s",${jsonString(symbol)},"start","${start}","ts",${jsonString(c.timestamp)},"o",${jsonString(c.open)},` +
    `"h",${jsonString(c.high)},"l",${jsonString(c.low)},"c",${jsonString(c.close)},"vwap",${jsonString(c.vwap)},` +
    `"v",${jsonString(c.volume)},"n",${jsonString(c.trades)},"rev","${rev}","complete","${c.complete ? '1' : '0'}",` +
    `"sources",${jsonString(c.sources)}${c.lost ? ',"lost","1"' : ''}${extra}]`
  );
}

export function decodeBarEntry(id: string, interval: string, f: string[]): TappedBar {
  const n = field(f, 'n');
  return {
    id,
    interval,
    symbol: field(f, 's'),
    start: Number(field(f, 'start')),
    timestamp: field(f, 'ts'),
    open: field(f, 'o'),
    high: field(f, 'h'),
    low: field(f, 'l'),
    close: field(f, 'c'),
    vwap: field(f, 'vwap'),
    volume: field(f, 'v'),
    trades: n === '' ? undefined : Number(n),
    rev: Number(field(f, 'rev') || 0),
    complete: field(f, 'complete') !== '0',
    sources: field(f, 'sources'),
    ...(field(f, 'lost') === '1' ? { lost: true } : {}),
    // an activity bar (docs/activity-bars.md): its number and its last trade's time
    ...(field(f, 'bar') !== '' ? { bar: Number(field(f, 'bar')), end: Number(field(f, 'end')) } : {}),
  };
}

/** A published bar's CSV cells. */
export function barRowCells(b: TappedBar): BarRowCells {
  return {
    timestamp: b.timestamp,
    open: b.open,
    high: b.high,
    low: b.low,
    close: b.close,
    vwap: b.vwap,
    volume: b.volume,
    trades: b.trades === undefined ? '' : String(b.trades),
    complete: b.complete,
    sources: b.sources,
    ...(b.lost ? { lost: true } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// outbox:{p}: bars closeBars has closed, on their way to the writer's queue (written by closeBars-16.lua)

/**
 * The bars of an outbox entry, in closing order. closeBars writes the bars of one call as one entry,
 * field `bars`: a JSON array of [bar id, state, rev]. An entry of one bar — fields `bar` (the bar
 * id), `state`, and `rev` on corrections — is the form earlier versions wrote: read still, so an
 * outbox they left is handed over too.
 */
export function decodeOutboxEntries(fields: readonly string[]): ClosedBar[] {
  if (field(fields, 'activity') !== '') return [];
  const batch = field(fields, 'bars');
  if (batch === '') return [decodeOutboxEntry(fields)];
  return packedBars(batch).map(closedBarOf);
}

/**
 * An outbox entry of time bars as the closer hands it on: its `bars` text as it is (an entry of one
 * bar, as earlier versions wrote them, packed the same way) and the bars in it, for the job's id
 * and the counts.
 */
export function outboxPacked(fields: readonly string[]): { packed: string; bars: PackedBar[] } {
  const batch = field(fields, 'bars');
  if (batch !== '') return { packed: batch, bars: packedBars(batch) };
  const bars: PackedBar[] = [[field(fields, 'bar'), field(fields, 'state'), Number(field(fields, 'rev') || 0)]];
  return { packed: JSON.stringify(bars), bars };
}

/** The outbox entry's `activity` field: the activity bars of one cut as [interval, symbol, seq, start, end, state]. */
export function encodeActivityOutbox(bars: readonly ActivityBarJob[]): string {
  return JSON.stringify(bars.map((b) => [b.interval, b.symbol, b.seq, b.start, b.end, b.state]));
}

/** The activity bars of an outbox entry, or undefined for an entry of time bars. */
export function decodeActivityOutbox(fields: readonly string[]): ActivityBarJob[] | undefined {
  const text = field(fields, 'activity');
  if (text === '') return undefined;
  const list = JSON.parse(text) as unknown;
  if (!Array.isArray(list)) throw new Error(`an outbox entry whose activity bars are not a list: ${text.slice(0, 80)}`);
  return list.map((b: unknown) => {
    if (!Array.isArray(b) || b.length !== 6)
      throw new Error(`an outbox entry with an activity bar of another shape: ${JSON.stringify(b).slice(0, 80)}`);
    const [interval, symbol, seq, start, end, state] = b as [string, string, number, number, number, string];
    return { interval, symbol, seq, start, end, state };
  });
}

/** One bar's entry (fields `bar`: the bar id, `state`, and `rev` on corrections): the writer job's ClosedBar. */
export function decodeOutboxEntry(fields: readonly string[]): ClosedBar {
  return { ...parseBarId(field(fields, 'bar')), state: field(fields, 'state'), rev: Number(field(fields, 'rev') || 0) };
}

// ---------------------------------------------------------------------------------------------
// feed:gaps: outages of the feed (the ingestor writes; backfill and people read)

export interface GapEntry {
  /** UTC ms */
  start: number;
  end: number;
  symbols: readonly string[];
  /** why, when it is not the feed's socket (an ingestor restart, trades Redis lost) */
  reason?: string;
}

export function encodeGapEntry(g: GapEntry): string[] {
  const out = ['start', String(g.start), 'end', String(g.end), 'symbols', g.symbols.join(',')];
  if (g.reason) out.push('reason', g.reason);
  return out;
}

export function decodeGapEntry(fields: readonly string[]): GapEntry {
  const reason = field(fields, 'reason');
  const symbols = field(fields, 'symbols');
  return {
    start: Number(field(fields, 'start')),
    end: Number(field(fields, 'end')),
    symbols: symbols ? symbols.split(',') : [],
    ...(reason ? { reason } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// backfill:requests:{p}: spans to backfill (written by addTrades-7.lua with the first live trade)

/** Fields `symbol`, `from`, `to`, `p`, `v` (the first live trade's price and size) and `id` (its stream id). */
export function decodeBackfillRequest(partition: number, id: string, fields: readonly string[]): BackfillRequest {
  return {
    id,
    partition,
    symbol: field(fields, 'symbol'),
    from: Number(field(fields, 'from')),
    to: Number(field(fields, 'to')),
    p: field(fields, 'p'),
    v: Number(field(fields, 'v')),
  };
}
