import type { Trade } from './bar.js';

/** Event times outside [2000-01-01, 2100-01-01) are garbage, not trades. */
export const MIN_EVENT_MS = 946_684_800_000;
export const MAX_EVENT_MS = 4_102_444_800_000;

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

/** Validates one element of a Finnhub `{"type":"trade","data":[...]}` message. */
export function validateTrade(raw: unknown, rx: number): Validation {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { ok: false, reason: 'trade is not an object' };
  const r = raw as Record<string, unknown>;
  if (typeof r.s !== 'string' || r.s.trim() === '') return { ok: false, reason: 's (symbol) must be a non-empty string' };
  if (r.s.length > 64 || /[\s|\x00-\x1f]/.test(r.s))
    return { ok: false, reason: 's (symbol) must be at most 64 characters without spaces, control characters or |' };
  const p = num(r.p);
  if (p === undefined || p <= 0) return { ok: false, reason: `p (price) must be a finite number > 0, got ${short(r.p)}` };
  const v = num(r.v);
  if (v === undefined || v < 0) return { ok: false, reason: `v (volume) must be a finite number >= 0, got ${short(r.v)}` };
  const t = typeof r.t === 'number' ? r.t : NaN;
  if (!Number.isSafeInteger(t) || t < MIN_EVENT_MS || t >= MAX_EVENT_MS) {
    return { ok: false, reason: `t (event time) must be integer ms between 2000 and 2100, got ${short(r.t)}` };
  }
  let c: string[] = [];
  if (r.c !== undefined && r.c !== null) {
    if (!Array.isArray(r.c) || !r.c.every((x) => typeof x === 'string' || typeof x === 'number')) {
      return { ok: false, reason: 'c (conditions) must be an array of strings' };
    }
    c = r.c.map(String);
  }
  // Keep the price text as received when it came as a string; otherwise the shortest text of the number.
  const ptext = typeof r.p === 'string' ? r.p : String(p);
  return { ok: true, trade: { s: r.s, p: ptext, v, t, c, rx } };
}

function short(x: unknown): string {
  let s: string;
  try {
    s = x === undefined ? 'nothing' : typeof x === 'number' ? String(x) : JSON.stringify(x);
  } catch {
    s = String(x);
  }
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/** A raw stream entry decoded: the trade, its stream id and the watermark it was ingested under. */
export interface TradeEntry {
  readonly id: string;
  readonly trade: Trade;
  readonly w: number;
}

/** Decodes the flat field list of a raw stream entry ([k1, v1, k2, v2, ...]). */
export function decodeTradeEntry(id: string, fields: string[]): TradeEntry {
  let s = '',
    p = '',
    v = 0,
    t = 0,
    c: string[] = [],
    rx = 0,
    w = 0;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const val = fields[i + 1]!;
    switch (fields[i]) {
      case 's':
        s = val;
        break;
      case 'p':
        p = val;
        break;
      case 'v':
        v = Number(val);
        break;
      case 't':
        t = Number(val);
        break;
      case 'c':
        c = val === '' || val === '[]' ? [] : (JSON.parse(val) as string[]);
        break;
      case 'rx':
        rx = Number(val);
        break;
      case 'w':
        w = Number(val);
        break;
    }
  }
  return { id, trade: { s, p, v, t, c, rx }, w };
}

/** The six raw-stream fields of a trade, in addTrades order: s, p, v, t, c, rx. */
export function tradeArgs(tr: Trade): string[] {
  const out: string[] = new Array(6);
  writeTradeArgs(tr, out, 0);
  return out;
}

/** Writes the six addTrades fields of a trade into `out` at `k`; returns the next index. */
export function writeTradeArgs(tr: Trade, out: string[], k: number): number {
  out[k] = tr.s;
  out[k + 1] = tr.p;
  out[k + 2] = String(tr.v);
  out[k + 3] = String(tr.t);
  out[k + 4] = tr.c.length === 0 ? '[]' : tr.c.length === 1 ? `[${JSON.stringify(tr.c[0])}]` : JSON.stringify(tr.c);
  out[k + 5] = String(tr.rx);
  return k + 6;
}

/**
 * A raw-stream entry as the aggregator needs it: the numbers it merges, the watermark it was
 * ingested under, and the raw fields (kept for late trades, which are stored whole).
 */
export interface RawEntry {
  id: string;
  s: string;
  p: string;
  v: number;
  t: number;
  w: number;
  /** the conditions field as stored (JSON text) */
  c: string;
  fields: string[];
}

/**
 * Decodes the flat field list of a raw stream entry without touching what merging does not need.
 * An entry without `w` was on time when ingested (addTrades writes w only when t + grace < w).
 */
export function rawEntry(id: string, fields: string[]): RawEntry {
  const e: RawEntry = { id, s: '', p: '', v: 0, t: 0, w: 0, c: '', fields };
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i];
    const val = fields[i + 1]!;
    if (k === 's') e.s = val;
    else if (k === 'p') e.p = val;
    else if (k === 'v') e.v = +val;
    else if (k === 't') e.t = +val;
    else if (k === 'w') e.w = +val;
    else if (k === 'c') e.c = val;
  }
  return e;
}

export function rawField(e: RawEntry, name: string): string {
  for (let i = 0; i + 1 < e.fields.length; i += 2) if (e.fields[i] === name) return e.fields[i + 1]!;
  return '';
}
