import { MAX_PRICE, MAX_VOLUME } from './decimal.js';

/** A trade as it travels on the raw stream. */
export interface Trade {
  /** symbol, e.g. AAPL or BINANCE:BTCUSDT */
  readonly s: string;
  /** price as received (shortest decimal text of the number) */
  readonly p: string;
  /** volume */
  readonly v: number;
  /** event time, ms since the epoch (exchange clock) */
  readonly t: number;
  /** trade conditions */
  readonly c: readonly string[];
  /** receive time, ms since the epoch (local clock) */
  readonly rx: number;
  /** the feed's trade id, where it gives one (Binance `a`/`t`, Alpaca and Massive `i`) */
  readonly i?: string;
  /** the aggressor (taker) side, where the feed gives it: b = a buyer took an offer, s = a seller hit a bid */
  readonly a?: Side;
}

/** An aggressor side: b = buy, s = sell. */
export type Side = 'b' | 's';

/** What a trade id may be made of: printable ASCII without spaces, at most 64 characters. */
export const TRADE_ID_PATTERN = /^[\x21-\x7e]{1,64}$/;

/** Event times outside [2000-01-01, 2100-01-01) are garbage, not trades. */
export const MIN_EVENT_MS = 946_684_800_000;
export const MAX_EVENT_MS = 4_102_444_800_000;

/**
 * What a symbol may be made of: ASCII letters and digits and : . _ - / ^ =, at most 64 characters
 * (BRK.B, BINANCE:BTCUSDT, OANDA:EUR_USD, BTC-USD, ^GSPC, FXCM:EUR/USD). Nothing invisible or
 * confusable (a zero-width space, a Cyrillic A) can pass, so two symbols that look alike are one.
 */
export const SYMBOL_PATTERN = /^[A-Za-z0-9:._^/=-]{1,64}$/;
export const SYMBOL_RULE = '1 to 64 of the characters A-Z a-z 0-9 : . _ - / ^ =';

/** A US stock ticker as the stocks feeds (Massive, Alpaca) name it: letters, digits, '.', '-' (BRK.A), at most 20; never a crypto pair or another venue's name. */
export const STOCK_TICKER = /^[A-Za-z0-9][A-Za-z0-9.-]{0,19}$/;

/** A symbol as it may be shown in a message: anything outside printable ASCII as \uXXXX. */
export function visibleSymbol(s: string): string {
  return JSON.stringify(s).replace(/[^\x20-\x7e]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Binance's name of a symbol: the part after an exchange prefix (BINANCE:XRPETH, Finnhub's name),
 * upper-case, e.g. XRPETH. Binance spells a pair as base and quote asset with no separator.
 */
export function binanceSymbol(symbol: string): string {
  return symbol.slice(symbol.indexOf(':') + 1).toUpperCase();
}

export type Validation = { ok: true; trade: Trade } | { ok: false; reason: string };

const DECIMAL = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** A number by an explicit rule: a finite JSON number, or a plain decimal string. Never NaN. */
function num(x: unknown): number | undefined {
  if (typeof x === 'number') return Number.isFinite(x) ? x : undefined;
  if (typeof x === 'string' && DECIMAL.test(x)) {
    const n = Number(x);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

const NO_CONDITIONS: readonly string[] = Object.freeze([]);

/** A trade being read: the fields of a Trade, written by readTrade. */
export interface TradeFields {
  s: string;
  p: string;
  v: number;
  t: number;
  c: readonly string[];
  rx: number;
  i?: string;
  a?: Side;
}

/** Symbols already found well-formed (a feed has few). */
const goodSymbols = new Set<string>();
/** The shortest text of prices that came as numbers (a day has few distinct prices). */
const priceText = new Map<number, string>();

/**
 * Reads one element of a Finnhub `{"type":"trade","data":[...]}` message into `out`: undefined when
 * it is a trade, else why it is not (then `out` holds nothing meaningful).
 */
export function readTrade(raw: unknown, rx: number, out: TradeFields): string | undefined {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return 'trade is not an object';
  const r = raw as Record<string, unknown>;
  const s = r.s;
  if (typeof s !== 'string') return 's (symbol) must be a non-empty string';
  if (!goodSymbols.has(s)) {
    if (s.trim() === '') return 's (symbol) must be a non-empty string';
    if (!SYMBOL_PATTERN.test(s)) return `s (symbol) must be ${SYMBOL_RULE}, got ${short(visibleSymbol(s), true)}`;
    if (goodSymbols.size > 100_000) goodSymbols.clear();
    goodSymbols.add(s);
  }
  const p = num(r.p);
  if (p === undefined || p <= 0) return `p (price) must be a finite number > 0, got ${short(r.p)}`;
  if (p > MAX_PRICE) return `p (price) must be at most ${MAX_PRICE} (1e12), got ${short(r.p)}`;
  const v = num(r.v);
  if (v === undefined || v < 0) return `v (volume) must be a finite number >= 0, got ${short(r.v)}`;
  if (v > MAX_VOLUME) return `v (volume) must be at most ${MAX_VOLUME} (1e15), got ${short(r.v)}`;
  const t = typeof r.t === 'number' ? r.t : NaN;
  if (!Number.isSafeInteger(t) || t < MIN_EVENT_MS || t >= MAX_EVENT_MS) {
    return `t (event time) must be integer ms between 2000 and 2100, got ${short(r.t)}`;
  }
  let c: readonly string[] = NO_CONDITIONS;
  if (r.c !== undefined && r.c !== null) {
    if (!Array.isArray(r.c)) return 'c (conditions) must be an array of strings';
    let strings = true;
    for (const x of r.c) {
      if (typeof x === 'string') continue;
      if (typeof x !== 'number') return 'c (conditions) must be an array of strings';
      strings = false;
    }
    // a list of strings as it came (read-only from here on); numeric codes as their text
    if (r.c.length) c = strings ? (r.c as string[]) : r.c.map(String);
  }
  // Keep the price text as received when it came as a string; otherwise the shortest text of the number.
  let ptext: string;
  if (typeof r.p === 'string') ptext = r.p;
  else {
    let known = priceText.get(p);
    if (known === undefined) {
      known = String(p);
      if (priceText.size > 100_000) priceText.clear();
      priceText.set(p, known);
    }
    ptext = known;
  }
  // the feed's trade id and aggressor side, where it gives them
  let i: string | undefined;
  if (r.i !== undefined && r.i !== null) {
    if (typeof r.i === 'number' && Number.isSafeInteger(r.i) && r.i >= 0) i = String(r.i);
    else if (typeof r.i === 'string' && TRADE_ID_PATTERN.test(r.i)) i = r.i;
    else return `i (trade id) must be a whole number or 1 to 64 printable characters without spaces, got ${short(r.i)}`;
  }
  if (r.a !== undefined && r.a !== null && r.a !== 'b' && r.a !== 's') return `a (aggressor side) must be "b" or "s", got ${short(r.a)}`;
  out.s = s;
  out.p = ptext;
  out.v = v;
  out.t = t;
  out.c = c;
  out.rx = rx;
  out.i = i;
  out.a = (r.a ?? undefined) as Side | undefined;
  return undefined;
}

/** Validates one element of a Finnhub `{"type":"trade","data":[...]}` message. */
export function validateTrade(raw: unknown, rx: number): Validation {
  const trade: TradeFields = { s: '', p: '', v: 0, t: 0, c: NO_CONDITIONS, rx: 0 };
  const reason = readTrade(raw, rx, trade);
  return reason === undefined ? { ok: true, trade } : { ok: false, reason };
}

function short(x: unknown, asIs = false): string {
  let s: string;
  try {
    s = x === undefined ? 'nothing' : typeof x === 'number' || asIs ? String(x) : JSON.stringify(x);
  } catch {
    s = String(x);
  }
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

// ---------------------------------------------------------------------------------------------
// The raw trade stream trades:{p}. One entry per batch the ingestor appends (addTrades), fields:
//   n   the number of trades
//   rx  the receive time of the first (ms)
//   d   the trades, one line each, tab-separated: s, p, v, t, c, rx - rx0 [, w]
//       c is '' or the conditions as a JSON array; w (the watermark before the trade) only when
//       the trade could be late (t + grace < w)
//   i   only when some trade of the entry has a feed trade id: the ids, one line per trade in the
//       order of d, an empty line for a trade without one
//   a   only when some trade of the entry has an aggressor side: one character per trade, b, s or -
// i and a stay apart from d so that readers of the numbers (rawEntries, the aggregators' Lua) pay
// nothing for them; a trade addTrades drops (its id already appended) leaves no line in any.
// Trade k (from 0) of entry "ms-seq" has the stream position "ms-(seq + k)": addTrades keeps those
// positions free (the next entry starts past them), so every trade has an id of its own, in
// arrival order, as if each were an entry.
// Symbols and trade ids carry no whitespace (validateTrade), prices are decimal text, and JSON
// escapes control characters: a tab or a newline never appears inside a field.

const oneCode = new Map<string, string>();
const twoCodes = new Map<string, Map<string, string>>();

/** The conditions as the raw stream stores them: '' for none, else a JSON array (remembered: a feed has few distinct sets). */
export function conditionsText(c: readonly string[]): string {
  if (c.length === 0) return '';
  if (c.length > 2) return JSON.stringify(c);
  let inner = oneCode;
  if (c.length === 2) {
    inner = twoCodes.get(c[0]!) ?? new Map();
    if (inner.size === 0) {
      if (twoCodes.size > 10_000) twoCodes.clear();
      twoCodes.set(c[0]!, inner);
    }
  }
  const last = c[c.length - 1]!;
  let text = inner.get(last);
  if (text === undefined) {
    text = JSON.stringify(c);
    if (inner.size > 10_000) inner.clear();
    inner.set(last, text);
  }
  return text;
}

/** A trade's line in a raw entry (without w: addTrades adds it where the trade could be late). */
export function tradeLine(tr: Trade, rx0: number): string {
  const c = conditionsText(tr.c);
  return `${tr.s}\t${tr.p}\t${tr.v}\t${tr.t}\t${c}\t${tr.rx - rx0}`;
}

/** The `a` field of a raw entry for these trades: one character each (b, s, -), '' when none has a side. */
export function tradeSides(trades: readonly Trade[]): string {
  if (!trades.some((tr) => tr.a !== undefined)) return '';
  let a = '';
  for (const tr of trades) a += tr.a ?? '-';
  return a;
}

/** The `i` field of a raw entry for these trades: a line each, '' when none has an id. */
function tradeIdLines(trades: readonly Trade[]): string {
  if (!trades.some((tr) => tr.i !== undefined)) return '';
  return trades.map((tr) => tr.i ?? '').join('\n');
}

/** The stream position of trade k of the entry with id `entryId`. */
export function tradeId(entryId: string, k: number): string {
  if (k === 0) return entryId;
  const dash = entryId.indexOf('-');
  return `${entryId.slice(0, dash)}-${Number(entryId.slice(dash + 1)) + k}`;
}

/** The fields of a raw entry: [n, rx, d] (any order, as Redis returns a flat list). */
function entryFields(fields: readonly string[]): { n: number; rx0: number; d: string } {
  let n = 0,
    rx0 = 0,
    d = '';
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i];
    if (k === 'd') d = fields[i + 1]!;
    else if (k === 'n') n = +fields[i + 1]!;
    else if (k === 'rx') rx0 = +fields[i + 1]!;
  }
  return { n, rx0, d };
}

/**
 * A trade of the raw stream as the aggregator needs it: the numbers it merges, the watermark it
 * was ingested under (0: on time), its stream position, the entry it came in, and the rest of the
 * trade (late trades are stored whole).
 */
export interface RawEntry {
  /** the trade's stream position */
  id: string;
  /** the id of the raw entry it came in (what the consumer group acknowledges) */
  entry: string;
  s: string;
  p: string;
  v: number;
  t: number;
  w: number;
  /** the conditions as stored: '' or a JSON array */
  c: string;
  rx: number;
  /** `candlewick bars` only: the feed's aggressor side (b, s), where FEED gives one */
  a?: string;
}

/** The trades of one raw entry, in arrival order. */
export function rawEntries(entryId: string, fields: readonly string[], out: RawEntry[] = []): RawEntry[] {
  const { rx0, d } = entryFields(fields);
  if (d === '') return out;
  const dash = entryId.indexOf('-');
  const ms = entryId.slice(0, dash + 1);
  const seq = Number(entryId.slice(dash + 1));
  // each line `s p v t c rx [w]`, tab-separated: read by position, no split (the hot path of every
  // aggregator and of the activity cut; a JSON-encoded condition never holds a raw tab)
  const n = d.length;
  let k = 0;
  let a = 0;
  for (;;) {
    let nl = d.indexOf('\n', a);
    if (nl < 0) nl = n;
    const t1 = d.indexOf('\t', a);
    const t2 = d.indexOf('\t', t1 + 1);
    const t3 = d.indexOf('\t', t2 + 1);
    const t4 = d.indexOf('\t', t3 + 1);
    const t5 = d.indexOf('\t', t4 + 1);
    let t6 = d.indexOf('\t', t5 + 1);
    if (t6 > nl) t6 = -1;
    out.push({
      id: k === 0 ? entryId : ms + (seq + k),
      entry: entryId,
      s: d.slice(a, t1),
      p: d.slice(t1 + 1, t2),
      v: +d.slice(t2 + 1, t3),
      t: +d.slice(t3 + 1, t4),
      c: d.slice(t4 + 1, t5),
      rx: rx0 + +d.slice(t5 + 1, t6 < 0 ? nl : t6),
      w: t6 < 0 ? 0 : +d.slice(t6 + 1, nl),
    });
    k++;
    if (nl >= n) break;
    a = nl + 1;
  }
  return out;
}

/** A trade of the raw stream decoded whole: its stream position, the trade, and its watermark (0: on time). */
export interface TradeEntry {
  readonly id: string;
  readonly trade: Trade;
  readonly w: number;
}

/** A raw entry's `i` (split into lines) and `a` fields, where it has them. */
function feedFields(fields: readonly string[]): { ids?: string[]; sides?: string } {
  let ids: string[] | undefined;
  let sides: string | undefined;
  for (let k = 0; k + 1 < fields.length; k += 2) {
    if (fields[k] === 'i') ids = fields[k + 1]!.split('\n');
    else if (fields[k] === 'a') sides = fields[k + 1];
  }
  return { ids, sides };
}

/**
 * The feed's id and aggressor side of trade `e`, read from the fields of the raw entry it came in
 * ('' where it has none): for what copies a trade elsewhere whole (late trades), off the hot path.
 */
export function feedIdAndSide(e: RawEntry, fields: readonly string[]): { i: string; a: string } {
  const { ids, sides } = feedFields(fields);
  if (!ids && !sides) return { i: '', a: '' };
  const k = Number(e.id.slice(e.id.indexOf('-') + 1)) - Number(e.entry.slice(e.entry.indexOf('-') + 1));
  const a = sides?.[k];
  return { i: ids?.[k] ?? '', a: a === 'b' || a === 's' ? a : '' };
}

/** A raw entry's aggressor sides, a character per trade (b, s, or - for none), where the feed gives them. */
export function entrySides(fields: readonly string[]): string | undefined {
  return feedFields(fields).sides;
}

/** The trades of one raw entry as Trade values, with their ids and sides where the entry has them (the tap, tests). */
export function decodeTradeEntries(entryId: string, fields: readonly string[]): TradeEntry[] {
  const { ids, sides } = feedFields(fields);
  return rawEntries(entryId, fields).map((e, k) => {
    const trade: TradeFields = { s: e.s, p: e.p, v: e.v, t: e.t, c: e.c === '' ? [] : (JSON.parse(e.c) as string[]), rx: e.rx };
    const i = ids?.[k];
    if (i) trade.i = i;
    const a = sides?.[k];
    if (a === 'b' || a === 's') trade.a = a;
    return { id: e.id, trade, w: e.w };
  });
}

/**
 * A raw entry's fields for trades, as addTrades writes it (each trade's w as given, 0 = none; i and
 * a only when some trade has them): for
 * tests and tools that build raw entries without the script.
 */
export function encodeTradeEntry(trades: readonly (Trade & { w?: number })[]): string[] {
  const rx0 = trades[0]?.rx ?? 0;
  const d = trades.map((tr) => (tr.w ? `${tradeLine(tr, rx0)}\t${tr.w}` : tradeLine(tr, rx0))).join('\n');
  const fields = ['n', String(trades.length), 'rx', String(rx0), 'd', d];
  const i = tradeIdLines(trades);
  if (i !== '') fields.push('i', i);
  const a = tradeSides(trades);
  if (a !== '') fields.push('a', a);
  return fields;
}
