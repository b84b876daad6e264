import { BAR_FLAGS, orderKey, type BarState } from './bar.js';
import { PRICE_DIGITS, VOLUME_DIGITS, toScaled } from './decimal.js';
import type { PartialBar, Preaggregator } from './preaggregate.js';
import type { RawEntry } from './trade.js';

/** A 1-minute candle from a history provider. */
export interface Candle {
  /** minute start, UTC ms */
  start: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  vwap?: number;
  n?: number;
}

/** One historical trade, in the provider's order. */
export interface ProviderTrade {
  t: number;
  p: string;
  v: number;
  /** the provider's sequence number: orders trades within a millisecond */
  seq: number;
  c: string[];
}

/** A backfill request, as addTrades files it with the first live trade of a symbol on a connection. */
export interface BackfillRequest {
  /** request stream id */
  id: string;
  partition: number;
  symbol: string;
  /** the span starts here (inclusive, UTC ms) */
  from: number;
  /** the first live trade's time: the span ends before it */
  to: number;
  /** the first live trade's price text and volume, to place it among the provider's same-ms trades */
  p: string;
  v: number;
}

export interface Splice {
  /** bar id -> partial, for every interval */
  partials: Map<string, PartialBar>;
  /** bar id -> BAR_FLAGS to add when the bar closes (e.g. INCOMPLETE) */
  flags: Map<string, number>;
  /** trades or candles used */
  used: number;
}

const MINUTE = 60_000;

/** A provider's 1-minute candle as a partial bar; without VWAP and trade count it is APPROXIMATE. */
export function candleState(c: Candle, sourceFlag: number): BarState {
  const approximate = c.vwap === undefined || c.n === undefined;
  return {
    open: String(c.open),
    openKey: orderKey(c.start, '0-0'),
    high: String(c.high),
    low: String(c.low),
    close: String(c.close),
    closeKey: orderKey(c.start + MINUTE - 1, '0-0'),
    volume: toScaled(c.volume, VOLUME_DIGITS),
    // never a VWAP made up from closes: without the provider's, the bar's VWAP is unknown
    pv: c.vwap !== undefined ? toScaled(c.vwap, PRICE_DIGITS) * toScaled(c.volume, VOLUME_DIGITS) : 0n,
    trades: c.n ?? 0,
    flags: sourceFlag | (approximate ? BAR_FLAGS.APPROXIMATE : 0),
  };
}

/** Provider trades as raw entries in (t, sequence) order; ids "0-k" sort before every live stream id. */
export function tradeEntries(symbol: string, trades: readonly ProviderTrade[]): RawEntry[] {
  return trades.map((tr, k) => ({
    id: `0-${k}`,
    entry: `0-${k}`,
    s: symbol,
    p: tr.p,
    v: tr.v,
    t: tr.t,
    w: 0,
    c: tr.c.length ? JSON.stringify(tr.c) : '[]',
    rx: 0,
  }));
}

/**
 * Pure: the part of a provider's history that belongs before the first live trade, as partial
 * bars. Ticks cover exactly t < the live trade's t, plus the trades the provider sequences before
 * it within its millisecond; candles cover whole minutes strictly before the live trade's minute.
 * A minute no source covers completely marks every bar containing it incomplete.
 */
export class Splicer {
  constructor(private readonly pre: Preaggregator) {}

  private flag(out: Map<string, number>, symbol: string, t: number, bits: number): void {
    for (const { id } of this.pre.calendar.barsAt(symbol, t)) out.set(id, (out.get(id) ?? 0) | bits);
  }

  /**
   * A span that starts inside a minute (just after the last live trade before an outage): the part
   * of that minute before it is covered by no source here, so its bars are incomplete.
   */
  private raggedStart(req: BackfillRequest, flags: Map<string, number>): void {
    if (req.from % MINUTE !== 0) this.flag(flags, req.symbol, req.from, BAR_FLAGS.INCOMPLETE);
  }

  ticks(req: BackfillRequest, trades: readonly ProviderTrade[], sourceFlag: number): Splice {
    const flags = new Map<string, number>();
    const inSpan = trades.filter((tr) => tr.t >= req.from && tr.t < req.to);
    // Same millisecond as the first live trade: the provider's trades sequenced before it.
    const tie = trades.filter((tr) => tr.t === req.to).sort((a, b) => a.seq - b.seq);
    const live = tie.findIndex((tr) => Number(tr.p) === Number(req.p) && tr.v === req.v);
    if (live >= 0) inSpan.push(...tie.slice(0, live));
    else if (tie.length > 0) this.flag(flags, req.symbol, req.to, BAR_FLAGS.INCOMPLETE);
    this.raggedStart(req, flags);
    inSpan.sort((a, b) => a.t - b.t || a.seq - b.seq);
    const entries = tradeEntries(req.symbol, inSpan);
    const partials = this.pre.run(entries).bars;
    for (const part of partials.values()) part.state.flags = (part.state.flags ?? 0) | sourceFlag;
    return { partials, flags, used: inSpan.length };
  }

  candles(req: BackfillRequest, candles: readonly Candle[], sourceFlag: number): Splice {
    const flags = new Map<string, number>();
    const first = Math.ceil(req.from / MINUTE) * MINUTE;
    const last = Math.floor(req.to / MINUTE) * MINUTE; // minutes must end by here
    const items: { s: string; t: number; state: BarState }[] = [];
    for (const c of candles) {
      if (c.start % MINUTE !== 0 || c.start < first || c.start + MINUTE > last) continue;
      items.push({ s: req.symbol, t: c.start, state: candleState(c, sourceFlag) });
    }
    this.raggedStart(req, flags);
    // the live trade's minute before it: candles cannot cover part of a minute
    if (req.to % MINUTE !== 0) this.flag(flags, req.symbol, req.to, BAR_FLAGS.INCOMPLETE);
    return { partials: this.pre.foldStates(items), flags, used: items.length };
  }

  /** No source could fill the span: the bars around it are incomplete. */
  failed(req: BackfillRequest): Splice {
    const flags = new Map<string, number>();
    this.flag(flags, req.symbol, req.to, BAR_FLAGS.INCOMPLETE);
    this.raggedStart(req, flags);
    return { partials: new Map(), flags, used: 0 };
  }
}
