import { NO_OPEN_KEY, mergeInto, orderKey, type BarState } from './bar.js';
import { isAroundTheClock, type BarCalendar } from './calendar.js';
import { ALL, HIGH_LOW, OPEN_CLOSE, VOLUME, type ConditionRules } from './conditions.js';
import { ScaledCache } from './decimal.js';
import type { RawEntry } from './trade.js';

/** a < b for stream ids "ms-seq" */
export function idLess(a: string, b: string): boolean {
  if (a.length !== b.length) {
    const am = +a.slice(0, a.indexOf('-'));
    const bm = +b.slice(0, b.indexOf('-'));
    if (am !== bm) return am < bm;
    return +a.slice(a.indexOf('-') + 1) < +b.slice(b.indexOf('-') + 1);
  }
  return a < b; // same length: lexicographic order is numeric order
}

/** A base-interval partial with the numbers kept unparsed-once. */
interface Base {
  s: string;
  start: number;
  open: string;
  oT: number;
  oId: string;
  close: string;
  cT: number;
  cId: string;
  hi: number;
  high: string;
  lo: number;
  low: string;
  /** exact sums, see decimal.ts */
  v: bigint;
  pv: bigint;
  n: number;
  /**
   * Scaled volume not yet in `v`, while it is exact as a number; and the run of trades at one
   * price not yet in `pv` (price text, scaled volume): consecutive trades often share a price, so
   * Σ p·v takes one BigInt product per run instead of one per trade.
   */
  vN: number;
  runP: string;
  runV: number;
}

const SAFE = Number.MAX_SAFE_INTEGER;

/** Adds a trade's volume (and its price × volume) to a Base, exactly. */
function addVolume(b: Base, p: string, v: number, scaled: ScaledCache): void {
  const sv = scaled.volumeNumber(v);
  if (sv >= 0 && b.vN + sv <= SAFE) {
    b.vN += sv;
    if (p === b.runP && b.runV + sv <= SAFE) {
      b.runV += sv;
      return;
    }
    if (b.runV !== 0) b.pv += scaled.price(b.runP) * BigInt(b.runV);
    b.runP = p;
    b.runV = sv;
    return;
  }
  // a volume too large for exact number sums: straight to the BigInt sums
  settle(b, scaled);
  const big = scaled.volume(v);
  b.v += big;
  b.pv += scaled.price(p) * big;
}

/** Folds a Base's pending number sums into its exact BigInt sums. */
function settle(b: Base, scaled: ScaledCache): void {
  if (b.vN !== 0) {
    b.v += BigInt(b.vN);
    b.vN = 0;
  }
  if (b.runV !== 0) {
    b.pv += scaled.price(b.runP) * BigInt(b.runV);
    b.runV = 0;
  }
}

export interface PartialBar {
  end: number;
  state: BarState;
}

export interface Preaggregated {
  /** the trades of the batch (every entry given to run) */
  trades: number;
  /** bar id -> partial bar */
  bars: Map<string, PartialBar>;
  /** entries judged late at ingestion: their window end plus grace had passed the watermark */
  late: RawEntry[];
  /** LATE=amend: the late trades folded the same way, bar id -> partial */
  lateBars: Map<string, PartialBar>;
  /** LATE=amend: late trades too late for every one of their bars (past LATE_AMEND_WINDOW) */
  tooOld: number;
  /** trades outside the selected sessions */
  filtered: number;
  /** years the calendar does not cover, seen in this batch (their equity trades are filtered) */
  uncovered: number[];
  /** CONDITIONS=cta-utp: trades whose conditions let them set nothing (official prices, suspicious prints) */
  excluded: number;
}

/** How a fold treats trades beyond the bar calendar. */
export interface FoldRules {
  /**
   * LATE=amend: fold late trades into correction partials, for every bar whose end + this window
   * is after the watermark the trade was ingested under (0 = no corrections)
   */
  amendWindowMs?: number;
  /** CONDITIONS=cta-utp: which trades may set which fields */
  conditions?: ConditionRules;
  /** BAR_FLAGS bits every partial carries (BAR_FLAGS.LIVE when backfill is on) */
  flags?: number;
}

/**
 * Pure: folds a batch of raw-stream entries into one partial bar per (interval, symbol, window).
 * With LATE=amend the late trades are folded the same way into correction partials.
 * Trades are first folded into base-interval partials (one map lookup and a few comparisons per
 * trade), which are then rolled up into every configured interval, so the per-trade cost does not
 * grow with the number of intervals.
 *
 * A trade is late when the end of its base-interval window plus grace is at or before the
 * watermark it was ingested under; a late trade goes into no interval, so every bar equals the
 * roll-up of its base bars.
 */
export class Preaggregator {
  private readonly flags: number;
  private readonly scaled = new ScaledCache();
  private readonly amendMs: number;
  private readonly conditions: ConditionRules | undefined;

  /** `calendar` decides the windows, sessions, daily closes and lateness */
  constructor(
    readonly calendar: BarCalendar,
    rules: FoldRules = {},
  ) {
    this.amendMs = rules.amendWindowMs ?? 0;
    this.conditions = rules.conditions;
    this.flags = rules.flags ?? 0;
  }

  run(entries: readonly RawEntry[]): Preaggregated {
    // the entries themselves while every one is kept and on time (the usual batch); a copy of those
    // that are from the first one that is not
    let onTime: RawEntry[] | undefined;
    const late: RawEntry[] = [];
    let filtered = 0;
    const uncovered: number[] = [];
    const cal = this.calendar;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      let out = false;
      if (!cal.keeps(e.s, e.t, uncovered)) {
        filtered++;
        out = true;
      } else if (cal.isLate(e.s, e.t, e.w)) {
        late.push(e);
        out = true;
      }
      if (out) onTime ??= entries.slice(0, i);
      else onTime?.push(e);
    }
    const { bars, excluded } = this.fold(onTime ?? entries);
    const { lateBars, tooOld } = this.corrections(late);
    return { trades: entries.length, bars, late, lateBars, tooOld, filtered, uncovered, excluded };
  }

  /**
   * LATE=amend: the late trades as correction partials. A late trade corrects each of its bars
   * whose end + the amend window is after the watermark it was ingested under (w), so whether a
   * bar is corrected depends on the trade alone, never on how far the closer has got.
   */
  private corrections(late: readonly RawEntry[]): { lateBars: Map<string, PartialBar>; tooOld: number } {
    const lateBars = new Map<string, PartialBar>();
    let tooOld = 0;
    if (this.amendMs === 0) return { lateBars, tooOld };
    for (const e of late) {
      const { bars } = this.fold([e]);
      if (bars.size === 0) continue; // its conditions let it set nothing
      let corrects = false;
      for (const [id, part] of bars) {
        if (part.end + this.amendMs <= e.w) continue;
        corrects = true;
        const cur = lateBars.get(id);
        if (cur === undefined) lateBars.set(id, part);
        else mergeInto(cur.state, part.state);
      }
      if (!corrects) tooOld++;
    }
    return { lateBars, tooOld };
  }

  /**
   * Rolls ready-made partial states (e.g. 1-minute candles from a backfill provider, each inside
   * one base window) into every interval, with the same windows and session rules as trades.
   */
  foldStates(items: readonly { s: string; t: number; state: BarState }[]): Map<string, PartialBar> {
    const bars = new Map<string, PartialBar>();
    for (const { s, t, state } of items) {
      if (this.calendar.keeps(s, t)) this.rollUp(bars, s, t, () => ({ ...state }));
    }
    return bars;
  }

  /** Folds entries into base-interval partials, then rolls those up into every interval. */
  private fold(entries: readonly RawEntry[]): { bars: Map<string, PartialBar>; excluded: number } {
    // per symbol, its base partials by window start; `order` keeps them in the order first met
    const bySymbol = new Map<string, Map<number, Base>>();
    const order: Base[] = [];
    const rules = this.conditions;
    const scaled = this.scaled;
    let excluded = 0;
    for (const e of entries) {
      const { t, s, p, v, id } = e;
      const elig = rules === undefined || isAroundTheClock(s) ? ALL : rules.eligibility(e.c);
      if ((elig & VOLUME) === 0) {
        excluded++;
        continue;
      }
      const win = this.calendar.baseWindow(s, t);
      const price = +p;
      let mine = bySymbol.get(s);
      if (mine === undefined) bySymbol.set(s, (mine = new Map()));
      let b = mine.get(win[0]);
      if (b === undefined) {
        if (elig === ALL) {
          // a price update without a trade (v = 0, Finnhub's venues that stream no trades) sets the
          // prices but is not a transaction: it adds to neither the volume nor the count
          const first: Base = {
            s,
            start: win[0],
            open: p,
            oT: t,
            oId: id,
            close: p,
            cT: t,
            cId: id,
            hi: price,
            high: p,
            lo: price,
            low: p,
            v: 0n,
            pv: 0n,
            n: v > 0 ? 1 : 0,
            vN: 0,
            runP: '',
            runV: 0,
          };
          mine.set(win[0], first);
          order.push(first);
          addVolume(first, p, v, scaled);
          continue;
        }
        // a partial no trade has set a price in yet: every price comparison below wins
        b = {
          s,
          start: win[0],
          open: '',
          oT: Infinity,
          oId: '',
          close: '',
          cT: -Infinity,
          cId: '',
          hi: -Infinity,
          high: '',
          lo: Infinity,
          low: '',
          v: 0n,
          pv: 0n,
          n: 0,
          vN: 0,
          runP: '',
          runV: 0,
        };
        mine.set(win[0], b);
        order.push(b);
      }
      if (elig & OPEN_CLOSE) {
        if (t < b.oT || (t === b.oT && idLess(id, b.oId))) {
          b.open = p;
          b.oT = t;
          b.oId = id;
        }
        if (t > b.cT || (t === b.cT && idLess(b.cId, id))) {
          b.close = p;
          b.cT = t;
          b.cId = id;
        }
      }
      if (elig & HIGH_LOW) {
        if (price > b.hi) {
          b.hi = price;
          b.high = p;
        }
        if (price < b.lo) {
          b.lo = price;
          b.low = p;
        }
      }
      addVolume(b, p, v, scaled);
      if (v > 0) b.n++;
    }

    const bars = new Map<string, PartialBar>();
    for (const b of order) {
      settle(b, scaled);
      const openKey = b.oId === '' ? NO_OPEN_KEY : orderKey(b.oT, b.oId);
      const closeKey = b.cId === '' ? '' : orderKey(b.cT, b.cId);
      const flags = this.flags;
      const state = (): BarState =>
        flags
          ? { open: b.open, openKey, high: b.high, low: b.low, close: b.close, closeKey, volume: b.v, pv: b.pv, trades: b.n, flags }
          : { open: b.open, openKey, high: b.high, low: b.low, close: b.close, closeKey, volume: b.v, pv: b.pv, trades: b.n };
      this.rollUp(bars, b.s, b.start, state);
    }
    return { bars, excluded };
  }

  /** Merges a partial at time t into the bar of every interval whose window holds t. */
  private rollUp(bars: Map<string, PartialBar>, symbol: string, t: number, state: () => BarState): void {
    this.calendar.forEachBar(symbol, t, (_iv, id, end) => {
      const cur = bars.get(id);
      if (cur === undefined) bars.set(id, { end, state: state() });
      else mergeInto(cur.state, state());
    });
  }
}
