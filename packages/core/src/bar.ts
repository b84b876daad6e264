import { PRICE_DIGITS, VOLUME_DIGITS, toScaled, vwapOf } from './decimal.js';

/**
 * The pure core: what a bar is and how partial bars merge. The same rules live in
 * lua/mergeBatch-*.lua; bar.test.ts checks both agree on random batches.
 */

/**
 * A partial or complete bar. Prices keep their received text; volume and Σp·v are exact scaled
 * integers (see decimal.ts), so merging in any order gives the same bar.
 */
export interface BarState {
  open: string;
  /** order key of the open trade: (t, stream id), see orderKey */
  openKey: string;
  high: string;
  low: string;
  close: string;
  closeKey: string;
  /** Σ volume, VOLUME_DIGITS decimals */
  volume: bigint;
  /** Σ price × volume, PV_DIGITS decimals, for the VWAP */
  pv: bigint;
  /** number of trades */
  trades: number;
  /** BAR_FLAGS bits (completeness, sources); absent = 0 */
  flags?: number;
}

/**
 * Bits of BarState.flags, OR-ed when partials merge. A bar without any source bit was built from
 * the live feed alone.
 */
export const BAR_FLAGS = Object.freeze({
  /** a minute of the bar is covered completely by no source */
  INCOMPLETE: 1,
  /** part of the bar comes from candles without VWAP or trade counts: those two are unknown */
  APPROXIMATE: 2,
  LIVE: 4,
  FINNHUB_CANDLES: 8,
  MASSIVE_CANDLES: 16,
  MASSIVE_TRADES: 32,
  BINANCE_CANDLES: 64,
  BINANCE_TRADES: 128,
  /**
   * the bar was open when Redis lost candlewick's data (its marker gone): the trades merged into it
   * before are gone; always with INCOMPLETE. In the default CSV format such a bar is written beside
   * its file, in `<file>.incomplete.csv`, so the bar file holds whole bars only
   */
  LOST: 256,
  ALPACA_CANDLES: 512,
  ALPACA_TRADES: 1024,
});

const SOURCE_NAMES: readonly [number, string][] = [
  [BAR_FLAGS.LIVE, 'live'],
  [BAR_FLAGS.FINNHUB_CANDLES, 'finnhub-candles'],
  [BAR_FLAGS.MASSIVE_CANDLES, 'massive-candles'],
  [BAR_FLAGS.MASSIVE_TRADES, 'massive-trades'],
  [BAR_FLAGS.BINANCE_CANDLES, 'binance-candles'],
  [BAR_FLAGS.BINANCE_TRADES, 'binance-trades'],
  [BAR_FLAGS.ALPACA_CANDLES, 'alpaca-candles'],
  [BAR_FLAGS.ALPACA_TRADES, 'alpaca-trades'],
];

/** The sources of a bar, e.g. "massive-trades+live" (a bar with no source bit: "live"). */
export function barSources(flags: number): string {
  const names = SOURCE_NAMES.filter(([bit]) => flags & bit).map(([, name]) => name);
  return names.length ? names.join('+') : 'live';
}

export interface Bar extends BarState {
  readonly interval: string;
  readonly symbol: string;
  /** window start, UTC ms: the bar's identity */
  readonly start: number;
  /** window end, UTC ms (exclusive) */
  readonly end: number;
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');

/**
 * A string that sorts like (event time, stream id). open = smallest key, close = largest, so ties on
 * the millisecond resolve in stream order, which is arrival (file) order.
 */
export function orderKey(t: number, streamId: string): string {
  const dash = streamId.indexOf('-');
  const ms = dash < 0 ? streamId : streamId.slice(0, dash);
  const seq = dash < 0 ? '0' : streamId.slice(dash + 1);
  return pad(t, 15) + pad(Number(ms), 15) + pad(Number(seq), 10);
}

export function barFromTrade(price: string, volume: number, key: string): BarState {
  const v = toScaled(volume, VOLUME_DIGITS);
  return {
    open: price,
    openKey: key,
    high: price,
    low: price,
    close: price,
    closeKey: key,
    volume: v,
    pv: toScaled(price, PRICE_DIGITS) * v,
    trades: 1,
  };
}

/**
 * A partial whose trades may not set the open/close (CONDITIONS=cta-utp) has open = close = '' with
 * openKey = NO_OPEN_KEY (larger than every order key) and closeKey = '' (smaller than every one), so
 * it never wins either; one whose trades may not set the extremes has high = low = ''.
 */
export const NO_OPEN_KEY = '~';

/** Folds b into a (mutating a). Commutative and associative up to float rounding of sums. */
export function mergeInto(a: BarState, b: BarState): BarState {
  if (b.openKey < a.openKey) {
    a.open = b.open;
    a.openKey = b.openKey;
  }
  if (b.closeKey > a.closeKey) {
    a.close = b.close;
    a.closeKey = b.closeKey;
  }
  if (b.high !== '' && (a.high === '' || Number(b.high) > Number(a.high))) a.high = b.high;
  if (b.low !== '' && (a.low === '' || Number(b.low) < Number(a.low))) a.low = b.low;
  a.volume += b.volume;
  a.pv += b.pv;
  a.trades += b.trades;
  if (b.flags) a.flags = (a.flags ?? 0) | b.flags;
  return a;
}

export function encodeBarState(b: BarState): string {
  const s = `${b.open}|${b.openKey}|${b.high}|${b.low}|${b.close}|${b.closeKey}|${b.volume}|${b.pv}|${b.trades}`;
  return b.flags ? `${s}|${b.flags}` : s;
}

export function decodeBarState(s: string): BarState {
  const f = s.split('|');
  if (f.length !== 9 && f.length !== 10) throw new Error(`corrupt bar state "${s}"`);
  const state: BarState = {
    open: f[0]!,
    openKey: f[1]!,
    high: f[2]!,
    low: f[3]!,
    close: f[4]!,
    closeKey: f[5]!,
    volume: BigInt(f[6]!),
    pv: BigInt(f[7]!),
    trades: Number(f[8]),
  };
  if (f.length === 10 && f[9] !== '0') state.flags = Number(f[9]);
  return state;
}

/** Bar id inside a partition: interval|symbol|start. */
export function barId(interval: string, symbol: string, start: number): string {
  return `${interval}|${symbol}|${start}`;
}

export function parseBarId(id: string): { interval: string; symbol: string; start: number } {
  const first = id.indexOf('|');
  const last = id.lastIndexOf('|');
  return { interval: id.slice(0, first), symbol: id.slice(first + 1, last), start: Number(id.slice(last + 1)) };
}

/**
 * A number for a CSV cell: rounded to 15 significant digits so float sums print as people expect
 * (0.1 + 0.2 -> 0.3), without exponent notation.
 */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return '';
  // a shortest form of at most 15 characters has at most 15 significant digits: rounded to 15 it
  // is the same number, so it prints as it is (most volumes, many prices)
  const plain = String(x);
  if (plain.length <= 15 && !plain.includes('e')) return plain;
  const r = Number(x.toPrecision(15));
  if (r === 0) return '0';
  const s = String(r);
  if (!/e/i.test(s)) return s;
  return r.toFixed(Math.min(20, Math.max(0, 15 - Math.floor(Math.log10(Math.abs(r)))))).replace(/\.?0+$/, '');
}

export function vwap(b: BarState): number {
  return vwapOf(b.pv, b.volume);
}
