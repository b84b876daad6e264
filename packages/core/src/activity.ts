import type { BarState } from './bar.js';
import type { Clock } from './time.js';
import { HIGH_LOW, OPEN_CLOSE } from './conditions.js';
import { PV_DIGITS, ScaledCache, VOLUME_DIGITS, toScaled } from './decimal.js';

/**
 * Activity bars: bars that close on what trades, not on the clock — every N trades, N shares or N
 * of value (size bars), or when the signed flow's imbalance or its longest one-sided run reaches a
 * threshold (López de Prado's information-driven bars), that threshold fixed or the expected value
 * of an EWMA. The rules are written once in docs/activity-bars.md; this is them.
 *
 * Pure and sequential: a symbol's trades are given one at a time in event order — (t, stream
 * position), the order time bars take their open and close from — and each interval's bar closes
 * on the trade that reaches its threshold. So the same tape gives the same bars whoever feeds it.
 */

/** What a trade adds to the measure: 1 (t), its size (v), its price × size (val). */
export type ActivityMeasure = 't' | 'v' | 'val';
/** size: the measure's sum; imb: |Σ b·x|; run: max(Σ x of buys, Σ x of sells) */
export type ActivityRule = 'size' | 'imb' | 'run';

export interface ActivityEwma {
  /** the expected bar length in trades, to start with (and the warm-up bar's length) */
  readonly t0: number;
  /** bars in the EWMA of bar lengths (α = 2 / (w + 1)) */
  readonly w: number;
  /** trades in the EWMAs of the signed flow (α = 2 / (k + 1)) */
  readonly k: number;
  /** limits of the expected bar length, in trades */
  readonly min: number;
  readonly max: number;
}

export interface ActivityInterval {
  /** as configured, e.g. 100t, 10000v, 1000000val, 500v-imb, t-imb-e100-w20 */
  readonly name: string;
  readonly measure: ActivityMeasure;
  readonly rule: ActivityRule;
  /** a fixed threshold as written (in the measure's unit) */
  readonly threshold?: string;
  /** an expected-value threshold */
  readonly ewma?: ActivityEwma;
}

const MEASURE = '(t|v|val)';
const NUMBER = '(\\d+(?:\\.\\d+)?)';
const FIXED = new RegExp(`^${NUMBER}${MEASURE}(?:-(imb|run))?$`);
const EWMA = new RegExp(`^${MEASURE}-(imb|run)-e(\\d+)((?:-(?:w|k|min|max)\\d+)*)$`);
const RULE_TEXT =
  'activity bars are <N>t, <N>v or <N>val (every N trades, volume, value), <N><t|v|val>-imb or -run (a fixed threshold), or <t|v|val>-imb-e<T0> or -run-e<T0> with optional -w<bars> -k<trades> -min<trades> -max<trades> (an EWMA threshold), e.g. 100t, 10000v, 1000000val, 500v-imb, t-imb-e100-w20';

/** An interval name that looks like an activity bar (a digit-led name ending in t, v or val, or one of the EWMA forms). */
export function isActivityName(text: string): boolean {
  const s = text.trim().toLowerCase();
  return /^(\d[\d.]*(t|v|val)(-.*)?|(t|v|val)-(imb|run).*)$/.test(s);
}

/** Parses an activity interval; an error names the rule. */
export function parseActivityInterval(text: string): ActivityInterval {
  const name = text.trim().toLowerCase();
  const bad = (why: string): Error => new Error(`invalid interval "${text.trim()}": ${why}; ${RULE_TEXT}`);
  const f = FIXED.exec(name);
  if (f) {
    const [, n, measure, rule] = f as unknown as [string, string, ActivityMeasure, 'imb' | 'run' | undefined];
    if (measure === 't' && n.includes('.')) throw bad('a number of trades is a whole number');
    const decimals = n.includes('.') ? n.length - n.indexOf('.') - 1 : 0;
    const most = measure === 'val' ? PV_DIGITS : VOLUME_DIGITS;
    if (decimals > most) throw bad(`at most ${most} decimals (what the sums keep exactly)`);
    if (toScaled(n, measure === 'val' ? PV_DIGITS : VOLUME_DIGITS) <= 0n) throw bad('the threshold must be above 0');
    return Object.freeze({ name, measure, rule: rule ?? 'size', threshold: n });
  }
  const e = EWMA.exec(name);
  if (e) {
    const [, measure, rule, t0Text, opts] = e as unknown as [string, ActivityMeasure, 'imb' | 'run', string, string];
    const o: Record<string, number> = {};
    for (const m of opts.matchAll(/-(w|k|min|max)(\d+)/g)) {
      if (o[m[1]!] !== undefined) throw bad(`-${m[1]} given twice`);
      o[m[1]!] = Number(m[2]);
    }
    const t0 = Number(t0Text);
    const ewma: ActivityEwma = { t0, w: o.w ?? 20, k: o.k ?? t0, min: o.min ?? 1, max: o.max ?? Number.MAX_SAFE_INTEGER };
    if (t0 < 1 || ewma.w < 1 || ewma.k < 1 || ewma.min < 1) throw bad('e, w, k and min are at least 1');
    if (ewma.min > ewma.max) throw bad('min is above max');
    return Object.freeze({ name, measure, rule, ewma: Object.freeze(ewma) });
  }
  throw bad('not an activity bar');
}

/** A trade as activity bars take it: in event order, with its conditions' eligibility (conditions.ts). */
export interface ActivityTrade {
  s: string;
  t: number;
  p: string;
  v: number;
  /** OPEN_CLOSE | HIGH_LOW | VOLUME bits; trades without VOLUME are not given at all */
  elig: number;
  /** the feed's aggressor side where it gives one (Binance): b the buyer, s the seller; else the tick rule decides */
  side?: string;
}

/** A closed activity bar: its state, its first and last trade's event times, its number in its file. */
export interface ActivityBar {
  interval: string;
  symbol: string;
  /** 1, 2, ... per symbol and interval, from the first trade of the tape */
  seq: number;
  start: number;
  end: number;
  state: BarState;
}

/** Per symbol: the tick rule's state, shared by every interval. */
interface Side {
  /** the last price a last-sale-eligible trade set (NaN before the first) */
  last: number;
  /** the side of the last trade: +1 buy, -1 sell */
  b: number;
}

const SAFE = Number.MAX_SAFE_INTEGER;
const SAFE_BIG = BigInt(SAFE);

/** One interval's bar of one symbol as it forms. */
class Forming {
  seq = 0;
  start = 0;
  end = 0;
  any = false;
  open = '';
  close = '';
  high = '';
  hi = -Infinity;
  low = '';
  lo = Infinity;
  volume = 0n;
  pv = 0n;
  /** scaled volume not yet in `volume` while it is exact as a number, and the run of trades at one price not yet in `pv` */
  vN = 0;
  runP = '';
  runV = 0;
  n = 0;
  // fixed thresholds: exact sums in the measure's scale (trades as they are): numbers while they
  // are exact (the usual case), the rest in bigints
  nsum = 0;
  nbuys = 0;
  nsells = 0;
  sum = 0n;
  buys = 0n;
  sells = 0n;
  // EWMA thresholds: sums as doubles, the expectations, the threshold frozen at the bar's start
  fsum = 0;
  fbuys = 0;
  fsells = 0;
  expT = 0;
  expBx: number | undefined;
  pBuy: number | undefined;
  expXBuy = 0;
  expXSell = 0;
  seenBuy = false;
  seenSell = false;
  threshold = NaN;

  /** Every field, in order, for save and load: bigints as text, and numbers JSON cannot hold (NaN, ±Infinity) as text. */
  static readonly FIELDS = [
    'seq',
    'start',
    'end',
    'any',
    'open',
    'close',
    'high',
    'hi',
    'low',
    'lo',
    'volume',
    'pv',
    'vN',
    'runP',
    'runV',
    'n',
    'nsum',
    'nbuys',
    'nsells',
    'sum',
    'buys',
    'sells',
    'fsum',
    'fbuys',
    'fsells',
    'expT',
    'expBx',
    'pBuy',
    'expXBuy',
    'expXSell',
    'seenBuy',
    'seenSell',
    'threshold',
  ] as const;

  save(): unknown[] {
    return Forming.FIELDS.map((k) => {
      const v = this[k];
      return typeof v === 'bigint' ? `n${v}` : typeof v === 'number' && !Number.isFinite(v) ? String(v) : (v ?? null);
    });
  }

  load(values: readonly unknown[]): void {
    const self = this as unknown as Record<string, unknown>;
    Forming.FIELDS.forEach((k, i) => {
      const v = values[i];
      if (typeof v === 'string' && k !== 'open' && k !== 'close' && k !== 'high' && k !== 'low' && k !== 'runP')
        self[k] = v.startsWith('n') ? BigInt(v.slice(1)) : Number(v);
      else self[k] = v === null ? undefined : v;
    });
  }

  reset(): void {
    this.any = false;
    this.open = this.close = this.high = this.low = '';
    this.hi = -Infinity;
    this.lo = Infinity;
    this.volume = this.pv = 0n;
    this.vN = this.runV = 0;
    this.runP = '';
    this.n = 0;
    this.nsum = this.nbuys = this.nsells = 0;
    this.sum = this.buys = this.sells = 0n;
    this.fsum = this.fbuys = this.fsells = 0;
  }
}

/**
 * The activity bars of every symbol for a set of intervals. `push` takes a symbol's trades in event
 * order and calls `emit` with each bar as its threshold is reached; `forming` gives what has not
 * closed (the tape's end does not close a bar: its threshold was not reached).
 */
export class ActivityCutter {
  private readonly scaled = new ScaledCache();
  private readonly sides = new Map<string, Side>();
  private readonly bars = new Map<string, Forming[]>();
  private readonly limits: (bigint | undefined)[];
  /** the same as numbers: Infinity where a limit is beyond exact numbers */
  private readonly limitsN: number[];
  /** a fixed value threshold needs each trade's exact price × size */
  private readonly needPv: boolean;

  constructor(readonly intervals: readonly ActivityInterval[]) {
    this.limits = intervals.map((iv) =>
      iv.threshold === undefined
        ? undefined
        : iv.measure === 't'
          ? BigInt(iv.threshold)
          : toScaled(iv.threshold, iv.measure === 'v' ? VOLUME_DIGITS : PV_DIGITS),
    );
    this.limitsN = this.limits.map((l) => (l !== undefined && l <= SAFE_BIG ? Number(l) : Infinity));
    this.needPv = intervals.some((iv) => iv.threshold !== undefined && iv.measure === 'val');
  }

  /** symbols given trades since the last takeTouched */
  private readonly touched = new Set<string>();

  /** The symbols given trades since the last call, whose state to save. */
  takeTouched(): string[] {
    const out = [...this.touched];
    this.touched.clear();
    return out;
  }

  /** A symbol's whole state (its side and every interval's forming bar and expectations) as text, for load. */
  save(symbol: string): string | undefined {
    const side = this.sides.get(symbol);
    const mine = this.bars.get(symbol);
    if (side === undefined || mine === undefined) return undefined;
    const bars: Record<string, unknown[]> = {};
    this.intervals.forEach((iv, i) => (bars[iv.name] = mine[i]!.save()));
    return JSON.stringify({ last: Number.isNaN(side.last) ? null : side.last, b: side.b, bars });
  }

  /** A symbol's state as saved: what follows is cut as if the trades before had been given here. */
  load(symbol: string, text: string): void {
    const o = JSON.parse(text) as { last: number | null; b: number; bars: Record<string, unknown[]> };
    this.sides.set(symbol, { last: o.last ?? NaN, b: o.b });
    // an interval added to INTERVALS since starts afresh; one taken out is forgotten
    this.bars.set(
      symbol,
      this.intervals.map((iv) => {
        const f = this.fresh(iv);
        const values = o.bars[iv.name];
        if (values) f.load(values);
        return f;
      }),
    );
  }

  private fresh(iv: ActivityInterval): Forming {
    const f = new Forming();
    if (iv.ewma) f.expT = iv.ewma.t0;
    return f;
  }

  /** A symbol's state dropped: its next trade starts it afresh (as the first ever). */
  forget(symbol: string): void {
    this.sides.delete(symbol);
    this.bars.delete(symbol);
  }

  /** Whether a symbol's state is here (given trades, or loaded). */
  has(symbol: string): boolean {
    return this.sides.has(symbol);
  }

  push(tr: ActivityTrade, emit: (bar: ActivityBar) => void): void {
    this.touched.add(tr.s);
    const counted = tr.v > 0;
    let side = this.sides.get(tr.s);
    if (side === undefined) this.sides.set(tr.s, (side = { last: NaN, b: 1 }));
    const price = +tr.p;
    if (counted && (tr.side === 'b' || tr.side === 's')) {
      // the feed's aggressor side decides; the last sale still moves, for a trade after without one
      side.b = tr.side === 'b' ? 1 : -1;
      if (tr.elig & OPEN_CLOSE) side.last = price;
    } else if (counted && tr.elig & OPEN_CLOSE) {
      // the tick rule: a price above the last sale's is a buy, below a sell, the same the side before
      if (price > side.last) side.b = 1;
      else if (price < side.last) side.b = -1;
      side.last = price;
    }
    const b = side.b;
    let mine = this.bars.get(tr.s);
    if (mine === undefined) {
      mine = this.intervals.map((iv) => this.fresh(iv));
      this.bars.set(tr.s, mine);
    }
    // the trade's scaled size as an exact number (-1 when it is too large for one), and its exact value when needed
    const sv = counted ? this.scaled.volumeNumber(tr.v) : 0;
    const spv = counted && this.needPv ? this.scaled.price(tr.p) * this.scaled.volume(tr.v) : 0n;
    for (let i = 0; i < this.intervals.length; i++) {
      const iv = this.intervals[i]!;
      const f = mine[i]!;
      if (!f.any) {
        f.any = true;
        f.start = tr.t;
      }
      f.end = tr.t;
      if (tr.elig & OPEN_CLOSE) {
        if (f.open === '') f.open = tr.p;
        f.close = tr.p;
      }
      if (tr.elig & HIGH_LOW) {
        if (price > f.hi) {
          f.hi = price;
          f.high = tr.p;
        }
        if (price < f.lo) {
          f.lo = price;
          f.low = tr.p;
        }
      }
      if (!counted) continue; // a price update: prices, no measure
      this.addVolume(f, tr, sv);
      f.n++;
      if (this.reached(iv, i, f, b, tr, sv, spv)) {
        f.seq++;
        this.settle(f);
        emit({
          interval: iv.name,
          symbol: tr.s,
          seq: f.seq,
          start: f.start,
          end: f.end,
          state: {
            open: f.open,
            openKey: '',
            high: f.high,
            low: f.low,
            close: f.close,
            closeKey: '',
            volume: f.volume,
            pv: f.pv,
            trades: f.n,
          },
        });
        if (iv.ewma) this.nextThreshold(iv.ewma, iv.rule, f);
        f.reset();
      }
    }
  }

  /** A trade's size into the bar's exact volume and Σ p·v (as the time bars' fold: numbers while exact, runs of one price). */
  private addVolume(f: Forming, tr: ActivityTrade, sv: number): void {
    if (sv >= 0 && f.vN + sv <= SAFE) {
      f.vN += sv;
      if (tr.p === f.runP && f.runV + sv <= SAFE) {
        f.runV += sv;
        return;
      }
      if (f.runV !== 0) f.pv += this.scaled.price(f.runP) * BigInt(f.runV);
      f.runP = tr.p;
      f.runV = sv;
      return;
    }
    this.settle(f);
    const big = this.scaled.volume(tr.v);
    f.volume += big;
    f.pv += this.scaled.price(tr.p) * big;
  }

  private settle(f: Forming): void {
    if (f.vN !== 0) {
      f.volume += BigInt(f.vN);
      f.vN = 0;
    }
    if (f.runV !== 0) {
      f.pv += this.scaled.price(f.runP) * BigInt(f.runV);
      f.runV = 0;
    }
  }

  /** Adds a counted trade to the bar's measure; whether the bar has reached its threshold. */
  private reached(iv: ActivityInterval, i: number, f: Forming, b: number, tr: ActivityTrade, sv: number, spv: bigint): boolean {
    const limit = this.limits[i];
    if (limit !== undefined) {
      // x exactly: a number (trades; a size that is one) while the sums stay exact, else bigints
      const xn = iv.measure === 't' ? 1 : iv.measure === 'v' ? sv : -1;
      if (xn >= 0 && (b > 0 ? f.nbuys : f.nsells) + xn <= SAFE && f.nsum + xn <= SAFE) {
        f.nsum += xn;
        if (b > 0) f.nbuys += xn;
        else f.nsells += xn;
      } else {
        const x = iv.measure === 'val' ? spv : this.scaled.volume(tr.v);
        f.sum += x;
        if (b > 0) f.buys += x;
        else f.sells += x;
      }
      const limitN = this.limitsN[i]!;
      if (f.sum === 0n && f.buys === 0n && f.sells === 0n) {
        if (iv.rule === 'size') return f.nsum >= limitN;
        if (iv.rule === 'imb') return Math.abs(f.nbuys - f.nsells) >= limitN;
        return Math.max(f.nbuys, f.nsells) >= limitN;
      }
      if (iv.rule === 'size') return BigInt(f.nsum) + f.sum >= limit;
      const buys = BigInt(f.nbuys) + f.buys;
      const sells = BigInt(f.nsells) + f.sells;
      if (iv.rule === 'imb') {
        const d = buys - sells;
        return (d < 0n ? -d : d) >= limit;
      }
      return (buys > sells ? buys : sells) >= limit;
    }
    const e = iv.ewma!;
    const x = iv.measure === 't' ? 1 : iv.measure === 'v' ? tr.v : +tr.p * tr.v;
    const ak = 2 / (e.k + 1);
    if (b > 0) f.fbuys += x;
    else f.fsells += x;
    if (iv.rule === 'imb') {
      const bx = b * x;
      f.expBx = f.expBx === undefined ? bx : f.expBx + ak * (bx - f.expBx);
    } else {
      const buy = b > 0 ? 1 : 0;
      f.pBuy = f.pBuy === undefined ? buy : f.pBuy + ak * (buy - f.pBuy);
      if (b > 0) {
        f.expXBuy = f.seenBuy ? f.expXBuy + ak * (x - f.expXBuy) : x;
        f.seenBuy = true;
      } else {
        f.expXSell = f.seenSell ? f.expXSell + ak * (x - f.expXSell) : x;
        f.seenSell = true;
      }
    }
    // the warm-up bar, before any expectation of the flow: t0 trades
    if (Number.isNaN(f.threshold)) return f.n >= e.t0;
    const theta = iv.rule === 'imb' ? Math.abs(f.fbuys - f.fsells) : Math.max(f.fbuys, f.fsells);
    return theta >= f.threshold;
  }

  /** A bar closed: E[T] takes its length, the next bar's threshold is frozen from the expectations. */
  private nextThreshold(e: ActivityEwma, rule: ActivityRule, f: Forming): void {
    f.expT = Math.min(e.max, Math.max(e.min, f.expT + (2 / (e.w + 1)) * (f.n - f.expT)));
    f.threshold =
      rule === 'imb' ? f.expT * Math.abs(f.expBx ?? 0) : f.expT * Math.max((f.pBuy ?? 0) * f.expXBuy, (1 - (f.pBuy ?? 0)) * f.expXSell);
  }

  /** The bars that have not reached their threshold, with what they hold so far. */
  *forming(): Generator<{ interval: string; symbol: string; trades: number }> {
    for (const [symbol, mine] of this.bars)
      for (let i = 0; i < mine.length; i++) if (mine[i]!.any) yield { interval: this.intervals[i]!.name, symbol, trades: mine[i]!.n };
  }
}

/** An event time as activity bars label it: ISO 8601 with milliseconds and the zone's offset (2013-10-10T09:30:00.123-04:00). */
export function eventLabel(t: number, clock: Clock): string {
  const off = clock.offset(t);
  const local = new Date(t + off).toISOString(); // the local wall time, spelled in UTC's form
  const a = Math.abs(off) / 60_000;
  const hh = String(Math.floor(a / 60)).padStart(2, '0');
  const mm = String(a % 60).padStart(2, '0');
  return `${local.slice(0, 23)}${off < 0 ? '-' : '+'}${hh}:${mm}`;
}
