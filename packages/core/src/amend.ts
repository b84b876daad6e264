import { rfc3339Ms, alpacaTradeIdOf } from './alpaca.js';
import { MAX_PRICE, MAX_VOLUME } from './decimal.js';
import { MAX_EVENT_MS, MIN_EVENT_MS, conditionsText, type RawEntry } from './trade.js';

/**
 * A feed's correction or cancel of a trade it sent before (docs/feeds.md, "Corrections and
 * cancels"), as candlewick applies it: the trade is found by its symbol and feed id among the bar's
 * trades; a cancel takes it out, a correction puts the corrected trade in its place (the same time
 * and stream position, so the bar's open and close are what they would have been had the trade
 * been right from the start) under the corrected id, which a later amend may name in turn.
 */
export interface TradeAmend {
  kind: 'cancel' | 'correction';
  /** symbol */
  s: string;
  /** the feed id of the trade it amends, as the raw stream carries it (Alpaca: `<x>:<i>`) */
  id: string;
  /** the amended trade's time (ms), which says which bars it is in */
  t: number;
  /** a correction's trade: price text, volume, conditions as the raw stream stores them, and its id */
  p?: string;
  v?: number;
  c?: string;
  ni?: string;
}

/**
 * An Alpaca correction {"T":"c","S","x","oi","op","os","oc","ci","cp","cs","cc","t"} or cancel
 * {"T":"x","S","x","i","p","s","t"} (`t`: the amended trade's time) as a TradeAmend, or why it
 * cannot be one.
 */
export function alpacaAmend(m: unknown): TradeAmend | string {
  if (m === null || typeof m !== 'object') return 'not an object';
  const r = m as Record<string, unknown>;
  if (typeof r.S !== 'string' || r.S === '') return 'S (symbol) missing';
  const t = rfc3339Ms(r.t);
  if (typeof t !== 'number' || t < MIN_EVENT_MS || t >= MAX_EVENT_MS) return `t (the trade's time) is not an RFC-3339 time: ${String(r.t)}`;
  if (r.T === 'x') {
    const id = alpacaTradeIdOf(r.x, r.i);
    if (id === undefined) return `i (the cancelled trade's id) is not a whole number: ${String(r.i)}`;
    return { kind: 'cancel', s: r.S, id, t };
  }
  if (r.T !== 'c') return `T is neither "c" nor "x": ${String(r.T)}`;
  const id = alpacaTradeIdOf(r.x, r.oi);
  if (id === undefined) return `oi (the corrected trade's id) is not a whole number: ${String(r.oi)}`;
  const ni = alpacaTradeIdOf(r.x, r.ci);
  if (ni === undefined) return `ci (the correction's id) is not a whole number: ${String(r.ci)}`;
  const p = r.cp;
  if (typeof p !== 'number' || !Number.isFinite(p) || p <= 0 || p > MAX_PRICE)
    return `cp (corrected price) must be a number > 0, got ${String(p)}`;
  const v = r.cs;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_VOLUME)
    return `cs (corrected size) must be a number >= 0, got ${String(v)}`;
  const cc = r.cc ?? [];
  if (!Array.isArray(cc) || cc.some((x) => typeof x !== 'string')) return 'cc (corrected conditions) must be an array of strings';
  return { kind: 'correction', s: r.S, id, t, p: String(p), v, c: conditionsText(cc as string[]), ni };
}

/** A raw-stream trade with the feed id it came with ('' for none). */
export interface IdentifiedTrade {
  entry: RawEntry;
  i: string;
}

/**
 * The trades as they would have been with `amends` applied in the order given: a cancelled trade
 * left out, a corrected one replaced (its time, stream position and watermark kept). Returns the
 * trades and, per amend (by index), whether it found its trade.
 */
export function applyAmends(trades: readonly IdentifiedTrade[], amends: readonly TradeAmend[]): { trades: RawEntry[]; found: boolean[] } {
  const found = amends.map(() => false);
  if (amends.length === 0) return { trades: trades.map((x) => x.entry), found };
  const bySymbolId = new Map<string, number>();
  const current: (IdentifiedTrade | undefined)[] = [...trades];
  trades.forEach((x, k) => {
    if (x.i !== '') bySymbolId.set(`${x.entry.s}\n${x.i}`, k);
  });
  amends.forEach((a, n) => {
    const key = `${a.s}\n${a.id}`;
    const k = bySymbolId.get(key);
    if (k === undefined) return;
    found[n] = true;
    bySymbolId.delete(key);
    if (a.kind === 'cancel') {
      current[k] = undefined;
      return;
    }
    const was = current[k]!.entry;
    current[k] = { entry: { ...was, p: a.p!, v: a.v!, c: a.c! }, i: a.ni! };
    bySymbolId.set(`${a.s}\n${a.ni!}`, k);
  });
  const out: RawEntry[] = [];
  for (const x of current) if (x) out.push(x.entry);
  return { trades: out, found };
}
